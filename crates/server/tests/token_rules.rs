//! Token rules Vault enforces and a reimplementation easily misses: children
//! created while their parent is being revoked, expiring root tokens, use-limited
//! parents, the system max TTL on create and renew, children of an expired
//! parent, credentials in a POST's query string, duration overflow, and
//! `cas_required` on KV v2 PATCH. Each rule is checked from both sides: what
//! it allows and what it refuses, with Vault's exact status and error body.
//!
//! Expiry is driven by the server's adjustable clock (`s.clock.advance`):
//! nothing here sleeps.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use palisade_server::token::TtlLimits;
use serde_json::{Value, json};

/// Vault's default and maximum token TTL: 768h.
const MAX_768H: i64 = 768 * 3600;

/// A policy letting a token create children (and, with sudo, orphans).
const CREATOR: &str = r#"
path "auth/token/create" { capabilities = ["update"] }
path "auth/token/create-orphan" { capabilities = ["update", "sudo"] }
"#;

// ------------------------------------------------------------ helpers

/// `GET auth/token/lookup-self` as `token` (the default policy grants read).
async fn lookup_self(s: &TestServer, token: &str) -> Resp {
    s.get("auth/token/lookup-self", token).await
}

/// `POST auth/token/lookup {"token": token}` as root.
async fn root_lookup(s: &TestServer, token: &str) -> Resp {
    s.post("auth/token/lookup", &s.root, json!({ "token": token }))
        .await
}

/// The token is valid: lookup-self answers 200 with its own id.
#[track_caller]
fn assert_valid(r: &Resp, token: &str) {
    assert_eq!(r.status, 200, "token should be valid: {}", r.text);
    assert_eq!(r.data()["id"], token, "{}", r.text);
}

/// Every accessor (`LIST auth/token/accessors` as root).
async fn accessors(s: &TestServer) -> Vec<String> {
    let r = s.list("auth/token/accessors", &s.root).await;
    assert_eq!(r.status, 200, "list accessors: {}", r.text);
    serde_json::from_value(r.data()["keys"].clone()).expect("accessor keys")
}

/// Vault's warning for a TTL capped at the effective max TTL.
fn capped(requested: &str, max: &str) -> String {
    format!(
        "TTL of \"{requested}\" exceeded the effective max_ttl of \"{max}\"; TTL value is capped accordingly"
    )
}

/// A lease/ttl in seconds equal to `expected`, allowing one second for the
/// clock to tick between the server computing the expiry and the remaining
/// time (it reads "now" twice).
#[track_caller]
fn assert_secs(v: &Value, expected: i64, ctx: &str) {
    let got = v
        .as_i64()
        .unwrap_or_else(|| panic!("{ctx}: not an integer: {v}"));
    assert!(
        got == expected || got == expected - 1,
        "{ctx}: expected {expected}s, got {got}s"
    );
}

fn token_of(r: &Resp) -> Token {
    Token {
        id: r.auth()["client_token"].as_str().unwrap().to_string(),
        accessor: r.auth()["accessor"].as_str().unwrap().to_string(),
    }
}

// ------------------------------------------------------------ 1. revocation race

const MINTERS: usize = 8;
/// Attempts per minter at most (the minters stop once the revocation returned).
const ATTEMPTS: usize = 200;
/// Revoke the parent once this many children exist.
const REVOKE_AFTER: usize = 20;

/// Root revokes a parent (by token or by accessor) while the parent keeps
/// minting children from many tasks. Every child that was created must die
/// with the parent, and none may be left in the accessor list.
async fn race_revocation(by_accessor: bool) {
    let s = TestServer::dev().await;
    let pol = s.unique("minter");
    s.write_policy(&pol, CREATOR).await;
    let parent = s.create_token(&s.root, json!({ "policies": [pol] })).await;
    let bystander = s
        .create_token(&s.root, json!({ "policies": ["default"] }))
        .await;

    // allow side: the parent mints, the child is valid and listed
    let first = s.create_token(&parent.id, json!({})).await;
    assert_valid(&lookup_self(&s, &first.id).await, &first.id);
    assert!(accessors(&s).await.contains(&first.accessor));

    let minted = Arc::new(AtomicUsize::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let enough = Arc::new(tokio::sync::Notify::new());
    let mut minters = Vec::new();
    for _ in 0..MINTERS {
        let http = s.http.clone();
        let url = s.url("auth/token/create");
        let token = parent.id.clone();
        let (minted, stop, enough) = (minted.clone(), stop.clone(), enough.clone());
        minters.push(tokio::spawn(async move {
            let mut children = Vec::new();
            let mut refused = 0usize;
            for _ in 0..ATTEMPTS {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let r = http
                    .post(url.as_str())
                    .header("X-Vault-Token", token.as_str())
                    .json(&json!({}))
                    .send()
                    .await
                    .expect("send create");
                let status = r.status().as_u16();
                let body: Value = r.json().await.expect("create answer is JSON");
                match status {
                    200 => {
                        children.push(Token {
                            id: body["auth"]["client_token"].as_str().unwrap().to_string(),
                            accessor: body["auth"]["accessor"].as_str().unwrap().to_string(),
                        });
                        if minted.fetch_add(1, Ordering::SeqCst) + 1 == REVOKE_AFTER {
                            enough.notify_one();
                        }
                    }
                    403 => {
                        assert_eq!(body, json!({ "errors": ["permission denied"] }));
                        refused += 1;
                    }
                    other => panic!("create during revocation: {other} {body}"),
                }
            }
            (children, refused)
        }));
    }

    // a guard against a hang, not a wait: the minters notify long before
    tokio::time::timeout(Duration::from_secs(120), enough.notified())
        .await
        .expect("the minters never created enough children");
    let r = if by_accessor {
        s.post(
            "auth/token/revoke-accessor",
            &s.root,
            json!({ "accessor": parent.accessor }),
        )
        .await
    } else {
        s.post("auth/token/revoke", &s.root, json!({ "token": parent.id }))
            .await
    };
    assert_eq!(r.status, 204, "revoke: {}", r.text);
    stop.store(true, Ordering::SeqCst);

    let mut children = vec![first];
    let mut refused = 0;
    for m in minters {
        let (c, n) = m.await.expect("minter task");
        children.extend(c);
        refused += n;
    }
    assert!(
        children.len() > REVOKE_AFTER,
        "only {} children were created",
        children.len()
    );
    // minting went on through the revocation (the race was run)
    assert!(
        refused > 0,
        "no creation was refused: the race never happened"
    );

    // deny side: the parent creates nothing any more
    assert_denied(&s.post("auth/token/create", &parent.id, json!({})).await);
    assert_error(&root_lookup(&s, &parent.id).await, 403, "bad token");

    // every child that was created is dead and unlisted
    let listed = accessors(&s).await;
    let mut survivors = Vec::new();
    for c in &children {
        let r = lookup_self(&s, &c.id).await;
        if r.status != 403 || r.body != json!({ "errors": ["permission denied"] }) {
            survivors.push(format!("{} -> {} {}", c.accessor, r.status, r.text));
        }
        if listed.contains(&c.accessor) {
            survivors.push(format!("{} still in auth/token/accessors", c.accessor));
        }
    }
    assert!(
        survivors.is_empty(),
        "{} of {} children ({} creations refused) outlived the revocation of their parent \
         (by {}): {survivors:#?}",
        survivors.len(),
        children.len(),
        refused,
        if by_accessor { "accessor" } else { "token" },
    );
    assert!(!listed.contains(&parent.accessor));

    // the revocation touched nothing else
    assert_valid(&lookup_self(&s, &bystander.id).await, &bystander.id);
    assert!(listed.contains(&bystander.accessor));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn children_created_during_revocation_are_revoked() {
    race_revocation(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn children_created_during_revocation_by_accessor_are_revoked() {
    race_revocation(true).await;
}

// ------------------------------------------------------------ 2. expiring root

#[tokio::test]
async fn expiring_root_cannot_mint_non_expiring_root() {
    let s = TestServer::dev().await;
    let r = s
        .post(
            "auth/token/create",
            &s.root,
            json!({ "policies": ["root"], "ttl": "60s" }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_secs(&r.auth()["lease_duration"], 60, "expiring root");
    let expiring = token_of(&r);
    let before = accessors(&s).await.len();

    // deny: a root token with no TTL, by either endpoint, or by inheriting
    // the parent's policies
    for (path, body) in [
        ("auth/token/create-orphan", json!({ "policies": ["root"] })),
        ("auth/token/create", json!({ "policies": ["root"] })),
        ("auth/token/create", json!({})),
        (
            "auth/token/create",
            json!({ "policies": ["root"], "ttl": 0 }),
        ),
        (
            "auth/token/create",
            json!({ "policies": ["root"], "no_parent": true }),
        ),
    ] {
        let r = s.post(path, &expiring.id, body.clone()).await;
        assert_eq!(
            (r.status, &r.body),
            (
                400,
                &json!({ "errors": ["expiring root tokens cannot create non-expiring root tokens"] })
            ),
            "POST {path} {body}: {}",
            r.text
        );
    }
    assert_eq!(
        accessors(&s).await.len(),
        before,
        "a refused create left a token"
    );

    // allow: a root token that expires too
    let r = s
        .post(
            "auth/token/create-orphan",
            &expiring.id,
            json!({ "policies": ["root"], "ttl": "30s" }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_secs(&r.auth()["lease_duration"], 30, "root orphan with ttl");
    assert_eq!(r.auth()["orphan"], true);
    let r = s
        .post(
            "auth/token/create",
            &expiring.id,
            json!({ "policies": ["root"], "ttl": "30s" }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_secs(&r.auth()["lease_duration"], 30, "root child with ttl");
    let r = s
        .post(
            "auth/token/create",
            &expiring.id,
            json!({ "policies": ["root"], "explicit_max_ttl": "20s" }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_secs(
        &r.auth()["lease_duration"],
        20,
        "root child with explicit max",
    );
    // a non-root token without a TTL gets the default one
    let r = s
        .post(
            "auth/token/create",
            &expiring.id,
            json!({ "policies": ["default"] }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_secs(&r.auth()["lease_duration"], MAX_768H, "default child");
    // a non-expiring root may still mint a non-expiring root
    let r = s
        .post(
            "auth/token/create",
            &s.root,
            json!({ "policies": ["root"] }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.auth()["lease_duration"], 0);
}

// ------------------------------------------------------------ 3. use-limited parents

#[tokio::test]
async fn restricted_use_tokens_cannot_create_children() {
    let s = TestServer::dev().await;
    let pol = s.unique("creator");
    s.write_policy(&pol, CREATOR).await;
    let limited = s
        .create_token(&s.root, json!({ "policies": [pol], "num_uses": 5 }))
        .await;
    let unlimited = s.create_token(&s.root, json!({ "policies": [pol] })).await;
    let before = accessors(&s).await.len();

    // deny
    for body in [json!({}), json!({ "num_uses": 1 }), json!({ "ttl": "1h" })] {
        let r = s.post("auth/token/create", &limited.id, body.clone()).await;
        assert_eq!(
            (r.status, &r.body),
            (
                400,
                &json!({ "errors": ["restricted use token cannot generate child tokens"] })
            ),
            "create {body}: {}",
            r.text
        );
    }
    let r = s
        .post("auth/token/create-orphan", &limited.id, json!({}))
        .await;
    assert_error(&r, 400, "restricted use token cannot generate child tokens");
    assert_eq!(
        accessors(&s).await.len(),
        before,
        "a refused create left a token"
    );

    // allow: the same policy without a use limit
    let r = s.post("auth/token/create", &unlimited.id, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let child = token_of(&r);
    assert_eq!(r.auth()["orphan"], false);
    assert_valid(&lookup_self(&s, &child.id).await, &child.id);
    // a child may itself be use-limited; it just cannot have children
    let r = s
        .post("auth/token/create", &unlimited.id, json!({ "num_uses": 3 }))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.auth()["num_uses"], 3);
    let limited_child = token_of(&r);
    let r = s
        .post("auth/token/create", &limited_child.id, json!({}))
        .await;
    assert_error(&r, 400, "restricted use token cannot generate child tokens");
}

// ------------------------------------------------------------ 4. max TTL

#[tokio::test]
async fn ttl_is_capped_at_the_system_max_and_renewals_cannot_extend_it() {
    // --- the default system max, 768h
    let s = TestServer::dev().await;
    let r = s
        .post(
            "auth/token/create",
            &s.root,
            json!({ "policies": ["default"], "ttl": "87600h" }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_secs(&r.auth()["lease_duration"], 2_764_800, "create 87600h");
    assert_eq!(r.body["warnings"], json!([capped("87600h", "768h")]));
    let t = token_of(&r);
    // allow: a TTL within the max is kept, without a warning
    let r = s
        .post(
            "auth/token/create",
            &s.root,
            json!({ "policies": ["default"], "ttl": "1h" }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_secs(&r.auth()["lease_duration"], 3600, "create 1h");
    assert_eq!(r.body["warnings"], Value::Null);

    let r = s
        .post(
            "auth/token/renew-self",
            &t.id,
            json!({ "increment": "87600h" }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_secs(&r.auth()["lease_duration"], 2_764_800, "renew-self 87600h");
    assert_eq!(r.body["warnings"], json!([capped("87600h", "768h")]));
    // an hour later, renewing cannot reach past creation + 768h
    s.clock.advance(Duration::from_secs(3600));
    let r = s
        .post(
            "auth/token/renew-self",
            &t.id,
            json!({ "increment": "87600h" }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_secs(
        &r.auth()["lease_duration"],
        2_764_800 - 3600,
        "renew-self an hour after creation",
    );
    assert_eq!(
        r.body["warnings"].as_array().map(Vec::len),
        Some(1),
        "{}",
        r.text
    );
    drop(s);

    // --- a configured system max: default 1h, max 2h
    let s = TestServer::start(Opts {
        ttl: TtlLimits {
            default_ttl: 3600,
            max_ttl: 7200,
        },
        ..Default::default()
    })
    .await;
    let r = s
        .post(
            "auth/token/create",
            &s.root,
            json!({ "policies": ["default"] }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_secs(&r.auth()["lease_duration"], 3600, "create without ttl");
    assert_eq!(r.body["warnings"], Value::Null);
    let plain = token_of(&r);

    let r = s
        .post(
            "auth/token/create",
            &s.root,
            json!({ "policies": ["default"], "ttl": "3h" }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_secs(&r.auth()["lease_duration"], 7200, "create 3h");
    assert_eq!(r.body["warnings"], json!([capped("3h", "2h")]));
    let long = token_of(&r);

    let r = s
        .post(
            "auth/token/create",
            &s.root,
            json!({ "policies": ["default"], "ttl": "2h" }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_secs(&r.auth()["lease_duration"], 7200, "create 2h");
    assert_eq!(r.body["warnings"], Value::Null);

    // periodic: escapes the system max while renewed within its period
    let r = s
        .post(
            "auth/token/create",
            &s.root,
            json!({ "policies": ["default"], "period": "1h" }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_secs(&r.auth()["lease_duration"], 3600, "periodic create");
    assert_eq!(r.body["warnings"], Value::Null);
    let periodic = token_of(&r);

    async fn renew_periodic(s: &TestServer, t: &Token, at: &str) {
        let r = s
            .post(
                "auth/token/renew-self",
                &t.id,
                json!({ "increment": "87600h" }),
            )
            .await;
        assert_eq!(r.status, 200, "periodic renew at {at}: {}", r.text);
        assert_secs(
            &r.auth()["lease_duration"],
            3600,
            &format!("periodic renew at {at}"),
        );
        assert_eq!(r.body["warnings"], Value::Null, "periodic renew at {at}");
    }

    // t = 30m
    s.clock.advance(Duration::from_secs(1800));
    renew_periodic(&s, &periodic, "30m").await;

    // t = 1h: the 1h token is gone; the capped one may renew only up to 2h
    s.clock.advance(Duration::from_secs(1800));
    assert_denied(&lookup_self(&s, &plain.id).await);
    let r = s
        .post(
            "auth/token/renew-self",
            &long.id,
            json!({ "increment": "2h" }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let lease = r.auth()["lease_duration"].as_i64().unwrap();
    assert!(
        (3599..=3600).contains(&lease),
        "renew-self +2h an hour after creation under max 2h: lease {lease}, expected 3600 (creation + max)"
    );
    let w = r.body["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("no capped warning: {}", r.text));
    assert_eq!(w.len(), 1, "{}", r.text);
    let w = w[0].as_str().unwrap();
    assert!(
        w.starts_with("TTL of \"2h\" exceeded the effective max_ttl of \"")
            && w.ends_with("\"; TTL value is capped accordingly"),
        "{w}"
    );
    // renewing without an increment (its creation TTL) is capped the same way
    let r = s.post("auth/token/renew-self", &long.id, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let lease = r.auth()["lease_duration"].as_i64().unwrap();
    assert!((3599..=3600).contains(&lease), "renew-self: lease {lease}");
    let r = lookup_self(&s, &long.id).await;
    assert_valid(&r, &long.id);
    let ttl = r.data()["ttl"].as_i64().unwrap();
    assert!(ttl <= 3600, "ttl after renewals: {ttl}");
    renew_periodic(&s, &periodic, "1h").await;

    // t = 1h30m
    s.clock.advance(Duration::from_secs(1800));
    renew_periodic(&s, &periodic, "1h30m").await;

    // t = 2h + 1s: past creation + max, the capped token is dead
    s.clock.advance(Duration::from_secs(1801));
    assert_denied(&lookup_self(&s, &long.id).await);
    assert_denied(
        &s.post(
            "auth/token/renew-self",
            &long.id,
            json!({ "increment": "1h" }),
        )
        .await,
    );
    assert_error(&root_lookup(&s, &long.id).await, 403, "bad token");
    // the periodic token lives on past the max
    assert_valid(&lookup_self(&s, &periodic.id).await, &periodic.id);
    renew_periodic(&s, &periodic, "2h").await;

    // t = 3h less a margin: the test's clock is the wall clock plus an
    // offset, so renewing a second before expiry fails on a loaded machine
    s.clock.advance(Duration::from_secs(3500));
    renew_periodic(&s, &periodic, "3h").await;
    let r = lookup_self(&s, &periodic.id).await;
    assert_valid(&r, &periodic.id);
    assert_eq!(r.data()["period"], 3600);
}

// ------------------------------------------------------------ 5. expired parents

#[tokio::test]
async fn children_die_with_an_expired_parent_at_once() {
    let s = TestServer::dev().await;
    let pol = s.unique("creator");
    s.write_policy(&pol, CREATOR).await;
    let parent = s
        .create_token(&s.root, json!({ "policies": [pol], "ttl": "10m" }))
        .await;
    let child = s.create_token(&parent.id, json!({ "ttl": "1h" })).await;
    let grandchild = s.create_token(&child.id, json!({ "ttl": "1h" })).await;
    let r = s
        .post(
            "auth/token/create-orphan",
            &parent.id,
            json!({ "ttl": "1h" }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let parents_orphan = token_of(&r);
    let sibling = s.create_token(&s.root, json!({ "policies": [pol] })).await;
    let r = s
        .post(
            "auth/token/create-orphan",
            &sibling.id,
            json!({ "ttl": "1h" }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.auth()["orphan"], true);
    let siblings_orphan = token_of(&r);
    let siblings_child = s.create_token(&sibling.id, json!({ "ttl": "1h" })).await;

    // allow side: everything is alive before the parent expires
    for t in [
        &parent,
        &child,
        &grandchild,
        &parents_orphan,
        &sibling,
        &siblings_orphan,
        &siblings_child,
    ] {
        assert_valid(&lookup_self(&s, &t.id).await, &t.id);
    }
    let r = lookup_self(&s, &child.id).await;
    let ttl = r.data()["ttl"].as_i64().unwrap();
    assert!(ttl > 600, "a child keeps its own TTL: {ttl}");

    s.clock.advance(Duration::from_secs(11 * 60));

    // the first request after the expiry is the child's own: refused at once
    assert_denied(&lookup_self(&s, &child.id).await);
    assert_error(&root_lookup(&s, &child.id).await, 403, "bad token");
    assert_denied(&lookup_self(&s, &grandchild.id).await);
    assert_error(&root_lookup(&s, &grandchild.id).await, 403, "bad token");
    let r = s
        .post(
            "auth/token/lookup-accessor",
            &s.root,
            json!({ "accessor": child.accessor }),
        )
        .await;
    assert_error(&r, 400, "invalid accessor");
    assert_denied(&s.post("auth/token/create", &child.id, json!({})).await);
    assert_denied(&lookup_self(&s, &parent.id).await);
    assert_error(&root_lookup(&s, &parent.id).await, 403, "bad token");

    // orphans and the sibling's family are unaffected
    for t in [&parents_orphan, &sibling, &siblings_orphan, &siblings_child] {
        assert_valid(&lookup_self(&s, &t.id).await, &t.id);
        assert_eq!(root_lookup(&s, &t.id).await.status, 200);
    }
}

/// The same with the grandchild asked first: the whole chain is checked, not
/// only the direct parent.
#[tokio::test]
async fn grandchildren_die_with_an_expired_grandparent_at_once() {
    let s = TestServer::dev().await;
    let pol = s.unique("creator");
    s.write_policy(&pol, CREATOR).await;
    let parent = s
        .create_token(&s.root, json!({ "policies": [pol], "ttl": "10m" }))
        .await;
    let child = s.create_token(&parent.id, json!({ "ttl": "1h" })).await;
    let grandchild = s.create_token(&child.id, json!({ "ttl": "1h" })).await;
    assert_valid(&lookup_self(&s, &grandchild.id).await, &grandchild.id);

    s.clock.advance(Duration::from_secs(11 * 60));
    assert_error(&root_lookup(&s, &grandchild.id).await, 403, "bad token");
    assert_denied(&lookup_self(&s, &grandchild.id).await);
    assert_denied(&lookup_self(&s, &child.id).await);
}

// ------------------------------------------------------------ 6. query-string credentials

#[tokio::test]
async fn credentials_in_the_query_string_are_ignored_on_post() {
    let s = TestServer::dev().await;
    let x = s
        .create_token(&s.root, json!({ "policies": ["default"] }))
        .await;
    let y = s
        .create_token(&s.root, json!({ "policies": ["default"] }))
        .await;

    // deny: POST with the target only in the query string, empty body
    let r = s
        .call(
            "POST",
            &format!("auth/token/revoke?token={}", x.id),
            Some(&s.root),
            None,
        )
        .await;
    assert_error(&r, 400, "missing token");
    assert_valid(&lookup_self(&s, &x.id).await, &x.id);
    let r = s
        .call(
            "POST",
            &format!("auth/token/revoke-accessor?accessor={}", x.accessor),
            Some(&s.root),
            None,
        )
        .await;
    assert_error(&r, 400, "missing accessor");
    assert_valid(&lookup_self(&s, &x.id).await, &x.id);
    let r = s
        .call(
            "PUT",
            &format!("auth/token/revoke-orphan?token={}", x.id),
            Some(&s.root),
            None,
        )
        .await;
    assert_error(&r, 400, "missing token");
    assert_valid(&lookup_self(&s, &x.id).await, &x.id);
    let r = s
        .call(
            "POST",
            &format!("auth/token/lookup?token={}", x.id),
            Some(&s.root),
            None,
        )
        .await;
    assert_error(&r, 400, "missing token");
    // a body is what counts when both are given
    let r = s
        .post(
            &format!("auth/token/revoke?token={}", x.id),
            &s.root,
            json!({ "token": y.id }),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_valid(&lookup_self(&s, &x.id).await, &x.id);
    assert_denied(&lookup_self(&s, &y.id).await);

    // allow: GET reads the query string
    let r = s
        .get(&format!("auth/token/lookup?token={}", x.id), &s.root)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["id"], x.id);
    assert_eq!(r.data()["accessor"], x.accessor);

    // allow: the body forms revoke
    let z = s
        .create_token(&s.root, json!({ "policies": ["default"] }))
        .await;
    let r = s
        .post("auth/token/revoke", &s.root, json!({ "token": x.id }))
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    assert_denied(&lookup_self(&s, &x.id).await);
    let r = s
        .post(
            "auth/token/revoke-accessor",
            &s.root,
            json!({ "accessor": z.accessor }),
        )
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    assert_denied(&lookup_self(&s, &z.id).await);
}

// ------------------------------------------------------------ 7. duration overflow

#[tokio::test]
async fn durations_overflow_is_refused() {
    let s = TestServer::dev().await;
    let too_large = |f: &str| format!("field \"{f}\": duration too large");
    let invalid = |f: &str| format!("field \"{f}\": invalid duration");
    let negative = |f: &str| format!("field \"{f}\": a duration cannot be negative");
    // (value, which message) for one field
    let cases = |f: &str| -> Vec<(Value, String)> {
        vec![
            (json!(i64::MAX), too_large(f)),
            (json!(u64::MAX), too_large(f)),
            (json!(1e19), too_large(f)),
            (json!("9223372036854775807"), too_large(f)),
            // Go's time.ParseDuration refuses a string past its range
            (json!("9223372036854775807s"), invalid(f)),
            (json!("2562048h"), too_large(f)),
            (json!(9_223_372_037i64), too_large(f)),
            (json!(-1), negative(f)),
        ]
    };

    // --- token create: nothing is created
    let before = accessors(&s).await;
    for field in ["ttl", "explicit_max_ttl", "period"] {
        for (v, msg) in cases(field) {
            let body = json!({ "policies": ["default"], field: v });
            let r = s.post("auth/token/create", &s.root, body.clone()).await;
            assert_eq!(
                (r.status, &r.body),
                (400, &json!({ "errors": [msg] })),
                "create {body}: {}",
                r.text
            );
        }
    }
    assert_eq!(accessors(&s).await, before, "a refused create left a token");

    // allow: the largest representable durations are accepted (and capped)
    let r = s
        .post(
            "auth/token/create",
            &s.root,
            json!({ "policies": ["default"], "ttl": 9_223_372_036i64 }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_secs(&r.auth()["lease_duration"], MAX_768H, "ttl at the limit");
    assert_eq!(
        r.body["warnings"],
        json!([capped("2562047h47m16s", "768h")])
    );
    let r = s
        .post(
            "auth/token/create",
            &s.root,
            json!({ "policies": ["default"], "ttl": "2562047h" }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_secs(&r.auth()["lease_duration"], MAX_768H, "ttl 2562047h");
    assert_eq!(r.body["warnings"], json!([capped("2562047h", "768h")]));
    let r = s
        .post(
            "auth/token/create",
            &s.root,
            json!({ "policies": ["default"], "explicit_max_ttl": "2562047h" }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_secs(
        &r.auth()["lease_duration"],
        MAX_768H,
        "explicit max 2562047h",
    );

    // --- renew: refused by every endpoint, the expiry unchanged
    let t = s
        .create_token(&s.root, json!({ "policies": ["default"], "ttl": "1h" }))
        .await;
    for (v, msg) in cases("increment") {
        let r = s
            .post("auth/token/renew-self", &t.id, json!({ "increment": v }))
            .await;
        assert_eq!(
            (r.status, &r.body),
            (400, &json!({ "errors": [msg.clone()] })),
            "renew-self increment {v}: {}",
            r.text
        );
        let r = s
            .post(
                "auth/token/renew",
                &s.root,
                json!({ "token": t.id, "increment": v }),
            )
            .await;
        assert_eq!(
            (r.status, &r.body),
            (400, &json!({ "errors": [msg.clone()] })),
            "renew increment {v}: {}",
            r.text
        );
        let r = s
            .post(
                "auth/token/renew-accessor",
                &s.root,
                json!({ "accessor": t.accessor, "increment": v }),
            )
            .await;
        assert_eq!(
            (r.status, &r.body),
            (400, &json!({ "errors": [msg] })),
            "renew-accessor increment {v}: {}",
            r.text
        );
    }
    let r = lookup_self(&s, &t.id).await;
    assert_valid(&r, &t.id);
    let ttl = r.data()["ttl"].as_i64().unwrap();
    assert!(
        (3599..=3600).contains(&ttl),
        "ttl after refused renewals: {ttl}"
    );
    // allow: the largest string increment renews, capped
    let r = s
        .post(
            "auth/token/renew-self",
            &t.id,
            json!({ "increment": "2562047h" }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_secs(&r.auth()["lease_duration"], MAX_768H, "renew 2562047h");

    // --- KV v2 delete_version_after, on a key's metadata and mount-wide
    let dva_too_large = too_large("delete_version_after");
    let dva_cases: Vec<(Value, String)> = vec![
        (
            json!("9223372036854775807s"),
            invalid("delete_version_after"),
        ),
        (json!(i64::MAX), dva_too_large.clone()),
        (json!("2562048h"), dva_too_large.clone()),
        // fits a duration, but not added to the current time in nanoseconds
        (json!("2562047h"), dva_too_large.clone()),
        (json!(-1), negative("delete_version_after")),
    ];
    for (v, msg) in &dva_cases {
        let r = s
            .post(
                "secret/metadata/dva",
                &s.root,
                json!({ "delete_version_after": v }),
            )
            .await;
        assert_eq!(
            (r.status, &r.body),
            (400, &json!({ "errors": [msg] })),
            "metadata delete_version_after {v}: {}",
            r.text
        );
        let r = s
            .post(
                "secret/config",
                &s.root,
                json!({ "delete_version_after": v }),
            )
            .await;
        assert_eq!(
            (r.status, &r.body),
            (400, &json!({ "errors": [msg] })),
            "config delete_version_after {v}: {}",
            r.text
        );
    }
    assert_empty_404(&s.get("secret/metadata/dva", &s.root).await);
    let r = s.get("secret/config", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["delete_version_after"], "0s");
    // a later write's version is not deleted on creation
    s.kv_put("dva", json!({ "k": "v" })).await;
    let r = s.get("secret/data/dva", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["data"], json!({ "k": "v" }));
    assert_eq!(r.data()["metadata"]["deletion_time"], "");

    // allow: a sane value sets a future deletion time, on a key and mount-wide
    let in_the_future = |r: &Resp, ctx: &str| {
        let now = palisade_core::now_nanos();
        let lo = palisade_core::rfc3339(now + 59 * 60 * 1_000_000_000);
        let hi = palisade_core::rfc3339(now + 61 * 60 * 1_000_000_000);
        let d = r.data()["metadata"]["deletion_time"]
            .as_str()
            .unwrap_or_else(|| panic!("{ctx}: {}", r.text))
            .to_string();
        assert!(
            lo.as_str() < d.as_str() && d.as_str() < hi.as_str(),
            "{ctx}: deletion_time {d} not about an hour from now"
        );
    };
    let r = s
        .post(
            "secret/metadata/hourly",
            &s.root,
            json!({ "delete_version_after": "1h" }),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(
        s.get("secret/metadata/hourly", &s.root).await.data()["delete_version_after"],
        "1h0m0s"
    );
    s.kv_put("hourly", json!({ "k": "v" })).await;
    let r = s.get("secret/data/hourly", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    in_the_future(&r, "metadata 1h");

    let r = s
        .post(
            "secret/config",
            &s.root,
            json!({ "delete_version_after": "1h" }),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(
        s.get("secret/config", &s.root).await.data()["delete_version_after"],
        "1h0m0s"
    );
    s.kv_put("mountwide", json!({ "k": "v" })).await;
    let r = s.get("secret/data/mountwide", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    in_the_future(&r, "config 1h");

    // allow: a very large value that still fits is accepted, versions live
    let r = s
        .post(
            "secret/metadata/forever",
            &s.root,
            json!({ "delete_version_after": "2000000h" }),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    s.kv_put("forever", json!({ "k": "v" })).await;
    let r = s.get("secret/data/forever", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let d = r.data()["metadata"]["deletion_time"].as_str().unwrap();
    let now = palisade_core::rfc3339(palisade_core::now_nanos());
    assert!(d > now.as_str(), "deletion_time {d} is not in the future");
}

// ------------------------------------------------------------ 8. KV PATCH and cas_required

/// Refused PATCHes leave the key at version `v` with `data`.
async fn assert_kv_at(s: &TestServer, key: &str, v: u64, data: Value) {
    let r = s.get(&format!("secret/data/{key}"), &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["data"], data, "{key}");
    assert_eq!(r.data()["metadata"]["version"], v, "{key}");
    let r = s.get(&format!("secret/metadata/{key}"), &s.root).await;
    assert_eq!(r.data()["current_version"], v, "{key}");
}

async fn patch_cas_rules(s: &TestServer, key: &str) {
    let path = format!("secret/data/{key}");
    // deny: no cas
    let r = s
        .patch(&path, &s.root, json!({ "data": { "b": "2" } }))
        .await;
    assert_error(&r, 400, "check-and-set parameter required for this call");
    let r = s
        .patch(
            &path,
            &s.root,
            json!({ "data": { "b": "2" }, "options": {} }),
        )
        .await;
    assert_error(&r, 400, "check-and-set parameter required for this call");
    assert_kv_at(s, key, 1, json!({ "a": "1" })).await;
    // deny: a wrong cas
    for cas in [0, 2, 7] {
        let r = s
            .patch(
                &path,
                &s.root,
                json!({ "data": { "b": "2" }, "options": { "cas": cas } }),
            )
            .await;
        assert_error(
            &r,
            400,
            "check-and-set parameter did not match the current version",
        );
    }
    assert_kv_at(s, key, 1, json!({ "a": "1" })).await;
    // a plain write is held to the same rule
    let r = s
        .post(&path, &s.root, json!({ "data": { "x": "y" } }))
        .await;
    assert_error(&r, 400, "check-and-set parameter required for this call");
    assert_kv_at(s, key, 1, json!({ "a": "1" })).await;

    // allow: the right cas
    let r = s
        .patch(
            &path,
            &s.root,
            json!({ "data": { "b": "2" }, "options": { "cas": 1 } }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["version"], 2);
    assert_kv_at(s, key, 2, json!({ "a": "1", "b": "2" })).await;
    // and the old version no longer matches
    let r = s
        .patch(
            &path,
            &s.root,
            json!({ "data": { "c": "3" }, "options": { "cas": 1 } }),
        )
        .await;
    assert_error(
        &r,
        400,
        "check-and-set parameter did not match the current version",
    );
    assert_kv_at(s, key, 2, json!({ "a": "1", "b": "2" })).await;
}

#[tokio::test]
async fn kv_patch_honours_cas_required() {
    // --- mount-wide
    let s = TestServer::dev().await;
    let r = s
        .post("secret/config", &s.root, json!({ "cas_required": true }))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .post(
            "secret/data/mount",
            &s.root,
            json!({ "data": { "a": "1" }, "options": { "cas": 0 } }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["version"], 1);
    patch_cas_rules(&s, "mount").await;
    drop(s);

    // --- per key
    let s = TestServer::dev().await;
    s.kv_put("perkey", json!({ "a": "1" })).await;
    s.kv_put("free", json!({ "a": "1" })).await;
    let r = s
        .post(
            "secret/metadata/perkey",
            &s.root,
            json!({ "cas_required": true }),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(
        s.get("secret/metadata/perkey", &s.root).await.data()["cas_required"],
        true
    );
    patch_cas_rules(&s, "perkey").await;

    // allow: a key without cas_required patches without cas
    let r = s
        .patch("secret/data/free", &s.root, json!({ "data": { "b": "2" } }))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["version"], 2);
    assert_kv_at(&s, "free", 2, json!({ "a": "1", "b": "2" })).await;
}

/// A period or explicit max TTL above the system max is capped with Vault's
/// warning: a periodic token lives while it is renewed, never 292 years on
/// one period; lookups show a real expiry time.
#[tokio::test]
async fn period_and_explicit_max_ttl_are_capped_at_the_system_max() {
    let s = TestServer::dev().await;
    let r = s
        .post(
            "auth/token/create",
            &s.root,
            json!({"period": "2562047h", "policies": ["default"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["warnings"],
        json!([
            "period of \"2562047h\" exceeded the effective max_ttl of \"768h\"; period value is capped accordingly"
        ])
    );
    let lease = r.auth()["lease_duration"].as_i64().unwrap();
    assert!((768 * 3600 - 1..=768 * 3600).contains(&lease), "{lease}");
    let id = r.auth()["client_token"].as_str().unwrap().to_string();
    let l = s.get("auth/token/lookup-self", &id).await;
    assert_eq!(l.data()["period"], 768 * 3600);
    let expire = l.data()["expire_time"].as_str().unwrap().to_string();
    assert!(expire.starts_with("20"), "{expire}");

    let r = s
        .post(
            "auth/token/create",
            &s.root,
            json!({"explicit_max_ttl": "1000h", "policies": ["default"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["warnings"],
        json!([
            "explicit_max_ttl of \"1000h\" exceeded the effective max_ttl of \"768h\"; explicit_max_ttl value is capped accordingly"
        ])
    );
    // allow: within the max, no warning
    let r = s
        .post(
            "auth/token/create",
            &s.root,
            json!({"period": "1h", "policies": ["default"]}),
        )
        .await;
    assert_eq!(r.body["warnings"], serde_json::Value::Null, "{}", r.text);
}
