//! Graceful shutdown of a real `palisade server` process on SIGTERM: it stops
//! accepting connections, lets an in-flight request finish, and exits 0
//! within a bounded time.
//!
//! The in-flight request is held open without any slow endpoint: its headers
//! carry `Expect: 100-continue`, and the server's `100 Continue` proves the
//! handler is running and waiting for the body, which is sent only after the
//! signal (and after the listener has closed).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use std::time::{Duration, Instant};

use common::{Server, Spec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const EXIT_LIMIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = Spec::sqlite(dir.path());
    let mut server = Server::start(&spec).await;
    let c = spec.client();

    // an ordinary request first
    let r = c
        .get(server.url("sys/init"))
        .send()
        .await
        .expect("sys/init");
    assert_eq!(r.status(), 200);

    // an in-flight request: headers sent, body withheld until after SIGTERM
    let body = br#"{"secret_shares":1,"secret_threshold":1}"#;
    let mut conn = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("connect");
    let head = format!(
        "PUT /v1/sys/init HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.expect("send head");
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
        .await
        .expect("no 100 Continue within 10s")
        .expect("read 100 Continue");
    let interim = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim:?}");

    server.sigterm();
    let t0 = Instant::now();

    // the listener closes: new connections are refused
    loop {
        match TcpStream::connect(("127.0.0.1", server.port)).await {
            Err(_) => break,
            Ok(_) => {
                assert!(
                    t0.elapsed() < EXIT_LIMIT,
                    "still accepting connections {EXIT_LIMIT:?} after SIGTERM"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert!(
        server.try_wait().is_none(),
        "the server exited with a request in flight"
    );

    // the in-flight request completes
    conn.write_all(body).await.expect("send body");
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut resp))
        .await
        .expect("no response within 10s")
        .expect("read response");
    let resp = String::from_utf8_lossy(&resp);
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "in-flight request: {resp}"
    );
    assert!(resp.contains("\"root_token\""), "in-flight request: {resp}");

    // and the process exits 0, in bounded time
    let status = server
        .wait_exit(EXIT_LIMIT)
        .await
        .unwrap_or_else(|| panic!("no exit within {EXIT_LIMIT:?} of SIGTERM"));
    assert!(status.success(), "exit status {status}");
    eprintln!(
        "sigterm_drains: exited {status} {:?} after SIGTERM",
        t0.elapsed()
    );
    assert!(
        server
            .output()
            .contains("shutdown signal received; draining in-flight requests"),
        "{}",
        server.output()
    );
}
