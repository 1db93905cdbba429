//! Tests that need the crate's insides: the injected clock (`verify_at`),
//! issuers built without `check`, and the signature primitive the Wycheproof
//! vectors are run through. `tests/api.rs` covers the public API alone.

mod allow;
mod config;
mod deny;
mod jwks_url;
mod wycheproof;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    self, ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
    Ed25519KeyPair, KeyPair, RsaKeyPair, RsaPublicKeyComponents,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use palisade_core::Secret;
use serde_json::{Value, json};

use crate::claims::Now;
use crate::{Alg, IssuerConfig, KeySource, Verifier};

/// The fixed "current time" of the tests.
pub(crate) const NOW: u64 = 1_700_000_000;

pub(crate) const ISS: &str = "https://idp.example";
pub(crate) const ISS_RS: &str = "https://rs-only.example";
pub(crate) const ISS_HS: &str = "hs.example";
pub(crate) const AUD: &str = "api";
pub(crate) const HS_SECRET: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

pub(crate) fn at(secs: u64) -> Now {
    Now {
        wall: UNIX_EPOCH + Duration::from_secs(secs),
        mono: Instant::now(),
    }
}

pub(crate) fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) struct TestKeys {
    pub rsa: RsaKeyPair,
    pub rsa2: RsaKeyPair,
    pub p256: EcdsaKeyPair,
    pub p384: EcdsaKeyPair,
    pub ed: Ed25519KeyPair,
    pub attacker_p256: EcdsaKeyPair,
}

/// Keys generated once per test binary.
pub(crate) fn keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| TestKeys {
        rsa: RsaKeyPair::generate(KeySize::Rsa2048).unwrap(),
        rsa2: RsaKeyPair::generate(KeySize::Rsa2048).unwrap(),
        p256: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
        p384: EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).unwrap(),
        ed: Ed25519KeyPair::generate().unwrap(),
        attacker_p256: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
    })
}

/// How a test token is signed; independent of what its header claims.
pub(crate) enum Signer<'a> {
    Rs256(&'a RsaKeyPair),
    Ps256(&'a RsaKeyPair),
    /// ES256 or ES384, whichever the key was generated for (r||s form).
    Ec(&'a EcdsaKeyPair),
    Ed(&'a Ed25519KeyPair),
    Hs256(&'a [u8]),
    /// Use these bytes as the signature.
    Raw(Vec<u8>),
}

impl Signer<'_> {
    pub(crate) fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Signer::Rs256(k) | Signer::Ps256(k) => {
                let padding: &'static dyn signature::RsaEncoding = match self {
                    Signer::Rs256(_) => &signature::RSA_PKCS1_SHA256,
                    _ => &signature::RSA_PSS_SHA256,
                };
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(padding, &rng, msg, &mut sig).unwrap();
                sig
            }
            Signer::Ec(k) => k.sign(&rng, msg).unwrap().as_ref().to_vec(),
            Signer::Ed(k) => k.sign(msg).as_ref().to_vec(),
            Signer::Hs256(secret) => {
                let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
                aws_lc_rs::hmac::sign(&key, msg).as_ref().to_vec()
            }
            Signer::Raw(bytes) => bytes.clone(),
        }
    }
}

/// A compact JWS from literal header and payload text.
pub(crate) fn token_raw(header: &str, payload: &str, signer: &Signer<'_>) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let sig = signer.sign(input.as_bytes());
    format!("{input}.{}", b64(sig))
}

pub(crate) fn token(header: &Value, claims: &Value, signer: &Signer<'_>) -> String {
    token_raw(&header.to_string(), &claims.to_string(), signer)
}

/// Valid claims for `iss` at [`NOW`].
pub(crate) fn claims(iss: &str) -> Value {
    json!({"iss": iss, "sub": "user-1", "aud": AUD, "exp": NOW + 3600, "iat": NOW})
}

pub(crate) fn header(alg: &str, kid: &str) -> Value {
    json!({"alg": alg, "typ": "JWT", "kid": kid})
}

pub(crate) fn rsa_jwk(kid: &str, key: &RsaKeyPair) -> Value {
    let c = RsaPublicKeyComponents::<Vec<u8>>::from(key.public_key());
    json!({"kty": "RSA", "kid": kid, "use": "sig", "n": b64(&c.n), "e": b64(&c.e)})
}

pub(crate) fn ec_jwk(kid: &str, key: &EcdsaKeyPair) -> Value {
    let point = key.public_key().as_ref();
    let len = (point.len() - 1) / 2;
    let crv = if len == 32 { "P-256" } else { "P-384" };
    json!({"kty": "EC", "kid": kid, "crv": crv,
           "x": b64(&point[1..1 + len]), "y": b64(&point[1 + len..])})
}

pub(crate) fn ed_jwk(kid: &str, key: &Ed25519KeyPair) -> Value {
    json!({"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64(key.public_key().as_ref())})
}

pub(crate) fn write_jwks(dir: &tempfile::TempDir, name: &str, keys: Vec<Value>) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, json!({ "keys": keys }).to_string()).unwrap();
    path
}

pub(crate) fn issuer(name: &str, algorithms: Vec<Alg>, keys: KeySource) -> IssuerConfig {
    IssuerConfig::new(name, vec![AUD.to_owned()], algorithms, keys)
}

/// Three issuers from JWKS files and a secret:
/// * `ISS`: RS256, PS256, ES256, ES384, EdDSA; keys `rsa1`, `ec256`, `ec384`, `ed1`.
/// * `ISS_RS`: RS256 only; key `rsa2`; audiences `api` and `admin`.
/// * `ISS_HS`: HS256 with [`HS_SECRET`].
pub(crate) async fn fixture() -> (Arc<Verifier>, tempfile::TempDir) {
    let k = keys();
    let dir = tempfile::tempdir().unwrap();
    let main = write_jwks(
        &dir,
        "main.json",
        vec![
            rsa_jwk("rsa1", &k.rsa),
            ec_jwk("ec256", &k.p256),
            ec_jwk("ec384", &k.p384),
            ed_jwk("ed1", &k.ed),
        ],
    );
    let rs = write_jwks(&dir, "rs.json", vec![rsa_jwk("rsa2", &k.rsa2)]);
    let mut rs_only = issuer(ISS_RS, vec![Alg::RS256], KeySource::File(rs));
    rs_only.audiences.push("admin".to_owned());
    let verifier = Verifier::new(
        vec![
            issuer(
                ISS,
                vec![Alg::RS256, Alg::PS256, Alg::ES256, Alg::ES384, Alg::EdDSA],
                KeySource::File(main),
            ),
            rs_only,
            issuer(
                ISS_HS,
                vec![Alg::HS256],
                KeySource::Hs256Secret(Secret::new(HS_SECRET.to_vec())),
            ),
        ],
        reqwest::Client::new(),
    )
    .await
    .unwrap();
    (verifier, dir)
}

/// A verifier built without `check`, for defence-in-depth tests of
/// configurations the constructor refuses.
pub(crate) fn unchecked(issuers: Vec<(&str, crate::verifier::Issuer)>) -> Arc<Verifier> {
    Verifier::from_parts(
        issuers
            .into_iter()
            .map(|(n, i)| (n.to_owned(), i))
            .collect::<HashMap<_, _>>(),
        reqwest::Client::new(),
    )
}
