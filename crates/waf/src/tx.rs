//! Evaluating a [`RuleSet`] on one request: a [`Transaction`].
//!
//! The request is read once into the variables the rules name; each phase
//! runs its rules in load order, with ModSecurity's semantics for chains
//! (every link must match; later links see `MATCHED_VAR(S)` of earlier
//! ones), `skipAfter` markers, `ctl` (per transaction), `setvar`, `capture`
//! (`TX:0`–`TX:9`), `multiMatch`, exclusions (`!ARGS:x`, `ruleRemove*`) and
//! disruptive actions (`block` is the phase's `SecDefaultAction`, `pass` in
//! CRS's anomaly-scoring mode). A link's non-disruptive actions (`setvar`,
//! `ctl`) run for each value it matches, when it matches, as ModSecurity's;
//! the log record and the disruptive action need the whole chain.
//!
//! Body processors: `URLENCODED` (by content type, or `ctl`), `JSON` (by
//! `ctl:requestBodyProcessor=JSON`; arguments named `json.a.b`, array items
//! `json.list.0`), `XML` (by `ctl`; quick-xml, no DTDs: `XML:/*` and
//! `XML://@*`), `MULTIPART` (by content type; multer, strict: a malformed
//! body sets `REQBODY_ERROR` and `MULTIPART_STRICT_ERROR`, so a rule such as
//! 200002 refuses it: fail closed).

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use crate::EngineMode;
use crate::action::{Ctl, Disruptive, Macro, Part, SetOp};
use crate::byteset::ByteSet;
use crate::operator::{Num, Op, Operator};
use crate::ruleset::{Entry, Link, Rule, RuleSet};
use crate::variable::{Selector, Target, Variable};

/// A request as the engine sees it (what arrived, nothing normalised).
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub method: String,
    /// The request target as sent (`/a/b?x=1`, or absolute-form).
    pub uri: String,
    /// `HTTP/1.1`.
    pub protocol: String,
    /// Header lines in arrival order.
    pub headers: Vec<(String, Vec<u8>)>,
    pub remote_addr: String,
    pub body: Vec<u8>,
    /// The request id (`UNIQUE_ID`).
    pub id: String,
}

/// An upstream response as the engine sees it (phases 3 and 4).
#[derive(Clone, Debug, Default)]
pub struct Response {
    pub status: u16,
    /// Header lines in arrival order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, or `None` when it is not inspected (`RESPONSE_BODY` is
    /// then empty, as with ModSecurity's `SecResponseBodyAccess Off` or a
    /// MIME type outside `SecResponseBodyMimeType`).
    pub body: Option<Vec<u8>>,
}

/// What the request phases leave for the response phases when they run in
/// another transaction (the gateway evaluates them on other threads): TX,
/// and what `ctl` removed. Owned and `Send`.
#[derive(Clone, Debug, Default)]
pub struct Carry {
    pub mode: Option<EngineMode>,
    pub allowed: bool,
    tx: Vec<(String, Vec<u8>)>,
    removed_ids: Vec<(u32, u32)>,
    removed_tags: Vec<String>,
    removed_targets: Vec<(RuleRef, Target)>,
}

/// One logged rule match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleMatch {
    pub id: u32,
    pub phase: u8,
    pub msg: String,
    pub data: String,
    pub severity: Option<u8>,
    pub tags: Vec<String>,
    /// `msg` with only the macros that expand to a number (a score)
    /// expanded, the others left as written (`%{MATCHED_VAR_NAME}`): CRS
    /// puts request data in some messages (921180 names the argument),
    /// which a log that leaves the host must not carry.
    pub msg_safe: String,
    /// The variable that matched last (`ARGS:q`).
    pub variable: String,
    /// What matched last, masked for a log that leaves the host: see
    /// [`masked_excerpt`].
    pub excerpt: String,
}

/// The longest excerpt of matched data a log gets, in bytes of the value.
pub const EXCERPT_BYTES: usize = 32;

/// Matched data as a SIEM may see it: its first [`EXCERPT_BYTES`] bytes
/// with every letter and digit (and every byte outside ASCII) as `*`, so
/// the shape of an attack shows (`*' ** '*'='*`) and no word or number of
/// the request does (a password, a token, a name); control bytes as `.`,
/// `"` and `\` as `'` and `/` (the excerpt sits in quotes in a log line);
/// `…` when cut.
pub fn masked_excerpt(v: &[u8]) -> String {
    let mut out: String = v
        .iter()
        .take(EXCERPT_BYTES)
        .map(|&b| match b {
            b if b.is_ascii_alphanumeric() || b >= 0x80 => '*',
            b'"' => '\'',
            b'\\' => '/',
            b if b.is_ascii_graphic() || b == b' ' => b as char,
            _ => '.',
        })
        .collect();
    if v.len() > EXCERPT_BYTES {
        out.push('…');
    }
    out
}

/// Why processing stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interruption {
    pub rule_id: u32,
    pub status: u16,
    pub action: Disruptive,
}

/// A value and its memo digest (None: too long to keep).
type Digested = (Bytes, Option<crate::memo::Digest>);

/// The caches' hasher: their keys are addresses, small numbers and keyed
/// digests the engine makes, never request data an attacker chooses, so a
/// fast multiply-rotate hash (rustc's Fx) is safe here.
#[derive(Default, Clone, Copy)]
pub(crate) struct BuildFx;

#[derive(Default)]
pub(crate) struct Fx(u64);

impl std::hash::BuildHasher for BuildFx {
    type Hasher = Fx;
    fn build_hasher(&self) -> Fx {
        Fx(0)
    }
}

impl std::hash::Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.add(u64::from(b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl Fx {
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// A value, shared: collecting a rule's targets copies pointers, not bytes.
type Bytes = Rc<[u8]>;

/// One (key, value) of a collection.
type Pair = (Rc<str>, Bytes);
/// TX, IP and GLOBAL: lowercase keys, shared with the items that name them.
type Keyed = BTreeMap<Rc<str>, Bytes>;
/// A matched variable's name by (variable, key's address and length, count).
type NameKey = (Variable, usize, usize, bool);
/// At most this many matched variables' names (and values' byte sets) are
/// kept per transaction.
const MAX_NAMES: usize = 1024;
/// Values up to this length have their byte set made when asked, not
/// kept.
const SHORT_VALUE: usize = 32;
/// The keys `capture` sets: TX:0 to TX:9.
const CAPTURE_KEYS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// A collection: (key, value) in arrival order.
type Coll = Vec<Pair>;

fn bytes(b: &[u8]) -> Bytes {
    Rc::from(b)
}

/// One value a link inspects: its variable, key ("" for a scalar) and bytes.
struct Item {
    var: Variable,
    key: Rc<str>,
    value: Bytes,
    count: bool,
}

impl Item {
    /// Whether the memo may answer for this value: a kind clients repeat,
    /// not a count.
    fn memo_eligible(&self) -> bool {
        !self.count && self.var.repeated_by_clients()
    }

    /// A credential's value (a cookie's, or a header's whose name says so):
    /// the memo keeps it under its name.
    fn credential(&self) -> bool {
        self.var == Variable::RequestCookies
            || (self.var == Variable::RequestHeaders && crate::memo::credential_header(&self.key))
    }

    /// `ARGS:q`, `REQUEST_URI`, `&ARGS` (MATCHED_VAR_NAME).
    fn name(&self) -> Rc<str> {
        let v = self.var.name();
        if self.count {
            Rc::from(format!("&{v}"))
        } else if self.var.is_collection() {
            Rc::from(format!("{v}:{}", self.key))
        } else {
            Rc::from(v)
        }
    }
}

/// One request's evaluation.
pub struct Transaction<'s> {
    set: &'s RuleSet,
    pub mode: EngineMode,
    req: Request,
    empty: Rc<str>,
    method: Bytes,
    uri_raw: Bytes,
    uri_decoded: Bytes,
    filename: Bytes,
    basename: Bytes,
    query: Bytes,
    protocol: Bytes,
    remote_addr: Bytes,
    unique_id: Bytes,
    request_line: Bytes,
    body: Bytes,
    body_length: Bytes,
    headers: Coll,
    args_get: Coll,
    args_post: Coll,
    cookies: Coll,
    /// The `*_NAMES` variables, made once (many rules read them).
    header_names: Coll,
    args_get_names: Coll,
    args_post_names: Coll,
    cookie_names: Coll,
    body_processor: Option<String>,
    body_done: bool,
    force_body_variable: bool,
    reqbody_error: Option<String>,
    /// `XML:/*` (the root element's text) and `XML://@*` values.
    xml: Coll,
    /// A multipart body's file parts: (field name, file name, size).
    files: Vec<(String, String, usize)>,
    /// `MULTIPART_PART_HEADERS`: (field name, `name: value` header line).
    part_headers: Coll,
    multipart_error: bool,
    response_status: Option<Bytes>,
    response_headers: Coll,
    response_header_names: Coll,
    response_body: Option<Bytes>,
    tx: Keyed,
    ip: Keyed,
    global: Keyed,
    removed_ids: Vec<(u32, u32)>,
    removed_tags: Vec<String>,
    removed_targets: Vec<(RuleRef, Target)>,
    matched_var: Option<(Rc<str>, Bytes)>,
    matched_vars: Coll,
    /// The values a link inspects, a buffer reused by every link.
    items: Vec<Item>,
    empty_value: Bytes,
    /// Transformed values by (value's address, length, transformation
    /// chain): CRS applies the same chains to the same values in many
    /// rules. The source value is kept with its result, so its address is
    /// never reused while the entry exists.
    tcache: HashMap<(usize, usize, u32), (Bytes, Bytes), BuildFx>,
    /// The memo's digest of a value by (address, length), the value kept
    /// alongside as in `tcache`: a header is hashed once per transaction,
    /// not once per rule that reads it.
    vhash: HashMap<(usize, usize), Digested, BuildFx>,
    /// The bytes a value holds, by (address, length), the value kept
    /// alongside as in `tcache`: asked by every `@rx` with a needed set
    /// ([`crate::byteset`]), made once per value.
    bsets: HashMap<(usize, usize), (Bytes, ByteSet), BuildFx>,
    /// Matched variables' names (`TX:blocking_paranoia_level`) by
    /// (variable, key's address and length, count), the key kept alongside
    /// as in `tcache`: CRS's rules match the same TX variables over and
    /// over, and each match names its variable.
    names: HashMap<NameKey, (Rc<str>, Rc<str>), BuildFx>,
    /// Entries this transaction added to the memo (bounded).
    memo_new: u32,
    /// The rules that matched and log, in order.
    pub matches: Vec<RuleMatch>,
    pub interruption: Option<Interruption>,
    allowed: bool,
}

#[derive(Clone, Debug)]
pub(crate) enum RuleRef {
    Id(u32),
    Tag(String),
}

/// `application/x-www-form-urlencoded` → pairs, names and values decoded
/// (`%XX`, `+`), as ModSecurity's parser: `&` separates, the first `=`
/// splits, a pair without `=` is a name with an empty value.
pub fn parse_urlencoded(s: &[u8]) -> Vec<(String, Vec<u8>)> {
    s.split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = match p.iter().position(|&b| b == b'=') {
                Some(i) => (&p[..i], &p[i + 1..]),
                None => (p, &p[p.len()..]),
            };
            let n = crate::transform::Transform::UrlDecode.apply(n);
            let v = crate::transform::Transform::UrlDecode.apply(v);
            (String::from_utf8_lossy(&n).into_owned(), v)
        })
        .collect()
}

fn to_coll(v: Vec<(String, Vec<u8>)>) -> Coll {
    v.into_iter()
        .map(|(k, v)| (Rc::from(k.as_str()), Rc::from(v)))
        .collect()
}

/// The most arguments a body gives (ModSecurity's `SecArgumentsLimit`).
pub const MAX_ARGUMENTS: usize = 10_000;

/// Flatten a JSON body into arguments within `budget` bytes of names and
/// values: a path is repeated in every name under it, so a long key over a
/// long array would otherwise make megabytes of names from kilobytes of
/// body (and every rule would transform them all). Read as it is parsed,
/// in document order, so a key given twice yields both values, as
/// ModSecurity's parser does (a parsed map keeps only the last, and the
/// first could hide an attack from every rule).
fn flatten_json(body: &[u8], budget: usize) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let mut budget = budget;
    let mut over = false;
    let mut de = serde_json::Deserializer::from_slice(body);
    let seed = Flatten {
        prefix: "json".to_string(),
        out: &mut out,
        budget: &mut budget,
        over: &mut over,
    };
    let parsed = serde::de::DeserializeSeed::deserialize(seed, &mut de).and_then(|()| de.end());
    match parsed {
        Ok(()) => Ok(out),
        Err(_) if over => Err(format!(
            "JSON body gives more than {MAX_ARGUMENTS} arguments or more than 8 times its size in argument names and values"
        )),
        Err(e) => Err(format!("JSON parsing error: {e}")),
    }
}

/// One JSON value under `prefix`, its arguments pushed as they are read.
struct Flatten<'a> {
    prefix: String,
    out: &'a mut Vec<(String, Vec<u8>)>,
    budget: &'a mut usize,
    over: &'a mut bool,
}

impl Flatten<'_> {
    fn push<E: serde::de::Error>(self, value: Vec<u8>) -> Result<(), E> {
        let cost = self.prefix.len() + value.len();
        if self.out.len() >= MAX_ARGUMENTS || cost > *self.budget {
            *self.over = true;
            return Err(E::custom("over the argument budget"));
        }
        *self.budget -= cost;
        self.out.push((self.prefix, value));
        Ok(())
    }

    fn child(&mut self, name: &str) -> Flatten<'_> {
        Flatten {
            prefix: format!("{}.{name}", self.prefix),
            out: self.out,
            budget: self.budget,
            over: self.over,
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Flatten<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.push(v.to_string().into_bytes())
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.push(v.to_string().into_bytes())
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.push(v.to_string().into_bytes())
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        // as serde_json writes the number back
        let text = serde_json::Number::from_f64(v).map_or_else(|| v.to_string(), |n| n.to_string());
        self.push(text.into_bytes())
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.push(v.as_bytes().to_vec())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.push(Vec::new())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0usize;
        while seq
            .next_element_seed(self.child(itoa::Buffer::new().format(i)))?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            map.next_value_seed(self.child(&k))?;
        }
        Ok(())
    }
}

/// An XML body's values as ModSecurity's XPath targets see them: `/*`, the
/// text of the root element (every text and CDATA node, in order), and
/// `//@*`, each attribute value. Well-formedness is checked (one root,
/// matching end tags, known entities); no DTD is processed and no entity
/// beyond the five predefined ones is expanded.
fn parse_xml(body: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(body);
    reader.config_mut().trim_text(false);
    let mut buf = Vec::new();
    let mut text = Vec::new();
    let mut attrs: Vec<(String, Vec<u8>)> = Vec::new();
    let (mut depth, mut roots) = (0usize, 0usize);
    // UTF-8: the crate is built without its `encoding` feature
    let decoder = reader.decoder();
    let mut attributes = |e: &quick_xml::events::BytesStart<'_>| -> Result<(), String> {
        for a in e.attributes() {
            let a = a.map_err(|e| e.to_string())?;
            let v = a
                .decoded_and_normalized_value(quick_xml::XmlVersion::Implicit1_0, decoder)
                .map_err(|e| e.to_string())?;
            attrs.push(("//@*".into(), v.as_bytes().to_vec()));
        }
        Ok(())
    };
    loop {
        match reader
            .read_event_into(&mut buf)
            .map_err(|e| e.to_string())?
        {
            Event::Start(e) => {
                if depth == 0 {
                    roots += 1;
                }
                depth += 1;
                attributes(&e)?;
            }
            Event::Empty(e) => {
                if depth == 0 {
                    roots += 1;
                }
                attributes(&e)?;
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Text(t) => {
                let t = t.decode().map_err(|e| e.to_string())?;
                if depth > 0 {
                    text.extend_from_slice(t.as_bytes());
                } else if !t.trim().is_empty() {
                    return Err("text outside the root element".into());
                }
            }
            Event::GeneralRef(r) => {
                // a character reference, or one of the five predefined
                // entities; any other entity is an error (no DTD is read)
                let ch = match r.resolve_char_ref().map_err(|e| e.to_string())? {
                    Some(c) => c.to_string(),
                    None => {
                        let name = r.decode().map_err(|e| e.to_string())?;
                        quick_xml::escape::unescape(&format!("&{name};"))
                            .map_err(|e| e.to_string())?
                            .into_owned()
                    }
                };
                if depth == 0 {
                    return Err("a reference outside the root element".into());
                }
                text.extend_from_slice(ch.as_bytes());
            }
            Event::CData(c) if depth > 0 => text.extend_from_slice(&c),
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if depth != 0 {
        return Err("unclosed element at the end of the body".into());
    }
    if roots != 1 {
        return Err("an XML document has exactly one root element".into());
    }
    let mut out = vec![("/*".to_string(), text)];
    out.extend(attrs);
    Ok(out)
}

struct Multipart {
    args: Vec<(String, Vec<u8>)>,
    files: Vec<(String, String, usize)>,
    headers: Vec<(String, Vec<u8>)>,
}

/// A `multipart/form-data` body through multer (the parser axum uses),
/// strict: a malformed body is an error, never half-read. Fields without a
/// file name are arguments; file parts give `FILES` (field → file name),
/// `FILES_NAMES` and their sizes; every part's header lines are
/// `MULTIPART_PART_HEADERS` (keyed by field name).
fn parse_multipart(content_type: &str, body: &[u8]) -> Result<Multipart, String> {
    let boundary = multer::parse_boundary(content_type).map_err(|e| e.to_string())?;
    let data = bytes::Bytes::copy_from_slice(body);
    let stream = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(data) });
    let mut mp = multer::Multipart::new(stream, boundary);
    // the whole body is in memory: nothing here ever waits
    futures_executor::block_on(async move {
        let mut out = Multipart {
            args: Vec::new(),
            files: Vec::new(),
            headers: Vec::new(),
        };
        while let Some(field) = mp.next_field().await.map_err(|e| e.to_string())? {
            // name and file name read here, quoted strings respected (multer
            // finds `filename` inside another parameter's quoted value, which
            // would make a field a file, and files' contents are not
            // arguments); `filename*` (RFC 5987) makes a file too
            let disposition = field
                .headers()
                .get("content-disposition")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default();
            let params = disposition_params(&disposition)?;
            let param = |n: &str| {
                params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(n))
                    .map(|(_, v)| v.clone())
            };
            let name = param("name").unwrap_or_default();
            for (h, v) in field.headers() {
                let mut line = format!("{h}: ").into_bytes();
                line.extend_from_slice(v.as_bytes());
                out.headers.push((name.clone(), line));
            }
            let file = param("filename").or_else(|| param("filename*"));
            if out.args.len() + out.files.len() >= MAX_ARGUMENTS {
                return Err(format!("more than {MAX_ARGUMENTS} parts"));
            }
            let value = field.bytes().await.map_err(|e| e.to_string())?;
            match file {
                Some(f) => out.files.push((name, f, value.len())),
                None => out.args.push((name, value.to_vec())),
            }
        }
        Ok(out)
    })
}

/// The parameters of a `Content-Disposition` value (`form-data; name="a";
/// filename="b"`): tokens or quoted strings (with `\` escapes), `;`
/// separated. A parameter that does not parse is an error.
fn disposition_params(v: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let Some((_, mut rest)) = v.split_once(';') else {
        return Ok(out);
    };
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        if rest.is_empty() {
            return Ok(out);
        }
        let (name, after) = rest
            .split_once('=')
            .ok_or_else(|| "a Content-Disposition parameter without a value".to_string())?;
        let name = name.trim().to_string();
        let after = after.trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let mut val = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    // `\"` and `\\` are escapes; any other backslash is
                    // the file name's own (`..\1.7z`, a Windows path)
                    '\\' if matches!(q[i + 1..].chars().next(), Some('"' | '\\')) => {
                        if let Some((_, e)) = chars.next() {
                            val.push(e);
                        }
                    }
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => val.push(c),
                }
            }
            let end = end.ok_or_else(|| {
                "an unterminated quoted Content-Disposition parameter".to_string()
            })?;
            (val, &q[end + 1..])
        } else {
            let end = after.find(';').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.push((name, value));
        rest = next;
    }
}

/// ModSecurity's numeric reading of a value (C's `atoi`: optional sign and
/// leading digits; anything else is 0).
fn atoi(v: &[u8]) -> i64 {
    let s = v.trim_ascii_start();
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut n: i64 = 0;
    for &d in digits.iter().take_while(|d| d.is_ascii_digit()) {
        n = n.saturating_mul(10).saturating_add(i64::from(d - b'0'));
    }
    if neg { -n } else { n }
}

fn key_matches(sel: &Selector, name: &str) -> bool {
    match sel {
        Selector::Key(k) => k.eq_ignore_ascii_case(name),
        Selector::Regex(r) => r.is_match(name),
        Selector::XPath(p) => p == name,
    }
}

/// (key, value) pairs of a variable; a scalar has one, with key "".
type Values = Vec<(Rc<str>, Bytes)>;

fn names(c: &Coll) -> Values {
    c.iter()
        .map(|(k, _)| (k.clone(), Rc::from(k.as_bytes())))
        .collect()
}

fn map(m: &Keyed) -> Values {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

impl<'s> Transaction<'s> {
    pub fn new(set: &'s RuleSet, req: Request) -> Self {
        let (path, query) = match req.uri.split_once('?') {
            Some((p, q)) => (p.to_string(), q.as_bytes().to_vec()),
            None => (req.uri.clone(), Vec::new()),
        };
        // an absolute-form target's path (`http://host/a`); a path that
        // holds `://` further on (`/get/https://x/`) is a path
        let path = match path.find("://") {
            Some(i) if !path.starts_with('/') => path[i + 3..]
                .find('/')
                .map(|j| path[i + 3 + j..].to_string())
                .unwrap_or_else(|| "/".into()),
            _ => path,
        };
        let filename = crate::transform::Transform::UrlDecode.apply(path.as_bytes());
        let basename = match filename.iter().rposition(|&b| b == b'/') {
            Some(i) => filename[i + 1..].to_vec(),
            None => filename.clone(),
        };
        let uri_decoded = crate::transform::Transform::UrlDecode.apply(req.uri.as_bytes());
        let args_get = to_coll(parse_urlencoded(&query));
        let mut cookies = Vec::new();
        for (n, v) in &req.headers {
            if n.eq_ignore_ascii_case("cookie") {
                for c in v.split(|&b| b == b';') {
                    let c = c.trim_ascii();
                    if c.is_empty() {
                        continue;
                    }
                    let (cn, cv) = match c.iter().position(|&b| b == b'=') {
                        Some(i) => (&c[..i], &c[i + 1..]),
                        None => (c, &c[c.len()..]),
                    };
                    cookies.push((Rc::from(String::from_utf8_lossy(cn).as_ref()), bytes(cv)));
                }
            }
        }
        let headers: Coll = req
            .headers
            .iter()
            .map(|(k, v)| (Rc::from(k.as_str()), bytes(v)))
            .collect();
        let header_names = names(&headers);
        let args_get_names = names(&args_get);
        let cookie_names = names(&cookies);
        Transaction {
            set,
            mode: set.engine.unwrap_or(EngineMode::On),
            empty: Rc::from(""),
            header_names,
            args_get_names,
            args_post_names: Vec::new(),
            cookie_names,
            method: bytes(req.method.as_bytes()),
            uri_raw: bytes(req.uri.as_bytes()),
            uri_decoded: Rc::from(uri_decoded),
            filename: Rc::from(filename),
            basename: Rc::from(basename),
            query: Rc::from(query),
            protocol: bytes(req.protocol.as_bytes()),
            remote_addr: bytes(req.remote_addr.as_bytes()),
            unique_id: bytes(req.id.as_bytes()),
            request_line: Rc::from(
                format!("{} {} {}", req.method, req.uri, req.protocol).into_bytes(),
            ),
            body: bytes(&req.body),
            body_length: Rc::from(req.body.len().to_string().into_bytes()),
            headers,
            req,
            args_get,
            args_post: Vec::new(),
            cookies,
            body_processor: None,
            body_done: false,
            force_body_variable: false,
            reqbody_error: None,
            xml: Vec::new(),
            files: Vec::new(),
            part_headers: Vec::new(),
            multipart_error: false,
            response_status: None,
            response_headers: Vec::new(),
            response_header_names: Vec::new(),
            response_body: None,
            tx: BTreeMap::new(),
            ip: BTreeMap::new(),
            global: BTreeMap::new(),
            removed_ids: Vec::new(),
            removed_tags: Vec::new(),
            removed_targets: Vec::new(),
            matched_var: None,
            matched_vars: Vec::new(),
            items: Vec::with_capacity(64),
            empty_value: Rc::from(&b""[..]),
            tcache: HashMap::with_capacity_and_hasher(256, BuildFx),
            vhash: HashMap::with_capacity_and_hasher(32, BuildFx),
            bsets: HashMap::default(),
            names: HashMap::with_capacity_and_hasher(32, BuildFx),
            memo_new: 0,
            matches: Vec::new(),
            interruption: None,
            allowed: false,
        }
    }

    /// Run the request phases (1, then the body, then 2); stops at an
    /// interruption in `On` mode.
    pub fn process_request(&mut self) -> Option<&Interruption> {
        self.phase(1);
        if self.interruption.is_none() {
            self.phase(2);
        }
        self.interruption.as_ref()
    }

    /// Run the response phases on `resp` (3, then 4 when it carries a
    /// body), unless the request was interrupted or allowed; then the
    /// logging phase (5), as ModSecurity always does. Stops at an
    /// interruption in `On` mode.
    pub fn process_response(&mut self, resp: Response) -> Option<&Interruption> {
        if self.interruption.is_none() {
            self.response_status = Some(Rc::from(resp.status.to_string().into_bytes()));
            self.response_headers = resp
                .headers
                .iter()
                .map(|(k, v)| (Rc::from(k.as_str()), bytes(v)))
                .collect();
            self.response_header_names = names(&self.response_headers);
            self.response_body = resp.body.map(Rc::from);
            self.phase(3);
            if self.interruption.is_none() && self.response_body.is_some() {
                self.phase(4);
            }
        }
        self.phase(5);
        self.interruption.as_ref()
    }

    /// What the response phases need of this transaction's request phases.
    pub fn carry(&self) -> Carry {
        Carry {
            mode: Some(self.mode),
            allowed: self.allowed,
            tx: self
                .tx
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
            removed_ids: self.removed_ids.clone(),
            removed_tags: self.removed_tags.clone(),
            removed_targets: self.removed_targets.clone(),
        }
    }

    /// A transaction for `req` whose request phases ran elsewhere and left
    /// `carry`: only the response phases remain to run.
    pub fn resume(set: &'s RuleSet, req: Request, carry: Carry) -> Self {
        let mut t = Transaction::new(set, req);
        if let Some(m) = carry.mode {
            t.mode = m;
        }
        t.allowed = carry.allowed;
        t.tx = carry
            .tx
            .into_iter()
            .map(|(k, v)| (Rc::from(k), Rc::from(v)))
            .collect();
        t.removed_ids = carry.removed_ids;
        t.removed_tags = carry.removed_tags;
        t.removed_targets = carry.removed_targets;
        t.body_done = true;
        t
    }

    /// The value of `TX:<key>` (tests, logs).
    pub fn tx(&self, key: &str) -> Option<&[u8]> {
        self.tx
            .get(key.to_ascii_lowercase().as_str())
            .map(|v| &v[..])
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        self.req
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    fn process_body(&mut self) {
        if self.body_done {
            return;
        }
        self.body_done = true;
        // the collections are replaced below: cached results of the old
        // values would never be asked for again
        self.tcache.clear();
        self.vhash.clear();
        self.bsets.clear();
        if self.body_processor.is_none() {
            let ct = self
                .header("content-type")
                .map(|v| String::from_utf8_lossy(v).to_ascii_lowercase())
                .unwrap_or_default();
            if ct.starts_with("application/x-www-form-urlencoded") {
                self.body_processor = Some("URLENCODED".into());
            } else if ct.starts_with("multipart/form-data") {
                self.body_processor = Some("MULTIPART".into());
            }
        }
        if self.req.body.is_empty() {
            return;
        }
        match self.body_processor.as_deref() {
            Some("URLENCODED") => self.args_post = to_coll(parse_urlencoded(&self.req.body)),
            Some("JSON") => match flatten_json(&self.req.body, 8 * self.req.body.len() + 64 * 1024)
            {
                Ok(out) => self.args_post = to_coll(out),
                Err(e) => self.reqbody_error = Some(e),
            },
            Some("XML") => match parse_xml(&self.req.body) {
                Ok(v) => self.xml = to_coll(v),
                Err(e) => self.reqbody_error = Some(format!("XML parsing error: {e}")),
            },
            Some("MULTIPART") => {
                let ct = self
                    .header("content-type")
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                match parse_multipart(&ct, &self.req.body) {
                    Ok(m) => {
                        self.args_post = to_coll(m.args);
                        self.files = m.files;
                        self.part_headers = to_coll(m.headers);
                    }
                    Err(e) => {
                        self.multipart_error = true;
                        self.reqbody_error = Some(format!("multipart parsing error: {e}"));
                    }
                }
            }
            _ => {}
        }
    }

    fn removed(&self, r: &Rule) -> bool {
        self.removed_ids
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&r.id))
            || self.removed_tags.iter().any(|t| r.has_tag(t))
    }

    /// Run one phase's rules.
    pub fn phase(&mut self, phase: u8) {
        if self.mode == EngineMode::Off || self.allowed || !(1..=5).contains(&phase) {
            return;
        }
        if phase == 2 && !self.body_done {
            self.process_body();
            self.args_post_names = names(&self.args_post);
        }
        let set = self.set;
        let mut skip_after: Option<&str> = None;
        let mut skip = 0u32;
        for e in &set.phases[usize::from(phase - 1)] {
            let r = match e {
                Entry::Marker(m) => {
                    if skip_after == Some(&**m) {
                        skip_after = None;
                    }
                    continue;
                }
                Entry::Rule(r) => r,
            };
            if skip_after.is_some() {
                continue;
            }
            if skip > 0 {
                skip -= 1;
                continue;
            }
            if self.removed(r) {
                continue;
            }
            if !self.eval_rule(r) {
                continue;
            }
            if r.actions.skip > 0 {
                skip = r.actions.skip;
            }
            if let Some(m) = &r.actions.skip_after {
                skip_after = Some(m.as_str());
            }
            let action = match r.disruptive() {
                Disruptive::Block => set.block_action(phase),
                d => d,
            };
            match action {
                Disruptive::Pass | Disruptive::Block => {}
                Disruptive::Allow => {
                    if self.mode == EngineMode::On {
                        self.allowed = true;
                        return;
                    }
                }
                Disruptive::Deny | Disruptive::Drop => {
                    if self.mode == EngineMode::On {
                        self.interruption = Some(Interruption {
                            rule_id: r.id,
                            status: r.actions.status.unwrap_or(403),
                            action,
                        });
                        return;
                    }
                }
            }
        }
    }

    /// Whether every link of `r` matches; runs its actions when so.
    fn eval_rule(&mut self, r: &Rule) -> bool {
        self.matched_vars.clear();
        let mut last_var = self.empty.clone();
        for link in &r.links {
            match self.eval_link(r, link) {
                Some(v) => last_var = v,
                None => return false,
            }
        }
        // the whole chain matched: the log record (the disruptive action is
        // the caller's)
        if r.logs() {
            let msg = r
                .actions
                .msg
                .as_ref()
                .map(|m| String::from_utf8_lossy(&self.expand(m)).into_owned())
                .unwrap_or_default();
            let msg_safe = r
                .actions
                .msg
                .as_ref()
                .map(|m| self.expand_safe(m))
                .unwrap_or_default();
            let mut data = r
                .actions
                .logdata
                .as_ref()
                .map(|m| String::from_utf8_lossy(&self.expand(m)).into_owned())
                .unwrap_or_default();
            if data.len() > 512 {
                let mut cut = 512;
                while !data.is_char_boundary(cut) {
                    cut -= 1;
                }
                data.truncate(cut);
            }
            self.matches.push(RuleMatch {
                id: r.id,
                phase: r.phase,
                msg,
                data,
                severity: r.actions.severity,
                tags: r.actions.tags.clone(),
                msg_safe,
                variable: last_var.to_string(),
                excerpt: self
                    .matched_var
                    .as_ref()
                    .map(|(_, v)| masked_excerpt(v))
                    .unwrap_or_default(),
            });
        }
        true
    }

    /// `item.name()`, made once per transaction.
    fn name_of(&mut self, item: &Item) -> Rc<str> {
        let key = (
            item.var,
            item.key.as_ptr() as usize,
            item.key.len(),
            item.count,
        );
        if let Some((_, name)) = self.names.get(&key) {
            return name.clone();
        }
        let name = item.name();
        // bounded: keys made per request (FILES, TX keys deleted and set
        // again) would otherwise add an entry per match
        if self.names.len() < MAX_NAMES {
            self.names.insert(key, (item.key.clone(), name.clone()));
        }
        name
    }

    /// The memo's digest of `value`, computed once per transaction.
    fn digest(&mut self, item: &Item) -> Option<crate::memo::Digest> {
        let value = &item.value;
        let key = (value.as_ptr() as usize, value.len());
        if let Some((_, d)) = self.vhash.get(&key) {
            return *d;
        }
        // a value object belongs to one variable and name (the collections
        // are built apart), so whether it is a credential is decided once
        let name = item.credential().then_some(&*item.key);
        let d = self.set.memo.digest(name, value);
        self.vhash.insert(key, (value.clone(), d));
        d
    }

    /// `value` through the link's transformations, from the cache when the
    /// same value went through the same chain before.
    fn transformed(&mut self, value: &Bytes, link: &Link) -> Bytes {
        if link.chain == 0 {
            return value.clone();
        }
        let key = (value.as_ptr() as usize, value.len(), link.chain);
        if let Some((_, out)) = self.tcache.get(&key) {
            return out.clone();
        }
        let mut cur = value.clone();
        for t in &link.actions.transforms {
            if let Some(next) = t.apply_if_changes(&cur) {
                cur = Rc::from(next);
            }
        }
        self.tcache.insert(key, (value.clone(), cur.clone()));
        cur
    }

    /// Evaluate one link: the name of the last variable that matched, or
    /// None when nothing did.
    fn eval_link(&mut self, r: &Rule, link: &Link) -> Option<Rc<str>> {
        // SecAction: no targets, one (empty) value for its unconditional match
        // the buffer is the transaction's, reused by every link
        let mut items = std::mem::take(&mut self.items);
        items.clear();
        if link.targets.is_empty() {
            items.push(Item {
                var: Variable::Tx,
                key: self.empty.clone(),
                value: self.empty_value.clone(),
                count: false,
            });
        } else {
            self.collect(r, &link.targets, &mut items);
        }
        let mut last = None;
        for item in items.drain(..) {
            let mut hit: Option<Bytes> = None;
            // a value clients repeat, through a link whose answer depends on
            // it alone: a known miss skips the transformations and operator
            let memo = if link.memo_id != 0 && item.memo_eligible() {
                self.digest(&item)
            } else {
                None
            };
            if let Some(d) = memo
                && self.set.memo.known_miss(link.memo_id, d)
            {
                continue;
            }
            if link.actions.multi_match {
                // the value before any transformation and after each one
                // that changes it, as ModSecurity: an unchanged value would
                // get the same answer again (the operator reads nothing a
                // miss can have changed)
                let mut cur = item.value.clone();
                if self.run_operator(&link.operator, &cur, link.actions.capture) {
                    hit = Some(cur.clone());
                }
                for t in &link.actions.transforms {
                    if hit.is_some() {
                        break;
                    }
                    let Some(next) = t.apply_if_changes(&cur) else {
                        continue;
                    };
                    cur = Rc::from(next);
                    if self.run_operator(&link.operator, &cur, link.actions.capture) {
                        hit = Some(cur.clone());
                    }
                }
            } else {
                let v = self.transformed(&item.value, link);
                if self.run_operator(&link.operator, &v, link.actions.capture) {
                    hit = Some(v);
                }
            }
            let Some(v) = hit else {
                if let Some(d) = memo
                    && self.memo_new < crate::memo::MAX_NEW_PER_TRANSACTION
                {
                    self.memo_new += 1;
                    self.set.memo.remember_miss(link.memo_id, d);
                }
                continue;
            };
            let name = self.name_of(&item);
            self.matched_var = Some((name.clone(), v.clone()));
            self.matched_vars.push((name.clone(), v));
            // ModSecurity runs a link's non-disruptive actions for each
            // value it matches, as it matches: a chain's later links see
            // what earlier ones set (CRS 931130 keys TX by the matched
            // name), and they stay set if the chain fails further on
            for sv in &link.actions.setvars {
                self.setvar(sv);
            }
            for c in &link.actions.ctls {
                self.ctl(c);
            }
            last = Some(name);
        }
        self.items = items;
        last
    }

    /// The values a link's targets name, exclusions and removed targets
    /// applied.
    fn collect(&self, r: &Rule, targets: &[Target], out: &mut Vec<Item>) {
        let applies = |rr: &RuleRef| match rr {
            RuleRef::Id(id) => *id == r.id,
            RuleRef::Tag(tag) => r.has_tag(tag),
        };
        let excluded = |t: &Target, key: &str| -> bool {
            let matches_ex = |ex: &Target| {
                ex.variable == t.variable
                    && ex.selector.as_ref().is_some_and(|s| key_matches(s, key))
            };
            targets.iter().filter(|x| x.exclude).any(matches_ex)
                || self.removed_targets.iter().any(|(rr, ex)| {
                    ex.variable == t.variable
                        && (ex.selector.is_none()
                            || ex.selector.as_ref().is_some_and(|s| key_matches(s, key)))
                        && applies(rr)
                })
        };
        for t in targets.iter().filter(|t| !t.exclude) {
            // whether any exclusion names this target's variable: decided
            // once per target, not per value (CRS 941010 removes
            // REQUEST_FILENAME from the `xss-perf-disable` rules on most
            // requests, which no other variable's values need to check)
            let may_be_excluded = targets
                .iter()
                .any(|x| x.exclude && x.variable == t.variable)
                || self
                    .removed_targets
                    .iter()
                    .any(|(rr, ex)| ex.variable == t.variable && applies(rr));
            let owned;
            let one: [Pair; 1];
            let (first, second): (&[Pair], &[Pair]) = match (&t.selector, self.keyed(t.variable)) {
                // TX:name and the like: one lookup, not the whole collection
                // (nor an allocation: the key is the map's)
                (Some(Selector::Key(k)), Some(m)) => match m.get_key_value(k.as_str()) {
                    Some((key, v)) => {
                        one = [(key.clone(), v.clone())];
                        (&one, &[])
                    }
                    None => (&[], &[]),
                },
                _ => match self.collection(t.variable) {
                    Some(pair) => pair,
                    None => {
                        owned = self.values(t.variable);
                        (&owned, &[])
                    }
                },
            };
            let mut n = 0usize;
            for (key, value) in first.iter().chain(second) {
                if let Some(sel) = &t.selector
                    && !key_matches(sel, key)
                {
                    continue;
                }
                if may_be_excluded && excluded(t, key) {
                    continue;
                }
                n += 1;
                if !t.count {
                    out.push(Item {
                        var: t.variable,
                        key: key.clone(),
                        value: value.clone(),
                        count: false,
                    });
                }
            }
            if t.count {
                out.push(Item {
                    var: t.variable,
                    key: self.empty.clone(),
                    value: Rc::from(n.to_string().into_bytes()),
                    count: true,
                });
            }
        }
    }

    /// A collection the transaction holds, borrowed (in two parts for
    /// `ARGS` and `ARGS_NAMES`: GET then POST); None for the variables
    /// [`Self::values`] makes.
    fn collection(&self, v: Variable) -> Option<(&[Pair], &[Pair])> {
        use Variable::*;
        Some(match v {
            Args => (&self.args_get, &self.args_post),
            ArgsGet => (&self.args_get, &[]),
            ArgsPost => (&self.args_post, &[]),
            ArgsNames => (&self.args_get_names, &self.args_post_names),
            ArgsGetNames => (&self.args_get_names, &[]),
            ArgsPostNames => (&self.args_post_names, &[]),
            RequestHeaders => (&self.headers, &[]),
            RequestHeadersNames => (&self.header_names, &[]),
            RequestCookies => (&self.cookies, &[]),
            RequestCookiesNames => (&self.cookie_names, &[]),
            MatchedVars => (&self.matched_vars, &[]),
            Xml => (&self.xml, &[]),
            MultipartPartHeaders => (&self.part_headers, &[]),
            ResponseHeaders => (&self.response_headers, &[]),
            ResponseHeadersNames => (&self.response_header_names, &[]),
            _ => return None,
        })
    }

    /// The map behind TX, IP and GLOBAL (keys lowercase).
    fn keyed(&self, v: Variable) -> Option<&Keyed> {
        match v {
            Variable::Tx => Some(&self.tx),
            Variable::Ip => Some(&self.ip),
            Variable::Global => Some(&self.global),
            _ => None,
        }
    }

    /// Every (key, value) of a variable; scalars have one with key "".
    fn values(&self, v: Variable) -> Values {
        use Variable::*;
        let one = |b: &Bytes| vec![(self.empty.clone(), b.clone())];
        let owned = |s: String| vec![(self.empty.clone(), Rc::from(s.into_bytes()))];
        match v {
            Args => self
                .args_get
                .iter()
                .chain(&self.args_post)
                .cloned()
                .collect(),
            ArgsGet => self.args_get.clone(),
            ArgsPost => self.args_post.clone(),
            ArgsNames => self
                .args_get_names
                .iter()
                .chain(&self.args_post_names)
                .cloned()
                .collect(),
            ArgsGetNames => self.args_get_names.clone(),
            ArgsPostNames => self.args_post_names.clone(),
            ArgsCombinedSize => owned(
                self.args_get
                    .iter()
                    .chain(&self.args_post)
                    .map(|(k, v)| k.len() + v.len())
                    .sum::<usize>()
                    .to_string(),
            ),
            RequestHeaders => self.headers.clone(),
            RequestHeadersNames => self.header_names.clone(),
            RequestCookies => self.cookies.clone(),
            RequestCookiesNames => self.cookie_names.clone(),
            RequestFilename => one(&self.filename),
            RequestBasename => one(&self.basename),
            RequestUri => one(&self.uri_decoded),
            RequestUriRaw => one(&self.uri_raw),
            RequestLine => one(&self.request_line),
            RequestMethod => one(&self.method),
            RequestProtocol => one(&self.protocol),
            QueryString => one(&self.query),
            RemoteAddr => one(&self.remote_addr),
            UniqueId => one(&self.unique_id),
            // the raw body with no processor, URLENCODED and JSON (CRS
            // 934210 reads JSON keys in it), not with XML or MULTIPART
            // unless `ctl:forceRequestBodyVariable=On` (CRS 901340 forces it
            // for other content): what the CRS regression suite expects
            RequestBody => {
                let plain = matches!(
                    self.body_processor.as_deref(),
                    None | Some("URLENCODED") | Some("JSON")
                );
                if self.body_done && (plain || self.force_body_variable) {
                    one(&self.body)
                } else {
                    Vec::new()
                }
            }
            RequestBodyLength => one(&self.body_length),
            ReqbodyProcessor => match &self.body_processor {
                Some(p) => owned(p.clone()),
                None => Vec::new(),
            },
            ReqbodyError => owned(
                if self.reqbody_error.is_some() {
                    "1"
                } else {
                    "0"
                }
                .into(),
            ),
            ReqbodyErrorMsg => match &self.reqbody_error {
                Some(m) => owned(m.clone()),
                None => Vec::new(),
            },
            MultipartStrictError => owned(if self.multipart_error { "1" } else { "0" }.into()),
            MultipartUnmatchedBoundary => owned("0".into()),
            Tx => map(&self.tx),
            Ip => map(&self.ip),
            Global => map(&self.global),
            MatchedVar => match &self.matched_var {
                Some((_, v)) => one(v),
                None => Vec::new(),
            },
            MatchedVarName => match &self.matched_var {
                Some((n, _)) => vec![(self.empty.clone(), Rc::from(n.as_bytes()))],
                None => Vec::new(),
            },
            MatchedVars => self.matched_vars.clone(),
            MatchedVarsNames => names(&self.matched_vars),
            Xml => self.xml.clone(),
            Files => self
                .files
                .iter()
                .map(|(n, f, _)| (Rc::from(n.as_str()), bytes(f.as_bytes())))
                .collect(),
            FilesNames => self
                .files
                .iter()
                .map(|(n, _, _)| (Rc::from(n.as_str()), bytes(n.as_bytes())))
                .collect(),
            FilesCombinedSize => owned(self.files.iter().map(|f| f.2).sum::<usize>().to_string()),
            MultipartPartHeaders => self.part_headers.clone(),
            ResponseStatus => match &self.response_status {
                Some(b) => one(b),
                None => Vec::new(),
            },
            ResponseBody => match &self.response_body {
                Some(b) => one(b),
                None => Vec::new(),
            },
            ResponseHeaders => self.response_headers.clone(),
            ResponseHeadersNames => self.response_header_names.clone(),
        }
    }

    /// [`Self::expand`], borrowed where the macro is one literal or one
    /// keyed variable (the common case in operators: `@within
    /// %{tx.allowed_methods}`).
    fn expand_cow<'a>(&'a self, m: &'a Macro) -> std::borrow::Cow<'a, [u8]> {
        use std::borrow::Cow;
        match m.0.as_slice() {
            [] => Cow::Borrowed(&[]),
            [Part::Text(t)] => Cow::Borrowed(t.as_bytes()),
            [Part::Var(v, Some(k))] => match self.keyed(*v) {
                Some(map) => Cow::Borrowed(map.get(k.as_str()).map_or(&[][..], |b| &b[..])),
                None => Cow::Owned(self.expand(m)),
            },
            _ => Cow::Owned(self.expand(m)),
        }
    }

    /// [`Self::expand`] for a log that leaves the host: a macro whose value
    /// is a number (at most 20 digits) is expanded, any other is left as
    /// `%{NAME}` (or `%{NAME.key}`).
    fn expand_safe(&self, m: &Macro) -> String {
        let mut out = String::new();
        for p in &m.0 {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var(v, key) => {
                    let one = Macro(vec![p.clone()]);
                    let value = self.expand(&one);
                    let numeric = !value.is_empty()
                        && value.len() <= 20
                        && value.iter().all(|b| b.is_ascii_digit() || *b == b'-');
                    if numeric {
                        out.push_str(&String::from_utf8_lossy(&value));
                    } else {
                        out.push_str("%{");
                        out.push_str(v.name());
                        if let Some(k) = key {
                            out.push('.');
                            out.push_str(k);
                        }
                        out.push('}');
                    }
                }
            }
        }
        out
    }

    fn expand(&self, m: &Macro) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        for p in &m.0 {
            match p {
                Part::Text(t) => out.extend_from_slice(t.as_bytes()),
                Part::Var(v, key) => {
                    if let (Some(k), Some(map)) = (key, self.keyed(*v)) {
                        if let Some(b) = map.get(k.as_str()) {
                            out.extend_from_slice(b);
                        }
                        continue;
                    }
                    let vals = self.values(*v);
                    let found = match key {
                        Some(k) => vals.into_iter().find(|(n, _)| n.eq_ignore_ascii_case(k)),
                        None => vals.into_iter().next(),
                    };
                    if let Some((_, b)) = found {
                        out.extend_from_slice(&b);
                    }
                }
            }
        }
        out
    }

    fn num(&self, n: &Num) -> i64 {
        match n {
            Num::Const(c) => *c,
            Num::Macro(m) => atoi(&self.expand_cow(m)),
        }
    }

    /// The bytes `v` holds, made once per value.
    fn byteset(&mut self, v: &Bytes) -> ByteSet {
        // short values: counting is cheaper than a lookup
        if v.len() <= SHORT_VALUE {
            return ByteSet::of(v);
        }
        let key = (v.as_ptr() as usize, v.len());
        if let Some((_, s)) = self.bsets.get(&key) {
            return *s;
        }
        let s = ByteSet::of(v);
        // bounded: `multiMatch` makes new values per link, never asked again
        if self.bsets.len() < MAX_NAMES {
            self.bsets.insert(key, (v.clone(), s));
        }
        s
    }

    fn run_operator(&mut self, o: &Operator, value: &Bytes, capture: bool) -> bool {
        let v: &[u8] = value;
        let hit = match &o.op {
            // a value without any byte the pattern needs cannot match
            Op::Rx(_, Some(need)) if !self.byteset(value).meets(need) => false,
            Op::Rx(re, _) => {
                // the DFA answers whether; only a match pays for captures
                if !re.is_match(v) {
                    false
                } else {
                    if capture && let Some(c) = re.captures(v) {
                        for (i, key) in CAPTURE_KEYS.iter().enumerate() {
                            match c.get(i) {
                                Some(m) => {
                                    self.tx.insert(Rc::from(*key), bytes(m.as_bytes()));
                                }
                                None => {
                                    self.tx.remove(*key);
                                }
                            }
                        }
                    }
                    true
                }
            }
            Op::Pm(ac) => match ac.find(v) {
                Some(m) => {
                    if capture {
                        self.tx.insert("0".into(), bytes(&v[m.start()..m.end()]));
                    }
                    true
                }
                None => false,
            },
            Op::Eq(n) => atoi(v) == self.num(n),
            Op::Ge(n) => atoi(v) >= self.num(n),
            Op::Gt(n) => atoi(v) > self.num(n),
            Op::Le(n) => atoi(v) <= self.num(n),
            Op::Lt(n) => atoi(v) < self.num(n),
            Op::Streq(m) => v == &*self.expand_cow(m),
            Op::BeginsWith(m) => v.starts_with(&self.expand_cow(m)),
            Op::EndsWith(m) => v.ends_with(&self.expand_cow(m)),
            Op::Contains(m) => memchr::memmem::find(v, &self.expand_cow(m)).is_some(),
            Op::Within(m) => memchr::memmem::find(&self.expand_cow(m), v).is_some(),
            Op::ValidateByteRange(allowed) => v.iter().any(|&b| !allowed[b as usize]),
            Op::ValidateUrlEncoding => {
                let mut i = 0;
                let mut bad = false;
                while i < v.len() {
                    if v[i] == b'%' {
                        if v.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                            && v.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
                        {
                            i += 3;
                            continue;
                        }
                        bad = true;
                        break;
                    }
                    i += 1;
                }
                bad
            }
            Op::ValidateUtf8Encoding => std::str::from_utf8(v).is_err(),
            Op::UnconditionalMatch => true,
            Op::IpMatch(cidrs) => std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse::<std::net::IpAddr>().ok())
                .is_some_and(|ip| cidrs.iter().any(|c| c.contains(ip))),
            Op::DetectSqli if v.is_empty() => false,
            Op::DetectXss if v.is_empty() => false,
            Op::DetectSqli => match crate::libinjection::sqli_fingerprint(v) {
                Some(fp) => {
                    if capture {
                        self.tx.insert("0".into(), Rc::from(fp.into_bytes()));
                    }
                    true
                }
                None => false,
            },
            Op::DetectXss => crate::libinjection::is_xss(v),
        };
        hit != o.negated
    }

    fn setvar(&mut self, sv: &crate::action::SetVar) {
        let key = String::from_utf8_lossy(&self.expand_cow(&sv.key)).to_ascii_lowercase();
        let value = match &sv.op {
            SetOp::Set(m) => Some(Rc::from(self.expand_cow(m))),
            SetOp::Add(m) | SetOp::Sub(m) => {
                let d = atoi(&self.expand_cow(m));
                let coll = match sv.collection {
                    Variable::Ip => &self.ip,
                    Variable::Global => &self.global,
                    _ => &self.tx,
                };
                let cur = coll.get(key.as_str()).map(|v| atoi(v)).unwrap_or(0);
                let n = if matches!(sv.op, SetOp::Add(_)) {
                    cur.saturating_add(d)
                } else {
                    cur.saturating_sub(d)
                };
                Some(Rc::from(n.to_string().into_bytes()))
            }
            SetOp::Delete => None,
        };
        let coll = match sv.collection {
            Variable::Ip => &mut self.ip,
            Variable::Global => &mut self.global,
            _ => &mut self.tx,
        };
        match value {
            // an existing key keeps its name (no new allocation for it)
            Some(v) => match coll.get_mut(key.as_str()) {
                Some(slot) => *slot = v,
                None => {
                    coll.insert(Rc::from(key), v);
                }
            },
            None => {
                coll.remove(key.as_str());
            }
        }
    }

    fn ctl(&mut self, c: &Ctl) {
        match c {
            Ctl::RuleEngine(m) => self.mode = *m,
            Ctl::RuleRemoveById(ranges) => self.removed_ids.extend(ranges.iter().copied()),
            Ctl::RuleRemoveByTag(t) => self.removed_tags.push(t.clone()),
            Ctl::RuleRemoveTargetById(id, t) => {
                self.removed_targets.push((RuleRef::Id(*id), t.clone()));
            }
            Ctl::RuleRemoveTargetByTag(tag, t) => {
                self.removed_targets
                    .push((RuleRef::Tag(tag.clone()), t.clone()));
            }
            Ctl::RequestBodyProcessor(p) => {
                if !self.body_done {
                    self.body_processor = Some(p.clone());
                }
            }
            Ctl::ForceRequestBodyVariable(on) => self.force_body_variable = *on,
            Ctl::AuditEngine(_) => {}
        }
    }
}
