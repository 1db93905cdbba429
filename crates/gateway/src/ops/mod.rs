//! Operations: the security log, its copies for a SIEM (syslog, OTLP),
//! metrics and the admin endpoints.

pub mod admin;
pub mod durations;
pub mod log;
pub mod otlp;
pub mod palisade;
pub mod syslog;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

pub use syslog::Event;

/// A copy of the security log for a SIEM: each line, as it is written to
/// stdout, with what it records. Never blocks (a queue of its own).
pub trait Forward: Send + Sync {
    fn send(&self, event: Event, line: &[u8]);
    /// Wait until everything queued went out, for at most `limit`.
    fn flush(&self, limit: Duration) -> bool;
}

/// A forwarder's queue as counts (syslog, OTLP): what waits (messages and
/// bytes, the bytes bounded), what went out and what was dropped.
#[derive(Debug)]
pub struct Backlog {
    pending: AtomicUsize,
    pending_bytes: AtomicUsize,
    sent: AtomicU64,
    dropped: AtomicU64,
    last_alert_s: AtomicU64,
    epoch: Instant,
    max_bytes: usize,
    /// The drop counter's metric, and what the drop alert says.
    metric: &'static str,
    alert: &'static str,
}

impl Backlog {
    pub fn new(max_bytes: usize, metric: &'static str, alert: &'static str) -> Self {
        Backlog {
            pending: AtomicUsize::new(0),
            pending_bytes: AtomicUsize::new(0),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            last_alert_s: AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
            max_bytes,
            metric,
            alert,
        }
    }

    /// Count a message of `len` bytes in; false (nothing counted) when the
    /// bytes waiting would pass the bound.
    pub fn admit(&self, len: usize) -> bool {
        if self.pending_bytes.load(Ordering::Relaxed) + len > self.max_bytes {
            return false;
        }
        self.pending.fetch_add(1, Ordering::Relaxed);
        self.pending_bytes.fetch_add(len, Ordering::Relaxed);
        true
    }

    /// Take back an [`Self::admit`] whose message did not make it into
    /// the queue.
    pub fn unadmit(&self, len: usize) {
        self.pending.fetch_sub(1, Ordering::Relaxed);
        self.pending_bytes.fetch_sub(len, Ordering::Relaxed);
    }

    /// `messages` (`bytes`) left the queue, `sent` of them delivered.
    pub fn done(&self, messages: usize, bytes: usize, sent: u64) {
        self.sent.fetch_add(sent, Ordering::Relaxed);
        self.pending.fetch_sub(messages, Ordering::Relaxed);
        self.pending_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Count `n` dropped messages (the metric too).
    pub fn count_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        metrics::counter!(self.metric).increment(n);
    }

    /// [`Self::count_dropped`] one, with an error at most once a second.
    pub fn drop_one(&self, why: &str) {
        self.count_dropped(1);
        let now = self.epoch.elapsed().as_secs();
        if self.last_alert_s.swap(now, Ordering::Relaxed) != now {
            tracing::error!(
                dropped = self.dropped.load(Ordering::Relaxed),
                reason = why,
                "{}",
                self.alert
            );
        }
    }

    /// Wait until nothing waits, for at most `limit`.
    pub fn flush(&self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while self.pending.load(Ordering::Relaxed) > 0 {
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// A response body of at most `max` bytes (`Err` when longer or broken).
pub(crate) async fn read_limited(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, &'static str> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|_| "body")? {
        if bytes.len() + chunk.len() > max {
            return Err("answer_too_large");
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// A TLS client configuration trusting the CA certificates in `ca_file`
/// only, presenting `client_cert` (certificate chain, key) when given.
/// Files are read here, so a missing or bad one stops the gateway at start.
/// `what` names the configuration section in errors.
pub fn tls_client(
    what: &str,
    ca_file: &PathBuf,
    client_cert: Option<&(PathBuf, PathBuf)>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = ca_file;
    for c in CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("{what}: ca_file {}: {e}", ca.display()))?
    {
        let c = c.map_err(|e| format!("{what}: ca_file {}: {e}", ca.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("{what}: ca_file {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "{what}: ca_file {} holds no certificate",
            ca.display()
        ));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("{what}: {e}"))?
        .with_root_certificates(roots);
    let tls = match client_cert {
        None => b.with_no_client_auth(),
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| format!("{what}: client_cert_file {}: {e}", cert.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{what}: client_cert_file {}: {e}", cert.display()))?;
            // the key's own parse error is not repeated: it could quote it
            let key = PrivateKeyDer::from_pem_file(key).map_err(|_| {
                format!(
                    "{what}: client_key_file {}: no valid private key",
                    key.display()
                )
            })?;
            b.with_client_auth_cert(chain, key)
                .map_err(|e| format!("{what}: client certificate: {e}"))?
        }
    };
    Ok(Arc::new(tls))
}
