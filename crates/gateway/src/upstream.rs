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
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::authz::Permit;
use crate::config::UpstreamConfig;
use crate::respond::{Body, GatewayError};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ReqBody = BoxBody<Bytes, BoxError>;

// Header names as constants: a `&str` name is parsed on every use.
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_POWERED_BY: HeaderName = HeaderName::from_static("x-powered-by");

/// Headers that belong to one connection and are never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Forwarding headers a client may not set (X-Forwarded-For/-Proto are replaced).
const UNTRUSTED_FORWARDING: [HeaderName; 3] = [header::FORWARDED, X_REAL_IP, X_FORWARDED_HOST];

/// Remove every header named in `names`. One pass over the few names present
/// finds them; only those are removed (each removal hashes a name, and
/// usually none or one of `names` is there).
fn remove_present(h: &mut HeaderMap, names: &[HeaderName]) {
    let present: Vec<HeaderName> = h.keys().filter(|k| names.contains(k)).cloned().collect();
    for n in present {
        h.remove(n);
    }
}

/// Remove hop-by-hop headers, including those named in `Connection`.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    remove_present(h, &HOP_BY_HOP);
}

enum HttpClient {
    Plain(Client<HttpConnector, ReqBody>),
    Tls(Client<hyper_rustls::HttpsConnector<HttpConnector>, ReqBody>),
}

struct Endpoint {
    authority: String,
    fails: AtomicU32,
    /// Milliseconds since `Pool::epoch` until which the endpoint is ejected.
    ejected_until: AtomicU64,
}

pub struct Pool {
    pub name: String,
    endpoints: Vec<Endpoint>,
    next: AtomicUsize,
    clients: Vec<HttpClient>,
    scheme: &'static str,
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
    /// Every header name the route may set from identity (removed from the client request).
    pub identity_names: Vec<HeaderName>,
    pub path_and_query: String,
    pub pass_upstream_errors: bool,
    pub timeout: Option<Duration>,
    /// Set by the request body when the *client* broke it (too large, too
    /// slow): such a failure is not held against the endpoint's health.
    pub client_fault: Arc<std::sync::atomic::AtomicU8>,
}

impl Pool {
    fn client(cfg: &UpstreamConfig) -> Result<(HttpClient, &'static str), String> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(cfg.tls.is_none());
        let mut builder = Client::builder(TokioExecutor::new());
        // idle upstream connections are bounded and expire (each holds
        // hyper's buffers): a burst must not leave hundreds behind
        builder
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(cfg.max_idle_connections);
        Ok(match &cfg.tls {
            None => (HttpClient::Plain(builder.build(http)), "http"),
            Some(t) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(&t.ca_file)
                    .map_err(|e| format!("cannot read {}: {e}", t.ca_file.display()))?
                {
                    roots
                        .add(c.map_err(|e| {
                            format!("invalid CA PEM in {}: {e}", t.ca_file.display())
                        })?)
                        .map_err(|e| format!("invalid CA certificate: {e}"))?;
                }
                let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
                let b = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_root_certificates(roots);
                let tls = match &t.client_cert {
                    None => b.with_no_client_auth(),
                    Some((cert, key)) => {
                        let chain: Vec<CertificateDer<'static>> =
                            CertificateDer::pem_file_iter(cert)
                                .map_err(|e| format!("cannot read {}: {e}", cert.display()))?
                                .collect::<Result<_, _>>()
                                .map_err(|e| {
                                    format!("invalid certificate PEM in {}: {e}", cert.display())
                                })?;
                        let key = PrivateKeyDer::from_pem_file(key)
                            .map_err(|_| format!("no valid private key in {}", key.display()))?;
                        b.with_client_auth_cert(chain, key)
                            .map_err(|e| format!("upstream client certificate: {e}"))?
                    }
                };
                let mut https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls)
                    .https_only();
                if let Some(sni) = &t.server_name {
                    https = https.with_server_name_resolver(
                        hyper_rustls::FixedServerNameResolver::new(
                            rustls_pki_types::ServerName::try_from(sni.clone())
                                .map_err(|e| format!("server_name: {e}"))?,
                        ),
                    );
                }
                let conn = https.enable_http1().wrap_connector(http);
                (HttpClient::Tls(builder.build(conn)), "https")
            }
        })
    }

    pub fn new(cfg: &UpstreamConfig) -> Result<Arc<Self>, String> {
        // one client (one connection pool) per worker thread: a request never
        // waits on a connection task owned by another thread
        let mut clients = Vec::new();
        let mut scheme = "http";
        for _ in 0..crate::server::workers() {
            let (c, s) = Self::client(cfg)?;
            clients.push(c);
            scheme = s;
        }
        Ok(Arc::new(Self {
            name: cfg.name.clone(),
            endpoints: cfg
                .endpoints
                .iter()
                .map(|e| Endpoint {
                    authority: e.clone(),
                    fails: AtomicU32::new(0),
                    ejected_until: AtomicU64::new(0),
                })
                .collect(),
            next: AtomicUsize::new(0),
            clients,
            scheme,
            request_timeout: cfg.request_timeout,
            max_fails: cfg.max_fails.max(1),
            fail_timeout: cfg.fail_timeout,
            epoch: Instant::now(),
        }))
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Round robin over healthy endpoints; when every endpoint is ejected,
    /// try them all anyway (Envoy's panic mode) rather than fail every request.
    fn pick(&self) -> &Endpoint {
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        for i in 0..n {
            let e = &self.endpoints[(start + i) % n];
            if e.ejected_until.load(Ordering::Relaxed) <= now {
                return e;
            }
        }
        &self.endpoints[start % n]
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
        let uri: Uri = [self.scheme, "://", &ep.authority, &ctx.path_and_query]
            .concat()
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
        strip_hop_by_hop(h);
        // gateway credentials and client copies of identity headers, and
        // client-supplied forwarding headers: the gateway is the edge, so
        // services see exactly the peer the gateway saw
        remove_present(h, &ctx.identity_names);
        remove_present(h, &UNTRUSTED_FORWARDING);
        for (n, v) in ctx.identity {
            h.insert(n, v);
        }
        if let Ok(v) = HeaderValue::from_str(ctx.client_ip) {
            h.insert(X_FORWARDED_FOR, v);
        }
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(ctx.proto));
        if let Ok(v) = HeaderValue::from_str(ctx.request_id) {
            h.insert(X_REQUEST_ID, v);
        }
        if let Some(host) = host {
            h.insert(header::HOST, host);
        }
        let timeout = ctx.timeout.unwrap_or(self.request_timeout);
        let fut = async {
            let idx = crate::server::WORKER.with(std::cell::Cell::get) % self.clients.len();
            match &self.clients[idx] {
                HttpClient::Plain(c) => c.request(req).await,
                HttpClient::Tls(c) => c.request(req).await,
            }
        };
        let resp = match tokio::time::timeout(timeout, fut).await {
            Err(_) => {
                self.record(ep, false);
                return Err(GatewayError::GatewayTimeout);
            }
            Ok(Err(e)) => {
                if ctx.client_fault.load(Ordering::Relaxed) == 0 {
                    self.record(ep, false);
                }
                tracing::warn!(upstream = %self.name, endpoint = %ep.authority, error = %e, "upstream request failed");
                return Err(GatewayError::BadGateway {
                    reason: if e.is_connect() {
                        "upstream_connect_failed"
                    } else {
                        "upstream_protocol_error"
                    },
                });
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        self.record(ep, !matches!(status.as_u16(), 502..=504));
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        // no upstream software versions leak out
        remove_present(&mut parts.headers, &[header::SERVER, X_POWERED_BY]);
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
                ep.authority.clone(),
            ));
        }
        Ok((
            Response::from_parts(parts, body.boxed()),
            ep.authority.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named() {
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
        strip_hop_by_hop(&mut h);
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
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name} was not removed");
        }
        // nothing to remove: nothing changes
        let mut h = HeaderMap::new();
        h.insert("x-keep", HeaderValue::from_static("1"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
    }
}
