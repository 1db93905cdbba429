//! The OAuth2/OIDC provider over HTTP: keys, clients and providers
//! (`identity/oidc/*`), discovery and JWKS, the token endpoint (client
//! credentials with each client authentication method, token exchange),
//! introspection, revocation, key rotation, with what each allows and
//! denies (exact status and error).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

const FORM: &str = "application/x-www-form-urlencoded";

/// A provider `p` with key `k` and a client `svc-a` that may call `svc-b`.
struct Setup {
    s: TestServer,
    issuer: String,
    client_id: String,
    secret: String,
}

async fn setup_with(alg: &str) -> Setup {
    let s = TestServer::dev().await;
    let r = s
        .post(
            "identity/oidc/key/default",
            &s.root,
            json!({"algorithm": alg, "rotation_period": "1h", "verification_ttl": "2h"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let base = format!("http://{}", s.addr);
    let r = s
        .post(
            "identity/oidc/provider/default",
            &s.root,
            json!({"issuer": base, "allowed_client_ids": "*", "scopes_supported": ["read", "write"]}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .post(
            "identity/oidc/client/svc-a",
            &s.root,
            json!({"allowed_scopes": ["read", "write"], "allowed_audiences": ["svc-b", "svc-c"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    Setup {
        issuer: format!("{base}/v1/identity/oidc/provider/default"),
        client_id: r.data()["client_id"].as_str().unwrap().to_string(),
        secret: r.data()["client_secret"].as_str().unwrap().to_string(),
        s,
    }
}

async fn setup() -> Setup {
    setup_with("EdDSA").await
}

fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

async fn post_form(s: &TestServer, ep: &str, auth: Option<String>, body: &str) -> Resp {
    let mut h = vec![("Content-Type", FORM.to_string())];
    if let Some(a) = auth {
        h.push(("Authorization", a));
    }
    s.send(
        "POST",
        &format!("identity/oidc/provider/default/{ep}"),
        &h,
        Some(body.as_bytes().to_vec()),
    )
    .await
}

async fn cc_token(x: &Setup, body: &str) -> Resp {
    post_form(&x.s, "token", Some(basic(&x.client_id, &x.secret)), body).await
}

async fn introspect(x: &Setup, t: String) -> Resp {
    post_form(
        &x.s,
        "introspect",
        Some(basic(&x.client_id, &x.secret)),
        &format!("token={t}"),
    )
    .await
}

async fn published_kids(s: &TestServer) -> Vec<String> {
    s.get("identity/oidc/provider/default/.well-known/keys", "")
        .await
        .body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

fn jwt_claims(t: &str) -> Value {
    let p = t.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn client_credentials_issue_a_jwt_the_jwks_verifies() {
    let x = setup().await;
    let r = cc_token(
        &x,
        "grant_type=client_credentials&scope=read&audience=svc-b",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["expires_in"], 300);
    assert_eq!(r.body["scope"], "read");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("pragma"), Some("no-cache"));
    let at = r.body["access_token"].as_str().unwrap().to_string();
    let c = jwt_claims(&at);
    assert_eq!(c["iss"], x.issuer.as_str());
    assert_eq!(c["sub"], x.client_id.as_str());
    assert_eq!(c["client_id"], x.client_id.as_str());
    assert_eq!(c["aud"], "svc-b");
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 300);
    for k in ["nbf", "jti"] {
        assert!(c.get(k).is_some(), "{k}");
    }

    // discovery (also at the root) and the JWKS, then an independent JOSE
    // library (jsonwebtoken) verifies the token with the published key
    let d =
        x.s.get(
            "identity/oidc/provider/default/.well-known/openid-configuration",
            "",
        )
        .await;
    assert_eq!(d.body["issuer"], x.issuer.as_str());
    assert_eq!(d.body["token_endpoint"], format!("{}/token", x.issuer));
    let root = reqwest::get(format!(
        "http://{}/.well-known/openid-configuration",
        x.s.addr
    ))
    .await
    .unwrap()
    .json::<Value>()
    .await
    .unwrap();
    assert_eq!(root, d.body);
    let jwks =
        x.s.get("identity/oidc/provider/default/.well-known/keys", "")
            .await;
    let keys = jwks.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "current and next");
    let header = jsonwebtoken::decode_header(&at).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let jwk = keys
        .iter()
        .find(|k| k["kid"].as_str() == header.kid.as_deref())
        .unwrap();
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_audience(&["svc-b"]);
    v.set_issuer(&[x.issuer.as_str()]);
    let got =
        jsonwebtoken::decode::<Value>(&at, &DecodingKey::from_jwk(&jwk).unwrap(), &v).unwrap();
    assert_eq!(got.claims["scope"], "read");
}

#[tokio::test]
async fn each_algorithm_signs_what_its_jwks_verifies() {
    for (alg, jalg) in [("ES256", Algorithm::ES256), ("RS256", Algorithm::RS256)] {
        let x = setup_with(alg).await;
        let r = cc_token(&x, "grant_type=client_credentials").await;
        let at = r.body["access_token"].as_str().unwrap().to_string();
        assert_eq!(jwt_claims(&at)["aud"], json!(["svc-b", "svc-c"]));
        assert_eq!(jwt_claims(&at)["scope"], "read write");
        let jwks =
            x.s.get("identity/oidc/provider/default/.well-known/keys", "")
                .await;
        let kid = jsonwebtoken::decode_header(&at).unwrap().kid.unwrap();
        let jwk = jwks.body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid.as_str())
            .unwrap()
            .clone();
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk).unwrap();
        let mut v = Validation::new(jalg);
        v.set_audience(&["svc-b"]);
        jsonwebtoken::decode::<Value>(&at, &DecodingKey::from_jwk(&jwk).unwrap(), &v).unwrap();
    }
}

#[tokio::test]
async fn client_authentication_allows_its_method_only_and_never_says_which_part_failed() {
    let x = setup().await;
    let s = &x.s;
    let invalid =
        json!({"error": "invalid_client", "error_description": "client authentication failed"});
    // wrong secret, unknown client: the same 401, with WWW-Authenticate
    for auth in [basic(&x.client_id, "wrong"), basic("nobody", &x.secret)] {
        let r = post_form(s, "token", Some(auth), "grant_type=client_credentials").await;
        assert_eq!((r.status, &r.body), (401, &invalid), "{}", r.text);
        assert_eq!(
            r.header("www-authenticate"),
            Some("Basic realm=\"palisade\"")
        );
    }
    // the secret in the form for a client registered for Basic: refused
    let body = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}",
        x.client_id, x.secret
    );
    let r = post_form(s, "token", None, &body).await;
    assert_eq!((r.status, &r.body), (401, &invalid));
    // two methods at once
    let r = post_form(s, "token", Some(basic(&x.client_id, &x.secret)), &body).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"], "invalid_request");
    // none
    let r = post_form(s, "token", None, "grant_type=client_credentials").await;
    assert_eq!(r.status, 401);
    // a client registered for client_secret_post
    let r = s
        .post(
            "identity/oidc/client/poster",
            &s.root,
            json!({"token_endpoint_auth_method": "client_secret_post", "allowed_audiences": "svc-b"}),
        )
        .await;
    let (pid, psec) = (
        r.data()["client_id"].as_str().unwrap().to_string(),
        r.data()["client_secret"].as_str().unwrap().to_string(),
    );
    let ok = post_form(
        s,
        "token",
        None,
        &format!("grant_type=client_credentials&client_id={pid}&client_secret={psec}"),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let r = post_form(
        s,
        "token",
        Some(basic(&pid, &psec)),
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!((r.status, &r.body), (401, &invalid));
    // JSON instead of a form; a parameter twice; an unknown grant
    let r = s
        .send(
            "POST",
            "identity/oidc/provider/default/token",
            &[
                ("Content-Type", "application/json".into()),
                ("Authorization", basic(&x.client_id, &x.secret)),
            ],
            Some(br#"{"grant_type":"client_credentials"}"#.to_vec()),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let r = cc_token(&x, "grant_type=client_credentials&scope=read&scope=write").await;
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let r = cc_token(&x, "grant_type=password&username=a&password=b").await;
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    // scopes and audiences beyond the client's
    let r = cc_token(&x, "grant_type=client_credentials&scope=admin").await;
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (400, Some("invalid_scope"))
    );
    let r = cc_token(&x, "grant_type=client_credentials&audience=svc-z").await;
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (400, Some("invalid_target"))
    );
    // a provider that does not allow the client
    let r = s
        .post(
            "identity/oidc/provider/default",
            &s.root,
            json!({"allowed_client_ids": ["someone-else"]}),
        )
        .await;
    assert_eq!(r.status, 204);
    let r = cc_token(&x, "grant_type=client_credentials").await;
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (400, Some("unauthorized_client"))
    );
}

#[tokio::test]
async fn private_key_jwt_clients_sign_once_used_assertions() {
    let x = setup().await;
    let s = &x.s;
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let jwks = palisade_jwt::jwks_from_pem(&[kp.public_key_pem()]).unwrap();
    let r = s
        .post(
            "identity/oidc/client/signer",
            &s.root,
            json!({"token_endpoint_auth_method": "private_key_jwt", "jwks": jwks, "allowed_audiences": "svc-b"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.data().get("client_secret").is_none());
    let cid = r.data()["client_id"].as_str().unwrap().to_string();
    let key = EncodingKey::from_ec_der(&kp.serialize_der());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let assertion = |jti: &str, aud: &str, exp: i64| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            &json!({"iss": cid, "sub": cid, "aud": aud, "exp": exp, "iat": now, "jti": jti}),
            &key,
        )
        .unwrap()
    };
    let form = |a: &str| {
        format!(
            "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={a}"
        )
    };
    let token_ep = format!("{}/token", x.issuer);
    let a1 = assertion("one", &token_ep, now + 60);
    let r = post_form(s, "token", None, &form(&a1)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        jwt_claims(r.body["access_token"].as_str().unwrap())["sub"],
        cid.as_str()
    );
    // replayed, wrong audience, too long-lived, signed by another key
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &json!({"iss": cid, "sub": cid, "aud": token_ep, "exp": now + 60, "jti": "x"}),
        &EncodingKey::from_ec_der(&other.serialize_der()),
    )
    .unwrap();
    for (what, a) in [
        ("replay", a1.clone()),
        (
            "audience",
            assertion("two", "https://elsewhere.test/token", now + 60),
        ),
        ("lifetime", assertion("three", &token_ep, now + 3600)),
        ("forged", forged),
    ] {
        let r = post_form(s, "token", None, &form(&a)).await;
        assert_eq!(
            (r.status, r.body["error"].as_str()),
            (401, Some("invalid_client")),
            "{what}: {}",
            r.text
        );
    }
}

#[tokio::test]
async fn introspection_and_revocation_follow_the_token_s_life() {
    let x = setup().await;
    let s = &x.s;
    let at = cc_token(&x, "grant_type=client_credentials&scope=read")
        .await
        .body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let intro = |t: &str| introspect(&x, t.to_string());
    let r = intro(&at).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["active"], true);
    assert_eq!(r.body["scope"], "read");
    assert_eq!(r.body["client_id"], x.client_id.as_str());
    // garbage, and a tampered signature: inactive
    assert_eq!(intro("nonsense").await.body, json!({"active": false}));
    let mut bad = at.clone();
    bad.pop();
    bad.push(if at.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(intro(&bad).await.body, json!({"active": false}));
    // introspection needs client authentication
    let r = post_form(s, "introspect", None, &format!("token={at}")).await;
    assert_eq!(r.status, 401);
    // another client cannot revoke it
    let r = s
        .post(
            "identity/oidc/client/other",
            &s.root,
            json!({"allowed_audiences": "svc-b"}),
        )
        .await;
    let (oid, osec) = (
        r.data()["client_id"].as_str().unwrap().to_string(),
        r.data()["client_secret"].as_str().unwrap().to_string(),
    );
    let r = post_form(
        s,
        "revoke",
        Some(basic(&oid, &osec)),
        &format!("token={at}"),
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (400, Some("unauthorized_client"))
    );
    assert_eq!(intro(&at).await.body["active"], true);
    // its own client can; then it is inactive, and revoking again is 200
    let r = post_form(
        s,
        "revoke",
        Some(basic(&x.client_id, &x.secret)),
        &format!("token={at}"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(intro(&at).await.body, json!({"active": false}));
    let r = post_form(
        s,
        "revoke",
        Some(basic(&x.client_id, &x.secret)),
        &format!("token={at}"),
    )
    .await;
    assert_eq!(r.status, 200);
    // expiry: a fresh token is inactive once its 5 minutes have passed
    let at2 = cc_token(&x, "grant_type=client_credentials").await.body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(intro(&at2).await.body["active"], true);
    s.clock.advance(Duration::from_secs(301));
    assert_eq!(intro(&at2).await.body, json!({"active": false}));
}

#[tokio::test]
async fn token_exchange_downscopes_for_another_audience_and_names_the_actor() {
    let x = setup().await;
    let s = &x.s;
    // svc-a's own client id is the audience of the incoming token
    let r = s
        .post(
            "identity/oidc/client/frontend",
            &s.root,
            json!({"allowed_scopes": ["read", "write"], "allowed_audiences": [x.client_id]}),
        )
        .await;
    let (fid, fsec) = (
        r.data()["client_id"].as_str().unwrap().to_string(),
        r.data()["client_secret"].as_str().unwrap().to_string(),
    );
    let user_token = post_form(
        s,
        "token",
        Some(basic(&fid, &fsec)),
        "grant_type=client_credentials&scope=read+write",
    )
    .await
    .body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let exchange = |sub: &str, extra: &str| {
        format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token={sub}&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token{extra}"
        )
    };
    let r = cc_token(&x, &exchange(&user_token, "&audience=svc-b&scope=read")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    let c = jwt_claims(r.body["access_token"].as_str().unwrap());
    assert_eq!(c["sub"], fid.as_str(), "the subject stays the original one");
    assert_eq!(c["act"], json!({"sub": x.client_id}));
    assert_eq!(c["aud"], "svc-b");
    assert_eq!(c["scope"], "read");
    // more scope than the subject token holds
    let r = s
        .post(
            "identity/oidc/client/frontend",
            &s.root,
            json!({"allowed_scopes": ["read"]}),
        )
        .await;
    assert_eq!(r.status, 200);
    let narrow = post_form(
        s,
        "token",
        Some(basic(&fid, &fsec)),
        "grant_type=client_credentials",
    )
    .await
    .body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = cc_token(&x, &exchange(&narrow, "&scope=write")).await;
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (400, Some("invalid_scope"))
    );
    // a token that was not issued for svc-a cannot be traded by it
    let for_b = cc_token(&x, "grant_type=client_credentials&audience=svc-b")
        .await
        .body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = cc_token(&x, &exchange(&for_b, "")).await;
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // a revoked or forged subject token
    let r = cc_token(&x, &exchange("a.b.c", "")).await;
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn rotation_keeps_old_tokens_valid_until_they_expire_and_not_after() {
    let x = setup().await;
    let s = &x.s;
    // tokens that live as long as the key stays published after rotation
    let r = s
        .post(
            "identity/oidc/client/svc-a",
            &s.root,
            json!({"access_token_ttl": "2h"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let before = cc_token(&x, "grant_type=client_credentials").await.body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let kid_before = jsonwebtoken::decode_header(&before).unwrap().kid.unwrap();
    let published = published_kids(s).await;
    assert_eq!(published.len(), 2);
    let next = published
        .iter()
        .find(|k| **k != kid_before)
        .unwrap()
        .clone();
    let intro = |t: String| introspect(&x, t);
    // the rotation period passes: the next key (published an hour ago) signs
    s.clock.advance(Duration::from_secs(3600));
    let after = cc_token(&x, "grant_type=client_credentials").await.body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        jsonwebtoken::decode_header(&after).unwrap().kid.unwrap(),
        next
    );
    let published = published_kids(s).await;
    assert!(
        published.contains(&kid_before),
        "the old key stays published"
    );
    assert_eq!(published.len(), 3);
    // a token signed before the rotation still verifies until it expires
    assert_eq!(intro(before.clone()).await.body["active"], true);
    assert_eq!(intro(after.clone()).await.body["active"], true);
    s.clock.advance(Duration::from_secs(3601));
    assert_eq!(intro(before.clone()).await.body, json!({"active": false}));
    // the verification TTL (2 h after the rotation) passes: the retired
    // key is no longer published, and nothing it signed verifies
    s.clock.advance(Duration::from_secs(3600));
    let published = published_kids(s).await;
    assert!(!published.contains(&kid_before), "{published:?}");
    assert_eq!(intro(before).await.body, json!({"active": false}));
}

#[tokio::test]
async fn client_secrets_are_shown_once_and_never_stored_or_audited() {
    let x = setup().await;
    let s = &x.s;
    let log = s.enable_audit("file").await;
    let r = s.get("identity/oidc/client/svc-a", &s.root).await;
    assert!(r.data().get("client_secret").is_none(), "{}", r.text);
    let at = cc_token(&x, "grant_type=client_credentials").await.body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = post_form(
        s,
        "token",
        None,
        &format!(
            "grant_type=client_credentials&client_id={}&client_secret={}",
            x.client_id, x.secret
        ),
    )
    .await;
    assert_eq!(r.status, 401);
    // a new secret replaces the old one
    let r = s
        .post(
            "identity/oidc/client/svc-a/rotate-secret",
            &s.root,
            json!({}),
        )
        .await;
    let new = r.data()["client_secret"].as_str().unwrap().to_string();
    assert_eq!(
        cc_token(&x, "grant_type=client_credentials").await.status,
        401
    );
    let ok = post_form(
        s,
        "token",
        Some(basic(&x.client_id, &new)),
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(ok.status, 200);
    let text = std::fs::read_to_string(&log).unwrap();
    for secret in [x.secret.as_str(), new.as_str(), at.as_str()] {
        assert!(!text.contains(secret), "a secret or token in the audit log");
    }
    // storage holds neither secret
    let mut stack = vec!["sys/oauth/".to_string()];
    while let Some(dir) = stack.pop() {
        for k in s.core.barrier.list(&dir).await.unwrap() {
            let key = format!("{dir}{k}");
            if key.ends_with('/') {
                stack.push(key);
                continue;
            }
            let v = s.core.barrier.get(&key).await.unwrap().unwrap();
            let v = String::from_utf8_lossy(&v);
            assert!(!v.contains(&x.secret) && !v.contains(&new), "{key}");
        }
    }
}

#[tokio::test]
async fn admin_writes_refuse_what_cannot_be_enforced() {
    let s = TestServer::dev().await;
    for (path, body, msg) in [
        (
            "identity/oidc/key/k",
            json!({"algorithm": "HS256"}),
            "algorithm must be one of EdDSA, ES256, RS256",
        ),
        (
            "identity/oidc/key/k",
            json!({"rotation_period": "10s"}),
            "rotation_period and verification_ttl must be at least 1m",
        ),
        (
            "identity/oidc/provider/p",
            json!({}),
            "issuer is required: tokens name it and clients check it",
        ),
        (
            "identity/oidc/provider/p",
            json!({"issuer": "http://evil.example.test"}),
            "issuer must be https://host[:port] (http only for a loopback host), without a path",
        ),
        (
            "identity/oidc/provider/p",
            json!({"issuer": "https://x.test/path"}),
            "issuer must be https://host[:port] (http only for a loopback host), without a path",
        ),
        (
            "identity/oidc/client/c",
            json!({"allowed_audiences": "b"}),
            "key \"default\" does not exist",
        ),
        (
            "identity/oidc/key/Bad",
            json!({}),
            "invalid name: names are lowercase ASCII letters, digits and '_-.', begin and end with a letter, a digit or '_'",
        ),
    ] {
        let r = s.post(path, &s.root, body).await;
        assert_error(&r, 400, msg);
    }
    let r = s
        .post(
            "identity/oidc/key/default",
            &s.root,
            json!({"verification_ttl": "10m"}),
        )
        .await;
    assert_eq!(r.status, 204);
    for (body, msg) in [
        (
            json!({}),
            "allowed_audiences must name at least one audience: a token is always for someone",
        ),
        (
            json!({"allowed_audiences": "b", "access_token_ttl": "1h"}),
            "access_token_ttl must be between 1s and the key's verification_ttl (600s): a token must never outlive its key's publication",
        ),
        (
            json!({"allowed_audiences": "b", "client_type": "public"}),
            "client_type must be \"confidential\": public clients cannot use client credentials",
        ),
        (
            json!({"allowed_audiences": "b", "token_endpoint_auth_method": "private_key_jwt"}),
            "private_key_jwt needs the client's public keys in jwks",
        ),
    ] {
        let r = s.post("identity/oidc/client/c", &s.root, body).await;
        assert_error(&r, 400, msg);
    }
    // a token without rights there is denied
    let t = s.powerless_token().await;
    assert_denied(
        &s.post(
            "identity/oidc/client/c",
            &t.id,
            json!({"allowed_audiences": "b"}),
        )
        .await,
    );
    // an unknown provider's endpoints are 404
    let r = s
        .get("identity/oidc/provider/nope/.well-known/keys", "")
        .await;
    assert_eq!(r.status, 404);
}

// ------------------------------------------------------------ review findings

/// A `private_key_jwt` client `signer` and a function making its assertions.
async fn signer_client(x: &Setup) -> (String, rcgen::KeyPair) {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let jwks = palisade_jwt::jwks_from_pem(&[kp.public_key_pem()]).unwrap();
    let r = x
        .s
        .post(
            "identity/oidc/client/signer",
            &x.s.root,
            json!({"token_endpoint_auth_method": "private_key_jwt", "jwks": jwks, "allowed_audiences": "svc-b"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    (r.data()["client_id"].as_str().unwrap().to_string(), kp)
}

fn assertion_form(cid: &str, kp: &rcgen::KeyPair, aud: &str, jti: &str, exp: i64) -> String {
    let a = jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &json!({"iss": cid, "sub": cid, "aud": aud, "exp": exp, "jti": jti}),
        &EncodingKey::from_ec_der(&kp.serialize_der()),
    )
    .unwrap();
    format!(
        "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={a}"
    )
}

#[tokio::test]
async fn a_used_assertion_stays_refused_after_tidy_within_the_leeway() {
    let x = setup().await;
    let s = &x.s;
    let (cid, kp) = signer_client(&x).await;
    let token_ep = format!("{}/token", x.issuer);
    let now = s.core.tokens.now();
    let form = assertion_form(&cid, &kp, &token_ep, "once", now + 5);
    assert_eq!(post_form(s, "token", None, &form).await.status, 200);
    // past its exp but inside the verifier's leeway, after a tidy
    s.clock.advance(Duration::from_secs(10));
    palisade_server::oauth::tidy(&s.core).await.unwrap();
    let r = post_form(s, "token", None, &form).await;
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (401, Some("invalid_client")),
        "{}",
        r.text
    );
    // and an assertion that expired a moment ago is refused outright
    let stale = assertion_form(&cid, &kp, &token_ep, "stale", s.core.tokens.now() - 5);
    let r = post_form(s, "token", None, &stale).await;
    assert_eq!(r.status, 401, "{}", r.text);
}

#[tokio::test]
async fn verification_ttl_never_drops_below_a_clients_token_life() {
    let x = setup().await; // key default: verification_ttl 2h; svc-a access_token_ttl 300
    let s = &x.s;
    let r = s
        .post(
            "identity/oidc/key/default/rotate",
            &s.root,
            json!({"verification_ttl": "1s"}),
        )
        .await;
    assert_error(
        &r,
        400,
        "rotation_period and verification_ttl must be at least 1m",
    );
    let r = s
        .post(
            "identity/oidc/client/svc-a",
            &s.root,
            json!({"access_token_ttl": "1h"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .post(
            "identity/oidc/key/default",
            &s.root,
            json!({"verification_ttl": "30m"}),
        )
        .await;
    assert_error(
        &r,
        400,
        "verification_ttl (1800s) is shorter than the access_token_ttl of client \"svc-a\" (3600s): its tokens would outlive their key",
    );
    // a token's key stays published for its whole life
    let at = cc_token(&x, "grant_type=client_credentials").await.body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let kid = jsonwebtoken::decode_header(&at).unwrap().kid.unwrap();
    assert_eq!(
        s.post("identity/oidc/key/default/rotate", &s.root, json!({}))
            .await
            .status,
        204
    );
    s.clock.advance(Duration::from_secs(3599));
    assert!(published_kids(s).await.contains(&kid));

    // Vault: `verification_ttl` on rotate is for that rotation only, and 0
    // means the key's own; never shorter than a client's token life
    let before =
        s.get("identity/oidc/key/default", &s.root).await.data()["verification_ttl"].clone();
    for body in [
        json!({"verification_ttl": 0}),
        json!({"verification_ttl": "3h"}),
    ] {
        let r = s
            .post("identity/oidc/key/default/rotate", &s.root, body)
            .await;
        assert_eq!(r.status, 204, "{}", r.text);
        let now =
            s.get("identity/oidc/key/default", &s.root).await.data()["verification_ttl"].clone();
        assert_eq!(now, before);
    }
    let r = s
        .post(
            "identity/oidc/key/default/rotate",
            &s.root,
            json!({"verification_ttl": "30m"}),
        )
        .await;
    assert_error(
        &r,
        400,
        "verification_ttl (1800s) is shorter than the access_token_ttl of client \"svc-a\" (3600s): its tokens would outlive their key",
    );
}

#[tokio::test]
async fn tokens_signed_before_an_algorithm_change_are_still_introspected() {
    let x = setup().await;
    let at = cc_token(&x, "grant_type=client_credentials").await.body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r =
        x.s.post(
            "identity/oidc/key/default",
            &x.s.root,
            json!({"algorithm": "ES256"}),
        )
        .await;
    assert_eq!(r.status, 204);
    let kid = jsonwebtoken::decode_header(&at).unwrap().kid.unwrap();
    assert!(published_kids(&x.s).await.contains(&kid));
    assert_eq!(introspect(&x, at.clone()).await.body["active"], true);
    // and revoking it takes effect
    let r = post_form(
        &x.s,
        "revoke",
        Some(basic(&x.client_id, &x.secret)),
        &format!("token={at}"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(introspect(&x, at).await.body, json!({"active": false}));
}

#[tokio::test]
async fn basic_credentials_are_compared_whole() {
    let x = setup().await;
    for auth in [
        basic(&x.client_id, &format!("{}&junk=1", x.secret)),
        basic(&format!("{}&junk", x.client_id), &x.secret),
    ] {
        let r = post_form(&x.s, "token", Some(auth), "grant_type=client_credentials").await;
        assert_eq!(r.status, 401, "{}", r.text);
    }
    let upper = basic(&x.client_id, &x.secret).replacen("Basic", "BASIC", 1);
    let r = post_form(&x.s, "token", Some(upper), "grant_type=client_credentials").await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn the_audit_log_names_the_client_and_why_authentication_failed() {
    let x = setup().await;
    let s = &x.s;
    let log = s.enable_audit("file").await;
    assert_eq!(
        cc_token(&x, "grant_type=client_credentials").await.status,
        200
    );
    let r = post_form(
        s,
        "token",
        Some(basic(&x.client_id, "wrong")),
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(r.status, 401);
    let records = audit_records(&log);
    let token = audit_for(&records, "identity/oidc/provider/default/token");
    let responses: Vec<&&Value> = token.iter().filter(|r| r["type"] == "response").collect();
    assert_eq!(responses.len(), 2);
    assert_eq!(
        responses[0]["auth"]["metadata"]["client_id"],
        x.client_id.as_str(),
        "{}",
        responses[0]
    );
    assert_eq!(responses[1]["error"], "invalid_client: wrong secret");
}

#[tokio::test]
async fn issuers_are_stored_normalised_and_without_credentials() {
    let s = TestServer::dev().await;
    assert_eq!(
        s.post("identity/oidc/key/default", &s.root, json!({}))
            .await
            .status,
        204
    );
    let bad = "issuer must be https://host[:port] (http only for a loopback host), without a path";
    for i in [
        "http://:pw@127.0.0.1:1",
        "http://u:pw@127.0.0.1:1",
        "http://127.0.0.1:1/.",
    ] {
        let r = s
            .post("identity/oidc/provider/x", &s.root, json!({"issuer": i}))
            .await;
        assert_error(&r, 400, bad);
    }
    let r = s
        .post(
            "identity/oidc/provider/x",
            &s.root,
            json!({"issuer": "HTTP://127.0.0.1:1/"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.get("identity/oidc/provider/x", &s.root).await;
    assert_eq!(
        r.data()["issuer"],
        "http://127.0.0.1:1/v1/identity/oidc/provider/x"
    );
}

#[tokio::test]
async fn a_deleted_clients_tokens_die_with_it_and_scopes_follow_the_provider() {
    let x = setup().await;
    let s = &x.s;
    let at = cc_token(&x, "grant_type=client_credentials").await.body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    // the provider supports read and write; a client allowed more gets no more
    let r = s
        .post(
            "identity/oidc/client/svc-a",
            &s.root,
            json!({"allowed_scopes": ["read", "admin"]}),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = cc_token(&x, "grant_type=client_credentials&scope=admin").await;
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (400, Some("invalid_scope")),
        "{}",
        r.text
    );
    let r = cc_token(&x, "grant_type=client_credentials").await;
    assert_eq!(r.body["scope"], "read", "{}", r.text);
    // an introspecting client of its own
    let r = s
        .post(
            "identity/oidc/client/gw",
            &s.root,
            json!({"allowed_audiences": "x"}),
        )
        .await;
    let (gid, gsec) = (
        r.data()["client_id"].as_str().unwrap().to_string(),
        r.data()["client_secret"].as_str().unwrap().to_string(),
    );
    let form = format!("token={at}");
    let r = post_form(s, "introspect", Some(basic(&gid, &gsec)), &form).await;
    assert_eq!(r.body["active"], true);
    assert_eq!(
        s.delete("identity/oidc/client/svc-a", &s.root).await.status,
        204
    );
    let r = post_form(s, "introspect", Some(basic(&gid, &gsec)), &form).await;
    assert_eq!(r.body, json!({"active": false}));
}

// ------------------------------------------------------------ final review

#[tokio::test]
async fn an_exact_deny_on_a_client_holds_in_every_spelling() {
    let x = setup().await;
    let s = &x.s;
    let t = s
        .token_with(
            r#"
path "identity/oidc/client/*" { capabilities = ["create", "update", "read"] }
path "identity/oidc/client/svc-a" { capabilities = ["deny"] }
path "identity/oidc/client/svc-a/rotate-secret" { capabilities = ["deny"] }
"#,
        )
        .await;
    assert_denied(
        &s.post(
            "identity/oidc/client/svc-a",
            &t.id,
            json!({"allowed_audiences": "evil"}),
        )
        .await,
    );
    for variant in [
        "identity/oidc/client/svc-a/",
        "identity/oidc/client/svc-a/rotate-secret/",
        "identity/oidc/client/SVC-A",
        "identity/oidc/client/svc%2Da",
    ] {
        let r = s
            .post(variant, &t.id, json!({"allowed_audiences": "evil"}))
            .await;
        assert!(
            r.status == 403 || r.status == 400 || r.status == 404,
            "{variant}: {} {}",
            r.status,
            r.text
        );
        assert!(!r.text.contains("client_secret"), "{variant}: {}", r.text);
    }
    // nothing changed: the client still has its audiences and its secret works
    let r = s.get("identity/oidc/client/svc-a", &s.root).await;
    assert_eq!(r.data()["allowed_audiences"], json!(["svc-b", "svc-c"]));
    assert_eq!(
        cc_token(&x, "grant_type=client_credentials").await.status,
        200
    );
    // a trailing slash is LIST's form only
    let r = s
        .post("identity/oidc/client/svc-a/", &s.root, json!({}))
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = s.list("identity/oidc/client/", &s.root).await;
    assert_eq!(r.data()["keys"], json!(["svc-a"]), "{}", r.text);
}
