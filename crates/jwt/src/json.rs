//! Strict JSON: a JSON object with no duplicate member names at any depth.
//!
//! `serde_json::Value` keeps the last of two duplicate members, so
//! `{"alg":"ES256","alg":"none"}` would mean different things to different
//! parsers. RFC 7515 §5.2 lets a JWS parser either reject or use the last
//! duplicate; we reject, so no two components can disagree about a token.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Parse `bytes` as a JSON object without duplicate members, or `None`.
pub fn object(bytes: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Strict>(bytes) {
        Ok(Strict(Value::Object(map))) => Some(map),
        _ => None,
    }
}

/// A `Value` whose deserialisation fails on duplicate object members.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Strict, E> {
        Number::from_f64(v)
            .map(|n| Strict(Value::Number(n)))
            .ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(Value::String(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Strict, E> {
        Ok(Strict(Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }
    fn visit_none<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Strict(Value::Array(out)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            // Names are compared after unescaping, so "a" and "\u0061" collide.
            if out.contains_key(&key) {
                return Err(de::Error::custom("duplicate member"));
            }
            out.insert(key, value);
        }
        Ok(Strict(Value::Object(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::object;

    #[test]
    fn accepts_objects_only() {
        assert!(object(br#"{"a":1,"b":[1,2,{"c":null}]}"#).is_some());
        assert!(object(br#" { "a" : 1 } "#).is_some());
        assert!(object(b"[1]").is_none());
        assert!(object(b"\"x\"").is_none());
        assert!(object(b"").is_none());
        assert!(object(b"{} x").is_none());
    }

    #[test]
    fn rejects_duplicates_at_any_depth() {
        assert!(object(br#"{"a":1,"a":1}"#).is_none());
        assert!(object(br#"{"a":1,"\u0061":2}"#).is_none());
        assert!(object(br#"{"x":{"b":1,"b":2}}"#).is_none());
        assert!(object(br#"{"x":[{"b":1,"b":2}]}"#).is_none());
    }

    #[test]
    fn rejects_bad_utf8_and_lone_surrogates() {
        assert!(object(b"{\"a\":\"\xff\"}").is_none());
        assert!(object(br#"{"a":"\ud800"}"#).is_none());
    }
}
