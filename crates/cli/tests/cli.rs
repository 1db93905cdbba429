//! The `palisade` CLI as users run it, against real server processes:
//! `config check` reports every error at once (exit 1) and accepts a good
//! file (exit 0); `audit verify` accepts an intact file and names the edited
//! line of a tampered one (exit 1); `status` exits 2 while sealed and 0 once
//! unsealed; `kv get` of a missing secret exits 2; `kv put`/`get` round-trip
//! with Vault-style `-format=json`. In dev mode the root token is printed
//! once, on the "Root Token:" line, and nowhere else.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use std::path::Path;

use common::{Server, Spec, palisade, palisade_stdin};
use serde_json::Value;

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn config_check_reports_every_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "log_level = \"loud\"\n[storage]\nbackend = \"sqlite\"\npath = {:?}\n[listener]\naddress = \"nowhere\"\ntls_disable = true\n[audit]\nfile_path = \"relative.log\"\n",
            s(&dir.path().join("p.db"))
        ),
    )
    .expect("write");
    let (code, out, err) = palisade(&["config", "check", &s(&bad)], &[]);
    assert_eq!(code, 1, "{out}{err}");
    let lines: Vec<&str> = err.lines().collect();
    let want = [
        "listener.address: \"nowhere\" is not an IP:port address",
        "audit.file_path: \"relative.log\" must be an absolute path",
        "log_level: \"loud\" is not one of trace, debug, info, warn, error",
    ];
    assert_eq!(lines.len(), 3, "{err}");
    for (line, w) in lines.iter().zip(want) {
        assert_eq!(*line, format!("{}: {w}", s(&bad)));
    }

    let good = dir.path().join("good.toml");
    let text = format!(
        "log_format = \"json\"\n{}",
        Spec::sqlite(dir.path()).config_toml(8200)
    );
    std::fs::write(&good, text).expect("write");
    let (code, out, err) = palisade(&["config", "check", &s(&good)], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), format!("{}: OK", s(&good)));

    let (code, _, err) = palisade(
        &["config", "check", &s(&dir.path().join("missing.toml"))],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("cannot read"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_server_kv_round_trip_and_audit_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = Spec::sqlite(dir.path());
    let root = format!("dev-root-{}", common::unique());
    let audit = dir.path().join("audit.log");
    let mut server = Server::start_dev(&spec, &root, &audit).await;
    let env = [
        ("PALISADE_ADDR", server.addr.as_str()),
        ("PALISADE_TOKEN", root.as_str()),
    ];
    let secret = format!("cli-secret-{}", common::unique());

    // put / get with Vault's single-dash flags, JSON output parsed as JSON
    let pair = format!("password={secret}");
    let (code, out, err) = palisade(
        &["kv", "put", "-format=json", "app/db", &pair, "user=app"],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).expect("put output is JSON");
    assert_eq!(v["version"], 1, "{v}");
    let (code, out, err) = palisade(&["kv", "get", "-format=json", "app/db"], &env);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).expect("get output is JSON");
    assert_eq!(v["data"]["data"]["password"], secret.as_str(), "{v}");
    assert_eq!(v["data"]["data"]["user"], "app");
    assert_eq!(v["data"]["metadata"]["version"], 1);
    let (code, out, _) = palisade(&["kv", "get", "-field=password", "app/db"], &env);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), secret);

    // a missing secret is a remote error: exit 2
    let (code, out, err) = palisade(&["kv", "get", "app/missing"], &env);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("Code: 404"), "{err}");
    // no token: the server refuses, exit 2
    let (code, _, err) = palisade(&["kv", "get", "app/db"], &env[..1]);
    assert_eq!(code, 2);
    assert!(err.contains("permission denied"), "{err}");

    server.sigterm();
    let st = server
        .wait_exit(std::time::Duration::from_secs(15))
        .await
        .expect("dev server exits on SIGTERM");
    assert!(st.success(), "{st}");

    // dev output: the root token appears once, on the Root Token line
    let output = server.output();
    assert_eq!(output.matches(root.as_str()).count(), 1, "{output}");
    let line = output
        .lines()
        .find(|l| l.contains(root.as_str()))
        .expect("token line");
    assert_eq!(line.trim(), format!("Root Token: {root}"));
    common::assert_no_secrets("dev server output", &output, std::slice::from_ref(&secret));

    // audit verify: intact file OK; an edited line is named
    let text = common::verify_audit(&audit);
    common::assert_no_secrets("audit file", &text, &[secret.clone(), root.clone()]);
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    assert!(lines.len() >= 3, "audit file too short: {}", lines.len());
    assert!(
        lines[1].contains("\"remote_address\":\"127.0.0.1\""),
        "{}",
        lines[1]
    );
    lines[1] = lines[1].replacen(
        "\"remote_address\":\"127.0.0.1\"",
        "\"remote_address\":\"127.0.0.2\"",
        1,
    );
    let edited = dir.path().join("edited.log");
    std::fs::write(&edited, lines.join("\n") + "\n").expect("write");
    let (code, out, err) = palisade(&["audit", "verify", &s(&edited)], &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("line 2: hash mismatch (line edited)"),
        "audit verify must name the edited line: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_exit_codes_follow_the_seal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = Spec::sqlite(dir.path());
    let server = Server::start(&spec).await;
    let env = [("PALISADE_ADDR", server.addr.as_str())];

    let (code, out, err) = palisade(&["status"], &env);
    assert_eq!(code, 2, "uninitialised is sealed: {out}{err}");
    assert!(
        out.contains("Initialized") && out.contains("false"),
        "{out}"
    );

    let (code, out, err) = palisade(
        &[
            "operator",
            "init",
            "-key-shares=1",
            "-key-threshold=1",
            "-format=json",
        ],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).expect("init output is JSON");
    let key = v["keys_base64"][0].as_str().expect("key").to_string();
    let root = v["root_token"].as_str().expect("root token").to_string();

    let (code, out, err) = palisade(&["status", "-format=json"], &env);
    assert_eq!(code, 2, "initialised but sealed: {out}{err}");
    let st: Value = serde_json::from_str(&out).expect("status JSON");
    assert_eq!(st["sealed"], true);
    assert_eq!(st["initialized"], true);

    let (code, out, err) = palisade(&["operator", "unseal", &key], &env);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = palisade(&["status"], &env);
    assert_eq!(code, 0, "unsealed: {out}{err}");

    // sealing again flips it back
    let env2 = [
        ("PALISADE_ADDR", server.addr.as_str()),
        ("PALISADE_TOKEN", root.as_str()),
    ];
    let (code, out, err) = palisade(&["operator", "seal"], &env2);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, _) = palisade(&["status"], &env);
    assert_eq!(code, 2);

    // unreachable server: exit 2
    let (code, _, err) = palisade(&["status", "--address", "http://127.0.0.1:1"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("error connecting"), "{err}");
    common::assert_no_secrets("server output", &server.output(), &[root, key]);
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// `palisade login` reads the token from standard input (never the process
/// list) and stores it as a new 0600 file; a symlink planted at
/// ~/.palisade-token is refused, not followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_reads_stdin_and_stores_the_token_privately() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = Spec::sqlite(dir.path());
    let root = format!("dev-root-{}", common::unique());
    let mut server = Server::start_dev(&spec, &root, &dir.path().join("audit.log")).await;
    let home = tempfile::tempdir().expect("home");
    let token_file = home.path().join(".palisade-token");
    let env = [
        ("PALISADE_ADDR", server.addr.as_str()),
        ("HOME", home.path().to_str().unwrap()),
    ];

    // an existing world-readable file is replaced by a private one
    std::fs::write(&token_file, "old").unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out, err) = palisade_stdin(&["login"], &env, format!("{root}\n").as_bytes());
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), root);
    assert_eq!(mode(&token_file), 0o600);
    assert!(!err.contains("process list"), "{err}");
    // `-` reads stdin too; a bad token is refused and nothing is stored
    std::fs::remove_file(&token_file).unwrap();
    let (code, _, err) = palisade_stdin(&["login", "-"], &env, b"hvs.not-a-token\n");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("permission denied"), "{err}");
    assert!(!token_file.exists());
    // no token at all
    let (code, _, err) = palisade_stdin(&["login"], &env, b"");
    assert_eq!((code, err.trim()), (1, "no token given"));

    // a symlink at the token path: refused, its target untouched
    let target = home.path().join("target");
    std::fs::write(&target, "keep").unwrap();
    std::os::unix::fs::symlink(&target, &token_file).unwrap();
    let (code, _, err) = palisade_stdin(&["login"], &env, format!("{root}\n").as_bytes());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("symlink"), "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    std::fs::remove_file(&token_file).unwrap();

    // a token as an argument still works (Vault's CLI takes one), with a warning
    let (code, out, err) = palisade(&["login", &root], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("visible in the process list"), "{err}");
    assert_eq!(mode(&token_file), 0o600);
    // no temporary files left behind
    let names: Vec<String> = std::fs::read_dir(home.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    server.sigterm();
    server.wait_exit(std::time::Duration::from_secs(15)).await;
}

/// `audit verify --device` asks the server for the device's head and fails
/// on a file whose tail was cut off; `--head SEQ:HASH` does the same offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_detects_a_cut_off_tail_against_the_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = Spec::sqlite(dir.path());
    let root = format!("dev-root-{}", common::unique());
    let audit = dir.path().join("audit.log");
    let mut server = Server::start_dev(&spec, &root, &audit).await;
    let env = [
        ("PALISADE_ADDR", server.addr.as_str()),
        ("PALISADE_TOKEN", root.as_str()),
    ];
    for i in 0..3 {
        let (code, out, err) = palisade(&["kv", "put", &format!("k{i}"), "v=1"], &env);
        assert_eq!(code, 0, "{out}{err}");
    }
    let (code, out, err) = palisade(&["audit", "verify", &s(&audit), "--device", "file"], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("reaches the head at seq"), "{out}");
    let c = spec.client();
    let head: Value = c
        .get(server.url("sys/audit-head/file"))
        .header("X-Vault-Token", &root)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let head = format!(
        "{}:{}",
        head["data"]["seq"].as_u64().unwrap(),
        head["data"]["hash"].as_str().unwrap()
    );

    // cut the last two lines: the chain alone still verifies, the head does not
    let text = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let cut = dir.path().join("cut.log");
    std::fs::write(&cut, lines[..lines.len() - 2].join("\n") + "\n").unwrap();
    let (code, _, _) = palisade(&["audit", "verify", &s(&cut)], &[]);
    assert_eq!(code, 0);
    let (code, _, err) = palisade(&["audit", "verify", &s(&cut), "--head", &head], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("trailing lines were removed"), "{err}");
    let (code, _, err) = palisade(&["audit", "verify", &s(&cut), "--device", "file/"], &env);
    assert_eq!(code, 1);
    assert!(err.contains("trailing lines were removed"), "{err}");
    let (code, _, err) = palisade(&["audit", "verify", &s(&audit), "--head", "12:zz"], &[]);
    assert_eq!(
        (code, err.trim()),
        (1, "--head: HASH must be 64 hex digits")
    );

    server.sigterm();
    server.wait_exit(std::time::Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_commands_and_transit_helpers_round_trip_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = Spec::sqlite(dir.path());
    let root = format!("dev-root-{}", common::unique());
    let audit = dir.path().join("audit.log");
    let mut server = Server::start_dev(&spec, &root, &audit).await;
    let env = [
        ("PALISADE_ADDR", server.addr.as_str()),
        ("PALISADE_TOKEN", root.as_str()),
    ];
    let (code, out, err) = palisade(&["secrets", "enable", "transit"], &env);
    assert_eq!(code, 0, "{out}{err}");
    // `write` with no pairs posts an empty body: the key is created
    let (code, out, err) = palisade(&["write", "-format=json", "transit/keys/app"], &env);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).expect("write output is JSON");
    assert_eq!(v["type"], "aes256-gcm96", "{v}");
    let (code, out, err) = palisade(&["read", "-field=latest_version", "transit/keys/app"], &env);
    assert_eq!((code, out.trim()), (0, "1"), "{err}");
    let (code, out, err) = palisade(&["list", "transit/keys"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("app"), "{out}");

    // bytes that are not text survive the round trip
    let secret: Vec<u8> = (0..=255u8).rev().collect();
    let (code, out, err) = common::palisade_stdin(&["transit", "encrypt", "app"], &env, &secret);
    assert_eq!(code, 0, "{out}{err}");
    let ct = out.trim().to_string();
    assert!(ct.starts_with("vault:v1:"), "{ct}");
    let out = std::process::Command::new(common::BIN)
        .args(["transit", "decrypt", "app", &ct])
        .env("PALISADE_ADDR", &server.addr)
        .env("PALISADE_TOKEN", &root)
        .output()
        .expect("run decrypt");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, secret);

    // errors are the server's, with exit code 2
    let (code, _, err) = palisade(&["transit", "decrypt", "app", "vault:v1:AAAA"], &env);
    assert_eq!(code, 2);
    assert!(
        err.contains("cipher: message authentication failed"),
        "{err}"
    );
    let (code, _, err) = palisade(
        &["write", "transit/keys/app/config", "deletion_allowed=true"],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = palisade(&["delete", "transit/keys/app"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Success!"), "{out}");
    let (code, _, _) = palisade(&["read", "transit/keys/app"], &env);
    assert_eq!(code, 2);

    server.sigterm();
    let _ = server.wait_exit(std::time::Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pki_issue_writes_a_private_key_only_its_owner_reads() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = Spec::sqlite(dir.path());
    let root = format!("dev-root-{}", common::unique());
    let audit = dir.path().join("audit.log");
    let mut server = Server::start_dev(&spec, &root, &audit).await;
    let env = [
        ("PALISADE_ADDR", server.addr.as_str()),
        ("PALISADE_TOKEN", root.as_str()),
    ];
    let run = |args: &[&str]| {
        let (code, out, err) = palisade(args, &env);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
    };
    run(&["secrets", "enable", "pki"]);
    run(&[
        "write",
        "pki/root/generate/internal",
        "common_name=CLI Root",
        "key_type=ec",
        "ttl=24h",
    ]);
    run(&[
        "write",
        "pki/roles/svc",
        "allowed_domains=svc.example",
        "allow_subdomains=true",
        "key_type=ec",
        "ttl=1h",
        "allowed_uri_sans=spiffe://svc.example/*",
    ]);
    let out = dir.path().join("certs");
    std::fs::create_dir(&out).unwrap();
    // a symlink where the key goes is replaced, not followed
    let elsewhere = dir.path().join("elsewhere");
    std::fs::write(&elsewhere, "untouched").unwrap();
    std::os::unix::fs::symlink(&elsewhere, out.join("key.pem")).unwrap();
    let o = s(&out);
    run(&[
        "pki",
        "issue",
        "svc",
        "api.svc.example",
        "--out",
        &o,
        "--uri-sans",
        "spiffe://svc.example/api",
    ]);
    assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "untouched");
    let meta = std::fs::symlink_metadata(out.join("key.pem")).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let key = std::fs::read_to_string(out.join("key.pem")).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
    let verify = std::process::Command::new("openssl")
        .args([
            "verify",
            "-CAfile",
            &s(&out.join("chain.pem")),
            &s(&out.join("cert.pem")),
        ])
        .output()
        .expect("openssl");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // a name the role refuses: the server's error, exit 2, nothing replaced
    let before = std::fs::read_to_string(out.join("cert.pem")).unwrap();
    let (code, _, err) = palisade(&["pki", "issue", "svc", "evil.example", "--out", &o], &env);
    assert_eq!(code, 2);
    assert!(
        err.contains("name evil.example not allowed by this role"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("cert.pem")).unwrap(),
        before
    );
    // the private key never reaches the server's output or the audit log
    server.sigterm();
    let _ = server.wait_exit(std::time::Duration::from_secs(15)).await;
    let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    common::assert_no_secrets(
        "dev server output",
        &server.output(),
        &[body[..40].to_string()],
    );
    let log = std::fs::read_to_string(&audit).unwrap();
    assert!(!log.contains(&body[..40]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_commands_look_up_and_revoke_what_read_and_write_show() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = Spec::sqlite(dir.path());
    let root = format!("dev-root-{}", common::unique());
    let audit = dir.path().join("audit.log");
    let mut server = Server::start_dev(&spec, &root, &audit).await;
    let env = [
        ("PALISADE_ADDR", server.addr.as_str()),
        ("PALISADE_TOKEN", root.as_str()),
    ];
    for args in [
        &["secrets", "enable", "pki"][..],
        &[
            "write",
            "pki/root/generate/internal",
            "common_name=Lease CA",
            "key_type=ec",
        ],
        &[
            "write",
            "pki/roles/r",
            "allowed_domains=example.com",
            "allow_subdomains=true",
            "generate_lease=true",
            "key_type=ec",
            "ttl=1h",
        ],
    ] {
        let (code, out, err) = palisade(args, &env);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
    }
    // a dynamic secret's table starts with its lease, as `vault write` prints it
    let (code, out, err) = palisade(&["write", "pki/issue/r", "common_name=a.example.com"], &env);
    assert_eq!(code, 0, "{err}");
    let lease = out
        .lines()
        .find_map(|l| l.strip_prefix("lease_id"))
        .map(|l| l.trim().to_owned())
        .expect("a lease_id row");
    assert!(lease.starts_with("pki/issue/r/"), "{out}");
    let row = |k: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.starts_with(k))
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    };
    assert_eq!(row("lease_duration"), ["lease_duration", "1h"], "{out}");
    assert_eq!(
        row("lease_renewable"),
        ["lease_renewable", "false"],
        "{out}"
    );

    let (code, out, err) = palisade(&["lease", "lookup", &lease], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&lease) && out.contains("renewable"), "{out}");
    let (code, _, err) = palisade(&["lease", "renew", &lease], &env);
    assert_eq!(code, 2);
    assert!(err.contains("lease is not renewable"), "{err}");
    let (code, out, err) = palisade(&["lease", "revoke", &lease], &env);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("Success! Revoked lease: {lease}"));
    let (code, _, err) = palisade(&["lease", "lookup", &lease], &env);
    assert_eq!(code, 2);
    assert!(err.contains("invalid lease"), "{err}");
    // --force needs --prefix (a usage error: exit 1, as Vault's CLI)
    let (code, _, err) = palisade(&["lease", "revoke", "--force", &lease], &env);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--prefix"), "{err}");
    let (code, _, err) = palisade(&["write", "pki/issue/r", "common_name=b.example.com"], &env);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = palisade(&["lease", "revoke", "--prefix", "pki/issue"], &env);
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = palisade(&["list", "sys/leases/lookup/pki/issue/r"], &env);
    assert_eq!(code, 2, "nothing left under the prefix");

    server.sigterm();
    let _ = server.wait_exit(std::time::Duration::from_secs(15)).await;
}

#[tokio::test]
async fn oauth_client_commands_show_the_secret_once_and_rotate_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = Spec::sqlite(dir.path());
    let root = format!("dev-root-{}", common::unique());
    let audit = dir.path().join("audit.log");
    let server = Server::start_dev(&spec, &root, &audit).await;
    let env = [
        ("PALISADE_ADDR", server.addr.as_str()),
        ("PALISADE_TOKEN", root.as_str()),
    ];
    for args in [
        &["write", "identity/oidc/key/default", "algorithm=EdDSA"][..],
        &[
            "write",
            "identity/oidc/provider/default",
            &format!("issuer={}", server.addr),
            "allowed_client_ids=*",
        ],
    ] {
        let (code, out, err) = palisade(args, &env);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
    }
    let (code, out, err) = palisade(
        &[
            "oauth",
            "client",
            "create",
            "svc-a",
            "--audiences",
            "svc-b",
            "--scopes",
            "read,write",
            "--format",
            "json",
        ],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let (id, secret) = (
        v["client_id"].as_str().unwrap().to_owned(),
        v["client_secret"].as_str().unwrap().to_owned(),
    );
    assert_eq!(v["allowed_scopes"], serde_json::json!(["read", "write"]));
    let token = |secret: String| {
        let (addr, id) = (server.addr.clone(), id.clone());
        async move {
            reqwest::Client::new()
                .post(format!("{addr}/v1/identity/oidc/provider/default/token"))
                .basic_auth(id, Some(secret))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body("grant_type=client_credentials")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(token(secret.clone()).await, 200);
    let (code, out, _) = palisade(&["oauth", "client", "list"], &env);
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l == "svc-a"), "{out}");
    let (code, out, err) = palisade(
        &[
            "oauth",
            "client",
            "rotate-secret",
            "svc-a",
            "--format",
            "json",
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    let new = serde_json::from_str::<serde_json::Value>(&out).unwrap()["client_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new, secret);
    assert_eq!(token(secret.clone()).await, 401);
    assert_eq!(token(new.clone()).await, 200);
    // a create without audiences is refused by the server, with its message
    let (code, _, err) = palisade(
        &["oauth", "client", "create", "bad", "--audiences", ""],
        &env,
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("allowed_audiences must name at least one audience"),
        "{err}"
    );
    let (code, out, _) = palisade(&["oauth", "client", "delete", "svc-a"], &env);
    assert_eq!((code, out.trim()), (0, "Success! Deleted client: svc-a"));
    assert_eq!(token(new).await, 401);
    // the secrets never reach the audit log
    let log = std::fs::read_to_string(&audit).unwrap();
    assert!(!log.contains(&secret) && !log.contains(&v["client_secret"].to_string()));
}
