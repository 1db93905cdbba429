//! The unmodified npm `node-vault` client drives a real `palisade server`
//! process through tests/e2e/node-vault/node_vault_e2e.js (init/unseal,
//! health, mounts, policies in node-vault's `{name, rules}` shape, tokens,
//! KV v2 via write/read/update(PATCH)/list, KV v1, audit, exact error
//! messages). Then the same leak checks as the hvac run.
//!
//! Skips (with a notice) when `node` is missing or
//! tests/e2e/node-vault/node_modules is absent; under
//! PALISADE_REQUIRE_SERVICES=1 a skip fails. CI: `npm ci --prefix tests/e2e/node-vault`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use common::Spec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_vault_e2e_sqlite() {
    let dir = common::repo_root().join("tests/e2e/node-vault");
    if !dir.join("node_modules/node-vault").is_dir() {
        common::skip(
            "node_vault_e2e: tests/e2e/node-vault/node_modules is absent (npm ci --prefix tests/e2e/node-vault)",
        );
        return;
    }
    let node_ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !node_ok {
        common::skip("node_vault_e2e: node is not installed");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut spec = Spec::sqlite(tmp.path());
    spec.audit_file = Some(tmp.path().join("audit.log"));
    let cmd = vec![
        "node".to_string(),
        dir.join("node_vault_e2e.js").display().to_string(),
    ];
    common::run_client_script(&spec, &cmd).await;
}
