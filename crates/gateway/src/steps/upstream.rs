//! Upstream pools (pipeline step 11): round robin over endpoints with passive
//! health checks (an endpoint that fails `max_fails` times in a row is ejected
//! for `fail_timeout`), pooled keep-alive connections, connect and request
//! timeouts, TLS to upstreams with CA verification and an optional client
//! certificate (mTLS to services), and header hygiene in both directions.
//!
//! [`forward`] takes a [`Permit`] by value and forwards the request the
//! permit was given for to the pool of the route it was given on: nothing
//! reaches a service unless authorization allowed it, a permit serves one
//! request, and no caller chooses the pool.
//!
//! A request cannot be forwarded without a permit (the pool's own send is
//! private to this module):
//!
//! ```compile_fail,E0624
//! use palisade_gateway::config::RouteConfig;
//! use palisade_gateway::steps::upstream::{ForwardCtx, Pool, ReqBody};
//! async fn skip_authz(pool: &Pool, req: hyper::Request<ReqBody>, route: &RouteConfig, ctx: ForwardCtx<'_>) {
//!     let _ = pool.send_permitted(req, "/".into(), Vec::new(), route, ctx).await;
//! }
//! ```
//!
//! nor with a permit forged outside authorization (its fields are private):
//!
//! ```compile_fail,E0451
//! use palisade_gateway::steps::authz::Permit;
//! fn forge<R>(route: R, principal: palisade_gateway::steps::principal::Principal) -> Permit<R> {
//!     Permit { route, principal, resource: todo!(), policies: "".into() }
//! }
//! ```
//!
//! nor sent to another route's pool (the pool comes from the permit; there
//! is no pool argument):
//!
//! ```compile_fail,E0061
//! use std::sync::Arc;
//! use palisade_gateway::steps::authz::Permit;
//! use palisade_gateway::steps::route::Route;
//! use palisade_gateway::steps::upstream::{forward, ForwardCtx, Pool, ReqBody};
//! async fn elsewhere(p: Permit<Arc<Route>>, other: Arc<Pool>, req: hyper::Request<ReqBody>, ctx: ForwardCtx<'_>) {
//!     let _ = forward(p, &other, req, ctx).await;
//! }
//! ```
//!
//! nor twice with one permit (forwarding moves it):
//!
//! ```compile_fail,E0382
//! use std::sync::Arc;
//! use palisade_gateway::steps::authz::Permit;
//! use palisade_gateway::steps::route::Route;
//! use palisade_gateway::steps::upstream::{forward, ForwardCtx, ReqBody};
//! async fn twice(p: Permit<Arc<Route>>, a: hyper::Request<ReqBody>, b: hyper::Request<ReqBody>, c: ForwardCtx<'_>, d: ForwardCtx<'_>) {
//!     let _ = forward(p, a, c).await;
//!     let _ = forward(p, b, d).await;
//! }
//! ```
//!
//! while forwarding with the permit authorization gave compiles:
//!
//! ```no_run
//! use std::sync::Arc;
//! use palisade_gateway::steps::authz::Permit;
//! use palisade_gateway::steps::route::Route;
//! use palisade_gateway::steps::upstream::{forward, ForwardCtx, ReqBody};
//! async fn once(p: Permit<Arc<Route>>, req: hyper::Request<ReqBody>, ctx: ForwardCtx<'_>) {
//!     let _ = forward(p, req, ctx).await;
//! }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{RouteConfig, UpstreamConfig};
use crate::error::{Body, BoxError, GatewayError};
use crate::steps::authz::Permit;
use crate::steps::headers::{
    X_FORWARDED_FOR, X_FORWARDED_PROTO, X_REQUEST_ID, join_cookies, strip_headers, underscored,
    untrusted_forwarding,
};
use crate::steps::limits::ClientFault;

/// The request body as the pool sends it.
pub type ReqBody = BoxBody<Bytes, BoxError>;

/// What a permit is for: a route, which names the pool its requests go to
/// (resolved once, when the gateway is built).
pub trait Target {
    fn config(&self) -> &RouteConfig;
    fn pool(&self) -> &Pool;
}

impl<T: Target + ?Sized> Target for Arc<T> {
    fn config(&self) -> &RouteConfig {
        (**self).config()
    }
    fn pool(&self) -> &Pool {
        (**self).pool()
    }
}

/// How a worker reaches an endpoint: plain TCP, or TLS with CA verification
/// (and a client certificate when configured), ALPN `http/1.1`.
enum Connector {
    Plain,
    Tls(tokio_rustls::TlsConnector),
}

/// The bytes of a connection to an endpoint from an in-process transport.
pub type InProcessIo = tokio::io::DuplexStream;

/// An in-process way to reach endpoints (tests drive the whole pipeline
/// with no socket): returns the client end of a connection to `authority`.
pub trait Dial: Send + Sync {
    fn dial(&self, authority: &str) -> std::io::Result<InProcessIo>;
}

/// How pools reach their endpoints' bytes: TCP in every deployment, or an
/// in-process [`Dial`].
#[derive(Clone, Default)]
pub enum Transport {
    #[default]
    Tcp,
    InProcess(Arc<dyn Dial>),
}

/// An upstream (pool) that cannot be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("invalid {what} in {path}: {reason}")]
    Invalid {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("TLS client configuration: {0}")]
    Tls(String),
    #[error("server_name for {endpoint}: {reason}")]
    ServerName { endpoint: String, reason: String },
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
    transport: Transport,
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

/// What the pipeline tells the upstream step about the request besides
/// the permit: how it arrived, never what it is (that is the permit's).
pub struct ForwardCtx<'a> {
    pub request_id: &'a str,
    pub client_ip: &'a str,
    pub proto: &'static str,
    /// The canonical authority (`host[:port]`) for `Host`; empty when the
    /// request named none (HTTP/1.0): the endpoint's is sent.
    pub authority: &'a str,
    /// Every header any route may set from an identity, removed from the
    /// client request.
    pub identity_names: &'a [HeaderName],
    /// The headers that may carry a gateway credential (never forwarded).
    pub credentials: &'a [HeaderName],
    /// Set by the request body when the *client* broke it (too large, too
    /// slow): such a failure is not held against the endpoint's health.
    pub client_fault: ClientFault,
}

/// Why a request could not be sent upstream.
#[derive(Debug)]
enum SendError {
    Connect(String),
    Protocol(hyper::Error),
}

/// Send the request `permit` was given for to the pool of the route it was
/// given on, and return the response and the endpoint that answered. The
/// method, path and host forwarded are the permit's (what the policies
/// saw); the request supplies the query, the headers and the body.
pub async fn forward<R: Target>(
    permit: Permit<R>,
    req: Request<ReqBody>,
    ctx: ForwardCtx<'_>,
) -> Result<(Response<Body>, String), GatewayError> {
    let route = permit.route().config();
    let res = permit.resource();
    if req.method() != res.method {
        return Err(GatewayError::Internal);
    }
    let upstream_path = crate::steps::route::upstream_path(route, &res.path);
    let mut path_and_query = crate::steps::inspect::encode_path(upstream_path);
    if let Some(q) = req.uri().query() {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    let identity = crate::steps::identity::headers(route, permit.principal())?;
    permit
        .route()
        .pool()
        .send_permitted(req, path_and_query, identity, route, ctx)
        .await
}

/// The host part of `host:port` or `[v6]:port`.
fn authority_host(authority: &str) -> &str {
    match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    }
}

impl Pool {
    fn connector(cfg: &UpstreamConfig) -> Result<Connector, PoolError> {
        let Some(t) = &cfg.tls else {
            return Ok(Connector::Plain);
        };
        let read = |path: &std::path::Path, e: &dyn std::fmt::Display| PoolError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let invalid =
            |what, path: &std::path::Path, e: &dyn std::fmt::Display| PoolError::Invalid {
                what,
                path: path.display().to_string(),
                reason: e.to_string(),
            };
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&t.ca_file).map_err(|e| read(&t.ca_file, &e))? {
            let c = c.map_err(|e| invalid("CA PEM", &t.ca_file, &e))?;
            roots
                .add(c)
                .map_err(|e| invalid("CA certificate", &t.ca_file, &e))?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PoolError::Tls(e.to_string()))?
            .with_root_certificates(roots);
        let mut tls = match &t.client_cert {
            None => b.with_no_client_auth(),
            Some((cert, key)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| read(cert, &e))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| invalid("certificate PEM", cert, &e))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|_| invalid("private key", key, &"no valid private key"))?;
                b.with_client_auth_cert(chain, key)
                    .map_err(|e| PoolError::Tls(format!("upstream client certificate: {e}")))?
            }
        };
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Connector::Tls(tokio_rustls::TlsConnector::from(Arc::new(
            tls,
        ))))
    }

    /// A pool reaching its endpoints over TCP.
    pub fn new(cfg: &UpstreamConfig) -> Result<Arc<Self>, PoolError> {
        Self::with_transport(cfg, Transport::Tcp)
    }

    pub fn with_transport(
        cfg: &UpstreamConfig,
        transport: Transport,
    ) -> Result<Arc<Self>, PoolError> {
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
                        Some(rustls_pki_types::ServerName::try_from(name).map_err(|err| {
                            PoolError::ServerName {
                                endpoint: e.clone(),
                                reason: err.to_string(),
                            }
                        })?)
                    }
                };
                Ok(Endpoint {
                    authority: e.clone(),
                    server_name,
                    fails: AtomicU32::new(0),
                    ejected_until: AtomicU64::new(0),
                })
            })
            .collect::<Result<Vec<_>, PoolError>>()?;
        let slots = (0..crate::worker::workers())
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
            transport,
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
        &self.slots[crate::worker::index() % self.slots.len()]
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
        match &self.transport {
            Transport::Tcp => {
                let tcp = tokio::time::timeout(
                    self.connect_timeout,
                    tokio::net::TcpStream::connect(e.authority.as_str()),
                )
                .await
                .map_err(|_| SendError::Connect("connect timed out".into()))?
                .map_err(|err| SendError::Connect(err.to_string()))?;
                let _ = tcp.set_nodelay(true);
                self.handshake(e, tcp).await
            }
            Transport::InProcess(dial) => {
                let io = dial
                    .dial(&e.authority)
                    .map_err(|err| SendError::Connect(err.to_string()))?;
                self.handshake(e, io).await
            }
        }
    }

    /// TLS (when configured) and HTTP/1.1 on a connection to `e`.
    async fn handshake<IO>(&self, e: &Endpoint, io: IO) -> Result<Sender, SendError>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        match (&self.connector, &e.server_name) {
            (Connector::Tls(tls), Some(name)) => {
                let io = tokio::time::timeout(self.connect_timeout, tls.connect(name.clone(), io))
                    .await
                    .map_err(|_| SendError::Connect("TLS handshake timed out".into()))?
                    .map_err(|err| SendError::Connect(format!("TLS: {err}")))?;
                let (tx, conn) = http1::handshake(TokioIo::new(io))
                    .await
                    .map_err(SendError::Protocol)?;
                tokio::spawn(conn);
                Ok(tx)
            }
            _ => {
                let (tx, conn) = http1::handshake(TokioIo::new(io))
                    .await
                    .map_err(SendError::Protocol)?;
                tokio::spawn(conn);
                Ok(tx)
            }
        }
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

    /// Send a request [`forward`] prepared to one endpoint and return its
    /// response (private: only `forward`, which takes the permit, calls it).
    async fn send_permitted(
        &self,
        mut req: Request<ReqBody>,
        path_and_query: String,
        identity: Vec<(HeaderName, HeaderValue)>,
        route: &RouteConfig,
        ctx: ForwardCtx<'_>,
    ) -> Result<(Response<Body>, String), GatewayError> {
        let ep = self.pick();
        let e = &self.endpoints[ep];
        // origin form: the connection already goes to the endpoint
        let uri: Uri = path_and_query
            .parse()
            .map_err(|_| GatewayError::BadRequest("request target cannot be forwarded"))?;
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
        for (n, v) in identity {
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
        // the canonical authority the policies saw (HTTP/2 carries it in
        // :authority, RFC 9113 §8.3.1, and HTTP/1.1 needs a Host); never
        // empty through the pipeline (a request without a host is refused
        // by the host step), the endpoint's for a caller that gives none
        let authority = if ctx.authority.is_empty() {
            &e.authority
        } else {
            ctx.authority
        };
        h.insert(
            header::HOST,
            HeaderValue::from_str(authority)
                .map_err(|_| GatewayError::BadRequest("request target cannot be forwarded"))?,
        );
        let timeout = route.request_timeout.unwrap_or(self.request_timeout);
        let slot = self.slot();
        let (resp, tx) = match tokio::time::timeout(timeout, self.send(slot, ep, req)).await {
            // one request's slow work says nothing about the endpoint's health
            // (and a client could otherwise eject it with slow requests)
            Err(_) => return Err(GatewayError::GatewayTimeout),
            Ok(Err(err)) => {
                if ctx.client_fault.is_clear() {
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
        if status.is_server_error() && !route.pass_upstream_errors {
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
                Response::from_parts(parts, crate::error::full(body.to_string())),
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
}
