//! Operators (`@rx`, `@pm`, `@eq`, ...), compiled once when the rules load.
//!
//! `@rx` uses the `regex` crate (finite automata: matching time is linear in
//! the input, whatever the pattern), on bytes, without Unicode classes, in
//! the mode libmodsecurity compiles CRS's patterns in: PCRE's non-UTF mode
//! with `PCRE_DOTALL | PCRE_MULTILINE` (`.` any byte, newlines included;
//! `^` and `$` at every line; `\w`, `\s`, `\d` and `(?i)` ASCII). `@pm` / `@pmFromFile` use
//! Aho-Corasick, case-insensitive as ModSecurity's.

use std::path::Path;

use aho_corasick::AhoCorasick;

use crate::action::Macro;
use crate::byteset::ByteSet;

/// A compiled operator.
#[derive(Clone, Debug)]
pub struct Operator {
    pub negated: bool,
    pub op: Op,
    /// The name as written (`rx`, `pmFromFile`...), for logs.
    pub name: String,
}

/// A number, or a macro expanding to one per request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Num {
    Const(i64),
    Macro(Macro),
}

#[derive(Clone, Debug)]
pub enum Op {
    /// The regex, and the bytes a value must contain for it to match
    /// ([`crate::byteset`]; None: no such set).
    Rx(regex::bytes::Regex, Option<ByteSet>),
    /// Phrases, any of which matching anywhere (case-insensitive).
    Pm(AhoCorasick),
    Eq(Num),
    Ge(Num),
    Gt(Num),
    Le(Num),
    Lt(Num),
    Streq(Macro),
    BeginsWith(Macro),
    EndsWith(Macro),
    Contains(Macro),
    /// The value is found in the argument (after expansion): ModSecurity's
    /// `@within`, a substring test (CRS writes its lists as `|a| |b|`).
    Within(Macro),
    /// Allowed bytes; a value with any other byte matches.
    ValidateByteRange(Box<[bool; 256]>),
    ValidateUrlEncoding,
    ValidateUtf8Encoding,
    UnconditionalMatch,
    IpMatch(Vec<palisade_core::net::Cidr>),
    DetectSqli,
    DetectXss,
}

/// PCRE's `\x{hh}` (a byte, in non-UTF mode) as the regex crate's `\xhh`
/// (its `\x{...}` names a Unicode code point).
fn pcre_bytes(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(inner) = tail.strip_prefix("\\x{")
            && let Some(end) = inner.find('}')
            && (1..=2).contains(&end)
            && inner[..end].bytes().all(|b| b.is_ascii_hexdigit())
        {
            out.push_str(&format!("\\x{:0>2}", &inner[..end]));
            rest = &inner[end + 1..];
        } else {
            // an escape: copy the backslash and what it escapes as they are
            let next = tail[1..].chars().next().map_or(0, char::len_utf8);
            out.push_str(&tail[..1 + next]);
            rest = &tail[1 + next..];
        }
    }
    out.push_str(rest);
    out
}

/// A SecLang `@rx` pattern compiled as libmodsecurity compiles it.
pub(crate) fn compile_rx(pattern: &str) -> Result<regex::bytes::Regex, String> {
    regex::bytes::RegexBuilder::new(&pcre_bytes(pattern))
        .unicode(false)
        // libmodsecurity compiles every @rx with PCRE_DOTALL|PCRE_MULTILINE:
        // `.` crosses newlines and `^`/`$` match at each line (without them
        // a newline in a value hides it from half of CRS)
        .dot_matches_new_line(true)
        .multi_line(true)
        .size_limit(64 << 20)
        .dfa_size_limit(16 << 20)
        .build()
        .map_err(|e| {
            let e = e.to_string();
            // the regex crate's message repeats the whole pattern: keep the gist
            let gist = e.lines().last().unwrap_or(&e).trim().to_string();
            format!("@rx pattern does not compile: {gist}")
        })
}

fn phrases(words: impl IntoIterator<Item = String>) -> Result<AhoCorasick, String> {
    let words: Vec<String> = words.into_iter().filter(|w| !w.is_empty()).collect();
    if words.is_empty() {
        return Err("@pm needs at least one phrase".into());
    }
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .build(&words)
        .map_err(|e| format!("@pm: {e}"))
}

fn num(arg: &str, name: &str) -> Result<Num, String> {
    let m = Macro::parse(arg.trim())?;
    match m.literal() {
        Some(s) => s
            .trim()
            .parse::<i64>()
            .map(Num::Const)
            .map_err(|_| format!("@{name} needs a number, not {s:?}")),
        None => Ok(Num::Macro(m)),
    }
}

/// `@validateByteRange 1-255` / `32-36,38`.
fn byte_ranges(arg: &str) -> Result<Box<[bool; 256]>, String> {
    let mut allowed = Box::new([false; 256]);
    for part in arg.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let b = |s: &str| {
            s.trim()
                .parse::<u8>()
                .map_err(|_| format!("@validateByteRange: invalid byte {s:?}"))
        };
        let (lo, hi) = match part.split_once('-') {
            Some((a, z)) => (b(a)?, b(z)?),
            None => {
                let x = b(part)?;
                (x, x)
            }
        };
        if lo > hi {
            return Err(format!("@validateByteRange: empty range {part:?}"));
        }
        for x in lo..=hi {
            allowed[x as usize] = true;
        }
    }
    Ok(allowed)
}

impl Operator {
    /// Compile `text` (`[!]@name argument`, or a bare regex). `dir` is
    /// where `@pmFromFile` data files are looked for (the rule file's).
    pub fn parse(text: &str, dir: &Path) -> Result<Operator, String> {
        let (negated, rest) = match text.strip_prefix('!') {
            Some(r) => (true, r),
            None => (false, text),
        };
        let (name, arg) = match rest.strip_prefix('@') {
            Some(r) => match r.split_once(|c: char| c.is_ascii_whitespace()) {
                Some((n, a)) => (n.to_string(), a.to_string()),
                None => (r.to_string(), String::new()),
            },
            None => ("rx".to_string(), rest.to_string()),
        };
        let needs_arg = |a: &str| -> Result<(), String> {
            if a.trim().is_empty() {
                Err(format!("@{name} needs an argument"))
            } else {
                Ok(())
            }
        };
        let op = match name.as_str() {
            "rx" => {
                needs_arg(&arg)?;
                if arg.contains("%{") {
                    return Err(
                        "@rx with a macro is not supported (the pattern must compile once)".into(),
                    );
                }
                let re = compile_rx(&arg)?;
                let need = crate::byteset::needed_for(re.as_str());
                Op::Rx(re, need)
            }
            "pm" => Op::Pm(phrases(arg.split_ascii_whitespace().map(str::to_string))?),
            "pmFromFile" | "pmf" => {
                needs_arg(&arg)?;
                let mut words = Vec::new();
                for file in arg.split_ascii_whitespace() {
                    let path = dir.join(file);
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| format!("@{name}: cannot read {}: {e}", path.display()))?;
                    words.extend(
                        text.lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty() && !l.starts_with('#'))
                            .map(str::to_string),
                    );
                }
                Op::Pm(phrases(words)?)
            }
            "eq" => Op::Eq(num(&arg, &name)?),
            "ge" => Op::Ge(num(&arg, &name)?),
            "gt" => Op::Gt(num(&arg, &name)?),
            "le" => Op::Le(num(&arg, &name)?),
            "lt" => Op::Lt(num(&arg, &name)?),
            "streq" => Op::Streq(Macro::parse(&arg)?),
            "beginsWith" => Op::BeginsWith(Macro::parse(&arg)?),
            "endsWith" => Op::EndsWith(Macro::parse(&arg)?),
            "contains" => Op::Contains(Macro::parse(&arg)?),
            "within" => Op::Within(Macro::parse(&arg)?),
            "validateByteRange" => {
                needs_arg(&arg)?;
                Op::ValidateByteRange(byte_ranges(&arg)?)
            }
            "validateUrlEncoding" => Op::ValidateUrlEncoding,
            "validateUtf8Encoding" => Op::ValidateUtf8Encoding,
            "unconditionalMatch" => Op::UnconditionalMatch,
            "ipMatch" => {
                needs_arg(&arg)?;
                Op::IpMatch(
                    arg.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| {
                            palisade_core::net::Cidr::parse(s)
                                .ok_or_else(|| format!("@ipMatch: invalid address {s:?}"))
                        })
                        .collect::<Result<_, _>>()?,
                )
            }
            "detectSQLi" => Op::DetectSqli,
            "detectXSS" => Op::DetectXss,
            other => return Err(format!("unsupported operator @{other}")),
        };
        Ok(Operator { negated, op, name })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(t: &str) -> Result<Operator, String> {
        Operator::parse(t, Path::new("."))
    }

    #[test]
    fn operators_compile() {
        let o = op("@rx (?i)select\\s+from").unwrap();
        assert!(matches!(&o.op, Op::Rx(r, _) if r.is_match(b"SeLeCt  from")));
        let o = op("!@rx ^\\d+$").unwrap();
        assert!(o.negated);
        let o = op("^(?:GET|HEAD)$").unwrap();
        assert_eq!(o.name, "rx");
        let o = op("@pm document.cookie .innerhtml").unwrap();
        assert!(matches!(&o.op, Op::Pm(ac) if ac.is_match("x.innerHTML=1")));
        assert!(matches!(
            op("@ge %{tx.x}").unwrap().op,
            Op::Ge(Num::Macro(_))
        ));
        assert!(matches!(op("@lt 5").unwrap().op, Op::Lt(Num::Const(5))));
        assert!(
            matches!(op("@validateByteRange 9,10,13,32-126").unwrap().op, Op::ValidateByteRange(r) if r[9] && r[126] && !r[127] && !r[0])
        );
        assert!(matches!(op("@ipMatch 127.0.0.1,::1").unwrap().op, Op::IpMatch(v) if v.len() == 2));
        // linear-time engine: no backreferences or lookaround
        assert!(
            op("@rx (a)\\1")
                .unwrap_err()
                .starts_with("@rx pattern does not compile")
        );
        assert!(op("@rx (?=a)").is_err());
        // PCRE's \x{ff} is a byte; an escaped backslash is kept
        assert_eq!(
            pcre_bytes(r"[\x7f-\x{ff}]\\x{41}\x{9}"),
            r"[\x7f-\xff]\\x{41}\x09"
        );
        let o = op(r"@rx ^[\x{80}-\x{ff}]+$").unwrap();
        assert!(matches!(&o.op, Op::Rx(r, _) if r.is_match(&[0xc3, 0xa9]) && !r.is_match(b"a")));
        // DOTALL and MULTILINE, as libmodsecurity: a newline hides nothing
        let o = op("@rx (?i)javascript:.*location").unwrap();
        assert!(matches!(&o.op, Op::Rx(r, _) if r.is_match(b"javascript:\nlocation=name")));
        let o = op("@rx ^https?://").unwrap();
        assert!(matches!(&o.op, Op::Rx(r, _) if r.is_match(b"\nhttp://192.0.2.1/x")));
        // invalid UTF-8 is inspected as bytes
        let o = op("@rx \\xff").unwrap();
        assert!(matches!(&o.op, Op::Rx(r, _) if r.is_match(&[0x41, 0xff])));
    }

    #[test]
    fn bad_operators_are_errors() {
        for (t, e) in [
            ("@rbl x", "unsupported operator @rbl"),
            ("@eq abc", "@eq needs a number, not \"abc\""),
            ("@rx", "@rx needs an argument"),
            ("@pm ", "@pm needs at least one phrase"),
            (
                "@validateByteRange 9-300",
                "@validateByteRange: invalid byte \"300\"",
            ),
            (
                "@rx a%{tx.x}",
                "@rx with a macro is not supported (the pattern must compile once)",
            ),
        ] {
            assert_eq!(op(t).unwrap_err(), e, "{t}");
        }
        assert!(
            op("@pmFromFile nope.data")
                .unwrap_err()
                .starts_with("@pmFromFile: cannot read ./nope.data")
        );
    }
}
