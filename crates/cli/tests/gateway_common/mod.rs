//! Shared helpers for the gateway end-to-end tests (`gateway_*.rs`): start the
//! Express upstream (`tests/e2e/gateway/upstream.js`) and real `palisade
//! gateway` processes, sign tokens with `jose` (`sign.js`), make a test PKI
//! with rcgen, and read the gateway's security log.
//!
//! Built on the server tests' helpers (`common`: skip rules, `palisade()`,
//! leak checks). Differences from `common::Server`: the gateway binds every
//! listener on port 0 and the test reads the bound addresses from the
//! gateway's own "gateway listening" / "admin listening" log lines, so there
//! is no window in which another process can take a pre-picked port. Every
//! wait polls with a deadline; every child process is killed on drop.
//!
//! The gateway's stdout (the security log, one JSON line per request) and its
//! stderr (tracing, JSON) go to separate files in the test's directory.
//!
//! Skips: [`node_ready`] and [`redis_url`] print `SKIPPED: ...` when node /
//! `tests/e2e/gateway/node_modules` / Redis are missing; under
//! `PALISADE_REQUIRE_SERVICES=1` that is a failure.
#![allow(dead_code, unused_imports)] // each test binary uses a different subset

#[path = "../common/mod.rs"]
pub mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use common::{assert_no_secrets, palisade, skip, unique};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, RevocationReason, RevokedCertParams, SanType,
    SerialNumber, date_time_ymd,
};
use serde_json::Value;

/// How long a process may take to start, and any condition to come true.
pub const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

/// tests/e2e/gateway
pub fn e2e_dir() -> PathBuf {
    common::repo_root().join("tests/e2e/gateway")
}

/// Are `node` and tests/e2e/gateway/node_modules (express, jose) usable?
/// If not: skip (or fail under PALISADE_REQUIRE_SERVICES=1) and return false.
pub fn node_ready(test: &str) -> bool {
    let dir = e2e_dir();
    for m in ["express", "jose"] {
        if !dir.join("node_modules").join(m).is_dir() {
            skip(&format!(
                "{test}: tests/e2e/gateway/node_modules/{m} is absent (npm ci --prefix tests/e2e/gateway)"
            ));
            return false;
        }
    }
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !node_ok {
        skip(&format!("{test}: node is not installed"));
        return false;
    }
    true
}

/// The Redis URL for tests (`PALISADE_TEST_REDIS_URL`, default
/// redis://127.0.0.1:6379) if a Redis answers PING there; else skip.
pub fn redis_url(test: &str) -> Option<String> {
    let url = std::env::var("PALISADE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
    let hostport = url
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(&url)
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let hostport = if hostport.contains(':') {
        hostport
    } else {
        format!("{hostport}:6379")
    };
    let pong = (|| -> Option<bool> {
        let addr = hostport.to_socket_addrs().ok()?.next()?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"PING\r\n").ok()?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).ok()?;
        // +PONG, or -NOAUTH when a password is needed (then the URL carries it)
        Some(buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"))
    })();
    if pong == Some(true) {
        Some(url)
    } else {
        skip(&format!(
            "{test}: no Redis answers at {url} (set PALISADE_TEST_REDIS_URL)"
        ));
        None
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Poll `f` until it returns `Some`, at most `limit`; panics with `what` after.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(POLL).await;
    }
}

// ------------------------------------------------------------------ PKI

/// A test CA (rcgen) with a server certificate for localhost/127.0.0.1.
/// Files in `dir`: ca.pem, server.pem, server.key.
pub struct Pki {
    pub dir: PathBuf,
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("self-sign CA");
    (cert.pem(), Issuer::new(params, key))
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let (ca_pem, issuer) = ca("palisade gateway e2e CA");
        let key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &issuer).expect("sign server cert");
        std::fs::write(dir.join("ca.pem"), &ca_pem).expect("write ca");
        std::fs::write(dir.join("server.pem"), cert.pem()).expect("write cert");
        std::fs::write(dir.join("server.key"), key.serialize_pem()).expect("write key");
        Pki {
            dir: dir.to_path_buf(),
            ca_pem,
            issuer,
        }
    }

    /// A client certificate with one URI SAN, issued by this CA: the PEM of
    /// certificate + key, as `reqwest::Identity::from_pem` takes it.
    pub fn client_identity(&self, cn: &str, uri: &str) -> Vec<u8> {
        let (cert, key) = client_cert(&self.issuer, cn, uri, None);
        format!("{cert}{key}").into_bytes()
    }

    /// The same with a chosen serial number (for CRLs): (certificate PEM, key PEM).
    pub fn client_cert(&self, cn: &str, uri: &str, serial: u64) -> (String, String) {
        client_cert(&self.issuer, cn, uri, Some(serial))
    }

    /// The same, from a different CA the gateway does not trust.
    pub fn foreign_client_identity(cn: &str, uri: &str) -> Vec<u8> {
        let (_, issuer) = ca("some other CA");
        let (cert, key) = client_cert(&issuer, cn, uri, None);
        format!("{cert}{key}").into_bytes()
    }

    /// A server certificate for `names` (DNS names or IP literals; the first
    /// is also the CN) issued by this CA: (certificate PEM, key PEM, certificate DER).
    pub fn server_cert(&self, names: &[&str]) -> (String, String, Vec<u8>) {
        let key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("server params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("server"),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign server cert");
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    /// A CRL signed by this CA that revokes the certificates with `serials` (PEM).
    pub fn crl(&self, serials: &[u64]) -> String {
        let params = CertificateRevocationListParams {
            this_update: date_time_ymd(2020, 1, 1),
            next_update: date_time_ymd(2999, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: date_time_ymd(2021, 1, 1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.issuer)
            .expect("sign CRL")
            .pem()
            .expect("CRL PEM")
    }

    /// An HTTPS client trusting this CA, optionally presenting a client certificate.
    pub fn client(&self, identity: Option<&[u8]>) -> reqwest::Client {
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).expect("CA PEM"),
            );
        if let Some(id) = identity {
            b = b.identity(reqwest::Identity::from_pem(id).expect("client identity PEM"));
        }
        b.build().expect("reqwest client")
    }
}

fn client_cert(
    issuer: &Issuer<'static, KeyPair>,
    cn: &str,
    uri: &str,
    serial: Option<u64>,
) -> (String, String) {
    let key = KeyPair::generate().expect("client key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.subject_alt_names = vec![SanType::URI(uri.try_into().expect("URI SAN"))];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.serial_number = serial.map(SerialNumber::from);
    let cert = params.signed_by(&key, issuer).expect("sign client cert");
    (cert.pem(), key.serialize_pem())
}

/// A plain-HTTP client (no redirects followed).
pub fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("reqwest client")
}

// ------------------------------------------------------------------ node

/// `tests/e2e/gateway/upstream.js` (Express) on a port it picks; killed on drop.
pub struct Upstream {
    child: Child,
    pub port: u16,
}

impl Upstream {
    pub fn start(dir: &Path) -> Upstream {
        Self::start_script(dir, "upstream.js", &[])
    }

    /// Another script of tests/e2e/gateway taking `PORT ARGS...` and printing
    /// `{"listening":PORT}` first (its stderr goes to `<script>.err` in `dir`).
    pub fn start_script(dir: &Path, script: &str, args: &[&Path]) -> Upstream {
        let err_name = format!("{}.err", script.trim_end_matches(".js"));
        let log = common::log_file(dir, &err_name);
        let mut child = Command::new("node")
            .arg(e2e_dir().join(script))
            .arg("0")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn node upstream.js");
        // the first stdout line is {"listening":PORT}; read it on a thread so
        // the wait has a deadline
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut up = Upstream { child, port: 0 };
        let line = rx.recv_timeout(DEADLINE).unwrap_or_default();
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        let Some(port) = v["listening"].as_u64() else {
            let err = std::fs::read_to_string(dir.join(&err_name)).unwrap_or_default();
            panic!("{script} did not start within {DEADLINE:?}: {line:?}\n{err}");
        };
        up.port = port as u16;
        up
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test identity provider: key pairs made by `sign.js keys DIR`
/// (DIR/jwks.json is what the gateway's issuer reads), tokens by `sign.js sign`.
pub struct Idp {
    dir: PathBuf,
}

impl Idp {
    pub fn new(dir: &Path) -> Idp {
        let out = Command::new("node")
            .arg(e2e_dir().join("sign.js"))
            .arg("keys")
            .arg(dir)
            .output()
            .expect("run sign.js keys");
        assert!(
            out.status.success(),
            "sign.js keys: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(dir.join("jwks.json").is_file());
        Idp {
            dir: dir.to_path_buf(),
        }
    }

    /// Sign each spec (see sign.js); tokens in the same order.
    pub fn sign(&self, specs: &[Value]) -> Vec<String> {
        let mut child = Command::new("node")
            .arg(e2e_dir().join("sign.js"))
            .arg("sign")
            .arg(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sign.js");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(serde_json::to_string(specs).expect("specs").as_bytes())
            .expect("write specs");
        let out = child.wait_with_output().expect("sign.js");
        assert!(
            out.status.success(),
            "sign.js sign: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tokens: Vec<String> = serde_json::from_slice(&out.stdout).expect("sign.js output");
        assert_eq!(tokens.len(), specs.len());
        tokens
    }
}

// ------------------------------------------------------------------ gateway

/// A running `palisade gateway --config FILE`. Killed (SIGKILL) on drop.
pub struct Gateway {
    child: Option<Child>,
    pub config: PathBuf,
    /// stdout: the security log.
    pub out: PathBuf,
    /// stderr: the gateway's tracing output (JSON).
    pub err: PathBuf,
    /// Listener name -> bound address.
    pub listeners: HashMap<String, SocketAddr>,
    pub admin: SocketAddr,
}

impl Gateway {
    /// Start a gateway from `config` (whose listeners and admin may bind port
    /// 0), wait until it logs its bound addresses and /healthz answers.
    /// `name` prefixes its output files.
    pub async fn start(config: &Path, name: &str) -> Gateway {
        let gw = Self::spawn(config, name).await;
        gw.wait_healthy().await;
        gw
    }

    /// Start and return as soon as the gateway has logged its bound
    /// addresses ("admin listening" comes last), without waiting for /healthz.
    pub async fn spawn(config: &Path, name: &str) -> Gateway {
        let dir = config.parent().expect("config dir");
        let out = dir.join(format!("{name}.out"));
        let err = dir.join(format!("{name}.err"));
        let child = Command::new(common::BIN)
            .arg("gateway")
            .arg("--config")
            .arg(config)
            .env("NO_COLOR", "1")
            .env_remove("PALISADE_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::from(
                std::fs::File::create(&out).expect("create out"),
            ))
            .stderr(Stdio::from(
                std::fs::File::create(&err).expect("create err"),
            ))
            .spawn()
            .expect("spawn palisade gateway");
        let mut gw = Gateway {
            child: Some(child),
            config: config.to_path_buf(),
            out,
            err,
            listeners: HashMap::new(),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = gw
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("try_wait"))
            {
                panic!(
                    "gateway exited during startup ({status}):\n{}{}",
                    gw.stdout(),
                    gw.stderr()
                );
            }
            if gw.parse_bound() {
                return gw;
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not start within {DEADLINE:?}:\n{}",
                gw.stderr()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Poll the admin /healthz until it answers 200.
    pub async fn wait_healthy(&self) {
        let health = format!("http://{}/healthz", self.admin);
        let c = plain_client();
        wait_for("gateway /healthz", DEADLINE, || {
            let c = c.clone();
            let url = health.clone();
            async move {
                c.get(&url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status() == 200)
                    .map(|_| ())
            }
        })
        .await;
    }

    /// Read "gateway listening" / "admin listening" from stderr; true once admin is known.
    fn parse_bound(&mut self) -> bool {
        let mut admin = None;
        for line in self.stderr().lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let f = &v["fields"];
            let addr = f["address"]
                .as_str()
                .and_then(|a| a.parse::<SocketAddr>().ok());
            match (f["message"].as_str(), addr) {
                (Some("gateway listening"), Some(a)) => {
                    self.listeners
                        .insert(f["listener"].as_str().unwrap_or_default().to_string(), a);
                }
                (Some("admin listening"), Some(a)) => admin = Some(a),
                _ => {}
            }
        }
        match admin {
            Some(a) => {
                self.admin = a;
                true
            }
            None => false,
        }
    }

    /// The bound address of listener `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        *self
            .listeners
            .get(name)
            .unwrap_or_else(|| panic!("no listener {name}: {:?}", self.listeners))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("child").id()
    }

    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("try_wait").is_none())
    }

    /// Send a signal with `kill -SIG PID` (only to this child).
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{sig} failed");
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Every security-log line, parsed; panics on a line that is not a JSON
    /// object. The gateway writes records from a writer thread, so a line
    /// may land just after its response: read until two reads 50 ms apart
    /// agree (at most 2 s).
    pub fn security_log(&self) -> Vec<Value> {
        let mut text = self.stdout();
        for _ in 0..40 {
            std::thread::sleep(Duration::from_millis(50));
            let again = self.stdout();
            if again == text {
                break;
            }
            text = again;
        }
        text.lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("security log line is not JSON ({e}): {l:?}"));
                assert!(v.is_object(), "security log line is not an object: {l}");
                v
            })
            .collect()
    }

    /// The security-log record of one request (the log is written before the
    /// response is sent; polled briefly anyway).
    pub async fn record(&self, request_id: &str) -> Value {
        wait_for(
            &format!("security log record for {request_id}"),
            Duration::from_secs(5),
            || async {
                self.security_log()
                    .into_iter()
                    .find(|r| r["request_id"] == request_id)
            },
        )
        .await
    }

    /// `palisade gateway --config FILE ARGS...`; returns (exit code, stdout, stderr).
    pub fn cli(config: &Path, args: &[&str]) -> (i32, String, String) {
        let cfg = config.display().to_string();
        let mut all = vec!["gateway", "--config", cfg.as_str()];
        all.extend_from_slice(args);
        palisade(&all, &[])
    }

    /// `apikey create --consumer C --scope S... --format json`: (key, id).
    pub fn apikey_create(config: &Path, consumer: &str, scopes: &[&str]) -> (String, String) {
        let mut args = vec![
            "apikey",
            "create",
            "--consumer",
            consumer,
            "--format",
            "json",
        ];
        for s in scopes {
            args.extend_from_slice(&["--scope", s]);
        }
        let (code, out, err) = Self::cli(config, &args);
        assert_eq!(code, 0, "apikey create: {out}{err}");
        let v: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("apikey create output ({e}): {out}"));
        let key = v["key"].as_str().expect("key").to_string();
        assert!(key.starts_with("pal_"), "key format");
        (key, v["id"].as_str().expect("id").to_string())
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill9();
    }
}

// ------------------------------------------------------------------ responses

/// A response read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Resp {
    pub async fn read(r: reqwest::Response) -> Resp {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.text().await.expect("response body");
        Resp {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    pub fn request_id(&self) -> String {
        self.header("x-request-id")
            .unwrap_or_else(|| panic!("no x-request-id: {self:?}"))
            .to_string()
    }

    /// The gateway's error shape: exact status, `{"error":{"code":CODE,..., "request_id"}}`
    /// with the request id of the `x-request-id` header.
    pub fn assert_error(&self, status: u16, code: &str, what: &str) {
        assert_eq!(self.status, status, "{what}: {self:?}");
        let v = self.json();
        assert_eq!(v["error"]["code"], code, "{what}: {v}");
        assert_eq!(v["error"]["request_id"], self.request_id(), "{what}: {v}");
    }
}

/// Send and read.
pub async fn send(rb: reqwest::RequestBuilder) -> Resp {
    Resp::read(rb.send().await.expect("request")).await
}

// ------------------------------------------------------------------ raw probes

/// A TLS connection made by hand (tokio-rustls, aws-lc-rs, ALPN http/1.1)
/// trusting `ca_pem`, optionally presenting `identity` (certificate + key
/// PEM). Returns the handshake's error as text.
pub async fn tls_connect(
    addr: SocketAddr,
    server_name: &str,
    ca_pem: &str,
    identity: Option<&[u8]>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("CA PEM")).expect("CA cert");
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
    let mut cfg = match identity {
        None => b.with_no_client_auth(),
        Some(pem) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<_, _>>()
                .expect("client cert PEM");
            let key = PrivateKeyDer::from_pem_slice(pem).expect("client key PEM");
            b.with_client_auth_cert(certs, key)
                .expect("client auth cert")
        }
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from(server_name.to_string()).expect("server name");
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))
}

/// What the server did with a hand-written request.
#[derive(Debug)]
pub struct RawReply {
    /// Everything the server sent before closing (or before `limit`).
    pub text: String,
    /// The server closed the connection (EOF or reset) within `limit`.
    pub closed: bool,
    /// A read error, as text (TLS alerts show up here).
    pub error: Option<String>,
}

impl RawReply {
    /// The status code of the first response, if any.
    pub fn status(&self) -> Option<u16> {
        let line = self.text.lines().next()?;
        line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    }
}

/// Write `request` and read until the server closes or `limit` passes.
pub async fn raw_exchange<S>(stream: &mut S, request: &[u8], limit: Duration) -> RawReply
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut error = None;
    if let Err(e) = stream.write_all(request).await {
        error = Some(e.to_string());
    }
    let _ = stream.flush().await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    let closed = loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => break false,
            Ok(Ok(0)) => break true,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => {
                error = Some(e.to_string());
                break true;
            }
        }
    };
    RawReply {
        text: String::from_utf8_lossy(&buf).into_owned(),
        closed,
        error,
    }
}

/// A plaintext connection, one request, read until close or `limit`.
pub async fn raw_plain(addr: SocketAddr, request: &[u8], limit: Duration) -> RawReply {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    raw_exchange(&mut s, request, limit).await
}

// ------------------------------------------------------------------ SIEM

/// An upstream answering every request `200 ok` (one thread, one
/// connection at a time, no keep-alive): its port.
pub fn ok_upstream() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut buf = [0u8; 16 * 1024];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let _ =
                c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    port
}

/// A gateway configuration for the security-log tests: a plaintext
/// listener `plain`, an anonymous route `/only` to [`ok_upstream`] (200,
/// allowed) and nothing else (404, refused); `top` before the first table,
/// `tail` after the route (an `[otlp]` or `[syslog]` section).
pub fn log_test_config(top: &str, tail: &str) -> String {
    let app = ok_upstream();
    format!(
        r#"{top}
[[listeners]]
name = "plain"
address = "127.0.0.1:0"
protocol = "http"
dangerous_plaintext = true

[admin]
address = "127.0.0.1:0"

[[upstreams]]
name = "app"
endpoints = ["127.0.0.1:{app}"]

[authorization]
policy_file = "policies.cedar"

[[routes]]
name = "only"
path_prefix = "/only"
upstream = "app"
anonymous = true

{tail}
"#
    )
}

/// `dir` for [`log_test_config`]: a permit-all policies.cedar, the test
/// PKI ([`Pki::new`]) and a client certificate for CN `palisade-client`
/// (client.pem, client.key).
pub fn log_test_dir(dir: &Path) -> Pki {
    std::fs::write(
        dir.join("policies.cedar"),
        "permit(principal, action, resource);\n",
    )
    .expect("write policies");
    let pki = Pki::new(dir);
    let (cert, key) = pki.client_cert("palisade-client", "spiffe://test/gateway", 7);
    std::fs::write(dir.join("client.pem"), cert).expect("write client cert");
    std::fs::write(dir.join("client.key"), key).expect("write client key");
    pki
}

/// GET `path` on the gateway's `plain` listener: (status, X-Request-Id).
pub async fn get_id(gw: &Gateway, path: &str) -> (u16, String) {
    let r = plain_client()
        .get(format!("http://{}{path}", gw.addr("plain")))
        .send()
        .await
        .expect("request");
    let id = r.headers()["x-request-id"]
        .to_str()
        .expect("request id")
        .to_string();
    (r.status().as_u16(), id)
}

/// Wait (at most 15 s) until the gateway's stderr holds every one of `what`.
pub async fn stderr_has(gw: &Gateway, what: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let err = gw.stderr();
        if what.iter().all(|w| err.contains(w)) {
            return;
        }
        assert!(Instant::now() < deadline, "not logged: {what:?} in {err}");
        tokio::time::sleep(POLL).await;
    }
}
