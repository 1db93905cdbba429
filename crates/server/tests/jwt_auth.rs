//! The jwt auth method over HTTP: config (PEM keys, a JWKS URL, OIDC
//! discovery), roles and login, with each binding (issuer, audience,
//! subject, claims, expiry, signature, CIDR) allowing and denying, a JWKS
//! URL that goes down, and secrecy in the audit log.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const INVALID: &str = "invalid JWT or role";
const ISS: &str = "https://ci.example.test";

struct Signer {
    key: EncodingKey,
    pem: String,
}

impl Signer {
    fn new() -> Self {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        Signer {
            key: EncodingKey::from_ec_der(&kp.serialize_der()),
            pem: kp.public_key_pem(),
        }
    }
    fn sign(&self, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, &self.key).unwrap()
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims a CI job's token would carry.
fn claims(extra: Value) -> Value {
    let mut c = json!({
        "iss": ISS,
        "sub": "repo:acme/web:ref:refs/heads/main",
        "aud": "palisade",
        "iat": now(),
        "exp": now() + 300,
        "repository": "acme/web",
        "ref": "refs/heads/main",
        "actor": "octocat",
        "groups": ["dev", "ops"],
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

async fn enable(s: &TestServer) {
    let r = s
        .post("sys/auth/jwt", &s.root, json!({"type": "jwt"}))
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
}

async fn configure_pem(s: &TestServer, signer: &Signer) {
    let r = s
        .post(
            "auth/jwt/config",
            &s.root,
            json!({"jwt_validation_pubkeys": [signer.pem], "bound_issuer": ISS, "jwt_supported_algs": ["ES256"]}),
        )
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
}

async fn role(s: &TestServer, name: &str, body: Value) {
    let r = s
        .post(&format!("auth/jwt/role/{name}"), &s.root, body)
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""), "role {name}");
}

async fn login(s: &TestServer, role: &str, jwt: &str) -> Resp {
    s.call(
        "POST",
        "auth/jwt/login",
        None,
        Some(json!({"role": role, "jwt": jwt})),
    )
    .await
}

fn ci_role() -> Value {
    json!({
        "role_type": "jwt",
        "bound_audiences": ["palisade"],
        "user_claim": "actor",
        "bound_claims_type": "glob",
        "bound_claims": {"sub": "repo:acme/*:ref:refs/heads/main"},
        "claim_mappings": {"repository": "repo"},
        "groups_claim": "groups",
        "token_policies": ["deploy"],
        "token_ttl": "10m",
    })
}

#[tokio::test]
async fn a_signed_token_meeting_the_roles_bindings_logs_in() {
    let s = TestServer::dev().await;
    let signer = Signer::new();
    enable(&s).await;
    configure_pem(&s, &signer).await;
    role(&s, "ci", ci_role()).await;
    let r = login(&s, "ci", &signer.sign(&claims(json!({})))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.auth()["policies"], json!(["default", "deploy"]));
    assert_eq!(
        r.auth()["metadata"],
        json!({"repo": "acme/web", "role": "ci"})
    );
    assert_eq!(r.auth()["lease_duration"], 600);
    let token = r.auth()["client_token"].as_str().unwrap().to_string();
    let r = s.get("auth/token/lookup-self", &token).await;
    assert_eq!(r.data()["display_name"], "jwt-octocat");
    assert_eq!(r.data()["path"], "auth/jwt/login");
    // reads back
    let r = s.get("auth/jwt/config", &s.root).await;
    assert_eq!(r.data()["bound_issuer"], ISS);
    let r = s.get("auth/jwt/role/ci", &s.root).await;
    assert_eq!(
        r.data()["bound_claims"],
        json!({"sub": "repo:acme/*:ref:refs/heads/main"})
    );
}

#[tokio::test]
async fn every_binding_denies_when_it_does_not_match() {
    let s = TestServer::dev().await;
    let signer = Signer::new();
    enable(&s).await;
    configure_pem(&s, &signer).await;
    role(&s, "ci", ci_role()).await;
    role(
        &s,
        "exact",
        json!({"bound_subject": "repo:acme/web:ref:refs/heads/main", "bound_audiences": "palisade", "user_claim": "sub"}),
    )
    .await;
    let other = Signer::new();
    let cases: Vec<(&str, &str, String)> = vec![
        (
            "wrong audience",
            "ci",
            signer.sign(&claims(json!({"aud": "someone-else"}))),
        ),
        (
            "no audience",
            "ci",
            signer.sign(&claims(json!({"aud": null}))),
        ),
        (
            "wrong issuer",
            "ci",
            signer.sign(&claims(json!({"iss": "https://evil.test"}))),
        ),
        (
            "expired",
            "ci",
            signer.sign(&claims(json!({"exp": now() - 120}))),
        ),
        (
            "not yet valid",
            "ci",
            signer.sign(&claims(json!({"nbf": now() + 600}))),
        ),
        ("no exp", "ci", signer.sign(&claims(json!({"exp": null})))),
        (
            "other repo",
            "ci",
            signer.sign(&claims(json!({"sub": "repo:evil/web:ref:refs/heads/main"}))),
        ),
        (
            "other branch",
            "ci",
            signer.sign(&claims(json!({"sub": "repo:acme/web:ref:refs/heads/dev"}))),
        ),
        (
            "no user claim",
            "ci",
            signer.sign(&claims(json!({"actor": null}))),
        ),
        (
            "groups not a list",
            "ci",
            signer.sign(&claims(json!({"groups": 7}))),
        ),
        ("another key", "ci", other.sign(&claims(json!({})))),
        (
            "subject",
            "exact",
            signer.sign(&claims(
                json!({"sub": "repo:acme/web:ref:refs/heads/mainx"}),
            )),
        ),
        ("unknown role", "nope", signer.sign(&claims(json!({})))),
        ("uncanonical role", "CI", signer.sign(&claims(json!({})))),
    ];
    for (what, r, jwt) in &cases {
        let resp = login(&s, r, jwt).await;
        assert_eq!(
            (resp.status, &resp.body),
            (400, &json!({"errors": [INVALID]})),
            "{what}: {}",
            resp.text
        );
    }
    // a token whose audience is set, on a role that binds none: refused (Vault)
    role(
        &s,
        "noaud",
        json!({"bound_subject": "repo:acme/web:ref:refs/heads/main", "user_claim": "sub"}),
    )
    .await;
    assert_error(
        &login(&s, "noaud", &signer.sign(&claims(json!({})))).await,
        400,
        INVALID,
    );
    let ok = signer.sign(&claims(json!({"aud": null})));
    assert_eq!(login(&s, "noaud", &ok).await.status, 200);

    // a forged signature, alg none, a tampered payload
    let good = signer.sign(&claims(json!({})));
    let parts: Vec<&str> = good.split('.').collect();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let tampered_payload = b64.encode(
        serde_json::to_vec(&claims(
            json!({"sub": "repo:acme/web:ref:refs/heads/main", "actor": "admin"}),
        ))
        .unwrap(),
    );
    let none_header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
    for (what, jwt) in [
        (
            "tampered payload",
            format!("{}.{}.{}", parts[0], tampered_payload, parts[2]),
        ),
        ("alg none", format!("{none_header}.{}.", parts[1])),
        ("garbage", "not.a.jwt".to_string()),
    ] {
        let r = login(&s, "ci", &jwt).await;
        assert_error(&r, 400, INVALID);
        let _ = what;
    }
    // malformed requests
    let r = s
        .call("POST", "auth/jwt/login", None, Some(json!({"role": "ci"})))
        .await;
    assert_error(&r, 400, "missing jwt");
    let r = s
        .call("POST", "auth/jwt/login", None, Some(json!({"jwt": good})))
        .await;
    assert_error(&r, 400, "missing role");
}

#[tokio::test]
async fn config_and_roles_refuse_what_cannot_be_enforced() {
    let s = TestServer::dev().await;
    let signer = Signer::new();
    enable(&s).await;
    let cases = [
        (
            json!({"bound_issuer": ISS}),
            "exactly one of 'jwt_validation_pubkeys', 'jwks_url' or 'oidc_discovery_url' must be set",
        ),
        (
            json!({"jwt_validation_pubkeys": [signer.pem], "jwks_url": "https://x.test/jwks", "bound_issuer": ISS}),
            "exactly one of 'jwt_validation_pubkeys', 'jwks_url' or 'oidc_discovery_url' must be set",
        ),
        (
            json!({"jwt_validation_pubkeys": [signer.pem]}),
            "bound_issuer is required: tokens are accepted from that issuer only",
        ),
        (
            json!({"jwks_url": "http://jwks.example.test/keys", "bound_issuer": ISS}),
            "jwks_url must be an https URL (plain http only to a loopback host)",
        ),
        (
            json!({"jwt_validation_pubkeys": ["not a pem"], "bound_issuer": ISS}),
            "invalid jwt_validation_pubkeys: key #1: not PEM",
        ),
        (
            json!({"jwt_validation_pubkeys": [signer.pem], "bound_issuer": ISS, "jwt_supported_algs": ["HS256"]}),
            "unsupported algorithm in jwt_supported_algs: \"HS256\" (RS256, PS256, ES256, ES384 and EdDSA are)",
        ),
        (
            json!({"jwt_validation_pubkeys": [signer.pem], "bound_issuer": ISS, "jwks_ca_pem": "x"}),
            "invalid jwks_ca_pem: expected one or more PEM certificates",
        ),
        (
            json!({"jwt_validation_pubkeys": [signer.pem], "bound_issuer": ISS, "oidc_client_id": "x"}),
            "oidc_client_id is not supported: the JWT method verifies tokens only (no OIDC browser flow)",
        ),
    ];
    for (body, msg) in cases {
        let r = s.post("auth/jwt/config", &s.root, body.clone()).await;
        assert_error(&r, 400, msg);
    }
    assert_empty_404(&s.get("auth/jwt/config", &s.root).await);
    configure_pem(&s, &signer).await;
    for (body, msg) in [
        (
            json!({"user_claim": "sub"}),
            "must have at least one bound constraint when creating/updating a role",
        ),
        (
            json!({"bound_audiences": "a"}),
            "a user claim must be defined on the role",
        ),
        (
            json!({"role_type": "oidc", "bound_audiences": "a", "user_claim": "sub"}),
            "role_type \"oidc\" is not supported: the browser OIDC flow is not built; use \"jwt\"",
        ),
        (
            json!({"bound_audiences": "a", "user_claim": "sub", "bound_claims": {"x": 1}}),
            "bound_claims values must be strings or lists of strings",
        ),
        (
            json!({"bound_audiences": "a", "user_claim": "sub", "bound_claims_type": "regex"}),
            "invalid 'bound_claims_type': must be \"string\" or \"glob\"",
        ),
        (
            json!({"bound_audiences": "a", "user_claim": "sub", "token_policies": "root"}),
            "token_policies cannot hold \"root\": auth methods cannot create root tokens",
        ),
    ] {
        let r = s.post("auth/jwt/role/r", &s.root, body.clone()).await;
        assert_error(&r, 400, msg);
    }
}

/// A JWKS (and OIDC discovery) endpoint on loopback, which can be stopped.
async fn jwks_server(
    jwks: String,
    issuer_is_self: bool,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let discovery = json!({
        "issuer": if issuer_is_self { base.clone() } else { "https://elsewhere.test".into() },
        "jwks_uri": format!("{base}/keys"),
    })
    .to_string();
    let app = axum::Router::new()
        .route("/keys", axum::routing::get(move || async move { jwks }))
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || async move { discovery }),
        );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    (base, tx)
}

#[tokio::test]
async fn keys_come_from_a_jwks_url_or_discovery_and_survive_it_going_down() {
    let s = TestServer::dev().await;
    let signer = Signer::new();
    let jwks = palisade_jwt::jwks_from_pem(std::slice::from_ref(&signer.pem)).unwrap();
    enable(&s).await;

    // discovery whose issuer is not the URL is refused (OIDC Discovery §4.3)
    let (bad, stop_bad) = jwks_server(jwks.clone(), false).await;
    let r = s
        .post(
            "auth/jwt/config",
            &s.root,
            json!({"oidc_discovery_url": bad}),
        )
        .await;
    assert_error(
        &r,
        400,
        "error checking oidc discovery URL: its issuer is not the discovery URL",
    );
    let _ = stop_bad.send(());

    let (base, stop) = jwks_server(jwks, true).await;
    let r = s
        .post(
            "auth/jwt/config",
            &s.root,
            json!({"oidc_discovery_url": base, "jwt_supported_algs": "ES256"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.get("auth/jwt/config", &s.root).await;
    assert_eq!(r.data()["bound_issuer"], base.as_str());
    role(
        &s,
        "svc",
        json!({"bound_audiences": "palisade", "user_claim": "sub"}),
    )
    .await;
    let jwt = signer.sign(&claims(json!({"iss": base})));
    assert_eq!(login(&s, "svc", &jwt).await.status, 200);

    // the JWKS server goes away: the last good keys still verify
    let _ = stop.send(());
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let jwt = signer.sign(&claims(json!({"iss": base, "sub": "second"})));
    let r = login(&s, "svc", &jwt).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // a key it never published does not
    let other = Signer::new();
    let r = login(&s, "svc", &other.sign(&claims(json!({"iss": base})))).await;
    assert_error(&r, 400, INVALID);

    // a plain jwks_url works the same way
    let (base2, _stop2) = jwks_server(
        palisade_jwt::jwks_from_pem(std::slice::from_ref(&other.pem)).unwrap(),
        true,
    )
    .await;
    let r = s
        .post(
            "auth/jwt/config",
            &s.root,
            json!({"jwks_url": format!("{base2}/keys"), "bound_issuer": ISS, "jwt_supported_algs": ["ES256"]}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(
        login(&s, "svc", &other.sign(&claims(json!({}))))
            .await
            .status,
        200
    );
    // the old keys are gone with the old config
    assert_error(
        &login(&s, "svc", &signer.sign(&claims(json!({})))).await,
        400,
        INVALID,
    );
}

#[tokio::test]
async fn jwts_never_reach_the_audit_log_and_failures_say_why_there() {
    let s = TestServer::dev().await;
    let log = s.enable_audit("file").await;
    let signer = Signer::new();
    enable(&s).await;
    configure_pem(&s, &signer).await;
    role(&s, "ci", ci_role()).await;
    let good = signer.sign(&claims(json!({})));
    let token = login(&s, "ci", &good).await.auth()["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    let bad = signer.sign(&claims(json!({"aud": "other"})));
    assert_error(&login(&s, "ci", &bad).await, 400, INVALID);
    let text = std::fs::read_to_string(&log).unwrap();
    for secret in [good.as_str(), bad.as_str(), token.as_str()] {
        assert!(!text.contains(secret), "a JWT or token in the audit log");
    }
    let records = audit_records(&log);
    let logins = audit_for(&records, "auth/jwt/login");
    assert_eq!(
        logins.last().unwrap()["error"],
        "aud claim does not match any bound audience"
    );
}

#[tokio::test]
async fn renewal_needs_the_role_unchanged() {
    let s = TestServer::dev().await;
    let signer = Signer::new();
    enable(&s).await;
    configure_pem(&s, &signer).await;
    role(&s, "ci", ci_role()).await;
    let r = login(&s, "ci", &signer.sign(&claims(json!({})))).await;
    let token = r.auth()["client_token"].as_str().unwrap().to_string();
    assert_eq!(
        s.post("auth/token/renew-self", &token, json!({}))
            .await
            .status,
        200
    );
    let mut changed = ci_role();
    changed["token_policies"] = json!(["other"]);
    role(&s, "ci", changed).await;
    assert_error(
        &s.post("auth/token/renew-self", &token, json!({})).await,
        400,
        "failed to renew entry: policies have changed, not renewing",
    );
}

/// A CA and a server certificate for 127.0.0.1 it issued (PEM).
fn tls_ca_and_leaf() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "test issuer CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    (ca_cert.pem(), leaf.pem(), leaf_key.serialize_pem())
}

/// A JWKS endpoint over TLS on loopback (`/keys`), with a certificate
/// from a private CA; answers every request with the JWKS.
async fn tls_jwks_server(jwks: String, cert_pem: &str, key_pem: &str) -> String {
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .map(|c| c.unwrap())
        .collect();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let jwks = jwks.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{jwks}",
                    jwks.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    base
}

#[tokio::test]
async fn a_private_ca_bundle_is_the_only_trust_for_the_jwks_url() {
    let s = TestServer::dev().await;
    let signer = Signer::new();
    enable(&s).await;
    role(
        &s,
        "svc",
        json!({"bound_audiences": "palisade", "user_claim": "sub"}),
    )
    .await;
    let (ca, leaf, key) = tls_ca_and_leaf();
    let base = tls_jwks_server(
        palisade_jwt::jwks_from_pem(std::slice::from_ref(&signer.pem)).unwrap(),
        &leaf,
        &key,
    )
    .await;
    let url = format!("{base}/keys");
    // the system's roots do not trust the private CA: refused at config time
    let r = s
        .post(
            "auth/jwt/config",
            &s.root,
            json!({"jwks_url": url, "bound_issuer": ISS, "jwt_supported_algs": "ES256"}),
        )
        .await;
    assert_error(
        &r,
        400,
        "error checking jwks URL: the keys could not be fetched",
    );
    // nor does another CA
    let (other_ca, _, _) = tls_ca_and_leaf();
    let r = s
        .post(
            "auth/jwt/config",
            &s.root,
            json!({"jwks_url": url, "bound_issuer": ISS, "jwt_supported_algs": "ES256", "jwks_ca_pem": other_ca}),
        )
        .await;
    assert_error(
        &r,
        400,
        "error checking jwks URL: the keys could not be fetched",
    );
    // the leaf itself is not a CA: trusting it is not trusting its issuer
    let r = s
        .post(
            "auth/jwt/config",
            &s.root,
            json!({"jwks_url": url, "bound_issuer": ISS, "jwt_supported_algs": "ES256", "jwks_ca_pem": leaf}),
        )
        .await;
    assert_error(
        &r,
        400,
        "error checking jwks URL: the keys could not be fetched",
    );
    assert_empty_404(&s.get("auth/jwt/config", &s.root).await);
    // the issuing CA: keys fetched over TLS, logins verify
    let r = s
        .post(
            "auth/jwt/config",
            &s.root,
            json!({"jwks_url": url, "bound_issuer": ISS, "jwt_supported_algs": "ES256", "jwks_ca_pem": ca}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.get("auth/jwt/config", &s.root).await;
    assert_eq!(r.data()["jwks_ca_pem"], ca.as_str());
    let r = login(&s, "svc", &signer.sign(&claims(json!({})))).await;
    assert_eq!(r.status, 200, "{}", r.text);
}
