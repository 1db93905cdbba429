//! `sys/*` over HTTP: init, unseal, seal, seal-status, health, rotate,
//! key-status, mounts, policies, audit devices, capabilities. Every
//! authenticated endpoint has an allow and a deny test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use base64::Engine as _;
use common::*;
use serde_json::json;

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

// ------------------------------------------------------------ init / unseal

#[tokio::test]
async fn init_and_unseal_over_http() {
    let s = TestServer::uninit().await;

    let r = s.call("GET", "sys/init", None, None).await;
    assert_eq!((r.status, &r.body), (200, &json!({"initialized": false})));
    assert_eq!(r.header("cache-control"), Some("no-store"));

    // uninitialised: health 501, authenticated endpoints sealed, unseal refused
    let r = s.call("GET", "sys/health", None, None).await;
    assert_eq!(r.status, 501);
    assert_eq!(r.body["initialized"], false);
    let r = s.call("GET", "sys/mounts", Some("anything"), None).await;
    assert_error(&r, 503, "Vault is sealed");
    let r = s
        .call("PUT", "sys/unseal", None, Some(json!({"key": "00"})))
        .await;
    assert_error(&r, 400, "Vault is not initialized");

    // bad parameters
    let r = s
        .call(
            "PUT",
            "sys/init",
            None,
            Some(json!({"secret_shares": 2, "secret_threshold": 3})),
        )
        .await;
    assert_error(
        &r,
        400,
        "invalid seal configuration: threshold cannot be larger than secret shares",
    );
    let r = s
        .call(
            "PUT",
            "sys/init",
            None,
            Some(json!({"secret_threshold": 3})),
        )
        .await;
    assert_error(&r, 400, "secret_shares is required");
    let r = s
        .call(
            "PUT",
            "sys/init",
            None,
            Some(json!({"secret_shares": 3, "secret_threshold": 2, "pgp_keys": ["x"]})),
        )
        .await;
    assert_error(&r, 400, "pgp_keys is not supported");
    assert_eq!(
        s.call("GET", "sys/init", None, None).await.body,
        json!({"initialized": false})
    );

    // hvac sends root_token_pgp_key: null
    let r = s
        .call(
            "PUT",
            "sys/init",
            None,
            Some(json!({"secret_shares": 3, "secret_threshold": 2, "root_token_pgp_key": null})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let keys: Vec<String> = serde_json::from_value(r.body["keys"].clone()).unwrap();
    let keys_b64: Vec<String> = serde_json::from_value(r.body["keys_base64"].clone()).unwrap();
    let root = r.body["root_token"].as_str().unwrap().to_string();
    assert_eq!((keys.len(), keys_b64.len()), (3, 3));
    for (h, b) in keys.iter().zip(&keys_b64) {
        assert_eq!(hex::decode(h).unwrap(), b64(b));
    }
    assert!(root.starts_with("hvs."), "{root}");

    let r = s.call("GET", "sys/init", None, None).await;
    assert_eq!(r.body, json!({"initialized": true}));
    let r = s
        .call(
            "PUT",
            "sys/init",
            None,
            Some(json!({"secret_shares": 1, "secret_threshold": 1})),
        )
        .await;
    assert_error(&r, 400, "Vault is already initialized");

    // initialised but sealed
    let r = s.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(r.status, 200);
    for (k, v) in [
        ("type", json!("shamir")),
        ("initialized", json!(true)),
        ("sealed", json!(true)),
        ("t", json!(2)),
        ("n", json!(3)),
        ("progress", json!(0)),
        ("migration", json!(false)),
        ("recovery_seal", json!(false)),
        ("storage_type", json!("sqlite")),
    ] {
        assert_eq!(r.body[k], v, "{k}: {}", r.text);
    }
    assert!(r.body["version"].is_string());
    let r = s.get("sys/mounts", &root).await;
    assert_error(&r, 503, "Vault is sealed");

    // unseal: hex share, reset, base64 share, second share
    let r = s
        .call(
            "PUT",
            "sys/unseal",
            None,
            Some(json!({"key": keys[0], "migrate": false})),
        )
        .await;
    assert_eq!(
        (
            r.status,
            &r.body["sealed"],
            &r.body["progress"],
            &r.body["t"],
            &r.body["n"]
        ),
        (200, &json!(true), &json!(1), &json!(2), &json!(3)),
        "{}",
        r.text
    );
    assert!(!r.body["nonce"].as_str().unwrap().is_empty());
    let r = s
        .call("PUT", "sys/unseal", None, Some(json!({"reset": true})))
        .await;
    assert_eq!((r.status, &r.body["progress"]), (200, &json!(0)));
    assert_eq!(r.body["sealed"], true);
    let r = s.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(r.body["progress"], 0);

    let r = s
        .call("PUT", "sys/unseal", None, Some(json!({"key": keys_b64[1]})))
        .await;
    assert_eq!(
        (r.body["sealed"].clone(), r.body["progress"].clone()),
        (json!(true), json!(1))
    );
    // the same share twice does not count twice
    let r = s
        .call("PUT", "sys/unseal", None, Some(json!({"key": keys[1]})))
        .await;
    assert_eq!(
        (r.body["sealed"].clone(), r.body["progress"].clone()),
        (json!(true), json!(1))
    );
    let r = s
        .call("PUT", "sys/unseal", None, Some(json!({"key": keys[2]})))
        .await;
    assert_eq!(
        (r.status, &r.body["sealed"]),
        (200, &json!(false)),
        "{}",
        r.text
    );
    assert_eq!(r.body["progress"], 0);

    // unsealed: the root token from init works, health is 200
    let r = s.get("sys/mounts", &root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.call("GET", "sys/health", None, None).await;
    assert_eq!((r.status, &r.body["sealed"]), (200, &json!(false)));

    // seal again; a wrong share resets the progress and leaves it sealed
    let r = s.put("sys/seal", &root, json!({})).await;
    assert_eq!(r.status, 204);
    let r = s
        .call("PUT", "sys/unseal", None, Some(json!({"key": keys[0]})))
        .await;
    assert_eq!(r.body["progress"], 1);
    let mut wrong = hex::decode(&keys[1]).unwrap();
    let last = wrong.len() - 1;
    wrong[last] ^= 0xff;
    let r = s
        .call(
            "PUT",
            "sys/unseal",
            None,
            Some(json!({"key": hex::encode(&wrong)})),
        )
        .await;
    assert_error(&r, 400, "invalid unseal key");
    let r = s.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(
        (r.body["sealed"].clone(), r.body["progress"].clone()),
        (json!(true), json!(0)),
        "{}",
        r.text
    );
    assert_error(&s.get("sys/mounts", &root).await, 503, "Vault is sealed");

    // malformed unseal requests
    let r = s.call("PUT", "sys/unseal", None, Some(json!({}))).await;
    assert_error(
        &r,
        400,
        "'key' must be specified in request body as JSON, or 'reset' set to true",
    );
    let r = s
        .call("PUT", "sys/unseal", None, Some(json!({"key": "not hex!"})))
        .await;
    assert_error(&r, 400, "'key' must be a valid hex or base64 string");

    for k in &keys[1..] {
        s.call("PUT", "sys/unseal", None, Some(json!({"key": k})))
            .await;
    }
    assert_eq!(s.get("sys/mounts", &root).await.status, 200);
}

// ------------------------------------------------------------ seal / status / health

#[tokio::test]
async fn seal_needs_sudo() {
    let s = TestServer::dev().await;
    let update_only = s
        .token_with(r#"path "sys/seal" { capabilities = ["update"] }"#)
        .await;
    let nothing = s.powerless_token().await;
    let sudo = s
        .token_with(r#"path "sys/seal" { capabilities = ["update", "sudo"] }"#)
        .await;

    // deny: no capability, and update without sudo
    for t in [&nothing, &update_only] {
        assert_denied(&s.put("sys/seal", &t.id, json!({})).await);
        let r = s.call("GET", "sys/seal-status", None, None).await;
        assert_eq!(r.body["sealed"], false);
    }
    // no token at all
    assert_denied(&s.call("PUT", "sys/seal", None, Some(json!({}))).await);

    // allow
    let r = s.put("sys/seal", &sudo.id, json!({})).await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = s.call("GET", "sys/seal-status", None, None).await;
    assert_eq!((r.status, &r.body["sealed"]), (200, &json!(true)));
    assert_error(
        &s.get("secret/data/x", &s.root).await,
        503,
        "Vault is sealed",
    );
}

#[tokio::test]
async fn seal_status_fields() {
    let s = TestServer::dev().await;
    let r = s.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(r.status, 200);
    for k in [
        "type",
        "initialized",
        "sealed",
        "t",
        "n",
        "progress",
        "nonce",
        "version",
        "migration",
        "recovery_seal",
        "storage_type",
    ] {
        assert!(r.body.get(k).is_some(), "seal-status lacks {k}: {}", r.text);
    }
    assert_eq!(
        (
            &r.body["sealed"],
            &r.body["t"],
            &r.body["n"],
            &r.body["progress"]
        ),
        (&json!(false), &json!(1), &json!(1), &json!(0))
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn health_codes_and_head() {
    // uninitialised: 501, uninitcode
    let u = TestServer::uninit().await;
    let r = u.call("GET", "sys/health", None, None).await;
    assert_eq!((r.status, &r.body["initialized"]), (501, &json!(false)));
    let r = u.call("HEAD", "sys/health", None, None).await;
    assert_eq!((r.status, r.text.as_str()), (501, ""));
    let r = u.call("GET", "sys/health?uninitcode=200", None, None).await;
    assert_eq!(r.status, 200);
    let r = u
        .call("HEAD", "sys/health?uninitcode=418", None, None)
        .await;
    assert_eq!(r.status, 418);

    // active: 200 and the documented body; activecode
    let s = TestServer::dev().await;
    let r = s.call("GET", "sys/health", None, None).await;
    assert_eq!(r.status, 200);
    for k in [
        "initialized",
        "sealed",
        "standby",
        "performance_standby",
        "replication_performance_mode",
        "replication_dr_mode",
        "server_time_utc",
        "version",
        "cluster_name",
        "cluster_id",
    ] {
        assert!(r.body.get(k).is_some(), "health lacks {k}: {}", r.text);
    }
    assert_eq!(
        (
            &r.body["initialized"],
            &r.body["sealed"],
            &r.body["standby"]
        ),
        (&json!(true), &json!(false), &json!(false))
    );
    let r = s.call("HEAD", "sys/health", None, None).await;
    assert_eq!((r.status, r.text.as_str()), (200, ""));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = s
        .call(
            "GET",
            "sys/health?activecode=299&sealedcode=200&uninitcode=200",
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 299);
    let r = s
        .call(
            "GET",
            "sys/health?standbyok=true&perfstandbyok=true",
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let r = s.call("GET", "sys/health?activecode=abc", None, None).await;
    assert_error(&r, 400, "unable to parse activecode: invalid status code");
    let r = s
        .call("GET", "sys/health?standbycode=1000", None, None)
        .await;
    assert_error(&r, 400, "unable to parse standbycode: invalid status code");

    // sealed: 503, sealedcode
    s.seal().await;
    let r = s.call("GET", "sys/health", None, None).await;
    assert_eq!((r.status, &r.body["sealed"]), (503, &json!(true)));
    let r = s.call("HEAD", "sys/health", None, None).await;
    assert_eq!((r.status, r.text.as_str()), (503, ""));
    let r = s.call("GET", "sys/health?sealedcode=200", None, None).await;
    assert_eq!(r.status, 200);
    let r = s
        .call(
            "HEAD",
            "sys/health?sealedcode=204&activecode=500",
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 204);
}

// ------------------------------------------------------------ rotate / key-status

#[tokio::test]
async fn rotate_needs_sudo_and_key_status() {
    let s = TestServer::dev().await;
    s.kv_put("before", json!({"v": "one"})).await;

    // key-status allow / deny
    let reader = s
        .token_with(r#"path "sys/key-status" { capabilities = ["read"] }"#)
        .await;
    let r = s.get("sys/key-status", &reader.id).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_envelope(&r);
    assert_top_level(&r);
    assert_eq!(r.data()["term"], 1);
    assert!(r.data()["install_time"].is_string());
    assert_eq!(r.body["term"], 1);
    let nothing = s.powerless_token().await;
    assert_denied(&s.get("sys/key-status", &nothing.id).await);

    // rotate deny: nothing, update without sudo
    let update_only = s
        .token_with(r#"path "sys/rotate" { capabilities = ["update"] }"#)
        .await;
    for t in [&nothing, &update_only, &reader] {
        assert_denied(&s.put("sys/rotate", &t.id, json!({})).await);
    }
    assert_eq!(s.get("sys/key-status", &s.root).await.data()["term"], 1);

    // rotate allow
    let sudo = s
        .token_with(r#"path "sys/rotate" { capabilities = ["update", "sudo"] }"#)
        .await;
    let r = s.put("sys/rotate", &sudo.id, json!({})).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.post("sys/rotate", &s.root, json!({})).await;
    assert_eq!(r.status, 204);
    assert_eq!(s.get("sys/key-status", &s.root).await.data()["term"], 3);

    // data from the old term still reads; new writes work
    let r = s.get("secret/data/before", &s.root).await;
    assert_eq!(r.data()["data"], json!({"v": "one"}));
    s.kv_put("after", json!({"v": "two"})).await;
    let r = s.get("secret/data/after", &s.root).await;
    assert_eq!(r.data()["data"], json!({"v": "two"}));
}

// ------------------------------------------------------------ mounts

#[tokio::test]
async fn mounts_list_enable_read_tune_disable() {
    let s = TestServer::dev().await;

    let r = s.get("sys/mounts", &s.root).await;
    assert_eq!(r.status, 200);
    assert_envelope(&r);
    assert_top_level(&r);
    let secret = &r.data()["secret/"];
    assert_eq!(secret["type"], "kv");
    assert_eq!(secret["options"], json!({"version": "2"}));
    for k in [
        "description",
        "accessor",
        "config",
        "local",
        "seal_wrap",
        "uuid",
    ] {
        assert!(secret.get(k).is_some(), "mount lacks {k}");
    }
    for k in ["default_lease_ttl", "max_lease_ttl", "force_no_cache"] {
        assert!(secret["config"].get(k).is_some(), "mount config lacks {k}");
    }
    assert_eq!(r.data()["sys/"]["type"], "system");
    assert_eq!(r.body["secret/"], r.data()["secret/"]);

    // enable KV v1 (node-vault sends extra fields)
    let r = s
        .post(
            "sys/mounts/kv1",
            &s.root,
            json!({"type": "kv", "description": "v1 store", "options": {"version": "1"},
                   "config": {"default_lease_ttl": "1h"}, "mount_point": "kv1"}),
        )
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    let r = s
        .post("sys/mounts/team/kv2", &s.root, json!({"type": "kv-v2"}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);

    let r = s.get("sys/mounts", &s.root).await;
    assert_eq!(r.data()["kv1/"]["description"], "v1 store");
    assert_eq!(r.data()["kv1/"]["config"]["default_lease_ttl"], 3600);
    assert_eq!(r.data()["team/kv2/"]["options"], json!({"version": "2"}));

    // read one mount
    let r = s.get("sys/mounts/kv1", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["type"], "kv");
    assert_eq!(r.data()["options"], json!({"version": "1"}));
    let r = s.get("sys/mounts/nope", &s.root).await;
    assert_error(&r, 400, "No secret engine mount at nope/");

    // the KV v1 mount works
    let r = s.post("kv1/app", &s.root, json!({"user": "u1"})).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.get("kv1/app", &s.root).await;
    assert_eq!(r.data(), &json!({"user": "u1"}));
    // and the nested KV v2 mount too
    let r = s
        .post("team/kv2/data/a", &s.root, json!({"data": {"k": "v"}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // conflicts and bad requests change nothing
    let r = s
        .post("sys/mounts/kv1", &s.root, json!({"type": "kv"}))
        .await;
    assert_error(&r, 400, "path is already in use at kv1/");
    let r = s
        .post("sys/mounts/team", &s.root, json!({"type": "kv"}))
        .await;
    assert_error(&r, 400, "path is already in use at team/");
    let r = s
        .post("sys/mounts/sys", &s.root, json!({"type": "kv"}))
        .await;
    assert_error(&r, 400, "cannot mount \"sys/\": path is reserved");
    let r = s
        .post("sys/mounts/other", &s.root, json!({"type": "nope"}))
        .await;
    assert_error(
        &r,
        400,
        "plugin not found in the catalog: only kv, kv-v2, generic, transit, pki and database are available",
    );
    let r = s.post("sys/mounts/other", &s.root, json!({})).await;
    assert_error(&r, 400, "backend type must be specified as a string");
    let r = s
        .post(
            "sys/mounts/other",
            &s.root,
            json!({"type": "kv", "options": {"version": "3"}}),
        )
        .await;
    assert_error(&r, 400, "invalid kv version: use 1 or 2");
    assert!(
        s.get("sys/mounts", &s.root)
            .await
            .data()
            .get("other/")
            .is_none()
    );

    // tune
    let r = s.get("sys/mounts/kv1/tune", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["default_lease_ttl"], 3600);
    // the mount has no max of its own: the system's
    assert_eq!(r.data()["max_lease_ttl"], 768 * 3600);
    let r = s
        .post(
            "sys/mounts/kv1/tune",
            &s.root,
            json!({"default_lease_ttl": "2h", "max_lease_ttl": 10800, "description": "tuned"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.get("sys/mounts/kv1/tune", &s.root).await;
    assert_eq!(
        (
            &r.data()["default_lease_ttl"],
            &r.data()["max_lease_ttl"],
            &r.data()["description"]
        ),
        (&json!(7200), &json!(10800), &json!("tuned"))
    );
    let r = s
        .post(
            "sys/mounts/kv1/tune",
            &s.root,
            json!({"options": {"version": "2"}}),
        )
        .await;
    assert_error(
        &r,
        400,
        "changing the version of a kv mount is not supported; enable a new mount",
    );
    let r = s.post("sys/mounts/nope/tune", &s.root, json!({})).await;
    assert_error(&r, 400, "no mount entry found for path nope/");

    // disable: the mount and its data are gone
    let r = s.delete("sys/mounts/kv1", &s.root).await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    assert!(
        s.get("sys/mounts", &s.root)
            .await
            .data()
            .get("kv1/")
            .is_none()
    );
    assert_error(&s.get("kv1/app", &s.root).await, 404, "unsupported path");
    let r = s
        .post("sys/mounts/kv1", &s.root, json!({"type": "kv"}))
        .await;
    assert_eq!(r.status, 204);
    assert_empty_404(&s.get("kv1/app", &s.root).await);
}

/// `GET sys/mounts/<path>/tune` reports the TTLs the mount works with: its
/// own, or the system's (768h by default) where it has none, as Vault.
#[tokio::test]
async fn mount_tune_reports_effective_ttls() {
    const SYSTEM: i64 = 768 * 3600;
    let s = TestServer::dev().await;
    let r = s
        .post("sys/mounts/test", &s.root, json!({"type": "generic"}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.get("sys/mounts/test/tune", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_envelope(&r);
    assert_top_level(&r);
    assert_eq!(
        r.data(),
        &json!({"default_lease_ttl": SYSTEM, "max_lease_ttl": SYSTEM,
                "force_no_cache": false, "description": ""})
    );
    // the listing keeps showing what the mount itself has (0: none), as Vault
    let r = s.get("sys/mounts", &s.root).await;
    assert_eq!(
        r.data()["test/"]["config"],
        json!({"default_lease_ttl": 0, "max_lease_ttl": 0, "force_no_cache": false})
    );
    // a KV mount's options are reported too
    let r = s.get("sys/mounts/secret/tune", &s.root).await;
    assert_eq!(r.data()["options"], json!({"version": "2"}));
    assert_eq!(r.data()["default_lease_ttl"], SYSTEM);

    // hvac's test: tune both, read them back
    let r = s
        .post(
            "sys/mounts/test/tune",
            &s.root,
            json!({"default_lease_ttl": "3600s", "max_lease_ttl": "8600s"}),
        )
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    let r = s.get("sys/mounts/test/tune/", &s.root).await;
    assert_eq!(
        (&r.data()["default_lease_ttl"], &r.data()["max_lease_ttl"]),
        (&json!(3600), &json!(8600))
    );
    // one of them back to the system's
    let r = s
        .post(
            "sys/mounts/test/tune",
            &s.root,
            json!({"default_lease_ttl": "system"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.get("sys/mounts/test/tune", &s.root).await;
    assert_eq!(
        (&r.data()["default_lease_ttl"], &r.data()["max_lease_ttl"]),
        (&json!(SYSTEM), &json!(8600))
    );
    assert_eq!(
        s.get("sys/mounts", &s.root).await.data()["test/"]["config"]["default_lease_ttl"],
        0
    );
    // token_type belongs to auth mounts (OpenBao's refusal), nothing changes
    let r = s
        .post(
            "sys/mounts/test/tune",
            &s.root,
            json!({"token_type": "batch", "max_lease_ttl": "1h"}),
        )
        .await;
    assert_error(&r, 400, "'token_type' can only be modified on auth mounts");
    let r = s.get("sys/mounts/test/tune", &s.root).await;
    assert_eq!(r.data()["max_lease_ttl"], json!(8600), "{}", r.text);
    // null and "" leave a TTL as it is (OpenBao), never a silent widening
    for body in [json!({"max_lease_ttl": null}), json!({"max_lease_ttl": ""})] {
        let r = s.post("sys/mounts/test/tune", &s.root, body).await;
        assert_eq!(r.status, 204, "{}", r.text);
        let r = s.get("sys/mounts/test/tune", &s.root).await;
        assert_eq!(r.data()["max_lease_ttl"], json!(8600), "{}", r.text);
    }

    // refused, as Vault: a max below the default, however it comes about
    let r = s
        .post(
            "sys/mounts/test/tune",
            &s.root,
            json!({"default_lease_ttl": "2h", "max_lease_ttl": "1h"}),
        )
        .await;
    assert_error(
        &r,
        400,
        "backend max lease TTL of 3600 would be less than backend default lease TTL of 7200",
    );
    let r = s
        .post(
            "sys/mounts/test/tune",
            &s.root,
            json!({"default_lease_ttl": "9000s"}),
        )
        .await;
    assert_error(
        &r,
        400,
        "backend max lease TTL of 8600 would be less than backend default lease TTL of 9000",
    );
    let r = s
        .post(
            "sys/mounts/test/tune",
            &s.root,
            json!({"max_lease_ttl": "-1s"}),
        )
        .await;
    assert_error(&r, 400, "field \"max_lease_ttl\": invalid duration");
    let r = s.get("sys/mounts/test/tune", &s.root).await;
    assert_eq!(
        (&r.data()["default_lease_ttl"], &r.data()["max_lease_ttl"]),
        (&json!(SYSTEM), &json!(8600)),
        "a refused tune changed nothing"
    );
    let r = s
        .post(
            "sys/mounts/t2",
            &s.root,
            json!({"type": "kv", "config": {"default_lease_ttl": "2h", "max_lease_ttl": "1h"}}),
        )
        .await;
    assert_error(
        &r,
        400,
        "given default lease TTL greater than given max lease TTL",
    );
    assert!(
        s.get("sys/mounts", &s.root)
            .await
            .data()
            .get("t2/")
            .is_none()
    );

    // the system's TTLs are the configuration's
    let s = TestServer::start(Opts {
        ttl: palisade_server::token::TtlLimits {
            default_ttl: 3600,
            max_ttl: 7200,
        },
        ..Opts::default()
    })
    .await;
    let r = s.get("sys/mounts/secret/tune", &s.root).await;
    assert_eq!(
        (&r.data()["default_lease_ttl"], &r.data()["max_lease_ttl"]),
        (&json!(3600), &json!(7200))
    );
}

/// `sys/auth/token/tune`: readable with sudo (every `sys/auth/*` path needs
/// it in Vault), the system's TTLs; not tunable (the server configuration
/// decides token TTLs).
#[tokio::test]
async fn auth_token_tune() {
    let s = TestServer::dev().await;
    let want = json!({"default_lease_ttl": 768 * 3600, "max_lease_ttl": 768 * 3600,
                      "force_no_cache": false, "description": "token based credentials",
                      "token_type": "default-service"});
    for path in ["sys/auth/token/tune", "sys/auth/token/tune/"] {
        let r = s.get(path, &s.root).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_envelope(&r);
        assert_top_level(&r);
        assert_eq!(r.data(), &want);
    }
    let sudo = s
        .token_with(r#"path "sys/auth/token/tune" { capabilities = ["read", "update", "sudo"] }"#)
        .await;
    assert_eq!(s.get("sys/auth/token/tune", &sudo.id).await.data(), &want);

    // deny: without sudo, whatever else the policy grants
    let no_sudo = s
        .token_with(
            r#"
path "sys/auth/*" { capabilities = ["read", "update", "list", "delete"] }
path "sys/auth" { capabilities = ["read"] }
"#,
        )
        .await;
    assert_denied(&s.get("sys/auth/token/tune", &no_sudo.id).await);
    assert_denied(
        &s.post(
            "sys/auth/token/tune",
            &no_sudo.id,
            json!({"max_lease_ttl": "1h"}),
        )
        .await,
    );
    assert_denied(&s.get("sys/auth/nope/tune", &no_sudo.id).await);
    // listing the methods needs no sudo
    assert_eq!(s.get("sys/auth", &no_sudo.id).await.status, 200);
    let nothing = s.powerless_token().await;
    assert_denied(&s.get("sys/auth/token/tune", &nothing.id).await);

    // refused even with sudo: the token method's TTLs are the configuration's
    let not_tunable = "tuning the token auth method is not supported: its TTLs are the server configuration's default_lease_ttl and max_lease_ttl";
    for t in [&s.root, &sudo.id] {
        let r = s
            .post(
                "sys/auth/token/tune",
                t,
                json!({"default_lease_ttl": "1h", "max_lease_ttl": "2h", "description": "x"}),
            )
            .await;
        assert_error(&r, 400, not_tunable);
    }
    assert_eq!(s.get("sys/auth/token/tune", &s.root).await.data(), &want);
    let t = s
        .create_token(&s.root, json!({"policies": ["default"]}))
        .await;
    let r = s.get("auth/token/lookup-self", &t.id).await;
    assert_eq!(r.data()["creation_ttl"], 768 * 3600);
    // other operations, other methods
    assert_error(
        &s.delete("sys/auth/token/tune", &s.root).await,
        405,
        "unsupported operation",
    );
    assert_error(
        &s.list("sys/auth/token/tune", &s.root).await,
        405,
        "unsupported operation",
    );
    assert_error(
        &s.get("sys/auth/nope/tune", &s.root).await,
        400,
        "cannot fetch sysview for path \"auth/nope/\"",
    );
    assert_error(
        &s.post("sys/auth/nope/tune", &s.root, json!({})).await,
        400,
        "tune of path \"auth/nope/\" failed: no mount entry found",
    );

    // the configuration's TTLs
    let s = TestServer::start(Opts {
        ttl: palisade_server::token::TtlLimits {
            default_ttl: 3600,
            max_ttl: 7200,
        },
        ..Opts::default()
    })
    .await;
    let r = s.get("sys/auth/token/tune", &s.root).await;
    assert_eq!(
        (&r.data()["default_lease_ttl"], &r.data()["max_lease_ttl"]),
        (&json!(3600), &json!(7200))
    );
}

#[tokio::test]
async fn mounts_deny() {
    let s = TestServer::dev().await;
    let reader = s
        .token_with(
            r#"
path "sys/mounts" { capabilities = ["read"] }
path "sys/mounts/*" { capabilities = ["read"] }
"#,
        )
        .await;
    let nothing = s.powerless_token().await;

    // allow: list and read
    assert_eq!(s.get("sys/mounts", &reader.id).await.status, 200);
    assert_eq!(s.get("sys/mounts/secret", &reader.id).await.status, 200);
    assert_eq!(
        s.get("sys/mounts/secret/tune", &reader.id).await.status,
        200
    );

    // deny
    assert_denied(&s.get("sys/mounts", &nothing.id).await);
    assert_denied(&s.get("sys/mounts/secret", &nothing.id).await);
    for t in [&reader, &nothing] {
        assert_denied(&s.post("sys/mounts/x", &t.id, json!({"type": "kv"})).await);
        assert_denied(&s.delete("sys/mounts/secret", &t.id).await);
        assert_denied(
            &s.post("sys/mounts/secret/tune", &t.id, json!({"description": "x"}))
                .await,
        );
    }
    // nothing changed
    let r = s.get("sys/mounts", &s.root).await;
    assert!(r.data().get("x/").is_none());
    assert_eq!(
        r.data()["secret/"]["description"],
        "key/value secret storage"
    );
}

// ------------------------------------------------------------ policies

const APP_POLICY: &str = r#"path "secret/data/app/*" {
  capabilities = ["read", "list"]
}
"#;

#[tokio::test]
async fn policies_crud_both_apis() {
    let s = TestServer::dev().await;

    // sys/policy with `policy`
    let r = s
        .put("sys/policy/app", &s.root, json!({"policy": APP_POLICY}))
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    // node-vault: {"name", "rules"}
    let r = s
        .put(
            "sys/policy/nv",
            &s.root,
            json!({"name": "nv", "rules": APP_POLICY}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    // sys/policies/acl with `policy`
    let r = s
        .put(
            "sys/policies/acl/acl1",
            &s.root,
            json!({"policy": APP_POLICY}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);

    let r = s.get("sys/policy", &s.root).await;
    assert_eq!(r.status, 200);
    assert_envelope(&r);
    assert_top_level(&r);
    assert_eq!(
        r.data()["policies"],
        json!(["acl1", "app", "default", "nv", "root"])
    );
    assert_eq!(r.data()["keys"], r.data()["policies"]);
    let r = s.list("sys/policy", &s.root).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.data()["keys"],
        json!(["acl1", "app", "default", "nv", "root"])
    );

    let r = s.get("sys/policy/nv", &s.root).await;
    assert_eq!(r.status, 200);
    assert_top_level(&r);
    assert_eq!(r.data(), &json!({"name": "nv", "rules": APP_POLICY}));
    assert_eq!(r.body["rules"], APP_POLICY);

    let r = s.list("sys/policies/acl", &s.root).await;
    assert_eq!(r.data()["keys"], json!(["acl1", "app", "default", "nv"]));
    let r = s.get("sys/policies/acl?list=true", &s.root).await;
    assert_eq!(r.data()["keys"], json!(["acl1", "app", "default", "nv"]));
    let r = s.get("sys/policies/acl/app", &s.root).await;
    assert_eq!(r.data(), &json!({"name": "app", "policy": APP_POLICY}));
    let r = s.get("sys/policy/root", &s.root).await;
    assert_eq!(r.data(), &json!({"name": "root", "rules": ""}));

    // the policy takes effect, and an update takes effect at once
    s.kv_put("app/db", json!({"password": "pw-123"})).await;
    let t = s.create_token(&s.root, json!({"policies": ["app"]})).await;
    let r = s.get("secret/data/app/db", &t.id).await;
    assert_eq!(r.data()["data"]["password"], "pw-123");
    s.write_policy(
        "app",
        r#"path "secret/data/other" { capabilities = ["read"] }"#,
    )
    .await;
    let r = s.get("secret/data/app/db", &t.id).await;
    assert_denied(&r);
    assert!(!r.text.contains("pw-123"));

    // delete
    let r = s.delete("sys/policy/nv", &s.root).await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    assert_empty_404(&s.get("sys/policy/nv", &s.root).await);
    let r = s.delete("sys/policies/acl/acl1", &s.root).await;
    assert_eq!(r.status, 204);
    assert_empty_404(&s.get("sys/policies/acl/acl1", &s.root).await);

    // root and default are protected
    let r = s
        .put("sys/policy/root", &s.root, json!({"policy": APP_POLICY}))
        .await;
    assert_error(&r, 400, "cannot update root policy");
    let r = s.delete("sys/policy/root", &s.root).await;
    assert_error(&r, 400, "cannot delete root policy");
    let r = s.delete("sys/policy/default", &s.root).await;
    assert_error(&r, 400, "cannot delete default policy");
    let r = s.delete("sys/policies/acl/default", &s.root).await;
    assert_error(&r, 400, "cannot delete default policy");
    assert_eq!(s.get("sys/policy/default", &s.root).await.status, 200);

    // empty and invalid policies
    let r = s.put("sys/policy/e", &s.root, json!({"policy": " "})).await;
    assert_error(&r, 400, "'policy' parameter not supplied or empty");
    let r = s.put("sys/policy/e", &s.root, json!({})).await;
    assert_error(&r, 400, "'policy' parameter not supplied or empty");
    let r = s
        .put(
            "sys/policy/bad",
            &s.root,
            json!({"policy": "path \"x\" { capabilities = [\"fly\"] }"}),
        )
        .await;
    assert_error(
        &r,
        400,
        "failed to parse policy: path \"x\": invalid capability \"fly\"",
    );
    assert_empty_404(&s.get("sys/policy/bad", &s.root).await);
    let r = s
        .put(
            "sys/policy/bad name",
            &s.root,
            json!({"policy": APP_POLICY}),
        )
        .await;
    assert_error(
        &r,
        400,
        "invalid policy name: use lowercase letters, digits and - _ . @ (at most 128 characters)",
    );
}

#[tokio::test]
async fn policies_deny() {
    let s = TestServer::dev().await;
    s.write_policy("victim", APP_POLICY).await;
    let reader = s
        .token_with(
            r#"
path "sys/policy" { capabilities = ["read"] }
path "sys/policy/*" { capabilities = ["read"] }
path "sys/policies/acl" { capabilities = ["list"] }
path "sys/policies/acl/*" { capabilities = ["read"] }
"#,
        )
        .await;
    let nothing = s.powerless_token().await;

    // allow: reads
    assert_eq!(s.get("sys/policy", &reader.id).await.status, 200);
    assert_eq!(s.get("sys/policy/victim", &reader.id).await.status, 200);
    assert_eq!(s.list("sys/policies/acl", &reader.id).await.status, 200);
    assert_eq!(
        s.get("sys/policies/acl/victim", &reader.id).await.status,
        200
    );

    // deny
    assert_denied(&s.get("sys/policy", &nothing.id).await);
    assert_denied(&s.list("sys/policies/acl", &nothing.id).await);
    let r = s.get("sys/policy/victim", &nothing.id).await;
    assert_denied(&r);
    assert!(!r.text.contains("secret/data/app"));
    assert_denied(&s.get("sys/policies/acl/victim", &nothing.id).await);
    for t in [&reader, &nothing] {
        let hcl = json!({"policy": r#"path "*" { capabilities = ["sudo", "read"] }"#});
        assert_denied(&s.put("sys/policy/victim", &t.id, hcl.clone()).await);
        assert_denied(&s.put("sys/policy/newone", &t.id, hcl.clone()).await);
        assert_denied(&s.put("sys/policies/acl/victim", &t.id, hcl).await);
        assert_denied(&s.delete("sys/policy/victim", &t.id).await);
        assert_denied(&s.delete("sys/policies/acl/victim", &t.id).await);
    }
    // nothing changed
    let r = s.get("sys/policy/victim", &s.root).await;
    assert_eq!(r.data()["rules"], APP_POLICY);
    assert_empty_404(&s.get("sys/policy/newone", &s.root).await);

    // sys/ has no existence check (Vault, OpenBao): every write there is an
    // update, so a create-only token can neither add a policy nor change one
    let creator = s
        .token_with(r#"path "sys/policy/*" { capabilities = ["create"] }"#)
        .await;
    let r = s
        .put(
            "sys/policy/fresh",
            &creator.id,
            json!({"policy": APP_POLICY}),
        )
        .await;
    assert_denied(&r);
    assert_empty_404(&s.get("sys/policy/fresh", &s.root).await);
    let updater = s
        .token_with(r#"path "sys/policy/*" { capabilities = ["update"] }"#)
        .await;
    let r = s
        .put(
            "sys/policy/fresh",
            &updater.id,
            json!({"policy": APP_POLICY}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .put(
            "sys/policy/victim",
            &creator.id,
            json!({"policy": APP_POLICY.replace("list", "update")}),
        )
        .await;
    assert_denied(&r);
    assert_eq!(
        s.get("sys/policy/victim", &s.root).await.data()["rules"],
        APP_POLICY
    );
}

// hvac sends a policy given as a dict as JSON text, pretty-printed
// (json.dumps(indent=4)) or compact; Vault parses it like HCL.
const JSON_PRETTY: &str = "{\n    \"path\": {\n        \"secret/data/app/*\": {\n            \"capabilities\": [\n                \"read\"\n            ]\n        },\n        \"secret/data/app/admin\": {\n            \"capabilities\": [\n                \"deny\"\n            ]\n        }\n    }\n}";
const JSON_COMPACT: &str =
    r#"{"path": {"secret/data/app/*": {"capabilities": ["read", "update"]}}}"#;

#[tokio::test]
async fn json_policies_allow() {
    let mut s = TestServer::start(Opts {
        dev: false,
        ..Opts::default()
    })
    .await;
    let keys = s.init_and_unseal(1, 1).await;
    let r = s
        .post("sys/mounts/secret", &s.root, json!({"type": "kv-v2"}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);

    // written through both APIs and read back byte for byte (hvac json.loads
    // what it reads and counts its lines)
    for (name, text) in [("pretty", JSON_PRETTY), ("compact", JSON_COMPACT)] {
        for path in [
            format!("sys/policy/{name}"),
            format!("sys/policies/acl/{name}"),
        ] {
            let r = s.put(&path, &s.root, json!({"policy": text})).await;
            assert_eq!((r.status, r.text.as_str()), (204, ""), "{path}");
        }
        let r = s.get(&format!("sys/policy/{name}"), &s.root).await;
        assert_eq!(r.data(), &json!({"name": name, "rules": text}));
        let r = s.get(&format!("sys/policies/acl/{name}"), &s.root).await;
        assert_eq!(r.data(), &json!({"name": name, "policy": text}));
    }
    // base64-encoded, as any policy
    let encoded = base64::engine::general_purpose::STANDARD.encode(JSON_COMPACT);
    let r = s
        .put("sys/policy/encoded", &s.root, json!({"policy": encoded}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(
        s.get("sys/policy/encoded", &s.root).await.data()["rules"],
        JSON_COMPACT
    );

    // the rules take effect as HCL's would
    s.kv_put("app/db", json!({"password": "pw-1"})).await;
    let t = s
        .create_token(
            &s.root,
            json!({"policies": ["pretty"], "no_default_policy": true}),
        )
        .await;
    let r = s.get("secret/data/app/db", &t.id).await;
    assert_eq!(r.data()["data"]["password"], "pw-1");
    let r = s
        .post(
            "sys/capabilities-accessor",
            &s.root,
            json!({"accessor": t.accessor, "paths": ["secret/data/app/db"]}),
        )
        .await;
    assert_eq!(r.data()["capabilities"], json!(["read"]));
    let w = s
        .create_token(
            &s.root,
            json!({"policies": ["compact"], "no_default_policy": true}),
        )
        .await;
    let r = s
        .post(
            "secret/data/app/db",
            &w.id,
            json!({"data": {"password": "pw-2"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // a JSON policy replaced by HCL, and back, takes effect at once
    s.write_policy(
        "pretty",
        r#"path "secret/data/other" { capabilities = ["read"] }"#,
    )
    .await;
    assert_denied(&s.get("secret/data/app/db", &t.id).await);
    let r = s
        .put("sys/policy/pretty", &s.root, json!({"policy": JSON_PRETTY}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(s.get("secret/data/app/db", &t.id).await.status, 200);

    // and is loaded again, unchanged, after a restart
    let root = s.root.clone();
    let dir = s.stop().await;
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
    assert_eq!(
        s.get("sys/policies/acl/pretty", &s.root).await.data()["policy"],
        JSON_PRETTY
    );
    let r = s.get("secret/data/app/db", &t.id).await;
    assert_eq!(r.data()["data"]["password"], "pw-2");
}

#[tokio::test]
async fn json_policies_deny() {
    let s = TestServer::dev().await;
    s.kv_put("app/db", json!({"password": "pw-1"})).await;
    s.kv_put("app/admin", json!({"password": "pw-admin"})).await;
    s.write_policy("pretty", JSON_PRETTY).await;
    let t = s
        .create_token(
            &s.root,
            json!({"policies": ["pretty"], "no_default_policy": true}),
        )
        .await;

    // what the JSON policy does not grant: a write, another path, its deny
    assert_denied(
        &s.post("secret/data/app/db", &t.id, json!({"data": {"x": "y"}}))
            .await,
    );
    assert_denied(&s.get("secret/data/other", &t.id).await);
    let r = s.get("secret/data/app/admin", &t.id).await;
    assert_denied(&r);
    assert!(!r.text.contains("pw-admin"));
    // a deny in a JSON policy wins over a grant in an HCL one
    s.write_policy(
        "grant-admin",
        r#"path "secret/data/app/admin" { capabilities = ["read", "sudo"] }"#,
    )
    .await;
    let both = s
        .create_token(
            &s.root,
            json!({"policies": ["pretty", "grant-admin"], "no_default_policy": true}),
        )
        .await;
    assert_denied(&s.get("secret/data/app/admin", &both.id).await);

    // writing a JSON policy needs what writing an HCL one needs
    let reader = s
        .token_with(r#"path "sys/policy/*" { capabilities = ["read", "create"] }"#)
        .await;
    let all = json!({"policy": r#"{"path": {"*": {"capabilities": ["sudo", "read", "update"]}}}"#});
    for path in [
        "sys/policy/pretty",
        "sys/policy/fresh",
        "sys/policies/acl/pretty",
    ] {
        assert_denied(&s.put(path, &reader.id, all.clone()).await);
        assert_denied(&s.put(path, &t.id, all.clone()).await);
    }
    assert_eq!(
        s.get("sys/policy/pretty", &s.root).await.data()["rules"],
        JSON_PRETTY
    );
    assert_empty_404(&s.get("sys/policy/fresh", &s.root).await);

    // a repeated key is refused, never read as its last member (which would
    // drop the deny here)
    let dup = r#"{"path": {"secret/data/app/admin": {"capabilities": ["deny"]}, "secret/data/app/admin": {"capabilities": ["read"]}}}"#;
    let r = s
        .put("sys/policy/pretty", &s.root, json!({"policy": dup}))
        .await;
    assert_error(
        &r,
        400,
        r#"failed to parse policy: line 1, column 86: invalid JSON: duplicate key "secret/data/app/admin""#,
    );
    assert_denied(&s.get("secret/data/app/admin", &t.id).await);
}

// ------------------------------------------------------------ audit devices

#[tokio::test]
async fn audit_devices_allow() {
    let s = TestServer::dev().await;
    let path = s.path("file.log");
    let r = s
        .put(
            "sys/audit/file",
            &s.root,
            json!({"type": "file", "description": "main log", "local": false,
                   "options": {"file_path": path.display().to_string()}}),
        )
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));

    let r = s.get("sys/audit", &s.root).await;
    assert_eq!(r.status, 200);
    assert_envelope(&r);
    assert_top_level(&r);
    assert_eq!(
        r.data()["file/"],
        json!({"type": "file", "description": "main log", "local": false, "path": "file/",
               "options": {"file_path": path.display().to_string()}})
    );
    assert_eq!(s.list("sys/audit", &s.root).await.status, 200);

    let r = s
        .post("sys/audit-hash/file", &s.root, json!({"input": "hello"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_top_level(&r);
    let hash = r.data()["hash"].as_str().unwrap();
    assert!(
        hash.starts_with("hmac-sha256:") && hash.len() == 12 + 64,
        "{hash}"
    );
    // deterministic per device
    let r2 = s
        .post("sys/audit-hash/file", &s.root, json!({"input": "hello"}))
        .await;
    assert_eq!(r2.data()["hash"], hash);

    // bad requests
    let r = s
        .put(
            "sys/audit/file",
            &s.root,
            json!({"type": "file", "options": {"file_path": path.display().to_string()}}),
        )
        .await;
    assert_error(&r, 400, "path already in use: file/");
    let r = s
        .put(
            "sys/audit/f2",
            &s.root,
            json!({"type": "file", "options": {"file_path": "rel.log"}}),
        )
        .await;
    assert_error(&r, 400, "file_path must be an absolute path");
    let r = s
        .put(
            "sys/audit/f2",
            &s.root,
            json!({"type": "syslog", "options": {}}),
        )
        .await;
    assert_error(&r, 400, "unknown backend type: only \"file\" is available");
    let r = s
        .put("sys/audit/f2", &s.root, json!({"type": "file"}))
        .await;
    assert_error(&r, 400, "file_path is required");
    let r = s
        .put(
            "sys/audit/f2",
            &s.root,
            json!({"type": "file", "options": {"file_path": s.path("x.log").display().to_string(), "log_raw": "true"}}),
        )
        .await;
    assert_error(
        &r,
        400,
        "log_raw is not supported: secrets never reach the audit log in the clear",
    );
    let r = s
        .put(
            "sys/audit/f2",
            &s.root,
            json!({"type": "file", "options": {"file_path": s.path("x.log").display().to_string(), "bogus": "1"}}),
        )
        .await;
    assert_error(&r, 400, "unknown audit option \"bogus\"");
    let r = s
        .put(
            "sys/audit/f2",
            &s.root,
            json!({"type": "file", "options": {"file_path": "/nonexistent-dir/x/a.log"}}),
        )
        .await;
    assert_error(
        &r,
        400,
        "the directory of file_path does not exist or cannot be read",
    );
    let r = s
        .post("sys/audit-hash/nope", &s.root, json!({"input": "x"}))
        .await;
    assert_error(&r, 400, "unknown audit backend nope/");
    let r = s.post("sys/audit-hash/file", &s.root, json!({})).await;
    assert_error(&r, 400, "the \"input\" parameter is required");
    let r = s.get("sys/audit", &s.root).await;
    assert_eq!(r.data().as_object().unwrap().len(), 1, "{}", r.text);

    // disable
    let r = s.delete("sys/audit/file", &s.root).await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    let r = s.get("sys/audit", &s.root).await;
    assert_eq!(r.data(), &json!({}));
    let r = s
        .post("sys/audit-hash/file", &s.root, json!({"input": "x"}))
        .await;
    assert_error(&r, 400, "unknown audit backend file/");
}

#[tokio::test]
async fn audit_devices_need_sudo() {
    let s = TestServer::dev().await;
    s.enable_audit("file").await;
    let no_sudo = s
        .token_with(
            r#"
path "sys/audit" { capabilities = ["read", "list"] }
path "sys/audit/*" { capabilities = ["create", "read", "update", "delete", "list"] }
path "sys/audit-hash/*" { capabilities = ["update"] }
"#,
        )
        .await;
    let sudo = s
        .token_with(
            r#"
path "sys/audit" { capabilities = ["read", "sudo"] }
path "sys/audit/*" { capabilities = ["update", "delete", "sudo"] }
path "sys/audit-hash/*" { capabilities = ["update", "sudo"] }
"#,
        )
        .await;
    let nothing = s.powerless_token().await;
    let other = s.path("other.log").display().to_string();

    for t in [&no_sudo, &nothing] {
        assert_denied(&s.get("sys/audit", &t.id).await);
        assert_denied(
            &s.put(
                "sys/audit/other",
                &t.id,
                json!({"type": "file", "options": {"file_path": other}}),
            )
            .await,
        );
        assert_denied(&s.delete("sys/audit/file", &t.id).await);
        let r = s
            .post("sys/audit-hash/file", &t.id, json!({"input": "x"}))
            .await;
        assert_denied(&r);
        assert!(!r.text.contains("hmac-sha256"));
    }
    // nothing changed
    let r = s.get("sys/audit", &s.root).await;
    assert_eq!(
        r.data().as_object().unwrap().keys().collect::<Vec<_>>(),
        vec!["file/"]
    );

    // allow with sudo
    assert_eq!(s.get("sys/audit", &sudo.id).await.status, 200);
    let r = s
        .put(
            "sys/audit/other",
            &sudo.id,
            json!({"type": "file", "options": {"file_path": other}}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .post("sys/audit-hash/other", &sudo.id, json!({"input": "x"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(s.delete("sys/audit/other", &sudo.id).await.status, 204);
}

// ------------------------------------------------------------ capabilities

#[tokio::test]
async fn capabilities_self() {
    let s = TestServer::dev().await;
    s.write_policy(
        "caps",
        r#"
path "secret/data/app" { capabilities = ["read", "list"] }
path "secret/data/admin" { capabilities = ["deny"] }
"#,
    )
    .await;
    // allow: the default policy grants update on sys/capabilities-self
    let t = s.create_token(&s.root, json!({"policies": ["caps"]})).await;
    let r = s
        .post(
            "sys/capabilities-self",
            &t.id,
            json!({"paths": ["secret/data/app"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_envelope(&r);
    assert_top_level(&r);
    assert_eq!(r.data()["capabilities"], json!(["list", "read"]));
    assert_eq!(r.data()["secret/data/app"], json!(["list", "read"]));
    let r = s
        .post(
            "sys/capabilities-self",
            &t.id,
            json!({"paths": ["secret/data/admin", "secret/data/other"]}),
        )
        .await;
    assert_eq!(r.data()["secret/data/admin"], json!(["deny"]));
    assert_eq!(r.data()["secret/data/other"], json!(["deny"]));
    // the old single `path` field
    let r = s
        .post(
            "sys/capabilities-self",
            &t.id,
            json!({"path": "secret/data/app"}),
        )
        .await;
    assert_eq!(r.data()["capabilities"], json!(["list", "read"]));
    let r = s
        .post(
            "sys/capabilities-self",
            &s.root,
            json!({"paths": ["anything"]}),
        )
        .await;
    assert_eq!(r.data()["capabilities"], json!(["root"]));
    let r = s.post("sys/capabilities-self", &t.id, json!({})).await;
    assert_error(&r, 400, "missing paths");

    // deny: no default policy
    let nothing = s.powerless_token().await;
    assert_denied(
        &s.post(
            "sys/capabilities-self",
            &nothing.id,
            json!({"paths": ["secret/data/app"]}),
        )
        .await,
    );
}

#[tokio::test]
async fn help_query() {
    let s = TestServer::dev().await;
    let r = s.get("secret/data/x?help=1", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Vault answers help with the bare object (node-vault's help() reads `.help`)
    assert!(
        r.body["help"].as_str().unwrap().contains("secret/data/x"),
        "{}",
        r.text
    );
    let nothing = s.powerless_token().await;
    assert_denied(&s.get("secret/data/x?help=1", &nothing.id).await);
}

#[tokio::test]
async fn capabilities_of_other_tokens() {
    let s = TestServer::dev().await;
    s.write_policy(
        "caps",
        r#"path "secret/data/app" { capabilities = ["read"] }"#,
    )
    .await;
    let target = s.create_token(&s.root, json!({"policies": ["caps"]})).await;
    let asker = s
        .token_with(
            r#"
path "sys/capabilities" { capabilities = ["update"] }
path "sys/capabilities-accessor" { capabilities = ["update"] }
"#,
        )
        .await;
    let nothing = s.powerless_token().await;

    let r = s
        .post(
            "sys/capabilities",
            &asker.id,
            json!({"token": target.id, "paths": ["secret/data/app"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["capabilities"], json!(["read"]));
    let r = s
        .post(
            "sys/capabilities-accessor",
            &asker.id,
            json!({"accessor": target.accessor, "paths": ["secret/data/app"]}),
        )
        .await;
    assert_eq!(r.data()["capabilities"], json!(["read"]));
    assert!(!r.text.contains(&target.id));
    let r = s
        .post(
            "sys/capabilities",
            &asker.id,
            json!({"token": "hvs.nope", "paths": ["a"]}),
        )
        .await;
    assert_error(&r, 400, "invalid token");

    assert_denied(
        &s.post(
            "sys/capabilities",
            &nothing.id,
            json!({"token": target.id, "paths": ["a"]}),
        )
        .await,
    );
    assert_denied(
        &s.post(
            "sys/capabilities-accessor",
            &nothing.id,
            json!({"accessor": target.accessor, "paths": ["a"]}),
        )
        .await,
    );
}

#[tokio::test]
async fn sys_auth_and_already_initialized() {
    let s = TestServer::dev().await;
    let r = s.get("sys/auth", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_top_level(&r);
    assert_eq!(r.data()["token/"]["type"], "token");
    let nothing = s.powerless_token().await;
    assert_denied(&s.get("sys/auth", &nothing.id).await);

    // PUT sys/init on a running server
    let r = s
        .call(
            "PUT",
            "sys/init",
            None,
            Some(json!({"secret_shares": 1, "secret_threshold": 1})),
        )
        .await;
    assert_error(&r, 400, "Vault is already initialized");
    assert_eq!(s.get("sys/mounts", &s.root).await.status, 200);
}

/// A policy change applies to every request that starts after it, even when
/// requests using the old policy were in flight while it was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_change_is_not_undone_by_in_flight_requests() {
    let s = TestServer::dev().await;
    s.kv_put("x", json!({"v": "1"})).await;
    for round in 0..8 {
        let name = format!("racy{round}");
        s.write_policy(&name, r#"path "secret/data/x" { capabilities = ["read"] }"#)
            .await;
        let t = s
            .create_token(
                &s.root,
                json!({"policies": [name], "no_default_policy": true}),
            )
            .await;
        let mut tasks = Vec::new();
        for _ in 0..24 {
            let http = s.http.clone();
            let url = s.url("secret/data/x");
            let id = t.id.clone();
            tasks.push(tokio::spawn(async move {
                http.get(url)
                    .header("X-Vault-Token", id)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }));
        }
        s.write_policy(
            &name,
            r#"path "secret/data/other" { capabilities = ["read"] }"#,
        )
        .await;
        for task in tasks {
            let st = task.await.unwrap();
            assert!(st == 200 || st == 403, "status {st}");
        }
        assert_denied(&s.get("secret/data/x", &t.id).await);
    }
}
