//! The key table kept as one versioned document (the form Palisade's KV
//! holds it in): the same allow and deny behaviour as the SQLite store, the
//! document holding only records and keyed hashes, check-and-set races
//! retried, and an unreadable document failing closed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_apikey::{ApiKeyError, ApiKeyStore, DocFuture, Document, NewKey, StoreOptions};
use palisade_core::Secret;

/// An in-memory document with a version, like a KV v2 secret with `cas`.
#[derive(Default)]
struct Mem {
    doc: Mutex<(Option<Vec<u8>>, u64)>,
    /// Writes to lose on purpose (another writer got there first).
    lose: Mutex<u32>,
    down: Mutex<bool>,
    /// Reads fail after a pause (a hung store), counted.
    slow: Mutex<bool>,
    reads: std::sync::atomic::AtomicUsize,
}

impl Document for Mem {
    fn read(&self) -> DocFuture<'_, (Option<Vec<u8>>, u64)> {
        Box::pin(async move {
            self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let slow = *self.slow.lock().unwrap();
            if slow {
                tokio::time::sleep(Duration::from_millis(300)).await;
                return Err("timeout".into());
            }
            if *self.down.lock().unwrap() {
                return Err("connection refused".into());
            }
            Ok(self.doc.lock().unwrap().clone())
        })
    }
    fn write(&self, body: Vec<u8>, version: u64) -> DocFuture<'_, bool> {
        Box::pin(async move {
            let mut d = self.doc.lock().unwrap();
            let mut lose = self.lose.lock().unwrap();
            if *lose > 0 {
                // someone else's write lands first
                *lose -= 1;
                d.1 += 1;
                return Ok(false);
            }
            if d.1 != version {
                return Ok(false);
            }
            *d = (Some(body), version + 1);
            Ok(true)
        })
    }
}

fn opts() -> StoreOptions {
    StoreOptions {
        refresh_interval: Duration::ZERO,
        max_staleness: Duration::from_secs(60),
    }
}

fn new_key(consumer: &str) -> NewKey {
    NewKey {
        consumer: consumer.into(),
        scopes: vec!["orders:read".into()],
        expires_at: None,
        description: "doc key".into(),
    }
}

fn now() -> i64 {
    palisade_core::now_nanos() / 1_000_000_000
}

#[tokio::test]
async fn keys_in_a_document_verify_revoke_and_rotate() {
    let mem = Arc::new(Mem::default());
    let store = ApiKeyStore::open_document(mem.clone(), Secret::new(vec![3; 32]), opts())
        .await
        .unwrap();
    let issued = store.create(new_key("partner-a")).await.unwrap();
    let key = issued.key.expose().clone();

    // allow: the key verifies, in this store and in another one reading the
    // same document (another gateway)
    let other = ApiKeyStore::open_document(mem.clone(), Secret::new(vec![3; 32]), opts())
        .await
        .unwrap();
    for s in [&store, &other] {
        assert_eq!(s.verify(&key, now()).await.unwrap().consumer, "partner-a");
    }
    // the document holds the record and a keyed hash, never the key or its secret
    let text = String::from_utf8(mem.doc.lock().unwrap().0.clone().unwrap()).unwrap();
    let secret = key.rsplit('_').next().unwrap();
    assert!(!text.contains(&key) && !text.contains(secret), "{text}");
    assert!(
        text.contains(&issued.record.id) && text.contains("\"hash\""),
        "{text}"
    );

    // deny: a wrong pepper, a wrong secret
    let peppered = ApiKeyStore::open_document(mem.clone(), Secret::new(vec![4; 32]), opts())
        .await
        .unwrap();
    assert_eq!(
        peppered.verify(&key, now()).await,
        Err(ApiKeyError::BadSecret)
    );
    let mut wrong = key.clone();
    wrong.pop();
    wrong.push(if key.ends_with('a') { 'b' } else { 'a' });
    assert_eq!(
        store.verify(&wrong, now()).await,
        Err(ApiKeyError::BadSecret)
    );

    // rotate: both keys work until the old one's capped expiry
    let rotated = store
        .rotate(&issued.record.id, Some(now() + 100))
        .await
        .unwrap();
    let new = rotated.key.expose().clone();
    assert_eq!(
        other
            .verify(&new, now())
            .await
            .unwrap()
            .rotated_from
            .as_deref(),
        Some(issued.record.id.as_str())
    );
    assert!(other.verify(&key, now()).await.is_ok());
    assert_eq!(
        other.verify(&key, now() + 100).await,
        Err(ApiKeyError::Expired)
    );
    // revoke through one store: the other refuses it at its next reload
    assert!(store.revoke(&issued.record.id).await.unwrap());
    assert!(!store.revoke(&issued.record.id).await.unwrap());
    assert_eq!(other.verify(&key, now()).await, Err(ApiKeyError::Revoked));
    assert_eq!(store.revoke("nosuchkey000").await, Ok(false));
    let list = other.list(Some("partner-a")).await.unwrap();
    assert_eq!(list.len(), 2);
    for r in &list {
        assert_eq!(r.revoked_at.is_some(), r.id == issued.record.id, "{r:?}");
    }
}

#[tokio::test]
async fn lost_races_are_retried_and_an_unreadable_document_fails_closed() {
    let mem = Arc::new(Mem::default());
    let store = ApiKeyStore::open_document(mem.clone(), Secret::new(vec![3; 32]), opts())
        .await
        .unwrap();
    // two lost check-and-set writes, then it lands
    *mem.lose.lock().unwrap() = 2;
    let issued = store.create(new_key("partner-b")).await.unwrap();
    assert!(store.verify(issued.key.expose(), now()).await.is_ok());
    // a writer that always wins: the call fails, nothing is issued
    *mem.lose.lock().unwrap() = 100;
    assert!(matches!(
        store.create(new_key("partner-c")).await,
        Err(ApiKeyError::Storage(_))
    ));
    *mem.lose.lock().unwrap() = 0;
    assert_eq!(store.list(None).await.unwrap().len(), 1);

    // the document's store is down: verification stops once the snapshot is
    // older than max_staleness
    let strict = ApiKeyStore::open_document(
        mem.clone(),
        Secret::new(vec![3; 32]),
        StoreOptions {
            refresh_interval: Duration::ZERO,
            max_staleness: Duration::ZERO,
        },
    )
    .await
    .unwrap();
    *mem.down.lock().unwrap() = true;
    assert!(matches!(
        strict.verify(issued.key.expose(), now()).await,
        Err(ApiKeyError::Storage(_))
    ));
    *mem.down.lock().unwrap() = false;
    // a document that does not parse: refused at open, never an empty table
    mem.doc.lock().unwrap().0 = Some(b"{\"keys\": 1}".to_vec());
    assert!(matches!(
        ApiKeyStore::open_document(mem.clone(), Secret::new(vec![3; 32]), opts()).await,
        Err(ApiKeyError::Storage(_))
    ));
    // a row of the wrong shape: refused, and the error does not quote it
    mem.doc.lock().unwrap().0 =
        Some(br#"{"keys": [{"id": "a1B2c3D4e5F6", "scopes": "hunter2-value"}]}"#.to_vec());
    match ApiKeyStore::open_document(mem.clone(), Secret::new(vec![3; 32]), opts()).await {
        Err(ApiKeyError::Storage(m)) => {
            assert!(
                m.starts_with("the key document does not parse (line 1"),
                "{m}"
            );
            assert!(!m.contains("hunter2"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    // a short pepper: refused before anything is read
    assert_eq!(
        ApiKeyStore::open_document(mem, Secret::new(vec![3; 31]), opts())
            .await
            .unwrap_err(),
        ApiKeyError::WeakPepper
    );
}

#[tokio::test]
async fn a_key_id_twice_is_refused_and_blocks_changes() {
    let mem = Arc::new(Mem::default());
    let store = ApiKeyStore::open_document(mem.clone(), Secret::new(vec![3; 32]), opts())
        .await
        .unwrap();
    let issued = store.create(new_key("partner-d")).await.unwrap();
    let other = store.create(new_key("partner-e")).await.unwrap();
    // someone with write access to the secret copies a row
    let mut doc: serde_json::Value =
        serde_json::from_slice(mem.doc.lock().unwrap().0.as_ref().unwrap()).unwrap();
    let row = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == issued.record.id.as_str())
        .unwrap()
        .clone();
    doc["keys"].as_array_mut().unwrap().push(row);
    {
        let mut d = mem.doc.lock().unwrap();
        d.0 = Some(serde_json::to_vec(&doc).unwrap());
        d.1 += 1;
    }
    // deny: the twinned key no longer verifies, and no change is made
    assert_eq!(
        store.verify(issued.key.expose(), now()).await,
        Err(ApiKeyError::UnknownKey)
    );
    let e = store.revoke(&issued.record.id).await.unwrap_err();
    assert!(
        matches!(&e, ApiKeyError::Storage(m) if m.contains("more than once")),
        "{e:?}"
    );
    // allow: the other key is unaffected
    assert!(store.verify(other.key.expose(), now()).await.is_ok());
    // a row no key could have (a consumer with a space) is left out
    doc["keys"].as_array_mut().unwrap().pop();
    for r in doc["keys"].as_array_mut().unwrap() {
        if r["id"] == other.record.id.as_str() {
            r["consumer"] = "partner e".into();
        }
    }
    {
        let mut d = mem.doc.lock().unwrap();
        d.0 = Some(serde_json::to_vec(&doc).unwrap());
        d.1 += 1;
    }
    assert_eq!(
        store.verify(other.key.expose(), now()).await,
        Err(ApiKeyError::UnknownKey)
    );
    assert!(store.verify(issued.key.expose(), now()).await.is_ok());
    // and the listing shows the keys that work
    let ids: Vec<String> = store
        .list(None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, vec![issued.record.id.clone()]);
}

#[tokio::test]
async fn requests_behind_a_failed_reload_share_its_failure() {
    use std::sync::atomic::Ordering::SeqCst;
    let mem = Arc::new(Mem::default());
    let store = ApiKeyStore::open_document(
        mem.clone(),
        Secret::new(vec![3; 32]),
        StoreOptions {
            refresh_interval: Duration::ZERO,
            max_staleness: Duration::ZERO,
        },
    )
    .await
    .unwrap();
    let issued = store.create(new_key("partner-f")).await.unwrap();
    *mem.slow.lock().unwrap() = true;
    let reads = mem.reads.load(SeqCst);
    let key = issued.key.expose().clone();
    let (a, b, c) = tokio::join!(
        store.verify(&key, now()),
        store.verify(&key, now()),
        store.verify(&key, now())
    );
    for r in [a, b, c] {
        assert!(matches!(r, Err(ApiKeyError::Storage(_))), "{r:?}");
    }
    // one read for the three, not one each
    assert_eq!(mem.reads.load(SeqCst), reads + 1);
    // the store back: after the pause, reads again
    *mem.slow.lock().unwrap() = false;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(store.verify(&key, now()).await.is_ok());
}
