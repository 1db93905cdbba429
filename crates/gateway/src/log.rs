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
    /// A duplicate of the stdout descriptor: each record is one `write` of
    /// one whole line, with no process-wide lock between the worker threads
    /// (the kernel keeps lines of up to PIPE_BUF bytes whole on a pipe and
    /// serialises writes to a shared file offset).
    Stdout(std::fs::File),
    Memory(Mutex<Vec<String>>),
}

impl Sink {
    /// The stdout sink.
    pub fn stdout() -> std::io::Result<Self> {
        use std::os::fd::AsFd;
        let fd = std::io::stdout().as_fd().try_clone_to_owned()?;
        Ok(Sink::Stdout(std::fs::File::from(fd)))
    }

    pub fn write(&self, rec: &SecurityRecord) {
        let Ok(mut line) = serde_json::to_vec(rec) else {
            return;
        };
        match self {
            Sink::Stdout(out) => {
                line.push(b'\n');
                let _ = (&*out).write_all(&line);
            }
            Sink::Memory(m) => {
                if let Ok(mut v) = m.lock() {
                    v.push(String::from_utf8_lossy(&line).into_owned());
                }
            }
        }
    }

    pub fn lines(&self) -> Vec<String> {
        match self {
            Sink::Memory(m) => m.lock().map(|v| v.clone()).unwrap_or_default(),
            Sink::Stdout(_) => Vec::new(),
        }
    }
}
