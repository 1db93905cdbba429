//! `auth/token/*`: create (child and orphan), lookup, renew and revoke, by
//! token or accessor, with Vault's shapes. Lookup responses echo the token id
//! only when the caller presented it; by accessor they never do.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::core::{Authorized, Core};
use crate::logical::{ApiError, AuthBlock, Operation, Request, Response, fields};
use crate::token::{NewToken, Renewed, TokenEntry};

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
        "entity_id": "",
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
    v["id"] = json!(id.unwrap_or(""));
    v
}

fn auth_block(id: &str, e: &TokenEntry, now: i64) -> AuthBlock {
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
        entity_id: String::new(),
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
            create(core, auth, rest == "create-orphan").await
        }
        "lookup-self" if matches!(op, Operation::Read | Operation::Write) => Ok(Response::data(
            lookup_json(auth.token(), Some(auth.token_id()), core.tokens.now()),
        )),
        "lookup" if matches!(op, Operation::Read | Operation::Write) => {
            let id = required_str(req, "token")?;
            // revoked, expired, unknown or not a token at all: one answer,
            // 403 as in Vault (lookup-accessor answers 400, as Vault too)
            let e = core
                .tokens
                .lookup(&id)
                .await?
                .ok_or_else(|| ApiError::new(403, "bad token"))?;
            Ok(Response::data(lookup_json(
                &e,
                Some(&id),
                core.tokens.now(),
            )))
        }
        "lookup-accessor" if op == Operation::Write => {
            let acc = required_str(req, "accessor")?;
            let e = core
                .tokens
                .lookup_accessor(&acc)
                .await?
                .ok_or_else(|| ApiError::bad_request("invalid accessor"))?;
            Ok(Response::data(lookup_json(&e, None, core.tokens.now())))
        }
        "renew-self" if op == Operation::Write => {
            let inc = increment(req)?;
            let e = core.tokens.renew(auth.token(), inc).await?;
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
            let e = core.tokens.renew(&e, inc).await?;
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
            let e = core.tokens.renew(&e, inc).await?;
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
        "roles" | "roles/" if op == Operation::List => Err(ApiError::not_found()),
        _ if rest.starts_with("create/") => Err(ApiError::bad_request("unknown role")),
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

fn increment(req: &Request) -> Result<i64, ApiError> {
    Ok(match req.field("increment") {
        Some(v) => fields::duration_secs(&v, "increment")?,
        None => 0,
    })
}

fn renewed(id: &str, g: Renewed) -> Response {
    let mut r = Response::data(Value::Null);
    r.data = None;
    r.auth = Some(auth_block(id, &g.entry, g.now));
    r.warnings = g.warnings;
    r
}

async fn create(
    core: &Arc<Core>,
    auth: &Authorized,
    orphan_endpoint: bool,
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
    let orphan = orphan_endpoint || no_parent;
    if orphan && !sudo {
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
    let no_default = d
        .get("no_default_policy")
        .map(|v| fields::boolean(v, "no_default_policy"))
        .transpose()?
        .unwrap_or(false);
    policies.retain(|p| !p.is_empty());
    if no_default {
        policies.retain(|p| p != "default");
    } else if !policies.iter().any(|p| p == "default") && !policies.iter().any(|p| p == "root") {
        policies.push("default".into());
    }
    policies.sort();
    policies.dedup();
    if !parent_root && !sudo {
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

    let ttl = d
        .get("ttl")
        .or_else(|| d.get("lease"))
        .map(|v| fields::duration_secs(v, "ttl"))
        .transpose()?
        .unwrap_or(0);
    let explicit_max_ttl = d
        .get("explicit_max_ttl")
        .map(|v| fields::duration_secs(v, "explicit_max_ttl"))
        .transpose()?
        .unwrap_or(0);
    let period = d
        .get("period")
        .map(|v| fields::duration_secs(v, "period"))
        .transpose()?
        .unwrap_or(0);
    if period > 0 && !sudo {
        return Err(ApiError::bad_request(
            "root or sudo privileges required to create periodic token",
        ));
    }
    let num_uses = d
        .get("num_uses")
        .map(|v| fields::int(v, "num_uses"))
        .transpose()?
        .unwrap_or(0);
    if num_uses < 0 {
        return Err(ApiError::bad_request("num_uses cannot be negative"));
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
        .unwrap_or(true);
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
            path: if orphan_endpoint {
                "auth/token/create-orphan".into()
            } else {
                "auth/token/create".into()
            },
        })
        .await?;
    let mut r = Response::data(Value::Null);
    r.data = None;
    // the TTL granted, from the instant it was computed (not a second later)
    r.auth = Some(auth_block(&id_out, &entry, entry.creation_time));
    warnings.extend(capped);
    r.warnings = warnings;
    Ok(r)
}
