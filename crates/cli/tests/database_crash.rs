//! The database engine under `kill -9`, with the real binary and the real
//! PostgreSQL at 127.0.0.1:5432 (PALISADE_TEST_PG_URL; skipped when absent
//! unless PALISADE_REQUIRE_SERVICES=1):
//!
//! - a lease revocation killed half way (its statements are slow) is
//!   resumed after the restart: the role ends up dropped;
//! - a static-role rotation killed half way is completed after the restart:
//!   the password the server hands out is the one PostgreSQL stores (its
//!   SCRAM verifier checked with Python's hashlib);
//! - a credential whose creation was killed half way leaves no role once
//!   its lease is revoked;
//! - nothing of this writes a password into the server's output, even a
//!   statement slow enough for sqlx's slow-statement log.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, Spec};
use serde_json::{Value, json};

fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-tAq", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn role_exists(url: &str, name: &str) -> bool {
    psql(
        url,
        &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{name}'"),
    ) == "1"
}

/// Whether PostgreSQL's SCRAM-SHA-256 verifier for `user` is `password`'s.
fn password_is(url: &str, user: &str, password: &str) -> bool {
    let verifier = psql(
        url,
        &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{user}'"),
    );
    let script = r#"
import base64, hashlib, hmac, sys
v, pw = sys.argv[1], sys.argv[2]
params, keys = v[len("SCRAM-SHA-256$"):].split("$")
it, salt = params.split(":")
stored = keys.split(":")[0]
salted = hashlib.pbkdf2_hmac("sha256", pw.encode(), base64.b64decode(salt), int(it))
ck = hmac.new(salted, b"Client Key", "sha256").digest()
print("yes" if base64.b64encode(hashlib.sha256(ck).digest()).decode() == stored else "no")
"#;
    let out = Command::new("python3")
        .args(["-c", script, &verifier, password])
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

struct Api<'a> {
    c: reqwest::Client,
    s: &'a Server,
    token: String,
}

impl Api<'_> {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self
            .c
            .request(method.parse().unwrap(), self.s.url(path))
            .header("X-Vault-Token", &self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method, path, body).await;
        assert!(
            status == 200 || status == 204,
            "{method} {path}: {status} {v}"
        );
        v
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_revocations_rotations_and_creations_complete_after_a_restart() {
    let Some(pg) = common::postgres_url() else {
        common::skip("PostgreSQL");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::sqlite(dir.path());
    let mut server = Server::start(&spec).await;
    let c = spec.client();
    let (keys, root) = common::init(&c, &server, 1, 1).await;
    common::unseal(&c, &server, &keys).await;
    let api = Api {
        c: c.clone(),
        s: &server,
        token: root.clone(),
    };
    let url = format!(
        "postgresql://{{{{username}}}}:{{{{password}}}}@{}",
        pg.split_once('@')
            .map(|(_, h)| h)
            .unwrap_or("127.0.0.1:5432/test")
    );
    let static_user = format!("palisade_crash_{}", common::unique().replace('-', "_"));
    psql(
        &pg,
        &format!("CREATE ROLE \"{static_user}\" WITH LOGIN PASSWORD 'crash-initial-password'"),
    );
    api.ok(
        "POST",
        "sys/mounts/database",
        Some(json!({"type": "database"})),
    )
    .await;
    api.ok(
        "POST",
        "database/config/pg",
        Some(json!({"plugin_name": "postgresql-database-plugin", "connection_url": url,
                    "username": "postgres", "password": "crash-root-password", "allowed_roles": "*"})),
    )
    .await;
    // slow revocation: killed while PostgreSQL sleeps, before the drop
    api.ok(
        "POST",
        "database/roles/slowrevoke",
        Some(json!({"db_name": "pg", "default_ttl": "1h",
            "creation_statements": r#"CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"#,
            "revocation_statements": ["SELECT pg_sleep(3)", r#"DROP ROLE "{{name}}""#]})),
    )
    .await;
    // slow creation, the password inside the slow statement (sqlx logs
    // statements slower than a second unless told not to)
    api.ok(
        "POST",
        "database/roles/slowcreate",
        Some(json!({"db_name": "pg", "default_ttl": "1h",
            "creation_statements": r#"DO $$ BEGIN PERFORM pg_sleep(1.5); EXECUTE 'CREATE ROLE "{{name}}" WITH LOGIN PASSWORD ''{{password}}'''; END $$"#})),
    )
    .await;
    let v = api.ok("GET", "database/creds/slowcreate", None).await;
    let slow_password = v["data"]["password"].as_str().unwrap().to_owned();
    let slow_user = v["data"]["username"].as_str().unwrap().to_owned();
    assert!(role_exists(&pg, &slow_user));
    let v = api.ok("GET", "database/creds/slowrevoke", None).await;
    let victim = v["data"]["username"].as_str().unwrap().to_owned();
    let victim_password = v["data"]["password"].as_str().unwrap().to_owned();
    let lease = v["lease_id"].as_str().unwrap().to_owned();
    assert!(role_exists(&pg, &victim));
    api.ok(
        "POST",
        "database/static-roles/crash",
        Some(json!({"db_name": "pg", "username": static_user, "rotation_period": "1h",
            "rotation_statements": ["SELECT pg_sleep(3)", r#"ALTER ROLE "{{name}}" WITH PASSWORD '{{password}}'"#]})),
    )
    .await;
    let before = api.ok("GET", "database/static-creds/crash", None).await["data"]["password"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(password_is(&pg, &static_user, &before));

    // a revocation and a rotation in flight, a creation in flight: kill -9
    let revoke = {
        let (c, u, t) = (c.clone(), server.url("sys/leases/revoke"), root.clone());
        let body = json!({ "lease_id": lease });
        tokio::spawn(async move { c.put(u).header("X-Vault-Token", t).json(&body).send().await })
    };
    let rotate = {
        let (c, u, t) = (
            c.clone(),
            server.url("database/rotate-role/crash"),
            root.clone(),
        );
        tokio::spawn(async move { c.post(u).header("X-Vault-Token", t).send().await })
    };
    let create = {
        let (c, u, t) = (
            c.clone(),
            server.url("database/creds/slowcreate"),
            root.clone(),
        );
        tokio::spawn(async move { c.get(u).header("X-Vault-Token", t).send().await })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    server.kill9();
    for t in [revoke, rotate, create] {
        assert!(t.await.unwrap().is_err(), "killed before answering");
    }
    assert!(role_exists(&pg, &victim), "the revocation was cut short");

    // restart: the revocation is resumed, the rotation completed
    let server2 = Server::start(&spec).await;
    common::unseal(&c, &server2, &keys).await;
    let api = Api {
        c: c.clone(),
        s: &server2,
        token: root.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while role_exists(&pg, &victim) {
        assert!(
            Instant::now() < deadline,
            "the killed revocation was not resumed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, v) = api
        .call(
            "PUT",
            "sys/leases/lookup",
            Some(json!({ "lease_id": lease })),
        )
        .await;
    assert_eq!(
        (status, v["errors"][0].as_str()),
        (400, Some("invalid lease"))
    );
    let after = api.ok("GET", "database/static-creds/crash", None).await["data"]["password"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        password_is(&pg, &static_user, &after),
        "the password handed out after the restart is the database's"
    );
    // the creation killed half way: its lease is there, and revoking every
    // lease leaves none of this test's roles behind
    api.ok(
        "PUT",
        "sys/leases/revoke-prefix/database/creds",
        Some(json!({})),
    )
    .await;
    let left = psql(
        &pg,
        "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'v-root-slowcrea%' OR rolname LIKE 'v-root-slowrevo%'",
    );
    assert_eq!(left, "0", "a role of this test was left behind");
    assert!(!role_exists(&pg, &slow_user));
    let leases = api
        .call("LIST", "sys/leases/lookup/database/creds/", None)
        .await;
    assert_eq!(leases.0, 404, "no lease left: {}", leases.1);

    let output = server2.output();
    common::assert_no_secrets(
        "server output",
        &output,
        &[
            slow_password,
            victim_password,
            before,
            after,
            "crash-root-password".to_owned(),
            root.clone(),
        ],
    );
    drop(server2);
    psql(&pg, &format!("DROP ROLE IF EXISTS \"{static_user}\""));
}
