//! Request inspection (pipeline step 7): path normalisation before routing and
//! policy, so that the route, the policy and the upstream all see one path.
//!
//! Rules: percent-decoding of everything except the characters that would
//! change the path's structure — an encoded `/` (`%2F`), `\` (`%5C`) and NUL
//! (`%00`) are rejected, as is a raw `\`; the decoded path must be UTF-8; dot
//! segments are removed (RFC 3986 §5.2.4, clamped at the root as Envoy does);
//! duplicate slashes are merged. The result is re-encoded for forwarding.

use crate::config::{Inspection, InspectionMode};
use crate::error::GatewayError;
use palisade_inspect::{BodyKind, RequestParts};

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Normalise a request path (without the query). Returns the decoded,
/// normalised path.
pub fn normalize_path(raw: &str) -> Result<String, GatewayError> {
    if !raw.starts_with('/') {
        return Err(GatewayError::BadPath("path must start with /"));
    }
    if raw.len() > 8192 {
        return Err(GatewayError::BadPath("path too long"));
    }
    let b = raw.as_bytes();
    let mut decoded = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let (Some(h), Some(l)) = (
                    b.get(i + 1).copied().and_then(hex),
                    b.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(GatewayError::BadPath("invalid percent-encoding in path"));
                };
                let c = h * 16 + l;
                match c {
                    b'/' => return Err(GatewayError::BadPath("encoded slash in path")),
                    b'\\' => return Err(GatewayError::BadPath("encoded backslash in path")),
                    0 => return Err(GatewayError::BadPath("NUL in path")),
                    _ => decoded.push(c),
                }
                i += 3;
            }
            b'\\' => return Err(GatewayError::BadPath("backslash in path")),
            c => {
                decoded.push(c);
                i += 1;
            }
        }
    }
    let s =
        String::from_utf8(decoded).map_err(|_| GatewayError::BadPath("path is not valid UTF-8"))?;
    if s.chars().any(|c| c.is_control()) {
        return Err(GatewayError::BadPath("control character in path"));
    }
    let trailing = s.ends_with('/') || s.ends_with("/.") || s.ends_with("/..");
    let mut out: Vec<&str> = Vec::new();
    for seg in s.split('/') {
        // `..;x` and `.;x`: Tomcat, Jetty and Spring drop the path parameter
        // and read a dot segment that we would pass as a plain name
        if let Some((base, _)) = seg.split_once(';')
            && (base == "." || base == "..")
        {
            return Err(GatewayError::BadPath("dot segment with a path parameter"));
        }
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    let mut path = String::with_capacity(s.len());
    for seg in &out {
        path.push('/');
        path.push_str(seg);
    }
    if path.is_empty() || (trailing && !path.ends_with('/')) {
        path.push('/');
    }
    Ok(path)
}

/// The longest findings text one request logs.
const MAX_FINDINGS_BYTES: usize = 1024;

/// Cut a findings text for the log at [`MAX_FINDINGS_BYTES`] (on a
/// character boundary, with `…`); true when it was cut.
pub fn cap_findings(text: &mut String) -> bool {
    if text.len() <= MAX_FINDINGS_BYTES {
        return false;
    }
    let mut end = MAX_FINDINGS_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    true
}

/// Step 7's content inspection (palisade-inspect's built-in checks) on the
/// query string and, when the route reads it, a JSON or form body:
/// `Ok(None)` when nothing matched, `Ok(Some(findings))` in detect mode
/// (logged, the request goes on unchanged), `Err(Blocked)` in block mode.
/// `body` is None when there is none, or it is of a type not inspected.
pub fn content(
    inspection: &Inspection,
    query: Option<&str>,
    body: Option<(BodyKind, &[u8])>,
) -> Result<Option<String>, GatewayError> {
    if inspection.mode == InspectionMode::Off {
        return Ok(None);
    }
    let found = palisade_inspect::inspect(&RequestParts { query, body }, &inspection.limits);
    if found.findings.is_empty() {
        return Ok(None);
    }
    let malformed = found.findings.iter().all(|f| f.rule.is_malformed());
    let mut text = String::new();
    for f in &found.findings {
        if !text.is_empty() {
            text.push_str("; ");
        }
        text.push_str(&format!(
            "inspection:{} {} {}: {}",
            f.rule.id(),
            f.rule.name(),
            f.variable,
            f.reason
        ));
        if cap_findings(&mut text) {
            break;
        }
    }
    match inspection.mode {
        InspectionMode::Block => Err(GatewayError::Blocked {
            findings: text,
            malformed,
        }),
        _ => Ok(Some(text)),
    }
}

/// What a body that cannot be inspected means: a `Content-Encoding` (a
/// service's body parser would inflate it; the checks would see only
/// compressed bytes) is refused in block mode and noted in detect mode.
pub fn uninspectable(inspection: &Inspection, why: &str) -> Result<Option<String>, GatewayError> {
    let text = format!("inspection: body not inspected: {why}");
    match inspection.mode {
        InspectionMode::Off => Ok(None),
        InspectionMode::Detect => Ok(Some(text)),
        InspectionMode::Block => Err(GatewayError::Blocked {
            findings: text,
            malformed: true,
        }),
    }
}

/// Why a body cannot be checked as the service will read it, if it cannot:
/// compressed (the service's body parser inflates it, a check would read
/// compressed bytes), or declared in a charset other than UTF-8
/// (body-parser decodes UTF-7, UTF-16... through iconv-lite, the checks
/// read UTF-8). One answer for inspection, OpenAPI and CRS.
pub fn unreadable_body(headers: &hyper::HeaderMap) -> Option<&'static str> {
    if let Some(enc) = headers.get(hyper::header::CONTENT_ENCODING)
        && !enc.as_bytes().eq_ignore_ascii_case(b"identity")
    {
        return Some("Content-Encoding");
    }
    match headers.get(hyper::header::CONTENT_TYPE) {
        Some(ct) if !charset_is_utf8(&String::from_utf8_lossy(ct.as_bytes())) => {
            Some("a charset other than UTF-8")
        }
        _ => None,
    }
}

/// Whether a `Content-Type` value declares no charset, or UTF-8 (any case,
/// quoted or not; `utf8` and `us-ascii` too, which read as UTF-8 does).
pub fn charset_is_utf8(content_type: &str) -> bool {
    content_type
        .split(';')
        .skip(1)
        .filter_map(|p| p.split_once('='))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case("charset"))
        .all(|(_, v)| {
            let v = v.trim().trim_matches('"').to_ascii_lowercase();
            matches!(v.as_str(), "utf-8" | "utf8" | "us-ascii")
        })
}

/// Percent-encode a normalised path for the upstream request line. `;` is
/// encoded too: Tomcat, Jetty and Spring cut a raw `;` and what follows out
/// of a segment (a path parameter), so `/orders/;x/admin` or
/// `/orders/admin;x` would reach `/orders/admin` behind a policy that saw
/// another path; `%3B` decodes to the `;` the policy saw.
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for &b in path.as_bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@/".contains(&b);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether `path` is under `prefix` on a segment boundary (`/a` covers `/a`
/// and `/a/b`, not `/ab`).
pub fn under_prefix(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    let p = prefix.trim_end_matches('/');
    path.strip_prefix(p)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        for (raw, want) in [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a//b///c", "/a/b/c"),
            ("/a/./b/../c", "/a/c"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/a/%2e%2e/b", "/b"),
            ("/a/%2E%2e/%2e/b", "/b"),
            ("/orders/", "/orders/"),
            ("/orders/x/..", "/orders/"),
            ("/caf%C3%A9", "/café"),
            ("/a%20b", "/a b"),
            // a path parameter on an ordinary segment is kept (and
            // forwarded encoded, see below); only dot segments are refused
            ("/a/b;c", "/a/b;c"),
            ("/a/...;x", "/a/...;x"),
            ("/a/x..;y", "/a/x..;y"),
        ] {
            assert_eq!(normalize_path(raw).unwrap(), want, "{raw}");
        }
    }

    #[test]
    fn rejects() {
        for (raw, why) in [
            ("/a%2Fb", "encoded slash in path"),
            ("/a%2fb", "encoded slash in path"),
            ("/a%00b", "NUL in path"),
            ("/a%5Cb", "encoded backslash in path"),
            ("/a\\b", "backslash in path"),
            ("/a%zz", "invalid percent-encoding in path"),
            ("/a%2", "invalid percent-encoding in path"),
            ("/a%ff", "path is not valid UTF-8"),
            ("/a%0a", "control character in path"),
            ("a/b", "path must start with /"),
            // Tomcat, Jetty and Spring read `..;x` as `..`: refused in
            // every spelling, decoded or not
            (
                "/health/..;/api/orders/admin",
                "dot segment with a path parameter",
            ),
            ("/health/..;x/admin", "dot segment with a path parameter"),
            ("/health/.;/admin", "dot segment with a path parameter"),
            ("/health/%2e%2e;/admin", "dot segment with a path parameter"),
            ("/health/%2E;x/admin", "dot segment with a path parameter"),
            ("/health/..%3B/admin", "dot segment with a path parameter"),
            ("/health/.%3bx", "dot segment with a path parameter"),
        ] {
            assert_eq!(
                normalize_path(raw).unwrap_err(),
                GatewayError::BadPath(why),
                "{raw}"
            );
        }
    }

    #[test]
    fn only_utf8_bodies_are_read_as_utf8() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "application/json;Charset=\"UTF-8\"",
            "application/x-www-form-urlencoded; charset=us-ascii",
        ] {
            assert!(charset_is_utf8(ok), "{ok}");
        }
        for bad in [
            "application/json; Charset=UTF-7",
            "application/json; charset=utf-16le",
            "application/x-www-form-urlencoded; charset=iso-8859-1",
            "application/json; charset=utf-8; charset=utf-7",
        ] {
            assert!(!charset_is_utf8(bad), "{bad}");
        }
    }

    #[test]
    fn prefixes_and_encoding() {
        assert!(under_prefix("/orders", "/orders"));
        assert!(under_prefix("/orders/1", "/orders"));
        assert!(under_prefix("/orders/1", "/orders/"));
        assert!(!under_prefix("/ordersx", "/orders"));
        assert!(under_prefix("/anything", "/"));
        assert_eq!(encode_path("/a b/café"), "/a%20b/caf%C3%A9");
        assert_eq!(encode_path("/a?b#c"), "/a%3Fb%23c");
        // a raw `;` would be a path parameter to Tomcat, Jetty and Spring
        assert_eq!(encode_path("/a/;x/admin;y"), "/a/%3Bx/admin%3By");
        assert_eq!(
            encode_path(&normalize_path("/a/%3Bx/admin").unwrap()),
            "/a/%3Bx/admin"
        );
    }
}
