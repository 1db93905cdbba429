//! The configuration files under examples/ stay valid: `palisade config check`
//! accepts them (the PostgreSQL one with its url_env variable set).

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
