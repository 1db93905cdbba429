//! The storage conformance suite: every backend runs exactly these checks.
//! Public (not `cfg(test)`) so each backend's integration test calls it.

use std::sync::Arc;

use crate::{Backend, StorageError, TxnOp};

fn fail(msg: impl Into<String>) -> StorageError {
    StorageError::Backend(format!("conformance: {}", msg.into()))
}

macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err(fail(format!($($arg)*)));
        }
    };
}

/// Run the whole suite against an empty backend.
pub async fn run(b: Arc<dyn Backend>) -> Result<(), StorageError> {
    // get / put / overwrite / delete
    ensure!(
        b.get("a/b").await?.is_none(),
        "missing key must read as None"
    );
    b.put("a/b", b"one").await?;
    ensure!(
        b.get("a/b").await?.as_deref() == Some(&b"one"[..]),
        "put then get"
    );
    b.put("a/b", b"two").await?;
    ensure!(
        b.get("a/b").await?.as_deref() == Some(&b"two"[..]),
        "overwrite"
    );
    b.delete("a/b").await?;
    ensure!(b.get("a/b").await?.is_none(), "delete");
    b.delete("a/b").await?; // deleting a missing key is not an error

    // binary values, including NUL and invalid UTF-8, and an empty value
    let bin: Vec<u8> = (0u8..=255).collect();
    b.put("bin/x", &bin).await?;
    ensure!(
        b.get("bin/x").await?.as_deref() == Some(&bin[..]),
        "binary round trip"
    );
    b.put("bin/empty", b"").await?;
    ensure!(
        b.get("bin/empty").await?.as_deref() == Some(&b""[..]),
        "empty value"
    );

    // list: immediate children, folders with a trailing slash, sorted, prefix-exact
    for k in ["l/a", "l/b/c", "l/b/d/e", "l/c", "lx/a", "l2/z"] {
        b.put(k, b"v").await?;
    }
    let got = b.list("l/").await?;
    ensure!(got == vec!["a", "b/", "c"], "list l/ gave {got:?}");
    let got = b.list("l/b/").await?;
    ensure!(got == vec!["c", "d/"], "list l/b/ gave {got:?}");
    let got = b.list("nothing/").await?;
    ensure!(got.is_empty(), "list of a missing prefix gave {got:?}");
    let root = b.list("").await?;
    ensure!(
        root.contains(&"l/".to_string()) && root.contains(&"lx/".to_string()),
        "root list {root:?}"
    );

    // keys that look like SQL wildcards are literal
    b.put("w/%", b"p").await?;
    b.put("w/_", b"u").await?;
    b.put("wx/a", b"x").await?;
    let got = b.list("w/").await?;
    ensure!(
        got == vec!["%", "_"],
        "wildcard-looking keys listed as {got:?}"
    );

    // transactions apply whole
    b.put("t/old", b"o").await?;
    b.transaction(vec![
        TxnOp::Put {
            key: "t/a".into(),
            value: b"1".to_vec(),
        },
        TxnOp::Put {
            key: "t/b".into(),
            value: b"2".to_vec(),
        },
        TxnOp::Delete {
            key: "t/old".into(),
        },
    ])
    .await?;
    ensure!(
        b.get("t/a").await?.as_deref() == Some(&b"1"[..]),
        "txn put a"
    );
    ensure!(
        b.get("t/b").await?.as_deref() == Some(&b"2"[..]),
        "txn put b"
    );
    ensure!(b.get("t/old").await?.is_none(), "txn delete");

    // ... or not at all: an invalid key anywhere rejects every operation
    let r = b
        .transaction(vec![
            TxnOp::Put {
                key: "t/c".into(),
                value: b"3".to_vec(),
            },
            TxnOp::Put {
                key: "t/../evil".into(),
                value: b"4".to_vec(),
            },
        ])
        .await;
    ensure!(
        matches!(r, Err(StorageError::InvalidKey(_))),
        "bad txn accepted: {r:?}"
    );
    ensure!(b.get("t/c").await?.is_none(), "partial transaction applied");

    // invalid keys are refused on every operation
    for bad in ["", "/abs", "a//b", "a/../b", "trail/"] {
        ensure!(
            matches!(b.get(bad).await, Err(StorageError::InvalidKey(_))),
            "get {bad:?}"
        );
        ensure!(
            matches!(b.put(bad, b"x").await, Err(StorageError::InvalidKey(_))),
            "put {bad:?}"
        );
    }

    // concurrent writers to distinct keys all land
    let mut set = tokio::task::JoinSet::new();
    for i in 0..32 {
        let b = b.clone();
        set.spawn(async move { b.put(&format!("c/{i}"), format!("{i}").as_bytes()).await });
    }
    while let Some(r) = set.join_next().await {
        r.map_err(|e| fail(format!("task: {e}")))??;
    }
    for i in 0..32 {
        ensure!(
            b.get(&format!("c/{i}")).await?.as_deref() == Some(format!("{i}").as_bytes()),
            "concurrent put {i}"
        );
    }
    Ok(())
}
