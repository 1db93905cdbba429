//! The key operations behind the transit engine, all of them aws-lc-rs:
//! AES-256-GCM and ChaCha20-Poly1305 (random 96-bit nonces), RSA-OAEP
//! (SHA-256), Ed25519, ECDSA P-256/P-384, RSA PSS and PKCS#1 v1.5
//! signatures, HMAC, SHA-2/SHA-3 digests and HKDF-SHA256 key derivation.
//!
//! Keys are byte strings: the raw key for the symmetric types and HMAC,
//! PKCS#8 v1 DER for the asymmetric ones. The engine stores them behind the
//! barrier; nothing here logs or formats them (errors carry no key bytes and
//! no input).
//!
//! Ciphertexts of the AEAD types are `nonce (12) || ciphertext || tag (16)`,
//! Vault's layout, so `vault:v1:` ciphertexts have the same shape.

use aws_lc_rs::aead::{self, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
    PrivateDecryptingKey,
};
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use aws_lc_rs::{hkdf, hmac};
use zeroize::Zeroizing;

/// Why an operation failed. Never carries key material or input.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransitError {
    /// Decryption failed: wrong key, wrong associated data or context, or a
    /// changed byte; deliberately one error for all of them.
    #[error("cipher: message authentication failed")]
    Open,
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("plaintext too long for this key")]
    TooLong,
    #[error("invalid key material")]
    Key,
    #[error("operation failed")]
    Internal,
}

type Result<T> = std::result::Result<T, TransitError>;

/// The key types of Vault's transit engine that Palisade implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    Aes256Gcm96,
    ChaCha20Poly1305,
    Ed25519,
    EcdsaP256,
    EcdsaP384,
    Rsa2048,
    Rsa3072,
    Rsa4096,
    Hmac,
}

impl KeyType {
    pub const ALL: [KeyType; 9] = [
        KeyType::Aes256Gcm96,
        KeyType::ChaCha20Poly1305,
        KeyType::Ed25519,
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::Rsa2048,
        KeyType::Rsa3072,
        KeyType::Rsa4096,
        KeyType::Hmac,
    ];

    pub fn parse(s: &str) -> Option<KeyType> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Aes256Gcm96 => "aes256-gcm96",
            KeyType::ChaCha20Poly1305 => "chacha20-poly1305",
            KeyType::Ed25519 => "ed25519",
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa3072 => "rsa-3072",
            KeyType::Rsa4096 => "rsa-4096",
            KeyType::Hmac => "hmac",
        }
    }

    pub fn is_aead(self) -> bool {
        matches!(self, KeyType::Aes256Gcm96 | KeyType::ChaCha20Poly1305)
    }

    pub fn is_rsa(self) -> bool {
        matches!(self, KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096)
    }

    pub fn is_asymmetric(self) -> bool {
        self.is_rsa()
            || matches!(
                self,
                KeyType::Ed25519 | KeyType::EcdsaP256 | KeyType::EcdsaP384
            )
    }

    pub fn supports_encryption(self) -> bool {
        self.is_aead() || self.is_rsa()
    }

    pub fn supports_signing(self) -> bool {
        self.is_asymmetric()
    }

    /// Key derivation from a context (HKDF-SHA256): the AEAD types only.
    pub fn supports_derivation(self) -> bool {
        self.is_aead()
    }

    /// The default hash of `sign`/`verify` for this key type: SHA2-256 as in
    /// Vault, except ECDSA P-384, whose signing key is bound to SHA2-384 in
    /// aws-lc-rs (docs/api-compat.md).
    pub fn default_hash(self) -> HashAlg {
        match self {
            KeyType::EcdsaP384 => HashAlg::Sha2_384,
            _ => HashAlg::Sha2_256,
        }
    }
}

/// Digest algorithms of `hash`, `hmac`, `sign` and `verify` (Vault's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashAlg {
    Sha2_224,
    Sha2_256,
    Sha2_384,
    Sha2_512,
    Sha3_256,
    Sha3_384,
    Sha3_512,
}

impl HashAlg {
    pub fn parse(s: &str) -> Option<HashAlg> {
        Some(match s {
            "sha2-224" => HashAlg::Sha2_224,
            "sha2-256" => HashAlg::Sha2_256,
            "sha2-384" => HashAlg::Sha2_384,
            "sha2-512" => HashAlg::Sha2_512,
            "sha3-256" => HashAlg::Sha3_256,
            "sha3-384" => HashAlg::Sha3_384,
            "sha3-512" => HashAlg::Sha3_512,
            _ => return None,
        })
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            HashAlg::Sha2_224 => &digest::SHA224,
            HashAlg::Sha2_256 => &digest::SHA256,
            HashAlg::Sha2_384 => &digest::SHA384,
            HashAlg::Sha2_512 => &digest::SHA512,
            HashAlg::Sha3_256 => &digest::SHA3_256,
            HashAlg::Sha3_384 => &digest::SHA3_384,
            HashAlg::Sha3_512 => &digest::SHA3_512,
        }
    }

    fn hmac(self) -> Option<hmac::Algorithm> {
        Some(match self {
            HashAlg::Sha2_224 => hmac::HMAC_SHA224,
            HashAlg::Sha2_256 => hmac::HMAC_SHA256,
            HashAlg::Sha2_384 => hmac::HMAC_SHA384,
            HashAlg::Sha2_512 => hmac::HMAC_SHA512,
            _ => return None,
        })
    }
}

/// RSA signature padding (`signature_algorithm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RsaPadding {
    /// RSASSA-PSS, MGF1 with the same hash, salt as long as the hash.
    Pss,
    Pkcs1v15,
}

/// ECDSA signature encoding (`marshaling_algorithm`): DER (`asn1`) or the
/// fixed-width `r || s` of JWS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marshaling {
    Asn1,
    Jws,
}

/// How to sign or verify: the options of Vault's `sign`/`verify`.
#[derive(Clone, Copy, Debug)]
pub struct SignOptions {
    pub hash: HashAlg,
    /// `input` is already the digest (`prehashed`); not for Ed25519.
    pub prehashed: bool,
    pub padding: RsaPadding,
    pub marshaling: Marshaling,
}

fn internal<E>(_: E) -> TransitError {
    TransitError::Internal
}

/// A new key of `kind`. `hmac_bytes` is the size of an HMAC key.
pub fn generate(kind: KeyType, hmac_bytes: usize) -> Result<Zeroizing<Vec<u8>>> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    Ok(Zeroizing::new(match kind {
        KeyType::Aes256Gcm96 | KeyType::ChaCha20Poly1305 => crate::random_bytes(32),
        KeyType::Hmac => crate::random_bytes(hmac_bytes),
        KeyType::Ed25519 => Ed25519KeyPair::generate_pkcs8v1(&rng)
            .map_err(internal)?
            .as_ref()
            .to_vec(),
        KeyType::EcdsaP256 => {
            EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
                .map_err(internal)?
                .as_ref()
                .to_vec()
        }
        KeyType::EcdsaP384 => {
            EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P384_SHA384_ASN1_SIGNING, &rng)
                .map_err(internal)?
                .as_ref()
                .to_vec()
        }
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => {
            let size = match kind {
                KeyType::Rsa2048 => KeySize::Rsa2048,
                KeyType::Rsa3072 => KeySize::Rsa3072,
                _ => KeySize::Rsa4096,
            };
            let pair = RsaKeyPair::generate(size).map_err(internal)?;
            let der: aws_lc_rs::encoding::Pkcs8V1Der<'static> =
                AsDer::as_der(&pair).map_err(internal)?;
            der.as_ref().to_vec()
        }
    }))
}

/// The public half of an asymmetric key: SubjectPublicKeyInfo DER for ECDSA
/// and RSA, the raw 32 bytes for Ed25519 (Vault's encodings); `None` for a
/// symmetric key.
pub fn public_key(kind: KeyType, key: &[u8]) -> Result<Option<Vec<u8>>> {
    Ok(Some(match kind {
        KeyType::Ed25519 => Ed25519KeyPair::from_pkcs8(key)
            .map_err(|_| TransitError::Key)?
            .public_key()
            .as_ref()
            .to_vec(),
        KeyType::EcdsaP256 | KeyType::EcdsaP384 => {
            let pair = ecdsa_pair(kind, key, kind.default_hash(), Marshaling::Asn1)?;
            let der: PublicKeyX509Der<'static> =
                AsDer::as_der(pair.public_key()).map_err(internal)?;
            der.as_ref().to_vec()
        }
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => {
            let pair = RsaKeyPair::from_pkcs8(key).map_err(|_| TransitError::Key)?;
            let der: PublicKeyX509Der<'static> =
                AsDer::as_der(pair.public_key()).map_err(internal)?;
            der.as_ref().to_vec()
        }
        _ => return Ok(None),
    }))
}

/// The modulus size in bits of an RSA public key (DER `RSAPublicKey`, as a
/// certificate request carries it), or `None` when it is not one.
pub fn rsa_public_modulus_bits(pkcs1: &[u8]) -> Option<u32> {
    signature::RsaParameters::public_modulus_len(pkcs1).ok()
}

/// A key derived from `key` for `context`: HKDF-SHA256 with no salt and the
/// context as info, 32 bytes (Vault's `hkdf_sha256` derivation).
pub fn derive_key(key: &[u8], context: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(key);
    let info = [context];
    let okm = prk.expand(&info, hkdf::HKDF_SHA256).map_err(internal)?;
    let mut out = Zeroizing::new(vec![0u8; 32]);
    okm.fill(&mut out).map_err(internal)?;
    Ok(out)
}

/// The nonce of convergent encryption: the first 12 bytes of
/// HMAC-SHA256(key, len(aad) as 8 bytes BE || aad || plaintext), so the same
/// plaintext with the same associated data under the same (derived) key
/// always gives the same ciphertext. The associated data is in it: with the
/// plaintext alone (Vault's derivation), two messages with different
/// associated data share a GCM nonce, which gives away the authentication
/// key and lets ciphertexts be forged.
pub fn convergent_nonce(key: &[u8], aad: &[u8], plaintext: &[u8]) -> [u8; NONCE_LEN] {
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, key));
    ctx.update(&(aad.len() as u64).to_be_bytes());
    ctx.update(aad);
    ctx.update(plaintext);
    let tag = ctx.sign();
    let mut n = [0u8; NONCE_LEN];
    n.copy_from_slice(&tag.as_ref()[..NONCE_LEN]);
    n
}

/// Whether `key` is a key this module could have generated for `kind`: the
/// right length for a symmetric key; for an asymmetric one a PKCS#8 key of
/// the type's curve, or an RSA key of the type's size with exponent 65537.
/// Keys from outside (a restored backup) pass through here.
pub fn check_key(kind: KeyType, key: &[u8]) -> Result<()> {
    let ok = match kind {
        KeyType::Aes256Gcm96 | KeyType::ChaCha20Poly1305 => key.len() == 32,
        KeyType::Hmac => !key.is_empty(),
        KeyType::Ed25519 => Ed25519KeyPair::from_pkcs8(key).is_ok(),
        KeyType::EcdsaP256 | KeyType::EcdsaP384 => {
            ecdsa_pair(kind, key, kind.default_hash(), Marshaling::Asn1).is_ok()
        }
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => {
            let bytes = match kind {
                KeyType::Rsa2048 => 256,
                KeyType::Rsa3072 => 384,
                _ => 512,
            };
            match RsaKeyPair::from_pkcs8(key) {
                Ok(pair) => {
                    let c = aws_lc_rs::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
                    pair.public_modulus_len() == bytes && c.e == [1, 0, 1]
                }
                Err(_) => false,
            }
        }
    };
    if ok { Ok(()) } else { Err(TransitError::Key) }
}

fn aead_key(kind: KeyType, key: &[u8]) -> Result<LessSafeKey> {
    let alg = match kind {
        KeyType::Aes256Gcm96 => &aead::AES_256_GCM,
        KeyType::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        _ => {
            return Err(TransitError::Unsupported(
                "key type does not support encryption",
            ));
        }
    };
    Ok(LessSafeKey::new(
        UnboundKey::new(alg, key).map_err(|_| TransitError::Key)?,
    ))
}

/// Encrypt. AEAD types: `nonce || ct || tag` with a random nonce unless one
/// is given (convergent encryption); RSA types: OAEP with SHA-256 and no
/// label, where associated data is refused.
pub fn encrypt(
    kind: KeyType,
    key: &[u8],
    plaintext: &[u8],
    aad: &[u8],
    nonce: Option<[u8; NONCE_LEN]>,
) -> Result<Vec<u8>> {
    if kind.is_rsa() {
        if !aad.is_empty() {
            return Err(TransitError::Unsupported(
                "associated_data is not supported for RSA keys",
            ));
        }
        let private = PrivateDecryptingKey::from_pkcs8(key).map_err(|_| TransitError::Key)?;
        let public = OaepPublicEncryptingKey::new(private.public_key()).map_err(internal)?;
        if plaintext.len() > public.max_plaintext_size(&OAEP_SHA256_MGF1SHA256) {
            return Err(TransitError::TooLong);
        }
        let mut out = vec![0u8; public.ciphertext_size()];
        let n = public
            .encrypt(&OAEP_SHA256_MGF1SHA256, plaintext, &mut out, None)
            .map_err(internal)?
            .len();
        out.truncate(n);
        return Ok(out);
    }
    let k = aead_key(kind, key)?;
    let nonce = match nonce {
        Some(n) => n,
        None => {
            let mut n = [0u8; NONCE_LEN];
            n.copy_from_slice(&crate::random_bytes(NONCE_LEN));
            n
        }
    };
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = k
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[NONCE_LEN..],
        )
        .map_err(internal)?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Decrypt what [`encrypt`] produced with the same key and associated data.
pub fn decrypt(
    kind: KeyType,
    key: &[u8],
    ciphertext: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    if kind.is_rsa() {
        if !aad.is_empty() {
            return Err(TransitError::Unsupported(
                "associated_data is not supported for RSA keys",
            ));
        }
        let private = PrivateDecryptingKey::from_pkcs8(key).map_err(|_| TransitError::Key)?;
        let private = OaepPrivateDecryptingKey::new(private).map_err(internal)?;
        let mut out = Zeroizing::new(vec![0u8; ciphertext.len()]);
        let n = private
            .decrypt(&OAEP_SHA256_MGF1SHA256, ciphertext, &mut out, None)
            .map_err(|_| TransitError::Open)?
            .len();
        out.truncate(n);
        return Ok(out);
    }
    let k = aead_key(kind, key)?;
    if ciphertext.len() < NONCE_LEN + 16 {
        return Err(TransitError::Open);
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&ciphertext[..NONCE_LEN]);
    let mut body = Zeroizing::new(ciphertext[NONCE_LEN..].to_vec());
    let n = k
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut body,
        )
        .map_err(|_| TransitError::Open)?
        .len();
    body.truncate(n);
    Ok(body)
}

/// The digest of `data`.
pub fn hash(alg: HashAlg, data: &[u8]) -> Vec<u8> {
    digest::digest(alg.digest(), data).as_ref().to_vec()
}

/// HMAC of `data` under `key` (SHA-2 family only, as aws-lc-rs offers).
pub fn hmac(alg: HashAlg, key: &[u8], data: &[u8]) -> Result<Vec<u8>> {
    let alg = alg
        .hmac()
        .ok_or(TransitError::Unsupported("unsupported hmac algorithm"))?;
    Ok(hmac::sign(&hmac::Key::new(alg, key), data)
        .as_ref()
        .to_vec())
}

/// Whether `tag` is the HMAC of `data` under `key`, in constant time.
pub fn hmac_verify(alg: HashAlg, key: &[u8], data: &[u8], tag: &[u8]) -> Result<bool> {
    let alg = alg
        .hmac()
        .ok_or(TransitError::Unsupported("unsupported hmac algorithm"))?;
    Ok(hmac::verify(&hmac::Key::new(alg, key), data, tag).is_ok())
}

fn ecdsa_signing(
    kind: KeyType,
    hash: HashAlg,
    m: Marshaling,
) -> Option<&'static signature::EcdsaSigningAlgorithm> {
    Some(match (kind, hash, m) {
        (KeyType::EcdsaP256, HashAlg::Sha2_256, Marshaling::Asn1) => {
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING
        }
        (KeyType::EcdsaP256, HashAlg::Sha2_256, Marshaling::Jws) => {
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING
        }
        (KeyType::EcdsaP384, HashAlg::Sha2_384, Marshaling::Asn1) => {
            &signature::ECDSA_P384_SHA384_ASN1_SIGNING
        }
        (KeyType::EcdsaP384, HashAlg::Sha2_384, Marshaling::Jws) => {
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING
        }
        (KeyType::EcdsaP384, HashAlg::Sha3_384, Marshaling::Asn1) => {
            &signature::ECDSA_P384_SHA3_384_ASN1_SIGNING
        }
        (KeyType::EcdsaP384, HashAlg::Sha3_384, Marshaling::Jws) => {
            &signature::ECDSA_P384_SHA3_384_FIXED_SIGNING
        }
        _ => return None,
    })
}

fn ecdsa_verifying(
    kind: KeyType,
    hash: HashAlg,
    m: Marshaling,
) -> Option<&'static signature::EcdsaVerificationAlgorithm> {
    Some(match (kind, hash, m) {
        (KeyType::EcdsaP256, HashAlg::Sha2_256, Marshaling::Asn1) => {
            &signature::ECDSA_P256_SHA256_ASN1
        }
        (KeyType::EcdsaP256, HashAlg::Sha2_256, Marshaling::Jws) => {
            &signature::ECDSA_P256_SHA256_FIXED
        }
        (KeyType::EcdsaP384, HashAlg::Sha2_384, Marshaling::Asn1) => {
            &signature::ECDSA_P384_SHA384_ASN1
        }
        (KeyType::EcdsaP384, HashAlg::Sha2_384, Marshaling::Jws) => {
            &signature::ECDSA_P384_SHA384_FIXED
        }
        (KeyType::EcdsaP384, HashAlg::Sha3_384, Marshaling::Asn1) => {
            &signature::ECDSA_P384_SHA3_384_ASN1
        }
        (KeyType::EcdsaP384, HashAlg::Sha3_384, Marshaling::Jws) => {
            &signature::ECDSA_P384_SHA3_384_FIXED
        }
        _ => return None,
    })
}

const ECDSA_HASH: &str = "unsupported hash algorithm for this key type: ecdsa-p256 signs with sha2-256, ecdsa-p384 with sha2-384 or sha3-384";
const RSA_HASH: &str =
    "unsupported hash algorithm for RSA signatures: use sha2-256, sha2-384 or sha2-512";

fn ecdsa_pair(kind: KeyType, key: &[u8], hash: HashAlg, m: Marshaling) -> Result<EcdsaKeyPair> {
    let alg = ecdsa_signing(kind, hash, m).ok_or(TransitError::Unsupported(ECDSA_HASH))?;
    EcdsaKeyPair::from_pkcs8(alg, key).map_err(|_| TransitError::Key)
}

fn rsa_signing(hash: HashAlg, p: RsaPadding) -> Option<&'static signature::RsaSignatureEncoding> {
    Some(match (hash, p) {
        (HashAlg::Sha2_256, RsaPadding::Pss) => &signature::RSA_PSS_SHA256,
        (HashAlg::Sha2_384, RsaPadding::Pss) => &signature::RSA_PSS_SHA384,
        (HashAlg::Sha2_512, RsaPadding::Pss) => &signature::RSA_PSS_SHA512,
        (HashAlg::Sha2_256, RsaPadding::Pkcs1v15) => &signature::RSA_PKCS1_SHA256,
        (HashAlg::Sha2_384, RsaPadding::Pkcs1v15) => &signature::RSA_PKCS1_SHA384,
        (HashAlg::Sha2_512, RsaPadding::Pkcs1v15) => &signature::RSA_PKCS1_SHA512,
        _ => return None,
    })
}

fn rsa_verifying(hash: HashAlg, p: RsaPadding) -> Option<&'static signature::RsaParameters> {
    Some(match (hash, p) {
        (HashAlg::Sha2_256, RsaPadding::Pss) => &signature::RSA_PSS_2048_8192_SHA256,
        (HashAlg::Sha2_384, RsaPadding::Pss) => &signature::RSA_PSS_2048_8192_SHA384,
        (HashAlg::Sha2_512, RsaPadding::Pss) => &signature::RSA_PSS_2048_8192_SHA512,
        (HashAlg::Sha2_256, RsaPadding::Pkcs1v15) => &signature::RSA_PKCS1_2048_8192_SHA256,
        (HashAlg::Sha2_384, RsaPadding::Pkcs1v15) => &signature::RSA_PKCS1_2048_8192_SHA384,
        (HashAlg::Sha2_512, RsaPadding::Pkcs1v15) => &signature::RSA_PKCS1_2048_8192_SHA512,
        _ => return None,
    })
}

/// The digest to sign or verify: `input` hashed, or `input` itself when it
/// is already a digest of the right length.
fn message_digest(opts: &SignOptions, input: &[u8]) -> Result<Digest> {
    if opts.prehashed {
        Digest::import_less_safe(input, opts.hash.digest()).map_err(|_| {
            TransitError::Unsupported("prehashed input has the wrong length for the hash algorithm")
        })
    } else {
        Ok(digest::digest(opts.hash.digest(), input))
    }
}

/// Sign `input` with a private key (PKCS#8).
pub fn sign(kind: KeyType, key: &[u8], input: &[u8], opts: &SignOptions) -> Result<Vec<u8>> {
    match kind {
        KeyType::Ed25519 => {
            if opts.prehashed {
                return Err(TransitError::Unsupported(
                    "prehashed input is not supported for ed25519 keys",
                ));
            }
            let pair = Ed25519KeyPair::from_pkcs8(key).map_err(|_| TransitError::Key)?;
            Ok(pair.sign(input).as_ref().to_vec())
        }
        KeyType::EcdsaP256 | KeyType::EcdsaP384 => {
            let pair = ecdsa_pair(kind, key, opts.hash, opts.marshaling)?;
            let d = message_digest(opts, input)?;
            Ok(pair.sign_digest(&d).map_err(internal)?.as_ref().to_vec())
        }
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => {
            let enc =
                rsa_signing(opts.hash, opts.padding).ok_or(TransitError::Unsupported(RSA_HASH))?;
            let pair = RsaKeyPair::from_pkcs8(key).map_err(|_| TransitError::Key)?;
            let d = message_digest(opts, input)?;
            let mut sig = vec![0u8; pair.public_modulus_len()];
            pair.sign_digest(enc, &d, &mut sig).map_err(internal)?;
            Ok(sig)
        }
        _ => Err(TransitError::Unsupported(
            "key type does not support signing",
        )),
    }
}

/// Whether `sig` is a valid signature of `input` under a public key as
/// [`public_key`] returns it (SubjectPublicKeyInfo DER, or Ed25519's raw
/// 32 bytes). An unsupported combination is an error, a bad signature
/// `Ok(false)`.
pub fn verify(
    kind: KeyType,
    public: &[u8],
    input: &[u8],
    sig: &[u8],
    opts: &SignOptions,
) -> Result<bool> {
    match kind {
        KeyType::Ed25519 => {
            if opts.prehashed {
                return Err(TransitError::Unsupported(
                    "prehashed input is not supported for ed25519 keys",
                ));
            }
            Ok(
                signature::UnparsedPublicKey::new(&signature::ED25519, public)
                    .verify(input, sig)
                    .is_ok(),
            )
        }
        KeyType::EcdsaP256 | KeyType::EcdsaP384 => {
            let alg = ecdsa_verifying(kind, opts.hash, opts.marshaling)
                .ok_or(TransitError::Unsupported(ECDSA_HASH))?;
            let d = message_digest(opts, input)?;
            Ok(signature::UnparsedPublicKey::new(alg, public)
                .verify_digest(&d, sig)
                .is_ok())
        }
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => {
            let alg = rsa_verifying(opts.hash, opts.padding)
                .ok_or(TransitError::Unsupported(RSA_HASH))?;
            let d = message_digest(opts, input)?;
            Ok(signature::UnparsedPublicKey::new(alg, public)
                .verify_digest(&d, sig)
                .is_ok())
        }
        _ => Err(TransitError::Unsupported(
            "key type does not support signing",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(hash: HashAlg) -> SignOptions {
        SignOptions {
            hash,
            prehashed: false,
            padding: RsaPadding::Pss,
            marshaling: Marshaling::Asn1,
        }
    }

    #[test]
    fn every_encrypting_type_round_trips_and_refuses_a_changed_byte_or_aad() {
        for kind in [KeyType::Aes256Gcm96, KeyType::ChaCha20Poly1305] {
            let k = generate(kind, 0).unwrap();
            let ct = encrypt(kind, &k, b"the plaintext", b"aad", None).unwrap();
            assert_eq!(&*decrypt(kind, &k, &ct, b"aad").unwrap(), b"the plaintext");
            assert_eq!(decrypt(kind, &k, &ct, b"other"), Err(TransitError::Open));
            let mut bad = ct.clone();
            bad[20] ^= 1;
            assert_eq!(decrypt(kind, &k, &bad, b"aad"), Err(TransitError::Open));
            assert_eq!(
                decrypt(kind, &k, &ct[..27], b"aad"),
                Err(TransitError::Open)
            );
            let other = generate(kind, 0).unwrap();
            assert_eq!(decrypt(kind, &other, &ct, b"aad"), Err(TransitError::Open));
        }
        let k = generate(KeyType::Rsa2048, 0).unwrap();
        let ct = encrypt(KeyType::Rsa2048, &k, b"short", b"", None).unwrap();
        assert_eq!(ct.len(), 256);
        assert_eq!(&*decrypt(KeyType::Rsa2048, &k, &ct, b"").unwrap(), b"short");
        assert_eq!(
            encrypt(KeyType::Rsa2048, &k, &[0u8; 191], b"", None),
            Err(TransitError::TooLong)
        );
        assert!(matches!(
            encrypt(KeyType::Rsa2048, &k, b"x", b"aad", None),
            Err(TransitError::Unsupported(_))
        ));
    }

    #[test]
    fn signatures_verify_with_the_public_key_only_for_the_signed_input() {
        for kind in [
            KeyType::Ed25519,
            KeyType::EcdsaP256,
            KeyType::EcdsaP384,
            KeyType::Rsa2048,
        ] {
            let k = generate(kind, 0).unwrap();
            let public = public_key(kind, &k).unwrap().unwrap();
            for m in [Marshaling::Asn1, Marshaling::Jws] {
                for p in [RsaPadding::Pss, RsaPadding::Pkcs1v15] {
                    let o = SignOptions {
                        marshaling: m,
                        padding: p,
                        ..opts(kind.default_hash())
                    };
                    let sig = sign(kind, &k, b"message", &o).unwrap();
                    assert!(
                        verify(kind, &public, b"message", &sig, &o).unwrap(),
                        "{kind:?}"
                    );
                    assert!(
                        !verify(kind, &public, b"messagE", &sig, &o).unwrap(),
                        "{kind:?}"
                    );
                }
            }
        }
        // a hash the key cannot sign with is an error, not a weaker signature
        let k = generate(KeyType::EcdsaP256, 0).unwrap();
        assert_eq!(
            sign(KeyType::EcdsaP256, &k, b"m", &opts(HashAlg::Sha2_512)),
            Err(TransitError::Unsupported(ECDSA_HASH))
        );
    }

    #[test]
    fn derived_keys_differ_per_context_and_convergent_nonces_per_plaintext() {
        let k = generate(KeyType::Aes256Gcm96, 0).unwrap();
        let a = derive_key(&k, b"tenant-a").unwrap();
        let b = derive_key(&k, b"tenant-b").unwrap();
        assert_ne!(*a, *b);
        assert_eq!(*a, *derive_key(&k, b"tenant-a").unwrap());
        assert_eq!(
            convergent_nonce(&a, b"", b"x"),
            convergent_nonce(&a, b"", b"x")
        );
        assert_ne!(
            convergent_nonce(&a, b"", b"x"),
            convergent_nonce(&a, b"", b"y")
        );
        // the associated data is part of it, unambiguously
        assert_ne!(
            convergent_nonce(&a, b"user=alice", b""),
            convergent_nonce(&a, b"user=bob", b"")
        );
        assert_ne!(
            convergent_nonce(&a, b"ab", b"c"),
            convergent_nonce(&a, b"a", b"bc")
        );
    }

    #[test]
    fn only_keys_of_the_declared_type_and_size_pass_the_check() {
        for kind in KeyType::ALL {
            let k = generate(kind, 32).unwrap();
            assert_eq!(check_key(kind, &k), Ok(()), "{kind:?}");
        }
        let rsa2048 = generate(KeyType::Rsa2048, 0).unwrap();
        assert_eq!(
            check_key(KeyType::Rsa4096, &rsa2048),
            Err(TransitError::Key)
        );
        // made by `openssl genpkey -pkeyopt rsa_keygen_pubexp:3`: a test key only
        let e3 = include_bytes!("../testdata/rsa2048-e3.pk8.der");
        assert_eq!(check_key(KeyType::Rsa2048, e3), Err(TransitError::Key));
        let p256 = generate(KeyType::EcdsaP256, 0).unwrap();
        assert_eq!(check_key(KeyType::EcdsaP384, &p256), Err(TransitError::Key));
        assert_eq!(check_key(KeyType::Ed25519, &p256), Err(TransitError::Key));
        assert_eq!(
            check_key(KeyType::Aes256Gcm96, &[0; 31]),
            Err(TransitError::Key)
        );
    }

    #[test]
    fn hkdf_matches_rfc_5869_case_3() {
        // RFC 5869 A.3: SHA-256, no salt, no info
        let ikm = [0x0bu8; 22];
        let okm = derive_key(&ikm, b"").unwrap();
        assert_eq!(
            hex::encode(&okm[..]),
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
        );
    }
}
