//! Limits on a request's stream once it is forwarded, so that no client can
//! hold upstream connections (and the service's workers behind them):
//!
//! - **stream idle timeout** (Envoy's `stream_idle_timeout`): a response
//!   body that makes no progress for `limits.stream_idle_timeout` is cut
//!   and its upstream connection closed, whether the upstream stopped
//!   sending ([`IdleBody`]'s own timer, the body is being polled) or the
//!   client stopped reading (an HTTP/2 stream stalled by flow control: the
//!   body is not polled at all, so a watchdog task looks at it). HTTP/1.1
//!   needs no watchdog: a client that stops reading blocks the socket
//!   write, which `limits.send_timeout` bounds. The request body has the
//!   same timer (see `pipeline/mod.rs`);
//! - **concurrent upstream requests per client** ([`ClientSlots`]): at most
//!   `limits.max_concurrent_requests_per_client` requests of one client
//!   address (IPv6: its /64) are forwarded at a time; one more is a 429
//!   `too_many_concurrent_requests`. Rate limits count requests, not how
//!   long each holds a stream.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::error::Body;
use crate::error::BoxError;

const SHARDS: usize = 16;

/// In-flight forwarded requests per client address, shared by every worker
/// and kept across reloads.
pub struct ClientSlots {
    shards: Box<[Mutex<HashMap<IpAddr, u32>>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for ClientSlots {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }
}

/// The address a client's requests are counted under: an IPv4 address
/// (also when IPv4-mapped), or an IPv6 address's /64 (one host's share of a
/// network, as for the server's per-address connection limit).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl ClientSlots {
    fn shard(&self, key: &IpAddr) -> MutexGuard<'_, HashMap<IpAddr, u32>> {
        let i = (self.hasher.hash_one(key) as usize) % self.shards.len();
        match self.shards[i].lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// One more forwarded request for `ip`, or `None` when it already has
    /// `max` in flight.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, max: u32) -> Option<ClientSlot> {
        let key = client_key(ip);
        let mut shard = self.shard(&key);
        let n = shard.entry(key).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            slots: self.clone(),
            key,
        })
    }

    /// Requests in flight for `ip` (tests, metrics).
    pub fn in_flight(&self, ip: IpAddr) -> u32 {
        let key = client_key(ip);
        self.shard(&key).get(&key).copied().unwrap_or(0)
    }
}

/// One forwarded request of a client, released when dropped.
pub struct ClientSlot {
    slots: Arc<ClientSlots>,
    key: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut shard = self.slots.shard(&self.key);
        if let Some(n) = shard.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                shard.remove(&self.key);
            }
        }
    }
}

/// What the body and its watchdog share.
struct Shared {
    /// `None` once the watchdog cut the stream.
    body: Option<Body>,
    /// A frame was handed out and the body was not polled since: the
    /// stream waits for the client.
    waiting_on_client: bool,
    /// When the last frame was handed out.
    last: Instant,
}

fn lock(s: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    match s.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The stream idle timeout tripped: the response is cut.
#[derive(Debug, thiserror::Error)]
#[error("stream idle timeout")]
pub struct StreamIdle;

/// Where the upstream body lives: inline when only hyper polls it
/// (HTTP/1.1: no lock, no clock read per frame), shared with the watchdog
/// when a client may stall the stream without blocking a socket (HTTP/2).
enum Inner {
    /// `None` once the body ended or was cut.
    Plain(Option<Body>),
    Watched(Arc<Mutex<Shared>>),
}

/// A forwarded response body under the stream idle timeout, holding the
/// client's [`ClientSlot`] until hyper is done with it.
pub struct IdleBody {
    inner: Inner,
    timeout: Duration,
    /// Runs while the body waits for the upstream (made on first use).
    timer: Option<Pin<Box<Sleep>>>,
    /// `timer` runs from the current wait's start.
    armed: bool,
    watchdog: Option<tokio::task::AbortHandle>,
    _slot: Option<ClientSlot>,
}

/// The body is waiting for the upstream: (re)start the timer for this wait
/// and report whether the wait has lasted `timeout`.
fn upstream_idle(
    timer: &mut Option<Pin<Box<Sleep>>>,
    armed: &mut bool,
    timeout: Duration,
    cx: &mut Context<'_>,
) -> bool {
    let deadline = Instant::now() + timeout;
    let timer = match timer {
        Some(t) => {
            if !*armed {
                t.as_mut().reset(deadline);
            }
            t
        }
        None => timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
    };
    *armed = true;
    if timer.as_mut().poll(cx).is_ready() {
        metrics::counter!("palisade_gateway_stream_idle_timeouts_total", "waiting_on" => "upstream").increment(1);
        tracing::info!(
            "response stream cut: the upstream sent nothing for the stream idle timeout"
        );
        return true;
    }
    false
}

fn cut<T>() -> Poll<Option<Result<T, BoxError>>> {
    Poll::Ready(Some(Err(Box::new(StreamIdle))))
}

impl IdleBody {
    /// `watch_client`: the stream shares its connection (HTTP/2), so a
    /// client that stops reading it does not block any socket write.
    pub fn new(
        body: Body,
        timeout: Duration,
        watch_client: bool,
        slot: Option<ClientSlot>,
    ) -> Self {
        let inner = if watch_client {
            Inner::Watched(Arc::new(Mutex::new(Shared {
                body: Some(body),
                waiting_on_client: false,
                last: Instant::now(),
            })))
        } else {
            Inner::Plain(Some(body))
        };
        Self {
            inner,
            timeout,
            timer: None,
            armed: false,
            watchdog: None,
            _slot: slot,
        }
    }

    /// Look every `timeout` at a stream that waits for its client; cut it
    /// (dropping the upstream body closes the upstream connection) once it
    /// has waited a whole `timeout`.
    fn spawn_watchdog(shared: &Arc<Mutex<Shared>>, timeout: Duration) -> tokio::task::AbortHandle {
        let weak: Weak<Mutex<Shared>> = Arc::downgrade(shared);
        let task = tokio::spawn(async move {
            let mut at = Instant::now() + timeout;
            loop {
                tokio::time::sleep_until(at).await;
                let Some(shared) = weak.upgrade() else { return };
                let mut s = lock(&shared);
                if s.body.is_none() {
                    return;
                }
                if s.waiting_on_client && s.last.elapsed() >= timeout {
                    let body = s.body.take();
                    drop(s);
                    drop(body);
                    metrics::counter!("palisade_gateway_stream_idle_timeouts_total", "waiting_on" => "client").increment(1);
                    tracing::info!(
                        "response stream cut: the client read nothing for the stream idle timeout"
                    );
                    return;
                }
                at = if s.waiting_on_client {
                    s.last + timeout
                } else {
                    Instant::now() + timeout
                };
            }
        });
        task.abort_handle()
    }
}

impl Drop for IdleBody {
    fn drop(&mut self) {
        if let Some(w) = self.watchdog.take() {
            w.abort();
        }
    }
}

impl hyper::body::Body for IdleBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match &mut this.inner {
            Inner::Plain(slot) => {
                let Some(body) = slot.as_mut() else {
                    return cut();
                };
                match Pin::new(body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        this.armed = false;
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(other) => {
                        *slot = None;
                        Poll::Ready(other)
                    }
                    Poll::Pending => {
                        if upstream_idle(&mut this.timer, &mut this.armed, this.timeout, cx) {
                            *slot = None;
                            return cut();
                        }
                        Poll::Pending
                    }
                }
            }
            Inner::Watched(shared) => {
                let mut s = lock(shared);
                s.waiting_on_client = false;
                let Some(body) = s.body.as_mut() else {
                    return cut();
                };
                match Pin::new(body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        this.armed = false;
                        let more = !s.body.as_ref().is_some_and(|b| b.is_end_stream());
                        s.last = Instant::now();
                        s.waiting_on_client = more;
                        drop(s);
                        if more && this.watchdog.is_none() {
                            this.watchdog = Some(Self::spawn_watchdog(shared, this.timeout));
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(other) => {
                        s.body = None;
                        Poll::Ready(other)
                    }
                    Poll::Pending => {
                        if upstream_idle(&mut this.timer, &mut this.armed, this.timeout, cx) {
                            let body = s.body.take();
                            drop(s);
                            drop(body);
                            return cut();
                        }
                        Poll::Pending
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Plain(b) => b.as_ref().is_some_and(|b| b.is_end_stream()),
            Inner::Watched(shared) => lock(shared)
                .body
                .as_ref()
                .is_some_and(|b| b.is_end_stream()),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Plain(b) => b.as_ref().map(|b| b.size_hint()).unwrap_or_default(),
            Inner::Watched(shared) => lock(shared)
                .body
                .as_ref()
                .map(|b| b.size_hint())
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn slots_cap_each_client_and_are_released_on_drop() {
        let slots = Arc::new(ClientSlots::default());
        let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let b = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        let one = slots.acquire(a, 2).expect("first");
        let two = slots.acquire(a, 2).expect("second");
        assert!(slots.acquire(a, 2).is_none(), "third is over the cap");
        assert!(slots.acquire(b, 2).is_some(), "another client is not");
        drop(one);
        let three = slots.acquire(a, 2).expect("a slot was released");
        drop((two, three));
        assert_eq!(slots.in_flight(a), 0);
        assert!(slots.shard(&a).is_empty(), "no entry kept for idle clients");
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_and_mapped_v4_as_v4() {
        let slots = Arc::new(ClientSlots::default());
        let x: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let y: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _g = slots.acquire(x, 1).expect("first");
        assert!(slots.acquire(y, 1).is_none(), "same /64");
        assert!(slots.acquire(other, 1).is_some(), "another /64");
        let v4 = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
        let mapped = IpAddr::V6(Ipv4Addr::new(198, 51, 100, 7).to_ipv6_mapped());
        let _h = slots.acquire(v4, 1).expect("v4");
        assert!(
            slots.acquire(mapped, 1).is_none(),
            "mapped is the same client"
        );
        assert_eq!(
            client_key(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        );
    }

    /// A body whose frames come from a channel the test feeds; the test
    /// sees the body dropped as the sender closing.
    struct ChanBody(tokio::sync::mpsc::Receiver<Bytes>);

    impl hyper::body::Body for ChanBody {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.get_mut()
                .0
                .poll_recv(cx)
                .map(|o| o.map(|b| Ok(Frame::data(b))))
        }
    }

    fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, Body) {
        use http_body_util::BodyExt;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        (tx, ChanBody(rx).boxed())
    }

    const T: Duration = Duration::from_secs(10);

    async fn next(b: &mut IdleBody) -> Option<Result<Bytes, String>> {
        use http_body_util::BodyExt;
        b.frame().await.map(|r| {
            r.map(|f| f.into_data().unwrap_or_default())
                .map_err(|e| e.to_string())
        })
    }

    #[tokio::test(start_paused = true)]
    async fn an_upstream_that_sends_nothing_for_the_timeout_is_cut() {
        let (tx, body) = channel_body();
        let mut b = IdleBody::new(body, T, false, None);
        tx.send(Bytes::from_static(b"a")).await.unwrap();
        assert_eq!(next(&mut b).await, Some(Ok(Bytes::from_static(b"a"))));
        // progress within the timeout, again and again, keeps it going
        for _ in 0..3 {
            tokio::time::sleep(T - Duration::from_secs(1)).await;
            tx.send(Bytes::from_static(b"b")).await.unwrap();
            assert_eq!(next(&mut b).await, Some(Ok(Bytes::from_static(b"b"))));
        }
        let started = Instant::now();
        assert_eq!(next(&mut b).await, Some(Err("stream idle timeout".into())));
        assert_eq!(started.elapsed(), T);
        assert!(tx.is_closed(), "the upstream body is dropped");
        assert_eq!(next(&mut b).await, Some(Err("stream idle timeout".into())));
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_client_that_stops_reading_has_its_upstream_cut() {
        let (tx, body) = channel_body();
        let mut b = IdleBody::new(body, T, true, None);
        tx.send(Bytes::from_static(b"a")).await.unwrap();
        assert_eq!(next(&mut b).await, Some(Ok(Bytes::from_static(b"a"))));
        // not polled for less than the timeout: kept
        tokio::time::sleep(T - Duration::from_secs(1)).await;
        assert!(!tx.is_closed());
        tx.send(Bytes::from_static(b"b")).await.unwrap();
        assert_eq!(next(&mut b).await, Some(Ok(Bytes::from_static(b"b"))));
        // not polled for the whole timeout: the upstream body is dropped
        // (its connection closes) without anyone polling
        tokio::time::sleep(T + Duration::from_secs(1)).await;
        assert!(tx.is_closed(), "the watchdog dropped the upstream body");
        assert_eq!(next(&mut b).await, Some(Err("stream idle timeout".into())));
    }

    #[tokio::test(start_paused = true)]
    async fn an_http1_body_is_left_to_the_socket_send_timeout() {
        let (tx, body) = channel_body();
        let mut b = IdleBody::new(body, T, false, None);
        tx.send(Bytes::from_static(b"a")).await.unwrap();
        assert_eq!(next(&mut b).await, Some(Ok(Bytes::from_static(b"a"))));
        tokio::time::sleep(T * 3).await;
        assert!(!tx.is_closed());
        drop(tx);
        assert_eq!(next(&mut b).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_client_slot_is_held_until_the_body_is_dropped() {
        let slots = Arc::new(ClientSlots::default());
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let (_tx, body) = channel_body();
        let b = IdleBody::new(body, T, true, slots.acquire(ip, 1));
        assert!(slots.acquire(ip, 1).is_none());
        drop(b);
        assert!(slots.acquire(ip, 1).is_some());
    }
}
