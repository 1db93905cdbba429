//! palisade-inspect: the gateway's request inspection, as a pure function —
//! request parts in, findings out, no I/O. The gateway's inspection step
//! (after routing, before authentication) hands it the query string and,
//! for a route that inspects bodies, the body read up to the route's cap;
//! it decides what a finding means (`detect`: logged; `block`: refused).
//!
//! The request is parsed once into [`Args`] (every parameter of the query
//! string, a form body or a JSON body, with its name split into the
//! segments a Node.js service would see: `a[b][c]` as qs reads it, a JSON
//! member by its path), and every check reads that one parse.
//!
//! Built-in checks for what the OWASP CRS misses in Node.js services, each
//! with its own rule id ([`Rule`]):
//!
//! - **NoSQL operator injection**: a MongoDB query operator (`$ne`, `$gt`,
//!   `$where`, `$regex`, ...) as a key, in JSON bodies and in qs bracket
//!   syntax (`user[$ne]=x`), where `find({user: req.body.user})` would run
//!   it;
//! - **prototype pollution**: `__proto__` anywhere, and `constructor` with a
//!   `prototype` under it, as JSON keys or name segments (`a[__proto__][x]`,
//!   `__proto__.x`);
//! - **SSRF targets** in URL-valued parameters (values with a scheme, or
//!   parameters named like a URL or host): loopback, private, CGNAT,
//!   link-local and cloud metadata addresses in every spelling the WHATWG URL
//!   parser (the one Node's `URL` and fetch use) reads as one — decimal,
//!   octal, hex, short forms, IPv4-mapped and embedded IPv6 — plus
//!   `localhost` names and wildcard-DNS names that embed such an address
//!   (`127.0.0.1.nip.io`), and schemes only an SSRF wants (`file:`,
//!   `gopher:`, `dict:`...);
//! - **JSON bombs**: nesting deeper than [`Limits::max_depth`], more than
//!   [`Limits::max_members`] keys and elements;
//! - **duplicate JSON keys**: `JSON.parse` keeps the last, other parsers the
//!   first, so a check and a handler could read different values;
//! - **malformed input**: invalid percent-encoding or UTF-8 in names and
//!   values, a JSON body that does not parse.
//!
//! Findings never carry parameter values: the variable (a name or JSON
//! pointer, capped) and a short reason, so the security log holds nothing a
//! client sent as data.

#![forbid(unsafe_code)]

mod json;
mod keys;
mod query;
mod ssrf;

pub use ssrf::{Target, classify_url};

/// Limits on what a body may make the parser do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of JSON objects and arrays (qs's default depth is 5;
    /// Express's JSON parser has none).
    pub max_depth: usize,
    /// Most keys and array elements in one JSON body, or parameters in one
    /// query string or form body.
    pub max_members: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: 32,
            max_members: 10_000,
        }
    }
}

/// How a body is to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Form,
}

impl BodyKind {
    /// The body kind of a `Content-Type` value: JSON for `application/json`
    /// and `+json` types, form for `application/x-www-form-urlencoded`;
    /// anything else is not inspected here.
    pub fn of_content_type(ct: &str) -> Option<Self> {
        let essence = ct.split(';').next().unwrap_or("").trim();
        let essence = essence.to_ascii_lowercase();
        if essence == "application/json"
            || (essence.starts_with("application/") && essence.ends_with("+json"))
        {
            Some(Self::Json)
        } else if essence == "application/x-www-form-urlencoded" {
            Some(Self::Form)
        } else {
            None
        }
    }
}

/// The parts of a request the checks read.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestParts<'a> {
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    /// The body, read up to the route's cap, and how to read it.
    pub body: Option<(BodyKind, &'a [u8])>,
}

/// Where a parameter came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Query,
    Form,
    Json,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Query => "query",
            Source::Form => "form",
            Source::Json => "json",
        }
    }
}

/// One parameter: its name as segments (`a[b][c]` → `a`, `b`, `c`; a JSON
/// member → its path) and its value when it is a string or a scalar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arg {
    pub source: Source,
    pub segments: Vec<String>,
    pub value: Option<String>,
}

impl Arg {
    /// The name as logged: `query:a[b][c]`, `json:/a/b/0` (a JSON pointer).
    pub fn variable(&self) -> String {
        let mut out = String::from(self.source.as_str());
        out.push(':');
        match self.source {
            Source::Json => {
                for s in &self.segments {
                    out.push('/');
                    out.push_str(&s.replace('~', "~0").replace('/', "~1"));
                }
                if self.segments.is_empty() {
                    out.push('/');
                }
            }
            Source::Query | Source::Form => {
                for (i, s) in self.segments.iter().enumerate() {
                    if i == 0 {
                        out.push_str(s);
                    } else {
                        out.push('[');
                        out.push_str(s);
                        out.push(']');
                    }
                }
            }
        }
        cap(out)
    }
}

/// The query string's and a form body's parameters, parsed once. JSON
/// members are checked while the body is parsed and not kept: a copy of
/// every member's path would let a small body of long, deep keys and a
/// large array take memory in proportion to their product.
#[derive(Clone, Debug, Default)]
pub struct Args {
    pub args: Vec<Arg>,
}

/// The longest variable name a finding carries.
pub const MAX_VARIABLE_BYTES: usize = 256;

/// Findings recorded per request at most: one decides, a few explain.
pub const MAX_FINDINGS: usize = 16;

fn cap(mut s: String) -> String {
    if s.len() > MAX_VARIABLE_BYTES {
        let mut end = MAX_VARIABLE_BYTES - '…'.len_utf8();
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// The built-in checks. Ids are in ModSecurity's range for local rules
/// (1–99,999), apart from the CRS's 9xx,xxx.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    NoSqlOperator,
    PrototypePollution,
    SsrfTarget,
    JsonTooDeep,
    TooManyMembers,
    DuplicateJsonKey,
    MalformedEncoding,
    MalformedJson,
}

impl Rule {
    pub fn id(self) -> u32 {
        match self {
            Rule::NoSqlOperator => 10_101,
            Rule::PrototypePollution => 10_102,
            Rule::SsrfTarget => 10_103,
            Rule::JsonTooDeep => 10_111,
            Rule::TooManyMembers => 10_112,
            Rule::DuplicateJsonKey => 10_113,
            Rule::MalformedEncoding => 10_121,
            Rule::MalformedJson => 10_122,
        }
    }

    /// A stable name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Rule::NoSqlOperator => "nosql_operator_injection",
            Rule::PrototypePollution => "prototype_pollution",
            Rule::SsrfTarget => "ssrf_target",
            Rule::JsonTooDeep => "json_too_deep",
            Rule::TooManyMembers => "too_many_members",
            Rule::DuplicateJsonKey => "duplicate_json_key",
            Rule::MalformedEncoding => "malformed_encoding",
            Rule::MalformedJson => "malformed_json",
        }
    }

    /// Malformed input is the client's error (400, as ModSecurity's
    /// request-body error rule); everything else is an attack (403).
    pub fn is_malformed(self) -> bool {
        matches!(self, Rule::MalformedEncoding | Rule::MalformedJson)
    }
}

/// One check that matched: the rule, the variable it matched in (a name or
/// JSON pointer, never a value) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub rule: Rule,
    pub variable: String,
    pub reason: String,
}

/// The outcome of inspecting one request.
#[derive(Clone, Debug, Default)]
pub struct Inspection {
    pub args: Args,
    pub findings: Vec<Finding>,
}

/// Parse the request's parameters once and run every built-in check.
pub fn inspect(req: &RequestParts<'_>, limits: &Limits) -> Inspection {
    let mut out = Inspection::default();
    if let Some(q) = req.query {
        query::parse(q, Source::Query, limits, &mut out);
    }
    match req.body {
        Some((BodyKind::Form, body)) => match std::str::from_utf8(body) {
            Ok(text) => query::parse(text, Source::Form, limits, &mut out),
            Err(_) => out.findings.push(Finding {
                rule: Rule::MalformedEncoding,
                variable: "form".into(),
                reason: "form body is not valid UTF-8".into(),
            }),
        },
        Some((BodyKind::Json, body)) => json::parse(body, limits, &mut out),
        None => {}
    }
    // query and form parameters (JSON members are checked while parsed)
    for arg in &out.args.args {
        if out.findings.len() >= MAX_FINDINGS {
            break;
        }
        let variable = || arg.variable();
        let all = arg.segments.iter().flat_map(|s| keys::tokens(s));
        keys::check(all, false, &mut out.findings, &variable);
        if let Some(v) = &arg.value {
            let named = arg
                .segments
                .iter()
                .rev()
                .flat_map(|s| keys::tokens(s).rev())
                .find(|t| !t.bytes().all(|b| b.is_ascii_digit()))
                .is_some_and(ssrf::url_named);
            ssrf::check(named, v, &mut out.findings, &variable);
        }
    }
    // one parameter or member checked at the cap can add several findings
    // (a key that is both an operator and a prototype name, then its URL
    // value): the log stays bounded whatever the request holds
    out.findings.truncate(MAX_FINDINGS + 1);
    out
}

#[cfg(test)]
mod tests;
