//! Bad input: each request gets a clear 4xx with an exact message, changes
//! nothing (checked by reading back), and, once it has a path the server can
//! parse, is audited. Also: a sealed server answers 503 everywhere but the
//! unauthenticated status endpoints.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use common::*;
use serde_json::{Value, json};

const SECRET: &str = "bad-input-secret-91c2";

/// Audit records for `path` that carry `error`.
fn audited_error(log: &std::path::Path, path: &str, error: &str) -> bool {
    audit_records(log)
        .iter()
        .any(|r| r["request"]["path"] == path && r["error"] == error)
}

async fn raw_json(s: &TestServer, method: &str, path: &str, body: &[u8]) -> Resp {
    s.send(
        method,
        path,
        &[
            ("X-Vault-Token", s.root.clone()),
            ("Content-Type", "application/json".into()),
        ],
        Some(body.to_vec()),
    )
    .await
}

// ------------------------------------------------------------ JSON bodies

#[tokio::test]
async fn malformed_and_non_object_json() {
    let s = TestServer::dev().await;
    let log = s.enable_audit("file").await;
    s.kv_put("j", json!({"v": SECRET})).await;

    let cases: &[(&[u8], &str)] = &[
        (
            b"{\"data\":",
            "failed to parse JSON input: unexpected end of JSON input at line 1 column 8",
        ),
        (
            b"{\"data\": nope}",
            "failed to parse JSON input: invalid JSON syntax at line 1 column 11",
        ),
        (
            b"[1, 2]",
            "failed to parse JSON input: request body must be a JSON object",
        ),
        (
            b"\"just a string\"",
            "failed to parse JSON input: request body must be a JSON object",
        ),
        (
            b"42",
            "failed to parse JSON input: request body must be a JSON object",
        ),
        (
            b"{\"data\":{}} trailing",
            "failed to parse JSON input: invalid JSON syntax at line 1 column 13",
        ),
    ];
    for (body, msg) in cases {
        let r = raw_json(&s, "POST", "secret/data/j", body).await;
        assert_error(&r, 400, msg);
        assert!(
            audited_error(&log, "secret/data/j", msg),
            "not audited: {msg}"
        );
        let r = raw_json(&s, "PUT", "sys/policy/j", body).await;
        assert_error(&r, 400, msg);
    }
    // the error never echoes the input
    let r = raw_json(
        &s,
        "POST",
        "secret/data/j",
        format!("{{\"{SECRET}\"").as_bytes(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(!r.text.contains(SECRET));

    // JSON null and an empty body are "no body"
    let r = raw_json(&s, "POST", "secret/data/j", b"null").await;
    assert_error(&r, 400, "no data provided");
    let r = raw_json(&s, "POST", "secret/data/j", b"  \n").await;
    assert_error(&r, 400, "no data provided");

    // unauthenticated endpoints too (not audited, as in Vault)
    let r = s
        .send("PUT", "sys/unseal", &[], Some(b"{\"key\":".to_vec()))
        .await;
    assert_error(
        &r,
        400,
        "failed to parse JSON input: unexpected end of JSON input at line 1 column 7",
    );
    assert!(audit_for(&audit_records(&log), "sys/unseal").is_empty());

    // without a token the body is never read: refused (and audited) as unauthenticated
    let r = s
        .send("POST", "secret/data/j", &[], Some(b"{".to_vec()))
        .await;
    assert_denied(&r);

    // nothing changed
    let r = s.get("secret/data/j", &s.root).await;
    assert_eq!(r.data()["data"], json!({"v": SECRET}));
    assert_eq!(r.data()["metadata"]["version"], 1);
    assert_empty_404(&s.get("sys/policy/j", &s.root).await);
    assert!(palisade_audit::verify(&log).is_ok());
}

#[tokio::test]
async fn body_over_the_limit() {
    let s = TestServer::with_limit(1024).await;
    let log = s.enable_audit("file").await;
    s.kv_put("big", json!({"v": "small"})).await;

    let big = json!({"data": {"v": "x".repeat(2000)}});
    let r = s.post("secret/data/big", &s.root, big.clone()).await;
    assert_error(&r, 413, "http: request body too large");
    assert!(audited_error(
        &log,
        "secret/data/big",
        "http: request body too large"
    ));
    let r = s.post("secret/data/other", &s.root, big.clone()).await;
    assert_error(&r, 413, "http: request body too large");
    let r = s
        .call(
            "PUT",
            "sys/unseal",
            None,
            Some(json!({"key": "0".repeat(2000)})),
        )
        .await;
    assert_error(&r, 413, "http: request body too large");
    // without a token the body is never read: 403, whatever its size
    let r = s.call("POST", "secret/data/big", None, Some(big)).await;
    assert_denied(&r);

    // nothing changed; a body under the limit works
    let r = s.get("secret/data/big", &s.root).await;
    assert_eq!(r.data()["data"], json!({"v": "small"}));
    assert_empty_404(&s.get("secret/data/other", &s.root).await);
    let r = s
        .post(
            "secret/data/big",
            &s.root,
            json!({"data": {"v": "y".repeat(900)}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(palisade_audit::verify(&log).is_ok());
}

// ------------------------------------------------------------ paths and methods

#[tokio::test]
async fn unknown_paths() {
    let s = TestServer::dev().await;
    let log = s.enable_audit("file").await;
    for (method, path) in [
        ("GET", "nope/x"),
        ("POST", "nope/x"),
        ("GET", "sys/nope"),
        ("POST", "auth/token/nope"),
        ("GET", "auth/userpass/login/x"),
        ("GET", "secret/nope/x"),
    ] {
        let r = s.call(method, path, Some(&s.root), Some(json!({}))).await;
        assert_error(&r, 404, "unsupported path");
        assert!(
            audited_error(&log, path, "unsupported path"),
            "{path} not audited"
        );
    }
    // without permission the ACL answers first: nothing about what exists
    let nothing = s.powerless_token().await;
    assert_denied(&s.get("nope/x", &nothing.id).await);
    // not under /v1/
    let (status, body) = s.raw("GET", "/v2/sys/health", None, b"").await;
    assert_eq!(
        (status, body.as_str()),
        (404, r#"{"errors":["unsupported path"]}"#)
    );
    let (status, body) = s.raw("GET", "/v1/", Some(&s.root), b"").await;
    assert_eq!(
        (status, body.as_str()),
        (404, r#"{"errors":["unsupported path"]}"#)
    );
}

#[tokio::test]
async fn wrong_methods() {
    let s = TestServer::dev().await;
    let log = s.enable_audit("file").await;
    s.kv_put("w", json!({"v": SECRET})).await;
    // known endpoints, operation they lack: through the core, audited
    for (method, path) in [
        ("LIST", "secret/data/w"),
        ("GET", "secret/delete/w"),
        ("GET", "sys/seal"),
        ("DELETE", "sys/rotate"),
        ("DELETE", "sys/key-status"),
        ("DELETE", "sys/mounts"),
        ("GET", "sys/capabilities-self"),
        ("GET", "sys/audit-hash/file"),
        ("GET", "sys/audit/file"),
        ("LIST", "sys/policy/default"),
        ("GET", "auth/token/create"),
        ("DELETE", "auth/token/lookup-self"),
    ] {
        let r = s.call(method, path, Some(&s.root), None).await;
        assert_error(&r, 405, "unsupported operation");
        // audited under the canonical path: a LIST's ends in `/`
        let canonical = if method == "LIST" {
            format!("{path}/")
        } else {
            path.to_string()
        };
        assert!(
            audited_error(&log, &canonical, "unsupported operation"),
            "{method} {path} not audited"
        );
    }
    // unauthenticated endpoints
    for (method, path) in [
        ("DELETE", "sys/init"),
        ("GET", "sys/unseal"),
        ("POST", "sys/seal-status"),
        ("POST", "sys/health"),
    ] {
        let r = s.call(method, path, None, None).await;
        assert_error(&r, 405, "unsupported operation");
    }
    // methods the API does not have at all
    let r = s.call("FOO", "secret/data/w", Some(&s.root), None).await;
    assert_error(&r, 405, "unsupported operation");
    let r = s.call("HEAD", "secret/data/w", Some(&s.root), None).await;
    assert_eq!((r.status, r.text.as_str()), (405, ""));
    let r = s.call("OPTIONS", "sys/health", None, None).await;
    assert_error(&r, 405, "unsupported operation");
    // nothing changed
    assert_eq!(
        s.get("secret/data/w", &s.root).await.data()["data"]["v"],
        SECRET
    );
    assert_eq!(
        s.call("GET", "sys/seal-status", None, None).await.body["sealed"],
        false
    );
}

#[tokio::test]
async fn path_tricks_are_refused() {
    let s = TestServer::dev().await;
    s.kv_put("t", json!({"v": SECRET})).await;
    let dots = r#"{"errors":["invalid path: empty, '.' or '..' segments are not allowed"]}"#;
    for (method, target) in [
        ("PUT", "/v1/secret/../sys/seal"),
        ("PUT", "/v1/secret/data/../../sys/seal"),
        ("PUT", "/v1/secret/%2e%2e/sys/seal"),
        ("PUT", "/v1/secret/%2E%2E/sys/seal"),
        ("PUT", "/v1/secret/.%2e/sys/seal"),
        ("GET", "/v1/secret/data/./t"),
        ("GET", "/v1/secret/data/%2e/t"),
        ("GET", "/v1/secret//data/t"),
        ("GET", "/v1/secret/data//t"),
        ("GET", "/v1/secret/data/t/.."),
        ("GET", "/v1/secret/data/t/."),
        ("GET", "/v1//sys/health"),
        ("POST", "/v1/secret/data/%2e%2e/t"),
        ("GET", "/v1/secret/metadata/%2e%2e/"),
    ] {
        let body = if method == "GET" {
            &b""[..]
        } else {
            &b"{\"data\":{\"v\":\"evil\"}}"[..]
        };
        let (status, text) = s.raw(method, target, Some(&s.root), body).await;
        assert_eq!((status, text.as_str()), (400, dots), "{method} {target}");
    }
    for (target, msg) in [
        ("/v1/secret/data/%ff", "invalid UTF-8 in path"),
        ("/v1/secret/data/a%c3", "invalid UTF-8 in path"),
        ("/v1/secret/data/a%00b", "invalid character in path"),
        ("/v1/secret/data/a%0ab", "invalid character in path"),
        ("/v1/secret/data/a%zz", "invalid percent-encoding in path"),
        ("/v1/secret/data/a%2", "invalid percent-encoding in path"),
    ] {
        let (status, text) = s.raw("GET", target, Some(&s.root), b"").await;
        assert_eq!(
            (status, text),
            (400, json!({"errors": [msg]}).to_string()),
            "{target}"
        );
    }
    let (status, text) = s
        .raw("GET", "/v1/secret/data/t?list=%ff", Some(&s.root), b"")
        .await;
    assert_eq!(
        (status, text.as_str()),
        (400, r#"{"errors":["invalid query string"]}"#)
    );

    // nothing changed: still unsealed, the secret intact, nothing new listed
    assert_eq!(
        s.call("GET", "sys/seal-status", None, None).await.body["sealed"],
        false
    );
    let r = s.get("secret/data/t", &s.root).await;
    assert_eq!(
        (
            r.data()["data"]["v"].clone(),
            r.data()["metadata"]["version"].clone()
        ),
        (json!(SECRET), json!(1))
    );
    assert_eq!(
        s.list("secret/metadata/", &s.root).await.data()["keys"],
        json!(["t"])
    );
    // an encoded space is an ordinary key character
    let (status, _) = s
        .raw(
            "POST",
            "/v1/secret/data/a%20b",
            Some(&s.root),
            b"{\"data\":{\"k\":\"v\"}}",
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        s.get("secret/data/a%20b", &s.root).await.data()["data"]["k"],
        "v"
    );
}

// ------------------------------------------------------------ invalid policies

#[tokio::test]
async fn invalid_policies() {
    let s = TestServer::dev().await;
    let log = s.enable_audit("file").await;
    s.write_policy("keep", r#"path "a" { capabilities = ["read"] }"#)
        .await;
    for (hcl, msg) in [
        (
            r#"path "x" { capabilities = ["read"] "#,
            "failed to parse policy: line 1, column 36: invalid block body; expected `}`, newline or identifier",
        ),
        (
            r#"path "x" { capabilities = ["fly"] }"#,
            "failed to parse policy: path \"x\": invalid capability \"fly\"",
        ),
        (
            "path \"x\" {\n  capabilities = [\"read\"]\n  allowed_parameters = { \"a\" = [] }\n}\n",
            "failed to parse policy: path \"x\": allowed_parameters is not supported",
        ),
        (
            r#"bogus "x" {}"#,
            "failed to parse policy: invalid key \"bogus\"",
        ),
        // Unclosed nesting the HCL parser would take seconds (and, a few
        // levels deeper, hours) to reject: refused before it parses.
        (
            "e=s/a/{p/a/{p/a/{p/a/{p/a/{p/a/{p/a/{p/a/{p/a/{p/a/{p/a/{p/a/{p/a/{p/a/{p/a/{p/a/{p/a/{p/a/{p",
            "failed to parse policy: policy text nests deeper than 4 levels of brackets",
        ),
        // JSON policies: the same rules, and strict JSON
        (
            r#"{"path": {"x": {"capabilities": ["fly"]}}}"#,
            "failed to parse policy: path \"x\": invalid capability \"fly\"",
        ),
        (
            r#"{"path": {"x": {"capabilities": ["read"], "allowed_parameters": {"a": []}}}}"#,
            "failed to parse policy: path \"x\": allowed_parameters is not supported",
        ),
        (
            r#"{"bogus": {"x": {}}}"#,
            "failed to parse policy: invalid key \"bogus\"",
        ),
        (
            r#"{"path": "x"}"#,
            r#"failed to parse policy: path must be an object of path patterns to rules: {"path": {"<pattern>": {"capabilities": [...]}}}"#,
        ),
        (
            r#"{"path": {"x": {"capabilities": ["read"]}}"#,
            "failed to parse policy: line 1, column 42: invalid JSON: EOF while parsing an object",
        ),
        (
            r#"{"path": {"x": {"capabilities": ["deny"]}, "x": {"capabilities": ["read"]}}}"#,
            r#"failed to parse policy: line 1, column 46: invalid JSON: duplicate key "x""#,
        ),
    ] {
        for name in ["fresh", "keep"] {
            let path = format!("sys/policy/{name}");
            let r = s.put(&path, &s.root, json!({"policy": hcl})).await;
            // the client gets the details; the audit record, whose data
            // holds the policy text HMAC'd, gets no quote of it
            assert_error(&r, 400, msg);
            assert!(
                audited_error(&log, &path, "failed to parse policy"),
                "not audited: {msg}"
            );
            assert!(
                !audited_error(&log, &path, msg),
                "quoted in the audit: {msg}"
            );
        }
    }
    assert_empty_404(&s.get("sys/policy/fresh", &s.root).await);
    assert_eq!(
        s.get("sys/policy/keep", &s.root).await.data()["rules"],
        r#"path "a" { capabilities = ["read"] }"#
    );
}

// ------------------------------------------------------------ unknown fields, wrapping

#[tokio::test]
async fn unknown_body_fields_are_ignored() {
    let s = TestServer::dev().await;
    // node-vault sends path parameters in the body
    let r = s
        .put(
            "sys/policy/nv",
            &s.root,
            json!({"name": "nv", "rules": r#"path "a" { capabilities = ["read"] }"#, "mount_point": "x"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .post(
            "sys/mounts/nvkv",
            &s.root,
            json!({"type": "kv", "mount_point": "nvkv", "name": "nvkv", "whatever": [1]}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .post(
            "auth/token/create",
            &s.root,
            json!({"policies": ["nv"], "mount_point": "token", "unknown": true}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let t = r.auth()["client_token"].as_str().unwrap().to_string();
    let r = s
        .post(
            "auth/token/lookup",
            &s.root,
            json!({"token": t, "name": "x"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .post(
            "secret/data/u",
            &s.root,
            json!({"data": {"k": "v"}, "mount_point": "secret", "name": "u"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // only `data` is stored
    assert_eq!(
        s.get("secret/data/u", &s.root).await.data()["data"],
        json!({"k": "v"})
    );
    let r = s
        .post(
            "sys/capabilities-self",
            &s.root,
            json!({"paths": ["a"], "mount_point": "x"}),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = s
        .call(
            "PUT",
            "sys/unseal",
            None,
            Some(json!({"reset": true, "migrate": false, "name": "x"})),
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn a_bad_wrap_ttl_is_refused_and_the_response_never_sent_bare() {
    let s = TestServer::dev().await;
    s.kv_put("wrap", json!({"v": SECRET})).await;
    for ttl in ["0", "never", "-1s"] {
        let r = s
            .send(
                "GET",
                "secret/data/wrap",
                &[
                    ("X-Vault-Token", s.root.clone()),
                    ("X-Vault-Wrap-TTL", ttl.into()),
                ],
                None,
            )
            .await;
        assert_error(
            &r,
            400,
            "invalid X-Vault-Wrap-TTL: expected a positive duration such as 60s or 15m",
        );
        assert!(!r.text.contains(SECRET));
    }
    // a good one wraps: the secret is not in the answer
    let r = s
        .send(
            "GET",
            "secret/data/wrap",
            &[
                ("X-Vault-Token", s.root.clone()),
                ("X-Vault-Wrap-TTL", "60s".into()),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!r.text.contains(SECRET));
    assert_eq!(r.body["wrap_info"]["ttl"], 60);
}

// ------------------------------------------------------------ sealed

#[tokio::test]
async fn sealed_server_answers_503() {
    let mut s = TestServer::uninit().await;
    let keys = s.init_and_unseal(1, 1).await;
    s.post("sys/mounts/secret", &s.root, json!({"type": "kv-v2"}))
        .await;
    s.kv_put("x", json!({"v": SECRET})).await;
    let t = s.create_token(&s.root, json!({})).await;
    s.seal().await;

    let endpoints: &[(&str, &str, Option<Value>)] = &[
        ("GET", "secret/data/x", None),
        (
            "POST",
            "secret/data/x",
            Some(json!({"data": {"v": "evil"}})),
        ),
        (
            "PATCH",
            "secret/data/x",
            Some(json!({"data": {"v": "evil"}})),
        ),
        ("DELETE", "secret/data/x", None),
        ("LIST", "secret/metadata/", None),
        ("GET", "secret/metadata/x", None),
        ("POST", "secret/destroy/x", Some(json!({"versions": [1]}))),
        ("GET", "secret/config", None),
        ("PUT", "sys/seal", Some(json!({}))),
        ("PUT", "sys/rotate", Some(json!({}))),
        ("GET", "sys/key-status", None),
        ("GET", "sys/mounts", None),
        ("POST", "sys/mounts/new", Some(json!({"type": "kv"}))),
        ("DELETE", "sys/mounts/secret", None),
        ("GET", "sys/mounts/secret/tune", None),
        ("GET", "sys/policy", None),
        (
            "PUT",
            "sys/policy/p",
            Some(json!({"policy": "path \"a\" { capabilities = [\"read\"] }"})),
        ),
        ("DELETE", "sys/policy/default", None),
        ("GET", "sys/policies/acl/default", None),
        ("GET", "sys/audit", None),
        (
            "PUT",
            "sys/audit/f",
            Some(json!({"type": "file", "options": {"file_path": "/tmp/x"}})),
        ),
        ("POST", "sys/audit-hash/f", Some(json!({"input": "x"}))),
        (
            "POST",
            "sys/capabilities-self",
            Some(json!({"paths": ["a"]})),
        ),
        ("POST", "auth/token/create", Some(json!({}))),
        ("GET", "auth/token/lookup-self", None),
        ("POST", "auth/token/lookup", Some(json!({"token": "x"}))),
        ("POST", "auth/token/renew-self", Some(json!({}))),
        ("POST", "auth/token/revoke", Some(json!({"token": "x"}))),
        ("LIST", "auth/token/accessors", None),
        ("GET", "nope/x", None),
    ];
    for (method, path, body) in endpoints {
        for token in [Some(s.root.as_str()), Some(t.id.as_str()), None] {
            let r = if *method == "PATCH" {
                s.patch(path, token.unwrap_or(""), body.clone().unwrap())
                    .await
            } else {
                s.call(method, path, token, body.clone()).await
            };
            assert_error(&r, 503, "Vault is sealed");
            assert_eq!(r.header("cache-control"), Some("no-store"));
        }
    }
    // bad input on a sealed server: still just "sealed"
    let r = raw_json(&s, "POST", "secret/data/x", b"{").await;
    assert_error(&r, 503, "Vault is sealed");

    // the unauthenticated endpoints still answer
    let r = s.call("GET", "sys/seal-status", None, None).await;
    assert_eq!((r.status, &r.body["sealed"]), (200, &json!(true)));
    let r = s.call("GET", "sys/health", None, None).await;
    assert_eq!((r.status, &r.body["sealed"]), (503, &json!(true)));
    assert_eq!(s.call("HEAD", "sys/health", None, None).await.status, 503);
    let r = s.call("GET", "sys/init", None, None).await;
    assert_eq!((r.status, &r.body), (200, &json!({"initialized": true})));
    let r = s.call("GET", "sys/leader", None, None).await;
    assert_eq!(r.status, 200);
    let r = s
        .call("PUT", "sys/unseal", None, Some(json!({"reset": true})))
        .await;
    assert_eq!((r.status, &r.body["sealed"]), (200, &json!(true)));

    // unseal: everything is back and nothing changed while sealed
    s.unseal(&keys).await;
    let r = s.get("secret/data/x", &s.root).await;
    assert_eq!(r.data()["data"], json!({"v": SECRET}));
    assert_eq!(r.data()["metadata"]["version"], 1);
    assert_eq!(s.get("auth/token/lookup-self", &t.id).await.status, 200);
    assert_eq!(
        s.get("sys/mounts", &s.root).await.data()["secret/"]["type"],
        "kv"
    );
}
