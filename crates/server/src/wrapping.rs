//! Response wrapping (Vault's): a request sent with `X-Vault-Wrap-TTL` is
//! answered with a single-use wrapping token instead of its response; the
//! response is kept behind the barrier with the token and handed out once,
//! to whoever unwraps it first.
//!
//! - The wrapping token is an orphan with the `response-wrapping` policy
//!   (a reserved name), one use, the wrap TTL, not renewable. It authorises
//!   only `sys/wrapping/unwrap` and `sys/wrapping/rewrap` (`Core::begin`).
//! - The wrapped response is the envelope the client would have received
//!   (data, auth, lease), stored at `sys/token/wrapped/<token hash>` in the
//!   transaction that creates the token and deleted with it: expiry,
//!   revocation and tidy remove it like any token.
//! - `sys/wrapping/unwrap` takes it atomically (`TokenStore::take_wrapped`):
//!   of two concurrent unwraps, one gets the response and the other
//!   `wrapping token is not valid or does not exist`.
//! - `sys/wrapping/wrap` wraps the request body, `lookup` (no token needed,
//!   as in Vault) tells the creation path, time and TTL, `rewrap` moves the
//!   response to a new wrapping token with the same TTL.
//!
//! Audit: the wrapped request's response record carries `wrap_info` with
//! the token and accessors HMAC'd; the unwrap's response record carries the
//! original response, HMAC'd like every response.

use serde_json::{Map, Value, json};

use crate::core::{Authorized, Core};
use crate::logical::{ApiError, Operation, Request, Response, WrapInfo, fields};
use crate::token::NewToken;

/// The policy every wrapping token has, and nothing else may be called.
pub const POLICY: &str = "response-wrapping";

/// Paths a wrapping token may be used on, as its own token: unwrapping
/// itself (Vault's `response-wrapping` policy grants no more; a rewrap
/// needs a token whose policies allow it).
pub fn usable_with_wrapping_token(path: &str, op: Operation) -> bool {
    op == Operation::Write && path == "sys/wrapping/unwrap"
}

/// Refuse a policy list holding the reserved `response-wrapping` (OpenBao's
/// answer): only wrapping tokens carry it.
pub fn refuse_reserved_policy(policies: &[String]) -> Result<(), ApiError> {
    if policies.iter().any(|p| p == POLICY) {
        return Err(ApiError::bad_request(format!(
            "cannot assign policy {POLICY:?}"
        )));
    }
    Ok(())
}

fn invalid() -> ApiError {
    ApiError::bad_request("wrapping token is not valid or does not exist")
}

/// What was wrapped, as stored: the envelope and how it was made.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    /// The response envelope, without its `request_id`.
    envelope: Value,
    creation_path: String,
    /// The token the response created, if it created one.
    #[serde(default)]
    wrapped_accessor: String,
}

/// Answer `req` with a wrapping token for `resp`, when it asked for one
/// and there is something to wrap (a 204 has nothing: it is returned as is).
pub async fn maybe_wrap(core: &Core, req: &Request, resp: Response) -> Result<Response, ApiError> {
    let Some(ttl) = req.wrap_ttl else {
        return Ok(resp);
    };
    if resp.status == 204 || resp.bytes.is_some() || resp.wrap_info.is_some() {
        return Ok(resp);
    }
    // an unwrap's answer is the stored envelope itself (raw): wrapped
    // again as it is, never returned bare to a client that asked for wrapping
    let mut envelope = match &resp.raw {
        Some(raw) => raw.clone(),
        None => resp.envelope(""),
    };
    if let Value::Object(o) = &mut envelope {
        o.remove("request_id");
    }
    // the accessor of what the wrapped response hands out: a token's, or a
    // secret ID's (OpenBao; Terraform's with_wrapped_accessor reads it)
    let wrapped_accessor = match (&resp.auth, &resp.data) {
        (Some(a), _) => a.accessor.clone(),
        (None, Some(Value::Object(d))) => d
            .get("secret_id_accessor")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    };
    let stored = Stored {
        envelope,
        creation_path: req.path.to_string(),
        wrapped_accessor,
    };
    wrap_stored(core, stored, ttl).await
}

async fn wrap_stored(core: &Core, stored: Stored, ttl: i64) -> Result<Response, ApiError> {
    let bytes = zeroize::Zeroizing::new(serde_json::to_vec(&stored).map_err(ApiError::internal)?);
    let (id, entry, warnings) = core
        .tokens
        .create(NewToken {
            policies: vec![POLICY.to_string()],
            display_name: String::new(),
            num_uses: 1,
            ttl,
            renewable: false,
            path: stored.creation_path.clone(),
            wrapped: Some(bytes),
            ..NewToken::default()
        })
        .await?;
    let mut r = Response::data(Value::Null);
    r.data = None;
    r.warnings = warnings;
    r.wrap_info = Some(WrapInfo {
        token: palisade_core::Secret::new(id),
        accessor: entry.accessor.clone(),
        ttl: entry.creation_ttl,
        creation_time: palisade_core::rfc3339(entry.creation_time.saturating_mul(1_000_000_000)),
        creation_path: stored.creation_path,
        wrapped_accessor: stored.wrapped_accessor,
    });
    Ok(r)
}

/// The wrapping token a request names: the body's `token`, else (for
/// unwrap and rewrap) the caller's own token when it is a wrapping token.
fn named_token_hash(core: &Core, auth: &Authorized) -> Result<String, ApiError> {
    match auth.request().data.get("token") {
        Some(Value::String(t)) if !t.is_empty() => {
            if t.len() > 512 {
                return Err(invalid());
            }
            core.tokens.hash(t)
        }
        None | Some(Value::Null) => {
            if auth.token().wrapping {
                Ok(auth.token().hash.clone())
            } else {
                Err(ApiError::bad_request("missing token"))
            }
        }
        Some(Value::String(_)) => Err(ApiError::bad_request("missing token")),
        Some(_) => Err(ApiError::bad_request("token must be a string")),
    }
}

/// `sys/wrapping/<rest>` for a token holder.
pub async fn handle(core: &Core, auth: &Authorized, rest: &str) -> Result<Response, ApiError> {
    let req = auth.request();
    if req.operation != Operation::Write {
        return Err(ApiError::unsupported_operation());
    }
    match rest {
        "wrap" => {
            if req.wrap_ttl.is_none() {
                return Err(ApiError::bad_request(
                    "wrapping TTL must be set (X-Vault-Wrap-TTL)",
                ));
            }
            // wrapped by `maybe_wrap` after the handler, like any response
            Ok(Response::data(Value::Object(req.data.clone())))
        }
        "unwrap" => {
            let hash = named_token_hash(core, auth)?;
            if auth.token().wrapping && hash != auth.token().hash {
                // a wrapping token unwraps itself only
                return Err(ApiError::permission_denied());
            }
            let (_, w) = core.tokens.take_wrapped(&hash).await?.ok_or_else(invalid)?;
            let stored: Stored = serde_json::from_slice(&w).map_err(ApiError::internal)?;
            let mut env = stored.envelope;
            if let Value::Object(o) = &mut env {
                o.insert("request_id".into(), Value::String(req.id.clone()));
            }
            Ok(Response::raw(200, env))
        }
        "rewrap" => {
            let hash = named_token_hash(core, auth)?;
            if auth.token().wrapping && hash != auth.token().hash {
                return Err(ApiError::permission_denied());
            }
            // the new token first, then the old one taken: a crash between
            // leaves two tokens, never none
            let (old, w) = core.tokens.peek_wrapped(&hash).await?.ok_or_else(invalid)?;
            let stored: Stored = serde_json::from_slice(&w).map_err(ApiError::internal)?;
            let ttl = req.wrap_ttl.unwrap_or(old.creation_ttl).max(1);
            let resp = wrap_stored(core, stored, ttl).await?;
            if core.tokens.take_wrapped(&hash).await?.is_none() {
                // another unwrap or rewrap took it meanwhile: this one never happened
                if let Some(info) = &resp.wrap_info {
                    let new_hash = core.tokens.hash(info.token.expose())?;
                    core.tokens.revoke_tree(&new_hash).await?;
                }
                return Err(invalid());
            }
            Ok(resp)
        }
        "lookup" => lookup(core, req).await,
        _ => Err(ApiError::unsupported_path()),
    }
}

/// `sys/wrapping/lookup` (served without a token, as in Vault): the
/// creation path, time and TTL of the wrapping token in the body.
pub async fn lookup(core: &Core, req: &Request) -> Result<Response, ApiError> {
    if !matches!(req.operation, Operation::Write | Operation::Read) {
        return Err(ApiError::unsupported_operation());
    }
    // a read takes it from the query (Vault), a write from the body
    let token = match req.field("token").as_ref() {
        Some(v @ Value::String(_)) => fields::string(v, "token")?,
        None | Some(Value::Null) => return Err(ApiError::bad_request("missing token")),
        Some(_) => return Err(ApiError::bad_request("token must be a string")),
    };
    if token.is_empty() || token.len() > 512 {
        return Err(invalid());
    }
    let hash = core.tokens.hash(&token)?;
    let (e, _) = core.tokens.peek_wrapped(&hash).await?.ok_or_else(invalid)?;
    let mut m = Map::new();
    m.insert("creation_path".into(), json!(e.path));
    m.insert(
        "creation_time".into(),
        json!(palisade_core::rfc3339(
            e.creation_time.saturating_mul(1_000_000_000)
        )),
    );
    m.insert("creation_ttl".into(), json!(e.creation_ttl));
    Ok(Response::data(Value::Object(m)))
}
