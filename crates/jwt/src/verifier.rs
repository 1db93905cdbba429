//! [`Verifier`]: the issuers, their keys, and the order of the checks.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;

use crate::claims::{self, Claims, Expect, Now};
use crate::config::{self, Alg, IssuerConfig, KeySource};
use crate::error::{ConfigError, ConfigProblem, JwtError};
use crate::keys::{Key, KeySet, MAX_JWKS_BYTES};
use crate::remote::Remote;
use crate::{json, jws};

/// Verifies bearer tokens against the configured issuers.
///
/// `Send + Sync`; share it as `Arc<Verifier>`. Build it with
/// [`Verifier::new`], start the background JWKS refresh with
/// [`Verifier::spawn_refresh`], and call [`Verifier::verify`] per request.
pub struct Verifier {
    pub(crate) issuers: HashMap<String, Issuer>,
    pub(crate) http: reqwest::Client,
    /// Tokens whose signature already verified, by AES-CMAC of the token
    /// under `cache_key` (a keyed 128-bit PRF: the token itself is never
    /// kept, and without the key nobody can aim a token at another one's
    /// entry; 4× cheaper than SHA-256 here). A hit skips the signature and
    /// every check that depends only on the token (issuer, audience, claim
    /// types): time claims are checked again on every use, and an entry
    /// is used only while the key set that verified it is still the issuer's
    /// current one (a JWKS rotation invalidates it).
    cache: Mutex<HashMap<u128, Arc<Verified>, TagHash>>,
    /// Random per process; never leaves memory.
    cache_key: aws_lc_rs::cmac::Key,
}

/// Entries kept at most; the cache is emptied when full (bounded memory).
pub(crate) const VERIFIED_CACHE_ENTRIES: usize = 10_000;

pub(crate) struct Verified {
    /// For a JWKS URL issuer, its key source and the key set that verified
    /// the token (`None`: keys fixed for the Verifier's lifetime).
    keys: Option<(Arc<Remote>, Arc<KeySet>)>,
    leeway: Duration,
    claims: Arc<Claims>,
}

/// Hashes a cache key, which is already the output of a keyed PRF
/// (AES-CMAC under a per-process random key): its low 64 bits are as good
/// a hash as any, and nobody without the key can choose them. Saves
/// re-hashing 16 bytes with SipHash on every lookup.
#[derive(Clone, Copy, Default)]
pub(crate) struct TagHash;

impl std::hash::BuildHasher for TagHash {
    type Hasher = TagHasher;
    fn build_hasher(&self) -> TagHasher {
        TagHasher(0)
    }
}

#[derive(Default)]
pub(crate) struct TagHasher(u64);

impl std::hash::Hasher for TagHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // only `u128` keys are hashed here (`write_u128`); kept correct
        // for any input all the same
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        // truncation intended: the low half of a PRF output
        self.0 ^= v as u64;
    }
}

/// One issuer, configuration checked and keys loaded.
pub(crate) struct Issuer {
    pub(crate) caller_checks_audience: bool,
    pub(crate) audiences: Vec<String>,
    pub(crate) algorithms: Vec<Alg>,
    pub(crate) leeway: Duration,
    pub(crate) keys: Keys,
}

pub(crate) enum Keys {
    /// From a file or a configured secret: fixed for the Verifier's lifetime.
    Static(Arc<KeySet>),
    Remote(Arc<Remote>),
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.issuers.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Verifier").field("issuers", &names).finish()
    }
}

impl Verifier {
    /// Check the configuration, read every JWKS file, and fetch every JWKS
    /// URL once (concurrently, each bounded by a 5 s timeout).
    ///
    /// A JWKS file that cannot be read or holds no usable key is a
    /// configuration error. A JWKS URL that fails at start-up is **not**: the
    /// issuer starts with no keys, its tokens are refused with
    /// [`JwtError::KeysUnavailable`], and the URL is retried on demand (at
    /// most once per `min_refetch_interval`) and by [`Verifier::spawn_refresh`].
    /// The gateway thus starts while an identity provider is briefly down,
    /// and fails closed for that issuer only.
    pub async fn new(
        issuers: Vec<IssuerConfig>,
        http: reqwest::Client,
    ) -> Result<Arc<Verifier>, ConfigError> {
        Self::new_after(issuers, http, None).await
    }

    /// [`Verifier::new`] for a reload: an issuer whose JWKS URL cannot be
    /// fetched now starts from the key set `previous` last fetched from the
    /// same URL for the same issuer (the last good set survives a reload
    /// while the identity provider is down), and is refreshed as usual.
    pub async fn new_after(
        issuers: Vec<IssuerConfig>,
        http: reqwest::Client,
        previous: Option<&Verifier>,
    ) -> Result<Arc<Verifier>, ConfigError> {
        config::check(&issuers)?;
        let mut problems = Vec::new();
        let mut built = HashMap::new();
        let mut remotes = Vec::new();
        for cfg in issuers {
            let keys = match &cfg.keys {
                KeySource::File(path) => match load_jwks_file(path).await {
                    Ok(set) => Keys::Static(Arc::new(set)),
                    Err(reason) => {
                        problems.push(ConfigProblem::KeyFile {
                            issuer: cfg.issuer.clone(),
                            path: path.clone(),
                            reason,
                        });
                        continue;
                    }
                },
                KeySource::Url {
                    url,
                    refresh,
                    min_refetch_interval,
                } => {
                    // `check` has parsed it already; this cannot fail.
                    let Ok(url) = reqwest::Url::parse(url) else {
                        problems.push(ConfigProblem::InvalidUrl {
                            issuer: cfg.issuer.clone(),
                        });
                        continue;
                    };
                    let remote = Arc::new(Remote::new(
                        cfg.issuer.clone(),
                        url,
                        *refresh,
                        *min_refetch_interval,
                    ));
                    remotes.push(Arc::clone(&remote));
                    Keys::Remote(remote)
                }
                KeySource::Jwks(doc) => match KeySet::from_jwks(doc.as_bytes()) {
                    Ok(set) if doc.len() <= crate::keys::MAX_JWKS_BYTES => {
                        Keys::Static(Arc::new(set))
                    }
                    Ok(_) => {
                        problems.push(ConfigProblem::InlineJwks {
                            issuer: cfg.issuer.clone(),
                            reason: "larger than 1 MiB".to_owned(),
                        });
                        continue;
                    }
                    Err(e) => {
                        problems.push(ConfigProblem::InlineJwks {
                            issuer: cfg.issuer.clone(),
                            reason: e.to_string(),
                        });
                        continue;
                    }
                },
                KeySource::Hs256Secret(secret) => match Key::hmac(None, secret.expose()) {
                    Some(key) => Keys::Static(Arc::new(KeySet::new(vec![key]))),
                    None => {
                        problems.push(ConfigProblem::SecretTooShort {
                            issuer: cfg.issuer.clone(),
                        });
                        continue;
                    }
                },
            };
            built.insert(
                cfg.issuer,
                Issuer {
                    caller_checks_audience: cfg.caller_checks_audience,
                    audiences: cfg.audiences,
                    algorithms: cfg.algorithms,
                    leeway: cfg.leeway,
                    keys,
                },
            );
        }
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        let mut fetches = tokio::task::JoinSet::new();
        for remote in remotes {
            let http = http.clone();
            fetches.spawn(async move {
                remote.refresh(&http).await;
            });
        }
        while fetches.join_next().await.is_some() {}
        if let Some(prev) = previous {
            for (name, issuer) in &built {
                let (Keys::Remote(new), Some(Keys::Remote(old))) =
                    (&issuer.keys, prev.issuers.get(name).map(|i| &i.keys))
                else {
                    continue;
                };
                if new.snapshot().is_none()
                    && new.url() == old.url()
                    && let Some(set) = old.snapshot()
                {
                    new.seed(set);
                }
            }
        }
        Ok(Verifier::from_parts(built, http))
    }

    #[allow(
        clippy::expect_used,
        reason = "the system's random generator failing is not recoverable (aws-lc aborts on it itself)"
    )]
    pub(crate) fn from_parts(issuers: HashMap<String, Issuer>, http: reqwest::Client) -> Arc<Self> {
        Arc::new(Verifier {
            issuers,
            http,
            cache: Mutex::new(HashMap::with_hasher(TagHash)),
            cache_key: aws_lc_rs::cmac::Key::generate(aws_lc_rs::cmac::AES_128)
                .expect("random key from the system's generator"),
        })
    }

    fn remotes(&self) -> Vec<Arc<Remote>> {
        self.issuers
            .values()
            .filter_map(|i| match &i.keys {
                Keys::Remote(r) => Some(Arc::clone(r)),
                Keys::Static(_) => None,
            })
            .collect()
    }

    /// Refresh every JWKS URL in the background, each at its own `refresh`
    /// interval. After a failed fetch the next try comes after
    /// `min(refresh, min_refetch_interval)`. The task ends by itself once the
    /// last `Arc<Verifier>` is dropped (or at once if no issuer uses a URL).
    /// JWKS files are read only at start-up.
    pub fn spawn_refresh(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let verifier = Arc::downgrade(self);
        let remotes = self.remotes();
        let http = self.http.clone();
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let mut due: Vec<tokio::time::Instant> = remotes
                .iter()
                .map(|r| {
                    if r.snapshot().is_some() {
                        start + r.refresh
                    } else {
                        start + r.refresh.min(r.min_refetch_interval)
                    }
                })
                .collect();
            loop {
                let Some(next) = due.iter().min().copied() else {
                    return;
                };
                tokio::time::sleep_until(next).await;
                if verifier.strong_count() == 0 {
                    return;
                }
                for (remote, when) in remotes.iter().zip(due.iter_mut()) {
                    if *when <= tokio::time::Instant::now() {
                        let wait = if remote.refresh(&http).await {
                            remote.refresh
                        } else {
                            remote.refresh.min(remote.min_refetch_interval)
                        };
                        *when = tokio::time::Instant::now() + wait;
                    }
                }
            }
        })
    }

    /// Verify a bearer token (without the `Bearer ` prefix) and return its
    /// claims. Every refusal is a [`JwtError`]; see the crate docs for the
    /// order of checks.
    pub async fn verify(&self, token: &str) -> Result<Arc<Claims>, JwtError> {
        self.verify_at(token, Now::system()).await
    }

    /// [`Verifier::verify`] with `wall` as the current time (a server whose
    /// clock is its own, e.g. adjustable in tests). The JWKS refetch bound
    /// still runs on the monotonic clock.
    pub async fn verify_at_wall(
        &self,
        token: &str,
        wall: std::time::SystemTime,
    ) -> Result<Arc<Claims>, JwtError> {
        self.verify_at(
            token,
            Now {
                wall,
                mono: std::time::Instant::now(),
            },
        )
        .await
    }

    /// [`Verifier::verify`] at an injected time.
    pub(crate) async fn verify_at(&self, token: &str, now: Now) -> Result<Arc<Claims>, JwtError> {
        // never expected to fail; then the cache is simply not used
        let cache_key: Option<u128> = aws_lc_rs::cmac::sign(&self.cache_key, token.as_bytes())
            .ok()
            .and_then(|tag| <[u8; 16]>::try_from(tag.as_ref()).ok())
            .map(u128::from_le_bytes);
        let hit = cache_key.and_then(|k| {
            self.cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&k)
                .cloned()
        });
        if let Some(v) = hit {
            let same_keys = match &v.keys {
                None => true,
                Some((remote, used)) => {
                    remote.snapshot().is_some_and(|cur| Arc::ptr_eq(&cur, used))
                }
            };
            if same_keys {
                v.claims.check_time(now.wall, v.leeway)?;
                return Ok(Arc::clone(&v.claims));
            }
        }

        let jws = jws::parse(token)?;
        let claims = json::object(&jws.payload).ok_or(JwtError::Malformed)?;
        // The unverified `iss` is only a lookup key: everything after this is
        // checked against that issuer's own keys and allowlist.
        let issuer = match claims.get("iss") {
            None => return Err(JwtError::MissingClaim("iss")),
            Some(Value::String(iss)) => self.issuers.get(iss).ok_or(JwtError::UnknownIssuer)?,
            Some(_) => return Err(JwtError::Malformed),
        };
        if !issuer.algorithms.contains(&jws.alg) {
            return Err(JwtError::AlgNotAllowed);
        }
        let used = match &issuer.keys {
            Keys::Static(set) => {
                jws::verify_signature(&jws, set)?;
                None
            }
            Keys::Remote(remote) => {
                let first = match remote.snapshot() {
                    Some(set) => jws::verify_signature(&jws, &set).map(|_| set),
                    None => Err(JwtError::KeysUnavailable),
                };
                let set = match first {
                    Err(JwtError::UnknownKey | JwtError::KeysUnavailable) => {
                        // boxed: the rare path (an HTTP fetch) would otherwise
                        // sit inline in every verification's future
                        Box::pin(remote.refetch_for_unknown_key(&self.http, now.mono)).await;
                        // Retry with whatever set is current now: ours, or
                        // one a concurrent refetch installed meanwhile.
                        match remote.snapshot() {
                            Some(set) => {
                                jws::verify_signature(&jws, &set)?;
                                set
                            }
                            None => return Err(JwtError::KeysUnavailable),
                        }
                    }
                    other => other?,
                };
                Some((Arc::clone(remote), set))
            }
        };
        let verified = Arc::new(claims::check(
            Arc::new(claims),
            &Expect {
                caller_checks_audience: issuer.caller_checks_audience,
                audiences: &issuer.audiences,
                leeway: issuer.leeway,
            },
            now.wall,
            jws.alg,
            jws.kid,
        )?);
        let Some(cache_key) = cache_key else {
            return Ok(verified);
        };
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= VERIFIED_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(
            cache_key,
            Arc::new(Verified {
                keys: used,
                leeway: issuer.leeway,
                claims: Arc::clone(&verified),
            }),
        );
        Ok(verified)
    }
}

async fn load_jwks_file(path: &Path) -> Result<KeySet, String> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| format!("cannot read: {}", e.kind()))?;
    if meta.len() > MAX_JWKS_BYTES as u64 {
        return Err("larger than 1 MiB".to_owned());
    }
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| format!("cannot read: {}", e.kind()))?;
    KeySet::from_jwks(&bytes).map_err(|e| e.to_string())
}
