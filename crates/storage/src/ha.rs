//! Leadership on PostgreSQL with a fencing token (issue #19, first part).
//!
//! One row in `<table>_ha` says who leads: `holder` (a node id), its
//! `api_addr`, `fence` (a number that grows by one with every new leader)
//! and `expires_at`. Every time is PostgreSQL's `now()`, so the nodes' own
//! clocks never matter.
//!
//! - [`HaLock::try_acquire`] takes the row only when its lease has run out,
//!   and bumps `fence`: a new leader always holds a larger token than any
//!   before it.
//! - [`HaLock::renew`] extends the lease only while the row still carries the
//!   caller's token and the lease has not run out.
//! - A backend given a [`Fence`] ([`crate::postgres::PostgresBackend::fenced`])
//!   makes **every write** conditional on that token, checked by PostgreSQL in
//!   the write's own transaction: the transaction first reads the row
//!   `FOR SHARE` and writes only if `fence` is still the caller's and the lease
//!   has not run out. A takeover (`UPDATE` of that row) waits for such a write
//!   to commit, and a write after the takeover sees the new token and fails
//!   with [`StorageError::Fenced`]. So a deposed leader that wakes up after a
//!   pause (SIGSTOP, a long GC, a partition) cannot write, whatever it
//!   believes: the lease alone, without this check, would not give mutual
//!   exclusion (Jepsen's finding about lease-based locks).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use sqlx::{AssertSqlSafe, Row};

use crate::StorageError;

/// The token this process writes with; 0 means "not the leader" and makes
/// every fenced write fail.
#[derive(Debug, Default)]
pub struct Fence(AtomicI64);

impl Fence {
    pub fn new() -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(0)))
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }

    pub fn set(&self, token: i64) {
        self.0.store(token, Ordering::SeqCst);
    }

    /// Stop writing (lost or gave up leadership).
    pub fn clear(&self) {
        self.set(0);
    }
}

/// Who leads, as the row says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub holder: String,
    pub api_addr: String,
    pub fence: i64,
    /// Whether its lease is still running (by PostgreSQL's clock).
    pub live: bool,
}

/// The leadership row of one storage table.
pub struct HaLock {
    pool: PgPool,
    lock_table: String,
    node_id: String,
    api_addr: String,
    pub(crate) ttl: Duration,
}

/// The name of the leadership table beside `table` (a checked identifier).
pub(crate) fn lock_table(table: &str) -> String {
    format!("{table}_ha")
}

/// Create the leadership table and its one row (fence 0, expired) if missing.
pub(crate) async fn ensure_lock_table(pool: &PgPool, table: &str) -> Result<(), StorageError> {
    let t = lock_table(table);
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {t} (id INT PRIMARY KEY CHECK (id = 1), holder TEXT NOT NULL, \
         api_addr TEXT NOT NULL, fence BIGINT NOT NULL, expires_at TIMESTAMPTZ NOT NULL)"
    )))
    .execute(pool)
    .await?;
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {t} (id, holder, api_addr, fence, expires_at) \
         VALUES (1, '', '', 0, 'epoch') ON CONFLICT (id) DO NOTHING"
    )))
    .execute(pool)
    .await?;
    Ok(())
}

impl HaLock {
    /// `node_id` names this process (unique per node: a restarted node takes a
    /// new token like any other); `ttl` is the lease (Vault's default is 15 s).
    pub(crate) fn new(
        pool: PgPool,
        table: &str,
        node_id: &str,
        api_addr: &str,
        ttl: Duration,
    ) -> Result<Self, StorageError> {
        if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(600) {
            return Err(StorageError::Config(
                "the HA lease TTL must be between 1 s and 10 min".into(),
            ));
        }
        if node_id.is_empty() {
            return Err(StorageError::Config("an empty HA node id".into()));
        }
        Ok(Self {
            pool,
            lock_table: lock_table(table),
            node_id: node_id.to_string(),
            api_addr: api_addr.to_string(),
            ttl,
        })
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// Take the lead if the current lease has run out; the new fencing token
    /// when it was taken, `None` when another node holds a live lease.
    pub async fn try_acquire(&self) -> Result<Option<i64>, StorageError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE {} SET holder = $1, api_addr = $2, fence = fence + 1, \
             expires_at = now() + make_interval(secs => $3::double precision / 1000) \
             WHERE id = 1 AND expires_at <= now() RETURNING fence",
            self.lock_table
        )))
        .bind(&self.node_id)
        .bind(&self.api_addr)
        .bind(self.ttl_ms())
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => Some(r.try_get::<i64, _>(0)?),
            None => None,
        })
    }

    /// Extend the lease held with `fence`; false when it is no longer this
    /// node's (another took over, or it ran out first).
    pub async fn renew(&self, fence: i64) -> Result<bool, StorageError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE {} SET expires_at = now() + make_interval(secs => $2::double precision / 1000) \
             WHERE id = 1 AND fence = $1 AND holder = $3 AND expires_at > now() RETURNING fence",
            self.lock_table
        )))
        .bind(fence)
        .bind(self.ttl_ms())
        .bind(&self.node_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Give the lead up at once (step-down, shutdown): the next
    /// `try_acquire` of any node succeeds.
    pub async fn release(&self, fence: i64) -> Result<(), StorageError> {
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE {} SET expires_at = now() WHERE id = 1 AND fence = $1 AND holder = $2",
            self.lock_table
        )))
        .bind(fence)
        .bind(&self.node_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The row as it is now.
    pub async fn leader(&self) -> Result<Leader, StorageError> {
        let r = sqlx::query(AssertSqlSafe(format!(
            "SELECT holder, api_addr, fence, expires_at > now() FROM {} WHERE id = 1",
            self.lock_table
        )))
        .fetch_one(&self.pool)
        .await?;
        Ok(Leader {
            holder: r.try_get(0)?,
            api_addr: r.try_get(1)?,
            fence: r.try_get(2)?,
            live: r.try_get(3)?,
        })
    }
}

/// The channel a fenced backend announces its committed writes on.
pub(crate) fn change_channel(table: &str) -> String {
    format!("{table}_changes")
}

/// What a [`Changes`] stream reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// These keys were written (put or deleted) by a committed transaction.
    Keys(Vec<String>),
    /// Notifications may have been missed (the listening connection was
    /// lost and made again, or a transaction touched too many keys to name):
    /// everything cached must be reloaded.
    Resync,
}

/// Committed writes of the active node, as PostgreSQL `NOTIFY`s them (in the
/// write's own transaction, so only committed writes are announced): what a
/// standby, or a node that will become active, needs to drop from its caches.
pub struct Changes {
    pool: PgPool,
    channel: String,
    listener: Option<PgListener>,
}

/// The most a notification names before it says `Resync` instead
/// (PostgreSQL's payload limit is 8000 bytes).
pub(crate) const MAX_PAYLOAD: usize = 7900;

/// The payload announcing `keys`: the keys, one per line, or `*` (resync).
pub(crate) fn change_payload<'a>(keys: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for k in keys {
        if out.len() + k.len() + 1 > MAX_PAYLOAD {
            return "*".to_string();
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(k);
    }
    out
}

impl Changes {
    pub(crate) async fn connect(pool: PgPool, table: &str) -> Result<Self, StorageError> {
        let mut c = Self {
            pool,
            channel: change_channel(table),
            listener: None,
        };
        c.listener = Some(c.listen().await?);
        Ok(c)
    }

    async fn listen(&self) -> Result<PgListener, StorageError> {
        let mut l = PgListener::connect_with(&self.pool).await?;
        l.listen(&self.channel).await?;
        Ok(l)
    }

    /// The next change. After a lost connection it listens again (retrying
    /// every 200 ms while PostgreSQL is unreachable) and answers
    /// [`Change::Resync`]: what was announced meanwhile is gone.
    pub async fn next(&mut self) -> Change {
        loop {
            if let Some(l) = self.listener.as_mut() {
                match l.try_recv().await {
                    Ok(Some(n)) => {
                        let payload = n.payload();
                        if payload == "*" {
                            return Change::Resync;
                        }
                        return Change::Keys(payload.lines().map(str::to_string).collect());
                    }
                    Ok(None) | Err(_) => {
                        // the connection went away (or PostgreSQL ended it)
                        self.listener = None;
                    }
                }
            }
            match self.listen().await {
                Ok(l) => {
                    self.listener = Some(l);
                    return Change::Resync;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "storage change listener: reconnecting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

/// This node's part, as the [`Elector`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Standby,
    /// Leading with this fencing token (the [`Fence`] holds it too).
    Active(i64),
}

/// Keeps trying to lead and, while leading, renews the lease: tries every
/// `interval` (Vault's default 5 s for a 15 s lease). The [`Fence`] holds the
/// token while this node leads and 0 otherwise. Leadership counts as lost
/// when a renewal is refused, or when no renewal has succeeded within the
/// lease as measured from before the last successful one was sent (the
/// database's lease cannot have lasted longer), whichever comes first.
pub struct Elector {
    role: tokio::sync::watch::Receiver<Role>,
    stop: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Elector {
    pub fn spawn(lock: HaLock, fence: Arc<Fence>, interval: Duration) -> Self {
        let (tx, rx) = tokio::sync::watch::channel(Role::Standby);
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut held: Option<(i64, tokio::time::Instant)> = None; // token, lease deadline
            loop {
                let sent = tokio::time::Instant::now();
                match held {
                    None => match tokio::time::timeout(interval.max(lock.ttl), lock.try_acquire())
                        .await
                        .unwrap_or_else(|_| Err(StorageError::Backend("timed out".into())))
                    {
                        Ok(Some(t)) => {
                            fence.set(t);
                            held = Some((t, sent + lock.ttl));
                            let _ = tx.send(Role::Active(t));
                            tracing::info!(fence = t, "HA: this node is now the active node");
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!(error = %e, "HA: cannot reach the leadership row"),
                    },
                    Some((t, deadline)) => {
                        // a database that does not answer (a partition) must not keep
                        // this node believing it leads past the lease's end
                        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                        let renewed = tokio::time::timeout(left, lock.renew(t))
                            .await
                            .unwrap_or_else(|_| Err(StorageError::Backend("timed out".into())));
                        let lost = match renewed {
                            Ok(true) => {
                                held = Some((t, sent + lock.ttl));
                                false
                            }
                            Ok(false) => true,
                            Err(e) => {
                                tracing::warn!(error = %e, "HA: lease renewal failed");
                                tokio::time::Instant::now() >= deadline
                            }
                        };
                        if lost {
                            fence.clear();
                            held = None;
                            let _ = tx.send(Role::Standby);
                            tracing::warn!(fence = t, "HA: this node lost the lead");
                        }
                    }
                }
                // while leading, wake up in time to stand down at the deadline
                let wait = match held {
                    Some((_, deadline)) => interval
                        .min(deadline.saturating_duration_since(tokio::time::Instant::now())),
                    None => interval,
                };
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stopped.notified() => {
                        if let Some((t, _)) = held {
                            fence.clear();
                            let _ = lock.release(t).await;
                        }
                        let _ = tx.send(Role::Standby);
                        return;
                    }
                }
            }
        });
        Self {
            role: rx,
            stop,
            task,
        }
    }

    /// The current role, and changes to it.
    pub fn role(&self) -> tokio::sync::watch::Receiver<Role> {
        self.role.clone()
    }

    /// Step down (releasing the lease at once) and stop.
    pub async fn stop(self) {
        self.stop.notify_one();
        let _ = self.task.await;
    }

    /// Stop without releasing anything, as a crash would (tests).
    pub fn abort(self) {
        self.task.abort();
    }
}
