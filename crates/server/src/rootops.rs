//! The operations that take unseal key shares while the server is unsealed:
//! `sys/rekey/*` (a new unseal key, split into new shares) and
//! `sys/generate-root/*` (a new root token, handed out XOR'd with a one-time
//! pad), with Vault's request and response shapes and OpenBao's error texts.
//!
//! Who may call them: a token with `sudo` on the path (the default; the
//! core's ACL check), or anyone when the server configuration says
//! `dangerous_unauthenticated_rekey` / `dangerous_unauthenticated_generate_root`
//! (Vault's behaviour; OpenBao 2.5+ turns it off by default). Either way
//! every call is audited, with the shares, the new keys, the OTP and the
//! encoded token HMAC'd like every other string.
//!
//! Progress (the shares given so far, the new key awaiting verification,
//! the OTP) lives only in memory, is wiped on drop and is dropped when the
//! server seals. The one write, [`palisade_barrier::Barrier::rekey`], is a
//! single storage transaction.

use std::sync::Arc;

use base64::Engine as _;
use palisade_barrier::{MAX_SHARE_LEN, MIN_SHARE_LEN, NewUnsealKey, SealConfig};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::core::Core;
use crate::logical::{ApiError, Operation, Request, Response, fields};

/// Length of a root token (`hvs.` and 24 base62 characters), and so of the
/// one-time pad it is XOR'd with.
pub const OTP_LENGTH: usize = 28;

type Share = Zeroizing<Vec<u8>>;

struct Verification {
    nonce: String,
    key: NewUnsealKey,
    progress: Vec<Share>,
}

struct Rekey {
    nonce: String,
    config: SealConfig,
    require_verification: bool,
    progress: Vec<Share>,
    verification: Option<Verification>,
}

struct Generate {
    nonce: String,
    otp: Zeroizing<String>,
    progress: Vec<Share>,
}

#[derive(Default)]
struct Inner {
    rekey: Option<Rekey>,
    generate: Option<Generate>,
}

/// The in-memory state of a rekey and of a root generation, one of each at
/// a time. Every operation holds the lock for its whole run, so two updates
/// never race over the same progress.
#[derive(Default)]
pub struct RootOps {
    inner: tokio::sync::Mutex<Inner>,
}

impl RootOps {
    /// Forget every attempt and the shares given to it (at seal).
    pub async fn reset(&self) {
        *self.inner.lock().await = Inner::default();
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Whether `path` (canonical, after `sys/`) is one of these endpoints.
pub fn is_root_op(rest: &str) -> bool {
    rest.starts_with("rekey/") || rest.starts_with("generate-root/")
}

/// The share in `key`: hex or base64, within Vault's length bounds. The
/// errors never quote the value.
fn share(req: &Request) -> Result<Share, ApiError> {
    let key = match req.data.get("key") {
        Some(Value::String(k)) if !k.is_empty() => Zeroizing::new(k.clone()),
        _ => {
            return Err(ApiError::bad_request(
                "'key' must be specified in request body as JSON",
            ));
        }
    };
    let bytes = Zeroizing::new(
        hex::decode(key.as_bytes())
            .or_else(|_| b64().decode(key.as_bytes()))
            .map_err(|_| ApiError::bad_request("'key' must be a valid hex or base64 string"))?,
    );
    if bytes.len() < MIN_SHARE_LEN {
        return Err(ApiError::bad_request(format!(
            "key is shorter than minimum {MIN_SHARE_LEN} bytes"
        )));
    }
    if bytes.len() > MAX_SHARE_LEN {
        return Err(ApiError::bad_request(format!(
            "key is longer than maximum {MAX_SHARE_LEN} bytes"
        )));
    }
    Ok(bytes)
}

fn nonce_field(req: &Request) -> Result<String, ApiError> {
    Ok(req
        .data
        .get("nonce")
        .map(|v| fields::string(v, "nonce"))
        .transpose()?
        .unwrap_or_default())
}

fn already_given(progress: &[Share], share: &Share) -> bool {
    progress
        .iter()
        .any(|s| palisade_crypto::mac::ct_eq(s, share))
}

/// A field that we refuse when it is set to anything but its empty value:
/// PGP encryption needs an OpenPGP implementation we do not have.
fn refuse_if_set(req: &Request, name: &str) -> Result<(), ApiError> {
    if req
        .data
        .get(name)
        .is_some_and(|v| !v.is_null() && v != &json!("") && v != &json!([]) && v != &json!(false))
    {
        return Err(ApiError::bad_request(format!("{name} is not supported")));
    }
    Ok(())
}

async fn current_threshold(core: &Core) -> Result<u8, ApiError> {
    Ok(core
        .barrier
        .seal_config()
        .await?
        .map(|c| c.secret_threshold)
        .unwrap_or(0))
}

/// `sys/rekey/*` and `sys/generate-root/*` (`rest` is the canonical path
/// after `sys/`). The caller is authorised already: a sudo token, or the
/// configuration allowed these endpoints without one.
pub async fn handle(core: &Arc<Core>, req: &Request, rest: &str) -> Result<Response, ApiError> {
    let ops = &core.root_ops;
    let op = req.operation;
    match rest {
        "rekey/init" => match op {
            Operation::Read => {
                let inner = ops.inner.lock().await;
                rekey_status(core, inner.rekey.as_ref()).await
            }
            Operation::Write => {
                let mut inner = ops.inner.lock().await;
                rekey_init(core, req, &mut inner).await
            }
            Operation::Delete => {
                ops.inner.lock().await.rekey = None;
                Ok(Response::no_content())
            }
            _ => Err(ApiError::unsupported_operation()),
        },
        "rekey/update" if op == Operation::Write => {
            let mut inner = ops.inner.lock().await;
            rekey_update(core, req, &mut inner).await
        }
        "rekey/verify" => {
            let mut inner = ops.inner.lock().await;
            match op {
                Operation::Read => verify_status(inner.rekey.as_ref()),
                Operation::Delete => {
                    let r = inner
                        .rekey
                        .as_mut()
                        .ok_or_else(|| ApiError::bad_request("no rekey configuration found"))?;
                    if let Some(v) = r.verification.as_mut() {
                        v.nonce = palisade_core::uuid_v4();
                        v.progress.clear();
                    }
                    verify_status(inner.rekey.as_ref())
                }
                Operation::Write => rekey_verify(core, req, &mut inner).await,
                _ => Err(ApiError::unsupported_operation()),
            }
        }
        // PGP-encrypted backups of new shares: never made (pgp_keys is refused)
        "rekey/backup" | "rekey/recovery-key-backup" => match op {
            Operation::Read => Err(ApiError::bad_request("no backed-up keys found")),
            Operation::Delete => Ok(Response::no_content()),
            _ => Err(ApiError::unsupported_operation()),
        },
        "generate-root/attempt" => match op {
            Operation::Read => {
                let inner = ops.inner.lock().await;
                Ok(Response::raw(
                    200,
                    generate_status(core, inner.generate.as_ref(), "").await?,
                ))
            }
            Operation::Write => {
                let mut inner = ops.inner.lock().await;
                generate_init(core, req, &mut inner).await
            }
            Operation::Delete => {
                ops.inner.lock().await.generate = None;
                Ok(Response::no_content())
            }
            _ => Err(ApiError::unsupported_operation()),
        },
        "generate-root/update" if op == Operation::Write => {
            let mut inner = ops.inner.lock().await;
            generate_update(core, req, &mut inner).await
        }
        "rekey/update" | "generate-root/update" => Err(ApiError::unsupported_operation()),
        _ => Err(ApiError::unsupported_path()),
    }
}

async fn rekey_status(core: &Core, r: Option<&Rekey>) -> Result<Response, ApiError> {
    let required = current_threshold(core).await?;
    let mut out = json!({
        "nonce": r.map(|r| r.nonce.as_str()).unwrap_or(""),
        "started": r.is_some(),
        "t": r.map(|r| r.config.secret_threshold).unwrap_or(0),
        "n": r.map(|r| r.config.secret_shares).unwrap_or(0),
        "progress": r.map(|r| r.progress.len()).unwrap_or(0),
        "required": required,
        "pgp_fingerprints": null,
        "backup": false,
        "verification_required": r.is_some_and(|r| r.require_verification),
    });
    if let Some(v) = r.and_then(|r| r.verification.as_ref()) {
        out["verification_nonce"] = json!(v.nonce);
    }
    Ok(Response::raw(200, out))
}

/// OpenBao's checks of a new seal configuration, in its order and words.
fn rekey_config(req: &Request) -> Result<SealConfig, ApiError> {
    let int = |name: &str| -> Result<i64, ApiError> {
        match req.data.get(name) {
            None | Some(Value::Null) => Ok(0),
            Some(v) => fields::int(v, name),
        }
    };
    let shares = int("secret_shares")?;
    let threshold = int("secret_threshold")?;
    let invalid = |m: &str| {
        Err(ApiError::bad_request(format!(
            "invalid rekey seal configuration: {m}"
        )))
    };
    if shares < 1 {
        return invalid("shares must be at least one");
    }
    if threshold < 1 {
        return invalid("threshold must be at least one");
    }
    if shares > 1 && threshold == 1 {
        return invalid("threshold must be greater than one for multiple shares");
    }
    if shares > 255 {
        return invalid("shares must be less than 256");
    }
    if threshold > 255 {
        return invalid("threshold must be less than 256");
    }
    if threshold > shares {
        return invalid("threshold cannot be larger than shares");
    }
    Ok(SealConfig {
        secret_shares: shares as u8,
        secret_threshold: threshold as u8,
    })
}

async fn rekey_init(core: &Core, req: &Request, inner: &mut Inner) -> Result<Response, ApiError> {
    refuse_if_set(req, "pgp_keys")?;
    if req
        .data
        .get("backup")
        .map(|v| fields::boolean(v, "backup"))
        .transpose()?
        .unwrap_or(false)
    {
        return Err(ApiError::bad_request(
            "backup is not supported: it keeps PGP-encrypted shares, and pgp_keys is not supported",
        ));
    }
    let config = rekey_config(req)?;
    if inner.rekey.is_some() {
        return Err(ApiError::bad_request("rekey already in progress"));
    }
    let require_verification = req
        .data
        .get("require_verification")
        .map(|v| fields::boolean(v, "require_verification"))
        .transpose()?
        .unwrap_or(false);
    inner.rekey = Some(Rekey {
        nonce: palisade_core::uuid_v4(),
        config,
        require_verification,
        progress: Vec::new(),
        verification: None,
    });
    tracing::info!(
        shares = config.secret_shares,
        threshold = config.secret_threshold,
        require_verification,
        "rekey started"
    );
    rekey_status(core, inner.rekey.as_ref()).await
}

async fn rekey_update(core: &Core, req: &Request, inner: &mut Inner) -> Result<Response, ApiError> {
    let share = share(req)?;
    let nonce = nonce_field(req)?;
    let r = inner
        .rekey
        .as_mut()
        .ok_or_else(|| ApiError::bad_request("no barrier rekey in progress"))?;
    if let Some(v) = &r.verification {
        return Err(ApiError::bad_request(format!(
            "rekey operation already finished; verification must be performed; nonce for the verification operation is {:?}",
            v.nonce
        )));
    }
    if nonce != r.nonce {
        return Err(ApiError::bad_request(format!(
            "incorrect nonce supplied; nonce for this rekey operation is {:?}",
            r.nonce
        )));
    }
    if already_given(&r.progress, &share) {
        return Err(ApiError::bad_request(
            "given key has already been provided during this generation operation",
        ));
    }
    r.progress.push(share);
    let required = current_threshold(core).await? as usize;
    if r.progress.len() < required {
        return rekey_status(core, inner.rekey.as_ref()).await;
    }
    let given = std::mem::take(&mut r.progress);
    match core.barrier.check_shares(&given).await {
        Ok(()) => {}
        Err(palisade_barrier::BarrierError::InvalidUnsealKey) => {
            return Err(ApiError::bad_request(
                "failed to read root key: invalid key",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    drop(given);
    let (next, parts) = NewUnsealKey::generate(r.config)?;
    let nonce = r.nonce.clone();
    let keys: Vec<String> = parts.iter().map(hex::encode).collect();
    let keys_b64: Vec<String> = parts.iter().map(|p| b64().encode(&p[..])).collect();
    let mut out = json!({
        "nonce": nonce,
        "complete": true,
        "keys": keys,
        "keys_base64": keys_b64,
        "pgp_fingerprints": null,
        "backup": false,
        "verification_required": r.require_verification,
    });
    if r.require_verification {
        // nothing changes until the new shares come back through sys/rekey/verify
        let v = Verification {
            nonce: palisade_core::uuid_v4(),
            key: next,
            progress: Vec::new(),
        };
        out["verification_nonce"] = json!(v.nonce);
        r.verification = Some(v);
        tracing::info!("rekey: new shares handed out, awaiting verification");
    } else {
        core.barrier.rekey(&next).await?;
        inner.rekey = None;
        tracing::info!("rekey complete: the unseal key was replaced");
    }
    Ok(Response::raw(200, out))
}

fn verify_status(r: Option<&Rekey>) -> Result<Response, ApiError> {
    let r = r.ok_or_else(|| ApiError::bad_request("no rekey configuration found"))?;
    let v = r.verification.as_ref();
    Ok(Response::raw(
        200,
        json!({
            "nonce": v.map(|v| v.nonce.as_str()).unwrap_or(""),
            "started": v.is_some(),
            "t": r.config.secret_threshold,
            "n": r.config.secret_shares,
            "progress": v.map(|v| v.progress.len()).unwrap_or(0),
        }),
    ))
}

async fn rekey_verify(core: &Core, req: &Request, inner: &mut Inner) -> Result<Response, ApiError> {
    let share = share(req)?;
    let nonce = nonce_field(req)?;
    let r = inner
        .rekey
        .as_mut()
        .ok_or_else(|| ApiError::bad_request("no rekey in progress"))?;
    let v = r
        .verification
        .as_mut()
        .ok_or_else(|| ApiError::bad_request("no rekey verification in progress"))?;
    if nonce != v.nonce {
        return Err(ApiError::bad_request(format!(
            "incorrect nonce supplied; nonce for this verify operation is {:?}",
            v.nonce
        )));
    }
    if already_given(&v.progress, &share) {
        return Err(ApiError::bad_request(
            "given key has already been provided during this verify operation",
        ));
    }
    v.progress.push(share);
    if v.progress.len() < v.key.config().secret_threshold as usize {
        return verify_status(inner.rekey.as_ref());
    }
    let given = std::mem::take(&mut v.progress);
    if !v.key.is_split_of(&given) {
        v.nonce = palisade_core::uuid_v4();
        return Err(ApiError::bad_request(
            "rekey verification failed; incorrect key shares supplied",
        ));
    }
    drop(given);
    core.barrier.rekey(&v.key).await?;
    let nonce = v.nonce.clone();
    inner.rekey = None;
    tracing::info!("rekey verified and complete: the unseal key was replaced");
    Ok(Response::raw(
        200,
        json!({ "nonce": nonce, "complete": true }),
    ))
}

async fn generate_status(core: &Core, g: Option<&Generate>, otp: &str) -> Result<Value, ApiError> {
    Ok(json!({
        "nonce": g.map(|g| g.nonce.as_str()).unwrap_or(""),
        "started": g.is_some(),
        "progress": g.map(|g| g.progress.len()).unwrap_or(0),
        "required": current_threshold(core).await?,
        "complete": false,
        "encoded_token": "",
        "encoded_root_token": "",
        "pgp_fingerprint": "",
        "otp": otp,
        "otp_length": OTP_LENGTH,
    }))
}

async fn generate_init(
    core: &Core,
    req: &Request,
    inner: &mut Inner,
) -> Result<Response, ApiError> {
    refuse_if_set(req, "pgp_key")?;
    let given = req
        .data
        .get("otp")
        .map(|v| fields::string(v, "otp"))
        .transpose()?
        .map(Zeroizing::new)
        .filter(|o| !o.is_empty());
    if let Some(o) = &given
        && o.len() != OTP_LENGTH
    {
        return Err(ApiError::bad_request("OTP string has incorrect length"));
    }
    if inner.generate.is_some() {
        return Err(ApiError::bad_request("root generation already in progress"));
    }
    // no OTP given: make one and hand it out once (Vault 1.10+)
    let (otp, shown) = match given {
        Some(o) => (o, Zeroizing::new(String::new())),
        None => {
            let o = Zeroizing::new(crate::token::random_base62(OTP_LENGTH));
            (o.clone(), o)
        }
    };
    inner.generate = Some(Generate {
        nonce: palisade_core::uuid_v4(),
        otp,
        progress: Vec::new(),
    });
    tracing::info!("root generation started");
    Ok(Response::raw(
        200,
        generate_status(core, inner.generate.as_ref(), &shown).await?,
    ))
}

async fn generate_update(
    core: &Arc<Core>,
    req: &Request,
    inner: &mut Inner,
) -> Result<Response, ApiError> {
    let share = share(req)?;
    let nonce = nonce_field(req)?;
    let g = inner
        .generate
        .as_mut()
        .ok_or_else(|| ApiError::bad_request("no root generation in progress"))?;
    if nonce != g.nonce {
        return Err(ApiError::bad_request(format!(
            "incorrect nonce supplied; nonce for this root generation operation is {:?}",
            g.nonce
        )));
    }
    if already_given(&g.progress, &share) {
        return Err(ApiError::bad_request(
            "given key has already been provided during this generation operation",
        ));
    }
    g.progress.push(share);
    let required = current_threshold(core).await?;
    if g.progress.len() < required as usize {
        return Ok(Response::raw(
            200,
            generate_status(core, inner.generate.as_ref(), "").await?,
        ));
    }
    let given = std::mem::take(&mut g.progress);
    let progress = given.len();
    match core.barrier.check_shares(&given).await {
        Ok(()) => {}
        Err(palisade_barrier::BarrierError::InvalidUnsealKey) => {
            return Err(ApiError::bad_request(
                "root generation aborted: unable to authenticate: invalid key",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    drop(given);
    // checked before a token exists: a root token must never be left live
    // without being handed out
    if g.otp.len() != OTP_LENGTH {
        return Err(ApiError::internal(
            "root token and one-time pad differ in length",
        ));
    }
    let token = Zeroizing::new(core.create_root_token(None).await?);
    if token.len() != g.otp.len() {
        if let Some(e) = core.tokens.lookup(&token).await? {
            core.tokens.revoke_tree(&e.hash).await?;
        }
        return Err(ApiError::internal(
            "root token and one-time pad differ in length",
        ));
    }
    let xored = Zeroizing::new(
        token
            .bytes()
            .zip(g.otp.bytes())
            .map(|(t, o)| t ^ o)
            .collect::<Vec<u8>>(),
    );
    let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&xored[..]);
    let nonce = g.nonce.clone();
    inner.generate = None;
    tracing::info!("root generation complete: a new root token was created");
    Ok(Response::raw(
        200,
        json!({
            "nonce": nonce,
            "started": true,
            "progress": progress,
            "required": required,
            "complete": true,
            "encoded_token": encoded,
            "encoded_root_token": encoded,
            "pgp_fingerprint": "",
            "otp": "",
            "otp_length": 0,
        }),
    ))
}

/// Decode an `encoded_token` with its one-time pad (what `palisade operator
/// generate-root -decode` does): base64 (with or without padding), XOR.
pub fn decode_token(encoded: &str, otp: &str) -> Result<String, String> {
    let raw = Zeroizing::new(
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(encoded.trim_end_matches('='))
            .map_err(|_| "the encoded token is not base64".to_string())?,
    );
    if raw.len() != otp.len() {
        return Err(format!(
            "the encoded token is {} bytes and the OTP {}: they must be the same length",
            raw.len(),
            otp.len()
        ));
    }
    let bytes: Vec<u8> = raw.iter().zip(otp.bytes()).map(|(a, b)| a ^ b).collect();
    String::from_utf8(bytes).map_err(|_| "the decoded token is not text: wrong OTP?".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_inverts_the_encoding() {
        let token = "hvs.ABCDEFGHIJKLMNOPQRSTUVWX";
        let otp = "BMjzW3wAsEzINXCM05Wbas3u9zSl";
        let xored: Vec<u8> = token.bytes().zip(otp.bytes()).map(|(a, b)| a ^ b).collect();
        let enc = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&xored);
        assert_eq!(decode_token(&enc, otp).unwrap(), token);
        assert_eq!(
            decode_token(&format!("{enc}="), otp).unwrap(),
            token,
            "padding tolerated"
        );
        assert!(decode_token(&enc, "short").is_err());
        assert!(decode_token("!!!", otp).is_err());
    }
}
