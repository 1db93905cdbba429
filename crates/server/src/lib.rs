//! palisade-server: the secrets server. It speaks the Vault HTTP API so that
//! unmodified Vault clients work against it.
//!
//! Flow (design.md): [`http`] parses at the edge -> [`core::Core::handle`]
//! (sealed? -> token -> ACL -> audit, fail closed) -> router: [`sys`],
//! [`token_api`] or an engine in [`engines`] -> audit response -> [`http`]
//! renders Vault's JSON. Everything persistent lives behind the
//! [`palisade_barrier::Barrier`]; tokens are kept only as keyed hashes.
#![forbid(unsafe_code)]

pub mod config;
pub mod core;
pub mod engines;
pub mod http;
pub mod listener;
pub mod logical;
pub mod mounts;
pub mod policies;
pub mod sys;
pub mod token;
pub mod token_api;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use palisade_barrier::Barrier;
use palisade_storage::Backend;

use crate::config::{ServerConfig, StorageConfig, Tls};
use crate::core::Core;

/// Entries the storage read cache keeps (ciphertext; see palisade_storage::cache).
pub const STORAGE_CACHE_ENTRIES: usize = 131_072;

/// Open the configured storage backend, behind the read cache (the server is
/// the only writer of its storage; two servers on one database are unsupported).
pub async fn open_backend(cfg: &StorageConfig) -> Result<Arc<dyn Backend>, String> {
    let inner: Arc<dyn Backend> = match cfg {
        StorageConfig::Sqlite { path } => Arc::new(
            palisade_storage::sqlite::SqliteBackend::open(path)
                .await
                .map_err(|e| format!("storage: {e}"))?,
        ),
        StorageConfig::Postgres { url, table } => Arc::new(
            palisade_storage::postgres::PostgresBackend::connect(url, table)
                .await
                .map_err(|e| format!("storage: {e}"))?,
        ),
    };
    Ok(Arc::new(palisade_storage::cache::CachedBackend::new(
        inner,
        STORAGE_CACHE_ENTRIES,
    )))
}

/// Enable the config's `[audit] file_path` device once the core is unsealed.
async fn ensure_config_audit(core: &Core, file: &Option<PathBuf>) -> Result<(), String> {
    let Some(path) = file else { return Ok(()) };
    let exists = core
        .audit_table
        .lock()
        .await
        .iter()
        .any(|d| d.path == "file/");
    if exists {
        return Ok(());
    }
    let mut options = serde_json::Map::new();
    options.insert(
        "file_path".into(),
        serde_json::Value::String(path.display().to_string()),
    );
    let key = palisade_crypto::mac::MacKey::generate();
    use base64::Engine as _;
    core.enable_audit(core::AuditDeviceEntry {
        path: "file/".into(),
        kind: "file".into(),
        description: "enabled from the server configuration".into(),
        options,
        local: false,
        hmac_key: base64::engine::general_purpose::STANDARD.encode(key.expose_bytes()),
    })
    .await
    .map_err(|e| format!("audit: {}", e.messages.join("; ")))
}

/// Revoke expired tokens in the background (lookups check expiry too).
fn spawn_tidy(core: Arc<Core>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            if core.barrier.sealed() {
                continue;
            }
            match core.tokens.tidy().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(revoked = n, "expired tokens revoked"),
                Err(e) => tracing::warn!(status = e.status, "token tidy failed"),
            }
        }
    });
}

/// A server that is listening. Tests use it in-process; the CLI via [`run`].
pub struct Running {
    pub addr: SocketAddr,
    pub core: Arc<Core>,
}

/// Start serving on an already bound listener.
pub fn start(
    core: Arc<Core>,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    max_request_size: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(Running, tokio::task::JoinHandle<()>), String> {
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let app = http::router(core.clone(), max_request_size);
    let handle = tokio::spawn(listener::serve(listener, app, tls, shutdown));
    Ok((Running { addr, core }, handle))
}

/// `palisade server --config FILE`: open storage, serve, wait for unseal.
pub async fn run(
    cfg: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let backend = open_backend(&cfg.storage).await?;
    let barrier = Barrier::new(backend);
    let core = Core::new(barrier);
    if let Some(file) = &cfg.audit_file {
        // the audit device lives behind the barrier: Core::post_unseal enables it
        let _ = core.config_audit_file.set(file.clone());
    }
    let tls = match &cfg.listener.tls {
        Tls::Files { cert, key } => Some(listener::tls_config(cert, key)?),
        Tls::Disabled => {
            tracing::warn!("listener: TLS disabled by configuration (tls_disable = true)");
            None
        }
    };
    let l = tokio::net::TcpListener::bind(cfg.listener.address)
        .await
        .map_err(|e| format!("listener: cannot bind {}: {e}", cfg.listener.address))?;
    let (running, handle) = start(
        core.clone(),
        l,
        tls,
        cfg.listener.max_request_size,
        shutdown,
    )?;
    tracing::info!(address = %running.addr, storage = core.barrier.backend_kind(), "palisade server listening");
    spawn_tidy(core.clone());
    handle.await.map_err(|e| e.to_string())
}

/// Options of `palisade server --dev`.
pub struct DevOptions {
    pub root_token_id: Option<String>,
    pub listen: SocketAddr,
    pub audit_file: Option<PathBuf>,
}

/// `palisade server --dev`: a fresh SQLite file in a temporary directory,
/// initialised and unsealed, KV v2 at `secret/`, plaintext on loopback.
/// The root token and unseal key are printed once to stdout.
pub async fn run_dev(
    opts: DevOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("palisade-dev-{}", palisade_core::uuid_v4()));
    let backend = open_backend(&StorageConfig::Sqlite {
        path: dir.join("palisade.db"),
    })
    .await?;
    let core = Core::new(Barrier::new(backend));
    let root = core
        .dev_setup(opts.root_token_id)
        .await
        .map_err(|e| e.messages.join("; "))?;
    ensure_config_audit(&core, &opts.audit_file).await?;
    let l = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| format!("listener: cannot bind {}: {e}", opts.listen))?;
    let (running, handle) = start(
        core.clone(),
        l,
        None,
        http::DEFAULT_MAX_REQUEST_SIZE,
        shutdown,
    )?;
    spawn_tidy(core.clone());
    println!("==> Palisade server started in DEV mode. Do not run dev mode in production.");
    println!("    Storage: SQLite in {} (deleted on exit)", dir.display());
    println!(
        "    Listening on http://{} (plaintext, loopback only)",
        running.addr
    );
    println!();
    println!("    export VAULT_ADDR='http://{}'", running.addr);
    println!("    Root Token: {root}");
    println!();
    drop(root);
    let r = handle.await.map_err(|e| e.to_string());
    let _ = std::fs::remove_dir_all(&dir);
    r
}
