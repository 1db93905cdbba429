//! Parsing Vault policy text, HCL or JSON ([`crate::json`]), into path rules
//! (Vault's `ParseACLPolicy` / `parsePaths`, minus the features we do not
//! enforce).

use hcl::{Block, BlockLabel, Body, Expression, Structure};

use crate::{Capabilities, Capability, PolicyError};

/// Path-block keys Vault understands but Palisade does not enforce yet. A
/// policy using one is rejected rather than loaded without the restriction:
/// silently granting what the author meant to narrow would fail open.
const UNSUPPORTED_KEYS: [&str; 8] = [
    "allowed_parameters",
    "denied_parameters",
    "required_parameters",
    "min_wrapping_ttl",
    "max_wrapping_ttl",
    "mfa_methods",
    "control_group",
    "subscribe_event_types",
];

/// One `path "<pattern>" { ... }` block after validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PathRule {
    /// The pattern with one leading `/` stripped (as Vault does); a trailing
    /// `*` is kept so the ACL can classify it.
    pub(crate) pattern: String,
    /// Already normalised: if it holds deny it holds nothing else.
    pub(crate) caps: Capabilities,
}

/// A parsed ACL policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    /// The text exactly as submitted (HCL or JSON); `sys/policies/acl/<name>`
    /// returns it.
    pub raw: String,
    pub(crate) rules: Vec<PathRule>,
}

impl Policy {
    /// Parse Vault policy text: HCL, or JSON when its first non-whitespace
    /// character is `{` (as Vault decides). `name` is lower-cased by the
    /// caller already.
    ///
    /// A policy without any `path` block is valid and grants nothing (Vault
    /// only rejects text that fails to parse or validate).
    ///
    /// HCL text longer than 64 KiB or nested deeper than 4 levels is refused
    /// before it is parsed (the HCL parser's time grows exponentially with
    /// unclosed nesting: see `nesting`).
    pub fn parse(name: &str, text: &str) -> Result<Policy, PolicyError> {
        if !crate::json::is_json(text) {
            crate::nesting::check(text)?;
        }
        Self::parse_unbounded(name, text)
    }

    /// [`Policy::parse`] without the size and nesting bounds: only for text
    /// accepted before (stored policies, which an older version may have
    /// accepted beyond today's bounds: refusing them would fail the unseal).
    pub fn parse_unbounded(name: &str, text: &str) -> Result<Policy, PolicyError> {
        let rules = if crate::json::is_json(text) {
            crate::json::parse_json(text)?
        } else {
            let body = hcl::parse(text).map_err(PolicyError::from_hcl)?;
            parse_body(&body)?
        };
        Ok(Policy {
            name: name.to_owned(),
            raw: text.to_owned(),
            rules,
        })
    }
}

fn parse_body(body: &Body) -> Result<Vec<PathRule>, PolicyError> {
    let mut rules = Vec::new();
    for structure in body.iter() {
        match structure {
            // Vault accepts and ignores a top-level name; the stored name wins.
            Structure::Attribute(attr) if attr.key() == "name" => {
                if !is_string_like(attr.expr()) {
                    return Err(PolicyError::Invalid("name must be a string".to_owned()));
                }
            }
            Structure::Block(block) if block.identifier() == "path" => {
                rules.push(parse_path(block)?);
            }
            Structure::Attribute(attr) if attr.key() == "path" => {
                return Err(PolicyError::Invalid(
                    "path must be a block: path \"<pattern>\" { capabilities = [...] }".to_owned(),
                ));
            }
            Structure::Attribute(attr) => {
                return Err(PolicyError::InvalidKey(attr.key().to_owned()));
            }
            Structure::Block(block) => {
                return Err(PolicyError::InvalidKey(block.identifier().to_owned()));
            }
        }
    }
    Ok(rules)
}

/// One `path "<pattern>" { ... }` block; JSON policies come through here too.
pub(crate) fn parse_path(block: &Block) -> Result<PathRule, PolicyError> {
    let [label] = block.labels() else {
        return Err(PolicyError::Invalid(format!(
            "path block must have exactly one label (the path pattern), found {}",
            block.labels().len()
        )));
    };
    let key = match label {
        BlockLabel::String(s) => s.as_str(),
        BlockLabel::Identifier(ident) => ident.as_str(),
    };
    let invalid = |reason: &str| PolicyError::InvalidPath {
        path: key.to_owned(),
        reason: reason.to_owned(),
    };

    // Vault renders `{{identity...}}` templates per token. We have no identity
    // store, and treating the braces literally would let a request for the
    // literal path match, while skipping the rule could drop a deny.
    if key.contains("{{") {
        return Err(invalid("templated policy paths are not supported"));
    }

    let mut caps = Capabilities::empty();
    for structure in block.body().iter() {
        let (name, expr) = match structure {
            Structure::Attribute(attr) => (attr.key(), Some(attr.expr())),
            Structure::Block(inner) => (inner.identifier(), None),
        };
        if UNSUPPORTED_KEYS.contains(&name) {
            return Err(PolicyError::Unsupported {
                path: key.to_owned(),
                key: name.to_owned(),
            });
        }
        match (name, expr) {
            ("capabilities", Some(Expression::Array(items))) => {
                for item in items {
                    let Expression::String(cap) = item else {
                        return Err(invalid("capabilities must be a list of strings"));
                    };
                    let cap =
                        Capability::parse(cap).ok_or_else(|| PolicyError::InvalidCapability {
                            path: key.to_owned(),
                            capability: cap.clone(),
                        })?;
                    caps.insert(cap);
                }
            }
            ("capabilities", _) => return Err(invalid("capabilities must be a list of strings")),
            ("policy", Some(Expression::String(legacy))) => {
                caps = caps.merged(legacy_capabilities(legacy).ok_or_else(|| {
                    PolicyError::InvalidPath {
                        path: key.to_owned(),
                        reason: format!("invalid policy {legacy:?}"),
                    }
                })?);
            }
            ("policy", _) => return Err(invalid("policy must be a string")),
            ("comment", Some(expr)) if is_string_like(expr) => {}
            ("comment", _) => return Err(invalid("comment must be a string")),
            _ => {
                return Err(PolicyError::InvalidPathKey {
                    path: key.to_owned(),
                    key: name.to_owned(),
                });
            }
        }
    }

    // Paths in Vault start after the `/` of the API path; Vault strips exactly
    // one leading slash from a pattern.
    let pattern = key.strip_prefix('/').unwrap_or(key);
    if pattern.contains("+*") {
        return Err(invalid("invalid use of wildcards ('+*' is forbidden)"));
    }

    Ok(PathRule {
        pattern: pattern.to_owned(),
        // An explicit deny replaces every other capability of the rule.
        caps: caps.merged(Capabilities::empty()),
    })
}

/// Pre-0.5 `policy = "..."` shorthands, mapped exactly as Vault does.
fn legacy_capabilities(policy: &str) -> Option<Capabilities> {
    use Capability::*;
    let list: &[Capability] = match policy {
        "deny" => &[Deny],
        "read" => &[Read, List],
        "write" => &[Create, Read, Update, Delete, List],
        "sudo" => &[Create, Read, Update, Delete, List, Sudo],
        _ => return None,
    };
    let mut caps = Capabilities::empty();
    for c in list {
        caps.insert(*c);
    }
    Some(caps)
}

/// A quoted string, with or without interpolation, or a heredoc. Used for
/// values we ignore (`name`, `comment`) but still want to be text.
fn is_string_like(expr: &Expression) -> bool {
    matches!(expr, Expression::String(_) | Expression::TemplateExpr(_))
}
