//! The merged ACL of a token's policies and the path lookup (Vault's `NewACL`,
//! `AllowOperation` and `CheckAllowedFromNonExactPaths`).

use std::cmp::Ordering;
use std::collections::HashMap;

use crate::{Capabilities, Policy};

/// The merged ACL of all policies attached to a token.
#[derive(Clone, Debug, Default)]
pub struct Acl {
    root: bool,
    /// Patterns without wildcards, matched by equality.
    exact: HashMap<String, Capabilities>,
    /// `foo/*` patterns without `+` segments, keyed by the text before `*`.
    prefix: HashMap<String, Capabilities>,
    /// Patterns Vault classifies as having segment wildcards (possibly also
    /// ending in `*`).
    segment: Vec<SegmentRule>,
}

#[derive(Clone, Debug)]
struct SegmentRule {
    /// Pattern without its trailing `*`.
    wc_path: String,
    /// `wc_path` split on `/`.
    parts: Vec<String>,
    is_prefix: bool,
    /// Byte index of the first `+` in the full pattern (Vault's
    /// `strings.Index(path, "+")`, which also finds a `+` inside a segment).
    first_wc: usize,
    /// How many whole segments are exactly `+`.
    wildcards: usize,
    caps: Capabilities,
}

/// A glob or segment-wildcard rule that matched, with what the priority
/// rules compare.
struct Candidate<'a> {
    first_wc_or_glob: usize,
    is_prefix: bool,
    wildcards: usize,
    wc_path: &'a str,
    caps: Capabilities,
}

impl Candidate<'_> {
    /// Vault's documented priority; `Greater` means `self` wins. The rules are
    /// applied in order, each only when the previous ones tie:
    /// 1. the first `+` or `*` occurring later wins;
    /// 2. a pattern not ending in `*` beats one that does;
    /// 3. fewer `+` segments win;
    /// 4. the longer pattern wins;
    /// 5. the lexicographically greater pattern wins (arbitrary but total).
    fn priority(&self, other: &Self) -> Ordering {
        self.first_wc_or_glob
            .cmp(&other.first_wc_or_glob)
            .then_with(|| other.is_prefix.cmp(&self.is_prefix))
            .then_with(|| other.wildcards.cmp(&self.wildcards))
            .then_with(|| self.wc_path.len().cmp(&other.wc_path.len()))
            .then_with(|| self.wc_path.cmp(other.wc_path))
    }
}

/// Vault's test for "this pattern has segment wildcards".
fn has_segment_wildcards(pattern: &str) -> bool {
    pattern == "+" || pattern.contains("/+") || pattern.starts_with("+/")
}

impl Acl {
    /// Merges the policies' rules. A policy named `root` makes this a root ACL.
    ///
    /// Rules with the identical pattern (from any policies, or repeated in one)
    /// are merged: capabilities are unioned, and an explicit deny in any of
    /// them makes the merged rule exactly `{deny}`. Different patterns are
    /// never merged; the lookup picks one of them.
    pub fn new(policies: &[&Policy]) -> Acl {
        let mut acl = Acl::default();
        let mut segment: HashMap<&str, Capabilities> = HashMap::new();
        for policy in policies {
            if policy.name == "root" {
                acl.root = true;
            }
            for rule in &policy.rules {
                let pattern = rule.pattern.as_str();
                let slot = if has_segment_wildcards(pattern) {
                    segment.entry(pattern).or_default()
                } else if let Some(prefix) = pattern.strip_suffix('*') {
                    acl.prefix.entry(prefix.to_owned()).or_default()
                } else {
                    acl.exact.entry(pattern.to_owned()).or_default()
                };
                *slot = slot.merged(rule.caps);
            }
        }
        acl.segment = segment
            .into_iter()
            .map(|(pattern, caps)| {
                let (wc_path, is_prefix) = match pattern.strip_suffix('*') {
                    Some(stripped) => (stripped, true),
                    None => (pattern, false),
                };
                let parts: Vec<String> = wc_path.split('/').map(str::to_owned).collect();
                SegmentRule {
                    wc_path: wc_path.to_owned(),
                    wildcards: parts.iter().filter(|p| *p == "+").count(),
                    parts,
                    is_prefix,
                    first_wc: pattern.find('+').unwrap_or(0),
                    caps,
                }
            })
            .collect();
        acl
    }

    /// Allows everything, including sudo.
    pub fn root() -> Acl {
        Acl {
            root: true,
            ..Acl::default()
        }
    }

    pub fn is_root(&self) -> bool {
        self.root
    }

    /// Effective capabilities on a request path (no leading slash, e.g.
    /// `"secret/data/foo"`). `list` is true when the operation is a LIST.
    ///
    /// A root ACL gets [`Capabilities::all`] (callers wanting Vault's `["root"]`
    /// answer for `sys/capabilities` should check [`Acl::is_root`]). A result
    /// containing deny contains nothing else; no matching rule gives the empty
    /// set.
    pub fn capabilities(&self, path: &str, list: bool) -> Capabilities {
        if self.root {
            return Capabilities::all();
        }
        // Defence in depth, as in Vault: the router should already have
        // removed leading slashes.
        let path = path.trim_start_matches('/');
        self.lookup(path, list).unwrap_or_default()
    }

    fn lookup(&self, path: &str, list: bool) -> Option<Capabilities> {
        // An exact rule wins outright, whatever globs also match.
        if let Some(caps) = self.exact.get(path) {
            return Some(*caps);
        }
        let trimmed = path.strip_suffix('/');
        if list {
            // `LIST secret/foo/` is governed by a rule for `secret/foo`.
            if let Some(caps) = trimmed.and_then(|t| self.exact.get(t)) {
                return Some(*caps);
            }
            // Vault also tries the globs against the trimmed path first, so
            // `secret/+` covers `LIST secret/foo/`.
            if let Some(caps) = trimmed.and_then(|t| self.non_exact(t)) {
                return Some(caps);
            }
        }
        self.non_exact(path)
    }

    /// The capabilities of the single highest-priority glob or segment rule
    /// matching `path`, if any.
    fn non_exact(&self, path: &str) -> Option<Capabilities> {
        // Among plain prefix rules only the longest can win (rule 1), which is
        // what Vault's radix-tree `LongestPrefix` picks.
        let best_prefix = self
            .prefix
            .iter()
            .filter(|(prefix, _)| path.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(prefix, caps)| Candidate {
                first_wc_or_glob: prefix.len(),
                is_prefix: true,
                wildcards: 0,
                wc_path: prefix,
                caps: *caps,
            });

        let path_parts: Vec<&str> = path.split('/').collect();
        self.segment
            .iter()
            .filter(|rule| segment_rule_matches(rule, &path_parts))
            .map(|rule| Candidate {
                first_wc_or_glob: rule.first_wc,
                is_prefix: rule.is_prefix,
                wildcards: rule.wildcards,
                wc_path: &rule.wc_path,
                caps: rule.caps,
            })
            .chain(best_prefix)
            .max_by(|a, b| a.priority(b))
            .map(|winner| winner.caps)
    }
}

/// Vault's segment matching: `+` matches exactly one segment (whatever it
/// holds, even an empty one, as in Vault), other segments must be equal, and
/// for a pattern ending in `*` the last segment is a prefix and any further
/// path segments are accepted.
fn segment_rule_matches(rule: &SegmentRule, path_parts: &[&str]) -> bool {
    if path_parts.len() < rule.parts.len() {
        return false;
    }
    if !rule.is_prefix && path_parts.len() != rule.parts.len() {
        return false;
    }
    // `split` always yields at least one part, so this cannot underflow.
    let last = rule.parts.len() - 1;
    rule.parts
        .iter()
        .zip(path_parts)
        .enumerate()
        .all(|(i, (acl_part, path_part))| {
            acl_part == "+"
                || acl_part == path_part
                || (rule.is_prefix && i == last && path_part.starts_with(acl_part.as_str()))
        })
}
