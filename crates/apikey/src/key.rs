//! Key material: generation, the wire format `pal_<id>_<secret>` and the keyed hash.
//!
//! Everything here is pure (no I/O) so the parser can be tested and fuzzed on
//! its own. Secrets live in `Zeroizing` buffers sized up front so no copy is
//! left behind by a reallocation.

use palisade_crypto::mac::MacKey;
use zeroize::Zeroizing;

use crate::ApiKeyError;

/// Every key starts with this, so secret scanners (GitHub, gitleaks) and
/// humans can recognise a leaked Palisade key.
pub(crate) const PREFIX: &str = "pal_";
pub(crate) const ID_LEN: usize = 12;
/// 32 base62 symbols carry 32 * log2(62) = 190.5 bits.
pub(crate) const SECRET_LEN: usize = 32;
/// Exact length of a key. Anything else (including anything over 256 bytes) is
/// rejected by a length compare before it is split, so a hostile header costs
/// nothing.
pub(crate) const KEY_LEN: usize = PREFIX.len() + ID_LEN + 1 + SECRET_LEN;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Largest multiple of 62 that fits in a byte (4 * 62). Bytes at or above it
/// are rejected so `b % 62` is uniform over the alphabet.
const REJECT_FROM: u8 = 248;

/// `n` uniform base62 symbols from the OS CSPRNG, by rejection sampling.
fn random_base62(n: usize) -> Zeroizing<String> {
    // Capacity fixed up front: pushes never reallocate, so zeroizing `out`
    // wipes every copy of the symbols.
    let mut out = Zeroizing::new(String::with_capacity(n));
    while out.len() < n {
        // 3% of bytes are rejected; n + 8 almost always finishes in one draw.
        let bytes = Zeroizing::new(palisade_core::random_bytes(n + 8));
        for &b in bytes.iter() {
            if out.len() == n {
                break;
            }
            if b < REJECT_FROM {
                out.push(char::from(ALPHABET[usize::from(b % 62)]));
            }
        }
    }
    out
}

/// `[0-9A-Za-z]` exactly: `is_ascii_alphanumeric` is that set and nothing else.
fn is_base62(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The public half of a key: 12 base62 symbols, the database primary key.
/// Not secret (it appears in `list` output and logs), but unguessable.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct KeyId(String);

impl KeyId {
    pub(crate) fn generate() -> Self {
        Self(random_base62(ID_LEN).to_string())
    }

    pub(crate) fn parse(s: &str) -> Result<Self, ApiKeyError> {
        if s.len() == ID_LEN && is_base62(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ApiKeyError::Malformed)
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// A key as presented by a client, split but not yet checked against storage.
/// Borrowed from the caller's buffer; deliberately no `Debug`.
pub(crate) struct PresentedKey<'a> {
    pub(crate) id: &'a str,
    secret: &'a str,
}

impl<'a> PresentedKey<'a> {
    /// Shape check only: prefix, lengths, alphabet. Every failure is
    /// `Malformed` and happens before any lookup.
    pub(crate) fn parse(s: &'a str) -> Result<Self, ApiKeyError> {
        if s.len() != KEY_LEN {
            return Err(ApiKeyError::Malformed);
        }
        let rest = s.strip_prefix(PREFIX).ok_or(ApiKeyError::Malformed)?;
        // The id has no `_`, so the first `_` is the separator; a second `_`
        // lands in the secret and fails the alphabet check.
        let (id, secret) = rest.split_once('_').ok_or(ApiKeyError::Malformed)?;
        if id.len() != ID_LEN || secret.len() != SECRET_LEN || !is_base62(id) || !is_base62(secret)
        {
            return Err(ApiKeyError::Malformed);
        }
        Ok(Self { id, secret })
    }

    pub(crate) fn hash(&self, mac: &MacKey) -> [u8; 32] {
        keyed_hash(mac, self.id, self.secret)
    }
}

/// A freshly generated key: the id and the secret, before it is shown.
pub(crate) struct Fresh {
    pub(crate) id: KeyId,
    secret: Zeroizing<String>,
}

impl Fresh {
    pub(crate) fn generate() -> Self {
        Self {
            id: KeyId::generate(),
            secret: random_base62(SECRET_LEN),
        }
    }

    pub(crate) fn hash(&self, mac: &MacKey) -> [u8; 32] {
        keyed_hash(mac, self.id.as_str(), &self.secret)
    }

    /// The full `pal_<id>_<secret>` string, the only form the secret leaves in.
    pub(crate) fn into_key(self) -> palisade_core::Secret<String> {
        let mut key = String::with_capacity(KEY_LEN);
        key.push_str(PREFIX);
        key.push_str(self.id.as_str());
        key.push('_');
        key.push_str(&self.secret);
        palisade_core::Secret::new(key)
    }
}

/// Whether `s` contains something shaped like a key. Operator-supplied text
/// (consumer, scopes, description) is stored and logged in clear, so a key
/// pasted into the wrong field must be refused rather than kept.
pub(crate) fn contains_key(s: &str) -> bool {
    s.match_indices(PREFIX).any(|(i, _)| {
        s.get(i..i + KEY_LEN)
            .is_some_and(|w| PresentedKey::parse(w).is_ok())
    })
}

/// HMAC-SHA256(pepper, id || ":" || secret). Binding the id means a hash row
/// copied or moved to another id no longer matches any secret.
fn keyed_hash(mac: &MacKey, id: &str, secret: &str) -> [u8; 32] {
    let mut msg = Zeroizing::new(Vec::with_capacity(id.len() + 1 + secret.len()));
    msg.extend_from_slice(id.as_bytes());
    msg.push(b':');
    msg.extend_from_slice(secret.as_bytes());
    mac.sign(&msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let mut ids = HashSet::new();
        for _ in 0..1000 {
            let fresh = Fresh::generate();
            let id = fresh.id.clone();
            let key = fresh.into_key();
            let key = key.expose();
            assert_eq!(key.len(), KEY_LEN);
            let parsed = PresentedKey::parse(key).expect("generated key parses");
            assert_eq!(parsed.id, id.as_str());
            assert!(!id.as_str().contains('_'));
            assert!(ids.insert(id), "id collision in 1000 draws");
        }
    }

    #[test]
    fn sampler_covers_the_whole_alphabet() {
        let s = random_base62(20_000);
        let seen: HashSet<u8> = s.bytes().collect();
        assert_eq!(seen.len(), 62);
        assert!(is_base62(&s));
    }

    #[test]
    fn hash_binds_the_id() {
        let mac = MacKey::from_bytes(&[7u8; 32]);
        assert_ne!(
            keyed_hash(&mac, "aaaaaaaaaaaa", "s"),
            keyed_hash(&mac, "bbbbbbbbbbbb", "s")
        );
        // The separator keeps (id, secret) splits apart.
        assert_ne!(keyed_hash(&mac, "ab", "c"), keyed_hash(&mac, "a", "bc"));
    }

    #[test]
    fn key_shaped_text_is_found() {
        let key = Fresh::generate().into_key();
        let key = key.expose();
        assert!(contains_key(key));
        assert!(contains_key(&format!("my key is {key}, keep it")));
        assert!(contains_key(&format!("pal_pal_{key}")));
        assert!(!contains_key(&key[..KEY_LEN - 1]));
        assert!(!contains_key("pal_ is our prefix"));
        assert!(!contains_key("ééé pal_"));
    }

    #[test]
    fn key_id_parse() {
        assert!(KeyId::parse("abcDEF012345").is_ok());
        assert_eq!(KeyId::parse("abcDEF01234"), Err(ApiKeyError::Malformed));
        assert_eq!(KeyId::parse("abcDEF01234_"), Err(ApiKeyError::Malformed));
        assert_eq!(KeyId::parse(""), Err(ApiKeyError::Malformed));
    }
}
