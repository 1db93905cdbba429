//! The security log: one JSON line per request on stdout (time, request id,
//! route, client IP, principal, decision and the rule/limit/policy that
//! decided, status, latency, bytes), with a `category` on security events so
//! a SIEM can filter them. Tokens, API keys, cookies and secrets are never
//! recorded: the record has no field that could hold one.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub use crate::ops::Event;
use std::time::{Duration, Instant};

use std::borrow::Cow;

use serde::Serialize;

/// One request's record. Borrows what the request context already holds
/// (owned only where a value is made for the record): it is written out
/// at once, and a per-request copy of every field cost ten allocations.
#[derive(Debug, Default, Serialize)]
pub struct SecurityRecord<'a> {
    pub time: Cow<'a, str>,
    pub request_id: Cow<'a, str>,
    pub listener: Cow<'a, str>,
    pub client_ip: Cow<'a, str>,
    pub method: Cow<'a, str>,
    /// The normalised path (or the raw path's length if it could not be normalised).
    pub path: Cow<'a, str>,
    pub host: Cow<'a, str>,
    pub route: Cow<'a, str>,
    pub principal: Cow<'a, str>,
    pub auth_method: Cow<'a, str>,
    pub decision: &'static str,
    pub reason: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<&'static str>,
    pub status: u16,
    pub latency_us: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub upstream: Cow<'a, str>,
    /// Detect-mode inspection findings (rule id, name, variable, reason);
    /// left out when there are none.
    #[serde(skip_serializing_if = "str_is_empty")]
    pub inspection: Cow<'a, str>,
}

#[allow(
    clippy::ptr_arg,
    reason = "serde's skip_serializing_if passes the field by reference"
)]
fn str_is_empty(s: &Cow<'_, str>) -> bool {
    s.is_empty()
}

/// Longest value a string field keeps: longer values (a 16 KiB path, say)
/// are cut at a character boundary and end in `…`, so one request can never
/// make a line long enough to be split or to flood the log.
pub const MAX_FIELD_BYTES: usize = 1024;

fn capped(s: &str) -> Cow<'_, str> {
    if s.len() <= MAX_FIELD_BYTES {
        return Cow::Borrowed(s);
    }
    let mut end = MAX_FIELD_BYTES - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &s[..end]))
}

impl SecurityRecord<'_> {
    /// The record as one JSON object, byte for byte what `serde_json` makes
    /// of it with every string field capped at [`MAX_FIELD_BYTES`] (a test
    /// compares them), written directly: serialising through serde cost
    /// about 5 % of a proxied request's instructions.
    pub fn to_json(&self) -> Vec<u8> {
        let mut o = Vec::with_capacity(512);
        let str_fields: [(&str, &str); 12] = [
            ("time", &self.time),
            ("request_id", &self.request_id),
            ("listener", &self.listener),
            ("client_ip", &self.client_ip),
            ("method", &self.method),
            ("path", &self.path),
            ("host", &self.host),
            ("route", &self.route),
            ("principal", &self.principal),
            ("auth_method", &self.auth_method),
            ("decision", self.decision),
            ("reason", &self.reason),
        ];
        o.push(b'{');
        for (i, (name, value)) in str_fields.iter().enumerate() {
            if i > 0 {
                o.push(b',');
            }
            field(&mut o, name);
            json_str(&mut o, &capped(value));
        }
        if let Some(c) = self.category {
            o.push(b',');
            field(&mut o, "category");
            json_str(&mut o, c);
        }
        let mut num = itoa::Buffer::new();
        for (name, value) in [
            ("status", u64::from(self.status)),
            ("latency_us", self.latency_us),
            ("bytes_in", self.bytes_in),
            ("bytes_out", self.bytes_out),
        ] {
            o.push(b',');
            field(&mut o, name);
            o.extend_from_slice(num.format(value).as_bytes());
        }
        o.push(b',');
        field(&mut o, "upstream");
        json_str(&mut o, &capped(&self.upstream));
        if !self.inspection.is_empty() {
            o.push(b',');
            field(&mut o, "inspection");
            json_str(&mut o, &capped(&self.inspection));
        }
        o.push(b'}');
        o
    }
}

/// How security events are written: Palisade's own record (the default)
/// or Elastic Common Schema documents (`log_format = "ecs"`; the schema is
/// docs/siem/ecs-security-events.schema.json).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Palisade,
    Ecs,
}

/// The ECS version the documents follow.
pub const ECS_VERSION: &str = "8.11.0";

/// Rule ids named in a reason or findings text (`crs:942100 ...`,
/// `inspection:10101 ...`).
fn rule_ids(texts: &[&str]) -> Vec<String> {
    let mut ids = Vec::new();
    for t in texts {
        for part in t.split([';', ' ']) {
            let id = part
                .strip_prefix("crs:")
                .or_else(|| part.strip_prefix("inspection:"))
                .unwrap_or("");
            if (5..=6).contains(&id.len())
                && id.bytes().all(|b| b.is_ascii_digit())
                && !ids.iter().any(|x| x == id)
            {
                ids.push(id.to_string());
            }
        }
    }
    ids
}

impl SecurityRecord<'_> {
    /// The record as an ECS document: `event.*` says what happened and how
    /// it ended, `http.request.id` is the correlation id the upstream also
    /// receives (`X-Request-Id`), `source.ip` the client, `user.name` the
    /// principal; what ECS has no field for is under `palisade.*`. String
    /// fields are capped as in [`SecurityRecord::to_json`].
    pub fn to_ecs(&self) -> serde_json::Value {
        use serde_json::{Map, Value, json};
        let allowed = self.decision == "allow";
        let mut category = vec!["web"];
        match self.category {
            Some("authentication_failure") => category.push("authentication"),
            Some("inspection" | "banned") => category.push("intrusion_detection"),
            _ => {}
        }
        let mut event = json!({
            "kind": "event",
            "category": category,
            "type": ["access", if allowed { "allowed" } else { "denied" }],
            "action": "http_request",
            "outcome": if allowed { "success" } else { "failure" },
            "dataset": "palisade.gateway",
            "module": "palisade",
            "duration": self.latency_us.saturating_mul(1000),
        });
        if !self.reason.is_empty() {
            event["reason"] = json!(capped(&self.reason));
        }
        let mut doc = json!({
            "@timestamp": capped(&self.time),
            "ecs": {"version": ECS_VERSION},
            "event": event,
            "http": {
                "request": {"id": capped(&self.request_id), "method": capped(&self.method), "bytes": self.bytes_in},
                "response": {"status_code": self.status, "bytes": self.bytes_out},
            },
            "url": {"path": capped(&self.path)},
            "source": {"ip": capped(&self.client_ip)},
            "observer": {
                "type": "proxy",
                "vendor": "Palisade",
                "product": "palisade-gateway",
                "ingress": {"interface": {"name": capped(&self.listener)}},
            },
        });
        if !self.host.is_empty() {
            doc["url"]["domain"] = json!(capped(&self.host));
        }
        if !self.principal.is_empty() {
            doc["user"] = json!({"name": capped(&self.principal)});
        }
        let mut p = Map::new();
        for (k, v) in [
            ("route", &self.route),
            ("auth_method", &self.auth_method),
            ("upstream", &self.upstream),
            ("inspection", &self.inspection),
        ] {
            if !v.is_empty() {
                p.insert(k.into(), json!(capped(v)));
            }
        }
        if let Some(c) = self.category {
            p.insert("category".into(), json!(c));
        }
        let ids = rule_ids(&[&self.reason, &self.inspection]);
        if !ids.is_empty() {
            p.insert("rule_ids".into(), json!(ids));
        }
        doc["palisade"] = Value::Object(p);
        doc
    }
}

/// A ban made, or lifted, as a security event in `format`.
#[derive(Debug)]
pub struct BanEvent<'a> {
    /// `ban` or `unban`.
    pub action: &'static str,
    pub subject: &'a str,
    pub duration_s: Option<u64>,
    pub strikes: Option<u32>,
    pub reason: &'a str,
    pub shared: Option<bool>,
    pub enforced: Option<bool>,
    /// The request whose event tipped the score.
    pub request_id: Option<&'a str>,
}

impl BanEvent<'_> {
    pub fn to_value(&self, format: LogFormat, time: &str) -> serde_json::Value {
        use serde_json::json;
        let mut ban = json!({"subject": self.subject, "reason": capped(self.reason)});
        for (k, v) in [
            ("duration_s", self.duration_s.map(|d| json!(d))),
            ("strikes", self.strikes.map(|d| json!(d))),
            ("shared", self.shared.map(|d| json!(d))),
            ("enforced", self.enforced.map(|d| json!(d))),
            ("request_id", self.request_id.map(|d| json!(d))),
        ] {
            if let Some(v) = v {
                ban[k] = v;
            }
        }
        match format {
            LogFormat::Palisade => {
                ban["time"] = json!(time);
                ban["event"] = json!(self.action);
                ban["category"] = json!("ban");
                ban
            }
            LogFormat::Ecs => {
                let mut doc = json!({
                    "@timestamp": time,
                    "ecs": {"version": ECS_VERSION},
                    "event": {
                        "kind": "alert",
                        "category": ["intrusion_detection"],
                        "type": [if self.action == "ban" { "denied" } else { "change" }],
                        "action": self.action,
                        "outcome": "success",
                        "reason": capped(self.reason),
                        "dataset": "palisade.gateway",
                        "module": "palisade",
                    },
                    "observer": {"type": "proxy", "vendor": "Palisade", "product": "palisade-gateway"},
                    "palisade": {"ban": ban},
                });
                if let Some(ip) = self.subject.strip_prefix("ip:") {
                    // an IPv6 subject is its /64: the network address
                    doc["source"] = json!({"ip": ip.split('/').next().unwrap_or(ip)});
                } else if let Some(p) = self.subject.strip_prefix("principal:") {
                    doc["user"] = json!({"name": p});
                }
                if let Some(id) = self.request_id {
                    doc["http"] = json!({"request": {"id": id}});
                }
                doc
            }
        }
    }
}

/// A configuration reload, applied, or refused with `errors` problems, as
/// a security event in `format`. The problems' text stays in the
/// operational log (stderr): a TOML parse error quotes the line it stopped
/// on, which could hold a secret written where it does not belong, and the
/// security log goes to a SIEM.
pub fn reload_event(format: LogFormat, time: &str, errors: Option<usize>) -> serde_json::Value {
    use serde_json::json;
    let reason = errors.map(|n| {
        format!("configuration refused: {n} error(s), listed in the gateway's operational log")
    });
    match format {
        LogFormat::Palisade => {
            let mut v = json!({
                "time": time,
                "event": "config_reload",
                "category": "configuration",
                "result": if errors.is_some() { "refused" } else { "ok" },
            });
            if let (Some(r), Some(n)) = (&reason, errors) {
                v["error"] = json!(r);
                v["errors"] = json!(n);
            }
            v
        }
        LogFormat::Ecs => {
            let mut v = json!({
                "@timestamp": time,
                "ecs": {"version": ECS_VERSION},
                "event": {
                    "kind": "event",
                    "category": ["configuration"],
                    "type": ["change"],
                    "action": "config_reload",
                    "outcome": if errors.is_some() { "failure" } else { "success" },
                    "dataset": "palisade.gateway",
                    "module": "palisade",
                },
                "observer": {"type": "proxy", "vendor": "Palisade", "product": "palisade-gateway"},
            });
            if let Some(r) = reason {
                v["event"]["reason"] = json!(r);
            }
            v
        }
    }
}

/// `"name":` (names are plain ASCII).
fn field(o: &mut Vec<u8>, name: &str) {
    o.push(b'"');
    o.extend_from_slice(name.as_bytes());
    o.extend_from_slice(b"\":");
}

/// A JSON string (RFC 8259 §7): `"` and `\\` escaped, control characters as
/// `\n`-style or `\u00XX` escapes, everything else as is (the input is
/// UTF-8 already). The same choices as serde_json.
fn json_str(o: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    o.push(b'"');
    let bytes = s.as_bytes();
    // almost every value needs no escape: one branch-free scan (which the
    // compiler vectorises) finds that, and the value is copied whole
    let plain = !bytes.iter().fold(false, |esc, &b| {
        esc | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        o.extend_from_slice(bytes);
        o.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => {
                o.extend_from_slice(&bytes[start..i]);
                o.extend_from_slice(b"\\u00");
                o.push(HEX[usize::from(b >> 4)]);
                o.push(HEX[usize::from(b & 0xf)]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        o.extend_from_slice(&bytes[start..i]);
        o.extend_from_slice(esc);
        start = i + 1;
    }
    o.extend_from_slice(&bytes[start..]);
    o.push(b'"');
}

/// Records waiting for the writer at most.
pub const QUEUE_LINES: usize = 32 * 1024;
/// Bytes of records waiting for the writer at most (a record is at most a
/// few KiB: every field is capped).
pub const QUEUE_BYTES: usize = 16 << 20;
/// How long the writer waits after a write for more lines to gather: the
/// delay a line may see before it reaches stdout.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(2);
/// No failed write (`failed_at_ms`).
const NEVER: u64 = u64::MAX;
/// Lines taken into one write at most (a line is at most a few KiB).
const BATCH_BYTES: usize = 64 * 1024;
/// A sink that has had records waiting this long without writing one is stuck.
pub const STUCK_AFTER: Duration = Duration::from_secs(5);

/// The stdout writer's shared state: what waits, and when it last wrote.
#[derive(Debug)]
struct WriterState {
    pending: AtomicUsize,
    /// Bytes of the lines waiting (at most [`QUEUE_BYTES`]).
    pending_bytes: AtomicUsize,
    /// Milliseconds since `epoch` at the last completed write (or start).
    last_write_ms: AtomicU64,
    epoch: Instant,
    dropped: AtomicU64,
    /// Milliseconds since `epoch` of the last failed write (its records
    /// were lost), [`NEVER`] once a write succeeded since.
    failed_at_ms: AtomicU64,
}

impl WriterState {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// Records go to stdout through one writer thread: only that thread
/// writes, whole lines only, so lines never interleave or split between
/// records, and a request never waits for the log. The writer takes every
/// line queued, writes them in one `write`, and then naps for
/// [`BATCH_INTERVAL`] while the next lines queue up: under load a request
/// neither wakes another thread nor makes a system call for its line (one
/// wake-up and one write per line cost a futex, a context switch and a
/// `write` per request). When the reader of stdout stops, the queue fills:
/// further records are dropped and counted
/// (`palisade_gateway_security_log_dropped_total`, and an error in the
/// gateway's own log), and `/readyz` reports the sink as stuck.
pub struct StdoutSink {
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    state: Arc<WriterState>,
    last_alert_s: AtomicU64,
    /// `[syslog]`, `[otlp]`: every line also goes to the SIEM.
    forwards: Vec<Box<dyn crate::ops::Forward>>,
    /// Set to have the writer reopen its file (SIGHUP, after a rotation).
    reopen: Arc<AtomicBool>,
}

/// Open the security log file: appended to, created readable by the
/// gateway's user only (it names clients, principals and paths).
pub fn open_log_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

/// Where records go: stdout by default, a buffer in tests.
pub enum Sink {
    Stdout(StdoutSink),
    Memory(Mutex<Vec<String>>),
}

impl Sink {
    /// The stdout sink and its writer thread.
    pub fn stdout() -> std::io::Result<Self> {
        Self::stdout_and(Vec::new())
    }

    /// The stdout sink, each line also sent to every one of `forwards`.
    pub fn stdout_and(forwards: Vec<Box<dyn crate::ops::Forward>>) -> std::io::Result<Self> {
        use std::os::fd::AsFd;
        let fd = std::io::stdout().as_fd().try_clone_to_owned()?;
        Self::writer_and(std::fs::File::from(fd), QUEUE_LINES, forwards)
    }

    /// A sink writing to `out` through a writer thread and a queue of `lines`.
    pub fn writer(out: std::fs::File, lines: usize) -> std::io::Result<Self> {
        Self::writer_and(out, lines, Vec::new())
    }

    /// The security log in the file at `path` (appended to; reopened by
    /// [`Self::reopen`]), each line also sent to every one of `forwards`.
    pub fn file_and(
        path: &std::path::Path,
        forwards: Vec<Box<dyn crate::ops::Forward>>,
    ) -> std::io::Result<Self> {
        let out = open_log_file(path)?;
        Self::spawn(out, Some(path.to_path_buf()), QUEUE_LINES, forwards)
    }

    /// [`Self::writer`], each line also sent to every one of `forwards`.
    pub fn writer_and(
        out: std::fs::File,
        lines: usize,
        forwards: Vec<Box<dyn crate::ops::Forward>>,
    ) -> std::io::Result<Self> {
        Self::spawn(out, None, lines, forwards)
    }

    /// Have the writer reopen its file before its next write (a log
    /// rotation moved it away); nothing for stdout.
    pub fn reopen(&self) {
        if let Sink::Stdout(s) = self {
            s.reopen.store(true, Ordering::Relaxed);
        }
    }

    fn spawn(
        out: std::fs::File,
        path: Option<std::path::PathBuf>,
        lines: usize,
        forwards: Vec<Box<dyn crate::ops::Forward>>,
    ) -> std::io::Result<Self> {
        let reopen = Arc::new(AtomicBool::new(false));
        let reopen_flag = reopen.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(lines);
        let state = Arc::new(WriterState {
            pending: AtomicUsize::new(0),
            pending_bytes: AtomicUsize::new(0),
            last_write_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            dropped: AtomicU64::new(0),
            failed_at_ms: AtomicU64::new(NEVER),
        });
        let st = state.clone();
        std::thread::Builder::new()
            .name("security-log".into())
            .spawn(move || {
                let mut out = out;
                let mut batch = Vec::with_capacity(BATCH_BYTES);
                let mut last_alert_s = None;
                // a failed write may have left half a line: the next write
                // starts on a new line, so the half line stays one bad line
                // instead of swallowing the next record
                let mut broken = false;
                while let Ok(first) = rx.recv() {
                    if reopen_flag.swap(false, Ordering::Relaxed)
                        && let Some(p) = &path
                    {
                        // a failure keeps the old file: nothing is lost,
                        // the rotation just did not take
                        match open_log_file(p) {
                            Ok(f) => {
                                out = f;
                                broken = false;
                            }
                            Err(e) => tracing::error!(
                                error = %e,
                                path = %p.display(),
                                "cannot reopen the security log file; writing to the old one"
                            ),
                        }
                    }
                    batch.clear();
                    // the newline below is the writer's, not a queued line's
                    let broken_before = broken;
                    if broken {
                        batch.push(b'\n');
                    }
                    batch.extend_from_slice(&first);
                    let mut lines = 1;
                    let mut drained = false;
                    while batch.len() < BATCH_BYTES {
                        match rx.try_recv() {
                            Ok(line) => {
                                batch.extend_from_slice(&line);
                                lines += 1;
                            }
                            Err(_) => {
                                drained = true;
                                break;
                            }
                        }
                    }
                    match out.write_all(&batch) {
                        Ok(()) => {
                            broken = false;
                            st.failed_at_ms.store(NEVER, Ordering::Relaxed);
                        }
                        Err(e) => {
                            // the records are lost (some may have been
                            // written in part): counted, alerted (at most
                            // once a second) and /readyz reports it
                            broken = true;
                            st.failed_at_ms.store(st.now_ms(), Ordering::Relaxed);
                            st.dropped.fetch_add(lines as u64, Ordering::Relaxed);
                            metrics::counter!("palisade_gateway_security_log_dropped_total")
                                .increment(lines as u64);
                            let now = st.now_ms() / 1000;
                            if last_alert_s != Some(now) {
                                last_alert_s = Some(now);
                                tracing::error!(
                                    error = %e,
                                    dropped = st.dropped.load(Ordering::Relaxed),
                                    "security log records lost: writing them failed"
                                );
                            }
                        }
                    }
                    st.pending.fetch_sub(lines, Ordering::Relaxed);
                    st.pending_bytes
                        .fetch_sub(batch.len() - usize::from(broken_before), Ordering::Relaxed);
                    st.last_write_ms.store(st.now_ms(), Ordering::Relaxed);
                    if batch.capacity() > 4 * BATCH_BYTES {
                        batch = Vec::with_capacity(BATCH_BYTES);
                    }
                    // nap only once the queue is empty: a full batch is
                    // followed at once by the next
                    if drained {
                        std::thread::sleep(BATCH_INTERVAL);
                    }
                }
            })?;
        Ok(Sink::Stdout(StdoutSink {
            tx,
            state,
            last_alert_s: AtomicU64::new(u64::MAX),
            forwards,
            reopen,
        }))
    }

    pub fn write(&self, rec: &SecurityRecord<'_>) {
        self.write_record(rec, LogFormat::Palisade);
    }

    /// A request's record in `format`.
    pub fn write_record(&self, rec: &SecurityRecord<'_>, format: LogFormat) {
        let event = Event::Request {
            allowed: rec.decision == "allow",
        };
        match format {
            LogFormat::Palisade => self.write_line(rec.to_json(), event),
            LogFormat::Ecs => self.write_event(&rec.to_ecs(), event),
        }
    }

    /// A security event that is not a request's record (a ban, a lifted
    /// ban, a reload), as one JSON line through the same queue.
    pub fn write_event(&self, value: &serde_json::Value, event: Event) {
        self.write_line(value.to_string().into_bytes(), event);
    }

    fn write_line(&self, mut line: Vec<u8>, event: Event) {
        match self {
            Sink::Stdout(s) => {
                for f in &s.forwards {
                    f.send(event, &line);
                }
                line.push(b'\n');
                let len = line.len();
                let full = s.state.pending_bytes.load(Ordering::Relaxed) + len > QUEUE_BYTES;
                s.state.pending.fetch_add(1, Ordering::Relaxed);
                s.state.pending_bytes.fetch_add(len, Ordering::Relaxed);
                if full || s.tx.try_send(line).is_err() {
                    s.state.pending.fetch_sub(1, Ordering::Relaxed);
                    s.state.pending_bytes.fetch_sub(len, Ordering::Relaxed);
                    s.state.dropped.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("palisade_gateway_security_log_dropped_total").increment(1);
                    // at most one alert a second
                    let now = s.state.now_ms() / 1000;
                    if s.last_alert_s.swap(now, Ordering::Relaxed) != now {
                        tracing::error!(
                            dropped = s.state.dropped.load(Ordering::Relaxed),
                            "security log records dropped: stdout or the log file is not keeping up"
                        );
                    }
                }
            }
            Sink::Memory(m) => {
                if let Ok(mut v) = m.lock() {
                    v.push(String::from_utf8_lossy(&line).into_owned());
                }
            }
        }
    }

    /// Records waited for more than [`STUCK_AFTER`] without one being
    /// written, or a write failed within the last [`STUCK_AFTER`] (and none
    /// succeeded since).
    pub fn stuck(&self) -> bool {
        match self {
            Sink::Stdout(s) => {
                let waiting = s.state.pending.load(Ordering::Relaxed) > 0
                    && s.state
                        .now_ms()
                        .saturating_sub(s.state.last_write_ms.load(Ordering::Relaxed))
                        > STUCK_AFTER.as_millis() as u64;
                // a failed write reports the sink for STUCK_AFTER; one that
                // keeps failing keeps it reported, one that passed (a full
                // disk freed) lets /readyz recover even with no traffic
                let failed_at = s.state.failed_at_ms.load(Ordering::Relaxed);
                let failing = failed_at != NEVER
                    && s.state.now_ms().saturating_sub(failed_at) < STUCK_AFTER.as_millis() as u64;
                failing || waiting
            }
            Sink::Memory(_) => false,
        }
    }

    /// Wait until every queued record has been written, for at most
    /// `limit` (shutdown: the lines of answered requests reach stdout before
    /// the process exits). False if some were still queued.
    pub fn flush(&self, limit: Duration) -> bool {
        match self {
            Sink::Stdout(s) => {
                let end = Instant::now() + limit;
                while s.state.pending.load(Ordering::Relaxed) > 0 {
                    if Instant::now() >= end {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                // then the SIEM's copies, within what is left of `limit`
                let mut all = true;
                for f in &s.forwards {
                    all &= f.flush(end.saturating_duration_since(Instant::now()));
                }
                all
            }
            Sink::Memory(_) => true,
        }
    }

    /// Records dropped so far: the queue was full, or their write failed.
    pub fn dropped(&self) -> u64 {
        match self {
            Sink::Stdout(s) => s.state.dropped.load(Ordering::Relaxed),
            Sink::Memory(_) => 0,
        }
    }

    pub fn lines(&self) -> Vec<String> {
        match self {
            Sink::Memory(m) => m.lock().map(|v| v.clone()).unwrap_or_default(),
            Sink::Stdout(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hand_written_line_is_what_serde_json_writes() {
        let awkward = [
            "",
            "plain",
            "quote \" backslash \\ slash /",
            "\n\r\t\u{8}\u{c}\u{0}\u{1}\u{1f}\u{7f}",
            "unicode é 中 😀 \u{2028}\u{2029}",
            "</script><script>",
        ];
        for (i, s) in awkward.iter().enumerate() {
            let rec = SecurityRecord {
                time: s.to_string().into(),
                request_id: format!("{s}{i}").into(),
                listener: s.to_string().into(),
                client_ip: "192.0.2.1".into(),
                method: "GET".into(),
                path: s.to_string().into(),
                host: s.to_string().into(),
                route: s.to_string().into(),
                principal: s.to_string().into(),
                auth_method: "jwt".into(),
                decision: "allow",
                reason: s.to_string().into(),
                category: if i % 2 == 0 {
                    Some("authn_failure")
                } else {
                    None
                },
                status: [200, 0, 65535, 429, 502, 404][i],
                latency_us: [0, 1, u64::MAX, 12345, 10, 99][i],
                bytes_in: i as u64 * 1000,
                bytes_out: u64::MAX - i as u64,
                upstream: s.to_string().into(),
                inspection: s.to_string().into(),
            };
            assert_eq!(
                String::from_utf8(rec.to_json()).unwrap(),
                serde_json::to_string(&rec).unwrap()
            );
        }
        assert_eq!(
            String::from_utf8(SecurityRecord::default().to_json()).unwrap(),
            serde_json::to_string(&SecurityRecord::default()).unwrap()
        );
    }

    #[test]
    fn long_fields_are_capped_at_a_character_boundary() {
        let rec = SecurityRecord {
            host: "h".repeat(16 * 1024).into(),
            path: format!("/{}", "é".repeat(4000)).into(),
            ..Default::default()
        };
        let v: serde_json::Value = serde_json::from_slice(&rec.to_json()).unwrap();
        for f in ["host", "path"] {
            let s = v[f].as_str().unwrap();
            assert!(s.len() <= MAX_FIELD_BYTES, "{f}: {}", s.len());
            assert!(s.ends_with('…'), "{f}");
        }
        assert!(rec.to_json().len() < 4 * MAX_FIELD_BYTES);
        let short = SecurityRecord {
            host: "api.example".into(),
            ..Default::default()
        };
        let v: serde_json::Value = serde_json::from_slice(&short.to_json()).unwrap();
        assert_eq!(v["host"], "api.example");
    }

    /// Every string field a client can fill is capped in the ECS document
    /// too: a 60 KB method made a 60 KB line, which a syslog receiver cut
    /// in two, and the second half was the attacker's own record (review
    /// of 2026-12-06).
    #[test]
    fn every_ecs_string_field_is_capped() {
        let long = "X".repeat(60_000);
        let rec = SecurityRecord {
            time: long.clone().into(),
            request_id: long.clone().into(),
            listener: long.clone().into(),
            client_ip: long.clone().into(),
            method: long.clone().into(),
            path: long.clone().into(),
            host: long.clone().into(),
            route: long.clone().into(),
            principal: long.clone().into(),
            auth_method: long.clone().into(),
            reason: long.clone().into(),
            upstream: long.clone().into(),
            inspection: long.clone().into(),
            ..Default::default()
        };
        fn strings(v: &serde_json::Value, out: &mut Vec<usize>) {
            match v {
                serde_json::Value::String(s) => out.push(s.len()),
                serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
                serde_json::Value::Object(o) => o.values().for_each(|x| strings(x, out)),
                _ => {}
            }
        }
        let mut lens = Vec::new();
        strings(&rec.to_ecs(), &mut lens);
        assert!(lens.iter().all(|&n| n <= MAX_FIELD_BYTES), "{lens:?}");
    }

    /// Lines written from several threads at once arrive whole, each once,
    /// in the order each thread wrote them, however the writer batches them.
    #[test]
    fn batched_lines_arrive_whole_and_in_order() {
        use std::io::Read;
        let (mut reader, writer) = std::io::pipe().unwrap();
        let sink = Arc::new(
            Sink::writer(
                std::fs::File::from(std::os::fd::OwnedFd::from(writer)),
                1 << 16,
            )
            .unwrap(),
        );
        let collect = std::thread::spawn(move || {
            let mut all = String::new();
            reader.read_to_string(&mut all).unwrap();
            all
        });
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        sink.write(&SecurityRecord {
                            path: format!("/{t}/{i}/{}", "x".repeat(i % 300)).into(),
                            ..Default::default()
                        });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(sink.dropped(), 0);
        assert!(
            sink.flush(Duration::from_secs(10)),
            "every queued line written"
        );
        if let Sink::Stdout(s) = &*sink {
            assert_eq!(s.state.pending.load(Ordering::Relaxed), 0);
        }
        // the writer ends (and closes the pipe) once every sender is gone
        drop(sink);
        let all = collect.join().unwrap();
        let mut next = [0usize; 4];
        for line in all.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let path = v["path"].as_str().unwrap();
            let mut parts = path.split('/').skip(1);
            let t: usize = parts.next().unwrap().parse().unwrap();
            let i: usize = parts.next().unwrap().parse().unwrap();
            assert_eq!(i, next[t], "thread {t}: lines out of order or lost");
            next[t] += 1;
        }
        assert_eq!(next, [5_000; 4]);
    }

    /// A write that fails (a full disk, a reader that closed the pipe)
    /// loses its records: they are counted as dropped and the sink reports
    /// itself stuck (`/readyz` 503), never silently healthy. A write that
    /// succeeds again clears it.
    #[test]
    fn failed_writes_are_counted_and_reported() {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let sink = Sink::writer(full, 64).unwrap();
        for _ in 0..10 {
            sink.write(&SecurityRecord::default());
        }
        assert!(sink.flush(Duration::from_secs(10)));
        assert_eq!(sink.dropped(), 10);
        assert!(sink.stuck(), "a failing sink is reported");

        let (mut reader, writer) = std::io::pipe().unwrap();
        let sink =
            Sink::writer(std::fs::File::from(std::os::fd::OwnedFd::from(writer)), 64).unwrap();
        sink.write(&SecurityRecord::default());
        assert!(sink.flush(Duration::from_secs(10)));
        assert_eq!(sink.dropped(), 0);
        assert!(!sink.stuck());
        let mut buf = [0u8; 16];
        use std::io::Read;
        assert!(reader.read(&mut buf).unwrap() > 0);
        // the reader goes away: EPIPE (the test harness ignores SIGPIPE,
        // as Rust programs do)
        drop(reader);
        sink.write(&SecurityRecord::default());
        assert!(sink.flush(Duration::from_secs(10)));
        assert_eq!(sink.dropped(), 1);
        assert!(sink.stuck());
    }

    /// A reader that stops (a full pipe) never blocks a writer: records are
    /// dropped and counted, and the sink reports itself stuck.
    #[test]
    fn a_stuck_reader_drops_and_is_reported_never_blocks() {
        let (reader, writer) = std::io::pipe().unwrap();
        let sink =
            Sink::writer(std::fs::File::from(std::os::fd::OwnedFd::from(writer)), 4).unwrap();
        let rec = SecurityRecord {
            path: "/".repeat(MAX_FIELD_BYTES).into(),
            ..Default::default()
        };
        // a pipe holds 64 KiB: ~60 of these fill it, 4 more the queue; a
        // blocking write would never return from this loop
        for _ in 0..5_000 {
            sink.write(&rec);
        }
        assert!(sink.dropped() > 0);
        assert!(!sink.stuck(), "not stuck before STUCK_AFTER");
        assert!(
            !sink.flush(Duration::from_millis(50)),
            "a flush gives up on a reader that takes nothing"
        );
        drop(reader);
    }
}
