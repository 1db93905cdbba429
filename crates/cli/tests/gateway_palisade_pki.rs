//! The gateway's certificates from Palisade's PKI engine (issue #17): a real
//! `palisade server` with a PKI mount and an AppRole for the gateway; the
//! gateway (`[palisade]`) logs in, issues its listener certificate and an
//! upstream client certificate at start (the files do not exist yet), serves
//! the first, and renews both when two thirds of their 6-second lifetime have
//! passed, without a restart: new handshakes get the new certificate and the
//! configuration reloads for the upstream's. Denied: a wrong secret ID with no
//! certificate on disk stops the gateway at start, with the server's error and
//! without the secret in its output.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod gateway_common;

use std::process::{Command, Stdio};
use std::time::Duration;

use gateway_common::common::{Server, Spec};
use gateway_common::{Gateway, tls_connect, wait_for};
use serde_json::{Value, json};

fn config(server: &str) -> String {
    format!(
        r#"
[[listeners]]
name = "public"
address = "127.0.0.1:0"
certificates = [{{ cert_file = "tls/gateway.pem", key_file = "tls/gateway.key", server_names = ["localhost"] }}]

[admin]
address = "127.0.0.1:0"

[[upstreams]]
name = "app"
endpoints = ["127.0.0.1:1"]
[upstreams.tls]
ca_file = "ca.pem"
server_name = "localhost"
client_cert_file = "tls/upstream-client.pem"
client_key_file = "tls/upstream-client.key"

[authorization]
policy_file = "policies.cedar"

[[routes]]
name = "all"
path_prefix = "/"
upstream = "app"
anonymous = true

[palisade]
address = "{server}"
[palisade.approle]
role_id_file = "role-id"
secret_id_file = "secret-id"

[[palisade.certificates]]
role = "gateway"
common_name = "localhost"
ip_sans = ["127.0.0.1"]
ttl = "6s"
cert_file = "tls/gateway.pem"
key_file = "tls/gateway.key"

[[palisade.certificates]]
role = "gateway"
common_name = "gateway-client.localhost"
ttl = "6s"
cert_file = "tls/upstream-client.pem"
key_file = "tls/upstream-client.key"
"#
    )
}

/// The leaf certificate a new TLS handshake with the gateway gets.
async fn served(gw: &Gateway, ca: &str) -> Vec<u8> {
    let s = tls_connect(gw.addr("public"), "localhost", ca, None)
        .await
        .unwrap();
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_keeps_its_certificates_issued_by_palisade() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let root = format!("dev-root-{}", gateway_common::unique());
    let server = Server::start_dev(&Spec::sqlite(dir), &root, &dir.join("audit.log")).await;
    let c = reqwest::Client::new();
    server
        .post_ok(&root, "sys/mounts/pki", json!({"type": "pki"}))
        .await;
    let ca = server
        .post_ok(
            &root,
            "pki/root/generate/internal",
            json!({"common_name": "test CA", "ttl": "24h"}),
        )
        .await["data"]["certificate"]
        .as_str()
        .unwrap()
        .to_owned();
    server.post_ok(&root,
        "pki/roles/gateway",
        json!({"allowed_domains": "localhost", "allow_bare_domains": true, "allow_subdomains": true, "max_ttl": "1h"}),
    )
    .await;
    server
        .post_ok(
            &root,
            "sys/policies/acl/gateway-pki",
            json!({"policy": "path \"pki/issue/gateway\" { capabilities = [\"update\"] }"}),
        )
        .await;
    server
        .post_ok(&root, "sys/auth/approle", json!({"type": "approle"}))
        .await;
    server
        .post_ok(
            &root,
            "auth/approle/role/gateway",
            json!({"token_policies": "gateway-pki", "token_ttl": "5m"}),
        )
        .await;
    let role_id = c
        .get(format!(
            "{}/v1/auth/approle/role/gateway/role-id",
            server.addr
        ))
        .header("X-Vault-Token", &root)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret_id = server
        .post_ok(&root, "auth/approle/role/gateway/secret-id", json!({}))
        .await["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_owned();

    std::fs::create_dir(dir.join("tls")).unwrap();
    std::fs::write(dir.join("ca.pem"), &ca).unwrap();
    std::fs::write(dir.join("role-id"), &role_id).unwrap();
    std::fs::write(dir.join("secret-id"), "a-wrong-secret-id").unwrap();
    std::fs::write(
        dir.join("policies.cedar"),
        "permit(principal, action, resource);",
    )
    .unwrap();
    let cfg = dir.join("gateway.toml");
    std::fs::write(&cfg, config(&server.addr)).unwrap();

    // deny: `config check` accepts the missing files (the gateway writes
    // them), but a login that fails leaves no certificate to serve
    let check = Command::new(gateway_common::common::BIN)
        .args(["config", "check"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let out = Command::new(gateway_common::common::BIN)
        .arg("gateway")
        .arg("--config")
        .arg(&cfg)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("palisade: auth/approle/login: 400 invalid role ID or secret ID"),
        "{text}"
    );
    assert!(!dir.join("tls/gateway.pem").exists());
    gateway_common::assert_no_secrets("refused start", &text, &["a-wrong-secret-id".into()]);

    // allow: issued at start, served, renewed without a restart
    std::fs::write(dir.join("secret-id"), &secret_id).unwrap();
    let gw = Gateway::start(&cfg, "gateway").await;
    let first = served(&gw, &ca).await;
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("tls/gateway.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600);
    let pid = gw.pid();
    wait_for("a renewed certificate", Duration::from_secs(20), || async {
        let now = served(&gw, &ca).await;
        (now != first).then_some(())
    })
    .await;
    assert_eq!(gw.pid(), pid);
    wait_for(
        "a reload after the renewal",
        Duration::from_secs(10),
        || async { gw.stderr().contains("configuration reloaded").then_some(()) },
    )
    .await;
    let logs = format!("{}{}", gw.stdout(), gw.stderr());
    assert!(logs.contains("certificate renewed by palisade"), "{logs}");
    let key = std::fs::read_to_string(dir.join("tls/gateway.key")).unwrap();
    gateway_common::assert_no_secrets("gateway output", &logs, &[secret_id, key]);
}
