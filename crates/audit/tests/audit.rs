//! End-to-end tests of the public API: redaction in the written file, chain
//! verification and tamper detection, reopen, and the fail-closed rule.

use std::path::{Path, PathBuf};

use palisade_audit::{
    AuditAuth, AuditEntry, AuditError, AuditRequest, AuditResponse, Broker, FileDevice, verify,
};
use serde_json::{Value, json};

const TOKEN: &str = "hvs.SUPERSECRETTOKEN";
const ACCESSOR: &str = "ACCESSOR.SUPERSECRET";
const DATA_SECRET: &str = "s3cr3t-DATA-VALUE";
const NESTED_SECRET: &str = "nested-ARRAY-SECRET";
const RESPONSE_SECRET: &str = "response-DATA-SECRET";
const ISSUED_TOKEN: &str = "hvs.ISSUEDCHILDTOKEN";

fn request(path: &str) -> AuditEntry {
    AuditEntry {
        request: AuditRequest {
            id: palisade_core::uuid_v4(),
            operation: "update".into(),
            path: path.into(),
            mount_type: "kv".into(),
            remote_address: "10.0.0.7".into(),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(p: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(p, text).unwrap();
}

/// A temp dir holding a verified log of `n` request records.
async fn log_of(n: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.log");
    let broker = Broker::new();
    broker.add(FileDevice::open("file/", &p, b"key").unwrap());
    for i in 0..n {
        broker
            .log(&request(&format!("secret/data/item{i}")))
            .await
            .unwrap();
    }
    assert_eq!(verify(&p).unwrap().lines, n as u64);
    (dir, p)
}

fn verify_err(p: &Path) -> String {
    verify(p).unwrap_err().to_string()
}

#[tokio::test]
async fn redaction_keeps_secrets_out_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.log");
    let dev = FileDevice::open("file/", &p, b"device-salt").unwrap();
    let h = |s: &str| dev.hash(s);
    let (h_token, h_accessor, h_data, h_nested, h_resp, h_issued) = (
        h(TOKEN),
        h(ACCESSOR),
        h(DATA_SECRET),
        h(NESTED_SECRET),
        h(RESPONSE_SECRET),
        h(ISSUED_TOKEN),
    );
    let broker = Broker::new();
    broker.add(dev);

    let auth = AuditAuth {
        client_token: TOKEN.into(),
        accessor: ACCESSOR.into(),
        display_name: "token".into(),
        policies: vec!["default".into()],
        token_ttl: 3600,
        ..Default::default()
    };
    let mut entry = AuditEntry {
        auth: Some(auth.clone()),
        request: AuditRequest {
            client_token: TOKEN.into(),
            client_token_accessor: ACCESSOR.into(),
            data: Some(json!({"password": DATA_SECRET, "n": 42, "flag": true,
                              "list": [NESTED_SECRET, null]})),
            ..request("secret/data/db").request
        },
        ..Default::default()
    };
    broker.log(&entry).await.unwrap();
    entry.response = Some(AuditResponse {
        status: 200,
        data: Some(json!({"data": {"value": RESPONSE_SECRET}})),
        auth: Some(AuditAuth {
            client_token: ISSUED_TOKEN.into(),
            ..auth
        }),
        warnings: vec!["a warning".into()],
    });
    entry.error = Some("permission denied".into());
    broker.log(&entry).await.unwrap();

    let text = std::fs::read_to_string(&p).unwrap();
    for secret in [
        TOKEN,
        ACCESSOR,
        DATA_SECRET,
        NESTED_SECRET,
        RESPONSE_SECRET,
        ISSUED_TOKEN,
    ] {
        assert!(!text.contains(secret), "{secret} reached the audit log");
    }
    for hashed in [
        &h_token,
        &h_accessor,
        &h_data,
        &h_nested,
        &h_resp,
        &h_issued,
    ] {
        assert!(
            text.contains(hashed.as_str()),
            "{hashed} missing from the audit log"
        );
    }

    let recs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (req, resp) = (&recs[0], &recs[1]);
    assert_eq!(req["type"], "request");
    assert!(req.get("response").is_none() && req.get("error").is_none());
    assert_eq!(req["auth"]["client_token"], json!(h_token));
    assert_eq!(req["auth"]["accessor"], json!(h_accessor));
    assert_eq!(req["request"]["client_token_accessor"], json!(h_accessor));
    // Non-strings, paths and addresses stay readable.
    assert_eq!(req["request"]["data"]["n"], 42);
    assert_eq!(req["request"]["data"]["flag"], true);
    assert_eq!(req["request"]["data"]["list"][1], Value::Null);
    assert_eq!(req["request"]["path"], "secret/data/db");
    assert_eq!(req["request"]["remote_address"], "10.0.0.7");
    assert_eq!(req["request"]["namespace"], json!({"id": "root"}));
    assert_eq!(req["auth"]["token_ttl"], 3600);
    assert_eq!(resp["type"], "response");
    assert_eq!(resp["response"]["auth"]["client_token"], json!(h_issued));
    assert_eq!(resp["response"]["warnings"], json!(["a warning"]));
    assert_eq!(resp["error"], "permission denied");
    verify(&p).unwrap();
}

#[test]
fn line_layout_matches_the_documented_chain() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.log");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let broker = Broker::new();
    broker.add(FileDevice::open("file/", &p, b"key").unwrap());
    rt.block_on(async {
        broker.log(&request("a")).await.unwrap();
        broker.log(&request("b")).await.unwrap();
    });
    let ls = lines(&p);
    let mut prev = "0".repeat(64);
    for (i, l) in ls.iter().enumerate() {
        let v: Value = serde_json::from_str(l).unwrap();
        let hash = v["hash"].as_str().unwrap().to_owned();
        let prefix = l.strip_suffix(&format!(",\"hash\":\"{hash}\"}}")).unwrap();
        assert!(prefix.ends_with(&format!(",\"seq\":{i},\"prev_hash\":\"{prev}\"")));
        assert_eq!(palisade_crypto::mac::sha256_hex(prefix.as_bytes()), hash);
        assert!(l.starts_with("{\"time\":\""));
        prev = hash;
    }
    assert_eq!(verify(&p).unwrap().last_hash, Some(prev));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_keep_the_chain_valid() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.log");
    let broker = Broker::new();
    broker.add(FileDevice::open("file/", &p, b"key").unwrap());
    let mut tasks = Vec::new();
    for t in 0..8 {
        let b = broker.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                b.log(&request(&format!("secret/data/t{t}/{i}")))
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(verify(&p).unwrap().lines, 400);
}

#[tokio::test]
async fn verify_detects_an_edited_line() {
    let (_dir, p) = log_of(5).await;
    let mut ls = lines(&p);
    // Change one byte in the middle of line 3, keeping it valid JSON.
    let at = ls[2].find("item2").unwrap() + 4;
    ls[2].replace_range(at..at + 1, "9");
    write_lines(&p, &ls);
    assert_eq!(verify_err(&p), "line 3: hash mismatch (line edited)");
}

#[tokio::test]
async fn verify_detects_an_edited_seq() {
    let (_dir, p) = log_of(3).await;
    let mut ls = lines(&p);
    ls[1] = ls[1].replace("\"seq\":1,", "\"seq\":7,");
    write_lines(&p, &ls);
    assert_eq!(verify_err(&p), "line 2: hash mismatch (line edited)");
}

#[tokio::test]
async fn verify_detects_a_removed_middle_line() {
    let (_dir, p) = log_of(5).await;
    let mut ls = lines(&p);
    ls.remove(2);
    write_lines(&p, &ls);
    assert_eq!(
        verify_err(&p),
        "line 3: sequence 3 follows 1 (line removed or reordered)"
    );
}

#[tokio::test]
async fn verify_detects_an_inserted_duplicate_line() {
    let (_dir, p) = log_of(5).await;
    let mut ls = lines(&p);
    ls.insert(2, ls[1].clone());
    write_lines(&p, &ls);
    assert_eq!(
        verify_err(&p),
        "line 3: sequence 1 follows 1 (line inserted or reordered)"
    );
}

#[tokio::test]
async fn verify_detects_swapped_lines() {
    let (_dir, p) = log_of(5).await;
    let mut ls = lines(&p);
    ls.swap(2, 3);
    write_lines(&p, &ls);
    assert_eq!(
        verify_err(&p),
        "line 3: sequence 3 follows 1 (line removed or reordered)"
    );
}

/// A line from another chain with the right seq: only prev_hash catches it.
#[tokio::test]
async fn verify_detects_a_foreign_line_with_the_right_seq() {
    let (_dir_a, a) = log_of(4).await;
    let (_dir_b, b) = log_of(4).await;
    let mut ls = lines(&a);
    ls[2] = lines(&b)[2].clone();
    write_lines(&a, &ls);
    assert_eq!(
        verify_err(&a),
        "line 3: previous-hash mismatch (line removed, inserted or reordered)"
    );
}

#[tokio::test]
async fn verify_detects_removed_leading_line_and_junk() {
    let (_dir, p) = log_of(3).await;
    let ls = lines(&p);
    write_lines(&p, &ls[1..]);
    assert_eq!(
        verify_err(&p),
        "line 1: sequence 1 on the first line, expected 0 (leading lines removed)"
    );

    std::fs::write(&p, "not json\n").unwrap();
    assert_eq!(verify_err(&p), "line 1: not valid JSON");

    std::fs::write(&p, "{\"time\":\"x\"}\n").unwrap();
    assert_eq!(
        verify_err(&p),
        "line 1: no trailing hash field (not a chained audit record)"
    );

    // A torn final line (no newline).
    let mut text = ls.join("\n");
    text.push_str("\n{\"time\":\"2");
    std::fs::write(&p, text).unwrap();
    assert_eq!(
        verify_err(&p),
        "line 4: incomplete final line (no trailing newline: torn write or truncated file)"
    );

    std::fs::write(&p, "").unwrap();
    assert_eq!(verify(&p).unwrap().lines, 0);
}

#[tokio::test]
async fn reopen_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.log");
    {
        let broker = Broker::new();
        broker.add(FileDevice::open("file/", &p, b"key").unwrap());
        for i in 0..3 {
            broker.log(&request(&format!("first/{i}"))).await.unwrap();
        }
    }
    let broker = Broker::new();
    broker.add(FileDevice::open("file/", &p, b"key").unwrap());
    for i in 0..2 {
        broker.log(&request(&format!("second/{i}"))).await.unwrap();
    }
    assert_eq!(verify(&p).unwrap().lines, 5);
    let seqs: Vec<u64> = lines(&p)
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
}

#[tokio::test]
async fn fails_closed_when_every_device_fails() {
    let entry = request("secret/data/x");

    // No devices: nothing to fail, Vault's rule is to proceed.
    let broker = Broker::new();
    assert!(broker.is_empty());
    broker.log(&entry).await.unwrap();

    // Only device cannot write (ENOSPC): refuse.
    broker.add(FileDevice::open("full/", Path::new("/dev/full"), b"key").unwrap());
    assert!(matches!(
        broker.log(&entry).await,
        Err(AuditError::NoDeviceWrote)
    ));

    // One good device alongside it: proceed, and the good one has the line.
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("audit.log");
    broker.add(FileDevice::open("file/", &good, b"key").unwrap());
    broker.log(&entry).await.unwrap();
    assert_eq!(verify(&good).unwrap().lines, 1);

    // Removing the good device brings back the refusal.
    assert!(broker.remove("file"));
    assert!(!broker.remove("file/"));
    assert!(matches!(
        broker.log(&entry).await,
        Err(AuditError::NoDeviceWrote)
    ));
    assert!(broker.remove("full/"));
    assert!(broker.is_empty());
    broker.log(&entry).await.unwrap();
}

#[test]
fn hash_is_deterministic_per_key_and_differs_across_keys() {
    let dir = tempfile::tempdir().unwrap();
    let a1 = FileDevice::open("a/", &dir.path().join("a1"), b"key-one").unwrap();
    let a2 = FileDevice::open("a/", &dir.path().join("a2"), b"key-one").unwrap();
    let b = FileDevice::open("b/", &dir.path().join("b"), b"key-two").unwrap();
    let h = a1.hash(TOKEN);
    assert_eq!(h, a1.hash(TOKEN));
    assert_eq!(h, a2.hash(TOKEN));
    assert_ne!(h, b.hash(TOKEN));
    assert_ne!(h, a1.hash("hvs.OTHER"));
    let expected = palisade_crypto::mac::MacKey::from_bytes(b"key-one").sign_hex(TOKEN.as_bytes());
    assert_eq!(h, format!("hmac-sha256:{expected}"));

    let broker = Broker::new();
    broker.add(a1);
    broker.add(b);
    assert_eq!(broker.hash("a/", TOKEN), Some(h.clone()));
    assert_eq!(broker.hash("a", TOKEN), Some(h));
    assert_eq!(broker.hash("missing/", TOKEN), None);
}

#[test]
fn broker_and_log_future_are_send() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let broker = Broker::new();
    send_sync(&broker);
    let entry = AuditEntry::default();
    send(&broker.log(&entry));
}
