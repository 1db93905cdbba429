//! OpenAPI 3.0 and 3.1 request validation: the positive security model.
//!
//! A route names the OpenAPI document of the service behind it; a request
//! that the document does not describe is refused before it reaches the
//! service: an unknown path or method, a missing required parameter, a
//! parameter the operation does not declare, a value of the wrong type or
//! outside its schema, a body where none is declared, a body of an
//! undeclared media type, or a JSON or form body that does not match its
//! schema.
//!
//! Pure: a document in ([`Spec::parse`]), request parts in
//! ([`Spec::validate`]), a [`Violation`] out. Schemas are JSON Schema, checked
//! by the `jsonschema` crate (a maintained validator; `pattern` on the
//! linear-time `regex` crate): OpenAPI 3.1 schemas as JSON Schema 2020-12,
//! 3.0 schemas as Draft 4 after turning 3.0's own keywords into it
//! (`nullable`, `format: int32`). Only references inside the document
//! (`#/...`) are followed: a document with any other `$ref` does not load,
//! so nothing is ever fetched.
//!
//! A violation names where the request failed as a JSON pointer into the
//! request (`/query/limit`, `/path/id`, `/header/x-tenant`, `/body/items/0/price`)
//! and the rule it broke (`type`, `minimum`, `required`, `unknown_parameter`,
//! ...): never a value.

mod params;
mod schema;

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

pub use params::decode_component;

/// Largest document accepted (bytes).
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

/// Why a document does not load.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct LoadError(pub String);

fn err(msg: impl Into<String>) -> LoadError {
    LoadError(msg.into())
}

/// Which OpenAPI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V30,
    V31,
}

/// Why a request was refused: where (a JSON pointer into the request) and
/// which rule. Displayed as `<pointer>: <rule>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub pointer: String,
    pub rule: String,
}

impl Violation {
    fn new(pointer: impl Into<String>, rule: impl Into<String>) -> Violation {
        let mut pointer = pointer.into();
        if pointer.len() > 256 {
            let mut end = 256;
            while !pointer.is_char_boundary(end) {
                end -= 1;
            }
            pointer.truncate(end);
            pointer.push('…');
        }
        Violation {
            pointer,
            rule: rule.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pointer, self.rule)
    }
}

/// The request parts validation reads.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path the service receives, already normalised and percent-decoded.
    pub path: &'a str,
    /// The raw query string (without `?`).
    pub query: Option<&'a str>,
    /// Header names in lowercase, with their values.
    pub headers: &'a [(&'a str, &'a str)],
    /// `Content-Type`, as sent.
    pub content_type: Option<&'a str>,
    /// The body (empty: none).
    pub body: &'a [u8],
}

/// A loaded document: every operation with its parameters and body
/// schemas compiled.
pub struct Spec {
    pub version: Version,
    /// Base paths from `servers` (`/` when none has one).
    bases: Vec<String>,
    paths: Vec<PathItem>,
}

impl fmt::Debug for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spec")
            .field("version", &self.version)
            .field("paths", &self.paths.len())
            .finish_non_exhaustive()
    }
}

/// One piece of a path template's segment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Param(String),
}

struct PathItem {
    template: String,
    segments: Vec<Vec<Piece>>,
    /// Literal segments, then literal characters: `/users/me` before
    /// `/users/{id}`.
    literal_count: (usize, usize),
    ops: BTreeMap<String, Operation>,
}

struct Operation {
    params: Vec<params::Param>,
    body: Option<Body>,
}

struct Body {
    required: bool,
    /// Media type range (lowercase) → schema (none: any content).
    content: Vec<(String, Option<schema::Compiled>)>,
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

impl Spec {
    /// Load a document from JSON or YAML text.
    pub fn parse(text: &str) -> Result<Spec, LoadError> {
        if text.len() > MAX_DOCUMENT_BYTES {
            return Err(err("the document is over 16 MiB"));
        }
        let doc: Value = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| err(format!("not JSON: {e}")))?
        } else {
            // YAML merge keys (`<<: *base`) applied as YAML tools apply them:
            // left in, `<<` would be an unknown keyword and its schema lost
            let mut yaml: serde_norway::Value =
                serde_norway::from_str(text).map_err(|e| err(format!("not YAML: {e}")))?;
            yaml.apply_merge()
                .map_err(|e| err(format!("YAML merge keys: {e}")))?;
            serde_json::to_value(yaml)
                .map_err(|e| err(format!("not a JSON-compatible document: {e}")))?
        };
        Spec::from_value(doc)
    }

    pub fn from_value(mut doc: Value) -> Result<Spec, LoadError> {
        let version = match doc.get("openapi").and_then(Value::as_str) {
            Some(v) if v.starts_with("3.0.") => Version::V30,
            Some(v) if v.starts_with("3.1.") => Version::V31,
            Some(v) => return Err(err(format!("openapi: {v:?} is not 3.0.x or 3.1.x"))),
            None => return Err(err("openapi: missing (not an OpenAPI 3 document)")),
        };
        schema::check_refs(&doc, "")?;
        if version == Version::V30 {
            schema::rewrite_30(&mut doc);
        } else {
            schema::rewrite_31(&mut doc);
        }
        let components = doc.get("components").cloned().unwrap_or(Value::Null);
        let ctx = schema::Ctx::new(&doc, &components);
        // every reference leads somewhere within a few hops: a pure cycle
        // (A → B → A) would accept anything
        check_ref_chains(&ctx, &doc, "")?;
        let bases = bases(&doc)?;
        let mut paths = Vec::new();
        let Some(map) = doc.get("paths").and_then(Value::as_object) else {
            return Err(err("paths: missing"));
        };
        for (template, item) in map {
            let where_ = format!("paths[{template}]");
            let item = ctx.deref(item, &where_)?;
            let segments = parse_template(template).map_err(|e| err(format!("{where_}: {e}")))?;
            let common = item.get("parameters");
            let mut ops = BTreeMap::new();
            for m in METHODS {
                let Some(op) = item.get(m) else {
                    continue;
                };
                let where_ = format!("{where_}.{m}");
                let params = params::collect(&ctx, common, op.get("parameters"), &where_)?;
                for name in segments.iter().flatten().filter_map(|p| match p {
                    Piece::Param(n) => Some(n),
                    Piece::Lit(_) => None,
                }) {
                    if !params
                        .iter()
                        .any(|p| p.location == params::In::Path && &p.name == name)
                    {
                        return Err(err(format!(
                            "{where_}: path parameter {name:?} is not declared"
                        )));
                    }
                }
                let body = match op.get("requestBody") {
                    None => None,
                    Some(b) => Some(request_body(&ctx, b, &format!("{where_}.requestBody"))?),
                };
                ops.insert(m.to_ascii_uppercase(), Operation { params, body });
            }
            // the most literal template first: whole literal segments, then
            // literal characters (`/files/{name}.json` before `/files/{id}`)
            let literal_count = (
                segments
                    .iter()
                    .filter(|s| matches!(s.as_slice(), [Piece::Lit(_)]))
                    .count(),
                segments
                    .iter()
                    .flatten()
                    .map(|p| match p {
                        Piece::Lit(l) => l.len(),
                        Piece::Param(_) => 0,
                    })
                    .sum::<usize>(),
            );
            paths.push(PathItem {
                template: template.clone(),
                segments,
                literal_count,
                ops,
            });
        }
        // the most literal template first; then by name, for a stable order
        paths.sort_by(|a, b| {
            b.literal_count
                .cmp(&a.literal_count)
                .then(a.template.cmp(&b.template))
        });
        ctx.finish()?;
        Ok(Spec {
            version,
            bases,
            paths,
        })
    }

    /// Check a request; the first violation found.
    pub fn validate(&self, req: &Request<'_>) -> Result<(), Violation> {
        // the longest base first; the most literal template first. Literal
        // parts are compared ignoring ASCII case, then must match exactly:
        // Express routes case-insensitively, so `/items/EXPORT` would reach
        // the handler of `/items/export` while a case-sensitive match took
        // it for `/items/{id}`
        let mut matched = None;
        'bases: for base in &self.bases {
            let Some(rel) = strip_base(req.path, base) else {
                continue;
            };
            for item in &self.paths {
                if let Some(captures) = match_template(&item.segments, rel, true) {
                    if match_template(&item.segments, rel, false).is_none() {
                        return Err(Violation::new("/path", "path_case_mismatch"));
                    }
                    matched = Some((item, captures));
                    break 'bases;
                }
            }
        }
        let Some((item, captures)) = matched else {
            return Err(Violation::new("/path", "no_matching_path"));
        };
        let method = req.method.to_ascii_uppercase();
        let op = match item.ops.get(&method) {
            Some(op) => op,
            // HEAD is served wherever GET is
            None if method == "HEAD" && item.ops.contains_key("GET") => &item.ops["GET"],
            None => return Err(Violation::new("/method", "method_not_allowed")),
        };
        params::check(&op.params, &captures, req)?;
        self.check_body(op, req)
    }

    fn check_body(&self, op: &Operation, req: &Request<'_>) -> Result<(), Violation> {
        let Some(body) = &op.body else {
            if req.body.is_empty() {
                return Ok(());
            }
            return Err(Violation::new("/body", "body_not_allowed"));
        };
        if req.body.is_empty() {
            if body.required {
                return Err(Violation::new("/body", "required"));
            }
            return Ok(());
        }
        let Some(media) = req.content_type.and_then(media_type) else {
            return Err(Violation::new("/header/content-type", "required"));
        };
        let Some((range, compiled)) = pick_media(&body.content, &media) else {
            return Err(Violation::new(
                "/header/content-type",
                "media_type_not_allowed",
            ));
        };
        let Some(compiled) = compiled else {
            // declared without a schema: any content of that type
            return Ok(());
        };
        let value = if is_json(&media) {
            let v = serde_json::from_slice::<Value>(req.body)
                .map_err(|_| Violation::new("/body", "malformed_json"))?;
            // JavaScript reads integers past 2^53 as other numbers than the
            // ones checked here
            unsafe_integer(&v, "/body")?;
            v
        } else if media == "application/x-www-form-urlencoded" {
            let text = std::str::from_utf8(req.body)
                .map_err(|_| Violation::new("/body", "malformed_encoding"))?;
            params::form_object(text, compiled)?
        } else {
            // a schema for a type this validator does not parse (multipart,
            // XML, text): the body goes on unchecked, as documented
            let _ = range;
            return Ok(());
        };
        compiled.check(&value, "/body")
    }
}

/// `type/subtype` in lowercase, without parameters.
fn media_type(ct: &str) -> Option<String> {
    let t = ct.split(';').next()?.trim().to_ascii_lowercase();
    let (a, b) = t.split_once('/')?;
    (!a.is_empty() && !b.is_empty()).then_some(t)
}

fn is_json(media: &str) -> bool {
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

/// The most specific declared range that covers `media`.
fn pick_media<'b>(
    content: &'b [(String, Option<schema::Compiled>)],
    media: &str,
) -> Option<(&'b str, Option<&'b schema::Compiled>)> {
    let major = media.split('/').next().unwrap_or("");
    let wild = format!("{major}/*");
    for want in [media, wild.as_str(), "*/*"] {
        if let Some((r, c)) = content.iter().find(|(r, _)| r == want) {
            return Some((r.as_str(), c.as_ref()));
        }
    }
    None
}

fn request_body(ctx: &schema::Ctx<'_>, b: &Value, where_: &str) -> Result<Body, LoadError> {
    let b = ctx.deref(b, where_)?;
    let required = b.get("required").and_then(Value::as_bool).unwrap_or(false);
    let Some(content) = b.get("content").and_then(Value::as_object) else {
        return Err(err(format!("{where_}: content missing")));
    };
    let mut out = Vec::new();
    for (range, media) in content {
        let range_l = media_type(range)
            .or_else(|| (range == "*/*").then(|| range.clone()))
            .ok_or_else(|| err(format!("{where_}.content[{range}]: not a media type")))?;
        let schema = match media.get("schema") {
            Some(s) => Some(ctx.compile(s, &format!("{where_}.content[{range}].schema"))?),
            None => None,
        };
        out.push((range_l, schema));
    }
    Ok(Body {
        required,
        content: out,
    })
}

/// The base paths requests are matched under: each server URL's path
/// (`https://api.example/v1` → `/v1`, `/v2` → `/v2`); `/` without servers.
fn bases(doc: &Value) -> Result<Vec<String>, LoadError> {
    let mut out = Vec::new();
    if let Some(servers) = doc.get("servers").and_then(Value::as_array) {
        for s in servers {
            let Some(url) = s.get("url").and_then(Value::as_str) else {
                continue;
            };
            if url.contains('{') {
                return Err(err(format!(
                    "servers: {url:?}: server variables are not supported"
                )));
            }
            let path = match url.split_once("://") {
                Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
                None => url,
            };
            let path = path.trim_end_matches('/');
            out.push(if path.is_empty() {
                "/".to_string()
            } else {
                path.to_string()
            });
        }
    }
    if out.is_empty() {
        out.push("/".into());
    }
    out.sort();
    out.dedup();
    // the longest base first: `/v1` before `/`
    out.sort_by_key(|b| std::cmp::Reverse(b.len()));
    Ok(out)
}

/// An integer JavaScript cannot hold exactly (beyond ±(2^53 − 1)).
pub(crate) fn unsafe_integer(v: &Value, at: &str) -> Result<(), Violation> {
    const MAX_SAFE: u64 = (1 << 53) - 1;
    match v {
        Value::Number(n) => {
            let big = n.as_u64().is_some_and(|u| u > MAX_SAFE)
                || n.as_i64().is_some_and(|i| i.unsigned_abs() > MAX_SAFE);
            if big {
                return Err(Violation::new(at, "unsafe_integer"));
            }
            Ok(())
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                unsafe_integer(x, &format!("{at}/{i}"))?;
            }
            Ok(())
        }
        Value::Object(m) => {
            for (k, x) in m {
                unsafe_integer(
                    x,
                    &format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                )?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Every object with a `$ref` leads to something within a few hops.
fn check_ref_chains(ctx: &schema::Ctx<'_>, v: &Value, at: &str) -> Result<(), LoadError> {
    match v {
        Value::Object(m) => {
            if m.contains_key("$ref") {
                ctx.deref(v, at)?;
            }
            for (k, c) in m {
                check_ref_chains(ctx, c, &format!("{at}/{k}"))?;
            }
            Ok(())
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                check_ref_chains(ctx, c, &format!("{at}/{i}"))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn strip_base<'p>(path: &'p str, base: &str) -> Option<&'p str> {
    if base == "/" {
        return Some(path);
    }
    let rest = path.strip_prefix(base)?;
    if rest.is_empty() {
        Some("/")
    } else if rest.starts_with('/') {
        Some(rest)
    } else {
        None
    }
}

fn parse_template(t: &str) -> Result<Vec<Vec<Piece>>, String> {
    if !t.starts_with('/') {
        return Err("a path must start with /".into());
    }
    let mut segs = Vec::new();
    for seg in t[1..].split('/') {
        let mut pieces = Vec::new();
        let mut rest = seg;
        while !rest.is_empty() {
            match rest.find('{') {
                Some(0) => {
                    let end = rest.find('}').ok_or("an unclosed {")?;
                    let name = &rest[1..end];
                    if name.is_empty() || name.contains('{') {
                        return Err("an empty or nested parameter name".into());
                    }
                    if matches!(pieces.last(), Some(Piece::Param(_))) {
                        return Err("two parameters with nothing between them".into());
                    }
                    pieces.push(Piece::Param(name.to_string()));
                    rest = &rest[end + 1..];
                }
                Some(i) => {
                    pieces.push(Piece::Lit(rest[..i].to_string()));
                    rest = &rest[i..];
                }
                None => {
                    if rest.contains('}') {
                        return Err("a } without {".into());
                    }
                    pieces.push(Piece::Lit(rest.to_string()));
                    rest = "";
                }
            }
        }
        if pieces.is_empty() {
            pieces.push(Piece::Lit(String::new()));
        }
        segs.push(pieces);
    }
    Ok(segs)
}

/// Match a path against a template: the captured parameters, or `None`.
/// A parameter takes one non-empty piece of one segment (never a `/`).
fn match_template(
    segs: &[Vec<Piece>],
    path: &str,
    fold_case: bool,
) -> Option<Vec<(String, String)>> {
    let strip = |s: &'_ str, lit: &str| -> Option<usize> {
        let head = s.get(..lit.len())?;
        let same = if fold_case {
            head.eq_ignore_ascii_case(lit)
        } else {
            head == lit
        };
        same.then_some(lit.len())
    };
    let parts: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    if parts.len() != segs.len() {
        return None;
    }
    let mut caps = Vec::new();
    for (pieces, part) in segs.iter().zip(parts) {
        let mut rest = part;
        for (i, p) in pieces.iter().enumerate() {
            match p {
                Piece::Lit(l) => rest = &rest[strip(rest, l)?..],
                Piece::Param(name) => {
                    // up to the next literal (its last occurrence when it ends
                    // the segment), else the rest of the segment
                    let value = match pieces.get(i + 1) {
                        Some(Piece::Lit(next)) if i + 2 == pieces.len() => {
                            let cut = rest.len().checked_sub(next.len())?;
                            let tail = rest.get(cut..)?;
                            let same = if fold_case {
                                tail.eq_ignore_ascii_case(next)
                            } else {
                                tail == next
                            };
                            if !same {
                                return None;
                            }
                            &rest[..cut]
                        }
                        Some(Piece::Lit(next)) => {
                            let at = if fold_case {
                                rest.to_ascii_lowercase().find(&next.to_ascii_lowercase())?
                            } else {
                                rest.find(next.as_str())?
                            };
                            &rest[..at]
                        }
                        _ => rest,
                    };
                    if value.is_empty() {
                        return None;
                    }
                    caps.push((name.clone(), value.to_string()));
                    rest = &rest[value.len()..];
                }
            }
        }
        if !rest.is_empty() {
            return None;
        }
    }
    Some(caps)
}

#[cfg(test)]
mod tests;
