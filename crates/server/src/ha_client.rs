//! The standby's HTTP client to the active node (issue #19, docs/ha.md).
//!
//! Keep-alive HTTP/1.1 connections on hyper's connection API, TLS through
//! rustls (tokio-rustls) when the active node's address is `https`. It does
//! what forwarding needs and nothing else, which a general HTTP client cannot
//! promise:
//!
//! - the request target is written exactly as the standby received it (the
//!   bytes the MAC covers, the path the standby canonicalised): no URL parser
//!   stands between the two nodes to normalise dot segments or re-encode;
//! - no proxy, no redirects, no decompression, no cookies;
//! - connections are kept per address of the active node, and a pooled
//!   connection the active node closed while idle is replaced without the
//!   request having been sent (retried on a new connection).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use rustls_pki_types::ServerName;

/// Idle connections kept to the active node (more are opened under load and
/// closed after their request).
const MAX_IDLE: usize = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request was not answered; never carries request data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendError {
    /// No connection could be made: the request was not sent.
    Connect,
    /// The TLS handshake failed (the active node's certificate was not
    /// trusted, or TLS itself failed): the request was not sent.
    Tls,
    Timeout,
    /// Sent (or possibly sent) and then failed.
    Request,
    Body,
}

impl SendError {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Tls => "tls handshake",
            Self::Timeout => "timeout",
            Self::Request => "request",
            Self::Body => "body",
        }
    }
}

/// An active node's address, parsed once.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// As announced (`https://10.0.0.2:8200`): what pooled connections are
    /// matched on.
    addr: String,
    /// `host:port`, to connect to and for `Host` when a request has none.
    authority: String,
    /// For TLS (`https`): the name the certificate must carry.
    server_name: Option<ServerName<'static>>,
}

impl Target {
    fn parse(addr: &str) -> Option<Self> {
        let u = url::Url::parse(addr).ok()?;
        let tls = match u.scheme() {
            "https" => true,
            "http" => false,
            _ => return None,
        };
        let host = u.host_str()?;
        let port = u.port_or_known_default()?;
        let authority = format!("{host}:{port}");
        let server_name = if tls {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            Some(ServerName::try_from(bare.to_string()).ok()?)
        } else {
            None
        };
        Some(Self {
            addr: addr.to_string(),
            authority,
            server_name,
        })
    }
}

type Conn = SendRequest<Full<Bytes>>;

pub(crate) struct ForwardClient {
    tls: tokio_rustls::TlsConnector,
    timeout: Duration,
    /// How long a connection may wait idle in the pool: below the active
    /// node's idle timeout, so a request is not written just as the active
    /// node closes the connection.
    keep_idle: Duration,
    /// The active node's address as last parsed.
    target: Mutex<Option<Arc<Target>>>,
    /// Idle connections, with when each was returned.
    idle: Mutex<Vec<(Arc<Target>, Conn, Instant)>>,
}

impl ForwardClient {
    /// `roots_pem`: the CA certificates an `https` active node's certificate
    /// must chain to (`[ha] tls_ca_file`); without them, the platform's.
    pub(crate) fn new(
        roots_pem: Option<&[u8]>,
        timeout: Duration,
        keep_idle: Duration,
    ) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let mut config = match roots_pem {
            Some(pem) => {
                use rustls_pki_types::CertificateDer;
                use rustls_pki_types::pem::PemObject;
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(pem) {
                    let c = c.map_err(|_| "not a PEM certificate bundle".to_string())?;
                    roots
                        .add(c)
                        .map_err(|e| format!("not a usable CA certificate: {e}"))?;
                }
                if roots.is_empty() {
                    return Err("holds no PEM certificate".into());
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            None => {
                let verifier = rustls_platform_verifier::Verifier::new(provider)
                    .map_err(|e| format!("TLS: the platform's verifier: {e}"))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier))
                    .with_no_client_auth()
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            timeout,
            keep_idle,
            target: Mutex::new(None),
            idle: Mutex::new(Vec::new()),
        })
    }

    fn target(&self, addr: &str) -> Option<Arc<Target>> {
        let mut g = self.target.lock().ok()?;
        if let Some(t) = g.as_ref().filter(|t| t.addr == addr) {
            return Some(t.clone());
        }
        let t = Arc::new(Target::parse(addr)?);
        *g = Some(t.clone());
        Some(t)
    }

    /// An idle connection to `t` that can take a request now.
    fn checkout(&self, t: &Arc<Target>) -> Option<Conn> {
        let mut g = self.idle.lock().ok()?;
        // connections to a former active node are useless, and one idle
        // for long may be closed by the active node as it is used: dropped
        g.retain(|(to, c, since)| {
            Arc::ptr_eq(to, t) && !c.is_closed() && since.elapsed() < self.keep_idle
        });
        while let Some((_, c, _)) = g.pop() {
            if c.is_ready() {
                return Some(c);
            }
        }
        None
    }

    fn checkin(&self, t: Arc<Target>, c: Conn) {
        if c.is_closed() {
            return;
        }
        if let Ok(mut g) = self.idle.lock()
            && g.len() < MAX_IDLE
        {
            g.push((t, c, Instant::now()));
        }
    }

    async fn connect(&self, t: &Target) -> Result<Conn, SendError> {
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(t.authority.as_str()),
        )
        .await
        .map_err(|_| SendError::Connect)?
        .map_err(|_| SendError::Connect)?;
        let _ = tcp.set_nodelay(true);
        match &t.server_name {
            None => handshake(tcp).await,
            Some(name) => {
                let tls =
                    tokio::time::timeout(CONNECT_TIMEOUT, self.tls.connect(name.clone(), tcp))
                        .await
                        .map_err(|_| SendError::Tls)?
                        .map_err(|_| SendError::Tls)?;
                handshake(tls).await
            }
        }
    }

    /// Send `req` (its URI is the origin-form target, sent as it is) to the
    /// node at `addr` and read the whole answer.
    pub(crate) async fn send(
        &self,
        addr: &str,
        mut req: hyper::Request<Full<Bytes>>,
    ) -> Result<hyper::Response<Bytes>, SendError> {
        let t = self.target(addr).ok_or(SendError::Connect)?;
        if !req.headers().contains_key(hyper::header::HOST)
            && let Ok(v) = hyper::header::HeaderValue::from_str(&t.authority)
        {
            req.headers_mut().insert(hyper::header::HOST, v);
        }
        tokio::time::timeout(self.timeout, self.exchange(t, req))
            .await
            .map_err(|_| SendError::Timeout)?
    }

    async fn exchange(
        &self,
        t: Arc<Target>,
        req: hyper::Request<Full<Bytes>>,
    ) -> Result<hyper::Response<Bytes>, SendError> {
        let mut req = req;
        // a pooled connection first; one the active node closed before the
        // request was written gives the request back, and a new connection
        // takes it
        let (mut conn, resp) = loop {
            let (mut conn, pooled) = match self.checkout(&t) {
                Some(c) => (c, true),
                None => (self.connect(&t).await?, false),
            };
            if !pooled {
                conn.ready().await.map_err(|_| SendError::Connect)?;
            }
            match conn.try_send_request(req).await {
                Ok(r) => break (conn, r),
                Err(mut e) => match e.take_message() {
                    Some(r) if pooled => req = r,
                    Some(_) if !pooled => return Err(SendError::Connect),
                    _ => return Err(SendError::Request),
                },
            }
        };
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|_| SendError::Body)?
            .to_bytes();
        // reusable once the answer was read whole
        if conn.ready().await.is_ok() {
            self.checkin(t, conn);
        }
        Ok(hyper::Response::from_parts(parts, body))
    }
}

async fn handshake<T>(io: T) -> Result<Conn, SendError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(|_| SendError::Connect)?;
    tokio::spawn(async move {
        // ends when the connection closes or every handle is dropped
        let _ = conn.await;
    });
    Ok(send)
}

#[cfg(test)]
mod tests {
    use super::{ForwardClient, Target};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A keep-alive HTTP/1.1 server on loopback that answers 200 and counts
    /// the connections it accepted.
    async fn counting_server() -> (String, Arc<AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", l.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let n = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                n.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_r| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                        ))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    fn get() -> hyper::Request<http_body_util::Full<bytes::Bytes>> {
        let mut r = hyper::Request::new(http_body_util::Full::default());
        *r.uri_mut() = hyper::Uri::from_static("/v1/sys/health");
        r
    }

    /// A pooled connection is reused within `keep_idle` and never after it
    /// (the active node may be closing it just then: a review measured 502s
    /// with a 1 s `http_idle_timeout`).
    #[tokio::test]
    async fn pooled_connections_are_reused_only_while_fresh() {
        let (addr, accepted) = counting_server().await;
        let c =
            ForwardClient::new(None, Duration::from_secs(5), Duration::from_millis(300)).unwrap();
        for _ in 0..3 {
            let r = c.send(&addr, get()).await.unwrap();
            assert_eq!(
                (r.status().as_u16(), r.body().as_ref()),
                (200, b"ok".as_slice())
            );
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "reused while fresh");
        tokio::time::sleep(Duration::from_millis(400)).await;
        let r = c.send(&addr, get()).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "not reused once stale");
    }

    #[test]
    fn addresses_parse_once_into_what_a_connection_needs() {
        let t = Target::parse("https://10.0.0.2:8200").unwrap();
        assert_eq!(t.authority, "10.0.0.2:8200");
        assert!(t.server_name.is_some());
        let t = Target::parse("http://node-a.example").unwrap();
        assert_eq!(t.authority, "node-a.example:80");
        assert!(t.server_name.is_none());
        let t = Target::parse("https://[::1]:8200/").unwrap();
        assert_eq!(t.authority, "[::1]:8200");
        assert_eq!(
            t.server_name.as_ref().map(|n| n.to_str().into_owned()),
            Some("::1".to_string())
        );
        for bad in ["ftp://node:21", "node:8200", ""] {
            assert!(Target::parse(bad).is_none(), "{bad}");
        }
    }
}
