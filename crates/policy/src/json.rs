//! Vault's JSON policy syntax.
//!
//! Vault parses policies with HCL 1, which reads a text whose first
//! non-whitespace character is `{` as JSON: `{"path": {"<pattern>":
//! {"capabilities": [...]}}}`. hvac sends a policy given as a dict that way,
//! pretty-printed or compact. The JSON is read with serde_json; each path
//! block is then handed, as an HCL block, to the same [`parse_path`] the HCL
//! syntax goes through, so both syntaxes have one set of rules: the same
//! keys, capabilities, legacy `policy` values, refused features and errors.
//!
//! The accepted shapes, as Vault's:
//!
//! - a top-level object with the keys `path` and `name` (a string, ignored:
//!   the stored name wins);
//! - `path` is an object of patterns to rule objects, or an array of such
//!   objects (HCL 1's spelling of repeated blocks);
//! - a rule object's members are the keys of an HCL path block.
//!
//! Stricter than Vault, failing closed: the text must be valid JSON (HCL 1
//! tolerates a missing closing brace, trailing text and trailing commas),
//! and no object may repeat a key (Vault keeps both members; serde_json
//! alone would keep only the last, which could drop a `deny`).

use std::collections::HashSet;
use std::fmt;

use hcl::{Attribute, Block, Expression, Identifier, ObjectKey};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::PolicyError;
use crate::policy::{PathRule, parse_path};

/// Whether Vault would read `text` as JSON: its first non-whitespace
/// character is `{` (HCL 1's `lexMode`). No HCL body can start with `{`.
pub(crate) fn is_json(text: &str) -> bool {
    text.trim_start().starts_with('{')
}

/// A JSON value whose objects keep their members in order and refuse a
/// repeated key.
enum Json {
    Null,
    Bool(bool),
    Number(hcl::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Json, E> {
        Ok(Json::Bool(b))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Json, E> {
        Ok(Json::Number(n.into()))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Json, E> {
        Ok(Json::Number(n.into()))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Json, E> {
        hcl::Number::from_f64(n)
            .map(Json::Number)
            .ok_or_else(|| E::custom("invalid number"))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Json, E> {
        Ok(Json::String(s.to_owned()))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Json, E> {
        Ok(Json::String(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut seen = HashSet::new();
        let mut members = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let value = map.next_value()?;
            members.push((key, value));
        }
        Ok(Json::Object(members))
    }
}

impl Json {
    /// The HCL expression with the same value ([`parse_path`] only tells
    /// strings and arrays of strings from everything else).
    fn into_expr(self) -> Expression {
        match self {
            Json::Null => Expression::Null,
            Json::Bool(b) => Expression::Bool(b),
            Json::Number(n) => Expression::Number(n),
            Json::String(s) => Expression::String(s),
            Json::Array(items) => {
                Expression::Array(items.into_iter().map(Json::into_expr).collect())
            }
            Json::Object(members) => Expression::Object(
                members
                    .into_iter()
                    .map(|(k, v)| (ObjectKey::Expression(Expression::String(k)), v.into_expr()))
                    .collect(),
            ),
        }
    }
}

fn syntax(e: &serde_json::Error) -> PolicyError {
    let full = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    let message = full.strip_suffix(&position).unwrap_or(&full).to_owned();
    PolicyError::Syntax {
        line: e.line(),
        column: e.column(),
        message: format!("invalid JSON: {message}"),
    }
}

fn path_shape() -> PolicyError {
    PolicyError::Invalid(
        r#"path must be an object of path patterns to rules: {"path": {"<pattern>": {"capabilities": [...]}}}"#
            .to_owned(),
    )
}

/// Parse a JSON policy (see the module documentation) into path rules.
pub(crate) fn parse_json(text: &str) -> Result<Vec<PathRule>, PolicyError> {
    let doc: Json = serde_json::from_str(text).map_err(|e| syntax(&e))?;
    let Json::Object(top) = doc else {
        return Err(PolicyError::Invalid(
            "a JSON policy must be an object".to_owned(),
        ));
    };
    let mut rules = Vec::new();
    for (key, value) in top {
        match key.as_str() {
            // Vault accepts and ignores a top-level name; the stored name wins.
            "name" => {
                if !matches!(value, Json::String(_)) {
                    return Err(PolicyError::Invalid("name must be a string".to_owned()));
                }
            }
            "path" => match value {
                Json::Object(paths) => {
                    for (pattern, body) in paths {
                        rules.push(path_rule(pattern, body)?);
                    }
                }
                Json::Array(items) => {
                    for item in items {
                        let Json::Object(paths) = item else {
                            return Err(path_shape());
                        };
                        for (pattern, body) in paths {
                            rules.push(path_rule(pattern, body)?);
                        }
                    }
                }
                _ => return Err(path_shape()),
            },
            _ => return Err(PolicyError::InvalidKey(key)),
        }
    }
    Ok(rules)
}

/// One `"<pattern>": {...}` member, checked as the HCL block
/// `path "<pattern>" {...}` with the same attributes.
fn path_rule(pattern: String, body: Json) -> Result<PathRule, PolicyError> {
    let Json::Object(members) = body else {
        return Err(PolicyError::InvalidPath {
            path: pattern,
            reason: r#"rules must be an object: {"capabilities": [...]}"#.to_owned(),
        });
    };
    let mut block = Block::builder("path").add_label(pattern.as_str());
    for (key, value) in members {
        // Keys that are HCL identifiers go through as they are, so
        // parse_path judges them exactly as in HCL (in order). Any other
        // key cannot be one parse_path knows; hcl would rewrite it into an
        // identifier, so it is refused here, by its own name.
        let Ok(ident) = Identifier::new(key.as_str()) else {
            return Err(PolicyError::InvalidPathKey { path: pattern, key });
        };
        block = block.add_attribute(Attribute::new(ident, value.into_expr()));
    }
    parse_path(&block.build())
}
