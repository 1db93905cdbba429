//! What one request carries through the pipeline: a typed context the
//! steps fill in order. The security-log record is written from it once the
//! response is known ([`RequestCtx::record`]); nothing reads the record to
//! decide anything.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use crate::error::GatewayError;
use crate::ops::log::SecurityRecord;
use crate::steps::principal::{Method as AuthMethod, PeerIdentity};
use crate::steps::route::Route;

/// What the listener knows about the connection.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub listener: Arc<str>,
    pub tls: bool,
    /// Boxed: most connections have none, and every idle connection
    /// holds a `ConnInfo`.
    pub identity: Option<Box<PeerIdentity>>,
}

/// How far the request got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Not (yet) authorized.
    Received,
    /// A CORS preflight, answered by the gateway.
    Preflight,
    /// Authorization allowed it: the ids of the policies that did.
    Permitted { policies: Arc<str> },
}

/// The status logged for a request whose client went away first (nginx's).
pub const CLIENT_CLOSED: u16 = 499;

/// One request's context.
#[derive(Debug)]
pub struct RequestCtx {
    pub request_id: String,
    pub started: Instant,
    /// When the request started (RFC 3339).
    pub time: String,
    pub conn: Arc<ConnInfo>,
    /// The TCP peer, or behind a trusted proxy the address it forwarded.
    pub client: IpAddr,
    pub client_ip: String,
    pub method: hyper::Method,
    /// The raw path's length (logged while the path is not normalised).
    pub raw_path_len: usize,
    /// The normalised path, once the inspect step made it.
    pub path: Option<String>,
    /// The canonical host, once the host step made it.
    pub host: Option<String>,
    pub route: Option<Arc<Route>>,
    /// The principal's log label and method, once authenticated.
    pub principal: Option<(String, AuthMethod)>,
    pub stage: Stage,
    /// `pool/endpoint` that answered.
    pub upstream: Option<String>,
    /// The request's Content-Length, when it had one.
    pub bytes_in: u64,
    /// What the inspection step found in detect mode (block mode refuses).
    pub inspection: Option<String>,
}

impl RequestCtx {
    pub fn new(
        conn: Arc<ConnInfo>,
        client: IpAddr,
        request_id: String,
        method: hyper::Method,
        raw_path_len: usize,
    ) -> Self {
        Self {
            request_id,
            started: Instant::now(),
            time: palisade_core::rfc3339(palisade_core::now_nanos()),
            conn,
            client,
            client_ip: crate::steps::client_ip::ip_text(client),
            method,
            raw_path_len,
            path: None,
            host: None,
            route: None,
            principal: None,
            stage: Stage::Received,
            upstream: None,
            bytes_in: 0,
            inspection: None,
        }
    }

    /// Authorization allowed the request: time past this point went to the
    /// upstream.
    pub fn permitted(&self) -> bool {
        matches!(self.stage, Stage::Permitted { .. })
    }

    /// The record of a request whose client went away before it was
    /// answered: 499; "allow" once authorization let it through (it may
    /// have reached the service), else "deny" (nothing was forwarded).
    pub fn record_client_closed(&self) -> SecurityRecord<'_> {
        let mut rec = self.record(None, CLIENT_CLOSED, 0);
        rec.decision = if self.permitted() { "allow" } else { "deny" };
        rec.reason = Cow::Borrowed("client_closed_request");
        rec
    }

    /// The security-log record of the finished request: `error` is what
    /// refused it (None: allowed and answered). Borrows from the context.
    pub fn record(
        &self,
        error: Option<&GatewayError>,
        status: u16,
        bytes_out: u64,
    ) -> SecurityRecord<'_> {
        let (decision, reason, category) = match (error, &self.stage) {
            (Some(e), _) => ("deny", Cow::Owned(e.log_reason()), e.category()),
            (None, Stage::Permitted { policies }) => {
                ("allow", Cow::Owned(["policy:", policies].concat()), None)
            }
            (None, Stage::Preflight) => ("allow", Cow::Borrowed("cors_preflight"), None),
            (None, Stage::Received) => ("allow", Cow::Borrowed(""), None),
        };
        let (principal, auth_method) = match &self.principal {
            Some((label, m)) => (Cow::Borrowed(label.as_str()), Cow::Borrowed(m.as_str())),
            None => (Cow::Borrowed(""), Cow::Borrowed("")),
        };
        SecurityRecord {
            time: Cow::Borrowed(&self.time),
            request_id: Cow::Borrowed(&self.request_id),
            listener: Cow::Borrowed(&self.conn.listener),
            client_ip: Cow::Borrowed(&self.client_ip),
            method: Cow::Borrowed(self.method.as_str()),
            path: match &self.path {
                Some(p) => Cow::Borrowed(p),
                None => Cow::Owned(
                    [
                        "<",
                        itoa::Buffer::new().format(self.raw_path_len),
                        " bytes unnormalised>",
                    ]
                    .concat(),
                ),
            },
            host: Cow::Borrowed(self.host.as_deref().unwrap_or_default()),
            route: Cow::Borrowed(
                self.route
                    .as_ref()
                    .map(|r| r.name.as_str())
                    .unwrap_or_default(),
            ),
            principal,
            auth_method,
            decision,
            reason,
            category,
            status,
            latency_us: self.started.elapsed().as_micros() as u64,
            bytes_in: self.bytes_in,
            bytes_out,
            upstream: Cow::Borrowed(self.upstream.as_deref().unwrap_or_default()),
            inspection: Cow::Borrowed(self.inspection.as_deref().unwrap_or_default()),
        }
    }
}
