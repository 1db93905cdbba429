//! Security events to an OpenTelemetry collector: each line of the security
//! log as an OTLP log record, exported over OTLP/HTTP with the JSON
//! encoding (`POST <endpoint>`, `application/json`, an
//! `ExportLogsServiceRequest`), from one exporter thread.
//!
//! - A record's body is the line's JSON object as an OTLP `kvlistValue`
//!   (nested objects as `kvlistValue`, arrays as `arrayValue`, integers as
//!   `intValue`, other numbers as `doubleValue`), so a backend can query
//!   its fields; `timeUnixNano` is when the line was written;
//!   `severityNumber` / `severityText` follow the event (a refused request
//!   or a ban is WARN (13), an allowed request INFO (9), a lifted ban or an
//!   applied reload INFO2 (10), a refused reload ERROR (17)); the attribute
//!   `event.name` is `request`, `ban`, `unban` or `reload`. The resource
//!   carries `service.name` and `host.name`; the scope is
//!   `palisade.security`.
//! - TLS verifies the collector against `ca_file` (rustls); a client
//!   certificate is presented when configured. `http://` needs
//!   `dangerous_plaintext = true`.
//! - Delivery follows the OTLP/HTTP specification: 429, 502, 503 and 504
//!   and connection failures are retried with back-off (0.1 s doubling to
//!   5 s, or the `Retry-After` seconds the collector sends, at most 60 s);
//!   any other refusal drops the batch, counted and logged; a collector's
//!   `partialSuccess.rejectedLogRecords` are counted as dropped. As for
//!   syslog, stdout stays the complete record and a request never waits:
//!   at most [`QUEUE_RECORDS`] wait, further ones are dropped and counted.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::ops::Event;

/// Records waiting for the exporter at most.
pub const QUEUE_RECORDS: usize = 32 * 1024;
/// Records in one export request at most.
const BATCH_RECORDS: usize = 512;
/// Bytes of lines in one export request at most (its JSON is about three
/// times that): a collector refuses a request over its own limit, and a
/// refused batch is dropped.
const BATCH_BYTES: usize = 1 << 20;
/// Bytes of lines waiting for the exporter at most.
pub const QUEUE_BYTES: usize = 16 << 20;
/// The most of a collector's answer that is read: enough for any
/// `ExportLogsServiceResponse`; a longer one is not read further.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const RETRY_AFTER_MAX: u64 = 60;

/// `[otlp]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The logs endpoint, e.g. `https://collector:4318/v1/logs`.
    pub endpoint: String,
    /// PEM CA certificates the collector's certificate must chain to
    /// (`https` only).
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<(PathBuf, PathBuf)>,
    pub service_name: String,
    /// `host.name`; the machine's name unless set.
    pub hostname: Option<String>,
    /// One export request gives up after this long.
    pub timeout: Duration,
}

/// OTLP severity (number, text) of an event.
pub fn severity(event: Event) -> (u8, &'static str) {
    match event {
        Event::Request { allowed: true } => (9, "INFO"),
        Event::Request { allowed: false } | Event::Ban => (13, "WARN"),
        Event::Unban | Event::Reload { applied: true } => (10, "INFO2"),
        Event::Reload { applied: false } => (17, "ERROR"),
    }
}

/// A JSON value as an OTLP `AnyValue` in the protobuf JSON mapping (64-bit
/// integers as strings).
pub fn any_value(v: &Value) -> Value {
    match v {
        Value::Null => json!({}),
        Value::Bool(b) => json!({ "boolValue": b }),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => json!({ "intValue": i.to_string() }),
            // over i64::MAX: OTLP has no unsigned integer
            (None, Some(u)) => json!({ "doubleValue": u as f64 }),
            _ => json!({ "doubleValue": n.as_f64().unwrap_or(0.0) }),
        },
        Value::String(s) => json!({ "stringValue": s }),
        Value::Array(a) => {
            json!({ "arrayValue": { "values": a.iter().map(any_value).collect::<Vec<_>>() } })
        }
        Value::Object(o) => {
            json!({ "kvlistValue": { "values": o.iter().map(|(k, v)| json!({ "key": k, "value": any_value(v) })).collect::<Vec<_>>() } })
        }
    }
}

/// One record as queued: when, what, and the line.
struct Record {
    time_nanos: i64,
    event: Event,
    line: Vec<u8>,
}

/// The `ExportLogsServiceRequest` for `records`.
fn export_request(service: &str, host: &str, records: &[Record]) -> Vec<u8> {
    let logs: Vec<Value> = records
        .iter()
        .map(|r| {
            let body = serde_json::from_slice::<Value>(&r.line)
                .map(|v| any_value(&v))
                // every line is JSON; should one not be, it goes as text
                .unwrap_or_else(|_| json!({ "stringValue": String::from_utf8_lossy(&r.line) }));
            let (number, text) = severity(r.event);
            json!({
                "timeUnixNano": r.time_nanos.to_string(),
                "observedTimeUnixNano": r.time_nanos.to_string(),
                "severityNumber": number,
                "severityText": text,
                "body": body,
                "attributes": [{ "key": "event.name", "value": { "stringValue": r.event.msgid() } }],
            })
        })
        .collect();
    json!({
        "resourceLogs": [{
            "resource": { "attributes": [
                { "key": "service.name", "value": { "stringValue": service } },
                { "key": "host.name", "value": { "stringValue": host } },
            ]},
            "scopeLogs": [{
                "scope": { "name": "palisade.security" },
                "logRecords": logs,
            }],
        }]
    })
    .to_string()
    .into_bytes()
}

/// The queue to the exporter thread.
pub struct Exporter {
    tx: std::sync::mpsc::SyncSender<Record>,
    backlog: Arc<crate::ops::Backlog>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

/// What one export attempt came to.
enum Outcome {
    /// Accepted; the collector rejected this many records of it.
    Accepted(u64),
    /// Try the same batch again after this long.
    Retry(Option<Duration>, String),
    /// Refused for good: the batch is dropped.
    Refused(String),
}

async fn export(client: &reqwest::Client, endpoint: &str, body: Vec<u8>) -> Outcome {
    let resp = match client
        .post(endpoint)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return Outcome::Retry(None, error_chain(&e)),
    };
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(RETRY_AFTER_MAX)));
    // at most MAX_RESPONSE_BYTES of the answer: a collector (or whatever
    // answers in its place) streaming an endless body must not fill memory
    let mut resp = resp;
    let mut text = Vec::new();
    let mut whole = true;
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                text.extend_from_slice(&c);
                if text.len() > MAX_RESPONSE_BYTES {
                    whole = false;
                    break;
                }
            }
            Ok(None) => break,
            Err(_) => {
                whole = false;
                break;
            }
        }
    }
    if !whole {
        text.clear();
    }
    match status {
        200..=299 => {
            let rejected = serde_json::from_slice::<Value>(&text)
                .ok()
                .and_then(|v| {
                    let r = &v["partialSuccess"]["rejectedLogRecords"];
                    r.as_u64().or_else(|| r.as_str()?.parse().ok())
                })
                .unwrap_or(0);
            Outcome::Accepted(rejected)
        }
        429 | 502 | 503 | 504 => Outcome::Retry(retry_after, format!("HTTP {status}")),
        _ => Outcome::Refused(format!("HTTP {status}")),
    }
}

/// An error and its causes, on one line (reqwest's own message is only the
/// outermost: "error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl Exporter {
    /// Read the TLS files, build the HTTP client and start the exporter
    /// thread (a collector that is down at start is retried).
    pub fn start(cfg: &OtlpConfig) -> Result<Exporter, String> {
        let mut b = reqwest::Client::builder()
            .timeout(cfg.timeout)
            // the collector is named in the configuration: no proxy from
            // the environment stands between
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &cfg.ca_file {
            let mut tls = crate::ops::tls_client("otlp", ca, cfg.client_cert.as_ref())?;
            Arc::make_mut(&mut tls).alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            b = b.tls_backend_preconfigured(Arc::unwrap_or_clone(tls));
        }
        let client = b
            .build()
            .map_err(|e| format!("otlp: {}", error_chain(&e)))?;
        let host = match &cfg.hostname {
            Some(h) => h.clone(),
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("otlp: {e}"))?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Record>(QUEUE_RECORDS);
        let backlog = Arc::new(crate::ops::Backlog::new(
            QUEUE_BYTES,
            "palisade_gateway_otlp_dropped_total",
            "OTLP log records dropped (their lines are in the security log)",
        ));
        let st = backlog.clone();
        let endpoint = cfg.endpoint.clone();
        let service = cfg.service_name.clone();
        std::thread::Builder::new()
            .name("otlp".into())
            .spawn(move || run(rx, st, rt, client, endpoint, service, host))
            .map_err(|e| format!("otlp: cannot start its thread: {e}"))?;
        Ok(Exporter { tx, backlog })
    }

    /// Records exported so far (accepted by the collector).
    pub fn sent(&self) -> u64 {
        self.backlog.sent()
    }

    /// Records dropped so far.
    pub fn dropped(&self) -> u64 {
        self.backlog.dropped()
    }
}

impl crate::ops::Forward for Exporter {
    fn send(&self, event: Event, line: &[u8]) {
        let len = line.len();
        if !self.backlog.admit(len) {
            self.backlog
                .drop_one("the collector is not keeping up or unreachable");
            return;
        }
        let rec = Record {
            time_nanos: palisade_core::now_nanos(),
            event,
            line: line.to_vec(),
        };
        if self.tx.try_send(rec).is_err() {
            self.backlog.unadmit(len);
            self.backlog
                .drop_one("the collector is not keeping up or unreachable");
        }
    }

    fn flush(&self, limit: Duration) -> bool {
        self.backlog.flush(limit)
    }
}

/// The exporter thread: batches of records, each exported until accepted
/// or refused for good.
fn run(
    rx: std::sync::mpsc::Receiver<Record>,
    st: Arc<crate::ops::Backlog>,
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    endpoint: String,
    service: String,
    host: String,
) {
    let mut failing = false;
    // a record taken from the queue that did not fit in the last batch
    let mut next: Option<Record> = None;
    loop {
        let first = match next.take() {
            Some(r) => r,
            None => match rx.recv() {
                Ok(r) => r,
                Err(_) => return,
            },
        };
        let mut bytes = first.line.len();
        let mut batch = vec![first];
        while batch.len() < BATCH_RECORDS && bytes < BATCH_BYTES {
            match rx.try_recv() {
                Ok(r) if bytes + r.line.len() > BATCH_BYTES => {
                    next = Some(r);
                    break;
                }
                Ok(r) => {
                    bytes += r.line.len();
                    batch.push(r);
                }
                Err(_) => break,
            }
        }
        let n = batch.len();
        let body = export_request(&service, &host, &batch);
        let mut backoff = BACKOFF_MIN;
        let mut sent = 0;
        loop {
            match rt.block_on(export(&client, &endpoint, body.clone())) {
                Outcome::Accepted(rejected) => {
                    let rejected = rejected.min(n as u64);
                    sent = n as u64 - rejected;
                    metrics::counter!("palisade_gateway_otlp_sent_total").increment(sent);
                    if rejected > 0 {
                        st.count_dropped(rejected);
                        tracing::error!(rejected, "the OTLP collector rejected log records");
                    }
                    if failing {
                        tracing::info!(endpoint = %endpoint, "OTLP collector reachable again");
                        failing = false;
                    }
                    break;
                }
                Outcome::Retry(after, why) => {
                    if !failing {
                        tracing::error!(endpoint = %endpoint, error = %why, "OTLP export failed; retrying");
                        failing = true;
                    }
                    metrics::counter!("palisade_gateway_otlp_export_failures_total").increment(1);
                    // the collector's Retry-After, never less than the
                    // back-off (a `Retry-After: 0` would make a busy loop)
                    std::thread::sleep(after.map_or(backoff, |a| a.max(backoff)));
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Outcome::Refused(why) => {
                    st.count_dropped(n as u64);
                    tracing::error!(endpoint = %endpoint, error = %why, records = n, "the OTLP collector refused a batch; dropped");
                    break;
                }
            }
        }
        st.done(n, bytes, sent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_map_to_otlp_any_values() {
        let v = json!({"a": 1, "b": -2.5, "c": "x", "d": [true, null], "e": {"f": u64::MAX}});
        assert_eq!(
            any_value(&v),
            json!({"kvlistValue": {"values": [
                {"key": "a", "value": {"intValue": "1"}},
                {"key": "b", "value": {"doubleValue": -2.5}},
                {"key": "c", "value": {"stringValue": "x"}},
                {"key": "d", "value": {"arrayValue": {"values": [{"boolValue": true}, {}]}}},
                {"key": "e", "value": {"kvlistValue": {"values": [
                    {"key": "f", "value": {"doubleValue": u64::MAX as f64}}
                ]}}},
            ]}})
        );
    }

    #[test]
    fn an_export_request_carries_resource_scope_severity_and_event_name() {
        let recs = [Record {
            time_nanos: 1_796_522_400_123_456_789,
            event: Event::Ban,
            line: br#"{"event":"ban"}"#.to_vec(),
        }];
        let v: Value = serde_json::from_slice(&export_request("gw", "host-1", &recs)).unwrap();
        let rl = &v["resourceLogs"][0];
        assert_eq!(
            rl["resource"]["attributes"],
            json!([
                {"key": "service.name", "value": {"stringValue": "gw"}},
                {"key": "host.name", "value": {"stringValue": "host-1"}},
            ])
        );
        let r = &rl["scopeLogs"][0]["logRecords"][0];
        assert_eq!(rl["scopeLogs"][0]["scope"]["name"], "palisade.security");
        assert_eq!(r["timeUnixNano"], "1796522400123456789");
        assert_eq!(
            (r["severityNumber"].as_u64(), r["severityText"].as_str()),
            (Some(13), Some("WARN"))
        );
        assert_eq!(r["attributes"][0]["value"]["stringValue"], "ban");
        assert_eq!(
            r["body"],
            json!({"kvlistValue": {"values": [{"key": "event", "value": {"stringValue": "ban"}}]}})
        );
    }

    #[test]
    fn severities_follow_the_event() {
        assert_eq!(severity(Event::Request { allowed: true }), (9, "INFO"));
        assert_eq!(severity(Event::Request { allowed: false }), (13, "WARN"));
        assert_eq!(severity(Event::Unban), (10, "INFO2"));
        assert_eq!(severity(Event::Reload { applied: false }), (17, "ERROR"));
    }
}
