//! Authentication through a real `palisade gateway` process over real TLS
//! (rcgen CA; HTTP/2 by ALPN), in front of a real Express service
//! (tests/e2e/gateway/upstream.js), with tokens signed by `jose`
//! (tests/e2e/gateway/sign.js) and API keys from `palisade gateway apikey`.
//!
//! Allow: RS256 / ES256 / EdDSA tokens and an API key (both header forms) ->
//! 200; the service sees `x-user` / `x-scopes` built from the verified
//! identity (a client's own `x-user` is dropped first) and never sees the
//! `Authorization` or `x-api-key` header.
//! Deny, each with the exact status, error code, `WWW-Authenticate` and the
//! security-log reason: wrong audience, expired, `alg: none`, HS256 signed
//! with the RSA public key (key confusion), unknown `kid`, tampered payload,
//! no credential, a wrong API key secret, a revoked API key (after the key
//! store's cache refresh) -> 401 `unauthenticated`; a missing scope -> 403
//! `forbidden`.
//! Also: an upstream 500 body (a stack trace) is replaced; no `X-Powered-By`
//! or `Server`; HSTS, nosniff, X-Frame-Options, Referrer-Policy on every
//! response; every response's `x-request-id` has its security-log line; the
//! gateway's output holds none of the tokens or keys; every log line is JSON,
//! and denials carry decision/reason/category.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod gateway_common;

use std::time::Duration;

use gateway_common::{Gateway, Idp, Pki, Resp, Upstream, assert_no_secrets, send};
use serde_json::{Value, json};

const POLICIES: &str = r#"
@id("orders-readers")
permit(principal, action, resource == Route::"orders")
when { context.scopes.contains("orders:read") };
"#;

fn config(upstream_port: u16) -> String {
    format!(
        r#"log_level = "info"

[[listeners]]
name = "public"
address = "127.0.0.1:0"
certificates = [{{ cert_file = "server.pem", key_file = "server.key", server_names = ["localhost"] }}]

[admin]
address = "127.0.0.1:0"

[[upstreams]]
name = "app"
endpoints = ["127.0.0.1:{upstream_port}"]

[[issuers]]
name = "idp"
issuer = "https://idp.test"
audiences = ["orders-api"]
algorithms = ["RS256", "ES256", "EdDSA"]
jwks_file = "jwks.json"

[apikeys]
database = "keys.db"
pepper_file = "pepper"

[authorization]
policy_file = "policies.cedar"

[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "app"
authn = ["jwt", "apikey"]
forward_identity = {{ "x-user" = "sub", "x-scopes" = "scopes" }}
"#
    )
}

/// Security headers every response carries (TLS listener).
fn assert_security_headers(r: &Resp, what: &str) {
    assert_eq!(
        r.header("strict-transport-security"),
        Some("max-age=63072000; includeSubDomains"),
        "{what}"
    );
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(r.header("x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{what}");
    assert!(
        r.header("x-powered-by").is_none(),
        "{what}: X-Powered-By leaked: {r:?}"
    );
    assert!(r.header("server").is_none(), "{what}: Server leaked: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_authn() {
    if !gateway_common::node_ready("gateway_authn") {
        return;
    }
    let started = std::time::Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let pki = Pki::new(dir);
    let idp = Idp::new(dir);
    std::fs::write(
        dir.join("pepper"),
        format!(
            "{}-pepper-for-the-gateway-e2e-test",
            gateway_common::unique()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("policies.cedar"), POLICIES).unwrap();
    let upstream = Upstream::start(dir);
    let cfg = dir.join("gateway.toml");
    std::fs::write(&cfg, config(upstream.port)).unwrap();

    // API keys, made with the CLI against the same config
    let (key_a, _) = Gateway::apikey_create(&cfg, "partner-a", &["orders:read"]);
    let (key_b, id_b) = Gateway::apikey_create(&cfg, "partner-b", &["orders:read"]);
    let (key_c, _) = Gateway::apikey_create(&cfg, "partner-c", &["profile"]);
    // a wrong secret for key A's id: flip the last character of the secret
    let wrong_secret = {
        let mut k = key_a.clone();
        let last = k.pop().unwrap();
        k.push(if last == 'A' { 'B' } else { 'A' });
        k
    };

    // tokens
    let now = gateway_common::now();
    let claims = |sub: &str, aud: &str, exp: i64, scope: &str| json!({"iss": "https://idp.test", "aud": aud, "sub": sub, "scope": scope, "iat": now, "exp": exp});
    let good = claims("alice", "orders-api", now + 600, "orders:read orders:write");
    let specs = vec![
        json!({"alg": "RS256", "claims": claims("alice-rs", "orders-api", now + 600, "orders:read orders:write")}),
        json!({"alg": "ES256", "claims": claims("alice-es", "orders-api", now + 600, "orders:read orders:write")}),
        json!({"alg": "EdDSA", "claims": claims("alice-ed", "orders-api", now + 600, "orders:read orders:write")}),
        json!({"alg": "RS256", "claims": claims("alice", "billing-api", now + 600, "orders:read")}),
        json!({"alg": "ES256", "claims": claims("alice", "orders-api", now - 3600, "orders:read")}),
        json!({"alg": "none", "claims": good}),
        json!({"alg": "HS256-confusion", "claims": good}),
        json!({"alg": "RS256", "claims": good, "header": {"kid": "rs-unknown"}}),
        json!({"alg": "EdDSA", "claims": good, "tamper": true}),
        json!({"alg": "RS256", "claims": claims("bob", "orders-api", now + 600, "profile")}),
    ];
    let tokens = idp.sign(&specs);
    let (valid, invalid) = tokens.split_at(3);
    let no_scope = &invalid[6];

    // the service itself does send the headers the gateway must strip
    let direct = send(
        gateway_common::plain_client().get(format!("http://127.0.0.1:{}/health", upstream.port)),
    )
    .await;
    assert_eq!(direct.header("x-powered-by"), Some("Express"), "{direct:?}");
    assert!(
        direct
            .header("server")
            .is_some_and(|s| s.starts_with("node/")),
        "{direct:?}"
    );

    let gw = Gateway::start(&cfg, "gateway").await;
    let base = format!("https://localhost:{}", gw.addr("public").port());
    let c = pki.client(None);
    // (request id, expected status) of every request, checked against the log at the end
    let mut seen: Vec<(String, u16)> = Vec::new();

    // --- allow: JWTs of each algorithm
    for (token, sub) in valid.iter().zip(["alice-rs", "alice-es", "alice-ed"]) {
        let r = send(
            c.get(format!("{base}/orders/items?page=2"))
                .bearer_auth(token)
                .header("x-user", "mallory")
                .header("x-scopes", "admin"),
        )
        .await;
        assert_eq!(r.status, 200, "{sub}: {r:?}");
        assert_security_headers(&r, sub);
        let echo = r.json();
        assert_eq!(echo["path"], "/orders/items", "{echo}");
        assert_eq!(echo["url"], "/orders/items?page=2", "{echo}");
        let h = &echo["headers"];
        assert_eq!(
            h["x-user"], sub,
            "the service must see the verified subject, not the client's x-user: {h}"
        );
        assert_eq!(h["x-scopes"], "orders:read,orders:write", "{h}");
        assert!(
            h.get("authorization").is_none(),
            "Authorization forwarded upstream: {h}"
        );
        assert_eq!(h["x-request-id"], r.request_id().as_str(), "{h}");
        assert_eq!(h["x-forwarded-proto"], "https", "{h}");
        let rec = gw.record(&r.request_id()).await;
        assert_eq!(rec["decision"], "allow", "{rec}");
        assert_eq!(rec["route"], "orders", "{rec}");
        assert_eq!(rec["auth_method"], "jwt", "{rec}");
        assert_eq!(
            rec["principal"],
            format!("jwt:https://idp.test|{sub}"),
            "{rec}"
        );
        assert_eq!(rec["reason"], "policy:orders-readers", "{rec}");
        seen.push((r.request_id(), 200));
    }

    // --- deny: bad tokens, each with its exact log reason
    for (token, reason) in invalid[..6].iter().zip([
        "wrong_audience",
        "expired",
        "alg_none",
        "alg_not_allowed", // HS256 is not in the issuer's allowlist, and kid rs-1 is an RSA key
        "unknown_key",
        "bad_signature",
    ]) {
        let r = send(c.get(format!("{base}/orders/items")).bearer_auth(token)).await;
        r.assert_error(401, "unauthenticated", reason);
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer error=\"invalid_token\""),
            "{reason}"
        );
        assert_security_headers(&r, reason);
        assert!(
            !r.body.contains(reason),
            "the log reason reached the client: {}",
            r.body
        );
        let rec = gw.record(&r.request_id()).await;
        assert_eq!(rec["decision"], "deny", "{rec}");
        assert_eq!(rec["reason"], reason, "{rec}");
        assert_eq!(rec["category"], "authentication_failure", "{rec}");
        seen.push((r.request_id(), 401));
    }

    // --- deny: no credential
    let r = send(c.get(format!("{base}/orders/items"))).await;
    r.assert_error(401, "unauthenticated", "no credential");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(
        gw.record(&r.request_id()).await["reason"],
        "missing_credentials"
    );
    seen.push((r.request_id(), 401));

    // --- deny: authenticated but the scope is missing -> 403
    let r = send(c.get(format!("{base}/orders/items")).bearer_auth(no_scope)).await;
    r.assert_error(403, "forbidden", "JWT without orders:read");
    let rec = gw.record(&r.request_id()).await;
    assert_eq!(
        (rec["reason"].as_str(), rec["category"].as_str()),
        (Some("no_policy_permits"), Some("access_denied")),
        "{rec}"
    );
    seen.push((r.request_id(), 403));
    let r = send(
        c.get(format!("{base}/orders/items"))
            .header("x-api-key", &key_c),
    )
    .await;
    r.assert_error(403, "forbidden", "API key without orders:read");
    seen.push((r.request_id(), 403));

    // --- allow: API keys, in x-api-key and in Authorization: ApiKey
    for (req, consumer) in [
        (
            c.get(format!("{base}/orders/k"))
                .header("x-api-key", &key_a),
            "partner-a",
        ),
        (
            c.get(format!("{base}/orders/k"))
                .header("authorization", format!("ApiKey {key_b}")),
            "partner-b",
        ),
    ] {
        let r = send(req.header("x-user", "mallory")).await;
        assert_eq!(r.status, 200, "{consumer}: {r:?}");
        assert_security_headers(&r, consumer);
        let h = &r.json()["headers"];
        assert_eq!(h["x-user"], consumer, "{h}");
        assert_eq!(h["x-scopes"], "orders:read", "{h}");
        assert!(
            h.get("x-api-key").is_none() && h.get("authorization").is_none(),
            "a credential header was forwarded: {h}"
        );
        let rec = gw.record(&r.request_id()).await;
        assert_eq!(rec["principal"], format!("apikey:{consumer}"), "{rec}");
        seen.push((r.request_id(), 200));
    }

    // --- deny: wrong secret for a real key id
    let r = send(
        c.get(format!("{base}/orders/k"))
            .header("x-api-key", &wrong_secret),
    )
    .await;
    r.assert_error(401, "unauthenticated", "wrong API key secret");
    assert_eq!(r.header("www-authenticate"), Some("ApiKey"));
    assert_eq!(gw.record(&r.request_id()).await["reason"], "bad_secret");
    seen.push((r.request_id(), 401));

    // --- deny: key B revoked by the CLI (another process); the running
    // gateway notices within its key cache refresh interval (5 s)
    let (code, out, err) = Gateway::cli(&cfg, &["apikey", "revoke", &id_b]);
    assert_eq!(code, 0, "apikey revoke: {out}{err}");
    let revoked_at = std::time::Instant::now();
    let r = gateway_common::wait_for("revoked key refused", Duration::from_secs(20), || {
        let req = c
            .get(format!("{base}/orders/k"))
            .header("x-api-key", &key_b);
        async move {
            let r = send(req).await;
            if r.status == 200 { None } else { Some(r) }
        }
    })
    .await;
    eprintln!(
        "revoked key refused {:?} after revoke",
        revoked_at.elapsed()
    );
    r.assert_error(401, "unauthenticated", "revoked API key");
    assert_eq!(gw.record(&r.request_id()).await["reason"], "revoked");
    seen.push((r.request_id(), 401));

    // --- an upstream 500 with a stack trace: status kept, body replaced
    let r = send(c.get(format!("{base}/orders/boom")).bearer_auth(&valid[0])).await;
    r.assert_error(500, "upstream_error", "upstream 500");
    assert!(
        !r.body.contains("secret/internal.js") && !r.body.contains("boom"),
        "upstream body leaked: {}",
        r.body
    );
    assert_security_headers(&r, "upstream 500");
    seen.push((r.request_id(), 500));

    // --- the security log: one JSON line per request, matching ids and statuses
    let log = gw.security_log();
    for (id, status) in &seen {
        let recs: Vec<&Value> = log
            .iter()
            .filter(|r| r["request_id"] == id.as_str())
            .collect();
        assert_eq!(recs.len(), 1, "exactly one log line per request id {id}");
        assert_eq!(recs[0]["status"], *status, "{}", recs[0]);
    }
    for rec in &log {
        for field in [
            "time",
            "request_id",
            "client_ip",
            "method",
            "path",
            "decision",
            "reason",
            "status",
        ] {
            assert!(rec.get(field).is_some(), "log line without {field}: {rec}");
        }
        if rec["decision"] == "deny" {
            assert!(
                rec["reason"].as_str().is_some_and(|s| !s.is_empty()),
                "deny without reason: {rec}"
            );
            assert!(
                rec["category"].as_str().is_some_and(|s| !s.is_empty()),
                "deny without category: {rec}"
            );
        }
    }

    // --- nothing secret in the gateway's output
    let mut secrets: Vec<String> = tokens.clone();
    // the signature part of each token on its own, too
    secrets.extend(
        tokens
            .iter()
            .filter_map(|t| t.rsplit('.').next())
            .filter(|s| s.len() > 20)
            .map(str::to_string),
    );
    secrets.extend([
        key_a.clone(),
        key_b.clone(),
        key_c.clone(),
        wrong_secret.clone(),
    ]);
    secrets.extend(
        [&key_a, &key_b, &key_c]
            .iter()
            .filter_map(|k| k.rsplit('_').next())
            .map(str::to_string),
    );
    let output = format!("{}{}", gw.stdout(), gw.stderr());
    assert!(!output.is_empty());
    assert_no_secrets("gateway output", &output, &secrets);
    assert!(
        !output.contains("pal_"),
        "an API key prefix reached the gateway output"
    );
    eprintln!(
        "gateway_authn: {} requests, {:?}",
        seen.len(),
        started.elapsed()
    );
}
