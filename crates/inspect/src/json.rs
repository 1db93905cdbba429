//! JSON bodies: parsed with serde_json's tokenizer (no hand-written
//! parser), walked without building a tree. Every member and array element
//! is checked as it is read (its key by the name checks, a scalar value by
//! the SSRF check), with only the current path kept; nesting, member count
//! and repeated keys are checked while parsing, so a bomb stops at its
//! limit instead of after it was built.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::{Finding, Inspection, Limits, Rule, cap, keys, ssrf};

/// What the checks need to know about one key of the current path,
/// worked out once when the key is read (a member's checks must not scan
/// its ancestors' keys again: long keys times many members).
#[derive(Clone, Copy)]
struct KeyInfo {
    /// None for an array index; else whether the key names URLs or hosts.
    url_named: Option<bool>,
    /// Its last token is `constructor`.
    constructor: bool,
}

/// One step of the current path: an object key (borrowed from the body
/// when it has no escapes) or an array index.
enum Seg<'de> {
    Key(Cow<'de, str>),
    Index(usize),
}

struct Walker<'l, 'de> {
    limits: &'l Limits,
    path: Vec<Seg<'de>>,
    info: Vec<KeyInfo>,
    members: usize,
    findings: Vec<Finding>,
    /// The limit that stopped the parse (the serde error then only unwinds).
    stopped: Option<Finding>,
}

impl Walker<'_, '_> {
    fn pointer(&self) -> String {
        pointer(&self.path)
    }

    fn stop<E: de::Error>(&mut self, rule: Rule, reason: String) -> E {
        self.stopped = Some(Finding {
            rule,
            variable: self.pointer(),
            reason,
        });
        E::custom(rule.name())
    }

    fn count<E: de::Error>(&mut self) -> Result<(), E> {
        self.members += 1;
        if self.members > self.limits.max_members {
            let max = self.limits.max_members;
            return Err(self.stop(Rule::TooManyMembers, format!("more than {max} members")));
        }
        Ok(())
    }
}

/// What a value turned out to be.
enum Kind<'de> {
    Container,
    /// A string, judged by the SSRF check (borrowed from the body when it
    /// has no escapes).
    Scalar(Cow<'de, str>),
    /// A number, a boolean or null: nothing to judge in the value.
    Other,
}

struct Node<'w, 'l, 'de> {
    w: &'w mut Walker<'l, 'de>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_, 'de> {
    type Value = Kind<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Kind<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_, '_, 'de> {
    type Value = Kind<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Kind<'de>, E> {
        Ok(Kind::Other)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Kind<'de>, E> {
        Ok(Kind::Other)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Kind<'de>, E> {
        Ok(Kind::Other)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Kind<'de>, E> {
        Ok(Kind::Other)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Kind<'de>, E> {
        Ok(Kind::Other)
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Kind<'de>, E> {
        Ok(Kind::Scalar(Cow::Borrowed(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Kind<'de>, E> {
        Ok(Kind::Scalar(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Kind<'de>, E> {
        Ok(Kind::Scalar(Cow::Owned(s)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind<'de>, A::Error> {
        let depth = self.depth + 1;
        if depth > self.w.limits.max_depth {
            let max = self.w.limits.max_depth;
            return Err(self
                .w
                .stop(Rule::JsonTooDeep, format!("nested deeper than {max}")));
        }
        let mut i = 0usize;
        loop {
            self.w.path.push(Seg::Index(i));
            self.w.info.push(KeyInfo {
                url_named: None,
                constructor: false,
            });
            let next = seq.next_element_seed(Node {
                w: &mut *self.w,
                depth,
            })?;
            let Some(kind) = next else {
                self.w.path.pop();
                self.w.info.pop();
                break;
            };
            self.w.count::<A::Error>()?;
            push_arg(self.w, kind);
            self.w.path.pop();
            self.w.info.pop();
            i += 1;
        }
        Ok(Kind::Container)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind<'de>, A::Error> {
        let depth = self.depth + 1;
        if depth > self.w.limits.max_depth {
            let max = self.w.limits.max_depth;
            return Err(self
                .w
                .stop(Rule::JsonTooDeep, format!("nested deeper than {max}")));
        }
        // this object's keys so far: a short list, a set once it grows
        let mut few: Vec<Cow<'de, str>> = Vec::new();
        let mut many: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            self.w.count::<A::Error>()?;
            let repeated = if many.is_empty() && few.len() < 16 {
                let r = few.contains(&key);
                few.push(key.clone());
                r
            } else {
                if many.is_empty() {
                    many.extend(few.drain(..));
                }
                !many.insert(key.clone())
            };
            if repeated && self.w.findings.len() < crate::MAX_FINDINGS {
                self.w.path.push(Seg::Key(key.clone()));
                let variable = self.w.pointer();
                self.w.path.pop();
                self.w.findings.push(Finding {
                    rule: Rule::DuplicateJsonKey,
                    variable,
                    reason: "key repeated in one object (JSON.parse keeps the last)".into(),
                });
            }
            let last = keys::tokens(&key).next_back();
            self.w.info.push(KeyInfo {
                url_named: Some(last.is_some_and(ssrf::url_named)),
                constructor: last == Some("constructor"),
            });
            self.w.path.push(Seg::Key(key));
            let kind = map.next_value_seed(Node {
                w: &mut *self.w,
                depth,
            })?;
            push_arg(self.w, kind);
            self.w.path.pop();
            self.w.info.pop();
        }
        Ok(Kind::Container)
    }
}

/// Check the member at the current path: its key (with its parent, for
/// `constructor` → `prototype`) and, for a scalar, its value.
fn push_arg(w: &mut Walker<'_, '_>, kind: Kind<'_>) {
    let Walker {
        path,
        info,
        findings,
        ..
    } = w;
    // enough to decide and to log: a body of many bad members stops being
    // judged (it is refused or logged on the first ones)
    if findings.len() >= crate::MAX_FINDINGS {
        return;
    }
    let variable = || pointer(path);
    let n = info.len();
    let last = match path.last() {
        Some(Seg::Key(k)) => k.as_ref(),
        _ => "",
    };
    let after_constructor = n >= 2 && info[n - 2].constructor;
    keys::check(keys::tokens(last), after_constructor, findings, &variable);
    if let Kind::Scalar(v) = kind {
        // the member's name: the nearest key that is not an array index
        let named = info.iter().rev().find_map(|i| i.url_named).unwrap_or(false);
        ssrf::check(named, &v, findings, &variable);
    }
}

/// `json:` and the JSON pointer of `path`, written only up to the cap (a
/// path of long keys is never copied whole).
fn pointer(path: &[Seg<'_>]) -> String {
    let mut out = String::from("json:");
    if path.is_empty() {
        out.push('/');
    }
    for seg in path {
        if out.len() > crate::MAX_VARIABLE_BYTES {
            break;
        }
        out.push('/');
        let s = match seg {
            Seg::Key(k) => k.as_ref(),
            Seg::Index(i) => {
                out.push_str(&i.to_string());
                continue;
            }
        };
        let room = crate::MAX_VARIABLE_BYTES + 8 - out.len().min(crate::MAX_VARIABLE_BYTES);
        for c in s.chars().take(room) {
            match c {
                '~' => out.push_str("~0"),
                '/' => out.push_str("~1"),
                c => out.push(c),
            }
        }
    }
    cap(out)
}

/// An object key, borrowed from the body when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(s))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s.to_owned()))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s))
    }
}

/// Parse `body` as one JSON value into `out`.
pub(crate) fn parse(body: &[u8], limits: &Limits, out: &mut Inspection) {
    let mut w = Walker {
        limits,
        path: Vec::new(),
        info: Vec::new(),
        members: 0,
        findings: Vec::new(),
        stopped: None,
    };
    // body-parser reads a JSON body with a UTF-8 byte-order mark, and an
    // empty one as no body
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if body.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = Node {
        w: &mut w,
        depth: 0,
    }
    .deserialize(&mut de)
    .and_then(|kind| de.end().map(|()| kind));
    match parsed {
        Ok(kind) => {
            if let Kind::Scalar(_) = kind {
                push_arg(&mut w, kind);
            }
        }
        Err(e) => {
            let finding = w.stopped.take().unwrap_or_else(|| Finding {
                rule: Rule::MalformedJson,
                variable: "json:".into(),
                reason: cap(format!(
                    "invalid JSON at line {} column {}: {}",
                    e.line(),
                    e.column(),
                    syntax_reason(&e)
                )),
            });
            w.findings.push(finding);
        }
    }
    out.findings.append(&mut w.findings);
}

/// serde_json's message without its position suffix and without any echo
/// of the input (its messages name token classes, never content).
fn syntax_reason(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    full.strip_suffix(&suffix).unwrap_or(&full).to_owned()
}
