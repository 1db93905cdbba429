//! HTTP limits the pipeline enforces itself (so every refusal gets the JSON
//! error body and a security-log line): header count and size, unambiguous
//! framing, and the request body's size, minimum rate and idle timeout
//! while it streams to the upstream ([`GuardedBody`]).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};

use crate::config::Limits;
use crate::error::{BoxError, GatewayError};

const BODY_OK: u8 = 0;
const BODY_TOO_LARGE: u8 = 1;
const BODY_TOO_SLOW: u8 = 2;
/// The client's body broke (malformed framing, a disconnect mid-body).
const BODY_BROKEN: u8 = 3;

/// Why the client's body was cut off, read after the upstream step failed:
/// a failure the client caused is the client's error (and never held
/// against the endpoint's health).
#[derive(Clone, Debug, Default)]
pub struct ClientFault(Arc<AtomicU8>);

impl ClientFault {
    /// The client broke nothing (so far).
    pub fn is_clear(&self) -> bool {
        self.0.load(Ordering::Relaxed) == BODY_OK
    }

    /// The error the client caused, if it caused one.
    pub fn error(&self) -> Option<GatewayError> {
        match self.0.load(Ordering::Relaxed) {
            BODY_TOO_LARGE => Some(GatewayError::PayloadTooLarge),
            BODY_TOO_SLOW => Some(GatewayError::RequestTimeout),
            BODY_BROKEN => Some(GatewayError::InvalidBody),
            _ => None,
        }
    }

    fn set(&self, v: u8) {
        self.0.store(v, Ordering::Relaxed);
    }
}

/// The request body with the route's size limit, the minimum-rate rule
/// (slow-body defence) and the stream idle timeout enforced while it
/// streams to the upstream.
pub struct GuardedBody<B> {
    inner: B,
    read: u64,
    max: u64,
    started: Instant,
    min_rate: u64,
    fault: ClientFault,
    /// The stream idle timeout: the longest the client may send nothing
    /// while the upstream waits for the body.
    idle: Duration,
    /// Runs while the body waits for the client (made on first use).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
}

impl<B> GuardedBody<B> {
    /// `inner` limited to `max` bytes, `min_rate` bytes/s after a grace
    /// period (0: no minimum) and `idle` without a byte; the returned
    /// [`ClientFault`] says which limit cut it.
    pub fn new(inner: B, max: u64, min_rate: u64, idle: Duration) -> (Self, ClientFault) {
        let fault = ClientFault::default();
        (
            Self {
                inner,
                read: 0,
                max,
                started: Instant::now(),
                min_rate,
                fault: fault.clone(),
                idle,
                timer: None,
                armed: false,
            },
            fault,
        )
    }
}

/// Grace period before the minimum body rate applies.
const RATE_GRACE: Duration = Duration::from_secs(5);

impl<B> hyper::body::Body for GuardedBody<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.armed = false;
                if let Some(d) = frame.data_ref() {
                    this.read += d.len() as u64;
                    if this.read > this.max {
                        this.fault.set(BODY_TOO_LARGE);
                        return Poll::Ready(Some(Err("request body too large".into())));
                    }
                    let elapsed = this.started.elapsed();
                    if this.min_rate > 0
                        && elapsed > RATE_GRACE
                        && (this.read as f64 / elapsed.as_secs_f64()) < this.min_rate as f64
                    {
                        this.fault.set(BODY_TOO_SLOW);
                        return Poll::Ready(Some(Err("request body too slow".into())));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                // the client's fault: a 400, never held against the upstream
                this.fault.set(BODY_BROKEN);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = tokio::time::Instant::now() + this.idle;
                let timer = match &mut this.timer {
                    Some(t) => {
                        if !this.armed {
                            t.as_mut().reset(deadline);
                        }
                        t
                    }
                    None => this
                        .timer
                        .insert(Box::pin(tokio::time::sleep_until(deadline))),
                };
                this.armed = true;
                if timer.as_mut().poll(cx).is_ready() {
                    this.fault.set(BODY_TOO_SLOW);
                    metrics::counter!("palisade_gateway_stream_idle_timeouts_total", "waiting_on" => "client_body").increment(1);
                    return Poll::Ready(Some(Err("request body idle".into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// hyper's own head limits, set four times the configured ones: the
/// configured limits are enforced in the pipeline ([`check_headers`]), so
/// a refusal gets the JSON error body and a security-log line; only a head
/// past these outer bounds gets hyper's bare answer.
pub fn outer_header_bytes(limits: &Limits) -> usize {
    limits.max_header_bytes.saturating_mul(4).max(8192)
}

pub fn outer_headers(limits: &Limits) -> usize {
    limits.max_headers.saturating_mul(4)
}

/// The configured header limits: at most `max_headers` fields and
/// `max_header_bytes` of names and values (each counted with its `: ` and
/// line end) -> 431.
pub fn check_headers(h: &hyper::HeaderMap, limits: &Limits) -> Result<(), GatewayError> {
    if h.len() > limits.max_headers {
        return Err(GatewayError::HeadersTooLarge);
    }
    let bytes: usize = h.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    if bytes > limits.max_header_bytes {
        return Err(GatewayError::HeadersTooLarge);
    }
    Ok(())
}

/// Ambiguous framing is refused (request smuggling): both Content-Length and
/// Transfer-Encoding, several or invalid Content-Length values, or a
/// Transfer-Encoding other than a single `chunked`.
pub fn check_framing(h: &hyper::HeaderMap) -> Result<(), GatewayError> {
    let cls: Vec<&HeaderValue> = h.get_all(header::CONTENT_LENGTH).iter().collect();
    let tes: Vec<&HeaderValue> = h.get_all(header::TRANSFER_ENCODING).iter().collect();
    if !cls.is_empty() && !tes.is_empty() {
        return Err(GatewayError::BadRequest("ambiguous message framing"));
    }
    if cls.len() > 1 {
        return Err(GatewayError::BadRequest("ambiguous message framing"));
    }
    if let Some(cl) = cls.first()
        && !cl
            .to_str()
            .is_ok_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(GatewayError::BadRequest("invalid Content-Length"));
    }
    if tes.len() > 1
        || tes
            .first()
            .is_some_and(|te| !te.as_bytes().eq_ignore_ascii_case(b"chunked"))
    {
        return Err(GatewayError::BadRequest("unsupported Transfer-Encoding"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderName;

    #[test]
    fn configured_header_limits_are_the_gateways() {
        let limits = crate::config::Limits {
            max_headers: 3,
            max_header_bytes: 8192,
            ..crate::config::Limits::default()
        };
        let mut h = hyper::HeaderMap::new();
        for i in 0..3 {
            h.insert(
                HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        assert!(check_headers(&h, &limits).is_ok());
        h.insert("x-3", HeaderValue::from_static("v"));
        assert_eq!(
            check_headers(&h, &limits),
            Err(GatewayError::HeadersTooLarge)
        );
        let mut big = hyper::HeaderMap::new();
        big.insert(
            "x-big",
            HeaderValue::from_str(&"v".repeat(8192 - 9)).unwrap(),
        );
        assert!(check_headers(&big, &limits).is_ok());
        big.insert(
            "x-big",
            HeaderValue::from_str(&"v".repeat(8192 - 8)).unwrap(),
        );
        assert_eq!(
            check_headers(&big, &limits),
            Err(GatewayError::HeadersTooLarge)
        );
        assert_eq!(outer_header_bytes(&limits), 4 * 8192);
        assert_eq!(outer_headers(&limits), 12);
    }

    #[test]
    fn framing() {
        let mut h = hyper::HeaderMap::new();
        assert!(check_framing(&h).is_ok());
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        assert!(check_framing(&h).is_ok());
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert_eq!(
            check_framing(&h).unwrap_err(),
            GatewayError::BadRequest("ambiguous message framing")
        );
        let mut h = hyper::HeaderMap::new();
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        assert_eq!(
            check_framing(&h).unwrap_err(),
            GatewayError::BadRequest("ambiguous message framing")
        );
        let mut h = hyper::HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("+10"));
        assert_eq!(
            check_framing(&h).unwrap_err(),
            GatewayError::BadRequest("invalid Content-Length")
        );
        let mut h = hyper::HeaderMap::new();
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("gzip, chunked"),
        );
        assert_eq!(
            check_framing(&h).unwrap_err(),
            GatewayError::BadRequest("unsupported Transfer-Encoding")
        );
    }
}
