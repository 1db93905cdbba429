//! A bound on how deeply HCL policy text nests, checked before the HCL
//! parser sees it.
//!
//! hcl-edit's expression parser backtracks: on unclosed nested objects
//! (`e = s/a/{p/a/{p/a/{p ...`) its time grows about 1.8× per level, so 94
//! bytes took seconds and 274 bytes (found by the `policy_hcl` fuzz target)
//! 16 s of CPU in a release build — a policy upload that pins a core.
//! Vault's policy language (HCL 1) needs three levels at most (`path` block,
//! `capabilities` list, a parameters object), so text nested deeper than
//! [`MAX_NESTING`] is refused before parsing, and so is HCL text longer
//! than [`MAX_HCL_BYTES`] (a security review measured 1.8 s for 100 KB
//! under eight unclosed levels).
//!
//! This is not a parser: it only follows HCL's lexical structure far enough
//! to know which brackets are structure (comments, quoted strings, heredocs
//! and the `${ }` / `%{ }` templates inside them), so a closing bracket
//! inside a string cannot hide an opening one outside. Where that structure
//! is unclear (a heredoc header it cannot read), it refuses.

use crate::PolicyError;

/// Deepest nesting of `{`, `[`, `(`, `${` and `%{` accepted in HCL policy
/// text (a real policy needs three).
pub(crate) const MAX_NESTING: usize = 4;

/// The largest HCL policy text accepted. Within the nesting bound the
/// parser's time still grows with the text (about 0.5 µs a byte flat, and
/// ~1.9× per level of unclosed nesting): this keeps a policy upload well
/// under a second. JSON policies (a linear parser) are not bounded here.
pub(crate) const MAX_HCL_BYTES: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq)]
enum Frame {
    /// Inside `{`, `[` or `(`: the closing byte expected.
    Bracket(u8),
    /// Inside `${` or `%{` within a string or heredoc.
    Template,
    /// Inside a quoted string.
    Quoted,
    /// Inside a heredoc: the index of its marker in `markers`, and where
    /// its first line starts.
    Heredoc(usize, usize),
}

fn unclear_heredoc() -> PolicyError {
    PolicyError::Invalid(
        "a heredoc must be <<MARKER or <<-MARKER (ASCII letters, digits, _ and -) \
         followed by a line end, and hold at least one line"
            .to_owned(),
    )
}

pub(crate) fn check(text: &str) -> Result<(), PolicyError> {
    if text.len() > MAX_HCL_BYTES {
        return Err(PolicyError::Invalid(format!(
            "an HCL policy may hold at most {} KiB (this one: {} bytes); split it, or write it as JSON",
            MAX_HCL_BYTES / 1024,
            text.len()
        )));
    }
    let b = text.as_bytes();
    let mut stack: Vec<Frame> = Vec::new();
    let mut markers: Vec<&[u8]> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0usize;
    while i < b.len() {
        match stack.last().copied() {
            Some(Frame::Quoted) => match b[i] {
                b'\\' => i += 2,
                b'"' => {
                    stack.pop();
                    i += 1;
                }
                _ => i += template_text(b, i, &mut stack, &mut depth)?,
            },
            Some(Frame::Heredoc(m, first_line)) => {
                // hcl-edit ends a heredoc at a line end, optional spaces or
                // tabs, the marker, and anything that cannot continue an
                // identifier; what follows on that line is expression text.
                // Its first line ends it only when no later line does (an
                // empty heredoc): that needs a look ahead, so a first line
                // that looks like the end is refused as ambiguous.
                if b[i - 1] == b'\n' {
                    let indent = b[i..]
                        .iter()
                        .take_while(|c| **c == b' ' || **c == b'\t')
                        .count();
                    let after = i + indent + markers[m].len();
                    if b[i + indent..].starts_with(markers[m]) {
                        match b.get(after) {
                            Some(c) if c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-' => {}
                            // Whether a non-ASCII character continues the
                            // identifier is Unicode's call: do not guess.
                            Some(c) if !c.is_ascii() => return Err(unclear_heredoc()),
                            _ if i == first_line => return Err(unclear_heredoc()),
                            _ => {
                                stack.pop();
                                i = after;
                                continue;
                            }
                        }
                    }
                }
                i += template_text(b, i, &mut stack, &mut depth)?;
            }
            // Expression context: the top level, brackets, templates.
            _ => match b[i] {
                b'#' => i = find(b, i, b"\n").unwrap_or(b.len()),
                b'/' if b.get(i + 1) == Some(&b'/') => i = find(b, i, b"\n").unwrap_or(b.len()),
                b'/' if b.get(i + 1) == Some(&b'*') => {
                    i = find(b, i + 2, b"*/").map_or(b.len(), |end| end + 2);
                }
                b'"' => {
                    stack.push(Frame::Quoted);
                    i += 1;
                }
                b'<' if b.get(i + 1) == Some(&b'<') => {
                    let start = i + 2 + usize::from(b.get(i + 2) == Some(&b'-'));
                    // `<<`, an optional `-`, an identifier and a line end,
                    // nothing else (hcl-edit's heredoc header).
                    let len = b[start..]
                        .iter()
                        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_' || **c == b'-')
                        .count();
                    let marker = &b[start..start + len];
                    let rest = &b[start + len..];
                    let newline = if rest.starts_with(b"\r\n") {
                        2
                    } else if rest.starts_with(b"\n") {
                        1
                    } else {
                        0
                    };
                    if len == 0 || newline == 0 || !marker[0].is_ascii_alphabetic() {
                        return Err(unclear_heredoc());
                    }
                    markers.push(marker);
                    i = start + len + newline;
                    stack.push(Frame::Heredoc(markers.len() - 1, i));
                }
                open @ (b'{' | b'[' | b'(') => {
                    let close = match open {
                        b'{' => b'}',
                        b'[' => b']',
                        _ => b')',
                    };
                    nest(&mut stack, &mut depth, Frame::Bracket(close))?;
                    i += 1;
                }
                close @ (b'}' | b']' | b')') => {
                    match stack.last() {
                        Some(Frame::Bracket(expected)) if *expected == close => {
                            stack.pop();
                            depth -= 1;
                        }
                        Some(Frame::Template) if close == b'}' => {
                            stack.pop();
                            depth -= 1;
                        }
                        // A mismatched closer is a syntax error the parser
                        // reports; it must not lower the count.
                        _ => {}
                    }
                    i += 1;
                }
                _ => i += 1,
            },
        }
    }
    Ok(())
}

/// Enter `frame` (a bracket or a template), within [`MAX_NESTING`].
fn nest(stack: &mut Vec<Frame>, depth: &mut usize, frame: Frame) -> Result<(), PolicyError> {
    *depth += 1;
    if *depth > MAX_NESTING {
        return Err(PolicyError::Invalid(format!(
            "policy text nests deeper than {MAX_NESTING} levels of brackets"
        )));
    }
    stack.push(frame);
    Ok(())
}

/// String or heredoc text at `i`: a template (`${`, `%{`) is entered, the
/// escapes `$${` and `%%{` are literal text. How many bytes were read.
fn template_text(
    b: &[u8],
    i: usize,
    stack: &mut Vec<Frame>,
    depth: &mut usize,
) -> Result<usize, PolicyError> {
    let sigil = matches!(b[i], b'$' | b'%');
    if sigil && b.get(i + 1) == Some(&b[i]) && b.get(i + 2) == Some(&b'{') {
        Ok(3)
    } else if sigil && b.get(i + 1) == Some(&b'{') {
        nest(stack, depth, Frame::Template)?;
        Ok(2)
    } else {
        Ok(1)
    }
}

/// The index of the first `needle` in `haystack` at or after `from`.
fn find(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|n| from + n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn too_deep() -> String {
        format!("policy text nests deeper than {MAX_NESTING} levels of brackets")
    }

    fn err(text: &str) -> String {
        check(text).unwrap_err().to_string()
    }

    #[test]
    fn long_hcl_text_is_refused() {
        let long = format!(
            "{}\n",
            "path \"a/*\" { capabilities = [\"read\"] }\n".repeat(MAX_HCL_BYTES / 30)
        );
        assert!(long.len() > MAX_HCL_BYTES);
        assert_eq!(
            err(&long),
            format!(
                "an HCL policy may hold at most 64 KiB (this one: {} bytes); split it, or write it as JSON",
                long.len()
            )
        );
        check(&long[..MAX_HCL_BYTES]).unwrap();
    }

    /// The `policy_hcl` fuzz target's slow unit: 16 s in hcl-edit (release).
    const FUZZ_SLOW_UNIT: &str =
        include_str!("../../../fuzz/corpus/policy_hcl/seed-slow-nested-objects");

    #[test]
    fn deep_unclosed_nesting_is_refused_before_the_parser() {
        assert_eq!(err(FUZZ_SLOW_UNIT), too_deep());
        let minimal = format!("e=s/a/{}{{p", "{p/a/".repeat(18));
        assert_eq!(err(&minimal), too_deep());
        // Through the public entry points, with the same error.
        assert_eq!(
            crate::Policy::parse("p", FUZZ_SLOW_UNIT)
                .unwrap_err()
                .to_string(),
            too_deep()
        );
        assert_eq!(
            crate::format_hcl(&minimal).unwrap_err().to_string(),
            too_deep()
        );
    }

    #[test]
    fn nesting_up_to_the_limit_is_allowed() {
        let at_limit = format!(
            "x = {}1{}",
            "[".repeat(MAX_NESTING),
            "]".repeat(MAX_NESTING)
        );
        check(&at_limit).unwrap();
        let over = format!(
            "x = {}1{}",
            "[".repeat(MAX_NESTING + 1),
            "]".repeat(MAX_NESTING + 1)
        );
        assert_eq!(err(&over), too_deep());
        // Depth is nesting, not a count: many closed blocks are fine.
        check(&"path \"a/*\" { capabilities = [\"read\"] }\n".repeat(1000)).unwrap();
    }

    #[test]
    fn brackets_in_strings_comments_and_heredocs_are_not_structure() {
        let policy = "
# {{{{{{{{{{ [[[[[[[[[[
// ((((((((((
/* {{{{{{{{{{ */
path \"secret/data/{{identity.entity.id}}/{{{{{{{{{{/*\" {
  capabilities = [\"read\", \"[[[[[[[[[[\", \"\\\"{{{{{{{{{{\", \"$${{{{{{{{{{{\"]
  comment = <<EOT
{{{{{{{{{{ ${\"x\"} %{ if true }y%{ endif }
  EOTX is not the end
EOT
}
";
        check(policy).unwrap();
        if let Err(e) = crate::Policy::parse("p", policy) {
            // The policy may be refused for its content, never for nesting.
            assert_ne!(e.to_string(), too_deep());
        }
    }

    #[test]
    fn closers_in_strings_do_not_hide_openers() {
        let deep = format!("e = {}1", "{\"}}}}]]])))\" = ".repeat(MAX_NESTING + 1));
        assert_eq!(err(&deep), too_deep());
        // A mismatched closer does not lower the count either.
        let mismatched = format!("e = {}", "{)]".repeat(MAX_NESTING + 1));
        assert_eq!(err(&mismatched), too_deep());
    }

    #[test]
    fn templates_count_as_nesting() {
        let deep = format!("e = {}x", "\"${".repeat(MAX_NESTING + 1));
        assert_eq!(err(&deep), too_deep());
        let deep = format!("e = <<EOT\n{}\nEOT\n", "%{ if ".repeat(MAX_NESTING + 1));
        assert_eq!(err(&deep), too_deep());
        // `$${` and `%%{` are literal text.
        check(&format!("e = \"{}\"", "$${%%{".repeat(20))).unwrap();
    }

    #[test]
    fn text_after_a_heredoc_end_marker_is_structure() {
        // hcl-edit ends the heredoc at `EOT` and parses the rest of the line.
        let deep = format!(
            "e = <<EOT\nx\n  EOT + {}1\n",
            "{p/a/".repeat(MAX_NESTING + 1)
        );
        assert_eq!(err(&deep), too_deep());
        let deep = format!("e = <<-EOT\nx\nEOT){}\n", "[".repeat(MAX_NESTING + 1));
        assert_eq!(err(&deep), too_deep());
        // `EOTX` continues an identifier: still inside the heredoc.
        check(&format!("e = <<EOT\nEOTX {}\nEOT\n", "[".repeat(20))).unwrap();
    }

    #[test]
    fn unreadable_heredoc_headers_are_refused() {
        let unclear = "a heredoc must be <<MARKER or <<-MARKER (ASCII letters, digits, _ and -) \
                       followed by a line end, and hold at least one line";
        for text in [
            "e = <<EOT x\nEOT\n",
            "e = <<\nEOT\n",
            "e = <<1EOT\nEOT\n",
            "e = <<\u{c9}OT\n\u{c9}OT\n",
            "e = <<EOT",
            "e = <<EOT\nx\nEOT\u{e9}\nEOT\n",
            // hcl-edit ends a heredoc on its first line only when no later
            // line ends it: the review's bypass, where it ends on line 3
            // and the guard (ending it on line 1) saw a string to the end
            "e = <<EOT\nEOT \"\nEOT / s/a/{p/a/{p/a/{p/a/{p/a/{p/a/{p/a/{p/a/{p/a/{p/a/{p",
            "e = <<EOT\nEOT\n",
            "e = <<-EOT\n  EOT\n[[[[[[[[[[ ]]]]]]]]]]\nEOT\n",
        ] {
            assert_eq!(err(text), unclear, "{text:?}");
        }
        check("e = <<EOT\r\nx\r\nEOT\r\n").unwrap();
    }
}
