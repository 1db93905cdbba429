//! A read cache in front of a backend, for a server that is the only writer
//! of its storage: a single server, or the active node of an HA cluster
//! (fencing makes it the only one that can write; a node clears the cache
//! when it becomes active, and while it is not active reads bypass it:
//! [`CachedBackend::gated`]). It holds what the backend holds — barrier ciphertext, never
//! plaintext — and negative results.
//!
//! Consistency: every write goes through the cache; a miss records the shard's
//! write generation before reading the backend and only fills the cache if no
//! write touched that shard meanwhile, so a slow read can never re-insert a
//! value that a concurrent write replaced.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::{Backend, StorageError, TxnOp};

const SHARDS: usize = 32;

struct Shard {
    map: HashMap<String, Option<Arc<[u8]>>>,
    generation: u64,
}

pub struct CachedBackend {
    inner: Arc<dyn Backend>,
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    /// When set and false, reads go to the backend and fill nothing (an HA
    /// node that is not the active one: another process writes).
    enabled: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
}

impl CachedBackend {
    /// `capacity` is the approximate number of entries kept in memory.
    pub fn new(inner: Arc<dyn Backend>, capacity: usize) -> Self {
        Self {
            inner,
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::new(),
                        generation: 0,
                    })
                })
                .collect(),
            per_shard: (capacity / SHARDS).max(16),
            enabled: None,
        }
    }

    /// A cache used only while `enabled()` holds: otherwise every read goes
    /// to the backend (writes still keep the cache true).
    pub fn gated(
        inner: Arc<dyn Backend>,
        capacity: usize,
        enabled: Arc<dyn Fn() -> bool + Send + Sync>,
    ) -> Self {
        Self {
            enabled: Some(enabled),
            ..Self::new(inner, capacity)
        }
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        // FNV-1a: cheap and good enough to spread keys over shards
        let mut h: u64 = 0xcbf29ce484222325;
        for b in key.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
        &self.shards[(h as usize) % SHARDS]
    }

    fn set(&self, key: &str, value: Option<Arc<[u8]>>) {
        if let Ok(mut s) = self.shard(key).lock() {
            s.generation += 1;
            if s.map.len() >= self.per_shard && !s.map.contains_key(key) {
                // simple bounded policy: drop the shard's contents when full
                s.map.clear();
            }
            s.map.insert(key.to_string(), value);
        }
    }

    /// Drop everything cached: another process may have written (an HA
    /// node that becomes active, or missed change notifications).
    pub fn clear(&self) {
        for shard in &self.shards {
            if let Ok(mut s) = shard.lock() {
                s.generation += 1;
                s.map.clear();
            }
        }
    }

    /// Drop what is cached for `keys` (another process wrote them).
    pub fn forget<'a>(&self, keys: impl IntoIterator<Item = &'a str>) {
        for k in keys {
            self.invalidate(k);
        }
    }

    fn invalidate(&self, key: &str) {
        if let Ok(mut s) = self.shard(key).lock() {
            s.generation += 1;
            s.map.remove(key);
        }
    }
}

#[async_trait]
impl Backend for CachedBackend {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        if let Some(enabled) = &self.enabled
            && !enabled()
        {
            return self.inner.get(key).await;
        }
        let generation = {
            let s = self
                .shard(key)
                .lock()
                .map_err(|_| StorageError::Backend("cache lock poisoned".into()))?;
            if let Some(v) = s.map.get(key) {
                return Ok(v.as_ref().map(|b| b.to_vec()));
            }
            s.generation
        };
        let v = self.inner.get(key).await?;
        if let Ok(mut s) = self.shard(key).lock()
            && s.generation == generation
            && s.map.len() < self.per_shard
        {
            s.map.insert(key.to_string(), v.as_deref().map(Arc::from));
        }
        Ok(v)
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        match self.inner.put(key, value).await {
            Ok(()) => {
                self.set(key, Some(Arc::from(value)));
                Ok(())
            }
            Err(e) => {
                self.invalidate(key);
                Err(e)
            }
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let r = self.inner.delete(key).await;
        match &r {
            Ok(()) => self.set(key, None),
            Err(_) => self.invalidate(key),
        }
        r
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        self.inner.list(prefix).await
    }

    async fn transaction(&self, ops: Vec<TxnOp>) -> Result<(), StorageError> {
        let updates: Vec<(String, Option<Arc<[u8]>>)> = ops
            .iter()
            .map(|op| match op {
                TxnOp::Put { key, value } => (key.clone(), Some(Arc::from(value.as_slice()))),
                TxnOp::Delete { key } => (key.clone(), None),
            })
            .collect();
        let r = self.inner.transaction(ops).await;
        for (k, v) in updates {
            if r.is_ok() {
                self.set(&k, v)
            } else {
                self.invalidate(&k)
            }
        }
        r
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
}
