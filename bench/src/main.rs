//! palisade-bench: KV v2 throughput and latency of a real `palisade server`
//! process over HTTP, with one file audit device enabled, against SQLite and
//! PostgreSQL, 16 concurrent clients. Each (backend, operation) is measured in
//! several rounds; the report gives medians. See docs/benchmarks.md.
#![forbid(unsafe_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};

mod gateway_setup;

#[derive(Parser, Debug)]
enum Cli {
    /// KV v2 read/write throughput of palisade server (docs/benchmarks.md).
    Kv(Args),
    /// Write the files bench/gateway.sh needs into DIR.
    GatewaySetup {
        dir: PathBuf,
        /// upstream, nginx proxy, gateway, gateway admin ports
        #[arg(long, value_delimiter = ',', default_value = "18081,18444,18445,19902")]
        ports: Vec<u16>,
    },
}

#[derive(Parser, Debug)]
struct Args {
    /// Path to the palisade binary (build it with --profile dist first).
    #[arg(long, default_value = "target/dist/palisade")]
    palisade: PathBuf,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds per measured round.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Rounds per (backend, operation); medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Backends to run: sqlite, postgres.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    backends: Vec<String>,
    #[arg(
        long,
        env = "PALISADE_TEST_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pg_url: String,
}

struct Server {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18299)
}

async fn start(args: &Args, backend: &str) -> Result<(Server, String), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let port = free_port();
    let storage = match backend {
        "sqlite" => format!(
            "backend = \"sqlite\"\npath = \"{}\"",
            dir.path().join("bench.db").display()
        ),
        "postgres" => {
            let table = format!("bench_{}", std::process::id());
            format!(
                "backend = \"postgres\"\nurl = \"{}\"\ntable = \"{table}\"",
                args.pg_url
            )
        }
        other => return Err(format!("unknown backend {other}")),
    };
    let audit = dir.path().join("audit.log");
    let cfg = format!(
        "log_level = \"warn\"\n[storage]\n{storage}\n[listener]\naddress = \"127.0.0.1:{port}\"\ntls_disable = true\n[audit]\nfile_path = \"{}\"\n",
        audit.display()
    );
    let cfg_path = dir.path().join("server.toml");
    std::fs::write(&cfg_path, cfg).map_err(|e| e.to_string())?;
    let child = Command::new(&args.palisade)
        .args(["server", "--config"])
        .arg(&cfg_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", args.palisade.display()))?;
    let server = Server {
        child,
        addr: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if http
            .get(format!("{}/v1/sys/health", server.addr))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        if Instant::now() > deadline {
            return Err("server did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let init: Value = http
        .put(format!("{}/v1/sys/init", server.addr))
        .json(&json!({"secret_shares": 1, "secret_threshold": 1}))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let key = init["keys"][0].as_str().ok_or("no key")?.to_string();
    let root = init["root_token"]
        .as_str()
        .ok_or("no root token")?
        .to_string();
    http.put(format!("{}/v1/sys/unseal", server.addr))
        .json(&json!({"key": key}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let r = http
        .post(format!("{}/v1/sys/mounts/secret", server.addr))
        .header("X-Vault-Token", &root)
        .json(&json!({"type": "kv", "options": {"version": "2"}}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("mount failed: {}", r.status()));
    }
    // wait until the configured audit device is enabled (it is added after unseal)
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v: Value = http
            .get(format!("{}/v1/sys/audit", server.addr))
            .header("X-Vault-Token", &root)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if v["data"].get("file/").is_some() {
            break;
        }
        if Instant::now() > deadline {
            return Err("audit device not enabled".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((server, root))
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Write,
    Read,
}

struct Round {
    ops_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    errors: usize,
}

async fn round(addr: &str, token: &str, op: Op, args: &Args) -> Round {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()
        .unwrap_or_default();
    let stop = Instant::now() + Duration::from_secs(args.seconds);
    let token = Arc::new(token.to_string());
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let http = http.clone();
        let token = token.clone();
        let addr = addr.to_string();
        let keys = args.keys;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            let mut errors = 0usize;
            let mut i = c;
            while Instant::now() < stop {
                let key = i % keys;
                i += 16;
                let url = format!("{addr}/v1/secret/data/bench/k{key}");
                let t = Instant::now();
                let res = match op {
                    Op::Write => {
                        http.post(&url)
                            .header("X-Vault-Token", token.as_str())
                            .json(&json!({"data": {"v": i, "pad": "x".repeat(64)}}))
                            .send()
                            .await
                    }
                    Op::Read => {
                        http.get(&url)
                            .header("X-Vault-Token", token.as_str())
                            .send()
                            .await
                    }
                };
                match res {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed().as_micros() as u64);
                    }
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            all.extend(l);
            errors += e;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        all[((all.len() as f64 - 1.0) * p).round() as usize] as f64
    };
    Round {
        ops_per_sec: all.len() as f64 / elapsed,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        errors,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

#[tokio::main]
async fn main() {
    let args = match Cli::parse() {
        Cli::Kv(a) => a,
        Cli::GatewaySetup { dir, ports } => {
            let ports: [u16; 4] = match ports.try_into() {
                Ok(p) => p,
                Err(_) => {
                    eprintln!("--ports takes exactly four ports");
                    std::process::exit(2);
                }
            };
            if let Err(e) = gateway_setup::run(&dir, ports) {
                eprintln!("gateway-setup: {e}");
                std::process::exit(1);
            }
            return;
        }
    };
    println!(
        "palisade-bench: {} clients, {} s x {} rounds per cell, {} keys, file audit device on, HTTP/1.1 keep-alive on loopback",
        args.clients, args.seconds, args.rounds, args.keys
    );
    println!();
    println!(
        "| backend | operation | ops/s (median) | p50 ms | p99 ms | errors | rounds (ops/s) |"
    );
    println!("|---|---|---:|---:|---:|---:|---|");
    let mut failed = false;
    for backend in &args.backends {
        let (server, token) = match start(&args, backend).await {
            Ok(s) => s,
            Err(e) => {
                println!("| {backend} | - | failed to start: {e} | | | | |");
                failed = true;
                continue;
            }
        };
        for op in [Op::Write, Op::Read] {
            let mut rounds = Vec::new();
            for _ in 0..args.rounds {
                rounds.push(round(&server.addr, &token, op, &args).await);
            }
            let ops: Vec<f64> = rounds.iter().map(|r| r.ops_per_sec).collect();
            let listed = ops
                .iter()
                .map(|o| format!("{o:.0}"))
                .collect::<Vec<_>>()
                .join(", ");
            println!(
                "| {backend} | {} | {:.0} | {:.2} | {:.2} | {} | {listed} |",
                if op == Op::Write { "write" } else { "read" },
                median(ops),
                median(rounds.iter().map(|r| r.p50_us / 1000.0).collect()),
                median(rounds.iter().map(|r| r.p99_us / 1000.0).collect()),
                rounds.iter().map(|r| r.errors).sum::<usize>(),
            );
        }
        drop(server);
    }
    if failed {
        std::process::exit(1);
    }
}
