//! The database engine against the real PostgreSQL at 127.0.0.1:5432
//! (PALISADE_TEST_PG_URL; skipped when it is not there unless
//! PALISADE_REQUIRE_SERVICES=1): credentials that log in with exactly the
//! password returned, leases that renew and revoke them, revocation when
//! the token is revoked, when the lease expires (also after a restart) and
//! when the mount is disabled, root rotation completed after a crash, and
//! every refusal with its exact error.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::*;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{Connection, Row};

fn pg_url() -> String {
    std::env::var("PALISADE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// The test database as its superuser, or `None` (test skipped) when it
/// is not running and not required.
async fn admin() -> Option<PgPool> {
    match PgPool::connect(&pg_url()).await {
        Ok(p) => Some(p),
        Err(e) => {
            if std::env::var("PALISADE_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("PostgreSQL required but unavailable: {e}");
            }
            eprintln!("SKIPPED: PostgreSQL unavailable ({e})");
            None
        }
    }
}

/// `postgresql://{{username}}:{{password}}@host:port/db` for the test database.
fn templated_url() -> String {
    let o = PgConnectOptions::from_str(&pg_url()).unwrap();
    format!(
        "postgresql://{{{{username}}}}:{{{{password}}}}@{}:{}/{}",
        o.get_host(),
        o.get_port(),
        o.get_database().unwrap_or("test")
    )
}

const CREATE: &str = r#"CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT pg_read_all_data TO "{{name}}";"#;

async fn role_exists(pg: &PgPool, name: &str) -> bool {
    sqlx::query("SELECT 1 FROM pg_roles WHERE rolname = $1")
        .bind(name)
        .fetch_optional(pg)
        .await
        .unwrap()
        .is_some()
}

/// Whether `password` is the one PostgreSQL stores for `user` (its
/// SCRAM-SHA-256 verifier: StoredKey = SHA-256(HMAC(SaltedPassword,
/// "Client Key")), RFC 5802 / 7677). With trust authentication on the test
/// server a login alone would not prove the password.
async fn password_is(pg: &PgPool, user: &str, password: &str) -> bool {
    use aws_lc_rs::{digest, hmac, pbkdf2};
    let v: String = sqlx::query("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
        .bind(user)
        .fetch_one(pg)
        .await
        .unwrap()
        .get(0);
    let rest = v.strip_prefix("SCRAM-SHA-256$").expect("a SCRAM verifier");
    let (params, keys) = rest.split_once('$').unwrap();
    let (iter, salt) = params.split_once(':').unwrap();
    let (stored, _) = keys.split_once(':').unwrap();
    let salt = STANDARD.decode(salt).unwrap();
    let mut salted = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        std::num::NonZeroU32::new(iter.parse().unwrap()).unwrap(),
        &salt,
        password.as_bytes(),
        &mut salted,
    );
    let client_key = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &salted), b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
    STANDARD.encode(stored_key.as_ref()) == stored
}

/// Log in as `user` and ask who we are.
async fn login(user: &str, password: &str) -> Result<String, String> {
    let o = PgConnectOptions::from_str(&pg_url())
        .unwrap()
        .username(user)
        .password(password);
    let mut c = sqlx::PgConnection::connect_with(&o)
        .await
        .map_err(|e| e.to_string())?;
    let who: String = sqlx::query("SELECT current_user::text")
        .fetch_one(&mut c)
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    let _ = c.close().await;
    Ok(who)
}

struct Db {
    s: TestServer,
    pg: PgPool,
    /// The role name this test configured (unique per test).
    role: String,
}

/// A server with `database/` mounted, a connection `pg` allowing `role`,
/// and a role with `default_ttl`.
async fn setup(default_ttl: &str) -> Option<Db> {
    let pg = admin().await?;
    Some(setup_on(TestServer::dev().await, pg, default_ttl).await)
}

async fn setup_on(s: TestServer, pg: PgPool, default_ttl: &str) -> Db {
    let r = s
        .post("sys/mounts/database", &s.root, json!({"type": "database"}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let role = s.unique("ro");
    let r = s
        .post(
            "database/config/pg",
            &s.root,
            json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": templated_url(),
                "username": "postgres",
                "password": "root-secret-never-shown",
                "allowed_roles": [role],
            }),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .post(
            &format!("database/roles/{role}"),
            &s.root,
            json!({"db_name": "pg", "creation_statements": [CREATE], "default_ttl": default_ttl, "max_ttl": "1h"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    Db { s, pg, role }
}

async fn creds(db: &Db, token: &str) -> (String, String, String, Value) {
    let r =
        db.s.get(&format!("database/creds/{}", db.role), token)
            .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let d = r.data();
    (
        d["username"].as_str().unwrap().to_owned(),
        d["password"].as_str().unwrap().to_owned(),
        r.body["lease_id"].as_str().unwrap().to_owned(),
        r.body.clone(),
    )
}

/// Poll until `f` holds (the expiry manager runs on its own), or fail.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn credentials_log_in_with_the_password_returned_and_not_after_revocation() {
    let Some(db) = setup("10m").await else { return };
    let (user, pass, lease, body) = creds(&db, &db.s.root).await;
    assert!(user.starts_with("v-root-"), "{user}");
    assert!(
        lease.starts_with(&format!("database/creds/{}/", db.role)),
        "{lease}"
    );
    assert_eq!(body["lease_duration"], 600);
    assert_eq!(body["renewable"], true);
    assert!(role_exists(&db.pg, &user).await);
    assert!(password_is(&db.pg, &user, &pass).await);
    assert!(!password_is(&db.pg, &user, "something-else").await);
    assert_eq!(login(&user, &pass).await.unwrap(), user);

    // lookup
    let r =
        db.s.put("sys/leases/lookup", &db.s.root, json!({"lease_id": lease}))
            .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["id"], lease.as_str());
    assert_eq!(r.data()["renewable"], true);
    assert!(r.data()["last_renewal"].is_null());
    let ttl = r.data()["ttl"].as_i64().unwrap();
    assert!((595..=600).contains(&ttl), "{ttl}");

    // renew moves VALID UNTIL
    let before: Option<String> =
        sqlx::query("SELECT rolvaliduntil::text FROM pg_roles WHERE rolname = $1")
            .bind(&user)
            .fetch_one(&db.pg)
            .await
            .unwrap()
            .get(0);
    let r =
        db.s.put(
            "sys/leases/renew",
            &db.s.root,
            json!({"lease_id": lease, "increment": "30m"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["lease_id"], lease.as_str());
    assert_eq!(r.body["lease_duration"], 1800);
    let after: Option<String> =
        sqlx::query("SELECT rolvaliduntil::text FROM pg_roles WHERE rolname = $1")
            .bind(&user)
            .fetch_one(&db.pg)
            .await
            .unwrap()
            .get(0);
    assert_ne!(before, after);
    // past the role's max TTL: capped, with Vault's warning
    let r =
        db.s.put(
            "sys/leases/renew",
            &db.s.root,
            json!({"lease_id": lease, "increment": "5h"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["lease_duration"].as_i64().unwrap() <= 3600);
    assert!(
        r.body["warnings"][0].as_str().unwrap().contains("capped"),
        "{}",
        r.text
    );

    // revoke: the role is gone and cannot log in
    let r =
        db.s.put("sys/leases/revoke", &db.s.root, json!({"lease_id": lease}))
            .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(!role_exists(&db.pg, &user).await);
    let e = login(&user, &pass).await.unwrap_err();
    assert!(e.contains("does not exist"), "{e}");
    // and the lease is gone
    let r =
        db.s.put("sys/leases/lookup", &db.s.root, json!({"lease_id": lease}))
            .await;
    assert_error(&r, 400, "invalid lease");
    let r =
        db.s.put("sys/leases/renew", &db.s.root, json!({"lease_id": lease}))
            .await;
    assert_error(&r, 400, "lease not found");
    // revoking again is a no-op
    let r =
        db.s.put(&format!("sys/leases/revoke/{lease}"), &db.s.root, json!({}))
            .await;
    assert_eq!(r.status, 204, "{}", r.text);
}

#[tokio::test]
async fn revoking_the_token_revokes_its_credentials() {
    let Some(db) = setup("10m").await else { return };
    let t =
        db.s.token_with(&format!(
            r#"path "database/creds/{}" {{ capabilities = ["read"] }}"#,
            db.role
        ))
        .await;
    let (user, _, lease, _) = creds(&db, &t.id).await;
    assert!(role_exists(&db.pg, &user).await);
    palisade_server::spawn_lease_expiry(db.s.core.clone());
    let r =
        db.s.post("auth/token/revoke", &db.s.root, json!({"token": t.id}))
            .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let pg = db.pg.clone();
    let u = user.clone();
    eventually("role dropped", move || {
        let pg = pg.clone();
        let u = u.clone();
        async move { !role_exists(&pg, &u).await }
    })
    .await;
    let r =
        db.s.put("sys/leases/lookup", &db.s.root, json!({"lease_id": lease}))
            .await;
    assert_error(&r, 400, "invalid lease");
}

#[tokio::test]
async fn an_expired_lease_is_revoked_also_after_a_restart() {
    let Some(pg) = admin().await else { return };
    let mut s = TestServer::uninit().await;
    let keys = s.init_and_unseal(1, 1).await;
    let db = setup_on(s, pg, "1m").await;
    let (user, _, lease, _) = creds(&db, &db.s.root).await;
    let clock = db.s.clock.clone();
    let root = db.s.root.clone();
    // stop before it expires; the lease is in storage, not in a task
    let dir = db.s.stop().await;
    let s = TestServer::start_in(
        Opts {
            dev: false,
            clock: clock.clone(),
            ..Opts::default()
        },
        dir,
    )
    .await;
    s.unseal(&keys).await;
    assert!(role_exists(&db.pg, &user).await, "not yet due");
    let r = s
        .put("sys/leases/lookup", &root, json!({"lease_id": lease}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    palisade_server::spawn_lease_expiry(s.core.clone());
    clock.advance(Duration::from_secs(61));
    let pg = db.pg.clone();
    let u = user.clone();
    eventually("expired role dropped", move || {
        let pg = pg.clone();
        let u = u.clone();
        async move { !role_exists(&pg, &u).await }
    })
    .await;
    let r = s
        .put("sys/leases/lookup", &root, json!({"lease_id": lease}))
        .await;
    assert_error(&r, 400, "invalid lease");
}

#[tokio::test]
async fn refusals_name_the_problem_and_create_nothing() {
    let Some(db) = setup("10m").await else { return };
    let s = &db.s;
    // unknown role
    let r = s.get("database/creds/nosuch", &s.root).await;
    assert_error(&r, 400, "unknown role: nosuch");
    // a role the connection does not allow
    let other = s.unique("rw");
    let r = s
        .post(
            &format!("database/roles/{other}"),
            &s.root,
            json!({"db_name": "pg", "creation_statements": CREATE}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.get(&format!("database/creds/{other}"), &s.root).await;
    assert_error(&r, 400, &format!("{other:?} is not an allowed role"));
    // roles: required fields
    let r = s
        .post(
            "database/roles/x",
            &s.root,
            json!({"creation_statements": CREATE}),
        )
        .await;
    assert_error(&r, 400, "empty database name attribute");
    let r = s
        .post("database/roles/x", &s.root, json!({"db_name": "pg"}))
        .await;
    assert_error(&r, 400, "empty creation statements");
    let r = s
        .post(
            "database/roles/x",
            &s.root,
            json!({"db_name": "pg", "creation_statements": CREATE, "default_ttl": "2h", "max_ttl": "1h"}),
        )
        .await;
    assert_error(&r, 400, "default_ttl cannot be greater than max_ttl");
    // config: plugin, URL, verification
    let r = s
        .post(
            "database/config/my",
            &s.root,
            json!({"plugin_name": "mysql-database-plugin", "connection_url": "x"}),
        )
        .await;
    assert_error(
        &r,
        400,
        "unsupported database plugin \"mysql-database-plugin\": this server speaks \"postgresql-database-plugin\"",
    );
    let r = s
        .post(
            "database/config/my",
            &s.root,
            json!({"plugin_name": "postgresql-database-plugin", "connection_url": "mysql://u@127.0.0.1/x"}),
        )
        .await;
    assert_error(
        &r,
        400,
        "connection_url must be a postgres:// or postgresql:// URL",
    );
    let r = s
        .post(
            "database/config/down",
            &s.root,
            json!({"plugin_name": "postgresql-database-plugin",
                   "connection_url": "postgresql://{{username}}:{{password}}@127.0.0.1:1/test",
                   "username": "postgres", "password": "pw-that-must-not-leak"}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.text.contains("error creating database object: error connecting to the database: cannot reach the database"),
        "{}",
        r.text
    );
    assert!(!r.text.contains("pw-that-must-not-leak"));
    assert_eq!(s.get("database/config/down", &s.root).await.status, 404);
    let r = s
        .post(
            "database/config/my",
            &s.root,
            json!({"plugin_name": "postgresql-database-plugin", "connection_url": templated_url(), "password_policy": "p"}),
        )
        .await;
    assert_error(
        &r,
        400,
        "\"password_policy\" is not supported by this server",
    );

    // reading a connection never returns its password
    let r = s.get("database/config/pg", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["connection_details"]["username"], "postgres");
    assert!(!r.text.contains("root-secret-never-shown"), "{}", r.text);

    // no lease was recorded by any refusal
    let r = s.list("sys/leases/lookup/database/creds/", &s.root).await;
    assert_empty_404(&r);
}

#[tokio::test]
async fn a_failed_creation_statement_leaves_no_role_and_no_lease() {
    let Some(db) = setup("10m").await else { return };
    let s = &db.s;
    // the first statement succeeds, the second fails: the transaction
    // rolls both back
    let r = s
        .post(
            &format!("database/roles/{}", db.role),
            &s.root,
            json!({"db_name": "pg", "creation_statements": [
                r#"CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}'"#,
                r#"GRANT no_such_role_here TO "{{name}}""#,
            ]}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.get(&format!("database/creds/{}", db.role), &s.root).await;
    assert_error(
        &r,
        500,
        "error creating the database user: role \"no_such_role_here\" does not exist",
    );
    let r = s.list("sys/leases/lookup/database/creds/", &s.root).await;
    assert_empty_404(&r);
    assert_eq!(s.core.leases.count(), 0);
}

#[tokio::test]
async fn disabling_the_mount_revokes_its_credentials() {
    let Some(db) = setup("10m").await else { return };
    let (user, _, _, _) = creds(&db, &db.s.root).await;
    let (user2, _, _, _) = creds(&db, &db.s.root).await;
    assert!(role_exists(&db.pg, &user).await && role_exists(&db.pg, &user2).await);
    let r = db.s.delete("sys/mounts/database", &db.s.root).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(!role_exists(&db.pg, &user).await);
    assert!(!role_exists(&db.pg, &user2).await);
    assert_eq!(db.s.core.leases.count(), 0);
}

#[tokio::test]
async fn revoke_prefix_needs_sudo_and_revokes_everything_under_it() {
    let Some(db) = setup("10m").await else { return };
    let s = &db.s;
    let (u1, _, l1, _) = creds(&db, &s.root).await;
    let (u2, _, _, _) = creds(&db, &s.root).await;
    let prefix = format!("database/creds/{}", db.role);
    let no_sudo = s
        .token_with(
            r#"path "sys/leases/*" { capabilities = ["update", "list"] }
               path "sys/revoke-prefix/*" { capabilities = ["update"] }"#,
        )
        .await;
    for p in [
        format!("sys/leases/revoke-prefix/{prefix}"),
        format!("sys/leases/revoke-force/{prefix}"),
        format!("sys/revoke-prefix/{prefix}"),
    ] {
        let r = s.put(&p, &no_sudo.id, json!({})).await;
        assert_denied(&r);
    }
    let r = s
        .list("sys/leases/lookup/database/creds/", &no_sudo.id)
        .await;
    assert_denied(&r);
    assert!(role_exists(&db.pg, &u1).await && role_exists(&db.pg, &u2).await);
    // with sudo: listing, then revoking the prefix
    let r = s
        .list(&format!("sys/leases/lookup/{prefix}/"), &s.root)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let keys = r.data()["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().any(|k| l1.ends_with(k.as_str().unwrap())));
    let r = s
        .put(
            &format!("sys/leases/revoke-prefix/{prefix}"),
            &s.root,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(!role_exists(&db.pg, &u1).await && !role_exists(&db.pg, &u2).await);
    // lease ids that are not canonical paths name no lease
    for bad in ["database//creds", "database/../sys", "/database"] {
        let r = s
            .put("sys/leases/lookup", &s.root, json!({"lease_id": bad}))
            .await;
        assert_error(&r, 400, "invalid lease ID");
    }
}

#[tokio::test]
async fn rotate_root_installs_a_password_nobody_knows_and_an_interrupted_one_completes() {
    let Some(pg) = admin().await else { return };
    let s = TestServer::dev().await;
    let r = s
        .post("sys/mounts/database", &s.root, json!({"type": "database"}))
        .await;
    assert_eq!(r.status, 204);
    let admin_role = format!(
        "palisade_root_{}_{}",
        std::process::id(),
        palisade_core::uuid_v4()[..8].to_owned()
    );
    let initial = "initial-root-password-1";
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE \"{admin_role}\" WITH LOGIN SUPERUSER PASSWORD '{initial}'"
    )))
    .execute(&pg)
    .await
    .unwrap();
    let r = s
        .post(
            "database/config/pg",
            &s.root,
            json!({"plugin_name": "postgresql-database-plugin", "connection_url": templated_url(),
                   "username": admin_role, "password": initial, "allowed_roles": "*"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(password_is(&pg, &admin_role, initial).await);
    let r = s.post("database/rotate-root/pg", &s.root, json!({})).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(!password_is(&pg, &admin_role, initial).await, "rotated");
    let r = s.get("database/config/pg", &s.root).await;
    assert!(!r.text.contains("password\""), "{}", r.text);

    // a crash after the write-ahead record and before the database changed:
    // the next use installs the pending password, then it is the stored one
    let m = s
        .core
        .mount_table()
        .unwrap()
        .entries
        .iter()
        .find(|m| m.path == "database/")
        .unwrap()
        .clone();
    let key = format!("{}config/pg", m.view_prefix());
    let mut cfg: Value =
        serde_json::from_slice(&s.core.barrier.get(&key).await.unwrap().unwrap()).unwrap();
    cfg["pending_password"] = json!("the-pending-password-2");
    s.core
        .barrier
        .put(&key, &serde_json::to_vec(&cfg).unwrap())
        .await
        .unwrap();
    let role = s.unique("ro");
    let r = s
        .post(
            &format!("database/roles/{role}"),
            &s.root,
            json!({"db_name": "pg", "creation_statements": CREATE}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.get(&format!("database/creds/{role}"), &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(password_is(&pg, &admin_role, "the-pending-password-2").await);
    let cfg: Value =
        serde_json::from_slice(&s.core.barrier.get(&key).await.unwrap().unwrap()).unwrap();
    assert!(cfg.get("pending_password").is_none(), "{cfg}");
    assert_eq!(cfg["password"], "the-pending-password-2");

    let lease = r.body["lease_id"].as_str().unwrap().to_owned();
    let r = s
        .put("sys/leases/revoke", &s.root, json!({"lease_id": lease}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP ROLE \"{admin_role}\"")))
        .execute(&pg)
        .await
        .unwrap();
}

#[tokio::test]
async fn generated_and_root_passwords_never_reach_the_audit_log() {
    let Some(db) = setup("10m").await else { return };
    let log = db.s.enable_audit("a").await;
    let r =
        db.s.post(
            "database/config/pg",
            &db.s.root,
            json!({"password": "root-secret-never-shown", "allowed_roles": [db.role]}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let (_, pass, lease, _) = creds(&db, &db.s.root).await;
    let r =
        db.s.put("sys/leases/revoke", &db.s.root, json!({"lease_id": lease}))
            .await;
    assert_eq!(r.status, 204);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("database/creds/"),
        "the requests were audited"
    );
    assert!(!text.contains(&pass), "generated password in the audit log");
    assert!(
        !text.contains("root-secret-never-shown"),
        "root password in the audit log"
    );
}

#[tokio::test]
async fn a_database_that_is_down_is_a_clear_error_and_its_lease_is_retried() {
    let Some(db) = setup("10m").await else { return };
    let s = &db.s;
    let (user, _, lease, _) = creds(&db, &s.root).await;
    // point the connection at a closed port without verifying
    let r = s
        .post(
            "database/config/pg",
            &s.root,
            json!({"connection_url": "postgresql://{{username}}:{{password}}@127.0.0.1:1/test", "verify_connection": false}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.get(&format!("database/creds/{}", db.role), &s.root).await;
    assert_error(
        &r,
        500,
        "error connecting to the database: cannot reach the database: connection refused",
    );
    let r = s
        .put("sys/leases/revoke", &s.root, json!({"lease_id": lease}))
        .await;
    assert_error(
        &r,
        500,
        "error connecting to the database: cannot reach the database: connection refused",
    );
    // still leased, still there
    let r = s
        .put("sys/leases/lookup", &s.root, json!({"lease_id": lease}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(role_exists(&db.pg, &user).await);
    // the expiry manager retries with backoff; once the database is back it
    // succeeds
    let now = s.core.tokens.now();
    s.core.leases.make_due(vec![lease.clone()], now).unwrap();
    assert_eq!(s.core.revoke_due_leases(now).await, 0);
    let r = s
        .post(
            "database/config/pg",
            &s.root,
            json!({"connection_url": templated_url()}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(s.core.revoke_due_leases(now).await, 0, "backing off");
    assert_eq!(s.core.revoke_due_leases(now + 2).await, 1);
    assert!(!role_exists(&db.pg, &user).await);
}

/// The stored static role entry, to play a crash (a write-ahead password
/// left pending).
async fn set_pending(s: &TestServer, key_in_mount: &str, field: &str, value: &str) {
    let m = s
        .core
        .mount_table()
        .unwrap()
        .entries
        .iter()
        .find(|m| m.path == "database/")
        .unwrap()
        .clone();
    let key = format!("{}{key_in_mount}", m.view_prefix());
    let mut v: Value =
        serde_json::from_slice(&s.core.barrier.get(&key).await.unwrap().unwrap()).unwrap();
    v[field] = json!(value);
    s.core
        .barrier
        .put(&key, &serde_json::to_vec(&v).unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn static_roles_rotate_on_creation_on_schedule_on_demand_and_after_a_crash() {
    let Some(db) = setup("10m").await else { return };
    let s = &db.s;
    let user = format!(
        "palisade_static_{}_{}",
        std::process::id(),
        palisade_core::uuid_v4()[..8].to_owned()
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE \"{user}\" WITH LOGIN PASSWORD 'known-initial-password'"
    )))
    .execute(&db.pg)
    .await
    .unwrap();
    let role = s.unique("st");
    // the connection must allow the static role too
    let r = s
        .post(
            "database/config/pg",
            &s.root,
            json!({"allowed_roles": [db.role, role]}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .post(
            &format!("database/static-roles/{role}"),
            &s.root,
            json!({"db_name": "pg", "username": user, "rotation_period": "1h"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    // rotated at once: the initial password no longer works
    assert!(!password_is(&db.pg, &user, "known-initial-password").await);
    let c1 = static_creds(s, &role).await;
    assert_eq!(c1["username"], user.as_str());
    assert_eq!(c1["rotation_period"], 3600);
    assert!(c1["ttl"].as_i64().unwrap() > 3590);
    let p1 = c1["password"].as_str().unwrap().to_owned();
    assert!(password_is(&db.pg, &user, &p1).await);

    // not due: nothing rotates; due: it rotates
    let now = s.core.tokens.now();
    assert_eq!(s.core.rotate_static_roles(now).await.unwrap(), 0);
    assert_eq!(s.core.rotate_static_roles(now + 3601).await.unwrap(), 1);
    let p2 = static_creds(s, &role).await["password"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(p1, p2);
    assert!(password_is(&db.pg, &user, &p2).await);

    // on demand
    let r = s
        .post(&format!("database/rotate-role/{role}"), &s.root, json!({}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let p3 = static_creds(s, &role).await["password"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(p2, p3);
    assert!(password_is(&db.pg, &user, &p3).await);

    // a crash after the write-ahead record: reading completes the rotation,
    // so the password returned is the database's
    set_pending(
        s,
        &format!("static-role/{role}"),
        "pending_password",
        "pending-static-password-4",
    )
    .await;
    let p4 = static_creds(s, &role).await["password"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(p4, "pending-static-password-4");
    assert!(password_is(&db.pg, &user, &p4).await);

    // the database is down: rotation fails with a clear error and the
    // current password stays the one returned (and valid)
    let r = s
        .post(
            "database/config/pg",
            &s.root,
            json!({"connection_url": "postgresql://{{username}}:{{password}}@127.0.0.1:1/test", "verify_connection": false}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .post(&format!("database/rotate-role/{role}"), &s.root, json!({}))
        .await;
    assert_error(
        &r,
        500,
        "error connecting to the database: cannot reach the database: connection refused",
    );
    assert_eq!(static_creds(s, &role).await["password"], p4.as_str());
    assert!(password_is(&db.pg, &user, &p4).await);

    // refusals
    let r = s
        .post(
            &format!("database/static-roles/{role}"),
            &s.root,
            json!({"username": "other"}),
        )
        .await;
    assert_error(&r, 400, "cannot update static account username");
    let r = s
        .post(
            "database/static-roles/x",
            &s.root,
            json!({"db_name": "pg", "username": "u", "rotation_period": "4s"}),
        )
        .await;
    assert_error(&r, 400, "rotation_period must be 5 seconds or more");
    let r = s
        .post(
            "database/static-roles/x",
            &s.root,
            json!({"db_name": "pg", "rotation_period": "1h"}),
        )
        .await;
    assert_error(
        &r,
        400,
        "username is a required field to create a static account",
    );
    let r = s.get("database/static-creds/nosuch", &s.root).await;
    assert_error(&r, 400, "unknown role: nosuch");
    // review findings: the connection's own user, a user another static
    // role manages, a name statements would split
    let r = s
        .post(
            "database/config/pg",
            &s.root,
            json!({"allowed_roles": "*", "verify_connection": false}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .post(
            "database/static-roles/rootuser",
            &s.root,
            json!({"db_name": "pg", "username": "postgres", "rotation_period": "1h"}),
        )
        .await;
    assert_error(
        &r,
        400,
        "the connection's own user cannot be a static role: use rotate-root",
    );
    let r = s
        .post(
            "database/static-roles/twice",
            &s.root,
            json!({"db_name": "pg", "username": user, "rotation_period": "1h"}),
        )
        .await;
    assert_error(
        &r,
        400,
        &format!("the user is already managed by the static role {role:?}"),
    );
    let r = s
        .post(
            "database/static-roles/semi",
            &s.root,
            json!({"db_name": "pg", "username": "a;b", "rotation_period": "1h"}),
        )
        .await;
    assert_error(&r, 400, "invalid username");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP ROLE \"{user}\"")))
        .execute(&db.pg)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_static_role_whose_user_does_not_exist_is_not_kept() {
    let Some(db) = setup("10m").await else { return };
    let s = &db.s;
    let r = s
        .post("database/config/pg", &s.root, json!({"allowed_roles": "*"}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .post(
            "database/static-roles/ghost",
            &s.root,
            json!({"db_name": "pg", "username": "no_such_user_here", "rotation_period": "1h"}),
        )
        .await;
    assert_error(
        &r,
        500,
        "error rotating the static role: role \"no_such_user_here\" does not exist",
    );
    assert_eq!(
        s.get("database/static-roles/ghost", &s.root).await.status,
        404
    );
}

async fn static_creds(s: &TestServer, role: &str) -> Value {
    let r = s
        .get(&format!("database/static-creds/{role}"), &s.root)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.data().clone()
}

/// Review finding: a lease revoked while its role was still being created
/// (token revoked mid-request) must not leave the role behind.
#[tokio::test]
async fn revoking_while_the_role_is_being_created_leaves_no_role() {
    let Some(db) = setup("1h").await else { return };
    let s = &db.s;
    let r = s
        .post(
            &format!("database/roles/{}", db.role),
            &s.root,
            json!({"db_name": "pg", "creation_statements": [CREATE, "SELECT pg_sleep(1)"]}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let t = s
        .token_with(&format!(
            r#"path "database/creds/{}" {{ capabilities = ["read"] }}"#,
            db.role
        ))
        .await;
    let (http, url, tok) = (
        s.http.clone(),
        s.url(&format!("database/creds/{}", db.role)),
        t.id.clone(),
    );
    let creds = tokio::spawn(async move {
        let r = http
            .get(url)
            .header("X-Vault-Token", tok)
            .send()
            .await
            .unwrap();
        r.json::<Value>().await.unwrap()
    });
    // the lease exists (it is written first), the role not yet
    eventually("lease recorded", || async { s.core.leases.count() == 1 }).await;
    let r = s
        .post("auth/token/revoke", &s.root, json!({"token": t.id}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let now = s.core.tokens.now();
    let revoking = {
        let core = s.core.clone();
        tokio::spawn(async move { core.revoke_due_leases(now).await })
    };
    let body = creds.await.unwrap();
    revoking.await.unwrap();
    let user = body["data"]["username"].as_str().unwrap().to_owned();
    let pg = db.pg.clone();
    eventually("the role created mid-revocation is dropped", move || {
        let pg = pg.clone();
        let u = user.clone();
        async move { !role_exists(&pg, &u).await }
    })
    .await;
    assert_eq!(s.core.leases.count(), 0);
}

/// Review finding: disabling a mount while credentials are being created
/// must not leave roles behind, nor leases that forget them.
#[tokio::test]
async fn disabling_the_mount_during_creation_leaves_no_role() {
    let Some(db) = setup("1h").await else { return };
    let s = &db.s;
    let r = s
        .post(
            &format!("database/roles/{}", db.role),
            &s.root,
            json!({"db_name": "pg", "creation_statements": [CREATE, "SELECT pg_sleep(0.3)"]}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (http, url, tok) = (
            s.http.clone(),
            s.url(&format!("database/creds/{}", db.role)),
            s.root.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let r = http
                .get(url)
                .header("X-Vault-Token", tok)
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap_or(Value::Null)
        }));
    }
    eventually("creation under way", || async { s.core.leases.count() > 0 }).await;
    let r = s.delete("sys/mounts/database", &s.root).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let mut users = Vec::new();
    for t in tasks {
        if let Some(u) = t.await.unwrap()["data"]["username"].as_str() {
            users.push(u.to_owned());
        }
    }
    assert!(
        !users.is_empty(),
        "requests in flight when the unmount began complete"
    );
    for u in &users {
        assert!(!role_exists(&db.pg, u).await, "{u} survived the unmount");
    }
    assert_eq!(s.core.leases.count(), 0);
    // afterwards the mount is gone for good
    let r = s.get(&format!("database/creds/{}", db.role), &s.root).await;
    assert_eq!(r.status, 404, "{}", r.text);
}

/// Review finding: one database that hangs must not hold up the
/// revocation of other mounts' leases.
#[tokio::test]
async fn a_hanging_database_does_not_hold_up_other_mounts_revocations() {
    let Some(db) = setup("1h").await else { return };
    let s = &db.s;
    // a second mount whose database will hang (accepts, never answers)
    let tarpit = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tarpit.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = tarpit.accept().await {
            held.push(c);
        }
    });
    let r = s
        .post("sys/mounts/db2", &s.root, json!({"type": "database"}))
        .await;
    assert_eq!(r.status, 204);
    let r = s
        .post(
            "db2/config/pg",
            &s.root,
            json!({"plugin_name": "postgresql-database-plugin", "connection_url": templated_url(),
                   "username": "postgres", "password": "x", "allowed_roles": "*"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .post(
            "db2/roles/r",
            &s.root,
            json!({"db_name": "pg", "creation_statements": CREATE}),
        )
        .await;
    assert_eq!(r.status, 204);
    let mut dead = Vec::new();
    for _ in 0..3 {
        let r = s.get("db2/creds/r", &s.root).await;
        assert_eq!(r.status, 200, "{}", r.text);
        dead.push(r.body["lease_id"].as_str().unwrap().to_owned());
    }
    let r = s
        .post(
            "db2/config/pg",
            &s.root,
            json!({"connection_url": format!("postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{port}/test"), "verify_connection": false}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let (healthy_user, _, healthy, _) = creds(&db, &s.root).await;
    let now = s.core.tokens.now();
    let mut due = dead.clone();
    due.push(healthy);
    s.core.leases.make_due(due, now).unwrap();
    let pass = {
        let core = s.core.clone();
        tokio::spawn(async move { core.revoke_due_leases(now).await })
    };
    let pg = db.pg.clone();
    eventually("the healthy mount's lease is revoked", move || {
        let pg = pg.clone();
        let u = healthy_user.clone();
        async move { !role_exists(&pg, &u).await }
    })
    .await;
    assert!(
        !pass.is_finished(),
        "revoked while the hanging database still holds its pass"
    );
    // a mount change is not held up by the hanging revocations either
    let started = std::time::Instant::now();
    let r = s
        .post("sys/mounts/kvx", &s.root, json!({"type": "kv"}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(pass.await.unwrap(), 1);
    // the hanging mount's leases back off (counted from when they failed)
    assert!(s.core.leases.due(s.core.tokens.now()).unwrap().is_empty());
    // the database answers again: the hanging mount's leases are revoked
    // (their roles dropped, nothing left in PostgreSQL by this test)
    let r = s
        .post(
            "db2/config/pg",
            &s.root,
            json!({"connection_url": templated_url()}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .put("sys/leases/revoke-prefix/db2", &s.root, json!({}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(s.core.leases.count(), 0);
}

/// Review finding: every lease id the server issues can be looked up,
/// renewed and revoked (non-ASCII mount paths, long role names).
#[tokio::test]
async fn every_issued_lease_id_is_accepted_back() {
    let Some(pg) = admin().await else { return };
    let s = TestServer::dev().await;
    let long = "r".repeat(1100);
    for (mount, role) in [("d\u{e9}", "ro".to_owned()), ("dbl", long)] {
        let r = s
            .post(
                &format!("sys/mounts/{mount}"),
                &s.root,
                json!({"type": "database"}),
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.text);
        let r = s
            .post(
                &format!("{mount}/config/pg"),
                &s.root,
                json!({"plugin_name": "postgresql-database-plugin", "connection_url": templated_url(),
                       "username": "postgres", "password": "x", "allowed_roles": "*"}),
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.text);
        let r = s
            .post(
                &format!("{mount}/roles/{role}"),
                &s.root,
                json!({"db_name": "pg", "creation_statements": CREATE}),
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.text);
        let r = s.get(&format!("{mount}/creds/{role}"), &s.root).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let lease = r.body["lease_id"].as_str().unwrap().to_owned();
        let user = r.data()["username"].as_str().unwrap().to_owned();
        let r = s
            .put("sys/leases/lookup", &s.root, json!({"lease_id": lease}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let r = s
            .put("sys/leases/renew", &s.root, json!({"lease_id": lease}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let r = s
            .put("sys/leases/revoke", &s.root, json!({"lease_id": lease}))
            .await;
        assert_eq!(r.status, 204, "{}", r.text);
        assert!(!role_exists(&pg, &user).await);
    }
}

/// Verification findings: a database that hangs holds up neither mount
/// changes (while a mount with leases on it is being disabled, or while a
/// static role on it is being rotated) nor anything else.
#[tokio::test]
async fn a_hanging_database_holds_up_no_mount_change() {
    let Some(db) = setup("1h").await else { return };
    let s = &db.s;
    let tarpit = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tarpit.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = tarpit.accept().await {
            held.push(c);
        }
    });
    let user = format!(
        "palisade_hang_{}_{}",
        std::process::id(),
        &palisade_core::uuid_v4()[..8]
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE \"{user}\" WITH LOGIN PASSWORD 'x'"
    )))
    .execute(&db.pg)
    .await
    .unwrap();
    let r = s
        .post("database/config/pg", &s.root, json!({"allowed_roles": "*"}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .post(
            "database/static-roles/st",
            &s.root,
            json!({"db_name": "pg", "username": user, "rotation_period": "5s"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let (role_user, _, _, _) = creds(&db, &s.root).await;
    let hang = format!("postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{port}/test");
    let r = s
        .post(
            "database/config/pg",
            &s.root,
            json!({"connection_url": hang, "verify_connection": false}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    // a static-role rotation waiting on it
    let rotating = {
        let core = s.core.clone();
        let now = s.core.tokens.now() + 6;
        tokio::spawn(async move { core.rotate_static_roles(now).await })
    };
    // the mount being disabled, waiting on it to revoke the lease
    let disabling = {
        let (http, url, tok) = (s.http.clone(), s.url("sys/mounts/database"), s.root.clone());
        tokio::spawn(async move {
            http.delete(url)
                .header("X-Vault-Token", tok)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let r = s
        .post("sys/mounts/unrelated", &s.root, json!({"type": "kv"}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "held up {:?}",
        started.elapsed()
    );
    assert!(!disabling.is_finished() && !rotating.is_finished());
    // the disable fails (its lease cannot be revoked) and the mount stays
    assert_eq!(disabling.await.unwrap(), 400);
    rotating.await.unwrap().unwrap();
    // the database back: revoke and clean up
    let r = s
        .post(
            "database/config/pg",
            &s.root,
            json!({"connection_url": templated_url()}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.delete("sys/mounts/database", &s.root).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(!role_exists(&db.pg, &role_user).await);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP ROLE IF EXISTS \"{user}\""
    )))
    .execute(&db.pg)
    .await
    .unwrap();
}

/// Verification finding: the connection's own user is refused as a static
/// role also when it is written in `connection_url` only.
#[tokio::test]
async fn the_connection_user_in_the_url_is_not_a_static_role_either() {
    let Some(pg) = admin().await else { return };
    let s = TestServer::dev().await;
    let r = s
        .post("sys/mounts/database", &s.root, json!({"type": "database"}))
        .await;
    assert_eq!(r.status, 204);
    let o = PgConnectOptions::from_str(&pg_url()).unwrap();
    let r = s
        .post(
            "database/config/pg",
            &s.root,
            json!({"plugin_name": "postgresql-database-plugin", "allowed_roles": "*",
                   "connection_url": format!("postgresql://postgres:x@{}:{}/{}", o.get_host(), o.get_port(), o.get_database().unwrap_or("test"))}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .post(
            "database/static-roles/own",
            &s.root,
            json!({"db_name": "pg", "username": "postgres", "rotation_period": "1h"}),
        )
        .await;
    assert_error(
        &r,
        400,
        "the connection's own user cannot be a static role: use rotate-root",
    );
    let _ = pg;
}

/// CI finding: a static role whose lock stripe is the connection's (one
/// lock table, 256 stripes) deadlocked its first rotation, which took the
/// connection's lock under the role's. The role name here is chosen to
/// land on the same stripe.
#[tokio::test]
async fn a_static_role_on_its_connections_lock_stripe_rotates() {
    let Some(db) = setup("10m").await else { return };
    let s = &db.s;
    let r = s
        .post("database/config/pg", &s.root, json!({"allowed_roles": "*"}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let m = s
        .core
        .mount_table()
        .unwrap()
        .entries
        .iter()
        .find(|m| m.path == "database/")
        .unwrap()
        .clone();
    let stripe = |key: &str| {
        aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            format!("{}{key}", m.view_prefix()).as_bytes(),
        )
        .as_ref()[0]
    };
    let target = stripe("config/pg");
    let name = (0..100_000)
        .map(|i| format!("st{i}"))
        .find(|n| stripe(&format!("static-role/{n}")) == target)
        .unwrap();
    let user = format!(
        "palisade_stripe_{}_{}",
        std::process::id(),
        &palisade_core::uuid_v4()[..8]
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE \"{user}\" WITH LOGIN PASSWORD 'x'"
    )))
    .execute(&db.pg)
    .await
    .unwrap();
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        s.post(
            &format!("database/static-roles/{name}"),
            &s.root,
            json!({"db_name": "pg", "username": user, "rotation_period": "1h"}),
        ),
    )
    .await
    .expect("the rotation deadlocked");
    assert_eq!(r.status, 204, "{}", r.text);
    let c = s
        .get(&format!("database/static-creds/{name}"), &s.root)
        .await;
    assert!(password_is(&db.pg, &user, c.data()["password"].as_str().unwrap()).await);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP ROLE IF EXISTS \"{user}\""
    )))
    .execute(&db.pg)
    .await
    .unwrap();
}

/// Review finding: a lease named in the body is authorised on the bare
/// path (Vault's grant, on which the default policy's renew relies), but a
/// rule that denies the lease's own path still wins, in every spelling.
#[tokio::test]
async fn a_deny_on_a_leases_path_holds_for_the_lease_named_in_the_body() {
    let Some(db) = setup("10m").await else { return };
    let s = &db.s;
    let (_, _, guarded, _) = creds(&db, &s.root).await;
    let t = s
        .token_with(&format!(
            r#"path "sys/leases/revoke" {{ capabilities = ["update"] }}
               path "sys/revoke" {{ capabilities = ["update"] }}
               path "sys/leases/revoke/*" {{ capabilities = ["update"] }}
               path "sys/leases/revoke/database/creds/{}/*" {{ capabilities = ["deny"] }}"#,
            db.role
        ))
        .await;
    for (path, body) in [
        ("sys/leases/revoke".to_owned(), json!({"lease_id": guarded})),
        ("sys/revoke".to_owned(), json!({"lease_id": guarded})),
        (format!("sys/leases/revoke/{guarded}"), json!({})),
    ] {
        let r = s.put(&path, &t.id, body).await;
        assert_denied(&r);
    }
    // spellings of the same lease: refused before any revocation
    for bad in [
        format!("{guarded}/"),
        guarded.replace("creds/", "creds//"),
        format!("/{guarded}"),
    ] {
        let r = s
            .put("sys/leases/revoke", &t.id, json!({"lease_id": bad}))
            .await;
        assert_error(&r, 400, "invalid lease ID");
    }
    let r = s
        .put("sys/leases/lookup", &s.root, json!({"lease_id": guarded}))
        .await;
    assert_eq!(r.status, 200, "still there: {}", r.text);
    // a lease the rule does not name: the bare path's grant holds
    let other = s.unique("other");
    let r = s
        .post(
            "database/config/pg",
            &s.root,
            json!({"allowed_roles": [db.role, other]}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .post(
            &format!("database/roles/{other}"),
            &s.root,
            json!({"db_name": "pg", "creation_statements": CREATE}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.get(&format!("database/creds/{other}"), &s.root).await;
    let free = r.body["lease_id"].as_str().unwrap().to_owned();
    let r = s
        .put("sys/leases/revoke", &t.id, json!({"lease_id": free}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .put("sys/leases/revoke", &s.root, json!({"lease_id": guarded}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
}
