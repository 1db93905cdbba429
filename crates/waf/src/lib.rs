//! palisade-waf: a SecLang engine that loads the OWASP Core Rule Set v4
//! unmodified.
//!
//! - [`lexer`]: configuration text → directives (Apache's quoting and
//!   continuation rules), each with its file and line;
//! - [`variable`]: variables and target lists (`ARGS|!ARGS:x|&TX:y`);
//! - [`operator`]: operators compiled once (`@rx` on the `regex` crate's
//!   linear-time engine, `@pm`/`@pmFromFile` on Aho-Corasick);
//! - [`transform`]: transformations, byte for byte as ModSecurity's;
//! - [`action`]: action lists and macros (`%{tx.score}`);
//! - [`tx`]: a [`tx::Transaction`] evaluates a rule set on one request;
//! - [`libinjection`]: `@detectSQLi` / `@detectXSS` (libinjectionrs);
//! - [`crs`]: CRS as deployed (engine rules, paranoia level, setup, rules);
//! - [`ruleset`]: rule files → a [`ruleset::RuleSet`] per phase, with
//!   chains, markers, default actions and target updates resolved.
//!
//! A construct the engine does not implement is a load error naming the
//! file and line: a rule set either loads whole or not at all.
#![forbid(unsafe_code)]

pub mod action;
pub mod byteset;
pub mod crs;
pub mod lexer;
pub mod libinjection;
pub mod memo;
pub mod operator;
pub mod ruleset;
pub mod transform;
pub mod tx;
pub mod variable;

use std::sync::Arc;

pub use ruleset::RuleSet;

/// Why rules did not load: the file and line, and what is wrong there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    pub file: Option<Arc<str>>,
    pub line: u32,
    pub message: String,
}

impl LoadError {
    pub fn at(file: &Arc<str>, line: u32, message: impl Into<String>) -> Self {
        LoadError {
            file: Some(file.clone()),
            line,
            message: message.into(),
        }
    }
    pub fn bare(message: impl Into<String>) -> Self {
        LoadError {
            file: None,
            line: 0,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{file}:{}: {}", self.line, self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for LoadError {}

/// `SecRuleEngine` / `ctl:ruleEngine`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineMode {
    On,
    Off,
    DetectionOnly,
}

impl EngineMode {
    pub fn parse(s: &str) -> Result<EngineMode, String> {
        match s.to_ascii_lowercase().as_str() {
            "on" => Ok(EngineMode::On),
            "off" => Ok(EngineMode::Off),
            "detectiononly" => Ok(EngineMode::DetectionOnly),
            _ => Err(format!(
                "invalid rule engine mode {s:?} (On, Off or DetectionOnly)"
            )),
        }
    }
}
