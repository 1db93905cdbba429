//! Authentication (pipeline step 8): turns the request's credential into a
//! [`Principal`]. Per route, one or more of: JWT bearer tokens
//! (palisade-jwt), API keys (palisade-apikey), the verified client
//! certificate, or anonymous access where the route says so explicitly.
//!
//! A presented credential that fails is a 401 — the gateway never falls back
//! to a weaker method or to anonymous when a credential was sent but invalid.

use std::sync::Arc;

use hyper::HeaderMap;
use hyper::header::{AUTHORIZATION, HeaderName};
use serde_json::Value;

use crate::config::{AuthnMethod, IssuerSpec, RouteConfig};
use crate::error::GatewayError;
use crate::steps::principal::{Method, PeerIdentity, Principal};

pub struct IssuerInfo {
    pub name: String,
    pub issuer: String,
    pub roles_claim: String,
}

pub struct Authenticator {
    jwt: Option<Arc<palisade_jwt::Verifier>>,
    issuers: Vec<IssuerInfo>,
    apikeys: Option<Arc<palisade_apikey::ApiKeyStore>>,
    apikey_header: HeaderName,
    /// `Authorization` and the API key header.
    credential_headers: [HeaderName; 2],
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuers", &self.issuers.len())
            .field("apikeys", &self.apikeys.is_some())
            .finish()
    }
}

/// The principal's part of a verified JWT.
struct JwtIdentity {
    /// The configured issuer's name (routes list accepted issuers by name).
    issuer_name: Option<String>,
    subject: Arc<str>,
    issuer: Arc<str>,
    scopes: Arc<[String]>,
    roles: Arc<[String]>,
}

/// Which credential a request carries (parsed once, typed from here on).
enum Credential<'a> {
    Jwt(&'a str),
    ApiKey(&'a str),
    None,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

impl Authenticator {
    pub async fn new(
        issuers: &[IssuerSpec],
        apikeys: Option<Arc<palisade_apikey::ApiKeyStore>>,
        apikey_header: &str,
        http: reqwest::Client,
        previous: Option<&Authenticator>,
    ) -> Result<Self, String> {
        let jwt = if issuers.is_empty() {
            None
        } else {
            let cfgs = crate::config::jwt_issuers(issuers);
            // on a reload, an issuer whose JWKS URL is down keeps its last good keys
            let prev = previous.and_then(|p| p.jwt.as_deref());
            let v = palisade_jwt::Verifier::new_after(cfgs, http, prev)
                .await
                .map_err(|e| format!("jwt: {e}"))?;
            v.spawn_refresh();
            Some(v)
        };
        let apikey_header =
            HeaderName::from_bytes(apikey_header.as_bytes()).map_err(|e| e.to_string())?;
        Ok(Self {
            jwt,
            issuers: issuers
                .iter()
                .map(|i| IssuerInfo {
                    name: i.name.clone(),
                    issuer: i.issuer.clone(),
                    roles_claim: i.roles_claim.clone(),
                })
                .collect(),
            apikeys,
            credential_headers: [AUTHORIZATION, apikey_header.clone()],
            apikey_header,
        })
    }

    fn credential<'a>(&self, headers: &'a HeaderMap) -> Result<Credential<'a>, GatewayError> {
        let bad = GatewayError::Unauthenticated {
            reason: "malformed_credentials",
            challenge: "Bearer",
        };
        if headers.get_all(AUTHORIZATION).iter().count() > 1
            || headers.get_all(&self.apikey_header).iter().count() > 1
        {
            return Err(bad);
        }
        // two credentials: each presented credential must count, so one that
        // would fail is never skipped because the other one passes
        if headers.contains_key(&self.apikey_header) && headers.contains_key(AUTHORIZATION) {
            return Err(GatewayError::Unauthenticated {
                reason: "multiple_credentials",
                challenge: "Bearer",
            });
        }
        if let Some(v) = headers.get(&self.apikey_header) {
            return Ok(Credential::ApiKey(
                v.to_str().map_err(|_| bad.clone())?.trim(),
            ));
        }
        if let Some(v) = headers.get(AUTHORIZATION) {
            let v = v.to_str().map_err(|_| bad.clone())?;
            let (scheme, rest) = v.split_once(' ').ok_or(bad.clone())?;
            if scheme.eq_ignore_ascii_case("bearer") {
                return Ok(Credential::Jwt(rest.trim()));
            }
            if scheme.eq_ignore_ascii_case("apikey") {
                return Ok(Credential::ApiKey(rest.trim()));
            }
            return Err(GatewayError::Unauthenticated {
                reason: "unsupported_auth_scheme",
                challenge: "Bearer",
            });
        }
        Ok(Credential::None)
    }

    /// Headers that carried the credential (removed before forwarding, so
    /// services never see gateway credentials).
    pub fn credential_headers(&self) -> &[HeaderName] {
        &self.credential_headers
    }

    /// What a verified token says about its caller, worked out once per
    /// token (palisade-jwt keeps it with the token's cached verification).
    fn jwt_identity(&self, claims: &palisade_jwt::Claims) -> JwtIdentity {
        let info = self.issuers.iter().find(|i| i.issuer == claims.iss);
        let roles_claim = info.map(|i| i.roles_claim.as_str()).unwrap_or("roles");
        let mut scopes = strings(claims.get("scope"));
        scopes.extend(strings(claims.get("scp")));
        let mut roles = strings(claims.get(roles_claim));
        if roles_claim != "groups" {
            roles.extend(strings(claims.get("groups")));
        }
        JwtIdentity {
            issuer_name: info.map(|i| i.name.clone()),
            subject: claims.sub.as_deref().unwrap_or_default().into(),
            issuer: claims.iss.as_str().into(),
            scopes: scopes.into(),
            roles: roles.into(),
        }
    }

    pub async fn authenticate(
        &self,
        route: &RouteConfig,
        headers: &HeaderMap,
        peer: Option<&PeerIdentity>,
        now: i64,
    ) -> Result<Principal, GatewayError> {
        let allows = |m| route.authn.contains(&m);
        match self.credential(headers)? {
            Credential::Jwt(token) => {
                if !allows(AuthnMethod::Jwt) {
                    return Err(GatewayError::Unauthenticated {
                        reason: "jwt_not_accepted_on_route",
                        challenge: "Bearer",
                    });
                }
                let v = self.jwt.as_ref().ok_or(GatewayError::Unauthenticated {
                    reason: "jwt_not_configured",
                    challenge: "Bearer",
                })?;
                let claims = v
                    .verify(token)
                    .await
                    .map_err(|e| GatewayError::Unauthenticated {
                        reason: e.reason(),
                        challenge: "Bearer error=\"invalid_token\"",
                    })?;
                let id = claims
                    .derived(|c| self.jwt_identity(c))
                    .ok_or(GatewayError::Internal)?;
                if !route.jwt_issuers.is_empty()
                    && !id
                        .issuer_name
                        .as_ref()
                        .is_some_and(|n| route.jwt_issuers.contains(n))
                {
                    return Err(GatewayError::Unauthenticated {
                        reason: "issuer_not_accepted_on_route",
                        challenge: "Bearer error=\"invalid_token\"",
                    });
                }
                Ok(Principal {
                    method: Method::Jwt,
                    subject: id.subject.clone(),
                    issuer: id.issuer.clone(),
                    scopes: id.scopes.clone(),
                    roles: id.roles.clone(),
                    consumer: None,
                    key_id: None,
                    claims: claims.all.clone(),
                    peer: peer.cloned(),
                })
            }
            Credential::ApiKey(key) => {
                if !allows(AuthnMethod::ApiKey) {
                    return Err(GatewayError::Unauthenticated {
                        reason: "apikey_not_accepted_on_route",
                        challenge: "ApiKey",
                    });
                }
                let store = self.apikeys.as_ref().ok_or(GatewayError::Unauthenticated {
                    reason: "apikey_not_configured",
                    challenge: "ApiKey",
                })?;
                let rec =
                    store
                        .verify(key, now)
                        .await
                        .map_err(|e| GatewayError::Unauthenticated {
                            reason: e.reason(),
                            challenge: "ApiKey",
                        })?;
                Ok(Principal {
                    method: Method::ApiKey,
                    subject: rec.consumer.as_str().into(),
                    issuer: "".into(),
                    scopes: rec.scopes.as_slice().into(),
                    roles: Arc::new([]),
                    consumer: Some(rec.consumer.clone()),
                    key_id: Some(rec.id.clone()),
                    claims: Default::default(),
                    peer: peer.cloned(),
                })
            }
            Credential::None => {
                if let Some(p) = peer
                    && allows(AuthnMethod::PeerCert)
                {
                    return Ok(Principal {
                        method: Method::PeerCert,
                        subject: p.name().into(),
                        issuer: "".into(),
                        scopes: Arc::new([]),
                        roles: Arc::new([]),
                        consumer: None,
                        key_id: None,
                        claims: Default::default(),
                        peer: Some(p.clone()),
                    });
                }
                if route.anonymous {
                    return Ok(Principal::anonymous(peer.cloned()));
                }
                Err(GatewayError::Unauthenticated {
                    reason: "missing_credentials",
                    challenge: "Bearer",
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Env, GatewayConfig, parse};

    const SECRET_A: &str = "issuer-a-secret-of-at-least-32-bytes";
    const SECRET_B: &str = "issuer-b-secret-of-at-least-32-bytes";

    fn b64(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
            }
        }
        out
    }

    fn hs256(secret: &str, claims: serde_json::Value) -> String {
        let signing_input = format!(
            "{}.{}",
            b64(br#"{"alg":"HS256","typ":"JWT"}"#),
            b64(claims.to_string().as_bytes())
        );
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
        let tag = aws_lc_rs::hmac::sign(&key, signing_input.as_bytes());
        format!("{signing_input}.{}", b64(tag.as_ref()))
    }

    fn claims(iss: &str) -> serde_json::Value {
        serde_json::json!({
            "iss": iss, "sub": "alice", "aud": "api",
            "exp": palisade_core::now_nanos() / 1_000_000_000 + 600,
            "scope": "orders:read orders:write",
            "permissions": ["admin"], "roles": ["reader"], "groups": ["staff"],
        })
    }

    /// Two HS256 issuers (`idp-a` reads roles from `permissions`) and two
    /// routes: `a-only` accepts `idp-a` tokens only, `any` accepts both.
    async fn setup() -> (Authenticator, GatewayConfig, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("p.cedar"),
            "permit(principal, action, resource);",
        )
        .unwrap();
        let text = r#"
[[listeners]]
address = "127.0.0.1:0"
protocol = "http"
dangerous_plaintext = true
[authorization]
policy_file = "p.cedar"
[[upstreams]]
name = "app"
endpoints = ["127.0.0.1:1"]
[[issuers]]
name = "idp-a"
issuer = "https://a.test"
audiences = ["api"]
algorithms = ["HS256"]
hs256_secret_env = "SECRET_A"
roles_claim = "permissions"
[[issuers]]
name = "idp-b"
issuer = "https://b.test"
audiences = ["api"]
algorithms = ["HS256"]
hs256_secret_env = "SECRET_B"
[[routes]]
name = "a-only"
path_prefix = "/a"
upstream = "app"
authn = ["jwt"]
jwt_issuers = ["idp-a"]
[[routes]]
name = "any"
path_prefix = "/any"
upstream = "app"
authn = ["jwt"]
"#;
        let var = |name: &str| match name {
            "SECRET_A" => Some(SECRET_A.to_owned()),
            "SECRET_B" => Some(SECRET_B.to_owned()),
            _ => None,
        };
        let cfg = parse(
            text,
            &Env {
                var: &var,
                base: dir.path().to_path_buf(),
            },
        )
        .unwrap();
        let a = Authenticator::new(
            &cfg.issuers,
            None,
            "x-api-key",
            reqwest::Client::new(),
            None,
        )
        .await
        .unwrap();
        (a, cfg, dir)
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        h
    }

    #[tokio::test]
    async fn route_issuers_and_roles_claims_from_the_cached_identity() {
        let (a, cfg, _dir) = setup().await;
        let route = |name: &str| cfg.routes.iter().find(|r| r.name == name).unwrap();
        let token_a = bearer(&hs256(SECRET_A, claims("https://a.test")));
        let token_b = bearer(&hs256(SECRET_B, claims("https://b.test")));
        let now = palisade_core::now_nanos() / 1_000_000_000;

        // allow: idp-a on its route; roles from its `permissions` claim plus `groups`
        let p = a
            .authenticate(route("a-only"), &token_a, None, now)
            .await
            .unwrap();
        assert_eq!((&*p.subject, &*p.issuer), ("alice", "https://a.test"));
        assert_eq!(&*p.scopes, ["orders:read", "orders:write"]);
        assert_eq!(&*p.roles, ["admin", "staff"]);
        // the same token again: the identity derived the first time, shared
        let again = a
            .authenticate(route("a-only"), &token_a, None, now)
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&p.roles, &again.roles) && Arc::ptr_eq(&p.scopes, &again.scopes));

        // deny: a valid idp-b token on the idp-a route, first and cached use
        for _ in 0..2 {
            match a.authenticate(route("a-only"), &token_b, None, now).await {
                Err(GatewayError::Unauthenticated { reason, .. }) => {
                    assert_eq!(reason, "issuer_not_accepted_on_route")
                }
                other => panic!("idp-b token on the idp-a route: {other:?}"),
            }
        }
        // allow: idp-b where any issuer is accepted; its roles from `roles`
        let p = a
            .authenticate(route("any"), &token_b, None, now)
            .await
            .unwrap();
        assert_eq!(&*p.issuer, "https://b.test");
        assert_eq!(&*p.roles, ["reader", "staff"]);
    }
}
