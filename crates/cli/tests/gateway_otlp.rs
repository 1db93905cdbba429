//! The gateway's security events to an OpenTelemetry collector: a real
//! `palisade gateway` exporting OTLP/HTTP (JSON encoding) over mutual TLS to
//! a receiver that parses every body strictly with the OpenTelemetry
//! project's own protobuf classes (`opentelemetry-proto` from PyPI,
//! tests/e2e/otlp/receiver.py), so a field or a type the OTLP schema does
//! not have fails the test.
//!
//! - each security-log line arrives as one log record whose body holds the
//!   line's fields, with the event's severity and `event.name`, the
//!   resource's `service.name` and `host.name`;
//! - a 503 is retried (and the recovery logged); a 400 drops the batch and
//!   says so; a collector whose certificate is from another CA gets nothing.
//!
//! Needs python3 with venv and pip (the receiver's venv is made once, in the
//! system's temporary directory, from tests/e2e/otlp/requirements.txt);
//! skips without them unless PALISADE_REQUIRE_SERVICES=1.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod gateway_common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gateway_common::{
    DEADLINE, Gateway, Pki, common::repo_root, get_id, log_test_config, log_test_dir, skip,
    stderr_has, wait_for,
};
use serde_json::{Value, json};

/// The receiver's Python, in a venv made from the requirements (once per
/// version of that file); None (skipped) when it cannot be made.
fn python(test: &str) -> Option<PathBuf> {
    let req = repo_root().join("tests/e2e/otlp/requirements.txt");
    let text = std::fs::read(&req).unwrap();
    let tag: u32 = text.iter().fold(2166136261u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(16777619)
    });
    let venv = std::env::temp_dir().join(format!("palisade-otlp-venv-{tag:08x}"));
    let py = venv.join("bin/python");
    let ready = |py: &Path| {
        Command::new(py)
            .args([
                "-c",
                "import opentelemetry.proto.collector.logs.v1.logs_service_pb2",
            ])
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready(&py) {
        return Some(py);
    }
    let tmp = venv.with_extension(format!("tmp{}", std::process::id()));
    let made = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&tmp)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(tmp.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&req)
            .status()
            .is_ok_and(|s| s.success());
    // a concurrent test may have made it meanwhile: either copy will do
    if made && std::fs::rename(&tmp, &venv).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if ready(&py) {
        Some(py)
    } else {
        skip(&format!(
            "{test}: cannot make the OTLP receiver's venv (python3 -m venv, pip install -r {})",
            req.display()
        ));
        None
    }
}

/// The receiver; killed on drop.
struct Receiver {
    child: Child,
    out: PathBuf,
    port: u16,
}

impl Receiver {
    fn start(py: &Path, dir: &Path, name: &str, args: &[&str]) -> Receiver {
        let out = dir.join(format!("{name}.jsonl"));
        let portfile = dir.join(format!("{name}.port"));
        let mut child = Command::new(py)
            .arg(repo_root().join("tests/e2e/otlp/receiver.py"))
            .arg(dir.join("server.pem"))
            .arg(dir.join("server.key"))
            .arg(&out)
            .arg(&portfile)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join(format!("{name}.err"))).unwrap(),
            ))
            .spawn()
            .expect("start the OTLP receiver");
        let deadline = Instant::now() + DEADLINE;
        let port = loop {
            if let Some(st) = child.try_wait().unwrap() {
                panic!(
                    "the OTLP receiver exited ({st}): {}",
                    std::fs::read_to_string(dir.join(format!("{name}.err"))).unwrap_or_default()
                );
            }
            if let Some(p) = std::fs::read_to_string(&portfile)
                .ok()
                .and_then(|s| s.trim().parse::<u16>().ok())
            {
                break p;
            }
            assert!(Instant::now() < deadline, "the OTLP receiver did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        Receiver { child, out, port }
    }

    /// Every line it wrote; a body it could not parse fails the test.
    fn lines(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if let Some(e) = lines.iter().find(|l| l.get("error").is_some()) {
            panic!("the receiver could not parse an export: {e}");
        }
        lines
    }

    /// The record whose body has `request_id` (or `http.request.id`) `id`.
    async fn record(&self, id: &str) -> Value {
        wait_for(
            &format!("OTLP record of {id}"),
            Duration::from_secs(15),
            || async {
                self.lines().into_iter().find(|l| {
                    l.get("record")
                        .is_some_and(|r| body(r).get("request_id") == Some(&json!(id)))
                })
            },
        )
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An OTLP AnyValue (as protobuf's MessageToDict writes it) back to JSON.
fn plain(v: &Value) -> Value {
    if let Some(kv) = v.get("kvlistValue") {
        let mut m = serde_json::Map::new();
        for e in kv["values"].as_array().cloned().unwrap_or_default() {
            m.insert(e["key"].as_str().unwrap().to_string(), plain(&e["value"]));
        }
        return Value::Object(m);
    }
    if let Some(a) = v.get("arrayValue") {
        return Value::Array(
            a["values"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(plain)
                .collect(),
        );
    }
    if let Some(s) = v.get("stringValue") {
        return s.clone();
    }
    if let Some(i) = v.get("intValue") {
        return json!(i.as_str().unwrap().parse::<i64>().unwrap());
    }
    if let Some(d) = v.get("doubleValue") {
        return d.clone();
    }
    if let Some(b) = v.get("boolValue") {
        return b.clone();
    }
    // MessageToDict leaves out a field at its default: "" and false
    Value::Null
}

fn body(record: &Value) -> Value {
    plain(&record["body"])
}

/// A gateway exporting to `https://localhost:{port}/v1/logs`
/// ([`log_test_config`]), trusting `ca`, with `extra` lines in `[otlp]`.
fn config(port: u16, ca: &str, extra: &str) -> String {
    log_test_config(
        "",
        &format!(
            "[otlp]\nendpoint = \"https://localhost:{port}/v1/logs\"\nca_file = \"{ca}\"\nhostname = \"gw-test-1\"\ntimeout_ms = 3000\n{extra}"
        ),
    )
}

#[tokio::test]
async fn security_events_reach_an_otlp_receiver_over_mutual_tls() {
    let Some(py) = python("security_events_reach_an_otlp_receiver_over_mutual_tls") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let _pki = log_test_dir(dir.path());
    let ca = dir.path().join("ca.pem").display().to_string();
    // the first export is answered 503: it must come again
    let rx = Receiver::start(
        &py,
        dir.path(),
        "rx",
        &["--client-ca", &ca, "--fail-first", "1"],
    );
    let cfg = dir.path().join("gw.toml");
    std::fs::write(
        &cfg,
        config(
            rx.port,
            "ca.pem",
            "client_cert_file = \"client.pem\"\nclient_key_file = \"client.key\"\nservice_name = \"edge-gateway\"",
        ),
    )
    .unwrap();
    let gw = Gateway::start(&cfg, "gw").await;
    let (status, allowed) = get_id(&gw, "/only/x").await;
    assert_eq!(status, 200);
    let (status, denied) = get_id(&gw, "/nothing").await;
    assert_eq!(status, 404);

    for (id, number, text) in [
        (&allowed, "SEVERITY_NUMBER_INFO", "INFO"),
        (&denied, "SEVERITY_NUMBER_WARN", "WARN"),
    ] {
        let l = rx.record(id).await;
        let r = &l["record"];
        // the record's body is the stdout line, field for field
        assert_eq!(body(r), gw.record(id).await, "{l}");
        assert_eq!(r["severityNumber"], number, "{l}");
        assert_eq!(r["severityText"], text);
        assert_eq!(
            r["attributes"],
            json!([{"key": "event.name", "value": {"stringValue": "request"}}])
        );
        assert!(
            r["timeUnixNano"].as_str().unwrap().parse::<u64>().unwrap() > 1_700_000_000_000_000_000
        );
        assert_eq!(l["scope"], "palisade.security");
        assert_eq!(
            l["resource"]["attributes"],
            json!([
                {"key": "service.name", "value": {"stringValue": "edge-gateway"}},
                {"key": "host.name", "value": {"stringValue": "gw-test-1"}},
            ])
        );
    }
    // the 503 was answered, retried and the recovery logged
    assert!(rx.lines().iter().any(|l| l["answered"] == 503));
    stderr_has(
        &gw,
        &[
            "OTLP export failed; retrying",
            "HTTP 503",
            "OTLP collector reachable again",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_refused_batch_is_dropped_and_an_untrusted_collector_gets_nothing() {
    let Some(py) = python("a_refused_batch_is_dropped_and_an_untrusted_collector_gets_nothing")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let _pki = log_test_dir(dir.path());

    // 400: not retried, dropped and logged
    let rx = Receiver::start(&py, dir.path(), "rejecting", &["--reject"]);
    let cfg = dir.path().join("rejected.toml");
    std::fs::write(&cfg, config(rx.port, "ca.pem", "")).unwrap();
    let gw = Gateway::start(&cfg, "rejected").await;
    get_id(&gw, "/nothing/rejected").await;
    stderr_has(
        &gw,
        &["the OTLP collector refused a batch; dropped", "HTTP 400"],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answered = rx.lines().iter().filter(|l| l["answered"] == 400).count();
    assert_eq!(answered, 1, "a refused batch is never sent again");

    // another CA: the TLS handshake fails, nothing arrives
    let good = Receiver::start(&py, dir.path(), "good", &[]);
    let other = tempfile::tempdir().unwrap();
    let _ = Pki::new(other.path());
    std::fs::copy(other.path().join("ca.pem"), dir.path().join("other-ca.pem")).unwrap();
    let cfg = dir.path().join("untrusting.toml");
    std::fs::write(&cfg, config(good.port, "other-ca.pem", "")).unwrap();
    let gw2 = Gateway::start(&cfg, "untrusting").await;
    let (_, id) = get_id(&gw2, "/nothing/untrusted").await;
    stderr_has(
        &gw2,
        &["OTLP export failed; retrying", "invalid peer certificate"],
    )
    .await;
    assert!(
        !std::fs::read_to_string(&good.out)
            .unwrap_or_default()
            .contains(&id),
        "a collector the gateway does not trust got a record"
    );
}

/// The gateway's resident memory (kB).
fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Review of 2026-12-06: `Retry-After: 0` made a busy loop (91,956 exports
/// in 3 s), and a 200 whose body never ends was read into memory (2.7 GB in
/// 10 s).
#[tokio::test]
async fn a_collector_cannot_make_the_exporter_spin_or_fill_memory() {
    let Some(py) = python("a_collector_cannot_make_the_exporter_spin_or_fill_memory") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let _pki = log_test_dir(dir.path());

    let rx = Receiver::start(&py, dir.path(), "zero", &["--retry-after-zero"]);
    let cfg = dir.path().join("zero.toml");
    std::fs::write(&cfg, config(rx.port, "ca.pem", "")).unwrap();
    let gw = Gateway::start(&cfg, "zero").await;
    get_id(&gw, "/nothing/zero").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tries = rx.lines().iter().filter(|l| l["answered"] == 503).count();
    assert!((1..=10).contains(&tries), "{tries} exports in 2 s");
    drop(gw);

    let rx = Receiver::start(&py, dir.path(), "endless", &["--endless-first"]);
    let cfg = dir.path().join("endless.toml");
    std::fs::write(&cfg, config(rx.port, "ca.pem", "")).unwrap();
    let gw = Gateway::start(&cfg, "endless").await;
    let before = rss_kb(gw.pid());
    get_id(&gw, "/nothing/first").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let grown = rss_kb(gw.pid()).saturating_sub(before);
    assert!(grown < 100 * 1024, "the gateway grew by {grown} kB");
    // and the next batch goes out
    let (_, id) = get_id(&gw, "/nothing/second").await;
    rx.record(&id).await;
}
