//! Constructor errors, and which JWKS entries are used.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::{ConfigProblem, JwtError, check};

fn secret(n: usize) -> KeySource {
    KeySource::Hs256Secret(Secret::new(vec![7u8; n]))
}

fn problems(cfgs: &[IssuerConfig]) -> Vec<ConfigProblem> {
    check(cfgs).unwrap_err().problems
}

#[test]
fn leeway_at_most_60_seconds() {
    let mut cfg = issuer(ISS_HS, vec![Alg::HS256], secret(32));
    cfg.leeway = Duration::from_secs(60);
    assert_eq!(check(std::slice::from_ref(&cfg)), Ok(()));
    cfg.leeway = Duration::from_millis(60_001);
    assert_eq!(
        problems(&[cfg]),
        vec![ConfigProblem::LeewayTooLarge {
            issuer: ISS_HS.into()
        }]
    );
}

#[test]
fn hs256_needs_a_secret_of_32_bytes() {
    assert_eq!(
        check(&[issuer(ISS_HS, vec![Alg::HS256], secret(32))]),
        Ok(())
    );
    assert_eq!(
        problems(&[issuer(ISS_HS, vec![Alg::HS256], secret(31))]),
        vec![ConfigProblem::SecretTooShort {
            issuer: ISS_HS.into()
        }]
    );
    assert_eq!(
        problems(&[issuer(ISS_HS, vec![Alg::HS256], secret(0))]),
        vec![ConfigProblem::SecretTooShort {
            issuer: ISS_HS.into()
        }]
    );
    // HS256 with keys from a JWKS (file or URL).
    for keys in [
        KeySource::File("/nonexistent".into()),
        KeySource::url("https://idp.example/jwks"),
    ] {
        assert_eq!(
            problems(&[issuer(ISS, vec![Alg::HS256], keys)]),
            vec![ConfigProblem::Hs256WithoutSecret { issuer: ISS.into() }]
        );
    }
    // A secret beside an asymmetric algorithm.
    assert_eq!(
        problems(&[issuer(ISS_HS, vec![Alg::HS256, Alg::RS256], secret(32))]),
        vec![ConfigProblem::SecretNeedsHs256Only {
            issuer: ISS_HS.into()
        }]
    );
}

#[test]
fn urls_must_be_https_or_loopback() {
    for ok in [
        "https://idp.example/.well-known/jwks.json",
        "http://127.0.0.1:8080/jwks",
        "http://127.9.9.9/jwks",
        "http://localhost/jwks",
        "http://[::1]:99/jwks",
    ] {
        assert_eq!(
            check(&[issuer(ISS, vec![Alg::RS256], KeySource::url(ok))]),
            Ok(()),
            "{ok}"
        );
    }
    for insecure in [
        "http://idp.example/jwks",
        "http://10.0.0.1/jwks",
        "http://localhost.evil.example/jwks",
        "ftp://idp.example/jwks",
        "file:///etc/jwks.json",
    ] {
        assert_eq!(
            problems(&[issuer(ISS, vec![Alg::RS256], KeySource::url(insecure))]),
            vec![ConfigProblem::InsecureUrl { issuer: ISS.into() }],
            "{insecure}"
        );
    }
    assert_eq!(
        problems(&[issuer(ISS, vec![Alg::RS256], KeySource::url("not a url"))]),
        vec![ConfigProblem::InvalidUrl { issuer: ISS.into() }]
    );
    let fast = KeySource::Url {
        url: "https://idp.example/jwks".into(),
        refresh: Duration::from_secs(600),
        min_refetch_interval: Duration::ZERO,
    };
    assert_eq!(
        problems(&[issuer(ISS, vec![Alg::RS256], fast)]),
        vec![ConfigProblem::IntervalTooShort { issuer: ISS.into() }]
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    assert_eq!(problems(&[]), vec![ConfigProblem::NoIssuers]);
    let mut a = issuer(ISS, vec![], KeySource::url("http://idp.example/"));
    a.audiences.clear();
    a.leeway = Duration::from_secs(600);
    let mut b = issuer(ISS, vec![Alg::HS256], secret(8));
    b.audiences = vec![String::new()];
    let c = issuer("", vec![Alg::EdDSA], KeySource::File("/x".into()));
    assert_eq!(
        problems(&[a, b, c]),
        vec![
            ConfigProblem::NoAudiences { issuer: ISS.into() },
            ConfigProblem::NoAlgorithms { issuer: ISS.into() },
            ConfigProblem::LeewayTooLarge { issuer: ISS.into() },
            ConfigProblem::InsecureUrl { issuer: ISS.into() },
            ConfigProblem::DuplicateIssuer { issuer: ISS.into() },
            ConfigProblem::EmptyAudience { issuer: ISS.into() },
            ConfigProblem::SecretTooShort { issuer: ISS.into() },
            ConfigProblem::EmptyIssuer { index: 2 },
        ]
    );
}

#[test]
fn config_errors_never_print_the_secret() {
    let cfg = issuer(
        ISS_HS,
        vec![Alg::HS256, Alg::ES256],
        KeySource::Hs256Secret(Secret::new(b"hunter2hunter2".to_vec())),
    );
    let err = check(std::slice::from_ref(&cfg)).unwrap_err();
    let printed = format!("{err} {err:?} {cfg:?}");
    assert!(!printed.contains("hunter2"), "{printed}");
}

#[tokio::test]
async fn jwks_file_problems_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "{not json").unwrap();
    let unusable = write_jwks(
        &dir,
        "unusable.json",
        vec![json!({"kty": "oct", "k": b64([1u8; 32])})],
    );
    let err = Verifier::new(
        vec![
            issuer("a", vec![Alg::RS256], KeySource::File(missing.clone())),
            issuer("b", vec![Alg::RS256], KeySource::File(garbage.clone())),
            issuer("c", vec![Alg::RS256], KeySource::File(unusable.clone())),
        ],
        reqwest::Client::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.problems,
        vec![
            ConfigProblem::KeyFile {
                issuer: "a".into(),
                path: missing,
                reason: "cannot read: entity not found".into()
            },
            ConfigProblem::KeyFile {
                issuer: "b".into(),
                path: garbage,
                reason: "not a JSON object with a `keys` array".into()
            },
            ConfigProblem::KeyFile {
                issuer: "c".into(),
                path: unusable,
                reason: "no usable signature verification key".into()
            },
        ]
    );
}

/// Entries that must never become keys, each beside a usable key so the
/// file loads: the token naming the unusable entry finds nothing.
#[tokio::test]
async fn unusable_jwks_entries_are_skipped() {
    let k = keys();
    let dir = tempfile::tempdir().unwrap();
    let rsa = rsa_jwk("x", &k.rsa);
    let with = |kid: &str, edit: &dyn Fn(&mut Value)| {
        let mut j = rsa.clone();
        j["kid"] = json!(kid);
        edit(&mut j);
        j
    };
    let small_n = {
        let mut n = vec![0xffu8; 128];
        n[0] = 0xc3;
        b64(n)
    };
    let entries = vec![
        ec_jwk("good", &k.p256),
        with("enc", &|j| j["use"] = json!("enc")),
        with("ops", &|j| j["key_ops"] = json!(["encrypt"])),
        with("private", &|j| j["d"] = json!("AQAB")),
        with("small", &|j| j["n"] = json!(small_n)),
        with("even-e", &|j| j["e"] = json!(b64([1u8, 0]))),
        with("alg-rs384", &|j| j["alg"] = json!("RS384")),
        with("alg-es256", &|j| j["alg"] = json!("ES256")),
        with("padded-n", &|j| {
            let n = j["n"].as_str().unwrap().to_owned() + "=";
            j["n"] = json!(n);
        }),
        json!({"kty": "oct", "kid": "oct", "k": b64(HS_SECRET)}),
        json!({"kty": "EC", "kid": "p521", "crv": "P-521", "x": b64([1u8; 66]), "y": b64([1u8; 66])}),
        json!({"kty": "EC", "kid": "short-x", "crv": "P-256", "x": b64([1u8; 31]), "y": b64([1u8; 32])}),
        json!({"kty": "OKP", "kid": "x25519", "crv": "X25519", "x": b64([1u8; 32])}),
        json!({"kty": "OKP", "kid": "ed448", "crv": "Ed448", "x": b64([1u8; 57])}),
        json!("not an object"),
    ];
    let path = write_jwks(&dir, "mixed.json", entries);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(crate::keys::KeySet::from_jwks(&bytes).unwrap().len(), 1);

    let v = Verifier::new(
        vec![issuer(
            ISS,
            vec![Alg::RS256, Alg::ES256],
            KeySource::File(path),
        )],
        reqwest::Client::new(),
    )
    .await
    .unwrap();
    for kid in [
        "enc",
        "ops",
        "private",
        "small",
        "even-e",
        "alg-rs384",
        "alg-es256",
        "padded-n",
    ] {
        let t = token(&header("RS256", kid), &claims(ISS), &Signer::Rs256(&k.rsa));
        assert_eq!(
            v.verify_at(&t, at(NOW)).await,
            Err(JwtError::UnknownKey),
            "{kid}"
        );
    }
    let t = token(&header("ES256", "good"), &claims(ISS), &Signer::Ec(&k.p256));
    assert!(v.verify_at(&t, at(NOW)).await.is_ok());
}

#[tokio::test]
async fn without_kid_at_most_8_keys_are_tried() {
    let k = keys();
    let dir = tempfile::tempdir().unwrap();
    let mut entries: Vec<Value> = (0..8)
        .map(|i| ec_jwk(&format!("other{i}"), &k.attacker_p256))
        .collect();
    entries.push(ec_jwk("real", &k.p256));
    let nine = write_jwks(&dir, "nine.json", entries.clone());
    entries.remove(0);
    let eight = write_jwks(&dir, "eight.json", entries);
    let t = token(&json!({"alg": "ES256"}), &claims(ISS), &Signer::Ec(&k.p256));
    for (path, want) in [(nine, Err(JwtError::UnknownKey)), (eight, Ok(()))] {
        let v = Verifier::new(
            vec![issuer(ISS, vec![Alg::ES256], KeySource::File(path))],
            reqwest::Client::new(),
        )
        .await
        .unwrap();
        assert_eq!(v.verify_at(&t, at(NOW)).await.map(|_| ()), want);
    }
}

#[test]
fn alg_names_parse_exactly() {
    for alg in Alg::ALL {
        assert_eq!(alg.as_str().parse::<Alg>(), Ok(alg));
        assert_eq!(alg.to_string(), alg.as_str());
    }
    assert!("rs256".parse::<Alg>().is_err());
    assert!("none".parse::<Alg>().is_err());
    assert!("HS512".parse::<Alg>().is_err());
}

#[test]
fn verifier_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Verifier>();
    assert_send_sync::<Arc<Verifier>>();
}
