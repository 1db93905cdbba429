//! Server configuration: TOML with Vault's names, parsed in two stages (design
//! rule 10): `Raw*` structs with `deny_unknown_fields`, then `TryFrom` into the
//! typed [`ServerConfig`], collecting every error so `palisade config check`
//! reports them all at once. See docs/server-config.md.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::http::DEFAULT_MAX_REQUEST_SIZE;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub storage: Option<RawStorage>,
    pub listener: Option<RawListener>,
    pub audit: Option<RawAudit>,
    pub ui: Option<bool>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    pub backend: Option<String>,
    pub path: Option<String>,
    pub url: Option<String>,
    /// Name of an environment variable holding the URL (keeps passwords out of the file).
    pub url_env: Option<String>,
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// Enable (once) a `file` audit device at `file/` writing to this path.
    pub file_path: Option<String>,
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
    pub ui: bool,
    pub log_level: String,
    pub log_format: LogFormat,
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
                if s.url.is_some() || s.url_env.is_some() || s.table.is_some() {
                    errs.push(
                        "storage: url, url_env and table apply only to backend = \"postgres\""
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
                let url = match (s.url, s.url_env) {
                    (Some(_), Some(_)) => {
                        errs.push("storage: set url or url_env, not both".into());
                        None
                    }
                    (Some(u), None) => Some(u),
                    (None, Some(var)) => match env(&var) {
                        Some(u) => Some(u),
                        None => {
                            errs.push(format!(
                                "storage.url_env: environment variable {var} is not set"
                            ));
                            None
                        }
                    },
                    (None, None) => {
                        errs.push(
                            "storage.url: required for backend = \"postgres\" (or url_env)".into(),
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
        match (address, tls, max) {
            (Some(address), Some(tls), Some(max_request_size)) => Some(ListenerConfig {
                address,
                tls,
                max_request_size,
            }),
            _ => None,
        }
    };

    let audit_file = match raw.audit.and_then(|a| a.file_path) {
        Some(p) if !std::path::Path::new(&p).is_absolute() => {
            errs.push(format!("audit.file_path: {p:?} must be an absolute path"));
            None
        }
        other => other.map(PathBuf::from),
    };

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
            ui,
            log_level,
            log_format,
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
}
