//! palisade-server: the secrets server. It speaks the Vault HTTP API so that
//! unmodified Vault clients work against it.
//!
//! Flow (design.md): [`http`] parses the head at the edge, with the path in
//! its one canonical form ([`canonical`]) -> [`core::Core::begin`] (serving?
//! -> token -> ACL on the canonical path; refusals audited) -> the body is
//! read and parsed within limits ([`json`]) only now -> [`core::Core::execute`]
//! (audit request, fail closed -> router: [`sys`], [`token_api`] or an
//! engine in [`engines`], each taking the [`core::Authorized`] proof ->
//! audit response) -> [`http`] renders Vault's JSON. Everything persistent
//! lives behind the [`palisade_barrier::Barrier`]; tokens are kept only as
//! keyed hashes.
#![forbid(unsafe_code)]

pub mod approle;
pub mod audit_path;
pub mod auth_methods;
pub mod canonical;
pub mod cert_auth;
pub mod config;
pub mod core;
pub mod engines;
pub mod ha;
mod ha_client;
pub mod http;
pub mod identity;
pub mod json;
pub mod jwt_auth;
pub mod kv_rotation;
pub mod lease;
pub mod listener;
pub mod lockout;
pub mod logical;
pub mod metrics;
pub mod mounts;
pub mod oauth;
pub mod policies;
pub mod remount;
pub mod rootops;
pub mod sys;
pub mod token;
pub mod token_api;
pub mod token_params;
pub mod token_roles;
pub mod userpass;
pub mod wrapping;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use palisade_barrier::Barrier;
use palisade_storage::Backend;

use crate::config::{ServerConfig, StorageConfig, Tls};
use crate::core::{Core, CoreOptions};
use crate::http::HttpLimits;
use crate::listener::ConnLimits;

/// How long after a rekey HA standbys can still follow it
/// (`palisade_barrier::ROOT_UPGRADE_PATH`).
pub const ROOT_UPGRADE_GRACE: Duration = Duration::from_secs(600);

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

/// Revoke expired tokens in the background (lookups check expiry too), and
/// rotate transit keys whose `auto_rotate_period` has passed.
fn spawn_tidy(core: Arc<Core>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            if !core.is_active() {
                continue;
            }
            // a rekey's root upgrade, once HA standbys had time to follow
            match core.barrier.tidy_root_upgrade(ROOT_UPGRADE_GRACE).await {
                Ok(true) => tracing::info!("the rekey's root upgrade was deleted"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "could not tidy the rekey's root upgrade"),
            }
            match core.tokens.tidy().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(revoked = n, "expired tokens revoked"),
                Err(e) => tracing::warn!(status = e.status, "token tidy failed"),
            }
            // in a task of its own: whatever happens there, token tidy
            // and the next rotation still run
            let c = core.clone();
            let rotation =
                tokio::spawn(
                    async move { c.rotate_transit_keys(palisade_core::now_nanos()).await },
                );
            match rotation.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(status = e.status, "transit key rotation failed"),
                Err(e) => tracing::error!(error = %e, "transit key rotation task failed"),
            }
            // the OAuth provider's signing keys rotate on schedule (a key
            // also rotates when it is used past its period), and revoked
            // token ids and seen assertions are dropped once expired
            let c = core.clone();
            let oauth = tokio::spawn(async move {
                crate::oauth::rotate_due_keys(&c).await?;
                crate::oauth::tidy(&c).await
            });
            match oauth.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(status = e.status, "oauth key rotation or tidy failed")
                }
                Err(e) => tracing::error!(error = %e, "oauth task failed"),
            }
        }
    });
}

/// The expiry manager: revokes leases when they are due (expired, or
/// their token revoked), checking every second and at once when woken.
/// Due times are loaded at every unseal, so revocation resumes after a
/// restart.
pub fn spawn_lease_expiry(core: Arc<Core>) {
    tokio::spawn(async move {
        loop {
            let _ = tokio::time::timeout(Duration::from_secs(1), core.leases.wake.notified()).await;
            if !core.is_active() {
                continue;
            }
            let c = core.clone();
            // a task of its own: a panic in one revocation does not stop expiry
            let run = tokio::spawn(async move { c.revoke_due_leases(c.tokens.now()).await });
            match run.await {
                Ok(0) => {}
                Ok(n) => tracing::info!(revoked = n, "expired leases revoked"),
                Err(e) => tracing::error!(error = %e, "lease expiry task failed"),
            }
        }
    });
}

/// Scheduled rotation, checked every five seconds (Vault's shortest
/// rotation period): database static roles and KV secrets with a rotation
/// policy, each in a loop and tasks of its own (a slow KV producer never
/// delays a static role).
pub fn spawn_rotation(core: Arc<Core>) {
    let c = core.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            if !c.is_active() {
                continue;
            }
            let c2 = c.clone();
            let run = tokio::spawn(async move { c2.rotate_static_roles(c2.tokens.now()).await });
            match run.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(status = e.status, "static role rotation failed"),
                Err(e) => tracing::error!(error = %e, "rotation task failed"),
            }
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !core.is_active() {
                continue;
            }
            let c2 = core.clone();
            let run = tokio::spawn(async move { c2.start_kv_rotations(c2.tokens.now()).await });
            match run.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(status = e.status, "KV rotation failed"),
                Err(e) => tracing::error!(error = %e, "rotation task failed"),
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
    http: HttpLimits,
    conn: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(Running, tokio::task::JoinHandle<()>), String> {
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let http = HttpLimits {
        hsts: tls.is_some(),
        ..http
    };
    let app = http::router(core.clone(), http);
    let handle = tokio::spawn(listener::serve(listener, app, tls, conn, shutdown));
    Ok((Running { addr, core }, handle))
}

/// After the listener drained: anchor the audit heads once more, so a
/// clean restart continues exactly where this run stopped.
async fn finish(core: &Core) {
    if core.is_active()
        && let Err(e) = core.persist_audit_heads().await
    {
        tracing::warn!(
            status = e.status,
            "could not write the audit heads at shutdown"
        );
    }
    if let Some(ha) = core.ha() {
        // release the lease: another node takes over at once
        ha.stop().await;
    }
}

/// `palisade server --config FILE`: open storage, serve, wait for unseal.
pub async fn run(
    cfg: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let (backend, ha) = match (&cfg.ha, &cfg.storage) {
        (Some(h), StorageConfig::Postgres { url, table }) => {
            let (b, node) = crate::ha::HaNode::open(
                url,
                table,
                h.clone(),
                STORAGE_CACHE_ENTRIES,
                cfg.listener.conn.idle_timeout,
            )
            .await?;
            (b, Some(node))
        }
        (Some(_), StorageConfig::Sqlite { .. }) => {
            return Err("ha: high availability needs storage backend = \"postgres\"".into());
        }
        (None, _) => (open_backend(&cfg.storage).await?, None),
    };
    let barrier = Barrier::new(backend);
    let core = Core::with_ha(
        barrier,
        CoreOptions {
            audit_file: cfg.audit_file.clone(),
            api_audit_dirs: cfg.api_audit_dirs.clone(),
            ttl: cfg.ttl,
            clock: palisade_core::Clock::system(),
            dangerous_unauthenticated_rekey: cfg.unauthenticated_rekey,
            dangerous_unauthenticated_generate_root: cfg.unauthenticated_generate_root,
            rotation: cfg.rotation.clone(),
            api_addr: cfg.api_addr.clone(),
        },
        ha,
    );
    if cfg.unauthenticated_rekey {
        tracing::warn!(
            "dangerous_unauthenticated_rekey = true: sys/rekey/* is served without a token"
        );
    }
    if cfg.unauthenticated_generate_root {
        tracing::warn!(
            "dangerous_unauthenticated_generate_root = true: sys/generate-root/* is served without a token"
        );
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
        HttpLimits {
            max_request_size: cfg.listener.max_request_size,
            json: cfg.listener.json,
            body_timeout: cfg.listener.body_timeout,
            hsts: false,
        },
        cfg.listener.conn.clone(),
        shutdown,
    )?;
    tracing::info!(address = %running.addr, storage = core.barrier.backend_kind(), "palisade server listening");
    if let Some(ha) = core.ha() {
        tracing::info!(node_id = ha.node_id(), api_addr = %ha.config.api_addr, "HA enabled: this node is a standby once unsealed, and active while it holds the lease");
    }
    spawn_tidy(core.clone());
    spawn_lease_expiry(core.clone());
    spawn_rotation(core.clone());
    let r = handle.await.map_err(|e| e.to_string());
    finish(&core).await;
    r
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
    let core = Core::with_options(
        Barrier::new(backend),
        CoreOptions {
            audit_file: opts.audit_file.clone(),
            api_addr: format!("http://{}", opts.listen),
            ..CoreOptions::default()
        },
    );
    let root = core
        .dev_setup(opts.root_token_id)
        .await
        .map_err(|e| e.messages.join("; "))?;
    let l = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| format!("listener: cannot bind {}: {e}", opts.listen))?;
    let (running, handle) = start(
        core.clone(),
        l,
        None,
        HttpLimits::default(),
        ConnLimits::default(),
        shutdown,
    )?;
    spawn_tidy(core.clone());
    spawn_lease_expiry(core.clone());
    spawn_rotation(core.clone());
    println!("==> Palisade server started in DEV mode. Do not run dev mode in production.");
    println!("    Storage: SQLite in {} (deleted on exit)", dir.display());
    if running.addr.ip().is_loopback() {
        println!(
            "    Listening on http://{} (plaintext, loopback only)",
            running.addr
        );
    } else {
        println!(
            "    Listening on http://{} (PLAINTEXT, reachable from other hosts: anyone on the network can read the root token in transit)",
            running.addr
        );
    }
    if let Some(p) = &opts.audit_file {
        println!("    Audit log: {} (file/)", p.display());
    }
    println!();
    println!("    export VAULT_ADDR='http://{}'", running.addr);
    println!("    Root Token: {root}");
    println!();
    drop(root);
    let r = handle.await.map_err(|e| e.to_string());
    finish(&core).await;
    let _ = std::fs::remove_dir_all(&dir);
    r
}
