//! `auth/token/*` over HTTP: create (child, orphan, options), lookup, renew,
//! revoke (tree, self, accessor, orphan), accessors, and how the token is sent.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use common::*;
use serde_json::{Value, json};

const DEFAULT_TTL: i64 = 768 * 3600;

async fn lookup(s: &TestServer, token: &str) -> Resp {
    s.post("auth/token/lookup", &s.root, json!({ "token": token }))
        .await
}

async fn alive(s: &TestServer, token: &str) -> bool {
    let r = lookup(s, token).await;
    match r.status {
        200 => true,
        403 => {
            assert_eq!(r.body, json!({"errors": ["bad token"]}));
            false
        }
        other => panic!("lookup: {other} {}", r.text),
    }
}

/// A policy letting a token create children and nothing else.
const CREATOR: &str = r#"path "auth/token/create" { capabilities = ["update"] }"#;

// ------------------------------------------------------------ create

#[tokio::test]
async fn create_child_token() {
    let s = TestServer::dev().await;
    s.write_policy("p1", r#"path "secret/data/p1" { capabilities = ["read"] }"#)
        .await;
    let r = s
        .post(
            "auth/token/create",
            &s.root,
            json!({"policies": ["p1"], "display_name": "Test App", "meta": {"team": "blue"},
                   "renewable": true}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_envelope(&r);
    assert_eq!(r.body["data"], Value::Null);
    let a = r.auth();
    for k in [
        "client_token",
        "accessor",
        "policies",
        "token_policies",
        "metadata",
        "lease_duration",
        "renewable",
        "entity_id",
        "token_type",
        "orphan",
        "num_uses",
    ] {
        assert!(a.get(k).is_some(), "auth lacks {k}: {}", r.text);
    }
    let id = a["client_token"].as_str().unwrap();
    assert!(id.starts_with("hvs."), "{id}");
    assert_eq!(a["policies"], json!(["default", "p1"]));
    assert_eq!(a["token_policies"], json!(["default", "p1"]));
    assert_eq!(a["metadata"], json!({"team": "blue"}));
    assert_eq!(a["lease_duration"], DEFAULT_TTL);
    assert_eq!(
        (
            &a["renewable"],
            &a["orphan"],
            &a["num_uses"],
            &a["token_type"]
        ),
        (&json!(true), &json!(false), &json!(0), &json!("service"))
    );

    // lookup-self as the child (default policy allows it)
    let r = s.get("auth/token/lookup-self", id).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_envelope(&r);
    let d = r.data();
    for k in [
        "accessor",
        "creation_time",
        "creation_ttl",
        "display_name",
        "entity_id",
        "expire_time",
        "explicit_max_ttl",
        "id",
        "issue_time",
        "meta",
        "num_uses",
        "orphan",
        "path",
        "policies",
        "renewable",
        "ttl",
        "type",
    ] {
        assert!(d.get(k).is_some(), "lookup-self lacks {k}: {}", r.text);
    }
    assert_eq!(d["id"], id);
    assert_eq!(d["accessor"], a["accessor"]);
    assert_eq!(d["display_name"], "token-TestApp");
    assert_eq!(d["meta"], json!({"team": "blue"}));
    assert_eq!(d["path"], "auth/token/create");
    assert_eq!(d["creation_ttl"], DEFAULT_TTL);
    let ttl = d["ttl"].as_i64().unwrap();
    assert!(ttl > DEFAULT_TTL - 60 && ttl <= DEFAULT_TTL, "{ttl}");
    assert!(d["expire_time"].is_string());

    // unknown policies give a warning, not an error
    let r = s
        .post("auth/token/create", &s.root, json!({"policies": ["ghost"]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["warnings"],
        json!(["Policy \"ghost\" does not exist"])
    );
}

#[tokio::test]
async fn create_deny_and_subset_rule() {
    let s = TestServer::dev().await;
    s.write_policy("creator", CREATOR).await;
    s.write_policy("p1", r#"path "secret/data/p1" { capabilities = ["read"] }"#)
        .await;
    s.write_policy("p2", r#"path "secret/data/p2" { capabilities = ["read"] }"#)
        .await;

    // deny: no capability on auth/token/create
    let nothing = s.powerless_token().await;
    let r = s.post("auth/token/create", &nothing.id, json!({})).await;
    assert_denied(&r);
    assert!(!r.text.contains("hvs."));

    // allow: a child with the parent's policies (or fewer)
    let parent = s
        .create_token(&s.root, json!({"policies": ["creator", "p1"]}))
        .await;
    let r = s
        .post("auth/token/create", &parent.id, json!({"policies": ["p1"]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.auth()["policies"], json!(["default", "p1"]));
    let r = s.post("auth/token/create", &parent.id, json!({})).await;
    assert_eq!(r.auth()["policies"], json!(["creator", "default", "p1"]));

    // deny: a policy the parent does not hold, or root
    for p in [json!(["p2"]), json!(["p1", "p2"])] {
        let r = s
            .post("auth/token/create", &parent.id, json!({"policies": p}))
            .await;
        assert_error(&r, 400, "child policies must be subset of parent");
    }
    let r = s
        .post(
            "auth/token/create",
            &parent.id,
            json!({"policies": ["root"]}),
        )
        .await;
    assert_error(&r, 400, "child policies must be subset of parent");
    let r = s
        .post("auth/token/create", &parent.id, json!({"id": "custom-id"}))
        .await;
    assert_error(
        &r,
        400,
        "root or sudo privileges required to specify token id",
    );
    assert!(!alive(&s, "custom-id").await);

    // sudo on the create path lifts the subset rule (Vault's rule)
    let sudo_parent = s
        .token_with(r#"path "auth/token/create" { capabilities = ["update", "sudo"] }"#)
        .await;
    let r = s
        .post(
            "auth/token/create",
            &sudo_parent.id,
            json!({"policies": ["p2"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .post(
            "auth/token/create",
            &sudo_parent.id,
            json!({"policies": ["root"]}),
        )
        .await;
    assert_error(
        &r,
        400,
        "root or sudo privileges required to create a token with root policy",
    );

    // root may choose the id; a duplicate is refused
    let r = s
        .post(
            "auth/token/create",
            &s.root,
            json!({"id": "custom-id", "policies": ["p1"]}),
        )
        .await;
    assert_eq!(r.auth()["client_token"], "custom-id");
    let r = s
        .post("auth/token/create", &s.root, json!({"id": "custom-id"}))
        .await;
    assert_error(&r, 400, "cannot create a token with a duplicate ID");
    let r = s
        .post("auth/token/create", &s.root, json!({"type": "batch"}))
        .await;
    assert_error(
        &r,
        400,
        "unsupported token type: only service tokens are available",
    );
}

#[tokio::test]
async fn create_orphan_needs_sudo() {
    let s = TestServer::dev().await;
    let update_only = s
        .token_with(
            r#"
path "auth/token/create-orphan" { capabilities = ["update"] }
path "auth/token/create" { capabilities = ["update"] }
"#,
        )
        .await;
    let nothing = s.powerless_token().await;
    let sudo = s
        .token_with(r#"path "auth/token/create-orphan" { capabilities = ["update", "sudo"] }"#)
        .await;

    assert_denied(
        &s.post("auth/token/create-orphan", &nothing.id, json!({}))
            .await,
    );
    let r = s
        .post("auth/token/create-orphan", &update_only.id, json!({}))
        .await;
    assert_error(
        &r,
        400,
        "root or sudo privileges required to create orphan token",
    );
    let r = s
        .post(
            "auth/token/create",
            &update_only.id,
            json!({"no_parent": true}),
        )
        .await;
    assert_error(
        &r,
        400,
        "root or sudo privileges required to create orphan token",
    );

    let r = s
        .post("auth/token/create-orphan", &sudo.id, json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.auth()["orphan"], true);
    let orphan = r.auth()["client_token"].as_str().unwrap().to_string();
    let d = lookup(&s, &orphan).await;
    assert_eq!(d.data()["orphan"], true);
    assert_eq!(d.data()["path"], "auth/token/create-orphan");
    // an orphan survives its creator's revocation
    let r = s
        .post("auth/token/revoke", &s.root, json!({"token": sudo.id}))
        .await;
    assert_eq!(r.status, 204);
    assert!(alive(&s, &orphan).await);

    let r = s
        .post("auth/token/create", &s.root, json!({"no_parent": true}))
        .await;
    assert_eq!(r.auth()["orphan"], true);
}

#[tokio::test]
async fn create_options() {
    let s = TestServer::dev().await;
    s.write_policy("p1", r#"path "secret/data/p1" { capabilities = ["read"] }"#)
        .await;

    // ttl
    let r = s
        .post(
            "auth/token/create",
            &s.root,
            json!({"ttl": "1h", "policies": ["p1"]}),
        )
        .await;
    assert_eq!(r.auth()["lease_duration"], 3600);
    let t = r.auth()["client_token"].as_str().unwrap().to_string();
    let d = lookup(&s, &t).await;
    assert_eq!(d.data()["creation_ttl"], 3600);
    assert!(d.data()["ttl"].as_i64().unwrap() <= 3600);

    // explicit_max_ttl caps ttl and renewals
    let r = s
        .post(
            "auth/token/create",
            &s.root,
            json!({"ttl": "1h", "explicit_max_ttl": 600, "policies": ["p1"]}),
        )
        .await;
    assert_eq!(r.auth()["lease_duration"], 600);
    let capped = r.auth()["client_token"].as_str().unwrap().to_string();
    assert_eq!(lookup(&s, &capped).await.data()["explicit_max_ttl"], 600);
    let r = s
        .post(
            "auth/token/renew",
            &s.root,
            json!({"token": capped, "increment": "2h"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.auth()["lease_duration"].as_i64().unwrap() <= 600,
        "{}",
        r.text
    );

    // num_uses: the token dies after N uses
    let r = s
        .post(
            "auth/token/create",
            &s.root,
            json!({"num_uses": 2, "policies": ["p1"]}),
        )
        .await;
    assert_eq!(r.auth()["num_uses"], 2);
    let limited = r.auth()["client_token"].as_str().unwrap().to_string();
    s.kv_put("p1", json!({"k": "v"})).await;
    assert_eq!(s.get("secret/data/p1", &limited).await.status, 200);
    assert_eq!(s.get("secret/data/p1", &limited).await.status, 200);
    let r = s.get("secret/data/p1", &limited).await;
    assert_denied(&r);
    assert!(!r.text.contains("\"v\""));
    assert!(!alive(&s, &limited).await);

    // every authorised request counts, renew-self included (a renewal must not
    // write back a stale entry that still holds the use it consumed)
    let r = s
        .post(
            "auth/token/create",
            &s.root,
            json!({"num_uses": 3, "policies": ["p1"]}),
        )
        .await;
    let three = r.auth()["client_token"].as_str().unwrap().to_string();
    assert_eq!(s.get("secret/data/p1", &three).await.status, 200);
    let r = s.post("auth/token/renew-self", &three, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(lookup(&s, &three).await.data()["num_uses"], 1);
    assert_eq!(s.get("secret/data/p1", &three).await.status, 200);
    assert_denied(&s.get("secret/data/p1", &three).await);

    // period (root may), renewals reset to the period
    let r = s
        .post(
            "auth/token/create",
            &s.root,
            json!({"period": "2h", "policies": ["p1"]}),
        )
        .await;
    assert_eq!(r.auth()["lease_duration"], 7200);
    let periodic = r.auth()["client_token"].as_str().unwrap().to_string();
    assert_eq!(lookup(&s, &periodic).await.data()["period"], 7200);
    let r = s
        .post("auth/token/renew-self", &periodic, json!({"increment": 60}))
        .await;
    assert_eq!(r.auth()["lease_duration"], 7200, "{}", r.text);
    // period needs root or sudo
    let creator = s.token_with(CREATOR).await;
    let r = s
        .post("auth/token/create", &creator.id, json!({"period": "2h"}))
        .await;
    assert_error(
        &r,
        400,
        "root or sudo privileges required to create periodic token",
    );

    // no_default_policy, display_name, meta
    let r = s
        .post(
            "auth/token/create",
            &s.root,
            json!({"policies": ["p1"], "no_default_policy": true, "display_name": "ci-bot",
                   "meta": {"owner": "ci"}}),
        )
        .await;
    assert_eq!(r.auth()["policies"], json!(["p1"]));
    let t = r.auth()["client_token"].as_str().unwrap().to_string();
    let d = lookup(&s, &t).await;
    assert_eq!(d.data()["policies"], json!(["p1"]));
    assert_eq!(d.data()["display_name"], "token-ci-bot");
    assert_eq!(d.data()["meta"], json!({"owner": "ci"}));
    // without default, lookup-self is denied
    assert_denied(&s.get("auth/token/lookup-self", &t).await);

    // renewable=false
    let r = s
        .post(
            "auth/token/create",
            &s.root,
            json!({"renewable": false, "policies": ["p1"]}),
        )
        .await;
    assert_eq!(r.auth()["renewable"], false);
    let fixed = r.auth()["client_token"].as_str().unwrap().to_string();
    let r = s.post("auth/token/renew-self", &fixed, json!({})).await;
    assert_error(&r, 400, "lease is not renewable");

    // negative and malformed values
    let r = s
        .post("auth/token/create", &s.root, json!({"num_uses": -1}))
        .await;
    assert_error(&r, 400, "num_uses cannot be negative");
    let r = s
        .post("auth/token/create", &s.root, json!({"ttl": "forever"}))
        .await;
    assert_error(&r, 400, "field \"ttl\": invalid duration");
    let r = s
        .post("auth/token/create", &s.root, json!({"meta": ["x"]}))
        .await;
    assert_error(&r, 400, "meta must be a map of strings");
}

// ------------------------------------------------------------ lookup

#[tokio::test]
async fn lookup_by_token_and_accessor() {
    let s = TestServer::dev().await;
    let target = s.create_token(&s.root, json!({})).await;
    let looker = s
        .token_with(
            r#"
path "auth/token/lookup" { capabilities = ["update", "read"] }
path "auth/token/lookup-accessor" { capabilities = ["update"] }
"#,
        )
        .await;
    let nothing = s.powerless_token().await;

    // lookup allow
    let r = s
        .post("auth/token/lookup", &looker.id, json!({"token": target.id}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["id"], target.id);
    assert_eq!(r.data()["accessor"], target.accessor);
    let r = s
        .get(
            &format!("auth/token/lookup?token={}", target.id),
            &looker.id,
        )
        .await;
    assert_eq!(r.data()["id"], target.id);
    // a token that does not exist, is not a token at all, or was revoked:
    // 403 `bad token`, as Vault (the same by POST and by GET ?token=)
    let revoked = s.create_token(&s.root, json!({})).await;
    let r = s
        .post(
            "auth/token/revoke-accessor",
            &s.root,
            json!({"accessor": revoked.accessor}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    for bad in [
        "hvs.nope",
        "nonsense",
        "hvs.AAAAAAAAAAAAAAAAAAAAAAAA",
        &revoked.id,
    ] {
        let r = s
            .post("auth/token/lookup", &looker.id, json!({"token": bad}))
            .await;
        assert_error(&r, 403, "bad token");
        let r = s
            .get(&format!("auth/token/lookup?token={bad}"), &looker.id)
            .await;
        assert_error(&r, 403, "bad token");
    }
    // the 403 is about the token looked up, not the caller's
    let r = s
        .post("auth/token/lookup", &looker.id, json!({"token": target.id}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.post("auth/token/lookup", &looker.id, json!({})).await;
    assert_error(&r, 400, "missing token");
    // lookup deny
    let r = s
        .post(
            "auth/token/lookup",
            &nothing.id,
            json!({"token": target.id}),
        )
        .await;
    assert_denied(&r);
    assert!(!r.text.contains(&target.accessor));

    // lookup-accessor allow: never returns the token id
    let r = s
        .post(
            "auth/token/lookup-accessor",
            &looker.id,
            json!({"accessor": target.accessor}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["accessor"], target.accessor);
    assert_eq!(r.data()["id"], "");
    assert!(!r.text.contains(&target.id), "{}", r.text);
    // an unknown or revoked accessor: 400 `invalid accessor` (Vault answers
    // 400 here, unlike lookup's 403)
    for bad in ["nope", revoked.accessor.as_str()] {
        let r = s
            .post(
                "auth/token/lookup-accessor",
                &looker.id,
                json!({"accessor": bad}),
            )
            .await;
        assert_error(&r, 400, "invalid accessor");
    }
    // lookup-accessor deny
    let r = s
        .post(
            "auth/token/lookup-accessor",
            &nothing.id,
            json!({"accessor": target.accessor}),
        )
        .await;
    assert_denied(&r);

    // lookup-self: allow via default, deny without it
    let r = s.get("auth/token/lookup-self", &target.id).await;
    assert_eq!(r.data()["id"], target.id);
    assert_denied(&s.get("auth/token/lookup-self", &nothing.id).await);
}

// ------------------------------------------------------------ renew

#[tokio::test]
async fn renew_and_renew_self() {
    let s = TestServer::dev().await;
    let target = s.create_token(&s.root, json!({"ttl": "10m"})).await;
    let renewer = s
        .token_with(r#"path "auth/token/renew" { capabilities = ["update"] }"#)
        .await;
    let nothing = s.powerless_token().await;

    // renew allow
    let r = s
        .post(
            "auth/token/renew",
            &renewer.id,
            json!({"token": target.id, "increment": "30m"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_envelope(&r);
    assert_eq!(r.auth()["lease_duration"], 1800);
    assert_eq!(r.auth()["client_token"], target.id);
    assert_eq!(r.auth()["accessor"], target.accessor);
    let ttl = lookup(&s, &target.id).await.data()["ttl"].as_i64().unwrap();
    assert!(ttl > 600 && ttl <= 1800, "{ttl}");
    let r = s
        .post(
            "auth/token/renew",
            &renewer.id,
            json!({"token": "hvs.nope"}),
        )
        .await;
    assert_error(&r, 400, "invalid token");
    // renew deny
    let r = s
        .post(
            "auth/token/renew",
            &nothing.id,
            json!({"token": target.id, "increment": "5h"}),
        )
        .await;
    assert_denied(&r);
    let ttl = lookup(&s, &target.id).await.data()["ttl"].as_i64().unwrap();
    assert!(ttl <= 1800, "{ttl}");

    // renew-self allow (default policy), with an increment; 0 = creation ttl
    let r = s
        .post(
            "auth/token/renew-self",
            &target.id,
            json!({"increment": "1h"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.auth()["lease_duration"], 3600);
    let r = s.post("auth/token/renew-self", &target.id, json!({})).await;
    assert_eq!(r.auth()["lease_duration"], 600);
    // renew-self deny: no default policy
    let r = s
        .post("auth/token/renew-self", &nothing.id, json!({}))
        .await;
    assert_denied(&r);

    // root tokens do not expire and are not renewable
    let r = s.post("auth/token/renew-self", &s.root, json!({})).await;
    assert_error(&r, 400, "lease is not renewable");
}

// ------------------------------------------------------------ revoke

#[tokio::test]
async fn revoke_revokes_children() {
    let s = TestServer::dev().await;
    s.write_policy("creator", CREATOR).await;
    let parent = s
        .create_token(&s.root, json!({"policies": ["creator"]}))
        .await;
    let child = s.create_token(&parent.id, json!({})).await;
    let grandchild = s.create_token(&child.id, json!({})).await;
    let bystander = s.create_token(&s.root, json!({})).await;
    assert_eq!(lookup(&s, &child.id).await.data()["orphan"], false);

    // deny
    let revoker = s
        .token_with(r#"path "auth/token/revoke" { capabilities = ["update"] }"#)
        .await;
    let nothing = s.powerless_token().await;
    assert_denied(
        &s.post(
            "auth/token/revoke",
            &nothing.id,
            json!({"token": parent.id}),
        )
        .await,
    );
    assert!(alive(&s, &parent.id).await);

    // allow
    let r = s
        .post(
            "auth/token/revoke",
            &revoker.id,
            json!({"token": parent.id}),
        )
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    for t in [&parent, &child, &grandchild] {
        assert!(!alive(&s, &t.id).await);
        assert_denied(&s.get("auth/token/lookup-self", &t.id).await);
    }
    assert!(alive(&s, &bystander.id).await);
    // an unknown token: 204 as in Vault
    let r = s
        .post(
            "auth/token/revoke",
            &revoker.id,
            json!({"token": "hvs.unknown"}),
        )
        .await;
    assert_eq!(r.status, 204);
}

#[tokio::test]
async fn revoke_self() {
    let s = TestServer::dev().await;
    let t = s.create_token(&s.root, json!({})).await;
    let child = s.create_token(&s.root, json!({})).await;
    let _ = child;
    let r = s.post("auth/token/revoke-self", &t.id, json!({})).await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    assert!(!alive(&s, &t.id).await);
    assert_denied(&s.get("auth/token/lookup-self", &t.id).await);

    // deny: no default policy
    let nothing = s.powerless_token().await;
    assert_denied(
        &s.post("auth/token/revoke-self", &nothing.id, json!({}))
            .await,
    );
    assert!(alive(&s, &nothing.id).await);
}

#[tokio::test]
async fn revoke_accessor() {
    let s = TestServer::dev().await;
    s.write_policy("creator", CREATOR).await;
    let target = s
        .create_token(&s.root, json!({"policies": ["creator"]}))
        .await;
    let child = s.create_token(&target.id, json!({})).await;
    let revoker = s
        .token_with(r#"path "auth/token/revoke-accessor" { capabilities = ["update"] }"#)
        .await;
    let nothing = s.powerless_token().await;

    assert_denied(
        &s.post(
            "auth/token/revoke-accessor",
            &nothing.id,
            json!({"accessor": target.accessor}),
        )
        .await,
    );
    assert!(alive(&s, &target.id).await);

    let r = s
        .post(
            "auth/token/revoke-accessor",
            &revoker.id,
            json!({"accessor": target.accessor}),
        )
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    assert!(!alive(&s, &target.id).await);
    assert!(!alive(&s, &child.id).await);
    let r = s
        .post(
            "auth/token/revoke-accessor",
            &revoker.id,
            json!({"accessor": target.accessor}),
        )
        .await;
    assert_error(&r, 400, "invalid accessor");
}

#[tokio::test]
async fn revoke_orphan_keeps_children() {
    let s = TestServer::dev().await;
    s.write_policy("creator", CREATOR).await;
    let parent = s
        .create_token(&s.root, json!({"policies": ["creator"]}))
        .await;
    let child = s
        .create_token(&parent.id, json!({"policies": ["creator"]}))
        .await;
    let grandchild = s.create_token(&child.id, json!({})).await;

    // deny: update without sudo, and nothing
    let update_only = s
        .token_with(r#"path "auth/token/revoke-orphan" { capabilities = ["update"] }"#)
        .await;
    let nothing = s.powerless_token().await;
    for t in [&update_only, &nothing] {
        assert_denied(
            &s.post(
                "auth/token/revoke-orphan",
                &t.id,
                json!({"token": parent.id}),
            )
            .await,
        );
    }
    assert!(alive(&s, &parent.id).await);

    // allow
    let sudo = s
        .token_with(r#"path "auth/token/revoke-orphan" { capabilities = ["update", "sudo"] }"#)
        .await;
    let r = s
        .post(
            "auth/token/revoke-orphan",
            &sudo.id,
            json!({"token": parent.id}),
        )
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    assert!(!alive(&s, &parent.id).await);
    let d = lookup(&s, &child.id).await;
    assert_eq!(
        (d.status, &d.data()["orphan"]),
        (200, &json!(true)),
        "{}",
        d.text
    );
    assert_eq!(lookup(&s, &grandchild.id).await.data()["orphan"], false);
    // the child still works, and still owns its own children
    assert_eq!(s.get("auth/token/lookup-self", &child.id).await.status, 200);
    let r = s
        .post("auth/token/revoke", &s.root, json!({"token": child.id}))
        .await;
    assert_eq!(r.status, 204);
    assert!(!alive(&s, &grandchild.id).await);
}

#[tokio::test]
async fn list_accessors_needs_sudo() {
    let s = TestServer::dev().await;
    let a = s.create_token(&s.root, json!({})).await;
    let b = s.create_token(&s.root, json!({})).await;
    let list_only = s
        .token_with(r#"path "auth/token/accessors" { capabilities = ["list"] }"#)
        .await;
    let sudo = s
        .token_with(r#"path "auth/token/accessors" { capabilities = ["list", "sudo"] }"#)
        .await;
    let nothing = s.powerless_token().await;

    for t in [&list_only, &nothing] {
        let r = s.list("auth/token/accessors", &t.id).await;
        assert_denied(&r);
        assert!(!r.text.contains(&a.accessor));
    }
    for r in [
        s.list("auth/token/accessors", &sudo.id).await,
        s.get("auth/token/accessors?list=true", &s.root).await,
    ] {
        assert_eq!(r.status, 200, "{}", r.text);
        let keys = r.data()["keys"].as_array().unwrap();
        assert!(keys.contains(&json!(a.accessor)) && keys.contains(&json!(b.accessor)));
        assert!(!r.text.contains(&a.id) && !r.text.contains(&s.root));
    }
}

// ------------------------------------------------------------ how the token is sent

#[tokio::test]
async fn token_header_and_bearer() {
    let s = TestServer::dev().await;
    let t = s.create_token(&s.root, json!({})).await;
    let get = |headers: Vec<(&'static str, String)>| {
        let s = &s;
        async move {
            s.send("GET", "auth/token/lookup-self", &headers, None)
                .await
        }
    };

    let r = get(vec![("X-Vault-Token", t.id.clone())]).await;
    assert_eq!((r.status, &r.data()["id"]), (200, &json!(t.id)));
    let r = get(vec![("Authorization", format!("Bearer {}", t.id))]).await;
    assert_eq!((r.status, &r.data()["id"]), (200, &json!(t.id)));
    let r = get(vec![("Authorization", format!("bearer {}", t.id))]).await;
    assert_eq!(r.status, 200);
    // X-Vault-Token wins over Authorization
    let r = get(vec![
        ("X-Vault-Token", t.id.clone()),
        ("Authorization", format!("Bearer {}", s.root)),
    ])
    .await;
    assert_eq!(r.data()["id"], t.id);

    // deny: none, wrong scheme, unknown token, revoked token
    assert_denied(&get(vec![]).await);
    assert_denied(&get(vec![("Authorization", format!("Basic {}", t.id))]).await);
    assert_denied(&get(vec![("X-Vault-Token", "hvs.unknown".into())]).await);
    assert_denied(&get(vec![("Authorization", "Bearer hvs.unknown".into())]).await);
    s.post("auth/token/revoke", &s.root, json!({"token": t.id}))
        .await;
    assert_denied(&get(vec![("Authorization", format!("Bearer {}", t.id))]).await);
}

// ------------------------------------------------------------ limited-use tokens under concurrency

/// A token with `num_uses = N` authorises at most N requests, even when many
/// arrive at once (Vault decrements the count under the token's lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn num_uses_holds_under_concurrency() {
    let s = TestServer::dev().await;
    s.write_policy(
        "reader",
        r#"path "secret/data/*" { capabilities = ["read"] }"#,
    )
    .await;
    s.kv_put("c", json!({"k": "v"})).await;
    for uses in [1u64, 3] {
        let t = s
            .create_token(&s.root, json!({"policies": ["reader"], "num_uses": uses}))
            .await;
        let mut tasks = Vec::new();
        for _ in 0..24 {
            let http = s.http.clone();
            let url = s.url("secret/data/c");
            let id = t.id.clone();
            tasks.push(tokio::spawn(async move {
                http.get(url)
                    .header("X-Vault-Token", id)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }));
        }
        let mut ok = 0;
        for task in tasks {
            match task.await.unwrap() {
                200 => ok += 1,
                403 => {}
                other => panic!("unexpected status {other}"),
            }
        }
        assert_eq!(ok, uses, "a {uses}-use token authorised {ok} requests");
        assert!(!alive(&s, &t.id).await);
    }
}

/// Revocation racing in-flight requests (which count uses and renew) never
/// brings the revoked token back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_is_not_undone_by_in_flight_requests() {
    let s = TestServer::dev().await;
    s.write_policy(
        "reader",
        r#"path "secret/data/*" { capabilities = ["read"] }"#,
    )
    .await;
    s.kv_put("r", json!({"k": "v"})).await;
    for _round in 0..5 {
        let t = s
            .create_token(&s.root, json!({"policies": ["reader"], "num_uses": 1000}))
            .await;
        let mut tasks = Vec::new();
        for i in 0..32 {
            let http = s.http.clone();
            let (url, body) = if i % 2 == 0 {
                (s.url("secret/data/r"), None)
            } else {
                (s.url("auth/token/renew-self"), Some(json!({})))
            };
            let id = t.id.clone();
            tasks.push(tokio::spawn(async move {
                let rb = match body {
                    None => http.get(url),
                    Some(b) => http.post(url).json(&b),
                };
                rb.header("X-Vault-Token", id)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }));
        }
        let r = s
            .post("auth/token/revoke", &s.root, json!({"token": t.id}))
            .await;
        assert_eq!(r.status, 204);
        for task in tasks {
            let st = task.await.unwrap();
            assert!(st == 200 || st == 403 || st == 400, "status {st}");
        }
        assert!(!alive(&s, &t.id).await, "revoked token is alive again");
        assert_denied(&s.get("secret/data/r", &t.id).await);
    }
}
