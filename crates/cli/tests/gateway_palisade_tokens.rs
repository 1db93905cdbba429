//! The gateway trusts Palisade-issued tokens through the provider's JWKS
//! endpoint (issue #17): a real `palisade server` runs the OAuth2 provider,
//! a real `palisade gateway` is configured with the provider as an issuer
//! (`jwks_url` = its `.well-known/keys`), and a client-credentials token
//! from the provider opens a route whose Cedar policy needs its scope, in
//! front of a real Express service. Denied: a token for another audience
//! (401 `unauthenticated`), a token without the scope (403 `forbidden`), a
//! token revoked at the provider once the gateway's cached introspection
//! answer has run out (401).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod gateway_common;

use gateway_common::common::{Server, Spec};
use gateway_common::{Gateway, Pki, Upstream, send};
use serde_json::{Value, json};

const POLICIES: &str = r#"
@id("orders-readers")
permit(principal, action, resource == Route::"orders")
when { context.scopes.contains("orders:read") };
"#;

fn config(upstream_port: u16, issuer: &str, introspect_client: &str) -> String {
    format!(
        r#"log_level = "info"

[[listeners]]
name = "public"
address = "127.0.0.1:0"
certificates = [{{ cert_file = "server.pem", key_file = "server.key", server_names = ["localhost"] }}]

[admin]
address = "127.0.0.1:0"

[[upstreams]]
name = "app"
endpoints = ["127.0.0.1:{upstream_port}"]

[[issuers]]
name = "palisade"
issuer = "{issuer}"
audiences = ["orders-api"]
algorithms = ["EdDSA"]
jwks_url = "{issuer}/.well-known/keys"
[issuers.introspection]
url = "{issuer}/introspect"
client_id = "{introspect_client}"
client_secret_file = "introspect.secret"
cache_s = 1

[authorization]
policy_file = "policies.cedar"

[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "app"
authn = ["jwt"]
forward_identity = {{ "x-user" = "sub", "x-scopes" = "scopes" }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_verifies_tokens_from_the_palisade_provider() {
    if !gateway_common::node_ready("gateway_palisade_tokens") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let root = format!("dev-root-{}", gateway_common::unique());
    let server = Server::start_dev(&Spec::sqlite(dir), &root, &dir.join("audit.log")).await;
    let api = reqwest::Client::new();
    server
        .post_ok(
            &root,
            "identity/oidc/key/default",
            json!({"algorithm": "EdDSA"}),
        )
        .await;
    server
        .post_ok(
            &root,
            "identity/oidc/provider/default",
            json!({"issuer": server.addr, "allowed_client_ids": "*"}),
        )
        .await;
    let mut clients = Vec::new();
    for (name, audiences) in [
        ("orders-caller", "orders-api"),
        ("elsewhere", "billing-api"),
        ("gateway", "gateway"),
    ] {
        let v = server.post_ok(&root, &format!("identity/oidc/client/{name}"),
            json!({"allowed_scopes": ["orders:read", "profile"], "allowed_audiences": audiences}),
        )
        .await;
        clients.push((
            v["data"]["client_id"].as_str().unwrap().to_owned(),
            v["data"]["client_secret"].as_str().unwrap().to_owned(),
        ));
    }
    let issuer = format!("{}/v1/identity/oidc/provider/default", server.addr);
    let token = |i: usize, scope: &'static str| {
        let (api, url, (id, secret)) = (api.clone(), format!("{issuer}/token"), clients[i].clone());
        async move {
            let v: Value = api
                .post(url)
                .basic_auth(id, Some(secret))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(format!("grant_type=client_credentials&scope={scope}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["access_token"].as_str().unwrap().to_owned()
        }
    };
    let good = token(0, "orders:read").await;
    let no_scope = token(0, "profile").await;
    let other_audience = token(1, "orders:read").await;

    let pki = Pki::new(dir);
    std::fs::write(dir.join("policies.cedar"), POLICIES).unwrap();
    let upstream = Upstream::start(dir);
    let cfg = dir.join("gateway.toml");
    std::fs::write(dir.join("introspect.secret"), &clients[2].1).unwrap();
    std::fs::write(&cfg, config(upstream.port, &issuer, &clients[2].0)).unwrap();
    let gw = Gateway::start(&cfg, "gateway").await;
    let base = format!("https://localhost:{}", gw.addr("public").port());
    let c = pki.client(None);

    let r = send(c.get(format!("{base}/orders/1")).bearer_auth(&good)).await;
    assert_eq!(r.status, 200, "{r:?}");
    let h = &r.json()["headers"];
    assert_eq!(h["x-user"], clients[0].0.as_str(), "{h}");
    assert_eq!(h["x-scopes"], "orders:read", "{h}");

    let r = send(
        c.get(format!("{base}/orders/1"))
            .bearer_auth(&other_audience),
    )
    .await;
    r.assert_error(401, "unauthenticated", "a token for billing-api");
    let r = send(c.get(format!("{base}/orders/1")).bearer_auth(&no_scope)).await;
    r.assert_error(403, "forbidden", "a token without orders:read");

    // revoked at the provider (RFC 7009): refused once the gateway's cached
    // introspection answer (1 s) has run out, though its signature is good
    let r = api
        .post(format!("{issuer}/revoke"))
        .basic_auth(&clients[0].0, Some(&clients[0].1))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("token={good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = send(c.get(format!("{base}/orders/1")).bearer_auth(&good)).await;
    r.assert_error(401, "unauthenticated", "a revoked token");
    assert!(gw.stdout().contains("token_inactive"), "{}", gw.stdout());
    gateway_common::assert_no_secrets(
        "gateway output",
        &format!("{}{}", gw.stdout(), gw.stderr()),
        &[
            good,
            no_scope,
            other_audience,
            clients[0].1.clone(),
            clients[2].1.clone(),
        ],
    );
}
