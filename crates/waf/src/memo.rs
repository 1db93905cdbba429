//! Negative results kept across transactions, for the values clients send
//! unchanged request after request (headers, cookie names, the method and
//! protocol, argument names).
//!
//! Whether a link matches a value is a pure function of the two when the
//! link's operator reads nothing but the value (no macro in its argument),
//! a miss writes nothing (no negated operator with `capture`), and its
//! transformations are pure (they all are). Such a link that did **not**
//! match a value will never match it: the memo keeps that answer, keyed by
//! the link's load-time id and a 128-bit keyed digest of the value, so the
//! transformations and the operator are skipped the next time. A match is
//! never kept: it runs again in full, with its captures, `MATCHED_VAR` and
//! actions, as before.
//!
//! - No request data is kept: an entry is the link id and two SipHash-1-3
//!   values of the value under two random keys per memo (std's keyed hash);
//!   a value is taken for another only if both collide, which nobody without
//!   the keys can arrange. One slot per key (a colliding value replaces the
//!   other), so request data cannot grow a probe chain either.
//! - Bounded: values up to [`MAX_VALUE`] bytes, at most [`MAX_ENTRIES`]
//!   entries of 24 bytes (all dropped when full), at most
//!   [`MAX_NEW_PER_TRANSACTION`] new entries per transaction (one request
//!   full of distinct names cannot empty it for the others).
//! - Values that are credentials (a header [`credential_header`] names, a
//!   cookie's value) are kept under their header's or cookie's name: a
//!   skipped evaluation is faster, and a request repeating another client's
//!   token in some other header must not learn, by its timing, that the
//!   token was seen. Under its own name the probe is the credential itself,
//!   which authentication (or the service, for a cookie) answers anyway.
//! - A rule set's clone starts with an empty memo: links are only changed
//!   while loading, but a clone is where a change would happen.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

/// Longest value kept (a JWT in a custom header fits).
pub const MAX_VALUE: usize = 2048;
/// Entries kept before the memo starts over (24 bytes each, ~2.5 MiB with
/// the table's own overhead).
pub const MAX_ENTRIES: usize = 65_536;
/// New entries one transaction may add.
pub const MAX_NEW_PER_TRANSACTION: u32 = 256;

/// Key → (link id, the value's second digest) of a miss.
type Misses = HashMap<u64, (u64, u64), crate::tx::BuildFx>;

/// A value's two keyed digests (see the module's text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest(u64, u64);

/// A rule set's memo of (link, value) pairs that did not match.
pub struct Memo {
    seeds: (RandomState, RandomState),
    map: Mutex<Misses>,
}

impl Default for Memo {
    fn default() -> Self {
        Memo {
            seeds: (RandomState::new(), RandomState::new()),
            map: Mutex::new(HashMap::with_hasher(crate::tx::BuildFx)),
        }
    }
}

/// A clone is an empty memo (see the module's text).
impl Clone for Memo {
    fn clone(&self) -> Self {
        Memo::default()
    }
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Memo({} entries)", self.len())
    }
}

/// Header names whose values are credentials or sessions: their values are
/// digested under the header's name (see the module's text). Broad on purpose (an API key header has any name a gateway is told):
/// any name with one of these in it, in any case.
pub fn credential_header(name: &str) -> bool {
    const WORDS: [&[u8]; 7] = [
        b"auth", b"cookie", b"key", b"token", b"secret", b"session", b"pass",
    ];
    let name = name.as_bytes();
    WORDS
        .iter()
        .any(|w| name.windows(w.len()).any(|win| win.eq_ignore_ascii_case(w)))
}

impl Memo {
    /// The digest of a value a transaction may look up (computed once per
    /// value and transaction), under `name` for a credential; None for a
    /// value too long to keep.
    pub fn digest(&self, name: Option<&str>, value: &[u8]) -> Option<Digest> {
        // slices hash with their length: (name, value) pairs are unambiguous
        (value.len() <= MAX_VALUE).then(|| {
            Digest(
                self.seeds.0.hash_one((name, value)),
                self.seeds.1.hash_one((name, value)),
            )
        })
    }

    /// The map's key for `link` and a value's first digest: a bijective
    /// multiply-xorshift mix (for one link, equal keys mean equal digests).
    fn key(link: u64, d: Digest) -> u64 {
        let mut x = d.0 ^ link.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 33;
        x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        x ^ (x >> 33)
    }

    /// Whether `link` is known not to match the value of digest `d`.
    pub fn known_miss(&self, link: u64, d: Digest) -> bool {
        // a poisoned lock still holds whole entries (each insert is one call)
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&Self::key(link, d))
            .is_some_and(|&(l, second)| l == link && second == d.1)
    }

    /// Remember that `link` did not match the value of digest `d`.
    pub fn remember_miss(&self, link: u64, d: Digest) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(Self::key(link, d), (link, d.1));
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_digests_per_link_within_bounds() {
        let m = Memo::default();
        let d = |v: &[u8]| m.digest(None, v).unwrap();
        m.remember_miss(1, d(b"curl/8.5.0"));
        assert!(m.known_miss(1, d(b"curl/8.5.0")));
        // another link, another value, a prefix: unknown
        assert!(!m.known_miss(2, d(b"curl/8.5.0")));
        assert!(!m.known_miss(1, d(b"curl/8.5.1")));
        assert!(!m.known_miss(1, d(b"curl/8.5.")));
        // the first digest alone does not make a value known
        let forged = Digest(d(b"curl/8.5.0").0, d(b"evil").1);
        assert!(!m.known_miss(1, forged));
        // under a credential's name: another digest
        assert_ne!(
            m.digest(Some("authorization"), b"curl/8.5.0"),
            Some(d(b"curl/8.5.0"))
        );
        // too long to keep
        assert_eq!(m.digest(None, &vec![b'a'; MAX_VALUE + 1]), None);
        // full: starts over
        for i in 0..MAX_ENTRIES as u64 {
            m.remember_miss(10 + i, d(b"v"));
        }
        assert!(m.len() < MAX_ENTRIES);
        // a clone is empty
        assert!(!m.is_empty() && m.clone().is_empty());
    }

    #[test]
    fn credential_headers_by_name() {
        for h in [
            "Authorization",
            "proxy-authorization",
            "Cookie",
            "X-API-Key",
            "x-auth-token",
            "X-Session-Id",
            "X-Client-Secret",
            "X-Password",
        ] {
            assert!(credential_header(h), "{h}");
        }
        for h in [
            "User-Agent",
            "Accept",
            "Accept-Language",
            "Host",
            "Content-Type",
            "Referer",
            "X-Request-Id",
        ] {
            assert!(!credential_header(h), "{h}");
        }
    }
}
