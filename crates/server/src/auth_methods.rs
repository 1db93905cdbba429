//! `sys/auth`: enabling, reading, tuning and disabling auth methods (the
//! built-in token method is always there and never in the table).
//!
//! Auth methods live in the mount table's `auth` list (`mounts.rs`), so a
//! change is one barrier write and bumps the same epoch as a secrets mount.
//! Disabling a method: (1) the table without it is written and served, so
//! no login reaches it and every token it issued is invalid at once (the
//! token store checks each token's issuing method, its ancestors' too);
//! (2) those tokens and their children are revoked; (3) its storage view
//! (the users) is deleted. A crash after (1) leaves tokens that authorise
//! nothing and that the background tidy revokes.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::core::Core;
use crate::logical::{ApiError, Operation, Request, Response, fields};
use crate::mounts::{AUTH_METHOD_TYPES, MountConfig, MountEntry, MountTable};

/// The methods with user lockout (`lockout.rs`).
const LOCKOUT_METHODS: &[&str] = &["approle", "userpass"];

/// The built-in token method, as `sys/auth` lists it.
/// The token method's accessor (it has no mount table entry).
pub const TOKEN_ACCESSOR: &str = "auth_token_0";

/// The token method as a mount, for what needs one (identity aliases of
/// tokens created with `entity_alias`).
pub fn token_mount() -> crate::mounts::MountEntry {
    crate::mounts::MountEntry {
        path: "token/".into(),
        kind: "token".into(),
        description: "token based credentials".into(),
        accessor: TOKEN_ACCESSOR.into(),
        uuid: String::new(),
        options: Default::default(),
        config: Default::default(),
        local: false,
        seal_wrap: false,
    }
}

fn token_method() -> Value {
    json!({
        "type": "token", "description": "token based credentials", "accessor": TOKEN_ACCESSOR,
        "uuid": "", "local": false, "seal_wrap": false,
        "config": {"default_lease_ttl": 0, "max_lease_ttl": 0, "force_no_cache": false, "token_type": "default-service"},
        "options": null,
    })
}

fn method_json(m: &MountEntry) -> Value {
    let mut v = m.to_json();
    v["config"]["token_type"] = json!("default-service");
    v
}

/// `GET sys/auth`.
pub fn list(core: &Core) -> Result<Response, ApiError> {
    let table = core.mount_table()?;
    let mut out = Map::new();
    out.insert("token/".into(), token_method());
    for m in &table.auth {
        out.insert(m.path.clone(), method_json(m));
    }
    Ok(Response::data(Value::Object(out)).with_top_level())
}

/// `sys/auth/<path>`: enable (POST), read (GET), disable (DELETE).
pub async fn handle(core: &Arc<Core>, req: &Request, path: &str) -> Result<Response, ApiError> {
    match req.operation {
        Operation::Write => enable(core, req, path).await,
        Operation::Read => {
            if path == "token" {
                return Ok(Response::data(token_method()).with_top_level());
            }
            let p = MountTable::check_auth_path(path)?;
            let table = core.mount_table()?;
            let m = table
                .auth
                .iter()
                .find(|m| m.path == p)
                .ok_or_else(|| ApiError::bad_request(format!("No auth engine at auth/{p}")))?;
            Ok(Response::data(method_json(m)).with_top_level())
        }
        Operation::Delete => disable(core, path).await,
        _ => Err(ApiError::unsupported_operation()),
    }
}

async fn enable(core: &Core, req: &Request, path: &str) -> Result<Response, ApiError> {
    let kind = match req.data.get("type") {
        Some(v) => fields::string(v, "type")?,
        None => {
            return Err(ApiError::bad_request(
                "backend type must be specified as a string",
            ));
        }
    };
    if kind == "token" {
        return Err(ApiError::bad_request(
            "token credential backend cannot be instantiated",
        ));
    }
    if !AUTH_METHOD_TYPES.contains(&kind.as_str()) {
        return Err(ApiError::bad_request(format!(
            "plugin not found in the catalog: {kind} (the auth methods available are: {})",
            AUTH_METHOD_TYPES.join(", ")
        ))
        .audited_as("plugin not found in the catalog"));
    }
    let p = MountTable::check_auth_path(path)?;
    let description = req
        .data
        .get("description")
        .filter(|v| !v.is_null())
        .map(|v| fields::string(v, "description"))
        .transpose()?
        .unwrap_or_default();
    if let Some(Value::Object(o)) = req.data.get("options")
        && !o.is_empty()
    {
        return Err(ApiError::bad_request(format!(
            "the {kind} auth method takes no options"
        )));
    }
    let config = auth_config(req.data.get("config"))?;
    let flag = |name: &str| -> Result<bool, ApiError> {
        match req.data.get(name) {
            None | Some(Value::Null) => Ok(false),
            Some(v) => fields::boolean(v, name),
        }
    };
    // kept and listed as given; replication does not exist here
    let (local, seal_wrap) = (flag("local")?, flag("seal_wrap")?);
    let _g = core.table_lock.lock().await;
    let mut table = (*core.mount_table()?).clone();
    if table.auth_conflicts(&p) {
        return Err(ApiError::bad_request(format!(
            "path is already in use at auth/{p}"
        )));
    }
    let uuid = palisade_core::uuid_v4();
    table.auth.push(MountEntry {
        path: p,
        kind: kind.clone(),
        description,
        // random, never reused: a token names the method that issued it
        // by this accessor, so a method enabled again at the same path
        // never revives the tokens of the one disabled there
        accessor: format!("auth_{kind}_{}", &uuid[..8]),
        uuid,
        options: Map::new(),
        config,
        local,
        seal_wrap,
    });
    core.save_mounts(table).await?;
    Ok(Response::no_content())
}

fn auth_config(v: Option<&Value>) -> Result<MountConfig, ApiError> {
    let mut c = MountConfig::default();
    let o = match v {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) => Some(o),
        Some(_) => return Err(ApiError::bad_request("config must be an object")),
    };
    if let Some(o) = o {
        for (k, x) in o {
            match k.as_str() {
                "default_lease_ttl" => c.default_lease_ttl = fields::duration_secs(x, k)?,
                "max_lease_ttl" => c.max_lease_ttl = fields::duration_secs(x, k)?,
                "force_no_cache" => c.force_no_cache = fields::boolean(x, k)?,
                "token_type" => check_token_type(x)?,
                _ => {}
            }
        }
    }
    if c.default_lease_ttl != 0 && c.max_lease_ttl != 0 && c.default_lease_ttl > c.max_lease_ttl {
        return Err(ApiError::bad_request(
            "given default lease TTL greater than given max lease TTL",
        ));
    }
    Ok(c)
}

fn check_token_type(v: &Value) -> Result<(), ApiError> {
    let t = fields::string(v, "token_type")?;
    match t.as_str() {
        "" | "default-service" | "service" => Ok(()),
        "batch" | "default-batch" => Err(ApiError::bad_request(format!(
            "'token_type' {t:?} is not supported: this server issues service tokens only"
        ))
        .audited_as("'token_type' batch is not supported")),
        _ => Err(
            ApiError::bad_request(format!("invalid 'token_type' value {t:?}"))
                .audited_as("invalid 'token_type' value"),
        ),
    }
}

async fn disable(core: &Core, path: &str) -> Result<Response, ApiError> {
    if path == "token" {
        return Err(ApiError::bad_request(
            "token credential backend cannot be disabled",
        ));
    }
    let p = MountTable::check_auth_path(path)?;
    let _g = core.table_lock.lock().await;
    let mut table = (*core.mount_table()?).clone();
    let Some(idx) = table.auth.iter().position(|m| m.path == p) else {
        return Ok(Response::no_content());
    };
    let m = table.auth.remove(idx);
    // (1) gone from the table: no new login, its tokens invalid from now
    core.save_mounts(table).await?;
    // (2) its tokens revoked; (3) its data deleted
    let revoked = core.tokens.revoke_by_method(&m.accessor).await?;
    core.lockouts.forget(Some(&m.accessor));
    // its entity aliases and group aliases go with it (Vault)
    crate::identity::forget_mount(core, &m.accessor).await?;
    palisade_barrier::View::new(core.barrier.clone(), m.auth_view_prefix())
        .clear()
        .await?;
    tracing::info!(path = %m.path, kind = %m.kind, revoked, "auth method disabled");
    Ok(Response::no_content())
}

/// `sys/auth/<path>/tune` for an enabled method (the token method's is in
/// `sys.rs`): its default and max lease TTLs (the TTLs its tokens get
/// unless a user sets its own) and description.
pub async fn tune(core: &Core, req: &Request, path: &str) -> Result<Response, ApiError> {
    let p = MountTable::check_auth_path(path)?;
    let _g = core.table_lock.lock().await;
    let mut table = (*core.mount_table()?).clone();
    let Some(m) = table.auth.iter_mut().find(|m| m.path == p) else {
        return Err(ApiError::bad_request(if req.operation == Operation::Read {
            format!("cannot fetch sysview for path \"auth/{p}\"")
        } else {
            format!("tune of path \"auth/{p}\" failed: no mount entry found")
        }));
    };
    match req.operation {
        Operation::Read => {
            // as configured, like a secrets engine's tune (Vault); the
            // tokens it issues are still capped at the system max TTL
            let (default_ttl, max_ttl) = crate::sys::effective_ttls(core, &m.config);
            let mut out = json!({
                "default_lease_ttl": default_ttl,
                "max_lease_ttl": max_ttl,
                "force_no_cache": m.config.force_no_cache,
                "description": m.description,
                "token_type": "default-service",
            });
            if LOCKOUT_METHODS.contains(&m.kind.as_str())
                && let (Value::Object(o), Value::Object(l)) =
                    (&mut out, m.config.user_lockout.tune_json())
            {
                o.extend(l);
            }
            Ok(Response::data(out).with_top_level())
        }
        Operation::Write => {
            let default_ttl =
                crate::sys::tune_ttl(req, "default_lease_ttl", m.config.default_lease_ttl)?;
            let max_ttl = crate::sys::tune_ttl(req, "max_lease_ttl", m.config.max_lease_ttl)?;
            if default_ttl != 0 && max_ttl != 0 && max_ttl < default_ttl {
                return Err(ApiError::bad_request(format!(
                    "backend max lease TTL of {max_ttl} would be less than backend default lease TTL of {default_ttl}"
                )));
            }
            if let Some(v) = req.data.get("token_type") {
                check_token_type(v)?;
            }
            let mut lockout = m.config.user_lockout.clone();
            if let Some(v) = req.data.get("user_lockout_config").filter(|v| !v.is_null()) {
                if !LOCKOUT_METHODS.contains(&m.kind.as_str()) {
                    return Err(ApiError::bad_request(format!(
                        "user lockout is not supported by the {} auth method",
                        m.kind
                    )));
                }
                lockout.apply(v)?;
            }
            m.config.user_lockout = lockout;
            m.config.default_lease_ttl = default_ttl;
            m.config.max_lease_ttl = max_ttl;
            if let Some(v) = req.data.get("description").filter(|v| !v.is_null()) {
                m.description = fields::string(v, "description")?;
            }
            core.save_mounts(table).await?;
            Ok(Response::no_content())
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

/// `GET sys/locked-users` (Vault's shape): the identities user lockout
/// holds now, by auth method accessor.
pub fn locked_users(core: &Core) -> Result<Response, ApiError> {
    let now = core.tokens.now();
    let mut by_mount: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (accessor, who) in core.lockouts.locked(now) {
        by_mount.entry(accessor).or_default().push(who);
    }
    let total: usize = by_mount.values().map(Vec::len).sum();
    let mounts: Vec<Value> = by_mount
        .into_iter()
        .map(|(a, ids)| json!({"mount_accessor": a, "counts": ids.len(), "alias_identifiers": ids}))
        .collect();
    Ok(Response::data(json!({
        "by_namespace": [{
            "namespace_id": "root", "namespace_path": "", "counts": total,
            "mount_accessors": mounts,
        }],
        "total": total,
    })))
}

/// `POST sys/locked-users/<mount accessor>/unlock/<identity>`.
pub fn unlock_user(core: &Core, rest: &str) -> Result<Response, ApiError> {
    let Some((accessor, who)) = rest.split_once("/unlock/") else {
        return Err(ApiError::unsupported_path());
    };
    // the identity is one path segment: what the ACL saw is what is unlocked
    if who.contains('/') || accessor.contains('/') {
        return Err(ApiError::unsupported_path());
    }
    if accessor.is_empty() || who.is_empty() {
        return Err(ApiError::bad_request(
            "mount_accessor and alias_identifier are required",
        ));
    }
    if !core.auth_method_enabled(accessor)? {
        return Err(
            ApiError::bad_request(format!("no auth method with accessor {accessor:?}"))
                .audited_as("no auth method with this accessor"),
        );
    }
    core.lockouts.unlock(accessor, who, core.tokens.now());
    Ok(Response::no_content())
}
