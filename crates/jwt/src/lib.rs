//! JWT bearer verification for the Palisade gateway.
//!
//! This crate owns one question of gateway step 8, **authn** (after
//! inspection, before the per-principal rate limit and **authz**): *is this
//! bearer token a JWT that one of our configured issuers signed, for us, and
//! still valid?* The gateway hands [`Verifier::verify`] the token from
//! `Authorization: Bearer …` and gets back [`Claims`] to build a `Principal`
//! from, or a [`JwtError`] whose [`JwtError::reason`] goes to the security
//! log and which the responder turns into a 401. The crate writes no
//! responses and logs no tokens; Envoy's `jwt_authn` filter is the behaviour
//! it follows.
//!
//! # Keys
//!
//! Each [`IssuerConfig`] has its own [`KeySource`], audiences, algorithm
//! allowlist and leeway:
//!
//! * `Url`: a JWKS fetched at start-up, refreshed in the background every
//!   `refresh` ([`Verifier::spawn_refresh`]), and refetched when a token names
//!   an unknown `kid` — at most once per `min_refetch_interval` (default
//!   30 s). A failed fetch (error status, timeout, bad document) keeps the last
//!   good key set. A URL that is down at start-up does not stop the gateway:
//!   that issuer has no keys, its tokens fail with
//!   [`JwtError::KeysUnavailable`], and fetching is retried. URLs must be
//!   https, except plain http to a loopback host.
//! * `File`: a JWKS read once at start-up; unreadable, or without a usable
//!   key, is a [`ConfigError`].
//! * `Hs256Secret`: a shared secret of at least 32 bytes, for an issuer whose
//!   allowlist is exactly `[HS256]`. HS256 is never allowed otherwise, and
//!   symmetric (`oct`) keys are never taken from a JWKS.
//!
//! JWKS entries are skipped when `use` is not `sig`, `key_ops` lacks
//! `verify`, they carry private-key members, their type or curve is not
//! RSA (2048–8192 bits), P-256, P-384 or Ed25519, or their `alg` is not one
//! of ours or does not fit their type.
//!
//! # Checks, in order
//!
//! 1. At most [`MAX_TOKEN_BYTES`] (8 KiB), before any decoding → `TooLarge`.
//! 2. Exactly three strict base64url segments (no padding, no other
//!    characters, canonical trailing bits); header a JSON object without
//!    duplicate members (at any depth) → `Malformed`.
//! 3. `alg` equal to `none` in any case, signed or not → `AlgNone`; not one
//!    of RS256, PS256, ES256, ES384, EdDSA, HS256 (case-sensitive) →
//!    `AlgNotAllowed`.
//! 4. `crit` present → `CritHeader` (we implement no extension).
//! 5. `jwk`, `jku`, `x5u` or `x5c` present → `EmbeddedKeyHeader`. Keys only
//!    ever come from configuration; refusing such tokens outright, instead of
//!    ignoring the member, leaves nothing for a later change to trust.
//! 6. Payload a strict JSON object (→ `Malformed`); its `iss`, unverified, is
//!    used only to find the issuer (absent → `MissingClaim("iss")`, no match
//!    → `UnknownIssuer`).
//! 7. `alg` in that issuer's allowlist → else `AlgNotAllowed`.
//! 8. Key choice: `kid` is only compared for equality with the cached keys'
//!    `kid`s (`../../etc/passwd` finds nothing → `UnknownKey`, which triggers
//!    the bounded refetch for a URL issuer). Keys named by `kid` must fit the
//!    token's `alg` by type and curve (and by the JWK's own `alg`, if any),
//!    else `AlgNotAllowed`: an RSA key never verifies HS256. Without `kid`,
//!    every key of the right type is tried, up to 8 (more → `UnknownKey`).
//! 9. Signature (jsonwebtoken's aws-lc-rs primitives; ECDSA as fixed-length
//!    r||s) → `BadSignature`.
//! 10. Claims, only after the signature verified: `exp` required
//!     (`MissingClaim("exp")`, `Expired` once `now >= exp + leeway`); `nbf`
//!     if present (`NotYetValid` while `now + leeway < nbf`); `iat` only has
//!     to be a number; `aud` (string or array) must contain a configured
//!     audience (`MissingClaim("aud")`, `WrongAudience`); a NumericDate, `aud`
//!     or `sub` of the wrong JSON type is `Malformed`.
//!
//! Leeway is at most 60 s (a larger one is a [`ConfigError`]); the default
//! is 60 s, as in Envoy.
#![forbid(unsafe_code)]

mod claims;
mod config;
mod error;
mod json;
mod jws;
mod keys;
mod pem;
mod remote;
mod verifier;

#[cfg(test)]
mod tests;

pub use claims::Claims;
pub use config::url_is_acceptable;
pub use config::{
    Alg, DEFAULT_LEEWAY, DEFAULT_MIN_REFETCH_INTERVAL, DEFAULT_REFRESH, IssuerConfig, KeySource,
    MAX_LEEWAY, MIN_HS256_SECRET_BYTES, UnknownAlg, check,
};
pub use error::{ConfigError, ConfigProblem, JwtError};
/// A JSON object without duplicate members at any depth (`None` otherwise),
/// as the token parser reads headers and claims.
pub use json::object as strict_json_object;
pub use jws::MAX_TOKEN_BYTES;
pub use pem::{jwk_from_spki_der, jwks_from_pem};
pub use remote::{jwks_client, jwks_client_with_roots};
pub use verifier::Verifier;
