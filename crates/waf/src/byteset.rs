//! Bytes a value must contain for a regex to match it.
//!
//! For each `@rx` pattern the engine computes, from the pattern's syntax
//! tree (the regex crate's own parser, configured as the pattern is
//! compiled), a set of bytes of which every match contains at least one:
//! a literal's byte, a class's bytes, the union over an alternation's
//! branches, the rarest such set among a concatenation's parts. A value
//! that contains none of them cannot match, so the regex is not run on it.
//! The set is a necessary condition only, never a sufficient one: when the
//! value holds one of its bytes the regex decides as before, so no verdict
//! changes (`tests` compares the two on every CRS pattern).
//!
//! Anything that can match without consuming a byte — the empty pattern,
//! an assertion, a repetition that may occur zero times — gives no set,
//! and the regex always runs.

use regex_syntax::hir::{Class, Hir, HirKind};

/// A set of bytes, one bit each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ByteSet([u64; 4]);

impl ByteSet {
    /// The bytes `v` contains.
    pub fn of(v: &[u8]) -> ByteSet {
        let mut s = ByteSet::default();
        for &b in v {
            s.insert(b);
        }
        s
    }

    /// The bytes listed.
    pub const fn of_bytes(bs: &[u8]) -> ByteSet {
        let mut s = [0u64; 4];
        let mut i = 0;
        while i < bs.len() {
            s[(bs[i] >> 6) as usize] |= 1 << (bs[i] & 63);
            i += 1;
        }
        ByteSet(s)
    }

    /// The bytes `lo..=hi`.
    pub const fn of_range(lo: u8, hi: u8) -> ByteSet {
        let mut s = [0u64; 4];
        let mut b = lo as usize;
        while b <= hi as usize {
            s[b >> 6] |= 1 << (b & 63);
            b += 1;
        }
        ByteSet(s)
    }

    /// Both sets' bytes.
    pub const fn or(self, o: ByteSet) -> ByteSet {
        ByteSet([
            self.0[0] | o.0[0],
            self.0[1] | o.0[1],
            self.0[2] | o.0[2],
            self.0[3] | o.0[3],
        ])
    }

    fn insert(&mut self, b: u8) {
        self.0[usize::from(b >> 6)] |= 1 << (b & 63);
    }

    fn insert_range(&mut self, lo: u8, hi: u8) {
        for b in lo..=hi {
            self.insert(b);
        }
    }

    /// Whether the two sets share a byte.
    pub fn meets(&self, o: &ByteSet) -> bool {
        (self.0[0] & o.0[0]) | (self.0[1] & o.0[1]) | (self.0[2] & o.0[2]) | (self.0[3] & o.0[3])
            != 0
    }

    fn bytes(&self) -> impl Iterator<Item = u8> + '_ {
        (0..=255u8).filter(|b| self.0[usize::from(b >> 6)] & (1 << (b & 63)) != 0)
    }

    /// How likely ordinary request values are to contain one of the bytes,
    /// roughly (per mille, summed): letters by their frequency in English
    /// text, spaces and digits everywhere, punctuation rarer. Only chooses
    /// between sets that are all correct.
    fn weight(&self) -> u32 {
        // a..z, from the usual English letter frequencies
        const LETTERS: [u32; 26] = [
            82, 15, 28, 43, 127, 22, 20, 61, 70, 2, 8, 40, 24, 67, 75, 19, 1, 60, 63, 91, 28, 10,
            24, 2, 20, 1,
        ];
        self.bytes()
            .map(|b| match b {
                b' ' => 200,
                b'a'..=b'z' => LETTERS[usize::from(b - b'a')],
                // capitals are rarer than their lowercase
                b'A'..=b'Z' => LETTERS[usize::from(b - b'A')] / 4 + 1,
                b'0'..=b'9' => 30,
                b'.' | b',' | b'-' | b'_' | b'\'' | b':' | b'/' => 20,
                0x80..=0xff => 5,
                _ => 3,
            })
            .sum()
    }
}

/// The bytes every match of `hir` contains at least one of; None when a
/// match may consume no byte at all.
pub fn needed(hir: &Hir) -> Option<ByteSet> {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => None,
        // every byte of a literal is in every match: the rarest
        HirKind::Literal(l) => {
            l.0.iter()
                .map(|&b| ByteSet::of_bytes(&[b]))
                .min_by_key(ByteSet::weight)
        }
        HirKind::Class(Class::Bytes(c)) => {
            let mut s = ByteSet::default();
            for r in c.ranges() {
                s.insert_range(r.start(), r.end());
            }
            Some(s)
        }
        HirKind::Class(Class::Unicode(c)) => {
            // a character's first byte in UTF-8: non-decreasing in the code
            // point, so a range's first bytes are those between its ends'
            let mut s = ByteSet::default();
            for r in c.ranges() {
                let first = |ch: char| {
                    let mut buf = [0u8; 4];
                    ch.encode_utf8(&mut buf).as_bytes()[0]
                };
                s.insert_range(first(r.start()), first(r.end()));
            }
            Some(s)
        }
        HirKind::Repetition(r) if r.min == 0 => None,
        HirKind::Repetition(r) => needed(&r.sub),
        HirKind::Capture(c) => needed(&c.sub),
        // every part is in every match: the rarest part's set
        HirKind::Concat(parts) => parts.iter().filter_map(needed).min_by_key(ByteSet::weight),
        // a match is one branch's: the union of the branches' sets
        HirKind::Alternation(branches) => branches
            .iter()
            .map(needed)
            .try_fold(ByteSet::default(), |acc, s| s.map(|s| acc.or(s))),
    }
}

/// The set for a pattern the engine compiles with `unicode(false)`,
/// dot-matches-newline and multi-line (as [`crate::operator`] does), from
/// the same text it compiles; None when there is none (or the parser
/// refuses it).
pub fn needed_for(pattern: &str) -> Option<ByteSet> {
    let hir = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .dot_matches_new_line(true)
        .multi_line(true)
        .build()
        .parse(pattern)
        .ok()?;
    // a set of every byte skips nothing: not worth a check
    needed(&hir).filter(|s| s.0 != [u64::MAX; 4])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(p: &str) -> Option<Vec<u8>> {
        needed_for(p).map(|s| s.bytes().collect())
    }

    #[test]
    fn sets_of_simple_patterns() {
        // a literal: its rarest byte
        assert_eq!(set("select"), Some(vec![b'c'])); // the rarest letter
        assert_eq!(set("a<b"), Some(vec![b'<']));
        // a class: every byte of it
        assert_eq!(set("[;|]"), Some(vec![b';', b'|']));
        // case folding gives both cases
        assert_eq!(set("(?i)<x"), Some(vec![b'<']));
        assert_eq!(set("(?i)x"), Some(vec![b'X', b'x']));
        // alternation: the union of its branches' sets
        assert_eq!(set("a<|b>"), Some(vec![b'<', b'>']));
        // optional parts give nothing; required repetitions do
        assert_eq!(set("<?"), None);
        assert_eq!(set("<*"), None);
        assert_eq!(set("(<)+"), Some(vec![b'<']));
        assert_eq!(set("a?<"), Some(vec![b'<']));
        // a branch that can match the empty string voids the alternation
        assert_eq!(set("<|x?"), None);
        // assertions consume nothing
        assert_eq!(set("^$"), None);
        assert_eq!(set(r"\b"), None);
        // `.` is every byte here: no useful set
        assert_eq!(set("."), None);
        // the rarest byte of a literal
        assert_eq!(set("(?i)java\\.lang"), Some(vec![b'J', b'j']));
    }

    fn crs_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crs")
    }

    /// Every `@rx` pattern of the repository's CRS copy, as compiled.
    fn crs_patterns() -> Vec<String> {
        let opts = crate::crs::CrsOptions {
            paranoia: 4,
            ..Default::default()
        };
        let set = crate::crs::load(&crs_dir(), &opts).expect("CRS loads");
        let mut out = Vec::new();
        for e in set.phases.iter().flatten() {
            let crate::ruleset::Entry::Rule(r) = e else {
                continue;
            };
            for link in &r.links {
                if let crate::operator::Op::Rx(re, _) = &link.operator.op {
                    out.push(re.as_str().to_string());
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The attack payloads of CRS's regression suite: every `data:` and
    /// `uri:` line, as written and percent-decoded, and its `&`/`=` parts.
    fn crs_payloads() -> Vec<Vec<u8>> {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).expect("regression tests").flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "yaml") {
                    out.push(p);
                }
            }
        }
        let mut files = Vec::new();
        walk(&crs_dir().join("tests/regression/tests"), &mut files);
        let mut out = std::collections::BTreeSet::new();
        for f in files {
            let text = std::fs::read_to_string(&f).expect("yaml");
            for line in text.lines() {
                let line = line.trim();
                let Some(v) = line
                    .strip_prefix("data: ")
                    .or_else(|| line.strip_prefix("uri: "))
                else {
                    continue;
                };
                let v = v.trim_matches(|c| c == '"' || c == '\'');
                let decoded = percent_decode(v.as_bytes());
                for part in decoded.split(|&b| b == b'&' || b == b'=') {
                    out.insert(part.to_vec());
                }
                out.insert(v.as_bytes().to_vec());
                out.insert(decoded);
            }
        }
        out.into_iter().collect()
    }

    fn percent_decode(v: &[u8]) -> Vec<u8> {
        let hex = |c: u8| (c as char).to_digit(16);
        let mut out = Vec::with_capacity(v.len());
        let mut i = 0;
        while i < v.len() {
            if v[i] == b'%'
                && let (Some(a), Some(b)) = (
                    v.get(i + 1).and_then(|&c| hex(c)),
                    v.get(i + 2).and_then(|&c| hex(c)),
                )
            {
                out.push((a * 16 + b) as u8);
                i += 3;
            } else {
                out.push(if v[i] == b'+' { b' ' } else { v[i] });
                i += 1;
            }
        }
        out
    }

    #[test]
    fn a_value_without_the_set_cannot_match() {
        // every pattern the CRS copy in the tests compiles, against values
        // from the regression suite and generated strings: whenever the
        // value has none of the needed bytes, the regex does not match
        let patterns = crs_patterns();
        assert!(patterns.len() > 250, "{} patterns", patterns.len());
        let mut values: Vec<Vec<u8>> = crs_payloads();
        let alphabet: &[u8] = b" aA0<>'\"();=-#/*|&$%{}[]\\.:,!?@^~`+\n\t\x00\xc3\xa9\xff";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..4000 {
            let len = (x % 24) as usize;
            let mut v = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            values.push(v);
        }
        let (mut skipped, mut with_set) = (0u64, 0usize);
        for p in &patterns {
            let Some(need) = needed_for(p) else { continue };
            with_set += 1;
            let re = crate::operator::compile_rx(p).expect("CRS pattern compiles");
            for v in &values {
                if !ByteSet::of(v).meets(&need) {
                    skipped += 1;
                    assert!(
                        !re.is_match(v),
                        "{p:?} matches {:?} without any needed byte",
                        String::from_utf8_lossy(v)
                    );
                }
            }
        }
        // not vacuous: most patterns have a set and many values are skipped
        assert!(
            with_set > patterns.len() / 2,
            "{with_set} of {}",
            patterns.len()
        );
        assert!(skipped > 100_000, "{skipped} skipped");
    }

    /// Patterns built from the constructs where a wrong set would hide a
    /// match (inline `(?u)`/`(?i)`/`(?x)`/`(?s)`, Unicode classes and their
    /// case folds, assertions, empty branches, `{0}`, `{0,n}`, `{1,}`, lazy
    /// repetitions, nested and named captures, the empty class), each run
    /// on values made only of bytes outside its set: none may match.
    #[test]
    fn generated_patterns_never_match_without_their_set() {
        const ATOMS: &[&str] = &[
            "a",
            "b",
            "<",
            "K",
            "k",
            "s",
            r"\xff",
            r"\xc3",
            r"(?-u:\xff)",
            ".",
            "(?u).",
            r"(?u)\w",
            r"\w",
            r"\s",
            r"\d",
            r"\W",
            r"\S",
            "[^a]",
            "[a-c]",
            "(?i)k",
            "(?iu)k",
            "(?iu)s",
            r"\b",
            "^",
            "$",
            r"\B",
            r"\A",
            r"\z",
            r"(?u)\b",
            "(?u:é)",
            "é",
            "(?u:[é-ü])",
            r"(?u)\x{212a}",
            r"(?iu)\x{17f}",
            r"(?u)[^a]",
            r"(?u)\W",
            r"(?u)\S",
            r"(?u)\D",
            r"(?u)[\x{80}-\x{7ff}]",
            r"(?u)[\x{800}-\x{10ffff}]",
            "(?x) a b ",
            "(?x)[ ]",
            r"[^\x00-\xff]",
            r"\x00",
            "\n",
            "(?-s:.)",
            "[[:alpha:]]",
            "[[:^alpha:]]",
            "(?i)[a-z]",
            "(?iu)[a-z]",
            "(?U)a+",
            "ab",
            "(?i)ab",
            "(?i)<x",
        ];
        const REPS: &[&str] = &[
            "*", "+", "?", "{0,2}", "{1,}", "{2}", "{0}", "+?", "*?", "{1,3}?", "{1}",
        ];
        const GROUPS: &[&str] = &["(", "(?P<n>", "(?i:", "(?u:", "(?-u:", "(?s:", "(?x:"];
        const FLAGS: &[&str] = &["(?i)", "(?u)", "(?-u)", "(?x)", "(?U)", "(?-s)", "(?-m)"];
        struct Rng(u64);
        impl Rng {
            fn below(&mut self, n: usize) -> usize {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                (self.0 % n as u64) as usize
            }
        }
        fn pattern(r: &mut Rng, depth: u32) -> String {
            if depth == 0 || r.below(3) == 0 {
                return ATOMS[r.below(ATOMS.len())].to_string();
            }
            match r.below(8) {
                0 | 1 => (0..2 + r.below(3)).map(|_| pattern(r, depth - 1)).collect(),
                2 | 3 => {
                    let n = 2 + r.below(3);
                    let v: Vec<String> = (0..n)
                        .map(|_| {
                            if r.below(6) == 0 {
                                String::new()
                            } else {
                                pattern(r, depth - 1)
                            }
                        })
                        .collect();
                    format!("(?:{})", v.join("|"))
                }
                4 | 5 => format!("(?:{}){}", pattern(r, depth - 1), REPS[r.below(REPS.len())]),
                6 => format!(
                    "{}{})",
                    GROUPS[r.below(GROUPS.len())],
                    pattern(r, depth - 1)
                ),
                _ => format!("{}{}", FLAGS[r.below(FLAGS.len())], pattern(r, depth - 1)),
            }
        }
        let alphabet: &[u8] =
            b"abAKkSs< _0\n\xff\xc3\xa9\xe2\x84\xaa\xc5\xbf\x00\xbc\xce\xb1\xf0\x9f\x98\x80";
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut with_set, mut skipped) = (0u32, 0u32);
        for _ in 0..1500 {
            let p = pattern(&mut r, 4);
            let Ok(re) = crate::operator::compile_rx(&p) else {
                continue;
            };
            let Some(need) = needed_for(re.as_str()) else {
                continue;
            };
            with_set += 1;
            let outside: Vec<u8> = (0..=255u8)
                .filter(|&b| !ByteSet::of(&[b]).meets(&need))
                .collect();
            if outside.is_empty() {
                continue;
            }
            // the alphabet's bytes outside the set, and a spread of the rest
            let pool: Vec<u8> = alphabet
                .iter()
                .copied()
                .filter(|b| outside.contains(b))
                .chain(outside.iter().copied().step_by(7))
                .collect();
            for _ in 0..150 {
                let v: Vec<u8> = (0..r.below(16))
                    .map(|_| pool[r.below(pool.len())])
                    .collect();
                skipped += 1;
                assert!(
                    !re.is_match(&v),
                    "{p:?} matches {v:x?} without any needed byte"
                );
            }
        }
        assert!(with_set > 500 && skipped > 50_000, "{with_set} {skipped}");
    }
}
