//! TLS listener of a real `palisade server` process, with a CA and a server
//! certificate for 127.0.0.1/localhost made by rcgen:
//! - reqwest trusting that CA gets 200 from sys/health over https (allow);
//! - `palisade status` works with `--ca-cert` and with `PALISADE_CACERT` (allow),
//!   and fails (exit 2) without the CA (deny);
//! - plain http:// to the TLS port gets no HTTP answer (deny);
//! - a client without the CA fails the handshake (deny).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use common::{Server, Spec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_pem = common::make_pki(dir.path());
    let mut spec = Spec::sqlite(dir.path());
    spec.tls = Some((dir.path().join("server.pem"), dir.path().join("server.key")));
    spec.ca_pem = Some(ca_pem.clone().into_bytes());
    let server = Server::start(&spec).await; // polls sys/health over https with the CA
    assert!(server.addr.starts_with("https://"));

    // (a) allow: a client trusting the CA, by IP and by name
    let trusted = spec.client();
    let (keys, _root) = common::init(&trusted, &server, 1, 1).await;
    common::unseal(&trusted, &server, &keys).await;
    for base in [
        server.addr.clone(),
        format!("https://localhost:{}", server.port),
    ] {
        let r = trusted
            .get(format!("{base}/v1/sys/health"))
            .send()
            .await
            .expect("https health");
        assert_eq!(r.status(), 200, "{base}");
    }

    // (b) the CLI, CA by flag and by environment; deny without it
    let ca_file = dir.path().join("ca.pem").display().to_string();
    let addr = server.addr.clone();
    let (code, out, err) =
        common::palisade(&["status", "--address", &addr, "--ca-cert", &ca_file], &[]);
    assert_eq!(code, 0, "status --ca-cert: {out}{err}");
    assert!(out.contains("Sealed") && out.contains("false"), "{out}");
    let (code, out, err) = common::palisade(
        &["status", "-format=json"],
        &[("PALISADE_ADDR", &addr), ("PALISADE_CACERT", &ca_file)],
    );
    assert_eq!(code, 0, "status with PALISADE_CACERT: {out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("status json");
    assert_eq!(v["sealed"], serde_json::json!(false), "{v}");
    let (code, out, err) = common::palisade(&["status", "--address", &addr], &[]);
    assert_eq!(code, 2, "status without the CA must fail: {out}{err}");
    assert!(err.contains("error connecting"), "{err}");

    // (c) deny: plaintext HTTP to the TLS port gets no HTTP answer
    let plain = reqwest::Client::new();
    let r = plain
        .get(format!("http://127.0.0.1:{}/v1/sys/health", server.port))
        .send()
        .await;
    assert!(
        r.is_err(),
        "plain http to the TLS port answered: {:?}",
        r.map(|r| r.status())
    );

    // (d) deny: a client that does not trust the CA fails the handshake
    let untrusted = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("client");
    let e = untrusted
        .get(format!("{}/v1/sys/health", server.addr))
        .send()
        .await
        .expect_err("a client without the CA must not connect");
    let chain = format!("{e:?}");
    assert!(
        e.is_connect() && chain.contains("InvalidCertificate(UnknownIssuer)"),
        "expected the handshake to fail on the unknown issuer, got {chain}"
    );
}
