//! Negative results kept across transactions, for the values clients send
//! unchanged request after request (headers, cookies, the method and
//! protocol).
//!
//! Whether a link matches a value is a pure function of the two when the
//! link's operator reads nothing but the value (no macro in its argument),
//! it captures nothing, and its transformations are pure (they all are). Such
//! a link that did **not** match a value will never match it: the memo keeps
//! that answer, keyed by the link's load-time id and the exact value (compared
//! byte for byte, never by hash alone), so the transformations and the
//! operator are skipped the next time. A match is never kept: it runs again in
//! full, with its captures, `MATCHED_VAR` and actions, as before.
//!
//! Bounded: values up to [`MAX_VALUE`] bytes, at most [`MAX_ENTRIES`] entries
//! (all dropped when full). The map's key is the value's SipHash under a
//! random key per rule set (computed once per value and transaction), mixed
//! with the link's id, and one slot per key (a colliding value replaces the
//! other), so request data can neither grow a probe chain nor be mistaken for
//! another value.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::Mutex;

/// Longest value kept (a JWT in `Authorization` fits).
pub const MAX_VALUE: usize = 2048;
/// Entries kept before the memo starts over.
pub const MAX_ENTRIES: usize = 16_384;

/// Key → (link id, the exact value) of a miss.
type Misses = HashMap<u64, (u64, Box<[u8]>), BuildPassThrough>;

/// A rule set's memo of (link, value) pairs that did not match.
pub struct Memo {
    seed: RandomState,
    map: Mutex<Misses>,
}

impl Default for Memo {
    fn default() -> Self {
        Memo {
            seed: RandomState::new(),
            map: Mutex::new(HashMap::with_hasher(BuildPassThrough)),
        }
    }
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Memo({} entries)", self.len())
    }
}

impl Memo {
    /// The keyed hash of a value (a transaction computes it once per value
    /// and passes it to [`Self::known_miss`] and [`Self::remember_miss`]).
    pub fn value_hash(&self, value: &[u8]) -> u64 {
        self.seed.hash_one(value)
    }

    /// The map's key for `link` and a value's hash: a multiply-xorshift mix,
    /// the secrecy being the seed's.
    fn key(link: u64, value_hash: u64) -> u64 {
        let mut x = value_hash ^ link.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 33;
        x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        x ^ (x >> 33)
    }

    /// Whether `link` is known not to match `value` (`value_hash` is
    /// [`Self::value_hash`] of it).
    pub fn known_miss(&self, link: u64, value_hash: u64, value: &[u8]) -> bool {
        if value.len() > MAX_VALUE {
            return false;
        }
        // a poisoned lock still holds whole entries (each insert is one call)
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&Self::key(link, value_hash))
            .is_some_and(|(l, v)| *l == link && **v == *value)
    }

    /// Remember that `link` did not match `value`.
    pub fn remember_miss(&self, link: u64, value_hash: u64, value: &[u8]) {
        if value.len() > MAX_VALUE {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(Self::key(link, value_hash), (link, Box::from(value)));
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The map's keys are already SipHash values: used as they are.
#[derive(Default, Clone, Copy)]
struct BuildPassThrough;

#[derive(Default)]
struct PassThrough(u64);

impl BuildHasher for BuildPassThrough {
    type Hasher = PassThrough;
    fn build_hasher(&self) -> PassThrough {
        PassThrough(0)
    }
}

impl Hasher for PassThrough {
    fn write(&mut self, bytes: &[u8]) {
        // only u64 keys are hashed; fold anything else in all the same
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_exact_values_per_link_within_bounds() {
        let m = Memo::default();
        let miss = |l: u64, v: &[u8]| m.known_miss(l, m.value_hash(v), v);
        m.remember_miss(1, m.value_hash(b"curl/8.5.0"), b"curl/8.5.0");
        assert!(miss(1, b"curl/8.5.0"));
        // another link, another value, a prefix: unknown
        assert!(!miss(2, b"curl/8.5.0"));
        assert!(!miss(1, b"curl/8.5.1"));
        assert!(!miss(1, b"curl/8.5."));
        // a hash that does not belong to the value (a collision): the bytes
        // decide, never the hash alone
        assert!(!m.known_miss(1, m.value_hash(b"curl/8.5.0"), b"evil"));
        // too long to keep
        let long = vec![b'a'; MAX_VALUE + 1];
        m.remember_miss(1, m.value_hash(&long), &long);
        assert!(!miss(1, &long));
        // full: starts over
        for i in 0..MAX_ENTRIES as u64 {
            m.remember_miss(10 + i, m.value_hash(b"v"), b"v");
        }
        assert!(m.len() < MAX_ENTRIES);
    }
}
