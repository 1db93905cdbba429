//! The HTTP edge: turns a hyper request into a typed [`Request`] (method to
//! operation, percent-decoded and checked path, token, JSON body within the
//! size limit) and renders the core's answer in Vault's JSON shapes. This is
//! the only place that knows about HTTP; it writes every error body.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::IntoResponse;
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};

use crate::core::Core;
use crate::logical::{ApiError, Operation, Request, Response, fields};

/// Vault's default request size limit.
pub const DEFAULT_MAX_REQUEST_SIZE: usize = 32 * 1024 * 1024;

/// The peer address, inserted by the listener for every request.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

#[derive(Clone)]
pub struct AppState {
    pub core: Arc<Core>,
    pub max_request_size: usize,
}

pub fn router(core: Arc<Core>, max_request_size: usize) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(AppState {
        core,
        max_request_size,
    })
}

fn percent_decode(s: &str, plus_is_space: bool) -> Result<Vec<u8>, ()> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3).ok_or(())?;
                let hex = std::str::from_utf8(hex).map_err(|_| ())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// The path after `/v1/`, decoded and checked: valid UTF-8, no NUL, no `.`
/// or `..` segment, no empty segment (a single trailing slash is allowed).
pub fn parse_path(raw: &str) -> Result<String, ApiError> {
    let rest = raw
        .strip_prefix("/v1/")
        .ok_or_else(ApiError::unsupported_path)?;
    let bytes = percent_decode(rest, false)
        .map_err(|_| ApiError::bad_request("invalid percent-encoding in path"))?;
    let path =
        String::from_utf8(bytes).map_err(|_| ApiError::bad_request("invalid UTF-8 in path"))?;
    if path.contains('\0') || path.chars().any(|c| c.is_control()) {
        return Err(ApiError::bad_request("invalid character in path"));
    }
    let body = path.strip_suffix('/').unwrap_or(&path);
    if body.is_empty() {
        return Err(ApiError::unsupported_path());
    }
    if body
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(ApiError::bad_request(
            "invalid path: empty, '.' or '..' segments are not allowed",
        ));
    }
    Ok(path)
}

fn parse_query(q: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    let Some(q) = q else { return Ok(out) };
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

async fn handle(
    State(st): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    addr: Option<axum::Extension<ClientAddr>>,
    body: Body,
) -> axum::response::Response {
    let started = Instant::now();
    let request_id = palisade_core::uuid_v4();
    let head = method == Method::HEAD;
    let result = async {
        let path = parse_path(uri.path())?;
        let query = parse_query(uri.query())?;
        let list_q = query
            .iter()
            .find(|(k, _)| k == "list")
            .map(|(_, v)| fields::parse_bool(v).unwrap_or(false))
            .unwrap_or(false);
        // Input the edge cannot accept on a path it could parse (wrong content
        // type, body too large): carried into the core, which audits it and
        // refuses, like a body that is not JSON.
        let mut input_error = None;
        let operation = match method.as_str() {
            "GET" if list_q => Operation::List,
            "GET" => Operation::Read,
            "HEAD" if path == "sys/health" => Operation::Read,
            "LIST" => Operation::List,
            "POST" | "PUT" => Operation::Write,
            "DELETE" => Operation::Delete,
            "PATCH" => {
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
                Operation::Patch
            }
            _ => return Err(ApiError::unsupported_operation()),
        };
        if headers.contains_key("x-vault-wrap-ttl") {
            return Err(ApiError::bad_request("response wrapping is not supported"));
        }
        let limited = http_body_util::Limited::new(body, st.max_request_size);
        let bytes = match limited.collect().await {
            Ok(c) => c.to_bytes(),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                input_error.get_or_insert(ApiError::new(413, "http: request body too large"));
                bytes::Bytes::new()
            }
            Err(_) => {
                input_error.get_or_insert(ApiError::bad_request("failed to read request body"));
                bytes::Bytes::new()
            }
        };
        let mut req = Request::new(operation, path);
        req.id = request_id.clone();
        req.query = query;
        req.token = token_from(&headers);
        req.remote_addr = addr.map(|a| a.0.0.ip().to_string()).unwrap_or_default();
        if let Some(e) = input_error {
            req.body_error = Some(e);
        } else if !bytes.iter().all(u8::is_ascii_whitespace) {
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(m)) => req.data = m,
                Ok(Value::Null) => {}
                Ok(_) => {
                    req.body_error = Some(ApiError::bad_request(
                        "failed to parse JSON input: request body must be a JSON object",
                    ))
                }
                Err(e) => {
                    req.body_error = Some(ApiError::bad_request(format!(
                        "failed to parse JSON input: {}",
                        json_error_class(&e)
                    )))
                }
            }
        }
        st.core.handle(req).await
    }
    .await;
    let status = match &result {
        Ok(r) => r.status,
        Err(e) => e.status,
    };
    // Per-request lines are debug: the audit log is the security record of
    // requests; the server log is for operating the server.
    tracing::debug!(
        request_id = %request_id,
        method = %method,
        path = %uri.path(),
        status,
        latency_us = started.elapsed().as_micros() as u64,
        "request"
    );
    render(result, &request_id, head)
}

/// serde_json's message without any echo of the input.
fn json_error_class(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Syntax => "invalid JSON syntax",
        Category::Eof => "unexpected end of JSON input",
        Category::Data => "invalid JSON data",
        Category::Io => "read error",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

pub fn render(
    result: Result<Response, ApiError>,
    request_id: &str,
    head: bool,
) -> axum::response::Response {
    let (status, body) = match result {
        Ok(r) => {
            if r.status == 204 {
                (204, None)
            } else if let Some(raw) = r.raw {
                (r.status, Some(raw))
            } else {
                let mut env = json!({
                    "request_id": request_id,
                    "lease_id": "",
                    "renewable": false,
                    "lease_duration": 0,
                    "data": r.data,
                    "wrap_info": null,
                    "warnings": if r.warnings.is_empty() { Value::Null } else { json!(r.warnings) },
                    "auth": r.auth,
                    "mount_type": "",
                });
                if r.top_level
                    && let (Some(Value::Object(data)), Value::Object(obj)) =
                        (r.data.as_ref(), &mut env)
                {
                    for (k, v) in data {
                        obj.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
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
    fn paths_are_decoded_and_checked() {
        assert_eq!(
            parse_path("/v1/secret/data/a%20b").unwrap(),
            "secret/data/a b"
        );
        assert_eq!(
            parse_path("/v1/secret/metadata/").unwrap(),
            "secret/metadata/"
        );
        let dots =
            ApiError::bad_request("invalid path: empty, '.' or '..' segments are not allowed");
        assert_eq!(parse_path("/v1/secret/../sys/seal").unwrap_err(), dots);
        assert_eq!(parse_path("/v1/secret/%2e%2e/sys").unwrap_err(), dots);
        assert_eq!(parse_path("/v1/secret//x").unwrap_err(), dots);
        assert_eq!(parse_path("/v1/secret/./x").unwrap_err(), dots);
        assert_eq!(
            parse_path("/v1/secret/%ff").unwrap_err(),
            ApiError::bad_request("invalid UTF-8 in path")
        );
        assert_eq!(
            parse_path("/v1/secret/%00").unwrap_err(),
            ApiError::bad_request("invalid character in path")
        );
        assert_eq!(
            parse_path("/v1/a%zz").unwrap_err(),
            ApiError::bad_request("invalid percent-encoding in path")
        );
        assert_eq!(
            parse_path("/v2/x").unwrap_err(),
            ApiError::unsupported_path()
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
