//! Query strings and `application/x-www-form-urlencoded` bodies, read as
//! Express reads them: pairs split on `&`, name and value split as qs does
//! (at the first `]=`, else the first `=`) and, where that differs, also as
//! Node's querystring does (the first `=`), `+` as a space, percent-decoding, and names in bracket syntax
//! (`a[b][]`) split into segments. Unlike qs, an invalid escape or a
//! decoded name or value that is not UTF-8 is a finding, not passed on
//! half-decoded: the value a check sees is the value the service gets.

use crate::{Arg, Finding, Inspection, Limits, Rule, Source, cap};

pub(crate) fn parse(text: &str, source: Source, limits: &Limits, out: &mut Inspection) {
    // qs turns every %5B and %5D (either case) into brackets before it
    // splits anything: `u=[$ne]%5D=1` is the name `u=[$ne]`
    let text = unescape_brackets(text);
    let mut n = 0usize;
    for pair in text.split('&') {
        if pair.is_empty() {
            continue;
        }
        n += 1;
        if n > limits.max_members {
            out.findings.push(Finding {
                rule: Rule::TooManyMembers,
                variable: source.as_str().into(),
                reason: format!("more than {} parameters", limits.max_members),
            });
            return;
        }
        // qs: a name ends at the first `]=` if there is one, else at the
        // first `=` (`a[x=y][$ne]=1` is the name `a[x=y][$ne]`)
        let split = match pair.find("]=") {
            Some(i) => Some(i + 1),
            None => pair.find('='),
        };
        let (raw_name, raw_value) = match split {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, ""),
        };
        // Node's querystring and URLSearchParams (Express 5's default query
        // parser, `urlencoded({extended: false})`, Fastify, Koa) split at
        // the first `=`: where that reads differently, both readings are
        // judged
        if let Some(first) = pair.find('=')
            && Some(first) != split
        {
            push(source, &pair[..first], &pair[first + 1..], out);
        }
        push(source, raw_name, raw_value, out);
    }
}

/// Decode one name and value into an argument, or a finding.
fn push(source: Source, raw_name: &str, raw_value: &str, out: &mut Inspection) {
    let malformed = |what: &str| Finding {
        rule: Rule::MalformedEncoding,
        variable: cap(format!("{}:{raw_name}", source.as_str())),
        reason: format!("{what} is not valid percent-encoded UTF-8"),
    };
    let Some(name) = decode(raw_name) else {
        if out.findings.len() < crate::MAX_FINDINGS {
            out.findings.push(malformed("parameter name"));
        }
        return;
    };
    let Some(value) = decode(raw_value) else {
        if out.findings.len() < crate::MAX_FINDINGS {
            out.findings.push(malformed("parameter value"));
        }
        return;
    };
    out.args.args.push(Arg {
        source,
        segments: segments(&name),
        value: Some(value),
    });
}

/// `%5B`/`%5b` → `[`, `%5D`/`%5d` → `]`, as qs does first.
fn unescape_brackets(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains('%') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let esc = rest.get(i..i + 3).unwrap_or("");
        if esc.eq_ignore_ascii_case("%5B") {
            out.push('[');
            rest = &rest[i + 3..];
        } else if esc.eq_ignore_ascii_case("%5D") {
            out.push(']');
            rest = &rest[i + 3..];
        } else {
            out.push('%');
            rest = &rest[i + 1..];
        }
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// `+` as a space and `%XX` escapes decoded; None for a bad escape or a
/// result that is not UTF-8.
pub(crate) fn decode(s: &str) -> Option<String> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = |b: u8| char::from(b).to_digit(16);
                let h = bytes.get(i + 1).copied().and_then(hex)?;
                let l = bytes.get(i + 2).copied().and_then(hex)?;
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// qs's bracket syntax: `a[b][c]` → `a`, `b`, `c`; `a[]` → `a`, ``. Text
/// after the last complete group (`a[b]x`, `a[b`) is one more segment, as
/// written.
pub(crate) fn segments(name: &str) -> Vec<String> {
    let Some(open) = name.find('[') else {
        return vec![name.to_owned()];
    };
    if open == 0 {
        return vec![name.to_owned()];
    }
    let mut out = vec![name[..open].to_owned()];
    let mut rest = &name[open..];
    while let Some(inner) = rest.strip_prefix('[') {
        let Some(close) = inner.find(']') else {
            break;
        };
        out.push(inner[..close].to_owned());
        rest = &inner[close + 1..];
    }
    if !rest.is_empty() {
        out.push(rest.to_owned());
    }
    out
}
