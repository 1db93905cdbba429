//! Storage is untrusted: an entry that was edited, moved, truncated or
//! re-labelled under the barrier reads as 500 `internal error`, never as data.
//! The core runs on a MemoryBackend so the test can reach the raw bytes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use common::*;
use palisade_storage::Backend as _;
use serde_json::json;

const SECRET: &str = "tamper-secret-3e0d";

/// Raw storage keys under a KV mount's view that contain `part`.
fn keys_with(s: &TestServer, part: &str) -> Vec<(String, Vec<u8>)> {
    s.mem
        .as_ref()
        .unwrap()
        .raw()
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k.starts_with("logical/") && k.contains(part))
        .collect()
}

#[track_caller]
fn assert_internal(r: &Resp) {
    assert_error(r, 500, "internal error");
    assert!(
        !r.text.contains(SECRET),
        "tampered read leaked data: {}",
        r.text
    );
}

#[tokio::test]
async fn tampered_kv_versions_read_as_internal_error() {
    let s = TestServer::memory().await;
    let log = s.enable_audit("file").await;
    s.kv_put("t", json!({"v": SECRET})).await;
    s.kv_put("t", json!({"v": "second"})).await;
    let mem = s.mem.clone().unwrap();

    let versions = keys_with(&s, "/ver/");
    assert_eq!(
        versions.len(),
        2,
        "{:?}",
        versions.iter().map(|v| &v.0).collect::<Vec<_>>()
    );
    let (v1_key, v1) = versions
        .iter()
        .find(|(k, _)| k.ends_with("/1"))
        .unwrap()
        .clone();
    let (v2_key, v2) = versions
        .iter()
        .find(|(k, _)| k.ends_with("/2"))
        .unwrap()
        .clone();

    // sanity: both read before tampering
    assert_eq!(
        s.get("secret/data/t?version=1", &s.root).await.data()["data"]["v"],
        SECRET
    );

    // 1. one flipped ciphertext byte
    let mut edited = v1.clone();
    let last = edited.len() - 1;
    edited[last] ^= 0x01;
    mem.put(&v1_key, &edited).await.unwrap();
    assert_internal(&s.get("secret/data/t?version=1", &s.root).await);

    // 2. a valid ciphertext moved from another path (v2's bytes at v1's key)
    mem.put(&v1_key, &v2).await.unwrap();
    assert_internal(&s.get("secret/data/t?version=1", &s.root).await);

    // 3. truncated
    mem.put(&v1_key, &v1[..3]).await.unwrap();
    assert_internal(&s.get("secret/data/t?version=1", &s.root).await);
    mem.put(&v1_key, &v1[..20]).await.unwrap();
    assert_internal(&s.get("secret/data/t?version=1", &s.root).await);

    // 4. re-labelled with a key term that does not exist
    let mut relabelled = v1.clone();
    relabelled[..4].copy_from_slice(&99u32.to_be_bytes());
    mem.put(&v1_key, &relabelled).await.unwrap();
    assert_internal(&s.get("secret/data/t?version=1", &s.root).await);

    // 5. a live version deleted from storage underneath
    mem.delete(&v1_key).await.unwrap();
    assert_internal(&s.get("secret/data/t?version=1", &s.root).await);

    // restoring the original bytes restores the read: the failures above were
    // the integrity checks, not the test's doing
    mem.put(&v1_key, &v1).await.unwrap();
    assert_eq!(
        s.get("secret/data/t?version=1", &s.root).await.data()["data"]["v"],
        SECRET
    );
    assert_eq!(
        s.get("secret/data/t", &s.root).await.data()["data"]["v"],
        "second"
    );
    let _ = v2_key;

    // 6. tampered metadata: data and metadata reads fail, and writes refuse
    //    rather than start over from an empty history
    let (meta_key, meta) = keys_with(&s, "/meta/t").pop().unwrap();
    let mut bad = meta.clone();
    bad[10] ^= 0xff;
    mem.put(&meta_key, &bad).await.unwrap();
    assert_internal(&s.get("secret/data/t", &s.root).await);
    assert_internal(&s.get("secret/metadata/t", &s.root).await);
    let r = s
        .post(
            "secret/data/t",
            &s.root,
            json!({"data": {"v": "overwrite"}}),
        )
        .await;
    assert_error(&r, 500, "internal error");
    assert_eq!(mem.get(&v1_key).await.unwrap().unwrap(), v1);
    mem.put(&meta_key, &meta).await.unwrap();
    assert_eq!(
        s.get("secret/data/t", &s.root).await.data()["metadata"]["version"],
        2
    );

    // the failures were audited as errors, and the log still verifies
    let records = audit_records(&log);
    assert!(
        records
            .iter()
            .any(|r| r["request"]["path"] == "secret/data/t" && r["error"] == "internal error")
    );
    assert!(!std::fs::read_to_string(&log).unwrap().contains(SECRET));
    assert!(palisade_audit::verify(&log).is_ok());
}

#[tokio::test]
async fn tampered_kv_v1_entry_reads_as_internal_error() {
    let s = TestServer::memory().await;
    let r = s
        .post("sys/mounts/kv", &s.root, json!({"type": "kv"}))
        .await;
    assert_eq!(r.status, 204);
    s.post("kv/a", &s.root, json!({"v": SECRET})).await;
    s.post("kv/b", &s.root, json!({"v": "other"})).await;
    let mem = s.mem.clone().unwrap();
    let raw = keys_with(&s, "/");
    let (a_key, a) = raw.iter().find(|(k, _)| k.ends_with("/a")).unwrap().clone();
    let (_, b) = raw.iter().find(|(k, _)| k.ends_with("/b")).unwrap().clone();

    // b's ciphertext copied over a: authentic bytes, wrong place
    mem.put(&a_key, &b).await.unwrap();
    assert_internal(&s.get("kv/a", &s.root).await);
    let r = s.get("kv/a", &s.root).await;
    assert!(!r.text.contains("other"));
    // an edit
    let mut edited = a.clone();
    edited[6] ^= 0x40;
    mem.put(&a_key, &edited).await.unwrap();
    assert_internal(&s.get("kv/a", &s.root).await);
    // listing does not decrypt and still works; the untouched key still reads
    assert_eq!(
        s.list("kv/", &s.root).await.data()["keys"],
        json!(["a", "b"])
    );
    assert_eq!(s.get("kv/b", &s.root).await.data()["v"], "other");
    mem.put(&a_key, &a).await.unwrap();
    assert_eq!(s.get("kv/a", &s.root).await.data()["v"], SECRET);
}
