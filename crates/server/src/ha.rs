//! High availability on PostgreSQL (issue #19; docs/ha.md): several servers
//! on one database, one active, the others standby.
//!
//! - Leadership is the lease of `palisade_storage::ha` with a fencing token:
//!   every write this node makes goes through a backend fenced with
//!   [`HaNode::fence`], so PostgreSQL refuses it in the write's own
//!   transaction unless this node's token is current.
//! - A node unseals itself and is then a standby: the barrier's keys are in
//!   memory, nothing else is loaded. When its elector wins the lease the core
//!   clears the storage cache, reads the keyring again and loads everything
//!   (`Core::ha_promote`); when it loses the lease the core stops serving and
//!   drops what it loaded (`Core::ha_demote`).
//! - A request reaching a node that is not active (or whose lease has run out
//!   by its own clock) is forwarded to the active node, or redirected there
//!   (307) when `[ha] mode = "redirect"`. Forwarded requests carry the
//!   client's address and certificates in headers the active node trusts only
//!   with a valid MAC under a key derived from the barrier's root key.
//! - The storage cache serves reads only while the node holds a fencing
//!   token (it is then the only writer); a standby reads the database. A
//!   standby also drops what PostgreSQL's change notifications name (all of
//!   it after a reconnect), so a cache filled while it last led never
//!   outlives a change by another node.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::IntoResponse;
use base64::Engine as _;
use palisade_storage::Backend;
use palisade_storage::cache::CachedBackend;
use palisade_storage::ha::{Change, Elector, Fence, HaLock, Leader, NodeInfo, Role};
use palisade_storage::postgres::PostgresBackend;

use crate::config::{HaConfig, HaMode};
use crate::core::Core;
use crate::ha_client::SendError;
use crate::http::ClientAddr;
use crate::logical::ApiError;

/// How long a node that stepped down (`sys/step-down`) waits before it
/// tries to lead again (Vault's `manualStepDownSleepPeriod`).
pub const STEP_DOWN_HOLD_OFF: Duration = Duration::from_secs(10);

/// Headers a standby adds to what it forwards: who the client is.
pub const FORWARDED_HEADER: &str = "x-palisade-forwarded";
pub const FORWARDED_CERTS_HEADER: &str = "x-palisade-forwarded-certs";
/// On the active node's answer: the forwarded request was signed for an
/// earlier process at this address (the standby's view of the leader was a
/// few seconds old); nothing was done, the standby looks the leader up and
/// sends it again.
pub const FORWARD_RETRY_HEADER: &str = "x-palisade-forward-retry";
/// The message of that answer.
pub const FORWARDED_TO_RESTARTED: &str =
    "the node this request was forwarded to has restarted since; retry";
/// How far a forwarded request's timestamp may be from the active node's
/// clock.
const FORWARDED_MAX_SKEW_SECS: i64 = 60;
/// The active node must answer a forwarded request within this.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(90);

/// Counters for operators (`sys/ha-status`).
#[derive(Debug, Default)]
pub struct HaMetrics {
    pub leadership_gained: AtomicU64,
    pub leadership_lost: AtomicU64,
    pub forwarded: AtomicU64,
    pub redirected: AtomicU64,
    pub forward_errors: AtomicU64,
}

/// MACs of accepted forwarded requests, and in what order they expire.
type SeenMacs = (
    std::collections::HashSet<Vec<u8>>,
    std::collections::VecDeque<(i64, Vec<u8>)>,
);

/// This process's part in the cluster.
pub struct HaNode {
    pub config: HaConfig,
    node_id: String,
    /// Unfenced: the leadership row, the node list and change notifications
    /// (never used for data writes).
    base: PostgresBackend,
    /// The token every data write carries.
    pub fence: Arc<Fence>,
    cache: Arc<CachedBackend>,
    elector: std::sync::Mutex<Option<Elector>>,
    leader: std::sync::RwLock<Option<Leader>>,
    /// While unsealed: the key that signs this node's address in the
    /// leadership row and verifies the leader's (a row written by anyone
    /// but a node of this cluster is never followed).
    addr_key: std::sync::RwLock<Option<palisade_crypto::mac::MacKey>>,
    /// While unsealed: the key that authenticates forwarded requests
    /// (derived once per unseal, not per request).
    forward_key: std::sync::RwLock<Option<Arc<palisade_crypto::mac::MacKey>>>,
    /// MACs of the forwarded requests accepted within the skew window
    /// (each is accepted once: no replay).
    seen: std::sync::Mutex<SeenMacs>,
    client: crate::ha_client::ForwardClient,
    /// Forwarded requests' nonces: a random prefix per process and a
    /// counter (unique, which is all the active node's replay check needs).
    nonce_prefix: u64,
    nonce_count: AtomicU64,
    /// When this node last became active (nanoseconds since the epoch).
    active_since: AtomicU64,
    pub metrics: HaMetrics,
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("ha: {e}"))
}

impl HaNode {
    /// Connect to PostgreSQL: the storage the barrier uses (fenced, behind
    /// the read cache) and the node.
    pub async fn open(
        url: &str,
        table: &str,
        config: HaConfig,
        cache_entries: usize,
        idle_timeout: Duration,
    ) -> Result<(Arc<dyn Backend>, Arc<Self>), String> {
        let base = PostgresBackend::connect_for_ha(url, table, config.lease_ttl)
            .await
            .map_err(|e| format!("storage: {e}"))?;
        let fence = Fence::new();
        // the cache serves reads only while this node writes with a token
        // (the active node, the only writer); a standby reads the database
        let holds = fence.clone();
        let cache = Arc::new(CachedBackend::gated(
            Arc::new(base.fenced(fence.clone())),
            cache_entries,
            Arc::new(move || holds.get() != 0),
        ));
        let roots = match &config.tls_ca_file {
            Some(f) => Some(std::fs::read(f).map_err(|e| {
                format!("ha.tls_ca_file: cannot read {}: {}", f.display(), e.kind())
            })?),
            None => None,
        };
        // pooled connections are dropped well before the other nodes' idle
        // timeout (`http_idle_timeout`, the same on every node of a cluster)
        let keep_idle = (idle_timeout / 2).min(Duration::from_secs(60));
        let client =
            crate::ha_client::ForwardClient::new(roots.as_deref(), FORWARD_TIMEOUT, keep_idle)
                .map_err(|e| match &config.tls_ca_file {
                    Some(f) => format!("ha.tls_ca_file: {}: {e}", f.display()),
                    None => format!("ha: cannot build the forwarding client: {e}"),
                })?;
        let nonce_prefix = u64::from_be_bytes(
            palisade_core::random_bytes(8)
                .try_into()
                .map_err(|_| "ha: no random bytes".to_string())?,
        );
        let node = Arc::new(Self {
            config,
            node_id: palisade_core::uuid_v4(),
            base,
            fence,
            cache: cache.clone(),
            elector: std::sync::Mutex::new(None),
            leader: std::sync::RwLock::new(None),
            addr_key: std::sync::RwLock::new(None),
            forward_key: std::sync::RwLock::new(None),
            seen: Default::default(),
            client,
            nonce_prefix,
            nonce_count: AtomicU64::new(0),
            active_since: AtomicU64::new(0),
            metrics: HaMetrics::default(),
        });
        node.spawn_change_listener();
        let backend: Arc<dyn Backend> = cache;
        Ok((backend, node))
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The leadership row as this node writes it: its address followed by
    /// a MAC of it once unsealed (`sys/init` runs sealed and announces none).
    fn lock(&self) -> Result<HaLock, ApiError> {
        let announced = match self.addr_key.read().ok().and_then(|k| {
            k.as_ref()
                .map(|k| k.sign_hex(self.config.api_addr.as_bytes()))
        }) {
            Some(mac) => format!("{} {mac}", self.config.api_addr),
            None => self.config.api_addr.clone(),
        };
        self.base
            .ha_lock(&self.node_id, &announced, self.config.lease_ttl)
            .map_err(internal)
    }

    /// The address a leadership row announces, if a node of this cluster
    /// signed it.
    fn verified_addr(&self, announced: &str) -> Option<String> {
        let (addr, mac) = announced.split_once(' ')?;
        let mac = hex::decode(mac).ok()?;
        let key = self.addr_key.read().ok()?;
        key.as_ref()?
            .verify(addr.as_bytes(), &mac)
            .then(|| addr.to_string())
    }

    /// While not active, drop from the storage cache what the active node
    /// changes (everything after a lost connection). The active node is the
    /// only writer (fencing), so its own cache needs nothing.
    fn spawn_change_listener(self: &Arc<Self>) {
        let node = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut changes = loop {
                let Some(n) = node.upgrade() else { return };
                match n.base.changes().await {
                    Ok(c) => break c,
                    Err(e) => {
                        tracing::warn!(error = %e, "HA: cannot listen for storage changes; retrying");
                        drop(n);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            };
            // what was written before we listened is unknown
            if let Some(n) = node.upgrade() {
                n.cache.clear();
            }
            loop {
                let change = changes.next().await;
                let Some(n) = node.upgrade() else { return };
                if n.fence.get() != 0 {
                    continue;
                }
                match change {
                    Change::Keys(keys) => n.cache.forget(keys.iter().map(String::as_str)),
                    Change::Resync => n.cache.clear(),
                }
            }
        });
    }

    /// Start trying to lead (at unseal), unless already started.
    pub fn start(self: &Arc<Self>, core: &Arc<Core>) -> Result<(), ApiError> {
        let mut slot = self.elector.lock().map_err(internal)?;
        if slot.is_some() {
            return Ok(());
        }
        let k = core.barrier.derive_key("ha leader address")?;
        if let Ok(mut g) = self.addr_key.write() {
            *g = Some(palisade_crypto::mac::MacKey::from_bytes(&k));
        }
        let k = core.barrier.derive_key("ha request forwarding")?;
        if let Ok(mut g) = self.forward_key.write() {
            *g = Some(Arc::new(palisade_crypto::mac::MacKey::from_bytes(&k)));
        }
        let elector = Elector::spawn(self.lock()?, self.fence.clone(), self.config.renew_interval);
        let role = elector.role();
        *slot = Some(elector);
        tokio::spawn(drive(Arc::downgrade(core), self.clone(), role));
        Ok(())
    }

    /// Stop leading and trying to (seal, shutdown): the lease is released,
    /// so another node takes over within its next round.
    pub async fn stop(&self) {
        let e = self.elector.lock().ok().and_then(|mut s| s.take());
        if let Some(e) = e {
            e.stop().await;
        }
        self.fence.clear();
        if let Ok(mut g) = self.addr_key.write() {
            *g = None;
        }
        if let Ok(mut g) = self.forward_key.write() {
            *g = None;
        }
    }

    /// `sys/step-down`: give the lead up and let another node take it.
    pub fn step_down(&self) {
        if let Ok(s) = self.elector.lock()
            && let Some(e) = s.as_ref()
        {
            e.step_down(STEP_DOWN_HOLD_OFF);
        }
    }

    /// Lease renewals by this process's elector since it was started.
    pub fn renewals(&self) -> u64 {
        self.elector
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(Elector::renewals))
            .unwrap_or(0)
    }

    /// The fencing token while this node surely holds the lease.
    pub fn holds_lease(&self) -> Option<i64> {
        self.elector
            .lock()
            .ok()
            .and_then(|s| s.as_ref().and_then(Elector::holds_lease))
    }

    /// Lead just for `sys/init` (no node is unsealed, so none leads): take
    /// the lease if nobody holds it and write with its token. Release with
    /// [`HaNode::release_once`].
    pub async fn acquire_once(&self) -> Result<(HaLock, i64), ApiError> {
        let lock = self.lock()?;
        match lock.try_acquire().await.map_err(internal)? {
            Some(t) => {
                self.fence.set(t);
                Ok((lock, t))
            }
            None => Err(ApiError::new(
                503,
                "another node of the cluster is active: initialise through it",
            )),
        }
    }

    pub async fn release_once(&self, lock: HaLock, token: i64) {
        self.fence.clear();
        if let Err(e) = lock.release(token).await {
            tracing::warn!(error = %e, "HA: could not release the lease taken for init");
        }
    }

    /// Called by the core once it serves as the active node.
    pub(crate) fn became_active(&self) {
        self.active_since
            .store(palisade_core::now_nanos().max(0) as u64, Ordering::SeqCst);
        self.metrics
            .leadership_gained
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn became_standby(&self) {
        self.active_since.store(0, Ordering::SeqCst);
        self.metrics.leadership_lost.fetch_add(1, Ordering::Relaxed);
    }

    /// Drop the whole storage cache (a node about to load as active).
    pub(crate) fn clear_cache(&self) {
        self.cache.clear();
    }

    async fn refresh_leader(&self) -> Option<Leader> {
        let lock = self.lock().ok()?;
        match tokio::time::timeout(Duration::from_secs(2), lock.leader()).await {
            Ok(Ok(mut l)) => {
                l.api_addr = match self.verified_addr(&l.api_addr) {
                    Some(a) => a,
                    None => {
                        // sealed (no key to check with) is not an alarm
                        let unsealed = self.addr_key.read().is_ok_and(|k| k.is_some());
                        if unsealed && l.live && l.holder != self.node_id {
                            tracing::error!(
                                "HA: the leadership row announces an address no node of this cluster signed; not following it"
                            );
                        }
                        String::new()
                    }
                };
                if let Ok(mut g) = self.leader.write() {
                    *g = Some(l.clone());
                }
                Some(l)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "HA: cannot read the leadership row");
                None
            }
            Err(_) => None,
        }
    }

    /// The active node as this node last saw it; read again when `fresh`,
    /// or when what was seen is no longer live (a failover since).
    pub async fn leader(&self, fresh: bool) -> Option<Leader> {
        if !fresh
            && let Some(l) = self.leader.read().ok().and_then(|g| g.clone())
            && l.live
        {
            return Some(l);
        }
        self.refresh_leader().await
    }

    /// Another node to send requests to: the live leader (its address and
    /// its node id, new at every start of that process), never this node.
    async fn active_node(&self, fresh: bool) -> Option<(String, String)> {
        let usable = |l: &Leader| l.live && l.holder != self.node_id && !l.api_addr.is_empty();
        let l = self.leader(fresh).await?;
        if usable(&l) {
            return Some((l.api_addr, l.holder));
        }
        if fresh {
            return None;
        }
        self.leader(true)
            .await
            .filter(usable)
            .map(|l| (l.api_addr, l.holder))
    }

    /// The node list (addresses without their signatures; shown, never used).
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ApiError> {
        let mut nodes = self.lock()?.nodes().await.map_err(internal)?;
        for n in &mut nodes {
            if let Some((addr, _)) = n.api_addr.split_once(' ') {
                n.api_addr = addr.to_string();
            }
        }
        Ok(nodes)
    }

    /// When this node became active (RFC 3339), if it is.
    pub fn active_time(&self) -> Option<String> {
        match self.active_since.load(Ordering::SeqCst) {
            0 => None,
            n => Some(palisade_core::rfc3339(n as i64)),
        }
    }

    /// The forwarding key, while this node is unsealed (derived at unseal,
    /// dropped at seal).
    fn forwarding_key(&self, core: &Core) -> Option<Arc<palisade_crypto::mac::MacKey>> {
        if core.barrier.sealed() {
            return None;
        }
        self.forward_key.read().ok()?.clone()
    }

    /// What the MAC of a forwarded request covers. `dest` is the address of
    /// the node it is sent to (its `api_addr`, as it announced it) and
    /// `dest_id` that node's id (new at every start of its process): nonces
    /// are remembered per process, so a request captured on its way to one
    /// node is no use at another (after a failover), nor at the same node
    /// once restarted (a review replayed one there).
    #[allow(clippy::too_many_arguments)]
    fn forwarded_message(
        dest: &str,
        dest_id: &str,
        nonce: &str,
        ts: i64,
        addr: &str,
        method: &Method,
        target: &str,
        certs: &str,
        headers: &HeaderMap,
    ) -> Vec<u8> {
        // the credentials the request carries: a captured header is no use
        // with another token
        let mut creds = Vec::new();
        for name in ["x-vault-token", "authorization"] {
            for v in headers.get_all(name) {
                creds.extend_from_slice(v.as_bytes());
                creds.push(b'\n');
            }
            creds.push(b'\n');
        }
        let creds = hex::encode(palisade_crypto::mac::sha256(&creds));
        format!(
            "palisade-forwarded v4\n{dest}\n{dest_id}\n{nonce}\n{ts}\n{addr}\n{method}\n{target}\n{certs}\n{creds}"
        )
        .into_bytes()
    }

    /// The client a forwarded request is from, when it carries a valid
    /// forwarding header: `Ok(None)` without one, an error when the header
    /// is there but not valid (refused: a client must not pick its address).
    pub fn forwarded_client(
        core: &Core,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Option<ClientAddr>, ApiError> {
        let Some(v) = headers.get(FORWARDED_HEADER) else {
            if headers.contains_key(FORWARDED_CERTS_HEADER) {
                return Err(bad_forwarded());
            }
            return Ok(None);
        };
        let Some(node) = core.ha() else {
            return Err(bad_forwarded());
        };
        if headers.get_all(FORWARDED_HEADER).iter().count() != 1 {
            return Err(bad_forwarded());
        }
        let v = v.to_str().map_err(|_| bad_forwarded())?;
        let mut ts = None;
        let mut addr = None;
        let mut mac = None;
        let mut nonce = None;
        let mut dest_id = None;
        for part in v.split(' ') {
            match part.split_once('=') {
                Some(("node", x)) if x.len() <= 64 => dest_id = Some(x),
                Some(("nonce", x)) if x.len() == 32 && x.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    nonce = Some(x)
                }
                Some(("ts", x)) => ts = x.parse::<i64>().ok(),
                Some(("addr", x)) => addr = x.parse::<std::net::IpAddr>().ok(),
                Some(("mac", x)) => mac = hex::decode(x).ok(),
                _ => return Err(bad_forwarded()),
            }
        }
        let (Some(nonce), Some(ts), Some(ip), Some(mac), Some(dest_id)) =
            (nonce, ts, addr, mac, dest_id)
        else {
            return Err(bad_forwarded());
        };
        let mut certs_hdr = headers.get_all(FORWARDED_CERTS_HEADER).iter();
        let certs_value = match (certs_hdr.next(), certs_hdr.next()) {
            (None, _) => "",
            (Some(c), None) => c.to_str().map_err(|_| bad_forwarded())?,
            _ => return Err(bad_forwarded()),
        };
        // sealed a moment ago: a refusal the standby's client may retry
        let key = node.forwarding_key(core).ok_or_else(ApiError::sealed)?;
        let target = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        // verified as signed (for the process the standby named), then
        // accepted only if that process is this one
        let msg = Self::forwarded_message(
            &node.config.api_addr,
            dest_id,
            nonce,
            ts,
            &ip.to_string(),
            method,
            target,
            certs_value,
            headers,
        );
        if !key.verify(&msg, &mac) {
            return Err(bad_forwarded());
        }
        if dest_id != node.node_id {
            return Err(ApiError::new(503, FORWARDED_TO_RESTARTED));
        }
        let now = palisade_core::now_nanos() / 1_000_000_000;
        if (now - ts).abs() > FORWARDED_MAX_SKEW_SECS {
            return Err(bad_forwarded());
        }
        // once only: a recorded forwarded request cannot be replayed
        {
            let mut g = node.seen.lock().map_err(internal)?;
            let (set, order) = &mut *g;
            while let Some((t, _)) = order.front()
                && *t < now - 2 * FORWARDED_MAX_SKEW_SECS
            {
                if let Some((_, m)) = order.pop_front() {
                    set.remove(&m);
                }
            }
            if !set.insert(mac.clone()) {
                return Err(bad_forwarded());
            }
            order.push_back((ts.max(now), mac));
        }
        let certs = if certs_value.is_empty() {
            None
        } else {
            let mut out = Vec::new();
            for c in certs_value.split(',') {
                out.push(
                    base64::engine::general_purpose::STANDARD
                        .decode(c)
                        .map_err(|_| bad_forwarded())?,
                );
            }
            Some(Arc::new(out))
        };
        Ok(Some(ClientAddr {
            addr: std::net::SocketAddr::new(ip, 0),
            certs,
        }))
    }

    /// `[ha] mode`: answer a request this node does not serve, by
    /// forwarding it to the active node or redirecting the client there.
    #[allow(clippy::too_many_arguments)]
    pub async fn relay(
        &self,
        core: &Core,
        max_body: usize,
        body_timeout: Duration,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        client: Option<ClientAddr>,
        body: Body,
    ) -> axum::response::Response {
        let fail = |status: u16, msg: &str| {
            crate::http::render(
                Err(ApiError::new(status, msg)),
                &palisade_core::uuid_v4(),
                false,
            )
        };
        if headers.contains_key(FORWARDED_HEADER) {
            // forwarded to a node that is not active (it lost the lead on
            // the way): never forwarded again, so requests cannot loop
            return fail(
                503,
                "the node this request was forwarded to is not the active node; retry",
            );
        }
        // origin form, as received: what is signed is what is sent
        let path_only = match uri.path_and_query() {
            Some(pq) => Uri::from(pq.clone()),
            None => Uri::from_static("/"),
        };
        let target = path_only
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        if self.config.mode == HaMode::Redirect {
            // the client's URL parser must not change the target (dot
            // segments, backslashes): it would ask the active node for
            // another path than the one this node checked
            static CHECK_BASE: std::sync::LazyLock<Option<url::Url>> =
                std::sync::LazyLock::new(|| url::Url::parse("http://node").ok());
            if CHECK_BASE
                .clone()
                .and_then(|base| with_target(base, &target))
                .is_none()
            {
                return fail(400, "invalid path");
            }
            let Some((addr, _)) = self.active_node(false).await else {
                return fail(503, "no active node in the cluster");
            };
            self.metrics.redirected.fetch_add(1, Ordering::Relaxed);
            let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("{addr}{target}")) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return r;
        }
        let bytes = if hyper::body::Body::is_end_stream(&body) {
            bytes::Bytes::new()
        } else {
            let limited = http_body_util::Limited::new(body, max_body);
            match tokio::time::timeout(body_timeout, http_body_util::BodyExt::collect(limited))
                .await
            {
                Err(_) => return fail(408, "request body not received in time"),
                Ok(Err(e))
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some() =>
                {
                    return fail(413, "http: request body too large");
                }
                Ok(Err(_)) => return fail(400, "failed to read request body"),
                Ok(Ok(c)) => c.to_bytes(),
            }
        };
        let Some(key) = self.forwarding_key(core) else {
            return fail(503, "Vault is sealed");
        };
        let ts = palisade_core::now_nanos() / 1_000_000_000;
        let ip = client
            .as_ref()
            .map(|c| c.addr.ip().to_string())
            .unwrap_or_else(|| "127.0.0.1".into());
        let certs = client
            .as_ref()
            .and_then(|c| c.certs.as_ref())
            .map(|cs| {
                cs.iter()
                    .map(|c| base64::engine::general_purpose::STANDARD.encode(c))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let connection_named: Vec<String> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
            .collect();
        let mut out = headers;
        strip_hop_by_hop(&mut out);
        for c in &connection_named {
            out.remove(c.as_str());
        }

        // each forwarded request is unique (the active node accepts each once)
        let nonce = format!(
            "{:016x}{:016x}",
            self.nonce_prefix,
            self.nonce_count.fetch_add(1, Ordering::Relaxed)
        );
        let mut fresh = false;
        let resp = loop {
            let Some((addr, holder)) = self.active_node(fresh).await else {
                return fail(503, "no active node in the cluster");
            };
            // signed for the node (and process) it goes to
            let mac = key.sign_hex(&Self::forwarded_message(
                &addr, &holder, &nonce, ts, &ip, &method, &target, &certs, &out,
            ));
            let mut req = hyper::Request::new(http_body_util::Full::new(bytes.clone()));
            *req.method_mut() = method.clone();
            // the target exactly as this node received it (and checked it)
            *req.uri_mut() = path_only.clone();
            *req.headers_mut() = out.clone();
            if let Ok(v) = HeaderValue::from_str(&format!(
                "nonce={nonce} ts={ts} addr={ip} node={holder} mac={mac}"
            )) {
                req.headers_mut().insert(FORWARDED_HEADER, v);
            }
            if !certs.is_empty()
                && let Ok(v) = HeaderValue::from_str(&certs)
            {
                req.headers_mut().insert(FORWARDED_CERTS_HEADER, v);
            }
            match self.client.send(&addr, req).await {
                // signed for the process that held the lease a moment ago
                // (restarted at the same address): nothing was done; look
                // the leader up and sign again, once
                Ok(r) if r.headers().contains_key(FORWARD_RETRY_HEADER) && !fresh => {
                    fresh = true;
                }
                Ok(r) => break r,
                // never sent (the node we knew went away): look the active
                // node up again and try once more
                Err(SendError::Connect | SendError::Tls) if !fresh => {
                    fresh = true;
                }
                Err(e) => {
                    self.metrics.forward_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        error = e.as_str(),
                        "HA: forwarding to the active node failed"
                    );
                    return fail(502, "forwarding the request to the active node failed");
                }
            }
        };
        self.metrics.forwarded.fetch_add(1, Ordering::Relaxed);
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        axum::response::Response::from_parts(parts, Body::from(body))
    }
}

/// `base` with `target` (path and query) as its own, unless the URL parser
/// would change the target (`mode = "redirect"`).
fn with_target(mut url: url::Url, target: &str) -> Option<url::Url> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    if !path.starts_with('/') {
        return None;
    }
    url.set_path(path);
    url.set_query(query);
    (url.path() == path && url.query() == query).then_some(url)
}

fn bad_forwarded() -> ApiError {
    ApiError::bad_request("invalid forwarded request")
}

/// Drop the headers that describe one connection, not the request.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    for k in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    ] {
        h.remove(k);
    }
}

/// Act on the elector's decisions, and keep the leader's address fresh.
async fn drive(core: Weak<Core>, ha: Arc<HaNode>, mut role: tokio::sync::watch::Receiver<Role>) {
    let mut tick = tokio::time::interval(ha.config.renew_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = role.changed() => {
                if changed.is_err() {
                    return;
                }
                let r = *role.borrow_and_update();
                let Some(core) = core.upgrade() else { return };
                match r {
                    Role::Active(t) => core.ha_promote(t).await,
                    Role::Standby => core.ha_demote().await,
                }
                ha.refresh_leader().await;
            }
            _ = tick.tick() => {
                ha.refresh_leader().await;
                if let Some(core) = core.upgrade() {
                    core.ha_follow_keyring().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{HaNode, with_target};

    /// The MAC covers the destination's address and its process's node id:
    /// a forwarded request recorded on its way is no use at another node,
    /// nor at the same node restarted on the same address (a review
    /// replayed one there within the 60 s window).
    #[test]
    fn a_forwarded_request_is_signed_for_one_process_of_one_node() {
        let h = axum::http::HeaderMap::new();
        let m = |dest: &str, id: &str| {
            HaNode::forwarded_message(
                dest,
                id,
                "0123",
                1,
                "10.0.0.1",
                &axum::http::Method::GET,
                "/v1/x",
                "",
                &h,
            )
        };
        assert_eq!(m("http://a:8200", "id-1"), m("http://a:8200", "id-1"));
        assert_ne!(m("http://a:8200", "id-1"), m("http://a:8200", "id-2"));
        assert_ne!(m("http://a:8200", "id-1"), m("http://b:8200", "id-1"));
    }

    /// `mode = "redirect"`: the client's URL parser sees `Location`; a
    /// target it would rewrite is refused (forwarding sends the target as
    /// received, with no URL parser on the way).
    #[test]
    fn a_redirect_target_is_sent_exactly_as_received_or_not_at_all() {
        for base in ["http://node", "https://10.0.0.2:8200"] {
            let base = url::Url::parse(base).unwrap();
            for target in [
                "/v1/secret/data/app",
                "/v1/secret/data/app?version=2",
                "/v1/secret/metadata/?list=true",
                "/v1/sys/mounts%2Fx",
                "/v1/secret/data/a%20b?x=%41",
            ] {
                let url = with_target(base.clone(), target).expect(target);
                assert_eq!(&url.as_str()[base.as_str().len() - 1..], target);
            }
            // what the URL parser would rewrite is refused, never sent changed
            for target in [
                "/v1/secret/../sys/seal",
                "/v1/secret/./data/app",
                "/v1/secret/%2e%2e/sys/seal",
                "/v1/secret\\..\\sys/seal",
                "/v1/secret/data/a b",
                "/v1/secret/data/{x}",
                "v1/secret/data/app",
                "",
            ] {
                assert_eq!(with_target(base.clone(), target), None, "{target:?}");
            }
        }
    }
}
