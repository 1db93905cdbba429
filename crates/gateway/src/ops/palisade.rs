//! Certificates from Palisade's PKI engine (`[palisade]`): the gateway logs
//! in (a token file, or AppRole), issues each configured certificate from
//! `<mount>/issue/<role>` and writes it and its key to the files the
//! listeners and upstreams name. It issues at start when a file is missing
//! or due, then renews each certificate when two thirds of its lifetime have
//! passed, without a restart: listener certificates are swapped in by the
//! certificate watcher (their files changed), and a renewal asks for a
//! configuration reload, which rebuilds the upstreams' client certificates.
//!
//! The files are written whole (a temporary file in the same directory,
//! synced, renamed over the old one; keys `0600`), the key first. A renewal
//! that fails is retried after 30 s, doubling up to 5 minutes, while the
//! current certificate keeps serving. Keys and tokens never reach a log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use palisade_core::Secret;
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from the server (a key table of ~20,000 keys).
const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;
/// A renewal that failed is retried after this, doubling up to [`MAX_RETRY`].
const FIRST_RETRY: i64 = 30;
const MAX_RETRY: i64 = 300;
/// The longest the renewal loop sleeps (it looks at the files again then).
const MAX_SLEEP: i64 = 3600;

/// How the gateway logs in to Palisade.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// A token in a file, read at each use (an agent may rotate it).
    TokenFile(PathBuf),
    /// A token given directly (the CLI's `VAULT_TOKEN`; never from the file).
    Token(Secret<String>),
    /// AppRole: a login kept until two thirds of its TTL, then a new one
    /// (the old token revoked).
    AppRole {
        mount: String,
        role_id_file: PathBuf,
        secret_id_file: PathBuf,
    },
}

/// One certificate the gateway keeps issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedCert {
    pub mount: String,
    pub role: String,
    pub common_name: String,
    pub alt_names: Vec<String>,
    pub ip_sans: Vec<String>,
    pub uri_sans: Vec<String>,
    pub ttl: Option<String>,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// `[palisade]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PalisadeConfig {
    /// `https://host[:port]` (or http to loopback), no trailing slash.
    pub address: String,
    pub ca_file: Option<PathBuf>,
    pub auth: Auth,
    pub certificates: Vec<ManagedCert>,
}

fn unix_now() -> i64 {
    palisade_core::now_nanos() / 1_000_000_000
}

/// `not_before` and `not_after` of the first certificate in a PEM file.
fn validity(pem: &[u8]) -> Option<(i64, i64)> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    let v = cert.validity();
    Some((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// When the certificate in `file` is due for renewal: two thirds of the way
/// from when it was written (or its `not_before`, if later) to its
/// `not_after`. Not from `not_before` alone: issuers backdate it (Vault by
/// 30 s), which would make a short-lived certificate due at once, forever.
/// `None` when there is no readable certificate (due now).
pub fn renew_at(file: &Path) -> Option<i64> {
    let (from, to) = validity(&std::fs::read(file).ok()?)?;
    let written = std::fs::metadata(file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(from, |d| i64::try_from(d.as_secs()).unwrap_or(from));
    let from = from.max(written.min(to));
    Some(from + (to - from) * 2 / 3)
}

/// Whether `m`'s files hold a pair rustls would serve (the key is the
/// certificate's). A pair that does not (a crash between the two renames, a
/// file changed by hand) is due at once.
fn pair_loads(m: &ManagedCert) -> bool {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let Ok(certs) =
        CertificateDer::pem_file_iter(&m.cert_file).and_then(|i| i.collect::<Result<Vec<_>, _>>())
    else {
        return false;
    };
    let Ok(key) = PrivateKeyDer::from_pem_file(&m.key_file) else {
        return false;
    };
    !certs.is_empty() && crate::transport::tls::certified_key(certs, &key).is_ok()
}

/// When `m` is due: its renewal time, or now when its files are not a pair.
fn due_at(m: &ManagedCert) -> i64 {
    if pair_loads(m) {
        renew_at(&m.cert_file).unwrap_or(0)
    } else {
        0
    }
}

/// `m`'s files are a pair whose certificate has not expired.
fn serving(m: &ManagedCert, now: i64) -> bool {
    pair_loads(m)
        && std::fs::read(&m.cert_file)
            .ok()
            .and_then(|p| validity(&p))
            .is_some_and(|(_, to)| to > now)
}

fn read_secret(path: &Path, what: &str) -> Result<Secret<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{what} {}: {}", path.display(), e.kind()))?;
    let v = text.trim();
    if v.is_empty() {
        return Err(format!("{what} {}: empty", path.display()));
    }
    Ok(Secret::new(v.to_owned()))
}

/// Write `data` to `path` whole: a temporary file beside it, synced, renamed.
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", palisade_core::uuid_v4()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Vault's `errors` array of an error answer, for the log (Palisade never
/// echoes a token or a key in it).
fn errors_of(body: &Value) -> String {
    body.get("errors")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

/// A token the gateway logged in for, kept until two thirds of its TTL.
struct Cached {
    token: Secret<String>,
    renew_at: i64,
}

pub struct Client {
    cfg: PalisadeConfig,
    http: reqwest::Client,
    /// AppRole only: the current login's token.
    cached: tokio::sync::Mutex<Option<Cached>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("palisade::Client")
            .field("address", &self.cfg.address)
            .finish_non_exhaustive()
    }
}

/// An answer: its status and JSON body (`Null` when it had none).
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    fn ok(self, path: &str) -> Result<Value, String> {
        if (200..300).contains(&self.status) {
            Ok(self.body)
        } else {
            Err(format!("{path}: {} {}", self.status, errors_of(&self.body)))
        }
    }
}

impl Client {
    pub fn new(cfg: PalisadeConfig) -> Result<Self, String> {
        // no proxy from the environment, no redirects (they would carry the
        // token elsewhere)
        let mut b = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &cfg.ca_file {
            let pem =
                std::fs::read(ca).map_err(|e| format!("palisade.ca_file {}: {e}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("palisade.ca_file {}: {e}", ca.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "palisade.ca_file {}: holds no certificate",
                    ca.display()
                ));
            }
            b = b.tls_certs_only(certs);
        }
        let http = b
            .build()
            .map_err(|e| format!("palisade: http client: {e}"))?;
        Ok(Self {
            cfg,
            http,
            cached: tokio::sync::Mutex::new(None),
        })
    }

    /// The process's client for `cfg`: one per configuration, shared by the
    /// certificate renewals, the API key store and every reload, so an
    /// AppRole login is reused rather than repeated (and left behind) on
    /// each reload.
    pub fn shared(cfg: &PalisadeConfig) -> Result<Arc<Client>, String> {
        static SHARED: std::sync::Mutex<Option<Arc<Client>>> = std::sync::Mutex::new(None);
        let mut shared = SHARED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = shared.as_ref()
            && c.cfg == *cfg
        {
            return Ok(c.clone());
        }
        let c = Arc::new(Client::new(cfg.clone())?);
        *shared = Some(c.clone());
        Ok(c)
    }

    /// Revoke the current AppRole login, if any (the CLI when it is done).
    pub async fn logout(&self) {
        if let Some(old) = self.cached.lock().await.take() {
            self.revoke(&old.token).await;
        }
    }

    async fn revoke(&self, token: &Secret<String>) {
        let revoked = self
            .send(
                reqwest::Method::POST,
                "auth/token/revoke-self",
                Some(token),
                None,
            )
            .await;
        if !revoked.is_ok_and(|a| (200..300).contains(&a.status)) {
            tracing::warn!("palisade: could not revoke a login token (it expires by itself)");
        }
    }

    /// The same server with another token (the CLI's `VAULT_TOKEN`).
    pub fn with_token(&self, token: Secret<String>) -> Self {
        let mut cfg = self.cfg.clone();
        cfg.auth = Auth::Token(token);
        Self {
            cfg,
            http: self.http.clone(),
            cached: tokio::sync::Mutex::new(None),
        }
    }

    pub fn certificates(&self) -> &[ManagedCert] {
        &self.cfg.certificates
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&Secret<String>>,
        body: Option<&Value>,
    ) -> Result<Answer, String> {
        let mut req = self
            .http
            .request(method, format!("{}/v1/{path}", self.cfg.address));
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(t) = token {
            let mut v = hyper::header::HeaderValue::from_str(t.expose())
                .map_err(|_| "the token is not a header value".to_string())?;
            v.set_sensitive(true);
            req = req.header("x-vault-token", v);
        }
        let r = req.send().await.map_err(|e| {
            format!(
                "{path}: {}",
                if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "cannot connect"
                } else {
                    "request failed"
                }
            )
        })?;
        let status = r.status().as_u16();
        let bytes = super::read_limited(r, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer { status, body })
    }

    /// The token to call with: read from the file at each use, or the
    /// current AppRole login (a new one at two thirds of its TTL; the old
    /// one is revoked).
    async fn token(&self) -> Result<Secret<String>, String> {
        let (mount, role_id_file, secret_id_file) = match &self.cfg.auth {
            Auth::TokenFile(f) => return read_secret(f, "palisade.token_file"),
            Auth::Token(t) => return Ok(t.clone()),
            Auth::AppRole {
                mount,
                role_id_file,
                secret_id_file,
            } => (mount, role_id_file, secret_id_file),
        };
        let mut cached = self.cached.lock().await;
        let now = unix_now();
        if let Some(c) = cached.as_ref()
            && c.renew_at > now
        {
            return Ok(c.token.clone());
        }
        let role_id = read_secret(role_id_file, "palisade.approle.role_id_file")?;
        let secret_id = read_secret(secret_id_file, "palisade.approle.secret_id_file")?;
        let body = json!({"role_id": role_id.expose(), "secret_id": secret_id.expose()});
        let path = format!("auth/{mount}/login");
        let answer = self
            .send(reqwest::Method::POST, &path, None, Some(&body))
            .await?
            .ok(&path)?;
        let token = Secret::new(
            answer["auth"]["client_token"]
                .as_str()
                .ok_or(format!("{path}: no client_token in the answer"))?
                .to_owned(),
        );
        let ttl = answer["auth"]["lease_duration"].as_i64().unwrap_or(0);
        let renew_at = if ttl > 0 {
            now + ttl * 2 / 3
        } else {
            now + MAX_SLEEP
        };
        if let Some(old) = cached.replace(Cached {
            token: token.clone(),
            renew_at,
        }) {
            self.revoke(&old.token).await;
        }
        Ok(token)
    }

    /// A call with the gateway's token. A 403 with a cached AppRole token
    /// (revoked or expired early) logs in again and retries once.
    async fn authed(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, String> {
        let token = self.token().await?;
        let a = self.send(method.clone(), path, Some(&token), body).await?;
        if a.status == 403 && matches!(self.cfg.auth, Auth::AppRole { .. }) {
            // revoked or expired early, or simply not allowed: let go of it
            // (revoking what may still be live) and log in again once
            let old = self.cached.lock().await.take();
            if let Some(old) = old {
                self.revoke(&old.token).await;
            }
            let token = self.token().await?;
            return self.send(method, path, Some(&token), body).await;
        }
        Ok(a)
    }

    /// Issue `m` and write its files. Returns the new certificate's `not_after`.
    pub async fn issue(&self, m: &ManagedCert) -> Result<i64, String> {
        let mut req = json!({"common_name": m.common_name, "format": "pem"});
        for (k, list) in [
            ("alt_names", &m.alt_names),
            ("ip_sans", &m.ip_sans),
            ("uri_sans", &m.uri_sans),
        ] {
            if !list.is_empty() {
                req[k] = json!(list.join(","));
            }
        }
        if let Some(ttl) = &m.ttl {
            req["ttl"] = json!(ttl);
        }
        let path = format!("{}/issue/{}", m.mount, m.role);
        let answer = self
            .authed(reqwest::Method::POST, &path, Some(&req))
            .await?
            .ok(&path)?;
        write_issued(m, &path, &answer)
    }
}

/// Check an issue answer (the key is the certificate's, the certificate
/// parses and is valid) and write its files.
fn write_issued(m: &ManagedCert, path: &str, answer: &Value) -> Result<i64, String> {
    let data = &answer["data"];
    let cert = data["certificate"]
        .as_str()
        .ok_or(format!("{path}: no certificate in the answer"))?;
    let key = Secret::new(
        data["private_key"]
            .as_str()
            .ok_or(format!("{path}: no private_key in the answer"))?
            .to_owned(),
    );
    // the leaf, then the chain that issued it (the listener sends it)
    let mut chain = format!("{}\n", cert.trim_end());
    for c in data["ca_chain"].as_array().into_iter().flatten() {
        if let Some(c) = c.as_str()
            && c.trim() != cert.trim()
        {
            chain.push_str(c.trim_end());
            chain.push('\n');
        }
    }
    let (_, not_after) =
        validity(chain.as_bytes()).ok_or(format!("{path}: the certificate does not parse"))?;
    if not_after <= unix_now() {
        return Err(format!("{path}: the certificate has already expired"));
    }
    let key_pem = Secret::new(format!("{}\n", key.expose().trim_end()));
    // what the listener would refuse is not written: a chain and key rustls
    // cannot serve together
    {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_slice_iter(chain.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| format!("{path}: the certificate is not PEM"))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.expose().as_bytes())
            .map_err(|_| format!("{path}: the private key is not PEM"))?;
        crate::transport::tls::certified_key(certs, &key).map_err(|e| format!("{path}: {e}"))?;
    }
    write_atomic(&m.key_file, key_pem.expose().as_bytes(), 0o600)
        .map_err(|e| format!("{}: {e}", m.key_file.display()))?;
    write_atomic(&m.cert_file, chain.as_bytes(), 0o644)
        .map_err(|e| format!("{}: {e}", m.cert_file.display()))?;
    Ok(not_after)
}

/// The gateway's API key table as a KV v2 secret in Palisade
/// (`[apikeys] store = "palisade"`): read whole, written whole with
/// check-and-set on its version.
pub struct KvDocument {
    pub client: Arc<Client>,
    pub mount: String,
    pub path: String,
}

impl palisade_apikey::Document for KvDocument {
    fn read(&self) -> palisade_apikey::DocFuture<'_, (Option<Vec<u8>>, u64)> {
        Box::pin(async move {
            let path = format!("{}/data/{}", self.mount, self.path);
            let a = self
                .client
                .authed(reqwest::Method::GET, &path, None)
                .await?;
            if a.status == 404 {
                // never written (`{"errors": []}`), or its latest version
                // deleted (the metadata comes along: a write must name that
                // version). Any other 404 — no such mount, not a KV v2
                // path — is an error, not an empty table.
                if let Some(v) = a.body["data"]["metadata"]["version"].as_u64() {
                    return Ok((None, v));
                }
                if a.body["errors"].as_array().is_some_and(Vec::is_empty) {
                    return Ok((None, 0));
                }
                return Err(format!("{path}: 404 {}", errors_of(&a.body)));
            }
            let body = a.ok(&path)?;
            let version = body["data"]["metadata"]["version"]
                .as_u64()
                .ok_or(format!("{path}: no version in the answer"))?;
            let data = serde_json::to_vec(&body["data"]["data"]).map_err(|e| e.to_string())?;
            Ok((Some(data), version))
        })
    }

    fn write(&self, body: Vec<u8>, version: u64) -> palisade_apikey::DocFuture<'_, bool> {
        Box::pin(async move {
            let path = format!("{}/data/{}", self.mount, self.path);
            let data: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
            let req = json!({"options": {"cas": version}, "data": data});
            let a = self
                .client
                .authed(reqwest::Method::POST, &path, Some(&req))
                .await?;
            if a.status == 400
                && errors_of(&a.body).contains("check-and-set parameter did not match")
            {
                return Ok(false);
            }
            let body = a.ok(&path)?;
            // KV v2 answers the version it wrote; KV v1 would have stored
            // the request itself as the secret
            if body["data"]["version"].as_u64().is_none() {
                return Err(format!(
                    "{path}: no version in the answer: is {} a KV v2 mount?",
                    self.mount
                ));
            }
            Ok(true)
        })
    }
}

/// At start: issue every certificate whose files are missing or due. One
/// that cannot be issued while its current certificate is still valid is
/// only a warning (it is retried by the renewal loop); without a valid
/// certificate the gateway does not start.
pub async fn ensure(client: &Client) -> Result<(), String> {
    for m in client.certificates() {
        let now = unix_now();
        if due_at(m) > now {
            continue;
        }
        match client.issue(m).await {
            Ok(not_after) => {
                metrics::counter!("palisade_gateway_certificate_renewals_total", "result" => "ok")
                    .increment(1);
                tracing::info!(cert_file = %m.cert_file.display(), not_after, "certificate issued by palisade");
            }
            Err(e) => {
                metrics::counter!("palisade_gateway_certificate_renewals_total", "result" => "failed")
                    .increment(1);
                if !serving(m, now) {
                    return Err(format!("palisade: {e}"));
                }
                tracing::warn!(cert_file = %m.cert_file.display(), error = %e, "certificate renewal failed; the current certificate keeps serving");
            }
        }
    }
    Ok(())
}

/// Renew each certificate when it is due, until `stop`; after a renewal,
/// `renewed` is told (the gateway reloads).
pub async fn renewal_loop(
    client: Arc<Client>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    renewed: Arc<tokio::sync::Notify>,
) {
    let n = client.certificates().len();
    let mut failures = vec![0u32; n];
    let mut retry_at = vec![0i64; n];
    loop {
        let now = unix_now();
        let mut next = now + MAX_SLEEP;
        let mut any = false;
        for (i, m) in client.certificates().iter().enumerate() {
            if retry_at[i] > now {
                next = next.min(retry_at[i]);
                continue;
            }
            let due = due_at(m);
            if due > now {
                next = next.min(due);
                continue;
            }
            match client.issue(m).await {
                Ok(not_after) => {
                    metrics::counter!("palisade_gateway_certificate_renewals_total", "result" => "ok")
                        .increment(1);
                    tracing::info!(cert_file = %m.cert_file.display(), not_after, "certificate renewed by palisade");
                    failures[i] = 0;
                    retry_at[i] = 0;
                    any = true;
                    if let Some(at) = renew_at(&m.cert_file) {
                        next = next.min(at);
                    }
                }
                Err(e) => {
                    metrics::counter!("palisade_gateway_certificate_renewals_total", "result" => "failed")
                        .increment(1);
                    failures[i] += 1;
                    let wait = (FIRST_RETRY << (failures[i] - 1).min(8)).min(MAX_RETRY);
                    retry_at[i] = now + wait;
                    next = next.min(retry_at[i]);
                    tracing::error!(cert_file = %m.cert_file.display(), error = %e, retry_in_s = wait, "certificate renewal failed; the current certificate keeps serving");
                }
            }
        }
        if any {
            renewed.notify_one();
        }
        let sleep = Duration::from_secs((next - unix_now()).clamp(1, MAX_SLEEP) as u64);
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_replaced_whole_with_their_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        std::fs::write(&p, "old").unwrap();
        write_atomic(&p, b"new", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // no temporary file left behind
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn renewal_is_due_at_two_thirds_of_the_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.pem");
        assert_eq!(renew_at(&p), None);
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2026, 1, 4);
        let key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&p, params.self_signed(&key).unwrap().pem()).unwrap();
        let at = |secs: i64| {
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(secs as u64))
                .unwrap();
            renew_at(&p)
        };
        // written before its not_before (2026-01-01T00:00:00Z): 2 of 3 days
        assert_eq!(at(1_767_000_000), Some(1_767_225_600 + 2 * 86_400));
        // written a day after not_before (a backdated certificate): two
        // thirds of the two days left
        let written = 1_767_225_600 + 86_400;
        assert_eq!(at(written), Some(written + 2 * 86_400 * 2 / 3));
        // written after not_after: due at not_after
        assert_eq!(
            at(1_767_225_600 + 10 * 86_400),
            Some(1_767_225_600 + 3 * 86_400)
        );
        std::fs::write(&p, "not a certificate").unwrap();
        assert_eq!(renew_at(&p), None);
    }

    fn managed(dir: &Path) -> ManagedCert {
        ManagedCert {
            mount: "pki".into(),
            role: "r".into(),
            common_name: "localhost".into(),
            alt_names: vec![],
            ip_sans: vec![],
            uri_sans: vec![],
            ttl: None,
            cert_file: dir.join("c.pem"),
            key_file: dir.join("c.key"),
        }
    }

    /// A certificate valid now for a day, and its key (PEMs).
    fn cert_and_key() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        let now = time_now();
        params.not_before = now - ::time::Duration::hours(1);
        params.not_after = now + ::time::Duration::days(1);
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    fn time_now() -> ::time::OffsetDateTime {
        ::time::OffsetDateTime::from_unix_timestamp(unix_now()).unwrap()
    }

    #[test]
    fn an_answer_whose_key_is_not_the_certificates_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let m = managed(dir.path());
        let (cert, key) = cert_and_key();
        let (_, other_key) = cert_and_key();
        let answer =
            |k: &str| json!({"data": {"certificate": cert, "private_key": k, "ca_chain": []}});
        // deny: another key, garbage, nothing written
        let e = write_issued(&m, "pki/issue/r", &answer(&other_key)).unwrap_err();
        assert!(
            e.starts_with("pki/issue/r: the certificate does not match the key"),
            "{e}"
        );
        assert!(write_issued(&m, "pki/issue/r", &answer("not a key")).is_err());
        assert!(!m.cert_file.exists() && !m.key_file.exists());
        // allow: the pair is written, serving, not due
        write_issued(&m, "pki/issue/r", &answer(&key)).unwrap();
        assert!(serving(&m, unix_now()) && due_at(&m) > unix_now());
        // a key that is not the certificate's on disk (a crash between the
        // two renames, a hand edit): due at once, and not serving
        std::fs::write(&m.key_file, &other_key).unwrap();
        assert_eq!(due_at(&m), 0);
        assert!(!serving(&m, unix_now()));
    }
}
