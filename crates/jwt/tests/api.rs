//! The crate as the gateway sees it: public API only, real clock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use palisade_jwt::{Alg, ConfigProblem, IssuerConfig, JwtError, KeySource, Verifier};
use serde_json::json;

fn b64(b: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(key: &Ed25519KeyPair, claims: serde_json::Value) -> String {
    let input = format!(
        "{}.{}",
        b64(json!({"alg": "EdDSA", "kid": "k1"}).to_string()),
        b64(claims.to_string())
    );
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", b64(sig.as_ref()))
}

async fn verifier(key: &Ed25519KeyPair) -> (Arc<Verifier>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k1",
                                 "x": b64(key.public_key().as_ref())}]});
    std::fs::write(&path, jwks.to_string()).unwrap();
    let cfg = IssuerConfig::new(
        "https://idp.example",
        vec!["api".into()],
        vec![Alg::EdDSA],
        KeySource::File(path),
    );
    let v = Verifier::new(vec![cfg], reqwest::Client::new())
        .await
        .unwrap();
    (v, dir)
}

#[tokio::test]
async fn verify_with_the_real_clock() {
    let key = Ed25519KeyPair::generate().unwrap();
    let (v, _dir) = verifier(&key).await;
    let good = sign(
        &key,
        json!({"iss": "https://idp.example", "sub": "alice", "aud": ["api"], "exp": now() + 300}),
    );
    let claims = v.verify(&good).await.unwrap();
    assert_eq!(claims.iss, "https://idp.example");
    assert_eq!(claims.sub.as_deref(), Some("alice"));
    assert_eq!(claims.alg, Alg::EdDSA);

    // Expired by more than the default 60 s leeway.
    let old = sign(
        &key,
        json!({"iss": "https://idp.example", "aud": "api", "exp": now() - 120}),
    );
    let err = v.verify(&old).await.unwrap_err();
    assert_eq!(err, JwtError::Expired);
    assert_eq!(err.reason(), "expired");
}

#[tokio::test]
async fn shared_across_tasks() {
    let key = Ed25519KeyPair::generate().unwrap();
    let (v, _dir) = verifier(&key).await;
    let token = sign(
        &key,
        json!({"iss": "https://idp.example", "aud": "api", "exp": now() + 300}),
    );
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (v, token) = (Arc::clone(&v), token.clone());
        tasks.push(tokio::spawn(async move { v.verify(&token).await.is_ok() }));
    }
    for t in tasks {
        assert!(t.await.unwrap());
    }
    // No JWKS URL: the refresh task has nothing to do and ends.
    tokio::time::timeout(Duration::from_secs(5), v.spawn_refresh())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn constructor_refuses_weak_configuration() {
    let weak = IssuerConfig {
        issuer: "hs".into(),
        audiences: vec!["api".into()],
        algorithms: vec![Alg::HS256],
        keys: KeySource::Hs256Secret(vec![1u8; 16].into()),
        leeway: Duration::from_secs(120),
        caller_checks_audience: false,
    };
    let err = Verifier::new(vec![weak], reqwest::Client::new())
        .await
        .unwrap_err();
    assert_eq!(
        err.problems,
        vec![
            ConfigProblem::LeewayTooLarge {
                issuer: "hs".into()
            },
            ConfigProblem::SecretTooShort {
                issuer: "hs".into()
            },
        ]
    );
    assert!(err.to_string().contains("at least 32 bytes"));
}
