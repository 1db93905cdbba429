//! Parameters: declared per operation (path-level ones merged in), read
//! from the request by their `in` and `style`, turned from strings into the
//! types their schemas name, and checked.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::schema::{Compiled, Ctx, Shape};
use crate::{LoadError, Request, Violation, err};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum In {
    Path,
    Query,
    Header,
    Cookie,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Style {
    Form,
    DeepObject,
    SpaceDelimited,
    PipeDelimited,
    Simple,
}

pub(crate) struct Param {
    pub(crate) name: String,
    pub(crate) location: In,
    required: bool,
    style: Style,
    explode: bool,
    schema: Option<Compiled>,
    /// Described by `content: application/json`: the value is JSON text.
    json: bool,
}

/// The operation's parameters: its own, and the path item's that it does
/// not override (same name and `in`).
pub(crate) fn collect(
    ctx: &Ctx<'_>,
    common: Option<&Value>,
    own: Option<&Value>,
    where_: &str,
) -> Result<Vec<Param>, LoadError> {
    let mut out: Vec<Param> = Vec::new();
    for (list, level) in [(own, "parameters"), (common, "path parameters")] {
        let Some(list) = list else { continue };
        let Some(items) = list.as_array() else {
            return Err(err(format!("{where_}: {level} is not a list")));
        };
        for (i, p) in items.iter().enumerate() {
            let at = format!("{where_}.{level}[{i}]");
            let p = param(ctx, p, &at)?;
            if out
                .iter()
                .any(|q| q.name == p.name && q.location == p.location)
            {
                if level == "parameters" {
                    return Err(err(format!("{at}: {:?} declared twice", p.name)));
                }
                continue;
            }
            // Accept, Content-Type and Authorization are not parameters (OpenAPI 3)
            if p.location == In::Header
                && matches!(p.name.as_str(), "accept" | "content-type" | "authorization")
            {
                continue;
            }
            out.push(p);
        }
    }
    Ok(out)
}

fn param(ctx: &Ctx<'_>, p: &Value, at: &str) -> Result<Param, LoadError> {
    let p = ctx.deref(p, at)?;
    let name = p
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| err(format!("{at}: name missing")))?;
    let location = match p.get("in").and_then(Value::as_str) {
        Some("path") => In::Path,
        Some("query") => In::Query,
        Some("header") => In::Header,
        Some("cookie") => In::Cookie,
        other => {
            return Err(err(format!(
                "{at}: in {other:?} is not path, query, header or cookie"
            )));
        }
    };
    let name = if location == In::Header {
        name.to_ascii_lowercase()
    } else {
        name.to_string()
    };
    let default_style = match location {
        In::Query | In::Cookie => Style::Form,
        In::Path | In::Header => Style::Simple,
    };
    let style = match p.get("style").and_then(Value::as_str) {
        None => default_style,
        Some("form") => Style::Form,
        Some("simple") => Style::Simple,
        Some("deepObject") if location == In::Query => Style::DeepObject,
        Some("spaceDelimited") if location == In::Query => Style::SpaceDelimited,
        Some("pipeDelimited") if location == In::Query => Style::PipeDelimited,
        Some(s) => return Err(err(format!("{at}: style {s:?} is not supported here"))),
    };
    let explode = p
        .get("explode")
        .and_then(Value::as_bool)
        .unwrap_or(style == Style::Form);
    let required =
        location == In::Path || p.get("required").and_then(Value::as_bool).unwrap_or(false);
    // a parameter described by `content`: a JSON value (`application/json`)
    // is parsed and checked against its schema; another media type is taken
    // as it comes
    let (schema, json) = match (p.get("schema"), p.get("content").and_then(Value::as_object)) {
        (Some(s), _) => (Some(ctx.compile(s, &format!("{at}.schema"))?), false),
        (None, Some(content)) => match content.get("application/json") {
            Some(m) => match m.get("schema") {
                Some(s) => (
                    Some(ctx.compile(s, &format!("{at}.content.application/json.schema"))?),
                    true,
                ),
                None => (None, true),
            },
            None => (None, false),
        },
        (None, None) => (None, false),
    };
    Ok(Param {
        name,
        location,
        required,
        style,
        explode,
        schema,
        json,
    })
}

/// `%XX` decoded (a bad escape or a result that is not UTF-8: `None`).
pub fn decode_component(s: &str) -> Option<String> {
    decode(s, false)
}

fn decode(s: &str, plus_is_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |c: u8| (c as char).to_digit(16);
                let hi = hex(*b.get(i + 1)?)?;
                let lo = hex(*b.get(i + 2)?)?;
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Most pairs in a query string or form body: Node's querystring and qs
/// read only the first 1,000, so past them the service and the check would
/// see different parameters.
pub(crate) const MAX_PAIRS: usize = 1000;

/// `a=1&b=2` decoded (form encoding), in order; empty pairs skipped.
fn pairs(text: &str, at: &str) -> Result<Vec<(String, String)>, Violation> {
    let mut out = Vec::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        if out.len() == MAX_PAIRS {
            return Err(Violation::new(at, "too_many_parameters"));
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match (decode(k, true), decode(v, true)) {
            (Some(k), Some(v)) => out.push((k, v)),
            _ => return Err(Violation::new(at, "malformed_encoding")),
        }
    }
    Ok(out)
}

/// A string read as its shape's type (left a string when it does not read).
fn coerce(s: &str, shape: &Shape) -> Value {
    match shape {
        Shape::Integer => {
            // beyond ±(2^53 − 1) JavaScript reads another number: left a
            // string, so the schema's `type` refuses it
            const MAX_SAFE: u64 = (1 << 53) - 1;
            let digits = s.strip_prefix('-').unwrap_or(s);
            if !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && let Ok(n) = s.parse::<i64>()
                && n.unsigned_abs() <= MAX_SAFE
            {
                return Value::from(n);
            }
            Value::String(s.into())
        }
        Shape::Number => {
            let ok = !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'e' | b'E' | b'+'))
                && !s.starts_with('+');
            match s.parse::<f64>() {
                Ok(f) if ok && f.is_finite() => serde_json::Number::from_f64(f)
                    .map_or_else(|| Value::String(s.into()), Value::Number),
                _ => Value::String(s.into()),
            }
        }
        Shape::Boolean => match s {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(s.into()),
        },
        _ => Value::String(s.into()),
    }
}

fn shape(p: &Param) -> &Shape {
    p.schema.as_ref().map_or(&Shape::Any, |c| c.shape.as_ref())
}

fn split_array(s: &str, sep: char, shape: &Shape) -> Value {
    let inner = match shape {
        Shape::Array(i) => i.as_ref(),
        _ => &Shape::Any,
    };
    Value::Array(s.split(sep).map(|x| coerce(x, inner)).collect())
}

/// A request-chosen name in a pointer: escaped, at most 64 bytes.
fn short(name: &str) -> String {
    let mut end = name.len().min(64);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let cut = &name[..end];
    let e = escape(cut);
    if end < name.len() {
        format!("{e}…")
    } else {
        e
    }
}

fn check_value(p: &Param, value: &Value, at: &str) -> Result<(), Violation> {
    match &p.schema {
        Some(c) => c.check(value, at),
        None => Ok(()),
    }
}

fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// Every declared parameter present where required and valid; no query
/// parameter the operation does not declare.
pub(crate) fn check(
    params: &[Param],
    captures: &[(String, String)],
    req: &Request<'_>,
) -> Result<(), Violation> {
    for (name, raw) in captures {
        let Some(p) = params
            .iter()
            .find(|p| p.location == In::Path && &p.name == name)
        else {
            continue;
        };
        let at = format!("/path/{}", escape(name));
        let value = match shape(p) {
            Shape::Array(_) => split_array(raw, ',', shape(p)),
            s => coerce(raw, s),
        };
        check_value(p, &value, &at)?;
    }

    let query = pairs(req.query.unwrap_or(""), "/query")?;
    let mut used = vec![false; query.len()];
    for p in params.iter().filter(|p| p.location == In::Query) {
        let at = format!("/query/{}", escape(&p.name));
        let value = if p.style == Style::DeepObject {
            let props = match shape(p) {
                Shape::Object(m) => Some(m),
                _ => None,
            };
            let mut obj = serde_json::Map::new();
            let prefix = format!("{}[", p.name);
            for (i, (k, v)) in query.iter().enumerate() {
                let Some(prop) = k.strip_prefix(&prefix).and_then(|r| r.strip_suffix(']')) else {
                    continue;
                };
                used[i] = true;
                if prop.is_empty() || prop.contains(['[', ']']) {
                    return Err(Violation::new(at, "malformed_deep_object"));
                }
                if obj.contains_key(prop) {
                    return Err(Violation::new(
                        format!("{at}/{}", escape(prop)),
                        "repeated_parameter",
                    ));
                }
                let s = props
                    .and_then(|m| m.get(prop))
                    .map_or(&Shape::Any, |a| a.as_ref());
                obj.insert(prop.to_string(), coerce(v, s));
            }
            (!obj.is_empty()).then_some(Value::Object(obj))
        } else {
            let found: Vec<usize> = (0..query.len()).filter(|&i| query[i].0 == p.name).collect();
            for &i in &found {
                used[i] = true;
            }
            let is_array = matches!(shape(p), Shape::Array(_));
            match found.as_slice() {
                [] => None,
                [i] if p.json => match serde_json::from_str::<Value>(&query[*i].1) {
                    Ok(v) => Some(v),
                    Err(_) => return Err(Violation::new(at, "malformed_json")),
                },
                [i] => {
                    let raw = &query[*i].1;
                    Some(match (p.style, p.explode, is_array) {
                        (Style::SpaceDelimited, _, true) => split_array(raw, ' ', shape(p)),
                        (Style::PipeDelimited, _, true) => split_array(raw, '|', shape(p)),
                        (Style::Form, false, true) => split_array(raw, ',', shape(p)),
                        (_, _, true) => split_array(raw, '\u{0}', shape(p)),
                        _ => coerce(raw, shape(p)),
                    })
                }
                many if is_array && p.explode && p.style == Style::Form => {
                    let inner = match shape(p) {
                        Shape::Array(i) => i.as_ref(),
                        _ => &Shape::Any,
                    };
                    Some(Value::Array(
                        many.iter().map(|&i| coerce(&query[i].1, inner)).collect(),
                    ))
                }
                // a name repeated where one value is declared: frameworks
                // read it as an array or as the first or the last value
                _ => return Err(Violation::new(at, "repeated_parameter")),
            }
        };
        match value {
            None if p.required => return Err(Violation::new(at, "required")),
            None => {}
            Some(v) => check_value(p, &v, &at)?,
        }
    }
    if let Some(i) = used.iter().position(|u| !u) {
        return Err(Violation::new(
            format!("/query/{}", short(&query[i].0)),
            "unknown_parameter",
        ));
    }

    for p in params.iter().filter(|p| p.location == In::Header) {
        let at = format!("/header/{}", escape(&p.name));
        let mut vals = req.headers.iter().filter(|(n, _)| *n == p.name);
        match (vals.next(), vals.next()) {
            (None, _) if p.required => return Err(Violation::new(at, "required")),
            (None, _) => {}
            (Some(_), Some(_)) => return Err(Violation::new(at, "repeated_parameter")),
            (Some((_, v)), None) => {
                let value = match shape(p) {
                    Shape::Array(_) => split_array(v, ',', shape(p)),
                    s => coerce(v, s),
                };
                check_value(p, &value, &at)?;
            }
        }
    }

    // cookies as the `cookie` package (cookie-parser) reads them: names and
    // values trimmed, values percent-decoded, `j:` values as JSON; a name
    // sent twice is refused (parsers disagree on which copy wins)
    let mut cookies: Vec<(String, String)> = Vec::new();
    for (_, v) in req.headers.iter().filter(|(n, _)| *n == "cookie") {
        for pair in v.split(';') {
            let Some((n, val)) = pair.split_once('=') else {
                continue;
            };
            let val = val.trim();
            let val = val
                .strip_prefix('"')
                .and_then(|x| x.strip_suffix('"'))
                .unwrap_or(val);
            let val = decode_component(val).unwrap_or_else(|| val.to_string());
            cookies.push((n.trim().to_string(), val));
        }
    }
    for p in params.iter().filter(|p| p.location == In::Cookie) {
        let at = format!("/cookie/{}", escape(&p.name));
        let mut found = cookies.iter().filter(|(n, _)| *n == p.name);
        match (found.next(), found.next()) {
            (None, _) if p.required => return Err(Violation::new(at, "required")),
            (None, _) => {}
            (Some(_), Some(_)) => return Err(Violation::new(at, "repeated_parameter")),
            (Some((_, v)), None) => {
                let value = match v.strip_prefix("j:") {
                    Some(json) => {
                        serde_json::from_str(json).unwrap_or_else(|_| Value::String(v.clone()))
                    }
                    None => coerce(v, shape(p)),
                };
                check_value(p, &value, &at)?;
            }
        }
    }
    Ok(())
}

/// A form body as the object its schema describes: each field read by its
/// property's shape; a field repeated where its property is not an array
/// is refused.
pub(crate) fn form_object(text: &str, compiled: &Compiled) -> Result<Value, Violation> {
    let props: BTreeMap<String, std::sync::Arc<Shape>> = match compiled.shape.as_ref() {
        Shape::Object(m) => m.clone(),
        _ => BTreeMap::new(),
    };
    let mut obj = serde_json::Map::new();
    for (k, v) in pairs(text, "/body")? {
        let at = format!("/body/{}", short(&k));
        // Express's extended parser (qs) reads `[role]=x`, `role[]=x` and
        // `role[0]=x` as the property `role`: a bracketed name the schema
        // does not declare is refused, never checked as a key of its own
        if !props.contains_key(&k) && k.contains(['[', ']']) {
            return Err(Violation::new(at, "nested_form_key"));
        }
        let s = props.get(&k).map_or(&Shape::Any, |a| a.as_ref());
        match (obj.get_mut(&k), s) {
            (Some(Value::Array(a)), Shape::Array(inner)) => a.push(coerce(&v, inner)),
            (Some(_), _) => return Err(Violation::new(at, "repeated_parameter")),
            (None, Shape::Array(inner)) => {
                obj.insert(k, Value::Array(vec![coerce(&v, inner)]));
            }
            (None, s) => {
                obj.insert(k, coerce(&v, s));
            }
        }
    }
    Ok(Value::Object(obj))
}
