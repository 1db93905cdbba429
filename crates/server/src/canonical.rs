//! Canonicalise before you authorise: the one place a request path becomes
//! the value that the ACL check, the audit record and the handler all see.
//!
//! [`CanonicalPath`] can only be built here. `Core` checks the ACL on it,
//! audits it and routes on it; no handler trims, lowercases or otherwise
//! rewrites a name it was given, so the name that was authorised is the name
//! that is acted on. Input that has no canonical form is refused with 400
//! before any token is looked up.
//!
//! The rules, in order:
//!
//! 1. The URI path is `/v1/` + a percent-encoded path: it must decode to
//!    UTF-8 of printable characters only (no control or format characters,
//!    no whitespace but the plain space: OpenBao refuses the same, so a
//!    `%C2%A0` or a zero-width space can never make a second name for a
//!    thing), and have no empty, `.` or `..` segment (one trailing `/` is
//!    allowed).
//! 2. LIST paths end in `/` (Vault appends it before the ACL check, so a
//!    `deny` on `secret/metadata/team/` covers `LIST secret/metadata/team`).
//! 3. Names the `sys/` handlers take from the path:
//!    - policy names (`sys/policy/<name>`, `sys/policies/acl/<name>`) must
//!      already be canonical: lowercase ASCII letters, digits and `-_.@`, at
//!      most 128 bytes. `ADMIN`, `admin%20` or `admin%C2%A0` are refused,
//!      never folded into `admin`;
//!    - mount paths (`sys/mounts/<path>`, `sys/mounts/<path>/tune`, and
//!      `sys/auth/<path>`, `sys/auth/<path>/tune` for auth methods) and audit
//!      device names (`sys/audit/<name>`, `sys/audit-hash/<name>`,
//!      `sys/audit-head/<name>`) lose one trailing `/` (the Vault CLI sends
//!      `sys/mounts/prod/`), so both spellings are checked against the rules
//!      for `sys/mounts/prod`; whitespace in them is refused;
//!    - token role names (`auth/token/roles/<name>`,
//!      `auth/token/create/<name>`) must be Vault's generic names
//!      (`\w(([\w-.]+)?\w)?`), case kept as in Vault.
//!
//! Everything else (KV keys above all) is taken as written: those handlers
//! never rewrite a key, and Vault's KV keys may hold spaces and capitals.

use crate::logical::{ApiError, Operation};

/// A request path in canonical form: no leading `/`, no `/v1/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanonicalPath(String);

impl CanonicalPath {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CanonicalPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for CanonicalPath {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// Longest request path accepted (after `/v1/`, percent-encoded): every
/// refused request is audited with its path, so an unbounded path would let
/// an unauthenticated client write large audit lines at will.
pub const MAX_PATH_BYTES: usize = 4096;

/// Longest policy name accepted.
const MAX_POLICY_NAME: usize = 128;

pub(crate) fn percent_decode(s: &str, plus_is_space: bool) -> Result<Vec<u8>, ()> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3).ok_or(())?;
                let hex = std::str::from_utf8(hex).map_err(|_| ())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// The decoded path after `/v1/`, checked for rule 1 (not yet canonical).
fn decode(raw: &str) -> Result<String, ApiError> {
    let rest = raw
        .strip_prefix("/v1/")
        .ok_or_else(ApiError::unsupported_path)?;
    if rest.len() > MAX_PATH_BYTES {
        return Err(ApiError::new(414, "request path too long"));
    }
    let bytes = percent_decode(rest, false)
        .map_err(|_| ApiError::bad_request("invalid percent-encoding in path"))?;
    let path =
        String::from_utf8(bytes).map_err(|_| ApiError::bad_request("invalid UTF-8 in path"))?;
    if !path.chars().all(is_printable) {
        return Err(ApiError::bad_request("invalid character in path"));
    }
    let body = path.strip_suffix('/').unwrap_or(&path);
    if body.is_empty() {
        return Err(ApiError::unsupported_path());
    }
    if body
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(ApiError::bad_request(
            "invalid path: empty, '.' or '..' segments are not allowed",
        ));
    }
    Ok(path)
}

/// Go's `unicode.IsPrint` as far as names can hide: no control characters,
/// no whitespace but U+0020, no format characters (zero-width spaces and
/// joiners, bidirectional controls, the byte-order mark, soft hyphen, tags).
pub(crate) fn is_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(c,
        '\u{00AD}'
        | '\u{0600}'..='\u{0605}'
        | '\u{061C}'
        | '\u{06DD}'
        | '\u{070F}'
        | '\u{0890}'..='\u{0891}'
        | '\u{08E2}'
        | '\u{180E}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}'
        | '\u{110BD}'
        | '\u{110CD}'
        | '\u{13430}'..='\u{1343F}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0001}'
        | '\u{E0020}'..='\u{E007F}'
        // private use and noncharacters: nothing a name should hold
        | '\u{E000}'..='\u{F8FF}'
        | '\u{F0000}'..='\u{10FFFF}'
    )
}

/// Vault's characters for a policy name, already lowercase.
pub fn is_canonical_policy_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_POLICY_NAME
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"-_.@".contains(&c))
}

/// The error for a policy name that is not canonical. The name itself is
/// not echoed: it is in the request path, which the audit record holds.
pub fn invalid_policy_name() -> ApiError {
    ApiError::bad_request(
        "invalid policy name: use lowercase letters, digits and - _ . @ (at most 128 characters)",
    )
}

/// A mount path or audit device name taken from a `sys/` path, without its
/// trailing `/`. Whitespace (any Unicode space, `%20`, `%C2%A0`...) is refused.
fn param<'a>(name: &'a str, what: &'static str) -> Result<&'a str, ApiError> {
    let name = name.strip_suffix('/').unwrap_or(name);
    if name.is_empty() {
        return Err(ApiError::bad_request(format!("missing {what}")));
    }
    if name.chars().any(char::is_whitespace) {
        return Err(ApiError::bad_request(format!(
            "invalid {what}: whitespace is not allowed"
        )));
    }
    Ok(name)
}

/// Turn the URI path of a request into its canonical form, or refuse it.
pub fn canonicalise(operation: Operation, uri_path: &str) -> Result<CanonicalPath, ApiError> {
    let mut path = decode(uri_path)?;
    if operation == Operation::List && !path.ends_with('/') {
        path.push('/');
    }
    if let Some(rest) = path.strip_prefix("sys/")
        && let Some(c) = sys_param(operation, rest)?
    {
        return Ok(CanonicalPath(format!("sys/{c}")));
    }
    token_role_param(operation, &path)?;
    Ok(CanonicalPath(path))
}

/// Rule 3 for the `sys/` routes that take a name from the path; `None` when
/// `rest` is not one of them.
fn sys_param(operation: Operation, rest: &str) -> Result<Option<String>, ApiError> {
    for prefix in ["policy/", "policies/acl/"] {
        if let Some(name) = rest.strip_prefix(prefix) {
            // `LIST sys/policy/` is the listing; LIST of one policy is not an
            // operation (405), so its name is never acted on
            if operation == Operation::List {
                return Ok(None);
            }
            if !is_canonical_policy_name(name) {
                return Err(invalid_policy_name());
            }
            return Ok(None);
        }
    }
    for (prefix, what) in [("mounts/", "mount path"), ("auth/", "auth method path")] {
        if let Some(p) = rest.strip_prefix(prefix) {
            if operation == Operation::List {
                return Ok(None);
            }
            // one trailing `/`, as everywhere in this module
            let (p, tune) = match p.strip_suffix('/').unwrap_or(p).strip_suffix("/tune") {
                Some(p) => (p, true),
                None => (p, false),
            };
            let p = param(p, what)?;
            return Ok(Some(if tune {
                format!("{prefix}{p}/tune")
            } else {
                format!("{prefix}{p}")
            }));
        }
    }
    for prefix in ["audit/", "audit-hash/", "audit-head/"] {
        if let Some(name) = rest.strip_prefix(prefix) {
            if operation == Operation::List {
                return Ok(None);
            }
            let name = param(name, "audit device path")?;
            return Ok(Some(format!("{prefix}{name}")));
        }
    }
    Ok(None)
}

/// Rule 3 for token role names (`auth/token/roles/<name>`,
/// `auth/token/create/<name>`): Vault's `\w(([\w-.]+)?\w)?`, taken as
/// written (role names are case-sensitive in Vault too); anything else is
/// refused before the ACL sees it. `LIST auth/token/roles/` is the listing.
fn token_role_param(operation: Operation, path: &str) -> Result<(), ApiError> {
    let Some(rest) = path.strip_prefix("auth/token/") else {
        return Ok(());
    };
    if operation == Operation::List || rest == "roles/" {
        return Ok(());
    }
    let name = rest
        .strip_prefix("roles/")
        .or_else(|| rest.strip_prefix("create/"));
    match name {
        Some(n) if !crate::token_roles::is_canonical_role_name(n) => {
            Err(crate::token_roles::invalid_role_name())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(op: Operation, p: &str) -> Result<String, ApiError> {
        canonicalise(op, p).map(|c| c.0)
    }

    #[test]
    fn decoding_rules() {
        use Operation::*;
        assert_eq!(c(Read, "/v1/secret/data/a%20b").unwrap(), "secret/data/a b");
        assert_eq!(c(Read, "/v1/secret/metadata/").unwrap(), "secret/metadata/");
        let dots =
            ApiError::bad_request("invalid path: empty, '.' or '..' segments are not allowed");
        assert_eq!(c(Read, "/v1/secret/../sys/seal").unwrap_err(), dots);
        assert_eq!(c(Read, "/v1/secret/%2e%2e/sys").unwrap_err(), dots);
        assert_eq!(c(Read, "/v1/secret//x").unwrap_err(), dots);
        assert_eq!(c(Read, "/v1/secret/./x").unwrap_err(), dots);
        assert_eq!(
            c(Read, "/v1/secret/%ff").unwrap_err(),
            ApiError::bad_request("invalid UTF-8 in path")
        );
        assert_eq!(
            c(Read, "/v1/secret/%00").unwrap_err(),
            ApiError::bad_request("invalid character in path")
        );
        for hidden in [
            "%C2%85",
            "%C2%A0",
            "%09",
            "%E2%80%8B",
            "%E2%80%AE",
            "%EF%BB%BF",
            "%C2%AD",
            "%E3%80%80",
            "%0A",
        ] {
            assert_eq!(
                c(Read, &format!("/v1/secret/data/a{hidden}")).unwrap_err(),
                ApiError::bad_request("invalid character in path"),
                "{hidden}"
            );
        }
        // a plain space and non-ASCII letters are names like any other
        assert_eq!(c(Read, "/v1/secret/data/a%20b").unwrap(), "secret/data/a b");
        assert_eq!(
            c(Read, "/v1/secret/data/caf%C3%A9").unwrap(),
            "secret/data/café"
        );
        assert_eq!(
            c(Read, "/v1/a%zz").unwrap_err(),
            ApiError::bad_request("invalid percent-encoding in path")
        );
        assert_eq!(c(Read, "/v2/x").unwrap_err(), ApiError::unsupported_path());
        let long = format!("/v1/secret/data/{}", "a".repeat(MAX_PATH_BYTES));
        assert_eq!(
            c(Read, &long).unwrap_err(),
            ApiError::new(414, "request path too long")
        );
        let fits = format!("/v1/{}", "a".repeat(MAX_PATH_BYTES));
        assert!(c(Read, &fits).is_ok());
    }

    #[test]
    fn list_paths_end_in_a_slash() {
        use Operation::*;
        assert_eq!(
            c(List, "/v1/secret/metadata/team").unwrap(),
            "secret/metadata/team/"
        );
        assert_eq!(
            c(List, "/v1/secret/metadata/team/").unwrap(),
            "secret/metadata/team/"
        );
        assert_eq!(c(List, "/v1/sys/policy").unwrap(), "sys/policy/");
        assert_eq!(
            c(Read, "/v1/secret/metadata/team").unwrap(),
            "secret/metadata/team"
        );
    }

    #[test]
    fn policy_names_must_already_be_canonical() {
        use Operation::*;
        assert_eq!(
            c(Write, "/v1/sys/policy/admin").unwrap(),
            "sys/policy/admin"
        );
        assert_eq!(
            c(Write, "/v1/sys/policies/acl/a-b_c.d@e").unwrap(),
            "sys/policies/acl/a-b_c.d@e"
        );
        for bad in [
            "/v1/sys/policy/ADMIN",
            "/v1/sys/policy/Admin",
            "/v1/sys/policy/admin%20",
            "/v1/sys/policy/%20admin",
            "/v1/sys/policy/adminé",
            "/v1/sys/policy/admin/",
            "/v1/sys/policies/acl/ADMIN",
            "/v1/sys/policies/acl/admin/",
            "/v1/sys/policies/acl/a/b",
        ] {
            for op in [Read, Write, Delete] {
                assert_eq!(
                    c(op, bad).unwrap_err(),
                    invalid_policy_name(),
                    "{op:?} {bad}"
                );
            }
        }
        let long = format!("/v1/sys/policy/{}", "a".repeat(129));
        assert_eq!(c(Write, &long).unwrap_err(), invalid_policy_name());
        assert_eq!(
            c(List, "/v1/sys/policies/acl/").unwrap(),
            "sys/policies/acl/"
        );
    }

    #[test]
    fn mount_and_audit_names_lose_one_trailing_slash() {
        use Operation::*;
        for op in [Read, Write, Delete] {
            assert_eq!(c(op, "/v1/sys/mounts/prod/").unwrap(), "sys/mounts/prod");
            assert_eq!(c(op, "/v1/sys/mounts/prod").unwrap(), "sys/mounts/prod");
            assert_eq!(c(op, "/v1/sys/mounts/a/b/").unwrap(), "sys/mounts/a/b");
            assert_eq!(
                c(op, "/v1/sys/mounts/prod/tune").unwrap(),
                "sys/mounts/prod/tune"
            );
            assert_eq!(
                c(op, "/v1/sys/mounts/prod/tune/").unwrap(),
                "sys/mounts/prod/tune"
            );
            assert_eq!(c(op, "/v1/sys/auth/token/").unwrap(), "sys/auth/token");
            assert_eq!(
                c(op, "/v1/sys/auth/token/tune/").unwrap(),
                "sys/auth/token/tune"
            );
            assert_eq!(
                c(op, "/v1/sys/auth/token/tune").unwrap(),
                "sys/auth/token/tune"
            );
            assert_eq!(c(op, "/v1/sys/audit/file/").unwrap(), "sys/audit/file");
            assert_eq!(
                c(op, "/v1/sys/audit-hash/file/").unwrap(),
                "sys/audit-hash/file"
            );
            assert_eq!(
                c(op, "/v1/sys/audit-head/file/").unwrap(),
                "sys/audit-head/file"
            );
        }
        for bad in [
            "/v1/sys/mounts/prod%20",
            "/v1/sys/mounts/prod%20/",
            "/v1/sys/mounts/%20prod/tune",
        ] {
            assert_eq!(
                c(Delete, bad).unwrap_err(),
                ApiError::bad_request("invalid mount path: whitespace is not allowed"),
                "{bad}"
            );
        }
        assert_eq!(
            c(Read, "/v1/sys/auth/token%20/tune").unwrap_err(),
            ApiError::bad_request("invalid auth method path: whitespace is not allowed")
        );
        assert_eq!(c(Read, "/v1/sys/auth").unwrap(), "sys/auth");
        assert_eq!(c(List, "/v1/sys/auth").unwrap(), "sys/auth/");
        assert_eq!(
            c(Delete, "/v1/sys/audit/file%20").unwrap_err(),
            ApiError::bad_request("invalid audit device path: whitespace is not allowed")
        );
        assert_eq!(
            c(Delete, "/v1/sys/audit/").unwrap_err(),
            ApiError::bad_request("missing audit device path")
        );
        // a case variant is another (case-sensitive) name, kept as written
        assert_eq!(c(Delete, "/v1/sys/mounts/PROD").unwrap(), "sys/mounts/PROD");
    }
}
