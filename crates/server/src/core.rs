//! `Core`: the server's request pipeline, in the order of design.md:
//!
//! sealed? -> token lookup -> ACL check -> audit request (fail closed)
//!   -> router (sys/, auth/token/, longest-prefix mount) -> engine
//!   -> audit response -> [`Response`]
//!
//! The HTTP layer only parses into a [`Request`] and renders the result.

use std::sync::{Arc, RwLock};

use base64::Engine as _;
use palisade_audit::{AuditAuth, AuditEntry, AuditRequest, AuditResponse, Broker, FileDevice};
use palisade_barrier::{Barrier, View};
use palisade_policy::{Acl, Capabilities, Capability};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::engines::kv::{self, KeyLocks};
use crate::logical::{ApiError, Operation, Request, Response};
use crate::mounts::{EngineKind, MOUNTS_PATH, MountConfig, MountEntry, MountTable};
use crate::policies::PolicyStore;
use crate::token::{NewToken, TokenEntry, TokenStore, TokenUse};

pub const AUDIT_TABLE_PATH: &str = "core/audit";

/// An enabled audit device as persisted (behind the barrier: it holds the HMAC key).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditDeviceEntry {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub description: String,
    pub options: Map<String, Value>,
    pub local: bool,
    pub hmac_key: String,
}

/// The caller, as established by token lookup and the ACL check. Only the
/// core builds it, after the check passed: handlers take it as proof.
pub struct Authorized {
    pub token: Arc<TokenEntry>,
    pub token_id: String,
    pub acl: Arc<Acl>,
    pub caps: Capabilities,
}

impl Authorized {
    pub fn is_sudo(&self) -> bool {
        self.acl.is_root() || self.caps.contains(Capability::Sudo)
    }
}

pub struct Core {
    pub barrier: Arc<Barrier>,
    pub tokens: TokenStore,
    pub policies: PolicyStore,
    pub mounts: RwLock<Arc<MountTable>>,
    pub audit: Broker,
    pub audit_table: tokio::sync::Mutex<Vec<AuditDeviceEntry>>,
    pub kv_locks: Arc<KeyLocks>,
    /// Serialises mount-table and audit-table changes.
    pub table_lock: tokio::sync::Mutex<()>,
    /// `[audit] file_path` of the server configuration, enabled at `file/` on unseal.
    pub config_audit_file: std::sync::OnceLock<std::path::PathBuf>,
}

fn lock<T>(r: Result<T, impl std::fmt::Display>) -> Result<T, ApiError> {
    r.map_err(|e| ApiError::internal(format!("core lock: {e}")))
}

/// Paths that need `sudo` on top of the operation's capability (Vault's root paths).
fn needs_sudo(path: &str, op: Operation) -> bool {
    path == "sys/audit"
        || path.starts_with("sys/audit/")
        || path.starts_with("sys/audit-hash/")
        || path == "sys/rotate"
        || path == "sys/seal"
        || path.starts_with("auth/token/revoke-orphan")
        || (path.starts_with("auth/token/accessors") && op == Operation::List)
}

impl Core {
    pub fn new(barrier: Arc<Barrier>) -> Arc<Self> {
        Arc::new(Self {
            tokens: TokenStore::new(barrier.clone()),
            policies: PolicyStore::new(barrier.clone()),
            barrier,
            mounts: RwLock::new(Arc::new(MountTable::default())),
            audit: Broker::new(),
            audit_table: tokio::sync::Mutex::new(Vec::new()),
            kv_locks: Arc::new(KeyLocks::default()),
            table_lock: tokio::sync::Mutex::new(()),
            config_audit_file: std::sync::OnceLock::new(),
        })
    }

    /// Load everything that lives behind the barrier. Called after every unseal.
    /// An audit device that cannot be opened fails the unseal (fail closed).
    pub async fn post_unseal(&self) -> Result<(), ApiError> {
        let table = match self.barrier.get(MOUNTS_PATH).await? {
            Some(b) => serde_json::from_slice::<MountTable>(&b).map_err(ApiError::internal)?,
            None => MountTable::default(),
        };
        *lock(self.mounts.write())? = Arc::new(table);
        self.policies.setup().await?;
        self.tokens.setup().await?;
        let devices: Vec<AuditDeviceEntry> = match self.barrier.get(AUDIT_TABLE_PATH).await? {
            Some(b) => serde_json::from_slice(&b).map_err(ApiError::internal)?,
            None => Vec::new(),
        };
        for d in &devices {
            let dev = open_device(d)?;
            self.audit.add(dev);
        }
        *self.audit_table.lock().await = devices;
        // the configuration's `[audit] file_path` device is active before the
        // unseal returns, so no request after unseal goes unaudited
        if let Some(path) = self.config_audit_file.get() {
            crate::ensure_config_audit(self, &Some(path.clone()))
                .await
                .map_err(ApiError::internal)?;
        }
        Ok(())
    }

    /// Seal: drop keys, caches and open audit files.
    pub async fn seal(&self) -> Result<(), ApiError> {
        self.barrier.seal().await?;
        self.tokens.clear();
        self.policies.clear();
        let mut table = self.audit_table.lock().await;
        for d in table.iter() {
            self.audit.remove(&d.path);
        }
        table.clear();
        if let Ok(mut m) = self.mounts.write() {
            *m = Arc::new(MountTable::default());
        }
        Ok(())
    }

    /// Initialise storage and return (unseal key shares, root token). Like
    /// Vault, the root token is created during init and the server is left sealed.
    pub async fn initialize(
        &self,
        shares: u8,
        threshold: u8,
    ) -> Result<(Vec<Zeroizing<Vec<u8>>>, String), ApiError> {
        let parts = self.barrier.initialize(shares, threshold).await?;
        let key =
            palisade_crypto::shamir::combine(&parts[..threshold as usize], threshold as usize)
                .map_err(ApiError::internal)?;
        self.barrier.unseal_with_key(&key).await?;
        let result = async {
            self.post_unseal().await?;
            self.create_root_token(None).await
        }
        .await;
        self.seal().await?;
        Ok((parts, result?))
    }

    pub async fn create_root_token(&self, id: Option<String>) -> Result<String, ApiError> {
        let (token, _) = self
            .tokens
            .create(NewToken {
                id,
                policies: vec!["root".into()],
                display_name: "root".into(),
                path: "auth/token/root".into(),
                ..Default::default()
            })
            .await?;
        Ok(token)
    }

    /// Dev mode: initialise with one share, unseal, mount KV v2 at `secret/`.
    pub async fn dev_setup(&self, root_token_id: Option<String>) -> Result<String, ApiError> {
        let parts = self.barrier.initialize(1, 1).await?;
        self.barrier.unseal_with_key(&parts[0]).await?;
        self.post_unseal().await?;
        let token = self.create_root_token(root_token_id).await?;
        let mut options = Map::new();
        options.insert("version".into(), Value::String("2".into()));
        self.enable_mount(
            "secret/",
            "kv",
            "key/value secret storage",
            options,
            MountConfig::default(),
        )
        .await?;
        Ok(token)
    }

    pub fn mount_table(&self) -> Result<Arc<MountTable>, ApiError> {
        Ok(lock(self.mounts.read())?.clone())
    }

    pub async fn enable_mount(
        &self,
        path: &str,
        kind: &str,
        description: &str,
        options: Map<String, Value>,
        config: MountConfig,
    ) -> Result<(), ApiError> {
        let path = MountTable::normalise_path(path)?;
        let (kind, options) = match kind {
            "kv" | "generic" => (kind.to_string(), options),
            "kv-v2" => {
                let mut o = options;
                o.insert("version".into(), Value::String("2".into()));
                ("kv".to_string(), o)
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "plugin not found in the catalog: {other}"
                )));
            }
        };
        if let Some(v) = options.get("version") {
            let v = crate::logical::fields::string(v, "version")?;
            if v != "1" && v != "2" {
                return Err(ApiError::bad_request(format!("invalid kv version {v:?}")));
            }
        }
        let _g = self.table_lock.lock().await;
        let mut table = (*self.mount_table()?).clone();
        if table.conflicts(&path) {
            return Err(ApiError::bad_request(format!(
                "path is already in use at {path}"
            )));
        }
        let uuid = palisade_core::uuid_v4();
        table.entries.push(MountEntry {
            path,
            kind: kind.clone(),
            description: description.to_string(),
            accessor: format!("{}_{}", kind, &uuid[..8]),
            uuid,
            options,
            config,
            local: false,
            seal_wrap: false,
        });
        self.save_mounts(table).await
    }

    pub async fn save_mounts(&self, table: MountTable) -> Result<(), ApiError> {
        let bytes = serde_json::to_vec(&table).map_err(ApiError::internal)?;
        self.barrier.put(MOUNTS_PATH, &bytes).await?;
        *lock(self.mounts.write())? = Arc::new(table);
        Ok(())
    }

    pub async fn enable_audit(&self, entry: AuditDeviceEntry) -> Result<(), ApiError> {
        let mut table = self.audit_table.lock().await;
        if table.iter().any(|d| d.path == entry.path) {
            return Err(ApiError::bad_request(format!(
                "path already in use: {}",
                entry.path
            )));
        }
        let dev = open_device(&entry)?;
        let mut next = table.clone();
        next.push(entry);
        let bytes = serde_json::to_vec(&next).map_err(ApiError::internal)?;
        self.barrier.put(AUDIT_TABLE_PATH, &bytes).await?;
        self.audit.add(dev);
        *table = next;
        Ok(())
    }

    pub async fn disable_audit(&self, path: &str) -> Result<(), ApiError> {
        let mut table = self.audit_table.lock().await;
        let next: Vec<AuditDeviceEntry> =
            table.iter().filter(|d| d.path != path).cloned().collect();
        if next.len() == table.len() {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&next).map_err(ApiError::internal)?;
        self.barrier.put(AUDIT_TABLE_PATH, &bytes).await?;
        self.audit.remove(path);
        *table = next;
        Ok(())
    }

    /// Paths answered without a token and never audited (Vault's list).
    pub fn is_unauthenticated(path: &str) -> bool {
        matches!(
            path,
            "sys/init" | "sys/seal-status" | "sys/unseal" | "sys/health" | "sys/leader"
        )
    }

    /// The whole pipeline for authenticated paths.
    pub async fn handle(self: &Arc<Self>, req: Request) -> Result<Response, ApiError> {
        if Self::is_unauthenticated(&req.path) {
            return crate::sys::handle_unauthenticated(self, &req).await;
        }
        if self.barrier.sealed() {
            return Err(ApiError::sealed());
        }

        // token lookup
        let token_id = req.token.clone().unwrap_or_default();
        let entry = if token_id.is_empty() {
            None
        } else {
            self.tokens.lookup(&token_id).await?
        };

        let mut audit = AuditEntry {
            auth: entry.as_ref().map(|e| audit_auth(e, &token_id)),
            request: AuditRequest {
                id: req.id.clone(),
                operation: req.operation.as_str().to_string(),
                path: req.path.clone(),
                mount_type: String::new(),
                client_token: token_id.clone(),
                client_token_accessor: entry
                    .as_ref()
                    .map(|e| e.accessor.clone())
                    .unwrap_or_default(),
                remote_address: req.remote_addr.clone(),
                data: if req.data.is_empty() {
                    None
                } else {
                    Some(Value::Object(req.data.clone()))
                },
            },
            response: None,
            error: None,
        };

        // input the edge could not parse: audited, then refused
        if let Some(err) = &req.body_error {
            return self.refuse(audit, err.clone()).await;
        }
        let Some(entry) = entry else {
            return self.refuse(audit, ApiError::permission_denied()).await;
        };

        // ACL
        let acl = self.policies.acl(&entry.policies)?;
        let table = self.mount_table()?;
        let route = table
            .route(&req.path)
            .map(|(m, rel)| (m.clone(), rel.to_string()));
        if let Some((m, _)) = &route {
            audit.request.mount_type = m.kind.clone();
        }
        let caps = acl.capabilities(&req.path, req.operation == Operation::List);
        let needed = match req.operation {
            Operation::Read => Capability::Read,
            Operation::List => Capability::List,
            Operation::Delete => Capability::Delete,
            Operation::Patch => Capability::Patch,
            Operation::Write => {
                if self.exists(&req, route.as_ref()).await? {
                    Capability::Update
                } else {
                    Capability::Create
                }
            }
        };
        let allowed = !caps.contains(Capability::Deny)
            && caps.contains(needed)
            && (!needs_sudo(&req.path, req.operation)
                || caps.contains(Capability::Sudo)
                || acl.is_root());
        if !allowed {
            return self.refuse(audit, ApiError::permission_denied()).await;
        }

        // audit the request before anything happens (fail closed)
        if let Err(e) = self.audit.log(&audit).await {
            tracing::error!(error = %e, path = %req.path, "audit failed; refusing request");
            return Err(ApiError::internal("audit: no device recorded the request"));
        }

        let token_use = self.tokens.consume_use(&entry).await?;
        let auth = Authorized {
            token: entry.clone(),
            token_id: token_id.clone(),
            acl,
            caps,
        };
        // help is a query parameter only (Vault's `?help=1`): a body field
        // named `help` is data, e.g. a KV v1 secret, and must be written
        let help = req
            .query
            .iter()
            .find(|(k, _)| k == "help")
            .and_then(|(_, v)| crate::logical::fields::parse_bool(v));
        let result = if token_use == TokenUse::Exhausted {
            Err(ApiError::permission_denied())
        } else if help == Some(true) {
            // Vault answers help with the bare object, no envelope (node-vault's help() reads `.help`)
            Ok(Response::raw(
                200,
                serde_json::json!({
                    "help": format!("## PATH\n\n{}\n\nSee docs/api-compat.md for the operations Palisade supports here.", req.path),
                    "see_also": Value::Null,
                }),
            ))
        } else {
            self.route(&req, &auth, route).await
        };
        if token_use == TokenUse::Last {
            self.tokens.revoke_tree(&entry.hash).await?;
        }

        // audit the response; a response that cannot be audited is not returned
        let mut resp_audit = audit;
        match &result {
            Ok(r) => {
                resp_audit.response = Some(AuditResponse {
                    status: r.status,
                    data: r.data.clone().or_else(|| r.raw.clone()),
                    auth: r.auth.as_ref().map(|a| AuditAuth {
                        client_token: a.client_token.clone(),
                        accessor: a.accessor.clone(),
                        display_name: String::new(),
                        policies: a.policies.clone(),
                        token_policies: a.token_policies.clone(),
                        metadata: a.metadata.clone().unwrap_or_default(),
                        entity_id: String::new(),
                        token_type: a.token_type.clone(),
                        token_ttl: a.lease_duration,
                    }),
                    warnings: r.warnings.clone(),
                });
            }
            Err(e) => {
                resp_audit.response = Some(AuditResponse {
                    status: e.status,
                    data: e.body.clone(),
                    auth: None,
                    warnings: Vec::new(),
                });
                resp_audit.error = Some(e.messages.join("; "));
            }
        }
        if let Err(e) = self.audit.log(&resp_audit).await {
            tracing::error!(error = %e, path = %req.path, "audit of response failed; withholding response");
            return Err(ApiError::internal("audit: no device recorded the response"));
        }
        result
    }

    /// Audit a refused request and return its error. If the audit itself
    /// fails the client still gets the refusal (nothing was disclosed).
    async fn refuse(&self, mut audit: AuditEntry, err: ApiError) -> Result<Response, ApiError> {
        audit.error = Some(err.messages.join("; "));
        if let Err(e) = self.audit.log(&audit).await {
            tracing::error!(error = %e, "audit of a refused request failed");
        }
        tracing::info!(path = %audit.request.path, status = err.status, "request refused");
        Err(err)
    }

    /// Existence check deciding create vs update for writes.
    async fn exists(
        &self,
        req: &Request,
        route: Option<&(MountEntry, String)>,
    ) -> Result<bool, ApiError> {
        if let Some(name) = req
            .path
            .strip_prefix("sys/policy/")
            .or_else(|| req.path.strip_prefix("sys/policies/acl/"))
        {
            return Ok(self.policies.exists(&name.to_lowercase()));
        }
        if req.path.starts_with("sys/") || req.path.starts_with("auth/") {
            return Ok(true);
        }
        match route {
            Some((m, rel)) => {
                let view = View::new(self.barrier.clone(), m.view_prefix());
                match m.engine() {
                    Some(EngineKind::KvV2) => kv::exists_v2(rel, &view).await,
                    Some(EngineKind::KvV1) => kv::exists_v1(rel, &view).await,
                    None => Ok(true),
                }
            }
            None => Ok(true),
        }
    }

    async fn route(
        self: &Arc<Self>,
        req: &Request,
        auth: &Authorized,
        route: Option<(MountEntry, String)>,
    ) -> Result<Response, ApiError> {
        if let Some(rest) = req.path.strip_prefix("sys/") {
            return crate::sys::handle(self, req, auth, rest).await;
        }
        if let Some(rest) = req.path.strip_prefix("auth/token/") {
            return crate::token_api::handle(self, req, auth, rest).await;
        }
        let Some((mount, rel)) = route else {
            return Err(ApiError::unsupported_path());
        };
        let view = View::new(self.barrier.clone(), mount.view_prefix());
        match mount.engine() {
            Some(EngineKind::KvV2) => kv::handle_v2(req, &rel, &view, &self.kv_locks).await,
            Some(EngineKind::KvV1) => kv::handle_v1(req, &rel, &view).await,
            None => Err(ApiError::unsupported_path()),
        }
    }
}

fn open_device(d: &AuditDeviceEntry) -> Result<FileDevice, ApiError> {
    let file_path = d
        .options
        .get("file_path")
        .and_then(|v| v.as_str())
        .ok_or_else(|| ApiError::bad_request("file_path is required"))?;
    let key = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(&d.hmac_key)
            .map_err(ApiError::internal)?,
    );
    FileDevice::open(&d.path, std::path::Path::new(file_path), &key).map_err(|e| {
        tracing::error!(error = %e, "cannot open audit device");
        ApiError::bad_request(format!(
            "sanity check failed; unable to open {file_path:?} for writing: {e}"
        ))
    })
}

pub fn audit_auth(e: &TokenEntry, token_id: &str) -> AuditAuth {
    AuditAuth {
        client_token: token_id.to_string(),
        accessor: e.accessor.clone(),
        display_name: e.display_name.clone(),
        policies: e.policies.clone(),
        token_policies: e.policies.clone(),
        metadata: e.meta.clone(),
        entity_id: String::new(),
        token_type: "service".into(),
        token_ttl: e.creation_ttl,
    }
}
