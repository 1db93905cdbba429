//! TLS for gateway listeners (pipeline step 1): rustls with aws-lc-rs, TLS 1.2
//! and 1.3 only (Mozilla "intermediate": rustls's default suites are all ECDHE
//! with AEAD) or TLS 1.3 only ("modern"), several certificates chosen by SNI,
//! certificate hot reload, and optional client-certificate verification
//! (mTLS) against a CA bundle with CRLs. ALPN offers h2 and http/1.1.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::crypto::aws_lc_rs;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::config::{CertSpec, ClientAuth, ClientAuthMode, TlsProfile};

fn load_certified_key(spec: &CertSpec) -> Result<CertifiedKey, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&spec.cert_file)
        .map_err(|e| format!("cannot read {}: {e}", spec.cert_file.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            format!(
                "invalid certificate PEM in {}: {e}",
                spec.cert_file.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", spec.cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&spec.key_file)
        .map_err(|_| format!("no valid private key in {}", spec.key_file.display()))?;
    certified_key(certs, &key).map_err(|e| {
        format!(
            "certificate {} and key {}: {e}",
            spec.cert_file.display(),
            spec.key_file.display()
        )
    })
}

/// A certificate chain and its private key as rustls serves them: the key
/// of a supported type, and the leaf's public key the key's.
pub fn certified_key(
    certs: Vec<CertificateDer<'static>>,
    key: &PrivateKeyDer<'_>,
) -> Result<CertifiedKey, String> {
    let signer =
        aws_lc_rs::sign::any_supported_type(key).map_err(|e| format!("unsupported key: {e}"))?;
    let ck = CertifiedKey::new(certs, signer);
    ck.keys_match()
        .map_err(|e| format!("the certificate does not match the key: {e}"))?;
    Ok(ck)
}

struct CertSet {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    wildcards: Vec<(String, Arc<CertifiedKey>)>,
    default: Arc<CertifiedKey>,
}

/// Picks a certificate by SNI (exact name, then `*.suffix`), else the first
/// configured certificate. Reloadable in place.
pub struct SniResolver {
    specs: Vec<CertSpec>,
    current: RwLock<Arc<CertSet>>,
    stamps: RwLock<Vec<Option<SystemTime>>>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver")
            .field("certificates", &self.specs.len())
            .finish()
    }
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl SniResolver {
    pub fn new(specs: Vec<CertSpec>) -> Result<Arc<Self>, String> {
        let set = Self::build(&specs)?;
        let stamps = Self::stamps_of(&specs);
        Ok(Arc::new(Self {
            specs,
            current: RwLock::new(Arc::new(set)),
            stamps: RwLock::new(stamps),
        }))
    }

    fn stamps_of(specs: &[CertSpec]) -> Vec<Option<SystemTime>> {
        specs
            .iter()
            .flat_map(|s| [mtime(&s.cert_file), mtime(&s.key_file)])
            .collect()
    }

    fn build(specs: &[CertSpec]) -> Result<CertSet, String> {
        let mut by_name = HashMap::new();
        let mut wildcards = Vec::new();
        let mut default = None;
        for s in specs {
            let ck = Arc::new(load_certified_key(s)?);
            if default.is_none() {
                default = Some(ck.clone());
            }
            for n in &s.server_names {
                if let Some(suffix) = n.strip_prefix("*.") {
                    wildcards.push((format!(".{suffix}"), ck.clone()));
                } else {
                    by_name.insert(n.clone(), ck.clone());
                }
            }
        }
        let default = default.ok_or("no certificates configured")?;
        Ok(CertSet {
            by_name,
            wildcards,
            default,
        })
    }

    /// Reload if any certificate or key file changed. A set that fails to
    /// load is refused and the old one keeps serving. Returns whether it reloaded.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let stamps = Self::stamps_of(&self.specs);
        if self.stamps.read().map(|s| *s == stamps).unwrap_or(false) {
            return Ok(false);
        }
        let set = Self::build(&self.specs)?;
        if let Ok(mut c) = self.current.write() {
            *c = Arc::new(set);
        }
        if let Ok(mut s) = self.stamps.write() {
            *s = stamps;
        }
        Ok(true)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.current.read().ok()?.clone();
        if let Some(name) = hello.server_name() {
            let name = name.to_ascii_lowercase();
            if let Some(ck) = set.by_name.get(&name) {
                return Some(ck.clone());
            }
            for (suffix, ck) in &set.wildcards {
                if let Some(label) = name.strip_suffix(suffix.as_str())
                    && !label.is_empty()
                    && !label.contains('.')
                {
                    return Some(ck.clone());
                }
            }
        }
        Some(set.default.clone())
    }
}

fn load_roots(ca: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("cannot read {}: {e}", ca.display()))?
    {
        let c = c.map_err(|e| format!("invalid CA PEM in {}: {e}", ca.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("invalid CA certificate in {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("no CA certificate in {}", ca.display()));
    }
    Ok(roots)
}

fn load_crls(files: &[PathBuf]) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let mut out = Vec::new();
    for f in files {
        for crl in CertificateRevocationListDer::pem_file_iter(f)
            .map_err(|e| format!("cannot read {}: {e}", f.display()))?
        {
            out.push(crl.map_err(|e| format!("invalid CRL PEM in {}: {e}", f.display()))?);
        }
    }
    Ok(out)
}

/// Build the rustls config of one HTTPS listener.
pub fn server_config(
    profile: TlsProfile,
    resolver: Arc<SniResolver>,
    client_auth: Option<&ClientAuth>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = match profile {
        TlsProfile::Intermediate => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsProfile::Modern => &[&rustls::version::TLS13],
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS configuration: {e}"))?;
    let builder = match client_auth {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = Arc::new(load_roots(&ca.ca_file)?);
            let mut v = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .with_crls(load_crls(&ca.crl_files)?);
            if ca.mode == ClientAuthMode::Optional {
                v = v.allow_unauthenticated();
            }
            builder.with_client_cert_verifier(
                v.build()
                    .map_err(|e| format!("client certificate verifier: {e}"))?,
            )
        }
    };
    let mut cfg = builder.with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // rustls keeps every secret: no key log, no secret extraction
    Ok(Arc::new(cfg))
}
