//! The mount table: which secrets engine answers under which path prefix.
//! Stored behind the barrier at `core/mounts`; the router picks the longest
//! matching prefix. Each mount gets its own storage view `logical/<uuid>/`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::logical::ApiError;

pub const MOUNTS_PATH: &str = "core/mounts";

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MountConfig {
    pub default_lease_ttl: i64,
    pub max_lease_ttl: i64,
    pub force_no_cache: bool,
    /// An auth method's user lockout settings (`user_lockout_config`).
    #[serde(default, skip_serializing_if = "is_default_lockout")]
    pub user_lockout: crate::lockout::LockoutConfig,
}

fn is_default_lockout(c: &crate::lockout::LockoutConfig) -> bool {
    *c == crate::lockout::LockoutConfig::default()
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MountEntry {
    /// With a trailing slash: `secret/`.
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub description: String,
    pub accessor: String,
    pub uuid: String,
    pub options: Map<String, Value>,
    pub config: MountConfig,
    pub local: bool,
    pub seal_wrap: bool,
}

/// The kind of engine behind a mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    KvV1,
    KvV2,
    Transit,
    Pki,
    Database,
}

impl MountEntry {
    pub fn engine(&self) -> Option<EngineKind> {
        match self.kind.as_str() {
            "kv" | "generic" => {
                if self.options.get("version").and_then(|v| v.as_str()) == Some("2") {
                    Some(EngineKind::KvV2)
                } else {
                    Some(EngineKind::KvV1)
                }
            }
            "kv-v2" => Some(EngineKind::KvV2),
            "transit" => Some(EngineKind::Transit),
            "pki" => Some(EngineKind::Pki),
            "database" => Some(EngineKind::Database),
            _ => None,
        }
    }

    pub fn view_prefix(&self) -> String {
        format!("logical/{}/", self.uuid)
    }

    /// The storage view of an auth method (Vault's `auth/<uuid>/`).
    pub fn auth_view_prefix(&self) -> String {
        format!("auth/{}/", self.uuid)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "type": self.kind,
            "description": self.description,
            "accessor": self.accessor,
            "uuid": self.uuid,
            "config": {
                "default_lease_ttl": self.config.default_lease_ttl,
                "max_lease_ttl": self.config.max_lease_ttl,
                "force_no_cache": self.config.force_no_cache,
            },
            "options": if self.options.is_empty() { Value::Null } else { Value::Object(self.options.clone()) },
            "local": self.local,
            "seal_wrap": self.seal_wrap,
            "external_entropy_access": false,
            "plugin_version": "",
            "running_plugin_version": "",
            "running_sha256": "",
        })
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MountTable {
    pub entries: Vec<MountEntry>,
    /// Auth methods enabled under `auth/` (paths relative to it, with their
    /// trailing `/`: `userpass/`). The token method is built in and never
    /// here. Kept in the same barrier entry as the secrets mounts, so one
    /// write changes both and every table change bumps the same epoch.
    #[serde(default)]
    pub auth: Vec<MountEntry>,
}

/// The auth method types that can be enabled.
pub const AUTH_METHOD_TYPES: &[&str] = &["approle", "cert", "jwt", "userpass"];

/// Paths that belong to the core and can never be a secrets mount.
const RESERVED: &[&str] = &["sys/", "auth/", "cubbyhole/", "identity/"];

impl MountTable {
    /// The mount with the longest prefix of `path`, and the path relative to it.
    pub fn route<'a>(&'a self, path: &'a str) -> Option<(&'a MountEntry, &'a str)> {
        self.entries
            .iter()
            .filter(|m| path.starts_with(&m.path) || format!("{path}/") == m.path)
            .max_by_key(|m| m.path.len())
            .map(|m| (m, path.get(m.path.len()..).unwrap_or("")))
    }

    /// Check a canonical mount path (as `canonical` makes it from
    /// `sys/mounts/<path>`: no leading or trailing `/`, no whitespace) and
    /// return it as the table keeps it, with its trailing `/`. Nothing is
    /// trimmed here: a path that is not canonical is refused.
    pub fn check_path(path: &str) -> Result<String, ApiError> {
        if path.is_empty() {
            return Err(ApiError::bad_request("missing mount path"));
        }
        if path
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
            || path
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || !crate::canonical::is_printable(c))
        {
            // format characters too (U+200B, U+202E, ...): no request path
            // could ever name such a mount again (canonical.rs refuses them)
            return Err(ApiError::bad_request("invalid mount path"));
        }
        let path = format!("{path}/");
        if RESERVED.iter().any(|r| path.starts_with(r)) {
            return Err(ApiError::bad_request(format!(
                "cannot mount {path:?}: path is reserved"
            )));
        }
        Ok(path)
    }

    /// The auth method whose path is the longest prefix of `rest` (a request
    /// path without its `auth/`), and the path relative to it.
    pub fn auth_route<'a>(&'a self, rest: &'a str) -> Option<(&'a MountEntry, &'a str)> {
        self.auth
            .iter()
            .filter(|m| rest.starts_with(&m.path) || format!("{rest}/") == m.path)
            .max_by_key(|m| m.path.len())
            .map(|m| (m, rest.get(m.path.len()..).unwrap_or("")))
    }

    /// Check a canonical auth method path (from `sys/auth/<path>`), as
    /// [`MountTable::check_path`] does; `token/` is the built-in method's.
    pub fn check_auth_path(path: &str) -> Result<String, ApiError> {
        if path.is_empty() {
            return Err(ApiError::bad_request("missing auth method path"));
        }
        // the same character and segment rules as a secrets mount path
        let checked = Self::check_path(path).or_else(|e| {
            if e == ApiError::bad_request("invalid mount path") {
                Err(ApiError::bad_request("invalid auth method path"))
            } else {
                // reserved names of secrets mounts (sys/, auth/, ...) are
                // ordinary names under auth/
                Ok(format!("{path}/"))
            }
        })?;
        if checked == "token/" || checked.starts_with("token/") {
            return Err(ApiError::bad_request(format!(
                "cannot mount \"auth/{checked}\": path is reserved for the token auth method"
            )));
        }
        Ok(checked)
    }

    /// A new auth method path may neither contain nor be contained in an
    /// existing one (`token/` included).
    pub fn auth_conflicts(&self, path: &str) -> bool {
        path.starts_with("token/")
            || self
                .auth
                .iter()
                .any(|m| m.path.starts_with(path) || path.starts_with(&m.path))
    }

    /// The accessors of the enabled auth methods.
    pub fn auth_accessors(&self) -> std::collections::HashSet<String> {
        self.auth.iter().map(|m| m.accessor.clone()).collect()
    }

    /// A new mount may neither contain nor be contained in an existing one.
    pub fn conflicts(&self, path: &str) -> bool {
        self.entries
            .iter()
            .any(|m| m.path.starts_with(path) || path.starts_with(&m.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> MountEntry {
        MountEntry {
            path: path.into(),
            kind: "kv".into(),
            description: String::new(),
            accessor: "kv_1".into(),
            uuid: "u".into(),
            options: Map::new(),
            config: MountConfig::default(),
            local: false,
            seal_wrap: false,
        }
    }

    #[test]
    fn routes_longest_prefix() {
        let t = MountTable {
            entries: vec![entry("secret/"), entry("secret-b/"), entry("team/a/")],
            auth: vec![entry("userpass/"), entry("team/up/")],
        };
        assert_eq!(
            t.auth_route("userpass/login/bob")
                .map(|(m, r)| (m.path.as_str(), r)),
            Some(("userpass/", "login/bob"))
        );
        assert_eq!(
            t.auth_route("team/up").map(|(m, r)| (m.path.as_str(), r)),
            Some(("team/up/", ""))
        );
        assert!(t.auth_route("userpassx/login/bob").is_none());
        assert!(t.auth_route("token/lookup-self").is_none());
        assert!(t.auth_conflicts("userpass/sub/"));
        assert!(t.auth_conflicts("team/"));
        assert!(t.auth_conflicts("token/"));
        assert!(!t.auth_conflicts("ldap/"));
        assert_eq!(
            t.route("secret/data/x").map(|(m, r)| (m.path.as_str(), r)),
            Some(("secret/", "data/x"))
        );
        assert_eq!(
            t.route("secret-b/x").map(|(m, r)| (m.path.as_str(), r)),
            Some(("secret-b/", "x"))
        );
        assert_eq!(
            t.route("team/a").map(|(m, r)| (m.path.as_str(), r)),
            Some(("team/a/", ""))
        );
        assert!(t.route("secretx/a").is_none());
        assert!(t.conflicts("secret/sub/"));
        assert!(t.conflicts("team/"));
        assert!(!t.conflicts("other/"));
    }

    #[test]
    fn mount_paths_are_checked_not_rewritten() {
        assert_eq!(MountTable::check_path("kv").unwrap(), "kv/");
        assert_eq!(MountTable::check_path("team/a").unwrap(), "team/a/");
        assert_eq!(
            MountTable::check_path("sys").unwrap_err(),
            ApiError::bad_request("cannot mount \"sys/\": path is reserved")
        );
        let invalid = ApiError::bad_request("invalid mount path");
        for bad in ["/kv/", "kv/", "/kv", "a/../b", "a//b", "kv ", "k\u{a0}v"] {
            assert_eq!(MountTable::check_path(bad).unwrap_err(), invalid, "{bad:?}");
        }
        assert_eq!(
            MountTable::check_path("").unwrap_err(),
            ApiError::bad_request("missing mount path")
        );
    }

    #[test]
    fn auth_method_paths_are_checked_not_rewritten() {
        assert_eq!(
            MountTable::check_auth_path("userpass").unwrap(),
            "userpass/"
        );
        assert_eq!(MountTable::check_auth_path("sys").unwrap(), "sys/");
        assert_eq!(
            MountTable::check_auth_path("token").unwrap_err(),
            ApiError::bad_request(
                "cannot mount \"auth/token/\": path is reserved for the token auth method"
            )
        );
        assert!(MountTable::check_auth_path("token/x").is_err());
        let invalid = ApiError::bad_request("invalid auth method path");
        for bad in ["/up/", "up/", "a/../b", "a//b", "up ", "u\u{200b}p"] {
            assert_eq!(
                MountTable::check_auth_path(bad).unwrap_err(),
                invalid,
                "{bad:?}"
            );
        }
    }
}
