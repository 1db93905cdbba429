//! Upstream pools (pipeline step 11): round robin over endpoints with passive
//! health checks (an endpoint that fails `max_fails` times in a row is ejected
//! for `fail_timeout`), pooled keep-alive connections, connect and request
//! timeouts, TLS to upstreams with CA verification and an optional client
//! certificate (mTLS to services), and header hygiene in both directions.
//!
//! [`Pool::forward`] takes a [`Permit`]: nothing reaches a service unless
//! authorization allowed it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::authz::Permit;
use crate::config::UpstreamConfig;
use crate::respond::{Body, GatewayError};

pub use crate::respond::BoxError;
pub type ReqBody = BoxBody<Bytes, BoxError>;

// Header names as constants: a `&str` name is parsed on every use.
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Headers that belong to one connection and are never forwarded (RFC 9110
/// §7.6.1): `Connection`, `Keep-Alive`, `Proxy-Connection`,
/// `Proxy-Authenticate`, `Proxy-Authorization`, `TE`, `Trailer`,
/// `Transfer-Encoding` and `Upgrade`.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Headers a client may not set: forwarding headers (the gateway is the
/// edge; X-Forwarded-For/-Proto are replaced), and headers that change a
/// request's meaning in common frameworks (Express's method-override, IIS
/// and Symfony's `X-Original-URL` / `X-Rewrite-URL`, prefix and port
/// rewriting): a GET authorised on one route must not become a DELETE or
/// another path behind the gateway.
fn untrusted_forwarding(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "forwarded"
            | "x-real-ip"
            | "x-forwarded-host"
            | "x-forwarded-server"
            | "x-forwarded-prefix"
            | "x-forwarded-port"
            | "x-forwarded-uri"
            | "x-forwarded-path"
            | "x-http-method-override"
            | "x-http-method"
            | "x-method-override"
            | "x-original-method"
            | "x-original-url"
            | "x-rewrite-url"
            | "x-original-uri"
    )
}

/// HTTP/2 clients may split `cookie` into several fields (RFC 9113
/// §8.2.3); an HTTP/1.1 service expects one, joined with `"; "`.
fn join_cookies(h: &mut HeaderMap) {
    let mut crumbs = h.get_all(header::COOKIE).iter();
    let (Some(_), Some(_)) = (crumbs.next(), crumbs.next()) else {
        return;
    };
    let joined: Vec<&[u8]> = h
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if let Ok(v) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        h.insert(header::COOKIE, v);
    }
}

/// Header names with `_`: CGI, WSGI, Rack and PHP map `x_user` and `x-user`
/// to one variable, so an `_` spelling would slip past the removal of
/// `x-user`. Dropped, as nginx does by default (`underscores_in_headers off`).
fn underscored(name: &HeaderName) -> bool {
    name.as_str().contains('_')
}

/// Remove, in one pass over the names present, the hop-by-hop headers,
/// the headers named in `Connection`, and every header `also` picks.
/// Only the few names found are removed (each removal hashes a name; a
/// request usually has none of them but its credential).
pub fn strip_headers(h: &mut HeaderMap, also: impl Fn(&HeaderName) -> bool) {
    let mut doomed: Vec<HeaderName> = h
        .keys()
        .filter(|n| hop_by_hop(n) || also(n))
        .cloned()
        .collect();
    if doomed.contains(&header::CONNECTION) {
        doomed.extend(
            h.get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()),
        );
    }
    for n in doomed {
        h.remove(n);
    }
}

/// How a worker reaches an endpoint: plain TCP, or TLS with CA verification
/// (and a client certificate when configured), ALPN `http/1.1`.
enum Connector {
    Plain,
    Tls(tokio_rustls::TlsConnector),
}

/// An HTTP/1.1 connection to an endpoint, as hyper's client sees it.
type Sender = http1::SendRequest<ReqBody>;

/// How long an idle upstream connection is kept (nginx's
/// `keepalive_timeout` in an `upstream` block is 60 s too).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

struct IdleConn {
    tx: Sender,
    since: Instant,
}

/// One worker thread's idle connections, per endpoint (most recently used
/// last, so the oldest expire first). Only that worker touches it (the
/// mutex is never contended): a request never waits on a connection owned
/// by another thread.
struct WorkerConns {
    idle: Vec<Vec<IdleConn>>,
    reaper: bool,
}

type Slot = Arc<std::sync::Mutex<WorkerConns>>;

fn lock(slot: &Slot) -> std::sync::MutexGuard<'_, WorkerConns> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Endpoint {
    authority: String,
    /// The name verified in the endpoint's certificate (TLS only).
    server_name: Option<rustls_pki_types::ServerName<'static>>,
    fails: AtomicU32,
    /// Milliseconds since `Pool::epoch` until which the endpoint is ejected.
    ejected_until: AtomicU64,
}

pub struct Pool {
    pub name: String,
    endpoints: Vec<Endpoint>,
    next: AtomicUsize,
    connector: Connector,
    /// One per worker thread.
    slots: Vec<Slot>,
    connect_timeout: Duration,
    max_idle: usize,
    request_timeout: Duration,
    max_fails: u32,
    fail_timeout: Duration,
    epoch: Instant,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name)
            .field("endpoints", &self.endpoints.len())
            .finish()
    }
}

/// What the stack tells the upstream step about the request.
pub struct ForwardCtx<'a> {
    pub request_id: &'a str,
    pub client_ip: &'a str,
    pub proto: &'static str,
    /// Identity headers to set (name, value); client copies are removed first.
    pub identity: Vec<(HeaderName, HeaderValue)>,
    /// Every header any route may set from an identity, removed from the
    /// client request.
    pub identity_names: &'a [HeaderName],
    /// The headers that may carry a gateway credential (never forwarded).
    pub credentials: &'a [HeaderName],
    pub path_and_query: String,
    pub pass_upstream_errors: bool,
    pub timeout: Option<Duration>,
    /// Set by the request body when the *client* broke it (too large, too
    /// slow): such a failure is not held against the endpoint's health.
    pub client_fault: Arc<std::sync::atomic::AtomicU8>,
}

/// Why a request could not be sent upstream.
#[derive(Debug)]
enum SendError {
    Connect(String),
    Protocol(hyper::Error),
}

/// The host part of `host:port` or `[v6]:port`.
fn authority_host(authority: &str) -> &str {
    match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    }
}

impl Pool {
    fn connector(cfg: &UpstreamConfig) -> Result<Connector, String> {
        let Some(t) = &cfg.tls else {
            return Ok(Connector::Plain);
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&t.ca_file)
            .map_err(|e| format!("cannot read {}: {e}", t.ca_file.display()))?
        {
            roots
                .add(c.map_err(|e| format!("invalid CA PEM in {}: {e}", t.ca_file.display()))?)
                .map_err(|e| format!("invalid CA certificate: {e}"))?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let mut tls = match &t.client_cert {
            None => b.with_no_client_auth(),
            Some((cert, key)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| format!("cannot read {}: {e}", cert.display()))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("invalid certificate PEM in {}: {e}", cert.display()))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|_| format!("no valid private key in {}", key.display()))?;
                b.with_client_auth_cert(chain, key)
                    .map_err(|e| format!("upstream client certificate: {e}"))?
            }
        };
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Connector::Tls(tokio_rustls::TlsConnector::from(Arc::new(
            tls,
        ))))
    }

    pub fn new(cfg: &UpstreamConfig) -> Result<Arc<Self>, String> {
        let connector = Self::connector(cfg)?;
        let tls = cfg.tls.as_ref();
        let endpoints = cfg
            .endpoints
            .iter()
            .map(|e| {
                let server_name = match tls {
                    None => None,
                    Some(t) => {
                        let name = t
                            .server_name
                            .clone()
                            .unwrap_or_else(|| authority_host(e).to_string());
                        Some(
                            rustls_pki_types::ServerName::try_from(name)
                                .map_err(|err| format!("server_name for {e}: {err}"))?,
                        )
                    }
                };
                Ok(Endpoint {
                    authority: e.clone(),
                    server_name,
                    fails: AtomicU32::new(0),
                    ejected_until: AtomicU64::new(0),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let slots = (0..crate::server::workers())
            .map(|_| {
                Arc::new(std::sync::Mutex::new(WorkerConns {
                    idle: endpoints.iter().map(|_| Vec::new()).collect(),
                    reaper: false,
                }))
            })
            .collect();
        Ok(Arc::new(Self {
            name: cfg.name.clone(),
            endpoints,
            next: AtomicUsize::new(0),
            connector,
            slots,
            connect_timeout: cfg.connect_timeout,
            max_idle: cfg.max_idle_connections,
            request_timeout: cfg.request_timeout,
            max_fails: cfg.max_fails.max(1),
            fail_timeout: cfg.fail_timeout,
            epoch: Instant::now(),
        }))
    }

    /// This worker's idle connections.
    fn slot(&self) -> &Slot {
        &self.slots[crate::server::WORKER.with(std::cell::Cell::get) % self.slots.len()]
    }

    /// The most recently used idle connection to endpoint `ep` that is
    /// still open, if any.
    fn checkout(&self, slot: &Slot, ep: usize) -> Option<Sender> {
        let mut w = lock(slot);
        let idle = &mut w.idle[ep];
        while let Some(c) = idle.pop() {
            if !c.tx.is_closed() && c.since.elapsed() < IDLE_TIMEOUT {
                return Some(c.tx);
            }
        }
        None
    }

    /// A new connection to endpoint `ep`, its connection task spawned on
    /// this worker.
    async fn connect(&self, ep: usize) -> Result<Sender, SendError> {
        let e = &self.endpoints[ep];
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect(e.authority.as_str()),
        )
        .await
        .map_err(|_| SendError::Connect("connect timed out".into()))?
        .map_err(|err| SendError::Connect(err.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let tx = match (&self.connector, &e.server_name) {
            (Connector::Tls(tls), Some(name)) => {
                let io = tokio::time::timeout(self.connect_timeout, tls.connect(name.clone(), tcp))
                    .await
                    .map_err(|_| SendError::Connect("TLS handshake timed out".into()))?
                    .map_err(|err| SendError::Connect(format!("TLS: {err}")))?;
                let (tx, conn) = http1::handshake(TokioIo::new(io))
                    .await
                    .map_err(SendError::Protocol)?;
                tokio::spawn(conn);
                tx
            }
            _ => {
                let (tx, conn) = http1::handshake(TokioIo::new(tcp))
                    .await
                    .map_err(SendError::Protocol)?;
                tokio::spawn(conn);
                tx
            }
        };
        Ok(tx)
    }

    /// Send `req` to endpoint `ep` on an idle connection, or on a new one.
    /// A request that a reused connection closed before it was written is
    /// sent again (the service never saw it), as hyper-util's client does;
    /// one that was written is never resent.
    async fn send(
        &self,
        slot: &Slot,
        ep: usize,
        mut req: Request<ReqBody>,
    ) -> Result<(Response<Incoming>, Sender), SendError> {
        loop {
            let (mut tx, reused) = match self.checkout(slot, ep) {
                Some(tx) => (tx, true),
                // boxed: a new connection (TCP, TLS handshake) is the
                // rare path, and inline its state would make every
                // request's future (moved and boxed per request) larger
                None => (Box::pin(self.connect(ep)).await?, false),
            };
            if let Err(err) = tx.ready().await {
                if reused {
                    continue;
                }
                return Err(SendError::Protocol(err));
            }
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok((resp, tx)),
                Err(mut err) => match err.take_message() {
                    Some(r) if reused => req = r,
                    _ => return Err(SendError::Protocol(err.into_error())),
                },
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Round robin over healthy endpoints; when every endpoint is ejected,
    /// try them all anyway (Envoy's panic mode) rather than fail every request.
    fn pick(&self) -> usize {
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| self.endpoints[i].ejected_until.load(Ordering::Relaxed) <= now)
            .unwrap_or(start % n)
    }

    fn record(&self, e: &Endpoint, ok: bool) {
        if ok {
            e.fails.store(0, Ordering::Relaxed);
            return;
        }
        let fails = e.fails.fetch_add(1, Ordering::Relaxed) + 1;
        if fails >= self.max_fails {
            e.ejected_until.store(
                self.now_ms() + self.fail_timeout.as_millis() as u64,
                Ordering::Relaxed,
            );
            e.fails.store(0, Ordering::Relaxed);
            tracing::warn!(upstream = %self.name, endpoint = %e.authority, "endpoint ejected after consecutive failures");
            metrics::counter!("palisade_gateway_upstream_ejections_total", "upstream" => self.name.clone()).increment(1);
        }
    }

    /// Healthy endpoint count (for /readyz).
    pub fn healthy(&self) -> usize {
        let now = self.now_ms();
        self.endpoints
            .iter()
            .filter(|e| e.ejected_until.load(Ordering::Relaxed) <= now)
            .count()
    }

    /// Send the permitted request to one endpoint and return its response.
    pub async fn forward<R>(
        &self,
        _permit: &Permit<R>,
        mut req: Request<ReqBody>,
        ctx: ForwardCtx<'_>,
    ) -> Result<(Response<Body>, String), GatewayError> {
        let ep = self.pick();
        let e = &self.endpoints[ep];
        // origin form: the connection already goes to the endpoint
        let uri: Uri = ctx
            .path_and_query
            .parse()
            .map_err(|_| GatewayError::BadRequest("request target cannot be forwarded"))?;
        // HTTP/2 carries the host in :authority, not Host: forwarding over
        // HTTP/1.1 must turn it into Host (RFC 9113 §8.3.1), or the service
        // sees the endpoint address instead of the host the client asked for
        let host = req.headers().get(header::HOST).cloned().or_else(|| {
            let a = req.uri().authority()?;
            let h = match a.port_u16() {
                Some(p) => format!("{}:{p}", a.host()),
                None => a.host().to_string(),
            };
            HeaderValue::from_str(&h).ok()
        });
        *req.uri_mut() = uri;
        *req.version_mut() = hyper::Version::HTTP_11;
        let h = req.headers_mut();
        // with the hop-by-hop ones: gateway credentials, client copies of
        // identity headers, and client-supplied forwarding headers (the
        // gateway is the edge, so services see exactly the peer it saw)
        strip_headers(h, |n| {
            untrusted_forwarding(n)
                || underscored(n)
                || ctx.credentials.contains(n)
                || ctx.identity_names.contains(n)
        });
        for (n, v) in ctx.identity {
            h.insert(n, v);
        }
        join_cookies(h);
        if let Ok(v) = HeaderValue::from_str(ctx.client_ip) {
            h.insert(X_FORWARDED_FOR, v);
        }
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(ctx.proto));
        if let Ok(v) = HeaderValue::from_str(ctx.request_id) {
            h.insert(X_REQUEST_ID, v);
        }
        // HTTP/1.1 needs a Host: a client without one (HTTP/1.0) gets the endpoint's
        h.insert(
            header::HOST,
            match host {
                Some(host) => host,
                None => HeaderValue::from_str(&e.authority)
                    .map_err(|_| GatewayError::BadRequest("request target cannot be forwarded"))?,
            },
        );
        let timeout = ctx.timeout.unwrap_or(self.request_timeout);
        let slot = self.slot();
        let (resp, tx) = match tokio::time::timeout(timeout, self.send(slot, ep, req)).await {
            // one request's slow work says nothing about the endpoint's health
            // (and a client could otherwise eject it with slow requests)
            Err(_) => return Err(GatewayError::GatewayTimeout),
            Ok(Err(err)) => {
                if ctx.client_fault.load(Ordering::Relaxed) == 0 {
                    self.record(e, false);
                }
                let reason = match &err {
                    SendError::Connect(msg) => {
                        tracing::warn!(upstream = %self.name, endpoint = %e.authority, error = %msg, "upstream connect failed");
                        "upstream_connect_failed"
                    }
                    SendError::Protocol(err) => {
                        tracing::warn!(upstream = %self.name, endpoint = %e.authority, error = %err, "upstream request failed");
                        "upstream_protocol_error"
                    }
                };
                return Err(GatewayError::BadGateway { reason });
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        self.record(e, !matches!(status.as_u16(), 502..=504));
        let (mut parts, body) = resp.into_parts();
        // no upstream software versions leak out either
        strip_headers(&mut parts.headers, |n| {
            n == header::SERVER || n.as_str() == "x-powered-by"
        });
        if status.is_server_error() && !ctx.pass_upstream_errors {
            // upstream 5xx bodies may carry stack traces: replace them
            drop(body);
            let body = serde_json::json!({
                "error": { "code": "upstream_error", "message": "upstream service error", "request_id": ctx.request_id }
            });
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.remove(header::CONTENT_ENCODING);
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return Ok((
                Response::from_parts(parts, crate::respond::full(body.to_string())),
                e.authority.clone(),
            ));
        }
        let mut body = PooledBody {
            inner: body,
            conn: Some((tx, slot.clone(), ep, self.max_idle)),
        };
        if body.inner.is_end_stream() {
            body.release();
        }
        Ok((
            Response::from_parts(parts, body.map_err(BoxError::from).boxed()),
            e.authority.clone(),
        ))
    }
}

/// An upstream response body that gives its connection back to the worker's
/// idle list once the last byte has been read (hyper's connection is then
/// ready for the next request; a connection whose body was not read to the
/// end is closed, never reused).
struct PooledBody {
    inner: Incoming,
    conn: Option<(Sender, Slot, usize, usize)>,
}

impl PooledBody {
    fn release(&mut self) {
        let Some((tx, slot, ep, max_idle)) = self.conn.take() else {
            return;
        };
        if tx.is_closed() || max_idle == 0 {
            return;
        }
        let now = Instant::now();
        let mut w = lock(&slot);
        let idle = &mut w.idle[ep];
        // expired ones are the oldest, at the front
        let expired = idle
            .iter()
            .take_while(|c| now.duration_since(c.since) >= IDLE_TIMEOUT)
            .count();
        idle.drain(..expired);
        if idle.len() >= max_idle {
            return;
        }
        idle.push(IdleConn { tx, since: now });
        if !w.reaper {
            w.reaper = true;
            drop(w);
            spawn_reaper(Arc::downgrade(&slot));
        }
    }
}

/// Closes a worker's connections that stayed idle for [`IDLE_TIMEOUT`] when
/// no request comes to expire them; it ends with the pool (a reload) or when
/// nothing is idle.
fn spawn_reaper(slot: std::sync::Weak<std::sync::Mutex<WorkerConns>>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(IDLE_TIMEOUT / 4).await;
            let Some(slot) = slot.upgrade() else { return };
            let mut w = lock(&slot);
            let mut left = 0;
            for idle in &mut w.idle {
                idle.retain(|c| !c.tx.is_closed() && c.since.elapsed() < IDLE_TIMEOUT);
                left += idle.len();
            }
            if left == 0 {
                w.reaper = false;
                return;
            }
        }
    });
}

impl hyper::body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        let frame = std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            None => self.release(),
            Some(Ok(_)) if self.inner.is_end_stream() => self.release(),
            Some(Err(_)) => self.conn = None,
            Some(Ok(_)) => {}
        }
        std::task::Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_name_is_the_host_of_the_endpoint() {
        assert_eq!(authority_host("orders.internal:8443"), "orders.internal");
        assert_eq!(authority_host("10.0.0.7:443"), "10.0.0.7");
        assert_eq!(authority_host("[::1]:8443"), "::1");
        assert_eq!(authority_host("orders.internal"), "orders.internal");
        assert!(rustls_pki_types::ServerName::try_from(authority_host("[::1]:8443")).is_ok());
    }

    #[test]
    fn cookie_crumbs_are_joined() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        h.append(header::COOKIE, HeaderValue::from_static("c=3"));
        join_cookies(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; b=2; c=3");
        let mut one = HeaderMap::new();
        one.insert(header::COOKIE, HeaderValue::from_static("a=1"));
        join_cookies(&mut one);
        assert_eq!(one[header::COOKIE], "a=1");
    }

    #[test]
    fn meaning_changing_and_underscored_headers_are_chosen_for_removal() {
        for n in [
            "x-http-method-override",
            "x-original-url",
            "x-forwarded-prefix",
            "forwarded",
        ] {
            assert!(untrusted_forwarding(&HeaderName::from_static(n)), "{n}");
        }
        assert!(!untrusted_forwarding(&HeaderName::from_static("x-trace")));
        assert!(underscored(&HeaderName::from_static("x_user")));
        assert!(!underscored(&HeaderName::from_static("x-user")));
    }

    #[test]
    fn strips_hop_by_hop_connection_named_and_chosen_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_headers(&mut h, |_| false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
        // each one alone is found too (the pass that skips the removals)
        for name in [
            "connection",
            "Keep-Alive",
            "proxy-connection",
            "proxy-authenticate",
            "Proxy-Authorization",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ] {
            let mut h = HeaderMap::new();
            h.insert("x-keep", HeaderValue::from_static("1"));
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("x"),
            );
            strip_headers(&mut h, |_| false);
            assert_eq!(h.len(), 1, "{name} was not removed");
        }
        // nothing to remove: nothing changes
        let mut h = HeaderMap::new();
        h.insert("x-keep", HeaderValue::from_static("1"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        strip_headers(&mut h, |_| false);
        assert_eq!(h.len(), 2);
        // what the caller adds goes in the same pass, hop-by-hop ones still do
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer x"));
        h.insert("x-real-ip", HeaderValue::from_static("1.2.3.4"));
        h.insert("forwarded", HeaderValue::from_static("for=1.2.3.4"));
        h.insert("x-forwarded-host", HeaderValue::from_static("evil"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_headers(&mut h, |n| {
            untrusted_forwarding(n) || n == hyper::header::AUTHORIZATION
        });
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-keep"]);
    }
}
