//! Scores and bans in Redis: one atomic Lua script per event, on Redis's
//! clock, so any number of gateways sharing one Redis score one subject
//! together and agree on its bans.
//!
//! Keys: `palisade:ids:score:<subject>` (a hash: `idx`, `cur`, `prev`;
//! expires after two windows), `palisade:ids:strikes:<subject>` (a counter
//! that expires `strike_memory` after the last ban), `palisade:ids:bans`
//! (a sorted set: subject → end of its ban in epoch ms) and
//! `palisade:ids:info` (a hash: subject → `<strikes> <reason>`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::{Event, MAX_BANS, Scoring, Subject};

/// Prefix of every key this crate writes.
pub const NAMESPACE: &str = "palisade:ids:";

/// [`crate::window::Window::add`] and [`crate::window::ban_ms`] in Lua.
/// Numbers stay below 2^53 (windows of at most a day, scores of at most
/// 2·10^6, epoch ms plus a year), where Lua's doubles are exact.
/// `ARGV[9]`, only in this crate's tests, is a fixed "now".
/// Returns `{0}` counted, `{1, ban_ms, strikes}` banned, `{2}` already banned.
const OBSERVE_LUA: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local now
if ARGV[9] then
  now = tonumber(ARGV[9])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local ends = redis.call('ZSCORE', KEYS[3], ARGV[1])
if ends and tonumber(ends) > now then return {2, 0, 0} end
local window = tonumber(ARGV[3])
local idx = math.floor(now / window)
local s = redis.call('HMGET', KEYS[1], 'idx', 'cur', 'prev')
local widx = tonumber(s[1])
local cur = tonumber(s[2]) or 0
local prev = tonumber(s[3]) or 0
if widx == idx then
elseif widx ~= nil and widx + 1 == idx then
  prev = cur
  cur = 0
else
  cur = 0
  prev = 0
end
cur = cur + tonumber(ARGV[2])
local elapsed = now - idx * window
if cur * window + prev * (window - elapsed) >= tonumber(ARGV[4]) * window then
  redis.call('DEL', KEYS[1])
  local strikes = redis.call('INCR', KEYS[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
  local shift = strikes - 1
  if shift > 40 then shift = 40 end
  local dur = tonumber(ARGV[5]) * (2 ^ shift)
  if dur > tonumber(ARGV[6]) then dur = tonumber(ARGV[6]) end
  redis.call('ZADD', KEYS[3], string.format('%.0f', now + dur), ARGV[1])
  redis.call('HSET', KEYS[4], ARGV[1], strikes .. ' ' .. ARGV[8])
  return {1, dur, strikes}
end
redis.call('HSET', KEYS[1], 'idx', string.format('%.0f', idx), 'cur', string.format('%.0f', cur), 'prev', string.format('%.0f', prev))
redis.call('PEXPIRE', KEYS[1], 2 * window)
return {0, 0, 0}
"#;

/// A manual ban: `ARGV[1]` subject, `ARGV[2]` ms, `ARGV[3]` `<strikes> <reason>`.
const BAN_LUA: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], string.format('%.0f', now + tonumber(ARGV[2])), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
"#;

/// Lift a ban and forget the score and strikes: 1 if a ban was in force.
const UNBAN_LUA: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ends = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3], KEYS[4])
if ends and tonumber(ends) > now then return 1 end
return 0
"#;

/// Drop ended bans (at most 1,000 a call), then list those in force, the
/// longest first (a cap keeps the longest: manual bans and repeat
/// offenders): `{subject, remaining_ms, info, ...}`, at most `ARGV[1]`.
const LIST_LUA: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ended = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now), 'LIMIT', 0, 1000)
for _, m in ipairs(ended) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('HDEL', KEYS[2], m)
end
local live = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', '(' .. string.format('%.0f', now), 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for i = 1, #live, 2 do
  out[#out + 1] = live[i]
  out[#out + 1] = string.format('%.0f', tonumber(live[i + 1]) - now)
  out[#out + 1] = redis.call('HGET', KEYS[2], live[i]) or ''
end
return out
"#;

/// Why a Redis call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid Redis URL")]
    InvalidUrl(#[source] redis::RedisError),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("unexpected answer from Redis: {0}")]
    Protocol(&'static str),
    #[error("Redis failed less than a second ago; not retried yet")]
    CoolingDown,
    #[error("too many calls to Redis in flight")]
    Busy,
}

/// How long calls fail at once after a failure.
const COOLDOWN_MS: u64 = 1_000;
/// Calls to Redis in flight at most per process.
pub const MAX_IN_FLIGHT: usize = 256;

/// What one event did in Redis.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Observed {
    Counted,
    Banned { duration: Duration, strikes: u32 },
    AlreadyBanned,
}

/// A ban as Redis lists it.
pub(crate) struct Listed {
    pub(crate) subject: Subject,
    pub(crate) remaining: Duration,
    pub(crate) strikes: u32,
    pub(crate) reason: String,
}

/// The IDS state in Redis.
#[derive(Clone)]
pub struct RedisStore {
    /// After a failure, calls fail at once until this instant (ms on
    /// [`crate::monotonic_ms`]): a Redis that hangs costs one timeout a
    /// second, not one per event.
    down_until: Arc<AtomicU64>,
    /// Calls in flight at most ([`MAX_IN_FLIGHT`]); past it an event is
    /// scored locally only.
    in_flight: Arc<tokio::sync::Semaphore>,
    conn: ConnectionManager,
    observe: redis::Script,
    ban: redis::Script,
    unban: redis::Script,
    list: redis::Script,
    timeout: Duration,
}

impl std::fmt::Debug for RedisStore {
    // Not the connection: its `Debug` includes the URL, and with it any password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn key(kind: &str, s: &Subject) -> String {
    format!("{NAMESPACE}{kind}:{s}")
}

const BANS: &str = "palisade:ids:bans";
const INFO: &str = "palisade:ids:info";

impl RedisStore {
    /// A store for the Redis at `url`. Connects lazily and reconnects by
    /// itself; every call is bounded by `timeout`. An unreachable Redis is
    /// not an error here: calls fail (and [`crate::Ids`] scores locally)
    /// until it is reachable.
    pub fn open(url: &str, timeout: Duration) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url).map_err(StoreError::InvalidUrl)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(0);
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(StoreError::InvalidUrl)?;
        Ok(RedisStore {
            down_until: Arc::new(AtomicU64::new(0)),
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
            conn,
            observe: redis::Script::new(OBSERVE_LUA),
            ban: redis::Script::new(BAN_LUA),
            unban: redis::Script::new(UNBAN_LUA),
            list: redis::Script::new(LIST_LUA),
            timeout,
        })
    }

    async fn bounded<T>(
        &self,
        f: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        if crate::monotonic_ms() < self.down_until.load(Ordering::Relaxed) {
            return Err(StoreError::CoolingDown);
        }
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return Err(StoreError::Busy);
        };
        let r = match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r.map_err(StoreError::from),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        };
        if r.is_err() {
            self.down_until
                .store(crate::monotonic_ms() + COOLDOWN_MS, Ordering::Relaxed);
        }
        r
    }

    /// A round trip: Redis answers `PING`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        self.bounded(async move { redis::cmd("PING").query_async::<String>(&mut conn).await })
            .await
            .map(|_| ())
    }

    pub(crate) async fn observe(
        &self,
        subject: &Subject,
        weight: u64,
        event: Event,
        sc: &Scoring,
    ) -> Result<Observed, StoreError> {
        self.observe_at(subject, weight, event, sc, None).await
    }

    pub(crate) async fn observe_at(
        &self,
        subject: &Subject,
        weight: u64,
        event: Event,
        sc: &Scoring,
        now: Option<u64>,
    ) -> Result<Observed, StoreError> {
        let mut inv = self.observe.prepare_invoke();
        inv.key(key("score", subject))
            .key(key("strikes", subject))
            .key(BANS)
            .key(INFO)
            .arg(subject.to_string())
            .arg(weight)
            .arg(sc.window_ms)
            .arg(sc.threshold)
            .arg(sc.ban_ms)
            .arg(sc.max_ban_ms)
            .arg(sc.memory_ms)
            .arg(event.as_str());
        if let Some(now) = now {
            inv.arg(now);
        }
        let mut conn = self.conn.clone();
        let (code, ms, strikes): (i64, i64, i64) = self
            .bounded(async move { inv.invoke_async(&mut conn).await })
            .await?;
        match code {
            0 => Ok(Observed::Counted),
            2 => Ok(Observed::AlreadyBanned),
            1 => Ok(Observed::Banned {
                duration: Duration::from_millis(
                    u64::try_from(ms).map_err(|_| StoreError::Protocol("negative ban"))?,
                ),
                strikes: u32::try_from(strikes)
                    .map_err(|_| StoreError::Protocol("strikes out of range"))?,
            }),
            _ => Err(StoreError::Protocol("unknown observe result")),
        }
    }

    pub(crate) async fn ban(
        &self,
        subject: &Subject,
        duration: Duration,
        reason: &str,
    ) -> Result<(), StoreError> {
        let mut inv = self.ban.prepare_invoke();
        inv.key(BANS)
            .key(INFO)
            .arg(subject.to_string())
            .arg(duration.as_millis() as u64)
            .arg(format!("0 {reason}"));
        let mut conn = self.conn.clone();
        self.bounded(async move { inv.invoke_async::<i64>(&mut conn).await })
            .await
            .map(|_| ())
    }

    pub(crate) async fn unban(&self, subject: &Subject) -> Result<bool, StoreError> {
        let mut inv = self.unban.prepare_invoke();
        inv.key(BANS)
            .key(INFO)
            .key(key("score", subject))
            .key(key("strikes", subject))
            .arg(subject.to_string());
        let mut conn = self.conn.clone();
        let was: i64 = self
            .bounded(async move { inv.invoke_async(&mut conn).await })
            .await?;
        Ok(was == 1)
    }

    pub(crate) async fn list(&self) -> Result<Vec<Listed>, StoreError> {
        self.list_at_most(MAX_BANS).await
    }

    pub(crate) async fn list_at_most(&self, cap: usize) -> Result<Vec<Listed>, StoreError> {
        let mut inv = self.list.prepare_invoke();
        inv.key(BANS).key(INFO).arg(cap);
        let mut conn = self.conn.clone();
        let flat: Vec<String> = self
            .bounded(async move { inv.invoke_async(&mut conn).await })
            .await?;
        let mut out = Vec::with_capacity(flat.len() / 3);
        for c in flat.chunks_exact(3) {
            // a member this version cannot read (written by hand, or by a
            // later version) is skipped, not fatal
            let Some(subject) = Subject::parse(&c[0]) else {
                continue;
            };
            let Ok(ms) = c[1].parse::<u64>() else {
                continue;
            };
            let (strikes, reason) = c[2].split_once(' ').unwrap_or(("0", ""));
            out.push(Listed {
                subject,
                remaining: Duration::from_millis(ms),
                strikes: strikes.parse().unwrap_or(0),
                reason: reason.to_string(),
            });
        }
        Ok(out)
    }
}

/// Redis failures, counted (every process-wide fallback to local scoring).
static FALLBACKS: AtomicU64 = AtomicU64::new(0);
static LAST_WARNING_MIN: AtomicU64 = AtomicU64::new(u64::MAX);

/// Times an event was scored locally because Redis failed, in this process.
pub fn fallbacks() -> u64 {
    FALLBACKS.load(Ordering::Relaxed)
}

/// Count a fallback; log it at most once a minute.
pub(crate) fn warn_unavailable(e: &StoreError) {
    let n = FALLBACKS.fetch_add(1, Ordering::Relaxed) + 1;
    let minute = crate::monotonic_ms() / 60_000;
    if LAST_WARNING_MIN.swap(minute, Ordering::Relaxed) != minute {
        tracing::warn!(
            category = "ids_store_unavailable",
            error = %e,
            fallbacks = n,
            "intrusion detection store unreachable: scoring and banning in this process"
        );
    }
}
