//! In-process GCRA store with bounded memory.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::clock::{Clock, TokioClock, micros};
use crate::gcra::{Gcra, Step};
use crate::limiter::LogGate;
use crate::{Decision, Quota, Store, StoreError};

/// Key -> TAT (µs on the store's clock).
type Shard = HashMap<Box<str>, u64>;

/// Keys a [`LocalStore::new`] holds at most.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// Keys per shard below which one shard is used (small stores, tests).
const MIN_SHARD: usize = 1024;
const MAX_SHARDS: usize = 16;

/// In-process rate-limit state: one TAT per key, in a fixed number of mutex-guarded shards.
///
/// Memory is bounded by `capacity` keys. When a shard is full, keys whose TAT has passed are
/// dropped first — that loses nothing, an expired key behaves exactly like an unknown one. Only if
/// every key is still active (more than `capacity` clients inside their window, e.g. an address
/// spray) are the eighth of keys closest to expiry evicted ([`LocalStore::evictions`] counts them;
/// a log line with `category = "ratelimit_local_capacity"` says so). Evicting those leaks the
/// least allowance; refusing new keys instead would let a spray lock everyone else out.
#[derive(Debug)]
pub struct LocalStore {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    hasher: RandomState,
    clock: Arc<dyn Clock>,
    evictions: AtomicU64,
    log: LogGate,
}

impl LocalStore {
    /// [`DEFAULT_CAPACITY`] keys, tokio's clock.
    pub fn new() -> LocalStore {
        LocalStore::with_capacity(DEFAULT_CAPACITY)
    }

    /// At most `capacity` keys (at least 1), tokio's clock.
    pub fn with_capacity(capacity: usize) -> LocalStore {
        LocalStore::with_clock(capacity, Arc::new(TokioClock::new()))
    }

    /// At most `capacity` keys (at least 1), the given clock.
    pub fn with_clock(capacity: usize, clock: Arc<dyn Clock>) -> LocalStore {
        let capacity = capacity.max(1);
        let shards = (capacity / MIN_SHARD).clamp(1, MAX_SHARDS);
        LocalStore {
            shards: (0..shards).map(|_| Mutex::new(HashMap::new())).collect(),
            // Rounded down, so the total never exceeds `capacity`.
            per_shard: capacity / shards,
            hasher: RandomState::new(),
            clock,
            evictions: AtomicU64::new(0),
            log: LogGate::new(),
        }
    }

    /// Spends one request for `key` against `quota` now. Never fails; never waits for anything
    /// but its shard's lock.
    pub fn decide(&self, key: &str, quota: &Quota) -> Decision {
        let gcra = Gcra::new(quota);
        let shard = &self.shards[self.shard_of(key)];
        // A panic cannot leave a half-written u64 behind, so a poisoned map is still valid.
        let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
        // Read the clock under the lock: TATs in one shard are then written in time order.
        let now = micros(self.clock.now());
        // one lookup for a known key (the common case): its slot is updated
        // in place
        let step = match map.get_mut(key) {
            Some(slot) => {
                let step = gcra.step(Some(*slot), now);
                if let Step::Allow { tat, .. } = step {
                    *slot = tat;
                }
                step
            }
            None => {
                let step = gcra.step(None, now);
                if let Step::Allow { tat, .. } = step {
                    self.make_room(&mut map, now);
                    map.insert(key.into(), tat);
                }
                step
            }
        };
        gcra.decision(step)
    }

    /// Keys currently held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Active keys evicted because the store was full.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    fn shard_of(&self, key: &str) -> usize {
        // Keyed hash (RandomState), so clients cannot aim many keys at one shard.
        (self.hasher.hash_one(key) % self.shards.len() as u64) as usize
    }

    fn make_room(&self, map: &mut Shard, now: u64) {
        if map.len() < self.per_shard {
            return;
        }
        map.retain(|_, tat| *tat > now);
        if map.len() < self.per_shard {
            return;
        }
        // Everyone is active: evict the eighth closest to expiry, in one pass, so the sweep
        // above runs at most once per `per_shard / 8` inserts.
        let evict = (map.len() / 8).max(1);
        let mut tats: Vec<u64> = map.values().copied().collect();
        let (_, &mut threshold, _) = tats.select_nth_unstable(evict - 1);
        let below = tats[..evict].iter().filter(|t| **t < threshold).count();
        let mut at_threshold = evict - below;
        map.retain(|_, tat| {
            if *tat < threshold {
                false
            } else if *tat == threshold && at_threshold > 0 {
                at_threshold -= 1;
                false
            } else {
                true
            }
        });
        self.evictions.fetch_add(evict as u64, Ordering::Relaxed);
        if let Some(suppressed) = self.log.admit() {
            tracing::warn!(
                category = "ratelimit_local_capacity",
                evicted = evict,
                capacity = self.per_shard * self.shards.len(),
                suppressed,
                "local rate limit store is full of active keys; evicting those closest to expiry"
            );
        }
    }
}

impl Default for LocalStore {
    fn default() -> Self {
        LocalStore::new()
    }
}

#[async_trait::async_trait]
impl Store for LocalStore {
    async fn check(&self, key: &str, quota: &Quota) -> Result<Decision, StoreError> {
        Ok(self.decide(key, quota))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ManualClock;

    fn store(capacity: usize) -> (LocalStore, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new());
        (LocalStore::with_clock(capacity, clock.clone()), clock)
    }

    fn quota(limit: u32, period_secs: u64, burst: u32) -> Quota {
        Quota::new(limit, Duration::from_secs(period_secs), burst).unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn keys_are_isolated() {
        let (s, _) = store(100);
        let q = quota(1, 1, 1);
        assert!(s.decide("a", &q).is_allow());
        assert!(s.decide("a", &q).is_allow());
        assert_eq!(
            s.decide("a", &q),
            Decision::Deny {
                retry_after: ms(1000),
                reset: ms(2000)
            }
        );
        // "b" is untouched by "a" being exhausted.
        assert_eq!(
            s.decide("b", &q),
            Decision::Allow {
                remaining: 1,
                reset: ms(1000)
            }
        );
    }

    #[test]
    fn each_key_uses_the_quota_it_is_checked_with() {
        let (s, clock) = store(100);
        let strict = quota(1, 10, 0); // T = 10s
        let loose = quota(100, 1, 4); // T = 10ms, 5 at once
        let strict_seen: Vec<bool> = (0..3)
            .map(|_| s.decide("strict", &strict).is_allow())
            .collect();
        let loose_seen: Vec<bool> = (0..6)
            .map(|_| s.decide("loose", &loose).is_allow())
            .collect();
        assert_eq!(strict_seen, [true, false, false]);
        assert_eq!(loose_seen, [true, true, true, true, true, false]);
        clock.advance(ms(10));
        assert!(s.decide("loose", &loose).is_allow());
        assert_eq!(
            s.decide("strict", &strict),
            Decision::Deny {
                retry_after: ms(9_990),
                reset: ms(9_990)
            }
        );
    }

    #[test]
    fn memory_is_bounded_under_a_key_spray() {
        let (s, _) = store(5_000);
        let q = quota(1, 60, 0);
        for i in 0..100_000 {
            assert!(s.decide(&format!("peer:{i}"), &q).is_allow());
        }
        assert!(s.len() <= 5_000, "{} keys held", s.len());
        assert!(s.len() >= 5_000 * 7 / 8 - 16, "{} keys held", s.len());
        // Nothing expired, so every key not held was evicted, and counted.
        assert_eq!(s.evictions() + s.len() as u64, 100_000);
    }

    #[test]
    fn expired_keys_go_first_and_active_ones_stay() {
        let (s, clock) = store(8); // one shard of 8
        let hot = quota(1, 3600, 0);
        let brief = quota(1000, 1, 0); // T = 1ms
        assert!(s.decide("hot", &hot).is_allow());
        for i in 0..7 {
            assert!(s.decide(&format!("brief{i}"), &brief).is_allow());
        }
        assert_eq!(s.len(), 8);
        clock.advance(ms(5)); // every "brief" key is now expired
        for i in 0..7 {
            assert!(s.decide(&format!("new{i}"), &brief).is_allow());
        }
        assert_eq!(
            s.evictions(),
            0,
            "expired keys are dropped without evicting"
        );
        assert_eq!(s.len(), 8);
        assert_eq!(
            s.decide("hot", &hot),
            Decision::Deny {
                retry_after: ms(3_600_000 - 5),
                reset: ms(3_600_000 - 5)
            }
        );
    }

    #[test]
    fn eviction_picks_keys_closest_to_expiry() {
        let (s, _) = store(8);
        let hot = quota(1, 3600, 0);
        let brief = quota(1000, 1, 0);
        assert!(s.decide("hot", &hot).is_allow());
        for i in 0..40 {
            assert!(s.decide(&format!("k{i}"), &brief).is_allow());
        }
        assert!(s.len() <= 8);
        assert_eq!(s.evictions(), 33);
        assert!(
            !s.decide("hot", &hot).is_allow(),
            "the longest-lived key was kept"
        );
    }
}
