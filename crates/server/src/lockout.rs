//! User lockout (Vault's, for userpass and approle): after
//! `lockout_threshold` failed logins for one identity, with less than
//! `lockout_counter_reset_duration` between them, logins for that identity
//! are refused with 403 `permission denied` for `lockout_duration`, before
//! any credential is checked, whether or not the next one is right. A
//! successful login resets the counter.
//!
//! The identity is the username (userpass; unknown names count too, so
//! lockout tells nothing about which users exist) or the role (approle,
//! once the role ID named it: a secret ID guessed for a known role ID).
//!
//! Defaults as Vault's: 5 failures, 15 minutes locked, counter reset after
//! 15 minutes; tuned per method with `sys/auth/<path>/tune`
//! `user_lockout_config`. Counters live in memory: a restart or seal
//! forgets them (Vault keeps them in storage), the table is bounded
//! (stale entries go first, then unlocked ones), and `sys/locked-users`
//! lists and unlocks.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::logical::{ApiError, fields};

/// Vault's defaults.
pub const DEFAULT_THRESHOLD: u64 = 5;
pub const DEFAULT_DURATION: i64 = 15 * 60;
pub const DEFAULT_COUNTER_RESET: i64 = 15 * 60;
/// Most identities tracked at once.
pub const MAX_TRACKED: usize = 65_536;

/// A method's lockout settings as tuned (0 / false: the default).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct LockoutConfig {
    pub lockout_threshold: u64,
    pub lockout_duration: i64,
    pub lockout_counter_reset_duration: i64,
    pub lockout_disable: bool,
}

impl LockoutConfig {
    fn threshold(&self) -> u64 {
        match self.lockout_threshold {
            0 => DEFAULT_THRESHOLD,
            n => n,
        }
    }
    fn duration(&self) -> i64 {
        match self.lockout_duration {
            0 => DEFAULT_DURATION,
            n => n,
        }
    }
    fn counter_reset(&self) -> i64 {
        match self.lockout_counter_reset_duration {
            0 => DEFAULT_COUNTER_RESET,
            n => n,
        }
    }

    /// Apply `user_lockout_config` from a tune request.
    pub fn apply(&mut self, v: &Value) -> Result<(), ApiError> {
        let Value::Object(o) = v else {
            return Err(ApiError::bad_request(
                "user_lockout_config must be an object",
            ));
        };
        for (k, x) in o {
            match k.as_str() {
                "lockout_threshold" => {
                    let n = fields::int(x, k)?;
                    self.lockout_threshold = u64::try_from(n).map_err(|_| {
                        ApiError::bad_request("lockout_threshold cannot be negative")
                    })?;
                }
                "lockout_duration" => self.lockout_duration = fields::duration_secs(x, k)?,
                "lockout_counter_reset_duration" | "lockout_counter_reset" => {
                    self.lockout_counter_reset_duration = fields::duration_secs(x, k)?
                }
                "lockout_disable" => self.lockout_disable = fields::boolean(x, k)?,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "unknown user_lockout_config field {k:?}"
                    ))
                    .audited_as("unknown user_lockout_config field"));
                }
            }
        }
        Ok(())
    }

    /// The settings in force, as `sys/auth/<path>/tune` reads them.
    pub fn tune_json(&self) -> Value {
        json!({
            "user_lockout_threshold": self.threshold(),
            "user_lockout_duration": self.duration(),
            "user_lockout_counter_reset_duration": self.counter_reset(),
            "user_lockout_disable": self.lockout_disable,
        })
    }
}

#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u64,
    last: i64,
    locked_until: i64,
    /// Logins for this identity being checked now: each holds one of the
    /// `threshold - count` attempts left, so a burst of guesses sent at
    /// once is cut at the threshold like guesses sent one by one.
    in_flight: u64,
}

/// How long a login waits for one of its identity's attempts (others of
/// the same identity are being checked), before 429.
pub const ATTEMPT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The failure counters of every auth method, keyed by the method's
/// accessor and the identity.
#[derive(Default)]
pub struct Lockouts {
    table: Mutex<HashMap<(String, String), Failures>>,
}

/// One login's attempt, taken by [`Lockouts::begin`]: report how it went
/// with [`Attempt::failed`] or [`Attempt::succeeded`]; dropped without
/// either (an internal error, a client that left), it counts as neither.
pub struct Attempt<'a> {
    lockouts: &'a Lockouts,
    key: Option<(String, String)>,
    cfg: LockoutConfig,
}

impl Attempt<'_> {
    /// A failed login: counted; the identity may now be locked.
    pub fn failed(mut self, now: i64) -> bool {
        match self.key.take() {
            Some(key) => self.lockouts.record_failure(&self.cfg, key, now),
            None => false,
        }
    }
    /// A successful login: the counter starts again.
    pub fn succeeded(mut self) {
        if let Some(key) = self.key.take() {
            self.lockouts.table().remove(&key);
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take()
            && let Some(f) = self.lockouts.table().get_mut(&key)
        {
            f.in_flight = f.in_flight.saturating_sub(1);
        }
    }
}

enum Reserve {
    Taken,
    Locked,
    Busy,
}

impl Lockouts {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Failures>> {
        // a poisoned table is still a table of counters
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take an attempt for a login of `identity`, before any credential is
    /// looked at: 403 while it is locked; while all its attempts left are
    /// being checked by other logins, wait for one (up to
    /// [`ATTEMPT_WAIT`], then 429).
    pub async fn begin<'a>(
        &'a self,
        cfg: &LockoutConfig,
        accessor: &str,
        identity: &str,
        now: &(dyn Fn() -> i64 + Sync),
    ) -> Result<Attempt<'a>, ApiError> {
        let key = (accessor.to_string(), identity.to_string());
        if cfg.lockout_disable {
            return Ok(Attempt {
                lockouts: self,
                key: None,
                cfg: cfg.clone(),
            });
        }
        let deadline = tokio::time::Instant::now() + ATTEMPT_WAIT;
        loop {
            match self.try_reserve(cfg, &key, now()) {
                Reserve::Taken => {
                    return Ok(Attempt {
                        lockouts: self,
                        key: Some(key),
                        cfg: cfg.clone(),
                    });
                }
                Reserve::Locked => return Err(ApiError::permission_denied()),
                Reserve::Busy if tokio::time::Instant::now() >= deadline => {
                    return Err(ApiError::new(
                        429,
                        "too many logins in progress; retry later",
                    ));
                }
                Reserve::Busy => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
    }

    fn try_reserve(&self, cfg: &LockoutConfig, key: &(String, String), now: i64) -> Reserve {
        let mut t = self.table();
        self.bound(&mut t, cfg, now);
        let f = t.entry(key.clone()).or_insert(Failures {
            count: 0,
            last: now,
            locked_until: 0,
            in_flight: 0,
        });
        if f.locked_until > now {
            return Reserve::Locked;
        }
        if f.locked_until != 0 || (f.count > 0 && now - f.last >= cfg.counter_reset()) {
            // the lock has passed, or the counter has gone quiet: start again
            f.count = 0;
            f.locked_until = 0;
        }
        if f.count + f.in_flight >= cfg.threshold() {
            return Reserve::Busy;
        }
        f.in_flight += 1;
        Reserve::Taken
    }

    /// Keep the table under [`MAX_TRACKED`]: stale entries go first, then
    /// those with the fewest failures and the oldest (never one with a
    /// login in flight), down to nine tenths of the bound.
    fn bound(&self, t: &mut HashMap<(String, String), Failures>, cfg: &LockoutConfig, now: i64) {
        if t.len() < MAX_TRACKED {
            return;
        }
        t.retain(|_, f| {
            f.in_flight > 0 || f.locked_until > now || now - f.last < cfg.counter_reset()
        });
        if t.len() < MAX_TRACKED {
            return;
        }
        // eviction order: held entries last, then by failures, then by age
        type Rank = (bool, u64, i64);
        let mut order: Vec<(&(String, String), Rank)> = t
            .iter()
            .map(|(k, f)| {
                (
                    k,
                    (f.in_flight > 0 || f.locked_until > now, f.count, f.last),
                )
            })
            .collect();
        order.sort_by_key(|e| e.1);
        let order: Vec<(String, String)> = order.into_iter().map(|(k, _)| k.clone()).collect();
        let excess = t.len() - MAX_TRACKED * 9 / 10;
        for k in order.into_iter().take(excess) {
            t.remove(&k);
        }
    }

    fn record_failure(&self, cfg: &LockoutConfig, key: (String, String), now: i64) -> bool {
        let mut t = self.table();
        let Some(f) = t.get_mut(&key) else {
            return false;
        };
        f.in_flight = f.in_flight.saturating_sub(1);
        f.count += 1;
        f.last = now;
        if f.count >= cfg.threshold() {
            f.locked_until = now.saturating_add(cfg.duration());
            tracing::warn!(
                method = key.0.as_str(),
                failures = f.count,
                "login identity locked out after repeated failures"
            );
            return true;
        }
        false
    }

    /// Count one failure outright (tests; a login uses [`Attempt`]).
    #[cfg(test)]
    fn failed(&self, cfg: &LockoutConfig, accessor: &str, identity: &str, now: i64) -> bool {
        if cfg.lockout_disable {
            return false;
        }
        let key = (accessor.to_string(), identity.to_string());
        match self.try_reserve(cfg, &key, now) {
            Reserve::Taken => self.record_failure(cfg, key, now),
            Reserve::Locked | Reserve::Busy => true,
        }
    }

    #[cfg(test)]
    fn check(
        &self,
        cfg: &LockoutConfig,
        accessor: &str,
        identity: &str,
        now: i64,
    ) -> Result<(), ApiError> {
        match self
            .table()
            .get(&(accessor.to_string(), identity.to_string()))
        {
            Some(f) if !cfg.lockout_disable && f.locked_until > now => {
                Err(ApiError::permission_denied())
            }
            _ => Ok(()),
        }
    }

    /// Unlock one identity; whether it was locked.
    pub fn unlock(&self, accessor: &str, identity: &str, now: i64) -> bool {
        let mut t = self.table();
        match t.get_mut(&(accessor.to_string(), identity.to_string())) {
            Some(f) => {
                let was = f.locked_until > now;
                f.count = 0;
                f.locked_until = 0;
                was
            }
            None => false,
        }
    }

    /// The locked identities, by method accessor.
    pub fn locked(&self, now: i64) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .table()
            .iter()
            .filter(|(_, f)| f.locked_until > now)
            .map(|(k, _)| k.clone())
            .collect();
        out.sort();
        out
    }

    /// Forget a method's counters (disabled) or every counter (sealed).
    pub fn forget(&self, accessor: Option<&str>) {
        let mut t = self.table();
        match accessor {
            Some(a) => t.retain(|(m, _), _| m != a),
            None => t.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_locks_and_the_duration_unlocks() {
        let l = Lockouts::default();
        let cfg = LockoutConfig::default();
        for i in 0..4 {
            assert!(!l.failed(&cfg, "m", "bob", 100 + i));
            assert!(l.check(&cfg, "m", "bob", 100 + i).is_ok());
        }
        assert!(l.failed(&cfg, "m", "bob", 104));
        assert_eq!(
            l.check(&cfg, "m", "bob", 105),
            Err(ApiError::permission_denied())
        );
        // other identities and methods are untouched
        assert!(l.check(&cfg, "m", "alice", 105).is_ok());
        assert!(l.check(&cfg, "n", "bob", 105).is_ok());
        assert_eq!(l.locked(105), vec![("m".to_string(), "bob".to_string())]);
        assert!(l.check(&cfg, "m", "bob", 104 + DEFAULT_DURATION).is_ok());
        // after the lock has passed, one failure does not lock again
        assert!(!l.failed(&cfg, "m", "bob", 104 + DEFAULT_DURATION));
    }

    #[test]
    fn success_and_quiet_time_reset_the_counter() {
        let l = Lockouts::default();
        let cfg = LockoutConfig {
            lockout_threshold: 2,
            lockout_counter_reset_duration: 10,
            ..LockoutConfig::default()
        };
        assert!(!l.failed(&cfg, "m", "bob", 0));
        l.unlock("m", "bob", 0);
        assert!(!l.failed(&cfg, "m", "bob", 1));
        assert!(!l.failed(&cfg, "m", "bob", 11), "10 s quiet resets");
        assert!(l.failed(&cfg, "m", "bob", 12));
        assert!(l.unlock("m", "bob", 13));
        assert!(l.check(&cfg, "m", "bob", 13).is_ok());
    }

    #[test]
    fn disabled_lockout_never_locks() {
        let l = Lockouts::default();
        let cfg = LockoutConfig {
            lockout_disable: true,
            ..LockoutConfig::default()
        };
        for i in 0..20 {
            assert!(!l.failed(&cfg, "m", "bob", i));
        }
        assert!(l.check(&cfg, "m", "bob", 20).is_ok());
    }

    #[test]
    fn the_table_stays_bounded() {
        let l = Lockouts::default();
        let cfg = LockoutConfig::default();
        for i in 0..(MAX_TRACKED + 10) {
            l.failed(&cfg, "m", &i.to_string(), 0);
        }
        assert!(l.table().len() <= MAX_TRACKED);
    }

    #[test]
    fn the_table_stays_bounded_when_every_entry_is_locked() {
        let l = Lockouts::default();
        let cfg = LockoutConfig {
            lockout_threshold: 1,
            ..LockoutConfig::default()
        };
        for i in 0..(MAX_TRACKED + 10) {
            l.failed(&cfg, "m", &i.to_string(), 0);
        }
        assert!(l.table().len() <= MAX_TRACKED, "{}", l.table().len());
    }

    #[test]
    fn a_flood_of_other_names_does_not_reset_a_counter() {
        let l = Lockouts::default();
        let cfg = LockoutConfig::default();
        for _ in 0..4 {
            l.failed(&cfg, "m", "bob", 0);
        }
        for i in 0..MAX_TRACKED {
            l.failed(&cfg, "n", &format!("x{i}"), 1);
        }
        assert!(
            l.failed(&cfg, "m", "bob", 2),
            "bob's fifth failure must lock"
        );
    }

    #[test]
    fn tuning_refuses_unknown_and_negative_fields() {
        let mut c = LockoutConfig::default();
        c.apply(&json!({"lockout_threshold": 3, "lockout_duration": "1m"}))
            .unwrap();
        assert_eq!((c.threshold(), c.duration()), (3, 60));
        assert!(c.apply(&json!({"lockout_threshold": -1})).is_err());
        assert!(c.apply(&json!({"nope": 1})).is_err());
        assert!(c.apply(&json!("x")).is_err());
    }
}
