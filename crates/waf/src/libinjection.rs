//! `@detectSQLi` and `@detectXSS`: libinjection's tokenizers and
//! fingerprint tables, through `libinjectionrs` (a Rust port of the C
//! library ModSecurity links, with differential tests against it). No
//! detection logic of our own.

/// The SQL injection fingerprint of `v` (libinjection's, e.g. `s&sos`),
/// when it is one.
pub fn sqli_fingerprint(v: &[u8]) -> Option<String> {
    let r = libinjectionrs::detect_sqli(v);
    if !r.is_injection() {
        return None;
    }
    Some(r.fingerprint.map(|f| f.to_string()).unwrap_or_default())
}

/// Whether `v` is an XSS vector for libinjection's HTML5 tokenizer.
pub fn is_xss(v: &[u8]) -> bool {
    libinjectionrs::detect_xss(v).is_injection()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attacks_are_found_and_prose_is_not() {
        assert_eq!(
            sqli_fingerprint(b"' OR '1'='1' --").as_deref(),
            Some("s&sos")
        );
        assert!(sqli_fingerprint(b"1 UNION SELECT password FROM users").is_some());
        assert_eq!(sqli_fingerprint(b"O'Brien's order of 3 items"), None);
        assert!(is_xss(b"<script>alert(1)</script>"));
        assert!(is_xss(b"<img src=x onerror=alert(1)>"));
        assert!(!is_xss(b"5 < 6 and 7 > 3, said the teacher"));
    }
}
