//! `palisade-bench gateway-setup DIR`: writes everything bench/gateway.sh
//! needs: a CA and a server certificate for 127.0.0.1/localhost, an ES256 key
//! with its JWKS and a signed token, the Cedar policy, the gateway config and
//! the nginx configs (static upstream, plain TLS reverse proxy, and both in
//! one instance).

use std::path::Path;

use base64::Engine as _;

pub(crate) fn run(dir: &Path, ports: [u16; 4]) -> Result<(), String> {
    let [upstream, nginx_proxy, gateway, admin] = ports;
    std::fs::create_dir_all(dir.join("www/orders")).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("www/orders/index.json"), "{\"orders\":[1,2,3]}\n")
        .map_err(|e| e.to_string())?;

    // CA and server certificate
    let ca_key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut ca_params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "palisade bench CA");
    let ca = ca_params.self_signed(&ca_key).map_err(|e| e.to_string())?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let srv_key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let srv_params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(|e| e.to_string())?;
    let srv = srv_params
        .signed_by(&srv_key, &issuer)
        .map_err(|e| e.to_string())?;
    std::fs::write(dir.join("ca.pem"), ca.pem()).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("server.pem"), srv.pem()).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("server-key.pem"), srv_key.serialize_pem())
        .map_err(|e| e.to_string())?;

    // ES256 signing key, JWKS and a token valid for a day
    let jwt_key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let raw = jwt_key.public_key_raw();
    if raw.len() != 65 || raw[0] != 4 {
        return Err("unexpected P-256 public key encoding".into());
    }
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jwks = serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "bench-1",
        "x": b64.encode(&raw[1..33]), "y": b64.encode(&raw[33..65]),
    }]});
    std::fs::write(dir.join("jwks.json"), jwks.to_string()).map_err(|e| e.to_string())?;
    let enc = jsonwebtoken::EncodingKey::from_ec_pem(jwt_key.serialize_pem().as_bytes())
        .map_err(|e| e.to_string())?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("bench-1".into());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let claims = serde_json::json!({
        "iss": "https://idp.bench", "aud": "orders-api", "sub": "bench-user",
        "scope": "orders:read", "iat": now, "exp": now + 86400,
    });
    let token = jsonwebtoken::encode(&header, &claims, &enc).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("token.txt"), token).map_err(|e| e.to_string())?;

    std::fs::write(
        dir.join("policies.cedar"),
        "@id(\"orders-read\")\npermit(principal, action == Action::\"GET\", resource == Route::\"orders\")\nwhen { context.scopes.contains(\"orders:read\") };\n",
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        dir.join("gateway.toml"),
        format!(
            r#"log_level = "warn"

[[listeners]]
name = "public"
address = "127.0.0.1:{gateway}"
certificates = [{{ cert_file = "server.pem", key_file = "server-key.pem", server_names = ["localhost"] }}]

[admin]
address = "127.0.0.1:{admin}"

[limits]
max_connections = 20000

[[upstreams]]
name = "static"
endpoints = ["127.0.0.1:{upstream}"]

[[issuers]]
name = "bench"
issuer = "https://idp.bench"
audiences = ["orders-api"]
algorithms = ["ES256"]
jwks_file = "jwks.json"

[ratelimit]
peer = {{ limit = 1000000, period_s = 1, burst = 100000 }}

[authorization]
policy_file = "policies.cedar"

[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "static"
authn = ["jwt"]
ratelimit = {{ limit = 1000000, period_s = 1, burst = 100000 }}
forward_identity = {{ "x-user" = "sub" }}
"#
        ),
    )
    .map_err(|e| e.to_string())?;
    // nginx configs. The static upstream runs as its own nginx instance
    // (upstream.conf) and the proxy as another (proxy.conf), so both proxies
    // reach a separate upstream process, as in a deployment. shared.conf is
    // the earlier layout (one nginx serving both the proxy and the upstream,
    // which lets nginx answer a proxied request within one worker's event
    // loop): bench/gateway.sh UPSTREAM=shared.
    let d = dir.display();
    let head = |name: &str| {
        format!(
            "worker_processes 2;\ndaemon off;\npid {d}/{name}.pid;\nerror_log {d}/{name}-error.log warn;\n\
             events {{ worker_connections 16000; }}\nworker_rlimit_nofile 20000;\n"
        )
    };
    let upstream_server = format!(
        r#"  server {{
    listen 127.0.0.1:{upstream};
    root {d}/www;
    index index.json;
  }}
"#
    );
    let proxy_server = format!(
        r#"  upstream static_up {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{nginx_proxy} ssl;
    ssl_certificate {d}/server.pem;
    ssl_certificate_key {d}/server-key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{
      proxy_pass http://static_up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
"#
    );
    let http = |servers: &str| {
        format!("http {{\n  access_log off;\n  keepalive_requests 1000000;\n{servers}}}\n")
    };
    for (file, servers) in [
        ("upstream.conf", upstream_server.clone()),
        ("proxy.conf", proxy_server.clone()),
        ("shared.conf", format!("{proxy_server}{upstream_server}")),
    ] {
        let name = file.trim_end_matches(".conf");
        std::fs::write(dir.join(file), format!("{}{}", head(name), http(&servers)))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
