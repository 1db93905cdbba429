//! Request bodies: JSON parsed by serde_json, through a visitor that counts
//! what it builds and stops at OpenBao's listener limits
//! (`max_request_json_strings`, `max_request_json_memory`), so a small body of
//! very many values cannot make the server allocate gigabytes. Bodies are
//! only parsed after the request was authorised (see `http`), except on the
//! few unauthenticated endpoints, which get a small size limit as well.

use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::logical::ApiError;

/// A record stored as JSON: `None` when absent; one that does not parse is
/// an internal error (storage holds only what this server wrote).
pub(crate) fn stored<T: serde::de::DeserializeOwned>(
    bytes: Option<impl AsRef<[u8]>>,
) -> Result<Option<T>, ApiError> {
    bytes
        .map(|b| serde_json::from_slice(b.as_ref()).map_err(ApiError::internal))
        .transpose()
}

/// The JSON bytes a record is stored as.
pub(crate) fn to_stored<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(v).map_err(ApiError::internal)
}

/// Limits on one JSON body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsonLimits {
    /// Strings (object keys and string values) in the whole body.
    pub max_strings: usize,
    /// Estimated bytes of memory the parsed value may take (OpenBao's
    /// estimate: 16 per value, plus 16 + length per string, 8 per number,
    /// 72 per object, 24 per array).
    pub max_memory: usize,
}

impl JsonLimits {
    /// OpenBao's defaults: 1,000 strings, 32 MiB + 512 KiB.
    pub const DEFAULT: JsonLimits = JsonLimits {
        max_strings: 1000,
        max_memory: 32 * 1024 * 1024 + 512 * 1024,
    };
}

const TOO_MANY_STRINGS: &str =
    "refused JSON input due to high complexity: exceeded maximum number of strings";
const TOO_MUCH_MEMORY: &str =
    "refused JSON input due to high complexity: exceeded maximum estimated memory limits";

struct Budget {
    limits: JsonLimits,
    strings: Cell<usize>,
    memory: Cell<usize>,
    /// Which limit stopped the parse, so the error is not mistaken for bad syntax.
    exceeded: Cell<Option<&'static str>>,
}

impl Budget {
    fn charge<E: serde::de::Error>(&self, bytes: usize, strings: usize) -> Result<(), E> {
        let s = self.strings.get().saturating_add(strings);
        let m = self.memory.get().saturating_add(bytes);
        self.strings.set(s);
        self.memory.set(m);
        let over = if s > self.limits.max_strings {
            Some(TOO_MANY_STRINGS)
        } else if m > self.limits.max_memory {
            Some(TOO_MUCH_MEMORY)
        } else {
            None
        };
        match over {
            Some(msg) => {
                self.exceeded.set(Some(msg));
                Err(E::custom(msg))
            }
            None => Ok(()),
        }
    }
}

struct Seed<'a>(&'a Budget);

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// An object key: a string, counted like one.
struct KeySeed<'a>(&'a Budget);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = String;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed<'_> {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        self.0.charge(32 + v.len(), 1)?;
        Ok(v.to_owned())
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        self.0.charge(16, 0)?;
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        self.0.charge(24, 0)?;
        Ok(Value::from(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        self.0.charge(24, 0)?;
        Ok(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        self.0.charge(24, 0)?;
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("invalid number"))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.0.charge(32 + v.len(), 1)?;
        Ok(Value::String(v.to_owned()))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.0.charge(16, 0)?;
        Ok(Value::Null)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.0.charge(40, 0)?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Seed(self.0))? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.0.charge(88, 0)?;
        let mut out = Map::new();
        while let Some(k) = map.next_key_seed(KeySeed(self.0))? {
            let v = map.next_value_seed(Seed(self.0))?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// Parse a request body: empty (or only whitespace) and `null` are no data;
/// anything else must be a JSON object within `limits`. Errors never echo
/// the input.
pub fn parse_body(bytes: &[u8], limits: JsonLimits) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let budget = Budget {
        limits,
        strings: Cell::new(0),
        memory: Cell::new(0),
        exceeded: Cell::new(None),
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = Seed(&budget)
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(Value::Object(m)) => Ok(m),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(_) => Err(ApiError::bad_request(
            "failed to parse JSON input: request body must be a JSON object",
        )),
        Err(e) => Err(match budget.exceeded.get() {
            Some(msg) => ApiError::bad_request(msg),
            None => ApiError::bad_request(format!(
                "failed to parse JSON input: {}",
                json_error_class(&e)
            )),
        }),
    }
}

/// serde_json's message without any echo of the input.
fn json_error_class(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Syntax => "invalid JSON syntax",
        Category::Eof => "unexpected end of JSON input",
        Category::Data => "invalid JSON data",
        Category::Io => "read error",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> Result<Map<String, Value>, ApiError> {
        parse_body(s.as_bytes(), JsonLimits::DEFAULT)
    }

    #[test]
    fn objects_and_nothing() {
        assert_eq!(p("").unwrap(), Map::new());
        assert_eq!(p(" \n").unwrap(), Map::new());
        assert_eq!(p("null").unwrap(), Map::new());
        let m = p(r#"{"a":{"b":[1,2.5,-3,true,null,"x"]}}"#).unwrap();
        assert_eq!(
            Value::Object(m),
            json!({"a": {"b": [1, 2.5, -3, true, null, "x"]}})
        );
    }

    #[test]
    fn errors_do_not_echo_input() {
        assert_eq!(
            p("[1]").unwrap_err(),
            ApiError::bad_request("failed to parse JSON input: request body must be a JSON object")
        );
        assert_eq!(
            p(r#"{"secret-value"#).unwrap_err(),
            ApiError::bad_request(
                "failed to parse JSON input: unexpected end of JSON input at line 1 column 14"
            )
        );
        assert_eq!(
            p(r#"{"a":1} trailing-secret"#).unwrap_err(),
            ApiError::bad_request(
                "failed to parse JSON input: invalid JSON syntax at line 1 column 9"
            )
        );
    }

    #[test]
    fn string_limit_counts_keys_and_values_like_openbao() {
        // 499 keys + 499 values + "data" = 999 strings
        let ok: Map<String, Value> = (0..499).map(|i| (format!("k{i}"), json!("a"))).collect();
        let body = json!({ "data": ok }).to_string();
        assert!(p(&body).is_ok());
        // one more key and value: 1001
        let over: Map<String, Value> = (0..500).map(|i| (format!("k{i}"), json!("a"))).collect();
        let body = json!({ "data": over }).to_string();
        assert_eq!(
            p(&body).unwrap_err(),
            ApiError::bad_request(TOO_MANY_STRINGS)
        );
        // numbers are not strings
        let nums: Vec<u32> = (0..100_000).collect();
        assert!(p(&json!({ "data": { "a": nums } }).to_string()).is_ok());
    }

    #[test]
    fn memory_limit() {
        let limits = JsonLimits {
            max_strings: usize::MAX,
            max_memory: 10_000,
        };
        let nums: Vec<u32> = (0..1000).collect();
        assert_eq!(
            parse_body(json!({ "a": nums }).to_string().as_bytes(), limits).unwrap_err(),
            ApiError::bad_request(TOO_MUCH_MEMORY)
        );
        let big = "x".repeat(20_000);
        assert_eq!(
            parse_body(json!({ "a": big }).to_string().as_bytes(), limits).unwrap_err(),
            ApiError::bad_request(TOO_MUCH_MEMORY)
        );
        assert!(parse_body(br#"{"a":[1,2,3]}"#, limits).is_ok());
    }
}
