//! PostgreSQL backend. The table is created on start; every write is a
//! committed transaction, so acknowledged writes are as durable as the
//! server's own `synchronous_commit` setting (on by default).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Postgres, Row, Transaction};

use crate::ha::{Changes, Fence, HaLock};
use crate::{Backend, StorageError, TxnOp, check_key, check_prefix, collapse_children};

pub const DEFAULT_TABLE: &str = "palisade_store";

/// The longest table name: 63 (PostgreSQL's identifier limit) minus the
/// length of `_hanodes` (the longest suffix of the tables and channel beside it).
pub const MAX_TABLE_LEN: usize = 55;

pub struct PostgresBackend {
    pool: PgPool,
    table: String,
    /// With HA: every write is conditional on this token (see [`crate::ha`]).
    fence: Option<Arc<Fence>>,
}

impl PostgresBackend {
    // SQL here is built with format! only from `table`, which `connect` checked
    // to be a plain identifier; values always go through bind parameters.

    /// Connect to `url` and create `table` if missing. `table` must be a plain
    /// SQL identifier (letters, digits, `_`), since it is spliced into SQL.
    pub async fn connect(url: &str, table: &str) -> Result<Self, StorageError> {
        Self::open(url, table, None).await
    }

    /// [`PostgresBackend::connect`] for an HA node with lease `lease_ttl`:
    /// PostgreSQL ends any of this node's sessions that stays idle inside a
    /// transaction for half the lease (`idle_in_transaction_session_timeout`).
    /// A fenced write holds the leadership row `FOR SHARE` until it commits;
    /// a node paused mid-write (SIGSTOP, a stall) would otherwise block every
    /// takeover for as long as it is paused.
    pub async fn connect_for_ha(
        url: &str,
        table: &str,
        lease_ttl: Duration,
    ) -> Result<Self, StorageError> {
        let idle = (lease_ttl / 2).max(Duration::from_millis(100));
        Self::open(url, table, Some(idle)).await
    }

    async fn open(
        url: &str,
        table: &str,
        idle_in_transaction: Option<Duration>,
    ) -> Result<Self, StorageError> {
        let valid = !table.is_empty()
            // PostgreSQL truncates identifiers at 63 bytes: `<table>_changes`
            // (the notification channel) and `<table>_ha` must stay distinct
            && table.len() <= MAX_TABLE_LEN
            && table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !table.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(StorageError::Config(format!(
                "invalid table name {table:?}"
            )));
        }
        let mut options = sqlx::postgres::PgConnectOptions::from_str(url).map_err(|e| {
            StorageError::Backend(format!("invalid PostgreSQL URL: {}", redact_url_error(&e)))
        })?;
        if let Some(idle) = idle_in_transaction {
            options = options.options([(
                "idle_in_transaction_session_timeout",
                idle.as_millis().to_string(),
            )]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .connect_with(options)
            .await
            .map_err(|e| {
                StorageError::Backend(format!(
                    "cannot connect to PostgreSQL: {}",
                    redact_url_error(&e)
                ))
            })?;
        // several nodes starting at once: `CREATE TABLE IF NOT EXISTS` is not
        // safe concurrently in PostgreSQL, so creation is serialised
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(format!("palisade create {table}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE IF NOT EXISTS {table} (key TEXT COLLATE \"C\" PRIMARY KEY NOT NULL, value BYTEA NOT NULL)"
        )))
        .execute(&mut *tx)
        .await?;
        crate::ha::ensure_lock_table(&mut tx, table).await?;
        tx.commit().await?;
        Ok(Self {
            pool,
            table: table.to_string(),
            fence: None,
        })
    }

    /// The same database and table, every write conditional on `fence` being
    /// the current leadership token (checked by PostgreSQL in the write's own
    /// transaction); a write with a stale or zero token is
    /// [`StorageError::Fenced`] and changes nothing.
    pub fn fenced(&self, fence: Arc<Fence>) -> Self {
        Self {
            pool: self.pool.clone(),
            table: self.table.clone(),
            fence: Some(fence),
        }
    }

    /// The leadership row for this table, for node `node_id` reachable at
    /// `api_addr`, with lease `ttl`.
    pub fn ha_lock(
        &self,
        node_id: &str,
        api_addr: &str,
        ttl: Duration,
    ) -> Result<HaLock, StorageError> {
        HaLock::new(self.pool.clone(), &self.table, node_id, api_addr, ttl)
    }

    /// The table's name.
    pub fn table_name(&self) -> &str {
        &self.table
    }

    /// The committed writes of fenced backends on this table, as they happen.
    pub async fn changes(&self) -> Result<Changes, StorageError> {
        Changes::connect(self.pool.clone(), &self.table).await
    }

    /// Inside `tx`: refuse unless this backend's token is current. The row is
    /// read `FOR SHARE`, so a takeover waits until `tx` ends.
    async fn check_fence(&self, tx: &mut Transaction<'_, Postgres>) -> Result<(), StorageError> {
        let Some(fence) = &self.fence else {
            return Ok(());
        };
        let token = fence.get();
        let ok: Option<bool> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT fence = $1 AND expires_at > now() FROM {} WHERE id = 1 FOR SHARE",
            crate::ha::lock_table(&self.table)
        )))
        .bind(token)
        .fetch_optional(&mut **tx)
        .await?;
        if token == 0 || ok != Some(true) {
            return Err(StorageError::Fenced);
        }
        Ok(())
    }

    /// Drop the table (tests use a table of their own and clean it up).
    pub async fn drop_table(&self) -> Result<(), StorageError> {
        for t in [
            self.table.clone(),
            crate::ha::lock_table(&self.table),
            crate::ha::nodes_table(&self.table),
        ] {
            sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {t}")))
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    fn upsert_sql(&self) -> String {
        format!(
            "INSERT INTO {} (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            self.table
        )
    }
}

/// sqlx errors can echo the connection string; keep only the kind of failure.
fn redact_url_error(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::Database(db) => db.message().to_string(),
        sqlx::Error::Configuration(_) => "invalid connection URL".into(),
        other => other.to_string(),
    }
}

#[async_trait]
impl Backend for PostgresBackend {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        check_key(key)?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT value FROM {} WHERE key = $1",
            self.table
        )))
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => Some(r.try_get::<Vec<u8>, _>(0)?),
            None => None,
        })
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.transaction(vec![TxnOp::Put {
            key: key.to_string(),
            value: value.to_vec(),
        }])
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.transaction(vec![TxnOp::Delete {
            key: key.to_string(),
        }])
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        check_prefix(prefix)?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT key FROM {} WHERE key >= $1 AND left(key, length($1)) = $1 ORDER BY key",
            self.table
        )))
        .bind(prefix)
        .fetch_all(&self.pool)
        .await?;
        let keys = rows
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(collapse_children(prefix, keys))
    }

    async fn transaction(&self, ops: Vec<TxnOp>) -> Result<(), StorageError> {
        for op in &ops {
            match op {
                TxnOp::Put { key, .. } | TxnOp::Delete { key } => check_key(key)?,
            }
        }
        let upsert = self.upsert_sql();
        let del = format!("DELETE FROM {} WHERE key = $1", self.table);
        // unfenced single writes stay single statements (no BEGIN/COMMIT round trips)
        if self.fence.is_none() && ops.len() == 1 {
            let q = match &ops[0] {
                TxnOp::Put { key, value } => {
                    sqlx::query(AssertSqlSafe(upsert)).bind(key).bind(value)
                }
                TxnOp::Delete { key } => sqlx::query(AssertSqlSafe(del)).bind(key),
            };
            q.execute(&self.pool).await?;
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        self.check_fence(&mut tx).await?;
        if self.fence.is_some() {
            // announced on commit only (NOTIFY is transactional): other
            // nodes drop what they cached for these keys
            let payload = crate::ha::change_payload(ops.iter().map(|op| match op {
                TxnOp::Put { key, .. } | TxnOp::Delete { key } => key.as_str(),
            }));
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(crate::ha::change_channel(&self.table))
                .bind(payload)
                .execute(&mut *tx)
                .await?;
        }
        for op in ops {
            match op {
                TxnOp::Put { key, value } => {
                    sqlx::query(AssertSqlSafe(upsert.clone()))
                        .bind(key)
                        .bind(value)
                        .execute(&mut *tx)
                        .await?;
                }
                TxnOp::Delete { key } => {
                    sqlx::query(AssertSqlSafe(del.clone()))
                        .bind(key)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }
}
