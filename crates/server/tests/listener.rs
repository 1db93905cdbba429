//! The server's listener under hostile clients: a slowloris head is cut at
//! the header deadline while an idle keep-alive connection lives until the
//! idle deadline; connections over the limit are closed at once; a body that
//! never arrives is answered 408; a plaintext listener does not speak HTTP/2
//! (no h2c); TLS answers carry Strict-Transport-Security.
//!
//! These tests drive real sockets, so their deadlines are real (short)
//! durations and the assertions leave wide margins.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use palisade_server::listener::ConnLimits;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn limits(header_ms: u64, idle_ms: u64, max: usize) -> Opts {
    Opts {
        conn: ConnLimits {
            header_timeout: Duration::from_millis(header_ms),
            idle_timeout: Duration::from_millis(idle_ms),
            max_connections: max,
            ..ConnLimits::default()
        },
        ..Opts::default()
    }
}

/// Read until the peer closes (Ok(bytes)) or `within` passes (Err).
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> Result<Vec<u8>, ()> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return Err(()),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(out),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

const HEALTH: &[u8] = b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n\r\n";

#[tokio::test]
async fn slowloris_head_is_cut_at_the_header_deadline() {
    let s = TestServer::start(limits(400, 10_000, 64)).await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let started = Instant::now();
    c.write_all(b"GET /v1/sys/health HTTP/1.1\r\n")
        .await
        .unwrap();
    // one header line every 100 ms, for up to 5 s
    let mut closed_after = None;
    for i in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if c.write_all(format!("X-Slow-{i}: x\r\n").as_bytes())
            .await
            .is_err()
        {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut b = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), c.read(&mut b)).await {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let t = closed_after.expect("the server kept a dribbling head open for 5 s");
    assert!(
        t >= Duration::from_millis(350) && t < Duration::from_millis(2500),
        "closed after {t:?}"
    );
    // the server still serves others
    assert_eq!(s.call("GET", "sys/health", None, None).await.status, 200);
}

#[tokio::test]
async fn idle_keepalive_lives_until_the_idle_deadline_not_the_header_one() {
    let s = TestServer::start(limits(300, 2_000, 64)).await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(HEALTH).await.unwrap();
    let mut buf = [0u8; 2048];
    let n = c.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    // idle for longer than the header deadline: still open
    tokio::time::sleep(Duration::from_millis(800)).await;
    c.write_all(HEALTH).await.unwrap();
    let n = c.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    // idle past the idle deadline: closed without a response
    let started = Instant::now();
    let rest = read_until_closed(&mut c, Duration::from_secs(6))
        .await
        .expect("an idle connection is closed after the idle deadline");
    assert!(rest.is_empty(), "{rest:?}");
    let t = started.elapsed();
    assert!(
        t >= Duration::from_millis(1500) && t < Duration::from_millis(4500),
        "closed after {t:?}"
    );
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_at_the_header_deadline() {
    // idle deadline far away: only the header deadline, counted from accept, applies
    let s = TestServer::start(limits(400, 60_000, 64)).await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let started = Instant::now();
    let got = read_until_closed(&mut c, Duration::from_secs(5))
        .await
        .expect("a silent connection is closed");
    assert!(got.is_empty());
    let t = started.elapsed();
    assert!(
        t >= Duration::from_millis(350) && t < Duration::from_millis(2500),
        "closed after {t:?}"
    );
}

/// Connections with a request in flight (here: an authorised body still
/// arriving, bounded by the body deadline) hold their slots; over the limit,
/// with nothing idle or unproductive to close, a new connection is closed.
#[tokio::test]
async fn connections_over_the_limit_are_closed_at_once() {
    let s = TestServer::start(limits(10_000, 10_000, 2)).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        let head = format!(
            "PUT /v1/secret/data/held HTTP/1.1\r\nHost: x\r\nX-Vault-Token: {}\r\nContent-Length: 100\r\n\r\n{{",
            s.root
        );
        c.write_all(head.as_bytes()).await.unwrap();
        held.push(c);
    }
    // let the server accept both
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(s.addr).await.unwrap();
    let _ = third.write_all(HEALTH).await;
    let got = read_until_closed(&mut third, Duration::from_secs(3))
        .await
        .expect("the connection over the limit is closed");
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    // a slot frees when a connection ends
    drop(held.pop());
    let mut ok = false;
    for _ in 0..50 {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(HEALTH).await.unwrap();
        let mut buf = [0u8; 2048];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(300), c.read(&mut buf)).await
            && buf[..n].starts_with(b"HTTP/1.1 200")
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "no slot was freed");
}

/// At the limit an idle keep-alive connection is closed to make room (as
/// nginx does): idle sockets cannot lock everyone out.
#[tokio::test]
async fn idle_connections_make_room_at_the_limit() {
    let s = TestServer::start(limits(10_000, 300_000, 2)).await;
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(HEALTH).await.unwrap();
        let mut buf = [0u8; 2048];
        let n = c.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        idle.push(c);
    }
    let mut fresh = TcpStream::connect(s.addr).await.unwrap();
    fresh.write_all(HEALTH).await.unwrap();
    let mut buf = [0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(3), fresh.read(&mut buf))
        .await
        .expect("the new connection is served")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    // exactly one of the idle ones was closed (the longest idle: the first)
    let first = read_until_closed(&mut idle[0], Duration::from_secs(2)).await;
    assert_eq!(
        first,
        Ok(Vec::new()),
        "the longest-idle connection is closed"
    );
    let second = read_until_closed(&mut idle[1], Duration::from_millis(300)).await;
    assert_eq!(second, Err(()), "the other idle connection stays open");
}

/// At the limit, with nothing idle, the oldest connection that has not
/// completed a head (a silent or dribbling client) is closed to make room:
/// silent sockets cannot lock others out.
#[tokio::test]
async fn silent_connections_make_room_at_the_limit() {
    let s = TestServer::start(limits(10_000, 300_000, 2)).await;
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(s.addr).await.unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut fresh = TcpStream::connect(s.addr).await.unwrap();
    fresh.write_all(HEALTH).await.unwrap();
    let mut buf = [0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(3), fresh.read(&mut buf))
        .await
        .expect("the new connection is served")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    let oldest = read_until_closed(&mut silent[0], Duration::from_secs(2)).await;
    assert_eq!(
        oldest,
        Ok(Vec::new()),
        "the oldest silent connection is closed"
    );
}

#[tokio::test]
async fn one_address_cannot_take_every_slot() {
    let s = TestServer::start(Opts {
        conn: ConnLimits {
            max_connections_per_ip: 2,
            ..ConnLimits::default()
        },
        ..Opts::default()
    })
    .await;
    let a = TcpStream::connect(s.addr).await.unwrap();
    let b = TcpStream::connect(s.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let _ = c.write_all(HEALTH).await;
    let got = read_until_closed(&mut c, Duration::from_secs(3))
        .await
        .expect("the third connection from one address is closed");
    assert!(got.is_empty());
    drop((a, b));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.call("GET", "sys/health", None, None).await.status, 200);
}

/// A client that stops reading a large response is disconnected after the
/// send timeout instead of holding the response in memory.
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off() {
    let s = TestServer::start(Opts {
        conn: ConnLimits {
            send_timeout: Duration::from_millis(500),
            ..ConnLimits::default()
        },
        max_request_size: 64 * 1024 * 1024,
        json: palisade_server::json::JsonLimits {
            max_strings: 1000,
            max_memory: usize::MAX,
        },
        ..Opts::default()
    })
    .await;
    s.kv_put("big", json!({"v": "x".repeat(16 * 1024 * 1024)}))
        .await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let req = format!(
        "GET /v1/secret/data/big HTTP/1.1\r\nHost: x\r\nX-Vault-Token: {}\r\n\r\n",
        s.root
    );
    c.write_all(req.as_bytes()).await.unwrap();
    // read a little, then stop
    let mut buf = vec![0u8; 64 * 1024];
    let n = c.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    // the server gave up: reading on ends well before 16 MiB with EOF or a reset
    let mut total = n;
    let cut = loop {
        match tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(k)) => total += k,
            Err(_) => break false,
        }
    };
    assert!(
        cut && total < 16 * 1024 * 1024,
        "read {total} bytes, cut: {cut}"
    );
}

#[tokio::test]
async fn a_body_that_never_arrives_is_answered_408_and_audited() {
    let s = TestServer::start(Opts {
        body_timeout: Duration::from_millis(300),
        ..Opts::default()
    })
    .await;
    let log = s.enable_audit("file").await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "PUT /v1/secret/data/slow HTTP/1.1\r\nHost: x\r\nX-Vault-Token: {}\r\nContent-Length: 100\r\n\r\n{{\"data\":",
        s.root
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let got = read_until_closed(&mut c, Duration::from_secs(5))
        .await
        .expect("answered and closed");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        text.ends_with("{\"errors\":[\"request body not received in time\"]}"),
        "{text}"
    );
    let recs = audit_records(&log);
    let refused = audit_for(&recs, "secret/data/slow");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["error"], "request body not received in time");
    assert_empty_404(&s.get("secret/data/slow", &s.root).await);
    // a body that arrives in time is written
    let r = s
        .post("secret/data/slow", &s.root, json!({"data": {"v": "1"}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn plaintext_listeners_do_not_speak_http2() {
    let s = TestServer::dev().await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    // HTTP/2 prior knowledge: the connection preface and an empty SETTINGS frame
    c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let got = read_until_closed(&mut c, Duration::from_secs(5))
        .await
        .expect("closed");
    // an HTTP/2 server would answer with its SETTINGS frame (type 0x04)
    assert!(
        got.is_empty() || got.starts_with(b"HTTP/1.1 4"),
        "{:?}",
        &got[..got.len().min(32)]
    );
    // HTTP/1.1 works
    assert_eq!(s.call("GET", "sys/health", None, None).await.status, 200);
}

#[tokio::test]
async fn tls_answers_carry_hsts_and_plaintext_ones_do_not() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let tls = palisade_server::listener::tls_config(&cert, &key).unwrap();

    let backend = palisade_storage::memory::MemoryBackend::new();
    let core = palisade_server::core::Core::new(palisade_barrier::Barrier::new(
        std::sync::Arc::new(backend),
    ));
    core.dev_setup(None).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (running, _h) = palisade_server::start(
        core,
        listener,
        Some(tls),
        Default::default(),
        Default::default(),
        async move {
            let _ = rx.await;
        },
    )
    .unwrap();
    let client = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(ck.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = client
        .get(format!(
            "https://localhost:{}/v1/sys/health",
            running.addr.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get("strict-transport-security")
            .and_then(|v| v.to_str().ok()),
        Some("max-age=31536000; includeSubDomains")
    );
    // errors too
    let r = client
        .get(format!(
            "https://localhost:{}/v1/secret/data/x",
            running.addr.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().contains_key("strict-transport-security"));
    drop(tx);

    let plain = TestServer::dev().await;
    let r = plain.call("GET", "sys/health", None, None).await;
    assert!(r.header("strict-transport-security").is_none());
}

/// A refused request's small body is read and dropped (never parsed), so
/// the client reads its 403 rather than a reset, and the connection stays
/// usable; a large or slow one is not waited for: the refusal does not hold
/// the connection.
#[tokio::test]
async fn a_refused_body_is_discarded_and_the_connection_kept() {
    let s = TestServer::dev().await;
    // large and never finished: answered and closed at once, not after the body deadline
    let mut big = TcpStream::connect(s.addr).await.unwrap();
    big.write_all(b"POST /v1/secret/data/x HTTP/1.1\r\nHost: x\r\nX-Vault-Token: hvs.wrong\r\nContent-Length: 10000000\r\n\r\n{\"data\":")
        .await
        .unwrap();
    let started = Instant::now();
    let got = read_until_closed(&mut big, Duration::from_secs(10)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let got = got.expect("closed");
    assert!(
        got.starts_with(b"HTTP/1.1 403"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    // and says so: a client (or an HA standby's connection pool) must not
    // send its next request on a connection whose unread body would be
    // taken for that request (found by a review: pooled standby
    // connections broke and other clients got 502s)
    assert!(
        String::from_utf8_lossy(&got)
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );

    // every refusal that leaves the body unread says so, also the ones
    // answered before the usual path (a review found the first fix covered
    // only one exit): a Connection header naming X-Vault-Token is refused at
    // once, with a large body still coming
    let mut early = TcpStream::connect(s.addr).await.unwrap();
    early
        .write_all(b"POST /v1/secret/data/x HTTP/1.1\r\nHost: x\r\nX-Vault-Token: hvs.wrong\r\nConnection: x-vault-token\r\nContent-Length: 10000000\r\n\r\n{\"data\":")
        .await
        .unwrap();
    let got = read_until_closed(&mut early, Duration::from_secs(10))
        .await
        .expect("closed");
    let got = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(got.starts_with("http/1.1 400"), "{got}");
    assert!(got.contains("\r\nconnection: close\r\n"), "{got}");
    assert!(
        got.ends_with(
            r#"{"errors":["invalid connection header: x-vault-token is not a per-connection header"]}"#
        ),
        "{got}"
    );
    // allowed: a Connection header naming only per-connection things
    let mut ok = TcpStream::connect(s.addr).await.unwrap();
    ok.write_all(b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, TE\r\nTE: trailers\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = ok.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );

    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let body = format!("{{\"data\":{{\"v\":\"{}\"}}}}", "x".repeat(32 * 1024));
    let head = format!(
        "POST /v1/secret/data/x HTTP/1.1\r\nHost: x\r\nX-Vault-Token: hvs.wrong\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).await.unwrap();
    c.write_all(body.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = c.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(
        text.ends_with("{\"errors\":[\"permission denied\"]}"),
        "{text}"
    );
    assert!(
        !text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    // same connection, next request
    c.write_all(HEALTH).await.unwrap();
    let n = c.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    // nothing was written
    assert_empty_404(&s.get("secret/data/x", &s.root).await);
}
