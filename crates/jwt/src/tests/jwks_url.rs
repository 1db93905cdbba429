//! JWKS from a URL, served by a tiny HTTP/1.1 server on 127.0.0.1:0.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::*;
use crate::JwtError;

/// What the server answers, and how many requests it has seen.
struct Jwks {
    response: Mutex<(u16, String)>,
    requests: AtomicUsize,
    arrived: Notify,
}

impl Jwks {
    fn serve(&self, status: u16, keys: Vec<Value>) {
        *self.response.lock().unwrap() = (status, json!({ "keys": keys }).to_string());
    }
    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn server(keys: Vec<Value>) -> (Arc<Jwks>, String) {
    let state = Arc::new(Jwks {
        response: Mutex::new((200, String::new())),
        requests: AtomicUsize::new(0),
        arrived: Notify::new(),
    });
    state.serve(200, keys);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let shared = Arc::clone(&state);
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let state = Arc::clone(&shared);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let (status, body) = state.response.lock().unwrap().clone();
                state.requests.fetch_add(1, Ordering::SeqCst);
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
                let _ = conn.shutdown().await;
                state.arrived.notify_one();
            });
        }
    });
    (state, url)
}

fn url_issuer(url: &str, refresh: Duration) -> IssuerConfig {
    issuer(
        ISS,
        vec![Alg::ES256, Alg::RS256],
        KeySource::Url {
            url: url.to_owned(),
            refresh,
            min_refetch_interval: Duration::from_secs(30),
        },
    )
}

fn es256(kid: &str, key: &EcdsaKeyPair) -> String {
    token(&header("ES256", kid), &claims(ISS), &Signer::Ec(key))
}

fn later(base: Instant, secs: u64) -> Now {
    Now {
        wall: UNIX_EPOCH + Duration::from_secs(NOW),
        mono: base + Duration::from_secs(secs),
    }
}

#[tokio::test]
async fn unknown_kid_refetches_once_then_is_rate_limited() {
    let k = keys();
    let (jwks, url) = server(vec![ec_jwk("old", &k.p256)]).await;
    let v = Verifier::new(
        vec![url_issuer(&url, Duration::from_secs(600))],
        reqwest::Client::new(),
    )
    .await
    .unwrap();
    assert_eq!(jwks.requests(), 1, "fetched once at start-up");
    let t0 = Instant::now();

    // A known kid needs no fetch.
    assert!(
        v.verify_at(&es256("old", &k.p256), later(t0, 0))
            .await
            .is_ok()
    );
    assert_eq!(jwks.requests(), 1);

    // The issuer rotates to a new key: the first token naming it causes one
    // refetch and then verifies.
    jwks.serve(200, vec![ec_jwk("new", &k.attacker_p256)]);
    assert!(
        v.verify_at(&es256("new", &k.attacker_p256), later(t0, 0))
            .await
            .is_ok()
    );
    assert_eq!(jwks.requests(), 2);
    // The old key is gone with the old set.
    assert_eq!(
        v.verify_at(&es256("old", &k.p256), later(t0, 1)).await,
        Err(JwtError::UnknownKey)
    );

    // Further unknown kids within min_refetch_interval (30 s) fetch nothing.
    for (i, kid) in ["made-up-1", "made-up-2", "../../etc/passwd"]
        .iter()
        .enumerate()
    {
        assert_eq!(
            v.verify_at(&es256(kid, &k.p256), later(t0, 2 + i as u64))
                .await,
            Err(JwtError::UnknownKey)
        );
    }
    assert_eq!(jwks.requests(), 2, "no refetch within the interval");

    // Once the interval has passed, one more refetch is allowed.
    assert_eq!(
        v.verify_at(&es256("made-up-3", &k.p256), later(t0, 31))
            .await,
        Err(JwtError::UnknownKey)
    );
    assert_eq!(jwks.requests(), 3);
    // A known kid never refetches.
    assert!(
        v.verify_at(&es256("new", &k.attacker_p256), later(t0, 100))
            .await
            .is_ok()
    );
    assert_eq!(jwks.requests(), 3);
}

#[tokio::test]
async fn last_good_set_survives_server_errors() {
    let k = keys();
    let (jwks, url) = server(vec![ec_jwk("k1", &k.p256)]).await;
    let v = Verifier::new(
        vec![url_issuer(&url, Duration::from_secs(600))],
        reqwest::Client::new(),
    )
    .await
    .unwrap();
    let t0 = Instant::now();
    jwks.serve(500, vec![]);

    // A background refresh that gets a 500 keeps the set.
    let Keys::Remote(remote) = &v.issuers[ISS].keys else {
        panic!("URL issuer without a remote key set")
    };
    assert!(!remote.refresh(&v.http).await);
    assert_eq!(jwks.requests(), 2);
    assert!(
        v.verify_at(&es256("k1", &k.p256), later(t0, 0))
            .await
            .is_ok()
    );

    // So does a refetch for an unknown kid that gets a 500.
    assert_eq!(
        v.verify_at(&es256("k2", &k.p256), later(t0, 0)).await,
        Err(JwtError::UnknownKey)
    );
    assert_eq!(jwks.requests(), 3);
    assert!(
        v.verify_at(&es256("k1", &k.p256), later(t0, 1))
            .await
            .is_ok()
    );

    // And a 200 with something that is not a usable JWKS.
    *jwks.response.lock().unwrap() = (200, "<html>maintenance</html>".into());
    assert!(!remote.refresh(&v.http).await);
    jwks.serve(200, vec![json!({"kty": "oct", "k": b64(HS_SECRET)})]);
    assert!(!remote.refresh(&v.http).await);
    assert!(
        v.verify_at(&es256("k1", &k.p256), later(t0, 2))
            .await
            .is_ok()
    );
    assert_eq!(jwks.requests(), 5);
}

#[tokio::test]
async fn url_down_at_start_up_then_recovers() {
    let k = keys();
    let (jwks, url) = server(vec![]).await;
    jwks.serve(503, vec![]);
    // Start-up succeeds with no keys for this issuer...
    let v = Verifier::new(
        vec![url_issuer(&url, Duration::from_secs(600))],
        reqwest::Client::new(),
    )
    .await
    .unwrap();
    assert_eq!(jwks.requests(), 1);
    let t0 = Instant::now();
    let t = es256("k1", &k.p256);
    // ...its tokens are refused (one bounded retry)...
    assert_eq!(
        v.verify_at(&t, later(t0, 0)).await,
        Err(JwtError::KeysUnavailable)
    );
    assert_eq!(jwks.requests(), 2);
    // ...no retry storm while the interval runs...
    jwks.serve(200, vec![ec_jwk("k1", &k.p256)]);
    assert_eq!(
        v.verify_at(&t, later(t0, 10)).await,
        Err(JwtError::KeysUnavailable)
    );
    assert_eq!(jwks.requests(), 2);
    // ...and once it has run, the recovered URL is fetched.
    assert!(v.verify_at(&t, later(t0, 30)).await.is_ok());
    assert_eq!(jwks.requests(), 3);
}

#[tokio::test]
async fn background_refresh_picks_up_rotation() {
    let k = keys();
    let (jwks, url) = server(vec![ec_jwk("k1", &k.p256)]).await;
    let v = Verifier::new(
        vec![url_issuer(&url, Duration::from_secs(1))],
        reqwest::Client::new(),
    )
    .await
    .unwrap();
    let handle = v.spawn_refresh();
    jwks.serve(200, vec![ec_jwk("k2", &k.attacker_p256)]);
    // The refresh task fetches sequentially, so when the third request
    // arrives the second one's answer (with k2) has been stored. Waiting on
    // the server's notification, not on a timer.
    while jwks.requests() < 3 {
        tokio::time::timeout(Duration::from_secs(20), jwks.arrived.notified())
            .await
            .expect("background refresh did not fetch");
    }
    let t0 = Instant::now();
    assert!(
        v.verify_at(&es256("k2", &k.attacker_p256), later(t0, 0))
            .await
            .is_ok()
    );
    // The task stops once the verifier is gone.
    drop(v);
    tokio::time::timeout(Duration::from_secs(20), handle)
        .await
        .expect("refresh task did not stop")
        .unwrap();
}

#[tokio::test]
async fn refresh_task_ends_at_once_without_urls() {
    let (v, _dir) = fixture().await;
    tokio::time::timeout(Duration::from_secs(5), v.spawn_refresh())
        .await
        .unwrap()
        .unwrap();
}

use crate::verifier::Keys;

#[tokio::test]
async fn verified_cache_is_dropped_when_the_key_set_rotates() {
    let k = keys();
    let (jwks, url) = server(vec![ec_jwk("k1", &k.p256)]).await;
    let v = Verifier::new(
        vec![url_issuer(&url, Duration::from_secs(1))],
        reqwest::Client::new(),
    )
    .await
    .unwrap();
    let t0 = Instant::now();
    let token = es256("k1", &k.p256);
    // verified once (and cached), then again from the cache
    assert!(v.verify_at(&token, later(t0, 0)).await.is_ok());
    assert!(v.verify_at(&token, later(t0, 0)).await.is_ok());
    // the issuer drops k1; after the refresh the cached verification must not be used
    let handle = v.spawn_refresh();
    jwks.serve(200, vec![ec_jwk("k2", &k.attacker_p256)]);
    while jwks.requests() < 3 {
        tokio::time::timeout(Duration::from_secs(20), jwks.arrived.notified())
            .await
            .expect("background refresh did not fetch");
    }
    assert_eq!(
        v.verify_at(&token, later(t0, 0)).await,
        Err(JwtError::UnknownKey)
    );
    drop(v);
    let _ = tokio::time::timeout(Duration::from_secs(20), handle).await;
}

/// A redirect hop that is neither https nor loopback is never contacted,
/// even when the chain would end at an acceptable URL.
#[tokio::test]
async fn a_refused_redirect_hop_is_never_followed() {
    let k = keys();
    let (jwks, final_url) = server(vec![ec_jwk("k", &k.p256)]).await;
    // one server on [::]:0 answers both hops: /start (reached as 127.0.0.1,
    // loopback) redirects to itself as [::ffff:127.0.0.1] (not loopback by
    // the URL rules), which would redirect on to the real JWKS
    let Ok(listener) = TcpListener::bind("[::]:0").await else {
        eprintln!("SKIPPED: no IPv6 socket here");
        return;
    };
    let port = listener.local_addr().unwrap().port();
    let hops = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&hops);
    let next = final_url.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let line = String::from_utf8_lossy(&buf)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            seen.lock().unwrap().push(line.clone());
            let location = if line.contains("/start") {
                format!("http://[::ffff:127.0.0.1]:{port}/hop")
            } else {
                next.clone()
            };
            let reply = format!(
                "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = conn.write_all(reply.as_bytes()).await;
        }
    });
    let start = format!("http://127.0.0.1:{port}/start");
    let client = crate::jwks_client(Duration::from_secs(5)).unwrap();
    let v = Verifier::new(vec![url_issuer(&start, Duration::from_secs(600))], client)
        .await
        .unwrap();
    let t0 = Instant::now();
    let err = v
        .verify_at(&es256("k", &k.p256), later(t0, 0))
        .await
        .unwrap_err();
    assert_eq!(err, JwtError::KeysUnavailable, "no key set was fetched");
    let hops = hops.lock().unwrap().clone();
    // start-up fetch and one refetch for the unknown key: each stopped at /start
    assert!(!hops.is_empty());
    assert!(
        hops.iter().all(|h| h.contains("/start")),
        "the refused hop was contacted: {hops:?}"
    );
    assert_eq!(
        jwks.requests(),
        0,
        "the chain's acceptable end was never reached"
    );

    // allow: redirects between acceptable URLs are followed
    let (_jwks2, url2) = server(vec![ec_jwk("k", &k.p256)]).await;
    let redirector = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let raddr = redirector.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = redirector.accept().await {
            let mut chunk = [0u8; 1024];
            let _ = conn.read(&mut chunk).await;
            let reply = format!(
                "HTTP/1.1 302 Found\r\nlocation: {url2}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = conn.write_all(reply.as_bytes()).await;
        }
    });
    let client = crate::jwks_client(Duration::from_secs(5)).unwrap();
    let v = Verifier::new(
        vec![url_issuer(
            &format!("http://{raddr}/jwks"),
            Duration::from_secs(600),
        )],
        client,
    )
    .await
    .unwrap();
    assert!(
        v.verify_at(&es256("k", &k.p256), later(Instant::now(), 0))
            .await
            .is_ok()
    );
}

/// A reload while the identity provider is down keeps the last good key
/// set (it is not dropped until the provider is back).
#[tokio::test]
async fn a_reload_while_the_provider_is_down_keeps_the_last_good_keys() {
    let k = keys();
    let (jwks, url) = server(vec![ec_jwk("k", &k.p256)]).await;
    let first = Verifier::new(
        vec![url_issuer(&url, Duration::from_secs(600))],
        reqwest::Client::new(),
    )
    .await
    .unwrap();
    let t0 = Instant::now();
    assert!(
        first
            .verify_at(&es256("k", &k.p256), later(t0, 0))
            .await
            .is_ok()
    );
    // the provider goes down; the configuration is reloaded
    jwks.serve(503, vec![]);
    let reloaded = Verifier::new_after(
        vec![url_issuer(&url, Duration::from_secs(600))],
        reqwest::Client::new(),
        Some(&first),
    )
    .await
    .unwrap();
    assert!(
        reloaded
            .verify_at(&es256("k", &k.p256), later(t0, 0))
            .await
            .is_ok(),
        "the last good set serves after the reload"
    );
    // deny side: without a previous set, the issuer has no keys
    let fresh = Verifier::new(
        vec![url_issuer(&url, Duration::from_secs(600))],
        reqwest::Client::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        fresh
            .verify_at(&es256("k", &k.p256), later(t0, 0))
            .await
            .unwrap_err(),
        JwtError::KeysUnavailable
    );
    // another URL does not inherit the set
    let other = format!("{url}?other");
    let moved = Verifier::new_after(
        vec![url_issuer(&other, Duration::from_secs(600))],
        reqwest::Client::new(),
        Some(&first),
    )
    .await
    .unwrap();
    assert_eq!(
        moved
            .verify_at(&es256("k", &k.p256), later(t0, 0))
            .await
            .unwrap_err(),
        JwtError::KeysUnavailable
    );
}
