//! Public keys in PEM (`PUBLIC KEY` or `CERTIFICATE`), as Vault's
//! `jwt_validation_pubkeys` takes them, turned into a JWKS document so that
//! they go through the one JWK parser ([`crate::keys`]) and its rules.
//!
//! The PEM and DER are parsed by x509-parser; this module only reads the
//! parsed key's parts (RSA modulus and exponent, an EC point and its curve,
//! an Ed25519 key) into JWK members.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

/// Most keys taken from one list.
const MAX_PEM_KEYS: usize = 100;

/// A JWKS document (`{"keys":[...]}`) holding `pems`' keys; each PEM block
/// may hold several keys. Errors name the key by its position, never its
/// content.
pub fn jwks_from_pem(pems: &[String]) -> Result<String, String> {
    let mut keys = Vec::new();
    for (i, text) in pems.iter().enumerate() {
        let mut rest = text.trim().as_bytes();
        if rest.is_empty() {
            return Err(format!("key #{}: empty", i + 1));
        }
        while !rest.is_empty() {
            let (r, pem) = x509_parser::pem::parse_x509_pem(rest)
                .map_err(|_| format!("key #{}: not PEM", i + 1))?;
            rest = trim_start(r);
            keys.push(jwk(&pem).map_err(|e| format!("key #{}: {e}", i + 1))?);
            if keys.len() > MAX_PEM_KEYS {
                return Err(format!("more than {MAX_PEM_KEYS} keys"));
            }
        }
    }
    Ok(json!({ "keys": keys }).to_string())
}

fn trim_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    b.get(n..).unwrap_or_default()
}

/// The JWK (`kty`, `crv`/`n`/`e`, `x`/`y`) of a DER SubjectPublicKeyInfo.
pub fn jwk_from_spki_der(der: &[u8]) -> Result<Value, &'static str> {
    let (_, spki) =
        SubjectPublicKeyInfo::from_der(der).map_err(|_| "not a SubjectPublicKeyInfo")?;
    spki_jwk(&spki)
}

fn jwk(pem: &x509_parser::pem::Pem) -> Result<Value, &'static str> {
    match pem.label.as_str() {
        "PUBLIC KEY" => {
            let (_, spki) = SubjectPublicKeyInfo::from_der(&pem.contents)
                .map_err(|_| "not a SubjectPublicKeyInfo")?;
            spki_jwk(&spki)
        }
        "CERTIFICATE" => {
            let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&pem.contents)
                .map_err(|_| "not an X.509 certificate")?;
            spki_jwk(cert.public_key())
        }
        _ => Err("not a PUBLIC KEY or CERTIFICATE block"),
    }
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn spki_jwk(spki: &SubjectPublicKeyInfo<'_>) -> Result<Value, &'static str> {
    let oid = &spki.algorithm.algorithm;
    if *oid == x509_parser::oid_registry::OID_SIG_ED25519 {
        let raw = spki.subject_public_key.data.as_ref();
        if raw.len() != 32 {
            return Err("Ed25519 key of the wrong length");
        }
        return Ok(json!({"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}));
    }
    match spki.parsed().map_err(|_| "unreadable public key")? {
        PublicKey::RSA(rsa) => {
            let strip = |b: &[u8]| -> Vec<u8> {
                let n = b.iter().take_while(|&&c| c == 0).count();
                b.get(n..).unwrap_or_default().to_vec()
            };
            Ok(json!({
                "kty": "RSA",
                "n": b64(&strip(rsa.modulus)),
                "e": b64(&strip(rsa.exponent)),
            }))
        }
        PublicKey::EC(point) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .ok_or("EC key without a named curve")?;
            let (crv, len) = if curve == x509_parser::oid_registry::OID_EC_P256 {
                ("P-256", 32)
            } else if curve == x509_parser::oid_registry::OID_NIST_EC_P384 {
                ("P-384", 48)
            } else {
                return Err("EC curve other than P-256 or P-384");
            };
            let data = point.data();
            match data.split_first() {
                Some((4, xy)) if xy.len() == 2 * len => {
                    let (x, y) = xy.split_at(len);
                    Ok(json!({"kty": "EC", "crv": crv, "x": b64(x), "y": b64(y)}))
                }
                _ => Err("EC point not in uncompressed form"),
            }
        }
        _ => Err("key type other than RSA, EC or Ed25519"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
    use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};

    fn pem(der: &[u8]) -> String {
        let b = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<String> = b
            .as_bytes()
            .chunks(64)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn ec_and_ed25519_keys_become_usable_jwks() {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let ec = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .unwrap()
                .as_ref(),
        )
        .unwrap();
        let ec_der: PublicKeyX509Der<'static> = AsDer::as_der(ec.public_key()).unwrap();
        let ed = Ed25519KeyPair::generate().unwrap();
        let ed_der: PublicKeyX509Der<'static> = AsDer::as_der(ed.public_key()).unwrap();
        let doc = jwks_from_pem(&[pem(ec_der.as_ref()), pem(ed_der.as_ref())]).unwrap();
        let v: Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(v["keys"][0]["kty"], "EC");
        assert_eq!(v["keys"][0]["crv"], "P-256");
        assert_eq!(v["keys"][1]["crv"], "Ed25519");
        assert_eq!(
            crate::keys::KeySet::from_jwks(doc.as_bytes())
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn what_is_not_a_public_key_is_refused_by_position() {
        assert_eq!(
            jwks_from_pem(&["garbage".into()]).unwrap_err(),
            "key #1: not PEM"
        );
        let block = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert_eq!(
            jwks_from_pem(&[block.into()]).unwrap_err(),
            "key #1: not a PUBLIC KEY or CERTIFICATE block"
        );
        assert_eq!(jwks_from_pem(&[" ".into()]).unwrap_err(), "key #1: empty");
    }
}
