//! AES-256-GCM with associated data.
//!
//! Wire format of a sealed message: `nonce (12 bytes) || ciphertext || tag (16 bytes)`.
//! Nonces are random: with 2^32 messages per key the collision probability stays
//! below 2^-32, and the barrier rotates terms long before that (docs/threat-model.md).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

pub const KEY_LEN: usize = 32;
pub const OVERHEAD: usize = NONCE_LEN + 16;

/// Why a message could not be opened. Deliberately says nothing about which
/// check failed: a wrong key, a flipped byte and a moved ciphertext look alike.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AeadError {
    #[error("key must be 32 bytes")]
    KeyLength,
    #[error("message authentication failed")]
    Open,
    #[error("encryption failed")]
    Seal,
}

/// An AES-256-GCM key. The raw bytes are kept zeroized beside the aws-lc key
/// so the key can be serialised into a keyring; both are wiped on drop.
pub struct AeadKey {
    raw: Zeroizing<Vec<u8>>,
    key: LessSafeKey,
}

impl std::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AeadKey([REDACTED])")
    }
}

impl AeadKey {
    pub fn generate() -> Self {
        // Invariant: 32 random bytes are always a valid AES-256 key.
        #[allow(clippy::expect_used)]
        Self::from_bytes(&crate::random_bytes(KEY_LEN)).expect("32-byte key")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, AeadError> {
        if bytes.len() != KEY_LEN {
            return Err(AeadError::KeyLength);
        }
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| AeadError::KeyLength)?;
        Ok(Self {
            raw: Zeroizing::new(bytes.to_vec()),
            key: LessSafeKey::new(unbound),
        })
    }

    /// The raw key bytes, for wrapping into a keyring. Never log them.
    pub fn expose_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// Encrypt `plaintext` bound to `aad`; returns `nonce || ct || tag`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, AeadError> {
        let nonce_bytes = crate::random_bytes(NONCE_LEN);
        let mut nonce_arr = [0u8; NONCE_LEN];
        nonce_arr.copy_from_slice(&nonce_bytes);
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.extend_from_slice(&nonce_arr);
        let mut body = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_arr),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| AeadError::Seal)?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decrypt a message produced by [`AeadKey::seal`] with the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, AeadError> {
        if sealed.len() < OVERHEAD {
            return Err(AeadError::Open);
        }
        let mut nonce_arr = [0u8; NONCE_LEN];
        nonce_arr.copy_from_slice(&sealed[..NONCE_LEN]);
        let mut body = Zeroizing::new(sealed[NONCE_LEN..].to_vec());
        let len = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce_arr),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| AeadError::Open)?
            .len();
        body.truncate(len);
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let k = AeadKey::generate();
        let ct = k.seal(b"path/a", b"hello").unwrap();
        assert_eq!(&k.open(b"path/a", &ct).unwrap()[..], b"hello");
    }

    #[test]
    fn wrong_aad_flipped_byte_wrong_key_truncated_rejected() {
        let k = AeadKey::generate();
        let ct = k.seal(b"path/a", b"hello").unwrap();
        assert_eq!(k.open(b"path/b", &ct).unwrap_err(), AeadError::Open);
        for i in 0..ct.len() {
            let mut bad = ct.clone();
            bad[i] ^= 0x01;
            assert_eq!(
                k.open(b"path/a", &bad).unwrap_err(),
                AeadError::Open,
                "byte {i}"
            );
        }
        let other = AeadKey::generate();
        assert_eq!(other.open(b"path/a", &ct).unwrap_err(), AeadError::Open);
        assert_eq!(k.open(b"path/a", &ct[..10]).unwrap_err(), AeadError::Open);
        assert_eq!(
            AeadKey::from_bytes(&[0u8; 16]).unwrap_err(),
            AeadError::KeyLength
        );
    }

    #[test]
    fn debug_redacts() {
        let k = AeadKey::from_bytes(&[0x41; 32]).unwrap();
        assert_eq!(format!("{k:?}"), "AeadKey([REDACTED])");
    }
}
