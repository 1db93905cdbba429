//! The identity store over HTTP: entities, aliases, groups and group
//! aliases (Vault's API), the entity a login lands in, the policies an
//! entity and its groups add to its tokens at every request (allowed and
//! denied), disabled entities, merges, and Vault's identity tokens.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use common::*;
use serde_json::{Value, json};

/// userpass at `userpass/` with a user `name` whose tokens hold only `default`.
async fn userpass_user(s: &TestServer, name: &str) -> String {
    let r = s
        .post("sys/auth/userpass", &s.root, json!({"type": "userpass"}))
        .await;
    assert!(r.status == 204 || r.status == 400, "{}", r.text);
    let r = s
        .post(
            &format!("auth/userpass/users/{name}"),
            &s.root,
            json!({"password": "correct horse battery", "token_policies": "default"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    accessor(s, "userpass/").await
}

async fn accessor(s: &TestServer, mount: &str) -> String {
    let r = s.get("sys/auth", &s.root).await;
    r.data()[mount]["accessor"].as_str().unwrap().to_string()
}

async fn login(s: &TestServer, name: &str) -> Resp {
    s.post(
        &format!("auth/userpass/login/{name}"),
        "",
        json!({"password": "correct horse battery"}),
    )
    .await
}

fn token_of(r: &Resp) -> String {
    assert_eq!(r.status, 200, "{}", r.text);
    r.auth()["client_token"].as_str().unwrap().to_string()
}

async fn read_secret(s: &TestServer, token: &str) -> Resp {
    s.get("secret/data/shared", token).await
}

#[tokio::test]
async fn a_login_lands_in_one_entity_and_its_groups_policies_apply_at_every_request() {
    let s = TestServer::dev().await;
    s.kv_put("shared", json!({"v": "1"})).await;
    s.write_policy(
        "read-shared",
        r#"path "secret/data/shared" { capabilities = ["read"] }"#,
    )
    .await;
    s.write_policy(
        "mint",
        r#"path "auth/token/create" { capabilities = ["update"] }"#,
    )
    .await;
    let acc = userpass_user(&s, "svc-a").await;

    // first login: an entity with the alias is created
    let r = login(&s, "svc-a").await;
    let t1 = token_of(&r);
    let entity = r.auth()["entity_id"].as_str().unwrap().to_string();
    assert_eq!(entity.len(), 36, "{}", r.text);
    // the token's own policies do not read the secret
    assert_denied(&read_secret(&s, &t1).await);
    // the same login again: the same entity
    let t2 = token_of(&login(&s, "svc-a").await);
    let r = s.get("auth/token/lookup-self", &t2).await;
    assert_eq!(r.data()["entity_id"], entity.as_str());
    let r = s
        .post(
            "identity/lookup/entity",
            &s.root,
            json!({"alias_name": "svc-a", "alias_mount_accessor": acc}),
        )
        .await;
    assert_eq!(r.data()["id"], entity.as_str(), "{}", r.text);
    assert_eq!(r.data()["aliases"][0]["mount_type"], "userpass");

    // a group holding the policy, with the entity as a member: the live
    // tokens read at once
    let r = s
        .post(
            "identity/group",
            &s.root,
            json!({"name": "readers", "policies": "read-shared,mint", "member_entity_ids": [entity]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let group = r.data()["id"].as_str().unwrap().to_string();
    assert_eq!(read_secret(&s, &t1).await.status, 200);
    // a child token acts for the same entity (the group lets it mint one)
    let child = s.create_token(&t1, json!({"policies": ["default"]})).await;
    assert_eq!(read_secret(&s, &child.id).await.status, 200);
    // a login now reports the identity policies
    let r = login(&s, "svc-a").await;
    assert_eq!(
        r.auth()["identity_policies"],
        json!(["mint", "read-shared"])
    );
    assert_eq!(r.auth()["token_policies"], json!(["default"]));
    // and so does a lookup (review finding)
    let r = s.get("auth/token/lookup-self", &t1).await;
    assert_eq!(
        r.data()["identity_policies"],
        json!(["mint", "read-shared"])
    );

    // through a parent group too; removing the membership denies again
    let r = s
        .post(
            "identity/group",
            &s.root,
            json!({"name": "outer", "policies": "read-shared", "member_group_ids": [group]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .post(
            "identity/group/name/readers",
            &s.root,
            json!({"policies": []}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(
        read_secret(&s, &t1).await.status,
        200,
        "inherited from the parent"
    );
    let r = s.delete("identity/group/name/outer", &s.root).await;
    assert_eq!(r.status, 204);
    assert_denied(&read_secret(&s, &t1).await);

    // the entity's own policies count as well; disabling it denies
    // everything its tokens would do, even what their own policies allow
    let r = s
        .post(
            &format!("identity/entity/id/{entity}"),
            &s.root,
            json!({"policies": "read-shared"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(read_secret(&s, &t1).await.status, 200);
    s.post(
        &format!("identity/entity/id/{entity}"),
        &s.root,
        json!({"disabled": true}),
    )
    .await;
    assert_denied(&read_secret(&s, &t1).await);
    assert_denied(&s.get("auth/token/lookup-self", &t1).await);
    assert_denied(&login(&s, "svc-a").await);
    s.post(
        &format!("identity/entity/id/{entity}"),
        &s.root,
        json!({"disabled": false}),
    )
    .await;
    assert_eq!(read_secret(&s, &t1).await.status, 200);

    // sys/capabilities sees what the request pipeline sees (review finding)
    let r = s
        .post(
            "sys/capabilities",
            &s.root,
            json!({"token": t1, "paths": ["secret/data/shared"]}),
        )
        .await;
    assert_eq!(r.body["secret/data/shared"], json!(["read"]), "{}", r.text);
    // an orphan created by the entity's token does not carry its identity
    // (review finding: OpenBao's behaviour)
    s.write_policy(
        "mint-orphan",
        r#"path "auth/token/create-orphan" { capabilities = ["update", "sudo"] }"#,
    )
    .await;
    s.post(
        "identity/group/name/readers",
        &s.root,
        json!({"policies": "mint,mint-orphan"}),
    )
    .await;
    let r = s
        .post(
            "auth/token/create-orphan",
            &t1,
            json!({"policies": ["default"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.auth()["entity_id"], "");
    let orphan = r.auth()["client_token"].as_str().unwrap().to_string();
    assert_denied(&read_secret(&s, &orphan).await);
    assert_eq!(read_secret(&s, &t1).await.status, 200);

    // deleting the entity: its tokens act for nobody and authorise nothing
    // (review finding: they kept their own policies; OpenBao denies them)
    assert_eq!(
        s.delete(&format!("identity/entity/id/{entity}"), &s.root)
            .await
            .status,
        204
    );
    assert_denied(&read_secret(&s, &t1).await);
    assert_denied(&s.get("auth/token/lookup-self", &t1).await);
    let r = s
        .post(
            "sys/capabilities",
            &s.root,
            json!({"token": t1, "paths": ["secret/data/shared"]}),
        )
        .await;
    assert_error(&r, 400, "invalid token");
    // the orphan, which acts for no entity, still works
    assert_eq!(s.get("auth/token/lookup-self", &orphan).await.status, 200);
}

#[tokio::test]
async fn identity_cannot_grant_root_or_make_cycles_and_names_are_canonical() {
    let s = TestServer::dev().await;
    for (path, body, msg) in [
        (
            "identity/entity",
            json!({"name": "e", "policies": ["root"]}),
            "policies cannot hold \"root\": an identity cannot grant root",
        ),
        (
            "identity/group",
            json!({"name": "g", "policies": "default,ROOT"}),
            "policies cannot hold \"root\": an identity cannot grant root",
        ),
        (
            "identity/group",
            json!({"name": "g", "policies": ["response-wrapping"]}),
            "cannot assign policy \"response-wrapping\"",
        ),
        (
            "identity/entity",
            json!({"name": "a/b"}),
            "invalid entity name: 1 to 256 bytes, without '/', control characters or surrounding spaces",
        ),
        (
            "identity/entity",
            json!({"name": " padded"}),
            "invalid entity name: 1 to 256 bytes, without '/', control characters or surrounding spaces",
        ),
        (
            "identity/entity",
            json!({"name": "e", "metadata": {"k": 1}}),
            "field \"metadata\" must be a map of strings",
        ),
        (
            "identity/group",
            json!({"name": "g", "type": "cosmic"}),
            "invalid group type: must be \"internal\" or \"external\"",
        ),
        (
            "identity/group",
            json!({"name": "g", "member_entity_ids": ["no-such-entity"]}),
            "entity \"no-such-entity\" does not exist",
        ),
        // an external group's members come from logins only
        (
            "identity/group",
            json!({"name": "g", "type": "external", "member_entity_ids": ["no-such-entity"]}),
            "member entities can't be set manually for external groups",
        ),
        (
            "identity/group",
            json!({"name": "g", "type": "external", "member_group_ids": ["some-group"]}),
            "member groups can't be set for external groups",
        ),
        (
            "identity/entity-alias",
            json!({"name": "x", "mount_accessor": "auth_userpass_nope"}),
            "invalid mount accessor \"auth_userpass_nope\"",
        ),
        (
            "identity/entity",
            json!({"name": ".."}),
            "invalid entity name: 1 to 256 bytes, without '/', control characters or surrounding spaces",
        ),
    ] {
        let r = s.post(path, &s.root, body.clone()).await;
        assert_error(&r, 400, msg);
    }
    // nothing was created by the refusals
    assert_empty_404(&s.list("identity/entity/id", &s.root).await);
    assert_empty_404(&s.list("identity/group/id", &s.root).await);

    // names are unique regardless of case, and matched exactly
    let r = s
        .post("identity/entity", &s.root, json!({"name": "Web"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.post("identity/entity/name/web", &s.root, json!({})).await;
    assert_error(&r, 400, "entity name is already in use");
    assert_empty_404(&s.get("identity/entity/name/web", &s.root).await);
    assert_eq!(s.get("identity/entity/name/Web", &s.root).await.status, 200);
    // a trailing slash is LIST's form only
    assert_eq!(
        s.get("identity/entity/name/Web/", &s.root).await.status,
        404
    );

    // cycles: a group cannot contain itself, directly or not
    let a = s
        .post("identity/group", &s.root, json!({"name": "a"}))
        .await
        .data()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = s
        .post(
            "identity/group",
            &s.root,
            json!({"name": "b", "member_group_ids": [a]}),
        )
        .await
        .data()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s
        .post(
            &format!("identity/group/id/{a}"),
            &s.root,
            json!({"member_group_ids": [b]}),
        )
        .await;
    assert_error(
        &r,
        400,
        &format!(
            "member group ID {b:?} would make a cycle: it is this group or one of its parents"
        ),
    );
    let r = s
        .post(
            &format!("identity/group/id/{a}"),
            &s.root,
            json!({"member_group_ids": [a]}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = s.get(&format!("identity/group/id/{b}"), &s.root).await;
    assert_eq!(r.data()["member_group_ids"], json!([a]));
    let r = s.get(&format!("identity/group/id/{a}"), &s.root).await;
    assert_eq!(r.data()["parent_group_ids"], json!([b]));
    assert_eq!(r.data()["member_group_ids"], Value::Null);
}

#[tokio::test]
async fn who_may_change_an_identity_is_decided_by_the_acl() {
    let s = TestServer::dev().await;
    s.kv_put("shared", json!({"v": "1"})).await;
    s.write_policy(
        "read-shared",
        r#"path "secret/data/shared" { capabilities = ["read"] }"#,
    )
    .await;
    userpass_user(&s, "svc-b").await;
    let t = token_of(&login(&s, "svc-b").await);
    // the default policy does not let a token grant its entity policies
    let entity = s.get("auth/token/lookup-self", &t).await.data()["entity_id"]
        .as_str()
        .unwrap()
        .to_string();
    for r in [
        s.post(
            &format!("identity/entity/id/{entity}"),
            &t,
            json!({"policies": "read-shared"}),
        )
        .await,
        s.post(
            "identity/group",
            &t,
            json!({"name": "mine", "policies": "read-shared", "member_entity_ids": [entity]}),
        )
        .await,
        s.get(&format!("identity/entity/id/{entity}"), &t).await,
    ] {
        assert_denied(&r);
    }
    assert_denied(&read_secret(&s, &t).await);
    // a token allowed to manage one named group only
    let admin = s
        .token_with(
            r#"path "identity/group/name/team-*" { capabilities = ["create", "update", "read"] }"#,
        )
        .await;
    let r = s
        .post(
            "identity/group/name/team-x",
            &admin.id,
            json!({"member_entity_ids": [entity]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // ... not another one, not by id, not the whole collection
    assert_denied(
        &s.post("identity/group/name/other", &admin.id, json!({}))
            .await,
    );
    assert_denied(
        &s.post("identity/group", &admin.id, json!({"name": "team-y"}))
            .await,
    );
}

#[tokio::test]
async fn aliases_are_unique_per_method_and_follow_their_method() {
    let s = TestServer::dev().await;
    let acc = userpass_user(&s, "svc-c").await;
    let e1 = s
        .post("identity/entity", &s.root, json!({"name": "one"}))
        .await
        .data()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let e2 = s
        .post("identity/entity", &s.root, json!({"name": "two"}))
        .await
        .data()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // an alias made ahead of the first login decides where the login lands
    let r = s
        .post(
            "identity/entity-alias",
            &s.root,
            json!({"name": "svc-c", "mount_accessor": acc, "canonical_id": e1}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let alias = r.data()["id"].as_str().unwrap().to_string();
    let r = login(&s, "svc-c").await;
    assert_eq!(r.auth()["entity_id"], e1.as_str());
    // the same (method, name) cannot be given to another entity
    let r = s
        .post(
            "identity/entity-alias",
            &s.root,
            json!({"name": "svc-c", "mount_accessor": acc, "canonical_id": e2}),
        )
        .await;
    assert_error(
        &r,
        400,
        "combination of mount and alias name is already in use",
    );
    // one alias per method per entity
    let r = s
        .post(
            "identity/entity-alias",
            &s.root,
            json!({"name": "other-name", "mount_accessor": acc, "canonical_id": e1}),
        )
        .await;
    assert_error(
        &r,
        400,
        &format!("mount accessor {acc:?} is already in use by another alias of entity {e1:?}"),
    );
    // merging moves the alias; the merged entity's tokens keep their identity
    let t = token_of(&login(&s, "svc-c").await);
    let r = s
        .post(
            "identity/entity/merge",
            &s.root,
            json!({"from_entity_ids": [e1], "to_entity_id": e2}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .get(&format!("identity/entity-alias/id/{alias}"), &s.root)
        .await;
    assert_eq!(r.data()["canonical_id"], e2.as_str());
    // the merged entity's policies do not move (review finding; OpenBao)
    let r = s.get(&format!("identity/entity/id/{e2}"), &s.root).await;
    assert_eq!(r.data()["policies"], json!([]), "{}", r.text);
    assert_eq!(r.data()["merged_entity_ids"], json!([e1]));
    s.write_policy("p2", r#"path "sys/mounts" { capabilities = ["read"] }"#)
        .await;
    s.post(
        &format!("identity/entity/id/{e2}"),
        &s.root,
        json!({"policies": "p2"}),
    )
    .await;
    assert_eq!(s.get("sys/mounts", &t).await.status, 200);
    assert_eq!(login(&s, "svc-c").await.auth()["entity_id"], e2.as_str());
    // disabling the method deletes its aliases
    s.delete("sys/auth/userpass", &s.root).await;
    assert_empty_404(
        &s.get(&format!("identity/entity-alias/id/{alias}"), &s.root)
            .await,
    );
    let r = s.get(&format!("identity/entity/id/{e2}"), &s.root).await;
    assert_eq!(r.data()["aliases"], json!([]));
}

#[tokio::test]
async fn identity_survives_a_kill_and_restart() {
    let mut s = TestServer::uninit().await;
    let keys = s.init_and_unseal(1, 1).await;
    let r = s
        .post(
            "identity/entity",
            &s.root,
            json!({"name": "durable", "metadata": {"team": "payments"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = r.data()["id"].as_str().unwrap().to_string();
    let r = s
        .post(
            "identity/group",
            &s.root,
            json!({"name": "g", "member_entity_ids": [id]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let root = s.root.clone();
    let dir = s.kill();
    let s = TestServer::start_in(
        Opts {
            dev: false,
            ..Opts::default()
        },
        dir,
    )
    .await;
    s.unseal(&keys).await;
    let r = s.get("identity/entity/name/durable", &root).await;
    assert_eq!(r.data()["id"], id.as_str(), "{}", r.text);
    assert_eq!(r.data()["metadata"], json!({"team": "payments"}));
    assert_eq!(r.data()["direct_group_ids"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn identity_tokens_are_signed_for_the_callers_entity_and_introspected() {
    let s = TestServer::dev().await;
    s.write_policy(
        "id-token",
        r#"path "identity/oidc/token/*" { capabilities = ["read"] }"#,
    )
    .await;
    userpass_user(&s, "svc-d").await;
    s.post(
        "auth/userpass/users/svc-d",
        &s.root,
        json!({"token_policies": "id-token"}),
    )
    .await;
    let r = s.post("identity/oidc/key/k", &s.root, json!({})).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .post("identity/oidc/role/r", &s.root, json!({"key": "missing"}))
        .await;
    assert_error(&r, 400, "cannot find key \"missing\"");
    let r = s
        .post(
            "identity/oidc/role/r",
            &s.root,
            json!({"key": "k", "ttl": "10m"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let client_id = s.get("identity/oidc/role/r", &s.root).await.data()["client_id"]
        .as_str()
        .unwrap()
        .to_string();
    let login_r = login(&s, "svc-d").await;
    let t = token_of(&login_r);
    let entity = login_r.auth()["entity_id"].as_str().unwrap().to_string();

    // the key does not list the role's client ID yet
    let r = s.get("identity/oidc/token/r", &t).await;
    assert_error(
        &r,
        400,
        "the key \"k\" does not list the client ID of the role \"r\" as an allowed client ID",
    );
    s.post(
        "identity/oidc/key/k",
        &s.root,
        json!({"allowed_client_ids": [client_id]}),
    )
    .await;
    let r = s.get("identity/oidc/token/r", &t).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let jwt = r.data()["token"].as_str().unwrap().to_string();
    let payload: Value = {
        use base64::Engine;
        let p = jwt.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(payload["sub"], entity.as_str());
    assert_eq!(payload["aud"], client_id.as_str());
    assert_eq!(
        payload["iss"],
        format!("http://{}/v1/identity/oidc", s.addr).as_str()
    );
    assert_eq!(
        payload["exp"].as_i64().unwrap() - payload["iat"].as_i64().unwrap(),
        600
    );

    // a root token has no entity
    let r = s.get("identity/oidc/token/r", &s.root).await;
    assert_error(&r, 400, "no entity associated with the request's token");

    // introspection: active, then wrong audience, forged, disabled entity
    let intro = |tok: String, cid: &str| {
        let body = json!({"token": tok, "client_id": cid});
        let s = &s;
        async move { s.post("identity/oidc/introspect", &s.root, body).await }
    };
    let r = intro(jwt.clone(), &client_id).await;
    assert_eq!(r.body, json!({"active": true}), "{}", r.text);
    // introspection needs a Vault token (not among Vault's unauthenticated
    // identity paths); a request without a token to introspect is inactive
    let r = s
        .post(
            "identity/oidc/introspect",
            "",
            json!({"token": jwt, "client_id": client_id}),
        )
        .await;
    assert_error(&r, 403, "permission denied");
    let r = s.post("identity/oidc/introspect", &s.root, json!({})).await;
    assert_eq!(r.body["active"], false, "{}", r.text);
    // however many key versions are published (review finding: past 100
    // the combined key set made every introspection a 500)
    s.post("identity/oidc/key/many", &s.root, json!({})).await;
    for _ in 0..100 {
        let r = s
            .post("identity/oidc/key/many/rotate", &s.root, json!({}))
            .await;
        assert_eq!(r.status, 204, "{}", r.text);
    }
    let r = intro(jwt.clone(), &client_id).await;
    assert_eq!(r.body, json!({"active": true}), "{}", r.text);
    let r = intro(jwt.clone(), "someone-else").await;
    assert_eq!(r.body["active"], false);
    assert_eq!(
        r.body["error"],
        "token audience does not match the client_id"
    );
    let mut forged = jwt.clone();
    forged.pop();
    forged.push(if jwt.ends_with('A') { 'B' } else { 'A' });
    let r = intro(forged, "").await;
    assert_eq!(r.body["active"], false, "{}", r.text);
    s.post(
        &format!("identity/entity/id/{entity}"),
        &s.root,
        json!({"disabled": true}),
    )
    .await;
    let r = intro(jwt.clone(), "").await;
    assert_eq!(
        r.body,
        json!({"active": false, "error": "the token's entity is disabled"})
    );

    // discovery and keys are public, and hold no private material
    let r = s
        .get("identity/oidc/.well-known/openid-configuration", "")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["jwks_uri"],
        format!("http://{}/v1/identity/oidc/.well-known/keys", s.addr).as_str()
    );
    let r = s.get("identity/oidc/.well-known/keys", "").await;
    assert_eq!(r.status, 200);
    let keys = r.body["keys"].as_array().unwrap();
    assert!(!keys.is_empty());
    for k in keys {
        assert!(k.get("d").is_none(), "private key published: {k}");
    }
    // a key in use by a role cannot be deleted
    let r = s.delete("identity/oidc/key/k", &s.root).await;
    assert_error(
        &r,
        400,
        "unable to delete key \"k\" because it is currently referenced by these roles: r",
    );
    // templates are refused rather than ignored
    let r = s
        .post(
            "identity/oidc/role/r",
            &s.root,
            json!({"template": "{\"groups\": {{identity.entity.groups.names}} }"}),
        )
        .await;
    assert_error(
        &r,
        400,
        "claim templates are not supported: a role's tokens carry iss, sub, aud, iat, exp and namespace",
    );
}
