//! The PKI secrets engine, a workload CA for service-to-service mTLS, with
//! Vault's paths and shapes (docs/api-compat.md): one root CA per mount,
//! roles that say which names a certificate may carry, `issue` (key pair
//! made here), revocation and a CRL, tidy.
//!
//! Storage inside the mount's view: `ca` (the CA's PKCS#8 key, certificate
//! and validity), `roles/<name>`, `certs/<serial>` (issued certificates,
//! unless the role says `no_store`) and `revoked/<serial>`. Certificates and
//! CRLs are made by rcgen over aws-lc-rs; nothing here encodes ASN.1.
//!
//! Names are checked before anything is signed: DNS names must already be
//! canonical (lowercase hostnames), IP addresses in their canonical text,
//! URIs as the role's globs allow, where `*` stands for one path segment
//! (a SPIFFE ID `spiffe://prod.example/ns/*/sa/*` does not let `ns/a/b`
//! through). A certificate never outlives its CA.

use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use palisade_barrier::View;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use rustls_pki_types::PrivatePkcs8KeyDer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use super::{check_name, opt, opt_string, pem};
use crate::core::Authorized;
use crate::engines::kv::KeyLocks;
use crate::logical::{ApiError, Operation, Response, fields};

/// Vault backdates certificates by 30 s against clock skew.
const BACKDATE_SECS: i64 = 30;
/// Default safety buffer of `tidy`: certificates expired for longer are removed.
const TIDY_BUFFER_SECS: i64 = 72 * 3600;
/// How long a CRL is valid (Vault's `crl/config` default expiry).
const CRL_VALIDITY_SECS: i64 = 72 * 3600;
const MAX_NAMES: usize = 100;

// ------------------------------------------------------------ stored forms

#[derive(Clone, Serialize, Deserialize)]
struct Ca {
    /// PKCS#8 DER, base64.
    key: String,
    key_type: String,
    key_bits: u32,
    common_name: String,
    serial: String,
    not_before: i64,
    not_after: i64,
    certificate: String,
    /// The certificates above this CA, nearest first (an intermediate's
    /// issuer, up to its root), as `intermediate/set-signed` received them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    chain: Vec<String>,
}

impl Ca {
    /// This CA's certificate and the ones above it (`ca_chain`).
    fn chain_pems(&self) -> Vec<String> {
        std::iter::once(self.certificate.clone())
            .chain(self.chain.iter().cloned())
            .collect()
    }
}

/// `intermediate/generate`'s key, waiting for `intermediate/set-signed`.
#[derive(Clone, Serialize, Deserialize)]
struct PendingCa {
    /// PKCS#8 DER, base64.
    key: String,
    key_type: String,
    key_bits: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Role {
    allowed_domains: Vec<String>,
    allow_subdomains: bool,
    allow_bare_domains: bool,
    allow_glob_domains: bool,
    allow_localhost: bool,
    allow_any_name: bool,
    enforce_hostnames: bool,
    allowed_uri_sans: Vec<String>,
    allow_ip_sans: bool,
    server_flag: bool,
    client_flag: bool,
    key_type: String,
    key_bits: u32,
    ttl: i64,
    max_ttl: i64,
    no_store: bool,
    /// Vault's `generate_lease`: each certificate comes with a lease whose
    /// revocation (or the revocation of the token that asked) revokes it.
    #[serde(default)]
    generate_lease: bool,
}

/// `config/crl`.
#[derive(Clone, Serialize, Deserialize)]
struct CrlConfig {
    expiry: i64,
    disable: bool,
}

impl Default for CrlConfig {
    fn default() -> Self {
        Self {
            expiry: CRL_VALIDITY_SECS,
            disable: false,
        }
    }
}

/// `config/urls`: written into every certificate issued afterwards (CRL
/// distribution points; Authority Information Access for the others).
#[derive(Clone, Default, Serialize, Deserialize)]
struct Urls {
    issuing_certificates: Vec<String>,
    crl_distribution_points: Vec<String>,
    ocsp_servers: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct StoredCert {
    certificate: String,
    not_after: i64,
    #[serde(default)]
    revocation_time: i64,
    /// Serial of the CA that signed it: after `DELETE root` and a new
    /// root, the old CA's certificates can be neither revoked nor listed
    /// on the new CA's CRL.
    #[serde(default)]
    issuer: String,
}

// ------------------------------------------------------------ helpers

fn now_secs() -> i64 {
    palisade_core::now_nanos() / 1_000_000_000
}

fn time_at(secs: i64) -> Result<time::OffsetDateTime, ApiError> {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|_| ApiError::bad_request("time out of range"))
}

fn rc_err(e: rcgen::Error) -> ApiError {
    ApiError::internal(format!("certificate: {e}"))
}

fn decode<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(b).map_err(ApiError::internal)
}

fn encode<T: Serialize>(v: &T) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    serde_json::to_vec(v)
        .map(Zeroizing::new)
        .map_err(ApiError::internal)
}

fn opt_bool(d: &Map<String, Value>, name: &str, default: bool) -> Result<bool, ApiError> {
    opt(d, name).map_or(Ok(default), |v| fields::boolean(v, name))
}

fn list(d: &Map<String, Value>, name: &str) -> Result<Vec<String>, ApiError> {
    opt(d, name).map_or(Ok(Vec::new()), |v| fields::string_list(v, name))
}

/// A serial number as Vault writes it: lowercase hex pairs joined by `:`.
fn serial_text(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A serial from a path or body: Vault's `xx:xx` or `xx-xx` form, read
/// into the stored (colon, lowercase) form; anything else is refused.
fn parse_serial(s: &str) -> Result<(String, Vec<u8>), ApiError> {
    let bad = || ApiError::bad_request("invalid serial number");
    let parts: Vec<&str> = if s.contains(':') {
        s.split(':').collect()
    } else {
        s.split('-').collect()
    };
    if parts.is_empty() || parts.len() > 20 {
        return Err(bad());
    }
    let bytes = parts
        .iter()
        .map(|p| {
            if p.len() == 2 && p.bytes().all(|c| c.is_ascii_hexdigit()) {
                u8::from_str_radix(p, 16).map_err(|_| bad())
            } else {
                Err(bad())
            }
        })
        .collect::<Result<Vec<u8>, _>>()?;
    Ok((serial_text(&bytes), bytes))
}

fn storage_serial(serial: &str) -> String {
    serial.replace(':', "-")
}

/// The signature algorithm and key of a key type (Vault's `key_type` and
/// `key_bits`); `key_bits` 0 is the type's default.
fn key_spec(
    key_type: &str,
    key_bits: u32,
) -> Result<(&'static rcgen::SignatureAlgorithm, u32), ApiError> {
    match (key_type, key_bits) {
        ("rsa", 0 | 2048) => Ok((&rcgen::PKCS_RSA_SHA256, 2048)),
        ("rsa", 3072) => Ok((&rcgen::PKCS_RSA_SHA256, 3072)),
        ("rsa", 4096) => Ok((&rcgen::PKCS_RSA_SHA256, 4096)),
        ("ec", 0 | 256) => Ok((&rcgen::PKCS_ECDSA_P256_SHA256, 256)),
        ("ec", 384) => Ok((&rcgen::PKCS_ECDSA_P384_SHA384, 384)),
        ("ed25519", 0) => Ok((&rcgen::PKCS_ED25519, 0)),
        ("rsa" | "ec" | "ed25519", _) => Err(ApiError::bad_request(format!(
            "unsupported key_bits {key_bits} for key_type {key_type}"
        ))
        .audited_as("unsupported key_bits for the key type")),
        _ => Err(ApiError::bad_request(format!(
            "unknown key_type {key_type}: use rsa, ec or ed25519"
        ))
        .audited_as("unknown key_type: use rsa, ec or ed25519")),
    }
}

fn generate_key(key_type: &str, key_bits: u32) -> Result<KeyPair, ApiError> {
    let (alg, bits) = key_spec(key_type, key_bits)?;
    if key_type == "rsa" {
        let size = match bits {
            3072 => rcgen::RsaKeySize::_3072,
            4096 => rcgen::RsaKeySize::_4096,
            _ => rcgen::RsaKeySize::_2048,
        };
        KeyPair::generate_rsa_for(alg, size).map_err(rc_err)
    } else if key_type == "ed25519" {
        // PKCS#8 v1 (RFC 5208), which OpenSSL 3.0 and Python's
        // cryptography read; aws-lc's default v2 form they refuse
        let der = palisade_crypto::transit::generate(palisade_crypto::transit::KeyType::Ed25519, 0)
            .map_err(|_| ApiError::internal("ed25519 key generation failed"))?;
        KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(der.as_slice()), alg)
            .map_err(rc_err)
    } else {
        KeyPair::generate_for(alg).map_err(rc_err)
    }
}

async fn load_or_default<T: Default + for<'de> Deserialize<'de>>(
    view: &View,
    key: &str,
) -> Result<T, ApiError> {
    Ok(match view.get(key).await? {
        Some(b) => decode(&b)?,
        None => T::default(),
    })
}

/// A URL for `config/urls`: absolute http(s), in canonical form.
fn check_url(u: &str) -> Result<(), ApiError> {
    let ok = url::Url::parse(u)
        .ok()
        .is_some_and(|p| p.as_str() == u && matches!(p.scheme(), "http" | "https") && p.has_host());
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid URL {}: use an absolute http or https URL in canonical form",
            shown(u)
        ))
        .audited_as("invalid URL: use an absolute http or https URL in canonical form"))
    }
}

/// The Authority Information Access extension (RFC 5280 4.2.2.1): where
/// the issuer's certificate (caIssuers) and OCSP are.
fn aia_extension(urls: &Urls) -> Option<rcgen::CustomExtension> {
    if urls.issuing_certificates.is_empty() && urls.ocsp_servers.is_empty() {
        return None;
    }
    let methods: Vec<(&[u64], &String)> = urls
        .ocsp_servers
        .iter()
        .map(|u| (&[1u64, 3, 6, 1, 5, 5, 7, 48, 1][..], u))
        .chain(
            urls.issuing_certificates
                .iter()
                .map(|u| (&[1u64, 3, 6, 1, 5, 5, 7, 48, 2][..], u)),
        )
        .collect();
    let der = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            for (oid, url) in &methods {
                w.next().write_sequence(|w| {
                    w.next()
                        .write_oid(&yasna::models::ObjectIdentifier::from_slice(oid));
                    w.next()
                        .write_tagged_implicit(yasna::Tag::context(6), |w| w.write_ia5_string(url));
                });
            }
        });
    });
    Some(rcgen::CustomExtension::from_oid_content(
        &[1, 3, 6, 1, 5, 5, 7, 1, 1],
        der,
    ))
}

async fn load_ca(view: &View) -> Result<Option<Ca>, ApiError> {
    Ok(match view.get("ca").await? {
        Some(b) => Some(decode(&b)?),
        None => None,
    })
}

async fn require_ca(view: &View) -> Result<Ca, ApiError> {
    load_ca(view).await?.ok_or_else(|| {
        ApiError::bad_request("no CA is configured at this mount: generate one with root/generate")
    })
}

/// The CA's parameters as its certificate was made from them: the issuer
/// of every certificate and CRL it signs (same name, same key identifier).
/// Parsed CA signers (key and certificate), per mount, kept while the
/// server is unsealed (cleared at seal, like every key): parsing them for
/// each certificate was the largest cost of `issue` after signing.
#[derive(Default)]
pub struct Issuers {
    map: std::sync::Mutex<std::collections::HashMap<String, (String, CachedIssuer)>>,
}

type CachedIssuer = std::sync::Arc<Issuer<'static, KeyPair>>;

impl Issuers {
    /// The signer of this mount's CA `ca` (built once per CA).
    fn get(&self, view: &View, ca: &Ca) -> Result<CachedIssuer, ApiError> {
        if let Ok(m) = self.map.lock()
            && let Some((serial, i)) = m.get(view.prefix())
            && *serial == ca.serial
        {
            return Ok(i.clone());
        }
        let i = std::sync::Arc::new(issuer(ca)?);
        if let Ok(mut m) = self.map.lock() {
            m.insert(view.prefix().to_owned(), (ca.serial.clone(), i.clone()));
        }
        Ok(i)
    }

    /// Forget every signer (at seal).
    pub fn clear(&self) {
        if let Ok(mut m) = self.map.lock() {
            m.clear();
        }
    }
}

/// A CA certificate's path length constraint (`None`: unconstrained).
fn ca_path_len(ca: &Ca) -> Result<Option<u32>, ApiError> {
    let der = pem_der(&ca.certificate)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(ApiError::internal)?;
    Ok(cert
        .basic_constraints()
        .ok()
        .flatten()
        .and_then(|bc| bc.value.path_len_constraint))
}

/// How a CA's subject key identifier is written into what it signs: the
/// identifier in its certificate if it has one, else SHA-256 of its key.
fn ca_key_id(ca: &Ca) -> Result<KeyIdMethod, ApiError> {
    let der = pem_der(&ca.certificate)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(ApiError::internal)?;
    for ext in cert.extensions() {
        if let x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) =
            ext.parsed_extension()
        {
            return Ok(KeyIdMethod::PreSpecified(k.0.to_vec()));
        }
    }
    Ok(KeyIdMethod::Sha256)
}

/// The issuer of everything this CA signs, read from its own certificate
/// (subject and key identifier byte for byte, whoever signed it).
fn issuer(ca: &Ca) -> Result<Issuer<'static, KeyPair>, ApiError> {
    let der = pem_der(&ca.certificate)?;
    Issuer::from_ca_cert_der(&rustls_pki_types::CertificateDer::from(der), ca_key(ca)?)
        .map_err(rc_err)
}

fn ca_params(ca: &Ca) -> Result<CertificateParams, ApiError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, ca.common_name.as_str());
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = time_at(ca.not_before)?;
    p.not_after = time_at(ca.not_after)?;
    p.key_identifier_method = KeyIdMethod::Sha256;
    let (_, serial) = parse_serial(&ca.serial)?;
    p.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(p)
}

fn ca_key(ca: &Ca) -> Result<KeyPair, ApiError> {
    let (alg, _) = key_spec(&ca.key_type, ca.key_bits)?;
    let der = Zeroizing::new(STANDARD.decode(&ca.key).map_err(ApiError::internal)?);
    KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(der.as_slice()), alg)
        .map_err(rc_err)
}

/// A random positive 20-byte serial (RFC 5280's maximum), never zero.
fn new_serial() -> Vec<u8> {
    let mut s = palisade_crypto::random_bytes(20);
    s[0] = (s[0] & 0x7f) | 0x01;
    s
}

// ------------------------------------------------------------ routing

/// Existence check for the ACL (Vault's): writing a role that does not
/// exist needs `create`, changing one needs `update`.
pub async fn exists(rel: &str, view: &View) -> Result<bool, ApiError> {
    if let Some(name) = rel.strip_prefix("roles/")
        && check_name(name).is_ok()
    {
        return Ok(view.get(&format!("roles/{name}")).await?.is_some());
    }
    Ok(true)
}

/// Paths of this engine that need `sudo` besides their capability
/// (Vault's): `root`, whose DELETE removes the CA.
pub fn needs_sudo(rel: &str) -> bool {
    rel == "root"
}

/// Fields of Vault's roles and issue requests this engine does not
/// implement. Each one restricts or shapes a certificate, so a value other
/// than its empty default is refused rather than silently dropped.
const UNSUPPORTED: &[&str] = &[
    "allowed_ip_sans_cidr",
    "ext_key_usage",
    "ext_key_usage_oids",
    "allowed_serial_numbers",
    "not_after",
    "not_before_duration",
    "policy_identifiers",
    "basic_constraints_valid_for_non_ca",
    "allowed_other_sans",
    "allowed_user_ids",
    "user_ids",
    "other_sans",
    "exclude_cn_from_sans",
    "allowed_domains_template",
    "allowed_uri_sans_template",
    "cn_validations",
    "organization",
    "ou",
    "country",
    "locality",
    "province",
    "street_address",
    "postal_code",
    "serial_number_source",
    "remove_roots_from_chain",
    "use_pss",
    "signature_bits",
];

/// Vault's default `key_usage`: the only value accepted (it is what the
/// engine writes).
const DEFAULT_KEY_USAGE: [&str; 3] = ["digitalsignature", "keyagreement", "keyencipherment"];

fn refuse_unsupported(d: &Map<String, Value>) -> Result<(), ApiError> {
    for f in UNSUPPORTED {
        let empty = match d.get(*f) {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => !b,
            Some(Value::String(s)) => s.is_empty() || s == "false" || s == "0" || s == "0s",
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::Object(o)) => o.is_empty(),
        };
        if !empty {
            return Err(ApiError::bad_request(format!(
                "{f} is not supported by this PKI engine: a certificate is never made without it"
            )));
        }
    }
    if let Some(v) = opt(d, "key_usage") {
        let mut given: Vec<String> = fields::string_list(v, "key_usage")?
            .into_iter()
            .map(|k| k.to_ascii_lowercase())
            .collect();
        given.sort();
        if !given.is_empty() && given != DEFAULT_KEY_USAGE {
            return Err(ApiError::bad_request(
                "key_usage is not supported by this PKI engine beyond Vault's default (DigitalSignature, KeyAgreement, KeyEncipherment)",
            ));
        }
    }
    if let Some(f) = opt_string(d, "format")?
        && f != "pem"
    {
        return Err(ApiError::bad_request("format: only pem is supported"));
    }
    if let Some(f) = opt_string(d, "private_key_format")?
        && f != "pem"
        && f != "pkcs8"
        && !f.is_empty()
    {
        return Err(ApiError::bad_request(
            "private_key_format: only pkcs8 (pem) is supported",
        ));
    }
    Ok(())
}

/// A request value quoted in an error, cut short (an error never returns
/// megabytes of the caller's input).
fn shown(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

pub async fn handle(
    auth: &Authorized,
    rel: &str,
    view: &View,
    locks: &KeyLocks,
    ttls: (i64, i64),
    lease: crate::lease::LeaseCtx<'_>,
    issuers: &Issuers,
) -> Result<Response, ApiError> {
    let req = auth.request();
    let d = &req.data;
    let parts: Vec<&str> = rel.split('/').collect();
    match (req.operation, parts.as_slice()) {
        (Operation::Write, ["root", "generate", kind]) => {
            let _g = locks.lock(view, "ca").await;
            root_generate(d, view, kind, ttls).await
        }
        (Operation::Write, ["intermediate", "generate", kind]) => {
            let _g = locks.lock(view, "ca").await;
            intermediate_generate(d, view, kind).await
        }
        (Operation::Write, ["root", "sign-intermediate"]) => {
            let _g = locks.lock(view, "ca").await;
            sign_intermediate(d, view, ttls, issuers).await
        }
        (Operation::Write, ["intermediate", "set-signed"]) => {
            let _g = locks.lock(view, "ca").await;
            set_signed(d, view).await
        }
        (Operation::Delete, ["root"]) => {
            let _g = locks.lock(view, "ca").await;
            view.delete("ca").await?;
            view.delete(CRL_CACHE).await?;
            Ok(Response::no_content())
        }
        (Operation::Read, _) if is_public(Operation::Read, rel) => {
            public_read(rel, view, locks, issuers).await
        }
        (Operation::List, ["certs"] | ["certs", ""]) => {
            let mut keys: Vec<String> = view
                .list("certs/")
                .await?
                .into_iter()
                .map(|k| k.replace('-', ":"))
                .collect();
            keys.sort();
            if keys.is_empty() {
                return Err(ApiError::not_found());
            }
            Ok(Response::data(json!({ "keys": keys })))
        }
        (Operation::List, ["roles"] | ["roles", ""]) => {
            let keys = view.list("roles/").await?;
            if keys.is_empty() {
                return Err(ApiError::not_found());
            }
            Ok(Response::data(json!({ "keys": keys })))
        }
        (Operation::Read, ["roles", name]) => {
            let name = check_name(name)?;
            match view.get(&format!("roles/{name}")).await? {
                Some(b) => Ok(Response::data(role_json(&decode::<Role>(&b)?))),
                None => Err(ApiError::not_found()),
            }
        }
        (Operation::Write, ["roles", name]) => {
            refuse_unsupported(d)?;
            write_role(d, view, check_name(name)?, ttls).await
        }
        (Operation::Delete, ["roles", name]) => {
            view.delete(&format!("roles/{}", check_name(name)?)).await?;
            Ok(Response::no_content())
        }
        (Operation::Write, ["issue", role]) => {
            refuse_unsupported(d)?;
            issue_or_sign(d, view, check_name(role)?, ttls, false, &lease, issuers).await
        }
        (Operation::Write, ["sign", role]) => {
            refuse_unsupported(d)?;
            issue_or_sign(d, view, check_name(role)?, ttls, true, &lease, issuers).await
        }
        (Operation::Write, ["revoke"]) => {
            let _g = locks.lock(view, "ca").await;
            revoke(d, view).await
        }
        (Operation::Read, ["crl", "rotate"]) => {
            let _g = locks.lock(view, "ca").await;
            rebuild_crl(view, issuers).await?;
            Ok(Response::data(json!({"success": true})))
        }
        (Operation::Write, ["tidy"]) => tidy(d, view).await,
        (Operation::Read, ["config", "crl"]) => {
            let c: CrlConfig = load_or_default(view, "config/crl").await?;
            Ok(Response::data(json!({
                "expiry": format!("{}s", c.expiry),
                "disable": c.disable,
                "ocsp_disable": true,
                "auto_rebuild": false,
                "enable_delta": false,
            })))
        }
        (Operation::Write, ["config", "crl"]) => {
            let mut c: CrlConfig = load_or_default(view, "config/crl").await?;
            if let Some(v) = opt(d, "expiry") {
                let e = fields::duration_secs(v, "expiry")?;
                if e == 0 {
                    return Err(ApiError::bad_request("expiry must be a positive duration"));
                }
                c.expiry = e;
            }
            c.disable = opt_bool(d, "disable", c.disable)?;
            let _g = locks.lock(view, "ca").await;
            view.put("config/crl", &encode(&c)?).await?;
            view.delete(CRL_CACHE).await?;
            Ok(Response::no_content())
        }
        (Operation::Read, ["config", "urls"]) => {
            let u: Urls = load_or_default(view, "config/urls").await?;
            Ok(Response::data(json!({
                "issuing_certificates": u.issuing_certificates,
                "crl_distribution_points": u.crl_distribution_points,
                "ocsp_servers": u.ocsp_servers,
                "enable_templating": false,
            })))
        }
        (Operation::Write, ["config", "urls"]) => {
            let mut u: Urls = load_or_default(view, "config/urls").await?;
            for (field, slot) in [
                ("issuing_certificates", &mut u.issuing_certificates),
                ("crl_distribution_points", &mut u.crl_distribution_points),
                ("ocsp_servers", &mut u.ocsp_servers),
            ] {
                if opt(d, field).is_some() {
                    let v = list(d, field)?;
                    for url in &v {
                        check_url(url)?;
                    }
                    *slot = v;
                }
            }
            view.put("config/urls", &encode(&u)?).await?;
            Ok(Response::no_content())
        }
        (
            _,
            ["root", "generate", _]
            | ["root"]
            | ["ca" | "ca_chain" | "crl" | "certs" | "roles"]
            | ["ca" | "crl", _]
            | ["cert" | "roles" | "issue" | "sign", _]
            | ["revoke" | "tidy"]
            | ["config", "crl" | "urls"],
        ) => Err(ApiError::unsupported_operation()),
        _ => Err(ApiError::unsupported_path()),
    }
}

fn pem_der(p: &str) -> Result<Vec<u8>, ApiError> {
    let body: String = p.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).map_err(ApiError::internal)
}

// ------------------------------------------------------------ CA

/// A requested TTL: `ttl` (or `default`), never above `max`: a longer one
/// is capped at `max` with Vault's warning (`getCertificateNotAfter`).
fn ttl_field(
    d: &Map<String, Value>,
    default: i64,
    max: i64,
) -> Result<(i64, Option<String>), ApiError> {
    let ttl = match opt(d, "ttl") {
        Some(v) => fields::duration_secs(v, "ttl")?,
        None => 0,
    };
    let ttl = if ttl == 0 { default } else { ttl };
    if max > 0 && ttl > max {
        let f = crate::token::format_duration;
        return Ok((
            max,
            Some(format!(
                "TTL {:?} is longer than permitted maxTTL {:?}, so maxTTL is being used",
                f(ttl),
                f(max)
            )),
        ));
    }
    Ok((ttl, None))
}

async fn root_generate(
    d: &Map<String, Value>,
    view: &View,
    kind: &str,
    (_, mount_max): (i64, i64),
) -> Result<Response, ApiError> {
    let (exported, common_name, key_type, key_bits) = ca_request(d, kind)?;
    let (ttl, ttl_warning) = ttl_field(d, mount_max, mount_max)?;
    if load_ca(view).await?.is_some() {
        return Err(ApiError::bad_request(
            "a CA is already configured at this mount: delete it (DELETE root) before generating another",
        ));
    }
    let now = now_secs();
    let serial = new_serial();
    let mut ca = Ca {
        key: String::new(),
        key_type: key_type.clone(),
        key_bits,
        common_name,
        serial: serial_text(&serial),
        not_before: now - BACKDATE_SECS,
        not_after: now + ttl,
        certificate: String::new(),
        chain: Vec::new(),
    };
    let kt = key_type.clone();
    let key = tokio::task::spawn_blocking(move || generate_key(&kt, key_bits))
        .await
        .map_err(|e| ApiError::internal(format!("key generation: {e}")))??;
    let params = ca_params(&ca)?;
    let cert = params.self_signed(&key).map_err(rc_err)?;
    let pkcs8 = Zeroizing::new(key.serialize_der());
    ca.key = STANDARD.encode(&pkcs8[..]);
    ca.certificate = cert.pem();
    view.put("ca", &encode(&ca)?).await?;
    // the CA's certificate is in the store too (Vault lists it under certs)
    let stored = StoredCert {
        certificate: ca.certificate.clone(),
        not_after: ca.not_after,
        revocation_time: 0,
        issuer: ca.serial.clone(),
    };
    view.put(
        &format!("certs/{}", storage_serial(&ca.serial)),
        &encode(&stored)?,
    )
    .await?;
    let mut out = json!({
        "certificate": ca.certificate,
        "issuing_ca": ca.certificate,
        "serial_number": ca.serial,
        "expiration": ca.not_after,
        "key_type": key_type,
    });
    if exported && let Some(o) = out.as_object_mut() {
        o.insert("private_key".into(), json!(pem("PRIVATE KEY", &pkcs8)));
        o.insert("private_key_type".into(), json!(ca.key_type));
    }
    let mut resp = Response::data(out);
    if let Some(w) = ttl_warning {
        resp = resp.warn(w);
    }
    Ok(resp)
}

// ------------------------------------------------------------ intermediates

/// What `root/generate/:kind` and `intermediate/generate/:kind` both take:
/// `internal` or `exported`, the CA's common name, its key type and size.
fn ca_request(d: &Map<String, Value>, kind: &str) -> Result<(bool, String, String, u32), ApiError> {
    let exported = match kind {
        "internal" => false,
        "exported" => true,
        _ => {
            return Err(ApiError::bad_request(
                "invalid type: use internal or exported",
            ));
        }
    };
    let common_name = opt_string(d, "common_name")?
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad_request("the common_name field is required"))?;
    if common_name.len() > 64 || common_name.chars().any(char::is_control) {
        return Err(ApiError::bad_request("invalid common_name"));
    }
    let key_type = opt_string(d, "key_type")?.unwrap_or_else(|| "rsa".into());
    let key_bits = match opt(d, "key_bits") {
        Some(v) => u32::try_from(fields::int(v, "key_bits")?)
            .map_err(|_| ApiError::bad_request("invalid key_bits"))?,
        None => 0,
    };
    let (_, key_bits) = key_spec(&key_type, key_bits)?;
    Ok((exported, common_name, key_type, key_bits))
}

/// `intermediate/generate/internal|exported`: a key for this mount's CA and
/// a CSR for it; the key waits (`ca-pending`) for the signed certificate.
async fn intermediate_generate(
    d: &Map<String, Value>,
    view: &View,
    kind: &str,
) -> Result<Response, ApiError> {
    let (exported, common_name, key_type, key_bits) = ca_request(d, kind)?;
    if load_ca(view).await?.is_some() {
        return Err(ApiError::bad_request(
            "a CA is already configured at this mount: delete it (DELETE root) before generating another",
        ));
    }
    let kt = key_type.clone();
    let key = tokio::task::spawn_blocking(move || generate_key(&kt, key_bits))
        .await
        .map_err(|e| ApiError::internal(format!("key generation: {e}")))??;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name.as_str());
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key).map_err(rc_err)?;
    let csr_pem = csr.pem().map_err(rc_err)?;
    let pkcs8 = Zeroizing::new(key.serialize_der());
    let pending = PendingCa {
        key: STANDARD.encode(&pkcs8[..]),
        key_type: key_type.clone(),
        key_bits,
    };
    view.put("ca-pending", &encode(&pending)?).await?;
    let mut out = json!({ "csr": csr_pem, "key_type": key_type });
    if exported && let Some(o) = out.as_object_mut() {
        o.insert("private_key".into(), json!(pem("PRIVATE KEY", &pkcs8)));
        o.insert("private_key_type".into(), json!(key_type));
    }
    Ok(Response::data(out))
}

/// `root/sign-intermediate`: this mount's CA signs another CA's CSR. The
/// certificate is a CA (`max_path_length`: its path length constraint,
/// -1 none), never outlives this CA (capped, with a warning), and names the
/// `common_name` given (or the CSR's, with `use_csr_values`).
async fn sign_intermediate(
    d: &Map<String, Value>,
    view: &View,
    (_, mount_max): (i64, i64),
    issuers: &Issuers,
) -> Result<Response, ApiError> {
    let ca = require_ca(view).await?;
    let text = opt_string(d, "csr")?
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad_request("the csr field is required"))?;
    let csr = parse_csr(&text, None)?;
    let use_csr = match opt(d, "use_csr_values") {
        Some(v) => fields::boolean(v, "use_csr_values")?,
        None => false,
    };
    let body_cn = opt_string(d, "common_name")?.filter(|c| !c.is_empty());
    let common_name = match (use_csr, body_cn, csr.common_name.clone()) {
        (true, _, Some(c)) | (false, None, Some(c)) => c,
        (_, Some(b), _) => b,
        _ => return Err(ApiError::bad_request("the common_name field is required")),
    };
    if common_name.len() > 64 || common_name.chars().any(char::is_control) {
        return Err(ApiError::bad_request("invalid common_name"));
    }
    let mut path_len = match opt(d, "max_path_length") {
        Some(v) => fields::int(v, "max_path_length")?,
        None => -1,
    };
    // the signing CA's own path length limits what it signs (OpenBao's rule
    // and text): at 0 it signs no CA, else at most one less
    if let Some(limit) = ca_path_len(&ca)? {
        if limit == 0 {
            return Err(ApiError::bad_request(
                "signing certificate has a max path length of zero, and cannot issue further CA certificates",
            ));
        }
        let most = i64::from(limit) - 1;
        if path_len < 0 || path_len > most {
            path_len = most;
        }
    }
    let (mut ttl, mut warnings) = {
        let (t, w) = ttl_field(d, mount_max, mount_max)?;
        (t, w.into_iter().collect::<Vec<_>>())
    };
    let now = now_secs();
    if now + ttl > ca.not_after {
        ttl = ca.not_after - now;
        warnings
            .push("the certificate's validity is capped at the signing CA's expiration".to_owned());
    }
    if ttl <= 0 {
        return Err(ApiError::bad_request("the signing CA has expired"));
    }
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name.as_str());
    params.distinguished_name = dn;
    params.is_ca = match u8::try_from(path_len) {
        Ok(n) => IsCa::Ca(BasicConstraints::Constrained(n)),
        Err(_) if path_len < 0 => IsCa::Ca(BasicConstraints::Unconstrained),
        Err(_) => return Err(ApiError::bad_request("invalid max_path_length")),
    };
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = time_at(now - BACKDATE_SECS)?;
    params.not_after = time_at(now + ttl)?;
    let serial = new_serial();
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.use_authority_key_identifier_extension = true;
    params.key_identifier_method = KeyIdMethod::Sha256;
    let urls: Urls = load_or_default(view, "config/urls").await?;
    if !urls.crl_distribution_points.is_empty() {
        params.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
            uris: urls.crl_distribution_points.clone(),
        }];
    }
    params.custom_extensions.extend(aia_extension(&urls));
    let signer = issuers.get(view, &ca)?;
    let key = csr.key;
    let cert_pem = tokio::task::spawn_blocking(move || -> Result<String, ApiError> {
        let cert = params.signed_by(&key, &*signer).map_err(rc_err)?;
        Ok(cert.pem())
    })
    .await
    .map_err(|e| ApiError::internal(format!("sign-intermediate: {e}")))??;
    let serial_s = serial_text(&serial);
    let stored = StoredCert {
        certificate: cert_pem.clone(),
        not_after: now + ttl,
        revocation_time: 0,
        issuer: ca.serial.clone(),
    };
    view.put(
        &format!("certs/{}", storage_serial(&serial_s)),
        &encode(&stored)?,
    )
    .await?;
    let mut resp = Response::data(json!({
        "certificate": cert_pem,
        "issuing_ca": ca.certificate,
        "ca_chain": std::iter::once(cert_pem.clone()).chain(ca.chain_pems()).collect::<Vec<_>>(),
        "serial_number": serial_s,
        "expiration": now + ttl,
    }));
    for w in warnings {
        resp = resp.warn(w);
    }
    Ok(resp)
}

/// `intermediate/set-signed`: the certificate for the pending key (and,
/// after it, the certificates above it) becomes this mount's CA. It must
/// hold the pending key's public key, be a CA and be valid now.
async fn set_signed(d: &Map<String, Value>, view: &View) -> Result<Response, ApiError> {
    let bundle = opt_string(d, "certificate")?
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad_request("the certificate field is required"))?;
    let Some(pending) = view.get("ca-pending").await? else {
        return Err(ApiError::bad_request(
            "no pending intermediate key at this mount: generate one with intermediate/generate",
        ));
    };
    let pending: PendingCa = decode(&pending)?;
    if load_ca(view).await?.is_some() {
        return Err(ApiError::bad_request(
            "a CA is already configured at this mount: delete it (DELETE root) first",
        ));
    }
    let bad = |m: &str| ApiError::bad_request(format!("invalid certificate: {m}"));
    let ders: Vec<Vec<u8>> = rustls_pki_types::pem::PemObject::pem_slice_iter(bundle.as_bytes())
        .map(|c: Result<rustls_pki_types::CertificateDer<'static>, _>| {
            c.map(|c| c.to_vec())
                .map_err(|_| bad("not a PEM certificate bundle"))
        })
        .collect::<Result<_, _>>()?;
    let Some(first) = ders.first() else {
        return Err(bad("no certificate in it"));
    };
    if ders.len() > 10 {
        return Err(bad("more than 10 certificates"));
    }
    let (rest, cert) =
        x509_parser::parse_x509_certificate(first).map_err(|_| bad("it cannot be parsed"))?;
    if !rest.is_empty() {
        return Err(bad("bytes follow the certificate"));
    }
    let key = ca_key(&Ca {
        key: pending.key.clone(),
        key_type: pending.key_type.clone(),
        key_bits: pending.key_bits,
        common_name: String::new(),
        serial: String::new(),
        not_before: 0,
        not_after: 0,
        certificate: String::new(),
        chain: Vec::new(),
    })?;
    if cert.public_key().subject_public_key.data.as_ref() != rcgen::PublicKeyData::der_bytes(&key) {
        return Err(bad(
            "it is not for the key intermediate/generate made at this mount",
        ));
    }
    if !cert.is_ca() {
        return Err(bad("it is not a CA certificate"));
    }
    // a CA that may not sign certificates or CRLs would fail every issue
    // and every CRL later: refused now
    if let Ok(Some(ku)) = cert.key_usage()
        && !(ku.value.key_cert_sign() && ku.value.crl_sign())
    {
        return Err(bad(
            "its key usage does not allow signing certificates and CRLs",
        ));
    }
    // what follows it must be its issuer, then that one's, and so on
    let mut child = cert.issuer().as_raw().to_vec();
    for (i, der) in ders[1..].iter().enumerate() {
        let (_, parent) = x509_parser::parse_x509_certificate(der)
            .map_err(|_| bad("a certificate of the chain cannot be parsed"))?;
        if parent.subject().as_raw() != child.as_slice() {
            return Err(bad(&format!(
                "certificate {} of the bundle is not the issuer of the one before it",
                i + 2
            )));
        }
        child = parent.issuer().as_raw().to_vec();
    }
    let now = now_secs();
    let (nb, na) = (
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    );
    if nb > now || na <= now {
        return Err(bad("it is not valid now"));
    }
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let chain: Vec<String> = ders[1..].iter().map(|d| pem("CERTIFICATE", d)).collect();
    let serial = serial_text(cert.raw_serial());
    let ca = Ca {
        key: pending.key,
        key_type: pending.key_type,
        key_bits: pending.key_bits,
        common_name,
        serial: serial.clone(),
        not_before: nb,
        not_after: na,
        certificate: pem("CERTIFICATE", first),
        chain,
    };
    // it must be usable as a signer (a subject rcgen cannot rewrite, e.g.
    // a multi-valued RDN, would break every issue and CRL later)
    issuer(&ca)
        .map_err(|_| bad("this engine cannot sign with it (its subject or key identifier)"))?;
    let stored = StoredCert {
        certificate: ca.certificate.clone(),
        not_after: na,
        revocation_time: 0,
        issuer: ca.serial.clone(),
    };
    view.transaction(vec![
        palisade_barrier::BarrierOp::Put {
            path: "ca".into(),
            value: encode(&ca)?.to_vec(),
        },
        palisade_barrier::BarrierOp::Put {
            path: format!("certs/{}", storage_serial(&serial)),
            value: encode(&stored)?.to_vec(),
        },
        palisade_barrier::BarrierOp::Delete {
            path: "ca-pending".into(),
        },
    ])
    .await?;
    let mut resp = Response::data(json!({
        "imported_issuers": [serial],
        "imported_keys": Value::Null,
        "existing_issuers": Value::Null,
        "existing_keys": Value::Null,
    }));
    if ca.chain.is_empty() {
        resp = resp.warn("no certificate above this CA was given: ca_chain holds only this CA");
    }
    Ok(resp)
}

// ------------------------------------------------------------ roles

fn role_json(r: &Role) -> Value {
    json!({
        "allowed_domains": r.allowed_domains,
        "allow_subdomains": r.allow_subdomains,
        "allow_bare_domains": r.allow_bare_domains,
        "allow_glob_domains": r.allow_glob_domains,
        "allow_localhost": r.allow_localhost,
        "allow_any_name": r.allow_any_name,
        "enforce_hostnames": r.enforce_hostnames,
        "allow_wildcard_certificates": false,
        "allowed_uri_sans": r.allowed_uri_sans,
        "allow_ip_sans": r.allow_ip_sans,
        "server_flag": r.server_flag,
        "client_flag": r.client_flag,
        "key_type": r.key_type,
        "key_bits": r.key_bits,
        "ttl": r.ttl,
        "max_ttl": r.max_ttl,
        "no_store": r.no_store,
        "generate_lease": r.generate_lease,
    })
}

async fn write_role(
    d: &Map<String, Value>,
    view: &View,
    name: &str,
    (_, mount_max): (i64, i64),
) -> Result<Response, ApiError> {
    if opt_bool(d, "allow_wildcard_certificates", false)? {
        return Err(ApiError::bad_request(
            "allow_wildcard_certificates is not supported: wildcard certificates are never issued",
        ));
    }
    let key_type = opt_string(d, "key_type")?.unwrap_or_else(|| "rsa".into());
    let key_bits = match opt(d, "key_bits") {
        Some(v) => u32::try_from(fields::int(v, "key_bits")?)
            .map_err(|_| ApiError::bad_request("invalid key_bits"))?,
        None => 0,
    };
    let (_, key_bits) = key_spec(&key_type, key_bits)?;
    let secs = |f: &str| opt(d, f).map_or(Ok(0), |v| fields::duration_secs(v, f));
    let (ttl, max_ttl) = (secs("ttl")?, secs("max_ttl")?);
    if max_ttl > 0 && ttl > max_ttl {
        return Err(ApiError::bad_request("ttl cannot be larger than max_ttl"));
    }
    if mount_max > 0 && max_ttl > mount_max {
        return Err(ApiError::bad_request(
            "max_ttl cannot be larger than the mount's max_lease_ttl",
        ));
    }
    let allowed_domains = list(d, "allowed_domains")?;
    for dom in &allowed_domains {
        if dom.is_empty()
            || dom
                .bytes()
                .any(|c| c.is_ascii_uppercase() || c.is_ascii_whitespace() || c.is_ascii_control())
        {
            return Err(ApiError::bad_request(
                "allowed_domains must be lowercase names without spaces",
            ));
        }
    }
    let allowed_uri_sans = list(d, "allowed_uri_sans")?;
    for u in &allowed_uri_sans {
        if !u.contains("://")
            || u.bytes()
                .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
        {
            return Err(ApiError::bad_request(
                "allowed_uri_sans must be URIs (globs with * for one path segment)",
            ));
        }
    }
    let role = Role {
        allowed_domains,
        allow_subdomains: opt_bool(d, "allow_subdomains", false)?,
        allow_bare_domains: opt_bool(d, "allow_bare_domains", false)?,
        allow_glob_domains: opt_bool(d, "allow_glob_domains", false)?,
        allow_localhost: opt_bool(d, "allow_localhost", true)?,
        allow_any_name: opt_bool(d, "allow_any_name", false)?,
        enforce_hostnames: opt_bool(d, "enforce_hostnames", true)?,
        allowed_uri_sans,
        allow_ip_sans: opt_bool(d, "allow_ip_sans", true)?,
        server_flag: opt_bool(d, "server_flag", true)?,
        client_flag: opt_bool(d, "client_flag", true)?,
        key_type,
        key_bits,
        ttl,
        max_ttl,
        no_store: opt_bool(d, "no_store", false)?,
        generate_lease: opt_bool(d, "generate_lease", false)?,
    };
    if role.generate_lease && role.no_store {
        return Err(ApiError::bad_request(
            "generate_lease cannot be used with no_store: a leased certificate must be stored to be revoked",
        ));
    }
    view.put(&format!("roles/{name}"), &encode(&role)?).await?;
    Ok(Response::no_content())
}

// ------------------------------------------------------------ names

/// A hostname as RFC 1123 writes it, lowercase: labels of letters, digits
/// and `-` (not at either end), at most 63 bytes each and 253 in all.
fn is_hostname(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        })
}

/// go-glob's match (Vault's `allow_glob_domains`): `*` matches any run of
/// characters, dots included.
fn glob_any(pattern: &str, name: &str) -> bool {
    glob(pattern.as_bytes(), name.as_bytes(), None)
}

/// `*` matches any run of characters except `sep` (when given).
fn glob(p: &[u8], s: &[u8], sep: Option<u8>) -> bool {
    // iterative matcher with backtracking to the last star
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star
            && sep != Some(s[ss])
        {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// Whether the role lets a certificate carry this name (the common name
/// when `is_cn`, else an `alt_names` entry). `Ok(true)`: it goes into the
/// DNS SANs; `Ok(false)`: a common name that is not a hostname, allowed by
/// `enforce_hostnames = false`, kept in the subject only (as Vault).
fn dns_allowed(role: &Role, name: &str, is_cn: bool) -> Result<bool, ApiError> {
    let shown_name = shown(name);
    let refuse = || {
        ApiError::bad_request(format!("name {shown_name} not allowed by this role"))
            .audited_as("a name is not allowed by this role")
    };
    if name.len() > 253 || (is_cn && name.len() > 64) {
        return Err(ApiError::bad_request(
            "name too long: a common name has at most 64 characters, a DNS name 253",
        ));
    }
    // printable ASCII only; a space only inside a common name
    if name
        .bytes()
        .any(|c| !((0x21..=0x7e).contains(&c) || (is_cn && c == b' ')))
    {
        return Err(ApiError::bad_request(
            "a name may only hold printable ASCII characters",
        ));
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err(ApiError::bad_request(format!(
            "name {shown_name} is an IP address: give it in ip_sans"
        ))
        .audited_as("a name is an IP address: give it in ip_sans"));
    }
    if name.contains('*') {
        return Err(ApiError::bad_request(format!(
            "name {shown_name} not allowed by this role: wildcard certificates are never issued"
        ))
        .audited_as("wildcard certificates are never issued"));
    }
    let hostname = is_hostname(name);
    if !hostname && (role.enforce_hostnames || !is_cn) {
        return Err(ApiError::bad_request(format!(
            "name {shown_name} is not a valid lowercase hostname"
        ))
        .audited_as("a name is not a valid lowercase hostname"));
    }
    if role.allow_localhost && (name == "localhost" || name == "localdomain") {
        return Ok(hostname);
    }
    if role.allow_any_name {
        return Ok(hostname);
    }
    for d in &role.allowed_domains {
        if role.allow_bare_domains && name == d {
            return Ok(hostname);
        }
        if role.allow_subdomains
            && !d.contains('*')
            && name.len() > d.len() + 1
            && name.ends_with(d.as_str())
            && name.as_bytes()[name.len() - d.len() - 1] == b'.'
        {
            return Ok(hostname);
        }
        if role.allow_glob_domains && d.contains('*') && glob_any(d, name) {
            return Ok(hostname);
        }
    }
    Err(refuse())
}

/// Whether the role lets a certificate carry this URI: one of
/// `allowed_uri_sans`, where `*` matches within one path segment.
fn uri_allowed(role: &Role, uri: &str) -> Result<(), ApiError> {
    if uri.len() > 2048 {
        return Err(ApiError::bad_request(
            "a URI SAN has at most 2048 characters",
        ));
    }
    // no empty path segment: a `*` would match it
    let plain = !uri.contains(['?', '#', '%']);
    let canonical = plain
        && url::Url::parse(uri).ok().is_some_and(|u| {
            u.as_str() == uri
                && u.has_host()
                && !u.path().contains("//")
                && !u.path().ends_with('/')
        });
    if !canonical {
        return Err(ApiError::bad_request(format!(
            "invalid URI SAN {}: it must be an absolute URI in canonical form, without query, fragment or percent-encoding", shown(uri)
        ))
        .audited_as("invalid URI SAN: it must be an absolute URI in canonical form, without query, fragment or percent-encoding"));
    }
    if role
        .allowed_uri_sans
        .iter()
        .any(|p| glob(p.as_bytes(), uri.as_bytes(), Some(b'/')))
    {
        return Ok(());
    }
    Err(
        ApiError::bad_request(format!("URI SAN {} not allowed by this role", shown(uri)))
            .audited_as("a URI SAN is not allowed by this role"),
    )
}

// ------------------------------------------------------------ issue

/// What a CSR brings to `sign/:role`: its (verified) public key and the
/// names it asks for. Nothing else of it is used: key usages, extended key
/// usages and basic constraints come from the role, as for `issue`.
struct Csr {
    key: rcgen::PublicKey,
    common_name: Option<String>,
    dns: Vec<String>,
    ips: Vec<String>,
    uris: Vec<String>,
}

/// Parse and verify a CSR (x509-parser through rcgen: the signature must
/// verify with the key it carries) and check its key against the role.
fn parse_csr(pem_text: &str, role: Option<&Role>) -> Result<Csr, ApiError> {
    let bad = |m: &str| ApiError::bad_request(format!("invalid csr: {m}"));
    let trimmed = pem_text.trim();
    let framed = ["", "NEW "].iter().any(|n| {
        trimmed.starts_with(&format!("-----BEGIN {n}CERTIFICATE REQUEST-----"))
            && trimmed.ends_with(&format!("-----END {n}CERTIFICATE REQUEST-----"))
    });
    if !framed {
        return Err(bad("not a PEM certificate request"));
    }
    // exactly one block, base64 that decodes
    if trimmed.matches("-----BEGIN").count() != 1 {
        return Err(bad("not a PEM certificate request"));
    }
    let body: String = trimmed
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let raw_der = STANDARD
        .decode(body.trim())
        .map_err(|_| bad("not a PEM certificate request"))?;
    // the request is checked whole before rcgen reads it: nothing after
    // it, one common name at most (rcgen keeps only the last one), one
    // extension request at most (rcgen reads only the first)
    {
        use x509_parser::prelude::FromDer as _;
        let (rest, req) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&raw_der)
                .map_err(|_| bad("it cannot be parsed"))?;
        if !rest.is_empty() {
            return Err(bad("bytes follow the certificate request"));
        }
        let info = &req.certification_request_info;
        if info.subject.iter_common_name().count() > 1 {
            return Err(bad("its subject has more than one common name"));
        }
        let requests = info
            .iter_attributes()
            .filter(|a| {
                matches!(
                    a.parsed_attribute(),
                    x509_parser::cri_attributes::ParsedCriAttribute::ExtensionRequest(_)
                )
            })
            .count();
        if requests > 1 {
            return Err(bad("it holds more than one extension request"));
        }
    }
    let der = rustls_pki_types::CertificateSigningRequestDer::from(raw_der);
    let parsed = rcgen::CertificateSigningRequestParams::from_der(&der).map_err(|e| match e {
        rcgen::Error::InvalidCertificationRequestSignature => bad("its signature does not verify"),
        rcgen::Error::UnsupportedExtension => {
            bad("it requests an extension this engine does not take")
        }
        _ => bad("it cannot be parsed"),
    })?;
    // the key must be of the role's type and size; its encoding must match
    // the curve the signature algorithm names (a P-384 key signed with
    // SHA-256 would otherwise be labelled P-256)
    let raw = rcgen::PublicKeyData::der_bytes(&parsed.public_key);
    let alg = rcgen::PublicKeyData::algorithm(&parsed.public_key);
    let rsa_ok = |min: u32| {
        [
            &rcgen::PKCS_RSA_SHA256,
            &rcgen::PKCS_RSA_SHA384,
            &rcgen::PKCS_RSA_SHA512,
        ]
        .contains(&alg)
            && palisade_crypto::transit::rsa_public_modulus_bits(raw)
                .is_some_and(|bits| bits >= min)
    };
    let p256 = alg == &rcgen::PKCS_ECDSA_P256_SHA256 && raw.len() == 65;
    let p384 = alg == &rcgen::PKCS_ECDSA_P384_SHA384 && raw.len() == 97;
    let ed = alg == &rcgen::PKCS_ED25519 && raw.len() == 32;
    match role {
        Some(role) => {
            let ok = match role.key_type.as_str() {
                "ec" if role.key_bits == 384 => p384,
                "ec" => p256,
                "ed25519" => ed,
                "rsa" => rsa_ok(role.key_bits),
                _ => false,
            };
            if !ok {
                return Err(bad(&format!(
                    "its key is not a {} key of the role's size ({} bits)",
                    role.key_type, role.key_bits
                )));
            }
        }
        // a CA's key (sign-intermediate): any type this engine makes
        None => {
            if !(p256 || p384 || ed || rsa_ok(2048)) {
                return Err(bad(
                    "its key is not an ec (P-256, P-384), ed25519 or rsa (2048 bits or more) key",
                ));
            }
        }
    }
    let mut csr = Csr {
        key: parsed.public_key,
        common_name: None,
        dns: Vec::new(),
        ips: Vec::new(),
        uris: Vec::new(),
    };
    for (t, v) in parsed.params.distinguished_name.iter() {
        if *t != DnType::CommonName {
            // other subject attributes are not copied: the subject is the common name only
            continue;
        }
        let text = match v {
            rcgen::DnValue::Utf8String(s) => s.clone(),
            rcgen::DnValue::PrintableString(p) => p.as_str().to_string(),
            rcgen::DnValue::Ia5String(p) => p.as_str().to_string(),
            _ => {
                return Err(bad(
                    "its common name is in an encoding this engine does not read",
                ));
            }
        };
        if csr.common_name.replace(text).is_some() {
            return Err(bad("its subject has more than one common name"));
        }
    }
    for san in parsed.params.subject_alt_names {
        match san {
            SanType::DnsName(n) => csr.dns.push(n.as_str().to_string()),
            SanType::IpAddress(ip) => csr.ips.push(ip.to_string()),
            SanType::URI(u) => csr.uris.push(u.as_str().to_string()),
            _ => return Err(bad("it asks for a kind of name this engine does not issue")),
        }
    }
    Ok(csr)
}

async fn issue_or_sign(
    d: &Map<String, Value>,
    view: &View,
    role_name: &str,
    (mount_default, mount_max): (i64, i64),
    signing: bool,
    lease: &crate::lease::LeaseCtx<'_>,
    issuers: &Issuers,
) -> Result<Response, ApiError> {
    let role: Role = match view.get(&format!("roles/{role_name}")).await? {
        Some(b) => decode(&b)?,
        None => {
            return Err(ApiError::bad_request(format!(
                "unknown role: {}",
                shown(role_name)
            )));
        }
    };
    let ca = require_ca(view).await?;
    let csr = if signing {
        let text = opt_string(d, "csr")?
            .ok_or_else(|| ApiError::bad_request("the csr field is required"))?;
        Some(parse_csr(&text, Some(&role))?)
    } else {
        None
    };
    // the CSR's common name when it has one (Vault's use_csr_common_name),
    // else the body's; a different body value is ignored with a warning
    let body_cn = opt_string(d, "common_name")?.filter(|c| !c.is_empty());
    let mut warnings: Vec<String> = Vec::new();
    let common_name = match (csr.as_ref().and_then(|c| c.common_name.clone()), body_cn) {
        (Some(a), Some(b)) if a != b => {
            warnings.push("common_name ignored: the CSR's common name is used".into());
            a
        }
        (Some(a), _) => a,
        (None, Some(b)) => b,
        (None, None) => return Err(ApiError::bad_request("the common_name field is required")),
    };
    let mut dns = vec![common_name.clone()];
    dns.extend(list(d, "alt_names")?);
    let mut ip_text = list(d, "ip_sans")?;
    let mut uris = list(d, "uri_sans")?;
    if let Some(c) = &csr {
        dns.extend(c.dns.iter().cloned());
        ip_text.extend(c.ips.iter().cloned());
        uris.extend(c.uris.iter().cloned());
    }
    if dns.len() + ip_text.len() + uris.len() > MAX_NAMES {
        return Err(ApiError::bad_request(format!(
            "a certificate carries at most {MAX_NAMES} names"
        )));
    }
    let mut in_san = Vec::new();
    for (i, n) in dns.iter().enumerate() {
        if dns_allowed(&role, n, i == 0)? {
            in_san.push(n.clone());
        }
    }
    let mut ips = Vec::new();
    for t in &ip_text {
        let ip: IpAddr = t
            .parse()
            .ok()
            .filter(|ip: &IpAddr| ip.to_string() == *t)
            .ok_or_else(|| {
                ApiError::bad_request(format!("invalid IP SAN {}", shown(t)))
                    .audited_as("invalid IP SAN")
            })?;
        if let IpAddr::V6(v6) = ip
            && v6.to_ipv4_mapped().is_some()
        {
            return Err(ApiError::bad_request(
                "an IPv4-mapped IPv6 address is refused: give the IPv4 address",
            ));
        }
        if !role.allow_ip_sans {
            return Err(ApiError::bad_request(
                "IP Subject Alternative Names are not allowed in this role",
            ));
        }
        ips.push(ip);
    }
    for u in &uris {
        uri_allowed(&role, u)?;
    }
    let max = match (role.max_ttl, mount_max) {
        (0, m) => m,
        (r, 0) => r,
        (r, m) => r.min(m),
    };
    let default = if role.ttl > 0 {
        role.ttl
    } else {
        mount_default
    };
    let (ttl, ttl_warning) = ttl_field(d, default.min(max), max)?;
    warnings.extend(ttl_warning);
    let now = now_secs();
    let not_after = now + ttl;
    if not_after > ca.not_after {
        return Err(ApiError::bad_request(format!(
            "cannot satisfy request, as the TTL would result in a certificate that expires after the CA (at {})",
            palisade_core::rfc3339(ca.not_after.saturating_mul(1_000_000_000))
        )));
    }

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name.as_str());
    params.distinguished_name = dn;
    let mut sans = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for n in &in_san {
        if seen.insert(n.clone()) {
            sans.push(SanType::DnsName(
                n.as_str()
                    .try_into()
                    .map_err(|_| ApiError::bad_request("invalid DNS name"))?,
            ));
        }
    }
    for ip in &ips {
        sans.push(SanType::IpAddress(*ip));
    }
    for u in &uris {
        sans.push(SanType::URI(
            u.as_str()
                .try_into()
                .map_err(|_| ApiError::bad_request("invalid URI SAN"))?,
        ));
    }
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyAgreement,
    ];
    if role.server_flag {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    if role.client_flag {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
    }
    params.not_before = time_at(now - BACKDATE_SECS)?;
    params.not_after = time_at(not_after)?;
    let serial = new_serial();
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.use_authority_key_identifier_extension = true;
    params.key_identifier_method = KeyIdMethod::Sha256;
    let urls: Urls = load_or_default(view, "config/urls").await?;
    if !urls.crl_distribution_points.is_empty() {
        params.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
            uris: urls.crl_distribution_points.clone(),
        }];
    }
    params.custom_extensions.extend(aia_extension(&urls));

    let (kt, kb) = (role.key_type.clone(), role.key_bits);
    let signer = issuers.get(view, &ca)?;
    let csr_key = csr.map(|c| c.key);
    let (cert_pem, key_der) = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let issuer = &*signer;
        match csr_key {
            Some(k) => {
                let cert = params.signed_by(&k, issuer).map_err(rc_err)?;
                Ok((cert.pem(), None))
            }
            None => {
                let key = generate_key(&kt, kb)?;
                let cert = params.signed_by(&key, issuer).map_err(rc_err)?;
                Ok((cert.pem(), Some(Zeroizing::new(key.serialize_der()))))
            }
        }
    })
    .await
    .map_err(|e| ApiError::internal(format!("issue: {e}")))??;

    let serial_s = serial_text(&serial);
    if !role.no_store {
        let stored = StoredCert {
            certificate: cert_pem.clone(),
            not_after,
            revocation_time: 0,
            issuer: ca.serial.clone(),
        };
        view.put(
            &format!("certs/{}", storage_serial(&serial_s)),
            &encode(&stored)?,
        )
        .await?;
    }
    let mut out = json!({
        "certificate": cert_pem,
        "issuing_ca": ca.certificate,
        "ca_chain": ca.chain_pems(),
        "serial_number": serial_s,
        "expiration": not_after,
    });
    if let (Some(key), Some(o)) = (key_der, out.as_object_mut()) {
        o.insert("private_key".into(), json!(pem("PRIVATE KEY", &key)));
        o.insert("private_key_type".into(), json!(role.key_type));
    }
    let mut resp = Response::data(out);
    for w in warnings {
        resp = resp.warn(w);
    }
    if role.generate_lease {
        // after the certificate is stored: a crash before this leaves a
        // certificate without a lease, never a lease without a certificate
        let ttl = (not_after - lease.now).max(1);
        let e = lease.entry(crate::lease::LeaseRequest {
            internal: json!({ "serial_number": serial_s }),
            ttl,
            max_ttl: ttl,
            renewable: false,
        });
        lease.leases.create(&e).await?;
        resp = resp.with_lease(crate::lease::LeaseInfo {
            lease_id: e.lease_id,
            lease_duration: e.ttl,
            renewable: false,
        });
    }
    Ok(resp)
}

/// Revoke the certificate of a lease (`generate_lease`). A certificate that
/// is no longer stored, or whose CA was replaced, has nothing left to
/// revoke here.
pub async fn revoke_lease(view: &View, locks: &KeyLocks, internal: &Value) -> Result<(), ApiError> {
    let Some(serial) = internal["serial_number"].as_str() else {
        return Err(ApiError::internal("PKI lease without a serial number"));
    };
    let _g = locks.lock(view, "ca").await;
    let mut d = Map::new();
    d.insert("serial_number".into(), json!(serial));
    match revoke(&d, view).await {
        Ok(_) => Ok(()),
        Err(e) if e.status == 400 => {
            tracing::info!("PKI lease revoked without a certificate to revoke");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

async fn read_cert(view: &View, serial: &str) -> Result<Response, ApiError> {
    let (s, _) = parse_serial(serial)?;
    match view.get(&format!("certs/{}", storage_serial(&s))).await? {
        Some(b) => {
            let c: StoredCert = decode(&b)?;
            Ok(Response::data(json!({
                "certificate": c.certificate,
                "revocation_time": c.revocation_time,
            })))
        }
        None => Err(ApiError::not_found()),
    }
}

// ------------------------------------------------------------ revocation

async fn revoke(d: &Map<String, Value>, view: &View) -> Result<Response, ApiError> {
    let serial = opt_string(d, "serial_number")?
        .ok_or_else(|| ApiError::bad_request("the serial_number field is required"))?;
    let (s, _) = parse_serial(&serial)?;
    let key = format!("certs/{}", storage_serial(&s));
    let ca = require_ca(view).await?;
    if s == ca.serial {
        return Err(ApiError::bad_request(
            "the CA's own certificate cannot be revoked here: delete the CA",
        ));
    }
    let mut c: StoredCert = match view.get(&key).await? {
        Some(b) => decode(&b)?,
        None => {
            return Err(ApiError::bad_request(format!(
                "certificate with serial {s} not found (certificates issued with no_store cannot be revoked)"
            )));
        }
    };
    if c.issuer != ca.serial {
        return Err(ApiError::bad_request(
            "this certificate was issued by a CA that is no longer configured at this mount",
        ));
    }
    if c.revocation_time == 0 {
        c.revocation_time = now_secs();
        // both entries or neither: a certificate read as revoked is on the CRL
        view.transaction(vec![
            palisade_barrier::BarrierOp::Put {
                path: key.clone(),
                value: encode(&c)?.to_vec(),
            },
            palisade_barrier::BarrierOp::Put {
                path: format!("revoked/{}", storage_serial(&s)),
                value: format!("{} {}", c.revocation_time, ca.serial).into_bytes(),
            },
            // the cached CRL no longer lists everything revoked
            palisade_barrier::BarrierOp::Delete {
                path: CRL_CACHE.into(),
            },
        ])
        .await?;
    }
    Ok(Response::data(
        json!({ "revocation_time": c.revocation_time }),
    ))
}

/// Where the last CRL built is kept (DER and PEM, with when and for which
/// CA): served until half its validity has passed, rebuilt at once after a
/// revocation, `crl/rotate` or a `config/crl` change. Anonymous clients
/// read it (Vault serves CRLs without a token): they must not make the
/// server sign and store a CRL per request.
const CRL_CACHE: &str = "crl/cached";

#[derive(Serialize, Deserialize)]
struct CachedCrl {
    der: String,
    pem: String,
    ca_serial: String,
    built: i64,
    expiry: i64,
}

/// The current CRL: the cached one while it is fresh, else one built now
/// (under the mount's "ca" lock).
async fn current_crl(
    view: &View,
    locks: &KeyLocks,
    issuers: &Issuers,
) -> Result<(Vec<u8>, String), ApiError> {
    let fresh = |c: &CachedCrl, ca: &Ca| {
        c.ca_serial == ca.serial && now_secs() < c.built.saturating_add(c.expiry / 2)
    };
    let ca = require_ca(view).await?;
    if let Some(b) = view.get(CRL_CACHE).await?
        && let Ok(c) = serde_json::from_slice::<CachedCrl>(&b)
        && fresh(&c, &ca)
    {
        return Ok((STANDARD.decode(&c.der).map_err(ApiError::internal)?, c.pem));
    }
    let _g = locks.lock(view, "ca").await;
    let ca = require_ca(view).await?;
    if let Some(b) = view.get(CRL_CACHE).await?
        && let Ok(c) = serde_json::from_slice::<CachedCrl>(&b)
        && fresh(&c, &ca)
    {
        return Ok((STANDARD.decode(&c.der).map_err(ApiError::internal)?, c.pem));
    }
    rebuild_crl(view, issuers).await
}

/// Build, sign and cache a new CRL (callers hold the "ca" lock).
async fn rebuild_crl(view: &View, issuers: &Issuers) -> Result<(Vec<u8>, String), ApiError> {
    let ca = require_ca(view).await?;
    let cfg: CrlConfig = load_or_default(view, "config/crl").await?;
    let (der, pem) = make_crl(view, issuers).await?;
    let cached = CachedCrl {
        der: STANDARD.encode(&der),
        pem: pem.clone(),
        ca_serial: ca.serial,
        built: now_secs(),
        expiry: cfg.expiry,
    };
    view.put(
        CRL_CACHE,
        &serde_json::to_vec(&cached).map_err(ApiError::internal)?,
    )
    .await?;
    Ok((der, pem))
}

/// The paths Vault serves without a token: the CA's certificate and chain,
/// the CRL, and issued certificates (public material only).
pub fn is_public(op: Operation, rel: &str) -> bool {
    op == Operation::Read
        && match rel.split('/').collect::<Vec<_>>().as_slice() {
            ["ca"] | ["ca", "pem"] | ["ca_chain"] | ["crl"] | ["crl", "pem"] => true,
            ["cert", s] => !s.is_empty(),
            _ => false,
        }
}

/// A read of a path [`is_public`] names.
pub async fn public_read(
    rel: &str,
    view: &View,
    locks: &KeyLocks,
    issuers: &Issuers,
) -> Result<Response, ApiError> {
    let parts: Vec<&str> = rel.split('/').collect();
    match parts.as_slice() {
        ["ca", "pem"] => {
            let ca = require_ca(view).await?;
            Ok(Response::bytes(
                "application/pem-certificate-chain",
                ca.certificate.into_bytes(),
            ))
        }
        ["ca"] => {
            let ca = require_ca(view).await?;
            Ok(Response::bytes(
                "application/pkix-cert",
                pem_der(&ca.certificate)?,
            ))
        }
        ["ca_chain"] | ["cert", "ca_chain"] => {
            let ca = require_ca(view).await?;
            let chain = ca.chain_pems().concat();
            if parts[0] == "cert" {
                return Ok(Response::data(json!({
                    "certificate": chain, "ca_chain": chain, "revocation_time": 0,
                })));
            }
            Ok(Response::bytes(
                "application/pem-certificate-chain",
                chain.into_bytes(),
            ))
        }
        ["cert", "ca"] => {
            let ca = require_ca(view).await?;
            Ok(Response::data(
                json!({"certificate": ca.certificate, "revocation_time": 0}),
            ))
        }
        ["crl"] => Ok(Response::bytes(
            "application/pkix-crl",
            current_crl(view, locks, issuers).await?.0,
        )),
        ["crl", "pem"] => Ok(Response::bytes(
            "application/x-pem-file",
            current_crl(view, locks, issuers).await?.1.into_bytes(),
        )),
        ["cert", "crl"] => Ok(Response::data(
            json!({"certificate": current_crl(view, locks, issuers).await?.1, "revocation_time": 0}),
        )),
        ["cert", serial] => read_cert(view, serial).await,
        _ => Err(ApiError::unsupported_path()),
    }
}

/// The CRL, DER and PEM, signed now by the CA: every revoked certificate
/// that has not expired.
async fn make_crl(view: &View, issuers: &Issuers) -> Result<(Vec<u8>, String), ApiError> {
    let ca = require_ca(view).await?;
    let cfg: CrlConfig = load_or_default(view, "config/crl").await?;
    let now = now_secs();
    // a number that grows with every CRL built (RFC 5280 5.2.3), kept in
    // storage; callers hold the mount's "ca" lock
    let crl_number: u64 = match view.get("crl/number").await? {
        Some(b) => std::str::from_utf8(&b)
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0),
        None => 0,
    } + 1;
    view.put("crl/number", crl_number.to_string().as_bytes())
        .await?;
    let mut revoked = Vec::new();
    // `disable`: the CRL is still served, signed, and lists nothing (Vault)
    let listed = if cfg.disable {
        Vec::new()
    } else {
        view.list("revoked/").await?
    };
    for k in listed {
        let Some(b) = view.get(&format!("revoked/{k}")).await? else {
            continue;
        };
        // "<revocation time> <issuer serial>"; only this CA's revocations
        let text = std::str::from_utf8(&b).unwrap_or_default();
        let (at, issuer) = text.split_once(' ').unwrap_or((text, ""));
        if issuer != ca.serial {
            continue;
        }
        let at: i64 = at.parse().unwrap_or(now);
        let (_, bytes) = parse_serial(&k)?;
        revoked.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&bytes),
            revocation_time: time_at(at)?,
            reason_code: None,
            invalidity_date: None,
        });
    }
    let params = CertificateRevocationListParams {
        this_update: time_at(now - BACKDATE_SECS)?,
        next_update: time_at((now + cfg.expiry).min(ca.not_after.max(now + 1)))?,
        crl_number: SerialNumber::from(crl_number),
        issuing_distribution_point: None,
        revoked_certs: revoked,
        // the CA certificate's own key identifier, whatever method made it
        // (an intermediate signed elsewhere has OpenSSL's SHA-1 one): a CRL
        // whose authority key identifier is not the CA's is not found
        key_identifier_method: ca_key_id(&ca)?,
    };
    let issuer = issuers.get(view, &ca)?;
    let crl = params.signed_by(&*issuer).map_err(rc_err)?;
    let pem = crl.pem().map_err(rc_err)?;
    Ok((crl.der().to_vec(), pem))
}

async fn tidy(d: &Map<String, Value>, view: &View) -> Result<Response, ApiError> {
    let certs = opt_bool(d, "tidy_cert_store", false)?;
    let revoked = opt_bool(d, "tidy_revoked_certs", false)?;
    if !certs && !revoked {
        // Vault answers 202 with a warning
        return Ok(Response::data(json!({ "removed": 0 }))
            .with_status(202)
            .warn("nothing to tidy: set tidy_cert_store or tidy_revoked_certs"));
    }
    let buffer = match opt(d, "safety_buffer") {
        Some(v) => fields::duration_secs(v, "safety_buffer")?,
        None => TIDY_BUFFER_SECS,
    };
    let cutoff = now_secs() - buffer;
    let mut removed = 0;
    for k in view.list("certs/").await? {
        let Some(b) = view.get(&format!("certs/{k}")).await? else {
            continue;
        };
        let c: StoredCert = decode(&b)?;
        if c.not_after >= cutoff {
            continue;
        }
        let is_revoked = c.revocation_time != 0;
        if (is_revoked && revoked) || (!is_revoked && certs) {
            view.delete(&format!("certs/{k}")).await?;
            view.delete(&format!("revoked/{k}")).await?;
            removed += 1;
        }
    }
    Ok(Response::data(json!({ "removed": removed })).with_status(202))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_go_glob_or_within_one_segment() {
        assert!(glob_any("*.example.com", "a.b.example.com"));
        assert!(glob_any("svc-*.example.com", "svc-1.example.com"));
        assert!(!glob_any("svc-*.example.com", "svc-1.example.org"));
        let seg = |p: &str, s: &str| glob(p.as_bytes(), s.as_bytes(), Some(b'/'));
        assert!(seg(
            "spiffe://prod.example/ns/*/sa/*",
            "spiffe://prod.example/ns/shop/sa/api"
        ));
        assert!(!seg(
            "spiffe://prod.example/ns/*/sa/*",
            "spiffe://prod.example/ns/a/b/sa/api"
        ));
        assert!(!seg(
            "spiffe://prod.example/ns/*/sa/*",
            "spiffe://prod.example/ns/shop/sa/api/x"
        ));
        assert!(!seg(
            "spiffe://prod.example/ns/*/sa/*",
            "spiffe://prod.example.evil/ns/a/sa/b"
        ));
        assert!(
            seg(
                "spiffe://prod.example/ns/*/sa/*",
                "spiffe://prod.example/ns//sa/"
            ),
            "empty segments are refused before the glob (uri_allowed)"
        );
    }

    #[test]
    fn serials_are_read_in_vaults_forms_only() {
        assert_eq!(parse_serial("0a:ff").unwrap().0, "0a:ff");
        assert_eq!(parse_serial("0a-ff").unwrap().0, "0a:ff");
        assert_eq!(parse_serial("0A:FF").unwrap().0, "0a:ff");
        for bad in ["", "0a:f", "0a::ff", "zz", "0a:ff-01", "../x"] {
            assert!(parse_serial(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hostnames_are_lowercase_rfc_1123() {
        for ok in ["a.example.com", "x-1.y", "localhost"] {
            assert!(is_hostname(ok), "{ok}");
        }
        for bad in [
            "A.example.com",
            "-a.com",
            "a-.com",
            "a..com",
            "",
            "a_b.com",
            "a b",
            "é.com",
        ] {
            assert!(!is_hostname(bad), "{bad}");
        }
    }
}
