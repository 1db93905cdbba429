//! A lean HTTP/1.1 keep-alive client for load generation.
//!
//! One connection per simulated client (hyper's connection API): no pool,
//! no URL parsing, no header merging per request. On two shared cores the
//! load generator's own CPU is taken from the servers it measures, and a
//! cell that runs one more process (a standby forwarding to the active node)
//! feels it most; the lighter the load generator, the more the figures say
//! about the servers.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;

/// A keep-alive connection to one `http://host:port` server, opened on first
/// use and again after any error.
pub(crate) struct Conn {
    authority: String,
    send: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    /// `base` is `http://host:port` (plain HTTP: the benchmarks run on
    /// loopback).
    pub(crate) fn new(base: &str) -> Result<Self, String> {
        let authority = base
            .strip_prefix("http://")
            .ok_or_else(|| format!("{base}: only http:// addresses are supported"))?
            .trim_end_matches('/')
            .to_string();
        Ok(Self {
            authority,
            send: None,
        })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let tcp = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(&self.authority),
        )
        .await
        .map_err(|_| "connect timeout".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(send)
    }

    /// One request; the status and the whole body. Any error drops the
    /// connection (the next request opens another).
    pub(crate) async fn request(
        &mut self,
        method: hyper::Method,
        path: &str,
        headers: &[(&'static str, &str)],
        body: Bytes,
    ) -> Result<(u16, Bytes), String> {
        let mut send = match self.send.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.authority.as_str());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if !body.is_empty() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        send.ready().await.map_err(|e| format!("connection: {e}"))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        self.send = Some(send);
        Ok((status, body))
    }
}
