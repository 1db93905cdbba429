//! Authorization: default deny, Cedar policies over the principal, the action
//! (HTTP method) and the resource (route), with request attributes in the
//! context. Policies are parsed and validated against the schema below when
//! loaded, so a typo in an attribute name is a load error, not a silent deny.
//!
//! Entities: principals are `User::"<sub>"` (JWT), `Consumer::"<name>"` (API
//! key), `Workload::"<cert name>"` (mTLS) or `Anonymous::"anonymous"`; the
//! resource is `Route::"<route name>"`; the action is `Action::"<METHOD>"`.
//! See docs/gateway-config.md for examples.
//!
//! [`Permit`] is the proof the upstream step requires; only this module can
//! construct one.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use cedar_policy::{
    Context, Decision, Entities, EntityId, EntityTypeName, EntityUid, PolicySet, Request,
    RestrictedExpression, Schema, ValidationMode, Validator,
};

use crate::steps::principal::{Method, Principal};

pub const SCHEMA: &str = r#"
entity User, Consumer, Workload, Anonymous, Route;
action "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS" appliesTo {
  principal: [User, Consumer, Workload, Anonymous],
  resource: [Route],
  context: {
    method: String,
    path: String,
    path_lower: String,
    host: String,
    ip: String,
    auth_method: String,
    issuer: String,
    scopes: Set<String>,
    roles: Set<String>,
    api_key_id: String,
    cert_uris: Set<String>,
    cert_dns: Set<String>,
  }
};
"#;

/// What a policy protects: a route, by name (`Route::"<name>"`).
pub trait Protected {
    fn name(&self) -> &str;
}

impl Protected for &str {
    fn name(&self) -> &str {
        self
    }
}

impl<T: Protected + ?Sized> Protected for Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
}

/// Proof that authorization allowed this principal to make this request
/// on this route. Fields are private and there is no public constructor:
/// only [`Authorizer::authorize`] makes one, so code that forwards upstream
/// cannot skip the check. The permit keeps the request exactly as Cedar saw
/// it (method, canonical path and host) and the route it was decided for:
/// the upstream step forwards that request, to that route's pool, taking
/// the permit by value (one permit, one request).
#[derive(Debug)]
pub struct Permit<R> {
    route: R,
    principal: Principal,
    resource: Resource,
    policies: Arc<str>,
}

impl<R> Permit<R> {
    pub fn route(&self) -> &R {
        &self.route
    }
    pub fn principal(&self) -> &Principal {
        &self.principal
    }
    /// The request as the policies saw it.
    pub fn resource(&self) -> &Resource {
        &self.resource
    }
    /// The ids of the policies that allowed the request (for the security log).
    pub fn policies(&self) -> &str {
        &self.policies
    }
}

/// The attributes of the request that policies may use, canonical (the
/// pipeline made them so once): the upstream step acts on these values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub method: hyper::Method,
    /// The normalised path.
    pub path: String,
    /// The canonical host (lowercase, no trailing dot, no port).
    pub host: String,
    /// The client address as text.
    pub ip: String,
}

/// Why a request was not permitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// `no_policy_permits`, or `forbidden_by:<policy ids>`.
    #[error("{0}")]
    Policy(Arc<str>),
    /// Cedar could not evaluate the request (an internal error: denied).
    #[error("authorization_error")]
    Evaluation(String),
}

/// Policies that cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("invalid Cedar policies: {0}")]
    Invalid(String),
    #[error("Cedar policies do not validate: {0}")]
    Validation(String),
    #[error("internal schema error: {0}")]
    Schema(String),
}

pub struct Authorizer {
    policies: PolicySet,
    authorizer: cedar_policy::Authorizer,
    /// Bit i set: some policy reads context attribute `CONTEXT_ATTRS[i]`.
    /// Only those are built per request (building a Cedar context costs
    /// about as much as evaluating the policies).
    context_needed: u16,
    /// Entity type names, parsed once (parsing runs Cedar's parser).
    types: [EntityTypeName; 6],
    /// Decisions by exact request (see [`Authorizer::authorize`]), one map
    /// per worker thread so workers never wait on each other.
    decisions: Box<[Mutex<DecisionCache>]>,
}

/// Every context attribute of SCHEMA, in bit order.
const CONTEXT_ATTRS: [&str; 12] = [
    "method",
    "path",
    "host",
    "ip",
    "auth_method",
    "issuer",
    "scopes",
    "roles",
    "api_key_id",
    "cert_uris",
    "cert_dns",
    "path_lower",
];

const ALL_CONTEXT: u16 = (1 << CONTEXT_ATTRS.len()) - 1;

/// Which context attributes the policies read, from their JSON form:
/// `context.x`, `context["x"]` and `context has x` name `x`; `context` used
/// any other way (compared whole, say) needs every attribute. Conservative
/// by construction: an attribute is left out only when no policy mentions it,
/// so leaving it out changes no decision (a `forbid` that reads it still
/// sees it).
fn context_attrs(v: &serde_json::Value, needed: &mut u16) {
    use serde_json::Value;
    let is_context = |v: Option<&Value>| matches!(v, Some(Value::Object(m)) if m.get("Var").and_then(Value::as_str) == Some("context"));
    match v {
        Value::Object(m) => {
            if m.get("Var").and_then(Value::as_str) == Some("context") {
                *needed = ALL_CONTEXT;
                return;
            }
            for (k, child) in m {
                if (k == "." || k == "has")
                    && let Value::Object(inner) = child
                    && is_context(inner.get("left"))
                {
                    match inner.get("attr").and_then(Value::as_str) {
                        Some(attr) => match CONTEXT_ATTRS.iter().position(|a| *a == attr) {
                            Some(i) => *needed |= 1 << i,
                            None => *needed = ALL_CONTEXT,
                        },
                        None => *needed = ALL_CONTEXT,
                    }
                    for (ik, iv) in inner {
                        if ik != "left" {
                            context_attrs(iv, needed);
                        }
                    }
                    continue;
                }
                context_attrs(child, needed);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| context_attrs(x, needed)),
        _ => {}
    }
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer").finish_non_exhaustive()
    }
}

const TYPES: [&str; 6] = [
    "User",
    "Consumer",
    "Workload",
    "Anonymous",
    "Action",
    "Route",
];

fn uid(t: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(t.clone(), EntityId::new(id))
}

impl Authorizer {
    /// Parse and validate policies; every problem is reported in the error text.
    pub fn new(text: &str) -> Result<Self, PolicyError> {
        let parsed = PolicySet::from_str(text).map_err(|e| PolicyError::Invalid(e.to_string()))?;
        // Name each policy by its @id annotation so decisions are logged by
        // the names operators wrote; unannotated ones keep Cedar's policyN.
        let mut policies = PolicySet::new();
        for p in parsed.policies() {
            let p = match p.annotation("id") {
                Some(id) => p.new_id(cedar_policy::PolicyId::new(id)),
                None => p.clone(),
            };
            policies
                .add(p)
                .map_err(|e| PolicyError::Invalid(e.to_string()))?;
        }
        let (schema, _warnings) =
            Schema::from_cedarschema_str(SCHEMA).map_err(|e| PolicyError::Schema(e.to_string()))?;
        let result = Validator::new(schema).validate(&policies, ValidationMode::Strict);
        if !result.validation_passed() {
            let errs: Vec<String> = result.validation_errors().map(|e| e.to_string()).collect();
            return Err(PolicyError::Validation(errs.join("; ")));
        }
        let mut context_needed = 0u16;
        for p in policies.policies() {
            match p.to_json() {
                Ok(j) => context_attrs(&j, &mut context_needed),
                Err(_) => context_needed = ALL_CONTEXT,
            }
        }
        let types = TYPES
            .map(|t| EntityTypeName::from_str(t).map_err(|e| PolicyError::Schema(e.to_string())));
        let [user, consumer, workload, anonymous, action, route] = types;
        Ok(Self {
            policies,
            authorizer: cedar_policy::Authorizer::new(),
            context_needed,
            types: [user?, consumer?, workload?, anonymous?, action?, route?],
            decisions: (0..crate::worker::workers())
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
        })
    }

    /// Decide. `Ok(Permit)` only on an explicit permit and no forbid.
    ///
    /// A decision is a pure function of what Cedar is given: the principal,
    /// action and resource ids and the context attributes some policy reads
    /// (no entity store, no clock). Those values, length-prefixed, are the
    /// key of a per-worker decision cache, so a request that repeats them
    /// exactly (the same caller calling the same route) gets the decision
    /// Cedar gave before without building and evaluating the request again.
    /// The cache belongs to this policy set: a reload builds a new one.
    pub fn authorize<R: Protected>(
        &self,
        route: R,
        principal: Principal,
        res: Resource,
    ) -> Result<Permit<R>, Denied> {
        let route_name = route.name();
        let empty: Vec<String> = Vec::new();
        let (uris, dns) = match &principal.peer {
            Some(p) => (&p.uris, &p.dns_names),
            None => (&empty, &empty),
        };
        let (kind, principal_id) = match principal.method {
            Method::Jwt => (0u8, &*principal.subject),
            Method::ApiKey => (1, principal.consumer.as_deref().unwrap_or("")),
            Method::PeerCert => (2, &*principal.subject),
            Method::Anonymous => (3, "anonymous"),
        };
        // lowercased only when a policy reads it (a service that routes
        // case-insensitively, as Express does, is protected by a rule on
        // `context.path_lower`)
        let path_lower = if self.context_needed & (1 << 11) != 0 {
            fold_case(&res.path)
        } else {
            String::new()
        };
        // the context attributes some policy reads, in CONTEXT_ATTRS order
        let attr = |i: usize| match i {
            0 => Attr::Str(res.method.as_str()),
            1 => Attr::Str(&res.path),
            2 => Attr::Str(&res.host),
            3 => Attr::Str(&res.ip),
            4 => Attr::Str(principal.method.as_str()),
            5 => Attr::Str(&principal.issuer),
            6 => Attr::Set(&principal.scopes),
            7 => Attr::Set(&principal.roles),
            8 => Attr::Str(principal.key_id.as_deref().unwrap_or("")),
            9 => Attr::Set(uris),
            10 => Attr::Set(dns),
            _ => Attr::Str(&path_lower),
        };
        let needed = || (0..CONTEXT_ATTRS.len()).filter(|i| self.context_needed & (1 << i) != 0);

        let mut key = Vec::with_capacity(128);
        key.push(kind);
        for part in [principal_id, res.method.as_str(), route_name] {
            push_len_prefixed(&mut key, part);
        }
        for i in needed() {
            match attr(i) {
                Attr::Str(v) => push_len_prefixed(&mut key, v),
                Attr::Set(v) => {
                    key.extend_from_slice(&(v.len() as u32).to_le_bytes());
                    for x in v {
                        push_len_prefixed(&mut key, x);
                    }
                }
            }
        }
        let shard = &self.decisions[crate::worker::index() % self.decisions.len()];
        let cached = shard
            .lock()
            .ok()
            .and_then(|m| m.get(key.as_slice()).cloned());
        let decided = match cached {
            Some(d) => d,
            None => {
                let d = self
                    .evaluate(
                        kind,
                        principal_id,
                        route_name,
                        &res,
                        needed().map(|i| (i, attr(i))),
                    )
                    .map_err(Denied::Evaluation)?;
                // bounded in entries and key size: callers varying the key
                // (long or many paths, say) cannot grow it; starting over is
                // cheaper than tracking use
                if key.len() <= DECISION_CACHE_MAX_KEY
                    && let Ok(mut m) = shard.lock()
                {
                    if m.len() >= DECISION_CACHE_ENTRIES {
                        m.clear();
                    }
                    m.insert(key.into_boxed_slice(), d.clone());
                }
                d
            }
        };
        match decided {
            Decided::Allow(policies) => Ok(Permit {
                route,
                principal,
                resource: res,
                policies,
            }),
            Decided::Deny(reason) => Err(Denied::Policy(reason)),
        }
    }

    /// Run Cedar on one request.
    fn evaluate<'a>(
        &self,
        kind: u8,
        principal_id: &str,
        route_name: &str,
        res: &Resource,
        attrs: impl Iterator<Item = (usize, Attr<'a>)>,
    ) -> Result<Decided, String> {
        let [user, consumer, workload, anonymous, action_t, route_t] = &self.types;
        let principal_t = match kind {
            0 => user,
            1 => consumer,
            2 => workload,
            _ => anonymous,
        };
        let principal_uid = uid(principal_t, principal_id);
        let action = uid(action_t, res.method.as_str());
        let resource = uid(route_t, route_name);
        // Built directly as Cedar values (no JSON round trip), and only the
        // attributes some policy reads.
        let pairs = attrs.map(|(i, a)| {
            let value = match a {
                Attr::Str(v) => RestrictedExpression::new_string(v.to_string()),
                Attr::Set(v) => RestrictedExpression::new_set(
                    v.iter()
                        .map(|x| RestrictedExpression::new_string(x.clone())),
                ),
            };
            (CONTEXT_ATTRS[i].to_string(), value)
        });
        let context = Context::from_pairs(pairs).map_err(|e| format!("context: {e}"))?;
        let request = Request::new(principal_uid, action, resource, context, None)
            .map_err(|e| format!("request: {e}"))?;
        let response = self
            .authorizer
            .is_authorized(&request, &self.policies, &Entities::empty());
        let reasons: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|p| p.to_string())
            .collect();
        Ok(match response.decision() {
            Decision::Allow => Decided::Allow(reasons.join(",").into()),
            Decision::Deny => Decided::Deny(
                if reasons.is_empty() {
                    "no_policy_permits".to_string()
                } else {
                    format!("forbidden_by:{}", reasons.join(","))
                }
                .into(),
            ),
        })
    }

    /// Decisions cached by the calling worker (tests).
    #[cfg(test)]
    fn cached(&self) -> usize {
        self.decisions
            .iter()
            .map(|m| m.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

/// A context attribute's value as the request has it.
enum Attr<'a> {
    Str(&'a str),
    Set(&'a [String]),
}

/// What Cedar decided, as the cache keeps it.
#[derive(Clone)]
enum Decided {
    /// The ids of the policies that allowed it.
    Allow(Arc<str>),
    /// `no_policy_permits` or `forbidden_by:<ids>`.
    Deny(Arc<str>),
}

/// One worker's cached decisions, by request key.
type DecisionCache = HashMap<Box<[u8]>, Decided>;

/// Cached decisions per worker before that worker's cache starts over.
const DECISION_CACHE_ENTRIES: usize = 1024;
/// Longer keys (long paths, many scopes) are decided without the cache:
/// at most ~0.6 MiB of keys per worker.
const DECISION_CACHE_MAX_KEY: usize = 512;

fn push_len_prefixed(key: &mut Vec<u8>, v: &str) {
    key.extend_from_slice(&(v.len() as u32).to_le_bytes());
    key.extend_from_slice(v.as_bytes());
}

/// `context.path_lower`: the path case-folded so that every spelling a
/// case-insensitive service treats as one compares equal. Each character
/// goes to lowercase through its uppercase, so the letters whose uppercase
/// is ASCII (dotless `ı` → `I`, long `ſ` → `S`, the Kelvin sign) fold to
/// the ASCII letter, as Java's `equalsIgnoreCase` and .NET's ordinal
/// ignore-case compare them; `İ` folds to `i` as Java's
/// `Character.toLowerCase` does.
fn fold_case(path: &str) -> String {
    if path.is_ascii() {
        return path.to_ascii_lowercase();
    }
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '\u{130}' {
            out.push('i');
            continue;
        }
        for u in c.to_uppercase() {
            out.extend(u.to_lowercase());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::principal::PeerIdentity;

    const POLICIES: &str = r#"
@id("readers")
permit(principal, action == Action::"GET", resource == Route::"orders")
when { context.scopes.contains("orders:read") };

@id("writers")
permit(principal, action in [Action::"POST", Action::"PUT"], resource == Route::"orders")
when { context.roles.contains("admin") };

@id("partner")
permit(principal == Consumer::"partner-a", action == Action::"GET", resource == Route::"orders");

@id("mesh")
permit(principal, action, resource == Route::"internal")
when { context.cert_uris.contains("spiffe://example.org/billing") };

@id("public")
permit(principal, action == Action::"GET", resource == Route::"health");

@id("no-admin-path")
forbid(principal, action, resource) when { context.path like "/orders/admin*" };
"#;

    fn jwt(scopes: &[&str], roles: &[&str]) -> Principal {
        Principal {
            method: Method::Jwt,
            subject: "alice".into(),
            issuer: "https://id.example".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            consumer: None,
            key_id: None,
            claims: Default::default(),
            peer: None,
        }
    }

    /// The request `method path` on a route (the route is the permit's).
    fn res(_route: &str, method: &str, path: &str) -> Resource {
        Resource {
            method: hyper::Method::from_bytes(method.as_bytes()).unwrap(),
            path: path.into(),
            host: "api.example".into(),
            ip: "10.0.0.1".into(),
        }
    }

    /// A service that routes case-insensitively (Express) serves
    /// `/orders/ADMIN` as `/orders/admin`: a forbid on `context.path` misses
    /// it, one on `context.path_lower` does not.
    #[test]
    fn path_lower_catches_case_variants() {
        assert_eq!(fold_case("/A/\u{17f}\u{212a}/\u{130}"), "/a/sk/i");
        assert_eq!(fold_case("/Orders/x"), "/orders/x");
        let a = Authorizer::new(
            r#"
@id("public")
permit(principal, action, resource == Route::"orders");

@id("no-admin")
forbid(principal, action, resource) when { context.path_lower like "/orders/admin*" };
"#,
        )
        .unwrap();
        for path in [
            "/orders/admin",
            "/orders/ADMIN",
            "/orders/Admin/x",
            "/ORDERS/ADMIN",
            // letters whose uppercase is ASCII: Java's equalsIgnoreCase
            // (and .NET's ordinal ignore-case) match them to `admin`
            "/orders/adm\u{131}n",
            "/orders/ADM\u{131}N",
        ] {
            let r = a.authorize("orders", jwt(&[], &[]), res("orders", "GET", path));
            assert_eq!(
                r.unwrap_err().to_string(),
                "forbidden_by:no-admin",
                "{path}"
            );
        }
        assert!(
            a.authorize(
                "orders",
                jwt(&[], &[]),
                res("orders", "GET", "/orders/list")
            )
            .is_ok()
        );
        // the plain path keeps its case
        let exact = Authorizer::new(
            r#"
@id("public")
permit(principal, action, resource == Route::"orders");
@id("no-admin")
forbid(principal, action, resource) when { context.path like "/orders/admin*" };
"#,
        )
        .unwrap();
        assert!(
            exact
                .authorize(
                    "orders",
                    jwt(&[], &[]),
                    res("orders", "GET", "/orders/ADMIN")
                )
                .is_ok()
        );
    }

    #[test]
    fn allows_and_denies() {
        let a = Authorizer::new(POLICIES).unwrap();
        // scope grants GET
        let p = a
            .authorize(
                "orders",
                jwt(&["orders:read"], &[]),
                res("orders", "GET", "/orders/1"),
            )
            .unwrap();
        assert_eq!(p.policies(), "readers");
        // same principal cannot POST
        assert_eq!(
            a.authorize(
                "orders",
                jwt(&["orders:read"], &[]),
                res("orders", "POST", "/orders")
            )
            .unwrap_err()
            .to_string(),
            "no_policy_permits"
        );
        // role grants POST
        assert!(
            a.authorize(
                "orders",
                jwt(&[], &["admin"]),
                res("orders", "POST", "/orders")
            )
            .is_ok()
        );
        // forbid wins over permit
        assert_eq!(
            a.authorize(
                "orders",
                jwt(&["orders:read"], &[]),
                res("orders", "GET", "/orders/admin/x")
            )
            .unwrap_err()
            .to_string(),
            "forbidden_by:no-admin-path"
        );
        // default deny for an unknown route
        assert_eq!(
            a.authorize(
                "other",
                jwt(&["orders:read"], &["admin"]),
                res("other", "GET", "/x")
            )
            .unwrap_err()
            .to_string(),
            "no_policy_permits"
        );
    }

    #[test]
    fn only_the_context_attributes_policies_read_are_built_and_decisions_do_not_change() {
        let bit = |n: &str| 1u16 << CONTEXT_ATTRS.iter().position(|a| *a == n).unwrap();
        let a = Authorizer::new(POLICIES).unwrap();
        assert_eq!(
            a.context_needed,
            bit("scopes") | bit("roles") | bit("cert_uris") | bit("path")
        );
        // the index form, `has`, and a forbid reading an attribute no permit reads
        let text = r#"
@id("keyed")
permit(principal, action == Action::"GET", resource == Route::"orders")
when { context has api_key_id && context["api_key_id"] == "k1" };
@id("blocked-ip")
forbid(principal, action, resource) when { context.ip == "10.0.0.9" };
"#;
        let a = Authorizer::new(text).unwrap();
        assert_eq!(a.context_needed, bit("api_key_id") | bit("ip"));
        let mut p = jwt(&[], &[]);
        p.key_id = Some("k1".into());
        assert_eq!(
            a.authorize("orders", p.clone(), res("orders", "GET", "/o"))
                .unwrap()
                .policies(),
            "keyed"
        );
        let mut from_blocked = res("orders", "GET", "/o");
        from_blocked.ip = "10.0.0.9".into();
        assert_eq!(
            a.authorize("orders", p.clone(), from_blocked)
                .unwrap_err()
                .to_string(),
            "forbidden_by:blocked-ip"
        );
        p.key_id = Some("k2".into());
        assert_eq!(
            a.authorize("orders", p, res("orders", "GET", "/o"))
                .unwrap_err()
                .to_string(),
            "no_policy_permits"
        );
        // no policy reads the context: none is built, decisions still work
        let a = Authorizer::new(
            r#"permit(principal, action == Action::"GET", resource == Route::"health");"#,
        )
        .unwrap();
        assert_eq!(a.context_needed, 0);
        assert!(
            a.authorize("health", jwt(&[], &[]), res("health", "GET", "/h"))
                .is_ok()
        );
        // the whole context used as a value: everything is built
        let mut needed = 0;
        context_attrs(
            &serde_json::json!({"==": {"left": {"Var": "context"}, "right": {"Record": {}}}}),
            &mut needed,
        );
        assert_eq!(needed, ALL_CONTEXT);
    }

    #[test]
    fn cached_decisions_are_reused_only_for_the_exact_same_request() {
        let a = Authorizer::new(POLICIES).unwrap();
        let reader = jwt(&["orders:read"], &[]);
        let get = |p: &Principal, path: &str| {
            a.authorize("orders", p.clone(), res("orders", "GET", path))
                .map(|permit| permit.policies().to_string())
        };
        assert_eq!(get(&reader, "/orders/1").unwrap(), "readers");
        assert_eq!(a.cached(), 1);
        // the same request again: answered from the cache, same decision
        assert_eq!(get(&reader, "/orders/1").unwrap(), "readers");
        assert_eq!(a.cached(), 1);
        // a forbid on the path still applies after the allow was cached
        assert_eq!(
            get(&reader, "/orders/admin/x").unwrap_err().to_string(),
            "forbidden_by:no-admin-path"
        );
        assert_eq!(
            get(&reader, "/orders/admin/x").unwrap_err().to_string(),
            "forbidden_by:no-admin-path"
        );
        // scopes that concatenate to the same bytes are a different request
        assert_eq!(
            get(&jwt(&["orders:", "read"], &[]), "/orders/1")
                .unwrap_err()
                .to_string(),
            "no_policy_permits"
        );
        assert_eq!(
            get(&jwt(&["orders:r", "ead"], &[]), "/orders/1")
                .unwrap_err()
                .to_string(),
            "no_policy_permits"
        );
        // same id, other principal type: the consumer policy is not reused
        let mut consumer = Principal::anonymous(None);
        consumer.method = Method::ApiKey;
        consumer.consumer = Some("partner-a".into());
        assert_eq!(get(&consumer, "/orders/1").unwrap(), "partner");
        let mut user = jwt(&[], &[]);
        user.subject = "partner-a".into();
        assert_eq!(
            get(&user, "/orders/1").unwrap_err().to_string(),
            "no_policy_permits"
        );
        // another method or route is another request
        assert_eq!(
            a.authorize(
                "orders",
                reader.clone(),
                res("orders", "DELETE", "/orders/1")
            )
            .unwrap_err()
            .to_string(),
            "no_policy_permits"
        );
        assert_eq!(
            a.authorize("health", reader.clone(), res("health", "GET", "/orders/1"))
                .unwrap()
                .policies(),
            "public"
        );
        // every decision above matches a fresh authorizer's
        let fresh = Authorizer::new(POLICIES).unwrap();
        for path in ["/orders/1", "/orders/admin/x"] {
            assert_eq!(
                get(&reader, path),
                fresh
                    .authorize("orders", reader.clone(), res("orders", "GET", path))
                    .map(|p| p.policies().to_string())
            );
        }
        // bounded: many distinct paths never grow it past the limit
        for i in 0..DECISION_CACHE_ENTRIES + 10 {
            get(&reader, &format!("/orders/{i}")).unwrap();
        }
        assert!(a.cached() <= DECISION_CACHE_ENTRIES, "{}", a.cached());
        // a long key is decided, correctly, without being kept
        let b = Authorizer::new(POLICIES).unwrap();
        let long = format!("/orders/{}", "x".repeat(DECISION_CACHE_MAX_KEY));
        assert_eq!(
            b.authorize("orders", reader.clone(), res("orders", "GET", &long))
                .unwrap()
                .policies(),
            "readers"
        );
        let long_admin = format!("/orders/admin/{}", "x".repeat(DECISION_CACHE_MAX_KEY));
        assert_eq!(
            b.authorize("orders", reader.clone(), res("orders", "GET", &long_admin))
                .unwrap_err()
                .to_string(),
            "forbidden_by:no-admin-path"
        );
        assert_eq!(b.cached(), 0);
    }

    #[test]
    fn consumers_workloads_and_anonymous() {
        let a = Authorizer::new(POLICIES).unwrap();
        let mut key = Principal::anonymous(None);
        key.method = Method::ApiKey;
        key.consumer = Some("partner-a".into());
        key.subject = "partner-a".into();
        assert!(
            a.authorize("orders", key.clone(), res("orders", "GET", "/orders"))
                .is_ok()
        );
        key.consumer = Some("partner-b".into());
        assert!(
            a.authorize("orders", key, res("orders", "GET", "/orders"))
                .is_err()
        );

        let peer = PeerIdentity {
            subject: "CN=billing".into(),
            dns_names: vec![],
            uris: vec!["spiffe://example.org/billing".into()],
        };
        let mut w = Principal::anonymous(Some(peer.clone()));
        w.method = Method::PeerCert;
        w.subject = peer.name().into();
        assert!(
            a.authorize(
                "internal",
                w.clone(),
                res("internal", "POST", "/internal/x")
            )
            .is_ok()
        );
        let other = PeerIdentity {
            uris: vec!["spiffe://example.org/web".into()],
            ..peer
        };
        w.peer = Some(other);
        assert!(
            a.authorize("internal", w, res("internal", "POST", "/internal/x"))
                .is_err()
        );

        assert!(
            a.authorize(
                "health",
                Principal::anonymous(None),
                res("health", "GET", "/health")
            )
            .is_ok()
        );
        assert!(
            a.authorize(
                "orders",
                Principal::anonymous(None),
                res("orders", "GET", "/orders")
            )
            .is_err()
        );
    }

    #[test]
    fn invalid_policies_are_load_errors() {
        let e = Authorizer::new(
            "permit(principal, action, resource) when { context.scope.contains(\"x\") };",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("Cedar policies do not validate:"), "{e}");
        let e = Authorizer::new("permit(principal action resource);")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("invalid Cedar policies:"), "{e}");
        let e = Authorizer::new("permit(principal, action == Action::\"FETCH\", resource);")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("Cedar policies do not validate:"), "{e}");
        // an empty policy set is valid and denies everything
        let a = Authorizer::new("").unwrap();
        assert!(
            a.authorize(
                "health",
                Principal::anonymous(None),
                res("health", "GET", "/health")
            )
            .is_err()
        );
    }
}
