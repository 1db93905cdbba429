//! Hot reload of a real `palisade gateway` process on SIGHUP, in front of the
//! Express service:
//! - a SIGHUP sent the moment the gateway says it is listening reloads
//!   instead of killing the process (the handler is installed first);
//! - the Cedar policy file changes to deny the `orders` route, SIGHUP ->
//!   requests to it get 403 `forbidden` (polled with a deadline) while
//!   `health` still answers 200;
//! - the config file becomes invalid (an unknown key, next to a change that
//!   would re-open `orders`), SIGHUP -> the reload is refused and logged, the
//!   previous configuration keeps serving (`orders` still 403), and
//!   `palisade config check` on that file exits 1 naming the unknown key;
//! - a valid config again, SIGHUP -> `orders` is served again.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod gateway_common;

use std::time::Duration;

use gateway_common::{Gateway, Upstream, plain_client, send, wait_for};

const OPEN: &str = r#"
@id("anonymous-all")
permit(principal == Anonymous::"anonymous", action, resource);
"#;

const HEALTH_ONLY: &str = r#"
@id("anonymous-health")
permit(principal == Anonymous::"anonymous", action, resource == Route::"health");
"#;

fn config(upstream_port: u16, policy_file: &str, extra: &str) -> String {
    format!(
        r#"{extra}
[[listeners]]
name = "plain"
address = "127.0.0.1:0"
protocol = "http"
dangerous_plaintext = true

[admin]
address = "127.0.0.1:0"

[[upstreams]]
name = "app"
endpoints = ["127.0.0.1:{upstream_port}"]

[authorization]
policy_file = "{policy_file}"

[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "app"
anonymous = true

[[routes]]
name = "health"
path_prefix = "/health"
upstream = "app"
anonymous = true
"#
    )
}

/// Lines of the gateway's stderr (JSON tracing) whose message is `msg`.
fn count(gw: &Gateway, msg: &str) -> usize {
    gw.stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == msg)
        .count()
}

/// SIGHUP and wait until the gateway logs one more `msg` than before.
async fn hup_and_wait(gw: &Gateway, msg: &str) {
    let before = count(gw, msg);
    gw.signal("HUP");
    wait_for(
        &format!("{msg:?} after SIGHUP"),
        Duration::from_secs(10),
        || async { (count(gw, msg) > before).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_reload() {
    if !gateway_common::node_ready("gateway_reload") {
        return;
    }
    let started = std::time::Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::write(dir.join("open.cedar"), OPEN).unwrap();
    std::fs::write(dir.join("policies.cedar"), OPEN).unwrap();
    let upstream = Upstream::start(dir);
    let cfg = dir.join("gateway.toml");
    let path = cfg.display().to_string();
    std::fs::write(&cfg, config(upstream.port, "policies.cedar", "")).unwrap();

    // SIGHUP right after "admin listening": must reload, not kill
    let mut gw = Gateway::spawn(&cfg, "gateway").await;
    gw.signal("HUP");
    gw.wait_healthy().await;
    assert!(
        gw.running(),
        "SIGHUP right after start killed the gateway:\n{}",
        gw.stderr()
    );
    wait_for(
        "reload after the early SIGHUP",
        Duration::from_secs(10),
        || async { (count(&gw, "configuration reloaded") >= 1).then_some(()) },
    )
    .await;

    let c = plain_client();
    let base = format!("http://{}", gw.addr("plain"));
    let orders = format!("{base}/orders/1");
    let health = format!("{base}/health");
    assert_eq!(send(c.get(&orders)).await.status, 200);
    assert_eq!(send(c.get(&health)).await.status, 200);

    // 1. the policy now denies orders; SIGHUP -> denied
    std::fs::write(dir.join("policies.cedar"), HEALTH_ONLY).unwrap();
    gw.signal("HUP");
    let r = wait_for(
        "orders denied after the policy reload",
        Duration::from_secs(10),
        || async {
            let r = send(c.get(&orders)).await;
            (r.status != 200).then_some(r)
        },
    )
    .await;
    r.assert_error(403, "forbidden", "orders after the policy reload");
    let rec = gw.record(&r.request_id()).await;
    assert_eq!(rec["reason"], "no_policy_permits", "{rec}");
    assert_eq!(send(c.get(&health)).await.status, 200);

    // 2. an invalid config (that would re-open orders if it were applied)
    std::fs::write(&cfg, config(upstream.port, "open.cedar", "unknown_key = 1")).unwrap();
    hup_and_wait(
        &gw,
        "reload refused; the previous configuration keeps serving",
    )
    .await;
    assert!(gw.running(), "{}", gw.stderr());
    let refused = gw.stderr();
    assert!(
        refused.contains("unknown field `unknown_key`"),
        "the refusal names the problem:\n{refused}"
    );
    send(c.get(&orders))
        .await
        .assert_error(403, "forbidden", "orders after the refused reload");
    assert_eq!(send(c.get(&health)).await.status, 200);
    let metrics = send(c.get(format!("http://{}/metrics", gw.admin))).await;
    assert!(
        metrics
            .body
            .contains("palisade_gateway_reloads_total{result=\"refused\"}"),
        "{}",
        metrics.body
    );

    // `palisade config check` on the invalid file: exit 1, the error listed
    let (code, out, err) = gateway_common::palisade(&["config", "check", &path], &[]);
    assert_eq!(code, 1, "config check of an invalid file: {out}{err}");
    assert!(
        err.starts_with(&format!("{path}: ")) && err.contains("unknown field `unknown_key`"),
        "{err}"
    );
    assert!(out.is_empty(), "{out}");

    // 3. valid again, opening orders: served again
    std::fs::write(&cfg, config(upstream.port, "open.cedar", "")).unwrap();
    let (code, out, err) = gateway_common::palisade(&["config", "check", &path], &[]);
    assert_eq!(
        (code, out.trim()),
        (0, format!("{path}: OK (gateway)").as_str()),
        "{err}"
    );
    hup_and_wait(&gw, "configuration reloaded").await;
    let r = send(c.get(&orders)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        gw.record(&r.request_id()).await["reason"],
        "policy:anonymous-all"
    );
    // the request counters (handles kept per worker across reloads) agree
    // with the security log: one count per logged request, by route,
    // decision and status
    let mut expected = std::collections::BTreeMap::<String, u64>::new();
    let log = gw.security_log();
    // reloads are security events of their own
    let reloads: Vec<&serde_json::Value> = log
        .iter()
        .filter(|l| l["event"] == "config_reload")
        .collect();
    assert!(
        reloads
            .iter()
            .any(|l| l["result"] == "ok" && l["category"] == "configuration"),
        "{reloads:?}"
    );
    // refused: counted; the errors' text only on stderr (a TOML error
    // quotes the line it stopped on)
    assert!(
        reloads
            .iter()
            .any(|l| l["result"] == "refused" && l["errors"] == 1),
        "{reloads:?}"
    );
    assert!(
        reloads
            .iter()
            .all(|l| !l.to_string().contains("unknown_key")),
        "{reloads:?}"
    );
    for rec in log.iter().filter(|l| l.get("request_id").is_some()) {
        let line = format!(
            "palisade_gateway_requests_total{{route=\"{}\",decision=\"{}\",status=\"{}\"}}",
            rec["route"].as_str().unwrap(),
            rec["decision"].as_str().unwrap(),
            rec["status"]
        );
        *expected.entry(line).or_default() += 1;
    }
    assert!(
        expected.len() >= 3,
        "allowed and denied requests: {expected:?}"
    );
    let metrics = send(c.get(format!("http://{}/metrics", gw.admin))).await;
    let counted: std::collections::BTreeMap<String, u64> = metrics
        .body
        .lines()
        .filter(|l| l.starts_with("palisade_gateway_requests_total{"))
        .map(|l| {
            let (name, n) = l.rsplit_once(' ').unwrap();
            (name.to_string(), n.parse().unwrap())
        })
        .collect();
    assert_eq!(counted, expected, "{}", metrics.body);
    // durations: a histogram with buckets, one sample per logged request
    // of the route, and a sub-millisecond bucket
    let logged = gw
        .security_log()
        .iter()
        .filter(|r| r["route"] == "orders")
        .count();
    let lines: Vec<&str> = metrics.body.lines().collect();
    let bucket = |le: &str| {
        format!("palisade_gateway_request_duration_seconds_bucket{{route=\"orders\",le=\"{le}\"}}")
    };
    assert!(
        lines.contains(&format!("{} {logged}", bucket("+Inf")).as_str()),
        "{logged} orders requests: {}",
        metrics.body
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&bucket("0.0005"))),
        "{}",
        metrics.body
    );
    eprintln!("gateway_reload: {:?}", started.elapsed());
}
