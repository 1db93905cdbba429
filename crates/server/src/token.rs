//! The token store: service tokens kept only as keyed hashes.
//!
//! Storage (behind the barrier):
//! - `sys/token/salt`: the HMAC key for token and accessor hashing;
//! - `sys/token/id/<hmac(token)>`: the [`TokenEntry`];
//! - `sys/token/accessor/<hmac(accessor)>`: the token's hash;
//! - `sys/token/parent/<parent hash>/<child hash>`: the revocation tree.
//!
//! Token strings never reach storage or a log; lookups hash the presented
//! token and compare fixed-length MACs. Revoking a token revokes its children.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use palisade_barrier::{Barrier, BarrierOp};
use palisade_crypto::mac::MacKey;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::logical::ApiError;

const SALT_PATH: &str = "sys/token/salt";
const ID_PREFIX: &str = "sys/token/id/";
const ACCESSOR_PREFIX: &str = "sys/token/accessor/";
const PARENT_PREFIX: &str = "sys/token/parent/";
/// `sys/token/wrapped/<hash>`: the response a wrapping token wraps, written
/// and deleted with the token.
const WRAPPED_PREFIX: &str = "sys/token/wrapped/";

/// Vault's default and maximum token TTL (32 days).
pub const DEFAULT_TTL: i64 = 768 * 3600;

/// The system's TTL limits (`default_lease_ttl`, `max_lease_ttl` in the
/// server configuration, as in Vault).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtlLimits {
    /// TTL of a token created without one.
    pub default_ttl: i64,
    /// No token lives longer than this from its creation, renewed or not
    /// (periodic tokens excepted: they live while renewed within their period).
    pub max_ttl: i64,
}

impl Default for TtlLimits {
    fn default() -> Self {
        Self {
            default_ttl: DEFAULT_TTL,
            max_ttl: DEFAULT_TTL,
        }
    }
}

/// A duration as Vault prints it in warnings: `768h`, `1h30m`, `45s`.
pub fn format_duration(secs: i64) -> String {
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

fn ttl_capped_warning(requested: i64, max: i64) -> String {
    capped_warning("TTL", requested, max)
}

/// Vault's warning when a requested duration is capped at the max TTL.
pub(crate) fn capped_warning(what: &str, requested: i64, max: i64) -> String {
    format!(
        "{what} of {:?} exceeded the effective max_ttl of {:?}; {what} value is capped accordingly",
        format_duration(requested),
        format_duration(max)
    )
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenEntry {
    pub hash: String,
    pub accessor: String,
    /// Hash of the parent token; empty for orphans.
    pub parent: String,
    pub policies: Vec<String>,
    pub meta: Map<String, Value>,
    pub display_name: String,
    /// Remaining uses; 0 means unlimited.
    pub num_uses: i64,
    pub creation_time: i64,
    pub creation_ttl: i64,
    pub explicit_max_ttl: i64,
    pub period: i64,
    pub renewable: bool,
    /// Unix seconds; 0 means the token never expires (root tokens).
    pub expire_time: i64,
    pub issue_time: i64,
    pub path: String,
    /// Set first when the token's tree is being revoked: from then on the
    /// token authorises nothing and no child can be created under it.
    #[serde(default)]
    pub revoking: bool,
    /// The token role it was created against (`auth/token/create/<role>`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub role: String,
    /// The accessor of the auth method that issued it at login (empty for
    /// the token method's own tokens). The token is valid only while that
    /// method is enabled: disabling the method invalidates its tokens at
    /// once, before (and whether or not) their revocation completes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mount_accessor: String,
    /// The longest the token may live from its creation, renewals included
    /// (an auth method's `token_max_ttl`); 0: the system's max TTL only.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_ttl: i64,
    /// The client addresses the token may be used from (canonical CIDRs,
    /// `10.0.0.0/8`); empty: anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bound_cidrs: Vec<String>,
    /// A response-wrapping token: it authorises only its own unwrapping,
    /// and its response is stored beside it (`wrapping.rs`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wrapping: bool,
    /// The identity entity it acts for (set at login, inherited by child
    /// tokens): its entity's and groups' policies join its own.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub entity_id: String,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

impl TokenEntry {
    pub fn is_root(&self) -> bool {
        self.policies.iter().any(|p| p == "root")
    }
    pub fn ttl_remaining(&self, now: i64) -> i64 {
        if self.expire_time == 0 {
            0
        } else {
            (self.expire_time - now).max(0)
        }
    }
    pub fn orphan(&self) -> bool {
        self.parent.is_empty()
    }

    /// Whether a request from `remote` may use the token (its `bound_cidrs`).
    /// An address that does not parse is outside every range.
    pub fn allows_address(&self, remote: &str) -> bool {
        address_allowed(&self.bound_cidrs, remote)
    }
}

/// Whether `remote` (an IP address) is inside one of `bound` (CIDRs); an
/// empty list allows every address, an address that does not parse is
/// outside every range.
pub fn address_allowed(bound: &[String], remote: &str) -> bool {
    if bound.is_empty() {
        return true;
    }
    let Ok(ip) = remote.parse::<std::net::IpAddr>() else {
        return false;
    };
    bound
        .iter()
        .filter_map(|c| palisade_core::net::Cidr::parse(c))
        .any(|c| c.contains(ip))
}

/// What a caller asks for when creating a token; the handler fills it from
/// the request and its own rules (subset of parent policies, sudo for orphans).
#[derive(Clone, Debug, Default)]
pub struct NewToken {
    pub id: Option<String>,
    pub parent: String,
    pub policies: Vec<String>,
    pub meta: Map<String, Value>,
    pub display_name: String,
    pub num_uses: i64,
    pub ttl: i64,
    pub explicit_max_ttl: i64,
    pub period: i64,
    pub renewable: bool,
    pub path: String,
    /// The token role, for tokens created against one.
    pub role: String,
    /// See [`TokenEntry::mount_accessor`].
    pub mount_accessor: String,
    /// See [`TokenEntry::max_ttl`].
    pub max_ttl: i64,
    /// See [`TokenEntry::bound_cidrs`].
    pub bound_cidrs: Vec<String>,
    /// For a wrapping token: the response it wraps (stored with the token,
    /// in the same transaction).
    pub wrapped: Option<zeroize::Zeroizing<Vec<u8>>>,
    /// See [`TokenEntry::entity_id`].
    pub entity_id: String,
}

pub struct TokenStore {
    barrier: Arc<Barrier>,
    /// The leases tokens obtained: revoking a token makes them due.
    leases: Arc<crate::lease::Leases>,
    limits: TtlLimits,
    clock: palisade_core::Clock,
    /// Striped by parent hash: creating a child of P and marking P as being
    /// revoked take the same stripe, so no child is ever created under a
    /// parent whose tree is being revoked.
    family: Vec<tokio::sync::Mutex<()>>,
    salt: RwLock<Option<Arc<MacKey>>>,
    cache: RwLock<HashMap<String, Arc<TokenEntry>>>,
    /// Serialises read-modify-write of stored entries (use counts, renewals,
    /// orphaning), so concurrent requests never act on a stale copy: without
    /// it a one-use token could authorise every request that arrived at once.
    modify: tokio::sync::Mutex<()>,
    /// Bumped by every revocation (under the cache lock): a lookup that read
    /// an entry from storage before a revocation must not cache it after.
    revocations: AtomicU64,
    /// The accessors of the enabled auth methods (set with every mount-table
    /// change): a token issued by a method not in it is invalid.
    auth_methods: RwLock<Arc<HashSet<String>>>,
}

/// What counting one use of a token found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenUse {
    /// The token has no use limit.
    Unlimited,
    /// A use was counted and more remain.
    Counted,
    /// This was the last use: the request may proceed, then the token is revoked.
    Last,
    /// No use was left (another request took the last one): refuse.
    Exhausted,
}

fn lock<T>(r: Result<T, impl std::fmt::Display>) -> Result<T, ApiError> {
    r.map_err(|e| ApiError::internal(format!("token store lock: {e}")))
}

/// A random string in the base62 alphabet (token ids, accessors).
pub fn random_base62(n: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in palisade_core::random_bytes(n * 2) {
            // rejection sampling: 248 = 4 * 62 keeps the distribution uniform
            if b < 248 && out.len() < n {
                out.push(ALPHABET[(b % 62) as usize] as char);
            }
        }
    }
    out
}

impl TokenStore {
    pub fn new(
        barrier: Arc<Barrier>,
        limits: TtlLimits,
        clock: palisade_core::Clock,
        leases: Arc<crate::lease::Leases>,
    ) -> Self {
        Self {
            barrier,
            leases,
            limits,
            clock,
            family: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
            salt: RwLock::new(None),
            cache: RwLock::new(HashMap::new()),
            modify: tokio::sync::Mutex::new(()),
            revocations: AtomicU64::new(0),
            auth_methods: RwLock::new(Arc::new(HashSet::new())),
        }
    }

    /// The enabled auth methods' accessors (the core calls it whenever the
    /// mount table is loaded or changed).
    pub fn set_auth_methods(&self, accessors: HashSet<String>) -> Result<(), ApiError> {
        *lock(self.auth_methods.write())? = Arc::new(accessors);
        Ok(())
    }

    /// Whether the auth method that issued `e` (if any) is still enabled.
    fn method_enabled(&self, e: &TokenEntry) -> Result<bool, ApiError> {
        Ok(e.mount_accessor.is_empty()
            || lock(self.auth_methods.read())?.contains(&e.mount_accessor))
    }

    /// Load (or create on first unseal) the hashing key.
    pub async fn setup(&self) -> Result<(), ApiError> {
        let key = match self.barrier.get(SALT_PATH).await? {
            Some(k) => MacKey::from_bytes(&k),
            None => {
                let k = MacKey::generate();
                self.barrier.put(SALT_PATH, k.expose_bytes()).await?;
                k
            }
        };
        *lock(self.salt.write())? = Some(Arc::new(key));
        Ok(())
    }

    /// Forget keys and cached entries (on seal).
    pub fn clear(&self) {
        if let Ok(mut s) = self.salt.write() {
            *s = None;
        }
        if let Ok(mut c) = self.cache.write() {
            c.clear();
        }
    }

    fn salt(&self) -> Result<Arc<MacKey>, ApiError> {
        lock(self.salt.read())?.clone().ok_or_else(ApiError::sealed)
    }

    pub fn hash(&self, token: &str) -> Result<String, ApiError> {
        Ok(self.salt()?.sign_hex(token.as_bytes()))
    }

    async fn store(&self, e: &TokenEntry) -> Result<(), ApiError> {
        let bytes = serde_json::to_vec(e).map_err(ApiError::internal)?;
        self.barrier
            .put(&format!("{ID_PREFIX}{}", e.hash), &bytes)
            .await?;
        lock(self.cache.write())?.insert(e.hash.clone(), Arc::new(e.clone()));
        Ok(())
    }

    pub fn limits(&self) -> TtlLimits {
        self.limits
    }

    /// Unix seconds by the store's clock.
    pub fn now(&self) -> i64 {
        self.clock.now_secs()
    }

    fn family_lock(&self, hash: &str) -> &tokio::sync::Mutex<()> {
        let i = hash
            .bytes()
            .take(2)
            .fold(0usize, |a, b| a * 31 + b as usize);
        &self.family[i % self.family.len()]
    }

    /// Create a token; returns the token string (shown once), its entry and
    /// any warnings (a TTL capped at the system maximum).
    ///
    /// A child is written under its parent's family lock after re-reading the
    /// parent from storage: a parent that expired, was revoked or is being
    /// revoked gets no child, so revoking a tree can never miss one.
    pub async fn create(
        &self,
        mut spec: NewToken,
    ) -> Result<(String, TokenEntry, Vec<String>), ApiError> {
        let id = match spec.id.take() {
            Some(id) => {
                if id.is_empty() || id.contains('.') {
                    return Err(ApiError::bad_request(
                        "custom token ID cannot have the '.' in the value",
                    ));
                }
                id
            }
            None => format!("hvs.{}", random_base62(24)),
        };
        let salt = self.salt()?;
        let hash = salt.sign_hex(id.as_bytes());
        if self.entry_by_hash(&hash).await?.is_some() {
            return Err(ApiError::bad_request(
                "cannot create a token with a duplicate ID",
            ));
        }
        let accessor = random_base62(24);
        let now = self.now();
        let mut warnings = Vec::new();
        let is_root = spec.policies.iter().any(|p| p == "root");
        // the max TTL in force: the system's, or the issuing auth method's
        // (its user's or role's, its mount's) when lower
        let max_ttl = if spec.max_ttl > 0 {
            spec.max_ttl.min(self.limits.max_ttl)
        } else {
            self.limits.max_ttl
        };
        // a period above it is capped (Vault's CalculateTTL): a periodic
        // token lives while renewed, never on one period of 292 years; an
        // explicit max TTL above the system max is capped too
        for (what, v, cap) in [
            ("period", &mut spec.period, max_ttl),
            (
                "explicit_max_ttl",
                &mut spec.explicit_max_ttl,
                self.limits.max_ttl,
            ),
        ] {
            if *v > cap {
                warnings.push(capped_warning(what, *v, cap));
                *v = cap;
            }
        }
        let mut ttl = spec.ttl;
        if spec.period > 0 {
            ttl = spec.period;
        }
        if spec.explicit_max_ttl > 0 && (ttl == 0 || ttl > spec.explicit_max_ttl) {
            // Vault warns when a TTL or period it was given is cut (not
            // when the default TTL is)
            if ttl > spec.explicit_max_ttl {
                let what = if spec.period > 0 { "period" } else { "TTL" };
                warnings.push(capped_warning(what, ttl, spec.explicit_max_ttl));
            }
            ttl = spec.explicit_max_ttl;
        }
        if ttl == 0 && !is_root {
            ttl = self.limits.default_ttl;
        }
        // periodic tokens escape the max TTL from creation (Vault);
        // everything else, root tokens with a TTL included, is capped at it
        if spec.period == 0 && ttl > max_ttl {
            warnings.push(ttl_capped_warning(ttl, max_ttl));
            ttl = max_ttl;
        }
        let expire_time = if ttl > 0 {
            now.checked_add(ttl)
                .ok_or_else(|| ApiError::bad_request("ttl too large"))?
        } else {
            0
        };
        let entry = TokenEntry {
            hash: hash.clone(),
            accessor: accessor.clone(),
            parent: spec.parent.clone(),
            policies: spec.policies,
            meta: spec.meta,
            display_name: spec.display_name,
            num_uses: spec.num_uses,
            creation_time: now,
            creation_ttl: ttl,
            explicit_max_ttl: spec.explicit_max_ttl,
            period: spec.period,
            renewable: spec.renewable && ttl > 0,
            expire_time,
            issue_time: now,
            path: spec.path,
            revoking: false,
            role: spec.role,
            mount_accessor: spec.mount_accessor,
            max_ttl: if spec.max_ttl > 0 { max_ttl } else { 0 },
            bound_cidrs: spec.bound_cidrs,
            wrapping: spec.wrapped.is_some(),
            entity_id: spec.entity_id,
        };
        let bytes = serde_json::to_vec(&entry).map_err(ApiError::internal)?;
        let mut ops = vec![
            BarrierOp::Put {
                path: format!("{ID_PREFIX}{hash}"),
                value: bytes,
            },
            BarrierOp::Put {
                path: format!("{ACCESSOR_PREFIX}{}", salt.sign_hex(accessor.as_bytes())),
                value: hash.as_bytes().to_vec(),
            },
        ];
        if let Some(w) = spec.wrapped.take() {
            ops.push(BarrierOp::Put {
                path: format!("{WRAPPED_PREFIX}{hash}"),
                value: w.to_vec(),
            });
        }
        let _family = if spec.parent.is_empty() {
            None
        } else {
            ops.push(BarrierOp::Put {
                path: format!("{PARENT_PREFIX}{}/{hash}", spec.parent),
                value: Vec::new(),
            });
            let g = self.family_lock(&spec.parent).lock().await;
            // the parent as stored now, not as the caller saw it
            if !self.usable_from_storage(&spec.parent, now).await? {
                return Err(ApiError::permission_denied());
            }
            Some(g)
        };
        self.barrier.transaction(ops).await?;
        lock(self.cache.write())?.insert(hash, Arc::new(entry.clone()));
        Ok((id, entry, warnings))
    }

    /// Whether the stored token `hash` exists, is not expired and is not
    /// being revoked (read past the cache: the caller holds its family lock).
    async fn usable_from_storage(&self, hash: &str, now: i64) -> Result<bool, ApiError> {
        match self.barrier.get(&format!("{ID_PREFIX}{hash}")).await? {
            None => Ok(false),
            Some(b) => {
                let e: TokenEntry = serde_json::from_slice(&b).map_err(ApiError::internal)?;
                Ok(!e.revoking && (e.expire_time == 0 || e.expire_time > now) && e.num_uses >= 0)
            }
        }
    }

    async fn entry_by_hash(&self, hash: &str) -> Result<Option<Arc<TokenEntry>>, ApiError> {
        if let Some(e) = lock(self.cache.read())?.get(hash) {
            return Ok(Some(e.clone()));
        }
        let generation = self.revocations.load(Ordering::SeqCst);
        match self.barrier.get(&format!("{ID_PREFIX}{hash}")).await? {
            None => Ok(None),
            Some(b) => {
                let e: TokenEntry = serde_json::from_slice(&b).map_err(ApiError::internal)?;
                let e = Arc::new(e);
                let mut cache = lock(self.cache.write())?;
                // a revocation since the read may have deleted this entry:
                // caching it would bring the token back
                if self.revocations.load(Ordering::SeqCst) == generation {
                    cache.insert(hash.to_string(), e.clone());
                }
                Ok(Some(e))
            }
        }
    }

    /// A valid (unexpired) token's entry, or None. Expired tokens are revoked.
    pub async fn lookup(&self, token: &str) -> Result<Option<Arc<TokenEntry>>, ApiError> {
        if token.is_empty() || token.len() > 512 {
            return Ok(None);
        }
        let hash = self.hash(token)?;
        self.lookup_hash(&hash).await
    }

    /// A valid token's entry, or None. A token is valid when it and every
    /// ancestor exist, are unexpired and are not being revoked: a child dies
    /// with its parent at once, not when the parent is next looked up. An
    /// expired token found on the way has its tree revoked.
    pub async fn lookup_hash(&self, hash: &str) -> Result<Option<Arc<TokenEntry>>, ApiError> {
        let Some(e) = self.entry_by_hash(hash).await? else {
            return Ok(None);
        };
        if e.num_uses < 0 || e.revoking {
            // last use taken (revocation follows the request that took it),
            // or the tree is being revoked
            return Ok(None);
        }
        let now = self.now();
        let mut cur = e.clone();
        // a chain is at most as deep as tokens were created; the bound only
        // guards against a corrupted store pointing in a circle
        for _ in 0..1024 {
            if cur.expire_time != 0 && cur.expire_time <= now {
                self.revoke_tree(&cur.hash).await?;
                return Ok(None);
            }
            // issued by an auth method since disabled: invalid now, even
            // while (or if) the disabling's revocation has not reached it
            if !self.method_enabled(&cur)? {
                return Ok(None);
            }
            if cur.parent.is_empty() {
                return Ok(Some(e));
            }
            match self.entry_by_hash(&cur.parent).await? {
                Some(p) if !p.revoking && p.num_uses >= 0 => cur = p,
                // the parent is gone: this token should have gone with it
                _ => return Ok(None),
            }
        }
        Err(ApiError::internal("token parent chain too deep"))
    }

    pub async fn lookup_accessor(
        &self,
        accessor: &str,
    ) -> Result<Option<Arc<TokenEntry>>, ApiError> {
        if accessor.is_empty() || accessor.len() > 256 {
            return Ok(None);
        }
        let key = format!(
            "{ACCESSOR_PREFIX}{}",
            self.salt()?.sign_hex(accessor.as_bytes())
        );
        match self.barrier.get(&key).await? {
            None => Ok(None),
            Some(h) => {
                let hash = String::from_utf8(h.to_vec()).map_err(ApiError::internal)?;
                self.lookup_hash(&hash).await
            }
        }
    }

    /// Count one use of a limited-use token; the last use revokes it (after
    /// the request it authorises, as Vault does). The count is re-read and
    /// written under the store's lock, and the last use marks the entry
    /// `num_uses = -1` so that no other request can take it meanwhile.
    pub async fn consume_use(&self, e: &TokenEntry) -> Result<TokenUse, ApiError> {
        if e.num_uses == 0 {
            return Ok(TokenUse::Unlimited);
        }
        let _g = self.modify.lock().await;
        let Some(cur) = self.entry_by_hash(&e.hash).await? else {
            return Ok(TokenUse::Exhausted);
        };
        let mut next = (*cur).clone();
        let used = match cur.num_uses {
            n if n < 0 => return Ok(TokenUse::Exhausted),
            0 => return Ok(TokenUse::Unlimited),
            1 => {
                next.num_uses = -1;
                TokenUse::Last
            }
            n => {
                next.num_uses = n - 1;
                TokenUse::Counted
            }
        };
        self.store(&next).await?;
        Ok(used)
    }

    /// Revoke a token and, recursively, every token created from it.
    ///
    /// Each token is first marked as being revoked, under its family lock,
    /// and only then are its children listed: from the mark on, no child can
    /// be created under it (see [`TokenStore::create`]), so the listing is
    /// complete. Deletion then runs children first, so a crash midway never
    /// leaves a live child without its parent (marked tokens authorise
    /// nothing, and tidy finishes their revocation).
    pub async fn revoke_tree(&self, hash: &str) -> Result<(), ApiError> {
        self.mark_revoking(hash).await?;
        let mut stack = vec![hash.to_string()];
        let mut order = Vec::new();
        while let Some(h) = stack.pop() {
            for child in self.barrier.list(&format!("{PARENT_PREFIX}{h}/")).await? {
                let child = child.trim_end_matches('/').to_string();
                self.mark_revoking(&child).await?;
                stack.push(child);
            }
            order.push(h);
        }
        for h in order.into_iter().rev() {
            self.revoke_one(&h).await?;
        }
        Ok(())
    }

    async fn mark_revoking(&self, hash: &str) -> Result<(), ApiError> {
        let _family = self.family_lock(hash).lock().await;
        let _g = self.modify.lock().await;
        let Some(b) = self.barrier.get(&format!("{ID_PREFIX}{hash}")).await? else {
            return Ok(());
        };
        let mut e: TokenEntry = serde_json::from_slice(&b).map_err(ApiError::internal)?;
        if !e.revoking {
            e.revoking = true;
            self.store(&e).await?;
        }
        Ok(())
    }

    async fn revoke_one(&self, hash: &str) -> Result<(), ApiError> {
        // no use count or renewal may write the entry back after this
        let _g = self.modify.lock().await;
        let entry = match self.barrier.get(&format!("{ID_PREFIX}{hash}")).await? {
            Some(b) => Some(serde_json::from_slice::<TokenEntry>(&b).map_err(ApiError::internal)?),
            None => None,
        };
        let mut ops = vec![BarrierOp::Delete {
            path: format!("{ID_PREFIX}{hash}"),
        }];
        // the token's leases are detached and due now, in the same
        // transaction: the expiry manager revokes them (a token is never
        // gone while a lease still counts on it being revoked later)
        let (lease_ops, lease_ids) = self.leases.detach_token_ops(hash, self.now()).await?;
        ops.extend(lease_ops);
        if entry.as_ref().is_none_or(|e| e.wrapping) {
            ops.push(BarrierOp::Delete {
                path: format!("{WRAPPED_PREFIX}{hash}"),
            });
        }
        if let Some(e) = &entry {
            let salt = self.salt()?;
            ops.push(BarrierOp::Delete {
                path: format!("{ACCESSOR_PREFIX}{}", salt.sign_hex(e.accessor.as_bytes())),
            });
            if !e.parent.is_empty() {
                ops.push(BarrierOp::Delete {
                    path: format!("{PARENT_PREFIX}{}/{hash}", e.parent),
                });
            }
        }
        self.barrier.transaction(ops).await?;
        self.leases.make_due(lease_ids, self.now())?;
        let mut cache = lock(self.cache.write())?;
        cache.remove(hash);
        self.revocations.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// The response a live wrapping token wraps, without consuming it.
    pub async fn peek_wrapped(
        &self,
        hash: &str,
    ) -> Result<Option<(TokenEntry, zeroize::Zeroizing<Vec<u8>>)>, ApiError> {
        let Some(b) = self.barrier.get(&format!("{ID_PREFIX}{hash}")).await? else {
            return Ok(None);
        };
        let e: TokenEntry = serde_json::from_slice(&b).map_err(ApiError::internal)?;
        if !e.wrapping || e.revoking || (e.expire_time != 0 && e.expire_time <= self.now()) {
            return Ok(None);
        }
        match self.barrier.get(&format!("{WRAPPED_PREFIX}{hash}")).await? {
            Some(w) => Ok(Some((e, w))),
            None => Ok(None),
        }
    }

    /// Take the response a wrapping token wraps: exactly one caller gets
    /// it. Under the token's family and modify locks the entry is read from
    /// storage and marked as being revoked; the token is then revoked (its
    /// response deleted with it). A token whose one use another request
    /// took (`num_uses == -1`) still unwraps once: that request may be this
    /// one, unwrapping with the wrapping token as its own token.
    pub async fn take_wrapped(
        &self,
        hash: &str,
    ) -> Result<Option<(TokenEntry, zeroize::Zeroizing<Vec<u8>>)>, ApiError> {
        let taken = {
            let _family = self.family_lock(hash).lock().await;
            let _g = self.modify.lock().await;
            match self.peek_wrapped(hash).await? {
                None => None,
                Some((mut e, w)) => {
                    e.revoking = true;
                    self.store(&e).await?;
                    Some((e, w))
                }
            }
        };
        if taken.is_some() {
            self.revoke_tree(hash).await?;
        }
        Ok(taken)
    }

    /// Revoke only this token; its children become orphans. The token is
    /// marked first, so no child appears after the listing.
    pub async fn revoke_orphan(&self, hash: &str) -> Result<(), ApiError> {
        self.mark_revoking(hash).await?;
        for child in self
            .barrier
            .list(&format!("{PARENT_PREFIX}{hash}/"))
            .await?
        {
            let ch = child.trim_end_matches('/').to_string();
            let _g = self.modify.lock().await;
            if let Some(e) = self.entry_by_hash(&ch).await? {
                let mut e = (*e).clone();
                e.parent.clear();
                self.store(&e).await?;
            }
            self.barrier
                .delete(&format!("{PARENT_PREFIX}{hash}/{ch}"))
                .await?;
        }
        self.revoke_one(hash).await
    }

    /// Extend a token's lease by `increment` seconds (0 = its creation TTL).
    /// A periodic token renews to its period; any other token never outlives
    /// its explicit max TTL or the system max TTL, both counted from its
    /// creation (so renewing cannot extend a token forever). Returns the
    /// entry and any warning about a capped TTL.
    pub async fn renew(&self, e: &TokenEntry, increment: i64) -> Result<Renewed, ApiError> {
        if !e.renewable || e.expire_time == 0 {
            return Err(ApiError::bad_request("lease is not renewable"));
        }
        let now = self.now();
        let mut warnings = Vec::new();
        // the max TTL in force: the system's, or the token's own (its auth
        // method's) when lower
        let limit = if e.max_ttl > 0 {
            e.max_ttl.min(self.limits.max_ttl)
        } else {
            self.limits.max_ttl
        };
        let ttl = if e.period > 0 {
            // a periodic token renews by its period, never by more than the
            // max TTL (each renewal; its life has no end while renewed)
            if e.period > limit {
                warnings.push(capped_warning("period", e.period, limit));
                limit
            } else {
                e.period
            }
        } else if increment > 0 {
            increment
        } else {
            e.creation_ttl
        };
        let too_large = || ApiError::bad_request("increment too large");
        let mut expire = now.checked_add(ttl).ok_or_else(too_large)?;
        if e.period == 0 {
            let max = e.creation_time.checked_add(limit).ok_or_else(too_large)?;
            if expire > max {
                warnings.push(ttl_capped_warning(ttl, limit));
                expire = max;
            }
        }
        if e.explicit_max_ttl > 0 {
            expire = expire.min(e.creation_time.saturating_add(e.explicit_max_ttl));
        }
        // only the expiry changes: start from the stored entry, not the
        // caller's copy, which may predate a use counted since
        let _g = self.modify.lock().await;
        let Some(cur) = self.entry_by_hash(&e.hash).await? else {
            return Err(ApiError::bad_request("invalid token"));
        };
        if cur.revoking {
            return Err(ApiError::bad_request("invalid token"));
        }
        let mut next = (*cur).clone();
        next.expire_time = expire.max(now);
        self.store(&next).await?;
        Ok(Renewed {
            entry: next,
            warnings,
            now,
        })
    }

    /// Revoke every expired token (background tidy; lookups also check expiry).
    pub async fn tidy(&self) -> Result<usize, ApiError> {
        let now = self.now();
        let mut n = 0;
        for h in self.barrier.list(ID_PREFIX).await? {
            if let Some(e) = self.entry_by_hash(&h).await?
                && ((e.expire_time != 0 && e.expire_time <= now)
                    || e.num_uses < 0
                    || e.revoking
                    || !self.method_enabled(&e)?)
            {
                self.revoke_tree(&h).await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Revoke every token an auth method issued (disabling it), with their
    /// children. Returns how many trees were revoked.
    pub async fn revoke_by_method(&self, accessor: &str) -> Result<usize, ApiError> {
        let mut n = 0;
        for h in self.barrier.list(ID_PREFIX).await? {
            if let Some(e) = self.entry_by_hash(&h).await?
                && e.mount_accessor == accessor
            {
                self.revoke_tree(&h).await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Every accessor (for `LIST auth/token/accessors`).
    pub async fn accessors(&self) -> Result<Vec<String>, ApiError> {
        let mut out = Vec::new();
        for h in self.barrier.list(ID_PREFIX).await? {
            if let Some(e) = self.entry_by_hash(&h).await? {
                out.push(e.accessor.clone());
            }
        }
        out.sort();
        Ok(out)
    }
}

/// What a renewal granted. `now` is the instant the new expiry was computed
/// from, so the reported lease duration is exactly the TTL granted, however
/// long the write took (reading the clock again after it could report one
/// second less).
pub struct Renewed {
    pub entry: TokenEntry,
    pub warnings: Vec<String>,
    pub now: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_response_never_shows_in_debug_output() {
        let t = NewToken {
            wrapped: Some(zeroize::Zeroizing::new(b"hunter2-wrapped".to_vec())),
            ..NewToken::default()
        };
        let shown = format!("{t:?}");
        // the bytes of "hun", as Vec<u8>'s Debug would print them
        assert!(!shown.contains("104, 117, 110"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
