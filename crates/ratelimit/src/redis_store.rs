//! Redis-backed GCRA: one atomic Lua script per check, on the server's clock.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::gcra::Gcra;
use crate::{Decision, Quota, Store, StoreError};

/// Prefix of every key this crate writes.
pub const NAMESPACE: &str = "palisade:rl:";

/// The GCRA of [`crate::gcra::Gcra::step`], in Lua, in integer microseconds.
///
/// `KEYS[1]`: the key. `ARGV[1]`: `T`. `ARGV[2]`: `tau`. `ARGV[3]`: only in this crate's tests,
/// a fixed "now" so the script can be compared with the Rust on identical inputs.
/// Returns `{1, ahead}` (allowed; TAT stored, expiring when it passes) or `{0, ahead}`.
///
/// Atomic because Redis runs a script to completion before any other command; the clock is the
/// server's `TIME`, so gateways with skewed clocks still agree. Timestamps stay below 2^53
/// (epoch µs plus at most a year, see `Quota::new`), where Lua's doubles are exact; they are
/// written with `%.0f` because Redis would otherwise turn a Lua number into a float string.
const GCRA_LUA: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local now
if ARGV[3] then
  now = tonumber(ARGV[3])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then
  local s = tonumber(stored)
  if not s then return redis.error_reply('palisade: rate limit state is not a number') end
  if s > now then tat = s end
end
local ahead = tat - now
if ahead > tolerance then
  return {0, ahead}
end
tat = tat + interval
ahead = tat - now
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', string.format('%.0f', math.ceil(ahead / 1000)))
return {1, ahead}
"#;

/// Rate-limit state in Redis, shared by every gateway process pointed at it.
///
/// Keys are `palisade:rl:{key}` and expire once their TAT passes (an expired key and a fresh one
/// are the same to GCRA), so idle keys cost Redis nothing.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    script: redis::Script,
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

impl RedisStore {
    /// A store for the Redis at `url` (`redis://[user:pass@]host:port/db`, or `rediss://` if the
    /// redis crate was built with TLS). Connects lazily and reconnects by itself; every call,
    /// connecting included, is bounded by `timeout`. Tries to load the script now so the first
    /// check is one round trip, but an unreachable Redis is not an error here: checks fail (and
    /// the [`crate::Limiter`]'s `FailMode` applies) until it is reachable.
    pub async fn open(url: &str, timeout: Duration) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url).map_err(StoreError::InvalidUrl)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // One attempt per reconnect; the next failed command starts another.
            .set_number_of_retries(0);
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(StoreError::InvalidUrl)?;
        let store = RedisStore {
            conn,
            script: redis::Script::new(GCRA_LUA),
            timeout,
        };
        if let Err(err) = store.load_script().await {
            tracing::warn!(
                category = "ratelimit_store_unavailable",
                error = %err,
                "rate limit store not reachable at startup; will retry on use"
            );
        }
        Ok(store)
    }

    /// `SCRIPT LOAD`s the GCRA script; a readiness probe.
    pub async fn load_script(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        self.bounded(async move { self.script.prepare_invoke().load_async(&mut conn).await })
            .await
            .map(|_sha| ())
    }

    async fn bounded<T>(
        &self,
        f: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r.map_err(StoreError::from),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }

    async fn run(
        &self,
        key: &str,
        quota: &Quota,
        now: Option<u64>,
    ) -> Result<Decision, StoreError> {
        let gcra = Gcra::new(quota);
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(format!("{NAMESPACE}{key}"))
            .arg(gcra.interval)
            .arg(gcra.tolerance);
        if let Some(now) = now {
            invocation.arg(now);
        }
        let mut conn = self.conn.clone();
        // EVALSHA, and on NOSCRIPT (a restarted or flushed Redis) SCRIPT LOAD + EVALSHA.
        let (allowed, ahead): (i64, i64) = self
            .bounded(async move { invocation.invoke_async(&mut conn).await })
            .await?;
        let ahead = u64::try_from(ahead).map_err(|_| StoreError::Protocol("negative ahead"))?;
        match allowed {
            1 => Ok(gcra.allowed(ahead)),
            0 => Ok(gcra.denied(ahead)),
            _ => Err(StoreError::Protocol("decision is neither 0 nor 1")),
        }
    }
}

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn check(&self, key: &str, quota: &Quota) -> Result<Decision, StoreError> {
        self.run(key, quota, None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gcra::Step;

    /// The Redis to test against, or `None` (with a notice) if there is none and none is required.
    async fn store(test: &str) -> Option<RedisStore> {
        let url = std::env::var("PALISADE_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
        let store = RedisStore::open(&url, Duration::from_secs(2)).await.ok()?;
        match store.load_script().await {
            Ok(()) => Some(store),
            Err(err) if std::env::var("PALISADE_REQUIRE_SERVICES").as_deref() == Ok("1") => {
                panic!(
                    "{test}: Redis required (PALISADE_REQUIRE_SERVICES=1) but unreachable: {err}"
                )
            }
            Err(err) => {
                println!("SKIPPED {test}: Redis unreachable ({err}); set PALISADE_TEST_REDIS_URL");
                None
            }
        }
    }

    fn unique(test: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("test:{}:{nanos}:{test}", std::process::id())
    }

    /// Runs the Lua with injected times next to the Rust, on the same sequence: identical
    /// decisions, and the TAT the script stored equals the one Rust computed.
    #[tokio::test]
    async fn lua_matches_the_rust_gcra_exactly() {
        let Some(store) = store("lua_matches_the_rust_gcra_exactly").await else {
            return;
        };
        let key = unique("lua-vs-rust");
        let quota = Quota::new(10, Duration::from_secs(1), 3).unwrap();
        let gcra = Gcra::new(&quota);
        // Epoch-scale times, as TIME would give, so the 2^53 reasoning is exercised too.
        let base = 1_760_000_000_000_000u64;
        let offsets = [
            0, 0, 0, 0, 0, 40_000, 100_000, 100_000, 150_000, 420_000, 5_000_000, 5_000_001,
        ];
        let mut tat = None;
        for off in offsets {
            let now = base + off;
            let step = gcra.step(tat, now);
            if let Step::Allow { tat: t, .. } = step {
                tat = Some(t);
            }
            let lua = store.run(&key, &quota, Some(now)).await.unwrap();
            assert_eq!(lua, gcra.decision(step), "at +{off}us");
            let mut conn = store.conn.clone();
            let stored: Option<u64> = redis::cmd("GET")
                .arg(format!("{NAMESPACE}{key}"))
                .query_async(&mut conn)
                .await
                .unwrap();
            assert_eq!(stored, tat, "at +{off}us");
        }
    }

    #[tokio::test]
    async fn corrupt_state_is_an_error_not_a_decision() {
        let Some(store) = store("corrupt_state_is_an_error_not_a_decision").await else {
            return;
        };
        let key = unique("corrupt");
        let mut conn = store.conn.clone();
        let _: () = redis::cmd("SET")
            .arg(format!("{NAMESPACE}{key}"))
            .arg("garbage")
            .arg("EX")
            .arg(60)
            .query_async(&mut conn)
            .await
            .unwrap();
        let quota = Quota::new(1, Duration::from_secs(1), 0).unwrap();
        assert!(matches!(
            store.check(&key, &quota).await,
            Err(StoreError::Redis(_))
        ));
    }
}
