//! Server configuration: TOML with Vault's names, parsed in two stages (design
//! rule 10): `Raw*` structs with `deny_unknown_fields`, then `TryFrom` into the
//! typed [`ServerConfig`], collecting every error so `palisade config check`
//! reports them all at once. See docs/server-config.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::http::{DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_REQUEST_SIZE};
use crate::json::JsonLimits;
use crate::listener::ConnLimits;
use crate::token::TtlLimits;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub storage: Option<RawStorage>,
    pub listener: Option<RawListener>,
    pub audit: Option<RawAudit>,
    pub ui: Option<bool>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    /// TTL of a token created without one (Vault's name; default 768h).
    pub default_lease_ttl: Option<String>,
    /// No token outlives this from its creation (Vault's name; default 768h).
    pub max_lease_ttl: Option<String>,
    /// Serve `sys/rekey/*` without a token, as Vault (default: sudo needed).
    pub dangerous_unauthenticated_rekey: Option<bool>,
    /// Serve `sys/generate-root/*` without a token, as Vault (default: sudo needed).
    pub dangerous_unauthenticated_generate_root: Option<bool>,
    /// Where scheduled KV rotation may get new values from.
    pub rotation: Option<RawRotation>,
    /// How clients reach this server, `scheme://host[:port]` (Vault's name;
    /// the default issuer of identity tokens). Default: from the listener.
    pub api_addr: Option<String>,
    /// High availability on PostgreSQL (docs/ha.md).
    pub ha: Option<RawHa>,
}

/// `[ha]`: several servers on one PostgreSQL database, one active.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHa {
    pub enabled: Option<bool>,
    /// How the other nodes (and redirected clients) reach this one;
    /// default: the top-level `api_addr`, which must then be set.
    pub api_addr: Option<String>,
    /// The leadership lease (Vault's 15s).
    pub lease_ttl: Option<String>,
    /// How often the lease is renewed and a standby tries to lead (Vault's 5s).
    pub renew_interval: Option<String>,
    /// What a standby does with a request: "forward" (default) or "redirect".
    pub mode: Option<String>,
    /// PEM CA certificates that verify the other nodes' TLS certificates
    /// when forwarding (default: the system's roots).
    pub tls_ca_file: Option<String>,
}

/// What a standby does with requests it does not answer itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HaMode {
    /// Send them to the active node and relay its answer.
    Forward,
    /// Answer 307 with the active node's address.
    Redirect,
}

/// The validated `[ha]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HaConfig {
    pub api_addr: String,
    pub lease_ttl: Duration,
    pub renew_interval: Duration,
    pub mode: HaMode,
    pub tls_ca_file: Option<PathBuf>,
}

/// Parse an `http(s)://host[:port]` address (no path, query or user).
fn parse_api_addr(a: &str) -> Option<String> {
    match url::Url::parse(a) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && matches!(u.path(), "" | "/")
                && u.query().is_none()
                && u.fragment().is_none()
                && u.username().is_empty()
                && u.password().is_none() =>
        {
            Some(a.trim_end_matches('/').to_string())
        }
        _ => None,
    }
}

fn validate_ha(
    raw: Option<RawHa>,
    top_api_addr: Option<&str>,
    storage: Option<&StorageConfig>,
    errs: &mut Vec<String>,
) -> Option<HaConfig> {
    let raw = raw?;
    if !raw.enabled.unwrap_or(false) {
        return None;
    }
    if matches!(storage, Some(StorageConfig::Sqlite { .. })) {
        errs.push("ha: high availability needs storage backend = \"postgres\"".into());
    }
    let api_addr = match (raw.api_addr.as_deref(), top_api_addr) {
        (Some(a), _) => parse_api_addr(a).unwrap_or_else(|| {
            errs.push(format!(
                "ha.api_addr: {a:?} is not scheme://host[:port] (http or https, no path)"
            ));
            String::new()
        }),
        // an invalid top-level api_addr is reported as such
        (None, Some(a)) => parse_api_addr(a).unwrap_or_default(),
        (None, None) => {
            errs.push(
                "ha.api_addr: required (or the top-level api_addr): how the other nodes reach this one"
                    .into(),
            );
            String::new()
        }
    };
    let mut duration = |name: &str, v: Option<String>, default: Duration| match v {
        None => default,
        Some(s) => match palisade_core::parse_duration(&s) {
            Ok(d) if d >= Duration::from_millis(100) && d <= Duration::from_secs(600) => d,
            _ => {
                errs.push(format!(
                    "ha.{name}: {s:?} is not a duration between 100ms and 10m"
                ));
                default
            }
        },
    };
    let lease_ttl = duration("lease_ttl", raw.lease_ttl, Duration::from_secs(15));
    let renew_interval = duration("renew_interval", raw.renew_interval, Duration::from_secs(5));
    if lease_ttl < Duration::from_secs(1) {
        errs.push("ha.lease_ttl: must be at least 1s".into());
    }
    if renew_interval.saturating_mul(2) > lease_ttl {
        errs.push("ha.renew_interval: must be at most half of ha.lease_ttl".into());
    }
    let mode = match raw.mode.as_deref() {
        None | Some("forward") => HaMode::Forward,
        Some("redirect") => HaMode::Redirect,
        Some(other) => {
            errs.push(format!(
                "ha.mode: {other:?} is not \"forward\" or \"redirect\""
            ));
            HaMode::Forward
        }
    };
    let tls_ca_file = raw.tls_ca_file.map(PathBuf::from);
    if let Some(f) = &tls_ca_file
        && !f.is_file()
    {
        errs.push(format!(
            "ha.tls_ca_file: {:?} does not exist or is not a file",
            f.display()
        ));
    }
    Some(HaConfig {
        api_addr,
        lease_ttl,
        renew_interval,
        mode,
        tls_ca_file,
    })
}

/// `[rotation]`: the producers of new values a KV rotation policy may
/// name. Nothing is allowed unless listed here (an API user must not make
/// the server call arbitrary URLs or run programs).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRotation {
    /// Origins (`https://rotator.internal:8443`) webhooks may be on;
    /// `http://` only for a loopback host.
    pub webhook_origins: Option<Vec<String>>,
    /// Named commands (`name = ["/usr/local/bin/new-key", "--json"]`),
    /// absolute program paths, run without a shell.
    pub commands: Option<std::collections::BTreeMap<String, Vec<String>>>,
}

/// The validated `[rotation]` section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RotationConfig {
    /// ASCII serialisations of the allowed origins (`https://host:port`).
    pub webhook_origins: Vec<String>,
    pub commands: std::collections::BTreeMap<String, Vec<String>>,
}

fn validate_rotation(raw: Option<RawRotation>, errs: &mut Vec<String>) -> RotationConfig {
    let mut out = RotationConfig::default();
    let Some(raw) = raw else {
        return out;
    };
    for o in raw.webhook_origins.unwrap_or_default() {
        match url::Url::parse(&o) {
            Ok(u)
                if (u.scheme() == "https"
                    || (u.scheme() == "http"
                        && matches!(u.host_str(), Some("127.0.0.1" | "[::1]" | "localhost"))))
                    && u.username().is_empty()
                    && u.password().is_none()
                    && (u.path() == "/" || u.path().is_empty())
                    && u.query().is_none()
                    && u.fragment().is_none() =>
            {
                out.webhook_origins.push(u.origin().ascii_serialization());
            }
            _ => errs.push(format!(
                "rotation.webhook_origins: {o:?} is not an https:// origin (scheme, host, port; http:// only for a loopback host)"
            )),
        }
    }
    for (name, argv) in raw.commands.unwrap_or_default() {
        if !crate::token_roles::is_canonical_role_name(&name) {
            errs.push(format!("rotation.commands: invalid command name {name:?}"));
            continue;
        }
        match argv.first() {
            Some(p) if std::path::Path::new(p).is_absolute() => {
                out.commands.insert(name, argv);
            }
            _ => errs.push(format!(
                "rotation.commands.{name}: must be a list starting with an absolute program path"
            )),
        }
    }
    out
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    pub backend: Option<String>,
    pub path: Option<String>,
    pub url: Option<String>,
    /// Name of an environment variable holding the URL (keeps passwords out of the file).
    pub url_env: Option<String>,
    /// A file holding the URL (a mounted Kubernetes Secret, a systemd credential).
    pub url_file: Option<String>,
    pub table: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub address: Option<String>,
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
    pub tls_disable: Option<bool>,
    pub max_request_size: Option<i64>,
    pub max_request_json_strings: Option<i64>,
    pub max_request_json_memory: Option<i64>,
    pub http_read_header_timeout: Option<String>,
    pub http_read_timeout: Option<String>,
    pub http_idle_timeout: Option<String>,
    /// A response that makes no progress for this long ends the connection.
    pub http_send_timeout: Option<String>,
    pub max_connections: Option<i64>,
    pub max_connections_per_ip: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// A `file` audit device at `file/` writing to this path, loaded at every
    /// unseal and never disabled through the API.
    pub file_path: Option<String>,
    /// Directories in which `sys/audit/<name>` may create file devices.
    /// Absent or empty: the API cannot enable audit devices.
    pub dangerous_allow_api_file_devices: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageConfig {
    Sqlite { path: PathBuf },
    Postgres { url: String, table: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tls {
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
    /// Plaintext HTTP, only when the config says `tls_disable = true`.
    Disabled,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    pub tls: Tls,
    pub max_request_size: usize,
    pub json: JsonLimits,
    /// `http_read_timeout`: the whole body must arrive within this.
    pub body_timeout: Duration,
    pub conn: ConnLimits,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    pub storage: StorageConfig,
    pub listener: ListenerConfig,
    pub audit_file: Option<PathBuf>,
    pub api_audit_dirs: Vec<PathBuf>,
    pub ttl: TtlLimits,
    /// `dangerous_unauthenticated_rekey` (default false).
    pub unauthenticated_rekey: bool,
    /// `dangerous_unauthenticated_generate_root` (default false).
    pub unauthenticated_generate_root: bool,
    pub ui: bool,
    pub log_level: String,
    pub log_format: LogFormat,
    pub rotation: RotationConfig,
    /// `api_addr`, validated (or derived from the listener).
    pub api_addr: String,
    /// `[ha] enabled = true`: this server is one node of a cluster.
    pub ha: Option<HaConfig>,
}

/// Every problem found in a configuration, one per line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{}", .0.join("\n"))]
pub struct ConfigErrors(pub Vec<String>);

/// Parse TOML text and validate it, reporting every error found.
/// `env` resolves `url_env` (injected so tests never touch the process environment).
pub fn parse(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ServerConfig, ConfigErrors> {
    let raw: RawConfig =
        toml::from_str(text).map_err(|e| ConfigErrors(vec![e.to_string().trim().to_string()]))?;
    validate(raw, env)
}

pub fn validate(
    raw: RawConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ServerConfig, ConfigErrors> {
    let mut errs = Vec::new();

    let storage = match raw.storage {
        None => {
            errs.push("storage: the [storage] section is required".to_string());
            None
        }
        Some(s) => match s.backend.as_deref() {
            Some("sqlite") | None => {
                if s.url.is_some()
                    || s.url_env.is_some()
                    || s.url_file.is_some()
                    || s.table.is_some()
                {
                    errs.push(
                        "storage: url, url_env, url_file and table apply only to backend = \"postgres\""
                            .into(),
                    );
                }
                match s.path {
                    Some(p) if !p.is_empty() => Some(StorageConfig::Sqlite {
                        path: PathBuf::from(p),
                    }),
                    _ => {
                        errs.push("storage.path: required for backend = \"sqlite\"".into());
                        None
                    }
                }
            }
            Some("postgres") => {
                if s.path.is_some() {
                    errs.push("storage.path: applies only to backend = \"sqlite\"".into());
                }
                let given = [s.url.is_some(), s.url_env.is_some(), s.url_file.is_some()]
                    .iter()
                    .filter(|x| **x)
                    .count();
                let url = match (s.url, s.url_env, s.url_file) {
                    _ if given > 1 => {
                        errs.push("storage: set one of url, url_env or url_file".into());
                        None
                    }
                    (Some(u), _, _) => Some(u),
                    // the file's text is the URL (a trailing newline
                    // dropped); errors never quote it
                    (None, None, Some(f)) => match std::fs::read_to_string(&f) {
                        Ok(t) => {
                            let t = t.trim_end_matches(['\n', '\r']).to_string();
                            if t.is_empty() {
                                errs.push(format!("storage.url_file: {f} is empty"));
                                None
                            } else {
                                Some(t)
                            }
                        }
                        Err(e) => {
                            errs.push(format!("storage.url_file: cannot read {f}: {}", e.kind()));
                            None
                        }
                    },
                    (None, Some(var), _) => match env(&var) {
                        Some(u) => Some(u),
                        None => {
                            errs.push(format!(
                                "storage.url_env: environment variable {var} is not set"
                            ));
                            None
                        }
                    },
                    (None, None, None) => {
                        errs.push(
                            "storage.url: required for backend = \"postgres\" (or url_env, url_file)"
                                .into(),
                        );
                        None
                    }
                };
                if let Some(u) = &url
                    && !(u.starts_with("postgres://") || u.starts_with("postgresql://"))
                {
                    errs.push("storage.url: must start with postgres:// or postgresql://".into());
                }
                let table = s
                    .table
                    .unwrap_or_else(|| palisade_storage::postgres::DEFAULT_TABLE.to_string());
                if table.is_empty() || !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    errs.push(format!(
                        "storage.table: {table:?} is not a plain SQL identifier"
                    ));
                }
                url.map(|url| StorageConfig::Postgres { url, table })
            }
            Some(other) => {
                errs.push(format!("storage.backend: unknown backend {other:?} (expected \"sqlite\" or \"postgres\")"));
                None
            }
        },
    };

    let listener = {
        let l = raw.listener.unwrap_or(RawListener {
            address: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_disable: None,
            max_request_size: None,
            max_request_json_strings: None,
            max_request_json_memory: None,
            http_read_header_timeout: None,
            http_read_timeout: None,
            http_idle_timeout: None,
            http_send_timeout: None,
            max_connections: None,
            max_connections_per_ip: None,
        });
        let address = match l
            .address
            .as_deref()
            .unwrap_or("127.0.0.1:8200")
            .parse::<SocketAddr>()
        {
            Ok(a) => Some(a),
            Err(_) => {
                errs.push(format!(
                    "listener.address: {:?} is not an IP:port address",
                    l.address.unwrap_or_default()
                ));
                None
            }
        };
        let tls = if l.tls_disable.unwrap_or(false) {
            if l.tls_cert_file.is_some() || l.tls_key_file.is_some() {
                errs.push(
                    "listener: tls_cert_file/tls_key_file given but tls_disable = true".into(),
                );
            }
            Some(Tls::Disabled)
        } else {
            match (l.tls_cert_file, l.tls_key_file) {
                (Some(c), Some(k)) => {
                    for (name, p) in [("tls_cert_file", &c), ("tls_key_file", &k)] {
                        if !std::path::Path::new(p).is_file() {
                            errs.push(format!(
                                "listener.{name}: {p:?} does not exist or is not a file"
                            ));
                        }
                    }
                    Some(Tls::Files {
                        cert: c.into(),
                        key: k.into(),
                    })
                }
                _ => {
                    errs.push("listener: TLS is on by default; set tls_cert_file and tls_key_file, or tls_disable = true".into());
                    None
                }
            }
        };
        let max = match l.max_request_size {
            None | Some(0) => Some(DEFAULT_MAX_REQUEST_SIZE),
            Some(n) if n > 0 => Some(n as usize),
            Some(n) => {
                errs.push(format!("listener.max_request_size: {n} must be positive"));
                None
            }
        };
        let mut positive = |name: &str, v: Option<i64>, default: usize| match v {
            None | Some(0) => default,
            Some(n) if n > 0 => n as usize,
            Some(n) => {
                errs.push(format!("listener.{name}: {n} must be positive"));
                default
            }
        };
        let json = JsonLimits {
            max_strings: positive(
                "max_request_json_strings",
                l.max_request_json_strings,
                JsonLimits::DEFAULT.max_strings,
            ),
            max_memory: positive(
                "max_request_json_memory",
                l.max_request_json_memory,
                JsonLimits::DEFAULT.max_memory,
            ),
        };
        let defaults = ConnLimits::default();
        let max_connections = positive(
            "max_connections",
            l.max_connections,
            defaults.max_connections,
        );
        // by default one address may hold at most a quarter of the listener
        let max_connections_per_ip = positive(
            "max_connections_per_ip",
            l.max_connections_per_ip,
            defaults
                .max_connections_per_ip
                .min((max_connections / 4).max(1)),
        );
        let mut duration = |name: &str, v: Option<String>, default: Duration| match v {
            None => default,
            Some(s) => match palisade_core::parse_duration(&s) {
                Ok(d) if !d.is_zero() && d <= Duration::from_secs(24 * 3600) => d,
                _ => {
                    errs.push(format!(
                        "listener.{name}: {s:?} is not a duration between 1ms and 24h"
                    ));
                    default
                }
            },
        };
        let conn = ConnLimits {
            header_timeout: duration(
                "http_read_header_timeout",
                l.http_read_header_timeout,
                defaults.header_timeout,
            ),
            idle_timeout: duration(
                "http_idle_timeout",
                l.http_idle_timeout,
                defaults.idle_timeout,
            ),
            max_connections,
            max_connections_per_ip,
            send_timeout: duration(
                "http_send_timeout",
                l.http_send_timeout,
                defaults.send_timeout,
            ),
        };
        let body_timeout = duration(
            "http_read_timeout",
            l.http_read_timeout,
            DEFAULT_BODY_TIMEOUT,
        );
        match (address, tls, max) {
            (Some(address), Some(tls), Some(max_request_size)) => Some(ListenerConfig {
                address,
                tls,
                max_request_size,
                json,
                body_timeout,
                conn,
            }),
            _ => None,
        }
    };

    let (audit_file, api_dirs) = match raw.audit {
        None => (None, Vec::new()),
        Some(a) => (
            a.file_path,
            a.dangerous_allow_api_file_devices.unwrap_or_default(),
        ),
    };
    let audit_file = match audit_file {
        Some(p) if !std::path::Path::new(&p).is_absolute() => {
            errs.push(format!("audit.file_path: {p:?} must be an absolute path"));
            None
        }
        other => other.map(PathBuf::from),
    };
    let mut api_audit_dirs = Vec::new();
    for d in api_dirs {
        let p = PathBuf::from(&d);
        if !p.is_absolute() || !p.is_dir() {
            errs.push(format!(
                "audit.dangerous_allow_api_file_devices: {d:?} must be an absolute path to an existing directory"
            ));
        } else if p == std::path::Path::new("/") {
            errs.push(
                "audit.dangerous_allow_api_file_devices: \"/\" would allow every file".into(),
            );
        } else {
            api_audit_dirs.push(p);
        }
    }

    let mut ttl = TtlLimits::default();
    for (name, raw_v, slot) in [
        (
            "default_lease_ttl",
            raw.default_lease_ttl,
            &mut ttl.default_ttl,
        ),
        ("max_lease_ttl", raw.max_lease_ttl, &mut ttl.max_ttl),
    ] {
        if let Some(v) = raw_v {
            match palisade_core::parse_duration(&v) {
                Ok(d) if !d.is_zero() && d.as_secs() <= 100 * 365 * 24 * 3600 => {
                    *slot = d.as_secs() as i64;
                }
                _ => errs.push(format!(
                    "{name}: {v:?} is not a duration between 1s and 100 years"
                )),
            }
        }
    }
    if ttl.default_ttl > ttl.max_ttl {
        errs.push("default_lease_ttl: must not exceed max_lease_ttl".into());
    }

    let log_level = raw.log_level.unwrap_or_else(|| "info".into());
    if !matches!(
        log_level.as_str(),
        "trace" | "debug" | "info" | "warn" | "error"
    ) {
        errs.push(format!(
            "log_level: {log_level:?} is not one of trace, debug, info, warn, error"
        ));
    }
    let log_format = match raw.log_format.as_deref() {
        None | Some("standard") | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            errs.push(format!(
                "log_format: {other:?} is not \"standard\" or \"json\""
            ));
            LogFormat::Text
        }
    };
    let rotation = validate_rotation(raw.rotation, &mut errs);
    // Vault's VAULT_API_ADDR: one configuration for every node of a cluster
    // (a Kubernetes StatefulSet), each node's address from its environment
    let raw_api_addr = raw.api_addr.or_else(|| env("PALISADE_API_ADDR"));
    let ha = validate_ha(raw.ha, raw_api_addr.as_deref(), storage.as_ref(), &mut errs);
    let api_addr = match raw_api_addr.as_deref() {
        Some(a) => parse_api_addr(a).unwrap_or_else(|| {
            errs.push(format!(
                "api_addr: {a:?} is not scheme://host[:port] (http or https, no path)"
            ));
            String::new()
        }),
        None => match &listener {
            Some(l) => {
                let scheme = if l.tls == Tls::Disabled {
                    "http"
                } else {
                    "https"
                };
                let mut addr = l.address;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                format!("{scheme}://{addr}")
            }
            None => String::new(),
        },
    };
    let ui = raw.ui.unwrap_or(false);
    if ui {
        errs.push("ui: the web UI is not available in this version; set ui = false".into());
    }

    if !errs.is_empty() {
        return Err(ConfigErrors(errs));
    }
    match (storage, listener) {
        (Some(storage), Some(listener)) => Ok(ServerConfig {
            storage,
            listener,
            audit_file,
            api_audit_dirs,
            ttl,
            unauthenticated_rekey: raw.dangerous_unauthenticated_rekey.unwrap_or(false),
            unauthenticated_generate_root: raw
                .dangerous_unauthenticated_generate_root
                .unwrap_or(false),
            ui,
            log_level,
            log_format,
            rotation,
            api_addr,
            ha,
        }),
        _ => Err(ConfigErrors(vec!["invalid configuration".into()])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn minimal_sqlite_plaintext() {
        let c = parse("[storage]\nbackend = \"sqlite\"\npath = \"/tmp/p.db\"\n[listener]\ntls_disable = true\n", &no_env).unwrap();
        assert_eq!(
            c.storage,
            StorageConfig::Sqlite {
                path: "/tmp/p.db".into()
            }
        );
        assert_eq!(c.listener.tls, Tls::Disabled);
        assert_eq!(c.listener.address, "127.0.0.1:8200".parse().unwrap());
        assert_eq!(c.listener.max_request_size, 32 * 1024 * 1024);
        assert_eq!(c.listener.conn, ConnLimits::default());
        assert_eq!(c.listener.conn.header_timeout, Duration::from_secs(10));
        assert_eq!(c.listener.body_timeout, Duration::from_secs(30));
        assert_eq!(c.listener.json, JsonLimits::DEFAULT);
        assert_eq!(c.ttl, TtlLimits::default());
        assert!(c.api_audit_dirs.is_empty());
    }

    #[test]
    fn rotation_producers_are_only_what_the_file_lists() {
        let base = "[storage]\npath = \"/tmp/p.db\"\n[listener]\ntls_disable = true\n";
        let c = parse(base, &no_env).unwrap();
        assert_eq!(c.rotation, RotationConfig::default());
        let c = parse(
            &format!(
                "{base}[rotation]\nwebhook_origins = [\"https://rotator.internal:8443\", \"http://127.0.0.1:9000/\"]\n[rotation.commands]\ngen = [\"/usr/local/bin/gen\", \"--json\"]\n"
            ),
            &no_env,
        )
        .unwrap();
        assert_eq!(
            c.rotation.webhook_origins,
            ["https://rotator.internal:8443", "http://127.0.0.1:9000"]
        );
        assert_eq!(c.rotation.commands["gen"], ["/usr/local/bin/gen", "--json"]);
        let e = parse(
            &format!(
                "{base}[rotation]\nwebhook_origins = [\"http://rotator.internal\", \"https://a/path\", \"https://u:p@a\"]\n[rotation.commands]\nrel = [\"gen\"]\nempty = []\n\"bad name\" = [\"/bin/true\"]\n"
            ),
            &no_env,
        )
        .unwrap_err();
        assert_eq!(
            e.0,
            [
                "rotation.webhook_origins: \"http://rotator.internal\" is not an https:// origin (scheme, host, port; http:// only for a loopback host)",
                "rotation.webhook_origins: \"https://a/path\" is not an https:// origin (scheme, host, port; http:// only for a loopback host)",
                "rotation.webhook_origins: \"https://u:p@a\" is not an https:// origin (scheme, host, port; http:// only for a loopback host)",
                "rotation.commands: invalid command name \"bad name\"",
                "rotation.commands.empty: must be a list starting with an absolute program path",
                "rotation.commands.rel: must be a list starting with an absolute program path",
            ]
        );
    }

    #[test]
    fn unauthenticated_rekey_and_generate_root_are_off_unless_named() {
        let base = "[storage]\npath = \"/tmp/p.db\"\n[listener]\ntls_disable = true\n";
        let c = parse(base, &no_env).unwrap();
        assert!(!c.unauthenticated_rekey && !c.unauthenticated_generate_root);
        let c = parse(
            &format!("dangerous_unauthenticated_rekey = true\n{base}"),
            &no_env,
        )
        .unwrap();
        assert!(c.unauthenticated_rekey && !c.unauthenticated_generate_root);
        let c = parse(
            &format!("dangerous_unauthenticated_generate_root = true\n{base}"),
            &no_env,
        )
        .unwrap();
        assert!(!c.unauthenticated_rekey && c.unauthenticated_generate_root);
        // Vault's and OpenBao's names are not ours: refused, never ignored
        assert!(
            parse(
                &format!("disable_unauthed_rekey_endpoints = false\n{base}"),
                &no_env
            )
            .is_err()
        );
    }

    #[test]
    fn listener_limits_ttls_and_api_audit_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "max_lease_ttl = \"24h\"\ndefault_lease_ttl = \"1h\"\n[storage]\npath = \"/tmp/p.db\"\n[listener]\ntls_disable = true\nhttp_read_header_timeout = \"2s\"\nhttp_idle_timeout = \"1m\"\nhttp_read_timeout = \"5s\"\nhttp_send_timeout = \"7s\"\nmax_connections = 10\nmax_connections_per_ip = 4\nmax_request_json_strings = 50\n[audit]\ndangerous_allow_api_file_devices = [{:?}]\n",
            dir.path().display().to_string()
        );
        let c = parse(&text, &no_env).unwrap();
        assert_eq!(
            c.listener.conn,
            ConnLimits {
                header_timeout: Duration::from_secs(2),
                idle_timeout: Duration::from_secs(60),
                max_connections: 10,
                max_connections_per_ip: 4,
                send_timeout: Duration::from_secs(7),
            }
        );
        assert_eq!(c.listener.body_timeout, Duration::from_secs(5));
        assert_eq!(c.listener.json.max_strings, 50);
        assert_eq!(
            c.ttl,
            TtlLimits {
                default_ttl: 3600,
                max_ttl: 86400
            }
        );
        assert_eq!(c.api_audit_dirs, vec![dir.path().to_path_buf()]);

        let bad = "max_lease_ttl = \"1h\"\ndefault_lease_ttl = \"2h\"\n[storage]\npath = \"/tmp/p.db\"\n[listener]\ntls_disable = true\nhttp_idle_timeout = \"0s\"\nmax_connections = -1\n[audit]\ndangerous_allow_api_file_devices = [\"relative\", \"/\"]\n";
        assert_eq!(
            parse(bad, &no_env).unwrap_err().0,
            vec![
                "listener.max_connections: -1 must be positive",
                "listener.http_idle_timeout: \"0s\" is not a duration between 1ms and 24h",
                "audit.dangerous_allow_api_file_devices: \"relative\" must be an absolute path to an existing directory",
                "audit.dangerous_allow_api_file_devices: \"/\" would allow every file",
                "default_lease_ttl: must not exceed max_lease_ttl",
            ]
        );
    }

    #[test]
    fn tls_is_required_by_default() {
        let e = parse("[storage]\npath = \"/tmp/p.db\"\n", &no_env).unwrap_err();
        assert_eq!(
            e.0,
            vec![
                "listener: TLS is on by default; set tls_cert_file and tls_key_file, or tls_disable = true"
            ]
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = parse("[storage]\npath = \"/x\"\nbogus = 1\n", &no_env).unwrap_err();
        assert!(e.0[0].contains("unknown field `bogus`"), "{e}");
    }

    #[test]
    fn every_error_at_once() {
        let text = "log_level = \"loud\"\nlog_format = \"xml\"\n[storage]\nbackend = \"postgres\"\nurl_env = \"NOPE\"\n[listener]\naddress = \"nowhere\"\ntls_disable = true\n[audit]\nfile_path = \"relative.log\"\n";
        let e = parse(text, &no_env).unwrap_err();
        assert_eq!(
            e.0,
            vec![
                "storage.url_env: environment variable NOPE is not set",
                "listener.address: \"nowhere\" is not an IP:port address",
                "audit.file_path: \"relative.log\" must be an absolute path",
                "log_level: \"loud\" is not one of trace, debug, info, warn, error",
                "log_format: \"xml\" is not \"standard\" or \"json\"",
            ]
        );
    }

    #[test]
    fn postgres_url_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("url");
        std::fs::write(&f, "postgres://u:s3cret@127.0.0.1/db\n").unwrap();
        let text = |path: &std::path::Path| {
            format!(
                "[storage]\nbackend = \"postgres\"\nurl_file = \"{}\"\n[listener]\ntls_disable = true\n",
                path.display()
            )
        };
        let none = |_: &str| None;
        // allow: the file's text, without its newline
        let c = parse(&text(&f), &none).unwrap();
        assert_eq!(
            c.storage,
            StorageConfig::Postgres {
                url: "postgres://u:s3cret@127.0.0.1/db".into(),
                table: "palisade_store".into()
            }
        );
        // deny: a missing file, an empty one, a URL of another scheme (never quoted)
        let e = parse(&text(&dir.path().join("nope")), &none).unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert!(
            e.0[0].starts_with("storage.url_file: cannot read ")
                && e.0[0].ends_with(": entity not found"),
            "{e:?}"
        );
        std::fs::write(&f, "\n").unwrap();
        let e = parse(&text(&f), &none).unwrap_err();
        assert!(e.0[0].ends_with(" is empty"), "{e:?}");
        std::fs::write(&f, "mysql://u:s3cret@h/db").unwrap();
        let e = parse(&text(&f), &none).unwrap_err();
        assert_eq!(
            e.0,
            ["storage.url: must start with postgres:// or postgresql://"]
        );
        assert!(!format!("{e:?}").contains("s3cret"));
        // deny: two sources at once
        let both = format!(
            "{}url = \"postgres://x@h/db\"\n",
            text(&f).replace("[listener]\ntls_disable = true\n", "")
        );
        let e = parse(&format!("{both}[listener]\ntls_disable = true\n"), &none).unwrap_err();
        assert_eq!(e.0, ["storage: set one of url, url_env or url_file"]);
    }

    #[test]
    fn postgres_url_from_env() {
        let env = |k: &str| (k == "PG").then(|| "postgres://u:pw@127.0.0.1/db".to_string());
        let c = parse(
            "[storage]\nbackend = \"postgres\"\nurl_env = \"PG\"\n[listener]\ntls_disable = true\n",
            &env,
        )
        .unwrap();
        assert_eq!(
            c.storage,
            StorageConfig::Postgres {
                url: "postgres://u:pw@127.0.0.1/db".into(),
                table: "palisade_store".into()
            }
        );
    }

    const PG: &str = "[storage]\nbackend = \"postgres\"\nurl = \"postgres://h/db\"\n[listener]\ntls_disable = true\n";

    #[test]
    fn ha_defaults_are_vaults_and_need_postgres_and_an_address() {
        let c = parse(
            &format!("api_addr = \"https://n1.internal:8200\"\n{PG}[ha]\nenabled = true\n"),
            &no_env,
        )
        .unwrap();
        assert_eq!(
            c.ha,
            Some(HaConfig {
                api_addr: "https://n1.internal:8200".into(),
                lease_ttl: Duration::from_secs(15),
                renew_interval: Duration::from_secs(5),
                mode: HaMode::Forward,
                tls_ca_file: None,
            })
        );
        let c = parse(
            &format!("{PG}[ha]\nenabled = true\napi_addr = \"http://10.0.0.2:8200/\"\nmode = \"redirect\"\nlease_ttl = \"4s\"\nrenew_interval = \"1s\"\n"),
            &no_env,
        )
        .unwrap()
        .ha
        .unwrap();
        assert_eq!(
            (c.api_addr.as_str(), c.mode, c.lease_ttl, c.renew_interval),
            (
                "http://10.0.0.2:8200",
                HaMode::Redirect,
                Duration::from_secs(4),
                Duration::from_secs(1)
            )
        );
        // the address from PALISADE_API_ADDR when the file has none
        let env =
            |k: &str| (k == "PALISADE_API_ADDR").then(|| "https://p-1.nodes:8200".to_string());
        let c = parse(&format!("{PG}[ha]\nenabled = true\n"), &env).unwrap();
        assert_eq!(c.api_addr, "https://p-1.nodes:8200");
        assert_eq!(c.ha.unwrap().api_addr, "https://p-1.nodes:8200");
        // off unless enabled
        assert_eq!(
            parse(&format!("{PG}[ha]\nenabled = false\n"), &no_env)
                .unwrap()
                .ha,
            None
        );
        let err = |text: &str| parse(text, &no_env).unwrap_err().0;
        assert_eq!(
            err(&format!("{PG}[ha]\nenabled = true\n")),
            vec![
                "ha.api_addr: required (or the top-level api_addr): how the other nodes reach this one"
            ]
        );
        assert_eq!(
            err(
                "api_addr = \"http://a:1\"\n[storage]\npath = \"/tmp/x.db\"\n[listener]\ntls_disable = true\n[ha]\nenabled = true\n"
            ),
            vec!["ha: high availability needs storage backend = \"postgres\""]
        );
        assert_eq!(
            err(&format!(
                "{PG}[ha]\nenabled = true\napi_addr = \"http://a:1/v1\"\nmode = \"proxy\"\nlease_ttl = \"2s\"\nrenew_interval = \"1500ms\"\n"
            )),
            vec![
                "ha.api_addr: \"http://a:1/v1\" is not scheme://host[:port] (http or https, no path)",
                "ha.renew_interval: must be at most half of ha.lease_ttl",
                "ha.mode: \"proxy\" is not \"forward\" or \"redirect\"",
            ]
        );
        assert_eq!(
            err(&format!("{PG}[ha]\nenabled = true\napi_addr = \"http://a:1\"\nlease_ttl = \"500ms\"\nrenew_interval = \"100ms\"\nbogus = 1\n"))
                .len(),
            1,
            "unknown keys are refused"
        );
    }
}
