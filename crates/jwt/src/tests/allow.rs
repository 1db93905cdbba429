//! Tokens that must verify.

use serde_json::json;

use super::*;
use crate::MAX_TOKEN_BYTES;

async fn ok(token: &str) -> std::sync::Arc<crate::Claims> {
    let (v, _dir) = fixture().await;
    v.verify_at(token, at(NOW))
        .await
        .expect("token should verify")
}

#[tokio::test]
async fn rs256_from_jwks_file() {
    let k = keys();
    let c = ok(&token(
        &header("RS256", "rsa1"),
        &claims(ISS),
        &Signer::Rs256(&k.rsa),
    ))
    .await;
    assert_eq!(c.iss, ISS);
    assert_eq!(c.sub.as_deref(), Some("user-1"));
    assert_eq!(c.aud, vec![AUD.to_owned()]);
    assert_eq!(c.exp, (NOW + 3600) as i64);
    assert_eq!(c.alg, Alg::RS256);
    assert_eq!(c.kid.as_deref(), Some("rsa1"));
    assert_eq!(c.get("iat"), Some(&json!(NOW)));
}

#[tokio::test]
async fn ps256_from_jwks_file() {
    let k = keys();
    let c = ok(&token(
        &header("PS256", "rsa1"),
        &claims(ISS),
        &Signer::Ps256(&k.rsa),
    ))
    .await;
    assert_eq!(c.alg, Alg::PS256);
}

#[tokio::test]
async fn es256_from_jwks_file() {
    let k = keys();
    let c = ok(&token(
        &header("ES256", "ec256"),
        &claims(ISS),
        &Signer::Ec(&k.p256),
    ))
    .await;
    assert_eq!(c.alg, Alg::ES256);
}

#[tokio::test]
async fn es384_from_jwks_file() {
    let k = keys();
    let c = ok(&token(
        &header("ES384", "ec384"),
        &claims(ISS),
        &Signer::Ec(&k.p384),
    ))
    .await;
    assert_eq!(c.alg, Alg::ES384);
}

#[tokio::test]
async fn eddsa_from_jwks_file() {
    let k = keys();
    let c = ok(&token(
        &header("EdDSA", "ed1"),
        &claims(ISS),
        &Signer::Ed(&k.ed),
    ))
    .await;
    assert_eq!(c.alg, Alg::EdDSA);
}

#[tokio::test]
async fn hs256_with_32_byte_secret() {
    let t = token(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &claims(ISS_HS),
        &Signer::Hs256(HS_SECRET),
    );
    let c = ok(&t).await;
    assert_eq!(
        (c.iss.as_str(), c.alg, c.kid.as_deref()),
        (ISS_HS, Alg::HS256, None)
    );
}

#[tokio::test]
async fn without_kid_the_keys_of_the_right_type_are_tried() {
    let k = keys();
    let c = ok(&token(
        &json!({"alg": "ES384"}),
        &claims(ISS),
        &Signer::Ec(&k.p384),
    ))
    .await;
    assert_eq!(c.kid, None);
    ok(&token(
        &json!({"alg": "RS256"}),
        &claims(ISS),
        &Signer::Rs256(&k.rsa),
    ))
    .await;
}

#[tokio::test]
async fn several_issuers_each_with_their_own_keys_and_audiences() {
    let (v, _dir) = fixture().await;
    let k = keys();
    let a = token(
        &header("ES256", "ec256"),
        &claims(ISS),
        &Signer::Ec(&k.p256),
    );
    let mut c = claims(ISS_RS);
    c["aud"] = json!("admin");
    let b = token(&header("RS256", "rsa2"), &c, &Signer::Rs256(&k.rsa2));
    assert_eq!(v.verify_at(&a, at(NOW)).await.unwrap().iss, ISS);
    assert_eq!(v.verify_at(&b, at(NOW)).await.unwrap().iss, ISS_RS);
}

#[tokio::test]
async fn aud_as_array() {
    let k = keys();
    let mut c = claims(ISS);
    c["aud"] = json!(["someone-else", AUD]);
    let got = ok(&token(&header("EdDSA", "ed1"), &c, &Signer::Ed(&k.ed))).await;
    assert_eq!(got.aud, vec!["someone-else".to_owned(), AUD.to_owned()]);
}

#[tokio::test]
async fn leeway_allows_a_little_clock_skew() {
    let k = keys();
    let s = Signer::Ed(&k.ed);
    // Expired 59 s ago, leeway 60 s.
    let mut c = claims(ISS);
    c["exp"] = json!(NOW - 59);
    ok(&token(&header("EdDSA", "ed1"), &c, &s)).await;
    // Valid from 60 s in the future, leeway 60 s.
    let mut c = claims(ISS);
    c["nbf"] = json!(NOW + 60);
    ok(&token(&header("EdDSA", "ed1"), &c, &s)).await;
    // nbf in the past and fractional NumericDates are fine.
    let mut c = claims(ISS);
    c["nbf"] = json!(NOW - 10);
    c["exp"] = json!(NOW as f64 + 0.5);
    ok(&token(&header("EdDSA", "ed1"), &c, &s)).await;
}

#[tokio::test]
async fn custom_claims_are_returned() {
    let k = keys();
    let mut c = claims(ISS);
    c["scope"] = json!("read write");
    c["nested"] = json!({"a": [1, 2]});
    let got = ok(&token(&header("ES256", "ec256"), &c, &Signer::Ec(&k.p256))).await;
    assert_eq!(got.get("scope"), Some(&json!("read write")));
    assert_eq!(got.get("nested"), Some(&json!({"a": [1, 2]})));
}

#[tokio::test]
async fn a_token_of_exactly_8_kib_verifies() {
    let k = keys();
    let h = header("ES256", "ec256");
    let sig_len = b64([0u8; 64]).len();
    let with_pad = |pad: usize| {
        let mut c = claims(ISS);
        c["pad"] = json!("x".repeat(pad));
        c
    };
    let len =
        |pad: usize| b64(h.to_string()).len() + b64(with_pad(pad).to_string()).len() + sig_len + 2;
    let mut pad = 0;
    while len(pad + 1) <= MAX_TOKEN_BYTES {
        pad += 1;
    }
    let t = token(&h, &with_pad(pad), &Signer::Ec(&k.p256));
    // base64 grows by 1 or 2 characters per byte, so we land on 8191 or 8192.
    assert!(t.len() == MAX_TOKEN_BYTES || t.len() == MAX_TOKEN_BYTES - 1);
    ok(&t).await;
}

#[tokio::test]
async fn what_the_caller_derives_is_made_once_per_token() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (v, _dir) = fixture().await;
    let k = keys();
    let made = AtomicUsize::new(0);
    let derive = |c: &crate::Claims| {
        made.fetch_add(1, Ordering::Relaxed);
        c.sub.clone()
    };
    let t = token(
        &header("ES256", "ec256"),
        &claims(ISS),
        &Signer::Ec(&k.p256),
    );
    for _ in 0..3 {
        let c = v.verify_at(&t, at(NOW)).await.unwrap();
        assert_eq!(c.derived(derive), Some(&Some("user-1".to_owned())));
    }
    assert_eq!(made.load(Ordering::Relaxed), 1);
    // asked for another type: nothing (the first one stays)
    let c = v.verify_at(&t, at(NOW)).await.unwrap();
    assert_eq!(c.derived(|_| 7u8), None);
    // another token has its own
    let mut other = claims(ISS);
    other["sub"] = json!("user-2");
    let t2 = token(&header("ES256", "ec256"), &other, &Signer::Ec(&k.p256));
    let c2 = v.verify_at(&t2, at(NOW)).await.unwrap();
    assert_eq!(c2.derived(derive), Some(&Some("user-2".to_owned())));
    assert_eq!(made.load(Ordering::Relaxed), 2);
}
