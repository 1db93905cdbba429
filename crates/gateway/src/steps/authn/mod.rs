//! Authentication (pipeline step 8): turns the request's credential into a
//! [`Principal`]. Per route, one or more of: JWT bearer tokens
//! (palisade-jwt), API keys (palisade-apikey), the verified client
//! certificate, or anonymous access where the route says so explicitly.
//!
//! A presented credential that fails is a 401 — the gateway never falls back
//! to a weaker method or to anonymous when a credential was sent but invalid.

mod introspect;

use std::sync::Arc;

use hyper::HeaderMap;
use hyper::header::{AUTHORIZATION, HeaderName};
use serde_json::{Map, Value};

use introspect::{Answer, Introspector};

use crate::config::{AuthnMethod, IssuerSpec, RouteConfig};
use crate::error::GatewayError;
use crate::steps::principal::{Method, PeerIdentity, Principal};

pub struct IssuerInfo {
    pub name: String,
    pub issuer: String,
    pub roles_claim: String,
    pub audiences: Vec<String>,
    pub leeway: i64,
    /// RFC 7662 introspection of this issuer's tokens, when configured.
    introspector: Option<Introspector>,
    /// Bearer tokens that are not JWTs go to this issuer's introspection.
    opaque_tokens: bool,
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

/// What a token's claims (verified JWT or introspection answer) say about
/// its caller.
fn identity(
    info: Option<&IssuerInfo>,
    iss: &str,
    sub: Option<&str>,
    all: &Map<String, Value>,
) -> JwtIdentity {
    let roles_claim = info.map(|i| i.roles_claim.as_str()).unwrap_or("roles");
    let mut scopes = strings(all.get("scope"));
    scopes.extend(strings(all.get("scp")));
    let mut roles = strings(all.get(roles_claim));
    if roles_claim != "groups" {
        roles.extend(strings(all.get("groups")));
    }
    JwtIdentity {
        issuer_name: info.map(|i| i.name.clone()),
        subject: sub.unwrap_or_default().into(),
        issuer: iss.into(),
        scopes: scopes.into(),
        roles: roles.into(),
    }
}

/// Anything that holds `pal_` in any case: an API key, or one with a typo,
/// quotes or a prefix around it. Never sent to an identity provider.
fn mentions_api_key(token: &str) -> bool {
    token
        .as_bytes()
        .windows(4)
        .any(|w| w.eq_ignore_ascii_case(b"pal_"))
}

/// A compact JWS has exactly three dot-separated parts.
fn is_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
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
                .map(|i| {
                    let introspector = match &i.introspection {
                        Some(spec) => Some(
                            Introspector::new(spec)
                                .map_err(|e| format!("issuers[{}].introspection: {e}", i.name))?,
                        ),
                        None => None,
                    };
                    Ok(IssuerInfo {
                        name: i.name.clone(),
                        issuer: i.issuer.clone(),
                        roles_claim: i.roles_claim.clone(),
                        audiences: i.audiences.clone(),
                        leeway: i64::try_from(i.leeway.as_secs()).unwrap_or(60),
                        opaque_tokens: i.introspection.as_ref().is_some_and(|t| t.opaque_tokens),
                        introspector,
                    })
                })
                .collect::<Result<_, String>>()?,
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
        identity(info, &claims.iss, claims.sub.as_deref(), &claims.all)
    }

    /// A JWT's revocation check, when its issuer introspects: an inactive
    /// token is a 401, an endpoint that cannot answer a 503.
    async fn introspect_jwt(
        &self,
        claims: &palisade_jwt::Claims,
        token: &str,
        now: i64,
    ) -> Result<(), GatewayError> {
        let Some(intro) = self
            .issuers
            .iter()
            .find(|i| i.issuer == claims.iss)
            .and_then(|i| i.introspector.as_ref())
        else {
            return Ok(());
        };
        match intro.check(token, Some(claims.exp), now).await {
            Ok(Answer::Active(_)) => Ok(()),
            Ok(Answer::Inactive) => Err(GatewayError::Unauthenticated {
                reason: "token_inactive",
                challenge: "Bearer error=\"invalid_token\"",
            }),
            Err(e) => Err(GatewayError::AuthUnavailable { reason: e.0 }),
        }
    }

    /// An opaque bearer token, checked by the issuer that introspects
    /// opaque tokens: active, that issuer's (when the answer names one), for
    /// one of its audiences, within `exp`/`nbf`.
    async fn opaque(
        &self,
        route: &RouteConfig,
        token: &str,
        peer: Option<&PeerIdentity>,
        now: i64,
    ) -> Result<Option<Principal>, GatewayError> {
        let Some((info, intro)) = self.issuers.iter().find_map(|i| {
            i.introspector
                .as_ref()
                .filter(|_| i.opaque_tokens)
                .map(|t| (i, t))
        }) else {
            return Ok(None);
        };
        let invalid = |reason| GatewayError::Unauthenticated {
            reason,
            challenge: "Bearer error=\"invalid_token\"",
        };
        if !route.jwt_issuers.is_empty() && !route.jwt_issuers.contains(&info.name) {
            return Err(invalid("issuer_not_accepted_on_route"));
        }
        let answer = match intro.check(token, None, now).await {
            Ok(Answer::Active(a)) => a,
            Ok(Answer::Inactive) => return Err(invalid("token_inactive")),
            Err(e) => return Err(GatewayError::AuthUnavailable { reason: e.0 }),
        };
        match answer.get("iss") {
            None => {}
            Some(Value::String(iss)) if *iss == info.issuer => {}
            Some(_) => return Err(invalid("wrong_issuer")),
        }
        // `aud`: one string is one audience (RFC 7519 §4.1.3), never split
        let aud: Vec<&str> = match answer.get("aud") {
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !aud.iter().any(|a| info.audiences.iter().any(|x| x == a)) {
            return Err(invalid("wrong_audience"));
        }
        let time = |k| match answer.get(k) {
            None => Ok(None),
            Some(v) => v.as_i64().map(Some).ok_or(invalid("malformed_token")),
        };
        if time("exp")?.is_some_and(|exp| exp + info.leeway <= now) {
            return Err(invalid("expired"));
        }
        if time("nbf")?.is_some_and(|nbf| nbf - info.leeway > now) {
            return Err(invalid("not_yet_valid"));
        }
        let sub = match answer.get("sub") {
            None => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => return Err(invalid("malformed_token")),
        };
        let id = identity(Some(info), &info.issuer, sub, &answer);
        Ok(Some(Principal {
            method: Method::Jwt,
            subject: id.subject,
            issuer: id.issuer,
            scopes: id.scopes,
            roles: id.roles,
            consumer: None,
            key_id: None,
            claims: answer,
            peer: peer.cloned(),
        }))
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
                // an API key sent as a bearer token is never handed to an
                // identity provider
                if !is_jwt(token)
                    && !mentions_api_key(token)
                    && let Some(p) = self.opaque(route, token, peer, now).await?
                {
                    return Ok(p);
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
                self.introspect_jwt(&claims, token, now).await?;
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
                let rec = store.verify(key, now).await.map_err(|e| match e {
                    // the key store cannot be read: fail closed, and say so
                    // (503, as an introspection outage), not "bad key"
                    palisade_apikey::ApiKeyError::Storage(_) => GatewayError::AuthUnavailable {
                        reason: "apikey_storage",
                    },
                    e => GatewayError::Unauthenticated {
                        reason: e.reason(),
                        challenge: "ApiKey",
                    },
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
    use std::time::Duration;

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

    /// A stand-in RFC 7662 endpoint: answers by token, counts its calls,
    /// and refuses any client but `gw` / `gw-secret`.
    struct Endpoint {
        port: u16,
        calls: Arc<std::sync::atomic::AtomicUsize>,
        revoked: Arc<std::sync::Mutex<Vec<String>>>,
    }

    async fn endpoint() -> Endpoint {
        use axum::extract::State;
        use axum::routing::post;
        type Shared = (
            Arc<std::sync::atomic::AtomicUsize>,
            Arc<std::sync::Mutex<Vec<String>>>,
        );
        async fn introspect(
            State((calls, revoked)): State<Shared>,
            headers: HeaderMap,
            body: String,
        ) -> (hyper::StatusCode, String) {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // Basic base64("gw:gw-secret")
            if headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok())
                != Some("Basic Z3c6Z3ctc2VjcmV0")
            {
                return (hyper::StatusCode::UNAUTHORIZED, "{}".into());
            }
            let token = body
                .split('&')
                .find_map(|kv| kv.strip_prefix("token="))
                .unwrap_or_default()
                .to_owned();
            let now = palisade_core::now_nanos() / 1_000_000_000;
            let active = |aud: &str, iss: &str| {
                serde_json::json!({"active": true, "sub": "svc-a", "scope": "orders:read",
                    "aud": aud, "iss": iss, "exp": now + 600, "client_id": "svc-a"})
                .to_string()
            };
            let ok = hyper::StatusCode::OK;
            if revoked.lock().unwrap().contains(&token) {
                return (ok, r#"{"active":false}"#.into());
            }
            match token.as_str() {
                "opaque-good" => (ok, active("api", "https://a.test")),
                "opaque-other-audience" => (ok, active("billing", "https://a.test")),
                "opaque-other-issuer" => (ok, active("api", "https://b.test")),
                "opaque%20expired" => (
                    ok,
                    serde_json::json!({"active": true, "aud": "api", "exp": now - 120}).to_string(),
                ),
                "opaque-broken" => (hyper::StatusCode::INTERNAL_SERVER_ERROR, "{}".into()),
                "opaque-slow-broken" => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    (hyper::StatusCode::INTERNAL_SERVER_ERROR, "{}".into())
                }
                "opaque-spaced-audience" => (ok, active("evil api", "https://a.test")),
                "opaque-duplicate" => (
                    ok,
                    r#"{"active":false,"aud":"api","sub":"x","active":true}"#.into(),
                ),
                "opaque-malformed" => (ok, r#"{"activ":true}"#.into()),
                t if t.contains('.') => (ok, active("api", "https://a.test")),
                _ => (ok, r#"{"active":false}"#.into()),
            }
        }
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let revoked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route("/introspect", post(introspect))
            .with_state((calls.clone(), revoked.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Endpoint {
            port,
            calls,
            revoked,
        }
    }

    async fn introspecting(
        port: u16,
        secret: &'static str,
    ) -> (Authenticator, GatewayConfig, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("p.cedar"),
            "permit(principal, action, resource);",
        )
        .unwrap();
        let text = format!(
            r#"
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
[issuers.introspection]
url = "http://127.0.0.1:{port}/introspect"
client_id = "gw"
client_secret_env = "GW_SECRET"
cache_s = 1
opaque_tokens = true
[[issuers]]
name = "idp-b"
issuer = "https://b.test"
audiences = ["api"]
algorithms = ["HS256"]
hs256_secret_env = "SECRET_B"
[[routes]]
name = "any"
path_prefix = "/any"
upstream = "app"
authn = ["jwt"]
[[routes]]
name = "b-only"
path_prefix = "/b"
upstream = "app"
authn = ["jwt"]
jwt_issuers = ["idp-b"]
"#
        );
        let var = move |name: &str| match name {
            "SECRET_A" => Some(SECRET_A.to_owned()),
            "SECRET_B" => Some(SECRET_B.to_owned()),
            "GW_SECRET" => Some(secret.to_owned()),
            _ => None,
        };
        let cfg = parse(
            &text,
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

    /// Run futures at once on this task (no extra crate for join_all).
    async fn futures_join<F: std::future::Future>(fs: impl Iterator<Item = F>) -> Vec<F::Output> {
        let mut set = Vec::new();
        for f in fs {
            set.push(Box::pin(f));
        }
        let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (f, o) in set.iter_mut().zip(out.iter_mut()) {
                if o.is_none() {
                    match f.as_mut().poll(cx) {
                        std::task::Poll::Ready(v) => *o = Some(v),
                        std::task::Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await;
        out.into_iter().map(|o| o.unwrap()).collect()
    }

    fn refused(r: Result<Principal, GatewayError>) -> (u16, String) {
        match r {
            Ok(p) => panic!("allowed: {}", p.label()),
            Err(e) => (e.status().as_u16(), e.log_reason()),
        }
    }

    #[tokio::test]
    async fn introspection_revokes_jwts_and_checks_opaque_tokens() {
        use std::sync::atomic::Ordering::SeqCst;
        let ep = endpoint().await;
        let (a, cfg, _dir) = introspecting(ep.port, "gw-secret").await;
        let route = |name: &str| cfg.routes.iter().find(|r| r.name == name).unwrap();
        let now = palisade_core::now_nanos() / 1_000_000_000;
        let jwt = hs256(SECRET_A, claims("https://a.test"));

        // allow: a live JWT, checked once, then from the cache
        for _ in 0..3 {
            let p = a
                .authenticate(route("any"), &bearer(&jwt), None, now)
                .await
                .unwrap();
            assert_eq!(&*p.subject, "alice");
        }
        assert_eq!(ep.calls.load(SeqCst), 1);
        // revoked: the cached answer serves out its second, then 401
        ep.revoked.lock().unwrap().push(jwt.clone());
        a.authenticate(route("any"), &bearer(&jwt), None, now)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            refused(a.authenticate(route("any"), &bearer(&jwt), None, now).await),
            (401, "token_inactive".into())
        );
        // idp-b does not introspect: its tokens never reach the endpoint
        let calls = ep.calls.load(SeqCst);
        let jwt_b = hs256(SECRET_B, claims("https://b.test"));
        a.authenticate(route("any"), &bearer(&jwt_b), None, now)
            .await
            .unwrap();
        assert_eq!(ep.calls.load(SeqCst), calls);

        // allow: an opaque token the endpoint vouches for
        let p = a
            .authenticate(route("any"), &bearer("opaque-good"), None, now)
            .await
            .unwrap();
        assert_eq!((&*p.subject, &*p.issuer), ("svc-a", "https://a.test"));
        assert_eq!(&*p.scopes, ["orders:read"]);
        assert_eq!(p.claims["client_id"], "svc-a");
        // deny: each way an opaque token can be wrong, with its reason
        for (token, route_name, want) in [
            ("opaque-unknown", "any", (401, "token_inactive")),
            ("opaque-other-audience", "any", (401, "wrong_audience")),
            ("opaque-other-issuer", "any", (401, "wrong_issuer")),
            ("opaque expired", "any", (401, "expired")),
            (
                "opaque-good",
                "b-only",
                (401, "issuer_not_accepted_on_route"),
            ),
            ("opaque-broken", "any", (503, "introspection_status")),
            // one string is one audience, never split on spaces
            ("opaque-spaced-audience", "any", (401, "wrong_audience")),
            // duplicate members: refused, not "the last one wins"
            (
                "opaque-duplicate",
                "any",
                (503, "introspection_malformed_answer"),
            ),
            (
                "opaque-malformed",
                "any",
                (503, "introspection_malformed_answer"),
            ),
        ] {
            let got = refused(
                a.authenticate(route(route_name), &bearer(token), None, now)
                    .await,
            );
            assert_eq!(got, (want.0, want.1.to_string()), "{token} on {route_name}");
        }
        // a failed call is not cached: the next request asks again
        let calls = ep.calls.load(SeqCst);
        refused(
            a.authenticate(route("any"), &bearer("opaque-broken"), None, now)
                .await,
        );
        assert_eq!(ep.calls.load(SeqCst), calls + 1);
        // requests waiting for one call share its failure: one call, all 503
        let calls = ep.calls.load(SeqCst);
        let slow = bearer("opaque-slow-broken");
        let waiting = (0..5).map(|_| a.authenticate(route("any"), &slow, None, now));
        for r in futures_join(waiting).await {
            assert_eq!(refused(r), (503, "introspection_status".into()));
        }
        assert_eq!(ep.calls.load(SeqCst), calls + 1);
        // an API key sent as a bearer token never reaches the endpoint
        let calls = ep.calls.load(SeqCst);
        let key = format!(
            "pal_{}_{}",
            "a1B2c3D4e5F6", "0123456789abcdefghijABCDEFGHIJkl"
        );
        assert!(palisade_apikey::looks_like_key(&key));
        // nor one with a typo, quotes, a prefix or another case
        for t in [
            key.clone(),
            format!("{key}x"),
            format!("\"{key}\""),
            key[..key.len() - 1].to_string(),
            format!("{key},"),
            key.replacen("pal_", "PAL_", 1),
        ] {
            assert_eq!(
                refused(a.authenticate(route("any"), &bearer(&t), None, now).await),
                (401, "malformed".into()),
                "{t}"
            );
        }
        assert_eq!(ep.calls.load(SeqCst), calls);
        let e = a
            .authenticate(route("any"), &bearer("opaque-broken"), None, now)
            .await
            .unwrap_err();
        assert_eq!(
            (e.status().as_u16(), e.code(), e.message()),
            (
                503,
                "authentication_unavailable",
                "credentials cannot be checked now; retry later"
            )
        );
    }

    #[tokio::test]
    async fn introspection_fails_closed() {
        let ep = endpoint().await;
        let now = palisade_core::now_nanos() / 1_000_000_000;
        let jwt = hs256(SECRET_A, claims("https://a.test"));
        // the endpoint refuses the gateway's credentials: 503, not a pass
        let (a, cfg, _dir) = introspecting(ep.port, "wrong-secret").await;
        let any = cfg.routes.iter().find(|r| r.name == "any").unwrap();
        assert_eq!(
            refused(a.authenticate(any, &bearer(&jwt), None, now).await),
            (503, "introspection_client_refused".into())
        );
        // nothing listens: 503
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        let (a, cfg, _dir) = introspecting(port, "gw-secret").await;
        let any = cfg.routes.iter().find(|r| r.name == "any").unwrap();
        assert_eq!(
            refused(a.authenticate(any, &bearer(&jwt), None, now).await),
            (503, "introspection_connect".into())
        );
        assert_eq!(
            refused(a.authenticate(any, &bearer("opaque-good"), None, now).await),
            (503, "introspection_connect".into())
        );
    }

    /// A key store that cannot be read.
    struct Down;
    impl palisade_apikey::Document for Down {
        fn read(&self) -> palisade_apikey::DocFuture<'_, (Option<Vec<u8>>, u64)> {
            Box::pin(async { Err("connection refused".to_string()) })
        }
        fn write(&self, _: Vec<u8>, _: u64) -> palisade_apikey::DocFuture<'_, bool> {
            Box::pin(async { Err("connection refused".to_string()) })
        }
    }

    #[tokio::test]
    async fn an_unreadable_key_store_is_a_503_not_a_bad_key() {
        // a store that read an empty table once, then went down
        struct Once(std::sync::atomic::AtomicBool);
        impl palisade_apikey::Document for Once {
            fn read(&self) -> palisade_apikey::DocFuture<'_, (Option<Vec<u8>>, u64)> {
                let first = !self.0.swap(true, std::sync::atomic::Ordering::SeqCst);
                Box::pin(async move {
                    if first {
                        Ok((None, 0))
                    } else {
                        Down.read().await
                    }
                })
            }
            fn write(&self, b: Vec<u8>, v: u64) -> palisade_apikey::DocFuture<'_, bool> {
                Down.write(b, v)
            }
        }
        let store = palisade_apikey::ApiKeyStore::open_document(
            Arc::new(Once(Default::default())),
            palisade_core::Secret::new(vec![1; 32]),
            palisade_apikey::StoreOptions {
                refresh_interval: Duration::ZERO,
                max_staleness: Duration::ZERO,
            },
        )
        .await
        .unwrap();
        let (_, cfg, _dir) = setup().await;
        let mut route = cfg.routes[0].clone();
        route.authn = vec![crate::config::AuthnMethod::ApiKey];
        let a = Authenticator::new(
            &[],
            Some(Arc::new(store)),
            "x-api-key",
            reqwest::Client::new(),
            None,
        )
        .await
        .unwrap();
        let mut h = HeaderMap::new();
        let key = format!(
            "pal_{}_{}",
            "a1B2c3D4e5F6", "0123456789abcdefghijABCDEFGHIJkl"
        );
        h.insert("x-api-key", key.parse().unwrap());
        let e = a.authenticate(&route, &h, None, 0).await.unwrap_err();
        assert_eq!(
            (e.status().as_u16(), e.code(), e.log_reason()),
            (
                503,
                "authentication_unavailable",
                "apikey_storage".to_string()
            )
        );
        // a malformed key is still a 401 (refused before the store is asked)
        h.insert("x-api-key", "pal_short".parse().unwrap());
        let e = a.authenticate(&route, &h, None, 0).await.unwrap_err();
        assert_eq!(e.status().as_u16(), 401);
    }
}
