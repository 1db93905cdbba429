//! Scheduled rotation of KV v2 secrets (AWS Secrets Manager's model on our
//! KV): a policy on a key names a period, an overlap and a producer of new
//! values; when the period has passed, the producer is asked for a new
//! value, which is written as a new version, while the version it replaces
//! stays readable for the overlap and is then deleted (soft, as KV v2's
//! `delete`). Every rotation is recorded in the audit log (its value only as
//! HMACs, like any write). A failure writes nothing (the current version
//! stays current and readable), is recorded in the policy's status and in
//! the audit log, and is retried with backoff.
//!
//! Producers are only those the server configuration lists (`[rotation]`):
//! a webhook on an allowed origin (POST, JSON in and out, no redirects, TLS
//! unless loopback) or a named command (argv from the configuration, no
//! shell, empty environment but `PATH`). The request sent to a producer
//! carries no secret: the mount, the key and the current version number.
//! The producer answers `{"data": {...}}`, the new value.
//!
//! API, on a KV v2 mount (ACL on these paths, apart from `data/`):
//! `rotation/<key>` (POST: `period`, `overlap`, `webhook` or `command`;
//! GET: the policy and its status; DELETE), `LIST rotation/` (keys with a
//! policy), `POST rotate/<key>` (rotate now).
//!
//! Storage (the mount's view): `rotation/<key>`.

use std::sync::Arc;
use std::time::Duration;

use palisade_audit::{AuditAuth, AuditEntry, AuditRequest, AuditResponse};
use palisade_barrier::View;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::core::{Authorized, Core};
use crate::engines::{opt, opt_string};
use crate::logical::{ApiError, Operation, Response, fields};
use crate::mounts::MountEntry;
use palisade_policy::Capability;

/// Shortest rotation period.
pub const MIN_PERIOD_SECS: i64 = 60;
/// How long a producer may take.
pub const PRODUCER_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read from a producer.
pub const MAX_PRODUCER_OUTPUT: usize = 1 << 20;
/// Longest wait between two attempts after failures.
pub const MAX_BACKOFF_SECS: i64 = 3600;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Producer {
    Webhook(String),
    Command(String),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Policy {
    key: String,
    period: i64,
    overlap: i64,
    producer: Producer,
    /// Unix seconds of the policy's creation (the first rotation is one
    /// period after it).
    created: i64,
    /// Unix seconds of the last successful rotation (0: none yet).
    #[serde(default)]
    last_rotation: i64,
    #[serde(default)]
    last_version: u64,
    #[serde(default)]
    failures: u32,
    /// Unix seconds of the next attempt after a failure (0: on schedule).
    #[serde(default)]
    retry_at: i64,
    #[serde(default)]
    last_error: String,
}

impl Policy {
    fn next_rotation(&self) -> i64 {
        let base = if self.last_rotation > 0 {
            self.last_rotation
        } else {
            self.created
        };
        let scheduled = base.saturating_add(self.period);
        if self.failures > 0 {
            self.retry_at
        } else {
            scheduled
        }
    }

    fn to_json(&self) -> Value {
        let t = |s: i64| {
            if s == 0 {
                Value::Null
            } else {
                json!(palisade_core::rfc3339(s.saturating_mul(1_000_000_000)))
            }
        };
        let (webhook, command) = match &self.producer {
            Producer::Webhook(u) => (json!(u), Value::Null),
            Producer::Command(c) => (Value::Null, json!(c)),
        };
        json!({
            "key": self.key,
            "period": self.period,
            "overlap": self.overlap,
            "webhook": webhook,
            "command": command,
            "last_rotation": t(self.last_rotation),
            "last_version": self.last_version,
            "next_rotation": t(self.next_rotation()),
            "failures": self.failures,
            "last_error": if self.last_error.is_empty() { Value::Null } else { json!(self.last_error) },
        })
    }
}

fn policy_key(key: &str) -> String {
    format!("rotation/{key}")
}

async fn load(view: &View, key: &str) -> Result<Option<Policy>, ApiError> {
    match view.get(&policy_key(key)).await? {
        Some(b) => Ok(Some(
            serde_json::from_slice(&b).map_err(ApiError::internal)?,
        )),
        None => Ok(None),
    }
}

async fn store(view: &View, p: &Policy) -> Result<(), ApiError> {
    let b = serde_json::to_vec(p).map_err(ApiError::internal)?;
    view.put(&policy_key(&p.key), &b).await?;
    Ok(())
}

/// Whether a path relative to a KV v2 mount is this module's.
pub fn is_rotation_path(rel: &str) -> bool {
    rel == "rotation" || rel.starts_with("rotation/") || rel.starts_with("rotate/")
}

/// `rotation/<key>`, `LIST rotation/`, `rotate/<key>` on a KV v2 mount.
pub async fn handle(
    core: &Arc<Core>,
    auth: &Authorized,
    mount: &MountEntry,
    rel: &str,
    view: &View,
) -> Result<Response, ApiError> {
    let req = auth.request();
    let d = &req.data;
    let now = core.tokens.now();
    match req.operation {
        Operation::List if rel == "rotation/" || rel == "rotation" => {
            let mut keys = Vec::new();
            let mut stack = vec![String::new()];
            while let Some(p) = stack.pop() {
                for child in view.list(&format!("rotation/{p}")).await? {
                    let full = format!("{p}{child}");
                    if full.ends_with('/') {
                        stack.push(full);
                    } else {
                        keys.push(full);
                    }
                }
            }
            if keys.is_empty() {
                return Err(ApiError::not_found());
            }
            keys.sort();
            Ok(Response::data(json!({ "keys": keys })))
        }
        Operation::Read => {
            let key = rel
                .strip_prefix("rotation/")
                .ok_or_else(ApiError::unsupported_path)?;
            let p = load(view, key).await?.ok_or_else(ApiError::not_found)?;
            Ok(Response::data(p.to_json()))
        }
        Operation::Delete => {
            let key = rel
                .strip_prefix("rotation/")
                .ok_or_else(ApiError::unsupported_path)?;
            let _g = core.kv_locks.lock(view, &policy_key(key)).await;
            view.delete(&policy_key(key)).await?;
            Ok(Response::no_content())
        }
        Operation::Write => {
            let key = rel
                .strip_prefix("rotate/")
                .or_else(|| rel.strip_prefix("rotation/"))
                .ok_or_else(ApiError::unsupported_path)?;
            // a rotation writes the secret (and retires its versions): who
            // sets or triggers one must be allowed to write it
            if !auth.allows_on(&format!("{}data/{key}", mount.path), Capability::Update) {
                return Err(ApiError::permission_denied());
            }
            if rel.starts_with("rotate/") {
                if load(view, key).await?.is_none() {
                    return Err(ApiError::bad_request(format!(
                        "no rotation policy for {key:?}"
                    )));
                }
                // called without the request's mount gate (see Core::route)
                let v = rotate(core, mount, view, key, now, true).await?;
                return Ok(Response::data(json!({ "version": v })));
            }
            write_policy(core, d, view, key, now).await
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

async fn write_policy(
    core: &Core,
    d: &Map<String, Value>,
    view: &View,
    key: &str,
    now: i64,
) -> Result<Response, ApiError> {
    // a secret that exists (a policy must not create one), of a name KV v2
    // accepts
    let (current, keeps) = crate::engines::kv::current_version(key, view).await?;
    if current == 0 {
        return Err(ApiError::bad_request(format!(
            "no secret at {key:?}: write its first version before a rotation policy"
        )));
    }
    let _g = core.kv_locks.lock(view, &policy_key(key)).await;
    let existing = load(view, key).await?;
    let period = match opt(d, "period") {
        Some(v) => fields::duration_secs(v, "period")?,
        None => existing.as_ref().map(|p| p.period).unwrap_or(0),
    };
    if period < MIN_PERIOD_SECS {
        return Err(ApiError::bad_request(format!(
            "period must be {MIN_PERIOD_SECS} seconds or more"
        )));
    }
    let overlap = match opt(d, "overlap") {
        Some(v) => fields::duration_secs(v, "overlap")?,
        None => existing
            .as_ref()
            .map(|p| p.overlap)
            .unwrap_or(3600.min(period)),
    };
    if overlap > period {
        return Err(ApiError::bad_request(
            "overlap cannot be longer than period: two versions would be current at once",
        ));
    }
    if overlap > 0 && keeps < 2 {
        return Err(ApiError::bad_request(
            "an overlap needs the key to keep at least two versions (max_versions)",
        ));
    }
    let webhook = opt_string(d, "webhook")?.filter(|s| !s.is_empty());
    let command = opt_string(d, "command")?.filter(|s| !s.is_empty());
    let producer = match (webhook, command, &existing) {
        (Some(_), Some(_), _) => {
            return Err(ApiError::bad_request("set webhook or command, not both"));
        }
        (Some(u), None, _) => Producer::Webhook(check_webhook(&core.options.rotation, &u)?),
        (None, Some(c), _) => {
            if !core.options.rotation.commands.contains_key(&c) {
                return Err(ApiError::bad_request(format!(
                    "command {c:?} is not one the server configuration lists in [rotation.commands]"
                )));
            }
            Producer::Command(c)
        }
        (None, None, Some(e)) => e.producer.clone(),
        (None, None, None) => {
            return Err(ApiError::bad_request(
                "a producer is required: webhook or command",
            ));
        }
    };
    let p = match existing {
        Some(mut e) => {
            e.period = period;
            e.overlap = overlap;
            e.producer = producer;
            e
        }
        None => Policy {
            key: key.to_owned(),
            period,
            overlap,
            producer,
            created: now,
            last_rotation: 0,
            last_version: 0,
            failures: 0,
            retry_at: 0,
            last_error: String::new(),
        },
    };
    store(view, &p).await?;
    Ok(Response::no_content())
}

/// A webhook URL on an allowed origin, in its parsed (canonical) form.
fn check_webhook(cfg: &crate::config::RotationConfig, raw: &str) -> Result<String, ApiError> {
    let u = url::Url::parse(raw).map_err(|_| ApiError::bad_request("webhook: not a URL"))?;
    if !u.username().is_empty() || u.password().is_some() || u.fragment().is_some() {
        return Err(ApiError::bad_request(
            "webhook: no credentials or fragment in the URL",
        ));
    }
    let origin = u.origin().ascii_serialization();
    if !cfg.webhook_origins.contains(&origin) {
        return Err(ApiError::bad_request(format!(
            "webhook: origin {origin} is not one the server configuration lists in [rotation] webhook_origins"
        )));
    }
    Ok(u.to_string())
}

/// What a producer is sent: no secret.
fn producer_request(mount: &MountEntry, key: &str, version: u64) -> Value {
    json!({ "mount": mount.path, "key": key, "current_version": version })
}

/// Ask the producer for a new value: `{"data": {...}}`, a non-empty object.
async fn produce(
    cfg: &crate::config::RotationConfig,
    producer: &Producer,
    request: &Value,
) -> Result<Value, String> {
    let body = match producer {
        Producer::Webhook(url) => {
            // the origin may have been removed from the configuration since
            check_webhook(cfg, url).map_err(|e| e.messages.join("; "))?;
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(PRODUCER_TIMEOUT)
                .no_proxy()
                .build()
                .map_err(|_| "webhook: cannot build an HTTP client".to_owned())?;
            let mut r = client.post(url).json(request).send().await.map_err(|e| {
                format!(
                    "webhook: request failed ({})",
                    if e.is_timeout() {
                        "timeout"
                    } else if e.is_connect() {
                        "connect"
                    } else {
                        "transport"
                    }
                )
            })?;
            if r.status() != reqwest::StatusCode::OK {
                return Err(format!("webhook: answered {}", r.status().as_u16()));
            }
            let mut out = Vec::new();
            while let Some(chunk) = r
                .chunk()
                .await
                .map_err(|_| "webhook: the answer was cut off".to_owned())?
            {
                if out.len() + chunk.len() > MAX_PRODUCER_OUTPUT {
                    return Err("webhook: the answer is larger than 1 MiB".into());
                }
                out.extend_from_slice(&chunk);
            }
            out
        }
        Producer::Command(name) => {
            let argv = cfg
                .commands
                .get(name)
                .ok_or_else(|| format!("command {name:?} is no longer in the configuration"))?;
            run_command(argv, request).await?
        }
    };
    // the answer holds the secret: parse errors never quote it
    let v: Value =
        serde_json::from_slice(&body).map_err(|_| "producer: the answer is not JSON".to_owned())?;
    match v.get("data") {
        Some(Value::Object(m)) if !m.is_empty() => Ok(Value::Object(m.clone())),
        _ => Err("producer: the answer has no non-empty \"data\" object".into()),
    }
}

async fn run_command(argv: &[String], request: &Value) -> Result<Vec<u8>, String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (prog, args) = argv.split_first().ok_or("command: empty")?;
    let mut child = tokio::process::Command::new(prog)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        // its own process group: whatever it starts is killed with it
        .process_group(0)
        .spawn()
        .map_err(|e| format!("command: cannot start ({})", e.kind()))?;
    let group = child.id();
    let input = serde_json::to_vec(request).map_err(|_| "command: request".to_owned())?;
    let mut stdin = child.stdin.take().ok_or("command: no stdin")?;
    let mut stdout = child.stdout.take().ok_or("command: no stdout")?;
    let run = async {
        // a command that does not read its input must not block us
        let _ = stdin.write_all(&input).await;
        drop(stdin);
        let mut out = Vec::new();
        let mut limited = (&mut stdout).take(MAX_PRODUCER_OUTPUT as u64 + 1);
        limited
            .read_to_end(&mut out)
            .await
            .map_err(|_| "command: cannot read its output".to_owned())?;
        if out.len() > MAX_PRODUCER_OUTPUT {
            return Err("command: the output is larger than 1 MiB".to_owned());
        }
        let status = child
            .wait()
            .await
            .map_err(|_| "command: cannot wait for it".to_owned())?;
        if !status.success() {
            return Err(format!(
                "command: exited with {}",
                status
                    .code()
                    .map_or("a signal".to_owned(), |c| c.to_string())
            ));
        }
        Ok(out)
    };
    let result = match tokio::time::timeout(PRODUCER_TIMEOUT, run).await {
        Ok(r) => r,
        Err(_) => Err("command: timed out".into()),
    };
    // nothing it started outlives it (a child holding its output open, a
    // background job): the whole group is killed, with `kill(1)` as this
    // crate has no unsafe code to call kill(2) with
    if let Some(pid) = group {
        let _ = tokio::process::Command::new("/bin/kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await;
    }
    result
}

/// The audit records of one rotation: a request (before anything is
/// asked of the producer) and a response (the outcome). Fail closed: a
/// rotation that cannot be audited does not happen.
fn audit_entry(mount: &MountEntry, key: &str) -> AuditEntry {
    AuditEntry {
        auth: Some(AuditAuth {
            display_name: "scheduled-rotation".into(),
            ..Default::default()
        }),
        request: AuditRequest {
            id: palisade_core::uuid_v4(),
            operation: "update".into(),
            path: format!("{}data/{key}", mount.path),
            mount_type: "kv".into(),
            client_token: String::new(),
            client_token_accessor: String::new(),
            remote_address: String::new(),
            data: None,
        },
        response: None,
        error: None,
    }
}

/// Rotate one key now (scheduled, or `rotate/<key>`). On success returns the
/// new version; on failure records it in the policy (backoff) and returns
/// the error. Serialised with writes to the key (its KV lock). `gate`:
/// whether to take the mount gate for the write (the scheduler does; a
/// request already holds it). The producer is never asked under the gate:
/// a slow one must not hold up mount changes.
pub async fn rotate(
    core: &Core,
    mount: &MountEntry,
    view: &View,
    key: &str,
    now: i64,
    gate: bool,
) -> Result<u64, ApiError> {
    let _p = core.rotation_locks.lock(view, &policy_key(key)).await;
    let Some(mut p) = load(view, key).await? else {
        return Err(ApiError::bad_request(format!(
            "no rotation policy for {key:?}"
        )));
    };
    let mut audit = audit_entry(mount, key);
    if let Err(e) = core.audit.log(&audit).await {
        tracing::error!(error = %e, "audit failed; rotation not started");
        return Err(ApiError::internal("audit: no device recorded the rotation"));
    }
    let outcome = async {
        let (current, _) = crate::engines::kv::current_version(key, view).await?;
        if current == 0 {
            return Err(ApiError::bad_request(format!("no secret at {key:?}")));
        }
        let value = produce(
            &core.options.rotation,
            &p.producer,
            &producer_request(mount, key, current),
        )
        .await
        .map_err(|m| ApiError::new(502, format!("rotation of {key:?} failed: {m}")))?;
        // the mount still there (a disabled mount's storage is gone), the
        // key's own lock: no write in between, and the version written only
        // if it is still the one the producer was told about
        let _gate = match gate {
            true => Some(core.mount_gate_read().await),
            false => None,
        };
        if gate && !core.mount_serves(&mount.uuid)? {
            return Err(ApiError::new(503, "the mount is being disabled or moved"));
        }
        let _k = core.kv_locks.lock(view, key).await;
        crate::engines::kv::write_rotated(key, view, value, current, p.overlap).await
    }
    .await;
    // the policy as it is now (changed or deleted meanwhile: a deleted one,
    // or one whose mount is gone, is not written back)
    let _g = core.kv_locks.lock(view, &policy_key(key)).await;
    match load(view, key).await {
        Ok(Some(current)) => {
            p.period = current.period;
            p.overlap = current.overlap;
            p.producer = current.producer;
        }
        Ok(None) => {
            if let Err(e) = core.audit.log(&audit).await {
                tracing::error!(error = %e, "audit of a rotation's outcome failed");
            }
            return outcome;
        }
        Err(e) => return Err(e),
    }
    let now = core.tokens.now().max(now);
    match &outcome {
        Ok(v) => {
            p.last_rotation = now;
            p.last_version = *v;
            p.failures = 0;
            p.retry_at = 0;
            p.last_error.clear();
            audit.response = Some(AuditResponse {
                wrap_info: None,
                status: 200,
                data: Some(json!({ "version": v })),
                auth: None,
                warnings: Vec::new(),
            });
            tracing::info!(mount = %mount.path, key, version = v, "KV secret rotated");
        }
        Err(e) => {
            p.failures = p.failures.saturating_add(1);
            let wait = 30i64
                .checked_shl(p.failures.min(16))
                .unwrap_or(MAX_BACKOFF_SECS)
                .min(MAX_BACKOFF_SECS);
            p.retry_at = now.saturating_add(wait);
            p.last_error = e.messages.join("; ");
            audit.response = Some(AuditResponse {
                wrap_info: None,
                status: e.status,
                data: None,
                auth: None,
                warnings: Vec::new(),
            });
            audit.error = Some(e.audit_message());
            tracing::warn!(mount = %mount.path, key, failures = p.failures, error = %p.last_error, "KV rotation failed; will retry");
        }
    }
    store(view, &p).await?;
    if let Err(e) = core.audit.log(&audit).await {
        tracing::error!(error = %e, "audit of a rotation's outcome failed");
    }
    outcome
}

/// The keys of this KV v2 mount whose rotation is due at `now`.
pub async fn due(view: &View, now: i64) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(prefix) = stack.pop() {
        for child in view.list(&format!("rotation/{prefix}")).await? {
            let full = format!("{prefix}{child}");
            if full.ends_with('/') {
                stack.push(full);
            } else if let Some(p) = load(view, &full).await?
                && p.next_rotation() <= now
            {
                out.push(full);
            }
        }
    }
    Ok(out)
}
