//! Leadership with fencing on the real PostgreSQL (issue #19, first part):
//! one leader at a time, a token that grows with each leader, and writes
//! that PostgreSQL refuses once their token is stale — including a deposed
//! leader that "wakes up" after its lease ran out and another took over.
//! Skips without PostgreSQL unless PALISADE_REQUIRE_SERVICES=1.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test"
)]

use std::sync::Arc;
use std::time::Duration;

use palisade_storage::ha::Fence;
use palisade_storage::postgres::PostgresBackend;
use palisade_storage::{Backend, StorageError, TxnOp};

async fn backend() -> Option<PostgresBackend> {
    let url = std::env::var("PALISADE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let table = format!("ha_{}", palisade_core::uuid_v4().replace('-', "_"));
    match PostgresBackend::connect(&url, &table).await {
        Ok(b) => Some(b),
        Err(e) => {
            if std::env::var("PALISADE_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("PostgreSQL required but unavailable: {e}");
            }
            eprintln!("SKIPPED: PostgreSQL unavailable ({e})");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_a_deposed_one_cannot_write() {
    let Some(base) = backend().await else { return };
    let ttl = Duration::from_secs(1);
    let (fa, fb) = (Fence::new(), Fence::new());
    let (a, b) = (base.fenced(fa.clone()), base.fenced(fb.clone()));
    let lock_a = base.ha_lock("node-a", "https://a:8200", ttl).unwrap();
    let lock_b = base.ha_lock("node-b", "https://b:8200", ttl).unwrap();

    // not a leader yet: fenced writes are refused, reads work
    assert!(matches!(a.put("k", b"0").await, Err(StorageError::Fenced)));
    assert_eq!(a.get("k").await.unwrap(), None);

    // A leads; B cannot take over a live lease
    let t1 = lock_a
        .try_acquire()
        .await
        .unwrap()
        .expect("the first node leads");
    fa.set(t1);
    assert_eq!(lock_b.try_acquire().await.unwrap(), None);
    let leader = lock_b.leader().await.unwrap();
    assert_eq!(
        (
            leader.holder.as_str(),
            leader.api_addr.as_str(),
            leader.fence,
            leader.live
        ),
        ("node-a", "https://a:8200", t1, true)
    );
    a.put("k", b"from-a").await.unwrap();
    assert!(lock_a.renew(t1).await.unwrap());
    // B, not the leader, cannot write even with A's lease live
    fb.set(t1 - 1);
    assert!(matches!(
        b.put("k", b"from-b").await,
        Err(StorageError::Fenced)
    ));

    // A pauses past its lease (no renewals); B takes over with a larger token
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let t2 = lock_b
        .try_acquire()
        .await
        .unwrap()
        .expect("the lease ran out");
    assert!(t2 > t1);
    fb.set(t2);
    b.put("k", b"from-b").await.unwrap();

    // A wakes up, still believing it leads: every kind of write is refused,
    // and its renewal tells it that it lost the lead
    assert!(matches!(
        a.put("k", b"stale").await,
        Err(StorageError::Fenced)
    ));
    assert!(matches!(a.delete("k").await, Err(StorageError::Fenced)));
    let txn = vec![
        TxnOp::Put {
            key: "x".into(),
            value: b"stale".to_vec(),
        },
        TxnOp::Delete { key: "k".into() },
    ];
    assert!(matches!(
        a.transaction(txn).await,
        Err(StorageError::Fenced)
    ));
    assert!(!lock_a.renew(t1).await.unwrap());
    assert_eq!(
        base.get("k").await.unwrap().as_deref(),
        Some(&b"from-b"[..])
    );
    assert_eq!(base.get("x").await.unwrap(), None);

    // B steps down: A may lead again, with yet another token; B's writes stop
    lock_b.release(t2).await.unwrap();
    let t3 = lock_a.try_acquire().await.unwrap().expect("released");
    assert!(t3 > t2);
    fa.set(t3);
    a.put("k", b"a-again").await.unwrap();
    assert!(matches!(
        b.put("k", b"b-stale").await,
        Err(StorageError::Fenced)
    ));
    // an unrenewed lease also stops its own leader's writes once it runs out
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(matches!(
        a.put("k", b"expired").await,
        Err(StorageError::Fenced)
    ));
    assert_eq!(
        base.get("k").await.unwrap().as_deref(),
        Some(&b"a-again"[..])
    );
    base.drop_table().await.unwrap();
}

/// Two nodes contend for the lead for a few seconds with a short lease,
/// each writing as fast as it can with the token it believes in; n1 never
/// renews, so it keeps writing after it was deposed. Checked: no write that
/// began after a larger token had been handed out was acknowledged (a write
/// that began earlier may commit: it was the leader's when it ran), every
/// acknowledged write reads back, and the lead changed hands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contending_nodes_never_interleave_stale_writes() {
    use std::time::Instant;
    let Some(base) = backend().await else { return };
    let base = Arc::new(base);
    let ttl = Duration::from_secs(1);
    // (token, when its acquisition returned)
    let acquired = Arc::new(std::sync::Mutex::new(Vec::<(i64, Instant)>::new()));
    // (token, when the write began, key) of acknowledged writes
    let acked = Arc::new(std::sync::Mutex::new(Vec::<(i64, Instant, String)>::new()));
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seq = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for node in ["n1", "n2"] {
        let (base, acquired, acked, refused, seq) = (
            base.clone(),
            acquired.clone(),
            acked.clone(),
            refused.clone(),
            seq.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let fence = Fence::new();
            let store = base.fenced(fence.clone());
            let lock = base.ha_lock(node, node, ttl).unwrap();
            let end = Instant::now() + Duration::from_secs(4);
            let mut held = 0i64;
            let mut since = Instant::now();
            while Instant::now() < end {
                if held == 0 {
                    if let Some(t) = lock.try_acquire().await.unwrap() {
                        acquired.lock().unwrap().push((t, Instant::now()));
                        held = t;
                        since = Instant::now();
                        fence.set(t);
                    }
                } else if node == "n1" {
                    // n1 never renews: its lease runs out while it still
                    // believes it leads and keeps writing with its token;
                    // after 2 s it notices and tries to lead again
                    if since.elapsed() > Duration::from_secs(2) {
                        held = 0;
                    }
                } else if since.elapsed() > Duration::from_millis(1500) {
                    // n2 steps down after 1.5 s, so the lead changes hands
                    lock.release(held).await.unwrap();
                    held = 0;
                } else if !lock.renew(held).await.unwrap() {
                    held = 0;
                }
                let key = format!(
                    "w/{}",
                    seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                );
                let token = fence.get();
                let began = Instant::now();
                match store.put(&key, token.to_string().as_bytes()).await {
                    Ok(()) => acked.lock().unwrap().push((token, began, key)),
                    Err(StorageError::Fenced) => {
                        refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Err(e) => panic!("{e}"),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let acquired = acquired.lock().unwrap().clone();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 20, "{} acknowledged writes", acked.len());
    assert!(
        refused.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the deposed node's writes were refused"
    );
    for (token, began, key) in &acked {
        if let Some((newer, at)) = acquired.iter().find(|(t, at)| t > token && at < began) {
            panic!(
                "{key}: written with token {token} after token {newer} was handed out ({:?} earlier)",
                *began - *at
            );
        }
        let stored = base.get(key).await.unwrap().unwrap();
        assert_eq!(stored, token.to_string().as_bytes());
    }
    let tokens: std::collections::BTreeSet<i64> = acked.iter().map(|(t, _, _)| *t).collect();
    assert!(tokens.len() >= 2, "leadership changed hands: {tokens:?}");
    base.drop_table().await.unwrap();
}

async fn next(c: &mut palisade_storage::ha::Changes) -> palisade_storage::ha::Change {
    tokio::time::timeout(Duration::from_secs(10), c.next())
        .await
        .expect("a change within 10 s")
}

/// Committed fenced writes are announced to every listener, with their keys;
/// a rolled-back (fenced) write is not; a listener whose connection
/// PostgreSQL ends says Resync and listens again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_writes_are_announced_and_a_lost_listener_resyncs() {
    use palisade_storage::ha::Change;
    let Some(base) = backend().await else { return };
    let fence = Fence::new();
    let active = base.fenced(fence.clone());
    let lock = base
        .ha_lock("node-a", "https://a:8200", Duration::from_secs(5))
        .unwrap();
    fence.set(lock.try_acquire().await.unwrap().unwrap());
    let mut changes = base.changes().await.unwrap();
    active.put("sys/policy/a", b"1").await.unwrap();
    assert_eq!(
        next(&mut changes).await,
        Change::Keys(vec!["sys/policy/a".into()])
    );
    active
        .transaction(vec![
            TxnOp::Put {
                key: "x/1".into(),
                value: b"1".to_vec(),
            },
            TxnOp::Delete { key: "x/2".into() },
        ])
        .await
        .unwrap();
    assert_eq!(
        next(&mut changes).await,
        Change::Keys(vec!["x/1".into(), "x/2".into()])
    );
    // a refused write announces nothing: the next change is the next committed one
    let stale = base.fenced(Fence::new());
    assert!(matches!(
        stale.put("y", b"no").await,
        Err(StorageError::Fenced)
    ));
    active.delete("sys/policy/a").await.unwrap();
    assert_eq!(
        next(&mut changes).await,
        Change::Keys(vec!["sys/policy/a".into()])
    );
    // too many keys to name: resync
    let many: Vec<TxnOp> = (0..400)
        .map(|i| TxnOp::Put {
            key: format!("bulk/{i:04}/{}", "k".repeat(20)),
            value: b"v".to_vec(),
        })
        .collect();
    active.transaction(many).await.unwrap();
    assert_eq!(next(&mut changes).await, Change::Resync);
    // PostgreSQL ends the listening connection: Resync, then announcements again
    let url = std::env::var("PALISADE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    let n: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE query LIKE 'LISTEN%' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()",
    )
    .bind(base.table_name())
    .fetch_one(&admin)
    .await
    .unwrap();
    assert!(n >= 1, "a listening connection was ended");
    assert_eq!(next(&mut changes).await, Change::Resync);
    active.put("after", b"1").await.unwrap();
    assert_eq!(next(&mut changes).await, Change::Keys(vec!["after".into()]));
    base.drop_table().await.unwrap();
}

/// The longest table name allowed still gets its own leadership table and
/// notification channel (PostgreSQL truncates identifiers at 63 bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_table_name_keeps_its_ha_table_and_channel_apart() {
    use palisade_storage::ha::Change;
    let url = std::env::var("PALISADE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let mut table = format!("ha_{}", palisade_core::uuid_v4().replace('-', "_"));
    while table.len() < palisade_storage::postgres::MAX_TABLE_LEN {
        table.push('x');
    }
    let base = match PostgresBackend::connect(&url, &table).await {
        Ok(b) => b,
        Err(e) => {
            if std::env::var("PALISADE_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("PostgreSQL required but unavailable: {e}");
            }
            eprintln!("SKIPPED: PostgreSQL unavailable ({e})");
            return;
        }
    };
    let fence = Fence::new();
    let lock = base.ha_lock("n", "n", Duration::from_secs(5)).unwrap();
    fence.set(lock.try_acquire().await.unwrap().unwrap());
    let mut changes = base.changes().await.unwrap();
    base.fenced(fence).put("k", b"v").await.unwrap();
    assert_eq!(next(&mut changes).await, Change::Keys(vec!["k".into()]));
    assert_eq!(base.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    base.drop_table().await.unwrap();
}

/// Two electors on one table: exactly one leads; when the leader crashes
/// (no release) the other leads within two lease TTLs; when it steps down
/// (release) the other leads within one interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn electors_fail_over_within_two_lease_ttls() {
    use palisade_storage::ha::{Elector, Role};
    let Some(base) = backend().await else { return };
    let ttl = Duration::from_secs(1);
    let interval = Duration::from_millis(300);
    let (fa, fb) = (Fence::new(), Fence::new());
    let a = Elector::spawn(base.ha_lock("a", "a", ttl).unwrap(), fa.clone(), interval);
    let mut ra = a.role();
    tokio::time::timeout(
        Duration::from_secs(5),
        ra.wait_for(|r| matches!(r, Role::Active(_))),
    )
    .await
    .expect("the first elector leads")
    .unwrap();
    let b = Elector::spawn(base.ha_lock("b", "b", ttl).unwrap(), fb.clone(), interval);
    let mut rb = b.role();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(*rb.borrow(), Role::Standby, "a live leader keeps the lead");
    assert!(fa.get() > 0 && fb.get() == 0);
    base.fenced(fa.clone()).put("k", b"a").await.unwrap();

    // A crashes: B leads within 2 x TTL
    let t0 = std::time::Instant::now();
    a.abort();
    tokio::time::timeout(2 * ttl, rb.wait_for(|r| matches!(r, Role::Active(_))))
        .await
        .expect("failover within 2 x TTL")
        .unwrap();
    let failover = t0.elapsed();
    assert!(fb.get() > fa.get());
    // the crashed node's token writes nothing any more
    assert!(matches!(
        base.fenced(fa.clone()).put("k", b"stale").await,
        Err(StorageError::Fenced)
    ));
    base.fenced(fb.clone()).put("k", b"b").await.unwrap();

    // B steps down: a new elector leads within about one interval
    let c = Elector::spawn(base.ha_lock("c", "c", ttl).unwrap(), Fence::new(), interval);
    let mut rc = c.role();
    let t1 = std::time::Instant::now();
    b.stop().await;
    assert_eq!(fb.get(), 0, "a node that stepped down writes nothing");
    tokio::time::timeout(
        Duration::from_secs(2),
        rc.wait_for(|r| matches!(r, Role::Active(_))),
    )
    .await
    .expect("a released lease is taken at once")
    .unwrap();
    assert!(
        t1.elapsed() < ttl,
        "released, not expired: {:?}",
        t1.elapsed()
    );
    eprintln!("failover after a crash: {failover:?}");
    c.stop().await;
    assert_eq!(base.get("k").await.unwrap().as_deref(), Some(&b"b"[..]));
    base.drop_table().await.unwrap();
}
