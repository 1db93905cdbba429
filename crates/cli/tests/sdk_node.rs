//! The Node.js SDK's own tests (sdk/node, `node:test`) against the binary
//! under test (issue #18): both builds (ESM and CommonJS), secrets with the
//! cache and its faults (sealed, down), token sources and re-login, transit,
//! the mTLS dispatcher, leases on PostgreSQL, the Express and Fastify
//! middleware and the pino preset. `npm test` builds the package with tsc
//! first. Then examples/fleet, whose services are written with the SDK, runs
//! as written, and so does every command of docs/guide-node.md (one test: both
//! need the build the SDK tests make, and two builds at once would race).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use std::path::Path;
use std::process::Command;

/// Run `program args` in `dir` against the binary under test; its stdout,
/// after asserting it succeeded and printed each of `expect`.
fn run_ok(
    dir: &Path,
    program: &str,
    args: &[&str],
    env_remove: &[&str],
    expect: &[&str],
) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .env("PALISADE_BIN", env!("CARGO_BIN_EXE_palisade"))
        .env_remove("PALISADE_LOG");
    for var in env_remove {
        cmd.env_remove(var);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{stdout}\n{stderr}"
    );
    for e in expect {
        assert!(stdout.contains(e), "{e:?} missing:\n{stdout}\n{stderr}");
    }
    stdout
}

#[test]
fn the_node_sdk_tests_pass_and_the_fleet_and_the_guide_run() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/node");
    if !dir.join("node_modules/typescript").is_dir() {
        common::skip("sdk_node: sdk/node/node_modules is absent (npm ci --prefix sdk/node)");
        return;
    }
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        common::skip("sdk_node: node is not installed");
        return;
    }
    let stdout = run_ok(&dir, "npm", &["test", "--silent"], &[], &["# fail 0"]);
    assert!(!stdout.contains("# pass 0"), "{stdout}");
    fleet_runs_as_written();
    guide_runs_as_written();
}

/// docs/guide-node.md: every `sh` block, in order (scripts/guide-check.sh).
fn guide_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if !root.join("examples/guide/node_modules/express").is_dir() {
        common::skip(
            "sdk_node: examples/guide/node_modules is absent (npm ci --prefix examples/guide)",
        );
        return;
    }
    for tool in ["curl", "jq", "openssl"] {
        // (`openssl` has no --version: ask the shell whether it is there)
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            common::skip(&format!("sdk_node: the guide needs {tool}"));
            return;
        }
    }
    run_ok(
        &root,
        "bash",
        &["scripts/guide-check.sh"],
        &["VAULT_TOKEN", "PALISADE_ADDR"],
        &["guide-check: every command of docs/guide-node.md ran"],
    );
}

/// examples/fleet: its own script starts a Palisade server, the gateway and
/// two Express services, then checks that service A reads its database
/// password from Palisade and reaches service B through the gateway with a
/// client-credentials token over mTLS, and that calls without a token,
/// without a certificate, from another workload, straight to service B, or
/// with a revoked token are refused.
fn fleet_runs_as_written() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/fleet");
    if !dir.join("node_modules/express").is_dir() {
        common::skip(
            "sdk_node: examples/fleet/node_modules is absent (npm ci --prefix examples/fleet)",
        );
        return;
    }
    run_ok(
        &dir,
        "node",
        &["run.mjs"],
        &[],
        &["fleet: all 14 checks passed"],
    );
}
