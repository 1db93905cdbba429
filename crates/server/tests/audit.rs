//! The audit log as the server writes it: no token, accessor or secret value
//! in the clear, HMACs that `sys/audit-hash` reproduces, a chain that
//! verifies, denials recorded, and fail-closed behaviour when no device can
//! write.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn audit_log_redacts_records_and_verifies() {
    let s = TestServer::dev().await;
    let log = s.enable_audit("file").await;
    let secret = format!("audit-secret-{}", palisade_core::uuid_v4());

    // a run of requests: KV write and read, token creation and use, a denial
    let r = s
        .post(
            "secret/data/app",
            &s.root,
            json!({"data": {"password": secret}}),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = s.get("secret/data/app", &s.root).await;
    assert_eq!(r.data()["data"]["password"], secret.as_str());
    let root_accessor = s.get("auth/token/lookup-self", &s.root).await.data()["accessor"]
        .as_str()
        .unwrap()
        .to_string();
    s.write_policy(
        "meta-reader",
        r#"path "secret/metadata/*" { capabilities = ["read"] }"#,
    )
    .await;
    let child = s
        .create_token(
            &s.root,
            json!({"policies": ["meta-reader"], "meta": {"team": "audit"}, "display_name": "child"}),
        )
        .await;
    let r = s.get("auth/token/lookup-self", &child.id).await;
    assert_eq!(r.status, 200);
    let r = s
        .post(
            "auth/token/lookup-accessor",
            &s.root,
            json!({"accessor": child.accessor}),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = s
        .post("auth/token/lookup", &s.root, json!({"token": child.id}))
        .await;
    assert_eq!(r.status, 200);
    let denied = s.get("secret/data/app", &child.id).await;
    assert_denied(&denied);
    let r = s
        .post("auth/token/renew", &s.root, json!({"token": child.id}))
        .await;
    assert_eq!(r.status, 200);
    // unauthenticated endpoints are not audited
    s.call("GET", "sys/health", None, None).await;
    s.call("GET", "sys/seal-status", None, None).await;

    let hash_of = |input: String| {
        let s = &s;
        async move {
            let r = s
                .post("sys/audit-hash/file", &s.root, json!({"input": input}))
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
            r.data()["hash"].as_str().unwrap().to_string()
        }
    };
    let secret_hash = hash_of(secret.clone()).await;
    let root_hash = hash_of(s.root.clone()).await;
    let child_hash = hash_of(child.id.clone()).await;
    let child_accessor_hash = hash_of(child.accessor.clone()).await;

    // revoke the child by accessor last, so its accessor appears in a body too
    let r = s
        .post(
            "auth/token/revoke-accessor",
            &s.root,
            json!({"accessor": child.accessor}),
        )
        .await;
    assert_eq!(r.status, 204);

    let text = std::fs::read_to_string(&log).unwrap();
    for (what, needle) in [
        ("root token", s.root.as_str()),
        ("root accessor", root_accessor.as_str()),
        ("child token", child.id.as_str()),
        ("child accessor", child.accessor.as_str()),
        ("secret value", secret.as_str()),
    ] {
        assert!(!text.contains(needle), "the audit log contains the {what}");
    }
    assert!(text.contains("hmac-sha256:"));
    assert!(
        text.contains(&secret_hash),
        "audit-hash of the secret is not in the log"
    );
    assert!(text.contains(&root_hash));
    assert!(text.contains(&child_hash));
    assert!(text.contains(&child_accessor_hash));

    let records = audit_records(&log);
    let report = palisade_audit::verify(&log).expect("audit chain verifies");
    assert_eq!(report.lines, records.len() as u64);
    assert!(audit_for(&records, "sys/health").is_empty());
    assert!(audit_for(&records, "sys/seal-status").is_empty());

    // the KV write: request and response, data hashed leaf by leaf
    let write = audit_for(&records, "secret/data/app");
    let req = write
        .iter()
        .find(|r| r["type"] == "request" && r["request"]["operation"] == "update")
        .expect("request record for the write");
    assert_eq!(
        req["request"]["data"]["data"]["password"],
        secret_hash.as_str()
    );
    assert_eq!(req["request"]["client_token"], root_hash.as_str());
    assert_eq!(req["request"]["mount_type"], "kv");
    assert_eq!(req["request"]["remote_address"], "127.0.0.1");
    assert!(write.iter().any(|r| r["type"] == "response"
        && r["request"]["operation"] == "read"
        && r["response"]["data"]["data"]["password"] == secret_hash.as_str()));

    // the token creation: the issued token and accessor are hashed
    let create = audit_for(&records, "auth/token/create");
    let resp = create
        .iter()
        .find(|r| r["type"] == "response")
        .expect("response record for token create");
    assert_eq!(
        resp["response"]["auth"]["client_token"],
        child_hash.as_str()
    );
    assert_eq!(
        resp["response"]["auth"]["accessor"],
        child_accessor_hash.as_str()
    );
    assert_eq!(
        resp["response"]["auth"]["metadata"],
        json!({"team": "audit"})
    );

    // the denial is recorded, with who asked
    let denial = write
        .iter()
        .find(|r| r["error"] == "permission denied")
        .expect("the denied read is in the log");
    assert_eq!(denial["request"]["client_token"], child_hash.as_str());
    assert_eq!(
        denial["auth"]["policies"],
        json!(["default", "meta-reader"])
    );
    assert!(denial.get("response").is_none() || denial["response"].is_null());

    // every authenticated request is there: one request + one response line,
    // or one line for a refusal
    for path in [
        "auth/token/lookup-self",
        "auth/token/lookup-accessor",
        "auth/token/lookup",
        "auth/token/renew",
        "sys/audit-hash/file",
        "auth/token/revoke-accessor",
    ] {
        assert!(!audit_for(&records, path).is_empty(), "{path} not audited");
    }
}

/// A device that fails every write (ENOSPC), as a device whose disk filled
/// up after it was enabled: `/dev/full` can no longer be enabled through the
/// API (special files are refused), so the test puts it in the broker.
fn failing_device(name: &str) -> palisade_audit::FileDevice {
    palisade_audit::FileDevice::open(
        name,
        std::path::Path::new("/dev/full"),
        b"key",
        palisade_audit::Trust::Operator,
    )
    .expect("open /dev/full")
}

#[tokio::test]
async fn two_devices_one_failing_still_serves() {
    let s = TestServer::dev().await;
    let good = s.enable_audit("good").await;
    s.core.audit.add(failing_device("full/"));
    s.kv_put("x", json!({"v": "1"})).await;
    assert_eq!(s.get("secret/data/x", &s.root).await.status, 200);
    assert!(!audit_for(&audit_records(&good), "secret/data/x").is_empty());
    assert!(palisade_audit::verify(&good).is_ok());
}

#[tokio::test]
async fn fail_closed_when_no_device_can_write() {
    let s = TestServer::dev().await;
    let secret = "fail-closed-secret-5be1";
    s.kv_put("x", json!({"v": secret})).await;
    s.core.audit.add(failing_device("full/"));

    // a read is refused before the engine runs: no secret in the answer
    let r = s.get("secret/data/x", &s.root).await;
    assert_error(&r, 500, "internal error");
    assert!(!r.text.contains(secret));
    let r = s.get("secret/data/x?version=1", &s.root).await;
    assert_error(&r, 500, "internal error");

    // writes, deletes, token operations: all refused
    let r = s
        .post("secret/data/x", &s.root, json!({"data": {"v": "changed"}}))
        .await;
    assert_error(&r, 500, "internal error");
    assert_error(
        &s.delete("secret/data/x", &s.root).await,
        500,
        "internal error",
    );
    let r = s
        .post("secret/data/new", &s.root, json!({"data": {"v": "n"}}))
        .await;
    assert_error(&r, 500, "internal error");
    let r = s.post("auth/token/create", &s.root, json!({})).await;
    assert_error(&r, 500, "internal error");
    assert!(!r.text.contains("hvs."));
    let r = s
        .put(
            "sys/policy/p",
            &s.root,
            json!({"policy": r#"path "a" { capabilities = ["read"] }"#}),
        )
        .await;
    assert_error(&r, 500, "internal error");
    // even managing audit devices over the API needs an audited request
    assert_error(
        &s.delete("sys/audit/full", &s.root).await,
        500,
        "internal error",
    );
    // a denied request is still just denied (nothing is disclosed)
    let nobody = s
        .call("GET", "secret/data/x", Some("hvs.unknown"), None)
        .await;
    assert_denied(&nobody);
    // unauthenticated status endpoints still answer
    assert_eq!(s.call("GET", "sys/health", None, None).await.status, 200);

    // the device recovers (disk freed); nothing had changed
    assert!(s.core.audit.remove("full/"));
    let r = s.get("secret/data/x", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["data"], json!({"v": secret}));
    assert_eq!(r.data()["metadata"]["version"], 1);
    assert_eq!(r.data()["metadata"]["deletion_time"], "");
    assert_empty_404(&s.get("secret/data/new", &s.root).await);
    assert_empty_404(&s.get("sys/policy/p", &s.root).await);
    let r = s.list("auth/token/accessors", &s.root).await;
    assert_eq!(r.data()["keys"].as_array().unwrap().len(), 1, "{}", r.text);
    assert_eq!(s.get("sys/audit", &s.root).await.data(), &json!({}));
}
