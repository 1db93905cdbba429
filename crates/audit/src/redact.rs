//! Per-device redaction: the record a device writes, built from raw entry
//! values and that device's HMAC key.
//!
//! Vault's default rules (`hmac_accessor = true`): tokens and accessors become
//! `hmac-sha256:<hex>` (empty stays empty, so "no token" is still visible), and
//! every string leaf of request/response `data` is hashed, because engine data
//! is where secrets live and we cannot know which fields are sensitive.
//! Numbers, booleans, null and object keys stay readable (keys are the schema,
//! not the secret). Nothing else is hashed.

use palisade_crypto::mac::MacKey;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::record::{AuditAuth, AuditEntry, AuditResponse};

const HMAC_PREFIX: &str = "hmac-sha256:";

/// `hmac-sha256:<hex>` of `input` under `key`; what `sys/audit-hash` returns.
pub(crate) fn hmac(key: &MacKey, input: &str) -> String {
    let mut out = String::with_capacity(HMAC_PREFIX.len() + 64);
    out.push_str(HMAC_PREFIX);
    out.push_str(&key.sign_hex(input.as_bytes()));
    out
}

/// Credentials: hashed, except that absence (empty) stays visible.
fn hmac_credential(key: &MacKey, input: &str) -> String {
    if input.is_empty() {
        String::new()
    } else {
        hmac(key, input)
    }
}

/// Every string leaf hashed, recursively; structure and non-strings kept.
/// Recursion depth is bounded by the input's nesting, which serde_json caps
/// at 128 when the server parses request bodies.
fn hmac_value(key: &MacKey, v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(hmac(key, s)),
        Value::Array(items) => Value::Array(items.iter().map(|i| hmac_value(key, i)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), hmac_value(key, v)))
                .collect(),
        ),
        Value::Null | Value::Bool(_) | Value::Number(_) => v.clone(),
    }
}

// The on-disk shape. Field order here IS the line's field order; the chain
// fields (seq, prev_hash, hash) are appended after these by `chain::seal`.

#[derive(Serialize)]
struct Record<'a> {
    time: String,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<RecordAuth<'a>>,
    request: RecordRequest<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<RecordResponse<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

#[derive(Serialize)]
struct RecordAuth<'a> {
    client_token: String,
    accessor: String,
    display_name: &'a str,
    policies: &'a [String],
    token_policies: &'a [String],
    metadata: &'a Map<String, Value>,
    entity_id: &'a str,
    token_type: &'a str,
    token_ttl: i64,
}

#[derive(Serialize)]
struct Namespace {
    id: &'static str,
}

#[derive(Serialize)]
struct RecordRequest<'a> {
    id: &'a str,
    operation: &'a str,
    path: &'a str,
    mount_type: &'a str,
    client_token: String,
    client_token_accessor: String,
    remote_address: &'a str,
    namespace: Namespace,
    // Omitted when absent, like Vault's `omitempty`.
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Value>,
}

#[derive(Serialize)]
struct RecordResponse<'a> {
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<RecordAuth<'a>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}

fn redact_auth<'a>(key: &MacKey, a: &'a AuditAuth) -> RecordAuth<'a> {
    RecordAuth {
        client_token: hmac_credential(key, &a.client_token),
        accessor: hmac_credential(key, &a.accessor),
        display_name: &a.display_name,
        policies: &a.policies,
        token_policies: &a.token_policies,
        metadata: &a.metadata,
        entity_id: &a.entity_id,
        token_type: &a.token_type,
        token_ttl: a.token_ttl,
    }
}

fn redact_response<'a>(key: &MacKey, r: &'a AuditResponse) -> RecordResponse<'a> {
    RecordResponse {
        status: r.status,
        data: r.data.as_ref().map(|d| hmac_value(key, d)),
        auth: r.auth.as_ref().map(|a| redact_auth(key, a)),
        warnings: &r.warnings,
    }
}

/// The redacted record serialised as a compact JSON object (ending in `}`),
/// without the chain fields. Done outside the device lock: hashing and
/// serialising large data should not serialise concurrent requests.
pub(crate) fn record_body(
    key: &MacKey,
    entry: &AuditEntry,
    time: String,
) -> serde_json::Result<String> {
    let req = &entry.request;
    let record = Record {
        time,
        kind: entry.kind(),
        auth: entry.auth.as_ref().map(|a| redact_auth(key, a)),
        request: RecordRequest {
            id: &req.id,
            operation: &req.operation,
            path: &req.path,
            mount_type: &req.mount_type,
            client_token: hmac_credential(key, &req.client_token),
            client_token_accessor: hmac_credential(key, &req.client_token_accessor),
            remote_address: &req.remote_address,
            namespace: Namespace { id: "root" },
            data: req.data.as_ref().map(|d| hmac_value(key, d)),
        },
        response: entry.response.as_ref().map(|r| redact_response(key, r)),
        error: entry.error.as_deref(),
    };
    serde_json::to_string(&record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{AuditRequest, AuditResponse};
    use serde_json::json;

    #[test]
    fn hashes_every_string_leaf_only() {
        let key = MacKey::from_bytes(b"k");
        let v = json!({"a": "x", "n": 5, "b": true, "z": null, "l": ["y", 1.5, {"deep": "w"}]});
        let h = hmac_value(&key, &v);
        assert_eq!(
            h,
            json!({"a": hmac(&key, "x"), "n": 5, "b": true, "z": null,
                   "l": [hmac(&key, "y"), 1.5, {"deep": hmac(&key, "w")}]})
        );
    }

    #[test]
    fn shape_and_credentials() {
        let key = MacKey::from_bytes(b"k");
        let entry = AuditEntry {
            auth: Some(AuditAuth {
                client_token: "tok".into(),
                accessor: String::new(),
                policies: vec!["default".into()],
                ..Default::default()
            }),
            request: AuditRequest {
                id: "rid".into(),
                operation: "update".into(),
                path: "secret/data/x".into(),
                client_token: "tok".into(),
                remote_address: "127.0.0.1".into(),
                ..Default::default()
            },
            response: Some(AuditResponse {
                status: 200,
                ..Default::default()
            }),
            error: None,
        };
        let body = record_body(&key, &entry, "T".into()).unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["type"], "response");
        assert_eq!(v["auth"]["client_token"], json!(hmac(&key, "tok")));
        assert_eq!(v["auth"]["accessor"], "");
        assert_eq!(v["request"]["client_token"], json!(hmac(&key, "tok")));
        assert_eq!(v["request"]["client_token_accessor"], "");
        assert_eq!(v["request"]["namespace"], json!({"id": "root"}));
        assert_eq!(v["request"]["path"], "secret/data/x");
        assert_eq!(v["response"], json!({"status": 200}));
        assert!(v.get("error").is_none());
        assert!(body.starts_with("{\"time\":\"T\",\"type\":\"response\",\"auth\":"));
    }
}
