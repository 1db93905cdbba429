//! Audit devices as an attack surface and as a dependency: who may create a
//! file device and where (CVE-2025-6000's class), what a new device writes
//! first, what numbers and error messages leak into a log, the head anchor
//! that makes a cut-off tail visible, and that neither the content of an
//! audit file nor an unwritable device can keep the server sealed or let a
//! request through unaudited.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use palisade_audit::{Head, LineProblem, VerifyError};
use serde_json::{Value, json};

// ------------------------------------------------------------ helpers

/// The lines of an audit file as text (without their `\n`).
fn raw_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `seq` and `hash` of the last line of an audit file.
fn last_head(path: &Path) -> Head {
    let records = audit_records(path);
    let last = records.last().expect("the audit log has records");
    head_of(last)
}

fn head_of(record: &Value) -> Head {
    Head {
        seq: record["seq"].as_u64().expect("seq"),
        hash: record["hash"].as_str().expect("hash").to_owned(),
    }
}

/// An uninitialised server, initialised over HTTP (3 shares, threshold 2)
/// and unsealed, with KV v2 at `secret/`. Returns the server and its keys.
async fn fresh(opts: Opts) -> (TestServer, Vec<String>) {
    let mut s = TestServer::start(Opts { dev: false, ..opts }).await;
    let keys = s.init_and_unseal(3, 2).await;
    let r = s
        .put(
            "sys/mounts/secret",
            &s.root,
            json!({"type": "kv", "options": {"version": "2"}}),
        )
        .await;
    assert_eq!(r.status, 204, "mount secret/: {}", r.text);
    (s, keys)
}

/// Restart on the storage in `dir` and unseal (asserting 200, unsealed).
async fn restart(dir: tempfile::TempDir, opts: Opts, keys: &[String], root: &str) -> TestServer {
    let mut s = TestServer::start_in(Opts { dev: false, ..opts }, dir).await;
    s.unseal(&keys[..2]).await;
    s.root = root.to_owned();
    s
}

/// `sys/audit-hash/<device>` of `input`, as root.
async fn audit_hash(s: &TestServer, device: &str, input: &str) -> String {
    let r = s
        .post(
            &format!("sys/audit-hash/{device}"),
            &s.root,
            json!({ "input": input }),
        )
        .await;
    assert_eq!(r.status, 200, "audit-hash: {}", r.text);
    r.data()["hash"].as_str().unwrap().to_owned()
}

fn enable_body(path: &Path) -> Value {
    json!({"type": "file", "options": {"file_path": path.display().to_string()}})
}

fn enable_body_str(path: &str) -> Value {
    json!({"type": "file", "options": {"file_path": path}})
}

const NOT_ALLOWED: &str = "cannot enable audit devices through the API: the server configuration does not allow it ([audit] dangerous_allow_api_file_devices); configure the device with [audit] file_path instead";
const OUTSIDE: &str =
    "file_path is outside the directories the server configuration allows for audit devices";
const NOT_REGULAR: &str = "sanity check failed: cannot open the file for writing (it must be a regular file, not a symlink, in an existing directory)";
const NOT_AUDIT_LOG: &str = "sanity check failed: the file exists and is not an audit log";
const PINNED: &str =
    "this audit device is set in the server configuration ([audit] file_path); remove it there";
const TOO_MANY_STRINGS: &str =
    "refused JSON input due to high complexity: exceeded maximum number of strings";

// ------------------------------------------------------------ 1. who may create devices

#[tokio::test]
async fn api_cannot_create_file_devices_unless_configured() {
    // deny: the configuration lists no directory for API devices
    let s = TestServer::start(Opts {
        api_audit: false,
        ..Opts::default()
    })
    .await;
    let target = s.path("x.log");
    let r = s.put("sys/audit/x", &s.root, enable_body(&target)).await;
    assert_error(&r, 400, NOT_ALLOWED);
    assert!(!target.exists(), "the refused device created its file");
    let r = s.get("sys/audit", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data(), &json!({}), "{}", r.text);
    // requests still work (no device: nothing to audit, as in Vault)
    assert_eq!(s.get("auth/token/lookup-self", &s.root).await.status, 200);

    // allow: the temp dir is listed
    let s = TestServer::dev().await;
    let target = s.path("x.log");
    let r = s.put("sys/audit/x", &s.root, enable_body(&target)).await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    assert!(target.exists());
    let r = s.get("sys/audit", &s.root).await;
    assert_eq!(
        r.data()["x/"]["options"]["file_path"],
        json!(target.canonicalize().unwrap().display().to_string()),
        "{}",
        r.text
    );
    assert_eq!(r.data()["x/"]["type"], "file");
}

// ------------------------------------------------------------ 2. confinement

#[tokio::test]
async fn api_file_devices_are_confined() {
    let s = TestServer::dev().await;
    // a directory outside the allowed one, standing in for a home directory
    let home = tempfile::tempdir().unwrap();
    let profile = home.path().join(".profile");
    std::fs::write(&profile, "export PATH=/usr/bin\n").unwrap();
    let profile_before = std::fs::read(&profile).unwrap();

    // a name with a newline, an escape or an invisible character: refused
    // before anything is opened or logged (it would forge server log lines)
    for bad in [
        "x\n2026-12-05T17:40:21Z ERROR forged\u{1b}[31m.log",
        "x\u{200b}.log",
        "x\u{0}.log",
    ] {
        let target = s.path(bad);
        let r = s.put("sys/audit/a", &s.root, enable_body(&target)).await;
        assert_error(
            &r,
            400,
            "file_path must not contain control or invisible characters",
        );
        assert!(!target.exists());
    }
    // outside, existing file: refused, untouched
    let r = s.put("sys/audit/a", &s.root, enable_body(&profile)).await;
    assert_error(&r, 400, OUTSIDE);
    assert_eq!(std::fs::read(&profile).unwrap(), profile_before);
    // outside, new file: refused, not created
    let new_outside = home.path().join(".bashrc");
    let r = s
        .put("sys/audit/a", &s.root, enable_body(&new_outside))
        .await;
    assert_error(&r, 400, OUTSIDE);
    assert!(!new_outside.exists());

    // a symlink inside the allowed dir to a file outside: refused (not a
    // regular file), the target unchanged
    let link = s.path("link.log");
    std::os::unix::fs::symlink(&profile, &link).unwrap();
    let r = s.put("sys/audit/a", &s.root, enable_body(&link)).await;
    assert_error(&r, 400, NOT_REGULAR);
    assert_eq!(std::fs::read(&profile).unwrap(), profile_before);
    // a symlink inside to a file outside that does not exist yet: refused, not created
    let dangling_target = home.path().join("planted.sh");
    let dangling = s.path("dangling.log");
    std::os::unix::fs::symlink(&dangling_target, &dangling).unwrap();
    let r = s.put("sys/audit/a", &s.root, enable_body(&dangling)).await;
    assert_error(&r, 400, NOT_REGULAR);
    assert!(
        !dangling_target.exists(),
        "created through a dangling symlink"
    );

    // a symlinked directory inside the allowed dir that leads outside
    std::os::unix::fs::symlink(home.path(), s.path("escape")).unwrap();
    let r = s
        .put(
            "sys/audit/a",
            &s.root,
            enable_body(&s.path("escape").join(".profile")),
        )
        .await;
    assert_error(&r, 400, OUTSIDE);
    assert_eq!(std::fs::read(&profile).unwrap(), profile_before);
    let r = s
        .put(
            "sys/audit/a",
            &s.root,
            enable_body(&s.path("escape").join("new.log")),
        )
        .await;
    assert_error(&r, 400, OUTSIDE);
    assert!(!home.path().join("new.log").exists());

    // special files
    let r = s
        .put("sys/audit/a", &s.root, enable_body_str("/dev/null"))
        .await;
    assert_error(&r, 400, OUTSIDE);

    // an existing non-audit file inside the allowed dir: refused, unchanged
    let script = s.path("profile.sh");
    std::fs::write(&script, "echo hi\n").unwrap();
    let r = s.put("sys/audit/a", &s.root, enable_body(&script)).await;
    assert_error(&r, 400, NOT_AUDIT_LOG);
    assert_eq!(std::fs::read_to_string(&script).unwrap(), "echo hi\n");
    // the same without a final newline
    let script2 = s.path("profile2.sh");
    std::fs::write(&script2, "echo hi").unwrap();
    let r = s.put("sys/audit/a", &s.root, enable_body(&script2)).await;
    assert_error(&r, 400, NOT_AUDIT_LOG);
    assert_eq!(std::fs::read_to_string(&script2).unwrap(), "echo hi");

    // path syntax
    let r = s
        .put("sys/audit/a", &s.root, enable_body_str("a.log"))
        .await;
    assert_error(&r, 400, "file_path must be an absolute path");
    let dotdot = format!("{}/../a.log", s.dir.path().display());
    let r = s
        .put("sys/audit/a", &s.root, enable_body_str(&dotdot))
        .await;
    assert_error(
        &r,
        400,
        "file_path must name a file, without '.' or '..' components",
    );

    // nothing was enabled by any of the refusals
    let r = s.get("sys/audit", &s.root).await;
    assert_eq!(r.data(), &json!({}), "{}", r.text);

    // the reproduction: a legit device, then a request whose path is a shell command
    let legit = s.enable_audit("legit").await;
    let marker = home.path().join("pwned");
    let target = format!("/v1/secret/$(touch%20{})", marker.display());
    let (status, body) = s.raw("GET", &target, Some(&s.root), b"").await;
    // KV v2 has no such path: refused, and audited like any request
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()),
        (404, json!({"errors": ["unsupported path"]}))
    );
    let expected_path = format!("secret/$(touch {})", marker.display());
    let records = audit_records(&legit);
    let lines = audit_for(&records, &expected_path);
    assert_eq!(lines.len(), 2, "request and response in the confined log");
    assert_eq!(lines[1]["response"]["status"], 404);
    // it landed nowhere else
    assert_eq!(std::fs::read(&profile).unwrap(), profile_before);
    assert!(!marker.exists());
    let mut outside: Vec<_> = std::fs::read_dir(home.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    outside.sort();
    assert_eq!(outside, vec![".profile".to_string()]);
    for f in [&script, &script2] {
        assert!(!std::fs::read_to_string(f).unwrap().contains("touch"));
    }
    let r = s.get("sys/audit", &s.root).await;
    let names: Vec<&String> = r.data().as_object().unwrap().keys().collect();
    assert_eq!(names, vec!["legit/"], "{}", r.text);

    // allow: a new file in a subdirectory of the allowed dir
    std::fs::create_dir(s.path("sub")).unwrap();
    let sub = s.path("sub").join("new.log");
    let r = s.put("sys/audit/new", &s.root, enable_body(&sub)).await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    assert!(palisade_audit::verify(&sub).is_ok());
    // allow: re-enabling an existing audit log after disabling its device
    let r = s.delete("sys/audit/new", &s.root).await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    let lines_before = raw_lines(&sub).len();
    let r = s.put("sys/audit/new", &s.root, enable_body(&sub)).await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    assert_eq!(s.get("auth/token/lookup-self", &s.root).await.status, 200);
    let report = palisade_audit::verify(&sub).expect("the continued chain verifies");
    assert!(report.lines as usize > lines_before);

    // deny: a '.' component, as the rule and the message say
    let dot = format!("{}/./dot.log", s.dir.path().display());
    let r = s.put("sys/audit/dot", &s.root, enable_body_str(&dot)).await;
    assert_error(
        &r,
        400,
        "file_path must name a file, without '.' or '..' components",
    );
    assert!(!s.path("dot.log").exists());
}

// ------------------------------------------------------------ 3. first record

#[tokio::test]
async fn a_new_device_writes_its_enabling_request_first() {
    let s = TestServer::dev().await;
    let log = s.enable_audit("file").await;
    let records = audit_records(&log);
    assert!(records.len() >= 2, "{records:?}");
    let first = &records[0];
    assert_eq!(first["type"], "request");
    assert_eq!(first["request"]["path"], "sys/audit/file");
    assert_eq!(first["request"]["operation"], "update");
    assert_eq!(first["seq"], 0);
    assert!(first.get("error").is_none(), "{first}");
    // then its response, same request
    let second = &records[1];
    assert_eq!(second["type"], "response");
    assert_eq!(second["request"]["id"], first["request"]["id"]);
    assert_eq!(second["response"]["status"], 204);
    // the enabling request's data is hashed like any other
    let file_path = first["request"]["data"]["options"]["file_path"]
        .as_str()
        .expect("file_path in the first record");
    assert!(file_path.starts_with("hmac-sha256:"), "{file_path}");
    assert_eq!(
        file_path,
        audit_hash(&s, "file", &log.display().to_string()).await
    );
    let report = palisade_audit::verify(&log).expect("verify");
    assert_eq!(report.lines as usize, raw_lines(&log).len());
}

// ------------------------------------------------------------ 4. numbers

/// Every leaf (number or string) of a JSON value.
fn leaves<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(m) => m.values().for_each(|x| leaves(x, out)),
        Value::Array(a) => a.iter().for_each(|x| leaves(x, out)),
        _ => out.push(v),
    }
}

#[tokio::test]
async fn numbers_in_secret_data_are_hashed() {
    let s = TestServer::dev().await;
    let log = s.enable_audit("file").await;
    let r = s
        .post(
            "secret/data/card",
            &s.root,
            json!({"data": {"pin": 1234, "card": 4111111111111111u64, "f": 1.5, "flag": true}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.get("secret/data/card", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.data()["data"],
        json!({"pin": 1234, "card": 4111111111111111u64, "f": 1.5, "flag": true})
    );

    let pin = audit_hash(&s, "file", "1234").await;
    let card = audit_hash(&s, "file", "4111111111111111").await;
    let f = audit_hash(&s, "file", "1.5").await;

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("4111111111111111"), "card number in the log");
    for needle in [":1234", "\"1234\"", ":1.5", "\"1.5\""] {
        assert!(!text.contains(needle), "{needle} in the log");
    }
    let records = audit_records(&log);
    for rec in &records {
        let mut all = Vec::new();
        leaves(rec, &mut all);
        for v in all {
            assert!(
                ![
                    json!(1234),
                    json!("1234"),
                    json!(4111111111111111u64),
                    json!("4111111111111111"),
                    json!(1.5),
                    json!("1.5"),
                ]
                .contains(v),
                "a secret number in the clear: {rec}"
            );
        }
        // no number at all in request or response data
        for data in [&rec["request"]["data"], &rec["response"]["data"]] {
            let mut all = Vec::new();
            leaves(data, &mut all);
            assert!(
                all.iter().all(|v| !v.is_number()),
                "a number in the clear in data: {data}"
            );
        }
    }

    let kv = audit_for(&records, "secret/data/card");
    let write = kv
        .iter()
        .find(|r| r["type"] == "request" && r["request"]["operation"] == "update")
        .expect("the write's request record");
    let d = &write["request"]["data"]["data"];
    assert_eq!(d["pin"], json!(pin), "{write}");
    assert_eq!(d["card"], json!(card), "{write}");
    assert_eq!(d["f"], json!(f), "{write}");
    assert_eq!(d["flag"], json!(true), "{write}");

    let read = kv
        .iter()
        .find(|r| r["type"] == "response" && r["request"]["operation"] == "read")
        .expect("the read's response record");
    let d = &read["response"]["data"]["data"];
    assert_eq!(d["pin"], json!(pin), "{read}");
    assert_eq!(d["card"], json!(card), "{read}");
    assert_eq!(d["f"], json!(f), "{read}");
    assert_eq!(d["flag"], json!(true), "{read}");
    assert!(palisade_audit::verify(&log).is_ok());
}

// ------------------------------------------------------------ 5. error echoes

#[tokio::test]
async fn audit_errors_do_not_echo_request_values() {
    let s = TestServer::dev().await;
    let log = s.enable_audit("file").await;
    s.kv_put("k", json!({"v": "1"})).await;

    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "auth/token/create",
            json!({"ttl": "MARKER-ttl"}),
            "field \"ttl\": invalid duration",
        ),
        (
            "auth/token/create",
            json!({"period": "MARKER"}),
            "field \"period\": invalid duration",
        ),
        (
            "auth/token/create",
            json!({"explicit_max_ttl": "MARKER-emt"}),
            "field \"explicit_max_ttl\": invalid duration",
        ),
        (
            "sys/mounts/m1",
            json!({"type": "MARKER-type"}),
            "plugin not found in the catalog: only kv, kv-v2, generic, transit, pki and database are available",
        ),
        (
            "sys/mounts/x",
            json!({"options": {"version": "MARKER-v"}}),
            "backend type must be specified as a string",
        ),
        (
            "sys/mounts/x",
            json!({"type": "kv", "options": {"version": "MARKER-v"}}),
            "invalid kv version: use 1 or 2",
        ),
        (
            "sys/mounts/secret/tune",
            json!({"options": {"version": "MARKER-v"}}),
            "changing the version of a kv mount is not supported; enable a new mount",
        ),
        (
            "sys/mounts/secret/tune",
            json!({"default_lease_ttl": "MARKER-dlt"}),
            "field \"default_lease_ttl\": invalid duration",
        ),
        (
            "sys/audit/y",
            json!({"type": "MARKER"}),
            "unknown backend type: only \"file\" is available",
        ),
        (
            "secret/metadata/k",
            json!({"delete_version_after": "MARKER"}),
            "field \"delete_version_after\": invalid duration",
        ),
        (
            "secret/metadata/k",
            json!({"max_versions": "MARKER-mv"}),
            "field \"max_versions\" must be an integer",
        ),
        (
            "secret/config",
            json!({"delete_version_after": "MARKER-cfg"}),
            "field \"delete_version_after\": invalid duration",
        ),
    ];
    for (path, body, msg) in &cases {
        let r = s.post(path, &s.root, body.clone()).await;
        assert_error(&r, 400, msg);
        assert!(!r.text.contains("MARKER"), "{path}: {}", r.text);
    }
    // allow side: the same fields with good values are accepted
    let r = s
        .post("auth/token/create", &s.root, json!({"ttl": "1h"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .post(
            "secret/metadata/k",
            &s.root,
            json!({"delete_version_after": "1h"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);

    let text = std::fs::read_to_string(&log).unwrap();
    let leaks: Vec<&str> = text.lines().filter(|l| l.contains("MARKER")).collect();
    assert!(leaks.is_empty(), "MARKER in the audit log: {leaks:#?}");
    // the errors are in the log, unechoed
    let records = audit_records(&log);
    for (path, _, msg) in &cases {
        assert!(
            records
                .iter()
                .any(|r| r["request"]["path"] == *path && r["error"] == *msg),
            "{path}: error {msg:?} not audited"
        );
    }
    assert!(palisade_audit::verify(&log).is_ok());
}

// ------------------------------------------------------------ 6. head anchor

#[tokio::test]
async fn audit_head_anchors_the_tail() {
    let (s, keys) = fresh(Opts::default()).await;
    let root = s.root.clone();
    let log = s.enable_audit("file").await;
    for i in 0..5 {
        s.kv_put(&format!("k{i}"), json!({"v": i})).await;
        assert_eq!(
            s.get(&format!("secret/data/k{i}"), &s.root).await.status,
            200
        );
    }

    let r = s.get("sys/audit-head/file", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let head = Head {
        seq: r.data()["seq"].as_u64().expect("seq"),
        hash: r.data()["hash"].as_str().expect("hash").to_owned(),
    };
    assert_eq!(r.data()["path"], "file/");
    assert_eq!(r.data()["loaded"], true);
    assert_eq!(
        r.data()["file_path"],
        json!(log.canonicalize().unwrap().display().to_string())
    );
    // the head is the last line written when the handler ran: the
    // audit-head request's own request record; its response follows it
    let records = audit_records(&log);
    let call = records
        .iter()
        .position(|x| x["request"]["path"] == "sys/audit-head/file" && x["type"] == "request")
        .expect("the audit-head request record");
    assert_eq!(head, head_of(&records[call]));
    assert_eq!(call + 2, records.len(), "response after the request");
    assert_eq!(records[call + 1]["seq"], head.seq + 1);
    // the device's head now is the file's last line
    let now = s.core.audit.device("file/").unwrap().head().unwrap();
    assert_eq!(now, last_head(&log));

    // deny: read on sys/audit-head/* without sudo
    let reader = s
        .token_with(r#"path "sys/audit-head/*" { capabilities = ["read"] }"#)
        .await;
    assert_denied(&s.get("sys/audit-head/file", &reader.id).await);
    // allow: with sudo
    let sudoer = s
        .token_with(r#"path "sys/audit-head/*" { capabilities = ["read", "sudo"] }"#)
        .await;
    let r = s.get("sys/audit-head/file", &sudoer.id).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // an unknown device
    let r = s.get("sys/audit-head/nope", &s.root).await;
    assert_error(&r, 400, "unknown audit backend nope/");

    // the file reaches the head
    palisade_audit::verify_against(&log, Some(&head)).expect("verify_against the head");
    let now = s.core.audit.device("file/").unwrap().head().unwrap();
    palisade_audit::verify_against(&log, Some(&now)).expect("verify_against the current head");

    // cut the last 3 lines (on a copy: the server keeps appending to the log)
    let lines = raw_lines(&log);
    assert_eq!(lines.len() as u64, now.seq + 1);
    let cut = s.path("cut.log");
    let kept = &lines[..lines.len() - 3];
    std::fs::write(
        &cut,
        kept.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    let report = palisade_audit::verify(&cut).expect("a cut file alone verifies");
    assert_eq!(report.last_seq, Some(now.seq - 3));
    let err = palisade_audit::verify_against(&cut, Some(&now)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the file ends at seq {} but the device's head is seq {}: trailing lines were removed",
            now.seq - 3,
            now.seq
        )
    );
    assert!(matches!(err, VerifyError::Truncated { .. }), "{err:?}");
    // a file holding another record at the head's seq
    let other = Head {
        seq: now.seq,
        hash: "0".repeat(64),
    };
    assert!(matches!(
        palisade_audit::verify_against(&log, Some(&other)),
        Err(VerifyError::HeadMismatch { .. })
    ));

    // shutdown anchors the head; after a restart the anchor is that head
    let dir = s.stop().await;
    let at_shutdown = last_head(&dir.path().join("file.log"));
    let s = restart(dir, Opts::default(), &keys, &root).await;
    let r = s.get("sys/audit-head/file", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["anchored_seq"], at_shutdown.seq, "{}", r.text);
    assert_eq!(
        r.data()["anchored_hash"],
        at_shutdown.hash.as_str(),
        "{}",
        r.text
    );
    assert_eq!(r.data()["loaded"], true);
    // and the chain continued across the restart
    assert_eq!(r.data()["seq"], at_shutdown.seq + 1, "{}", r.text);
    palisade_audit::verify_against(&s.path("file.log"), Some(&at_shutdown))
        .expect("the log verifies across the restart");
}

// ------------------------------------------------------------ 7. unseal vs file contents

/// The lines of a file that may hold junk: (1-based line number, the record
/// if the line is JSON).
fn mixed_lines(path: &Path) -> Vec<(usize, Option<Value>)> {
    let bytes = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut parts: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    if parts.last().is_some_and(|p| p.is_empty()) {
        parts.pop();
    }
    for (i, line) in parts.into_iter().enumerate() {
        out.push((i + 1, serde_json::from_slice(line).ok()));
    }
    out
}

#[tokio::test]
async fn unseal_never_depends_on_audit_file_contents() {
    let (s, keys) = fresh(Opts::default()).await;
    let root = s.root.clone();
    let log = s.enable_audit("file").await;
    s.kv_put("a", json!({"v": "1"})).await;
    assert_eq!(s.get("secret/data/a", &s.root).await.status, 200);
    let dir = s.stop().await;

    // round 1: 9 MiB of junk without a newline
    let log_path = dir.path().join("file.log");
    assert_eq!(log_path, log);
    let anchor = last_head(&log_path);
    let good_lines = raw_lines(&log_path).len();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&log_path)
            .unwrap();
        f.write_all(&vec![b'x'; 9 * 1024 * 1024]).unwrap();
    }
    let s = restart(dir, Opts::default(), &keys, &root).await;
    let r = s.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(r.body["sealed"], false, "{}", r.text);
    // first request: the anchor loaded at unseal (asked before the
    // once-a-second head writer can move it past new lines)
    let r = s.get("sys/audit-head/file", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["loaded"], true);
    assert_eq!(r.data()["anchored_seq"], anchor.seq, "{}", r.text);
    assert_eq!(
        r.data()["anchored_hash"],
        anchor.hash.as_str(),
        "{}",
        r.text
    );
    // requests work and are audited
    let r = s.get("secret/data/a", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    s.kv_put("b", json!({"v": "2"})).await;

    let lines = mixed_lines(&log_path);
    assert!(lines.len() > good_lines + 1);
    assert!(lines[good_lines].1.is_none(), "the junk line");
    let first_new = lines[good_lines + 1]
        .1
        .as_ref()
        .expect("the first line after the junk is a record");
    assert_eq!(first_new["seq"], anchor.seq + 1, "{first_new}");
    assert_eq!(first_new["prev_hash"], anchor.hash.as_str(), "{first_new}");
    assert_eq!(first_new["request"]["path"], "sys/audit-head/file");
    assert!(
        lines[good_lines + 1..].iter().all(|(_, v)| v.is_some()),
        "every new line is a record"
    );
    let err = palisade_audit::verify(&log_path).unwrap_err();
    assert_eq!(err.line(), Some(good_lines as u64 + 1), "{err}");
    let dir = s.stop().await;

    // round 2: cut to the first 2 lines
    let anchor = last_record_head(&log_path);
    let text = std::fs::read(&log_path).unwrap();
    let mut keep = Vec::new();
    for line in text.split_inclusive(|b| *b == b'\n').take(2) {
        keep.extend_from_slice(line);
    }
    std::fs::write(&log_path, &keep).unwrap();
    assert_eq!(raw_lines(&log_path).len(), 2);
    let s = restart(dir, Opts::default(), &keys, &root).await;
    let r = s.get("secret/data/b", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let records = audit_records(&log_path);
    assert_eq!(records[2]["seq"], anchor.seq + 1, "{}", records[2]);
    assert_eq!(records[2]["prev_hash"], anchor.hash.as_str());
    let err = palisade_audit::verify(&log_path).unwrap_err();
    match &err {
        VerifyError::Line {
            line: 3,
            problem: LineProblem::SequenceGap { found, previous: 1 },
        } if *found == anchor.seq + 1 => {}
        other => panic!("expected a sequence gap at line 3, got: {other}"),
    }
    // the new lines chain among themselves
    for w in records[2..].windows(2) {
        assert_eq!(w[1]["seq"].as_u64(), w[0]["seq"].as_u64().map(|x| x + 1));
        assert_eq!(w[1]["prev_hash"], w[0]["hash"]);
    }
}

/// `seq` and `hash` of the last record of a file that may hold junk.
fn last_record_head(path: &Path) -> Head {
    let lines = mixed_lines(path);
    let last = lines
        .iter()
        .rev()
        .find_map(|(_, v)| v.as_ref())
        .expect("a record");
    head_of(last)
}

// ------------------------------------------------------------ 8. unsealing

#[tokio::test]
async fn nothing_is_served_while_unsealing() {
    let (s, keys) = fresh(Opts::default()).await;
    let log = s.enable_audit("file").await;
    s.kv_put("x", json!({"v": "secret"})).await;
    s.seal().await;

    // the barrier is open but the core has not loaded and is not serving
    for k in &keys[..2] {
        s.core
            .barrier
            .submit_share(zeroize::Zeroizing::new(hex::decode(k).unwrap()))
            .await
            .expect("submit share");
    }
    assert!(!s.core.barrier.sealed());
    assert!(!s.core.is_serving());
    let before = raw_lines(&log).len();
    let r = s.get("secret/data/x", &s.root).await;
    assert_error(&r, 503, "Vault is sealed");
    let r = s.get("auth/token/lookup-self", &s.root).await;
    assert_error(&r, 503, "Vault is sealed");
    let r = s.call("GET", "secret/data/x", None, None).await;
    assert_error(&r, 503, "Vault is sealed");
    assert_eq!(raw_lines(&log).len(), before, "a line was audited");
    let r = s.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(
        (r.status, &r.body["sealed"]),
        (200, &json!(true)),
        "{}",
        r.text
    );
    let r = s.call("GET", "sys/health", None, None).await;
    assert_eq!(
        (r.status, &r.body["sealed"]),
        (503, &json!(true)),
        "{}",
        r.text
    );

    // a normal unseal finishes the job
    let r = s
        .call("PUT", "sys/unseal", None, Some(json!({"key": keys[0]})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["sealed"], false,
        "sys/unseal on an open barrier with a core not serving: {}",
        r.text
    );
    let r = s.get("secret/data/x", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["data"], json!({"v": "secret"}));
    let records = audit_records(&log);
    let id = r.body["request_id"].as_str().unwrap();
    let mine: Vec<_> = records
        .iter()
        .filter(|x| x["request"]["id"] == id)
        .collect();
    assert_eq!(mine.len(), 2, "request and response audited: {mine:?}");
}

// ------------------------------------------------------------ 9. seal vs in-flight

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seal_waits_for_in_flight_requests() {
    let (s, keys) = fresh(Opts::default()).await;
    let big = "s".repeat(1024 * 1024);
    s.kv_put("big", json!({"v": big})).await;
    let log = s.enable_audit("file").await;

    let mut served_ids: Vec<String> = Vec::new();
    let mut sealed_reads = 0usize;
    for round in 0..5 {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..21 {
            let client = s.http.clone();
            let token = s.root.clone();
            if i == 10 {
                let url = s.url("sys/seal");
                set.spawn(async move {
                    let r = client
                        .put(url)
                        .header("X-Vault-Token", token)
                        .header("Content-Type", "application/json")
                        .body("{}")
                        .send()
                        .await
                        .expect("seal");
                    let st = r.status().as_u16();
                    (true, st, r.text().await.unwrap())
                });
            } else {
                let url = s.url("secret/data/big");
                set.spawn(async move {
                    let r = client
                        .get(url)
                        .header("X-Vault-Token", token)
                        .send()
                        .await
                        .expect("read");
                    let st = r.status().as_u16();
                    (false, st, r.text().await.unwrap())
                });
            }
        }
        while let Some(res) = set.join_next().await {
            let (is_seal, status, text) = res.unwrap();
            if is_seal {
                assert_eq!((status, text.as_str()), (204, ""), "round {round}: seal");
                continue;
            }
            let body: Value = serde_json::from_str(&text).unwrap();
            match status {
                200 => {
                    assert_eq!(
                        body["data"]["data"]["v"].as_str().map(str::len),
                        Some(1 << 20)
                    );
                    served_ids.push(body["request_id"].as_str().unwrap().to_owned());
                }
                503 => {
                    assert_eq!(
                        body,
                        json!({"errors": ["Vault is sealed"]}),
                        "round {round}"
                    );
                    sealed_reads += 1;
                }
                _ => panic!("round {round}: read answered {status}: {text}"),
            }
        }
        assert!(
            !s.core.is_serving(),
            "round {round}: still serving after the seal"
        );
        s.unseal(&keys[..2]).await;
    }
    assert!(!served_ids.is_empty());
    eprintln!(
        "served {} reads, {} refused as sealed",
        served_ids.len(),
        sealed_reads
    );

    let records = audit_records(&log);
    let mut requests = std::collections::BTreeMap::new();
    let mut responses = std::collections::BTreeMap::new();
    for r in &records {
        let id = r["request"]["id"].as_str().unwrap().to_owned();
        match r["type"].as_str() {
            Some("request") => {
                assert!(
                    requests.insert(id, r.clone()).is_none(),
                    "two request records for one id"
                );
            }
            Some("response") => {
                assert!(
                    responses.insert(id, r.clone()).is_none(),
                    "two response records for one id"
                );
            }
            _ => panic!("record without a type: {r}"),
        }
    }
    for (id, req) in &requests {
        assert!(
            responses.contains_key(id),
            "request without a response line: {req}"
        );
    }
    for id in responses.keys() {
        assert!(
            requests.contains_key(id),
            "response without a request: {id}"
        );
    }
    for id in &served_ids {
        let resp = responses
            .get(id)
            .unwrap_or_else(|| panic!("a served read has no response line: {id}"));
        assert_eq!(resp["response"]["status"], 200);
        assert!(requests.contains_key(id));
    }
    let seals = records
        .iter()
        .filter(|r| r["request"]["path"] == "sys/seal" && r["type"] == "response")
        .count();
    assert_eq!(seals, 5);
    palisade_audit::verify(&log).expect("the chain verifies across seals");
}

// ------------------------------------------------------------ 10. unwritable device

#[tokio::test]
async fn recovery_from_an_audit_device_that_cannot_write() {
    let (s, keys) = fresh(Opts::default()).await;
    let root = s.root.clone();
    let good = s.enable_audit("good").await;
    s.kv_put("x", json!({"v": "1"})).await;
    let dir = s.stop().await;

    // the device's file becomes a symlink: refused at reopen (API trust)
    let other = dir.path().join("other.log");
    std::fs::copy(&good, &other).unwrap();
    std::fs::remove_file(&good).unwrap();
    std::os::unix::fs::symlink(&other, &good).unwrap();
    let other_before = std::fs::read(&other).unwrap();

    let s = restart(dir, Opts::default(), &keys, &root).await;
    let r = s.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(r.body["sealed"], false, "{}", r.text);
    // fail closed: configured but not loaded is unwritable
    assert_error(
        &s.get("secret/data/x", &s.root).await,
        500,
        "internal error",
    );
    assert_error(
        &s.get("auth/token/lookup-self", &s.root).await,
        500,
        "internal error",
    );
    let r = s
        .post("secret/data/x", &s.root, json!({"data": {"v": "2"}}))
        .await;
    assert_error(&r, 500, "internal error");
    assert_error(&s.get("sys/audit", &s.root).await, 500, "internal error");
    assert_error(
        &s.delete("sys/audit/good", &s.root).await,
        500,
        "internal error",
    );
    let r = s.get("sys/audit-head/good", &s.root).await;
    assert_error(&r, 500, "internal error");
    assert_eq!(std::fs::read(&other).unwrap(), other_before);
    let dir = s.stop().await;

    // the operator sets [audit] file_path: that device wins
    let config_opts = Opts {
        config_audit: Some("config.log"),
        ..Opts::default()
    };
    let s = restart(dir, config_opts.clone(), &keys, &root).await;
    let config_log = s.path("config.log");
    let r = s.get("secret/data/x", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["data"], json!({"v": "1"}));
    let id = r.body["request_id"].as_str().unwrap().to_owned();
    let records = audit_records(&config_log);
    assert_eq!(
        records.iter().filter(|x| x["request"]["id"] == id).count(),
        2,
        "the read is in config.log"
    );
    // deny: the pinned device cannot be disabled through the API
    assert_error(&s.delete("sys/audit/file", &s.root).await, 400, PINNED);
    // allow: the broken API device can
    let r = s.delete("sys/audit/good", &s.root).await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    let r = s.get("sys/audit", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let names: Vec<&String> = r.data().as_object().unwrap().keys().collect();
    assert_eq!(names, vec!["file/"], "{}", r.text);
    assert_eq!(
        r.data()["file/"]["options"]["file_path"],
        json!(config_log.display().to_string())
    );
    assert_eq!(std::fs::read(&other).unwrap(), other_before);
    palisade_audit::verify(&config_log).expect("config.log verifies");
    let dir = s.stop().await;

    // the configuration no longer names it: gone, and requests work
    let s = restart(dir, Opts::default(), &keys, &root).await;
    let r = s.get("sys/audit", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data(), &json!({}), "{}", r.text);
    let r = s.get("secret/data/x", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

// ------------------------------------------------------------ 11. bodies

#[tokio::test]
async fn unauthenticated_bodies_are_never_parsed() {
    let s = TestServer::dev().await;
    let log = s.enable_audit("file").await;
    let mut body = String::with_capacity(6 * 1024 * 1024);
    body.push_str("{\"data\":{");
    for i in 0..300_000 {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!("\"k{i:06}\":\"vvvv\""));
    }
    body.push_str("}}");
    assert!(body.len() >= 5_000_000, "{}", body.len());
    let body = body.into_bytes();
    let ct = ("Content-Type", "application/json".to_string());

    // deny: no token, never parsed
    let started = Instant::now();
    let r = s
        .send(
            "POST",
            "secret/data/x",
            std::slice::from_ref(&ct),
            Some(body.clone()),
        )
        .await;
    let took = started.elapsed();
    assert_denied(&r);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let lines = raw_lines(&log);
    let refusal: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("\"path\":\"secret/data/x\""))
        .collect();
    assert_eq!(refusal.len(), 1, "{refusal:?}");
    let rec: Value = serde_json::from_str(refusal[0]).unwrap();
    assert_eq!(rec["error"], "permission denied");
    assert!(rec["request"].get("data").is_none(), "{rec}");
    assert!(rec.get("response").is_none(), "{rec}");
    assert!(refusal[0].len() < 2048, "{} bytes", refusal[0].len());
    // a token that is not valid: the same
    let r = s
        .send(
            "POST",
            "secret/data/x",
            &[ct.clone(), ("X-Vault-Token", "hvs.nope".to_string())],
            Some(body.clone()),
        )
        .await;
    assert_denied(&r);

    // root: parsed within the limits, refused, audited without the body
    let r = s
        .send(
            "POST",
            "secret/data/x",
            &[ct.clone(), ("X-Vault-Token", s.root.clone())],
            Some(body),
        )
        .await;
    assert_error(&r, 400, TOO_MANY_STRINGS);
    let lines = raw_lines(&log);
    let refused: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("\"path\":\"secret/data/x\"") && l.contains(TOO_MANY_STRINGS))
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].len() < 2048, "{} bytes", refused[0].len());
    let rec: Value = serde_json::from_str(refused[0]).unwrap();
    assert!(rec["request"].get("data").is_none(), "{rec}");
    assert_empty_404(&s.get("secret/data/x", &s.root).await);

    // allow: 999 strings ("data" + 499 keys + 499 values)
    let ok: serde_json::Map<String, Value> =
        (0..499).map(|i| (format!("k{i}"), json!("a"))).collect();
    let r = s.post("secret/data/x", &s.root, json!({"data": ok})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["version"], 1);

    // unauthenticated endpoints: a small body limit
    let big_unseal = format!("{{\"key\":\"{}\"}}", "0".repeat(100 * 1024));
    let r = s
        .send(
            "PUT",
            "sys/unseal",
            std::slice::from_ref(&ct),
            Some(big_unseal.into_bytes()),
        )
        .await;
    assert_error(&r, 413, "http: request body too large");
    // allow: a normal one is read (and answered: already unsealed)
    let r = s
        .call("PUT", "sys/unseal", None, Some(json!({"key": "00"})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(audit_for(&audit_records(&log), "sys/unseal").is_empty());
    palisade_audit::verify(&log).expect("verify");
}

// ------------------------------------------------------------ second review

/// A device created through the API is confined again at every unseal: a
/// directory swapped for a symlink that leads out, or an allow-list the
/// operator removed, leaves it unavailable (fail closed), and nothing is
/// written outside.
#[tokio::test]
async fn api_devices_are_confined_again_when_reopened() {
    let (s, keys) = fresh(Opts::default()).await;
    let root = s.root.clone();
    let sub = s.path("sub");
    std::fs::create_dir(&sub).unwrap();
    let r = s
        .put("sys/audit/sub", &s.root, enable_body(&sub.join("x.sh")))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let dir = s.stop().await;

    // the directory becomes a symlink to a place outside the allowed one
    let outside = tempfile::tempdir().unwrap();
    let moved = dir.path().join("sub-moved");
    std::fs::rename(&sub, &moved).unwrap();
    std::os::unix::fs::symlink(outside.path(), &sub).unwrap();
    let s = restart(dir, Opts::default(), &keys, &root).await;
    let r = s.call("GET", "secret/data/$(touch%20x)", None, None).await;
    assert_denied(&r);
    assert!(
        std::fs::read_dir(outside.path()).unwrap().next().is_none(),
        "nothing may be created outside the allowed directory"
    );
    // the only device is unavailable: fail closed
    assert_error(&s.get("sys/audit", &s.root).await, 500, "internal error");
    let dir = s.stop().await;

    // put the directory back: the device works again
    std::fs::remove_file(&sub).unwrap();
    std::fs::rename(&moved, &sub).unwrap();
    let s = restart(dir, Opts::default(), &keys, &root).await;
    assert_eq!(s.get("sys/audit", &s.root).await.status, 200);
    let dir = s.stop().await;

    // the operator withdraws the allow-list: API devices no longer load
    let s = restart(
        dir,
        Opts {
            api_audit: false,
            ..Opts::default()
        },
        &keys,
        &root,
    )
    .await;
    let before = std::fs::metadata(sub.join("x.sh")).unwrap().len();
    assert_error(&s.get("sys/audit", &s.root).await, 500, "internal error");
    assert_eq!(std::fs::metadata(sub.join("x.sh")).unwrap().len(), before);
}

/// Two devices never write one file: a hard link to another device's log is
/// refused when enabling, whatever its name.
#[tokio::test]
async fn a_hard_link_to_another_devices_log_is_refused() {
    let s = TestServer::start(Opts {
        config_audit: Some("config.log"),
        ..Opts::default()
    })
    .await;
    s.kv_put("x", json!({"v": "1"})).await;
    let config_log = s.path("config.log");
    let link = s.path("link.log");
    std::fs::hard_link(&config_log, &link).unwrap();
    let r = s.put("sys/audit/linked", &s.root, enable_body(&link)).await;
    assert_error(&r, 400, NOT_REGULAR);
    assert!(palisade_audit::verify(&config_log).is_ok());
    // allowed: a fresh file beside it
    let r = s
        .put(
            "sys/audit/fresh",
            &s.root,
            enable_body(&s.path("fresh.log")),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
}

/// `options.path`, Vault's older name for `file_path` (hvac sends it), names
/// the same file under the same confinement; the device is kept under
/// `file_path` only.
#[tokio::test]
async fn path_is_the_older_name_of_file_path() {
    let (s, keys) = fresh(Opts::default()).await;
    let root = s.root.clone();
    let by_path = |p: &str| json!({"type": "file", "options": {"path": p}});

    // allow: `path` alone, and both names for the same file
    let old = s.path("old.log");
    let r = s
        .put(
            "sys/audit/old",
            &s.root,
            by_path(&old.display().to_string()),
        )
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    let both = s.path("both.log");
    let b = both.display().to_string();
    let r = s
        .put(
            "sys/audit/both",
            &s.root,
            json!({"type": "file", "options": {"path": b, "file_path": b}}),
        )
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    let r = s.get("sys/audit", &s.root).await;
    for (name, file) in [("old/", &old), ("both/", &both)] {
        assert_eq!(
            r.data()[name]["options"],
            json!({"file_path": file.canonicalize().unwrap().display().to_string()}),
            "{}",
            r.text
        );
    }
    // the device writes, and sys/audit-hash answers for it (hvac's next call)
    s.kv_put("x", json!({"v": "1"})).await;
    assert!(!audit_for(&audit_records(&old), "secret/data/x").is_empty());
    let hash = audit_hash(&s, "old", "hvac-rox").await;
    assert!(hash.starts_with("hmac-sha256:"), "{hash}");
    // and is opened again at the next unseal
    let dir = s.stop().await;
    let s = restart(dir, Opts::default(), &keys, &root).await;
    assert_eq!(audit_hash(&s, "old", "hvac-rox").await, hash);
    s.kv_put("y", json!({"v": "1"})).await;
    assert!(!audit_for(&audit_records(&old), "secret/data/y").is_empty());

    // deny: the two names for different files
    let (p1, p2) = (s.path("p1.log"), s.path("p2.log"));
    let r = s
        .put(
            "sys/audit/two",
            &s.root,
            json!({"type": "file", "options": {"path": p1.display().to_string(), "file_path": p2.display().to_string()}}),
        )
        .await;
    assert_error(
        &r,
        400,
        "options path and file_path differ: path is the older name of file_path, give one of them",
    );
    assert!(!p1.exists() && !p2.exists());
    // deny: every confinement rule applies to `path` as to `file_path`
    let home = tempfile::tempdir().unwrap();
    let profile = home.path().join(".profile");
    std::fs::write(&profile, "export PATH=/usr/bin\n").unwrap();
    let r = s
        .put(
            "sys/audit/a",
            &s.root,
            by_path(&profile.display().to_string()),
        )
        .await;
    assert_error(&r, 400, OUTSIDE);
    assert_eq!(
        std::fs::read_to_string(&profile).unwrap(),
        "export PATH=/usr/bin\n"
    );
    let link = s.path("link.log");
    std::os::unix::fs::symlink(&profile, &link).unwrap();
    let r = s
        .put("sys/audit/a", &s.root, by_path(&link.display().to_string()))
        .await;
    assert_error(&r, 400, NOT_REGULAR);
    let r = s.put("sys/audit/a", &s.root, by_path("a.log")).await;
    assert_error(&r, 400, "file_path must be an absolute path");
    let r = s.put("sys/audit/a", &s.root, by_path("")).await;
    assert_error(&r, 400, "file_path must be an absolute path");
    let r = s
        .put("sys/audit/a", &s.root, by_path(&old.display().to_string()))
        .await;
    assert_error(&r, 400, "another audit device already writes to this file");
    // deny: without sudo
    let admin = s
        .token_with(r#"path "sys/audit/*" { capabilities = ["create", "update", "read"] }"#)
        .await;
    let r = s
        .put(
            "sys/audit/a",
            &admin.id,
            by_path(&s.path("a.log").display().to_string()),
        )
        .await;
    assert_denied(&r);
    assert!(!s.path("a.log").exists());
    let r = s.get("sys/audit", &s.root).await;
    // sorted: serde_json keeps insertion order when another crate in the
    // build enables its preserve_order feature (a run with palisade-cli)
    let mut names: Vec<&String> = r.data().as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(names, ["both/", "old/"], "{}", r.text);

    // deny: the configuration allows no API device at all
    let s = TestServer::start(Opts {
        api_audit: false,
        ..Opts::default()
    })
    .await;
    let target = s.path("x.log");
    let r = s
        .put(
            "sys/audit/x",
            &s.root,
            by_path(&target.display().to_string()),
        )
        .await;
    assert_error(&r, 400, NOT_ALLOWED);
    assert!(!target.exists());
}

/// Options a file device would silently ignore are refused.
#[tokio::test]
async fn audit_options_are_honoured_or_refused() {
    let s = TestServer::dev().await;
    let opt = |k: &str, v: &str| json!({"type": "file", "options": {"file_path": s.path(&format!("{k}.log")).display().to_string(), k: v}});
    let only_default = |k: &str| {
        format!(
            "audit option {k:?}: only the default is supported (format json, mode 0600, hmac_accessor true, elide_list_responses false)"
        )
    };
    for (k, v) in [
        ("format", "jsonx"),
        ("mode", "0644"),
        ("hmac_accessor", "false"),
        ("elide_list_responses", "true"),
    ] {
        let r = s.put(&format!("sys/audit/{k}"), &s.root, opt(k, v)).await;
        assert_error(&r, 400, &only_default(k));
    }
    let r = s
        .put("sys/audit/raw", &s.root, opt("log_raw", "true"))
        .await;
    assert_error(
        &r,
        400,
        "log_raw is not supported: secrets never reach the audit log in the clear",
    );
    for (k, v) in [
        ("format", "json"),
        ("mode", "0600"),
        ("hmac_accessor", "true"),
        ("elide_list_responses", "false"),
        ("log_raw", "false"),
    ] {
        let r = s.put(&format!("sys/audit/{k}"), &s.root, opt(k, v)).await;
        assert_eq!(r.status, 204, "{k}={v}: {}", r.text);
    }
}

/// Query parameters are request data for reads, lists and deletes: they
/// are in the audit record, HMAC'd (`?token=` on a lookup included).
#[tokio::test]
async fn query_parameters_are_audited_hashed() {
    let s = TestServer::dev().await;
    let log = s.enable_audit("file").await;
    let t = s
        .create_token(&s.root, json!({"policies": ["default"]}))
        .await;
    let r = s
        .get(&format!("auth/token/lookup?token={}", t.id), &s.root)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    s.kv_put("q", json!({"v": "1"})).await;
    let r = s.get("secret/data/q?version=1", &s.root).await;
    assert_eq!(r.status, 200);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(&t.id), "the token never appears in clear");
    let records = audit_records(&log);
    let lookup = audit_for(&records, "auth/token/lookup");
    assert_eq!(lookup.len(), 2);
    for rec in &lookup {
        assert_eq!(
            rec["request"]["data"]["token"],
            json!(audit_hash(&s, "file", &t.id).await)
        );
    }
    let read = audit_for(&records, "secret/data/q");
    let get = read
        .iter()
        .find(|r| r["request"]["operation"] == "read")
        .expect("the read");
    assert_eq!(
        get["request"]["data"]["version"],
        json!(audit_hash(&s, "file", "1").await)
    );
}

/// A directory on the way swapped for a symlink *while* devices are being
/// enabled (between the path check and the open) never makes the server
/// write outside the allowed directories: the opened file's real path is
/// checked too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_swapped_during_enable_never_leads_outside() {
    let s = TestServer::dev().await;
    let outside = tempfile::tempdir().unwrap();
    let race = s.path("race");
    let parked = s.path("race-real");
    std::fs::create_dir(&race).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (race, parked, outside, stop) = (
            race.clone(),
            parked.clone(),
            outside.path().to_path_buf(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if std::fs::rename(&race, &parked).is_ok() {
                    let _ = std::os::unix::fs::symlink(&outside, &race);
                    let _ = std::fs::remove_file(&race);
                    let _ = std::fs::rename(&parked, &race);
                }
            }
        })
    };
    let mut enabled = 0;
    for i in 0..300 {
        let r = s
            .put(
                &format!("sys/audit/r{i}"),
                &s.root,
                enable_body(&race.join(format!("r{i}.log"))),
            )
            .await;
        if r.status == 204 {
            enabled += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flipper.join().unwrap();
    s.kv_put("after", json!({"v": "1"})).await;
    // files may have been created outside by a raced open, but no record
    // was ever written to one
    for e in std::fs::read_dir(outside.path()).unwrap() {
        let f = e.unwrap().path();
        assert_eq!(
            std::fs::metadata(&f).unwrap().len(),
            0,
            "an audit record was written outside: {}",
            f.display()
        );
    }
    assert!(enabled > 0, "no enable went through at all");
}

/// An existing empty file that becomes an audit log is made private (0600).
#[tokio::test]
async fn an_existing_file_becomes_private() {
    use std::os::unix::fs::PermissionsExt;
    let s = TestServer::dev().await;
    let f = s.path("empty.log");
    std::fs::write(&f, b"").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = s.put("sys/audit/empty", &s.root, enable_body(&f)).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(
        std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// What a client sends cannot make the audit log grow without bound: a body
/// of small numbers is summarised rather than hashed leaf by leaf (bounded
/// to a few times its size), and a refused anonymous request's query string
/// is not recorded.
#[tokio::test]
async fn audit_growth_stays_bounded_by_what_is_sent() {
    let s = TestServer::start(Opts {
        json: palisade_server::json::JsonLimits {
            max_strings: 1000,
            max_memory: usize::MAX,
        },
        ..Opts::default()
    })
    .await;
    let log = s.enable_audit("file").await;
    let zeros = vec![0u8; 50_000];
    let before = std::fs::metadata(&log).unwrap().len();
    s.kv_put("nums", json!({ "n": zeros })).await;
    let r = s.get("secret/data/nums", &s.root).await;
    assert_eq!(r.status, 200);
    let grown = std::fs::metadata(&log).unwrap().len() - before;
    // ~100 KB sent and read back: hashing every number would write ~16 MB
    assert!(grown < 1_000_000, "audit grew {grown} bytes");

    // anonymous and refused: the query is not recorded
    let q: String = (0..60).map(|i| format!("k{i}=v&")).collect();
    let r = s
        .call("GET", &format!("secret/data/x?{q}"), None, None)
        .await;
    assert_denied(&r);
    let rec = audit_for(&audit_records(&log), "secret/data/x")
        .into_iter()
        .next_back()
        .cloned()
        .unwrap();
    assert!(rec["request"].get("data").is_none(), "{rec}");
    // and bounded
    let q: String = (0..65).map(|i| format!("k{i}=v&")).collect();
    let r = s
        .call("GET", &format!("secret/data/x?{q}"), None, None)
        .await;
    assert_error(&r, 400, "too many query parameters");
}
