//! The HTTP edge: turns a hyper request into a typed [`Request`] (method to
//! operation, the path in canonical form, token, query), asks the core to
//! authorise it, and only then reads and parses the body (within size, time
//! and JSON-complexity limits): an unauthenticated client never gets a body
//! parsed, and a refused request is audited without one. It renders the
//! core's answer in Vault's JSON shapes; this is the only place that knows
//! about HTTP and it writes every error body.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::IntoResponse;
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};

use crate::canonical::{self, percent_decode};
use crate::core::{Begun, Core};
use crate::json::{JsonLimits, parse_body};
use crate::logical::{ApiError, Operation, Request, Response, fields};

/// Vault's default request size limit.
pub const DEFAULT_MAX_REQUEST_SIZE: usize = 32 * 1024 * 1024;
/// Body limit of the unauthenticated endpoints (sys/init, sys/unseal...):
/// their bodies are a few hundred bytes.
pub const UNAUTHENTICATED_BODY_LIMIT: usize = 64 * 1024;
/// Vault's `http_read_timeout`: the body must arrive within this.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The peer address, inserted by the listener for every request.
#[derive(Clone, Debug)]
pub struct ClientAddr {
    pub addr: std::net::SocketAddr,
    /// The certificate chain a TLS client presented (DER, leaf first).
    pub certs: Option<std::sync::Arc<Vec<Vec<u8>>>>,
}

/// What the edge accepts.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    pub max_request_size: usize,
    pub json: JsonLimits,
    pub body_timeout: Duration,
    /// Answers carry `Strict-Transport-Security` (TLS listeners).
    pub hsts: bool,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_request_size: DEFAULT_MAX_REQUEST_SIZE,
            json: JsonLimits::DEFAULT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            hsts: false,
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub core: Arc<Core>,
    pub limits: Arc<HttpLimits>,
}

pub fn router(core: Arc<Core>, limits: HttpLimits) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(AppState {
        core,
        limits: Arc::new(limits),
    })
}

/// Longest query string accepted, and most parameters in it: Vault's API
/// takes a handful (`list`, `version`, `help`, health codes); query
/// parameters are request data, audited even for refused requests.
const MAX_QUERY_BYTES: usize = 4096;
const MAX_QUERY_PARAMS: usize = 64;

fn parse_query(q: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    let Some(q) = q else { return Ok(out) };
    if q.len() > MAX_QUERY_BYTES {
        return Err(ApiError::new(414, "query string too long"));
    }
    if q.split('&').filter(|p| !p.is_empty()).count() > MAX_QUERY_PARAMS {
        return Err(ApiError::bad_request("too many query parameters"));
    }
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| {
            percent_decode(s, true)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| ApiError::bad_request("invalid query string"))
        };
        out.push((dec(k)?, dec(v)?));
    }
    Ok(out)
}

fn token_from(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get("x-vault-token").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_string());
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, value) = auth.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| value.trim().to_string())
}

/// Endpoints that exist only outside namespaces (OpenBao's list).
fn namespace_restricted(path: &str) -> bool {
    matches!(
        path,
        "sys/init" | "sys/seal" | "sys/unseal" | "sys/health" | "sys/step-down" | "sys/leader"
    ) || path.starts_with("sys/rekey")
        || path.starts_with("sys/generate-root")
}

/// `X-Vault-Namespace`: Palisade has only the root namespace. A request for
/// any other namespace is refused, never served from the root (a write meant
/// for `team-a` must not land in the root), with OpenBao's answers.
fn check_namespace(headers: &HeaderMap, path: &str) -> Result<(), ApiError> {
    let Some(v) = headers.get("x-vault-namespace") else {
        return Ok(());
    };
    let v = v
        .to_str()
        .map_err(|_| ApiError::new(404, "namespace not found"))?;
    if !v.is_empty() && namespace_restricted(path) {
        return Err(ApiError::bad_request("operation unavailable in namespaces"));
    }
    match v.trim_matches('/') {
        "" | "root" => Ok(()),
        _ => Err(ApiError::new(404, "namespace not found")),
    }
}

/// The body, within `limit` bytes and the body deadline.
async fn read_body(body: Body, limit: usize, timeout: Duration) -> Result<bytes::Bytes, ApiError> {
    // most requests (every GET) have no body: no timer for those
    if hyper::body::Body::is_end_stream(&body) {
        return Ok(bytes::Bytes::new());
    }
    let limited = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => Err(ApiError::new(408, "request body not received in time")),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::new(413, "http: request body too large"))
        }
        Ok(Err(_)) => Err(ApiError::bad_request("failed to read request body")),
    }
}

/// How much of a refused request's body is read and dropped, at most.
const REFUSED_BODY_DRAIN_BYTES: usize = 64 * 1024;
const REFUSED_BODY_DRAIN_TIME: Duration = Duration::from_secs(1);

/// Read and drop a refused request's body, chunk by chunk, up to `limit`
/// bytes and `timeout`: a client still sending when we answer and close would
/// otherwise see the connection reset instead of the answer. Nothing is kept.
async fn discard_body(mut body: Body, limit: usize, timeout: Duration) {
    let drain = async {
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return };
            if let Some(d) = frame.data_ref() {
                seen = seen.saturating_add(d.len());
                if seen > limit {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(timeout, drain).await;
}

/// Headers the API acts on. A `Connection` header naming one would make it
/// per-connection: an HA standby (any proxy) must drop it, the node serving
/// the request directly would act on it, and the two would answer
/// differently (a namespace or a token silently gone). Refused on every
/// node instead.
const END_TO_END_API_HEADERS: [&str; 8] = [
    "x-vault-token",
    "authorization",
    "x-vault-namespace",
    "x-vault-wrap-ttl",
    "x-wrap-ttl",
    "content-type",
    crate::ha::FORWARDED_HEADER,
    crate::ha::FORWARDED_CERTS_HEADER,
];

fn connection_names_api_header(headers: &HeaderMap) -> Option<ApiError> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|t| t.trim_ascii())
        .find_map(|t| {
            END_TO_END_API_HEADERS
                .iter()
                .find(|h| h.as_bytes().eq_ignore_ascii_case(t))
        })
        .map(|h| {
            ApiError::bad_request(format!(
                "invalid Connection header: {h} is not a per-connection header"
            ))
        })
}

/// The query string's parameters and the operation a request asks for, in
/// the order every node checks them (the query, then the method; the path
/// after both).
fn query_and_operation(
    method: &Method,
    uri: &Uri,
) -> Result<(Vec<(String, String)>, Operation), ApiError> {
    let query = parse_query(uri.query())?;
    let list_q = query
        .iter()
        .find(|(k, _)| k == "list")
        .map(|(_, v)| fields::parse_bool(v).unwrap_or(false))
        .unwrap_or(false);
    let operation = match method.as_str() {
        "GET" if list_q => Operation::List,
        "GET" | "HEAD" => Operation::Read,
        "LIST" => Operation::List,
        "POST" | "PUT" => Operation::Write,
        "DELETE" => Operation::Delete,
        "PATCH" => Operation::Patch,
        _ => return Err(ApiError::unsupported_operation()),
    };
    Ok((query, operation))
}

/// A request body that records whether it was read to its end.
struct TrackedBody {
    inner: Body,
    done: Arc<std::sync::atomic::AtomicBool>,
}

impl hyper::body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(r, std::task::Poll::Ready(None)) || self.inner.is_end_stream() {
            self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Every answer passes here: an HTTP/1.1 request whose body was not read
/// to its end (refused before it, over a limit, or cut short) is answered
/// with `Connection: close`, so no client — nor an HA standby's connection
/// pool — sends another request on a connection whose unread body would be
/// taken for that request; TLS listeners add HSTS.
async fn handle(
    State(st): State<AppState>,
    version: axum::http::Version,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    addr: Option<axum::Extension<ClientAddr>>,
    body: Body,
) -> axum::response::Response {
    let done = Arc::new(std::sync::atomic::AtomicBool::new(
        hyper::body::Body::is_end_stream(&body),
    ));
    let body = Body::new(TrackedBody {
        inner: body,
        done: done.clone(),
    });
    let hsts = st.limits.hsts;
    let mut resp = answer(State(st), version, method, uri, headers, addr, body).await;
    if version < axum::http::Version::HTTP_2 && !done.load(std::sync::atomic::Ordering::Relaxed) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if hsts {
        resp.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    resp
}

async fn answer(
    State(st): State<AppState>,
    version: axum::http::Version,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    addr: Option<axum::Extension<ClientAddr>>,
    body: Body,
) -> axum::response::Response {
    if let Some(e) = connection_names_api_header(&headers) {
        return render(Err(e), &palisade_core::uuid_v4(), method == Method::HEAD);
    }
    if st.core.relays()
        && let Some(ha) = st.core.ha().cloned()
    {
        // first, as the active node does: a client's own forwarded
        // certificates (without a forwarding header) are refused
        if headers.contains_key(crate::ha::FORWARDED_CERTS_HEADER)
            && !headers.contains_key(crate::ha::FORWARDED_HEADER)
        {
            return render(
                Err(ApiError::bad_request("invalid forwarded request")),
                &palisade_core::uuid_v4(),
                method == Method::HEAD,
            );
        }
        // canonical before deciding: what the active node would refuse is
        // refused here, with the same answer (the same checks in the same
        // order), and a spelling of a local endpoint (`sys/%68ealth`) is
        // this node's, never the active's
        let checked = query_and_operation(&method, &uri)
            .and_then(|(q, op)| Ok((q, canonical::canonicalise(op, api_path(&uri))?)));
        match checked {
            Err(e) => return render(Err(e), &palisade_core::uuid_v4(), method == Method::HEAD),
            Ok((_, p)) if answered_by_any_node(p.as_str()) => {}
            // Vault's standby refuses to seal (sealing the active node
            // instead would be an outage nobody asked for)
            Ok((_, p)) if p.as_str() == "sys/seal" => {
                let err = if method == Method::PUT || method == Method::POST {
                    ApiError::new(
                        500,
                        "vault cannot seal when in standby mode; please restart instead",
                    )
                } else {
                    ApiError::unsupported_operation()
                };
                return render(Err(err), &palisade_core::uuid_v4(), method == Method::HEAD);
            }
            Ok((query, p)) => {
                // sys/metrics: this node's own numbers, once the active node
                // has decided the token may read them (Vault's standby
                // answers for itself too); wrapped or help answers are the
                // active node's, passed on
                let own_metrics = p.as_str() == "sys/metrics"
                    && method == Method::GET
                    && !headers.contains_key("x-vault-wrap-ttl")
                    && !headers.contains_key("x-wrap-ttl")
                    && !query.iter().any(|(k, _)| k == "help");
                let answer = ha
                    .relay(
                        &st.core,
                        st.limits.max_request_size,
                        st.limits.body_timeout,
                        method,
                        uri,
                        headers,
                        addr.map(|a| a.0),
                        body,
                    )
                    .await;
                if !own_metrics || answer.status() != StatusCode::OK {
                    return answer;
                }
                return render(
                    crate::metrics::answer(&st.core, &query),
                    &palisade_core::uuid_v4(),
                    false,
                );
            }
        }
    }
    // a request a standby forwarded: the client it came from
    let addr = match crate::ha::HaNode::forwarded_client(&st.core, &method, &uri, &headers) {
        Ok(Some(c)) => Some(axum::Extension(c)),
        Ok(None) => addr,
        Err(e) => {
            // (a node sealed a moment ago answers 503 sealed: no alarm)
            if e.status == 400 {
                tracing::warn!(method = %method, "refused a request with an invalid forwarding header");
            }
            let retry = e
                .messages
                .iter()
                .any(|m| m == crate::ha::FORWARDED_TO_RESTARTED);
            let mut r = render(Err(e), &palisade_core::uuid_v4(), false);
            if retry {
                r.headers_mut().insert(
                    crate::ha::FORWARD_RETRY_HEADER,
                    HeaderValue::from_static("1"),
                );
            }
            return r;
        }
    };
    let started = Instant::now();
    let request_id = palisade_core::uuid_v4();
    let head = method == Method::HEAD;
    let limits = st.limits.clone();
    let mut refused_at_edge = true;
    let mut body = Some(body);
    let result = async {
        let (query, operation) = query_and_operation(&method, &uri)?;
        // Input the edge cannot accept on a request it could parse (wrong
        // content type): carried into the core, which audits it and refuses.
        let mut input_error = None;
        if operation == Operation::Patch {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if ct.split(';').next().map(str::trim) != Some("application/merge-patch+json") {
                input_error = Some(ApiError::new(
                    415,
                    "PATCH requires Content-Type application/merge-patch+json",
                ));
            }
        }
        let path = canonical::canonicalise(operation, api_path(&uri))?;
        if let Some((name, ep)) = crate::oauth::endpoints::parse(&path) {
            let name = name.to_string();
            refused_at_edge = false;
            let b = body.take().unwrap_or_default();
            let limit = limits
                .max_request_size
                .min(crate::oauth::endpoints::MAX_FORM_BYTES);
            let bytes = read_body(b, limit, limits.body_timeout).await?;
            let hv = |n: header::HeaderName| headers.get(n).and_then(|v| v.to_str().ok());
            let call = crate::oauth::endpoints::Call {
                get: operation == Operation::Read,
                content_type: hv(header::CONTENT_TYPE),
                authorization: hv(header::AUTHORIZATION),
                body: &bytes,
            };
            if !matches!(operation, Operation::Read | Operation::Write) {
                return Err(ApiError::unsupported_operation());
            }
            let mut req = Request::new(operation, path.clone());
            req.id = request_id.clone();
            req.remote_addr = addr
                .as_ref()
                .map(|a| a.0.addr.ip().to_string())
                .unwrap_or_default();
            return st.core.oauth_public(req, &name, ep, &call).await;
        }
        if head && path.as_str() != "sys/health" {
            return Err(ApiError::unsupported_operation());
        }
        check_namespace(&headers, &path)?;
        let wrap_ttl = wrap_ttl(&headers)?;
        let mut req = Request::new(operation, path);
        req.wrap_ttl = wrap_ttl;
        req.id = request_id.clone();
        req.query = query;
        req.remote_addr = addr
            .as_ref()
            .map(|a| a.0.addr.ip().to_string())
            .unwrap_or_default();
        req.client_certs = addr.and_then(|a| a.0.certs.clone());
        refused_at_edge = false;
        match st.core.begin(req, token_from(&headers)).await? {
            Begun::Open(mut req) => {
                let limit = limits.max_request_size.min(UNAUTHENTICATED_BODY_LIMIT);
                let body = body.take().unwrap_or_default();
                let bytes = read_body(body, limit, limits.body_timeout).await?;
                req.data = parse_body(&bytes, limits.json)?;
                st.core.open(req).await
            }
            Begun::Authorized(auth) => {
                let data = match input_error {
                    Some(e) => Err(e),
                    None => {
                        let body = body.take().unwrap_or_default();
                        read_body(body, limits.max_request_size, limits.body_timeout)
                            .await
                            .and_then(|b| parse_body(&b, limits.json))
                    }
                };
                st.core.execute(auth, data).await
            }
        }
    }
    .await;
    if let Some(b) = body.take()
        && version < axum::http::Version::HTTP_2
    {
        // HTTP/1.1, refused without reading the body: discard a little of it
        // (never parsed or kept) so the client reads our answer rather than
        // a reset connection; a larger or slower body is not waited for (the
        // connection then closes): a refused request must not hold its
        // connection. HTTP/2 resets the one stream instead.
        // (not all of it read: `handle` says the connection closes)
        discard_body(b, REFUSED_BODY_DRAIN_BYTES, REFUSED_BODY_DRAIN_TIME).await;
    }
    let status = match &result {
        Ok(r) => r.status,
        Err(e) => e.status,
    };
    if refused_at_edge && let Err(e) = &result {
        // refused before the core saw it (no audit record): say why here
        tracing::debug!(request_id = %request_id, method = %method, status, reason = %e.messages.join("; "), "request refused at the edge");
    }
    // Per-request lines are debug: the audit log is the security record of
    // requests; the server log is for operating the server.
    tracing::debug!(
        request_id = %request_id,
        method = %method,
        status,
        latency_us = started.elapsed().as_micros() as u64,
        "request"
    );
    render(result, &request_id, head)
}

/// The API path a request names: its own, except the default OAuth
/// provider's discovery document served at the root (OpenID Connect
/// Discovery, for clients given only the host).
fn api_path(uri: &Uri) -> &str {
    if uri.path() == "/.well-known/openid-configuration" {
        "/v1/identity/oidc/provider/default/.well-known/openid-configuration"
    } else {
        uri.path()
    }
}

/// What every node of an HA cluster answers itself (a standby forwards
/// the rest): its own health, seal state, unseal and the leader. `path` is
/// canonical.
fn answered_by_any_node(path: &str) -> bool {
    matches!(
        path,
        "sys/health" | "sys/leader" | "sys/seal-status" | "sys/unseal" | "sys/init"
    )
}

/// `X-Vault-Wrap-TTL` (Vault's `X-Wrap-TTL` too): a duration (`90s`,
/// `15m`) or a number of seconds; 0, negative or unparsable → 400 (a
/// client that asked for wrapping never gets the bare response).
fn wrap_ttl(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let mut values = headers
        .get_all("x-vault-wrap-ttl")
        .iter()
        .chain(headers.get_all("x-wrap-ttl").iter());
    let Some(v) = values.next() else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_request(
            "invalid X-Vault-Wrap-TTL: expected a positive duration such as 60s or 15m",
        )
    };
    if values.next().is_some() {
        return Err(ApiError::bad_request(
            "X-Vault-Wrap-TTL given more than once",
        ));
    }
    let s = v.to_str().map_err(|_| bad())?.trim();
    let secs = fields::duration_secs(&serde_json::Value::String(s.to_string()), "wrap_ttl")
        .map_err(|_| bad())?;
    if s.is_empty() || secs <= 0 {
        return Err(bad());
    }
    Ok(Some(secs))
}

pub fn render(
    result: Result<Response, ApiError>,
    request_id: &str,
    head: bool,
) -> axum::response::Response {
    let result_headers = result.as_ref().ok().map(|r| r.extra_headers.clone());
    let (status, body) = match result {
        Ok(Response {
            status,
            bytes: Some((content_type, bytes)),
            ..
        }) => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = if head {
                code.into_response()
            } else {
                (code, bytes).into_response()
            };
            let h = resp.headers_mut();
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            return resp;
        }
        Ok(r) => {
            if r.status == 204 {
                (204, None)
            } else if let Some(raw) = r.raw {
                (r.status, Some(raw))
            } else {
                let env = r.envelope(request_id);
                (r.status, Some(env))
            }
        }
        Err(e) => match e.body {
            Some(data) => (
                e.status,
                Some(json!({
                    "request_id": request_id, "lease_id": "", "renewable": false, "lease_duration": 0,
                    "data": data, "wrap_info": null, "warnings": null, "auth": null, "mount_type": "",
                })),
            ),
            None => (e.status, Some(json!({ "errors": e.messages }))),
        },
    };
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let extra = match &result_headers {
        Some(h) => h.clone(),
        None => Vec::new(),
    };
    let mut resp = match body {
        Some(b) if !head => (code, axum::Json(b)).into_response(),
        _ => code.into_response(),
    };
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status != 204 {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    for (k, v) in extra {
        h.insert(
            header::HeaderName::from_static(k),
            HeaderValue::from_static(v),
        );
    }
    resp
}

/// Merge helper for tests and the client: the `data` of an envelope.
pub fn data_of(v: &Value) -> Map<String, Value> {
    v.get("data")
        .and_then(|d| d.as_object())
        .cloned()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_other_than_the_root_are_refused() {
        let h = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("x-vault-namespace", HeaderValue::from_str(v).unwrap());
            h
        };
        for root in ["", "root", "root/", "/"] {
            assert_eq!(
                check_namespace(&h(root), "secret/data/x"),
                Ok(()),
                "{root:?}"
            );
        }
        for other in ["team-a", "team-a/", "/team-a", "ROOT", "root/team-a"] {
            assert_eq!(
                check_namespace(&h(other), "secret/data/x"),
                Err(ApiError::new(404, "namespace not found")),
                "{other:?}"
            );
        }
        assert_eq!(
            check_namespace(&h("root"), "sys/health"),
            Err(ApiError::bad_request("operation unavailable in namespaces"))
        );
        assert_eq!(check_namespace(&h(""), "sys/health"), Ok(()));
        assert_eq!(check_namespace(&HeaderMap::new(), "sys/health"), Ok(()));
    }

    #[test]
    fn query_strings_are_bounded() {
        let many: String = (0..65).map(|i| format!("k{i}=&")).collect();
        assert_eq!(
            parse_query(Some(&many)).unwrap_err(),
            ApiError::bad_request("too many query parameters")
        );
        let fits: String = (0..64).map(|i| format!("k{i}=&")).collect();
        assert_eq!(parse_query(Some(&fits)).unwrap().len(), 64);
        let long = format!("a={}", "x".repeat(MAX_QUERY_BYTES));
        assert_eq!(
            parse_query(Some(&long)).unwrap_err(),
            ApiError::new(414, "query string too long")
        );
    }

    #[test]
    fn query_and_token() {
        let q = parse_query(Some("list=True&version=2&a+b=c%20d")).unwrap();
        assert_eq!(
            q,
            vec![
                ("list".into(), "True".into()),
                ("version".into(), "2".into()),
                ("a b".into(), "c d".into())
            ]
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(token_from(&h).as_deref(), Some("abc"));
        h.insert("x-vault-token", HeaderValue::from_static("xyz"));
        assert_eq!(token_from(&h).as_deref(), Some("xyz"));
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(token_from(&h), None);
    }
}
