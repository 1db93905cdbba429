//! The gateway's API keys kept in Palisade (issue #17): `[apikeys] store =
//! "palisade"` keeps the key table (records and keyed hashes, never a key) in
//! a KV v2 secret of a real `palisade server`. The operator manages keys with
//! `palisade gateway apikey` and their own token (`VAULT_TOKEN`); the gateway
//! reads the table with a token that may only read it. Allowed: a key created
//! that way opens its route. Denied: the same key once revoked (401 within the
//! store's refresh interval), the gateway's read-only token writing keys
//! (403 from the server), and a gateway whose token cannot read the table
//! does not start.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod gateway_common;

use std::time::Duration;

use gateway_common::common::{Server, Spec};
use gateway_common::{Gateway, ok_upstream, palisade, wait_for};
use serde_json::{Value, json};

fn config(server: &str, upstream: u16) -> String {
    format!(
        r#"
[[listeners]]
name = "plain"
address = "127.0.0.1:0"
protocol = "http"
dangerous_plaintext = true

[admin]
address = "127.0.0.1:0"

[[upstreams]]
name = "app"
endpoints = ["127.0.0.1:{upstream}"]

[authorization]
policy_file = "policies.cedar"

[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "app"
authn = ["apikey"]

[apikeys]
store = "palisade"
kv_path = "gateway/apikeys"
pepper_file = "pepper"

[palisade]
address = "{server}"
token_file = "gateway-token"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_keeps_its_api_keys_in_palisade() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let root = format!("dev-root-{}", gateway_common::unique());
    let server = Server::start_dev(&Spec::sqlite(dir), &root, &dir.join("audit.log")).await;
    let c = reqwest::Client::new();
    server
        .post_ok(
            &root,
            "sys/policies/acl/gateway-apikeys",
            json!({"policy": "path \"secret/data/gateway/apikeys\" { capabilities = [\"read\"] }"}),
        )
        .await;
    let token = |policies: &'static str| {
        let (server, root) = (&server, root.clone());
        async move {
            server
                .post_ok(&root, "auth/token/create", json!({"policies": policies}))
                .await["auth"]["client_token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let reader = token("gateway-apikeys").await;
    let nobody = token("default").await;

    std::fs::write(dir.join("pepper"), "p".repeat(32)).unwrap();
    std::fs::write(
        dir.join("policies.cedar"),
        "permit(principal, action, resource);",
    )
    .unwrap();
    std::fs::write(dir.join("gateway-token"), &nobody).unwrap();
    let cfg = dir.join("gateway.toml");
    std::fs::write(&cfg, config(&server.addr, ok_upstream())).unwrap();

    // the operator creates a key with their own token
    let root_env = [("VAULT_TOKEN", root.as_str())];
    let cfg_s = cfg.display().to_string();
    fn gw_args<'a>(cfg: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
        let mut a = vec!["gateway", "--config", cfg];
        a.extend_from_slice(rest);
        a
    }
    let (code, out, err) = palisade(
        &gw_args(
            &cfg_s,
            &[
                "apikey",
                "create",
                "--consumer",
                "partner-a",
                "--scope",
                "orders:read",
                "--format",
                "json",
            ],
        ),
        &root_env,
    );
    assert_eq!(code, 0, "{out}{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    // the secret holds the record and a keyed hash, never the key
    let stored = c
        .get(format!("{}/v1/secret/data/gateway/apikeys", server.addr))
        .header("X-Vault-Token", &root)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        stored.contains(&id) && stored.contains("\"hash\""),
        "{stored}"
    );
    assert!(!stored.contains(&key) && !stored.contains(key.rsplit('_').next().unwrap()));

    // deny: a gateway whose token cannot read the table does not start
    let out = std::process::Command::new(gateway_common::common::BIN)
        .args(["gateway", "--config", &cfg_s])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("secret/data/gateway/apikeys: 403 permission denied"),
        "{text}"
    );

    // allow: with its read-only token the gateway serves the key
    std::fs::write(dir.join("gateway-token"), &reader).unwrap();
    let gw = Gateway::start(&cfg, "gateway").await;
    let url = format!("http://{}/orders/1", gw.addr("plain"));
    let get = |k: String| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            c.get(url)
                .header("x-api-key", k)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(get(key.clone()).await, 200);
    // deny: the gateway's own token cannot write keys
    let (code, out, err) = palisade(
        &gw_args(&cfg_s, &["apikey", "create", "--consumer", "mallory"]),
        &[],
    );
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("403 permission denied"), "{err}");
    // deny: revoked by the operator, refused within the refresh interval
    let (code, out, err) = palisade(&gw_args(&cfg_s, &["apikey", "revoke", &id]), &root_env);
    assert_eq!(code, 0, "{out}{err}");
    wait_for(
        "the revoked key refused",
        Duration::from_secs(15),
        || async { (get(key.clone()).await == 401).then_some(()) },
    )
    .await;
    let logs = format!("{}{}", gw.stdout(), gw.stderr());
    gateway_common::assert_no_secrets("gateway output", &logs, &[key, reader, root]);
}
