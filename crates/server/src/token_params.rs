//! The `token_*` fields every auth method's users and roles share (Vault's
//! `tokenutil`), and issuing and renewing the tokens they describe.
//!
//! A login that passed its method's checks calls [`issue`]; a renewal of a
//! token the method issued calls [`renew`] with the user's or role's
//! parameters as they are now.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::core::Core;
use crate::logical::{ApiError, Request, Response, fields};
use crate::mounts::MountEntry;
use crate::token::{NewToken, TokenEntry};
use crate::token_roles::sanitize_policies;

/// The token settings of a user or role. Durations in seconds; 0 means
/// "the mount's".
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct TokenParams {
    pub token_policies: Vec<String>,
    pub token_ttl: i64,
    pub token_max_ttl: i64,
    pub token_explicit_max_ttl: i64,
    pub token_period: i64,
    pub token_num_uses: i64,
    pub token_no_default_policy: bool,
    /// Canonical CIDRs (`10.0.0.0/8`): where the tokens may be used from
    /// (and, for userpass, where the user may log in from).
    pub token_bound_cidrs: Vec<String>,
    /// `default`, `service` or `default-service` (service tokens only).
    pub token_type: String,
}

impl TokenParams {
    /// New parameters, as a create without token fields leaves them.
    pub fn new() -> Self {
        TokenParams {
            token_type: "default".into(),
            ..TokenParams::default()
        }
    }

    /// The fields as Vault reads them back (with the legacy names beside).
    pub fn write_json(&self, out: &mut Map<String, Value>) {
        let v = json!({
            "token_policies": self.token_policies,
            "policies": self.token_policies,
            "token_ttl": self.token_ttl,
            "token_max_ttl": self.token_max_ttl,
            "token_explicit_max_ttl": self.token_explicit_max_ttl,
            "token_period": self.token_period,
            "period": self.token_period,
            "token_num_uses": self.token_num_uses,
            "token_no_default_policy": self.token_no_default_policy,
            "token_bound_cidrs": self.token_bound_cidrs,
            "token_type": self.token_type,
        });
        if let Value::Object(m) = v {
            out.extend(m);
        }
    }

    /// Apply the token fields of a create or update; fields not given keep
    /// their value. `legacy` names the old field names the method accepts
    /// beside the `token_` ones (`ttl`, `max_ttl`, `bound_cidrs`...).
    pub fn apply(&mut self, req: &Request) -> Result<(), ApiError> {
        if let Some(p) = policies_field(req)? {
            self.token_policies = p;
        }
        if let Some(d) = duration_pair(req, "token_ttl", "ttl")? {
            self.token_ttl = d;
        }
        if let Some(d) = duration_pair(req, "token_max_ttl", "max_ttl")? {
            self.token_max_ttl = d;
        }
        if let Some(d) = duration_pair(req, "token_explicit_max_ttl", "explicit_max_ttl")? {
            self.token_explicit_max_ttl = d;
        }
        if let Some(d) = duration_pair(req, "token_period", "period")? {
            self.token_period = d;
        }
        if let Some(v) = req.data.get("token_num_uses") {
            let n = fields::int(v, "token_num_uses")?;
            if n < 0 {
                return Err(ApiError::bad_request("token_num_uses cannot be negative"));
            }
            self.token_num_uses = n;
        }
        if let Some(v) = req.data.get("token_no_default_policy") {
            self.token_no_default_policy = fields::boolean(v, "token_no_default_policy")?;
        }
        if let Some(v) = req
            .data
            .get("token_bound_cidrs")
            .or_else(|| req.data.get("bound_cidrs"))
        {
            self.token_bound_cidrs = cidr_list(v, "token_bound_cidrs")?;
        }
        if let Some(v) = req.data.get("token_type") {
            let t = fields::string(v, "token_type")?;
            self.token_type = match t.as_str() {
                "" | "default" | "default-service" => "default".into(),
                "service" => "service".into(),
                "batch" | "default-batch" => {
                    return Err(ApiError::bad_request(format!(
                        "'token_type' {t:?} is not supported: this server issues service tokens only"
                    ))
                    .audited_as("'token_type' batch is not supported"));
                }
                _ => {
                    return Err(
                        ApiError::bad_request(format!("invalid 'token_type' value {t:?}"))
                            .audited_as("invalid 'token_type' value"),
                    );
                }
            };
        }
        if self.token_max_ttl > 0 && self.token_ttl > self.token_max_ttl {
            return Err(ApiError::bad_request(
                "'token_ttl' cannot be greater than 'token_max_ttl'",
            ));
        }
        Ok(())
    }

    /// The TTL and max TTL a token gets on `mount` (0 = the mount's).
    fn ttls(&self, core: &Core, mount: &MountEntry) -> (i64, i64) {
        let (default_ttl, mount_max) = core.auth_mount_ttls(mount);
        let max_ttl = match self.token_max_ttl {
            0 => mount_max,
            m => m.min(mount_max),
        };
        let ttl = match self.token_ttl {
            0 => default_ttl,
            t => t,
        };
        (ttl, max_ttl)
    }
}

fn duration_pair(req: &Request, new: &str, old: &str) -> Result<Option<i64>, ApiError> {
    match req.data.get(new).or_else(|| req.data.get(old)) {
        None => Ok(None),
        Some(v) => Ok(Some(fields::duration_secs(v, new)?)),
    }
}

/// `token_policies` (or `policies`) as a canonical list; `root` refused.
pub fn policies_field(req: &Request) -> Result<Option<Vec<String>>, ApiError> {
    match req
        .data
        .get("token_policies")
        .or_else(|| req.data.get("policies"))
    {
        None => Ok(None),
        Some(v) => {
            let list = sanitize_policies(&fields::string_list(v, "token_policies")?, false);
            crate::wrapping::refuse_reserved_policy(&list)?;
            if list.iter().any(|p| p == "root") {
                // Vault refuses at login ("auth methods cannot create root
                // tokens"); here the user or role that could never log in
                // is refused
                return Err(ApiError::bad_request(
                    "token_policies cannot hold \"root\": auth methods cannot create root tokens",
                ));
            }
            Ok(Some(list))
        }
    }
}

/// A list of IP addresses or CIDR blocks (a JSON array or a comma-separated
/// string) as canonical, sorted, deduplicated CIDRs. `name` is the field
/// the error names.
pub fn cidr_list(v: &Value, name: &str) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    for s in fields::string_list(v, name)? {
        let s = s.trim();
        if s.is_empty() {
            continue;
        }
        let c = palisade_core::net::Cidr::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid {name} entry {s:?}: expected an IP address or a CIDR block"
            ))
            .audited_as("invalid CIDR list entry: expected an IP address or a CIDR block")
        })?;
        out.push(c.to_string());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// What a successful login hands to [`issue`].
pub struct Login<'a> {
    pub mount: &'a MountEntry,
    pub params: &'a TokenParams,
    pub meta: Map<String, Value>,
    /// `<method>-<name>` as Vault shows it.
    pub display_name: String,
    /// The login path, `auth/<mount>/login...`.
    pub path: String,
    /// The identity alias the login names (username, role ID, claim...).
    pub alias: String,
    /// The alias's metadata (kept on the entity alias).
    pub alias_metadata: std::collections::BTreeMap<String, String>,
    /// Group alias names the login carried (JWT `groups_claim`), if the
    /// method reports groups.
    pub groups: Option<Vec<String>>,
}

/// Create the token a login earned: an orphan issued by the method, valid
/// only while it stays enabled (checked under the mount gate, so a method
/// disabled meanwhile issues nothing).
pub async fn issue(core: &Core, login: Login<'_>) -> Result<Response, ApiError> {
    let p = login.params;
    let (ttl, max_ttl) = p.ttls(core, login.mount);
    let policies = sanitize_policies(&p.token_policies, !p.token_no_default_policy);
    if policies.iter().any(|p| p == "root") {
        return Err(ApiError::bad_request(
            "auth methods cannot create root tokens",
        ));
    }
    let _mounts = core.mount_gate_read().await;
    if !core.auth_method_enabled(&login.mount.accessor)? {
        return Err(ApiError::permission_denied());
    }
    // one identity across methods: the alias's entity (created at its
    // first login); a disabled entity does not log in
    let entity_id = crate::identity::entity_for_login(
        core,
        crate::identity::LoginAlias {
            mount: login.mount,
            name: login.alias,
            metadata: login.alias_metadata,
            groups: login.groups,
        },
    )
    .await?;
    let identity = core.identity.policies_for(core, &entity_id).await?;
    let (id, entry, warnings) = core
        .tokens
        .create(NewToken {
            policies,
            meta: login.meta,
            display_name: login.display_name,
            num_uses: p.token_num_uses,
            ttl,
            explicit_max_ttl: p.token_explicit_max_ttl,
            period: p.token_period,
            renewable: true,
            path: login.path,
            mount_accessor: login.mount.accessor.clone(),
            max_ttl,
            bound_cidrs: p.token_bound_cidrs.clone(),
            entity_id,
            ..NewToken::default()
        })
        .await?;
    let now = entry.creation_time;
    let mut r = Response::data(Value::Null);
    r.data = None;
    let mut block = crate::token_api::auth_block(&id, &entry, now);
    if let crate::identity::IdentityPolicies::Some(extra) = identity
        && !extra.is_empty()
    {
        // Vault: `policies` is all of them, `identity_policies` the added ones
        block.policies.extend(extra.iter().cloned());
        block.policies.sort();
        block.policies.dedup();
        block.identity_policies = Some(extra);
    }
    r.auth = Some(block);
    r.warnings = warnings;
    Ok(r)
}

/// Vault's `EquivalentPolicies`: the same set once `default` is set aside.
fn equivalent_policies(a: &[String], b: &[String]) -> bool {
    let set = |l: &[String]| {
        l.iter()
            .filter(|p| p.as_str() != "default")
            .cloned()
            .collect::<std::collections::BTreeSet<String>>()
    };
    set(a) == set(b)
}

/// What renewing a token the method issued may grant (Vault's
/// `pathLoginRenew`): the user or role (`p`, as it is now; None when it is
/// gone) must still have the token's policies; the renewal follows its
/// period and max TTL as they are now.
pub fn renew(
    core: &Core,
    mount: &MountEntry,
    p: Option<&TokenParams>,
    what: &str,
    e: &TokenEntry,
) -> Result<TokenEntry, ApiError> {
    let p = p.ok_or_else(|| {
        ApiError::bad_request(format!(
            "failed to renew entry: the {what} no longer exists, not renewing"
        ))
    })?;
    if !equivalent_policies(&p.token_policies, &e.policies) {
        return Err(ApiError::bad_request(
            "failed to renew entry: policies have changed, not renewing",
        ));
    }
    let (ttl, max_ttl) = p.ttls(core, mount);
    let mut next = e.clone();
    next.period = p.token_period;
    next.max_ttl = if e.max_ttl > 0 {
        e.max_ttl.min(max_ttl)
    } else {
        max_ttl
    };
    // a renewal without an increment extends by the TTL as it is now
    next.creation_ttl = ttl;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_equivalence_ignores_default() {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(equivalent_policies(
            &v(&["a", "b"]),
            &v(&["b", "default", "a"])
        ));
        assert!(!equivalent_policies(&v(&["a"]), &v(&["a", "b"])));
    }

    #[test]
    fn cidr_lists_are_canonical_and_bad_entries_refused() {
        assert_eq!(
            cidr_list(&json!("10.0.0.1, 10.0.0.0/8,10.0.0.0/8"), "cidr_list").unwrap(),
            vec!["10.0.0.0/8".to_string(), "10.0.0.1/32".to_string()]
        );
        let e = cidr_list(&json!(["10.0.0.0/33"]), "cidr_list").unwrap_err();
        assert_eq!(e.status, 400);
        assert!(
            e.messages[0].starts_with("invalid cidr_list entry"),
            "{e:?}"
        );
    }
}
