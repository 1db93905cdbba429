//! The gateway's state: one [`Gateway`] built from a validated
//! configuration, replaced whole on reload ([`Shared`]); a request keeps
//! the `Arc<Gateway>` it started with.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use palisade_ratelimit::{Limiter, Quota};

use crate::config::{self, FailMode, GatewayConfig, Limits, RateStore};
use crate::ops::log::Sink;
use crate::steps::authn::Authenticator;
use crate::steps::authz::{Authorizer, PolicyError};
use crate::steps::client_ip::Cidr;
use crate::steps::route::{Route, Routes};
use crate::steps::stream::ClientSlots;
use crate::steps::upstream::{Pool, PoolError, Transport};

/// Everything a request needs; replaced whole on reload.
pub struct Gateway {
    pub routes: Routes,
    /// CRS evaluations running at once (request and response phases): two
    /// per core. Each costs up to a few hundred milliseconds of CPU and a
    /// few MB; without a bound, a flood of requests for large text answers
    /// runs hundreds at once on the blocking pool. Others wait their turn
    /// (within the request's timeout).
    pub crs_slots: Arc<tokio::sync::Semaphore>,
    /// Every upstream pool by name (readiness reports them).
    pub pools: HashMap<String, Arc<Pool>>,
    pub authn: Authenticator,
    pub authz: Authorizer,
    pub limiter: Arc<Limiter>,
    pub peer_quota: Option<Quota>,
    pub limits: Limits,
    pub log: Arc<Sink>,
    /// The security log's format (`log_format`).
    pub log_format: crate::ops::log::LogFormat,
    /// Proxies whose `X-Forwarded-For` names the client (see `client_ip.rs`).
    pub trusted_proxies: Vec<Cidr>,
    /// Every header any route sets from an identity: removed from every
    /// request, on every route, so a client's copy never reaches a service
    /// that trusts it on another route.
    pub identity_headers: Vec<hyper::header::HeaderName>,
    /// Forwarded requests in flight per client (kept across reloads).
    pub client_slots: Arc<ClientSlots>,
    /// How pools reach endpoints (kept across reloads).
    pub transport: Transport,
    /// Scores and bans (kept across reloads; the store is chosen at start).
    pub ids: Arc<palisade_ids::Ids>,
    /// Where the running `Ids` keeps its state (as configured at start).
    pub ids_store: config::IdsStore,
    /// `[syslog]` as started (the forwarder lives in the log sink).
    pub syslog: Option<crate::ops::syslog::SyslogConfig>,
    pub otlp: Option<crate::ops::otlp::OtlpConfig>,
    pub security_log_file: Option<std::path::PathBuf>,
    /// `[ids]`'s rules; `None`: no scoring, no bans enforced.
    pub ids_policy: Option<Arc<palisade_ids::Policy>>,
    /// How often the shared ban list is copied.
    pub ids_sync: Duration,
}

/// The reloadable current gateway.
pub struct Shared {
    current: RwLock<Arc<Gateway>>,
}

impl Shared {
    pub fn new(gw: Gateway) -> Self {
        Self {
            current: RwLock::new(Arc::new(gw)),
        }
    }

    pub fn current(&self) -> Arc<Gateway> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn replace(&self, gw: Arc<Gateway>) {
        match self.current.write() {
            Ok(mut g) => *g = gw,
            Err(poisoned) => *poisoned.into_inner() = gw,
        }
    }
}

/// A gateway that cannot be built from a (parsed) configuration.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{0}")]
    Config(config::ConfigErrors),
    #[error("upstreams[{name}]: {source}")]
    Upstream { name: String, source: PoolError },
    #[error("routes[{route}]: unknown upstream {upstream:?}")]
    UnknownUpstream { route: String, upstream: String },
    #[error("apikeys: {0}")]
    ApiKeys(String),
    #[error("JWKS client: {0}")]
    JwksClient(String),
    #[error("issuers: {0}")]
    Issuers(String),
    #[error("authorization: {0}")]
    Policies(#[from] PolicyError),
    #[error("ratelimit.peer: {0}")]
    PeerQuota(String),
    #[error("ratelimit: {0}")]
    RateLimitStore(String),
    #[error("ids: {0}")]
    IdsStore(String),
    #[error("syslog: {0}")]
    Syslog(String),
    #[error("otlp: {0}")]
    Otlp(String),
}

impl BuildError {
    /// How many problems it reports (a configuration lists each one).
    pub fn count(&self) -> usize {
        match self {
            BuildError::Config(e) => e.0.len().max(1),
            _ => 1,
        }
    }
}

/// Build the limiter from config (kept across reloads so counts survive).
pub async fn build_limiter(cfg: &GatewayConfig) -> Result<Arc<Limiter>, BuildError> {
    Ok(Arc::new(match &cfg.ratelimit.store {
        RateStore::Local => Limiter::local(),
        RateStore::Redis {
            url,
            on_failure,
            timeout,
        } => {
            let mode = match on_failure {
                FailMode::LocalFallback => palisade_ratelimit::FailMode::LocalFallback,
                FailMode::FailOpen => palisade_ratelimit::FailMode::FailOpen,
                FailMode::FailClosed => palisade_ratelimit::FailMode::FailClosed,
            };
            Limiter::redis(url, mode, *timeout)
                .await
                .map_err(|e| BuildError::RateLimitStore(e.to_string()))?
        }
    }))
}

/// The `[apikeys]` store the configuration names, opened (`None` without
/// `[apikeys]`). `token`: a Palisade token to use instead of the
/// configuration's (`palisade gateway apikey` with `VAULT_TOKEN` set).
pub async fn apikey_store(
    cfg: &GatewayConfig,
    token: Option<palisade_core::Secret<String>>,
) -> Result<Option<palisade_apikey::ApiKeyStore>, String> {
    let Some(a) = &cfg.apikeys else {
        return Ok(None);
    };
    let store = match &a.store {
        config::ApiKeysStore::Sqlite(db) => {
            palisade_apikey::ApiKeyStore::open(db, a.pepper.clone()).await
        }
        config::ApiKeysStore::Palisade { mount, path } => {
            let p = cfg
                .palisade
                .as_ref()
                .ok_or("store = \"palisade\" needs a [palisade] section")?;
            let shared = crate::ops::palisade::Client::shared(p)?;
            let client = match token {
                Some(t) => Arc::new(shared.with_token(t)),
                None => shared,
            };
            let doc = crate::ops::palisade::KvDocument {
                client,
                mount: mount.clone(),
                path: path.clone(),
            };
            palisade_apikey::ApiKeyStore::open_document(
                Arc::new(doc),
                a.pepper.clone(),
                palisade_apikey::StoreOptions::default(),
            )
            .await
        }
    };
    store.map(Some).map_err(|e| e.to_string())
}

/// Build a gateway from a validated config. On a reload, `previous` is the
/// gateway being replaced: its last good JWKS key sets, its per-client
/// slots and its transport carry over (`transport` is used only without
/// one).
pub async fn build(
    cfg: &GatewayConfig,
    limiter: Arc<Limiter>,
    log: Arc<Sink>,
    previous: Option<&Gateway>,
    transport: Transport,
) -> Result<Gateway, BuildError> {
    let transport = previous.map_or(transport, |p| p.transport.clone());
    let mut pools = HashMap::new();
    for u in &cfg.upstreams {
        let pool =
            Pool::with_transport(u, transport.clone()).map_err(|source| BuildError::Upstream {
                name: u.name.clone(),
                source,
            })?;
        pools.insert(u.name.clone(), pool);
    }
    let apikeys = apikey_store(cfg, None)
        .await
        .map_err(BuildError::ApiKeys)?
        .map(Arc::new);
    let header = cfg
        .apikeys
        .as_ref()
        .map(|a| a.header.clone())
        .unwrap_or_else(|| "x-api-key".into());
    // no proxy from the environment, every redirect hop checked
    let http = palisade_jwt::jwks_client(Duration::from_secs(10))
        .map_err(|e| BuildError::JwksClient(e.to_string()))?;
    let authn = Authenticator::new(
        &cfg.issuers,
        apikeys,
        &header,
        http,
        previous.map(|p| &p.authn),
    )
    .await
    .map_err(BuildError::Issuers)?;
    let authz = Authorizer::new(&cfg.policies)?;
    let peer_quota = match &cfg.ratelimit.peer {
        Some(q) => Some(
            Quota::new(q.limit, q.period, q.burst)
                .map_err(|e| BuildError::PeerQuota(e.to_string()))?,
        ),
        None => None,
    };
    let mut routes = Vec::with_capacity(cfg.routes.len());
    for r in &cfg.routes {
        let pool = pools
            .get(&r.upstream)
            .ok_or_else(|| BuildError::UnknownUpstream {
                route: r.name.clone(),
                upstream: r.upstream.clone(),
            })?
            .clone();
        routes.push(Route::new(r.clone(), pool));
    }
    let mut identity_headers: Vec<hyper::header::HeaderName> = cfg
        .routes
        .iter()
        .flat_map(|r| r.forward_identity.iter().map(|(n, _)| n.clone()))
        .collect();
    identity_headers.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    identity_headers.dedup();
    // no [ids] keeps its state in the process, as store = "local"
    let store = cfg
        .ids
        .as_ref()
        .map_or(config::IdsStore::Local, |i| i.store.clone());
    let ids = match previous {
        // the store is chosen at start: a reload that changes it is refused
        // rather than silently ignored
        Some(p) if p.ids_store != store => {
            return Err(BuildError::IdsStore(
                "changing [ids] store or its Redis needs a restart".into(),
            ));
        }
        Some(p) => p.ids.clone(),
        None => Arc::new(match &store {
            config::IdsStore::Redis { url, timeout } => palisade_ids::Ids::shared(
                palisade_ids::RedisStore::open(url, *timeout)
                    .map_err(|e| BuildError::IdsStore(e.to_string()))?,
            ),
            config::IdsStore::Local => palisade_ids::Ids::local(),
        }),
    };
    // the forwarder is the log sink's, made at start
    if let Some(p) = previous
        && p.syslog != cfg.syslog
    {
        return Err(BuildError::Syslog(
            "changing [syslog] needs a restart".into(),
        ));
    }
    if let Some(p) = previous
        && p.otlp != cfg.otlp
    {
        return Err(BuildError::Otlp("changing [otlp] needs a restart".into()));
    }
    if let Some(p) = previous
        && p.security_log_file != cfg.security_log_file
    {
        return Err(BuildError::Syslog(
            "changing security_log_file needs a restart".into(),
        ));
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    Ok(Gateway {
        crs_slots: Arc::new(tokio::sync::Semaphore::new(2 * cores)),
        routes: Routes::new(routes),
        pools,
        authn,
        authz,
        limiter,
        peer_quota,
        limits: cfg.limits.clone(),
        log,
        log_format: cfg.log_format,
        trusted_proxies: cfg.trusted_proxies.clone(),
        identity_headers,
        client_slots: previous.map(|p| p.client_slots.clone()).unwrap_or_default(),
        transport,
        ids,
        ids_store: store,
        syslog: cfg.syslog.clone(),
        otlp: cfg.otlp.clone(),
        security_log_file: cfg.security_log_file.clone(),
        ids_policy: cfg.ids.as_ref().map(|i| Arc::new(i.policy.clone())),
        ids_sync: cfg
            .ids
            .as_ref()
            .map_or(Duration::from_secs(1), |i| i.sync_interval),
    })
}

/// Read and validate the configuration file at `path` (`var` looks up the
/// environment variables it names).
pub fn read_config(
    path: &Path,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<GatewayConfig, BuildError> {
    let text = std::fs::read_to_string(path).map_err(|e| BuildError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    config::parse(&text, &config::Env { var, base }).map_err(BuildError::Config)
}
