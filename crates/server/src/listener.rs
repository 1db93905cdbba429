//! The accept loop: TCP, a connection limit, optional rustls handshake
//! (TLS 1.2/1.3, ALPN h2 and http/1.1), hyper's HTTP/1.1 (and HTTP/2 over TLS
//! only: a plaintext listener speaks HTTP/1.1, no h2c), per-connection
//! deadlines, and graceful shutdown that stops accepting and drains in-flight
//! requests.
//!
//! Deadlines (Vault's `http_read_header_timeout`, `http_idle_timeout`; the
//! body deadline is the HTTP layer's), as Go's server applies them:
//! - a new connection must complete its first request head within
//!   `header_timeout` of being accepted (a connection that sends nothing is
//!   not idle, it is a slot held for free);
//! - after a response, the next request's first byte must come within
//!   `idle_timeout`, and its head must then be complete within
//!   `header_timeout` (slowloris: one header line every few seconds);
//! - a response that makes no progress for `send_timeout` (a client that
//!   stops reading) ends the connection.
//!
//! A watchdog per connection enforces them from what the connection's reads,
//! writes and service calls report ([`Activity`]); hyper's own header timer
//! is not used because it also runs while a keep-alive connection is idle.
//!
//! Connection limits: `max_connections` per listener and
//! `max_connections_per_ip` per client address (an IPv6 client's /64). At
//! the listener's limit an idle keep-alive connection is closed to make
//! room, as nginx reuses idle connections, else the oldest connection that
//! has not yet completed a request head (a silent or dribbling client);
//! only when every connection has a request in flight is the new
//! connection closed.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::http::ClientAddr;

/// How long shutdown waits for in-flight requests before giving up.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Per-listener connection limits (`[listener]` in the configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    /// A started request head (and a TLS handshake) must complete within this.
    pub header_timeout: Duration,
    /// A connection with nothing in flight and nothing arriving is closed after this.
    pub idle_timeout: Duration,
    /// Connections served at once (idle ones are closed to make room).
    pub max_connections: usize,
    /// Connections from one client address at once; more are closed.
    pub max_connections_per_ip: usize,
    /// A response write that makes no progress for this long ends the connection.
    pub send_timeout: Duration,
}

impl Default for ConnLimits {
    /// Vault's defaults (10 s header, 5 min idle); 4,096 connections, 256
    /// per address, 30 s without write progress.
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_connections: 4096,
            max_connections_per_ip: 256,
            send_timeout: Duration::from_secs(30),
        }
    }
}

/// Build a rustls server config from PEM files. Errors name the file, never its contents.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid certificate PEM in {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in {}", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|_| format!("no valid private key in {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_client_cert_verifier(Arc::new(OfferedClientCert::new(provider.clone())))
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate/key mismatch or unsupported key: {e}"))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// What one connection is doing, as its reads and its requests report it.
#[derive(Debug)]
struct ActivityState {
    /// Requests whose response has not been produced yet.
    inflight: usize,
    /// When the head now awaited started: at accept for the first request,
    /// else when its first byte arrived with nothing in flight.
    head_started: Option<Instant>,
    /// When the connection last became idle (a response done).
    idle_since: Instant,
    /// When a write first found the socket full, until it progresses.
    write_blocked: Option<Instant>,
    /// Asked to close to make room for a new connection.
    evicted: bool,
}

#[derive(Debug)]
struct Activity {
    state: Mutex<ActivityState>,
    /// Wakes the watchdog when the connection is evicted.
    changed: tokio::sync::Notify,
}

impl Activity {
    fn new() -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Self {
            state: Mutex::new(ActivityState {
                inflight: 0,
                // the first head is due header_timeout after accept
                head_started: Some(now),
                idle_since: now,
                write_blocked: None,
                evicted: false,
            }),
            changed: tokio::sync::Notify::new(),
        })
    }

    /// Whether this connection may be closed to make room, and how good a
    /// candidate it is (lower first): an idle keep-alive connection (class
    /// 0, longest idle first), else one still waiting for a complete head
    /// (class 1, oldest first: a silent or dribbling client has produced
    /// nothing yet). A connection with a request in flight or a response
    /// being written is never evicted.
    fn eviction_rank(&self) -> Option<(u8, Instant)> {
        let s = self.lock();
        if s.inflight > 0 || s.write_blocked.is_some() || s.evicted {
            return None;
        }
        Some(match s.head_started {
            None => (0, s.idle_since),
            Some(t) => (1, t),
        })
    }

    fn evict(&self) {
        self.lock().evicted = true;
        self.changed.notify_one();
    }

    fn write_progress(&self, blocked: bool) {
        let mut s = self.lock();
        match (blocked, s.write_blocked) {
            (true, None) => s.write_blocked = Some(Instant::now()),
            (false, Some(_)) => s.write_blocked = None,
            _ => {}
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        // the state is a few plain fields, always consistent
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_bytes(&self) {
        let mut s = self.lock();
        if s.inflight == 0 && s.head_started.is_none() {
            // no wake-up: the watchdog never sleeps longer than the header
            // timeout, so it sees this head in time (see `watchdog`)
            s.head_started = Some(Instant::now());
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        let mut s = self.lock();
        s.inflight += 1;
        s.head_started = None;
        InFlight(self.clone())
    }

    /// When the connection must close if nothing changes (the past when it
    /// was evicted), or None while a request is in flight and writes flow.
    fn deadline(&self, limits: &ConnLimits) -> Option<Instant> {
        let s = self.lock();
        if s.evicted {
            return Some(Instant::now());
        }
        let sending = s.write_blocked.map(|t| t + limits.send_timeout);
        let reading = if s.inflight > 0 {
            None
        } else {
            Some(match s.head_started {
                Some(t) => t + limits.header_timeout,
                None => s.idle_since + limits.idle_timeout,
            })
        };
        match (sending, reading) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A request in flight; dropping it (the response is ready) makes the
/// connection idle again when it was the last one.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.inflight = s.inflight.saturating_sub(1);
        if s.inflight == 0 {
            s.idle_since = Instant::now();
            s.head_started = None;
        }
    }
}

/// Resolves when the connection has passed its deadline.
///
/// Requests do not wake it (that would cost a task wake-up and a timer per
/// request): it never sleeps longer than the shortest of the header and send
/// timeouts, so a deadline that started while it slept (a head's first
/// byte, a blocked write) is never later than its next look, and from that
/// look on it sleeps until exactly that deadline. Only an eviction wakes it.
async fn watchdog(activity: Arc<Activity>, limits: ConnLimits) {
    let longest_nap = limits.header_timeout.min(limits.send_timeout);
    loop {
        let deadline = activity.deadline(&limits);
        // `now` after the deadline: an evicted connection's deadline is "now"
        let now = Instant::now();
        let wait = match deadline {
            Some(d) if d <= now => return,
            Some(d) => d.min(now + longest_nap),
            // in flight: the body deadline and the handler bound it
            None => now + longest_nap,
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wait) => {}
            _ = activity.changed.notified() => {}
        }
    }
}

/// The connection's byte stream, reporting reads to its [`Activity`].
struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read_bytes();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.activity.write_progress(r.is_pending());
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.activity.write_progress(r.is_pending());
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The listener's open connections: their activity (to find an idle one to
/// close at the limit) and the count per client address.
#[derive(Default)]
struct Registry {
    next: u64,
    conns: std::collections::HashMap<u64, Arc<Activity>>,
    per_ip: std::collections::HashMap<std::net::IpAddr, usize>,
}

/// The address a per-address limit counts: an IPv4 address, or an IPv6
/// address's /64 (one host usually holds a whole /64, so counting single
/// IPv6 addresses would give it 2^64 budgets). IPv4-mapped addresses count
/// as IPv4.
fn client_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V4(_) => ip,
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                std::net::IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// A connection's place in the [`Registry`]; leaving it drops the entry.
struct Registered {
    registry: Arc<Mutex<Registry>>,
    id: u64,
    ip: std::net::IpAddr,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut r = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        r.conns.remove(&self.id);
        if let Some(n) = r.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                r.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Log "connection limit reached" at most once a second.
fn warn_limit(last: &AtomicU64, limit: usize) {
    let now = palisade_core::now_nanos() as u64 / 1_000_000_000;
    if last.swap(now, Ordering::Relaxed) != now {
        tracing::warn!(
            max_connections = limit,
            "connection limit reached; closing new connections"
        );
    }
}

/// Vault's `RequestClientCert`: the server asks for a client certificate
/// and does not require one. rustls checks the handshake signature proves
/// the client holds the certificate's key (`verify_tls1x_signature`, with
/// the provider's algorithms); whether the chain is trusted is decided at
/// use, by the `cert` auth method, with webpki against the CA of the role
/// it logs in to. Nothing else reads a client certificate.
#[derive(Debug)]
struct OfferedClientCert {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl OfferedClientCert {
    fn new(provider: Arc<rustls::crypto::CryptoProvider>) -> Self {
        Self { provider }
    }
}

impl rustls::server::danger::ClientCertVerifier for OfferedClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        if !usable_client_cert(cert) {
            return Ok(rustls::client::danger::HandshakeSignatureValid::assertion());
        }
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        if !usable_client_cert(cert) {
            return Ok(rustls::client::danger::HandshakeSignatureValid::assertion());
        }
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Whether webpki can read a client certificate. One it cannot (an X.509
/// v1 certificate, as some test suites still send) must not break the
/// connection (Vault accepts them), and is never trusted: the listener
/// drops it before the request is served, so its possession need not be
/// proved. Every certificate that reaches the cert auth method had its
/// handshake signature verified.
fn usable_client_cert(cert: &rustls_pki_types::CertificateDer<'_>) -> bool {
    webpki::EndEntityCert::try_from(cert).is_ok()
}

/// Serve one connection until it ends, its deadline passes or shutdown.
async fn serve_conn<I>(
    io: I,
    h2: bool,
    app: axum::Router,
    conn: ClientAddr,
    activity: Arc<Activity>,
    limits: ConnLimits,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer_addr = conn.addr;
    let io = TokioIo::new(Tracked {
        inner: io,
        activity: activity.clone(),
    });
    let act = activity.clone();
    let svc =
        hyper::service::service_fn(move |mut r: axum::http::Request<hyper::body::Incoming>| {
            r.extensions_mut().insert(conn.clone());
            let inflight = act.begin();
            let app = app.clone();
            async move {
                let resp = app.oneshot(r).await;
                drop(inflight);
                resp
            }
        });
    let dog = watchdog(activity, limits);
    if h2 {
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .max_concurrent_streams(128)
            .serve_connection(io, svc);
        tokio::select! {
            _ = watcher.watch(conn) => {}
            _ = dog => tracing::debug!(peer = %peer_addr, "connection closed: header or idle deadline"),
        }
    } else {
        let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, svc);
        tokio::select! {
            _ = watcher.watch(conn) => {}
            _ = dog => tracing::debug!(peer = %peer_addr, "connection closed: header or idle deadline"),
        }
    }
}

/// Serve `app` on `listener` until `shutdown` resolves, then drain.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let conns = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let registry = Arc::new(Mutex::new(Registry::default()));
    let last_warning = AtomicU64::new(0);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // per address first: one client never takes every slot
        let ip = client_key(peer.ip());
        {
            let r = registry.lock().unwrap_or_else(PoisonError::into_inner);
            if r.per_ip.get(&ip).copied().unwrap_or(0) >= limits.max_connections_per_ip {
                drop(r);
                tracing::debug!(peer = %peer, "per-address connection limit reached; closing");
                drop(stream);
                continue;
            }
        }
        let permit = match conns.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // at the limit: close the best candidate (an idle keep-alive
                // connection, else the oldest that has not completed a head)
                // and take its slot when it is released
                let victim = {
                    let r = registry.lock().unwrap_or_else(PoisonError::into_inner);
                    r.conns
                        .values()
                        .filter_map(|a| a.eviction_rank().map(|k| (k, a.clone())))
                        .min_by_key(|(k, _)| *k)
                        .map(|(_, a)| a)
                };
                let Some(victim) = victim else {
                    warn_limit(&last_warning, limits.max_connections);
                    drop(stream);
                    continue;
                };
                victim.evict();
                match tokio::time::timeout(
                    Duration::from_millis(500),
                    conns.clone().acquire_owned(),
                )
                .await
                {
                    Ok(Ok(p)) => p,
                    _ => {
                        warn_limit(&last_warning, limits.max_connections);
                        drop(stream);
                        continue;
                    }
                }
            }
        };
        let activity = Activity::new();
        let registered = {
            let mut r = registry.lock().unwrap_or_else(PoisonError::into_inner);
            r.next += 1;
            let id = r.next;
            r.conns.insert(id, activity.clone());
            *r.per_ip.entry(ip).or_insert(0) += 1;
            Registered {
                registry: registry.clone(),
                id,
                ip,
            }
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        let app = app.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _registered = registered;
            match acceptor {
                Some(acc) => {
                    let tls = match tokio::time::timeout(limits.header_timeout, acc.accept(stream))
                        .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    // the chain the client offered (not validated here: the
                    // cert auth method checks it against its CAs at login)
                    let certs = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .filter(|c| c.first().is_some_and(usable_client_cert))
                        .map(|c| Arc::new(c.iter().map(|d| d.as_ref().to_vec()).collect()));
                    let conn = ClientAddr { addr: peer, certs };
                    serve_conn(tls, h2, app, conn, activity, limits, watcher).await;
                }
                None => {
                    let conn = ClientAddr {
                        addr: peer,
                        certs: None,
                    };
                    serve_conn(stream, false, app, conn, activity, limits, watcher).await
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown: in-flight requests did not finish within {DRAIN_TIMEOUT:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_address_limits_count_an_ipv6_64_as_one_client() {
        let a: std::net::IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let other: std::net::IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(other));
        let v4: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: std::net::IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(client_key(mapped), v4);
        assert_eq!(client_key(v4), v4);
    }
}
