//! Issuer configuration: what the gateway hands to [`crate::Verifier::new`],
//! and [`check`], the static checks that need neither files nor network.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use palisade_core::Secret;

use crate::error::{ConfigError, ConfigProblem};

/// Largest accepted clock-skew leeway.
pub const MAX_LEEWAY: Duration = Duration::from_secs(60);
/// Default leeway (Envoy's `clock_skew_seconds` default).
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
/// Default background refresh interval of a JWKS URL (Envoy's `cache_duration` default).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(600);
/// Default bound on refetches caused by unknown `kid`s.
pub const DEFAULT_MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Shortest HS256 secret accepted (RFC 7518 §3.2: key at least the hash size).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// A signature algorithm an issuer may be allowed to use. Anything else
/// (`none`, `HS384`, `RS512`, `ES512`, ...) is always refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    RS256,
    PS256,
    ES256,
    ES384,
    EdDSA,
    HS256,
}

impl Alg {
    pub const ALL: [Alg; 6] = [
        Alg::RS256,
        Alg::PS256,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
        Alg::HS256,
    ];

    /// The JWS `alg` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::PS256 => "PS256",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
            Alg::HS256 => "HS256",
        }
    }

    /// Exact, case-sensitive match of a JWS `alg` value (RFC 7515 §4.1.1).
    pub(crate) fn from_jws(s: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.as_str() == s)
    }

    pub(crate) fn jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        match self {
            Alg::RS256 => jsonwebtoken::Algorithm::RS256,
            Alg::PS256 => jsonwebtoken::Algorithm::PS256,
            Alg::ES256 => jsonwebtoken::Algorithm::ES256,
            Alg::ES384 => jsonwebtoken::Algorithm::ES384,
            Alg::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            Alg::HS256 => jsonwebtoken::Algorithm::HS256,
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `"RS256"` etc. did not name a supported algorithm.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported JWT algorithm `{0}` (supported: RS256, PS256, ES256, ES384, EdDSA, HS256)")]
pub struct UnknownAlg(pub String);

impl FromStr for Alg {
    type Err = UnknownAlg;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Alg::from_jws(s).ok_or_else(|| UnknownAlg(s.to_string()))
    }
}

/// Where an issuer's verification keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A JWKS document over HTTPS (plain http only to a loopback host),
    /// fetched at start-up and every `refresh`, and again when a token names
    /// an unknown `kid` — at most once per `min_refetch_interval`. A failed
    /// fetch keeps the last good key set.
    Url {
        url: String,
        refresh: Duration,
        min_refetch_interval: Duration,
    },
    /// A JWKS document on disk, read once by [`crate::Verifier::new`].
    File(PathBuf),
    /// A shared HS256 secret of at least 32 bytes; the issuer must then list
    /// exactly `[HS256]`.
    Hs256Secret(Secret<Vec<u8>>),
    /// A JWKS document given inline (the server's JWT auth method keeps its
    /// `jwt_validation_pubkeys` this way, see [`crate::jwks_from_pem`]).
    Jwks(String),
}

impl KeySource {
    /// A JWKS URL with the default refresh (10 min) and refetch bound (30 s).
    pub fn url(url: impl Into<String>) -> Self {
        KeySource::Url {
            url: url.into(),
            refresh: DEFAULT_REFRESH,
            min_refetch_interval: DEFAULT_MIN_REFETCH_INTERVAL,
        }
    }
}

/// One trusted token issuer.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// Must equal the token's `iss` claim exactly.
    pub issuer: String,
    /// The token's `aud` must contain at least one of these.
    pub audiences: Vec<String>,
    /// The allowlist; the token's `alg` must be in it and fit the key.
    pub algorithms: Vec<Alg>,
    pub keys: KeySource,
    /// Clock skew tolerated on `exp` and `nbf`; at most [`MAX_LEEWAY`].
    pub leeway: Duration,
    /// The caller checks the audience itself: `audiences` must then be
    /// empty, `aud` may be absent, and [`crate::Claims::aud`] is what the
    /// token holds (the server's JWT auth method, whose roles each bind
    /// their own audiences).
    pub caller_checks_audience: bool,
}

impl IssuerConfig {
    /// An issuer with the default leeway ([`DEFAULT_LEEWAY`]).
    pub fn new(
        issuer: impl Into<String>,
        audiences: Vec<String>,
        algorithms: Vec<Alg>,
        keys: KeySource,
    ) -> Self {
        IssuerConfig {
            issuer: issuer.into(),
            audiences,
            algorithms,
            keys,
            leeway: DEFAULT_LEEWAY,
            caller_checks_audience: false,
        }
    }
}

/// Every check that needs neither the file system nor the network, reporting
/// all problems at once. [`crate::Verifier::new`] runs it first; a
/// `config check` command can run it alone.
pub fn check(issuers: &[IssuerConfig]) -> Result<(), ConfigError> {
    let mut problems = Vec::new();
    if issuers.is_empty() {
        problems.push(ConfigProblem::NoIssuers);
    }
    let mut seen = HashSet::new();
    for (index, cfg) in issuers.iter().enumerate() {
        let issuer = cfg.issuer.clone();
        if cfg.issuer.is_empty() {
            problems.push(ConfigProblem::EmptyIssuer { index });
        } else if !seen.insert(cfg.issuer.as_str()) {
            problems.push(ConfigProblem::DuplicateIssuer {
                issuer: issuer.clone(),
            });
        }
        if cfg.caller_checks_audience {
            if !cfg.audiences.is_empty() {
                problems.push(ConfigProblem::AudiencesWithCallerCheck {
                    issuer: issuer.clone(),
                });
            }
        } else if cfg.audiences.is_empty() {
            problems.push(ConfigProblem::NoAudiences {
                issuer: issuer.clone(),
            });
        } else if cfg.audiences.iter().any(String::is_empty) {
            problems.push(ConfigProblem::EmptyAudience {
                issuer: issuer.clone(),
            });
        }
        if cfg.algorithms.is_empty() {
            problems.push(ConfigProblem::NoAlgorithms {
                issuer: issuer.clone(),
            });
        }
        if cfg.leeway > MAX_LEEWAY {
            problems.push(ConfigProblem::LeewayTooLarge {
                issuer: issuer.clone(),
            });
        }
        match &cfg.keys {
            KeySource::Hs256Secret(secret) => {
                if secret.expose().len() < MIN_HS256_SECRET_BYTES {
                    problems.push(ConfigProblem::SecretTooShort {
                        issuer: issuer.clone(),
                    });
                }
                // A shared secret verifies only HS256, and an issuer with a
                // secret gets no asymmetric keys: listing RS256 etc. beside it
                // would be a promise nothing can keep.
                if cfg.algorithms.iter().any(|a| *a != Alg::HS256) {
                    problems.push(ConfigProblem::SecretNeedsHs256Only { issuer });
                }
            }
            other => {
                // HS256 is allowed only with an explicitly configured secret:
                // symmetric keys are never taken from a JWKS, so that a public
                // key can never be used as an HMAC key.
                if cfg.algorithms.contains(&Alg::HS256) {
                    problems.push(ConfigProblem::Hs256WithoutSecret {
                        issuer: issuer.clone(),
                    });
                }
                if let KeySource::Url {
                    url,
                    refresh,
                    min_refetch_interval,
                } = other
                {
                    match reqwest::Url::parse(url) {
                        Err(_) => problems.push(ConfigProblem::InvalidUrl {
                            issuer: issuer.clone(),
                        }),
                        Ok(u) if !url_is_acceptable(&u) => {
                            problems.push(ConfigProblem::InsecureUrl {
                                issuer: issuer.clone(),
                            })
                        }
                        Ok(_) => {}
                    }
                    if *refresh < Duration::from_secs(1)
                        || *min_refetch_interval < Duration::from_secs(1)
                    {
                        problems.push(ConfigProblem::IntervalTooShort { issuer });
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError { problems })
    }
}

/// https anywhere; plain http only to a loopback host (a sidecar or a test),
/// where there is no network path to tamper with.
pub fn url_is_acceptable(url: &reqwest::Url) -> bool {
    match url.scheme() {
        "https" => url.host_str().is_some(),
        "http" => {
            let Some(host) = url.host_str() else {
                return false;
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            host.eq_ignore_ascii_case("localhost")
                || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        _ => false,
    }
}
