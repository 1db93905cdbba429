//! The SQLite table, the in-memory snapshot of it and the verify path.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use palisade_core::Secret;
use palisade_crypto::mac::MacKey;
use palisade_crypto::mac::ct_eq;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use tokio::time::Instant;

use crate::key::{Fresh, KeyId, PresentedKey};
use crate::{ApiKeyError, ApiKeyRecord, IssuedKey, KeySpec, NewKey, unix_now};

/// Shortest pepper accepted: 256 bits, the HMAC-SHA256 block-size sweet spot.
pub(crate) const MIN_PEPPER_LEN: usize = 32;

/// Attempts at drawing an unused id before giving up. With 62^12 ids a second
/// attempt already means something other than chance is wrong.
const ID_ATTEMPTS: usize = 3;

/// Compared against when the id is unknown, so that path does the same work
/// as a wrong secret. An HMAC equal to it has probability 2^-256, and the
/// unknown branch is decided by the lookup, not by this comparison.
const DUMMY_HASH: [u8; 32] = [0u8; 32];

/// How stale the in-memory snapshot may get relative to the database file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// Reload the table on the first `verify` this long after the last
    /// reload (attempt). `Duration::ZERO` reloads on every `verify`.
    pub refresh_interval: Duration,
    /// When the last successful reload is older than this, `verify` waits for
    /// a reload and fails with `Storage` if it fails. Must be at least
    /// `refresh_interval`.
    pub max_staleness: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            refresh_interval: Duration::from_secs(5),
            max_staleness: Duration::from_secs(60),
        }
    }
}

/// One row as the verify path needs it. Deliberately no `Debug`: the hash is
/// not the secret, but it is a guessing oracle for anyone holding the pepper.
#[derive(Clone)]
struct Entry {
    record: ApiKeyRecord,
    hash: [u8; 32],
}

struct Snapshot {
    by_id: HashMap<String, Entry>,
    /// Last successful reload.
    loaded_at: Instant,
    /// Last reload attempt, successful or not (throttles retries).
    attempted_at: Instant,
}

/// A future a [`Document`] returns.
pub type DocFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, String>> + Send + 'a>>;

/// The whole key table as one versioned document somewhere else (a KV v2
/// secret in Palisade): read whole, written whole only if nobody wrote it
/// since it was read (check-and-set). The store keeps the document's rows
/// as it keeps SQLite's: records and keyed hashes, never a secret.
pub trait Document: Send + Sync + 'static {
    /// The document's bytes and version; `None` and 0 when it does not exist.
    fn read(&self) -> DocFuture<'_, (Option<Vec<u8>>, u64)>;
    /// Write `body` if the document is still at `version` (0: it must not
    /// exist). `Ok(false)`: someone else wrote it first.
    fn write(&self, body: Vec<u8>, version: u64) -> DocFuture<'_, bool>;
}

/// Where the table lives.
enum Backend {
    Sqlite(SqlitePool),
    Document(Arc<dyn Document>),
}

/// After a failed reload of a snapshot too stale to serve, verifications
/// fail at once for this long rather than each trying again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// A changed document that lost a check-and-set race is read and changed
/// again this many times before the write fails.
const CAS_ATTEMPTS: usize = 8;

/// One row of the document form of the table.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DocRow {
    id: String,
    consumer: String,
    scopes: Vec<String>,
    /// HMAC-SHA256, lowercase hex.
    hash: String,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    #[serde(default)]
    description: String,
    rotated_from: Option<String>,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Doc {
    keys: Vec<DocRow>,
}

/// The snapshot entry and the issued key of a fresh key stored for `spec`.
fn issued(
    fresh: Fresh,
    hash: [u8; 32],
    spec: &KeySpec,
    now: i64,
    rotated_from: Option<&str>,
) -> (Entry, IssuedKey) {
    let record = ApiKeyRecord {
        id: fresh.id.as_str().to_owned(),
        consumer: spec.consumer.clone(),
        scopes: spec.scopes.clone(),
        created_at: now,
        expires_at: spec.expires_at,
        revoked_at: None,
        description: spec.description.clone(),
        rotated_from: rotated_from.map(str::to_owned),
    };
    let entry = Entry {
        record: record.clone(),
        hash,
    };
    (
        entry,
        IssuedKey {
            key: fresh.into_key(),
            record,
        },
    )
}

/// Ids that more than one row has.
fn duplicate_ids(rows: &[DocRow]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut twice: Vec<String> = Vec::new();
    for r in rows {
        if !seen.insert(r.id.as_str()) && !twice.contains(&r.id) {
            twice.push(r.id.clone());
        }
    }
    twice
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let d = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        out[i] = d(pair[0])? << 4 | d(pair[1])?;
    }
    Some(out)
}

fn to_hex(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

impl DocRow {
    fn entry(&self) -> Result<Entry, String> {
        let hash =
            hex32(&self.hash).ok_or(format!("key {}: hash is not 32 bytes of hex", self.id))?;
        KeyId::parse(&self.id).map_err(|_| format!("key {}: malformed id", self.id))?;
        // the rules `create` applies, so a hand-written row cannot hold what
        // no key could have (a consumer with spaces, a thousand scopes)
        crate::check_name("consumer", &self.consumer)
            .map_err(|e| format!("key {}: {e}", self.id))?;
        if self.scopes.len() > crate::MAX_SCOPES {
            return Err(format!("key {}: too many scopes", self.id));
        }
        for sc in &self.scopes {
            crate::check_name("scope", sc).map_err(|e| format!("key {}: {e}", self.id))?;
        }
        Ok(Entry {
            record: ApiKeyRecord {
                id: self.id.clone(),
                consumer: self.consumer.clone(),
                scopes: self.scopes.clone(),
                created_at: self.created_at,
                expires_at: self.expires_at,
                revoked_at: self.revoked_at,
                description: self.description.clone(),
                rotated_from: self.rotated_from.clone(),
            },
            hash,
        })
    }

    fn of(e: &Entry) -> Self {
        let r = &e.record;
        DocRow {
            id: r.id.clone(),
            consumer: r.consumer.clone(),
            scopes: r.scopes.clone(),
            hash: to_hex(&e.hash),
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
            description: r.description.clone(),
            rotated_from: r.rotated_from.clone(),
        }
    }
}

struct Inner {
    backend: Backend,
    mac: MacKey,
    opts: StoreOptions,
    snapshot: RwLock<Snapshot>,
    /// Held across every database write and every reload, so a reload that
    /// read the table before a write committed cannot overwrite the
    /// snapshot's copy of that write.
    write: tokio::sync::Mutex<()>,
}

/// API keys in a SQLite file. Cheap to clone; clones share the snapshot, so a
/// revoke through one is seen by all at once.
#[derive(Clone)]
pub struct ApiKeyStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ApiKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyStore")
            .field("keys", &self.read().by_id.len())
            .field("opts", &self.inner.opts)
            .finish_non_exhaustive()
    }
}

fn decode_row(row: &SqliteRow) -> Result<Entry, String> {
    let get_err = |e: sqlx::Error| e.to_string();
    let id: String = row.try_get("id").map_err(get_err)?;
    let scopes: String = row.try_get("scopes").map_err(get_err)?;
    let scopes: Vec<String> =
        serde_json::from_str(&scopes).map_err(|e| format!("key {id}: scopes: {e}"))?;
    let hash: Vec<u8> = row.try_get("hash").map_err(get_err)?;
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| format!("key {id}: hash is not 32 bytes"))?;
    Ok(Entry {
        record: ApiKeyRecord {
            consumer: row.try_get("consumer").map_err(get_err)?,
            scopes,
            created_at: row.try_get("created_at").map_err(get_err)?,
            expires_at: row.try_get("expires_at").map_err(get_err)?,
            revoked_at: row.try_get("revoked_at").map_err(get_err)?,
            description: row.try_get("description").map_err(get_err)?,
            rotated_from: row.try_get("rotated_from").map_err(get_err)?,
            id,
        },
        hash,
    })
}

fn scopes_json(scopes: &[String]) -> Result<String, ApiKeyError> {
    serde_json::to_string(scopes).map_err(|e| ApiKeyError::Storage(e.to_string()))
}

/// The earlier of two optional deadlines, `None` meaning never.
fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(unix)]
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // SQLite gives its -wal and -shm files the database file's mode.
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(not(unix))]
fn create_private(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

/// What rotating `old` at `now` does: the old key's new expiry (never later
/// than it was) and the new key's spec (the old one's lifetime from now).
fn rotation(
    old: &ApiKeyRecord,
    old_expires_at: Option<i64>,
    now: i64,
) -> Result<(Option<i64>, KeySpec), ApiKeyError> {
    if old.revoked_at.is_some() {
        return Err(ApiKeyError::Revoked);
    }
    if !old.is_active(now) {
        return Err(ApiKeyError::Expired);
    }
    let capped = earliest(old.expires_at, old_expires_at);
    let spec = KeySpec {
        consumer: old.consumer.clone(),
        scopes: old.scopes.clone(),
        expires_at: old
            .expires_at
            .map(|t| now.saturating_add(t.saturating_sub(old.created_at).max(1))),
        description: old.description.clone(),
    };
    Ok((capped, spec))
}

/// The keyed-hash key, after the rules every store applies before it
/// touches storage: a pepper of at least 256 bits, coherent staleness bounds.
fn mac_key(pepper: Secret<Vec<u8>>, opts: StoreOptions) -> Result<MacKey, ApiKeyError> {
    if pepper.expose().len() < MIN_PEPPER_LEN {
        return Err(ApiKeyError::WeakPepper);
    }
    if opts.max_staleness < opts.refresh_interval {
        return Err(ApiKeyError::InvalidInput(
            "max_staleness must be at least refresh_interval".into(),
        ));
    }
    Ok(MacKey::from_bytes(pepper.expose()))
}

impl ApiKeyStore {
    /// Open (creating if needed) the table in the SQLite file at `path`, with
    /// the default [`StoreOptions`].
    pub async fn open(path: &Path, pepper: Secret<Vec<u8>>) -> Result<Self, ApiKeyError> {
        Self::open_with(path, pepper, StoreOptions::default()).await
    }

    /// Open with explicit staleness bounds. The pepper is checked before the
    /// file is touched.
    pub async fn open_with(
        path: &Path,
        pepper: Secret<Vec<u8>>,
        opts: StoreOptions,
    ) -> Result<Self, ApiKeyError> {
        let mac = mac_key(pepper, opts)?;

        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                ApiKeyError::Storage(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        create_private(path)
            .map_err(|e| ApiKeyError::Storage(format!("cannot create {}: {e}", path.display())))?;
        let conn = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            // Other processes (the CLI, other gateways) write the same file.
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(conn)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS palisade_apikeys (
                id TEXT PRIMARY KEY NOT NULL,
                consumer TEXT NOT NULL,
                scopes TEXT NOT NULL,
                hash BLOB NOT NULL CHECK (length(hash) = 32),
                created_at INTEGER NOT NULL,
                expires_at INTEGER,
                revoked_at INTEGER,
                description TEXT NOT NULL DEFAULT '',
                rotated_from TEXT
            ) WITHOUT ROWID",
        )
        .execute(&pool)
        .await?;
        sqlx::query(
            "CREATE INDEX IF NOT EXISTS palisade_apikeys_consumer ON palisade_apikeys (consumer)",
        )
        .execute(&pool)
        .await?;

        Self::with_backend(Backend::Sqlite(pool), mac, opts).await
    }

    /// The table kept as one [`Document`] elsewhere (Palisade's KV), with
    /// the same pepper rule, snapshot and staleness bounds as the SQLite
    /// store. A document that cannot be read at open is an error.
    pub async fn open_document(
        doc: Arc<dyn Document>,
        pepper: Secret<Vec<u8>>,
        opts: StoreOptions,
    ) -> Result<Self, ApiKeyError> {
        let mac = mac_key(pepper, opts)?;
        Self::with_backend(Backend::Document(doc), mac, opts).await
    }

    async fn with_backend(
        backend: Backend,
        mac: MacKey,
        opts: StoreOptions,
    ) -> Result<Self, ApiKeyError> {
        let now = Instant::now();
        let store = Self {
            inner: Arc::new(Inner {
                backend,
                mac,
                opts,
                snapshot: RwLock::new(Snapshot {
                    by_id: HashMap::new(),
                    loaded_at: now,
                    attempted_at: now,
                }),
                write: tokio::sync::Mutex::new(()),
            }),
        };
        store.refresh().await?;
        Ok(store)
    }

    /// The document's rows and version.
    async fn doc_read(doc: &dyn Document) -> Result<(Vec<DocRow>, u64), ApiKeyError> {
        let (body, version) = doc.read().await.map_err(ApiKeyError::Storage)?;
        let Some(body) = body else {
            return Ok((Vec::new(), version));
        };
        let d: Doc = serde_json::from_slice(&body).map_err(|e| {
            // position only: serde's message can quote the document's
            // values (a keyed hash is a guessing oracle with the pepper)
            ApiKeyError::Storage(format!(
                "the key document does not parse (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        Ok((d.keys, version))
    }

    /// Read, change and write the document, again from the top when another
    /// writer got there first. A document that holds an id twice is not
    /// changed (fix the secret first): a revoke could miss the twin. `change` returns what the call answers and
    /// whether it changed anything (nothing to write otherwise).
    async fn doc_modify<T>(
        doc: &dyn Document,
        mut change: impl FnMut(&mut Vec<DocRow>) -> Result<(T, bool), ApiKeyError>,
    ) -> Result<T, ApiKeyError> {
        for _ in 0..CAS_ATTEMPTS {
            let (mut rows, version) = Self::doc_read(doc).await?;
            if let Some(id) = duplicate_ids(&rows).first() {
                return Err(ApiKeyError::Storage(format!(
                    "the key document holds key {id} more than once; fix the secret before changing keys"
                )));
            }
            let (out, changed) = change(&mut rows)?;
            if !changed {
                return Ok(out);
            }
            let body = serde_json::to_vec(&Doc { keys: rows })
                .map_err(|e| ApiKeyError::Storage(e.to_string()))?;
            if doc
                .write(body, version)
                .await
                .map_err(ApiKeyError::Storage)?
            {
                return Ok(out);
            }
            tracing::info!("api key document changed meanwhile; reading it again");
        }
        Err(ApiKeyError::Storage(
            "the key document kept changing; try again".into(),
        ))
    }

    // A poisoned lock only means a panic happened while it was held; every
    // critical section below leaves the map consistent at each step, so the
    // data is still usable.
    fn read(&self) -> RwLockReadGuard<'_, Snapshot> {
        self.inner
            .snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn write_snapshot(&self) -> RwLockWriteGuard<'_, Snapshot> {
        self.inner
            .snapshot
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Issue a new key. The full key is in the result and nowhere else.
    pub async fn create(&self, k: NewKey) -> Result<IssuedKey, ApiKeyError> {
        let now = unix_now();
        let spec = KeySpec::parse(k, now)?;
        let _w = self.inner.write.lock().await;
        let (entry, issued) = match &self.inner.backend {
            Backend::Sqlite(pool) => {
                let mut conn = pool.acquire().await?;
                self.insert(&mut conn, &spec, now, None).await?
            }
            Backend::Document(doc) => {
                Self::doc_modify(&**doc, |rows| {
                    let made = self.fresh_entry(rows, &spec, now, None)?;
                    rows.push(DocRow::of(&made.0));
                    Ok((made, true))
                })
                .await?
            }
        };
        // Granting change: only after the commit.
        self.apply(&entry);
        tracing::info!(
            key_id = %entry.record.id,
            consumer = %entry.record.consumer,
            "api key created"
        );
        Ok(issued)
    }

    /// Insert a fresh key for `spec`, retrying on the (astronomically
    /// unlikely) id collision. Returns the snapshot entry and the issued key.
    async fn insert(
        &self,
        conn: &mut sqlx::SqliteConnection,
        spec: &KeySpec,
        now: i64,
        rotated_from: Option<&str>,
    ) -> Result<(Entry, IssuedKey), ApiKeyError> {
        let scopes = scopes_json(&spec.scopes)?;
        for _ in 0..ID_ATTEMPTS {
            let fresh = Fresh::generate();
            let hash = fresh.hash(&self.inner.mac);
            let res = sqlx::query(
                "INSERT INTO palisade_apikeys
                 (id, consumer, scopes, hash, created_at, expires_at, revoked_at, description, rotated_from)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, ?7, ?8)",
            )
            .bind(fresh.id.as_str())
            .bind(spec.consumer.as_str())
            .bind(scopes.as_str())
            .bind(hash.as_slice())
            .bind(now)
            .bind(spec.expires_at)
            .bind(spec.description.as_str())
            .bind(rotated_from)
            .execute(&mut *conn)
            .await;
            match res {
                Ok(_) => return Ok(issued(fresh, hash, spec, now, rotated_from)),
                Err(e)
                    if e.as_database_error()
                        .is_some_and(|d| d.is_unique_violation()) =>
                {
                    tracing::warn!("api key id collision; drawing another id");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiKeyError::Storage(
            "could not draw an unused key id".into(),
        ))
    }

    /// A fresh key for `spec` whose id no row of `rows` has.
    fn fresh_entry(
        &self,
        rows: &[DocRow],
        spec: &KeySpec,
        now: i64,
        rotated_from: Option<&str>,
    ) -> Result<(Entry, IssuedKey), ApiKeyError> {
        for _ in 0..ID_ATTEMPTS {
            let fresh = Fresh::generate();
            if rows.iter().any(|r| r.id == fresh.id.as_str()) {
                tracing::warn!("api key id collision; drawing another id");
                continue;
            }
            let hash = fresh.hash(&self.inner.mac);
            return Ok(issued(fresh, hash, spec, now, rotated_from));
        }
        Err(ApiKeyError::Storage(
            "could not draw an unused key id".into(),
        ))
    }

    fn apply(&self, entry: &Entry) {
        self.write_snapshot()
            .by_id
            .insert(entry.record.id.clone(), entry.clone());
    }

    /// Every key (or one consumer's), newest last within a consumer, read from
    /// the database rather than the snapshot. Records only: no secrets, no hashes.
    pub async fn list(&self, consumer: Option<&str>) -> Result<Vec<ApiKeyRecord>, ApiKeyError> {
        if let Some(c) = consumer {
            crate::check_name("consumer", c)?;
        }
        let pool = match &self.inner.backend {
            Backend::Sqlite(pool) => pool,
            Backend::Document(doc) => {
                let (rows, _) = Self::doc_read(&**doc).await?;
                // an unreadable row is left out (and logged), as a reload
                // leaves it out: the listing shows the keys that work
                let mut out: Vec<ApiKeyRecord> = rows
                    .iter()
                    .filter(|r| consumer.is_none_or(|c| r.consumer == c))
                    .filter_map(|r| match r.entry() {
                        Ok(e) => Some(e.record),
                        Err(e) => {
                            tracing::error!(error = %e, "skipping unreadable api key row");
                            None
                        }
                    })
                    .collect();
                out.sort_by(|a, b| {
                    (&a.consumer, a.created_at, &a.id).cmp(&(&b.consumer, b.created_at, &b.id))
                });
                return Ok(out);
            }
        };
        let rows = match consumer {
            Some(c) => {
                sqlx::query(
                    "SELECT id, consumer, scopes, hash, created_at, expires_at, revoked_at, description, rotated_from
                     FROM palisade_apikeys WHERE consumer = ?1 ORDER BY created_at, id",
                )
                .bind(c)
                .fetch_all(pool)
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT id, consumer, scopes, hash, created_at, expires_at, revoked_at, description, rotated_from
                     FROM palisade_apikeys ORDER BY consumer, created_at, id",
                )
                .fetch_all(pool)
                .await?
            }
        };
        rows.iter()
            .map(|r| {
                decode_row(r)
                    .map(|e| e.record)
                    .map_err(ApiKeyError::Storage)
            })
            .collect()
    }

    /// Revoke a key now. `Ok(true)` when this call revoked it, `Ok(false)` when
    /// no such key exists or it was already revoked. Takes effect in this
    /// process (all clones) before the database write.
    pub async fn revoke(&self, id: &str) -> Result<bool, ApiKeyError> {
        let id = KeyId::parse(id)?;
        let now = unix_now();
        let _w = self.inner.write.lock().await;
        // Restricting change: snapshot first, so even a failed or cancelled
        // write leaves this process refusing the key.
        if let Some(e) = self.write_snapshot().by_id.get_mut(id.as_str()) {
            e.record.revoked_at.get_or_insert(now);
        }
        let revoked = match &self.inner.backend {
            Backend::Sqlite(pool) => {
                let res = sqlx::query(
                    "UPDATE palisade_apikeys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                )
                .bind(id.as_str())
                .bind(now)
                .execute(pool)
                .await?;
                res.rows_affected() == 1
            }
            Backend::Document(doc) => {
                Self::doc_modify(&**doc, |rows| {
                    match rows
                        .iter_mut()
                        .find(|r| r.id == id.as_str() && r.revoked_at.is_none())
                    {
                        Some(r) => {
                            r.revoked_at = Some(now);
                            Ok((true, true))
                        }
                        None => Ok((false, false)),
                    }
                })
                .await?
            }
        };
        if revoked {
            tracing::info!(key_id = %id.as_str(), "api key revoked");
        }
        Ok(revoked)
    }

    /// New key for the same consumer, scopes and description; the old one
    /// stays valid until `old_expires_at` (None = until revoked or its own
    /// expiry) so clients rotate without downtime. Rotation never extends the
    /// old key's life: its expiry becomes the earlier of the two. The new key
    /// gets the old key's lifetime (`expires_at - created_at`) counted from
    /// now, or no expiry if the old key had none. A revoked or expired key
    /// cannot be rotated (`Revoked` / `Expired`); issue a new one with `create`.
    pub async fn rotate(
        &self,
        id: &str,
        old_expires_at: Option<i64>,
    ) -> Result<IssuedKey, ApiKeyError> {
        let id = KeyId::parse(id)?;
        let now = unix_now();
        let _w = self.inner.write.lock().await;
        let pool = match &self.inner.backend {
            Backend::Sqlite(pool) => pool,
            Backend::Document(doc) => {
                let (entry, issued, capped) = Self::doc_modify(&**doc, |rows| {
                    let old = rows
                        .iter()
                        .find(|r| r.id == id.as_str())
                        .ok_or(ApiKeyError::UnknownKey)?
                        .entry()
                        .map_err(ApiKeyError::Storage)?
                        .record;
                    let (capped, spec) = rotation(&old, old_expires_at, now)?;
                    // Restricting change: snapshot first.
                    if let Some(e) = self.write_snapshot().by_id.get_mut(id.as_str()) {
                        e.record.expires_at = earliest(e.record.expires_at, capped);
                    }
                    let (entry, issued) = self.fresh_entry(rows, &spec, now, Some(id.as_str()))?;
                    if let Some(r) = rows.iter_mut().find(|r| r.id == id.as_str()) {
                        r.expires_at = capped;
                    }
                    rows.push(DocRow::of(&entry));
                    Ok(((entry, issued, capped), true))
                })
                .await?;
                self.apply(&entry);
                tracing::info!(
                    key_id = %entry.record.id,
                    rotated_from = %id.as_str(),
                    consumer = %entry.record.consumer,
                    old_expires_at = ?capped,
                    "api key rotated"
                );
                return Ok(issued);
            }
        };
        // IMMEDIATE: take the write lock up front so the read below cannot go
        // stale under another process's write before our UPDATE.
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query(
            "SELECT id, consumer, scopes, hash, created_at, expires_at, revoked_at, description, rotated_from
             FROM palisade_apikeys WHERE id = ?1",
        )
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ApiKeyError::UnknownKey)?;
        let old = decode_row(&row).map_err(ApiKeyError::Storage)?.record;
        let (capped, spec) = rotation(&old, old_expires_at, now)?;

        // Restricting change: snapshot first.
        if let Some(e) = self.write_snapshot().by_id.get_mut(id.as_str()) {
            e.record.expires_at = earliest(e.record.expires_at, capped);
        }
        sqlx::query("UPDATE palisade_apikeys SET expires_at = ?2 WHERE id = ?1")
            .bind(id.as_str())
            .bind(capped)
            .execute(&mut *tx)
            .await?;
        let (entry, issued) = self.insert(&mut tx, &spec, now, Some(id.as_str())).await?;
        tx.commit().await?;
        // Granting change: only after the commit.
        self.apply(&entry);
        tracing::info!(
            key_id = %entry.record.id,
            rotated_from = %id.as_str(),
            consumer = %entry.record.consumer,
            old_expires_at = ?capped,
            "api key rotated"
        );
        Ok(issued)
    }

    /// Reload the whole table into the snapshot now.
    pub async fn refresh(&self) -> Result<(), ApiKeyError> {
        let _w = self.inner.write.lock().await;
        self.reload_locked().await
    }

    /// Reload; the caller holds `inner.write`.
    async fn reload_locked(&self) -> Result<(), ApiKeyError> {
        let started = Instant::now();
        let pool = match &self.inner.backend {
            Backend::Sqlite(pool) => pool,
            Backend::Document(doc) => {
                let rows = Self::doc_read(&**doc).await.map(|(rows, _)| {
                    // an id twice: neither row counts (which one a revoke
                    // changed would be a guess); the key is refused
                    let twice = duplicate_ids(&rows);
                    for id in &twice {
                        tracing::error!(key_id = %id, "api key document holds this key id more than once; refusing the key");
                    }
                    rows.into_iter().filter(|r| !twice.contains(&r.id)).collect()
                });
                return self.install(started, rows, DocRow::entry);
            }
        };
        let rows = sqlx::query(
            "SELECT id, consumer, scopes, hash, created_at, expires_at, revoked_at, description, rotated_from
             FROM palisade_apikeys",
        )
        .fetch_all(pool)
        .await
        .map_err(ApiKeyError::from);
        self.install(started, rows, decode_row)
    }

    /// A reload's rows (or why there are none) into the snapshot.
    fn install<R>(
        &self,
        started: Instant,
        rows: Result<Vec<R>, ApiKeyError>,
        decode: impl Fn(&R) -> Result<Entry, String>,
    ) -> Result<(), ApiKeyError> {
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                self.write_snapshot().attempted_at = started;
                tracing::error!(error = %e, "api key reload failed");
                return Err(e);
            }
        };
        let mut by_id = HashMap::with_capacity(rows.len());
        for row in &rows {
            match decode(row) {
                Ok(entry) => {
                    by_id.insert(entry.record.id.clone(), entry);
                }
                // A corrupt row fails closed for that key only: it becomes
                // unknown rather than stopping every other key from reloading.
                Err(e) => tracing::error!(error = %e, "skipping unreadable api key row"),
            }
        }
        let mut snap = self.write_snapshot();
        snap.by_id = by_id;
        snap.loaded_at = started;
        snap.attempted_at = started;
        Ok(())
    }

    /// Reload when the snapshot is due; see the crate docs for the bounds.
    async fn refresh_if_due(&self) -> Result<(), ApiKeyError> {
        let opts = self.inner.opts;
        let (loaded_at, attempted_at) = {
            let s = self.read();
            (s.loaded_at, s.attempted_at)
        };
        if loaded_at.elapsed() > opts.max_staleness {
            // Too stale to serve: wait for a reload (ours or a concurrent
            // one) and fail closed if the snapshot is still too old. The
            // requests that waited behind a reload that failed share its
            // failure instead of each trying again (a hung store would
            // otherwise queue them one timeout apart).
            let _w = self.inner.write.lock().await;
            let (still_stale, failed_just_now) = {
                let s = self.read();
                (
                    s.loaded_at.elapsed() > opts.max_staleness,
                    s.attempted_at > s.loaded_at && s.attempted_at.elapsed() < RETRY_AFTER_FAILURE,
                )
            };
            if still_stale {
                if failed_just_now {
                    return Err(ApiKeyError::Storage(
                        "the key store could not be read".into(),
                    ));
                }
                self.reload_locked().await?;
            }
        } else if attempted_at.elapsed() >= opts.refresh_interval {
            // Best effort: whoever gets the lock reloads; everyone else (and
            // this call, if the reload fails) serves the current snapshot.
            // With an interval, in the background: no request waits for a
            // store that is slow or hung while the snapshot is fresh enough.
            let me = self.clone();
            let reload = async move {
                if let Ok(_w) = me.inner.write.try_lock() {
                    let still_due = me.read().attempted_at.elapsed() >= opts.refresh_interval;
                    if still_due {
                        // Already logged; the snapshot stays as it was.
                        let _ = me.reload_locked().await;
                    }
                }
            };
            if opts.refresh_interval.is_zero() {
                reload.await;
            } else {
                tokio::spawn(reload);
            }
        }
        Ok(())
    }

    /// Verify a presented key at `now` (unix seconds). See the crate docs for
    /// the order of checks and why unknown ids and wrong secrets cost the same.
    pub async fn verify(&self, presented: &str, now: i64) -> Result<ApiKeyRecord, ApiKeyError> {
        let key = PresentedKey::parse(presented)?;
        self.refresh_if_due().await?;
        let snap = self.read();
        let entry = snap.by_id.get(key.id);
        // Same work on both paths: one HMAC, one 32-byte constant-time compare.
        let tag = key.hash(&self.inner.mac);
        let expected = entry.map_or(&DUMMY_HASH, |e| &e.hash);
        let matches = ct_eq(&tag, expected);
        let Some(entry) = entry else {
            return Err(ApiKeyError::UnknownKey);
        };
        if !matches {
            return Err(ApiKeyError::BadSecret);
        }
        // The caller holds the secret from here on, so the key's state is
        // theirs to know.
        if entry.record.revoked_at.is_some() {
            return Err(ApiKeyError::Revoked);
        }
        if entry.record.expires_at.is_some_and(|t| now >= t) {
            return Err(ApiKeyError::Expired);
        }
        Ok(entry.record.clone())
    }
}
