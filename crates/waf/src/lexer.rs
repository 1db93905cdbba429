//! SecLang configuration text → directives (name, arguments, file, line).
//!
//! The rules of Apache's configuration reader, which ModSecurity's files are
//! written for: a line ending in `\` continues on the next one; a line whose
//! first non-blank character is `#` is a comment; arguments are separated by
//! blanks and may be quoted with `"` or `'`; inside quotes, a backslash
//! before the quote character stands for it, and every other backslash is
//! kept as written (so `\\` and `\x5c` reach the regex compiler untouched).

use std::sync::Arc;

use crate::LoadError;

/// One directive, with where it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    pub file: Arc<str>,
    pub line: u32,
}

/// Split `text` (the content of `file`) into directives.
pub fn directives(text: &str, file: &Arc<str>) -> Result<Vec<Directive>, LoadError> {
    let mut out = Vec::new();
    let mut logical = String::new();
    let mut start = 0u32;
    for (i, raw) in text.lines().enumerate() {
        let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if logical.is_empty() {
            let t = line.trim_start();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            start = n;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                logical.push_str(head);
                continue;
            }
            None => logical.push_str(line),
        }
        out.push(directive(&logical, file, start)?);
        logical.clear();
    }
    if !logical.is_empty() {
        return Err(LoadError::at(
            file,
            start,
            "the file ends inside a continued line (a trailing `\\`)",
        ));
    }
    Ok(out)
}

fn directive(text: &str, file: &Arc<str>, line: u32) -> Result<Directive, LoadError> {
    let mut words = words(text).map_err(|m| LoadError::at(file, line, m))?;
    if words.is_empty() {
        return Err(LoadError::at(file, line, "an empty directive"));
    }
    let name = words.remove(0);
    Ok(Directive {
        name,
        args: words,
        file: file.clone(),
        line,
    })
}

/// Blank-separated words, quoted or bare.
pub(crate) fn words(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            return Ok(out);
        };
        let mut word = String::new();
        if first == '"' || first == '\'' {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                if c == '\\' && chars.peek() == Some(&first) {
                    word.push(first);
                    chars.next();
                } else if c == first {
                    closed = true;
                    break;
                } else {
                    word.push(c);
                }
            }
            if !closed {
                return Err(format!("unterminated {first}-quoted argument"));
            }
            if chars.peek().is_some_and(|c| !c.is_whitespace()) {
                return Err(format!(
                    "text right after a {first}-quoted argument (a missing blank?)"
                ));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        out.push(word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<(String, Vec<String>, u32)> {
        let f: Arc<str> = Arc::from("t.conf");
        directives(text, &f)
            .unwrap()
            .into_iter()
            .map(|d| (d.name, d.args, d.line))
            .collect()
    }

    #[test]
    fn continuations_comments_and_quotes() {
        let text = "# comment\n\nSecRule ARGS \"@rx a\\\"b\\\\c\" \\\n    \"id:1,\\\n    msg:'x'\"\n  # indented comment\nSecMarker END\n";
        assert_eq!(
            parse(text),
            vec![
                (
                    "SecRule".into(),
                    vec![
                        "ARGS".into(),
                        "@rx a\"b\\\\c".into(),
                        "id:1,    msg:'x'".into()
                    ],
                    3
                ),
                ("SecMarker".into(), vec!["END".into()], 7),
            ]
        );
    }

    #[test]
    fn malformed_text_names_the_line() {
        let f: Arc<str> = Arc::from("bad.conf");
        let e = directives("SecRule ARGS \"@rx a\n", &f).unwrap_err();
        assert_eq!(e.to_string(), "bad.conf:1: unterminated \"-quoted argument");
        let e = directives("\n\nSecRule ARGS \\\n", &f).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad.conf:3: the file ends inside a continued line (a trailing `\\`)"
        );
        let e = directives("SecRule \"a\"b\n", &f).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad.conf:1: text right after a \"-quoted argument (a missing blank?)"
        );
    }
}
