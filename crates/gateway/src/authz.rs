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

use std::str::FromStr;

use cedar_policy::{
    Context, Decision, Entities, EntityId, EntityTypeName, EntityUid, PolicySet, Request,
    RestrictedExpression, Schema, ValidationMode, Validator,
};

use crate::principal::{Method, Principal};

pub const SCHEMA: &str = r#"
entity User, Consumer, Workload, Anonymous, Route;
action "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS" appliesTo {
  principal: [User, Consumer, Workload, Anonymous],
  resource: [Route],
  context: {
    method: String,
    path: String,
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

/// Proof that authorization allowed this principal on this route. Fields are
/// private and there is no public constructor: only [`Authorizer::authorize`]
/// makes one, so code that forwards upstream cannot skip the check.
#[derive(Debug)]
pub struct Permit<R> {
    route: R,
    principal: Principal,
    policies: String,
}

impl<R> Permit<R> {
    pub fn route(&self) -> &R {
        &self.route
    }
    pub fn principal(&self) -> &Principal {
        &self.principal
    }
    /// The ids of the policies that allowed the request (for the security log).
    pub fn policies(&self) -> &str {
        &self.policies
    }
}

/// The attributes of the request that policies may use.
pub struct Resource<'a> {
    pub route: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub host: &'a str,
    pub ip: &'a str,
}

pub struct Authorizer {
    policies: PolicySet,
    authorizer: cedar_policy::Authorizer,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer").finish_non_exhaustive()
    }
}

fn uid(type_name: &str, id: &str) -> Result<EntityUid, String> {
    let t = EntityTypeName::from_str(type_name).map_err(|e| e.to_string())?;
    Ok(EntityUid::from_type_name_and_id(t, EntityId::new(id)))
}

impl Authorizer {
    /// Parse and validate policies; every problem is reported in the error text.
    pub fn new(text: &str) -> Result<Self, String> {
        let parsed =
            PolicySet::from_str(text).map_err(|e| format!("invalid Cedar policies: {e}"))?;
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
                .map_err(|e| format!("invalid Cedar policies: {e}"))?;
        }
        let (schema, _warnings) = Schema::from_cedarschema_str(SCHEMA)
            .map_err(|e| format!("internal schema error: {e}"))?;
        let result = Validator::new(schema).validate(&policies, ValidationMode::Strict);
        if !result.validation_passed() {
            let errs: Vec<String> = result.validation_errors().map(|e| e.to_string()).collect();
            return Err(format!(
                "Cedar policies do not validate: {}",
                errs.join("; ")
            ));
        }
        Ok(Self {
            policies,
            authorizer: cedar_policy::Authorizer::new(),
        })
    }

    /// Decide. `Ok(Permit)` only on an explicit permit and no forbid.
    pub fn authorize<R>(
        &self,
        route: R,
        principal: Principal,
        res: &Resource<'_>,
    ) -> Result<Permit<R>, String> {
        let principal_uid = match principal.method {
            Method::Jwt => uid("User", &principal.subject),
            Method::ApiKey => uid("Consumer", principal.consumer.as_deref().unwrap_or("")),
            Method::PeerCert => uid("Workload", &principal.subject),
            Method::Anonymous => uid("Anonymous", "anonymous"),
        }?;
        let action = uid("Action", res.method)?;
        let resource = uid("Route", res.route)?;
        // Built directly as Cedar values (no JSON round trip: it is on the hot path).
        let s = |v: &str| RestrictedExpression::new_string(v.to_string());
        let set = |v: &[String]| {
            RestrictedExpression::new_set(
                v.iter()
                    .map(|x| RestrictedExpression::new_string(x.clone())),
            )
        };
        let empty: Vec<String> = Vec::new();
        let (uris, dns) = match &principal.peer {
            Some(p) => (&p.uris, &p.dns_names),
            None => (&empty, &empty),
        };
        let context = Context::from_pairs([
            ("method".to_string(), s(res.method)),
            ("path".to_string(), s(res.path)),
            ("host".to_string(), s(res.host)),
            ("ip".to_string(), s(res.ip)),
            ("auth_method".to_string(), s(principal.method.as_str())),
            ("issuer".to_string(), s(&principal.issuer)),
            ("scopes".to_string(), set(&principal.scopes)),
            ("roles".to_string(), set(&principal.roles)),
            (
                "api_key_id".to_string(),
                s(principal.key_id.as_deref().unwrap_or("")),
            ),
            ("cert_uris".to_string(), set(uris)),
            ("cert_dns".to_string(), set(dns)),
        ])
        .map_err(|e| format!("context: {e}"))?;
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
        match response.decision() {
            Decision::Allow => Ok(Permit {
                route,
                principal,
                policies: reasons.join(","),
            }),
            Decision::Deny => Err(if reasons.is_empty() {
                "no_policy_permits".to_string()
            } else {
                format!("forbidden_by:{}", reasons.join(","))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::PeerIdentity;

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

    fn res<'a>(route: &'a str, method: &'a str, path: &'a str) -> Resource<'a> {
        Resource {
            route,
            method,
            path,
            host: "api.example",
            ip: "10.0.0.1",
        }
    }

    #[test]
    fn allows_and_denies() {
        let a = Authorizer::new(POLICIES).unwrap();
        // scope grants GET
        let p = a
            .authorize(
                "orders",
                jwt(&["orders:read"], &[]),
                &res("orders", "GET", "/orders/1"),
            )
            .unwrap();
        assert_eq!(p.policies(), "readers");
        // same principal cannot POST
        assert_eq!(
            a.authorize(
                "orders",
                jwt(&["orders:read"], &[]),
                &res("orders", "POST", "/orders")
            )
            .unwrap_err(),
            "no_policy_permits"
        );
        // role grants POST
        assert!(
            a.authorize(
                "orders",
                jwt(&[], &["admin"]),
                &res("orders", "POST", "/orders")
            )
            .is_ok()
        );
        // forbid wins over permit
        assert_eq!(
            a.authorize(
                "orders",
                jwt(&["orders:read"], &[]),
                &res("orders", "GET", "/orders/admin/x")
            )
            .unwrap_err(),
            "forbidden_by:no-admin-path"
        );
        // default deny for an unknown route
        assert_eq!(
            a.authorize(
                "other",
                jwt(&["orders:read"], &["admin"]),
                &res("other", "GET", "/x")
            )
            .unwrap_err(),
            "no_policy_permits"
        );
    }

    #[test]
    fn consumers_workloads_and_anonymous() {
        let a = Authorizer::new(POLICIES).unwrap();
        let mut key = Principal::anonymous(None);
        key.method = Method::ApiKey;
        key.consumer = Some("partner-a".into());
        key.subject = "partner-a".into();
        assert!(
            a.authorize("orders", key.clone(), &res("orders", "GET", "/orders"))
                .is_ok()
        );
        key.consumer = Some("partner-b".into());
        assert!(
            a.authorize("orders", key, &res("orders", "GET", "/orders"))
                .is_err()
        );

        let peer = PeerIdentity {
            subject: "CN=billing".into(),
            dns_names: vec![],
            uris: vec!["spiffe://example.org/billing".into()],
        };
        let mut w = Principal::anonymous(Some(peer.clone()));
        w.method = Method::PeerCert;
        w.subject = peer.name().to_string();
        assert!(
            a.authorize(
                "internal",
                w.clone(),
                &res("internal", "POST", "/internal/x")
            )
            .is_ok()
        );
        let other = PeerIdentity {
            uris: vec!["spiffe://example.org/web".into()],
            ..peer
        };
        w.peer = Some(other);
        assert!(
            a.authorize("internal", w, &res("internal", "POST", "/internal/x"))
                .is_err()
        );

        assert!(
            a.authorize(
                "health",
                Principal::anonymous(None),
                &res("health", "GET", "/health")
            )
            .is_ok()
        );
        assert!(
            a.authorize(
                "orders",
                Principal::anonymous(None),
                &res("orders", "GET", "/orders")
            )
            .is_err()
        );
    }

    #[test]
    fn invalid_policies_are_load_errors() {
        let e = Authorizer::new(
            "permit(principal, action, resource) when { context.scope.contains(\"x\") };",
        )
        .unwrap_err();
        assert!(e.starts_with("Cedar policies do not validate:"), "{e}");
        let e = Authorizer::new("permit(principal action resource);").unwrap_err();
        assert!(e.starts_with("invalid Cedar policies:"), "{e}");
        let e = Authorizer::new("permit(principal, action == Action::\"FETCH\", resource);")
            .unwrap_err();
        assert!(e.starts_with("Cedar policies do not validate:"), "{e}");
        // an empty policy set is valid and denies everything
        let a = Authorizer::new("").unwrap();
        assert!(
            a.authorize(
                "health",
                Principal::anonymous(None),
                &res("health", "GET", "/health")
            )
            .is_err()
        );
    }
}
