//! Response wrapping over HTTP: `X-Vault-Wrap-TTL` on any response,
//! `sys/wrapping/wrap|unwrap|lookup|rewrap`, single use under concurrency,
//! expiry, what a wrapping token may and may not do, and secrecy in the
//! audit log.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const GONE: &str = "wrapping token is not valid or does not exist";

async fn wrapped(s: &TestServer, method: &str, path: &str, ttl: &str, body: Option<Value>) -> Resp {
    let headers = vec![
        ("X-Vault-Token", s.root.clone()),
        ("X-Vault-Wrap-TTL", ttl.to_string()),
        ("Content-Type", "application/json".to_string()),
    ];
    s.send(
        method,
        path,
        &headers,
        body.map(|b| serde_json::to_vec(&b).unwrap()),
    )
    .await
}

fn wrap_token(r: &Resp) -> String {
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"], Value::Null, "{}", r.text);
    assert_eq!(r.body["auth"], Value::Null, "{}", r.text);
    r.body["wrap_info"]["token"].as_str().unwrap().to_string()
}

async fn unwrap_with_body(s: &TestServer, caller: &str, token: &str) -> Resp {
    s.post("sys/wrapping/unwrap", caller, json!({ "token": token }))
        .await
}

#[tokio::test]
async fn a_wrapped_read_is_unwrapped_once() {
    let s = TestServer::dev().await;
    s.kv_put("app/db", json!({"password": "hunter2-wrapped"}))
        .await;
    let r = wrapped(&s, "GET", "secret/data/app/db", "90s", None).await;
    assert!(!r.text.contains("hunter2-wrapped"), "{}", r.text);
    assert_eq!(r.body["wrap_info"]["ttl"], 90);
    assert_eq!(r.body["wrap_info"]["creation_path"], "secret/data/app/db");
    let token = wrap_token(&r);

    let r = s
        .post("sys/wrapping/lookup", "", json!({ "token": token }))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["creation_path"], "secret/data/app/db");
    assert_eq!(r.data()["creation_ttl"], 90);

    // a token with only the default policy unwraps it
    let user = s
        .create_token(&s.root, json!({"policies": ["default"]}))
        .await;
    let r = unwrap_with_body(&s, &user.id, &token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["data"]["password"], "hunter2-wrapped");
    assert_eq!(r.body["wrap_info"], Value::Null);
    // once
    assert_error(&unwrap_with_body(&s, &user.id, &token).await, 400, GONE);
    let r = s
        .post("sys/wrapping/lookup", "", json!({ "token": token }))
        .await;
    assert_error(&r, 400, GONE);
}

#[tokio::test]
async fn a_wrapping_token_unwraps_itself_and_does_nothing_else() {
    let s = TestServer::dev().await;
    s.kv_put("x", json!({"v": "1"})).await;
    let token = wrap_token(&wrapped(&s, "GET", "secret/data/x", "5m", None).await);
    // it authorises nothing but its own unwrapping
    assert_denied(&s.get("secret/data/x", &token).await);
    assert_denied(&s.get("auth/token/lookup-self", &token).await);
    assert_denied(&s.post("auth/token/create", &token, json!({})).await);
    assert_denied(&s.post("sys/wrapping/wrap", &token, json!({"a": "b"})).await);
    // itself, as its own token (hvac's `unwrap()` without an argument)
    let r = s.post("sys/wrapping/unwrap", &token, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["data"]["v"], "1");
    // and then it is gone: unwrapping with it says so (Vault: 400, as
    // for a wrapping token named in the body); anything else is denied
    assert_error(
        &s.post("sys/wrapping/unwrap", &token, json!({})).await,
        400,
        GONE,
    );
    assert_denied(&s.get("secret/data/x", &token).await);

    // nor another wrapping token's: denied, and its one use is spent on
    // the attempt (tamper evidence), while the other one still unwraps
    let mine = wrap_token(&wrapped(&s, "GET", "secret/data/x", "5m", None).await);
    let other = wrap_token(&wrapped(&s, "GET", "secret/data/x", "5m", None).await);
    assert_denied(&unwrap_with_body(&s, &mine, &other).await);
    assert_error(
        &s.post("sys/wrapping/unwrap", &mine, json!({})).await,
        400,
        GONE,
    );
    let r = unwrap_with_body(&s, &s.root, &other).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn concurrent_unwraps_hand_the_response_out_once() {
    let s = TestServer::dev().await;
    s.kv_put("race", json!({"v": "only-once"})).await;
    for _ in 0..5 {
        let token = wrap_token(&wrapped(&s, "GET", "secret/data/race", "5m", None).await);
        let mut set = tokio::task::JoinSet::new();
        for i in 0..12 {
            let url = s.url("sys/wrapping/unwrap");
            // half as their own token, half through the body with root's
            let (header, body) = if i % 2 == 0 {
                (token.clone(), json!({}))
            } else {
                (s.root.clone(), json!({"token": token}))
            };
            set.spawn(async move {
                let r = reqwest::Client::builder()
                    .no_proxy()
                    .build()
                    .unwrap()
                    .post(url)
                    .header("X-Vault-Token", header)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            });
        }
        let results = set.join_all().await;
        let got: Vec<_> = results
            .iter()
            .filter(|(_, t)| t.contains("only-once"))
            .collect();
        assert_eq!(got.len(), 1, "{results:?}");
        for (st, _) in results.iter().filter(|(_, t)| !t.contains("only-once")) {
            assert!(*st == 400 || *st == 403, "{results:?}");
        }
    }
}

#[tokio::test]
async fn a_wrapped_token_creation_hands_out_a_working_token() {
    let s = TestServer::dev().await;
    let r = wrapped(
        &s,
        "POST",
        "auth/token/create",
        "15m",
        Some(json!({"period": "30m", "policies": ["default"]})),
    )
    .await;
    assert_eq!(r.body["wrap_info"]["ttl"], 900);
    let wrapped_accessor = r.body["wrap_info"]["wrapped_accessor"]
        .as_str()
        .unwrap()
        .to_string();
    let token = wrap_token(&r);
    let r = unwrap_with_body(&s, &s.root, &token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let inner = r.auth()["client_token"].as_str().unwrap().to_string();
    assert_eq!(r.auth()["accessor"], wrapped_accessor.as_str());
    assert_eq!(r.auth()["lease_duration"], 1800);
    let r = s.get("auth/token/lookup-self", &inner).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["period"], 1800);
}

#[tokio::test]
async fn wrapping_tokens_expire_with_their_response() {
    let s = TestServer::dev().await;
    let r = wrapped(
        &s,
        "POST",
        "sys/wrapping/wrap",
        "60s",
        Some(json!({"k": "v"})),
    )
    .await;
    assert_eq!(r.body["wrap_info"]["ttl"], 60);
    assert_eq!(r.body["wrap_info"]["creation_path"], "sys/wrapping/wrap");
    let token = wrap_token(&r);
    s.clock.advance(Duration::from_secs(61));
    assert_error(&unwrap_with_body(&s, &s.root, &token).await, 400, GONE);
    assert_error(
        &s.post("sys/wrapping/unwrap", &token, json!({})).await,
        400,
        GONE,
    );
}

#[tokio::test]
async fn rewrap_moves_the_response_to_a_new_token() {
    let s = TestServer::dev().await;
    let old = wrap_token(
        &wrapped(
            &s,
            "POST",
            "sys/wrapping/wrap",
            "10m",
            Some(json!({"k": "moved"})),
        )
        .await,
    );
    let r = s
        .post("sys/wrapping/rewrap", &s.root, json!({"token": old}))
        .await;
    assert_eq!(r.body["wrap_info"]["ttl"], 600, "{}", r.text);
    assert_eq!(r.body["wrap_info"]["creation_path"], "sys/wrapping/wrap");
    let new = wrap_token(&r);
    assert_ne!(new, old);
    assert_error(&unwrap_with_body(&s, &s.root, &old).await, 400, GONE);
    let r = unwrap_with_body(&s, &s.root, &new).await;
    assert_eq!(r.data()["k"], "moved", "{}", r.text);
}

#[tokio::test]
async fn bad_wrap_requests_are_refused_and_never_answered_bare() {
    let s = TestServer::dev().await;
    s.kv_put("bare", json!({"v": "never-bare"})).await;
    let want = "invalid X-Vault-Wrap-TTL: expected a positive duration such as 60s or 15m";
    for ttl in ["0", "0s", "-5", "soon", "", "1y"] {
        let r = wrapped(&s, "GET", "secret/data/bare", ttl, None).await;
        assert_error(&r, 400, want);
        assert!(!r.text.contains("never-bare"));
    }
    // wrap needs a TTL and a body
    let r = s
        .post("sys/wrapping/wrap", &s.root, json!({"a": "b"}))
        .await;
    assert_error(&r, 400, "wrapping TTL must be set (X-Vault-Wrap-TTL)");
    // an empty body wraps an empty object (hvac's `wrap()` without a payload)
    let t = wrap_token(&wrapped(&s, "POST", "sys/wrapping/wrap", "60s", Some(json!({}))).await);
    let r = unwrap_with_body(&s, &s.root, &t).await;
    assert_eq!((r.status, r.data()), (200, &json!({})), "{}", r.text);
    // unwrap of nothing, of garbage, of a normal token
    let r = s.post("sys/wrapping/unwrap", &s.root, json!({})).await;
    assert_error(&r, 400, "missing token");
    assert_error(&unwrap_with_body(&s, &s.root, "hvs.nope").await, 400, GONE);
    let plain = s.create_token(&s.root, json!({})).await;
    assert_error(&unwrap_with_body(&s, &s.root, &plain.id).await, 400, GONE);
    let r = s.post("sys/wrapping/lookup", "", json!({})).await;
    assert_error(&r, 400, "missing token");
    // the policy wrapping tokens carry cannot be written
    let r = s
        .put(
            "sys/policy/response-wrapping",
            &s.root,
            json!({"policy": "path \"*\" { capabilities = [\"sudo\",\"read\"] }"}),
        )
        .await;
    assert_error(&r, 400, "cannot update response-wrapping policy");
}

#[tokio::test]
async fn wrapped_secrets_and_wrapping_tokens_never_reach_the_audit_log() {
    let s = TestServer::dev().await;
    let log = s.enable_audit("file").await;
    s.kv_put("audited", json!({"v": "audit-me-not"})).await;
    let r = wrapped(&s, "GET", "secret/data/audited", "5m", None).await;
    let accessor = r.body["wrap_info"]["accessor"]
        .as_str()
        .unwrap()
        .to_string();
    let token = wrap_token(&r);
    let r = unwrap_with_body(&s, &s.root, &token).await;
    assert_eq!(r.status, 200);
    let text = std::fs::read_to_string(&log).unwrap();
    for secret in [token.as_str(), "audit-me-not", accessor.as_str()] {
        assert!(!text.contains(secret), "{secret:?} in the audit log");
    }
    let records = audit_records(&log);
    let reads = audit_for(&records, "secret/data/audited");
    let resp = reads
        .iter()
        .find(|r| r["type"] == "response" && r["request"]["operation"] == "read")
        .unwrap();
    let wi = &resp["response"]["wrap_info"];
    assert!(
        wi["token"].as_str().unwrap().starts_with("hmac-sha256:"),
        "{resp}"
    );
    assert_eq!(wi["ttl"], 300);
    assert_eq!(wi["creation_path"], "secret/data/audited");
}

#[tokio::test]
async fn wrapped_responses_survive_a_kill_and_restart() {
    let mut s = TestServer::uninit().await;
    let keys = s.init_and_unseal(1, 1).await;
    let token = wrap_token(
        &wrapped(
            &s,
            "POST",
            "sys/wrapping/wrap",
            "10m",
            Some(json!({"k": "durable"})),
        )
        .await,
    );
    let root = s.root.clone();
    let dir = s.kill();
    let s = TestServer::start_in(
        Opts {
            dev: false,
            ..Opts::default()
        },
        dir,
    )
    .await;
    s.unseal(&keys).await;
    let r = unwrap_with_body(&s, &root, &token).await;
    assert_eq!(r.data()["k"], "durable", "{}", r.text);
    assert_error(&unwrap_with_body(&s, &root, &token).await, 400, GONE);
}

// ------------------------------------------------------------ review findings

#[tokio::test]
async fn unwrapping_with_a_wrap_ttl_wraps_again() {
    let s = TestServer::dev().await;
    let wt = wrap_token(
        &wrapped(
            &s,
            "POST",
            "sys/wrapping/wrap",
            "5m",
            Some(json!({"k": "v"})),
        )
        .await,
    );
    let r = wrapped(
        &s,
        "POST",
        "sys/wrapping/unwrap",
        "5m",
        Some(json!({ "token": wt })),
    )
    .await;
    assert!(
        !r.text.contains("\"k\""),
        "unwrapped data returned bare: {}",
        r.text
    );
    assert_eq!(r.body["wrap_info"]["creation_path"], "sys/wrapping/unwrap");
    let inner = wrap_token(&r);
    let u = s.post("sys/wrapping/unwrap", &inner, json!({})).await;
    assert_eq!(u.body["data"]["k"], "v", "{}", u.text);
}

#[tokio::test]
async fn rewrap_honours_the_wrap_ttl_header() {
    let s = TestServer::dev().await;
    let wt = wrap_token(
        &wrapped(
            &s,
            "POST",
            "sys/wrapping/wrap",
            "5m",
            Some(json!({"k": "v"})),
        )
        .await,
    );
    let r = wrapped(
        &s,
        "POST",
        "sys/wrapping/rewrap",
        "1m",
        Some(json!({ "token": wt })),
    )
    .await;
    assert_eq!(r.body["wrap_info"]["ttl"], 60, "{}", r.text);
}

#[tokio::test]
async fn a_wrapping_token_cannot_rewrap_itself() {
    let s = TestServer::dev().await;
    let wt = wrap_token(
        &wrapped(
            &s,
            "POST",
            "sys/wrapping/wrap",
            "1m",
            Some(json!({"k": "v"})),
        )
        .await,
    );
    assert_denied(&s.post("sys/wrapping/rewrap", &wt, json!({})).await);
    let r = s.post("sys/wrapping/unwrap", &wt, json!({})).await;
    assert_eq!(
        (r.status, &r.body["data"]["k"]),
        (200, &json!("v")),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn lookup_answers_a_read_too() {
    let s = TestServer::dev().await;
    let wt = wrap_token(
        &wrapped(
            &s,
            "POST",
            "sys/wrapping/wrap",
            "1m",
            Some(json!({"k": "v"})),
        )
        .await,
    );
    let r = s
        .call(
            "GET",
            &format!("sys/wrapping/lookup?token={wt}"),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["creation_ttl"], 60);
}
