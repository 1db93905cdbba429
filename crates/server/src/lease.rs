//! Leases: every dynamic secret a secrets engine hands out (a database
//! role, today) is recorded here before it exists, and revoked when its
//! lease expires, when it is revoked through `sys/leases/*`, or when the
//! token that obtained it is revoked.
//!
//! Storage (behind the barrier, as Vault's expiration manager):
//! - `sys/expire/id/<lease_id>`: the [`LeaseEntry`] (the lease id is the
//!   request path plus a random suffix, so `revoke-prefix` is a listing);
//! - `sys/expire/token/<token hash>/<sha256(lease_id)>`: the lease id, so
//!   revoking a token finds its leases.
//!
//! Revoking a token never calls an engine: in the same storage transaction
//! that deletes the token, its leases are detached from it and made due now
//! (Vault's `RevokeByToken`), and the expiry manager revokes them, retrying
//! with backoff while the engine's backend is down. A lease survives a
//! crash at any point: it is written before the credential is created and
//! deleted only after the credential is gone, and the due times are
//! reloaded from storage at unseal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use palisade_barrier::{Barrier, BarrierOp, View};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engines::kv::KeyLocks;
use crate::logical::ApiError;

pub const ID_PREFIX: &str = "sys/expire/id/";
pub const TOKEN_PREFIX: &str = "sys/expire/token/";

/// Longest wait between two attempts at revoking a lease whose engine
/// failed (the backoff doubles from one second up to this).
pub const MAX_BACKOFF_SECS: i64 = 300;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LeaseEntry {
    pub lease_id: String,
    /// The mount that issued it: revocation goes to this mount's engine,
    /// wherever the mount has been moved since.
    pub mount_uuid: String,
    /// The request path that created it.
    pub path: String,
    /// Hash of the token that obtained it; empty once that token is revoked
    /// (the lease is then due at once).
    pub token_hash: String,
    /// What the engine needs to renew or revoke it (a database role's
    /// name): never returned to a client.
    pub internal: Value,
    /// Unix seconds.
    pub issue_time: i64,
    pub expire_time: i64,
    /// 0: never renewed.
    #[serde(default)]
    pub last_renewal: i64,
    /// The lease never lives past this (issue time + max TTL).
    pub max_expire: i64,
    /// What a renewal without an increment grants.
    pub ttl: i64,
    pub renewable: bool,
}

impl LeaseEntry {
    pub fn ttl_remaining(&self, now: i64) -> i64 {
        (self.expire_time - now).max(0)
    }
}

/// The due time of a lease, and the revocation attempts that failed.
#[derive(Clone, Copy, Debug)]
struct Due {
    at: i64,
    failures: u32,
}

/// The lease store and the expiry manager's schedule.
pub struct Leases {
    barrier: Arc<Barrier>,
    view: View,
    locks: KeyLocks,
    due: Mutex<HashMap<String, Due>>,
    /// Woken when a lease becomes due earlier than scheduled.
    pub wake: tokio::sync::Notify,
}

fn lock<T>(r: Result<T, impl std::fmt::Display>) -> Result<T, ApiError> {
    r.map_err(|e| ApiError::internal(format!("lease lock: {e}")))
}

fn token_index(token_hash: &str, lease_id: &str) -> String {
    format!(
        "{TOKEN_PREFIX}{token_hash}/{}",
        hex::encode(palisade_crypto::mac::sha256(lease_id.as_bytes()))
    )
}

/// A lease id as a client gives it: what the server issues, a canonical
/// request path plus `/` and a random suffix (no empty, `.` or `..`
/// segment, no leading or trailing `/`, no whitespace, control or format
/// character, at most a path's length plus the suffix). Anything else
/// names no lease.
pub fn check_lease_id(id: &str) -> Result<&str, ApiError> {
    let ok = !id.is_empty()
        && id.len() <= crate::canonical::MAX_PATH_BYTES + 64
        && id
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && crate::canonical::is_printable(c))
        && id
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..");
    if ok {
        Ok(id)
    } else {
        Err(ApiError::bad_request("invalid lease ID"))
    }
}

impl Leases {
    pub fn new(barrier: Arc<Barrier>) -> Self {
        Self {
            view: View::new(barrier.clone(), "sys/expire/"),
            barrier,
            locks: KeyLocks::default(),
            due: Mutex::new(HashMap::new()),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Serialises everything done to one lease (renew, revoke).
    pub async fn lock(&self, lease_id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        self.locks.lock(&self.view, lease_id).await
    }

    /// Load every lease's due time (at unseal).
    pub async fn load(&self) -> Result<usize, ApiError> {
        let mut due = HashMap::new();
        for id in self.ids_under("").await? {
            if let Some(e) = self.get(&id).await? {
                due.insert(
                    id,
                    Due {
                        at: e.expire_time,
                        failures: 0,
                    },
                );
            }
        }
        let n = due.len();
        *lock(self.due.lock())? = due;
        self.wake.notify_one();
        Ok(n)
    }

    /// Forget the schedule (at seal).
    pub fn clear(&self) {
        if let Ok(mut d) = self.due.lock() {
            d.clear();
        }
    }

    pub fn count(&self) -> usize {
        self.due.lock().map(|d| d.len()).unwrap_or(0)
    }

    pub async fn get(&self, lease_id: &str) -> Result<Option<LeaseEntry>, ApiError> {
        match self.barrier.get(&format!("{ID_PREFIX}{lease_id}")).await? {
            Some(b) => Ok(Some(
                serde_json::from_slice(&b).map_err(ApiError::internal)?,
            )),
            None => Ok(None),
        }
    }

    /// Record a new lease (before the credential it covers is created).
    pub async fn create(&self, e: &LeaseEntry) -> Result<(), ApiError> {
        let bytes = serde_json::to_vec(e).map_err(ApiError::internal)?;
        let mut ops = vec![BarrierOp::Put {
            path: format!("{ID_PREFIX}{}", e.lease_id),
            value: bytes,
        }];
        if !e.token_hash.is_empty() {
            ops.push(BarrierOp::Put {
                path: token_index(&e.token_hash, &e.lease_id),
                value: e.lease_id.as_bytes().to_vec(),
            });
        }
        self.barrier.transaction(ops).await?;
        self.schedule(&e.lease_id, e.expire_time)?;
        Ok(())
    }

    /// Store a changed lease (a renewal), under the lease's lock.
    pub async fn update(&self, e: &LeaseEntry) -> Result<(), ApiError> {
        let bytes = serde_json::to_vec(e).map_err(ApiError::internal)?;
        self.barrier
            .put(&format!("{ID_PREFIX}{}", e.lease_id), &bytes)
            .await?;
        self.schedule(&e.lease_id, e.expire_time)?;
        Ok(())
    }

    /// Forget a lease whose credential is gone.
    pub async fn delete(&self, e: &LeaseEntry) -> Result<(), ApiError> {
        let mut ops = vec![BarrierOp::Delete {
            path: format!("{ID_PREFIX}{}", e.lease_id),
        }];
        if !e.token_hash.is_empty() {
            ops.push(BarrierOp::Delete {
                path: token_index(&e.token_hash, &e.lease_id),
            });
        }
        self.barrier.transaction(ops).await?;
        lock(self.due.lock())?.remove(&e.lease_id);
        Ok(())
    }

    fn schedule(&self, lease_id: &str, at: i64) -> Result<(), ApiError> {
        lock(self.due.lock())?.insert(lease_id.to_owned(), Due { at, failures: 0 });
        self.wake.notify_one();
        Ok(())
    }

    /// The storage operations that detach every lease of a revoked token
    /// (due at `now`), to run in the token's deletion transaction; and the
    /// leases concerned, for [`Leases::make_due`] once it committed.
    pub async fn detach_token_ops(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<(Vec<BarrierOp>, Vec<String>), ApiError> {
        let mut ops = Vec::new();
        let mut ids = Vec::new();
        let prefix = format!("{TOKEN_PREFIX}{token_hash}/");
        for k in self.barrier.list(&prefix).await? {
            let index = format!("{prefix}{k}");
            ops.push(BarrierOp::Delete {
                path: index.clone(),
            });
            let Some(id) = self.barrier.get(&index).await? else {
                continue;
            };
            let id = String::from_utf8_lossy(&id).into_owned();
            if let Some(mut e) = self.get(&id).await? {
                e.token_hash.clear();
                e.expire_time = e.expire_time.min(now);
                ops.push(BarrierOp::Put {
                    path: format!("{ID_PREFIX}{id}"),
                    value: serde_json::to_vec(&e).map_err(ApiError::internal)?,
                });
                ids.push(id);
            }
        }
        Ok((ops, ids))
    }

    /// These leases are due at `at` (their token was revoked).
    pub fn make_due(&self, ids: Vec<String>, at: i64) -> Result<(), ApiError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut d = lock(self.due.lock())?;
        for id in ids {
            let e = d.entry(id).or_insert(Due { at, failures: 0 });
            e.at = e.at.min(at);
        }
        drop(d);
        self.wake.notify_one();
        Ok(())
    }

    /// Leases due at `now`, soonest first.
    pub fn due(&self, now: i64) -> Result<Vec<String>, ApiError> {
        let d = lock(self.due.lock())?;
        let mut v: Vec<(i64, &String)> = d
            .iter()
            .filter(|(_, x)| x.at <= now)
            .map(|(k, x)| (x.at, k))
            .collect();
        v.sort();
        Ok(v.into_iter().map(|(_, k)| k.clone()).collect())
    }

    /// The next due time, if any lease is scheduled.
    pub fn next_due(&self) -> Option<i64> {
        self.due.lock().ok()?.values().map(|d| d.at).min()
    }

    /// Forget a lease's schedule (it is no longer in storage).
    pub fn forget(&self, lease_id: &str) -> Result<(), ApiError> {
        lock(self.due.lock())?.remove(lease_id);
        Ok(())
    }

    /// A revocation failed: try again later (1 s, 2 s, 4 s ... up to
    /// [`MAX_BACKOFF_SECS`]); returns the number of failures so far.
    pub fn backoff(&self, lease_id: &str, now: i64) -> Result<u32, ApiError> {
        let mut d = lock(self.due.lock())?;
        let Some(e) = d.get_mut(lease_id) else {
            return Ok(0);
        };
        e.failures = e.failures.saturating_add(1);
        let wait = 1i64
            .checked_shl(e.failures.min(16))
            .unwrap_or(MAX_BACKOFF_SECS)
            .min(MAX_BACKOFF_SECS);
        e.at = now + wait;
        Ok(e.failures)
    }

    /// The lease ids under `prefix` (relative to the lease id space, empty
    /// or ending in `/`), at any depth.
    pub async fn ids_under(&self, prefix: &str) -> Result<Vec<String>, ApiError> {
        let mut out = Vec::new();
        let mut stack = vec![prefix.to_owned()];
        while let Some(p) = stack.pop() {
            for child in self.barrier.list(&format!("{ID_PREFIX}{p}")).await? {
                let full = format!("{p}{child}");
                if full.ends_with('/') {
                    stack.push(full);
                } else {
                    out.push(full);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// One level of the lease id space (`LIST sys/leases/lookup/<prefix>`).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, ApiError> {
        Ok(self.barrier.list(&format!("{ID_PREFIX}{prefix}")).await?)
    }
}

/// What an engine asks for when it hands out a dynamic secret.
pub struct LeaseRequest {
    pub internal: Value,
    /// Requested TTL (0: the mount's default).
    pub ttl: i64,
    /// Requested max TTL (0: the mount's max).
    pub max_ttl: i64,
    pub renewable: bool,
}

/// Where an engine's leases come from: the lease store, and who asks.
pub struct LeaseCtx<'a> {
    pub leases: &'a Leases,
    pub mount_uuid: &'a str,
    /// The request path (mount path included): the lease id's prefix.
    pub path: &'a str,
    pub token_hash: &'a str,
    /// The mount's (else the system's) default and max TTL.
    pub default_ttl: i64,
    pub max_ttl: i64,
    pub now: i64,
}

/// What the client is told about a lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    pub lease_id: String,
    pub lease_duration: i64,
    pub renewable: bool,
}

impl LeaseCtx<'_> {
    /// The entry for a new lease (not yet stored): TTLs resolved against
    /// the mount's, the max never above the mount's.
    pub fn entry(&self, r: LeaseRequest) -> LeaseEntry {
        let max = match r.max_ttl {
            0 => self.max_ttl,
            x => x.min(self.max_ttl),
        };
        let ttl = match r.ttl {
            0 => self.default_ttl,
            x => x,
        }
        .min(max);
        let lease_id = format!(
            "{}/{}",
            self.path.trim_end_matches('/'),
            crate::token::random_base62(24)
        );
        LeaseEntry {
            lease_id,
            mount_uuid: self.mount_uuid.to_owned(),
            path: self.path.to_owned(),
            token_hash: self.token_hash.to_owned(),
            internal: r.internal,
            issue_time: self.now,
            expire_time: self.now.saturating_add(ttl),
            last_renewal: 0,
            max_expire: self.now.saturating_add(max),
            ttl,
            renewable: r.renewable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids_are_relative_paths_only() {
        for ok in ["database/creds/ro/abc", "a"] {
            assert_eq!(check_lease_id(ok).unwrap(), ok);
        }
        assert!(check_lease_id("d\u{e9}/creds/ro/abc").is_ok());
        assert!(check_lease_id(&format!("db/creds/{}/abc", "r".repeat(1100))).is_ok());
        for bad in [
            "",
            "/database/creds",
            "database//creds",
            "database/creds/",
            "database/../sys",
            "database/./x",
            "data base",
            "database/\u{202e}x",
            "database/\tx",
        ] {
            assert_eq!(
                check_lease_id(bad).unwrap_err(),
                ApiError::bad_request("invalid lease ID"),
                "{bad:?}"
            );
        }
    }
}
