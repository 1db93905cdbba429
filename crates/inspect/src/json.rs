//! JSON bodies: parsed with serde_json's tokenizer (no hand-written
//! parser), walked without building a tree. Every member and array element
//! becomes an [`Arg`] (containers with no value, scalars with their text);
//! nesting, member count and repeated keys are checked while parsing, so a
//! bomb stops at its limit instead of after it was built.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::{Arg, Finding, Inspection, Limits, Rule, Source, cap};

struct Walker<'l> {
    limits: &'l Limits,
    path: Vec<String>,
    members: usize,
    args: Vec<Arg>,
    findings: Vec<Finding>,
    /// The limit that stopped the parse (the serde error then only unwinds).
    stopped: Option<Finding>,
}

impl Walker<'_> {
    fn pointer(&self) -> String {
        Arg {
            source: Source::Json,
            segments: self.path.clone(),
            value: None,
        }
        .variable()
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
enum Kind {
    Container,
    Scalar(String),
    Null,
}

struct Node<'w, 'l> {
    w: &'w mut Walker<'l>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_> {
    type Value = Kind;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_, '_> {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Kind, E> {
        Ok(Kind::Scalar(b.to_string()))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Kind, E> {
        Ok(Kind::Scalar(n.to_string()))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Kind, E> {
        Ok(Kind::Scalar(n.to_string()))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Kind, E> {
        Ok(Kind::Scalar(n.to_string()))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Kind, E> {
        Ok(Kind::Scalar(s.to_owned()))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Kind, E> {
        Ok(Kind::Scalar(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        let depth = self.depth + 1;
        if depth > self.w.limits.max_depth {
            let max = self.w.limits.max_depth;
            return Err(self
                .w
                .stop(Rule::JsonTooDeep, format!("nested deeper than {max}")));
        }
        let mut i = 0usize;
        loop {
            self.w.path.push(i.to_string());
            let next = seq.next_element_seed(Node {
                w: &mut *self.w,
                depth,
            })?;
            let Some(kind) = next else {
                self.w.path.pop();
                break;
            };
            self.w.count::<A::Error>()?;
            push_arg(self.w, kind);
            self.w.path.pop();
            i += 1;
        }
        Ok(Kind::Container)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        let depth = self.depth + 1;
        if depth > self.w.limits.max_depth {
            let max = self.w.limits.max_depth;
            return Err(self
                .w
                .stop(Rule::JsonTooDeep, format!("nested deeper than {max}")));
        }
        let mut seen: HashSet<String> = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            self.w.count::<A::Error>()?;
            if !seen.insert(key.clone()) {
                self.w.path.push(key.clone());
                let variable = self.w.pointer();
                self.w.path.pop();
                self.w.findings.push(Finding {
                    rule: Rule::DuplicateJsonKey,
                    variable,
                    reason: "key repeated in one object (JSON.parse keeps the last)".into(),
                });
            }
            self.w.path.push(key);
            let kind = map.next_value_seed(Node {
                w: &mut *self.w,
                depth,
            })?;
            push_arg(self.w, kind);
            self.w.path.pop();
        }
        Ok(Kind::Container)
    }
}

fn push_arg(w: &mut Walker<'_>, kind: Kind) {
    let value = match kind {
        Kind::Scalar(s) => Some(s),
        Kind::Container | Kind::Null => None,
    };
    w.args.push(Arg {
        source: Source::Json,
        segments: w.path.clone(),
        value,
    });
}

/// Parse `body` as one JSON value into `out`.
pub(crate) fn parse(body: &[u8], limits: &Limits, out: &mut Inspection) {
    let mut w = Walker {
        limits,
        path: Vec::new(),
        members: 0,
        args: Vec::new(),
        findings: Vec::new(),
        stopped: None,
    };
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
    out.args.args.append(&mut w.args);
    out.findings.append(&mut w.findings);
}

/// serde_json's message without its position suffix and without any echo
/// of the input (its messages name token classes, never content).
fn syntax_reason(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    full.strip_suffix(&suffix).unwrap_or(&full).to_owned()
}
