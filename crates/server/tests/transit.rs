//! The transit engine over HTTP: keys, encrypt/decrypt/rewrap (single and
//! batch), derived and convergent keys, datakey, random, hash, HMAC,
//! sign/verify, export, trim, automatic rotation, the upsert's `create`
//! capability, persistence across a restart, and key material kept out of
//! the audit log and the storage file. Shapes and error texts follow
//! OpenBao 2.7 (checked side by side), except where docs/api-compat.md says
//! Palisade refuses what OpenBao ignores.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::*;
use serde_json::{Value, json};

fn b64(s: &[u8]) -> String {
    STANDARD.encode(s)
}

async fn transit() -> TestServer {
    let s = TestServer::dev().await;
    let r = s
        .post("sys/mounts/transit", &s.root, json!({"type": "transit"}))
        .await;
    assert_eq!(r.status, 204, "mount transit: {}", r.text);
    s
}

async fn ok(s: &TestServer, path: &str, body: Value) -> Value {
    let r = s.post(path, &s.root, body).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text);
    r.data().clone()
}

async fn err(s: &TestServer, path: &str, body: Value, status: u16, msg: &str) {
    let r = s.post(path, &s.root, body).await;
    assert_error(&r, status, msg);
}

async fn encrypt(s: &TestServer, key: &str, pt: &[u8]) -> String {
    ok(
        s,
        &format!("transit/encrypt/{key}"),
        json!({"plaintext": b64(pt)}),
    )
    .await["ciphertext"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn decrypt(s: &TestServer, key: &str, ct: &str) -> Vec<u8> {
    let d = ok(
        s,
        &format!("transit/decrypt/{key}"),
        json!({"ciphertext": ct}),
    )
    .await;
    STANDARD.decode(d["plaintext"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn key_lifecycle_matches_vaults_shapes() {
    let s = transit().await;
    let d = ok(&s, "transit/keys/k1", json!({})).await;
    assert_eq!(d["name"], "k1");
    assert_eq!(d["type"], "aes256-gcm96");
    assert_eq!(d["latest_version"], 1);
    assert_eq!(d["min_decryption_version"], 1);
    assert_eq!(d["min_encryption_version"], 0);
    assert_eq!(d["supports_encryption"], true);
    assert_eq!(d["supports_signing"], false);
    assert_eq!(d["deletion_allowed"], false);
    assert!(d["keys"]["1"].is_i64(), "{d}");
    // creating it again changes nothing
    let again = ok(&s, "transit/keys/k1", json!({"type": "ed25519"})).await;
    assert_eq!(again["type"], "aes256-gcm96");

    let d = ok(&s, "transit/keys/e1", json!({"type": "ecdsa-p256"})).await;
    let v1 = &d["keys"]["1"];
    assert_eq!(v1["name"], "P-256");
    assert!(
        v1["public_key"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----\n")
    );
    assert_eq!(d["supports_signing"], true);
    let d = ok(
        &s,
        "transit/keys/h1",
        json!({"type": "hmac", "key_size": 40}),
    )
    .await;
    assert_eq!(d["key_size"], 40);
    assert!(d.get("keys").is_none());

    let r = s.list("transit/keys", &s.root).await;
    assert_eq!(r.data()["keys"], json!(["e1", "h1", "k1"]));
    let r = s.get("transit/keys/k1", &s.root).await;
    assert_eq!(r.data()["name"], "k1");
    let r = s.get("transit/keys/missing", &s.root).await;
    assert_eq!((r.status, &r.body), (404, &json!({"errors": []})));

    // rotate, then the read shows both versions
    let d = ok(&s, "transit/keys/k1/rotate", json!({})).await;
    assert_eq!(d["latest_version"], 2);
    assert!(d["keys"]["2"].is_i64());

    // delete only once allowed
    let r = s.delete("transit/keys/k1", &s.root).await;
    assert_error(
        &r,
        400,
        "error deleting policy k1: deletion is not allowed for this key",
    );
    let r = s.delete("transit/keys/nokey", &s.root).await;
    assert_error(
        &r,
        400,
        "error deleting policy nokey: could not delete key; not found",
    );
    ok(
        &s,
        "transit/keys/k1/config",
        json!({"deletion_allowed": true}),
    )
    .await;
    let r = s.delete("transit/keys/k1", &s.root).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.get("transit/keys/k1", &s.root).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn bad_key_parameters_are_refused_with_vaults_messages() {
    let s = transit().await;
    err(
        &s,
        "transit/keys/x",
        json!({"type": "nope"}),
        400,
        "unknown key type nope",
    )
    .await;
    err(
        &s,
        "transit/keys/x",
        json!({"convergent_encryption": true}),
        400,
        "convergent encryption requires derivation to be enabled",
    )
    .await;
    err(
        &s,
        "transit/keys/x",
        json!({"key_size": 40}),
        400,
        "key_size is not valid for algorithm aes256-gcm96",
    )
    .await;
    err(
        &s,
        "transit/keys/x",
        json!({"type": "hmac", "key_size": 10}),
        400,
        "invalid key_size 10",
    )
    .await;
    err(
        &s,
        "transit/keys/x",
        json!({"type": "ed25519", "derived": true}),
        400,
        "key derivation is not supported for key type ed25519",
    )
    .await;
    err(
        &s,
        "transit/keys/x",
        json!({"auto_rotate_period": "10m"}),
        400,
        "auto rotate period must be 0 to disable or at least an hour",
    )
    .await;
    // names are Vault's generic names; anything else is not a path here
    for bad in [
        "transit/keys/-x",
        "transit/keys/a%20b",
        "transit/keys/x./",
        "transit/encrypt/a..b/c",
    ] {
        let r = s.post(bad, &s.root, json!({})).await;
        assert_eq!(r.status, 404, "{bad}: {}", r.text);
    }
    // nothing was created by any of those
    let r = s.list("transit/keys", &s.root).await;
    assert_eq!(r.status, 404, "{}", r.text);
}

#[tokio::test]
async fn encrypt_decrypt_rewrap_and_the_minimum_decryption_version() {
    let s = transit().await;
    for kind in ["aes256-gcm96", "chacha20-poly1305", "rsa-2048"] {
        let key = format!("k-{kind}");
        ok(&s, &format!("transit/keys/{key}"), json!({"type": kind})).await;
        let ct = encrypt(&s, &key, b"attack at dawn").await;
        assert!(ct.starts_with("vault:v1:"), "{ct}");
        assert_eq!(decrypt(&s, &key, &ct).await, b"attack at dawn", "{kind}");
    }
    // empty plaintext is a plaintext
    let ct = encrypt(&s, "k-aes256-gcm96", b"").await;
    assert_eq!(decrypt(&s, "k-aes256-gcm96", &ct).await, b"");

    let ct1 = encrypt(&s, "k-aes256-gcm96", b"v1 data").await;
    // a changed byte, a truncation, another key's ciphertext: one error
    let raw = STANDARD.decode(&ct1["vault:v1:".len()..]).unwrap();
    let mut flipped = raw.clone();
    flipped[15] ^= 0x01;
    let msg = "cipher: message authentication failed";
    err(
        &s,
        "transit/decrypt/k-aes256-gcm96",
        json!({"ciphertext": format!("vault:v1:{}", b64(&flipped))}),
        400,
        msg,
    )
    .await;
    err(
        &s,
        "transit/decrypt/k-aes256-gcm96",
        json!({"ciphertext": format!("vault:v1:{}", b64(&raw[..20]))}),
        400,
        msg,
    )
    .await;
    err(
        &s,
        "transit/decrypt/k-chacha20-poly1305",
        json!({"ciphertext": ct1}),
        400,
        msg,
    )
    .await;
    err(
        &s,
        "transit/decrypt/k-aes256-gcm96",
        json!({"ciphertext": "nope"}),
        400,
        "invalid ciphertext: no prefix",
    )
    .await;
    err(
        &s,
        "transit/decrypt/k-aes256-gcm96",
        json!({"ciphertext": "vault:v1:!!"}),
        400,
        "invalid ciphertext: could not decode base64",
    )
    .await;
    err(
        &s,
        "transit/decrypt/k-aes256-gcm96",
        json!({"ciphertext": "vault:v01:AAAA"}),
        400,
        "invalid ciphertext: invalid version",
    )
    .await;
    err(
        &s,
        "transit/decrypt/k-aes256-gcm96",
        json!({"ciphertext": "vault:v9:AAAA"}),
        400,
        "invalid ciphertext: version is too new",
    )
    .await;
    err(
        &s,
        "transit/decrypt/k-aes256-gcm96",
        json!({}),
        400,
        "missing ciphertext to decrypt",
    )
    .await;
    err(
        &s,
        "transit/decrypt/nokey",
        json!({"ciphertext": ct1}),
        400,
        "encryption key not found",
    )
    .await;
    err(
        &s,
        "transit/encrypt/k-aes256-gcm96",
        json!({"plaintext": "!!"}),
        400,
        "field \"plaintext\": invalid base64",
    )
    .await;
    err(
        &s,
        "transit/encrypt/k-aes256-gcm96",
        json!({}),
        400,
        "missing plaintext to encrypt",
    )
    .await;
    err(&s, "transit/encrypt/k-aes256-gcm96", json!({"plaintext": "", "nonce": b64(&[0; 12])}), 400, "a nonce cannot be given: nonces are random, or derived from the plaintext for convergent keys").await;
    err(
        &s,
        "transit/encrypt/k-aes256-gcm96",
        json!({"plaintext": "", "context": "YWJj"}),
        400,
        "context was given but the key is not derived: a context binds nothing here",
    )
    .await;
    err(
        &s,
        "transit/encrypt/k-rsa-2048",
        json!({"plaintext": b64(&[1; 191])}),
        400,
        "plaintext too long for this key",
    )
    .await;

    // associated data binds
    let d = ok(
        &s,
        "transit/encrypt/k-aes256-gcm96",
        json!({"plaintext": b64(b"x"), "associated_data": b64(b"order-1")}),
    )
    .await;
    let ct = d["ciphertext"].as_str().unwrap();
    let d = ok(
        &s,
        "transit/decrypt/k-aes256-gcm96",
        json!({"ciphertext": ct, "associated_data": b64(b"order-1")}),
    )
    .await;
    assert_eq!(d["plaintext"], b64(b"x"));
    err(
        &s,
        "transit/decrypt/k-aes256-gcm96",
        json!({"ciphertext": ct, "associated_data": b64(b"order-2")}),
        400,
        msg,
    )
    .await;
    err(
        &s,
        "transit/decrypt/k-aes256-gcm96",
        json!({"ciphertext": ct}),
        400,
        msg,
    )
    .await;

    // rotate: new ciphertexts are v2, old ones still open; rewrap moves them
    ok(&s, "transit/keys/k-aes256-gcm96/rotate", json!({})).await;
    let ct2 = encrypt(&s, "k-aes256-gcm96", b"v2 data").await;
    assert!(ct2.starts_with("vault:v2:"));
    let d = ok(
        &s,
        "transit/encrypt/k-aes256-gcm96",
        json!({"plaintext": b64(b"old"), "key_version": 1}),
    )
    .await;
    assert_eq!(d["key_version"], 1);
    err(
        &s,
        "transit/encrypt/k-aes256-gcm96",
        json!({"plaintext": "", "key_version": 5}),
        400,
        "requested version for encryption is higher than the latest key version",
    )
    .await;
    let d = ok(
        &s,
        "transit/rewrap/k-aes256-gcm96",
        json!({"ciphertext": ct1}),
    )
    .await;
    let rewrapped = d["ciphertext"].as_str().unwrap().to_string();
    assert!(rewrapped.starts_with("vault:v2:"), "{rewrapped}");
    assert_eq!(d["key_version"], 2);
    assert_eq!(decrypt(&s, "k-aes256-gcm96", &rewrapped).await, b"v1 data");

    // min_decryption_version refuses v1 ciphertexts; the read hides v1
    let d = ok(
        &s,
        "transit/keys/k-aes256-gcm96/config",
        json!({"min_decryption_version": 2}),
    )
    .await;
    assert!(d["keys"].get("1").is_none(), "{d}");
    err(
        &s,
        "transit/decrypt/k-aes256-gcm96",
        json!({"ciphertext": ct1}),
        400,
        "ciphertext or signature version is disallowed by policy (too old)",
    )
    .await;
    err(
        &s,
        "transit/rewrap/k-aes256-gcm96",
        json!({"ciphertext": ct1}),
        400,
        "ciphertext or signature version is disallowed by policy (too old)",
    )
    .await;
    assert_eq!(decrypt(&s, "k-aes256-gcm96", &ct2).await, b"v2 data");
    err(
        &s,
        "transit/keys/k-aes256-gcm96/config",
        json!({"min_decryption_version": 3}),
        400,
        "cannot set min decryption version of greater than the latest version",
    )
    .await;

    // trim needs a minimum encryption version, then removes old versions for good
    err(
        &s,
        "transit/keys/k-aes256-gcm96/trim",
        json!({"min_available_version": 2}),
        400,
        "minimum available version cannot be set when minimum encryption version is not set",
    )
    .await;
    ok(
        &s,
        "transit/keys/k-aes256-gcm96/config",
        json!({"min_encryption_version": 2}),
    )
    .await;
    err(
        &s,
        "transit/encrypt/k-aes256-gcm96",
        json!({"plaintext": "", "key_version": 1}),
        400,
        "requested version for encryption is less than the minimum encryption key version",
    )
    .await;
    let d = ok(
        &s,
        "transit/keys/k-aes256-gcm96/trim",
        json!({"min_available_version": 2}),
    )
    .await;
    assert_eq!(d["min_available_version"], 2);
    err(
        &s,
        "transit/keys/k-aes256-gcm96/config",
        json!({"min_decryption_version": 1}),
        400,
        "cannot set min decryption version of 1, key versions below 2 were trimmed",
    )
    .await;
    err(
        &s,
        "transit/decrypt/k-aes256-gcm96",
        json!({"ciphertext": ct1}),
        400,
        "ciphertext or signature version is disallowed by policy (too old)",
    )
    .await;
}

#[tokio::test]
async fn derived_and_convergent_keys_bind_the_context() {
    let s = transit().await;
    ok(&s, "transit/keys/d", json!({"derived": true})).await;
    ok(
        &s,
        "transit/keys/c",
        json!({"derived": true, "convergent_encryption": true}),
    )
    .await;
    let missing = "missing 'context' for key derivation; the key was created using a derived key, which means additional, per-request information must be included in order to perform operations with the key";
    err(
        &s,
        "transit/encrypt/d",
        json!({"plaintext": b64(b"x")}),
        400,
        missing,
    )
    .await;
    let (ca, cb) = (b64(b"tenant-a"), b64(b"tenant-b"));
    let d = ok(
        &s,
        "transit/encrypt/d",
        json!({"plaintext": b64(b"x"), "context": ca}),
    )
    .await;
    let ct = d["ciphertext"].as_str().unwrap();
    let d = ok(
        &s,
        "transit/decrypt/d",
        json!({"ciphertext": ct, "context": ca}),
    )
    .await;
    assert_eq!(d["plaintext"], b64(b"x"));
    err(
        &s,
        "transit/decrypt/d",
        json!({"ciphertext": ct, "context": cb}),
        400,
        "cipher: message authentication failed",
    )
    .await;
    err(
        &s,
        "transit/decrypt/d",
        json!({"ciphertext": ct}),
        400,
        missing,
    )
    .await;

    // convergent: same plaintext and context, same ciphertext; else different
    let enc = |ctx: &str, pt: &[u8]| json!({"plaintext": b64(pt), "context": ctx});
    let a1 = ok(&s, "transit/encrypt/c", enc(&ca, b"4111-1111")).await["ciphertext"].clone();
    let a2 = ok(&s, "transit/encrypt/c", enc(&ca, b"4111-1111")).await["ciphertext"].clone();
    let b1 = ok(&s, "transit/encrypt/c", enc(&cb, b"4111-1111")).await["ciphertext"].clone();
    let a3 = ok(&s, "transit/encrypt/c", enc(&ca, b"4111-1112")).await["ciphertext"].clone();
    assert_eq!(a1, a2);
    assert_ne!(a1, b1);
    assert_ne!(a1, a3);
    // a non-convergent derived key never repeats
    let n1 = ok(&s, "transit/encrypt/d", enc(&ca, b"same")).await["ciphertext"].clone();
    let n2 = ok(&s, "transit/encrypt/d", enc(&ca, b"same")).await["ciphertext"].clone();
    assert_ne!(n1, n2);
    let d = ok(&s, "transit/keys/c", json!({})).await;
    assert_eq!(
        (
            d["derived"].clone(),
            d["kdf"].clone(),
            d["convergent_encryption"].clone()
        ),
        (json!(true), json!("hkdf_sha256"), json!(true))
    );
}

#[tokio::test]
async fn batches_answer_per_item_and_fail_as_vault_does() {
    let s = transit().await;
    ok(&s, "transit/keys/k", json!({})).await;
    let r = s
        .post(
            "transit/encrypt/k",
            &s.root,
            json!({"batch_input": [
                {"plaintext": b64(b"one"), "reference": "a"},
                {"plaintext": b64(b"two"), "reference": "b"},
            ]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let results = r.data()["batch_results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 2);
    assert_eq!(results[1]["reference"], "b");
    let cts: Vec<Value> = results
        .iter()
        .map(|x| json!({"ciphertext": x["ciphertext"]}))
        .collect();
    let r = s
        .post("transit/decrypt/k", &s.root, json!({"batch_input": cts}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["batch_results"][1]["plaintext"], b64(b"two"));

    // one bad item: 400 with every item's outcome; 207 when asked
    let mixed = json!([{"plaintext": b64(b"ok"), "reference": "a"}, {"plaintext": "!!"}]);
    let r = s
        .post("transit/encrypt/k", &s.root, json!({"batch_input": mixed}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let items = r.data()["batch_results"].as_array().unwrap();
    assert!(
        items[0]["ciphertext"]
            .as_str()
            .unwrap()
            .starts_with("vault:v1:")
    );
    assert_eq!(items[1]["error"], "field \"plaintext\": invalid base64");
    assert_eq!(items[1]["reference"], "");
    let r = s
        .post(
            "transit/encrypt/k",
            &s.root,
            json!({"batch_input": mixed, "partial_failure_response_code": 207}),
        )
        .await;
    assert_eq!(r.status, 207, "{}", r.text);
    // all items failing: 400 whatever the partial code
    let r = s
        .post(
            "transit/encrypt/k",
            &s.root,
            json!({"batch_input": [{"plaintext": "!!"}], "partial_failure_response_code": 207}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);

    err(
        &s,
        "transit/encrypt/k",
        json!({"plaintext": b64(b"x"), "batch_input": [{"plaintext": b64(b"y")}]}),
        400,
        "plaintext and batch_input are mutually exclusive",
    )
    .await;
    err(
        &s,
        "transit/encrypt/k",
        json!({"batch_input": []}),
        400,
        "missing batch input to process",
    )
    .await;
    err(
        &s,
        "transit/encrypt/k",
        json!({"batch_input": "x"}),
        400,
        "batch_input must be a list of objects",
    )
    .await;
    err(
        &s,
        "transit/encrypt/k",
        json!({"batch_input": [1]}),
        400,
        "batch_input items must be objects",
    )
    .await;
    // the default JSON limit (1,000 strings) stops a batch of 500 items;
    // with it raised, the engine's own bound still holds
    let many: Vec<Value> = (0..10_001).map(|_| json!({"plaintext": ""})).collect();
    err(
        &s,
        "transit/encrypt/k",
        json!({"batch_input": many.clone()}),
        400,
        "refused JSON input due to high complexity: exceeded maximum number of strings",
    )
    .await;
    let s = TestServer::start(Opts {
        json: palisade_server::json::JsonLimits {
            max_strings: usize::MAX,
            ..palisade_server::json::JsonLimits::DEFAULT
        },
        ..Opts::default()
    })
    .await;
    let r = s
        .post("sys/mounts/transit", &s.root, json!({"type": "transit"}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    err(
        &s,
        "transit/encrypt/k",
        json!({"batch_input": many}),
        400,
        "batch_input has more than 10000 items",
    )
    .await;
    let r = s.get("transit/keys/k", &s.root).await;
    assert_eq!(r.status, 404, "a refused batch creates no key: {}", r.text);
}

#[tokio::test]
async fn signatures_verify_only_for_the_signed_input_and_key() {
    let s = transit().await;
    let input = b64(b"release-1.2.3.tar.gz");
    let other = b64(b"release-1.2.4.tar.gz");
    for (kind, extra) in [
        ("ed25519", json!({})),
        ("ecdsa-p256", json!({})),
        ("ecdsa-p256", json!({"marshaling_algorithm": "jws"})),
        ("ecdsa-p384", json!({})),
        ("rsa-2048", json!({})),
        (
            "rsa-2048",
            json!({"signature_algorithm": "pkcs1v15", "hash_algorithm": "sha2-512"}),
        ),
    ] {
        let key = format!("s-{kind}");
        ok(&s, &format!("transit/keys/{key}"), json!({"type": kind})).await;
        let mut body = extra.clone();
        body["input"] = json!(input);
        let d = ok(&s, &format!("transit/sign/{key}"), body.clone()).await;
        let sig = d["signature"].as_str().unwrap().to_string();
        assert!(sig.starts_with("vault:v1:"), "{sig}");
        if extra.get("marshaling_algorithm").is_some() {
            assert!(
                !sig.contains('+') && !sig.contains('/') && !sig.ends_with('='),
                "{sig}"
            );
        }
        body["signature"] = json!(sig);
        let d = ok(&s, &format!("transit/verify/{key}"), body.clone()).await;
        assert_eq!(d["valid"], true, "{kind} {extra}");
        body["input"] = json!(other);
        let d = ok(&s, &format!("transit/verify/{key}"), body.clone()).await;
        assert_eq!(d["valid"], false, "{kind} {extra}");
    }
    // a signature from another key of the same type is not valid
    ok(&s, "transit/keys/s2", json!({"type": "ed25519"})).await;
    let sig = ok(&s, "transit/sign/s2", json!({"input": input})).await["signature"].clone();
    let d = ok(
        &s,
        "transit/verify/s-ed25519",
        json!({"input": input, "signature": sig}),
    )
    .await;
    assert_eq!(d["valid"], false);

    ok(&s, "transit/keys/aes", json!({})).await;
    err(
        &s,
        "transit/sign/aes",
        json!({"input": input}),
        400,
        "key type aes256-gcm96 does not support signing",
    )
    .await;
    err(
        &s,
        "transit/encrypt/s-ed25519",
        json!({"plaintext": input}),
        400,
        "message encryption not supported for key type ed25519",
    )
    .await;
    err(&s, "transit/sign/s-ecdsa-p256/sha2-512", json!({"input": input}), 400, "unsupported hash algorithm for this key type: ecdsa-p256 signs with sha2-256, ecdsa-p384 with sha2-384 or sha3-384").await;
    err(
        &s,
        "transit/sign/s-ecdsa-p256/sha2-256",
        json!({"input": input, "hash_algorithm": "sha2-384"}),
        400,
        "hash_algorithm given in the path and in the body with different values",
    )
    .await;
    err(
        &s,
        "transit/sign/s-ed25519",
        json!({"input": input, "marshaling_algorithm": "jws"}),
        400,
        "marshaling algorithm jws applies to ECDSA keys only",
    )
    .await;
    err(
        &s,
        "transit/sign/s-rsa-2048",
        json!({"input": input, "salt_length": "20"}),
        400,
        "unsupported salt_length: RSA-PSS signatures use a salt as long as the hash (\"hash\")",
    )
    .await;
    err(
        &s,
        "transit/verify/s-ed25519",
        json!({"input": input}),
        400,
        "neither a 'signature' nor an 'hmac' were given to verify",
    )
    .await;
    err(
        &s,
        "transit/verify/s-ed25519",
        json!({"input": input, "signature": sig, "hmac": "vault:v1:AAAA"}),
        400,
        "provide one of 'signature' or 'hmac', not both",
    )
    .await;
    err(
        &s,
        "transit/verify/s-ed25519",
        json!({"input": input, "signature": "vault:v1:!!"}),
        400,
        "supplied signature is invalid",
    )
    .await;
    // prehashed: the digest is signed as given
    let digest = b64(&palisade_crypto::transit::hash(
        palisade_crypto::transit::HashAlg::Sha2_256,
        b"doc",
    ));
    let sig = ok(
        &s,
        "transit/sign/s-ecdsa-p256",
        json!({"input": digest, "prehashed": true}),
    )
    .await["signature"]
        .clone();
    let d = ok(
        &s,
        "transit/verify/s-ecdsa-p256",
        json!({"input": b64(b"doc"), "signature": sig}),
    )
    .await;
    assert_eq!(d["valid"], true);
}

#[tokio::test]
async fn hmac_hash_random_and_datakeys() {
    let s = transit().await;
    ok(&s, "transit/keys/k", json!({})).await;
    let input = b64(b"hello");
    let mac = ok(&s, "transit/hmac/k/sha2-512", json!({"input": input})).await["hmac"].clone();
    assert!(mac.as_str().unwrap().starts_with("vault:v1:"));
    let d = ok(
        &s,
        "transit/verify/k/sha2-512",
        json!({"input": input, "hmac": mac}),
    )
    .await;
    assert_eq!(d["valid"], true);
    let d = ok(
        &s,
        "transit/verify/k/sha2-256",
        json!({"input": input, "hmac": mac}),
    )
    .await;
    assert_eq!(d["valid"], false);
    let d = ok(
        &s,
        "transit/verify/k/sha2-512",
        json!({"input": b64(b"hellO"), "hmac": mac}),
    )
    .await;
    assert_eq!(d["valid"], false);
    err(
        &s,
        "transit/hmac/k/md5",
        json!({"input": input}),
        400,
        "unsupported algorithm md5",
    )
    .await;

    let d = ok(&s, "transit/hash", json!({"input": input})).await;
    assert_eq!(
        d["sum"],
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    let d = ok(
        &s,
        "transit/hash/sha3-256",
        json!({"input": input, "format": "base64"}),
    )
    .await;
    assert_eq!(d["sum"], "Mzi+aU9QxfM4gUmGzfBoZFOoiLhPQk15KvS5ICOY85I=");
    err(
        &s,
        "transit/hash/md5",
        json!({"input": input}),
        400,
        "unsupported algorithm md5",
    )
    .await;
    err(
        &s,
        "transit/hash/sha2-256",
        json!({"input": input, "algorithm": "sha2-512"}),
        400,
        "algorithm given in the path and in the body with different values",
    )
    .await;

    let d = ok(&s, "transit/random/8", json!({"format": "hex"})).await;
    assert_eq!(d["random_bytes"].as_str().unwrap().len(), 16);
    let d = ok(&s, "transit/random", json!({})).await;
    assert_eq!(
        STANDARD
            .decode(d["random_bytes"].as_str().unwrap())
            .unwrap()
            .len(),
        32
    );
    err(
        &s,
        "transit/random",
        json!({"bytes": 200000}),
        400,
        "'bytes' should be less than 131072",
    )
    .await;
    err(
        &s,
        "transit/random/0",
        json!({}),
        400,
        "'bytes' cannot be less than 1",
    )
    .await;

    let d = ok(&s, "transit/datakey/plaintext/k", json!({"bits": 512})).await;
    let key = STANDARD.decode(d["plaintext"].as_str().unwrap()).unwrap();
    assert_eq!(key.len(), 64);
    assert_eq!(
        decrypt(&s, "k", d["ciphertext"].as_str().unwrap()).await,
        key
    );
    let d = ok(&s, "transit/datakey/wrapped/k", json!({})).await;
    assert!(d.get("plaintext").is_none());
    err(
        &s,
        "transit/datakey/wrapped/k",
        json!({"bits": 100}),
        400,
        "invalid bit length",
    )
    .await;
    err(
        &s,
        "transit/datakey/other/k",
        json!({}),
        400,
        "Invalid path, must be 'plaintext' or 'wrapped'",
    )
    .await;
}

#[tokio::test]
async fn export_only_when_exportable_and_never_switched_back() {
    let s = transit().await;
    ok(&s, "transit/keys/e", json!({"type": "ecdsa-p256"})).await;
    ok(&s, "transit/keys/a", json!({})).await;
    let r = s.get("transit/export/public-key/e", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.data()["keys"]["1"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
    let r = s.get("transit/export/encryption-key/a", &s.root).await;
    assert_error(&r, 400, "private key material is not exportable");
    let r = s.get("transit/export/signing-key/e", &s.root).await;
    assert_error(&r, 400, "private key material is not exportable");
    let r = s.get("transit/export/public-key/a", &s.root).await;
    assert_error(&r, 400, "signing not supported for the key");

    ok(&s, "transit/keys/a/config", json!({"exportable": true})).await;
    err(
        &s,
        "transit/keys/a/config",
        json!({"exportable": false}),
        400,
        "export cannot be disabled on a key that already has it enabled",
    )
    .await;
    let r = s.get("transit/export/encryption-key/a/1", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let key = STANDARD
        .decode(r.data()["keys"]["1"].as_str().unwrap())
        .unwrap();
    assert_eq!(key.len(), 32);
    // the exported key really is the key: it opens the engine's ciphertext
    let ct = encrypt(&s, "a", b"exported").await;
    let raw = STANDARD.decode(&ct["vault:v1:".len()..]).unwrap();
    let opened = palisade_crypto::transit::decrypt(
        palisade_crypto::transit::KeyType::Aes256Gcm96,
        &key,
        &raw,
        b"",
    )
    .unwrap();
    assert_eq!(&opened[..], b"exported");
    let r = s.get("transit/export/encryption-key/a/01", &s.root).await;
    assert_error(&r, 400, "invalid key version");
    let r = s.get("transit/export/whatever/a", &s.root).await;
    assert_error(&r, 400, "invalid export type: whatever");
}

#[tokio::test]
async fn encrypting_with_a_new_key_needs_create_and_other_paths_need_their_capability() {
    let s = transit().await;
    ok(&s, "transit/keys/existing", json!({})).await;
    let update_only = s
        .token_with(r#"path "transit/encrypt/*" { capabilities = ["update"] }"#)
        .await;
    let body = json!({"plaintext": b64(b"x")});
    let r = s
        .post("transit/encrypt/existing", &update_only.id, body.clone())
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // the upsert would create a key: `update` is not enough
    let r = s
        .post("transit/encrypt/brand-new", &update_only.id, body.clone())
        .await;
    assert_denied(&r);
    let r = s.get("transit/keys/brand-new", &s.root).await;
    assert_eq!(r.status, 404, "nothing was created: {}", r.text);
    let create = s
        .token_with(r#"path "transit/encrypt/*" { capabilities = ["create"] }"#)
        .await;
    let r = s
        .post("transit/encrypt/brand-new", &create.id, body.clone())
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.get("transit/keys/brand-new", &s.root).await;
    assert_eq!(r.data()["type"], "aes256-gcm96");
    // an upsert makes only encryption keys
    let r = s
        .post(
            "transit/encrypt/new-ed",
            &s.root,
            json!({"plaintext": "", "type": "ed25519"}),
        )
        .await;
    assert_error(
        &r,
        400,
        "unknown key type ed25519: a key created by encrypt must be aes256-gcm96 or chacha20-poly1305",
    );

    // decrypt is its own path
    let ct = encrypt(&s, "existing", b"x").await;
    let r = s
        .post(
            "transit/decrypt/existing",
            &update_only.id,
            json!({"ciphertext": ct}),
        )
        .await;
    assert_denied(&r);
    let r = s
        .post("transit/keys/other", &update_only.id, json!({}))
        .await;
    assert_denied(&r);
}

#[tokio::test]
async fn keys_rotate_automatically_once_their_period_has_passed() {
    let s = transit().await;
    ok(&s, "transit/keys/auto", json!({"auto_rotate_period": "1h"})).await;
    ok(&s, "transit/keys/manual", json!({})).await;
    let now = palisade_core::now_nanos();
    assert_eq!(s.core.rotate_transit_keys(now).await.unwrap(), 0);
    let hour = 3_600_000_000_000i64;
    assert_eq!(
        s.core
            .rotate_transit_keys(now + hour + 1_000_000_000)
            .await
            .unwrap(),
        1
    );
    let r = s.get("transit/keys/auto", &s.root).await;
    assert_eq!(r.data()["latest_version"], 2);
    let r = s.get("transit/keys/manual", &s.root).await;
    assert_eq!(r.data()["latest_version"], 1);
    // the new version (made now) starts the period again
    assert_eq!(s.core.rotate_transit_keys(now + hour / 2).await.unwrap(), 0);
    // switched off: never again
    ok(
        &s,
        "transit/keys/auto/config",
        json!({"auto_rotate_period": 0}),
    )
    .await;
    assert_eq!(
        s.core.rotate_transit_keys(now + 10 * hour).await.unwrap(),
        0
    );
}

#[tokio::test]
async fn keys_survive_a_restart_and_never_reach_the_audit_log_or_the_database_in_clear() {
    let s = transit().await;
    let audit = s.enable_audit("file").await;
    ok(&s, "transit/keys/k", json!({"exportable": true})).await;
    let secret = b"the plaintext nobody may log";
    let ct = encrypt(&s, "k", secret).await;
    assert_eq!(decrypt(&s, "k", &ct).await, secret);
    let r = s.get("transit/export/encryption-key/k/1", &s.root).await;
    let key_b64 = r.data()["keys"]["1"].as_str().unwrap().to_string();
    let key = STANDARD.decode(&key_b64).unwrap();
    let d = ok(&s, "transit/datakey/plaintext/k", json!({})).await;
    let datakey = d["plaintext"].as_str().unwrap().to_string();

    let log = std::fs::read_to_string(&audit).unwrap();
    for needle in [b64(secret), key_b64.clone(), datakey.clone(), ct.clone()] {
        assert!(!log.contains(&needle), "audit log holds {needle}");
    }
    assert!(log.contains("transit/decrypt/k"));

    let db_path = s.path("palisade.db");
    let dir = s.stop().await;
    let db = std::fs::read(&db_path).unwrap();
    assert!(
        !db.windows(key.len()).any(|w| w == key.as_slice())
            && !String::from_utf8_lossy(&db).contains(&key_b64),
        "the key is in the database in clear"
    );
    let _ = dir;
}

#[tokio::test]
async fn keys_and_ciphertexts_outlive_a_restart() {
    let mut s = TestServer::start(Opts {
        dev: false,
        ..Opts::default()
    })
    .await;
    let keys = s.init_and_unseal(3, 2).await;
    let root = s.root.clone();
    let r = s
        .post("sys/mounts/transit", &root, json!({"type": "transit"}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    ok(&s, "transit/keys/k", json!({})).await;
    ok(&s, "transit/keys/k/rotate", json!({})).await;
    let ct = encrypt(&s, "k", b"durable").await;
    let dir = s.kill();
    let mut s = TestServer::start_in(
        Opts {
            dev: false,
            ..Opts::default()
        },
        dir,
    )
    .await;
    s.unseal(&keys[..2]).await;
    s.root = root;
    assert_eq!(decrypt(&s, "k", &ct).await, b"durable");
    let r = s.get("transit/keys/k", &s.root).await;
    assert_eq!(r.data()["latest_version"], 2);
}

#[tokio::test]
async fn a_token_without_rights_is_denied_everywhere_in_transit() {
    let s = transit().await;
    ok(&s, "transit/keys/k", json!({})).await;
    let t = s.powerless_token().await;
    for (m, p) in [
        ("POST", "transit/encrypt/k"),
        ("POST", "transit/decrypt/k"),
        ("GET", "transit/keys/k"),
        ("LIST", "transit/keys"),
        ("POST", "transit/keys/k/rotate"),
        ("GET", "transit/export/encryption-key/k"),
        ("POST", "transit/random"),
    ] {
        let r = s.call(m, p, Some(&t.id), Some(json!({}))).await;
        assert_denied(&r);
    }
}

#[tokio::test]
async fn backups_restore_only_whole_keys_and_never_over_a_protected_one() {
    let s = transit().await;
    ok(&s, "transit/keys/k", json!({})).await;
    let r = s.get("transit/backup/k", &s.root).await;
    assert_error(
        &r,
        400,
        "plaintext backup is disallowed on the policy: the key needs exportable and allow_plaintext_backup",
    );
    ok(
        &s,
        "transit/keys/k/config",
        json!({"exportable": true, "allow_plaintext_backup": true}),
    )
    .await;
    ok(&s, "transit/keys/k/rotate", json!({})).await;
    let ct = encrypt(&s, "k", b"kept").await;
    let r = s.get("transit/backup/k", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let backup = r.data()["backup"].as_str().unwrap().to_string();

    // restored under another name, the key opens the old ciphertexts
    let r = s
        .post("transit/restore/copy", &s.root, json!({"backup": backup}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(decrypt(&s, "copy", &ct).await, b"kept");
    let r = s.get("transit/keys/copy", &s.root).await;
    assert_eq!(r.data()["latest_version"], 2);
    // over an existing key: only with force, and only where deletion is allowed
    let r = s
        .post("transit/restore", &s.root, json!({"backup": backup}))
        .await;
    assert_error(
        &r,
        400,
        "key \"k\" already exists: restore with force to replace it",
    );
    let r = s
        .post(
            "transit/restore",
            &s.root,
            json!({"backup": backup, "force": true}),
        )
        .await;
    assert_error(
        &r,
        400,
        "key \"k\" cannot be replaced: deletion is not allowed for this key",
    );
    ok(
        &s,
        "transit/keys/k/config",
        json!({"deletion_allowed": true}),
    )
    .await;
    let r = s
        .post(
            "transit/restore",
            &s.root,
            json!({"backup": backup, "force": true}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    // a restored key is never deletable by the backup's say-so
    let r = s.get("transit/keys/k", &s.root).await;
    assert_eq!(r.data()["deletion_allowed"], false);

    // tampered backups are refused whole
    let doc: Value = serde_json::from_slice(&STANDARD.decode(&backup).unwrap()).unwrap();
    let tamper = |f: &dyn Fn(&mut Value)| {
        let mut d = doc.clone();
        f(&mut d);
        b64(&serde_json::to_vec(&d).unwrap())
    };
    let cases: Vec<(String, &str)> = vec![
        (
            tamper(&|d| d["policy"]["versions"]["1"]["key"] = json!(b64(&[0; 31]))),
            "invalid backup: invalid key material",
        ),
        (
            tamper(&|d| {
                d["policy"]["versions"].as_object_mut().unwrap().remove("1");
            }),
            "invalid backup: key versions are not contiguous up to latest_version",
        ),
        (
            tamper(&|d| d["policy"]["latest_version"] = json!(3)),
            "invalid backup: key versions are not contiguous up to latest_version",
        ),
        (
            tamper(&|d| d["policy"]["min_decryption_version"] = json!(0)),
            "invalid backup: invalid min_decryption_version",
        ),
        (
            tamper(&|d| d["policy"]["type"] = json!("rot13")),
            "invalid backup: unknown key type",
        ),
        (
            tamper(&|d| d["policy"]["name"] = json!("../x")),
            "invalid backup: invalid key name",
        ),
        (
            tamper(&|d| d["format"] = json!("vault")),
            "invalid backup: unknown format",
        ),
        (
            b64(b"not json"),
            "invalid backup: not a Palisade transit backup",
        ),
    ];
    for (b, msg) in cases {
        let r = s
            .post("transit/restore", &s.root, json!({"backup": b}))
            .await;
        assert_error(&r, 400, msg);
    }
    let r = s.list("transit/keys", &s.root).await;
    assert_eq!(r.data()["keys"], json!(["copy", "k"]));

    // an asymmetric key's public half comes from its private key, not the backup
    ok(
        &s,
        "transit/keys/sig",
        json!({"type": "ed25519", "exportable": true, "allow_plaintext_backup": true}),
    )
    .await;
    let real = s.get("transit/keys/sig", &s.root).await.data()["keys"]["1"]["public_key"].clone();
    let r = s.get("transit/backup/sig", &s.root).await;
    let mut d: Value = serde_json::from_slice(
        &STANDARD
            .decode(r.data()["backup"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    d["policy"]["versions"]["1"]["public_key"] = json!(b64(&[7; 32]));
    let r = s
        .post(
            "transit/restore/sig2",
            &s.root,
            json!({"backup": b64(&serde_json::to_vec(&d).unwrap())}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.get("transit/keys/sig2", &s.root).await;
    assert_eq!(r.data()["keys"]["1"]["public_key"], real);
}

#[tokio::test]
async fn rsa_options_are_checked_for_every_key_and_act_on_rsa_only() {
    let s = transit().await;
    ok(&s, "transit/keys/ed", json!({"type": "ed25519"})).await;
    let input = b64(b"x");
    // as hvac sends them for any key: accepted, and without effect here
    for salt in ["auto", "hash", "-1", "0", "1"] {
        let body = json!({"input": input, "signature_algorithm": "pss", "salt_length": salt, "hash_algorithm": "sha2-256"});
        let sig = ok(&s, "transit/sign/ed", body.clone()).await["signature"].clone();
        let mut v = body.clone();
        v["signature"] = sig;
        assert_eq!(
            ok(&s, "transit/verify/ed", v).await["valid"],
            true,
            "{salt}"
        );
    }
    err(
        &s,
        "transit/sign/ed",
        json!({"input": input, "salt_length": "foobar"}),
        400,
        "invalid salt_length foobar",
    )
    .await;
    err(
        &s,
        "transit/sign/ed",
        json!({"input": input, "signature_algorithm": "kitty"}),
        400,
        "unsupported signature algorithm kitty",
    )
    .await;
    // on RSA, a salt other than the hash's length is refused, not ignored
    ok(&s, "transit/keys/rsa", json!({"type": "rsa-2048"})).await;
    for salt in ["auto", "hash", "-1", "0", "32"] {
        ok(
            &s,
            "transit/sign/rsa",
            json!({"input": input, "salt_length": salt}),
        )
        .await;
    }
    err(
        &s,
        "transit/sign/rsa",
        json!({"input": input, "salt_length": "1"}),
        400,
        "unsupported salt_length: RSA-PSS signatures use a salt as long as the hash (\"hash\")",
    )
    .await;
}

// ------------------------------------------------------------ review findings

/// A backup of key `name` (exportable, plaintext backup allowed), decoded.
async fn backup_doc(s: &TestServer, name: &str, kind: &str) -> Value {
    ok(
        s,
        &format!("transit/keys/{name}"),
        json!({"type": kind, "exportable": true, "allow_plaintext_backup": true}),
    )
    .await;
    let r = s.get(&format!("transit/backup/{name}"), &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    serde_json::from_slice(
        &STANDARD
            .decode(r.data()["backup"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap()
}

async fn restore(s: &TestServer, name: &str, doc: &Value) -> Resp {
    s.post(
        &format!("transit/restore/{name}"),
        &s.root,
        json!({"backup": b64(&serde_json::to_vec(doc).unwrap())}),
    )
    .await
}

#[tokio::test]
async fn version_numbers_never_wrap_and_one_stuck_key_does_not_stop_rotation() {
    let s = transit().await;
    let doc = backup_doc(&s, "src", "aes256-gcm96").await;
    let v1 = doc["policy"]["versions"]["1"].clone();
    let at = |n: u64, extra: &dyn Fn(&mut Value)| {
        let mut d = doc.clone();
        d["policy"]["versions"] = json!({ n.to_string(): v1.clone() });
        for f in [
            "latest_version",
            "min_available_version",
            "min_decryption_version",
        ] {
            d["policy"][f] = json!(n);
        }
        extra(&mut d);
        d
    };
    let r = restore(&s, "huge", &at(u64::from(u32::MAX), &|_| {})).await;
    assert_error(&r, 400, "invalid backup: key version too large");
    let mut two = at(u64::from(u32::MAX), &|_| {});
    two["policy"]["versions"]["0"] = v1.clone();
    two["policy"]["min_available_version"] = json!(0);
    let r = restore(&s, "huge", &two).await;
    assert_error(&r, 400, "invalid backup: key version too large");

    // at the highest version a key is refused rotation, by hand and on schedule
    let old = |d: &mut Value| {
        d["policy"]["auto_rotate_period"] = json!(3600);
        d["policy"]["versions"][(1u64 << 31).to_string()]["creation_time"] = json!(0);
    };
    let r = restore(&s, "max", &at(1 << 31, &old)).await;
    assert_eq!(r.status, 204, "{}", r.text);
    err(
        &s,
        "transit/keys/max/rotate",
        json!({}),
        400,
        "the key has reached its highest version and cannot be rotated",
    )
    .await;
    let ct = encrypt(&s, "max", b"still works").await;
    assert!(ct.starts_with("vault:v2147483648:"), "{ct}");
    assert_eq!(decrypt(&s, "max", &ct).await, b"still works");
    // a due key listed after it still rotates
    ok(
        &s,
        "transit/keys/zz-due",
        json!({"auto_rotate_period": "1h"}),
    )
    .await;
    let later = palisade_core::now_nanos() + 3_700_000_000_000;
    assert_eq!(s.core.rotate_transit_keys(later).await.unwrap(), 1);
    assert_eq!(
        s.get("transit/keys/zz-due", &s.root).await.data()["latest_version"],
        2
    );
}

#[tokio::test]
async fn convergent_ciphertexts_with_different_associated_data_never_share_a_nonce() {
    let s = transit().await;
    ok(
        &s,
        "transit/keys/c",
        json!({"derived": true, "convergent_encryption": true}),
    )
    .await;
    let ctx = b64(b"tenant");
    let enc = |aad: &[u8]| json!({"plaintext": "", "context": ctx, "associated_data": b64(aad)});
    let nonce = |ct: &Value| {
        STANDARD
            .decode(&ct.as_str().unwrap()["vault:v1:".len()..])
            .unwrap()[..12]
            .to_vec()
    };
    let a = ok(&s, "transit/encrypt/c", enc(b"user=alice")).await["ciphertext"].clone();
    let a2 = ok(&s, "transit/encrypt/c", enc(b"user=alice")).await["ciphertext"].clone();
    let b = ok(&s, "transit/encrypt/c", enc(b"user=bobby")).await["ciphertext"].clone();
    assert_eq!(a, a2, "convergent: same input, same ciphertext");
    assert_ne!(
        nonce(&a),
        nonce(&b),
        "a shared GCM nonce would give away the authentication key"
    );
}

#[tokio::test]
async fn retired_versions_make_nothing_new() {
    let s = transit().await;
    ok(&s, "transit/keys/k", json!({})).await;
    ok(&s, "transit/keys/e", json!({"type": "ecdsa-p256"})).await;
    for k in ["k", "e"] {
        ok(&s, &format!("transit/keys/{k}/rotate"), json!({})).await;
        ok(
            &s,
            &format!("transit/keys/{k}/config"),
            json!({"min_decryption_version": 2}),
        )
        .await;
    }
    let retired = "requested version is below the minimum decryption version: it is retired";
    err(
        &s,
        "transit/encrypt/k",
        json!({"plaintext": "", "key_version": 1}),
        400,
        retired,
    )
    .await;
    err(
        &s,
        "transit/hmac/k",
        json!({"input": "", "key_version": 1}),
        400,
        retired,
    )
    .await;
    err(
        &s,
        "transit/datakey/wrapped/k",
        json!({"key_version": 1}),
        400,
        retired,
    )
    .await;
    err(
        &s,
        "transit/sign/e",
        json!({"input": "", "key_version": 1}),
        400,
        retired,
    )
    .await;
    // the current version still works for all of them
    ok(
        &s,
        "transit/encrypt/k",
        json!({"plaintext": "", "key_version": 2}),
    )
    .await;
    ok(&s, "transit/sign/e", json!({"input": "", "key_version": 2})).await;
}

#[tokio::test]
async fn encrypt_creates_keys_with_default_settings_only() {
    let s = transit().await;
    let t = s
        .token_with(r#"path "transit/encrypt/*" { capabilities = ["create", "update"] }"#)
        .await;
    let r = s
        .post("transit/encrypt/made", &t.id, json!({"plaintext": "", "exportable": true, "allow_plaintext_backup": true, "auto_rotate_period": "1h", "key_size": 64}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let d = s.get("transit/keys/made", &s.root).await.data().clone();
    assert_eq!(
        (
            d["exportable"].clone(),
            d["allow_plaintext_backup"].clone(),
            d["auto_rotate_period"].clone()
        ),
        (json!(false), json!(false), json!(0))
    );
    let r = s.get("transit/export/encryption-key/made", &s.root).await;
    assert_error(&r, 400, "private key material is not exportable");
}

#[tokio::test]
async fn restored_rsa_keys_must_have_the_declared_size() {
    let s = transit().await;
    let small = backup_doc(&s, "small", "rsa-2048").await;
    let mut d = small.clone();
    d["policy"]["type"] = json!("rsa-4096");
    let r = restore(&s, "liar", &d).await;
    assert_error(&r, 400, "invalid backup: invalid key material");
    let mut d = small.clone();
    d["policy"]["type"] = json!("ecdsa-p256");
    let r = restore(&s, "liar", &d).await;
    assert_error(&r, 400, "invalid backup: invalid key material");
    let r = restore(&s, "honest", &small).await;
    assert_eq!(r.status, 204, "{}", r.text);
}

#[tokio::test]
async fn error_texts_quote_request_values_to_the_client_but_not_to_the_audit_log() {
    let s = transit().await;
    let audit = s.enable_audit("file").await;
    ok(&s, "transit/keys/k", json!({})).await;
    ok(&s, "transit/keys/e", json!({"type": "ed25519"})).await;
    let cases = [
        (
            "transit/keys/x",
            json!({"type": "MARKER-type"}),
            "unknown key type MARKER-type",
        ),
        (
            "transit/keys/h",
            json!({"type": "hmac", "key_size": 77777}),
            "invalid key_size 77777",
        ),
        (
            "transit/hash",
            json!({"input": "", "format": "MARKER-format"}),
            "unsupported encoding format MARKER-format; must be \"hex\" or \"base64\"",
        ),
        (
            "transit/hash",
            json!({"input": "", "algorithm": "MARKER-alg"}),
            "unsupported algorithm MARKER-alg",
        ),
        (
            "transit/random",
            json!({"source": "MARKER-source"}),
            "unsupported entropy source MARKER-source; must be \"platform\", \"seal\", or \"all\"",
        ),
        (
            "transit/sign/e",
            json!({"input": "", "signature_algorithm": "MARKER-sig"}),
            "unsupported signature algorithm MARKER-sig",
        ),
        (
            "transit/sign/e",
            json!({"input": "", "salt_length": "MARKER-salt"}),
            "invalid salt_length MARKER-salt",
        ),
        (
            "transit/sign/e",
            json!({"input": "", "marshaling_algorithm": "MARKER-m"}),
            "unsupported marshaling algorithm MARKER-m",
        ),
    ];
    for (path, body, msg) in cases {
        err(&s, path, body, 400, msg).await;
    }
    let log = std::fs::read_to_string(&audit).unwrap();
    assert!(!log.contains("MARKER") && !log.contains("77777"), "{log}");
    assert!(log.contains("\"error\":\"unknown key type\""), "{log}");
}

#[tokio::test]
async fn a_partial_failure_code_must_be_able_to_carry_the_results() {
    let s = transit().await;
    ok(&s, "transit/keys/k", json!({})).await;
    let mixed = json!([{"plaintext": ""}, {"plaintext": "!!"}]);
    for code in [100, 101, 204, 205, 304, 500, 600, -1] {
        let r = s
            .post(
                "transit/encrypt/k",
                &s.root,
                json!({"batch_input": mixed, "partial_failure_response_code": code}),
            )
            .await;
        assert_eq!(r.status, 400, "{code}: {}", r.text);
        assert_eq!(
            r.body["warnings"][0],
            "partial_failure_response_code must be a 2xx status with a body or a 4xx: ignored",
            "{code}"
        );
        assert_eq!(r.data()["batch_results"].as_array().unwrap().len(), 2);
    }
    for code in [200, 207, 422] {
        let r = s
            .post(
                "transit/encrypt/k",
                &s.root,
                json!({"batch_input": mixed, "partial_failure_response_code": code}),
            )
            .await;
        assert_eq!(r.status, code, "{}", r.text);
    }
}

#[tokio::test]
async fn booleans_are_booleans() {
    let s = transit().await;
    for bad in [json!(1.5), json!(-1), json!(2), json!(1.0e30)] {
        err(
            &s,
            "transit/keys/x",
            json!({"exportable": bad}),
            400,
            "field \"exportable\" must be a boolean",
        )
        .await;
    }
    let d = ok(&s, "transit/keys/x", json!({"exportable": 1, "derived": 0})).await;
    assert_eq!(
        (d["exportable"].clone(), d["derived"].clone()),
        (json!(true), json!(false))
    );
}
