//! The OWASP CRS rule set on a route's requests (palisade-waf), after the
//! built-in inspection and before authentication: the request line and
//! headers as received, and the body whole, as the route forwards it.
//!
//! Block mode refuses a request CRS interrupts (its anomaly score reached
//! the threshold, rule 949110; or a body that does not parse, 200002 /
//! 200003) with 403 `request_blocked` (400 `malformed_request_content` for
//! the body errors); detect mode forwards it. Either way the rules that
//! matched are logged by id, message and collection (`ARGS`, `REQUEST_HEADERS`),
//! never a key or a value: both are request data.

use palisade_waf::tx::{Request as WafRequest, Transaction};

use crate::config::{Crs, InspectionMode};
use crate::error::GatewayError;

/// The largest body CRS evaluates (ModSecurity's SecRequestBodyNoFilesLimit
/// default, 128 KiB).
pub const MAX_BODY_BYTES: u64 = 128 * 1024;

/// The request parts CRS reads.
pub struct Parts<'a> {
    pub method: &'a str,
    /// The request target as received.
    pub target: String,
    pub version: &'static str,
    pub headers: &'a hyper::HeaderMap,
    /// The authority of an HTTP/2 request (`:authority`), which CRS reads
    /// as the Host header.
    pub authority: Option<&'a str>,
    pub client_ip: &'a str,
    pub request_id: &'a str,
    pub body: &'a [u8],
}

/// The request as the engine reads it (owned: evaluation runs on a
/// blocking thread, see `evaluate`).
pub fn request(p: &Parts<'_>) -> WafRequest {
    let mut headers: Vec<(String, Vec<u8>)> = p
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    if !p.headers.contains_key(hyper::header::HOST)
        && let Some(a) = p.authority
    {
        headers.insert(0, ("host".into(), a.as_bytes().to_vec()));
    }
    WafRequest {
        method: p.method.to_string(),
        uri: p.target.clone(),
        protocol: p.version.to_string(),
        headers,
        remote_addr: p.client_ip.to_string(),
        body: p.body.to_vec(),
        id: p.request_id.to_string(),
    }
}

/// Run CRS on the request: `Ok(Some(findings))` for the log, `Err` to
/// refuse. CPU-bound (up to about 0.2 s for a 128 KiB body): the caller runs
/// it off the worker's runtime, so other connections are not held up.
pub fn evaluate(crs: &Crs, req: WafRequest) -> Result<Option<String>, GatewayError> {
    let mut tx = Transaction::new(&crs.rules, req);
    let stop = tx.process_request().cloned();
    let mut text = String::new();
    for m in &tx.matches {
        if !text.is_empty() {
            text.push_str("; ");
        }
        // the collection only: a key is request data (an argument's,
        // a cookie's or a JSON member's name can be the attack, or a secret)
        let collection = m.variable.split(':').next().unwrap_or_default();
        text.push_str(&format!("crs:{} {} {collection}", m.id, m.msg));
        if crate::steps::inspect::cap_findings(&mut text) {
            break;
        }
    }
    match (stop, crs.mode) {
        (Some(i), InspectionMode::Block) => Err(GatewayError::Blocked {
            findings: text,
            malformed: matches!(i.rule_id, 200002 | 200003),
        }),
        _ if text.is_empty() => Ok(None),
        _ => Ok(Some(text)),
    }
}
