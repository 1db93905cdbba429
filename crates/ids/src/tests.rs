use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// An engine on a clock the test moves.
fn manual(redis: Option<RedisStore>) -> (Ids, Arc<AtomicU64>) {
    let t = Arc::new(AtomicU64::new(1_000_000));
    let c = t.clone();
    (
        Ids::with_clock(redis, Arc::new(move || c.load(Ordering::Relaxed))),
        t,
    )
}

/// The last ban an event made (the shared one when both stores banned).
trait ObserveOne {
    async fn observe_one(&self, p: &Policy, s: Subject, e: Event) -> Option<NewBan>;
}

impl ObserveOne for Ids {
    async fn observe_one(&self, p: &Policy, s: Subject, e: Event) -> Option<NewBan> {
        self.observe(p, s, e).await.pop()
    }
}

fn policy() -> Policy {
    Policy {
        ban: Duration::from_secs(10),
        max_ban: Duration::from_secs(35),
        ..Policy::default()
    }
}

#[test]
fn subjects_are_canonical_and_named_with_their_kind() {
    assert_eq!(Subject::addr(ip("192.0.2.7")).to_string(), "ip:192.0.2.7");
    // IPv4-mapped is the IPv4 address
    assert_eq!(
        Subject::addr(ip("::ffff:192.0.2.7")),
        Subject::addr(ip("192.0.2.7"))
    );
    // IPv6 is its /64
    assert_eq!(
        Subject::addr(ip("2001:db8:1:2:aaaa::1")).to_string(),
        "ip:2001:db8:1:2::/64"
    );
    assert_eq!(
        Subject::addr(ip("2001:db8:1:2:aaaa::1")),
        Subject::addr(ip("2001:db8:1:2:ffff::9"))
    );
    assert_ne!(
        Subject::addr(ip("2001:db8:1:2::1")),
        Subject::addr(ip("2001:db8:1:3::1"))
    );
    for s in [
        "ip:192.0.2.7",
        "ip:2001:db8:1:2::/64",
        "principal:jwt:idp/alice",
    ] {
        assert_eq!(Subject::parse(s).unwrap().to_string(), s);
    }
    assert_eq!(
        Subject::parse("ip:2001:db8:1:2::5").unwrap().to_string(),
        "ip:2001:db8:1:2::/64"
    );
    for bad in [
        "192.0.2.7",
        "ip:192.0.2.7/24",
        "ip:2001:db8::/48",
        "ip:300.1.1.1",
        "ip:",
        "principal:",
        "principal:a\nb",
        "user:alice",
        "",
    ] {
        assert_eq!(Subject::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn policies_out_of_range_are_refused() {
    assert!(Policy::default().validate().is_ok());
    let bad = [
        Policy {
            threshold: 0,
            ..Policy::default()
        },
        Policy {
            window: Duration::from_secs(2 * 24 * 3600),
            ..Policy::default()
        },
        Policy {
            ban: Duration::from_secs(10),
            max_ban: Duration::from_secs(5),
            ..Policy::default()
        },
        Policy {
            strike_memory: Duration::from_millis(10),
            ..Policy::default()
        },
    ];
    for p in bad {
        assert!(p.validate().is_err(), "{p:?}");
    }
    let mut w = Policy::default();
    w.weights.set(Event::Inspection, MAX_SCORE + 1);
    assert_eq!(
        w.validate().unwrap_err(),
        "weights.inspection must be at most 1000000"
    );
}

#[tokio::test]
async fn a_score_at_the_threshold_bans_and_the_ban_ends() {
    let (ids, t) = manual(None);
    let p = policy();
    let a = ip("198.51.100.9");
    // nine failed logins (90 points) pass; the tenth bans
    for i in 0..9 {
        assert_eq!(
            ids.observe_one(&p, Subject::addr(a), Event::AuthenticationFailure)
                .await,
            None,
            "event {i}"
        );
        assert_eq!(ids.check_addr(&p, a), Verdict::Clear);
    }
    let ban = ids
        .observe_one(&p, Subject::addr(a), Event::AuthenticationFailure)
        .await
        .unwrap();
    assert_eq!(ban.duration, Duration::from_secs(10));
    assert_eq!(ban.strikes, 1);
    assert!(!ban.shared);
    assert_eq!(
        ids.check_addr(&p, a),
        Verdict::Banned {
            remaining: Duration::from_secs(10),
            enforced: true
        }
    );
    // another address is not touched
    assert_eq!(ids.check_addr(&p, ip("198.51.100.10")), Verdict::Clear);
    // events while banned change nothing
    assert_eq!(
        ids.observe_one(&p, Subject::addr(a), Event::Inspection)
            .await,
        None
    );
    // detect mode: the same ban, not enforced
    let detect = Policy {
        enforce: false,
        ..policy()
    };
    assert!(matches!(
        ids.check_addr(&detect, a),
        Verdict::Banned {
            enforced: false,
            ..
        }
    ));
    t.fetch_add(9_999, Ordering::Relaxed);
    assert!(matches!(ids.check_addr(&p, a), Verdict::Banned { .. }));
    t.fetch_add(1, Ordering::Relaxed);
    assert_eq!(ids.check_addr(&p, a), Verdict::Clear);
    ids.sync().await.unwrap();
    assert!(ids.list().is_empty());
}

#[tokio::test]
async fn repeat_offenders_are_banned_longer_up_to_the_cap() {
    let (ids, t) = manual(None);
    let p = policy();
    let s = Subject::principal("apikey:scanner");
    let mut lengths = Vec::new();
    for _ in 0..4 {
        let ban = loop {
            if let Some(b) = ids.observe_one(&p, s.clone(), Event::Inspection).await {
                break b;
            }
        };
        lengths.push(ban.duration.as_secs());
        assert_eq!(
            ids.check_principal(&p, "apikey:scanner"),
            Verdict::Banned {
                remaining: ban.duration,
                enforced: true
            }
        );
        t.fetch_add(ban.duration.as_millis() as u64, Ordering::Relaxed);
        assert_eq!(ids.check_principal(&p, "apikey:scanner"), Verdict::Clear);
    }
    assert_eq!(lengths, [10, 20, 35, 35]);
    // strikes are forgotten after strike_memory without a ban
    t.fetch_add(p.strike_memory.as_millis() as u64, Ordering::Relaxed);
    let ban = loop {
        if let Some(b) = ids.observe_one(&p, s.clone(), Event::Inspection).await {
            break b;
        }
    };
    assert_eq!((ban.strikes, ban.duration.as_secs()), (1, 10));
}

#[tokio::test]
async fn the_allow_list_always_wins_and_the_deny_list_refuses() {
    let (ids, _) = manual(None);
    let p = Policy {
        allow: vec![Cidr::parse("10.0.0.0/8").unwrap()],
        deny: vec![Cidr::parse("203.0.113.0/24").unwrap()],
        ..policy()
    };
    let ok = ip("10.1.2.3");
    for _ in 0..100 {
        assert_eq!(
            ids.observe_one(&p, Subject::addr(ok), Event::Inspection)
                .await,
            None
        );
    }
    assert_eq!(ids.check_addr(&p, ok), Verdict::Clear);
    assert_eq!(
        ids.ban(&p, Subject::addr(ok), Duration::from_secs(60), "test")
            .await
            .unwrap_err(),
        IdsError::AllowListed("ip:10.1.2.3".into())
    );
    // a ban made before the address was allow-listed does not apply either
    let open = policy();
    ids.ban(&open, Subject::addr(ok), Duration::from_secs(60), "before")
        .await
        .unwrap();
    assert!(matches!(ids.check_addr(&open, ok), Verdict::Banned { .. }));
    assert_eq!(ids.check_addr(&p, ok), Verdict::Clear);
    assert_eq!(ids.check_addr(&p, ip("203.0.113.77")), Verdict::Denied);
    assert_eq!(ids.check_addr(&p, ip("203.0.114.77")), Verdict::Clear);
    // the allow list beats the deny list
    let both = Policy {
        allow: vec![Cidr::parse("203.0.113.77").unwrap()],
        ..p.clone()
    };
    assert_eq!(ids.check_addr(&both, ip("203.0.113.77")), Verdict::Clear);
}

#[tokio::test]
async fn manual_bans_are_listed_and_lifted() {
    let (ids, t) = manual(None);
    let p = policy();
    let s = Subject::parse("ip:2001:db8:7::1").unwrap();
    assert_eq!(
        ids.ban(&p, s.clone(), Duration::from_millis(10), "x")
            .await
            .unwrap_err(),
        IdsError::Duration
    );
    let b = ids
        .ban(&p, s.clone(), Duration::from_secs(600), "abuse report 42")
        .await
        .unwrap();
    assert_eq!(b.reason, "manual: abuse report 42");
    // any address of the /64
    assert!(matches!(
        ids.check_addr(&p, ip("2001:db8:7::ffff")),
        Verdict::Banned { .. }
    ));
    t.fetch_add(1_000, Ordering::Relaxed);
    let listed = ids.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].subject, s);
    assert_eq!(listed[0].remaining, Duration::from_secs(599));
    assert!(ids.unban(&s).await.unwrap());
    assert!(!ids.unban(&s).await.unwrap());
    assert_eq!(ids.check_addr(&p, ip("2001:db8:7::1")), Verdict::Clear);
    assert!(ids.list().is_empty());
}

#[tokio::test]
async fn zero_weights_never_count() {
    let (ids, _) = manual(None);
    let mut p = policy();
    p.weights.set(Event::NotFound, 0);
    for _ in 0..1_000 {
        assert_eq!(
            ids.observe_one(&p, Subject::addr(ip("192.0.2.1")), Event::NotFound)
                .await,
            None
        );
    }
}

// ---- Redis (the one at 127.0.0.1:6379, or PALISADE_TEST_REDIS_URL) ----

async fn redis(test: &str) -> Option<RedisStore> {
    let url = std::env::var("PALISADE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
    let store = RedisStore::open(&url, Duration::from_secs(2)).ok()?;
    match store.ping().await {
        Ok(()) => Some(store),
        Err(err) if std::env::var("PALISADE_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("{test}: Redis required (PALISADE_REQUIRE_SERVICES=1) but unreachable: {err}")
        }
        Err(err) => {
            println!("SKIPPED {test}: Redis unreachable ({err}); set PALISADE_TEST_REDIS_URL");
            None
        }
    }
}

/// A principal no other test (or run) uses.
fn unique(test: &str) -> Subject {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    Subject::principal(&format!("test:{}:{nanos}:{test}", std::process::id()))
}

/// The Lua and the Rust, fed the same events at the same instants, keep
/// the same score and ban at the same event with the same length.
#[tokio::test]
async fn lua_scores_exactly_as_the_rust() {
    let Some(r) = redis("lua_scores_exactly_as_the_rust").await else {
        return;
    };
    let s = unique("lua");
    let sc = Scoring {
        window_ms: 60_000,
        threshold: 100,
        ban_ms: 1_000,
        max_ban_ms: 3_000,
        memory_ms: 600_000,
    };
    let base = 1_760_000_040_000u64; // epoch ms, as TIME gives
    let mut w = window::Window::default();
    let mut strikes = 0;
    let steps: [(u64, u64); 12] = [
        (0, 30),
        (1, 30),
        (59_000, 20),
        (60_500, 15),
        (61_000, 10),
        (200_000, 99),
        (200_001, 1),
        (203_000, 50),
        (263_000, 40),
        (263_001, 20),
        (400_000, 100),
        (500_000, 100),
    ];
    for (off, weight) in steps {
        let now = base + off;
        let (n, tipped) = w.add(now, sc.window_ms, weight, sc.threshold);
        let expected = if tipped {
            strikes += 1;
            w = window::Window::default();
            redis_store::Observed::Banned {
                duration: Duration::from_millis(window::ban_ms(sc.ban_ms, sc.max_ban_ms, strikes)),
                strikes,
            }
        } else {
            w = n;
            redis_store::Observed::Counted
        };
        let got = r
            .observe_at(&s, weight, Event::Inspection, &sc, Some(now))
            .await
            .unwrap();
        assert_eq!(got, expected, "at +{off} ms, weight {weight}");
    }
    // the injected clock also ends each ban before the next step
    assert_eq!(strikes, 4, "the sequence bans four times");
    r.unban(&s).await.unwrap();
}

#[tokio::test]
async fn two_gateways_on_one_redis_agree() {
    let Some(r) = redis("two_gateways_on_one_redis_agree").await else {
        return;
    };
    let a = Ids::shared(r.clone());
    let b = Ids::shared(r);
    let p = Policy {
        ban: Duration::from_secs(2),
        max_ban: Duration::from_secs(4),
        ..Policy::default()
    };
    let s = unique("agree");
    let Subject::Principal(label) = &s else {
        unreachable!()
    };
    // both gateways feed one score: five inspection hits (20 each) ban,
    // wherever they land
    for i in 0..4 {
        let g = if i % 2 == 0 { &a } else { &b };
        assert_eq!(g.observe_one(&p, s.clone(), Event::Inspection).await, None);
    }
    let ban = b
        .observe_one(&p, s.clone(), Event::Inspection)
        .await
        .expect("the fifth hit bans");
    assert_eq!((ban.strikes, ban.duration, ban.shared), (1, p.ban, true));
    assert!(matches!(
        b.check_principal(&p, label),
        Verdict::Banned { .. }
    ));
    // a learns of it at its next sync
    assert_eq!(a.check_principal(&p, label), Verdict::Clear);
    a.sync().await.unwrap();
    let Verdict::Banned { remaining, .. } = a.check_principal(&p, label) else {
        panic!("a does not enforce b's ban");
    };
    assert!(remaining <= p.ban && remaining > Duration::from_millis(1_000));
    let listed = a.list();
    let mine = listed.iter().find(|x| x.subject == s).unwrap();
    assert_eq!((mine.strikes, mine.reason.as_str()), (1, "inspection"));
    assert!(mine.shared);
    // more events while banned: no new ban, no strike
    assert_eq!(a.observe_one(&p, s.clone(), Event::Inspection).await, None);
    // the ban ends on its own, for both
    tokio::time::sleep(remaining + Duration::from_millis(50)).await;
    a.sync().await.unwrap();
    b.sync().await.unwrap();
    assert_eq!(a.check_principal(&p, label), Verdict::Clear);
    assert_eq!(b.check_principal(&p, label), Verdict::Clear);
    // the second offence is banned twice as long
    // (a's own shadow score bans locally first: it had seen two of the
    // first five events; the shared ban comes when Redis's score tips)
    let ban = loop {
        if let Some(x) = a.observe_one(&p, s.clone(), Event::Inspection).await
            && x.shared
        {
            break x;
        }
    };
    assert_eq!((ban.strikes, ban.duration), (2, Duration::from_secs(4)));
    // a manual unban on b lifts it everywhere and forgets the strikes
    assert!(b.unban(&s).await.unwrap());
    a.sync().await.unwrap();
    assert_eq!(a.check_principal(&p, label), Verdict::Clear);
    let ban = loop {
        if let Some(x) = b.observe_one(&p, s.clone(), Event::Inspection).await
            && x.shared
        {
            break x;
        }
    };
    assert_eq!(ban.strikes, 1);
    b.unban(&s).await.unwrap();
}

#[tokio::test]
async fn manual_bans_are_shared() {
    let Some(r) = redis("manual_bans_are_shared").await else {
        return;
    };
    let a = Ids::shared(r.clone());
    let b = Ids::shared(r);
    let p = Policy::default();
    let s = unique("manual");
    let ban = a
        .ban(&p, s.clone(), Duration::from_secs(60), "incident 7")
        .await
        .unwrap();
    assert!(ban.shared);
    b.sync().await.unwrap();
    let got = b.list().into_iter().find(|x| x.subject == s).unwrap();
    assert_eq!(got.reason, "manual: incident 7");
    assert_eq!(got.strikes, 0);
    assert!(b.unban(&s).await.unwrap());
    a.sync().await.unwrap();
    assert!(a.list().iter().all(|x| x.subject != s));
}

/// Redis down: events are scored and banned in this process (counted as
/// fallbacks); an operator can still ban and lift, here only.
#[tokio::test]
async fn with_redis_down_scoring_goes_on_locally() {
    let down = RedisStore::open("redis://127.0.0.1:1", Duration::from_millis(300)).unwrap();
    let (ids, _) = manual(Some(down));
    let p = policy();
    let a = ip("192.0.2.200");
    let before = fallbacks();
    let mut ban = None;
    for _ in 0..5 {
        ban = ids
            .observe_one(&p, Subject::addr(a), Event::Inspection)
            .await;
    }
    let ban = ban.expect("five hits ban locally");
    assert!(!ban.shared);
    assert!(fallbacks() >= before + 5);
    assert!(matches!(ids.check_addr(&p, a), Verdict::Banned { .. }));
    // an operator can still ban (here only) and lift
    let other = ip("192.0.2.201");
    let b = ids
        .ban(&p, Subject::addr(other), Duration::from_secs(5), "x")
        .await
        .unwrap();
    assert!(!b.shared);
    assert!(matches!(ids.check_addr(&p, other), Verdict::Banned { .. }));
    assert!(matches!(
        ids.unban(&Subject::addr(other)).await,
        Err(IdsError::Store(_))
    ));
    assert_eq!(
        ids.check_addr(&p, other),
        Verdict::Clear,
        "lifted here all the same"
    );
    assert!(ids.sync().await.is_err());
    // the local ban survives a failed sync
    assert!(matches!(ids.check_addr(&p, a), Verdict::Banned { .. }));
}

/// A ban in force is never evicted to make room: flooding the table with
/// new bans cannot lift an attacker's own. Past the cap new bans are
/// refused until ended ones make room.
#[tokio::test]
async fn a_full_ban_table_never_lifts_a_ban_in_force() {
    let (ids, t) = manual(None);
    let p = policy();
    let attacker = Subject::addr(ip("198.51.100.66"));
    ids.ban(&p, attacker.clone(), Duration::from_secs(3600), "x")
        .await
        .unwrap();
    for i in 0..MAX_BANS as u32 - 1 {
        let s = Subject::principal(&format!("filler-{i}"));
        ids.ban(&p, s, Duration::from_secs(1), "").await.unwrap();
    }
    let one_more = Subject::principal("one-more");
    assert_eq!(
        ids.ban(&p, one_more.clone(), Duration::from_secs(60), "")
            .await
            .unwrap_err(),
        IdsError::Full
    );
    assert!(matches!(
        ids.check_addr(&p, ip("198.51.100.66")),
        Verdict::Banned { .. }
    ));
    // once the fillers end there is room again, and the attacker is still banned
    t.fetch_add(2_000, Ordering::Relaxed);
    ids.ban(&p, one_more, Duration::from_secs(60), "")
        .await
        .unwrap();
    assert!(matches!(
        ids.check_addr(&p, ip("198.51.100.66")),
        Verdict::Banned { .. }
    ));
    assert_eq!(ids.list().len(), 2);
}

/// Any label round-trips through its subject's name, and the name holds no
/// control character or escape sequence; long labels stay distinct.
#[test]
fn principal_labels_of_any_bytes_round_trip_and_print_safely() {
    for label in [
        "evil\nsub",
        "mallory\u{1b}[2J\u{1b}[1;31mALL CLEAR\u{1b}[0m\nfake line",
        "100% sure",
        "jwt:https://id.example|ünïcödé",
        "a\u{202e}b",
    ] {
        let s = Subject::principal(label);
        let name = s.to_string();
        assert!(name.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{name:?}");
        assert_eq!(Subject::parse(&name), Some(s), "{label:?}");
    }
    assert_eq!(
        Subject::principal("evil\nsub").to_string(),
        "principal:evil%0Asub"
    );
    // only the canonical spelling parses
    assert_eq!(Subject::parse("principal:a%41"), None);
    assert_eq!(Subject::parse("principal:a b"), None);
    let long_a = format!("{}a", "x".repeat(5000));
    let long_b = format!("{}b", "x".repeat(5000));
    let (a, b) = (Subject::principal(&long_a), Subject::principal(&long_b));
    assert_ne!(a, b);
    assert!(a.to_string().len() < 4 * MAX_LABEL_BYTES);
    assert_eq!(Subject::parse(&a.to_string()), Some(a));
}

/// A capped sync keeps the longest bans (manual ones, repeat offenders at
/// the cap), not the soonest to end.
#[tokio::test]
async fn a_capped_ban_list_keeps_the_longest_bans() {
    let Some(r) = redis("a_capped_ban_list_keeps_the_longest_bans").await else {
        return;
    };
    let ids = Ids::shared(r.clone());
    let p = Policy::default();
    let year = unique("year");
    let almost = unique("almost");
    let short = unique("short");
    for (s, d) in [
        (&year, MAX_DURATION),
        (&almost, MAX_DURATION - Duration::from_secs(60)),
        (&short, Duration::from_secs(10)),
    ] {
        ids.ban(&p, s.clone(), d, "cap").await.unwrap();
    }
    let listed: Vec<Subject> = r
        .list_at_most(2)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.subject)
        .collect();
    assert_eq!(listed, [year.clone(), almost.clone()]);
    for s in [&year, &almost, &short] {
        ids.unban(s).await.unwrap();
    }
}

/// A store that does not answer is waited for once, then not again for a
/// second: events are scored locally at once meanwhile.
#[tokio::test]
async fn a_hung_store_is_not_waited_for_on_every_event() {
    // accepts connections (the backlog) and never answers
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", hung.local_addr().unwrap());
    let r = RedisStore::open(&url, Duration::from_millis(800)).unwrap();
    let (ids, _) = manual(Some(r));
    let p = policy();
    let s = Subject::addr(ip("192.0.2.230"));
    let started = std::time::Instant::now();
    assert_eq!(ids.observe_shared(&p, &s, Event::NotFound).await, None);
    assert!(started.elapsed() >= Duration::from_millis(800));
    let again = std::time::Instant::now();
    for _ in 0..20 {
        assert_eq!(ids.observe_shared(&p, &s, Event::NotFound).await, None);
    }
    assert!(
        again.elapsed() < Duration::from_millis(400),
        "{:?}",
        again.elapsed()
    );
    // the local shadow score still bans
    let mut banned = false;
    for _ in 0..60 {
        banned |= ids.observe_local(&p, &s, Event::NotFound).is_some();
    }
    assert!(banned);
    drop(hung);
}
