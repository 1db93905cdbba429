//! The transit secrets engine: encryption, signing and HMAC as a service,
//! with Vault's paths, parameters and JSON shapes (docs/api-compat.md).
//!
//! Storage inside the mount's view: `policy/<name>`, one barrier entry per
//! named key holding every version's key material (raw bytes for the
//! symmetric types, PKCS#8 for the asymmetric ones) and the key's settings.
//! A change to a key (create, rotate, config, trim) rewrites that entry
//! under the key's lock, so a key is always whole: a crash leaves the old
//! entry or the new one. Key material exists only behind the barrier and in
//! memory while a request uses it; audit devices HMAC every response string,
//! exported keys and decrypted plaintexts included.
//!
//! The cryptography is `palisade_crypto::transit` (aws-lc-rs).

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use palisade_barrier::View;
use palisade_crypto::transit::{
    self as tc, HashAlg, KeyType, Marshaling, RsaPadding, SignOptions, TransitError,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use super::{check_name, opt, opt_string, pem};
use crate::core::Authorized;
use crate::engines::kv::KeyLocks;
use crate::logical::{ApiError, Operation, Response, fields};

/// Highest key version: rotation stops there (a version number never
/// wraps), and a restored backup may not claim more.
const MAX_KEY_VERSION: u32 = 1 << 31;
/// Shortest automatic rotation period (Vault's).
const MIN_AUTO_ROTATE_SECS: i64 = 3600;
/// Most items one batch request may carry: bounds the CPU one request can
/// take (an RSA-4096 signature costs milliseconds).
pub const MAX_BATCH: usize = 10_000;
/// `random`: most bytes per request (Vault's limit).
const MAX_RANDOM_BYTES: i64 = 128 * 1024;
/// HMAC key sizes accepted for `type=hmac` (Vault's bounds).
const HMAC_KEY_MIN: i64 = 32;
const HMAC_KEY_MAX: i64 = 512;
/// Batches of more items than this, and every asymmetric operation, run on
/// the blocking pool instead of a runtime worker.
const INLINE_ITEMS: usize = 16;

// ------------------------------------------------------------ stored form

mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};
    use zeroize::Zeroizing;

    pub(super) fn serialize<S: Serializer>(
        v: &Zeroizing<Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&v[..]))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Zeroizing<Vec<u8>>, D::Error> {
        let s = Zeroizing::new(String::deserialize(d)?);
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(Zeroizing::new)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct KeyVersion {
    #[serde(with = "b64")]
    key: Zeroizing<Vec<u8>>,
    /// Every version also has an HMAC key (Vault's `hmac` on any key type).
    #[serde(with = "b64")]
    hmac_key: Zeroizing<Vec<u8>>,
    /// Unix nanoseconds.
    creation_time: i64,
    /// Public half (SubjectPublicKeyInfo DER, raw for Ed25519), base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
}

#[derive(Clone, Serialize, Deserialize)]
struct Policy {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    derived: bool,
    convergent: bool,
    exportable: bool,
    allow_plaintext_backup: bool,
    deletion_allowed: bool,
    min_decryption_version: u32,
    /// 0: the latest version.
    min_encryption_version: u32,
    latest_version: u32,
    /// Versions below this were trimmed (0: none).
    min_available_version: u32,
    auto_rotate_period: i64,
    hmac_key_size: usize,
    versions: BTreeMap<u32, KeyVersion>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Policy({}, {}, v{})",
            self.name, self.kind, self.latest_version
        )
    }
}

impl Policy {
    fn key_type(&self) -> Result<KeyType, ApiError> {
        KeyType::parse(&self.kind).ok_or_else(|| ApiError::internal("stored key of unknown type"))
    }

    fn new_version(&self, kind: KeyType) -> Result<KeyVersion, ApiError> {
        let key = tc::generate(kind, self.hmac_key_size).map_err(crypto_err)?;
        let hmac_key = if kind == KeyType::Hmac {
            key.clone()
        } else {
            Zeroizing::new(palisade_crypto::random_bytes(32))
        };
        let public_key = tc::public_key(kind, &key)
            .map_err(crypto_err)?
            .map(|p| STANDARD.encode(p));
        Ok(KeyVersion {
            key,
            hmac_key,
            creation_time: palisade_core::now_nanos(),
            public_key,
        })
    }

    fn rotate(&mut self) -> Result<(), ApiError> {
        if self.latest_version >= MAX_KEY_VERSION {
            return Err(ApiError::bad_request(
                "the key has reached its highest version and cannot be rotated",
            ));
        }
        let kind = self.key_type()?;
        let v = self.new_version(kind)?;
        self.latest_version += 1;
        self.versions.insert(self.latest_version, v);
        Ok(())
    }

    fn version(&self, v: u32) -> Result<&KeyVersion, ApiError> {
        self.versions
            .get(&v)
            .ok_or_else(|| ApiError::bad_request("no such key version"))
    }

    /// The version an encrypt, sign or HMAC uses: `requested` (0: latest),
    /// never below `min_encryption_version`.
    fn encryption_version(&self, requested: u32) -> Result<u32, ApiError> {
        if requested == 0 {
            return Ok(self.latest_version);
        }
        if requested > self.latest_version {
            return Err(ApiError::bad_request(
                "requested version for encryption is higher than the latest key version",
            ));
        }
        if self.min_encryption_version != 0 && requested < self.min_encryption_version {
            return Err(ApiError::bad_request(
                "requested version for encryption is less than the minimum encryption key version",
            ));
        }
        // a retired version (below min_decryption_version) makes nothing
        // new: what it would encrypt could not be decrypted, what it would
        // sign should no longer be trusted
        if requested < self.min_decryption_version {
            return Err(ApiError::bad_request(
                "requested version is below the minimum decryption version: it is retired",
            ));
        }
        Ok(requested)
    }

    /// A version a decrypt or verify may use.
    fn decryption_version(&self, v: u32) -> Result<&KeyVersion, ApiError> {
        if v < self.min_decryption_version {
            return Err(ApiError::bad_request(
                "ciphertext or signature version is disallowed by policy (too old)",
            ));
        }
        if v > self.latest_version {
            return Err(ApiError::bad_request(
                "invalid ciphertext: version is too new",
            ));
        }
        self.version(v)
    }

    /// The key an encrypt or decrypt uses: the version's key, or the key
    /// derived from it for `context` when the key is derived.
    fn cipher_key(
        &self,
        v: &KeyVersion,
        context: Option<&[u8]>,
    ) -> Result<Zeroizing<Vec<u8>>, ApiError> {
        match (self.derived, context) {
            (true, Some(c)) if !c.is_empty() => tc::derive_key(&v.key, c).map_err(crypto_err),
            (true, _) => Err(ApiError::bad_request(
                "missing 'context' for key derivation; the key was created using a derived key, which means additional, per-request information must be included in order to perform operations with the key",
            )),
            (false, Some(_)) => Err(ApiError::bad_request(
                "context was given but the key is not derived: a context binds nothing here",
            )),
            (false, None) => Ok(v.key.clone()),
        }
    }

    fn to_json(&self) -> Value {
        let kind = KeyType::parse(&self.kind);
        let mut keys = Map::new();
        for (n, v) in self.versions.range(self.min_decryption_version..) {
            let entry = match (kind, &v.public_key) {
                (Some(k), Some(p)) => json!({
                    "creation_time": palisade_core::rfc3339(v.creation_time),
                    "name": public_key_name(k),
                    "public_key": public_key_text(k, p),
                    "certificate_chain": "",
                }),
                _ => json!(v.creation_time / 1_000_000_000),
            };
            keys.insert(n.to_string(), entry);
        }
        let kind = kind.unwrap_or(KeyType::Aes256Gcm96);
        let mut d = json!({
            "name": self.name,
            "type": self.kind,
            "deletion_allowed": self.deletion_allowed,
            "derived": self.derived,
            "exportable": self.exportable,
            "allow_plaintext_backup": self.allow_plaintext_backup,
            "imported_key": false,
            "soft_deleted": false,
            "latest_version": self.latest_version,
            "min_available_version": self.min_available_version,
            "min_decryption_version": self.min_decryption_version,
            "min_encryption_version": self.min_encryption_version,
            "auto_rotate_period": self.auto_rotate_period,
            "supports_encryption": kind.supports_encryption(),
            "supports_decryption": kind.supports_encryption(),
            "supports_derivation": kind.supports_derivation(),
            "supports_signing": kind.supports_signing(),
        });
        if let Some(o) = d.as_object_mut() {
            if kind == KeyType::Hmac {
                o.insert("key_size".into(), json!(self.hmac_key_size));
            } else {
                o.insert("keys".into(), Value::Object(keys));
            }
            if self.derived {
                o.insert("kdf".into(), json!("hkdf_sha256"));
                o.insert("convergent_encryption".into(), json!(self.convergent));
                if self.convergent {
                    o.insert("convergent_encryption_version".into(), json!(3));
                }
            }
        }
        d
    }
}

fn public_key_name(k: KeyType) -> &'static str {
    match k {
        KeyType::EcdsaP256 => "P-256",
        KeyType::EcdsaP384 => "P-384",
        other => other.as_str(),
    }
}

/// Vault's public key text: PEM for ECDSA and RSA, base64 for Ed25519.
fn public_key_text(k: KeyType, b64: &str) -> String {
    if k == KeyType::Ed25519 {
        return b64.to_string();
    }
    match STANDARD.decode(b64) {
        Ok(der) => pem("PUBLIC KEY", &der),
        Err(_) => String::new(),
    }
}

fn crypto_err(e: TransitError) -> ApiError {
    match e {
        TransitError::Open => ApiError::bad_request(e.to_string()),
        TransitError::Unsupported(m) => ApiError::bad_request(m),
        TransitError::TooLong => ApiError::bad_request(e.to_string()),
        TransitError::Key | TransitError::Internal => ApiError::internal(e),
    }
}

// ------------------------------------------------------------ paths

fn policy_key(name: &str) -> String {
    format!("policy/{name}")
}

async fn load(view: &View, name: &str) -> Result<Option<Policy>, ApiError> {
    match view.get(&policy_key(name)).await? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(ApiError::internal),
    }
}

async fn store(view: &View, p: &Policy) -> Result<(), ApiError> {
    let bytes = Zeroizing::new(serde_json::to_vec(p).map_err(ApiError::internal)?);
    view.put(&policy_key(&p.name), &bytes).await?;
    Ok(())
}

/// Existence check for the ACL: only `encrypt/<name>` has one (Vault's):
/// encrypting with a key that does not exist creates it, which needs
/// `create`; everything else is an update.
pub async fn exists(rel: &str, view: &View) -> Result<bool, ApiError> {
    if let Some(name) = rel.strip_prefix("encrypt/")
        && check_name(name).is_ok()
    {
        return Ok(view.get(&policy_key(name)).await?.is_some());
    }
    Ok(true)
}

pub async fn handle(
    auth: &Authorized,
    rel: &str,
    view: &View,
    locks: &KeyLocks,
) -> Result<Response, ApiError> {
    let req = auth.request();
    let op = req.operation;
    let parts: Vec<&str> = rel.split('/').collect();
    let d = &req.data;
    match (op, parts.as_slice()) {
        (Operation::List, ["keys"] | ["keys", ""]) => {
            let keys = view.list("policy/").await?;
            if keys.is_empty() {
                return Err(ApiError::not_found());
            }
            Ok(Response::data(json!({ "keys": keys })))
        }
        (Operation::Read, ["keys", name]) => {
            let name = check_name(name)?;
            match load(view, name).await? {
                Some(p) => Ok(Response::data(p.to_json())),
                None => Err(ApiError::not_found()),
            }
        }
        (Operation::Write, ["keys", name]) => create_key(d, view, locks, check_name(name)?).await,
        (Operation::Delete, ["keys", name]) => delete_key(view, locks, check_name(name)?).await,
        (Operation::Write, ["keys", name, "config"]) => {
            config_key(d, view, locks, check_name(name)?).await
        }
        (Operation::Write, ["keys", name, "rotate"]) => {
            let name = check_name(name)?;
            let _g = locks.lock(view, &policy_key(name)).await;
            let mut p = load(view, name)
                .await?
                .ok_or_else(|| ApiError::bad_request("key not found"))?;
            rotate_blocking(&mut p).await?;
            store(view, &p).await?;
            Ok(Response::data(p.to_json()))
        }
        (Operation::Write, ["keys", name, "trim"]) => {
            trim_key(d, view, locks, check_name(name)?).await
        }
        (Operation::Read, ["export", kind, name]) => {
            export(view, kind, check_name(name)?, None).await
        }
        (Operation::Read, ["export", kind, name, version]) => {
            export(view, kind, check_name(name)?, Some(version)).await
        }
        (Operation::Read, ["backup", name]) => backup(view, check_name(name)?).await,
        (Operation::Write, ["restore"]) => restore(d, view, locks, None).await,
        (Operation::Write, ["restore", name]) => {
            restore(d, view, locks, Some(check_name(name)?)).await
        }
        (Operation::Write, ["encrypt", name]) => encrypt(d, view, locks, check_name(name)?).await,
        (Operation::Write, ["decrypt", name]) => decrypt(d, view, check_name(name)?).await,
        (Operation::Write, ["rewrap", name]) => rewrap(d, view, check_name(name)?).await,
        (Operation::Write, ["datakey", kind, name]) => {
            datakey(d, view, kind, check_name(name)?).await
        }
        (Operation::Write, ["random"]) => random(d, None, None),
        (Operation::Write, ["random", a]) => {
            if a.bytes().all(|c| c.is_ascii_digit()) {
                random(d, None, Some(a))
            } else {
                random(d, Some(a), None)
            }
        }
        (Operation::Write, ["random", source, bytes]) => random(d, Some(source), Some(bytes)),
        (Operation::Write, ["hash"]) => hash(d, None),
        (Operation::Write, ["hash", alg]) => hash(d, Some(alg)),
        (Operation::Write, ["hmac", name]) => hmac(d, view, check_name(name)?, None).await,
        (Operation::Write, ["hmac", name, alg]) => {
            hmac(d, view, check_name(name)?, Some(alg)).await
        }
        (Operation::Write, ["sign", name]) => sign(d, view, check_name(name)?, None).await,
        (Operation::Write, ["sign", name, alg]) => {
            sign(d, view, check_name(name)?, Some(alg)).await
        }
        (Operation::Write, ["verify", name]) => verify(d, view, check_name(name)?, None).await,
        (Operation::Write, ["verify", name, alg]) => {
            verify(d, view, check_name(name)?, Some(alg)).await
        }
        (
            _,
            ["keys"]
            | ["keys", _]
            | ["keys", _, "config" | "rotate" | "trim"]
            | ["export", _, _]
            | ["backup", _]
            | ["restore"]
            | ["restore", _]
            | ["export", _, _, _]
            | [
                "encrypt" | "decrypt" | "rewrap" | "hmac" | "sign" | "verify",
                _,
            ]
            | ["hmac" | "sign" | "verify" | "datakey" | "random", _, _]
            | ["random" | "hash"]
            | ["random" | "hash", _],
        ) => Err(ApiError::unsupported_operation()),
        _ => Err(ApiError::unsupported_path()),
    }
}

// ------------------------------------------------------------ fields

fn opt_bool(d: &Map<String, Value>, name: &str) -> Result<Option<bool>, ApiError> {
    opt(d, name).map(|v| fields::boolean(v, name)).transpose()
}

fn opt_version(d: &Map<String, Value>, name: &str) -> Result<u32, ApiError> {
    match opt(d, name) {
        None => Ok(0),
        Some(v) => {
            let n = fields::int(v, name)?;
            u32::try_from(n)
                .map_err(|_| ApiError::bad_request(format!("field {name:?}: invalid key version")))
        }
    }
}

/// A base64 field (standard alphabet, padded, as Vault's Go decoder takes).
fn b64_field(d: &Map<String, Value>, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, ApiError> {
    match opt_string(d, name)? {
        None => Ok(None),
        Some(s) => STANDARD
            .decode(s.as_bytes())
            .map(|b| Some(Zeroizing::new(b)))
            .map_err(|_| ApiError::bad_request(format!("field {name:?}: invalid base64"))),
    }
}

/// The single request or the batch: the batch's items, or the top-level
/// fields as one item. Giving both is refused: Vault would silently act on
/// the batch alone.
fn items(
    d: &Map<String, Value>,
    single: &[&str],
) -> Result<(Vec<Map<String, Value>>, bool), ApiError> {
    match opt(d, "batch_input") {
        None => Ok((vec![d.clone()], false)),
        Some(Value::Array(a)) => {
            if let Some(f) = single.iter().find(|f| opt(d, f).is_some()) {
                return Err(ApiError::bad_request(format!(
                    "{f} and batch_input are mutually exclusive"
                )));
            }
            if a.is_empty() {
                return Err(ApiError::bad_request("missing batch input to process"));
            }
            if a.len() > MAX_BATCH {
                return Err(ApiError::bad_request(format!(
                    "batch_input has more than {MAX_BATCH} items"
                )));
            }
            a.iter()
                .map(|v| match v {
                    Value::Object(o) => Ok(o.clone()),
                    _ => Err(ApiError::bad_request("batch_input items must be objects")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|v| (v, true))
        }
        Some(_) => Err(ApiError::bad_request(
            "batch_input must be a list of objects",
        )),
    }
}

/// An input to sign and the key version asked for.
type Signable = (Zeroizing<Vec<u8>>, u32);

/// One item's outcome: its output fields, or a client error.
type ItemResult = Result<Map<String, Value>, ApiError>;

/// Vault's batch answer: each item's fields or `error`, with `reference`
/// echoed; 400 when an item failed (500 for a server fault), or
/// `partial_failure_response_code` when some succeeded. A single request
/// answers its fields or the error itself.
fn respond(
    d: &Map<String, Value>,
    inputs: &[Map<String, Value>],
    results: Vec<ItemResult>,
    batch: bool,
) -> Result<Response, ApiError> {
    if !batch {
        let r = results
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::internal("no result"))?;
        return r.map(|m| Response::data(Value::Object(m)));
    }
    let (mut user_err, mut internal_err, mut ok) = (false, false, false);
    let out: Vec<Value> = results
        .into_iter()
        .zip(inputs)
        .map(|(r, input)| {
            let mut m = match r {
                Ok(m) => {
                    ok = true;
                    m
                }
                Err(e) => {
                    if e.status >= 500 {
                        internal_err = true;
                    } else {
                        user_err = true;
                    }
                    let mut m = Map::new();
                    m.insert("error".into(), json!(e.messages.join("; ")));
                    m
                }
            };
            let reference = input.get("reference").cloned().unwrap_or(json!(""));
            m.insert("reference".into(), reference);
            Value::Object(m)
        })
        .collect();
    let mut resp = Response::data(json!({ "batch_results": out }));
    if user_err || internal_err {
        let mut code = if internal_err { 500 } else { 400 };
        if ok && let Some(v) = opt(d, "partial_failure_response_code") {
            let c = fields::int(v, "partial_failure_response_code")?;
            // a status that carries the batch results: 2xx with a body, or 4xx
            if ((200..=299).contains(&c) && c != 204 && c != 205) || (400..=499).contains(&c) {
                code = c as u16;
            } else {
                resp = resp.warn(
                    "partial_failure_response_code must be a 2xx status with a body or a 4xx: ignored",
                );
            }
        }
        resp = resp.with_status(code);
    }
    Ok(resp)
}

/// `vault:v<N>:<base64>`: the version and the decoded bytes. The version
/// must be a canonical positive decimal (no sign, no leading zero).
fn parse_vault_value(s: &str, what: &str, url_safe: bool) -> Result<(u32, Vec<u8>), ApiError> {
    let rest = s
        .strip_prefix("vault:v")
        .ok_or_else(|| ApiError::bad_request(format!("invalid {what}: no prefix")))?;
    let (ver, body) = rest
        .split_once(':')
        .ok_or_else(|| ApiError::bad_request(format!("invalid {what}: wrong number of fields")))?;
    let canonical =
        !ver.is_empty() && ver.bytes().all(|c| c.is_ascii_digit()) && !ver.starts_with('0');
    let v: u32 = ver
        .parse()
        .ok()
        .filter(|_| canonical)
        .ok_or_else(|| ApiError::bad_request(format!("invalid {what}: invalid version")))?;
    let bytes = if url_safe {
        URL_SAFE_NO_PAD.decode(body)
    } else {
        STANDARD.decode(body)
    }
    .map_err(|_| ApiError::bad_request(format!("invalid {what}: could not decode base64")))?;
    Ok((v, bytes))
}

fn vault_value(v: u32, bytes: &[u8], url_safe: bool) -> String {
    let b = if url_safe {
        URL_SAFE_NO_PAD.encode(bytes)
    } else {
        STANDARD.encode(bytes)
    };
    format!("vault:v{v}:{b}")
}

/// Run `f` inline when it is cheap, else on the blocking pool.
async fn compute<T: Send + 'static>(
    heavy: bool,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    if heavy {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| ApiError::internal(format!("transit task: {e}")))
    } else {
        Ok(f())
    }
}

async fn rotate_blocking(p: &mut Policy) -> Result<(), ApiError> {
    let mut owned = p.clone();
    let heavy = owned.key_type()?.is_asymmetric();
    *p = compute(heavy, move || owned.rotate().map(|_| owned)).await??;
    Ok(())
}

async fn existing(view: &View, name: &str, what: &str) -> Result<Policy, ApiError> {
    load(view, name)
        .await?
        .ok_or_else(|| ApiError::bad_request(format!("{what} key not found")))
}

// ------------------------------------------------------------ keys

fn hmac_key_size(d: &Map<String, Value>, kind: KeyType) -> Result<usize, ApiError> {
    match opt(d, "key_size") {
        None => Ok(32),
        Some(v) => {
            let n = fields::int(v, "key_size")?;
            if n == 0 {
                return Ok(32);
            }
            if kind != KeyType::Hmac {
                return Err(ApiError::bad_request(format!(
                    "key_size is not valid for algorithm {}",
                    kind.as_str()
                )));
            }
            if !(HMAC_KEY_MIN..=HMAC_KEY_MAX).contains(&n) {
                return Err(ApiError::bad_request(format!("invalid key_size {n}"))
                    .audited_as("invalid key_size"));
            }
            Ok(n as usize)
        }
    }
}

fn auto_rotate_period(v: &Value) -> Result<i64, ApiError> {
    let secs = fields::duration_secs(v, "auto_rotate_period")?;
    if secs != 0 && secs < MIN_AUTO_ROTATE_SECS {
        return Err(ApiError::bad_request(
            "auto rotate period must be 0 to disable or at least an hour",
        ));
    }
    Ok(secs)
}

/// A new key's settings from a create (or an encrypt that creates).
fn new_policy(d: &Map<String, Value>, name: &str, upsert: bool) -> Result<Policy, ApiError> {
    let type_name = opt_string(d, "type")?.unwrap_or_else(|| "aes256-gcm96".into());
    let kind = KeyType::parse(&type_name).ok_or_else(|| {
        ApiError::bad_request(format!("unknown key type {type_name}"))
            .audited_as("unknown key type")
    })?;
    if upsert && !kind.is_aead() {
        return Err(ApiError::bad_request(format!(
            "unknown key type {type_name}: a key created by encrypt must be aes256-gcm96 or chacha20-poly1305"
        )));
    }
    let derived = opt_bool(d, "derived")?.unwrap_or(false);
    let convergent = opt_bool(d, "convergent_encryption")?.unwrap_or(false);
    if convergent && !derived {
        return Err(ApiError::bad_request(
            "convergent encryption requires derivation to be enabled",
        ));
    }
    if derived && !kind.supports_derivation() {
        return Err(ApiError::bad_request(format!(
            "key derivation is not supported for key type {type_name}"
        )));
    }
    // encrypt's upsert takes only the key's kind (as OpenBao): exportable,
    // plaintext backups and rotation are set with keys/:name, where the
    // ACL asks for rights on the key itself
    let setting = |field: &str| if upsert { Ok(None) } else { opt_bool(d, field) };
    Ok(Policy {
        name: name.to_string(),
        kind: kind.as_str().to_string(),
        derived,
        convergent,
        exportable: setting("exportable")?.unwrap_or(false),
        allow_plaintext_backup: setting("allow_plaintext_backup")?.unwrap_or(false),
        deletion_allowed: false,
        min_decryption_version: 1,
        min_encryption_version: 0,
        latest_version: 0,
        min_available_version: 0,
        auto_rotate_period: match upsert {
            true => 0,
            false => opt(d, "auto_rotate_period")
                .map(auto_rotate_period)
                .transpose()?
                .unwrap_or(0),
        },
        hmac_key_size: if upsert { 32 } else { hmac_key_size(d, kind)? },
        versions: BTreeMap::new(),
    })
}

async fn create_key(
    d: &Map<String, Value>,
    view: &View,
    locks: &KeyLocks,
    name: &str,
) -> Result<Response, ApiError> {
    let mut p = new_policy(d, name, false)?;
    let _g = locks.lock(view, &policy_key(name)).await;
    if let Some(existing) = load(view, name).await? {
        // Vault answers an existing key unchanged
        return Ok(Response::data(existing.to_json()));
    }
    rotate_blocking(&mut p).await?;
    store(view, &p).await?;
    Ok(Response::data(p.to_json()))
}

async fn delete_key(view: &View, locks: &KeyLocks, name: &str) -> Result<Response, ApiError> {
    let _g = locks.lock(view, &policy_key(name)).await;
    let p = load(view, name).await?.ok_or_else(|| {
        ApiError::bad_request(format!(
            "error deleting policy {name}: could not delete key; not found"
        ))
    })?;
    if !p.deletion_allowed {
        return Err(ApiError::bad_request(format!(
            "error deleting policy {name}: deletion is not allowed for this key"
        )));
    }
    view.delete(&policy_key(name)).await?;
    Ok(Response::no_content())
}

async fn config_key(
    d: &Map<String, Value>,
    view: &View,
    locks: &KeyLocks,
    name: &str,
) -> Result<Response, ApiError> {
    let _g = locks.lock(view, &policy_key(name)).await;
    let mut p = load(view, name).await?.ok_or_else(|| {
        ApiError::bad_request("no existing key named ".to_string() + name + " could be found")
    })?;
    if let Some(v) = opt(d, "min_decryption_version") {
        let n = fields::int(v, "min_decryption_version")?;
        if n != 0 {
            let n = u32::try_from(n)
                .map_err(|_| ApiError::bad_request("min decryption version must be positive"))?;
            if n > p.latest_version {
                return Err(ApiError::bad_request(
                    "cannot set min decryption version of greater than the latest version",
                ));
            }
            if p.min_available_version != 0 && n < p.min_available_version {
                return Err(ApiError::bad_request(format!(
                    "cannot set min decryption version of {n}, key versions below {} were trimmed",
                    p.min_available_version
                ))
                .audited_as("cannot set min decryption version below the trimmed versions"));
            }
            p.min_decryption_version = n;
        }
    }
    if let Some(v) = opt(d, "min_encryption_version") {
        let n = fields::int(v, "min_encryption_version")?;
        let n = u32::try_from(n)
            .map_err(|_| ApiError::bad_request("min encryption version must not be negative"))?;
        if n > p.latest_version {
            return Err(ApiError::bad_request(
                "cannot set min encryption version of greater than the latest version",
            ));
        }
        p.min_encryption_version = n;
    }
    if p.min_encryption_version != 0 && p.min_encryption_version < p.min_decryption_version {
        return Err(ApiError::bad_request(
            "min encryption version should not be less than min decryption version",
        ));
    }
    if let Some(b) = opt_bool(d, "deletion_allowed")? {
        p.deletion_allowed = b;
    }
    if let Some(b) = opt_bool(d, "exportable")? {
        if p.exportable && !b {
            return Err(ApiError::bad_request(
                "export cannot be disabled on a key that already has it enabled",
            ));
        }
        p.exportable = b;
    }
    if let Some(b) = opt_bool(d, "allow_plaintext_backup")? {
        if p.allow_plaintext_backup && !b {
            return Err(ApiError::bad_request(
                "plaintext backup cannot be disabled on a key that already has it enabled",
            ));
        }
        p.allow_plaintext_backup = b;
    }
    if let Some(v) = opt(d, "auto_rotate_period") {
        p.auto_rotate_period = auto_rotate_period(v)?;
    }
    store(view, &p).await?;
    Ok(Response::data(p.to_json()))
}

async fn trim_key(
    d: &Map<String, Value>,
    view: &View,
    locks: &KeyLocks,
    name: &str,
) -> Result<Response, ApiError> {
    let _g = locks.lock(view, &policy_key(name)).await;
    let mut p = existing(view, name, "encryption").await?;
    let n = match opt(d, "min_available_version") {
        None => return Err(ApiError::bad_request("missing min_available_version")),
        Some(v) => fields::int(v, "min_available_version")?,
    };
    if p.min_encryption_version == 0 {
        return Err(ApiError::bad_request(
            "minimum available version cannot be set when minimum encryption version is not set",
        ));
    }
    let n = u32::try_from(n)
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| ApiError::bad_request("minimum available version should be positive"))?;
    if n > p.min_encryption_version {
        return Err(ApiError::bad_request(
            "minimum available version should not be greater than minimum encryption version",
        ));
    }
    if n > p.min_decryption_version {
        return Err(ApiError::bad_request(
            "minimum available version should not be greater than minimum decryption version",
        ));
    }
    if n < p.min_available_version {
        return Err(ApiError::bad_request(
            "minimum available version should not be less than existing minimum available version",
        ));
    }
    p.versions.retain(|v, _| *v >= n);
    p.min_available_version = n;
    store(view, &p).await?;
    Ok(Response::data(p.to_json()))
}

async fn export(
    view: &View,
    kind_s: &str,
    name: &str,
    version: Option<&str>,
) -> Result<Response, ApiError> {
    let p = load(view, name).await?.ok_or_else(ApiError::not_found)?;
    let kind = p.key_type()?;
    let public = kind_s == "public-key";
    match kind_s {
        "encryption-key" if !kind.supports_encryption() => {
            return Err(ApiError::bad_request(
                "encryption not supported for the key",
            ));
        }
        "signing-key" | "public-key" if !kind.supports_signing() => {
            return Err(ApiError::bad_request("signing not supported for the key"));
        }
        "hmac-key" | "encryption-key" | "signing-key" | "public-key" => {}
        _ => {
            return Err(ApiError::bad_request(format!(
                "invalid export type: {kind_s}"
            )));
        }
    }
    if !public && !p.exportable {
        return Err(ApiError::bad_request(
            "private key material is not exportable",
        ));
    }
    let versions: Vec<u32> = match version {
        None => p
            .versions
            .keys()
            .copied()
            .filter(|v| *v >= p.min_decryption_version)
            .collect(),
        Some("latest") => vec![p.latest_version],
        Some(v) => {
            let canonical = v.bytes().all(|c| c.is_ascii_digit()) && !v.starts_with('0');
            let n: u32 = v
                .parse()
                .ok()
                .filter(|_| canonical)
                .ok_or_else(|| ApiError::bad_request("invalid key version"))?;
            p.decryption_version(n)?;
            vec![n]
        }
    };
    let mut keys = Map::new();
    for n in versions {
        let v = p.version(n)?;
        let text = match kind_s {
            "hmac-key" => STANDARD.encode(&v.hmac_key[..]),
            "public-key" => public_key_text(kind, v.public_key.as_deref().unwrap_or_default())
                .trim_end()
                .to_string(),
            _ if kind.is_asymmetric() => pem("PRIVATE KEY", &v.key).trim_end().to_string(),
            _ => STANDARD.encode(&v.key[..]),
        };
        keys.insert(n.to_string(), json!(text));
    }
    Ok(Response::data(json!({
        "name": p.name,
        "type": p.kind,
        "keys": keys,
    })))
}

// ------------------------------------------------------------ backup, restore

/// What `backup` returns (base64 of this JSON): Palisade's own format, not
/// interchangeable with Vault's backups (docs/api-compat.md).
#[derive(Serialize, Deserialize)]
struct Backup {
    format: String,
    policy: Policy,
}

const BACKUP_FORMAT: &str = "palisade-transit-backup/1";

async fn backup(view: &View, name: &str) -> Result<Response, ApiError> {
    let p = load(view, name).await?.ok_or_else(ApiError::not_found)?;
    if !p.exportable || !p.allow_plaintext_backup {
        return Err(ApiError::bad_request(
            "plaintext backup is disallowed on the policy: the key needs exportable and allow_plaintext_backup",
        ));
    }
    let json = Zeroizing::new(
        serde_json::to_vec(&Backup {
            format: BACKUP_FORMAT.into(),
            policy: p,
        })
        .map_err(ApiError::internal)?,
    );
    Ok(Response::data(
        json!({ "backup": STANDARD.encode(&json[..]) }),
    ))
}

/// A backup is hostile input: every field is checked and every key parsed
/// (public keys are recomputed, never taken from the backup), so a restored
/// key is one this engine could have made.
fn check_restored(p: &mut Policy) -> Result<(), ApiError> {
    let bad = |m: &str| ApiError::bad_request(format!("invalid backup: {m}"));
    check_name(&p.name).map_err(|_| bad("invalid key name"))?;
    let kind = KeyType::parse(&p.kind).ok_or_else(|| bad("unknown key type"))?;
    p.kind = kind.as_str().to_string();
    if p.convergent && !p.derived || p.derived && !kind.supports_derivation() {
        return Err(bad("inconsistent derivation settings"));
    }
    if kind == KeyType::Hmac
        && !(HMAC_KEY_MIN as usize..=HMAC_KEY_MAX as usize).contains(&p.hmac_key_size)
    {
        return Err(bad("invalid key_size"));
    }
    let first = p
        .versions
        .keys()
        .next()
        .copied()
        .ok_or_else(|| bad("no key versions"))?;
    let last = p.versions.keys().next_back().copied().unwrap_or(0);
    if last > MAX_KEY_VERSION {
        return Err(bad("key version too large"));
    }
    if first == 0
        || last != p.latest_version
        || u64::from(last) - u64::from(first) + 1 != p.versions.len() as u64
        || first != p.min_available_version.max(1)
    {
        return Err(bad("key versions are not contiguous up to latest_version"));
    }
    if p.min_decryption_version < first || p.min_decryption_version > last {
        return Err(bad("invalid min_decryption_version"));
    }
    if p.min_encryption_version != 0
        && (p.min_encryption_version < p.min_decryption_version || p.min_encryption_version > last)
    {
        return Err(bad("invalid min_encryption_version"));
    }
    if p.auto_rotate_period != 0 && p.auto_rotate_period < MIN_AUTO_ROTATE_SECS {
        return Err(bad("invalid auto_rotate_period"));
    }
    for v in p.versions.values_mut() {
        let key_ok = tc::check_key(kind, &v.key).is_ok()
            && match kind {
                KeyType::Hmac => v.key.len() == p.hmac_key_size && v.hmac_key == v.key,
                _ => true,
            };
        if !key_ok || (kind != KeyType::Hmac && v.hmac_key.len() != 32) {
            return Err(bad("invalid key material"));
        }
        v.public_key = tc::public_key(kind, &v.key)
            .map_err(|_| bad("invalid key material"))?
            .map(|k| STANDARD.encode(k));
    }
    Ok(())
}

async fn restore(
    d: &Map<String, Value>,
    view: &View,
    locks: &KeyLocks,
    name: Option<&str>,
) -> Result<Response, ApiError> {
    let raw = b64_field(d, "backup")?
        .ok_or_else(|| ApiError::bad_request("'backup' must be supplied"))?;
    let force = opt_bool(d, "force")?.unwrap_or(false);
    let b: Backup = serde_json::from_slice(&raw)
        .map_err(|_| ApiError::bad_request("invalid backup: not a Palisade transit backup"))?;
    if b.format != BACKUP_FORMAT {
        return Err(ApiError::bad_request("invalid backup: unknown format"));
    }
    let mut p = b.policy;
    if let Some(n) = name {
        p.name = n.to_string();
    }
    let heavy = KeyType::parse(&p.kind).is_some_and(KeyType::is_asymmetric);
    let mut p = compute(heavy, move || check_restored(&mut p).map(|_| p)).await??;
    // a backup's deletion flag would let a restorer make a protected key deletable
    p.deletion_allowed = false;
    let _g = locks.lock(view, &policy_key(&p.name)).await;
    if let Some(existing) = load(view, &p.name).await? {
        if !force {
            return Err(ApiError::bad_request(format!(
                "key \"{}\" already exists: restore with force to replace it",
                p.name
            ))
            .audited_as("the key already exists: restore with force to replace it"));
        }
        // replacing a key drops its versions: as much a deletion as delete
        if !existing.deletion_allowed {
            return Err(ApiError::bad_request(format!(
                "key \"{}\" cannot be replaced: deletion is not allowed for this key",
                p.name
            )));
        }
    }
    store(view, &p).await?;
    Ok(Response::no_content())
}

// ------------------------------------------------------------ encrypt, decrypt, rewrap

struct EncryptItem {
    plaintext: Zeroizing<Vec<u8>>,
    context: Option<Zeroizing<Vec<u8>>>,
    aad: Zeroizing<Vec<u8>>,
    version: u32,
}

fn encrypt_item(i: &Map<String, Value>) -> Result<EncryptItem, ApiError> {
    let plaintext = b64_field(i, "plaintext")?
        .ok_or_else(|| ApiError::bad_request("missing plaintext to encrypt"))?;
    if opt(i, "nonce").is_some() {
        return Err(ApiError::bad_request(
            "a nonce cannot be given: nonces are random, or derived from the plaintext for convergent keys",
        ));
    }
    Ok(EncryptItem {
        plaintext,
        context: b64_field(i, "context")?,
        aad: b64_field(i, "associated_data")?.unwrap_or_default(),
        version: opt_version(i, "key_version")?,
    })
}

/// Encrypt one item with the policy: `(ciphertext, version)`.
fn seal(p: &Policy, kind: KeyType, it: &EncryptItem) -> Result<(String, u32), ApiError> {
    let ver = p.encryption_version(it.version)?;
    let v = p.version(ver)?;
    let key = p.cipher_key(v, it.context.as_deref().map(|c| &c[..]))?;
    let nonce = if p.convergent {
        Some(tc::convergent_nonce(&key, &it.aad, &it.plaintext))
    } else {
        None
    };
    let ct = tc::encrypt(kind, &key, &it.plaintext, &it.aad, nonce).map_err(crypto_err)?;
    Ok((vault_value(ver, &ct, false), ver))
}

fn unsupported_encryption(kind: KeyType) -> ApiError {
    ApiError::bad_request(format!(
        "message encryption not supported for key type {}",
        kind.as_str()
    ))
}

async fn encrypt(
    d: &Map<String, Value>,
    view: &View,
    locks: &KeyLocks,
    name: &str,
) -> Result<Response, ApiError> {
    let (inputs, batch) = items(d, &["plaintext"])?;
    let p = match load(view, name).await? {
        Some(p) => p,
        None => {
            // upsert: the ACL asked for `create` (see `exists`)
            let mut p = new_policy(d, name, true)?;
            let _g = locks.lock(view, &policy_key(name)).await;
            match load(view, name).await? {
                Some(existing) => existing,
                None => {
                    rotate_blocking(&mut p).await?;
                    store(view, &p).await?;
                    p
                }
            }
        }
    };
    let kind = p.key_type()?;
    if !kind.supports_encryption() {
        return Err(unsupported_encryption(kind));
    }
    let parsed: Vec<Result<EncryptItem, ApiError>> = inputs.iter().map(encrypt_item).collect();
    let heavy = kind.is_rsa() || parsed.len() > INLINE_ITEMS;
    let results = compute(heavy, move || {
        parsed
            .into_iter()
            .map(|it| {
                let (ct, ver) = seal(&p, kind, &it?)?;
                let mut m = Map::new();
                m.insert("ciphertext".into(), json!(ct));
                m.insert("key_version".into(), json!(ver));
                Ok(m)
            })
            .collect::<Vec<ItemResult>>()
    })
    .await?;
    respond(d, &inputs, results, batch)
}

struct DecryptItem {
    version: u32,
    ciphertext: Vec<u8>,
    context: Option<Zeroizing<Vec<u8>>>,
    aad: Zeroizing<Vec<u8>>,
}

fn decrypt_item(i: &Map<String, Value>) -> Result<DecryptItem, ApiError> {
    let s = opt_string(i, "ciphertext")?
        .ok_or_else(|| ApiError::bad_request("missing ciphertext to decrypt"))?;
    let (version, ciphertext) = parse_vault_value(&s, "ciphertext", false)?;
    if opt(i, "nonce").is_some() {
        return Err(ApiError::bad_request("a nonce cannot be given"));
    }
    Ok(DecryptItem {
        version,
        ciphertext,
        context: b64_field(i, "context")?,
        aad: b64_field(i, "associated_data")?.unwrap_or_default(),
    })
}

fn open(p: &Policy, kind: KeyType, it: &DecryptItem) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let v = p.decryption_version(it.version)?;
    let key = p.cipher_key(v, it.context.as_deref().map(|c| &c[..]))?;
    tc::decrypt(kind, &key, &it.ciphertext, &it.aad).map_err(crypto_err)
}

async fn decrypt(d: &Map<String, Value>, view: &View, name: &str) -> Result<Response, ApiError> {
    let (inputs, batch) = items(d, &["ciphertext"])?;
    let p = existing(view, name, "encryption").await?;
    let kind = p.key_type()?;
    if !kind.supports_encryption() {
        return Err(ApiError::bad_request(format!(
            "message decryption not supported for key type {}",
            kind.as_str()
        )));
    }
    let parsed: Vec<Result<DecryptItem, ApiError>> = inputs.iter().map(decrypt_item).collect();
    let heavy = kind.is_rsa() || parsed.len() > INLINE_ITEMS;
    let results = compute(heavy, move || {
        parsed
            .into_iter()
            .map(|it| {
                let pt = open(&p, kind, &it?)?;
                let mut m = Map::new();
                m.insert("plaintext".into(), json!(STANDARD.encode(&pt[..])));
                Ok(m)
            })
            .collect::<Vec<ItemResult>>()
    })
    .await?;
    respond(d, &inputs, results, batch)
}

async fn rewrap(d: &Map<String, Value>, view: &View, name: &str) -> Result<Response, ApiError> {
    let (inputs, batch) = items(d, &["ciphertext"])?;
    let p = existing(view, name, "encryption").await?;
    let kind = p.key_type()?;
    if !kind.supports_encryption() {
        return Err(unsupported_encryption(kind));
    }
    let parsed: Vec<Result<(DecryptItem, u32), ApiError>> = inputs
        .iter()
        .map(|i| Ok((decrypt_item(i)?, opt_version(i, "key_version")?)))
        .collect();
    let heavy = kind.is_rsa() || parsed.len() > INLINE_ITEMS;
    let results = compute(heavy, move || {
        parsed
            .into_iter()
            .map(|it| {
                let (it, version) = it?;
                let plaintext = open(&p, kind, &it)?;
                let (ct, ver) = seal(
                    &p,
                    kind,
                    &EncryptItem {
                        plaintext,
                        context: it.context,
                        aad: it.aad,
                        version,
                    },
                )?;
                let mut m = Map::new();
                m.insert("ciphertext".into(), json!(ct));
                m.insert("key_version".into(), json!(ver));
                Ok(m)
            })
            .collect::<Vec<ItemResult>>()
    })
    .await?;
    respond(d, &inputs, results, batch)
}

async fn datakey(
    d: &Map<String, Value>,
    view: &View,
    kind_s: &str,
    name: &str,
) -> Result<Response, ApiError> {
    let with_plaintext = match kind_s {
        "plaintext" => true,
        "wrapped" => false,
        _ => {
            return Err(ApiError::bad_request(
                "Invalid path, must be 'plaintext' or 'wrapped'",
            ));
        }
    };
    let bits = match opt(d, "bits") {
        None => 256,
        Some(v) => fields::int(v, "bits")?,
    };
    if ![128, 256, 512].contains(&bits) {
        return Err(ApiError::bad_request("invalid bit length"));
    }
    let p = existing(view, name, "encryption").await?;
    let kind = p.key_type()?;
    if !kind.is_aead() {
        return Err(unsupported_encryption(kind));
    }
    let plaintext = Zeroizing::new(palisade_crypto::random_bytes(bits as usize / 8));
    let item = EncryptItem {
        plaintext,
        context: b64_field(d, "context")?,
        aad: b64_field(d, "associated_data")?.unwrap_or_default(),
        version: opt_version(d, "key_version")?,
    };
    if opt(d, "nonce").is_some() {
        return Err(ApiError::bad_request("a nonce cannot be given"));
    }
    let (ct, ver) = seal(&p, kind, &item)?;
    let mut out = json!({ "ciphertext": ct, "key_version": ver });
    if with_plaintext && let Some(o) = out.as_object_mut() {
        o.insert(
            "plaintext".into(),
            json!(STANDARD.encode(&item.plaintext[..])),
        );
    }
    Ok(Response::data(out))
}

// ------------------------------------------------------------ random, hash, hmac

/// A value given both in the path and in the body must agree: the ACL saw
/// the path, the handler must not act on something else.
fn path_or_body(
    d: &Map<String, Value>,
    name: &str,
    from_path: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let body = opt_string(d, name)?;
    match (from_path, body) {
        (Some(p), Some(b)) if p != b => Err(ApiError::bad_request(format!(
            "{name} given in the path and in the body with different values"
        ))),
        (Some(p), _) => Ok(Some(p.to_string())),
        (None, b) => Ok(b),
    }
}

fn encode_format(d: &Map<String, Value>, default: &str, bytes: &[u8]) -> Result<String, ApiError> {
    match opt_string(d, "format")?.as_deref().unwrap_or(default) {
        "hex" => Ok(hex::encode(bytes)),
        "base64" => Ok(STANDARD.encode(bytes)),
        f => Err(ApiError::bad_request(format!(
            "unsupported encoding format {f}; must be \"hex\" or \"base64\""
        ))
        .audited_as("unsupported encoding format")),
    }
}

fn random(
    d: &Map<String, Value>,
    source: Option<&str>,
    bytes: Option<&str>,
) -> Result<Response, ApiError> {
    let mut resp_warn = None;
    match path_or_body(d, "source", source)?
        .as_deref()
        .unwrap_or("platform")
    {
        "platform" => {}
        "seal" | "all" => {
            resp_warn =
                Some("no seal/entropy augmentation available, using platform entropy source")
        }
        s => {
            return Err(ApiError::bad_request(format!(
                "unsupported entropy source {s}; must be \"platform\", \"seal\", or \"all\""
            ))
            .audited_as("unsupported entropy source"));
        }
    }
    let n = match (bytes, opt(d, "bytes")) {
        (Some(p), Some(b)) if fields::int(b, "bytes")?.to_string() != p => {
            return Err(ApiError::bad_request(
                "bytes given in the path and in the body with different values",
            ));
        }
        (Some(p), _) => p
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request("invalid bytes"))?,
        (None, Some(b)) => fields::int(b, "bytes")?,
        (None, None) => 32,
    };
    if n < 1 {
        return Err(ApiError::bad_request("'bytes' cannot be less than 1"));
    }
    if n > MAX_RANDOM_BYTES {
        return Err(ApiError::bad_request(format!(
            "'bytes' should be less than {MAX_RANDOM_BYTES}"
        )));
    }
    let r = Zeroizing::new(palisade_crypto::random_bytes(n as usize));
    let mut resp = Response::data(json!({ "random_bytes": encode_format(d, "base64", &r)? }));
    if let Some(w) = resp_warn {
        resp = resp.warn(w);
    }
    Ok(resp)
}

fn hash_alg(name: &str) -> Result<HashAlg, ApiError> {
    HashAlg::parse(name).ok_or_else(|| {
        ApiError::bad_request(format!("unsupported algorithm {name}"))
            .audited_as("unsupported algorithm")
    })
}

fn hash(d: &Map<String, Value>, alg: Option<&str>) -> Result<Response, ApiError> {
    let alg = path_or_body(d, "algorithm", alg)?;
    let alg = hash_alg(alg.as_deref().unwrap_or("sha2-256"))?;
    let input = b64_field(d, "input")?.ok_or_else(|| ApiError::bad_request("missing input"))?;
    let sum = tc::hash(alg, &input);
    Ok(Response::data(
        json!({ "sum": encode_format(d, "hex", &sum)? }),
    ))
}

async fn hmac(
    d: &Map<String, Value>,
    view: &View,
    name: &str,
    alg: Option<&str>,
) -> Result<Response, ApiError> {
    let (inputs, batch) = items(d, &["input"])?;
    let alg = hash_alg(
        path_or_body(d, "algorithm", alg)?
            .as_deref()
            .unwrap_or("sha2-256"),
    )?;
    let p = existing(view, name, "HMAC").await?;
    let results = inputs
        .iter()
        .map(|i| {
            let input = b64_field(i, "input")?
                .ok_or_else(|| ApiError::bad_request("missing input for HMAC"))?;
            let ver = p.encryption_version(opt_version(i, "key_version")?)?;
            let key = &p.version(ver)?.hmac_key;
            let mac = tc::hmac(alg, key, &input).map_err(crypto_err)?;
            let mut m = Map::new();
            m.insert("hmac".into(), json!(vault_value(ver, &mac, false)));
            Ok(m)
        })
        .collect();
    respond(d, &inputs, results, batch)
}

// ------------------------------------------------------------ sign, verify

fn sign_options(
    d: &Map<String, Value>,
    kind: KeyType,
    alg: Option<&str>,
) -> Result<SignOptions, ApiError> {
    // `algorithm` is the path segment's name; `hash_algorithm` the body's
    let body = match (
        opt_string(d, "hash_algorithm")?,
        opt_string(d, "algorithm")?,
    ) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::bad_request(
                "hash_algorithm and algorithm given with different values",
            ));
        }
        (a, b) => a.or(b),
    };
    let hash = match (alg, body) {
        (Some(p), Some(b)) if p != b => {
            return Err(ApiError::bad_request(
                "hash_algorithm given in the path and in the body with different values",
            ));
        }
        (Some(p), _) => hash_alg(p)?,
        (None, Some(b)) => hash_alg(&b)?,
        (None, None) => kind.default_hash(),
    };
    let padding = match opt_string(d, "signature_algorithm")?.as_deref() {
        None | Some("pss") => RsaPadding::Pss,
        Some("pkcs1v15") => RsaPadding::Pkcs1v15,
        Some(s) => {
            return Err(
                ApiError::bad_request(format!("unsupported signature algorithm {s}"))
                    .audited_as("unsupported signature algorithm"),
            );
        }
    };
    // Vault's salt_length: "auto" (Go's 0), "hash" (-1) or a length. The
    // options of RSA (padding, salt) are checked for every key type, as
    // Vault does, and only act on RSA keys.
    let salt = match opt_string(d, "salt_length")?.as_deref() {
        None | Some("auto") | Some("0") => None,
        Some("hash") | Some("-1") => Some(hash_len(hash)),
        Some(n) => match n.parse::<usize>() {
            Ok(n) => Some(n),
            Err(_) => {
                return Err(ApiError::bad_request(format!("invalid salt_length {n}"))
                    .audited_as("invalid salt_length"));
            }
        },
    };
    if kind.is_rsa() && padding == RsaPadding::Pss && salt.is_some_and(|n| n != hash_len(hash)) {
        return Err(ApiError::bad_request(
            "unsupported salt_length: RSA-PSS signatures use a salt as long as the hash (\"hash\")",
        ));
    }
    let marshaling = match opt_string(d, "marshaling_algorithm")?.as_deref() {
        None | Some("asn1") => Marshaling::Asn1,
        Some("jws") => Marshaling::Jws,
        Some(m) => {
            return Err(
                ApiError::bad_request(format!("unsupported marshaling algorithm {m}"))
                    .audited_as("unsupported marshaling algorithm"),
            );
        }
    };
    if marshaling == Marshaling::Jws && !matches!(kind, KeyType::EcdsaP256 | KeyType::EcdsaP384) {
        return Err(ApiError::bad_request(
            "marshaling algorithm jws applies to ECDSA keys only",
        ));
    }
    if opt(d, "context").is_some() {
        return Err(ApiError::bad_request(
            "context was given but the key is not derived: a context binds nothing here",
        ));
    }
    Ok(SignOptions {
        hash,
        prehashed: opt_bool(d, "prehashed")?.unwrap_or(false),
        padding,
        marshaling,
    })
}

fn hash_len(h: HashAlg) -> usize {
    match h {
        HashAlg::Sha2_224 => 28,
        HashAlg::Sha2_256 | HashAlg::Sha3_256 => 32,
        HashAlg::Sha2_384 | HashAlg::Sha3_384 => 48,
        HashAlg::Sha2_512 | HashAlg::Sha3_512 => 64,
    }
}

async fn sign(
    d: &Map<String, Value>,
    view: &View,
    name: &str,
    alg: Option<&str>,
) -> Result<Response, ApiError> {
    let (inputs, batch) = items(d, &["input"])?;
    let p = existing(view, name, "signing").await?;
    let kind = p.key_type()?;
    if !kind.supports_signing() {
        return Err(ApiError::bad_request(format!(
            "key type {} does not support signing",
            kind.as_str()
        )));
    }
    let opts = sign_options(d, kind, alg)?;
    let jws = opts.marshaling == Marshaling::Jws;
    let parsed: Vec<Result<Signable, ApiError>> = inputs
        .iter()
        .map(|i| {
            let input = b64_field(i, "input")?
                .ok_or_else(|| ApiError::bad_request("missing input to sign"))?;
            Ok((input, opt_version(i, "key_version")?))
        })
        .collect();
    let results = compute(true, move || {
        parsed
            .into_iter()
            .map(|it| {
                let (input, version) = it?;
                let ver = p.encryption_version(version)?;
                let sig =
                    tc::sign(kind, &p.version(ver)?.key, &input, &opts).map_err(crypto_err)?;
                let mut m = Map::new();
                m.insert("signature".into(), json!(vault_value(ver, &sig, jws)));
                m.insert("key_version".into(), json!(ver));
                Ok(m)
            })
            .collect::<Vec<ItemResult>>()
    })
    .await?;
    respond(d, &inputs, results, batch)
}

async fn verify(
    d: &Map<String, Value>,
    view: &View,
    name: &str,
    alg: Option<&str>,
) -> Result<Response, ApiError> {
    let (inputs, batch) = items(d, &["input", "signature", "hmac"])?;
    let p = existing(view, name, "signature verification").await?;
    let kind = p.key_type()?;
    let hmac_alg = hash_alg(
        path_or_body(d, "algorithm", alg)?
            .or(opt_string(d, "hash_algorithm")?)
            .as_deref()
            .unwrap_or("sha2-256"),
    );
    let results = inputs
        .iter()
        .map(|i| {
            let input = b64_field(i, "input")?
                .ok_or_else(|| ApiError::bad_request("missing input to verify"))?;
            let valid = match (opt_string(i, "signature")?, opt_string(i, "hmac")?) {
                (Some(_), Some(_)) => {
                    return Err(ApiError::bad_request(
                        "provide one of 'signature' or 'hmac', not both",
                    ));
                }
                (None, None) => {
                    return Err(ApiError::bad_request(
                        "neither a 'signature' nor an 'hmac' were given to verify",
                    ));
                }
                (None, Some(h)) => {
                    let alg = hmac_alg.clone()?;
                    let (ver, tag) = parse_vault_value(&h, "hmac", false)?;
                    let v = p.decryption_version(ver)?;
                    tc::hmac_verify(alg, &v.hmac_key, &input, &tag).map_err(crypto_err)?
                }
                (Some(s), None) => {
                    if !kind.supports_signing() {
                        return Err(ApiError::bad_request(format!(
                            "key type {} does not support verification",
                            kind.as_str()
                        )));
                    }
                    let opts = sign_options(d, kind, alg)?;
                    let (ver, sig) =
                        parse_vault_value(&s, "signature", opts.marshaling == Marshaling::Jws)
                            .map_err(|_| ApiError::bad_request("supplied signature is invalid"))?;
                    let v = p.decryption_version(ver)?;
                    let public = STANDARD
                        .decode(v.public_key.as_deref().unwrap_or_default())
                        .map_err(ApiError::internal)?;
                    tc::verify(kind, &public, &input, &sig, &opts).map_err(crypto_err)?
                }
            };
            let mut m = Map::new();
            m.insert("valid".into(), json!(valid));
            Ok(m)
        })
        .collect();
    respond(d, &inputs, results, batch)
}

// ------------------------------------------------------------ auto rotation

/// Rotate every key of this mount whose `auto_rotate_period` has passed
/// since its latest version was made (as of `now`, Unix nanoseconds).
/// Returns how many keys were rotated. Run by the server's periodic task;
/// a key that cannot be rotated is logged and the others still are.
pub async fn rotate_due(view: &View, locks: &KeyLocks, now: i64) -> Result<usize, ApiError> {
    let mut rotated = 0;
    for name in view.list("policy/").await? {
        if check_name(&name).is_err() {
            continue;
        }
        let _g = locks.lock(view, &policy_key(&name)).await;
        let Some(mut p) = load(view, &name).await? else {
            continue;
        };
        if p.auto_rotate_period == 0 {
            continue;
        }
        let last = p
            .versions
            .get(&p.latest_version)
            .map(|v| v.creation_time)
            .unwrap_or(0);
        let period = p.auto_rotate_period.saturating_mul(1_000_000_000);
        if now.saturating_sub(last) < period {
            continue;
        }
        let done = match rotate_blocking(&mut p).await {
            Ok(()) => store(view, &p).await,
            Err(e) => Err(e),
        };
        match done {
            Ok(()) => {
                tracing::info!(key = %name, version = p.latest_version, "transit key rotated automatically");
                rotated += 1;
            }
            Err(e) => {
                tracing::warn!(key = %name, status = e.status, error = %e.audit_message(), "transit key could not be rotated automatically");
            }
        }
    }
    Ok(rotated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_are_vaults_generic_names_and_nothing_else() {
        for ok in ["a", "my-key", "k.1", "A_b-c.d", "_x_"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", ".a", "a.", "a b", "a/b", "ä", "a\0", "a%2f"] {
            assert_eq!(
                check_name(bad),
                Err(ApiError::unsupported_path()),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ciphertext_versions_must_be_canonical() {
        assert_eq!(
            parse_vault_value("vault:v12:AAAA", "c", false).unwrap().0,
            12
        );
        for bad in [
            "vault:v0:AAAA",
            "vault:v01:AAAA",
            "vault:v+1:AAAA",
            "vault:v:AAAA",
            "vault:v1",
            "v1:AAAA",
            "vault:v99999999999:AAAA",
        ] {
            assert!(
                parse_vault_value(bad, "ciphertext", false).is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            parse_vault_value("vault:v1:!!", "ciphertext", false),
            Err(ApiError::bad_request(
                "invalid ciphertext: could not decode base64"
            ))
        );
    }
}
