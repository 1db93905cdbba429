//! The database secrets engine (Vault's `database`), for PostgreSQL.
//!
//! - `config/:name`: a connection (`connection_url` with `{{username}}` and
//!   `{{password}}` placeholders, root `username`/`password` kept behind the
//!   barrier and never returned, `allowed_roles`); `rotate-root/:name`
//!   gives the root user a password nobody knows; `reset/:name` reconnects.
//! - `roles/:name`: `db_name`, `creation_statements`,
//!   `revocation_statements`, `renew_statements`, `default_ttl`, `max_ttl`.
//! - `creds/:name`: a new PostgreSQL role with a random password, under a
//!   lease (`lease.rs`). The lease is stored before the role is created, so
//!   a crash at any point leaves nothing the expiry manager does not revoke;
//!   revocation first checks whether the role exists, so it can be repeated.
//!
//! Storage (in the mount's view): `config/<name>`, `role/<name>`.
//! Statements are run in one transaction per operation, through sqlx (the
//! PostgreSQL wire protocol is sqlx's, never ours). Values put into
//! statements are ours (generated user names, passwords, timestamps) and
//! made of characters that need no quoting; the root user's name is quoted
//! as an identifier.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use palisade_barrier::View;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::{check_name, opt, opt_string};
use crate::core::Authorized;
use crate::engines::kv::KeyLocks;
use crate::lease::{LeaseCtx, LeaseInfo, LeaseRequest};
use crate::logical::{ApiError, Operation, Response, fields};

/// How long a connection to a database may take (a database that does not
/// answer holds up only the requests and revocations that need it).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The one plugin this engine speaks (Vault's name for it).
pub const PLUGIN: &str = "postgresql-database-plugin";

/// Vault's default renewal statement for PostgreSQL.
const DEFAULT_RENEW: &str = r#"ALTER ROLE "{{name}}" VALID UNTIL '{{expiration}}';"#;

#[derive(Clone, Serialize, Deserialize)]
struct DbConfig {
    plugin_name: String,
    connection_url: String,
    #[serde(default)]
    username: String,
    /// The root password: never returned, never logged.
    #[serde(default)]
    password: String,
    /// Set while `rotate-root` runs: the password being installed. A
    /// restart that finds it completes the rotation (see [`pool`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending_password: Option<String>,
    #[serde(default)]
    allowed_roles: Vec<String>,
    #[serde(default)]
    root_rotation_statements: Vec<String>,
    #[serde(default = "yes")]
    verify_connection: bool,
    #[serde(default = "four")]
    max_open_connections: u32,
}

fn yes() -> bool {
    true
}
fn four() -> u32 {
    4
}

impl std::fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbConfig")
            .field("plugin_name", &self.plugin_name)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl DbConfig {
    fn to_json(&self) -> Value {
        json!({
            "plugin_name": self.plugin_name,
            "plugin_version": "",
            "connection_details": {
                "connection_url": self.connection_url,
                "username": self.username,
                "max_open_connections": self.max_open_connections,
            },
            "allowed_roles": self.allowed_roles,
            "root_credentials_rotate_statements": self.root_rotation_statements,
            "password_policy": "",
            "verify_connection": self.verify_connection,
        })
    }

    fn allows(&self, role: &str) -> bool {
        self.allowed_roles
            .iter()
            .any(|r| r == "*" || r == role || glob_match(r, role))
    }

    /// The secrets an error message from the database could quote.
    fn secrets(&self) -> Vec<String> {
        let mut v = vec![self.password.clone()];
        v.extend(self.pending_password.clone());
        v
    }
}

/// Vault's `StrListContainsGlob`: `*` matches any run of characters.
fn glob_match(pattern: &str, s: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == s;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct DbRole {
    db_name: String,
    #[serde(default)]
    default_ttl: i64,
    #[serde(default)]
    max_ttl: i64,
    #[serde(default)]
    creation_statements: Vec<String>,
    #[serde(default)]
    revocation_statements: Vec<String>,
    #[serde(default)]
    rollback_statements: Vec<String>,
    #[serde(default)]
    renew_statements: Vec<String>,
}

impl DbRole {
    fn to_json(&self) -> Value {
        json!({
            "db_name": self.db_name,
            "default_ttl": self.default_ttl,
            "max_ttl": self.max_ttl,
            "creation_statements": self.creation_statements,
            "revocation_statements": self.revocation_statements,
            "rollback_statements": self.rollback_statements,
            "renew_statements": self.renew_statements,
            "credential_type": "password",
        })
    }
}

/// Vault's shortest static-role rotation period.
const MIN_ROTATION_PERIOD: i64 = 5;

/// A static role: an existing database user whose password this engine
/// owns and rotates every `rotation_period`.
#[derive(Clone, Serialize, Deserialize)]
struct StaticRole {
    db_name: String,
    username: String,
    rotation_period: i64,
    #[serde(default)]
    rotation_statements: Vec<String>,
    /// The password the database has (never logged).
    #[serde(default)]
    password: String,
    /// Unix seconds of the last rotation (0: never).
    #[serde(default)]
    last_rotation: i64,
    /// Set while a rotation runs (write-ahead): the password being
    /// installed. Found set later, the rotation is completed before the
    /// password is read or rotated again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending_password: Option<String>,
}

impl std::fmt::Debug for StaticRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticRole")
            .field("db_name", &self.db_name)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl StaticRole {
    fn to_json(&self, now: i64) -> Value {
        json!({
            "db_name": self.db_name,
            "username": self.username,
            "rotation_period": self.rotation_period,
            "rotation_statements": self.rotation_statements,
            "last_vault_rotation": rfc3339(self.last_rotation),
            "ttl": self.ttl(now),
            "credential_type": "password",
        })
    }

    /// Seconds until the next rotation.
    fn ttl(&self, now: i64) -> i64 {
        (self.last_rotation.saturating_add(self.rotation_period) - now).max(0)
    }
}

fn rfc3339(unix: i64) -> String {
    palisade_core::rfc3339(unix.saturating_mul(1_000_000_000))
}

fn static_key(name: &str) -> String {
    format!("static-role/{name}")
}

/// What a lease of this engine records: enough to renew and revoke the
/// role even when the Palisade role that made it was changed or deleted.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Internal {
    db_name: String,
    username: String,
    role: String,
    #[serde(default)]
    revocation_statements: Vec<String>,
    #[serde(default)]
    renew_statements: Vec<String>,
}

/// The connection pools, one per configured connection (by the mount's
/// storage prefix and the connection's name), opened on first use and
/// closed when the connection's configuration changes.
#[derive(Default)]
pub struct Pools {
    open: Mutex<HashMap<String, PgPool>>,
}

impl Pools {
    fn key(view: &View, name: &str) -> String {
        format!("{}{name}", view.prefix())
    }

    fn get(&self, view: &View, name: &str) -> Option<PgPool> {
        self.open.lock().ok()?.get(&Self::key(view, name)).cloned()
    }

    fn put(&self, view: &View, name: &str, pool: PgPool) {
        if let Ok(mut m) = self.open.lock() {
            m.insert(Self::key(view, name), pool);
        }
    }

    /// Close the pool of one connection (its configuration changed).
    fn close(&self, view: &View, name: &str) {
        let pool = self
            .open
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&Self::key(view, name)));
        if let Some(p) = pool {
            tokio::spawn(async move { p.close().await });
        }
    }

    /// Close every pool (at seal).
    pub fn clear(&self) {
        let all: Vec<PgPool> = match self.open.lock() {
            Ok(mut m) => m.drain().map(|(_, p)| p).collect(),
            Err(_) => return,
        };
        for p in all {
            tokio::spawn(async move { p.close().await });
        }
    }
}

fn config_key(name: &str) -> String {
    format!("config/{name}")
}
fn role_key(name: &str) -> String {
    format!("role/{name}")
}

async fn load<T: serde::de::DeserializeOwned>(
    view: &View,
    key: &str,
) -> Result<Option<T>, ApiError> {
    match view.get(key).await? {
        Some(b) => Ok(Some(
            serde_json::from_slice(&b).map_err(ApiError::internal)?,
        )),
        None => Ok(None),
    }
}

async fn store<T: Serialize>(view: &View, key: &str, v: &T) -> Result<(), ApiError> {
    let b = serde_json::to_vec(v).map_err(ApiError::internal)?;
    view.put(key, &b).await?;
    Ok(())
}

/// A database error as the client sees it: the database's own message,
/// with every secret it could quote replaced (a failed statement's text
/// may hold a generated password).
fn db_error(context: &str, e: &sqlx::Error, secrets: &[String]) -> ApiError {
    let msg = match e {
        sqlx::Error::Database(d) => d.message().to_owned(),
        sqlx::Error::PoolTimedOut => "timed out connecting to the database".to_owned(),
        sqlx::Error::Io(io) => format!("cannot reach the database: {}", io.kind()),
        sqlx::Error::Tls(_) => "TLS error connecting to the database".to_owned(),
        sqlx::Error::Configuration(_) => "invalid connection configuration".to_owned(),
        _ => "database error".to_owned(),
    };
    let msg = redact(&msg, secrets);
    tracing::warn!(context, error = %msg, "database operation failed");
    ApiError::new(500, format!("{context}: {msg}")).audited_as("database operation failed")
}

/// Whether a connection URL carries a password of its own (not the
/// `{{password}}` placeholder).
fn url_has_password(u: &str) -> bool {
    url::Url::parse(u)
        .ok()
        .and_then(|u| {
            u.password()
                .map(|p| p != "%7B%7Bpassword%7D%7D" && p != "{{password}}")
        })
        .unwrap_or(false)
}

/// `msg` with every secret (and its percent-encoded form) replaced, the
/// longest first: a short secret replaced first could break up a longer
/// one so that it is no longer found.
fn redact(msg: &str, secrets: &[String]) -> String {
    let mut all: Vec<String> = Vec::new();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        all.push(s.clone());
        all.push(url::form_urlencoded::byte_serialize(s.as_bytes()).collect());
    }
    all.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut msg = msg.to_owned();
    for s in &all {
        msg = msg.replace(s.as_str(), "[redacted]");
    }
    msg
}

/// sqlx's connect options for a configuration and root password. The URL
/// is sqlx's to parse; the placeholders are filled percent-encoded.
fn connect_options(cfg: &DbConfig, password: &str) -> Result<PgConnectOptions, ApiError> {
    let enc = |s: &str| -> String { url::form_urlencoded::byte_serialize(s.as_bytes()).collect() };
    let url = cfg
        .connection_url
        .replace("{{username}}", &enc(&cfg.username))
        .replace("{{password}}", &enc(password));
    let scheme_ok = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let mut opts = match PgConnectOptions::from_str(&url) {
        Ok(o) if scheme_ok => o,
        _ => {
            return Err(ApiError::bad_request(
                "connection_url must be a postgres:// or postgresql:// URL",
            ));
        }
    };
    if !cfg.username.is_empty() {
        opts = opts.username(&cfg.username).password(password);
    }
    // sqlx logs statements (and slow ones at warn): ours carry passwords
    use sqlx::ConnectOptions as _;
    Ok(opts
        .application_name("palisade")
        // a statement that waits on a lock, or never ends, holds up only
        // the request or revocation that runs it, and not for ever
        .options([("statement_timeout", "30s"), ("lock_timeout", "10s")])
        .log_statements(log::LevelFilter::Off)
        .log_slow_statements(log::LevelFilter::Off, Duration::from_secs(3600)))
}

/// A pool for a connection. One connection is made first, so a database
/// that refuses it answers with its own error at once (a pool would retry
/// until its timeout and report only that).
async fn open_pool(cfg: &DbConfig, password: &str) -> Result<PgPool, ApiError> {
    let opts = connect_options(cfg, password)?;
    let ctx = "error connecting to the database";
    let first = tokio::time::timeout(
        CONNECT_TIMEOUT,
        <sqlx::PgConnection as sqlx::Connection>::connect_with(&opts),
    )
    .await
    .map_err(|_| db_error(ctx, &sqlx::Error::PoolTimedOut, &cfg.secrets()))?
    .map_err(|e| db_error(ctx, &e, &cfg.secrets()))?;
    let _ = sqlx::Connection::close(first).await;
    Ok(PgPoolOptions::new()
        .max_connections(cfg.max_open_connections.max(1))
        .acquire_timeout(CONNECT_TIMEOUT)
        .idle_timeout(Duration::from_secs(300))
        .connect_lazy_with(opts))
}

/// The open pool of a connection, connecting if need be. A rotation of
/// the root password that a crash interrupted is completed first: the
/// pending password is installed with whichever password still logs in,
/// then becomes the stored one.
async fn pool(
    view: &View,
    pools: &Pools,
    locks: &KeyLocks,
    name: &str,
) -> Result<(PgPool, DbConfig), ApiError> {
    let cfg: DbConfig = load(view, &config_key(name))
        .await?
        .ok_or_else(|| ApiError::bad_request(format!("no database connection named {name:?}")))?;
    if cfg.pending_password.is_none()
        && let Some(p) = pools.get(view, name)
    {
        return Ok((p, cfg));
    }
    let _g = locks.lock(view, &config_key(name)).await;
    let mut cfg: DbConfig = load(view, &config_key(name))
        .await?
        .ok_or_else(|| ApiError::bad_request(format!("no database connection named {name:?}")))?;
    if let Some(pending) = cfg.pending_password.clone() {
        let pool = match open_pool(&cfg, &cfg.password).await {
            Ok(p) => p,
            Err(_) => open_pool(&cfg, &pending).await?,
        };
        set_root_password(&pool, &cfg, &pending).await?;
        pool.close().await;
        cfg.password = pending;
        cfg.pending_password = None;
        store(view, &config_key(name), &cfg).await?;
        pools.close(view, name);
        tracing::info!(connection = name, "interrupted root rotation completed");
    }
    if let Some(p) = pools.get(view, name) {
        return Ok((p, cfg));
    }
    let p = open_pool(&cfg, &cfg.password).await?;
    pools.put(view, name, p.clone());
    Ok((p, cfg))
}

/// Vault's statement rules: a statement holding `$$` runs whole, any other
/// is split on `;`; empty pieces are skipped.
fn split_statements(stmts: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for s in stmts {
        if s.contains("$$") {
            if !s.trim().is_empty() {
                out.push(s.clone());
            }
            continue;
        }
        out.extend(
            s.split(';')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned),
        );
    }
    out
}

fn render(stmt: &str, vars: &[(&str, &str)]) -> String {
    let mut s = stmt.to_owned();
    for (k, v) in vars {
        s = s.replace(&format!("{{{{{k}}}}}"), v);
    }
    s
}

/// Run statements in one transaction: all take effect or none does.
async fn run_in_tx(
    pool: &PgPool,
    stmts: &[String],
    vars: &[(&str, &str)],
    context: &str,
    secrets: &[String],
) -> Result<(), ApiError> {
    run_in_tx_outcome(pool, stmts, vars, context, secrets)
        .await
        .map_err(|f| f.error)
}

/// Why a transaction failed, and whether it may have been committed all
/// the same (the commit was sent and no answer came back).
struct TxFailure {
    error: ApiError,
    maybe_committed: bool,
}

async fn run_in_tx_outcome(
    pool: &PgPool,
    stmts: &[String],
    vars: &[(&str, &str)],
    context: &str,
    secrets: &[String],
) -> Result<(), TxFailure> {
    let definite = |e: sqlx::Error| TxFailure {
        error: db_error(context, &e, secrets),
        maybe_committed: false,
    };
    let mut tx = pool.begin().await.map_err(definite)?;
    for s in split_statements(stmts) {
        sqlx::raw_sql(AssertSqlSafe(render(&s, vars)))
            .execute(&mut *tx)
            .await
            .map_err(definite)?;
    }
    tx.commit().await.map_err(|e| TxFailure {
        maybe_committed: !matches!(e, sqlx::Error::Database(_)),
        error: db_error(context, &e, secrets),
    })
}

/// A PostgreSQL identifier, quoted.
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

async fn set_root_password(pool: &PgPool, cfg: &DbConfig, password: &str) -> Result<(), ApiError> {
    set_root_password_outcome(pool, cfg, password)
        .await
        .map_err(|f| f.error)
}

async fn set_root_password_outcome(
    pool: &PgPool,
    cfg: &DbConfig,
    password: &str,
) -> Result<(), TxFailure> {
    let secrets = {
        let mut s = cfg.secrets();
        s.push(password.to_owned());
        s
    };
    if cfg.root_rotation_statements.is_empty() {
        // Vault's default, `ALTER ROLE "{{username}}" WITH PASSWORD
        // '{{password}}'`; the user name is the operator's: quoted, not templated
        let stmt = format!(
            "ALTER ROLE {} WITH PASSWORD '{password}'",
            quote_ident(&cfg.username)
        );
        return run_in_tx_outcome(
            pool,
            &[stmt],
            &[],
            "error rotating the root password",
            &secrets,
        )
        .await;
    }
    run_in_tx_outcome(
        pool,
        &cfg.root_rotation_statements,
        &[("username", &cfg.username), ("password", password)],
        "error rotating the root password",
        &secrets,
    )
    .await
}

/// A password for a database user: 32 characters of [A-Za-z0-9] (190 bits),
/// nothing that needs quoting in SQL or a URL.
fn generate_password() -> String {
    crate::token::random_base62(32)
}

/// Vault's user name template for PostgreSQL,
/// `v-{{display_name|truncate 8}}-{{role_name|truncate 8}}-{{random 20}}-{{unix_time}}`,
/// with every character outside [A-Za-z0-9_] made `_` (so the name never
/// needs escaping inside a quoted identifier), at most 63 bytes.
fn generate_username(display_name: &str, role: &str, now: i64) -> String {
    let part = |s: &str| -> String {
        s.chars()
            .take(8)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let mut u = format!(
        "v-{}-{}-{}-{now}",
        part(display_name),
        part(role),
        crate::token::random_base62(20)
    );
    u.truncate(63);
    u
}

/// `2006-01-02 15:04:05+0000`: what PostgreSQL's `VALID UNTIL` reads (UTC).
fn expiration(unix: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}+0000",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn statements(d: &Map<String, Value>, name: &str) -> Result<Option<Vec<String>>, ApiError> {
    match opt(d, name) {
        None => Ok(None),
        // one string is one statement list entry (Vault splits it on `;`)
        Some(Value::String(s)) => Ok(Some(if s.trim().is_empty() {
            Vec::new()
        } else {
            vec![s.clone()]
        })),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| fields::string(v, name))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(ApiError::bad_request(format!(
            "field {name:?} must be a list of statements"
        ))),
    }
}

/// Fields of Vault's connection configuration this engine does not
/// implement: a value other than their empty default is refused.
const UNSUPPORTED_CONFIG: &[&str] = &[
    "password_policy",
    "username_template",
    "disable_escaping",
    "password_authentication",
    "private_key",
    "tls_certificate",
    "tls_ca",
    "auth_type",
    "service_account_json",
];

fn unsupported(d: &Map<String, Value>, names: &[&str]) -> Result<(), ApiError> {
    for n in names {
        match opt(d, n) {
            None => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(Value::Bool(false)) => {}
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "{n:?} is not supported by this server"
                )));
            }
        }
    }
    Ok(())
}

pub struct Ctx<'a> {
    pub pools: &'a Pools,
    pub locks: &'a KeyLocks,
    pub lease: LeaseCtx<'a>,
}

pub async fn exists(rel: &str, view: &View) -> Result<bool, ApiError> {
    for (prefix, key) in [("roles/", "role/"), ("config/", "config/")] {
        if let Some(name) = rel.strip_prefix(prefix)
            && check_name(name).is_ok()
        {
            return Ok(view.get(&format!("{key}{name}")).await?.is_some());
        }
    }
    Ok(true)
}

pub async fn handle(
    auth: &Authorized,
    rel: &str,
    view: &View,
    ctx: Ctx<'_>,
) -> Result<Response, ApiError> {
    let req = auth.request();
    let op = req.operation;
    let d = &req.data;
    let parts: Vec<&str> = rel.split('/').collect();
    match (op, parts.as_slice()) {
        (Operation::List, ["config", ""] | ["config"]) => list(view, "config/").await,
        (Operation::List, ["roles", ""] | ["roles"]) => list(view, "role/").await,
        (Operation::Read, ["config", name]) => {
            let cfg: DbConfig = load(view, &config_key(check_name(name)?))
                .await?
                .ok_or_else(ApiError::not_found)?;
            Ok(Response::data(cfg.to_json()))
        }
        (Operation::Write, ["config", name]) => {
            write_config(d, view, &ctx, check_name(name)?).await
        }
        (Operation::Delete, ["config", name]) => {
            let name = check_name(name)?;
            let _g = ctx.locks.lock(view, &config_key(name)).await;
            view.delete(&config_key(name)).await?;
            ctx.pools.close(view, name);
            Ok(Response::no_content())
        }
        (Operation::Write, ["reset", name]) => {
            let name = check_name(name)?;
            if view.get(&config_key(name)).await?.is_none() {
                return Err(ApiError::bad_request(format!(
                    "no database connection named {name:?}"
                )));
            }
            ctx.pools.close(view, name);
            Ok(Response::no_content())
        }
        (Operation::Write, ["rotate-root", name]) => {
            rotate_root(view, &ctx, check_name(name)?).await
        }
        (Operation::Read, ["roles", name]) => {
            let role: DbRole = load(view, &role_key(check_name(name)?))
                .await?
                .ok_or_else(ApiError::not_found)?;
            Ok(Response::data(role.to_json()))
        }
        (Operation::Write, ["roles", name]) => write_role(d, view, &ctx, check_name(name)?).await,
        (Operation::Delete, ["roles", name]) => {
            view.delete(&role_key(check_name(name)?)).await?;
            Ok(Response::no_content())
        }
        (Operation::Read, ["creds", name]) => {
            creds(view, &ctx, check_name(name)?, &auth.token().display_name).await
        }
        (Operation::List, ["static-roles", ""] | ["static-roles"]) => {
            list(view, "static-role/").await
        }
        (Operation::Read, ["static-roles", name]) => {
            let r: StaticRole = load(view, &static_key(check_name(name)?))
                .await?
                .ok_or_else(ApiError::not_found)?;
            Ok(Response::data(r.to_json(ctx.lease.now)))
        }
        (Operation::Write, ["static-roles", name]) => {
            write_static_role(d, view, &ctx, check_name(name)?).await
        }
        (Operation::Delete, ["static-roles", name]) => {
            let name = check_name(name)?;
            let _g = ctx.locks.lock(view, &static_key(name)).await;
            view.delete(&static_key(name)).await?;
            Ok(Response::no_content())
        }
        (Operation::Read, ["static-creds", name]) => {
            let name = check_name(name)?;
            let r = settled_static_role(view, ctx.pools, ctx.locks, name)
                .await?
                .ok_or_else(|| ApiError::bad_request(format!("unknown role: {name}")))?;
            let now = ctx.lease.now;
            Ok(Response::data(json!({
                "username": r.username,
                "password": r.password,
                "last_vault_rotation": rfc3339(r.last_rotation),
                "rotation_period": r.rotation_period,
                "ttl": r.ttl(now),
            })))
        }
        (Operation::Write, ["rotate-role", name]) => {
            let name = check_name(name)?;
            if view.get(&static_key(name)).await?.is_none() {
                return Err(ApiError::bad_request(format!("unknown role: {name}")));
            }
            rotate_static_role(view, ctx.pools, ctx.locks, name, ctx.lease.now).await?;
            Ok(Response::no_content())
        }
        _ => Err(ApiError::unsupported_path()),
    }
}

async fn list(view: &View, prefix: &str) -> Result<Response, ApiError> {
    let keys = view.list(prefix).await?;
    if keys.is_empty() {
        return Err(ApiError::not_found());
    }
    Ok(Response::data(json!({ "keys": keys })))
}

async fn write_config(
    d: &Map<String, Value>,
    view: &View,
    ctx: &Ctx<'_>,
    name: &str,
) -> Result<Response, ApiError> {
    unsupported(d, UNSUPPORTED_CONFIG)?;
    let _g = ctx.locks.lock(view, &config_key(name)).await;
    let existing: Option<DbConfig> = load(view, &config_key(name)).await?;
    let plugin_name = match (opt_string(d, "plugin_name")?, &existing) {
        (Some(p), _) => p,
        (None, Some(e)) => e.plugin_name.clone(),
        (None, None) => return Err(ApiError::bad_request("empty plugin name")),
    };
    if plugin_name != PLUGIN {
        return Err(ApiError::bad_request(format!(
            "unsupported database plugin {plugin_name:?}: this server speaks {PLUGIN:?}"
        )));
    }
    let mut cfg = existing.clone().unwrap_or(DbConfig {
        plugin_name: plugin_name.clone(),
        connection_url: String::new(),
        username: String::new(),
        password: String::new(),
        pending_password: None,
        allowed_roles: Vec::new(),
        root_rotation_statements: Vec::new(),
        verify_connection: true,
        max_open_connections: 4,
    });
    if cfg.pending_password.is_some() {
        return Err(ApiError::bad_request(
            "a root rotation of this connection is unfinished; use the connection (or reset it) to complete it first",
        ));
    }
    cfg.plugin_name = plugin_name;
    if let Some(u) = opt_string(d, "connection_url")? {
        cfg.connection_url = u;
    }
    if let Some(u) = opt_string(d, "username")? {
        cfg.username = u;
    }
    if let Some(p) = opt_string(d, "password")? {
        cfg.password = p;
    }
    if let Some(v) = opt(d, "allowed_roles") {
        cfg.allowed_roles = fields::string_list(v, "allowed_roles")?;
    }
    if let Some(s) = statements(d, "root_rotation_statements")? {
        cfg.root_rotation_statements = s;
    }
    if let Some(v) = opt(d, "verify_connection") {
        cfg.verify_connection = fields::boolean(v, "verify_connection")?;
    }
    if let Some(v) = opt(d, "max_open_connections") {
        let n = fields::int(v, "max_open_connections")?;
        cfg.max_open_connections = u32::try_from(n)
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request("max_open_connections must be between 1 and 100")
            })?;
    }
    if cfg.connection_url.is_empty() {
        return Err(ApiError::bad_request("connection_url is required"));
    }
    if cfg.connection_url.contains("{{password}}") && cfg.password.is_empty()
        || cfg.connection_url.contains("{{username}}") && cfg.username.is_empty()
    {
        return Err(ApiError::bad_request(
            "connection_url names {{username}} and {{password}}: both must be set",
        ));
    }
    // parse now: a URL sqlx cannot read is the client's error
    connect_options(&cfg, &cfg.password)?;
    if cfg.verify_connection {
        let pool = open_pool(&cfg, &cfg.password).await.map_err(|e| {
            ApiError::bad_request(format!(
                "error creating database object: {}",
                e.messages.join("; ")
            ))
            .audited_as("error creating database object")
        })?;
        let ok = sqlx::query("SELECT 1").execute(&pool).await;
        pool.close().await;
        if let Err(e) = ok {
            let e = db_error("error verifying connection", &e, &cfg.secrets());
            return Err(ApiError::bad_request(format!(
                "error creating database object: {}",
                e.messages.join("; ")
            ))
            .audited_as("error creating database object"));
        }
    }
    store(view, &config_key(name), &cfg).await?;
    ctx.pools.close(view, name);
    let mut resp = Response::no_content();
    if url_has_password(&cfg.connection_url) {
        // OpenBao's warning: reading the connection returns the URL as is
        resp = resp.warn(
            "Password found in connection_url, use a templated url to enable root rotation and prevent read access to password information.",
        );
    }
    if cfg.allowed_roles.is_empty() {
        resp = resp.warn("no roles are allowed to use this connection: set allowed_roles");
    }
    Ok(resp)
}

async fn rotate_root(view: &View, ctx: &Ctx<'_>, name: &str) -> Result<Response, ApiError> {
    // any interrupted rotation is completed by `pool` first
    let (pool, _) = pool(view, ctx.pools, ctx.locks, name).await?;
    let _g = ctx.locks.lock(view, &config_key(name)).await;
    let mut cfg: DbConfig = load(view, &config_key(name))
        .await?
        .ok_or_else(|| ApiError::bad_request(format!("no database connection named {name:?}")))?;
    if cfg.username.is_empty() {
        return Err(ApiError::bad_request(
            "unable to rotate root credentials: no username in configuration",
        ));
    }
    let new = generate_password();
    // write-ahead: the new password is stored before the database has it,
    // so a crash between the two is completed at the next use
    cfg.pending_password = Some(new.clone());
    store(view, &config_key(name), &cfg).await?;
    match set_root_password_outcome(&pool, &cfg, &new).await {
        Ok(()) => {
            cfg.password = new;
            cfg.pending_password = None;
            store(view, &config_key(name), &cfg).await?;
            ctx.pools.close(view, name);
            Ok(Response::no_content())
        }
        // the database kept the old password: forget the new one
        Err(f) if !f.maybe_committed => {
            cfg.pending_password = None;
            store(view, &config_key(name), &cfg).await?;
            Err(f.error)
        }
        // it may have the new one: the next use completes the rotation
        Err(f) => Err(f.error),
    }
}

/// `credential_type` other than `password`, or a `credential_config`: 400.
fn password_credentials_only(d: &Map<String, Value>) -> Result<(), ApiError> {
    for n in ["credential_type", "credential_config"] {
        match opt(d, n) {
            None => {}
            Some(Value::String(s)) if s == "password" || s.is_empty() => {}
            Some(Value::Object(o)) if o.is_empty() => {}
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "{n:?}: only password credentials are supported"
                )));
            }
        }
    }
    Ok(())
}

async fn write_role(
    d: &Map<String, Value>,
    view: &View,
    ctx: &Ctx<'_>,
    name: &str,
) -> Result<Response, ApiError> {
    password_credentials_only(d)?;
    let _g = ctx.locks.lock(view, &role_key(name)).await;
    let mut role: DbRole = load(view, &role_key(name)).await?.unwrap_or_default();
    if let Some(n) = opt_string(d, "db_name")? {
        role.db_name = check_name(&n)
            .map_err(|_| ApiError::bad_request("invalid db_name"))?
            .to_owned();
    }
    if role.db_name.is_empty() {
        return Err(ApiError::bad_request("empty database name attribute"));
    }
    if let Some(v) = opt(d, "default_ttl") {
        role.default_ttl = fields::duration_secs(v, "default_ttl")?;
    }
    if let Some(v) = opt(d, "max_ttl") {
        role.max_ttl = fields::duration_secs(v, "max_ttl")?;
    }
    if role.max_ttl > 0 && role.default_ttl > role.max_ttl {
        return Err(ApiError::bad_request(
            "default_ttl cannot be greater than max_ttl",
        ));
    }
    for (field, slot) in [
        ("creation_statements", &mut role.creation_statements),
        ("revocation_statements", &mut role.revocation_statements),
        ("rollback_statements", &mut role.rollback_statements),
        ("renew_statements", &mut role.renew_statements),
    ] {
        if let Some(s) = statements(d, field)? {
            *slot = s;
        }
    }
    if split_statements(&role.creation_statements).is_empty() {
        return Err(ApiError::bad_request("empty creation statements"));
    }
    store(view, &role_key(name), &role).await?;
    Ok(Response::no_content())
}

async fn creds(
    view: &View,
    ctx: &Ctx<'_>,
    name: &str,
    display_name: &str,
) -> Result<Response, ApiError> {
    let role: DbRole = load(view, &role_key(name))
        .await?
        .ok_or_else(|| ApiError::bad_request(format!("unknown role: {name}")))?;
    let cfg: DbConfig = load(view, &config_key(&role.db_name))
        .await?
        .ok_or_else(|| {
            ApiError::bad_request(format!("no database connection named {:?}", role.db_name))
        })?;
    if !cfg.allows(name) {
        return Err(ApiError::bad_request(format!(
            "{name:?} is not an allowed role"
        )));
    }
    let (pool, cfg) = pool(view, ctx.pools, ctx.locks, &role.db_name).await?;
    let username = generate_username(display_name, name, ctx.lease.now);
    let password = generate_password();
    let entry = ctx.lease.entry(LeaseRequest {
        internal: serde_json::to_value(Internal {
            db_name: role.db_name.clone(),
            username: username.clone(),
            role: name.to_owned(),
            revocation_statements: role.revocation_statements.clone(),
            renew_statements: role.renew_statements.clone(),
        })
        .map_err(ApiError::internal)?,
        ttl: role.default_ttl,
        max_ttl: role.max_ttl,
        renewable: true,
    });
    // the lease first: whatever happens next, the role is revoked; and its
    // lock until the role exists or the transaction rolled back, so a
    // revocation (its token revoked meanwhile) waits for the outcome
    // instead of finding no role and forgetting the lease
    let _lease_lock = ctx.lease.leases.lock(&entry.lease_id).await;
    ctx.lease.leases.create(&entry).await?;
    let mut secrets = cfg.secrets();
    secrets.push(password.clone());
    let exp = expiration(entry.expire_time);
    let created = run_in_tx(
        &pool,
        &role.creation_statements,
        &[
            ("name", &username),
            ("username", &username),
            ("password", &password),
            ("expiration", &exp),
        ],
        "error creating the database user",
        &secrets,
    )
    .await;
    if let Err(e) = created {
        // the transaction rolled back: no role exists; the lease goes (if
        // this delete fails, the expiry manager finds no role to drop)
        if let Err(de) = ctx.lease.leases.delete(&entry).await {
            tracing::warn!(
                status = de.status,
                "lease of a failed credential kept for the expiry manager"
            );
        }
        return Err(e);
    }
    Ok(
        Response::data(json!({ "username": username, "password": password })).with_lease(
            LeaseInfo {
                lease_id: entry.lease_id.clone(),
                lease_duration: entry.ttl,
                renewable: true,
            },
        ),
    )
}

/// Revoke a lease's database user: terminate its sessions, then drop it
/// (or run the role's revocation statements). Nothing to do when the user
/// does not exist (it was never created, or an earlier attempt dropped it
/// before a crash).
pub async fn revoke(
    view: &View,
    pools: &Pools,
    locks: &KeyLocks,
    internal: &Value,
) -> Result<(), ApiError> {
    let i: Internal = serde_json::from_value(internal.clone()).map_err(ApiError::internal)?;
    let (pool, cfg) = pool(view, pools, locks, &i.db_name).await?;
    let secrets = cfg.secrets();
    let err = |e: sqlx::Error| db_error("error revoking the database user", &e, &secrets);
    let exists = sqlx::query("SELECT 1 FROM pg_roles WHERE rolname = $1")
        .bind(&i.username)
        .fetch_optional(&pool)
        .await
        .map_err(err)?
        .is_some();
    if !exists {
        return Ok(());
    }
    let ident = quote_ident(&i.username);
    // no new session from here on, and the open ones end
    run_in_tx(
        &pool,
        &[format!("ALTER ROLE {ident} NOLOGIN")],
        &[],
        "error revoking the database user",
        &secrets,
    )
    .await?;
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1")
        .bind(&i.username)
        .execute(&pool)
        .await
        .map_err(err)?;
    let stmts = if split_statements(&i.revocation_statements).is_empty() {
        vec![
            format!("REASSIGN OWNED BY {ident} TO CURRENT_USER"),
            format!("DROP OWNED BY {ident}"),
            format!("DROP ROLE IF EXISTS {ident}"),
        ]
    } else {
        i.revocation_statements.clone()
    };
    run_in_tx(
        &pool,
        &stmts,
        &[("name", &i.username), ("username", &i.username)],
        "error revoking the database user",
        &secrets,
    )
    .await?;
    // custom statements must have removed the role: otherwise the lease
    // stays and the manager tries again (a role left behind is a leak)
    let left = sqlx::query("SELECT 1 FROM pg_roles WHERE rolname = $1")
        .bind(&i.username)
        .fetch_optional(&pool)
        .await
        .map_err(err)?;
    if left.is_some() {
        return Err(ApiError::new(
            500,
            "the revocation statements left the database user in place",
        ));
    }
    Ok(())
}

/// Renew a lease's database user to `expire` (Unix seconds).
pub async fn renew(
    view: &View,
    pools: &Pools,
    locks: &KeyLocks,
    internal: &Value,
    expire: i64,
) -> Result<(), ApiError> {
    let i: Internal = serde_json::from_value(internal.clone()).map_err(ApiError::internal)?;
    let (pool, cfg) = pool(view, pools, locks, &i.db_name).await?;
    let stmts = if split_statements(&i.renew_statements).is_empty() {
        vec![DEFAULT_RENEW.to_owned()]
    } else {
        i.renew_statements.clone()
    };
    let exp = expiration(expire);
    run_in_tx(
        &pool,
        &stmts,
        &[
            ("name", &i.username),
            ("username", &i.username),
            ("expiration", &exp),
        ],
        "error renewing the database user",
        &cfg.secrets(),
    )
    .await
}

async fn write_static_role(
    d: &Map<String, Value>,
    view: &View,
    ctx: &Ctx<'_>,
    name: &str,
) -> Result<Response, ApiError> {
    password_credentials_only(d)?;
    unsupported(
        d,
        &[
            "rotation_schedule",
            "rotation_window",
            "self_managed_password",
        ],
    )?;
    let created = {
        let _g = ctx.locks.lock(view, &static_key(name)).await;
        let existing: Option<StaticRole> = load(view, &static_key(name)).await?;
        let mut r = existing.clone().unwrap_or(StaticRole {
            db_name: String::new(),
            username: String::new(),
            rotation_period: 0,
            rotation_statements: Vec::new(),
            password: String::new(),
            last_rotation: 0,
            pending_password: None,
        });
        if let Some(n) = opt_string(d, "db_name")? {
            r.db_name = check_name(&n)
                .map_err(|_| ApiError::bad_request("invalid db_name"))?
                .to_owned();
        }
        if r.db_name.is_empty() {
            return Err(ApiError::bad_request("empty database name attribute"));
        }
        match (opt_string(d, "username")?, &existing) {
            (Some(u), Some(e)) if u != e.username => {
                return Err(ApiError::bad_request(
                    "cannot update static account username",
                ));
            }
            (Some(u), None) => {
                if u.is_empty() || u.len() > 63 || u.chars().any(|c| c.is_control() || c == ';') {
                    return Err(ApiError::bad_request("invalid username"));
                }
                r.username = u;
            }
            (None, None) => {
                return Err(ApiError::bad_request(
                    "username is a required field to create a static account",
                ));
            }
            _ => {}
        }
        if let Some(v) = opt(d, "rotation_period") {
            r.rotation_period = fields::duration_secs(v, "rotation_period")?;
        }
        if r.rotation_period < MIN_ROTATION_PERIOD {
            return Err(ApiError::bad_request(format!(
                "rotation_period must be {MIN_ROTATION_PERIOD} seconds or more"
            )));
        }
        if let Some(st) = statements(d, "rotation_statements")? {
            r.rotation_statements = st;
        }
        let cfg: DbConfig = load(view, &config_key(&r.db_name)).await?.ok_or_else(|| {
            ApiError::bad_request(format!("no database connection named {:?}", r.db_name))
        })?;
        if !cfg.allows(name) {
            return Err(ApiError::bad_request(format!(
                "{name:?} is not an allowed role"
            )));
        }
        if existing.is_none() {
            // the connection's own user: its password would change under
            // the connection, and be handed to whoever reads static-creds
            // the user the connection logs in as: the `username` field, or
            // the one written in `connection_url`
            let own = connect_options(&cfg, &cfg.password)?
                .get_username()
                .to_owned();
            if r.username == own || r.username == cfg.username {
                return Err(ApiError::bad_request(
                    "the connection's own user cannot be a static role: use rotate-root",
                ));
            }
            // one static role per user: rotating one would silently break
            // the other's password
            for other in view.list("static-role/").await? {
                if let Some(o) = load::<StaticRole>(view, &static_key(&other)).await?
                    && o.db_name == r.db_name
                    && o.username == r.username
                {
                    return Err(ApiError::bad_request(format!(
                        "the user is already managed by the static role {other:?}"
                    )));
                }
            }
        }
        store(view, &static_key(name), &r).await?;
        existing.is_none()
    };
    // a new static role's password is rotated at once (Vault): from here on
    // only this server knows it; if that fails the role is not kept
    if created
        && let Err(e) = rotate_static_role(view, ctx.pools, ctx.locks, name, ctx.lease.now).await
    {
        let _g = ctx.locks.lock(view, &static_key(name)).await;
        if let Some(r) = load::<StaticRole>(view, &static_key(name)).await?
            && r.last_rotation == 0
        {
            view.delete(&static_key(name)).await?;
        }
        return Err(e);
    }
    Ok(Response::no_content())
}

/// Install `password` for a static role's user.
async fn set_static_password(
    pool: &PgPool,
    cfg: &DbConfig,
    r: &StaticRole,
    password: &str,
) -> Result<(), TxFailure> {
    let mut secrets = cfg.secrets();
    secrets.push(password.to_owned());
    secrets.push(r.password.clone());
    if r.rotation_statements.is_empty() {
        // Vault's default, `ALTER ROLE "{{name}}" WITH PASSWORD '{{password}}'`,
        // with the name quoted as an identifier (it is the operator's)
        let stmt = format!(
            "ALTER ROLE {} WITH PASSWORD '{password}'",
            quote_ident(&r.username)
        );
        return run_in_tx_outcome(
            pool,
            &[stmt],
            &[],
            "error rotating the static role",
            &secrets,
        )
        .await;
    }
    run_in_tx_outcome(
        pool,
        &r.rotation_statements,
        &[
            ("name", &r.username),
            ("username", &r.username),
            ("password", password),
        ],
        "error rotating the static role",
        &secrets,
    )
    .await
}

/// Rotate a static role's password now: the new password is stored ahead
/// (`pending_password`), installed in the database, then committed. A
/// rotation found pending (a crash, or a database that was down) installs
/// that same password, so whatever the database has, the stored password
/// ends up right.
pub async fn rotate_static_role(
    view: &View,
    pools: &Pools,
    locks: &KeyLocks,
    name: &str,
    now: i64,
) -> Result<(), ApiError> {
    // the connection first: getting it may take the connection's lock,
    // which must never be taken under the role's (both are stripes of one
    // lock table: taken nested, the two can be the same stripe)
    let Some(db_name) = load::<StaticRole>(view, &static_key(name))
        .await?
        .map(|r| r.db_name)
    else {
        return Ok(());
    };
    let (pool, cfg) = pool(view, pools, locks, &db_name).await?;
    let _g = locks.lock(view, &static_key(name)).await;
    let Some(mut r) = load::<StaticRole>(view, &static_key(name)).await? else {
        return Ok(());
    };
    if r.db_name != db_name {
        return Err(ApiError::new(
            409,
            "the static role changed during its rotation; try again",
        ));
    }
    let (new, fresh) = match &r.pending_password {
        Some(p) => (p.clone(), false),
        None => {
            let p = generate_password();
            r.pending_password = Some(p.clone());
            store(view, &static_key(name), &r).await?;
            (p, true)
        }
    };
    if let Err(f) = set_static_password(&pool, &cfg, &r, &new).await {
        // a password pending from an earlier attempt may be the database's
        // already: it stays pending until an attempt succeeds
        if fresh && !f.maybe_committed {
            // the database kept the current password, which stays valid
            r.pending_password = None;
            store(view, &static_key(name), &r).await?;
        }
        return Err(f.error);
    }
    r.password = new;
    r.pending_password = None;
    r.last_rotation = now;
    store(view, &static_key(name), &r).await?;
    tracing::info!(role = name, "static role password rotated");
    Ok(())
}

/// A static role with no rotation pending (one found pending is completed
/// first, so the password returned is the database's).
async fn settled_static_role(
    view: &View,
    pools: &Pools,
    locks: &KeyLocks,
    name: &str,
) -> Result<Option<StaticRole>, ApiError> {
    let r: Option<StaticRole> = load(view, &static_key(name)).await?;
    match r {
        Some(r) if r.pending_password.is_some() => {
            rotate_static_role(
                view,
                pools,
                locks,
                name,
                palisade_core::now_nanos() / 1_000_000_000,
            )
            .await?;
            load(view, &static_key(name)).await
        }
        other => Ok(other),
    }
}

/// Rotate every static role of this mount that is due at `now` (or has a
/// rotation pending); returns how many were rotated. A failure is logged
/// and retried at the next pass.
pub async fn rotate_due(
    view: &View,
    pools: &Pools,
    locks: &KeyLocks,
    now: i64,
) -> Result<usize, ApiError> {
    let mut n = 0;
    for name in view.list("static-role/").await? {
        let Some(r) = load::<StaticRole>(view, &static_key(&name)).await? else {
            continue;
        };
        if r.pending_password.is_none() && r.ttl(now) > 0 {
            continue;
        }
        match rotate_static_role(view, pools, locks, &name, now).await {
            Ok(()) => n += 1,
            Err(e) => {
                tracing::warn!(role = %name, status = e.status, "static role rotation failed; will retry")
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_as_vault_splits_them() {
        let s = vec![
            "CREATE ROLE \"{{name}}\"; GRANT x TO \"{{name}}\";".to_owned(),
            "DO $$ BEGIN PERFORM 1; END $$".to_owned(),
            " ; ".to_owned(),
        ];
        assert_eq!(
            split_statements(&s),
            [
                "CREATE ROLE \"{{name}}\"",
                "GRANT x TO \"{{name}}\"",
                "DO $$ BEGIN PERFORM 1; END $$"
            ]
        );
    }

    #[test]
    fn generated_names_need_no_quoting_and_fit_postgres() {
        let u = generate_username("token-\"; DROP", "ro\"le'x", 1_700_000_000);
        assert!(u.len() <= 63, "{u}");
        assert!(
            u.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "{u}"
        );
        assert!(u.starts_with("v-token___-ro_le_x-"), "{u}");
        let p = generate_password();
        assert_eq!(p.len(), 32);
        assert!(p.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn expiration_is_postgres_timestamptz() {
        assert_eq!(expiration(0), "1970-01-01 00:00:00+0000");
        assert_eq!(expiration(1_700_000_000), "2023-11-14 22:13:20+0000");
    }

    #[test]
    fn allowed_roles_globs() {
        assert!(glob_match("ro-*", "ro-app"));
        assert!(glob_match("*-app", "ro-app"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("ro-*", "rw-app"));
        assert!(!glob_match("a*b*c", "ac"));
        assert!(!glob_match("ro", "ro-app"));
    }

    #[test]
    fn redaction_replaces_the_longest_secret_first() {
        let e = sqlx::Error::Io(std::io::Error::other("x"));
        let _ = e;
        let msg = redact("password axbxc rejected", &["x".into(), "axbxc".into()]);
        assert_eq!(msg, "password [redacted] rejected");
    }

    #[test]
    fn database_errors_never_quote_a_secret() {
        let e = sqlx::Error::Protocol("x".into());
        let a = db_error("ctx", &e, &["s3cret".into()]);
        assert_eq!(a.messages, ["ctx: database error"]);
    }

    #[test]
    fn the_connection_url_is_postgres_only_and_credentials_are_encoded() {
        let mut cfg = DbConfig {
            plugin_name: PLUGIN.into(),
            connection_url: "postgresql://{{username}}:{{password}}@127.0.0.1:5432/test".into(),
            username: "root".into(),
            password: "p@ss/w:rd".into(),
            pending_password: None,
            allowed_roles: vec![],
            root_rotation_statements: vec![],
            verify_connection: true,
            max_open_connections: 4,
        };
        let o = connect_options(&cfg, &cfg.password).unwrap();
        assert_eq!(o.get_username(), "root");
        assert!(!format!("{cfg:?}").contains("p@ss"));
        cfg.connection_url = "mysql://root@127.0.0.1/test".into();
        assert_eq!(
            connect_options(&cfg, "x").unwrap_err(),
            ApiError::bad_request("connection_url must be a postgres:// or postgresql:// URL")
        );
    }
}
