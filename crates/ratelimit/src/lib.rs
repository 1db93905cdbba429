//! Rate limiting for the Palisade gateway.
//!
//! This crate owns the *decision* "may this key spend one request against this quota now?" and
//! nothing else: it does not parse config, build keys from requests, or write responses. The gateway
//! calls it twice per request (see `design.md`, "Data flow: gateway"):
//!
//! * **step 6, `ratelimit (peer)`** — keyed by [`Key::peer`], before inspection, authentication
//!   or any other cryptographic work, so a flood from one address is shed as cheaply as possible;
//! * **step 9, `ratelimit (principal)`** — keyed by [`Key::principal`], [`Key::api_key`] or
//!   [`Key::route`], with limits per route and per consumer, after authn has produced a principal.
//!
//! A rejection is a [`Decision::Deny`]; the gateway turns it into its own `RateLimited` error and
//! the responder writes `429` with the fields from [`headers`] (`Retry-After`, and the IETF
//! `RateLimit` / `RateLimit-Policy` fields of draft-ietf-httpapi-ratelimit-headers).
//!
//! # Algorithm
//!
//! Both stores run the Generic Cell Rate Algorithm ([`gcra`]) with integer microseconds: emission
//! interval `T = period / limit` (rounded up), tolerance `tau = T * burst`. A request at `t` is
//! allowed iff `max(TAT, t) - t <= tau`, after which `TAT' = max(TAT, t) + T`. So `burst + 1`
//! requests pass at once, then one per `T`; over any window `w` at most `burst + 1 + floor(w / T)`
//! pass. Only one number (the theoretical arrival time, TAT) is stored per key.
//!
//! # Stores
//!
//! * [`LocalStore`] — in-process, sharded, bounded memory. Our own GCRA rather than `governor`'s
//!   keyed limiter, because governor fixes one quota per limiter (we need a quota per call),
//!   cannot bound its key map or evict single keys (only `retain_recent` sweeps), and would keep
//!   the arithmetic apart from the Lua that must mirror it. `governor` stays as a dev-dependency:
//!   a test checks our arithmetic against it, decision for decision.
//! * [`RedisStore`] — one Lua script, run with `EVALSHA`, reading the clock with `TIME` on the
//!   server, so any number of gateway processes sharing one Redis admit at most what one would.
//!
//! [`Limiter`] puts a primary store, a [`FailMode`] and a local fallback together; its
//! [`Limiter::check`] never fails. Every fall-back is counted ([`Limiter::fallbacks`]) and logged
//! with `category = "ratelimit_store_unavailable"` (at most once a second, with a count of the
//! suppressed ones).

mod clock;
pub mod gcra;
mod key;
mod limiter;
mod local;
mod redis_store;

use std::time::Duration;

pub use clock::{Clock, ManualClock, TokioClock};
pub use key::Key;
pub use limiter::{DEFAULT_COOLDOWN, FAIL_CLOSED_RETRY_AFTER, FailMode, Limiter};
pub use local::{DEFAULT_CAPACITY, LocalStore};
pub use redis_store::{NAMESPACE, RedisStore};

/// Longest horizon a quota may span, `(burst + 1) * T`: one year. Keeps every timestamp the Lua
/// script handles (epoch microseconds plus this) below 2^53, where Lua's doubles are exact.
const MAX_HORIZON_MICROS: u64 = 366 * 24 * 3600 * 1_000_000;

/// A validated rate: `limit` requests per `period`, plus `burst` requests of tolerance.
///
/// Built only by [`Quota::new`], so every quota in the program is one the stores (and the Lua
/// script's integer arithmetic) can represent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quota {
    limit: u32,
    period: Duration,
    burst: u32,
    /// `T`, microseconds, `>= 1`.
    interval: u64,
}

/// Why a [`Quota`] was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    #[error("rate limit must be at least 1 request per period")]
    ZeroLimit,
    /// `RateLimit-Policy` expresses the window in whole seconds (`w=`), so the period must be one.
    #[error("rate limit period must be a whole number of seconds, at least 1")]
    PeriodNotWholeSeconds,
    #[error("rate limit of {limit} per {period_secs}s is faster than one request per microsecond")]
    TooFast { limit: u32, period_secs: u64 },
    #[error("rate limit period plus burst spans more than one year")]
    TooLong,
}

impl Quota {
    /// `limit` requests per `period` (whole seconds), with `burst` extra requests of tolerance.
    pub fn new(limit: u32, period: Duration, burst: u32) -> Result<Quota, QuotaError> {
        if limit == 0 {
            return Err(QuotaError::ZeroLimit);
        }
        if period.subsec_nanos() != 0 || period.as_secs() == 0 {
            return Err(QuotaError::PeriodNotWholeSeconds);
        }
        let period_micros = period
            .as_secs()
            .checked_mul(1_000_000)
            .filter(|p| *p <= MAX_HORIZON_MICROS)
            .ok_or(QuotaError::TooLong)?;
        if u64::from(limit) > period_micros {
            return Err(QuotaError::TooFast {
                limit,
                period_secs: period.as_secs(),
            });
        }
        // Rounded up: an inexact rate errs towards admitting slightly fewer, never more.
        let interval = period_micros.div_ceil(u64::from(limit));
        (u64::from(burst) + 1)
            .checked_mul(interval)
            .filter(|h| *h <= MAX_HORIZON_MICROS)
            .ok_or(QuotaError::TooLong)?;
        Ok(Quota {
            limit,
            period,
            burst,
            interval,
        })
    }

    /// Requests per period (the steady rate).
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The period `limit` is counted over; a whole number of seconds.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Requests admitted beyond the steady rate (`burst + 1` may arrive at once).
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// `T = period / limit`, rounded up to a whole microsecond.
    pub fn emission_interval(&self) -> Duration {
        Duration::from_micros(self.interval)
    }

    /// `tau = T * burst`.
    pub fn tolerance(&self) -> Duration {
        Duration::from_micros(self.interval_micros() * u64::from(self.burst))
    }

    pub(crate) fn interval_micros(&self) -> u64 {
        self.interval
    }

    /// The `RateLimit-Policy` field value: `"name";q=LIMIT;w=WINDOW_SECS`.
    pub fn policy_header(&self, name: &str) -> String {
        let mut out = String::with_capacity(name.len() + 32);
        push_sf_string(&mut out, name);
        out.push_str(";q=");
        push_u64(&mut out, u64::from(self.limit));
        out.push_str(";w=");
        push_u64(&mut out, self.period.as_secs());
        out
    }
}

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Admitted. `remaining`: how many more requests would be admitted right now; `reset`: time
    /// until the key is back to its full allowance (`burst + 1`).
    Allow { remaining: u32, reset: Duration },
    /// Refused. `retry_after`: earliest time a request can be admitted; `reset` as for `Allow`.
    Deny {
        retry_after: Duration,
        reset: Duration,
    },
}

impl Decision {
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
}

/// Why a store could not decide. [`Limiter`] turns every one of these into its [`FailMode`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid Redis URL")]
    InvalidUrl(#[source] redis::RedisError),
    #[error("rate limit store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("rate limit store error: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("rate limit store gave an unexpected reply: {0}")]
    Protocol(&'static str),
    /// The limiter's circuit breaker is open after a recent failure; the store was not asked.
    #[error("rate limit store marked down after a recent failure")]
    MarkedDown,
}

/// Where rate-limit state lives. Implementations must be atomic per key: two concurrent checks of
/// one key never both spend the same allowance.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    async fn check(&self, key: &str, quota: &Quota) -> Result<Decision, StoreError>;
}

/// Response header fields for a decision, in the structured-field form of
/// draft-ietf-httpapi-ratelimit-headers:
///
/// * `RateLimit: "name";r=REMAINING;t=RESET_SECS`
/// * `RateLimit-Policy: "name";q=LIMIT;w=WINDOW_SECS`
/// * `Retry-After: SECS` on [`Decision::Deny`] only.
///
/// Seconds are rounded up, so a client that waits `Retry-After` is admitted; `Retry-After` is at
/// least 1. `r` is the GCRA allowance left *now* (at most `burst`), which is what a client can
/// spend without waiting; `q` is the steady `limit` per `w`.
pub fn headers(
    decision: &Decision,
    quota: &Quota,
    policy_name: &str,
) -> Vec<(&'static str, String)> {
    // written by hand, not with format!: this runs for every request
    let (remaining, reset, retry_after) = match decision {
        Decision::Allow { remaining, reset } => (*remaining, *reset, None),
        Decision::Deny { retry_after, reset } => (0, *reset, Some(*retry_after)),
    };
    let mut limit = String::with_capacity(policy_name.len() + 24);
    push_sf_string(&mut limit, policy_name);
    limit.push_str(";r=");
    push_u64(&mut limit, u64::from(remaining));
    limit.push_str(";t=");
    push_u64(&mut limit, ceil_secs(reset));
    let mut out = Vec::with_capacity(3);
    out.push(("RateLimit", limit));
    out.push(("RateLimit-Policy", quota.policy_header(policy_name)));
    if let Some(retry_after) = retry_after {
        let mut v = String::with_capacity(8);
        push_u64(&mut v, ceil_secs(retry_after).max(1));
        out.push(("Retry-After", v));
    }
    out
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// An RFC 9651 sf-string: printable ASCII with `"` and `\` escaped. Policy names come from
/// config; anything else is replaced rather than emitted as an invalid field.
fn push_sf_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
}

/// Decimal digits of `n`, appended.
pub(crate) fn push_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits only
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or("0"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn quota_validation() {
        assert_eq!(Quota::new(0, secs(1), 0), Err(QuotaError::ZeroLimit));
        assert_eq!(
            Quota::new(1, Duration::from_millis(1500), 0),
            Err(QuotaError::PeriodNotWholeSeconds)
        );
        assert_eq!(
            Quota::new(1, Duration::ZERO, 0),
            Err(QuotaError::PeriodNotWholeSeconds)
        );
        assert_eq!(
            Quota::new(2_000_000, secs(1), 0),
            Err(QuotaError::TooFast {
                limit: 2_000_000,
                period_secs: 1
            })
        );
        assert_eq!(
            Quota::new(1, secs(400 * 24 * 3600), 0),
            Err(QuotaError::TooLong)
        );
        assert_eq!(
            Quota::new(1, secs(24 * 3600), 400),
            Err(QuotaError::TooLong)
        );
        assert_eq!(Quota::new(1, secs(u64::MAX), 0), Err(QuotaError::TooLong));
        let q = Quota::new(3, secs(1), 2).unwrap();
        assert_eq!(q.emission_interval(), Duration::from_micros(333_334));
        assert_eq!(q.tolerance(), Duration::from_micros(666_668));
        assert_eq!((q.limit(), q.period(), q.burst()), (3, secs(1), 2));
    }

    #[test]
    fn decimal_digits() {
        for n in [0u64, 7, 10, 99, 100, 4_294_967_295, u64::MAX] {
            let mut s = String::from("x");
            push_u64(&mut s, n);
            assert_eq!(s, format!("x{n}"));
        }
    }

    #[test]
    fn policy_header_is_a_structured_field() {
        let q = Quota::new(100, secs(60), 10).unwrap();
        assert_eq!(q.policy_header("per-route"), "\"per-route\";q=100;w=60");
        assert_eq!(
            q.policy_header("a\"b\\c\u{e9}"),
            "\"a\\\"b\\\\c?\";q=100;w=60"
        );
    }

    #[test]
    fn headers_on_allow() {
        let q = Quota::new(100, secs(60), 10).unwrap();
        let d = Decision::Allow {
            remaining: 7,
            reset: Duration::from_millis(2_400),
        };
        assert_eq!(
            headers(&d, &q, "default"),
            vec![
                ("RateLimit", "\"default\";r=7;t=3".to_string()),
                ("RateLimit-Policy", "\"default\";q=100;w=60".to_string()),
            ]
        );
    }

    #[test]
    fn headers_on_deny() {
        let q = Quota::new(10, secs(1), 0).unwrap();
        let d = Decision::Deny {
            retry_after: Duration::from_millis(100),
            reset: Duration::from_millis(100),
        };
        assert_eq!(
            headers(&d, &q, "peer"),
            vec![
                ("RateLimit", "\"peer\";r=0;t=1".to_string()),
                ("RateLimit-Policy", "\"peer\";q=10;w=1".to_string()),
                ("Retry-After", "1".to_string()),
            ]
        );
        // Whole seconds stay whole; a zero wait still says 1.
        let d = Decision::Deny {
            retry_after: secs(30),
            reset: Duration::from_micros(30_000_001),
        };
        assert_eq!(headers(&d, &q, "peer")[0].1, "\"peer\";r=0;t=31");
        assert_eq!(
            headers(&d, &q, "peer")[2],
            ("Retry-After", "30".to_string())
        );
        let d = Decision::Deny {
            retry_after: Duration::ZERO,
            reset: Duration::ZERO,
        };
        assert_eq!(headers(&d, &q, "peer")[2], ("Retry-After", "1".to_string()));
    }
}
