//! Running the gateway: build a [`Gateway`] from config, bind listeners
//! (each worker's accept loop in [`crate::transport::listener`]), hot-reload
//! on SIGHUP and on config file change (a bad new config is refused and the
//! old one keeps serving; in-flight requests finish on the config they
//! started with), reload certificates when their files change, and drain on
//! SIGTERM.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;

use crate::config::ListenerKind;
use crate::gateway::{BuildError, Shared, build, build_limiter};
use crate::ops::log::Sink;

/// How long shutdown waits for queued security-log lines to be written.
const LOG_FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);
use crate::steps::upstream::Transport;
use crate::transport::listener::{ListenerJob, bind_reuseport, serve_listener};
use crate::transport::tls::SniResolver;

pub use crate::gateway::read_config;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Build(#[from] BuildError),
    #[error("listeners[{listener}]: {reason}")]
    Listener { listener: String, reason: String },
    #[error("admin: {0}")]
    Admin(String),
    #[error("cannot start worker thread: {0}")]
    Worker(String),
    #[error("{0}")]
    Palisade(String),
}

fn listener_err(name: &str, reason: impl std::fmt::Display) -> StartError {
    StartError::Listener {
        listener: name.to_string(),
        reason: reason.to_string(),
    }
}

/// How often the config file is looked at, and how many looks in a row
/// must agree before a change applies (so a file applies once it has not
/// changed for two seconds: two to three seconds after the last write).
const CONFIG_POLL: Duration = Duration::from_secs(1);
const CONFIG_SETTLE_LOOKS: u32 = 3;

/// What a config file looked like at one look: modification time and size.
fn stamp(p: &Path) -> Option<(SystemTime, u64)> {
    std::fs::metadata(p)
        .ok()
        .and_then(|m| Some((m.modified().ok()?, m.len())))
}

/// Looks up environment variables (injected so tests never mutate the environment).
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Addresses the gateway actually bound (tests bind port 0).
#[derive(Debug, Clone)]
pub struct Bound {
    pub listeners: Vec<(String, std::net::SocketAddr)>,
    pub admin: std::net::SocketAddr,
}

/// Start the gateway from `config_path`; returns the bound addresses and a
/// future that runs until `shutdown` resolves (then drains).
pub async fn start(
    config_path: PathBuf,
    var: EnvLookup,
    log: Arc<Sink>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(Bound, tokio::task::JoinHandle<()>), StartError> {
    let cfg = read_config(&config_path, &*var)?;
    // certificates from Palisade's PKI engine, issued before anything loads them
    let palisade = match &cfg.palisade {
        Some(p) => {
            let client = crate::ops::palisade::Client::shared(p).map_err(StartError::Palisade)?;
            crate::ops::palisade::ensure(&client)
                .await
                .map_err(StartError::Palisade)?;
            Some(client)
        }
        None => None,
    };
    let renewed = Arc::new(tokio::sync::Notify::new());
    let limiter = build_limiter(&cfg).await?;
    let gw = build(&cfg, limiter.clone(), log.clone(), None, Transport::Tcp).await?;
    let shared = Arc::new(Shared::new(gw));
    let _ = crate::ops::admin::metrics_handle();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let mut bound = Vec::new();
    let mut resolvers = Vec::new();
    type Job = (
        std::net::TcpListener,
        Arc<str>,
        ListenerKind,
        Option<Arc<rustls::ServerConfig>>,
        Arc<tokio::sync::Semaphore>,
    );
    let mut per_worker: Vec<Vec<Job>> = (0..crate::worker::workers()).map(|_| Vec::new()).collect();
    for l in &cfg.listeners {
        let tls = match &l.kind {
            ListenerKind::Https {
                profile,
                certificates,
                client_auth,
            } => {
                let resolver =
                    SniResolver::new(certificates.clone()).map_err(|e| listener_err(&l.name, e))?;
                resolvers.push(resolver.clone());
                Some(
                    crate::transport::tls::server_config(*profile, resolver, client_auth.as_ref())
                        .map_err(|e| listener_err(&l.name, e))?,
                )
            }
            ListenerKind::DangerousPlaintext => {
                tracing::warn!(listener = %l.name, "serving routes over plaintext HTTP (dangerous_plaintext = true)");
                None
            }
            ListenerKind::RedirectToHttps { .. } => None,
        };
        // the first socket fixes the port (tests bind port 0); every worker
        // then binds its own socket to that address with SO_REUSEPORT
        let first = bind_reuseport(l.address)
            .map_err(|e| listener_err(&l.name, format!("cannot bind {}: {e}", l.address)))?;
        let addr = first.local_addr().map_err(|e| listener_err(&l.name, e))?;
        let mut sockets = vec![first.into_std().map_err(|e| listener_err(&l.name, e))?];
        for _ in 1..crate::worker::workers() {
            let s = bind_reuseport(addr)
                .map_err(|e| listener_err(&l.name, format!("cannot bind {addr}: {e}")))?;
            sockets.push(s.into_std().map_err(|e| listener_err(&l.name, e))?);
        }
        bound.push((l.name.clone(), addr));
        let conns = Arc::new(tokio::sync::Semaphore::new(cfg.limits.max_connections));
        for (w, sock) in sockets.into_iter().enumerate() {
            per_worker[w].push((
                sock,
                Arc::<str>::from(l.name.as_str()),
                l.kind.clone(),
                tls.clone(),
                conns.clone(),
            ));
        }
    }
    let mut threads = Vec::new();
    for (w, jobs) in per_worker.into_iter().enumerate() {
        let shared = shared.clone();
        let limits = cfg.limits.clone();
        let stop = stop_rx.clone();
        let t = std::thread::Builder::new()
            .name(format!("palisade-gw-{w}"))
            .spawn(move || {
                crate::worker::set_index(w);
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start a gateway worker runtime");
                        return;
                    }
                };
                rt.block_on(async move {
                    let mut set = tokio::task::JoinSet::new();
                    for (sock, name, kind, tls, conns) in jobs {
                        match TcpListener::from_std(sock) {
                            Ok(l) => {
                                let job = ListenerJob {
                                    name,
                                    kind,
                                    tls,
                                    conns,
                                };
                                set.spawn(serve_listener(
                                    l,
                                    job,
                                    shared.clone(),
                                    limits.clone(),
                                    stop.clone(),
                                ));
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "cannot register a listener socket")
                            }
                        }
                    }
                    while set.join_next().await.is_some() {}
                });
            })
            .map_err(|e| StartError::Worker(e.to_string()))?;
        threads.push(t);
    }
    let admin_tcp = TcpListener::bind(cfg.admin)
        .await
        .map_err(|e| StartError::Admin(format!("cannot bind {}: {e}", cfg.admin)))?;
    let admin_addr = admin_tcp
        .local_addr()
        .map_err(|e| StartError::Admin(e.to_string()))?;
    let mut admin_stop = stop_rx.clone();
    let admin_app = crate::ops::admin::router(shared.clone());
    tasks.push(tokio::spawn(async move {
        let _ = axum::serve(admin_tcp, admin_app)
            .with_graceful_shutdown(async move {
                let _ = admin_stop.changed().await;
            })
            .await;
    }));

    // the shared ban list, copied every [ids] sync_interval
    tasks.push(tokio::spawn(crate::steps::ids::sync_loop(
        shared.clone(),
        stop_rx.clone(),
    )));

    if let Some(client) = palisade {
        tasks.push(tokio::spawn(crate::ops::palisade::renewal_loop(
            client,
            stop_rx.clone(),
            renewed.clone(),
        )));
    }

    // reload: SIGHUP or a change of the config file's mtime; certificates on
    // change; at once after a certificate renewal (upstream client certificates)
    let reload_shared = shared.clone();
    let mut reload_stop = stop_rx.clone();
    let reload_log = log.clone();
    // Installed before `start` returns (and so before the CLI logs that it is
    // listening): until then SIGHUP has its default action and kills the process.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    tasks.push(tokio::spawn(async move {
        // A changed file is applied only once it has looked the same (mtime
        // and size) for CONFIG_SETTLE_LOOKS looks in a row: an editor or a
        // deployment tool still writing it must not have a half-written file
        // applied (a prefix can parse, minus a route's restrictions). SIGHUP
        // applies at once: whoever sends it says the file is complete.
        let mut applied = stamp(&config_path);
        let mut pending: Option<(Option<(SystemTime, u64)>, u32)> = None;
        let mut tick = tokio::time::interval(CONFIG_POLL);
        loop {
            let (by_signal, hangup) = tokio::select! {
                _ = tick.tick() => (false, false),
                _ = async { match hup.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending::<()>().await } } => (true, true),
                _ = renewed.notified() => (true, false),
                _ = reload_stop.changed() => break,
            };
            for r in &resolvers {
                match r.reload_if_changed() {
                    Ok(true) => tracing::info!("certificates reloaded"),
                    Ok(false) => {}
                    Err(e) => tracing::error!(error = %e, "certificate reload refused; keeping the current certificates"),
                }
            }
            // SIGHUP is also logrotate's "the log file was moved"
            if hangup {
                reload_log.reopen();
            }
            let now = stamp(&config_path);
            if !by_signal {
                if now == applied {
                    pending = None;
                    continue;
                }
                let seen = match pending {
                    Some((p, n)) if p == now => n + 1,
                    _ => 1,
                };
                if seen < CONFIG_SETTLE_LOOKS {
                    // changed since the last look, or not settled yet
                    pending = Some((now, seen));
                    continue;
                }
            }
            pending = None;
            applied = now;
            match read_config(&config_path, &*var) {
                Ok(cfg) => match build(
                    &cfg,
                    limiter.clone(),
                    reload_log.clone(),
                    Some(&reload_shared.current()),
                    Transport::Tcp,
                )
                .await
                {
                    Ok(gw) => {
                        let format = gw.log_format;
                        reload_shared.replace(Arc::new(gw));
                        reload_log.write_event(&crate::ops::log::reload_event(
                            format,
                            &palisade_core::rfc3339(palisade_core::now_nanos()),
                            None,
                        ), crate::ops::log::Event::Reload { applied: true });
                        tracing::info!("configuration reloaded");
                        metrics::counter!("palisade_gateway_reloads_total", "result" => "ok").increment(1);
                    }
                    Err(e) => {
                        reload_log.write_event(&crate::ops::log::reload_event(
                            reload_shared.current().log_format,
                            &palisade_core::rfc3339(palisade_core::now_nanos()),
                            Some(e.count()),
                        ), crate::ops::log::Event::Reload { applied: false });
                        tracing::error!(error = %e, "reload refused; the previous configuration keeps serving");
                        metrics::counter!("palisade_gateway_reloads_total", "result" => "refused").increment(1);
                    }
                },
                Err(e) => {
                    reload_log.write_event(&crate::ops::log::reload_event(
                        reload_shared.current().log_format,
                        &palisade_core::rfc3339(palisade_core::now_nanos()),
                        Some(e.count()),
                    ), crate::ops::log::Event::Reload { applied: false });
                    tracing::error!(error = %e, "reload refused; the previous configuration keeps serving");
                    metrics::counter!("palisade_gateway_reloads_total", "result" => "refused").increment(1);
                }
            }
        }
    }));

    let handle = tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = t.await;
        }
        // worker threads drain their connections, then end; the lines of
        // the requests they answered are written before the process exits
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
            if !log.flush(LOG_FLUSH_LIMIT) {
                tracing::error!(
                    "security log records, or their syslog/OTLP copies, still queued at exit"
                );
            }
        })
        .await;
    });
    Ok((
        Bound {
            listeners: bound,
            admin: admin_addr,
        },
        handle,
    ))
}
