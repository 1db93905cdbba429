//! palisade-apikey: API keys for the gateway's authn step (step 8 in the
//! gateway flow) and for `palisade gateway apikey create|list|revoke|rotate`.
//!
//! It owns the key format, the keyed hash, the SQLite table the keys live in
//! and the verify path. The gateway parses the credential out of the request,
//! calls [`ApiKeyStore::verify`], turns the returned [`ApiKeyRecord`] into a
//! `Principal` and maps every [`ApiKeyError`] to its own 401; this crate never
//! writes a response.
//!
//! # Keys
//!
//! A key is `pal_<id>_<secret>` (49 bytes): a 12-symbol base62 id, the primary
//! key of its row, and a 32-symbol base62 secret (190 bits), both drawn from
//! the OS CSPRNG by rejection sampling. The full key is returned once, inside a
//! [`palisade_core::Secret`], by [`ApiKeyStore::create`] / [`ApiKeyStore::rotate`];
//! nothing can show it again. The prefix makes leaked keys easy to scan for,
//! as with Stripe's `sk_live_` or GitHub's `ghp_`.
//!
//! # Storage
//!
//! Only `HMAC-SHA256(pepper, id || ":" || secret)` is stored (as Kong
//! Enterprise's hashed keys do, but keyed): a copy of the database is useless
//! without the pepper, which is kept outside it. Binding the id means a hash row
//! copied onto another id matches no secret. The table `palisade_apikeys` lives
//! in the gateway's SQLite file (WAL, `synchronous=FULL`) and is created if
//! missing. Several active keys per consumer are allowed, which is what makes
//! rotation possible without downtime: [`ApiKeyStore::rotate`] issues a new key
//! and caps the old key's life at a chosen time.
//!
//! # Verify and timing
//!
//! `verify` rejects anything that is not exactly the key shape as
//! [`ApiKeyError::Malformed`] before any lookup. It then looks the id up in an
//! in-memory snapshot of the table and computes the HMAC of the presented
//! id and secret *whether or not the id exists*, comparing against the stored
//! hash (or a fixed dummy) in constant time. Unknown ids and wrong secrets
//! therefore cost the same and never touch the database; they are reported as
//! [`ApiKeyError::UnknownKey`] and [`ApiKeyError::BadSecret`] for logs only.
//! Revocation and expiry are checked only after the secret matched, so a
//! caller without the secret learns nothing about a key's state.
//!
//! # Cache and staleness
//!
//! Changes made through a store (or any clone of it) reach its snapshot
//! before the call returns; restricting changes (revoke, shortening a key's
//! life on rotate) are applied to the snapshot *before* the database write, so
//! a failed or cancelled write errs towards refusing. Changes made by another
//! process (the CLI writing to the gateway's file) are picked up by a full
//! reload of the table on the first `verify` after
//! [`StoreOptions::refresh_interval`] (default 5 s, Kong's
//! `db_update_frequency`); [`ApiKeyStore::refresh`] forces one. If reloads
//! keep failing, `verify` fails closed with [`ApiKeyError::Storage`] once the
//! snapshot is older than [`StoreOptions::max_staleness`] (default 60 s). So a
//! key revoked by another process stops working within `refresh_interval`
//! while the database is healthy and within `max_staleness` in all cases.
#![forbid(unsafe_code)]

mod key;
mod store;

use serde::Serialize;

pub use store::{ApiKeyStore, DocFuture, Document, StoreOptions};

/// Whether `s` has the shape of an API key (`pal_<id>_<secret>`), so a
/// caller can keep keys away from places meant for other credentials.
pub fn looks_like_key(s: &str) -> bool {
    key::PresentedKey::parse(s).is_ok()
}

/// Longest consumer name or scope.
pub const MAX_NAME_LEN: usize = 128;
/// Most scopes on one key.
pub const MAX_SCOPES: usize = 64;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_LEN: usize = 256;

/// What the store knows about a key. Holds neither the secret nor its hash,
/// so it is safe to print, log and serialize.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub consumer: String,
    /// Sorted, without duplicates.
    pub scopes: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; the key is refused at and after this instant.
    pub expires_at: Option<i64>,
    /// Unix seconds; set once, never cleared.
    pub revoked_at: Option<i64>,
    pub description: String,
    /// The key this one replaced, when it was issued by `rotate`.
    pub rotated_from: Option<String>,
}

impl ApiKeyRecord {
    /// Neither revoked nor expired at `now` (unix seconds).
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|t| now < t)
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// What to issue. Validated by [`ApiKeyStore::create`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewKey {
    /// 1-128 characters of `[A-Za-z0-9._:-]`.
    pub consumer: String,
    /// Each 1-128 characters of `[A-Za-z0-9._:-]`; at most 64 after removing duplicates.
    pub scopes: Vec<String>,
    /// Unix seconds, in the future.
    pub expires_at: Option<i64>,
    /// Free text for operators: at most 256 characters, no control characters.
    pub description: String,
}

/// A key just issued: the only time the full key exists outside the client.
/// `Debug` shows the record and `Secret([REDACTED])`.
#[derive(Debug)]
pub struct IssuedKey {
    /// `pal_<id>_<secret>`; show it once, then drop it.
    pub key: palisade_core::Secret<String>,
    pub record: ApiKeyRecord,
}

/// Why a key was refused or an operation failed. Never carries the key, the
/// secret or any caller-supplied value.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApiKeyError {
    #[error("malformed API key")]
    Malformed,
    #[error("unknown API key")]
    UnknownKey,
    #[error("API key secret does not match")]
    BadSecret,
    #[error("API key revoked")]
    Revoked,
    #[error("API key expired")]
    Expired,
    #[error("API key pepper must be at least 32 bytes")]
    WeakPepper,
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("API key storage: {0}")]
    Storage(String),
}

impl ApiKeyError {
    /// Stable snake_case code for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::BadSecret => "bad_secret",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::WeakPepper => "weak_pepper",
            Self::InvalidInput(_) => "invalid_input",
            Self::Storage(_) => "storage",
        }
    }
}

impl From<sqlx::Error> for ApiKeyError {
    fn from(e: sqlx::Error) -> Self {
        // sqlx errors carry the statement's error, never bound values, and
        // the secret is never bound anyway.
        Self::Storage(e.to_string())
    }
}

/// Refuse operator text that contains a key: it would be stored and logged
/// in clear.
fn check_no_key(what: &str, s: &str) -> Result<(), ApiKeyError> {
    if key::contains_key(s) {
        Err(ApiKeyError::InvalidInput(format!(
            "{what} must not contain an API key"
        )))
    } else {
        Ok(())
    }
}

/// A consumer name or scope. The message never echoes the value: an operator
/// who pasted a key into the wrong field must not see it in an error or log.
fn check_name(what: &str, s: &str) -> Result<(), ApiKeyError> {
    check_no_key(what, s)?;
    let ok = !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ApiKeyError::InvalidInput(format!(
            "{what} must be 1-{MAX_NAME_LEN} characters of [A-Za-z0-9._:-]"
        )))
    }
}

/// A [`NewKey`] that passed validation, scopes in canonical order.
pub(crate) struct KeySpec {
    pub(crate) consumer: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) expires_at: Option<i64>,
    pub(crate) description: String,
}

impl KeySpec {
    pub(crate) fn parse(k: NewKey, now: i64) -> Result<Self, ApiKeyError> {
        check_name("consumer", &k.consumer)?;
        for s in &k.scopes {
            check_name("scope", s)?;
        }
        let mut scopes = k.scopes;
        scopes.sort();
        scopes.dedup();
        if scopes.len() > MAX_SCOPES {
            return Err(ApiKeyError::InvalidInput(format!(
                "at most {MAX_SCOPES} scopes"
            )));
        }
        if k.description.chars().count() > MAX_DESCRIPTION_LEN
            || k.description.chars().any(char::is_control)
        {
            return Err(ApiKeyError::InvalidInput(format!(
                "description must be at most {MAX_DESCRIPTION_LEN} characters without control characters"
            )));
        }
        check_no_key("description", &k.description)?;
        if k.expires_at.is_some_and(|t| t <= now) {
            return Err(ApiKeyError::InvalidInput(
                "expires_at must be in the future".into(),
            ));
        }
        Ok(Self {
            consumer: k.consumer,
            scopes,
            expires_at: k.expires_at,
            description: k.description,
        })
    }
}

/// Wall clock in unix seconds.
pub(crate) fn unix_now() -> i64 {
    palisade_core::now_nanos().div_euclid(1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_key(consumer: &str, scopes: &[&str]) -> NewKey {
        NewKey {
            consumer: consumer.into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ..NewKey::default()
        }
    }

    #[test]
    fn names_accept_the_documented_alphabet() {
        let long = "a".repeat(MAX_NAME_LEN);
        let spec = KeySpec::parse(new_key(&long, &["b:w", "a.r", "a.r", "x-y_z"]), 0).unwrap();
        assert_eq!(spec.scopes, ["a.r", "b:w", "x-y_z"]);
    }

    #[test]
    fn names_reject_everything_else() {
        let consumer_err = ApiKeyError::InvalidInput(
            "consumer must be 1-128 characters of [A-Za-z0-9._:-]".into(),
        );
        for bad in ["", "a b", "a/b", "é", "a\n", &"a".repeat(MAX_NAME_LEN + 1)] {
            assert_eq!(
                KeySpec::parse(new_key(bad, &[]), 0).err(),
                Some(consumer_err.clone())
            );
        }
        assert_eq!(
            KeySpec::parse(new_key("ok", &["read", ""]), 0).err(),
            Some(ApiKeyError::InvalidInput(
                "scope must be 1-128 characters of [A-Za-z0-9._:-]".into()
            ))
        );
    }

    #[test]
    fn scope_count_description_and_expiry_are_bounded() {
        let many: Vec<String> = (0..=MAX_SCOPES).map(|i| format!("s{i}")).collect();
        let k = NewKey {
            consumer: "c".into(),
            scopes: many,
            ..NewKey::default()
        };
        assert_eq!(
            KeySpec::parse(k, 0).err(),
            Some(ApiKeyError::InvalidInput("at most 64 scopes".into()))
        );
        let desc_err = ApiKeyError::InvalidInput(
            "description must be at most 256 characters without control characters".into(),
        );
        for d in [
            "a\u{1b}[31m".to_string(),
            "x".repeat(MAX_DESCRIPTION_LEN + 1),
        ] {
            let k = NewKey {
                description: d,
                ..new_key("c", &[])
            };
            assert_eq!(KeySpec::parse(k, 0).err(), Some(desc_err.clone()));
        }
        let k = NewKey {
            description: "é".repeat(MAX_DESCRIPTION_LEN),
            ..new_key("c", &[])
        };
        assert!(KeySpec::parse(k, 0).is_ok());
        let k = NewKey {
            expires_at: Some(100),
            ..new_key("c", &[])
        };
        assert_eq!(
            KeySpec::parse(k.clone(), 100).err(),
            Some(ApiKeyError::InvalidInput(
                "expires_at must be in the future".into()
            ))
        );
        assert!(KeySpec::parse(k, 99).is_ok());
    }

    #[test]
    fn reasons_are_stable() {
        let all = [
            (ApiKeyError::Malformed, "malformed"),
            (ApiKeyError::UnknownKey, "unknown_key"),
            (ApiKeyError::BadSecret, "bad_secret"),
            (ApiKeyError::Revoked, "revoked"),
            (ApiKeyError::Expired, "expired"),
            (ApiKeyError::WeakPepper, "weak_pepper"),
            (ApiKeyError::InvalidInput("x".into()), "invalid_input"),
            (ApiKeyError::Storage("x".into()), "storage"),
        ];
        for (e, r) in all {
            assert_eq!(e.reason(), r);
        }
    }

    #[test]
    fn record_activity() {
        let r = ApiKeyRecord {
            id: "id".into(),
            consumer: "c".into(),
            scopes: vec!["read".into()],
            created_at: 0,
            expires_at: Some(10),
            revoked_at: None,
            description: String::new(),
            rotated_from: None,
        };
        assert!(r.is_active(9));
        assert!(!r.is_active(10));
        assert!(r.has_scope("read"));
        assert!(!r.has_scope("write"));
        let revoked = ApiKeyRecord {
            revoked_at: Some(5),
            expires_at: None,
            ..r
        };
        assert!(!revoked.is_active(0));
    }
}
