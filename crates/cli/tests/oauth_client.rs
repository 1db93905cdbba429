//! The OpenID-certified npm `openid-client` and the `jose` library drive
//! palisade's OAuth2/OIDC provider in a real `palisade server` process
//! through tests/e2e/oauth/oauth_e2e.mjs: discovery, client credentials
//! (client_secret_basic and client_secret_post), JWKS verification by an
//! independent JOSE library, introspection, token exchange, revocation.
//! Then the same leak checks as the hvac run (no client secret or access
//! token in the audit logs, the server output or the database file).
//!
//! Skips (with a notice) when `node` is missing or
//! tests/e2e/oauth/node_modules is absent; under PALISADE_REQUIRE_SERVICES=1
//! a skip fails. CI: `npm ci --prefix tests/e2e/oauth` (scripts/test.sh).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use common::Spec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openid_client_e2e() {
    let dir = common::repo_root().join("tests/e2e/oauth");
    if !dir.join("node_modules/openid-client").is_dir() {
        common::skip(
            "openid_client_e2e: tests/e2e/oauth/node_modules is absent (npm ci --prefix tests/e2e/oauth)",
        );
        return;
    }
    let node_ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !node_ok {
        common::skip("openid_client_e2e: node is not installed");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut spec = Spec::sqlite(tmp.path());
    spec.audit_file = Some(tmp.path().join("audit.log"));
    let cmd = vec![
        "node".to_string(),
        dir.join("oauth_e2e.mjs").display().to_string(),
    ];
    common::run_client_script(&spec, &cmd).await;
}
