//! The GCRA arithmetic, as one pure function of (stored TAT, now), in integer microseconds.
//!
//! [`LocalStore`](crate::LocalStore) calls [`Gcra::step`] directly; the Lua script in
//! [`RedisStore`](crate::RedisStore) is a line-for-line copy of it (the Redis tests run both on
//! the same inputs) and returns `ahead`, which [`Gcra::allowed`] / [`Gcra::denied`] turn into a
//! [`Decision`] on the gateway side, so `remaining`, `reset` and `retry_after` are computed by
//! this one piece of code for both stores.

use std::time::Duration;

use crate::{Decision, Quota};

/// A quota in the units the algorithm works in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gcra {
    /// Emission interval `T`, microseconds, `>= 1`.
    pub interval: u64,
    /// Tolerance `tau = T * burst`, microseconds.
    pub tolerance: u64,
}

/// What one request does to one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Admitted; store `tat`. `ahead = tat - now`.
    Allow { tat: u64, ahead: u64 },
    /// Refused; store nothing. `ahead = max(TAT, now) - now`, which exceeds the tolerance.
    Deny { ahead: u64 },
}

impl Gcra {
    pub fn new(quota: &Quota) -> Gcra {
        let interval = quota.interval_micros();
        Gcra {
            interval,
            tolerance: interval * u64::from(quota.burst()),
        }
    }

    /// One request at `now` against a key whose stored TAT is `stored` (`None`: never seen, or
    /// expired — the two are the same, which is why idle keys may be dropped).
    pub fn step(&self, stored: Option<u64>, now: u64) -> Step {
        let tat = stored.map_or(now, |s| s.max(now));
        let ahead = tat - now;
        if ahead > self.tolerance {
            Step::Deny { ahead }
        } else {
            let tat = tat.saturating_add(self.interval);
            Step::Allow {
                tat,
                ahead: tat - now,
            }
        }
    }

    /// The [`Decision`] for a step.
    pub fn decision(&self, step: Step) -> Decision {
        match step {
            Step::Allow { ahead, .. } => self.allowed(ahead),
            Step::Deny { ahead } => self.denied(ahead),
        }
    }

    /// An admitted request that left the key's TAT `ahead` microseconds in the future.
    /// Another request is admitted now while `ahead + k*T <= tau + T`.
    pub fn allowed(&self, ahead: u64) -> Decision {
        let headroom = (self.tolerance + self.interval).saturating_sub(ahead);
        Decision::Allow {
            remaining: u32::try_from(headroom / self.interval).unwrap_or(u32::MAX),
            reset: Duration::from_micros(ahead),
        }
    }

    /// A refused request; the key's TAT is `ahead` microseconds in the future.
    pub fn denied(&self, ahead: u64) -> Decision {
        Decision::Deny {
            retry_after: Duration::from_micros(ahead.saturating_sub(self.tolerance)),
            reset: Duration::from_micros(ahead),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    /// Runs requests at the given times against one key; returns the decisions.
    fn run(quota: &Quota, times: &[u64]) -> Vec<Decision> {
        let g = Gcra::new(quota);
        let mut tat = None;
        times
            .iter()
            .map(|&now| {
                let step = g.step(tat, now);
                if let Step::Allow { tat: t, .. } = step {
                    tat = Some(t);
                }
                g.decision(step)
            })
            .collect()
    }

    fn allow(remaining: u32, reset_us: u64) -> Decision {
        Decision::Allow {
            remaining,
            reset: Duration::from_micros(reset_us),
        }
    }

    fn deny(retry_us: u64, reset_us: u64) -> Decision {
        Decision::Deny {
            retry_after: Duration::from_micros(retry_us),
            reset: Duration::from_micros(reset_us),
        }
    }

    #[test]
    fn burst_admits_burst_plus_one_then_denies_with_exact_retry_after() {
        // 10 per second: T = 100ms; burst 3: tau = 300ms.
        let q = Quota::new(10, Duration::from_secs(1), 3).unwrap();
        let t0 = 5 * S;
        assert_eq!(
            run(&q, &[t0; 6]),
            vec![
                allow(3, 100_000),
                allow(2, 200_000),
                allow(1, 300_000),
                allow(0, 400_000),
                deny(100_000, 400_000),
                deny(100_000, 400_000),
            ]
        );
        // 40ms later the wait is 60ms; at exactly retry_after one more is admitted, then none.
        assert_eq!(
            run(
                &q,
                &[t0, t0, t0, t0, t0 + 40_000, t0 + 100_000, t0 + 100_000]
            ),
            vec![
                allow(3, 100_000),
                allow(2, 200_000),
                allow(1, 300_000),
                allow(0, 400_000),
                deny(60_000, 360_000),
                allow(0, 400_000),
                deny(100_000, 400_000),
            ]
        );
    }

    #[test]
    fn steady_rate_admits_exactly_one_per_interval() {
        let q = Quota::new(4, Duration::from_secs(1), 0).unwrap(); // T = 250ms, no burst
        let mut times = Vec::new();
        for i in 0..8u64 {
            // Requests every 50ms for two seconds: only those at multiples of T pass.
            for j in 0..5u64 {
                times.push(i * 250_000 + j * 50_000);
            }
        }
        let decisions = run(&q, &times);
        let admitted: Vec<u64> = times
            .iter()
            .zip(&decisions)
            .filter(|(_, d)| d.is_allow())
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(admitted, (0..8).map(|i| i * 250_000).collect::<Vec<_>>());
        assert_eq!(decisions[0], allow(0, 250_000));
        assert_eq!(decisions[1], deny(200_000, 200_000));
        assert_eq!(decisions[4], deny(50_000, 50_000));
    }

    #[test]
    fn allowance_refills_at_one_per_interval_and_idle_key_resets() {
        let q = Quota::new(1, Duration::from_secs(1), 2).unwrap(); // T = 1s, tau = 2s
        assert_eq!(
            run(
                &q,
                &[0, 0, 0, 0, S, S, 2 * S + S / 2, 4 * S + S / 2, 10 * S]
            ),
            vec![
                allow(2, S),
                allow(1, 2 * S),
                allow(0, 3 * S),
                deny(S, 3 * S),
                // One T later exactly one more fits.
                allow(0, 3 * S),
                deny(S, 3 * S),
                allow(0, 5 * S / 2),
                // Two T later (TAT was 5s) one request of allowance has come back.
                allow(1, 3 * S / 2),
                // Long idle: TAT is in the past, same as a fresh key.
                allow(2, S),
            ]
        );
    }

    #[test]
    fn at_most_burst_plus_one_plus_window_over_interval() {
        // The bound the distributed test relies on, checked exhaustively for a dense arrival.
        let q = Quota::new(20, Duration::from_secs(1), 5).unwrap(); // T = 50ms
        let times: Vec<u64> = (0..=1_000).map(|i| i * 1_000).collect(); // every 1ms for 1s
        let decisions = run(&q, &times);
        for (start, _) in times.iter().enumerate() {
            for end in start..times.len() {
                let n = decisions[start..=end]
                    .iter()
                    .filter(|d| d.is_allow())
                    .count() as u64;
                let window = times[end] - times[start];
                assert!(n <= 5 + 1 + window / 50_000, "{n} in {window}us");
            }
        }
        let total = decisions.iter().filter(|d| d.is_allow()).count();
        assert_eq!(total, 5 + 1 + 20);
    }

    #[test]
    fn matches_governor_decision_for_decision() {
        use governor::clock::FakeRelativeClock;
        use governor::{Quota as GQuota, RateLimiter};
        use std::num::NonZeroU32;

        let q = Quota::new(10, Duration::from_secs(1), 4).unwrap();
        let clock = FakeRelativeClock::default();
        let gq = GQuota::with_period(q.emission_interval())
            .unwrap()
            .allow_burst(NonZeroU32::new(q.burst() + 1).unwrap());
        let limiter = RateLimiter::direct_with_clock(gq, clock.clone());
        // An irregular arrival pattern (deterministic LCG), 2000 requests over ~20s.
        let mut times = Vec::new();
        let (mut t, mut x) = (0u64, 12345u64);
        for _ in 0..2000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            t += (x >> 33) % 20_000;
            times.push(t);
        }
        let ours = run(&q, &times);
        let mut prev = 0;
        for (now, d) in times.iter().zip(&ours) {
            clock.advance(Duration::from_micros(now - prev));
            prev = *now;
            assert_eq!(limiter.check().is_ok(), d.is_allow(), "at {now}us");
        }
    }
}
