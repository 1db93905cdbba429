//! The `approle` auth method (Vault's API): roles a machine logs in to with
//! a role ID and a secret ID.
//!
//! Storage, in the method's view `auth/<uuid>/`:
//! - `salt`: the mount's HMAC key (created by the first write);
//! - `role/<name>`: a [`Role`], with its role ID in clear (it names the
//!   role, as a username does; Vault returns it on read);
//! - `role_id/<hmac(role ID)>`: the role's name;
//! - `secret_id/<name>/<hmac(secret ID)>`: a [`SecretId`] (never the secret
//!   ID itself: it is shown once, when generated);
//! - `accessor/<name>/<hmac(accessor)>`: the secret ID's HMAC.
//!
//! A secret ID carries its role's `uuid`, new at every creation of the
//! role: a secret ID left behind by a deleted role never logs in to a role
//! created again under the same name.
//!
//! Role names are canonical before the ACL sees them ([`parse`], called by
//! `Core::begin`): lowercase ASCII letters, digits and `_-.`. Vault folds
//! case; here an uppercase name is refused with 400.
//!
//! Logins (`login`, unauthenticated, audited) answer every mismatch —
//! unknown role ID, unknown, expired or used-up secret ID, an address
//! outside the bound CIDRs — with the same 400 `invalid role ID or secret
//! ID`; the audit record says which. Failures count against the role
//! (`lockout.rs`).

use std::sync::LazyLock;

use palisade_barrier::{BarrierOp, View};
use palisade_crypto::mac::MacKey;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::core::{Authorized, Core};
use crate::logical::{ApiError, Operation, Request, Response, fields};
use crate::mounts::MountEntry;
use crate::token::TokenEntry;
use crate::token_params::{Login, TokenParams, cidr_list};

/// Longest role name, in bytes.
pub const MAX_ROLE_NAME_BYTES: usize = 256;
/// Longest role ID or secret ID accepted, in bytes.
pub const MAX_ID_BYTES: usize = 1024;
/// Most secret ID metadata entries, and the longest key and value.
pub const MAX_METADATA_KEYS: usize = 64;
pub const MAX_METADATA_KEY_BYTES: usize = 128;
pub const MAX_METADATA_VALUE_BYTES: usize = 512;

const SALT: &str = "salt";

/// What a path under an approle mount names, its role name checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppRolePath<'a> {
    /// `LIST role/`
    Roles,
    /// `role/<name>`: read, create/update, delete.
    Role(&'a str),
    /// `role/<name>/role-id`: read, update.
    RoleId(&'a str),
    /// `role/<name>/secret-id`: generate (write), list accessors (LIST).
    SecretId(&'a str),
    /// `role/<name>/custom-secret-id`
    CustomSecretId(&'a str),
    /// `role/<name>/secret-id/lookup`
    SecretIdLookup(&'a str),
    /// `role/<name>/secret-id/destroy`
    SecretIdDestroy(&'a str),
    /// `role/<name>/secret-id-accessor/lookup`
    AccessorLookup(&'a str),
    /// `role/<name>/secret-id-accessor/destroy`
    AccessorDestroy(&'a str),
    /// `tidy/secret-id`
    Tidy,
    /// `login` (unauthenticated)
    Login,
}

/// Vault's role name rule (`\w(([\w-.]+)?\w)?`, ASCII), lowercase.
pub fn is_canonical_role_name(name: &str) -> bool {
    name.len() <= MAX_ROLE_NAME_BYTES
        && !name.contains('@')
        && crate::userpass::is_canonical_username(name)
}

fn invalid_role_name() -> ApiError {
    ApiError::bad_request(
        "invalid role name: role names are lowercase ASCII letters, digits and '_-.', begin and end with a letter, a digit or '_', and are at most 256 bytes (Vault folds case; here a name is never rewritten)",
    )
}

/// The path relative to an approle mount, for `op`. A role name that is
/// not canonical → 400; a path the method does not have → 404; an
/// operation the path does not have → 405.
pub fn parse(op: Operation, rel: &str) -> Result<AppRolePath<'_>, ApiError> {
    use Operation::*;
    let (path, ok) = match rel {
        "role" | "role/" => (AppRolePath::Roles, op == List),
        "login" => (AppRolePath::Login, op == Write),
        "tidy/secret-id" => (AppRolePath::Tidy, op == Write),
        _ => {
            let Some(rest) = rel.strip_prefix("role/") else {
                return Err(ApiError::unsupported_path());
            };
            let (name, sub) = match rest.split_once('/') {
                Some((n, s)) => (n, Some(s)),
                None => (rest, None),
            };
            if !is_canonical_role_name(name) {
                return Err(invalid_role_name());
            }
            match sub {
                None => (AppRolePath::Role(name), matches!(op, Read | Write | Delete)),
                Some("role-id") => (AppRolePath::RoleId(name), matches!(op, Read | Write)),
                Some("secret-id") => (AppRolePath::SecretId(name), matches!(op, Write | List)),
                // the trailing `/` is LIST's canonical form only: a write
                // there would be checked by the ACL on another path
                Some("secret-id/") if op == List => (AppRolePath::SecretId(name), true),
                Some("custom-secret-id") => (AppRolePath::CustomSecretId(name), op == Write),
                Some("secret-id/lookup") => (AppRolePath::SecretIdLookup(name), op == Write),
                Some("secret-id/destroy") => (
                    AppRolePath::SecretIdDestroy(name),
                    matches!(op, Write | Delete),
                ),
                Some("secret-id-accessor/lookup") => {
                    (AppRolePath::AccessorLookup(name), op == Write)
                }
                Some("secret-id-accessor/destroy") => (
                    AppRolePath::AccessorDestroy(name),
                    matches!(op, Write | Delete),
                ),
                Some(_) => return Err(ApiError::unsupported_path()),
            }
        }
    };
    if ok {
        Ok(path)
    } else {
        Err(ApiError::unsupported_operation())
    }
}

/// A role, as stored. Durations in seconds, 0 = none / the mount's.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Role {
    /// New at every creation of the role (see the module docs).
    pub uuid: String,
    pub role_id: String,
    pub bind_secret_id: bool,
    /// Where logins may come from (canonical CIDRs).
    pub secret_id_bound_cidrs: Vec<String>,
    pub secret_id_num_uses: i64,
    pub secret_id_ttl: i64,
    pub local_secret_ids: bool,
    #[serde(flatten)]
    pub token: TokenParams,
}

impl Role {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        self.token.write_json(&mut m);
        m.insert("bind_secret_id".into(), json!(self.bind_secret_id));
        m.insert(
            "secret_id_bound_cidrs".into(),
            json!(self.secret_id_bound_cidrs),
        );
        m.insert("secret_id_num_uses".into(), json!(self.secret_id_num_uses));
        m.insert("secret_id_ttl".into(), json!(self.secret_id_ttl));
        m.insert("local_secret_ids".into(), json!(self.local_secret_ids));
        Value::Object(m)
    }
}

/// A secret ID, as stored (keyed by its HMAC; the secret ID is not kept).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct SecretId {
    /// The role's `uuid` when the secret ID was made.
    pub role_uuid: String,
    pub accessor: String,
    pub metadata: Map<String, Value>,
    pub cidr_list: Vec<String>,
    pub token_bound_cidrs: Vec<String>,
    /// Unix seconds.
    pub creation_time: i64,
    /// Unix seconds; 0: never.
    pub expiration_time: i64,
    pub last_updated_time: i64,
    /// Uses left; 0: unlimited.
    pub num_uses: i64,
    /// The TTL and use count it was made with.
    pub ttl: i64,
}

impl SecretId {
    fn to_json(&self) -> Value {
        let t = |s: i64| {
            if s == 0 {
                Value::String("0001-01-01T00:00:00Z".into())
            } else {
                Value::String(palisade_core::rfc3339(s.saturating_mul(1_000_000_000)))
            }
        };
        json!({
            "secret_id_accessor": self.accessor,
            "metadata": self.metadata,
            "cidr_list": self.cidr_list,
            "token_bound_cidrs": self.token_bound_cidrs,
            "creation_time": t(self.creation_time),
            "expiration_time": t(self.expiration_time),
            "last_updated_time": t(self.last_updated_time),
            "secret_id_num_uses": self.num_uses,
            "secret_id_ttl": self.ttl,
        })
    }

    fn expired(&self, now: i64) -> bool {
        self.expiration_time != 0 && self.expiration_time <= now
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

fn to_bytes<T: Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
    crate::json::to_stored(v)
}

/// Role and secret ID writes are serialised (create-or-update decided once,
/// secret IDs never made for a role being deleted).
static WRITES: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(|| tokio::sync::Mutex::new(()));

/// The mount's HMAC key; `create` makes it when missing (writers only, under
/// [`WRITES`]: a login never creates it, and without it nothing exists).
async fn salt(view: &View, create: bool) -> Result<Option<MacKey>, ApiError> {
    if let Some(k) = view.get(SALT).await? {
        return Ok(Some(MacKey::from_bytes(&k)));
    }
    if !create {
        return Ok(None);
    }
    let k = MacKey::generate();
    view.put(SALT, k.expose_bytes()).await?;
    Ok(Some(k))
}

async fn get_role(view: &View, name: &str) -> Result<Option<Role>, ApiError> {
    get_json(view, &format!("role/{name}")).await
}

/// Whether a role exists (the ACL's create-or-update decision).
pub async fn role_exists(core: &Core, mount: &MountEntry, name: &str) -> Result<bool, ApiError> {
    Ok(get_role(&view(core, mount), name).await?.is_some())
}

fn uuid() -> String {
    palisade_core::uuid_v4()
}

/// A role ID or secret ID given by the caller: a non-empty string of at
/// most [`MAX_ID_BYTES`] bytes. Errors never echo the value.
fn id_field(req: &Request, name: &str) -> Result<Option<String>, ApiError> {
    match req.data.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s.len() <= MAX_ID_BYTES => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(ApiError::bad_request(format!(
            "{name} is longer than {MAX_ID_BYTES} bytes"
        ))),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be a string"))),
    }
}

fn nonneg_int(req: &Request, name: &str) -> Result<Option<i64>, ApiError> {
    match req.data.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let n = fields::int(v, name)?;
            if n < 0 {
                return Err(ApiError::bad_request(format!("{name} cannot be negative")));
            }
            Ok(Some(n))
        }
    }
}

/// Apply a role create or update to `role`.
fn apply_role(req: &Request, role: &mut Role) -> Result<(), ApiError> {
    role.token.apply(req)?;
    if let Some(v) = req.data.get("bind_secret_id") {
        role.bind_secret_id = fields::boolean(v, "bind_secret_id")?;
    }
    if let Some(v) = req
        .data
        .get("secret_id_bound_cidrs")
        .or_else(|| req.data.get("bound_cidr_list"))
    {
        role.secret_id_bound_cidrs = cidr_list(v, "secret_id_bound_cidrs")?;
    }
    if let Some(n) = nonneg_int(req, "secret_id_num_uses")? {
        role.secret_id_num_uses = n;
    }
    if let Some(v) = req.data.get("secret_id_ttl") {
        role.secret_id_ttl = fields::duration_secs(v, "secret_id_ttl")?;
    }
    if let Some(v) = req.data.get("local_secret_ids") {
        role.local_secret_ids = fields::boolean(v, "local_secret_ids")?;
    }
    if !role.bind_secret_id && role.secret_id_bound_cidrs.is_empty() {
        return Err(ApiError::bad_request(
            "at least one constraint should be enabled on the role",
        ));
    }
    Ok(())
}

/// Every request under an approle mount but `login` (which is open).
pub async fn handle(
    core: &Core,
    auth: &Authorized,
    mount: &MountEntry,
    rel: &str,
) -> Result<Response, ApiError> {
    let req = auth.request();
    let view = view(core, mount);
    let now = core.tokens.now();
    match parse(req.operation, rel)? {
        AppRolePath::Roles => {
            let mut keys = view.list("role/").await?;
            keys.sort();
            if keys.is_empty() {
                return Err(ApiError::not_found());
            }
            Ok(Response::data(json!({ "keys": keys })))
        }
        AppRolePath::Role(name) => match req.operation {
            Operation::Read => {
                let role = get_role(&view, name)
                    .await?
                    .ok_or_else(ApiError::not_found)?;
                Ok(Response::data(role.to_json()))
            }
            Operation::Delete => {
                let _g = WRITES.lock().await;
                delete_role(&view, name).await?;
                Ok(Response::no_content())
            }
            _ => write_role(auth, &view, name).await,
        },
        AppRolePath::RoleId(name) => {
            if req.operation == Operation::Read {
                let role = get_role(&view, name)
                    .await?
                    .ok_or_else(ApiError::not_found)?;
                return Ok(Response::data(json!({ "role_id": role.role_id })));
            }
            let new_id = id_field(req, "role_id")?
                .ok_or_else(|| ApiError::bad_request("missing role_id"))?;
            let _g = WRITES.lock().await;
            let mut role = get_role(&view, name)
                .await?
                .ok_or_else(|| ApiError::bad_request("role does not exist"))?;
            let key = salt(&view, true).await?.ok_or_else(ApiError::sealed)?;
            let mut ops = set_role_id_ops(&view, &key, name, &role.role_id, &new_id).await?;
            role.role_id = new_id;
            ops.push(BarrierOp::Put {
                path: format!("role/{name}"),
                value: to_bytes(&role)?,
            });
            view.transaction(ops).await?;
            Ok(Response::no_content())
        }
        AppRolePath::SecretId(name) if req.operation == Operation::List => {
            if get_role(&view, name).await?.is_none() {
                return Err(ApiError::bad_request(format!(
                    "role {name:?} does not exist"
                )));
            }
            let mut accessors = Vec::new();
            for h in view.list(&format!("secret_id/{name}/")).await? {
                if let Some(s) =
                    get_json::<SecretId>(&view, &format!("secret_id/{name}/{h}")).await?
                {
                    accessors.push(s.accessor);
                }
            }
            if accessors.is_empty() {
                return Err(ApiError::not_found());
            }
            accessors.sort();
            Ok(Response::data(json!({ "keys": accessors })))
        }
        AppRolePath::SecretId(name) => create_secret_id(&view, req, name, None, now).await,
        AppRolePath::CustomSecretId(name) => {
            let given = id_field(req, "secret_id")?
                .ok_or_else(|| ApiError::bad_request("missing secret_id"))?;
            create_secret_id(&view, req, name, Some(given), now).await
        }
        AppRolePath::SecretIdLookup(name) | AppRolePath::SecretIdDestroy(name) => {
            let secret = id_field(req, "secret_id")?
                .ok_or_else(|| ApiError::bad_request("missing secret_id"))?;
            let Some(key) = salt(&view, false).await? else {
                return Ok(Response::no_content());
            };
            let hash = key.sign_hex(secret.as_bytes());
            secret_by_hash(
                core,
                &view,
                name,
                &hash,
                matches!(parse(req.operation, rel)?, AppRolePath::SecretIdDestroy(_)),
            )
            .await
        }
        AppRolePath::AccessorLookup(name) | AppRolePath::AccessorDestroy(name) => {
            let accessor = id_field(req, "secret_id_accessor")?
                .ok_or_else(|| ApiError::bad_request("missing secret_id_accessor"))?;
            let destroy = matches!(parse(req.operation, rel)?, AppRolePath::AccessorDestroy(_));
            let not_found =
                || ApiError::bad_request("failed to find accessor entry for secret_id_accessor");
            let key = salt(&view, false).await?.ok_or_else(not_found)?;
            let akey = format!("accessor/{name}/{}", key.sign_hex(accessor.as_bytes()));
            let hash = match view.get(&akey).await? {
                Some(h) => String::from_utf8(h.to_vec()).map_err(ApiError::internal)?,
                None => return Err(not_found()),
            };
            secret_by_hash(core, &view, name, &hash, destroy).await
        }
        AppRolePath::Tidy => {
            let n = tidy(core, &view, now).await?;
            let mut r = Response::data(json!({ "secret_ids_removed": n }));
            r.status = 202;
            Ok(r)
        }
        AppRolePath::Login => Err(ApiError::unsupported_path()),
    }
}

/// Index operations moving a role's ID from `old` to `new` (refused when
/// another role has `new`).
async fn set_role_id_ops(
    view: &View,
    key: &MacKey,
    name: &str,
    old: &str,
    new: &str,
) -> Result<Vec<BarrierOp>, ApiError> {
    let new_key = format!("role_id/{}", key.sign_hex(new.as_bytes()));
    if let Some(owner) = view.get(&new_key).await?
        && owner.as_slice() != name.as_bytes()
    {
        return Err(ApiError::bad_request("role_id already in use"));
    }
    let mut ops = Vec::new();
    if !old.is_empty() && old != new {
        ops.push(BarrierOp::Delete {
            path: format!("role_id/{}", key.sign_hex(old.as_bytes())),
        });
    }
    ops.push(BarrierOp::Put {
        path: new_key,
        value: name.as_bytes().to_vec(),
    });
    Ok(ops)
}

/// `POST role/<name>`: create or update. Whether it creates or updates is
/// decided again under the writes' lock, against what the ACL allows.
async fn write_role(auth: &Authorized, view: &View, name: &str) -> Result<Response, ApiError> {
    use palisade_policy::Capability;
    let req = auth.request();
    // validate before taking the lock
    let mut probe = Role {
        bind_secret_id: true,
        token: TokenParams::new(),
        ..Role::default()
    };
    apply_role(req, &mut probe)?;
    let given_id = id_field(req, "role_id")?;
    let _g = WRITES.lock().await;
    let existing = get_role(view, name).await?;
    let create = existing.is_none();
    let allowed = if create {
        auth.allows(Capability::Create)
    } else {
        auth.allows(Capability::Update)
    };
    if !allowed {
        return Err(ApiError::permission_denied());
    }
    let mut role = existing.unwrap_or_else(|| Role {
        uuid: uuid(),
        bind_secret_id: true,
        token: TokenParams::new(),
        ..Role::default()
    });
    apply_role(req, &mut role)?;
    let key = salt(view, true).await?.ok_or_else(ApiError::sealed)?;
    let mut ops = Vec::new();
    let new_id = match (given_id, create) {
        (Some(id), _) => Some(id),
        (None, true) => Some(uuid()),
        (None, false) => None,
    };
    if let Some(id) = new_id {
        ops = set_role_id_ops(view, &key, name, &role.role_id, &id).await?;
        role.role_id = id;
    }
    ops.push(BarrierOp::Put {
        path: format!("role/{name}"),
        value: to_bytes(&role)?,
    });
    view.transaction(ops).await?;
    Ok(Response::no_content())
}

async fn delete_role(view: &View, name: &str) -> Result<(), ApiError> {
    let Some(role) = get_role(view, name).await? else {
        return Ok(());
    };
    // the role and its ID first, in one transaction: from then on no login
    // finds it; its secret IDs (bound to its uuid) are then removed
    let mut ops = vec![BarrierOp::Delete {
        path: format!("role/{name}"),
    }];
    if let Some(key) = salt(view, false).await? {
        ops.push(BarrierOp::Delete {
            path: format!("role_id/{}", key.sign_hex(role.role_id.as_bytes())),
        });
    }
    view.transaction(ops).await?;
    for prefix in [format!("secret_id/{name}/"), format!("accessor/{name}/")] {
        for k in view.list(&prefix).await? {
            view.delete(&format!("{prefix}{k}")).await?;
        }
    }
    Ok(())
}

/// Secret ID metadata: a JSON object, or a string holding one (hvac sends
/// `json.dumps(...)`), of string values; bounded; `role_name` is reserved.
fn metadata_field(req: &Request) -> Result<Map<String, Value>, ApiError> {
    let bad = |m: &str| ApiError::bad_request(format!("invalid metadata: {m}"));
    let obj = match req.data.get("metadata") {
        None | Some(Value::Null) => return Ok(Map::new()),
        Some(Value::String(s)) if s.is_empty() => return Ok(Map::new()),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(o)) => o,
            _ => return Err(bad("expected a JSON object of strings")),
        },
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err(bad("expected a JSON object of strings")),
    };
    if obj.len() > MAX_METADATA_KEYS {
        return Err(bad("too many keys"));
    }
    for (k, v) in &obj {
        if k.is_empty() || k.len() > MAX_METADATA_KEY_BYTES {
            return Err(bad("a key is empty or too long"));
        }
        if k == "role_name" {
            return Err(bad("\"role_name\" is reserved"));
        }
        match v {
            Value::String(s) if s.len() <= MAX_METADATA_VALUE_BYTES => {}
            Value::String(_) => return Err(bad("a value is too long")),
            _ => return Err(bad("expected a JSON object of strings")),
        }
    }
    Ok(obj)
}

/// Whether every range of `inner` lies inside one of `outer`.
fn cidrs_within(inner: &[String], outer: &[String]) -> bool {
    use palisade_core::net::Cidr;
    let outer: Vec<Cidr> = outer.iter().filter_map(|c| Cidr::parse(c)).collect();
    inner.iter().all(|c| match Cidr::parse(c) {
        Some(c) => outer.iter().any(|o| o.covers(&c)),
        None => false,
    })
}

/// Generate (or register, `given`) a secret ID for role `name`.
async fn create_secret_id(
    view: &View,
    req: &Request,
    name: &str,
    given: Option<String>,
    now: i64,
) -> Result<Response, ApiError> {
    let metadata = metadata_field(req)?;
    let cidrs = match req.data.get("cidr_list") {
        Some(v) => cidr_list(v, "cidr_list")?,
        None => Vec::new(),
    };
    let token_cidrs = match req.data.get("token_bound_cidrs") {
        Some(v) => cidr_list(v, "token_bound_cidrs")?,
        None => Vec::new(),
    };
    let ttl_req = match req.data.get("ttl") {
        None | Some(Value::Null) => None,
        Some(v) => Some(fields::duration_secs(v, "ttl")?),
    };
    let uses_req = nonneg_int(req, "num_uses")?;
    let _g = WRITES.lock().await;
    let role = get_role(view, name)
        .await?
        .ok_or_else(|| ApiError::bad_request(format!("role {name:?} does not exist")))?;
    if !role.bind_secret_id {
        return Err(ApiError::bad_request(
            "bind_secret_id is not set on the role",
        ));
    }
    if !role.secret_id_bound_cidrs.is_empty() && !cidrs_within(&cidrs, &role.secret_id_bound_cidrs)
    {
        return Err(ApiError::bad_request(
            "failed to verify the CIDR restrictions set on the secret ID: cidr_list must lie within the role's secret_id_bound_cidrs",
        ));
    }
    if !role.token.token_bound_cidrs.is_empty()
        && !cidrs_within(&token_cidrs, &role.token.token_bound_cidrs)
    {
        return Err(ApiError::bad_request(
            "failed to verify the CIDR restrictions set on the secret ID: token_bound_cidrs must lie within the role's token_bound_cidrs",
        ));
    }
    // a request may narrow the role's limits, never widen them
    let ttl = match ttl_req {
        None => role.secret_id_ttl,
        Some(t) if role.secret_id_ttl > 0 && (t == 0 || t > role.secret_id_ttl) => {
            return Err(ApiError::bad_request(
                "ttl cannot be longer than the role's secret_id_ttl",
            ));
        }
        Some(t) => t,
    };
    let num_uses = match uses_req {
        None => role.secret_id_num_uses,
        Some(n) if role.secret_id_num_uses > 0 && (n == 0 || n > role.secret_id_num_uses) => {
            return Err(ApiError::bad_request(
                "num_uses cannot be higher than the role's secret_id_num_uses",
            ));
        }
        Some(n) => n,
    };
    let key = salt(view, true).await?.ok_or_else(ApiError::sealed)?;
    let secret = match given {
        Some(s) => s,
        None => uuid(),
    };
    let hash = key.sign_hex(secret.as_bytes());
    if view
        .get(&format!("secret_id/{name}/{hash}"))
        .await?
        .is_some()
    {
        return Err(ApiError::bad_request("SecretID is already registered"));
    }
    let accessor = uuid();
    let entry = SecretId {
        role_uuid: role.uuid.clone(),
        accessor: accessor.clone(),
        metadata,
        cidr_list: cidrs,
        token_bound_cidrs: token_cidrs,
        creation_time: now,
        expiration_time: if ttl > 0 { now.saturating_add(ttl) } else { 0 },
        last_updated_time: now,
        num_uses,
        ttl,
    };
    view.transaction(vec![
        BarrierOp::Put {
            path: format!("secret_id/{name}/{hash}"),
            value: to_bytes(&entry)?,
        },
        BarrierOp::Put {
            path: format!("accessor/{name}/{}", key.sign_hex(accessor.as_bytes())),
            value: hash.into_bytes(),
        },
    ])
    .await?;
    Ok(Response::data(json!({
        "secret_id": secret,
        "secret_id_accessor": accessor,
        "secret_id_ttl": ttl,
        "secret_id_num_uses": num_uses,
    })))
}

/// Look up (or destroy) the secret ID stored under `hash` for role `name`.
/// An unknown one reads as 204, as in Vault.
async fn secret_by_hash(
    core: &Core,
    view: &View,
    name: &str,
    hash: &str,
    destroy: bool,
) -> Result<Response, ApiError> {
    let skey = format!("secret_id/{name}/{hash}");
    let _lock = core.kv_locks.lock(view, &skey).await;
    let Some(entry) = get_json::<SecretId>(view, &skey).await? else {
        return Ok(Response::no_content());
    };
    if destroy {
        remove_secret(view, name, hash, &entry).await?;
        return Ok(Response::no_content());
    }
    Ok(Response::data(entry.to_json()))
}

async fn remove_secret(
    view: &View,
    name: &str,
    hash: &str,
    entry: &SecretId,
) -> Result<(), ApiError> {
    let mut ops = vec![BarrierOp::Delete {
        path: format!("secret_id/{name}/{hash}"),
    }];
    if let Some(key) = salt(view, false).await? {
        ops.push(BarrierOp::Delete {
            path: format!(
                "accessor/{name}/{}",
                key.sign_hex(entry.accessor.as_bytes())
            ),
        });
    }
    Ok(view.transaction(ops).await?)
}

/// `tidy/secret-id`: remove expired secret IDs and those of roles that are
/// gone (or were created again since).
async fn tidy(core: &Core, view: &View, now: i64) -> Result<usize, ApiError> {
    let mut removed = 0;
    for dir in view.list("secret_id/").await? {
        let name = dir.trim_end_matches('/');
        let role = get_role(view, name).await?;
        for h in view.list(&format!("secret_id/{name}/")).await? {
            let skey = format!("secret_id/{name}/{h}");
            let _lock = core.kv_locks.lock(view, &skey).await;
            let Some(e) = get_json::<SecretId>(view, &skey).await? else {
                continue;
            };
            let orphan = role.as_ref().is_none_or(|r| r.uuid != e.role_uuid);
            if orphan || e.expired(now) {
                remove_secret(view, name, &h, &e).await?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// The single answer to every failed login (the audit says which check).
fn invalid_login(why: &'static str) -> ApiError {
    ApiError::bad_request("invalid role ID or secret ID").audited_as(why)
}

/// `POST login` on `mount` (the core has audited the request).
pub async fn login(core: &Core, mount: &MountEntry, req: &Request) -> Result<Response, ApiError> {
    if req.operation != Operation::Write {
        return Err(ApiError::unsupported_operation());
    }
    let role_id =
        id_field(req, "role_id")?.ok_or_else(|| ApiError::bad_request("missing role_id"))?;
    let secret = id_field(req, "secret_id")?;
    let view = view(core, mount);
    let now = core.tokens.now();
    let Some(key) = salt(&view, false).await? else {
        return Err(invalid_login("invalid role ID"));
    };
    let name = match view
        .get(&format!("role_id/{}", key.sign_hex(role_id.as_bytes())))
        .await?
    {
        Some(n) => String::from_utf8(n.to_vec()).map_err(ApiError::internal)?,
        None => return Err(invalid_login("invalid role ID")),
    };
    let lockout = &mount.config.user_lockout;
    let attempt = core
        .lockouts
        .begin(lockout, &mount.accessor, &name, &|| core.tokens.now())
        .await?;
    let (role, entry) =
        match check_login(core, &view, &key, &name, secret.as_deref(), req, now).await {
            Ok(x) => x,
            Err(LoginFailure { error, guess }) => {
                // a wrong or stale secret ID is a guess; a login from outside
                // the CIDRs is not, and must not let anyone lock the role out
                if guess {
                    attempt.failed(core.tokens.now());
                }
                return Err(error);
            }
        };
    attempt.succeeded();
    let mut meta = entry
        .as_ref()
        .map(|e| e.metadata.clone())
        .unwrap_or_default();
    meta.insert("role_name".into(), Value::String(name.clone()));
    let mut params = role.token.clone();
    if let Some(e) = &entry
        && !e.token_bound_cidrs.is_empty()
    {
        params.token_bound_cidrs = e.token_bound_cidrs.clone();
    }
    crate::token_params::issue(
        core,
        Login {
            mount,
            params: &params,
            meta,
            display_name: format!("{}-{name}", mount.kind),
            path: format!("auth/{}login", mount.path),
            // Vault's alias for an AppRole login is the role ID
            alias: role.role_id.clone(),
            alias_metadata: [("role_name".to_string(), name.clone())].into(),
            groups: None,
        },
    )
    .await
}

/// Why a login failed, and whether it counts as a guess for user lockout.
struct LoginFailure {
    error: ApiError,
    guess: bool,
}

impl From<ApiError> for LoginFailure {
    fn from(error: ApiError) -> Self {
        // storage errors and the like are nobody's guess
        LoginFailure {
            error,
            guess: false,
        }
    }
}

fn guessed(why: &'static str) -> LoginFailure {
    LoginFailure {
        error: invalid_login(why),
        guess: true,
    }
}

fn fenced(why: &'static str) -> LoginFailure {
    LoginFailure {
        error: invalid_login(why),
        guess: false,
    }
}

/// The checks of a login, once the role ID named role `name`: the role,
/// then (when it binds one) the secret ID, whose use is counted here.
async fn check_login(
    core: &Core,
    view: &View,
    key: &MacKey,
    name: &str,
    secret: Option<&str>,
    req: &Request,
    now: i64,
) -> Result<(Role, Option<SecretId>), LoginFailure> {
    let role = get_role(view, name)
        .await?
        .ok_or_else(|| guessed("invalid role ID"))?;
    if !crate::token::address_allowed(&role.secret_id_bound_cidrs, &req.remote_addr) {
        return Err(fenced(
            "client address outside the role's secret_id_bound_cidrs",
        ));
    }
    if !role.bind_secret_id {
        return Ok((role, None));
    }
    let secret = secret.ok_or_else(|| guessed("missing secret ID"))?;
    let hash = key.sign_hex(secret.as_bytes());
    let skey = format!("secret_id/{name}/{hash}");
    // one use at a time per secret ID: a one-use secret ID logs in once
    let _lock = core.kv_locks.lock(view, &skey).await;
    let mut entry = get_json::<SecretId>(view, &skey)
        .await?
        .ok_or_else(|| guessed("invalid secret ID"))?;
    if entry.role_uuid != role.uuid {
        return Err(guessed("invalid secret ID"));
    }
    if entry.expired(now) {
        remove_secret(view, name, &hash, &entry).await?;
        return Err(guessed("secret ID expired"));
    }
    if !crate::token::address_allowed(&entry.cidr_list, &req.remote_addr) {
        return Err(fenced("client address outside the secret ID's cidr_list"));
    }
    match entry.num_uses {
        0 => {}
        1 => remove_secret(view, name, &hash, &entry).await?,
        n => {
            entry.num_uses = n - 1;
            entry.last_updated_time = now;
            view.put(&skey, &to_bytes(&entry)?)
                .await
                .map_err(ApiError::from)?;
        }
    }
    Ok((role, Some(entry)))
}

/// What renewing a token this method issued may grant: the role must still
/// exist with the same policies (Vault's `pathLoginRenew`).
pub async fn renew_entry(
    core: &Core,
    mount: &MountEntry,
    e: &TokenEntry,
) -> Result<TokenEntry, ApiError> {
    let name = e
        .meta
        .get("role_name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let role = if is_canonical_role_name(name) {
        get_role(&view(core, mount), name).await?
    } else {
        None
    };
    crate::token_params::renew(core, mount, role.as_ref().map(|r| &r.token), "role", e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Operation::*;

    #[test]
    fn paths_parse_into_what_the_handler_acts_on() {
        assert_eq!(parse(List, "role/"), Ok(AppRolePath::Roles));
        assert_eq!(parse(Read, "role/web"), Ok(AppRolePath::Role("web")));
        assert_eq!(
            parse(Read, "role/web/role-id"),
            Ok(AppRolePath::RoleId("web"))
        );
        assert_eq!(
            parse(Write, "role/web/secret-id"),
            Ok(AppRolePath::SecretId("web"))
        );
        assert_eq!(
            parse(List, "role/web/secret-id/"),
            Ok(AppRolePath::SecretId("web"))
        );
        assert_eq!(
            parse(Delete, "role/web/secret-id-accessor/destroy"),
            Ok(AppRolePath::AccessorDestroy("web"))
        );
        assert_eq!(parse(Write, "login"), Ok(AppRolePath::Login));
        assert_eq!(parse(Write, "role/Web"), Err(invalid_role_name()));
        assert_eq!(parse(Write, "role/a@b"), Err(invalid_role_name()));
        assert_eq!(parse(Read, "login"), Err(ApiError::unsupported_operation()));
        assert_eq!(
            parse(Read, "role/web/secret-id"),
            Err(ApiError::unsupported_operation())
        );
        assert_eq!(
            parse(Write, "role/web/nope"),
            Err(ApiError::unsupported_path())
        );
        assert_eq!(parse(Read, "config"), Err(ApiError::unsupported_path()));
    }

    #[test]
    fn secret_cidrs_must_lie_inside_the_roles() {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(cidrs_within(&v(&["10.1.0.0/16"]), &v(&["10.0.0.0/8"])));
        assert!(cidrs_within(&v(&[]), &v(&["10.0.0.0/8"])));
        assert!(!cidrs_within(&v(&["10.0.0.0/7"]), &v(&["10.0.0.0/8"])));
        assert!(!cidrs_within(&v(&["11.0.0.1/32"]), &v(&["10.0.0.0/8"])));
    }
}
