//! The typed request and response that flow through `Core::begin` and `Core::execute`, and the
//! one error type every handler returns. The HTTP layer parses into these at
//! the edge; nothing past it sees raw HTTP.

use serde_json::{Map, Value};

use crate::canonical::CanonicalPath;

/// What the caller asked for, after method/verb mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Read,
    List,
    /// POST or PUT: Vault treats them alike. Whether this is a create or an
    /// update (for the ACL) is decided by an existence check in the core.
    Write,
    Delete,
    Patch,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::List => "list",
            Operation::Write => "update",
            Operation::Delete => "delete",
            Operation::Patch => "patch",
        }
    }
}

/// A parsed request. `path` is canonical ([`CanonicalPath`]): what the ACL
/// was checked on is exactly what the handler acts on.
#[derive(Clone, Debug)]
pub struct Request {
    pub id: String,
    pub operation: Operation,
    pub path: CanonicalPath,
    /// The JSON body, filled in once the request is authorised.
    pub data: Map<String, Value>,
    /// Query parameters (already split). Only GET, LIST and DELETE read them
    /// as data, as Vault does: a POST's `?token=` is ignored, so credentials
    /// never have to travel in a URL.
    pub query: Vec<(String, String)>,
    pub remote_addr: String,
    /// `X-Vault-Wrap-TTL`, in seconds (positive): answer with a wrapping
    /// token instead of the response.
    pub wrap_ttl: Option<i64>,
    /// The certificate chain the client presented in the TLS handshake
    /// (DER, leaf first), not yet validated: the `cert` auth method checks
    /// it against its roles' CAs (webpki) at login.
    pub client_certs: Option<std::sync::Arc<Vec<Vec<u8>>>>,
}

impl Request {
    pub fn new(operation: Operation, path: CanonicalPath) -> Self {
        Self {
            id: palisade_core::uuid_v4(),
            operation,
            path,
            data: Map::new(),
            query: Vec::new(),
            remote_addr: String::new(),
            wrap_ttl: None,
            client_certs: None,
        }
    }

    /// A field from the body, falling back to the query string for reads,
    /// lists and deletes (Vault's `parseQuery`).
    pub fn field(&self, name: &str) -> Option<Value> {
        if let Some(v) = self.data.get(name) {
            return Some(v.clone());
        }
        if !matches!(
            self.operation,
            Operation::Read | Operation::List | Operation::Delete
        ) {
            return None;
        }
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| Value::String(v.clone()))
    }
}

fn expose_secret<S: serde::Serializer>(
    v: &palisade_core::Secret<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.expose())
}

/// The `auth` block of a response (token create, login).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct AuthBlock {
    /// The token itself: never printed (`Debug` shows it redacted); only
    /// the response body carries it.
    #[serde(serialize_with = "expose_secret")]
    pub client_token: palisade_core::Secret<String>,
    pub accessor: String,
    pub policies: Vec<String>,
    pub token_policies: Vec<String>,
    pub identity_policies: Option<Vec<String>>,
    pub metadata: Option<Map<String, Value>>,
    pub lease_duration: i64,
    pub renewable: bool,
    pub entity_id: String,
    pub token_type: String,
    pub orphan: bool,
    pub mfa_requirement: Option<Value>,
    pub num_uses: i64,
}

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub data: Option<Value>,
    pub auth: Option<AuthBlock>,
    pub warnings: Vec<String>,
    /// Repeat the keys of `data` at the top level (sys/mounts, sys/policy...).
    pub top_level: bool,
    /// A body that is not the Vault envelope (sys/health, sys/init...).
    pub raw: Option<Value>,
    /// A body that is not JSON at all, with its content type (a PKI
    /// engine's `ca/pem`, `crl`): public material only.
    pub bytes: Option<(&'static str, Vec<u8>)>,
    /// The lease of a dynamic secret (`lease_id`, `lease_duration`,
    /// `renewable` at the top of Vault's envelope).
    pub lease: Option<crate::lease::LeaseInfo>,
    /// A wrapped response: the wrapping token in place of the response
    /// (`X-Vault-Wrap-TTL`, `wrapping.rs`).
    pub wrap_info: Option<WrapInfo>,
    /// Headers beside the body (`WWW-Authenticate` of an OAuth 401,
    /// `Pragma: no-cache` of a token response).
    pub extra_headers: Vec<(&'static str, &'static str)>,
}

/// Vault's `wrap_info` block.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct WrapInfo {
    /// The wrapping token: never printed (`Debug` shows it redacted).
    #[serde(serialize_with = "expose_secret")]
    pub token: palisade_core::Secret<String>,
    pub accessor: String,
    pub ttl: i64,
    pub creation_time: String,
    pub creation_path: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub wrapped_accessor: String,
}

impl Response {
    pub fn data(data: Value) -> Self {
        Self {
            status: 200,
            data: Some(data),
            auth: None,
            warnings: Vec::new(),
            top_level: false,
            raw: None,
            bytes: None,
            lease: None,
            wrap_info: None,
            extra_headers: Vec::new(),
        }
    }
    pub fn no_content() -> Self {
        Self {
            status: 204,
            data: None,
            auth: None,
            warnings: Vec::new(),
            top_level: false,
            raw: None,
            bytes: None,
            lease: None,
            wrap_info: None,
            extra_headers: Vec::new(),
        }
    }
    pub fn raw(status: u16, body: Value) -> Self {
        Self {
            status,
            data: None,
            auth: None,
            warnings: Vec::new(),
            top_level: false,
            raw: Some(body),
            bytes: None,
            lease: None,
            wrap_info: None,
            extra_headers: Vec::new(),
        }
    }
    /// A non-JSON body (`content_type` is e.g. `application/pem-certificate-chain`).
    pub fn bytes(content_type: &'static str, body: Vec<u8>) -> Self {
        Self {
            status: 200,
            data: None,
            auth: None,
            warnings: Vec::new(),
            top_level: false,
            raw: None,
            bytes: Some((content_type, body)),
            lease: None,
            wrap_info: None,
            extra_headers: Vec::new(),
        }
    }
    /// Vault's response envelope (the JSON body of everything but `raw`
    /// and `bytes` responses).
    pub fn envelope(&self, request_id: &str) -> Value {
        let (lease_id, renewable, lease_duration) = match &self.lease {
            Some(l) => (l.lease_id.as_str(), l.renewable, l.lease_duration),
            None => ("", false, 0),
        };
        let mut env = serde_json::json!({
            "request_id": request_id,
            "lease_id": lease_id,
            "renewable": renewable,
            "lease_duration": lease_duration,
            "data": self.data,
            "wrap_info": self.wrap_info,
            "warnings": if self.warnings.is_empty() { Value::Null } else { serde_json::json!(self.warnings) },
            "auth": self.auth,
            "mount_type": "",
        });
        if self.top_level
            && let (Some(Value::Object(data)), Value::Object(obj)) = (self.data.as_ref(), &mut env)
        {
            for (k, v) in data {
                obj.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        env
    }
    pub fn with_top_level(mut self) -> Self {
        self.top_level = true;
        self
    }
    pub fn with_lease(mut self, lease: crate::lease::LeaseInfo) -> Self {
        self.lease = Some(lease);
        self
    }
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
    pub fn warn(mut self, w: impl Into<String>) -> Self {
        self.warnings.push(w.into());
        self
    }
}

/// An error as the client sees it: a status and Vault's `{"errors":[...]}`.
/// Messages are written for clients; internal detail is logged, never sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {}", messages.join("; "))]
pub struct ApiError {
    pub status: u16,
    pub messages: Vec<String>,
    /// Some Vault errors carry a data body (KV v2 deleted version: 404 + metadata).
    pub body: Option<Value>,
    /// What the audit record's `error` says when the client's message quotes
    /// the request (a policy's parse error names the offending text: useful
    /// to the client who sent it, but request values never reach the audit
    /// log in clear).
    pub audit_text: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: u16, msg: impl Into<String>) -> Self {
        Self {
            status,
            messages: vec![msg.into()],
            body: None,
            audit_text: None,
        }
    }

    /// The same error, audited as `text` instead of its messages.
    pub fn audited_as(mut self, text: &'static str) -> Self {
        self.audit_text = Some(text);
        self
    }

    /// The `error` field of the audit record.
    pub fn audit_message(&self) -> String {
        match self.audit_text {
            Some(t) => t.to_owned(),
            None => self.messages.join("; "),
        }
    }
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(400, msg)
    }
    pub fn permission_denied() -> Self {
        Self::new(403, "permission denied")
    }
    pub fn not_found() -> Self {
        Self {
            status: 404,
            messages: Vec::new(),
            body: None,
            audit_text: None,
        }
    }
    pub fn unsupported_path() -> Self {
        Self::new(404, "unsupported path")
    }
    pub fn unsupported_operation() -> Self {
        Self::new(405, "unsupported operation")
    }
    pub fn sealed() -> Self {
        Self::new(503, "Vault is sealed")
    }
    /// HA: this node is not (or no longer) the active node; the client may
    /// retry (through any node).
    pub fn not_active() -> Self {
        Self::new(503, "this node is not the active node; retry")
    }

    /// The detail goes to the server log; the client sees a fixed message.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(500, "internal error")
    }
}

impl From<palisade_barrier::BarrierError> for ApiError {
    fn from(e: palisade_barrier::BarrierError) -> Self {
        use palisade_barrier::BarrierError as B;
        match e {
            B::Sealed => ApiError::sealed(),
            B::NotInitialized => ApiError::new(400, "Vault is not initialized"),
            B::AlreadyInitialized => ApiError::bad_request("Vault is already initialized"),
            B::InvalidPath(_) => ApiError::bad_request("invalid path"),
            B::Parameters(m) => ApiError::bad_request(m),
            B::InvalidUnsealKey => ApiError::bad_request("invalid unseal key"),
            // HA: the database refused a write of a deposed active node
            B::Storage(palisade_storage::StorageError::Fenced) => {
                tracing::warn!("HA: a write was refused: this node no longer leads");
                ApiError::not_active()
            }
            // Integrity failures are reported, never returned as data.
            other => ApiError::internal(other),
        }
    }
}

/// Helpers for typed field access with Vault-style error messages.
pub mod fields {
    use super::ApiError;
    use serde_json::Value;

    pub fn string(v: &Value, name: &str) -> Result<String, ApiError> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            _ => Err(ApiError::bad_request(format!(
                "field {name:?} must be a string"
            ))),
        }
    }

    /// Go's strconv.ParseBool, which Vault uses for query parameters.
    pub fn parse_bool(s: &str) -> Option<bool> {
        match s {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
            "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
            _ => None,
        }
    }

    pub fn boolean(v: &Value, name: &str) -> Result<bool, ApiError> {
        match v {
            Value::Bool(b) => Ok(*b),
            Value::String(s) => parse_bool(s)
                .ok_or_else(|| ApiError::bad_request(format!("field {name:?} must be a boolean"))),
            // 0 and 1 only: 1.5, -1 or 2^64 are not booleans
            Value::Number(n) => match n.as_u64() {
                Some(0) => Ok(false),
                Some(1) => Ok(true),
                _ => Err(ApiError::bad_request(format!(
                    "field {name:?} must be a boolean"
                ))),
            },
            Value::Null => Ok(false),
            _ => Err(ApiError::bad_request(format!(
                "field {name:?} must be a boolean"
            ))),
        }
    }

    pub fn int(v: &Value, name: &str) -> Result<i64, ApiError> {
        match v {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                .ok_or_else(|| ApiError::bad_request(format!("field {name:?} must be an integer"))),
            Value::String(s) => s
                .trim()
                .parse()
                .map_err(|_| ApiError::bad_request(format!("field {name:?} must be an integer"))),
            _ => Err(ApiError::bad_request(format!(
                "field {name:?} must be an integer"
            ))),
        }
    }

    /// Longest duration accepted, in seconds: Go's `time.Duration` limit
    /// (about 292 years), so that a duration in nanoseconds fits an i64 and
    /// adding one to a timestamp is checked, never wrapped.
    pub const MAX_DURATION_SECS: i64 = i64::MAX / 1_000_000_000;

    /// A duration in seconds: a number of seconds or a Go-style string
    /// ("1h"); never negative, at most [`MAX_DURATION_SECS`]. Errors name the
    /// field, never the value.
    pub fn duration_secs(v: &Value, name: &str) -> Result<i64, ApiError> {
        let secs = match v {
            Value::Number(_) => int(v, name)?,
            Value::String(s) if s.is_empty() => 0,
            Value::String(s) => match palisade_core::parse_duration(s) {
                Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                Err(_) => {
                    return Err(ApiError::bad_request(format!(
                        "field {name:?}: invalid duration"
                    )));
                }
            },
            Value::Null => 0,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "field {name:?} must be a duration"
                )));
            }
        };
        if secs < 0 {
            return Err(ApiError::bad_request(format!(
                "field {name:?}: a duration cannot be negative"
            )));
        }
        if secs > MAX_DURATION_SECS {
            return Err(ApiError::bad_request(format!(
                "field {name:?}: duration too large"
            )));
        }
        Ok(secs)
    }

    /// A list of strings given as a JSON array or a comma-separated string.
    pub fn string_list(v: &Value, name: &str) -> Result<Vec<String>, ApiError> {
        match v {
            Value::Array(a) => a.iter().map(|x| string(x, name)).collect(),
            Value::String(s) => Ok(s
                .split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect()),
            Value::Null => Ok(Vec::new()),
            _ => Err(ApiError::bad_request(format!(
                "field {name:?} must be a list of strings"
            ))),
        }
    }
}

#[cfg(test)]
mod auth_block_tests {
    use super::*;

    #[test]
    fn the_token_is_in_the_response_body_and_never_in_debug_output() {
        let a = AuthBlock {
            client_token: palisade_core::Secret::new("hvs.THE-TOKEN".into()),
            accessor: "acc".into(),
            ..Default::default()
        };
        assert!(!format!("{a:?}").contains("THE-TOKEN"), "{a:?}");
        let body = serde_json::to_value(&a).unwrap();
        assert_eq!(body["client_token"], "hvs.THE-TOKEN");
    }
}
