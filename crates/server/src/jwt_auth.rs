//! The `jwt` auth method (Vault's): a workload logs in with a JWT its
//! platform signed — a Kubernetes service account token, a CI system's
//! OIDC token — and gets a token with its role's policies.
//!
//! Storage, in the method's view `auth/<uuid>/`: `config` ([`Config`]) and
//! `role/<name>` ([`Role`]). Signatures, `exp`/`nbf` (60 s leeway) and the
//! issuer are checked by `palisade_jwt::Verifier` (one per mount, built
//! from the config and kept in `Core::jwt_verifiers`): keys from
//! `jwks_url`, from the `jwks_uri` of `oidc_discovery_url`, or from
//! `jwt_validation_pubkeys` (PEM); a JWKS URL that is down keeps its last
//! good keys. The role's bindings (audiences, subject, claims) are checked
//! here on the verified claims.
//!
//! Differences from Vault, each failing closed: `bound_issuer` is required
//! (the discovery document's `issuer` when discovery is used); HS256 and
//! `none` are never accepted; only `role_type = "jwt"` (the browser OIDC
//! flow is not built); custom CA bundles for discovery/JWKS are refused.
//! Every failed login gets the same 400 `invalid JWT or role`; the audit
//! record says which check failed.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use palisade_barrier::View;
use palisade_jwt::{Alg, IssuerConfig, KeySource, Verifier};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::approle::is_canonical_role_name;
use crate::core::{Authorized, Core};
use crate::logical::{ApiError, Operation, Request, Response, fields};
use crate::mounts::MountEntry;
use crate::token::TokenEntry;
use crate::token_params::{Login, TokenParams};

/// How long a discovery or JWKS fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest discovery document read.
const MAX_DISCOVERY_BYTES: usize = 256 * 1024;
/// Most bound claims, claim mappings and bound audiences on a role.
const MAX_ROLE_ENTRIES: usize = 64;

/// What a path under a jwt mount names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwtPath<'a> {
    Config,
    Roles,
    Role(&'a str),
    Login,
}

/// The path relative to a jwt mount, for `op`.
pub fn parse(op: Operation, rel: &str) -> Result<JwtPath<'_>, ApiError> {
    use Operation::*;
    let (path, ok) = match rel {
        "config" => (JwtPath::Config, matches!(op, Read | Write)),
        "role" | "role/" => (JwtPath::Roles, op == List),
        "login" => (JwtPath::Login, op == Write),
        _ => match rel.strip_prefix("role/") {
            Some(name) if is_canonical_role_name(name) => {
                (JwtPath::Role(name), matches!(op, Read | Write | Delete))
            }
            Some(_) => {
                return Err(ApiError::bad_request(
                    "invalid role name: role names are lowercase ASCII letters, digits and '_-.', begin and end with a letter, a digit or '_', and are at most 256 bytes",
                ));
            }
            None => return Err(ApiError::unsupported_path()),
        },
    };
    if ok {
        Ok(path)
    } else {
        Err(ApiError::unsupported_operation())
    }
}

/// The method's configuration, as stored.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Config {
    pub oidc_discovery_url: String,
    pub jwks_url: String,
    pub jwt_validation_pubkeys: Vec<String>,
    pub bound_issuer: String,
    pub jwt_supported_algs: Vec<String>,
    pub default_role: String,
    /// The discovery document's `jwks_uri`, fetched when the config was written.
    pub discovered_jwks_uri: String,
    /// CA certificates (PEM) trusted for the discovery document and the
    /// keys, instead of the system's roots.
    pub oidc_discovery_ca_pem: String,
    /// CA certificates (PEM) trusted for `jwks_url`, instead of the system's.
    pub jwks_ca_pem: String,
}

impl Config {
    fn to_json(&self) -> Value {
        json!({
            "oidc_discovery_url": self.oidc_discovery_url,
            "oidc_discovery_ca_pem": self.oidc_discovery_ca_pem,
            "jwks_url": self.jwks_url,
            "jwks_ca_pem": self.jwks_ca_pem,
            "jwt_validation_pubkeys": self.jwt_validation_pubkeys,
            "bound_issuer": self.bound_issuer,
            "jwt_supported_algs": self.jwt_supported_algs,
            "default_role": self.default_role,
            "oidc_client_id": "",
            "provider_config": {},
        })
    }

    fn algorithms(&self) -> Result<Vec<Alg>, ApiError> {
        if self.jwt_supported_algs.is_empty() {
            return Ok(vec![Alg::RS256]);
        }
        self.jwt_supported_algs
            .iter()
            .map(|a| match a.parse::<Alg>().ok() {
                Some(Alg::HS256) | None => Err(ApiError::bad_request(format!(
                    "unsupported algorithm in jwt_supported_algs: {a:?} (RS256, PS256, ES256, ES384 and EdDSA are)"
                ))
                .audited_as("unsupported algorithm in jwt_supported_algs")),
                Some(alg) => Ok(alg),
            })
            .collect()
    }

    fn issuer_config(&self) -> Result<IssuerConfig, ApiError> {
        let keys = if !self.jwt_validation_pubkeys.is_empty() {
            let doc = palisade_jwt::jwks_from_pem(&self.jwt_validation_pubkeys).map_err(|e| {
                ApiError::bad_request(format!("invalid jwt_validation_pubkeys: {e}"))
                    .audited_as("invalid jwt_validation_pubkeys")
            })?;
            KeySource::Jwks(doc)
        } else if !self.jwks_url.is_empty() {
            KeySource::url(self.jwks_url.clone())
        } else {
            KeySource::url(self.discovered_jwks_uri.clone())
        };
        let mut c = IssuerConfig::new(
            self.bound_issuer.clone(),
            Vec::new(),
            self.algorithms()?,
            keys,
        );
        c.caller_checks_audience = true;
        Ok(c)
    }
}

/// A role, as stored.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Role {
    pub role_type: String,
    pub bound_audiences: Vec<String>,
    pub bound_subject: String,
    /// Claim (a name, or a JSON pointer starting with `/`) → accepted values.
    pub bound_claims: Map<String, Value>,
    /// `string` (exact) or `glob` (`*` matches any run of characters).
    pub bound_claims_type: String,
    /// Claim → token metadata key.
    pub claim_mappings: Map<String, Value>,
    pub user_claim: String,
    pub groups_claim: String,
    #[serde(flatten)]
    pub token: TokenParams,
}

impl Role {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        self.token.write_json(&mut m);
        m.insert("role_type".into(), json!(self.role_type));
        m.insert("bound_audiences".into(), json!(self.bound_audiences));
        m.insert("bound_subject".into(), json!(self.bound_subject));
        m.insert(
            "bound_claims".into(),
            Value::Object(self.bound_claims.clone()),
        );
        m.insert("bound_claims_type".into(), json!(self.bound_claims_type));
        m.insert(
            "claim_mappings".into(),
            Value::Object(self.claim_mappings.clone()),
        );
        m.insert("user_claim".into(), json!(self.user_claim));
        m.insert("groups_claim".into(), json!(self.groups_claim));
        Value::Object(m)
    }
}

fn view(core: &Core, mount: &MountEntry) -> View {
    View::new(core.barrier.clone(), mount.auth_view_prefix())
}

async fn get_json<T: serde::de::DeserializeOwned>(
    view: &View,
    key: &str,
) -> Result<Option<T>, ApiError> {
    crate::json::stored(view.get(key).await?)
}

async fn put_json<T: Serialize>(view: &View, key: &str, v: &T) -> Result<(), ApiError> {
    Ok(view.put(key, &crate::json::to_stored(v)?).await?)
}

/// Whether a role exists (the ACL's create-or-update decision).
pub async fn role_exists(core: &Core, mount: &MountEntry, name: &str) -> Result<bool, ApiError> {
    Ok(
        get_json::<Role>(&view(core, mount), &format!("role/{name}"))
            .await?
            .is_some(),
    )
}

/// Role writes are serialised (create-or-update decided once).
static WRITES: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(|| tokio::sync::Mutex::new(()));

/// The verifiers of the enabled jwt mounts, by mount uuid, with the config
/// they were built from.
#[derive(Default)]
pub struct Verifiers {
    map: std::sync::Mutex<HashMap<String, (Config, Arc<Verifier>)>>,
}

impl Verifiers {
    fn get(&self, uuid: &str, cfg: &Config) -> Option<Arc<Verifier>> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(uuid)
            .filter(|(c, _)| c == cfg)
            .map(|(_, v)| v.clone())
    }
    fn put(&self, uuid: &str, cfg: Config, v: Arc<Verifier>) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(uuid.to_string(), (cfg, v));
    }
    /// Forget every verifier (seal; a disabled mount's goes with it).
    pub fn clear(&self) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// The client fetching keys and discovery documents: the system's CA roots,
/// or only those of `ca_pem` when one is configured.
fn http_client(ca_pem: &str) -> Result<reqwest::Client, ApiError> {
    if ca_pem.is_empty() {
        return palisade_jwt::jwks_client(FETCH_TIMEOUT).map_err(ApiError::internal);
    }
    palisade_jwt::jwks_client_with_roots(FETCH_TIMEOUT, ca_pem.as_bytes()).map_err(|_| {
        ApiError::bad_request("invalid CA bundle: expected PEM certificates")
            .audited_as("invalid CA bundle")
    })
}

/// A CA bundle field: empty, or PEM holding at least one certificate.
fn ca_pem_field(req: &Request, name: &str) -> Result<String, ApiError> {
    let v = string_field(req, name)?.unwrap_or_default();
    if v.trim().is_empty() {
        return Ok(String::new());
    }
    match reqwest::Certificate::from_pem_bundle(v.as_bytes()) {
        Ok(c) if !c.is_empty() => {}
        _ => {
            return Err(ApiError::bad_request(format!(
                "invalid {name}: expected one or more PEM certificates"
            ))
            .audited_as("invalid CA bundle"));
        }
    }
    http_client(&v)?;
    Ok(v)
}

impl Config {
    /// The CA bundle the key source is fetched with.
    fn ca_pem(&self) -> &str {
        if self.oidc_discovery_url.is_empty() {
            &self.jwks_ca_pem
        } else {
            &self.oidc_discovery_ca_pem
        }
    }
}

async fn build_verifier(cfg: &Config) -> Result<Arc<Verifier>, ApiError> {
    let v = Verifier::new(vec![cfg.issuer_config()?], http_client(cfg.ca_pem())?)
        .await
        .map_err(|e| {
            ApiError::bad_request(format!("invalid configuration: {e}"))
                .audited_as("invalid jwt auth configuration")
        })?;
    v.spawn_refresh();
    Ok(v)
}

async fn verifier(
    core: &Core,
    mount: &MountEntry,
    cfg: &Config,
) -> Result<Arc<Verifier>, ApiError> {
    if let Some(v) = core.jwt_verifiers.get(&mount.uuid, cfg) {
        return Ok(v);
    }
    let v = build_verifier(cfg).await?;
    core.jwt_verifiers.put(&mount.uuid, cfg.clone(), v.clone());
    Ok(v)
}

/// A URL the method may fetch: https, or http to a loopback host.
fn check_url(url: &str, field: &str) -> Result<reqwest::Url, ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "{field} must be an https URL (plain http only to a loopback host)"
        ))
    };
    let u = reqwest::Url::parse(url).map_err(|_| bad())?;
    let loopback = u
        .host_str()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .is_some_and(|h| {
            h.eq_ignore_ascii_case("localhost")
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
    match u.scheme() {
        "https" if u.host_str().is_some() => Ok(u),
        "http" if loopback => Ok(u),
        _ => Err(bad()),
    }
}

/// OpenID Connect Discovery: the document's `issuer` must be the URL
/// (OIDC Discovery §4.3); returns its `jwks_uri`.
async fn discover(url: &str, ca_pem: &str) -> Result<String, ApiError> {
    let err = |why: &str| {
        ApiError::bad_request(format!("error checking oidc discovery URL: {why}"))
            .audited_as("error checking oidc discovery URL")
    };
    let base = url.trim_end_matches('/');
    check_url(base, "oidc_discovery_url")?;
    let doc_url = format!("{base}/.well-known/openid-configuration");
    let mut resp = http_client(ca_pem)?
        .get(&doc_url)
        .send()
        .await
        .map_err(|_| err("the document could not be fetched"))?;
    if !resp.status().is_success() {
        return Err(err(&format!("status {}", resp.status().as_u16())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|_| err("the document could not be read"))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_DISCOVERY_BYTES {
            return Err(err("document too large"));
        }
    }
    let doc: Map<String, Value> =
        serde_json::from_slice(&body).map_err(|_| err("not a JSON object"))?;
    match doc.get("issuer") {
        Some(Value::String(i)) if i.trim_end_matches('/') == base => {}
        _ => return Err(err("its issuer is not the discovery URL")),
    }
    match doc.get("jwks_uri") {
        Some(Value::String(j)) => {
            check_url(j, "jwks_uri")?;
            Ok(j.clone())
        }
        _ => Err(err("no jwks_uri")),
    }
}

/// A JWKS URL answers a JWKS document now (Vault checks the same when the
/// config is written): a config whose keys cannot be fetched, e.g. over a
/// TLS connection its CA bundle does not trust, is refused.
async fn check_jwks(url: &str, ca_pem: &str) -> Result<(), ApiError> {
    let err = |why: &str| {
        ApiError::bad_request(format!("error checking jwks URL: {why}"))
            .audited_as("error checking jwks URL")
    };
    let mut resp = http_client(ca_pem)?
        .get(url)
        .send()
        .await
        .map_err(|_| err("the keys could not be fetched"))?;
    if !resp.status().is_success() {
        return Err(err(&format!("status {}", resp.status().as_u16())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|_| err("the keys could not be read"))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_DISCOVERY_BYTES {
            return Err(err("document too large"));
        }
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(o)) if o.get("keys").is_some_and(Value::is_array) => Ok(()),
        _ => Err(err("not a JWKS document")),
    }
}

fn string_list_field(req: &Request, name: &str) -> Result<Option<Vec<String>>, ApiError> {
    req.data
        .get(name)
        .map(|v| fields::string_list(v, name))
        .transpose()
}

fn string_field(req: &Request, name: &str) -> Result<Option<String>, ApiError> {
    match req.data.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => fields::string(v, name).map(Some),
    }
}

async fn write_config(
    core: &Core,
    mount: &MountEntry,
    req: &Request,
) -> Result<Response, ApiError> {
    for refused in ["oidc_client_id", "oidc_client_secret"] {
        if string_field(req, refused)?.is_some_and(|v| !v.is_empty()) {
            return Err(ApiError::bad_request(format!(
                "{refused} is not supported: the JWT method verifies tokens only (no OIDC browser flow)"
            ))
            .audited_as("unsupported jwt config field"));
        }
    }
    let mut cfg = Config {
        oidc_discovery_url: string_field(req, "oidc_discovery_url")?.unwrap_or_default(),
        jwks_url: string_field(req, "jwks_url")?.unwrap_or_default(),
        jwt_validation_pubkeys: string_list_field(req, "jwt_validation_pubkeys")?
            .unwrap_or_default(),
        bound_issuer: string_field(req, "bound_issuer")?.unwrap_or_default(),
        jwt_supported_algs: string_list_field(req, "jwt_supported_algs")?.unwrap_or_default(),
        default_role: string_field(req, "default_role")?.unwrap_or_default(),
        discovered_jwks_uri: String::new(),
        oidc_discovery_ca_pem: ca_pem_field(req, "oidc_discovery_ca_pem")?,
        jwks_ca_pem: ca_pem_field(req, "jwks_ca_pem")?,
    };
    let sources = [
        !cfg.oidc_discovery_url.is_empty(),
        !cfg.jwks_url.is_empty(),
        !cfg.jwt_validation_pubkeys.is_empty(),
    ];
    if sources.iter().filter(|x| **x).count() != 1 {
        return Err(ApiError::bad_request(
            "exactly one of 'jwt_validation_pubkeys', 'jwks_url' or 'oidc_discovery_url' must be set",
        ));
    }
    if !cfg.default_role.is_empty() && !is_canonical_role_name(&cfg.default_role) {
        return Err(ApiError::bad_request("invalid default_role"));
    }
    cfg.algorithms()?;
    if !cfg.jwks_url.is_empty() {
        check_url(&cfg.jwks_url, "jwks_url")?;
        check_jwks(&cfg.jwks_url, &cfg.jwks_ca_pem).await?;
    }
    if !cfg.oidc_discovery_url.is_empty() {
        cfg.oidc_discovery_url = cfg.oidc_discovery_url.trim_end_matches('/').to_string();
        cfg.discovered_jwks_uri =
            discover(&cfg.oidc_discovery_url, &cfg.oidc_discovery_ca_pem).await?;
        if cfg.bound_issuer.is_empty() {
            cfg.bound_issuer = cfg.oidc_discovery_url.clone();
        }
    }
    if cfg.bound_issuer.is_empty() {
        return Err(ApiError::bad_request(
            "bound_issuer is required: tokens are accepted from that issuer only",
        ));
    }
    // the verifier is built (keys parsed, URLs checked) before the config
    // is stored: a config that cannot verify anything is refused
    let v = build_verifier(&cfg).await?;
    put_json(&view(core, mount), "config", &cfg).await?;
    core.jwt_verifiers.put(&mount.uuid, cfg, v);
    Ok(Response::no_content())
}

fn object_field(req: &Request, name: &str) -> Result<Option<Map<String, Value>>, ApiError> {
    match req.data.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) if o.len() <= MAX_ROLE_ENTRIES => Ok(Some(o.clone())),
        Some(Value::Object(_)) => Err(ApiError::bad_request(format!(
            "{name} has more than {MAX_ROLE_ENTRIES} entries"
        ))),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be an object"))),
    }
}

fn apply_role(req: &Request, role: &mut Role) -> Result<(), ApiError> {
    role.token.apply(req)?;
    if let Some(t) = string_field(req, "role_type")? {
        role.role_type = t;
    }
    match role.role_type.as_str() {
        "jwt" => {}
        "oidc" => {
            return Err(ApiError::bad_request(
                "role_type \"oidc\" is not supported: the browser OIDC flow is not built; use \"jwt\"",
            ));
        }
        _ => return Err(ApiError::bad_request("invalid 'role_type'")),
    }
    if let Some(a) = string_list_field(req, "bound_audiences")? {
        if a.len() > MAX_ROLE_ENTRIES {
            return Err(ApiError::bad_request("too many bound_audiences"));
        }
        role.bound_audiences = a;
    }
    if let Some(s) = string_field(req, "bound_subject")? {
        role.bound_subject = s;
    }
    if let Some(c) = object_field(req, "bound_claims")? {
        for (k, v) in &c {
            let ok = match v {
                Value::String(_) => true,
                Value::Array(a) => !a.is_empty() && a.iter().all(Value::is_string),
                _ => false,
            };
            if k.is_empty() || !ok {
                return Err(ApiError::bad_request(
                    "bound_claims values must be strings or lists of strings",
                ));
            }
        }
        role.bound_claims = c;
    }
    if let Some(t) = string_field(req, "bound_claims_type")? {
        role.bound_claims_type = t;
    }
    if !matches!(role.bound_claims_type.as_str(), "string" | "glob") {
        return Err(ApiError::bad_request(
            "invalid 'bound_claims_type': must be \"string\" or \"glob\"",
        ));
    }
    if let Some(m) = object_field(req, "claim_mappings")? {
        let mut targets = std::collections::HashSet::new();
        for (k, v) in &m {
            let Value::String(t) = v else {
                return Err(ApiError::bad_request(
                    "claim_mappings values must be strings",
                ));
            };
            if k.is_empty() || t.is_empty() || t == "role" || !targets.insert(t.clone()) {
                return Err(ApiError::bad_request(format!(
                    "invalid claim_mappings: metadata key {t:?} is empty, reserved or mapped twice"
                )));
            }
        }
        role.claim_mappings = m;
    }
    if let Some(u) = string_field(req, "user_claim")? {
        role.user_claim = u;
    }
    if role.user_claim.is_empty() {
        return Err(ApiError::bad_request(
            "a user claim must be defined on the role",
        ));
    }
    if let Some(g) = string_field(req, "groups_claim")? {
        role.groups_claim = g;
    }
    // Vault: a role must bind something beyond the issuer's signature
    if role.bound_audiences.is_empty()
        && role.bound_subject.is_empty()
        && role.bound_claims.is_empty()
    {
        return Err(ApiError::bad_request(
            "must have at least one bound constraint when creating/updating a role",
        ));
    }
    Ok(())
}

/// Every request under a jwt mount but `login` (which is open).
pub async fn handle(
    core: &Core,
    auth: &Authorized,
    mount: &MountEntry,
    rel: &str,
) -> Result<Response, ApiError> {
    use palisade_policy::Capability;
    let req = auth.request();
    let view = view(core, mount);
    match parse(req.operation, rel)? {
        JwtPath::Config if req.operation == Operation::Read => {
            let cfg: Config = get_json(&view, "config")
                .await?
                .ok_or_else(ApiError::not_found)?;
            Ok(Response::data(cfg.to_json()))
        }
        JwtPath::Config => write_config(core, mount, req).await,
        JwtPath::Roles => {
            let mut keys = view.list("role/").await?;
            keys.sort();
            if keys.is_empty() {
                return Err(ApiError::not_found());
            }
            Ok(Response::data(json!({ "keys": keys })))
        }
        JwtPath::Role(name) => match req.operation {
            Operation::Read => {
                let role: Role = get_json(&view, &format!("role/{name}"))
                    .await?
                    .ok_or_else(ApiError::not_found)?;
                Ok(Response::data(role.to_json()))
            }
            Operation::Delete => {
                let _g = WRITES.lock().await;
                view.delete(&format!("role/{name}")).await?;
                Ok(Response::no_content())
            }
            _ => {
                let _g = WRITES.lock().await;
                let existing: Option<Role> = get_json(&view, &format!("role/{name}")).await?;
                let allowed = if existing.is_some() {
                    auth.allows(Capability::Update)
                } else {
                    auth.allows(Capability::Create)
                };
                if !allowed {
                    return Err(ApiError::permission_denied());
                }
                let mut role = existing.unwrap_or_else(|| Role {
                    role_type: "jwt".into(),
                    bound_claims_type: "string".into(),
                    token: TokenParams::new(),
                    ..Role::default()
                });
                apply_role(req, &mut role)?;
                put_json(&view, &format!("role/{name}"), &role).await?;
                Ok(Response::no_content())
            }
        },
        JwtPath::Login => Err(ApiError::unsupported_path()),
    }
}

/// The single answer to every failed login (the audit says which check).
fn invalid(why: &'static str) -> ApiError {
    ApiError::bad_request("invalid JWT or role").audited_as(why)
}

/// A claim by name, or by JSON pointer when it starts with `/` (Vault).
fn claim<'a>(all: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if name.starts_with('/') {
        let mut cur: Option<&Value> = None;
        for (i, part) in name.split('/').skip(1).enumerate() {
            let part = part.replace("~1", "/").replace("~0", "~");
            cur = if i == 0 {
                all.get(&part)
            } else {
                match cur {
                    Some(Value::Object(o)) => o.get(&part),
                    Some(Value::Array(a)) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
                    _ => None,
                }
            };
        }
        cur
    } else {
        all.get(name)
    }
}

/// A claim value as a string, when it is one (numbers and booleans as text).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `*` matches any run of characters (Vault's `bound_claims_type = "glob"`,
/// and the cert method's allowed names).
pub(crate) fn glob_match(pattern: &str, value: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == value;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !value.starts_with(first) || value.len() < first.len() + last.len() || !value.ends_with(last)
    {
        return false;
    }
    let mut rest = &value[first.len()..value.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// Whether the verified claims meet every binding of the role.
fn check_bindings(role: &Role, claims: &palisade_jwt::Claims) -> Result<(), ApiError> {
    if role.bound_audiences.is_empty() {
        if !claims.aud.is_empty() {
            return Err(invalid(
                "audience claim found in JWT but no audiences bound to the role",
            ));
        }
    } else if !claims.aud.iter().any(|a| role.bound_audiences.contains(a)) {
        return Err(invalid("aud claim does not match any bound audience"));
    }
    if !role.bound_subject.is_empty() && claims.sub.as_deref() != Some(role.bound_subject.as_str())
    {
        return Err(invalid("sub claim does not match the bound subject"));
    }
    let glob = role.bound_claims_type == "glob";
    for (name, expected) in &role.bound_claims {
        let wanted: Vec<&str> = match expected {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let got: Vec<String> = match claim(&claims.all, name) {
            Some(Value::Array(a)) => a.iter().filter_map(scalar).collect(),
            Some(v) => scalar(v).into_iter().collect(),
            None => Vec::new(),
        };
        let ok = got.iter().any(|g| {
            wanted
                .iter()
                .any(|w| if glob { glob_match(w, g) } else { w == g })
        });
        if !ok {
            return Err(invalid("a bound claim does not match"));
        }
    }
    Ok(())
}

/// `POST login` on `mount` (the core has audited the request).
pub async fn login(core: &Core, mount: &MountEntry, req: &Request) -> Result<Response, ApiError> {
    if req.operation != Operation::Write {
        return Err(ApiError::unsupported_operation());
    }
    let jwt = match req.data.get("jwt") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        None | Some(Value::Null) => return Err(ApiError::bad_request("missing jwt")),
        Some(Value::String(_)) => return Err(ApiError::bad_request("missing jwt")),
        Some(_) => return Err(ApiError::bad_request("jwt must be a string")),
    };
    let view = view(core, mount);
    let cfg: Config = get_json(&view, "config")
        .await?
        .ok_or_else(|| ApiError::bad_request("could not load configuration"))?;
    let role_name = match string_field(req, "role")? {
        Some(r) if !r.is_empty() => r,
        _ if !cfg.default_role.is_empty() => cfg.default_role.clone(),
        _ => return Err(ApiError::bad_request("missing role")),
    };
    let role: Role = if is_canonical_role_name(&role_name) {
        get_json(&view, &format!("role/{role_name}")).await?
    } else {
        None
    }
    .ok_or_else(|| invalid("role could not be found"))?;
    let v = verifier(core, mount, &cfg).await?;
    let claims = v.verify(&jwt).await.map_err(|e| invalid(e.reason()))?;
    check_bindings(&role, &claims)?;
    let user = claim(&claims.all, &role.user_claim)
        .and_then(scalar)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| invalid("the user claim is missing or not a string"))?;
    if !role.groups_claim.is_empty() {
        match claim(&claims.all, &role.groups_claim) {
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => {}
            Some(Value::String(_)) => {}
            _ => {
                return Err(invalid(
                    "the groups claim is missing or not a list of strings",
                ));
            }
        }
    }
    if !crate::token::address_allowed(&role.token.token_bound_cidrs, &req.remote_addr) {
        return Err(invalid(
            "client address outside the role's token_bound_cidrs",
        ));
    }
    let mut meta = Map::new();
    for (c, key) in &role.claim_mappings {
        if let (Some(v), Value::String(key)) = (claim(&claims.all, c).and_then(scalar), key) {
            meta.insert(key.clone(), Value::String(v));
        }
    }
    // the claim mappings are the entity alias's metadata (Vault)
    let alias_metadata = meta
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
        .collect();
    let groups = if role.groups_claim.is_empty() {
        None
    } else {
        Some(match claim(&claims.all, &role.groups_claim) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        })
    };
    meta.insert("role".into(), Value::String(role_name.clone()));
    crate::token_params::issue(
        core,
        Login {
            mount,
            params: &role.token,
            meta,
            display_name: format!("{}-{user}", mount.kind),
            path: format!("auth/{}login", mount.path),
            alias: user.clone(),
            alias_metadata,
            groups,
        },
    )
    .await
}

/// What renewing a token this method issued may grant: the role must still
/// exist with the same policies.
pub async fn renew_entry(
    core: &Core,
    mount: &MountEntry,
    e: &TokenEntry,
) -> Result<TokenEntry, ApiError> {
    let name = e
        .meta
        .get("role")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let role: Option<Role> = if is_canonical_role_name(name) {
        get_json(&view(core, mount), &format!("role/{name}")).await?
    } else {
        None
    };
    crate::token_params::renew(core, mount, role.as_ref().map(|r| &r.token), "role", e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_vault_documents() {
        assert!(glob_match(
            "repo:acme/*:ref:refs/heads/main",
            "repo:acme/web:ref:refs/heads/main"
        ));
        assert!(!glob_match(
            "repo:acme/*:ref:refs/heads/main",
            "repo:evil/web:ref:refs/heads/main"
        ));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("a*b*c", "aXcYb"));
        assert!(!glob_match("ab*ba", "aba"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }

    #[test]
    fn claims_are_found_by_name_or_json_pointer() {
        let all = json!({"a": {"b/c": [1, "x"]}, "top": "t"});
        let all = all.as_object().unwrap();
        assert_eq!(claim(all, "top"), Some(&json!("t")));
        assert_eq!(claim(all, "/a/b~1c/1"), Some(&json!("x")));
        assert_eq!(claim(all, "/a/missing"), None);
        assert_eq!(claim(all, "/a/b~1c/9"), None);
    }

    #[test]
    fn paths_parse() {
        use Operation::*;
        assert_eq!(parse(Write, "login"), Ok(JwtPath::Login));
        assert_eq!(parse(Read, "config"), Ok(JwtPath::Config));
        assert_eq!(parse(Write, "role/ci"), Ok(JwtPath::Role("ci")));
        assert_eq!(parse(List, "role/"), Ok(JwtPath::Roles));
        assert_eq!(parse(Read, "login"), Err(ApiError::unsupported_operation()));
        assert!(parse(Write, "role/CI").is_err());
        assert_eq!(
            parse(Read, "oidc/auth_url"),
            Err(ApiError::unsupported_path())
        );
    }
}
