//! The upstream side of a real `palisade gateway` process, each control shown
//! to allow and to deny (exact status and `{"error":{"code"}}`):
//!
//! - `upstream_tls_and_client_certificate`: an HTTPS service that requires a
//!   client certificate (tests/e2e/gateway/upstream_tls.js): with
//!   `[upstreams.tls]` ca_file + client certificate -> 200 (the service saw
//!   the gateway's certificate); the wrong CA in ca_file -> 502 `bad_gateway`
//!   (`upstream_connect_failed`); no client certificate -> 502 `bad_gateway`;
//! - `passive_health_and_readyz`: two endpoints, one a closed port, round
//!   robin without retries: exactly `max_fails` requests get 502, then the
//!   bad endpoint is ejected and every request succeeds; /readyz is 200 while
//!   an upstream has a healthy endpoint, 503 naming the upstream when all are
//!   ejected, and 200 again once `fail_timeout_s` has passed;
//! - `route_request_timeout`: `request_timeout_ms = 300` on a route ->
//!   a slow upstream answer is cut off with 504 `gateway_timeout` after
//!   ~300 ms, a fast one on the same route is served, and the same slow
//!   endpoint through a route without the override is served;
//! - `pooled_connections_and_stale_ones`: against a raw TCP service written
//!   here, sequential requests share one kept-alive upstream connection;
//!   a service that closes every connection after its response (without
//!   `Connection: close`) never costs a client a 502 (closed idle
//!   connections are skipped, a request a closed connection did not write is
//!   sent again); a request the service read and then dropped is 502
//!   `bad_gateway` (`upstream_protocol_error`) and is never sent twice;
//! - `trusted_proxies_name_the_client`: behind a trusted proxy the client
//!   is the first untrusted `X-Forwarded-For` address from the right (the
//!   service, the log and the per-IP limit see it; entries a client wrote to
//!   the left are ignored); without `trusted_proxies`, or from an untrusted
//!   peer, `X-Forwarded-For` changes nothing: a client cannot escape its
//!   per-IP limit by writing one (429 `rate_limited`).
//!
//! Skips when node or tests/e2e/gateway/node_modules are missing, unless
//! PALISADE_REQUIRE_SERVICES=1. Every wait polls with a deadline.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod gateway_common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gateway_common::{Gateway, Pki, Resp, Upstream, plain_client, send, wait_for};

const ANONYMOUS: &str = r#"
@id("anonymous")
permit(principal == Anonymous::"anonymous", action, resource);
"#;

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn header(routes_and_upstreams: &str) -> String {
    format!(
        r#"[[listeners]]
name = "plain"
address = "127.0.0.1:0"
protocol = "http"
dangerous_plaintext = true

[admin]
address = "127.0.0.1:0"

[authorization]
policy_file = "policies.cedar"
{routes_and_upstreams}"#
    )
}

fn route(name: &str, upstream: &str, extra: &str) -> String {
    format!(
        "\n[[routes]]\nname = \"{name}\"\npath_prefix = \"/{name}\"\nupstream = \"{upstream}\"\nanonymous = true\n{extra}\n"
    )
}

// ------------------------------------------------------------------ TLS to upstreams

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_and_client_certificate() {
    if !gateway_common::node_ready("upstream_tls_and_client_certificate") {
        return;
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::write(dir.join("policies.cedar"), ANONYMOUS).unwrap();
    // the service's PKI (ca.pem, server.pem for localhost/127.0.0.1, server.key)
    let svc_dir = dir.join("svc");
    std::fs::create_dir(&svc_dir).unwrap();
    let svc = Pki::new(&svc_dir);
    let (cert, key) = svc.client_cert("palisade-gateway", "spiffe://test/gateway", 7);
    std::fs::write(dir.join("gw-client.pem"), cert).unwrap();
    std::fs::write(dir.join("gw-client.key"), key).unwrap();
    // a CA that did not issue the service's certificate
    let other_dir = dir.join("other");
    std::fs::create_dir(&other_dir).unwrap();
    Pki::new(&other_dir);
    let upstream = Upstream::start_script(
        dir,
        "upstream_tls.js",
        &[
            &svc_dir.join("server.key"),
            &svc_dir.join("server.pem"),
            &svc_dir.join("ca.pem"),
        ],
    );
    let ep = format!("127.0.0.1:{}", upstream.port);
    let client = r#"client_cert_file = "gw-client.pem"
client_key_file = "gw-client.key""#;
    let upstreams = format!(
        r#"
[[upstreams]]
name = "good"
endpoints = ["{ep}"]
[upstreams.tls]
ca_file = "svc/ca.pem"
{client}

[[upstreams]]
name = "named"
endpoints = ["{ep}"]
[upstreams.tls]
ca_file = "svc/ca.pem"
server_name = "localhost"
{client}

[[upstreams]]
name = "wrongca"
endpoints = ["{ep}"]
[upstreams.tls]
ca_file = "other/ca.pem"
{client}

[[upstreams]]
name = "nocert"
endpoints = ["{ep}"]
[upstreams.tls]
ca_file = "svc/ca.pem"

[[upstreams]]
name = "plaintext"
endpoints = ["{ep}"]
"#
    );
    let routes: String = ["good", "named", "wrongca", "nocert", "plaintext"]
        .iter()
        .map(|n| route(n, n, ""))
        .collect();
    let cfg = dir.join("gateway.toml");
    std::fs::write(&cfg, header(&format!("{upstreams}{routes}"))).unwrap();
    let gw = Gateway::start(&cfg, "gateway").await;
    let c = plain_client();
    let base = format!("http://{}", gw.addr("plain"));

    // allow: the service's CA and the gateway's client certificate
    for name in ["good", "named"] {
        let r = send(c.get(format!("{base}/{name}/items?x=1"))).await;
        assert_eq!(r.status, 200, "{name}: {r:?}");
        let seen = r.json();
        assert_eq!(seen["client_cn"], "palisade-gateway", "{seen}");
        assert_eq!(seen["url"], format!("/{name}/items?x=1"), "{seen}");
        assert_eq!(seen["headers"]["x-forwarded-proto"], "http", "{seen}");
        let rec = gw.record(&r.request_id()).await;
        assert_eq!(rec["upstream"], format!("{name}/{ep}"), "{rec}");
    }

    // deny: the service's certificate is not from the configured CA
    let r = send(c.get(format!("{base}/wrongca/items"))).await;
    r.assert_error(
        502,
        "bad_gateway",
        "upstream certificate from an untrusted CA",
    );
    let rec = gw.record(&r.request_id()).await;
    assert_eq!(rec["reason"], "upstream_connect_failed", "{rec}");
    // deny: no client certificate -> the service refuses the handshake
    let r = send(c.get(format!("{base}/nocert/items"))).await;
    r.assert_error(502, "bad_gateway", "no client certificate for the service");
    let rec = gw.record(&r.request_id()).await;
    // TLS 1.3: the gateway's side of the handshake completes; the service's
    // certificate_required alert arrives with the response
    assert_eq!(rec["reason"], "upstream_protocol_error", "{rec}");
    let refused = std::fs::read_to_string(dir.join("upstream_tls.err")).unwrap_or_default();
    assert!(
        refused.contains("client refused"),
        "the service saw the refused handshake: {refused}"
    );
    // and plaintext to a TLS service is no answer either
    let r = send(c.get(format!("{base}/plaintext/items"))).await;
    r.assert_error(502, "bad_gateway", "plaintext to a TLS service");
    // none of them leaked the upstream's text
    assert!(!r.body.contains("upstream_tls"), "{r:?}");
    eprintln!(
        "upstream_tls_and_client_certificate: {:?}",
        started.elapsed()
    );
}

// ------------------------------------------------------------------ passive health

async fn readyz(gw: &Gateway) -> Resp {
    send(plain_client().get(format!("http://{}/readyz", gw.admin))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_health_and_readyz() {
    if !gateway_common::node_ready("passive_health_and_readyz") {
        return;
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::write(dir.join("policies.cedar"), ANONYMOUS).unwrap();
    let upstream = Upstream::start(dir);
    let good = format!("127.0.0.1:{}", upstream.port);
    let bad = format!("127.0.0.1:{}", closed_port());
    let (dead1, dead2) = (closed_port(), closed_port());
    const MAX_FAILS: usize = 2;
    let cfg = dir.join("gateway.toml");
    std::fs::write(
        &cfg,
        header(&format!(
            r#"
[[upstreams]]
name = "pair"
endpoints = ["{good}", "{bad}"]
max_fails = {MAX_FAILS}
fail_timeout_s = 60

[[upstreams]]
name = "dead"
endpoints = ["127.0.0.1:{dead1}", "127.0.0.1:{dead2}"]
max_fails = 1
fail_timeout_s = 2

[[upstreams]]
name = "solo"
endpoints = ["{good}"]
max_fails = 1
fail_timeout_s = 60
{}{}{}"#,
            route("pair", "pair", ""),
            route("dead", "dead", ""),
            route("solo", "solo", "max_body_bytes = 1024")
        )),
    )
    .unwrap();
    let gw = Gateway::start(&cfg, "gateway").await;
    let c = plain_client();
    let base = format!("http://{}", gw.addr("plain"));
    let r = readyz(&gw).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ready\n"));

    // round robin, no retries: the bad endpoint answers every other request
    // with 502 until it has failed MAX_FAILS times in a row, then is ejected
    let mut seq = Vec::new();
    for i in 0..12 {
        let r = send(c.get(format!("{base}/pair/{i}"))).await;
        if r.status != 200 {
            r.assert_error(502, "bad_gateway", &format!("request {i}"));
            let rec = gw.record(&r.request_id()).await;
            assert_eq!(rec["reason"], "upstream_connect_failed", "{rec}");
        } else {
            let rec = gw.record(&r.request_id()).await;
            assert_eq!(rec["upstream"], format!("pair/{good}"), "{rec}");
        }
        seq.push(r.status);
    }
    // good, bad (1), good, bad (2 = max_fails: ejected), then only good
    let mut want = [200u16, 502].repeat(MAX_FAILS);
    want.resize(seq.len(), 200);
    assert_eq!(
        seq, want,
        "exactly {MAX_FAILS} failures, then every request succeeds"
    );
    assert!(
        gw.stderr()
            .contains("endpoint ejected after consecutive failures")
    );
    // a client that breaks its own body (chunked, over the route's limit) gets
    // 413, and the endpoint is not held responsible: it stays in rotation
    for _ in 0..3 {
        let chunk = "x".repeat(2048);
        let req = format!(
            "POST /solo/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
            chunk.len()
        );
        let reply =
            gateway_common::raw_plain(gw.addr("plain"), req.as_bytes(), Duration::from_secs(5))
                .await;
        assert!(reply.text.starts_with("HTTP/1.1 413"), "{reply:?}");
        assert!(reply.text.contains("payload_too_large"), "{reply:?}");
    }
    // solo's only endpoint was not ejected (were it, /readyz would name "solo")
    let r = readyz(&gw).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ready\n"), "{r:?}");
    assert_eq!(send(c.get(format!("{base}/solo/ok"))).await.status, 200);

    // one endpoint of "pair" is still healthy, and "dead" was never tried
    let r = readyz(&gw).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ready\n"));

    // every endpoint of "dead" ejected (max_fails = 1): /readyz 503 naming it
    let r = send(c.get(format!("{base}/dead/1"))).await;
    r.assert_error(502, "bad_gateway", "dead endpoint 1");
    let r = readyz(&gw).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ready\n"), "one left");
    let r = send(c.get(format!("{base}/dead/2"))).await;
    r.assert_error(502, "bad_gateway", "dead endpoint 2");
    let r = readyz(&gw).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (503, "no healthy endpoint: dead\n"),
        "{r:?}"
    );
    // all ejected: still tried (panic mode), still a clean 502
    let r = send(c.get(format!("{base}/dead/3"))).await;
    r.assert_error(502, "bad_gateway", "all endpoints ejected");
    // "pair" unaffected
    assert_eq!(send(c.get(format!("{base}/pair/x"))).await.status, 200);
    // after fail_timeout_s the endpoints are back in rotation
    wait_for(
        "readyz 200 after fail_timeout",
        Duration::from_secs(15),
        || async {
            let r = readyz(&gw).await;
            (r.status == 200).then_some(())
        },
    )
    .await;
    eprintln!("passive_health_and_readyz: {:?}", started.elapsed());
}

// ------------------------------------------------------------------ request timeout

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_request_timeout() {
    if !gateway_common::node_ready("route_request_timeout") {
        return;
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::write(dir.join("policies.cedar"), ANONYMOUS).unwrap();
    let upstream = Upstream::start(dir);
    let cfg = dir.join("gateway.toml");
    std::fs::write(
        &cfg,
        header(&format!(
            r#"
[limits]
request_timeout_ms = 1500

[[upstreams]]
name = "app"
endpoints = ["127.0.0.1:{}"]
max_fails = 100

[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "app"
anonymous = true
request_timeout_ms = 300

[[routes]]
name = "patient"
path_prefix = "/patient"
strip_prefix = true
upstream = "app"
anonymous = true
"#,
            upstream.port
        )),
    )
    .unwrap();
    let gw = Gateway::start(&cfg, "gateway").await;
    let c = plain_client();
    let base = format!("http://{}", gw.addr("plain"));

    // deny: the upstream takes 5 s, the route allows 300 ms
    let t = Instant::now();
    let r = send(c.get(format!("{base}/orders/slow?ms=5000"))).await;
    let took = t.elapsed();
    r.assert_error(504, "gateway_timeout", "slow upstream");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(2500),
        "cut off after the route's 300 ms, not the upstream's 5 s: {took:?}"
    );
    let rec = gw.record(&r.request_id()).await;
    assert_eq!(rec["route"], "orders", "{rec}");
    assert_eq!(rec["reason"], "gateway_timeout", "{rec}");

    // allow: fast answers on the same route
    let r = send(c.get(format!("{base}/orders/slow?ms=10"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["slow_ms"], 10);
    let r = send(c.get(format!("{base}/orders/1"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    // the same slow endpoint through a route without request_timeout_ms:
    // the upstream's default (30 s) applies, so 800 ms is served
    let r = send(c.get(format!("{base}/patient/orders/slow?ms=800"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["slow_ms"], 800);
    // past the global request timeout, time spent waiting on the upstream is a 504, not a 408
    let r = send(c.get(format!("{base}/patient/orders/slow?ms=5000"))).await;
    r.assert_error(
        504,
        "gateway_timeout",
        "global timeout while the upstream works",
    );
    eprintln!("route_request_timeout: {:?}", started.elapsed());
}

// ------------------------------------------------------------------ pooled connections

/// A raw HTTP/1.1 service: `/keep/...` answers and keeps the connection,
/// `/close/...` answers (without `Connection: close`) and closes it,
/// `/drop/...` reads the request and closes without answering. Answers
/// carry the path and the `X-Forwarded-For` received. Counts connections
/// and requests per mode.
struct RawService {
    port: u16,
    connections: Arc<AtomicUsize>,
    requests: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
}

impl RawService {
    fn start() -> RawService {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let (conns, reqs) = (connections.clone(), requests.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                conns.fetch_add(1, Ordering::SeqCst);
                let reqs = reqs.clone();
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            match s.read(&mut chunk) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end + 4);
                        let path = head.split(' ').nth(1).unwrap_or("").to_string();
                        let mode = path.split('/').nth(1).unwrap_or("").to_string();
                        *reqs.lock().unwrap().entry(mode.clone()).or_insert(0) += 1;
                        if mode == "drop" {
                            return;
                        }
                        let xff = head
                            .lines()
                            .filter_map(|l| l.split_once(':'))
                            .find(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
                            .map(|(_, v)| v.trim().to_string())
                            .unwrap_or_default();
                        let body = format!("{{\"path\":\"{path}\",\"xff\":\"{xff}\"}}");
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(reply.as_bytes()).is_err() || mode == "close" {
                            return;
                        }
                    }
                });
            }
        });
        RawService {
            port,
            connections,
            requests,
        }
    }

    fn requests(&self, mode: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .get(mode)
            .copied()
            .unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_and_stale_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::write(dir.join("policies.cedar"), ANONYMOUS).unwrap();
    let svc = RawService::start();
    let cfg = dir.join("gateway.toml");
    let upstream = format!(
        "\n[[upstreams]]\nname = \"raw\"\nendpoints = [\"127.0.0.1:{}\"]\nmax_fails = 1000\n",
        svc.port
    );
    let routes: String = ["keep", "close", "drop"]
        .iter()
        .map(|m| route(m, "raw", ""))
        .collect();
    std::fs::write(&cfg, header(&format!("{upstream}{routes}"))).unwrap();
    let gw = Gateway::start(&cfg, "gateway").await;
    let c = plain_client();
    let base = format!("http://{}", gw.addr("plain"));

    // allow: sequential requests on one client connection (one gateway
    // worker) reuse one upstream connection (20 pipelined requests, the
    // last one closing)
    let mut pipelined = String::new();
    for i in 0..20 {
        let close = if i == 19 { "connection: close\r\n" } else { "" };
        pipelined.push_str(&format!("GET /keep/{i} HTTP/1.1\r\nhost: a\r\n{close}\r\n"));
    }
    let reply = gateway_common::raw_plain(
        gw.addr("plain"),
        pipelined.as_bytes(),
        Duration::from_secs(10),
    )
    .await;
    assert!(reply.closed, "{reply:?}");
    assert_eq!(
        reply.text.matches("HTTP/1.1 200 OK").count(),
        20,
        "{reply:?}"
    );
    for i in 0..20 {
        assert!(reply.text.contains(&format!("\"/keep/{i}\"")), "{reply:?}");
    }
    assert_eq!(svc.requests("keep"), 20);
    assert_eq!(
        svc.connections.load(Ordering::SeqCst),
        1,
        "20 sequential requests through one worker share one upstream connection"
    );

    // a service that closes each connection after answering (without
    // `Connection: close`): once the close has been seen, the idle
    // connection is never handed a request, so every request is served and
    // each reached the service exactly once. A request sent while the FIN is
    // still in flight is written to a dying connection and is (by design,
    // below) a 502 that is not resent, so each request waits long enough for
    // the close to be seen even on a loaded machine (with 5 ms every fourth
    // request this failed once in CI).
    for i in 0..40 {
        let r = send(c.get(format!("{base}/close/{i}"))).await;
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(svc.requests("close"), 40);

    // deny: on a reused connection, the service read the request and closed
    // without answering: 502, and the request is not sent again (it may
    // have had an effect)
    // warm a kept-alive connection; the last /close connection may still be
    // in the pool with its FIN in flight, and a request written to it before
    // the close is seen is (by design) a 502, never resent: retry the warm-up
    let mut warm = send(c.get(format!("{base}/keep/warm"))).await;
    for _ in 0..3 {
        if warm.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        warm = send(c.get(format!("{base}/keep/warm"))).await;
    }
    assert_eq!(warm.status, 200, "{warm:?}");
    let before = svc.connections.load(Ordering::SeqCst);
    let r = send(c.post(format!("{base}/drop/1")).body("pay 10")).await;
    r.assert_error(502, "bad_gateway", "service dropped the request");
    let rec = gw.record(&r.request_id()).await;
    assert_eq!(rec["reason"], "upstream_protocol_error", "{rec}");
    assert_eq!(svc.requests("drop"), 1, "a written request is never resent");
    assert_eq!(
        svc.connections.load(Ordering::SeqCst),
        before,
        "it went over the kept-alive connection"
    );
    // the pool still serves afterwards
    let r = send(c.get(format!("{base}/keep/after"))).await;
    assert_eq!(r.status, 200, "{r:?}");
}

// ------------------------------------------------------------------ trusted proxies

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxies_name_the_client() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::write(dir.join("policies.cedar"), ANONYMOUS).unwrap();
    let svc = RawService::start();
    let rest = format!(
        "\n[ratelimit]\npeer = {{ limit = 1, period_s = 3600, burst = 1 }}\n\n[[upstreams]]\nname = \"raw\"\nendpoints = [\"127.0.0.1:{}\"]\n{}",
        svc.port,
        route("keep", "raw", "")
    );

    // allow: the test client (127.0.0.1) is a trusted proxy
    let trusted = dir.join("trusted.toml");
    std::fs::write(
        &trusted,
        format!("trusted_proxies = [\"127.0.0.0/8\"]\n{}", header(&rest)),
    )
    .unwrap();
    let gw = Gateway::start(&trusted, "trusted").await;
    // a client-written entry left of the proxy's is ignored
    seen_as(&gw, Some("198.51.100.1, 203.0.113.9"), "203.0.113.9").await;
    // the per-IP limit (burst 1: two pass) counts that client
    seen_as(&gw, Some("203.0.113.9"), "203.0.113.9").await;
    refused_by_peer_limit(&gw, Some("203.0.113.9"), "third request of one client").await;
    // another client behind the same proxy has its own budget
    seen_as(&gw, Some("203.0.113.10"), "203.0.113.10").await;
    // no header: the proxy itself is the client
    seen_as(&gw, None, "127.0.0.1").await;

    // deny: without trusted_proxies (and with a range the peer is not in)
    // the header changes nothing: every request is 127.0.0.1's
    for (name, top) in [
        ("untrusted", String::new()),
        (
            "elsewhere",
            "trusted_proxies = [\"10.0.0.0/8\"]\n".to_string(),
        ),
    ] {
        let cfg = dir.join(format!("{name}.toml"));
        std::fs::write(&cfg, format!("{top}{}", header(&rest))).unwrap();
        let gw = Gateway::start(&cfg, name).await;
        seen_as(&gw, Some("203.0.113.9"), "127.0.0.1").await;
        seen_as(&gw, Some("203.0.113.10"), "127.0.0.1").await;
        // a third "client" is the same peer: its budget is spent
        refused_by_peer_limit(&gw, Some("203.0.113.11"), name).await;
    }
}

/// GET through `gw`'s plain listener, with `X-Forwarded-For: xff` if given.
async fn get_with_xff(gw: &Gateway, xff: Option<&str>) -> Resp {
    let mut rb = plain_client().get(format!("http://{}/keep/x", gw.addr("plain")));
    if let Some(v) = xff {
        rb = rb.header("x-forwarded-for", v);
    }
    send(rb).await
}

/// The request is served, and both the service (`X-Forwarded-For`) and the
/// security log (`client_ip`) name `client`.
async fn seen_as(gw: &Gateway, xff: Option<&str>, client: &str) {
    let r = get_with_xff(gw, xff).await;
    assert_eq!(r.status, 200, "{xff:?}: {r:?}");
    assert_eq!(r.json()["xff"], client, "{xff:?}: what the service saw");
    let rec = gw.record(&r.request_id()).await;
    assert_eq!(rec["client_ip"], client, "{xff:?}: {rec}");
}

/// The request is refused with 429 by `ratelimit.peer`.
async fn refused_by_peer_limit(gw: &Gateway, xff: Option<&str>, what: &str) {
    let r = get_with_xff(gw, xff).await;
    r.assert_error(429, "rate_limited", what);
    let rec = gw.record(&r.request_id()).await;
    assert_eq!(rec["reason"], "peer", "{what}: {rec}");
}
