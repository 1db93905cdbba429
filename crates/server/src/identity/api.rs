//! `identity/*` over HTTP (Vault's paths and shapes): `entity`,
//! `entity/id/:id`, `entity/name/:name`, `entity/batch-delete`,
//! `entity/merge`, `entity-alias`, `entity-alias/id/:id`, `group`,
//! `group/id/:id`, `group/name/:name`, `group-alias`, `group-alias/id/:id`,
//! `lookup/entity`, `lookup/group`. Identity tokens (`identity/oidc/*`) are
//! in [`super::oidc`].
//!
//! A name or ID is the one path segment after `id/` or `name/`; a trailing
//! `/` is LIST's form only (any other operation on `x/` is 404, so the ACL
//! decided on the path acted on).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{Alias, Changes, Entity, Group, State, generated_name, new_id};
use crate::core::{Authorized, Core};
use crate::logical::{ApiError, Operation, Request, Response, fields};
use crate::mounts::MountTable;

const MAX_NAME: usize = 256;

fn time(secs: i64) -> String {
    palisade_core::rfc3339(secs.saturating_mul(1_000_000_000))
}

fn list_or_null(v: &[String]) -> Value {
    if v.is_empty() { Value::Null } else { json!(v) }
}

/// A name given in a body or a path: 1 to 256 bytes, no `/`, no control
/// characters, no surrounding space.
fn name_ok(name: &str, what: &str) -> Result<(), ApiError> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.len() > MAX_NAME
        || name.contains('/')
        || name.chars().any(char::is_control)
        || name.trim() != name
    {
        return Err(ApiError::bad_request(format!(
            "invalid {what} name: 1 to {MAX_NAME} bytes, without '/', control characters or surrounding spaces"
        )));
    }
    Ok(())
}

fn opt_string(req: &Request, name: &str) -> Result<Option<String>, ApiError> {
    match req.data.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => Ok(Some(fields::string(v, name)?)),
    }
}

fn opt_list(req: &Request, name: &str) -> Result<Option<Vec<String>>, ApiError> {
    match req.data.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let mut l = fields::string_list(v, name)?;
            l.iter_mut().for_each(|s| *s = s.trim().to_string());
            l.retain(|s| !s.is_empty());
            let mut seen = BTreeSet::new();
            l.retain(|s| seen.insert(s.clone()));
            Ok(Some(l))
        }
    }
}

/// `metadata`: an object of strings (or Vault's `["k=v", ...]` form).
fn opt_kv(req: &Request, name: &str) -> Result<Option<BTreeMap<String, String>>, ApiError> {
    let bad = || ApiError::bad_request(format!("field {name:?} must be a map of strings"));
    match req.data.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(bad()),
            })
            .collect::<Result<_, _>>()
            .map(Some),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .and_then(|s| s.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(bad)
            })
            .collect::<Result<_, _>>()
            .map(Some),
        Some(_) => Err(bad()),
    }
}

/// Policies an entity or group grants: canonical names; `root` and the
/// wrapping policy cannot be granted this way.
fn opt_policies(req: &Request) -> Result<Option<Vec<String>>, ApiError> {
    let Some(v) = req.data.get("policies").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let raw = fields::string_list(v, "policies")?;
    let list = crate::token_roles::sanitize_policies(&raw, false);
    if list.iter().any(|p| p == "root") {
        return Err(ApiError::bad_request(
            "policies cannot hold \"root\": an identity cannot grant root",
        ));
    }
    crate::wrapping::refuse_reserved_policy(&list)?;
    Ok(Some(list))
}

fn opt_bool(req: &Request, name: &str) -> Result<Option<bool>, ApiError> {
    match req.data.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => Ok(Some(fields::boolean(v, name)?)),
    }
}

fn alias_json(a: &Alias, table: &MountTable) -> Value {
    let token = crate::auth_methods::token_mount();
    let m = table
        .auth
        .iter()
        .find(|m| m.accessor == a.mount_accessor)
        .or((a.mount_accessor == token.accessor).then_some(&token));
    json!({
        "id": a.id,
        "canonical_id": a.canonical_id,
        "mount_accessor": a.mount_accessor,
        "mount_path": m.map(|m| format!("auth/{}/", m.path.trim_end_matches('/'))).unwrap_or_default(),
        "mount_type": m.map(|m| m.kind.clone()).unwrap_or_default(),
        "name": a.name,
        "metadata": if a.metadata.is_empty() { Value::Null } else { json!(a.metadata) },
        "custom_metadata": a.custom_metadata,
        "creation_time": time(a.creation_time),
        "last_update_time": time(a.last_update_time),
        "local": false,
        "merged_from_canonical_ids": Value::Null,
        "namespace_id": "root",
    })
}

fn entity_json(s: &State, e: &Entity, table: &MountTable) -> Value {
    let (direct, inherited) = s.groups_of(&e.id);
    let all: Vec<&String> = direct.iter().chain(inherited.iter()).collect();
    json!({
        "id": e.id,
        "name": e.name,
        "policies": e.policies,
        "metadata": if e.metadata.is_empty() { Value::Null } else { json!(e.metadata) },
        "disabled": e.disabled,
        "aliases": e.aliases.iter().map(|a| alias_json(a, table)).collect::<Vec<_>>(),
        "group_ids": all,
        "direct_group_ids": direct,
        "inherited_group_ids": inherited,
        "merged_entity_ids": list_or_null(&e.merged_entity_ids),
        "creation_time": time(e.creation_time),
        "last_update_time": time(e.last_update_time),
        "namespace_id": "root",
        "mfa_secrets": {},
    })
}

fn group_json(s: &State, g: &Group, table: &MountTable) -> Value {
    json!({
        "id": g.id,
        "name": g.name,
        "type": g.kind,
        "policies": list_or_null(&g.policies),
        "metadata": if g.metadata.is_empty() { Value::Null } else { json!(g.metadata) },
        "member_entity_ids": list_or_null(&g.member_entity_ids),
        "member_group_ids": list_or_null(&g.member_group_ids),
        "parent_group_ids": list_or_null(&s.parents_of(&g.id)),
        "alias": g.alias.as_ref().map(|a| alias_json(a, table)).unwrap_or_else(|| json!({})),
        "creation_time": time(g.creation_time),
        "last_update_time": time(g.last_update_time),
        "modify_index": 0,
        "namespace_id": "root",
    })
}

/// A LIST answer: 404 when empty (Vault).
fn keys(keys: Vec<String>, info: Option<Map<String, Value>>) -> Result<Response, ApiError> {
    if keys.is_empty() {
        return Err(ApiError::not_found());
    }
    let mut d = json!({ "keys": keys });
    if let Some(i) = info {
        d["key_info"] = Value::Object(i);
    }
    Ok(Response::data(d))
}

/// `identity/<rest>` (not `oidc/`), for a token holder.
pub async fn handle(core: &Arc<Core>, auth: &Authorized, rest: &str) -> Result<Response, ApiError> {
    let req = auth.request();
    let op = req.operation;
    let rest = match op {
        Operation::List => rest.strip_suffix('/').unwrap_or(rest),
        _ if rest.ends_with('/') => return Err(ApiError::unsupported_path()),
        _ => rest,
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let table = core.mount_table()?;
    match (parts.as_slice(), op) {
        (["entity"], Operation::Write) => write_entity(core, req, By::Body).await,
        (["entity", "id"], Operation::List) => list_entities(core, &table, false).await,
        (["entity", "name"], Operation::List) => list_entities(core, &table, true).await,
        (["entity", "id", id], _) => entity_at(core, req, &table, By::Id(id)).await,
        (["entity", "name", name], _) => {
            name_ok(name, "entity")?;
            entity_at(core, req, &table, By::Name(name)).await
        }
        (["entity", "batch-delete"], Operation::Write) => batch_delete(core, req).await,
        (["entity", "merge"], Operation::Write) => merge(core, req).await,
        (["entity-alias"], Operation::Write) => write_alias(core, req, &table, None).await,
        (["entity-alias", "id"], Operation::List) => list_aliases(core, &table).await,
        (["entity-alias", "id", id], _) => alias_at(core, req, &table, id).await,
        (["group"], Operation::Write) => write_group(core, req, By::Body).await,
        (["group", "id"], Operation::List) => list_groups(core, false).await,
        (["group", "name"], Operation::List) => list_groups(core, true).await,
        (["group", "id", id], _) => group_at(core, req, &table, By::Id(id)).await,
        (["group", "name", name], _) => {
            name_ok(name, "group")?;
            group_at(core, req, &table, By::Name(name)).await
        }
        (["group-alias"], Operation::Write) => write_group_alias(core, req, &table, None).await,
        (["group-alias", "id"], Operation::List) => list_group_aliases(core, &table).await,
        (["group-alias", "id", id], _) => group_alias_at(core, req, &table, id).await,
        (["lookup", "entity"], Operation::Write) => lookup_entity(core, req, &table).await,
        (["lookup", "group"], Operation::Write) => lookup_group(core, req, &table).await,
        (
            [
                "entity" | "entity-alias" | "group" | "group-alias" | "lookup",
                ..,
            ],
            _,
        ) if !matches!(parts.len(), 0) && known_shape(&parts) => {
            Err(ApiError::unsupported_operation())
        }
        _ => Err(ApiError::unsupported_path()),
    }
}

/// Paths that exist, with another operation than the one asked.
fn known_shape(parts: &[&str]) -> bool {
    matches!(
        parts,
        ["entity" | "entity-alias" | "group" | "group-alias"]
            | ["entity" | "group", "id" | "name"]
            | ["entity-alias" | "group-alias", "id"]
            | ["entity", "batch-delete" | "merge"]
            | ["lookup", "entity" | "group"]
    )
}

/// Which entity or group a request names.
#[derive(Clone, Copy)]
enum By<'a> {
    /// `identity/entity` (`id` or `name` in the body).
    Body,
    Id(&'a str),
    Name(&'a str),
}

// ---- entities ---------------------------------------------------------------------------

async fn entity_at(
    core: &Core,
    req: &Request,
    table: &MountTable,
    by: By<'_>,
) -> Result<Response, ApiError> {
    match req.operation {
        Operation::Read => {
            let s = core.identity.state(core).await?;
            let e = match by {
                By::Id(id) => s.entities.get(id),
                By::Name(n) => s.entity_by_name(n),
                By::Body => None,
            };
            let e = e.ok_or_else(ApiError::not_found)?;
            Ok(Response::data(entity_json(&s, e, table)))
        }
        Operation::Write => write_entity(core, req, by).await,
        Operation::Delete => {
            let s = core.identity.state(core).await?;
            let id = match by {
                By::Id(id) => s.entities.get(id).map(|e| e.id.clone()),
                By::Name(n) => s.entity_by_name(n).map(|e| e.id.clone()),
                By::Body => None,
            };
            if let Some(id) = id {
                delete_entities(core, &[id]).await?;
            }
            Ok(Response::no_content())
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

async fn write_entity(core: &Core, req: &Request, by: By<'_>) -> Result<Response, ApiError> {
    let body_name = opt_string(req, "name")?;
    if let Some(n) = &body_name {
        name_ok(n, "entity")?;
    }
    let body_id = opt_string(req, "id")?.filter(|s| !s.is_empty());
    let policies = opt_policies(req)?;
    let metadata = opt_kv(req, "metadata")?;
    let disabled = opt_bool(req, "disabled")?;
    let now = core.tokens.now();
    core.identity
        .update(core, |s, ch| {
            // the entity acted on, and the name it ends with
            let (existing, name) = match by {
                By::Id(id) => {
                    let e = s
                        .entities
                        .get(id)
                        .ok_or_else(|| ApiError::bad_request("entity not found from id"))?;
                    (Some(e.id.clone()), body_name.clone())
                }
                By::Name(n) => (
                    s.entity_by_name(n).map(|e| e.id.clone()),
                    Some(n.to_string()),
                ),
                By::Body => match &body_id {
                    Some(id) => {
                        let e = s
                            .entities
                            .get(id)
                            .ok_or_else(|| ApiError::bad_request("entity not found from id"))?;
                        (Some(e.id.clone()), body_name.clone())
                    }
                    None => (
                        body_name
                            .as_deref()
                            .and_then(|n| s.entity_by_name(n))
                            .map(|e| e.id.clone()),
                        body_name.clone(),
                    ),
                },
            };
            if let Some(n) = &name
                && let Some(other) = s.entity_names.get(&n.to_lowercase())
                && existing.as_deref() != Some(other.as_str())
            {
                return Err(ApiError::bad_request("entity name is already in use"));
            }
            let create = existing.is_none();
            let id = existing.unwrap_or_else(new_id);
            let e = s.entities.entry(id.clone()).or_insert_with(|| Entity {
                id: id.clone(),
                creation_time: now,
                ..Entity::default()
            });
            match name {
                Some(n) => e.name = n,
                None if e.name.is_empty() => e.name = generated_name("entity", &id),
                None => {}
            }
            if let Some(p) = &policies {
                e.policies = p.clone();
            }
            if let Some(m) = &metadata {
                e.metadata = m.clone();
            }
            if let Some(d) = disabled {
                e.disabled = d;
            }
            e.last_update_time = now;
            let out = json!({ "id": e.id, "name": e.name });
            ch.entity(&id);
            Ok(if create {
                Response::data(out)
            } else {
                Response::no_content()
            })
        })
        .await
}

/// Delete entities: their aliases with them, and their group memberships.
async fn delete_entities(core: &Core, ids: &[String]) -> Result<(), ApiError> {
    let now = core.tokens.now();
    core.identity
        .update(core, |s, ch| {
            for id in ids {
                if s.entities.remove(id).is_some() {
                    ch.entity(id);
                    drop_entity_memberships(s, ch, id, now);
                }
            }
            Ok(())
        })
        .await
}

fn drop_entity_memberships(s: &mut State, ch: &mut Changes, id: &str, now: i64) {
    for g in s.groups.values_mut() {
        if g.member_entity_ids.iter().any(|m| m == id) {
            g.member_entity_ids.retain(|m| m != id);
            g.last_update_time = now;
            ch.group(&g.id);
        }
    }
}

async fn batch_delete(core: &Core, req: &Request) -> Result<Response, ApiError> {
    let ids = opt_list(req, "entity_ids")?.unwrap_or_default();
    if ids.is_empty() {
        return Err(ApiError::bad_request("missing entity_ids to delete"));
    }
    delete_entities(core, &ids).await?;
    Ok(Response::no_content())
}

async fn list_entities(
    core: &Core,
    table: &MountTable,
    by_name: bool,
) -> Result<Response, ApiError> {
    let s = core.identity.state(core).await?;
    let mut es: Vec<&Entity> = s.entities.values().collect();
    es.sort_by(|a, b| {
        if by_name {
            a.name.cmp(&b.name)
        } else {
            a.id.cmp(&b.id)
        }
    });
    let mut info = Map::new();
    let mut ks = Vec::new();
    for e in es {
        let k = if by_name {
            e.name.clone()
        } else {
            e.id.clone()
        };
        let aliases: Vec<Value> = e
            .aliases
            .iter()
            .map(|a| {
                let j = alias_json(a, table);
                json!({
                    "id": j["id"], "mount_accessor": j["mount_accessor"], "mount_path": j["mount_path"],
                    "mount_type": j["mount_type"], "name": j["name"],
                })
            })
            .collect();
        info.insert(
            k.clone(),
            json!({ "id": e.id, "name": e.name, "aliases": aliases }),
        );
        ks.push(k);
    }
    keys(ks, Some(info))
}

/// `entity/merge`: the aliases and group memberships of
/// `from_entity_ids` move to `to_entity_id`; the merged entities are
/// deleted and their IDs resolve to it from then on. Two aliases on one
/// method cannot both stay: one of them must be named in
/// `conflicting_alias_ids_to_keep` (the other is deleted), else 400.
async fn merge(core: &Core, req: &Request) -> Result<Response, ApiError> {
    let to = opt_string(req, "to_entity_id")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing entity id to merge to"))?;
    let from = opt_list(req, "from_entity_ids")?.unwrap_or_default();
    if from.is_empty() {
        return Err(ApiError::bad_request("missing entity ids to merge from"));
    }
    let keep: BTreeSet<String> = opt_list(req, "conflicting_alias_ids_to_keep")?
        .unwrap_or_default()
        .into_iter()
        .collect();
    let now = core.tokens.now();
    core.identity
        .update(core, |s, ch| {
            let mut target = s
                .entities
                .get(&to)
                .cloned()
                .ok_or_else(|| ApiError::bad_request("entity id to merge to is invalid"))?;
            for f in &from {
                if *f == to {
                    return Err(ApiError::bad_request(
                        "to_entity_id should not be present in from_entity_ids",
                    ));
                }
                let source = s
                    .entities
                    .get(f)
                    .cloned()
                    .ok_or_else(|| ApiError::bad_request("entity id to merge from is invalid"))?;
                for mut a in source.aliases {
                    if let Some(pos) = target
                        .aliases
                        .iter()
                        .position(|t| t.mount_accessor == a.mount_accessor)
                    {
                        let other = target.aliases[pos].id.clone();
                        if keep.contains(&a.id) {
                            target.aliases.remove(pos);
                        } else if keep.contains(&other) {
                            continue;
                        } else {
                            return Err(ApiError::bad_request(format!(
                                "conflicting mount accessors in following alias IDs: {}, {}; name one of them in conflicting_alias_ids_to_keep",
                                other, a.id
                            )));
                        }
                    }
                    a.canonical_id = to.clone();
                    a.last_update_time = now;
                    target.aliases.push(a);
                }
                target.merged_entity_ids.push(f.clone());
                target
                    .merged_entity_ids
                    .extend(source.merged_entity_ids.iter().cloned());
                for g in s.groups.values_mut() {
                    if g.member_entity_ids.iter().any(|m| m == f) {
                        g.member_entity_ids.retain(|m| m != f);
                        if !g.member_entity_ids.contains(&to) {
                            g.member_entity_ids.push(to.clone());
                        }
                        g.last_update_time = now;
                        ch.group(&g.id);
                    }
                }
                s.entities.remove(f);
                ch.entity(f);
            }
            target.last_update_time = now;
            s.entities.insert(to.clone(), target);
            ch.entity(&to);
            Ok(())
        })
        .await?;
    Ok(Response::no_content())
}

// ---- entity aliases ---------------------------------------------------------------------

fn auth_accessor_ok(table: &MountTable, accessor: &str) -> Result<(), ApiError> {
    if accessor == crate::auth_methods::TOKEN_ACCESSOR
        || table.auth.iter().any(|m| m.accessor == accessor)
    {
        Ok(())
    } else {
        Err(
            ApiError::bad_request(format!("invalid mount accessor {accessor:?}"))
                .audited_as("invalid mount accessor"),
        )
    }
}

async fn alias_at(
    core: &Core,
    req: &Request,
    table: &MountTable,
    id: &str,
) -> Result<Response, ApiError> {
    match req.operation {
        Operation::Read => {
            let s = core.identity.state(core).await?;
            let (_, a) = s.alias(id).ok_or_else(ApiError::not_found)?;
            Ok(Response::data(alias_json(a, table)))
        }
        Operation::Write => write_alias(core, req, table, Some(id)).await,
        Operation::Delete => {
            let now = core.tokens.now();
            core.identity
                .update(core, |s, ch| {
                    let Some(eid) = s.alias_ids.get(id).cloned() else {
                        return Ok(());
                    };
                    if let Some(e) = s.entities.get_mut(&eid) {
                        e.aliases.retain(|a| a.id != id);
                        e.last_update_time = now;
                        ch.entity(&eid);
                    }
                    Ok(())
                })
                .await?;
            Ok(Response::no_content())
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

/// Create or update an entity alias. Without `canonical_id`, a create
/// makes a new entity for it. One alias per (method, name), and one alias
/// per method per entity.
async fn write_alias(
    core: &Core,
    req: &Request,
    table: &MountTable,
    path_id: Option<&str>,
) -> Result<Response, ApiError> {
    let id = match path_id {
        Some(i) => Some(i.to_string()),
        None => opt_string(req, "id")?.filter(|s| !s.is_empty()),
    };
    let name = opt_string(req, "name")?;
    if let Some(n) = &name
        && (n.is_empty() || n.len() > MAX_NAME || n.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(
            "invalid alias name: 1 to 256 bytes, without control characters",
        ));
    }
    let accessor = opt_string(req, "mount_accessor")?;
    if let Some(a) = &accessor {
        auth_accessor_ok(table, a)?;
    }
    let canonical = opt_string(req, "canonical_id")?.filter(|s| !s.is_empty());
    let custom = opt_kv(req, "custom_metadata")?;
    let now = core.tokens.now();
    core.identity
        .update(core, |s, ch| {
            let existing = match &id {
                Some(i) => Some(
                    s.alias(i)
                        .map(|(_, a)| a.clone())
                        .ok_or_else(|| ApiError::bad_request("invalid alias ID provided"))?,
                ),
                None => None,
            };
            let create = existing.is_none();
            let mut a = existing.unwrap_or_default();
            if create {
                a.id = new_id();
                a.creation_time = now;
                a.name = name
                    .clone()
                    .ok_or_else(|| ApiError::bad_request("missing alias name"))?;
                a.mount_accessor = accessor
                    .clone()
                    .ok_or_else(|| ApiError::bad_request("missing mount_accessor"))?;
            } else {
                if let Some(n) = &name {
                    a.name = n.clone();
                }
                if let Some(m) = &accessor {
                    a.mount_accessor = m.clone();
                }
            }
            if let Some(c) = &custom {
                a.custom_metadata = c.clone();
            }
            a.last_update_time = now;
            if let Some((_, other)) = s.alias_by_factors(&a.mount_accessor, &a.name)
                && other.id != a.id
            {
                return Err(ApiError::bad_request(
                    "combination of mount and alias name is already in use",
                ));
            }
            let old_entity = (!create).then(|| a.canonical_id.clone());
            let target = match &canonical {
                Some(c) => {
                    if !s.entities.contains_key(c) {
                        return Err(ApiError::bad_request("invalid canonical ID"));
                    }
                    c.clone()
                }
                None => match &old_entity {
                    Some(e) => e.clone(),
                    None => {
                        let eid = new_id();
                        let mut nm = generated_name("entity", &eid);
                        while s.entity_by_name(&nm).is_some() {
                            nm = generated_name("entity", &new_id());
                        }
                        s.entities.insert(
                            eid.clone(),
                            Entity {
                                id: eid.clone(),
                                name: nm,
                                creation_time: now,
                                last_update_time: now,
                                ..Entity::default()
                            },
                        );
                        eid
                    }
                },
            };
            if let Some(t) = s.entities.get(&target)
                && t.aliases
                    .iter()
                    .any(|o| o.mount_accessor == a.mount_accessor && o.id != a.id)
            {
                return Err(ApiError::bad_request(format!(
                    "mount accessor {:?} is already in use by another alias of entity {target:?}",
                    a.mount_accessor
                )));
            }
            if let Some(old) = &old_entity
                && let Some(e) = s.entities.get_mut(old)
            {
                e.aliases.retain(|x| x.id != a.id);
                e.last_update_time = now;
                ch.entity(old);
            }
            a.canonical_id = target.clone();
            let out = json!({ "id": a.id, "canonical_id": a.canonical_id });
            let t = s
                .entities
                .get_mut(&target)
                .ok_or_else(|| ApiError::internal("alias target vanished"))?;
            t.aliases.push(a);
            t.last_update_time = now;
            ch.entity(&target);
            Ok(Response::data(out))
        })
        .await
}

async fn list_aliases(core: &Core, table: &MountTable) -> Result<Response, ApiError> {
    let s = core.identity.state(core).await?;
    let mut all: Vec<&Alias> = s.entities.values().flat_map(|e| e.aliases.iter()).collect();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    let mut info = Map::new();
    for a in &all {
        info.insert(a.id.clone(), alias_json(a, table));
    }
    keys(all.iter().map(|a| a.id.clone()).collect(), Some(info))
}

// ---- groups -----------------------------------------------------------------------------

async fn group_at(
    core: &Core,
    req: &Request,
    table: &MountTable,
    by: By<'_>,
) -> Result<Response, ApiError> {
    match req.operation {
        Operation::Read => {
            let s = core.identity.state(core).await?;
            let g = match by {
                By::Id(id) => s.groups.get(id),
                By::Name(n) => s.group_by_name(n),
                By::Body => None,
            };
            let g = g.ok_or_else(ApiError::not_found)?;
            Ok(Response::data(group_json(&s, g, table)))
        }
        Operation::Write => write_group(core, req, by).await,
        Operation::Delete => {
            let now = core.tokens.now();
            core.identity
                .update(core, |s, ch| {
                    let id = match by {
                        By::Id(id) => s.groups.get(id).map(|g| g.id.clone()),
                        By::Name(n) => s.group_by_name(n).map(|g| g.id.clone()),
                        By::Body => None,
                    };
                    let Some(id) = id else { return Ok(()) };
                    s.groups.remove(&id);
                    ch.group(&id);
                    for g in s.groups.values_mut() {
                        if g.member_group_ids.contains(&id) {
                            g.member_group_ids.retain(|m| *m != id);
                            g.last_update_time = now;
                            ch.group(&g.id);
                        }
                    }
                    Ok(())
                })
                .await?;
            Ok(Response::no_content())
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

async fn write_group(core: &Core, req: &Request, by: By<'_>) -> Result<Response, ApiError> {
    let body_name = opt_string(req, "name")?;
    if let Some(n) = &body_name {
        name_ok(n, "group")?;
    }
    let body_id = opt_string(req, "id")?.filter(|s| !s.is_empty());
    let kind = match opt_string(req, "type")? {
        None => None,
        Some(t) if t.is_empty() => None,
        Some(t) if t == "internal" || t == "external" => Some(t),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid group type: must be \"internal\" or \"external\"",
            ));
        }
    };
    let policies = opt_policies(req)?;
    let metadata = opt_kv(req, "metadata")?;
    let member_entities = opt_list(req, "member_entity_ids")?;
    let member_groups = opt_list(req, "member_group_ids")?;
    let now = core.tokens.now();
    core.identity
        .update(core, |s, ch| {
            let not_found = || ApiError::bad_request("group not found from id");
            let (existing, name) = match by {
                By::Id(id) => (
                    Some(s.groups.get(id).ok_or_else(not_found)?.id.clone()),
                    body_name.clone(),
                ),
                By::Name(n) => (s.group_by_name(n).map(|g| g.id.clone()), Some(n.to_string())),
                By::Body => match &body_id {
                    Some(id) => (
                        Some(s.groups.get(id).ok_or_else(not_found)?.id.clone()),
                        body_name.clone(),
                    ),
                    None => (
                        body_name
                            .as_deref()
                            .and_then(|n| s.group_by_name(n))
                            .map(|g| g.id.clone()),
                        body_name.clone(),
                    ),
                },
            };
            if let Some(n) = &name
                && let Some(other) = s.group_names.get(&n.to_lowercase())
                && existing.as_deref() != Some(other.as_str())
            {
                return Err(ApiError::bad_request("group name is already in use"));
            }
            let create = existing.is_none();
            let id = existing.unwrap_or_else(new_id);
            let mut g = s.groups.get(&id).cloned().unwrap_or_else(|| Group {
                id: id.clone(),
                kind: kind.clone().unwrap_or_else(|| "internal".into()),
                creation_time: now,
                ..Group::default()
            });
            if let Some(k) = &kind
                && *k != g.kind
            {
                return Err(ApiError::bad_request("group type cannot be changed"));
            }
            match name {
                Some(n) => g.name = n,
                None if g.name.is_empty() => g.name = generated_name("group", &id),
                None => {}
            }
            if let Some(p) = &policies {
                g.policies = p.clone();
            }
            if let Some(m) = &metadata {
                g.metadata = m.clone();
            }
            if let Some(ms) = &member_entities {
                if g.kind == "external" {
                    return Err(ApiError::bad_request(
                        "member entities can't be set manually for external groups",
                    ));
                }
                if let Some(bad) = ms.iter().find(|m| !s.entities.contains_key(*m)) {
                    return Err(ApiError::bad_request(format!(
                        "entity {bad:?} does not exist"
                    )));
                }
                g.member_entity_ids = ms.clone();
            }
            if let Some(ms) = &member_groups {
                if g.kind == "external" && !ms.is_empty() {
                    return Err(ApiError::bad_request(
                        "member groups can't be set for external groups",
                    ));
                }
                for m in ms {
                    if !s.groups.contains_key(m) {
                        return Err(ApiError::bad_request(format!(
                            "group {m:?} does not exist"
                        )));
                    }
                    // a member that is this group or contains it: a cycle
                    if *m == id || s.contains_group(m, &id) {
                        return Err(ApiError::bad_request(format!(
                            "member group ID {m:?} would make a cycle: it is this group or one of its parents"
                        )));
                    }
                }
                g.member_group_ids = ms.clone();
            }
            g.last_update_time = now;
            let out = json!({ "id": g.id, "name": g.name });
            s.groups.insert(id.clone(), g);
            ch.group(&id);
            Ok(if create {
                Response::data(out)
            } else {
                Response::no_content()
            })
        })
        .await
}

async fn list_groups(core: &Core, by_name: bool) -> Result<Response, ApiError> {
    let s = core.identity.state(core).await?;
    let mut gs: Vec<&Group> = s.groups.values().collect();
    gs.sort_by(|a, b| {
        if by_name {
            a.name.cmp(&b.name)
        } else {
            a.id.cmp(&b.id)
        }
    });
    let mut info = Map::new();
    let mut ks = Vec::new();
    for g in gs {
        let k = if by_name {
            g.name.clone()
        } else {
            g.id.clone()
        };
        info.insert(
            k.clone(),
            json!({
                "name": g.name,
                "num_member_entities": g.member_entity_ids.len(),
                "num_parent_groups": s.parents_of(&g.id).len(),
            }),
        );
        ks.push(k);
    }
    keys(ks, Some(info))
}

// ---- group aliases ----------------------------------------------------------------------

async fn group_alias_at(
    core: &Core,
    req: &Request,
    table: &MountTable,
    id: &str,
) -> Result<Response, ApiError> {
    match req.operation {
        Operation::Read => {
            let s = core.identity.state(core).await?;
            let a = s
                .group_by_alias(id)
                .and_then(|g| g.alias.as_ref())
                .ok_or_else(ApiError::not_found)?;
            Ok(Response::data(alias_json(a, table)))
        }
        Operation::Write => write_group_alias(core, req, table, Some(id)).await,
        Operation::Delete => {
            let now = core.tokens.now();
            core.identity
                .update(core, |s, ch| {
                    if let Some(gid) = s.group_alias_ids.get(id).cloned()
                        && let Some(g) = s.groups.get_mut(&gid)
                    {
                        g.alias = None;
                        g.last_update_time = now;
                        ch.group(&gid);
                    }
                    Ok(())
                })
                .await?;
            Ok(Response::no_content())
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

/// Create or update a group alias. Without `canonical_id`, a create makes
/// a new external group for it. Only external groups have aliases, one each.
async fn write_group_alias(
    core: &Core,
    req: &Request,
    table: &MountTable,
    path_id: Option<&str>,
) -> Result<Response, ApiError> {
    let id = match path_id {
        Some(i) => Some(i.to_string()),
        None => opt_string(req, "id")?.filter(|s| !s.is_empty()),
    };
    let name = opt_string(req, "name")?;
    if let Some(n) = &name
        && (n.is_empty() || n.len() > MAX_NAME || n.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(
            "invalid group alias name: 1 to 256 bytes, without control characters",
        ));
    }
    let accessor = opt_string(req, "mount_accessor")?;
    if let Some(a) = &accessor {
        auth_accessor_ok(table, a)?;
    }
    let canonical = opt_string(req, "canonical_id")?.filter(|s| !s.is_empty());
    let now = core.tokens.now();
    core.identity
        .update(core, |s, ch| {
            let existing = match &id {
                Some(i) => Some(
                    s.group_by_alias(i)
                        .and_then(|g| g.alias.clone())
                        .ok_or_else(|| ApiError::bad_request("invalid group alias ID provided"))?,
                ),
                None => None,
            };
            let create = existing.is_none();
            let mut a = existing.unwrap_or_default();
            if create {
                a.id = new_id();
                a.creation_time = now;
                a.name = name
                    .clone()
                    .ok_or_else(|| ApiError::bad_request("missing alias name"))?;
                a.mount_accessor = accessor
                    .clone()
                    .ok_or_else(|| ApiError::bad_request("missing mount_accessor"))?;
            } else {
                if let Some(n) = &name {
                    a.name = n.clone();
                }
                if let Some(m) = &accessor {
                    a.mount_accessor = m.clone();
                }
            }
            a.last_update_time = now;
            if let Some(g) = s.group_by_alias_factors(&a.mount_accessor, &a.name)
                && g.alias.as_ref().is_some_and(|o| o.id != a.id)
            {
                return Err(ApiError::bad_request(
                    "combination of mount and group alias name is already in use",
                ));
            }
            let old_group = (!create).then(|| a.canonical_id.clone());
            let target = match (&canonical, &old_group) {
                (Some(c), _) => {
                    let g = s
                        .groups
                        .get(c)
                        .ok_or_else(|| ApiError::bad_request("invalid canonical ID"))?;
                    if g.kind != "external" {
                        return Err(ApiError::bad_request(
                            "alias can't be set on an internal group",
                        ));
                    }
                    c.clone()
                }
                (None, Some(g)) => g.clone(),
                (None, None) => {
                    let gid = new_id();
                    let mut nm = generated_name("group", &gid);
                    while s.group_by_name(&nm).is_some() {
                        nm = generated_name("group", &new_id());
                    }
                    s.groups.insert(
                        gid.clone(),
                        Group {
                            id: gid.clone(),
                            name: nm,
                            kind: "external".into(),
                            creation_time: now,
                            last_update_time: now,
                            ..Group::default()
                        },
                    );
                    gid
                }
            };
            if let Some(g) = s.groups.get(&target)
                && g.alias.as_ref().is_some_and(|o| o.id != a.id)
            {
                return Err(ApiError::bad_request(format!(
                    "group {target:?} already has an alias"
                )));
            }
            if let Some(old) = &old_group
                && *old != target
                && let Some(g) = s.groups.get_mut(old)
            {
                g.alias = None;
                g.last_update_time = now;
                ch.group(old);
            }
            a.canonical_id = target.clone();
            let out = json!({ "id": a.id, "canonical_id": a.canonical_id });
            let g = s
                .groups
                .get_mut(&target)
                .ok_or_else(|| ApiError::internal("group alias target vanished"))?;
            g.alias = Some(a);
            g.last_update_time = now;
            ch.group(&target);
            Ok(Response::data(out))
        })
        .await
}

async fn list_group_aliases(core: &Core, table: &MountTable) -> Result<Response, ApiError> {
    let s = core.identity.state(core).await?;
    let mut all: Vec<&Alias> = s.groups.values().filter_map(|g| g.alias.as_ref()).collect();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    let mut info = Map::new();
    for a in &all {
        info.insert(a.id.clone(), alias_json(a, table));
    }
    keys(all.iter().map(|a| a.id.clone()).collect(), Some(info))
}

// ---- lookup -----------------------------------------------------------------------------

/// The one criterion of a lookup: `name`, `id`, `alias_id`, or
/// `alias_name` with `alias_mount_accessor`.
enum Criterion {
    Name(String),
    Id(String),
    AliasId(String),
    AliasFactors(String, String),
}

fn criterion(req: &Request) -> Result<Criterion, ApiError> {
    let name = opt_string(req, "name")?.filter(|s| !s.is_empty());
    let id = opt_string(req, "id")?.filter(|s| !s.is_empty());
    let alias_id = opt_string(req, "alias_id")?.filter(|s| !s.is_empty());
    let alias_name = opt_string(req, "alias_name")?.filter(|s| !s.is_empty());
    let alias_acc = opt_string(req, "alias_mount_accessor")?.filter(|s| !s.is_empty());
    let given = [
        name.is_some(),
        id.is_some(),
        alias_id.is_some(),
        alias_name.is_some() || alias_acc.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given != 1 {
        return Err(ApiError::bad_request(
            "exactly one of name, id, alias_id, or alias_name with alias_mount_accessor must be given",
        ));
    }
    Ok(match (name, id, alias_id, alias_name, alias_acc) {
        (Some(n), ..) => Criterion::Name(n),
        (_, Some(i), ..) => Criterion::Id(i),
        (_, _, Some(a), ..) => Criterion::AliasId(a),
        (_, _, _, Some(n), Some(a)) => Criterion::AliasFactors(a, n),
        _ => {
            return Err(ApiError::bad_request(
                "alias_name and alias_mount_accessor must be given together",
            ));
        }
    })
}

async fn lookup_entity(
    core: &Core,
    req: &Request,
    table: &MountTable,
) -> Result<Response, ApiError> {
    let c = criterion(req)?;
    let s = core.identity.state(core).await?;
    let e = match &c {
        Criterion::Name(n) => s.entity_by_name(n),
        Criterion::Id(i) => s.entity(i),
        Criterion::AliasId(a) => s.alias(a).map(|(e, _)| e),
        Criterion::AliasFactors(acc, n) => s.alias_by_factors(acc, n).map(|(e, _)| e),
    };
    Ok(match e {
        Some(e) => Response::data(entity_json(&s, e, table)),
        None => Response::no_content(),
    })
}

async fn lookup_group(
    core: &Core,
    req: &Request,
    table: &MountTable,
) -> Result<Response, ApiError> {
    let c = criterion(req)?;
    let s = core.identity.state(core).await?;
    let g = match &c {
        Criterion::Name(n) => s.group_by_name(n),
        Criterion::Id(i) => s.groups.get(i),
        Criterion::AliasId(a) => s.group_by_alias(a),
        Criterion::AliasFactors(acc, n) => s.group_by_alias_factors(acc, n),
    };
    Ok(match g {
        Some(g) => Response::data(group_json(&s, g, table)),
        None => Response::no_content(),
    })
}
