//! The `cert` auth method (Vault's API): a service logs in with the client
//! certificate of its TLS connection.
//!
//! - `certs/:name`: a role — `certificate` (the PEM CA certificates it
//!   trusts), `allowed_common_names`, `allowed_dns_sans`,
//!   `allowed_email_sans`, `allowed_uri_sans` (globs: `*` matches any run of
//!   characters; each list, when set, must match at least one value of the
//!   certificate), `display_name`, and the `token_*` fields.
//! - `login` (`name` optional): the chain the client presented in the TLS
//!   handshake is verified by webpki (rustls-webpki: signatures, validity
//!   period, basic constraints, name constraints, the `clientAuth` extended
//!   key usage when present) against the role's CA; the first role (by name,
//!   or the one named) whose CA verifies it and whose constraints match logs
//!   it in. The identity alias is the certificate's common name (Vault).
//!
//! The listener asks every TLS client for a certificate without requiring
//! one, and only proves the client holds its key (`listener.rs`); nothing
//! but this method trusts a client certificate, and only after this check.
//! Every failure answers the same 400 `invalid certificate or no client
//! certificate supplied`; the audit record says which check failed.
//!
//! Storage, in the method's view: `cert/<name>` (a [`Role`]).

use std::sync::LazyLock;

use palisade_barrier::View;
use rustls_pki_types::{CertificateDer, UnixTime};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::approle::is_canonical_role_name;
use crate::core::{Authorized, Core};
use crate::logical::{ApiError, Operation, Request, Response, fields};
use crate::mounts::MountEntry;
use crate::token::TokenEntry;
use crate::token_params::{Login, TokenParams};

/// Entries in each allowed-names list, at most.
const MAX_LIST: usize = 64;
/// Certificates in a role's CA bundle, and in a presented chain, at most.
const MAX_CERTS: usize = 16;

/// What a path under a cert mount names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertPath<'a> {
    Certs,
    Cert(&'a str),
    Login,
}

/// The path relative to a cert mount, for `op`.
pub fn parse(op: Operation, rel: &str) -> Result<CertPath<'_>, ApiError> {
    use Operation::*;
    let (path, ok) = match rel {
        "certs" | "certs/" => (CertPath::Certs, op == List),
        "login" => (CertPath::Login, op == Write),
        _ => match rel.strip_prefix("certs/") {
            Some(name) if is_canonical_role_name(name) => {
                (CertPath::Cert(name), matches!(op, Read | Write | Delete))
            }
            Some(_) => {
                return Err(ApiError::bad_request(
                    "invalid name: names are lowercase ASCII letters, digits and '_-.', begin and end with a letter, a digit or '_', and are at most 256 bytes",
                ));
            }
            None => return Err(ApiError::unsupported_path()),
        },
    };
    if ok {
        Ok(path)
    } else {
        Err(ApiError::unsupported_operation())
    }
}

/// A role, as stored.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Role {
    /// The trusted CA certificates, PEM.
    pub certificate: String,
    /// Vault's `allowed_names`: each must match the common name, a DNS SAN
    /// or an email SAN.
    pub allowed_names: Vec<String>,
    pub allowed_common_names: Vec<String>,
    pub allowed_dns_sans: Vec<String>,
    pub allowed_email_sans: Vec<String>,
    pub allowed_uri_sans: Vec<String>,
    pub display_name: String,
    #[serde(flatten)]
    pub token: TokenParams,
}

impl Role {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        self.token.write_json(&mut m);
        m.insert("certificate".into(), json!(self.certificate));
        m.insert("allowed_names".into(), json!(self.allowed_names));
        m.insert(
            "allowed_common_names".into(),
            json!(self.allowed_common_names),
        );
        m.insert("allowed_dns_sans".into(), json!(self.allowed_dns_sans));
        m.insert("allowed_email_sans".into(), json!(self.allowed_email_sans));
        m.insert("allowed_uri_sans".into(), json!(self.allowed_uri_sans));
        m.insert("display_name".into(), json!(self.display_name));
        Value::Object(m)
    }
}

fn view(core: &Core, mount: &MountEntry) -> View {
    View::new(core.barrier.clone(), mount.auth_view_prefix())
}

async fn get_role(view: &View, name: &str) -> Result<Option<Role>, ApiError> {
    crate::json::stored(view.get(&format!("cert/{name}")).await?)
}

/// Whether a role exists (the ACL's create-or-update decision).
pub async fn role_exists(core: &Core, mount: &MountEntry, name: &str) -> Result<bool, ApiError> {
    Ok(get_role(&view(core, mount), name).await?.is_some())
}

static WRITES: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(|| tokio::sync::Mutex::new(()));

/// A role's certificates, as Vault reads them: a CA certificate (basic
/// constraints `cA`, and `keyCertSign` when it has a key usage) is a trust
/// anchor; any other certificate is a pin, matching only itself (its key
/// never signs anything the role trusts).
struct Trust {
    /// (DER, not before, not after)
    anchors: Vec<(Vec<u8>, i64, i64)>,
    pins: Vec<(Vec<u8>, i64, i64)>,
}

fn ca_bundle(pem: &str) -> Result<Trust, ApiError> {
    use rustls_pki_types::pem::PemObject;
    let bad = || {
        ApiError::bad_request("certificate: expected one or more PEM CA certificates")
            .audited_as("invalid certificate bundle")
    };
    let mut t = Trust {
        anchors: Vec::new(),
        pins: Vec::new(),
    };
    for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let c = c.map_err(|_| bad())?;
        let (_, x) = x509_parser::parse_x509_certificate(c.as_ref()).map_err(|_| bad())?;
        let validity = (
            x.validity().not_before.timestamp(),
            x.validity().not_after.timestamp(),
        );
        let is_ca = x
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|b| b.value.ca)
            && x.key_usage()
                .ok()
                .flatten()
                .is_none_or(|k| k.value.key_cert_sign());
        if is_ca {
            webpki::anchor_from_trusted_cert(&c).map_err(|_| bad())?;
            t.anchors
                .push((c.as_ref().to_vec(), validity.0, validity.1));
        } else {
            t.pins.push((c.as_ref().to_vec(), validity.0, validity.1));
        }
    }
    let n = t.anchors.len() + t.pins.len();
    if n == 0 || n > MAX_CERTS {
        return Err(bad());
    }
    Ok(t)
}

fn list_field(req: &Request, name: &str) -> Result<Option<Vec<String>>, ApiError> {
    match req.data.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let l: Vec<String> = fields::string_list(v, name)?
                .into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            if l.len() > MAX_LIST || l.iter().any(|s| s.len() > 1024) {
                return Err(ApiError::bad_request(format!(
                    "{name}: at most {MAX_LIST} entries of at most 1024 bytes"
                )));
            }
            Ok(Some(l))
        }
    }
}

fn apply_role(req: &Request, role: &mut Role) -> Result<(), ApiError> {
    role.token.apply(req)?;
    if let Some(v) = req.data.get("certificate").filter(|v| !v.is_null()) {
        let pem = fields::string(v, "certificate")?;
        ca_bundle(&pem)?;
        role.certificate = pem;
    }
    if role.certificate.is_empty() {
        return Err(ApiError::bad_request(
            "certificate is required: the CA certificates the role trusts",
        ));
    }
    if let Some(l) = list_field(req, "allowed_names")? {
        role.allowed_names = l;
    }
    if let Some(l) = list_field(req, "allowed_common_names")? {
        role.allowed_common_names = l;
    }
    if let Some(l) = list_field(req, "allowed_dns_sans")? {
        role.allowed_dns_sans = l;
    }
    if let Some(l) = list_field(req, "allowed_email_sans")? {
        role.allowed_email_sans = l;
    }
    if let Some(l) = list_field(req, "allowed_uri_sans")? {
        role.allowed_uri_sans = l;
    }
    if let Some(v) = req.data.get("display_name").filter(|v| !v.is_null()) {
        role.display_name = fields::string(v, "display_name")?;
    }
    for unsupported in [
        "allowed_organizational_units",
        "required_extensions",
        "allowed_metadata_extensions",
        "ocsp_enabled",
    ] {
        if req.data.get(unsupported).is_some_and(|v| {
            !v.is_null() && *v != json!("") && *v != json!([]) && *v != json!(false)
        }) {
            return Err(ApiError::bad_request(format!(
                "{unsupported} is not supported: a role binds a CA and names only"
            )));
        }
    }
    Ok(())
}

pub async fn handle(
    core: &Core,
    auth: &Authorized,
    mount: &MountEntry,
    rel: &str,
) -> Result<Response, ApiError> {
    use palisade_policy::Capability;
    let req = auth.request();
    let view = view(core, mount);
    match parse(req.operation, rel)? {
        CertPath::Certs => {
            let mut keys = view.list("cert/").await?;
            keys.sort();
            if keys.is_empty() {
                return Err(ApiError::not_found());
            }
            Ok(Response::data(json!({ "keys": keys })))
        }
        CertPath::Cert(name) => match req.operation {
            Operation::Read => {
                let role = get_role(&view, name)
                    .await?
                    .ok_or_else(ApiError::not_found)?;
                Ok(Response::data(role.to_json()))
            }
            Operation::Delete => {
                let _g = WRITES.lock().await;
                view.delete(&format!("cert/{name}")).await?;
                Ok(Response::no_content())
            }
            _ => {
                let _g = WRITES.lock().await;
                let existing = get_role(&view, name).await?;
                let allowed = if existing.is_some() {
                    auth.allows(Capability::Update)
                } else {
                    auth.allows(Capability::Create)
                };
                if !allowed {
                    return Err(ApiError::permission_denied());
                }
                let mut role = existing.unwrap_or_else(|| Role {
                    token: TokenParams::new(),
                    ..Role::default()
                });
                apply_role(req, &mut role)?;
                view.put(&format!("cert/{name}"), &crate::json::to_stored(&role)?)
                    .await?;
                Ok(Response::no_content())
            }
        },
        CertPath::Login => Err(ApiError::unsupported_path()),
    }
}

/// The single answer to every failed login (the audit says which check).
fn invalid(why: &'static str) -> ApiError {
    ApiError::bad_request("invalid certificate or no client certificate supplied").audited_as(why)
}

/// An allowed-names list: empty allows anything, else one pattern must
/// match one of the values.
fn names_allowed(patterns: &[String], values: &[String]) -> bool {
    patterns.is_empty()
        || values
            .iter()
            .any(|v| patterns.iter().any(|p| crate::jwt_auth::glob_match(p, v)))
}

/// The names a verified leaf certificate carries.
struct Names {
    common_names: Vec<String>,
    dns: Vec<String>,
    email: Vec<String>,
    uri: Vec<String>,
    serial: String,
}

fn names(der: &[u8]) -> Option<Names> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let common_names = cert
        .subject()
        .iter_common_name()
        .filter_map(|a| a.as_str().ok().map(str::to_string))
        .collect();
    let (mut dns, mut email, mut uri) = (Vec::new(), Vec::new(), Vec::new());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(s) => dns.push(s.to_string()),
                GeneralName::RFC822Name(s) => email.push(s.to_string()),
                GeneralName::URI(s) => uri.push(s.to_string()),
                _ => {}
            }
        }
    }
    Some(Names {
        common_names,
        dns,
        email,
        uri,
        serial: cert.raw_serial_as_string(),
    })
}

/// Whether webpki verifies the presented chain against the role's CAs, as
/// a client certificate, at `now`.
fn chain_verifies(role: &Role, chain: &[Vec<u8>], now: UnixTime) -> bool {
    let Ok(trust) = ca_bundle(&role.certificate) else {
        return false;
    };
    let secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let valid = |nb: i64, na: i64| nb <= secs && secs <= na;
    // a pinned certificate: exactly that one, while it is valid
    if let Some(leaf) = chain.first()
        && trust
            .pins
            .iter()
            .any(|(der, nb, na)| der == leaf && valid(*nb, *na))
    {
        return true;
    }
    // anchors are used only while they are valid themselves (webpki does
    // not check an anchor's dates; Vault does)
    let ca_ders: Vec<CertificateDer<'_>> = trust
        .anchors
        .iter()
        .filter(|(_, nb, na)| valid(*nb, *na))
        .map(|(c, _, _)| CertificateDer::from(&c[..]))
        .collect();
    if ca_ders.is_empty() {
        return false;
    }
    let Ok(anchors) = ca_ders
        .iter()
        .map(webpki::anchor_from_trusted_cert)
        .collect::<Result<Vec<_>, _>>()
    else {
        return false;
    };
    let Some((leaf, rest)) = chain.split_first() else {
        return false;
    };
    let leaf = CertificateDer::from(&leaf[..]);
    let Ok(ee) = webpki::EndEntityCert::try_from(&leaf) else {
        return false;
    };
    let intermediates: Vec<CertificateDer<'_>> =
        rest.iter().map(|c| CertificateDer::from(&c[..])).collect();
    let algs = rustls::crypto::aws_lc_rs::default_provider()
        .signature_verification_algorithms
        .all;
    ee.verify_for_usage(
        algs,
        &anchors,
        &intermediates,
        now,
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .is_ok()
}

/// Whether the role's name rules allow a verified leaf's names.
fn role_allows(role: &Role, names: &Names) -> bool {
    let any_name: Vec<String> = names
        .common_names
        .iter()
        .chain(&names.dns)
        .chain(&names.email)
        .cloned()
        .collect();
    names_allowed(&role.allowed_names, &any_name)
        && names_allowed(&role.allowed_common_names, &names.common_names)
        && names_allowed(&role.allowed_dns_sans, &names.dns)
        && names_allowed(&role.allowed_email_sans, &names.email)
        && names_allowed(&role.allowed_uri_sans, &names.uri)
}

fn wall_now(core: &Core) -> UnixTime {
    UnixTime::since_unix_epoch(
        core.clock_wall()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

/// `POST auth/<mount>/login` (no token): the TLS client certificate.
pub async fn login(core: &Core, mount: &MountEntry, req: &Request) -> Result<Response, ApiError> {
    let chain = match &req.client_certs {
        Some(c) if !c.is_empty() => c.clone(),
        _ => return Err(invalid("no client certificate in the TLS handshake")),
    };
    if chain.len() > MAX_CERTS {
        return Err(invalid("client certificate chain too long"));
    }
    let wanted = match req.data.get("name") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let n = fields::string(v, "name")?;
            if n.is_empty() { None } else { Some(n) }
        }
    };
    let view = view(core, mount);
    let candidates = match &wanted {
        Some(n) if is_canonical_role_name(n) => vec![n.clone()],
        Some(_) => return Err(invalid("unknown role name")),
        None => {
            let mut all = view.list("cert/").await?;
            all.sort();
            all
        }
    };
    let now = wall_now(core);
    let names = names(&chain[0]).ok_or_else(|| invalid("client certificate does not parse"))?;
    // the common name is the identity: exactly one (several would let the
    // name checks and the alias read different ones)
    if names.common_names.len() != 1 {
        return Err(invalid(
            "the client certificate must have exactly one common name",
        ));
    }
    let mut matched = None;
    let mut trusted_elsewhere = false;
    for name in candidates {
        let Some(role) = get_role(&view, &name).await? else {
            continue;
        };
        if !chain_verifies(&role, &chain, now) {
            continue;
        }
        trusted_elsewhere = true;
        if role_allows(&role, &names) {
            matched = Some((name, role));
            break;
        }
    }
    let Some((name, role)) = matched else {
        return Err(if trusted_elsewhere {
            invalid("no role allows the certificate's names")
        } else {
            invalid("no role's CA verifies the certificate chain")
        });
    };
    if !crate::token::address_allowed(&role.token.token_bound_cidrs, &req.remote_addr) {
        return Err(invalid(
            "client address outside the role's token_bound_cidrs",
        ));
    }
    let cn = names.common_names.first().cloned().unwrap_or_default();
    let mut meta = Map::new();
    meta.insert("cert_name".into(), json!(name));
    meta.insert("common_name".into(), json!(cn));
    meta.insert("serial_number".into(), json!(names.serial));
    let display = if role.display_name.is_empty() {
        name.clone()
    } else {
        role.display_name.clone()
    };
    crate::token_params::issue(
        core,
        Login {
            mount,
            params: &role.token,
            meta,
            display_name: format!("{}-{display}", mount.kind),
            path: format!("auth/{}login", mount.path),
            // Vault's alias for a certificate login is its common name
            alias: cn,
            alias_metadata: Default::default(),
            groups: None,
        },
    )
    .await
}

/// What renewing a token this method issued may grant: the role must still
/// exist with the same policies, and the renewing connection must present
/// the certificate that logged in (its serial number and common name), still
/// verified by the role's CA and allowed by its names now (Vault's
/// `pathLoginRenew`): a CA or a name removed from a role stops renewals too.
pub async fn renew_entry(
    core: &Core,
    mount: &MountEntry,
    e: &TokenEntry,
    client_certs: Option<&[Vec<u8>]>,
) -> Result<TokenEntry, ApiError> {
    let name = e
        .meta
        .get("cert_name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let role = if is_canonical_role_name(name) {
        get_role(&view(core, mount), name).await?
    } else {
        None
    };
    if let Some(role) = &role {
        let chain = match client_certs {
            Some(c) if !c.is_empty() && c.len() <= MAX_CERTS => c,
            _ => return Err(invalid("no client certificate on the renewing connection")),
        };
        let names = names(&chain[0]).ok_or_else(|| invalid("client certificate does not parse"))?;
        let same = names.common_names.len() == 1
            && e.meta.get("common_name").and_then(Value::as_str) == Some(&names.common_names[0])
            && e.meta.get("serial_number").and_then(Value::as_str) == Some(&names.serial);
        if !same {
            return Err(invalid(
                "the renewing certificate is not the one that logged in",
            ));
        }
        if !chain_verifies(role, chain, wall_now(core)) || !role_allows(role, &names) {
            return Err(invalid(
                "the role no longer accepts the certificate that logged in",
            ));
        }
    }
    crate::token_params::renew(
        core,
        mount,
        role.as_ref().map(|r| &r.token),
        "certificate role",
        e,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_names_are_globs_over_any_value() {
        let p = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(names_allowed(&[], &p(&["x"])));
        assert!(names_allowed(
            &p(&["*.svc.internal"]),
            &p(&["a", "web.svc.internal"])
        ));
        assert!(!names_allowed(
            &p(&["*.svc.internal"]),
            &p(&["web.svc.internal.evil"])
        ));
        assert!(!names_allowed(&p(&["web"]), &[]));
        assert!(names_allowed(
            &p(&["spiffe://prod/ns/*/sa/web"]),
            &p(&["spiffe://prod/ns/pay/sa/web"])
        ));
    }
}
