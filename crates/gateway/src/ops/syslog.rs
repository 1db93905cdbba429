//! Security events to a SIEM over syslog: each line of the security log
//! (a request's record, a ban, a reload) also goes out as one RFC 5424
//! message over TLS (RFC 5425: TLS 1.2 or 1.3, octet-counting framing
//! `LEN SP MSG`), from one forwarder thread.
//!
//! - `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG`: the facility
//!   is configured (`authpriv` by default), the severity follows the event
//!   (a refused request or a ban is a warning, an allowed request is
//!   informational, a lifted ban or an applied reload a notice, a refused
//!   reload an error); MSGID is `request`, `ban`, `unban` or `reload`; no
//!   structured data; MSG is the JSON line of the security log, without a
//!   BOM (RFC 5424 allows any MSG; a BOM in front of JSON breaks the JSON
//!   parsers of SIEMs, rsyslog keeps it in `%msg%`).
//! - The server's certificate is verified against `ca_file` (rustls,
//!   webpki); a client certificate is presented when configured. There is
//!   no plaintext mode.
//! - Delivery: the stdout log stays the complete record; syslog is a copy
//!   for the SIEM. A request never waits for it: lines queue (at most
//!   [`QUEUE_LINES`]); while the receiver is unreachable the forwarder
//!   reconnects with back-off (0.1 s doubling to 5 s) and sends the batch
//!   that failed again, so a line is delivered at least once; when the
//!   queue is full, further lines are dropped and counted
//!   (`palisade_gateway_syslog_dropped_total`, an error at most once a
//!   second). Syslog over TLS has no acknowledgement: lines written into a
//!   connection the receiver drops at that moment are lost, as with every
//!   RFC 5425 sender.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;

/// Lines waiting for the forwarder at most.
pub const QUEUE_LINES: usize = 32 * 1024;
/// Bytes of frames written at once at most.
const BATCH_BYTES: usize = 64 * 1024;
/// Connecting, the TLS handshake and a write give up after this long.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// `[syslog]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyslogConfig {
    /// `host:port` of the receiver (6514 is RFC 5425's port).
    pub address: String,
    /// The name the receiver's certificate must hold (the host of
    /// `address` unless set).
    pub server_name: String,
    /// PEM CA certificates the receiver's certificate must chain to.
    pub ca_file: PathBuf,
    /// PEM certificate chain and key presented to the receiver.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// RFC 5424 facility code (0–23).
    pub facility: u8,
    pub app_name: String,
    /// HOSTNAME; the machine's name (`/proc/sys/kernel/hostname`) unless set.
    pub hostname: Option<String>,
    /// The longest message (header and MSG) the receiver takes whole: a
    /// longer line is shrunk to fit (see [`shrink`]). A receiver cuts a
    /// longer message, and the rest arrives as a message of its own, whose
    /// every byte the request chose.
    pub max_message_bytes: usize,
}

/// [`SyslogConfig::max_message_bytes`] by default: under rsyslog's default
/// `maxMessageSize` (8,096 bytes, header included).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 8000;
/// Bytes of messages waiting for the forwarder at most.
pub const QUEUE_BYTES: usize = 16 << 20;

/// RFC 5424 facility names (§6.2.1) and their codes.
pub const FACILITIES: [(&str, u8); 24] = [
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("ntp", 12),
    ("audit", 13),
    ("alert", 14),
    ("clock", 15),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// What a security-log line records: its MSGID and severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A request's record; true when it was allowed.
    Request {
        allowed: bool,
    },
    Ban,
    Unban,
    Reload {
        applied: bool,
    },
}

impl Event {
    pub fn msgid(self) -> &'static str {
        match self {
            Event::Request { .. } => "request",
            Event::Ban => "ban",
            Event::Unban => "unban",
            Event::Reload { .. } => "reload",
        }
    }

    /// RFC 5424 severity: 3 error, 4 warning, 5 notice, 6 informational.
    pub fn severity(self) -> u8 {
        match self {
            Event::Request { allowed: true } => 6,
            Event::Request { allowed: false } | Event::Ban => 4,
            Event::Unban | Event::Reload { applied: true } => 5,
            Event::Reload { applied: false } => 3,
        }
    }
}

/// `s` as an RFC 5424 header field: printable US-ASCII (33–126) only,
/// other bytes as `?`, at most `max` bytes; `-` (the nil value) if empty.
pub fn header_field(s: &str, max: usize) -> String {
    let out: String = s
        .bytes()
        .take(max)
        .map(|b| {
            if (33..=126).contains(&b) {
                b as char
            } else {
                '?'
            }
        })
        .collect();
    if out.is_empty() { "-".into() } else { out }
}

/// One octet-counted RFC 5424 message (`LEN SP <PRI>1 ...`) carrying `msg`.
pub fn frame(
    facility: u8,
    event: Event,
    time_nanos: i64,
    hostname: &str,
    app_name: &str,
    procid: u32,
    msg: &[u8],
) -> Vec<u8> {
    // TIME-SECFRAC has at most 6 digits: microseconds
    let ts = palisade_core::rfc3339(time_nanos);
    let ts = match ts.find('.') {
        Some(dot) if ts.len() > dot + 7 => format!("{}Z", &ts[..dot + 7]),
        _ => ts,
    };
    let mut m = format!(
        "<{}>1 {ts} {hostname} {app_name} {procid} {} - ",
        u16::from(facility) * 8 + u16::from(event.severity()),
        event.msgid()
    )
    .into_bytes();
    m.extend_from_slice(msg);
    let mut out = format!("{} ", m.len()).into_bytes();
    out.extend_from_slice(&m);
    out
}

/// `line` (a JSON object) made to fit in `max` bytes: its longest string
/// values cut (to 256, then 64, then 16 characters, ending in `…`) until it
/// does; `None` when even that does not fit. The result is still one JSON
/// object, so a receiver never cuts a message and never parses a piece of
/// one as a message of its own.
pub fn shrink(line: &[u8], max: usize) -> Option<Vec<u8>> {
    if line.len() <= max {
        return Some(line.to_vec());
    }
    let mut v: serde_json::Value = serde_json::from_slice(line).ok()?;
    fn cut(v: &mut serde_json::Value, keep: usize) {
        match v {
            serde_json::Value::String(s) if s.chars().count() > keep => {
                let t: String = s.chars().take(keep).collect();
                *s = format!("{t}…");
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|x| cut(x, keep)),
            serde_json::Value::Object(o) => o.values_mut().for_each(|x| cut(x, keep)),
            _ => {}
        }
    }
    for keep in [256, 64, 16] {
        cut(&mut v, keep);
        let out = v.to_string().into_bytes();
        if out.len() <= max {
            return Some(out);
        }
    }
    None
}

/// The queue to the forwarder thread.
pub struct Forwarder {
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    backlog: Arc<crate::ops::Backlog>,
    facility: u8,
    hostname: String,
    app_name: String,
    procid: u32,
    max_message_bytes: usize,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").finish_non_exhaustive()
    }
}

type Conn = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// How long a new connection is watched for the receiver refusing it.
const ACCEPT_WAIT: Duration = Duration::from_millis(250);

/// An I/O error as the log says it: a socket timeout is "timed out" (the
/// OS says "Resource temporarily unavailable").
fn io_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => "timed out".into(),
        _ => e.to_string(),
    }
}

/// Whether the receiver still has the connection: what it sent is read
/// (waiting up to `wait`, or not at all) and processed, so a TLS alert or
/// the connection's end shows before a batch is written into it (as
/// rsyslog's own sender checks its connection before each send).
fn alive(c: &mut Conn, wait: Option<Duration>) -> Result<(), String> {
    use std::io::Read;
    let set = match wait {
        Some(d) => c.sock.set_read_timeout(Some(d)),
        None => c.sock.set_nonblocking(true),
    };
    set.map_err(|e| e.to_string())?;
    let result = loop {
        match c.conn.read_tls(&mut c.sock) {
            Ok(0) => break Err("the receiver closed the connection".to_string()),
            Ok(_) => match c.conn.process_new_packets() {
                Ok(st) => {
                    // nothing is expected from a syslog receiver: discard
                    let mut sink = [0u8; 1024];
                    while st.plaintext_bytes_to_read() > 0
                        && matches!(c.conn.reader().read(&mut sink), Ok(n) if n > 0)
                    {
                    }
                    if st.peer_has_closed() {
                        break Err("the receiver closed the connection".to_string());
                    }
                    // more may follow at once; never wait twice
                    if let Err(e) = c.sock.set_nonblocking(true) {
                        break Err(e.to_string());
                    }
                }
                Err(e) => break Err(format!("TLS: {e}")),
            },
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break Ok(());
            }
            Err(e) => break Err(e.to_string()),
        }
    };
    c.sock
        .set_nonblocking(false)
        .and_then(|()| c.sock.set_read_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    result
}

fn connect(
    address: &str,
    name: &ServerName<'static>,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Conn, String> {
    let addrs = address
        .to_socket_addrs()
        .map_err(|e| format!("resolving {address}: {e}"))?;
    let mut last = format!("{address} resolves to no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, IO_TIMEOUT) {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                tcp.set_write_timeout(Some(IO_TIMEOUT))
                    .and_then(|()| tcp.set_read_timeout(Some(IO_TIMEOUT)))
                    .map_err(|e| e.to_string())?;
                let conn = rustls::ClientConnection::new(tls.clone(), name.clone())
                    .map_err(|e| e.to_string())?;
                let mut s = rustls::StreamOwned::new(conn, tcp);
                // the handshake now, so a certificate the receiver refuses
                // (or that we refuse) is a connection error, not a lost batch
                while s.conn.is_handshaking() {
                    s.conn
                        .complete_io(&mut s.sock)
                        .map_err(|e| format!("TLS handshake with {a}: {}", io_error(&e)))?;
                }
                // with TLS 1.3 the receiver checks our certificate after the
                // handshake: a refusal (an alert, or the connection closed)
                // comes a moment later, and would eat the first batch
                alive(&mut s, Some(ACCEPT_WAIT)).map_err(|e| {
                    format!("{a}: {e} right after the TLS handshake (does the receiver refuse the client certificate, or want one?)")
                })?;
                return Ok(s);
            }
            Err(e) => last = format!("connecting to {a}: {e}"),
        }
    }
    Err(last)
}

impl Forwarder {
    /// Read the TLS files and start the forwarder thread (it connects on
    /// its own: a receiver that is down at start is retried).
    pub fn start(cfg: &SyslogConfig) -> Result<Forwarder, String> {
        let tls = crate::ops::tls_client("syslog", &cfg.ca_file, cfg.client_cert.as_ref())?;
        let name = ServerName::try_from(cfg.server_name.clone())
            .map_err(|_| format!("syslog: invalid server_name {:?}", cfg.server_name))?;
        let hostname = match &cfg.hostname {
            Some(h) => h.clone(),
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
        };
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(QUEUE_LINES);
        let backlog = Arc::new(crate::ops::Backlog::new(
            QUEUE_BYTES,
            "palisade_gateway_syslog_dropped_total",
            "syslog messages dropped (their lines are in the security log)",
        ));
        let st = backlog.clone();
        let address = cfg.address.clone();
        std::thread::Builder::new()
            .name("syslog".into())
            .spawn(move || run(rx, st, address, name, tls))
            .map_err(|e| format!("syslog: cannot start its thread: {e}"))?;
        Ok(Forwarder {
            tx,
            backlog,
            facility: cfg.facility,
            hostname: header_field(&hostname, 255),
            app_name: header_field(&cfg.app_name, 48),
            procid: std::process::id(),
            max_message_bytes: cfg.max_message_bytes,
        })
    }
}

impl crate::ops::Forward for Forwarder {
    /// Queue one security-log line (without its newline) as a message.
    fn send(&self, event: Event, line: &[u8]) {
        let frame_of = |line: &[u8]| {
            frame(
                self.facility,
                event,
                palisade_core::now_nanos(),
                &self.hostname,
                &self.app_name,
                self.procid,
                line,
            )
        };
        let mut msg = frame_of(line);
        // what the header and the length prefix take
        let overhead = msg.len() - line.len();
        let prefix = msg.iter().position(|&b| b == b' ').map_or(0, |i| i + 1);
        if msg.len() - prefix > self.max_message_bytes {
            let room = self
                .max_message_bytes
                .saturating_sub(overhead.saturating_sub(prefix));
            match shrink(line, room) {
                Some(small) => msg = frame_of(&small),
                None => {
                    self.drop_one("a line that does not fit in max_message_bytes even shrunk");
                    return;
                }
            }
        }
        let len = msg.len();
        if !self.backlog.admit(len) {
            self.backlog
                .drop_one("the receiver is not keeping up or unreachable");
            return;
        }
        if self.tx.try_send(msg).is_err() {
            self.backlog.unadmit(len);
            self.backlog
                .drop_one("the receiver is not keeping up or unreachable");
        }
    }

    /// Wait until every queued message has been written, for at most `limit`.
    fn flush(&self, limit: Duration) -> bool {
        self.backlog.flush(limit)
    }
}

impl Forwarder {
    fn drop_one(&self, why: &str) {
        self.backlog.drop_one(why);
    }

    /// Messages written so far.
    pub fn sent(&self) -> u64 {
        self.backlog.sent()
    }

    /// Messages dropped so far (the queue was full).
    pub fn dropped(&self) -> u64 {
        self.backlog.dropped()
    }
}

/// The forwarder thread: batches of frames, one connection, reconnected
/// with back-off; a batch whose write failed is sent again.
fn run(
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    st: Arc<crate::ops::Backlog>,
    address: String,
    name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
) {
    let mut conn: Option<Conn> = None;
    let mut batch: Vec<u8> = Vec::with_capacity(BATCH_BYTES);
    let mut lines = 0usize;
    let mut backoff = BACKOFF_MIN;
    // the connection's state as last logged: an outage is logged when it
    // starts and when it ends, not at every retry
    let mut failing = false;
    loop {
        if lines == 0 {
            batch.clear();
            match rx.recv() {
                Ok(first) => batch.extend_from_slice(&first),
                // the gateway is gone and everything queued was sent
                Err(_) => return,
            }
            lines = 1;
            while batch.len() < BATCH_BYTES {
                match rx.try_recv() {
                    Ok(m) => {
                        batch.extend_from_slice(&m);
                        lines += 1;
                    }
                    Err(_) => break,
                }
            }
        }
        // a connection the receiver closed (a restart) or refused is
        // replaced before the batch goes into it
        if let Some(c) = &mut conn
            && let Err(e) = alive(c, None)
        {
            if !failing {
                tracing::error!(address = %address, error = %e, "syslog connection lost; reconnecting");
                failing = true;
            }
            conn = None;
        }
        let c = match &mut conn {
            Some(c) => c,
            None => match connect(&address, &name, &tls) {
                Ok(c) => {
                    if failing {
                        tracing::info!(address = %address, "syslog receiver reachable again");
                        failing = false;
                    }
                    backoff = BACKOFF_MIN;
                    conn.insert(c)
                }
                Err(e) => {
                    if !failing {
                        tracing::error!(address = %address, error = %e, "syslog receiver unreachable; retrying");
                        failing = true;
                    }
                    metrics::counter!("palisade_gateway_syslog_connect_failures_total")
                        .increment(1);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            },
        };
        match c.write_all(&batch).and_then(|()| c.flush()) {
            Ok(()) => {
                st.done(lines, batch.len(), lines as u64);
                metrics::counter!("palisade_gateway_syslog_sent_total").increment(lines as u64);
                lines = 0;
                if batch.capacity() > 4 * BATCH_BYTES {
                    batch = Vec::with_capacity(BATCH_BYTES);
                }
            }
            Err(e) => {
                // the same batch goes again on a new connection
                let e = io_error(&e);
                if !failing {
                    tracing::error!(address = %address, error = %e, "syslog connection lost; reconnecting");
                    failing = true;
                }
                conn = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_an_octet_counted_rfc5424_message() {
        // 2026-12-06T02:00:00.123456789Z
        let t = 1_796_522_400_123_456_789;
        let f = frame(
            10,
            Event::Request { allowed: false },
            t,
            "gw-1",
            "palisade-gateway",
            42,
            br#"{"a":"\u00e9"}"#,
        );
        let s = String::from_utf8(f).unwrap();
        let (len, msg) = s.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), msg.len());
        // authpriv (10) * 8 + warning (4); microseconds, never nanoseconds
        assert_eq!(
            msg,
            r#"<84>1 2026-12-06T02:00:00.123456Z gw-1 palisade-gateway 42 request - {"a":"\u00e9"}"#
        );
    }

    #[test]
    fn severities_follow_the_event() {
        let pri = |e| {
            let f = String::from_utf8(frame(16, e, 0, "h", "a", 1, b"{}")).unwrap();
            f.split(['<', '>']).nth(1).unwrap().to_string()
        };
        assert_eq!(pri(Event::Request { allowed: true }), "134");
        assert_eq!(pri(Event::Request { allowed: false }), "132");
        assert_eq!(pri(Event::Ban), "132");
        assert_eq!(pri(Event::Unban), "133");
        assert_eq!(pri(Event::Reload { applied: true }), "133");
        assert_eq!(pri(Event::Reload { applied: false }), "131");
    }

    #[test]
    fn a_long_line_is_shrunk_to_fit_and_stays_one_json_object() {
        let line = serde_json::json!({
            "method": "X".repeat(7600),
            "path": format!("/{}<10>1 2026-12-06T03:00:00Z dc01.corp sshd 4242 auth - forged", "\"".repeat(900)),
            "status": 404,
            "nested": {"a": "é".repeat(3000)},
        })
        .to_string();
        let small = shrink(line.as_bytes(), 1900).unwrap();
        assert!(small.len() <= 1900, "{}", small.len());
        let v: serde_json::Value = serde_json::from_slice(&small).unwrap();
        assert_eq!(v["status"], 404);
        assert!(v["method"].as_str().unwrap().ends_with('…'));
        // what fits is left alone
        assert_eq!(shrink(b"{\"a\":1}", 100).unwrap(), b"{\"a\":1}");
        // keys alone over the limit: nothing fits
        let keys = serde_json::json!({ "k".repeat(3000): 1 }).to_string();
        assert_eq!(shrink(keys.as_bytes(), 2048), None);
    }

    /// Review of 2026-12-06: the queue was bounded by lines only (32,768
    /// of up to 60 KB each while the receiver was down: gigabytes).
    #[test]
    fn the_queue_is_bounded_in_bytes() {
        use crate::ops::Forward;
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.cert.pem()).unwrap();
        // nothing listens on port 1: every line waits
        let f = Forwarder::start(&SyslogConfig {
            address: "127.0.0.1:1".into(),
            server_name: "localhost".into(),
            ca_file: dir.path().join("ca.pem"),
            client_cert: None,
            facility: 10,
            app_name: "t".into(),
            hostname: Some("h".into()),
            max_message_bytes: 1 << 20,
        })
        .unwrap();
        let line = serde_json::json!({ "a": "x".repeat(100_000) }).to_string();
        for _ in 0..300 {
            f.send(Event::Ban, line.as_bytes());
        }
        // 30 MB sent, at most QUEUE_BYTES kept
        let kept = 300 - f.dropped() as usize;
        assert!(kept * line.len() <= QUEUE_BYTES, "{kept} kept");
        assert!(f.dropped() as usize >= 300 - QUEUE_BYTES / line.len());
    }

    #[test]
    fn header_fields_hold_printable_ascii_only() {
        assert_eq!(header_field("", 10), "-");
        assert_eq!(header_field("host name\n", 255), "host?name?");
        assert_eq!(header_field("é", 255), "??");
        assert_eq!(header_field(&"a".repeat(300), 255).len(), 255);
    }
}
