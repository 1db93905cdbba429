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
    nodes_table: String,
}

/// The name of the leadership table beside `table` (a checked identifier).
pub(crate) fn lock_table(table: &str) -> String {
    format!("{table}_ha")
}

/// The name of the node list beside `table`.
pub(crate) fn nodes_table(table: &str) -> String {
    format!("{table}_hanodes")
}

/// A node of the cluster, as its last heartbeat said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub node_id: String,
    pub api_addr: String,
    /// Whether it holds the live lease now (from the leadership row, not
    /// from what the node said).
    pub active: bool,
    pub version: String,
    /// Its last heartbeat, RFC 3339 (UTC, PostgreSQL's clock).
    pub last_seen: String,
}

/// Create the leadership table and its one row (fence 0, expired) if
/// missing, and the node list.
pub(crate) async fn ensure_lock_table(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    table: &str,
) -> Result<(), StorageError> {
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {} (node_id TEXT PRIMARY KEY, api_addr TEXT NOT NULL, \
         version TEXT NOT NULL, last_seen TIMESTAMPTZ NOT NULL)",
        nodes_table(table)
    )))
    .execute(&mut **tx)
    .await?;
    let t = lock_table(table);
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {t} (id INT PRIMARY KEY CHECK (id = 1), holder TEXT NOT NULL, \
         api_addr TEXT NOT NULL, fence BIGINT NOT NULL, expires_at TIMESTAMPTZ NOT NULL)"
    )))
    .execute(&mut **tx)
    .await?;
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {t} (id, holder, api_addr, fence, expires_at) \
         VALUES (1, '', '', 0, 'epoch') ON CONFLICT (id) DO NOTHING"
    )))
    .execute(&mut **tx)
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
            nodes_table: nodes_table(table),
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

    /// Record this node in the node list (`sys/ha-status`), and drop nodes
    /// not heard of for an hour.
    pub async fn heartbeat(&self) -> Result<(), StorageError> {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {} (node_id, api_addr, version, last_seen) VALUES ($1, $2, $3, now()) \
             ON CONFLICT (node_id) DO UPDATE SET api_addr = EXCLUDED.api_addr, \
             version = EXCLUDED.version, last_seen = now()",
            self.nodes_table
        )))
        .bind(&self.node_id)
        .bind(&self.api_addr)
        .bind(env!("CARGO_PKG_VERSION"))
        .execute(&self.pool)
        .await?;
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {} WHERE last_seen < now() - interval '1 hour'",
            self.nodes_table
        )))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Leave the node list (a clean shutdown).
    pub async fn forget_node(&self) -> Result<(), StorageError> {
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {} WHERE node_id = $1",
            self.nodes_table
        )))
        .bind(&self.node_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The nodes heard of within three leases, the active one marked.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, StorageError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT n.node_id, n.api_addr, (h.holder = n.node_id AND h.expires_at > now()), \
             n.version, to_char(n.last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') \
             FROM {} n CROSS JOIN {} h WHERE h.id = 1 \
             AND n.last_seen > now() - make_interval(secs => $1::double precision / 1000) \
             ORDER BY n.node_id",
            self.nodes_table, self.lock_table
        )))
        .bind(self.ttl_ms().saturating_mul(3))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(NodeInfo {
                    node_id: r.try_get(0)?,
                    api_addr: r.try_get(1)?,
                    active: r.try_get(2)?,
                    version: r.try_get(3)?,
                    last_seen: r.try_get(4)?,
                })
            })
            .collect()
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
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

/// What the elector is asked to do.
enum Command {
    /// Release the lease and do not try to lead again for this long.
    StepDown(Duration),
    /// Release the lease and stop.
    Stop,
}

/// Until when this node surely holds the lease, by its own monotonic clock:
/// the lease as measured from before the last successful acquire or renewal
/// was sent, so never later than PostgreSQL's `expires_at`. Requests check it
/// ([`Elector::holds_lease`]): a node paused past its lease (SIGSTOP, a long
/// stall) sees it has run out the moment it wakes, before its elector task
/// gets to run, and stops serving from what it loaded while it led.
#[derive(Debug, Default)]
struct LeaseClock(std::sync::Mutex<Option<(i64, tokio::time::Instant)>>);

impl LeaseClock {
    fn set(&self, v: Option<(i64, tokio::time::Instant)>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = v;
    }

    fn valid(&self) -> Option<i64> {
        let g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match *g {
            Some((t, until)) if tokio::time::Instant::now() < until => Some(t),
            _ => None,
        }
    }
}

/// Keeps trying to lead and, while leading, renews the lease: tries every
/// `interval` (Vault's default 5 s for a 15 s lease). The [`Fence`] holds the
/// token while this node leads and 0 otherwise. Leadership counts as lost
/// when a renewal is refused, or when no renewal has succeeded within the
/// lease as measured from before the last successful one was sent (the
/// database's lease cannot have lasted longer), whichever comes first.
/// Every round also records this node in the node list
/// ([`HaLock::heartbeat`]).
pub struct Elector {
    role: tokio::sync::watch::Receiver<Role>,
    commands: tokio::sync::mpsc::UnboundedSender<Command>,
    lease: Arc<LeaseClock>,
    /// Successful lease renewals (metrics).
    renewals: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Elector {
    pub fn spawn(lock: HaLock, fence: Arc<Fence>, interval: Duration) -> Self {
        let (tx, rx) = tokio::sync::watch::channel(Role::Standby);
        let (commands, mut inbox) = tokio::sync::mpsc::unbounded_channel();
        let lease = Arc::new(LeaseClock::default());
        let clock = lease.clone();
        let renewals = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let renewed_count = renewals.clone();
        let task = tokio::spawn(async move {
            let mut held: Option<(i64, tokio::time::Instant)> = None; // token, lease deadline
            let mut hold_off_until: Option<tokio::time::Instant> = None;
            let stand_down = |held: &mut Option<(i64, tokio::time::Instant)>| {
                fence.clear();
                clock.set(None);
                *held = None;
                let _ = tx.send(Role::Standby);
            };
            loop {
                let sent = tokio::time::Instant::now();
                let bound = |d: Duration| d.max(Duration::from_millis(100));
                match held {
                    None if hold_off_until.is_some_and(|u| sent < u) => {}
                    None => match tokio::time::timeout(
                        bound(interval.max(lock.ttl)),
                        lock.try_acquire(),
                    )
                    .await
                    .unwrap_or_else(|_| Err(StorageError::Backend("timed out".into())))
                    {
                        Ok(Some(t)) => {
                            fence.set(t);
                            held = Some((t, sent + lock.ttl));
                            clock.set(held);
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
                                clock.set(held);
                                renewed_count.fetch_add(1, Ordering::Relaxed);
                                false
                            }
                            Ok(false) => true,
                            Err(e) => {
                                tracing::warn!(error = %e, "HA: lease renewal failed");
                                tokio::time::Instant::now() >= deadline
                            }
                        };
                        if lost {
                            stand_down(&mut held);
                            tracing::warn!(fence = t, "HA: this node lost the lead");
                        }
                    }
                }
                // the node list: best effort, never longer than a round
                let _ = tokio::time::timeout(bound(interval), lock.heartbeat()).await;
                // while leading, wake up in time to stand down at the deadline
                let wait = match held {
                    Some((_, deadline)) => interval
                        .min(deadline.saturating_duration_since(tokio::time::Instant::now())),
                    None => interval,
                };
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    cmd = inbox.recv() => {
                        if let Some((t, _)) = held {
                            stand_down(&mut held);
                            let _ = tokio::time::timeout(bound(interval), lock.release(t)).await;
                            tracing::info!(fence = t, "HA: this node stepped down");
                        }
                        match cmd {
                            Some(Command::StepDown(d)) => {
                                hold_off_until = Some(tokio::time::Instant::now() + d);
                            }
                            Some(Command::Stop) | None => {
                                let _ = tokio::time::timeout(bound(interval), lock.forget_node()).await;
                                let _ = tx.send(Role::Standby);
                                return;
                            }
                        }
                    }
                }
            }
        });
        Self {
            role: rx,
            commands,
            lease,
            renewals,
            task,
        }
    }

    /// The current role, and changes to it.
    pub fn role(&self) -> tokio::sync::watch::Receiver<Role> {
        self.role.clone()
    }

    /// How many times this elector renewed its lease.
    pub fn renewals(&self) -> u64 {
        self.renewals.load(Ordering::Relaxed)
    }

    /// The fencing token while this node surely holds the lease by its own
    /// clock (see [`LeaseClock`]); `None` otherwise.
    pub fn holds_lease(&self) -> Option<i64> {
        self.lease.valid()
    }

    /// Give the lead up (releasing the lease at once, so another node takes
    /// over within its next round) and do not try to lead again for
    /// `hold_off` (Vault waits 10 s after `sys/step-down`).
    pub fn step_down(&self, hold_off: Duration) {
        let _ = self.commands.send(Command::StepDown(hold_off));
    }

    /// Step down (releasing the lease at once) and stop.
    pub async fn stop(self) {
        let _ = self.commands.send(Command::Stop);
        let _ = self.task.await;
    }

    /// Stop without releasing anything, as a crash would (tests).
    pub fn abort(self) {
        self.task.abort();
    }
}
