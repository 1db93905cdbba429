//! The approle auth method over HTTP: roles, role IDs, secret IDs
//! (generate, custom, lookup, destroy, accessors, list, tidy) and login,
//! with each binding (secret ID, CIDRs, uses, TTL) allowing and denying,
//! user lockout, renewal, secrecy in the audit log.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use std::time::Duration;

use common::*;
use palisade_server::core::Begun;
use palisade_server::logical::{ApiError, Operation, Request};
use serde_json::{Value, json};

const INVALID: &str = "invalid role ID or secret ID";

async fn enable(s: &TestServer, path: &str) {
    let r = s
        .post(
            &format!("sys/auth/{path}"),
            &s.root,
            json!({"type": "approle"}),
        )
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""), "enable {path}");
}

async fn role(s: &TestServer, name: &str, body: Value) {
    let r = s
        .post(&format!("auth/approle/role/{name}"), &s.root, body)
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""), "role {name}");
}

async fn role_id(s: &TestServer, name: &str) -> String {
    let r = s
        .get(&format!("auth/approle/role/{name}/role-id"), &s.root)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.data()["role_id"].as_str().unwrap().to_string()
}

async fn secret_id(s: &TestServer, name: &str, body: Value) -> (String, String) {
    let r = s
        .post(
            &format!("auth/approle/role/{name}/secret-id"),
            &s.root,
            body,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    (
        r.data()["secret_id"].as_str().unwrap().to_string(),
        r.data()["secret_id_accessor"].as_str().unwrap().to_string(),
    )
}

async fn login(s: &TestServer, role_id: &str, secret_id: &str) -> Resp {
    s.call(
        "POST",
        "auth/approle/login",
        None,
        Some(json!({"role_id": role_id, "secret_id": secret_id})),
    )
    .await
}

fn token_of(r: &Resp) -> String {
    assert_eq!(r.status, 200, "{}", r.text);
    r.auth()["client_token"].as_str().unwrap().to_string()
}

/// A login as the core sees it from `addr` (the HTTP tests all come from 127.0.0.1).
async fn login_from(s: &TestServer, addr: &str, body: Value) -> Result<u16, ApiError> {
    let path = palisade_server::canonical::canonicalise(Operation::Write, "/v1/auth/approle/login")
        .unwrap();
    let mut req = Request::new(Operation::Write, path);
    req.remote_addr = addr.into();
    let Begun::Open(mut req) = s.core.begin(req, None).await.unwrap() else {
        panic!("a login is open");
    };
    req.data = body.as_object().unwrap().clone();
    s.core.open(req).await.map(|r| r.status)
}

#[tokio::test]
async fn a_role_logs_in_with_its_role_id_and_a_secret_id_only() {
    let s = TestServer::dev().await;
    enable(&s, "approle").await;
    s.write_policy(
        "web",
        r#"path "secret/data/web/*" { capabilities = ["read"] }"#,
    )
    .await;
    role(
        &s,
        "web",
        json!({"token_policies": "web", "token_ttl": "20m"}),
    )
    .await;
    let rid = role_id(&s, "web").await;
    let (sid, _) = secret_id(&s, "web", json!({"metadata": "{\"env\":\"prod\"}"})).await;

    let r = login(&s, &rid, &sid).await;
    let token = token_of(&r);
    assert_eq!(r.auth()["policies"], json!(["default", "web"]));
    assert_eq!(
        r.auth()["metadata"],
        json!({"env": "prod", "role_name": "web"})
    );
    assert_eq!(r.auth()["lease_duration"], 1200);
    assert_eq!(r.auth()["renewable"], true);
    let r = s.get("auth/token/lookup-self", &token).await;
    assert_eq!(r.data()["path"], "auth/approle/login");
    assert_eq!(r.data()["display_name"], "approle-web");

    // every mismatch gets the same answer
    assert_error(&login(&s, &rid, "not-the-secret").await, 400, INVALID);
    assert_error(&login(&s, "not-the-role", &sid).await, 400, INVALID);
    let other = {
        role(&s, "other", json!({})).await;
        role_id(&s, "other").await
    };
    assert_error(&login(&s, &other, &sid).await, 400, INVALID);
    let r = s
        .call(
            "POST",
            "auth/approle/login",
            None,
            Some(json!({"role_id": rid})),
        )
        .await;
    assert_error(&r, 400, INVALID);
    let r = s
        .call("POST", "auth/approle/login", None, Some(json!({})))
        .await;
    assert_error(&r, 400, "missing role_id");
}

#[tokio::test]
async fn secret_ids_are_used_up_and_expire() {
    let s = TestServer::dev().await;
    enable(&s, "approle").await;
    role(
        &s,
        "batch",
        json!({"secret_id_num_uses": 2, "secret_id_ttl": "10m"}),
    )
    .await;
    let rid = role_id(&s, "batch").await;
    let (sid, _) = secret_id(&s, "batch", json!({})).await;
    token_of(&login(&s, &rid, &sid).await);
    token_of(&login(&s, &rid, &sid).await);
    assert_error(&login(&s, &rid, &sid).await, 400, INVALID);

    // a request may narrow the role's limits, never widen them
    let r = s
        .post(
            "auth/approle/role/batch/secret-id",
            &s.root,
            json!({"num_uses": 3}),
        )
        .await;
    assert_error(
        &r,
        400,
        "num_uses cannot be higher than the role's secret_id_num_uses",
    );
    let r = s
        .post(
            "auth/approle/role/batch/secret-id",
            &s.root,
            json!({"ttl": "1h"}),
        )
        .await;
    assert_error(
        &r,
        400,
        "ttl cannot be longer than the role's secret_id_ttl",
    );
    let (short, _) = secret_id(&s, "batch", json!({"ttl": "60s", "num_uses": 1})).await;
    s.clock.advance(Duration::from_secs(61));
    assert_error(&login(&s, &rid, &short).await, 400, INVALID);
    let (sid, _) = secret_id(&s, "batch", json!({})).await;
    s.clock.advance(Duration::from_secs(599));
    token_of(&login(&s, &rid, &sid).await);
    s.clock.advance(Duration::from_secs(2));
    assert_error(&login(&s, &rid, &sid).await, 400, INVALID);
}

#[tokio::test]
async fn a_one_use_secret_id_logs_in_once_under_concurrency() {
    let s = TestServer::dev().await;
    enable(&s, "approle").await;
    role(&s, "once", json!({"secret_id_num_uses": 1})).await;
    let rid = role_id(&s, "once").await;
    let (sid, _) = secret_id(&s, "once", json!({})).await;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (url, body) = (
            s.url("auth/approle/login"),
            json!({"role_id": rid, "secret_id": sid}),
        );
        set.spawn(async move {
            let r = reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        });
    }
    let results = set.join_all().await;
    let ok = results.iter().filter(|(st, _)| *st == 200).count();
    assert_eq!(ok, 1, "{results:?}");
    // the others were refused: as a used-up secret ID, or, once five of
    // them had failed, as a locked-out role
    for (st, text) in results.iter().filter(|(st, _)| *st != 200) {
        let want = match st {
            400 => json!({"errors": [INVALID]}),
            403 => json!({"errors": ["permission denied"]}),
            _ => panic!("{results:?}"),
        };
        assert_eq!(text, &want.to_string());
    }
}

#[tokio::test]
async fn logins_are_bound_to_the_roles_and_the_secret_ids_cidrs() {
    let s = TestServer::dev().await;
    enable(&s, "approle").await;
    role(
        &s,
        "net",
        json!({"secret_id_bound_cidrs": ["10.0.0.0/8"], "token_bound_cidrs": "10.0.0.0/8"}),
    )
    .await;
    let rid = role_id(&s, "net").await;
    let (sid, _) = secret_id(
        &s,
        "net",
        json!({"cidr_list": "10.1.0.0/16", "token_bound_cidrs": ["10.1.2.0/24"]}),
    )
    .await;
    let body = json!({"role_id": rid, "secret_id": sid});
    assert_eq!(login_from(&s, "10.1.2.3", body.clone()).await, Ok(200));
    // inside the role's range, outside the secret ID's
    let e = login_from(&s, "10.2.0.1", body.clone()).await.unwrap_err();
    assert_eq!(e.messages, vec![INVALID.to_string()]);
    // outside both
    let e = login_from(&s, "192.0.2.1", body.clone()).await.unwrap_err();
    assert_eq!(e.messages, vec![INVALID.to_string()]);
    // a secret ID wider than its role is refused when made
    let r = s
        .post(
            "auth/approle/role/net/secret-id",
            &s.root,
            json!({"cidr_list": ["10.0.0.0/7"]}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = s
        .post(
            "auth/approle/role/net/secret-id",
            &s.root,
            json!({"token_bound_cidrs": ["192.0.2.0/24"]}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    // a role without a secret ID must be bound to CIDRs
    let r = s
        .post(
            "auth/approle/role/open",
            &s.root,
            json!({"bind_secret_id": false}),
        )
        .await;
    assert_error(
        &r,
        400,
        "at least one constraint should be enabled on the role",
    );
    role(
        &s,
        "cidronly",
        json!({"bind_secret_id": false, "secret_id_bound_cidrs": "10.9.0.0/16"}),
    )
    .await;
    let rid = role_id(&s, "cidronly").await;
    assert_eq!(
        login_from(&s, "10.9.1.1", json!({"role_id": rid})).await,
        Ok(200)
    );
    let e = login_from(&s, "10.8.1.1", json!({"role_id": rid}))
        .await
        .unwrap_err();
    assert_eq!(e.messages, vec![INVALID.to_string()]);
}

#[tokio::test]
async fn secret_ids_are_looked_up_listed_and_destroyed_by_value_or_accessor() {
    let s = TestServer::dev().await;
    enable(&s, "approle").await;
    role(&s, "r", json!({})).await;
    let rid = role_id(&s, "r").await;
    let r = s.list("auth/approle/role/r/secret-id", &s.root).await;
    assert_empty_404(&r);
    let (a, acc_a) = secret_id(&s, "r", json!({"metadata": {"k": "v"}})).await;
    let (b, acc_b) = secret_id(&s, "r", json!({})).await;
    let r = s.list("auth/approle/role/r/secret-id", &s.root).await;
    let mut want = vec![acc_a.clone(), acc_b.clone()];
    want.sort();
    assert_eq!(r.data()["keys"], json!(want));

    let r = s
        .post(
            "auth/approle/role/r/secret-id/lookup",
            &s.root,
            json!({"secret_id": a}),
        )
        .await;
    assert_eq!(r.data()["metadata"], json!({"k": "v"}));
    assert_eq!(r.data()["secret_id_accessor"], acc_a);
    assert!(!r.text.contains(&a), "the secret ID is never read back");
    let r = s
        .post(
            "auth/approle/role/r/secret-id-accessor/lookup",
            &s.root,
            json!({"secret_id_accessor": acc_b}),
        )
        .await;
    assert_eq!(r.data()["secret_id_accessor"], acc_b);

    let r = s
        .post(
            "auth/approle/role/r/secret-id/destroy",
            &s.root,
            json!({"secret_id": a}),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_error(&login(&s, &rid, &a).await, 400, INVALID);
    let r = s
        .post(
            "auth/approle/role/r/secret-id/lookup",
            &s.root,
            json!({"secret_id": a}),
        )
        .await;
    assert_eq!(r.status, 204, "an unknown secret ID reads as 204 (Vault)");
    let r = s
        .post(
            "auth/approle/role/r/secret-id-accessor/destroy",
            &s.root,
            json!({"secret_id_accessor": acc_b}),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_error(&login(&s, &rid, &b).await, 400, INVALID);
    let r = s
        .post(
            "auth/approle/role/r/secret-id-accessor/lookup",
            &s.root,
            json!({"secret_id_accessor": acc_b}),
        )
        .await;
    assert_error(
        &r,
        400,
        "failed to find accessor entry for secret_id_accessor",
    );

    // custom secret IDs log in; a duplicate is refused
    let r = s
        .post(
            "auth/approle/role/r/custom-secret-id",
            &s.root,
            json!({"secret_id": "my-own-secret-id-0123456789"}),
        )
        .await;
    assert_eq!(r.data()["secret_id"], "my-own-secret-id-0123456789");
    token_of(&login(&s, &rid, "my-own-secret-id-0123456789").await);
    let r = s
        .post(
            "auth/approle/role/r/custom-secret-id",
            &s.root,
            json!({"secret_id": "my-own-secret-id-0123456789"}),
        )
        .await;
    assert_error(&r, 400, "SecretID is already registered");
}

#[tokio::test]
async fn a_role_deleted_and_created_again_never_accepts_the_old_secret_ids() {
    let s = TestServer::dev().await;
    enable(&s, "approle").await;
    role(&s, "svc", json!({})).await;
    let (old_sid, _) = secret_id(&s, "svc", json!({})).await;
    let old_rid = role_id(&s, "svc").await;
    let r = s.delete("auth/approle/role/svc", &s.root).await;
    assert_eq!(r.status, 204);
    assert_error(&login(&s, &old_rid, &old_sid).await, 400, INVALID);
    // the same name again, even with the same role ID
    role(&s, "svc", json!({"role_id": old_rid})).await;
    assert_eq!(role_id(&s, "svc").await, old_rid);
    assert_error(&login(&s, &old_rid, &old_sid).await, 400, INVALID);
    let (sid, _) = secret_id(&s, "svc", json!({})).await;
    token_of(&login(&s, &old_rid, &sid).await);
}

#[tokio::test]
async fn role_ids_are_unique_and_can_be_set() {
    let s = TestServer::dev().await;
    enable(&s, "approle").await;
    role(&s, "a", json!({"role_id": "shared-role-id"})).await;
    let r = s
        .post(
            "auth/approle/role/b",
            &s.root,
            json!({"role_id": "shared-role-id"}),
        )
        .await;
    assert_error(&r, 400, "role_id already in use");
    role(&s, "b", json!({})).await;
    let r = s
        .post(
            "auth/approle/role/b/role-id",
            &s.root,
            json!({"role_id": "shared-role-id"}),
        )
        .await;
    assert_error(&r, 400, "role_id already in use");
    let r = s
        .post(
            "auth/approle/role/a/role-id",
            &s.root,
            json!({"role_id": "new-id-for-a"}),
        )
        .await;
    assert_eq!(r.status, 204);
    let (sid, _) = secret_id(&s, "a", json!({})).await;
    assert_error(&login(&s, "shared-role-id", &sid).await, 400, INVALID);
    token_of(&login(&s, "new-id-for-a", &sid).await);
}

#[tokio::test]
async fn roles_are_read_listed_and_role_names_are_canonical() {
    let s = TestServer::dev().await;
    enable(&s, "approle").await;
    assert_empty_404(&s.list("auth/approle/role", &s.root).await);
    role(
        &s,
        "reader",
        json!({"token_policies": ["a", "b"], "secret_id_ttl": "1h", "token_num_uses": 3}),
    )
    .await;
    let r = s.get("auth/approle/role/reader", &s.root).await;
    assert_eq!(r.data()["token_policies"], json!(["a", "b"]));
    assert_eq!(r.data()["secret_id_ttl"], 3600);
    assert_eq!(r.data()["bind_secret_id"], true);
    assert_eq!(r.data()["token_num_uses"], 3);
    let r = s.list("auth/approle/role", &s.root).await;
    assert_eq!(r.data()["keys"], json!(["reader"]));
    for bad in ["Reader", "a@b", "-x"] {
        let r = s
            .post(&format!("auth/approle/role/{bad}"), &s.root, json!({}))
            .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
        assert!(r.text.contains("invalid role name"), "{}", r.text);
    }
    // root policies are refused when the role is written
    let r = s
        .post(
            "auth/approle/role/boss",
            &s.root,
            json!({"token_policies": "root"}),
        )
        .await;
    assert_error(
        &r,
        400,
        "token_policies cannot hold \"root\": auth methods cannot create root tokens",
    );
    // a caller without rights there learns nothing about the layout
    let t = s.powerless_token().await;
    assert_denied(&s.post("auth/approle/role/Reader", &t.id, json!({})).await);
    assert_denied(&s.get("auth/approle/role/reader", &t.id).await);
}

#[tokio::test]
async fn create_and_update_are_told_apart_on_roles() {
    let s = TestServer::dev().await;
    enable(&s, "approle").await;
    let creator = s
        .token_with(r#"path "auth/approle/role/*" { capabilities = ["create"] }"#)
        .await;
    let r = s
        .post("auth/approle/role/new", &creator.id, json!({}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .post(
            "auth/approle/role/new",
            &creator.id,
            json!({"token_policies": "admin"}),
        )
        .await;
    assert_denied(&r);
}

#[tokio::test]
async fn repeated_failures_lock_the_role_out_even_for_the_right_secret() {
    let s = TestServer::dev().await;
    enable(&s, "approle").await;
    role(&s, "locked", json!({})).await;
    role(&s, "bystander", json!({})).await;
    let rid = role_id(&s, "locked").await;
    let (sid, _) = secret_id(&s, "locked", json!({})).await;
    for _ in 0..5 {
        assert_error(&login(&s, &rid, "guess").await, 400, INVALID);
    }
    assert_denied(&login(&s, &rid, &sid).await);
    // other roles are untouched
    let brid = role_id(&s, "bystander").await;
    let (bsid, _) = secret_id(&s, "bystander", json!({})).await;
    token_of(&login(&s, &brid, &bsid).await);
    let r = s.get("sys/locked-users", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("\"locked\""), "{}", r.text);
    // after the lockout duration the right secret ID works again
    s.clock.advance(Duration::from_secs(15 * 60 + 1));
    token_of(&login(&s, &rid, &sid).await);

    // tuned: two failures lock; lockout can be disabled
    let r = s
        .post(
            "sys/auth/approle/tune",
            &s.root,
            json!({"user_lockout_config": {"lockout_threshold": 2, "lockout_duration": "1m"}}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.get("sys/auth/approle/tune", &s.root).await;
    assert_eq!(r.data()["user_lockout_threshold"], 2);
    assert_eq!(r.data()["user_lockout_duration"], 60);
    login(&s, &rid, "guess").await;
    login(&s, &rid, "guess").await;
    assert_denied(&login(&s, &rid, &sid).await);
    // an operator unlocks it
    let accessor = s.get("sys/auth/approle", &s.root).await.data()["accessor"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s
        .post(
            &format!("sys/locked-users/{accessor}/unlock/locked"),
            &s.root,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    token_of(&login(&s, &rid, &sid).await);
    // the identity is one segment: a trailing slash names nothing
    let r = s
        .post(
            &format!("sys/locked-users/{accessor}/unlock/locked/"),
            &s.root,
            json!({}),
        )
        .await;
    assert_error(&r, 404, "unsupported path");
    let r = s
        .post(
            "sys/auth/approle/tune",
            &s.root,
            json!({"user_lockout_config": {"lockout_disable": true}}),
        )
        .await;
    assert_eq!(r.status, 204);
    for _ in 0..5 {
        login(&s, &rid, "guess").await;
    }
    token_of(&login(&s, &rid, &sid).await);
}

#[tokio::test]
async fn renewal_follows_the_role_and_stops_when_it_changes() {
    let s = TestServer::dev().await;
    enable(&s, "approle").await;
    role(
        &s,
        "renew",
        json!({"token_ttl": "10m", "token_max_ttl": "30m", "token_policies": "p"}),
    )
    .await;
    let rid = role_id(&s, "renew").await;
    let (sid, _) = secret_id(&s, "renew", json!({})).await;
    let token = token_of(&login(&s, &rid, &sid).await);
    let r = s
        .post("auth/token/renew-self", &token, json!({"increment": "1h"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.auth()["lease_duration"].as_i64().unwrap() <= 1800);
    role(&s, "renew", json!({"token_policies": "q"})).await;
    let r = s.post("auth/token/renew-self", &token, json!({})).await;
    assert_error(
        &r,
        400,
        "failed to renew entry: policies have changed, not renewing",
    );
    s.delete("auth/approle/role/renew", &s.root).await;
    let r = s.post("auth/token/renew-self", &token, json!({})).await;
    assert_error(
        &r,
        400,
        "failed to renew entry: the role no longer exists, not renewing",
    );
}

#[tokio::test]
async fn secret_ids_never_reach_the_audit_log_or_storage() {
    let s = TestServer::dev().await;
    let log = s.enable_audit("file").await;
    enable(&s, "approle").await;
    role(&s, "hush", json!({})).await;
    let rid = role_id(&s, "hush").await;
    let (sid, acc) = secret_id(&s, "hush", json!({})).await;
    let token = token_of(&login(&s, &rid, &sid).await);
    assert_error(&login(&s, &rid, "wrong-secret-id-42").await, 400, INVALID);
    let text = std::fs::read_to_string(&log).unwrap();
    for secret in [
        sid.as_str(),
        token.as_str(),
        "wrong-secret-id-42",
        rid.as_str(),
    ] {
        assert!(!text.contains(secret), "{secret:?} in the audit log");
    }
    let records = audit_for(&audit_records(&log), "auth/approle/login")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    // the audit record names the check that failed; the client does not learn it
    assert_eq!(records.last().unwrap()["error"], "invalid secret ID");
    // the method's storage, decrypted, holds only HMACs of the secret ID
    // and its accessor: neither key nor value contains them
    let view = s.core.barrier.clone();
    let mut stack = vec!["auth/".to_string()];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        for k in view.list(&dir).await.unwrap() {
            let key = format!("{dir}{k}");
            if key.ends_with('/') {
                stack.push(key);
                continue;
            }
            seen += 1;
            let v = view.get(&key).await.unwrap().unwrap();
            let v = String::from_utf8_lossy(&v);
            assert!(!key.contains(&sid) && !v.contains(&sid), "{key}");
            assert!(!key.contains(&acc), "{key}");
        }
    }
    assert!(seen >= 4, "walked {seen} entries");
}

#[tokio::test]
async fn disabling_the_method_revokes_its_tokens_and_forgets_its_roles() {
    let s = TestServer::dev().await;
    enable(&s, "approle").await;
    role(&s, "gone", json!({})).await;
    let rid = role_id(&s, "gone").await;
    let (sid, _) = secret_id(&s, "gone", json!({})).await;
    let token = token_of(&login(&s, &rid, &sid).await);
    let r = s.delete("sys/auth/approle", &s.root).await;
    assert_eq!(r.status, 204);
    assert_denied(&s.get("auth/token/lookup-self", &token).await);
    enable(&s, "approle").await;
    assert_empty_404(&s.list("auth/approle/role", &s.root).await);
    assert_error(&login(&s, &rid, &sid).await, 400, INVALID);
}

// ------------------------------------------------------------ review findings

#[tokio::test]
async fn a_trailing_slash_never_writes_past_a_deny() {
    let s = TestServer::dev().await;
    enable(&s, "approle").await;
    role(&s, "web", json!({})).await;
    let t = s
        .token_with(
            r#"
path "auth/approle/role/*" { capabilities = ["create", "update", "read"] }
path "auth/approle/role/web/secret-id" { capabilities = ["deny"] }
"#,
        )
        .await;
    assert_denied(
        &s.post("auth/approle/role/web/secret-id", &t.id, json!({}))
            .await,
    );
    let r = s
        .post("auth/approle/role/web/secret-id/", &t.id, json!({}))
        .await;
    assert_ne!(r.status, 200, "secret ID minted past a deny: {}", r.text);
    assert!(!r.text.contains("secret_id"), "{}", r.text);
    assert_empty_404(&s.list("auth/approle/role/web/secret-id", &s.root).await);
}

#[tokio::test]
async fn a_burst_of_guesses_is_cut_at_the_threshold() {
    let s = TestServer::dev().await;
    let r = s
        .post("sys/auth/userpass", &s.root, json!({"type": "userpass"}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .post(
            "auth/userpass/users/carol",
            &s.root,
            json!({"password": "right-password"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..40 {
        let url = s.url("auth/userpass/login/carol");
        let pw = if i == 39 {
            "right-password".to_string()
        } else {
            format!("guess{i}")
        };
        set.spawn(async move {
            reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap()
                .post(url)
                .json(&json!({ "password": pw }))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    let st = set.join_all().await;
    let evaluated = st.iter().filter(|c| **c != 403).count();
    assert!(
        evaluated <= 5,
        "{evaluated} guesses evaluated with threshold 5: {st:?}"
    );
}

#[tokio::test]
async fn logins_from_outside_a_secret_ids_cidrs_never_lock_the_role() {
    let s = TestServer::dev().await;
    enable(&s, "approle").await;
    role(&s, "web", json!({})).await;
    let rid = role_id(&s, "web").await;
    let (fenced, _) = secret_id(&s, "web", json!({"cidr_list": "10.0.0.0/8"})).await;
    let (good, _) = secret_id(&s, "web", json!({})).await;
    for _ in 0..6 {
        assert_error(&login(&s, &rid, &fenced).await, 400, INVALID);
    }
    token_of(&login(&s, &rid, &good).await);
}

#[tokio::test]
async fn the_response_wrapping_policy_cannot_be_assigned() {
    let s = TestServer::dev().await;
    enable(&s, "approle").await;
    let r = s
        .post(
            "auth/approle/role/rw",
            &s.root,
            json!({"token_policies": ["response-wrapping"]}),
        )
        .await;
    assert_error(&r, 400, "cannot assign policy \"response-wrapping\"");
    let r = s
        .post(
            "auth/token/create",
            &s.root,
            json!({"policies": ["response-wrapping"]}),
        )
        .await;
    assert_error(&r, 400, "cannot assign policy \"response-wrapping\"");
}

#[tokio::test]
async fn a_wrapped_secret_id_names_its_accessor() {
    let s = TestServer::dev().await;
    enable(&s, "approle").await;
    role(&s, "web", json!({})).await;
    let r = s
        .send(
            "POST",
            "auth/approle/role/web/secret-id",
            &[
                ("X-Vault-Token", s.root.clone()),
                ("X-Vault-Wrap-TTL", "60s".into()),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let wrapped_accessor = r.body["wrap_info"]["wrapped_accessor"]
        .as_str()
        .unwrap()
        .to_string();
    let wt = r.body["wrap_info"]["token"].as_str().unwrap().to_string();
    let u = s.post("sys/wrapping/unwrap", &wt, json!({})).await;
    assert_eq!(u.data()["secret_id_accessor"], wrapped_accessor.as_str());
}
