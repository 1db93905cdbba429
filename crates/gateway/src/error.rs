//! The one place a gateway error becomes an HTTP response:
//! `{"error":{"code","message","request_id"}}` with the right status, no
//! internal detail, no upstream text, no `Server` version.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every response body the gateway sends.
pub type Body = BoxBody<Bytes, BoxError>;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// Why a request was not served. Layers return these; they never write responses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    #[error("request path rejected: {0}")]
    BadPath(&'static str),
    #[error("request host rejected: {0}")]
    InvalidHost(&'static str),
    /// The client's request body broke while it was read (malformed
    /// chunked encoding, a client that disconnected mid-body): the client's
    /// fault, never the upstream's.
    #[error("invalid request body")]
    InvalidBody,
    #[error("no route")]
    NoRoute,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("authentication required")]
    Unauthenticated {
        reason: &'static str,
        challenge: &'static str,
    },
    #[error("forbidden")]
    Forbidden { reason: String },
    #[error("rate limited")]
    RateLimited {
        retry_after: Duration,
        headers: Vec<(&'static str, String)>,
        limit: &'static str,
    },
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("request headers too large")]
    HeadersTooLarge,
    #[error("request timeout")]
    RequestTimeout,
    /// The client already has `limits.max_concurrent_requests_per_client`
    /// requests forwarded.
    #[error("too many concurrent requests")]
    TooManyConcurrent,
    #[error("upstream unavailable")]
    BadGateway { reason: &'static str },
    #[error("upstream timeout")]
    GatewayTimeout,
    #[error("internal error")]
    Internal,
    /// The inspection step found an attack (or, `malformed`, input that
    /// does not parse) in block mode; `findings` is what the log records.
    #[error("request blocked by inspection")]
    Blocked { findings: String, malformed: bool },
    /// CRS's response phases withheld the service's response (a data leak:
    /// SQL errors, stack traces, source code).
    #[error("response withheld")]
    ResponseBlocked { findings: String },
    /// The intrusion detection step refuses the client: a ban of its
    /// address or principal (`retry_after`: what is left of it), or the
    /// deny list (`retry_after` none).
    /// The route's OpenAPI document does not describe the request
    /// (`violation`: where and which rule, for the log).
    #[error("request not described by the API")]
    NotDescribed { violation: String },
    /// A credential that needs a remote check (token introspection) could
    /// not be checked: the request is refused, never let through.
    #[error("authentication unavailable")]
    AuthUnavailable { reason: &'static str },
    #[error("client banned")]
    Banned {
        subject: BanSubject,
        retry_after: Option<Duration>,
    },
}

/// What a [`GatewayError::Banned`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanSubject {
    Address,
    Principal,
    DenyList,
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::BadRequest(_)
            | GatewayError::BadPath(_)
            | GatewayError::InvalidHost(_)
            | GatewayError::InvalidBody
            | GatewayError::NotDescribed { .. }
            | GatewayError::Blocked {
                malformed: true, ..
            } => StatusCode::BAD_REQUEST,
            GatewayError::Blocked { .. } | GatewayError::Banned { .. } => StatusCode::FORBIDDEN,
            GatewayError::NoRoute => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            GatewayError::Forbidden { .. } => StatusCode::FORBIDDEN,
            GatewayError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            GatewayError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            GatewayError::TooManyConcurrent => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::BadGateway { .. } | GatewayError::ResponseBlocked { .. } => {
                StatusCode::BAD_GATEWAY
            }
            GatewayError::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::AuthUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code clients can match on.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::BadRequest(_) => "bad_request",
            GatewayError::BadPath(_) => "invalid_path",
            GatewayError::InvalidHost(_) => "invalid_host",
            GatewayError::InvalidBody => "invalid_body",
            GatewayError::NoRoute => "not_found",
            GatewayError::MethodNotAllowed => "method_not_allowed",
            GatewayError::Unauthenticated { .. } => "unauthenticated",
            GatewayError::Forbidden { .. } => "forbidden",
            GatewayError::RateLimited { .. } => "rate_limited",
            GatewayError::PayloadTooLarge => "payload_too_large",
            GatewayError::HeadersTooLarge => "request_header_fields_too_large",
            GatewayError::RequestTimeout => "request_timeout",
            GatewayError::TooManyConcurrent => "too_many_concurrent_requests",
            GatewayError::BadGateway { .. } => "bad_gateway",
            GatewayError::GatewayTimeout => "gateway_timeout",
            GatewayError::Internal => "internal_error",
            GatewayError::AuthUnavailable { .. } => "authentication_unavailable",
            GatewayError::Blocked {
                malformed: true, ..
            } => "malformed_request_content",
            GatewayError::Blocked { .. } => "request_blocked",
            GatewayError::ResponseBlocked { .. } => "response_blocked",
            GatewayError::Banned { .. } => "client_banned",
            GatewayError::NotDescribed { .. } => "request_not_described",
        }
    }

    /// The client-facing message: fixed text per kind, never internal detail.
    pub fn message(&self) -> &'static str {
        match self {
            GatewayError::BadRequest(m)
            | GatewayError::BadPath(m)
            | GatewayError::InvalidHost(m) => m,
            GatewayError::InvalidBody => "the request body could not be read",
            GatewayError::NoRoute => "no route matches this request",
            GatewayError::MethodNotAllowed => "method not allowed on this route",
            GatewayError::Unauthenticated { .. } => "valid credentials are required",
            GatewayError::Forbidden { .. } => "access denied",
            GatewayError::RateLimited { .. } => "rate limit exceeded",
            GatewayError::PayloadTooLarge => "request body too large",
            GatewayError::HeadersTooLarge => "request headers too large",
            GatewayError::RequestTimeout => "request timed out",
            GatewayError::TooManyConcurrent => "too many requests in progress from this client",
            GatewayError::BadGateway { .. } => "upstream service unavailable",
            GatewayError::GatewayTimeout => "upstream service timed out",
            GatewayError::Internal => "internal error",
            GatewayError::AuthUnavailable { .. } => {
                "credentials cannot be checked now; retry later"
            }
            GatewayError::Blocked {
                malformed: true, ..
            } => "the query string or body could not be parsed",
            GatewayError::Blocked { .. } => "request blocked",
            GatewayError::ResponseBlocked { .. } => "the service's response was withheld",
            GatewayError::Banned { .. } => "this client is refused for now",
            GatewayError::NotDescribed { .. } => "the request does not match the API's description",
        }
    }

    /// The reason recorded in the security log (never sent to the client).
    pub fn log_reason(&self) -> String {
        match self {
            GatewayError::Unauthenticated { reason, .. } => (*reason).to_string(),
            GatewayError::Forbidden { reason } => reason.clone(),
            GatewayError::RateLimited { limit, .. } => (*limit).to_string(),
            GatewayError::BadGateway { reason } | GatewayError::AuthUnavailable { reason } => {
                (*reason).to_string()
            }
            GatewayError::Blocked { findings, .. } | GatewayError::ResponseBlocked { findings } => {
                findings.clone()
            }
            GatewayError::NotDescribed { violation } => violation.clone(),
            GatewayError::Banned { subject, .. } => match subject {
                BanSubject::Address => "ids_ban:address",
                BanSubject::Principal => "ids_ban:principal",
                BanSubject::DenyList => "ids_deny_list",
            }
            .to_string(),
            GatewayError::BadRequest(m)
            | GatewayError::BadPath(m)
            | GatewayError::InvalidHost(m) => (*m).to_string(),
            other => other.code().to_string(),
        }
    }

    /// The SIEM category of the event this error represents.
    pub fn category(&self) -> Option<&'static str> {
        match self {
            GatewayError::Unauthenticated { .. } => Some("authentication_failure"),
            GatewayError::Forbidden { .. } => Some("access_denied"),
            GatewayError::RateLimited { .. } | GatewayError::TooManyConcurrent => {
                Some("rate_limited")
            }
            GatewayError::BadRequest(_)
            | GatewayError::BadPath(_)
            | GatewayError::InvalidHost(_)
            | GatewayError::InvalidBody
            | GatewayError::HeadersTooLarge
            | GatewayError::PayloadTooLarge
            | GatewayError::NotDescribed { .. }
            | GatewayError::Blocked {
                malformed: true, ..
            } => Some("malformed_request"),
            GatewayError::Blocked { .. } | GatewayError::ResponseBlocked { .. } => {
                Some("inspection")
            }
            GatewayError::Banned { .. } => Some("banned"),
            _ => None,
        }
    }
}

/// Render an error. Whether the connection closes afterwards is decided by the caller.
pub fn error_response(err: &GatewayError, request_id: &str) -> Response<Body> {
    let body = serde_json::json!({
        "error": { "code": err.code(), "message": err.message(), "request_id": request_id }
    });
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = err.status();
    let h = resp.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    match err {
        GatewayError::Unauthenticated { challenge, .. } => {
            h.insert(
                hyper::header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        GatewayError::RateLimited {
            retry_after,
            headers,
            ..
        } => {
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            h.insert(hyper::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            for (name, value) in headers {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value),
                ) && n != hyper::header::RETRY_AFTER
                {
                    h.insert(n, v);
                }
            }
        }
        GatewayError::Banned {
            retry_after: Some(d),
            ..
        } => {
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            h.insert(hyper::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        _ => {}
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn error_body_shape_and_headers() {
        let e = GatewayError::Unauthenticated {
            reason: "jwt_expired",
            challenge: "Bearer",
        };
        let r = error_response(&e, "req-1");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"error":{"code":"unauthenticated","message":"valid credentials are required","request_id":"req-1"}}"#
        );
        // the log reason never reaches the client
        assert!(!std::str::from_utf8(&body).unwrap().contains("jwt_expired"));
    }

    #[test]
    fn rate_limited_has_retry_after() {
        let e = GatewayError::RateLimited {
            retry_after: Duration::from_millis(1500),
            headers: vec![("RateLimit", "\"peer\";r=0;t=2".into())],
            limit: "peer",
        };
        let r = error_response(&e, "x");
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()["retry-after"], "2");
        assert_eq!(r.headers()["ratelimit"], "\"peer\";r=0;t=2");
    }
}
