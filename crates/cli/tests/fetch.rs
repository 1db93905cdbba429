//! `palisade fetch`, the init container that hands a pod its secrets as
//! files in a memory volume (issue #18): a JWT (service account token) or
//! AppRole login, every secret read before any file is written, files
//! written whole with a narrow mode, the login's token revoked unless the
//! application keeps it; refusals write nothing and never print a secret.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine as _;
use common::{Server, Spec, palisade};
use rustls::pki_types::PrivatePkcs8KeyDer;
use serde_json::{Value, json};

const PASSWORD: &str = "fetch-db-password-7c1e2a";

/// A JWT signed with `key` (EdDSA), as Kubernetes issues service account tokens.
fn jwt(key: &rcgen::KeyPair, sub: &str) -> String {
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = b64(br#"{"alg":"EdDSA","typ":"JWT"}"#);
    let claims = b64(
        json!({"iss": "https://kubernetes.default.svc", "aud": ["palisade"], "sub": sub,
        "iat": now, "exp": now + 600})
        .to_string()
        .as_bytes(),
    );
    let input = format!("{header}.{claims}");
    let der = PrivatePkcs8KeyDer::from(key.serialize_der());
    let signing = rustls::crypto::aws_lc_rs::sign::any_eddsa_type(&der).unwrap();
    let signer = signing
        .choose_scheme(&[rustls::SignatureScheme::ED25519])
        .unwrap();
    format!("{input}.{}", b64(&signer.sign(input.as_bytes()).unwrap()))
}

struct Setup {
    _tmp: tempfile::TempDir,
    server: Server,
    root: String,
    key: rcgen::KeyPair,
    dir: std::path::PathBuf,
}

async fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let root = format!("dev-root-{}", common::unique());
    let server = Server::start_dev(&Spec::sqlite(&dir), &root, &dir.join("audit.log")).await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let post = |p: &'static str, b: Value| {
        let (s, r) = (&server, root.clone());
        async move { s.post_ok(&r, p, b).await }
    };
    post(
        "secret/data/orders/db",
        json!({"data": {"username": "orders", "password": PASSWORD, "port": 5432}}),
    )
    .await;
    post(
        "secret/data/billing/db",
        json!({"data": {"password": "billing-secret-1"}}),
    )
    .await;
    post(
        "sys/policies/acl/orders",
        json!({"policy": "path \"secret/data/orders/*\" { capabilities = [\"read\"] }"}),
    )
    .await;
    post("sys/auth/jwt", json!({"type": "jwt"})).await;
    post(
        "auth/jwt/config",
        json!({"jwt_validation_pubkeys": [key.public_key_pem()], "jwt_supported_algs": ["EdDSA"],
               "bound_issuer": "https://kubernetes.default.svc"}),
    )
    .await;
    post(
        "auth/jwt/role/orders",
        json!({"role_type": "jwt", "bound_audiences": ["palisade"], "user_claim": "sub",
               "bound_subject": "system:serviceaccount:apps:orders", "token_policies": ["orders"]}),
    )
    .await;
    let out = dir.join("out");
    std::fs::create_dir(&out).unwrap();
    Setup {
        _tmp: tmp,
        server,
        root,
        key,
        dir,
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_writes_secrets_after_a_service_account_login() {
    let s = setup().await;
    let token_file = s.dir.join("sa-token");
    let sa = jwt(&s.key, "system:serviceaccount:apps:orders");
    std::fs::write(&token_file, &sa).unwrap();
    let out = s.dir.join("out");
    let args = |extra: &[&str]| {
        let mut a = vec![
            "fetch".to_string(),
            "--address".into(),
            s.server.addr.clone(),
            "--role".into(),
            "orders".into(),
            "--jwt-file".into(),
            token_file.display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ];
        a.extend(extra.iter().map(|x| (*x).to_string()));
        a
    };
    let run = |a: Vec<String>| palisade(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[]);

    // a symlink planted at a file name is replaced, never followed
    let victim = s.dir.join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    std::os::unix::fs::symlink(&victim, out.join("db-password")).unwrap();

    let (code, stdout, stderr) = run(args(&[
        "db.json=secret/data/orders/db",
        "db-password=secret/data/orders/db#password",
        "db-port=secret/data/orders/db#port",
    ]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(listing(&out), ["db-password", "db-port", "db.json"]);
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("db.json")).unwrap()).unwrap();
    assert_eq!(
        doc,
        json!({"username": "orders", "password": PASSWORD, "port": 5432})
    );
    assert_eq!(
        std::fs::read_to_string(out.join("db-password")).unwrap(),
        PASSWORD
    );
    assert_eq!(
        std::fs::read_to_string(out.join("db-port")).unwrap(),
        "5432"
    );
    assert!(
        !std::fs::symlink_metadata(out.join("db-password"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    for f in ["db.json", "db-password", "db-port"] {
        assert_eq!(mode(&out.join(f)), 0o400, "{f}");
    }
    common::assert_no_secrets(
        "fetch output",
        &format!("{stdout}{stderr}"),
        &[PASSWORD.into(), sa.clone()],
    );

    // --token-out: the token is kept, valid, for the application (0440 for a pod's group)
    let (code, stdout, stderr) = run(args(&[
        "--mode",
        "0440",
        "--token-out",
        "token",
        "db-password=secret/data/orders/db#password",
    ]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(mode(&out.join("token")), 0o440);
    assert_eq!(mode(&out.join("db-password")), 0o440);
    let token = std::fs::read_to_string(out.join("token")).unwrap();
    let token = token.trim();
    let r = reqwest::Client::new()
        .get(s.server.url("auth/token/lookup-self"))
        .header("X-Vault-Token", token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let policies = r.json::<Value>().await.unwrap()["data"]["policies"].clone();
    assert_eq!(policies, json!(["default", "orders"]));
    common::assert_no_secrets(
        "fetch output",
        &format!("{stdout}{stderr}"),
        &[token.into()],
    );

    // a path the role's policy does not grant: nothing is written, even the allowed ones
    let fresh = s.dir.join("out2");
    std::fs::create_dir(&fresh).unwrap();
    let mut a = args(&["a=secret/data/orders/db", "b=secret/data/billing/db"]);
    let i = a.iter().position(|x| x == "--out").unwrap();
    a[i + 1] = fresh.display().to_string();
    let (code, stdout, stderr) = run(a.clone());
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("permission denied"), "{stderr}");
    assert!(listing(&fresh).is_empty(), "{:?}", listing(&fresh));
    common::assert_no_secrets(
        "fetch output",
        &format!("{stdout}{stderr}"),
        &[PASSWORD.into(), "billing-secret-1".into()],
    );

    // a missing field: nothing written
    let (code, _, stderr) = run(a
        .iter()
        .take(9)
        .cloned()
        .chain(["x=secret/data/orders/db#nope".to_string()])
        .collect());
    assert_eq!(code, 2);
    assert!(stderr.contains("no field \"nope\""), "{stderr}");
    assert!(listing(&fresh).is_empty());

    // another service account's token is refused at login: nothing written, the JWT not printed
    let other = jwt(&s.key, "system:serviceaccount:apps:billing");
    std::fs::write(&token_file, &other).unwrap();
    let (code, stdout, stderr) = run(a
        .iter()
        .take(9)
        .cloned()
        .chain(["x=secret/data/orders/db".to_string()])
        .collect());
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(listing(&fresh).is_empty());
    common::assert_no_secrets("fetch output", &format!("{stdout}{stderr}"), &[other]);
    drop(s.root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_cannot_be_revoked_is_reported_and_fails_the_fetch() {
    let s = setup().await;
    let out = s.dir.join("out");
    let post = |p: &'static str, b: Value| {
        let (srv, r) = (&s.server, s.root.clone());
        async move { srv.post_ok(&r, p, b).await }
    };
    post("sys/auth/approle", json!({"type": "approle"})).await;
    // without the default policy, a token may not call revoke-self
    post(
        "auth/approle/role/nodefault",
        json!({"token_policies": ["orders"], "token_no_default_policy": true}),
    )
    .await;
    let role_id = reqwest::Client::new()
        .get(s.server.url("auth/approle/role/nodefault/role-id"))
        .header("X-Vault-Token", &s.root)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret_id =
        post("auth/approle/role/nodefault/secret-id", json!({})).await["data"]["secret_id"]
            .as_str()
            .unwrap()
            .to_string();
    let sid_file = s.dir.join("secret-id");
    std::fs::write(&sid_file, format!("{secret_id}\r\n\n")).unwrap();
    let (code, stdout, stderr) = palisade(
        &[
            "fetch",
            "--address",
            s.server.addr.as_str(),
            "--method",
            "approle",
            "--role-id",
            role_id.as_str(),
            "--secret-id-file",
            sid_file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "pw=secret/data/orders/db#password",
        ],
        &[],
    );
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("could not be revoked"), "{stderr}");
    assert!(stderr.contains("403"), "{stderr}");
    common::assert_no_secrets(
        "fetch output",
        &format!("{stdout}{stderr}"),
        &[PASSWORD.into(), secret_id],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_refuses_bad_arguments_before_any_request() {
    let s = setup().await;
    let out = s.dir.join("out");
    let addr = s.server.addr.clone();
    let base = [
        "fetch",
        "--address",
        addr.as_str(),
        "--method",
        "token",
        "--out",
        out.to_str().unwrap(),
    ];
    let env = [("PALISADE_TOKEN", s.root.as_str())];
    let cases: &[(&[&str], &str)] = &[
        (&["../escape=secret/data/orders/db"], "invalid file name"),
        (&[".hidden=secret/data/orders/db"], "invalid file name"),
        (&["a/b=secret/data/orders/db"], "invalid file name"),
        (&["a=secret/../sys/seal"], "invalid path"),
        (&["a=secret/data/orders/db?version=1"], "invalid path"),
        (&["a=secret/data/orders/db#"], "an empty #FIELD"),
        (&["a=secret\\..\\..\\sys\\raw\\core"], "invalid path"),
        (&["a=secret/data/a\\..\\..\\metrics"], "invalid path"),
        (&["a=secret/data/orders/d\u{7}b"], "invalid path"),
        (&["--mode", "+400", "a=secret/data/orders/db"], "--mode"),
        (&["--mode", "0o0o400", "a=secret/data/orders/db"], "--mode"),
        (&["--mode", "0o+400", "a=secret/data/orders/db"], "--mode"),
        (&["nopath"], "expected FILE=PATH[#FIELD]"),
        (
            &["a=secret/data/orders/db", "a=secret/data/orders/db"],
            "is named twice",
        ),
        (&["--mode", "0644", "a=secret/data/orders/db"], "--mode"),
        (&["--mode", "0200", "a=secret/data/orders/db"], "--mode"),
        (
            &["--token-out", "t", "a=secret/data/orders/db"],
            "--token-out keeps a login's token",
        ),
    ];
    for (extra, want) in cases {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(extra);
        let (code, stdout, stderr) = palisade(&a, &env);
        assert_eq!(code, 1, "{extra:?}: {stdout}{stderr}");
        assert!(stderr.contains(want), "{extra:?}: {stderr}");
    }
    assert!(listing(&out).is_empty());
    // --method token with the operator's token works (and leaves that token alone)
    let mut a: Vec<&str> = base.to_vec();
    a.push("pw=secret/data/orders/db#password");
    let (code, stdout, stderr) = palisade(&a, &env);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(std::fs::read_to_string(out.join("pw")).unwrap(), PASSWORD);
    let r = reqwest::Client::new()
        .get(s.server.url("auth/token/lookup-self"))
        .header("X-Vault-Token", &s.root)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // a KV v1 secret whose data has `data` and `metadata` keys is written as it is
    s.server
        .post_ok(&s.root, "sys/mounts/kv1", json!({"type": "kv"}))
        .await;
    s.server
        .post_ok(
            &s.root,
            "kv1/decoy",
            json!({"data": {"password": "decoy"}, "metadata": "x", "password": "real-v1-password"}),
        )
        .await;
    let mut a: Vec<&str> = base.to_vec();
    a.extend_from_slice(&["v1=kv1/decoy#password", "v1.json=kv1/decoy"]);
    let (code, stdout, stderr) = palisade(&a, &env);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        std::fs::read_to_string(out.join("v1")).unwrap(),
        "real-v1-password"
    );
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("v1.json")).unwrap()).unwrap();
    assert_eq!(doc["password"], "real-v1-password");

    // a file that cannot be written (a directory at its name): the others are left as they were
    std::fs::write(out.join("first"), "old").unwrap();
    std::fs::create_dir(out.join("second")).unwrap();
    let mut a: Vec<&str> = base.to_vec();
    a.extend_from_slice(&[
        "first=secret/data/orders/db#password",
        "second=secret/data/orders/db#username",
    ]);
    let (code, _, stderr) = palisade(&a, &env);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("cannot write"), "{stderr}");
    assert_eq!(std::fs::read_to_string(out.join("first")).unwrap(), "old");
    assert!(
        listing(&out).iter().all(|f| !f.starts_with('.')),
        "no staged file left: {:?}",
        listing(&out)
    );

    // the mode is exactly --mode, whatever the umask (a pod's fsGroup must be able to read 0440)
    let (code, stdout, stderr) = {
        let out_s = out.to_str().unwrap();
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg("umask 077 && exec \"$0\" \"$@\"")
            .arg(common::BIN)
            .args([
                "fetch",
                "--address",
                addr.as_str(),
                "--method",
                "token",
                "--out",
                out_s,
                "--mode",
                "0440",
                "g=secret/data/orders/db#password",
            ])
            .env("PALISADE_TOKEN", &s.root)
            .env_remove("VAULT_TOKEN");
        let o = cmd.output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(mode(&out.join("g")), 0o440);

    // --out must be a directory
    let (code, _, stderr) = palisade(
        &[
            "fetch",
            "--address",
            addr.as_str(),
            "--method",
            "token",
            "--out",
            "/nonexistent-dir",
            "a=secret/data/orders/db",
        ],
        &env,
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("not a directory"), "{stderr}");
}
