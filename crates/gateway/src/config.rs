//! Gateway configuration (docs/gateway-config.md): TOML into `Raw*` structs
//! with `deny_unknown_fields`, then [`validate`] into typed config, collecting
//! every error so `palisade config check` reports them all at once. Secrets
//! (TLS keys, HMAC peppers, HS256 secrets) are referenced by file path or
//! environment variable name, never written inline.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_core::Secret;
use serde::Deserialize;

// ------------------------------------------------------------------ raw

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    pub admin: Option<RawAdmin>,
    pub limits: Option<RawLimits>,
    #[serde(default)]
    pub upstreams: Vec<RawUpstream>,
    #[serde(default)]
    pub issuers: Vec<RawIssuer>,
    pub apikeys: Option<RawApiKeys>,
    pub ratelimit: Option<RawRateLimit>,
    pub authorization: Option<RawAuthz>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    pub log_level: Option<String>,
    /// `palisade` (default) or `ecs`: the security log's format.
    pub log_format: Option<String>,
    /// The security log to this file instead of stdout.
    pub security_log_file: Option<String>,
    /// Proxies whose `X-Forwarded-For` is believed (addresses or CIDR ranges).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// The OWASP CRS rule set routes may run (`crs = "block"`).
    pub waf: Option<RawWaf>,
    pub ids: Option<RawIds>,
    /// Security events also to a SIEM: RFC 5424 syslog over TLS.
    pub syslog: Option<RawSyslog>,
    /// Security events also to an OpenTelemetry collector (OTLP/HTTP JSON).
    pub otlp: Option<RawOtlp>,
    /// The Palisade server the gateway gets its certificates from.
    pub palisade: Option<RawPalisade>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPalisade {
    pub address: String,
    pub ca_file: Option<String>,
    pub token_file: Option<String>,
    pub approle: Option<RawAppRole>,
    #[serde(default)]
    pub certificates: Vec<RawManagedCert>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAppRole {
    pub mount: Option<String>,
    pub role_id_file: String,
    pub secret_id_file: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawManagedCert {
    pub mount: Option<String>,
    pub role: String,
    pub common_name: String,
    #[serde(default)]
    pub alt_names: Vec<String>,
    #[serde(default)]
    pub ip_sans: Vec<String>,
    #[serde(default)]
    pub uri_sans: Vec<String>,
    pub ttl: Option<String>,
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOtlp {
    pub endpoint: String,
    pub ca_file: Option<String>,
    pub client_cert_file: Option<String>,
    pub client_key_file: Option<String>,
    pub service_name: Option<String>,
    pub hostname: Option<String>,
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub dangerous_plaintext: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSyslog {
    pub address: String,
    pub server_name: Option<String>,
    pub ca_file: String,
    pub client_cert_file: Option<String>,
    pub client_key_file: Option<String>,
    pub facility: Option<String>,
    pub app_name: Option<String>,
    pub hostname: Option<String>,
    pub max_message_bytes: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWaf {
    /// A CRS v4 directory: `crs-setup.conf` (or `.example`) and `rules/`.
    pub crs_dir: String,
    /// CRS's `tx.allowed_methods` (rule 911100).
    pub allowed_methods: Option<Vec<String>>,
    /// Rule files loaded after the setup and before CRS's rules (CRS's
    /// `REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf`: runtime exclusions,
    /// settings), in this order.
    pub before_crs: Option<Vec<String>>,
    /// Rule files loaded after CRS's rules (CRS's
    /// `RESPONSE-999-EXCLUSION-RULES-AFTER-CRS.conf`: `SecRuleRemoveById`,
    /// `SecRuleUpdateTargetById`), in this order.
    pub after_crs: Option<Vec<String>>,
}

/// `[ids]`: intrusion detection and bans (docs/gateway-config.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIds {
    pub mode: Option<String>,
    pub store: Option<String>,
    pub redis_url: Option<String>,
    pub redis_url_env: Option<String>,
    pub redis_timeout_ms: Option<u64>,
    pub sync_interval_ms: Option<u64>,
    pub window_s: Option<u64>,
    pub threshold: Option<u32>,
    pub ban_s: Option<u64>,
    pub max_ban_s: Option<u64>,
    pub strike_memory_s: Option<u64>,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub weights: BTreeMap<String, u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Option<String>,
    pub address: String,
    /// "https" (default) or "http".
    pub protocol: Option<String>,
    pub tls_profile: Option<String>,
    #[serde(default)]
    pub certificates: Vec<RawCert>,
    pub client_auth: Option<RawClientAuth>,
    /// For "http" listeners: the HTTPS port to redirect to (the default behaviour).
    pub redirect_https_port: Option<u16>,
    /// For "http" listeners: serve routes in plaintext instead of redirecting.
    pub dangerous_plaintext: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCert {
    pub cert_file: String,
    pub key_file: String,
    #[serde(default)]
    pub server_names: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientAuth {
    pub ca_file: String,
    #[serde(default)]
    pub crl_files: Vec<String>,
    /// "required" (default) or "optional".
    pub mode: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub address: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    pub max_body_bytes: Option<u64>,
    pub header_timeout_ms: Option<u64>,
    pub keepalive_timeout_ms: Option<u64>,
    pub send_timeout_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub min_body_rate_bytes_per_s: Option<u64>,
    pub max_connections: Option<usize>,
    pub stream_idle_timeout_ms: Option<u64>,
    pub max_concurrent_requests_per_client: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub name: String,
    pub endpoints: Vec<String>,
    pub connect_timeout_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub max_fails: Option<u32>,
    pub fail_timeout_s: Option<u64>,
    pub max_idle_connections: Option<usize>,
    pub tls: Option<RawUpstreamTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    pub ca_file: String,
    pub server_name: Option<String>,
    pub client_cert_file: Option<String>,
    pub client_key_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    pub name: String,
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    pub algorithms: Vec<String>,
    pub jwks_url: Option<String>,
    pub jwks_file: Option<String>,
    pub jwks_refresh_s: Option<u64>,
    pub hs256_secret_file: Option<String>,
    pub hs256_secret_env: Option<String>,
    pub leeway_s: Option<u64>,
    /// Claim holding roles/groups (default "roles").
    pub roles_claim: Option<String>,
    /// RFC 7662 introspection of this issuer's tokens (revocation checks,
    /// opaque tokens).
    pub introspection: Option<RawIntrospection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntrospection {
    pub url: String,
    pub client_id: String,
    pub client_secret_file: Option<String>,
    pub client_secret_env: Option<String>,
    /// How long an answer is reused (default 10 s, at most 300 s; never
    /// beyond the token's `exp`).
    pub cache_s: Option<u64>,
    /// CA certificates trusted for an https `url` (default: the system's roots).
    pub ca_file: Option<String>,
    /// Bearer tokens that are not JWTs are introspected by this issuer
    /// (at most one issuer may say so).
    #[serde(default)]
    pub opaque_tokens: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKeys {
    /// `sqlite` (default: the `database` file) or `palisade` (a KV v2
    /// secret in the `[palisade]` server).
    pub store: Option<String>,
    pub database: Option<String>,
    pub kv_mount: Option<String>,
    pub kv_path: Option<String>,
    pub pepper_file: Option<String>,
    pub pepper_env: Option<String>,
    /// Header carrying the key (default "x-api-key"); `Authorization: ApiKey <key>` also works.
    pub header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// "local" (default) or "redis".
    pub store: Option<String>,
    pub redis_url: Option<String>,
    pub redis_url_env: Option<String>,
    /// "local_fallback" (default), "fail_closed", or "dangerous_fail_open".
    pub on_store_failure: Option<String>,
    pub redis_timeout_ms: Option<u64>,
    /// Per-client-IP shield applied before any cryptographic work.
    pub peer: Option<RawQuota>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawQuota {
    pub limit: u32,
    pub period_s: Option<u64>,
    pub burst: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthz {
    pub policy_file: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    #[serde(default)]
    pub hosts: Vec<String>,
    pub path_prefix: String,
    #[serde(default)]
    pub methods: Vec<String>,
    pub upstream: String,
    /// Any of "jwt", "apikey", "mtls"; the first credential present is used.
    #[serde(default)]
    pub authn: Vec<String>,
    /// Allow unauthenticated requests on this route (explicit opt-in).
    pub anonymous: Option<bool>,
    #[serde(default)]
    pub jwt_issuers: Vec<String>,
    pub ratelimit: Option<RawRouteLimit>,
    #[serde(default)]
    pub consumer_limits: BTreeMap<String, RawQuota>,
    pub max_body_bytes: Option<u64>,
    #[serde(default)]
    pub forward_identity: BTreeMap<String, String>,
    pub cors: Option<RawCors>,
    pub content_security_policy: Option<String>,
    /// Pass upstream 5xx bodies through instead of replacing them.
    pub pass_upstream_errors: Option<bool>,
    pub strip_prefix: Option<bool>,
    pub request_timeout_ms: Option<u64>,
    /// "off", "detect" or "block" (default): the built-in inspection of the
    /// query string and of JSON and form bodies (docs/gateway-config.md).
    pub inspection: Option<String>,
    /// Deepest JSON nesting an inspected body may have (default 32).
    pub inspection_max_depth: Option<usize>,
    /// Most JSON keys and elements, or query/form parameters (default 10,000).
    pub inspection_max_members: Option<usize>,
    /// "off" (default), "detect" or "block": the OWASP CRS rule set of
    /// `[waf] crs_dir` on this route's requests (docs/gateway-config.md).
    pub crs: Option<String>,
    /// CRS paranoia level, 1 (default) to 4.
    pub crs_paranoia: Option<u8>,
    /// CRS's response phases (data leakage) on this route's responses:
    /// `off` (default), `detect` or `block`; needs `crs`.
    pub crs_response: Option<String>,
    /// An OpenAPI 3.0 / 3.1 document (JSON or YAML) describing the service.
    pub openapi: Option<String>,
    /// `block` (default) or `report_only`.
    pub openapi_mode: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteLimit {
    pub limit: u32,
    pub period_s: Option<u64>,
    pub burst: Option<u32>,
    /// "principal" (default), "ip", "route", "apikey".
    pub per: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    pub allowed_origins: Vec<String>,
    #[serde(default)]
    pub allowed_methods: Vec<String>,
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    pub max_age_s: Option<u64>,
    pub allow_credentials: Option<bool>,
}

// ------------------------------------------------------------------ typed

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsProfile {
    /// Mozilla "intermediate": TLS 1.2 (ECDHE + AEAD suites) and TLS 1.3.
    Intermediate,
    /// Mozilla "modern": TLS 1.3 only.
    Modern,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSpec {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub server_names: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuthMode {
    Required,
    Optional,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientAuth {
    pub ca_file: PathBuf,
    pub crl_files: Vec<PathBuf>,
    pub mode: ClientAuthMode,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenerKind {
    Https {
        profile: TlsProfile,
        certificates: Vec<CertSpec>,
        client_auth: Option<ClientAuth>,
    },
    /// Plain HTTP that only redirects to HTTPS.
    RedirectToHttps { port: u16 },
    /// Plain HTTP serving routes: only with `dangerous_plaintext = true`.
    DangerousPlaintext,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    pub name: String,
    pub address: SocketAddr,
    pub kind: ListenerKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: u64,
    pub header_timeout: Duration,
    /// How long an HTTPS HTTP/1.1 connection may wait for its next request.
    pub keepalive_timeout: Duration,
    /// HTTPS: the longest a write to the client may make no progress.
    pub send_timeout: Duration,
    pub request_timeout: Duration,
    pub min_body_rate: u64,
    pub max_connections: usize,
    /// The longest a forwarded request's body or its response's body may
    /// make no progress (Envoy's `stream_idle_timeout`; see `stream.rs`).
    pub stream_idle_timeout: Duration,
    /// Requests of one client address (IPv6: its /64) forwarded at a time.
    pub max_concurrent_requests_per_client: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            max_body_bytes: 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            min_body_rate: 1024,
            max_connections: 20_000,
            stream_idle_timeout: Duration::from_secs(60),
            max_concurrent_requests_per_client: 128,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamTls {
    pub ca_file: PathBuf,
    pub server_name: Option<String>,
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub name: String,
    pub endpoints: Vec<String>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_fails: u32,
    pub fail_timeout: Duration,
    /// Idle kept-alive connections kept per endpoint by each worker (nginx's `keepalive`).
    pub max_idle_connections: usize,
    pub tls: Option<UpstreamTls>,
}

#[derive(Clone, Debug)]
pub enum IssuerKeys {
    JwksUrl { url: String, refresh: Duration },
    JwksFile(PathBuf),
    Hs256(Secret<Vec<u8>>),
}

#[derive(Clone, Debug)]
pub struct IssuerSpec {
    pub name: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<String>,
    pub keys: IssuerKeys,
    pub leeway: Duration,
    pub roles_claim: String,
    pub introspection: Option<IntrospectionSpec>,
}

/// An issuer's RFC 7662 introspection endpoint and the gateway's client
/// credentials for it.
#[derive(Clone, Debug)]
pub struct IntrospectionSpec {
    pub url: String,
    pub client_id: String,
    pub client_secret: Secret<Vec<u8>>,
    pub cache: Duration,
    pub ca_file: Option<PathBuf>,
    pub opaque_tokens: bool,
}

#[derive(Clone, Debug)]
pub enum ApiKeysStore {
    Sqlite(PathBuf),
    /// A KV v2 secret `<mount>/data/<path>` on the `[palisade]` server.
    Palisade {
        mount: String,
        path: String,
    },
}

#[derive(Clone, Debug)]
pub struct ApiKeysConfig {
    pub store: ApiKeysStore,
    pub pepper: Secret<Vec<u8>>,
    pub header: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaSpec {
    pub limit: u32,
    pub period: Duration,
    pub burst: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailMode {
    LocalFallback,
    FailOpen,
    FailClosed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RateStore {
    Local,
    Redis {
        url: String,
        on_failure: FailMode,
        timeout: Duration,
    },
}

/// Where the IDS keeps scores and bans (chosen at start; a reload keeps the store).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdsStore {
    Local,
    Redis { url: String, timeout: Duration },
}

/// `[ids]`, validated.
#[derive(Clone, Debug)]
pub struct IdsConfig {
    pub policy: palisade_ids::Policy,
    pub store: IdsStore,
    /// How often a gateway copies the shared ban list.
    pub sync_interval: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub store: RateStore,
    pub peer: Option<QuotaSpec>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKey {
    Principal,
    Ip,
    Route,
    ApiKey,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthnMethod {
    Jwt,
    ApiKey,
    PeerCert,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cors {
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    pub allowed_headers: Vec<String>,
    pub max_age: Option<u64>,
    pub allow_credentials: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteConfig {
    pub name: String,
    pub hosts: Vec<String>,
    pub path_prefix: String,
    pub methods: Vec<String>,
    pub upstream: String,
    pub authn: Vec<AuthnMethod>,
    pub anonymous: bool,
    pub jwt_issuers: Vec<String>,
    pub ratelimit: Option<(QuotaSpec, LimitKey)>,
    pub consumer_limits: BTreeMap<String, QuotaSpec>,
    pub max_body_bytes: Option<u64>,
    /// (header name, claim name), names parsed once here
    pub forward_identity: Vec<(hyper::header::HeaderName, String)>,
    pub cors: Option<Cors>,
    pub content_security_policy: Option<String>,
    pub pass_upstream_errors: bool,
    pub strip_prefix: bool,
    pub request_timeout: Option<Duration>,
    pub inspection: Inspection,
    /// The OWASP CRS rule set this route runs, if any.
    pub crs: Option<Crs>,
    /// The OpenAPI document requests must match, if any.
    pub openapi: Option<OpenApi>,
}

/// A route's OpenAPI document: the positive model.
#[derive(Clone, Debug)]
pub struct OpenApi {
    /// `Block`, or `Detect` (`openapi_mode = "report_only"`).
    pub mode: InspectionMode,
    pub spec: std::sync::Arc<palisade_openapi::Spec>,
}

/// Two routes' documents are equal when they are the same loaded document
/// used the same way.
impl PartialEq for OpenApi {
    fn eq(&self, other: &Self) -> bool {
        self.mode == other.mode && std::sync::Arc::ptr_eq(&self.spec, &other.spec)
    }
}

impl Eq for OpenApi {}

/// A route's CRS: the mode and the rule set loaded at its paranoia level.
#[derive(Clone, Debug)]
pub struct Crs {
    pub mode: InspectionMode,
    pub paranoia: u8,
    /// The response phases (3 and 4) on the route's responses.
    pub response: InspectionMode,
    pub rules: std::sync::Arc<palisade_waf::RuleSet>,
}

/// Two routes' CRS are equal when they run the same rule set the same way.
impl PartialEq for Crs {
    fn eq(&self, other: &Self) -> bool {
        self.mode == other.mode
            && self.paranoia == other.paranoia
            && self.response == other.response
            && std::sync::Arc::ptr_eq(&self.rules, &other.rules)
    }
}

impl Eq for Crs {}

/// What the inspection step does with a route's requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InspectionMode {
    /// Not inspected.
    Off,
    /// Findings are logged; the request goes on unchanged.
    Detect,
    /// A finding refuses the request (403 `request_blocked`, or 400
    /// `malformed_request_content` for input that does not parse).
    Block,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inspection {
    pub mode: InspectionMode,
    pub limits: palisade_inspect::Limits,
}

impl Default for Inspection {
    fn default() -> Self {
        Self {
            mode: InspectionMode::Block,
            limits: palisade_inspect::Limits::default(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub listeners: Vec<ListenerConfig>,
    pub admin: SocketAddr,
    pub limits: Limits,
    pub upstreams: Vec<UpstreamConfig>,
    pub issuers: Vec<IssuerSpec>,
    pub apikeys: Option<ApiKeysConfig>,
    pub ratelimit: RateLimitConfig,
    /// Cedar policy text (validated when the gateway builds its authorizer).
    pub policies: String,
    pub policy_file: PathBuf,
    pub routes: Vec<RouteConfig>,
    pub log_level: String,
    pub log_format: crate::ops::log::LogFormat,
    /// The security log's file (stdout when `None`); fixed at start.
    pub security_log_file: Option<PathBuf>,
    pub trusted_proxies: Vec<crate::steps::client_ip::Cidr>,
    /// `[ids]`; `None`: no scores, no bans.
    pub ids: Option<IdsConfig>,
    /// `[syslog]`; fixed at start (a reload that changes it is refused).
    pub syslog: Option<crate::ops::syslog::SyslogConfig>,
    /// `[otlp]`; fixed at start as `[syslog]`.
    pub otlp: Option<crate::ops::otlp::OtlpConfig>,
    /// `[palisade]`; fixed at start.
    pub palisade: Option<crate::ops::palisade::PalisadeConfig>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{}", .0.join("\n"))]
pub struct ConfigErrors(pub Vec<String>);

/// Hooks for the outside world, injected so tests never touch the process environment.
pub struct Env<'a> {
    pub var: &'a dyn Fn(&str) -> Option<String>,
    /// Directory relative paths in the file are resolved against.
    pub base: PathBuf,
}

pub fn parse(text: &str, env: &Env) -> Result<GatewayConfig, ConfigErrors> {
    let raw: RawConfig =
        toml::from_str(text).map_err(|e| ConfigErrors(vec![e.to_string().trim().to_string()]))?;
    validate(raw, env)
}

/// True when the TOML text looks like a gateway configuration (has routes or listeners).
pub fn looks_like_gateway(text: &str) -> bool {
    toml::from_str::<toml::Table>(text)
        .map(|t| t.contains_key("routes") || t.contains_key("listeners"))
        .unwrap_or(false)
}

struct Ctx<'a> {
    errs: Vec<String>,
    env: &'a Env<'a>,
    /// Certificate and key files `[palisade]` writes: they need not exist yet.
    managed: HashSet<PathBuf>,
}

impl Ctx<'_> {
    fn err(&mut self, msg: impl Into<String>) {
        self.errs.push(msg.into());
    }

    /// `<section>.redis_url` or `redis_url_env` (exactly one): a
    /// `redis://` or `rediss://` URL, never with an inline password
    /// (secrets come from the environment).
    fn redis_url(&mut self, section: &str, url: Option<String>, var: Option<String>) -> String {
        let inline_password = url
            .as_deref()
            .and_then(|u| u.split_once("://").map(|(_, rest)| rest))
            .and_then(|rest| rest.split('/').next())
            .is_some_and(|authority| authority.contains('@'));
        let url = match (url, var) {
            (Some(u), None) => Some(u),
            (None, Some(var)) => {
                let v = (self.env.var)(&var);
                if v.is_none() {
                    self.err(format!(
                        "{section}.redis_url_env: environment variable {var} is not set"
                    ));
                }
                v
            }
            _ => {
                self.err(format!(
                    "{section}: store = \"redis\" needs exactly one of redis_url or redis_url_env"
                ));
                None
            }
        };
        if let Some(u) = &url
            && !(u.starts_with("redis://") || u.starts_with("rediss://"))
        {
            self.err(format!(
                "{section}.redis_url: must start with redis:// or rediss://"
            ));
        }
        if inline_password {
            self.err(format!("{section}.redis_url: holds a password; put the URL in an environment variable named by redis_url_env"));
        }
        url.unwrap_or_default()
    }
    fn path(&self, p: &str) -> PathBuf {
        let pb = PathBuf::from(p);
        if pb.is_absolute() {
            pb
        } else {
            self.env.base.join(pb)
        }
    }
    fn file(&mut self, field: &str, p: &str) -> PathBuf {
        let path = self.path(p);
        if !path.is_file() && !self.managed.contains(&path) {
            self.err(format!(
                "{field}: {} does not exist or is not a file",
                path.display()
            ));
        }
        path
    }
    /// A secret from a file or an environment variable, exactly one of them.
    fn secret(
        &mut self,
        field: &str,
        file: &Option<String>,
        env: &Option<String>,
        min_len: usize,
    ) -> Option<Secret<Vec<u8>>> {
        let bytes = match (file, env) {
            (Some(_), Some(_)) => {
                self.err(format!(
                    "{field}: set {field}_file or {field}_env, not both"
                ));
                return None;
            }
            (Some(f), None) => {
                let path = self.path(f);
                match std::fs::read(&path) {
                    Ok(mut b) => {
                        while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                            b.pop();
                        }
                        b
                    }
                    Err(e) => {
                        self.err(format!(
                            "{field}_file: cannot read {}: {}",
                            path.display(),
                            e.kind()
                        ));
                        return None;
                    }
                }
            }
            (None, Some(var)) => match (self.env.var)(var) {
                Some(v) => v.into_bytes(),
                None => {
                    self.err(format!(
                        "{field}_env: environment variable {var} is not set"
                    ));
                    return None;
                }
            },
            (None, None) => {
                self.err(format!("{field}: {field}_file or {field}_env is required"));
                return None;
            }
        };
        if bytes.len() < min_len {
            self.err(format!("{field}: must be at least {min_len} bytes"));
            return None;
        }
        Some(Secret::new(bytes))
    }
    fn quota(
        &mut self,
        field: &str,
        limit: u32,
        period_s: Option<u64>,
        burst: Option<u32>,
    ) -> Option<QuotaSpec> {
        let period = Duration::from_secs(period_s.unwrap_or(1));
        let burst = burst.unwrap_or(0);
        if let Err(e) = palisade_ratelimit::Quota::new(limit, period, burst) {
            self.err(format!("{field}: {e}"));
            return None;
        }
        Some(QuotaSpec {
            limit,
            period,
            burst,
        })
    }
}

const ALGS: &[&str] = &["RS256", "PS256", "ES256", "ES384", "EdDSA", "HS256"];
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

fn valid_header_name(h: &str) -> bool {
    !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

pub fn validate(raw: RawConfig, env: &Env) -> Result<GatewayConfig, ConfigErrors> {
    let mut c = Ctx {
        errs: Vec::new(),
        env,
        managed: HashSet::new(),
    };
    if let Some(p) = &raw.palisade {
        for m in &p.certificates {
            let (cert, key) = (c.path(&m.cert_file), c.path(&m.key_file));
            c.managed.extend([cert, key]);
        }
    }

    // listeners
    let mut listeners = Vec::new();
    if raw.listeners.is_empty() {
        c.err("listeners: at least one [[listeners]] entry is required");
    }
    for (i, l) in raw.listeners.iter().enumerate() {
        let name = l.name.clone().unwrap_or_else(|| format!("listener{i}"));
        let field = format!("listeners[{name}]");
        let address = match l.address.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                c.err(format!(
                    "{field}.address: {:?} is not an IP:port address",
                    l.address
                ));
                None
            }
        };
        let kind = match l.protocol.as_deref().unwrap_or("https") {
            "https" => {
                if l.redirect_https_port.is_some() || l.dangerous_plaintext.is_some() {
                    c.err(format!("{field}: redirect_https_port and dangerous_plaintext apply only to http listeners"));
                }
                let profile = match l.tls_profile.as_deref().unwrap_or("intermediate") {
                    "intermediate" => TlsProfile::Intermediate,
                    "modern" => TlsProfile::Modern,
                    other => {
                        c.err(format!(
                            "{field}.tls_profile: {other:?} is not \"intermediate\" or \"modern\""
                        ));
                        TlsProfile::Intermediate
                    }
                };
                if l.certificates.is_empty() {
                    c.err(format!(
                        "{field}.certificates: an https listener needs at least one certificate"
                    ));
                }
                let certificates = l
                    .certificates
                    .iter()
                    .map(|cert| CertSpec {
                        cert_file: c
                            .file(&format!("{field}.certificates.cert_file"), &cert.cert_file),
                        key_file: c.file(&format!("{field}.certificates.key_file"), &cert.key_file),
                        server_names: cert
                            .server_names
                            .iter()
                            .map(|s| s.to_ascii_lowercase())
                            .collect(),
                    })
                    .collect();
                let client_auth = l.client_auth.as_ref().map(|ca| ClientAuth {
                    ca_file: c.file(&format!("{field}.client_auth.ca_file"), &ca.ca_file),
                    crl_files: ca.crl_files.iter().map(|f| c.file(&format!("{field}.client_auth.crl_files"), f)).collect(),
                    mode: match ca.mode.as_deref().unwrap_or("required") {
                        "required" => ClientAuthMode::Required,
                        "optional" => ClientAuthMode::Optional,
                        other => {
                            c.err(format!("{field}.client_auth.mode: {other:?} is not \"required\" or \"optional\""));
                            ClientAuthMode::Required
                        }
                    },
                });
                ListenerKind::Https {
                    profile,
                    certificates,
                    client_auth,
                }
            }
            "http" => {
                if !l.certificates.is_empty() || l.client_auth.is_some() || l.tls_profile.is_some()
                {
                    c.err(format!("{field}: certificates, client_auth and tls_profile apply only to https listeners"));
                }
                match (
                    l.dangerous_plaintext.unwrap_or(false),
                    l.redirect_https_port,
                ) {
                    (true, None) => ListenerKind::DangerousPlaintext,
                    (true, Some(_)) => {
                        c.err(format!(
                            "{field}: dangerous_plaintext and redirect_https_port are exclusive"
                        ));
                        ListenerKind::DangerousPlaintext
                    }
                    (false, port) => ListenerKind::RedirectToHttps {
                        port: port.unwrap_or(443),
                    },
                }
            }
            other => {
                c.err(format!(
                    "{field}.protocol: {other:?} is not \"https\" or \"http\""
                ));
                ListenerKind::DangerousPlaintext
            }
        };
        if let Some(address) = address {
            listeners.push(ListenerConfig {
                name,
                address,
                kind,
            });
        }
    }

    let admin = match raw
        .admin
        .and_then(|a| a.address)
        .as_deref()
        .unwrap_or("127.0.0.1:9901")
        .parse::<SocketAddr>()
    {
        Ok(a) => a,
        Err(_) => {
            c.err("admin.address: not an IP:port address");
            SocketAddr::from(([127, 0, 0, 1], 9901))
        }
    };

    let mut limits = Limits::default();
    if let Some(l) = raw.limits {
        if let Some(v) = l.max_header_bytes {
            limits.max_header_bytes = v;
        }
        if let Some(v) = l.max_headers {
            limits.max_headers = v;
        }
        if let Some(v) = l.max_body_bytes {
            limits.max_body_bytes = v;
        }
        if let Some(v) = l.header_timeout_ms {
            limits.header_timeout = Duration::from_millis(v);
        }
        if let Some(v) = l.keepalive_timeout_ms {
            limits.keepalive_timeout = Duration::from_millis(v);
        }
        if let Some(v) = l.send_timeout_ms {
            limits.send_timeout = Duration::from_millis(v);
        }
        if let Some(v) = l.request_timeout_ms {
            limits.request_timeout = Duration::from_millis(v);
        }
        if let Some(v) = l.min_body_rate_bytes_per_s {
            limits.min_body_rate = v;
        }
        if let Some(v) = l.max_connections {
            limits.max_connections = v;
        }
        if let Some(v) = l.stream_idle_timeout_ms {
            limits.stream_idle_timeout = Duration::from_millis(v);
        }
        if let Some(v) = l.max_concurrent_requests_per_client {
            limits.max_concurrent_requests_per_client = v;
        }
        // hyper's HTTP/1 read buffer, which enforces this limit, cannot be
        // smaller than 8 KiB: a lower value would be silently not enforced
        if limits.max_header_bytes < 8192
            || limits.max_headers == 0
            || limits.header_timeout.is_zero()
            || limits.keepalive_timeout.is_zero()
            || limits.send_timeout.is_zero()
            || limits.request_timeout.is_zero()
            || limits.max_connections == 0
            || limits.stream_idle_timeout.is_zero()
            || limits.max_concurrent_requests_per_client == 0
        {
            c.err("limits: max_header_bytes >= 8192, and max_headers, header_timeout_ms, keepalive_timeout_ms, send_timeout_ms, request_timeout_ms, max_connections, stream_idle_timeout_ms, max_concurrent_requests_per_client > 0");
        }
    }

    // upstreams
    let mut upstreams = Vec::new();
    let mut names = HashSet::new();
    for u in raw.upstreams {
        let field = format!("upstreams[{}]", u.name);
        if !names.insert(u.name.clone()) {
            c.err(format!("{field}: duplicate upstream name"));
        }
        if u.endpoints.is_empty() {
            c.err(format!(
                "{field}.endpoints: at least one endpoint is required"
            ));
        }
        for e in &u.endpoints {
            let (host, port) = e.rsplit_once(':').unwrap_or((e, ""));
            if host.is_empty() || port.parse::<u16>().is_err() || e.contains('/') {
                c.err(format!("{field}.endpoints: {e:?} is not host:port"));
            }
        }
        let tls = u.tls.map(|t| UpstreamTls {
            ca_file: c.file(&format!("{field}.tls.ca_file"), &t.ca_file),
            server_name: t.server_name,
            client_cert: match (t.client_cert_file, t.client_key_file) {
                (Some(cf), Some(kf)) => Some((
                    c.file(&format!("{field}.tls.client_cert_file"), &cf),
                    c.file(&format!("{field}.tls.client_key_file"), &kf),
                )),
                (None, None) => None,
                _ => {
                    c.err(format!(
                        "{field}.tls: client_cert_file and client_key_file go together"
                    ));
                    None
                }
            },
        });
        upstreams.push(UpstreamConfig {
            name: u.name,
            endpoints: u.endpoints,
            connect_timeout: Duration::from_millis(u.connect_timeout_ms.unwrap_or(2000)),
            request_timeout: Duration::from_millis(u.request_timeout_ms.unwrap_or(30_000)),
            max_fails: u.max_fails.unwrap_or(3),
            fail_timeout: Duration::from_secs(u.fail_timeout_s.unwrap_or(10)),
            max_idle_connections: u.max_idle_connections.unwrap_or(64),
            tls,
        });
    }

    // issuers
    let mut issuers = Vec::new();
    let mut issuer_names = HashSet::new();
    let mut opaque_issuers = 0;
    for i in raw.issuers {
        let field = format!("issuers[{}]", i.name);
        if !issuer_names.insert(i.name.clone()) {
            c.err(format!("{field}: duplicate issuer name"));
        }
        if i.algorithms.is_empty() {
            c.err(format!(
                "{field}.algorithms: an explicit algorithm allowlist is required"
            ));
        }
        for a in &i.algorithms {
            if !ALGS.contains(&a.as_str()) {
                c.err(format!(
                    "{field}.algorithms: {a:?} is not one of {}",
                    ALGS.join(", ")
                ));
            }
        }
        let hs = i.algorithms.iter().any(|a| a == "HS256");
        let asym = i.algorithms.iter().any(|a| a != "HS256");
        if hs && asym {
            c.err(format!(
                "{field}.algorithms: HS256 cannot be mixed with public-key algorithms in one issuer"
            ));
        }
        if i.audiences.is_empty() {
            c.err(format!(
                "{field}.audiences: at least one audience is required"
            ));
        }
        let leeway = i.leeway_s.unwrap_or(30);
        if leeway > 60 {
            c.err(format!("{field}.leeway_s: at most 60 seconds"));
        }
        let keys = match (&i.jwks_url, &i.jwks_file, hs) {
            (Some(u), None, false) => {
                if !(u.starts_with("https://")
                    || u.starts_with("http://127.0.0.1")
                    || u.starts_with("http://localhost"))
                {
                    c.err(format!(
                        "{field}.jwks_url: must be https:// (plain http only on loopback)"
                    ));
                }
                Some(IssuerKeys::JwksUrl {
                    url: u.clone(),
                    refresh: Duration::from_secs(i.jwks_refresh_s.unwrap_or(300)),
                })
            }
            (None, Some(f), false) => Some(IssuerKeys::JwksFile(
                c.file(&format!("{field}.jwks_file"), f),
            )),
            (None, None, true) => c
                .secret(
                    &format!("{field}.hs256_secret"),
                    &i.hs256_secret_file,
                    &i.hs256_secret_env,
                    32,
                )
                .map(IssuerKeys::Hs256),
            (_, _, true) => {
                c.err(format!(
                    "{field}: HS256 issuers take hs256_secret_file or hs256_secret_env, not a JWKS"
                ));
                None
            }
            _ => {
                c.err(format!(
                    "{field}: exactly one of jwks_url or jwks_file is required"
                ));
                None
            }
        };
        let introspection = i.introspection.and_then(|t| {
            let f = format!("{field}.introspection");
            if !reqwest::Url::parse(&t.url).is_ok_and(|u| palisade_jwt::url_is_acceptable(&u)) {
                c.err(format!(
                    "{f}.url: must be https:// (plain http only on loopback)"
                ));
            }
            if t.client_id.is_empty() {
                c.err(format!("{f}.client_id: required"));
            }
            let cache = t.cache_s.unwrap_or(10);
            if cache > 300 {
                c.err(format!("{f}.cache_s: at most 300 seconds"));
            }
            if t.opaque_tokens {
                opaque_issuers += 1;
            }
            if t.opaque_tokens && opaque_issuers > 1 {
                c.err(format!(
                    "{f}.opaque_tokens: only one issuer may introspect opaque tokens"
                ));
            }
            let ca_file = t.ca_file.map(|p| c.file(&format!("{f}.ca_file"), &p));
            let secret = c.secret(
                &format!("{f}.client_secret"),
                &t.client_secret_file,
                &t.client_secret_env,
                1,
            )?;
            Some(IntrospectionSpec {
                url: t.url,
                client_id: t.client_id,
                client_secret: secret,
                cache: Duration::from_secs(cache.min(300)),
                ca_file,
                opaque_tokens: t.opaque_tokens,
            })
        });
        if let Some(keys) = keys {
            issuers.push(IssuerSpec {
                name: i.name,
                issuer: i.issuer,
                audiences: i.audiences,
                algorithms: i.algorithms,
                keys,
                leeway: Duration::from_secs(leeway.min(60)),
                roles_claim: i.roles_claim.unwrap_or_else(|| "roles".into()),
                introspection,
            });
        }
    }

    // the JWT crate's own checks (duplicate issuers, URL rules, refresh...), so
    // `config check` reports what start-up would refuse
    if !issuers.is_empty()
        && let Err(e) = palisade_jwt::check(&jwt_issuers(&issuers))
    {
        c.err(format!("issuers: {e}"));
    }

    let has_palisade = raw.palisade.is_some();
    let apikeys = raw.apikeys.and_then(|a| {
        let pepper = c.secret("apikeys.pepper", &a.pepper_file, &a.pepper_env, 32)?;
        let header = a
            .header
            .unwrap_or_else(|| "x-api-key".into())
            .to_ascii_lowercase();
        if !valid_header_name(&header) {
            c.err("apikeys.header: not a valid header name");
        }
        let store = match a.store.as_deref().unwrap_or("sqlite") {
            "sqlite" => {
                if a.kv_mount.is_some() || a.kv_path.is_some() {
                    c.err("apikeys: kv_mount and kv_path are for store = \"palisade\"");
                }
                let Some(db) = &a.database else {
                    c.err("apikeys.database: required (or store = \"palisade\")");
                    return None;
                };
                ApiKeysStore::Sqlite(c.path(db))
            }
            "palisade" => {
                if a.database.is_some() {
                    c.err("apikeys.database: not used with store = \"palisade\"");
                }
                if !has_palisade {
                    c.err("apikeys: store = \"palisade\" needs a [palisade] section");
                }
                let mount = a.kv_mount.unwrap_or_else(|| "secret".into());
                if !path_name(&mount) {
                    c.err("apikeys.kv_mount: letters, digits, -, _, . and / between segments");
                }
                let Some(path) = a.kv_path else {
                    c.err("apikeys.kv_path: required with store = \"palisade\"");
                    return None;
                };
                if !path_name(&path) {
                    c.err("apikeys.kv_path: letters, digits, -, _, . and / between segments");
                }
                ApiKeysStore::Palisade { mount, path }
            }
            other => {
                c.err(format!(
                    "apikeys.store: {other:?} is not \"sqlite\" or \"palisade\""
                ));
                return None;
            }
        };
        Some(ApiKeysConfig {
            store,
            pepper,
            header,
        })
    });

    let ratelimit = {
        let r = raw.ratelimit.unwrap_or(RawRateLimit {
            store: None,
            redis_url: None,
            redis_url_env: None,
            on_store_failure: None,
            redis_timeout_ms: None,
            peer: None,
        });
        let on_failure = match r.on_store_failure.as_deref().unwrap_or("local_fallback") {
            "local_fallback" => FailMode::LocalFallback,
            "dangerous_fail_open" => FailMode::FailOpen,
            "fail_closed" => FailMode::FailClosed,
            "fail_open" => {
                c.err("ratelimit.on_store_failure: \"fail_open\" disables rate limiting when Redis is down; spell it \"dangerous_fail_open\" to confirm");
                FailMode::FailOpen
            }
            other => {
                c.err(format!("ratelimit.on_store_failure: {other:?} is not local_fallback, fail_closed or dangerous_fail_open"));
                FailMode::LocalFallback
            }
        };
        let store = match r.store.as_deref().unwrap_or("local") {
            "local" => RateStore::Local,
            "redis" => {
                let url = c.redis_url("ratelimit", r.redis_url, r.redis_url_env);
                let ms = r.redis_timeout_ms.unwrap_or(50);
                if !(1..=10_000).contains(&ms) {
                    c.err("ratelimit.redis_timeout_ms: must be between 1 and 10000");
                }
                RateStore::Redis {
                    url,
                    on_failure,
                    timeout: Duration::from_millis(ms),
                }
            }
            other => {
                c.err(format!(
                    "ratelimit.store: {other:?} is not \"local\" or \"redis\""
                ));
                RateStore::Local
            }
        };
        let peer = r
            .peer
            .and_then(|q| c.quota("ratelimit.peer", q.limit, q.period_s, q.burst));
        RateLimitConfig { store, peer }
    };

    let (policies, policy_file) = match raw.authorization {
        None => {
            c.err("authorization.policy_file: required (the gateway denies by default; write the policies that allow)");
            (String::new(), PathBuf::new())
        }
        Some(a) => {
            let p = c.file("authorization.policy_file", &a.policy_file);
            match std::fs::read_to_string(&p) {
                Ok(t) => {
                    if let Err(e) = crate::steps::authz::Authorizer::new(&t) {
                        c.err(format!("authorization.policy_file: {e}"));
                    }
                    (t, p)
                }
                Err(_) => (String::new(), p),
            }
        }
    };

    // routes
    let upstream_names: HashSet<String> = upstreams.iter().map(|u| u.name.clone()).collect();
    let mut routes = Vec::new();
    let mut route_names = HashSet::new();
    // CRS is loaded once per paranoia level the routes use
    let crs_dir = raw.waf.as_ref().map(|w| c.path(&w.crs_dir));
    // CRS refuses methods outside tx.allowed_methods (911100); its default,
    // GET HEAD POST OPTIONS, would refuse every REST update. Routes already
    // restrict methods (`methods`), so the gateway's default adds PUT,
    // PATCH and DELETE.
    let allowed_methods = raw
        .waf
        .as_ref()
        .and_then(|w| w.allowed_methods.clone())
        .unwrap_or_else(|| {
            ["GET", "HEAD", "POST", "OPTIONS", "PUT", "PATCH", "DELETE"]
                .map(String::from)
                .to_vec()
        });
    if allowed_methods.is_empty()
        || allowed_methods
            .iter()
            .any(|m| m.is_empty() || m.len() > 32 || !m.bytes().all(|b| b.is_ascii_uppercase()))
    {
        c.err("waf.allowed_methods: method names in capitals (GET, POST, ...), at least one");
    }
    let mut crs_before = vec![(
        "[waf] allowed_methods".to_string(),
        format!(
            "SecAction \"id:900200,phase:1,pass,t:none,nolog,setvar:'tx.allowed_methods={}'\"\n",
            allowed_methods.join(" ")
        ),
    )];
    // the operator's own rule files around CRS (exclusions, tuning), read
    // now: each is named by its path in load errors
    let mut crs_after = Vec::new();
    let mut tuning_files: std::collections::HashMap<String, &str> =
        std::collections::HashMap::new();
    if let Some(w) = &raw.waf {
        for (field, files, into) in [
            ("waf.before_crs", &w.before_crs, &mut crs_before),
            ("waf.after_crs", &w.after_crs, &mut crs_after),
        ] {
            for f in files.iter().flatten() {
                let path = c.path(f);
                match std::fs::read_to_string(&path) {
                    Ok(text) => {
                        let name = path.display().to_string();
                        // checked now, whether or not a route runs CRS
                        if let Err(e) = palisade_waf::crs::check_tuning(&name, &text) {
                            c.err(format!("{field}: {e}"));
                            continue;
                        }
                        tuning_files.insert(name.clone(), field);
                        into.push((name, text));
                    }
                    Err(e) => c.err(format!("{field}: {}: cannot read: {e}", path.display())),
                }
            }
        }
    }
    // each OpenAPI document is loaded once, however many routes name it
    let mut openapi_docs: std::collections::HashMap<
        PathBuf,
        std::sync::Arc<palisade_openapi::Spec>,
    > = std::collections::HashMap::new();
    let mut crs_sets: std::collections::HashMap<u8, std::sync::Arc<palisade_waf::RuleSet>> =
        std::collections::HashMap::new();
    if raw.routes.is_empty() {
        c.err("routes: at least one [[routes]] entry is required");
    }
    for r in raw.routes {
        let field = format!("routes[{}]", r.name);
        if !route_names.insert(r.name.clone()) {
            c.err(format!("{field}: duplicate route name"));
        }
        if !r.path_prefix.starts_with('/')
            || r.path_prefix.contains("//")
            || r.path_prefix.split('/').any(|s| s == "." || s == "..")
        {
            c.err(format!(
                "{field}.path_prefix: must start with / and be normalised"
            ));
        }
        if !upstream_names.contains(&r.upstream) {
            c.err(format!(
                "{field}.upstream: no upstream named {:?}",
                r.upstream
            ));
        }
        let methods: Vec<String> = r.methods.iter().map(|m| m.to_ascii_uppercase()).collect();
        for m in &methods {
            if !METHODS.contains(&m.as_str()) {
                c.err(format!(
                    "{field}.methods: {m:?} is not one of {}",
                    METHODS.join(", ")
                ));
            }
        }
        let mut authn = Vec::new();
        for a in &r.authn {
            match a.as_str() {
                "jwt" => {
                    if issuers.is_empty() && issuer_names.is_empty() {
                        c.err(format!(
                            "{field}.authn: \"jwt\" needs at least one [[issuers]] entry"
                        ));
                    }
                    authn.push(AuthnMethod::Jwt)
                }
                "apikey" => {
                    if apikeys.is_none() {
                        c.err(format!(
                            "{field}.authn: \"apikey\" needs an [apikeys] section"
                        ));
                    }
                    authn.push(AuthnMethod::ApiKey)
                }
                "mtls" => {
                    let any_client_auth = listeners.iter().any(|l| {
                        matches!(
                            &l.kind,
                            ListenerKind::Https {
                                client_auth: Some(_),
                                ..
                            }
                        )
                    });
                    if !any_client_auth {
                        c.err(format!(
                            "{field}.authn: \"mtls\" needs a listener with [listeners.client_auth]"
                        ));
                    }
                    authn.push(AuthnMethod::PeerCert)
                }
                other => c.err(format!(
                    "{field}.authn: {other:?} is not jwt, apikey or mtls"
                )),
            }
        }
        let crs_mode = match r.crs.as_deref() {
            None | Some("off") => None,
            Some("detect") => Some(InspectionMode::Detect),
            Some("block") => Some(InspectionMode::Block),
            Some(other) => {
                c.err(format!(
                    "{field}.crs: {other:?} is not \"off\", \"detect\" or \"block\""
                ));
                None
            }
        };
        let paranoia = r.crs_paranoia.unwrap_or(1);
        if !(1..=4).contains(&paranoia) {
            c.err(format!("{field}.crs_paranoia: 1 to 4"));
        }
        let crs_response = match r.crs_response.as_deref() {
            None | Some("off") => InspectionMode::Off,
            Some("detect") => InspectionMode::Detect,
            Some("block") => InspectionMode::Block,
            Some(other) => {
                c.err(format!(
                    "{field}.crs_response: {other:?} is not \"off\", \"detect\" or \"block\""
                ));
                InspectionMode::Off
            }
        };
        if crs_response != InspectionMode::Off && crs_mode.is_none() {
            c.err(format!(
                "{field}.crs_response: needs crs = \"detect\" or \"block\" on the route (the response phases continue what the request phases began)"
            ));
        }
        let crs = match (crs_mode, &crs_dir) {
            (None, _) => None,
            (Some(_), None) => {
                c.err(format!("{field}.crs: needs [waf] crs_dir"));
                None
            }
            (Some(mode), Some(dir)) if (1..=4).contains(&paranoia) => {
                let rules = match crs_sets.get(&paranoia) {
                    Some(set) => Some(std::sync::Arc::clone(set)),
                    None => {
                        let opts = palisade_waf::crs::CrsOptions {
                            paranoia,
                            before_rules: crs_before.clone(),
                            after_rules: crs_after.clone(),
                            ..Default::default()
                        };
                        match palisade_waf::crs::load(dir, &opts) {
                            Ok(set) => {
                                let set = std::sync::Arc::new(set);
                                crs_sets.insert(paranoia, std::sync::Arc::clone(&set));
                                Some(set)
                            }
                            Err(e) => {
                                // the field of the tuning file at fault: the
                                // one the error is in, or the one it names (a
                                // rule id CRS also uses: "first at <file>:<line>")
                                let text = e.to_string();
                                let field = e
                                    .file
                                    .as_deref()
                                    .and_then(|f| tuning_files.get(f))
                                    .or_else(|| {
                                        tuning_files
                                            .iter()
                                            .filter(|(f, _)| {
                                                text.contains(&format!("(first at {f}:"))
                                            })
                                            .max_by_key(|(f, _)| f.len())
                                            .map(|(_, field)| field)
                                    })
                                    .copied()
                                    .unwrap_or("waf.crs_dir");
                                c.err(format!("{field}: {e}"));
                                None
                            }
                        }
                    }
                };
                rules.map(|rules| Crs {
                    mode,
                    paranoia,
                    response: crs_response,
                    rules,
                })
            }
            _ => None,
        };
        let anonymous = r.anonymous.unwrap_or(false);
        let mut inspection = Inspection::default();
        match r.inspection.as_deref() {
            None | Some("block") => {}
            Some("detect") => inspection.mode = InspectionMode::Detect,
            Some("off") => inspection.mode = InspectionMode::Off,
            Some(other) => c.err(format!(
                "{field}.inspection: {other:?} is not \"off\", \"detect\" or \"block\""
            )),
        }
        match r.inspection_max_depth {
            None => {}
            // serde_json refuses 128 levels by itself
            Some(d @ 1..=127) => inspection.limits.max_depth = d,
            Some(_) => c.err(format!("{field}.inspection_max_depth: 1 to 127")),
        }
        match r.inspection_max_members {
            None => {}
            Some(n @ 1..=1_000_000) => inspection.limits.max_members = n,
            Some(_) => c.err(format!("{field}.inspection_max_members: 1 to 1000000")),
        }
        if authn.is_empty() && !anonymous {
            c.err(format!(
                "{field}: set authn (jwt, apikey, mtls) or anonymous = true explicitly"
            ));
        }
        for i in &r.jwt_issuers {
            if !issuer_names.contains(i) {
                c.err(format!("{field}.jwt_issuers: no issuer named {i:?}"));
            }
        }
        let ratelimit = r.ratelimit.as_ref().and_then(|rl| {
            let per = match rl.per.as_deref().unwrap_or("principal") {
                "principal" => LimitKey::Principal,
                "ip" => LimitKey::Ip,
                "route" => LimitKey::Route,
                "apikey" => LimitKey::ApiKey,
                other => {
                    c.err(format!(
                        "{field}.ratelimit.per: {other:?} is not principal, ip, route or apikey"
                    ));
                    LimitKey::Principal
                }
            };
            c.quota(
                &format!("{field}.ratelimit"),
                rl.limit,
                rl.period_s,
                rl.burst,
            )
            .map(|q| (q, per))
        });
        let mut consumer_limits = BTreeMap::new();
        for (consumer, q) in &r.consumer_limits {
            if let Some(q) = c.quota(
                &format!("{field}.consumer_limits.{consumer}"),
                q.limit,
                q.period_s,
                q.burst,
            ) {
                consumer_limits.insert(consumer.clone(), q);
            }
        }
        let mut forward = Vec::new();
        for (h, claim) in &r.forward_identity {
            let hl = h.to_ascii_lowercase();
            match hyper::header::HeaderName::from_bytes(hl.as_bytes()) {
                Ok(name) if valid_header_name(&hl) => forward.push((name, claim.clone())),
                _ => c.err(format!(
                    "{field}.forward_identity: {h:?} is not a valid header name"
                )),
            }
        }
        let cors = r.cors.map(|cors| {
            if cors.allowed_origins.iter().any(|o| o == "*")
                && cors.allow_credentials.unwrap_or(false)
            {
                c.err(format!(
                    "{field}.cors: allow_credentials cannot be combined with the \"*\" origin"
                ));
            }
            Cors {
                allowed_origins: cors.allowed_origins,
                allowed_methods: if cors.allowed_methods.is_empty() {
                    vec!["GET".into(), "POST".into()]
                } else {
                    cors.allowed_methods
                },
                allowed_headers: cors.allowed_headers,
                max_age: cors.max_age_s,
                allow_credentials: cors.allow_credentials.unwrap_or(false),
            }
        });
        let openapi_mode = match r.openapi_mode.as_deref() {
            None | Some("block") => InspectionMode::Block,
            Some("report_only") => InspectionMode::Detect,
            Some(other) => {
                c.err(format!(
                    "{field}.openapi_mode: {other:?} is not \"block\" or \"report_only\""
                ));
                InspectionMode::Block
            }
        };
        if r.openapi.is_none() && r.openapi_mode.is_some() {
            c.err(format!("{field}.openapi_mode: needs openapi"));
        }
        let openapi = r.openapi.as_ref().and_then(|f| {
            let file = c.path(f);
            let spec = match openapi_docs.get(&file) {
                Some(spec) => std::sync::Arc::clone(spec),
                None => {
                    let loaded = std::fs::read_to_string(&file)
                        .map_err(|e| e.to_string())
                        .and_then(|t| palisade_openapi::Spec::parse(&t).map_err(|e| e.0));
                    match loaded {
                        Ok(spec) => {
                            let spec = std::sync::Arc::new(spec);
                            openapi_docs.insert(file.clone(), std::sync::Arc::clone(&spec));
                            spec
                        }
                        Err(e) => {
                            c.err(format!("{field}.openapi: {}: {e}", file.display()));
                            return None;
                        }
                    }
                }
            };
            Some(OpenApi {
                mode: openapi_mode,
                spec,
            })
        });
        let hosts: Vec<String> = r.hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
        // requests are matched on their canonical host (no port, no trailing
        // dot): a route host in another form would never match, and its
        // requests would fall through to a route without that restriction
        for h in &hosts {
            let name = h.strip_prefix("*.").unwrap_or(h);
            let literal = name.len() > 2 && name.starts_with('[') && name.ends_with(']');
            let canonical = literal
                || !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                    && !name.starts_with('.')
                    && !name.ends_with('.')
                    && !name.contains("..");
            if !canonical {
                c.err(format!(
                    "{field}.hosts: {h:?} is not a host name as requests are matched (lowercase letters, digits, '-' and '.', optionally \"*.\" first; no port, no trailing dot)"
                ));
            }
        }
        routes.push(RouteConfig {
            name: r.name,
            hosts,
            path_prefix: r.path_prefix,
            methods,
            upstream: r.upstream,
            authn,
            anonymous,
            jwt_issuers: r.jwt_issuers,
            ratelimit,
            consumer_limits,
            max_body_bytes: r.max_body_bytes,
            forward_identity: forward,
            cors,
            content_security_policy: r.content_security_policy,
            pass_upstream_errors: r.pass_upstream_errors.unwrap_or(false),
            strip_prefix: r.strip_prefix.unwrap_or(false),
            request_timeout: r.request_timeout_ms.map(Duration::from_millis),
            inspection,
            crs,
            openapi,
        });
    }

    let log_level = raw.log_level.unwrap_or_else(|| "info".into());
    if !matches!(
        log_level.as_str(),
        "trace" | "debug" | "info" | "warn" | "error"
    ) {
        c.err(format!(
            "log_level: {log_level:?} is not one of trace, debug, info, warn, error"
        ));
    }

    let log_format = match raw.log_format.as_deref().unwrap_or("palisade") {
        "palisade" => crate::ops::log::LogFormat::Palisade,
        "ecs" => crate::ops::log::LogFormat::Ecs,
        other => {
            c.err(format!(
                "log_format: {other:?} is not \"palisade\" or \"ecs\""
            ));
            crate::ops::log::LogFormat::Palisade
        }
    };

    // a file that need not exist yet, in a directory that must
    let security_log_file = raw.security_log_file.as_deref().map(|f| {
        let p = c.path(f);
        if !p.parent().is_some_and(|d| d.is_dir()) || p.is_dir() {
            c.err(format!(
                "security_log_file: {} is not a file in an existing directory",
                p.display()
            ));
        }
        p
    });

    let mut trusted_proxies = Vec::new();
    for (i, t) in raw.trusted_proxies.iter().enumerate() {
        match crate::steps::client_ip::Cidr::parse(t) {
            Some(cidr) => trusted_proxies.push(cidr),
            None => c.err(format!(
                "trusted_proxies[{i}]: {t:?} is not an IP address or CIDR range"
            )),
        }
    }

    let ids = raw.ids.map(|r| ids(&mut c, r));
    let syslog = raw.syslog.map(|r| syslog(&mut c, r));
    let otlp = raw.otlp.map(|r| otlp(&mut c, r));
    let palisade = raw.palisade.map(|r| palisade(&mut c, r));

    if !c.errs.is_empty() {
        return Err(ConfigErrors(c.errs));
    }
    Ok(GatewayConfig {
        listeners,
        admin,
        limits,
        upstreams,
        issuers,
        apikeys,
        ratelimit,
        policies,
        policy_file,
        routes,
        log_level,
        log_format,
        security_log_file,
        trusted_proxies,
        ids,
        syslog,
        otlp,
        palisade,
    })
}

/// A mount or role name as it goes into a URL path: segments of letters,
/// digits, `-`, `_`, `.`, no empty or dot segments.
fn path_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
}

/// `[palisade]`: the server's address (https, or http to loopback), how the
/// gateway logs in (a token file or AppRole), the certificates it keeps.
fn palisade(c: &mut Ctx<'_>, r: RawPalisade) -> crate::ops::palisade::PalisadeConfig {
    use crate::ops::palisade::{Auth, ManagedCert, PalisadeConfig};
    let address = r.address.trim_end_matches('/').to_string();
    match reqwest::Url::parse(&address) {
        Ok(u)
            if palisade_jwt::url_is_acceptable(&u)
                && u.username().is_empty()
                && u.password().is_none()
                && u.query().is_none()
                && u.path() == "/" => {}
        _ => c.err("palisade.address: must be https://host[:port] (plain http only to a loopback host), without a path"),
    }
    let ca_file = r.ca_file.map(|f| c.file("palisade.ca_file", &f));
    let auth = match (r.token_file, r.approle) {
        (Some(t), None) => Auth::TokenFile(c.file("palisade.token_file", &t)),
        (None, Some(a)) => {
            let mount = a.mount.unwrap_or_else(|| "approle".into());
            if !path_name(&mount) {
                c.err("palisade.approle.mount: letters, digits, -, _, . and / between segments");
            }
            Auth::AppRole {
                mount,
                role_id_file: c.file("palisade.approle.role_id_file", &a.role_id_file),
                secret_id_file: c.file("palisade.approle.secret_id_file", &a.secret_id_file),
            }
        }
        _ => {
            c.err("palisade: exactly one of token_file or [palisade.approle] is required");
            Auth::TokenFile(PathBuf::new())
        }
    };
    let mut seen = HashSet::new();
    let certificates = r
        .certificates
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let field = format!("palisade.certificates[{i}]");
            let mount = m.mount.unwrap_or_else(|| "pki".into());
            if !path_name(&mount) {
                c.err(format!(
                    "{field}.mount: letters, digits, -, _, . and / between segments"
                ));
            }
            if !path_name(&m.role) || m.role.contains('/') {
                c.err(format!("{field}.role: letters, digits, -, _ and ."));
            }
            if m.common_name.is_empty() {
                c.err(format!("{field}.common_name: required"));
            }
            let (cert_file, key_file) = (c.path(&m.cert_file), c.path(&m.key_file));
            for (what, p) in [("cert_file", &cert_file), ("key_file", &key_file)] {
                if !seen.insert(p.clone()) {
                    c.err(format!(
                        "{field}.{what}: {} is written by another entry",
                        p.display()
                    ));
                }
                if !p.parent().is_some_and(Path::is_dir) {
                    c.err(format!(
                        "{field}.{what}: the directory of {} does not exist",
                        p.display()
                    ));
                }
            }
            ManagedCert {
                mount,
                role: m.role,
                common_name: m.common_name,
                alt_names: m.alt_names,
                ip_sans: m.ip_sans,
                uri_sans: m.uri_sans,
                ttl: m.ttl,
                cert_file,
                key_file,
            }
        })
        .collect();
    PalisadeConfig {
        address,
        ca_file,
        auth,
        certificates,
    }
}

/// `[otlp]`: an `https` endpoint with its CA file (or `http` with
/// `dangerous_plaintext = true`), an optional client certificate pair.
fn otlp(c: &mut Ctx<'_>, r: RawOtlp) -> crate::ops::otlp::OtlpConfig {
    // the URL as written has a host (`https:///v1/logs` parses as host
    // `v1`), no user info, query or fragment (they would be logged: an API
    // key in a query string would reach the operational log)
    let written_host = r
        .endpoint
        .split_once("://")
        .is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with('/'));
    let mut endpoint = r.endpoint.clone();
    let scheme = match reqwest::Url::parse(&r.endpoint) {
        Ok(u)
            if written_host
                && u.host_str().is_some()
                && u.username().is_empty()
                && u.password().is_none()
                && u.query().is_none()
                && u.fragment().is_none() =>
        {
            // a collector's base URL gets OTLP's logs path, as the
            // OpenTelemetry exporters' `endpoint` does
            if u.path() == "/" {
                let mut u = u.clone();
                u.set_path("/v1/logs");
                endpoint = u.to_string();
            }
            u.scheme().to_string()
        }
        _ => {
            c.err(format!(
                "otlp.endpoint: {:?} is not an http(s) URL with a host (and no user info, query or fragment)",
                r.endpoint
            ));
            String::new()
        }
    };
    match (scheme.as_str(), &r.ca_file, r.dangerous_plaintext) {
        ("https", Some(_), false) | ("http", None, true) | ("", _, _) => {}
        ("https", None, _) => c.err("otlp.ca_file: required for an https endpoint"),
        ("https", Some(_), true) => {
            c.err("otlp.dangerous_plaintext: the endpoint is https; remove it")
        }
        ("http", _, false) => c.err(
            "otlp.endpoint: http sends security events in clear text; use https, or set dangerous_plaintext = true",
        ),
        ("http", Some(_), true) => c.err("otlp.ca_file: an http endpoint has no TLS"),
        (other, _, _) => c.err(format!("otlp.endpoint: scheme {other:?} is not http or https")),
    }
    if (r.client_cert_file.is_some() || r.client_key_file.is_some()) && scheme == "http" {
        c.err("otlp: a client certificate needs an https endpoint");
    }
    let service_name = r.service_name.unwrap_or_else(|| "palisade-gateway".into());
    if service_name.is_empty() {
        c.err("otlp.service_name: empty");
    }
    let timeout_ms = r.timeout_ms.unwrap_or(10_000);
    if !(100..=120_000).contains(&timeout_ms) {
        c.err(format!(
            "otlp.timeout_ms: {timeout_ms} is not between 100 and 120000"
        ));
    }
    crate::ops::otlp::OtlpConfig {
        endpoint,
        ca_file: r.ca_file.map(|f| c.file("otlp.ca_file", &f)),
        client_cert: match (r.client_cert_file, r.client_key_file) {
            (Some(cf), Some(kf)) => Some((
                c.file("otlp.client_cert_file", &cf),
                c.file("otlp.client_key_file", &kf),
            )),
            (None, None) => None,
            _ => {
                c.err("otlp: client_cert_file and client_key_file go together".to_string());
                None
            }
        },
        service_name,
        hostname: r.hostname,
        timeout: Duration::from_millis(timeout_ms),
    }
}

/// `[syslog]`: a `host:port`, the CA file, an optional client certificate
/// pair, a facility by its RFC 5424 name, header fields in printable ASCII.
fn syslog(c: &mut Ctx<'_>, r: RawSyslog) -> crate::ops::syslog::SyslogConfig {
    // `host:port` or `[v6]:port`; the host an IP address or a DNS name
    let host = match r.address.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok_and(|p| p > 0) => {
            let h = match h.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => Some(v6),
                Some(_) => None,
                None if h.contains([':', '[', ']']) => None,
                None => Some(h),
            };
            h.filter(|h| rustls_pki_types::ServerName::try_from(*h).is_ok())
                .map(str::to_string)
        }
        _ => None,
    };
    let host = host.unwrap_or_else(|| {
        c.err(format!(
            "syslog.address: {:?} is not host:port or [IPv6]:port",
            r.address
        ));
        String::new()
    });
    let max_message_bytes = r
        .max_message_bytes
        .unwrap_or(crate::ops::syslog::DEFAULT_MAX_MESSAGE_BYTES);
    if !(2048..=1 << 20).contains(&max_message_bytes) {
        c.err(format!(
            "syslog.max_message_bytes: {max_message_bytes} is not between 2048 (RFC 5425's minimum) and 1048576"
        ));
    }
    let server_name = r.server_name.unwrap_or(host);
    if !server_name.is_empty()
        && rustls_pki_types::ServerName::try_from(server_name.as_str()).is_err()
    {
        c.err(format!(
            "syslog.server_name: {server_name:?} is not a DNS name or an IP address"
        ));
    }
    let f = r.facility.as_deref().unwrap_or("authpriv");
    let facility = match crate::ops::syslog::FACILITIES.iter().find(|(n, _)| *n == f) {
        Some((_, code)) => *code,
        None => {
            c.err(format!(
                "syslog.facility: {f:?} is not an RFC 5424 facility name (kern, user, auth, authpriv, audit, local0 ... local7, ...)"
            ));
            10
        }
    };
    let printable = |c: &mut Ctx<'_>, field: &str, v: &str, max: usize| {
        if v.is_empty() || v.len() > max || !v.bytes().all(|b| (33..=126).contains(&b)) {
            c.err(format!(
                "syslog.{field}: {v:?} must be 1 to {max} printable ASCII characters without spaces"
            ));
        }
    };
    let app_name = r.app_name.unwrap_or_else(|| "palisade-gateway".into());
    printable(c, "app_name", &app_name, 48);
    if let Some(h) = &r.hostname {
        printable(c, "hostname", h, 255);
    }
    crate::ops::syslog::SyslogConfig {
        address: r.address,
        server_name,
        ca_file: c.file("syslog.ca_file", &r.ca_file),
        client_cert: match (r.client_cert_file, r.client_key_file) {
            (Some(cf), Some(kf)) => Some((
                c.file("syslog.client_cert_file", &cf),
                c.file("syslog.client_key_file", &kf),
            )),
            (None, None) => None,
            _ => {
                c.err("syslog: client_cert_file and client_key_file go together".to_string());
                None
            }
        },
        facility,
        app_name,
        hostname: r.hostname,
        max_message_bytes,
    }
}

/// `[ids]`: every number in range, every list entry an address or range,
/// every weight an event the gateway reports.
fn ids(c: &mut Ctx<'_>, r: RawIds) -> IdsConfig {
    let enforce = match r.mode.as_deref().unwrap_or("block") {
        "block" => true,
        "detect" => false,
        other => {
            c.err(format!(
                "ids.mode: {other:?} is not \"block\" or \"detect\""
            ));
            true
        }
    };
    let d = palisade_ids::Policy::default();
    let secs = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_secs);
    let mut policy = palisade_ids::Policy {
        enforce,
        window: secs(r.window_s, d.window),
        threshold: r.threshold.unwrap_or(d.threshold),
        ban: secs(r.ban_s, d.ban),
        max_ban: secs(r.max_ban_s, d.max_ban),
        strike_memory: secs(r.strike_memory_s, d.strike_memory),
        ..d
    };
    for (name, w) in &r.weights {
        match palisade_ids::Event::parse(name) {
            Some(e) => policy.weights.set(e, *w),
            None => c.err(format!(
                "ids.weights.{name}: not an event (authentication_failure, access_denied, rate_limited, malformed_request, inspection, not_found)"
            )),
        }
    }
    for (field, list, out) in [
        ("allow", &r.allow, &mut policy.allow),
        ("deny", &r.deny, &mut policy.deny),
    ] {
        for (i, t) in list.iter().enumerate() {
            match palisade_ids::Cidr::parse(t) {
                Some(cidr) => out.push(cidr),
                None => c.err(format!(
                    "ids.{field}[{i}]: {t:?} is not an IP address or CIDR range"
                )),
            }
        }
    }
    if let Err(e) = policy.validate() {
        c.err(format!("ids: {e}"));
    }
    let store = match r.store.as_deref().unwrap_or("local") {
        "local" => IdsStore::Local,
        "redis" => {
            let ms = r.redis_timeout_ms.unwrap_or(50);
            if !(10..=5_000).contains(&ms) {
                c.err("ids.redis_timeout_ms: must be between 10 and 5000");
            }
            IdsStore::Redis {
                url: c.redis_url("ids", r.redis_url, r.redis_url_env),
                timeout: Duration::from_millis(ms),
            }
        }
        other => {
            c.err(format!(
                "ids.store: {other:?} is not \"local\" or \"redis\""
            ));
            IdsStore::Local
        }
    };
    let sync_ms = r.sync_interval_ms.unwrap_or(1000);
    if !(100..=60_000).contains(&sync_ms) {
        c.err("ids.sync_interval_ms: must be between 100 and 60000");
    }
    IdsConfig {
        policy,
        store,
        sync_interval: Duration::from_millis(sync_ms),
    }
}

fn alg(name: &str) -> Option<palisade_jwt::Alg> {
    Some(match name {
        "RS256" => palisade_jwt::Alg::RS256,
        "PS256" => palisade_jwt::Alg::PS256,
        "ES256" => palisade_jwt::Alg::ES256,
        "ES384" => palisade_jwt::Alg::ES384,
        "EdDSA" => palisade_jwt::Alg::EdDSA,
        "HS256" => palisade_jwt::Alg::HS256,
        _ => return None,
    })
}

/// The palisade-jwt view of the configured issuers (config validation and
/// the authenticator).
pub fn jwt_issuers(issuers: &[IssuerSpec]) -> Vec<palisade_jwt::IssuerConfig> {
    issuers
        .iter()
        .map(|i| {
            let keys = match &i.keys {
                IssuerKeys::JwksUrl { url, refresh } => palisade_jwt::KeySource::Url {
                    url: url.clone(),
                    refresh: *refresh,
                    min_refetch_interval: std::time::Duration::from_secs(30),
                },
                IssuerKeys::JwksFile(p) => palisade_jwt::KeySource::File(p.clone()),
                IssuerKeys::Hs256(s) => palisade_jwt::KeySource::Hs256Secret(s.clone()),
            };
            let algorithms = i.algorithms.iter().filter_map(|a| alg(a)).collect();
            let mut c = palisade_jwt::IssuerConfig::new(
                i.issuer.clone(),
                i.audiences.clone(),
                algorithms,
                keys,
            );
            c.leeway = i.leeway;
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_none(_: &str) -> Option<String> {
        None
    }

    fn check(body: &str) -> Result<GatewayConfig, ConfigErrors> {
        check_with("", body)
    }

    /// `top`: top-level keys, which TOML wants before the first table.
    fn check_with(top: &str, body: &str) -> Result<GatewayConfig, ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("p.cedar"),
            "permit(principal, action, resource);",
        )
        .unwrap();
        std::fs::write(dir.path().join("jwks.json"), r#"{"keys":[]}"#).unwrap();
        let text = format!(
            "{top}[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"http\"\ndangerous_plaintext = true\n[authorization]\npolicy_file = \"p.cedar\"\n[[upstreams]]\nname = \"app\"\nendpoints = [\"127.0.0.1:1\"]\n{body}"
        );
        parse(
            &text,
            &Env {
                var: &env_none,
                base: dir.path().to_path_buf(),
            },
        )
    }

    const ROUTE: &str =
        "[[routes]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"app\"\nanonymous = true\n";

    #[test]
    fn a_minimal_config_is_valid() {
        let c = check(ROUTE).unwrap();
        assert_eq!(c.routes.len(), 1);
        assert_eq!(c.listeners[0].kind, ListenerKind::DangerousPlaintext);
        assert_eq!(c.ratelimit.store, RateStore::Local);
    }

    #[test]
    fn syslog_needs_an_address_a_ca_and_valid_header_fields() {
        // the test's directory holds p.cedar: a file that exists
        let ok = check(&format!(
            "{ROUTE}[syslog]\naddress = \"siem.example:6514\"\nca_file = \"p.cedar\"\n"
        ))
        .unwrap()
        .syslog
        .unwrap();
        assert_eq!(ok.server_name, "siem.example");
        assert_eq!(ok.facility, 10);
        assert_eq!(ok.app_name, "palisade-gateway");
        assert_eq!(ok.client_cert, None);
        let ip = check(&format!(
            "{ROUTE}[syslog]\naddress = \"[::1]:6514\"\nca_file = \"p.cedar\"\nfacility = \"local3\"\n"
        ))
        .unwrap()
        .syslog
        .unwrap();
        assert_eq!((ip.server_name.as_str(), ip.facility), ("::1", 19));
        let e = check(&format!(
            "{ROUTE}[syslog]\naddress = \"siem.example\"\nca_file = \"missing.pem\"\nfacility = \"security\"\napp_name = \"my app\"\nhostname = \"\"\nclient_cert_file = \"p.cedar\"\n"
        ))
        .unwrap_err();
        // the missing file's message names the test's temporary directory
        let (dir_dependent, exact): (Vec<_>, Vec<_>) =
            e.0.iter().partition(|l| l.starts_with("syslog.ca_file: "));
        assert_eq!(
            exact,
            [
                "syslog.address: \"siem.example\" is not host:port or [IPv6]:port",
                "syslog.facility: \"security\" is not an RFC 5424 facility name (kern, user, auth, authpriv, audit, local0 ... local7, ...)",
                "syslog.app_name: \"my app\" must be 1 to 48 printable ASCII characters without spaces",
                "syslog.hostname: \"\" must be 1 to 255 printable ASCII characters without spaces",
                "syslog: client_cert_file and client_key_file go together",
            ]
        );
        assert_eq!(dir_dependent.len(), 1);
        assert!(dir_dependent[0].ends_with("/missing.pem does not exist or is not a file"));
        for bad in [
            "[[evil]]]:6514",
            "[siem.example]:6514",
            "a:b:6514",
            "siem.example:0",
            ":6514",
        ] {
            let e = check(&format!(
                "{ROUTE}[syslog]\naddress = \"{bad}\"\nca_file = \"p.cedar\"\n"
            ))
            .unwrap_err();
            assert!(
                e.0.contains(&format!(
                    "syslog.address: {bad:?} is not host:port or [IPv6]:port"
                )),
                "{bad}: {e:?}"
            );
        }
        let e = check(&format!(
            "{ROUTE}[syslog]\naddress = \"siem.example:6514\"\nca_file = \"p.cedar\"\nmax_message_bytes = 1024\n"
        ))
        .unwrap_err();
        assert_eq!(
            e.0,
            ["syslog.max_message_bytes: 1024 is not between 2048 (RFC 5425's minimum) and 1048576"]
        );
        let e = check(&format!(
            "{ROUTE}[syslog]\naddress = \"siem.example:6514\"\nca_file = \"p.cedar\"\nserver_name = \"not a name\"\n"
        ))
        .unwrap_err();
        assert_eq!(
            e.0,
            vec![
                "syslog.server_name: \"not a name\" is not a DNS name or an IP address".to_string()
            ]
        );
    }

    #[test]
    fn otlp_needs_https_with_a_ca_or_a_dangerous_plaintext_http() {
        let ok = check(&format!(
            "{ROUTE}[otlp]\nendpoint = \"https://collector:4318/v1/logs\"\nca_file = \"p.cedar\"\n"
        ))
        .unwrap()
        .otlp
        .unwrap();
        assert_eq!(ok.service_name, "palisade-gateway");
        assert_eq!(ok.timeout, Duration::from_secs(10));
        assert!(ok.ca_file.is_some());
        let plain = check(&format!(
            "{ROUTE}[otlp]\nendpoint = \"http://127.0.0.1:4318/v1/logs\"\ndangerous_plaintext = true\n"
        ))
        .unwrap()
        .otlp
        .unwrap();
        assert_eq!(plain.ca_file, None);
        let err = |body: &str| check(&format!("{ROUTE}[otlp]\n{body}")).unwrap_err().0;
        assert_eq!(
            err("endpoint = \"http://collector:4318/v1/logs\"\n"),
            [
                "otlp.endpoint: http sends security events in clear text; use https, or set dangerous_plaintext = true"
            ]
        );
        assert_eq!(
            err("endpoint = \"https://collector:4318/v1/logs\"\n"),
            ["otlp.ca_file: required for an https endpoint"]
        );
        assert_eq!(
            err("endpoint = \"https://u:p@collector/v1/logs\"\nca_file = \"p.cedar\"\n"),
            [
                "otlp.endpoint: \"https://u:p@collector/v1/logs\" is not an http(s) URL with a host (and no user info, query or fragment)"
            ]
        );
        // a query string would be logged (an API key in it, say)
        for bad in [
            "https://collector/v1/logs?api_key=SECRET123",
            "https://collector/v1/logs#x",
            "https:///v1/logs",
        ] {
            assert_eq!(
                err(&format!("endpoint = \"{bad}\"\nca_file = \"p.cedar\"\n")),
                [format!(
                    "otlp.endpoint: {bad:?} is not an http(s) URL with a host (and no user info, query or fragment)"
                )]
            );
        }
        // a collector's base URL gets the logs path
        let base = check(&format!(
            "{ROUTE}[otlp]\nendpoint = \"https://collector:4318\"\nca_file = \"p.cedar\"\n"
        ))
        .unwrap()
        .otlp
        .unwrap();
        assert_eq!(base.endpoint, "https://collector:4318/v1/logs");
        assert_eq!(
            err("endpoint = \"ftp://collector/v1/logs\"\n"),
            ["otlp.endpoint: scheme \"ftp\" is not http or https"]
        );
        assert_eq!(
            err(
                "endpoint = \"http://c/v1/logs\"\ndangerous_plaintext = true\nclient_cert_file = \"p.cedar\"\nclient_key_file = \"p.cedar\"\ntimeout_ms = 5\n"
            ),
            [
                "otlp: a client certificate needs an https endpoint",
                "otlp.timeout_ms: 5 is not between 100 and 120000",
            ]
        );
        assert_eq!(
            err(
                "endpoint = \"https://c/v1/logs\"\nca_file = \"p.cedar\"\ndangerous_plaintext = true\n"
            ),
            ["otlp.dangerous_plaintext: the endpoint is https; remove it"]
        );
    }

    #[test]
    fn trusted_proxies_are_addresses_or_ranges() {
        assert!(check(ROUTE).unwrap().trusted_proxies.is_empty());
        let c = check_with("trusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\"]\n", ROUTE).unwrap();
        assert_eq!(c.trusted_proxies.len(), 2);
        let e = check_with(
            "trusted_proxies = [\"10.0.0.0/33\", \"lb.internal\"]\n",
            ROUTE,
        )
        .unwrap_err();
        assert_eq!(
            e.0,
            vec![
                "trusted_proxies[0]: \"10.0.0.0/33\" is not an IP address or CIDR range"
                    .to_string(),
                "trusted_proxies[1]: \"lb.internal\" is not an IP address or CIDR range"
                    .to_string(),
            ]
        );
    }

    #[test]
    fn keepalive_and_upstream_idle_pool_settings() {
        let c = check(ROUTE).unwrap();
        assert_eq!(c.limits.keepalive_timeout, Duration::from_secs(60));
        assert_eq!(c.limits.send_timeout, Duration::from_secs(60));
        assert_eq!(c.upstreams[0].max_idle_connections, 64);
        let c = check(&format!(
            "max_idle_connections = 8\n{ROUTE}[limits]\nkeepalive_timeout_ms = 5000\nsend_timeout_ms = 7000\n"
        ))
        .unwrap();
        assert_eq!(c.limits.keepalive_timeout, Duration::from_secs(5));
        assert_eq!(c.limits.send_timeout, Duration::from_secs(7));
        let e = check(&format!("{ROUTE}[limits]\nsend_timeout_ms = 0\n")).unwrap_err();
        assert!(e.0[0].contains("send_timeout_ms"), "{e}");
        assert_eq!(c.upstreams[0].max_idle_connections, 8);
        let e = check(&format!("{ROUTE}[limits]\nkeepalive_timeout_ms = 0\n")).unwrap_err();
        assert!(e.0[0].contains("keepalive_timeout_ms"), "{e}");
    }

    #[test]
    fn forward_identity_header_names_are_parsed_at_load() {
        let c = check(&format!(
            "{ROUTE}forward_identity = {{ \"X-User\" = \"sub\", \"x-scopes\" = \"scope\" }}\n"
        ))
        .unwrap();
        let names: Vec<(&str, &str)> = c.routes[0]
            .forward_identity
            .iter()
            .map(|(n, claim)| (n.as_str(), claim.as_str()))
            .collect();
        assert_eq!(names, [("x-user", "sub"), ("x-scopes", "scope")]);
        let e = check(&format!(
            "{ROUTE}forward_identity = {{ \"x user\" = \"sub\" }}\n"
        ))
        .unwrap_err();
        assert_eq!(
            e.0,
            ["routes[r].forward_identity: \"x user\" is not a valid header name"]
        );
    }

    #[test]
    fn route_hosts_are_in_the_form_requests_are_matched_in() {
        let c = check(&format!(
            "{ROUTE}hosts = [\"API.Example\", \"*.example\", \"[::1]\"]\n"
        ))
        .unwrap();
        assert_eq!(c.routes[0].hosts, ["api.example", "*.example", "[::1]"]);
        for bad in ["api.example.", "api.example:443", "a..b", "", "*."] {
            let e = check(&format!("{ROUTE}hosts = [{bad:?}]\n")).unwrap_err();
            assert_eq!(e.0.len(), 1, "{bad:?}: {e}");
            assert!(
                e.0[0].starts_with(&format!("routes[r].hosts: {bad:?} is not a host name")),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn route_inspection_defaults_to_block_and_takes_only_its_values() {
        let c = check(ROUTE).unwrap();
        assert_eq!(c.routes[0].inspection, Inspection::default());
        assert_eq!(c.routes[0].inspection.mode, InspectionMode::Block);
        let c = check(&format!(
            "{ROUTE}inspection = \"detect\"\ninspection_max_depth = 127\ninspection_max_members = 5\n"
        ))
        .unwrap();
        assert_eq!(c.routes[0].inspection.mode, InspectionMode::Detect);
        assert_eq!(c.routes[0].inspection.limits.max_depth, 127);
        assert_eq!(c.routes[0].inspection.limits.max_members, 5);
        for (extra, want) in [
            (
                "inspection = \"bogus\"",
                "routes[r].inspection: \"bogus\" is not \"off\", \"detect\" or \"block\"",
            ),
            (
                "inspection_max_depth = 0",
                "routes[r].inspection_max_depth: 1 to 127",
            ),
            (
                "inspection_max_depth = 128",
                "routes[r].inspection_max_depth: 1 to 127",
            ),
            (
                "inspection_max_members = 0",
                "routes[r].inspection_max_members: 1 to 1000000",
            ),
        ] {
            let e = check(&format!("{ROUTE}{extra}\n")).unwrap_err();
            assert_eq!(e.0, vec![want.to_string()], "{extra}");
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = check(&format!("{ROUTE}bogus = 1\n")).unwrap_err();
        assert!(e.0[0].contains("unknown field `bogus`"), "{e}");
    }

    #[test]
    fn weakening_options_must_say_dangerous() {
        let e = check(&format!("{ROUTE}[ratelimit]\nstore = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\non_store_failure = \"fail_open\"\n")).unwrap_err();
        assert_eq!(
            e.0,
            vec![
                "ratelimit.on_store_failure: \"fail_open\" disables rate limiting when Redis is down; spell it \"dangerous_fail_open\" to confirm"
            ]
        );
        let c = check(&format!("{ROUTE}[ratelimit]\nstore = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\non_store_failure = \"dangerous_fail_open\"\n")).unwrap();
        assert!(matches!(
            c.ratelimit.store,
            RateStore::Redis {
                on_failure: FailMode::FailOpen,
                ..
            }
        ));
        // a route must opt in to anonymous access explicitly
        let e = check("[[routes]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"app\"\n")
            .unwrap_err();
        assert_eq!(
            e.0,
            vec!["routes[r]: set authn (jwt, apikey, mtls) or anonymous = true explicitly"]
        );
    }

    #[test]
    fn secrets_are_never_inline() {
        let e = check(&format!("{ROUTE}[ratelimit]\nstore = \"redis\"\nredis_url = \"redis://user:hunter2@127.0.0.1:6379\"\n")).unwrap_err();
        assert_eq!(
            e.0,
            vec![
                "ratelimit.redis_url: holds a password; put the URL in an environment variable named by redis_url_env"
            ]
        );
        assert!(!e.to_string().contains("hunter2"));
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let body = "[[routes]]\nname = \"m\"\npath_prefix = \"/m\"\nupstream = \"nope\"\nauthn = [\"mtls\", \"saml\"]\nmethods = [\"FETCH\"]\n\
            [[issuers]]\nname = \"a\"\nissuer = \"https://a\"\naudiences = [\"x\"]\nalgorithms = [\"RS256\"]\njwks_file = \"jwks.json\"\nleeway_s = 120\n";
        let e = check(body).unwrap_err();
        assert_eq!(
            e.0,
            vec![
                "issuers[a].leeway_s: at most 60 seconds",
                "routes[m].upstream: no upstream named \"nope\"",
                "routes[m].methods: \"FETCH\" is not one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
                "routes[m].authn: \"mtls\" needs a listener with [listeners.client_auth]",
                "routes[m].authn: \"saml\" is not jwt, apikey or mtls",
            ]
        );
    }

    #[test]
    fn jwt_crate_checks_run_at_config_time() {
        let two = "[[issuers]]\nname = \"a\"\nissuer = \"https://same\"\naudiences = [\"x\"]\nalgorithms = [\"RS256\"]\njwks_file = \"jwks.json\"\n\
            [[issuers]]\nname = \"b\"\nissuer = \"https://same\"\naudiences = [\"x\"]\nalgorithms = [\"RS256\"]\njwks_file = \"jwks.json\"\n";
        let e = check(&format!("{ROUTE}{two}")).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert!(
            e.0[0].starts_with("issuers: invalid JWT issuer configuration:"),
            "{e}"
        );
    }

    #[test]
    fn introspection_settings() {
        let issuer = |name: &str, intro: &str| {
            format!(
                "[[issuers]]\nname = \"{name}\"\nissuer = \"https://{name}\"\naudiences = [\"x\"]\nalgorithms = [\"RS256\"]\njwks_file = \"jwks.json\"\n[issuers.introspection]\n{intro}"
            )
        };
        // allow: https with a secret file, defaults
        let ok = check(&format!("{ROUTE}{}", issuer(
            "a",
            "url = \"https://idp/introspect\"\nclient_id = \"gw\"\nclient_secret_file = \"p.cedar\"\n",
        )))
        .unwrap();
        let t = ok.issuers[0].introspection.as_ref().unwrap();
        assert_eq!((t.cache, t.opaque_tokens), (Duration::from_secs(10), false));
        // deny: plain http off loopback, a long cache, no secret, two opaque issuers
        let e = check(&format!(
            "{ROUTE}{}{}",
            issuer(
                "a",
                "url = \"http://idp/introspect\"\nclient_id = \"\"\ncache_s = 301\nopaque_tokens = true\nclient_secret_env = \"NOPE\"\n"
            ),
            issuer(
                "b",
                "url = \"https://idp/i\"\nclient_id = \"gw\"\nclient_secret_file = \"p.cedar\"\nopaque_tokens = true\nca_file = \"missing.pem\"\n"
            )
        ))
        .unwrap_err();
        let e: Vec<String> =
            e.0.iter()
                .map(|l| l.split(" /").next().unwrap().to_string())
                .collect();
        assert_eq!(
            e,
            vec![
                "issuers[a].introspection.url: must be https:// (plain http only on loopback)",
                "issuers[a].introspection.client_id: required",
                "issuers[a].introspection.cache_s: at most 300 seconds",
                "issuers[a].introspection.client_secret_env: environment variable NOPE is not set",
                "issuers[b].introspection.opaque_tokens: only one issuer may introspect opaque tokens",
                "issuers[b].introspection.ca_file:",
            ]
        );
    }

    #[test]
    fn palisade_settings() {
        // allow: listener files that [palisade] writes need not exist yet
        let body = "[[listeners]]\nname = \"tls\"\naddress = \"127.0.0.1:0\"\ncertificates = [{ cert_file = \"gw.pem\", key_file = \"gw.key\" }]\n\
            [palisade]\naddress = \"https://palisade.internal:8200/\"\ntoken_file = \"p.cedar\"\n\
            [[palisade.certificates]]\nrole = \"gateway\"\ncommon_name = \"api.example.com\"\ncert_file = \"gw.pem\"\nkey_file = \"gw.key\"\n";
        let ok = check(&format!("{ROUTE}{body}")).unwrap();
        let p = ok.palisade.unwrap();
        assert_eq!(p.address, "https://palisade.internal:8200");
        assert_eq!(p.certificates[0].mount, "pki");
        // deny: a listener file nobody writes must exist
        let e = check(&format!(
            "{ROUTE}{}",
            body.replace(
                "cert_file = \"gw.pem\", key",
                "cert_file = \"other.pem\", key"
            )
        ))
        .unwrap_err();
        assert_eq!(e.0.len(), 1, "{e:?}");
        assert!(
            e.0[0].starts_with("listeners[tls].certificates.cert_file: "),
            "{e:?}"
        );
        // deny: every rule at once
        let e = check(&format!(
            "{ROUTE}[palisade]\naddress = \"http://palisade.internal/v1\"\n\
             [[palisade.certificates]]\nmount = \"../sys\"\nrole = \"a/b\"\ncommon_name = \"\"\ncert_file = \"x.pem\"\nkey_file = \"x.pem\"\n"
        ))
        .unwrap_err();
        assert_eq!(
            e.0[..5],
            [
                "palisade.address: must be https://host[:port] (plain http only to a loopback host), without a path",
                "palisade: exactly one of token_file or [palisade.approle] is required",
                "palisade.certificates[0].mount: letters, digits, -, _, . and / between segments",
                "palisade.certificates[0].role: letters, digits, -, _ and .",
                "palisade.certificates[0].common_name: required",
            ]
        );
        assert!(
            e.0[5].starts_with("palisade.certificates[0].key_file: ")
                && e.0[5].ends_with("x.pem is written by another entry"),
            "{e:?}"
        );
    }
}
