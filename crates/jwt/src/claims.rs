//! Claim checks after the signature has verified: `exp` (required), `nbf`,
//! `iat` (type only), `aud`, and the typed [`Claims`] handed to the gateway.

use std::any::Any;
use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::JwtError;
use crate::config::Alg;

/// A verified token: its signature checked against the issuer's keys, its
/// issuer, audience and validity period checked. Only [`crate::Verifier`]
/// builds one.
///
/// The verified-token cache keeps it behind an `Arc`: a token seen again is
/// checked against the clock ([`Claims`]' `exp` and `nbf`) and handed back
/// as is, with whatever the caller derived from it ([`Claims::derived`]).
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
    /// `exp` and `nbf` as checked, for the re-check of a cached token.
    exp_at: f64,
    nbf_at: Option<f64>,
    derived: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl Claims {
    /// A claim by name.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.all.get(name)
    }

    /// What the caller derives from these claims (the gateway's principal),
    /// made by `make` on first use and kept with them: the same token
    /// served from the verified-token cache hands back the same value, so
    /// the derivation runs once per token, not once per request. `None`
    /// only if a value of another type was kept first. The value must
    /// depend on nothing but the claims and the caller's configuration for
    /// this [`crate::Verifier`] (which a reload replaces, cache and all).
    pub fn derived<T: Any + Send + Sync>(&self, make: impl FnOnce(&Claims) -> T) -> Option<&T> {
        self.derived
            .get_or_init(|| Box::new(make(self)))
            .downcast_ref::<T>()
    }

    /// The time checks again, at `now` (a cached token: everything else
    /// about it was checked when its signature was).
    pub(crate) fn check_time(&self, now: SystemTime, leeway: Duration) -> Result<(), JwtError> {
        let now = seconds(now);
        let leeway = leeway.as_secs_f64();
        check_exp(now, leeway, self.exp_at)?;
        match self.nbf_at {
            Some(nbf) => check_nbf(now, leeway, nbf),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for Claims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claims")
            .field("iss", &self.iss)
            .field("sub", &self.sub)
            .field("aud", &self.aud)
            .field("exp", &self.exp)
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("all", &self.all)
            .finish_non_exhaustive()
    }
}

/// Equal claims: the same token contents (what a caller derived is not compared).
impl PartialEq for Claims {
    fn eq(&self, other: &Self) -> bool {
        self.iss == other.iss
            && self.sub == other.sub
            && self.aud == other.aud
            && self.exp == other.exp
            && self.alg == other.alg
            && self.kid == other.kid
            && self.all == other.all
    }
}

/// Seconds since the Unix epoch (negative before it).
fn seconds(now: SystemTime) -> f64 {
    match now.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// RFC 7519 §4.1.4: the current time must be before `exp`.
fn check_exp(now: f64, leeway: f64, exp: f64) -> Result<(), JwtError> {
    if now >= exp + leeway {
        return Err(JwtError::Expired);
    }
    Ok(())
}

/// §4.1.5: the current time must be on or after `nbf`.
fn check_nbf(now: f64, leeway: f64, nbf: f64) -> Result<(), JwtError> {
    if now + leeway < nbf {
        return Err(JwtError::NotYetValid);
    }
    Ok(())
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
    pub caller_checks_audience: bool,
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
    let now = seconds(now);
    let leeway = expect.leeway.as_secs_f64();

    let exp = numeric_date(&all, "exp")?.ok_or(JwtError::MissingClaim("exp"))?;
    check_exp(now, leeway, exp)?;
    let nbf = numeric_date(&all, "nbf")?;
    if let Some(nbf) = nbf {
        check_nbf(now, leeway, nbf)?;
    }
    // `iat` is informational (Envoy does not check it either); a present
    // `iat` must still be a NumericDate.
    numeric_date(&all, "iat")?;

    let aud = match all.get("aud") {
        None if expect.caller_checks_audience => Vec::new(),
        None => return Err(JwtError::MissingClaim("aud")),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or(JwtError::Malformed))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(JwtError::Malformed),
    };
    if !expect.caller_checks_audience && !aud.iter().any(|a| expect.audiences.contains(a)) {
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
        exp_at: exp,
        nbf_at: nbf,
        derived: OnceLock::new(),
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
