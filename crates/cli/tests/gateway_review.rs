//! Issue #13's request and header findings, each reproduced against a real
//! `palisade gateway` process (a `dangerous_plaintext` listener, so the bytes
//! on the wire are exactly the test's) in front of the Express echo service:
//!
//! - identity headers: every header any route sets from an identity is
//!   removed from every request, on every route (not only on the routes that
//!   set it), and header names with `_` (which CGI, WSGI and Rack read as the
//!   `-` spelling) are dropped;
//! - headers that change a request's meaning in common frameworks
//!   (`X-HTTP-Method-Override`, `X-Original-URL`, `X-Rewrite-URL`,
//!   `X-Forwarded-Prefix`, `X-Forwarded-Port`...) are removed;
//! - `Host`: two of them, userinfo, a value that is not a host, or an
//!   absolute-form target whose authority differs from `Host` -> 400
//!   `invalid_host`; the host is canonical (lowercase, no trailing dot, no
//!   port) for routing, policy and the log;
//! - `..;` (and `.;`) segments, which Tomcat-family services read as dot
//!   segments -> 400 `invalid_path`;
//! - a non-preflight `OPTIONS` on a CORS route whose `methods` exclude it -> 405;
//! - a client's broken request body -> 400 `invalid_body`, never held against
//!   the upstream's health; upstream timeouts (one request's slow work) do not
//!   eject an endpoint either.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod gateway_common;

use std::time::Duration;

use gateway_common::{Gateway, RawReply, Upstream, raw_plain};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(5);

const POLICIES: &str = r#"
@id("anonymous")
permit(principal == Anonymous::"anonymous", action, resource);

@id("no-evil-host")
forbid(principal, action, resource) when { context.host == "blocked.example" };
"#;

fn config(upstream_port: u16) -> String {
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
endpoints = ["127.0.0.1:{upstream_port}"]
max_fails = 3
request_timeout_ms = 300

[authorization]
policy_file = "policies.cedar"

[[routes]]
name = "health"
path_prefix = "/health"
upstream = "app"
anonymous = true

[[routes]]
name = "orders"
path_prefix = "/api/orders"
upstream = "app"
anonymous = true
forward_identity = {{ "x-user" = "sub", "x-roles" = "roles" }}

[[routes]]
name = "partners"
path_prefix = "/partners"
upstream = "app"
anonymous = true
forward_identity = {{ "x-client-uri" = "cert_uri" }}

[[routes]]
name = "cors"
path_prefix = "/cors"
upstream = "app"
anonymous = true
methods = ["GET", "POST"]
cors = {{ allowed_origins = ["https://app.example"], allowed_methods = ["GET", "POST"] }}

[[routes]]
name = "slow"
path_prefix = "/orders"
upstream = "app"
anonymous = true
"#
    )
}

async fn start(name: &str) -> (tempfile::TempDir, Upstream, Gateway) {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(dir.path());
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(&cfg, config(up.port)).unwrap();
    std::fs::write(dir.path().join("policies.cedar"), POLICIES).unwrap();
    let gw = Gateway::start(&cfg, name).await;
    (dir, up, gw)
}

fn body_json(r: &RawReply) -> Value {
    let body = r
        .text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("body is not JSON ({e}): {r:?}"))
}

/// A 4xx/5xx from the gateway: its status and `error.code`.
fn assert_gateway_error(r: &RawReply, status: u16, code: &str, what: &str) {
    assert_eq!(r.status(), Some(status), "{what}: {r:?}");
    assert_eq!(body_json(r)["error"]["code"], code, "{what}: {r:?}");
}

/// GET `path` on the plain listener with extra header lines; the reply.
async fn get(gw: &Gateway, path: &str, extra: &str) -> RawReply {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n");
    raw_plain(gw.addr("plain"), req.as_bytes(), LIMIT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_headers_are_removed_on_every_route() {
    if !gateway_common::node_ready("identity_headers_are_removed_on_every_route") {
        return;
    }
    let (_dir, _up, gw) = start("identity").await;
    let forged = "x-user: admin\r\nx-roles: admin\r\nx-client-uri: spiffe://prod/ns/x/sa/admin\r\nx_user: admin\r\nX_Roles: admin\r\nx-client_uri: spiffe://evil\r\n";
    for path in ["/health", "/api/orders", "/partners/x"] {
        let r = get(&gw, path, forged).await;
        assert_eq!(r.status(), Some(200), "{path}: {r:?}");
        let seen = &body_json(&r)["headers"];
        for h in [
            "x-user",
            "x-roles",
            "x-client-uri",
            "x_user",
            "x_roles",
            "x-client_uri",
        ] {
            assert!(
                seen.get(h).is_none(),
                "{path}: the service saw the client's {h}: {seen}"
            );
        }
    }
    // allow: ordinary headers pass
    let r = get(&gw, "/health", "x-trace: abc\r\n").await;
    assert_eq!(body_json(&r)["headers"]["x-trace"], "abc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meaning_changing_headers_are_removed() {
    if !gateway_common::node_ready("meaning_changing_headers_are_removed") {
        return;
    }
    let (_dir, _up, gw) = start("override").await;
    let names = [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-url",
        "x-rewrite-url",
        "x-original-method",
        "x-forwarded-prefix",
        "x-forwarded-port",
        "x-forwarded-host",
        "x-forwarded-server",
        "x-forwarded-uri",
    ];
    let extra: String = names
        .iter()
        .map(|n| format!("{n}: /api/orders/admin\r\n"))
        .collect();
    let r = get(&gw, "/health", &extra).await;
    assert_eq!(r.status(), Some(200), "{r:?}");
    let seen = &body_json(&r)["headers"];
    for n in names {
        assert!(seen.get(n).is_none(), "the service saw {n}: {seen}");
    }
    assert_eq!(body_json(&r)["method"], "GET");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_or_invalid_hosts_are_refused_and_hosts_are_canonical() {
    if !gateway_common::node_ready("ambiguous_or_invalid_hosts_are_refused") {
        return;
    }
    let (_dir, _up, gw) = start("host").await;
    let addr = gw.addr("plain");
    let send = |req: String| async move { raw_plain(addr, req.as_bytes(), LIMIT).await };
    for (what, req) in [
        (
            "two Host headers",
            "GET /health HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\nConnection: close\r\n\r\n".to_string(),
        ),
        (
            "userinfo in Host",
            "GET /health HTTP/1.1\r\nHost: a@evil.example:1\r\nConnection: close\r\n\r\n".to_string(),
        ),
        (
            "not a host",
            "GET /health HTTP/1.1\r\nHost: evil.example/x\r\nConnection: close\r\n\r\n".to_string(),
        ),
        (
            "absolute-form authority differs from Host",
            "GET http://evil.example/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".to_string(),
        ),
    ] {
        let r = send(req).await;
        assert_gateway_error(&r, 400, "invalid_host", what);
    }
    // allow: an absolute-form target that agrees with Host
    let r = send(
        "GET http://localhost/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            .to_string(),
    )
    .await;
    assert_eq!(r.status(), Some(200), "{r:?}");
    // canonical: a host-based forbid holds whatever the spelling
    for host in [
        "blocked.example",
        "BLOCKED.example",
        "blocked.example.",
        "blocked.example:80",
        "Blocked.Example.:8080",
    ] {
        let r = send(format!(
            "GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        ))
        .await;
        assert_gateway_error(&r, 403, "forbidden", host);
    }
    let log = gw.security_log();
    assert!(
        log.iter()
            .filter(|r| r["status"] == 403)
            .all(|r| r["host"] == "blocked.example"),
        "{log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_with_parameters_are_refused() {
    if !gateway_common::node_ready("dot_segments_with_parameters_are_refused") {
        return;
    }
    let (_dir, _up, gw) = start("dotsemi").await;
    for path in [
        "/health/..;/api/orders/admin",
        "/health/%2e%2e;/api/orders/admin",
        "/health/.%2e;x=1/api/orders",
        "/health/.;/x",
        "/health/..;jsessionid=1/x",
    ] {
        let r = get(&gw, path, "").await;
        assert_gateway_error(&r, 400, "invalid_path", path);
    }
    // allow: `;` inside an ordinary segment is a character like any other
    let r = get(&gw, "/health/a;b=c", "").await;
    assert_eq!(r.status(), Some(200), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_is_answered_only_as_a_preflight_on_cors_routes() {
    if !gateway_common::node_ready("options_is_answered_only_as_a_preflight") {
        return;
    }
    let (_dir, _up, gw) = start("options").await;
    // not a preflight: OPTIONS is not among the route's methods
    let r = get(&gw, "/cors/x", "").await;
    assert_eq!(r.status(), Some(200));
    let req = "OPTIONS /cors/x HTTP/1.1\r\nHost: localhost\r\nOrigin: https://app.example\r\nConnection: close\r\n\r\n";
    let r = raw_plain(gw.addr("plain"), req.as_bytes(), LIMIT).await;
    assert_gateway_error(&r, 405, "method_not_allowed", "non-preflight OPTIONS");
    // allow: a preflight is answered by the gateway
    let req = "OPTIONS /cors/x HTTP/1.1\r\nHost: localhost\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: POST\r\nConnection: close\r\n\r\n";
    let r = raw_plain(gw.addr("plain"), req.as_bytes(), LIMIT).await;
    assert_eq!(r.status(), Some(204), "{r:?}");
}

async fn ready(gw: &Gateway) -> u16 {
    gateway_common::plain_client()
        .get(format!("http://{}/readyz", gw.admin))
        .send()
        .await
        .expect("readyz")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_broken_body_is_a_400_and_never_ejects_the_upstream() {
    if !gateway_common::node_ready("a_clients_broken_body_is_a_400") {
        return;
    }
    let (_dir, _up, gw) = start("body").await;
    for (what, req) in [
        (
            "malformed chunk size",
            "POST /health HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n".to_string(),
        ),
        (
            "chunk longer than its size",
            "POST /health HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\nabcdef\r\n0\r\n\r\n".to_string(),
        ),
        (
            "bare LF terminator",
            "POST /health HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\n\n".to_string(),
        ),
    ] {
        for _ in 0..3 {
            let r = raw_plain(gw.addr("plain"), req.as_bytes(), LIMIT).await;
            assert_gateway_error(&r, 400, "invalid_body", what);
        }
    }
    // a client that announces more than it sends and disconnects
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(gw.addr("plain"))
            .await
            .unwrap();
        use tokio::io::AsyncWriteExt;
        s.write_all(b"POST /health HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n")
            .await
            .unwrap();
        s.write_all(&[b'a'; 1000]).await.unwrap();
        drop(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ready(&gw).await, 200, "the upstream must stay in rotation");
    let r = get(&gw, "/health", "").await;
    assert_eq!(r.status(), Some(200), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_do_not_eject_the_upstream() {
    if !gateway_common::node_ready("slow_requests_do_not_eject_the_upstream") {
        return;
    }
    let (_dir, _up, gw) = start("slow").await;
    for _ in 0..4 {
        let r = get(&gw, "/orders/slow?ms=2000", "").await;
        assert_gateway_error(&r, 504, "gateway_timeout", "slow upstream");
    }
    assert_eq!(
        ready(&gw).await,
        200,
        "a slow request is not an unhealthy endpoint"
    );
    let r = get(&gw, "/health", "").await;
    assert_eq!(r.status(), Some(200), "{r:?}");
}

const AUTH_POLICIES: &str = r#"
@id("callers")
permit(principal, action, resource == Route::"orders");

@id("no-admin")
forbid(principal, action, resource) when { context.path_lower like "/api/orders/admin*" };
"#;

fn auth_config(upstream_port: u16) -> String {
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
endpoints = ["127.0.0.1:{upstream_port}"]

[[issuers]]
name = "idp"
issuer = "https://idp.test"
audiences = ["orders-api"]
algorithms = ["RS256"]
jwks_file = "jwks.json"

[apikeys]
database = "keys.db"
pepper_file = "pepper"

[authorization]
policy_file = "policies.cedar"

[[routes]]
name = "orders"
path_prefix = "/api/orders"
upstream = "app"
authn = ["jwt", "apikey"]
forward_identity = {{ "x-user" = "sub", "x-roles" = "roles" }}
"#
    )
}

/// Every presented credential counts (an API key does not excuse a bad
/// bearer token); an identity a service would read differently from Cedar
/// (a role holding the `,` separator) is refused; a forbid on
/// `context.path_lower` holds against case variants a case-insensitive
/// service would route to the same handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_identity_values_and_path_case() {
    if !gateway_common::node_ready("credentials_identity_values_and_path_case") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start(dir.path());
    let idp = gateway_common::Idp::new(dir.path());
    std::fs::write(
        dir.path().join("pepper"),
        format!("{}-pepper-for-the-review-test", gateway_common::unique()),
    )
    .unwrap();
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(&cfg, auth_config(up.port)).unwrap();
    std::fs::write(dir.path().join("policies.cedar"), AUTH_POLICIES).unwrap();
    let (key, _) = Gateway::apikey_create(&cfg, "partner-a", &["orders:read"]);
    let gw = Gateway::start(&cfg, "auth").await;
    let now = gateway_common::now();
    let claims = |roles: serde_json::Value| serde_json::json!({"iss": "https://idp.test", "aud": "orders-api", "sub": "alice", "roles": roles, "iat": now, "exp": now + 600});
    let tokens = idp.sign(&[
        serde_json::json!({"alg": "RS256", "claims": claims(serde_json::json!(["viewer"]))}),
        serde_json::json!({"alg": "RS256", "claims": claims(serde_json::json!(["viewer,orders-admin"]))}),
    ]);
    let (good, comma) = (&tokens[0], &tokens[1]);

    // allow: each credential alone
    let r = get(
        &gw,
        "/api/orders/1",
        &format!("Authorization: Bearer {good}\r\n"),
    )
    .await;
    assert_eq!(r.status(), Some(200), "{r:?}");
    assert_eq!(body_json(&r)["headers"]["x-roles"], "viewer");
    let r = get(&gw, "/api/orders/1", &format!("x-api-key: {key}\r\n")).await;
    assert_eq!(r.status(), Some(200), "{r:?}");

    // deny: a valid API key beside a bad bearer token, and the other way round
    let r = get(
        &gw,
        "/api/orders/1",
        &format!("x-api-key: {key}\r\nAuthorization: Bearer not.a.token\r\n"),
    )
    .await;
    assert_gateway_error(&r, 401, "unauthenticated", "API key + bad bearer");
    let r = get(
        &gw,
        "/api/orders/1",
        &format!("x-api-key: pal_x_wrong\r\nAuthorization: Bearer {good}\r\n"),
    )
    .await;
    assert_gateway_error(&r, 401, "unauthenticated", "bad API key + good bearer");

    // deny: a role holding the separator
    let r = get(
        &gw,
        "/api/orders/1",
        &format!("Authorization: Bearer {comma}\r\n"),
    )
    .await;
    assert_gateway_error(&r, 403, "forbidden", "role with a comma");

    // deny: every case of the admin path
    for path in [
        "/api/orders/admin",
        "/api/orders/ADMIN",
        "/api/orders/Admin/users",
    ] {
        let r = get(&gw, path, &format!("Authorization: Bearer {good}\r\n")).await;
        assert_gateway_error(&r, 403, "forbidden", path);
    }
    let reasons: Vec<String> = gw
        .security_log()
        .iter()
        .filter(|r| r["status"] == 401 || r["status"] == 403)
        .map(|r| r["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        reasons.contains(&"multiple_credentials".to_string()),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"identity_not_forwardable".to_string()),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"forbidden_by:no-admin".to_string()),
        "{reasons:?}"
    );
}

/// A configuration file still being written is never applied: a prefix can
/// parse while missing a route's restrictions (here: the `methods` of a new
/// route). The watcher applies a change only once the file has settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_written_configuration_is_never_applied() {
    if !gateway_common::node_ready("a_half_written_configuration_is_never_applied") {
        return;
    }
    let (dir, up, gw) = start("halfwrite").await;
    let cfg = dir.path().join("gateway.toml");
    let full = format!(
        "{}\n[[routes]]\nname = \"admin\"\npath_prefix = \"/admin\"\nupstream = \"app\"\nanonymous = true\nmethods = [\"GET\"]\n",
        config(up.port)
    );
    let half = &full[..full.rfind("methods").unwrap()];
    let post =
        "POST /admin HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let addr = gw.addr("plain");
    let probe = tokio::spawn(async move {
        let mut statuses = Vec::new();
        for _ in 0..55 {
            let r = raw_plain(addr, post.as_bytes(), LIMIT).await;
            statuses.push(r.status());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        statuses
    });
    // written in two steps, 1.5 s apart, as a slow writer would
    std::fs::write(&cfg, half).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    std::fs::write(&cfg, &full).unwrap();
    let statuses = probe.await.unwrap();
    assert!(
        !statuses.contains(&Some(200)),
        "the half-written file was applied: {statuses:?}"
    );
    // the complete file is applied
    assert_eq!(statuses.last(), Some(&Some(405)), "{statuses:?}");
    let r = get(&gw, "/admin", "").await;
    assert_eq!(r.status(), Some(200), "{r:?}");
    assert_eq!(
        gw.stderr().matches("configuration reloaded").count(),
        1,
        "only the complete file is applied"
    );
}

// ------------------------------------------------------------------ streams that stall

/// A raw HTTP/1.1 service (no Node): `/big/N` answers N bytes, `/stall`
/// answers its head and 1 KiB of a 1 MiB body and then nothing,
/// `/upload` reads its Content-Length body before answering. `open`
/// counts its open connections: a connection the gateway holds is one the
/// service cannot give to anyone else.
struct RawService {
    port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Open(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl RawService {
    async fn start() -> RawService {
        use std::sync::atomic::Ordering;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = open.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                counter.fetch_add(1, Ordering::SeqCst);
                let guard = Open(counter.clone());
                tokio::spawn(async move {
                    let _guard = guard;
                    let _ = Self::serve(s).await;
                });
            }
        });
        RawService { port, open, task }
    }

    async fn serve(mut s: tokio::net::TcpStream) -> std::io::Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = Vec::new();
        loop {
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
            buf.drain(..head_end);
            let path = head.split(' ').nth(1).unwrap_or("/").to_string();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < length {
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..length);
            if let Some(n) = path.strip_prefix("/big/") {
                let n: usize = n.parse().unwrap_or(0);
                s.write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n").as_bytes())
                    .await?;
                let block = vec![b'x'; 64 * 1024];
                let mut left = n;
                while left > 0 {
                    let k = left.min(block.len());
                    s.write_all(&block[..k]).await?;
                    left -= k;
                }
            } else if path == "/stall" {
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n")
                    .await?;
                s.write_all(&[b'x'; 1024]).await?;
                // nothing more: wait for the gateway to give up
                while s.read(&mut chunk).await? > 0 {}
                return Ok(());
            } else {
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await?;
            }
        }
    }

    fn open(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::SeqCst)
    }
}

const STREAM_IDLE: Duration = Duration::from_millis(1000);

async fn start_streams(name: &str) -> (tempfile::TempDir, RawService, Gateway) {
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = RawService::start().await;
    let cfg = dir.path().join("gateway.toml");
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
stream_idle_timeout_ms = {}
max_concurrent_requests_per_client = 4

[[upstreams]]
name = "app"
endpoints = ["127.0.0.1:{}"]
request_timeout_ms = 10000

[authorization]
policy_file = "policies.cedar"

[[routes]]
name = "all"
path_prefix = "/"
upstream = "app"
anonymous = true
"#,
            STREAM_IDLE.as_millis(),
            svc.port
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("policies.cedar"), POLICIES).unwrap();
    let gw = Gateway::start(&cfg, name).await;
    (dir, svc, gw)
}

type H2Sender = hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>;

/// An HTTP/2 (prior knowledge) connection to the plain listener; with
/// `window` 0 the gateway may send no response body byte on any stream.
async fn h2_connect(gw: &Gateway, window: u32) -> (H2Sender, tokio::task::JoinHandle<()>) {
    let tcp = tokio::net::TcpStream::connect(gw.addr("plain"))
        .await
        .expect("connect");
    let (tx, conn) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .initial_stream_window_size(window)
        .adaptive_window(false)
        .handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .expect("h2 handshake");
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (tx, task)
}

async fn h2_get(tx: &mut H2Sender, path: &str) -> hyper::Response<hyper::body::Incoming> {
    tx.ready().await.expect("h2 ready");
    let req = hyper::Request::get(format!("http://localhost{path}"))
        .body(http_body_util::Empty::new())
        .unwrap();
    tx.send_request(req).await.expect("h2 request")
}

/// Issue #13: a client that sets `SETTINGS_INITIAL_WINDOW_SIZE = 0` and
/// opens streams held one upstream connection per stream, past every
/// timeout. Now each is cut after the stream idle timeout (the service's
/// connections close), and one client holds at most
/// `max_concurrent_requests_per_client` forwarded requests: one more is a
/// 429 `too_many_concurrent_requests`. A client that reads slowly but
/// steadily is served whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_http2_streams_release_the_upstream_and_are_capped_per_client() {
    let (_dir, svc, gw) = start_streams("h2_stall").await;
    let (mut tx, conn) = h2_connect(&gw, 0).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let resp = h2_get(&mut tx, "/big/4194304").await;
        assert_eq!(resp.status(), 200);
        held.push(resp);
    }
    let started = std::time::Instant::now();
    gateway_common::wait_for("4 upstream connections", LIMIT, || async {
        (svc.open() == 4).then_some(())
    })
    .await;
    // a fifth request of this client: refused, before it reaches the service
    let r = get(&gw, "/big/10", "").await;
    assert_gateway_error(&r, 429, "too_many_concurrent_requests", "fifth request");
    assert_eq!(svc.open(), 4);
    // the stalled streams are cut after the stream idle timeout, not before
    gateway_common::wait_for("upstream connections closed", LIMIT, || async {
        (svc.open() == 0).then_some(())
    })
    .await;
    assert!(
        started.elapsed() >= STREAM_IDLE - Duration::from_millis(100),
        "cut after {:?}",
        started.elapsed()
    );
    let log = gw.security_log();
    assert!(
        log.iter()
            .any(|r| r["status"] == 429 && r["reason"] == "too_many_concurrent_requests"),
        "the refusal is logged: {log:?}"
    );
    // the cut streams still count for this client until it resets them or
    // closes its connection
    let r = get(&gw, "/big/10", "").await;
    assert_gateway_error(
        &r,
        429,
        "too_many_concurrent_requests",
        "streams still open",
    );
    drop(held);
    drop(tx);
    conn.abort();
    gateway_common::wait_for("the client's slots released", LIMIT, || async {
        (get(&gw, "/big/10", "").await.status() == Some(200)).then_some(())
    })
    .await;

    // a slow but steady reader: longer than the idle timeout in total, never
    // idle that long, served whole
    let (mut tx, _conn) = h2_connect(&gw, 65_535).await;
    let resp = h2_get(&mut tx, "/big/262144").await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let started = std::time::Instant::now();
    let mut got = 0;
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        got += frame
            .expect("body frame")
            .into_data()
            .map(|d| d.len())
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(got, 262_144);
    assert!(started.elapsed() > STREAM_IDLE, "{:?}", started.elapsed());
}

/// An upstream that sends its head and then nothing holds the client's and
/// its own connection no longer than the stream idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_stops_sending_is_cut() {
    let (_dir, svc, gw) = start_streams("upstream_stall").await;
    let started = std::time::Instant::now();
    let r = get(&gw, "/stall", "").await;
    assert_eq!(r.status(), Some(200), "{r:?}");
    assert!(r.closed, "the gateway closed the response: {r:?}");
    assert!(
        started.elapsed() >= STREAM_IDLE && started.elapsed() < LIMIT,
        "{:?}",
        started.elapsed()
    );
    gateway_common::wait_for("upstream connection closed", LIMIT, || async {
        (svc.open() == 0).then_some(())
    })
    .await;
}

/// A client that announces a body and sends none of it: 408 after the
/// stream idle timeout (the upstream's request timeout is 10 s), and the
/// upstream connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_that_stops_is_a_408() {
    let (_dir, svc, gw) = start_streams("body_stall").await;
    let started = std::time::Instant::now();
    let r = raw_plain(
        gw.addr("plain"),
        b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\nabc",
        LIMIT,
    )
    .await;
    assert_gateway_error(&r, 408, "request_timeout", "stalled body");
    assert!(started.elapsed() >= STREAM_IDLE, "{:?}", started.elapsed());
    gateway_common::wait_for("upstream connection closed", LIMIT, || async {
        (svc.open() == 0).then_some(())
    })
    .await;
    // a body that arrives is forwarded
    let r = raw_plain(
        gw.addr("plain"),
        b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
        LIMIT,
    )
    .await;
    assert_eq!(r.status(), Some(200), "{r:?}");
}

/// Every answered request's security-log line reaches stdout even when the
/// gateway is stopped right after answering it (the writer batches lines;
/// shutdown waits for the queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_requests_are_logged_when_the_gateway_stops_right_after() {
    let (_dir, _up, mut gw) = start("logflush").await;
    const N: usize = 200;
    for i in 0..N {
        let r = get(&gw, &format!("/health/{i}"), "").await;
        assert_eq!(r.status(), Some(200), "{r:?}");
    }
    gw.signal("TERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while gw.running() {
        assert!(std::time::Instant::now() < deadline, "gateway did not stop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lines = gw.security_log();
    let logged: Vec<_> = lines
        .iter()
        .filter(|l| {
            l["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/health/"))
        })
        .collect();
    assert_eq!(logged.len(), N, "{}", gw.stderr());
    assert!(!gw.stderr().contains("still queued"), "{}", gw.stderr());
}
