//! Allow and deny tests for the API key store, against real SQLite files.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_apikey::{ApiKeyError, ApiKeyRecord, ApiKeyStore, IssuedKey, NewKey, StoreOptions};
use palisade_core::Secret;
use palisade_crypto::mac::MacKey;
use tempfile::TempDir;

fn pepper(byte: u8) -> Secret<Vec<u8>> {
    Secret::new(vec![byte; 32])
}

fn db(dir: &TempDir) -> PathBuf {
    dir.path().join("gateway.db")
}

async fn open(dir: &TempDir) -> ApiKeyStore {
    ApiKeyStore::open(&db(dir), pepper(1)).await.unwrap()
}

fn now() -> i64 {
    palisade_core::now_nanos() / 1_000_000_000
}

fn new_key(consumer: &str, scopes: &[&str]) -> NewKey {
    NewKey {
        consumer: consumer.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        expires_at: None,
        description: "test key".into(),
    }
}

/// (id, secret) of an issued key.
fn split(issued: &IssuedKey) -> (String, String) {
    let key = issued.key.expose();
    let rest = key.strip_prefix("pal_").unwrap();
    let (id, secret) = rest.split_once('_').unwrap();
    (id.to_string(), secret.to_string())
}

/// Same id, different (well-formed) secret.
fn wrong_secret(issued: &IssuedKey) -> String {
    let (id, secret) = split(issued);
    let flipped: String = secret
        .chars()
        .map(|c| if c == 'a' { 'b' } else { 'a' })
        .collect();
    assert_ne!(flipped, secret);
    format!("pal_{id}_{flipped}")
}

/// Every byte SQLite wrote for the database: main file, WAL and shared memory.
fn file_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        all.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    all
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn create_then_verify_returns_the_record_with_scopes() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let issued = store
        .create(new_key("billing-svc", &["orders:write", "orders:read"]))
        .await
        .unwrap();
    let key = issued.key.expose();
    assert_eq!(key.len(), 49);
    assert!(key.starts_with("pal_"));
    assert_eq!(issued.record.consumer, "billing-svc");
    assert_eq!(issued.record.scopes, ["orders:read", "orders:write"]);
    assert_eq!(issued.record.revoked_at, None);
    assert_eq!(issued.record.rotated_from, None);

    let record = store.verify(key, now()).await.unwrap();
    assert_eq!(record, issued.record);
    assert!(record.has_scope("orders:write"));

    // A second store on the same file (a restarted gateway) verifies it too.
    drop(store);
    let reopened = open(&dir).await;
    assert_eq!(reopened.verify(key, now()).await.unwrap(), issued.record);
}

#[tokio::test]
async fn neither_the_key_nor_the_secret_is_stored() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let mut issued = Vec::new();
    for i in 0..5 {
        issued.push(
            store
                .create(new_key(&format!("c{i}"), &["a"]))
                .await
                .unwrap(),
        );
    }
    let bytes = file_bytes(dir.path());
    let mac = MacKey::from_bytes(pepper(1).expose());
    for k in &issued {
        let (id, secret) = split(k);
        assert!(
            !contains(&bytes, k.key.expose().as_bytes()),
            "full key stored"
        );
        assert!(!contains(&bytes, secret.as_bytes()), "secret stored");
        // The search does see the rows: the id and the keyed hash are there.
        assert!(contains(&bytes, id.as_bytes()));
        let hash = mac.sign(format!("{id}:{secret}").as_bytes());
        assert!(contains(&bytes, &hash), "expected HMAC(pepper, id:secret)");
    }
}

#[tokio::test]
async fn wrong_secret_is_bad_secret() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let issued = store.create(new_key("c", &[])).await.unwrap();
    assert_eq!(
        store.verify(&wrong_secret(&issued), now()).await,
        Err(ApiKeyError::BadSecret)
    );
}

#[tokio::test]
async fn unknown_id_is_unknown_key() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let issued = store.create(new_key("c", &[])).await.unwrap();
    let (_, secret) = split(&issued);
    // A real secret under an id that does not exist.
    assert_eq!(
        store
            .verify(&format!("pal_AAAAAAAAAAAA_{secret}"), now())
            .await,
        Err(ApiKeyError::UnknownKey)
    );
}

#[tokio::test]
async fn malformed_keys_are_refused_before_lookup() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let issued = store.create(new_key("c", &[])).await.unwrap();
    let key = issued.key.expose().clone();
    let (id, secret) = split(&issued);
    let body = &key[4..];
    let cases = vec![
        String::new(),
        "pal_".into(),
        "pal__".into(),
        format!("PAL_{body}"),
        format!("pak_{body}"),
        format!("pal-{body}"),
        body.to_string(),
        format!("xpal_{body}"),
        // Right total length, wrong split.
        format!("pal_{}_{}x", &id[..11], secret),
        format!("pal_{id}x_{}", &secret[..31]),
        // Short and long secrets.
        format!("pal_{id}_{}", &secret[..31]),
        format!("pal_{id}_{secret}a"),
        // No separator.
        format!("pal_{id}{secret}"),
        // Extra `_` in the secret, same length.
        format!("pal_{id}_{}_{}", &secret[..10], &secret[11..]),
        format!("pal_{id}__{}", &secret[1..]),
        // Non-base62 characters, same length (é is two bytes).
        format!("pal_{id}_{}-", &secret[..31]),
        format!("pal_{id}_{}+", &secret[..31]),
        format!("pal_{id}_{}=", &secret[..31]),
        format!("pal_{id}_{}\0", &secret[..31]),
        format!("pal_{id}_{}é", &secret[..30]),
        format!("pal_{}é_{secret}", &id[..10]),
        // Whitespace and transport framing are the caller's job.
        format!(" {key}"),
        format!("{key} "),
        format!("{key}\n"),
        format!("Bearer {key}"),
        // Oversized.
        format!("{key}{}", "a".repeat(300)),
        "a".repeat(4096),
    ];
    for case in &cases {
        assert_eq!(
            store.verify(case, now()).await,
            Err(ApiKeyError::Malformed),
            "case {case:?}"
        );
    }
    // The real key still works: the id prefix of a malformed key was not
    // looked up and nothing was counted against it.
    assert!(store.verify(&key, now()).await.is_ok());
    assert_eq!(store.revoke("short").await, Err(ApiKeyError::Malformed));
    assert_eq!(
        store.rotate(&format!("{id}_"), None).await.err(),
        Some(ApiKeyError::Malformed)
    );
}

#[tokio::test]
async fn revocation_takes_effect_immediately() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    // Default options: no reload is due, so this tests the snapshot update.
    let other = store.clone();
    let issued = store.create(new_key("c", &[])).await.unwrap();
    let key = issued.key.expose();
    assert!(other.verify(key, now()).await.is_ok());

    assert_eq!(store.revoke(&issued.record.id).await, Ok(true));
    assert_eq!(store.verify(key, now()).await, Err(ApiKeyError::Revoked));
    assert_eq!(other.verify(key, now()).await, Err(ApiKeyError::Revoked));
    // Revoked is only reported to a holder of the secret.
    assert_eq!(
        store.verify(&wrong_secret(&issued), now()).await,
        Err(ApiKeyError::BadSecret)
    );
    // Idempotent; unknown ids report false.
    assert_eq!(store.revoke(&issued.record.id).await, Ok(false));
    assert_eq!(store.revoke("AAAAAAAAAAAA").await, Ok(false));

    let listed = store.list(Some("c")).await.unwrap();
    assert!(listed[0].revoked_at.is_some());
    // And it is durable.
    drop((store, other));
    let reopened = open(&dir).await;
    assert_eq!(reopened.verify(key, now()).await, Err(ApiKeyError::Revoked));
}

#[tokio::test]
async fn expired_key_is_refused_at_its_expiry() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let t0 = now();
    let issued = store
        .create(NewKey {
            expires_at: Some(t0 + 100),
            ..new_key("c", &["read"])
        })
        .await
        .unwrap();
    let key = issued.key.expose();
    assert!(store.verify(key, t0 + 99).await.is_ok());
    assert_eq!(store.verify(key, t0 + 100).await, Err(ApiKeyError::Expired));
    assert_eq!(
        store.verify(key, t0 + 10_000).await,
        Err(ApiKeyError::Expired)
    );
    assert_eq!(
        store
            .create(NewKey {
                expires_at: Some(t0 - 1),
                ..new_key("c", &[])
            })
            .await
            .err(),
        Some(ApiKeyError::InvalidInput(
            "expires_at must be in the future".into()
        ))
    );
}

#[tokio::test]
async fn rotate_keeps_both_keys_until_the_old_expiry() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let t0 = now();
    let old = store
        .create(new_key("c", &["read", "write"]))
        .await
        .unwrap();
    let new = store.rotate(&old.record.id, Some(t0 + 60)).await.unwrap();
    assert_ne!(new.record.id, old.record.id);
    assert_ne!(new.key.expose(), old.key.expose());
    assert_eq!(new.record.consumer, "c");
    assert_eq!(new.record.scopes, ["read", "write"]);
    assert_eq!(new.record.expires_at, None);
    assert_eq!(
        new.record.rotated_from.as_deref(),
        Some(old.record.id.as_str())
    );

    // Overlap: both work.
    assert!(store.verify(old.key.expose(), t0 + 59).await.is_ok());
    assert!(store.verify(new.key.expose(), t0 + 59).await.is_ok());
    // After the cut-over only the new one.
    assert_eq!(
        store.verify(old.key.expose(), t0 + 60).await,
        Err(ApiKeyError::Expired)
    );
    assert!(store.verify(new.key.expose(), t0 + 60).await.is_ok());

    // Durable: a restarted gateway sees the same.
    drop(store);
    let store = open(&dir).await;
    assert_eq!(
        store.verify(old.key.expose(), t0 + 60).await,
        Err(ApiKeyError::Expired)
    );
    assert!(store.verify(new.key.expose(), t0 + 60).await.is_ok());
}

#[tokio::test]
async fn rotate_without_deadline_keeps_old_until_revoked() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let t0 = now();
    let old = store
        .create(NewKey {
            expires_at: Some(t0 + 1000),
            ..new_key("c", &["read"])
        })
        .await
        .unwrap();
    let new = store.rotate(&old.record.id, None).await.unwrap();
    // The new key inherits the old key's lifetime, counted from now.
    let exp = new.record.expires_at.unwrap();
    assert!((t0 + 1000..=t0 + 1010).contains(&exp), "{exp}");
    // The old key keeps its own expiry: rotation never extends it.
    let later = store
        .rotate(&new.record.id, Some(t0 + 1_000_000))
        .await
        .unwrap();
    assert!(store.verify(old.key.expose(), t0 + 999).await.is_ok());
    assert!(store.verify(new.key.expose(), t0 + 999).await.is_ok());
    assert!(store.verify(later.key.expose(), t0 + 999).await.is_ok());
    assert_eq!(
        store.verify(new.key.expose(), exp).await,
        Err(ApiKeyError::Expired)
    );

    assert_eq!(store.revoke(&old.record.id).await, Ok(true));
    assert_eq!(
        store.verify(old.key.expose(), t0).await,
        Err(ApiKeyError::Revoked)
    );
    assert!(store.verify(new.key.expose(), t0).await.is_ok());

    // A revoked or unknown key cannot be rotated.
    assert_eq!(
        store.rotate(&old.record.id, None).await.err(),
        Some(ApiKeyError::Revoked)
    );
    assert_eq!(
        store.rotate("AAAAAAAAAAAA", None).await.err(),
        Some(ApiKeyError::UnknownKey)
    );
}

#[tokio::test]
async fn several_active_keys_per_consumer() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let mut alice = Vec::new();
    for _ in 0..3 {
        alice.push(store.create(new_key("alice", &["read"])).await.unwrap());
    }
    let bob = store.create(new_key("bob", &["admin"])).await.unwrap();
    for k in &alice {
        assert_eq!(
            store.verify(k.key.expose(), now()).await.unwrap().consumer,
            "alice"
        );
    }
    assert_eq!(
        store
            .verify(bob.key.expose(), now())
            .await
            .unwrap()
            .consumer,
        "bob"
    );

    let listed = store.list(Some("alice")).await.unwrap();
    let mut ids: Vec<_> = listed.iter().map(|r| r.id.clone()).collect();
    let mut want: Vec<_> = alice.iter().map(|k| k.record.id.clone()).collect();
    ids.sort();
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(store.list(None).await.unwrap().len(), 4);
    assert_eq!(
        store.list(Some("carol")).await.unwrap(),
        Vec::<ApiKeyRecord>::new()
    );
    assert_eq!(
        store.list(Some("not valid")).await.err(),
        Some(ApiKeyError::InvalidInput(
            "consumer must be 1-128 characters of [A-Za-z0-9._:-]".into()
        ))
    );

    // Revoking one leaves the others working.
    store.revoke(&alice[0].record.id).await.unwrap();
    assert_eq!(
        store.verify(alice[0].key.expose(), now()).await,
        Err(ApiKeyError::Revoked)
    );
    assert!(store.verify(alice[1].key.expose(), now()).await.is_ok());
}

#[tokio::test]
async fn list_never_shows_secrets_or_hashes() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let issued = store.create(new_key("c", &["read"])).await.unwrap();
    let (id, secret) = split(&issued);
    let hash = MacKey::from_bytes(pepper(1).expose()).sign_hex(format!("{id}:{secret}").as_bytes());
    let listed = store.list(None).await.unwrap();
    assert_eq!(listed, vec![issued.record.clone()]);
    let shown = format!(
        "{listed:?} {} {store:?}",
        serde_json::to_string(&listed).unwrap()
    );
    assert!(shown.contains(&id));
    assert!(!shown.contains(&secret));
    assert!(!shown.contains(&hash));
}

#[tokio::test]
async fn hash_row_copied_to_another_id_fails() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let mine = store.create(new_key("low", &["read"])).await.unwrap();
    let target = store.create(new_key("admin", &["admin"])).await.unwrap();
    let (_, my_secret) = split(&mine);

    // Someone with write access to the file copies their hash onto admin's id.
    let pool = sqlx::SqlitePool::connect_with(
        sqlx::sqlite::SqliteConnectOptions::new().filename(db(&dir)),
    )
    .await
    .unwrap();
    let res = sqlx::query(
        "UPDATE palisade_apikeys SET hash = (SELECT hash FROM palisade_apikeys WHERE id = ?1) WHERE id = ?2",
    )
    .bind(&mine.record.id)
    .bind(&target.record.id)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(res.rows_affected(), 1);
    pool.close().await;
    store.refresh().await.unwrap();

    let forged = format!("pal_{}_{my_secret}", target.record.id);
    assert_eq!(
        store.verify(&forged, now()).await,
        Err(ApiKeyError::BadSecret)
    );
    assert_eq!(
        store.verify(target.key.expose(), now()).await,
        Err(ApiKeyError::BadSecret)
    );
    assert!(store.verify(mine.key.expose(), now()).await.is_ok());
}

#[tokio::test]
async fn short_pepper_is_weak_and_touches_nothing() {
    let dir = TempDir::new().unwrap();
    let path = db(&dir);
    for len in [0, 16, 31] {
        assert_eq!(
            ApiKeyStore::open(&path, Secret::new(vec![9u8; len]))
                .await
                .err(),
            Some(ApiKeyError::WeakPepper)
        );
    }
    assert!(!path.exists());
    assert!(
        ApiKeyStore::open(&path, Secret::new(vec![9u8; 32]))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_different_pepper_fails_existing_keys() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let issued = store.create(new_key("c", &[])).await.unwrap();
    drop(store);
    let other = ApiKeyStore::open(&db(&dir), pepper(2)).await.unwrap();
    assert_eq!(
        other.verify(issued.key.expose(), now()).await,
        Err(ApiKeyError::BadSecret)
    );
    drop(other);
    let same = open(&dir).await;
    assert!(same.verify(issued.key.expose(), now()).await.is_ok());
}

#[tokio::test]
async fn debug_and_errors_never_show_the_secret() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let issued = store.create(new_key("c", &["read"])).await.unwrap();
    let key = issued.key.expose().clone();
    let (id, secret) = split(&issued);
    let debug = format!("{issued:?} {:?} {store:?}", issued.record);
    assert!(debug.contains("REDACTED"));
    assert!(debug.contains(&id));
    assert!(!debug.contains(&secret));
    assert!(!debug.contains(&key));

    let failures = [
        store.verify(&wrong_secret(&issued), now()).await,
        store.verify(&format!("{key} "), now()).await,
        store
            .verify(&format!("pal_AAAAAAAAAAAA_{secret}"), now())
            .await,
    ];
    for f in failures {
        let e = f.unwrap_err();
        let shown = format!("{e} {e:?} {}", e.reason());
        assert!(!shown.contains(&secret), "{shown}");
    }
    // A key pasted into a clear-text field is refused, and not echoed.
    let pasted = [
        new_key(&key, &[]),
        new_key("c", &[&key]),
        NewKey {
            description: format!("for ci: {key}"),
            ..new_key("c", &[])
        },
    ];
    let want = ["consumer", "scope", "description"];
    for (k, what) in pasted.into_iter().zip(want) {
        let e = store.create(k).await.unwrap_err();
        assert_eq!(
            e,
            ApiKeyError::InvalidInput(format!("{what} must not contain an API key"))
        );
        assert!(!format!("{e} {e:?}").contains(&secret));
    }
    assert_eq!(store.list(None).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_parallel_verifies() {
    let dir = TempDir::new().unwrap();
    // Reload on every verify, so the verifies also race the reloads.
    let store = ApiKeyStore::open_with(
        &db(&dir),
        pepper(1),
        StoreOptions {
            refresh_interval: Duration::ZERO,
            max_staleness: Duration::from_secs(60),
        },
    )
    .await
    .unwrap();
    let mut keys = Vec::new();
    for i in 0..5 {
        keys.push(
            store
                .create(new_key(&format!("c{i}"), &["read"]))
                .await
                .unwrap(),
        );
    }
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = store.clone();
        let key = keys[i % keys.len()].key.expose().clone();
        let consumer = format!("c{}", i % keys.len());
        tasks.push(tokio::spawn(async move {
            let record = store.verify(&key, now()).await.unwrap();
            assert_eq!(record.consumer, consumer);
        }));
    }
    // A revoke racing the verifies.
    let revoked = store.create(new_key("gone", &[])).await.unwrap();
    store.revoke(&revoked.record.id).await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        store.verify(revoked.key.expose(), now()).await,
        Err(ApiKeyError::Revoked)
    );
}

#[tokio::test]
async fn other_processes_changes_arrive_by_reload() {
    let dir = TempDir::new().unwrap();
    let cli = open(&dir).await;
    let hour = Duration::from_secs(3600);
    let lazy = ApiKeyStore::open_with(
        &db(&dir),
        pepper(1),
        StoreOptions {
            refresh_interval: hour,
            max_staleness: hour,
        },
    )
    .await
    .unwrap();
    let eager = ApiKeyStore::open_with(
        &db(&dir),
        pepper(1),
        StoreOptions {
            refresh_interval: Duration::ZERO,
            max_staleness: hour,
        },
    )
    .await
    .unwrap();

    let issued = cli.create(new_key("c", &[])).await.unwrap();
    let key = issued.key.expose();
    // The lazy snapshot predates the key; the eager one reloads.
    assert_eq!(lazy.verify(key, now()).await, Err(ApiKeyError::UnknownKey));
    assert!(eager.verify(key, now()).await.is_ok());
    lazy.refresh().await.unwrap();
    assert!(lazy.verify(key, now()).await.is_ok());

    cli.revoke(&issued.record.id).await.unwrap();
    assert_eq!(eager.verify(key, now()).await, Err(ApiKeyError::Revoked));
    // Within its documented staleness bound the lazy store still accepts.
    assert!(lazy.verify(key, now()).await.is_ok());
    lazy.refresh().await.unwrap();
    assert_eq!(lazy.verify(key, now()).await, Err(ApiKeyError::Revoked));

    assert_eq!(
        ApiKeyStore::open_with(
            &db(&dir),
            pepper(1),
            StoreOptions {
                refresh_interval: hour,
                max_staleness: Duration::from_secs(1),
            },
        )
        .await
        .err(),
        Some(ApiKeyError::InvalidInput(
            "max_staleness must be at least refresh_interval".into()
        ))
    );
}
