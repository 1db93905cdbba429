//! Client-certificate authentication through a real `palisade gateway`
//! process: an HTTPS listener with `client_auth = { mode = "required" }`
//! against an rcgen CA, a route with `authn = ["mtls"]` and a Cedar policy on
//! `context.cert_uris`, in front of the Express service.
//!
//! - allow: a certificate from the CA with SAN URI spiffe://test/billing -> 200,
//!   and the service sees the URI in `x-client-uri` (a client's own copy is dropped);
//! - deny: a certificate from the CA with another URI -> 403 `forbidden`
//!   (logged as `access_denied`, principal `mtls:spiffe://test/web`);
//! - deny: no client certificate -> the TLS handshake fails (no HTTP response);
//! - deny: a certificate from another CA -> the TLS handshake fails;
//! - a plain-HTTP listener without `dangerous_plaintext` answers every
//!   request with a 308 to https (path and query kept) and never proxies.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod gateway_common;

use std::time::Duration;

use gateway_common::{Gateway, Pki, Upstream, plain_client, send};

const GET: &[u8] = b"GET /billing/raw HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

const POLICIES: &str = r#"
@id("billing-workload")
permit(principal, action, resource == Route::"billing")
when { context.auth_method == "mtls" && context.cert_uris.contains("spiffe://test/billing") };
"#;

fn config(upstream_port: u16) -> String {
    format!(
        r#"[[listeners]]
name = "internal"
address = "127.0.0.1:0"
certificates = [{{ cert_file = "server.pem", key_file = "server.key" }}]
client_auth = {{ ca_file = "ca.pem", mode = "required" }}

[[listeners]]
name = "redirect"
address = "127.0.0.1:0"
protocol = "http"
redirect_https_port = 8443

[admin]
address = "127.0.0.1:0"

[[upstreams]]
name = "app"
endpoints = ["127.0.0.1:{upstream_port}"]

[authorization]
policy_file = "policies.cedar"

[[routes]]
name = "billing"
path_prefix = "/billing"
upstream = "app"
authn = ["mtls"]
forward_identity = {{ "x-client-uri" = "cert_uri" }}
"#
    )
}

/// The error chain of a failed request, for matching the TLS alert.
fn chain(e: &reqwest::Error) -> String {
    let mut s = format!("{e:?}");
    let mut src = std::error::Error::source(e);
    while let Some(x) = src {
        s.push_str(&format!(" <- {x}"));
        src = x.source();
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_mtls() {
    if !gateway_common::node_ready("gateway_mtls") {
        return;
    }
    let started = std::time::Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let pki = Pki::new(dir);
    std::fs::write(dir.join("policies.cedar"), POLICIES).unwrap();
    let upstream = Upstream::start(dir);
    let cfg = dir.join("gateway.toml");
    std::fs::write(&cfg, config(upstream.port)).unwrap();
    let gw = Gateway::start(&cfg, "gateway").await;
    let base = format!("https://localhost:{}", gw.addr("internal").port());

    // allow: the billing workload
    let billing = pki.client(Some(
        &pki.client_identity("billing", "spiffe://test/billing"),
    ));
    let r = send(
        billing
            .get(format!("{base}/billing/invoices"))
            .header("x-client-uri", "spiffe://test/admin"),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let h = &r.json()["headers"];
    assert_eq!(h["x-client-uri"], "spiffe://test/billing", "{h}");
    let rec = gw.record(&r.request_id()).await;
    assert_eq!(rec["decision"], "allow", "{rec}");
    assert_eq!(rec["auth_method"], "mtls", "{rec}");
    assert_eq!(rec["principal"], "mtls:spiffe://test/billing", "{rec}");
    assert_eq!(rec["reason"], "policy:billing-workload", "{rec}");

    // deny: a valid certificate for another workload
    let web = pki.client(Some(&pki.client_identity("web", "spiffe://test/web")));
    let r = send(web.get(format!("{base}/billing/invoices"))).await;
    r.assert_error(403, "forbidden", "another SAN");
    let rec = gw.record(&r.request_id()).await;
    assert_eq!(rec["principal"], "mtls:spiffe://test/web", "{rec}");
    assert_eq!(rec["category"], "access_denied", "{rec}");
    assert_eq!(rec["reason"], "no_policy_permits", "{rec}");

    // deny: no client certificate -> the handshake is refused. With TLS 1.3
    // the client learns it from the server's alert after its own Finished,
    // so the probe reads: the alert is certificate_required.
    let addr = gw.addr("internal");
    let anon = pki.client(None);
    let e = anon
        .get(format!("{base}/billing/invoices"))
        .send()
        .await
        .expect_err("no client certificate must not get a response");
    assert!(e.is_request() || e.is_connect(), "{}", chain(&e));
    let mut s = gateway_common::tls_connect(addr, "localhost", &pki.ca_pem, None)
        .await
        .expect("TLS 1.3 client side completes");
    let reply = gateway_common::raw_exchange(&mut s, GET, Duration::from_secs(10)).await;
    assert!(reply.closed && reply.text.is_empty(), "{reply:?}");
    assert_eq!(
        reply.error.as_deref(),
        Some("received fatal alert: CertificateRequired"),
        "{reply:?}"
    );

    // deny: a certificate from a CA the listener does not trust -> unknown_ca
    let foreign_id = Pki::foreign_client_identity("billing", "spiffe://test/billing");
    let foreign = pki.client(Some(&foreign_id));
    let e = foreign
        .get(format!("{base}/billing/invoices"))
        .send()
        .await
        .expect_err("a foreign certificate must not get a response");
    assert!(e.is_request() || e.is_connect(), "{}", chain(&e));
    let mut s = gateway_common::tls_connect(addr, "localhost", &pki.ca_pem, Some(&foreign_id))
        .await
        .expect("TLS 1.3 client side completes");
    let reply = gateway_common::raw_exchange(&mut s, GET, Duration::from_secs(10)).await;
    assert!(reply.closed && reply.text.is_empty(), "{reply:?}");
    assert_eq!(
        reply.error.as_deref(),
        Some("received fatal alert: UnknownCA"),
        "{reply:?}"
    );

    // and the raw probe with the right certificate gets an answer (the probe works)
    let good_id = pki.client_identity("billing", "spiffe://test/billing");
    let mut s = gateway_common::tls_connect(addr, "localhost", &pki.ca_pem, Some(&good_id))
        .await
        .expect("handshake");
    let reply = gateway_common::raw_exchange(&mut s, GET, Duration::from_secs(10)).await;
    assert_eq!(reply.status(), Some(200), "{reply:?}");
    // the refused ones never reached the HTTP layer: only the three requests that got answers are logged
    let log = gw.security_log();
    assert_eq!(log.len(), 3, "{log:?}");
    // ... and are counted: exactly the four refused handshakes (no certificate, foreign CA; each
    // by reqwest and by the raw probe), none of the accepted ones
    let metrics = send(plain_client().get(format!("http://{}/metrics", gw.admin))).await;
    let failures: Vec<&str> = metrics
        .body
        .lines()
        .filter(|l| l.starts_with("palisade_gateway_tls_handshake_failures_total"))
        .collect();
    assert_eq!(
        failures,
        [r#"palisade_gateway_tls_handshake_failures_total{listener="internal",reason="error"} 4"#],
        "{}",
        metrics.body
    );

    // plain HTTP without dangerous_plaintext: a redirect, never the route
    let plain = plain_client();
    let port = gw.addr("redirect").port();
    let r = send(plain.get(format!("http://127.0.0.1:{port}/billing/invoices?x=1"))).await;
    assert_eq!(r.status, 308, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some("https://127.0.0.1:8443/billing/invoices?x=1"),
        "{r:?}"
    );
    assert!(
        !r.body.contains("headers"),
        "the redirect listener proxied: {}",
        r.body
    );
    let r = send(
        plain
            .post(format!("http://localhost:{port}/anything"))
            .body("x"),
    )
    .await;
    assert_eq!(r.status, 308, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some("https://localhost:8443/anything"),
        "{r:?}"
    );
    assert_eq!(
        gw.security_log().len(),
        3,
        "the redirect listener must not run the pipeline"
    );
    eprintln!("gateway_mtls: {:?}", started.elapsed());
}
