//! The cert auth method over a real TLS listener: a client certificate
//! issued by a role's CA with allowed names logs in; no certificate,
//! another CA, an expired certificate, names outside the role's, a role
//! named whose CA does not verify, and plain HTTP are each refused with the
//! same 400.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use common::*;
use serde_json::{Value, json};

const INVALID: &str = "invalid certificate or no client certificate supplied";

struct Ca {
    pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    let cert = p.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: rcgen::Issuer::new(p, key),
    }
}

/// A certificate and its key (PEM) from `ca`: `cn`, SANs, and whether it
/// has expired.
fn leaf(ca: &Ca, cn: &str, sans: &[&str], expired: bool) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    for s in sans {
        p.subject_alt_names.push(if s.contains("://") {
            rcgen::SanType::URI(rcgen::string::Ia5String::try_from(*s).unwrap())
        } else if let Ok(ip) = s.parse() {
            rcgen::SanType::IpAddress(ip)
        } else {
            rcgen::SanType::DnsName(rcgen::string::Ia5String::try_from(*s).unwrap())
        });
    }
    if expired {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A TLS listener on the same core as `s`, with a server certificate from
/// `ca`; returns its base URL.
async fn tls_listener(s: &TestServer, ca: &Ca) -> String {
    let (cert, key) = leaf(ca, "127.0.0.1", &["127.0.0.1"], false);
    let dir = s.path("tls");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
    let tls =
        palisade_server::listener::tls_config(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::mem::forget(tx);
    palisade_server::start(
        s.core.clone(),
        listener,
        Some(tls),
        palisade_server::http::HttpLimits {
            max_request_size: DEFAULT_LIMIT,
            json: palisade_server::json::JsonLimits::DEFAULT,
            body_timeout: palisade_server::http::DEFAULT_BODY_TIMEOUT,
            hsts: true,
        },
        Default::default(),
        async move {
            let _ = rx.await;
        },
    )
    .unwrap();
    base
}

/// POST `auth/cert/login` over TLS, presenting `identity` (cert + key PEM).
async fn login(base: &str, server_ca: &Ca, identity: Option<(&str, &str)>, body: Value) -> Resp {
    tls_post(base, server_ca, identity, "auth/cert/login", "", body).await
}

/// `auth/token/renew-self` over TLS, presenting `identity`.
async fn renew(base: &str, server_ca: &Ca, token: &str, identity: Option<(&str, &str)>) -> Resp {
    tls_post(
        base,
        server_ca,
        identity,
        "auth/token/renew-self",
        token,
        json!({}),
    )
    .await
}

/// POST `path` over TLS with `token` (none when empty), presenting `identity`.
async fn tls_post(
    base: &str,
    server_ca: &Ca,
    identity: Option<(&str, &str)>,
    path: &str,
    token: &str,
    body: Value,
) -> Resp {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(server_ca.pem.as_bytes()).unwrap()]);
    if let Some((cert, key)) = identity {
        b = b.identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    let mut rb = b
        .build()
        .unwrap()
        .post(format!("{base}/v1/{path}"))
        .json(&body);
    if !token.is_empty() {
        rb = rb.header("X-Vault-Token", token);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        headers: Default::default(),
        body,
        text,
    }
}

#[tokio::test]
async fn a_client_certificate_from_the_roles_ca_with_allowed_names_logs_in_and_nothing_else_does() {
    let s = TestServer::dev().await;
    s.kv_put("shared", json!({"v": "1"})).await;
    s.write_policy(
        "read-shared",
        r#"path "secret/data/shared" { capabilities = ["read"] }"#,
    )
    .await;
    let r = s
        .post("sys/auth/cert", &s.root, json!({"type": "cert"}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let services = ca("services CA");
    let other = ca("another CA");
    let server_ca = ca("server CA");
    let base = tls_listener(&s, &server_ca).await;

    // a role needs a CA bundle that parses
    for (body, msg) in [
        (
            json!({"token_policies": "read-shared"}),
            "certificate is required: the CA certificates the role trusts",
        ),
        (
            json!({"certificate": "not a pem"}),
            "certificate: expected one or more PEM CA certificates",
        ),
        (
            json!({"certificate": services.pem, "required_extensions": ["1.2.3:x"]}),
            "required_extensions is not supported: a role binds a CA and names only",
        ),
    ] {
        assert_error(
            &s.post("auth/cert/certs/web", &s.root, body).await,
            400,
            msg,
        );
    }
    let r = s
        .post(
            "auth/cert/certs/web",
            &s.root,
            json!({
                "certificate": services.pem,
                "allowed_common_names": "*.svc.internal",
                "allowed_uri_sans": "spiffe://prod/ns/*/sa/web",
                "token_policies": "read-shared",
                "token_ttl": "10m",
            }),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.get("auth/cert/certs/web", &s.root).await;
    assert_eq!(r.data()["allowed_common_names"], json!(["*.svc.internal"]));
    // a second role trusting another CA
    s.post(
        "auth/cert/certs/partner",
        &s.root,
        json!({"certificate": other.pem, "token_policies": "default"}),
    )
    .await;

    let (good, good_key) = leaf(
        &services,
        "web.svc.internal",
        &["spiffe://prod/ns/pay/sa/web"],
        false,
    );
    let r = login(&base, &server_ca, Some((&good, &good_key)), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let token = r.auth()["client_token"].as_str().unwrap().to_string();
    assert_eq!(r.auth()["metadata"]["cert_name"], "web");
    assert_eq!(r.auth()["metadata"]["common_name"], "web.svc.internal");
    assert_eq!(r.auth()["lease_duration"], 600);
    assert_eq!(s.get("secret/data/shared", &token).await.status, 200);
    // its entity's alias is the common name
    let acc = s.get("sys/auth", &s.root).await.data()["cert/"]["accessor"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s
        .post(
            "identity/lookup/entity",
            &s.root,
            json!({"alias_name": "web.svc.internal", "alias_mount_accessor": acc}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // naming the role works too
    let r = login(
        &base,
        &server_ca,
        Some((&good, &good_key)),
        json!({"name": "web"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // denials: each the same 400
    let (foreign, foreign_key) = leaf(
        &other,
        "web.svc.internal",
        &["spiffe://prod/ns/pay/sa/web"],
        false,
    );
    let (old, old_key) = leaf(
        &services,
        "web.svc.internal",
        &["spiffe://prod/ns/pay/sa/web"],
        true,
    );
    let (bad_cn, bad_cn_key) = leaf(
        &services,
        "web.svc.internal.evil.example",
        &["spiffe://prod/ns/pay/sa/web"],
        false,
    );
    let (bad_uri, bad_uri_key) = leaf(
        &services,
        "web.svc.internal",
        &["spiffe://prod/ns/pay/sa/admin"],
        false,
    );
    let cases: Vec<(Option<(&str, &str)>, Value)> = vec![
        (None, json!({})),
        (Some((&old, &old_key)), json!({})),
        (Some((&bad_cn, &bad_cn_key)), json!({})),
        (Some((&bad_uri, &bad_uri_key)), json!({})),
        // the other CA's certificate logs in to its own role only
        (Some((&foreign, &foreign_key)), json!({"name": "web"})),
        (Some((&good, &good_key)), json!({"name": "partner"})),
        (Some((&good, &good_key)), json!({"name": "missing"})),
    ];
    for (identity, body) in cases {
        let r = login(&base, &server_ca, identity, body.clone()).await;
        assert_error(&r, 400, INVALID);
    }
    let r = login(&base, &server_ca, Some((&foreign, &foreign_key)), json!({})).await;
    assert_eq!(r.status, 200, "the partner role: {}", r.text);
    assert_eq!(r.auth()["metadata"]["cert_name"], "partner");
    // over plain HTTP there is no certificate at all
    let r = s.post("auth/cert/login", "", json!({})).await;
    assert_error(&r, 400, INVALID);
    // renewal: over a connection presenting the certificate that logged in
    // (Vault's pathLoginRenew), still accepted by the role as it is now
    let r = renew(&base, &server_ca, &token, Some((&good, &good_key))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.auth()["lease_duration"], 600);
    // deny: no certificate (plain HTTP or TLS without one), another
    // certificate with the same names from the same CA
    assert_error(
        &s.post("auth/token/renew-self", &token, json!({})).await,
        400,
        INVALID,
    );
    assert_error(&renew(&base, &server_ca, &token, None).await, 400, INVALID);
    let (twin, twin_key) = leaf(
        &services,
        "web.svc.internal",
        &["spiffe://prod/ns/pay/sa/web"],
        false,
    );
    assert_error(
        &renew(&base, &server_ca, &token, Some((&twin, &twin_key))).await,
        400,
        INVALID,
    );
    // deny: the role no longer allows the certificate's names
    let r = s
        .post(
            "auth/cert/certs/web",
            &s.root,
            json!({
                "certificate": services.pem,
                "allowed_common_names": "api.svc.internal",
                "token_policies": "read-shared",
                "token_ttl": "10m",
            }),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_error(
        &renew(&base, &server_ca, &token, Some((&good, &good_key))).await,
        400,
        INVALID,
    );
    // deny: the role no longer trusts the CA
    let r = s
        .post(
            "auth/cert/certs/web",
            &s.root,
            json!({
                "certificate": other.pem,
                "allowed_common_names": "*.svc.internal",
                "allowed_uri_sans": "spiffe://prod/ns/*/sa/web",
                "token_policies": "read-shared",
                "token_ttl": "10m",
            }),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_error(
        &renew(&base, &server_ca, &token, Some((&good, &good_key))).await,
        400,
        INVALID,
    );
    // the role as it was: renews again; a deleted role stops it
    let r = s
        .post(
            "auth/cert/certs/web",
            &s.root,
            json!({
                "certificate": services.pem,
                "allowed_common_names": "*.svc.internal",
                "allowed_uri_sans": "spiffe://prod/ns/*/sa/web",
                "token_policies": "read-shared",
                "token_ttl": "10m",
            }),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(
        renew(&base, &server_ca, &token, Some((&good, &good_key)))
            .await
            .status,
        200
    );
    s.delete("auth/cert/certs/web", &s.root).await;
    let r = renew(&base, &server_ca, &token, Some((&good, &good_key))).await;
    assert_eq!(r.status, 400, "{}", r.text);
}

/// An X.509 v1 client certificate (what `openssl x509 -req` makes without
/// extensions, and what hvac's test suite sends) from a CA made by openssl:
/// (ca, cert, key) PEM.
fn openssl_v1_client() -> (String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).to_string_lossy().to_string();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    let (cak, cap) = (d("ca.key"), d("ca.pem"));
    a.extend([
        "-keyout",
        &cak,
        "-out",
        &cap,
        "-subj",
        "/CN=v1 CA",
        "-days",
        "2",
    ]);
    run(&a);
    let mut b = vec!["req", "-new"];
    b.extend(ec);
    let (lk, lcsr, lp) = (d("l.key"), d("l.csr"), d("l.pem"));
    b.extend([
        "-keyout",
        &lk,
        "-out",
        &lcsr,
        "-subj",
        "/CN=web.svc.internal",
    ]);
    run(&b);
    run(&[
        "x509", "-req", "-in", &lcsr, "-CA", &cap, "-CAkey", &cak, "-out", &lp, "-days", "1",
    ]);
    let read = |p: &str| std::fs::read_to_string(p).unwrap();
    (read(&cap), read(&lp), read(&lk))
}

#[tokio::test]
async fn a_client_certificate_webpki_cannot_read_does_not_break_tls_and_never_logs_in() {
    let s = TestServer::dev().await;
    s.post("sys/auth/cert", &s.root, json!({"type": "cert"}))
        .await;
    let (v1_ca, v1_cert, v1_key) = openssl_v1_client();
    let r = s
        .post(
            "auth/cert/certs/v1",
            &s.root,
            json!({"certificate": v1_ca, "token_policies": "default"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let server_ca = ca("server CA");
    let base = tls_listener(&s, &server_ca).await;
    // the connection works (Vault accepts such clients; rustls clients
    // refuse to send such a certificate, so Python's OpenSSL one does) ...
    let dir = tempfile::tempdir().unwrap();
    let f = |n: &str, body: &str| {
        let p = dir.path().join(n);
        std::fs::write(&p, body).unwrap();
        p.to_string_lossy().to_string()
    };
    let (ca_f, cert_f, key_f) = (
        f("server-ca.pem", &server_ca.pem),
        f("client.pem", &v1_cert),
        f("client.key", &v1_key),
    );
    let script = r#"
import json, ssl, sys, urllib.request, urllib.error
base, ca, cert, key = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)
def call(method, path, body=None):
    req = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(req, context=ctx) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
print(json.dumps([call("GET", "/v1/sys/health"), call("POST", "/v1/auth/cert/login", {})]))
"#;
    // off the runtime: the server answering it runs on this test's runtime
    let args: Vec<String> = vec!["-c".into(), script.into(), base, ca_f, cert_f, key_f];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(&args)
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got[0][0], 200, "{got}");
    // ... but the certificate is never trusted
    assert_eq!(got[1][0], 400, "{got}");
    let body: Value = serde_json::from_str(got[1][1].as_str().unwrap()).unwrap();
    assert_eq!(body, json!({"errors": [INVALID]}));
}

/// A v3 certificate with two common names (`first`, `second`), from a CA
/// made by openssl: (ca, cert, key) PEM.
fn openssl_two_cns(first: &str, second: &str) -> (String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).to_string_lossy().to_string();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (cak, cap, lk, lcsr, lp, ext) = (
        d("ca.key"),
        d("ca.pem"),
        d("l.key"),
        d("l.csr"),
        d("l.pem"),
        d("ext.cnf"),
    );
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend([
        "-keyout",
        &cak,
        "-out",
        &cap,
        "-subj",
        "/CN=two-cn CA",
        "-days",
        "2",
    ]);
    run(&a);
    let subj = format!("/CN={first}/CN={second}");
    let mut b = vec!["req", "-new"];
    b.extend(ec);
    b.extend([
        "-keyout",
        &lk,
        "-out",
        &lcsr,
        "-subj",
        &subj,
        "-multivalue-rdn",
    ]);
    run(&b);
    std::fs::write(&ext, "basicConstraints=CA:FALSE\n").unwrap();
    run(&[
        "x509", "-req", "-in", &lcsr, "-CA", &cap, "-CAkey", &cak, "-out", &lp, "-days", "1",
        "-extfile", &ext,
    ]);
    let read = |p: &str| std::fs::read_to_string(p).unwrap();
    (read(&cap), read(&lp), read(&lk))
}

#[tokio::test]
async fn review_findings_pins_expired_anchors_two_names_allowed_names_and_login_verbs() {
    let s = TestServer::dev().await;
    s.post("sys/auth/cert", &s.root, json!({"type": "cert"}))
        .await;
    let server_ca = ca("server CA");
    let base = tls_listener(&s, &server_ca).await;
    let services = ca("services CA");

    // a non-CA certificate in a role is a pin: it logs in itself, and what
    // its key signs does not (it was a trust anchor)
    let (pinned, pinned_key) = leaf(&services, "pinned.svc.internal", &[], false);
    let r = s
        .post(
            "auth/cert/certs/pin",
            &s.root,
            json!({"certificate": pinned, "token_policies": "default"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = login(
        &base,
        &server_ca,
        Some((&pinned, &pinned_key)),
        json!({"name": "pin"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let minted = {
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::CertificateDer::from_pem_slice(pinned.as_bytes()).unwrap();
        let issuer =
            rcgen::Issuer::from_ca_cert_der(&der, rcgen::KeyPair::from_pem(&pinned_key).unwrap())
                .unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "admin");
        let c = p.signed_by(&key, &issuer).unwrap();
        (c.pem(), key.serialize_pem())
    };
    let r = login(
        &base,
        &server_ca,
        Some((&minted.0, &minted.1)),
        json!({"name": "pin"}),
    )
    .await;
    assert_error(&r, 400, INVALID);

    // an expired CA vouches for nobody, however long its leaves live
    let expired_ca = {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "expired CA");
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let cert = p.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(p, key),
        }
    };
    s.post(
        "auth/cert/certs/old",
        &s.root,
        json!({"certificate": expired_ca.pem, "token_policies": "default"}),
    )
    .await;
    let (l, k) = leaf(&expired_ca, "web.svc.internal", &[], false);
    let r = login(&base, &server_ca, Some((&l, &k)), json!({"name": "old"})).await;
    assert_error(&r, 400, INVALID);

    // two common names: refused (the name checks and the identity would
    // read different ones)
    let (two_ca, two, two_key) = openssl_two_cns("admin", "web.svc.internal");
    s.post(
        "auth/cert/certs/two",
        &s.root,
        json!({"certificate": two_ca, "allowed_common_names": "web.svc.internal"}),
    )
    .await;
    let r = login(
        &base,
        &server_ca,
        Some((&two, &two_key)),
        json!({"name": "two"}),
    )
    .await;
    assert_error(&r, 400, INVALID);

    // allowed_names is its own list (CN, DNS or email SAN), applied with
    // the others
    s.post(
        "auth/cert/certs/both",
        &s.root,
        json!({"certificate": services.pem, "allowed_common_names": "*", "allowed_names": "web.svc.internal"}),
    )
    .await;
    let r = s.get("auth/cert/certs/both", &s.root).await;
    assert_eq!(r.data()["allowed_names"], json!(["web.svc.internal"]));
    let (admin, admin_key) = leaf(&services, "admin", &[], false);
    let r = login(
        &base,
        &server_ca,
        Some((&admin, &admin_key)),
        json!({"name": "both"}),
    )
    .await;
    assert_error(&r, 400, INVALID);
    let (web, web_key) = leaf(&services, "x", &["web.svc.internal"], false);
    let r = login(
        &base,
        &server_ca,
        Some((&web, &web_key)),
        json!({"name": "both"}),
    )
    .await;
    assert_eq!(
        r.status, 200,
        "a DNS SAN satisfies allowed_names: {}",
        r.text
    );

    // a login is a POST: GET and DELETE mint nothing (any method)
    for path in ["auth/cert/login"] {
        assert_eq!(s.get(path, "").await.status, 405);
        assert_eq!(s.delete(path, "").await.status, 405);
    }
}
