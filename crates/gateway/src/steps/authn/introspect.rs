//! RFC 7662 token introspection, for an issuer that names an endpoint: a
//! revocation check on top of a JWT's local verification, and the only
//! check of an opaque (non-JWT) token.
//!
//! Answers are cached for the issuer's `cache_s` (never beyond the token's
//! `exp`), keyed by the SHA-256 of the token (the token itself is never kept).
//! Requests for one token while its answer is being fetched wait for that
//! one call. A failed call (connection, timeout, status, malformed answer) is
//! not cached and fails closed: the request is refused with 503.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use palisade_core::Secret;
use serde_json::{Map, Value};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::config::IntrospectionSpec;

/// Answers kept at most; when full, expired ones go, then all of them.
const MAX_ENTRIES: usize = 65_536;
/// An answer larger than this is refused (RFC 7662 answers are small).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
const TIMEOUT: Duration = Duration::from_secs(5);

/// What the endpoint said about a token.
#[derive(Clone, Debug)]
pub(super) enum Answer {
    /// `active: true`, with every member of the answer.
    Active(Arc<Map<String, Value>>),
    Inactive,
}

/// Why no answer could be had (for the security log; the client gets 503).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Unavailable(pub(super) &'static str);

/// One token's answer, or the failure of the call every request waiting
/// for it shares (kept with `until` = when it failed, so no later request
/// sees it).
#[derive(Default)]
struct Slot {
    answer: OnceCell<(Result<Answer, Unavailable>, Instant)>,
}

impl Slot {
    fn expired(&self, now: Instant) -> bool {
        self.answer.get().is_some_and(|(_, until)| *until <= now)
    }
}

pub(super) struct Introspector {
    url: reqwest::Url,
    /// `Basic base64(form(client_id):form(secret))` (RFC 6749 §2.3.1).
    authorization: Secret<String>,
    cache: Duration,
    http: reqwest::Client,
    slots: Mutex<HashMap<[u8; 32], Arc<Slot>>>,
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector")
            .field("url", &self.url.as_str())
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

/// `application/x-www-form-urlencoded` encoding of one value: everything
/// but unreserved characters as `%XX`.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn token_key(token: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut k = [0u8; 32];
    k.copy_from_slice(d.as_ref());
    k
}

impl Introspector {
    pub(super) fn new(spec: &IntrospectionSpec) -> Result<Self, String> {
        let url = reqwest::Url::parse(&spec.url).map_err(|e| format!("url: {e}"))?;
        let secret = std::str::from_utf8(spec.client_secret.expose())
            .map_err(|_| "client_secret: not UTF-8".to_string())?;
        let pair = Secret::new(format!(
            "{}:{}",
            form_encode(&spec.client_id),
            form_encode(secret)
        ));
        let authorization = Secret::new(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair.expose())
        ));
        // no proxy from the environment, no redirects (a redirect would carry
        // the gateway's credentials and the token elsewhere)
        let mut b = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &spec.ca_file {
            let pem = std::fs::read(ca).map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
            if certs.is_empty() {
                return Err(format!("ca_file {}: holds no certificate", ca.display()));
            }
            b = b.tls_certs_only(certs);
        }
        let http = b.build().map_err(|e| format!("http client: {e}"))?;
        Ok(Self {
            url,
            authorization,
            cache: spec.cache,
            http,
            slots: Mutex::new(HashMap::new()),
        })
    }

    /// The endpoint's answer for `token`, from the cache when it is fresh.
    /// `exp` (seconds since the epoch, when the token says) bounds how long
    /// an active answer is reused; `now` is the request's clock.
    pub(super) async fn check(
        &self,
        token: &str,
        exp: Option<i64>,
        now: i64,
    ) -> Result<Answer, Unavailable> {
        let key = token_key(token);
        let at = Instant::now();
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            match slots.get(&key) {
                Some(s) if !s.expired(at) => s.clone(),
                _ => {
                    if slots.len() >= MAX_ENTRIES {
                        slots.retain(|_, s| !s.expired(at));
                        if slots.len() >= MAX_ENTRIES {
                            slots.clear();
                        }
                    }
                    let s = Arc::new(Slot::default());
                    slots.insert(key, s.clone());
                    s
                }
            }
        };
        let (answer, _) = slot
            .answer
            .get_or_init(|| async {
                let answer = self.fetch(token).await;
                metrics::counter!(
                    "palisade_gateway_introspections_total",
                    "result" => match &answer {
                        Ok(Answer::Active(_)) => "active",
                        Ok(Answer::Inactive) => "inactive",
                        Err(_) => "unavailable",
                    }
                )
                .increment(1);
                let keep = match &answer {
                    // shared with the requests already waiting, then gone
                    Err(_) => Duration::ZERO,
                    Ok(a) => {
                        let exp = match a {
                            Answer::Active(a) => {
                                exp.or_else(|| a.get("exp").and_then(Value::as_i64))
                            }
                            Answer::Inactive => None,
                        };
                        exp.map_or(self.cache, |exp| {
                            self.cache
                                .min(Duration::from_secs(exp.saturating_sub(now).max(0) as u64))
                        })
                    }
                };
                (answer, Instant::now() + keep)
            })
            .await;
        answer.clone()
    }

    async fn fetch(&self, token: &str) -> Result<Answer, Unavailable> {
        let mut authorization =
            hyper::header::HeaderValue::from_str(self.authorization.expose())
                .map_err(|_| Unavailable("client credentials are not a header value"))?;
        authorization.set_sensitive(true);
        let body = format!("token={}&token_type_hint=access_token", form_encode(token));
        let response = self
            .http
            .post(self.url.clone())
            .header(hyper::header::AUTHORIZATION, authorization)
            .header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(hyper::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                Unavailable(if e.is_timeout() {
                    "introspection_timeout"
                } else if e.is_connect() {
                    "introspection_connect"
                } else {
                    "introspection_request"
                })
            })?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(Unavailable(match response.status().as_u16() {
                401 | 403 => "introspection_client_refused",
                _ => "introspection_status",
            }));
        }
        let bytes = crate::ops::read_limited(response, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| {
                Unavailable(match e {
                    "answer_too_large" => "introspection_answer_too_large",
                    _ => "introspection_body",
                })
            })?;
        // duplicate members refused, as in a JWT: `{"active":false,
        // "active":true}` must not mean one thing here and another elsewhere
        let Some(answer) = palisade_jwt::strict_json_object(&bytes) else {
            return Err(Unavailable("introspection_malformed_answer"));
        };
        match answer.get("active") {
            Some(Value::Bool(true)) => Ok(Answer::Active(Arc::new(answer))),
            Some(Value::Bool(false)) => Ok(Answer::Inactive),
            _ => Err(Unavailable("introspection_malformed_answer")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding_keeps_only_unreserved_characters() {
        assert_eq!(form_encode("a.B-c_~9"), "a.B-c_~9");
        assert_eq!(form_encode("a b&c=d+e%/"), "a%20b%26c%3Dd%2Be%25%2F");
        assert_eq!(form_encode("é"), "%C3%A9");
    }
}
