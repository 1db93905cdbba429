//! Security controls of a real `palisade gateway` process that the other
//! gateway tests do not cover, each shown to allow what it should and to deny
//! what it should (exact status and `{"error":{"code"}}`, or the exact TLS
//! alert):
//!
//! - `sni_certificates_and_hot_reload`: one listener, two certificates
//!   (`a.test`, `*.b.test`): SNI picks the certificate (exact name, one-label
//!   wildcard), any other name — or none — gets the first one; overwriting
//!   cert A's files is picked up by the 2 s reload check; a broken key file is
//!   refused (logged) and the previous certificate keeps being served;
//! - `client_certificate_revocation`: `client_auth.crl_files`: a revoked
//!   client certificate fails the handshake (alert `certificate_revoked`), a
//!   non-revoked one from the same CA gets 200;
//! - `tls_profiles_and_http2`: `modern` refuses a TLS 1.2-only client (alert
//!   `protocol_version`) and serves TLS 1.3; `intermediate` serves TLS 1.2;
//!   ALPN offers h2 and an HTTP/2 client gets 200 over HTTP/2;
//! - `cors_and_csp`: preflight from an allowed / a disallowed origin (204 with
//!   the CORS headers / 403 `forbidden`), actual requests with / without
//!   `Access-Control-Allow-Origin`, the route's Content-Security-Policy;
//! - `routing`: 404 `not_found`, 405 `method_not_allowed`, host routing (exact
//!   and `*.` wildcard), `strip_prefix`, per-route `max_body_bytes` (413
//!   `payload_too_large`), an anonymous route beside an authenticated one (401
//!   `unauthenticated`);
//! - `ratelimit_store_down`: Redis unreachable (127.0.0.1:1): `fail_closed` ->
//!   429 `rate_limited`, `local_fallback` -> exactly the local quota,
//!   `dangerous_fail_open` -> every request passes, and `fail_open` is a
//!   config error naming `dangerous_fail_open`.
//!
//! Skips (as the other gateway tests) when node or tests/e2e/gateway/node_modules
//! are missing, unless PALISADE_REQUIRE_SERVICES=1. Every wait polls with a deadline.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod gateway_common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_common::{Gateway, Pki, Resp, Upstream, plain_client, send, wait_for};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, ProtocolVersion, SignatureScheme, SupportedProtocolVersion};
use serde_json::Value;

const ANONYMOUS: &str = r#"
@id("anonymous")
permit(principal == Anonymous::"anonymous", action, resource);
"#;

const GET: &[u8] = b"GET /orders/1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
const TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
const TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Lines of the gateway's stderr (JSON tracing) whose message is `msg`.
fn logged(gw: &Gateway, msg: &str) -> Vec<Value> {
    gw.stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == msg)
        .collect()
}

// ------------------------------------------------------------------ TLS probe

/// Accepts whatever certificate the server presents (the handshake
/// signatures are still verified): the SNI checks compare *which*
/// certificate is presented, also for names it does not cover.
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A completed handshake: what the server presented and negotiated.
struct Hello {
    /// DER of the end-entity certificate the server presented.
    cert: Vec<u8>,
    version: ProtocolVersion,
    alpn: Option<Vec<u8>>,
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
}

/// Handshake with `sni` (an IP literal sends no SNI), offering only
/// `versions` and `alpn`; the error is the handshake's, as text.
async fn hello(
    addr: SocketAddr,
    sni: &str,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Result<Hello, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from(sni.to_string()).expect("server name");
    let stream = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let conn = stream.get_ref().1;
    Ok(Hello {
        cert: conn
            .peer_certificates()
            .and_then(|c| c.first())
            .expect("a server certificate")
            .to_vec(),
        version: conn.protocol_version().expect("version"),
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        stream,
    })
}

/// The certificate presented for `sni` (TLS 1.3, ALPN http/1.1).
async fn presented(addr: SocketAddr, sni: &str) -> Vec<u8> {
    hello(addr, sni, BOTH, &[b"http/1.1"])
        .await
        .unwrap_or_else(|e| panic!("handshake with SNI {sni}: {e}"))
        .cert
}

// ------------------------------------------------------------------ 1. SNI + reload

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_certificates_and_hot_reload() {
    // handshakes only: the upstream is never reached, so no node needed
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let pki = Pki::new(dir);
    let (a_pem, a_key, a_der) = pki.server_cert(&["a.test"]);
    let (b_pem, b_key, b_der) = pki.server_cert(&["*.b.test"]);
    std::fs::write(dir.join("a.pem"), a_pem).unwrap();
    std::fs::write(dir.join("a.key"), a_key).unwrap();
    std::fs::write(dir.join("b.pem"), b_pem).unwrap();
    std::fs::write(dir.join("b.key"), b_key).unwrap();
    std::fs::write(dir.join("policies.cedar"), ANONYMOUS).unwrap();
    let cfg = dir.join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[[listeners]]
name = "sni"
address = "127.0.0.1:0"
certificates = [
  {{ cert_file = "a.pem", key_file = "a.key", server_names = ["a.test"] }},
  {{ cert_file = "b.pem", key_file = "b.key", server_names = ["*.b.test"] }},
]

{}

[[routes]]
name = "all"
path_prefix = "/"
upstream = "app"
anonymous = true
"#,
            app_sections(closed_port())
        ),
    )
    .unwrap();
    let gw = Gateway::start(&cfg, "gateway").await;
    let addr = gw.addr("sni");
    assert_ne!(a_der, b_der);

    // allow: each name gets its own certificate
    assert!(presented(addr, "a.test").await == a_der, "a.test -> cert A");
    assert!(
        presented(addr, "A.Test").await == a_der,
        "SNI is case-insensitive"
    );
    assert!(
        presented(addr, "x.b.test").await == b_der,
        "x.b.test -> cert B"
    );
    assert!(presented(addr, "other.b.test").await == b_der, "wildcard");
    // anything else: the first (default) certificate, never B
    for sni in [
        "unknown.test",
        "b.test",
        "y.x.b.test",
        "xb.test",
        "127.0.0.1",
    ] {
        assert!(
            presented(addr, sni).await == a_der,
            "{sni} -> the default certificate (A)"
        );
    }

    // hot reload: new files for A under the same names
    let (a2_pem, a2_key, a2_der) = pki.server_cert(&["a.test"]);
    assert_ne!(a2_der, a_der);
    std::fs::write(dir.join("a.pem"), &a2_pem).unwrap();
    std::fs::write(dir.join("a.key"), &a2_key).unwrap();
    wait_for(
        "the new certificate A served after the reload check",
        Duration::from_secs(15),
        || async { (presented(addr, "a.test").await == a2_der).then_some(()) },
    )
    .await;
    assert!(!logged(&gw, "certificates reloaded").is_empty());
    assert!(presented(addr, "x.b.test").await == b_der, "B unchanged");
    assert!(
        presented(addr, "unknown.test").await == a2_der,
        "default is the new A"
    );

    // a broken key: the reload is refused and the current certificate stays
    const REFUSED: &str = "certificate reload refused; keeping the current certificates";
    let before = logged(&gw, REFUSED).len();
    std::fs::write(dir.join("a.key"), "-----BEGIN PRIVATE KEY-----\nbroken\n").unwrap();
    let refusal = wait_for(
        "the refused certificate reload logged",
        Duration::from_secs(15),
        || async { logged(&gw, REFUSED).into_iter().nth(before) },
    )
    .await;
    let key_path = dir.join("a.key").display().to_string();
    assert_eq!(
        refusal["fields"]["error"],
        format!("no valid private key in {key_path}"),
        "{refusal}"
    );
    assert_eq!(refusal["level"], "ERROR", "{refusal}");
    assert!(
        presented(addr, "a.test").await == a2_der,
        "after the refused reload, the previous certificate A"
    );
    assert!(presented(addr, "x.b.test").await == b_der);
    // and again after the next check (the refusal is retried, not adopted)
    let n = logged(&gw, REFUSED).len();
    wait_for("a second refusal", Duration::from_secs(15), || async {
        (logged(&gw, REFUSED).len() > n).then_some(())
    })
    .await;
    assert!(presented(addr, "a.test").await == a2_der);
    eprintln!("sni_certificates_and_hot_reload: {:?}", started.elapsed());
}

// ------------------------------------------------------------------ 2. CRL

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_revocation() {
    if !gateway_common::node_ready("client_certificate_revocation") {
        return;
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let pki = Pki::new(dir);
    let (good_cert, good_key) = pki.client_cert("good", "spiffe://test/good", 1001);
    let (revoked_cert, revoked_key) = pki.client_cert("revoked", "spiffe://test/revoked", 1002);
    std::fs::write(dir.join("revoked.crl.pem"), pki.crl(&[1002])).unwrap();
    std::fs::write(
        dir.join("policies.cedar"),
        r#"
@id("workloads")
permit(principal, action, resource) when { context.auth_method == "mtls" };
"#,
    )
    .unwrap();
    let upstream = Upstream::start(dir);
    let cfg = dir.join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[[listeners]]
name = "internal"
address = "127.0.0.1:0"
certificates = [{{ cert_file = "server.pem", key_file = "server.key" }}]
client_auth = {{ ca_file = "ca.pem", crl_files = ["revoked.crl.pem"], mode = "required" }}

{}

[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "app"
authn = ["mtls"]
"#,
            app_sections(upstream.port)
        ),
    )
    .unwrap();
    let gw = Gateway::start(&cfg, "gateway").await;
    let addr = gw.addr("internal");
    let base = format!("https://localhost:{}", addr.port());

    // allow: not in the CRL
    let good = format!("{good_cert}{good_key}").into_bytes();
    let r = send(pki.client(Some(&good)).get(format!("{base}/orders/1"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    let rec = gw.record(&r.request_id()).await;
    assert_eq!(rec["principal"], "mtls:spiffe://test/good", "{rec}");
    let mut s = gateway_common::tls_connect(addr, "localhost", &pki.ca_pem, Some(&good))
        .await
        .expect("handshake with a valid certificate");
    let reply = gateway_common::raw_exchange(&mut s, GET, Duration::from_secs(10)).await;
    assert_eq!(reply.status(), Some(200), "{reply:?}");

    // deny: revoked. TLS 1.3: the client side completes, then reads the alert.
    let revoked = format!("{revoked_cert}{revoked_key}").into_bytes();
    let e = pki
        .client(Some(&revoked))
        .get(format!("{base}/orders/1"))
        .send()
        .await
        .expect_err("a revoked certificate must not get a response");
    assert!(e.is_request() || e.is_connect(), "{e:?}");
    let mut s = gateway_common::tls_connect(addr, "localhost", &pki.ca_pem, Some(&revoked))
        .await
        .expect("TLS 1.3 client side completes");
    let reply = gateway_common::raw_exchange(&mut s, GET, Duration::from_secs(10)).await;
    assert!(reply.closed && reply.text.is_empty(), "{reply:?}");
    assert_eq!(
        reply.error.as_deref(),
        Some("received fatal alert: CertificateRevoked"),
        "{reply:?}"
    );
    // only the two answered requests reached the HTTP layer
    assert_eq!(gw.security_log().len(), 2, "{:?}", gw.security_log());
    eprintln!("client_certificate_revocation: {:?}", started.elapsed());
}

// ------------------------------------------------------------------ 3. TLS profiles, HTTP/2

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_profiles_and_http2() {
    if !gateway_common::node_ready("tls_profiles_and_http2") {
        return;
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let pki = Pki::new(dir);
    std::fs::write(dir.join("policies.cedar"), ANONYMOUS).unwrap();
    let upstream = Upstream::start(dir);
    let cfg = dir.join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[[listeners]]
name = "modern"
address = "127.0.0.1:0"
tls_profile = "modern"
certificates = [{{ cert_file = "server.pem", key_file = "server.key" }}]

[[listeners]]
name = "intermediate"
address = "127.0.0.1:0"
tls_profile = "intermediate"
certificates = [{{ cert_file = "server.pem", key_file = "server.key" }}]

[admin]
address = "127.0.0.1:0"

[limits]
keepalive_timeout_ms = 1000

[[upstreams]]
name = "app"
endpoints = ["127.0.0.1:{}"]

[authorization]
policy_file = "policies.cedar"

[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "app"
anonymous = true
"#,
            upstream.port
        ),
    )
    .unwrap();
    let gw = Gateway::start(&cfg, "gateway").await;
    let modern = gw.addr("modern");
    let intermediate = gw.addr("intermediate");

    // modern: TLS 1.2 only -> protocol_version alert; TLS 1.3 -> served
    let e = hello(modern, "localhost", TLS12, &[b"http/1.1"])
        .await
        .err()
        .expect("modern must refuse a TLS 1.2-only client");
    assert_eq!(e, "handshake: received fatal alert: ProtocolVersion");
    let mut h = hello(modern, "localhost", TLS13, &[b"http/1.1"])
        .await
        .expect("modern with TLS 1.3");
    assert_eq!(h.version, ProtocolVersion::TLSv1_3);
    let reply = gateway_common::raw_exchange(&mut h.stream, GET, Duration::from_secs(10)).await;
    assert_eq!(reply.status(), Some(200), "{reply:?}");
    // a client offering both gets 1.3
    let h = hello(modern, "localhost", BOTH, &[b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(h.version, ProtocolVersion::TLSv1_3);

    // intermediate: TLS 1.2 served; 1.3 preferred when offered
    let mut h = hello(intermediate, "localhost", TLS12, &[b"http/1.1"])
        .await
        .expect("intermediate with TLS 1.2");
    assert_eq!(h.version, ProtocolVersion::TLSv1_2);
    let reply = gateway_common::raw_exchange(&mut h.stream, GET, Duration::from_secs(10)).await;
    assert_eq!(reply.status(), Some(200), "{reply:?}");
    let h = hello(intermediate, "localhost", BOTH, &[b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(h.version, ProtocolVersion::TLSv1_3);

    // ALPN: h2 preferred when offered, http/1.1 when that is all the client speaks
    let h = hello(intermediate, "localhost", BOTH, &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(h.alpn.as_deref(), Some(&b"h2"[..]));
    let h = hello(modern, "localhost", BOTH, &[b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(h.alpn.as_deref(), Some(&b"http/1.1"[..]));

    // HTTP/2 end to end (prior knowledge over TLS: ALPN h2 only)
    let ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).expect("CA");
    let h2 = reqwest::Client::builder()
        .add_root_certificate(ca.clone())
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("h2 client");
    for addr in [modern, intermediate] {
        let r = h2
            .get(format!("https://localhost:{}/orders/7?x=1", addr.port()))
            .header("x-trace", "h2")
            .send()
            .await
            .expect("HTTP/2 request");
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        let r = Resp::read(r).await;
        assert_eq!(r.status, 200, "{r:?}");
        let seen = r.json();
        assert_eq!(seen["path"], "/orders/7", "{seen}");
        assert_eq!(seen["url"], "/orders/7?x=1", "{seen}");
        assert_eq!(seen["headers"]["x-trace"], "h2", "{seen}");
        assert_eq!(seen["headers"]["x-forwarded-proto"], "https", "{seen}");
        // the service sees the host the client asked for, as with HTTP/1.1
        assert_eq!(
            seen["headers"]["host"],
            format!("localhost:{}", addr.port()),
            "{seen}"
        );
        assert_eq!(
            r.header("strict-transport-security"),
            Some("max-age=63072000; includeSubDomains")
        );
        let rec = gw.record(&r.request_id()).await;
        assert_eq!(rec["host"], "localhost", "{rec}");
    }
    let h1 = reqwest::Client::builder()
        .add_root_certificate(ca)
        .http1_only()
        .build()
        .expect("h1 client");
    let r = h1
        .get(format!(
            "https://localhost:{}/orders/7",
            intermediate.port()
        ))
        .send()
        .await
        .expect("HTTP/1.1 request");
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    let r = Resp::read(r).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json()["headers"]["host"],
        format!("localhost:{}", intermediate.port())
    );

    // an idle HTTP/2 connection is closed (GOAWAY) after keepalive_timeout_ms (1 s here),
    // not kept open for ever; a busy one is not
    let h = hello(modern, "localhost", TLS13, &[b"h2"]).await.unwrap();
    assert_eq!(h.alpn.as_deref(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(h.stream),
    )
    .await
    .expect("h2 handshake");
    let conn = tokio::spawn(conn);
    for i in 0..4 {
        // requests 600 ms apart: each resets the idle clock
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        let req = hyper::Request::get(format!("https://localhost:{}/orders/9", modern.port()))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = sender
            .send_request(req)
            .await
            .expect("HTTP/2 request on a connection in use");
        assert_eq!(resp.status(), 200);
        http_body_util::BodyExt::collect(resp.into_body())
            .await
            .expect("body");
    }
    let idle_from = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the gateway closes an idle HTTP/2 connection");
    assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
    let idle = idle_from.elapsed();
    assert!(idle >= Duration::from_millis(800), "closed after {idle:?}");
    eprintln!("tls_profiles_and_http2: {:?}", started.elapsed());
}

/// Anonymous callers on a route limited `per = "principal"` are limited by
/// their IP (Kong's limit_by fallback), not in one bucket shared by every
/// anonymous caller: one client exhausting its allowance does not lock out
/// another address. Two client addresses on loopback: 127.0.0.1 and 127.0.0.2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_callers_are_limited_per_ip() {
    if !gateway_common::node_ready("anonymous_callers_are_limited_per_ip") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let pki = Pki::new(dir);
    std::fs::write(dir.join("policies.cedar"), ANONYMOUS).unwrap();
    let upstream = Upstream::start(dir);
    let cfg = dir.join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[[listeners]]
name = "main"
address = "127.0.0.1:0"
certificates = [{{ cert_file = "server.pem", key_file = "server.key" }}]

{}

[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "app"
anonymous = true
ratelimit = {{ limit = 1, period_s = 300, burst = 0, per = "principal" }}
"#,
            app_sections(upstream.port)
        ),
    )
    .unwrap();
    let gw = Gateway::start(&cfg, "gateway").await;
    let port = gw.addr("main").port();
    let from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .add_root_certificate(
                reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).expect("CA"),
            )
            .local_address(std::net::IpAddr::from(ip))
            .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], port)))
            .build()
            .expect("client")
    };
    let url = format!("https://localhost:{port}/orders/1");
    let one = from([127, 0, 0, 1]);
    let two = from([127, 0, 0, 2]);
    // allow: the first request from 127.0.0.1
    assert_eq!(send(one.get(&url)).await.status, 200);
    // deny: its second, with the exact error
    let r = send(one.get(&url)).await;
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.json()["error"]["code"], "rate_limited", "{r:?}");
    // allow: another address has its own allowance
    let r = send(two.get(&url)).await;
    assert_eq!(r.status, 200, "{r:?}");
    // and is then limited too
    assert_eq!(send(two.get(&url)).await.status, 429);
}

// ------------------------------------------------------------------ 4. CORS + CSP

const CSP: &str = "default-src 'none'; frame-ancestors 'none'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_and_csp() {
    if !gateway_common::node_ready("cors_and_csp") {
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
        format!(
            r#"[[listeners]]
name = "plain"
address = "127.0.0.1:0"
protocol = "http"
dangerous_plaintext = true

{}

[[routes]]
name = "web"
path_prefix = "/web"
upstream = "app"
anonymous = true
content_security_policy = "{CSP}"
cors = {{ allowed_origins = ["https://app.test"], allowed_methods = ["GET", "PUT"], allowed_headers = ["content-type", "x-trace"], max_age_s = 600 }}

[[routes]]
name = "other"
path_prefix = "/other"
upstream = "app"
anonymous = true
"#,
            app_sections(upstream.port)
        ),
    )
    .unwrap();
    let gw = Gateway::start(&cfg, "gateway").await;
    let c = plain_client();
    let url = format!("http://{}/web/items", gw.addr("plain"));
    let vary_origin = |r: &Resp| {
        r.headers
            .get_all("vary")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case("origin"))
    };
    let preflight = |origin: &str| {
        c.request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .header("access-control-request-headers", "content-type")
    };

    // allow: preflight from the allowed origin, answered by the gateway
    let r = send(preflight("https://app.test")).await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.test")
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, PUT"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("content-type, x-trace")
    );
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert_eq!(r.header("access-control-allow-credentials"), None);
    assert!(vary_origin(&r), "{r:?}");
    assert_eq!(r.header("content-security-policy"), Some(CSP));
    assert!(r.body.is_empty(), "{r:?}");
    let rec = gw.record(&r.request_id()).await;
    assert_eq!(rec["reason"], "cors_preflight", "{rec}");
    assert_eq!(rec["upstream"], "", "the preflight was forwarded: {rec}");

    // deny: preflight from another origin
    let r = send(preflight("https://evil.test")).await;
    r.assert_error(403, "forbidden", "preflight from a disallowed origin");
    assert_eq!(r.header("access-control-allow-origin"), None, "{r:?}");
    assert_eq!(r.header("access-control-allow-methods"), None, "{r:?}");
    let rec = gw.record(&r.request_id()).await;
    assert_eq!(rec["reason"], "cors_origin_not_allowed", "{rec}");
    assert_eq!(rec["category"], "access_denied", "{rec}");
    // a preflight without Origin is no CORS request from an allowed origin either
    let r = send(
        c.request(reqwest::Method::OPTIONS, &url)
            .header("access-control-request-method", "PUT"),
    )
    .await;
    r.assert_error(403, "forbidden", "preflight without Origin");

    // actual request from the allowed origin: ACAO + Vary, and the route's CSP
    let r = send(c.get(&url).header("origin", "https://app.test")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.test")
    );
    assert!(vary_origin(&r), "{r:?}");
    assert_eq!(r.header("content-security-policy"), Some(CSP));
    assert_eq!(r.json()["headers"]["origin"], "https://app.test");

    // from a disallowed origin: served (the browser enforces), no ACAO
    let r = send(c.get(&url).header("origin", "https://evil.test")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), None, "{r:?}");
    assert_eq!(r.header("access-control-allow-credentials"), None, "{r:?}");
    assert_eq!(r.header("content-security-policy"), Some(CSP));
    // ...but Vary: Origin, so a shared cache never hands this answer to the allowed origin
    assert!(vary_origin(&r), "{r:?}");
    // no Origin at all: no ACAO either, still Vary: Origin
    let r = send(c.get(&url)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), None, "{r:?}");
    assert!(vary_origin(&r), "{r:?}");

    // a route without CORS / CSP config: neither; an OPTIONS there is just a request
    let other = format!("http://{}/other/x", gw.addr("plain"));
    let r = send(c.get(&other).header("origin", "https://app.test")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), None, "{r:?}");
    assert_eq!(r.header("content-security-policy"), None, "{r:?}");
    let r = send(
        c.request(reqwest::Method::OPTIONS, &other)
            .header("origin", "https://app.test")
            .header("access-control-request-method", "PUT"),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["method"], "OPTIONS", "forwarded to the service");
    assert_eq!(r.header("access-control-allow-origin"), None, "{r:?}");
    eprintln!("cors_and_csp: {:?}", started.elapsed());
}

// ------------------------------------------------------------------ 5. routing

const ROUTING_POLICIES: &str = r#"
@id("anonymous")
permit(principal == Anonymous::"anonymous", action, resource);

@id("consumers")
permit(principal, action, resource == Route::"private")
when { context.auth_method == "apikey" };
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing() {
    if !gateway_common::node_ready("routing") {
        return;
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::write(dir.join("policies.cedar"), ROUTING_POLICIES).unwrap();
    std::fs::write(
        dir.join("pepper"),
        "a-pepper-for-the-routing-e2e-test-0123456789",
    )
    .unwrap();
    let upstream = Upstream::start(dir);
    let cfg = dir.join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[[listeners]]
name = "plain"
address = "127.0.0.1:0"
protocol = "http"
dangerous_plaintext = true

[admin]
address = "127.0.0.1:0"

[limits]
max_body_bytes = 1024

[[upstreams]]
name = "app"
endpoints = ["127.0.0.1:{}"]

[apikeys]
database = "keys.db"
pepper_file = "pepper"

[authorization]
policy_file = "policies.cedar"

[[routes]]
name = "api"
hosts = ["api.test"]
path_prefix = "/v1"
upstream = "app"
anonymous = true

[[routes]]
name = "apps"
hosts = ["*.apps.test"]
path_prefix = "/v1"
upstream = "app"
anonymous = true

[[routes]]
name = "reports"
path_prefix = "/reports"
methods = ["GET"]
upstream = "app"
anonymous = true

[[routes]]
name = "svc"
path_prefix = "/svc"
strip_prefix = true
upstream = "app"
anonymous = true

[[routes]]
name = "upload"
path_prefix = "/upload"
max_body_bytes = 4096
upstream = "app"
anonymous = true

[[routes]]
name = "small"
path_prefix = "/small"
upstream = "app"
anonymous = true

[[routes]]
name = "public"
path_prefix = "/public"
upstream = "app"
anonymous = true

[[routes]]
name = "private"
path_prefix = "/private"
upstream = "app"
authn = ["apikey"]
"#,
            upstream.port
        ),
    )
    .unwrap();
    let (key, _) = Gateway::apikey_create(&cfg, "partner", &["any"]);
    let gw = Gateway::start(&cfg, "gateway").await;
    let c = plain_client();
    let base = format!("http://{}", gw.addr("plain"));

    // 404: no route
    let r = send(c.get(format!("{base}/nowhere"))).await;
    r.assert_error(404, "not_found", "no route");
    let r = send(c.get(format!("{base}/reportsx"))).await;
    r.assert_error(404, "not_found", "prefix on a segment boundary only");

    // 405: the path matches, the method does not
    let r = send(c.get(format!("{base}/reports/q1"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = send(c.post(format!("{base}/reports/q1")).body("x")).await;
    r.assert_error(405, "method_not_allowed", "POST on a GET-only route");
    let r = send(c.delete(format!("{base}/reports"))).await;
    r.assert_error(405, "method_not_allowed", "DELETE on a GET-only route");

    // TRACE and extension methods never reach a route, even one without a method list
    let r = send(c.request(
        reqwest::Method::from_bytes(b"TRACE").unwrap(),
        format!("{base}/public/x"),
    ))
    .await;
    r.assert_error(405, "method_not_allowed", "TRACE");
    let r = send(c.request(
        reqwest::Method::from_bytes(b"PROPFIND").unwrap(),
        format!("{base}/public/x"),
    ))
    .await;
    r.assert_error(405, "method_not_allowed", "extension method");

    // client-supplied forwarding headers are replaced by what the gateway saw
    let r = send(
        c.get(format!("{base}/public/x"))
            .header("x-forwarded-for", "6.6.6.6")
            .header("forwarded", "for=6.6.6.6")
            .header("x-real-ip", "6.6.6.6"),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = &r.json()["headers"];
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "{seen}");
    assert!(
        seen.get("forwarded").is_none() && seen.get("x-real-ip").is_none(),
        "{seen}"
    );
    assert_eq!(seen["x-forwarded-proto"], "http");

    // hosts: exact, wildcard (one label), port and case ignored; nothing else
    for (host, want) in [
        ("api.test", "api"),
        ("API.Test:8080", "api"),
        ("x.apps.test", "apps"),
        ("x.apps.test:443", "apps"),
    ] {
        let r = send(c.get(format!("{base}/v1/things")).header("host", host)).await;
        assert_eq!(r.status, 200, "host {host}: {r:?}");
        assert_eq!(
            gw.record(&r.request_id()).await["route"],
            want,
            "host {host}"
        );
        // the canonical authority the policies saw: lowercase, port kept
        assert_eq!(
            r.json()["headers"]["host"],
            host.to_ascii_lowercase(),
            "the service sees the host"
        );
    }
    for host in [
        "apps.test",
        "y.x.apps.test",
        "xapps.test",
        "api.test.evil",
        "www.api.test",
        "127.0.0.1",
    ] {
        let r = send(c.get(format!("{base}/v1/things")).header("host", host)).await;
        r.assert_error(404, "not_found", &format!("host {host}"));
    }

    // strip_prefix: the service sees the path without the prefix (query kept)
    let r = send(c.get(format!("{base}/svc/items/7?q=1"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["path"], "/items/7");
    assert_eq!(r.json()["url"], "/items/7?q=1");
    let r = send(c.get(format!("{base}/svc"))).await;
    assert_eq!(r.json()["url"], "/");
    let r = send(c.get(format!("{base}/svc/"))).await;
    assert_eq!(r.json()["url"], "/");
    // without strip_prefix the path is kept
    let r = send(c.get(format!("{base}/public/items/7"))).await;
    assert_eq!(r.json()["path"], "/public/items/7");

    // per-route max_body_bytes (4096) overrides the global 1024
    let r = send(c.post(format!("{base}/upload/f")).body(vec![b'x'; 3000])).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["body_bytes"], 3000);
    let r = send(c.post(format!("{base}/upload/f")).body(vec![b'x'; 4096])).await;
    assert_eq!(r.status, 200, "at the limit: {r:?}");
    let r = send(c.post(format!("{base}/upload/f")).body(vec![b'x'; 4097])).await;
    r.assert_error(413, "payload_too_large", "over the route's limit");
    // a route without its own limit: the global one
    let r = send(c.post(format!("{base}/small/f")).body(vec![b'x'; 1024])).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = send(c.post(format!("{base}/small/f")).body(vec![b'x'; 3000])).await;
    r.assert_error(413, "payload_too_large", "over the global limit");

    // anonymous beside authenticated
    let r = send(c.get(format!("{base}/public/x"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    let rec = gw.record(&r.request_id()).await;
    assert_eq!(rec["principal"], "anonymous", "{rec}");
    let r = send(c.get(format!("{base}/private/x"))).await;
    r.assert_error(401, "unauthenticated", "no credential on an authn route");
    assert!(r.header("www-authenticate").is_some(), "{r:?}");
    let rec = gw.record(&r.request_id()).await;
    assert_eq!(rec["category"], "authentication_failure", "{rec}");
    let r = send(c.get(format!("{base}/private/x")).header("x-api-key", &key)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        gw.record(&r.request_id()).await["principal"],
        "apikey:partner"
    );
    eprintln!("routing: {:?}", started.elapsed());
}

// ------------------------------------------------------------------ 6. rate-limit store down

fn redis_down_config(dir: &Path, name: &str, upstream_port: u16, on_failure: &str) -> String {
    let text = format!(
        r#"[[listeners]]
name = "plain"
address = "127.0.0.1:0"
protocol = "http"
dangerous_plaintext = true

[admin]
address = "127.0.0.1:0"

[ratelimit]
store = "redis"
redis_url = "redis://127.0.0.1:1"
redis_timeout_ms = 200
on_store_failure = "{on_failure}"

[[upstreams]]
name = "app"
endpoints = ["127.0.0.1:{upstream_port}"]

[authorization]
policy_file = "policies.cedar"

[[routes]]
name = "limited"
path_prefix = "/orders"
upstream = "app"
anonymous = true
ratelimit = {{ limit = 2, period_s = 300, burst = 1, per = "route" }}
"#
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Statuses of `n` requests to the limited route.
async fn statuses(gw: &Gateway, n: usize) -> Vec<Resp> {
    let c = plain_client();
    let mut out = Vec::new();
    for i in 0..n {
        out.push(send(c.get(format!("http://{}/orders/{i}", gw.addr("plain")))).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratelimit_store_down() {
    if !gateway_common::node_ready("ratelimit_store_down") {
        return;
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::write(dir.join("policies.cedar"), ANONYMOUS).unwrap();
    let upstream = Upstream::start(dir);
    const N: usize = 5;
    let codes = |rs: &[Resp]| rs.iter().map(|r| r.status).collect::<Vec<_>>();
    let store_down = |gw: &Gateway| {
        gw.stderr()
            .contains("\"category\":\"ratelimit_store_unavailable\"")
    };

    // "fail_open" is refused: the operator must spell out the danger
    let path = redis_down_config(dir, "fail_open", upstream.port, "fail_open");
    let (code, out, err) = gateway_common::palisade(&["config", "check", &path], &[]);
    assert_eq!(code, 1, "config check with fail_open: {out}{err}");
    assert_eq!(
        err,
        format!(
            "{path}: ratelimit.on_store_failure: \"fail_open\" disables rate limiting when Redis is down; spell it \"dangerous_fail_open\" to confirm\n"
        )
    );
    assert!(out.is_empty(), "{out}");

    // fail_closed: every request refused while the store is down
    let path = redis_down_config(dir, "fail_closed", upstream.port, "fail_closed");
    let gw = Gateway::start(Path::new(&path), "fail_closed").await;
    let rs = statuses(&gw, N).await;
    for (i, r) in rs.iter().enumerate() {
        r.assert_error(429, "rate_limited", &format!("fail_closed request {i}"));
        assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
    }
    let rec = gw.record(&rs[0].request_id()).await;
    assert_eq!(rec["category"], "rate_limited", "{rec}");
    assert_eq!(rec["reason"], "route", "{rec}");
    assert!(store_down(&gw), "{}", gw.stderr());
    drop(gw);

    // local_fallback: exactly the local quota (burst + 1 = 2)
    let path = redis_down_config(dir, "local_fallback", upstream.port, "local_fallback");
    let gw = Gateway::start(Path::new(&path), "local_fallback").await;
    let rs = statuses(&gw, N).await;
    assert_eq!(codes(&rs), [200, 200, 429, 429, 429], "{rs:?}");
    assert!(
        rs[0]
            .header("ratelimit")
            .is_some_and(|v| v.starts_with("\"route\";r=1;t=")),
        "{:?}",
        rs[0]
    );
    rs[2].assert_error(429, "rate_limited", "local_fallback over the quota");
    assert!(store_down(&gw), "{}", gw.stderr());
    drop(gw);

    // dangerous_fail_open: every request passes
    let path = redis_down_config(dir, "fail_open_ok", upstream.port, "dangerous_fail_open");
    let gw = Gateway::start(Path::new(&path), "dangerous_fail_open").await;
    let rs = statuses(&gw, N).await;
    assert_eq!(codes(&rs), [200; N], "{rs:?}");
    assert!(store_down(&gw), "{}", gw.stderr());
    eprintln!("ratelimit_store_down: {:?}", started.elapsed());
}

/// A method the most specific route does not list gets 405; it never falls
/// through to a shorter (here anonymous) route and reaches the service that way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_never_falls_through_to_a_weaker_route() {
    if !gateway_common::node_ready("method_never_falls_through_to_a_weaker_route") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::write(
        dir.join("policies.cedar"),
        format!("{ROUTING_POLICIES}\n@id(\"writers\")\npermit(principal, action, resource == Route::\"private-write\") when {{ context.auth_method == \"apikey\" }};\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("pepper"),
        "a-pepper-for-the-fallthrough-e2e-test-0123456789",
    )
    .unwrap();
    let upstream = Upstream::start(dir);
    let cfg = dir.join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[[listeners]]
name = "plain"
address = "127.0.0.1:0"
protocol = "http"
dangerous_plaintext = true

[admin]
address = "127.0.0.1:0"

[[upstreams]]
name = "app"
endpoints = ["127.0.0.1:{}"]

[apikeys]
database = "keys.db"
pepper_file = "pepper"

[authorization]
policy_file = "policies.cedar"

[[routes]]
name = "everything"
path_prefix = "/"
upstream = "app"
anonymous = true

[[routes]]
name = "private"
path_prefix = "/private"
methods = ["GET"]
upstream = "app"
authn = ["apikey"]

[[routes]]
name = "private-write"
path_prefix = "/private"
methods = ["PUT"]
upstream = "app"
authn = ["apikey"]
"#,
            upstream.port
        ),
    )
    .unwrap();
    let (key, _) = Gateway::apikey_create(&cfg, "partner", &["any"]);
    let gw = Gateway::start(&cfg, "gateway").await;
    let c = plain_client();
    let base = format!("http://{}", gw.addr("plain"));
    // allow: the catch-all serves other paths anonymously
    let r = send(c.get(format!("{base}/public/x"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    // allow: GET and PUT on /private with a key, each by its own route
    let r = send(c.get(format!("{base}/private/x")).header("x-api-key", &key)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(gw.record(&r.request_id()).await["route"], "private");
    let r = send(
        c.put(format!("{base}/private/x"))
            .header("x-api-key", &key)
            .body("x"),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(gw.record(&r.request_id()).await["route"], "private-write");
    // deny: POST /private is not listed by the /private routes: 405, not the anonymous catch-all
    let r = send(c.post(format!("{base}/private/x")).body("x")).await;
    r.assert_error(
        405,
        "method_not_allowed",
        "POST must not fall through to the / route",
    );
    // deny: without a key, GET /private is 401 (the /private route decides, not /)
    let r = send(c.get(format!("{base}/private/x"))).await;
    r.assert_error(401, "unauthenticated", "no key");
}

/// The sections most of these configs share: the admin listener, the
/// upstream `app` at `port`, and the Cedar policy file.
fn app_sections(port: u16) -> String {
    format!(
        r#"[admin]
address = "127.0.0.1:0"

[[upstreams]]
name = "app"
endpoints = ["127.0.0.1:{port}"]

[authorization]
policy_file = "policies.cedar"
"#
    )
}
