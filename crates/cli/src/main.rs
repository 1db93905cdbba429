//! The `palisade` binary: thin argument parsing over the library crates.
//! `server` runs palisade-server; `config check` and `audit verify` run
//! locally; every other command talks to a server through palisade-client.
#![forbid(unsafe_code)]

mod commands;
mod output;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc malloc: the gateway allocates per request on
/// every worker thread, and glibc's arena locks showed up in profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Vault's CLI takes single-dash long flags (-format=json); accept both.
    let args = std::env::args().map(|a| {
        if a.starts_with('-')
            && !a.starts_with("--")
            && a.len() > 2
            && a.as_bytes()[1].is_ascii_alphabetic()
            && (a.contains('=') || a.len() > 3)
        {
            format!("-{a}")
        } else {
            a
        }
    });
    let cli = match commands::Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(commands::run(cli));
    ExitCode::from(code)
}
