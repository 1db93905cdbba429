//! Secrets engines. An engine sees only its relative path, the request and
//! its own storage view; it cannot reach the core, other mounts or the
//! barrier's metadata (the [`palisade_barrier::View`] jail enforces that).

pub mod database;
pub mod kv;
pub mod pki;
pub mod transit;

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::logical::{ApiError, fields};

/// A key or role name in an engine's path: Vault's generic names (the
/// token roles' rule), anything else 404 `unsupported path` as Vault's
/// router answers. Never cleaned up: the ACL saw this exact name.
pub(crate) fn check_name(name: &str) -> Result<&str, ApiError> {
    if crate::token_roles::is_canonical_role_name(name) {
        Ok(name)
    } else {
        Err(ApiError::unsupported_path())
    }
}

/// A body field, absent when missing or `null`.
pub(crate) fn opt<'a>(d: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    d.get(name).filter(|v| !v.is_null())
}

pub(crate) fn opt_string(d: &Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    opt(d, name).map(|v| fields::string(v, name)).transpose()
}

/// DER as PEM, 64 columns.
pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
