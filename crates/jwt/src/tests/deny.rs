//! Tokens that must be refused, each with the exact error.

use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::KeyPair;
use base64::Engine as _;
use serde_json::{Value, json};

use super::*;
use crate::JwtError;
use crate::keys::KeySet;
use crate::verifier::{Issuer, Keys};

async fn refused(token: &str) -> JwtError {
    let (v, _dir) = fixture().await;
    v.verify_at(token, at(NOW))
        .await
        .expect_err("token should be refused")
}

// ---- alg none ---------------------------------------------------------------

#[tokio::test]
async fn alg_none_in_any_case_with_and_without_signature() {
    let (v, _dir) = fixture().await;
    let k = keys();
    let signers = [
        Signer::Raw(vec![]),
        Signer::Raw(b"not really a signature".to_vec()),
        Signer::Hs256(HS_SECRET),
        Signer::Rs256(&k.rsa),
    ];
    for alg in ["none", "None", "NONE", "nOnE", " none"] {
        for iss in [ISS, ISS_RS, ISS_HS] {
            for s in &signers {
                for h in [json!({"alg": alg}), header(alg, "rsa1")] {
                    let t = token(&h, &claims(iss), s);
                    assert_eq!(
                        v.verify_at(&t, at(NOW)).await,
                        Err(JwtError::AlgNone),
                        "{alg} {iss}"
                    );
                }
            }
        }
        // Also with the signature segment left out entirely ("h.p.").
        let unsigned = format!(
            "{}.{}.",
            b64(json!({"alg": alg}).to_string()),
            b64(claims(ISS).to_string())
        );
        assert_eq!(
            v.verify_at(&unsigned, at(NOW)).await,
            Err(JwtError::AlgNone)
        );
    }
}

#[tokio::test]
async fn unknown_or_miscased_algorithms() {
    let k = keys();
    for alg in [
        "rs256", "HS384", "HS512", "RS384", "RS512", "ES512", "PS512", "Ed25519", "XYZ", "",
    ] {
        let t = token(&header(alg, "rsa1"), &claims(ISS), &Signer::Rs256(&k.rsa));
        assert_eq!(refused(&t).await, JwtError::AlgNotAllowed, "{alg}");
    }
    let t = token(&json!({"alg": 256}), &claims(ISS), &Signer::Rs256(&k.rsa));
    assert_eq!(refused(&t).await, JwtError::Malformed);
    let t = token(
        &json!({"kid": "rsa1"}),
        &claims(ISS),
        &Signer::Rs256(&k.rsa),
    );
    assert_eq!(refused(&t).await, JwtError::Malformed);
}

#[tokio::test]
async fn alg_outside_the_issuers_allowlist() {
    let k = keys();
    // ISS_RS allows RS256 only; PS256 with its own key is still refused.
    let t = token(
        &header("PS256", "rsa2"),
        &claims(ISS_RS),
        &Signer::Ps256(&k.rsa2),
    );
    assert_eq!(refused(&t).await, JwtError::AlgNotAllowed);
    // ISS does not allow HS256.
    let t = token(
        &json!({"alg": "HS256"}),
        &claims(ISS),
        &Signer::Hs256(HS_SECRET),
    );
    assert_eq!(refused(&t).await, JwtError::AlgNotAllowed);
    // ISS_HS allows HS256 only.
    let t = token(&header("EdDSA", "ed1"), &claims(ISS_HS), &Signer::Ed(&k.ed));
    assert_eq!(refused(&t).await, JwtError::AlgNotAllowed);
}

// ---- key confusion ----------------------------------------------------------

/// Every byte string an attacker might try as the HMAC key: the RSA public
/// key as PEM, as DER (SPKI and PKCS#1), its modulus, and its JWK.
fn rsa_public_key_forms(key: &aws_lc_rs::signature::RsaKeyPair, jwk: &Value) -> Vec<Vec<u8>> {
    let spki = key.public_key().as_der().unwrap().as_ref().to_vec();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(&spki)
    );
    let pkcs1 = key.public_key().as_ref().to_vec();
    let n = crate::keys::b64url(jwk["n"].as_str().unwrap()).unwrap();
    vec![
        pem.clone().into_bytes(),
        pem.trim_end().as_bytes().to_vec(),
        spki,
        pkcs1,
        n,
        jwk.to_string().into_bytes(),
    ]
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_rs256_only_issuer() {
    let k = keys();
    let jwk = rsa_jwk("rsa2", &k.rsa2);
    for secret in rsa_public_key_forms(&k.rsa2, &jwk) {
        for h in [header("HS256", "rsa2"), json!({"alg": "HS256"})] {
            let t = token(&h, &claims(ISS_RS), &Signer::Hs256(&secret));
            assert_eq!(refused(&t).await, JwtError::AlgNotAllowed);
        }
    }
}

#[tokio::test]
async fn hs256_and_rs256_allowed_but_only_rsa_keys() {
    let k = keys();
    let dir = tempfile::tempdir().unwrap();
    let path = write_jwks(&dir, "rsa.json", vec![rsa_jwk("rsa1", &k.rsa)]);
    // The constructor refuses the configuration outright...
    let err = Verifier::new(
        vec![issuer(
            ISS,
            vec![Alg::RS256, Alg::HS256],
            KeySource::File(path.clone()),
        )],
        reqwest::Client::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.problems,
        vec![crate::ConfigProblem::Hs256WithoutSecret {
            issuer: ISS.to_owned()
        }]
    );
    // ...and were it built anyway, no RSA key would verify an HMAC.
    let jwks = std::fs::read(&path).unwrap();
    let v = unchecked(vec![(
        ISS,
        Issuer {
            caller_checks_audience: false,
            audiences: vec![AUD.to_owned()],
            algorithms: vec![Alg::RS256, Alg::HS256],
            leeway: Duration::from_secs(60),
            keys: Keys::Static(Arc::new(KeySet::from_jwks(&jwks).unwrap())),
        },
    )]);
    let jwk = rsa_jwk("rsa1", &k.rsa);
    for secret in rsa_public_key_forms(&k.rsa, &jwk) {
        let t = token(
            &header("HS256", "rsa1"),
            &claims(ISS),
            &Signer::Hs256(&secret),
        );
        assert_eq!(v.verify_at(&t, at(NOW)).await, Err(JwtError::AlgNotAllowed));
        let t = token(
            &json!({"alg": "HS256"}),
            &claims(ISS),
            &Signer::Hs256(&secret),
        );
        assert_eq!(v.verify_at(&t, at(NOW)).await, Err(JwtError::UnknownKey));
    }
    // The RS256 token of the same issuer still verifies.
    let t = token(
        &header("RS256", "rsa1"),
        &claims(ISS),
        &Signer::Rs256(&k.rsa),
    );
    assert!(v.verify_at(&t, at(NOW)).await.is_ok());
}

#[tokio::test]
async fn ec_key_named_for_an_rsa_algorithm_and_back() {
    let k = keys();
    // kid names the P-256 key, alg says RS256, signed with an RSA key.
    let t = token(
        &header("RS256", "ec256"),
        &claims(ISS),
        &Signer::Rs256(&k.rsa),
    );
    assert_eq!(refused(&t).await, JwtError::AlgNotAllowed);
    // kid names the RSA key, alg says ES256.
    let t = token(&header("ES256", "rsa1"), &claims(ISS), &Signer::Ec(&k.p256));
    assert_eq!(refused(&t).await, JwtError::AlgNotAllowed);
    // P-384 key for ES256, P-256 key for ES384, Ed25519 key for ES256.
    let t = token(
        &header("ES256", "ec384"),
        &claims(ISS),
        &Signer::Ec(&k.p256),
    );
    assert_eq!(refused(&t).await, JwtError::AlgNotAllowed);
    let t = token(
        &header("ES384", "ec256"),
        &claims(ISS),
        &Signer::Ec(&k.p384),
    );
    assert_eq!(refused(&t).await, JwtError::AlgNotAllowed);
    let t = token(&header("ES256", "ed1"), &claims(ISS), &Signer::Ec(&k.p256));
    assert_eq!(refused(&t).await, JwtError::AlgNotAllowed);
}

#[tokio::test]
async fn a_jwk_alg_pins_the_key_to_that_algorithm() {
    let k = keys();
    let dir = tempfile::tempdir().unwrap();
    let mut jwk = rsa_jwk("rsa1", &k.rsa);
    jwk["alg"] = json!("RS256");
    let path = write_jwks(&dir, "pinned.json", vec![jwk]);
    let v = Verifier::new(
        vec![issuer(
            ISS,
            vec![Alg::RS256, Alg::PS256],
            KeySource::File(path),
        )],
        reqwest::Client::new(),
    )
    .await
    .unwrap();
    let t = token(
        &header("PS256", "rsa1"),
        &claims(ISS),
        &Signer::Ps256(&k.rsa),
    );
    assert_eq!(v.verify_at(&t, at(NOW)).await, Err(JwtError::AlgNotAllowed));
    let t = token(
        &header("RS256", "rsa1"),
        &claims(ISS),
        &Signer::Rs256(&k.rsa),
    );
    assert!(v.verify_at(&t, at(NOW)).await.is_ok());
}

// ---- keys carried or pointed to by the token ---------------------------------

#[tokio::test]
async fn embedded_jwk_with_the_attackers_key() {
    let k = keys();
    let attacker = ec_jwk("ec256", &k.attacker_p256);
    for kid in ["ec256", "attacker"] {
        let mut h = header("ES256", kid);
        h["jwk"] = attacker.clone();
        let t = token(&h, &claims(ISS), &Signer::Ec(&k.attacker_p256));
        assert_eq!(refused(&t).await, JwtError::EmbeddedKeyHeader);
    }
    // Without the header the attacker's signature is simply bad.
    let t = token(
        &header("ES256", "ec256"),
        &claims(ISS),
        &Signer::Ec(&k.attacker_p256),
    );
    assert_eq!(refused(&t).await, JwtError::BadSignature);
}

#[tokio::test]
async fn jku_x5u_x5c_and_jwk_are_refused_even_with_a_good_signature() {
    let k = keys();
    let cases = [
        ("jku", json!("https://attacker.example/jwks.json")),
        ("x5u", json!("https://attacker.example/cert.pem")),
        ("x5c", json!(["MIIB"])),
        ("jwk", ec_jwk("ec256", &k.p256)),
    ];
    for (name, value) in cases {
        let mut h = header("ES256", "ec256");
        h[name] = value;
        // Signed with the configured key: the rule is about the header, not
        // about whether the signature would pass.
        let t = token(&h, &claims(ISS), &Signer::Ec(&k.p256));
        assert_eq!(refused(&t).await, JwtError::EmbeddedKeyHeader, "{name}");
    }
}

#[tokio::test]
async fn kid_is_only_a_lookup_key() {
    let k = keys();
    for kid in [
        "../../etc/passwd",
        "/dev/null",
        "' OR 1=1 --",
        "rsa1' --",
        "rsa1\u{0000}",
        "RSA1",
        " rsa1",
        "",
        "*",
        "%",
    ] {
        let t = token(&header("RS256", kid), &claims(ISS), &Signer::Rs256(&k.rsa));
        assert_eq!(refused(&t).await, JwtError::UnknownKey, "{kid:?}");
    }
    let t = token(
        &json!({"alg": "RS256", "kid": ["rsa1"]}),
        &claims(ISS),
        &Signer::Rs256(&k.rsa),
    );
    assert_eq!(refused(&t).await, JwtError::Malformed);
}

#[tokio::test]
async fn another_issuers_key_does_not_verify() {
    let k = keys();
    // Signed by ISS_RS's key, claiming to be ISS.
    let t = token(
        &header("RS256", "rsa2"),
        &claims(ISS),
        &Signer::Rs256(&k.rsa2),
    );
    assert_eq!(refused(&t).await, JwtError::UnknownKey);
    let t = token(
        &header("RS256", "rsa1"),
        &claims(ISS),
        &Signer::Rs256(&k.rsa2),
    );
    assert_eq!(refused(&t).await, JwtError::BadSignature);
}

// ---- claims -----------------------------------------------------------------

async fn with_claims(c: &Value) -> Result<std::sync::Arc<crate::Claims>, JwtError> {
    let (v, _dir) = fixture().await;
    let t = token(&header("EdDSA", "ed1"), c, &Signer::Ed(&keys().ed));
    v.verify_at(&t, at(NOW)).await
}

#[tokio::test]
async fn expired() {
    let mut c = claims(ISS);
    c["exp"] = json!(NOW - 3600);
    assert_eq!(with_claims(&c).await, Err(JwtError::Expired));
}

#[tokio::test]
async fn leeway_is_honoured_and_no_more() {
    let mut c = claims(ISS);
    c["exp"] = json!(NOW - 60);
    assert_eq!(with_claims(&c).await, Err(JwtError::Expired));
    c["exp"] = json!(NOW - 59);
    assert!(with_claims(&c).await.is_ok());

    let mut c = claims(ISS);
    c["nbf"] = json!(NOW + 61);
    assert_eq!(with_claims(&c).await, Err(JwtError::NotYetValid));
    c["nbf"] = json!(NOW + 60);
    assert!(with_claims(&c).await.is_ok());

    // With leeway 0 the same tokens are refused.
    let k = keys();
    let dir = tempfile::tempdir().unwrap();
    let path = write_jwks(&dir, "ed.json", vec![ed_jwk("ed1", &k.ed)]);
    let mut cfg = issuer(ISS, vec![Alg::EdDSA], KeySource::File(path));
    cfg.leeway = Duration::ZERO;
    let v = Verifier::new(vec![cfg], reqwest::Client::new())
        .await
        .unwrap();
    let mut c = claims(ISS);
    c["exp"] = json!(NOW);
    let t = token(&header("EdDSA", "ed1"), &c, &Signer::Ed(&k.ed));
    assert_eq!(v.verify_at(&t, at(NOW)).await, Err(JwtError::Expired));
    let mut c = claims(ISS);
    c["nbf"] = json!(NOW + 1);
    let t = token(&header("EdDSA", "ed1"), &c, &Signer::Ed(&k.ed));
    assert_eq!(v.verify_at(&t, at(NOW)).await, Err(JwtError::NotYetValid));
}

#[tokio::test]
async fn not_yet_valid() {
    let mut c = claims(ISS);
    c["nbf"] = json!(NOW + 3600);
    assert_eq!(with_claims(&c).await, Err(JwtError::NotYetValid));
}

#[tokio::test]
async fn wrong_audience() {
    let mut c = claims(ISS);
    c["aud"] = json!("other-api");
    assert_eq!(with_claims(&c).await, Err(JwtError::WrongAudience));
    c["aud"] = json!(["other-api", "API", "api "]);
    assert_eq!(with_claims(&c).await, Err(JwtError::WrongAudience));
    c["aud"] = json!([]);
    assert_eq!(with_claims(&c).await, Err(JwtError::WrongAudience));
    // "admin" is an audience of ISS_RS, not of ISS.
    c["aud"] = json!("admin");
    assert_eq!(with_claims(&c).await, Err(JwtError::WrongAudience));
    c.as_object_mut().unwrap().remove("aud");
    assert_eq!(with_claims(&c).await, Err(JwtError::MissingClaim("aud")));
    c["aud"] = json!([AUD, 1]);
    assert_eq!(with_claims(&c).await, Err(JwtError::Malformed));
}

#[tokio::test]
async fn wrong_issuer() {
    for iss in [
        "https://evil.example",
        "https://idp.example/",
        "HTTPS://IDP.EXAMPLE",
        "",
    ] {
        assert_eq!(
            with_claims(&claims(iss)).await,
            Err(JwtError::UnknownIssuer),
            "{iss}"
        );
    }
    let mut c = claims(ISS);
    c.as_object_mut().unwrap().remove("iss");
    assert_eq!(with_claims(&c).await, Err(JwtError::MissingClaim("iss")));
    c["iss"] = json!([ISS]);
    assert_eq!(with_claims(&c).await, Err(JwtError::Malformed));
}

#[tokio::test]
async fn missing_exp_and_badly_typed_dates() {
    let mut c = claims(ISS);
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(with_claims(&c).await, Err(JwtError::MissingClaim("exp")));
    for bad in [
        json!("2000000000"),
        json!(null),
        json!([NOW + 10]),
        json!(true),
    ] {
        let mut c = claims(ISS);
        c["exp"] = bad.clone();
        assert_eq!(with_claims(&c).await, Err(JwtError::Malformed));
        let mut c = claims(ISS);
        c["nbf"] = bad.clone();
        assert_eq!(with_claims(&c).await, Err(JwtError::Malformed));
        let mut c = claims(ISS);
        c["iat"] = bad;
        assert_eq!(with_claims(&c).await, Err(JwtError::Malformed));
    }
    let mut c = claims(ISS);
    c["sub"] = json!(42);
    assert_eq!(with_claims(&c).await, Err(JwtError::Malformed));
}

#[tokio::test]
async fn claims_are_checked_only_after_the_signature() {
    // An expired token with a bad signature is a bad signature: nothing about
    // an unauthenticated payload is reported.
    let mut c = claims(ISS);
    c["exp"] = json!(NOW - 3600);
    let t = token(&header("EdDSA", "ed1"), &c, &Signer::Raw(vec![0; 64]));
    assert_eq!(refused(&t).await, JwtError::BadSignature);
}

// ---- header rules -----------------------------------------------------------

#[tokio::test]
async fn crit_header() {
    let k = keys();
    for crit in [json!(["exp"]), json!([]), json!(["b64"]), json!("x")] {
        let mut h = header("ES256", "ec256");
        h["crit"] = crit;
        h["exp"] = json!(NOW);
        let t = token(&h, &claims(ISS), &Signer::Ec(&k.p256));
        assert_eq!(refused(&t).await, JwtError::CritHeader);
    }
}

#[tokio::test]
async fn duplicate_members_in_header_or_payload() {
    let k = keys();
    let c = claims(ISS).to_string();
    let h = r#"{"alg":"ES256","kid":"ec256","alg":"ES256"}"#;
    let t = token_raw(h, &c, &Signer::Ec(&k.p256));
    assert_eq!(refused(&t).await, JwtError::Malformed);
    let h = r#"{"alg":"ES256","kid":"ec256","kid":"ec384"}"#;
    let t = token_raw(h, &c, &Signer::Ec(&k.p256));
    assert_eq!(refused(&t).await, JwtError::Malformed);
    let payload = format!(
        r#"{{"iss":"{ISS}","aud":"{AUD}","exp":{},"iss":"{ISS_RS}"}}"#,
        NOW + 60
    );
    let t = token_raw(
        r#"{"alg":"ES256","kid":"ec256"}"#,
        &payload,
        &Signer::Ec(&k.p256),
    );
    assert_eq!(refused(&t).await, JwtError::Malformed);
}

// ---- shape ------------------------------------------------------------------

#[tokio::test]
async fn oversized_token_is_refused_before_decoding() {
    let k = keys();
    let mut c = claims(ISS);
    c["pad"] = json!("x".repeat(MAX_TOKEN_BYTES));
    let t = token(&header("ES256", "ec256"), &c, &Signer::Ec(&k.p256));
    assert!(t.len() > MAX_TOKEN_BYTES);
    assert_eq!(refused(&t).await, JwtError::TooLarge);
    // 8 KiB + 1 of garbage: still TooLarge, not Malformed.
    assert_eq!(
        refused(&"a".repeat(MAX_TOKEN_BYTES + 1)).await,
        JwtError::TooLarge
    );
    assert_eq!(
        refused(&".".repeat(MAX_TOKEN_BYTES + 1)).await,
        JwtError::TooLarge
    );
}

use crate::MAX_TOKEN_BYTES;

#[tokio::test]
async fn truncated_garbage_and_dots() {
    let k = keys();
    let good = token(
        &header("ES256", "ec256"),
        &claims(ISS),
        &Signer::Ec(&k.p256),
    );
    let parts: Vec<&str> = good.split('.').collect();
    let cases: Vec<String> = vec![
        String::new(),
        ".".into(),
        "..".into(),
        "...".into(),
        "....".into(),
        "a.b.c".into(),
        "not a jwt".into(),
        format!("Bearer {good}"),
        format!("{good} "),
        format!(" {good}"),
        format!("{good}."),
        format!("{good}.x"),
        format!("{}.{}", parts[0], parts[1]),
        parts[0].to_owned(),
        format!(".{}.{}", parts[1], parts[2]),
        format!("{}..{}", parts[0], parts[2]),
        // Cut inside the header, and one character off the signature
        // (85 base64 characters cannot be a whole number of bytes).
        good[..10].to_owned(),
        good[..good.len() - 1].to_owned(),
        // Standard-alphabet and padded base64.
        good.replace('-', "+").replace('_', "/") + "+",
        format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
        format!("{}.{}.{}==", parts[0], parts[1], parts[2]),
        // Header that is base64 of non-JSON, of a JSON array, of a string.
        format!("{}.{}.{}", b64("hello"), parts[1], parts[2]),
        format!("{}.{}.{}", b64("[]"), parts[1], parts[2]),
        format!("{}.{}.{}", b64("\"ES256\""), parts[1], parts[2]),
        // Payload that is not a JSON object.
        format!("{}.{}.{}", parts[0], b64("[1,2]"), parts[2]),
        format!("{}.{}.{}", parts[0], b64("null"), parts[2]),
        format!("{}.{}.{}", parts[0], b64(""), parts[2]),
        format!("{}.{}.{}", parts[0], b64("{\"iss\":"), parts[2]),
    ];
    let (v, _dir) = fixture().await;
    for t in &cases {
        assert_eq!(
            v.verify_at(t, at(NOW)).await,
            Err(JwtError::Malformed),
            "{t:?}"
        );
    }
}

#[tokio::test]
async fn signature_of_another_token() {
    let k = keys();
    let a = token(
        &header("ES256", "ec256"),
        &claims(ISS),
        &Signer::Ec(&k.p256),
    );
    let mut c = claims(ISS);
    c["sub"] = json!("admin");
    let b = token(&header("ES256", "ec256"), &c, &Signer::Ec(&k.p256));
    let (a_input, a_sig) = a.rsplit_once('.').unwrap();
    let (b_input, _) = b.rsplit_once('.').unwrap();
    assert_ne!(a_input, b_input);
    assert_eq!(
        refused(&format!("{b_input}.{a_sig}")).await,
        JwtError::BadSignature
    );
    // Empty and wrong-length signatures are bad signatures too.
    assert_eq!(
        refused(&format!("{b_input}.")).await,
        JwtError::BadSignature
    );
    assert_eq!(
        refused(&format!("{b_input}.{}", b64([0u8; 32]))).await,
        JwtError::BadSignature
    );
}

#[tokio::test]
async fn errors_never_contain_the_token() {
    let k = keys();
    let t = token(
        &header("ES256", "ec256"),
        &claims("https://evil.example"),
        &Signer::Ec(&k.p256),
    );
    let e = refused(&t).await;
    let printed = format!("{e} {e:?} {}", e.reason());
    for part in t.split('.') {
        assert!(!printed.contains(part));
    }
    assert!(!printed.contains("evil"));
}

#[test]
fn reasons_are_stable_and_distinct() {
    let all = [
        JwtError::TooLarge,
        JwtError::Malformed,
        JwtError::AlgNone,
        JwtError::AlgNotAllowed,
        JwtError::UnknownIssuer,
        JwtError::UnknownKey,
        JwtError::BadSignature,
        JwtError::Expired,
        JwtError::NotYetValid,
        JwtError::WrongAudience,
        JwtError::MissingClaim("exp"),
        JwtError::CritHeader,
        JwtError::EmbeddedKeyHeader,
        JwtError::KeysUnavailable,
    ];
    let reasons: std::collections::HashSet<&str> = all.iter().map(JwtError::reason).collect();
    assert_eq!(reasons.len(), all.len());
    for r in reasons {
        assert!(
            r.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{r}"
        );
    }
    assert_eq!(JwtError::Expired.reason(), "expired");
}

#[tokio::test]
async fn a_cached_verification_still_expires_and_checks_time_claims() {
    let (v, _dir) = fixture().await;
    let k = keys();
    let t = token(
        &header("ES256", "ec256"),
        &claims(ISS),
        &Signer::Ec(&k.p256),
    );
    assert!(v.verify_at(&t, at(NOW)).await.is_ok());
    // same token string, now served from the verified cache: exp still applies
    assert_eq!(
        v.verify_at(&t, at(NOW + 3600 + 61)).await,
        Err(JwtError::Expired)
    );
    assert!(v.verify_at(&t, at(NOW + 10)).await.is_ok());
    // a different signature over the same claims is not a cache hit
    let (input, sig) = t.rsplit_once('.').unwrap();
    let mut sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .unwrap();
    sig[0] ^= 0x01;
    let forged = format!("{input}.{}", b64(&sig));
    assert_eq!(
        v.verify_at(&forged, at(NOW)).await,
        Err(JwtError::BadSignature)
    );
}

#[tokio::test]
async fn a_cached_verification_still_checks_nbf() {
    let (v, _dir) = fixture().await;
    let k = keys();
    let mut c = claims(ISS);
    c["nbf"] = json!(NOW);
    let t = token(&header("ES256", "ec256"), &c, &Signer::Ec(&k.p256));
    assert!(v.verify_at(&t, at(NOW)).await.is_ok());
    // from the cache now: nbf still applies, with the same 60 s leeway
    assert_eq!(
        v.verify_at(&t, at(NOW - 61)).await,
        Err(JwtError::NotYetValid)
    );
    assert!(v.verify_at(&t, at(NOW - 59)).await.is_ok());
}
