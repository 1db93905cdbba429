//! Listeners: each worker's accept loop per listener, the connection
//! limit, the TLS handshake deadline, and the protocol a connection is
//! served with (TLS by ALPN: HTTP/2 or HTTP/1.1; plain: redirect or
//! `dangerous_plaintext`).

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::config::{Limits, ListenerKind};
use crate::gateway::Shared;
use crate::pipeline::{self, ConnInfo};
use crate::steps::limits::{outer_header_bytes, outer_headers};
use crate::steps::principal::PeerIdentity;
use crate::transport::conn::{Busy, ConnState, PlainConn, TlsConn, serve_h1, serve_h2};

/// A listening socket that shares its address with the other workers'.
pub(crate) fn bind_reuseport(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
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

/// One listener socket of one worker.
pub(crate) struct ListenerJob {
    pub(crate) name: Arc<str>,
    pub(crate) kind: ListenerKind,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// Shared by every worker's socket of this listener: the connection limit is per listener.
    pub(crate) conns: Arc<tokio::sync::Semaphore>,
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
    mut tls: Box<TlsConn>,
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
    let state = Arc::new(ConnState::default());
    let st = state.clone();
    let svc = hyper::service::service_fn(move |req| {
        let busy = Busy::new(&st);
        Box::pin(pipeline::handle(
            shared.current(),
            info.clone(),
            req,
            Some(busy),
        ))
    });
    if tls.is_h2() {
        let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_header_list_size(outer_header_bytes(&limits) as u32)
            .max_concurrent_streams(128);
        let conn = h2.serve_connection(TokioIo::new(*tls), svc);
        tokio::spawn(serve_h2(
            conn,
            |c| c.graceful_shutdown(),
            state,
            limits.keepalive_timeout,
            drain,
            permit,
        ));
        return;
    }
    tokio::spawn(serve_h1(
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
pub(crate) async fn serve_listener(
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
        .max_buf_size(outer_header_bytes(&limits))
        .max_headers(outer_headers(&limits));
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
        // step 0: a banned or deny-listed address is closed before any
        // TLS work (counted; see steps/ids.rs)
        if crate::steps::ids::refuse_connection(&shared, peer.ip()) {
            drop(stream);
            continue;
        }
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
                    TlsConn::accept(stream, cfg),
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
                .max_buf_size(outer_header_bytes(&limits))
                .max_headers(outer_headers(&limits));
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_header_list_size(outer_header_bytes(&limits) as u32)
                .max_concurrent_streams(128);
            let io = PlainConn::new(stream, limits.send_timeout);
            match kind {
                ListenerKind::RedirectToHttps { port } => {
                    let svc = hyper::service::service_fn(move |req| pipeline::redirect(port, req));
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
                        Box::pin(pipeline::handle(shared.current(), info.clone(), req, None))
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
