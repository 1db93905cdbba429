//! Operations: the security log, its copies for a SIEM (syslog, OTLP),
//! metrics and the admin endpoints.

pub mod admin;
pub mod durations;
pub mod log;
pub mod otlp;
pub mod syslog;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

pub use syslog::Event;

/// A copy of the security log for a SIEM: each line, as it is written to
/// stdout, with what it records. Never blocks (a queue of its own).
pub trait Forward: Send + Sync {
    fn send(&self, event: Event, line: &[u8]);
    /// Wait until everything queued went out, for at most `limit`.
    fn flush(&self, limit: Duration) -> bool;
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
