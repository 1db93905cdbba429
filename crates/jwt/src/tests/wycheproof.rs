//! Wycheproof vectors (tests/data/wycheproof/, Apache-2.0, see SOURCE there).
//!
//! * `json_web_signature_test.json` runs through the verifier's own JWS layer
//!   (`jws::parse` + `jws::verify_signature`, the code `Verifier::verify` runs
//!   before the claim checks; the vectors' payloads are not JWT claims).
//! * The ECDSA P1363, Ed25519, RSA PKCS#1 and PSS files sign arbitrary `msg`
//!   bytes, not JWS signing inputs, so they test the signature primitive the
//!   verifier uses: each group's key goes through the verifier's JWK parser
//!   (`Key::from_jwk`) and each (msg, sig) through `Key::verify`, which is
//!   jsonwebtoken's aws-lc-rs verifier for the algorithm.
//!
//! "acceptable" is treated as "invalid". Every vector whose outcome differs
//! from its label is listed below with its tcId and the reason, and the test
//! asserts that each listed vector really does behave as stated.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::JwtError;
use crate::config::Alg;
use crate::jws;
use crate::keys::{Key, KeySet, b64url};

/// Labelled "valid" in json_web_signature_test.json, refused by Palisade.
const JWS_VALID_BUT_REFUSED: &[(u64, &str)] = &[
    (264, "RS384: not an algorithm Palisade accepts"),
    (265, "RS384: not an algorithm Palisade accepts"),
    (266, "RS384: not an algorithm Palisade accepts"),
    (267, "RS384: not an algorithm Palisade accepts"),
    (268, "RS512: not an algorithm Palisade accepts"),
    (269, "RS512: not an algorithm Palisade accepts"),
    (270, "RS512: not an algorithm Palisade accepts"),
    (271, "RS512: not an algorithm Palisade accepts"),
    (320, "PS384: not an algorithm Palisade accepts"),
    (321, "PS384: not an algorithm Palisade accepts"),
    (322, "PS384: not an algorithm Palisade accepts"),
    (323, "PS384: not an algorithm Palisade accepts"),
    (325, "PS512: not an algorithm Palisade accepts"),
    (326, "PS512: not an algorithm Palisade accepts"),
    (327, "PS512: not an algorithm Palisade accepts"),
    (328, "PS512: not an algorithm Palisade accepts"),
    (
        346,
        "RFC 7520 fig. 20: PS384, not accepted (and the key's alg is PS256)",
    ),
    (347, "RFC 7520 fig. 27: ES512 on P-521, not accepted"),
    (
        350,
        "RFC 7520 fig. 20: PS384, not accepted (and the key's alg is PS256)",
    ),
    (351, "RFC 7520 fig. 27: ES512 on P-521, not accepted"),
    (
        372,
        "'?' inside the header segment: strict base64url refuses it (RFC 7515 §2); \
         the MAC is over the string without the '?'",
    ),
    (
        373,
        "'?' inside the payload segment: strict base64url refuses it (RFC 7515 §2); \
         the MAC is over the string without the '?'",
    ),
];

/// Labelled "invalid" in json_web_signature_test.json, accepted by Palisade.
/// Each is byte-for-byte the token of the named valid vector (the padding its
/// comment describes is not in the string), so accepting it is right; the
/// test asserts the equality.
const JWS_INVALID_BUT_IDENTICAL_TO_VALID: &[(u64, u64, &str)] = &[
    (
        367,
        357,
        "invalidBase64Padding: no padding left in the vector string",
    ),
    (
        370,
        357,
        "invalidBase64PaddingInPayload: no padding left in the vector string",
    ),
];

/// Outcomes beyond pass/fail that the JWS vectors pin down.
const JWS_EXACT_ERRORS: &[(u64, JwtError)] = &[
    (16, JwtError::AlgNone),
    (17, JwtError::Malformed),
    (31, JwtError::AlgNotAllowed),
    (32, JwtError::EmbeddedKeyHeader),
    (341, JwtError::AlgNone),
    (342, JwtError::AlgNone),
    (343, JwtError::AlgNone),
    (344, JwtError::AlgNone),
];

fn load(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/wycheproof")
        .join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn tests_of(group: &Value) -> &Vec<Value> {
    group["tests"].as_array().unwrap()
}

fn tc(test: &Value) -> u64 {
    test["tcId"].as_u64().unwrap()
}

fn expect_valid(test: &Value) -> bool {
    match test["result"].as_str().unwrap() {
        "valid" => true,
        "invalid" | "acceptable" => false,
        other => panic!("unknown result {other}"),
    }
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2));
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The group's key as the verifier would hold it, or `None` when the
/// verifier would not take the key at all (its vectors must then all fail).
fn jws_group_keys(group: &Value) -> Option<KeySet> {
    let jwk = group
        .get("public")
        .or_else(|| group.get("private"))
        .and_then(Value::as_object)
        .unwrap();
    if jwk.get("kty") == Some(&json!("oct")) {
        // Symmetric keys come from `KeySource::Hs256Secret`, never a JWKS;
        // build the same key that source builds, with the JWK's kid.
        let secret = b64url(jwk["k"].as_str()?)?;
        if secret.len() < crate::MIN_HS256_SECRET_BYTES
            || jwk.get("alg").is_some_and(|a| a != "HS256")
        {
            return None;
        }
        let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_owned);
        return Some(KeySet::new(vec![Key::hmac(kid, &secret)?]));
    }
    let doc = json!({ "keys": [Value::Object(jwk.clone())] });
    KeySet::from_jwks(doc.to_string().as_bytes()).ok()
}

#[test]
fn json_web_signature() {
    let doc = load("json_web_signature_test.json");
    let valid_but_refused: BTreeMap<u64, &str> = JWS_VALID_BUT_REFUSED.iter().copied().collect();
    let same_as: BTreeMap<u64, u64> = JWS_INVALID_BUT_IDENTICAL_TO_VALID
        .iter()
        .map(|(tc, valid, _)| (*tc, *valid))
        .collect();
    let exact: BTreeMap<u64, JwtError> = JWS_EXACT_ERRORS.iter().cloned().collect();

    let mut tokens = BTreeMap::new();
    let mut outcomes = BTreeMap::new();
    for group in doc["testGroups"].as_array().unwrap() {
        let keys = jws_group_keys(group);
        for test in tests_of(group) {
            let token = test["jws"].as_str().unwrap();
            let outcome = jws::parse(token).and_then(|parsed| match &keys {
                Some(keys) => jws::verify_signature(&parsed, keys),
                None => Err(JwtError::UnknownKey),
            });
            tokens.insert(tc(test), token.to_owned());
            outcomes.insert(tc(test), (expect_valid(test), outcome));
        }
    }

    let (mut accepted, mut refused) = (0, 0);
    for (id, (valid, outcome)) in &outcomes {
        if let Some(twin) = same_as.get(id) {
            assert_eq!(tokens[id], tokens[twin], "tcId {id} is no longer a copy");
            assert_eq!(outcome, &Ok(()), "tcId {id}");
        } else if valid_but_refused.contains_key(id) {
            assert!(outcome.is_err(), "tcId {id} listed as refused but accepted");
        } else if *valid {
            assert_eq!(outcome, &Ok(()), "valid tcId {id} refused");
        } else {
            assert!(outcome.is_err(), "invalid tcId {id} accepted");
        }
        if let Some(want) = exact.get(id) {
            assert_eq!(outcome.as_ref().err(), Some(want), "tcId {id}");
        }
        match outcome {
            Ok(()) => accepted += 1,
            Err(_) => refused += 1,
        }
    }
    assert_eq!(
        outcomes.len() as u64,
        doc["numberOfTests"].as_u64().unwrap()
    );
    assert_eq!(outcomes.len(), 401);
    // Pin the totals so a silently changed vector file shows up.
    assert_eq!((accepted, refused), (26, 375));
}

/// Run a primitive signature file: every valid vector verifies, every other
/// one does not. `key_of` turns a test group into the JWK the verifier parses.
fn primitive(file: &str, alg: Alg, key_of: impl Fn(&Value) -> Value) -> (usize, usize) {
    let doc = load(file);
    let (mut valid, mut invalid) = (0, 0);
    for group in doc["testGroups"].as_array().unwrap() {
        let jwk = key_of(group);
        let key = Key::from_jwk(jwk.as_object().unwrap())
            .unwrap_or_else(|why| panic!("{file}: key refused: {why}"));
        for test in tests_of(group) {
            let msg = hex(test["msg"].as_str().unwrap());
            let sig = hex(test["sig"].as_str().unwrap());
            let ok = key.verify(alg, &msg, &sig);
            if expect_valid(test) {
                assert!(ok, "{file}: valid tcId {} refused", tc(test));
                valid += 1;
            } else {
                assert!(!ok, "{file}: invalid tcId {} accepted", tc(test));
                invalid += 1;
            }
        }
    }
    assert_eq!(
        (valid + invalid) as u64,
        doc["numberOfTests"].as_u64().unwrap()
    );
    (valid, invalid)
}

/// An EC JWK from the group's uncompressed point (not every group has a JWK).
fn ec_jwk_of(group: &Value) -> Value {
    let point = hex(group["publicKey"]["uncompressed"].as_str().unwrap());
    let len = (point.len() - 1) / 2;
    let crv = match group["publicKey"]["curve"].as_str().unwrap() {
        "secp256r1" => "P-256",
        "secp384r1" => "P-384",
        other => panic!("curve {other}"),
    };
    json!({"kty": "EC", "crv": crv,
           "x": super::b64(&point[1..1 + len]), "y": super::b64(&point[1 + len..])})
}

fn jwk_member(name: &'static str) -> impl Fn(&Value) -> Value {
    move |group| {
        let mut jwk: Map<String, Value> = group[name].as_object().unwrap().clone();
        // The vectors' JWKs say "kid": "none"; keep them, kid is irrelevant here.
        jwk.retain(|k, _| k != "kid");
        Value::Object(jwk)
    }
}

#[test]
fn ecdsa_p256_sha256_p1363() {
    assert_eq!(
        primitive(
            "ecdsa_secp256r1_sha256_p1363_test.json",
            Alg::ES256,
            ec_jwk_of
        ),
        (173, 89)
    );
}

#[test]
fn ecdsa_p384_sha384_p1363() {
    assert_eq!(
        primitive(
            "ecdsa_secp384r1_sha384_p1363_test.json",
            Alg::ES384,
            ec_jwk_of
        ),
        (193, 87)
    );
}

#[test]
fn ed25519() {
    assert_eq!(
        primitive("ed25519_test.json", Alg::EdDSA, jwk_member("publicKeyJwk")),
        (88, 63)
    );
}

#[test]
fn rsa_pkcs1_2048_sha256() {
    // 249 invalid + 1 acceptable (tcId with flag MissingNull), refused alike.
    assert_eq!(
        primitive(
            "rsa_signature_2048_sha256_test.json",
            Alg::RS256,
            jwk_member("keyJwk")
        ),
        (9, 250)
    );
}

#[test]
fn rsa_pss_2048_sha256_mgf1_32() {
    assert_eq!(
        primitive(
            "rsa_pss_2048_sha256_mgf1_32_test.json",
            Alg::PS256,
            jwk_member("publicKeyJwk")
        ),
        (63, 45)
    );
}

/// The primitive also refuses the vectors under the wrong algorithm: an
/// ES256 signature never verifies as RS256 etc. (key/alg fit is checked
/// before the primitive runs).
#[test]
fn primitive_refuses_the_wrong_algorithm_for_a_key() {
    let doc = load("ecdsa_secp256r1_sha256_p1363_test.json");
    let group = &doc["testGroups"][0];
    let key = Key::from_jwk(ec_jwk_of(group).as_object().unwrap()).unwrap();
    let test = &tests_of(group)[0];
    let (msg, sig) = (
        hex(test["msg"].as_str().unwrap()),
        hex(test["sig"].as_str().unwrap()),
    );
    assert!(key.verify(Alg::ES256, &msg, &sig));
    for alg in [Alg::ES384, Alg::RS256, Alg::PS256, Alg::EdDSA, Alg::HS256] {
        assert!(!key.verify(alg, &msg, &sig), "{alg}");
    }
}
