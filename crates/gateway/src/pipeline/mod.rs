//! The gateway pipeline, written once, in design.md's order. Each step
//! lives in [`crate::steps`]; this module only runs them in order on one
//! [`RequestCtx`] and turns the outcome into a response.
//!
//! | # | step | here |
//! |---|---|---|
//! | 2 | HTTP limits | [`limits::check_headers`], [`limits::check_framing`] (hyper's own limits are an outer bound) |
//! | 3 | respond | [`crate::error::error_response`] is the only error renderer |
//! | 4 | request id | [`handle`] |
//! | 5 | security log | [`handle`] writes one record per request from the [`RequestCtx`] |
//! | 6 | per-IP rate limit | [`ratelimit::peer`], before any cryptographic work |
//! | 7 | inspect | [`inspect::normalize_path`], [`host::canonical_host`], [`route::select`], body size, CORS preflight, [`inspect::content`] (query, JSON and form bodies) |
//! | 8 | authn | [`crate::steps::authn::Authenticator`] |
//! | 9 | per-principal rate limit | [`ratelimit::principal`] |
//! | 10 | authz | [`crate::steps::authz::Authorizer`] -> `Permit` |
//! | 11 | upstream | [`upstream::forward`] takes the `Permit` by value; then CRS's response phases where the route runs them (11b) |
//!
//! The pipeline is generic over the request body: hyper's `Incoming` on a
//! listener, any body in the in-process tests (`crates/gateway/tests`).

pub mod context;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use palisade_inspect::BodyKind;

use crate::config::InspectionMode;
use crate::error::{Body, BoxError, GatewayError, error_response, full};
use crate::gateway::Gateway;
use crate::steps::authz::Resource;
use crate::steps::limits::GuardedBody;
use crate::steps::upstream::{self, ForwardCtx};
use crate::steps::{cors, host, inspect, limits, ratelimit, route};
use crate::transport::conn::{Busy, Tracked};

pub use context::{ConnInfo, RequestCtx, Stage};

/// A request body the pipeline can forward.
pub trait RequestBody:
    hyper::body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Sync + Unpin + 'static
{
}

impl<B> RequestBody for B where
    B: hyper::body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Sync + Unpin + 'static
{
}

/// The steps, in order, on one request. Every refusal is a
/// [`GatewayError`]; `ctx` records what each step found.
async fn pipeline<B: RequestBody>(
    gw: &Gateway,
    req: Request<B>,
    ctx: &mut RequestCtx,
) -> Result<Response<Body>, GatewayError> {
    // 6a: a banned or deny-listed client, before anything else is done
    crate::steps::ids::check_client(gw, ctx)?;
    limits::check_headers(req.headers(), &gw.limits)?;
    limits::check_framing(req.headers())?;

    // 6: per-IP shield, before any cryptographic work
    ratelimit::peer(&gw.limiter, gw.peer_quota.as_ref(), ctx.client).await?;

    // 7: inspect: one canonical path and host, for routing, policy, the
    // log and the upstream
    let path = inspect::normalize_path(req.uri().path())?;
    ctx.path = Some(path.clone());
    let canonical = host::canonical_host(&req)?;
    ctx.host = Some(canonical.host.clone());
    let preflight = cors::is_preflight(req.method(), req.headers());
    let route = route::select(
        &gw.routes,
        &canonical.host,
        &path,
        req.method().as_str(),
        preflight,
    )?
    .clone();
    ctx.route = Some(route.clone());
    let max_body = route.max_body_bytes.unwrap_or(gw.limits.max_body_bytes);
    if let Some(cl) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok())
    {
        ctx.bytes_in = cl;
        if cl > max_body {
            return Err(GatewayError::PayloadTooLarge);
        }
    }

    // CORS preflight: answered here, never forwarded
    let origin = req.headers().get(header::ORIGIN).cloned();
    if preflight && route.cors.is_some() {
        let resp = cors::preflight(&route, origin.as_ref())?;
        ctx.stage = Stage::Preflight;
        return Ok(resp);
    }

    // at most max_concurrent_requests_per_client requests per client from
    // here on (the body may be read whole next, before authentication); the
    // slot is held until the response body is done
    let slot = gw
        .client_slots
        .acquire(ctx.client, gw.limits.max_concurrent_requests_per_client)
        .ok_or(GatewayError::TooManyConcurrent)?;

    // 7: content inspection (query string; JSON and form bodies, read
    // here up to the body limit), before any cryptographic work
    let req = inspect_content(gw, req, &route, max_body, ctx).await?;
    // 7a: the route's OpenAPI document (the positive model)
    let req = openapi_step(gw, req, &route, max_body, ctx).await?;
    // 7b: the OWASP CRS rule set, where the route runs it
    let (mut req, crs_job) = crs_step(gw, req, &route, max_body, ctx).await?;
    // the response phases read bodies as sent: ask the service for none
    // compressed (a compressed answer is not inspectable)
    if route
        .crs
        .as_ref()
        .is_some_and(|c| c.response != InspectionMode::Off)
    {
        req.headers_mut().remove(header::ACCEPT_ENCODING);
    }

    // 8: authn
    let now = palisade_core::now_nanos() / 1_000_000_000;
    let principal = gw
        .authn
        .authenticate(&route, req.headers(), ctx.conn.identity.as_deref(), now)
        .await?;
    let label = principal.label();
    ctx.principal = Some((label.clone(), principal.method));
    // 8b: a banned principal
    crate::steps::ids::check_principal(gw, &label, ctx)?;

    // 9: per-principal / per-consumer / per-route limits
    let limit_headers =
        ratelimit::principal(&gw.limiter, &route, &principal, &label, &ctx.client_ip).await?;

    // 10: authz, on exactly the values the upstream step will act on
    let resource = Resource {
        method: req.method().clone(),
        path,
        host: canonical.host,
        ip: ctx.client_ip.clone(),
    };
    let permit = gw
        .authz
        .authorize(route.clone(), principal, resource)
        .map_err(|d| GatewayError::Forbidden {
            reason: d.to_string(),
        })?;
    ctx.stage = Stage::Permitted {
        policies: permit.policies().into(),
    };

    // 11: upstream (the client slot taken before inspection goes along)
    let (parts, body) = req.into_parts();
    // HTTP/2 streams share a connection: a stalled one blocks no socket write
    let h2 = parts.version == hyper::Version::HTTP_2;
    let (guarded, fault) = GuardedBody::new(
        body,
        max_body,
        gw.limits.min_body_rate,
        gw.limits.stream_idle_timeout,
    );
    let upstream_req = Request::from_parts(parts, guarded.boxed());
    let fwd = ForwardCtx {
        request_id: &ctx.request_id,
        client_ip: &ctx.client_ip,
        proto: if ctx.conn.tls { "https" } else { "http" },
        authority: &canonical.authority,
        identity_names: &gw.identity_headers,
        credentials: gw.authn.credential_headers(),
        client_fault: fault.clone(),
    };
    let (resp, endpoint) = upstream::forward(permit, upstream_req, fwd)
        .await
        .map_err(|e| fault.error().unwrap_or(e))?;
    ctx.upstream = Some([route.pool_name(), "/", &endpoint].concat());
    let idle = gw.limits.stream_idle_timeout;
    // 11b: CRS's response phases, where the route runs them
    let resp = crs_response_step(gw.crs_slots.clone(), resp, &route, crs_job, idle, ctx).await?;
    let mut resp =
        resp.map(|b| crate::steps::stream::IdleBody::new(b, idle, h2, Some(slot)).boxed());
    for (n, v) in limit_headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            resp.headers_mut().insert(n, v);
        }
    }
    cors::on_response(&mut resp, &route, origin.as_ref());
    Ok(resp)
}

/// The body a request goes on with: the client's stream as it came, or
/// the bytes the inspection step read and checked.
type InspectedBody<B> = Either<B, Full<Bytes>>;

/// Step 7's content inspection: the query string always, the body when the
/// route inspects and its `Content-Type` is JSON or a form. Such a body is
/// read whole first (under the same size, rate and idle limits as a
/// forwarded body), checked, and forwarded as read: the bytes the checks saw
/// are the bytes the service gets.
async fn inspect_content<B: RequestBody>(
    gw: &Gateway,
    req: Request<B>,
    route: &crate::steps::route::Route,
    max_body: u64,
    ctx: &mut RequestCtx,
) -> Result<Request<InspectedBody<B>>, GatewayError> {
    if route.inspection.mode == InspectionMode::Off {
        return Ok(req.map(Either::Left));
    }
    // as bytes: a non-ASCII parameter (`; x="é"`) must not make the type
    // unreadable here while Express's type-is still reads it
    let kind = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| BodyKind::of_content_type(&String::from_utf8_lossy(v.as_bytes())));
    let Some(kind) = kind.filter(|_| !req.body().is_end_stream()) else {
        append_finding(
            ctx,
            inspect::content(&route.inspection, req.uri().query(), None)?,
        );
        return Ok(req.map(Either::Left));
    };
    if let Some(why) = inspect::unreadable_body(req.headers()) {
        append_finding(ctx, inspect::uninspectable(&route.inspection, why)?);
        return Ok(req.map(Either::Left));
    }
    let (parts, body) = req.into_parts();
    let (guarded, fault) = GuardedBody::new(
        body,
        max_body,
        gw.limits.min_body_rate,
        gw.limits.stream_idle_timeout,
    );
    let bytes = match guarded.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => return Err(fault.error().unwrap_or(GatewayError::InvalidBody)),
    };
    append_finding(
        ctx,
        inspect::content(&route.inspection, parts.uri.query(), Some((kind, &bytes)))?,
    );
    Ok(Request::from_parts(parts, Either::Right(Full::new(bytes))))
}

/// Step 7b: CRS on the request line, the headers and the whole body (read
/// here under the body limits when the inspection step has not read it; a
/// compressed body cannot be inspected: refused in block mode, logged in
/// detect mode). The body is forwarded as read.
async fn crs_step<B: RequestBody>(
    gw: &Gateway,
    req: Request<InspectedBody<B>>,
    route: &crate::steps::route::Route,
    max_body: u64,
    ctx: &mut RequestCtx,
) -> Result<CrsStepped<B>, GatewayError> {
    let Some(crs) = &route.crs else {
        return Ok((req, None));
    };
    // CRS costs CPU in proportion to the body (about 1.3 ms per KiB of JSON
    // at PL1): bodies over its limit are not evaluated (ModSecurity's
    // SecRequestBodyNoFilesLimit, 128 KiB): refused in block mode
    let over = |n: u64| n > crate::steps::crs::MAX_BODY_BYTES;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    if declared.is_some_and(over) {
        return crs_body_too_large(crs, req.map(|b| b), ctx).map(|r| (r, None));
    }
    // a compressed body, or one in another charset (UTF-7...: decoded by
    // the service's parser, read as bytes here; CRS's own 920480 misses
    // `Charset=`), cannot be evaluated
    use hyper::body::Body as _;
    if !req.body().is_end_stream()
        && let Some(why) = inspect::unreadable_body(req.headers())
    {
        let inspection = crate::config::Inspection {
            mode: crs.mode,
            ..Default::default()
        };
        append_finding(ctx, inspect::uninspectable(&inspection, why)?);
        return Ok((req, None));
    }
    let (parts, body) = req.into_parts();
    let (bytes, body) = whole_body(gw, body, max_body).await?;
    if over(bytes.len() as u64) {
        let req = Request::from_parts(parts, body);
        return crs_body_too_large(crs, req, ctx).map(|r| (r, None));
    }
    let target = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| parts.uri.to_string());
    let version = match parts.version {
        hyper::Version::HTTP_10 => "HTTP/1.0",
        hyper::Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/1.1",
    };
    let waf_req = crate::steps::crs::request(&crate::steps::crs::Parts {
        method: parts.method.as_str(),
        target,
        version,
        headers: &parts.headers,
        authority: parts.uri.authority().map(|a| a.as_str()),
        client_ip: &ctx.client_ip,
        request_id: &ctx.request_id,
        body: &bytes,
    });
    // on the blocking pool: the worker's other connections go on meanwhile
    let job = crs.clone();
    let slot = gw
        .crs_slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| GatewayError::Internal)?;
    let (findings, response_job) = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        crate::steps::crs::evaluate(&job, waf_req)
    })
    .await
    .map_err(|_| GatewayError::Internal)??;
    append_finding(ctx, findings);
    Ok((Request::from_parts(parts, body), response_job))
}

/// The request as step 7b passes it on, and what the response phases need.
type CrsStepped<B> = (
    Request<InspectedBody<B>>,
    Option<crate::steps::crs::ResponseJob>,
);

/// Step 11b: CRS's response phases on the service's answer (status and
/// headers; the body when it is text, JSON or XML and not compressed, its
/// first 512 KiB, read here under the stream idle timeout). Block mode
/// withholds a response they interrupt: 502 `response_blocked`; a body
/// that cannot be read as its client will read it (compressed, UTF-16) is
/// withheld too, logged in detect mode. The body goes on as read.
async fn crs_response_step(
    slots: Arc<tokio::sync::Semaphore>,
    resp: Response<Body>,
    route: &crate::steps::route::Route,
    job: Option<crate::steps::crs::ResponseJob>,
    idle: Duration,
    ctx: &mut RequestCtx,
) -> Result<Response<Body>, GatewayError> {
    let Some(crs) = route
        .crs
        .as_ref()
        .filter(|c| c.response != InspectionMode::Off)
    else {
        return Ok(resp);
    };
    let Some(job) = job else {
        // detect mode passed the request without evaluating it (a body
        // over the limit, or compressed): block mode withholds an answer
        // it cannot inspect (review of 2026-12-06: a large request body
        // switched response blocking off)
        let note = "crs: response not inspected: the request phases did not run".to_string();
        if crs.response == InspectionMode::Block {
            return Err(GatewayError::ResponseBlocked { findings: note });
        }
        append_finding(ctx, Some(note));
        return Ok(resp);
    };
    let (parts, body) = resp.into_parts();
    if let Some(why) = crate::steps::crs::unreadable_response(&parts.headers) {
        let note = format!("crs: response not inspected: {why}");
        if crs.response == InspectionMode::Block {
            return Err(GatewayError::ResponseBlocked { findings: note });
        }
        append_finding(ctx, Some(note));
        return Ok(Response::from_parts(parts, body));
    }
    let readable = crate::steps::crs::inspectable_response(&parts.headers);
    let (inspected, body) = if readable {
        let (prefix, rest) =
            read_prefix(body, crate::steps::crs::MAX_RESPONSE_BODY_BYTES, idle).await?;
        let mut seen = prefix.to_vec();
        seen.truncate(crate::steps::crs::MAX_RESPONSE_BODY_BYTES);
        let body = match rest {
            None => full(prefix),
            Some(rest) => Prefixed {
                prefix: Some(prefix),
                rest,
            }
            .boxed(),
        };
        (Some(seen), body)
    } else {
        (None, body)
    };
    let waf_resp = palisade_waf::tx::Response {
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
            .collect(),
        body: inspected,
    };
    let rules = crs.clone();
    let slot = slots
        .acquire_owned()
        .await
        .map_err(|_| GatewayError::Internal)?;
    let findings = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        crate::steps::crs::evaluate_response(&rules, job, waf_resp)
    })
    .await
    .map_err(|_| GatewayError::Internal)??;
    append_finding(ctx, findings);
    Ok(Response::from_parts(parts, body))
}

/// Read `body` until `limit` bytes (or its end): the bytes read, and the
/// rest of the body when there is more. Trailers are dropped.
async fn read_prefix(
    mut body: Body,
    limit: usize,
    idle: Duration,
) -> Result<(Bytes, Option<Body>), GatewayError> {
    let mut buf = bytes::BytesMut::new();
    loop {
        match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(GatewayError::GatewayTimeout),
            Ok(None) => return Ok((buf.freeze(), None)),
            Ok(Some(Err(_))) => {
                return Err(GatewayError::BadGateway {
                    reason: "upstream_protocol_error",
                });
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                    if buf.len() >= limit {
                        return Ok((buf.freeze(), Some(body)));
                    }
                }
            }
        }
    }
}

/// A body whose first bytes were read already: those, then the rest.
struct Prefixed {
    prefix: Option<Bytes>,
    rest: Body,
}

impl hyper::body::Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        if let Some(p) = self.prefix.take() {
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(p))));
        }
        std::pin::Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.is_end_stream()
    }
}

/// The body read whole for a check, and the body that goes on: the bytes
/// already read, or read here under the route's limits (size, minimum rate,
/// idle timeout); a request without a body goes on as it came.
async fn whole_body<B: RequestBody>(
    gw: &Gateway,
    body: InspectedBody<B>,
    max_body: u64,
) -> Result<(Bytes, InspectedBody<B>), GatewayError> {
    let bytes = match body {
        Either::Right(full) => match full.collect().await {
            Ok(c) => c.to_bytes(),
            Err(never) => match never {},
        },
        Either::Left(b) if b.is_end_stream() => return Ok((Bytes::new(), Either::Left(b))),
        Either::Left(b) => {
            let (guarded, fault) = GuardedBody::new(
                b,
                max_body,
                gw.limits.min_body_rate,
                gw.limits.stream_idle_timeout,
            );
            match guarded.collect().await {
                Ok(c) => c.to_bytes(),
                Err(_) => return Err(fault.error().unwrap_or(GatewayError::InvalidBody)),
            }
        }
    };
    Ok((bytes.clone(), Either::Right(Full::new(bytes))))
}

/// Bodies larger than this are checked against the OpenAPI document on
/// the blocking pool.
const OPENAPI_INLINE_BYTES: usize = 64 * 1024;

/// What the OpenAPI check needs, owned (it may run on the blocking pool).
struct OpenApiJob {
    spec: std::sync::Arc<palisade_openapi::Spec>,
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    content_type: Option<String>,
    body: Bytes,
}

impl OpenApiJob {
    fn validate(&self) -> Result<(), palisade_openapi::Violation> {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        self.spec.validate(&palisade_openapi::Request {
            method: &self.method,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &headers,
            content_type: self.content_type.as_deref(),
            body: &self.body,
        })
    }
}

/// Step 7a: the route's OpenAPI document. The path the service will
/// receive, the query, the headers and the whole body (read here under the
/// body limits when no earlier step read it) must be what the document
/// describes: `400 request_not_described` in block mode (where and which
/// rule in the log), a note in the log in `report_only` mode. A body that
/// cannot be read as sent (compressed, another charset) cannot be checked:
/// refused in block mode.
async fn openapi_step<B: RequestBody>(
    gw: &Gateway,
    req: Request<InspectedBody<B>>,
    route: &crate::steps::route::Route,
    max_body: u64,
    ctx: &mut RequestCtx,
) -> Result<Request<InspectedBody<B>>, GatewayError> {
    use hyper::body::Body as _;
    let Some(oa) = &route.openapi else {
        return Ok(req);
    };
    let inspection = crate::config::Inspection {
        mode: oa.mode,
        ..Default::default()
    };
    if !req.body().is_end_stream()
        && let Some(why) = inspect::unreadable_body(req.headers())
    {
        append_finding(ctx, inspect::uninspectable(&inspection, why)?);
        return Ok(req);
    }
    let (parts, body) = req.into_parts();
    let (bytes, body) = whole_body(gw, body, max_body).await?;
    let path = ctx.path.as_deref().unwrap_or("/");
    // every header, as Node reads it: a value with bytes past ASCII is
    // latin1 there, never skipped here (a skipped copy would hide a value)
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            let text = match v.to_str() {
                Ok(t) => t.to_string(),
                Err(_) => v.as_bytes().iter().map(|&b| b as char).collect(),
            };
            (n.as_str().to_string(), text)
        })
        .collect();
    let job = OpenApiJob {
        spec: std::sync::Arc::clone(&oa.spec),
        method: parts.method.as_str().to_string(),
        path: crate::steps::route::upstream_path(route, path).to_string(),
        query: parts.uri.query().map(str::to_string),
        headers,
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: bytes,
    };
    // a large body is checked on the blocking pool (as CRS is): the
    // worker's other connections go on meanwhile
    let verdict = if job.body.len() > OPENAPI_INLINE_BYTES {
        tokio::task::spawn_blocking(move || job.validate())
            .await
            .map_err(|_| GatewayError::Internal)?
    } else {
        job.validate()
    };
    if let Err(v) = verdict {
        match oa.mode {
            InspectionMode::Block => {
                return Err(GatewayError::NotDescribed {
                    violation: format!("openapi: {v}"),
                });
            }
            _ => append_finding(ctx, Some(format!("openapi: {v} (report_only)"))),
        }
    }
    Ok(Request::from_parts(parts, body))
}

/// A body over CRS's limit: refused (413) in block mode, forwarded with a
/// note in the log in detect mode.
fn crs_body_too_large<B>(
    crs: &crate::config::Crs,
    req: Request<B>,
    ctx: &mut RequestCtx,
) -> Result<Request<B>, GatewayError> {
    if crs.mode == InspectionMode::Block {
        return Err(GatewayError::PayloadTooLarge);
    }
    append_finding(
        ctx,
        Some("crs: body not inspected: over 128 KiB".to_string()),
    );
    Ok(req)
}

/// Add detect-mode findings to what the log records.
fn append_finding(ctx: &mut RequestCtx, note: Option<String>) {
    if let Some(n) = note {
        ctx.inspection = Some(match ctx.inspection.take() {
            Some(prev) => format!("{prev}; {n}"),
            None => n,
        });
    }
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

/// A request's context until its record is written. Dropped unanswered
/// (the client closed the connection or reset the stream, and hyper
/// dropped the request's future), it still writes the record: status 499,
/// reason `client_closed_request` (nginx's 499, Envoy's `DC` flag), so a
/// request the service may have acted on never goes unlogged.
struct Unanswered<'g> {
    log: &'g crate::ops::log::Sink,
    format: crate::ops::log::LogFormat,
    ctx: RequestCtx,
    answered: bool,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let rec = self.ctx.record_client_closed();
        let status = StatusCode::from_u16(rec.status).unwrap_or(StatusCode::BAD_REQUEST);
        request_metrics(&rec.route, rec.decision, status, self.ctx.started.elapsed());
        self.log.write_record(&rec, self.format);
    }
}

/// Entry point for one request on a serving listener.
///
/// `busy` (HTTPS HTTP/1.1) keeps the connection counted busy until hyper
/// drops the response body (see `transport/conn.rs`).
pub async fn handle<B: RequestBody>(
    gw: Arc<Gateway>,
    conn: Arc<ConnInfo>,
    req: Request<B>,
    busy: Option<Busy>,
) -> Result<Response<Tracked<Body>>, Infallible> {
    // the TCP peer, or behind a trusted proxy the address it forwarded
    let client =
        crate::steps::client_ip::client_ip(conn.peer.ip(), req.headers(), &gw.trusted_proxies);
    let mut pending = Unanswered {
        log: &gw.log,
        format: gw.log_format,
        ctx: RequestCtx::new(
            conn,
            client,
            request_id(),
            req.method().clone(),
            req.uri().path().len(),
        ),
        answered: false,
    };
    let ctx = &mut pending.ctx;
    let outcome =
        match tokio::time::timeout(gw.limits.request_timeout, pipeline(&gw, req, ctx)).await {
            Ok(r) => r,
            // past authorization the time went to the upstream: that is a 504
            Err(_) if ctx.permitted() => Err(GatewayError::GatewayTimeout),
            Err(_) => Err(GatewayError::RequestTimeout),
        };
    let (mut resp, error) = match outcome {
        Ok(r) => (r, None),
        Err(e) => {
            let mut r = error_response(&e, &ctx.request_id);
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
            (r, Some(e))
        }
    };
    let csp = match (&error, &ctx.route) {
        (None, Some(r)) => r.content_security_policy.as_deref(),
        _ => None,
    };
    security_headers(&mut resp, ctx.conn.tls, csp);
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        resp.headers_mut()
            .insert(crate::steps::headers::X_REQUEST_ID, v);
    }
    let status = resp.status();
    let bytes_out = hyper::body::Body::size_hint(resp.body())
        .exact()
        .unwrap_or(0);
    let rec = ctx.record(error.as_ref(), status.as_u16(), bytes_out);
    request_metrics(&rec.route, rec.decision, status, ctx.started.elapsed());
    if let Some(cat) = rec.category {
        metrics::counter!("palisade_gateway_security_events_total", "category" => cat).increment(1);
    }
    // answered before writing: a panic in the write must not log twice
    pending.answered = true;
    gw.log.write_record(&rec, gw.log_format);
    drop(rec);
    // intrusion detection counts it once it is answered, off this path
    crate::steps::ids::observe(&gw, &pending.ctx, error.as_ref(), status.as_u16());
    Ok(resp.map(|inner| Tracked { inner, busy }))
}

/// One worker's metric handles per route: the route's duration histogram
/// and its request counters by (decision, status).
type RouteMetrics = (
    Arc<crate::ops::durations::Histogram>,
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
                (crate::ops::durations::for_route(route), Vec::new()),
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
pub async fn redirect<B>(port: u16, req: Request<B>) -> Result<Response<Body>, Infallible> {
    // only a validated host goes into Location (never an open redirect)
    let host = host::canonical_host(&req)
        .map(|h| h.host)
        .unwrap_or_default();
    // origin form only (`OPTIONS *` has no path to redirect to)
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    if !pq.starts_with('/') {
        let mut resp = Response::new(full(Bytes::new()));
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(resp);
    }
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

    /// The redirect listener's `Location` holds only a validated host and
    /// an origin-form path; anything else is a 400 with no `Location`.
    #[tokio::test]
    async fn redirects_only_to_a_validated_host_and_path() {
        let go = |method: &str, uri: &str, host: Option<&str>| {
            let mut b = Request::builder().method(method).uri(uri);
            if let Some(h) = host {
                b = b.header(header::HOST, h);
            }
            redirect(8443, b.body(()).unwrap())
        };
        let r = go("GET", "/a?b=1", Some("API.Example.")).await.unwrap();
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            r.headers()[header::LOCATION],
            "https://api.example:8443/a?b=1"
        );
        for (method, uri, host) in [
            ("OPTIONS", "*", Some("localhost")),
            ("GET", "/a", None),
            ("GET", "http://evil.example/a", None),
            ("GET", "/a", Some("a@evil.example")),
            ("GET", "/a", Some("evil.example/x")),
        ] {
            let r = go(method, uri, host).await.unwrap();
            assert_eq!(
                r.status(),
                StatusCode::BAD_REQUEST,
                "{method} {uri} {host:?}"
            );
            assert!(r.headers().get(header::LOCATION).is_none());
        }
    }
}
