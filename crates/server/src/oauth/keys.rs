//! Signing keys of the OAuth2/OIDC provider (Vault's `identity/oidc/key`):
//! a ring per key name, behind the barrier at `sys/oauth/key/<name>`.
//!
//! A ring always holds one **current** version (it signs) and one **next**
//! version (published in the JWKS, not signing yet). Rotation — when the
//! current version is `rotation_period` old, checked at every use and by
//! the background job, or on demand — makes next current, makes a new
//! next, and retires the old current: it stays published for
//! `verification_ttl` (at least the longest token lifetime a client may
//! get), so every token it signed verifies until it expires, and not after.
//! Relying parties that cache the JWKS see a key for a whole rotation
//! period before the first token it signs.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use palisade_crypto::transit::{self, HashAlg, KeyType, Marshaling, RsaPadding, SignOptions};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::logical::ApiError;

pub const KEY_PREFIX: &str = "sys/oauth/key/";
pub const DEFAULT_ROTATION: i64 = 24 * 3600;
pub const DEFAULT_VERIFICATION_TTL: i64 = 24 * 3600;

/// The signature algorithms keys can have (EdDSA by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    EdDSA,
    ES256,
    RS256,
}

impl Algorithm {
    pub fn parse(s: &str) -> Option<Algorithm> {
        Some(match s {
            "EdDSA" => Algorithm::EdDSA,
            "ES256" => Algorithm::ES256,
            "RS256" => Algorithm::RS256,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::EdDSA => "EdDSA",
            Algorithm::ES256 => "ES256",
            Algorithm::RS256 => "RS256",
        }
    }
    fn key_type(self) -> KeyType {
        match self {
            Algorithm::EdDSA => KeyType::Ed25519,
            Algorithm::ES256 => KeyType::EcdsaP256,
            Algorithm::RS256 => KeyType::Rsa2048,
        }
    }
    pub fn jwt_alg(self) -> palisade_jwt::Alg {
        match self {
            Algorithm::EdDSA => palisade_jwt::Alg::EdDSA,
            Algorithm::ES256 => palisade_jwt::Alg::ES256,
            Algorithm::RS256 => palisade_jwt::Alg::RS256,
        }
    }
}

/// One version of a key.
#[derive(Clone, Serialize, Deserialize)]
pub struct Version {
    pub kid: String,
    /// PKCS#8, base64 (behind the barrier; never returned).
    private_pkcs8: String,
    pub jwk: Value,
    pub created: i64,
    /// When it started signing; 0: the next version, published only.
    pub signing_since: i64,
    /// When it stops being published; 0: not retired.
    pub retire_at: i64,
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Version")
            .field("kid", &self.kid)
            .field("signing_since", &self.signing_since)
            .field("retire_at", &self.retire_at)
            .finish_non_exhaustive()
    }
}

/// A key ring, as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ring {
    pub algorithm: Algorithm,
    pub rotation_period: i64,
    pub verification_ttl: i64,
    pub versions: Vec<Version>,
    /// The identity-token roles (`identity/oidc/role`) whose client IDs
    /// may sign with it; `*` for all. Empty: none (Vault's default).
    #[serde(default)]
    pub allowed_client_ids: Vec<String>,
}

fn new_version(alg: Algorithm, now: i64) -> Result<Version, ApiError> {
    let private = transit::generate(alg.key_type(), 0).map_err(ApiError::internal)?;
    let public = transit::public_key(alg.key_type(), &private)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::internal("no public key"))?;
    let mut jwk = match alg {
        Algorithm::EdDSA => {
            json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(&public)})
        }
        _ => palisade_jwt::jwk_from_spki_der(&public).map_err(ApiError::internal)?,
    };
    let kid = palisade_core::uuid_v4();
    if let Value::Object(o) = &mut jwk {
        o.insert("kid".into(), json!(kid));
        o.insert("alg".into(), json!(alg.as_str()));
        o.insert("use".into(), json!("sig"));
    }
    Ok(Version {
        kid,
        private_pkcs8: STANDARD.encode(&*private),
        jwk,
        created: now,
        signing_since: 0,
        retire_at: 0,
    })
}

impl Ring {
    /// A new ring: a current version signing from now and a next one.
    pub fn new(
        algorithm: Algorithm,
        rotation_period: i64,
        verification_ttl: i64,
        now: i64,
    ) -> Result<Ring, ApiError> {
        let mut current = new_version(algorithm, now)?;
        current.signing_since = now;
        Ok(Ring {
            algorithm,
            rotation_period,
            verification_ttl,
            versions: vec![current, new_version(algorithm, now)?],
            allowed_client_ids: Vec::new(),
        })
    }

    pub fn current(&self) -> Option<&Version> {
        self.versions
            .iter()
            .filter(|v| v.signing_since > 0 && v.retire_at == 0)
            .max_by_key(|v| v.signing_since)
    }

    pub fn rotation_due(&self, now: i64) -> bool {
        self.current()
            .is_none_or(|c| now >= c.signing_since.saturating_add(self.rotation_period))
            || self
                .versions
                .iter()
                .any(|v| v.retire_at != 0 && v.retire_at <= now)
    }

    /// Next becomes current, a new next is made, the old current retires
    /// after `verification_ttl`; versions past their retirement are dropped.
    pub fn rotate(&mut self, now: i64) -> Result<(), ApiError> {
        self.rotate_with(now, self.verification_ttl)
    }

    /// [`Ring::rotate`] with the old current retiring after `ttl` (Vault's
    /// `verification_ttl` on `rotate`: this rotation only, not stored).
    pub fn rotate_with(&mut self, now: i64, ttl: i64) -> Result<(), ApiError> {
        for v in &mut self.versions {
            if v.signing_since > 0 && v.retire_at == 0 {
                v.retire_at = now.saturating_add(ttl);
            }
        }
        match self.versions.iter_mut().find(|v| v.signing_since == 0) {
            Some(next) => next.signing_since = now,
            None => {
                let mut v = new_version(self.algorithm, now)?;
                v.signing_since = now;
                self.versions.push(v);
            }
        }
        self.versions.push(new_version(self.algorithm, now)?);
        self.prune(now);
        Ok(())
    }

    /// Drop versions past their retirement.
    pub fn prune(&mut self, now: i64) {
        self.versions
            .retain(|v| v.retire_at == 0 || v.retire_at > now);
    }

    /// The algorithms of the versions it holds (an algorithm change keeps
    /// the old keys published until they retire).
    pub fn algorithms(&self) -> Vec<palisade_jwt::Alg> {
        let mut out: Vec<palisade_jwt::Alg> = Vec::new();
        for v in &self.versions {
            if let Some(a) = v
                .jwk
                .get("alg")
                .and_then(Value::as_str)
                .and_then(Algorithm::parse)
                && !out.contains(&a.jwt_alg())
            {
                out.push(a.jwt_alg());
            }
        }
        if out.is_empty() {
            out.push(self.algorithm.jwt_alg());
        }
        out
    }

    /// The published keys: next, current and retiring ones.
    pub fn jwks(&self, now: i64) -> Vec<Value> {
        self.versions
            .iter()
            .filter(|v| v.retire_at == 0 || v.retire_at > now)
            .map(|v| v.jwk.clone())
            .collect()
    }
}

/// A parsed signing key (the current version), kept in memory.
pub struct Signer {
    pub kid: String,
    pub alg: Algorithm,
    pkcs8: zeroize::Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl Signer {
    pub fn from_version(alg: Algorithm, v: &Version) -> Result<Signer, ApiError> {
        Ok(Signer {
            kid: v.kid.clone(),
            alg,
            pkcs8: zeroize::Zeroizing::new(
                STANDARD
                    .decode(&v.private_pkcs8)
                    .map_err(ApiError::internal)?,
            ),
        })
    }

    /// A compact JWS of `claims` with `typ`.
    pub fn sign(&self, typ: &str, claims: &Value) -> Result<String, ApiError> {
        let header = json!({"alg": self.alg.as_str(), "kid": self.kid, "typ": typ});
        let mut out =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).map_err(ApiError::internal)?);
        out.push('.');
        out.push_str(
            &URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).map_err(ApiError::internal)?),
        );
        let opts = SignOptions {
            hash: HashAlg::Sha2_256,
            prehashed: false,
            padding: RsaPadding::Pkcs1v15,
            marshaling: Marshaling::Jws,
        };
        let sig = transit::sign(self.alg.key_type(), &self.pkcs8, out.as_bytes(), &opts)
            .map_err(ApiError::internal)?;
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(sig));
        Ok(out)
    }
}

/// In-memory view of the rings: the stored ring and its parsed signer, by
/// key name. Dropped on every write and at seal.
#[derive(Default)]
pub struct Cache {
    map: std::sync::Mutex<HashMap<String, Loaded>>,
}

/// A ring and the parsed signer of its current version.
pub type Loaded = (Arc<Ring>, Arc<Signer>);

impl Cache {
    pub fn get(&self, name: &str) -> Option<(Arc<Ring>, Arc<Signer>)> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }
    pub fn put(&self, name: &str, ring: Arc<Ring>, signer: Arc<Signer>) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), (ring, signer));
    }
    pub fn forget(&self, name: Option<&str>) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match name {
            Some(n) => {
                m.remove(n);
            }
            None => m.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_publishes_next_before_it_signs_and_retires_old_after_the_ttl() {
        let mut r = Ring::new(Algorithm::EdDSA, 100, 50, 1000).unwrap();
        let first = r.current().unwrap().kid.clone();
        let next = r.versions[1].kid.clone();
        assert_eq!(r.jwks(1000).len(), 2, "current and next are published");
        assert!(!r.rotation_due(1099));
        assert!(r.rotation_due(1100));
        r.rotate(1100).unwrap();
        assert_eq!(r.current().unwrap().kid, next, "next signs now");
        let kids: Vec<String> = r
            .jwks(1100)
            .iter()
            .map(|j| j["kid"].as_str().unwrap().to_string())
            .collect();
        assert!(kids.contains(&first), "the old key stays published");
        assert_eq!(kids.len(), 3);
        assert!(r.rotation_due(1150), "the old key's retirement is due");
        r.prune(1150);
        assert!(!r.jwks(1150).iter().any(|j| j["kid"] == first.as_str()));
    }

    #[test]
    fn every_algorithm_signs_a_verifiable_jws() {
        for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
            let r = Ring::new(alg, 100, 100, 1000).unwrap();
            let s = Signer::from_version(alg, r.current().unwrap()).unwrap();
            let jws = s.sign("at+jwt", &json!({"a": 1})).unwrap();
            assert_eq!(jws.split('.').count(), 3, "{alg:?}");
            let jwk = &r.current().unwrap().jwk;
            assert_eq!(jwk["alg"], alg.as_str());
            assert!(jwk.get("d").is_none(), "no private part published");
        }
    }
}
