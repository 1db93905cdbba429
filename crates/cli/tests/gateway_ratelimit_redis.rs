//! Per-principal rate limits shared through Redis by two real `palisade
//! gateway` processes (same config file, same API key database), in front of
//! the Express service.
//!
//! The route allows `limit = 5` per `period_s = 300` with `burst = 4`: GCRA
//! (crates/ratelimit) admits `burst + 1 = 5` at once and then one per
//! `T = 300 s / 5 = 60 s`, so any run shorter than a minute admits exactly 5.
//! Requests alternate between the two gateways with the same API key:
//! - store = "redis": exactly 5 admitted in total, in order, with
//!   `RateLimit: "route";r=4..0` counting down across both processes; the
//!   rest get 429 `rate_limited` with `Retry-After`, `RateLimit` and
//!   `RateLimit-Policy: "route";q=5;w=300`, logged as `rate_limited`;
//! - store = "local": each process counts alone, so 10 are admitted — the
//!   shared store is what makes the limit hold for a fleet.
//!
//! Redis keys are `palisade:rl:principal:<route>:<principal>`; the route name
//! is unique per run so reruns against the same Redis start from zero.
//! Skips without Redis (PALISADE_TEST_REDIS_URL, default
//! redis://127.0.0.1:6379) or node_modules, unless PALISADE_REQUIRE_SERVICES=1.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod gateway_common;

use std::path::Path;

use gateway_common::{Gateway, Upstream, plain_client, send, unique};

const REQUESTS: usize = 12;
const ADMITTED: usize = 5; // burst + 1

const POLICIES: &str = r#"
@id("readers")
permit(principal, action, resource) when { context.scopes.contains("orders:read") };
"#;

fn config(upstream_port: u16, route: &str, store: &str) -> String {
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

[apikeys]
database = "keys.db"
pepper_file = "pepper"

{store}

[authorization]
policy_file = "policies.cedar"

[[routes]]
name = "{route}"
path_prefix = "/orders"
upstream = "app"
authn = ["apikey"]
ratelimit = {{ limit = 5, period_s = 300, burst = 4, per = "principal" }}
"#
    )
}

/// Send REQUESTS alternately to the two gateways; returns the statuses in order.
async fn alternate(gws: [&Gateway; 2], key: &str, check_headers: bool) -> Vec<u16> {
    let c = plain_client();
    let mut statuses = Vec::new();
    let mut admitted = 0;
    for i in 0..REQUESTS {
        let gw = gws[i % 2];
        let r = send(
            c.get(format!("http://{}/orders/{i}", gw.addr("plain")))
                .header("x-api-key", key),
        )
        .await;
        statuses.push(r.status);
        if !check_headers {
            continue;
        }
        assert_eq!(
            r.header("ratelimit-policy"),
            Some("\"route\";q=5;w=300"),
            "request {i}: {r:?}"
        );
        if r.status == 200 {
            admitted += 1;
            // the remaining allowance counts down across both processes
            let remaining = ADMITTED - admitted;
            let rl = r.header("ratelimit").unwrap_or_default();
            assert!(
                rl.starts_with(&format!("\"route\";r={remaining};t=")),
                "request {i} on gateway {}: {rl}",
                i % 2
            );
        } else {
            r.assert_error(429, "rate_limited", &format!("request {i}"));
            let retry: u64 = r
                .header("retry-after")
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("Retry-After: {r:?}"));
            assert!((1..=60).contains(&retry), "Retry-After {retry}");
            assert!(
                r.header("ratelimit")
                    .is_some_and(|v| v.starts_with("\"route\";r=0;t=")),
                "{r:?}"
            );
            let rec = gw.record(&r.request_id()).await;
            assert_eq!(rec["decision"], "deny", "{rec}");
            assert_eq!(rec["category"], "rate_limited", "{rec}");
            assert_eq!(rec["reason"], "route", "{rec}");
            assert_eq!(rec["principal"], "apikey:partner", "{rec}");
        }
    }
    statuses
}

fn write_common(dir: &Path) {
    std::fs::write(
        dir.join("pepper"),
        format!("{}-pepper-for-the-ratelimit-e2e-test", unique()),
    )
    .unwrap();
    std::fs::write(dir.join("policies.cedar"), POLICIES).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_ratelimit_redis() {
    if !gateway_common::node_ready("gateway_ratelimit_redis") {
        return;
    }
    let Some(redis) = gateway_common::redis_url("gateway_ratelimit_redis") else {
        return;
    };
    let started = std::time::Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    write_common(dir);
    let upstream = Upstream::start(dir);

    // shared: Redis (fail_closed, so nothing silently falls back to local counting)
    let route = format!("orders-{}", unique());
    let redis_cfg = dir.join("redis.toml");
    let store = format!(
        "[ratelimit]\nstore = \"redis\"\nredis_url = {redis:?}\non_store_failure = \"fail_closed\"\nredis_timeout_ms = 2000"
    );
    std::fs::write(&redis_cfg, config(upstream.port, &route, &store)).unwrap();
    let (key, _) = Gateway::apikey_create(&redis_cfg, "partner", &["orders:read"]);
    let g1 = Gateway::start(&redis_cfg, "redis-1").await;
    let g2 = Gateway::start(&redis_cfg, "redis-2").await;
    let statuses = alternate([&g1, &g2], &key, true).await;
    let mut want = vec![200u16; ADMITTED];
    want.resize(REQUESTS, 429);
    assert_eq!(
        statuses, want,
        "redis store: the first {ADMITTED} of {REQUESTS} admitted, across both gateways"
    );
    for gw in [&g1, &g2] {
        assert!(
            !gw.stderr().contains("ratelimit_store_unavailable"),
            "{}",
            gw.stderr()
        );
    }

    // not shared: each process counts alone
    let route = format!("orders-{}", unique());
    let local_cfg = dir.join("local.toml");
    std::fs::write(
        &local_cfg,
        config(upstream.port, &route, "[ratelimit]\nstore = \"local\""),
    )
    .unwrap();
    let g3 = Gateway::start(&local_cfg, "local-1").await;
    let g4 = Gateway::start(&local_cfg, "local-2").await;
    let statuses = alternate([&g3, &g4], &key, false).await;
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(
        admitted,
        2 * ADMITTED,
        "local store: each of two gateways admits {ADMITTED}: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    eprintln!("gateway_ratelimit_redis: {:?}", started.elapsed());
}
