//! HMAC-SHA256, SHA-256, keyed credential hashing and constant-time equality.
//!
//! Tokens and accessors are stored only as `HMAC-SHA256(key, value)`, so a copy
//! of the storage (which is also encrypted) cannot be turned back into a usable
//! credential, and lookups compare fixed-length MACs.

use aws_lc_rs::{digest, hmac};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// An HMAC-SHA256 key; the raw bytes are kept (zeroized) so it can be persisted.
pub struct MacKey {
    raw: Zeroizing<Vec<u8>>,
    key: hmac::Key,
}

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey([REDACTED])")
    }
}

impl MacKey {
    pub fn generate() -> Self {
        Self::from_bytes(&crate::random_bytes(32))
    }
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self {
            raw: Zeroizing::new(bytes.to_vec()),
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        }
    }
    pub fn expose_bytes(&self) -> &[u8] {
        &self.raw
    }
    pub fn sign(&self, data: &[u8]) -> [u8; 32] {
        let tag = hmac::sign(&self.key, data);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }
    /// Lower-case hex of the MAC; used as a storage key for credentials.
    pub fn sign_hex(&self, data: &[u8]) -> String {
        hex::encode(self.sign(data))
    }
    /// Constant-time verification of a MAC.
    pub fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        hmac::verify(&self.key, data, tag).is_ok()
    }
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-1, for what needs it by specification and not for security: the
/// WAF's `t:sha1` transformation (CRS hashes the User-Agent with it to key
/// a collection). Never use it to protect anything.
pub fn sha1_legacy(data: &[u8]) -> [u8; 20] {
    let d = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, data);
    let mut out = [0u8; 20];
    out.copy_from_slice(d.as_ref());
    out
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha256(data))
}

/// Equality that takes the same time whatever the contents (lengths are public).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2.
    #[test]
    fn rfc4231_case2() {
        let k = MacKey::from_bytes(b"Jefe");
        assert_eq!(
            k.sign_hex(b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn verify_rejects_other_data_and_key() {
        let k = MacKey::generate();
        let t = k.sign(b"a");
        assert!(k.verify(b"a", &t));
        assert!(!k.verify(b"b", &t));
        assert!(!MacKey::generate().verify(b"a", &t));
    }

    #[test]
    fn sha256_empty() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(ct_eq(b"ab", b"ab"));
        assert!(!ct_eq(b"ab", b"ac"));
    }
}
