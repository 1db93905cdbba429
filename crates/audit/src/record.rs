//! What the server hands the broker: raw, unredacted request/response facts.
//!
//! These types hold live credentials, so their `Debug` output hides tokens,
//! accessors and data (a stray `{:?}` in a log line must not leak a token).
//! `Serialize` is kept for the server's convenience but emits the RAW values:
//! never serialise these into a log; the broker redacts per device.

use std::fmt;

use serde_json::{Map, Value};

/// Shown in place of a non-empty credential or data value in `Debug` output.
const HIDDEN: &str = "[REDACTED]";

fn hide(s: &str) -> &'static str {
    if s.is_empty() { "" } else { HIDDEN }
}

fn hide_data(v: &Option<Value>) -> Option<&'static str> {
    v.as_ref().map(|_| HIDDEN)
}

/// The token that made (or was issued by) the request, with RAW values.
#[derive(Clone, Default, serde::Serialize)]
pub struct AuditAuth {
    pub client_token: String,
    pub accessor: String,
    pub display_name: String,
    pub policies: Vec<String>,
    pub token_policies: Vec<String>,
    pub metadata: Map<String, Value>,
    pub entity_id: String,
    pub token_type: String,
    pub token_ttl: i64,
}

impl fmt::Debug for AuditAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditAuth")
            .field("client_token", &hide(&self.client_token))
            .field("accessor", &hide(&self.accessor))
            .field("display_name", &self.display_name)
            .field("policies", &self.policies)
            .field("token_policies", &self.token_policies)
            .field("metadata", &self.metadata)
            .field("entity_id", &self.entity_id)
            .field("token_type", &self.token_type)
            .field("token_ttl", &self.token_ttl)
            .finish()
    }
}

/// The request as received, with RAW values.
#[derive(Clone, Default, serde::Serialize)]
pub struct AuditRequest {
    pub id: String,
    pub operation: String,
    pub path: String,
    pub mount_type: String,
    pub client_token: String,
    pub client_token_accessor: String,
    pub remote_address: String,
    pub data: Option<Value>,
}

impl fmt::Debug for AuditRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditRequest")
            .field("id", &self.id)
            .field("operation", &self.operation)
            .field("path", &self.path)
            .field("mount_type", &self.mount_type)
            .field("client_token", &hide(&self.client_token))
            .field("client_token_accessor", &hide(&self.client_token_accessor))
            .field("remote_address", &self.remote_address)
            .field("data", &hide_data(&self.data))
            .finish()
    }
}

/// The response about to be returned, with RAW values.
#[derive(Clone, Default, serde::Serialize)]
pub struct AuditResponse {
    pub status: u16,
    pub data: Option<Value>,
    pub auth: Option<AuditAuth>,
    pub warnings: Vec<String>,
    /// A wrapped response's wrapping token (`X-Vault-Wrap-TTL`).
    pub wrap_info: Option<AuditWrapInfo>,
}

/// The `wrap_info` of a wrapped response, with RAW values.
#[derive(Clone, Default, serde::Serialize)]
pub struct AuditWrapInfo {
    pub token: String,
    pub accessor: String,
    pub ttl: i64,
    pub creation_time: String,
    pub creation_path: String,
    pub wrapped_accessor: String,
}

impl fmt::Debug for AuditWrapInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditWrapInfo")
            .field("token", &hide(&self.token))
            .field("accessor", &hide(&self.accessor))
            .field("ttl", &self.ttl)
            .field("creation_path", &self.creation_path)
            .field("wrapped_accessor", &hide(&self.wrapped_accessor))
            .finish()
    }
}

impl fmt::Debug for AuditResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditResponse")
            .field("status", &self.status)
            .field("data", &hide_data(&self.data))
            .field("auth", &self.auth)
            .field("warnings", &self.warnings)
            .field("wrap_info", &self.wrap_info)
            .finish()
    }
}

/// One audit event. It is a `request` record while `response` is `None` and a
/// `response` record once the response is attached.
#[derive(Clone, Debug, Default)]
pub struct AuditEntry {
    pub auth: Option<AuditAuth>,
    pub request: AuditRequest,
    pub response: Option<AuditResponse>,
    pub error: Option<String>,
}

impl AuditEntry {
    /// The record's `type` field: `"request"` or `"response"`.
    pub fn kind(&self) -> &'static str {
        if self.response.is_some() {
            "response"
        } else {
            "request"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_credentials_and_data() {
        let auth = AuditAuth {
            client_token: "hvs.SUPERSECRETTOKEN".into(),
            accessor: "ACCESSORSECRET".into(),
            ..Default::default()
        };
        let entry = AuditEntry {
            auth: Some(auth.clone()),
            request: AuditRequest {
                client_token: "hvs.SUPERSECRETTOKEN".into(),
                client_token_accessor: "ACCESSORSECRET".into(),
                data: Some(serde_json::json!({"password": "DATASECRET"})),
                ..Default::default()
            },
            response: Some(AuditResponse {
                data: Some(serde_json::json!({"value": "DATASECRET"})),
                auth: Some(auth),
                ..Default::default()
            }),
            error: None,
        };
        let printed = format!("{entry:?}");
        for secret in ["SUPERSECRETTOKEN", "ACCESSORSECRET", "DATASECRET"] {
            assert!(!printed.contains(secret), "{secret} leaked: {printed}");
        }
        assert!(printed.contains(HIDDEN));
        assert_eq!(entry.kind(), "response");
        assert_eq!(AuditEntry::default().kind(), "request");
    }
}
