//! Scheduled rotation of KV v2 secrets: a policy names a period, an overlap
//! and a producer (a command or webhook the server configuration lists);
//! a due rotation writes a new version, the previous one stays readable for
//! the overlap, each rotation is audited, failures write nothing and back
//! off, and what the configuration does not list is refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use palisade_server::config::RotationConfig;
use serde_json::{Value, json};

fn sh(script: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), script.into()]
}

/// A webhook on 127.0.0.1 answering with `answer` (status, body); the
/// bodies it received are kept.
async fn webhook(status: u16, answer: Value) -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let app = axum::Router::new().route(
        "/rotate",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let seen = s2.clone();
            let answer = answer.clone();
            async move {
                seen.lock().unwrap().push(body);
                let mut r = axum::response::IntoResponse::into_response(axum::Json(answer));
                *r.status_mut() = axum::http::StatusCode::from_u16(status).unwrap();
                if status == 302 {
                    r.headers_mut()
                        .insert("location", "http://127.0.0.1:1/x".parse().unwrap());
                }
                r
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    (format!("http://{addr}"), seen)
}

async fn server(rotation: RotationConfig) -> TestServer {
    TestServer::start(Opts {
        rotation,
        ..Opts::default()
    })
    .await
}

fn commands(list: &[(&str, Vec<String>)]) -> RotationConfig {
    RotationConfig {
        webhook_origins: Vec::new(),
        commands: list
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    }
}

const GEN: &str = r#"cat >/dev/null; printf '{"data":{"password":"%s"}}' "$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')""#;

#[tokio::test]
async fn a_due_rotation_writes_a_new_version_and_the_old_one_stays_for_the_overlap() {
    let s = server(commands(&[("gen", sh(GEN))])).await;
    let log = s.enable_audit("a").await;
    s.kv_put("app", json!({"password": "initial-password"}))
        .await;
    let r = s
        .post(
            "secret/rotation/app",
            &s.root,
            json!({"period": "1h", "overlap": "1s", "command": "gen"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.get("secret/rotation/app", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["period"], 3600);
    assert_eq!(r.data()["overlap"], 1);
    assert_eq!(r.data()["command"], "gen");
    assert_eq!(r.data()["failures"], 0);
    let r = s.list("secret/rotation/", &s.root).await;
    assert_eq!(r.data()["keys"], json!(["app"]));

    let now = s.core.tokens.now();
    assert_eq!(
        s.core.rotate_kv_secrets(now).await.unwrap(),
        0,
        "not due yet"
    );
    assert_eq!(s.core.rotate_kv_secrets(now + 3601).await.unwrap(), 1);
    let r = s.get("secret/data/app", &s.root).await;
    assert_eq!(r.data()["metadata"]["version"], 2);
    let new = r.data()["data"]["password"].as_str().unwrap().to_owned();
    assert_eq!(new.len(), 32, "{new}");
    // the previous version is readable for the overlap, then deleted
    let r = s.get("secret/data/app?version=1", &s.root).await;
    assert_eq!(r.data()["data"]["password"], "initial-password");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = s.get("secret/data/app?version=1", &s.root).await;
        if r.status == 404 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "version 1 never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = s.get("secret/rotation/app", &s.root).await;
    assert_eq!(r.data()["last_version"], 2);
    assert!(r.data()["last_rotation"].is_string(), "{}", r.text);
    // rotate on demand
    let r = s.post("secret/rotate/app", &s.root, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["version"], 3);

    // audited, as the scheduler, without the value in clear
    let text = std::fs::read_to_string(&log).unwrap();
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v["auth"]["display_name"] == "scheduled-rotation")
        .collect();
    assert!(records.len() >= 2, "{text}");
    assert!(
        records
            .iter()
            .all(|r| r["request"]["path"] == "secret/data/app")
    );
    assert!(records.iter().any(|r| r["type"] == "response"));
    assert!(
        !text.contains(&new),
        "the rotated value reached the audit log"
    );
}

#[tokio::test]
async fn a_failing_producer_writes_nothing_reports_and_backs_off() {
    let s = server(commands(&[
        ("fail", sh("cat >/dev/null; echo SECRET-ON-STDOUT; exit 3")),
        ("notjson", sh("cat >/dev/null; echo 'SECRET-NOT-JSON'")),
        (
            "nodata",
            sh(r#"cat >/dev/null; echo '{"data":"SECRET-STRING"}'"#),
        ),
    ]))
    .await;
    s.kv_put("db", json!({"password": "still-valid"})).await;
    for (cmd, msg) in [
        ("fail", "rotation of \"db\" failed: command: exited with 3"),
        (
            "notjson",
            "rotation of \"db\" failed: producer: the answer is not JSON",
        ),
        (
            "nodata",
            "rotation of \"db\" failed: producer: the answer has no non-empty \"data\" object",
        ),
    ] {
        let r = s
            .post(
                "secret/rotation/db",
                &s.root,
                json!({"period": "1h", "command": cmd}),
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.text);
        let r = s.post("secret/rotate/db", &s.root, json!({})).await;
        assert_error(&r, 502, msg);
        assert!(!r.text.contains("SECRET"), "{}", r.text);
    }
    // nothing was written: the current version is the one that works
    let r = s.get("secret/data/db", &s.root).await;
    assert_eq!(r.data()["metadata"]["version"], 1);
    assert_eq!(r.data()["data"]["password"], "still-valid");
    let r = s.get("secret/rotation/db", &s.root).await;
    assert_eq!(r.data()["failures"], 3);
    assert_eq!(
        r.data()["last_error"],
        "rotation of \"db\" failed: producer: the answer has no non-empty \"data\" object"
    );
    // the next attempt waits (30 s doubling), then retries
    let now = s.core.tokens.now();
    assert_eq!(s.core.rotate_kv_secrets(now + 1).await.unwrap(), 0);
    let r = s.get("secret/rotation/db", &s.root).await;
    assert_eq!(r.data()["failures"], 3, "not retried before its time");
    assert_eq!(s.core.rotate_kv_secrets(now + 241).await.unwrap(), 0);
    let r = s.get("secret/rotation/db", &s.root).await;
    assert_eq!(r.data()["failures"], 4, "retried once due");
}

#[tokio::test]
async fn webhooks_are_asked_without_secrets_and_only_on_listed_origins() {
    let (origin, seen) = webhook(200, json!({"data": {"api_key": "from-the-webhook"}})).await;
    let (redirecting, _) = webhook(302, json!({})).await;
    let s = server(RotationConfig {
        webhook_origins: vec![origin.clone(), redirecting.clone()],
        commands: Default::default(),
    })
    .await;
    s.kv_put("svc/key", json!({"api_key": "old-key-value"}))
        .await;
    let r = s
        .post(
            "secret/rotation/svc/key",
            &s.root,
            json!({"period": "24h", "overlap": "1h", "webhook": format!("{origin}/rotate")}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.post("secret/rotate/svc/key", &s.root, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.get("secret/data/svc/key", &s.root).await;
    assert_eq!(r.data()["data"]["api_key"], "from-the-webhook");
    let sent = seen.lock().unwrap().clone();
    assert_eq!(
        sent,
        [json!({"mount": "secret/", "key": "svc/key", "current_version": 1})]
    );
    // a redirect is not followed
    let r = s
        .post(
            "secret/rotation/svc/key",
            &s.root,
            json!({"webhook": format!("{redirecting}/rotate")}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.post("secret/rotate/svc/key", &s.root, json!({})).await;
    assert_error(
        &r,
        502,
        "rotation of \"svc/key\" failed: webhook: answered 302",
    );

    // refusals
    s.kv_put("other", json!({"v": "1"})).await;
    for (body, msg) in [
        (
            json!({"period": "1h", "webhook": "http://127.0.0.1:9/rotate"}),
            "webhook: origin http://127.0.0.1:9 is not one the server configuration lists in [rotation] webhook_origins",
        ),
        (
            json!({"period": "1h", "webhook": format!("{}/x", origin.replace("127.0.0.1", "localhost"))}),
            "webhook: origin http://localhost:",
        ),
        (
            json!({"period": "1h", "command": "anything"}),
            "command \"anything\" is not one the server configuration lists in [rotation.commands]",
        ),
        (
            json!({"period": "59s", "webhook": format!("{origin}/rotate")}),
            "period must be 60 seconds or more",
        ),
        (
            json!({"period": "1h", "overlap": "2h", "webhook": format!("{origin}/rotate")}),
            "overlap cannot be longer than period: two versions would be current at once",
        ),
        (
            json!({"period": "1h", "webhook": format!("{origin}/rotate"), "command": "x"}),
            "set webhook or command, not both",
        ),
        (
            json!({"period": "1h"}),
            "a producer is required: webhook or command",
        ),
    ] {
        let r = s.post("secret/rotation/other", &s.root, body).await;
        assert_eq!(r.status, 400, "{}", r.text);
        assert!(
            r.body["errors"][0].as_str().unwrap().starts_with(msg),
            "{msg}: {}",
            r.text
        );
    }
    assert_empty_404(&s.get("secret/rotation/other", &s.root).await);
}

#[tokio::test]
async fn rotation_policies_have_their_own_acl_path() {
    let s = server(commands(&[("gen", sh(GEN))])).await;
    s.kv_put("app", json!({"password": "p"})).await;
    let writer = s
        .token_with(r#"path "secret/data/app" { capabilities = ["create", "update", "read"] }"#)
        .await;
    let r = s
        .post(
            "secret/rotation/app",
            &writer.id,
            json!({"period": "1h", "command": "gen"}),
        )
        .await;
    assert_denied(&r);
    let r = s.post("secret/rotate/app", &writer.id, json!({})).await;
    assert_denied(&r);
    // the rotation paths alone are not enough: a rotation writes the
    // secret, so setting or triggering one needs `update` on its data path
    let rotation_only = s
        .token_with(
            r#"path "secret/rotation/app" { capabilities = ["create", "update", "read"] }
               path "secret/rotate/app" { capabilities = ["update"] }"#,
        )
        .await;
    let r = s
        .post(
            "secret/rotation/app",
            &rotation_only.id,
            json!({"period": "1h", "command": "gen"}),
        )
        .await;
    assert_denied(&r);
    let admin = s
        .token_with(
            r#"path "secret/rotation/app" { capabilities = ["create", "update", "read"] }
               path "secret/rotate/app" { capabilities = ["update"] }
               path "secret/data/app" { capabilities = ["update"] }"#,
        )
        .await;
    let r = s
        .post(
            "secret/rotation/app",
            &admin.id,
            json!({"period": "1h", "command": "gen"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .post("secret/rotate/app", &rotation_only.id, json!({}))
        .await;
    assert_denied(&r);
    let r = s.post("secret/rotate/app", &admin.id, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // the policy's admin cannot read the value it rotated
    let r = s.get("secret/data/app", &admin.id).await;
    assert_denied(&r);
}

/// Review finding: a slow producer asked through `rotate/<key>` must not
/// hold up mount changes, nor the requests queued behind one.
#[tokio::test]
async fn a_manual_rotation_with_a_slow_producer_holds_up_no_other_request() {
    let s = server(commands(&[(
        "slow",
        sh(r#"cat >/dev/null; sleep 6; echo '{"data":{"v":"slow-value"}}'"#),
    )]))
    .await;
    s.kv_put("app", json!({"v": "1"})).await;
    s.kv_put("other", json!({"v": "1"})).await;
    let r = s
        .post(
            "secret/rotation/app",
            &s.root,
            json!({"period": "1h", "command": "slow"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let rotate = {
        let (http, url, tok) = (s.http.clone(), s.url("secret/rotate/app"), s.root.clone());
        tokio::spawn(async move {
            http.post(url)
                .header("X-Vault-Token", tok)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let r = s
        .post("sys/mounts/elsewhere", &s.root, json!({"type": "kv"}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.get("secret/data/other", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // held up, it would wait for the producer's 6 s
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "held up for {:?}",
        started.elapsed()
    );
    assert!(!rotate.is_finished(), "the producer is still running");
    assert_eq!(rotate.await.unwrap(), 200);
}

/// Review findings: a policy never creates or brings back a secret, and
/// the overlap is one that KV v2 can keep.
#[tokio::test]
async fn policies_need_a_secret_go_with_it_and_retire_older_versions() {
    let s = server(commands(&[("gen", sh(GEN))])).await;
    let r = s
        .post(
            "secret/rotation/missing",
            &s.root,
            json!({"period": "1h", "command": "gen"}),
        )
        .await;
    assert_error(
        &r,
        400,
        "no secret at \"missing\": write its first version before a rotation policy",
    );
    s.kv_put("gone", json!({"v": "1"})).await;
    let r = s
        .post(
            "secret/rotation/gone",
            &s.root,
            json!({"period": "1h", "command": "gen"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.delete("secret/metadata/gone", &s.root).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_empty_404(&s.get("secret/rotation/gone", &s.root).await);
    let r = s.post("secret/rotate/gone", &s.root, json!({})).await;
    assert_error(&r, 400, "no rotation policy for \"gone\"");
    assert_empty_404(&s.get("secret/data/gone", &s.root).await);

    // max_versions 1 cannot keep the replaced version for an overlap
    s.kv_put("one", json!({"v": "1"})).await;
    let r = s
        .post("secret/metadata/one", &s.root, json!({"max_versions": 1}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .post(
            "secret/rotation/one",
            &s.root,
            json!({"period": "1h", "overlap": "10m", "command": "gen"}),
        )
        .await;
    assert_error(
        &r,
        400,
        "an overlap needs the key to keep at least two versions (max_versions)",
    );

    // versions older than the one replaced are retired at once
    s.kv_put("many", json!({"v": "1"})).await;
    s.kv_put("many", json!({"v": "2"})).await;
    let r = s
        .post(
            "secret/rotation/many",
            &s.root,
            json!({"period": "1h", "overlap": "10m", "command": "gen"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.post("secret/rotate/many", &s.root, json!({})).await;
    assert_eq!(r.data()["version"], 3, "{}", r.text);
    assert_eq!(
        s.get("secret/data/many?version=1", &s.root).await.status,
        404
    );
    assert_eq!(
        s.get("secret/data/many?version=2", &s.root).await.status,
        200
    );
}

/// Review finding: nothing a command starts outlives it.
#[tokio::test]
async fn a_commands_background_children_are_killed_with_it() {
    let marker = format!("61{}.5", std::process::id() % 10_000);
    let s = server(commands(&[(
        "bg",
        sh(&format!(
            r#"cat >/dev/null; sleep {marker} >/dev/null 2>&1 & echo '{{"data":{{"v":"x"}}}}'"#
        )),
    )]))
    .await;
    s.kv_put("app", json!({"v": "1"})).await;
    let r = s
        .post(
            "secret/rotation/app",
            &s.root,
            json!({"period": "1h", "command": "bg"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.post("secret/rotate/app", &s.root, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let out = std::process::Command::new("pgrep")
            .args(["-f", &format!("sleep {marker}")])
            .output()
            .unwrap();
        if out.stdout.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a background child survived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Verification finding: the scheduler starts due rotations and returns;
/// a slow producer holds up only its own key, and is not started twice.
#[tokio::test]
async fn the_scheduler_never_waits_for_a_slow_producer() {
    let s = server(commands(&[
        (
            "slow",
            sh(r#"cat >/dev/null; sleep 3; echo '{"data":{"v":"slow"}}'"#),
        ),
        ("gen", sh(GEN)),
    ]))
    .await;
    s.kv_put("slowkey", json!({"v": "1"})).await;
    s.kv_put("fastkey", json!({"v": "1"})).await;
    for (k, c) in [("slowkey", "slow"), ("fastkey", "gen")] {
        let r = s
            .post(
                &format!("secret/rotation/{k}"),
                &s.root,
                json!({"period": "1h", "command": c}),
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.text);
    }
    let now = s.core.tokens.now() + 3601;
    let started = std::time::Instant::now();
    assert_eq!(s.core.start_kv_rotations(now).await.unwrap(), 2);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // the fast key is rotated while the slow producer still runs
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let r = s.get("secret/data/fastkey", &s.root).await;
        if r.data()["metadata"]["version"] == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the fast key waited for the slow one"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // the slow one is running: the next tick does not start it again (the
    // fast one, due again at this clock, is the only one started)
    assert_eq!(s.core.start_kv_rotations(now).await.unwrap(), 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = s.get("secret/data/slowkey", &s.root).await;
        if r.data()["metadata"]["version"] == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slow key was never rotated"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
