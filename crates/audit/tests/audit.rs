//! End-to-end tests of the public API: redaction in the written file, chain
//! verification and tamper detection, reopen, and the fail-closed rule.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

use std::path::{Path, PathBuf};

use palisade_audit::{
    AuditAuth, AuditEntry, AuditError, AuditRequest, AuditResponse, Broker, FileDevice, Head,
    Trust, verify, verify_against, verify_range,
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
    broker.add(FileDevice::open("file/", &p, b"key", Trust::Operator).unwrap());
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
    let dev = FileDevice::open("file/", &p, b"device-salt", Trust::Operator).unwrap();
    let h = |s: &str| dev.hash(s);
    let (h_token, h_accessor, h_data, h_nested, h_resp, h_issued) = (
        h(TOKEN),
        h(ACCESSOR),
        h(DATA_SECRET),
        h(NESTED_SECRET),
        h(RESPONSE_SECRET),
        h(ISSUED_TOKEN),
    );
    let h_42 = h("42");
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
        wrap_info: None,
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
    // Numbers are hashed in their textual form; booleans, nulls, paths and
    // addresses stay readable.
    assert_eq!(req["request"]["data"]["n"], json!(h_42));
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
    broker.add(FileDevice::open("file/", &p, b"key", Trust::Operator).unwrap());
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
    broker.add(FileDevice::open("file/", &p, b"key", Trust::Operator).unwrap());
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
        broker.add(FileDevice::open("file/", &p, b"key", Trust::Operator).unwrap());
        for i in 0..3 {
            broker.log(&request(&format!("first/{i}"))).await.unwrap();
        }
    }
    let broker = Broker::new();
    broker.add(FileDevice::open("file/", &p, b"key", Trust::Operator).unwrap());
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
    broker.add(FileDevice::open("full/", Path::new("/dev/full"), b"key", Trust::Operator).unwrap());
    assert!(matches!(
        broker.log(&entry).await,
        Err(AuditError::NoDeviceWrote)
    ));

    // One good device alongside it: proceed, and the good one has the line.
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("audit.log");
    broker.add(FileDevice::open("file/", &good, b"key", Trust::Operator).unwrap());
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
    let a1 = FileDevice::open("a/", &dir.path().join("a1"), b"key-one", Trust::Operator).unwrap();
    let a2 = FileDevice::open("a/", &dir.path().join("a2"), b"key-one", Trust::Operator).unwrap();
    let b = FileDevice::open("b/", &dir.path().join("b"), b"key-two", Trust::Operator).unwrap();
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

/// A log of `n` records whose device is then dropped; returns its head.
async fn anchored_log(p: &Path, n: usize) -> Head {
    let dev = FileDevice::open("file/", p, b"key", Trust::Operator).unwrap();
    for i in 0..n {
        dev.write_entry(&request(&format!("secret/data/{i}")))
            .unwrap();
    }
    dev.head().unwrap()
}

#[tokio::test]
async fn verify_against_the_head_reports_a_cut_off_tail() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.log");
    let head = anchored_log(&p, 5).await;
    assert_eq!(head.seq, 4);
    // whole file: passes, with the head and without
    assert_eq!(verify_against(&p, Some(&head)).unwrap().lines, 5);
    // cut the last two lines: the chain alone still verifies...
    let all = lines(&p);
    write_lines(&p, &all[..3]);
    assert_eq!(verify(&p).unwrap().lines, 3);
    // ...but not against the head
    let err = verify_against(&p, Some(&head)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the file ends at seq 2 but the device's head is seq 4: trailing lines were removed"
    );
    // an empty file is cut off too
    std::fs::write(&p, "").unwrap();
    assert_eq!(
        verify_against(&p, Some(&head)).unwrap_err().to_string(),
        "the file ends at no record but the device's head is seq 4: trailing lines were removed"
    );
    // another file that reaches the same seq is not the anchored one
    let other = dir.path().join("other.log");
    anchored_log(&other, 6).await;
    assert_eq!(
        verify_against(&other, Some(&head)).unwrap_err().to_string(),
        "the record at seq 4 is not the device's head (another file, or a rewritten one)"
    );
}

#[tokio::test]
async fn reopen_never_fails_on_content_and_continues_from_the_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.log");
    let head = anchored_log(&p, 5).await;

    // intact file, file ahead of the anchor: continues from the file
    let r = FileDevice::reopen("file/", &p, b"key", Trust::Operator, Some(&head)).unwrap();
    assert_eq!(r.warning, None);
    r.device.write_entry(&request("more")).unwrap();
    let ahead = r.device.head().unwrap();
    assert_eq!(ahead.seq, 4 + 1);
    drop(r);
    let r = FileDevice::reopen("file/", &p, b"key", Trust::Operator, Some(&head)).unwrap();
    assert_eq!(
        (r.warning.clone(), r.device.head()),
        (None, Some(ahead.clone()))
    );
    drop(r);

    // truncated below the anchor: continues from the anchor, the gap stays visible
    let all = lines(&p);
    write_lines(&p, &all[..2]);
    let r = FileDevice::reopen("file/", &p, b"key", Trust::Operator, Some(&ahead)).unwrap();
    assert_eq!(
        r.warning.as_deref(),
        Some(
            "the file ends at seq 1 but the anchored head is seq 5: lines were removed or the file replaced; the chain continues from the anchor"
        )
    );
    r.device.write_entry(&request("after-cut")).unwrap();
    assert_eq!(r.device.head().unwrap().seq, 6);
    drop(r);
    assert_eq!(
        verify(&p).unwrap_err().to_string(),
        "line 3: sequence 6 follows 1 (line removed or reordered)"
    );

    // a foreign, torn, oversized tail: reopens (the unseal must not depend on it)
    for junk in [
        "not json at all\n".to_owned(),
        "{\"torn\":".to_owned(),
        format!(
            "{}\n",
            "x".repeat(2 * palisade_audit::MAX_RECORD_BYTES + 10)
        ),
    ] {
        let q = dir.path().join("junk.log");
        std::fs::write(&q, &junk).unwrap();
        let r = FileDevice::reopen("file/", &q, b"key", Trust::Operator, Some(&head)).unwrap();
        let w = r.warning.clone().unwrap();
        assert!(
            w.starts_with("cannot continue the chain from the file (")
                && w.ends_with("it continues from the anchored head at seq 4"),
            "{w}"
        );
        r.device.write_entry(&request("x")).unwrap();
        drop(r);
        let text = std::fs::read_to_string(&q).unwrap();
        // the junk is kept and the new record is a line of its own
        assert!(text.starts_with(&junk[..junk.len().min(10)]));
        let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(last["seq"], 5);
    }
    // without an anchor a foreign file starts at seq 0
    let q = dir.path().join("junk2.log");
    std::fs::write(&q, "hello\n").unwrap();
    let r = FileDevice::reopen("file/", &q, b"key", Trust::Operator, None).unwrap();
    assert!(
        r.warning
            .unwrap()
            .ends_with("it continues from seq 0 (no anchor)")
    );
}

#[test]
fn api_trust_refuses_symlinks_special_files_and_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("profile.sh");
    std::fs::write(&target, "echo hi\n").unwrap();
    let link = dir.path().join("audit.log");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let err = FileDevice::open("file/", &link, b"k", Trust::Api).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("not a regular file (symlinks and special files are refused)"),
        "{err}"
    );
    // a dangling symlink is refused too (O_EXCL does not follow it)
    let dangling = dir.path().join("dangling.log");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
    assert!(FileDevice::open("file/", &dangling, b"k", Trust::Api).is_err());
    assert!(!dir.path().join("nowhere").exists());
    let err = FileDevice::open("file/", Path::new("/dev/null"), b"k", Trust::Api).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
    // an existing file that is not an audit log
    let err = FileDevice::open("file/", &target, b"k", Trust::Api).unwrap_err();
    assert!(
        err.to_string().contains("last line: not valid JSON"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "echo hi\n");
    // allowed: a new file, and an existing audit log
    let fresh = dir.path().join("fresh.log");
    let dev = FileDevice::open("file/", &fresh, b"k", Trust::Api).unwrap();
    dev.write_entry(&request("a")).unwrap();
    drop(dev);
    let dev = FileDevice::open("file/", &fresh, b"k", Trust::Api).unwrap();
    dev.write_entry(&request("b")).unwrap();
    assert_eq!(verify(&fresh).unwrap().lines, 2);
    // the operator may point at a symlink (e.g. a managed log path)
    let op_link = dir.path().join("op.log");
    std::os::unix::fs::symlink(&fresh, &op_link).unwrap();
    FileDevice::open("file/", &op_link, b"k", Trust::Operator).unwrap();
}

#[tokio::test]
async fn an_unavailable_device_counts_as_failing() {
    let broker = Broker::new();
    broker.add_unavailable("file/");
    assert!(!broker.is_empty());
    assert!(matches!(
        broker.log(&request("x")).await,
        Err(AuditError::NoDeviceWrote)
    ));
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("audit.log");
    broker.add(FileDevice::open("good/", &good, b"key", Trust::Operator).unwrap());
    broker.log(&request("x")).await.unwrap();
    assert_eq!(broker.devices().len(), 1);
}

/// After a rotation the device continues from its head in a new file: the
/// new file verifies against the previous file's last record, and only then.
#[tokio::test]
async fn a_rotated_file_continues_the_previous_chain() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("audit.log.1");
    let head = anchored_log(&old, 3).await;
    let new = dir.path().join("audit.log");
    let r = FileDevice::reopen("file/", &new, b"key", Trust::Operator, Some(&head)).unwrap();
    r.device.write_entry(&request("after-rotation")).unwrap();
    r.device.write_entry(&request("after-rotation-2")).unwrap();
    let new_head = r.device.head().unwrap();
    drop(r);
    assert_eq!(
        verify(&new).unwrap_err().to_string(),
        "line 1: sequence 3 on the first line, expected 0 (leading lines removed)"
    );
    let rep = verify_range(&new, Some(&head), Some(&new_head)).unwrap();
    assert_eq!((rep.lines, rep.last_seq), (2, Some(4)));
    // another predecessor does not fit
    let wrong = Head {
        seq: 2,
        hash: "0".repeat(64),
    };
    assert_eq!(
        verify_range(&new, Some(&wrong), None)
            .unwrap_err()
            .to_string(),
        "line 1: previous-hash of the first line does not continue the chain (leading lines removed)"
    );
}

#[test]
fn api_trust_refuses_hard_links() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("config.log");
    let dev = FileDevice::open("file/", &log, b"k", Trust::Operator).unwrap();
    dev.write_entry(&request("a")).unwrap();
    let link = dir.path().join("api.log");
    std::fs::hard_link(&log, &link).unwrap();
    let err = FileDevice::open("api/", &link, b"k", Trust::Api).unwrap_err();
    assert!(
        err.to_string().ends_with("the file has other hard links"),
        "{err}"
    );
    // the same file through two names has one identity
    let again = FileDevice::open("other/", &link, b"k", Trust::Operator).unwrap();
    assert_eq!(again.identity(), dev.identity());
    assert!(dev.identity().is_some());
}
