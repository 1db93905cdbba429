//! Shared helpers for the end-to-end tests: start real `palisade` processes
//! (config mode, fresh storage, a free loopback port), wait for them to
//! listen, and always kill them (the [`Server`] guard kills on drop).
//!
//! The server's stdout and stderr go to `server.log` in the test's directory
//! so tests can check that no secret reached the process output.
//!
//! Skips: a test that needs an outside tool or service (python3 + hvac,
//! node_modules, PostgreSQL) calls [`skip`]. Under
//! `PALISADE_REQUIRE_SERVICES=1` (set by CI) a skip is a failure.
#![allow(dead_code)] // each test binary uses a different subset

use std::fs::{File, OpenOptions};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The binary under test, built by cargo for this crate's integration tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_palisade");

/// How long a server may take to start listening.
pub const START_DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(25);

/// The repository root (crates/cli/../..).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn services_required() -> bool {
    std::env::var("PALISADE_REQUIRE_SERVICES").as_deref() == Ok("1")
}

/// Report a missing prerequisite: a printed notice, or a failure under
/// `PALISADE_REQUIRE_SERVICES=1`. The caller returns right after.
pub fn skip(what: &str) {
    if services_required() {
        panic!("{what} (PALISADE_REQUIRE_SERVICES=1 forbids skipping)");
    }
    eprintln!("SKIPPED: {what}");
}

/// A port that was free a moment ago. Another process may take it before
/// the server binds; [`Server::start`] retries with a new port when that happens.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

#[derive(Clone, Debug)]
pub enum Storage {
    Sqlite(PathBuf),
    Postgres { url: String, table: String },
}

/// What to start: storage, optional audit file, optional TLS files.
#[derive(Clone, Debug)]
pub struct Spec {
    pub dir: PathBuf,
    pub storage: Storage,
    pub audit_file: Option<PathBuf>,
    /// Let the API create file audit devices in `dir`
    /// (`[audit] dangerous_allow_api_file_devices`).
    pub api_audit: bool,
    /// (cert PEM, key PEM)
    pub tls: Option<(PathBuf, PathBuf)>,
    /// PEM of a CA to trust when polling a TLS listener.
    pub ca_pem: Option<Vec<u8>>,
    /// Extra top-level TOML lines (`key = value\n`...).
    pub top_level: String,
    /// An HA node: `[ha] enabled = true` with these extra lines, and
    /// `api_addr` set to the node's own address.
    pub ha: Option<String>,
}

impl Spec {
    /// A plaintext server on a fresh SQLite file in `dir`.
    pub fn sqlite(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            storage: Storage::Sqlite(dir.join("palisade.db")),
            audit_file: None,
            api_audit: false,
            tls: None,
            ca_pem: None,
            top_level: String::new(),
            ha: None,
        }
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The TOML given to `palisade server --config`. Strings use Rust's
    /// `{:?}`, which matches TOML basic-string escaping for these paths.
    pub fn config_toml(&self, port: u16) -> String {
        let mut s = format!("log_level = \"info\"\n{}\n", self.top_level);
        if self.ha.is_some() {
            s += &format!("api_addr = \"{}://127.0.0.1:{port}\"\n", self.scheme());
        }
        s += "[storage]\n";
        match &self.storage {
            Storage::Sqlite(p) => {
                s += &format!(
                    "backend = \"sqlite\"\npath = {:?}\n",
                    p.display().to_string()
                );
            }
            Storage::Postgres { url, table } => {
                s += &format!("backend = \"postgres\"\nurl = {url:?}\ntable = {table:?}\n");
            }
        }
        s += &format!("\n[listener]\naddress = \"127.0.0.1:{port}\"\n");
        match &self.tls {
            Some((c, k)) => {
                s += &format!(
                    "tls_cert_file = {:?}\ntls_key_file = {:?}\n",
                    c.display().to_string(),
                    k.display().to_string()
                );
            }
            None => s += "tls_disable = true\n",
        }
        if self.audit_file.is_some() || self.api_audit {
            s += "\n[audit]\n";
        }
        if let Some(a) = &self.audit_file {
            s += &format!("file_path = {:?}\n", a.display().to_string());
        }
        if self.api_audit {
            s += &format!(
                "dangerous_allow_api_file_devices = [{:?}]\n",
                self.dir.display().to_string()
            );
        }
        if let Some(extra) = &self.ha {
            s += &format!("\n[ha]\nenabled = true\n{extra}\n");
        }
        s
    }

    /// An HTTP client that trusts this spec's CA (if any).
    pub fn client(&self) -> reqwest::Client {
        let mut b = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if let Some(pem) = &self.ca_pem {
            b = b.add_root_certificate(reqwest::Certificate::from_pem(pem).expect("CA PEM"));
        }
        b.build().expect("reqwest client")
    }
}

/// A running `palisade server --config` process. Killed (SIGKILL) on drop.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub addr: String,
    pub log: PathBuf,
    pub spec: Spec,
}

impl Server {
    /// Start a server and wait until it answers `sys/health` (any status:
    /// 501 uninitialised and 503 sealed mean it is listening). Retries
    /// with a new port when the chosen one was taken in the meantime.
    pub async fn start(spec: &Spec) -> Server {
        let config = spec.dir.join("server.toml");
        Self::launch(spec, |port| {
            std::fs::write(&config, spec.config_toml(port)).expect("write config");
            vec![
                "server".into(),
                "--config".into(),
                config.display().to_string(),
            ]
        })
        .await
    }

    /// `palisade server --dev` with a fixed root token and an audit file in
    /// `spec.dir` (only `spec.dir` is used: dev mode picks its own storage).
    pub async fn start_dev(spec: &Spec, root_token: &str, audit_file: &Path) -> Server {
        Self::launch(spec, |port| {
            vec![
                "server".into(),
                "--dev".into(),
                "--dev-listen-address".into(),
                format!("127.0.0.1:{port}"),
                "--dev-root-token-id".into(),
                root_token.into(),
                "--dev-audit-file".into(),
                audit_file.display().to_string(),
            ]
        })
        .await
    }

    async fn launch(spec: &Spec, args: impl Fn(u16) -> Vec<String>) -> Server {
        let client = spec.client();
        let log = spec.dir.join("server.log");
        for attempt in 0..5 {
            let port = free_port();
            let args = args(port);
            let out = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .expect("open server log");
            let err = out.try_clone().expect("clone log handle");
            let child = Command::new(BIN)
                .args(&args)
                .env_remove("PALISADE_DEV_ROOT_TOKEN_ID")
                .env("NO_COLOR", "1")
                .env_remove("PALISADE_LOG")
                .stdin(Stdio::null())
                .stdout(Stdio::from(out))
                .stderr(Stdio::from(err))
                .spawn()
                .expect("spawn palisade server");
            let mut server = Server {
                child: Some(child),
                port,
                addr: format!("{}://127.0.0.1:{port}", spec.scheme()),
                log: log.clone(),
                spec: spec.clone(),
            };
            match server.wait_ready(&client).await {
                Ready::Yes => return server,
                Ready::Exited(status) => {
                    let text = server.output();
                    if text.contains("cannot bind") && attempt < 4 {
                        continue; // someone took the port: try another
                    }
                    panic!("server exited during startup ({status}):\n{text}");
                }
            }
        }
        unreachable!("the loop returns or panics")
    }

    async fn wait_ready(&mut self, client: &reqwest::Client) -> Ready {
        let deadline = Instant::now() + START_DEADLINE;
        let url = format!("{}/v1/sys/health", self.addr);
        loop {
            if let Some(status) = self.try_wait() {
                return Ready::Exited(status);
            }
            if client.get(&url).send().await.is_ok() {
                return Ready::Yes;
            }
            assert!(
                Instant::now() < deadline,
                "server did not listen within {START_DEADLINE:?}:\n{}",
                self.output()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("child").id()
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait"))
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM via `kill -TERM <pid>`.
    pub fn sigterm(&self) {
        let st = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -TERM failed");
    }

    /// Wait for the process to exit, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.try_wait() {
                self.child = None;
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Everything the process (and earlier processes sharing the log) printed.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `POST /v1/<path>` with `token` and a JSON body; asserts a 2xx and
    /// returns the answer's JSON (`Null` for 204).
    pub async fn post_ok(&self, token: &str, path: &str, body: Value) -> Value {
        let r = self
            .spec
            .client()
            .post(format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", token)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = r.status();
        let text = r.text().await.expect("body");
        assert!(status.is_success(), "{path}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/v1/{}", self.addr, path.trim_start_matches('/'))
    }
}

enum Ready {
    Yes,
    Exited(ExitStatus),
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `PUT sys/init`; returns (hex key shares, root token).
pub async fn init(
    c: &reqwest::Client,
    s: &Server,
    shares: u8,
    threshold: u8,
) -> (Vec<String>, String) {
    let r = c
        .put(s.url("sys/init"))
        .json(&json!({"secret_shares": shares, "secret_threshold": threshold}))
        .send()
        .await
        .expect("sys/init");
    assert_eq!(r.status(), 200, "sys/init");
    let v: Value = r.json().await.expect("init json");
    let keys = v["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k.as_str().expect("key").to_string())
        .collect();
    (
        keys,
        v["root_token"].as_str().expect("root_token").to_string(),
    )
}

/// Submit unseal keys until unsealed.
pub async fn unseal(c: &reqwest::Client, s: &Server, keys: &[String]) {
    for k in keys {
        let r = c
            .put(s.url("sys/unseal"))
            .json(&json!({ "key": k }))
            .send()
            .await
            .expect("sys/unseal");
        assert_eq!(r.status(), 200, "sys/unseal");
        let v: Value = r.json().await.expect("unseal json");
        if v["sealed"] == json!(false) {
            return;
        }
    }
    panic!("still sealed after {} keys", keys.len());
}

/// Assert that none of `secrets` occurs in `text` (named `what` in the message).
pub fn assert_no_secrets(what: &str, text: &str, secrets: &[String]) {
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        assert!(
            !text.contains(s.as_str()),
            "{what} contains a secret (length {}, starts {:?})",
            s.len(),
            s.chars().take(6).collect::<String>()
        );
    }
}

/// No service-token string (`hvs.` prefix) and no dev "Root Token:" line in `text`.
pub fn assert_no_token_strings(what: &str, text: &str) {
    assert!(!text.contains("hvs."), "{what} contains a token string");
    assert!(
        !text.contains("Root Token"),
        "{what} contains a root token line"
    );
}

/// Run `palisade ARGS` to completion with `env`; returns (exit code, stdout, stderr).
pub fn palisade(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null());
    for var in [
        "PALISADE_ADDR",
        "VAULT_ADDR",
        "PALISADE_TOKEN",
        "VAULT_TOKEN",
        "PALISADE_CACERT",
        "VAULT_CACERT",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run palisade");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`palisade`] with `input` on standard input.
pub fn palisade_stdin(args: &[&str], env: &[(&str, &str)], input: &[u8]) -> (i32, String, String) {
    use std::io::Write;
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in [
        "PALISADE_ADDR",
        "VAULT_ADDR",
        "PALISADE_TOKEN",
        "VAULT_TOKEN",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run palisade");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait palisade");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Is `python3 -c 'import hvac'` usable?
pub fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The PostgreSQL URL for tests, if a server accepts TCP connections there.
pub fn postgres_url() -> Option<String> {
    let url = std::env::var("PALISADE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let hostport = url
        .split_once("://")
        .map(|(_, r)| r)
        .and_then(|r| r.rsplit_once('@').map(|(_, h)| h).or(Some(r)))
        .and_then(|r| r.split('/').next())
        .unwrap_or("127.0.0.1:5432");
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:5432")
    };
    let addr: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(&hostport)
        .ok()?
        .next()?;
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    Some(url)
}

/// Best effort: drop a test table (and its HA leadership table) with psql when psql is installed.
pub fn drop_pg_table(url: &str, table: &str) {
    let _ = Command::new("psql")
        .args([
            url,
            "-q",
            "-c",
            &format!("DROP TABLE IF EXISTS {table}, {table}_ha, {table}_hanodes"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A unique-enough suffix for table names and values: pid + time.
pub fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}_{}", std::process::id(), nanos % 1_000_000_000_000)
}

/// Small deterministic PRNG (xorshift64*): tests print the seed to reproduce a run.
pub struct Rng(u64);

impl Rng {
    pub fn from_time() -> (Self, u64) {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9)
            | 1;
        (Self(seed), seed)
    }

    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

/// Read an audit file, check `palisade audit verify` accepts it, and return its text.
pub fn verify_audit(path: &Path) -> String {
    let (code, out, err) = palisade(&["audit", "verify", &path.display().to_string()], &[]);
    assert_eq!(code, 0, "audit verify {}: {out}{err}", path.display());
    std::fs::read_to_string(path).expect("read audit file")
}

/// Open (for the child's stdout/stderr) a file in `dir`.
pub fn log_file(dir: &Path, name: &str) -> File {
    File::create(dir.join(name)).expect("create log file")
}

/// Credentials and values a client script reports with `--secrets-out`.
pub struct ScriptSecrets {
    pub all: Vec<String>,
    pub root_token: String,
    pub hmac: String,
}

/// Run a compatibility client script against a fresh server started from
/// `spec` (which must have an audit file), then check: the script passed,
/// both audit files verify and hold no secret, the server output holds no
/// secret, and (SQLite) the database file holds no plaintext value.
/// `cmd` is the program and its leading arguments; the server address,
/// `--audit-file` and `--secrets-out` are appended.
pub async fn run_client_script(spec: &Spec, cmd: &[String]) {
    let config_audit = spec.audit_file.clone().expect("spec needs an audit file");
    let script_audit = spec.dir.join("client-audit.log");
    let secrets_out = spec.dir.join("secrets.json");
    // the scripts enable a device through the API, as their users would
    let spec = &Spec {
        api_audit: true,
        ..spec.clone()
    };
    let mut server = Server::start(spec).await;
    let started = Instant::now();
    let out = tokio::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .arg(&server.addr)
        .arg("--audit-file")
        .arg(&script_audit)
        .arg("--secrets-out")
        .arg(&secrets_out)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run client script");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("{stdout}{stderr}client script took {:?}", started.elapsed());
    let last = stdout.lines().last().unwrap_or_default().to_string();
    assert!(
        out.status.success() && last.ends_with(" passed, 0 failed"),
        "client script failed ({}): {last}\n--- server output ---\n{}",
        out.status,
        server.output()
    );

    let secrets = read_script_secrets(&secrets_out);
    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(30)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "server did not stop cleanly: {status:?}"
    );

    for file in [&config_audit, &script_audit] {
        let text = verify_audit(file);
        assert!(!text.is_empty(), "{} is empty", file.display());
        assert_no_secrets(&file.display().to_string(), &text, &secrets.all);
        assert!(
            !text.contains("hvs."),
            "{} holds a token string",
            file.display()
        );
    }
    // the configured device is active as soon as unseal returns: the mount
    // requests that both scripts send right after unsealing are in it
    let config_log = std::fs::read_to_string(&config_audit).expect("config audit file");
    assert!(
        config_log.contains("\"path\":\"sys/mounts/"),
        "requests right after unseal are missing from the configured audit device"
    );
    let client_log = std::fs::read_to_string(&script_audit).expect("client audit file");
    assert!(
        client_log.contains(&secrets.hmac),
        "the audit file must carry the HMAC that sys/audit-hash reported"
    );
    assert_no_secrets("server output", &server.output(), &secrets.all);
    assert_no_token_strings("server output", &server.output());
    if let Storage::Sqlite(db) = &spec.storage {
        for suffix in ["", "-wal", "-journal"] {
            let p = PathBuf::from(format!("{}{suffix}", db.display()));
            if let Ok(bytes) = std::fs::read(&p) {
                let text = String::from_utf8_lossy(&bytes);
                assert_no_secrets(&p.display().to_string(), &text, &secrets.all);
            }
        }
    }
}

pub fn read_script_secrets(path: &Path) -> ScriptSecrets {
    let v: Value =
        serde_json::from_slice(&std::fs::read(path).expect("secrets-out file")).expect("json");
    let strings = |k: &str| -> Vec<String> {
        v[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let root_token = v["root_token"].as_str().unwrap_or_default().to_string();
    assert!(!root_token.is_empty(), "the script reported no root token");
    let mut all = vec![root_token.clone()];
    all.extend(strings("tokens"));
    all.extend(strings("unseal_keys"));
    all.extend(strings("values"));
    ScriptSecrets {
        all,
        root_token,
        hmac: v["hmac"].as_str().unwrap_or_default().to_string(),
    }
}

/// Write ca.pem, server.pem and server.key into `dir`; return the CA PEM.
pub fn make_pki(dir: &Path) -> String {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "palisade e2e test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let key = rcgen::KeyPair::generate().expect("server key");
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("server params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &issuer).expect("sign server cert");

    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write ca");
    std::fs::write(dir.join("server.pem"), cert.pem()).expect("write cert");
    std::fs::write(dir.join("server.key"), key.serialize_pem()).expect("write key");
    ca_cert.pem()
}
