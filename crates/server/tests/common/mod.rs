//! Test harness: an in-process Palisade server on `127.0.0.1:0`, driven over
//! real HTTP with reqwest (or raw bytes on a socket where reqwest would
//! normalise the request, e.g. `..` segments in a path).
//!
//! Every server gets its own temporary directory (SQLite file, audit logs) and
//! stops when the [`TestServer`] is dropped. No fixed ports, no sleeps, no
//! environment changes.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use palisade_server::core::Core;
use palisade_storage::memory::MemoryBackend;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const DEFAULT_LIMIT: usize = palisade_server::http::DEFAULT_MAX_REQUEST_SIZE;

/// How to start a server.
#[derive(Clone)]
pub struct Opts {
    pub max_request_size: usize,
    /// Keep storage in a [`MemoryBackend`] the test can tamper with.
    pub memory: bool,
    /// Run `dev_setup` (initialised, unsealed, KV v2 at `secret/`); otherwise
    /// the server is left uninitialised for `sys/init` over HTTP.
    pub dev: bool,
    /// Let the API enable file audit devices in the server's temp dir
    /// (`[audit] dangerous_allow_api_file_devices`); off is the default of a
    /// real server.
    pub api_audit: bool,
    /// `[audit] file_path`, relative to the server's temp dir.
    pub config_audit: Option<&'static str>,
    pub ttl: palisade_server::token::TtlLimits,
    /// The clock tokens expire by: `s.clock.advance(..)` moves it.
    pub clock: palisade_core::Clock,
    pub conn: palisade_server::listener::ConnLimits,
    pub json: palisade_server::json::JsonLimits,
    pub body_timeout: std::time::Duration,
    /// `dangerous_unauthenticated_rekey` and `_generate_root` (Vault's
    /// unauthenticated sys/rekey/* and sys/generate-root/*).
    pub unauthenticated_root_ops: bool,
    /// `[rotation]`: webhook origins and commands KV rotation may use.
    pub rotation: palisade_server::config::RotationConfig,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            max_request_size: DEFAULT_LIMIT,
            memory: false,
            dev: true,
            api_audit: true,
            config_audit: None,
            ttl: Default::default(),
            clock: palisade_core::Clock::adjustable(),
            conn: Default::default(),
            json: palisade_server::json::JsonLimits::DEFAULT,
            body_timeout: palisade_server::http::DEFAULT_BODY_TIMEOUT,
            unauthenticated_root_ops: false,
            rotation: Default::default(),
        }
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    /// The clock tokens expire by; `advance` it instead of sleeping.
    pub clock: palisade_core::Clock,
    pub core: Arc<Core>,
    /// The root token (random, so a test can look for it in an audit log).
    pub root: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    pub mem: Option<Arc<MemoryBackend>>,
    counter: AtomicUsize,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    /// The raw body text (empty for 204 / HEAD).
    pub text: String,
    /// The body parsed as JSON (`Null` when empty).
    pub body: Value,
}

impl Resp {
    /// `data` of a Vault envelope.
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
    pub fn auth(&self) -> &Value {
        &self.body["auth"]
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A token made for a test, with its accessor.
#[derive(Clone, Debug)]
pub struct Token {
    pub id: String,
    pub accessor: String,
}

impl TestServer {
    /// Dev server: SQLite in a temp dir, unsealed, KV v2 at `secret/`.
    pub async fn dev() -> Self {
        Self::start(Opts::default()).await
    }

    /// Uninitialised server (drive sys/init and sys/unseal over HTTP).
    pub async fn uninit() -> Self {
        Self::start(Opts {
            dev: false,
            ..Opts::default()
        })
        .await
    }

    /// Dev server on a [`MemoryBackend`] kept for tampering.
    pub async fn memory() -> Self {
        Self::start(Opts {
            memory: true,
            ..Opts::default()
        })
        .await
    }

    pub async fn with_limit(max_request_size: usize) -> Self {
        Self::start(Opts {
            max_request_size,
            ..Opts::default()
        })
        .await
    }

    pub async fn start(opts: Opts) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(opts, dir).await
    }

    /// Start on the storage already in `dir` (a restart) or a fresh one.
    pub async fn start_in(opts: Opts, dir: tempfile::TempDir) -> Self {
        let (backend, mem): (Arc<dyn palisade_storage::Backend>, _) = if opts.memory {
            let m = Arc::new(MemoryBackend::new());
            (m.clone(), Some(m))
        } else {
            let b = palisade_storage::sqlite::SqliteBackend::open(&dir.path().join("palisade.db"))
                .await
                .expect("open sqlite");
            (Arc::new(b), None)
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let api_addr = format!("http://{}", listener.local_addr().expect("local addr"));
        let core = Core::with_options(
            palisade_barrier::Barrier::new(backend),
            palisade_server::core::CoreOptions {
                audit_file: opts.config_audit.map(|p| dir.path().join(p)),
                api_audit_dirs: if opts.api_audit {
                    vec![dir.path().to_path_buf()]
                } else {
                    Vec::new()
                },
                ttl: opts.ttl,
                clock: opts.clock.clone(),
                dangerous_unauthenticated_rekey: opts.unauthenticated_root_ops,
                dangerous_unauthenticated_generate_root: opts.unauthenticated_root_ops,
                rotation: opts.rotation.clone(),
                api_addr,
            },
        );
        let root = if opts.dev {
            core.dev_setup(None).await.expect("dev setup")
        } else {
            String::new()
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (running, _handle) = palisade_server::start(
            core.clone(),
            listener,
            None,
            palisade_server::http::HttpLimits {
                max_request_size: opts.max_request_size,
                json: opts.json,
                body_timeout: opts.body_timeout,
                hsts: false,
            },
            opts.conn.clone(),
            async move {
                let _ = rx.await;
            },
        )
        .expect("start");
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        Self {
            clock: opts.clock.clone(),
            addr: running.addr,
            core,
            root,
            http,
            dir,
            mem,
            counter: AtomicUsize::new(0),
            _shutdown: tx,
        }
    }

    /// Shut down as `palisade server` does on SIGTERM (seal when idle, which
    /// anchors the audit heads) and hand back the storage directory for a
    /// restart with [`TestServer::start_in`].
    pub async fn stop(self) -> tempfile::TempDir {
        if self.core.is_serving() {
            self.core.seal_when_idle().await.expect("seal at shutdown");
        }
        self.dir
    }

    /// Stop without any shutdown work, as `kill -9` would.
    pub fn kill(self) -> tempfile::TempDir {
        self.dir
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/v1/{}", self.addr, path)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A name unique within this server (policies, keys).
    pub fn unique(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.counter.fetch_add(1, Ordering::Relaxed))
    }

    /// Send `method path` with an optional token (X-Vault-Token) and JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut headers = Vec::new();
        if let Some(t) = token {
            headers.push(("X-Vault-Token", t.to_string()));
        }
        let bytes = body.map(|b| serde_json::to_vec(&b).expect("json"));
        if bytes.is_some() {
            headers.push(("Content-Type", "application/json".to_string()));
        }
        self.send(method, path, &headers, bytes).await
    }

    /// Send with arbitrary headers and raw body bytes.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut rb = self.http.request(m, self.url(path));
        for (k, v) in headers {
            rb = rb.header(*k, v);
        }
        if let Some(b) = body {
            rb = rb.body(b);
        }
        let r = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        let json = headers
            .get("content-type")
            .is_none_or(|v| v.as_bytes().starts_with(b"application/json"));
        let body = if text.is_empty() || !json {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{method} {path}: body is not JSON ({e}): {text}"))
        };
        Resp {
            status,
            headers,
            text,
            body,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.call("GET", path, Some(token), None).await
    }
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call("POST", path, Some(token), Some(body)).await
    }
    pub async fn put(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call("PUT", path, Some(token), Some(body)).await
    }
    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.call("DELETE", path, Some(token), None).await
    }
    pub async fn list(&self, path: &str, token: &str) -> Resp {
        self.call("LIST", path, Some(token), None).await
    }
    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        let headers = [
            ("X-Vault-Token", token.to_string()),
            ("Content-Type", "application/merge-patch+json".to_string()),
        ];
        self.send(
            "PATCH",
            path,
            &headers,
            Some(serde_json::to_vec(&body).unwrap()),
        )
        .await
    }

    /// A raw HTTP/1.1 exchange: the request target goes out byte for byte
    /// (reqwest's URL parser would resolve `..` and `%2e%2e` itself).
    /// Returns the status and the body text.
    pub async fn raw(
        &self,
        method: &str,
        target: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        let mut req = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if let Some(t) = token {
            req.push_str(&format!("X-Vault-Token: {t}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        s.write_all(body).await.expect("write body");
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.expect("read");
        let text = String::from_utf8(out).expect("utf-8 response");
        let (head, body) = text.split_once("\r\n\r\n").expect("header end");
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status line");
        assert!(
            !head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked"),
            "raw(): chunked responses are not decoded"
        );
        (status, body.to_string())
    }

    // ------------------------------------------------------------ helpers

    /// Write a policy as root; panics unless 204.
    pub async fn write_policy(&self, name: &str, hcl: &str) {
        let r = self
            .put(
                &format!("sys/policy/{name}"),
                &self.root,
                json!({ "policy": hcl }),
            )
            .await;
        assert_eq!(r.status, 204, "write policy {name}: {}", r.text);
    }

    /// Create a token as root with the given JSON options.
    pub async fn create_token(&self, parent: &str, opts: Value) -> Token {
        let r = self.post("auth/token/create", parent, opts).await;
        assert_eq!(r.status, 200, "token create: {}", r.text);
        Token {
            id: r.auth()["client_token"].as_str().unwrap().to_string(),
            accessor: r.auth()["accessor"].as_str().unwrap().to_string(),
        }
    }

    /// A token holding only a fresh policy with this HCL (no `default`).
    pub async fn token_with(&self, hcl: &str) -> Token {
        let name = self.unique("p");
        self.write_policy(&name, hcl).await;
        self.create_token(
            &self.root,
            json!({ "policies": [name], "no_default_policy": true }),
        )
        .await
    }

    /// A token holding no policy that grants anything (only an empty-rule one).
    pub async fn powerless_token(&self) -> Token {
        self.token_with(r#"path "nothing/here" { capabilities = ["deny"] }"#)
            .await
    }

    /// Write a KV v2 secret at `secret/data/<key>` as root; returns the version.
    pub async fn kv_put(&self, key: &str, data: Value) -> u64 {
        let r = self
            .post(
                &format!("secret/data/{key}"),
                &self.root,
                json!({ "data": data }),
            )
            .await;
        assert_eq!(r.status, 200, "kv put {key}: {}", r.text);
        r.data()["version"].as_u64().unwrap()
    }

    /// Enable a `file` audit device at `name/` writing to the temp dir.
    pub async fn enable_audit(&self, name: &str) -> PathBuf {
        let path = self.path(&format!("{name}.log"));
        let r = self
            .put(
                &format!("sys/audit/{name}"),
                &self.root,
                json!({ "type": "file", "options": { "file_path": path.display().to_string() } }),
            )
            .await;
        assert_eq!(r.status, 204, "enable audit: {}", r.text);
        path
    }

    pub async fn seal(&self) {
        let r = self.put("sys/seal", &self.root, json!({})).await;
        assert_eq!(r.status, 204, "seal: {}", r.text);
    }
}

/// 403 with exactly `{"errors":["permission denied"]}`.
#[track_caller]
pub fn assert_denied(r: &Resp) {
    assert_eq!(
        (r.status, &r.body),
        (403, &json!({ "errors": ["permission denied"] })),
        "expected a denial, got: {}",
        r.text
    );
}

/// `status` with exactly `{"errors":[msg]}`.
#[track_caller]
pub fn assert_error(r: &Resp, status: u16, msg: &str) {
    assert_eq!(
        (r.status, &r.body),
        (status, &json!({ "errors": [msg] })),
        "body: {}",
        r.text
    );
}

/// 404 with exactly `{"errors":[]}` (Vault's "nothing here").
#[track_caller]
pub fn assert_empty_404(r: &Resp) {
    assert_eq!(
        (r.status, &r.body),
        (404, &json!({ "errors": [] })),
        "body: {}",
        r.text
    );
}

/// The Vault response envelope, with `data` as given.
#[track_caller]
pub fn assert_envelope(r: &Resp) {
    let obj = r
        .body
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {}", r.text));
    for k in [
        "request_id",
        "lease_id",
        "renewable",
        "lease_duration",
        "data",
        "wrap_info",
        "warnings",
        "auth",
    ] {
        assert!(obj.contains_key(k), "envelope lacks {k}: {}", r.text);
    }
    assert!(
        !r.body["request_id"].as_str().unwrap_or("").is_empty(),
        "request_id: {}",
        r.text
    );
    assert_eq!(r.body["lease_id"], "");
    assert_eq!(r.body["renewable"], false);
    assert_eq!(r.body["lease_duration"], 0);
    assert_eq!(r.body["wrap_info"], Value::Null);
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

/// Every key of `data` is repeated, equal, at the top level.
#[track_caller]
pub fn assert_top_level(r: &Resp) {
    let data = r
        .data()
        .as_object()
        .unwrap_or_else(|| panic!("no data: {}", r.text));
    for (k, v) in data {
        assert_eq!(
            &r.body[k], v,
            "top-level {k} differs from data.{k}: {}",
            r.text
        );
    }
}

/// The records of an audit log file, one JSON value per line.
pub fn audit_records(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
        .collect()
}

/// The audit records for `path` (request and response lines).
pub fn audit_for<'a>(records: &'a [Value], path: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["request"]["path"] == path)
        .collect()
}

impl TestServer {
    /// `sys/init` over HTTP on an uninitialised server, then unseal with the
    /// first `threshold` shares. Sets `self.root`; returns the hex shares.
    pub async fn init_and_unseal(&mut self, shares: u8, threshold: u8) -> Vec<String> {
        let r = self
            .call(
                "PUT",
                "sys/init",
                None,
                Some(json!({"secret_shares": shares, "secret_threshold": threshold})),
            )
            .await;
        assert_eq!(r.status, 200, "init: {}", r.text);
        let keys: Vec<String> = serde_json::from_value(r.body["keys"].clone()).unwrap();
        self.root = r.body["root_token"].as_str().unwrap().to_string();
        self.unseal(&keys[..threshold as usize]).await;
        keys
    }

    pub async fn unseal(&self, keys: &[String]) {
        let mut last = Value::Null;
        for k in keys {
            let r = self
                .call("PUT", "sys/unseal", None, Some(json!({ "key": k })))
                .await;
            assert_eq!(r.status, 200, "unseal: {}", r.text);
            last = r.body;
        }
        assert_eq!(last["sealed"], false, "still sealed: {last}");
    }
}
