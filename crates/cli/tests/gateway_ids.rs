//! Intrusion detection with bans shared through Redis, between two real
//! `palisade gateway` processes, and `palisade gateway bans`.
//!
//! The attacker is a random loopback address (127.x.y.z, bound by the
//! client), so reruns against the same Redis never meet an earlier run's
//! ban, and 127.0.0.1 stays a bystander on the allow list. Every request
//! goes to a path no route serves: a 404 `not_found` weighs 2 and the
//! threshold is 10, so the fifth one bans.
//! - gateway A bans the attacker; from then on A closes its connections
//!   at accept (before any HTTP), and a keep-alive connection opened
//!   before the ban gets 403 `client_banned` with `Retry-After`;
//! - gateway B refuses it within its sync interval (200 ms);
//! - the ban ends on its own after `ban_s` (2 s), on both;
//! - a second offence is banned twice as long (strikes 2, 4 s);
//! - `bans list` shows it (shared), `bans remove` lifts it everywhere,
//!   `bans add` bans a principal, and the allow-listed 127.0.0.1 cannot be
//!   banned.
//!
//! Skips without Redis (PALISADE_TEST_REDIS_URL, default
//! redis://127.0.0.1:6379) unless PALISADE_REQUIRE_SERVICES=1.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod gateway_common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use gateway_common::{Gateway, redis_url, wait_for};
use serde_json::Value;

fn config(redis: &str, admin_port: u16) -> String {
    format!(
        r#"[[listeners]]
name = "plain"
address = "127.0.0.1:0"
protocol = "http"
dangerous_plaintext = true

[admin]
address = "127.0.0.1:{admin_port}"

[[upstreams]]
name = "app"
endpoints = ["127.0.0.1:9"]

[authorization]
policy_file = "policies.cedar"

[[routes]]
name = "only"
path_prefix = "/only"
upstream = "app"
anonymous = true

[ids]
store = "redis"
redis_url = "{redis}"
redis_timeout_ms = 500
sync_interval_ms = 200
threshold = 10
ban_s = 2
max_ban_s = 8
allow = ["127.0.0.1"]
"#
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A client whose connections come from `from`; `pooled` keeps them alive.
fn client(from: IpAddr, pooled: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .local_address(from)
        .no_proxy()
        .timeout(Duration::from_secs(5));
    if !pooled {
        b = b.pool_max_idle_per_host(0);
    }
    b.build().unwrap()
}

/// The status of `GET /nothing` (404: an offence), or `None` when the
/// gateway closed the connection without answering.
async fn probe(c: &reqwest::Client, gw: SocketAddr) -> Option<u16> {
    get(c, gw, "/nothing").await
}

/// `GET /only/x`: served, it is a 502 (the route's upstream is down), which
/// counts for nothing: what the waits poll with.
async fn served(c: &reqwest::Client, gw: SocketAddr) -> bool {
    get(c, gw, "/only/x").await == Some(502)
}

async fn get(c: &reqwest::Client, gw: SocketAddr, path: &str) -> Option<u16> {
    c.get(format!("http://{gw}{path}"))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

fn bans_json(cfg: &Path) -> Vec<Value> {
    let (code, out, err) = Gateway::cli(cfg, &["bans", "list", "--format", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["shared_store"], true, "{v}");
    v["bans"].as_array().cloned().unwrap()
}

#[tokio::test]
async fn bans_are_shared_grow_expire_and_are_managed_from_the_cli() {
    let Some(redis) = redis_url("bans_are_shared_grow_expire_and_are_managed_from_the_cli") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policies.cedar"),
        "permit(principal, action, resource);\n",
    )
    .unwrap();
    let cfg_a = dir.path().join("a.toml");
    let cfg_b = dir.path().join("b.toml");
    std::fs::write(&cfg_a, config(&redis, free_port())).unwrap();
    std::fs::write(&cfg_b, config(&redis, 0)).unwrap();
    let a = Gateway::start(&cfg_a, "a").await;
    let b = Gateway::start(&cfg_b, "b").await;
    let (ga, gb) = (a.addr("plain"), b.addr("plain"));

    // a loopback address of this run's own (127.20-219.x.y)
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ u64::from(std::process::id()) << 20;
    let attacker = IpAddr::V4(Ipv4Addr::new(
        127,
        (n % 200) as u8 + 20,
        ((n >> 8) % 250) as u8 + 1,
        ((n >> 16) % 250) as u8 + 2,
    ));
    let subject = format!("ip:{attacker}");
    let fresh = client(attacker, false);
    let keep = client(attacker, true);
    let bystander = client(IpAddr::V4(Ipv4Addr::LOCALHOST), false);

    // a keep-alive connection opened before the ban
    assert_eq!(probe(&keep, ga).await, Some(404));
    // four more 404s: the fifth event bans
    for i in 0..4 {
        assert_eq!(probe(&fresh, ga).await, Some(404), "request {i}");
    }
    // A closes new connections from the attacker at accept
    wait_for(
        "A refuses the attacker at accept",
        Duration::from_secs(3),
        || {
            let fresh = fresh.clone();
            async move { (!served(&fresh, ga).await).then_some(()) }
        },
    )
    .await;
    // the kept connection gets the ban's answer
    let r = keep
        .get(format!("http://{ga}/only/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "client_banned", "{body}");
    // B learns of it from Redis
    wait_for("B refuses the attacker", Duration::from_secs(3), || {
        let fresh = fresh.clone();
        async move { (!served(&fresh, gb).await).then_some(()) }
    })
    .await;
    // the bystander is served by both
    assert!(served(&bystander, ga).await);
    assert!(served(&bystander, gb).await);
    assert_eq!(probe(&fresh, ga).await, None);
    // listed as shared, with its reason and strikes
    let listed = bans_json(&cfg_a);
    let mine = listed.iter().find(|x| x["subject"] == subject.as_str());
    let mine = mine.unwrap_or_else(|| panic!("{subject} not in {listed:?}"));
    assert_eq!(mine["reason"], "not_found");
    assert_eq!(mine["strikes"], 1);
    assert_eq!(mine["shared"], true);
    // the ban event in A's security log
    let ev = a
        .security_log()
        .into_iter()
        .find(|l| l["event"] == "ban" && l["subject"] == subject.as_str())
        .expect("a ban event");
    assert_eq!(ev["duration_s"], 2, "{ev}");
    assert_eq!(ev["category"], "ban");

    // the ban ends on its own, for both
    wait_for("the ban ends", Duration::from_secs(5), || {
        let fresh = fresh.clone();
        async move { (served(&fresh, ga).await && served(&fresh, gb).await).then_some(()) }
    })
    .await;
    // a second offence: twice as long
    for _ in 0..5 {
        assert_eq!(probe(&fresh, gb).await, Some(404));
    }
    wait_for("the second ban", Duration::from_secs(3), || {
        let fresh = fresh.clone();
        async move { (!served(&fresh, ga).await).then_some(()) }
    })
    .await;
    let listed = bans_json(&cfg_a);
    let mine = listed
        .iter()
        .find(|x| x["subject"] == subject.as_str())
        .unwrap();
    assert_eq!(mine["strikes"], 2, "{mine}");
    assert!(mine["remaining_s"].as_u64().unwrap() >= 2, "{mine}");

    // lifted from the CLI: served again by both, the strikes forgotten
    let (code, out, err) = Gateway::cli(&cfg_a, &["bans", "remove", &subject]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), format!("lifted the ban of {subject}"));
    wait_for("served again after remove", Duration::from_secs(3), || {
        let fresh = fresh.clone();
        async move { (served(&fresh, ga).await && served(&fresh, gb).await).then_some(()) }
    })
    .await;
    let (code, out, _) = Gateway::cli(&cfg_a, &["bans", "remove", &subject]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("{subject} was not banned"));

    // a principal banned by hand, listed with the operator's reason
    let principal = format!("principal:test-{attacker}");
    let (code, out, err) = Gateway::cli(
        &cfg_a,
        &[
            "bans",
            "add",
            &principal,
            "--duration",
            "10m",
            "--reason",
            "incident 7",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), format!("banned {principal} for 600s"));
    let listed = bans_json(&cfg_a);
    let p = listed
        .iter()
        .find(|x| x["subject"] == principal.as_str())
        .unwrap();
    assert_eq!(p["reason"], "manual: incident 7");
    let (code, _, _) = Gateway::cli(&cfg_a, &["bans", "remove", &principal]);
    assert_eq!(code, 0);

    // a reason written into the shared store by anyone else is printed
    // escaped, never as terminal control sequences
    if let Ok(out) = std::process::Command::new("redis-cli")
        .args(["-u", &redis, "eval",
            "local t = redis.call('TIME'); redis.call('ZADD', KEYS[1], t[1] * 1000 + 600000, ARGV[1]); return redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])",
            "2", "palisade:ids:bans", "palisade:ids:info", &principal, "0 manual: \u{1b}[2Jall clear"])
        .output()
    {
        assert!(out.status.success(), "{out:?}");
        let shown = wait_for("the written ban is listed", Duration::from_secs(3), || {
            let cfg = cfg_a.clone();
            async move {
                let (code, out, _) = Gateway::cli(&cfg, &["bans", "list"]);
                (code == 0 && out.contains("all clear")).then_some(out)
            }
        })
        .await;
        assert!(!shown.contains('\u{1b}'), "{shown:?}");
        assert!(shown.contains("\\u{1b}[2Jall clear"), "{shown}");
        let (code, _, _) = Gateway::cli(&cfg_a, &["bans", "remove", &principal]);
        assert_eq!(code, 0);
    }

    // what the CLI refuses, with the admin's reason
    for (args, want) in [
        (
            vec!["bans", "add", "ip:127.0.0.1", "--duration", "1h"],
            "error: ip:127.0.0.1 is on the allow list and cannot be banned (allow_listed, 409 Conflict)",
        ),
        (
            vec!["bans", "add", "127.0.0.9", "--duration", "1h"],
            "error: a subject is ip:<address> (an IPv6 address stands for its /64) or principal:<label> (invalid_subject, 400 Bad Request)",
        ),
        (
            vec!["bans", "remove", "ip:127.0.0.9/8"],
            "error: a subject is ip:<address> (an IPv6 address stands for its /64) or principal:<label> (invalid_subject, 400 Bad Request)",
        ),
    ] {
        let (code, out, err) = Gateway::cli(&cfg_a, &args);
        assert_eq!(code, 1, "{args:?}: {out}");
        assert_eq!(err.trim(), want, "{args:?}");
    }
}
