//! Per-device redaction: the record a device writes, built from raw entry
//! values and that device's HMAC key.
//!
//! Vault's default rules (`hmac_accessor = true`): tokens and accessors become
//! `hmac-sha256:<hex>` (empty stays empty, so "no token" is still visible), and
//! every string and number leaf of request/response `data` is hashed, because
//! engine data is where secrets live and we cannot know which fields are
//! sensitive (a PIN or a card number is a number). A number is hashed in its
//! textual JSON form (`1234`, `1.5`), as Vault does after parsing with
//! `UseNumber`, so `sys/audit-hash` with that text finds it. Booleans, null and
//! object keys stay readable (keys are the schema, not the secret; a boolean's
//! HMAC would hide nothing, as a key has only two of them). Nothing else is
//! hashed.
//!
//! A record is bounded: when the redacted record would exceed
//! [`crate::MAX_RECORD_BYTES`], each `data` is replaced by a summary holding
//! its size and the HMAC of its JSON text, so one request can never write a
//! line that is too large to handle.

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
        Value::Number(n) => Value::String(hmac(key, &n.to_string())),
        Value::Null | Value::Bool(_) => v.clone(),
    }
}

/// What replaces `data` in a record that would be too large: the size and
/// HMAC of the raw data's JSON text (an operator holding the payload can
/// match it with `sys/audit-hash`).
fn summary(key: &MacKey, v: &Value) -> Value {
    let text = serde_json::to_string(v).unwrap_or_default();
    serde_json::json!({
        "palisade_summary": {
            "reason": "data too large for one audit record",
            "bytes": text.len(),
            "hmac": hmac(key, &text),
        }
    })
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
    #[serde(skip_serializing_if = "Option::is_none")]
    wrap_info: Option<RecordWrapInfo<'a>>,
}

#[derive(Serialize)]
struct RecordWrapInfo<'a> {
    token: String,
    accessor: String,
    ttl: i64,
    creation_time: &'a str,
    creation_path: &'a str,
    #[serde(skip_serializing_if = "String::is_empty")]
    wrapped_accessor: String,
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

fn redact_response<'a>(key: &MacKey, r: &'a AuditResponse, summarise: bool) -> RecordResponse<'a> {
    RecordResponse {
        status: r.status,
        data: r.data.as_ref().map(|d| {
            if summarise {
                summary(key, d)
            } else {
                hmac_value(key, d)
            }
        }),
        auth: r.auth.as_ref().map(|a| redact_auth(key, a)),
        warnings: &r.warnings,
        wrap_info: r.wrap_info.as_ref().map(|w| RecordWrapInfo {
            token: hmac_credential(key, &w.token),
            accessor: hmac_credential(key, &w.accessor),
            ttl: w.ttl,
            creation_time: &w.creation_time,
            creation_path: &w.creation_path,
            wrapped_accessor: hmac_credential(key, &w.wrapped_accessor),
        }),
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
    // Each hashed leaf becomes ~78 bytes: when the leaves alone would pass
    // the limit, summarise at once instead of hashing them all (a body of a
    // million numbers must not cost a million HMACs and a 100 MB string).
    if too_many_leaves(entry) {
        return render(key, entry, time, true);
    }
    let body = render(key, entry, time.clone(), false)?;
    if body.len() <= crate::MAX_RECORD_BYTES {
        return Ok(body);
    }
    render(key, entry, time, true)
}

/// Whether hashing the record's leaves one by one would make it too large:
/// past [`crate::MAX_RECORD_BYTES`], or more than [`MAX_AMPLIFICATION`]
/// times the data's own JSON size plus [`AMPLIFICATION_SLACK`] (a body of
/// small numbers would otherwise write ~40 bytes of audit per byte sent,
/// and any token could fill the audit disk).
fn too_many_leaves(entry: &AuditEntry) -> bool {
    let data = [
        entry.request.data.as_ref(),
        entry.response.as_ref().and_then(|r| r.data.as_ref()),
    ];
    let leaves = data
        .into_iter()
        .flatten()
        .map(leaf_count)
        .fold(0usize, usize::saturating_add);
    let hashed = leaves.saturating_mul(HASHED_LEAF_BYTES);
    if hashed > crate::MAX_RECORD_BYTES {
        return true;
    }
    if hashed <= AMPLIFICATION_SLACK {
        return false;
    }
    let raw: usize = data
        .into_iter()
        .flatten()
        .map(|d| serde_json::to_vec(d).map_or(usize::MAX, |v| v.len()))
        .fold(0usize, usize::saturating_add);
    hashed
        > raw
            .saturating_mul(MAX_AMPLIFICATION)
            .saturating_add(AMPLIFICATION_SLACK)
}

/// A record's hashed data may be at most this many times the data's size...
const MAX_AMPLIFICATION: usize = 4;
/// ...plus this much (small bodies are always hashed in full).
const AMPLIFICATION_SLACK: usize = 64 * 1024;

/// What one hashed leaf takes in a record: `"hmac-sha256:<64 hex>"`.
const HASHED_LEAF_BYTES: usize = 78;

/// Leaves (strings, numbers, booleans, nulls) in `v`, without recursion.
fn leaf_count(v: &Value) -> usize {
    let mut n = 0usize;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(a) => stack.extend(a.iter()),
            Value::Object(m) => stack.extend(m.values()),
            _ => n += 1,
        }
    }
    n
}

fn render(
    key: &MacKey,
    entry: &AuditEntry,
    time: String,
    summarise: bool,
) -> serde_json::Result<String> {
    let req = &entry.request;
    let data = |d: &Value| {
        if summarise {
            summary(key, d)
        } else {
            hmac_value(key, d)
        }
    };
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
            data: req.data.as_ref().map(data),
        },
        response: entry
            .response
            .as_ref()
            .map(|r| redact_response(key, r, summarise)),
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
        let v = json!({"a": "x", "n": 5, "pin": 1234, "card": 4111111111111111u64,
                       "b": true, "z": null, "l": ["y", 1.5, -7, {"deep": "w"}]});
        let h = hmac_value(&key, &v);
        assert_eq!(
            h,
            json!({"a": hmac(&key, "x"), "n": hmac(&key, "5"), "pin": hmac(&key, "1234"),
                   "card": hmac(&key, "4111111111111111"), "b": true, "z": null,
                   "l": [hmac(&key, "y"), hmac(&key, "1.5"), hmac(&key, "-7"), {"deep": hmac(&key, "w")}]})
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
                wrap_info: None,
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

    #[test]
    fn oversized_records_summarise_their_data() {
        let key = MacKey::from_bytes(b"k");
        // 1-byte strings grow ~25x when hashed: a body well under the
        // request size limit would make a line of hundreds of MB
        let big: Map<String, Value> = (0..200_000)
            .map(|i| (format!("k{i}"), Value::String("a".into())))
            .collect();
        let data = Value::Object(big);
        let entry = AuditEntry {
            request: AuditRequest {
                path: "secret/data/x".into(),
                data: Some(data.clone()),
                ..Default::default()
            },
            response: Some(AuditResponse {
                wrap_info: None,
                status: 200,
                data: Some(json!({"small": "s"})),
                ..Default::default()
            }),
            ..Default::default()
        };
        let body = record_body(&key, &entry, "T".into()).unwrap();
        assert!(body.len() < 4096, "{} bytes", body.len());
        let v: Value = serde_json::from_str(&body).unwrap();
        let text = serde_json::to_string(&data).unwrap();
        assert_eq!(
            v["request"]["data"]["palisade_summary"],
            json!({"reason": "data too large for one audit record",
                   "bytes": text.len(), "hmac": hmac(&key, &text)})
        );
        assert!(!body.contains("\"k1\""), "no key of the summarised data");
        // a million numbers are summarised without hashing each one
        let nums: Vec<u32> = (0..1_000_000).collect();
        let entry = AuditEntry {
            request: AuditRequest {
                data: Some(json!({ "n": nums })),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(
            too_many_leaves(&entry),
            "summarised before any leaf is hashed"
        );
        let body = record_body(&key, &entry, "T".into()).unwrap();
        assert!(body.contains("palisade_summary") && body.len() < 4096);
        assert_eq!(
            leaf_count(&json!({"a": [1, "x", {"b": null}], "c": true})),
            4
        );
        // a record under the limit is written in full
        let small = AuditEntry {
            request: AuditRequest {
                data: Some(json!({"k": "a"})),
                ..Default::default()
            },
            ..Default::default()
        };
        let v: Value =
            serde_json::from_str(&record_body(&key, &small, "T".into()).unwrap()).unwrap();
        assert_eq!(v["request"]["data"], json!({"k": hmac(&key, "a")}));
        assert!(!too_many_leaves(&small));
        // 50,000 zeros (100 KB) would hash to ~3.9 MB: summarised
        let zeros = vec![0u8; 50_000];
        let amplified = AuditEntry {
            request: AuditRequest {
                data: Some(json!({ "n": zeros })),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(too_many_leaves(&amplified));
        // 1,000 strings of 40 characters (~44 KB) hash to ~78 KB: kept whole
        let words: Vec<String> = (0..1000).map(|i| format!("{i:040}")).collect();
        let ordinary = AuditEntry {
            request: AuditRequest {
                data: Some(json!({ "w": words })),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(!too_many_leaves(&ordinary));
    }
}
