//! Token roles over HTTP: `auth/token/roles/<name>` (create, update, read,
//! delete, LIST) and `auth/token/create/<name>`, with what each allows and
//! what it refuses (exact status and error text).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    reason = "test code: a failed setup step is a failed test; helpers are shared between test crates"
)]

mod common;

use common::*;
use palisade_server::core::Begun;
use palisade_server::logical::{Operation, Request};
use serde_json::{Value, json};

async fn lookup(s: &TestServer, token: &str) -> Resp {
    let r = s
        .post("auth/token/lookup", &s.root, json!({ "token": token }))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r
}

fn token_of(r: &Resp) -> String {
    assert_eq!(r.status, 200, "{}", r.text);
    r.auth()["client_token"].as_str().unwrap().to_string()
}

// ------------------------------------------------------------ role CRUD

#[tokio::test]
async fn roles_are_created_read_updated_listed_and_deleted() {
    let s = TestServer::dev().await;
    // no roles: LIST is Vault's empty 404 (hvac expects InvalidPath)
    assert_empty_404(&s.list("auth/token/roles", &s.root).await);
    assert_empty_404(&s.get("auth/token/roles?list=true", &s.root).await);
    assert_empty_404(&s.get("auth/token/roles/testrole", &s.root).await);

    // nothing set: OpenBao's defaults
    let r = s.post("auth/token/roles/empty", &s.root, json!({})).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.get("auth/token/roles/empty", &s.root).await;
    assert_eq!(
        r.body["data"],
        json!({
            "name": "empty", "allowed_policies": [], "disallowed_policies": [],
            "allowed_policies_glob": [], "disallowed_policies_glob": [],
            "orphan": false, "renewable": true, "period": 0, "token_period": 0,
            "explicit_max_ttl": 0, "token_explicit_max_ttl": 0, "path_suffix": "",
            "token_type": "default-service", "allowed_entity_aliases": null,
            "token_no_default_policy": false,
        })
    );
    assert_eq!(
        s.delete("auth/token/roles/empty", &s.root).await.status,
        204
    );

    // hvac's defaults (orphan false, renewable true), policies as a
    // comma-separated string: sanitised as Vault does (trimmed, lowercase,
    // sorted, deduplicated)
    let r = s
        .post(
            "auth/token/roles/testrole",
            &s.root,
            json!({"allowed_policies": "TestPolicy, b,b", "orphan": false, "renewable": true,
                   "disallowed_policies": ["X", "x"], "allowed_entity_aliases": "Web-*"}),
        )
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    let r = s.get("auth/token/roles/testrole", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["data"],
        json!({
            "name": "testrole",
            "allowed_policies": ["b", "testpolicy"],
            "disallowed_policies": ["x"],
            "allowed_policies_glob": [],
            "disallowed_policies_glob": [],
            "orphan": false,
            "renewable": true,
            "period": 0,
            "token_period": 0,
            "explicit_max_ttl": 0,
            "token_explicit_max_ttl": 0,
            "path_suffix": "",
            "token_type": "default-service",
            "allowed_entity_aliases": ["web-*"],
            "token_no_default_policy": false,
        })
    );

    let r = s.list("auth/token/roles", &s.root).await;
    assert_eq!(r.data()["keys"], json!(["testrole"]));
    let r = s.get("auth/token/roles/?list=true", &s.root).await;
    assert_eq!(r.data()["keys"], json!(["testrole"]));

    // an update changes what it names and keeps the rest
    let r = s
        .post(
            "auth/token/roles/testrole",
            &s.root,
            json!({"orphan": true, "token_period": "1h", "token_num_uses": 3}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let d = s.get("auth/token/roles/testrole", &s.root).await;
    let d = d.data();
    assert_eq!(d["allowed_policies"], json!(["b", "testpolicy"]));
    assert_eq!(d["orphan"], true);
    assert_eq!(d["renewable"], true);
    assert_eq!(
        (&d["token_period"], &d["period"]),
        (&json!(3600), &json!(0))
    );
    assert_eq!(d["token_num_uses"], 3);

    // the deprecated names are read back as given
    let r = s
        .post(
            "auth/token/roles/old",
            &s.root,
            json!({"period": 60, "explicit_max_ttl": "2h"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let d = s.get("auth/token/roles/old", &s.root).await;
    assert_eq!(
        (
            &d.data()["period"],
            &d.data()["token_period"],
            &d.data()["explicit_max_ttl"],
            &d.data()["token_explicit_max_ttl"]
        ),
        (&json!(60), &json!(60), &json!(7200), &json!(7200))
    );

    // role names are case-sensitive, as in Vault
    let r = s
        .post("auth/token/roles/TestRole", &s.root, json!({}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.list("auth/token/roles", &s.root).await;
    assert_eq!(r.data()["keys"], json!(["TestRole", "old", "testrole"]));

    for name in ["testrole", "old", "TestRole"] {
        let r = s.delete(&format!("auth/token/roles/{name}"), &s.root).await;
        assert_eq!(r.status, 204, "{}", r.text);
    }
    // deleting again is no error (Vault)
    assert_eq!(
        s.delete("auth/token/roles/testrole", &s.root).await.status,
        204
    );
    assert_empty_404(&s.list("auth/token/roles", &s.root).await);
    assert_empty_404(&s.get("auth/token/roles/testrole", &s.root).await);
}

#[tokio::test]
async fn role_fields_are_checked() {
    let s = TestServer::dev().await;
    let w = |body: Value| {
        let s = &s;
        async move { s.post("auth/token/roles/r", &s.root, body).await }
    };
    // only service tokens exist here
    for t in ["batch", "default-batch"] {
        assert_error(
            &w(json!({"token_type": t})).await,
            400,
            &format!(
                "'token_type' \"{t}\" is not supported: this server issues service tokens only (use \"service\" or \"default-service\")"
            ),
        );
    }
    assert_error(
        &w(json!({"token_type": "default"})).await,
        400,
        "invalid 'token_type' value \"default\"",
    );
    assert_error(
        &w(json!({"token_type": null})).await,
        400,
        "Invalid 'token_type' value: null",
    );
    assert_error(
        &w(json!({"path_suffix": "a/b"})).await,
        400,
        r"given role path suffix contains invalid characters; must match \w[\w-.]+\w",
    );
    assert_error(
        &w(json!({"path_suffix": "a..b"})).await,
        400,
        "error registering path suffix: path cannot contain parent references",
    );
    assert_error(
        &w(json!({"token_num_uses": -1})).await,
        400,
        "error parsing role fields: 'token_num_uses' cannot be negative",
    );
    assert_error(
        &w(json!({"token_period": "-1s"})).await,
        400,
        "field \"token_period\": invalid duration",
    );
    for f in ["token_bound_cidrs", "bound_cidrs"] {
        assert_error(
            &w(json!({ f: "10.0.0.0/8" })).await,
            400,
            &format!(
                "{f} is not supported on token roles: they cannot bind tokens to CIDR blocks on this server"
            ),
        );
    }
    // nothing was stored by the refusals
    assert_empty_404(&s.list("auth/token/roles", &s.root).await);

    // accepted with Vault's warnings: both names of a field, an explicit
    // max TTL over the system's
    let r = w(
        json!({"token_type": "service", "period": 10, "token_period": 20,
                     "token_explicit_max_ttl": "800h"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["warnings"],
        json!([
            "Both 'token_period' and deprecated 'period' value supplied, ignoring the deprecated value",
            "Given explicit max TTL of 2880000 is greater than system/mount allowed value of 2764800 seconds; until this is fixed attempting to create tokens against this role will result in an error"
        ])
    );
    let d = s.get("auth/token/roles/r", &s.root).await;
    assert_eq!(
        (
            &d.data()["token_period"],
            &d.data()["period"],
            &d.data()["token_type"]
        ),
        (&json!(20), &json!(0), &json!("service"))
    );
    let r = s
        .post(
            "auth/token/roles/r2",
            &s.root,
            json!({"path_suffix": "v1.2-a_b"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    // Vault's pattern needs three characters at least
    let r = s
        .post("auth/token/roles/r2", &s.root, json!({"path_suffix": "v2"}))
        .await;
    assert_error(
        &r,
        400,
        r"given role path suffix contains invalid characters; must match \w[\w-.]+\w",
    );
}

#[tokio::test]
async fn role_names_are_canonical_before_the_acl_check() {
    let s = TestServer::dev().await;
    let nothing = s.powerless_token().await;
    for path in [
        "auth/token/roles/bad%20name",
        "auth/token/roles/-lead",
        "auth/token/roles/trail.",
        "auth/token/roles/caf%C3%A9",
        "auth/token/roles/a%2Fb",
        "auth/token/create/bad%20name",
        "auth/token/create/x-",
    ] {
        // no such route, as in Vault (404), answered before any token is
        // looked up: the same answer with or without a token
        for token in [&s.root, &nothing.id] {
            for method in ["GET", "POST", "DELETE"] {
                let r = s.call(method, path, Some(token), Some(json!({}))).await;
                assert_error(&r, 404, "unsupported path");
            }
        }
    }
    assert_empty_404(&s.list("auth/token/roles", &s.root).await);
    // the listing path itself answers only LIST
    assert_error(
        &s.post("auth/token/roles/", &s.root, json!({})).await,
        405,
        "unsupported operation",
    );
}

#[tokio::test]
async fn role_management_needs_the_capabilities_on_its_path() {
    let s = TestServer::dev().await;
    let create_only = s
        .token_with(r#"path "auth/token/roles/*" { capabilities = ["create"] }"#)
        .await;
    let update_only = s
        .token_with(r#"path "auth/token/roles/*" { capabilities = ["update"] }"#)
        .await;
    let reader = s
        .token_with(r#"path "auth/token/roles/*" { capabilities = ["read", "list"] }"#)
        .await;
    let other_role = s
        .token_with(r#"path "auth/token/roles/other" { capabilities = ["create", "update", "read", "delete"] }"#)
        .await;
    let nothing = s.powerless_token().await;

    // create: a new role needs `create` (Vault's existence check), not `update`
    assert_denied(
        &s.post("auth/token/roles/r1", &update_only.id, json!({}))
            .await,
    );
    assert_denied(&s.post("auth/token/roles/r1", &nothing.id, json!({})).await);
    assert_denied(
        &s.post("auth/token/roles/r1", &other_role.id, json!({}))
            .await,
    );
    let r = s
        .post(
            "auth/token/roles/r1",
            &create_only.id,
            json!({"orphan": true}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    // update: an existing role needs `update`, not `create`
    assert_denied(
        &s.post(
            "auth/token/roles/r1",
            &create_only.id,
            json!({"orphan": false}),
        )
        .await,
    );
    let r = s
        .post(
            "auth/token/roles/r1",
            &update_only.id,
            json!({"orphan": false}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(
        s.get("auth/token/roles/r1", &s.root).await.data()["orphan"],
        false
    );

    // create is decided again when the write runs: a role created after
    // the ACL check (which saw none) is not overwritten with `create` alone
    let path = "auth/token/roles/raced";
    let req = Request::new(
        Operation::Write,
        palisade_server::canonical::canonicalise(Operation::Write, &format!("/v1/{path}")).unwrap(),
    );
    let Begun::Authorized(pending) = s
        .core
        .begin(req, Some(create_only.id.clone()))
        .await
        .unwrap()
    else {
        panic!("authorised as a create");
    };
    let r = s
        .post(path, &s.root, json!({"allowed_policies": "kept"}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let mut body = serde_json::Map::new();
    body.insert("allowed_policies".into(), json!("root"));
    let e = s.core.execute(pending, Ok(body)).await.unwrap_err();
    assert_eq!(
        (e.status, e.messages.clone()),
        (403, vec!["permission denied".to_string()])
    );
    assert_eq!(
        s.get(path, &s.root).await.data()["allowed_policies"],
        json!(["kept"])
    );

    // read and list
    assert_denied(&s.get("auth/token/roles/r1", &create_only.id).await);
    assert_denied(&s.list("auth/token/roles", &nothing.id).await);
    assert_eq!(s.get("auth/token/roles/r1", &reader.id).await.status, 200);
    assert_eq!(
        s.list("auth/token/roles", &reader.id).await.data()["keys"],
        json!(["r1", "raced"])
    );

    // delete
    assert_denied(&s.delete("auth/token/roles/r1", &reader.id).await);
    assert_denied(&s.delete("auth/token/roles/r1", &other_role.id).await);
    assert_eq!(s.get("auth/token/roles/r1", &s.root).await.status, 200);
    let r = s
        .post("auth/token/roles/other", &other_role.id, json!({}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(
        s.delete("auth/token/roles/other", &other_role.id)
            .await
            .status,
        204
    );
}

// ------------------------------------------------------------ create/<role>

/// A token that may create tokens against `role` and nothing else.
async fn creator(s: &TestServer, role: &str) -> Token {
    s.token_with(&format!(
        r#"path "auth/token/create/{role}" {{ capabilities = ["update"] }}"#
    ))
    .await
}

#[tokio::test]
async fn create_against_a_role_uses_its_policies() {
    let s = TestServer::dev().await;
    s.write_policy(
        "testpolicy",
        r#"path "secret/*" { capabilities = ["read"] }"#,
    )
    .await;
    s.write_policy("other", r#"path "other/*" { capabilities = ["read"] }"#)
        .await;
    let r = s
        .post(
            "auth/token/roles/testrole",
            &s.root,
            json!({"allowed_policies": "testpolicy"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);

    // hvac's test: no policies asked for → the role's allowed ones + default
    let r = s
        .post("auth/token/create/testrole", &s.root, json!({"ttl": "1h"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.auth()["policies"], json!(["default", "testpolicy"]));
    assert_eq!(r.auth()["lease_duration"], 3600);
    let id = token_of(&r);
    let d = lookup(&s, &id).await;
    assert_eq!(d.data()["path"], "auth/token/create/testrole");
    assert_eq!(d.data()["role"], "testrole");
    assert_eq!(d.data()["orphan"], false);

    // a creator holding none of those policies: the role, not the parent,
    // bounds the child's policies
    let c = creator(&s, "testrole").await;
    let r = s.post("auth/token/create/testrole", &c.id, json!({})).await;
    assert_eq!(r.auth()["policies"], json!(["default", "testpolicy"]));
    let r = s
        .post(
            "auth/token/create/testrole",
            &c.id,
            json!({"policies": ["testpolicy"], "no_default_policy": true}),
        )
        .await;
    assert_eq!(r.auth()["policies"], json!(["testpolicy"]));
    // outside the role's list: refused, whoever asks
    for t in [&c.id, &s.root] {
        let r = s
            .post(
                "auth/token/create/testrole",
                t,
                json!({"policies": ["testpolicy", "other"]}),
            )
            .await;
        assert_error(
            &r,
            400,
            r#"token policies (["default" "other" "testpolicy"]) must be subset of the role's allowed policies (["default" "testpolicy"]) or glob policies ([])"#,
        );
    }
    let r = s
        .post(
            "auth/token/create/testrole",
            &c.id,
            json!({"policies": ["root"]}),
        )
        .await;
    assert_error(
        &r,
        400,
        r#"token policies (["root"]) must be subset of the role's allowed policies (["default" "testpolicy"]) or glob policies ([])"#,
    );

    // globs, disallowed lists and the role's no-default flag
    let r = s
        .post(
            "auth/token/roles/globs",
            &s.root,
            json!({"allowed_policies_glob": ["dev-*"], "disallowed_policies": "dev-secret",
                   "disallowed_policies_glob": "*-admin", "token_no_default_policy": true}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let c = creator(&s, "globs").await;
    let r = s
        .post(
            "auth/token/create/globs",
            &c.id,
            json!({"policies": ["dev-a", "dev-b"]}),
        )
        .await;
    assert_eq!(r.auth()["policies"], json!(["dev-a", "dev-b"]));
    assert_eq!(
        r.body["warnings"],
        json!([
            "Policy \"dev-a\" does not exist",
            "Policy \"dev-b\" does not exist"
        ])
    );
    let r = s
        .post(
            "auth/token/create/globs",
            &c.id,
            json!({"policies": ["dev-secret"]}),
        )
        .await;
    assert_error(
        &r,
        400,
        "token policy \"dev-secret\" is disallowed by this role",
    );
    let r = s
        .post(
            "auth/token/create/globs",
            &c.id,
            json!({"policies": ["dev-admin"]}),
        )
        .await;
    assert_error(
        &r,
        400,
        "token policy \"dev-admin\" is disallowed by this role",
    );
    let r = s
        .post(
            "auth/token/create/globs",
            &c.id,
            json!({"policies": ["prod-a"]}),
        )
        .await;
    assert_error(
        &r,
        400,
        r#"token policies (["prod-a"]) must be subset of the role's allowed policies ([]) or glob policies (["dev-*"])"#,
    );

    // `default` disallowed: never added, refused when asked for
    let r = s
        .post(
            "auth/token/roles/nodefault",
            &s.root,
            json!({"allowed_policies": ["testpolicy", "default"], "disallowed_policies": ["default"]}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .post(
            "auth/token/create/nodefault",
            &s.root,
            json!({"policies": ["testpolicy"]}),
        )
        .await;
    assert_eq!(r.auth()["policies"], json!(["testpolicy"]));
    let r = s
        .post("auth/token/create/nodefault", &s.root, json!({}))
        .await;
    assert_error(
        &r,
        400,
        "token policy \"default\" is disallowed by this role",
    );

    // a role's lists cannot hand out root to a non-root creator
    let r = s
        .post(
            "auth/token/roles/rooty",
            &s.root,
            json!({"allowed_policies": "root"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let c = creator(&s, "rooty").await;
    let r = s.post("auth/token/create/rooty", &c.id, json!({})).await;
    assert_error(
        &r,
        400,
        "root or sudo privileges required to create a token with root policy",
    );
}

#[tokio::test]
async fn a_role_without_policy_lists_keeps_the_parent_subset_rule() {
    let s = TestServer::dev().await;
    s.write_policy("p1", r#"path "secret/*" { capabilities = ["read"] }"#)
        .await;
    s.write_policy("p2", r#"path "other/*" { capabilities = ["read"] }"#)
        .await;
    s.write_policy(
        "mk",
        r#"path "auth/token/create/plain" { capabilities = ["update"] }"#,
    )
    .await;
    let r = s.post("auth/token/roles/plain", &s.root, json!({})).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let parent = s
        .create_token(&s.root, json!({"policies": ["mk", "p1"]}))
        .await;
    let r = s
        .post(
            "auth/token/create/plain",
            &parent.id,
            json!({"policies": ["p2"]}),
        )
        .await;
    assert_error(&r, 400, "child policies must be subset of parent");
    let r = s
        .post(
            "auth/token/create/plain",
            &parent.id,
            json!({"policies": ["p1"]}),
        )
        .await;
    assert_eq!(r.auth()["policies"], json!(["default", "p1"]));
    let r = s
        .post("auth/token/create/plain", &parent.id, json!({}))
        .await;
    assert_eq!(r.auth()["policies"], json!(["default", "mk", "p1"]));
}

#[tokio::test]
async fn create_against_a_role_needs_update_on_its_create_path() {
    let s = TestServer::dev().await;
    let r = s.post("auth/token/roles/r", &s.root, json!({})).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let plain_creator = s
        .token_with(r#"path "auth/token/create" { capabilities = ["update"] }"#)
        .await;
    let other = creator(&s, "other").await;
    let read_only = s
        .token_with(r#"path "auth/token/create/r" { capabilities = ["read", "create"] }"#)
        .await;
    for t in [&plain_creator.id, &other.id, &read_only.id] {
        let r = s.post("auth/token/create/r", t, json!({})).await;
        assert_denied(&r);
        assert!(!r.text.contains("hvs."));
    }
    let c = creator(&s, "r").await;
    let r = s.post("auth/token/create/r", &c.id, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // an unknown role, for a caller allowed on its path
    let r = s.post("auth/token/create/nosuch", &s.root, json!({})).await;
    assert_error(&r, 400, "unknown role nosuch");
    assert_error(
        &s.get("auth/token/create/r", &s.root).await,
        405,
        "unsupported operation",
    );
}

#[tokio::test]
async fn a_role_sets_orphan_period_ttls_uses_and_path() {
    let s = TestServer::dev().await;
    let r = s
        .post(
            "auth/token/roles/svc",
            &s.root,
            json!({"orphan": true, "renewable": false, "path_suffix": "rev2",
                   "token_explicit_max_ttl": "2h", "token_num_uses": 5}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let c = creator(&s, "svc").await;

    // orphan by the role: no sudo needed (Vault)
    let r = s
        .post("auth/token/create/svc", &c.id, json!({"ttl": "3h"}))
        .await;
    assert_eq!(
        r.body["warnings"],
        json!([
            "TTL of \"3h\" exceeded the effective max_ttl of \"2h\"; TTL value is capped accordingly"
        ])
    );
    let a = r.auth().clone();
    assert_eq!(a["orphan"], true);
    assert_eq!(a["renewable"], false);
    assert_eq!(a["num_uses"], 5);
    // capped by the role's explicit max TTL (above, with Vault's warning)
    assert_eq!(a["lease_duration"], 7200);
    let id = token_of(&r);
    let d = lookup(&s, &id).await;
    assert_eq!(d.data()["path"], "auth/token/create/svc/rev2");
    // kept with the token, so renewals stay within it (OpenBao shows 0 here
    // and reads the role again at each renewal)
    assert_eq!(d.data()["explicit_max_ttl"], 7200);
    assert_eq!(d.data()["orphan"], true);
    // a child token would not survive its parent; this one does
    let r = s
        .post("auth/token/revoke", &s.root, json!({"token": c.id}))
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        s.post("auth/token/lookup", &s.root, json!({"token": id}))
            .await
            .status,
        200
    );

    // both the request and the role set an explicit max / a use count:
    // the lesser, with Vault's warning for the TTL
    let r = s
        .post(
            "auth/token/create/svc",
            &s.root,
            json!({"explicit_max_ttl": "3h", "num_uses": 2}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.auth()["lease_duration"], 7200);
    assert_eq!(r.auth()["num_uses"], 2);
    assert_eq!(
        r.body["warnings"][0],
        "Explicit max TTL specified both during creation call and in role; using the lesser value of 7200 seconds"
    );

    // a periodic role: the period without sudo, renewals to the period
    let r = s
        .post(
            "auth/token/roles/periodic",
            &s.root,
            json!({"token_period": "30m"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let c = creator(&s, "periodic").await;
    let r = s
        .post("auth/token/create/periodic", &c.id, json!({"ttl": "5h"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.auth()["lease_duration"], 1800);
    assert_eq!(r.auth()["orphan"], false);
    let id = token_of(&r);
    assert_eq!(lookup(&s, &id).await.data()["period"], 1800);
    // the request's own period still needs sudo on the create path
    let r = s
        .post(
            "auth/token/create/periodic",
            &c.id,
            json!({"period": "10m"}),
        )
        .await;
    assert_error(
        &r,
        400,
        "root or sudo privileges required to create periodic token",
    );
    let r = s
        .post(
            "auth/token/create/periodic",
            &s.root,
            json!({"period": "10m"}),
        )
        .await;
    assert_eq!(r.auth()["lease_duration"], 600);
    assert_eq!(
        r.body["warnings"][0],
        "Period specified both during creation call and in role; using the lesser value of 600 seconds"
    );
    // no_parent is the role's to decide
    let r = s
        .post(
            "auth/token/create/periodic",
            &c.id,
            json!({"no_parent": true}),
        )
        .await;
    assert_eq!(r.auth()["orphan"], false);
}

#[tokio::test]
async fn entity_aliases_are_validated_and_bind_the_token_to_their_entity() {
    let s = TestServer::dev().await;
    let r = s
        .post(
            "auth/token/roles/ea",
            &s.root,
            json!({"allowed_entity_aliases": ["web-*", "Admin"]}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .post(
            "auth/token/create",
            &s.root,
            json!({"entity_alias": "web-1"}),
        )
        .await;
    assert_error(
        &r,
        400,
        "'entity_alias' is only allowed in combination with token role",
    );
    let r = s
        .post(
            "auth/token/create/ea",
            &s.root,
            json!({"entity_alias": "db-1"}),
        )
        .await;
    assert_error(&r, 400, "invalid 'entity_alias' value");
    // allowed (a glob, and a name in any case): the token acts for the
    // alias's entity on the token method, created once, then found again
    s.post(
        "sys/policies/acl/web-reader",
        &s.root,
        json!({"policy": "path \"secret/data/web\" { capabilities = [\"read\"] }"}),
    )
    .await;
    let mut entities = Vec::new();
    // `WEB-1` is the alias `web-1` the allow-list decided on, not another one
    for alias in ["web-1", "ADMIN", "WEB-1"] {
        let r = s
            .post(
                "auth/token/create/ea",
                &s.root,
                json!({"entity_alias": alias, "policies": ["default"]}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let eid = r.auth()["entity_id"].as_str().unwrap().to_string();
        assert!(!eid.is_empty(), "{}", r.text);
        entities.push((eid, r.auth()["client_token"].as_str().unwrap().to_string()));
    }
    assert_eq!(entities[0].0, entities[2].0);
    assert_ne!(entities[0].0, entities[1].0);
    let r = s
        .post(
            "identity/lookup/entity",
            &s.root,
            json!({"alias_name": "web-1", "alias_mount_accessor": "auth_token_0"}),
        )
        .await;
    assert_eq!(r.data()["id"], entities[0].0.as_str(), "{}", r.text);
    assert_eq!(r.data()["aliases"][0]["mount_type"], "token");
    // the entity's policies apply to the token; a disabled entity stops it
    s.kv_put("web", json!({"v": "1"})).await;
    let web = &entities[0].1;
    assert_eq!(s.get("secret/data/web", web).await.status, 403);
    s.post(
        &format!("identity/entity/id/{}", entities[0].0),
        &s.root,
        json!({"policies": ["web-reader"]}),
    )
    .await;
    assert_eq!(s.get("secret/data/web", web).await.status, 200);
    s.post(
        &format!("identity/entity/id/{}", entities[0].0),
        &s.root,
        json!({"disabled": true}),
    )
    .await;
    assert_eq!(s.get("secret/data/web", web).await.status, 403);
    let r = s
        .post(
            "auth/token/create/ea",
            &s.root,
            json!({"entity_alias": "web-1"}),
        )
        .await;
    assert_error(&r, 403, "permission denied");
}

#[tokio::test]
async fn roles_survive_a_restart() {
    let mut s = TestServer::uninit().await;
    let keys = s.init_and_unseal(1, 1).await;
    let r = s
        .post(
            "auth/token/roles/keep",
            &s.root,
            json!({"allowed_policies": "a"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let root = s.root.clone();
    let dir = s.kill();
    let mut s = TestServer::start_in(
        Opts {
            dev: false,
            ..Opts::default()
        },
        dir,
    )
    .await;
    s.unseal(&keys).await;
    s.root = root;
    let r = s.get("auth/token/roles/keep", &s.root).await;
    assert_eq!(r.data()["allowed_policies"], json!(["a"]));
    let r = s.post("auth/token/create/keep", &s.root, json!({})).await;
    assert_eq!(r.auth()["policies"], json!(["a", "default"]));
}

#[tokio::test]
async fn renewals_follow_the_role_as_it_is_now() {
    let s = TestServer::dev().await;
    let role = |body: Value| {
        let s = &s;
        async move {
            let r = s.post("auth/token/roles/per", &s.root, body).await;
            assert_eq!(r.status, 204, "{}", r.text);
        }
    };
    let renew = |token: String, inc: &'static str| {
        let s = &s;
        async move {
            s.post(
                "auth/token/renew",
                &s.root,
                json!({"token": token, "increment": inc}),
            )
            .await
        }
    };
    role(json!({"token_period": "30m"})).await;
    let periodic = token_of(&s.post("auth/token/create/per", &s.root, json!({})).await);
    assert_eq!(
        renew(periodic.clone(), "5h").await.auth()["lease_duration"],
        1800
    );
    // the role's period changed: renewals follow it (Vault's authRenew)
    role(json!({"token_period": "10m"})).await;
    let r = renew(periodic.clone(), "5h").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.auth()["lease_duration"], 600);
    // a period over the system max is capped, with Vault's warning
    role(json!({"token_period": "1000h"})).await;
    let r = renew(periodic.clone(), "1h").await;
    assert_eq!(r.auth()["lease_duration"], 2_764_800);
    assert_eq!(
        r.body["warnings"],
        json!([
            "period of \"1000h\" exceeded the effective max_ttl of \"768h\"; period value is capped accordingly"
        ])
    );

    // the role's explicit max TTL binds renewals; the token's own (from its
    // creation) still does when the role's is raised
    // an explicit max TTL counts from the token's creation: a second may
    // have passed since, so the lease is the cap or one second under it
    let assert_left_of = |v: &Value, cap: i64| {
        let left = v.as_i64().unwrap();
        assert!((cap - 1..=cap).contains(&left), "{left} for a cap of {cap}");
    };
    role(json!({"token_period": 0, "token_explicit_max_ttl": "2h"})).await;
    let capped = token_of(
        &s.post("auth/token/create/per", &s.root, json!({"ttl": "1h"}))
            .await,
    );
    assert_left_of(
        &renew(capped.clone(), "5h").await.auth()["lease_duration"],
        7200,
    );
    role(json!({"token_explicit_max_ttl": "90m"})).await;
    assert_left_of(
        &renew(capped.clone(), "5h").await.auth()["lease_duration"],
        5400,
    );
    role(json!({"token_explicit_max_ttl": "10h"})).await;
    assert_left_of(
        &renew(capped.clone(), "5h").await.auth()["lease_duration"],
        7200,
    );

    // the role deleted: no renewal (OpenBao's answer), the token lives on
    let r = s.delete("auth/token/roles/per", &s.root).await;
    assert_eq!(r.status, 204);
    for t in [&periodic, &capped] {
        let r = renew(t.to_string(), "1h").await;
        assert_error(
            &r,
            500,
            "failed to renew entry: original token role \"per\" could not be found, not renewing",
        );
        assert_eq!(lookup(&s, t).await.data()["role"], "per");
    }
    let r = s.post("auth/token/renew-self", &periodic, json!({})).await;
    assert_error(
        &r,
        500,
        "failed to renew entry: original token role \"per\" could not be found, not renewing",
    );
}
