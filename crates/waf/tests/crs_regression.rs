//! The CRS v4.28.0 regression suite (go-ftw's YAML, `crs/tests/regression/tests`)
//! replayed through the engine.
//!
//! Each stage's request is built exactly as go-ftw 2.3 builds it (headers
//! sorted by name; with `autocomplete_headers`, a form `Content-Type` and
//! url-encoding of unencoded form data, `Connection: close`, a
//! `Content-Length`; `encoded_request` sent as given), read back as a web
//! server would (request line, headers, a body by `Content-Length` or
//! chunked), and evaluated in the test setup CRS's CI uses (rule 900005:
//! DetectionOnly, blocking paranoia level 4, the test limits). Scoring is
//! go-ftw's: every `expect_ids` logged, no `no_expect_ids` logged, the
//! `match_regex` / `no_match_regex` over the log lines.
//!
//! The response phases (`RESPONSE-*` files) run on the answer go-ftw's
//! backend, albedo, gives (see [`albedo`]). Stages this replay cannot judge
//! yet are counted apart with their reason (answers a web server gives). Every failing test is
//! listed in `tests/data/crs-expected-failures.txt` with its reason; the
//! test fails on an unexpected failure or an unexpected pass (so the list
//! only shrinks). `UPDATE_CRS_EXPECTED=1` rewrites it; the per-file table
//! is printed with `--nocapture`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup step is a failed test"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use palisade_waf::RuleSet;
use palisade_waf::tx::{Request, Response, RuleMatch, Transaction};
use serde_yaml::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What CRS's CI configures around the rules: its rule 900005 (the engine's
/// body-processor rules come with `palisade_waf::crs::load`).
const TEST_SETUP: &str = r#"
SecAction "id:900005,phase:1,nolog,pass,ctl:ruleEngine=DetectionOnly,ctl:ruleRemoveById=910000,setvar:tx.blocking_paranoia_level=4,setvar:tx.crs_validate_utf8_encoding=1,setvar:tx.arg_name_length=100,setvar:tx.arg_length=400,setvar:tx.total_arg_length=64000,setvar:tx.max_num_args=255,setvar:tx.max_file_size=64100,setvar:tx.combined_file_sizes=65535"
"#;

fn rule_set() -> RuleSet {
    let opts = palisade_waf::crs::CrsOptions {
        paranoia: 4,
        detection_only: true,
        before_rules: vec![("test-setup.conf".into(), TEST_SETUP.into())],
        after_rules: Vec::new(),
    };
    palisade_waf::crs::load(&repo().join("crs"), &opts).unwrap_or_else(|e| panic!("{e}"))
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Go's `url.QueryUnescape`: None on an invalid escape.
fn query_unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let h = |c: u8| (c as char).to_digit(16);
                let (Some(a), Some(c)) = (
                    b.get(i + 1).and_then(|&c| h(c)),
                    b.get(i + 2).and_then(|&c| h(c)),
                ) else {
                    return None;
                };
                out.push((a * 16 + c) as u8);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Go's `url.QueryEscape`.
fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for &c in s.as_bytes() {
        match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(c as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{c:02X}")),
        }
    }
    out
}

/// go-ftw's `encodeDataParameters`.
fn encode_form(data: &str) -> String {
    match query_unescape(data) {
        Some(d) if d == data => data
            .split('&')
            .map(|tok| match tok.split_once('=') {
                Some((k, v)) => format!("{}={}", query_escape(k), query_escape(v)),
                None => query_escape(tok),
            })
            .collect::<Vec<_>>()
            .join("&"),
        _ => data.to_string(),
    }
}

/// go-ftw's templates in `data`, the one form CRS uses: `{{ "x" | repeat N }}`.
fn render(data: &str) -> String {
    let re = regex::Regex::new(r#"\{\{\s*"([^"]*)"\s*\|\s*repeat\s+(\d+)\s*\}\}"#).unwrap();
    re.replace_all(data, |c: &regex::Captures<'_>| {
        c[1].repeat(c[2].parse::<usize>().unwrap())
    })
    .into_owned()
}

/// The bytes go-ftw sends for a stage input.
fn wire(input: &Value) -> Vec<u8> {
    if let Some(enc) = input.get("encoded_request").and_then(scalar) {
        return base64_decode(enc.trim());
    }
    let method = input.get("method").and_then(scalar).unwrap_or("GET".into());
    let uri = input.get("uri").and_then(scalar).unwrap_or("/".into());
    let version = input
        .get("version")
        .and_then(scalar)
        .unwrap_or("HTTP/1.1".into());
    let auto = input
        .get("autocomplete_headers")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    if let Some(Value::Mapping(m)) = input.get("headers") {
        for (k, v) in m {
            headers.insert(scalar(k).unwrap_or_default(), scalar(v).unwrap_or_default());
        }
    }
    let mut data = render(&input.get("data").and_then(scalar).unwrap_or_default());
    if !data.is_empty() && auto {
        headers
            .entry("Content-Type".into())
            .or_insert_with(|| "application/x-www-form-urlencoded".into());
        if headers.get("Content-Type").map(String::as_str)
            == Some("application/x-www-form-urlencoded")
        {
            data = encode_form(&data);
        }
    }
    if headers
        .get("Content-Type")
        .is_some_and(|ct| ct.starts_with("multipart/form-data;"))
    {
        data = data.replace('\n', "\r\n");
    }
    if auto {
        headers
            .entry("Connection".into())
            .or_insert_with(|| "close".into());
        // go-ftw's `^POST|PUT|PATCH|DELETE$`
        let body_method = method.starts_with("POST")
            || method.contains("PUT")
            || method.contains("PATCH")
            || method.ends_with("DELETE");
        if !data.is_empty() || body_method {
            headers
                .entry("Content-Length".into())
                .or_insert_with(|| data.len().to_string());
        }
    }
    let mut out = format!("{method} {uri} {version}\r\n").into_bytes();
    for (k, v) in &headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data.as_bytes());
    out
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let (mut acc, mut bits, mut out) = (0u32, 0, Vec::new());
    for c in s.bytes().filter_map(val) {
        acc = (acc << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Read the bytes back as a web server would; None when it would refuse
/// them (a malformed request line or header).
fn parse_wire(raw: &[u8], id: &str) -> Option<Request> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let rest = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let line = lines.next()?;
    let mut parts = line.splitn(3, ' ');
    let (method, uri, version) = (parts.next()?, parts.next()?, parts.next()?);
    if method.is_empty() || uri.is_empty() || !version.starts_with("HTTP/") {
        return None;
    }
    let mut headers = Vec::new();
    for l in lines {
        let (k, v) = l.split_once(':')?;
        headers.push((k.to_string(), v.trim_start().as_bytes().to_vec()));
    }
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    let body = if get("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        let mut r = rest;
        loop {
            let nl = r.windows(2).position(|w| w == b"\r\n")?;
            let size = usize::from_str_radix(
                std::str::from_utf8(&r[..nl])
                    .ok()?
                    .split(';')
                    .next()?
                    .trim(),
                16,
            )
            .ok()?;
            r = &r[nl + 2..];
            if size == 0 {
                break;
            }
            body.extend_from_slice(r.get(..size)?);
            r = r.get(size + 2..).unwrap_or(&[]);
        }
        body
    } else {
        match get("content-length").and_then(|v| v.trim().parse::<usize>().ok()) {
            Some(n) => rest[..n.min(rest.len())].to_vec(),
            None => Vec::new(),
        }
    };
    Some(Request {
        method: method.into(),
        uri: uri.into(),
        protocol: version.into(),
        headers,
        remote_addr: "127.0.0.1".into(),
        body,
        id: id.into(),
    })
}

/// Text as ModSecurity writes it to its log: bytes outside printable ASCII
/// as `\xHH`.
fn log_escape(s: &str) -> String {
    let mut out = String::new();
    for &b in s.as_bytes() {
        if (0x20..0x7f).contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// ModSecurity's error-log line for a match, as go-ftw's regexes read it.
fn log_line(m: &RuleMatch) -> String {
    format!(
        "ModSecurity: Warning. [id \"{}\"] [msg \"{}\"] [data \"{}\"] [severity \"{}\"] [tag \"{}\"]",
        m.id,
        log_escape(&m.msg),
        log_escape(&m.data),
        m.severity.unwrap_or(0),
        m.tags.join("\"] [tag \"")
    )
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
enum Outcome {
    Pass,
    Fail,
    /// The stage needs what this replay does not do yet.
    NotJudged(&'static str),
}

fn ids(v: Option<&Value>) -> Vec<u64> {
    match v {
        Some(Value::Sequence(s)) => s.iter().filter_map(Value::as_u64).collect(),
        _ => Vec::new(),
    }
}

/// The response go-ftw's backend (albedo) gives: `POST /reflect` answers
/// with the `body` of its JSON body (status 200; Go's net/http names a text
/// body `text/plain; charset=utf-8`, an HTML one `text/html; ...`); any
/// other path answers 200 without a body.
fn albedo(req: &Request) -> Response {
    let path = req.uri.split('?').next().unwrap_or_default();
    let body = if req.method == "POST" && path == "/reflect" {
        serde_json::from_slice::<serde_json::Value>(&req.body)
            .ok()
            .and_then(|v| v.get("body")?.as_str().map(|b| b.as_bytes().to_vec()))
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let lower = String::from_utf8_lossy(&body)
        .trim_start()
        .to_ascii_lowercase();
    let ct = if [
        "<!doctype html",
        "<html",
        "<head",
        "<script",
        "<body",
        "<h1",
        "<p",
        "<br",
        "<a",
        "<div",
        "<table",
        "<title",
        "<iframe",
        "<font",
        "<b",
        "<style",
        "<!--",
    ]
    .iter()
    .any(|t| lower.starts_with(t))
    {
        "text/html; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut headers = vec![(
        "Content-Length".to_string(),
        body.len().to_string().into_bytes(),
    )];
    if !body.is_empty() {
        headers.push(("Content-Type".to_string(), ct.as_bytes().to_vec()));
    }
    Response {
        status: 200,
        headers,
        body: Some(body),
    }
}

fn judge(set: &RuleSet, file: &str, input: &Value, output: &Value, id: &str) -> Outcome {
    if output.get("status").is_some() || output.get("expect_error").is_some() {
        return Outcome::NotJudged(
            "the answer a web server gives (status, refusals) needs the gateway",
        );
    }
    let raw = wire(input);
    let Some(req) = parse_wire(&raw, id) else {
        return Outcome::NotJudged("a request a web server would refuse");
    };
    let debug = std::env::var("CRS_DEBUG").is_ok_and(|d| d == id);
    if debug {
        println!(
            "--- {id}\n{}\n--- parsed: {req:?}",
            String::from_utf8_lossy(&raw)
        );
    }
    let response = file.starts_with("RESPONSE-").then(|| albedo(&req));
    let mut tx = Transaction::new(set, req);
    tx.process_request();
    if let Some(resp) = response {
        tx.process_response(resp);
    }
    if debug {
        for m in &tx.matches {
            println!("matched {} {} [{}] {}", m.id, m.msg, m.variable, m.data);
        }
    }
    let logged: BTreeSet<u64> = tx.matches.iter().map(|m| u64::from(m.id)).collect();
    let lines: Vec<String> = tx.matches.iter().map(log_line).collect();
    let log = output.get("log");
    let field = |n: &str| log.and_then(|l| l.get(n));
    let mut ok = ids(field("expect_ids")).iter().all(|i| logged.contains(i))
        && !ids(field("no_expect_ids"))
            .iter()
            .any(|i| logged.contains(i));
    // the older spellings
    if let Some(s) = output.get("log_contains").and_then(scalar) {
        ok &= regex::Regex::new(&s).is_ok_and(|r| lines.iter().any(|l| r.is_match(l)));
    }
    if let Some(s) = output.get("no_log_contains").and_then(scalar) {
        ok &= regex::Regex::new(&s).is_ok_and(|r| !lines.iter().any(|l| r.is_match(l)));
    }
    if let Some(s) = field("match_regex").and_then(scalar) {
        ok &= regex::Regex::new(&s).is_ok_and(|r| lines.iter().any(|l| r.is_match(l)));
    }
    if let Some(s) = field("no_match_regex").and_then(scalar) {
        ok &= regex::Regex::new(&s).is_ok_and(|r| !lines.iter().any(|l| r.is_match(l)));
    }
    if ok { Outcome::Pass } else { Outcome::Fail }
}

#[test]
fn crs_regression_suite() {
    let set = rule_set();
    let root = repo().join("crs/tests/regression/tests");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    // per rule file: (passed, failed, not judged)
    let mut table: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    let mut failures: BTreeSet<String> = BTreeSet::new();
    let mut not_judged: BTreeMap<&'static str, usize> = BTreeMap::new();
    for dir in dirs {
        let file = dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut tests: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        tests.sort();
        for t in tests {
            let text = std::fs::read_to_string(&t).unwrap();
            let doc: Value = serde_yaml::from_str(&text).unwrap_or(Value::Null);
            let rule_id = doc.get("rule_id").and_then(scalar).unwrap_or_default();
            let Some(Value::Sequence(cases)) = doc.get("tests") else {
                continue;
            };
            for case in cases {
                let test_id = case.get("test_id").and_then(scalar).unwrap_or_default();
                let name = format!("{rule_id}-{test_id}");
                let mut outcome = Outcome::Pass;
                if let Some(Value::Sequence(stages)) = case.get("stages") {
                    for st in stages {
                        let o = judge(
                            &set,
                            &file,
                            st.get("input").unwrap_or(&Value::Null),
                            st.get("output").unwrap_or(&Value::Null),
                            &name,
                        );
                        outcome = outcome.max(o);
                    }
                }
                let row = table.entry(file.clone()).or_default();
                match outcome {
                    Outcome::Pass => row.0 += 1,
                    Outcome::Fail => {
                        row.1 += 1;
                        failures.insert(name);
                    }
                    Outcome::NotJudged(why) => {
                        row.2 += 1;
                        *not_judged.entry(why).or_default() += 1;
                    }
                }
            }
        }
    }
    let (p, f, n) = table
        .values()
        .fold((0, 0, 0), |a, r| (a.0 + r.0, a.1 + r.1, a.2 + r.2));
    println!("| rule file | passed | failed | not judged | pass rate of judged |");
    println!("|---|---|---|---|---|");
    for (file, (pa, fa, nj)) in &table {
        let rate = if pa + fa > 0 {
            100.0 * *pa as f64 / (pa + fa) as f64
        } else {
            100.0
        };
        println!("| {file} | {pa} | {fa} | {nj} | {rate:.1} % |");
    }
    println!(
        "| **all** | {p} | {f} | {n} | {:.1} % |",
        100.0 * p as f64 / (p + f).max(1) as f64
    );
    for (why, count) in &not_judged {
        println!("not judged: {count} tests: {why}");
    }

    let expected_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/crs-expected-failures.txt");
    if std::env::var_os("UPDATE_CRS_EXPECTED").is_some() {
        // keep the reason written for a test that still fails
        let reasons: BTreeMap<String, String> = std::fs::read_to_string(&expected_path)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (id, why) = l.split_once('#')?;
                Some((id.trim().to_string(), why.trim().to_string()))
            })
            .collect();
        let mut text = String::from(
            "# CRS v4.28.0 regression tests that fail through palisade-waf today (tests/crs_regression.rs).\n# One `<rule_id>-<test_id> # reason` per line; the run fails on a failure not listed here and\n# on a listed test that passes (delete its line). UPDATE_CRS_EXPECTED=1 rewrites the list and\n# keeps the reasons of the tests that still fail.\n",
        );
        for name in &failures {
            let why = reasons
                .get(name)
                .map(String::as_str)
                .unwrap_or("not analysed yet");
            text.push_str(&format!("{name} # {why}\n"));
        }
        std::fs::write(&expected_path, text).unwrap();
        return;
    }
    let expected: BTreeSet<String> = std::fs::read_to_string(&expected_path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    let unexpected_fail: Vec<_> = failures.difference(&expected).collect();
    let unexpected_pass: Vec<_> = expected.difference(&failures).collect();
    assert!(
        unexpected_fail.is_empty() && unexpected_pass.is_empty(),
        "unexpected failures: {unexpected_fail:?}\nunexpected passes (remove them from {}): {unexpected_pass:?}",
        expected_path.display()
    );
}
