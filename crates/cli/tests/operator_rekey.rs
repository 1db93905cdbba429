//! `palisade operator rekey` and `palisade operator generate-root` against a
//! real server process: shares read from standard input (never echoed), the
//! new shares replacing the old ones across a kill -9, a new root token
//! decoded from its OTP encoding, refusals without sudo (exit 2), and no
//! share, OTP or token in the server's output or its audit log.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use common::{Server, Spec, assert_no_secrets, palisade, palisade_stdin};
use serde_json::{Value, json};

/// Lines `Key N: <share>` of a rekey's output.
fn printed_keys(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("Key "))
        .filter_map(|l| l.split_once(": ").map(|(_, k)| k.trim().to_string()))
        .collect()
}

/// The value of the `name` row of a `Key  Value` table.
fn row(out: &str, name: &str) -> String {
    out.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .filter(|rest| rest.starts_with("  "))
                .map(|rest| rest.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no {name} row in:\n{out}"))
}

async fn try_unseal(c: &reqwest::Client, s: &Server, keys: &[String]) -> bool {
    for k in keys {
        let r = c
            .put(s.url("sys/unseal"))
            .json(&json!({ "key": k }))
            .send()
            .await
            .unwrap();
        if r.status() != 200 {
            return false;
        }
        let v: Value = r.json().await.unwrap();
        if v["sealed"] == json!(false) {
            return true;
        }
    }
    false
}

async fn reset_unseal(c: &reqwest::Client, s: &Server) {
    c.put(s.url("sys/unseal"))
        .json(&json!({"reset": true}))
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_and_generate_root_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = Spec::sqlite(dir.path());
    let audit = dir.path().join("audit.log");
    spec.audit_file = Some(audit.clone());
    let mut server = Server::start(&spec).await;
    let c = spec.client();
    let (old, root) = common::init(&c, &server, 3, 2).await;
    common::unseal(&c, &server, &old[..2]).await;
    let home = dir.path().display().to_string();
    let env = [
        ("PALISADE_ADDR", server.addr.as_str()),
        ("PALISADE_TOKEN", root.as_str()),
        ("HOME", home.as_str()),
    ];
    let anon = [
        ("PALISADE_ADDR", server.addr.as_str()),
        ("HOME", home.as_str()),
    ];

    // deny: no token (exit 2, the server's answer)
    for args in [
        &["operator", "rekey", "--status"][..],
        &["operator", "rekey", "--init"],
        &["operator", "generate-root", "--status"],
    ] {
        let (code, out, err) = palisade(args, &anon);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains("permission denied"), "{err}");
    }
    // PGP is refused, never ignored
    let (code, _, err) = palisade(
        &[
            "operator",
            "rekey",
            "--init",
            "--key-shares",
            "2",
            "--key-threshold",
            "2",
            "--pgp-keys",
            "a,b",
        ],
        &env,
    );
    assert_eq!(code, 2);
    assert!(err.contains("pgp_keys is not supported"), "{err}");

    // no PGP backups ever exist; cancelling when nothing runs is fine
    let (code, _, err) = palisade(&["operator", "rekey", "--backup-retrieve"], &env);
    assert_eq!(code, 2);
    assert!(err.contains("no backed-up keys found"), "{err}");
    let (code, out, _) = palisade(&["operator", "rekey", "--backup-delete"], &env);
    assert_eq!(
        (code, out.trim()),
        (0, "Success! Delete stored keys (if they existed)")
    );
    let (code, out, _) = palisade(&["operator", "rekey", "--cancel"], &env);
    assert_eq!(
        (code, out.trim()),
        (0, "Success! Canceled rekeying (if it was started)")
    );

    // rekey to 4 shares / threshold 3, shares read from standard input
    let (code, out, err) = palisade(
        &[
            "operator",
            "rekey",
            "--init",
            "--key-shares",
            "4",
            "--key-threshold",
            "3",
        ],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(row(&out, "Started"), "true");
    assert_eq!(row(&out, "Rekey Progress"), "0/2");
    assert_eq!(row(&out, "New Shares"), "4");
    let mut transcript = String::new();
    let (code, out, err) = palisade_stdin(
        &["operator", "rekey"],
        &env,
        format!("{}\n", old[1]).as_bytes(),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(row(&out, "Rekey Progress"), "1/2");
    transcript += &out;
    transcript += &err;
    // the same share again: the server's refusal, exit 2
    let (code, _, err) = palisade_stdin(
        &["operator", "rekey"],
        &env,
        format!("{}\n", old[1]).as_bytes(),
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("given key has already been provided during this generation operation"),
        "{err}"
    );
    transcript += &err;
    let (code, out, err) = palisade_stdin(
        &["operator", "rekey", "-"],
        &env,
        format!("{}\n", old[2]).as_bytes(),
    );
    assert_eq!(code, 0, "{out}{err}");
    let new = printed_keys(&out);
    assert_eq!(new.len(), 4, "{out}");
    assert!(
        out.contains("Palisade rekeyed with 4 key shares and a key threshold of 3"),
        "{out}"
    );
    transcript += &err;
    // the old shares were never echoed
    assert_no_secrets("the CLI's output", &transcript, &old);

    // kill -9 now: the new shares unseal the restarted server, the old do not
    server.kill9();
    let mut server = Server::start(&spec).await;
    assert!(!try_unseal(&c, &server, &old).await);
    reset_unseal(&c, &server).await;
    let (code, out, err) = palisade_stdin(
        &["operator", "unseal"],
        &[
            ("PALISADE_ADDR", server.addr.as_str()),
            ("HOME", home.as_str()),
        ],
        format!("{}\n", new[3]).as_bytes(),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(try_unseal(&c, &server, &new[..2]).await);
    let env = [
        ("PALISADE_ADDR", server.addr.as_str()),
        ("PALISADE_TOKEN", root.as_str()),
        ("HOME", home.as_str()),
    ];

    // rekey with verification: nothing changes until the new shares come back
    let (code, out, err) = palisade(
        &[
            "operator",
            "rekey",
            "--init",
            "--key-shares",
            "3",
            "--key-threshold",
            "2",
            "--verify",
        ],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(row(&out, "Verification Required"), "true");
    let mut last = String::new();
    for k in &new[..3] {
        let (code, out, err) =
            palisade_stdin(&["operator", "rekey"], &env, format!("{k}\n").as_bytes());
        assert_eq!(code, 0, "{out}{err}");
        last = out;
    }
    let verified = printed_keys(&last);
    assert_eq!(verified.len(), 3, "{last}");
    assert!(last.contains("Verification nonce: "), "{last}");
    let (code, out, err) = palisade(&["operator", "rekey", "--status", "--verify"], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(row(&out, "Verification Progress"), "0/2");
    for k in &verified[1..] {
        let (code, out, err) = palisade_stdin(
            &["operator", "rekey", "--verify"],
            &env,
            format!("{k}\n").as_bytes(),
        );
        assert_eq!(code, 0, "{out}{err}");
        last = out;
    }
    assert!(last.contains("Rekey verification was successful"), "{last}");
    let (code, out, err) = palisade(&["operator", "rekey", "--status", "--format", "json"], &env);
    assert_eq!(code, 0, "{out}{err}");
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&status["started"], &status["required"]),
        (&json!(false), &json!(2))
    );

    // generate-root: a local OTP, the shares on standard input, decode
    let (code, otp, _) = palisade(&["operator", "generate-root", "--generate-otp"], &[]);
    assert_eq!(code, 0);
    let otp = otp.trim().to_string();
    assert_eq!(otp.len(), 28);
    let (code, out, err) = palisade(
        &["operator", "generate-root", "--init", "--otp", &otp],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(row(&out, "Progress"), "0/2");
    assert_eq!(row(&out, "OTP Length"), "28");
    let mut out = String::new();
    for k in &verified[..2] {
        let (code, o, err) = palisade_stdin(
            &["operator", "generate-root"],
            &env,
            format!("{k}\n").as_bytes(),
        );
        assert_eq!(code, 0, "{o}{err}");
        out = o;
    }
    assert_eq!(row(&out, "Complete"), "true");
    let encoded = row(&out, "Encoded Token");
    let (code, token, err) = palisade_stdin(
        &[
            "operator",
            "generate-root",
            "--decode",
            &encoded,
            "--otp",
            "-",
        ],
        &[],
        format!("{otp}\n").as_bytes(),
    );
    assert_eq!(code, 0, "{err}");
    let token = token.trim().to_string();
    assert!(token.starts_with("hvs.") && token != root, "{token}");
    let (code, out, err) = palisade(
        &["token", "lookup", "--format", "json"],
        &[
            ("PALISADE_ADDR", server.addr.as_str()),
            ("PALISADE_TOKEN", token.as_str()),
            ("HOME", home.as_str()),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"root\""), "{out}");
    let (code, _, err) = palisade(
        &[
            "operator",
            "generate-root",
            "--decode",
            &encoded,
            "--otp",
            "short",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("must be the same length"), "{err}");

    // nothing secret in the server's output or (in clear) in its audit log
    let secrets: Vec<String> = old
        .iter()
        .chain(&new)
        .chain(&verified)
        .cloned()
        .chain([otp.clone(), token.clone(), encoded.clone()])
        .collect();
    assert_no_secrets("the server output", &server.output(), &secrets);
    assert_no_secrets(
        "the audit log",
        &std::fs::read_to_string(&audit).unwrap(),
        &secrets,
    );
    server.kill9();
}

/// The recovery path when no token can generate a root: a server started
/// with `dangerous_unauthenticated_generate_root = true` (and a warning in
/// its log) lets the share holders make one without a token; rekey stays
/// behind sudo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_root_without_a_token_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = Spec::sqlite(dir.path());
    spec.top_level = "dangerous_unauthenticated_generate_root = true\n".into();
    let server = Server::start(&spec).await;
    let c = spec.client();
    let (keys, root) = common::init(&c, &server, 3, 2).await;
    common::unseal(&c, &server, &keys[1..]).await;
    // every root token gone
    let r = c
        .post(server.url("auth/token/revoke-self"))
        .header("X-Vault-Token", &root)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let home = dir.path().display().to_string();
    let anon = [
        ("PALISADE_ADDR", server.addr.as_str()),
        ("HOME", home.as_str()),
    ];
    let (code, _, err) = palisade(&["operator", "rekey", "--status"], &anon);
    assert_eq!(code, 2);
    assert!(err.contains("permission denied"), "{err}");

    let (code, out, err) = palisade(&["operator", "generate-root", "--init"], &anon);
    assert_eq!(code, 0, "{out}{err}");
    let otp = row(&out, "OTP");
    assert_eq!(otp.len(), 28);
    let mut out = String::new();
    for k in &keys[..2] {
        let (code, o, err) = palisade_stdin(
            &["operator", "generate-root"],
            &anon,
            format!("{k}\n").as_bytes(),
        );
        assert_eq!(code, 0, "{o}{err}");
        out = o;
    }
    let encoded = row(&out, "Encoded Token");
    let (code, token, err) = palisade(
        &[
            "operator",
            "generate-root",
            "--decode",
            &encoded,
            "--otp",
            &otp,
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let token = token.trim().to_string();
    let (code, out, err) = palisade(
        &["operator", "key-status"],
        &[
            ("PALISADE_ADDR", server.addr.as_str()),
            ("PALISADE_TOKEN", token.as_str()),
            ("HOME", home.as_str()),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let log = server.output();
    assert!(
        log.contains("dangerous_unauthenticated_generate_root = true"),
        "{log}"
    );
    assert_no_secrets("the server output", &log, &[otp, token, encoded]);
    assert_no_secrets("the server output", &log, &keys);
}

/// kill -9 at arbitrary moments around the `sys/rekey/verify` that makes new
/// shares take effect: after every restart either the old shares or the new
/// ones unseal, never neither; once the verification was acknowledged, the
/// new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_rekey_leaves_old_or_new_shares() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::sqlite(dir.path());
    let mut server = Server::start(&spec).await;
    let c = spec.client();
    let (mut current, root) = common::init(&c, &server, 3, 2).await;
    common::unseal(&c, &server, &current[..2]).await;
    let put = |server: &Server, path: &str, body: Value| {
        c.put(server.url(path))
            .header("X-Vault-Token", root.as_str())
            .json(&body)
            .send()
    };
    let (mut unacknowledged, mut took_effect) = (0, 0);
    for round in 0..12u64 {
        let r: Value = put(
            &server,
            "sys/rekey/init",
            json!({"secret_shares": 3, "secret_threshold": 2, "require_verification": true}),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let nonce = r["nonce"].as_str().unwrap().to_string();
        put(
            &server,
            "sys/rekey/update",
            json!({"key": current[0], "nonce": nonce}),
        )
        .await
        .unwrap();
        let r: Value = put(
            &server,
            "sys/rekey/update",
            json!({"key": current[1], "nonce": nonce}),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let new: Vec<String> = serde_json::from_value(r["keys"].clone()).unwrap();
        let vnonce = r["verification_nonce"].as_str().unwrap().to_string();
        put(
            &server,
            "sys/rekey/verify",
            json!({"key": new[2], "nonce": vnonce}),
        )
        .await
        .unwrap();
        // the completing verification, and a kill somewhere around it
        let finishing = tokio::spawn(put(
            &server,
            "sys/rekey/verify",
            json!({"key": new[0], "nonce": vnonce}),
        ));
        // (a blocking sleep: tokio's timers have millisecond granularity, and
        // the whole verification takes less than that)
        std::thread::sleep(std::time::Duration::from_micros(round * 400));
        server.kill9();
        let acknowledged = match finishing.await.unwrap() {
            Ok(r) if r.status() == 200 => r
                .json::<Value>()
                .await
                .is_ok_and(|v| v["complete"] == json!(true)),
            _ => false,
        };
        unacknowledged += usize::from(!acknowledged);
        server = Server::start(&spec).await;
        if try_unseal(&c, &server, &new[1..]).await {
            current = new;
            took_effect += 1;
        } else {
            assert!(
                !acknowledged,
                "round {round}: the acknowledged new shares do not unseal"
            );
            reset_unseal(&c, &server).await;
            assert!(
                try_unseal(&c, &server, &current[1..]).await,
                "round {round}: neither the old shares nor the new ones unseal"
            );
        }
    }
    // how many kills came before the answer (timing decides; both kinds are checked above)
    eprintln!(
        "of 12 verifications, {unacknowledged} were killed before they were acknowledged, {took_effect} took effect"
    );
    server.kill9();
}
