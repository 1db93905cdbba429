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
const MAX_INCOMING: usize = 64 * 1024 + MAX_RECORD;
/// The largest TLS record: header, 2^14 bytes and 256 of expansion.
const MAX_RECORD: usize = 5 + 16384 + 256;
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

/// A write that made no progress: Pending, or, once the socket has taken
/// nothing for `limit`, the error that closes the connection (nginx's
/// `send_timeout`). The timer runs from the first stalled write and is
/// cleared by any write that makes progress.
fn stalled<T>(
    timer: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    limit: Option<Duration>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<T>> {
    let Some(limit) = limit else {
        return Poll::Pending;
    };
    let t = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
    if t.as_mut().poll(cx).is_ready() {
        *timer = None;
        return Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client took no response bytes within send_timeout",
        )));
    }
    Poll::Pending
}

/// A plaintext client connection (a redirect or `dangerous_plaintext`
/// listener) with the send timeout HTTPS connections have: a client that
/// stops reading is cut off after `limit` without progress.
pub struct PlainConn {
    tcp: TcpStream,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl PlainConn {
    pub fn new(tcp: TcpStream, limit: Duration) -> PlainConn {
        PlainConn {
            tcp,
            limit,
            stalled: None,
        }
    }

    fn progress<T>(&mut self, r: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending => stalled(&mut self.stalled, Some(self.limit), cx),
            done => {
                self.stalled = None;
                done
            }
        }
    }
}

impl AsyncRead for PlainConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for PlainConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write(cx, buf);
        self.progress(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        self.progress(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// The socket's buffers: received ciphertext `incoming[in_start..in_end]`
/// (what rustls has not consumed yet), decrypted plaintext not yet read
/// `plain[plain_pos..]`, and ciphertext not yet written
/// `outgoing[out_pos..]`. rustls's unbuffered API works on buffers it does
/// not own, so each can be given back while the connection waits.
#[derive(Default)]
struct Buffers {
    incoming: Vec<u8>,
    in_start: usize,
    in_end: usize,
    plain: Vec<u8>,
    plain_pos: usize,
    outgoing: Vec<u8>,
    out_pos: usize,
    /// How long a write may make no progress (None: no limit).
    send_timeout: Option<Duration>,
    /// Running while queued ciphertext waits for the socket.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Buffers {
    fn pending_tls(&self) -> usize {
        self.in_end - self.in_start
    }

    /// Read more ciphertext from the socket. Ready(Ok(0)) is EOF.
    fn fill(&mut self, tcp: &mut TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.incoming.len() - self.in_end < 512 {
            // room at the front first: what rustls consumed
            if self.in_start > 0 {
                self.incoming.copy_within(self.in_start..self.in_end, 0);
                self.in_end -= self.in_start;
                self.in_start = 0;
            }
            if self.incoming.len() - self.in_end < 512 {
                if self.in_end >= MAX_INCOMING {
                    return Poll::Ready(Err(tls_error("TLS message too large")));
                }
                let want = if self.incoming.is_empty() {
                    READ_CHUNK
                } else {
                    (self.incoming.len() * 2).min(MAX_INCOMING)
                };
                self.incoming.resize(want, 0);
            }
        }
        let mut rb = ReadBuf::new(&mut self.incoming[self.in_end..]);
        ready!(Pin::new(tcp).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        self.in_end += n;
        Poll::Ready(Ok(n))
    }

    /// Write queued ciphertext to the socket. A client that takes none of
    /// it for `send_timeout` is cut off (nginx's `send_timeout`): a reader
    /// that never reads would otherwise hold the connection, its buffers
    /// and an upstream connection for ever.
    fn flush(&mut self, tcp: &mut TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.outgoing.len() {
            let n = match Pin::new(&mut *tcp).poll_write(cx, &self.outgoing[self.out_pos..]) {
                Poll::Ready(r) => r?,
                Poll::Pending => return stalled(&mut self.stalled, self.send_timeout, cx),
            };
            self.stalled = None;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.outgoing.clear();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }

    fn queued(&self) -> usize {
        self.outgoing.len() - self.out_pos
    }

    /// rustls is done with the first `n` pending bytes.
    fn discard(&mut self, n: usize) {
        self.in_start += n;
        if self.in_start == self.in_end {
            self.in_start = 0;
            self.in_end = 0;
        }
    }

    /// Append what `f` writes to `outgoing`, growing it to the size `f`
    /// asks for (`Err(Some(size))`) and retrying.
    fn append<E>(
        &mut self,
        mut first_guess: usize,
        mut f: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
        err: impl Fn() -> E,
    ) -> Result<(), E> {
        let start = self.outgoing.len();
        loop {
            self.outgoing.resize(start + first_guess, 0);
            match f(&mut self.outgoing[start..]) {
                Ok(n) => {
                    self.outgoing.truncate(start + n);
                    return Ok(());
                }
                Err(Some(required)) if required > first_guess => first_guess = required,
                Err(_) => {
                    self.outgoing.truncate(start);
                    return Err(err());
                }
            }
        }
    }
}

/// What one call into rustls did.
enum Step {
    /// Application data was decrypted into `plain`, or TLS bytes were
    /// queued: call again.
    Progress,
    /// The peer sent close_notify.
    PeerClosed,
    /// Nothing more to do with the ciphertext at hand: more is needed to
    /// read (the handshake, or the next record); application data may be
    /// written (`writable`).
    Idle { writable: bool },
    /// Both sides have sent close_notify.
    Closed,
}

/// One call into rustls: process the pending ciphertext, keep what it
/// decrypted, queue what it wants sent, and (when it can take application
/// data and `write` is given) encrypt `write` into the outgoing queue.
/// Returns what happened and, for a write, whether it was encrypted.
fn step(
    conn: &mut UnbufferedServerConnection,
    b: &mut Buffers,
    write: Option<&[u8]>,
    close_notify: bool,
) -> Result<(Step, bool), rustls::Error> {
    let UnbufferedStatus { discard, state } =
        conn.process_tls_records(&mut b.incoming[b.in_start..b.in_end]);
    let mut wrote = false;
    let out = match state {
        Err(e) => Err(e),
        Ok(ConnectionState::ReadTraffic(mut r)) => {
            let mut res = Ok(Step::Progress);
            while let Some(rec) = r.next_record() {
                match rec {
                    Ok(rec) => b.plain.extend_from_slice(rec.payload),
                    Err(e) => {
                        res = Err(e);
                        break;
                    }
                }
            }
            res
        }
        Ok(ConnectionState::EncodeTlsData(mut e)) => {
            let bad = || rustls::Error::General("TLS record encoding failed".into());
            b.append(
                1024,
                |out| match e.encode(out) {
                    Ok(n) => Ok(n),
                    Err(EncodeError::InsufficientSize(s)) => Err(Some(s.required_size)),
                    Err(_) => Err(None),
                },
                bad,
            )
            .map(|()| Step::Progress)
        }
        // the bytes are in `outgoing`, which is written in order before
        // anything queued later
        Ok(ConnectionState::TransmitTlsData(t)) => {
            t.done();
            Ok(Step::Progress)
        }
        Ok(ConnectionState::BlockedHandshake) => Ok(Step::Idle { writable: false }),
        Ok(ConnectionState::WriteTraffic(mut w)) => {
            let bad = || rustls::Error::General("TLS record encryption failed".into());
            let mut res = Ok(());
            if close_notify {
                res = b.append(
                    64,
                    |out| match w.queue_close_notify(out) {
                        Ok(n) => Ok(n),
                        Err(EncryptError::InsufficientSize(s)) => Err(Some(s.required_size)),
                        Err(_) => Err(None),
                    },
                    bad,
                );
                wrote = res.is_ok();
            } else if let Some(data) = write {
                // one record per 16 KiB, each with its header, tag and type
                let guess = data.len() + (data.len() / 16384 + 1) * 64;
                res = b.append(
                    guess,
                    |out| match w.encrypt(data, out) {
                        Ok(n) => Ok(n),
                        Err(EncryptError::InsufficientSize(s)) => Err(Some(s.required_size)),
                        Err(_) => Err(None),
                    },
                    bad,
                );
                wrote = res.is_ok();
            }
            res.map(|()| Step::Idle { writable: true })
        }
        Ok(ConnectionState::PeerClosed) => Ok(Step::PeerClosed),
        Ok(ConnectionState::Closed) => Ok(Step::Closed),
        // early data is never enabled (max_early_data_size = 0)
        Ok(_) => Err(rustls::Error::General("unexpected TLS state".into())),
    };
    b.discard(discard);
    out.map(|s| (s, wrote))
}

/// A server-side TLS connection with buffers owned by us: rustls's
/// unbuffered API runs the handshake and protects every record (key
/// updates, alerts, limits); this type only moves bytes between the
/// socket, rustls and hyper, and gives the buffers back while idle.
pub struct TlsConn {
    tcp: TcpStream,
    buf: Buffers,
    conn: UnbufferedServerConnection,
    h2: bool,
    read_eof: bool,
    close_sent: bool,
    /// rustls made all the progress it can with the ciphertext at hand
    /// (its last read step was Idle) and none has arrived since: the next
    /// read goes straight to the socket instead of asking rustls again.
    starved: bool,
}

impl TlsConn {
    /// Run the server handshake on `tcp`. On failure the alert rustls
    /// chose (unknown_ca, certificate_required, ...) is sent first.
    /// Returns the connection (boxed: the task then holds a pointer) and
    /// the client's certificate, if it presented one.
    pub async fn accept(
        tcp: TcpStream,
        config: Arc<rustls::ServerConfig>,
    ) -> io::Result<(Box<Self>, Option<CertificateDer<'static>>)> {
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut this = Box::new(Self {
            tcp,
            buf: Buffers::default(),
            conn,
            h2: false,
            read_eof: false,
            close_sent: false,
            starved: false,
        });
        loop {
            match step(&mut this.conn, &mut this.buf, None, false) {
                Ok((Step::Progress, _)) => {}
                Ok((Step::Idle { .. }, _)) if !this.conn.is_handshaking() => {
                    let t = &mut *this;
                    std::future::poll_fn(|cx| t.buf.flush(&mut t.tcp, cx)).await?;
                    break;
                }
                Ok((Step::Idle { .. }, _)) => {
                    let t = &mut *this;
                    std::future::poll_fn(|cx| t.buf.flush(&mut t.tcp, cx)).await?;
                    if std::future::poll_fn(|cx| t.buf.fill(&mut t.tcp, cx)).await? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
                Ok((Step::PeerClosed | Step::Closed, _)) => {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                Err(e) => {
                    let t = &mut *this;
                    t.queue_alert();
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        std::future::poll_fn(|cx| t.buf.flush(&mut t.tcp, cx)),
                    )
                    .await;
                    return Err(tls_error(e));
                }
            }
        }
        this.h2 = this.conn.alpn_protocol() == Some(b"h2");
        let peer = this
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned());
        Ok((this, peer))
    }

    /// After a fatal error rustls has queued its alert: move it to the
    /// outgoing bytes. Exactly one more call: it hands out what was queued
    /// (the alert, the last thing the failed call queued, everything
    /// before it having been taken by earlier calls); another would read
    /// the offending input again.
    fn queue_alert(&mut self) {
        let _ = step(&mut self.conn, &mut self.buf, None, false);
    }

    /// Cut the connection off when the client takes no response bytes for
    /// `limit` (`limits.send_timeout_ms`).
    pub fn set_send_timeout(&mut self, limit: Duration) {
        self.buf.send_timeout = Some(limit);
    }

    /// True when the client negotiated HTTP/2 by ALPN.
    pub fn is_h2(&self) -> bool {
        self.h2
    }

    /// Bytes already here that the next reader will get without waiting.
    pub fn has_pending_input(&self) -> bool {
        self.buf.plain_pos < self.buf.plain.len() || self.buf.pending_tls() > 0
    }

    pub fn read_eof(&self) -> bool {
        self.read_eof
    }

    /// Give back every buffer that holds nothing.
    pub fn release(&mut self) {
        let b = &mut self.buf;
        if b.pending_tls() == 0 {
            b.incoming = Vec::new();
            b.in_start = 0;
            b.in_end = 0;
        }
        if b.plain_pos >= b.plain.len() {
            b.plain = Vec::new();
            b.plain_pos = 0;
        }
        if b.queued() == 0 {
            b.outgoing = Vec::new();
            b.out_pos = 0;
        }
    }

    /// Put plaintext back in front of what is still unread.
    pub fn unread(&mut self, bytes: &[u8]) {
        let b = &mut self.buf;
        let mut v = Vec::with_capacity(bytes.len() + b.plain.len() - b.plain_pos);
        v.extend_from_slice(bytes);
        v.extend_from_slice(&b.plain[b.plain_pos..]);
        b.plain = v;
        b.plain_pos = 0;
    }

    /// Ready when the socket has bytes (or EOF). Uses the socket's own
    /// reader waker slot: no wait-list node per parked connection.
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp.poll_read_ready(cx)
    }

    /// A fatal TLS error while serving: send rustls's alert if the socket
    /// takes it now, and end the connection.
    fn fail(&mut self, cx: &mut Context<'_>, e: rustls::Error) -> io::Error {
        if !self.close_sent {
            self.close_sent = true;
            self.queue_alert();
            let _ = self.buf.flush(&mut self.tcp, cx);
        }
        self.read_eof = true;
        tls_error(e)
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

    /// Call rustls until it can take application data, keeping what it
    /// decrypts on the way; then encrypt `data` (or close_notify). Ok(false):
    /// the connection is closed for writing.
    fn encrypt(
        &mut self,
        cx: &mut Context<'_>,
        data: Option<&[u8]>,
        close_notify: bool,
    ) -> io::Result<bool> {
        loop {
            match step(&mut self.conn, &mut self.buf, data, close_notify) {
                Ok((Step::Progress | Step::PeerClosed, _)) => {}
                Ok((Step::Idle { writable: true }, wrote)) => return Ok(wrote),
                Ok((Step::Idle { writable: false } | Step::Closed, _)) => return Ok(false),
                Err(e) => return Err(self.fail(cx, e)),
            }
        }
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
            let b = &mut this.buf;
            if b.plain_pos < b.plain.len() {
                let n = buf.remaining().min(b.plain.len() - b.plain_pos);
                buf.put_slice(&b.plain[b.plain_pos..b.plain_pos + n]);
                b.plain_pos += n;
                if b.plain_pos == b.plain.len() {
                    b.plain.clear();
                    b.plain_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.read_eof {
                return Poll::Ready(Ok(()));
            }
            let r = if this.starved {
                Ok((Step::Idle { writable: true }, false))
            } else {
                step(&mut this.conn, &mut this.buf, None, false)
            };
            match r {
                Ok((Step::Progress, _)) => {}
                Ok((Step::PeerClosed | Step::Closed, _)) => this.read_eof = true,
                Ok((Step::Idle { .. }, _)) => {
                    this.starved = true;
                    // what rustls queued (a key update of its own, say)
                    if this.buf.queued() > 0
                        && let Poll::Ready(Err(e)) = this.buf.flush(&mut this.tcp, cx)
                    {
                        return Poll::Ready(Err(e));
                    }
                    match ready!(this.buf.fill(&mut this.tcp, cx)) {
                        Ok(0) => {
                            // EOF without close_notify: a truncation
                            // attack or a crashed client; hyper ends the
                            // connection either way
                            this.read_eof = true
                        }
                        Ok(_) => this.starved = false,
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
        if this.buf.queued() >= MAX_QUEUED {
            ready!(this.buf.flush(&mut this.tcp, cx))?;
        }
        let data = &data[..data.len().min(MAX_WRITE_CHUNK)];
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.close_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        match this.encrypt(cx, Some(data), false) {
            Ok(true) => {}
            Ok(false) => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            Err(e) => return Poll::Ready(Err(e)),
        }
        // start sending now; what the socket does not take waits for
        // poll_flush (the waker is registered)
        if let Poll::Ready(Err(e)) = this.buf.flush(&mut this.tcp, cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.buf.flush(&mut this.tcp, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            this.close_sent = true;
            let _ = this.encrypt(cx, None, true);
        }
        ready!(this.buf.flush(&mut this.tcp, cx))?;
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
                r = tokio::time::timeout(keepalive, std::future::poll_fn(|cx| io.poll_readable(cx))) => {
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

    const SEND_TIMEOUT: Duration = Duration::from_millis(500);

    #[derive(Clone)]
    struct Pki {
        server: Arc<rustls::ServerConfig>,
        client: Arc<rustls::ClientConfig>,
    }

    fn pki() -> Pki {
        pki_for(None)
    }

    /// Server: every default suite, TLS 1.2 and 1.3. Client: only `suite`
    /// (and its version) when given.
    fn pki_for(suite: Option<rustls::SupportedCipherSuite>) -> Pki {
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
        let (client_provider, versions) = match suite {
            Some(s) => (
                rustls::crypto::CryptoProvider {
                    cipher_suites: vec![s],
                    ..rustls::crypto::aws_lc_rs::default_provider()
                },
                vec![s.version()],
            ),
            None => (
                rustls::crypto::aws_lc_rs::default_provider(),
                rustls::DEFAULT_VERSIONS.to_vec(),
            ),
        };
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(client_provider))
            .with_protocol_versions(&versions)
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
        connect_with(keepalive, pki()).await
    }

    async fn connect_with(
        keepalive: Duration,
        pki: Pki,
    ) -> (
        tokio_rustls::client::TlsStream<TcpStream>,
        Arc<ConnState>,
        tokio::sync::watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ConnState::default());
        let (drain_tx, drain) = tokio::sync::watch::channel(false);
        let st = state.clone();
        let server_cfg = pki.server.clone();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let (mut tls, _) = TlsConn::accept(tcp, server_cfg).await.unwrap();
            tls.set_send_timeout(SEND_TIMEOUT);
            let sem = Arc::new(tokio::sync::Semaphore::new(1));
            let permit = sem.try_acquire_owned().unwrap();
            let svc_state = st.clone();
            // echo: method, path and the request body's length and byte
            // sum; GET /blob/N answers N bytes
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let busy = Busy::new(&svc_state);
                    Box::pin(async move {
                        if let Some(n) = req.uri().path().strip_prefix("/blob/") {
                            let n: usize = n.parse().unwrap();
                            let blob: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
                            return Ok(hyper::Response::new(Tracked {
                                inner: Full::new(Bytes::from(blob)),
                                busy: Some(busy),
                            }));
                        }
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

    /// One request answered on an open connection.
    async fn get_one(c: &mut tokio_rustls::client::TlsStream<TcpStream>) {
        c.write_all(b"GET /one HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(response(c).await, "GET /one len=0 sum=0");
    }

    /// The server side of a test connection ends within 5 s.
    async fn server_ends<T>(server: tokio::task::JoinHandle<T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server ends the connection")
            .unwrap()
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
        get_one(&mut c).await;
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

        // one TLS record per byte (many whole records per read): the
        // records are opened in one batch, in order
        for b in b"GET /tiny HTTP/1.1\r\nhost: x\r\n\r\n" {
            c.write_all(&[*b]).await.unwrap();
        }
        assert_eq!(response(&mut c).await, "GET /tiny len=0 sum=0");

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
        get_one(&mut c).await;
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
        server_ends(server).await;
    }

    #[tokio::test]
    async fn idle_connection_is_closed_after_the_keepalive_timeout() {
        let (mut c, _state, _drain, server) = connect(Duration::from_millis(300)).await;
        get_one(&mut c).await;
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
        server_ends(server).await;
    }

    #[tokio::test]
    async fn drain_closes_idle_connections_and_finishes_in_flight_ones() {
        let (mut c, _state, drain, server) = connect(Duration::from_secs(30)).await;
        get_one(&mut c).await;
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
        server_ends(server).await;
    }

    /// Read a response head; returns its Content-Length.
    async fn head(c: &mut tokio_rustls::client::TlsStream<TcpStream>) -> usize {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            assert_eq!(c.read(&mut byte).await.unwrap(), 1);
            buf.push(byte[0]);
        }
        let head = String::from_utf8(buf).unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        head.lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap()
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_cut_off_after_the_send_timeout_a_slow_one_is_not() {
        // more than the loopback socket buffers hold, so writes do stall
        const BIG: &[u8] = b"GET /blob/30000000 HTTP/1.1\r\nhost: x\r\n\r\n";
        // a steady reader: 1 MB every 100 ms; no stall reaches 500 ms
        let (mut c, _state, _drain, _server) = connect(Duration::from_secs(30)).await;
        c.write_all(BIG).await.unwrap();
        let len = head(&mut c).await;
        let mut got = 0;
        let mut chunk = vec![0u8; 1 << 20];
        while got < len {
            let want = chunk.len().min(len - got);
            c.read_exact(&mut chunk[..want]).await.unwrap();
            got += want;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(got, 30_000_000);

        // a reader that stops: the server ends the connection
        let (mut c, _state, _drain, server) = connect(Duration::from_secs(30)).await;
        c.write_all(BIG).await.unwrap();
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(20), server)
            .await
            .expect("a connection whose client stopped reading is cut off")
            .unwrap();
        assert!(started.elapsed() >= SEND_TIMEOUT, "{:?}", started.elapsed());
    }

    fn blob(n: usize) -> String {
        (0..n).map(|i| (b'a' + (i % 26) as u8) as char).collect()
    }

    #[tokio::test]
    async fn every_cipher_suite_of_both_versions_round_trips_through_the_record_layer() {
        use rustls::crypto::aws_lc_rs::cipher_suite as cs;
        for suite in [
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ] {
            let pki = pki_for(Some(suite));
            // the second connection resumes the first one's session
            for (kind, resumed) in [
                (rustls::HandshakeKind::Full, false),
                (rustls::HandshakeKind::Resumed, true),
            ] {
                let (mut c, state, _drain, _server) =
                    connect_with(Duration::from_secs(30), pki.clone()).await;
                assert_eq!(c.get_ref().1.negotiated_cipher_suite(), Some(suite));
                assert_eq!(c.get_ref().1.handshake_kind(), Some(kind), "{suite:?}");
                let up: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
                let sum: u64 = up.iter().map(|b| *b as u64).sum();
                for round in 1..=2 {
                    if round == 2 && resumed && suite.version() == &rustls::version::TLS13 {
                        // a key update (update_requested) with this suite's hash
                        c.get_mut().1.refresh_traffic_keys().unwrap();
                    }
                    // 40 KB up and down: several records each way
                    c.write_all(b"POST /up HTTP/1.1\r\nhost: x\r\ncontent-length: 40000\r\n\r\n")
                        .await
                        .unwrap();
                    c.write_all(&up).await.unwrap();
                    assert_eq!(
                        response(&mut c).await,
                        format!("POST /up len=40000 sum={sum}"),
                        "{suite:?}"
                    );
                    c.write_all(b"GET /blob/40000 HTTP/1.1\r\nhost: x\r\n\r\n")
                        .await
                        .unwrap();
                    assert_eq!(response(&mut c).await, blob(40_000), "{suite:?}");
                    // parked: keys released, rebuilt for the next round
                    tokio::time::sleep(IDLE_GRACE * 4).await;
                    assert_eq!(state.parked(), round, "{suite:?}");
                }
            }
        }
    }

    /// One TLS connection served by an echo loop on the bare [`TlsConn`]:
    /// each chunk comes back upper-cased; "bye" ends it. Returns the error
    /// that ended it, if any.
    async fn echo_server(listener: TcpListener, cfg: Arc<rustls::ServerConfig>) -> Option<String> {
        let (tcp, _) = listener.accept().await.unwrap();
        let (mut tls, _) = TlsConn::accept(tcp, cfg).await.unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) => return None,
                Ok(n) => {
                    let up = buf[..n].to_ascii_uppercase();
                    tls.write_all(&up).await.unwrap();
                    tls.flush().await.unwrap();
                    if up.ends_with(b"BYE\n") {
                        tls.shutdown().await.unwrap();
                        return None;
                    }
                }
                Err(e) => return Some(e.to_string()),
            }
        }
    }

    async fn read_some(c: &mut tokio_rustls::client::TlsStream<TcpStream>) -> String {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[tokio::test]
    async fn key_updates_from_the_client_are_followed_and_answered() {
        let pki = pki();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(echo_server(listener, pki.server.clone()));
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let mut c = tokio_rustls::TlsConnector::from(pki.client)
            .connect(name, TcpStream::connect(addr).await.unwrap())
            .await
            .unwrap();
        c.write_all(b"one\n").await.unwrap();
        assert_eq!(read_some(&mut c).await, "ONE\n");
        // rustls sends KeyUpdate(update_requested): the server must switch
        // its receive keys and answer with its own KeyUpdate, or the next
        // records cannot be read by either side
        for word in ["two\n", "three\n"] {
            c.get_mut().1.refresh_traffic_keys().unwrap();
            c.write_all(word.as_bytes()).await.unwrap();
            assert_eq!(read_some(&mut c).await, word.to_uppercase());
        }
        c.write_all(b"bye\n").await.unwrap();
        assert_eq!(read_some(&mut c).await, "BYE\n");
        assert_eq!(server.await.unwrap(), None);
    }

    /// Make one request, then write `raw` straight into the TCP stream
    /// under the client's TLS; returns the client's read error (the alert
    /// the server sent) and how many requests the server started.
    async fn inject(raw: &[u8]) -> (String, u32) {
        let (mut c, state, _drain, server) = connect(Duration::from_secs(30)).await;
        get_one(&mut c).await;
        c.get_mut().0.write_all(raw).await.unwrap();
        let mut rest = Vec::new();
        let err = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest))
            .await
            .expect("the server reacts")
            .expect_err("the server sends a fatal alert");
        server_ends(server).await;
        (err.to_string(), state.started.load(Ordering::Relaxed))
    }

    #[tokio::test]
    async fn forged_malformed_and_oversized_records_end_the_connection_with_the_right_alert() {
        // a record the attacker made up: authentication fails
        let body = b"GET /forged HTTP/1.1\r\nhost: x\r\n\r\n\x17 sixteen-byte tag";
        let mut forged = vec![23, 3, 3, 0, body.len() as u8];
        forged.extend_from_slice(body);
        assert_eq!(
            inject(&forged).await,
            ("received fatal alert: BadRecordMac".to_string(), 1)
        );
        // longer than 2^14 + 2048 (the most any TLS version allows):
        // refused from the header alone
        assert_eq!(
            inject(&[23, 3, 3, 0x48, 0x00]).await,
            ("received fatal alert: DecodeError".to_string(), 1)
        );
        // longer than TLS 1.3's 2^14 + 256 but not TLS 1.2's limit: rustls
        // tries to open it (and fails: the attacker has no key)
        let mut big = vec![23, 3, 3, 0x41, 0x01];
        big.resize(5 + 0x4101, 7);
        assert_eq!(
            inject(&big).await,
            ("received fatal alert: BadRecordMac".to_string(), 1)
        );
        // an unprotected handshake record after the handshake (TLS 1.3):
        // every record is opened with the traffic keys
        assert_eq!(
            inject(&[22, 3, 3, 0, 4, 1, 0, 0, 0]).await,
            ("received fatal alert: BadRecordMac".to_string(), 1)
        );
        // not a TLS record version
        assert_eq!(
            inject(&[23, 0x7f, 0x12, 0, 20]).await,
            ("received fatal alert: DecodeError".to_string(), 1)
        );
    }

    // ---------------------------------------------------------- TLS 1.3 records made by hand
    //
    // The record-layer deviations a tlsfuzzer run found in the gateway's
    // former hand-written record layer (issue #13), each against the bare
    // `TlsConn` echo server: rustls now processes every record.

    /// The client's TLS 1.3 traffic secrets, from its key log.
    #[derive(Debug, Default)]
    struct ClientSecrets(std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>);

    impl rustls::KeyLog for ClientSecrets {
        fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
            self.0
                .lock()
                .unwrap()
                .insert(label.to_string(), secret.to_vec());
        }
    }

    /// HKDF-Expand-Label (RFC 8446 §7.1) with SHA-256, empty context.
    fn expand_label(secret: &[u8], label: &str, len: usize) -> Vec<u8> {
        use aws_lc_rs::hkdf;
        struct Len(usize);
        impl hkdf::KeyType for Len {
            fn len(&self) -> usize {
                self.0
            }
        }
        let full = format!("tls13 {label}");
        let mut info = (len as u16).to_be_bytes().to_vec();
        info.push(full.len() as u8);
        info.extend_from_slice(full.as_bytes());
        info.push(0);
        let prk = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, secret);
        let mut out = vec![0; len];
        prk.expand(&[&info], Len(len))
            .unwrap()
            .fill(&mut out)
            .unwrap();
        out
    }

    /// One direction's TLS_AES_128_GCM_SHA256 traffic keys.
    struct Keys {
        secret: Vec<u8>,
        key: aws_lc_rs::aead::LessSafeKey,
        iv: Vec<u8>,
        seq: u64,
    }

    impl Keys {
        fn new(secret: Vec<u8>) -> Keys {
            use aws_lc_rs::aead;
            let key = expand_label(&secret, "key", 16);
            let key =
                aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, &key).unwrap());
            let iv = expand_label(&secret, "iv", 12);
            Keys {
                secret,
                key,
                iv,
                seq: 0,
            }
        }

        /// The next generation (a KeyUpdate).
        fn update(&mut self) {
            *self = Keys::new(expand_label(&self.secret, "traffic upd", 32));
        }

        fn nonce(&mut self) -> aws_lc_rs::aead::Nonce {
            let mut n = [0u8; 12];
            n.copy_from_slice(&self.iv);
            for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
                *b ^= s;
            }
            self.seq += 1;
            aws_lc_rs::aead::Nonce::assume_unique_for_key(n)
        }
    }

    /// A TLS 1.3 client whose records after its Finished are made by hand.
    struct Raw13 {
        tcp: TcpStream,
        tx: Keys,
        rx: Keys,
        inbuf: Vec<u8>,
    }

    /// Run a rustls client handshake (TLS_AES_128_GCM_SHA256) on `tcp` up
    /// to the point where its Finished is ready; returns the client and
    /// the unsent Finished bytes.
    async fn handshake_until_finished(
        tcp: &mut TcpStream,
        client: &rustls::ClientConfig,
        secrets: Arc<ClientSecrets>,
    ) -> (rustls::ClientConnection, Vec<u8>) {
        use tokio::io::AsyncWriteExt;
        let mut cfg = client.clone();
        cfg.key_log = secrets;
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
        loop {
            let mut out = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut out).unwrap();
            }
            if !client.is_handshaking() {
                return (client, out);
            }
            tcp.write_all(&out).await.unwrap();
            let mut buf = vec![0u8; 16384];
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "the server closed during the handshake");
            client.read_tls(&mut &buf[..n]).unwrap();
            client.process_new_packets().unwrap();
        }
    }

    impl Raw13 {
        /// Connect to the echo server and complete the handshake.
        async fn connect(echo: &Echo) -> Raw13 {
            use tokio::io::AsyncWriteExt;
            let mut tcp = TcpStream::connect(echo.addr).await.unwrap();
            let secrets = Arc::new(ClientSecrets::default());
            let (_client, finished) =
                handshake_until_finished(&mut tcp, &echo.client, secrets.clone()).await;
            tcp.write_all(&finished).await.unwrap();
            let s = secrets.0.lock().unwrap();
            Raw13 {
                tcp,
                tx: Keys::new(s["CLIENT_TRAFFIC_SECRET_0"].clone()),
                rx: Keys::new(s["SERVER_TRAFFIC_SECRET_0"].clone()),
                inbuf: Vec::new(),
            }
        }

        /// A protected record: `content`, its type, `pad` zero bytes.
        fn seal(&mut self, ctype: u8, content: &[u8], pad: usize) -> Vec<u8> {
            let mut inner = content.to_vec();
            inner.push(ctype);
            inner.resize(inner.len() + pad, 0);
            let len = inner.len() + 16;
            let header = [23, 3, 3, (len >> 8) as u8, len as u8];
            let nonce = self.tx.nonce();
            let tag = self
                .tx
                .key
                .seal_in_place_separate_tag(nonce, aws_lc_rs::aead::Aad::from(header), &mut inner)
                .unwrap();
            let mut rec = header.to_vec();
            rec.extend_from_slice(&inner);
            rec.extend_from_slice(tag.as_ref());
            rec
        }

        async fn send(&mut self, bytes: &[u8]) {
            use tokio::io::AsyncWriteExt;
            self.tcp.write_all(bytes).await.unwrap();
        }

        /// The next record from the server, opened: (inner type, content);
        /// None at EOF.
        async fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
            loop {
                if self.inbuf.len() >= 5 {
                    let len = u16::from_be_bytes([self.inbuf[3], self.inbuf[4]]) as usize;
                    if self.inbuf.len() >= 5 + len {
                        let rec: Vec<u8> = self.inbuf.drain(..5 + len).collect();
                        let mut body = rec[5..].to_vec();
                        let nonce = self.rx.nonce();
                        let aad = aws_lc_rs::aead::Aad::from(&rec[..5]);
                        let plain = self.rx.key.open_in_place(nonce, aad, &mut body).unwrap();
                        let end = plain.iter().rposition(|b| *b != 0).unwrap();
                        return Some((plain[end], plain[..end].to_vec()));
                    }
                }
                let mut buf = [0u8; 16384];
                let n = tokio::time::timeout(Duration::from_secs(5), self.tcp.read(&mut buf))
                    .await
                    .expect("the server answers")
                    .unwrap_or(0);
                if n == 0 {
                    return None;
                }
                self.inbuf.extend_from_slice(&buf[..n]);
            }
        }

        /// Application data, following the server's key updates and
        /// skipping its session tickets; Err(alert description) when the
        /// server sends an alert, Err(0) at EOF.
        async fn recv_data(&mut self) -> Result<Vec<u8>, u8> {
            loop {
                match self.recv().await {
                    None => return Err(0),
                    Some((23, data)) => return Ok(data),
                    Some((21, alert)) => return Err(alert[1]),
                    Some((22, msgs)) => {
                        let mut rest = &msgs[..];
                        while rest.len() >= 4 {
                            let len = u32::from_be_bytes([0, rest[1], rest[2], rest[3]]) as usize;
                            if rest[0] == 24 {
                                self.rx.update();
                                if rest[4] == 1 {
                                    // update_requested: answer, then switch
                                    let ku = self.seal(22, &[24, 0, 0, 1, 0], 0);
                                    self.send(&ku).await;
                                    self.tx.update();
                                }
                            }
                            rest = &rest[4 + len..];
                        }
                    }
                    Some(other) => panic!("unexpected record {other:?}"),
                }
            }
        }
    }

    /// An echo server and a client configuration that trusts it and
    /// offers only TLS_AES_128_GCM_SHA256.
    struct Echo {
        addr: std::net::SocketAddr,
        client: Arc<rustls::ClientConfig>,
    }

    async fn echo_listener() -> (Echo, tokio::task::JoinHandle<Option<String>>) {
        let pki = pki_for(Some(
            rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(echo_server(listener, pki.server));
        (
            Echo {
                addr,
                client: pki.client,
            },
            server,
        )
    }

    /// RFC 8446 alert numbers.
    const UNEXPECTED_MESSAGE: u8 = 10;
    const RECORD_OVERFLOW: u8 = 22;
    const ILLEGAL_PARAMETER: u8 = 47;
    const DECODE_ERROR: u8 = 50;

    #[tokio::test]
    async fn a_finished_and_a_key_update_in_one_write_are_both_followed() {
        use std::io::{Read, Write};
        let (echo, server) = echo_listener().await;
        let mut tcp = TcpStream::connect(echo.addr).await.unwrap();
        let (mut client, mut out) =
            handshake_until_finished(&mut tcp, &echo.client, Arc::new(ClientSecrets::default()))
                .await;
        // the Finished, a KeyUpdate(update_requested) and data under the
        // new keys, all in one TCP write
        client.refresh_traffic_keys().unwrap();
        client
            .writer()
            .write_all(
                b"hello
",
            )
            .unwrap();
        while client.wants_write() {
            client.write_tls(&mut out).unwrap();
        }
        tcp.write_all(&out).await.unwrap();
        let mut got = Vec::new();
        while !got.ends_with(
            b"
",
        ) {
            let mut buf = vec![0u8; 16384];
            let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
                .await
                .expect("the server answers")
                .unwrap();
            assert!(n > 0, "the server dropped the connection");
            client.read_tls(&mut &buf[..n]).unwrap();
            client.process_new_packets().unwrap();
            let mut chunk = [0u8; 64];
            while let Ok(k) = client.reader().read(&mut chunk) {
                if k == 0 {
                    break;
                }
                got.extend_from_slice(&chunk[..k]);
            }
        }
        assert_eq!(
            got,
            b"HELLO
"
        );
        drop(tcp);
        assert_eq!(server_ends(server).await, None);
    }

    #[tokio::test]
    async fn tls13_records_padded_past_2_pow_14_plus_1_are_a_record_overflow() {
        let (echo, server) = echo_listener().await;
        let mut c = Raw13::connect(&echo).await;
        // content, type and padding: exactly 2^14 + 1 bytes: accepted
        let rec = c.seal(
            23,
            b"ok
",
            16384 + 1 - 4,
        );
        c.send(&rec).await;
        assert_eq!(
            c.recv_data().await,
            Ok(b"OK
"
            .to_vec())
        );
        // one byte of padding more: record_overflow (RFC 8446 §5.4)
        let rec = c.seal(
            23,
            b"no
",
            16384 + 2 - 4,
        );
        c.send(&rec).await;
        assert_eq!(c.recv_data().await, Err(RECORD_OVERFLOW));
        assert_eq!(
            server_ends(server).await.as_deref(),
            Some("peer sent excess record size")
        );
    }

    #[tokio::test]
    async fn malformed_key_updates_get_the_alerts_rfc_8446_names() {
        for (what, msg, alert) in [
            // request_update must be 0 or 1 (§4.6.3)
            (
                "request_update 2",
                &[24u8, 0, 0, 1, 2][..],
                ILLEGAL_PARAMETER,
            ),
            // a KeyUpdate must end its record (§5.1)
            (
                "not at a record boundary",
                &[24, 0, 0, 1, 0, 24, 0, 0, 1][..],
                UNEXPECTED_MESSAGE,
            ),
            // its body is one byte
            ("two-byte body", &[24, 0, 0, 2, 0, 0][..], DECODE_ERROR),
        ] {
            let (echo, server) = echo_listener().await;
            let mut c = Raw13::connect(&echo).await;
            let rec = c.seal(22, msg, 0);
            c.send(&rec).await;
            assert_eq!(c.recv_data().await, Err(alert), "{what}");
            assert!(server_ends(server).await.is_some(), "{what}");
        }
    }

    #[tokio::test]
    async fn a_key_update_split_across_records_is_followed() {
        let (echo, server) = echo_listener().await;
        let mut c = Raw13::connect(&echo).await;
        let first = c.seal(22, &[24, 0, 0], 0);
        let second = c.seal(22, &[1, 1], 0);
        c.send(&first).await;
        c.send(&second).await;
        // the new keys from here on; the server answers update_requested
        // with its own KeyUpdate before the data
        c.tx.update();
        let rec = c.seal(
            23, b"split
", 0,
        );
        c.send(&rec).await;
        assert_eq!(
            c.recv_data().await,
            Ok(b"SPLIT
"
            .to_vec())
        );
        let rec = c.seal(
            23, b"bye
", 0,
        );
        c.send(&rec).await;
        assert_eq!(
            c.recv_data().await,
            Ok(b"BYE
"
            .to_vec())
        );
        assert_eq!(server_ends(server).await, None);
    }

    /// OpenSSL's s_client as the peer (an independent TLS implementation):
    /// sends `lines` one at a time, waiting for each echo, with the
    /// s_client command lines (K: key update, R: renegotiate) in between.
    async fn s_client(args: &[&str], lines: &[&str]) -> (String, Option<String>) {
        use tokio::io::AsyncBufReadExt;
        let pki = pki();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(echo_server(listener, pki.server.clone()));
        let mut child = tokio::process::Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .args(["-servername", "localhost", "-no_ign_eof"])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("openssl (Debian package openssl) must be installed");
        let mut stdin = child.stdin.take().unwrap();
        let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = String::new();
        for line in lines {
            // s_client exits when the server ends the connection
            if stdin
                .write_all(format!("{line}\n").as_bytes())
                .await
                .is_err()
                || stdin.flush().await.is_err()
            {
                break;
            }
            if line.len() == 1 {
                // an s_client command: it takes the whole read, so the
                // next line must not arrive in the same one
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
            let want = line.to_uppercase();
            let found = tokio::time::timeout(Duration::from_secs(10), async {
                while let Ok(Some(l)) = out.next_line().await {
                    seen.push_str(&l);
                    seen.push('\n');
                    if l == want {
                        return true;
                    }
                }
                false
            })
            .await;
            if found != Ok(true) {
                break;
            }
        }
        drop(stdin);
        let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&output.stdout));
        seen.push_str(&String::from_utf8_lossy(&output.stderr));
        (seen, server_ends(server).await)
    }

    #[tokio::test]
    async fn openssl_client_key_updates_work_and_tls12_renegotiation_is_refused() {
        // TLS 1.3: K = KeyUpdate(update_requested), k = update_not_requested
        let (out, err) =
            s_client(&["-tls1_3"], &["hello", "K", "world", "k", "again", "bye"]).await;
        assert!(out.contains("KEYUPDATE"), "{out}");
        assert!(
            out.contains("WORLD\n") && out.contains("AGAIN\n"),
            "{err:?} {out}"
        );
        assert_eq!(err, None);
        // TLS 1.2: R = renegotiate: refused (rustls answers the
        // ClientHello with a no_renegotiation alert, RFC 5746 §4.2)
        let (out, _) = s_client(&["-tls1_2"], &["hello", "R", "world"]).await;
        assert!(out.contains("HELLO\n"), "{out}");
        assert!(out.contains("RENEGOTIATING"), "{out}");
        assert!(out.contains(":no renegotiation:"), "{out}");
        assert!(!out.contains("WORLD\n"), "{out}");
    }
}
