//! Schemas: OpenAPI's dialects turned into JSON Schema 2020-12, compiled by
//! `jsonschema`, and the shape of each schema that string values (query,
//! path, header and form parameters) are read into before they are checked.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value, json};

use crate::{LoadError, Violation, err};

/// What a document's schemas are compiled against. Every schema an
/// operation uses is collected first ([`Ctx::compile`]) and the whole
/// document is compiled once ([`Ctx::finish`]): one copy of
/// `components`, however many operations refer to it.
pub(crate) struct Ctx<'a> {
    pub(crate) doc: &'a Value,
    pub(crate) components: &'a Value,
    schemas: RefCell<Vec<Value>>,
    map: Arc<OnceLock<jsonschema::ValidatorMap>>,
    /// Shapes by `$ref`, each built once.
    shapes: RefCell<HashMap<String, Arc<Shape>>>,
    building: RefCell<HashSet<String>>,
}

/// How a string parameter is read: by its schema's `type`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Shape {
    Integer,
    Number,
    Boolean,
    Str,
    Array(Arc<Shape>),
    Object(BTreeMap<String, Arc<Shape>>),
    /// No single `type`: the value stays a string.
    Any,
}

/// A compiled schema (its place in the document's validator map) and the
/// shape its string values are read into.
pub(crate) struct Compiled {
    map: Arc<OnceLock<jsonschema::ValidatorMap>>,
    pointer: String,
    pub(crate) shape: Arc<Shape>,
}

/// Most `$ref` hops followed from one place (a longer chain is a cycle).
const MAX_HOPS: usize = 32;
/// How deep a shape is built (recursive schemas stop here as `Any`).
const MAX_SHAPE_DEPTH: usize = 8;

impl<'a> Ctx<'a> {
    pub(crate) fn new(doc: &'a Value, components: &'a Value) -> Ctx<'a> {
        Ctx {
            doc,
            components,
            schemas: RefCell::new(Vec::new()),
            map: Arc::new(OnceLock::new()),
            shapes: RefCell::new(HashMap::new()),
            building: RefCell::new(HashSet::new()),
        }
    }

    /// Follow `$ref`s (inside the document only) to the object they name.
    pub(crate) fn deref<'v>(
        &'v self,
        mut v: &'v Value,
        where_: &str,
    ) -> Result<&'v Value, LoadError> {
        for _ in 0..MAX_HOPS {
            let Some(r) = v.get("$ref").and_then(Value::as_str) else {
                return Ok(v);
            };
            v = self.pointer(r).ok_or_else(|| {
                err(format!(
                    "{where_}: $ref {r:?} names nothing in the document"
                ))
            })?;
        }
        Err(err(format!(
            "{where_}: $ref chain longer than {MAX_HOPS} (a cycle?)"
        )))
    }

    fn pointer(&self, r: &str) -> Option<&Value> {
        let frag = r.strip_prefix('#')?;
        self.doc.pointer(&crate::params::decode_component(frag)?)
    }

    /// A schema to compile with the document (see [`Ctx::finish`]).
    pub(crate) fn compile(&self, schema: &Value, _where: &str) -> Result<Compiled, LoadError> {
        let mut schemas = self.schemas.borrow_mut();
        let pointer = format!("#/$defs/s{}", schemas.len());
        schemas.push(schema.clone());
        drop(schemas);
        Ok(Compiled {
            map: Arc::clone(&self.map),
            pointer,
            shape: self.shape(schema, 0),
        })
    }

    /// Compile every collected schema in one document beside
    /// `components`, `$ref`s into it resolved: each subschema once.
    pub(crate) fn finish(&self) -> Result<(), LoadError> {
        let mut defs = Map::new();
        for (i, s) in self.schemas.borrow_mut().drain(..).enumerate() {
            defs.insert(format!("s{i}"), s);
        }
        let mut root = Map::new();
        root.insert(
            "$schema".into(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
        if !self.components.is_null() {
            root.insert("components".into(), self.components.clone());
        }
        root.insert("$defs".into(), Value::Object(defs));
        let map = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .with_format("byte", is_base64)
            .with_pattern_options(jsonschema::PatternOptions::regex())
            .build_map(&Value::Object(root))
            .map_err(|e| err(format!("schemas: {e}")))?;
        self.map
            .set(map)
            .map_err(|_| err("schemas compiled twice"))?;
        Ok(())
    }

    fn shape(&self, schema: &Value, depth: usize) -> Arc<Shape> {
        if depth > MAX_SHAPE_DEPTH {
            return Arc::new(Shape::Any);
        }
        // a `$ref` is shaped once (and a reference back into one being
        // shaped is `Any`): a document of many recursive references costs
        // one shape per reference, not one per path through them
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            if let Some(done) = self.shapes.borrow().get(r) {
                return Arc::clone(done);
            }
            if !self.building.borrow_mut().insert(r.to_string()) {
                return Arc::new(Shape::Any);
            }
            let shaped = match self.deref(schema, "") {
                Ok(target) => self.shape(target, depth + 1),
                Err(_) => Arc::new(Shape::Any),
            };
            self.building.borrow_mut().remove(r);
            self.shapes
                .borrow_mut()
                .insert(r.to_string(), Arc::clone(&shaped));
            return shaped;
        }
        let s = schema;
        // `allOf` of one schema (a common way to add a description to a $ref)
        if s.get("type").is_none()
            && let Some([one]) = s.get("allOf").and_then(Value::as_array).map(Vec::as_slice)
        {
            return self.shape(one, depth + 1);
        }
        let ty = match s.get("type") {
            Some(Value::String(t)) => t.as_str(),
            // ["integer", "null"] and the like: the one that is not null
            Some(Value::Array(ts)) => {
                let mut it = ts.iter().filter_map(Value::as_str).filter(|t| *t != "null");
                match (it.next(), it.next()) {
                    (Some(t), None) => t,
                    _ => return Arc::new(Shape::Any),
                }
            }
            _ => return Arc::new(Shape::Any),
        };
        Arc::new(match ty {
            "integer" => Shape::Integer,
            "number" => Shape::Number,
            "boolean" => Shape::Boolean,
            "string" => Shape::Str,
            "array" => Shape::Array(
                s.get("items")
                    .map_or_else(|| Arc::new(Shape::Any), |i| self.shape(i, depth + 1)),
            ),
            "object" => Shape::Object(
                s.get("properties")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), self.shape(v, depth + 1)))
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            _ => Shape::Any,
        })
    }
}

impl Compiled {
    /// The first violation of `value`, located under `prefix`. A schema
    /// that is not compiled (never, once the document loaded) fails closed.
    pub(crate) fn check(&self, value: &Value, prefix: &str) -> Result<(), Violation> {
        let Some(validator) = self.map.get().and_then(|m| m.get(&self.pointer)) else {
            return Err(Violation::new(prefix, "schema_unavailable"));
        };
        match validator.iter_errors(value).next() {
            None => Ok(()),
            Some(e) => Err(Violation::new(
                format!("{prefix}{}", e.instance_path().as_str()),
                e.kind().keyword().to_string(),
            )),
        }
    }
}

/// OpenAPI's `format: byte`: base64 (RFC 4648 §4, padded).
fn is_base64(s: &str) -> bool {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(4) {
        return false;
    }
    let pad = b.iter().rev().take_while(|&&c| c == b'=').count();
    pad <= 2
        && b[..b.len() - pad]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

/// Refuse any `$ref` that leaves the document: nothing is ever fetched.
pub(crate) fn check_refs(v: &Value, at: &str) -> Result<(), LoadError> {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref") {
                match r.as_str() {
                    Some(s) if s.starts_with('#') => {}
                    _ => {
                        return Err(err(format!(
                            "{at}: $ref {r}: only references inside the document (#/...) are followed; nothing is fetched"
                        )));
                    }
                }
            }
            for (k, c) in m {
                check_refs(c, &format!("{at}/{k}"))?;
            }
            Ok(())
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                check_refs(c, &format!("{at}/{i}"))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// OpenAPI 3.0's schema dialect in 2020-12 terms, in place: `nullable`
/// adds `null` to `type` (and `enum`); boolean `exclusiveMinimum` /
/// `exclusiveMaximum` become the numbers; keywords beside a `$ref` are
/// dropped (3.0 ignores them); `format: int32` gets its bounds.
pub(crate) fn rewrite_30(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.contains_key("$ref") {
                m.retain(|k, _| k == "$ref");
                return;
            }
            if m.get("nullable") == Some(&Value::Bool(true)) {
                m.remove("nullable");
                if let Some(t) = m.get("type").and_then(Value::as_str).map(str::to_string) {
                    m.insert("type".into(), json!([t, "null"]));
                }
                if let Some(Value::Array(e)) = m.get_mut("enum")
                    && !e.contains(&Value::Null)
                {
                    e.push(Value::Null);
                }
            }
            for (ex, bound) in [
                ("exclusiveMinimum", "minimum"),
                ("exclusiveMaximum", "maximum"),
            ] {
                match m.get(ex) {
                    Some(Value::Bool(true)) => {
                        if let Some(b) = m.remove(bound) {
                            m.insert(ex.into(), b);
                        } else {
                            m.remove(ex);
                        }
                    }
                    Some(Value::Bool(false)) => {
                        m.remove(ex);
                    }
                    _ => {}
                }
            }
            int32_bounds(m);
            for c in m.values_mut() {
                rewrite_30(c);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(rewrite_30),
        _ => {}
    }
}

/// OpenAPI 3.1 is 2020-12 already; only `format: int32` gets its bounds.
pub(crate) fn rewrite_31(v: &mut Value) {
    match v {
        Value::Object(m) => {
            int32_bounds(m);
            for c in m.values_mut() {
                rewrite_31(c);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(rewrite_31),
        _ => {}
    }
}

fn int32_bounds(m: &mut Map<String, Value>) {
    if m.get("format").and_then(Value::as_str) == Some("int32") {
        m.entry("minimum").or_insert(json!(i32::MIN));
        m.entry("maximum").or_insert(json!(i32::MAX));
    }
}
