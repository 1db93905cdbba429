//! KV v2 and KV v1 over HTTP: data (versions, CAS, merge patch), metadata,
//! delete/undelete/destroy, listing in every client spelling, config, and
//! the ACL on each (a denied read never carries the secret).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use common::*;
use serde_json::{Value, json};

const SECRET: &str = "s3cr3t-kv-value-7f1c";

// ------------------------------------------------------------ data

#[tokio::test]
async fn data_write_read_versions_and_envelope() {
    let s = TestServer::dev().await;
    let r = s
        .post(
            "secret/data/app/db",
            &s.root,
            json!({"data": {"password": SECRET}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_envelope(&r);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let d = r.data();
    assert_eq!(d["version"], 1);
    assert_eq!(d["destroyed"], false);
    assert_eq!(d["deletion_time"], "");
    assert_eq!(d["custom_metadata"], Value::Null);
    assert!(d["created_time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(r.body["auth"], Value::Null);
    assert_eq!(r.body["warnings"], Value::Null);

    // PUT is the same as POST
    let r = s
        .put(
            "secret/data/app/db",
            &s.root,
            json!({"data": {"password": "second"}}),
        )
        .await;
    assert_eq!(r.data()["version"], 2);

    let r = s.get("secret/data/app/db", &s.root).await;
    assert_eq!(r.status, 200);
    assert_envelope(&r);
    assert_eq!(r.data()["data"], json!({"password": "second"}));
    assert_eq!(r.data()["metadata"]["version"], 2);
    let r = s.get("secret/data/app/db?version=1", &s.root).await;
    assert_eq!(r.data()["data"], json!({"password": SECRET}));
    assert_eq!(r.data()["metadata"]["version"], 1);
    let r = s.get("secret/data/app/db?version=0", &s.root).await;
    assert_eq!(r.data()["metadata"]["version"], 2);

    // missing key, missing version, bad version
    assert_empty_404(&s.get("secret/data/app/none", &s.root).await);
    assert_empty_404(&s.get("secret/data/app/db?version=9", &s.root).await);
    let r = s.get("secret/data/app/db?version=x", &s.root).await;
    assert_error(&r, 400, "field \"version\" must be an integer");

    // bad bodies change nothing
    let r = s
        .post("secret/data/app/db", &s.root, json!({"password": "flat"}))
        .await;
    assert_error(&r, 400, "no data provided");
    let r = s
        .post("secret/data/app/db", &s.root, json!({"data": "flat"}))
        .await;
    assert_error(&r, 400, "data must be an object");
    assert_eq!(
        s.get("secret/data/app/db", &s.root).await.data()["metadata"]["version"],
        2
    );

    // LIST on data/ is not an operation there
    assert_error(
        &s.list("secret/data/app/db", &s.root).await,
        405,
        "unsupported operation",
    );
    // a path inside the mount that is not a KV v2 endpoint
    assert_error(
        &s.get("secret/nope/x", &s.root).await,
        404,
        "unsupported path",
    );
}

#[tokio::test]
async fn data_acl_allow_and_deny() {
    let s = TestServer::dev().await;
    s.kv_put("app/db", json!({"password": SECRET})).await;
    let reader = s
        .token_with(r#"path "secret/data/app/*" { capabilities = ["read"] }"#)
        .await;
    let writer = s
        .token_with(r#"path "secret/data/app/*" { capabilities = ["create", "update"] }"#)
        .await;
    let creator = s
        .token_with(r#"path "secret/data/app/*" { capabilities = ["create"] }"#)
        .await;
    let lister = s
        .token_with(r#"path "secret/metadata/*" { capabilities = ["list"] }"#)
        .await;
    let denied = s
        .token_with(
            r#"
path "secret/data/*" { capabilities = ["read", "update", "create"] }
path "secret/data/app/db" { capabilities = ["deny"] }
"#,
        )
        .await;

    // read
    let r = s.get("secret/data/app/db", &reader.id).await;
    assert_eq!(r.data()["data"]["password"], SECRET);
    for t in [&writer, &creator, &lister, &denied] {
        let r = s.get("secret/data/app/db", &t.id).await;
        assert_denied(&r);
        assert!(!r.text.contains(SECRET));
        let r = s.get("secret/data/app/db?version=1", &t.id).await;
        assert_denied(&r);
        assert!(!r.text.contains(SECRET));
    }
    // reader may not read outside its path
    assert_denied(&s.get("secret/data/other", &reader.id).await);

    // write: update needs update, create needs create
    let r = s
        .post(
            "secret/data/app/db",
            &writer.id,
            json!({"data": {"password": "w"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for t in [&reader, &creator, &lister, &denied] {
        let r = s
            .post(
                "secret/data/app/db",
                &t.id,
                json!({"data": {"password": "evil"}}),
            )
            .await;
        assert_denied(&r);
    }
    let r = s
        .post(
            "secret/data/app/new",
            &creator.id,
            json!({"data": {"k": "v"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_denied(
        &s.post(
            "secret/data/app/new2",
            &reader.id,
            json!({"data": {"k": "v"}}),
        )
        .await,
    );
    // nothing the denied writers sent landed
    let r = s.get("secret/data/app/db", &s.root).await;
    assert_eq!(r.data()["data"], json!({"password": "w"}));
    assert_eq!(r.data()["metadata"]["version"], 2);
    assert_empty_404(&s.get("secret/data/app/new2", &s.root).await);

    // delete (soft) needs delete
    let deleter = s
        .token_with(r#"path "secret/data/app/*" { capabilities = ["delete"] }"#)
        .await;
    assert_denied(&s.delete("secret/data/app/db", &reader.id).await);
    assert_eq!(s.get("secret/data/app/db", &s.root).await.status, 200);
    let r = s.delete("secret/data/app/db", &deleter.id).await;
    assert_eq!(r.status, 204);
    assert_eq!(s.get("secret/data/app/db", &s.root).await.status, 404);
}

#[tokio::test]
async fn check_and_set() {
    let s = TestServer::dev().await;
    // cas 0: only if the key does not exist
    let r = s
        .post(
            "secret/data/c",
            &s.root,
            json!({"options": {"cas": 0}, "data": {"v": "1"}}),
        )
        .await;
    assert_eq!(r.data()["version"], 1, "{}", r.text);
    let r = s
        .post(
            "secret/data/c",
            &s.root,
            json!({"options": {"cas": 0}, "data": {"v": "x"}}),
        )
        .await;
    assert_error(
        &r,
        400,
        "check-and-set parameter did not match the current version",
    );
    let r = s
        .post(
            "secret/data/c",
            &s.root,
            json!({"options": {"cas": 5}, "data": {"v": "x"}}),
        )
        .await;
    assert_error(
        &r,
        400,
        "check-and-set parameter did not match the current version",
    );
    let r = s
        .post(
            "secret/data/c",
            &s.root,
            json!({"options": {"cas": 1}, "data": {"v": "2"}}),
        )
        .await;
    assert_eq!(r.data()["version"], 2, "{}", r.text);
    let r = s.get("secret/data/c", &s.root).await;
    assert_eq!(r.data()["data"], json!({"v": "2"}));

    // cas_required on the key
    let r = s
        .post("secret/metadata/c", &s.root, json!({"cas_required": true}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .post("secret/data/c", &s.root, json!({"data": {"v": "x"}}))
        .await;
    assert_error(&r, 400, "check-and-set parameter required for this call");
    let r = s
        .post(
            "secret/data/c",
            &s.root,
            json!({"options": {"cas": 2}, "data": {"v": "3"}}),
        )
        .await;
    assert_eq!(r.data()["version"], 3);

    // cas_required on the mount
    let r = s
        .post("secret/config", &s.root, json!({"cas_required": true}))
        .await;
    assert_eq!(r.status, 204);
    let r = s
        .post("secret/data/other", &s.root, json!({"data": {"v": "x"}}))
        .await;
    assert_error(&r, 400, "check-and-set parameter required for this call");
    assert_empty_404(&s.get("secret/data/other", &s.root).await);
    let r = s
        .post(
            "secret/data/other",
            &s.root,
            json!({"options": {"cas": 0}, "data": {"v": "1"}}),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = s
        .post(
            "secret/data/c",
            &s.root,
            json!({"options": "x", "data": {"v": "x"}}),
        )
        .await;
    assert_error(&r, 400, "options must be an object");
    assert_eq!(
        s.get("secret/data/c", &s.root).await.data()["data"],
        json!({"v": "3"})
    );
}

/// `options.cas` values, as OpenBao reads them: what cannot match a version
/// is a mismatch, what is not an integer is a parse error; both 400, and
/// the secret is unchanged.
#[tokio::test]
async fn check_and_set_values() {
    let s = TestServer::dev().await;
    const MISMATCH: &str = "check-and-set parameter did not match the current version";
    const UNPARSABLE: &str = "error parsing check-and-set parameter";
    let write = |key: &'static str, body: String| {
        let s = &s;
        async move {
            s.send(
                "POST",
                &format!("secret/data/{key}"),
                &[
                    ("X-Vault-Token", s.root.clone()),
                    ("Content-Type", "application/json".into()),
                ],
                Some(body.into_bytes()),
            )
            .await
        }
    };
    let with_cas = |cas: &str| format!(r#"{{"data": {{"v": "x"}}, "options": {{"cas": {cas}}}}}"#);
    assert_eq!(s.kv_put("c", json!({"v": "1"})).await, 1);

    // values that can never match a version (hvac's test sends -1), and
    // null or "" (0, as OpenBao: "only if the key has no version")
    for cas in [
        "-1",
        "-9223372036854775808",
        r#""-1""#,
        "5",
        r#""7""#,
        "0",
        "null",
        r#""""#,
    ] {
        assert_error(&write("c", with_cas(cas)).await, 400, MISMATCH);
    }
    // not an integer: a fraction (even .0), out of range, not decimal text,
    // not a number at all
    for cas in [
        "1.5",
        "1.0",
        "1e20",
        "18446744073709551616",
        "9223372036854775808",
        r#""x""#,
        r#"" 1""#,
        r#""1.5""#,
        r#""0x1""#,
        "true",
        "[1]",
        r#"{"a": 1}"#,
    ] {
        assert_error(&write("c", with_cas(cas)).await, 400, UNPARSABLE);
    }
    let r = s.get("secret/data/c", &s.root).await;
    assert_eq!(
        (&r.data()["data"], &r.data()["metadata"]["version"]),
        (&json!({"v": "1"}), &json!(1)),
        "a refused cas changed the secret"
    );

    // allowed: the current version, as a number or as decimal text
    let r = write("c", with_cas(r#""1""#)).await;
    assert_eq!(r.data()["version"], 2, "{}", r.text);
    let r = write("c", with_cas(r#""+2""#)).await;
    assert_eq!(r.data()["version"], 3, "{}", r.text);
    // null and "" write a key that has no version yet
    for (key, cas) in [("n", "null"), ("e", r#""""#)] {
        let r = write(key, with_cas(cas)).await;
        assert_eq!(r.data()["version"], 1, "{cas}: {}", r.text);
    }

    // PATCH: nothing to patch is a 404 whatever the cas (as OpenBao); on a
    // live secret the cas is read as for writes
    for cas in [json!(-1), json!("x")] {
        assert_empty_404(
            &s.patch(
                "secret/data/none",
                &s.root,
                json!({"data": {"a": "1"}, "options": {"cas": cas}}),
            )
            .await,
        );
    }
    for (cas, msg) in [
        (json!(-1), MISMATCH),
        (json!(null), MISMATCH),
        (json!(1.5), UNPARSABLE),
        (json!("x"), UNPARSABLE),
    ] {
        let r = s
            .patch(
                "secret/data/c",
                &s.root,
                json!({"data": {"v": "p"}, "options": {"cas": cas}}),
            )
            .await;
        assert_error(&r, 400, msg);
    }
    let r = s
        .patch(
            "secret/data/c",
            &s.root,
            json!({"data": {"v": "p"}, "options": {"cas": 3}}),
        )
        .await;
    assert_eq!(r.data()["version"], 4, "{}", r.text);

    // cas_required: a null cas is a cas (0), as OpenBao
    let r = s
        .post("secret/config", &s.root, json!({"cas_required": true}))
        .await;
    assert_eq!(r.status, 204);
    assert_error(
        &write("c", r#"{"data": {"v": "x"}}"#.into()).await,
        400,
        "check-and-set parameter required for this call",
    );
    assert_error(&write("c", with_cas("null")).await, 400, MISMATCH);
    let r = write("fresh", with_cas("null")).await;
    assert_eq!(r.data()["version"], 1, "{}", r.text);

    // the ACL decides before any of this is read
    let reader = s
        .token_with(r#"path "secret/data/*" { capabilities = ["read"] }"#)
        .await;
    for cas in [json!(-1), json!("x")] {
        assert_denied(
            &s.post(
                "secret/data/c",
                &reader.id,
                json!({"data": {"v": "x"}, "options": {"cas": cas}}),
            )
            .await,
        );
    }
    assert_eq!(
        s.get("secret/data/c", &s.root).await.data()["data"],
        json!({"v": "p"})
    );
}

#[tokio::test]
async fn patch_merge() {
    let s = TestServer::dev().await;
    s.kv_put("p", json!({"a": "1", "b": {"c": "2", "d": "3"}}))
        .await;
    let r = s
        .patch(
            "secret/data/p",
            &s.root,
            json!({"data": {"a": "9", "b": {"d": null}, "e": "5"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["version"], 2);
    let r = s.get("secret/data/p", &s.root).await;
    assert_eq!(
        r.data()["data"],
        json!({"a": "9", "b": {"c": "2"}, "e": "5"})
    );

    // 415 without the merge-patch content type; nothing changes
    for ct in [None, Some("application/json")] {
        let mut headers = vec![("X-Vault-Token", s.root.clone())];
        if let Some(ct) = ct {
            headers.push(("Content-Type", ct.to_string()));
        }
        let r = s
            .send(
                "PATCH",
                "secret/data/p",
                &headers,
                Some(br#"{"data":{"a":"bad"}}"#.to_vec()),
            )
            .await;
        assert_error(
            &r,
            415,
            "PATCH requires Content-Type application/merge-patch+json",
        );
    }
    // with a charset parameter it is fine
    let r = s
        .send(
            "PATCH",
            "secret/data/p",
            &[
                ("X-Vault-Token", s.root.clone()),
                (
                    "Content-Type",
                    "application/merge-patch+json; charset=utf-8".into(),
                ),
            ],
            Some(br#"{"data":{"f":"6"}}"#.to_vec()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.get("secret/data/p", &s.root).await;
    assert_eq!(r.data()["metadata"]["version"], 3);
    assert_eq!(r.data()["data"]["a"], "9");

    // CAS on patch
    let r = s
        .patch(
            "secret/data/p",
            &s.root,
            json!({"options": {"cas": 1}, "data": {"a": "x"}}),
        )
        .await;
    assert_error(
        &r,
        400,
        "check-and-set parameter did not match the current version",
    );
    // missing key or deleted latest version
    assert_empty_404(
        &s.patch("secret/data/none", &s.root, json!({"data": {"a": "1"}}))
            .await,
    );
    let r = s.patch("secret/data/p", &s.root, json!({})).await;
    assert_error(&r, 400, "no data provided");

    // ACL: patch needs patch
    let updater = s
        .token_with(r#"path "secret/data/p" { capabilities = ["read", "update", "create"] }"#)
        .await;
    let patcher = s
        .token_with(r#"path "secret/data/p" { capabilities = ["patch"] }"#)
        .await;
    assert_denied(
        &s.patch("secret/data/p", &updater.id, json!({"data": {"a": "u"}}))
            .await,
    );
    let r = s
        .patch("secret/data/p", &patcher.id, json!({"data": {"a": "p"}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.get("secret/data/p", &s.root).await;
    assert_eq!(r.data()["data"]["a"], "p");
    assert_eq!(r.data()["metadata"]["version"], 4);

    s.delete("secret/data/p", &s.root).await;
    assert_empty_404(
        &s.patch("secret/data/p", &s.root, json!({"data": {"a": "1"}}))
            .await,
    );
}

// ------------------------------------------------------------ delete / undelete / destroy

#[tokio::test]
async fn delete_undelete_destroy() {
    let s = TestServer::dev().await;
    s.kv_put("d", json!({"v": "one"})).await;
    s.kv_put("d", json!({"v": "two"})).await;

    // soft delete of the latest
    let r = s.delete("secret/data/d", &s.root).await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = s.get("secret/data/d", &s.root).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.data()["data"], Value::Null);
    assert!(r.body["data"].as_object().unwrap().contains_key("data"));
    let md = &r.data()["metadata"];
    assert!(
        !md["deletion_time"].as_str().unwrap().is_empty(),
        "{}",
        r.text
    );
    assert_eq!(
        (md["version"].clone(), md["destroyed"].clone()),
        (json!(2), json!(false))
    );
    assert!(!r.text.contains("two"));
    // the older version still reads
    let r = s.get("secret/data/d?version=1", &s.root).await;
    assert_eq!(r.data()["data"], json!({"v": "one"}));

    // undelete
    let r = s
        .post("secret/undelete/d", &s.root, json!({"versions": [2]}))
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    let r = s.get("secret/data/d", &s.root).await;
    assert_eq!(r.data()["data"], json!({"v": "two"}));
    assert_eq!(r.data()["metadata"]["deletion_time"], "");

    // delete specific versions (strings accepted too)
    let r = s
        .post("secret/delete/d", &s.root, json!({"versions": ["1"]}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.get("secret/data/d?version=1", &s.root).await;
    assert_eq!((r.status, &r.data()["data"]), (404, &Value::Null));

    // destroy: gone for good, undelete cannot bring it back
    let r = s
        .post("secret/destroy/d", &s.root, json!({"versions": [2]}))
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    let r = s.get("secret/data/d", &s.root).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.data()["data"], Value::Null);
    assert_eq!(r.data()["metadata"]["destroyed"], true);
    s.post("secret/undelete/d", &s.root, json!({"versions": [2]}))
        .await;
    assert_eq!(s.get("secret/data/d", &s.root).await.status, 404);
    let r = s.get("secret/metadata/d", &s.root).await;
    assert_eq!(r.data()["versions"]["2"]["destroyed"], true);
    assert_eq!(r.data()["versions"]["1"]["destroyed"], false);

    let r = s.post("secret/delete/d", &s.root, json!({})).await;
    assert_error(&r, 400, "no version number provided");
    let r = s
        .post("secret/destroy/d", &s.root, json!({"versions": ["x"]}))
        .await;
    assert_error(&r, 400, "versions must be positive integers");
    assert_error(
        &s.get("secret/destroy/d", &s.root).await,
        405,
        "unsupported operation",
    );

    // ACL: these are updates on their own paths
    s.kv_put("e", json!({"v": SECRET})).await;
    let ops = s
        .token_with(
            r#"
path "secret/delete/*" { capabilities = ["update"] }
path "secret/undelete/*" { capabilities = ["update"] }
path "secret/destroy/*" { capabilities = ["update"] }
"#,
        )
        .await;
    let data_only = s
        .token_with(
            r#"path "secret/data/*" { capabilities = ["create", "read", "update", "delete"] }"#,
        )
        .await;
    for p in ["delete", "undelete", "destroy"] {
        let r = s
            .post(
                &format!("secret/{p}/e"),
                &data_only.id,
                json!({"versions": [1]}),
            )
            .await;
        assert_denied(&r);
    }
    assert_eq!(
        s.get("secret/data/e", &s.root).await.data()["data"]["v"],
        SECRET
    );
    for p in ["delete", "undelete", "destroy"] {
        let r = s
            .post(&format!("secret/{p}/e"), &ops.id, json!({"versions": [1]}))
            .await;
        assert_eq!(r.status, 204, "{p}: {}", r.text);
    }
    let r = s.get("secret/data/e", &s.root).await;
    assert_eq!(
        (r.status, &r.data()["metadata"]["destroyed"]),
        (404, &json!(true))
    );
    assert!(!r.text.contains(SECRET));
}

// ------------------------------------------------------------ metadata

#[tokio::test]
async fn metadata_read_write_patch_delete() {
    let s = TestServer::dev().await;
    s.kv_put("m", json!({"v": "1"})).await;

    let r = s.get("secret/metadata/m", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_envelope(&r);
    let d = r.data();
    for k in [
        "cas_required",
        "created_time",
        "current_version",
        "delete_version_after",
        "max_versions",
        "oldest_version",
        "updated_time",
        "custom_metadata",
        "versions",
    ] {
        assert!(d.get(k).is_some(), "metadata lacks {k}: {}", r.text);
    }
    assert_eq!(
        (d["current_version"].clone(), d["oldest_version"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(d["delete_version_after"], "0s");
    for k in ["created_time", "deletion_time", "destroyed"] {
        assert!(d["versions"]["1"].get(k).is_some());
    }

    // max_versions prunes the oldest; custom_metadata shows in data reads
    let r = s
        .post(
            "secret/metadata/m",
            &s.root,
            json!({"max_versions": 2, "custom_metadata": {"owner": "ops", "tier": "1"}}),
        )
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    for v in ["2", "3", "4"] {
        s.kv_put("m", json!({"v": v})).await;
    }
    let r = s.get("secret/metadata/m", &s.root).await;
    let d = r.data();
    assert_eq!(d["max_versions"], 2);
    assert_eq!(d["current_version"], 4);
    assert_eq!(d["oldest_version"], 3);
    assert_eq!(
        d["versions"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        vec!["3", "4"]
    );
    assert_eq!(d["custom_metadata"], json!({"owner": "ops", "tier": "1"}));
    assert_empty_404(&s.get("secret/data/m?version=1", &s.root).await);
    assert_empty_404(&s.get("secret/data/m?version=2", &s.root).await);
    let r = s.get("secret/data/m?version=3", &s.root).await;
    assert_eq!(r.data()["data"], json!({"v": "3"}));
    assert_eq!(
        r.data()["metadata"]["custom_metadata"],
        json!({"owner": "ops", "tier": "1"})
    );

    // PATCH merges custom_metadata (null removes)
    let r = s
        .patch(
            "secret/metadata/m",
            &s.root,
            json!({"custom_metadata": {"tier": null, "env": "prod"}}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.get("secret/metadata/m", &s.root).await;
    assert_eq!(
        r.data()["custom_metadata"],
        json!({"owner": "ops", "env": "prod"})
    );
    assert_eq!(r.data()["max_versions"], 2);
    // POST replaces it
    s.post(
        "secret/metadata/m",
        &s.root,
        json!({"custom_metadata": {"only": "this"}}),
    )
    .await;
    let r = s.get("secret/metadata/m", &s.root).await;
    assert_eq!(r.data()["custom_metadata"], json!({"only": "this"}));
    let r = s
        .post(
            "secret/metadata/m",
            &s.root,
            json!({"custom_metadata": {"n": 1}}),
        )
        .await;
    assert_error(&r, 400, "custom_metadata values must be strings");
    let r = s
        .post(
            "secret/metadata/m",
            &s.root,
            json!({"delete_version_after": "1h30m"}),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        s.get("secret/metadata/m", &s.root).await.data()["delete_version_after"],
        "1h30m0s"
    );

    // ACL
    let reader = s
        .token_with(r#"path "secret/metadata/*" { capabilities = ["read"] }"#)
        .await;
    let nothing = s.powerless_token().await;
    assert_eq!(s.get("secret/metadata/m", &reader.id).await.status, 200);
    assert_denied(&s.get("secret/metadata/m", &nothing.id).await);
    for t in [&reader, &nothing] {
        assert_denied(
            &s.post("secret/metadata/m", &t.id, json!({"max_versions": 1}))
                .await,
        );
        assert_denied(
            &s.patch("secret/metadata/m", &t.id, json!({"max_versions": 1}))
                .await,
        );
        assert_denied(&s.delete("secret/metadata/m", &t.id).await);
    }
    assert_eq!(
        s.get("secret/metadata/m", &s.root).await.data()["max_versions"],
        2
    );

    // DELETE removes every version
    let r = s.delete("secret/metadata/m", &s.root).await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    assert_empty_404(&s.get("secret/metadata/m", &s.root).await);
    assert_empty_404(&s.get("secret/data/m", &s.root).await);
    assert_empty_404(&s.get("secret/data/m?version=4", &s.root).await);
    assert_empty_404(&s.list("secret/metadata/", &s.root).await);
}

// ------------------------------------------------------------ list

#[tokio::test]
async fn list_every_spelling() {
    let s = TestServer::dev().await;
    // empty mount: 404 with an empty error list
    assert_empty_404(&s.list("secret/metadata/", &s.root).await);
    assert_empty_404(&s.get("secret/metadata/?list=true", &s.root).await);

    for k in ["a", "b", "dir/x", "dir/y", "dir/sub/z"] {
        s.kv_put(k, json!({"v": SECRET})).await;
    }
    let top = json!(["a", "b", "dir/"]);
    for r in [
        s.list("secret/metadata/", &s.root).await,
        s.list("secret/metadata", &s.root).await,
        s.get("secret/metadata/?list=true", &s.root).await,
        s.get("secret/metadata/?list=1", &s.root).await,
        s.get("secret/metadata/?list=True", &s.root).await,
    ] {
        assert_eq!(r.status, 200, "{}", r.text);
        assert_envelope(&r);
        assert_eq!(r.data()["keys"], top);
        assert!(!r.text.contains(SECRET));
    }
    let r = s.list("secret/metadata/dir", &s.root).await;
    assert_eq!(r.data()["keys"], json!(["sub/", "x", "y"]));
    let r = s.get("secret/metadata/dir/?list=true", &s.root).await;
    assert_eq!(r.data()["keys"], json!(["sub/", "x", "y"]));
    assert_empty_404(&s.list("secret/metadata/nothing/", &s.root).await);
    // list=false is a read
    let r = s.get("secret/metadata/a?list=false", &s.root).await;
    assert_eq!(r.data()["current_version"], 1);

    // ACL: list needs list
    let lister = s
        .token_with(r#"path "secret/metadata/*" { capabilities = ["list"] }"#)
        .await;
    let reader = s
        .token_with(r#"path "secret/metadata/*" { capabilities = ["read"] }"#)
        .await;
    let r = s.list("secret/metadata/", &lister.id).await;
    assert_eq!(r.data()["keys"], top);
    let r = s.get("secret/metadata/dir?list=1", &lister.id).await;
    assert_eq!(r.status, 200);
    assert_denied(&s.list("secret/metadata/", &reader.id).await);
    assert_denied(&s.get("secret/metadata/?list=true", &reader.id).await);
}

// ------------------------------------------------------------ config

#[tokio::test]
async fn mount_config() {
    let s = TestServer::dev().await;
    let r = s.get("secret/config", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.data(),
        &json!({"max_versions": 0, "cas_required": false, "delete_version_after": "0s"})
    );
    let r = s
        .post(
            "secret/config",
            &s.root,
            json!({"max_versions": 3, "delete_version_after": "1h"}),
        )
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    let r = s.get("secret/config", &s.root).await;
    assert_eq!(
        r.data(),
        &json!({"max_versions": 3, "cas_required": false, "delete_version_after": "1h0m0s"})
    );
    // the mount's max_versions applies to keys without their own
    for v in 0..5 {
        s.kv_put("cfg", json!({"v": v})).await;
    }
    let r = s.get("secret/metadata/cfg", &s.root).await;
    assert_eq!(r.data()["versions"].as_object().unwrap().len(), 3);
    assert_eq!(r.data()["oldest_version"], 3);
    // delete_version_after sets a future deletion time on new versions
    let r = s.get("secret/data/cfg", &s.root).await;
    assert_eq!(r.status, 200);
    assert!(
        !r.data()["metadata"]["deletion_time"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    let r = s
        .post("secret/config", &s.root, json!({"max_versions": -1}))
        .await;
    assert_error(&r, 400, "max_versions must be non-negative");

    // ACL
    let reader = s
        .token_with(r#"path "secret/config" { capabilities = ["read"] }"#)
        .await;
    assert_eq!(s.get("secret/config", &reader.id).await.status, 200);
    assert_denied(
        &s.post("secret/config", &reader.id, json!({"max_versions": 1}))
            .await,
    );
    let nothing = s.powerless_token().await;
    assert_denied(&s.get("secret/config", &nothing.id).await);
    assert_eq!(
        s.get("secret/config", &s.root).await.data()["max_versions"],
        3
    );
}

#[tokio::test]
async fn subkeys() {
    let s = TestServer::dev().await;
    s.kv_put("sk", json!({"a": SECRET, "b": {"c": "x", "d": {"e": "y"}}}))
        .await;
    let r = s.get("secret/subkeys/sk", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.data()["subkeys"],
        json!({"a": null, "b": {"c": null, "d": {"e": null}}})
    );
    assert!(!r.text.contains(SECRET));
    let r = s.get("secret/subkeys/sk?depth=1", &s.root).await;
    assert_eq!(r.data()["subkeys"], json!({"a": null, "b": null}));
    let nothing = s.powerless_token().await;
    assert_denied(&s.get("secret/subkeys/sk", &nothing.id).await);
}

// ------------------------------------------------------------ KV v1

#[tokio::test]
async fn kv_v1() {
    let s = TestServer::dev().await;
    let r = s
        .post("sys/mounts/kv", &s.root, json!({"type": "kv"}))
        .await;
    assert_eq!(r.status, 204);
    let r = s.get("sys/mounts", &s.root).await;
    assert_eq!(r.data()["kv/"]["options"], Value::Null);

    // write (204), read (data is the body), list, delete
    let r = s
        .post(
            "kv/app/db",
            &s.root,
            json!({"password": SECRET, "port": 5432}),
        )
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    s.put("kv/app/cache", &s.root, json!({"url": "redis://"}))
        .await;
    s.put("kv/top", &s.root, json!({"k": "v"})).await;
    let r = s.get("kv/app/db", &s.root).await;
    assert_eq!(r.status, 200);
    assert_envelope(&r);
    assert_eq!(r.data(), &json!({"password": SECRET, "port": 5432}));
    for r in [
        s.list("kv/", &s.root).await,
        s.list("kv", &s.root).await,
        s.get("kv/?list=true", &s.root).await,
    ] {
        assert_eq!(r.data()["keys"], json!(["app/", "top"]), "{}", r.text);
    }
    let r = s.get("kv/app?list=1", &s.root).await;
    assert_eq!(r.data()["keys"], json!(["cache", "db"]));
    // overwrite replaces
    s.post("kv/app/db", &s.root, json!({"password": "new"}))
        .await;
    assert_eq!(
        s.get("kv/app/db", &s.root).await.data(),
        &json!({"password": "new"})
    );
    let r = s.post("kv/app/db", &s.root, json!({})).await;
    assert_error(&r, 400, "no data provided");
    assert_error(
        &s.patch("kv/app/db", &s.root, json!({"a": "b"})).await,
        405,
        "unsupported operation",
    );

    let r = s.delete("kv/app/db", &s.root).await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    assert_empty_404(&s.get("kv/app/db", &s.root).await);
    assert_empty_404(&s.list("kv/nothing/", &s.root).await);

    // a body field named `help` is data, not a help request
    let r = s
        .post(
            "kv/helpful",
            &s.root,
            json!({"help": "true", "note": "keep me"}),
        )
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    let r = s.get("kv/helpful", &s.root).await;
    assert_eq!(r.data(), &json!({"help": "true", "note": "keep me"}));

    // ACL
    s.put("kv/app/db", &s.root, json!({"password": SECRET}))
        .await;
    let reader = s
        .token_with(r#"path "kv/app/*" { capabilities = ["read", "list"] }"#)
        .await;
    let nothing = s.powerless_token().await;
    assert_eq!(
        s.get("kv/app/db", &reader.id).await.data()["password"],
        SECRET
    );
    assert_eq!(s.list("kv/app/", &reader.id).await.status, 200);
    let r = s.get("kv/app/db", &nothing.id).await;
    assert_denied(&r);
    assert!(!r.text.contains(SECRET));
    assert_denied(&s.list("kv/app/", &nothing.id).await);
    for t in [&reader, &nothing] {
        assert_denied(
            &s.post("kv/app/db", &t.id, json!({"password": "evil"}))
                .await,
        );
        assert_denied(&s.delete("kv/app/db", &t.id).await);
    }
    assert_eq!(
        s.get("kv/app/db", &s.root).await.data(),
        &json!({"password": SECRET})
    );
}

/// Concurrent writers to one key each get their own version number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_get_distinct_versions() {
    let s = TestServer::dev().await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let http = s.http.clone();
        let url = s.url("secret/data/race");
        let root = s.root.clone();
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .header("X-Vault-Token", root)
                .json(&json!({"data": {"i": i}}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            r.json::<Value>().await.unwrap()["data"]["version"]
                .as_u64()
                .unwrap()
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=16).collect::<Vec<u64>>());
    let r = s.get("secret/metadata/race", &s.root).await;
    assert_eq!(r.data()["current_version"], 16);
    assert_eq!(r.data()["versions"].as_object().unwrap().len(), 10);
    assert_eq!(r.data()["oldest_version"], 7);
}

#[tokio::test]
async fn bad_keys() {
    let s = TestServer::dev().await;
    let r = s
        .post("secret/data/dir/", &s.root, json!({"data": {"k": "v"}}))
        .await;
    assert_error(&r, 400, "invalid key path");
    assert_error(
        &s.get("secret/data/", &s.root).await,
        404,
        "unsupported path",
    );
    assert_empty_404(&s.list("secret/metadata/", &s.root).await);
}
