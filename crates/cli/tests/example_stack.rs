//! examples/stack runs as written (issue #17): its own script starts a
//! Palisade server, the gateway and two Express services, then checks that
//! service A reaches service B through the gateway with a client-credentials
//! token over mTLS, and that calls without a token, without a certificate,
//! from another workload, straight to service B, or with a revoked token are
//! refused. This test runs that script against the binary under test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use std::path::Path;
use std::process::Command;

#[test]
fn the_example_stack_runs_as_written() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/stack");
    if !dir.join("node_modules/express").is_dir() {
        common::skip(
            "example_stack: examples/stack/node_modules is absent (npm ci --prefix examples/stack)",
        );
        return;
    }
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        common::skip("example_stack: node is not installed");
        return;
    }
    let out = Command::new("node")
        .arg("run.mjs")
        .current_dir(&dir)
        .env("PALISADE_BIN", env!("CARGO_BIN_EXE_palisade"))
        .env_remove("PALISADE_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run.mjs failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("stack: all 12 checks passed"),
        "{stdout}\n{stderr}"
    );
}
