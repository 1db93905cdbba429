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
}

/// The failure counters of every auth method, keyed by the method's
/// accessor and the identity.
#[derive(Default)]
pub struct Lockouts {
    table: Mutex<HashMap<(String, String), Failures>>,
}

impl Lockouts {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Failures>> {
        // a poisoned table is still a table of counters
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuse a login for a locked identity (403), before any credential
    /// is looked at.
    pub fn check(
        &self,
        cfg: &LockoutConfig,
        accessor: &str,
        identity: &str,
        now: i64,
    ) -> Result<(), ApiError> {
        if cfg.lockout_disable {
            return Ok(());
        }
        let key = (accessor.to_string(), identity.to_string());
        match self.table().get(&key) {
            Some(f) if f.locked_until > now => Err(ApiError::permission_denied()),
            _ => Ok(()),
        }
    }

    /// Count a failed login; returns whether the identity is now locked.
    pub fn failed(&self, cfg: &LockoutConfig, accessor: &str, identity: &str, now: i64) -> bool {
        if cfg.lockout_disable {
            return false;
        }
        let mut t = self.table();
        if t.len() >= MAX_TRACKED {
            t.retain(|_, f| f.locked_until > now || now - f.last < cfg.counter_reset());
            if t.len() >= MAX_TRACKED {
                t.retain(|_, f| f.locked_until > now);
            }
        }
        let f = t
            .entry((accessor.to_string(), identity.to_string()))
            .or_insert(Failures {
                count: 0,
                last: now,
                locked_until: 0,
            });
        if now - f.last >= cfg.counter_reset() || (f.locked_until != 0 && f.locked_until <= now) {
            f.count = 0;
            f.locked_until = 0;
        }
        f.count += 1;
        f.last = now;
        if f.count >= cfg.threshold() {
            f.locked_until = now.saturating_add(cfg.duration());
            tracing::warn!(
                method = accessor,
                failures = f.count,
                "login identity locked out after repeated failures"
            );
            return true;
        }
        false
    }

    /// A successful login: the counter starts again.
    pub fn succeeded(&self, accessor: &str, identity: &str) {
        self.table()
            .remove(&(accessor.to_string(), identity.to_string()));
    }

    /// Unlock one identity; whether it was locked.
    pub fn unlock(&self, accessor: &str, identity: &str, now: i64) -> bool {
        self.table()
            .remove(&(accessor.to_string(), identity.to_string()))
            .is_some_and(|f| f.locked_until > now)
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
        l.succeeded("m", "bob");
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
