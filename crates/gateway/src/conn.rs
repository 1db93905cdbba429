//! Lean client connections for HTTPS listeners (pipeline step 1).
//!
//! [`TlsConn`] runs rustls's *unbuffered* API over a tokio `TcpStream`: the
//! ciphertext and plaintext buffers are owned here, not inside rustls, so
//! they can be given back while a connection waits. [`serve_h1`] serves
//! HTTP/1.1 on such a connection and, whenever the connection is idle
//! between requests, takes it back from hyper (dropping hyper's read and
//! write buffers), releases the TLS buffers and waits for the next bytes
//! holding nothing but the socket and the TLS session keys. That is what
//! keeps 10,000 idle keep-alive connections small (nginx does the same: it
//! frees a kept-alive connection's buffers).
//!
//! Idle means: no request is in flight (a counter raised by the service and
//! lowered when hyper drops the response body) and hyper asked for more
//! bytes that have not arrived. hyper is then told to shut down gracefully,
//! which on an idle HTTP/1 connection ends it at once without writing
//! anything; bytes hyper had already read (a partial next request) are
//! handed back and read again by the next hyper connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// First read size; grown (doubling) while a record or handshake message
/// does not fit.
const READ_CHUNK: usize = 4096;
/// Largest buffered ciphertext: a handshake message may span records up to
/// 64 KiB (a client certificate chain), plus one maximal record.
const MAX_INCOMING: usize = 64 * 1024 + 16 * 1024 + 2048 + 5;
/// How long an HTTP/1.1 connection stays idle, holding hyper's buffers,
/// before it is parked.
const IDLE_GRACE: Duration = Duration::from_millis(25);
/// Plaintext taken per write call.
const MAX_WRITE_CHUNK: usize = 64 * 1024;
/// Ciphertext queued before a write waits for the socket.
const MAX_QUEUED: usize = 64 * 1024;

fn tls_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

enum Step {
    /// rustls made progress (decrypted, encoded); call again.
    Continue,
    /// Nothing to do until more ciphertext arrives.
    NeedInput,
    /// The requested plaintext (or close_notify) was encrypted.
    Wrote(usize),
    /// The peer sent close_notify.
    PeerClosed,
}

/// A server-side TLS connection with buffers owned by us.
pub struct TlsConn {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// Received ciphertext, `incoming[..in_len]`.
    incoming: Vec<u8>,
    in_len: usize,
    /// Decrypted plaintext not yet read, `plain[plain_pos..]`.
    plain: Vec<u8>,
    plain_pos: usize,
    /// Ciphertext not yet written, `outgoing[out_pos..out_len]`.
    outgoing: Vec<u8>,
    out_pos: usize,
    out_len: usize,
    read_eof: bool,
    close_sent: bool,
}

impl TlsConn {
    /// Run the server handshake on `tcp`. On failure the alert rustls
    /// chose (unknown_ca, certificate_required, ...) is sent first.
    ///
    /// Boxed: the connection's task then holds a pointer, not the session.
    pub async fn accept(
        tcp: TcpStream,
        config: Arc<rustls::ServerConfig>,
    ) -> io::Result<Box<Self>> {
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut s = Box::new(Self {
            tcp,
            conn,
            incoming: Vec::new(),
            in_len: 0,
            plain: Vec::new(),
            plain_pos: 0,
            outgoing: Vec::new(),
            out_pos: 0,
            out_len: 0,
            read_eof: false,
            close_sent: false,
        });
        loop {
            match s.step(None, false) {
                Ok(Step::Continue) => {}
                Ok(Step::NeedInput | Step::Wrote(_)) => {
                    std::future::poll_fn(|cx| s.flush_out(cx)).await?;
                    if !s.conn.is_handshaking() {
                        return Ok(s);
                    }
                    if std::future::poll_fn(|cx| s.fill(cx)).await? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
                Ok(Step::PeerClosed) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Err(e) => {
                    s.queue_alert();
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        std::future::poll_fn(|cx| s.flush_out(cx)),
                    )
                    .await;
                    return Err(e);
                }
            }
        }
    }

    /// True when the client negotiated HTTP/2 by ALPN.
    pub fn is_h2(&self) -> bool {
        self.conn.alpn_protocol() == Some(b"h2")
    }

    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    /// Bytes already here that the next reader will get without waiting.
    pub fn has_pending_input(&self) -> bool {
        self.plain_pos < self.plain.len() || self.in_len > 0
    }

    pub fn read_eof(&self) -> bool {
        self.read_eof
    }

    /// Give back every buffer that holds nothing.
    pub fn release(&mut self) {
        if self.in_len == 0 {
            self.incoming = Vec::new();
        }
        if self.plain_pos >= self.plain.len() {
            self.plain = Vec::new();
            self.plain_pos = 0;
        }
        if self.out_pos >= self.out_len {
            self.outgoing = Vec::new();
            self.out_pos = 0;
            self.out_len = 0;
        }
    }

    /// Put plaintext back in front of what is still unread.
    pub fn unread(&mut self, bytes: &[u8]) {
        let mut v = Vec::with_capacity(bytes.len() + self.plain.len() - self.plain_pos);
        v.extend_from_slice(bytes);
        v.extend_from_slice(&self.plain[self.plain_pos..]);
        self.plain = v;
        self.plain_pos = 0;
    }

    /// Wait until the socket has bytes (or EOF) without holding a buffer.
    pub async fn readable(&self) -> io::Result<()> {
        self.tcp.readable().await
    }

    /// One call into rustls: process buffered ciphertext and either move
    /// decrypted records to `plain`, queue handshake/alert bytes, or, when
    /// rustls is ready for application data, encrypt `write` (or a
    /// close_notify).
    fn step(&mut self, write: Option<&[u8]>, close_notify: bool) -> io::Result<Step> {
        let UnbufferedStatus { discard, state } = self
            .conn
            .process_tls_records(&mut self.incoming[..self.in_len]);
        let out = match state {
            Err(e) => Err(tls_error(e)),
            Ok(ConnectionState::ReadTraffic(mut r)) => {
                let mut res = Ok(Step::Continue);
                while let Some(rec) = r.next_record() {
                    match rec {
                        Ok(rec) => self.plain.extend_from_slice(rec.payload),
                        Err(e) => {
                            res = Err(tls_error(e));
                            break;
                        }
                    }
                }
                res
            }
            Ok(ConnectionState::EncodeTlsData(mut e)) => loop {
                match e.encode(&mut self.outgoing[self.out_len..]) {
                    Ok(n) => {
                        self.out_len += n;
                        break Ok(Step::Continue);
                    }
                    Err(EncodeError::InsufficientSize(s)) => {
                        self.outgoing.resize(self.out_len + s.required_size, 0)
                    }
                    Err(e) => break Err(tls_error(e)),
                }
            },
            // the bytes are in `outgoing`, which is written in order before
            // anything encoded later
            Ok(ConnectionState::TransmitTlsData(t)) => {
                t.done();
                Ok(Step::Continue)
            }
            Ok(ConnectionState::BlockedHandshake) => Ok(Step::NeedInput),
            Ok(ConnectionState::WriteTraffic(mut w)) => {
                if let Some(data) = write {
                    loop {
                        match w.encrypt(data, &mut self.outgoing[self.out_len..]) {
                            Ok(n) => {
                                self.out_len += n;
                                break Ok(Step::Wrote(data.len()));
                            }
                            Err(EncryptError::InsufficientSize(s)) => {
                                self.outgoing.resize(self.out_len + s.required_size, 0)
                            }
                            Err(e) => break Err(tls_error(e)),
                        }
                    }
                } else if close_notify {
                    loop {
                        match w.queue_close_notify(&mut self.outgoing[self.out_len..]) {
                            Ok(n) => {
                                self.out_len += n;
                                break Ok(Step::Wrote(0));
                            }
                            Err(EncryptError::InsufficientSize(s)) => {
                                self.outgoing.resize(self.out_len + s.required_size, 0)
                            }
                            Err(e) => break Err(tls_error(e)),
                        }
                    }
                } else {
                    Ok(Step::NeedInput)
                }
            }
            Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => Ok(Step::PeerClosed),
            // early data is never enabled (max_early_data_size = 0)
            Ok(other) => Err(tls_error(format!("unexpected TLS state {other:?}"))),
        };
        if discard > 0 {
            self.incoming.copy_within(discard..self.in_len, 0);
            self.in_len -= discard;
        }
        out
    }

    /// After an error: queue the fatal alert rustls recorded, if any.
    fn queue_alert(&mut self) {
        for _ in 0..4 {
            if !matches!(self.step(None, false), Ok(Step::Continue)) {
                break;
            }
        }
    }

    /// Read more ciphertext from the socket. Ready(Ok(0)) is EOF.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.incoming.len() - self.in_len < 512 {
            if self.in_len >= MAX_INCOMING {
                return Poll::Ready(Err(tls_error("TLS message too large")));
            }
            let want = if self.incoming.is_empty() {
                READ_CHUNK
            } else {
                (self.incoming.len() * 2).min(MAX_INCOMING)
            };
            self.incoming.resize(want, 0);
        }
        let mut rb = ReadBuf::new(&mut self.incoming[self.in_len..]);
        ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        self.in_len += n;
        Poll::Ready(Ok(n))
    }

    /// Write queued ciphertext to the socket.
    fn flush_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out_len {
            let n = ready!(
                Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.out_pos..self.out_len])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.out_pos = 0;
        self.out_len = 0;
        Poll::Ready(Ok(()))
    }

    /// A fatal error while serving: send the alert if the socket takes it now.
    fn fail(&mut self, cx: &mut Context<'_>, e: io::Error) -> io::Error {
        self.queue_alert();
        let _ = self.flush_out(cx);
        e
    }

    /// Send close_notify and FIN.
    pub async fn close(&mut self) {
        // boxed: rare, and it would otherwise enlarge every connection's task
        let _ = Box::pin(tokio::time::timeout(
            Duration::from_secs(1),
            self.shutdown(),
        ))
        .await;
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plain_pos < this.plain.len() {
                let n = buf.remaining().min(this.plain.len() - this.plain_pos);
                buf.put_slice(&this.plain[this.plain_pos..this.plain_pos + n]);
                this.plain_pos += n;
                if this.plain_pos == this.plain.len() {
                    this.plain.clear();
                    this.plain_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.read_eof {
                return Poll::Ready(Ok(()));
            }
            match this.step(None, false) {
                Ok(Step::Continue | Step::Wrote(_)) => {}
                Ok(Step::PeerClosed) => this.read_eof = true,
                Ok(Step::NeedInput) => {
                    // post-handshake bytes rustls queued (tickets, key updates)
                    if this.out_pos < this.out_len
                        && let Poll::Ready(Err(e)) = this.flush_out(cx)
                    {
                        return Poll::Ready(Err(e));
                    }
                    match ready!(this.fill(cx)) {
                        Ok(0) => this.read_eof = true,
                        Ok(_) => {}
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                Err(e) => return Poll::Ready(Err(this.fail(cx, e))),
            }
        }
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out_len - this.out_pos >= MAX_QUEUED {
            ready!(this.flush_out(cx))?;
        }
        let data = &data[..data.len().min(MAX_WRITE_CHUNK)];
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            match this.step(Some(data), false) {
                Ok(Step::Wrote(n)) => {
                    // start sending now; what the socket does not take waits
                    // for poll_flush (the waker is registered)
                    if let Poll::Ready(Err(e)) = this.flush_out(cx) {
                        return Poll::Ready(Err(e));
                    }
                    return Poll::Ready(Ok(n));
                }
                Ok(Step::Continue) => {}
                Ok(Step::PeerClosed) => this.read_eof = true,
                Ok(Step::NeedInput) => {
                    return Poll::Ready(Err(tls_error("TLS connection not ready for data")));
                }
                Err(e) => return Poll::Ready(Err(this.fail(cx, e))),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().flush_out(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            this.close_sent = true;
            for _ in 0..8 {
                match this.step(None, true) {
                    Ok(Step::Continue) => {}
                    Ok(Step::PeerClosed) => this.read_eof = true,
                    _ => break,
                }
            }
        }
        ready!(this.flush_out(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

/// Per-connection request accounting shared with the service.
#[derive(Default)]
pub struct ConnState {
    in_flight: AtomicU32,
    /// Requests started (wrapping): tells a new request from a long idle.
    started: AtomicU32,
    idle: AtomicBool,
    /// Times the connection was parked (released its buffers while idle).
    parked: AtomicU32,
}

impl ConnState {
    pub fn parked(&self) -> u32 {
        self.parked.load(Ordering::Relaxed)
    }
}

/// Held from the service call until hyper drops the response body.
pub struct Busy(Arc<ConnState>);

impl Busy {
    pub fn new(state: &Arc<ConnState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        state.started.fetch_add(1, Ordering::Relaxed);
        Self(state.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its connection counted busy until dropped.
pub struct Tracked<B> {
    pub inner: B,
    pub busy: Option<Busy>,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The TLS connection as hyper sees it: marks the connection idle when a
/// read finds nothing while no request is in flight and every byte hyper
/// read so far went to a request that started. Bytes read since the last
/// request started may be a partial head: such a connection is not idle,
/// so hyper's head deadline keeps running (parking and serving the bytes
/// again would restart it, a slowloris gift).
struct Watched {
    io: Box<TlsConn>,
    state: Arc<ConnState>,
    /// `state.started` when hyper last got bytes.
    read_mark: Option<u32>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut *this.io).poll_read(cx, buf);
        let started = this.state.started.load(Ordering::Relaxed);
        match &r {
            Poll::Ready(Ok(())) if buf.filled().len() > before => this.read_mark = Some(started),
            Poll::Pending
                if this.state.in_flight.load(Ordering::Relaxed) == 0
                    && this.read_mark != Some(started) =>
            {
                this.state.idle.store(true, Ordering::Relaxed)
            }
            _ => {}
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().io).poll_write(cx, b)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_shutdown(cx)
    }
}

/// Serve HTTP/1.1 on `io` until the client closes, an error, the keep-alive
/// timeout, or `drain` flips (in-flight requests finish first). Between
/// requests the connection is parked without buffers (module docs).
pub async fn serve_h1<S, B>(
    mut io: Box<TlsConn>,
    builder: Arc<hyper::server::conn::http1::Builder>,
    service: S,
    state: Arc<ConnState>,
    keepalive: Duration,
    mut drain: tokio::sync::watch::Receiver<bool>,
    // the listener's connection slot, held until the connection ends
    _permit: tokio::sync::OwnedSemaphorePermit,
) where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<B>,
            Error = std::convert::Infallible,
        > + Unpin,
    S::Future: Unpin + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut service = Some(service);
    loop {
        if *drain.borrow() {
            io.close().await;
            return;
        }
        if !io.has_pending_input() {
            io.release();
            tokio::select! {
                r = tokio::time::timeout(keepalive, io.readable()) => {
                    if !matches!(r, Ok(Ok(()))) {
                        io.close().await;
                        return;
                    }
                }
                _ = drain.changed() => {
                    io.close().await;
                    return;
                }
            }
        }
        let Some(svc) = service.take() else { return };
        state.idle.store(false, Ordering::Relaxed);
        let watched = Watched {
            io,
            state: state.clone(),
            read_mark: None,
        };
        // boxed: the connection's buffers and state exist only while it runs
        let mut conn = Box::new(builder.serve_connection(TokioIo::new(watched), svc));
        let mut parking = false;
        let mut draining = false;
        let mut grace: Option<(Pin<Box<tokio::time::Sleep>>, u32)> = None;
        let result = {
            let mut drained = std::pin::pin!(drain.changed());
            std::future::poll_fn(|cx| {
                loop {
                    if !draining && drained.as_mut().poll(cx).is_ready() {
                        draining = true;
                        Pin::new(&mut *conn).graceful_shutdown();
                    }
                    state.idle.store(false, Ordering::Relaxed);
                    if let Poll::Ready(r) = conn.poll_without_shutdown(cx) {
                        return Poll::Ready(r);
                    }
                    if !parking && !draining && state.idle.load(Ordering::Relaxed) {
                        // park once the connection stayed idle for IDLE_GRACE
                        // with no new request: a busy keep-alive connection
                        // keeps its buffers between back-to-back requests
                        let started = state.started.load(Ordering::Relaxed);
                        let deadline = tokio::time::Instant::now() + IDLE_GRACE;
                        let (timer, seen) = grace.get_or_insert_with(|| {
                            (Box::pin(tokio::time::sleep_until(deadline)), started)
                        });
                        if *seen != started {
                            timer.as_mut().reset(deadline);
                            *seen = started;
                        }
                        if timer.as_mut().poll(cx).is_ready() {
                            parking = true;
                            state.parked.fetch_add(1, Ordering::Relaxed);
                            Pin::new(&mut *conn).graceful_shutdown();
                            continue;
                        }
                    }
                    return Poll::Pending;
                }
            })
            .await
        };
        if result.is_err() {
            // hyper answered what it could (400, 431) or the peer vanished
            return;
        }
        let parts = conn.into_parts();
        service = Some(parts.service);
        io = parts.io.into_inner().io;
        if !parts.read_buf.is_empty() {
            io.unread(&parts.read_buf);
        }
        if !parking || draining || io.read_eof() {
            io.close().await;
            return;
        }
        if Box::pin(tokio::time::timeout(keepalive, io.flush()))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Drive an HTTP/2 connection until it ends, closing it gracefully (GOAWAY,
/// in-flight streams finish) when it has had no stream in flight for
/// `keepalive`, or when `drain` flips. `shutdown` is hyper's
/// `graceful_shutdown` for the connection type.
pub async fn serve_h2<F: Future>(
    conn: F,
    shutdown: impl Fn(Pin<&mut F>),
    state: Arc<ConnState>,
    keepalive: Duration,
    mut drain: tokio::sync::watch::Receiver<bool>,
    // the listener's connection slot, held until the connection ends
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let mut conn = std::pin::pin!(conn);
    let mut timer = Box::pin(tokio::time::sleep(keepalive));
    let mut seen = state.started.load(Ordering::Relaxed);
    let mut drained = std::pin::pin!(drain.changed());
    let mut closing = false;
    std::future::poll_fn(|cx| {
        loop {
            if !closing && drained.as_mut().poll(cx).is_ready() {
                closing = true;
                shutdown(conn.as_mut());
            }
            if conn.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            if closing {
                return Poll::Pending;
            }
            let started = state.started.load(Ordering::Relaxed);
            if state.in_flight.load(Ordering::Relaxed) > 0 || started != seen {
                seen = started;
                timer
                    .as_mut()
                    .reset(tokio::time::Instant::now() + keepalive);
            }
            if timer.as_mut().poll(cx).is_ready() {
                closing = true;
                shutdown(conn.as_mut());
                continue;
            }
            return Poll::Pending;
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    struct Pki {
        server: Arc<rustls::ServerConfig>,
        client: Arc<rustls::ClientConfig>,
    }

    fn pki() -> Pki {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = ck.cert.der().clone();
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Pki {
            server: Arc::new(server),
            client: Arc::new(client),
        }
    }

    /// Start one server connection; returns the client stream, the
    /// connection's state, and the drain sender.
    async fn connect(
        keepalive: Duration,
    ) -> (
        tokio_rustls::client::TlsStream<TcpStream>,
        Arc<ConnState>,
        tokio::sync::watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    ) {
        let pki = pki();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ConnState::default());
        let (drain_tx, drain) = tokio::sync::watch::channel(false);
        let st = state.clone();
        let server_cfg = pki.server.clone();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let tls = TlsConn::accept(tcp, server_cfg).await.unwrap();
            let sem = Arc::new(tokio::sync::Semaphore::new(1));
            let permit = sem.try_acquire_owned().unwrap();
            let svc_state = st.clone();
            // echo: method, path and the request body's length and first bytes
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let busy = Busy::new(&svc_state);
                    Box::pin(async move {
                        let head = format!("{} {}", req.method(), req.uri().path());
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let text = format!(
                            "{head} len={} sum={}",
                            body.len(),
                            body.iter().map(|b| *b as u64).sum::<u64>()
                        );
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Tracked {
                            inner: Full::new(Bytes::from(text)),
                            busy: Some(busy),
                        }))
                    })
                });
            let mut h1 = hyper::server::conn::http1::Builder::new();
            h1.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5));
            serve_h1(tls, Arc::new(h1), svc, st, keepalive, drain, permit).await;
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let client = tokio_rustls::TlsConnector::from(pki.client)
            .connect(name, tcp)
            .await
            .unwrap();
        (client, state, drain_tx, server)
    }

    /// Read one response with a Content-Length body; returns its body.
    async fn response(c: &mut tokio_rustls::client::TlsStream<TcpStream>) -> String {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            let n = c.read(&mut byte).await.unwrap();
            assert_eq!(
                n,
                1,
                "connection closed mid-head: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.push(byte[0]);
        }
        let head = String::from_utf8(buf).unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        let mut body = vec![0u8; len];
        c.read_exact(&mut body).await.unwrap();
        String::from_utf8(body).unwrap()
    }

    #[tokio::test]
    async fn keep_alive_survives_parking_and_split_and_pipelined_requests() {
        let (mut c, state, _drain, _server) = connect(Duration::from_secs(30)).await;
        c.write_all(b"GET /one HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(response(&mut c).await, "GET /one len=0 sum=0");
        // idle past the grace period: the connection parks and still serves
        tokio::time::sleep(IDLE_GRACE * 4).await;
        let parked = state.parked();
        assert_eq!(parked, 1, "parked {parked} times");
        c.write_all(b"GET /two HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(response(&mut c).await, "GET /two len=0 sum=0");

        // a head split by a pause: a partial head is not idleness (hyper's
        // head deadline must keep running), so the connection does not park
        tokio::time::sleep(IDLE_GRACE * 4).await;
        let parked = state.parked();
        c.write_all(b"POST /three HTTP/1.1\r\nhost: x\r\ncont")
            .await
            .unwrap();
        c.flush().await.unwrap();
        tokio::time::sleep(IDLE_GRACE * 4).await;
        assert_eq!(state.parked(), parked, "parked on a partial head");
        c.write_all(b"ent-length: 3\r\n\r\nabc").await.unwrap();
        assert_eq!(response(&mut c).await, "POST /three len=3 sum=294");

        // two requests in one write: both answered, in order
        c.write_all(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(response(&mut c).await, "GET /a len=0 sum=0");
        assert_eq!(response(&mut c).await, "GET /b len=0 sum=0");

        // a body larger than several TLS records, both ways
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let sum: u64 = body.iter().map(|b| *b as u64).sum();
        c.write_all(
            format!(
                "POST /big HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        c.write_all(&body).await.unwrap();
        assert_eq!(
            response(&mut c).await,
            format!("POST /big len=200000 sum={sum}")
        );
    }

    #[tokio::test]
    async fn a_partial_head_after_an_idle_pause_still_meets_the_head_deadline() {
        // header deadline 5 s (connect()); the connection first parks, then
        // gets a partial head and nothing more: it must be closed at the
        // deadline, not kept alive by re-parking
        let (mut c, state, _drain, server) = connect(Duration::from_secs(60)).await;
        c.write_all(b"GET /one HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(response(&mut c).await, "GET /one len=0 sum=0");
        tokio::time::sleep(IDLE_GRACE * 4).await;
        assert_eq!(state.parked(), 1);
        c.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        c.flush().await.unwrap();
        let started = std::time::Instant::now();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(15), c.read_to_end(&mut rest))
            .await
            .expect("the head deadline closes the connection");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(4500) && waited < Duration::from_secs(7),
            "closed after {waited:?}"
        );
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn idle_connection_is_closed_after_the_keepalive_timeout() {
        let (mut c, _state, _drain, server) = connect(Duration::from_millis(300)).await;
        c.write_all(b"GET /one HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(response(&mut c).await, "GET /one len=0 sum=0");
        let started = std::time::Instant::now();
        let mut rest = Vec::new();
        // close_notify then EOF: read_to_end ends cleanly
        tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest))
            .await
            .expect("the server closes an idle connection")
            .expect("clean TLS close (close_notify)");
        assert!(rest.is_empty());
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(250),
            "closed after {waited:?}"
        );
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn drain_closes_idle_connections_and_finishes_in_flight_ones() {
        let (mut c, _state, drain, server) = connect(Duration::from_secs(30)).await;
        c.write_all(b"GET /one HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(response(&mut c).await, "GET /one len=0 sum=0");
        // a request whose body is still coming when the drain starts
        c.write_all(b"POST /slow HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\na")
            .await
            .unwrap();
        c.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        drain.send(true).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.write_all(b"b").await.unwrap();
        assert_eq!(response(&mut c).await, "POST /slow len=2 sum=195");
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest))
            .await
            .expect("closed after the in-flight request")
            .expect("clean close");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
    }
}
