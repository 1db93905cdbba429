//! SQLite backend: the embedded default. One file, WAL journal,
//! `synchronous=FULL` so a commit is on disk before it is acknowledged.
//!
//! Writes go to one writer task that owns the single write connection (SQLite
//! has one writer anyway) and commits whatever writes are queued together in
//! one transaction (group commit): each caller is acknowledged only after the
//! commit that contains its write returned, so durability per write is kept
//! while concurrent writers share one fsync. Reads use a small pool of their own.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::{Backend, StorageError, TxnOp, check_key, check_prefix, collapse_children};

/// Writes committed together at most (bounds a transaction's size and latency).
const MAX_BATCH: usize = 256;

struct WriteReq {
    ops: Vec<TxnOp>,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

pub struct SqliteBackend {
    writer: tokio::sync::mpsc::Sender<WriteReq>,
    reader: SqlitePool,
}

async fn apply_batch(pool: &SqlitePool, batch: &[WriteReq]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for req in batch {
        for op in &req.ops {
            match op {
                TxnOp::Put { key, value } => {
                    sqlx::query(
                        "INSERT INTO palisade_store (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    )
                    .bind(key.as_str())
                    .bind(value.as_slice())
                    .execute(&mut *tx)
                    .await?;
                }
                TxnOp::Delete { key } => {
                    sqlx::query("DELETE FROM palisade_store WHERE key = ?1")
                        .bind(key.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
    }
    tx.commit().await
}

async fn writer_loop(pool: SqlitePool, mut rx: tokio::sync::mpsc::Receiver<WriteReq>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let result = apply_batch(&pool, &batch).await.map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(error = %e, writes = batch.len(), "sqlite commit failed");
        }
        for req in batch {
            let _ = req.done.send(result.clone());
        }
    }
}

impl SqliteBackend {
    /// Open (creating if needed) the database file at `path`.
    ///
    /// The file is private: created 0600 (SQLite gives its `-wal` and `-shm`
    /// files the database file's mode) in directories created 0700, and an
    /// existing database, WAL or shared-memory file readable by others is
    /// made 0600. The values are ciphertext, but the keys (mount UUIDs, policy
    /// and secret names) are not, so other local users must not read them.
    pub async fn open(path: &Path) -> Result<Self, StorageError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
            && !dir.exists()
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| {
                    StorageError::Config(format!("cannot create {}: {e}", dir.display()))
                })?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| StorageError::Config(format!("cannot open {}: {e}", path.display())))?;
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            let p = std::path::PathBuf::from(p);
            if let Ok(m) = std::fs::metadata(&p)
                && m.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(file = %p.display(), "storage file was readable by other users; making it 0600");
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).map_err(
                    |e| StorageError::Config(format!("cannot chmod {}: {e}", p.display())),
                )?;
            }
        }
        let opts = SqliteConnectOptions::from_str("sqlite:")
            .map_err(StorageError::from)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts.clone())
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS palisade_store (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL) WITHOUT ROWID",
        )
        .execute(&writer)
        .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts.read_only(true))
            .await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4096);
        tokio::spawn(writer_loop(writer, rx));
        Ok(Self { writer: tx, reader })
    }

    async fn write(&self, ops: Vec<TxnOp>) -> Result<(), StorageError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.writer
            .send(WriteReq { ops, done })
            .await
            .map_err(|_| StorageError::Backend("sqlite writer stopped".into()))?;
        wait.await
            .map_err(|_| StorageError::Backend("sqlite writer stopped".into()))?
            .map_err(StorageError::Backend)
    }
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        check_key(key)?;
        let row = sqlx::query("SELECT value FROM palisade_store WHERE key = ?1")
            .bind(key)
            .fetch_optional(&self.reader)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get::<Vec<u8>, _>(0)?),
            None => None,
        })
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        check_key(key)?;
        self.write(vec![TxnOp::Put {
            key: key.to_string(),
            value: value.to_vec(),
        }])
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        check_key(key)?;
        self.write(vec![TxnOp::Delete {
            key: key.to_string(),
        }])
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        check_prefix(prefix)?;
        let rows = sqlx::query(
            "SELECT key FROM palisade_store WHERE key >= ?1 AND substr(key, 1, length(?1)) = ?1 ORDER BY key",
        )
        .bind(prefix)
        .fetch_all(&self.reader)
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
        self.write(ops).await
    }

    fn kind(&self) -> &'static str {
        "sqlite"
    }
}
