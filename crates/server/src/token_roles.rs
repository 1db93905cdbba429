//! Token roles (`auth/token/roles/<name>`), stored behind the barrier at
//! `sys/token/roles/<name>`, and the policy rules of `auth/token/create/<name>`
//! (Vault's token store: `tokenStoreRoleCreateUpdate`, `handleCreateCommon`).
//!
//! Role names are canonical before the ACL sees them (`canonical.rs`): Vault's
//! `\w(([\w-.]+)?\w)?`, case-sensitive as in Vault, nothing folded.

use palisade_barrier::Barrier;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::logical::{ApiError, Operation, Request, fields};

pub const ROLES_PREFIX: &str = "sys/token/roles/";

/// Vault's `GenericNameRegex`: `\w(([\w-.]+)?\w)?` (ASCII word characters).
pub fn is_canonical_role_name(name: &str) -> bool {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let b = name.as_bytes();
    match b {
        [] => false,
        [c] => word(*c),
        [first, mid @ .., last] => {
            word(*first) && word(*last) && mid.iter().all(|&c| word(c) || c == b'-' || c == b'.')
        }
    }
}

/// The answer for a role name that is not canonical: Vault's router has no
/// route for it (404 `unsupported path`); here it comes before the ACL check.
pub fn invalid_role_name() -> ApiError {
    ApiError::unsupported_path()
}

/// A token role, as stored. Durations in seconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct TokenRole {
    pub name: String,
    pub allowed_policies: Vec<String>,
    pub disallowed_policies: Vec<String>,
    pub allowed_policies_glob: Vec<String>,
    pub disallowed_policies_glob: Vec<String>,
    pub orphan: bool,
    /// The deprecated `period` as given (read back as given).
    pub period: i64,
    pub token_period: i64,
    /// The deprecated `explicit_max_ttl` as given.
    pub explicit_max_ttl: i64,
    pub token_explicit_max_ttl: i64,
    pub path_suffix: String,
    pub renewable: bool,
    /// None until set (read back as `null`, as OpenBao).
    pub allowed_entity_aliases: Option<Vec<String>>,
    /// `service` or `default-service` (only service tokens exist here).
    pub token_type: String,
    pub token_no_default_policy: bool,
    pub token_num_uses: i64,
}

impl TokenRole {
    /// The period tokens of this role get (`token_period`, else the
    /// deprecated `period`, as Vault upgrades stored roles).
    pub fn effective_period(&self) -> i64 {
        if self.token_period > 0 {
            self.token_period
        } else {
            self.period
        }
    }

    pub fn effective_explicit_max_ttl(&self) -> i64 {
        if self.token_explicit_max_ttl > 0 {
            self.token_explicit_max_ttl
        } else {
            self.explicit_max_ttl
        }
    }

    /// What `GET auth/token/roles/<name>` answers (OpenBao's fields).
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "period": self.period,
            "token_period": self.token_period,
            "explicit_max_ttl": self.explicit_max_ttl,
            "token_explicit_max_ttl": self.token_explicit_max_ttl,
            "disallowed_policies": self.disallowed_policies,
            "allowed_policies": self.allowed_policies,
            "disallowed_policies_glob": self.disallowed_policies_glob,
            "allowed_policies_glob": self.allowed_policies_glob,
            "name": self.name,
            "orphan": self.orphan,
            "path_suffix": self.path_suffix,
            "renewable": self.renewable,
            "token_type": self.token_type,
            "allowed_entity_aliases": self.allowed_entity_aliases,
            "token_no_default_policy": self.token_no_default_policy,
        });
        if self.token_num_uses > 0 {
            v["token_num_uses"] = json!(self.token_num_uses);
        }
        v
    }
}

fn key(name: &str) -> String {
    format!("{ROLES_PREFIX}{name}")
}

pub async fn get(barrier: &Barrier, name: &str) -> Result<Option<TokenRole>, ApiError> {
    match barrier.get(&key(name)).await? {
        None => Ok(None),
        Some(b) => Ok(Some(
            serde_json::from_slice(&b).map_err(ApiError::internal)?,
        )),
    }
}

pub async fn list(barrier: &Barrier) -> Result<Vec<String>, ApiError> {
    let mut names = barrier.list(ROLES_PREFIX).await?;
    names.sort();
    Ok(names)
}

pub async fn delete(barrier: &Barrier, name: &str) -> Result<(), ApiError> {
    // under the writes' lock: an update decided before the delete must not
    // bring the role back afterwards (that would be a create with `update`)
    let _g = WRITES.lock().await;
    Ok(barrier.delete(&key(name)).await?)
}

async fn put(barrier: &Barrier, role: &TokenRole) -> Result<(), ApiError> {
    let bytes = serde_json::to_vec(role).map_err(ApiError::internal)?;
    Ok(barrier.put(&key(&role.name), &bytes).await?)
}

/// Vault's `policyutil.SanitizePolicies`: trimmed, lowercase, no empty
/// names; `root` alone when present; `default` added when asked (not beside
/// `root`); sorted and deduplicated.
pub fn sanitize_policies(list: &[String], add_default: bool) -> Vec<String> {
    let mut out: Vec<String> = list
        .iter()
        .map(|p| p.trim().to_lowercase())
        .filter(|p| !p.is_empty())
        .collect();
    if out.iter().any(|p| p == "root") {
        return vec!["root".into()];
    }
    if add_default && !out.iter().any(|p| p == "default") {
        out.push("default".into());
    }
    out.sort();
    out.dedup();
    out
}

/// Vault's `strutil.RemoveDuplicates(list, true)`: lowercase, trimmed, no
/// empty entries, sorted, deduplicated.
fn lower_dedup(list: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = list
        .into_iter()
        .map(|p| p.to_lowercase().trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `*` globbing as Vault's `StrListContainsGlob` (ryanuber/go-glob).
pub fn glob_match(pattern: &str, s: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

pub fn glob_any(patterns: &[String], s: &str) -> bool {
    patterns.iter().any(|p| glob_match(p, s))
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
pub fn go_quote_list(list: &[String]) -> String {
    let inner: Vec<String> = list.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", inner.join(" "))
}

/// `\w[\w-.]+\w`, the whole suffix (Vault matches it anywhere in the
/// suffix; here the suffix must be exactly that, so it never holds `/`,
/// whitespace or anything a token path should not).
fn valid_path_suffix(s: &str) -> bool {
    s.len() >= 3 && is_canonical_role_name(s)
}

fn list_field(req: &Request, name: &str) -> Result<Option<Vec<String>>, ApiError> {
    req.data
        .get(name)
        .map(|v| fields::string_list(v, name))
        .transpose()
}

fn duration_field(req: &Request, name: &str) -> Result<Option<i64>, ApiError> {
    req.data
        .get(name)
        .map(|v| fields::duration_secs(v, name))
        .transpose()
}

fn bool_field(req: &Request, name: &str) -> Result<Option<bool>, ApiError> {
    req.data
        .get(name)
        .map(|v| fields::boolean(v, name))
        .transpose()
}

/// `POST auth/token/roles/<name>`: create (fields not given take Vault's
/// defaults) or update (fields not given keep their value). Returns the
/// warnings (Vault answers 200 with them, else 204).
/// Role writes are serialised: an update never loses a field another update
/// wrote meanwhile, and create-or-update is decided once, under the lock.
static WRITES: std::sync::LazyLock<tokio::sync::Mutex<()>> =
    std::sync::LazyLock::new(|| tokio::sync::Mutex::new(()));

/// `may(create)`: whether the caller may create (`true`) or update
/// (`false`) the role, decided again here: the ACL check ran on the
/// existence seen before the request's body was read, and a role created
/// meanwhile must not be overwritten with `create` alone.
pub async fn write(
    barrier: &Barrier,
    req: &Request,
    name: &str,
    system_max_ttl: i64,
    may: impl Fn(bool) -> bool,
) -> Result<Vec<String>, ApiError> {
    debug_assert!(req.operation == Operation::Write);
    let _g = WRITES.lock().await;
    let existing = get(barrier, name).await?;
    let create = existing.is_none();
    if !may(create) {
        return Err(ApiError::permission_denied());
    }
    let mut role = existing.unwrap_or_else(|| TokenRole {
        name: name.to_string(),
        token_type: "default-service".into(),
        ..TokenRole::default()
    });
    let mut warnings = Vec::new();

    if let Some(v) = bool_field(req, "orphan")? {
        role.orphan = v;
    } else if create {
        role.orphan = false;
    }
    if let Some(v) = bool_field(req, "renewable")? {
        role.renewable = v;
    } else if create {
        role.renewable = true;
    }
    if let Some(v) = req.data.get("path_suffix") {
        let s = fields::string(v, "path_suffix")?;
        if s.contains("..") {
            return Err(ApiError::bad_request(
                "error registering path suffix: path cannot contain parent references",
            ));
        }
        if !s.is_empty() && !valid_path_suffix(&s) {
            return Err(ApiError::bad_request(
                r"given role path suffix contains invalid characters; must match \w[\w-.]+\w",
            ));
        }
        role.path_suffix = s;
    }
    if let Some(v) = list_field(req, "allowed_policies")? {
        role.allowed_policies = sanitize_policies(&v, false);
    }
    if let Some(v) = list_field(req, "disallowed_policies")? {
        role.disallowed_policies = lower_dedup(v);
    }
    if let Some(v) = list_field(req, "allowed_policies_glob")? {
        role.allowed_policies_glob = sanitize_policies(&v, false);
    }
    if let Some(v) = list_field(req, "disallowed_policies_glob")? {
        role.disallowed_policies_glob = lower_dedup(v);
    }
    if let Some(v) = req.data.get("token_type") {
        let t = match v {
            Value::Null => {
                return Err(ApiError::bad_request("Invalid 'token_type' value: null"));
            }
            v => fields::string(v, "token_type")?,
        };
        role.token_type = match t.as_str() {
            "service" | "default-service" => t,
            "batch" | "default-batch" => {
                return Err(ApiError::bad_request(format!(
                    "'token_type' {t:?} is not supported: this server issues service tokens only (use \"service\" or \"default-service\")"
                ))
                .audited_as("'token_type' batch is not supported"));
            }
            _ => {
                return Err(
                    ApiError::bad_request(format!("invalid 'token_type' value {t:?}"))
                        .audited_as("invalid 'token_type' value"),
                );
            }
        };
    }
    // roles do not bind tokens to CIDRs here (the userpass method does):
    // refusing it is the only honest answer (a role that seemed bound but
    // was not would fail open)
    for cidrs in ["token_bound_cidrs", "bound_cidrs"] {
        if list_field(req, cidrs)?.is_some_and(|l| !l.is_empty()) {
            return Err(ApiError::bad_request(format!(
                "{cidrs} is not supported on token roles: they cannot bind tokens to CIDR blocks on this server"
            )));
        }
    }
    if let Some(v) = bool_field(req, "token_no_default_policy")? {
        role.token_no_default_policy = v;
    }
    if let Some(v) = req.data.get("token_num_uses") {
        let n = fields::int(v, "token_num_uses")?;
        if n < 0 {
            return Err(ApiError::bad_request(
                "error parsing role fields: 'token_num_uses' cannot be negative",
            ));
        }
        role.token_num_uses = n;
    }
    // token_* win over the deprecated names; a deprecated name alone sets
    // both (read back as given), as Vault
    match (
        duration_field(req, "token_period")?,
        duration_field(req, "period")?,
    ) {
        (Some(p), old) => {
            role.token_period = p;
            role.period = 0;
            if old.is_some() {
                warnings.push("Both 'token_period' and deprecated 'period' value supplied, ignoring the deprecated value".to_string());
            }
        }
        (None, Some(p)) => {
            role.period = p;
            role.token_period = p;
        }
        (None, None) => {}
    }
    match (
        duration_field(req, "token_explicit_max_ttl")?,
        duration_field(req, "explicit_max_ttl")?,
    ) {
        (Some(m), old) => {
            role.token_explicit_max_ttl = m;
            role.explicit_max_ttl = 0;
            if old.is_some() {
                warnings.push("Both 'token_explicit_max_ttl' and deprecated 'explicit_max_ttl' value supplied, ignoring the deprecated value".to_string());
            }
        }
        (None, Some(m)) => {
            role.explicit_max_ttl = m;
            role.token_explicit_max_ttl = m;
        }
        (None, None) => {}
    }
    let explicit = role.effective_explicit_max_ttl();
    if explicit > system_max_ttl {
        warnings.push(format!(
            "Given explicit max TTL of {explicit} is greater than system/mount allowed value of {system_max_ttl} seconds; until this is fixed attempting to create tokens against this role will result in an error"
        ));
    }
    if let Some(v) = list_field(req, "allowed_entity_aliases")? {
        role.allowed_entity_aliases = Some(lower_dedup(v));
    }
    put(barrier, &role).await?;
    Ok(warnings)
}

/// The `policies` a create request names, as Vault reads a string slice.
pub fn requested_policies(data: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    match data.get("policies") {
        Some(v) => fields::string_list(v, "policies"),
        None => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_vaults_generic_names() {
        for ok in ["a", "_", "testrole", "Test-Role.v1", "a_b", "9", "a.b-c_d"] {
            assert!(is_canonical_role_name(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            ".a",
            "a.",
            "a b",
            "a/b",
            "é",
            "a\u{200b}b",
            "a%b",
        ] {
            assert!(!is_canonical_role_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn globs_and_sanitising_follow_vault() {
        assert!(glob_match("*", "x"));
        assert!(glob_match("dev-*", "dev-a"));
        assert!(glob_match("*-ro", "kv-ro"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "acb"));
        assert!(!glob_match("dev-*", "prod-a"));
        assert!(!glob_match("abc", "abcd"));
        assert_eq!(
            sanitize_policies(&[" B".into(), "a".into(), "".into(), "a".into()], true),
            ["a", "b", "default"]
        );
        assert_eq!(
            sanitize_policies(&["a".into(), "root".into()], true),
            ["root"]
        );
        assert_eq!(
            go_quote_list(&["default".into(), "x".into()]),
            r#"["default" "x"]"#
        );
        assert_eq!(go_quote_list(&[]), "[]");
    }
}
