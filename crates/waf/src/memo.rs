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
//!   values of the value under one random 128-bit key per memo (std's keyed
//!   hash), over two domain-separated inputs; a value is taken for another
//!   only if both collide, which nobody without the key can arrange.
//! - Bounded: values up to [`MAX_VALUE`] bytes; a fixed table of
//!   [`MAX_ENTRIES`] entries in buckets of four, a new entry replacing one
//!   of its bucket's when the bucket is full (no probe chain for request
//!   data to grow); at most [`MAX_NEW_PER_TRANSACTION`] new entries per
//!   transaction, each displacing at most one entry (requests full of
//!   distinct names can only make others' later evaluations slower, never
//!   skip one). A race may store an entry twice (two writers adding it while
//!   a third fills its slot); that costs a slot, nothing else.
//! - Lock-free: workers read entries without a lock (each is read whole or
//!   not at all, see `Slot`), so inspecting in parallel never waits here.
//!   The table is 2 MiB, written when the memo is made (one per rule set:
//!   the gateway loads one per paranoia level).
//! - Values that are credentials (a header [`credential_header`] names, a
//!   cookie's value) are kept under their header's or cookie's name: a
//!   skipped evaluation is faster, and a request repeating another client's
//!   token in some other header must not learn, by its timing, that the
//!   token was seen. Under its own name the probe is the credential itself,
//!   which authentication (or the service, for a cookie) answers anyway.
//! - A rule set's clone starts with an empty memo: links are only changed
//!   while loading, but a clone is where a change would happen.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering, fence};

/// Longest value kept (a JWT in a custom header fits).
pub const MAX_VALUE: usize = 2048;
/// Entries kept: a fixed table of this many slots (32 bytes each, 2 MiB),
/// in buckets of [`WAYS`]; a new entry takes a free slot of its bucket or
/// replaces one of the bucket's entries.
pub const MAX_ENTRIES: usize = 65_536;
/// Slots per bucket.
const WAYS: usize = 4;
/// New entries one transaction may add.
pub const MAX_NEW_PER_TRANSACTION: u32 = 256;

/// A value's two keyed digests (see the module's text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest(u64, u64);

/// One entry: (link id, first digest, second digest) under a sequence
/// number, odd while a writer fills it and 0 while it was never filled.
/// Readers take no lock: they read the sequence
/// number, the entry, then the sequence number again, and use the entry
/// only if both are the same even number, so an entry is never read half
/// written (a seqlock, as in Boehm's "Can Seqlocks Get Along With
/// Programming Language Memory Models?"). A writer claims the slot by
/// moving its number from even to odd, or gives up: a miss not kept is only
/// a slower next time.
#[derive(Default)]
struct Slot {
    seq: AtomicU64,
    link: AtomicU64,
    first: AtomicU64,
    second: AtomicU64,
}

impl Slot {
    /// The entry, if one is there and was read whole.
    fn read(&self) -> Option<(u64, u64, u64)> {
        let before = self.seq.load(Ordering::Acquire);
        if before == 0 || before & 1 == 1 {
            return None;
        }
        let entry = (
            self.link.load(Ordering::Relaxed),
            self.first.load(Ordering::Relaxed),
            self.second.load(Ordering::Relaxed),
        );
        fence(Ordering::Acquire);
        (self.seq.load(Ordering::Relaxed) == before).then_some(entry)
    }

    /// Fill the slot, unless another writer is filling it.
    fn write(&self, link: u64, d: Digest) {
        let seq = self.seq.load(Ordering::Relaxed);
        if seq & 1 == 1
            || self
                .seq
                .compare_exchange(seq, seq + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        fence(Ordering::Release);
        self.link.store(link, Ordering::Relaxed);
        self.first.store(d.0, Ordering::Relaxed);
        self.second.store(d.1, Ordering::Relaxed);
        self.seq.store(seq + 2, Ordering::Release);
    }
}

/// A rule set's memo of (link, value) pairs that did not match.
pub struct Memo {
    seed: RandomState,
    slots: Box<[Slot]>,
}

impl Default for Memo {
    fn default() -> Self {
        Memo {
            seed: RandomState::new(),
            slots: (0..MAX_ENTRIES).map(|_| Slot::default()).collect(),
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
        // slices hash with their length: (name, value) pairs are
        // unambiguous; the leading 0 and 1 make the two halves hashes of
        // different inputs under the one key (two RandomStates would have
        // related keys: std makes the second by adding one to the first's)
        (value.len() <= MAX_VALUE).then(|| {
            Digest(
                self.seed.hash_one((0u8, name, value)),
                self.seed.hash_one((1u8, name, value)),
            )
        })
    }

    /// The bucket of `link` and a value's first digest: a multiply-xorshift
    /// mix of the two.
    fn bucket(&self, link: u64, d: Digest) -> &[Slot] {
        let mut x = d.0 ^ link.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 33;
        x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        x ^= x >> 33;
        let buckets = MAX_ENTRIES / WAYS;
        let b = (x as usize) % buckets * WAYS;
        &self.slots[b..b + WAYS]
    }

    /// Whether `link` is known not to match the value of digest `d`: only
    /// an entry with the same link and both digests answers.
    pub fn known_miss(&self, link: u64, d: Digest) -> bool {
        self.bucket(link, d)
            .iter()
            .any(|s| s.read() == Some((link, d.0, d.1)))
    }

    /// Remember that `link` did not match the value of digest `d`: in a
    /// free slot of its bucket, else in place of one of the bucket's
    /// entries (picked by the second digest).
    pub fn remember_miss(&self, link: u64, d: Digest) {
        let bucket = self.bucket(link, d);
        let mut free = None;
        for s in bucket {
            match s.read() {
                Some(e) if e == (link, d.0, d.1) => return,
                None if free.is_none() && s.seq.load(Ordering::Relaxed) == 0 => free = Some(s),
                _ => {}
            }
        }
        let slot = free.unwrap_or(&bucket[(d.1 as usize) % WAYS]);
        slot.write(link, d);
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.read().is_some()).count()
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
        // bounded: a bucket holds four entries; a fifth (same link and first
        // digest, so the same bucket) replaces one of them
        let m = Memo::default();
        for k in 1..=5 {
            m.remember_miss(7, Digest(42, k));
        }
        assert_eq!(m.len(), WAYS);
        assert_eq!(
            (1..=5).filter(|&k| m.known_miss(7, Digest(42, k))).count(),
            WAYS
        );
        for i in 0..2 * MAX_ENTRIES as u64 {
            m.remember_miss(10 + i, d(b"v"));
        }
        // each bucket keeps at most four, so some of 2 x 65,536 are gone
        assert!(m.len() < MAX_ENTRIES);
        m.remember_miss(1, d(b"curl/8.5.0"));
        // a clone is empty
        assert!(!m.is_empty() && m.clone().is_empty());
    }

    /// A slot written by two threads at once is read as one entry or the
    /// other (or not at all), never as a mix of the two. (It catches a
    /// missing or wrong sequence check; on x86 it cannot catch a too weak
    /// memory ordering, which is argued in `Slot`'s text instead.)
    #[test]
    fn a_slot_is_never_read_half_written() {
        let slot = std::sync::Arc::new(Slot::default());
        let a = (1, 10, 100);
        let b = (2, 20, 200);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = [a, b]
            .into_iter()
            .map(|(l, f, s)| {
                let (slot, stop) = (slot.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        slot.write(l, Digest(f, s));
                        // a pause, for readers to get whole reads too
                        for _ in 0..(l * 50) {
                            std::hint::spin_loop();
                        }
                    }
                })
            })
            .collect();
        let mut seen = [0u32; 2];
        let start = std::time::Instant::now();
        let mut reads = 0;
        while reads < 200_000 || (seen.contains(&0) && start.elapsed().as_secs() < 10) {
            reads += 1;
            match slot.read() {
                Some(e) if e == a => seen[0] += 1,
                Some(e) if e == b => seen[1] += 1,
                Some(e) => panic!("a mixed entry {e:?}"),
                None => {}
            }
        }
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        assert!(seen[0] > 0 && seen[1] > 0, "{seen:?}");
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
