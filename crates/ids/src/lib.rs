//! Intrusion detection and prevention for the Palisade gateway.
//!
//! The gateway reports what went wrong with a request as an [`Event`]
//! (an authentication failure, an inspection hit, a 404, a rate-limit hit,
//! a malformed request, a denied authorization) against a [`Subject`]: the
//! client's address, and the principal once one is authenticated. Each
//! event adds its weight to the subject's anomaly score over a sliding
//! window ([`window`]); a score that reaches the threshold bans the subject
//! for `ban × 2^(strikes − 1)`, capped at `max_ban`, where strikes are the
//! bans it had within `strike_memory` (fail2ban's `bantime.increment`).
//!
//! Bans are checked on every connection and request from a local map, so a
//! check never waits for the network. With a Redis store, scores and bans
//! live in Redis (one atomic Lua script per event, Redis's clock), and every
//! gateway copies the ban list into its map every `sync_interval`: a ban made
//! by one gateway is enforced by all of them within that interval, and by the
//! one that made it at once. When Redis cannot be reached, scoring and bans
//! go on locally (the rate limiter's local fallback) and the next sync
//! resumes sharing.
//!
//! The allow list always wins: an allow-listed address is never scored,
//! never banned, and a manual ban of it is refused. The deny list refuses
//! its addresses outright.
//!
//! This crate decides; it does not read requests or write responses.

mod redis_store;
pub mod window;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use palisade_core::net::Cidr;
pub use redis_store::{MAX_IN_FLIGHT, NAMESPACE, RedisStore, StoreError, fallbacks};

use window::Window;

/// Most bans kept in a gateway's map; past it expired ones are dropped
/// first, and a new one replaces the ban that ends soonest.
pub const MAX_BANS: usize = 100_000;
/// Most subjects scored locally at once (see [`Ids::observe`]).
pub const MAX_SCORED: usize = 100_000;
/// Longest window, ban or strike memory: one year. Keeps every sum the
/// Lua script makes (epoch milliseconds, weights times windows) well
/// below 2^53, where Lua's numbers are exact.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);
/// Longest scoring window: one day (see [`MAX_DURATION`]).
pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Largest threshold or weight.
pub const MAX_SCORE: u32 = 1_000_000;

/// Who an event is held against, in canonical form: an IPv4 address, an
/// IPv6 address's /64 (one host usually holds a whole /64, so scoring
/// single IPv6 addresses would let it rotate through them), or an
/// authenticated principal's label.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    Addr(IpAddr),
    Principal(Arc<str>),
}

impl Subject {
    /// The subject of a client address (IPv4-mapped IPv6 is the IPv4
    /// address; other IPv6 addresses are their /64).
    pub fn addr(ip: IpAddr) -> Subject {
        Subject::Addr(canonical_addr(ip))
    }

    /// The subject of a principal's label; a label over
    /// [`MAX_LABEL_BYTES`] is kept as its first bytes and a hash of the
    /// whole.
    pub fn principal(label: &str) -> Subject {
        if label.len() <= MAX_LABEL_BYTES {
            return Subject::Principal(Arc::from(label));
        }
        let mut end = MAX_LABEL_BYTES - 40;
        while !label.is_char_boundary(end) {
            end -= 1;
        }
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        label.hash(&mut h);
        Subject::Principal(Arc::from(format!("{}…#{:016x}", &label[..end], h.finish())))
    }

    /// Parse `ip:<address>` (an IPv6 `/64` may be written with its prefix
    /// length) or `principal:<label>`. Anything else is `None`: a subject is
    /// always named with its kind, so a principal called `10.0.0.1` and the
    /// address are never confused.
    pub fn parse(s: &str) -> Option<Subject> {
        if let Some(rest) = s.strip_prefix("ip:") {
            let (addr, bits) = match rest.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (rest, None),
            };
            let ip: IpAddr = addr.parse().ok()?;
            let canonical = canonical_addr(ip);
            let expected = match canonical {
                IpAddr::V4(_) => "32",
                IpAddr::V6(_) => "64",
            };
            if bits.is_some_and(|b| b != expected) {
                return None;
            }
            return Some(Subject::Addr(canonical));
        }
        let encoded = s.strip_prefix("principal:")?;
        if encoded.is_empty() || encoded.len() > MAX_LABEL_BYTES * 3 {
            return None;
        }
        let label = decode_label(encoded)?;
        // only the canonical spelling names the subject
        (encode_label(&label) == encoded).then(|| Subject::principal(&label))
    }
}

/// Longest principal label a subject keeps whole (longer ones are named
/// by their first bytes and a hash of the whole, so they stay distinct).
pub const MAX_LABEL_BYTES: usize = 1024;

/// A label as it is written in a subject's name: bytes outside printable
/// ASCII, `%` and space as `%XX`, so every label round-trips through
/// [`Subject::parse`] and no name carries a control character, a line
/// break or an escape sequence into Redis, the log or a terminal.
fn encode_label(label: &str) -> String {
    let mut out = String::with_capacity(label.len());
    for b in label.bytes() {
        if (0x21..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode_label(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl fmt::Display for Subject {
    /// What [`Subject::parse`] reads: `ip:192.0.2.1`, `ip:2001:db8::/64`,
    /// `principal:alice`. Also the subject's name in Redis.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Addr(IpAddr::V4(a)) => write!(f, "ip:{a}"),
            Subject::Addr(IpAddr::V6(a)) => write!(f, "ip:{a}/64"),
            Subject::Principal(p) => write!(f, "principal:{}", encode_label(p)),
        }
    }
}

fn canonical_addr(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let net = u128::from(v6) & (u128::MAX << 64);
            IpAddr::V6(Ipv6Addr::from(net))
        }
        v4 => v4,
    }
}

/// What a request did that counts against its subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// A presented credential failed (401).
    AuthenticationFailure,
    /// Authorization refused an authenticated principal (403).
    AccessDenied,
    /// A rate limit or the per-client concurrency cap refused it (429).
    RateLimited,
    /// A protocol violation: a bad path, host, header or body (400, 413, 431).
    MalformedRequest,
    /// The inspection step or CRS blocked it as an attack (403).
    Inspection,
    /// No route (404, 405) or the service answered 404: scanning.
    NotFound,
}

impl Event {
    pub const ALL: [Event; 6] = [
        Event::AuthenticationFailure,
        Event::AccessDenied,
        Event::RateLimited,
        Event::MalformedRequest,
        Event::Inspection,
        Event::NotFound,
    ];

    /// The event's name: the security log's `category`, and its key in
    /// `[ids.weights]`.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::AuthenticationFailure => "authentication_failure",
            Event::AccessDenied => "access_denied",
            Event::RateLimited => "rate_limited",
            Event::MalformedRequest => "malformed_request",
            Event::Inspection => "inspection",
            Event::NotFound => "not_found",
        }
    }

    pub fn parse(s: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// What each event adds to a score.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Weights([u32; 6]);

impl Default for Weights {
    /// With the default threshold of 100 in 60 s: ten failed logins, five
    /// blocked attacks, ten malformed requests, twenty denied
    /// authorizations, fifty 404s or a hundred rate-limit refusals in a
    /// minute.
    fn default() -> Self {
        let mut w = Weights([0; 6]);
        w.set(Event::AuthenticationFailure, 10);
        w.set(Event::AccessDenied, 5);
        w.set(Event::RateLimited, 1);
        w.set(Event::MalformedRequest, 10);
        w.set(Event::Inspection, 20);
        w.set(Event::NotFound, 2);
        w
    }
}

impl Weights {
    fn index(e: Event) -> usize {
        Event::ALL.iter().position(|x| *x == e).unwrap_or(0)
    }

    pub fn get(&self, e: Event) -> u32 {
        self.0[Self::index(e)]
    }

    pub fn set(&mut self, e: Event, weight: u32) {
        self.0[Self::index(e)] = weight;
    }
}

/// The rules, from the gateway's `[ids]` section (replaced on reload; the
/// scores and bans of [`Ids`] carry over).
#[derive(Clone, Debug)]
pub struct Policy {
    /// `false` (`mode = "detect"`): bans are made, shared and logged but not
    /// enforced. The deny list is enforced in both modes.
    pub enforce: bool,
    pub window: Duration,
    pub threshold: u32,
    pub weights: Weights,
    /// The first ban's length; each later one within `strike_memory` doubles.
    pub ban: Duration,
    pub max_ban: Duration,
    pub strike_memory: Duration,
    pub allow: Vec<Cidr>,
    pub deny: Vec<Cidr>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            enforce: true,
            window: Duration::from_secs(60),
            threshold: 100,
            weights: Weights::default(),
            ban: Duration::from_secs(300),
            max_ban: Duration::from_secs(24 * 3600),
            strike_memory: Duration::from_secs(24 * 3600),
            allow: Vec::new(),
            deny: Vec::new(),
        }
    }
}

impl Policy {
    /// Check the numbers: every duration between 1 ms (1 s for the window)
    /// and [`MAX_DURATION`], `ban <= max_ban`, threshold and weights at most
    /// [`MAX_SCORE`], threshold at least 1.
    pub fn validate(&self) -> Result<(), String> {
        let in_range = |name: &str, d: Duration, min: Duration| {
            if d < min || d > MAX_DURATION {
                Err(format!("{name} must be between {min:?} and one year"))
            } else {
                Ok(())
            }
        };
        in_range("window_s", self.window, Duration::from_secs(1))?;
        if self.window > MAX_WINDOW {
            return Err("window_s must be at most one day".into());
        }
        in_range("ban_s", self.ban, Duration::from_secs(1))?;
        in_range("max_ban_s", self.max_ban, Duration::from_secs(1))?;
        in_range(
            "strike_memory_s",
            self.strike_memory,
            Duration::from_secs(1),
        )?;
        if self.ban > self.max_ban {
            return Err("ban_s must not exceed max_ban_s".into());
        }
        if self.threshold == 0 || self.threshold > MAX_SCORE {
            return Err(format!("threshold must be between 1 and {MAX_SCORE}"));
        }
        for e in Event::ALL {
            if self.weights.get(e) > MAX_SCORE {
                return Err(format!(
                    "weights.{} must be at most {MAX_SCORE}",
                    e.as_str()
                ));
            }
        }
        Ok(())
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|c| c.contains(ip))
    }

    pub fn denies(&self, ip: IpAddr) -> bool {
        self.deny.iter().any(|c| c.contains(ip))
    }

    /// The length of a subject's `strikes`-th ban (1-based).
    pub fn ban_length(&self, strikes: u32) -> Duration {
        Duration::from_millis(window::ban_ms(
            self.ban.as_millis() as u64,
            self.max_ban.as_millis() as u64,
            strikes,
        ))
    }

    /// The limits the scoring arithmetic runs with, in milliseconds.
    fn scoring(&self) -> Scoring {
        Scoring {
            window_ms: self.window.as_millis() as u64,
            threshold: u64::from(self.threshold),
            ban_ms: self.ban.as_millis() as u64,
            max_ban_ms: self.max_ban.as_millis() as u64,
            memory_ms: self.strike_memory.as_millis() as u64,
        }
    }
}

/// The numbers one scoring step needs, in milliseconds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scoring {
    pub(crate) window_ms: u64,
    pub(crate) threshold: u64,
    pub(crate) ban_ms: u64,
    pub(crate) max_ban_ms: u64,
    pub(crate) memory_ms: u64,
}

/// A ban, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    pub subject: Subject,
    /// Time left.
    pub remaining: Duration,
    /// Bans of this subject within the strike memory, this one included
    /// (0 for a manual ban).
    pub strikes: u32,
    /// The event that tipped the score, or `manual: <text>`.
    pub reason: String,
    /// Held in Redis (seen by every gateway), or only in this process.
    pub shared: bool,
}

/// What a check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Clear,
    /// Banned for `remaining` more; `enforced` is false in detect mode.
    Banned {
        remaining: Duration,
        enforced: bool,
    },
    /// On the deny list.
    Denied,
}

/// Why a manual change was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdsError {
    #[error("{0} is on the allow list and cannot be banned")]
    AllowListed(String),
    #[error("a ban must last between 1 s and one year")]
    Duration,
    #[error("the ban store is unreachable: {0}")]
    Store(String),
    #[error("this gateway already holds {MAX_BANS} bans in force")]
    Full,
}

/// A ban in the map.
#[derive(Clone, Debug)]
struct Entry {
    until_ms: u64,
    strikes: u32,
    reason: Arc<str>,
    shared: bool,
}

#[derive(Default)]
struct Bans {
    map: HashMap<Subject, Entry>,
    /// When ended bans were last dropped to make room.
    purged_ms: u64,
}

impl Bans {
    /// Insert or replace; false when the map is full of live bans (a live
    /// ban is never evicted to make room: an attacker could flood the map
    /// to lift their own). Ended bans are dropped at most once a second
    /// here (the sync does it too), so a full map costs no scan per event.
    fn insert(&mut self, s: Subject, e: Entry, now_ms: u64) -> bool {
        if self.map.len() >= MAX_BANS && !self.map.contains_key(&s) {
            if now_ms.saturating_sub(self.purged_ms) >= 1_000 || self.purged_ms == 0 {
                self.purged_ms = now_ms.max(1);
                self.map.retain(|_, e| e.until_ms > now_ms);
            }
            if self.map.len() >= MAX_BANS {
                return false;
            }
        }
        self.map.insert(s, e);
        true
    }
}

/// Local scores and strikes: what a gateway without Redis (or with Redis
/// down) decides with.
#[derive(Default)]
struct Local {
    scores: HashMap<Subject, Window>,
    /// Strikes and when they are forgotten.
    strikes: HashMap<Subject, (u32, u64)>,
    /// When stale scores were last dropped to make room.
    purged_ms: u64,
}

/// A clock in milliseconds (a test moves its own).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Milliseconds on the monotonic clock since the first call.
pub fn monotonic_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// A new ban, for the caller to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewBan {
    pub subject: Subject,
    pub duration: Duration,
    pub strikes: u32,
    pub event: Event,
    pub shared: bool,
}

/// Scores and bans of one gateway process (kept across reloads).
pub struct Ids {
    bans: RwLock<Bans>,
    /// Entries in `bans`: a check with none costs one atomic load.
    count: AtomicUsize,
    local: Mutex<Local>,
    redis: Option<RedisStore>,
    clock: Clock,
}

impl fmt::Debug for Ids {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ids")
            .field("bans", &self.count.load(Ordering::Relaxed))
            .field("redis", &self.redis.is_some())
            .finish_non_exhaustive()
    }
}

/// The lock's data even if a panic poisoned it: the maps stay consistent
/// (every change is one insert or remove).
fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}
fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}
fn lock<T>(l: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    l.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Ids {
    /// Scores and bans in this process only.
    pub fn local() -> Ids {
        Ids::with_clock(None, Arc::new(monotonic_ms))
    }

    /// Scores and bans in Redis, shared by every gateway pointed at it.
    pub fn shared(redis: RedisStore) -> Ids {
        Ids::with_clock(Some(redis), Arc::new(monotonic_ms))
    }

    pub fn with_clock(redis: Option<RedisStore>, clock: Clock) -> Ids {
        Ids {
            bans: RwLock::new(Bans::default()),
            count: AtomicUsize::new(0),
            local: Mutex::new(Local::default()),
            redis,
            clock,
        }
    }

    pub fn is_shared(&self) -> bool {
        self.redis.is_some()
    }

    fn now(&self) -> u64 {
        (self.clock)()
    }

    /// May a connection or request from `ip` go on?
    pub fn check_addr(&self, policy: &Policy, ip: IpAddr) -> Verdict {
        if policy.allows(ip) {
            return Verdict::Clear;
        }
        if policy.denies(ip) {
            return Verdict::Denied;
        }
        self.check(policy, &Subject::addr(ip))
    }

    /// May a request from this principal go on?
    pub fn check_principal(&self, policy: &Policy, label: &str) -> Verdict {
        if self.count.load(Ordering::Relaxed) == 0 {
            return Verdict::Clear;
        }
        self.check(policy, &Subject::principal(label))
    }

    fn check(&self, policy: &Policy, s: &Subject) -> Verdict {
        if self.count.load(Ordering::Relaxed) == 0 {
            return Verdict::Clear;
        }
        let now = self.now();
        match read(&self.bans).map.get(s) {
            Some(e) if e.until_ms > now => Verdict::Banned {
                remaining: Duration::from_millis(e.until_ms - now),
                enforced: policy.enforce,
            },
            _ => Verdict::Clear,
        }
    }

    /// Count `event` against `subject` in this process, at once: a new
    /// (local) ban if it tipped the score. Every gateway keeps this shadow
    /// score even with a shared store, so a ban never waits for Redis while
    /// the client's next requests are served.
    pub fn observe_local(
        &self,
        policy: &Policy,
        subject: &Subject,
        event: Event,
    ) -> Option<NewBan> {
        let weight = u64::from(policy.weights.get(event));
        if weight == 0 {
            return None;
        }
        self.observe_locally(subject.clone(), weight, event, &policy.scoring())
    }

    /// Count `event` against `subject` in the shared store: a new shared
    /// ban if it tipped the score there. Nothing without a store, in detect
    /// mode (a canary must not ban for the gateways that enforce), while
    /// the store is failing (it is retried a second after a failure), or
    /// when too many calls are already waiting for it.
    pub async fn observe_shared(
        &self,
        policy: &Policy,
        subject: &Subject,
        event: Event,
    ) -> Option<NewBan> {
        let redis = self.redis.as_ref()?;
        let weight = u64::from(policy.weights.get(event));
        if weight == 0 || !policy.enforce {
            return None;
        }
        match redis
            .observe(subject, weight, event, &policy.scoring())
            .await
        {
            Ok(redis_store::Observed::Banned { duration, strikes }) => {
                let now = self.now();
                self.put(
                    subject.clone(),
                    Entry {
                        until_ms: now.saturating_add(duration.as_millis() as u64),
                        strikes,
                        reason: Arc::from(event.as_str()),
                        shared: true,
                    },
                    now,
                );
                Some(NewBan {
                    subject: subject.clone(),
                    duration,
                    strikes,
                    event,
                    shared: true,
                })
            }
            Ok(_) => None,
            Err(e) => {
                redis_store::warn_unavailable(&e);
                None
            }
        }
    }

    /// Both: the local score at once, then the shared one.
    pub async fn observe(&self, policy: &Policy, subject: Subject, event: Event) -> Vec<NewBan> {
        let mut out = Vec::new();
        if let Subject::Addr(ip) = subject
            && policy.allows(ip)
        {
            return out;
        }
        out.extend(self.observe_local(policy, &subject, event));
        out.extend(self.observe_shared(policy, &subject, event).await);
        out
    }

    fn observe_locally(
        &self,
        subject: Subject,
        weight: u64,
        event: Event,
        sc: &Scoring,
    ) -> Option<NewBan> {
        let now = self.now();
        if matches!(
            self.check(&Policy::default(), &subject),
            Verdict::Banned { .. }
        ) {
            return None;
        }
        let mut local = lock(&self.local);
        if local.scores.len() >= MAX_SCORED && !local.scores.contains_key(&subject) {
            // stale scores dropped at most once a second; past that one
            // score makes room (an arbitrary one: no scan per event)
            if now.saturating_sub(local.purged_ms) >= 1_000 || local.purged_ms == 0 {
                local.purged_ms = now.max(1);
                local.scores.retain(|_, w| !w.is_stale(now, sc.window_ms));
                local.strikes.retain(|_, (_, forget)| *forget > now);
            }
            if local.scores.len() >= MAX_SCORED
                && let Some(k) = local.scores.keys().next().cloned()
            {
                local.scores.remove(&k);
                table_full_warning();
            }
        }
        let w = local.scores.remove(&subject).unwrap_or_default();
        let (w, tipped) = w.add(now, sc.window_ms, weight, sc.threshold);
        if !tipped {
            local.scores.insert(subject, w);
            return None;
        }
        let strikes = match local.strikes.get(&subject) {
            Some((n, forget)) if *forget > now => n.saturating_add(1),
            _ => 1,
        };
        if local.strikes.len() < MAX_SCORED || local.strikes.contains_key(&subject) {
            local
                .strikes
                .insert(subject.clone(), (strikes, now.saturating_add(sc.memory_ms)));
        }
        drop(local);
        let ms = window::ban_ms(sc.ban_ms, sc.max_ban_ms, strikes);
        let stored = self.put(
            subject.clone(),
            Entry {
                until_ms: now.saturating_add(ms),
                strikes,
                reason: Arc::from(event.as_str()),
                shared: false,
            },
            now,
        );
        stored.then(|| NewBan {
            subject,
            duration: Duration::from_millis(ms),
            strikes,
            event,
            shared: false,
        })
    }

    /// Store a ban; false (warned, at most once a minute) when the map is
    /// full of bans in force.
    fn put(&self, s: Subject, e: Entry, now: u64) -> bool {
        let mut bans = write(&self.bans);
        let ok = bans.insert(s, e, now);
        self.count.store(bans.map.len(), Ordering::Relaxed);
        drop(bans);
        if !ok {
            table_full_warning();
        }
        ok
    }

    /// Ban `subject` for `duration` by hand (`reason` is logged and listed).
    /// With a shared store that cannot be reached the ban is made here only
    /// (`shared` false in the answer) rather than refused: an operator
    /// acting during an outage must be able to.
    pub async fn ban(
        &self,
        policy: &Policy,
        subject: Subject,
        duration: Duration,
        reason: &str,
    ) -> Result<Ban, IdsError> {
        if duration < Duration::from_secs(1) || duration > MAX_DURATION {
            return Err(IdsError::Duration);
        }
        if let Subject::Addr(ip) = subject
            && policy.allows(ip)
        {
            return Err(IdsError::AllowListed(subject.to_string()));
        }
        let reason = format!("manual: {reason}");
        let shared = match &self.redis {
            Some(r) => match r.ban(&subject, duration, &reason).await {
                Ok(()) => true,
                Err(e) => {
                    redis_store::warn_unavailable(&e);
                    false
                }
            },
            None => false,
        };
        let now = self.now();
        let stored = self.put(
            subject.clone(),
            Entry {
                until_ms: now.saturating_add(duration.as_millis() as u64),
                strikes: 0,
                reason: Arc::from(reason.as_str()),
                shared,
            },
            now,
        );
        if !stored {
            return Err(IdsError::Full);
        }
        Ok(Ban {
            subject,
            remaining: duration,
            strikes: 0,
            reason,
            shared,
        })
    }

    /// Lift a ban and forget the subject's score and strikes. True if it
    /// was banned here or in Redis.
    pub async fn unban(&self, subject: &Subject) -> Result<bool, IdsError> {
        // here first: a store that cannot be reached does not keep a ban
        // in force in this process (the error says the shared one stays)
        let mut was = false;
        {
            let now = self.now();
            let mut bans = write(&self.bans);
            if let Some(e) = bans.map.remove(subject) {
                was |= e.until_ms > now;
            }
            self.count.store(bans.map.len(), Ordering::Relaxed);
        }
        {
            let mut local = lock(&self.local);
            local.scores.remove(subject);
            local.strikes.remove(subject);
        }
        if let Some(r) = &self.redis {
            was |= r
                .unban(subject)
                .await
                .map_err(|e| IdsError::Store(e.to_string()))?;
        }
        Ok(was)
    }

    /// The bans in force here, soonest to end first.
    pub fn list(&self) -> Vec<Ban> {
        let now = self.now();
        let mut out: Vec<Ban> = read(&self.bans)
            .map
            .iter()
            .filter(|(_, e)| e.until_ms > now)
            .map(|(s, e)| Ban {
                subject: s.clone(),
                remaining: Duration::from_millis(e.until_ms - now),
                strikes: e.strikes,
                reason: e.reason.to_string(),
                shared: e.shared,
            })
            .collect();
        out.sort_by(|a, b| {
            a.remaining
                .cmp(&b.remaining)
                .then(a.subject.cmp(&b.subject))
        });
        out
    }

    /// Copy Redis's ban list into the map (shared entries are replaced;
    /// bans made here while Redis was down stay until they end). Also drops
    /// ended bans. Without Redis, only the latter.
    pub async fn sync(&self) -> Result<(), IdsError> {
        let now = self.now();
        let Some(r) = &self.redis else {
            let mut bans = write(&self.bans);
            bans.map.retain(|_, e| e.until_ms > now);
            self.count.store(bans.map.len(), Ordering::Relaxed);
            return Ok(());
        };
        let listed = r.list().await.map_err(|e| IdsError::Store(e.to_string()))?;
        let now = self.now();
        let mut bans = write(&self.bans);
        bans.map.retain(|_, e| !e.shared && e.until_ms > now);
        let mut refused = 0usize;
        for b in listed {
            let e = Entry {
                until_ms: now.saturating_add(b.remaining.as_millis() as u64),
                strikes: b.strikes,
                reason: Arc::from(b.reason.as_str()),
                shared: true,
            };
            refused += usize::from(!bans.insert(b.subject, e, now));
        }
        drop(bans);
        if refused > 0 {
            table_full_warning();
        }
        let bans = read(&self.bans);
        self.count.store(bans.map.len(), Ordering::Relaxed);
        Ok(())
    }
}

/// A full table, logged at most once a minute.
fn table_full_warning() {
    static LAST_MIN: AtomicU64 = AtomicU64::new(u64::MAX);
    let minute = monotonic_ms() / 60_000;
    if LAST_MIN.swap(minute, Ordering::Relaxed) != minute {
        tracing::warn!(
            category = "ids_table_full",
            "intrusion detection table full: events or bans are not kept until entries end"
        );
    }
}

#[cfg(test)]
mod tests;
