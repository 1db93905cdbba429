//! The policy store: ACL policies behind the barrier at `sys/policy/<name>`,
//! parsed once and cached; ACLs for a token's policy set are cached too and
//! dropped whenever any policy changes.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use palisade_barrier::Barrier;
use palisade_policy::{Acl, DEFAULT_POLICY, Policy};
use serde::{Deserialize, Serialize};

use crate::logical::ApiError;

const PREFIX: &str = "sys/policy/";

#[derive(Serialize, Deserialize)]
struct Stored {
    name: String,
    raw: String,
}

pub struct PolicyStore {
    barrier: Arc<Barrier>,
    policies: RwLock<HashMap<String, Arc<Policy>>>,
    acls: RwLock<HashMap<Vec<String>, Arc<Acl>>>,
}

/// Policy texts parsed at a time (on the blocking pool).
static PARSE_SLOT: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

fn lock<T>(r: Result<T, impl std::fmt::Display>) -> Result<T, ApiError> {
    r.map_err(|e| ApiError::internal(format!("policy store lock: {e}")))
}

/// A policy name must already be canonical (lowercase, Vault's characters):
/// it is checked, never rewritten, so the name the ACL was checked on is the
/// name that is stored. `canonical` refuses other names before the ACL check;
/// this keeps the store safe for any other caller.
pub fn check_name(name: &str) -> Result<String, ApiError> {
    if !crate::canonical::is_canonical_policy_name(name) {
        return Err(crate::canonical::invalid_policy_name());
    }
    Ok(name.to_owned())
}

impl PolicyStore {
    pub fn new(barrier: Arc<Barrier>) -> Self {
        Self {
            barrier,
            policies: RwLock::new(HashMap::new()),
            acls: RwLock::new(HashMap::new()),
        }
    }

    /// Load every policy into memory; create `default` on first unseal.
    pub async fn setup(&self) -> Result<(), ApiError> {
        let mut map = HashMap::new();
        for name in self.barrier.list(PREFIX).await? {
            if let Some(b) = self.barrier.get(&format!("{PREFIX}{name}")).await? {
                let s: Stored = serde_json::from_slice(&b).map_err(ApiError::internal)?;
                let p = Policy::parse_unbounded(&s.name, &s.raw).map_err(|e| {
                    ApiError::internal(format!("stored policy {name} invalid: {e}"))
                })?;
                map.insert(s.name, Arc::new(p));
            }
        }
        let need_default = !map.contains_key("default");
        *lock(self.policies.write())? = map;
        lock(self.acls.write())?.clear();
        if need_default {
            self.write("default", DEFAULT_POLICY).await?;
        }
        Ok(())
    }

    pub fn clear(&self) {
        if let Ok(mut p) = self.policies.write() {
            p.clear();
        }
        if let Ok(mut a) = self.acls.write() {
            a.clear();
        }
    }

    pub fn list(&self) -> Result<Vec<String>, ApiError> {
        let mut names: Vec<String> = lock(self.policies.read())?.keys().cloned().collect();
        names.push("root".into());
        names.sort();
        Ok(names)
    }

    pub fn exists(&self, name: &str) -> bool {
        name == "root"
            || self
                .policies
                .read()
                .map(|p| p.contains_key(name))
                .unwrap_or(false)
    }

    pub fn get(&self, name: &str) -> Result<Option<Arc<Policy>>, ApiError> {
        Ok(lock(self.policies.read())?.get(name).cloned())
    }

    pub async fn write(&self, name: &str, raw: &str) -> Result<(), ApiError> {
        let name = check_name(name)?;
        if name == "root" {
            return Err(ApiError::bad_request("cannot update root policy"));
        }
        if name == crate::wrapping::POLICY {
            return Err(ApiError::bad_request(
                "cannot update response-wrapping policy",
            ));
        }
        // off the async workers, one at a time: even within its bounds a
        // hostile policy may take a moment to parse, and requests keep being
        // served meanwhile
        let parsed = {
            let _slot = PARSE_SLOT.acquire().await.map_err(ApiError::internal)?;
            let (n, text) = (name.clone(), raw.to_string());
            tokio::task::spawn_blocking(move || Policy::parse(&n, &text))
                .await
                .map_err(ApiError::internal)?
        };
        let policy = parsed.map_err(|e| {
            // syntax errors already say "failed to parse policy: "; say it once
            let e = e.to_string();
            match e.strip_prefix("failed to parse policy: ") {
                Some(rest) => ApiError::bad_request(format!("failed to parse policy: {rest}")),
                None => ApiError::bad_request(format!("failed to parse policy: {e}")),
            }
            // the details quote the policy text: the client gets them, the
            // audit record (whose data holds that text HMAC'd) does not
            .audited_as("failed to parse policy")
        })?;
        let bytes = serde_json::to_vec(&Stored {
            name: name.clone(),
            raw: raw.to_string(),
        })
        .map_err(ApiError::internal)?;
        self.barrier.put(&format!("{PREFIX}{name}"), &bytes).await?;
        let mut map = lock(self.policies.write())?;
        map.insert(name, Arc::new(policy));
        lock(self.acls.write())?.clear();
        Ok(())
    }

    pub async fn delete(&self, name: &str) -> Result<(), ApiError> {
        let name = check_name(name)?;
        if name == "root" {
            return Err(ApiError::bad_request("cannot delete root policy"));
        }
        if name == "default" {
            return Err(ApiError::bad_request("cannot delete default policy"));
        }
        self.barrier.delete(&format!("{PREFIX}{name}")).await?;
        let mut map = lock(self.policies.write())?;
        map.remove(&name);
        lock(self.acls.write())?.clear();
        Ok(())
    }

    /// The merged ACL for a set of policy names (unknown names grant nothing).
    pub fn acl(&self, names: &[String]) -> Result<Arc<Acl>, ApiError> {
        if let Some(a) = lock(self.acls.read())?.get(names) {
            return Ok(a.clone());
        }
        // Build and cache under the policies read lock: a write (which holds
        // the write lock while it clears the cache) then either precedes this
        // and is seen, or follows and clears what we insert. Never a stale ACL.
        let map = lock(self.policies.read())?;
        let acl = if names.iter().any(|n| n == "root") {
            Acl::root()
        } else {
            let found: Vec<&Policy> = names
                .iter()
                .filter_map(|n| map.get(n).map(|p| p.as_ref()))
                .collect();
            Acl::new(&found)
        };
        let acl = Arc::new(acl);
        lock(self.acls.write())?.insert(names.to_vec(), acl.clone());
        drop(map);
        Ok(acl)
    }
}
