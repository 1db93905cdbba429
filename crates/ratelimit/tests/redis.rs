//! RedisStore and Limiter against a real Redis (PALISADE_TEST_REDIS_URL, default
//! redis://127.0.0.1:6379), and against Redis that is not there.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade_ratelimit::{
    Decision, FailMode, Key, Limiter, LocalStore, ManualClock, Quota, RedisStore, Store, StoreError,
};

fn redis_url() -> String {
    std::env::var("PALISADE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A connected store, or `None` after printing a notice; a panic if PALISADE_REQUIRE_SERVICES=1.
async fn store(test: &str) -> Option<RedisStore> {
    let url = redis_url();
    let result = match RedisStore::open(&url, Duration::from_secs(2)).await {
        Ok(store) => store.load_script().await.map(|()| store),
        Err(err) => Err(err),
    };
    match result {
        Ok(store) => Some(store),
        Err(err) if std::env::var("PALISADE_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("{test}: Redis required (PALISADE_REQUIRE_SERVICES=1) but unusable: {err}")
        }
        Err(err) => {
            println!("SKIPPED {test}: Redis unusable ({err}); set PALISADE_TEST_REDIS_URL");
            None
        }
    }
}

async fn raw_connection() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Unique per run, so runs (and tests) never share state in Redis.
fn unique(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    Key::route(&format!("test:{}:{nanos}:{test}", std::process::id()))
}

/// Redis's clock, microseconds: the clock the script decides by.
async fn redis_now(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await.unwrap();
    secs * 1_000_000 + micros
}

fn within(actual: Duration, expected: Duration, slack: Duration) -> bool {
    actual <= expected && actual + slack >= expected
}

#[tokio::test]
async fn redis_has_the_local_semantics_and_expires_idle_keys() {
    let Some(redis) = store("redis_has_the_local_semantics_and_expires_idle_keys").await else {
        return;
    };
    // T = 1h, so the few milliseconds this test takes barely move anything.
    let quota = Quota::new(1, Duration::from_secs(3600), 2).unwrap();
    let hour = Duration::from_secs(3600);
    let key = unique("semantics");
    let local = LocalStore::new();
    let started = std::time::Instant::now();
    let mut from_redis = Vec::new();
    let mut from_local = Vec::new();
    for _ in 0..5 {
        from_redis.push(redis.check(&key, &quota).await.unwrap());
        from_local.push(local.decide(&key, &quota));
    }
    let slack = started.elapsed() + Duration::from_millis(1);
    for (i, (r, l)) in from_redis.iter().zip(&from_local).enumerate() {
        match (r, l) {
            (
                Decision::Allow {
                    remaining: rr,
                    reset: rt,
                },
                Decision::Allow {
                    remaining: lr,
                    reset: lt,
                },
            ) => {
                assert_eq!(rr, lr, "request {i}");
                assert_eq!(*rr, 2 - i as u32, "request {i}");
                assert!(
                    within(*rt, hour * (i as u32 + 1), slack),
                    "request {i}: {rt:?}"
                );
                assert!(
                    within(*lt, hour * (i as u32 + 1), slack),
                    "request {i}: {lt:?}"
                );
            }
            (
                Decision::Deny {
                    retry_after: ra,
                    reset: rt,
                },
                Decision::Deny {
                    retry_after: la,
                    reset: lt,
                },
            ) => {
                assert!(i >= 3, "request {i} denied");
                for (a, t) in [(ra, rt), (la, lt)] {
                    assert!(within(*a, hour, slack), "request {i}: {a:?}");
                    assert!(within(*t, hour * 3, slack), "request {i}: {t:?}");
                }
            }
            _ => panic!("request {i}: redis {r:?}, local {l:?}"),
        }
    }
    // Stored under the namespace, expiring when the TAT passes (3h from the first request).
    let mut conn = raw_connection().await;
    let ttl_ms: i64 = redis::cmd("PTTL")
        .arg(format!("palisade:rl:{key}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        ttl_ms > 3 * 3_600_000 - 60_000 && ttl_ms <= 3 * 3_600_000,
        "PTTL {ttl_ms}"
    );
}

#[tokio::test]
async fn keys_and_quotas_are_independent_in_redis() {
    let Some(redis) = store("keys_and_quotas_are_independent_in_redis").await else {
        return;
    };
    let strict = Quota::new(1, Duration::from_secs(3600), 0).unwrap();
    let loose = Quota::new(1, Duration::from_secs(3600), 3).unwrap();
    let (a, b) = (unique("a"), unique("b"));
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push((
            redis.check(&a, &strict).await.unwrap().is_allow(),
            redis.check(&b, &loose).await.unwrap().is_allow(),
        ));
    }
    let a_seen: Vec<bool> = seen.iter().map(|s| s.0).collect();
    let b_seen: Vec<bool> = seen.iter().map(|s| s.1).collect();
    assert_eq!(a_seen, [true, false, false, false, false]);
    assert_eq!(b_seen, [true, true, true, true, false]);
}

#[tokio::test]
async fn script_is_reloaded_after_a_flush() {
    let Some(redis) = store("script_is_reloaded_after_a_flush").await else {
        return;
    };
    let mut conn = raw_connection().await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    let quota = Quota::new(1, Duration::from_secs(60), 0).unwrap();
    // EVALSHA gets NOSCRIPT; the store loads the script and runs it, and the caller sees a decision.
    match redis.check(&unique("flush"), &quota).await {
        Ok(Decision::Allow {
            remaining: 0,
            reset,
        }) => {
            assert!(
                within(reset, Duration::from_secs(60), Duration::from_secs(1)),
                "{reset:?}"
            )
        }
        other => panic!("expected an allow, got {other:?}"),
    }
}

const HAMMER: Duration = Duration::from_millis(500);

fn hammer_quota() -> Quota {
    // T = 50ms, burst 5.
    Quota::new(20, Duration::from_secs(1), 5).unwrap()
}

/// GCRA admits at most `burst + 1 + floor(window / T)` requests in any window.
fn bound(quota: &Quota, window_micros: u64) -> u64 {
    u64::from(quota.burst()) + 1 + window_micros / quota.emission_interval().as_micros() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_sharing_redis_admit_at_most_the_bound() {
    let Some(first) = store("two_gateways_sharing_redis_admit_at_most_the_bound").await else {
        return;
    };
    // A second store: its own client and connection, as a second gateway process would have.
    let second = RedisStore::open(&redis_url(), Duration::from_secs(2))
        .await
        .unwrap();
    let quota = hammer_quota();
    let key = unique("distributed");
    let allowed = Arc::new(AtomicU64::new(0));
    let attempts = Arc::new(AtomicU64::new(0));
    let mut conn = raw_connection().await;
    let start = redis_now(&mut conn).await;
    let deadline = tokio::time::Instant::now() + HAMMER;
    let mut tasks = Vec::new();
    for gateway in [first, second] {
        for _ in 0..8 {
            let (store, key, allowed, attempts) = (
                gateway.clone(),
                key.clone(),
                allowed.clone(),
                attempts.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while tokio::time::Instant::now() < deadline {
                    attempts.fetch_add(1, Ordering::Relaxed);
                    if store.check(&key, &quota).await.unwrap().is_allow() {
                        allowed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let end = redis_now(&mut conn).await;
    let (allowed, attempts) = (
        allowed.load(Ordering::Relaxed),
        attempts.load(Ordering::Relaxed),
    );
    let bound = bound(&quota, end - start);
    println!(
        "redis: {allowed} of {attempts} admitted in {}us; bound {bound}",
        end - start
    );
    assert!(
        attempts > 2 * bound,
        "the stores were not hammered: {attempts} attempts"
    );
    assert!(allowed <= bound, "{allowed} admitted, bound {bound}");
    assert!(allowed > u64::from(quota.burst()), "{allowed} admitted");
}

#[test]
fn two_gateways_with_local_stores_admit_twice_the_bound() {
    // The same traffic against two in-process stores (one per gateway): each enforces the quota
    // alone, so together they admit double. This is why shared limits need Redis.
    let clock = Arc::new(ManualClock::new());
    let stores = [
        LocalStore::with_clock(100, clock.clone()),
        LocalStore::with_clock(100, clock.clone()),
    ];
    let quota = hammer_quota();
    let key = "distributed";
    let mut allowed = 0u64;
    let window = HAMMER.as_micros() as u64;
    for _ms in 0..=window / 1000 {
        for _ in 0..8 {
            for store in &stores {
                allowed += u64::from(store.decide(key, &quota).is_allow());
            }
        }
        clock.advance(Duration::from_millis(1));
    }
    let bound = bound(&quota, window);
    assert_eq!(bound, 16);
    assert_eq!(allowed, 2 * bound);
}

const UNREACHABLE: &str = "redis://127.0.0.1:1";

fn quota() -> Quota {
    Quota::new(1, Duration::from_secs(10), 2).unwrap()
}

#[tokio::test]
async fn unreachable_redis_fail_open_allows() {
    let limiter = Limiter::redis(UNREACHABLE, FailMode::FailOpen, Duration::from_millis(200))
        .await
        .unwrap();
    for n in 1..=5 {
        assert_eq!(
            limiter.check("k", &quota()).await,
            Decision::Allow {
                remaining: 2,
                reset: Duration::from_secs(10)
            }
        );
        assert_eq!(limiter.fallbacks(), n);
    }
}

#[tokio::test]
async fn unreachable_redis_fail_closed_denies() {
    let limiter = Limiter::redis(
        UNREACHABLE,
        FailMode::FailClosed,
        Duration::from_millis(200),
    )
    .await
    .unwrap();
    for n in 1..=3 {
        assert_eq!(
            limiter.check("k", &quota()).await,
            Decision::Deny {
                retry_after: Duration::from_secs(1),
                reset: Duration::from_secs(1)
            }
        );
        assert_eq!(limiter.fallbacks(), n);
    }
}

#[tokio::test]
async fn unreachable_redis_local_fallback_limits_locally() {
    let clock = Arc::new(ManualClock::new());
    let redis = RedisStore::open(UNREACHABLE, Duration::from_millis(200))
        .await
        .unwrap();
    let limiter = Limiter::new(redis, FailMode::LocalFallback)
        .with_cooldown(Duration::ZERO) // ask the dead Redis every time: each one falls back
        .with_fallback(LocalStore::with_clock(100, clock.clone()));
    let q = quota();
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(limiter.check("k", &q).await);
    }
    let s = Duration::from_secs;
    assert_eq!(
        seen,
        vec![
            Decision::Allow {
                remaining: 2,
                reset: s(10)
            },
            Decision::Allow {
                remaining: 1,
                reset: s(20)
            },
            Decision::Allow {
                remaining: 0,
                reset: s(30)
            },
            Decision::Deny {
                retry_after: s(10),
                reset: s(30)
            },
        ]
    );
    assert_eq!(limiter.fallbacks(), 4);
    assert_eq!(FailMode::default(), FailMode::LocalFallback);
}

#[tokio::test]
async fn unreachable_redis_is_a_store_error() {
    let redis = RedisStore::open(UNREACHABLE, Duration::from_millis(200))
        .await
        .unwrap();
    match redis.check("k", &quota()).await {
        Err(StoreError::Redis(e)) => assert!(e.is_connection_refusal(), "{e}"),
        other => panic!("expected connection refused, got {other:?}"),
    }
}

#[tokio::test]
async fn silent_redis_times_out_and_the_fail_mode_applies() {
    // Accepts connections and never answers: a hung Redis.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            sockets.push(socket);
        }
    });
    let timeout = Duration::from_millis(100);
    let redis = RedisStore::open(&url, timeout).await.unwrap();
    let started = tokio::time::Instant::now();
    match redis.check("k", &quota()).await {
        Err(StoreError::Timeout(t)) => assert_eq!(t, timeout),
        Err(StoreError::Redis(e)) if e.is_timeout() => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    // Bounded: not the 6 retries with backoff the redis crate defaults to.
    assert!(started.elapsed() < timeout * 10, "{:?}", started.elapsed());
    let limiter = Limiter::new(redis, FailMode::FailClosed);
    assert!(!limiter.check("k", &quota()).await.is_allow());
    assert_eq!(limiter.fallbacks(), 1);
    held.abort();
}
