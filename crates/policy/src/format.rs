//! Canonical layout for `palisade policy fmt`.
//!
//! `hcl::format` alone would drop every comment (its `Body` has none), and an
//! in-place `fmt` that deletes a policy's documentation is worse than none.
//! So we walk hcl-edit's tree, which keeps comments in each node's "decor",
//! print the structure canonically (two-space indent, one attribute per line,
//! aligned `=`, one-line arrays, quoted labels, runs of blank lines collapsed
//! to one) and re-emit every comment next to the node it was attached to.

use hcl::edit::Decorate;
use hcl::edit::expr::{Array, Expression};
use hcl::edit::structure::{Attribute, Block, BlockLabel, Body, Structure};

use crate::{Policy, PolicyError};

const INDENT: &str = "  ";

/// Canonical formatting for `palisade policy fmt`.
///
/// The input must be a policy the server would accept (Vault's `policy fmt`
/// validates too). The output is checked to parse to exactly the same rules,
/// so formatting can never change what a policy grants.
///
/// A JSON policy is valid but not HCL: it is refused (left as it is) rather
/// than rewritten into another syntax.
pub fn format_hcl(hcl: &str) -> Result<String, PolicyError> {
    let before = Policy::parse("", hcl)?;
    if crate::json::is_json(hcl) {
        return Err(PolicyError::Invalid(
            "this is a JSON policy: only HCL policies are formatted".to_owned(),
        ));
    }
    let body = hcl::edit::parser::parse_body(hcl).map_err(|e| PolicyError::from_hcl(e.into()))?;

    let mut printer = Printer::default();
    printer.body(&body, 0)?;
    let out = printer.out;

    let after = Policy::parse("", &out)
        .map_err(|e| PolicyError::Format(format!("formatted output is invalid: {e}")))?;
    if after.rules != before.rules {
        return Err(PolicyError::Format(
            "formatted output would change the policy's rules".to_owned(),
        ));
    }
    Ok(out)
}

/// Comments and line breaks found in a decor string (which holds only
/// whitespace and comments).
#[derive(Debug, PartialEq)]
enum Piece {
    /// A comment on the same line as the preceding token.
    Trailing(String),
    /// A comment starting its own line.
    Line(String),
    /// An empty source line.
    Blank,
}

enum Trivia {
    Newline,
    Comment(String),
}

fn scan(raw: &str) -> Vec<Trivia> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(c) = rest.chars().next() {
        if c == '\n' {
            out.push(Trivia::Newline);
            rest = &rest[1..];
        } else if c.is_whitespace() {
            rest = &rest[c.len_utf8()..];
        } else if rest.starts_with("/*") {
            // the end is searched after the opening `/*` (`/*/` opens only)
            let end = rest[2..].find("*/").map_or(rest.len(), |i| i + 4);
            out.push(Trivia::Comment(rest[..end].to_owned()));
            rest = &rest[end..];
        } else {
            // `#` or `//` comment. Anything else would be a parser surprise;
            // keeping it as text beats silently dropping it.
            let end = rest.find('\n').unwrap_or(rest.len());
            out.push(Trivia::Comment(rest[..end].trim_end().to_owned()));
            rest = &rest[end..];
        }
    }
    out
}

/// `at_line_start`: whether the decor begins at the start of a line (true for
/// the prefix of a structure, false after `[` or `,` inside an array).
fn pieces(raw: &str, at_line_start: bool) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::new();
    let mut seen_newline = false;
    let mut line_has_content = !at_line_start;
    for trivia in scan(raw) {
        match trivia {
            Trivia::Newline => {
                if !line_has_content {
                    out.push(Piece::Blank);
                }
                line_has_content = false;
                seen_newline = true;
            }
            Trivia::Comment(c) if !seen_newline && !at_line_start => {
                out.push(Piece::Trailing(c));
                line_has_content = true;
            }
            Trivia::Comment(c) => {
                // A second comment on the same line stays on that line.
                match out.last_mut() {
                    Some(Piece::Line(prev)) if line_has_content => {
                        prev.push(' ');
                        prev.push_str(&c);
                    }
                    _ => out.push(Piece::Line(c)),
                }
                line_has_content = true;
            }
        }
    }
    out
}

fn comments(raw: &str) -> Vec<String> {
    scan(raw)
        .into_iter()
        .filter_map(|t| match t {
            Trivia::Comment(c) => Some(c),
            Trivia::Newline => None,
        })
        .collect()
}

fn decor_comments(node: &impl Decorate) -> Vec<String> {
    let decor = node.decor();
    let mut out = comments(decor.prefix().map_or("", |r| r));
    out.extend(comments(decor.suffix().map_or("", |r| r)));
    out
}

/// Whether a comment runs to the end of its line (`#` or `//`): nothing may
/// follow it on that line, or it would become part of the comment.
fn is_line_comment(c: &str) -> bool {
    c.starts_with('#') || c.starts_with("//")
}

/// Comments to append to a line (`# ...` after the code), with a leading
/// space. A comment after a line comment starts a new line at `indent`.
fn trailing_text(raw: Option<&str>, indent: &str) -> String {
    let mut out = String::new();
    let mut after_line_comment = false;
    for c in comments(raw.unwrap_or("")) {
        if after_line_comment {
            out.push('\n');
            out.push_str(indent);
        } else {
            out.push(' ');
        }
        after_line_comment = is_line_comment(&c);
        out.push_str(&c);
    }
    out
}

fn indent(depth: usize) -> String {
    INDENT.repeat(depth)
}

fn quote(s: &str) -> Result<String, PolicyError> {
    // hcl's own escaping (including `${` -> `$${`), so the text re-parses to
    // the same string.
    hcl::format::to_string(&s.to_owned()).map_err(|e| PolicyError::Format(e.to_string()))
}

#[derive(Default)]
struct Printer {
    out: String,
}

impl Printer {
    fn line(&mut self, depth: usize, text: &str) {
        self.out.push_str(&indent(depth));
        self.out.push_str(text);
        self.out.push('\n');
    }

    /// Writes leading comment lines; returns whether a blank line should
    /// separate them (or the previous structure) from what follows.
    /// `suppress_blank` drops blank lines at the start of a body.
    fn comment_pieces(&mut self, pieces: &[Piece], depth: usize, mut suppress_blank: bool) -> bool {
        let mut pending_blank = false;
        for piece in pieces {
            match piece {
                Piece::Blank => pending_blank = true,
                Piece::Line(c) | Piece::Trailing(c) => {
                    if pending_blank && !suppress_blank {
                        self.out.push('\n');
                    }
                    pending_blank = false;
                    suppress_blank = false;
                    self.line(depth, c);
                }
            }
        }
        pending_blank && !suppress_blank
    }

    fn body(&mut self, body: &Body, depth: usize) -> Result<(), PolicyError> {
        let structures: Vec<&Structure> = body.iter().collect();
        let widths = key_widths(&structures);
        for (i, structure) in structures.iter().enumerate() {
            let prefix = structure.decor().prefix().map_or("", |r| r);
            if self.comment_pieces(&pieces(prefix, true), depth, i == 0) {
                self.out.push('\n');
            }
            let trailing = trailing_text(structure.decor().suffix().map(|r| &**r), &indent(depth));
            match structure {
                Structure::Attribute(attr) => {
                    for c in attribute_inline_comments(attr) {
                        self.line(depth, &c);
                    }
                    let value = expr(&attr.value, depth)?;
                    let key = attr.key.as_str();
                    let pad = " ".repeat(widths[i].saturating_sub(key.len()));
                    self.line(depth, &format!("{key}{pad} = {value}{trailing}"));
                }
                Structure::Block(block) => self.block(block, depth, &trailing)?,
            }
        }
        // Comments after the last structure (before `}` or end of file);
        // trailing blank lines are dropped.
        let suffix = body.decor().suffix().map_or("", |r| r);
        self.comment_pieces(&pieces(suffix, true), depth, structures.is_empty());
        Ok(())
    }

    fn block(&mut self, block: &Block, depth: usize, trailing: &str) -> Result<(), PolicyError> {
        // Comments squeezed inside the header (`path /* x */ "a" {`) move
        // above it.
        let mut inline = decor_comments(&block.ident);
        let mut header = block.ident.as_str().to_owned();
        for label in &block.labels {
            inline.extend(decor_comments(label));
            header.push(' ');
            header.push_str(&quote(match label {
                BlockLabel::String(s) => s.as_str(),
                BlockLabel::Ident(ident) => ident.as_str(),
            })?);
        }
        for c in inline {
            self.line(depth, &c);
        }

        // A comment after `{` on the header line.
        let open = trailing_text(
            block.body.decor().prefix().map(|r| &**r),
            &indent(depth + 1),
        );
        let closing_comments = comments(block.body.decor().suffix().map_or("", |r| r));
        if block.body.is_empty() && open.is_empty() && closing_comments.is_empty() {
            self.line(depth, &format!("{header} {{}}{trailing}"));
            return Ok(());
        }
        self.line(depth, &format!("{header} {{{open}"));
        self.body(&block.body, depth + 1)?;
        self.line(depth, &format!("}}{trailing}"));
        Ok(())
    }
}

/// Comments between an attribute's key, `=` and value; they move above it.
fn attribute_inline_comments(attr: &Attribute) -> Vec<String> {
    let mut out = decor_comments(&attr.key);
    out.extend(decor_comments(&attr.value));
    out
}

/// `=` alignment: runs of consecutive attributes not separated by a comment
/// or blank line share the width of their longest key.
fn key_widths(structures: &[&Structure]) -> Vec<usize> {
    let key_len = |s: &Structure| match s {
        Structure::Attribute(attr) => Some(attr.key.as_str().len()),
        Structure::Block(_) => None,
    };
    let mut widths = vec![0; structures.len()];
    let mut i = 0;
    while i < structures.len() {
        let Some(first) = key_len(structures[i]) else {
            i += 1;
            continue;
        };
        let mut width = first;
        let mut j = i + 1;
        while let Some(s) = structures.get(j) {
            let prefix = s.decor().prefix().map_or("", |r| r);
            match key_len(s) {
                Some(len) if pieces(prefix, true).is_empty() => width = width.max(len),
                _ => break,
            }
            j += 1;
        }
        widths[i..j].fill(width);
        i = j;
    }
    widths
}

fn expr(e: &Expression, depth: usize) -> Result<String, PolicyError> {
    match e {
        Expression::Array(array) => array_text(array, depth),
        Expression::String(s) => quote(s.as_str()),
        // Templates and heredocs (only `comment`/`name` may hold them) are
        // kept verbatim: their text is their meaning.
        other => {
            let mut bare = other.clone();
            bare.decor_mut().clear();
            Ok(bare.to_string())
        }
    }
}

fn array_text(array: &Array, depth: usize) -> Result<String, PolicyError> {
    let elements: Vec<&Expression> = array.iter().collect();
    let has_comments = elements.iter().any(|e| !decor_comments(*e).is_empty())
        || !comments(array.trailing()).is_empty();
    if !has_comments {
        let items = elements
            .iter()
            .map(|e| expr(e, depth))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(format!("[{}]", items.join(", ")));
    }

    // Commented arrays go one element per line so each comment keeps its
    // place: own-line comments above their element, same-line ones after it.
    let inner = indent(depth + 1);
    // Each line, and whether it ends in a line comment (nothing may be
    // appended to it then).
    let mut lines: Vec<(String, bool)> = Vec::new();
    let place = |lines: &mut Vec<(String, bool)>, piece: Piece| match piece {
        Piece::Trailing(c) => match lines.last_mut() {
            Some((last, ends_in_line_comment)) if !*ends_in_line_comment => {
                last.push(' ');
                last.push_str(&c);
                *ends_in_line_comment = is_line_comment(&c);
            }
            _ => {
                let line_comment = is_line_comment(&c);
                lines.push((format!("{inner}{c}"), line_comment));
            }
        },
        Piece::Line(c) => {
            let line_comment = is_line_comment(&c);
            lines.push((format!("{inner}{c}"), line_comment));
        }
        Piece::Blank => {}
    };
    for element in elements {
        for piece in pieces(element.decor().prefix().map_or("", |r| r), false) {
            place(&mut lines, piece);
        }
        // Comments between the element and its comma go after the comma.
        let suffix = element.decor().suffix().map(|r| &**r);
        let after = trailing_text(suffix, &inner);
        let line_comment = comments(suffix.unwrap_or(""))
            .last()
            .is_some_and(|c| is_line_comment(c));
        lines.push((
            format!("{inner}{},{after}", expr(element, depth + 1)?),
            line_comment,
        ));
    }
    for piece in pieces(array.trailing(), false) {
        place(&mut lines, piece);
    }
    let lines: Vec<String> = lines.into_iter().map(|(l, _)| l).collect();
    Ok(format!("[\n{}\n{}]", lines.join("\n"), indent(depth)))
}
