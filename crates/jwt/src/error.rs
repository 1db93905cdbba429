//! The two error types: [`JwtError`] (a token was refused) and [`ConfigError`]
//! (the issuer configuration cannot be used).
//!
//! Neither ever carries the token, a claim value or key material: a
//! `JwtError` is a bare reason, and a `ConfigError` names issuers, paths and
//! what was wrong with them.

use std::fmt;
use std::path::PathBuf;

/// Why a bearer token was refused. The gateway maps every variant to 401;
/// [`JwtError::reason`] is the stable code for the security log.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// Longer than [`crate::MAX_TOKEN_BYTES`]; refused before any decoding.
    #[error("token is larger than 8 KiB")]
    TooLarge,
    /// Not three base64url segments, a header or payload that is not a JSON
    /// object (or has duplicate members), or a claim of the wrong type.
    #[error("token is malformed")]
    Malformed,
    /// `alg: none` in any spelling, with or without a signature.
    #[error("unsigned tokens (alg none) are refused")]
    AlgNone,
    /// The token's `alg` is unknown, not in the issuer's allowlist, or does not
    /// fit the key its `kid` names.
    #[error("algorithm not allowed")]
    AlgNotAllowed,
    /// The `iss` claim names no configured issuer.
    #[error("unknown issuer")]
    UnknownIssuer,
    /// No key in the issuer's key set fits the token's `kid` (or, without a
    /// `kid`, its algorithm).
    #[error("no matching key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` (plus leeway) has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` (minus leeway) is still in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// No value of `aud` is a configured audience.
    #[error("wrong audience")]
    WrongAudience,
    /// A required claim (`iss`, `exp`, `aud`) is absent.
    #[error("missing claim `{0}`")]
    MissingClaim(&'static str),
    /// The header has `crit`: no extension is understood, so none may be critical.
    #[error("critical header extensions are not supported")]
    CritHeader,
    /// The header carries `jwk`, `jku`, `x5u` or `x5c`. Keys only ever come
    /// from configuration, so such tokens are refused outright.
    #[error("embedded or remote key headers are refused")]
    EmbeddedKeyHeader,
    /// The issuer's JWKS URL has never answered with a usable key set.
    #[error("issuer keys unavailable")]
    KeysUnavailable,
}

impl JwtError {
    /// Stable snake_case code for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            JwtError::TooLarge => "too_large",
            JwtError::Malformed => "malformed",
            JwtError::AlgNone => "alg_none",
            JwtError::AlgNotAllowed => "alg_not_allowed",
            JwtError::UnknownIssuer => "unknown_issuer",
            JwtError::UnknownKey => "unknown_key",
            JwtError::BadSignature => "bad_signature",
            JwtError::Expired => "expired",
            JwtError::NotYetValid => "not_yet_valid",
            JwtError::WrongAudience => "wrong_audience",
            JwtError::MissingClaim(_) => "missing_claim",
            JwtError::CritHeader => "crit_header",
            JwtError::EmbeddedKeyHeader => "embedded_key_header",
            JwtError::KeysUnavailable => "keys_unavailable",
        }
    }
}

/// Everything wrong with a list of [`crate::IssuerConfig`]s, reported at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid JWT issuer configuration: ")?;
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// One problem in the issuer configuration.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ConfigProblem {
    #[error("no issuers configured")]
    NoIssuers,
    #[error("issuer #{index} has an empty `issuer`")]
    EmptyIssuer { index: usize },
    #[error("issuer `{issuer}` is configured twice")]
    DuplicateIssuer { issuer: String },
    #[error("issuer `{issuer}` has no audiences (at least one is required)")]
    NoAudiences { issuer: String },
    #[error("issuer `{issuer}` has an empty audience")]
    EmptyAudience { issuer: String },
    #[error("issuer `{issuer}`: audiences are listed but the caller checks them")]
    AudiencesWithCallerCheck { issuer: String },
    #[error("issuer `{issuer}`: the inline JWKS is unusable: {reason}")]
    InlineJwks { issuer: String, reason: String },
    #[error("issuer `{issuer}` has no algorithms")]
    NoAlgorithms { issuer: String },
    #[error("issuer `{issuer}`: leeway must be at most 60 s")]
    LeewayTooLarge { issuer: String },
    #[error("issuer `{issuer}`: HS256 needs a configured secret (`Hs256Secret`)")]
    Hs256WithoutSecret { issuer: String },
    #[error("issuer `{issuer}`: the HS256 secret must be at least 32 bytes")]
    SecretTooShort { issuer: String },
    #[error("issuer `{issuer}`: an HS256 secret may only be used with algorithms = [HS256]")]
    SecretNeedsHs256Only { issuer: String },
    #[error("issuer `{issuer}`: the JWKS URL does not parse")]
    InvalidUrl { issuer: String },
    #[error("issuer `{issuer}`: the JWKS URL must be https (plain http only to a loopback host)")]
    InsecureUrl { issuer: String },
    #[error("issuer `{issuer}`: refresh and min_refetch_interval must be at least 1 s")]
    IntervalTooShort { issuer: String },
    #[error("issuer `{issuer}`: JWKS file {}: {reason}", path.display())]
    KeyFile {
        issuer: String,
        path: PathBuf,
        reason: String,
    },
}
