//! palisade-storage: the untrusted byte store under the barrier.
//!
//! Everything a backend sees is either ciphertext (written by the barrier with
//! the storage path as associated data) or non-secret bootstrap data (the seal
//! configuration). Backends therefore need no confidentiality, only durability
//! and atomicity: an acknowledged `put` or `transaction` survives `kill -9`, and a
//! transaction is applied whole or not at all.
//!
//! Backends: [`sqlite::SqliteBackend`] (embedded default: WAL, `synchronous=FULL`),
//! [`postgres::PostgresBackend`], and [`memory::MemoryBackend`] for unit tests.
//! [`conformance`] is the one test suite every backend must pass.
#![forbid(unsafe_code)]

use async_trait::async_trait;

pub mod cache;
pub mod conformance;
pub mod ha;
pub mod memory;
pub mod postgres;
pub mod sqlite;

/// One step of an atomic multi-key transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The backend could not be reached or failed; the message is safe to log
    /// (it never contains values, which are ciphertext anyway).
    #[error("storage backend error: {0}")]
    Backend(String),
    #[error("invalid storage key {0:?}")]
    InvalidKey(String),
    #[error("invalid storage configuration: {0}")]
    Config(String),
    /// A fenced write by a node whose leadership token is no longer current
    /// (another node took over, or its lease ran out): nothing was written.
    #[error(
        "storage write refused: this node is not the active node (its leadership token is stale)"
    )]
    Fenced,
}

impl From<sqlx::Error> for StorageError {
    fn from(e: sqlx::Error) -> Self {
        StorageError::Backend(e.to_string())
    }
}

/// The physical storage contract. Keys are `/`-separated UTF-8 paths without
/// empty or dot segments; values are opaque bytes.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError>;
    async fn put(&self, key: &str, value: &[u8]) -> Result<(), StorageError>;
    async fn delete(&self, key: &str) -> Result<(), StorageError>;
    /// Immediate children of `prefix` (which is empty or ends in `/`), sorted;
    /// a child that has children of its own ends in `/`, as in Vault.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError>;
    /// Apply every operation or none.
    async fn transaction(&self, ops: Vec<TxnOp>) -> Result<(), StorageError>;
    /// `"sqlite"`, `"postgres"` or `"inmem"`, reported by `sys/seal-status`.
    fn kind(&self) -> &'static str;
}

/// Reject keys a correct caller never produces; a defence against path tricks
/// reaching the physical layer.
pub fn check_key(key: &str) -> Result<(), StorageError> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.split('/').enumerate().any(|(i, seg)| {
            (seg.is_empty() && i + 1 != key.split('/').count()) || seg == "." || seg == ".."
        })
        || key.ends_with('/')
        || key.contains('\0');
    if bad {
        return Err(StorageError::InvalidKey(key.chars().take(128).collect()));
    }
    Ok(())
}

fn check_prefix(prefix: &str) -> Result<(), StorageError> {
    if prefix.is_empty() {
        return Ok(());
    }
    if !prefix.ends_with('/') {
        return Err(StorageError::InvalidKey(prefix.chars().take(128).collect()));
    }
    check_key(&prefix[..prefix.len() - 1])
}

/// Collapse full keys under `prefix` into immediate children (folders end in `/`).
pub(crate) fn collapse_children<I: IntoIterator<Item = String>>(
    prefix: &str,
    keys: I,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for k in keys {
        let Some(rest) = k.strip_prefix(prefix) else {
            continue;
        };
        if rest.is_empty() {
            continue;
        }
        let child = match rest.find('/') {
            Some(i) => rest[..=i].to_string(),
            None => rest.to_string(),
        };
        if out.last() != Some(&child) {
            out.push(child);
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert!(check_key("a/b/c").is_ok());
        for bad in ["", "/a", "a//b", "a/../b", "a/./b", "a/", "a\0b", ".."] {
            assert!(
                matches!(check_key(bad), Err(StorageError::InvalidKey(_))),
                "{bad:?}"
            );
        }
        assert!(check_prefix("").is_ok());
        assert!(check_prefix("a/b/").is_ok());
        assert!(check_prefix("a/b").is_err());
    }

    #[test]
    fn collapse() {
        let keys = ["p/a", "p/b/c", "p/b/d", "p/c"].map(String::from);
        assert_eq!(collapse_children("p/", keys), vec!["a", "b/", "c"]);
    }
}
