//! Vault's identity tokens: OIDC ID tokens about the caller's entity,
//! signed with the named keys of `identity/oidc/key` (shared with the
//! OAuth provider, `crate::oauth`).
//!
//! - `identity/oidc/config`: `issuer` (scheme://host[:port]; empty: the
//!   server's `api_addr`). Tokens say `iss = <issuer>/v1/identity/oidc`.
//! - `identity/oidc/role/:name`: `key` (must exist), `client_id` (the
//!   tokens' `aud`; random unless given), `ttl` (24 h by default, at most
//!   the key's `verification_ttl`), `template` (only empty: claim templates
//!   are not supported, and a role asking for one is refused rather than
//!   issuing tokens without the claims it expects).
//! - `identity/oidc/token/:name` (read): a token for the caller's entity
//!   (`sub`), if the role's key lists the role's client ID in its
//!   `allowed_client_ids` (or `*`). A token without an entity gets 400.
//! - `identity/oidc/introspect`: `{"active": true}` for a token this server
//!   signed that has not expired, whose entity exists and is enabled (and
//!   whose `aud` is `client_id`, when given); else `active: false` with the
//!   reason.
//! - `identity/oidc/.well-known/openid-configuration` and `.well-known/keys`,
//!   served without a token: the discovery document and every named key's
//!   published public keys.
//!
//! Storage, behind the barrier: `sys/identity/oidc/config`,
//! `sys/identity/oidc/role/<name>`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::core::{Authorized, Core};
use crate::logical::{ApiError, Operation, Request, Response, fields};
use crate::oauth::keys::{KEY_PREFIX, Ring};

const CONFIG: &str = "sys/identity/oidc/config";
const ROLE_PREFIX: &str = "sys/identity/oidc/role/";
const DEFAULT_TTL: i64 = 24 * 3600;

/// The paths served without a token.
pub const DISCOVERY: &str = "identity/oidc/.well-known/openid-configuration";
pub const KEYS: &str = "identity/oidc/.well-known/keys";

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Config {
    pub issuer: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Role {
    pub key: String,
    pub client_id: String,
    pub ttl: i64,
    pub template: String,
}

/// The configuration, cached (dropped by its writes and at seal).
#[derive(Default)]
pub struct Cache {
    config: std::sync::Mutex<Option<Config>>,
    verifier: std::sync::Mutex<Option<(String, Arc<palisade_jwt::Verifier>)>>,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cache {
    pub fn clear(&self) {
        *lock(&self.config) = None;
        *lock(&self.verifier) = None;
    }
}

async fn config(core: &Core) -> Result<Config, ApiError> {
    if let Some(c) = lock(&core.identity.oidc.config).clone() {
        return Ok(c);
    }
    let c: Config = crate::json::stored(core.barrier.get(CONFIG).await?)?.unwrap_or_default();
    *lock(&core.identity.oidc.config) = Some(c.clone());
    Ok(c)
}

/// The `iss` of identity tokens.
pub async fn issuer(core: &Core) -> Result<String, ApiError> {
    let c = config(core).await?;
    let base = if c.issuer.is_empty() {
        core.api_addr().to_string()
    } else {
        c.issuer
    };
    Ok(format!("{}/v1/identity/oidc", base.trim_end_matches('/')))
}

/// `scheme://host[:port]`, without path, query or fragment.
fn issuer_ok(s: &str) -> Result<(), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid issuer: expected scheme://host[:port] with scheme http or https and no path",
        )
    };
    let u = url::Url::parse(s).map_err(|_| bad())?;
    if !matches!(u.scheme(), "http" | "https")
        || u.host_str().is_none()
        || !matches!(u.path(), "" | "/")
        || u.query().is_some()
        || u.fragment().is_some()
        || !u.username().is_empty()
        || u.password().is_some()
    {
        return Err(bad());
    }
    Ok(())
}

fn name_ok(name: &str) -> Result<(), ApiError> {
    if crate::approle::is_canonical_role_name(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid name: names are lowercase ASCII letters, digits and '_-.', begin and end with a letter, a digit or '_'",
        ))
    }
}

async fn get_role(core: &Core, name: &str) -> Result<Option<Role>, ApiError> {
    crate::json::stored(core.barrier.get(&format!("{ROLE_PREFIX}{name}")).await?)
}

async fn get_ring(core: &Core, name: &str) -> Result<Option<Ring>, ApiError> {
    crate::json::stored(core.barrier.get(&format!("{KEY_PREFIX}{name}")).await?)
}

/// The roles that sign with key `name` (a key in use cannot be deleted).
pub async fn roles_using(core: &Core, key: &str) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    for n in core.barrier.list(ROLE_PREFIX).await? {
        if get_role(core, &n).await?.is_some_and(|r| r.key == key) {
            out.push(n);
        }
    }
    out.sort();
    Ok(out)
}

/// The longest `ttl` of the roles signing with `key` (its
/// `verification_ttl` may not be shorter).
pub async fn longest_role_ttl(core: &Core, key: &str) -> Result<Option<(String, i64)>, ApiError> {
    let mut best: Option<(String, i64)> = None;
    for n in core.barrier.list(ROLE_PREFIX).await? {
        if let Some(r) = get_role(core, &n).await?
            && r.key == key
            && best.as_ref().is_none_or(|(_, t)| r.ttl > *t)
        {
            best = Some((n, r.ttl));
        }
    }
    Ok(best)
}

/// `identity/oidc/{config,role,token,introspect}` for a token holder; None
/// when the path is not one of these (the OAuth provider's admin API).
pub async fn handle(
    core: &Arc<Core>,
    auth: &Authorized,
    rest: &str,
) -> Option<Result<Response, ApiError>> {
    let req = auth.request();
    let op = req.operation;
    let r = match (rest, op) {
        ("config", Operation::Read) => read_config(core).await,
        ("config", Operation::Write) => write_config(core, req).await,
        ("role" | "role/", Operation::List) => list_roles(core).await,
        ("introspect", Operation::Write) => introspect(core, req).await,
        ("config" | "introspect", _) => Err(ApiError::unsupported_operation()),
        _ => {
            if let Some(name) = rest.strip_prefix("role/") {
                role(core, req, name).await
            } else if let Some(name) = rest.strip_prefix("token/") {
                if op == Operation::Read {
                    token(core, auth, name).await
                } else {
                    Err(ApiError::unsupported_operation())
                }
            } else {
                return None;
            }
        }
    };
    Some(r)
}

async fn read_config(core: &Core) -> Result<Response, ApiError> {
    let c = config(core).await?;
    Ok(Response::data(json!({ "issuer": c.issuer })))
}

async fn write_config(core: &Core, req: &Request) -> Result<Response, ApiError> {
    let issuer = match req.data.get("issuer") {
        None | Some(Value::Null) => None,
        Some(v) => Some(fields::string(v, "issuer")?),
    };
    let mut c = config(core).await?;
    let mut r = Response::no_content();
    if let Some(i) = issuer {
        if !i.is_empty() {
            issuer_ok(&i)?;
            r = Response::data(Value::Null).warn(
                "If \"issuer\" is set explicitly, all tokens must be validated against that address, including those issued by secondary clusters. Setting issuer to \"\" will restore the default behavior of using the cluster's api_addr as the issuer.",
            );
            r.data = None;
        }
        c.issuer = i;
    }
    core.barrier
        .put(CONFIG, &crate::json::to_stored(&c)?)
        .await?;
    *lock(&core.identity.oidc.config) = None;
    *lock(&core.identity.oidc.verifier) = None;
    Ok(r)
}

async fn list_roles(core: &Core) -> Result<Response, ApiError> {
    let mut keys = core.barrier.list(ROLE_PREFIX).await?;
    keys.sort();
    if keys.is_empty() {
        return Err(ApiError::not_found());
    }
    Ok(Response::data(json!({ "keys": keys })))
}

async fn role(core: &Core, req: &Request, name: &str) -> Result<Response, ApiError> {
    name_ok(name)?;
    let path = format!("{ROLE_PREFIX}{name}");
    match req.operation {
        Operation::Read => {
            let r = get_role(core, name)
                .await?
                .ok_or_else(ApiError::not_found)?;
            Ok(Response::data(json!({
                "key": r.key,
                "client_id": r.client_id,
                "ttl": r.ttl,
                "template": r.template,
            })))
        }
        Operation::Delete => {
            core.barrier.delete(&path).await?;
            Ok(Response::no_content())
        }
        Operation::Write => {
            let _g = core.oauth.writes.lock().await;
            let mut r = get_role(core, name).await?.unwrap_or_else(|| Role {
                client_id: crate::token::random_base62(26),
                ttl: DEFAULT_TTL,
                ..Role::default()
            });
            if let Some(v) = req.data.get("key").filter(|v| !v.is_null()) {
                r.key = fields::string(v, "key")?;
            }
            if r.key.is_empty() {
                return Err(ApiError::bad_request("the key parameter is required"));
            }
            name_ok(&r.key)?;
            let ring = get_ring(core, &r.key)
                .await?
                .ok_or_else(|| ApiError::bad_request(format!("cannot find key {:?}", r.key)))?;
            if let Some(v) = req.data.get("ttl").filter(|v| !v.is_null()) {
                r.ttl = fields::duration_secs(v, "ttl")?;
                if r.ttl <= 0 {
                    r.ttl = DEFAULT_TTL;
                }
            }
            if r.ttl > ring.verification_ttl {
                return Err(ApiError::bad_request(
                    "a role's token ttl cannot be longer than the verification_ttl of the key it references",
                ));
            }
            if let Some(v) = req.data.get("client_id").filter(|v| !v.is_null()) {
                let c = fields::string(v, "client_id")?;
                if !c.is_empty() {
                    if c.len() > 256 || c.chars().any(|ch| ch.is_control() || ch == ' ') {
                        return Err(ApiError::bad_request(
                            "client_id: at most 256 bytes, without spaces or control characters",
                        ));
                    }
                    r.client_id = c;
                }
            }
            if let Some(v) = req.data.get("template").filter(|v| !v.is_null()) {
                let t = fields::string(v, "template")?;
                if !t.trim().is_empty() {
                    return Err(ApiError::bad_request(
                        "claim templates are not supported: a role's tokens carry iss, sub, aud, iat, exp and namespace",
                    ));
                }
                r.template = String::new();
            }
            core.barrier
                .put(&path, &crate::json::to_stored(&r)?)
                .await?;
            Ok(Response::no_content())
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

/// `identity/oidc/token/:name`: an ID token for the caller's entity.
async fn token(core: &Core, auth: &Authorized, name: &str) -> Result<Response, ApiError> {
    name_ok(name)?;
    let role = get_role(core, name)
        .await?
        .ok_or_else(|| ApiError::bad_request(format!("role {name:?} not found")))?;
    let entity_id = auth.token().entity_id.clone();
    if entity_id.is_empty() {
        return Err(ApiError::bad_request(
            "no entity associated with the request's token",
        ));
    }
    let s = core.identity.state(core).await?;
    let entity = s.entity(&entity_id).ok_or_else(|| {
        ApiError::bad_request("the entity of the request's token no longer exists")
    })?;
    if entity.disabled {
        return Err(ApiError::permission_denied());
    }
    let ring = get_ring(core, &role.key)
        .await?
        .ok_or_else(|| ApiError::bad_request(format!("cannot find key {:?}", role.key)))?;
    if !ring
        .allowed_client_ids
        .iter()
        .any(|c| c == "*" || *c == role.client_id)
    {
        return Err(ApiError::bad_request(format!(
            "the key {:?} does not list the client ID of the role {name:?} as an allowed client ID",
            role.key
        )));
    }
    let (_, signer) = crate::oauth::signing_key(core, &role.key).await?;
    let now = core.tokens.now();
    let claims = json!({
        "iss": issuer(core).await?,
        "sub": entity.id,
        "aud": role.client_id,
        "iat": now,
        "exp": now + role.ttl,
        "namespace": "root",
    });
    let token = signer.sign("JWT", &claims)?;
    Ok(Response::data(json!({
        "client_id": role.client_id,
        "token": token,
        "ttl": role.ttl,
    })))
}

/// Every named key's published public keys.
async fn jwks(core: &Core) -> Result<Vec<Value>, ApiError> {
    let now = core.tokens.now();
    let mut names = core.barrier.list(KEY_PREFIX).await?;
    names.sort();
    let mut out = Vec::new();
    for n in names {
        // a ring due for rotation is rotated first, so the next key is
        // published before it signs
        let (ring, _) = crate::oauth::signing_key(core, &n).await?;
        out.extend(ring.jwks(now));
    }
    Ok(out)
}

/// The `kid` in a compact JWS's header, if it has one.
fn header_kid(token: &str) -> Option<String> {
    use base64::Engine;
    let h = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(h)
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("kid")?.as_str().map(str::to_string)
}

/// A verifier holding the one published key a token names: however many
/// versions the keys keep published, the verifier stays within the JWK
/// library's bounds. None: no published key has that `kid`.
async fn verifier(
    core: &Core,
    token: &str,
) -> Result<Option<Arc<palisade_jwt::Verifier>>, ApiError> {
    let Some(kid) = header_kid(token) else {
        return Ok(None);
    };
    let Some(jwk) = jwks(core)
        .await?
        .into_iter()
        .find(|k| k.get("kid").and_then(Value::as_str) == Some(kid.as_str()))
    else {
        return Ok(None);
    };
    let doc = json!({ "keys": [jwk] }).to_string();
    let iss = issuer(core).await?;
    let cache_key = format!("{iss}\n{doc}");
    if let Some((k, v)) = lock(&core.identity.oidc.verifier).as_ref()
        && *k == cache_key
    {
        return Ok(Some(v.clone()));
    }
    let mut cfg = palisade_jwt::IssuerConfig::new(
        iss,
        Vec::new(),
        vec![
            palisade_jwt::Alg::EdDSA,
            palisade_jwt::Alg::ES256,
            palisade_jwt::Alg::RS256,
        ],
        palisade_jwt::KeySource::Jwks(doc),
    );
    cfg.caller_checks_audience = true;
    let v = palisade_jwt::Verifier::new(vec![cfg], reqwest::Client::new())
        .await
        .map_err(ApiError::internal)?;
    *lock(&core.identity.oidc.verifier) = Some((cache_key, v.clone()));
    Ok(Some(v))
}

async fn introspect(core: &Core, req: &Request) -> Result<Response, ApiError> {
    let token = match req.data.get("token") {
        Some(v) if !v.is_null() => fields::string(v, "token")?,
        _ => String::new(),
    };
    let client_id = match req.data.get("client_id") {
        Some(v) if !v.is_null() => fields::string(v, "client_id")?,
        _ => String::new(),
    };
    let inactive = |why: &str| Ok(Response::raw(200, json!({ "active": false, "error": why })));
    if token.is_empty() {
        return inactive("missing token");
    }
    let Some(v) = verifier(core, &token).await? else {
        return inactive("invalid token: no published key has its kid");
    };
    let claims = match v.verify_at_wall(&token, core.clock_wall()).await {
        Ok(c) => c,
        Err(e) => return inactive(&format!("invalid token: {e}")),
    };
    if !client_id.is_empty() && !claims.aud.contains(&client_id) {
        return inactive("token audience does not match the client_id");
    }
    let Some(sub) = claims.sub.as_deref() else {
        return inactive("token has no subject");
    };
    let s = core.identity.state(core).await?;
    match s.entity(sub) {
        Some(e) if !e.disabled => Ok(Response::raw(200, json!({ "active": true }))),
        Some(_) => inactive("the token's entity is disabled"),
        None => inactive("the token's entity no longer exists"),
    }
}

/// The discovery document and the keys, served without a token.
pub async fn public(core: &Core, path: &str) -> Result<Response, ApiError> {
    match path {
        DISCOVERY => {
            let iss = issuer(core).await?;
            Ok(Response::raw(
                200,
                json!({
                    "issuer": iss,
                    "jwks_uri": format!("{iss}/.well-known/keys"),
                    "response_types_supported": ["id_token"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["EdDSA", "ES256", "RS256"],
                }),
            ))
        }
        KEYS => Ok(Response::raw(200, json!({ "keys": jwks(core).await? }))),
        _ => Err(ApiError::unsupported_path()),
    }
}

/// Whether a request is one of the public reads.
pub fn is_public(op: Operation, path: &str) -> bool {
    op == Operation::Read && (path == DISCOVERY || path == KEYS)
}
