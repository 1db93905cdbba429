//! Crash durability: a SQLite-backed `palisade server --config` process is
//! killed with SIGKILL at random moments while writers store KV v2 versions.
//! Every write the server acknowledged (2xx) must survive: after restart and
//! unseal, each acknowledged version reads back with exactly its value,
//! `metadata.current_version` is at least the last acknowledged version,
//! every readable version holds a value some writer attempted for that key
//! (no torn or foreign entry), and no read ever answers 500.
//! The audit file must still verify, and the server's output (across all
//! restarts) must not contain the root token, the unseal key or any value.
//!
//! The run is randomised; it prints its seed, and PALISADE_E2E_SEED=<n>
//! replays the same kill timings.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::{Rng, Server, Spec};
use serde_json::{Value, json};

const ROUNDS: usize = 8;
const WRITERS: usize = 3;
const KEYS_PER_WRITER: usize = 2;
/// The whole test must finish within this (a hang is a failure, not a CI timeout).
const TEST_BUDGET: Duration = Duration::from_secs(180);

#[derive(Default, Clone)]
struct KeyState {
    name: String,
    /// version -> value, for every write answered with 2xx
    acked: BTreeMap<u64, String>,
    /// every value ever sent for this key, acknowledged or not
    attempted: HashSet<String>,
}

/// One writer: sequential writes, round-robin over its keys, until the
/// server goes away (a transport error).
async fn writer(
    c: reqwest::Client,
    base: String,
    token: String,
    mut keys: Vec<KeyState>,
    round: usize,
    tag: String,
) -> Vec<KeyState> {
    let mut seq = 0u64;
    loop {
        let k = &mut keys[(seq as usize) % KEYS_PER_WRITER];
        let value = format!("dur-{tag}-{}-r{round}-s{seq}", k.name);
        seq += 1;
        k.attempted.insert(value.clone());
        let sent = c
            .post(format!("{base}/v1/kv/data/{}", k.name))
            .header("X-Vault-Token", &token)
            .json(&json!({ "data": { "v": value } }))
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(_) => break, // killed: this write is unacknowledged
        };
        let status = resp.status().as_u16();
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(_) => break, // killed while the answer was on the wire: unacknowledged
        };
        assert!(
            (200..300).contains(&status),
            "write {} answered {status}: {}",
            k.name,
            String::from_utf8_lossy(&body)
        );
        let v: Value = serde_json::from_slice(&body).expect("write response json");
        let version = v["data"]["version"].as_u64().expect("data.version");
        if let Some((&last, _)) = k.acked.iter().next_back() {
            assert!(
                version > last,
                "{}: version {version} acknowledged after {last}",
                k.name
            );
        }
        k.acked.insert(version, value);
    }
    keys
}

/// Check every key against what was acknowledged and attempted.
async fn verify(c: &reqwest::Client, s: &Server, token: &str, keys: &[KeyState]) -> usize {
    let mut checked = 0;
    for k in keys {
        let r = c
            .get(s.url(&format!("kv/metadata/{}", k.name)))
            .header("X-Vault-Token", token)
            .send()
            .await
            .expect("metadata read");
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_ne!(status, 500, "metadata {} answered 500: {body}", k.name);
        let last_acked = k.acked.keys().next_back().copied().unwrap_or(0);
        if status == 404 {
            assert_eq!(
                last_acked, 0,
                "{}: acknowledged writes but no metadata",
                k.name
            );
            continue;
        }
        assert_eq!(status, 200, "metadata {}: {body}", k.name);
        let current = body["data"]["current_version"]
            .as_u64()
            .expect("current_version");
        assert!(
            current >= last_acked,
            "{}: current_version {current} < last acknowledged {last_acked}",
            k.name
        );
        for version in 1..=current {
            let r = c
                .get(s.url(&format!("kv/data/{}?version={version}", k.name)))
                .header("X-Vault-Token", token)
                .send()
                .await
                .expect("version read");
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            assert_eq!(
                status, 200,
                "{} v{version} (current {current}) answered {status}: {body}",
                k.name
            );
            let got = body["data"]["data"]["v"].as_str().expect("data.data.v");
            assert_eq!(body["data"]["metadata"]["version"], json!(version));
            match k.acked.get(&version) {
                Some(want) => assert_eq!(got, want, "{} v{version}", k.name),
                None => assert!(
                    k.attempted.contains(got),
                    "{} v{version} holds a value no writer sent",
                    k.name
                ),
            }
            checked += 1;
        }
    }
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_kill9() {
    let started = Instant::now();
    let (mut rng, seed) = match std::env::var("PALISADE_E2E_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(seed) => (Rng::new(seed), seed),
        None => Rng::from_time(),
    };
    eprintln!("durability_kill9: seed {seed} (PALISADE_E2E_SEED={seed} to replay)");
    let tag = format!("{:x}", seed & 0xffff_ffff);

    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = Spec::sqlite(dir.path());
    spec.audit_file = Some(dir.path().join("audit.log"));
    let c = spec.client();

    let mut server = Server::start(&spec).await;
    let (unseal_keys, root) = common::init(&c, &server, 1, 1).await;
    common::unseal(&c, &server, &unseal_keys).await;
    let r = c
        .post(server.url("sys/mounts/kv"))
        .header("X-Vault-Token", &root)
        .json(&json!({"type": "kv", "options": {"version": "2"}}))
        .send()
        .await
        .expect("mount");
    assert_eq!(r.status(), 204, "mount kv v2");
    // keep every version so every acknowledged one stays readable
    let r = c
        .post(server.url("kv/config"))
        .header("X-Vault-Token", &root)
        .json(&json!({"max_versions": 1_000_000}))
        .send()
        .await
        .expect("kv config");
    assert!(r.status().is_success(), "kv config: {}", r.status());

    let mut groups: Vec<Vec<KeyState>> = (0..WRITERS)
        .map(|w| {
            (0..KEYS_PER_WRITER)
                .map(|i| KeyState {
                    name: format!("w{w}k{i}"),
                    ..Default::default()
                })
                .collect()
        })
        .collect();

    let mut acked_total = 0usize;
    for round in 0..ROUNDS {
        assert!(
            started.elapsed() < TEST_BUDGET,
            "durability test over budget"
        );
        if round > 0 {
            server = Server::start(&spec).await;
            common::unseal(&c, &server, &unseal_keys).await;
            let all: Vec<KeyState> = groups.iter().flatten().cloned().collect();
            let checked = verify(&c, &server, &root, &all).await;
            eprintln!("round {round}: restarted, {checked} versions verified");
        }
        let tasks: Vec<_> = std::mem::take(&mut groups)
            .into_iter()
            .map(|g| {
                tokio::spawn(writer(
                    c.clone(),
                    server.addr.clone(),
                    root.clone(),
                    g,
                    round,
                    tag.clone(),
                ))
            })
            .collect();
        let delay = Duration::from_millis(rng.range(20, 400));
        tokio::time::sleep(delay).await;
        server.kill9();
        for t in tasks {
            // writers end on their first transport error after the kill
            let g = tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("writer did not notice the kill")
                .expect("writer panicked");
            groups.push(g);
        }
        let acked: usize = groups.iter().flatten().map(|k| k.acked.len()).sum();
        eprintln!(
            "round {round}: killed after {delay:?}; {} writes acknowledged this round",
            acked - acked_total
        );
        acked_total = acked;
    }

    // final restart and check
    let server = Server::start(&spec).await;
    common::unseal(&c, &server, &unseal_keys).await;
    let all: Vec<KeyState> = groups.iter().flatten().cloned().collect();
    let checked = verify(&c, &server, &root, &all).await;
    assert!(
        acked_total > 0,
        "no write was acknowledged in {ROUNDS} rounds"
    );
    eprintln!(
        "durability_kill9: {ROUNDS} kills, {acked_total} acknowledged writes, {checked} versions verified in {:?}",
        started.elapsed()
    );
    drop(server);

    let mut secrets = vec![root.clone()];
    secrets.extend(unseal_keys.iter().cloned());
    // every value starts with this prefix: checking it covers them all in one pass
    assert!(
        all.iter()
            .flat_map(|k| &k.attempted)
            .all(|v| v.starts_with(&format!("dur-{tag}-")))
    );
    secrets.push(format!("dur-{tag}-"));
    let audit = common::verify_audit(spec.audit_file.as_ref().expect("audit file"));
    common::assert_no_secrets("audit file", &audit, &secrets);
    let out = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
    common::assert_no_secrets("server output", &out, &secrets);
    common::assert_no_token_strings("server output", &out);
}
