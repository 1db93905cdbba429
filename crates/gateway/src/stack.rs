//! The gateway pipeline, written once, in design.md's order:
//!
//! | # | step | here |
//! |---|---|---|
//! | 2 | HTTP framing checks | [`check_framing`] (hyper enforces header limits and the header deadline) |
//! | 3 | respond | [`crate::respond::error_response`] is the only error renderer |
//! | 4 | request id | [`handle`] |
//! | 5 | security log | [`handle`] fills one [`SecurityRecord`] per request |
//! | 6 | per-IP rate limit | before any cryptographic work |
//! | 7 | inspect | [`crate::inspect::normalize_path`], body size |
//! | 8 | authn | [`crate::authn::Authenticator`] |
//! | 9 | per-principal rate limit | route and consumer quotas |
//! | 10 | authz | [`crate::authz::Authorizer`] -> `Permit` |
//! | 11 | upstream | [`crate::upstream::Pool::forward`] takes the `Permit` |

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use palisade_ratelimit::{Decision, Key, Quota};

use crate::authz::Resource;
use crate::config::{LimitKey, RouteConfig};
use crate::inspect;
use crate::log::SecurityRecord;
use crate::principal::{PeerIdentity, Principal};
use crate::respond::{Body, GatewayError, error_response, full};
use crate::server::Gateway;
use crate::upstream::{BoxError, ForwardCtx};

/// What the listener knows about the connection.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub listener: Arc<str>,
    pub tls: bool,
    /// Boxed: most connections have none, and every idle connection
    /// holds a `ConnInfo`.
    pub identity: Option<Box<PeerIdentity>>,
}

/// Why a streamed body was cut off (read after an upstream failure).
const BODY_OK: u8 = 0;
const BODY_TOO_LARGE: u8 = 1;
const BODY_TOO_SLOW: u8 = 2;
/// The client's body broke (malformed framing, a disconnect mid-body).
const BODY_BROKEN: u8 = 3;

/// The request body with the route's size limit and the minimum-rate rule
/// (slow-body defence) enforced while it streams to the upstream.
struct GuardedBody {
    inner: Incoming,
    read: u64,
    max: u64,
    started: Instant,
    min_rate: u64,
    state: Arc<AtomicU8>,
    /// The stream idle timeout: the longest the client may send nothing
    /// while the upstream waits for the body.
    idle: Duration,
    /// Runs while the body waits for the client (made on first use).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
}

/// Grace period before the minimum body rate applies.
const RATE_GRACE: Duration = Duration::from_secs(5);

impl hyper::body::Body for GuardedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.armed = false;
                if let Some(d) = frame.data_ref() {
                    this.read += d.len() as u64;
                    if this.read > this.max {
                        this.state.store(BODY_TOO_LARGE, Ordering::Relaxed);
                        return Poll::Ready(Some(Err("request body too large".into())));
                    }
                    let elapsed = this.started.elapsed();
                    if this.min_rate > 0
                        && elapsed > RATE_GRACE
                        && (this.read as f64 / elapsed.as_secs_f64()) < this.min_rate as f64
                    {
                        this.state.store(BODY_TOO_SLOW, Ordering::Relaxed);
                        return Poll::Ready(Some(Err("request body too slow".into())));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                // the client's fault: a 400, never held against the upstream
                this.state.store(BODY_BROKEN, Ordering::Relaxed);
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = tokio::time::Instant::now() + this.idle;
                let timer = match &mut this.timer {
                    Some(t) => {
                        if !this.armed {
                            t.as_mut().reset(deadline);
                        }
                        t
                    }
                    None => this
                        .timer
                        .insert(Box::pin(tokio::time::sleep_until(deadline))),
                };
                this.armed = true;
                if timer.as_mut().poll(cx).is_ready() {
                    this.state.store(BODY_TOO_SLOW, Ordering::Relaxed);
                    metrics::counter!("palisade_gateway_stream_idle_timeouts_total", "waiting_on" => "client_body").increment(1);
                    return Poll::Ready(Some(Err("request body idle".into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// hyper's own head limits, set four times the configured ones: the
/// configured limits are enforced in the pipeline ([`check_headers`]), so
/// a refusal gets the JSON error body and a security-log line; only a head
/// past these outer bounds gets hyper's bare answer.
pub fn outer_header_bytes(limits: &crate::config::Limits) -> usize {
    limits.max_header_bytes.saturating_mul(4).max(8192)
}

pub fn outer_headers(limits: &crate::config::Limits) -> usize {
    limits.max_headers.saturating_mul(4)
}

/// The configured header limits: at most `max_headers` fields and
/// `max_header_bytes` of names and values (each counted with its `: ` and
/// line end) -> 431.
pub fn check_headers(
    h: &hyper::HeaderMap,
    limits: &crate::config::Limits,
) -> Result<(), GatewayError> {
    if h.len() > limits.max_headers {
        return Err(GatewayError::HeadersTooLarge);
    }
    let bytes: usize = h.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    if bytes > limits.max_header_bytes {
        return Err(GatewayError::HeadersTooLarge);
    }
    Ok(())
}

/// Ambiguous framing is refused (request smuggling): both Content-Length and
/// Transfer-Encoding, several or invalid Content-Length values, or a
/// Transfer-Encoding other than a single `chunked`.
pub fn check_framing(h: &hyper::HeaderMap) -> Result<(), GatewayError> {
    let cls: Vec<&HeaderValue> = h.get_all(header::CONTENT_LENGTH).iter().collect();
    let tes: Vec<&HeaderValue> = h.get_all(header::TRANSFER_ENCODING).iter().collect();
    if !cls.is_empty() && !tes.is_empty() {
        return Err(GatewayError::BadRequest("ambiguous message framing"));
    }
    if cls.len() > 1 {
        return Err(GatewayError::BadRequest("ambiguous message framing"));
    }
    if let Some(cl) = cls.first()
        && !cl
            .to_str()
            .is_ok_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(GatewayError::BadRequest("invalid Content-Length"));
    }
    if tes.len() > 1
        || tes
            .first()
            .is_some_and(|te| !te.as_bytes().eq_ignore_ascii_case(b"chunked"))
    {
        return Err(GatewayError::BadRequest("unsupported Transfer-Encoding"));
    }
    Ok(())
}

/// A host and port as a request names them, checked and canonical.
#[derive(Debug, PartialEq, Eq)]
struct Authority {
    /// Lowercase, without a trailing dot; IPv6 literals keep their brackets.
    host: String,
    port: Option<u16>,
}

/// `host[:port]` (a reg-name, an IPv4 address or a bracketed IPv6 literal),
/// nothing else: no userinfo, no path, no empty host.
fn parse_authority(s: &str) -> Result<Authority, GatewayError> {
    let bad = || GatewayError::InvalidHost("invalid Host");
    if s.contains('@') {
        return Err(GatewayError::InvalidHost("userinfo in the host"));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (lit, after) = rest.split_once(']').ok_or_else(bad)?;
        if lit.is_empty()
            || !lit
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(bad());
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(bad)?),
        };
        (format!("[{}]", lit.to_ascii_lowercase()), port)
    } else {
        let (h, p) = match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        let h = h.strip_suffix('.').unwrap_or(h);
        if h.is_empty()
            || !h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            || h.starts_with('.')
            || h.contains("..")
        {
            return Err(bad());
        }
        (h.to_ascii_lowercase(), p)
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().map_err(|_| bad())?)
        }
        Some(_) => return Err(bad()),
    };
    Ok(Authority { host, port })
}

/// The request's host, canonical (lowercase, no trailing dot, no port),
/// once, for routing, policy and the log. Ambiguity is refused: two `Host`
/// headers, or a target authority (absolute form, HTTP/2 `:authority`)
/// naming another host than `Host` (RFC 9112 §3.2.2 would let the target
/// win; a service behind us might not).
fn canonical_host<B>(req: &Request<B>) -> Result<String, GatewayError> {
    let mut all = req.headers().get_all(header::HOST).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(GatewayError::InvalidHost("more than one Host header"));
    }
    let from_header = match first {
        Some(v) => Some(parse_authority(
            v.to_str()
                .map_err(|_| GatewayError::InvalidHost("invalid Host"))?,
        )?),
        None => None,
    };
    let from_target = req
        .uri()
        .authority()
        .map(|a| parse_authority(a.as_str()))
        .transpose()?;
    match (from_header, from_target) {
        (Some(h), Some(t))
            if h.host != t.host || (h.port.is_some() && t.port.is_some() && h.port != t.port) =>
        {
            Err(GatewayError::InvalidHost(
                "the request target's authority differs from Host",
            ))
        }
        (Some(a), _) | (None, Some(a)) => Ok(a.host),
        (None, None) => Ok(String::new()),
    }
}

fn host_matches(route: &RouteConfig, host: &str) -> bool {
    route.hosts.is_empty()
        || route.hosts.iter().any(|h| match h.strip_prefix("*.") {
            Some(suffix) => host.strip_suffix(suffix).is_some_and(|l| {
                l.ends_with('.') && l.len() > 1 && !l[..l.len() - 1].contains('.')
            }),
            None => h == host,
        })
}

/// The route for (host, path, method): most specific prefix first.
/// `preflight` says the request is a CORS preflight (`OPTIONS` with
/// `Access-Control-Request-Method`): only that is answered on a CORS route
/// whose `methods` do not list `OPTIONS`.
fn select<'a>(
    gw: &'a Gateway,
    host: &str,
    path: &str,
    method: &str,
    preflight: bool,
) -> Result<&'a Arc<RouteConfig>, GatewayError> {
    // TRACE, CONNECT and extension methods never reach a route or a policy
    if !matches!(
        method,
        "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS"
    ) {
        return Err(GatewayError::MethodNotAllowed);
    }
    // Routes are sorted by prefix length, longest first. The longest prefix
    // that matches decides: among routes with exactly that prefix, the one
    // listing the method wins; if none does, 405. A request never falls
    // through to a shorter, possibly weaker route because of its method.
    let mut matched_len: Option<usize> = None;
    for r in &gw.routes {
        let len = r.path_prefix.trim_end_matches('/').len();
        if matched_len.is_some_and(|m| len < m) {
            break;
        }
        if host_matches(r, host) && inspect::under_prefix(path, &r.path_prefix) {
            matched_len = Some(len);
            let preflight = preflight && r.cors.is_some();
            if r.methods.is_empty() || preflight || r.methods.iter().any(|m| m == method) {
                return Ok(r);
            }
        }
    }
    Err(if matched_len.is_some() {
        GatewayError::MethodNotAllowed
    } else {
        GatewayError::NoRoute
    })
}

fn limit_err(
    d: Decision,
    q: &Quota,
    name: &'static str,
) -> Result<Vec<(&'static str, String)>, GatewayError> {
    let headers = palisade_ratelimit::headers(&d, q, name);
    match d {
        Decision::Allow { .. } => Ok(headers),
        Decision::Deny { retry_after, .. } => Err(GatewayError::RateLimited {
            retry_after,
            headers,
            limit: name,
        }),
    }
}

/// The value of an identity header, or `None` when the principal has none.
/// Lists are joined with `,`: an element that itself holds a `,` (a role
/// `"viewer,orders-admin"`) would read as two to a service that splits the
/// header while Cedar saw one, so it is refused.
fn identity_value(p: &Principal, claim: &str) -> Result<Option<String>, GatewayError> {
    let ambiguous = || GatewayError::Forbidden {
        reason: "identity_not_forwardable".into(),
    };
    let joined = |v: &[String]| {
        if v.iter().any(|x| x.contains(',')) {
            return Err(ambiguous());
        }
        Ok(if v.is_empty() {
            None
        } else {
            Some(v.join(","))
        })
    };
    Ok(match claim {
        "sub" | "subject" => Some(p.subject.to_string()).filter(|s| !s.is_empty()),
        "iss" | "issuer" => Some(p.issuer.to_string()).filter(|s| !s.is_empty()),
        "scopes" => joined(&p.scopes)?,
        "roles" => joined(&p.roles)?,
        "consumer" => p.consumer.clone(),
        "auth_method" => Some(p.method.as_str().to_string()),
        "cert_uri" => p.peer.as_ref().and_then(|c| c.uris.first().cloned()),
        "cert_dns" => p.peer.as_ref().and_then(|c| c.dns_names.first().cloned()),
        "cert_subject" => p.peer.as_ref().map(|c| c.subject.clone()),
        other => match p.claims.get(other) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Array(a)) => {
                let items: Vec<String> = a
                    .iter()
                    .filter_map(|x| x.as_str())
                    .map(str::to_owned)
                    .collect();
                joined(&items)?
            }
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            Some(serde_json::Value::Bool(b)) => Some(b.to_string()),
            _ => None,
        },
    })
}

fn cors_origin(route: &RouteConfig, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
    let cors = route.cors.as_ref()?;
    let origin = origin?;
    let o = origin.to_str().ok()?;
    if cors.allowed_origins.iter().any(|a| a == o) {
        Some(origin.clone())
    } else if cors.allowed_origins.iter().any(|a| a == "*") {
        Some(HeaderValue::from_static("*"))
    } else {
        None
    }
}

fn add_cors(resp: &mut Response<Body>, route: &RouteConfig, allowed: HeaderValue) {
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if route.cors.as_ref().is_some_and(|c| c.allow_credentials) {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

async fn pipeline(
    gw: &Gateway,
    conn: &ConnInfo,
    client: std::net::IpAddr,
    req: Request<Incoming>,
    request_id: &str,
    rec: &mut SecurityRecord,
) -> Result<(Response<Body>, Option<Arc<RouteConfig>>), GatewayError> {
    check_headers(req.headers(), &gw.limits)?;
    check_framing(req.headers())?;

    // 6: per-IP shield, before any cryptographic work
    if let Some(q) = &gw.peer_quota {
        let d = gw.limiter.check(&Key::peer(client), q).await;
        // its headers go out only on a refusal (the route's limit, if any,
        // is the one an admitted response reports)
        if matches!(d, Decision::Deny { .. }) {
            limit_err(d, q, "peer")?;
        }
    }

    // 7: inspect
    let path = inspect::normalize_path(req.uri().path())?;
    rec.path = path.clone();
    let host = canonical_host(&req)?;
    rec.host = host.clone();
    let method = req.method().as_str().to_string();
    let preflight = method == "OPTIONS"
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let route = select(gw, &host, &path, &method, preflight)?.clone();
    rec.route = route.name.clone();
    let max_body = route.max_body_bytes.unwrap_or(gw.limits.max_body_bytes);
    if let Some(cl) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok())
    {
        rec.bytes_in = cl;
        if cl > max_body {
            return Err(GatewayError::PayloadTooLarge);
        }
    }

    // CORS preflight: answered here, never forwarded
    let origin = req.headers().get(header::ORIGIN).cloned();
    if route.cors.is_some()
        && method == "OPTIONS"
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        let Some(allowed) = cors_origin(&route, origin.as_ref()) else {
            return Err(GatewayError::Forbidden {
                reason: "cors_origin_not_allowed".into(),
            });
        };
        let mut resp = Response::new(full(Bytes::new()));
        *resp.status_mut() = StatusCode::NO_CONTENT;
        if let Some(c) = &route.cors {
            let h = resp.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&c.allowed_methods.join(", ")) {
                h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
            }
            if !c.allowed_headers.is_empty()
                && let Ok(v) = HeaderValue::from_str(&c.allowed_headers.join(", "))
            {
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
            }
            if let Some(age) = c.max_age {
                h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(age));
            }
        }
        add_cors(&mut resp, &route, allowed);
        rec.reason = "cors_preflight".into();
        return Ok((resp, Some(route)));
    }

    // 8: authn
    let now = palisade_core::now_nanos() / 1_000_000_000;
    let principal = gw
        .authn
        .authenticate(&route, req.headers(), conn.identity.as_deref(), now)
        .await?;
    rec.principal = principal.label();
    rec.auth_method = principal.method.as_str().to_string();

    // 9: per-principal / per-consumer / per-route limits
    let mut limit_headers = Vec::new();
    let consumer_quota = principal
        .consumer
        .as_ref()
        .and_then(|c| route.consumer_limits.get(c));
    if let Some(q) = consumer_quota {
        let quota = Quota::new(q.limit, q.period, q.burst).map_err(|_| GatewayError::Internal)?;
        let key = Key::principal(&route.name, &rec.principal);
        limit_headers = limit_err(gw.limiter.check(&key, &quota).await, &quota, "consumer")?;
    } else if let Some((q, per)) = &route.ratelimit {
        let quota = Quota::new(q.limit, q.period, q.burst).map_err(|_| GatewayError::Internal)?;
        // as Kong's limit_by: a caller without the identity the limit is
        // keyed by (anonymous for `principal`, no key for `apikey`) is
        // limited by its IP, not in one bucket shared by all such callers
        let by_ip = || Key::principal(&route.name, &rec.client_ip);
        let key = match per {
            LimitKey::Principal if principal.method == crate::principal::Method::Anonymous => {
                by_ip()
            }
            LimitKey::Principal => Key::principal(&route.name, &rec.principal),
            LimitKey::Ip => by_ip(),
            LimitKey::Route => Key::route(&route.name),
            LimitKey::ApiKey => match principal.key_id.as_deref() {
                Some(id) => Key::api_key(&route.name, id),
                None => by_ip(),
            },
        };
        limit_headers = limit_err(gw.limiter.check(&key, &quota).await, &quota, "route")?;
    }

    // 10: authz
    let ip = rec.client_ip.clone();
    let resource = Resource {
        route: &route.name,
        method: &method,
        path: &path,
        host: &host,
        ip: &ip,
    };
    let permit = gw
        .authz
        .authorize(route.clone(), principal, &resource)
        .map_err(|reason| GatewayError::Forbidden { reason })?;
    rec.reason = ["policy:", permit.policies()].concat();

    // 11: upstream
    let pool = gw
        .pools
        .get(&route.upstream)
        .ok_or(GatewayError::Internal)?
        .clone();
    let mut identity = Vec::new();
    for (name, claim) in &route.forward_identity {
        if let Some(v) = identity_value(permit.principal(), claim)? {
            // a value that is not a header value is refused, not dropped: a
            // missing x-user must never be the service's reading of a caller
            let v = HeaderValue::from_str(&v).map_err(|_| GatewayError::Forbidden {
                reason: "identity_not_forwardable".into(),
            })?;
            identity.push((name.clone(), v));
        }
    }
    let upstream_path = if route.strip_prefix {
        let rest = path
            .strip_prefix(route.path_prefix.trim_end_matches('/'))
            .unwrap_or(&path);
        if rest.is_empty() {
            "/".to_string()
        } else {
            rest.to_string()
        }
    } else {
        path.clone()
    };
    let mut path_and_query = inspect::encode_path(&upstream_path);
    if let Some(q) = req.uri().query() {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    // the cap on this client's forwarded requests, held until the
    // response body is done
    let slot = gw
        .client_slots
        .acquire(client, gw.limits.max_concurrent_requests_per_client)
        .ok_or(GatewayError::TooManyConcurrent)?;
    let (parts, body) = req.into_parts();
    // HTTP/2 streams share a connection: a stalled one blocks no socket write
    let h2 = parts.version == hyper::Version::HTTP_2;
    let state = Arc::new(AtomicU8::new(BODY_OK));
    let guarded = GuardedBody {
        inner: body,
        read: 0,
        max: max_body,
        started: Instant::now(),
        min_rate: gw.limits.min_body_rate,
        state: state.clone(),
        idle: gw.limits.stream_idle_timeout,
        timer: None,
        armed: false,
    };
    let upstream_req = Request::from_parts(parts, guarded.boxed());
    let ctx = ForwardCtx {
        request_id,
        client_ip: &ip,
        proto: if conn.tls { "https" } else { "http" },
        identity,
        identity_names: &gw.identity_headers,
        credentials: gw.authn.credential_headers(),
        path_and_query,
        pass_upstream_errors: route.pass_upstream_errors,
        timeout: route.request_timeout,
        client_fault: state.clone(),
    };
    let result = pool.forward(&permit, upstream_req, ctx).await;
    let (resp, endpoint) = match result {
        Ok(r) => r,
        Err(e) => {
            return Err(match state.load(Ordering::Relaxed) {
                BODY_TOO_LARGE => GatewayError::PayloadTooLarge,
                BODY_TOO_SLOW => GatewayError::RequestTimeout,
                BODY_BROKEN => GatewayError::InvalidBody,
                _ => e,
            });
        }
    };
    let idle = gw.limits.stream_idle_timeout;
    let mut resp = resp.map(|b| crate::stream::IdleBody::new(b, idle, h2, Some(slot)).boxed());
    rec.upstream = [pool.name.as_str(), "/", &endpoint].concat();
    for (n, v) in limit_headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            resp.headers_mut().insert(n, v);
        }
    }
    if let Some(allowed) = cors_origin(&route, origin.as_ref()) {
        add_cors(&mut resp, &route, allowed);
    } else if route.cors.is_some() {
        // the answer depends on Origin even when it carries no CORS headers:
        // a shared cache must not hand it to an allowed origin
        resp.headers_mut()
            .append(header::VARY, HeaderValue::from_static("Origin"));
    }
    Ok((resp, Some(route)))
}

/// Security headers on every response.
fn security_headers(resp: &mut Response<Body>, tls: bool, csp: Option<&str>) {
    let h = resp.headers_mut();
    if tls {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        );
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Some(csp) = csp
        && let Ok(v) = HeaderValue::from_str(csp)
    {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.remove(header::SERVER);
}

/// A random version-4 UUID for a request. The bytes come from aws-lc's
/// CSPRNG like every other random value, fetched 4 KiB at a time per worker
/// thread (as Envoy does for its request ids): one `RAND_bytes` call per 256
/// requests instead of one per request.
fn request_id() -> String {
    const BATCH: usize = 4096;
    thread_local! {
        static POOL: std::cell::RefCell<(Box<[u8; BATCH]>, usize)> =
            std::cell::RefCell::new((Box::new([0; BATCH]), BATCH));
    }
    POOL.with_borrow_mut(|(buf, used)| {
        if *used + 16 > BATCH {
            buf.copy_from_slice(&palisade_core::random_bytes(BATCH));
            *used = 0;
        }
        let mut b = [0u8; 16];
        b.copy_from_slice(&buf[*used..*used + 16]);
        // a byte is handed out once: zeroed as it is taken
        buf[*used..*used + 16].fill(0);
        *used += 16;
        palisade_core::uuid_v4_from(b)
    })
}

/// Entry point for one request on a serving listener.
///
/// `busy` (HTTPS HTTP/1.1) keeps the connection counted busy until hyper
/// drops the response body (see `conn.rs`).
pub async fn handle(
    gw: Arc<Gateway>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
    busy: Option<crate::conn::Busy>,
) -> Result<Response<crate::conn::Tracked<Body>>, Infallible> {
    let started = Instant::now();
    let request_id = request_id();
    // the TCP peer, or behind a trusted proxy the address it forwarded
    let client = crate::client_ip::client_ip(conn.peer.ip(), req.headers(), &gw.trusted_proxies);
    let mut rec = SecurityRecord {
        time: palisade_core::rfc3339(palisade_core::now_nanos()),
        request_id: request_id.clone(),
        listener: conn.listener.to_string(),
        client_ip: crate::client_ip::ip_text(client),
        method: req.method().as_str().to_string(),
        path: [
            "<",
            itoa::Buffer::new().format(req.uri().path().len()),
            " bytes unnormalised>",
        ]
        .concat(),
        ..Default::default()
    };
    let timeout = gw.limits.request_timeout;
    let outcome = match tokio::time::timeout(
        timeout,
        pipeline(&gw, &conn, client, req, &request_id, &mut rec),
    )
    .await
    {
        Ok(r) => r,
        // past authorization the time went to the upstream: that is a 504
        Err(_) if rec.reason.starts_with("policy:") => Err(GatewayError::GatewayTimeout),
        Err(_) => Err(GatewayError::RequestTimeout),
    };
    let (mut resp, route) = match outcome {
        Ok((r, route)) => {
            rec.decision = "allow";
            (r, route)
        }
        Err(e) => {
            rec.decision = "deny";
            rec.reason = e.log_reason();
            rec.category = e.category();
            let mut r = error_response(&e, &request_id);
            if matches!(
                e,
                GatewayError::BadRequest(_)
                    | GatewayError::RequestTimeout
                    | GatewayError::PayloadTooLarge
            ) {
                // framing or body errors leave the connection in an unknown state
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            (r, None)
        }
    };
    security_headers(
        &mut resp,
        conn.tls,
        route
            .as_ref()
            .and_then(|r| r.content_security_policy.as_deref()),
    );
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert(crate::upstream::X_REQUEST_ID, v);
    }
    let status = resp.status();
    rec.status = status.as_u16();
    let took = started.elapsed();
    rec.latency_us = took.as_micros() as u64;
    rec.bytes_out = hyper::body::Body::size_hint(resp.body())
        .exact()
        .unwrap_or(0);
    request_metrics(&rec.route, rec.decision, status, took);
    if let Some(cat) = rec.category {
        metrics::counter!("palisade_gateway_security_events_total", "category" => cat).increment(1);
    }
    gw.log.write(&rec);
    Ok(resp.map(|inner| crate::conn::Tracked { inner, busy }))
}

/// One worker's metric handles per route: the route's duration histogram
/// and its request counters by (decision, status).
type RouteMetrics = (
    Arc<crate::durations::Histogram>,
    Vec<(&'static str, u16, metrics::Counter)>,
);

thread_local! {
    /// Handles resolved once per worker instead of per request (the
    /// `counter!` macro builds, hashes and looks up its labels every time).
    /// Routes come from the configuration, so this stays small; it starts
    /// over if reloads ever leave many names behind.
    static REQUEST_METRICS: std::cell::RefCell<HashMap<Box<str>, RouteMetrics>> =
        std::cell::RefCell::new(HashMap::new());
}

/// Count a finished request and record its duration.
fn request_metrics(route: &str, decision: &'static str, status: StatusCode, took: Duration) {
    REQUEST_METRICS.with(|m| {
        let mut m = m.borrow_mut();
        if !m.contains_key(route) {
            if m.len() >= 1024 {
                m.clear();
            }
            m.insert(
                route.into(),
                (crate::durations::for_route(route), Vec::new()),
            );
        }
        let Some((histogram, counters)) = m.get_mut(route) else {
            return;
        };
        histogram.record(took);
        let code = status.as_u16();
        match counters
            .iter()
            .find(|(d, s, _)| *d == decision && *s == code)
        {
            Some((_, _, c)) => c.increment(1),
            None => {
                let c = metrics::counter!("palisade_gateway_requests_total", "route" => route.to_string(), "decision" => decision, "status" => status.as_str().to_owned());
                c.increment(1);
                // statuses come from upstreams: keep the scan short
                if counters.len() < 64 {
                    counters.push((decision, code, c));
                }
            }
        }
    });
}

/// A plain-HTTP listener's only job by default: redirect to HTTPS.
pub async fn redirect(port: u16, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    // only a validated host goes into Location (never an open redirect)
    let host = canonical_host(&req).unwrap_or_default();
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let target = if port == 443 {
        format!("https://{host}{pq}")
    } else {
        format!("https://{host}:{port}{pq}")
    };
    let mut resp = Response::new(full(Bytes::new()));
    match HeaderValue::from_str(&target) {
        Ok(v) if !host.is_empty() => {
            *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
            resp.headers_mut().insert(header::LOCATION, v);
        }
        _ => *resp.status_mut() = StatusCode::BAD_REQUEST,
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_distinct_v4_uuids_across_batches() {
        // 1,000 ids span four 4 KiB batches
        let ids: Vec<String> = (0..1000).map(|_| request_id()).collect();
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "an id repeated");
        for id in &ids {
            let b = id.as_bytes();
            assert_eq!(b.len(), 36, "{id}");
            assert!(
                [8, 13, 18, 23].iter().all(|&i| b[i] == b'-'),
                "dashes: {id}"
            );
            assert_eq!(b[14], b'4', "version: {id}");
            assert!(matches!(b[19], b'8' | b'9' | b'a' | b'b'), "variant: {id}");
        }
        // random, not a counter or zeroed bytes: every hex digit position
        // takes several values
        for pos in (0..36).filter(|p| ![8, 13, 14, 18, 19, 23].contains(p)) {
            let values: std::collections::HashSet<u8> =
                ids.iter().map(|id| id.as_bytes()[pos]).collect();
            assert!(values.len() > 8, "position {pos} took {values:?}");
        }
    }

    #[test]
    fn the_host_is_canonical_and_unambiguous() {
        let host = |h: &[&str], uri: &str| {
            let mut b = Request::builder().uri(uri);
            for h in h {
                b = b.header(header::HOST, *h);
            }
            canonical_host(&b.body(()).unwrap())
        };
        let ok = |h: &[&str], uri: &str| host(h, uri).unwrap();
        assert_eq!(ok(&["API.Example:8443"], "/"), "api.example");
        assert_eq!(ok(&["api.example"], "/"), "api.example");
        assert_eq!(ok(&["api.example."], "/"), "api.example");
        assert_eq!(ok(&["Api.Example.:80"], "/"), "api.example");
        assert_eq!(ok(&["[::1]:8443"], "/"), "[::1]");
        assert_eq!(ok(&["[::1]"], "/"), "[::1]");
        assert_eq!(ok(&["10.0.0.1:80"], "/"), "10.0.0.1");
        // HTTP/2 (or absolute-form) without Host: the request target's authority
        assert_eq!(ok(&[], "https://Orders.Example:443/x"), "orders.example");
        assert_eq!(
            ok(&["orders.example"], "https://Orders.Example/x"),
            "orders.example"
        );
        assert_eq!(ok(&[], "/x"), "");
        let invalid = GatewayError::InvalidHost("invalid Host");
        for bad in [
            "a b",
            "evil/x",
            "",
            ".",
            "a..b",
            ".a",
            "a:",
            "a:x",
            "a:123456",
            "[zz]",
            "[::1",
            "ex%61mple",
        ] {
            assert_eq!(host(&[bad], "/"), Err(invalid.clone()), "{bad:?}");
        }
        assert_eq!(
            host(&["a@evil:1"], "/"),
            Err(GatewayError::InvalidHost("userinfo in the host"))
        );
        assert_eq!(
            host(&["a.example", "b.example"], "/"),
            Err(GatewayError::InvalidHost("more than one Host header"))
        );
        assert_eq!(
            host(&["a.example"], "http://b.example/x"),
            Err(GatewayError::InvalidHost(
                "the request target's authority differs from Host"
            ))
        );
        assert_eq!(
            host(&["a.example:1"], "http://a.example:2/x"),
            Err(GatewayError::InvalidHost(
                "the request target's authority differs from Host"
            ))
        );
    }

    #[test]
    fn configured_header_limits_are_the_gateways() {
        let limits = crate::config::Limits {
            max_headers: 3,
            max_header_bytes: 8192,
            ..crate::config::Limits::default()
        };
        let mut h = hyper::HeaderMap::new();
        for i in 0..3 {
            h.insert(
                HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        assert!(check_headers(&h, &limits).is_ok());
        h.insert("x-3", HeaderValue::from_static("v"));
        assert_eq!(
            check_headers(&h, &limits),
            Err(GatewayError::HeadersTooLarge)
        );
        let mut big = hyper::HeaderMap::new();
        big.insert(
            "x-big",
            HeaderValue::from_str(&"v".repeat(8192 - 9)).unwrap(),
        );
        assert!(check_headers(&big, &limits).is_ok());
        big.insert(
            "x-big",
            HeaderValue::from_str(&"v".repeat(8192 - 8)).unwrap(),
        );
        assert_eq!(
            check_headers(&big, &limits),
            Err(GatewayError::HeadersTooLarge)
        );
        assert_eq!(outer_header_bytes(&limits), 4 * 8192);
        assert_eq!(outer_headers(&limits), 12);
    }

    #[test]
    fn framing() {
        let mut h = hyper::HeaderMap::new();
        assert!(check_framing(&h).is_ok());
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        assert!(check_framing(&h).is_ok());
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert_eq!(
            check_framing(&h).unwrap_err(),
            GatewayError::BadRequest("ambiguous message framing")
        );
        let mut h = hyper::HeaderMap::new();
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        assert_eq!(
            check_framing(&h).unwrap_err(),
            GatewayError::BadRequest("ambiguous message framing")
        );
        let mut h = hyper::HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("+10"));
        assert_eq!(
            check_framing(&h).unwrap_err(),
            GatewayError::BadRequest("invalid Content-Length")
        );
        let mut h = hyper::HeaderMap::new();
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("gzip, chunked"),
        );
        assert_eq!(
            check_framing(&h).unwrap_err(),
            GatewayError::BadRequest("unsupported Transfer-Encoding")
        );
    }
}
