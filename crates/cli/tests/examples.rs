//! The configuration files under examples/ stay valid: `palisade config check`
//! accepts them (the PostgreSQL one with its url_env variable set, the gateway
//! one once its setup.sh has generated the certificates, JWKS and pepper).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

use std::process::Command;

fn check(file: &str, env: &[(&str, &str)]) -> std::process::Output {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_palisade"));
    cmd.args(["config", "check", &format!("{root}/{file}")]);
    cmd.env_remove("PALISADE_PG_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// `palisade config check` on a file outside the repository.
fn check_path(file: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .arg("config")
        .arg("check")
        .arg(file)
        .output()
        .unwrap()
}

#[test]
fn example_server_config_is_valid() {
    let out = check("examples/server.toml", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("examples/server.toml: OK\n"));
}

#[test]
fn example_postgres_config_needs_its_env_variable() {
    let out = check(
        "examples/server-postgres.toml",
        &[("PALISADE_PG_URL", "postgres://postgres@127.0.0.1:5432/test")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = check("examples/server-postgres.toml", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("storage.url_env: environment variable PALISADE_PG_URL is not set")
    );
}

#[test]
fn example_policy_is_canonically_formatted() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let text = std::fs::read_to_string(format!("{root}/examples/policies/app-read.hcl")).unwrap();
    assert_eq!(palisade_policy::format_hcl(&text).unwrap(), text);
}

/// examples/gateway: copy the tracked files (not any certs/ a developer generated
/// in place) to a temporary directory, run setup.sh there, and check the config.
/// setup.sh needs the `openssl` command (part of a default Debian install).
#[test]
fn example_gateway_config_is_valid_after_setup() {
    let have_openssl = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_openssl {
        assert!(
            std::env::var("PALISADE_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "examples/gateway/setup.sh needs the openssl command"
        );
        eprintln!("SKIPPED: example_gateway_config_is_valid_after_setup: openssl is not installed");
        return;
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/gateway");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for f in ["gateway.toml", "policies.cedar", "setup.sh"] {
        std::fs::copy(format!("{root}/{f}"), dir.join(f)).unwrap();
    }

    // before setup the referenced files are missing, and config check says so
    let cfg = dir.join("gateway.toml");
    let out = check_path(&cfg);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("certs/server.pem does not exist"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let setup = Command::new("bash")
        .arg(dir.join("setup.sh"))
        .output()
        .unwrap();
    assert!(
        setup.status.success(),
        "setup.sh: {}",
        String::from_utf8_lossy(&setup.stderr)
    );
    for f in [
        "certs/ca.pem",
        "certs/server.pem",
        "certs/server.key",
        "certs/billing.pem",
        "certs/billing.key",
        "idp/jwks.json",
        "secrets/apikey-pepper",
    ] {
        assert!(dir.join(f).is_file(), "setup.sh did not create {f}");
    }

    let out = check_path(&cfg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("gateway.toml: OK (gateway)\n"));

    // the token helper the README uses prints a compact JWS
    let token = Command::new("bash")
        .arg(dir.join("setup.sh"))
        .args(["token", "alice", "orders:read"])
        .output()
        .unwrap();
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let token = String::from_utf8(token.stdout).unwrap();
    assert_eq!(token.trim().split('.').count(), 3, "{token}");
}
