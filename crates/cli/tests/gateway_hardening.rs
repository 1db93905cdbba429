//! Request hardening of a real `palisade gateway` process, probed with raw
//! sockets (a `dangerous_plaintext` listener, so the bytes on the wire are
//! exactly the test's) and raw TLS (tokio-rustls), in front of the Express
//! service. Limits: header_timeout_ms = 1000, max_body_bytes = 1024,
//! max_headers = 20, max_header_bytes = 8192.
//!
//! - slowloris: headers one byte per 200 ms -> the gateway closes the
//!   connection once the 1 s header deadline passes, while a normal request
//!   on another connection is served meanwhile; a TLS client that never
//!   sends its ClientHello is dropped after the same deadline;
//! - smuggling: Content-Length + Transfer-Encoding (either order, and over
//!   TLS) -> framed by the chunked encoding alone (hyper drops the
//!   Content-Length, as RFC 9112 §6.1 allows), one response, then the
//!   connection is closed: the smuggled request behind the body is never
//!   parsed; an obfuscated Transfer-Encoding beside a Content-Length, or two
//!   different Content-Lengths -> 400 + close; an obs-fold header line -> 400;
//! - body: Content-Length over max_body_bytes -> 413 `payload_too_large`; a
//!   chunked body that grows over it while streaming -> 413;
//! - paths: `/orders/%2e%2e/admin` is normalised to `/admin` before routing
//!   and reaches the `admin` route (the service sees `/admin`);
//!   `/orders/%2Fadmin` -> 400 `invalid_path`;
//! - 30 headers, or 20 KiB of one header -> 431 `request_header_fields_too_large`
//!   from the gateway's responder, with a security-log line (hyper's own limits
//!   sit at four times the configured ones); past those, hyper's bare 4xx; the
//!   gateway keeps serving; `max_header_bytes` under 8192 (which hyper's
//!   HTTP/1 buffer cannot enforce) is a config error;
//! - after all probes the admin /healthz answers 200 and the process runs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod gateway_common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gateway_common::{Gateway, Pki, RawReply, Upstream, plain_client, raw_plain, send};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HEADER_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long a probe waits for the gateway to close a connection it should close.
const CLOSE_LIMIT: Duration = Duration::from_secs(5);

const POLICIES: &str = r#"
@id("anonymous")
permit(principal == Anonymous::"anonymous", action, resource);
"#;

fn config(upstream_port: u16) -> String {
    format!(
        r#"[[listeners]]
name = "plain"
address = "127.0.0.1:0"
protocol = "http"
dangerous_plaintext = true

[[listeners]]
name = "tls"
address = "127.0.0.1:0"
certificates = [{{ cert_file = "server.pem", key_file = "server.key" }}]

[admin]
address = "127.0.0.1:0"

[limits]
header_timeout_ms = {}
max_body_bytes = 1024
max_headers = 20
max_header_bytes = 8192
send_timeout_ms = 1000

[[upstreams]]
name = "app"
endpoints = ["127.0.0.1:{upstream_port}"]

[authorization]
policy_file = "policies.cedar"

[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "app"
anonymous = true

[[routes]]
name = "admin"
path_prefix = "/admin"
upstream = "app"
anonymous = true
"#,
        HEADER_TIMEOUT.as_millis()
    )
}

/// The JSON body of a raw HTTP/1.1 response (after the blank line).
fn body_json(r: &RawReply) -> Value {
    let body = r
        .text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("body is not JSON ({e}): {r:?}"))
}

fn header<'a>(r: &'a RawReply, name: &str) -> Option<&'a str> {
    let head = r.text.split_once("\r\n\r\n").map(|(h, _)| h)?;
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A rejected request: `status`, the connection closed by the gateway, and
/// exactly one response on it (nothing smuggled behind it was answered).
fn assert_rejected_and_closed(r: &RawReply, status: u16, what: &str) {
    assert_eq!(r.status(), Some(status), "{what}: {r:?}");
    assert!(
        r.closed,
        "{what}: the gateway kept the connection open: {r:?}"
    );
    assert_eq!(
        r.text.matches("HTTP/1.1 ").count(),
        1,
        "{what}: more than one response: {r:?}"
    );
}

/// A request that was answered (200) exactly once, after which the gateway
/// closed the connection.
fn assert_answered_once_and_closed(r: &RawReply, what: &str) {
    assert_eq!(r.status(), Some(200), "{what}: {r:?}");
    assert!(
        r.closed,
        "{what}: the gateway kept the connection open: {r:?}"
    );
    assert_eq!(
        r.text.matches("HTTP/1.1 ").count(),
        1,
        "{what}: more than one response: {r:?}"
    );
    assert_eq!(header(r, "connection"), Some("close"), "{what}: {r:?}");
}

/// Headers one byte per 200 ms; returns when the gateway closes the
/// connection: (time to close, what it sent).
async fn slowloris(addr: SocketAddr) -> (Duration, Vec<u8>) {
    let head = b"GET /orders/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let t0 = Instant::now();
    let (mut rd, mut wr) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let _ = rd.read_to_end(&mut got).await; // EOF or reset: closed either way
        (t0.elapsed(), got)
    });
    for b in head.iter() {
        if reader.is_finished() || wr.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        t0.elapsed() < head.len() as u32 * Duration::from_millis(200),
        "sent the whole head without being cut off"
    );
    tokio::time::timeout(CLOSE_LIMIT, reader)
        .await
        .expect("closed")
        .expect("reader")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_hardening() {
    if !gateway_common::node_ready("gateway_hardening") {
        return;
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let pki = Pki::new(dir);
    std::fs::write(dir.join("policies.cedar"), POLICIES).unwrap();
    let upstream = Upstream::start(dir);
    let cfg = dir.join("gateway.toml");
    std::fs::write(&cfg, config(upstream.port)).unwrap();
    let mut gw = Gateway::start(&cfg, "gateway").await;
    let plain = gw.addr("plain");
    let tls = gw.addr("tls");
    let c = plain_client();

    // --- slowloris, with a normal request served meanwhile
    let slow = tokio::spawn(slowloris(plain));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let during = send(c.get(format!("http://{plain}/orders/meanwhile"))).await;
    assert_eq!(
        during.status, 200,
        "a normal request during the slowloris: {during:?}"
    );
    let (closed_after, got) = slow.await.expect("slowloris task");
    eprintln!(
        "slowloris connection closed after {closed_after:?}; the gateway sent {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        closed_after >= HEADER_TIMEOUT - Duration::from_millis(100)
            && closed_after < HEADER_TIMEOUT + Duration::from_secs(2),
        "closed after {closed_after:?}, header timeout {HEADER_TIMEOUT:?}"
    );
    let got = String::from_utf8_lossy(&got);
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 408"), "{got:?}");

    // --- TLS: a client that never sends its ClientHello is dropped after the deadline
    let mut idle = tokio::net::TcpStream::connect(tls)
        .await
        .expect("connect tls");
    let t0 = Instant::now();
    let mut sink = Vec::new();
    let n = tokio::time::timeout(CLOSE_LIMIT, idle.read_to_end(&mut sink))
        .await
        .expect("stalled handshake closed")
        .unwrap_or(0);
    let stalled = t0.elapsed();
    assert_eq!(n, 0, "nothing is sent to a client that never said hello");
    assert!(
        stalled >= HEADER_TIMEOUT - Duration::from_millis(100),
        "closed too early: {stalled:?}"
    );

    // --- records a client sends before its hello (a ChangeCipherSpec) are
    // refused with an alert, and an unauthenticated client cannot make the
    // gateway's own log grow with rustls warnings
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(tls)
            .await
            .expect("connect tls");
        s.write_all(&[0x14, 0x03, 0x03, 0x00, 0x01, 0x01])
            .await
            .expect("send ccs");
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(CLOSE_LIMIT, s.read_to_end(&mut answer)).await;
        assert_eq!(answer.first(), Some(&0x15), "an alert: {answer:?}");
    }
    let rustls_lines = gw
        .stderr()
        .lines()
        .filter(|l| l.contains("\"target\":\"rustls"))
        .count();
    assert_eq!(rustls_lines, 0, "{}", gw.stderr());

    // --- smuggling: CL + TE, both orders. hyper parses the request by
    // Transfer-Encoding alone and drops Content-Length before the gateway
    // sees the headers (RFC 9112 §6.1 allows this instead of a 400), then
    // closes the connection after the one response: the bytes behind the
    // chunked body are never read as a second request.
    let smuggled = |first: &str, second: &str| {
        format!(
            "POST /orders/x HTTP/1.1\r\nHost: a\r\n{first}\r\n{second}\r\n\r\n0\r\n\r\nGET /admin/smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
        )
    };
    for (what, req) in [
        (
            "CL then TE",
            smuggled("Content-Length: 6", "Transfer-Encoding: chunked"),
        ),
        (
            "TE then CL",
            smuggled("Transfer-Encoding: chunked", "Content-Length: 6"),
        ),
    ] {
        let r = raw_plain(plain, req.as_bytes(), CLOSE_LIMIT).await;
        assert_answered_once_and_closed(&r, what);
        let echo = body_json(&r);
        assert_eq!(echo["path"], "/orders/x", "{what}: {echo}");
        assert_eq!(
            echo["body_bytes"], 0,
            "{what}: framed by the chunked encoding: {echo}"
        );
        assert!(
            echo["headers"].get("content-length").is_none(),
            "{what}: Content-Length forwarded: {echo}"
        );
    }
    // ... and over TLS
    let mut s = gateway_common::tls_connect(tls, "localhost", &pki.ca_pem, None)
        .await
        .expect("TLS handshake");
    let r = gateway_common::raw_exchange(
        &mut s,
        smuggled("Content-Length: 6", "Transfer-Encoding: chunked").as_bytes(),
        CLOSE_LIMIT,
    )
    .await;
    assert_answered_once_and_closed(&r, "CL + TE over TLS");
    assert!(header(&r, "strict-transport-security").is_some(), "{r:?}");
    // obfuscated Transfer-Encoding next to a Content-Length (the TE.CL
    // desync variants): refused with 400 and closed
    for te in [
        "Transfer-Encoding: xchunked",
        "Transfer-Encoding: chunked, identity",
        "Transfer-Encoding : chunked",
        "Transfer-Encoding:\tchunked\r\nTransfer-Encoding: identity",
    ] {
        let r = raw_plain(
            plain,
            smuggled("Content-Length: 6", te).as_bytes(),
            CLOSE_LIMIT,
        )
        .await;
        assert_rejected_and_closed(&r, 400, te);
    }
    assert!(
        !gw.security_log()
            .iter()
            .any(|rec| rec["path"].as_str().is_some_and(|p| p.contains("smuggled"))),
        "a smuggled request reached the pipeline"
    );

    // two different Content-Length values (hyper refuses them itself)
    let r = raw_plain(plain, b"POST /orders/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", CLOSE_LIMIT).await;
    assert_rejected_and_closed(&r, 400, "two Content-Lengths");
    // obs-fold (a header continued on the next line)
    let r = raw_plain(
        plain,
        b"GET /orders/x HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
        CLOSE_LIMIT,
    )
    .await;
    assert_eq!(r.status(), Some(400), "obs-fold: {r:?}");

    // --- body size
    let big = "x".repeat(2048);
    let r = raw_plain(
        plain,
        format!(
            "POST /orders/x HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{big}",
            big.len()
        )
        .as_bytes(),
        CLOSE_LIMIT,
    )
    .await;
    assert_eq!(r.status(), Some(413), "{r:?}");
    assert_eq!(body_json(&r)["error"]["code"], "payload_too_large");
    let chunks = "200\r\n".to_string() + &"y".repeat(512) + "\r\n";
    let r = raw_plain(
        plain,
        format!(
            "POST /orders/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n",
            chunks.repeat(4)
        )
        .as_bytes(),
        CLOSE_LIMIT,
    )
    .await;
    assert_eq!(r.status(), Some(413), "chunked body over the limit: {r:?}");
    assert_eq!(body_json(&r)["error"]["code"], "payload_too_large");
    // under the limit: served
    let r = send(
        c.post(format!("http://{plain}/orders/x"))
            .body("z".repeat(1000)),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["body_bytes"], 1000);

    // --- path normalisation before routing
    let r = raw_plain(
        plain,
        b"GET /orders/%2e%2e/admin HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        CLOSE_LIMIT,
    )
    .await;
    assert_eq!(r.status(), Some(200), "{r:?}");
    assert_eq!(
        body_json(&r)["path"],
        "/admin",
        "the service sees the normalised path: {r:?}"
    );
    let id = header(&r, "x-request-id")
        .expect("x-request-id")
        .to_string();
    let rec = gw.record(&id).await;
    assert_eq!(
        rec["route"], "admin",
        "routed by the normalised path: {rec}"
    );
    assert_eq!(rec["path"], "/admin", "{rec}");
    let r = raw_plain(
        plain,
        b"GET /orders/%2Fadmin HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        CLOSE_LIMIT,
    )
    .await;
    assert_eq!(r.status(), Some(400), "{r:?}");
    assert_eq!(body_json(&r)["error"]["code"], "invalid_path");
    let rec = gw
        .record(header(&r, "x-request-id").expect("x-request-id"))
        .await;
    assert_eq!(rec["category"], "malformed_request", "{rec}");
    assert_eq!(rec["reason"], "encoded slash in path", "{rec}");

    // --- header count and size
    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = raw_plain(
        plain,
        format!("GET /orders/x HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes(),
        CLOSE_LIMIT,
    )
    .await;
    assert_eq!(r.status(), Some(431), "30 headers: {r:?}");
    assert_eq!(
        body_json(&r)["error"]["code"],
        "request_header_fields_too_large",
        "30 headers: {r:?}"
    );
    let huge = "h".repeat(20 * 1024);
    let r = raw_plain(
        plain,
        format!("GET /orders/x HTTP/1.1\r\nHost: a\r\nX-Huge: {huge}\r\n\r\n").as_bytes(),
        CLOSE_LIMIT,
    )
    .await;
    assert_eq!(r.status(), Some(431), "20 KiB header: {r:?}");
    let body = body_json(&r);
    assert_eq!(body["error"]["code"], "request_header_fields_too_large");
    // the refusal went through the responder: it has its security-log line
    let rec = gw
        .record(body["error"]["request_id"].as_str().unwrap())
        .await;
    assert_eq!(rec["status"], 431, "{rec}");
    assert_eq!(rec["category"], "malformed_request", "{rec}");
    // past hyper's outer bound (4x the limit), hyper answers alone
    let vast = "h".repeat(64 * 1024);
    let r = raw_plain(
        plain,
        format!("GET /orders/x HTTP/1.1\r\nHost: a\r\nX-Huge: {vast}\r\n\r\n").as_bytes(),
        CLOSE_LIMIT,
    )
    .await;
    assert!(
        r.status().is_some_and(|s| (400..500).contains(&s)) || r.closed,
        "64 KiB header: {r:?}"
    );

    // a configured header limit under hyper's 8 KiB HTTP/1 read buffer could
    // not be enforced, so config check refuses it rather than silently weaken it
    let low = dir.join("low-header-limit.toml");
    std::fs::write(
        &low,
        config(upstream.port).replace("max_header_bytes = 8192", "max_header_bytes = 4096"),
    )
    .unwrap();
    let (code, out, err) =
        gateway_common::palisade(&["config", "check", &low.display().to_string()], &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("limits: max_header_bytes >= 8192"), "{err}");

    // --- slow read: a client that asks for 32 MiB and stops reading is
    // disconnected after send_timeout_ms (1 s) instead of holding the
    // connection, its buffers and an upstream connection for ever: over TLS
    // and over the plaintext listener
    let tls_conn = gateway_common::tls_connect(tls, "localhost", &pki.ca_pem, None)
        .await
        .expect("TLS handshake");
    let got = slow_read(tls_conn).await;
    eprintln!("slow read over TLS: cut off after {got} bytes");
    let plain_conn = tokio::net::TcpStream::connect(plain)
        .await
        .expect("connect");
    let got = slow_read(plain_conn).await;
    eprintln!("slow read over plaintext: cut off after {got} bytes");

    // --- still up
    let r = send(c.get(format!("http://{plain}/orders/after"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    let h = send(c.get(format!("http://{}/healthz", gw.admin))).await;
    assert_eq!(h.status, 200, "{h:?}");
    assert!(gw.running(), "the gateway exited:\n{}", gw.stderr());
    gw.security_log(); // every line is JSON
    eprintln!("gateway_hardening: {:?}", started.elapsed());
}

/// Ask for 32 MiB, read nothing for 3 s, then read on: the gateway must have
/// closed the connection (send_timeout_ms = 1 s) before sending it all.
/// Returns the bytes that did arrive.
async fn slow_read<S>(mut s: S) -> usize
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    s.write_all(b"GET /orders/big?mb=32 HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stalled connection was kept open");
    assert!(got < 32 << 20, "all {got} bytes arrived: not cut off");
    got
}
