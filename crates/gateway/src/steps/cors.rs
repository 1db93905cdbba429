//! CORS (pipeline step 7): preflights answered here, never forwarded; the
//! allowed origin added to forwarded responses.

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};

use crate::config::RouteConfig;
use crate::error::{Body, GatewayError, full};

/// A CORS preflight: `OPTIONS` with `Access-Control-Request-Method`.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The answer to a preflight on a CORS route: 204 with the route's CORS
/// headers, or 403 `cors_origin_not_allowed`.
pub fn preflight(
    route: &RouteConfig,
    origin: Option<&HeaderValue>,
) -> Result<Response<Body>, GatewayError> {
    let Some(allowed) = cors_origin(route, origin) else {
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
    add_cors(&mut resp, route, allowed);
    Ok(resp)
}

/// CORS headers on a forwarded response: the allowed origin, or (on a CORS
/// route) `Vary: Origin` alone.
pub fn on_response(resp: &mut Response<Body>, route: &RouteConfig, origin: Option<&HeaderValue>) {
    if let Some(allowed) = cors_origin(route, origin) {
        add_cors(resp, route, allowed);
    } else if route.cors.is_some() {
        // the answer depends on Origin even when it carries no CORS headers:
        // a shared cache must not hand it to an allowed origin
        resp.headers_mut()
            .append(header::VARY, HeaderValue::from_static("Origin"));
    }
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
