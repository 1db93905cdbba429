//! Barrier security properties: tampering, moving, wrong term, sealed reads,
//! rotation and Shamir thresholds are each exercised for allow and deny.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

use std::sync::Arc;

use palisade_barrier::{Barrier, BarrierError, BarrierOp, View};
use palisade_storage::Backend;
use palisade_storage::memory::MemoryBackend;
use zeroize::Zeroizing;

async fn unsealed() -> (Arc<MemoryBackend>, Arc<Barrier>) {
    let mem = Arc::new(MemoryBackend::new());
    let b = Barrier::new(mem.clone());
    let shares = b.initialize(1, 1).await.unwrap();
    b.unseal_with_key(&shares[0]).await.unwrap();
    (mem, b)
}

#[tokio::test]
async fn round_trip_and_nothing_in_clear() {
    let (mem, b) = unsealed().await;
    b.put("logical/x/secret", b"TOP-SECRET-VALUE")
        .await
        .unwrap();
    assert_eq!(
        &b.get("logical/x/secret").await.unwrap().unwrap()[..],
        b"TOP-SECRET-VALUE"
    );
    for (k, v) in mem.raw().unwrap() {
        assert!(
            !v.windows(16).any(|w| w == b"TOP-SECRET-VALUE"),
            "plaintext at {k}"
        );
    }
}

#[tokio::test]
async fn flipped_byte_is_rejected() {
    let (mem, b) = unsealed().await;
    b.put("logical/x/a", b"value").await.unwrap();
    let mut ct = mem.get("logical/x/a").await.unwrap().unwrap();
    let last = ct.len() - 1;
    ct[last] ^= 1;
    mem.put("logical/x/a", &ct).await.unwrap();
    let err = b.get("logical/x/a").await.unwrap_err();
    assert!(
        matches!(err, BarrierError::Integrity { ref path } if path == "logical/x/a"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "failed to decrypt entry at \"logical/x/a\": integrity check failed"
    );
}

#[tokio::test]
async fn moved_ciphertext_is_rejected() {
    let (mem, b) = unsealed().await;
    b.put("logical/x/a", b"value-a").await.unwrap();
    let ct = mem.get("logical/x/a").await.unwrap().unwrap();
    mem.put("logical/x/b", &ct).await.unwrap();
    assert!(matches!(
        b.get("logical/x/b").await,
        Err(BarrierError::Integrity { .. })
    ));
    // the original still reads
    assert_eq!(
        &b.get("logical/x/a").await.unwrap().unwrap()[..],
        b"value-a"
    );
}

#[tokio::test]
async fn wrong_or_unknown_term_is_rejected() {
    let (mem, b) = unsealed().await;
    b.put("logical/x/a", b"v").await.unwrap();
    let mut ct = mem.get("logical/x/a").await.unwrap().unwrap();
    ct[..4].copy_from_slice(&7u32.to_be_bytes());
    mem.put("logical/x/a", &ct).await.unwrap();
    assert!(matches!(
        b.get("logical/x/a").await,
        Err(BarrierError::UnknownTerm { term: 7, .. })
    ));
    // a real but wrong term: relabel a term-1 entry as term 2 after rotation
    b.put("logical/x/c", b"v").await.unwrap();
    b.rotate().await.unwrap();
    let mut ct = mem.get("logical/x/c").await.unwrap().unwrap();
    ct[..4].copy_from_slice(&2u32.to_be_bytes());
    mem.put("logical/x/c", &ct).await.unwrap();
    assert!(matches!(
        b.get("logical/x/c").await,
        Err(BarrierError::Integrity { .. })
    ));
}

#[tokio::test]
async fn sealed_refuses_everything_and_forgets_keys() {
    let (_mem, b) = unsealed().await;
    b.put("logical/x/a", b"v").await.unwrap();
    b.seal().await.unwrap();
    assert!(b.sealed());
    assert!(matches!(
        b.get("logical/x/a").await,
        Err(BarrierError::Sealed)
    ));
    assert!(matches!(
        b.put("logical/x/a", b"w").await,
        Err(BarrierError::Sealed)
    ));
    assert!(matches!(
        b.list("logical/").await,
        Err(BarrierError::Sealed)
    ));
    assert!(matches!(b.key_status(), Err(BarrierError::Sealed)));
}

#[tokio::test]
async fn rotation_keeps_old_data_readable() {
    let (mem, b) = unsealed().await;
    b.put("logical/x/old", b"old").await.unwrap();
    let st = b.rotate().await.unwrap();
    assert_eq!(st.term, 2);
    assert_eq!(b.key_status().unwrap().term, 2);
    b.put("logical/x/new", b"new").await.unwrap();
    assert_eq!(
        &mem.get("logical/x/new").await.unwrap().unwrap()[..4],
        &2u32.to_be_bytes()
    );
    assert_eq!(
        &mem.get("logical/x/old").await.unwrap().unwrap()[..4],
        &1u32.to_be_bytes()
    );
    assert_eq!(&b.get("logical/x/old").await.unwrap().unwrap()[..], b"old");
    // survives seal/unseal: the rotated keyring was persisted
    let shares_ok = b.get("logical/x/new").await.unwrap().unwrap();
    assert_eq!(&shares_ok[..], b"new");
}

#[tokio::test]
async fn shamir_threshold_unseals_and_fewer_do_not() {
    let mem = Arc::new(MemoryBackend::new());
    let b = Barrier::new(mem.clone());
    let shares = b.initialize(5, 3).await.unwrap();
    assert_eq!(shares.len(), 5);
    assert!(b.sealed());
    for combo in [[0usize, 1, 2], [4, 2, 0], [1, 3, 4]] {
        b.seal().await.unwrap();
        let p = b.submit_share(shares[combo[0]].clone()).await.unwrap();
        assert_eq!((p.sealed, p.progress), (true, 1));
        // the same share twice does not count twice
        let p = b.submit_share(shares[combo[0]].clone()).await.unwrap();
        assert_eq!(p.progress, 1);
        let p = b.submit_share(shares[combo[1]].clone()).await.unwrap();
        assert_eq!((p.sealed, p.progress), (true, 2));
        assert!(b.sealed(), "two of three must not unseal");
        let p = b.submit_share(shares[combo[2]].clone()).await.unwrap();
        assert!(!p.sealed);
        assert!(!b.sealed());
    }
    // a wrong share in the set fails and resets progress
    b.seal().await.unwrap();
    b.submit_share(shares[0].clone()).await.unwrap();
    b.submit_share(shares[1].clone()).await.unwrap();
    let mut bad = shares[2].to_vec();
    let n = bad.len() - 1;
    bad[n] ^= 0xff;
    let err = b.submit_share(Zeroizing::new(bad)).await.unwrap_err();
    assert!(matches!(err, BarrierError::InvalidUnsealKey));
    assert_eq!(b.unseal_progress().progress, 0);
    assert!(b.sealed());
    // reset clears progress
    b.submit_share(shares[0].clone()).await.unwrap();
    b.reset_unseal();
    assert_eq!(b.unseal_progress().progress, 0);
}

#[tokio::test]
async fn init_parameters_and_reinit() {
    let b = Barrier::new(Arc::new(MemoryBackend::new()));
    let err = b.initialize(3, 5).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid seal configuration: threshold cannot be larger than secret shares"
    );
    assert!(!b.initialized().await.unwrap());
    b.initialize(1, 1).await.unwrap();
    assert!(matches!(
        b.initialize(1, 1).await,
        Err(BarrierError::AlreadyInitialized)
    ));
    let err = b.unseal_with_key(&[0u8; 32]).await.unwrap_err();
    assert!(matches!(err, BarrierError::InvalidUnsealKey));
}

#[tokio::test]
async fn view_is_a_prefix_jail_and_transactions_are_atomic() {
    let (mem, b) = unsealed().await;
    let v = View::new(b.clone(), "logical/abc/");
    v.put("k", b"1").await.unwrap();
    assert!(mem.raw().unwrap().contains_key("logical/abc/k"));
    for bad in ["../core/keyring", "a/../../x", "", "/abs", "a//b"] {
        assert!(
            matches!(v.put(bad, b"x").await, Err(BarrierError::InvalidPath(_))),
            "{bad}"
        );
    }
    // the barrier's own metadata is never reachable through entries
    assert!(matches!(
        b.get("core/keyring").await,
        Err(BarrierError::InvalidPath(_))
    ));
    let r = v
        .transaction(vec![
            BarrierOp::Put {
                path: "t1".into(),
                value: b"1".to_vec(),
            },
            BarrierOp::Put {
                path: "../escape".into(),
                value: b"2".to_vec(),
            },
        ])
        .await;
    assert!(matches!(r, Err(BarrierError::InvalidPath(_))));
    assert!(v.get("t1").await.unwrap().is_none());
    v.put("d/e", b"2").await.unwrap();
    assert_eq!(v.list("").await.unwrap(), vec!["d/", "k"]);
    v.clear().await.unwrap();
    assert!(v.list("").await.unwrap().is_empty());
}

#[tokio::test]
async fn sqlite_reopen_unseals_with_same_shares() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db");
    let shares = {
        let s = Arc::new(
            palisade_storage::sqlite::SqliteBackend::open(&path)
                .await
                .unwrap(),
        );
        let b = Barrier::new(s);
        let shares = b.initialize(3, 2).await.unwrap();
        b.submit_share(shares[0].clone()).await.unwrap();
        b.submit_share(shares[2].clone()).await.unwrap();
        b.put("logical/m/k", b"persisted").await.unwrap();
        b.rotate().await.unwrap();
        b.put("logical/m/k2", b"after-rotate").await.unwrap();
        shares
    };
    let s = Arc::new(
        palisade_storage::sqlite::SqliteBackend::open(&path)
            .await
            .unwrap(),
    );
    let b = Barrier::new(s);
    assert!(b.initialized().await.unwrap());
    assert!(b.sealed());
    b.submit_share(shares[1].clone()).await.unwrap();
    b.submit_share(shares[2].clone()).await.unwrap();
    assert_eq!(
        &b.get("logical/m/k").await.unwrap().unwrap()[..],
        b"persisted"
    );
    assert_eq!(
        &b.get("logical/m/k2").await.unwrap().unwrap()[..],
        b"after-rotate"
    );
    assert_eq!(b.key_status().unwrap().term, 2);
}

/// A copy of `mem` as it is now: the storage a crash at this instant leaves.
async fn snapshot(mem: &MemoryBackend) -> Arc<MemoryBackend> {
    let copy = Arc::new(MemoryBackend::new());
    for (k, v) in mem.raw().unwrap() {
        copy.put(&k, &v).await.unwrap();
    }
    copy
}

/// Unseal a fresh barrier over `mem` with `shares`, as after a restart.
async fn unseals_with(mem: Arc<MemoryBackend>, shares: &[Zeroizing<Vec<u8>>]) -> bool {
    let b = Barrier::new(mem);
    for s in shares {
        match b.submit_share(s.clone()).await {
            Ok(p) if !p.sealed => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

#[tokio::test]
async fn rekey_replaces_the_unseal_key_atomically() {
    let mem = Arc::new(MemoryBackend::new());
    let b = Barrier::new(mem.clone());
    let old = b.initialize(3, 2).await.unwrap();
    b.submit_share(old[0].clone()).await.unwrap();
    b.submit_share(old[2].clone()).await.unwrap();
    assert!(!b.sealed());
    b.put("logical/x/kept", b"kept").await.unwrap();

    // the current shares authenticate; a wrong set does not
    b.check_shares(&old[..2]).await.unwrap();
    let mut bad = old[1].to_vec();
    bad[5] ^= 1;
    assert!(matches!(
        b.check_shares(&[old[0].clone(), Zeroizing::new(bad)]).await,
        Err(BarrierError::InvalidUnsealKey)
    ));

    let cfg = palisade_barrier::SealConfig {
        secret_shares: 5,
        secret_threshold: 3,
    };
    let (next, new) = palisade_barrier::NewUnsealKey::generate(cfg).unwrap();
    assert_eq!(new.len(), 5);
    assert!(next.is_split_of(&new[2..]));
    assert!(!next.is_split_of(&old[..2]));
    // a crash before the commit: the old shares unseal, the new ones do not
    let before = snapshot(&mem).await;
    b.rekey(&next).await.unwrap();
    assert!(unseals_with(before.clone(), &old[..2]).await);
    assert!(!unseals_with(before, &new[..3]).await);
    // after it: the new shares (any three) unseal, the old ones do not
    let after = snapshot(&mem).await;
    assert!(!unseals_with(after.clone(), &old).await);
    assert!(unseals_with(after.clone(), &new[1..4]).await);
    assert_eq!(b.seal_config().await.unwrap(), Some(cfg));
    // everything stored before stays readable, under the new root key too
    assert_eq!(
        &b.get("logical/x/kept").await.unwrap().unwrap()[..],
        b"kept"
    );
    b.put("logical/x/new", b"new").await.unwrap();
    b.seal().await.unwrap();
    for s in &new[..3] {
        b.submit_share(s.clone()).await.unwrap();
    }
    assert!(!b.sealed());
    assert_eq!(
        &b.get("logical/x/kept").await.unwrap().unwrap()[..],
        b"kept"
    );
    assert_eq!(&b.get("logical/x/new").await.unwrap().unwrap()[..], b"new");
    // the old shares no longer authenticate; the new ones do
    assert!(matches!(
        b.check_shares(&old[..2]).await,
        Err(BarrierError::InvalidUnsealKey)
    ));
    b.check_shares(&new[..3]).await.unwrap();
}

#[tokio::test]
async fn rekey_and_share_checks_need_the_barrier_unsealed() {
    let mem = Arc::new(MemoryBackend::new());
    let b = Barrier::new(mem);
    let old = b.initialize(1, 1).await.unwrap();
    let (next, _) = palisade_barrier::NewUnsealKey::generate(palisade_barrier::SealConfig {
        secret_shares: 1,
        secret_threshold: 1,
    })
    .unwrap();
    assert!(matches!(b.rekey(&next).await, Err(BarrierError::Sealed)));
    assert!(matches!(
        b.check_shares(&old).await,
        Err(BarrierError::Sealed)
    ));
    // nothing changed: the old key still unseals
    b.unseal_with_key(&old[0]).await.unwrap();
}

#[tokio::test]
async fn another_process_follows_a_rekey_only_within_the_grace_period() {
    let mem = Arc::new(MemoryBackend::new());
    let a = Barrier::new(mem.clone());
    let old = a.initialize(1, 1).await.unwrap();
    a.unseal_with_key(&old[0]).await.unwrap();
    // two other processes on the same storage, unsealed before the rekey
    let (b, late) = (Barrier::new(mem.clone()), Barrier::new(mem.clone()));
    b.unseal_with_key(&old[0]).await.unwrap();
    late.unseal_with_key(&old[0]).await.unwrap();
    a.put("logical/x/k", b"v1").await.unwrap();
    let key = a.derive_key("purpose").unwrap();
    let (next, _) = palisade_barrier::NewUnsealKey::generate(palisade_barrier::SealConfig {
        secret_shares: 1,
        secret_threshold: 1,
    })
    .unwrap();
    a.rekey(&next).await.unwrap();
    a.rotate().await.unwrap();
    a.put("logical/x/k2", b"v2").await.unwrap();
    // derived keys do not change with a rekey or a rotation
    assert_eq!(a.derive_key("purpose").unwrap(), key);
    assert_ne!(a.derive_key("other").unwrap(), key);
    // within the grace period: B follows (new root key, new term)
    assert!(
        !a.tidy_root_upgrade(std::time::Duration::from_secs(600))
            .await
            .unwrap()
    );
    b.reload_keyring().await.unwrap();
    assert_eq!(&b.get("logical/x/k2").await.unwrap().unwrap()[..], b"v2");
    assert_eq!(b.derive_key("purpose").unwrap(), key);
    // after it: the upgrade is gone and a process that did not follow cannot
    assert!(
        a.tidy_root_upgrade(std::time::Duration::ZERO)
            .await
            .unwrap()
    );
    assert!(matches!(
        late.reload_keyring().await,
        Err(BarrierError::Integrity { .. })
    ));
    // the old unseal key opens nothing any more
    assert!(!unseals_with(snapshot(&mem).await, &old).await);
    // B, which followed, keeps reading after another reload
    b.reload_keyring().await.unwrap();
    assert_eq!(&b.get("logical/x/k").await.unwrap().unwrap()[..], b"v1");
}
