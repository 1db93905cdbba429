//! The PKI engine over HTTP: a root CA, roles and their name rules, issue,
//! revocation and the CRL, tidy; chains and CRLs checked by an independent
//! tool (`openssl verify`), private keys kept out of the audit log.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::{Value, json};

async fn pki() -> TestServer {
    let s = TestServer::dev().await;
    // as Vault's tutorials do: a CA needs a mount max TTL above the system's
    let r = s
        .post(
            "sys/mounts/pki",
            &s.root,
            json!({"type": "pki", "config": {"max_lease_ttl": "87600h"}}),
        )
        .await;
    assert_eq!(r.status, 204, "mount pki: {}", r.text);
    s
}

async fn ok(s: &TestServer, path: &str, body: Value) -> Value {
    let r = s.post(path, &s.root, body).await;
    assert!(r.status == 200 || r.status == 204, "{path}: {}", r.text);
    r.data().clone()
}

async fn err(s: &TestServer, path: &str, body: Value, status: u16, msg: &str) {
    let r = s.post(path, &s.root, body).await;
    assert_error(&r, status, msg);
}

/// A CA (ec, 10 years) and a role for `svc.example.com` names and SPIFFE
/// IDs of the `prod.example` trust domain.
async fn with_role(s: &TestServer) {
    ok(
        s,
        "pki/root/generate/internal",
        json!({"common_name": "Palisade Test Root", "key_type": "ec", "ttl": "87600h"}),
    )
    .await;
    ok(
        s,
        "pki/roles/svc",
        json!({
            "allowed_domains": ["svc.example.com"],
            "allow_subdomains": true,
            "allowed_uri_sans": ["spiffe://prod.example/ns/*/sa/*"],
            "key_type": "ec",
            "max_ttl": "720h",
            "ttl": "24h",
        }),
    )
    .await;
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[tokio::test]
async fn a_root_ca_is_made_once_and_published() {
    let s = pki().await;
    err(
        &s,
        "pki/root/generate/internal",
        json!({}),
        400,
        "the common_name field is required",
    )
    .await;
    err(
        &s,
        "pki/root/generate/internal",
        json!({"common_name": "x", "key_type": "dsa"}),
        400,
        "unknown key_type dsa: use rsa, ec or ed25519",
    )
    .await;
    err(
        &s,
        "pki/root/generate/internal",
        json!({"common_name": "x", "key_type": "ec", "key_bits": 521}),
        400,
        "unsupported key_bits 521 for key_type ec",
    )
    .await;
    let r = s.get("pki/ca/pem", &s.root).await;
    assert_error(
        &r,
        400,
        "no CA is configured at this mount: generate one with root/generate",
    );

    let d = ok(
        &s,
        "pki/root/generate/internal",
        json!({"common_name": "Root", "key_type": "ed25519", "ttl": "8760h"}),
    )
    .await;
    assert!(
        d["certificate"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    assert!(
        d.get("private_key").is_none(),
        "internal keeps the key: {d}"
    );
    let serial = d["serial_number"].as_str().unwrap().to_string();
    assert_eq!(serial.len(), 59, "20 bytes as xx:xx: {serial}");
    err(&s, "pki/root/generate/exported", json!({"common_name": "Again"}), 400, "a CA is already configured at this mount: delete it (DELETE root) before generating another").await;

    // ca/pem is the PEM itself, not JSON
    let r = s
        .send(
            "GET",
            "pki/ca/pem",
            &[("X-Vault-Token", s.root.clone())],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("application/pem-certificate-chain")
    );
    assert_eq!(r.text, d["certificate"].as_str().unwrap());
    let r = s.get("pki/cert/ca", &s.root).await;
    assert_eq!(r.data()["certificate"], d["certificate"]);

    // exported hands the key out once; a new CA after DELETE root
    let r = s.delete("pki/root", &s.root).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let d = ok(
        &s,
        "pki/root/generate/exported",
        json!({"common_name": "Root 2", "key_type": "ec"}),
    )
    .await;
    assert!(
        d["private_key"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    assert_eq!(d["private_key_type"], "ec");
}

#[tokio::test]
async fn issued_chains_verify_with_openssl_and_carry_only_what_the_role_allows() {
    let s = pki().await;
    with_role(&s).await;
    let d = ok(
        &s,
        "pki/issue/svc",
        json!({
            "common_name": "orders.svc.example.com",
            "alt_names": "api.orders.svc.example.com",
            "ip_sans": "10.0.0.7",
            "uri_sans": "spiffe://prod.example/ns/shop/sa/orders",
        }),
    )
    .await;
    for f in ["certificate", "issuing_ca", "private_key", "serial_number"] {
        assert!(d[f].is_string(), "{f}: {d}");
    }
    assert_eq!(d["ca_chain"][0], d["issuing_ca"]);
    assert_eq!(d["private_key_type"], "ec");
    let ttl = d["expiration"].as_i64().unwrap() - palisade_core::now_nanos() / 1_000_000_000;
    assert!((86_000..=86_400).contains(&ttl), "the role's ttl: {ttl}");

    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", d["issuing_ca"].as_str().unwrap());
    let leaf = write(dir.path(), "leaf.pem", d["certificate"].as_str().unwrap());
    let (ok_, out) = openssl(&["verify", "-CAfile", &ca, "-purpose", "sslserver", &leaf]);
    assert!(ok_, "{out}");
    let (ok_, out) = openssl(&["verify", "-CAfile", &ca, "-purpose", "sslclient", &leaf]);
    assert!(ok_, "{out}");
    let (_, text) = openssl(&["x509", "-in", &leaf, "-noout", "-text"]);
    for needle in [
        "DNS:orders.svc.example.com",
        "DNS:api.orders.svc.example.com",
        "IP Address:10.0.0.7",
        "URI:spiffe://prod.example/ns/shop/sa/orders",
        "CA:FALSE",
        "TLS Web Server Authentication",
        "TLS Web Client Authentication",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
    // the key is the certificate's key
    let key = write(dir.path(), "key.pem", d["private_key"].as_str().unwrap());
    let (_, a) = openssl(&["pkey", "-in", &key, "-pubout"]);
    let (_, b) = openssl(&["x509", "-in", &leaf, "-noout", "-pubkey"]);
    assert_eq!(a, b);
    // a certificate from another CA does not verify against this one
    let other = pki().await;
    with_role(&other).await;
    let o = ok(
        &other,
        "pki/issue/svc",
        json!({"common_name": "orders.svc.example.com"}),
    )
    .await;
    let foreign = write(
        dir.path(),
        "foreign.pem",
        o["certificate"].as_str().unwrap(),
    );
    let (ok_, _) = openssl(&["verify", "-CAfile", &ca, &foreign]);
    assert!(!ok_, "a foreign certificate must not verify");
}

#[tokio::test]
async fn names_outside_the_role_are_refused_with_a_clear_error() {
    let s = pki().await;
    with_role(&s).await;
    let issue = |body: Value| body;
    let cases: Vec<(Value, &str)> = vec![
        (
            issue(json!({"common_name": "svc.example.com"})),
            "name svc.example.com not allowed by this role",
        ),
        (
            issue(json!({"common_name": "evil.com"})),
            "name evil.com not allowed by this role",
        ),
        (
            issue(json!({"common_name": "x.svc.example.com.evil.com"})),
            "name x.svc.example.com.evil.com not allowed by this role",
        ),
        (
            issue(json!({"common_name": "xsvc.example.com"})),
            "name xsvc.example.com not allowed by this role",
        ),
        (
            issue(json!({"common_name": "A.svc.example.com"})),
            "name A.svc.example.com is not a valid lowercase hostname",
        ),
        (
            issue(json!({"common_name": "*.svc.example.com"})),
            "name *.svc.example.com not allowed by this role: wildcard certificates are never issued",
        ),
        (
            issue(json!({"common_name": "a.svc.example.com", "alt_names": "b.example.org"})),
            "name b.example.org not allowed by this role",
        ),
        (
            issue(
                json!({"common_name": "a.svc.example.com", "uri_sans": "spiffe://prod.example/ns/a/b/sa/c"}),
            ),
            "URI SAN spiffe://prod.example/ns/a/b/sa/c not allowed by this role",
        ),
        (
            issue(
                json!({"common_name": "a.svc.example.com", "uri_sans": "spiffe://prod.example.evil/ns/a/sa/c"}),
            ),
            "URI SAN spiffe://prod.example.evil/ns/a/sa/c not allowed by this role",
        ),
        (
            issue(
                json!({"common_name": "a.svc.example.com", "uri_sans": "spiffe://prod.example/ns//sa/c"}),
            ),
            "invalid URI SAN spiffe://prod.example/ns//sa/c: it must be an absolute URI in canonical form, without query, fragment or percent-encoding",
        ),
        (
            issue(
                json!({"common_name": "a.svc.example.com", "uri_sans": "SPIFFE://prod.example/ns/a/sa/c"}),
            ),
            "invalid URI SAN SPIFFE://prod.example/ns/a/sa/c: it must be an absolute URI in canonical form, without query, fragment or percent-encoding",
        ),
        (
            issue(json!({"common_name": "a.svc.example.com", "ip_sans": "010.0.0.1"})),
            "invalid IP SAN 010.0.0.1",
        ),
        (issue(json!({})), "the common_name field is required"),
    ];
    for (body, msg) in cases {
        err(&s, "pki/issue/svc", body, 400, msg).await;
    }
    err(
        &s,
        "pki/issue/nope",
        json!({"common_name": "a.svc.example.com"}),
        400,
        "unknown role: nope",
    )
    .await;
    // bare domains and globs when the role says so; localhost by default
    ok(
        &s,
        "pki/roles/bare",
        json!({"allowed_domains": "example.net", "allow_bare_domains": true, "key_type": "ec"}),
    )
    .await;
    ok(&s, "pki/issue/bare", json!({"common_name": "example.net"})).await;
    ok(&s, "pki/issue/bare", json!({"common_name": "localhost"})).await;
    err(
        &s,
        "pki/issue/bare",
        json!({"common_name": "a.example.net"}),
        400,
        "name a.example.net not allowed by this role",
    )
    .await;
    ok(&s, "pki/roles/glob", json!({"allowed_domains": "svc-*.example.net", "allow_glob_domains": true, "allow_localhost": false, "allow_ip_sans": false, "key_type": "ed25519"})).await;
    ok(
        &s,
        "pki/issue/glob",
        json!({"common_name": "svc-orders.example.net"}),
    )
    .await;
    err(
        &s,
        "pki/issue/glob",
        json!({"common_name": "localhost"}),
        400,
        "name localhost not allowed by this role",
    )
    .await;
    err(
        &s,
        "pki/issue/glob",
        json!({"common_name": "svc-a.example.net", "ip_sans": "10.0.0.1"}),
        400,
        "IP Subject Alternative Names are not allowed in this role",
    )
    .await;
    // nothing was stored for the refusals: the CA and the three certificates issued
    let r = s.list("pki/certs", &s.root).await;
    assert_eq!(r.data()["keys"].as_array().unwrap().len(), 4, "{}", r.text);
}

#[tokio::test]
async fn a_certificate_never_outlives_its_ca() {
    let s = pki().await;
    ok(
        &s,
        "pki/root/generate/internal",
        json!({"common_name": "Short Root", "key_type": "ec", "ttl": "2h"}),
    )
    .await;
    ok(
        &s,
        "pki/roles/r",
        json!({"allow_any_name": true, "key_type": "ec", "max_ttl": "720h"}),
    )
    .await;
    let r = s
        .post(
            "pki/issue/r",
            &s.root,
            json!({"common_name": "a.example.com", "ttl": "3h"}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.body["errors"][0].as_str().unwrap().starts_with("cannot satisfy request, as the TTL would result in a certificate that expires after the CA"), "{}", r.text);
    ok(
        &s,
        "pki/issue/r",
        json!({"common_name": "a.example.com", "ttl": "1h"}),
    )
    .await;
    err(
        &s,
        "pki/roles/r2",
        json!({"ttl": "2h", "max_ttl": "1h"}),
        400,
        "ttl cannot be larger than max_ttl",
    )
    .await;
    err(
        &s,
        "pki/roles/r2",
        json!({"allow_wildcard_certificates": true}),
        400,
        "allow_wildcard_certificates is not supported: wildcard certificates are never issued",
    )
    .await;
}

#[tokio::test]
async fn revoked_serials_appear_in_the_crl_and_fail_openssl_verification() {
    let s = pki().await;
    with_role(&s).await;
    let a = ok(
        &s,
        "pki/issue/svc",
        json!({"common_name": "a.svc.example.com"}),
    )
    .await;
    let b = ok(
        &s,
        "pki/issue/svc",
        json!({"common_name": "b.svc.example.com"}),
    )
    .await;
    let serial = a["serial_number"].as_str().unwrap().to_string();
    let r = s.list("pki/certs", &s.root).await;
    assert!(
        r.data()["keys"]
            .as_array()
            .unwrap()
            .contains(&json!(serial)),
        "{}",
        r.text
    );
    let r = s.get(&format!("pki/cert/{serial}"), &s.root).await;
    assert_eq!(
        (
            r.data()["certificate"].clone(),
            r.data()["revocation_time"].clone()
        ),
        (a["certificate"].clone(), json!(0))
    );

    let d = ok(&s, "pki/revoke", json!({"serial_number": serial})).await;
    assert!(d["revocation_time"].as_i64().unwrap() > 0);
    let r = s
        .get(&format!("pki/cert/{}", serial.replace(':', "-")), &s.root)
        .await;
    assert_eq!(r.data()["revocation_time"], d["revocation_time"]);
    err(&s, "pki/revoke", json!({"serial_number": "01:02"}), 400, "certificate with serial 01:02 not found (certificates issued with no_store cannot be revoked)").await;
    err(
        &s,
        "pki/revoke",
        json!({"serial_number": "not-a-serial"}),
        400,
        "invalid serial number",
    )
    .await;

    let r = s
        .send(
            "GET",
            "pki/crl/pem",
            &[("X-Vault-Token", s.root.clone())],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let dir = tempfile::tempdir().unwrap();
    let crl = write(dir.path(), "crl.pem", &r.text);
    let ca = write(dir.path(), "ca.pem", a["issuing_ca"].as_str().unwrap());
    let (ok_, text) = openssl(&["crl", "-in", &crl, "-noout", "-text", "-CAfile", &ca]);
    assert!(
        ok_ && text.contains("verify OK"),
        "the CRL is signed by the CA: {text}"
    );
    let hex = serial.replace(':', "").to_uppercase();
    assert!(text.contains(&hex), "serial {hex} in the CRL:\n{text}");
    let leaf_a = write(dir.path(), "a.pem", a["certificate"].as_str().unwrap());
    let leaf_b = write(dir.path(), "b.pem", b["certificate"].as_str().unwrap());
    let (ok_, out) = openssl(&[
        "verify",
        "-crl_check",
        "-CAfile",
        &ca,
        "-CRLfile",
        &crl,
        &leaf_a,
    ]);
    assert!(!ok_ && out.contains("certificate revoked"), "{out}");
    let (ok_, out) = openssl(&[
        "verify",
        "-crl_check",
        "-CAfile",
        &ca,
        "-CRLfile",
        &crl,
        &leaf_b,
    ]);
    assert!(ok_, "{out}");
    // the DER form is the same CRL
    let r = s
        .send("GET", "pki/crl", &[("X-Vault-Token", s.root.clone())], None)
        .await;
    assert_eq!(r.header("content-type"), Some("application/pkix-crl"));

    // no_store: issued, not listed, not revocable
    ok(&s, "pki/roles/eph", json!({"allowed_domains": "svc.example.com", "allow_subdomains": true, "no_store": true, "key_type": "ec"})).await;
    let e = ok(
        &s,
        "pki/issue/eph",
        json!({"common_name": "e.svc.example.com"}),
    )
    .await;
    let es = e["serial_number"].as_str().unwrap();
    let r = s.get(&format!("pki/cert/{es}"), &s.root).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn tidy_removes_expired_certificates_only() {
    let s = pki().await;
    with_role(&s).await;
    let short = ok(
        &s,
        "pki/issue/svc",
        json!({"common_name": "s.svc.example.com", "ttl": "1s"}),
    )
    .await;
    let long = ok(
        &s,
        "pki/issue/svc",
        json!({"common_name": "l.svc.example.com"}),
    )
    .await;
    let r = s.post("pki/tidy", &s.root, json!({})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(
        r.body["warnings"][0],
        "nothing to tidy: set tidy_cert_store or tidy_revoked_certs"
    );
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let r = s
        .post(
            "pki/tidy",
            &s.root,
            json!({"tidy_cert_store": true, "safety_buffer": "0s"}),
        )
        .await;
    assert_eq!(
        (r.status, r.data()["removed"].clone()),
        (202, json!(1)),
        "{}",
        r.text
    );
    let r = s
        .get(
            &format!("pki/cert/{}", short["serial_number"].as_str().unwrap()),
            &s.root,
        )
        .await;
    assert_eq!(r.status, 404);
    let r = s
        .get(
            &format!("pki/cert/{}", long["serial_number"].as_str().unwrap()),
            &s.root,
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn roles_need_create_to_be_made_and_issue_needs_its_own_path() {
    let s = pki().await;
    with_role(&s).await;
    let update = s
        .token_with(r#"path "pki/roles/*" { capabilities = ["update"] }"#)
        .await;
    let r = s
        .post("pki/roles/new", &update.id, json!({"allow_any_name": true}))
        .await;
    assert_denied(&r);
    let r = s.post("pki/roles/svc", &update.id, json!({"allowed_domains": "svc.example.com", "allow_subdomains": true, "key_type": "ec"})).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let issuer = s
        .token_with(r#"path "pki/issue/svc" { capabilities = ["update"] }"#)
        .await;
    let r = s
        .post(
            "pki/issue/svc",
            &issuer.id,
            json!({"common_name": "a.svc.example.com"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .post(
            "pki/root/generate/internal",
            &issuer.id,
            json!({"common_name": "x"}),
        )
        .await;
    assert_denied(&r);
    let r = s
        .post("pki/revoke", &issuer.id, json!({"serial_number": "01"}))
        .await;
    assert_denied(&r);
}

#[tokio::test]
async fn private_keys_never_reach_the_audit_log() {
    let s = pki().await;
    let audit = s.enable_audit("file").await;
    let root = ok(
        &s,
        "pki/root/generate/exported",
        json!({"common_name": "Root", "key_type": "ec"}),
    )
    .await;
    ok(
        &s,
        "pki/roles/r",
        json!({"allow_any_name": true, "key_type": "ec"}),
    )
    .await;
    let leaf = ok(&s, "pki/issue/r", json!({"common_name": "a.example.com"})).await;
    let log = std::fs::read_to_string(&audit).unwrap();
    for key in [&root["private_key"], &leaf["private_key"]] {
        let body: String = key
            .as_str()
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        assert!(
            !log.contains(&body[..40]),
            "a private key is in the audit log"
        );
    }
    assert!(log.contains("pki/issue/r"));
}

#[tokio::test]
async fn urls_are_written_into_new_certificates_and_the_crl_follows_its_configuration() {
    let s = pki().await;
    with_role(&s).await;
    let r = s.get("pki/config/urls", &s.root).await;
    assert_eq!(r.data()["issuing_certificates"], json!([]));
    err(
        &s,
        "pki/config/urls",
        json!({"issuing_certificates": "ftp://x.example/ca"}),
        400,
        "invalid URL ftp://x.example/ca: use an absolute http or https URL in canonical form",
    )
    .await;
    err(
        &s,
        "pki/config/urls",
        json!({"crl_distribution_points": "http://X.example/crl"}),
        400,
        "invalid URL http://X.example/crl: use an absolute http or https URL in canonical form",
    )
    .await;
    ok(
        &s,
        "pki/config/urls",
        json!({
            "issuing_certificates": ["https://vault.example/v1/pki/ca"],
            "crl_distribution_points": ["https://vault.example/v1/pki/crl"],
            "ocsp_servers": ["https://ocsp.example/"],
        }),
    )
    .await;
    let r = s.get("pki/config/urls", &s.root).await;
    assert_eq!(
        r.data()["crl_distribution_points"],
        json!(["https://vault.example/v1/pki/crl"])
    );
    let d = ok(
        &s,
        "pki/issue/svc",
        json!({"common_name": "a.svc.example.com"}),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let leaf = write(dir.path(), "leaf.pem", d["certificate"].as_str().unwrap());
    let (_, text) = openssl(&["x509", "-in", &leaf, "-noout", "-text"]);
    for needle in [
        "X509v3 CRL Distribution Points",
        "URI:https://vault.example/v1/pki/crl",
        "Authority Information Access",
        "CA Issuers - URI:https://vault.example/v1/pki/ca",
        "OCSP - URI:https://ocsp.example/",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
    let ca = write(dir.path(), "ca.pem", d["issuing_ca"].as_str().unwrap());
    let (ok_, out) = openssl(&["verify", "-CAfile", &ca, &leaf]);
    assert!(ok_, "{out}");

    // a disabled CRL is still signed, and lists nothing
    ok(
        &s,
        "pki/revoke",
        json!({"serial_number": d["serial_number"]}),
    )
    .await;
    ok(
        &s,
        "pki/config/crl",
        json!({"expiry": "24h", "disable": true}),
    )
    .await;
    let r = s.get("pki/config/crl", &s.root).await;
    assert_eq!(
        (r.data()["expiry"].clone(), r.data()["disable"].clone()),
        (json!("86400s"), json!(true))
    );
    let r = s
        .send(
            "GET",
            "pki/crl/pem",
            &[("X-Vault-Token", s.root.clone())],
            None,
        )
        .await;
    let crl = write(dir.path(), "crl.pem", &r.text);
    let (_, text) = openssl(&["crl", "-in", &crl, "-noout", "-text"]);
    assert!(text.contains("No Revoked Certificates"), "{text}");
    ok(&s, "pki/config/crl", json!({"disable": false})).await;
    let r = s
        .send(
            "GET",
            "pki/crl/pem",
            &[("X-Vault-Token", s.root.clone())],
            None,
        )
        .await;
    let crl = write(dir.path(), "crl2.pem", &r.text);
    let (_, text) = openssl(&["crl", "-in", &crl, "-noout", "-text"]);
    assert!(
        text.contains(
            &d["serial_number"]
                .as_str()
                .unwrap()
                .replace(':', "")
                .to_uppercase()
        ),
        "{text}"
    );
    err(
        &s,
        "pki/config/crl",
        json!({"expiry": "0s"}),
        400,
        "expiry must be a positive duration",
    )
    .await;
}

// ------------------------------------------------------------ review findings

#[tokio::test]
async fn deleting_the_ca_needs_sudo() {
    let s = pki().await;
    with_role(&s).await;
    let t = s
        .token_with(
            r#"path "pki/root" { capabilities = ["delete"] }
path "pki/root/*" { capabilities = ["update"] }"#,
        )
        .await;
    let r = s.delete("pki/root", &t.id).await;
    assert_denied(&r);
    assert_eq!(
        s.get("pki/cert/ca", &s.root).await.status,
        200,
        "the CA is still there"
    );
    let sudo = s
        .token_with(r#"path "pki/root" { capabilities = ["delete", "sudo"] }"#)
        .await;
    let r = s.delete("pki/root", &sudo.id).await;
    assert_eq!(r.status, 204, "{}", r.text);
}

#[tokio::test]
async fn restricting_fields_the_engine_does_not_implement_are_refused_not_ignored() {
    let s = pki().await;
    with_role(&s).await;
    for (field, value) in [
        ("allowed_ip_sans_cidr", json!(["10.1.0.0/16"])),
        ("ext_key_usage", json!(["ServerAuth"])),
        ("not_after", json!("2030-01-01T00:00:00Z")),
        ("allowed_serial_numbers", json!(["1234"])),
        ("organization", json!("Acme")),
    ] {
        let mut body = json!({"allow_any_name": true, "key_type": "ec"});
        body[field] = value;
        err(&s, "pki/roles/x", body, 400, &format!("{field} is not supported by this PKI engine: a certificate is never made without it")).await;
    }
    err(&s, "pki/roles/x", json!({"key_usage": ["DigitalSignature"]}), 400, "key_usage is not supported by this PKI engine beyond Vault's default (DigitalSignature, KeyAgreement, KeyEncipherment)").await;
    // defaults as clients send them are fine
    ok(&s, "pki/roles/x", json!({"allow_any_name": true, "key_type": "ec", "key_usage": ["DigitalSignature", "KeyAgreement", "KeyEncipherment"], "ext_key_usage": [], "organization": ""})).await;
    err(
        &s,
        "pki/issue/svc",
        json!({"common_name": "a.svc.example.com", "not_after": "2030-01-01T00:00:00Z"}),
        400,
        "not_after is not supported by this PKI engine: a certificate is never made without it",
    )
    .await;
    ok(&s, "pki/issue/svc", json!({"common_name": "a.svc.example.com", "other_sans": [], "exclude_cn_from_sans": false, "format": "pem"})).await;
    err(
        &s,
        "pki/issue/svc",
        json!({"common_name": "a.svc.example.com", "format": "der"}),
        400,
        "format: only pem is supported",
    )
    .await;
}

#[tokio::test]
async fn uri_sans_are_plain_and_names_printable() {
    let s = pki().await;
    with_role(&s).await;
    let msg = |u: &str| {
        format!(
            "invalid URI SAN {u}: it must be an absolute URI in canonical form, without query, fragment or percent-encoding"
        )
    };
    for u in [
        "spiffe://prod.example/ns/kube-system#/sa/api",
        "spiffe://prod.example/ns/kube-system?/sa/api",
        "spiffe://prod.example/ns/a%2Fb/sa/api",
        "spiffe://evil.com?.prod.example/x/y",
    ] {
        err(
            &s,
            "pki/issue/svc",
            json!({"common_name": "a.svc.example.com", "uri_sans": u}),
            400,
            &msg(u),
        )
        .await;
    }
    // a long value is quoted cut short
    let long = format!("spiffe://prod.example/x/{}", "a".repeat(2_000));
    let r = s
        .post(
            "pki/issue/svc",
            &s.root,
            json!({"common_name": "a.svc.example.com", "uri_sans": long}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.text.len() < 400, "{}", r.text.len());

    // enforce_hostnames = false: a common name that is no hostname stays out of the SANs
    ok(
        &s,
        "pki/roles/people",
        json!({"allow_any_name": true, "enforce_hostnames": false, "key_type": "ec"}),
    )
    .await;
    let d = ok(
        &s,
        "pki/issue/people",
        json!({"common_name": "Jane Doe", "alt_names": "jane.example.com"}),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let leaf = write(dir.path(), "leaf.pem", d["certificate"].as_str().unwrap());
    let (_, text) = openssl(&["x509", "-in", &leaf, "-noout", "-text"]);
    assert!(
        text.contains("CN = Jane Doe")
            && text.contains("DNS:jane.example.com")
            && !text.contains("DNS:Jane"),
        "{text}"
    );
    err(
        &s,
        "pki/issue/people",
        json!({"common_name": "evil.com\u{0}.svc.example.com"}),
        400,
        "a name may only hold printable ASCII characters",
    )
    .await;
    err(
        &s,
        "pki/issue/people",
        json!({"common_name": "a\nb"}),
        400,
        "a name may only hold printable ASCII characters",
    )
    .await;
    err(
        &s,
        "pki/issue/people",
        json!({"common_name": "jane", "alt_names": "Jane Doe"}),
        400,
        "a name may only hold printable ASCII characters",
    )
    .await;
    err(
        &s,
        "pki/issue/people",
        json!({"common_name": "jane", "alt_names": "a/b"}),
        400,
        "name a/b is not a valid lowercase hostname",
    )
    .await;
    err(
        &s,
        "pki/issue/people",
        json!({"common_name": "x".repeat(65)}),
        400,
        "name too long: a common name has at most 64 characters, a DNS name 253",
    )
    .await;
    err(
        &s,
        "pki/issue/people",
        json!({"common_name": "10.0.0.1"}),
        400,
        "name 10.0.0.1 is an IP address: give it in ip_sans",
    )
    .await;
    err(
        &s,
        "pki/issue/svc",
        json!({"common_name": "a.svc.example.com", "ip_sans": "::ffff:10.0.0.1"}),
        400,
        "an IPv4-mapped IPv6 address is refused: give the IPv4 address",
    )
    .await;
}

#[tokio::test]
async fn one_root_wins_a_race_and_crl_numbers_grow() {
    let s = std::sync::Arc::new(pki().await);
    let mut tasks = Vec::new();
    for i in 0..6 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.post(
                "pki/root/generate/internal",
                &s.root,
                json!({"common_name": format!("Root {i}"), "key_type": "ec"}),
            )
            .await
            .status
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    codes.sort_unstable();
    assert_eq!(codes, vec![200, 400, 400, 400, 400, 400]);

    let dir = tempfile::tempdir().unwrap();
    let mut numbers = Vec::new();
    for n in 0..4 {
        // the CRL is cached: a rotation builds the next one (the last two
        // reads see the same CRL)
        if n < 3 {
            let r = s.get("pki/crl/rotate", &s.root).await;
            assert_eq!(r.status, 200, "{}", r.text);
        }
        let r = s
            .send(
                "GET",
                "pki/crl/pem",
                &[("X-Vault-Token", s.root.clone())],
                None,
            )
            .await;
        let crl = write(dir.path(), &format!("crl{n}.pem"), &r.text);
        let (_, text) = openssl(&["crl", "-in", &crl, "-noout", "-text"]);
        let line = text
            .lines()
            .skip_while(|l| !l.contains("CRL Number"))
            .nth(1)
            .unwrap()
            .trim()
            .to_string();
        numbers.push(line);
    }
    assert!(
        numbers[0] != numbers[1] && numbers[1] != numbers[2] && numbers[2] == numbers[3],
        "{numbers:?}"
    );
}

#[tokio::test]
async fn ed25519_keys_load_in_openssl_and_old_cas_certificates_stay_with_them() {
    let s = pki().await;
    let root = ok(
        &s,
        "pki/root/generate/exported",
        json!({"common_name": "Ed Root", "key_type": "ed25519"}),
    )
    .await;
    ok(
        &s,
        "pki/roles/ed",
        json!({"allow_any_name": true, "key_type": "ed25519"}),
    )
    .await;
    let leaf = ok(&s, "pki/issue/ed", json!({"common_name": "a.example.com"})).await;
    let dir = tempfile::tempdir().unwrap();
    for (name, key) in [
        ("root", &root["private_key"]),
        ("leaf", &leaf["private_key"]),
    ] {
        let path = write(dir.path(), &format!("{name}.key"), key.as_str().unwrap());
        let (ok_, out) = openssl(&["pkey", "-in", &path, "-noout"]);
        assert!(ok_, "{name}: {out}");
    }
    // a new CA does not revoke (or list) the old one's certificates
    let r = s.delete("pki/root", &s.root).await;
    assert_eq!(r.status, 204);
    ok(
        &s,
        "pki/root/generate/internal",
        json!({"common_name": "New Root", "key_type": "ec"}),
    )
    .await;
    err(
        &s,
        "pki/revoke",
        json!({"serial_number": leaf["serial_number"]}),
        400,
        "this certificate was issued by a CA that is no longer configured at this mount",
    )
    .await;
}

/// A CSR made by openssl: (PEM, the key file's path).
fn csr(dir: &Path, name: &str, keyopt: &[&str], subj: &str, san: Option<&str>) -> String {
    let key = dir.join(format!("{name}.key"));
    let (ok_, out) =
        openssl(&[&["genpkey", "-out", &key.display().to_string()][..], keyopt].concat());
    assert!(ok_, "{out}");
    let path = dir.join(format!("{name}.csr"));
    let mut args = vec![
        "req",
        "-new",
        "-key",
        key.to_str().unwrap(),
        "-subj",
        subj,
        "-out",
        path.to_str().unwrap(),
    ];
    let ext;
    if let Some(s) = san {
        ext = format!("subjectAltName={s}");
        args.extend(["-addext", ext.as_str()]);
    }
    let (ok_, out) = openssl(&args);
    assert!(ok_, "{out}");
    std::fs::read_to_string(path).unwrap()
}

#[tokio::test]
async fn csrs_are_signed_under_the_roles_rules_and_the_key_stays_with_the_caller() {
    let s = pki().await;
    with_role(&s).await;
    let dir = tempfile::tempdir().unwrap();
    let p256 = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
    let good = csr(
        dir.path(),
        "good",
        &p256,
        "/CN=orders.svc.example.com",
        Some("DNS:api.svc.example.com,URI:spiffe://prod.example/ns/shop/sa/orders"),
    );
    let d = ok(&s, "pki/sign/svc", json!({"csr": good})).await;
    assert!(d.get("private_key").is_none(), "{d}");
    let leaf = write(dir.path(), "leaf.pem", d["certificate"].as_str().unwrap());
    let ca = write(dir.path(), "ca.pem", d["issuing_ca"].as_str().unwrap());
    let (ok_, out) = openssl(&["verify", "-CAfile", &ca, &leaf]);
    assert!(ok_, "{out}");
    let (_, text) = openssl(&["x509", "-in", &leaf, "-noout", "-text"]);
    for needle in [
        "CN = orders.svc.example.com",
        "DNS:api.svc.example.com",
        "URI:spiffe://prod.example/ns/shop/sa/orders",
        "CA:FALSE",
    ] {
        assert!(text.contains(needle), "{needle}:\n{text}");
    }
    // the certificate's key is the CSR's key
    let (_, a) = openssl(&[
        "pkey",
        "-in",
        &dir.path().join("good.key").display().to_string(),
        "-pubout",
    ]);
    let (_, b) = openssl(&["x509", "-in", &leaf, "-noout", "-pubkey"]);
    assert_eq!(a, b);

    let outside = csr(
        dir.path(),
        "outside",
        &p256,
        "/CN=orders.svc.example.com",
        Some("DNS:evil.example.org"),
    );
    err(
        &s,
        "pki/sign/svc",
        json!({"csr": outside}),
        400,
        "name evil.example.org not allowed by this role",
    )
    .await;
    let spiffe = csr(
        dir.path(),
        "spiffe",
        &p256,
        "/CN=a.svc.example.com",
        Some("URI:spiffe://prod.example/ns/a/b/sa/c"),
    );
    err(
        &s,
        "pki/sign/svc",
        json!({"csr": spiffe}),
        400,
        "URI SAN spiffe://prod.example/ns/a/b/sa/c not allowed by this role",
    )
    .await;
    let ed = csr(
        dir.path(),
        "ed",
        &["-algorithm", "ED25519"],
        "/CN=a.svc.example.com",
        None,
    );
    err(
        &s,
        "pki/sign/svc",
        json!({"csr": ed}),
        400,
        "invalid csr: its key is not a ec key of the role's size (256 bits)",
    )
    .await;
    let p384 = csr(
        dir.path(),
        "p384",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        "/CN=a.svc.example.com",
        None,
    );
    err(
        &s,
        "pki/sign/svc",
        json!({"csr": p384}),
        400,
        "invalid csr: its key is not a ec key of the role's size (256 bits)",
    )
    .await;
    // the CSR's common name wins over the body's (Vault's use_csr_common_name), with a warning
    let r = s
        .post(
            "pki/sign/svc",
            &s.root,
            json!({"csr": good, "common_name": "other.svc.example.com"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["warnings"][0],
        "common_name ignored: the CSR's common name is used"
    );
    let leaf2 = write(
        dir.path(),
        "leaf2.pem",
        r.data()["certificate"].as_str().unwrap(),
    );
    let (_, text) = openssl(&["x509", "-in", &leaf2, "-noout", "-subject"]);
    assert!(text.contains("CN = orders.svc.example.com"), "{text}");
    err(
        &s,
        "pki/sign/svc",
        json!({}),
        400,
        "the csr field is required",
    )
    .await;
    err(
        &s,
        "pki/sign/svc",
        json!({"csr": "not pem"}),
        400,
        "invalid csr: not a PEM certificate request",
    )
    .await;
    // a changed byte in the signature: refused whole
    let der = {
        use base64::Engine as _;
        let body: String = good.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    };
    let mut tampered = der.clone();
    let last = tampered.len() - 3;
    tampered[last] ^= 0x01;
    let pem = {
        use base64::Engine as _;
        format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64::engine::general_purpose::STANDARD.encode(&tampered)
        )
    };
    err(
        &s,
        "pki/sign/svc",
        json!({"csr": pem}),
        400,
        "invalid csr: its signature does not verify",
    )
    .await;
    // a role's RSA size is a floor
    ok(
        &s,
        "pki/roles/rsa",
        json!({"allow_any_name": true, "key_type": "rsa", "key_bits": 3072}),
    )
    .await;
    let small = csr(
        dir.path(),
        "small",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        "/CN=a.example.com",
        None,
    );
    err(
        &s,
        "pki/sign/rsa",
        json!({"csr": small}),
        400,
        "invalid csr: its key is not a rsa key of the role's size (3072 bits)",
    )
    .await;
}

#[tokio::test]
async fn a_csr_is_read_whole_one_block_one_common_name_nothing_after() {
    use base64::Engine as _;
    let s = pki().await;
    with_role(&s).await;
    let dir = tempfile::tempdir().unwrap();
    let p256 = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
    let two_cns = csr(
        dir.path(),
        "two",
        &p256,
        "/CN=evil.com/CN=a.svc.example.com",
        None,
    );
    err(
        &s,
        "pki/sign/svc",
        json!({"csr": two_cns}),
        400,
        "invalid csr: its subject has more than one common name",
    )
    .await;
    let good = csr(dir.path(), "good", &p256, "/CN=a.svc.example.com", None);
    let other = csr(dir.path(), "other", &p256, "/CN=b.svc.example.com", None);
    err(
        &s,
        "pki/sign/svc",
        json!({"csr": format!("{good}{other}")}),
        400,
        "invalid csr: not a PEM certificate request",
    )
    .await;
    let body: String = good.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    der.extend_from_slice(&[0u8; 50]);
    let trailing = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64::engine::general_purpose::STANDARD.encode(&der)
    );
    err(
        &s,
        "pki/sign/svc",
        json!({"csr": trailing}),
        400,
        "invalid csr: bytes follow the certificate request",
    )
    .await;
    err(&s, "pki/sign/svc", json!({"csr": "-----BEGIN CERTIFICATE REQUEST-----\n!!!\n-----END CERTIFICATE REQUEST-----"}), 400, "invalid csr: not a PEM certificate request").await;
    ok(&s, "pki/sign/svc", json!({"csr": good})).await;
}

#[tokio::test]
async fn generate_lease_gives_a_lease_whose_revocation_revokes_the_certificate() {
    let s = pki().await;
    with_role(&s).await;
    // without generate_lease: no lease
    let r = s
        .post(
            "pki/issue/svc",
            &s.root,
            json!({"common_name": "a.svc.example.com"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["lease_id"], "");
    err(
        &s,
        "pki/roles/leased",
        json!({"allowed_domains": ["svc.example.com"], "allow_subdomains": true, "generate_lease": true, "no_store": true}),
        400,
        "generate_lease cannot be used with no_store: a leased certificate must be stored to be revoked",
    )
    .await;
    ok(
        &s,
        "pki/roles/leased",
        json!({"allowed_domains": ["svc.example.com"], "allow_subdomains": true, "generate_lease": true, "key_type": "ec", "ttl": "1h"}),
    )
    .await;
    let t = s
        .token_with(r#"path "pki/issue/leased" { capabilities = ["update"] }"#)
        .await;
    let r = s
        .post(
            "pki/issue/leased",
            &t.id,
            json!({"common_name": "b.svc.example.com"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let lease = r.body["lease_id"].as_str().unwrap().to_owned();
    let serial = r.data()["serial_number"].as_str().unwrap().to_owned();
    assert!(lease.starts_with("pki/issue/leased/"), "{lease}");
    assert_eq!(r.body["lease_duration"], 3600);
    assert_eq!(r.body["renewable"], false);
    let r = s
        .put("sys/leases/renew", &s.root, json!({"lease_id": lease}))
        .await;
    assert_error(&r, 400, "lease is not renewable");
    let r = s.list("sys/leases/lookup/pki/", &s.root).await;
    assert_eq!(r.data()["keys"], json!(["issue/"]));
    // the token that asked is revoked: its certificate is revoked with it
    let r = s
        .post("auth/token/revoke", &s.root, json!({"token": t.id}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let now = s.core.tokens.now();
    assert_eq!(s.core.revoke_due_leases(now).await, 1);
    let r = s.get(&format!("pki/cert/{serial}"), &s.root).await;
    assert!(
        r.data()["revocation_time"].as_i64().unwrap() > 0,
        "{}",
        r.text
    );
    let r = s.list("sys/leases/lookup/pki/", &s.root).await;
    assert_empty_404(&r);
}

#[tokio::test]
async fn a_ttl_above_the_max_is_capped_with_vaults_warning() {
    let s = pki().await;
    with_role(&s).await;
    let r = s
        .post(
            "pki/issue/svc",
            &s.root,
            json!({"common_name": "a.svc.example.com", "ttl": "721h"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["warnings"],
        json!(["TTL \"721h\" is longer than permitted maxTTL \"720h\", so maxTTL is being used"])
    );
    let exp = r.data()["expiration"].as_i64().unwrap();
    let now = s.core.tokens.now();
    assert!(
        (exp - now - 720 * 3600).abs() <= 5,
        "capped at the role's max"
    );
    // a root above the mount's max: capped too (the mount allows 87600h)
    let s2 = TestServer::dev().await;
    let r = s2
        .post("sys/mounts/pki", &s2.root, json!({"type": "pki"}))
        .await;
    assert_eq!(r.status, 204);
    let r = s2
        .post(
            "pki/root/generate/internal",
            &s2.root,
            json!({"common_name": "r", "ttl": "8760h"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["warnings"],
        json!(["TTL \"8760h\" is longer than permitted maxTTL \"768h\", so maxTTL is being used"])
    );
}

/// An intermediate CA on a second mount: its CSR signed by the root's
/// mount, the signed certificate set, and what it issues verifies with
/// openssl up to the root.
#[tokio::test]
async fn an_intermediate_signed_by_a_second_mount_issues_chains_that_verify() {
    let s = pki().await;
    with_role(&s).await;
    let r = s
        .post(
            "sys/mounts/pki_int",
            &s.root,
            json!({"type": "pki", "config": {"max_lease_ttl": "43800h"}}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    // set-signed before any CSR: refused
    err(
        &s,
        "pki_int/intermediate/set-signed",
        json!({"certificate": "x"}),
        400,
        "no pending intermediate key at this mount: generate one with intermediate/generate",
    )
    .await;
    let d = ok(
        &s,
        "pki_int/intermediate/generate/internal",
        json!({"common_name": "Palisade Test Intermediate", "key_type": "ec"}),
    )
    .await;
    let csr = d["csr"].as_str().unwrap().to_owned();
    assert!(
        csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
        "{d}"
    );
    assert!(d.get("private_key").is_none(), "internal keeps the key");
    let signed = ok(
        &s,
        "pki/root/sign-intermediate",
        json!({"csr": csr, "common_name": "Palisade Test Intermediate", "ttl": "43800h", "max_path_length": 0}),
    )
    .await;
    let int_cert = signed["certificate"].as_str().unwrap().to_owned();
    let root_cert = signed["issuing_ca"].as_str().unwrap().to_owned();
    // a certificate for another key is refused
    let other = ok(
        &s,
        "pki/issue/svc",
        json!({"common_name": "x.svc.example.com"}),
    )
    .await;
    err(
        &s,
        "pki_int/intermediate/set-signed",
        json!({"certificate": other["certificate"]}),
        400,
        "invalid certificate: it is not for the key intermediate/generate made at this mount",
    )
    .await;
    let r = s
        .post(
            "pki_int/intermediate/set-signed",
            &s.root,
            json!({"certificate": format!("{int_cert}{root_cert}")}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // capped at the root's life (the root lives 10 years, the mount allows 5)
    let r = s.get("pki_int/ca_chain", &s.root).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text, format!("{int_cert}{root_cert}"));
    ok(
        &s,
        "pki_int/roles/svc",
        json!({"allowed_domains": ["svc.example.com"], "allow_subdomains": true, "key_type": "ec", "ttl": "1h"}),
    )
    .await;
    let leaf = ok(
        &s,
        "pki_int/issue/svc",
        json!({"common_name": "a.svc.example.com"}),
    )
    .await;
    assert_eq!(leaf["issuing_ca"], int_cert.as_str());
    assert_eq!(leaf["ca_chain"], json!([int_cert, root_cert]));
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str, t: &str| {
        let path = dir.path().join(n);
        std::fs::write(&path, t).unwrap();
        path.display().to_string()
    };
    let (root_f, int_f, leaf_f) = (
        p("root.pem", &root_cert),
        p("int.pem", &int_cert),
        p("leaf.pem", leaf["certificate"].as_str().unwrap()),
    );
    let (good, out) = openssl(&["verify", "-CAfile", &root_f, "-untrusted", &int_f, &leaf_f]);
    assert!(good, "{out}");
    // the intermediate alone is not trusted as a root
    let (good, _) = openssl(&["verify", "-CAfile", &int_f, &leaf_f]);
    assert!(!good, "the chain must end at the root");
    // max_path_length 0: the intermediate may sign no further CA
    let (good, text) = openssl(&["x509", "-noout", "-text", "-in", &int_f]);
    assert!(good, "{text}");
    assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
    // the intermediate mount has its CA now: no second CSR
    err(&s, "pki_int/intermediate/generate/internal", json!({"common_name": "x"}), 400,
        "a CA is already configured at this mount: delete it (DELETE root) before generating another").await;
}

#[tokio::test]
async fn sign_intermediate_refuses_bad_csrs_and_a_second_ca() {
    let s = pki().await;
    with_role(&s).await;
    err(&s, "pki/root/sign-intermediate", json!({"csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----"}), 400,
        "invalid csr: it cannot be parsed").await;
    err(
        &s,
        "pki/root/sign-intermediate",
        json!({}),
        400,
        "the csr field is required",
    )
    .await;
    // a mount with a CA makes no intermediate CSR
    err(&s, "pki/intermediate/generate/internal", json!({"common_name": "x"}), 400,
        "a CA is already configured at this mount: delete it (DELETE root) before generating another").await;
}

/// Vault serves a PKI mount's CA, chain, CRL and certificates without a
/// token (relying parties fetch the CRL from the URL in the certificates);
/// everything else still needs one.
#[tokio::test]
async fn the_ca_chain_crl_and_certificates_are_public_and_nothing_else() {
    let s = pki().await;
    with_role(&s).await;
    let leaf = ok(
        &s,
        "pki/issue/svc",
        json!({"common_name": "a.svc.example.com"}),
    )
    .await;
    let serial = leaf["serial_number"].as_str().unwrap().to_owned();
    for path in [
        "pki/ca",
        "pki/ca/pem",
        "pki/ca_chain",
        "pki/crl",
        "pki/crl/pem",
        "pki/cert/ca",
    ] {
        let r = s.send("GET", path, &[], None).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
    }
    let r = s
        .send("GET", &format!("pki/cert/{serial}"), &[], None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["certificate"], leaf["certificate"]);
    assert!(r.body["data"].get("private_key").is_none());
    // everything else needs a token
    for (m, path) in [
        ("GET", "pki/roles/svc"),
        ("LIST", "pki/certs"),
        ("GET", "pki/crl/rotate"),
        ("GET", "pki/config/crl"),
        ("POST", "pki/issue/svc"),
        ("POST", "pki/revoke"),
    ] {
        let r = s.send(m, path, &[], Some(b"{}".to_vec())).await;
        assert_eq!(r.status, 403, "{m} {path}: {}", r.text);
    }
    // a revocation shows in the next anonymous CRL read at once
    ok(&s, "pki/revoke", json!({"serial_number": serial})).await;
    let r = s.send("GET", "pki/crl/pem", &[], None).await;
    let dir = tempfile::tempdir().unwrap();
    let crl = dir.path().join("crl.pem");
    std::fs::write(&crl, &r.text).unwrap();
    let (good, text) = openssl(&["crl", "-in", &crl.display().to_string(), "-noout", "-text"]);
    assert!(good, "{text}");
    assert!(
        text.to_lowercase()
            .contains(&serial.replace(':', "").to_lowercase()),
        "{text}"
    );
    // sealed: nothing is served
    s.seal().await;
    let r = s.send("GET", "pki/ca/pem", &[], None).await;
    assert_eq!(r.status, 503, "{}", r.text);
}

/// Review findings: an intermediate signed by another CA (OpenSSL here, with
/// its SHA-1 key identifiers) issues certificates and CRLs that OpenSSL
/// accepts with `-crl_check`; a CA that may not sign, or a bundle whose
/// chain is not the intermediate's issuers, is refused at set-signed.
#[tokio::test]
async fn an_intermediate_signed_elsewhere_gets_crls_that_match_it() {
    let s = pki().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let f = |n: &str| d.join(n).display().to_string();
    // an outside root, made by OpenSSL
    let (good, out) = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &f("root.key"),
        "-out",
        &f("root.pem"),
        "-days",
        "30",
        "-subj",
        "/CN=Outside Root",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    assert!(good, "{out}");
    let sign = |csr: &str, ext: &str, out_name: &str| {
        let csr_f = write(d, "int.csr", csr);
        let ext_f = write(d, "ext.cnf", ext);
        let (good, out) = openssl(&[
            "x509",
            "-req",
            "-in",
            &csr_f,
            "-CA",
            &f("root.pem"),
            "-CAkey",
            &f("root.key"),
            "-CAcreateserial",
            "-days",
            "20",
            "-extfile",
            &ext_f,
            "-out",
            &f(out_name),
        ]);
        assert!(good, "{out}");
        std::fs::read_to_string(f(out_name)).unwrap()
    };
    let ca_ext = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n";
    let csr = ok(
        &s,
        "pki/intermediate/generate/internal",
        json!({"common_name": "Outside Intermediate", "key_type": "ec"}),
    )
    .await["csr"]
        .as_str()
        .unwrap()
        .to_owned();
    // a certificate without keyCertSign/cRLSign: refused
    let weak = sign(
        &csr,
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,digitalSignature\n",
        "weak.pem",
    );
    err(
        &s,
        "pki/intermediate/set-signed",
        json!({"certificate": weak}),
        400,
        "invalid certificate: its key usage does not allow signing certificates and CRLs",
    )
    .await;
    let int = sign(&csr, ca_ext, "int.pem");
    let root = std::fs::read_to_string(f("root.pem")).unwrap();
    // a chain that is not its issuer's: refused
    let (good, out) = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &f("other.key"),
        "-out",
        &f("other.pem"),
        "-days",
        "30",
        "-subj",
        "/CN=Other Root",
    ]);
    assert!(good, "{out}");
    let other = std::fs::read_to_string(f("other.pem")).unwrap();
    err(
        &s,
        "pki/intermediate/set-signed",
        json!({"certificate": format!("{int}{other}")}),
        400,
        "invalid certificate: certificate 2 of the bundle is not the issuer of the one before it",
    )
    .await;
    let r = s
        .post(
            "pki/intermediate/set-signed",
            &s.root,
            json!({"certificate": format!("{int}{root}")}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    ok(&s, "pki/roles/svc", json!({"allowed_domains": ["svc.example.com"], "allow_subdomains": true, "key_type": "ec", "ttl": "1h"})).await;
    let kept = ok(
        &s,
        "pki/issue/svc",
        json!({"common_name": "kept.svc.example.com"}),
    )
    .await;
    let gone = ok(
        &s,
        "pki/issue/svc",
        json!({"common_name": "gone.svc.example.com"}),
    )
    .await;
    ok(
        &s,
        "pki/revoke",
        json!({"serial_number": gone["serial_number"]}),
    )
    .await;
    let crl = s.send("GET", "pki/crl/pem", &[], None).await.text;
    let crl_f = write(d, "crl.pem", &crl);
    let kept_f = write(d, "kept.pem", kept["certificate"].as_str().unwrap());
    let gone_f = write(d, "gone.pem", gone["certificate"].as_str().unwrap());
    let verify = |leaf: &str| {
        openssl(&[
            "verify",
            "-crl_check",
            "-CAfile",
            &f("root.pem"),
            "-untrusted",
            &f("int.pem"),
            "-CRLfile",
            &crl_f,
            leaf,
        ])
    };
    let (good, out) = verify(&kept_f);
    assert!(good, "the CRL must be found for the intermediate: {out}");
    let (good, out) = verify(&gone_f);
    assert!(!good && out.contains("certificate revoked"), "{out}");
}

#[tokio::test]
async fn a_ca_with_path_length_zero_signs_no_further_ca() {
    let s = pki().await;
    with_role(&s).await;
    for m in ["pki_a", "pki_b"] {
        let r = s
            .post(
                &format!("sys/mounts/{m}"),
                &s.root,
                json!({"type": "pki", "config": {"max_lease_ttl": "43800h"}}),
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.text);
    }
    let csr = ok(
        &s,
        "pki_a/intermediate/generate/internal",
        json!({"common_name": "A", "key_type": "ec"}),
    )
    .await["csr"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = ok(
        &s,
        "pki/root/sign-intermediate",
        json!({"csr": csr, "max_path_length": 0, "ttl": "8760h"}),
    )
    .await;
    ok(&s, "pki_a/intermediate/set-signed", json!({"certificate": format!("{}{}", a["certificate"].as_str().unwrap(), a["issuing_ca"].as_str().unwrap())})).await;
    let csr = ok(
        &s,
        "pki_b/intermediate/generate/internal",
        json!({"common_name": "B", "key_type": "ec"}),
    )
    .await["csr"]
        .as_str()
        .unwrap()
        .to_owned();
    err(&s, "pki_a/root/sign-intermediate", json!({"csr": csr}), 400,
        "signing certificate has a max path length of zero, and cannot issue further CA certificates").await;
}
