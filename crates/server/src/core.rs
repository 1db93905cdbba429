//! `Core`: the server's request pipeline, in the order of design.md:
//!
//! ```text
//! begin:   unsealed? -> token lookup -> ACL check on the canonical path
//!          (refusals are audited here, before any body is read)
//! execute: body parsed within limits -> audit request (fail closed)
//!          -> router (sys/, auth/token/, longest-prefix mount) -> engine
//!          -> audit response -> [`Response`]
//! ```
//!
//! The HTTP layer parses the head into a [`Request`] whose path is canonical
//! (`canonical`), calls [`Core::begin`], and reads the body only when it got an
//! [`Authorized`] back: an unauthenticated client never gets a body parsed.
//! [`Authorized`] is the proof that the ACL allowed exactly this request; only
//! this module can build one, and every handler and engine takes it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;
use palisade_audit::{
    AuditAuth, AuditEntry, AuditRequest, AuditResponse, Broker, FileDevice, Head, Trust,
};
use palisade_barrier::{Barrier, View};
use palisade_policy::{Acl, Capabilities, Capability};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::engines::kv::{self, KeyLocks};
use crate::engines::{pki, transit};
use crate::logical::{ApiError, Operation, Request, Response};
use crate::mounts::{EngineKind, MOUNTS_PATH, MountConfig, MountEntry, MountTable};
use crate::policies::PolicyStore;
use crate::token::{NewToken, TokenEntry, TokenStore, TokenUse, TtlLimits};

pub const AUDIT_TABLE_PATH: &str = "core/audit";
/// Each audit device's last `seq` and `hash`: the anchor that makes a
/// cut-off tail of an audit file detectable.
pub const AUDIT_HEADS_PATH: &str = "core/audit-heads";
/// The path name of the audit device set in the configuration file.
pub const CONFIG_AUDIT_DEVICE: &str = "file/";
/// How often changed audit heads are written behind the barrier (and on
/// seal, disable and shutdown).
pub const AUDIT_HEAD_INTERVAL: Duration = Duration::from_secs(1);

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
    /// Set by the server configuration (`[audit] file_path`): loaded at every
    /// unseal while the configuration names it, never disabled through the API.
    #[serde(default)]
    pub pinned: bool,
}

impl AuditDeviceEntry {
    pub fn file_path(&self) -> Option<&str> {
        self.options.get("file_path").and_then(|v| v.as_str())
    }
}

/// What the server configuration decides for the core.
#[derive(Clone, Debug, Default)]
pub struct CoreOptions {
    /// `[audit] file_path`: a device at `file/` that always wins (see
    /// docs/server-config.md, "Recovering from a failed audit device").
    pub audit_file: Option<PathBuf>,
    /// `[audit] dangerous_allow_api_file_devices`: directories inside which
    /// `sys/audit/<name>` may create file devices. Empty: the API cannot
    /// enable audit devices at all (CVE-2025-6000's class).
    pub api_audit_dirs: Vec<PathBuf>,
    pub ttl: TtlLimits,
    /// The clock tokens expire by (tests move it forward).
    pub clock: palisade_core::Clock,
    /// `dangerous_unauthenticated_rekey`: `sys/rekey/*` (but `backup`)
    /// without a token, as Vault. Off: a token with sudo is needed.
    pub dangerous_unauthenticated_rekey: bool,
    /// `dangerous_unauthenticated_generate_root`: `sys/generate-root/*`
    /// without a token, as Vault. Off: a token with sudo is needed.
    pub dangerous_unauthenticated_generate_root: bool,
    /// `[rotation]`: where KV rotation policies may get new values.
    pub rotation: crate::config::RotationConfig,
    /// `api_addr`: how clients reach this server (`scheme://host:port`);
    /// the default issuer of identity tokens. Empty: `http://127.0.0.1:8200`.
    pub api_addr: String,
}

/// The caller, as established by token lookup and the ACL check, with the
/// canonical request it was authorised for. Only [`Core::begin`] builds one,
/// after the check passed; handlers and engines take it as proof.
pub struct Authorized {
    token: Arc<TokenEntry>,
    token_id: palisade_core::Secret<String>,
    acl: Arc<Acl>,
    caps: Capabilities,
    request: Request,
    route: Option<(MountEntry, String)>,
    /// [`Core::mount_epoch`] when the route was looked up: a mount-table
    /// change since (a remount, an unmount) makes `route` check it again.
    mount_epoch: u64,
    audit: AuditEntry,
}

impl Authorized {
    pub fn token(&self) -> &Arc<TokenEntry> {
        &self.token
    }
    /// The token string the caller presented (echoed by `lookup-self`).
    pub fn token_id(&self) -> &str {
        self.token_id.expose()
    }
    pub fn acl(&self) -> &Arc<Acl> {
        &self.acl
    }
    pub fn request(&self) -> &Request {
        &self.request
    }
    pub fn is_sudo(&self) -> bool {
        self.acl.is_root() || self.caps.contains(Capability::Sudo)
    }
    /// Whether the ACL grants `cap` on the request's path (handlers that
    /// must decide create against update again, under their own lock).
    pub fn allows(&self, cap: Capability) -> bool {
        !self.caps.contains(Capability::Deny) && (self.acl.is_root() || self.caps.contains(cap))
    }
    /// Whether the ACL grants `cap` on another canonical path (an operation
    /// that also acts there, e.g. a KV rotation writing the secret).
    pub fn allows_on(&self, path: &str, cap: Capability) -> bool {
        let caps = self.acl.capabilities(path, false);
        !caps.contains(Capability::Deny) && (self.acl.is_root() || caps.contains(cap))
    }
    /// The request's audit record (what a newly enabled device writes first).
    pub(crate) fn audit_record(&self) -> &AuditEntry {
        &self.audit
    }
}

/// What [`Core::begin`] decided.
pub enum Begun {
    /// An unauthenticated endpoint (sys/init, sys/unseal...): read a small
    /// body and call [`Core::open`].
    Open(Request),
    /// Authorised: read the body and call [`Core::execute`].
    Authorized(Box<Authorized>),
}

/// Where the core is between sealed and serving.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// No key in memory, nothing served.
    Sealed = 0,
    /// The barrier is unsealed and tables and audit devices are loading:
    /// nothing is served until they are (an unaudited request must not happen).
    Unsealing = 1,
    Unsealed = 2,
    /// Waiting for in-flight requests before sealing: nothing new is served.
    Sealing = 3,
    /// HA: the barrier is unsealed but another node is active; nothing is
    /// loaded, requests are forwarded (or redirected) to the active node.
    Standby = 4,
    /// HA: this node won the lease and is loading; unsealed, not serving yet.
    Promoting = 5,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Anchors(BTreeMap<String, Head>);

pub struct Core {
    pub barrier: Arc<Barrier>,
    pub tokens: TokenStore,
    /// Leases of dynamic secrets and the expiry schedule (`lease.rs`).
    pub leases: Arc<crate::lease::Leases>,
    /// Open connection pools of the database engines' connections.
    pub databases: crate::engines::database::Pools,
    /// Mounts being disabled or moved (by uuid): refused to new requests
    /// while their leases are revoked (Vault's router taint).
    tainted: std::sync::Mutex<std::collections::HashSet<String>>,
    /// KV rotation policies (`kv_rotation.rs`), apart from `kv_locks`: a
    /// rotation holds its policy's lock, then the key's.
    pub rotation_locks: KeyLocks,
    /// PKI mounts' parsed CA signers (`pki::Issuers`), cleared at seal.
    pub pki_issuers: pki::Issuers,
    /// KV rotations running (mount uuid + key), and how many may run at once.
    kv_rotating: std::sync::Mutex<std::collections::HashSet<String>>,
    kv_rotation_slots: Arc<tokio::sync::Semaphore>,
    pub policies: PolicyStore,
    pub mounts: RwLock<Arc<MountTable>>,
    pub audit: Broker,
    pub audit_table: tokio::sync::Mutex<Vec<AuditDeviceEntry>>,
    pub kv_locks: Arc<KeyLocks>,
    /// Serialises mount-table changes.
    pub table_lock: tokio::sync::Mutex<()>,
    /// Held for reading by every request executing on a mount, for writing
    /// while the mount table is replaced: a remount or unmount waits for
    /// them, and a request routed before the change is checked again
    /// against the new table (never acting on a mount that moved away from
    /// the path its ACL check saw).
    mount_gate: tokio::sync::RwLock<()>,
    /// Bumped (under `mount_gate`) at every mount-table change.
    mount_epoch: AtomicU64,
    /// `sys/remount` migrations (in memory, as Vault's tracker).
    pub migrations: crate::remount::Migrations,
    /// Rekey and root generation attempts (`rootops.rs`).
    pub root_ops: crate::rootops::RootOps,
    /// Password hashing slots (userpass logins and user writes).
    pub hash_slots: crate::userpass::HashSlots,
    /// Failed-login counters (userpass and approle user lockout).
    pub lockouts: crate::lockout::Lockouts,
    /// The JWT auth methods' verifiers (keys cached, JWKS refreshed).
    pub jwt_verifiers: crate::jwt_auth::Verifiers,
    /// The OAuth2/OIDC provider's caches and revoked token ids.
    pub oauth: crate::oauth::OAuth,
    /// Entities, groups and their aliases (`identity/`).
    pub identity: crate::identity::Identity,
    pub options: CoreOptions,
    state: AtomicU8,
    /// Every executing request holds it for reading; sealing takes it for
    /// writing, so a seal waits for in-flight requests to finish.
    gate: Arc<tokio::sync::RwLock<()>>,
    /// Bumped at every unseal and seal: the audit-head writer of an earlier
    /// unseal stops when it changes.
    epoch: AtomicU64,
    /// The anchors last written behind the barrier.
    anchors: tokio::sync::Mutex<Anchors>,
    /// Serialises the transitions: loading after an unseal, and sealing.
    /// State changes happen only under it, so a seal and a reload can never
    /// run at once.
    transition: tokio::sync::Mutex<()>,
    /// `[ha]`: this server is one node of a cluster on PostgreSQL.
    ha: Option<Arc<crate::ha::HaNode>>,
    /// HA: the keyring stopped opening (reported once).
    keyring_lost: std::sync::atomic::AtomicBool,
}

fn lock<T>(r: Result<T, impl std::fmt::Display>) -> Result<T, ApiError> {
    r.map_err(|e| ApiError::internal(format!("core lock: {e}")))
}

/// Paths that need `sudo` on top of the operation's capability (Vault's
/// root paths; `sys/auth/*` is Vault's `auth/*`: reading or tuning an auth
/// method too, listing them at `sys/auth` not). `path` is canonical.
fn needs_sudo(path: &str, op: Operation) -> bool {
    path == "sys/audit"
        || path.starts_with("sys/auth/")
        || path.starts_with("sys/mounts/auth/")
        || path.starts_with("sys/audit/")
        || path.starts_with("sys/audit-hash/")
        || path.starts_with("sys/audit-head/")
        || path == "sys/rotate"
        || path == "sys/remount"
        || path == "sys/seal"
        || path == "sys/step-down"
        || path.starts_with("sys/rekey/")
        || path.starts_with("sys/generate-root/")
        || path.starts_with("auth/token/revoke-orphan")
        || path.starts_with("sys/leases/revoke-prefix/")
        || path.starts_with("sys/leases/revoke-force/")
        || path.starts_with("sys/revoke-prefix/")
        || path.starts_with("sys/revoke-force/")
        || (path.starts_with("sys/leases/lookup") && op == Operation::List)
        || (path.starts_with("auth/token/accessors") && op == Operation::List)
}

impl Core {
    pub fn new(barrier: Arc<Barrier>) -> Arc<Self> {
        Self::with_options(barrier, CoreOptions::default())
    }

    pub fn with_options(barrier: Arc<Barrier>, options: CoreOptions) -> Arc<Self> {
        Self::with_ha(barrier, options, None)
    }

    /// A core that is one node of an HA cluster when `ha` is given (its
    /// barrier must be on the node's fenced storage, see [`crate::ha`]).
    pub fn with_ha(
        barrier: Arc<Barrier>,
        options: CoreOptions,
        ha: Option<Arc<crate::ha::HaNode>>,
    ) -> Arc<Self> {
        let leases = Arc::new(crate::lease::Leases::new(barrier.clone()));
        Arc::new(Self {
            tokens: TokenStore::new(
                barrier.clone(),
                options.ttl,
                options.clock.clone(),
                leases.clone(),
            ),
            leases,
            databases: Default::default(),
            tainted: Default::default(),
            rotation_locks: Default::default(),
            pki_issuers: Default::default(),
            kv_rotating: Default::default(),
            kv_rotation_slots: Arc::new(tokio::sync::Semaphore::new(8)),
            policies: PolicyStore::new(barrier.clone()),
            barrier,
            mounts: RwLock::new(Arc::new(MountTable::default())),
            audit: Broker::new(),
            audit_table: tokio::sync::Mutex::new(Vec::new()),
            kv_locks: Arc::new(KeyLocks::default()),
            table_lock: tokio::sync::Mutex::new(()),
            mount_gate: tokio::sync::RwLock::new(()),
            mount_epoch: AtomicU64::new(0),
            migrations: Default::default(),
            root_ops: Default::default(),
            hash_slots: Default::default(),
            lockouts: Default::default(),
            jwt_verifiers: Default::default(),
            oauth: Default::default(),
            identity: Default::default(),
            options,
            state: AtomicU8::new(State::Sealed as u8),
            gate: Arc::new(tokio::sync::RwLock::new(())),
            epoch: AtomicU64::new(0),
            anchors: tokio::sync::Mutex::new(Anchors::default()),
            transition: tokio::sync::Mutex::new(()),
            ha,
            keyring_lost: Default::default(),
        })
    }

    /// The HA node, when this server is one.
    pub fn ha(&self) -> Option<&Arc<crate::ha::HaNode>> {
        self.ha.as_ref()
    }

    /// Unsealed: serving, or an HA standby (or one loading to serve).
    pub fn is_unsealed_node(&self) -> bool {
        matches!(
            self.state(),
            State::Unsealed | State::Standby | State::Promoting
        )
    }

    /// Why a request is not served: sealed, or (HA) not the active node.
    fn not_serving(&self) -> ApiError {
        if self.ha.is_some() && self.is_unsealed_node() {
            ApiError::not_active()
        } else {
            ApiError::sealed()
        }
    }

    /// Serving and, with HA, surely holding the lease: background jobs
    /// (tidy, expiry, rotation) run only then.
    pub fn is_active(&self) -> bool {
        self.is_serving() && !self.relays()
    }

    /// HA: requests go to the active node rather than being served here
    /// (a standby, or an active node whose lease ran out by its own clock
    /// before its elector noticed).
    pub fn relays(&self) -> bool {
        let Some(ha) = &self.ha else { return false };
        match self.state() {
            State::Standby | State::Promoting => true,
            State::Unsealed => ha.holds_lease().is_none(),
            _ => false,
        }
    }

    /// HA: the elector won the lease with `token`. Load everything from the
    /// database (what the previous active node wrote: the storage cache is
    /// cleared and the keyring read again) and serve.
    pub async fn ha_promote(self: &Arc<Self>, token: i64) {
        let Some(ha) = self.ha.clone() else { return };
        let _t = self.transition.lock().await;
        if self.state() != State::Standby || self.barrier.sealed() {
            return;
        }
        if ha.holds_lease() != Some(token) {
            return;
        }
        ha.clear_cache();
        if let Err(e) = self.barrier.reload_keyring().await {
            if matches!(e, palisade_barrier::BarrierError::Integrity { .. }) {
                // a rekey on another node wrapped the keyring under a new
                // root key: this node cannot read the cluster's data any more
                tracing::error!(
                    "HA: the stored keyring does not open with this node's root key (the cluster was rekeyed since this node was unsealed): sealing; unseal it again with the current shares"
                );
                ha.step_down();
                let _ = self.seal_locked().await;
                return;
            }
            tracing::error!(error = %e, "HA: could not read the keyring as the active node; stepping down");
            ha.step_down();
            return;
        }
        let loaded = self.load_and_serve(State::Promoting).await;
        match loaded {
            Ok(()) => {
                ha.became_active();
                tracing::info!(fence = token, "HA: active: state loaded, serving");
            }
            Err(e) => {
                tracing::error!(status = e.status, error = %e.messages.join("; "), "HA: could not load the state as the active node; stepping down");
                self.unload().await;
                self.set_state(State::Standby);
                ha.step_down();
            }
        }
    }

    /// HA, on a standby every renewal interval: read the keyring again, so
    /// that a `sys/rotate` or a rekey on the active node is followed while
    /// the rekey's root upgrade exists (its grace period). A standby that
    /// cannot follow (it missed the grace period) says so once; it must be
    /// unsealed again with the current shares.
    pub async fn ha_follow_keyring(&self) {
        if self.state() != State::Standby {
            return;
        }
        let _t = self.transition.lock().await;
        if self.state() != State::Standby {
            return;
        }
        match self.barrier.reload_keyring().await {
            Ok(()) => self.keyring_lost.store(false, Ordering::SeqCst),
            Err(palisade_barrier::BarrierError::Integrity { .. }) => {
                if !self.keyring_lost.swap(true, Ordering::SeqCst) {
                    tracing::error!(
                        "HA: the stored keyring no longer opens with this node's root key (the cluster was rekeyed and this node missed the upgrade): it cannot become active; seal it and unseal it again with the current shares"
                    );
                }
            }
            Err(e) => tracing::debug!(error = %e, "HA: could not read the keyring"),
        }
    }

    /// HA: the lease is lost (or given up). Stop serving at once (new
    /// requests are forwarded), let in-flight requests end (their writes
    /// are refused by the database anyway), and drop what was loaded.
    pub async fn ha_demote(self: &Arc<Self>) {
        let Some(ha) = self.ha.clone() else { return };
        let _t = self.transition.lock().await;
        if !matches!(self.state(), State::Unsealed | State::Promoting) {
            return;
        }
        self.set_state(State::Standby);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            self.gate.clone().write_owned(),
        )
        .await;
        self.unload().await;
        ha.became_standby();
        tracing::warn!("HA: standby: state dropped, requests are forwarded");
    }

    pub fn state(&self) -> State {
        match self.state.load(Ordering::SeqCst) {
            1 => State::Unsealing,
            2 => State::Unsealed,
            3 => State::Sealing,
            4 => State::Standby,
            5 => State::Promoting,
            _ => State::Sealed,
        }
    }

    fn set_state(&self, s: State) {
        self.state.store(s as u8, Ordering::SeqCst);
    }

    /// Serving requests: unsealed and done loading.
    pub fn is_serving(&self) -> bool {
        self.state() == State::Unsealed
    }

    /// The barrier has just been unsealed: load everything that lives behind
    /// it, then start serving. Audit devices whose file cannot be opened are
    /// registered as unavailable (they fail every write), never a reason to
    /// stay sealed: what the audit files hold cannot decide whether the
    /// server unseals. Called with `transition` held.
    async fn post_unseal(self: &Arc<Self>) -> Result<(), ApiError> {
        self.load_and_serve(State::Unsealing).await
    }

    /// [`Core::post_unseal`], in state `loading` until it serves.
    async fn load_and_serve(self: &Arc<Self>, loading: State) -> Result<(), ApiError> {
        self.set_state(loading);
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        let table = match self.barrier.get(MOUNTS_PATH).await? {
            Some(b) => serde_json::from_slice::<MountTable>(&b).map_err(ApiError::internal)?,
            None => MountTable::default(),
        };
        self.tokens.set_auth_methods(table.auth_accessors())?;
        *lock(self.mounts.write())? = Arc::new(table);
        self.policies.setup().await?;
        self.tokens.setup().await?;
        self.leases.load().await?;
        // the dummy hash unknown users are verified against, made now: made
        // on the first such login, it would make that login slower than
        // the others (a one-time username oracle)
        tokio::task::spawn_blocking(palisade_crypto::password::prepare)
            .await
            .map_err(|e| ApiError::internal(format!("password hashing task: {e}")))?;
        self.load_audit_devices().await?;
        self.set_state(State::Unsealed);
        self.spawn_audit_head_writer(epoch);
        Ok(())
    }

    /// `sys/unseal`: submit one key share and, when it completes the key,
    /// load and start serving. All in a task of its own, so a client that
    /// leaves never leaves the barrier open without the core loaded.
    pub async fn submit_unseal_share(
        self: &Arc<Self>,
        share: Zeroizing<Vec<u8>>,
    ) -> Result<(), ApiError> {
        let core = self.clone();
        tokio::spawn(async move {
            let progress = core.barrier.submit_share(share).await?;
            // The barrier is open; the core serves only once its tables and
            // audit devices are loaded. This also finishes an unseal whose
            // loading an earlier attempt did not complete.
            if !progress.sealed && core.finish_unseal_now().await? {
                tracing::info!("unsealed");
            }
            Ok(())
        })
        .await
        .map_err(|e| ApiError::internal(format!("unseal task: {e}")))?
    }

    /// The barrier is unsealed: load and start serving unless that is done
    /// already. Returns whether this call did it. If loading fails the core
    /// seals again (fail closed: a core that cannot load its tables stays sealed).
    ///
    /// Only from `Sealed` (or an `Unsealing` that an earlier attempt left
    /// unfinished): while a seal is waiting for in-flight requests
    /// (`Sealing`) an unseal request changes nothing.
    pub async fn finish_unseal(self: &Arc<Self>) -> Result<bool, ApiError> {
        // its own task: a client that leaves never stops loading half way
        let core = self.clone();
        tokio::spawn(async move { core.finish_unseal_now().await })
            .await
            .map_err(|e| ApiError::internal(format!("unseal task: {e}")))?
    }

    async fn finish_unseal_now(self: Arc<Self>) -> Result<bool, ApiError> {
        let _t = self.transition.lock().await;
        if !matches!(self.state(), State::Sealed | State::Unsealing) || self.barrier.sealed() {
            return Ok(false);
        }
        if let Some(ha) = self.ha.clone() {
            // a standby until the elector wins the lease (ha_promote loads)
            self.set_state(State::Standby);
            if let Err(e) = ha.start(&self) {
                let _ = self.seal_locked().await;
                return Err(e);
            }
            return Ok(true);
        }
        if let Err(e) = self.post_unseal().await {
            let _ = self.seal_locked().await;
            return Err(e);
        }
        Ok(true)
    }

    async fn load_audit_devices(&self) -> Result<(), ApiError> {
        let mut devices: Vec<AuditDeviceEntry> = match self.barrier.get(AUDIT_TABLE_PATH).await? {
            Some(b) => serde_json::from_slice(&b).map_err(ApiError::internal)?,
            None => Vec::new(),
        };
        let anchors: Anchors = match self.barrier.get(AUDIT_HEADS_PATH).await? {
            Some(b) => serde_json::from_slice(&b).map_err(ApiError::internal)?,
            None => Anchors::default(),
        };
        if self.reconcile_config_device(&mut devices) {
            let bytes = serde_json::to_vec(&devices).map_err(ApiError::internal)?;
            self.barrier.put(AUDIT_TABLE_PATH, &bytes).await?;
        }
        let mut ready: Vec<FileDevice> = Vec::new();
        let mut unavailable = Vec::new();
        for d in &devices {
            let anchor = anchors.0.get(&self.anchor_key(&d.path));
            match reopen_device(d, anchor, &self.options.api_audit_dirs) {
                Ok(r) => {
                    if let Some(w) = &r.warning {
                        tracing::error!(device = %d.path, warning = %w, "audit device reopened on a broken chain");
                    }
                    let id = r.device.identity();
                    if id.is_some() && ready.iter().any(|o| o.identity() == id) {
                        tracing::error!(device = %d.path, "audit device refused: another device writes to the same file");
                        unavailable.push(d.path.clone());
                    } else {
                        ready.push(r.device);
                    }
                }
                Err(e) => {
                    // configured but not loaded: unwritable, never "no devices"
                    tracing::error!(device = %d.path, error = %e, "audit device could not be opened; it fails every write until it is fixed or disabled");
                    unavailable.push(d.path.clone());
                }
            }
        }
        self.audit.reset(ready, unavailable);
        *self.audit_table.lock().await = devices;
        *self.anchors.lock().await = anchors;
        Ok(())
    }

    /// Make the table agree with `[audit] file_path`: the configured device
    /// is pinned at `file/`, replacing a device enabled there through the
    /// API; a pinned device the configuration no longer names is dropped.
    /// Returns whether the table changed.
    fn reconcile_config_device(&self, devices: &mut Vec<AuditDeviceEntry>) -> bool {
        let before = devices.len();
        let Some(path) = &self.options.audit_file else {
            devices.retain(|d| !d.pinned);
            return devices.len() != before;
        };
        let want = path.display().to_string();
        if let Some(d) = devices.iter_mut().find(|d| d.pinned) {
            if d.file_path() == Some(want.as_str()) {
                return false;
            }
            d.options
                .insert("file_path".into(), Value::String(want.clone()));
            return true;
        }
        if let Some(old) = devices.iter().find(|d| d.path == CONFIG_AUDIT_DEVICE) {
            tracing::warn!(device = %old.path, "the audit device enabled through the API at file/ is replaced by the configuration's [audit] file_path");
        }
        devices.retain(|d| d.path != CONFIG_AUDIT_DEVICE);
        let mut options = Map::new();
        options.insert("file_path".into(), Value::String(want));
        let key = palisade_crypto::mac::MacKey::generate();
        devices.push(AuditDeviceEntry {
            path: CONFIG_AUDIT_DEVICE.into(),
            kind: "file".into(),
            description: "set in the server configuration ([audit] file_path)".into(),
            options,
            local: false,
            hmac_key: base64::engine::general_purpose::STANDARD.encode(key.expose_bytes()),
            pinned: true,
        });
        true
    }

    /// Write every device's head behind the barrier if it changed since the
    /// last write. Runs every [`AUDIT_HEAD_INTERVAL`], and on seal and
    /// device disable.
    pub async fn persist_audit_heads(&self) -> Result<(), ApiError> {
        let mut last = self.anchors.lock().await;
        let mut next = last.clone();
        let table = self.audit_table.lock().await;
        // (with HA, other nodes' anchors of a device stay)
        next.0.retain(|k, _| {
            let device = k.split_once('@').map_or(k.as_str(), |(d, _)| d);
            table.iter().any(|d| d.path == device)
        });
        drop(table);
        for dev in self.audit.devices() {
            if let Some(h) = dev.head() {
                next.0.insert(self.anchor_key(dev.path_name()), h);
            }
        }
        if next == *last {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&next).map_err(ApiError::internal)?;
        self.barrier.put(AUDIT_HEADS_PATH, &bytes).await?;
        *last = next;
        Ok(())
    }

    /// The head last anchored behind the barrier for device `path` (of
    /// this node's file).
    pub async fn anchored_head(&self, path: &str) -> Option<Head> {
        self.anchors
            .lock()
            .await
            .0
            .get(&self.anchor_key(path))
            .cloned()
    }

    /// Where a device's head is anchored: by its path; with HA by its path
    /// and this node's `api_addr`, since each node writes its own file for
    /// the same device (a node that becomes active continues its own
    /// chain, never another node's).
    fn anchor_key(&self, path: &str) -> String {
        match &self.ha {
            Some(ha) => format!("{path}@{}", ha.config.api_addr),
            None => path.to_string(),
        }
    }

    fn spawn_audit_head_writer(self: &Arc<Self>, epoch: u64) {
        let core = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(AUDIT_HEAD_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(core) = core.upgrade() else { return };
                if core.epoch.load(Ordering::SeqCst) != epoch {
                    return;
                }
                if core.is_serving()
                    && let Err(e) = core.persist_audit_heads().await
                {
                    tracing::warn!(
                        status = e.status,
                        "could not write the audit heads; retrying"
                    );
                }
            }
        });
    }

    /// Seal: drop keys, caches and open audit files. Callers that serve
    /// requests use [`Core::seal_when_idle`].
    pub async fn seal(&self) -> Result<(), ApiError> {
        let _t = self.transition.lock().await;
        self.seal_locked().await
    }

    async fn seal_locked(&self) -> Result<(), ApiError> {
        self.set_state(State::Sealing);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if !self.barrier.sealed()
            && let Err(e) = self.persist_audit_heads().await
        {
            tracing::warn!(
                status = e.status,
                "could not write the audit heads before sealing"
            );
        }
        if let Some(ha) = &self.ha {
            // release the lease: another node takes over at once
            ha.stop().await;
        }
        let r = self.barrier.seal().await;
        self.unload().await;
        self.set_state(State::Sealed);
        r.map_err(ApiError::from)
    }

    /// Drop everything loaded from behind the barrier (seal, HA demotion).
    async fn unload(&self) {
        self.root_ops.reset().await;
        self.tokens.clear();
        self.leases.clear();
        self.databases.clear();
        self.pki_issuers.clear();
        self.lockouts.forget(None);
        self.jwt_verifiers.clear();
        self.oauth.clear();
        self.identity.clear();
        self.policies.clear();
        self.migrations.clear();
        // closed, not empty: nothing is recorded (so nothing is served)
        // until an unseal loads the devices again
        self.audit.close();
        self.audit_table.lock().await.clear();
        if let Ok(mut m) = self.mounts.write() {
            *m = Arc::new(MountTable::default());
        }
    }

    /// Seal once every in-flight request has finished; requests that arrive
    /// meanwhile wait and are then answered "sealed". Used at shutdown.
    pub async fn seal_when_idle(&self) -> Result<(), ApiError> {
        let _t = self.transition.lock().await;
        if self.state() == State::Unsealed {
            self.set_state(State::Sealing);
        }
        let _all = self.gate.clone().write_owned().await;
        self.seal_locked().await
    }

    /// Initialise storage and return (unseal key shares, root token). Like
    /// Vault, the root token is created during init and the server is left sealed.
    ///
    /// Runs in a task of its own: a client that leaves mid-way never leaves
    /// the barrier open (init always ends sealed).
    pub async fn initialize(
        self: &Arc<Self>,
        shares: u8,
        threshold: u8,
    ) -> Result<(Vec<Zeroizing<Vec<u8>>>, String), ApiError> {
        let core = self.clone();
        tokio::spawn(async move { core.initialize_now(shares, threshold).await })
            .await
            .map_err(|e| ApiError::internal(format!("init task: {e}")))?
    }

    async fn initialize_now(
        self: Arc<Self>,
        shares: u8,
        threshold: u8,
    ) -> Result<(Vec<Zeroizing<Vec<u8>>>, String), ApiError> {
        let _t = self.transition.lock().await;
        let Some(ha) = self.ha.clone() else {
            return self.initialize_locked(shares, threshold).await;
        };
        // no node is unsealed, so none leads: take the lease to write
        let (lock, token) = ha.acquire_once().await?;
        let r = self.initialize_locked(shares, threshold).await;
        ha.release_once(lock, token).await;
        r
    }

    async fn initialize_locked(
        self: &Arc<Self>,
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
        self.seal_locked().await?;
        Ok((parts, result?))
    }

    pub async fn create_root_token(&self, id: Option<String>) -> Result<String, ApiError> {
        let (token, _, _) = self
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
    pub async fn dev_setup(
        self: &Arc<Self>,
        root_token_id: Option<String>,
    ) -> Result<String, ApiError> {
        let parts = self.barrier.initialize(1, 1).await?;
        {
            let _t = self.transition.lock().await;
            self.barrier.unseal_with_key(&parts[0]).await?;
            self.post_unseal().await?;
        }
        let token = self.create_root_token(root_token_id).await?;
        let mut options = Map::new();
        options.insert("version".into(), Value::String("2".into()));
        self.enable_mount(
            "secret",
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

    /// Enable a mount at `path`, a canonical mount path without its trailing `/`.
    pub async fn enable_mount(
        &self,
        path: &str,
        kind: &str,
        description: &str,
        options: Map<String, Value>,
        config: MountConfig,
    ) -> Result<(), ApiError> {
        let path = MountTable::check_path(path)?;
        let (kind, options) = match kind {
            "kv" | "generic" => (kind.to_string(), options),
            "transit" | "pki" | "database" => {
                if !options.is_empty() {
                    return Err(ApiError::bad_request(format!(
                        "the {kind} engine takes no options"
                    )));
                }
                (kind.to_string(), options)
            }
            "kv-v2" => {
                let mut o = options;
                o.insert("version".into(), Value::String("2".into()));
                ("kv".to_string(), o)
            }
            _ => {
                return Err(ApiError::bad_request(
                    "plugin not found in the catalog: only kv, kv-v2, generic, transit, pki and database are available",
                ));
            }
        };
        if let Some(v) = options.get("version") {
            let v = crate::logical::fields::string(v, "version")?;
            if v != "1" && v != "2" {
                return Err(ApiError::bad_request("invalid kv version: use 1 or 2"));
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

    /// Write the mount table (one barrier entry: a change is all there or
    /// not at all, a remount included, since a mount's data lives under its
    /// UUID and never moves) and serve it. Waits for requests executing on
    /// a mount; callers hold `table_lock`.
    pub async fn save_mounts(&self, table: MountTable) -> Result<(), ApiError> {
        let bytes = serde_json::to_vec(&table).map_err(ApiError::internal)?;
        let _gate = self.mount_gate.write().await;
        self.barrier.put(MOUNTS_PATH, &bytes).await?;
        self.tokens.set_auth_methods(table.auth_accessors())?;
        *lock(self.mounts.write())? = Arc::new(table);
        self.mount_epoch.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Enable an audit device through the API. The file must be allowed by
    /// the configuration, is opened with [`Trust::Api`], and must take a
    /// first record (`first`, the request enabling it) before the device is
    /// saved: a device that cannot write is never enabled.
    pub async fn enable_audit(
        &self,
        entry: AuditDeviceEntry,
        first: &AuditEntry,
    ) -> Result<(), ApiError> {
        let file_path = entry
            .file_path()
            .ok_or_else(|| ApiError::bad_request("file_path is required"))?;
        let file_path =
            crate::audit_path::check_api_file_path(file_path, &self.options.api_audit_dirs)?;
        let mut table = self.audit_table.lock().await;
        if table.iter().any(|d| d.path == entry.path) {
            return Err(ApiError::bad_request(format!(
                "path already in use: {}",
                entry.path
            )));
        }
        if table
            .iter()
            .any(|d| d.file_path().map(std::path::Path::new) == Some(file_path.as_path()))
        {
            return Err(ApiError::bad_request(
                "another audit device already writes to this file",
            ));
        }
        let key = decode_key(&entry)?;
        let dev = FileDevice::open(&entry.path, &file_path, &key, Trust::Api).map_err(|e| {
            tracing::warn!(device = %entry.path, error = %e, "audit device refused: cannot open its file");
            ApiError::bad_request(match e {
                palisade_audit::AuditError::Recover { .. } => {
                    "sanity check failed: the file exists and is not an audit log"
                }
                _ => "sanity check failed: cannot open the file for writing (it must be a regular file, not a symlink, in an existing directory)",
            })
        })?;
        // where the file really is, now that it is open: the directory check
        // above could have raced a swap of a directory for a symlink
        match dev.real_path() {
            Ok(real) if crate::audit_path::inside_allowed(&real, &self.options.api_audit_dirs) => {}
            _ => {
                tracing::warn!(device = %entry.path, "audit device refused: its file resolved outside the allowed directories when opened");
                return Err(ApiError::bad_request(
                    "file_path is outside the directories the server configuration allows for audit devices",
                ));
            }
        }
        let id = dev.identity();
        if id.is_none() || self.audit.devices().iter().any(|o| o.identity() == id) {
            return Err(ApiError::bad_request(
                "another audit device already writes to this file",
            ));
        }
        if let Err(e) = dev.write_entry(first) {
            tracing::warn!(device = %entry.path, error = %e, "audit device refused: its first record could not be written");
            return Err(ApiError::bad_request(
                "sanity check failed: the device could not write its first record",
            ));
        }
        let mut stored = entry;
        stored.options.insert(
            "file_path".into(),
            Value::String(file_path.display().to_string()),
        );
        let mut next = table.clone();
        next.push(stored);
        let bytes = serde_json::to_vec(&next).map_err(ApiError::internal)?;
        self.barrier.put(AUDIT_TABLE_PATH, &bytes).await?;
        self.audit.add(dev);
        *table = next;
        Ok(())
    }

    pub async fn disable_audit(&self, path: &str) -> Result<(), ApiError> {
        let mut table = self.audit_table.lock().await;
        if table.iter().any(|d| d.path == path && d.pinned) {
            return Err(ApiError::bad_request(
                "this audit device is set in the server configuration ([audit] file_path); remove it there",
            ));
        }
        let next: Vec<AuditDeviceEntry> =
            table.iter().filter(|d| d.path != path).cloned().collect();
        if next.len() == table.len() {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&next).map_err(ApiError::internal)?;
        self.barrier.put(AUDIT_TABLE_PATH, &bytes).await?;
        self.audit.remove(path);
        *table = next;
        drop(table);
        self.persist_audit_heads().await
    }

    /// Paths answered without a token and never audited (Vault's list).
    pub fn is_unauthenticated(path: &str) -> bool {
        matches!(
            path,
            "sys/init" | "sys/seal-status" | "sys/unseal" | "sys/health" | "sys/leader"
        )
    }

    /// `sys/rekey/*` or `sys/generate-root/*` while the configuration lets
    /// them be called without a token (`dangerous_unauthenticated_*`).
    fn unauthenticated_root_op(&self, path: &str) -> bool {
        (self.options.dangerous_unauthenticated_rekey
            && path.starts_with("sys/rekey/")
            && !path.starts_with("sys/rekey/backup")
            && !path.starts_with("sys/rekey/recovery-key-backup"))
            || (self.options.dangerous_unauthenticated_generate_root
                && path.starts_with("sys/generate-root/"))
    }

    /// An unauthenticated endpoint, with its (small) body in `req.data`.
    pub async fn open(self: &Arc<Self>, req: Request) -> Result<Response, ApiError> {
        if self.unauthenticated_root_op(&req.path) {
            return self.open_root_op(req).await;
        }
        if self.login_route(&req)?.is_some() {
            return self.open_login(req).await;
        }
        if self.pki_public_route(&req)?.is_some() {
            return self.open_pki_public(req).await;
        }
        if req.path.as_str() == WRAPPING_LOOKUP {
            return self.open_wrapping_lookup(req).await;
        }
        if crate::identity::oidc::is_public(req.operation, &req.path) {
            return self.open_identity_public(req).await;
        }
        crate::sys::handle_unauthenticated(self, &req).await
    }

    /// The PKI mount and relative path of a read Vault serves without a
    /// token (`pki::is_public`), if this request is one.
    fn pki_public_route(&self, req: &Request) -> Result<Option<(MountEntry, String)>, ApiError> {
        if req.operation != Operation::Read || req.path.starts_with("auth/") {
            return Ok(None);
        }
        let table = self.mount_table()?;
        Ok(match table.route(&req.path) {
            Some((m, rel))
                if m.engine() == Some(EngineKind::Pki) && pki::is_public(req.operation, rel) =>
            {
                Some((m.clone(), rel.to_owned()))
            }
            _ => None,
        })
    }

    /// A public PKI read: served only while unsealed and while the mount
    /// serves, audited like any request (without auth or query data).
    async fn open_pki_public(self: &Arc<Self>, req: Request) -> Result<Response, ApiError> {
        let gate = self.gate.clone().read_owned().await;
        if !self.is_serving() {
            return Err(self.not_serving());
        }
        let _mounts = self.mount_gate.read().await;
        let Some((mount, rel)) = self.pki_public_route(&req)? else {
            return Err(ApiError::unsupported_path());
        };
        if !self.mount_serves(&mount.uuid)? {
            return Err(ApiError::unsupported_path());
        }
        let mut audit = open_audit_entry(&req);
        audit.request.data = None;
        audit.request.mount_type = mount.kind.clone();
        if let Err(e) = self.audit.log(&audit).await {
            tracing::error!(error = %e, path = %req.path, "audit failed; refusing request");
            return Err(ApiError::internal("audit: no device recorded the request"));
        }
        let view = View::new(self.barrier.clone(), mount.view_prefix());
        let result = pki::public_read(&rel, &view, &self.kv_locks, &self.pki_issuers).await;
        self.audit_response(audit, &result).await?;
        drop(gate);
        result
    }

    /// `sys/wrapping/lookup`, served without a token (Vault): only while
    /// unsealed, audited like any request (the token in the body HMAC'd).
    async fn open_wrapping_lookup(self: &Arc<Self>, req: Request) -> Result<Response, ApiError> {
        let gate = self.gate.clone().read_owned().await;
        if !self.is_serving() {
            return Err(self.not_serving());
        }
        let audit = open_audit_entry(&req);
        if let Err(e) = self.audit.log(&audit).await {
            tracing::error!(error = %e, path = %req.path, "audit failed; refusing request");
            return Err(ApiError::internal("audit: no device recorded the request"));
        }
        let result = crate::wrapping::lookup(self, &req).await;
        self.audit_response(audit, &result).await?;
        drop(gate);
        result
    }

    /// An OAuth endpoint of a provider (`oauth/endpoints.rs`), served without
    /// a Vault token: only while unsealed, audited like any request (the
    /// form HMAC'd, the token in the answer HMAC'd); a request the audit
    /// cannot record is refused.
    pub async fn oauth_public(
        self: &Arc<Self>,
        mut req: Request,
        name: &str,
        ep: crate::oauth::endpoints::Endpoint,
        call: &crate::oauth::endpoints::Call<'_>,
    ) -> Result<Response, ApiError> {
        use crate::oauth::endpoints::{self, Endpoint};
        let gate = self.gate.clone().read_owned().await;
        if !self.is_serving() {
            return Err(self.not_serving());
        }
        let form = match ep {
            Endpoint::Token | Endpoint::Introspect | Endpoint::Revoke if !call.get => {
                endpoints::form(call)
            }
            _ => Ok(Vec::new()),
        };
        if let Ok(f) = &form {
            req.data = crate::oauth::form_audit(f);
        }
        let mut audit = open_audit_entry(&req);
        if let Err(e) = self.audit.log(&audit).await {
            tracing::error!(error = %e, path = %req.path, "audit failed; refusing request");
            return Err(ApiError::internal("audit: no device recorded the request"));
        }
        let outcome = match form {
            Ok(f) => endpoints::serve(self, name, ep, call, &f).await,
            Err(r) => Ok(endpoints::Outcome::from(*r)),
        };
        // the response record names the client that authenticated (client
        // ids are not secret), or says why authentication failed
        let result = outcome.map(|o| {
            if let Some(id) = o.client_id {
                let mut metadata = Map::new();
                metadata.insert("client_id".into(), Value::String(id));
                audit.auth = Some(AuditAuth {
                    display_name: format!("oauth-{}", o.client_name.unwrap_or_default()),
                    metadata,
                    ..AuditAuth::default()
                });
            }
            audit.error = o.failure.map(str::to_string);
            o.response
        });
        self.audit_response(audit, &result).await?;
        drop(gate);
        result
    }

    /// The ACL a token acts under: its own policies plus its entity's and
    /// its entity's groups' as they are now. None: its entity is disabled
    /// or deleted, and the token authorises nothing.
    pub async fn token_acl(&self, entry: &TokenEntry) -> Result<Option<Arc<Acl>>, ApiError> {
        use crate::identity::IdentityPolicies;
        Ok(
            match self.identity.policies_for(self, &entry.entity_id).await? {
                IdentityPolicies::None => Some(self.policies.acl(&entry.policies)?),
                IdentityPolicies::Some(extra) if extra.is_empty() => {
                    Some(self.policies.acl(&entry.policies)?)
                }
                IdentityPolicies::Some(extra) => {
                    let mut all = entry.policies.clone();
                    all.extend(extra);
                    all.sort();
                    all.dedup();
                    Some(self.policies.acl(&all)?)
                }
                IdentityPolicies::Disabled => None,
            },
        )
    }

    /// How clients reach this server (`api_addr`).
    pub fn api_addr(&self) -> &str {
        if self.options.api_addr.is_empty() {
            "http://127.0.0.1:8200"
        } else {
            &self.options.api_addr
        }
    }

    /// `identity/oidc/.well-known/*`, served without a token: only while
    /// unsealed, audited like any request.
    async fn open_identity_public(self: &Arc<Self>, req: Request) -> Result<Response, ApiError> {
        let gate = self.gate.clone().read_owned().await;
        if !self.is_serving() {
            return Err(self.not_serving());
        }
        let mut audit = open_audit_entry(&req);
        audit.request.data = None;
        if let Err(e) = self.audit.log(&audit).await {
            tracing::error!(error = %e, path = %req.path, "audit failed; refusing request");
            return Err(ApiError::internal("audit: no device recorded the request"));
        }
        let result = crate::identity::oidc::public(self, &req.path).await;
        self.audit_response(audit, &result).await?;
        drop(gate);
        result
    }

    /// The core clock's time as a `SystemTime` (tests move it forward).
    pub fn clock_wall(&self) -> std::time::SystemTime {
        let nanos = u64::try_from(self.options.clock.now_nanos()).unwrap_or(0);
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(nanos)
    }

    /// A rekey or root generation call without a token: served only while
    /// unsealed, and audited like any other request (request before, fail
    /// closed; response after), with no `auth`.
    async fn open_root_op(self: &Arc<Self>, req: Request) -> Result<Response, ApiError> {
        let gate = self.gate.clone().read_owned().await;
        if !self.is_serving() {
            return Err(self.not_serving());
        }
        let audit = open_audit_entry(&req);
        if let Err(e) = self.audit.log(&audit).await {
            tracing::error!(error = %e, path = %req.path, "audit failed; refusing request");
            return Err(ApiError::internal("audit: no device recorded the request"));
        }
        let rest = req.path.strip_prefix("sys/").unwrap_or_default();
        let result = crate::rootops::handle(self, &req, rest).await;
        self.audit_response(audit, &result).await?;
        drop(gate);
        result
    }

    /// The auth method mount and the username as sent when `req` is for
    /// a login path (`auth/<method>/login/<username>`, open to every
    /// client as in Vault). The operation and the username are checked by
    /// the login, after the request is audited.
    fn login_route(&self, req: &Request) -> Result<Option<(MountEntry, String)>, ApiError> {
        let Some(rest) = req.path.strip_prefix("auth/") else {
            return Ok(None);
        };
        if rest.starts_with("token/") {
            return Ok(None);
        }
        let table = self.mount_table()?;
        let Some((m, rel)) = table.auth_route(rest) else {
            return Ok(None);
        };
        match (m.kind.as_str(), rel.strip_prefix("login/")) {
            ("userpass", Some(name)) if !name.is_empty() => Ok(Some((m.clone(), name.to_string()))),
            ("approle" | "jwt" | "cert", _) if rel == "login" => {
                Ok(Some((m.clone(), String::new())))
            }
            _ => Ok(None),
        }
    }

    /// Held for reading while a request acts on a mount or auth method.
    pub(crate) async fn mount_gate_read(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.mount_gate.read().await
    }

    /// Whether the auth method with this accessor is enabled now.
    pub(crate) fn auth_method_enabled(&self, accessor: &str) -> Result<bool, ApiError> {
        Ok(self
            .mount_table()?
            .auth
            .iter()
            .any(|m| m.accessor == accessor))
    }

    /// A login (`auth/<method>/login/<username>`): no token, served only
    /// while unsealed, audited like any other request (request before, fail
    /// closed, with the password HMAC'd as every string; response after,
    /// the new token HMAC'd). The auth method must still be the one routed
    /// to when the login acts: disabling it waits for logins in flight.
    async fn open_login(self: &Arc<Self>, req: Request) -> Result<Response, ApiError> {
        let gate = self.gate.clone().read_owned().await;
        if !self.is_serving() {
            return Err(self.not_serving());
        }
        let Some((mount, name)) = self.login_route(&req)? else {
            return Err(ApiError::unsupported_path());
        };
        let mut audit = open_audit_entry(&req);
        audit.request.mount_type = mount.kind.clone();
        if let Err(e) = self.audit.log(&audit).await {
            tracing::error!(error = %e, path = %req.path, "audit failed; refusing request");
            return Err(ApiError::internal("audit: no device recorded the request"));
        }
        // a login is a write (Vault: GET or DELETE → 405): a link or an
        // image must not mint tokens with a browser's client certificate
        if req.operation != Operation::Write {
            let result = Err(ApiError::unsupported_operation());
            self.audit_response(audit, &result).await?;
            return result;
        }
        let result = match mount.kind.as_str() {
            "approle" => crate::approle::login(self, &mount, &req).await,
            "jwt" => crate::jwt_auth::login(self, &mount, &req).await,
            "cert" => crate::cert_auth::login(self, &mount, &req).await,
            _ => crate::userpass::login(self, &mount, &name, &req).await,
        };
        let result = match result {
            Ok(r) => crate::wrapping::maybe_wrap(self, &req, r).await,
            Err(e) => Err(e),
        };
        self.audit_response(audit, &result).await?;
        drop(gate);
        result
    }

    /// The TTLs tokens of an auth method get: its tuned default and max
    /// lease TTLs, else the system's (the max never above the system's).
    pub fn auth_mount_ttls(&self, m: &MountEntry) -> (i64, i64) {
        let sys = self.options.ttl;
        let max = match m.config.max_lease_ttl {
            0 => sys.max_ttl,
            x => x.min(sys.max_ttl),
        };
        let default = match m.config.default_lease_ttl {
            0 => sys.default_ttl,
            x => x,
        };
        (default.min(max), max)
    }

    /// What renewing a token an auth method issued may grant (the method
    /// decides; one since disabled renews nothing).
    /// `client_certs`: the renewing connection's (the cert method checks them).
    pub async fn auth_method_renewal(
        &self,
        e: &TokenEntry,
        client_certs: Option<&[Vec<u8>]>,
    ) -> Result<TokenEntry, ApiError> {
        let table = self.mount_table()?;
        let m = table
            .auth
            .iter()
            .find(|m| m.accessor == e.mount_accessor)
            .ok_or_else(|| ApiError::bad_request("invalid token"))?;
        match m.kind.as_str() {
            "userpass" => crate::userpass::renew_entry(self, m, e).await,
            "approle" => crate::approle::renew_entry(self, m, e).await,
            "jwt" => crate::jwt_auth::renew_entry(self, m, e).await,
            "cert" => crate::cert_auth::renew_entry(self, m, e, client_certs).await,
            _ => Err(ApiError::bad_request("lease is not renewable")),
        }
    }

    /// The first half of the pipeline: everything that needs only the
    /// request's head. A refusal is audited here, without the body, which is
    /// never read.
    pub async fn begin(
        self: &Arc<Self>,
        req: Request,
        token: Option<String>,
    ) -> Result<Begun, ApiError> {
        if Self::is_unauthenticated(&req.path) || self.unauthenticated_root_op(&req.path) {
            return Ok(Begun::Open(req));
        }
        if !self.is_serving() {
            return Err(self.not_serving());
        }
        if self.relays() {
            // HA: the lease ran out by this node's clock (a pause); what it
            // loaded may be stale, so nothing is served from it
            return Err(ApiError::new(
                503,
                "this node is not the active node; retry",
            ));
        }
        if self.login_route(&req)?.is_some() {
            return Ok(Begun::Open(req));
        }
        // a PKI mount's CA, chain, CRL and certificates are served without
        // a token (Vault): relying parties fetch the CRL at the URL written
        // into certificates, with no token; a token sent along is ignored
        if self.pki_public_route(&req)?.is_some() {
            return Ok(Begun::Open(req));
        }
        if req.path.as_str() == WRAPPING_LOOKUP {
            return Ok(Begun::Open(req));
        }
        if crate::identity::oidc::is_public(req.operation, &req.path) {
            return Ok(Begun::Open(req));
        }

        let token_id = token.unwrap_or_default();
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
                path: req.path.to_string(),
                mount_type: String::new(),
                client_token: token_id.clone(),
                client_token_accessor: entry
                    .as_ref()
                    .map(|e| e.accessor.clone())
                    .unwrap_or_default(),
                remote_address: req.remote_addr.clone(),
                // query parameters are request data for reads, lists and
                // deletes (Vault): audited, HMAC'd like the body
                data: query_data(&req),
            },
            response: None,
            error: None,
        };
        let Some(entry) = entry else {
            // without a valid token the query is not recorded either: an
            // anonymous client must not choose what the audit log grows by
            audit.request.data = None;
            // unwrapping with a wrapping token already used or expired is
            // told as Vault tells it (400), not as a bad token (403)
            let err = if req.path.as_str() == "sys/wrapping/unwrap"
                && req.operation == Operation::Write
                && !token_id.is_empty()
            {
                ApiError::bad_request("wrapping token is not valid or does not exist")
            } else {
                ApiError::permission_denied()
            };
            return Err(self.refuse(audit, err).await);
        };
        if !entry.allows_address(&req.remote_addr) {
            // a token bound to CIDRs (an auth method's token_bound_cidrs)
            // used from elsewhere: as an invalid token
            audit.request.data = None;
            return Err(self.refuse(audit, ApiError::permission_denied()).await);
        }

        // the entity's and its groups' policies join the token's, as they
        // are now; a disabled or deleted entity's tokens authorise nothing
        let Some(acl) = self.token_acl(&entry).await? else {
            audit.request.data = None;
            return Err(self.refuse(audit, ApiError::permission_denied()).await);
        };
        // the epoch first: a table change after this read is seen by `route`
        let mount_epoch = self.mount_epoch.load(Ordering::SeqCst);
        let table = self.mount_table()?;
        let route = route_in(&table, &req.path).map(|(m, rel)| (m.clone(), rel.to_string()));
        // names under an auth method are canonical before the ACL decides;
        // a caller with no rights at all there is told only "permission
        // denied", as anywhere else (no oracle for the method's layout)
        if let Some((m, rel)) = &route
            && req.path.starts_with("auth/")
            && let Err(e) = match m.kind.as_str() {
                "userpass" => crate::userpass::parse(req.operation, rel).map(|_| ()),
                "approle" => crate::approle::parse(req.operation, rel).map(|_| ()),
                "jwt" => crate::jwt_auth::parse(req.operation, rel).map(|_| ()),
                "cert" => crate::cert_auth::parse(req.operation, rel).map(|_| ()),
                _ => Ok(()),
            }
        {
            let caps = acl.capabilities(&req.path, req.operation == Operation::List);
            let err = if caps.is_empty() || caps.contains(Capability::Deny) {
                ApiError::permission_denied()
            } else {
                e
            };
            return Err(self.refuse(audit, err).await);
        }
        if let Some((m, _)) = &route {
            audit.request.mount_type = m.kind.clone();
        }
        let caps = acl.capabilities(&req.path, req.operation == Operation::List);
        let needed = match req.operation {
            Operation::Read => Capability::Read,
            Operation::List => Capability::List,
            Operation::Delete => Capability::Delete,
            Operation::Patch => Capability::Patch,
            Operation::Write => match self.exists(&req, route.as_ref()).await {
                Ok(true) => Capability::Update,
                Ok(false) => Capability::Create,
                Err(e) => return Err(self.refuse(audit, e).await),
            },
        };
        // a PKI mount's `root` (deleting the CA) is a sudo path, as in Vault
        let engine_sudo = route.as_ref().is_some_and(|(m, rel)| {
            m.kind == "pki" && !req.path.starts_with("auth/") && pki::needs_sudo(rel)
        });
        // a wrapping token unwraps (or rewraps) itself and nothing else;
        // its policy is a reserved name no ACL is built from
        let allowed = if entry.wrapping {
            crate::wrapping::usable_with_wrapping_token(&req.path, req.operation)
        } else {
            !caps.contains(Capability::Deny)
                && caps.contains(needed)
                && (!(needs_sudo(&req.path, req.operation) || engine_sudo)
                    || caps.contains(Capability::Sudo)
                    || acl.is_root())
        };
        if !allowed {
            return Err(self.refuse(audit, ApiError::permission_denied()).await);
        }
        Ok(Begun::Authorized(Box::new(Authorized {
            token: entry,
            token_id: palisade_core::Secret::new(token_id),
            acl,
            caps,
            request: req,
            route,
            mount_epoch,
            audit,
        })))
    }

    /// The second half: `body` is the request's parsed body, or why it could
    /// not be read; the request is audited with it, then executed.
    pub async fn execute(
        self: &Arc<Self>,
        mut auth: Box<Authorized>,
        body: Result<Map<String, Value>, ApiError>,
    ) -> Result<Response, ApiError> {
        let data = match body {
            Ok(d) => d,
            Err(e) => {
                let audit = std::mem::take(&mut auth.audit);
                return Err(self.refuse(audit, e).await);
            }
        };
        if !data.is_empty() {
            let mut audited = data.clone();
            if let Some(Value::Object(q)) = auth.audit.request.data.take() {
                for (k, v) in q {
                    audited.entry(k).or_insert(v);
                }
            }
            auth.audit.request.data = Some(Value::Object(audited));
        }
        auth.request.data = data;

        // every executing request holds the gate; a seal waits for them all
        let gate = self.gate.clone().read_owned().await;
        if !self.is_serving() {
            return Err(self.not_serving());
        }

        // sys/seal runs as its own task: once accepted it completes (or
        // does not start) whatever the client does meanwhile
        if auth.request.path.as_str() == "sys/seal" && auth.request.operation == Operation::Write {
            drop(gate);
            let core = self.clone();
            let audit = std::mem::take(&mut auth.audit);
            let token = auth.token.clone();
            return tokio::spawn(async move { core.seal_request(audit, token).await })
                .await
                .map_err(|e| ApiError::internal(format!("seal task: {e}")))?;
        }

        // audit the request before anything happens (fail closed)
        if let Err(e) = self.audit.log(&auth.audit).await {
            tracing::error!(error = %e, path = %auth.request.path, "audit failed; refusing request");
            return Err(ApiError::internal("audit: no device recorded the request"));
        }

        let token_use = self.tokens.consume_use(&auth.token).await?;
        if token_use == TokenUse::Exhausted {
            let err = ApiError::permission_denied();
            self.audit_response(std::mem::take(&mut auth.audit), &Err(err.clone()))
                .await?;
            return Err(err);
        }

        // help is a query parameter only (Vault's `?help=1`): a body field
        // named `help` is data, e.g. a KV v1 secret, and must be written
        let help = auth
            .request
            .query
            .iter()
            .find(|(k, _)| k == "help")
            .and_then(|(_, v)| crate::logical::fields::parse_bool(v));
        let result = if help == Some(true) {
            // Vault answers help with the bare object, no envelope (node-vault's help() reads `.help`)
            Ok(Response::raw(
                200,
                serde_json::json!({
                    "help": format!("## PATH\n\n{}\n\nSee docs/api-compat.md for the operations Palisade supports here.", auth.request.path),
                    "see_also": Value::Null,
                }),
            ))
        } else {
            match self.route(&auth).await {
                Ok(r) => crate::wrapping::maybe_wrap(self, &auth.request, r).await,
                Err(e) => Err(e),
            }
        };
        if token_use == TokenUse::Last {
            self.tokens.revoke_tree(&auth.token.hash).await?;
        }
        self.audit_response(std::mem::take(&mut auth.audit), &result)
            .await?;
        drop(gate);
        result
    }

    /// `sys/seal`: wait until no other request is in flight (new ones wait
    /// behind the seal and are then answered "sealed"), audit the response,
    /// then seal. Nothing is served after the seal was acknowledged.
    ///
    /// Runs in a task of its own (see `execute`), so a client that leaves
    /// cannot stop it half way. A seal that finds the core already sealing
    /// or sealed (another seal got there first) answers 503 before anything
    /// is audited, like any request to a sealed core.
    async fn seal_request(
        self: Arc<Self>,
        audit: AuditEntry,
        token: Arc<TokenEntry>,
    ) -> Result<Response, ApiError> {
        let _t = self.transition.lock().await;
        if self.state() != State::Unsealed {
            return Err(ApiError::sealed());
        }
        if let Err(e) = self.audit.log(&audit).await {
            tracing::error!(error = %e, "audit failed; refusing to seal");
            return Err(ApiError::internal("audit: no device recorded the request"));
        }
        if self.tokens.consume_use(&token).await? == TokenUse::Exhausted {
            let err = ApiError::permission_denied();
            self.audit_response(audit, &Err(err.clone())).await?;
            return Err(err);
        }
        self.set_state(State::Sealing);
        let _all = self.gate.clone().write_owned().await;
        let result = Ok(Response::no_content());
        if let Err(e) = self.audit_response(audit, &result).await {
            self.set_state(State::Unsealed);
            return Err(e);
        }
        self.seal_locked().await?;
        tracing::info!("sealed by request");
        result
    }

    /// Audit the response; a response that cannot be audited is not returned.
    async fn audit_response(
        &self,
        mut resp_audit: AuditEntry,
        result: &Result<Response, ApiError>,
    ) -> Result<(), ApiError> {
        match result {
            Ok(r) => {
                resp_audit.response = Some(AuditResponse {
                    status: r.status,
                    data: r.data.clone().or_else(|| r.raw.clone()).or_else(|| {
                        r.bytes
                            .as_ref()
                            .map(|(t, b)| serde_json::json!({"content_type": t, "bytes": b.len()}))
                    }),
                    auth: r.auth.as_ref().map(|a| AuditAuth {
                        client_token: a.client_token.expose().clone(),
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
                    wrap_info: r.wrap_info.as_ref().map(|w| palisade_audit::AuditWrapInfo {
                        token: w.token.expose().clone(),
                        accessor: w.accessor.clone(),
                        ttl: w.ttl,
                        creation_time: w.creation_time.clone(),
                        creation_path: w.creation_path.clone(),
                        wrapped_accessor: w.wrapped_accessor.clone(),
                    }),
                });
            }
            Err(e) => {
                resp_audit.response = Some(AuditResponse {
                    status: e.status,
                    data: e.body.clone(),
                    auth: None,
                    warnings: Vec::new(),
                    wrap_info: None,
                });
                resp_audit.error = Some(e.audit_message());
            }
        }
        if let Err(e) = self.audit.log(&resp_audit).await {
            tracing::error!(error = %e, path = %resp_audit.request.path, "audit of response failed; withholding response");
            return Err(ApiError::internal("audit: no device recorded the response"));
        }
        Ok(())
    }

    /// Audit a refused request and return its error. If the audit itself
    /// fails the client still gets the refusal (nothing was disclosed).
    async fn refuse(&self, mut audit: AuditEntry, err: ApiError) -> ApiError {
        audit.error = Some(err.audit_message());
        if let Err(e) = self.audit.log(&audit).await {
            tracing::error!(error = %e, "audit of a refused request failed");
        }
        // the audit device holds the record; the server log only at debug
        // (a flood of refused requests must not fill two disks)
        tracing::debug!(status = err.status, "request refused");
        err
    }

    /// Existence check deciding create vs update for writes, on the
    /// canonical path (the name the handler will write).
    async fn exists(
        &self,
        req: &Request,
        route: Option<&(MountEntry, String)>,
    ) -> Result<bool, ApiError> {
        // token roles have Vault's existence check: `create` makes a new
        // role, changing one needs `update`
        if let Some(name) = req.path.strip_prefix("auth/token/roles/")
            && crate::token_roles::is_canonical_role_name(name)
        {
            return Ok(crate::token_roles::get(&self.barrier, name)
                .await?
                .is_some());
        }
        // userpass users have Vault's existence check too
        if let Some((m, rel)) = route
            && m.kind == "userpass"
            && req.path.starts_with("auth/")
        {
            return match crate::userpass::parse(req.operation, rel)? {
                crate::userpass::UserpassPath::User(name) => {
                    crate::userpass::user_exists(self, m, name).await
                }
                _ => Ok(true),
            };
        }
        // and approle roles
        if let Some((m, rel)) = route
            && m.kind == "approle"
            && req.path.starts_with("auth/")
        {
            return match crate::approle::parse(req.operation, rel)? {
                crate::approle::AppRolePath::Role(name) => {
                    crate::approle::role_exists(self, m, name).await
                }
                _ => Ok(true),
            };
        }
        if let Some((m, rel)) = route
            && m.kind == "jwt"
            && req.path.starts_with("auth/")
        {
            return match crate::jwt_auth::parse(req.operation, rel)? {
                crate::jwt_auth::JwtPath::Role(name) => {
                    crate::jwt_auth::role_exists(self, m, name).await
                }
                _ => Ok(true),
            };
        }
        if let Some((m, rel)) = route
            && m.kind == "cert"
            && req.path.starts_with("auth/")
        {
            return match crate::cert_auth::parse(req.operation, rel)? {
                crate::cert_auth::CertPath::Cert(name) => {
                    crate::cert_auth::role_exists(self, m, name).await
                }
                _ => Ok(true),
            };
        }
        // sys/ and auth/ have no existence check otherwise (Vault): every
        // write there needs `update`, so `create` alone never writes a
        // policy or a mount
        if req.path.starts_with("sys/") || req.path.starts_with("auth/") {
            return Ok(true);
        }
        match route {
            Some((m, rel)) => {
                let view = View::new(self.barrier.clone(), m.view_prefix());
                match m.engine() {
                    Some(EngineKind::KvV2) => kv::exists_v2(rel, &view).await,
                    Some(EngineKind::KvV1) => kv::exists_v1(rel, &view).await,
                    Some(EngineKind::Transit) => transit::exists(rel, &view).await,
                    Some(EngineKind::Pki) => pki::exists(rel, &view).await,
                    Some(EngineKind::Database) => {
                        crate::engines::database::exists(rel, &view).await
                    }
                    None => Ok(true),
                }
            }
            None => Ok(true),
        }
    }

    async fn route(self: &Arc<Self>, auth: &Authorized) -> Result<Response, ApiError> {
        let path = auth.request.path.as_str();
        if let Some(rest) = path.strip_prefix("sys/") {
            return crate::sys::handle(self, auth, rest).await;
        }
        if let Some(rest) = path.strip_prefix("auth/token/") {
            return crate::token_api::handle(self, auth, rest).await;
        }
        if let Some(rest) = path.strip_prefix("identity/oidc/") {
            if let Some(r) = crate::identity::oidc::handle(self, auth, rest).await {
                return r;
            }
            return crate::oauth::handle(self, auth, rest).await;
        }
        if let Some(rest) = path.strip_prefix("identity/") {
            return crate::identity::api::handle(self, auth, rest).await;
        }
        let Some((mount, rel)) = &auth.route else {
            return Err(ApiError::unsupported_path());
        };
        // no mount-table change while this request acts on the mount; one
        // since its ACL check must still route the path to the same mount
        let _gate = self.mount_gate.read().await;
        if self.mount_epoch.load(Ordering::SeqCst) != auth.mount_epoch {
            let table = self.mount_table()?;
            match route_in(&table, path) {
                Some((m, _)) if m.uuid == mount.uuid && m.path == mount.path => {}
                _ => return Err(ApiError::unsupported_path()),
            }
        }
        if lock(self.tainted.lock())?.contains(&mount.uuid) {
            return Err(ApiError::unsupported_path());
        }
        // a rotation asks its producer without the gate (a slow producer
        // must not hold up mount changes, and every request behind them);
        // it takes the gate again to write, and checks the mount is there
        if mount.engine() == Some(EngineKind::KvV2) && rel.starts_with("rotate/") {
            drop(_gate);
            let view = View::new(self.barrier.clone(), mount.view_prefix());
            return crate::kv_rotation::handle(self, auth, mount, rel, &view).await;
        }
        if path.starts_with("auth/") {
            return match mount.kind.as_str() {
                "userpass" => crate::userpass::handle(self, auth, mount, rel).await,
                "approle" => crate::approle::handle(self, auth, mount, rel).await,
                "jwt" => crate::jwt_auth::handle(self, auth, mount, rel).await,
                "cert" => crate::cert_auth::handle(self, auth, mount, rel).await,
                _ => Err(ApiError::unsupported_path()),
            };
        }
        let view = View::new(self.barrier.clone(), mount.view_prefix());
        match mount.engine() {
            Some(EngineKind::KvV2) if crate::kv_rotation::is_rotation_path(rel) => {
                crate::kv_rotation::handle(self, auth, mount, rel, &view).await
            }
            Some(EngineKind::KvV2) => kv::handle_v2(auth, rel, &view, &self.kv_locks).await,
            Some(EngineKind::KvV1) => kv::handle_v1(auth, rel, &view).await,
            Some(EngineKind::Transit) => transit::handle(auth, rel, &view, &self.kv_locks).await,
            Some(EngineKind::Pki) => {
                // the mount's own TTLs win over the system's (Vault: `secrets
                // tune -max-lease-ttl=87600h pki` makes a ten-year CA possible)
                let lease = self.lease_ctx(mount, path, auth);
                pki::handle(
                    auth,
                    rel,
                    &view,
                    &self.kv_locks,
                    self.mount_ttls(mount),
                    lease,
                    &self.pki_issuers,
                )
                .await
            }
            Some(EngineKind::Database) => {
                let ctx = crate::engines::database::Ctx {
                    pools: &self.databases,
                    locks: &self.kv_locks,
                    lease: self.lease_ctx(mount, path, auth),
                };
                crate::engines::database::handle(auth, rel, &view, ctx).await
            }
            None => Err(ApiError::unsupported_path()),
        }
    }

    /// Where an engine's leases for this request come from.
    fn lease_ctx<'a>(
        &'a self,
        mount: &'a MountEntry,
        path: &'a str,
        auth: &'a Authorized,
    ) -> crate::lease::LeaseCtx<'a> {
        let (default_ttl, max_ttl) = self.mount_ttls(mount);
        crate::lease::LeaseCtx {
            leases: &self.leases,
            mount_uuid: &mount.uuid,
            path,
            token_hash: &auth.token().hash,
            default_ttl,
            max_ttl,
            now: self.tokens.now(),
        }
    }

    /// A secrets mount's default and max lease TTL: its own (tuned), else
    /// the system's; the default never above the max.
    pub fn mount_ttls(&self, mount: &MountEntry) -> (i64, i64) {
        let sys = self.options.ttl;
        let max = match mount.config.max_lease_ttl {
            0 => sys.max_ttl,
            x => x,
        };
        let default = match mount.config.default_lease_ttl {
            0 => sys.default_ttl,
            x => x,
        };
        (default.min(max), max)
    }

    /// Whether the mount with this uuid is enabled and not being disabled or
    /// moved (call with the mount gate held).
    pub(crate) fn mount_serves(&self, uuid: &str) -> Result<bool, ApiError> {
        Ok(self.mount_by_uuid(uuid)?.is_some() && !lock(self.tainted.lock())?.contains(uuid))
    }

    /// The mount with this uuid, if it is still enabled.
    fn mount_by_uuid(&self, uuid: &str) -> Result<Option<MountEntry>, ApiError> {
        Ok(self
            .mount_table()?
            .entries
            .iter()
            .find(|m| m.uuid == uuid)
            .cloned())
    }

    /// Revoke one lease: the engine removes the credential, then the lease
    /// is forgotten. `force` forgets it even when the engine fails (Vault's
    /// `revoke-force`: the credential may be left behind). A lease that does
    /// not exist is already revoked. A lease whose mount is gone cannot be
    /// revoked (an error, retried; `revoke-force` forgets it): disabling or
    /// moving a mount revokes its leases first, so that means a credential
    /// may be left behind.
    pub async fn revoke_lease(&self, lease_id: &str, force: bool) -> Result<bool, ApiError> {
        let _l = self.leases.lock(lease_id).await;
        let Some(mut e) = self.leases.get(lease_id).await? else {
            self.leases.forget(lease_id)?;
            return Ok(false);
        };
        // the intent first: a lease whose revocation began is due now, so a
        // crash during it is resumed by the expiry manager after a restart
        let now = self.tokens.now();
        if e.expire_time > now {
            e.expire_time = now;
            self.leases.update(&e).await?;
        }
        // the mount is looked up under its gate, and the engine called
        // without it: a database that hangs must not hold up mount changes
        let mount = {
            let _gate = self.mount_gate.read().await;
            self.mount_by_uuid(&e.mount_uuid)?
        };
        let outcome = match mount {
            None => Err(ApiError::new(
                500,
                "the mount that issued this lease no longer exists",
            )),
            Some(m) => {
                let view = View::new(self.barrier.clone(), m.view_prefix());
                match m.engine() {
                    Some(EngineKind::Database) => {
                        crate::engines::database::revoke(
                            &view,
                            &self.databases,
                            &self.kv_locks,
                            &e.internal,
                        )
                        .await
                    }
                    Some(EngineKind::Pki) => {
                        pki::revoke_lease(&view, &self.kv_locks, &e.internal).await
                    }
                    _ => Ok(()),
                }
            }
        };
        match outcome {
            Ok(()) => {}
            Err(err) if force => {
                tracing::warn!(
                    status = err.status,
                    "revoke-force: the engine failed; the lease is forgotten anyway"
                );
            }
            Err(err) => return Err(err),
        }
        self.leases.delete(&e).await?;
        tracing::info!(mount = %e.mount_uuid, "lease revoked");
        Ok(true)
    }

    /// Before a mount is disabled or moved: refuse new requests to it, wait
    /// for those in flight, then revoke every lease it issued (listing again
    /// until none is left). On failure the mount serves again.
    pub async fn quiesce_mount(&self, uuid: &str) -> Result<(), ApiError> {
        lock(self.tainted.lock())?.insert(uuid.to_owned());
        // every request acting on a mount holds the gate for reading
        drop(self.mount_gate.write().await);
        let revoked = async {
            loop {
                if self.revoke_mount_leases(uuid).await? == 0 {
                    return Ok(());
                }
            }
        }
        .await;
        if revoked.is_err() {
            self.untaint(uuid);
        }
        revoked
    }

    /// The mount serves again (or is gone: its uuid is never reused).
    pub fn untaint(&self, uuid: &str) {
        if let Ok(mut t) = self.tainted.lock() {
            t.remove(uuid);
        }
    }

    /// Revoke every lease under `prefix` (a lease id, or a path prefix).
    pub async fn revoke_lease_prefix(&self, prefix: &str, force: bool) -> Result<usize, ApiError> {
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() {
            crate::lease::check_lease_id(prefix)?;
            if self.leases.get(prefix).await?.is_some() {
                return Ok(usize::from(self.revoke_lease(prefix, force).await?));
            }
        }
        let under = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        let mut n = 0;
        for id in self.leases.ids_under(&under).await? {
            if self.revoke_lease(&id, force).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Revoke every lease of a mount (before it is disabled); the first
    /// failure stops the unmount.
    pub async fn revoke_mount_leases(&self, uuid: &str) -> Result<usize, ApiError> {
        let mut n = 0;
        for id in self.leases.ids_under("").await? {
            if let Some(e) = self.leases.get(&id).await?
                && e.mount_uuid == uuid
                && self.revoke_lease(&id, false).await?
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Renew a lease by `increment` seconds (0: its TTL), never past its
    /// max TTL. The engine extends the credential first.
    pub async fn renew_lease(
        &self,
        lease_id: &str,
        increment: i64,
    ) -> Result<(crate::lease::LeaseEntry, Vec<String>), ApiError> {
        let _l = self.leases.lock(lease_id).await;
        let now = self.tokens.now();
        let mut e = self
            .leases
            .get(lease_id)
            .await?
            .filter(|e| e.expire_time > now)
            .ok_or_else(|| ApiError::bad_request("lease not found"))?;
        if !e.renewable {
            return Err(ApiError::bad_request("lease is not renewable"));
        }
        let ttl = if increment > 0 { increment } else { e.ttl };
        let mut warnings = Vec::new();
        let mut expire = now.saturating_add(ttl);
        if expire > e.max_expire {
            warnings.push(crate::token::capped_warning(
                "TTL",
                ttl,
                e.max_expire - e.issue_time,
            ));
            expire = e.max_expire;
        }
        let _gate = self.mount_gate.read().await;
        let m = self
            .mount_by_uuid(&e.mount_uuid)?
            .ok_or_else(|| ApiError::bad_request("lease not found"))?;
        let view = View::new(self.barrier.clone(), m.view_prefix());
        if m.engine() == Some(EngineKind::Database) {
            crate::engines::database::renew(
                &view,
                &self.databases,
                &self.kv_locks,
                &e.internal,
                expire,
            )
            .await?;
        }
        e.expire_time = expire;
        e.last_renewal = now;
        self.leases.update(&e).await?;
        Ok((e, warnings))
    }

    /// Revoke the leases due as of `now`: each mount's in turn, the mounts
    /// side by side (a database that hangs holds up only its own leases).
    /// A failure is retried later with backoff, counted from when it failed;
    /// after one, the rest of that mount's leases wait for the next pass.
    /// Returns how many were revoked.
    pub async fn revoke_due_leases(self: &Arc<Self>, now: i64) -> usize {
        let Ok(due) = self.leases.due(now) else {
            return 0;
        };
        let mut by_mount: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for id in due {
            match self.leases.get(&id).await {
                Ok(Some(e)) => by_mount.entry(e.mount_uuid).or_default().push(id),
                Ok(None) => {
                    let _ = self.leases.forget(&id);
                }
                Err(e) => tracing::warn!(status = e.status, "a due lease could not be read"),
            }
        }
        let mut set = tokio::task::JoinSet::new();
        for (_, ids) in by_mount {
            let core = self.clone();
            set.spawn(async move {
                let mut n = 0;
                let mut failed = false;
                for id in ids {
                    if failed {
                        let _ = core.leases.backoff(&id, core.tokens.now());
                        continue;
                    }
                    if !core.is_serving() {
                        break;
                    }
                    match core.revoke_lease(&id, false).await {
                        Ok(true) => n += 1,
                        Ok(false) => {}
                        Err(e) => {
                            failed = true;
                            let failures = core.leases.backoff(&id, core.tokens.now()).unwrap_or(0);
                            tracing::warn!(
                                status = e.status,
                                failures,
                                "lease revocation failed; will retry"
                            );
                        }
                    }
                }
                n
            });
        }
        let mut total = 0;
        while let Some(r) = set.join_next().await {
            match r {
                Ok(n) => total += n,
                Err(e) => tracing::error!(error = %e, "lease revocation task failed"),
            }
        }
        total
    }

    /// `sys/leases/tidy`: leases whose token no longer exists (a token
    /// revoked while the lease was being created) are made due now.
    pub async fn tidy_leases(&self) -> Result<usize, ApiError> {
        let now = self.tokens.now();
        let mut orphans = Vec::new();
        for id in self.leases.ids_under("").await? {
            if let Some(e) = self.leases.get(&id).await?
                && !e.token_hash.is_empty()
                && self.tokens.lookup_hash(&e.token_hash).await?.is_none()
            {
                orphans.push(id);
            }
        }
        let n = orphans.len();
        self.leases.make_due(orphans, now)?;
        Ok(n)
    }

    /// Rotate the transit keys, on every transit mount, whose
    /// `auto_rotate_period` has passed as of `now` (Unix nanoseconds); how
    /// many were rotated. Holds the mount gate per mount, so a mount being
    /// disabled or moved waits (and a disabled one is not written again).
    pub async fn rotate_transit_keys(&self, now: i64) -> Result<usize, ApiError> {
        let table = self.mount_table()?;
        let mut rotated = 0;
        for m in table
            .entries
            .iter()
            .filter(|m| m.engine() == Some(EngineKind::Transit))
        {
            let _gate = self.mount_gate.read().await;
            let current = self.mount_table()?;
            if !current.entries.iter().any(|c| c.uuid == m.uuid) {
                continue;
            }
            let view = View::new(self.barrier.clone(), m.view_prefix());
            match transit::rotate_due(&view, &self.kv_locks, now).await {
                Ok(n) => rotated += n,
                // one mount's failure (its key list unreadable) leaves the others to rotate
                Err(e) => {
                    tracing::warn!(mount = %m.path, status = e.status, "transit keys of this mount could not be rotated")
                }
            }
        }
        Ok(rotated)
    }

    /// Rotate the database static roles, on every database mount, whose
    /// rotation period has passed as of `now` (Unix seconds), or whose
    /// rotation was interrupted; how many were rotated.
    pub async fn rotate_static_roles(&self, now: i64) -> Result<usize, ApiError> {
        let table = self.mount_table()?;
        let mut rotated = 0;
        for m in table
            .entries
            .iter()
            .filter(|m| m.engine() == Some(EngineKind::Database))
        {
            // the gate only to see that the mount serves: a rotation waits
            // on its database, and mount changes must not wait for that
            {
                let _gate = self.mount_gate.read().await;
                if !self.mount_serves(&m.uuid)? {
                    continue;
                }
            }
            let view = View::new(self.barrier.clone(), m.view_prefix());
            match crate::engines::database::rotate_due(&view, &self.databases, &self.kv_locks, now)
                .await
            {
                Ok(n) => rotated += n,
                Err(e) => {
                    tracing::warn!(mount = %m.path, status = e.status, "static roles of this mount could not be rotated")
                }
            }
        }
        Ok(rotated)
    }

    /// Start the KV rotations due at `now` that are not already running,
    /// and return without waiting for them (the scheduler's tick): a slow
    /// producer holds up only its own key. Up to eight run at once.
    /// Returns how many were started.
    pub async fn start_kv_rotations(self: &Arc<Self>, now: i64) -> Result<usize, ApiError> {
        self.kv_rotations(now, false).await
    }

    /// Rotate the KV v2 secrets due at `now` and wait for them; how many
    /// were rotated (for callers that need the outcome; the scheduler uses
    /// [`Core::start_kv_rotations`]). Failures are recorded in their policy
    /// and retried with backoff.
    pub async fn rotate_kv_secrets(self: &Arc<Self>, now: i64) -> Result<usize, ApiError> {
        self.kv_rotations(now, true).await
    }

    /// The rotations due at `now` on every KV v2 mount that serves, each in
    /// a task of its own (a key already rotating is skipped), eight at most
    /// at once; waited for, or left to run.
    async fn kv_rotations(self: &Arc<Self>, now: i64, wait: bool) -> Result<usize, ApiError> {
        let table = self.mount_table()?;
        let mut set = tokio::task::JoinSet::new();
        for m in table
            .entries
            .iter()
            .filter(|m| m.engine() == Some(EngineKind::KvV2))
        {
            let view = View::new(self.barrier.clone(), m.view_prefix());
            let due = {
                let _gate = self.mount_gate.read().await;
                if !self.mount_serves(&m.uuid)? {
                    continue;
                }
                match crate::kv_rotation::due(&view, now).await {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!(mount = %m.path, status = e.status, "rotation policies of this mount could not be read");
                        continue;
                    }
                }
            };
            for key in due {
                let id = format!("{}{key}", m.uuid);
                if !lock(self.kv_rotating.lock())?.insert(id.clone()) {
                    continue; // still running from an earlier tick
                }
                let (core, m, view) = (self.clone(), m.clone(), view.clone());
                set.spawn(async move {
                    let mut ok = false;
                    if let Ok(_slot) = core.kv_rotation_slots.clone().acquire_owned().await {
                        let now = core.tokens.now();
                        ok = crate::kv_rotation::rotate(&core, &m, &view, &key, now, true)
                            .await
                            .is_ok();
                    }
                    if let Ok(mut r) = core.kv_rotating.lock() {
                        r.remove(&id);
                    }
                    ok
                });
            }
        }
        if !wait {
            let started = set.len();
            set.detach_all();
            return Ok(started);
        }
        let mut rotated = 0;
        while let Some(r) = set.join_next().await {
            match r {
                Ok(true) => rotated += 1,
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "a KV rotation task failed"),
            }
        }
        Ok(rotated)
    }

    /// Convenience for in-process callers (tests, benchmarks): the whole
    /// pipeline for a request whose body is already in `req.data`.
    pub async fn handle(
        self: &Arc<Self>,
        req: Request,
        token: Option<String>,
    ) -> Result<Response, ApiError> {
        let data = req.data.clone();
        match self.begin(req, token).await? {
            Begun::Open(mut r) => {
                r.data = data;
                self.open(r).await
            }
            Begun::Authorized(a) => self.execute(a, Ok(data)).await,
        }
    }
}

/// The mount a canonical path routes to: an auth method for `auth/...`
/// (the token method is not in the table), else a secrets mount.
fn route_in<'a>(table: &'a MountTable, path: &'a str) -> Option<(&'a MountEntry, &'a str)> {
    match path.strip_prefix("auth/") {
        Some(rest) => table.auth_route(rest),
        None => table.route(path),
    }
}

/// The audit record of a request served without a token (its data: the
/// body, or the query when there is none).
/// Served without a token, audited (`wrapping.rs`).
const WRAPPING_LOOKUP: &str = "sys/wrapping/lookup";

fn open_audit_entry(req: &Request) -> AuditEntry {
    let data = if req.data.is_empty() {
        query_data(req)
    } else {
        Some(Value::Object(req.data.clone()))
    };
    AuditEntry {
        auth: None,
        request: AuditRequest {
            id: req.id.clone(),
            operation: req.operation.as_str().to_string(),
            path: req.path.to_string(),
            mount_type: String::new(),
            client_token: String::new(),
            client_token_accessor: String::new(),
            remote_address: req.remote_addr.clone(),
            data,
        },
        response: None,
        error: None,
    }
}

/// The query parameters a read, list or delete takes as data, for the audit record.
fn query_data(req: &Request) -> Option<Value> {
    if req.query.is_empty()
        || !matches!(
            req.operation,
            Operation::Read | Operation::List | Operation::Delete
        )
    {
        return None;
    }
    let mut m = Map::new();
    for (k, v) in &req.query {
        m.entry(k.clone())
            .or_insert_with(|| Value::String(v.clone()));
    }
    Some(Value::Object(m))
}

fn decode_key(d: &AuditDeviceEntry) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    Ok(Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(&d.hmac_key)
            .map_err(ApiError::internal)?,
    ))
}

/// Reopen a stored device. A device created through the API is confined
/// again, against the configuration as it is now: a directory swapped for a
/// symlink, or an allow-list since removed, leaves it unavailable (fail
/// closed) rather than writing wherever its path now leads.
fn reopen_device(
    d: &AuditDeviceEntry,
    anchor: Option<&Head>,
    api_dirs: &[std::path::PathBuf],
) -> Result<palisade_audit::Reopened, String> {
    let file_path = d.file_path().ok_or("no file_path in the stored device")?;
    let key = decode_key(d).map_err(|_| "the stored HMAC key is not base64".to_string())?;
    let (trust, path) = if d.pinned {
        (Trust::Operator, std::path::PathBuf::from(file_path))
    } else {
        let checked = crate::audit_path::check_api_file_path(file_path, api_dirs)
            .map_err(|e| format!("no longer allowed: {}", e.messages.join("; ")))?;
        if checked.as_path() != std::path::Path::new(file_path) {
            return Err("no longer allowed: its directory now resolves elsewhere".into());
        }
        (Trust::Api, checked)
    };
    let r = FileDevice::reopen(&d.path, &path, &key, trust, anchor).map_err(|e| e.to_string())?;
    if trust == Trust::Api {
        // confined again once open: a directory swapped between the check
        // and the open would have led elsewhere
        match r.device.real_path() {
            Ok(real) if crate::audit_path::inside_allowed(&real, api_dirs) => {}
            _ => return Err(
                "no longer allowed: the file resolved outside the allowed directories when opened"
                    .into(),
            ),
        }
    }
    Ok(r)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn core() -> Arc<Core> {
        Core::new(Barrier::new(Arc::new(
            palisade_storage::memory::MemoryBackend::new(),
        )))
    }

    /// An unseal request while a seal waits for in-flight requests changes
    /// nothing: the seal completes, the core ends sealed (never "serving"
    /// with its keys gone), and the closed broker records nothing.
    #[tokio::test]
    async fn an_unseal_during_a_pending_seal_changes_nothing() {
        let core = core();
        core.dev_setup(None).await.unwrap();
        // a request in flight
        let inflight = core.gate.clone().read_owned().await;
        let c = core.clone();
        let sealing = tokio::spawn(async move { c.seal_when_idle().await });
        while core.state() != State::Sealing {
            tokio::task::yield_now().await;
        }
        let c = core.clone();
        let unsealing = tokio::spawn(async move { c.finish_unseal().await });
        tokio::task::yield_now().await;
        assert_eq!(core.state(), State::Sealing);
        drop(inflight);
        sealing.await.unwrap().unwrap();
        assert!(!unsealing.await.unwrap().unwrap(), "the unseal did nothing");
        assert_eq!(core.state(), State::Sealed);
        assert!(core.barrier.sealed());
        assert!(!core.is_serving());
        assert!(matches!(
            core.audit.log(&AuditEntry::default()).await,
            Err(palisade_audit::AuditError::NoDeviceWrote)
        ));
    }

    /// A `sys/seal` whose client goes away while it waits for in-flight
    /// requests still completes: the request future is dropped, the seal
    /// (its own task) is not.
    #[tokio::test]
    async fn an_abandoned_seal_still_completes() {
        let core = core();
        let root = core.dev_setup(None).await.unwrap();
        let req = Request::new(
            Operation::Write,
            crate::canonical::canonicalise(Operation::Write, "/v1/sys/seal").unwrap(),
        );
        let Begun::Authorized(auth) = core.begin(req, Some(root)).await.unwrap() else {
            panic!("sys/seal is an authenticated endpoint");
        };
        // a request in flight: the seal must wait for it
        let inflight = core.gate.clone().read_owned().await;
        let c = core.clone();
        let client = tokio::spawn(async move { c.execute(auth, Ok(Map::new())).await });
        while core.state() != State::Sealing {
            tokio::task::yield_now().await;
        }
        // the client gives up (hyper drops the request's future)
        client.abort();
        assert!(client.await.unwrap_err().is_cancelled());
        drop(inflight);
        for _ in 0..1000 {
            if core.state() == State::Sealed {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(core.state(), State::Sealed);
        assert!(core.barrier.sealed(), "no key left in memory");
    }

    /// An init whose client goes away still ends sealed: the barrier is never
    /// left open without the keys having been handed to anyone.
    #[tokio::test]
    async fn an_abandoned_init_ends_sealed() {
        let core = core();
        // poll the init once (its task starts), then drop it as a client would
        let _ = tokio::time::timeout(Duration::ZERO, core.initialize(1, 1)).await;
        for _ in 0..10_000 {
            if core.barrier.initialized().await.unwrap() && core.barrier.sealed() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(core.barrier.initialized().await.unwrap());
        // let the task finish (it seals at its end)
        let _t = core.transition.lock().await;
        assert!(core.barrier.sealed());
        assert_eq!(core.state(), State::Sealed);
    }

    /// An unseal whose loading did not finish can be completed by the next
    /// `sys/unseal`; a serving core is left alone.
    #[tokio::test]
    async fn finish_unseal_completes_only_an_unfinished_unseal() {
        let core = core();
        core.dev_setup(None).await.unwrap();
        assert!(!core.finish_unseal().await.unwrap(), "already serving");
        assert_eq!(core.state(), State::Unsealed);
    }
}
