//! A primary store, what to do when it cannot answer, and the record that it could not.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::clock::{Clock, TokioClock, micros};
use crate::{Decision, LocalStore, Quota, RedisStore, Store, StoreError};

/// What [`Limiter::check`] answers when the primary store errors or times out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FailMode {
    /// Admit every request. Weakens the control: the gateway's config should make an operator
    /// spell this out (e.g. `dangerous_fail_open`).
    FailOpen,
    /// Refuse every request with `retry_after` = [`FAIL_CLOSED_RETRY_AFTER`] (1s): long enough not
    /// to invite a retry storm, short enough that clients come back soon after Redis does.
    FailClosed,
    /// Limit with this process's own [`LocalStore`]. With `n` gateway processes the fleet then
    /// admits up to `n` times the quota until Redis is back. The default.
    #[default]
    LocalFallback,
}

/// `retry_after` and `reset` of a [`FailMode::FailClosed`] denial.
pub const FAIL_CLOSED_RETRY_AFTER: Duration = Duration::from_secs(1);

/// After a failure the primary store is not asked again for this long (see
/// [`Limiter::with_cooldown`]).
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(1);

/// The gateway's rate limiter: a primary [`Store`], a [`FailMode`] and a [`LocalStore`] for
/// [`FailMode::LocalFallback`].
///
/// After the primary fails, it is treated as down for a cooldown, so a Redis that hangs costs one
/// timeout per cooldown rather than one per request; the first check after the cooldown tries it
/// again.
pub struct Limiter {
    primary: Box<dyn Store>,
    fail: FailMode,
    fallback: LocalStore,
    clock: Arc<dyn Clock>,
    cooldown: Duration,
    /// Clock time (µs) until which the primary is treated as down; 0: not down.
    down_until: AtomicU64,
    fallbacks: AtomicU64,
    log: LogGate,
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("fail", &self.fail)
            .field("cooldown", &self.cooldown)
            .field("fallbacks", &self.fallbacks())
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// In-process only: a [`LocalStore`] that never fails.
    pub fn local() -> Limiter {
        Limiter::new(LocalStore::new(), FailMode::LocalFallback)
    }

    /// Redis at `url`, every call bounded by `timeout`. Does not need Redis to be up: until it
    /// is, `fail` applies. Errors only on an unusable URL.
    pub async fn redis(
        url: &str,
        fail: FailMode,
        timeout: Duration,
    ) -> Result<Limiter, StoreError> {
        Ok(Limiter::new(RedisStore::open(url, timeout).await?, fail))
    }

    /// Any primary store.
    pub fn new(primary: impl Store + 'static, fail: FailMode) -> Limiter {
        Limiter {
            primary: Box::new(primary),
            fail,
            fallback: LocalStore::new(),
            clock: Arc::new(TokioClock::new()),
            cooldown: DEFAULT_COOLDOWN,
            down_until: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            log: LogGate::new(),
        }
    }

    /// Replaces the [`LocalStore`] used by [`FailMode::LocalFallback`].
    pub fn with_fallback(mut self, fallback: LocalStore) -> Limiter {
        self.fallback = fallback;
        self
    }

    /// How long the primary is left alone after a failure; `Duration::ZERO` asks it every time.
    pub fn with_cooldown(mut self, cooldown: Duration) -> Limiter {
        self.cooldown = cooldown;
        self
    }

    /// The clock the cooldown is measured with.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Limiter {
        self.clock = clock;
        self
    }

    pub fn fail_mode(&self) -> FailMode {
        self.fail
    }

    /// Checks decided by the [`FailMode`] instead of the primary store, since start.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// Spends one request for `key` against `quota`. Never fails: when the primary store cannot
    /// answer, the [`FailMode`] decides, and the fall-back is counted and logged.
    pub async fn check(&self, key: &str, quota: &Quota) -> Decision {
        let now = micros(self.clock.now());
        if now < self.down_until.load(Ordering::Relaxed) {
            return self.fall_back(&StoreError::MarkedDown, key, quota);
        }
        match self.primary.check(key, quota).await {
            Ok(decision) => decision,
            Err(err) => {
                if !self.cooldown.is_zero() {
                    let until = micros(self.clock.now()).saturating_add(micros(self.cooldown));
                    self.down_until.fetch_max(until, Ordering::Relaxed);
                }
                self.fall_back(&err, key, quota)
            }
        }
    }

    fn fall_back(&self, err: &StoreError, key: &str, quota: &Quota) -> Decision {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = self.log.admit() {
            // No key in the log: it may name a principal; the error never carries the URL.
            tracing::warn!(
                category = "ratelimit_store_unavailable",
                fail_mode = ?self.fail,
                error = %err,
                suppressed,
                "rate limit store unavailable; applying fail mode"
            );
        }
        match self.fail {
            FailMode::FailOpen => Decision::Allow {
                // What a fresh key would show: nothing is known about this one.
                remaining: quota.burst(),
                reset: quota.emission_interval(),
            },
            FailMode::FailClosed => Decision::Deny {
                retry_after: FAIL_CLOSED_RETRY_AFTER,
                reset: FAIL_CLOSED_RETRY_AFTER,
            },
            FailMode::LocalFallback => self.fallback.decide(key, quota),
        }
    }
}

/// Lets one log line through per second and counts the ones it held back.
#[derive(Debug)]
pub(crate) struct LogGate {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

const LOG_EVERY: Duration = Duration::from_secs(1);

impl LogGate {
    pub(crate) fn new() -> LogGate {
        LogGate {
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines suppressed since the last one)` if this line may be logged.
    pub(crate) fn admit(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match *last {
            Some(at) if now.duration_since(at) < LOG_EVERY => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.suppressed.swap(0, Ordering::Relaxed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::ManualClock;

    /// A primary that fails while `down` is set, and counts how often it is asked.
    #[derive(Default)]
    struct Flaky {
        down: AtomicBool,
        calls: AtomicU64,
    }

    #[async_trait::async_trait]
    impl Store for Arc<Flaky> {
        async fn check(&self, _key: &str, _quota: &Quota) -> Result<Decision, StoreError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                Err(StoreError::Timeout(Duration::from_millis(50)))
            } else {
                Ok(Decision::Allow {
                    remaining: 42,
                    reset: Duration::from_secs(42),
                })
            }
        }
    }

    fn quota() -> Quota {
        Quota::new(1, Duration::from_secs(10), 2).unwrap()
    }

    fn limiter(fail: FailMode) -> (Limiter, Arc<Flaky>, Arc<ManualClock>) {
        let flaky = Arc::new(Flaky::default());
        flaky.down.store(true, Ordering::SeqCst);
        let clock = Arc::new(ManualClock::new());
        let limiter = Limiter::new(flaky.clone(), fail)
            .with_clock(clock.clone())
            .with_fallback(LocalStore::with_clock(100, clock.clone()));
        (limiter, flaky, clock)
    }

    #[tokio::test]
    async fn fail_open_allows() {
        let (l, _, _) = limiter(FailMode::FailOpen);
        for _ in 0..5 {
            assert_eq!(
                l.check("k", &quota()).await,
                Decision::Allow {
                    remaining: 2,
                    reset: Duration::from_secs(10)
                }
            );
        }
        assert_eq!(l.fallbacks(), 5);
    }

    #[tokio::test]
    async fn fail_closed_denies() {
        let (l, _, _) = limiter(FailMode::FailClosed);
        assert_eq!(
            l.check("k", &quota()).await,
            Decision::Deny {
                retry_after: Duration::from_secs(1),
                reset: Duration::from_secs(1)
            }
        );
        assert_eq!(l.fallbacks(), 1);
    }

    #[tokio::test]
    async fn local_fallback_limits_locally() {
        let (l, _, clock) = limiter(FailMode::LocalFallback);
        let q = quota();
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(l.check("k", &q).await);
        }
        let s = Duration::from_secs;
        assert_eq!(
            seen,
            vec![
                Decision::Allow {
                    remaining: 2,
                    reset: s(10)
                },
                Decision::Allow {
                    remaining: 1,
                    reset: s(20)
                },
                Decision::Allow {
                    remaining: 0,
                    reset: s(30)
                },
                Decision::Deny {
                    retry_after: s(10),
                    reset: s(30)
                },
            ]
        );
        clock.advance(s(10));
        assert!(l.check("k", &q).await.is_allow());
        assert_eq!(l.fallbacks(), 5);
    }

    #[tokio::test]
    async fn primary_is_left_alone_for_the_cooldown_then_retried() {
        let (l, flaky, clock) = limiter(FailMode::FailClosed);
        let q = quota();
        assert!(!l.check("k", &q).await.is_allow());
        assert!(!l.check("k", &q).await.is_allow());
        assert_eq!(
            flaky.calls.load(Ordering::SeqCst),
            1,
            "second check skipped the primary"
        );
        flaky.down.store(false, Ordering::SeqCst);
        clock.advance(DEFAULT_COOLDOWN - Duration::from_micros(1));
        assert!(!l.check("k", &q).await.is_allow());
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 1);
        clock.advance(Duration::from_micros(1));
        assert_eq!(
            l.check("k", &q).await,
            Decision::Allow {
                remaining: 42,
                reset: Duration::from_secs(42)
            }
        );
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 2);
        assert_eq!(l.fallbacks(), 3);
    }

    #[tokio::test]
    async fn zero_cooldown_asks_the_primary_every_time() {
        let (l, flaky, _) = limiter(FailMode::FailOpen);
        let l = l.with_cooldown(Duration::ZERO);
        for _ in 0..3 {
            l.check("k", &quota()).await;
        }
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);
        assert_eq!(l.fallbacks(), 3);
    }

    #[tokio::test]
    async fn local_limiter_never_falls_back() {
        let l = Limiter::local();
        let q = quota();
        let mut allowed = 0;
        for _ in 0..10 {
            allowed += usize::from(l.check("k", &q).await.is_allow());
        }
        assert_eq!(allowed, 3);
        assert_eq!(l.fallbacks(), 0);
    }

    #[test]
    fn log_gate_lets_one_through_and_counts_the_rest() {
        let g = LogGate::new();
        assert_eq!(g.admit(), Some(0));
        assert_eq!(g.admit(), None);
        assert_eq!(g.admit(), None);
        assert_eq!(g.suppressed.load(Ordering::Relaxed), 2);
    }
}
