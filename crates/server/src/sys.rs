//! `sys/*`: init, unseal, seal, health, mounts, policies, audit devices,
//! key rotation and capabilities, with Vault's request and response shapes.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use crate::core::{AuditDeviceEntry, Authorized, Core};
use crate::logical::{ApiError, Operation, Request, Response, fields};
use crate::mounts::{MountConfig, MountTable};
use palisade_audit::AuditEntry;

pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+palisade");

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

async fn seal_status(core: &Core) -> Result<Value, ApiError> {
    let cfg = core.barrier.seal_config().await?;
    let mut p = core.barrier.unseal_progress();
    // unsealed only once everything behind the barrier is loaded and served
    p.sealed = p.sealed || !core.is_unsealed_node();
    Ok(json!({
        "type": "shamir",
        "initialized": cfg.is_some(),
        "sealed": p.sealed,
        "t": cfg.map(|c| c.secret_threshold).unwrap_or(0),
        "n": cfg.map(|c| c.secret_shares).unwrap_or(0),
        "progress": p.progress,
        "nonce": p.nonce,
        "version": VERSION,
        "build_date": "",
        "migration": false,
        "recovery_seal": false,
        "storage_type": core.barrier.backend_kind(),
        "cluster_name": if p.sealed { Value::Null } else { json!("palisade") },
        "cluster_id": if p.sealed { Value::Null } else { json!("") },
    }))
}

fn query_code(req: &Request, name: &str, default: u16) -> Result<u16, ApiError> {
    match req.query.iter().find(|(k, _)| k == name) {
        None => Ok(default),
        Some((_, v)) => v
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
            .ok_or_else(|| {
                ApiError::bad_request(format!("unable to parse {name}: invalid status code"))
            }),
    }
}

/// sys/init, sys/unseal, sys/seal-status, sys/health, sys/leader.
pub async fn handle_unauthenticated(core: &Arc<Core>, req: &Request) -> Result<Response, ApiError> {
    match (req.path.as_str(), req.operation) {
        ("sys/init", Operation::Read) => Ok(Response::raw(
            200,
            json!({ "initialized": core.barrier.initialized().await? }),
        )),
        ("sys/init", Operation::Write) => {
            let shares = field_u8(req, "secret_shares")?;
            let threshold = field_u8(req, "secret_threshold")?;
            for unsupported in [
                "pgp_keys",
                "root_token_pgp_key",
                "stored_shares",
                "recovery_shares",
            ] {
                if req.data.get(unsupported).is_some_and(|v| {
                    !v.is_null() && v != &json!(0) && v != &json!("") && v != &json!([])
                }) {
                    return Err(ApiError::bad_request(format!(
                        "{unsupported} is not supported"
                    )));
                }
            }
            let (parts, root) = core.initialize(shares, threshold).await?;
            let keys: Vec<String> = parts.iter().map(hex::encode).collect();
            let keys_b64: Vec<String> = parts.iter().map(|p| b64().encode(&p[..])).collect();
            Ok(Response::raw(
                200,
                json!({ "keys": keys, "keys_base64": keys_b64, "root_token": root }),
            ))
        }
        ("sys/seal-status", Operation::Read) => Ok(Response::raw(200, seal_status(core).await?)),
        ("sys/unseal", Operation::Write) => {
            if !core.barrier.initialized().await? {
                return Err(ApiError::bad_request("Vault is not initialized"));
            }
            let reset = req
                .data
                .get("reset")
                .map(|v| fields::boolean(v, "reset"))
                .transpose()?
                .unwrap_or(false);
            if reset {
                core.barrier.reset_unseal();
                return Ok(Response::raw(200, seal_status(core).await?));
            }
            let key = match req.data.get("key") {
                Some(Value::String(k)) if !k.is_empty() => k.clone(),
                _ => {
                    return Err(ApiError::bad_request(
                        "'key' must be specified in request body as JSON, or 'reset' set to true",
                    ));
                }
            };
            let share = Zeroizing::new(hex::decode(&key).or_else(|_| b64().decode(&key)).map_err(
                |_| ApiError::bad_request("'key' must be a valid hex or base64 string"),
            )?);
            core.submit_unseal_share(share).await?;
            Ok(Response::raw(200, seal_status(core).await?))
        }
        ("sys/health", Operation::Read) => {
            // an unsealed node knows without asking the database (a standby
            // cut off from it still answers its load balancer at once)
            let initialized = core.is_unsealed_node() || core.barrier.initialized().await?;
            let sealed = !core.is_unsealed_node();
            let standby = !sealed && core.relays();
            let standby_ok = match req.query.iter().find(|(k, _)| k == "standbyok") {
                None => false,
                Some((_, v)) => v.is_empty() || fields::parse_bool(v).unwrap_or(false),
            };
            let status = if !initialized {
                query_code(req, "uninitcode", 501)?
            } else if sealed {
                query_code(req, "sealedcode", 503)?
            } else if standby && !standby_ok {
                query_code(req, "standbycode", 429)?
            } else {
                query_code(req, "activecode", 200)?
            };
            // validate the other documented options even though Palisade never uses them
            for opt in ["standbycode", "drsecondarycode", "performancestandbycode"] {
                query_code(req, opt, 429)?;
            }
            Ok(Response::raw(
                status,
                json!({
                    "initialized": initialized,
                    "sealed": sealed,
                    "standby": standby,
                    "performance_standby": false,
                    "replication_performance_mode": "disabled",
                    "replication_dr_mode": "disabled",
                    "server_time_utc": palisade_core::now_nanos() / 1_000_000_000,
                    "version": VERSION,
                    "enterprise": false,
                    "cluster_name": "palisade",
                    "cluster_id": "",
                    "echo_duration_ms": 0,
                    "clock_skew_ms": 0,
                }),
            ))
        }
        ("sys/leader", Operation::Read) => {
            let Some(ha) = core.ha() else {
                return Ok(Response::raw(
                    200,
                    json!({ "ha_enabled": false, "is_self": false, "active_time": "0001-01-01T00:00:00Z",
                            "leader_address": "", "leader_cluster_address": "", "performance_standby": false }),
                ));
            };
            if !core.is_unsealed_node() {
                return Err(ApiError::sealed());
            }
            let is_self = !core.relays() && core.is_serving();
            let leader = if is_self {
                Some(ha.config.api_addr.clone())
            } else {
                ha.leader(false)
                    .await
                    .filter(|l| l.live && l.holder != ha.node_id())
                    .map(|l| l.api_addr)
            }
            .unwrap_or_default();
            let active_time = ha
                .active_time()
                .filter(|_| is_self)
                .unwrap_or_else(|| "0001-01-01T00:00:00Z".into());
            Ok(Response::raw(
                200,
                json!({ "ha_enabled": true, "is_self": is_self, "active_time": active_time,
                        "leader_address": leader, "leader_cluster_address": leader,
                        "performance_standby": false, "performance_standby_last_remote_wal": 0 }),
            ))
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

/// `sys/ha-status`: the nodes heard of recently, the active one marked
/// (Vault's shape).
async fn ha_status(core: &Arc<Core>) -> Result<Response, ApiError> {
    let Some(ha) = core.ha() else {
        return Err(ApiError::bad_request("high availability is not enabled"));
    };
    let nodes: Vec<Value> = ha
        .nodes()
        .await?
        .into_iter()
        .map(|n| {
            json!({
                "hostname": n.node_id,
                "api_address": n.api_addr,
                "cluster_address": n.api_addr,
                "active_node": n.active,
                "last_echo": if n.active { Value::Null } else { json!(n.last_seen) },
                "version": n.version,
                "upgrade_version": n.version,
                "redundancy_zone": "",
            })
        })
        .collect();
    let m = &ha.metrics;
    let counter = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    Ok(Response::data(json!({
        "nodes": nodes,
        "metrics": {
            "this_node": ha.node_id(),
            "leadership_gained": counter(&m.leadership_gained),
            "leadership_lost": counter(&m.leadership_lost),
            "lease_renewals": ha.renewals(),
            "forwarded": counter(&m.forwarded),
            "redirected": counter(&m.redirected),
            "forward_errors": counter(&m.forward_errors),
        },
    }))
    .with_top_level())
}

fn field_u8(req: &Request, name: &str) -> Result<u8, ApiError> {
    let v = req
        .data
        .get(name)
        .ok_or_else(|| ApiError::bad_request(format!("{name} is required")))?;
    let n = fields::int(v, name)?;
    u8::try_from(n).map_err(|_| ApiError::bad_request(format!("{name} must be between 1 and 255")))
}

/// Everything else under sys/ (the token and ACL were checked by the core
/// on the canonical path; `rest` is that path after `sys/`).
pub async fn handle(core: &Arc<Core>, auth: &Authorized, rest: &str) -> Result<Response, ApiError> {
    let req = auth.request();
    let op = req.operation;
    // LIST paths end in `/` (canonical form): the listing endpoints match without it
    let rest = if op == Operation::List {
        rest.strip_suffix('/').unwrap_or(rest)
    } else {
        rest
    };
    if let Some(w) = rest.strip_prefix("wrapping/") {
        return crate::wrapping::handle(core, auth, w).await;
    }
    if rest == "locked-users" && op == Operation::Read {
        return crate::auth_methods::locked_users(core);
    }
    if let Some(u) = rest.strip_prefix("locked-users/")
        && op == Operation::Write
    {
        return crate::auth_methods::unlock_user(core, u);
    }
    match rest {
        "step-down" if op == Operation::Write => {
            // Vault: sudo; without HA there is nothing to hand over
            if let Some(ha) = core.ha() {
                ha.step_down();
            }
            return Ok(Response::no_content());
        }
        "ha-status" if op == Operation::Read => return ha_status(core).await,
        "metrics" if op == Operation::Read => return crate::metrics::handle(core, req),
        "rotate" if op == Operation::Write => {
            core.barrier.rotate().await?;
            return Ok(Response::no_content());
        }
        "key-status" if op == Operation::Read => {
            let st = core.barrier.key_status()?;
            return Ok(Response::data(json!({
                "term": st.term,
                "install_time": palisade_core::rfc3339(st.install_time),
                "encryptions": 0,
            }))
            .with_top_level());
        }
        "mounts" if op == Operation::Read || op == Operation::List => return list_mounts(core),
        "auth" if op == Operation::Read => return crate::auth_methods::list(core),
        "policy" | "policies/acl" if op == Operation::Read || op == Operation::List => {
            let names = core.policies.list()?;
            if rest == "policy" {
                return Ok(
                    Response::data(json!({ "policies": names, "keys": names })).with_top_level()
                );
            }
            let names: Vec<String> = names.into_iter().filter(|n| n != "root").collect();
            return Ok(Response::data(json!({ "keys": names, "policies": names })).with_top_level());
        }
        "audit" if op == Operation::Read || op == Operation::List => {
            let table = core.audit_table.lock().await;
            let mut out = Map::new();
            for d in table.iter() {
                out.insert(
                    d.path.clone(),
                    json!({ "type": d.kind, "description": d.description, "options": d.options, "local": d.local, "path": d.path }),
                );
            }
            return Ok(Response::data(Value::Object(out)).with_top_level());
        }
        "capabilities-self" | "capabilities" | "capabilities-accessor"
            if op == Operation::Write =>
        {
            return capabilities(core, auth, rest).await;
        }
        _ => {}
    }
    if let Some(r) = leases(core, auth, rest).await {
        return r;
    }
    if crate::rootops::is_root_op(rest) {
        return crate::rootops::handle(core, req, rest).await;
    }
    if rest == "remount" {
        return crate::remount::remount(core, auth).await;
    }
    if let Some(id) = rest.strip_prefix("remount/status/") {
        return crate::remount::status(core, auth, id);
    }
    if let Some(path) = rest.strip_prefix("mounts/") {
        if let Some(p) = path.strip_suffix("/tune") {
            // `vault auth tune` tunes auth methods here (sudo, as sys/auth/*)
            match p.strip_prefix("auth/") {
                Some("token") => return tune_token_auth(core, req),
                Some(a) => return crate::auth_methods::tune(core, req, a).await,
                None => return tune_mount(core, req, p).await,
            }
        }
        return mount(core, req, path).await;
    }
    if let Some(path) = rest.strip_prefix("auth/") {
        if let Some(p) = path.strip_suffix("/tune") {
            if p == "token" {
                return tune_token_auth(core, req);
            }
            return crate::auth_methods::tune(core, req, p).await;
        }
        return crate::auth_methods::handle(core, req, path).await;
    }
    if let Some(name) = rest.strip_prefix("policy/") {
        return policy(core, req, name, false).await;
    }
    if let Some(name) = rest.strip_prefix("policies/acl/") {
        return policy(core, req, name, true).await;
    }
    if let Some(path) = rest.strip_prefix("audit/") {
        return audit_device(core, auth, path).await;
    }
    if let Some(path) = rest.strip_prefix("audit-hash/") {
        if op != Operation::Write {
            return Err(ApiError::unsupported_operation());
        }
        let input = match req.data.get("input") {
            Some(v) => fields::string(v, "input")?,
            None => return Err(ApiError::bad_request("the \"input\" parameter is required")),
        };
        let name = format!("{path}/");
        let hash = core
            .audit
            .hash(&name, &input)
            .ok_or_else(|| ApiError::bad_request(format!("unknown audit backend {name}")))?;
        return Ok(Response::data(json!({ "hash": hash })).with_top_level());
    }
    if let Some(path) = rest.strip_prefix("audit-head/") {
        if op != Operation::Read {
            return Err(ApiError::unsupported_operation());
        }
        return audit_head(core, path).await;
    }
    if let Some(path) = rest.strip_prefix("internal/ui/mounts/") {
        let table = core.mount_table()?;
        let (m, _) = table.route(path).ok_or_else(|| ApiError::bad_request(format!("preflight capability check returned 403, please ensure client's policies grant access to path \"{path}/\"")))?;
        let mut v = m.to_json();
        v["path"] = json!(m.path);
        return Ok(Response::data(v));
    }
    // a known endpoint asked for an operation it does not have: 405, as in Vault
    if matches!(
        rest,
        "seal"
            | "rotate"
            | "key-status"
            | "mounts"
            | "auth"
            | "policy"
            | "policies/acl"
            | "audit"
            | "capabilities-self"
            | "capabilities"
            | "capabilities-accessor"
    ) {
        return Err(ApiError::unsupported_operation());
    }
    Err(ApiError::unsupported_path())
}

fn list_mounts(core: &Core) -> Result<Response, ApiError> {
    let table = core.mount_table()?;
    let mut out = Map::new();
    for m in &table.entries {
        out.insert(m.path.clone(), m.to_json());
    }
    out.insert(
        "sys/".into(),
        json!({ "type": "system", "description": "system endpoints used for control, policy and debugging",
                "accessor": "system_0", "uuid": "", "local": false, "seal_wrap": true, "options": null,
                "config": {"default_lease_ttl": 0, "max_lease_ttl": 0, "force_no_cache": false} }),
    );
    Ok(Response::data(Value::Object(out)).with_top_level())
}

fn mount_config(v: Option<&Value>) -> Result<MountConfig, ApiError> {
    let mut c = MountConfig::default();
    if let Some(Value::Object(o)) = v {
        if let Some(x) = o.get("default_lease_ttl") {
            c.default_lease_ttl = fields::duration_secs(x, "default_lease_ttl")?;
        }
        if let Some(x) = o.get("max_lease_ttl") {
            c.max_lease_ttl = fields::duration_secs(x, "max_lease_ttl")?;
        }
        if let Some(x) = o.get("force_no_cache") {
            c.force_no_cache = fields::boolean(x, "force_no_cache")?;
        }
    }
    // Vault's check when mounting (0 is "the system's")
    if c.default_lease_ttl != 0 && c.max_lease_ttl != 0 && c.default_lease_ttl > c.max_lease_ttl {
        return Err(ApiError::bad_request(
            "given default lease TTL greater than given max lease TTL",
        ));
    }
    Ok(c)
}

/// The TTLs a mount works with: its own where it has one, else the
/// system's (`default_lease_ttl`, `max_lease_ttl` of the server
/// configuration, 768h each by default). What `.../tune` reports, as Vault.
pub(crate) fn effective_ttls(core: &Core, c: &MountConfig) -> (i64, i64) {
    let or_system = |own: i64, system: i64| if own > 0 { own } else { system };
    (
        or_system(c.default_lease_ttl, core.options.ttl.default_ttl),
        or_system(c.max_lease_ttl, core.options.ttl.max_ttl),
    )
}

/// A TTL for `.../tune`: a duration, or `system` (0: the system's). Absent,
/// `null` and `""` leave it as it is (OpenBao): never a silent reset to the
/// system's maximum.
pub(crate) fn tune_ttl(req: &Request, name: &str, current: i64) -> Result<i64, ApiError> {
    match req.data.get(name) {
        None | Some(Value::Null) => Ok(current),
        Some(Value::String(s)) if s.is_empty() => Ok(current),
        Some(Value::String(s)) if s == "system" => Ok(0),
        Some(v) => fields::duration_secs(v, name),
    }
}

fn string_map(v: Option<&Value>) -> Result<Map<String, Value>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(o)) => o
            .iter()
            .map(|(k, v)| Ok((k.clone(), Value::String(fields::string(v, k)?))))
            .collect(),
        Some(_) => Err(ApiError::bad_request("options must be an object")),
    }
}

async fn mount(core: &Arc<Core>, req: &Request, path: &str) -> Result<Response, ApiError> {
    match req.operation {
        Operation::Write => {
            let kind = match req.data.get("type") {
                Some(v) => fields::string(v, "type")?,
                None => {
                    return Err(ApiError::bad_request(
                        "backend type must be specified as a string",
                    ));
                }
            };
            // hvac sends `"description": null` when none is given; null means absent
            let description = req
                .data
                .get("description")
                .filter(|v| !v.is_null())
                .map(|v| fields::string(v, "description"))
                .transpose()?
                .unwrap_or_default();
            let options = string_map(req.data.get("options"))?;
            let config = mount_config(req.data.get("config"))?;
            core.enable_mount(path, &kind, &description, options, config)
                .await?;
            Ok(Response::no_content())
        }
        Operation::Read => {
            let p = MountTable::check_path(path)?;
            let table = core.mount_table()?;
            let m =
                table.entries.iter().find(|m| m.path == p).ok_or_else(|| {
                    ApiError::bad_request(format!("No secret engine mount at {p}"))
                })?;
            Ok(Response::data(m.to_json()))
        }
        Operation::Delete => {
            let p = MountTable::check_path(path)?;
            let Some(uuid) = core
                .mount_table()?
                .entries
                .iter()
                .find(|m| m.path == p)
                .map(|m| m.uuid.clone())
            else {
                return Ok(Response::no_content());
            };
            // its leases first (Vault): the engine still has the storage it
            // needs to revoke them; one it cannot revoke keeps the mount.
            // Not under the table lock: revocations wait on databases, and
            // other mount changes must not wait for them
            if let Err(e) = core.quiesce_mount(&uuid).await {
                return Err(ApiError::bad_request(format!(
                    "failed to revoke leases of {p}: {}",
                    e.messages.join("; ")
                ))
                .audited_as("failed to revoke leases"));
            }
            let _g = core.table_lock.lock().await;
            let mut table = (*core.mount_table()?).clone();
            let Some(idx) = table.entries.iter().position(|m| m.uuid == uuid) else {
                core.untaint(&uuid);
                return Ok(Response::no_content());
            };
            let m = table.entries.remove(idx);
            // remove the mount first so no request reaches a half-cleared view
            let saved = core.save_mounts(table).await;
            core.untaint(&uuid);
            saved?;
            palisade_barrier::View::new(core.barrier.clone(), m.view_prefix())
                .clear()
                .await?;
            Ok(Response::no_content())
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

async fn tune_mount(core: &Arc<Core>, req: &Request, path: &str) -> Result<Response, ApiError> {
    let p = MountTable::check_path(path)?;
    let _g = core.table_lock.lock().await;
    let mut table = (*core.mount_table()?).clone();
    let m = table
        .entries
        .iter_mut()
        .find(|m| m.path == p)
        .ok_or_else(|| ApiError::bad_request(format!("no mount entry found for path {p}")))?;
    match req.operation {
        Operation::Read => {
            let (default_ttl, max_ttl) = effective_ttls(core, &m.config);
            let mut out = json!({
                "default_lease_ttl": default_ttl,
                "max_lease_ttl": max_ttl,
                "force_no_cache": m.config.force_no_cache,
                "description": m.description,
            });
            if !m.options.is_empty() {
                out["options"] = Value::Object(m.options.clone());
            }
            Ok(Response::data(out).with_top_level())
        }
        Operation::Write => {
            if req.data.contains_key("token_type") {
                return Err(ApiError::bad_request(
                    "'token_type' can only be modified on auth mounts",
                ));
            }
            let default_ttl = tune_ttl(req, "default_lease_ttl", m.config.default_lease_ttl)?;
            let max_ttl = tune_ttl(req, "max_lease_ttl", m.config.max_lease_ttl)?;
            // Vault's check (a 0 is the system's and is not compared)
            if default_ttl != 0 && max_ttl != 0 && max_ttl < default_ttl {
                return Err(ApiError::bad_request(format!(
                    "backend max lease TTL of {max_ttl} would be less than backend default lease TTL of {default_ttl}"
                )));
            }
            m.config.default_lease_ttl = default_ttl;
            m.config.max_lease_ttl = max_ttl;
            if let Some(v) = req.data.get("description") {
                m.description = fields::string(v, "description")?;
            }
            let opts = string_map(req.data.get("options"))?;
            if let Some(v) = opts.get("version")
                && Some(v) != m.options.get("version")
            {
                return Err(ApiError::bad_request(
                    "changing the version of a kv mount is not supported; enable a new mount",
                ));
            }
            core.save_mounts(table).await?;
            Ok(Response::no_content())
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

/// `sys/auth/token/tune` (sudo, as every `sys/auth/*` path in Vault). The
/// token method's TTLs are the system's, from the server configuration,
/// and cannot be tuned through the API (the token store enforces the
/// configured ones: a tune it ignored would be a lie). Other methods:
/// `auth_methods.rs`.
fn tune_token_auth(core: &Core, req: &Request) -> Result<Response, ApiError> {
    match req.operation {
        Operation::Read => {}
        Operation::Write => {
            return Err(ApiError::bad_request(
                "tuning the token auth method is not supported: its TTLs are the server configuration's default_lease_ttl and max_lease_ttl",
            ));
        }
        _ => return Err(ApiError::unsupported_operation()),
    }
    let (default_ttl, max_ttl) = effective_ttls(core, &MountConfig::default());
    Ok(Response::data(json!({
        "default_lease_ttl": default_ttl,
        "max_lease_ttl": max_ttl,
        "force_no_cache": false,
        "description": "token based credentials",
        "token_type": "default-service",
    }))
    .with_top_level())
}

async fn policy(
    core: &Arc<Core>,
    req: &Request,
    name: &str,
    acl_api: bool,
) -> Result<Response, ApiError> {
    // canonical already (canonical.rs refused anything else): checked, never rewritten
    let name = crate::policies::check_name(name)?;
    match req.operation {
        Operation::Read => {
            if name == "root" {
                let body = if acl_api {
                    json!({"name": "root", "policy": ""})
                } else {
                    json!({"name": "root", "rules": ""})
                };
                return Ok(Response::data(body).with_top_level());
            }
            let p = core.policies.get(&name)?.ok_or_else(ApiError::not_found)?;
            let body = if acl_api {
                json!({ "name": p.name, "policy": p.raw })
            } else {
                json!({ "name": p.name, "rules": p.raw })
            };
            Ok(Response::data(body).with_top_level())
        }
        Operation::Write => {
            // node-vault sends `rules`; everything else `policy`. Vault also
            // accepts the policy base64-encoded.
            let raw = req
                .data
                .get("policy")
                .or_else(|| req.data.get("rules"))
                .map(|v| fields::string(v, "policy"))
                .transpose()?
                .ok_or_else(|| ApiError::bad_request("'policy' parameter not supplied or empty"))?;
            if raw.trim().is_empty() {
                return Err(ApiError::bad_request(
                    "'policy' parameter not supplied or empty",
                ));
            }
            // Vault's rule: text that is base64 is the policy encoded (no
            // policy is valid base64: it needs quotes or braces)
            let raw = match b64().decode(raw.trim()) {
                Ok(bytes) => String::from_utf8(bytes).unwrap_or(raw),
                Err(_) => raw,
            };
            core.policies.write(&name, &raw).await?;
            Ok(Response::no_content())
        }
        Operation::Delete => {
            core.policies.delete(&name).await?;
            Ok(Response::no_content())
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

async fn audit_device(
    core: &Arc<Core>,
    auth: &Authorized,
    path: &str,
) -> Result<Response, ApiError> {
    let req = auth.request();
    let name = format!("{path}/");
    match req.operation {
        Operation::Write => {
            if core.options.api_audit_dirs.is_empty() {
                return Err(ApiError::bad_request(
                    "cannot enable audit devices through the API: the server configuration does not allow it ([audit] dangerous_allow_api_file_devices); configure the device with [audit] file_path instead",
                ));
            }
            let kind = req
                .data
                .get("type")
                .map(|v| fields::string(v, "type"))
                .transpose()?
                .unwrap_or_default();
            if kind != "file" {
                return Err(ApiError::bad_request(
                    "unknown backend type: only \"file\" is available",
                ));
            }
            let mut options = string_map(req.data.get("options"))?;
            // `path`: Vault's older name for `file_path` (hvac still sends
            // it). One name from here on, so every check below and the
            // stored device see `file_path` only.
            if let Some(alias) = options.remove("path") {
                match options.get("file_path") {
                    None => {
                        options.insert("file_path".into(), alias);
                    }
                    Some(v) if *v == alias => {}
                    Some(_) => {
                        return Err(ApiError::bad_request(
                            "options path and file_path differ: path is the older name of file_path, give one of them",
                        ));
                    }
                }
            }
            if options.get("file_path").and_then(|v| v.as_str()).is_none() {
                return Err(ApiError::bad_request("file_path is required"));
            }
            // Vault's options, each accepted only with the one value this
            // device implements: an option that would be silently ignored is
            // refused instead
            let boolean = |k: &str| {
                options
                    .get(k)
                    .and_then(|v| v.as_str())
                    .and_then(fields::parse_bool)
            };
            for (k, v) in options.iter() {
                let v = v.as_str().unwrap_or_default();
                let fine = match k.as_str() {
                    "file_path" => true,
                    "format" => v == "json",
                    "mode" => v == "0600" || v == "600",
                    "hmac_accessor" => boolean(k) == Some(true),
                    "elide_list_responses" => boolean(k) == Some(false),
                    "log_raw" => {
                        if boolean(k) != Some(false) {
                            return Err(ApiError::bad_request(
                                "log_raw is not supported: secrets never reach the audit log in the clear",
                            ));
                        }
                        true
                    }
                    _ => {
                        return Err(ApiError::bad_request(format!("unknown audit option {k:?}")));
                    }
                };
                if !fine {
                    return Err(ApiError::bad_request(format!(
                        "audit option {k:?}: only the default is supported (format json, mode 0600, hmac_accessor true, elide_list_responses false)"
                    )));
                }
            }
            let description = req
                .data
                .get("description")
                .map(|v| fields::string(v, "description"))
                .transpose()?
                .unwrap_or_default();
            let local = req
                .data
                .get("local")
                .map(|v| fields::boolean(v, "local"))
                .transpose()?
                .unwrap_or(false);
            let key = palisade_crypto::mac::MacKey::generate();
            core.enable_audit(
                AuditDeviceEntry {
                    path: name,
                    kind,
                    description,
                    options,
                    local,
                    hmac_key: b64().encode(key.expose_bytes()),
                    pinned: false,
                },
                first_record(auth),
            )
            .await?;
            Ok(Response::no_content())
        }
        Operation::Delete => {
            core.disable_audit(&name).await?;
            Ok(Response::no_content())
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

/// The record a new device writes first: the request that enables it.
fn first_record(auth: &Authorized) -> &AuditEntry {
    auth.audit_record()
}

/// `sys/audit-head/<name>`: the device's last record (`seq`, `hash`), as
/// written now and as last anchored behind the barrier. `palisade audit
/// verify FILE --head SEQ:HASH` checks a file against it.
async fn audit_head(core: &Arc<Core>, path: &str) -> Result<Response, ApiError> {
    let name = format!("{path}/");
    let table = core.audit_table.lock().await;
    let Some(entry) = table.iter().find(|d| d.path == name).cloned() else {
        return Err(ApiError::bad_request(format!(
            "unknown audit backend {name}"
        )));
    };
    drop(table);
    let head = core.audit.device(&name).and_then(|d| d.head());
    let anchored = core.anchored_head(&name).await;
    Ok(Response::data(json!({
        "path": name,
        "file_path": entry.file_path(),
        "loaded": core.audit.device(&name).is_some(),
        "seq": head.as_ref().map(|h| h.seq),
        "hash": head.as_ref().map(|h| h.hash.clone()),
        "anchored_seq": anchored.as_ref().map(|h| h.seq),
        "anchored_hash": anchored.as_ref().map(|h| h.hash.clone()),
    }))
    .with_top_level())
}

async fn capabilities(
    core: &Arc<Core>,
    auth: &Authorized,
    which: &str,
) -> Result<Response, ApiError> {
    let req = auth.request();
    let paths = match req.data.get("paths").or_else(|| req.data.get("path")) {
        Some(v) => fields::string_list(v, "paths")?,
        None => return Err(ApiError::bad_request("missing paths")),
    };
    let acl = match which {
        "capabilities-self" => auth.acl().clone(),
        "capabilities" => {
            let token = req
                .data
                .get("token")
                .map(|v| fields::string(v, "token"))
                .transpose()?
                .unwrap_or_default();
            let e = core
                .tokens
                .lookup(&token)
                .await?
                .ok_or_else(|| ApiError::bad_request("invalid token"))?;
            core.token_acl(&e)
                .await?
                .ok_or_else(|| ApiError::bad_request("invalid token"))?
        }
        _ => {
            let acc = req
                .data
                .get("accessor")
                .map(|v| fields::string(v, "accessor"))
                .transpose()?
                .unwrap_or_default();
            let e = core
                .tokens
                .lookup_accessor(&acc)
                .await?
                .ok_or_else(|| ApiError::bad_request("invalid accessor"))?;
            core.token_acl(&e)
                .await?
                .ok_or_else(|| ApiError::bad_request("invalid accessor"))?
        }
    };
    let mut out = Map::new();
    let mut all = Vec::new();
    for p in &paths {
        let caps = if acl.is_root() {
            vec!["root"]
        } else {
            acl.capabilities(p.trim_start_matches('/'), false).names()
        };
        if paths.len() == 1 {
            all = caps.clone();
        }
        out.insert(p.clone(), json!(caps));
    }
    out.insert("capabilities".into(), json!(all));
    Ok(Response::data(Value::Object(out)).with_top_level())
}

/// `sys/leases/*` and Vault's older spellings (`sys/renew`, `sys/revoke`,
/// `sys/revoke-prefix`, `sys/revoke-force`). `None`: not a lease path.
async fn leases(
    core: &Arc<Core>,
    auth: &Authorized,
    rest: &str,
) -> Option<Result<Response, ApiError>> {
    let req = auth.request();
    let rest = rest.strip_prefix("leases/").map_or_else(
        || match rest {
            "renew" | "revoke" => Some(rest),
            _ if rest.starts_with("renew/")
                || rest.starts_with("revoke/")
                || rest.starts_with("revoke-prefix/")
                || rest.starts_with("revoke-force/") =>
            {
                Some(rest)
            }
            _ => None,
        },
        Some,
    )?;
    let op = req.operation;
    let (verb, tail) = match rest.split_once('/') {
        Some((v, t)) => (v, Some(t)),
        None => (rest, None),
    };
    // the lease id from the path, else from the body
    let lease_id = |tail: Option<&str>| -> Result<String, ApiError> {
        let id = match tail {
            Some(t) if !t.is_empty() => t.to_owned(),
            _ => match req.data.get("lease_id").filter(|v| !v.is_null()) {
                Some(v) => fields::string(v, "lease_id")?,
                None => return Err(ApiError::bad_request("lease_id must be specified")),
            },
        };
        let id = crate::lease::check_lease_id(&id)?.to_owned();
        // a lease named in the body was authorised on the bare path (Vault's
        // grant, which the default policy relies on); a rule that denies
        // the lease's own path still wins, so `deny` on
        // `sys/leases/revoke/<prefix>*` cannot be stepped around
        if tail.is_none_or(str::is_empty) {
            let denied = [
                format!("sys/leases/{verb}/{id}"),
                format!("sys/{verb}/{id}"),
            ]
            .iter()
            .any(|p| {
                auth.acl()
                    .capabilities(p, false)
                    .contains(palisade_policy::Capability::Deny)
            });
            if denied {
                return Err(ApiError::permission_denied());
            }
        }
        Ok(id)
    };
    Some(
        async {
            match (op, verb) {
                (Operation::Write, "lookup") if tail.is_none() => {
                    let id = lease_id(None)?;
                    let now = core.tokens.now();
                    let e = core
                        .leases
                        .get(&id)
                        .await?
                        .ok_or_else(|| ApiError::bad_request("invalid lease"))?;
                    let t = |secs: i64| palisade_core::rfc3339(secs.saturating_mul(1_000_000_000));
                    Ok(Response::data(json!({
                        "id": e.lease_id,
                        "issue_time": t(e.issue_time),
                        "expire_time": t(e.expire_time),
                        "last_renewal": if e.last_renewal == 0 { Value::Null } else { json!(t(e.last_renewal)) },
                        "renewable": e.renewable,
                        "ttl": e.ttl_remaining(now),
                    })))
                }
                (Operation::List, "lookup") => {
                    let prefix = match tail {
                        None | Some("") => String::new(),
                        Some(p) => format!("{}/", crate::lease::check_lease_id(p.trim_end_matches('/'))?),
                    };
                    let keys = core.leases.list(&prefix).await?;
                    if keys.is_empty() {
                        return Err(ApiError::not_found());
                    }
                    Ok(Response::data(json!({ "keys": keys })))
                }
                (Operation::Write, "renew") => {
                    let id = lease_id(tail)?;
                    let increment = match req.data.get("increment").filter(|v| !v.is_null()) {
                        Some(v) => fields::duration_secs(v, "increment")?,
                        None => 0,
                    };
                    let (e, warnings) = core.renew_lease(&id, increment).await?;
                    let mut r = Response::data(Value::Null).with_lease(crate::lease::LeaseInfo {
                        lease_id: e.lease_id.clone(),
                        lease_duration: e.ttl_remaining(core.tokens.now()),
                        renewable: e.renewable,
                    });
                    r.data = None;
                    r.warnings = warnings;
                    Ok(r)
                }
                (Operation::Write, "revoke") => {
                    let id = lease_id(tail)?;
                    let sync = match req.data.get("sync").filter(|v| !v.is_null()) {
                        Some(v) => fields::boolean(v, "sync")?,
                        None => true,
                    };
                    if sync {
                        core.revoke_lease(&id, false).await?;
                        Ok(Response::no_content())
                    } else {
                        // queued: the expiry manager revokes it (and retries)
                        if core.leases.get(&id).await?.is_some() {
                            core.leases.make_due(vec![id], core.tokens.now())?;
                        }
                        Ok(Response::data(Value::Null).with_status(202))
                    }
                }
                (Operation::Write, "revoke-prefix" | "revoke-force") => {
                    let prefix = tail.unwrap_or_default();
                    if prefix.is_empty() {
                        return Err(ApiError::bad_request("prefix must be specified"));
                    }
                    core.revoke_lease_prefix(prefix, verb == "revoke-force").await?;
                    Ok(Response::no_content())
                }
                (Operation::Write, "tidy") if tail.is_none() => {
                    let n = core.tidy_leases().await?;
                    Ok(Response::data(Value::Null)
                        .with_status(202)
                        .warn(format!("Tidy operation successfully started: {n} orphaned leases made due")))
                }
                _ => Err(ApiError::unsupported_operation()),
            }
        }
        .await,
    )
}
