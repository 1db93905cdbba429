//! Claim checks after the signature has verified: `exp` (required), `nbf`,
//! `iat` (type only), `aud`, and the typed [`Claims`] handed to the gateway.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::JwtError;
use crate::config::Alg;

/// A verified token: its signature checked against the issuer's keys, its
/// issuer, audience and validity period checked. Only [`crate::Verifier`]
/// builds one.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// `iss`, equal to the configured issuer.
    pub iss: String,
    /// `sub`, when present (it must then be a string).
    pub sub: Option<String>,
    /// `aud` as a list (a single string becomes a one-element list).
    pub aud: Vec<String>,
    /// `exp`, seconds since the Unix epoch (fractions truncated).
    pub exp: i64,
    /// The algorithm and key id that verified the signature, for the log.
    pub alg: Alg,
    pub kid: Option<String>,
    /// Every claim, including the ones above (shared with the verified-token cache).
    pub all: std::sync::Arc<Map<String, Value>>,
}

impl Claims {
    /// A claim by name.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.all.get(name)
    }
}

/// The time a verification happens at: wall clock for `exp`/`nbf`, monotonic
/// clock for the refetch rate limit. Injected so tests need no sleeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Now {
    pub wall: SystemTime,
    pub mono: std::time::Instant,
}

impl Now {
    pub(crate) fn system() -> Now {
        Now {
            wall: SystemTime::now(),
            mono: std::time::Instant::now(),
        }
    }
}

/// What the claim checks need from the issuer configuration.
pub(crate) struct Expect<'a> {
    pub audiences: &'a [String],
    pub leeway: Duration,
}

/// Check the claims of a token whose signature has verified.
pub(crate) fn check(
    all: std::sync::Arc<Map<String, Value>>,
    expect: &Expect<'_>,
    now: SystemTime,
    alg: Alg,
    kid: Option<String>,
) -> Result<Claims, JwtError> {
    let now = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    };
    let leeway = expect.leeway.as_secs_f64();

    let exp = numeric_date(&all, "exp")?.ok_or(JwtError::MissingClaim("exp"))?;
    // RFC 7519 §4.1.4: the current time must be before `exp`.
    if now >= exp + leeway {
        return Err(JwtError::Expired);
    }
    if let Some(nbf) = numeric_date(&all, "nbf")? {
        // §4.1.5: the current time must be on or after `nbf`.
        if now + leeway < nbf {
            return Err(JwtError::NotYetValid);
        }
    }
    // `iat` is informational (Envoy does not check it either); a present
    // `iat` must still be a NumericDate.
    numeric_date(&all, "iat")?;

    let aud = match all.get("aud") {
        None => return Err(JwtError::MissingClaim("aud")),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or(JwtError::Malformed))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(JwtError::Malformed),
    };
    if !aud.iter().any(|a| expect.audiences.contains(a)) {
        return Err(JwtError::WrongAudience);
    }

    let sub = match all.get("sub") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(JwtError::Malformed),
    };
    let iss = match all.get("iss") {
        Some(Value::String(s)) => s.clone(),
        // The caller found the issuer by this claim, so this does not happen.
        _ => return Err(JwtError::MissingClaim("iss")),
    };
    Ok(Claims {
        iss,
        sub,
        aud,
        // Saturating float-to-int conversion; exp is finite and checked above.
        exp: exp as i64,
        alg,
        kid,
        all,
    })
}

/// A NumericDate claim (RFC 7519 §2): any JSON number. Absent is `None`;
/// another type is `Malformed`.
fn numeric_date(all: &Map<String, Value>, name: &str) -> Result<Option<f64>, JwtError> {
    match all.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(JwtError::Malformed),
        Some(_) => Err(JwtError::Malformed),
    }
}
