//! The transit engine's key operations against Wycheproof test vectors
//! (C2SP/wycheproof, Apache-2.0, copied into tests/wycheproof with their
//! licence). Every vector goes through the same functions the engine calls:
//! `transit::decrypt`/`encrypt` for AES-256-GCM, `transit::verify` for
//! Ed25519, ECDSA and RSA, `transit::hmac`/`hmac_verify` for HMAC. A vector
//! marked `valid` must pass, `invalid` must fail; `acceptable` ones (legacy
//! encodings a library may take or refuse) are counted but not judged.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a malformed vector file is a failed test"
)]

use palisade_crypto::transit::{
    self, HashAlg, KeyType, Marshaling, RsaPadding, SignOptions, TransitError,
};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = format!("{}/tests/wycheproof/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn hex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn groups(d: &Value) -> &Vec<Value> {
    d["testGroups"].as_array().unwrap()
}

fn tests(g: &Value) -> &Vec<Value> {
    g["tests"].as_array().unwrap()
}

/// How many vectors were judged, and the ids of those that disagreed.
#[derive(Default)]
struct Tally {
    judged: usize,
    failed: Vec<String>,
}

impl Tally {
    fn judge(&mut self, t: &Value, passed: bool) {
        let expected = t["result"].as_str().unwrap();
        if expected == "acceptable" {
            return;
        }
        self.judged += 1;
        if passed != (expected == "valid") {
            self.failed.push(format!(
                "tcId {} ({}): expected {expected}",
                t["tcId"], t["comment"]
            ));
        }
    }

    fn check(self, what: &str, at_least: usize) {
        assert!(self.failed.is_empty(), "{what}: {:#?}", self.failed);
        assert!(
            self.judged >= at_least,
            "{what}: only {} vectors judged",
            self.judged
        );
    }
}

#[test]
fn aes_256_gcm_vectors_decrypt_as_specified_and_encrypt_to_the_same_bytes() {
    let d = load("aes_gcm_test.json");
    let mut tally = Tally::default();
    for g in groups(&d) {
        // transit's aes256-gcm96: 256-bit keys, 96-bit nonces, 128-bit tags
        if g["keySize"] != 256 || g["ivSize"] != 96 || g["tagSize"] != 128 {
            continue;
        }
        for t in tests(g) {
            let (key, iv, aad, msg) = (
                hex(&t["key"]),
                hex(&t["iv"]),
                hex(&t["aad"]),
                hex(&t["msg"]),
            );
            let mut ct = iv.clone();
            ct.extend(hex(&t["ct"]));
            ct.extend(hex(&t["tag"]));
            let opened = transit::decrypt(KeyType::Aes256Gcm96, &key, &ct, &aad);
            let passed = match &opened {
                Ok(p) => **p == msg,
                Err(e) => {
                    assert_eq!(*e, TransitError::Open, "tcId {}", t["tcId"]);
                    false
                }
            };
            tally.judge(t, passed);
            if t["result"] == "valid" {
                let nonce: [u8; 12] = iv.try_into().unwrap();
                let sealed =
                    transit::encrypt(KeyType::Aes256Gcm96, &key, &msg, &aad, Some(nonce)).unwrap();
                assert_eq!(sealed, ct, "tcId {}", t["tcId"]);
            }
        }
    }
    tally.check("AES-256-GCM", 60);
}

fn verify_file(
    name: &str,
    kind: KeyType,
    hash: HashAlg,
    padding: RsaPadding,
    marshaling: Marshaling,
    at_least: usize,
) {
    let d = load(name);
    let mut tally = Tally::default();
    let opts = SignOptions {
        hash,
        prehashed: false,
        padding,
        marshaling,
    };
    for g in groups(&d) {
        // transit keeps Ed25519 public keys raw and the others as
        // SubjectPublicKeyInfo DER: the forms `transit::public_key` returns
        let public = match kind {
            KeyType::Ed25519 => hex(&g["publicKey"]["pk"]),
            _ => hex(&g["publicKeyDer"]),
        };
        for t in tests(g) {
            let r = transit::verify(kind, &public, &hex(&t["msg"]), &hex(&t["sig"]), &opts);
            // a malformed key is a refusal, never an accepted signature
            tally.judge(t, r == Ok(true));
        }
    }
    tally.check(name, at_least);
}

#[test]
fn ed25519_vectors() {
    verify_file(
        "ed25519_test.json",
        KeyType::Ed25519,
        HashAlg::Sha2_256,
        RsaPadding::Pss,
        Marshaling::Asn1,
        140,
    );
}

#[test]
fn ecdsa_p256_der_signatures() {
    verify_file(
        "ecdsa_secp256r1_sha256_test.json",
        KeyType::EcdsaP256,
        HashAlg::Sha2_256,
        RsaPadding::Pss,
        Marshaling::Asn1,
        400,
    );
}

#[test]
fn ecdsa_p256_jws_signatures() {
    verify_file(
        "ecdsa_secp256r1_sha256_p1363_test.json",
        KeyType::EcdsaP256,
        HashAlg::Sha2_256,
        RsaPadding::Pss,
        Marshaling::Jws,
        200,
    );
}

#[test]
fn ecdsa_p384_jws_signatures() {
    verify_file(
        "ecdsa_secp384r1_sha384_p1363_test.json",
        KeyType::EcdsaP384,
        HashAlg::Sha2_384,
        RsaPadding::Pss,
        Marshaling::Jws,
        200,
    );
}

#[test]
fn rsa_pss_signatures() {
    verify_file(
        "rsa_pss_2048_sha256_mgf1_32_test.json",
        KeyType::Rsa2048,
        HashAlg::Sha2_256,
        RsaPadding::Pss,
        Marshaling::Asn1,
        80,
    );
}

#[test]
fn rsa_pkcs1_signatures() {
    verify_file(
        "rsa_signature_2048_sha256_test.json",
        KeyType::Rsa2048,
        HashAlg::Sha2_256,
        RsaPadding::Pkcs1v15,
        Marshaling::Asn1,
        200,
    );
}

fn hmac_file(name: &str, hash: HashAlg, full_bits: u64) {
    let d = load(name);
    let mut tally = Tally::default();
    for g in groups(&d) {
        let tag_bits = g["tagSize"].as_u64().unwrap();
        for t in tests(g) {
            let (key, msg, tag) = (hex(&t["key"]), hex(&t["msg"]), hex(&t["tag"]));
            let mac = transit::hmac(hash, &key, &msg).unwrap();
            if tag_bits == full_bits {
                // transit's verify takes whole tags only
                let ok = transit::hmac_verify(hash, &key, &msg, &tag).unwrap();
                assert_eq!(ok, mac == tag, "tcId {}", t["tcId"]);
                tally.judge(t, ok);
            } else {
                tally.judge(t, mac.starts_with(&tag));
            }
        }
    }
    tally.check(name, 150);
}

#[test]
fn hmac_sha256_vectors() {
    hmac_file("hmac_sha256_test.json", HashAlg::Sha2_256, 256);
}

#[test]
fn hmac_sha512_vectors() {
    hmac_file("hmac_sha512_test.json", HashAlg::Sha2_512, 512);
}
