//! JWS compact serialisation (RFC 7515 §7.1): split, decode, check the
//! protected header, and verify the signature against a key set.
//!
//! This layer knows nothing of claims; the payload is opaque bytes. That is
//! what lets the Wycheproof JWS vectors (whose payloads are not JWT claims
//! sets) run through exactly the code that verifies bearer tokens.

use serde_json::Value;

use crate::JwtError;
use crate::config::Alg;
use crate::keys::{KeySet, b64url};

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Header members that would point at, or carry, a key. Keys come only from
/// configuration, so a token carrying any of these is refused outright rather
/// than having the member ignored: that leaves no way for a later change to
/// start trusting one.
const KEY_BEARING_HEADERS: [&str; 4] = ["jwk", "jku", "x5u", "x5c"];

/// A compact JWS whose header passed every check but whose signature has not
/// been verified yet.
#[derive(Debug)]
pub(crate) struct Jws<'a> {
    pub alg: Alg,
    pub kid: Option<String>,
    /// `BASE64URL(header) || '.' || BASE64URL(payload)`, as received.
    pub signing_input: &'a [u8],
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

/// Parse a compact JWS. The checks run in a fixed order so that each kind of
/// bad token gets the same answer every time: size, shape, header encoding,
/// `alg` (none first), `crit`, key-bearing headers, `kid`, payload and
/// signature encoding.
pub(crate) fn parse(token: &str) -> Result<Jws<'_>, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    if h64.is_empty() {
        return Err(JwtError::Malformed);
    }
    let header_bytes = b64url(h64).ok_or(JwtError::Malformed)?;
    let header = crate::json::object(&header_bytes).ok_or(JwtError::Malformed)?;

    let alg = match header.get("alg") {
        Some(Value::String(s)) => s,
        _ => return Err(JwtError::Malformed),
    };
    if alg.trim().eq_ignore_ascii_case("none") {
        return Err(JwtError::AlgNone);
    }
    let alg = Alg::from_jws(alg).ok_or(JwtError::AlgNotAllowed)?;

    if header.contains_key("crit") {
        return Err(JwtError::CritHeader);
    }
    if KEY_BEARING_HEADERS.iter().any(|h| header.contains_key(*h)) {
        return Err(JwtError::EmbeddedKeyHeader);
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(JwtError::Malformed),
    };

    let payload = b64url(p64).ok_or(JwtError::Malformed)?;
    let signature = b64url(s64).ok_or(JwtError::Malformed)?;
    let signing_input = &token.as_bytes()[..h64.len() + 1 + p64.len()];
    Ok(Jws {
        alg,
        kid,
        signing_input,
        payload,
        signature,
    })
}

/// Verify the signature of `jws` against the fitting keys of `keys`.
pub(crate) fn verify_signature(jws: &Jws<'_>, keys: &KeySet) -> Result<(), JwtError> {
    let candidates = keys.candidates(jws.kid.as_deref(), jws.alg)?;
    if candidates
        .iter()
        .any(|k| k.verify(jws.alg, jws.signing_input, &jws.signature))
    {
        Ok(())
    } else {
        Err(JwtError::BadSignature)
    }
}
