//! `auth/token/*`: create (child and orphan), lookup, renew and revoke, by
//! token or accessor, with Vault's shapes. Lookup responses echo the token id
//! only when the caller presented it; by accessor they never do.

use std::sync::Arc;

use palisade_policy::Capability;
use serde_json::{Map, Value, json};

use crate::core::{Authorized, Core};
use crate::logical::{ApiError, AuthBlock, Operation, Request, Response, fields};
use crate::token::{NewToken, Renewed, TokenEntry};
use crate::token_roles::{self, TokenRole};

fn time_or_null(secs: i64) -> Value {
    if secs == 0 {
        Value::Null
    } else {
        json!(palisade_core::rfc3339(secs.saturating_mul(1_000_000_000)))
    }
}

fn lookup_json(e: &TokenEntry, id: Option<&str>, now: i64) -> Value {
    let mut v = json!({
        "accessor": e.accessor,
        "creation_time": e.creation_time,
        "creation_ttl": e.creation_ttl,
        "display_name": e.display_name,
        "entity_id": e.entity_id,
        "expire_time": time_or_null(e.expire_time),
        "explicit_max_ttl": e.explicit_max_ttl,
        "issue_time": palisade_core::rfc3339(e.issue_time * 1_000_000_000),
        "meta": if e.meta.is_empty() { Value::Null } else { Value::Object(e.meta.clone()) },
        "num_uses": e.num_uses,
        "orphan": e.orphan(),
        "path": e.path,
        "policies": e.policies,
        "renewable": e.renewable,
        "ttl": e.ttl_remaining(now),
        "type": "service",
    });
    if e.period > 0 {
        v["period"] = json!(e.period);
    }
    if !e.role.is_empty() {
        v["role"] = json!(e.role);
    }
    if !e.bound_cidrs.is_empty() {
        v["bound_cidrs"] = json!(e.bound_cidrs);
    }
    v["id"] = json!(id.unwrap_or(""));
    v
}

/// A lookup with the policies the token's entity adds (Vault's
/// `identity_policies`, present when there are any).
async fn with_identity(core: &Core, e: &TokenEntry, mut v: Value) -> Result<Value, ApiError> {
    if let crate::identity::IdentityPolicies::Some(p) =
        core.identity.policies_for(core, &e.entity_id).await?
        && !p.is_empty()
    {
        v["identity_policies"] = json!(p);
    }
    Ok(v)
}

pub(crate) fn auth_block(id: &str, e: &TokenEntry, now: i64) -> AuthBlock {
    let token_policies = e.policies.clone();
    AuthBlock {
        client_token: palisade_core::Secret::new(id.to_string()),
        accessor: e.accessor.clone(),
        policies: token_policies.clone(),
        token_policies,
        identity_policies: None,
        metadata: if e.meta.is_empty() {
            None
        } else {
            Some(e.meta.clone())
        },
        lease_duration: e.ttl_remaining(now),
        renewable: e.renewable,
        entity_id: e.entity_id.clone(),
        token_type: "service".into(),
        orphan: e.orphan(),
        mfa_requirement: None,
        num_uses: e.num_uses,
    }
}

fn opt_str(req: &Request, name: &str) -> Result<Option<String>, ApiError> {
    req.field(name)
        .map(|v| fields::string(&v, name))
        .transpose()
}

fn required_str(req: &Request, name: &str) -> Result<String, ApiError> {
    match opt_str(req, name)? {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(ApiError::bad_request(format!("missing {name}"))),
    }
}

pub async fn handle(core: &Arc<Core>, auth: &Authorized, rest: &str) -> Result<Response, ApiError> {
    let req = auth.request();
    let op = req.operation;
    match rest {
        "create" | "create-orphan" if op == Operation::Write => {
            create(core, auth, rest == "create-orphan", None).await
        }
        "lookup-self" if matches!(op, Operation::Read | Operation::Write) => {
            let v = lookup_json(auth.token(), Some(auth.token_id()), core.tokens.now());
            Ok(Response::data(with_identity(core, auth.token(), v).await?))
        }
        "lookup" if matches!(op, Operation::Read | Operation::Write) => {
            let id = required_str(req, "token")?;
            // revoked, expired, unknown or not a token at all: one answer,
            // 403 as in Vault (lookup-accessor answers 400, as Vault too)
            let e = core
                .tokens
                .lookup(&id)
                .await?
                .ok_or_else(|| ApiError::new(403, "bad token"))?;
            let v = lookup_json(&e, Some(&id), core.tokens.now());
            Ok(Response::data(with_identity(core, &e, v).await?))
        }
        "lookup-accessor" if op == Operation::Write => {
            let acc = required_str(req, "accessor")?;
            let e = core
                .tokens
                .lookup_accessor(&acc)
                .await?
                .ok_or_else(|| ApiError::bad_request("invalid accessor"))?;
            let v = lookup_json(&e, None, core.tokens.now());
            Ok(Response::data(with_identity(core, &e, v).await?))
        }
        "renew-self" if op == Operation::Write => {
            let inc = increment(req)?;
            let e = renew(core, req, auth.token(), inc).await?;
            Ok(renewed(auth.token_id(), e))
        }
        "renew" if op == Operation::Write => {
            let id = required_str(req, "token")?;
            let inc = increment(req)?;
            let e = core
                .tokens
                .lookup(&id)
                .await?
                .ok_or_else(|| ApiError::bad_request("invalid token"))?;
            let e = renew(core, req, &e, inc).await?;
            Ok(renewed(&id, e))
        }
        "renew-accessor" if op == Operation::Write => {
            let acc = required_str(req, "accessor")?;
            let inc = increment(req)?;
            let e = core
                .tokens
                .lookup_accessor(&acc)
                .await?
                .ok_or_else(|| ApiError::bad_request("invalid accessor"))?;
            let e = renew(core, req, &e, inc).await?;
            Ok(renewed("", e))
        }
        "revoke-self" if op == Operation::Write => {
            core.tokens.revoke_tree(&auth.token().hash).await?;
            Ok(Response::no_content())
        }
        "revoke" if op == Operation::Write => {
            let id = required_str(req, "token")?;
            // Vault answers 204 for an unknown token too: nothing to reveal.
            if let Some(e) = core.tokens.lookup(&id).await? {
                core.tokens.revoke_tree(&e.hash).await?;
            }
            Ok(Response::no_content())
        }
        "revoke-accessor" if op == Operation::Write => {
            let acc = required_str(req, "accessor")?;
            let e = core
                .tokens
                .lookup_accessor(&acc)
                .await?
                .ok_or_else(|| ApiError::bad_request("invalid accessor"))?;
            core.tokens.revoke_tree(&e.hash).await?;
            Ok(Response::no_content())
        }
        "revoke-orphan" if op == Operation::Write => {
            let id = required_str(req, "token")?;
            if let Some(e) = core.tokens.lookup(&id).await? {
                core.tokens.revoke_orphan(&e.hash).await?;
            }
            Ok(Response::no_content())
        }
        "accessors" | "accessors/" if op == Operation::List => {
            let keys = core.tokens.accessors().await?;
            Ok(Response::data(json!({ "keys": keys })))
        }
        "roles/" if op == Operation::List => {
            let keys = token_roles::list(&core.barrier).await?;
            if keys.is_empty() {
                return Err(ApiError::not_found());
            }
            Ok(Response::data(json!({ "keys": keys })))
        }
        "roles/" => Err(ApiError::unsupported_operation()),
        _ if rest.starts_with("roles/") => role(core, auth, &rest["roles/".len()..]).await,
        _ if rest.starts_with("create/") => {
            if op != Operation::Write {
                return Err(ApiError::unsupported_operation());
            }
            // canonical already (canonical.rs refused anything else)
            let name = &rest["create/".len()..];
            let role = token_roles::get(&core.barrier, name)
                .await?
                .ok_or_else(|| ApiError::bad_request(format!("unknown role {name}")))?;
            create(core, auth, false, Some(role)).await
        }
        _ if rest.starts_with("lookup/")
            || rest.starts_with("lookup-self")
            || rest.starts_with("create")
            || rest.starts_with("renew")
            || rest.starts_with("revoke")
            || rest.starts_with("lookup") =>
        {
            Err(ApiError::unsupported_operation())
        }
        _ => Err(ApiError::unsupported_path()),
    }
}

/// `auth/token/roles/<name>`: read, create/update, delete. The name is
/// canonical (canonical.rs); creating needs `create`, changing an existing
/// role `update` (the core's existence check, as Vault's).
async fn role(core: &Arc<Core>, auth: &Authorized, name: &str) -> Result<Response, ApiError> {
    let req = auth.request();
    if req.operation == Operation::List {
        return Err(ApiError::unsupported_operation());
    }
    if !token_roles::is_canonical_role_name(name) {
        return Err(token_roles::invalid_role_name());
    }
    match req.operation {
        Operation::Read => {
            let r = token_roles::get(&core.barrier, name)
                .await?
                .ok_or_else(ApiError::not_found)?;
            Ok(Response::data(r.to_json()))
        }
        Operation::Write => {
            let may = |create: bool| {
                auth.allows(if create {
                    Capability::Create
                } else {
                    Capability::Update
                })
            };
            let max_ttl = core.tokens.limits().max_ttl;
            let warnings = token_roles::write(&core.barrier, req, name, max_ttl, may).await?;
            if warnings.is_empty() {
                return Ok(Response::no_content());
            }
            let mut r = Response::data(Value::Null);
            r.data = None;
            r.warnings = warnings;
            Ok(r)
        }
        Operation::Delete => {
            token_roles::delete(&core.barrier, name).await?;
            Ok(Response::no_content())
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

fn increment(req: &Request) -> Result<i64, ApiError> {
    Ok(match req.field("increment") {
        Some(v) => fields::duration_secs(&v, "increment")?,
        None => 0,
    })
}

/// Renew a token. One created against a role renews by the role as it is
/// now (Vault's `authRenew`): the role's period, and its explicit max TTL
/// (the lesser of it and the token's own, so a renewal never outlives a
/// limit the token was created with); a role deleted since → no renewal.
async fn renew(
    core: &Arc<Core>,
    req: &Request,
    e: &TokenEntry,
    increment: i64,
) -> Result<Renewed, ApiError> {
    if !e.mount_accessor.is_empty() {
        // issued by an auth method: it decides (the user still exists with
        // the same policies; its period and max TTL as they are now)
        let certs = req.client_certs.as_deref().map(Vec::as_slice);
        let by_method = core.auth_method_renewal(e, certs).await?;
        return core.tokens.renew(&by_method, increment).await;
    }
    if e.role.is_empty() {
        return core.tokens.renew(e, increment).await;
    }
    let role = token_roles::get(&core.barrier, &e.role)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                500,
                format!(
                    "failed to renew entry: original token role {:?} could not be found, not renewing",
                    e.role
                ),
            )
        })?;
    let mut by_role = e.clone();
    by_role.period = role.effective_period();
    let role_max = role.effective_explicit_max_ttl();
    if role_max > 0 && (by_role.explicit_max_ttl == 0 || role_max < by_role.explicit_max_ttl) {
        by_role.explicit_max_ttl = role_max;
    }
    // a role's period above the system max is capped at it (Vault's warning)
    let max_ttl = core.tokens.limits().max_ttl;
    let mut warnings = Vec::new();
    if by_role.period > max_ttl {
        warnings.push(crate::token::capped_warning(
            "period",
            by_role.period,
            max_ttl,
        ));
        by_role.period = max_ttl;
    }
    let mut g = core.tokens.renew(&by_role, increment).await?;
    warnings.append(&mut g.warnings);
    g.warnings = warnings;
    Ok(g)
}

fn renewed(id: &str, g: Renewed) -> Response {
    let mut r = Response::data(Value::Null);
    r.data = None;
    r.auth = Some(auth_block(id, &g.entry, g.now));
    r.warnings = g.warnings;
    r
}

/// `auth/token/create`, `create-orphan` and `create/<role>` (Vault's
/// `handleCreateCommon`). With a role: the role's policy lists replace the
/// parent subset rule, its `orphan` needs no sudo, its period, explicit max
/// TTL, use limit and renewability apply, and the token's path is
/// `auth/token/create/<role>[/<path_suffix>]`.
async fn create(
    core: &Arc<Core>,
    auth: &Authorized,
    orphan_endpoint: bool,
    role: Option<TokenRole>,
) -> Result<Response, ApiError> {
    let req = auth.request();
    let parent = auth.token();
    let d = &req.data;
    let sudo = auth.is_sudo();
    let parent_root = parent.is_root();
    // Vault's rule: a token with a use limit cannot create tokens (a child
    // without one would lift the limit)
    if parent.num_uses != 0 {
        return Err(ApiError::bad_request(
            "restricted use token cannot generate child tokens",
        ));
    }

    let no_parent = d
        .get("no_parent")
        .map(|v| fields::boolean(v, "no_parent"))
        .transpose()?
        .unwrap_or(false);
    // a role decides orphan-ness itself (no sudo needed); `no_parent` is
    // ignored then, as in Vault
    let orphan = match &role {
        Some(r) => r.orphan,
        None => orphan_endpoint || no_parent,
    };
    if role.is_none() && orphan && !sudo {
        return Err(ApiError::bad_request(
            "root or sudo privileges required to create orphan token",
        ));
    }
    let id = d
        .get("id")
        .map(|v| fields::string(v, "id"))
        .transpose()?
        .filter(|s| !s.is_empty());
    if id.is_some() && !parent_root {
        return Err(ApiError::bad_request(
            "root or sudo privileges required to specify token id",
        ));
    }
    if let Some(t) = d
        .get("type")
        .map(|v| fields::string(v, "type"))
        .transpose()?
        && !t.is_empty()
        && t != "service"
        && t != "default"
    {
        return Err(ApiError::bad_request(
            "unsupported token type: only service tokens are available",
        ));
    }

    let no_default = d
        .get("no_default_policy")
        .map(|v| fields::boolean(v, "no_default_policy"))
        .transpose()?
        .unwrap_or(false);
    let role_lists = role.as_ref().filter(|r| {
        !(r.allowed_policies.is_empty()
            && r.disallowed_policies.is_empty()
            && r.allowed_policies_glob.is_empty()
            && r.disallowed_policies_glob.is_empty())
    });
    let mut policies: Vec<String> = if let Some(r) = role_lists {
        role_policies(r, &token_roles::requested_policies(d)?, no_default, parent)?
    } else {
        let mut policies: Vec<String> = match d.get("policies") {
            Some(v) => fields::string_list(v, "policies")?
                .into_iter()
                .map(|p| p.trim().to_lowercase())
                .collect(),
            None => parent
                .policies
                .iter()
                .filter(|p| *p != "root" || parent_root)
                .cloned()
                .collect(),
        };
        policies.retain(|p| !p.is_empty());
        if !no_default
            && !policies.iter().any(|p| p == "default")
            && !policies.iter().any(|p| p == "root")
        {
            policies.push("default".into());
        }
        policies
    };
    if no_default {
        policies.retain(|p| p != "default");
    }
    crate::wrapping::refuse_reserved_policy(&policies)?;
    policies.sort();
    policies.dedup();
    // a role with policy lists replaces the parent subset rule (Vault's
    // roles "allow a subset of policies disjoint from the parent's")
    if role_lists.is_none() && !parent_root && !sudo {
        // a child can never hold a policy its parent does not (Vault's rule)
        let extra: Vec<&String> = policies
            .iter()
            .filter(|p| *p != "default" && !parent.policies.contains(p))
            .collect();
        if !extra.is_empty() {
            return Err(ApiError::bad_request(
                "child policies must be subset of parent",
            ));
        }
    }
    if policies.iter().any(|p| p == "root") && !parent_root {
        return Err(ApiError::bad_request(
            "root or sudo privileges required to create a token with root policy",
        ));
    }
    if policies.is_empty() {
        return Err(ApiError::bad_request("token must have at least one policy"));
    }
    let mut warnings = Vec::new();
    for p in &policies {
        if !core.policies.exists(p) {
            warnings.push(format!("Policy {p:?} does not exist"));
        }
    }

    // an entity alias on the token method (Vault): the token acts for that
    // alias's entity (created if new), not its parent's
    let mut alias_entity = None;
    if let Some(alias) = d
        .get("entity_alias")
        .map(|v| fields::string(v, "entity_alias"))
        .transpose()?
        .filter(|a| !a.is_empty())
    {
        let Some(r) = &role else {
            return Err(ApiError::bad_request(
                "'entity_alias' is only allowed in combination with token role",
            ));
        };
        let lower = alias.to_lowercase();
        let allowed = r.allowed_entity_aliases.as_deref().unwrap_or_default();
        if !allowed.contains(&lower) && !token_roles::glob_any(allowed, &lower) {
            return Err(ApiError::bad_request("invalid 'entity_alias' value"));
        }
        let mount = crate::auth_methods::token_mount();
        alias_entity = Some(
            crate::identity::entity_for_login(
                core,
                crate::identity::LoginAlias {
                    mount: &mount,
                    // the value the allow-list decided on: `Web-1` and
                    // `web-1` are one alias, never two entities
                    name: lower,
                    metadata: Default::default(),
                    groups: None,
                },
            )
            .await?,
        );
    }

    let ttl = d
        .get("ttl")
        .or_else(|| d.get("lease"))
        .map(|v| fields::duration_secs(v, "ttl"))
        .transpose()?
        .unwrap_or(0);
    let mut explicit_max_ttl = d
        .get("explicit_max_ttl")
        .map(|v| fields::duration_secs(v, "explicit_max_ttl"))
        .transpose()?
        .unwrap_or(0);
    let mut period = d
        .get("period")
        .map(|v| fields::duration_secs(v, "period"))
        .transpose()?
        .unwrap_or(0);
    if period > 0 && !sudo {
        return Err(ApiError::bad_request(
            "root or sudo privileges required to create periodic token",
        ));
    }
    let mut num_uses = d
        .get("num_uses")
        .map(|v| fields::int(v, "num_uses"))
        .transpose()?
        .unwrap_or(0);
    if num_uses < 0 {
        return Err(ApiError::bad_request("num_uses cannot be negative"));
    }
    let mut role_warnings = Vec::new();
    if let Some(r) = &role {
        // the lesser of the request's and the role's (0: none), as Vault
        let role_max = r.effective_explicit_max_ttl();
        if role_max != 0 {
            if explicit_max_ttl == 0 {
                explicit_max_ttl = role_max;
            } else {
                explicit_max_ttl = explicit_max_ttl.min(role_max);
                role_warnings.push(format!("Explicit max TTL specified both during creation call and in role; using the lesser value of {explicit_max_ttl} seconds"));
            }
        }
        let role_period = r.effective_period();
        if role_period != 0 {
            if period == 0 {
                period = role_period;
            } else {
                period = period.min(role_period);
                role_warnings.push(format!("Period specified both during creation call and in role; using the lesser value of {period} seconds"));
            }
        }
        if r.token_num_uses != 0 && (num_uses == 0 || r.token_num_uses < num_uses) {
            num_uses = r.token_num_uses;
        }
    }
    // an expiring root token must not mint one that never expires (Vault)
    if policies.iter().any(|p| p == "root")
        && parent.expire_time != 0
        && ttl == 0
        && explicit_max_ttl == 0
        && period == 0
    {
        return Err(ApiError::bad_request(
            "expiring root tokens cannot create non-expiring root tokens",
        ));
    }
    let renewable = d
        .get("renewable")
        .map(|v| fields::boolean(v, "renewable"))
        .transpose()?
        .unwrap_or(true)
        && role.as_ref().is_none_or(|r| r.renewable);
    let display = d
        .get("display_name")
        .map(|v| fields::string(v, "display_name"))
        .transpose()?
        .unwrap_or_default();
    let display_name = {
        let cleaned: String = display
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
            .collect();
        if cleaned.is_empty() {
            "token".to_string()
        } else {
            format!("token-{cleaned}")
        }
    };
    let meta: Map<String, Value> = match d.get("meta") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o
            .iter()
            .map(|(k, v)| Ok((k.clone(), json!(fields::string(v, k)?))))
            .collect::<Result<_, ApiError>>()?,
        Some(_) => return Err(ApiError::bad_request("meta must be a map of strings")),
    };
    let (id_out, entry, capped) = core
        .tokens
        .create(NewToken {
            id,
            parent: if orphan {
                String::new()
            } else {
                parent.hash.clone()
            },
            policies,
            meta,
            display_name,
            num_uses,
            ttl,
            explicit_max_ttl,
            period,
            renewable,
            path: match &role {
                Some(r) if r.path_suffix.is_empty() => format!("auth/token/create/{}", r.name),
                Some(r) => format!("auth/token/create/{}/{}", r.name, r.path_suffix),
                None if orphan_endpoint => "auth/token/create-orphan".into(),
                None => "auth/token/create".into(),
            },
            role: role.as_ref().map(|r| r.name.clone()).unwrap_or_default(),
            // a child is bound where its parent is (Vault): a token bound to
            // CIDRs must not mint an unbound one, orphan or not
            bound_cidrs: parent.bound_cidrs.clone(),
            wrapped: None,
            mount_accessor: String::new(),
            max_ttl: 0,
            // a child acts for its parent's entity; an orphan for none
            // (OpenBao): it must not carry its creator's identity policies
            entity_id: match alias_entity {
                Some(id) => id,
                None if orphan => String::new(),
                None => parent.entity_id.clone(),
            },
        })
        .await?;
    let mut r = Response::data(Value::Null);
    r.data = None;
    // the TTL granted, from the instant it was computed (not a second later)
    r.auth = Some(auth_block(&id_out, &entry, entry.creation_time));
    role_warnings.extend(warnings);
    role_warnings.extend(capped);
    r.warnings = role_warnings;
    Ok(r)
}

/// The policies of a token created against a role with policy lists
/// (Vault's `handleCreateCommon`, role branch): the request's policies
/// must be within the role's allowed ones (or globs); with none requested,
/// the role's allowed policies (else the parent's); `default` added unless
/// the request, the role or its disallowed lists say otherwise; nothing
/// disallowed by the role.
fn role_policies(
    role: &TokenRole,
    requested: &[String],
    no_default: bool,
    parent: &TokenEntry,
) -> Result<Vec<String>, ApiError> {
    use token_roles::{glob_any, go_quote_list, sanitize_policies};
    let add_default = !no_default
        && !role.token_no_default_policy
        && !role.disallowed_policies.iter().any(|p| p == "default")
        && !glob_any(&role.disallowed_policies_glob, "default");
    let mut out = if requested.is_empty() {
        Vec::new()
    } else {
        sanitize_policies(requested, add_default)
    };
    if !role.allowed_policies.is_empty() || !role.allowed_policies_glob.is_empty() {
        let allowed = sanitize_policies(&role.allowed_policies, add_default);
        if out.is_empty() {
            out = allowed;
        } else {
            let globs = sanitize_policies(&role.allowed_policies_glob, false);
            if out
                .iter()
                .any(|p| !allowed.contains(p) && !glob_any(&globs, p))
            {
                return Err(ApiError::bad_request(format!(
                    "token policies ({}) must be subset of the role's allowed policies ({}) or glob policies ({})",
                    go_quote_list(&out),
                    go_quote_list(&allowed),
                    go_quote_list(&globs)
                )));
            }
        }
    } else if out.is_empty() {
        out = sanitize_policies(&parent.policies, add_default);
    }
    if let Some(p) = out.iter().find(|p| {
        role.disallowed_policies.contains(p) || glob_any(&role.disallowed_policies_glob, p)
    }) {
        return Err(ApiError::bad_request(format!(
            "token policy {p:?} is disallowed by this role"
        )));
    }
    Ok(out)
}
