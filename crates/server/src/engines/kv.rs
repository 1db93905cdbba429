//! The KV secrets engine, versions 1 and 2, with Vault's paths and shapes.
//!
//! KV v2 storage inside the mount's view:
//! - `config`: mount-wide max_versions / cas_required / delete_version_after;
//! - `meta/<key>`: the key's metadata (versions map, current and oldest version);
//! - `ver/<sha256(key)>/<n>`: the data of version n (hashing the key keeps a key
//!   such as `a/1` from colliding with version 1 of key `a`).
//!
//! A write puts metadata, the new version and the pruning of old versions in
//! one barrier transaction, under a per-key lock: two writers never get the
//! same version number and a crash never leaves half a version.

use std::collections::BTreeMap;
use std::sync::Arc;

use palisade_barrier::{BarrierOp, View};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::core::Authorized;
use crate::logical::{ApiError, Operation, Request, Response, fields};

const DEFAULT_MAX_VERSIONS: u64 = 10;

/// Striped per-key locks so versions are assigned one writer at a time.
pub struct KeyLocks {
    stripes: Vec<tokio::sync::Mutex<()>>,
}

impl Default for KeyLocks {
    fn default() -> Self {
        Self {
            stripes: (0..256).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }
}

impl KeyLocks {
    pub async fn lock(&self, view: &View, key: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let h = palisade_crypto::mac::sha256(format!("{}{}", view.prefix(), key).as_bytes());
        self.stripes[h[0] as usize].lock().await
    }
}

fn now() -> i64 {
    palisade_core::now_nanos()
}

fn time_str(nanos: i64) -> String {
    if nanos == 0 {
        String::new()
    } else {
        palisade_core::rfc3339(nanos)
    }
}

/// Paths inside a mount must be clean relative keys.
fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::unsupported_path());
    }
    if key
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(ApiError::bad_request("invalid key path"));
    }
    Ok(())
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(ApiError::internal)
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(v).map_err(ApiError::internal)
}

fn not_found_empty() -> ApiError {
    ApiError::not_found()
}

// ---------------------------------------------------------------- KV v1

pub async fn handle_v1(auth: &Authorized, rel: &str, view: &View) -> Result<Response, ApiError> {
    let req = auth.request();
    match req.operation {
        Operation::List => {
            let prefix = rel.trim_end_matches('/');
            let prefix = if prefix.is_empty() {
                String::new()
            } else {
                check_key(prefix).map(|_| format!("{prefix}/"))?
            };
            let keys = view.list(&prefix).await?;
            if keys.is_empty() {
                return Err(not_found_empty());
            }
            Ok(Response::data(json!({ "keys": keys })))
        }
        Operation::Read => {
            check_key(rel)?;
            match view.get(rel).await? {
                None => Err(not_found_empty()),
                Some(b) => Ok(Response::data(decode::<Value>(&b)?)),
            }
        }
        Operation::Write => {
            check_key(rel)?;
            if req.data.is_empty() {
                return Err(ApiError::bad_request("no data provided"));
            }
            view.put(rel, &encode(&req.data)?).await?;
            Ok(Response::no_content())
        }
        Operation::Delete => {
            check_key(rel)?;
            view.delete(rel).await?;
            Ok(Response::no_content())
        }
        Operation::Patch => Err(ApiError::unsupported_operation()),
    }
}

pub async fn exists_v1(rel: &str, view: &View) -> Result<bool, ApiError> {
    if check_key(rel).is_err() {
        return Ok(false);
    }
    Ok(view.get(rel).await?.is_some())
}

// ---------------------------------------------------------------- KV v2

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct KvConfig {
    max_versions: u64,
    cas_required: bool,
    delete_version_after: i64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct VersionMeta {
    created_time: i64,
    deletion_time: i64,
    destroyed: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct KeyMeta {
    created_time: i64,
    updated_time: i64,
    current_version: u64,
    oldest_version: u64,
    max_versions: u64,
    cas_required: bool,
    delete_version_after: i64,
    custom_metadata: Map<String, Value>,
    versions: BTreeMap<u64, VersionMeta>,
}

impl VersionMeta {
    fn deleted(&self, now: i64) -> bool {
        self.deletion_time != 0 && self.deletion_time <= now
    }
}

fn version_json(v: u64, m: &VersionMeta, custom: &Map<String, Value>) -> Value {
    json!({
        "created_time": time_str(m.created_time),
        "custom_metadata": if custom.is_empty() { Value::Null } else { Value::Object(custom.clone()) },
        "deletion_time": time_str(m.deletion_time),
        "destroyed": m.destroyed,
        "version": v,
    })
}

fn dva_string(secs: i64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{s}s"));
    out
}

fn meta_json(m: &KeyMeta) -> Value {
    let versions: Map<String, Value> = m
        .versions
        .iter()
        .map(|(v, vm)| {
            (
                v.to_string(),
                json!({
                    "created_time": time_str(vm.created_time),
                    "deletion_time": time_str(vm.deletion_time),
                    "destroyed": vm.destroyed,
                }),
            )
        })
        .collect();
    json!({
        "cas_required": m.cas_required,
        "created_time": time_str(m.created_time),
        "current_version": m.current_version,
        "custom_metadata": if m.custom_metadata.is_empty() { Value::Null } else { Value::Object(m.custom_metadata.clone()) },
        "delete_version_after": dva_string(m.delete_version_after),
        "max_versions": m.max_versions,
        "oldest_version": m.oldest_version,
        "updated_time": time_str(m.updated_time),
        "versions": versions,
    })
}

fn ver_path(key: &str, v: u64) -> String {
    format!(
        "ver/{}/{v}",
        palisade_crypto::mac::sha256_hex(key.as_bytes())
    )
}

async fn load_config(view: &View) -> Result<KvConfig, ApiError> {
    Ok(match view.get("config").await? {
        Some(b) => decode(&b)?,
        None => KvConfig::default(),
    })
}

async fn load_meta(view: &View, key: &str) -> Result<Option<KeyMeta>, ApiError> {
    match view.get(&format!("meta/{key}")).await? {
        Some(b) => Ok(Some(decode(&b)?)),
        None => Ok(None),
    }
}

/// Whether a write to `rel` creates something (for the create/update ACL check).
pub async fn exists_v2(rel: &str, view: &View) -> Result<bool, ApiError> {
    for prefix in ["data/", "metadata/"] {
        if let Some(key) = rel.strip_prefix(prefix) {
            if check_key(key).is_err() {
                return Ok(false);
            }
            return Ok(load_meta(view, key).await?.is_some());
        }
    }
    Ok(true)
}

fn custom_metadata(v: &Value) -> Result<Map<String, Value>, ApiError> {
    match v {
        Value::Null => Ok(Map::new()),
        Value::Object(m) => {
            if m.len() > 64 {
                return Err(ApiError::bad_request(
                    "custom_metadata can have at most 64 keys",
                ));
            }
            let mut out = Map::new();
            for (k, v) in m {
                let s = v.as_str().ok_or_else(|| {
                    ApiError::bad_request("custom_metadata values must be strings")
                })?;
                if k.len() > 128 || s.len() > 512 {
                    return Err(ApiError::bad_request(
                        "custom_metadata keys are limited to 128 bytes and values to 512 bytes",
                    ));
                }
                out.insert(k.clone(), Value::String(s.to_string()));
            }
            Ok(out)
        }
        _ => Err(ApiError::bad_request(
            "custom_metadata must be an object of strings",
        )),
    }
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

pub async fn handle_v2(
    auth: &Authorized,
    rel: &str,
    view: &View,
    locks: &Arc<KeyLocks>,
) -> Result<Response, ApiError> {
    let req = auth.request();
    if rel == "config" {
        return config(req, view).await;
    }
    if let Some(key) = rel.strip_prefix("data/") {
        return data(req, key, view, locks).await;
    }
    if rel == "metadata" || rel.starts_with("metadata/") {
        let key = rel
            .strip_prefix("metadata")
            .unwrap_or("")
            .trim_start_matches('/');
        return metadata(req, key, view, locks).await;
    }
    for (prefix, action) in [
        ("delete/", Action::Delete),
        ("undelete/", Action::Undelete),
        ("destroy/", Action::Destroy),
    ] {
        if let Some(key) = rel.strip_prefix(prefix) {
            if req.operation != Operation::Write {
                return Err(ApiError::unsupported_operation());
            }
            check_key(key)?;
            return versions_action(req, key, view, locks, action).await;
        }
    }
    if let Some(key) = rel.strip_prefix("subkeys/") {
        return subkeys(req, key, view).await;
    }
    Err(ApiError::unsupported_path())
}

async fn config(req: &Request, view: &View) -> Result<Response, ApiError> {
    match req.operation {
        Operation::Read => {
            let c = load_config(view).await?;
            Ok(Response::data(json!({
                "max_versions": c.max_versions,
                "cas_required": c.cas_required,
                "delete_version_after": dva_string(c.delete_version_after),
            })))
        }
        Operation::Write => {
            let mut c = load_config(view).await?;
            if let Some(v) = req.data.get("max_versions") {
                c.max_versions = u64::try_from(fields::int(v, "max_versions")?)
                    .map_err(|_| ApiError::bad_request("max_versions must be non-negative"))?;
            }
            if let Some(v) = req.data.get("cas_required") {
                c.cas_required = fields::boolean(v, "cas_required")?;
            }
            if let Some(v) = req.data.get("delete_version_after") {
                c.delete_version_after = delete_version_after(v)?;
            }
            view.put("config", &encode(&c)?).await?;
            Ok(Response::no_content())
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

/// `now` (ns) + `dva` (s), checked: an overflow would wrap into the past and
/// delete every new version on creation.
fn deletion_time(now: i64, dva: i64) -> Result<i64, ApiError> {
    dva.checked_mul(1_000_000_000)
        .and_then(|ns| now.checked_add(ns))
        .ok_or_else(|| ApiError::bad_request("field \"delete_version_after\": duration too large"))
}

/// A `delete_version_after` that a version written now could use.
fn delete_version_after(v: &Value) -> Result<i64, ApiError> {
    let dva = fields::duration_secs(v, "delete_version_after")?;
    deletion_time(now(), dva)?;
    Ok(dva)
}

fn requested_version(req: &Request) -> Result<u64, ApiError> {
    match req.field("version") {
        None => Ok(0),
        Some(v) => u64::try_from(fields::int(&v, "version")?)
            .map_err(|_| ApiError::bad_request("invalid version")),
    }
}

async fn data(
    req: &Request,
    key: &str,
    view: &View,
    locks: &Arc<KeyLocks>,
) -> Result<Response, ApiError> {
    if req.operation == Operation::List {
        return Err(ApiError::unsupported_operation());
    }
    check_key(key)?;
    match req.operation {
        Operation::Read => read_data(req, key, view).await,
        Operation::Write => {
            let new = match req.data.get("data") {
                Some(Value::Object(m)) => Value::Object(m.clone()),
                Some(_) => return Err(ApiError::bad_request("data must be an object")),
                None => return Err(ApiError::bad_request("no data provided")),
            };
            let cas = cas_option(req)?;
            let _g = locks.lock(view, key).await;
            write_version(key, view, new, cas).await
        }
        Operation::Patch => {
            let patch = match req.data.get("data") {
                Some(p @ Value::Object(_)) => p.clone(),
                _ => return Err(ApiError::bad_request("no data provided")),
            };
            let _g = locks.lock(view, key).await;
            let meta = load_meta(view, key).await?.ok_or_else(not_found_empty)?;
            let cur = meta.current_version;
            let vm = meta.versions.get(&cur).ok_or_else(not_found_empty)?;
            if vm.destroyed || vm.deleted(now()) {
                return Err(not_found_empty());
            }
            let mut doc: Value = match view.get(&ver_path(key, cur)).await? {
                Some(b) => decode(&b)?,
                None => return Err(not_found_empty()),
            };
            // read once there is something to patch, as OpenBao (a patch of
            // nothing is a 404 whatever its cas)
            let cas = cas_option(req)?;
            merge_patch(&mut doc, &patch);
            // cas_required applies to PATCH as to writes (Vault); without it a
            // missing cas means "the version just read"
            let cfg = load_config(view).await?;
            if (cfg.cas_required || meta.cas_required) && cas.is_none() {
                return Err(ApiError::bad_request(
                    "check-and-set parameter required for this call",
                ));
            }
            let cas = match cas {
                Some(c) => c,
                None => i64::try_from(cur).map_err(ApiError::internal)?,
            };
            write_version(key, view, doc, Some(cas)).await
        }
        Operation::Delete => {
            let _g = locks.lock(view, key).await;
            let Some(mut meta) = load_meta(view, key).await? else {
                return Ok(Response::no_content());
            };
            let cur = meta.current_version;
            let now = now();
            if let Some(vm) = meta.versions.get_mut(&cur)
                && !vm.deleted(now)
                && !vm.destroyed
            {
                vm.deletion_time = now;
                meta.updated_time = now;
                view.put(&format!("meta/{key}"), &encode(&meta)?).await?;
            }
            Ok(Response::no_content())
        }
        Operation::List => Err(ApiError::unsupported_operation()),
    }
}

/// `options.cas`, read as Vault reads it: an integer, as a JSON number
/// without a fraction or as a decimal string; `null` and `""` are 0 (Go's
/// zero value: OpenBao writes only if the key has no version), so a `cas`
/// that is present is never ignored. Anything else (`1.5`, `"x"`, `true`,
/// a list) → 400 `error parsing check-and-set parameter`. A negative cas is
/// kept: it never matches a version, so the write is refused as a mismatch.
fn cas_option(req: &Request) -> Result<Option<i64>, ApiError> {
    let unparsable = || ApiError::bad_request("error parsing check-and-set parameter");
    match req.data.get("options") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => match o.get("cas") {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(0)),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(unparsable),
            Some(Value::String(s)) if s.is_empty() => Ok(Some(0)),
            Some(Value::String(s)) => s.parse::<i64>().map(Some).map_err(|_| unparsable()),
            Some(_) => Err(unparsable()),
        },
        Some(_) => Err(ApiError::bad_request("options must be an object")),
    }
}

async fn write_version(
    key: &str,
    view: &View,
    doc: Value,
    cas: Option<i64>,
) -> Result<Response, ApiError> {
    write_version_overlapping(key, view, doc, cas, None).await
}

/// A new version written by a scheduled rotation (`kv_rotation.rs`; the
/// caller holds the key's lock): only if the current version is still
/// `expected`, and the version it replaces stays readable for `overlap`
/// seconds more (never longer than it would have anyway). Returns the new
/// version.
pub(crate) async fn write_rotated(
    key: &str,
    view: &View,
    doc: Value,
    expected: u64,
    overlap: i64,
) -> Result<u64, ApiError> {
    check_key(key)?;
    let cas = i64::try_from(expected).map_err(ApiError::internal)?;
    let r = write_version_overlapping(key, view, doc, Some(cas), Some(overlap)).await?;
    r.data
        .as_ref()
        .and_then(|d| d["version"].as_u64())
        .ok_or_else(|| ApiError::internal("rotation: no version written"))
}

/// The current version of a key (0: none), and how many versions it keeps.
pub(crate) async fn current_version(key: &str, view: &View) -> Result<(u64, u64), ApiError> {
    check_key(key)?;
    let cfg = load_config(view).await?;
    let meta = load_meta(view, key).await?;
    let keeps = match meta.as_ref().map(|m| m.max_versions).unwrap_or(0) {
        0 if cfg.max_versions > 0 => cfg.max_versions,
        0 => DEFAULT_MAX_VERSIONS,
        n => n,
    };
    Ok((meta.map(|m| m.current_version).unwrap_or(0), keeps))
}

async fn write_version_overlapping(
    key: &str,
    view: &View,
    doc: Value,
    cas: Option<i64>,
    overlap: Option<i64>,
) -> Result<Response, ApiError> {
    let cfg = load_config(view).await?;
    let now = now();
    let mut meta = load_meta(view, key).await?.unwrap_or_else(|| KeyMeta {
        created_time: now,
        ..Default::default()
    });
    if (cfg.cas_required || meta.cas_required) && cas.is_none() {
        return Err(ApiError::bad_request(
            "check-and-set parameter required for this call",
        ));
    }
    if let Some(c) = cas
        && u64::try_from(c).ok() != Some(meta.current_version)
    {
        return Err(ApiError::bad_request(
            "check-and-set parameter did not match the current version",
        ));
    }
    let version = meta.current_version + 1;
    if let Some(secs) = overlap {
        // the version replaced stays for the overlap; older ones go now
        // (soft-deleted, as KV v2's delete: undelete brings them back)
        let until = deletion_time(now, secs)?;
        let replaced = meta.current_version;
        for (v, vm) in meta.versions.iter_mut() {
            let at = if *v == replaced { until } else { now };
            if vm.deletion_time == 0 || vm.deletion_time > at {
                vm.deletion_time = at;
            }
        }
    }
    let dva = if meta.delete_version_after > 0 {
        meta.delete_version_after
    } else {
        cfg.delete_version_after
    };
    let vm = VersionMeta {
        created_time: now,
        deletion_time: if dva > 0 { deletion_time(now, dva)? } else { 0 },
        destroyed: false,
    };
    meta.versions.insert(version, vm.clone());
    meta.current_version = version;
    meta.updated_time = now;
    if meta.oldest_version == 0 {
        meta.oldest_version = version;
    }
    let max = if meta.max_versions > 0 {
        meta.max_versions
    } else if cfg.max_versions > 0 {
        cfg.max_versions
    } else {
        DEFAULT_MAX_VERSIONS
    };
    let mut ops = Vec::new();
    while meta.versions.len() as u64 > max {
        let Some((&oldest, _)) = meta.versions.iter().next() else {
            break;
        };
        meta.versions.remove(&oldest);
        ops.push(BarrierOp::Delete {
            path: ver_path(key, oldest),
        });
    }
    if let Some((&o, _)) = meta.versions.iter().next() {
        meta.oldest_version = o;
    }
    ops.push(BarrierOp::Put {
        path: ver_path(key, version),
        value: encode(&doc)?,
    });
    ops.push(BarrierOp::Put {
        path: format!("meta/{key}"),
        value: encode(&meta)?,
    });
    view.transaction(ops).await?;
    Ok(Response::data(version_json(
        version,
        &vm,
        &meta.custom_metadata,
    )))
}

async fn read_data(req: &Request, key: &str, view: &View) -> Result<Response, ApiError> {
    let meta = load_meta(view, key).await?.ok_or_else(not_found_empty)?;
    let mut v = requested_version(req)?;
    if v == 0 {
        v = meta.current_version;
    }
    let vm = meta.versions.get(&v).ok_or_else(not_found_empty)?;
    let md = version_json(v, vm, &meta.custom_metadata);
    if vm.destroyed || vm.deleted(now()) {
        // Vault answers 404 *with* the metadata so clients can tell deleted from missing.
        let mut e = ApiError::not_found();
        e.body = Some(json!({ "data": null, "metadata": md }));
        return Err(e);
    }
    let doc: Value = match view.get(&ver_path(key, v)).await? {
        Some(b) => decode(&b)?,
        None => {
            return Err(ApiError::internal(format!(
                "kv version data missing for a live version of a key in {}",
                view.prefix()
            )));
        }
    };
    Ok(Response::data(json!({ "data": doc, "metadata": md })))
}

#[derive(Clone, Copy)]
enum Action {
    Delete,
    Undelete,
    Destroy,
}

async fn versions_action(
    req: &Request,
    key: &str,
    view: &View,
    locks: &Arc<KeyLocks>,
    action: Action,
) -> Result<Response, ApiError> {
    let versions: Vec<u64> = match req.data.get("versions") {
        Some(v) => fields::string_list(v, "versions")?
            .iter()
            .map(|s| {
                s.parse::<u64>()
                    .map_err(|_| ApiError::bad_request("versions must be positive integers"))
            })
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    if versions.is_empty() {
        return Err(ApiError::bad_request("no version number provided"));
    }
    let _g = locks.lock(view, key).await;
    let Some(mut meta) = load_meta(view, key).await? else {
        return Ok(Response::no_content());
    };
    let now = now();
    let mut ops = Vec::new();
    for v in versions {
        let Some(vm) = meta.versions.get_mut(&v) else {
            continue;
        };
        match action {
            Action::Delete => {
                if !vm.destroyed && !vm.deleted(now) {
                    vm.deletion_time = now;
                }
            }
            Action::Undelete => {
                if !vm.destroyed {
                    vm.deletion_time = 0;
                }
            }
            Action::Destroy => {
                if !vm.destroyed {
                    vm.destroyed = true;
                    ops.push(BarrierOp::Delete {
                        path: ver_path(key, v),
                    });
                }
            }
        }
    }
    meta.updated_time = now;
    ops.push(BarrierOp::Put {
        path: format!("meta/{key}"),
        value: encode(&meta)?,
    });
    view.transaction(ops).await?;
    Ok(Response::no_content())
}

async fn metadata(
    req: &Request,
    key: &str,
    view: &View,
    locks: &Arc<KeyLocks>,
) -> Result<Response, ApiError> {
    if req.operation == Operation::List {
        let prefix = key.trim_end_matches('/');
        let full = if prefix.is_empty() {
            "meta/".to_string()
        } else {
            check_key(prefix)?;
            format!("meta/{prefix}/")
        };
        let keys = view.list(&full).await?;
        if keys.is_empty() {
            return Err(not_found_empty());
        }
        return Ok(Response::data(json!({ "keys": keys })));
    }
    check_key(key)?;
    match req.operation {
        Operation::Read => {
            let meta = load_meta(view, key).await?.ok_or_else(not_found_empty)?;
            Ok(Response::data(meta_json(&meta)))
        }
        Operation::Write | Operation::Patch => {
            let _g = locks.lock(view, key).await;
            let now = now();
            let mut meta = load_meta(view, key).await?.unwrap_or_else(|| KeyMeta {
                created_time: now,
                ..Default::default()
            });
            if let Some(v) = req.data.get("max_versions") {
                meta.max_versions = u64::try_from(fields::int(v, "max_versions")?)
                    .map_err(|_| ApiError::bad_request("max_versions must be non-negative"))?;
            }
            if let Some(v) = req.data.get("cas_required") {
                meta.cas_required = fields::boolean(v, "cas_required")?;
            }
            if let Some(v) = req.data.get("delete_version_after") {
                meta.delete_version_after = delete_version_after(v)?;
            }
            if let Some(v) = req.data.get("custom_metadata") {
                if req.operation == Operation::Patch {
                    let mut cur = Value::Object(meta.custom_metadata.clone());
                    merge_patch(&mut cur, v);
                    meta.custom_metadata = custom_metadata(&cur)?;
                } else {
                    meta.custom_metadata = custom_metadata(v)?;
                }
            }
            meta.updated_time = now;
            view.put(&format!("meta/{key}"), &encode(&meta)?).await?;
            Ok(Response::no_content())
        }
        Operation::Delete => {
            let _g = locks.lock(view, key).await;
            let Some(meta) = load_meta(view, key).await? else {
                return Ok(Response::no_content());
            };
            let mut ops: Vec<BarrierOp> = meta
                .versions
                .keys()
                .map(|v| BarrierOp::Delete {
                    path: ver_path(key, *v),
                })
                .collect();
            ops.push(BarrierOp::Delete {
                path: format!("meta/{key}"),
            });
            // a rotation policy goes with the secret: it must not bring
            // the secret back (nor ask its producer for a new credential)
            ops.push(BarrierOp::Delete {
                path: format!("rotation/{key}"),
            });
            view.transaction(ops).await?;
            Ok(Response::no_content())
        }
        Operation::List => Err(ApiError::unsupported_operation()),
    }
}

/// `subkeys/<key>`: the structure of a version with every leaf replaced by null.
async fn subkeys(req: &Request, key: &str, view: &View) -> Result<Response, ApiError> {
    if req.operation != Operation::Read {
        return Err(ApiError::unsupported_operation());
    }
    check_key(key)?;
    let depth = match req.field("depth") {
        Some(v) => fields::int(&v, "depth")?.max(0) as usize,
        None => 0,
    };
    let resp = read_data(req, key, view).await?;
    let data = resp.data.unwrap_or(Value::Null);
    fn strip(v: &Value, depth: usize, level: usize) -> Value {
        match v {
            Value::Object(m) if depth == 0 || level < depth => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), strip(v, depth, level + 1)))
                    .collect(),
            ),
            _ => Value::Null,
        }
    }
    let sub = strip(&data["data"], depth, 0);
    Ok(Response::data(
        json!({ "subkeys": sub, "metadata": data["metadata"] }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_rfc7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn dva_format() {
        assert_eq!(dva_string(0), "0s");
        assert_eq!(dva_string(3661), "1h1m1s");
        assert_eq!(dva_string(90), "1m30s");
    }
}
