//! The gateway's security events to a SIEM: a real `palisade gateway`
//! sending RFC 5424 syslog over TLS (RFC 5425) to a real rsyslog (Debian's
//! rsyslogd with its GnuTLS driver, `rsyslog-gnutls`), which writes each
//! message it parsed, field by field, as a JSON line.
//!
//! - every security-log line on stdout (requests, a reload) arrives as one
//!   message whose MSG is exactly that line, with the PRI, MSGID, HOSTNAME
//!   and PROCID of the event, over mutual TLS (rsyslog `x509/name` accepts
//!   only the gateway's client certificate), including a record over
//!   rsyslog's default 8 KiB message size;
//! - a reload that changes `[syslog]` is refused;
//! - a receiver that is down at first gets the lines once it is up;
//! - a receiver whose certificate is not from `ca_file` gets nothing.
//!
//! Skips without `rsyslogd` (apt-get install rsyslog rsyslog-gnutls) unless
//! PALISADE_REQUIRE_SERVICES=1.
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
    DEADLINE, Gateway, Pki, get_id, log_test_config, log_test_dir, plain_client, skip, stderr_has,
    wait_for,
};
use serde_json::Value;

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

fn rsyslogd(test: &str) -> bool {
    if Path::new(RSYSLOGD).exists() {
        return true;
    }
    skip(&format!(
        "{test}: no {RSYSLOGD} (apt-get install rsyslog rsyslog-gnutls)"
    ));
    false
}

/// rsyslogd in the foreground, TLS only, writing what it parsed into
/// `messages.jsonl`; stopped on drop.
struct Rsyslog {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Rsyslog {
    /// `auth`: `anon` or `x509/name` (then only the CN `palisade-client`).
    /// `port` 0 picks one. Certificates: `dir`'s server.pem, server.key, ca.pem.
    fn start(dir: &Path, name: &str, auth: &str, port: u16) -> Rsyslog {
        Self::start_with(dir, name, auth, port, "64k", "palisade-client")
    }

    /// With rsyslog's `maxMessageSize` and the one peer `x509/name` permits.
    fn start_with(
        dir: &Path,
        name: &str,
        auth: &str,
        port: u16,
        max_message: &str,
        peer: &str,
    ) -> Rsyslog {
        let d = dir.join(name);
        std::fs::create_dir_all(d.join("work")).unwrap();
        let permitted = if auth == "x509/name" {
            format!(r#"permittedPeer=["{peer}"]"#)
        } else {
            String::new()
        };
        let p = |f: &str| dir.join(f).display().to_string();
        let conf = format!(
            r#"global(
  workDirectory="{work}"
  maxMessageSize="{max_message}"
  processInternalMessages="on"
  abortOnUncleanConfig="on"
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile="{ca}"
  defaultNetstreamDriverCertFile="{cert}"
  defaultNetstreamDriverKeyFile="{key}"
)
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1"
  streamDriver.authMode="{auth}" {permitted} gnutlsPriorityString="NORMAL")
template(name="fields" type="list" option.jsonf="on") {{
  property(outname="pri" name="pri" format="jsonf")
  property(outname="version" name="protocol-version" format="jsonf")
  property(outname="timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="app_name" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="structured_data" name="structured-data" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
}}
ruleset(name="tls_in") {{
  action(type="omfile" file="{out}" template="fields")
}}
input(type="imtcp" address="127.0.0.1" port="{port}" listenPortFileName="{portfile}" ruleset="tls_in")
action(type="omfile" file="{internal}")
"#,
            work = d.join("work").display(),
            ca = p("ca.pem"),
            cert = p("server.pem"),
            key = p("server.key"),
            out = d.join("messages.jsonl").display(),
            portfile = d.join("port").display(),
            internal = d.join("internal.log").display(),
        );
        std::fs::write(d.join("rsyslog.conf"), conf).unwrap();
        let mut child = Command::new(RSYSLOGD)
            .arg("-n")
            .arg("-f")
            .arg(d.join("rsyslog.conf"))
            .arg("-i")
            .arg(d.join("work/rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(
                std::fs::File::create(d.join("stdout")).unwrap(),
            ))
            .stderr(Stdio::from(
                std::fs::File::create(d.join("stderr")).unwrap(),
            ))
            .spawn()
            .expect("spawn rsyslogd");
        // the port file is written when it binds (generating its DH
        // parameters first can take a second)
        let deadline = Instant::now() + DEADLINE;
        let port = loop {
            if let Some(st) = child.try_wait().unwrap() {
                panic!(
                    "rsyslogd exited ({st}): {}",
                    std::fs::read_to_string(d.join("stderr")).unwrap_or_default()
                );
            }
            // rsyslog writes the port file only for a port it picked
            if port != 0 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break port;
                }
            } else if let Some(p) = std::fs::read_to_string(d.join("port"))
                .ok()
                .and_then(|s| s.trim().parse::<u16>().ok())
            {
                break p;
            }
            assert!(Instant::now() < deadline, "rsyslogd did not start");
            std::thread::sleep(Duration::from_millis(10));
        };
        // listen() follows the port file by about a millisecond
        std::thread::sleep(Duration::from_millis(50));
        Rsyslog {
            child,
            dir: d,
            port,
        }
    }

    /// What rsyslog wrote so far, one object per message; a line that is
    /// not JSON fails the test (a broken frame would make one).
    fn messages(&self) -> Vec<Value> {
        let bytes = std::fs::read(self.dir.join("messages.jsonl")).unwrap_or_default();
        bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_slice(l).unwrap_or_else(|e| {
                    panic!(
                        "rsyslog wrote a line that is not JSON ({e}): {}",
                        String::from_utf8_lossy(l)
                    )
                })
            })
            .collect()
    }

    fn internal(&self) -> String {
        std::fs::read_to_string(self.dir.join("internal.log")).unwrap_or_default()
    }

    /// The message whose MSG holds `needle`, polled for at most 10 s.
    async fn message_with(&self, needle: &str) -> Value {
        wait_for(
            &format!("rsyslog message with {needle}"),
            Duration::from_secs(10),
            || async {
                self.messages()
                    .into_iter()
                    .find(|m| m["msg"].as_str().is_some_and(|s| s.contains(needle)))
            },
        )
        .await
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// A gateway sending to syslog at `port` ([`log_test_config`]), trusting
/// `ca`, with `extra` lines in `[syslog]`.
fn config(port: u16, ca: &str, extra: &str) -> String {
    log_test_config(
        "",
        &format!(
            "[syslog]\naddress = \"127.0.0.1:{port}\"\nserver_name = \"localhost\"\nca_file = \"{ca}\"\nhostname = \"gw-test-1\"\n{extra}"
        ),
    )
}

/// The gateway's stdout line that holds `needle`.
fn stdout_line(gw: &Gateway, needle: &str) -> String {
    gw.security_log();
    gw.stdout()
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no security-log line with {needle}"))
        .to_string()
}

#[tokio::test]
async fn security_events_reach_rsyslog_over_mutual_tls() {
    if !rsyslogd("security_events_reach_rsyslog_over_mutual_tls") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _pki = log_test_dir(dir.path());
    let rs = Rsyslog::start(dir.path(), "rs", "x509/name", 0);
    let cfg = dir.path().join("gw.toml");
    let text = config(
        rs.port,
        "ca.pem",
        "client_cert_file = \"client.pem\"\nclient_key_file = \"client.key\"\nfacility = \"authpriv\"",
    );
    std::fs::write(&cfg, &text).unwrap();
    let gw = Gateway::start(&cfg, "gw").await;

    let (status, allowed) = get_id(&gw, "/only/x").await;
    assert_eq!(status, 200);
    let (status, denied) = get_id(&gw, "/nothing").await;
    assert_eq!(status, 404);

    for (id, pri) in [(&allowed, "86"), (&denied, "84")] {
        let m = rs.message_with(id).await;
        // exactly the stdout line, parsed as RFC 5424 by rsyslog
        assert_eq!(m["msg"], stdout_line(&gw, id), "{m}");
        assert_eq!(m["pri"], pri, "authpriv (10) * 8 + severity: {m}");
        assert_eq!(m["version"], "1");
        assert_eq!(m["hostname"], "gw-test-1");
        assert_eq!(m["app_name"], "palisade-gateway");
        assert_eq!(m["procid"], gw.pid().to_string());
        assert_eq!(m["msgid"], "request");
        assert_eq!(m["structured_data"], "-");
    }

    // a reload with the same [syslog] is applied (a notice) ...
    gw.signal("HUP");
    let m = rs.message_with("config_reload").await;
    assert_eq!(
        (m["msgid"].as_str(), m["pri"].as_str()),
        (Some("reload"), Some("85")),
        "{m}"
    );
    assert!(
        m["msg"].as_str().unwrap().contains(r#""result":"ok""#),
        "{m}"
    );
    // ... one that changes it is refused (an error), and changes nothing
    std::fs::write(
        &cfg,
        text.replace("hostname = \"gw-test-1\"", "hostname = \"other\""),
    )
    .unwrap();
    gw.signal("HUP");
    let refused = wait_for("refused reload", Duration::from_secs(10), || async {
        rs.messages().into_iter().find(|m| {
            m["msg"]
                .as_str()
                .is_some_and(|s| s.contains(r#""result":"refused""#))
        })
    })
    .await;
    assert_eq!(
        (refused["msgid"].as_str(), refused["pri"].as_str()),
        (Some("reload"), Some("83"))
    );
    assert_eq!(refused["hostname"], "gw-test-1");
    assert!(
        gw.stderr().contains("changing [syslog] needs a restart"),
        "{}",
        gw.stderr()
    );
    let (_, after) = get_id(&gw, "/nothing/after").await;
    assert_eq!(rs.message_with(&after).await["hostname"], "gw-test-1");
    // nothing rsyslog refused or cut
    let internal = rs.internal();
    assert!(!internal.contains("oversize"), "{internal}");
    assert!(!internal.contains("not authorized"), "{internal}");
}

#[tokio::test]
async fn a_late_receiver_gets_the_lines_and_an_untrusted_one_gets_none() {
    if !rsyslogd("a_late_receiver_gets_the_lines_and_an_untrusted_one_gets_none") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _pki = log_test_dir(dir.path());

    // the receiver is down: the line waits, and goes when it is up
    let port = gateway_common::common::free_port();
    let cfg = dir.path().join("late.toml");
    std::fs::write(&cfg, config(port, "ca.pem", "")).unwrap();
    let gw = Gateway::start(&cfg, "late").await;
    let (_, early) = get_id(&gw, "/nothing/early").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        gw.stderr().contains("syslog receiver unreachable"),
        "{}",
        gw.stderr()
    );
    let rs = Rsyslog::start(dir.path(), "late-rs", "anon", port);
    let m = rs.message_with(&early).await;
    assert_eq!(m["msg"], stdout_line(&gw, &early));
    wait_for("recovery logged", Duration::from_secs(5), || async {
        gw.stderr()
            .contains("syslog receiver reachable again")
            .then_some(())
    })
    .await;
    // the receiver restarts: the closed connection is noticed before the
    // next line goes into it (review of 2026-12-06: a line sent after a
    // restart was lost, counted as sent)
    drop(rs);
    let rs = Rsyslog::start(dir.path(), "late-rs-2", "anon", port);
    let (_, after_restart) = get_id(&gw, "/nothing/after-restart").await;
    let m = rs.message_with(&after_restart).await;
    assert_eq!(m["msg"], stdout_line(&gw, &after_restart));

    // a gateway trusting another CA refuses rsyslog's certificate: nothing
    // is sent, and the refusal is in its log
    let other = tempfile::tempdir().unwrap();
    let _ = Pki::new(other.path());
    std::fs::copy(other.path().join("ca.pem"), dir.path().join("other-ca.pem")).unwrap();
    let cfg = dir.path().join("untrusting.toml");
    std::fs::write(&cfg, config(rs.port, "other-ca.pem", "")).unwrap();
    let gw2 = Gateway::start(&cfg, "untrusting").await;
    let (_, id) = get_id(&gw2, "/nothing/untrusted").await;
    stderr_has(
        &gw2,
        &["syslog receiver unreachable", "invalid peer certificate"],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !rs.messages()
            .iter()
            .any(|m| m["msg"].as_str().is_some_and(|s| s.contains(&id))),
        "a receiver the gateway does not trust got a line"
    );
}

/// A receiver that cuts a long message parses the rest as a message of its
/// own: a request that made a long line could forge a record (review of
/// 2026-12-06: a path carrying `<10>1 ... dc01.corp sshd ...` became an
/// sshd record at rsyslog). Lines are shrunk to `max_message_bytes`, so
/// rsyslog at 2 KiB never cuts one, in either log format.
#[tokio::test]
async fn no_request_can_forge_a_syslog_record() {
    if !rsyslogd("no_request_can_forge_a_syslog_record") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _pki = log_test_dir(dir.path());
    let rs = Rsyslog::start_with(dir.path(), "rs", "anon", 0, "2k", "");
    let cfg = dir.path().join("gw.toml");
    let text = format!(
        "log_format = \"ecs\"\n{}",
        config(rs.port, "ca.pem", "max_message_bytes = 2048")
    );
    std::fs::write(&cfg, text).unwrap();
    let gw = Gateway::start(&cfg, "gw").await;
    let forged = "%3C10%3E1%202026-12-06T03:00:00Z%20dc01.corp%20sshd%204242%20auth%20-%20Accepted%20password%20for%20root";
    let mut ids = Vec::new();
    for n in (860..=910).step_by(5) {
        let (_, id) = get_id(&gw, &format!("/nothing/a{}{forged}", "%22".repeat(n))).await;
        ids.push(id);
    }
    // a long method (ECS's http.request.method)
    for n in [1500, 1800, 7600] {
        let method = reqwest::Method::from_bytes("X".repeat(n).as_bytes()).unwrap();
        let r = plain_client()
            .request(method, format!("http://{}/nothing/m", gw.addr("plain")))
            .send()
            .await
            .unwrap();
        ids.push(r.headers()["x-request-id"].to_str().unwrap().to_string());
    }
    for id in &ids {
        let m = rs.message_with(id).await;
        let doc: Value = serde_json::from_str(m["msg"].as_str().unwrap()).unwrap();
        assert_eq!(doc["http"]["request"]["id"], id.as_str());
    }
    let all = rs.messages();
    for m in &all {
        assert_eq!(
            (
                m["version"].as_str(),
                m["hostname"].as_str(),
                m["app_name"].as_str()
            ),
            (Some("1"), Some("gw-test-1"), Some("palisade-gateway")),
            "a message the gateway did not write: {m}"
        );
    }
    assert_eq!(all.len(), ids.len(), "one message per request");
    assert!(!rs.internal().contains("oversize"), "{}", rs.internal());
}

/// With TLS 1.3 a receiver refuses the client certificate after the
/// handshake: the refusal is seen at once and said, nothing is counted as
/// sent, and the receiver is never called reachable (review of 2026-12-06:
/// every line was lost, counted as sent, with "reachable again" logged).
#[tokio::test]
async fn a_receiver_refusing_the_client_certificate_is_reported() {
    if !rsyslogd("a_receiver_refusing_the_client_certificate_is_reported") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _pki = log_test_dir(dir.path());
    let rs = Rsyslog::start_with(dir.path(), "rs", "x509/name", 0, "64k", "someone-else");
    let cfg = dir.path().join("gw.toml");
    std::fs::write(
        &cfg,
        config(
            rs.port,
            "ca.pem",
            "client_cert_file = \"client.pem\"\nclient_key_file = \"client.key\"",
        ),
    )
    .unwrap();
    let gw = Gateway::start(&cfg, "gw").await;
    for i in 0..3 {
        get_id(&gw, &format!("/nothing/{i}")).await;
    }
    stderr_has(&gw, &["right after the TLS handshake"]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rs.messages().is_empty());
    assert!(!gw.stderr().contains("reachable again"), "{}", gw.stderr());
    let metrics = plain_client()
        .get(format!("http://{}/metrics", gw.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("palisade_gateway_syslog_sent_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
}
