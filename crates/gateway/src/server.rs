//! Running the gateway: build a [`Gateway`] from config, bind listeners, serve
//! connections through [`crate::stack`], hot-reload on SIGHUP and on config
//! file change (a bad new config is refused and the old one keeps serving;
//! in-flight requests finish on the config they started with), reload
//! certificates when their files change, and drain on SIGTERM.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use palisade_ratelimit::{Limiter, Quota};
use tokio::net::TcpListener;

use crate::authn::Authenticator;
use crate::authz::Authorizer;
use crate::config::{self, FailMode, GatewayConfig, Limits, ListenerKind, RateStore, RouteConfig};
use crate::log::Sink;
use crate::principal::PeerIdentity;
use crate::stack::{self, ConnInfo};
use crate::tls::SniResolver;
use crate::upstream::Pool;

thread_local! {
    /// The index of the worker thread this code runs on (0 elsewhere).
    pub static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Worker threads serving the listeners: one per core, each with its own
/// single-threaded runtime and its own SO_REUSEPORT socket per listener, so a
/// connection and the upstream connection serving it live on one thread
/// (no cross-thread wake-ups per request, as in nginx's worker model).
pub fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 64)
}

fn bind_reuseport(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.set_reuseport(true)?;
    sock.bind(addr)?;
    sock.listen(4096)
}

/// Everything a request needs; replaced whole on reload.
pub struct Gateway {
    pub routes: Vec<Arc<RouteConfig>>,
    pub pools: HashMap<String, Arc<Pool>>,
    pub authn: Authenticator,
    pub authz: Authorizer,
    pub limiter: Arc<Limiter>,
    pub peer_quota: Option<Quota>,
    pub limits: Limits,
    pub log: Arc<Sink>,
    /// Proxies whose `X-Forwarded-For` names the client (see `client_ip.rs`).
    pub trusted_proxies: Vec<crate::client_ip::Cidr>,
    /// Every header any route sets from an identity: removed from every
    /// request, on every route, so a client's copy never reaches a service
    /// that trusts it on another route.
    pub identity_headers: Vec<hyper::header::HeaderName>,
    /// Forwarded requests in flight per client (kept across reloads).
    pub client_slots: Arc<crate::stream::ClientSlots>,
}

/// The reloadable current gateway.
pub struct Shared {
    current: RwLock<Arc<Gateway>>,
}

impl Shared {
    pub fn current(&self) -> Arc<Gateway> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
    fn replace(&self, gw: Arc<Gateway>) {
        match self.current.write() {
            Ok(mut g) => *g = gw,
            Err(poisoned) => *poisoned.into_inner() = gw,
        }
    }
}

/// Build the limiter from config (kept across reloads so counts survive).
pub async fn build_limiter(cfg: &GatewayConfig) -> Result<Arc<Limiter>, String> {
    Ok(Arc::new(match &cfg.ratelimit.store {
        RateStore::Local => Limiter::local(),
        RateStore::Redis {
            url,
            on_failure,
            timeout,
        } => {
            let mode = match on_failure {
                FailMode::LocalFallback => palisade_ratelimit::FailMode::LocalFallback,
                FailMode::FailOpen => palisade_ratelimit::FailMode::FailOpen,
                FailMode::FailClosed => palisade_ratelimit::FailMode::FailClosed,
            };
            Limiter::redis(url, mode, *timeout)
                .await
                .map_err(|e| format!("ratelimit: {e}"))?
        }
    }))
}

/// Build a gateway from a validated config; on a reload, `previous` is the
/// gateway being replaced (its last good JWKS key sets carry over).
pub async fn build(
    cfg: &GatewayConfig,
    limiter: Arc<Limiter>,
    log: Arc<Sink>,
    previous: Option<&Gateway>,
) -> Result<Gateway, String> {
    let mut pools = HashMap::new();
    for u in &cfg.upstreams {
        pools.insert(
            u.name.clone(),
            Pool::new(u).map_err(|e| format!("upstreams[{}]: {e}", u.name))?,
        );
    }
    let apikeys = match &cfg.apikeys {
        Some(a) => Some(Arc::new(
            palisade_apikey::ApiKeyStore::open(&a.database, a.pepper.clone())
                .await
                .map_err(|e| format!("apikeys: {e}"))?,
        )),
        None => None,
    };
    let header = cfg
        .apikeys
        .as_ref()
        .map(|a| a.header.clone())
        .unwrap_or_else(|| "x-api-key".into());
    // no proxy from the environment, every redirect hop checked
    let http = palisade_jwt::jwks_client(Duration::from_secs(10)).map_err(|e| e.to_string())?;
    let authn = Authenticator::new(
        &cfg.issuers,
        apikeys,
        &header,
        http,
        previous.map(|p| &p.authn),
    )
    .await?;
    let authz = Authorizer::new(&cfg.policies).map_err(|e| format!("authorization: {e}"))?;
    let peer_quota = match &cfg.ratelimit.peer {
        Some(q) => Some(
            Quota::new(q.limit, q.period, q.burst).map_err(|e| format!("ratelimit.peer: {e}"))?,
        ),
        None => None,
    };
    // most specific prefix first; declaration order breaks ties
    let mut routes: Vec<Arc<RouteConfig>> = cfg.routes.iter().cloned().map(Arc::new).collect();
    routes.sort_by_key(|r| std::cmp::Reverse(r.path_prefix.trim_end_matches('/').len()));
    let mut identity_headers: Vec<hyper::header::HeaderName> = routes
        .iter()
        .flat_map(|r| r.forward_identity.iter().map(|(n, _)| n.clone()))
        .collect();
    identity_headers.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    identity_headers.dedup();
    Ok(Gateway {
        routes,
        pools,
        authn,
        authz,
        limiter,
        peer_quota,
        limits: cfg.limits.clone(),
        log,
        trusted_proxies: cfg.trusted_proxies.clone(),
        identity_headers,
        client_slots: previous.map(|p| p.client_slots.clone()).unwrap_or_default(),
    })
}

pub fn read_config(
    path: &Path,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<GatewayConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    config::parse(&text, &config::Env { var, base }).map_err(|e| e.0.join("\n"))
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

/// One listener socket of one worker.
struct ListenerJob {
    name: Arc<str>,
    kind: ListenerKind,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// Shared by every worker's socket of this listener: the connection limit is per listener.
    conns: Arc<tokio::sync::Semaphore>,
}

/// What a TLS connection's task needs after the handshake (pointers only:
/// every connection's task carries it).
struct TlsJob {
    peer: std::net::SocketAddr,
    name: Arc<str>,
    shared: Arc<Shared>,
    limits: Arc<Limits>,
    h1: Arc<hyper::server::conn::http1::Builder>,
    drain: tokio::sync::watch::Receiver<bool>,
}

/// Serve a TLS connection by its ALPN protocol, in a new task: the
/// handshake's task ends, and the serving task is exactly as large as the
/// protocol in use needs (an idle HTTP/1.1 connection's task is small).
fn serve_tls(
    mut tls: Box<crate::conn::TlsConn>,
    client_cert: Option<rustls_pki_types::CertificateDer<'static>>,
    job: TlsJob,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let TlsJob {
        peer,
        name,
        shared,
        limits,
        h1,
        drain,
    } = job;
    let identity = client_cert.and_then(|c| PeerIdentity::from_der(&c).map(Box::new));
    tls.set_send_timeout(limits.send_timeout);
    let info = Arc::new(ConnInfo {
        peer,
        listener: name,
        tls: true,
        identity,
    });
    // one service for both protocols: it counts the connection busy while a
    // request (HTTP/1.1) or stream (HTTP/2) is in flight, for idle handling
    let state = Arc::new(crate::conn::ConnState::default());
    let st = state.clone();
    let svc = hyper::service::service_fn(move |req| {
        let busy = crate::conn::Busy::new(&st);
        Box::pin(stack::handle(
            shared.current(),
            info.clone(),
            req,
            Some(busy),
        ))
    });
    if tls.is_h2() {
        let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_header_list_size(crate::stack::outer_header_bytes(&limits) as u32)
            .max_concurrent_streams(128);
        let conn = h2.serve_connection(TokioIo::new(*tls), svc);
        tokio::spawn(crate::conn::serve_h2(
            conn,
            |c| c.graceful_shutdown(),
            state,
            limits.keepalive_timeout,
            drain,
            permit,
        ));
        return;
    }
    tokio::spawn(crate::conn::serve_h1(
        tls,
        h1,
        svc,
        state,
        limits.keepalive_timeout,
        drain,
        permit,
    ));
}

/// Serve one listener until `shutdown` flips.
async fn serve_listener(
    listener: TcpListener,
    job: ListenerJob,
    shared: Arc<Shared>,
    limits: Limits,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let ListenerJob {
        name,
        kind,
        tls,
        conns,
    } = job;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // HTTPS HTTP/1.1 connections drain through this: `true` asks them to
    // finish, and every connection holds a receiver until it ends
    let (drain_tx, _) = tokio::sync::watch::channel(false);
    let mut h1 = hyper::server::conn::http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(crate::stack::outer_header_bytes(&limits))
        .max_headers(crate::stack::outer_headers(&limits));
    let h1 = Arc::new(h1);
    let tls_limits = Arc::new(limits.clone());
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        // step 0: connection limit — over it, the connection is dropped
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            metrics::counter!("palisade_gateway_connections_rejected_total").increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let name = name.clone();
        if let Some(cfg) = &tls {
            let cfg = cfg.clone();
            let conn = TlsJob {
                peer,
                name,
                shared,
                limits: tls_limits.clone(),
                h1: h1.clone(),
                drain: drain_tx.subscribe(),
            };
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(
                    conn.limits.header_timeout,
                    crate::conn::TlsConn::accept(stream, cfg),
                )
                .await
                {
                    Ok(Ok(s)) => s,
                    // counted (a scanner's stream of failures would flood an
                    // info log); the reason is logged at debug. rustls errors
                    // name the failed check, never key material.
                    Ok(Err(e)) => {
                        tracing::debug!(listener = %conn.name, client_ip = %conn.peer.ip(), error = %e, "TLS handshake failed");
                        metrics::counter!("palisade_gateway_tls_handshake_failures_total", "listener" => conn.name.to_string(), "reason" => "error").increment(1);
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(listener = %conn.name, client_ip = %conn.peer.ip(), "TLS handshake timed out");
                        metrics::counter!("palisade_gateway_tls_handshake_failures_total", "listener" => conn.name.to_string(), "reason" => "timeout").increment(1);
                        return;
                    }
                };
                serve_tls(tls.0, tls.1, conn, permit);
            });
            continue;
        }
        let kind = kind.clone();
        let limits = limits.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(crate::stack::outer_header_bytes(&limits))
                .max_headers(crate::stack::outer_headers(&limits));
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_header_list_size(crate::stack::outer_header_bytes(&limits) as u32)
                .max_concurrent_streams(128);
            let io = crate::conn::PlainConn::new(stream, limits.send_timeout);
            match kind {
                ListenerKind::RedirectToHttps { port } => {
                    let svc = hyper::service::service_fn(move |req| stack::redirect(port, req));
                    let conn = builder.serve_connection(TokioIo::new(io), svc);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
                _ => {
                    let info = Arc::new(ConnInfo {
                        peer,
                        listener: name,
                        tls: false,
                        identity: None,
                    });
                    // Boxed: hyper keeps a slot the size of the service future
                    // in every connection, idle or not; a box keeps it small.
                    let svc = hyper::service::service_fn(move |req| {
                        Box::pin(stack::handle(shared.current(), info.clone(), req, None))
                    });
                    let conn = builder.serve_connection(TokioIo::new(io), svc);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
            }
        });
    }
    drop(listener);
    let _ = drain_tx.send(true);
    let drained = async {
        graceful.shutdown().await;
        drain_tx.closed().await;
    };
    if tokio::time::timeout(Duration::from_secs(30), drained)
        .await
        .is_err()
    {
        tracing::warn!(listener = %name, "in-flight requests did not finish within 30s");
    }
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
) -> Result<(Bound, tokio::task::JoinHandle<()>), String> {
    let cfg = read_config(&config_path, &*var)?;
    let limiter = build_limiter(&cfg).await?;
    let gw = build(&cfg, limiter.clone(), log.clone(), None).await?;
    let shared = Arc::new(Shared {
        current: RwLock::new(Arc::new(gw)),
    });
    let _ = crate::admin::metrics_handle();
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
    let mut per_worker: Vec<Vec<Job>> = (0..workers()).map(|_| Vec::new()).collect();
    for l in &cfg.listeners {
        let tls = match &l.kind {
            ListenerKind::Https {
                profile,
                certificates,
                client_auth,
            } => {
                let resolver = SniResolver::new(certificates.clone())
                    .map_err(|e| format!("listeners[{}]: {e}", l.name))?;
                resolvers.push(resolver.clone());
                Some(
                    crate::tls::server_config(*profile, resolver, client_auth.as_ref())
                        .map_err(|e| format!("listeners[{}]: {e}", l.name))?,
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
            .map_err(|e| format!("listeners[{}]: cannot bind {}: {e}", l.name, l.address))?;
        let addr = first.local_addr().map_err(|e| e.to_string())?;
        let mut sockets = vec![first.into_std().map_err(|e| e.to_string())?];
        for _ in 1..workers() {
            let s = bind_reuseport(addr)
                .map_err(|e| format!("listeners[{}]: cannot bind {addr}: {e}", l.name))?;
            sockets.push(s.into_std().map_err(|e| e.to_string())?);
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
                WORKER.with(|c| c.set(w));
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
            .map_err(|e| format!("cannot start worker thread: {e}"))?;
        threads.push(t);
    }
    let admin_tcp = TcpListener::bind(cfg.admin)
        .await
        .map_err(|e| format!("admin: cannot bind {}: {e}", cfg.admin))?;
    let admin_addr = admin_tcp.local_addr().map_err(|e| e.to_string())?;
    let mut admin_stop = stop_rx.clone();
    let admin_app = crate::admin::router(shared.clone());
    tasks.push(tokio::spawn(async move {
        let _ = axum::serve(admin_tcp, admin_app)
            .with_graceful_shutdown(async move {
                let _ = admin_stop.changed().await;
            })
            .await;
    }));

    // reload: SIGHUP or a change of the config file's mtime; certificates on change
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
            let by_signal = tokio::select! {
                _ = tick.tick() => false,
                _ = async { match hup.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending::<()>().await } } => true,
                _ = reload_stop.changed() => break,
            };
            for r in &resolvers {
                match r.reload_if_changed() {
                    Ok(true) => tracing::info!("certificates reloaded"),
                    Ok(false) => {}
                    Err(e) => tracing::error!(error = %e, "certificate reload refused; keeping the current certificates"),
                }
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
                )
                .await
                {
                    Ok(gw) => {
                        reload_shared.replace(Arc::new(gw));
                        tracing::info!("configuration reloaded");
                        metrics::counter!("palisade_gateway_reloads_total", "result" => "ok").increment(1);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "reload refused; the previous configuration keeps serving");
                        metrics::counter!("palisade_gateway_reloads_total", "result" => "refused").increment(1);
                    }
                },
                Err(e) => {
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
        // worker threads drain their connections, then end
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
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
