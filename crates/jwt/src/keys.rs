//! Verification keys: parsing a JWKS into typed keys, choosing the keys a
//! token may be checked against, and the signature primitive itself.
//!
//! A key's type (RSA, P-256, P-384, Ed25519, HMAC) is fixed when it is parsed,
//! and a key verifies only the algorithms of its type (and only its own `alg`
//! when the JWK names one). That is the whole defence against key confusion:
//! an RSA key is never handed to HMAC, whatever the token says.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use serde_json::{Map, Value};

use crate::JwtError;
use crate::config::Alg;

/// Largest JWKS document accepted, from a file or a URL.
pub(crate) const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Most keys taken from one JWKS document.
pub(crate) const MAX_KEYS: usize = 100;
/// A token without `kid` is tried against at most this many keys of its type;
/// with more, the issuer must send `kid`.
pub(crate) const MAX_KEYS_WITHOUT_KID: usize = 8;

const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 8192;

/// The type of a key, which fixes the algorithms it can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyType {
    Rsa,
    P256,
    P384,
    Ed25519,
    Hmac,
}

impl KeyType {
    fn for_alg(alg: Alg) -> KeyType {
        match alg {
            Alg::RS256 | Alg::PS256 => KeyType::Rsa,
            Alg::ES256 => KeyType::P256,
            Alg::ES384 => KeyType::P384,
            Alg::EdDSA => KeyType::Ed25519,
            Alg::HS256 => KeyType::Hmac,
        }
    }
}

/// One verification key.
pub(crate) struct Key {
    kid: Option<String>,
    /// The JWK's own `alg`, when it names one: the key then verifies only that.
    alg: Option<Alg>,
    kty: KeyType,
    material: DecodingKey,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Public keys are not secret, but HMAC keys are; print neither.
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("kty", &self.kty)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// A shared HS256 secret. The caller has checked its length.
    pub(crate) fn hmac(kid: Option<String>, secret: &[u8]) -> Option<Key> {
        Some(Key {
            kid,
            alg: Some(Alg::HS256),
            kty: KeyType::Hmac,
            material: DecodingKey::from_secret(secret).ok()?,
        })
    }

    /// Whether this key may verify a token signed with `alg`.
    pub(crate) fn accepts(&self, alg: Alg) -> bool {
        self.kty == KeyType::for_alg(alg) && self.alg.is_none_or(|a| a == alg)
    }

    /// The signature primitive: jsonwebtoken's aws-lc-rs verifier for `alg`
    /// (RSA PKCS#1 v1.5 / PSS 2048–8192 bits with SHA-256, ECDSA P-256/P-384
    /// with fixed-length r||s signatures, Ed25519, HMAC-SHA256 compared in
    /// constant time). The provider is named explicitly rather than taken from
    /// jsonwebtoken's process-wide default, so a feature added elsewhere in the
    /// workspace can never switch it or make it panic.
    pub(crate) fn verify(&self, alg: Alg, message: &[u8], signature: &[u8]) -> bool {
        if !self.accepts(alg) {
            return false;
        }
        let provider = &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER;
        let Ok(verifier) = (provider.verifier_factory)(&alg.jsonwebtoken(), &self.material) else {
            return false;
        };
        verifier.verify(message, &signature.to_vec()).is_ok()
    }

    /// Parse one JWK. `Err` says why it is not usable; the caller skips it.
    pub(crate) fn from_jwk(jwk: &Map<String, Value>) -> Result<Key, &'static str> {
        let kid = match jwk.get("kid") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err("kid is not a string"),
        };
        // A JWK meant for encryption, or whose key_ops exclude verify, must
        // not verify signatures (RFC 7517 §4.2, §4.3).
        match jwk.get("use") {
            None => {}
            Some(Value::String(u)) if u == "sig" => {}
            Some(_) => return Err("use is not sig"),
        }
        match jwk.get("key_ops") {
            None => {}
            Some(Value::Array(ops)) if ops.iter().any(|o| o == "verify") => {}
            Some(_) => return Err("key_ops does not include verify"),
        }
        // A published JWKS holding private parts means the issuer's key has
        // leaked: anyone could sign with it. Refuse the key.
        if ["d", "p", "q", "dp", "dq", "qi", "oth"]
            .iter()
            .any(|m| jwk.contains_key(*m))
        {
            return Err("contains private key material");
        }
        let kty = match jwk.get("kty") {
            Some(Value::String(s)) => s.as_str(),
            _ => return Err("kty missing"),
        };
        let alg_name = match jwk.get("alg") {
            None => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => return Err("alg is not a string"),
        };
        let (key_type, material) = match kty {
            "RSA" => {
                let n = b64_member(jwk, "n")?;
                let e = b64_member(jwk, "e")?;
                let bits = bit_len(&n);
                if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                    return Err("RSA modulus outside 2048..=8192 bits");
                }
                if e.is_empty() || e.len() > 8 || e.last().is_none_or(|b| b & 1 == 0) {
                    return Err("RSA exponent unusable");
                }
                (KeyType::Rsa, DecodingKey::from_rsa_raw_components(&n, &e))
            }
            "EC" => {
                let (key_type, len) = match jwk.get("crv").and_then(Value::as_str) {
                    Some("P-256") => (KeyType::P256, 32),
                    Some("P-384") => (KeyType::P384, 48),
                    _ => return Err("unsupported EC curve"),
                };
                let x = b64_member(jwk, "x")?;
                let y = b64_member(jwk, "y")?;
                if x.len() != len || y.len() != len {
                    return Err("EC coordinate has the wrong length");
                }
                // The uncompressed SEC1 point is what aws-lc's fixed-length
                // ECDSA verifier takes; jsonwebtoken hands "der" bytes through.
                let mut point = Vec::with_capacity(1 + 2 * len);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                (key_type, DecodingKey::from_ec_der(&point))
            }
            "OKP" => {
                if jwk.get("crv").and_then(Value::as_str) != Some("Ed25519") {
                    return Err("unsupported OKP curve");
                }
                let x = b64_member(jwk, "x")?;
                if x.len() != 32 {
                    return Err("Ed25519 key has the wrong length");
                }
                (KeyType::Ed25519, DecodingKey::from_ed_der(&x))
            }
            // Symmetric keys are only ever configured explicitly
            // (`KeySource::Hs256Secret`), never taken from a JWKS.
            "oct" => return Err("symmetric keys are not taken from a JWKS"),
            _ => return Err("unsupported kty"),
        };
        let alg = match alg_name {
            None => None,
            // RFC 9864 names the same algorithm "Ed25519".
            Some("Ed25519") if key_type == KeyType::Ed25519 => Some(Alg::EdDSA),
            Some(name) => match Alg::from_jws(name) {
                Some(a) if KeyType::for_alg(a) == key_type => Some(a),
                Some(_) => return Err("alg does not fit kty"),
                None => return Err("unsupported alg"),
            },
        };
        Ok(Key {
            kid,
            alg,
            kty: key_type,
            material,
        })
    }
}

/// Why a JWKS document yielded no key set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JwksError {
    #[error("larger than 1 MiB")]
    TooLarge,
    #[error("not a JSON object with a `keys` array")]
    NotJwks,
    #[error("more than {MAX_KEYS} keys")]
    TooManyKeys,
    #[error("no usable signature verification key")]
    NoUsableKeys,
}

/// The keys of one issuer, immutable once built (a refresh replaces the set).
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    pub(crate) fn new(keys: Vec<Key>) -> KeySet {
        KeySet { keys }
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Parse a JWKS document (RFC 7517 §5). Unusable keys are skipped (and
    /// logged at debug); a document with no usable key at all is an error.
    pub(crate) fn from_jwks(bytes: &[u8]) -> Result<KeySet, JwksError> {
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge);
        }
        let doc = crate::json::object(bytes).ok_or(JwksError::NotJwks)?;
        let Some(Value::Array(entries)) = doc.get("keys") else {
            return Err(JwksError::NotJwks);
        };
        if entries.len() > MAX_KEYS {
            return Err(JwksError::TooManyKeys);
        }
        let mut keys = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            let parsed = match entry {
                Value::Object(jwk) => Key::from_jwk(jwk),
                _ => Err("not a JSON object"),
            };
            match parsed {
                Ok(key) => keys.push(key),
                Err(why) => tracing::debug!(index, why, "skipping JWKS entry"),
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKeys);
        }
        Ok(KeySet { keys })
    }

    /// The keys a token with this `kid` and `alg` may be verified against.
    ///
    /// `kid` is only ever compared for equality with the keys' `kid`s, so a
    /// `kid` such as `../../etc/passwd` simply finds nothing. With a `kid`
    /// that names keys none of which fits `alg`, the answer is
    /// `AlgNotAllowed` (an RSA key never verifies HS256); without a `kid`,
    /// every key of the right type is a candidate, up to
    /// [`MAX_KEYS_WITHOUT_KID`].
    pub(crate) fn candidates(&self, kid: Option<&str>, alg: Alg) -> Result<Vec<&Key>, JwtError> {
        match kid {
            Some(kid) => {
                let named: Vec<&Key> = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .collect();
                if named.is_empty() {
                    return Err(JwtError::UnknownKey);
                }
                let fitting: Vec<&Key> = named.into_iter().filter(|k| k.accepts(alg)).collect();
                if fitting.is_empty() {
                    return Err(JwtError::AlgNotAllowed);
                }
                Ok(fitting)
            }
            None => {
                let fitting: Vec<&Key> = self.keys.iter().filter(|k| k.accepts(alg)).collect();
                if fitting.is_empty() || fitting.len() > MAX_KEYS_WITHOUT_KID {
                    return Err(JwtError::UnknownKey);
                }
                Ok(fitting)
            }
        }
    }
}

/// Strict base64url without padding, as RFC 7515 §2 and RFC 7517 require.
/// Non-canonical trailing bits are refused too.
pub(crate) fn b64url(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

fn b64_member(jwk: &Map<String, Value>, name: &str) -> Result<Vec<u8>, &'static str> {
    match jwk.get(name) {
        Some(Value::String(s)) => b64url(s).ok_or("member is not base64url"),
        _ => Err("member missing"),
    }
}

/// Bit length of a big-endian unsigned integer.
fn bit_len(n: &[u8]) -> usize {
    match n.iter().position(|b| *b != 0) {
        None => 0,
        Some(i) => (n.len() - i - 1) * 8 + (8 - n[i].leading_zeros() as usize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_lengths() {
        assert_eq!(bit_len(&[]), 0);
        assert_eq!(bit_len(&[0, 0]), 0);
        assert_eq!(bit_len(&[1]), 1);
        assert_eq!(bit_len(&[0, 0x80, 0]), 16);
        assert_eq!(bit_len(&[0xff; 256]), 2048);
    }

    #[test]
    fn strict_base64url() {
        assert_eq!(b64url("Zm9v"), Some(b"foo".to_vec()));
        assert_eq!(b64url(""), Some(vec![]));
        assert_eq!(b64url("Zm9v="), None);
        assert_eq!(b64url("Zm8="), None);
        assert_eq!(b64url("+/+/"), None);
        assert_eq!(b64url("Zm 9v"), None);
        // "AB" carries non-zero unused bits: not the canonical encoding.
        assert_eq!(b64url("AB"), None);
        assert_eq!(b64url("AA"), Some(vec![0]));
    }
}
