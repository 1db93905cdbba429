//! The security log: one JSON line per request on stdout (time, request id,
//! route, client IP, principal, decision and the rule/limit/policy that
//! decided, status, latency, bytes), with a `category` on security events so
//! a SIEM can filter them. Tokens, API keys, cookies and secrets are never
//! recorded: the record has no field that could hold one.

use std::io::Write;
use std::sync::Mutex;

use serde::Serialize;

#[derive(Debug, Default, Serialize)]
pub struct SecurityRecord {
    pub time: String,
    pub request_id: String,
    pub listener: String,
    pub client_ip: String,
    pub method: String,
    /// The normalised path (or the raw path's length if it could not be normalised).
    pub path: String,
    pub host: String,
    pub route: String,
    pub principal: String,
    pub auth_method: String,
    pub decision: &'static str,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<&'static str>,
    pub status: u16,
    pub latency_us: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub upstream: String,
}

/// Where records go: stdout by default, a buffer in tests.
pub enum Sink {
    Stdout,
    Memory(Mutex<Vec<String>>),
}

impl Sink {
    pub fn write(&self, rec: &SecurityRecord) {
        let Ok(line) = serde_json::to_string(rec) else {
            return;
        };
        match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(line.as_bytes());
                let _ = out.write_all(b"\n");
            }
            Sink::Memory(m) => {
                if let Ok(mut v) = m.lock() {
                    v.push(line);
                }
            }
        }
    }

    pub fn lines(&self) -> Vec<String> {
        match self {
            Sink::Memory(m) => m.lock().map(|v| v.clone()).unwrap_or_default(),
            Sink::Stdout => Vec::new(),
        }
    }
}
