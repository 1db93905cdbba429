//! `@detectSQLi` and `@detectXSS`: libinjection's tokenizers and
//! fingerprint tables, through `libinjectionrs` (a Rust port of the C
//! library ModSecurity links, with differential tests against it). No
//! detection logic of our own.

/// The SQL injection fingerprint of `v` (libinjection's, e.g. `s&sos`),
/// when it is one.
///
/// The crate's `detect_sqli` runs the same detection, then tokenizes the
/// input once more for the fingerprint it returns, injection or not. Here
/// the state is driven directly and the fingerprint is read from the pass
/// that found the injection: the same answer for about half the work on
/// benign input (`tests::the_same_answers_as_the_crates_detect_sqli`).
pub fn sqli_fingerprint(v: &[u8]) -> Option<String> {
    let mut state = libinjectionrs::SqliState::new(v, libinjectionrs::SqliFlags::FLAG_NONE);
    if !state.detect() {
        return None;
    }
    Some(state.fingerprint_string())
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

    /// Differential: every input built from three of these fragments (SQL
    /// keywords, quotes in every context, comments, operators, numbers,
    /// prose) gets the decision and the fingerprint of the crate's own
    /// `detect_sqli`.
    #[test]
    fn the_same_answers_as_the_crates_detect_sqli() {
        let fragments: &[&[u8]] = &[
            b"1",
            b"'",
            b"\"",
            b" ",
            b"OR",
            b"or 1=1",
            b"UNION SELECT",
            b"--",
            b"#",
            b"/*",
            b"*/",
            b"`",
            b"(",
            b")",
            b";",
            b"-",
            b"=",
            b"admin",
            b"O'Brien",
            b"sleep(5)",
            b"AND",
            b"0x41",
            b"@@version",
            b"\\",
            b"%",
            b"\0",
            b"select * from t",
            b"1e5",
            b"\xff",
            b"table.col",
        ];
        let (mut inputs, mut flagged) = (0, 0);
        for a in fragments {
            for b in fragments {
                for c in fragments {
                    let v = [*a, *b, *c].concat();
                    let theirs = libinjectionrs::detect_sqli(&v);
                    let expected = theirs.is_injection().then(|| {
                        theirs
                            .fingerprint
                            .map(|f| f.to_string())
                            .unwrap_or_default()
                    });
                    assert_eq!(
                        sqli_fingerprint(&v),
                        expected,
                        "{:?}",
                        String::from_utf8_lossy(&v)
                    );
                    inputs += 1;
                    flagged += usize::from(expected.is_some());
                }
            }
        }
        assert_eq!(inputs, fragments.len().pow(3));
        // both answers occur often: the comparison is not vacuous
        assert!(
            flagged > 2_000 && inputs - flagged > 2_000,
            "{flagged} of {inputs}"
        );
    }
}
