//! The identity store (Vault's `identity/` secrets engine): entities and
//! their aliases, groups and their aliases, and the policies they add to a
//! token at every request.
//!
//! - An **entity** is one service or person, whatever method it logs in
//!   with; each **alias** ties it to one login name on one auth method
//!   (mount accessor + name: a userpass username, an AppRole role ID, a JWT
//!   `user_claim` value). The first login of an alias creates its entity.
//! - A **group** is internal (members listed: entities and other groups) or
//!   external (members are the entities whose login carried the group's
//!   **group alias**, e.g. a JWT `groups_claim` value; kept up to date at
//!   every login).
//! - A token issued at login carries its entity's ID; at every request the
//!   ACL is built from the token's own policies plus the entity's policies
//!   and those of every group it belongs to, directly or through parent
//!   groups ([`Identity::policies_for`]). Changing an entity's or a group's
//!   policies changes what its live tokens may do at once; a disabled
//!   entity's tokens authorise nothing.
//!
//! Storage, behind the barrier: `sys/identity/entity/<id>` (an [`Entity`]
//! with its aliases) and `sys/identity/group/<id>` (a [`Group`] with its
//! alias). Everything is read into memory on first use after an unseal;
//! writes are serialised, persisted in one barrier transaction, and only
//! then published (copy on write, so readers never wait on storage).
//!
//! Names are matched exactly, and are unique regardless of case (`Web` and
//! `web` cannot both exist): the name the ACL saw in a path is the name
//! acted on.

pub mod api;
pub mod oidc;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use palisade_barrier::BarrierOp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::core::Core;
use crate::logical::ApiError;
use crate::mounts::MountEntry;

pub(crate) const ENTITY_PREFIX: &str = "sys/identity/entity/";
pub(crate) const GROUP_PREFIX: &str = "sys/identity/group/";

/// An entity alias: one login name on one auth method.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Alias {
    pub id: String,
    /// The entity (or, for a group alias, the group) it belongs to.
    pub canonical_id: String,
    pub mount_accessor: String,
    pub name: String,
    pub metadata: BTreeMap<String, String>,
    pub custom_metadata: BTreeMap<String, String>,
    pub creation_time: i64,
    pub last_update_time: i64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Entity {
    pub id: String,
    pub name: String,
    pub policies: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub disabled: bool,
    pub aliases: Vec<Alias>,
    /// Entities merged into this one: their IDs resolve here (tokens
    /// issued to them keep their identity).
    pub merged_entity_ids: Vec<String>,
    pub creation_time: i64,
    pub last_update_time: i64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Group {
    pub id: String,
    pub name: String,
    /// `internal` or `external`.
    #[serde(rename = "type")]
    pub kind: String,
    pub policies: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub member_entity_ids: Vec<String>,
    pub member_group_ids: Vec<String>,
    /// External groups only: the alias logins are matched against.
    pub alias: Option<Alias>,
    pub creation_time: i64,
    pub last_update_time: i64,
}

/// Everything, in memory, with its indexes. Replaced whole by each write.
#[derive(Clone, Default)]
pub struct State {
    pub entities: HashMap<String, Entity>,
    /// Lowercased name → entity ID (names are unique regardless of case).
    entity_names: HashMap<String, String>,
    /// Entity alias ID → entity ID.
    alias_ids: HashMap<String, String>,
    /// (mount accessor, alias name) → alias ID.
    alias_factors: HashMap<(String, String), String>,
    /// Merged entity ID → the entity it was merged into.
    merged: HashMap<String, String>,
    pub groups: HashMap<String, Group>,
    group_names: HashMap<String, String>,
    /// Group alias ID → group ID.
    group_alias_ids: HashMap<String, String>,
    /// (mount accessor, group alias name) → group ID.
    group_alias_factors: HashMap<(String, String), String>,
    /// Entity ID → groups listing it as a member.
    entity_groups: HashMap<String, BTreeSet<String>>,
    /// Group ID → groups listing it as a member.
    parents: HashMap<String, BTreeSet<String>>,
}

impl State {
    fn reindex(&mut self) {
        self.entity_names.clear();
        self.alias_ids.clear();
        self.alias_factors.clear();
        self.merged.clear();
        for e in self.entities.values() {
            self.entity_names
                .insert(e.name.to_lowercase(), e.id.clone());
            for a in &e.aliases {
                self.alias_ids.insert(a.id.clone(), e.id.clone());
                self.alias_factors
                    .insert((a.mount_accessor.clone(), a.name.clone()), a.id.clone());
            }
            for m in &e.merged_entity_ids {
                self.merged.insert(m.clone(), e.id.clone());
            }
        }
        self.reindex_groups();
    }

    fn reindex_groups(&mut self) {
        self.group_names.clear();
        self.group_alias_ids.clear();
        self.group_alias_factors.clear();
        self.entity_groups.clear();
        self.parents.clear();
        for g in self.groups.values() {
            self.group_names.insert(g.name.to_lowercase(), g.id.clone());
            if let Some(a) = &g.alias {
                self.group_alias_ids.insert(a.id.clone(), g.id.clone());
                self.group_alias_factors
                    .insert((a.mount_accessor.clone(), a.name.clone()), g.id.clone());
            }
            for e in &g.member_entity_ids {
                self.entity_groups
                    .entry(e.clone())
                    .or_default()
                    .insert(g.id.clone());
            }
            for m in &g.member_group_ids {
                self.parents
                    .entry(m.clone())
                    .or_default()
                    .insert(g.id.clone());
            }
        }
    }

    /// The entity an ID names, following merges.
    pub fn entity(&self, id: &str) -> Option<&Entity> {
        self.entities
            .get(id)
            .or_else(|| self.merged.get(id).and_then(|t| self.entities.get(t)))
    }

    pub fn entity_by_name(&self, name: &str) -> Option<&Entity> {
        self.entity_names
            .get(&name.to_lowercase())
            .and_then(|id| self.entities.get(id))
            .filter(|e| e.name == name)
    }

    /// An entity alias and its entity.
    pub fn alias(&self, alias_id: &str) -> Option<(&Entity, &Alias)> {
        let e = self.entities.get(self.alias_ids.get(alias_id)?)?;
        Some((e, e.aliases.iter().find(|a| a.id == alias_id)?))
    }

    pub fn alias_by_factors(&self, accessor: &str, name: &str) -> Option<(&Entity, &Alias)> {
        self.alias(
            self.alias_factors
                .get(&(accessor.to_string(), name.to_string()))?,
        )
    }

    pub fn group_by_name(&self, name: &str) -> Option<&Group> {
        self.group_names
            .get(&name.to_lowercase())
            .and_then(|id| self.groups.get(id))
            .filter(|g| g.name == name)
    }

    pub fn group_by_alias(&self, alias_id: &str) -> Option<&Group> {
        self.groups.get(self.group_alias_ids.get(alias_id)?)
    }

    pub fn group_by_alias_factors(&self, accessor: &str, name: &str) -> Option<&Group> {
        self.groups.get(
            self.group_alias_factors
                .get(&(accessor.to_string(), name.to_string()))?,
        )
    }

    /// Every group an entity belongs to: (direct, inherited through parents).
    pub fn groups_of(&self, entity_id: &str) -> (BTreeSet<String>, BTreeSet<String>) {
        let direct = self
            .entity_groups
            .get(entity_id)
            .cloned()
            .unwrap_or_default();
        let mut all = BTreeSet::new();
        let mut todo: Vec<String> = direct.iter().cloned().collect();
        while let Some(g) = todo.pop() {
            if all.insert(g.clone())
                && let Some(ps) = self.parents.get(&g)
            {
                todo.extend(ps.iter().cloned());
            }
        }
        let inherited = all.difference(&direct).cloned().collect();
        (direct, inherited)
    }

    /// The groups listing `group_id` as a member.
    pub fn parents_of(&self, group_id: &str) -> Vec<String> {
        self.parents
            .get(group_id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether `ancestor` is `group` or contains it, directly or not.
    fn contains_group(&self, ancestor: &str, group: &str) -> bool {
        let mut seen = BTreeSet::new();
        let mut todo = vec![group.to_string()];
        while let Some(g) = todo.pop() {
            if g == ancestor {
                return true;
            }
            if seen.insert(g.clone())
                && let Some(ps) = self.parents.get(&g)
            {
                todo.extend(ps.iter().cloned());
            }
        }
        false
    }
}

/// What a token's entity adds at a request.
pub enum IdentityPolicies {
    /// No entity (or one deleted since): the token's policies only.
    None,
    /// The entity's and its groups' policies (sorted, deduplicated).
    Some(Vec<String>),
    /// The entity is disabled, or was deleted: the token authorises nothing.
    Disabled,
}

/// The store: the published state and the write lock.
#[derive(Default)]
pub struct Identity {
    state: RwLock<Option<Arc<State>>>,
    writes: tokio::sync::Mutex<()>,
    pub oidc: oidc::Cache,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// The records a write changed, to persist before the new state is published.
#[derive(Default)]
pub struct Changes {
    entities: BTreeSet<String>,
    groups: BTreeSet<String>,
}

impl Changes {
    pub fn entity(&mut self, id: &str) {
        self.entities.insert(id.to_string());
    }
    pub fn group(&mut self, id: &str) {
        self.groups.insert(id.to_string());
    }
    fn is_empty(&self) -> bool {
        self.entities.is_empty() && self.groups.is_empty()
    }
}

impl Identity {
    /// Forget everything (seal).
    pub fn clear(&self) {
        *write(&self.state) = None;
        self.oidc.clear();
    }

    /// The current state, read from storage on first use after an unseal.
    pub async fn state(&self, core: &Core) -> Result<Arc<State>, ApiError> {
        if let Some(s) = read(&self.state).clone() {
            return Ok(s);
        }
        let _g = self.writes.lock().await;
        if let Some(s) = read(&self.state).clone() {
            return Ok(s);
        }
        let s = Arc::new(load(core).await?);
        *write(&self.state) = Some(s.clone());
        Ok(s)
    }

    /// Change the state: `f` edits a copy and says which records it
    /// changed; they are persisted in one transaction, then the copy is
    /// published. An error from `f` changes nothing.
    pub async fn update<R>(
        &self,
        core: &Core,
        f: impl FnOnce(&mut State, &mut Changes) -> Result<R, ApiError>,
    ) -> Result<R, ApiError> {
        let current = self.state(core).await?;
        let _g = self.writes.lock().await;
        // the state may have been replaced while this waited for the lock
        let current = read(&self.state).clone().unwrap_or(current);
        let mut next = (*current).clone();
        let mut changes = Changes::default();
        let r = f(&mut next, &mut changes)?;
        if changes.is_empty() {
            return Ok(r);
        }
        next.reindex();
        let mut ops = Vec::new();
        for id in &changes.entities {
            let path = format!("{ENTITY_PREFIX}{id}");
            ops.push(match next.entities.get(id) {
                Some(e) => BarrierOp::Put {
                    path,
                    value: crate::json::to_stored(e)?,
                },
                None => BarrierOp::Delete { path },
            });
        }
        for id in &changes.groups {
            let path = format!("{GROUP_PREFIX}{id}");
            ops.push(match next.groups.get(id) {
                Some(g) => BarrierOp::Put {
                    path,
                    value: crate::json::to_stored(g)?,
                },
                None => BarrierOp::Delete { path },
            });
        }
        core.barrier.transaction(ops).await?;
        *write(&self.state) = Some(Arc::new(next));
        Ok(r)
    }

    /// The policies an entity adds to its tokens.
    pub async fn policies_for(
        &self,
        core: &Core,
        entity_id: &str,
    ) -> Result<IdentityPolicies, ApiError> {
        if entity_id.is_empty() {
            return Ok(IdentityPolicies::None);
        }
        let s = self.state(core).await?;
        // a token whose entity was deleted acts for nobody (Vault denies it)
        let Some(e) = s.entity(entity_id) else {
            return Ok(IdentityPolicies::Disabled);
        };
        if e.disabled {
            return Ok(IdentityPolicies::Disabled);
        }
        let mut out: BTreeSet<String> = e.policies.iter().cloned().collect();
        let (direct, inherited) = s.groups_of(&e.id);
        for g in direct.iter().chain(inherited.iter()) {
            if let Some(g) = s.groups.get(g) {
                out.extend(g.policies.iter().cloned());
            }
        }
        Ok(IdentityPolicies::Some(out.into_iter().collect()))
    }
}

async fn load(core: &Core) -> Result<State, ApiError> {
    let mut s = State::default();
    for id in core.barrier.list(ENTITY_PREFIX).await? {
        if let Some(e) =
            crate::json::stored::<Entity>(core.barrier.get(&format!("{ENTITY_PREFIX}{id}")).await?)?
        {
            s.entities.insert(e.id.clone(), e);
        }
    }
    for id in core.barrier.list(GROUP_PREFIX).await? {
        if let Some(g) =
            crate::json::stored::<Group>(core.barrier.get(&format!("{GROUP_PREFIX}{id}")).await?)?
        {
            s.groups.insert(g.id.clone(), g);
        }
    }
    s.reindex();
    Ok(s)
}

pub(crate) fn new_id() -> String {
    palisade_core::uuid_v4()
}

/// A name for an entity or group created without one (Vault's form).
fn generated_name(prefix: &str, id: &str) -> String {
    format!("{prefix}_{}", id.get(..8).unwrap_or(id))
}

/// What a login tells the identity store: who logged in, on which method.
pub struct LoginAlias<'a> {
    pub mount: &'a MountEntry,
    /// The alias name (username, role ID, `user_claim` value, certificate CN).
    pub name: String,
    pub metadata: BTreeMap<String, String>,
    /// For methods that report groups (JWT `groups_claim`): the group alias
    /// names the login carried. `None`: the method reports no groups.
    pub groups: Option<Vec<String>>,
}

/// The entity of a login: the alias's, or a new one with a new alias. The
/// memberships of the external groups on the login's method follow the
/// groups it carried. Refused when the entity is disabled.
pub async fn entity_for_login(core: &Core, login: LoginAlias<'_>) -> Result<String, ApiError> {
    let accessor = login.mount.accessor.clone();
    let now = core.tokens.now();
    // the common case, no change: a read only
    {
        let s = core.identity.state(core).await?;
        if let Some((e, a)) = s.alias_by_factors(&accessor, &login.name)
            && a.metadata == login.metadata
            && login
                .groups
                .as_ref()
                .is_none_or(|g| external_groups_match(&s, &accessor, &e.id, g))
        {
            if e.disabled {
                return Err(ApiError::permission_denied());
            }
            return Ok(e.id.clone());
        }
    }
    let entity_id = core
        .identity
        .update(core, |s, ch| {
            let entity_id = match s.alias_by_factors(&accessor, &login.name) {
                Some((e, _)) if e.disabled => return Err(ApiError::permission_denied()),
                Some((e, a)) => {
                    let (eid, aid) = (e.id.clone(), a.id.clone());
                    if a.metadata != login.metadata
                        && let Some(e) = s.entities.get_mut(&eid)
                        && let Some(a) = e.aliases.iter_mut().find(|a| a.id == aid)
                    {
                        a.metadata = login.metadata.clone();
                        a.last_update_time = now;
                        ch.entity(&eid);
                    }
                    eid
                }
                None => {
                    let id = new_id();
                    let mut name = generated_name("entity", &id);
                    while s.entity_by_name(&name).is_some() {
                        name = generated_name("entity", &new_id());
                    }
                    let alias = Alias {
                        id: new_id(),
                        canonical_id: id.clone(),
                        mount_accessor: accessor.clone(),
                        name: login.name.clone(),
                        metadata: login.metadata.clone(),
                        creation_time: now,
                        last_update_time: now,
                        ..Alias::default()
                    };
                    s.entities.insert(
                        id.clone(),
                        Entity {
                            id: id.clone(),
                            name,
                            aliases: vec![alias],
                            creation_time: now,
                            last_update_time: now,
                            ..Entity::default()
                        },
                    );
                    ch.entity(&id);
                    id
                }
            };
            if let Some(names) = &login.groups {
                sync_external_groups(s, ch, &accessor, &entity_id, names, now);
            }
            Ok(entity_id)
        })
        .await?;
    let s = core.identity.state(core).await?;
    if s.entity(&entity_id).is_some_and(|e| e.disabled) {
        return Err(ApiError::permission_denied());
    }
    Ok(entity_id)
}

/// Whether the entity is exactly in the external groups of this method
/// whose aliases the login carried.
fn external_groups_match(s: &State, accessor: &str, entity_id: &str, names: &[String]) -> bool {
    s.groups
        .values()
        .filter(|g| g.kind == "external")
        .filter_map(|g| g.alias.as_ref().map(|a| (g, a)))
        .filter(|(_, a)| a.mount_accessor == accessor)
        .all(|(g, a)| names.contains(&a.name) == g.member_entity_ids.iter().any(|m| m == entity_id))
}

fn sync_external_groups(
    s: &mut State,
    ch: &mut Changes,
    accessor: &str,
    entity_id: &str,
    names: &[String],
    now: i64,
) {
    for g in s.groups.values_mut() {
        let Some(a) = &g.alias else { continue };
        if g.kind != "external" || a.mount_accessor != accessor {
            continue;
        }
        let want = names.contains(&a.name);
        let has = g.member_entity_ids.iter().any(|m| m == entity_id);
        if want && !has {
            g.member_entity_ids.push(entity_id.to_string());
        } else if !want && has {
            g.member_entity_ids.retain(|m| m != entity_id);
        } else {
            continue;
        }
        g.last_update_time = now;
        ch.group(&g.id);
    }
}

/// The aliases of a method are deleted with it (Vault): a method enabled
/// again later gets a new accessor, and nobody logs in to the old one.
pub async fn forget_mount(core: &Core, accessor: &str) -> Result<(), ApiError> {
    core.identity
        .update(core, |s, ch| {
            for e in s.entities.values_mut() {
                let before = e.aliases.len();
                e.aliases.retain(|a| a.mount_accessor != accessor);
                if e.aliases.len() != before {
                    ch.entity(&e.id);
                }
            }
            for g in s.groups.values_mut() {
                if g.alias
                    .as_ref()
                    .is_some_and(|a| a.mount_accessor == accessor)
                {
                    g.alias = None;
                    ch.group(&g.id);
                }
            }
            Ok(())
        })
        .await
}

/// `identity_policies` as Vault shows them in an auth block or a lookup.
pub fn policies_json(p: &IdentityPolicies) -> Value {
    match p {
        IdentityPolicies::Some(v) if !v.is_empty() => json!(v),
        _ => Value::Null,
    }
}
