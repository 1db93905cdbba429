//! `sys/remount` and `sys/remount/status/<id>` over HTTP: a mount moves with
//! its data, options and TTLs, visibly at once and durably (restart and
//! kill -9); what is refused, with OpenBao's errors; sudo on `sys/remount`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use common::*;
use palisade_server::core::Begun;
use palisade_server::logical::{Operation, Request};
use serde_json::json;

const QUEUED: &str = "Mount move has been queued. Progress will be reported in OpenBao's server log, tagged with the returned migration_id";

async fn enable(s: &TestServer, path: &str, body: serde_json::Value) {
    let r = s.post(&format!("sys/mounts/{path}"), &s.root, body).await;
    assert_eq!(r.status, 204, "enable {path}: {}", r.text);
}

async fn remount(s: &TestServer, token: &str, from: &str, to: &str) -> Resp {
    s.post("sys/remount", token, json!({"from": from, "to": to}))
        .await
}

#[tokio::test]
async fn a_mount_moves_with_its_data_and_configuration() {
    let s = TestServer::dev().await;
    enable(
        &s,
        "test",
        json!({"type": "kv", "options": {"version": "2"}}),
    )
    .await;
    let r = s
        .post(
            "sys/mounts/test/tune",
            &s.root,
            json!({"default_lease_ttl": "3600s", "max_lease_ttl": "8600s"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .post("test/data/app", &s.root, json!({"data": {"pw": "one"}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .post("test/data/app", &s.root, json!({"data": {"pw": "two"}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let before = s.get("sys/mounts", &s.root).await.data()["test/"].clone();

    let r = remount(&s, &s.root, "test", "foobar").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_envelope(&r);
    assert_top_level(&r);
    let id = r.data()["migration_id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(r.body["warnings"], json!([QUEUED]));

    // in the mount list as soon as the answer arrives
    let mounts = s.get("sys/mounts", &s.root).await;
    assert!(mounts.data().get("test/").is_none(), "{}", mounts.text);
    let after = &mounts.data()["foobar/"];
    for k in [
        "type",
        "uuid",
        "accessor",
        "options",
        "config",
        "description",
    ] {
        assert_eq!(after[k], before[k], "{k}");
    }
    // the TTLs follow the mount
    let t = s.get("sys/mounts/foobar/tune", &s.root).await;
    assert_eq!(
        (&t.data()["default_lease_ttl"], &t.data()["max_lease_ttl"]),
        (&json!(3600), &json!(8600))
    );
    // and so does every version of the data
    let r = s.get("foobar/data/app", &s.root).await;
    assert_eq!(r.data()["data"], json!({"pw": "two"}));
    assert_eq!(r.data()["metadata"]["version"], 2);
    let r = s.get("foobar/data/app?version=1", &s.root).await;
    assert_eq!(r.data()["data"], json!({"pw": "one"}));
    // the old path is no mount any more
    assert_error(
        &s.get("test/data/app", &s.root).await,
        404,
        "unsupported path",
    );
    assert_error(
        &s.get("sys/mounts/test/tune", &s.root).await,
        400,
        "no mount entry found for path test/",
    );

    let r = s.get(&format!("sys/remount/status/{id}"), &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.body.get("migration_info").is_none(),
        "not repeated at the top level"
    );
    assert_eq!(
        r.data(),
        &json!({"migration_id": id, "migration_info": {
            "source_mount": "test/", "target_mount": "foobar/", "status": "success"}})
    );
    assert_empty_404(
        &s.get(
            "sys/remount/status/00000000-0000-0000-0000-000000000000",
            &s.root,
        )
        .await,
    );
    assert_error(
        &s.get("sys/remount/status/", &s.root).await,
        404,
        "unsupported path",
    );

    // a nested destination, and back (leading and trailing slashes as Vault)
    let r = remount(&s, &s.root, "/foobar/", "team/a/").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.get("team/a/data/app", &s.root).await;
    assert_eq!(r.data()["data"], json!({"pw": "two"}));
    // unmounting the moved mount removes its data
    assert_eq!(s.delete("sys/mounts/team/a", &s.root).await.status, 204);
    enable(&s, "team/a", json!({"type": "kv-v2"})).await;
    assert_eq!(s.get("team/a/data/app", &s.root).await.status, 404);
}

#[tokio::test]
async fn remounts_are_refused_as_openbao_refuses_them() {
    let s = TestServer::dev().await;
    enable(&s, "kv1", json!({"type": "kv"})).await;
    enable(&s, "nested/inner", json!({"type": "kv"})).await;
    s.kv_put("x", json!({"v": "kept"})).await;
    let cases: &[(serde_json::Value, &str)] = &[
        (
            json!({}),
            "both 'from' and 'to' path must be specified as a string",
        ),
        (
            json!({"from": "secret"}),
            "both 'from' and 'to' path must be specified as a string",
        ),
        (
            json!({"from": "", "to": "x"}),
            "both 'from' and 'to' path must be specified as a string",
        ),
        (
            json!({"from": "secret ", "to": "x"}),
            "'from' path cannot contain trailing whitespace",
        ),
        (
            json!({"from": "secret", "to": " x"}),
            "'to' path cannot contain trailing whitespace",
        ),
        (
            json!({"from": "secret", "to": "a//b"}),
            "invalid destination mount: path 'a//b/' does not match cleaned path 'a/b/'",
        ),
        (
            json!({"from": "secret", "to": "a/../b"}),
            "invalid destination mount: path 'a/../b/' does not match cleaned path 'b/'",
        ),
        (
            json!({"from": "secret", "to": "a\tb"}),
            "invalid destination mount: path cannot contain non-printable characters",
        ),
        (
            json!({"from": "secret", "to": "zz\u{200b}"}),
            "invalid destination mount: path cannot contain non-printable characters",
        ),
        (
            json!({"from": "secret", "to": "zz\u{202e}"}),
            "invalid destination mount: path cannot contain non-printable characters",
        ),
        (json!({"from": "secret", "to": "a b"}), "invalid mount path"),
        (json!({"from": "sys", "to": "x"}), "cannot remount \"sys/\""),
        (
            json!({"from": "cubbyhole", "to": "x"}),
            "cannot remount \"cubbyhole/\"",
        ),
        (
            json!({"from": "identity", "to": "x"}),
            "cannot remount \"identity/\"",
        ),
        (
            json!({"from": "audit/file", "to": "x"}),
            "cannot remount \"audit/file/\"",
        ),
        (
            json!({"from": "secret", "to": "sys/secret"}),
            "cannot remount to destination sys/secret/",
        ),
        (
            json!({"from": "secret", "to": "auth/secret"}),
            "cannot remount to destination auth/secret/",
        ),
        (
            json!({"from": "secret", "to": "identity"}),
            "cannot remount to destination identity/",
        ),
        (
            json!({"from": "auth/token", "to": "auth/tok"}),
            "cannot remount \"auth/token/\"",
        ),
        (
            json!({"from": "auth/token", "to": "tok"}),
            "cannot remount auth mount to non-auth mount \"tok/\"",
        ),
        (
            json!({"from": "auth/approle", "to": "auth/token/x"}),
            "cannot remount to destination \"auth/token/x/\"",
        ),
        (
            json!({"from": "auth/approle", "to": "auth/ar"}),
            "no matching mount at \"auth/approle/\"",
        ),
        (
            json!({"from": "nosuch", "to": "x"}),
            "no matching mount at \"nosuch/\"",
        ),
        (
            json!({"from": "secret/data", "to": "x"}),
            "no matching mount at \"secret/data/\"",
        ),
        (
            json!({"from": "nested", "to": "x"}),
            "no matching mount at \"nested/\"",
        ),
        // the destination exists, is inside the source, is inside another
        // mount, or holds one
        (
            json!({"from": "secret", "to": "kv1"}),
            "path already in use at \"kv1/\"",
        ),
        (
            json!({"from": "secret", "to": "secret"}),
            "path already in use at \"secret/\"",
        ),
        (
            json!({"from": "secret", "to": "secret/sub"}),
            "path already in use at \"secret/\"",
        ),
        (
            json!({"from": "secret", "to": "kv1/sub"}),
            "path already in use at \"kv1/\"",
        ),
        (
            json!({"from": "secret", "to": "nested"}),
            "path already in use at \"nested/inner/\"",
        ),
        (
            json!({"from": "nested/inner", "to": "nested"}),
            "path already in use at \"nested/inner/\"",
        ),
    ];
    for (body, msg) in cases {
        let r = s.post("sys/remount", &s.root, body.clone()).await;
        assert_error(&r, 400, msg);
    }
    // nothing moved
    let mounts = s.get("sys/mounts", &s.root).await;
    for m in ["secret/", "kv1/", "nested/inner/"] {
        assert!(mounts.data().get(m).is_some(), "{m}: {}", mounts.text);
    }
    assert_eq!(
        s.get("secret/data/x", &s.root).await.data()["data"],
        json!({"v": "kept"})
    );
    assert_error(
        &s.get("sys/remount", &s.root).await,
        405,
        "unsupported operation",
    );
}

#[tokio::test]
async fn remount_needs_sudo_on_sys_remount_only() {
    let s = TestServer::dev().await;
    enable(&s, "a", json!({"type": "kv"})).await;
    let nothing = s.powerless_token().await;
    let update = s
        .token_with(r#"path "sys/remount" { capabilities = ["update"] }"#)
        .await;
    let sudo_no_update = s
        .token_with(r#"path "sys/remount" { capabilities = ["sudo", "read"] }"#)
        .await;
    let denied_source = s
        .token_with(
            r#"
path "sys/remount" { capabilities = ["update", "sudo"] }
path "sys/remount/status/*" { capabilities = ["read"] }
path "a/*" { capabilities = ["deny"] }
path "b/*" { capabilities = ["deny"] }
"#,
        )
        .await;
    for t in [&nothing.id, &update.id, &sudo_no_update.id] {
        assert_denied(&remount(&s, t, "a", "b").await);
    }
    assert!(
        s.get("sys/mounts", &s.root)
            .await
            .data()
            .get("a/")
            .is_some()
    );
    // Vault checks sys/remount only, not the two mount paths
    let r = remount(&s, &denied_source.id, "a", "b").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = r.data()["migration_id"].as_str().unwrap().to_string();
    let r = s
        .get(&format!("sys/remount/status/{id}"), &denied_source.id)
        .await;
    assert_eq!(r.data()["migration_info"]["status"], "success");
    assert_denied(
        &s.get(&format!("sys/remount/status/{id}"), &nothing.id)
            .await,
    );
    // the status needs `read`, not `sudo` (OpenBao)
    let status_reader = s
        .token_with(r#"path "sys/remount/status/*" { capabilities = ["read"] }"#)
        .await;
    let r = s
        .get(&format!("sys/remount/status/{id}"), &status_reader.id)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn a_move_is_durable_at_once_and_complete_after_a_kill() {
    let mut s = TestServer::uninit().await;
    let keys = s.init_and_unseal(1, 1).await;
    enable(
        &s,
        "old",
        json!({"type": "kv", "options": {"version": "2"},
                             "config": {"default_lease_ttl": "1h"}}),
    )
    .await;
    let r = s
        .post("old/data/k", &s.root, json!({"data": {"v": "moved"}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = remount(&s, &s.root, "old", "new").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = r.data()["migration_id"].as_str().unwrap().to_string();

    // kill -9 right after the answer: nothing acknowledged is lost, and there
    // is no half-moved mount (the move was one mount-table write)
    let root = s.root.clone();
    let dir = s.kill();
    let mut s = TestServer::start_in(
        Opts {
            dev: false,
            ..Opts::default()
        },
        dir,
    )
    .await;
    s.unseal(&keys).await;
    s.root = root;
    let mounts = s.get("sys/mounts", &s.root).await;
    assert!(mounts.data().get("old/").is_none(), "{}", mounts.text);
    assert_eq!(mounts.data()["new/"]["config"]["default_lease_ttl"], 3600);
    assert_eq!(
        s.get("new/data/k", &s.root).await.data()["data"],
        json!({"v": "moved"})
    );
    assert_error(&s.get("old/data/k", &s.root).await, 404, "unsupported path");
    // migration statuses live in memory, as Vault's
    assert_empty_404(&s.get(&format!("sys/remount/status/{id}"), &s.root).await);
}

/// A request authorised on the old path before the move but executed after
/// it is refused: it never acts on the mount under its new path.
#[tokio::test]
async fn a_request_authorised_before_the_move_does_not_follow_the_mount() {
    let s = TestServer::dev().await;
    s.kv_put("app", json!({"v": "1"})).await;
    let reader = s
        .token_with(r#"path "secret/*" { capabilities = ["read", "update", "create"] }"#)
        .await;
    let req = |op, path: &str| {
        Request::new(
            op,
            palisade_server::canonical::canonicalise(op, &format!("/v1/{path}")).unwrap(),
        )
    };
    let Begun::Authorized(read) = s
        .core
        .begin(
            req(Operation::Read, "secret/data/app"),
            Some(reader.id.clone()),
        )
        .await
        .unwrap()
    else {
        panic!("authorised");
    };
    let Begun::Authorized(write) = s
        .core
        .begin(
            req(Operation::Write, "secret/data/app"),
            Some(reader.id.clone()),
        )
        .await
        .unwrap()
    else {
        panic!("authorised");
    };
    let r = remount(&s, &s.root, "secret", "moved").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let e = s
        .core
        .execute(read, Ok(Default::default()))
        .await
        .unwrap_err();
    assert_eq!(
        (e.status, e.messages.clone()),
        (404, vec!["unsupported path".to_string()])
    );
    let mut body = serde_json::Map::new();
    body.insert("data".into(), json!({"v": "2"}));
    let e = s.core.execute(write, Ok(body)).await.unwrap_err();
    assert_eq!(e.status, 404);
    // the data is as it was, at its new path only
    let r = s.get("moved/data/app", &s.root).await;
    assert_eq!(r.data()["data"], json!({"v": "1"}));
    assert_denied(&s.get("moved/data/app", &reader.id).await);
}

/// The same for an unmount: a request authorised before the mount was
/// disabled does not write into the cleared mount (nor anywhere else).
#[tokio::test]
async fn a_request_authorised_before_an_unmount_is_refused() {
    let s = TestServer::dev().await;
    enable(&s, "gone", json!({"type": "kv"})).await;
    let r = s.post("gone/k", &s.root, json!({"v": "1"})).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let path = palisade_server::canonical::canonicalise(Operation::Write, "/v1/gone/k").unwrap();
    let Begun::Authorized(write) = s
        .core
        .begin(Request::new(Operation::Write, path), Some(s.root.clone()))
        .await
        .unwrap()
    else {
        panic!("authorised");
    };
    assert_eq!(s.delete("sys/mounts/gone", &s.root).await.status, 204);
    let mut body = serde_json::Map::new();
    body.insert("v".into(), json!("2"));
    let e = s.core.execute(write, Ok(body)).await.unwrap_err();
    assert_eq!(
        (e.status, e.messages.clone()),
        (404, vec!["unsupported path".to_string()])
    );
    // enabled again: a new, empty mount
    enable(&s, "gone", json!({"type": "kv"})).await;
    assert_empty_404(&s.get("gone/k", &s.root).await);
}
