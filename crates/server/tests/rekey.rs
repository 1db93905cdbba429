//! `sys/rekey/*` and `sys/generate-root/*` over HTTP: who may call them
//! (sudo by default, anyone with `dangerous_unauthenticated_*`), Vault's
//! shapes and OpenBao's error texts, the new shares replacing the old ones
//! (and surviving a restart), verification, OTP-encoded root tokens, and no
//! share, OTP or token in the audit log.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};

/// An initialised server with `shares`/`threshold`, unsealed, with an audit
/// device; returns it, its hex shares and the audit file.
async fn server(shares: u8, threshold: u8) -> (TestServer, Vec<String>, std::path::PathBuf) {
    server_with(shares, threshold, false).await
}

async fn server_with(
    shares: u8,
    threshold: u8,
    unauthenticated: bool,
) -> (TestServer, Vec<String>, std::path::PathBuf) {
    let mut s = TestServer::start(Opts {
        dev: false,
        unauthenticated_root_ops: unauthenticated,
        ..Opts::default()
    })
    .await;
    let keys = s.init_and_unseal(shares, threshold).await;
    let audit = s.enable_audit("a").await;
    (s, keys, audit)
}

fn strings(v: &Value) -> Vec<String> {
    serde_json::from_value(v.clone()).unwrap()
}

async fn put(s: &TestServer, path: &str, body: Value) -> Resp {
    s.put(path, &s.root, body).await
}

/// Unseal with `keys` after a seal; true when the server ends unsealed.
async fn unseals_with(s: &TestServer, keys: &[String]) -> bool {
    for k in keys {
        let r = s
            .call("PUT", "sys/unseal", None, Some(json!({ "key": k })))
            .await;
        if r.status != 200 {
            return false;
        }
        if r.body["sealed"] == false {
            return true;
        }
    }
    false
}

const ENDPOINTS: &[(&str, &str)] = &[
    ("GET", "sys/rekey/init"),
    ("PUT", "sys/rekey/init"),
    ("DELETE", "sys/rekey/init"),
    ("PUT", "sys/rekey/update"),
    ("GET", "sys/rekey/verify"),
    ("PUT", "sys/rekey/verify"),
    ("DELETE", "sys/rekey/verify"),
    ("GET", "sys/rekey/backup"),
    ("DELETE", "sys/rekey/backup"),
    ("GET", "sys/generate-root/attempt"),
    ("PUT", "sys/generate-root/attempt"),
    ("DELETE", "sys/generate-root/attempt"),
    ("PUT", "sys/generate-root/update"),
];

#[tokio::test]
async fn rekey_and_generate_root_need_sudo_by_default() {
    let (s, _keys, _) = server(3, 2).await;
    let update_only = s
        .token_with(
            r#"path "sys/rekey/*" { capabilities = ["create", "read", "update", "delete"] }
path "sys/generate-root/*" { capabilities = ["create", "read", "update", "delete"] }"#,
        )
        .await;
    let sudo = s
        .token_with(
            r#"path "sys/rekey/*" { capabilities = ["create", "read", "update", "delete", "sudo"] }
path "sys/generate-root/*" { capabilities = ["create", "read", "update", "delete", "sudo"] }"#,
        )
        .await;
    let nothing = s.powerless_token().await;
    for (method, path) in ENDPOINTS {
        let body = (*method == "PUT").then(|| json!({}));
        // deny: no token, no capability, every capability but sudo
        assert_denied(&s.call(method, path, None, body.clone()).await);
        assert_denied(&s.call(method, path, Some(&nothing.id), body.clone()).await);
        assert_denied(
            &s.call(method, path, Some(&update_only.id), body.clone())
                .await,
        );
    }
    // allow: the sudo token reaches the handlers
    let r = s.get("sys/rekey/init", &sudo.id).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["started"], false);
    let r = s.get("sys/generate-root/attempt", &sudo.id).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["started"], false);
    let r = s.delete("sys/rekey/init", &sudo.id).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_error(
        &s.get("sys/rekey/backup", &sudo.id).await,
        400,
        "no backed-up keys found",
    );
    assert_eq!(s.delete("sys/rekey/backup", &sudo.id).await.status, 204);
}

#[tokio::test]
async fn rekey_replaces_the_shares() {
    let (s, old, _) = server(3, 2).await;
    let r = put(&s, "sys/mounts/kv", json!({"type": "kv-v2"})).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = put(&s, "kv/data/k", json!({"data": {"v": "kept"}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.get("sys/rekey/init", &s.root).await;
    assert_eq!(
        (r.status, &r.body),
        (
            200,
            &json!({"nonce": "", "started": false, "t": 0, "n": 0, "progress": 0, "required": 2,
                    "pgp_fingerprints": null, "backup": false, "verification_required": false})
        )
    );
    // invalid configurations: OpenBao's words
    for (shares, threshold, msg) in [
        (json!(3), json!(4), "threshold cannot be larger than shares"),
        (
            json!(3),
            json!(1),
            "threshold must be greater than one for multiple shares",
        ),
        (json!(0), json!(0), "shares must be at least one"),
        (json!(256), json!(2), "shares must be less than 256"),
        (json!(null), json!(null), "shares must be at least one"),
        (json!(2), json!(0), "threshold must be at least one"),
    ] {
        let r = put(
            &s,
            "sys/rekey/init",
            json!({"secret_shares": shares, "secret_threshold": threshold}),
        )
        .await;
        assert_error(&r, 400, &format!("invalid rekey seal configuration: {msg}"));
    }
    // PGP: refused, never ignored
    assert_error(
        &put(
            &s,
            "sys/rekey/init",
            json!({"secret_shares": 2, "secret_threshold": 2, "pgp_keys": ["a", "b"]}),
        )
        .await,
        400,
        "pgp_keys is not supported",
    );
    assert_error(
        &put(
            &s,
            "sys/rekey/init",
            json!({"secret_shares": 2, "secret_threshold": 2, "backup": true}),
        )
        .await,
        400,
        "backup is not supported: it keeps PGP-encrypted shares, and pgp_keys is not supported",
    );
    assert_eq!(
        s.get("sys/rekey/init", &s.root).await.body["started"],
        false
    );

    // no rekey yet
    assert_error(
        &put(&s, "sys/rekey/update", json!({"key": old[0], "nonce": "x"})).await,
        400,
        "no barrier rekey in progress",
    );

    // start: 4 shares, threshold 3
    let r = put(
        &s,
        "sys/rekey/init",
        json!({"secret_shares": 4, "secret_threshold": 3, "pgp_keys": null, "backup": false}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let nonce = r.body["nonce"].as_str().unwrap().to_string();
    assert_eq!(nonce.len(), 36);
    assert_eq!(
        r.body,
        json!({"nonce": nonce, "started": true, "t": 3, "n": 4, "progress": 0, "required": 2,
                "pgp_fingerprints": null, "backup": false, "verification_required": false})
    );
    assert_error(
        &put(
            &s,
            "sys/rekey/init",
            json!({"secret_shares": 4, "secret_threshold": 3}),
        )
        .await,
        400,
        "rekey already in progress",
    );

    // update: the key and nonce checks
    assert_error(
        &put(&s, "sys/rekey/update", json!({"nonce": nonce})).await,
        400,
        "'key' must be specified in request body as JSON",
    );
    assert_error(
        &put(
            &s,
            "sys/rekey/update",
            json!({"key": "zz!", "nonce": nonce}),
        )
        .await,
        400,
        "'key' must be a valid hex or base64 string",
    );
    assert_error(
        &put(
            &s,
            "sys/rekey/update",
            json!({"key": "abcd", "nonce": nonce}),
        )
        .await,
        400,
        "key is shorter than minimum 16 bytes",
    );
    assert_error(
        &put(
            &s,
            "sys/rekey/update",
            json!({"key": "ab".repeat(34), "nonce": nonce}),
        )
        .await,
        400,
        "key is longer than maximum 33 bytes",
    );
    let wrong_nonce =
        format!("incorrect nonce supplied; nonce for this rekey operation is \"{nonce}\"");
    assert_error(
        &put(&s, "sys/rekey/update", json!({"key": old[0], "nonce": "x"})).await,
        400,
        &wrong_nonce,
    );
    assert_error(
        &put(&s, "sys/rekey/update", json!({"key": old[0]})).await,
        400,
        &wrong_nonce,
    );
    let r = put(
        &s,
        "sys/rekey/update",
        json!({"key": old[0], "nonce": nonce}),
    )
    .await;
    assert_eq!(
        (r.status, &r.body["progress"]),
        (200, &json!(1)),
        "{}",
        r.text
    );
    // the same share again, also in base64
    let old0_b64 = base64::engine::general_purpose::STANDARD.encode(hex::decode(&old[0]).unwrap());
    for k in [&old[0], &old0_b64] {
        assert_error(
            &put(&s, "sys/rekey/update", json!({"key": k, "nonce": nonce})).await,
            400,
            "given key has already been provided during this generation operation",
        );
    }
    // the threshold: new shares, hex and base64 of the same bytes
    let r = put(
        &s,
        "sys/rekey/update",
        json!({"key": old[2], "nonce": nonce}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["complete"], true);
    assert_eq!(r.body["nonce"], nonce);
    assert_eq!(r.body["verification_required"], false);
    assert!(r.body.get("verification_nonce").is_none());
    let new = strings(&r.body["keys"]);
    let new_b64 = strings(&r.body["keys_base64"]);
    assert_eq!(new.len(), 4);
    for (h, b) in new.iter().zip(&new_b64) {
        assert_eq!(
            hex::decode(h).unwrap(),
            base64::engine::general_purpose::STANDARD.decode(b).unwrap()
        );
        assert!(!old.contains(h));
    }
    // done: no rekey in progress, the seal configuration is the new one
    let r = s.get("sys/rekey/init", &s.root).await;
    assert_eq!(
        (r.body["started"].clone(), r.body["required"].clone()),
        (json!(false), json!(3))
    );
    let r = s.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(
        (r.body["t"].clone(), r.body["n"].clone()),
        (json!(3), json!(4))
    );

    // the old shares no longer unseal; any three new ones do, and the data is there
    s.seal().await;
    assert!(!unseals_with(&s, &old).await);
    s.call("PUT", "sys/unseal", None, Some(json!({"reset": true})))
        .await;
    assert!(unseals_with(&s, &new_b64[1..]).await);
    assert_eq!(
        s.get("kv/data/k", &s.root).await.data()["data"],
        json!({"v": "kept"})
    );

    // and after a restart without any shutdown work (kill -9)
    let dir = s.kill();
    let s = TestServer::start_in(
        Opts {
            dev: false,
            ..Opts::default()
        },
        dir,
    )
    .await;
    assert!(!unseals_with(&s, &old).await);
    s.call("PUT", "sys/unseal", None, Some(json!({"reset": true})))
        .await;
    assert!(unseals_with(&s, &new[..3]).await);
}

#[tokio::test]
async fn rekey_with_wrong_shares_resets_progress() {
    let (s, old, _) = server(3, 2).await;
    let r = put(
        &s,
        "sys/rekey/init",
        json!({"secret_shares": 1, "secret_threshold": 1}),
    )
    .await;
    let nonce = r.body["nonce"].as_str().unwrap().to_string();
    put(
        &s,
        "sys/rekey/update",
        json!({"key": old[0], "nonce": nonce}),
    )
    .await;
    let mut bad = hex::decode(&old[1]).unwrap();
    bad[10] ^= 0x55;
    assert_error(
        &put(
            &s,
            "sys/rekey/update",
            json!({"key": hex::encode(&bad), "nonce": nonce}),
        )
        .await,
        400,
        "failed to read root key: invalid key",
    );
    let r = s.get("sys/rekey/init", &s.root).await;
    assert_eq!(
        (&r.body["started"], &r.body["progress"], &r.body["nonce"]),
        (&json!(true), &json!(0), &json!(nonce))
    );
    // the right shares complete it, with one new share (threshold 1)
    put(
        &s,
        "sys/rekey/update",
        json!({"key": old[1], "nonce": nonce}),
    )
    .await;
    let r = put(
        &s,
        "sys/rekey/update",
        json!({"key": old[2], "nonce": nonce}),
    )
    .await;
    assert_eq!(r.body["complete"], true, "{}", r.text);
    let new = strings(&r.body["keys"]);
    assert_eq!(new.len(), 1);
    s.seal().await;
    assert!(unseals_with(&s, &new).await);
}

#[tokio::test]
async fn cancel_keeps_the_old_shares() {
    let (s, old, _) = server(3, 2).await;
    let r = put(
        &s,
        "sys/rekey/init",
        json!({"secret_shares": 3, "secret_threshold": 2}),
    )
    .await;
    let nonce = r.body["nonce"].as_str().unwrap().to_string();
    put(
        &s,
        "sys/rekey/update",
        json!({"key": old[0], "nonce": nonce}),
    )
    .await;
    assert_eq!(s.delete("sys/rekey/init", &s.root).await.status, 204);
    let r = s.get("sys/rekey/init", &s.root).await;
    assert_eq!(
        (&r.body["started"], &r.body["nonce"]),
        (&json!(false), &json!(""))
    );
    assert_error(
        &put(
            &s,
            "sys/rekey/update",
            json!({"key": old[1], "nonce": nonce}),
        )
        .await,
        400,
        "no barrier rekey in progress",
    );
    // a new attempt has a new nonce and no progress
    let r = put(
        &s,
        "sys/rekey/init",
        json!({"secret_shares": 3, "secret_threshold": 2}),
    )
    .await;
    assert_ne!(r.body["nonce"], nonce);
    assert_eq!(r.body["progress"], 0);
    // sealing forgets it too
    s.seal().await;
    assert!(unseals_with(&s, &old[1..]).await);
    assert_eq!(
        s.get("sys/rekey/init", &s.root).await.body["started"],
        false
    );
}

#[tokio::test]
async fn rekey_with_verification() {
    let (s, old, _) = server(3, 2).await;
    assert_error(
        &s.get("sys/rekey/verify", &s.root).await,
        400,
        "no rekey configuration found",
    );
    assert_error(
        &put(&s, "sys/rekey/verify", json!({"key": old[0], "nonce": "x"})).await,
        400,
        "no rekey in progress",
    );
    let r = put(
        &s,
        "sys/rekey/init",
        json!({"secret_shares": 3, "secret_threshold": 2, "require_verification": true}),
    )
    .await;
    assert_eq!(r.body["verification_required"], true, "{}", r.text);
    let nonce = r.body["nonce"].as_str().unwrap().to_string();
    // not yet at verification
    let r = s.get("sys/rekey/verify", &s.root).await;
    assert_eq!(
        r.body,
        json!({"nonce": "", "started": false, "t": 2, "n": 3, "progress": 0})
    );
    assert_error(
        &put(&s, "sys/rekey/verify", json!({"key": old[0], "nonce": "x"})).await,
        400,
        "no rekey verification in progress",
    );
    put(
        &s,
        "sys/rekey/update",
        json!({"key": old[0], "nonce": nonce}),
    )
    .await;
    let r = put(
        &s,
        "sys/rekey/update",
        json!({"key": old[1], "nonce": nonce}),
    )
    .await;
    assert_eq!(r.body["complete"], true, "{}", r.text);
    assert_eq!(r.body["verification_required"], true);
    let new = strings(&r.body["keys"]);
    let vnonce = r.body["verification_nonce"].as_str().unwrap().to_string();
    assert_eq!(
        s.get("sys/rekey/init", &s.root).await.body["verification_nonce"],
        vnonce
    );
    assert_error(
        &put(
            &s,
            "sys/rekey/update",
            json!({"key": old[2], "nonce": nonce}),
        )
        .await,
        400,
        &format!(
            "rekey operation already finished; verification must be performed; nonce for the verification operation is \"{vnonce}\""
        ),
    );
    // nothing changed yet: the old shares still unseal after a kill -9 here
    let r = s.get("sys/rekey/verify", &s.root).await;
    assert_eq!(
        r.body,
        json!({"nonce": vnonce, "started": true, "t": 2, "n": 3, "progress": 0})
    );
    // cancelling the verification gives a new nonce
    let r = s.delete("sys/rekey/verify", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let vnonce2 = r.body["nonce"].as_str().unwrap().to_string();
    assert_ne!(vnonce2, vnonce);
    assert_error(
        &put(
            &s,
            "sys/rekey/verify",
            json!({"key": new[0], "nonce": vnonce}),
        )
        .await,
        400,
        &format!("incorrect nonce supplied; nonce for this verify operation is \"{vnonce2}\""),
    );
    // the old shares do not verify; the attempt gets a new nonce
    put(
        &s,
        "sys/rekey/verify",
        json!({"key": old[0], "nonce": vnonce2}),
    )
    .await;
    assert_error(
        &put(
            &s,
            "sys/rekey/verify",
            json!({"key": old[1], "nonce": vnonce2}),
        )
        .await,
        400,
        "rekey verification failed; incorrect key shares supplied",
    );
    let vnonce3 = s.get("sys/rekey/verify", &s.root).await.body["nonce"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(vnonce3, vnonce2);
    let r = put(
        &s,
        "sys/rekey/verify",
        json!({"key": new[2], "nonce": vnonce3}),
    )
    .await;
    assert_eq!(r.body["progress"], 1, "{}", r.text);
    assert_error(
        &put(
            &s,
            "sys/rekey/verify",
            json!({"key": new[2], "nonce": vnonce3}),
        )
        .await,
        400,
        "given key has already been provided during this verify operation",
    );
    let r = put(
        &s,
        "sys/rekey/verify",
        json!({"key": new[0], "nonce": vnonce3}),
    )
    .await;
    assert_eq!(
        (r.status, &r.body),
        (200, &json!({"nonce": vnonce3, "complete": true}))
    );
    assert_error(
        &s.get("sys/rekey/verify", &s.root).await,
        400,
        "no rekey configuration found",
    );
    s.seal().await;
    assert!(!unseals_with(&s, &old).await);
    s.call("PUT", "sys/unseal", None, Some(json!({"reset": true})))
        .await;
    assert!(unseals_with(&s, &new[1..]).await);
}

#[tokio::test]
async fn verification_never_reached_keeps_the_old_shares_after_a_kill() {
    let (s, old, _) = server(3, 2).await;
    let r = put(
        &s,
        "sys/rekey/init",
        json!({"secret_shares": 3, "secret_threshold": 2, "require_verification": true}),
    )
    .await;
    let nonce = r.body["nonce"].as_str().unwrap().to_string();
    put(
        &s,
        "sys/rekey/update",
        json!({"key": old[0], "nonce": nonce}),
    )
    .await;
    let r = put(
        &s,
        "sys/rekey/update",
        json!({"key": old[1], "nonce": nonce}),
    )
    .await;
    let new = strings(&r.body["keys"]);
    let dir = s.kill();
    let s = TestServer::start_in(
        Opts {
            dev: false,
            ..Opts::default()
        },
        dir,
    )
    .await;
    assert!(!unseals_with(&s, &new).await);
    s.call("PUT", "sys/unseal", None, Some(json!({"reset": true})))
        .await;
    assert!(unseals_with(&s, &old[1..]).await);
}

fn decode(encoded: &str, otp: &str) -> String {
    let raw = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(encoded)
        .unwrap();
    assert_eq!(raw.len(), otp.len());
    String::from_utf8(raw.iter().zip(otp.bytes()).map(|(a, b)| a ^ b).collect()).unwrap()
}

/// hvac's OTP for Vault >= 1.10.
const HVAC_OTP: &str = "BMjzW3wAsEzINXCM05Wbas3u9zSl";

#[tokio::test]
async fn generate_root_with_an_otp() {
    let (s, keys, _) = server(3, 2).await;
    let idle = json!({"nonce": "", "started": false, "progress": 0, "required": 2,
        "complete": false, "encoded_token": "", "encoded_root_token": "",
        "pgp_fingerprint": "", "otp": "", "otp_length": 28});
    let r = s.get("sys/generate-root/attempt", &s.root).await;
    assert_eq!((r.status, &r.body), (200, &idle));
    assert_error(
        &put(
            &s,
            "sys/generate-root/update",
            json!({"key": keys[0], "nonce": "x"}),
        )
        .await,
        400,
        "no root generation in progress",
    );
    for otp in ["short", "BMjzW3wAsEzINXCM05Wbas3u9zSlX"] {
        assert_error(
            &put(&s, "sys/generate-root/attempt", json!({"otp": otp})).await,
            400,
            "OTP string has incorrect length",
        );
    }
    assert_error(
        &put(
            &s,
            "sys/generate-root/attempt",
            json!({"pgp_key": "mQENBF..."}),
        )
        .await,
        400,
        "pgp_key is not supported",
    );
    assert_eq!(s.get("sys/generate-root/attempt", &s.root).await.body, idle);

    let r = put(&s, "sys/generate-root/attempt", json!({"otp": HVAC_OTP})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let nonce = r.body["nonce"].as_str().unwrap().to_string();
    let mut started = idle.clone();
    started["nonce"] = json!(nonce);
    started["started"] = json!(true);
    assert_eq!(r.body, started);
    assert_eq!(
        s.get("sys/generate-root/attempt", &s.root).await.body,
        started
    );
    assert_error(
        &put(&s, "sys/generate-root/attempt", json!({"otp": HVAC_OTP})).await,
        400,
        "root generation already in progress",
    );
    assert_error(
        &put(
            &s,
            "sys/generate-root/update",
            json!({"key": keys[0], "nonce": "x"}),
        )
        .await,
        400,
        &format!(
            "incorrect nonce supplied; nonce for this root generation operation is \"{nonce}\""
        ),
    );
    assert_error(
        &put(&s, "sys/generate-root/update", json!({"nonce": nonce})).await,
        400,
        "'key' must be specified in request body as JSON",
    );
    let r = put(
        &s,
        "sys/generate-root/update",
        json!({"key": keys[2], "nonce": nonce}),
    )
    .await;
    assert_eq!(r.body["progress"], 1, "{}", r.text);
    assert_eq!(r.body["complete"], false);
    assert_error(
        &put(
            &s,
            "sys/generate-root/update",
            json!({"key": keys[2], "nonce": nonce}),
        )
        .await,
        400,
        "given key has already been provided during this generation operation",
    );
    let r = put(
        &s,
        "sys/generate-root/update",
        json!({"key": keys[1], "nonce": nonce}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let encoded = r.body["encoded_token"].as_str().unwrap().to_string();
    assert_eq!(
        r.body,
        json!({"nonce": nonce, "started": true, "progress": 2, "required": 2, "complete": true,
               "encoded_token": encoded, "encoded_root_token": encoded, "pgp_fingerprint": "",
               "otp": "", "otp_length": 0})
    );
    assert_eq!(s.get("sys/generate-root/attempt", &s.root).await.body, idle);
    // the decoded token is a new root token
    let token = decode(&encoded, HVAC_OTP);
    assert!(token.starts_with("hvs."), "{token}");
    assert_ne!(token, s.root);
    let r = s.get("auth/token/lookup-self", &token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["policies"], json!(["root"]));
    assert_eq!(r.data()["orphan"], true);
}

#[tokio::test]
async fn generate_root_makes_the_otp_and_recovers_after_every_root_is_revoked() {
    let (mut s, keys, _) = server(3, 2).await;
    // an operator with sudo on generate-root only, and every root token gone
    s.write_policy(
        "recovery",
        r#"path "sys/generate-root/*" { capabilities = ["create", "read", "update", "delete", "sudo"] }"#,
    )
    .await;
    let op = s
        .create_token(
            &s.root,
            json!({"policies": ["recovery"], "no_default_policy": true, "no_parent": true}),
        )
        .await;
    let r = s.post("auth/token/revoke-self", &s.root, json!({})).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_denied(&s.get("sys/mounts", &s.root).await);

    // no OTP: the server makes one and shows it once
    let r = s.put("sys/generate-root/attempt", &op.id, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let otp = r.body["otp"].as_str().unwrap().to_string();
    assert_eq!(otp.len(), 28);
    assert!(otp.bytes().all(|b| b.is_ascii_alphanumeric()), "{otp}");
    let nonce = r.body["nonce"].as_str().unwrap().to_string();
    assert_eq!(
        s.get("sys/generate-root/attempt", &op.id).await.body["otp"],
        ""
    );
    // a wrong share set: refused, progress reset, the attempt kept
    s.put(
        "sys/generate-root/update",
        &op.id,
        json!({"key": keys[0], "nonce": nonce}),
    )
    .await;
    let mut bad = hex::decode(&keys[1]).unwrap();
    bad[3] ^= 1;
    assert_error(
        &s.put(
            "sys/generate-root/update",
            &op.id,
            json!({"key": hex::encode(bad), "nonce": nonce}),
        )
        .await,
        400,
        "root generation aborted: unable to authenticate: invalid key",
    );
    let r = s.get("sys/generate-root/attempt", &op.id).await;
    assert_eq!(
        (&r.body["started"], &r.body["progress"]),
        (&json!(true), &json!(0))
    );
    s.put(
        "sys/generate-root/update",
        &op.id,
        json!({"key": keys[0], "nonce": nonce}),
    )
    .await;
    let r = s
        .put(
            "sys/generate-root/update",
            &op.id,
            json!({"key": keys[1], "nonce": nonce}),
        )
        .await;
    let token = decode(r.body["encoded_token"].as_str().unwrap(), &otp);
    s.root = token;
    let r = s.get("sys/mounts", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);

    // cancel
    put(&s, "sys/generate-root/attempt", json!({})).await;
    assert_eq!(
        s.delete("sys/generate-root/attempt", &s.root).await.status,
        204
    );
    assert_eq!(
        s.get("sys/generate-root/attempt", &s.root).await.body["started"],
        false
    );
}

#[tokio::test]
async fn sealed_refuses_and_forgets() {
    let (s, keys, _) = server(3, 2).await;
    let r = put(&s, "sys/generate-root/attempt", json!({"otp": HVAC_OTP})).await;
    let nonce = r.body["nonce"].as_str().unwrap().to_string();
    put(
        &s,
        "sys/generate-root/update",
        json!({"key": keys[0], "nonce": nonce}),
    )
    .await;
    s.seal().await;
    for (method, path) in ENDPOINTS {
        let body = (*method == "PUT").then(|| json!({}));
        assert_error(
            &s.call(method, path, Some(&s.root), body).await,
            503,
            "Vault is sealed",
        );
    }
    assert!(unseals_with(&s, &keys[1..]).await);
    assert_eq!(
        s.get("sys/generate-root/attempt", &s.root).await.body["started"],
        false
    );
}

#[tokio::test]
async fn unauthenticated_when_configured_and_still_audited() {
    let (s, keys, audit) = server_with(3, 2, true).await;
    // no token needed (Vault's behaviour), a bad one is not looked at
    let r = s.call("GET", "sys/rekey/init", None, None).await;
    assert_eq!(
        (r.status, &r.body["started"]),
        (200, &json!(false)),
        "{}",
        r.text
    );
    let r = s
        .call("GET", "sys/generate-root/attempt", Some("hvs.bogus"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // the backup stays behind sudo, as in Vault
    assert_denied(&s.call("GET", "sys/rekey/backup", None, None).await);
    assert_denied(&s.call("DELETE", "sys/rekey/backup", None, None).await);

    let r = s
        .call(
            "PUT",
            "sys/generate-root/attempt",
            None,
            Some(json!({"otp": HVAC_OTP})),
        )
        .await;
    let nonce = r.body["nonce"].as_str().unwrap().to_string();
    let mut last = Value::Null;
    for k in &keys[..2] {
        last = s
            .call(
                "PUT",
                "sys/generate-root/update",
                None,
                Some(json!({"key": k, "nonce": nonce})),
            )
            .await
            .body;
    }
    let token = decode(last["encoded_token"].as_str().unwrap(), HVAC_OTP);
    assert_eq!(s.get("auth/token/lookup-self", &token).await.status, 200);

    // audited, with no auth, and nothing secret in clear
    let records = audit_records(&audit);
    let updates = audit_for(&records, "sys/generate-root/update");
    assert_eq!(updates.len(), 4, "request and response of each update");
    for r in &updates {
        assert_eq!(r["auth"], Value::Null);
        assert_eq!(r["request"]["client_token"], "");
    }
    let text = std::fs::read_to_string(&audit).unwrap();
    for secret in keys
        .iter()
        .map(String::as_str)
        .chain([HVAC_OTP, token.as_str()])
    {
        assert!(!text.contains(secret), "a secret is in the audit log");
    }
    assert!(!text.contains(last["encoded_token"].as_str().unwrap()));

    // sealed: 503, never served unaudited
    s.seal().await;
    assert_error(
        &s.call("GET", "sys/rekey/init", None, None).await,
        503,
        "Vault is sealed",
    );
}

#[tokio::test]
async fn no_share_otp_or_token_in_the_audit_log() {
    let (s, old, audit) = server(3, 2).await;
    // rekey with verification, then a root generation
    let r = put(
        &s,
        "sys/rekey/init",
        json!({"secret_shares": 3, "secret_threshold": 2, "require_verification": true}),
    )
    .await;
    let nonce = r.body["nonce"].as_str().unwrap().to_string();
    put(
        &s,
        "sys/rekey/update",
        json!({"key": old[0], "nonce": nonce}),
    )
    .await;
    let r = put(
        &s,
        "sys/rekey/update",
        json!({"key": old[1], "nonce": nonce}),
    )
    .await;
    let new = strings(&r.body["keys"]);
    let new_b64 = strings(&r.body["keys_base64"]);
    let vnonce = r.body["verification_nonce"].as_str().unwrap().to_string();
    put(
        &s,
        "sys/rekey/verify",
        json!({"key": new[0], "nonce": vnonce}),
    )
    .await;
    let r = put(
        &s,
        "sys/rekey/verify",
        json!({"key": new_b64[1], "nonce": vnonce}),
    )
    .await;
    assert_eq!(r.body["complete"], true, "{}", r.text);
    let r = put(&s, "sys/generate-root/attempt", json!({})).await;
    let otp = r.body["otp"].as_str().unwrap().to_string();
    let gnonce = r.body["nonce"].as_str().unwrap().to_string();
    put(
        &s,
        "sys/generate-root/update",
        json!({"key": new[2], "nonce": gnonce}),
    )
    .await;
    let r = put(
        &s,
        "sys/generate-root/update",
        json!({"key": new[0], "nonce": gnonce}),
    )
    .await;
    let encoded = r.body["encoded_token"].as_str().unwrap().to_string();
    let token = decode(&encoded, &otp);

    let text = std::fs::read_to_string(&audit).unwrap();
    let records = audit_records(&audit);
    assert_eq!(audit_for(&records, "sys/rekey/update").len(), 4);
    assert_eq!(audit_for(&records, "sys/rekey/verify").len(), 4);
    for secret in old
        .iter()
        .chain(&new)
        .chain(&new_b64)
        .map(String::as_str)
        .chain([otp.as_str(), encoded.as_str(), token.as_str()])
    {
        assert!(!text.contains(secret), "a secret is in the audit log");
    }
    // the base64 form of the old shares too
    for k in &old {
        let b = base64::engine::general_purpose::STANDARD.encode(hex::decode(k).unwrap());
        assert!(!text.contains(&b));
    }
    // the shares are there, HMAC'd
    let resp = audit_for(&records, "sys/rekey/update")
        .into_iter()
        .find(|r| r["response"]["data"]["keys"].is_array())
        .expect("the completing update's response");
    for k in resp["response"]["data"]["keys"].as_array().unwrap() {
        assert!(k.as_str().unwrap().starts_with("hmac-sha256:"), "{k}");
    }
}
