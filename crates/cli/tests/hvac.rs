//! The unmodified Python `hvac` client drives a real `palisade server`
//! process through tests/e2e/hvac_e2e.py: init/unseal, health, mounts,
//! policies, tokens, KV v2 and v1, audit devices, a denied read, and the
//! database engine with its leases (dynamic and static PostgreSQL roles on
//! the real PostgreSQL, checked with psql). Then the
//! audit files must verify and neither they, the server's output nor the
//! SQLite file may contain a token, an unseal key or a written secret value.
//!
//! Skips (with a notice) when python3 cannot `import hvac`, or for the
//! PostgreSQL run when nothing listens at PALISADE_TEST_PG_URL; under
//! PALISADE_REQUIRE_SERVICES=1 a skip fails. CI: `pip install hvac`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use common::{Spec, Storage};

fn hvac_cmd() -> Option<Vec<String>> {
    if !common::python_has("hvac") {
        common::skip("hvac_e2e: python3 with the hvac module is not available (pip install hvac)");
        return None;
    }
    let script = common::repo_root().join("tests/e2e/hvac_e2e.py");
    Some(vec!["python3".into(), script.display().to_string()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hvac_e2e_sqlite() {
    let Some(cmd) = hvac_cmd() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = Spec::sqlite(dir.path());
    spec.audit_file = Some(dir.path().join("audit.log"));
    common::run_client_script(&spec, &cmd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hvac_e2e_postgres() {
    let Some(cmd) = hvac_cmd() else { return };
    let Some(url) = common::postgres_url() else {
        common::skip("hvac_e2e_postgres: PostgreSQL is not reachable at PALISADE_TEST_PG_URL");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let table = format!("palisade_e2e_hvac_{}", common::unique());
    let mut spec = Spec::sqlite(dir.path());
    spec.storage = Storage::Postgres {
        url: url.clone(),
        table: table.clone(),
    };
    spec.audit_file = Some(dir.path().join("audit.log"));
    common::run_client_script(&spec, &cmd).await;
    common::drop_pg_table(&url, &table);
}
