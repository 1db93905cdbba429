//! A JWKS fetched from a URL: the cached key set, the fetch itself, and the
//! rate limit on refetches caused by unknown `kid`s.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::config::url_is_acceptable;
use crate::keys::{JwksError, KeySet, MAX_JWKS_BYTES};

/// One fetch may take this long, connection included.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a JWKS fetch failed. Never carries the response body.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("request failed ({0})")]
    Request(&'static str),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("redirected to a URL that is neither https nor loopback")]
    InsecureRedirect,
    #[error("JWKS {0}")]
    Jwks(#[from] JwksError),
}

/// Redirects a JWKS fetch follows at most.
const MAX_REDIRECTS: usize = 3;

/// The HTTP client for JWKS fetches: no proxy from the environment (a proxy
/// could serve its own keys, and the loopback exception for plain http
/// assumes a direct connection), and every redirect hop checked against the
/// rules for the configured URL before it is followed (not only where the
/// chain ends: a refused hop is never contacted).
pub fn jwks_client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    client_builder(timeout).build()
}

/// [`jwks_client`] trusting only the CA certificates of `pem` (a PEM
/// bundle), instead of the system's roots: a private issuer's CA.
pub fn jwks_client_with_roots(timeout: Duration, pem: &[u8]) -> reqwest::Result<reqwest::Client> {
    let certs = reqwest::Certificate::from_pem_bundle(pem)?;
    client_builder(timeout).tls_certs_only(certs).build()
}

fn client_builder(timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else if !url_is_acceptable(attempt.url()) {
                attempt.error("redirect to a URL that is neither https nor loopback")
            } else {
                attempt.follow()
            }
        }))
}

fn request_error(e: &reqwest::Error) -> FetchError {
    FetchError::Request(if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else if e.is_redirect() {
        "redirect"
    } else {
        "other"
    })
}

pub(crate) struct Remote {
    issuer: String,
    url: reqwest::Url,
    pub(crate) refresh: Duration,
    pub(crate) min_refetch_interval: Duration,
    /// `None` until the first successful fetch; afterwards always the last
    /// good set (a failed fetch never clears it).
    current: RwLock<Option<Arc<KeySet>>>,
    /// When the last refetch for an unknown `kid` started. Held across that
    /// fetch, so concurrent misses wait for it instead of fetching again.
    last_refetch: tokio::sync::Mutex<Option<Instant>>,
}

impl Remote {
    pub(crate) fn new(
        issuer: String,
        url: reqwest::Url,
        refresh: Duration,
        min_refetch_interval: Duration,
    ) -> Remote {
        Remote {
            issuer,
            url,
            refresh,
            min_refetch_interval,
            current: RwLock::new(None),
            last_refetch: tokio::sync::Mutex::new(None),
        }
    }

    /// Start from `set` when no fetch has succeeded yet (a reload while the
    /// identity provider is down keeps the last good keys).
    pub(crate) fn seed(&self, set: Arc<KeySet>) {
        let mut cur = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if cur.is_none() {
            *cur = Some(set);
        }
    }

    pub(crate) fn url(&self) -> &reqwest::Url {
        &self.url
    }

    pub(crate) fn snapshot(&self) -> Option<Arc<KeySet>> {
        // A poisoned lock only means a writer panicked between two plain
        // assignments; the value inside is still a complete key set.
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn store(&self, set: KeySet) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(set));
    }

    async fn fetch(&self, http: &reqwest::Client) -> Result<KeySet, FetchError> {
        let mut response = http
            .get(self.url.clone())
            .header(
                reqwest::header::ACCEPT,
                "application/jwk-set+json, application/json",
            )
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| request_error(&e))?;
        // The client may follow redirects; where it ended up must be as
        // trustworthy as the configured URL.
        if !url_is_acceptable(response.url()) {
            return Err(FetchError::InsecureRedirect);
        }
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(JwksError::TooLarge.into());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| request_error(&e))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(JwksError::TooLarge.into());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(KeySet::from_jwks(&body)?)
    }

    /// Fetch and, on success, replace the key set. On failure the last good
    /// set stays in use. Returns whether the fetch succeeded.
    pub(crate) async fn refresh(&self, http: &reqwest::Client) -> bool {
        match self.fetch(http).await {
            Ok(set) => {
                tracing::debug!(issuer = %self.issuer, keys = set.len(), "JWKS fetched");
                self.store(set);
                true
            }
            Err(error) => {
                tracing::warn!(
                    issuer = %self.issuer,
                    %error,
                    "JWKS fetch failed; keeping the last good key set"
                );
                false
            }
        }
    }

    /// A token named a key we do not have (or we have no keys yet): refetch,
    /// but at most once per `min_refetch_interval`, so a stream of tokens with
    /// made-up `kid`s costs the issuer one request per interval.
    pub(crate) async fn refetch_for_unknown_key(&self, http: &reqwest::Client, now: Instant) {
        let mut last = self.last_refetch.lock().await;
        if let Some(at) = *last
            && now.saturating_duration_since(at) < self.min_refetch_interval
        {
            return;
        }
        *last = Some(now);
        self.refresh(http).await;
    }
}
