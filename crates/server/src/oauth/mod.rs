//! The OAuth2 / OpenID Connect provider for service-to-service tokens.
//!
//! Administration follows Vault's `identity/oidc` API shapes (token with
//! policies on those paths):
//! - `identity/oidc/key/:name` — signing key rings ([`keys`]): `algorithm`
//!   (`EdDSA` default, `ES256`, `RS256`), `rotation_period`,
//!   `verification_ttl`; `identity/oidc/key/:name/rotate`;
//! - `identity/oidc/client/:name` — clients: `client_type` confidential,
//!   `token_endpoint_auth_method` (`client_secret_basic` default,
//!   `client_secret_post`, `private_key_jwt` with the client's `jwks`),
//!   `allowed_scopes`, `allowed_audiences`, `access_token_ttl` (5 min by
//!   default, at most the key's `verification_ttl`), `key`; the secret is
//!   returned once, at creation and by `identity/oidc/client/:name/rotate-secret`,
//!   and stored only as an HMAC under the provider salt;
//! - `identity/oidc/provider/:name` — `issuer` (scheme://host[:port]),
//!   `allowed_client_ids` (`*` for all), `scopes_supported`, `key`.
//!
//! Public endpoints, served without a Vault token (`endpoints.rs`), under
//! `/v1/identity/oidc/provider/:name/`: `.well-known/openid-configuration`,
//! `.well-known/keys`, `token` (client credentials, RFC 8693 token
//! exchange), `introspect` (RFC 7662), `revoke` (RFC 7009); and
//! `/.well-known/openid-configuration` at the root for the provider named
//! `default`.
//!
//! Access tokens are JWTs (RFC 9068 `at+jwt`) with `iss`, `sub`, `aud`,
//! `exp`, `iat`, `nbf`, `jti`, `scope`, `client_id`; issuing one writes
//! nothing (a revocation writes its `jti` until the token's `exp`).
//!
//! Storage, behind the barrier: `sys/oauth/salt`, `sys/oauth/key/<name>`,
//! `sys/oauth/client/<name>`, `sys/oauth/client_id/<client_id>` (→ name),
//! `sys/oauth/provider/<name>`, `sys/oauth/revoked/<jti>` (→ exp),
//! `sys/oauth/assertion/<sha256(iss,jti)>` (→ exp: private_key_jwt replay).

pub mod endpoints;
pub mod keys;

use std::collections::HashMap;
use std::sync::Arc;

use palisade_crypto::mac::MacKey;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::approle::is_canonical_role_name;
use crate::core::{Authorized, Core};
use crate::logical::{ApiError, Operation, Request, Response, fields};
use keys::{Algorithm, KEY_PREFIX, Ring, Signer};

const SALT: &str = "sys/oauth/salt";
const CLIENT_PREFIX: &str = "sys/oauth/client/";
const CLIENT_ID_PREFIX: &str = "sys/oauth/client_id/";
const PROVIDER_PREFIX: &str = "sys/oauth/provider/";
pub(crate) const REVOKED_PREFIX: &str = "sys/oauth/revoked/";
pub(crate) const ASSERTION_PREFIX: &str = "sys/oauth/assertion/";

/// Default access token lifetime (5 minutes).
pub const DEFAULT_ACCESS_TOKEN_TTL: i64 = 300;

/// A client, as stored.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Client {
    pub name: String,
    pub client_id: String,
    /// HMAC-SHA256 of the secret under the provider salt, hex.
    pub secret_hash: String,
    pub token_endpoint_auth_method: String,
    /// The client's public keys (a JWKS document) for `private_key_jwt`.
    pub jwks: String,
    pub allowed_scopes: Vec<String>,
    pub allowed_audiences: Vec<String>,
    pub access_token_ttl: i64,
    pub key: String,
}

impl Client {
    fn to_json(&self) -> Value {
        json!({
            "client_id": self.client_id,
            "client_type": "confidential",
            "token_endpoint_auth_method": self.token_endpoint_auth_method,
            "allowed_scopes": self.allowed_scopes,
            "allowed_audiences": self.allowed_audiences,
            "access_token_ttl": self.access_token_ttl,
            "key": self.key,
            "jwks": if self.jwks.is_empty() { Value::Null } else { serde_json::from_str(&self.jwks).unwrap_or(Value::Null) },
        })
    }
}

/// A provider, as stored.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Provider {
    /// scheme://host[:port], without a path.
    pub issuer: String,
    pub allowed_client_ids: Vec<String>,
    pub scopes_supported: Vec<String>,
    pub key: String,
}

impl Provider {
    /// The `iss` of its tokens (Vault's form).
    pub fn issuer_url(&self, name: &str) -> String {
        format!("{}/v1/identity/oidc/provider/{name}", self.issuer)
    }
    fn allows(&self, client_id: &str) -> bool {
        self.allowed_client_ids
            .iter()
            .any(|c| c == "*" || c == client_id)
    }
}

/// The provider's in-memory state: caches of what is stored (dropped on
/// every write and at seal) and the revoked token ids.
#[derive(Default)]
pub struct OAuth {
    pub keys: keys::Cache,
    clients: std::sync::Mutex<HashMap<String, Arc<Client>>>,
    /// Bumped by every client write and delete, before the cache entry is
    /// dropped: a lookup that read storage before a write must not cache
    /// what it read after it.
    clients_gen: std::sync::atomic::AtomicU64,
    providers: std::sync::Mutex<HashMap<String, Arc<Provider>>>,
    salt: std::sync::Mutex<Option<Arc<MacKey>>>,
    /// jti → exp of revoked tokens; `None` until loaded after an unseal.
    revoked: std::sync::Mutex<Option<HashMap<String, i64>>>,
    /// Verifiers of each provider's own tokens, with the JWKS they hold.
    verifiers: std::sync::Mutex<HashMap<String, (String, Arc<palisade_jwt::Verifier>)>>,
    /// Serialises key rotation and the writes of this module.
    pub(crate) writes: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl OAuth {
    /// Forget everything (seal).
    pub fn clear(&self) {
        self.keys.forget(None);
        lock(&self.clients).clear();
        lock(&self.providers).clear();
        *lock(&self.salt) = None;
        *lock(&self.revoked) = None;
        lock(&self.verifiers).clear();
    }
}

async fn get_json<T: serde::de::DeserializeOwned>(
    core: &Core,
    key: &str,
) -> Result<Option<T>, ApiError> {
    crate::json::stored(core.barrier.get(key).await?)
}

fn to_bytes<T: Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
    crate::json::to_stored(v)
}

/// The HMAC key client secrets are hashed with.
pub(crate) async fn salt(core: &Core) -> Result<Arc<MacKey>, ApiError> {
    if let Some(k) = lock(&core.oauth.salt).clone() {
        return Ok(k);
    }
    let _g = core.oauth.writes.lock().await;
    let k = match core.barrier.get(SALT).await? {
        Some(b) => MacKey::from_bytes(&b),
        None => {
            let k = MacKey::generate();
            core.barrier.put(SALT, k.expose_bytes()).await?;
            k
        }
    };
    let k = Arc::new(k);
    *lock(&core.oauth.salt) = Some(k.clone());
    Ok(k)
}

/// Drop a client from the cache after a write (the generation first).
fn forget_client(core: &Core, client_id: &str) {
    let mut cache = lock(&core.oauth.clients);
    core.oauth
        .clients_gen
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    cache.remove(client_id);
}

/// A key ring and its signer, rotated first when due.
pub(crate) async fn signing_key(
    core: &Core,
    name: &str,
) -> Result<(Arc<Ring>, Arc<Signer>), ApiError> {
    let now = core.tokens.now();
    if let Some((ring, signer)) = core.oauth.keys.get(name)
        && !ring.rotation_due(now)
    {
        return Ok((ring, signer));
    }
    let _g = core.oauth.writes.lock().await;
    let path = format!("{KEY_PREFIX}{name}");
    let Some(mut ring) = get_json::<Ring>(core, &path).await? else {
        return Err(ApiError::bad_request(format!(
            "key {name:?} does not exist"
        )));
    };
    if ring.rotation_due(now) {
        if ring
            .current()
            .is_none_or(|c| now >= c.signing_since.saturating_add(ring.rotation_period))
        {
            ring.rotate(now)?;
        } else {
            ring.prune(now);
        }
        core.barrier.put(&path, &to_bytes(&ring)?).await?;
        tracing::info!(key = name, "oidc signing key rotated");
    }
    let current = ring
        .current()
        .ok_or_else(|| ApiError::internal("key ring without a current version"))?;
    let signer = Arc::new(Signer::from_version(ring.algorithm, current)?);
    let ring = Arc::new(ring);
    core.oauth.keys.put(name, ring.clone(), signer.clone());
    Ok((ring, signer))
}

/// Rotate every key ring that is due (the background job).
pub async fn rotate_due_keys(core: &Core) -> Result<usize, ApiError> {
    let mut n = 0;
    for name in core.barrier.list(KEY_PREFIX).await? {
        let now = core.tokens.now();
        let due = get_json::<Ring>(core, &format!("{KEY_PREFIX}{name}"))
            .await?
            .is_some_and(|r| r.rotation_due(now));
        if due {
            signing_key(core, &name).await?;
            n += 1;
        }
    }
    Ok(n)
}

pub(crate) async fn client_by_id(
    core: &Core,
    client_id: &str,
) -> Result<Option<Arc<Client>>, ApiError> {
    if let Some(c) = lock(&core.oauth.clients).get(client_id) {
        return Ok(Some(c.clone()));
    }
    if client_id.is_empty() || client_id.len() > 256 {
        return Ok(None);
    }
    let generation = core
        .oauth
        .clients_gen
        .load(std::sync::atomic::Ordering::SeqCst);
    let Some(name) = core
        .barrier
        .get(&format!("{CLIENT_ID_PREFIX}{}", hex::encode(client_id)))
        .await?
    else {
        return Ok(None);
    };
    let name = String::from_utf8(name.to_vec()).map_err(ApiError::internal)?;
    let Some(c) = get_json::<Client>(core, &format!("{CLIENT_PREFIX}{name}")).await? else {
        return Ok(None);
    };
    let c = Arc::new(c);
    let mut cache = lock(&core.oauth.clients);
    if core
        .oauth
        .clients_gen
        .load(std::sync::atomic::Ordering::SeqCst)
        == generation
    {
        cache.insert(client_id.to_string(), c.clone());
    }
    Ok(Some(c))
}

pub(crate) async fn provider(core: &Core, name: &str) -> Result<Option<Arc<Provider>>, ApiError> {
    if let Some(p) = lock(&core.oauth.providers).get(name) {
        return Ok(Some(p.clone()));
    }
    if !is_canonical_role_name(name) {
        return Ok(None);
    }
    let Some(p) = get_json::<Provider>(core, &format!("{PROVIDER_PREFIX}{name}")).await? else {
        return Ok(None);
    };
    let p = Arc::new(p);
    lock(&core.oauth.providers).insert(name.to_string(), p.clone());
    Ok(Some(p))
}

/// The revoked token ids (loaded from storage at first use after an unseal).
pub(crate) async fn is_revoked(core: &Core, jti: &str) -> Result<bool, ApiError> {
    if let Some(r) = lock(&core.oauth.revoked).as_ref() {
        return Ok(r.contains_key(jti));
    }
    let mut map = HashMap::new();
    for k in core.barrier.list(REVOKED_PREFIX).await? {
        if let Some(v) = core.barrier.get(&format!("{REVOKED_PREFIX}{k}")).await? {
            let exp = std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(i64::MAX);
            map.insert(k, exp);
        }
    }
    let hit = map.contains_key(jti);
    *lock(&core.oauth.revoked) = Some(map);
    Ok(hit)
}

/// Record a revoked token id until its expiry (stored, then in memory).
pub(crate) async fn revoke_jti(core: &Core, jti: &str, exp: i64) -> Result<(), ApiError> {
    is_revoked(core, jti).await?;
    core.barrier
        .put(
            &format!("{REVOKED_PREFIX}{jti}"),
            exp.to_string().as_bytes(),
        )
        .await?;
    if let Some(r) = lock(&core.oauth.revoked).as_mut() {
        r.insert(jti.to_string(), exp);
    }
    Ok(())
}

/// Drop revoked ids and seen assertions past their expiry (background job).
pub async fn tidy(core: &Core) -> Result<usize, ApiError> {
    let now = core.tokens.now();
    let mut n = 0;
    for prefix in [REVOKED_PREFIX, ASSERTION_PREFIX] {
        for k in core.barrier.list(prefix).await? {
            let path = format!("{prefix}{k}");
            let exp = match core.barrier.get(&path).await? {
                Some(v) => std::str::from_utf8(&v)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .unwrap_or(0),
                None => continue,
            };
            if exp < now {
                core.barrier.delete(&path).await?;
                if prefix == REVOKED_PREFIX
                    && let Some(r) = lock(&core.oauth.revoked).as_mut()
                {
                    r.remove(&k);
                }
                n += 1;
            }
        }
    }
    Ok(n)
}

/// A verifier of the provider's own tokens, for its JWKS as it is now.
pub(crate) async fn own_verifier(
    core: &Core,
    name: &str,
    p: &Provider,
) -> Result<Arc<palisade_jwt::Verifier>, ApiError> {
    let (ring, _) = signing_key(core, &p.key).await?;
    let doc = json!({ "keys": ring.jwks(core.tokens.now()) }).to_string();
    if let Some((d, v)) = lock(&core.oauth.verifiers).get(name)
        && *d == doc
    {
        return Ok(v.clone());
    }
    let mut cfg = palisade_jwt::IssuerConfig::new(
        p.issuer_url(name),
        Vec::new(),
        ring.algorithms(),
        palisade_jwt::KeySource::Jwks(doc.clone()),
    );
    cfg.caller_checks_audience = true;
    let v = palisade_jwt::Verifier::new(vec![cfg], reqwest::Client::new())
        .await
        .map_err(ApiError::internal)?;
    lock(&core.oauth.verifiers).insert(name.to_string(), (doc, v.clone()));
    Ok(v)
}

// ------------------------------------------------------------ admin API

fn name_ok(name: &str) -> Result<(), ApiError> {
    if is_canonical_role_name(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid name: names are lowercase ASCII letters, digits and '_-.', begin and end with a letter, a digit or '_'",
        ))
    }
}

fn list_of(req: &Request, name: &str) -> Result<Option<Vec<String>>, ApiError> {
    match req.data.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let mut l: Vec<String> = fields::string_list(v, name)?
                .into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            if l.len() > 64 || l.iter().any(|s| s.len() > 256 || s.contains(' ')) {
                return Err(ApiError::bad_request(format!(
                    "{name}: at most 64 entries of at most 256 bytes, without spaces"
                )));
            }
            l.sort();
            l.dedup();
            Ok(Some(l))
        }
    }
}

fn duration(req: &Request, name: &str) -> Result<Option<i64>, ApiError> {
    match req.data.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => fields::duration_secs(v, name).map(Some),
    }
}

fn string(req: &Request, name: &str) -> Result<Option<String>, ApiError> {
    match req.data.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => fields::string(v, name).map(Some),
    }
}

async fn list_names(core: &Core, prefix: &str) -> Result<Response, ApiError> {
    let mut keys = core.barrier.list(prefix).await?;
    keys.sort();
    if keys.is_empty() {
        return Err(ApiError::not_found());
    }
    Ok(Response::data(json!({ "keys": keys })))
}

/// `identity/oidc/<rest>` for a token holder.
pub async fn handle(core: &Arc<Core>, auth: &Authorized, rest: &str) -> Result<Response, ApiError> {
    let req = auth.request();
    let op = req.operation;
    // a trailing `/` is LIST's canonical form only: any other operation is
    // checked by the ACL on the path as sent, so it must act on no other
    // (`client/x/` is not `client/x`)
    let rest = match op {
        Operation::List => rest.strip_suffix('/').unwrap_or(rest),
        _ if rest.ends_with('/') => return Err(ApiError::unsupported_path()),
        _ => rest,
    };
    let (kind, name, sub) = {
        let mut it = rest.splitn(3, '/');
        (
            it.next().unwrap_or_default(),
            it.next().unwrap_or_default(),
            it.next(),
        )
    };
    match (kind, name, sub, op) {
        ("key", "", None, Operation::List) => list_names(core, KEY_PREFIX).await,
        ("client", "", None, Operation::List) => list_names(core, CLIENT_PREFIX).await,
        ("provider", "", None, Operation::List) => list_names(core, PROVIDER_PREFIX).await,
        ("key", n, None, _) => key(core, req, n).await,
        ("key", n, Some("rotate"), Operation::Write) => {
            name_ok(n)?;
            let _g = core.oauth.writes.lock().await;
            let path = format!("{KEY_PREFIX}{n}");
            let mut ring: Ring = get_json(core, &path)
                .await?
                .ok_or_else(|| ApiError::bad_request(format!("key {n:?} does not exist")))?;
            // Vault: a `verification_ttl` here applies to this rotation
            // only (0: the key's own); never shorter than the tokens the
            // key signs may live
            let ttl = match duration(req, "verification_ttl")? {
                None | Some(0) => ring.verification_ttl,
                Some(t) => t,
            };
            let mut checked = ring.clone();
            checked.verification_ttl = ttl;
            check_ttls(core, n, &checked).await?;
            ring.rotate_with(core.tokens.now(), ttl)?;
            core.barrier.put(&path, &to_bytes(&ring)?).await?;
            core.oauth.keys.forget(Some(n));
            Ok(Response::no_content())
        }
        ("client", n, None, _) => client(core, req, n).await,
        ("client", n, Some("rotate-secret"), Operation::Write) => rotate_secret(core, n).await,
        ("provider", n, None, _) => provider_api(core, req, n).await,
        _ => Err(ApiError::unsupported_path()),
    }
}

async fn key(core: &Core, req: &Request, name: &str) -> Result<Response, ApiError> {
    name_ok(name)?;
    let path = format!("{KEY_PREFIX}{name}");
    match req.operation {
        Operation::Read => {
            let ring: Ring = get_json(core, &path)
                .await?
                .ok_or_else(ApiError::not_found)?;
            Ok(Response::data(json!({
                "algorithm": ring.algorithm.as_str(),
                "rotation_period": ring.rotation_period,
                "verification_ttl": ring.verification_ttl,
                "allowed_client_ids": ring.allowed_client_ids,
            })))
        }
        Operation::Delete => {
            let _g = core.oauth.writes.lock().await;
            for n in core.barrier.list(PROVIDER_PREFIX).await? {
                if let Some(p) =
                    get_json::<Provider>(core, &format!("{PROVIDER_PREFIX}{n}")).await?
                    && p.key == name
                {
                    return Err(ApiError::bad_request(format!(
                        "unable to delete key {name:?} because it is currently referenced by provider {n:?}"
                    )));
                }
            }
            let roles = crate::identity::oidc::roles_using(core, name).await?;
            if !roles.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "unable to delete key {name:?} because it is currently referenced by these roles: {}",
                    roles.join(", ")
                )));
            }
            core.barrier.delete(&path).await?;
            core.oauth.keys.forget(Some(name));
            Ok(Response::no_content())
        }
        Operation::Write => {
            let alg = match string(req, "algorithm")? {
                None => None,
                Some(a) => Some(Algorithm::parse(&a).ok_or_else(|| {
                    ApiError::bad_request("algorithm must be one of EdDSA, ES256, RS256")
                })?),
            };
            let rotation = duration(req, "rotation_period")?;
            let verification = duration(req, "verification_ttl")?;
            let allowed = list_of(req, "allowed_client_ids")?;
            let _g = core.oauth.writes.lock().await;
            let now = core.tokens.now();
            let ring = match get_json::<Ring>(core, &path).await? {
                Some(mut r) => {
                    if let Some(a) = alg
                        && a != r.algorithm
                    {
                        // a new algorithm takes effect at once, old keys stay
                        // published for verification
                        r.algorithm = a;
                        r.versions.retain(|v| v.signing_since > 0);
                        r.rotate(now)?;
                    }
                    if let Some(x) = rotation {
                        r.rotation_period = x;
                    }
                    if let Some(x) = verification {
                        r.verification_ttl = x;
                    }
                    r
                }
                None => Ring::new(
                    alg.unwrap_or(Algorithm::EdDSA),
                    rotation.unwrap_or(keys::DEFAULT_ROTATION),
                    verification.unwrap_or(keys::DEFAULT_VERIFICATION_TTL),
                    now,
                )?,
            };
            let mut ring = ring;
            if let Some(a) = allowed {
                ring.allowed_client_ids = a;
            }
            check_ttls(core, name, &ring).await?;
            core.barrier.put(&path, &to_bytes(&ring)?).await?;
            core.oauth.keys.forget(Some(name));
            Ok(Response::no_content())
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

/// A key's periods: at least a minute, and its `verification_ttl` at least
/// the token lifetime of every client signing with it (a token must never
/// outlive its key's publication).
async fn check_ttls(core: &Core, name: &str, ring: &Ring) -> Result<(), ApiError> {
    if ring.rotation_period < 60 || ring.verification_ttl < 60 {
        return Err(ApiError::bad_request(
            "rotation_period and verification_ttl must be at least 1m",
        ));
    }
    for n in core.barrier.list(CLIENT_PREFIX).await? {
        if let Some(c) = get_json::<Client>(core, &format!("{CLIENT_PREFIX}{n}")).await?
            && c.key == name
            && c.access_token_ttl > ring.verification_ttl
        {
            return Err(ApiError::bad_request(format!(
                "verification_ttl ({}s) is shorter than the access_token_ttl of client {n:?} ({}s): its tokens would outlive their key",
                ring.verification_ttl, c.access_token_ttl
            )));
        }
    }
    if let Some((role, ttl)) = crate::identity::oidc::longest_role_ttl(core, name).await?
        && ttl > ring.verification_ttl
    {
        return Err(ApiError::bad_request(format!(
            "verification_ttl ({}s) is shorter than the ttl of role {role:?} ({ttl}s): its tokens would outlive their key",
            ring.verification_ttl
        )));
    }
    Ok(())
}

fn new_secret() -> String {
    format!("pso_{}", crate::token::random_base62(43))
}

async fn client(core: &Core, req: &Request, name: &str) -> Result<Response, ApiError> {
    name_ok(name)?;
    let path = format!("{CLIENT_PREFIX}{name}");
    match req.operation {
        Operation::Read => {
            let c: Client = get_json(core, &path)
                .await?
                .ok_or_else(ApiError::not_found)?;
            Ok(Response::data(c.to_json()))
        }
        Operation::Delete => {
            let _g = core.oauth.writes.lock().await;
            if let Some(c) = get_json::<Client>(core, &path).await? {
                core.barrier
                    .transaction(vec![
                        palisade_barrier::BarrierOp::Delete { path: path.clone() },
                        palisade_barrier::BarrierOp::Delete {
                            path: format!("{CLIENT_ID_PREFIX}{}", hex::encode(&c.client_id)),
                        },
                    ])
                    .await?;
                forget_client(core, &c.client_id);
            }
            Ok(Response::no_content())
        }
        Operation::Write => write_client(core, req, name).await,
        _ => Err(ApiError::unsupported_operation()),
    }
}

async fn write_client(core: &Core, req: &Request, name: &str) -> Result<Response, ApiError> {
    if let Some(t) = string(req, "client_type")?
        && t != "confidential"
    {
        return Err(ApiError::bad_request(
            "client_type must be \"confidential\": public clients cannot use client credentials",
        ));
    }
    let salt = salt(core).await?;
    let _g = core.oauth.writes.lock().await;
    let path = format!("{CLIENT_PREFIX}{name}");
    let existing: Option<Client> = get_json(core, &path).await?;
    let create = existing.is_none();
    let mut c = existing.unwrap_or_else(|| Client {
        name: name.to_string(),
        client_id: crate::token::random_base62(32),
        token_endpoint_auth_method: "client_secret_basic".into(),
        access_token_ttl: DEFAULT_ACCESS_TOKEN_TTL,
        key: "default".into(),
        ..Client::default()
    });
    if let Some(m) = string(req, "token_endpoint_auth_method")? {
        if !matches!(
            m.as_str(),
            "client_secret_basic" | "client_secret_post" | "private_key_jwt"
        ) {
            return Err(ApiError::bad_request(
                "token_endpoint_auth_method must be client_secret_basic, client_secret_post or private_key_jwt",
            ));
        }
        c.token_endpoint_auth_method = m;
    }
    if let Some(j) = req.data.get("jwks").filter(|v| !v.is_null()) {
        let doc = match j {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        // the client's keys go through the same JWK rules as any issuer's
        let mut cfg = palisade_jwt::IssuerConfig::new(
            "client",
            Vec::new(),
            vec![
                palisade_jwt::Alg::RS256,
                palisade_jwt::Alg::ES256,
                palisade_jwt::Alg::EdDSA,
            ],
            palisade_jwt::KeySource::Jwks(doc.clone()),
        );
        cfg.caller_checks_audience = true;
        palisade_jwt::Verifier::new(vec![cfg], reqwest::Client::new())
            .await
            .map_err(|e| {
                ApiError::bad_request(format!("invalid jwks: {e}")).audited_as("invalid jwks")
            })?;
        c.jwks = doc;
    }
    if c.token_endpoint_auth_method == "private_key_jwt" && c.jwks.is_empty() {
        return Err(ApiError::bad_request(
            "private_key_jwt needs the client's public keys in jwks",
        ));
    }
    if let Some(s) = list_of(req, "allowed_scopes")? {
        c.allowed_scopes = s;
    }
    if let Some(a) = list_of(req, "allowed_audiences")? {
        c.allowed_audiences = a;
    }
    if c.allowed_audiences.is_empty() {
        return Err(ApiError::bad_request(
            "allowed_audiences must name at least one audience: a token is always for someone",
        ));
    }
    if let Some(k) = string(req, "key")? {
        name_ok(&k)?;
        c.key = k;
    }
    if let Some(t) = duration(req, "access_token_ttl")? {
        c.access_token_ttl = t;
    }
    let ring: Ring = get_json(core, &format!("{KEY_PREFIX}{}", c.key))
        .await?
        .ok_or_else(|| ApiError::bad_request(format!("key {:?} does not exist", c.key)))?;
    if c.access_token_ttl < 1 || c.access_token_ttl > ring.verification_ttl {
        return Err(ApiError::bad_request(format!(
            "access_token_ttl must be between 1s and the key's verification_ttl ({}s): a token must never outlive its key's publication",
            ring.verification_ttl
        )));
    }
    let secret = if create && c.token_endpoint_auth_method != "private_key_jwt" {
        let s = new_secret();
        c.secret_hash = salt.sign_hex(s.as_bytes());
        Some(s)
    } else {
        None
    };
    core.barrier
        .transaction(vec![
            palisade_barrier::BarrierOp::Put {
                path: path.clone(),
                value: to_bytes(&c)?,
            },
            palisade_barrier::BarrierOp::Put {
                path: format!("{CLIENT_ID_PREFIX}{}", hex::encode(&c.client_id)),
                value: name.as_bytes().to_vec(),
            },
        ])
        .await?;
    forget_client(core, &c.client_id);
    let mut out = c.to_json();
    if let (Some(s), Value::Object(o)) = (secret, &mut out) {
        o.insert("client_secret".into(), Value::String(s));
    }
    Ok(Response::data(out))
}

async fn rotate_secret(core: &Core, name: &str) -> Result<Response, ApiError> {
    name_ok(name)?;
    let salt = salt(core).await?;
    let _g = core.oauth.writes.lock().await;
    let path = format!("{CLIENT_PREFIX}{name}");
    let mut c: Client = get_json(core, &path)
        .await?
        .ok_or_else(|| ApiError::bad_request(format!("client {name:?} does not exist")))?;
    if c.token_endpoint_auth_method == "private_key_jwt" {
        return Err(ApiError::bad_request(
            "this client authenticates with private_key_jwt: it has no secret",
        ));
    }
    let s = new_secret();
    c.secret_hash = salt.sign_hex(s.as_bytes());
    core.barrier.put(&path, &to_bytes(&c)?).await?;
    forget_client(core, &c.client_id);
    Ok(Response::data(json!({
        "client_id": c.client_id,
        "client_secret": s,
    })))
}

async fn provider_api(core: &Core, req: &Request, name: &str) -> Result<Response, ApiError> {
    name_ok(name)?;
    let path = format!("{PROVIDER_PREFIX}{name}");
    match req.operation {
        Operation::Read => {
            let p: Provider = get_json(core, &path)
                .await?
                .ok_or_else(ApiError::not_found)?;
            Ok(Response::data(json!({
                "issuer": p.issuer_url(name),
                "allowed_client_ids": p.allowed_client_ids,
                "scopes_supported": p.scopes_supported,
                "key": p.key,
            })))
        }
        Operation::Delete => {
            let _g = core.oauth.writes.lock().await;
            core.barrier.delete(&path).await?;
            lock(&core.oauth.providers).remove(name);
            lock(&core.oauth.verifiers).remove(name);
            Ok(Response::no_content())
        }
        Operation::Write => {
            let _g = core.oauth.writes.lock().await;
            let mut p: Provider = get_json(core, &path).await?.unwrap_or_else(|| Provider {
                key: "default".into(),
                ..Provider::default()
            });
            if let Some(i) = string(req, "issuer")? {
                let u = url::Url::parse(&i).map_err(|_| {
                    ApiError::bad_request("issuer must be a URL: scheme://host[:port]")
                })?;
                let bare = u.path() == "/" && u.query().is_none() && u.fragment().is_none();
                let loopback = u.host_str().is_some_and(|h| {
                    h == "localhost"
                        || h.trim_matches(['[', ']'])
                            .parse::<std::net::IpAddr>()
                            .is_ok_and(|a| a.is_loopback())
                });
                // stored as rebuilt from the parsed URL, and refused unless
                // that is what was written (case aside): no userinfo, no path
                let rebuilt = match (u.host_str(), u.port()) {
                    (Some(h), Some(port)) => format!("{}://{h}:{port}", u.scheme()),
                    (Some(h), None) => format!("{}://{h}", u.scheme()),
                    (None, _) => String::new(),
                };
                let bad = ApiError::bad_request(
                    "issuer must be https://host[:port] (http only for a loopback host), without a path",
                );
                if !bare
                    || rebuilt.is_empty()
                    || !u.username().is_empty()
                    || u.password().is_some()
                    || !i.trim_end_matches('/').eq_ignore_ascii_case(&rebuilt)
                    || i.ends_with("//")
                    || !(u.scheme() == "https" || (u.scheme() == "http" && loopback))
                {
                    return Err(bad);
                }
                p.issuer = rebuilt;
            }
            if let Some(a) = list_of(req, "allowed_client_ids")? {
                p.allowed_client_ids = a;
            }
            if let Some(s) = list_of(req, "scopes_supported")? {
                p.scopes_supported = s;
            }
            if let Some(k) = string(req, "key")? {
                name_ok(&k)?;
                p.key = k;
            }
            if p.issuer.is_empty() {
                return Err(ApiError::bad_request(
                    "issuer is required: tokens name it and clients check it",
                ));
            }
            if get_json::<Ring>(core, &format!("{KEY_PREFIX}{}", p.key))
                .await?
                .is_none()
            {
                return Err(ApiError::bad_request(format!(
                    "key {:?} does not exist",
                    p.key
                )));
            }
            core.barrier.put(&path, &to_bytes(&p)?).await?;
            lock(&core.oauth.providers).remove(name);
            lock(&core.oauth.verifiers).remove(name);
            Ok(Response::no_content())
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

/// The scopes a request asks for (space-separated), checked against what
/// the client may have; absent: everything the client may have.
pub(crate) fn scopes(requested: Option<&str>, allowed: &[String]) -> Option<Vec<String>> {
    match requested {
        None => Some(allowed.to_vec()),
        Some(s) => {
            let mut out: Vec<String> = s
                .split(' ')
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect();
            out.sort();
            out.dedup();
            if out.iter().all(|x| allowed.contains(x)) {
                Some(out)
            } else {
                None
            }
        }
    }
}

/// Map a form (already checked for duplicates) into audit data.
pub(crate) fn form_audit(form: &[(String, String)]) -> Map<String, Value> {
    form.iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect()
}
