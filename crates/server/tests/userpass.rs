//! The userpass auth method over HTTP: `sys/auth` enable / read / list /
//! tune / disable, users (create, update, read, list, delete, password,
//! policies), login, renewal and CIDR binding, with what each allows and
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

const PW: &str = "Tr0ub4dor&3-correct-horse";

async fn enable(s: &TestServer, path: &str) {
    let r = s
        .post(
            &format!("sys/auth/{path}"),
            &s.root,
            json!({"type": "userpass"}),
        )
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""), "enable {path}");
}

async fn user(s: &TestServer, mount: &str, name: &str, body: Value) {
    let r = s
        .post(&format!("auth/{mount}/users/{name}"), &s.root, body)
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""), "user {name}");
}

async fn login(s: &TestServer, mount: &str, name: &str, password: &str) -> Resp {
    s.call(
        "POST",
        &format!("auth/{mount}/login/{name}"),
        None,
        Some(json!({ "password": password })),
    )
    .await
}

fn token_of(r: &Resp) -> String {
    assert_eq!(r.status, 200, "{}", r.text);
    r.auth()["client_token"].as_str().unwrap().to_string()
}

async fn lookup_self(s: &TestServer, token: &str) -> Resp {
    s.get("auth/token/lookup-self", token).await
}

// ------------------------------------------------------------ sys/auth

#[tokio::test]
async fn methods_are_enabled_listed_read_tuned_and_disabled() {
    let s = TestServer::dev().await;
    let r = s.get("sys/auth", &s.root).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.data().as_object().unwrap().keys().collect::<Vec<_>>(),
        ["token/"]
    );

    let r = s
        .post(
            "sys/auth/userpass",
            &s.root,
            json!({"type": "userpass", "description": "people", "config": {"default_lease_ttl": "1h", "max_lease_ttl": "2h"}}),
        )
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    let r = s.get("sys/auth", &s.root).await;
    let up = &r.data()["userpass/"];
    assert_eq!(up["type"], "userpass");
    assert_eq!(up["description"], "people");
    assert!(
        up["accessor"]
            .as_str()
            .unwrap()
            .starts_with("auth_userpass_"),
        "{up}"
    );
    assert_eq!(up["config"]["default_lease_ttl"], 3600);
    assert_eq!(r.body["userpass/"], *up, "repeated at the top level");
    let r = s.get("sys/auth/userpass", &s.root).await;
    assert_eq!(r.data()["type"], "userpass", "{}", r.text);

    // the same path twice, a nested one, the token method's, unknown types
    assert_error(
        &s.post("sys/auth/userpass", &s.root, json!({"type": "userpass"}))
            .await,
        400,
        "path is already in use at auth/userpass/",
    );
    assert_error(
        &s.post("sys/auth/userpass/x", &s.root, json!({"type": "userpass"}))
            .await,
        400,
        "path is already in use at auth/userpass/x/",
    );
    assert_error(
        &s.post("sys/auth/token", &s.root, json!({"type": "userpass"}))
            .await,
        400,
        "cannot mount \"auth/token/\": path is reserved for the token auth method",
    );
    assert_error(
        &s.post("sys/auth/gh", &s.root, json!({"type": "github"}))
            .await,
        400,
        "plugin not found in the catalog: github (the auth methods available are: approle, cert, jwt, userpass)",
    );
    assert_error(
        &s.post("sys/auth/gh", &s.root, json!({})).await,
        400,
        "backend type must be specified as a string",
    );
    assert_error(
        &s.post(
            "sys/auth/up2",
            &s.root,
            json!({"type": "userpass", "config": {"default_lease_ttl": "2h", "max_lease_ttl": "1h"}}),
        )
        .await,
        400,
        "given default lease TTL greater than given max lease TTL",
    );

    // tune: read and write, TTLs effective
    let r = s.get("sys/auth/userpass/tune", &s.root).await;
    assert_eq!(
        (
            r.data()["default_lease_ttl"].clone(),
            r.data()["max_lease_ttl"].clone()
        ),
        (json!(3600), json!(7200)),
        "{}",
        r.text
    );
    let r = s
        .post(
            "sys/auth/userpass/tune",
            &s.root,
            json!({"max_lease_ttl": "3h", "description": "staff"}),
        )
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    let r = s.get("sys/auth/userpass/tune", &s.root).await;
    assert_eq!(r.data()["max_lease_ttl"], 10800);
    assert_eq!(r.data()["description"], "staff");
    assert_error(
        &s.post(
            "sys/auth/userpass/tune",
            &s.root,
            json!({"max_lease_ttl": "10m"}),
        )
        .await,
        400,
        "backend max lease TTL of 600 would be less than backend default lease TTL of 3600",
    );
    assert_error(
        &s.get("sys/auth/nothing/tune", &s.root).await,
        400,
        "cannot fetch sysview for path \"auth/nothing/\"",
    );

    // disable: gone from the list; disabling again is a no-op; the token method stays
    assert_eq!(s.delete("sys/auth/userpass", &s.root).await.status, 204);
    assert_eq!(s.delete("sys/auth/userpass", &s.root).await.status, 204);
    let r = s.get("sys/auth", &s.root).await;
    assert!(r.data().get("userpass/").is_none(), "{}", r.text);
    assert_error(
        &s.delete("sys/auth/token", &s.root).await,
        400,
        "token credential backend cannot be disabled",
    );
}

#[tokio::test]
async fn enabling_and_disabling_need_sudo() {
    let s = TestServer::dev().await;
    let no_sudo = s
        .token_with(
            r#"path "sys/auth/*" { capabilities = ["create", "update", "read", "delete"] }"#,
        )
        .await;
    assert_denied(
        &s.post("sys/auth/up", &no_sudo.id, json!({"type": "userpass"}))
            .await,
    );
    let sudo = s
        .token_with(
            r#"path "sys/auth/*" { capabilities = ["create", "update", "read", "delete", "sudo"] }"#,
        )
        .await;
    let r = s
        .post("sys/auth/up", &sudo.id, json!({"type": "userpass"}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_denied(&s.delete("sys/auth/up", &no_sudo.id).await);
    assert_eq!(s.delete("sys/auth/up", &sudo.id).await.status, 204);
}

// ------------------------------------------------------------ users and login

#[tokio::test]
async fn a_user_logs_in_with_the_right_password_only() {
    let s = TestServer::dev().await;
    enable(&s, "userpass").await;
    user(
        &s,
        "userpass",
        "bob",
        json!({"password": PW, "policies": "Dev, ops", "ttl": "10m"}),
    )
    .await;

    let r = login(&s, "userpass", "bob", PW).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let a = r.auth();
    assert_eq!(a["policies"], json!(["default", "dev", "ops"]));
    assert_eq!(a["token_policies"], json!(["default", "dev", "ops"]));
    assert_eq!(a["metadata"], json!({"username": "bob"}));
    assert_eq!(a["lease_duration"], 600);
    assert_eq!(a["renewable"], true);
    assert_eq!(a["orphan"], true);
    let token = token_of(&r);
    let r = lookup_self(&s, &token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["path"], "auth/userpass/login/bob");
    assert_eq!(r.data()["display_name"], "userpass-bob");
    assert_eq!(r.data()["meta"], json!({"username": "bob"}));

    // wrong password, unknown user: the same answer
    for (name, pw) in [("bob", "wrong"), ("bob", &PW[1..]), ("nobody", PW)] {
        assert_error(
            &login(&s, "userpass", name, pw).await,
            400,
            "invalid username or password",
        );
    }
    // no password at all
    let r = s
        .call("POST", "auth/userpass/login/bob", None, Some(json!({})))
        .await;
    assert_error(&r, 400, "missing password");
    let r = s
        .call(
            "POST",
            "auth/userpass/login/bob",
            None,
            Some(json!({"password": 12345})),
        )
        .await;
    assert_error(&r, 400, "password must be a string");
    // a login is a write
    assert_error(
        &s.call("GET", "auth/userpass/login/bob", None, None).await,
        405,
        "unsupported operation",
    );

    // the password changes: the old one stops working
    let r = s
        .post(
            "auth/userpass/users/bob/password",
            &s.root,
            json!({"password": "n3w-pass"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_error(
        &login(&s, "userpass", "bob", PW).await,
        400,
        "invalid username or password",
    );
    assert_eq!(login(&s, "userpass", "bob", "n3w-pass").await.status, 200);
    assert_error(
        &s.post(
            "auth/userpass/users/nobody/password",
            &s.root,
            json!({"password": "x"}),
        )
        .await,
        400,
        "username does not exist",
    );
}

#[tokio::test]
async fn users_are_read_listed_updated_and_deleted_without_their_password() {
    let s = TestServer::dev().await;
    enable(&s, "userpass").await;
    assert_empty_404(&s.list("auth/userpass/users", &s.root).await);
    user(&s, "userpass", "carol", json!({"password": PW})).await;
    user(
        &s,
        "userpass",
        "alice@example.com",
        json!({"password": PW, "token_policies": ["a"], "token_bound_cidrs": "127.0.0.1, 10.1.2.3/8", "token_max_ttl": 7200, "token_ttl": "1h", "token_num_uses": 5}),
    )
    .await;
    let r = s.list("auth/userpass/users", &s.root).await;
    assert_eq!(r.data()["keys"], json!(["alice@example.com", "carol"]));

    let r = s
        .get("auth/userpass/users/alice@example.com", &s.root)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        *r.data(),
        json!({
            "token_policies": ["a"], "policies": ["a"],
            "token_ttl": 3600, "ttl": 3600, "token_max_ttl": 7200, "max_ttl": 7200,
            "token_explicit_max_ttl": 0, "token_period": 0, "period": 0,
            "token_num_uses": 5, "token_no_default_policy": false,
            "token_bound_cidrs": ["10.0.0.0/8", "127.0.0.1/32"],
            "bound_cidrs": ["10.0.0.0/8", "127.0.0.1/32"],
            "token_type": "default",
        })
    );
    assert!(
        !r.text.contains(PW) && !r.text.contains("argon2"),
        "{}",
        r.text
    );

    // an update keeps what it does not name, the password included
    user(&s, "userpass", "carol", json!({"policies": "x"})).await;
    let r = s.get("auth/userpass/users/carol", &s.root).await;
    assert_eq!(r.data()["token_policies"], json!(["x"]));
    assert_eq!(login(&s, "userpass", "carol", PW).await.status, 200);
    let r = s
        .post(
            "auth/userpass/users/carol/policies",
            &s.root,
            json!({"token_policies": "y,z"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.get("auth/userpass/users/carol", &s.root).await;
    assert_eq!(r.data()["token_policies"], json!(["y", "z"]));

    // refused input, each with its message; nothing changes
    for (body, msg) in [
        (json!({}), "missing password"),
        (json!({"password": ""}), "missing password"),
        (
            json!({"password": PW, "policies": "root"}),
            "token_policies cannot hold \"root\": auth methods cannot create root tokens",
        ),
        (
            json!({"password": PW, "token_ttl": "2h", "token_max_ttl": "1h"}),
            "'token_ttl' cannot be greater than 'token_max_ttl'",
        ),
        (
            json!({"password": PW, "token_bound_cidrs": ["10.0.0.0/33"]}),
            "invalid token_bound_cidrs entry \"10.0.0.0/33\": expected an IP address or a CIDR block",
        ),
        (
            json!({"password": PW, "token_type": "batch"}),
            "'token_type' \"batch\" is not supported: this server issues service tokens only",
        ),
        (
            json!({"password": "x".repeat(4097)}),
            "the password is longer than 4096 bytes",
        ),
    ] {
        assert_error(
            &s.post("auth/userpass/users/dave", &s.root, body).await,
            400,
            msg,
        );
    }
    assert_empty_404(&s.get("auth/userpass/users/dave", &s.root).await);

    assert_eq!(
        s.delete("auth/userpass/users/carol", &s.root).await.status,
        204
    );
    assert_empty_404(&s.get("auth/userpass/users/carol", &s.root).await);
    assert_error(
        &login(&s, "userpass", "carol", PW).await,
        400,
        "invalid username or password",
    );
}

// ------------------------------------------------------------ canonical names

#[tokio::test]
async fn usernames_are_canonical_before_the_acl_sees_them() {
    let s = TestServer::dev().await;
    enable(&s, "userpass").await;
    user(
        &s,
        "userpass",
        "admin",
        json!({"password": PW, "policies": "admin"}),
    )
    .await;
    // may manage every user but admin
    let t = s
        .token_with(
            r#"
            path "auth/userpass/users/*" { capabilities = ["create", "update", "read", "delete"] }
            path "auth/userpass/users/admin" { capabilities = ["deny"] }
            path "auth/userpass/users/admin/*" { capabilities = ["deny"] }
            "#,
        )
        .await;
    assert_denied(
        &s.post(
            "auth/userpass/users/admin",
            &t.id,
            json!({"password": "mine"}),
        )
        .await,
    );
    assert_denied(
        &s.post(
            "auth/userpass/users/admin/password",
            &t.id,
            json!({"password": "mine"}),
        )
        .await,
    );
    // the spellings Vault folds into `admin` are refused, never folded
    let invalid = "invalid username: usernames are lowercase ASCII letters, digits and '_-.@', begin and end with a letter, a digit or '_', and are at most 256 bytes (Vault folds case; here a name is never rewritten)";
    for spelling in [
        "ADMIN",
        "Admin",
        "admin%20",
        "%20admin",
        "admin.",
        "adm%C4%B1n",
    ] {
        for path in [
            format!("auth/userpass/users/{spelling}"),
            format!("auth/userpass/users/{spelling}/password"),
        ] {
            assert_error(
                &s.post(&path, &t.id, json!({"password": "mine"})).await,
                400,
                invalid,
            );
        }
        assert_error(&login(&s, "userpass", spelling, PW).await, 400, invalid);
    }
    // a trailing slash, plain or encoded, reaches no user: the deny holds
    // (and with rights there, it names no user: 404)
    for path in ["auth/userpass/users/admin/", "auth/userpass/users/admin%2F"] {
        assert_denied(&s.post(path, &t.id, json!({"password": "mine"})).await);
        assert_error(
            &s.post(path, &s.root, json!({"password": "mine"})).await,
            404,
            "unsupported path",
        );
    }
    // the real admin still logs in with its own password only
    assert_error(
        &login(&s, "userpass", "admin", "mine").await,
        400,
        "invalid username or password",
    );
    assert_eq!(login(&s, "userpass", "admin", PW).await.status, 200);
    // and the token may manage others
    let r = s
        .post("auth/userpass/users/eve", &t.id, json!({"password": PW}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
}

#[tokio::test]
async fn create_and_update_are_told_apart_on_users() {
    let s = TestServer::dev().await;
    enable(&s, "userpass").await;
    user(&s, "userpass", "existing", json!({"password": PW})).await;
    let create_only = s
        .token_with(r#"path "auth/userpass/users/*" { capabilities = ["create"] }"#)
        .await;
    let update_only = s
        .token_with(r#"path "auth/userpass/users/*" { capabilities = ["update"] }"#)
        .await;
    // create may add a user but not take over an existing one
    assert_denied(
        &s.post(
            "auth/userpass/users/existing",
            &create_only.id,
            json!({"password": "takeover"}),
        )
        .await,
    );
    let r = s
        .post(
            "auth/userpass/users/fresh",
            &create_only.id,
            json!({"password": PW}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    // update may change an existing user but not create one
    assert_denied(
        &s.post(
            "auth/userpass/users/other",
            &update_only.id,
            json!({"password": PW}),
        )
        .await,
    );
    let r = s
        .post(
            "auth/userpass/users/existing",
            &update_only.id,
            json!({"policies": "p"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(login(&s, "userpass", "existing", PW).await.status, 200);
}

// ------------------------------------------------------------ TTLs and renewal

#[tokio::test]
async fn ttls_follow_the_user_then_the_mount_and_renewals_are_capped() {
    let s = TestServer::dev().await;
    let r = s
        .post(
            "sys/auth/up",
            &s.root,
            json!({"type": "userpass", "config": {"default_lease_ttl": "20m", "max_lease_ttl": "1h"}}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    user(&s, "up", "m", json!({"password": PW})).await;
    user(
        &s,
        "up",
        "u",
        json!({"password": PW, "token_ttl": "5m", "token_max_ttl": "30m"}),
    )
    .await;
    // the mount's default; the user's own
    assert_eq!(
        login(&s, "up", "m", PW).await.auth()["lease_duration"],
        1200
    );
    let r = login(&s, "up", "u", PW).await;
    assert_eq!(r.auth()["lease_duration"], 300);
    let token = token_of(&r);

    // renewing for a day gives at most the user's max TTL from creation
    let r = s
        .post("auth/token/renew-self", &token, json!({"increment": "24h"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.auth()["lease_duration"], 1800);
    s.clock.advance(std::time::Duration::from_secs(1700));
    let r = s
        .post("auth/token/renew-self", &token, json!({"increment": "1h"}))
        .await;
    assert_eq!(r.auth()["lease_duration"], 100, "{}", r.text);
    s.clock.advance(std::time::Duration::from_secs(101));
    assert_denied(&lookup_self(&s, &token).await);
}

#[tokio::test]
async fn renewal_is_refused_once_the_user_changed_or_went_away() {
    let s = TestServer::dev().await;
    enable(&s, "userpass").await;
    user(
        &s,
        "userpass",
        "r",
        json!({"password": PW, "policies": "a"}),
    )
    .await;
    let token = token_of(&login(&s, "userpass", "r", PW).await);
    let r = s.post("auth/token/renew-self", &token, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);

    user(&s, "userpass", "r", json!({"policies": "a,b"})).await;
    assert_error(
        &s.post("auth/token/renew-self", &token, json!({})).await,
        400,
        "failed to renew entry: policies have changed, not renewing",
    );
    user(&s, "userpass", "r", json!({"policies": "a"})).await;
    assert_eq!(
        s.post("auth/token/renew-self", &token, json!({}))
            .await
            .status,
        200
    );
    assert_eq!(s.delete("auth/userpass/users/r", &s.root).await.status, 204);
    assert_error(
        &s.post("auth/token/renew-self", &token, json!({})).await,
        400,
        "failed to renew entry: the user no longer exists, not renewing",
    );
    // deleting a user does not revoke its tokens (Vault): they run out
    assert_eq!(lookup_self(&s, &token).await.status, 200);
}

// ------------------------------------------------------------ disabling

#[tokio::test]
async fn disabling_a_method_revokes_its_tokens_and_children_and_forgets_its_users() {
    let s = TestServer::dev().await;
    enable(&s, "userpass").await;
    user(
        &s,
        "userpass",
        "k",
        json!({"password": PW, "policies": "kid"}),
    )
    .await;
    s.write_policy(
        "kid",
        r#"path "auth/token/create" { capabilities = ["update"] }"#,
    )
    .await;
    let token = token_of(&login(&s, "userpass", "k", PW).await);
    let child = s.create_token(&token, json!({"policies": ["kid"]})).await;
    assert_eq!(lookup_self(&s, &child.id).await.status, 200);

    assert_eq!(s.delete("sys/auth/userpass", &s.root).await.status, 204);
    assert_denied(&lookup_self(&s, &token).await);
    assert_denied(&lookup_self(&s, &child.id).await);
    // a login to the path now reaches nothing
    assert_denied(&login(&s, "userpass", "k", PW).await);

    // enabled again at the same path: a new method, with no users, and the
    // old tokens stay dead
    enable(&s, "userpass").await;
    assert_error(
        &login(&s, "userpass", "k", PW).await,
        400,
        "invalid username or password",
    );
    assert_denied(&lookup_self(&s, &token).await);
}

#[tokio::test]
async fn tokens_of_a_method_that_is_gone_authorise_nothing_even_before_revocation() {
    // what a crash between writing the table and revoking the tokens would
    // leave: the tokens exist but their method does not
    let s = TestServer::dev().await;
    enable(&s, "userpass").await;
    user(&s, "userpass", "z", json!({"password": PW})).await;
    let token = token_of(&login(&s, "userpass", "z", PW).await);
    s.core.tokens.set_auth_methods(Default::default()).unwrap();
    assert_denied(&lookup_self(&s, &token).await);
    // tidy revokes them
    assert!(s.core.tokens.tidy().await.unwrap() >= 1);
    let table = s.core.mount_table().unwrap();
    s.core
        .tokens
        .set_auth_methods(table.auth_accessors())
        .unwrap();
    assert_denied(&lookup_self(&s, &token).await);
}

#[tokio::test]
async fn an_auth_method_cannot_be_moved() {
    let s = TestServer::dev().await;
    enable(&s, "userpass").await;
    assert_error(
        &s.post(
            "sys/remount",
            &s.root,
            json!({"from": "auth/userpass", "to": "auth/people"}),
        )
        .await,
        400,
        "moving an auth method is not supported: disable \"auth/userpass/\" and enable it again at \"auth/people/\"",
    );
}

// ------------------------------------------------------------ CIDR binding

#[tokio::test]
async fn logins_and_tokens_are_bound_to_the_users_cidrs() {
    let s = TestServer::dev().await;
    enable(&s, "userpass").await;
    user(
        &s,
        "userpass",
        "far",
        json!({"password": PW, "token_bound_cidrs": ["10.0.0.0/8"]}),
    )
    .await;
    user(
        &s,
        "userpass",
        "near",
        json!({"password": PW, "token_bound_cidrs": ["127.0.0.0/8"], "policies": "kid"}),
    )
    .await;
    s.write_policy(
        "kid",
        r#"path "auth/token/create" { capabilities = ["update"] }"#,
    )
    .await;
    // the right password from outside the range: denied
    assert_denied(&login(&s, "userpass", "far", PW).await);
    // a wrong one still says only that
    assert_error(
        &login(&s, "userpass", "far", "nope").await,
        400,
        "invalid username or password",
    );
    let r = login(&s, "userpass", "near", PW).await;
    let token = token_of(&r);
    let r = lookup_self(&s, &token).await;
    assert_eq!(
        r.data()["bound_cidrs"],
        json!(["127.0.0.0/8"]),
        "{}",
        r.text
    );
    // a child is bound where its parent is
    let child = s.create_token(&token, json!({"policies": ["kid"]})).await;
    let r = lookup_self(&s, &child.id).await;
    assert_eq!(
        r.data()["bound_cidrs"],
        json!(["127.0.0.0/8"]),
        "{}",
        r.text
    );

    // the same tokens from another address are refused, audited as such
    for t in [&token, &child.id] {
        let path =
            palisade_server::canonical::canonicalise(Operation::Read, "/v1/auth/token/lookup-self")
                .unwrap();
        let mut req = Request::new(Operation::Read, path.clone());
        req.remote_addr = "192.0.2.1".into();
        let err = s.core.begin(req, Some(t.clone())).await.err().unwrap();
        assert_eq!(err, palisade_server::logical::ApiError::permission_denied());
        let mut req = Request::new(Operation::Read, path);
        req.remote_addr = "127.0.0.5".into();
        assert!(matches!(
            s.core.begin(req, Some(t.clone())).await,
            Ok(Begun::Authorized(_))
        ));
    }
}

// ------------------------------------------------------------ audit and secrecy

#[tokio::test]
async fn logins_are_audited_with_the_password_and_token_hmacd() {
    let s = TestServer::dev().await;
    let log = s.enable_audit("file").await;
    enable(&s, "userpass").await;
    user(&s, "userpass", "audited", json!({"password": PW})).await;
    let token = token_of(&login(&s, "userpass", "audited", PW).await);
    assert_error(
        &login(&s, "userpass", "audited", "wrong-pw-123").await,
        400,
        "invalid username or password",
    );
    let text = std::fs::read_to_string(&log).unwrap();
    for secret in [PW, token.as_str(), "wrong-pw-123", "argon2"] {
        assert!(!text.contains(secret), "{secret:?} in the audit log");
    }
    let records = audit_records(&log);
    let logins = audit_for(&records, "auth/userpass/login/audited");
    assert_eq!(logins.len(), 4, "request and response of each login");
    let req = logins[0];
    assert_eq!(req["type"], "request");
    assert_eq!(req["request"]["mount_type"], "userpass");
    assert!(
        req["request"]["data"]["password"]
            .as_str()
            .unwrap()
            .starts_with("hmac-sha256:"),
        "{req}"
    );
    let resp = logins[1];
    assert!(
        resp["response"]["auth"]["client_token"]
            .as_str()
            .unwrap()
            .starts_with("hmac-sha256:"),
        "{resp}"
    );
    assert_eq!(logins[3]["error"], "invalid username or password");
    // user writes are audited with the password HMAC'd too
    let writes = audit_for(&records, "auth/userpass/users/audited");
    assert!(
        writes[0]["request"]["data"]["password"]
            .as_str()
            .unwrap()
            .starts_with("hmac-sha256:")
    );
}

#[tokio::test]
async fn a_sealed_server_logs_nobody_in() {
    let s = TestServer::dev().await;
    enable(&s, "userpass").await;
    user(&s, "userpass", "s", json!({"password": PW})).await;
    s.seal().await;
    assert_error(
        &login(&s, "userpass", "s", PW).await,
        503,
        "Vault is sealed",
    );
}

// ------------------------------------------------------------ review findings (issue #14 attack review)

#[tokio::test]
async fn a_users_period_is_capped_by_every_max_ttl() {
    let s = TestServer::dev().await;
    let r = s
        .post(
            "sys/auth/upr",
            &s.root,
            json!({"type": "userpass", "config": {"max_lease_ttl": "120s"}}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    user(
        &s,
        "upr",
        "p1",
        json!({"password": PW, "token_period": "7200s"}),
    )
    .await;
    user(
        &s,
        "upr",
        "p2",
        json!({"password": PW, "token_period": "3600s", "token_max_ttl": "60s"}),
    )
    .await;
    let r = login(&s, "upr", "p1", PW).await;
    assert_eq!(r.auth()["lease_duration"], 120, "{}", r.text);
    assert_eq!(
        r.body["warnings"],
        json!([
            "period of \"2h\" exceeded the effective max_ttl of \"2m\"; period value is capped accordingly"
        ])
    );
    let p1 = token_of(&r);
    assert_eq!(
        login(&s, "upr", "p2", PW).await.auth()["lease_duration"],
        60
    );
    let r = s.post("auth/token/renew-self", &p1, json!({})).await;
    assert_eq!(r.auth()["lease_duration"], 120, "{}", r.text);

    // the system max caps a period on renewal too
    enable(&s, "userpass").await;
    user(
        &s,
        "userpass",
        "p3",
        json!({"password": PW, "token_period": "1000000h"}),
    )
    .await;
    let r = login(&s, "userpass", "p3", PW).await;
    assert_eq!(r.auth()["lease_duration"], 2_764_800, "{}", r.text);
    let p3 = token_of(&r);
    let r = s.post("auth/token/renew-self", &p3, json!({})).await;
    assert_eq!(r.auth()["lease_duration"], 2_764_800, "{}", r.text);

    // a period an admin gives the user after its login still obeys its max
    user(
        &s,
        "userpass",
        "t9",
        json!({"password": PW, "token_ttl": "30s", "token_max_ttl": "60s"}),
    )
    .await;
    let t9 = token_of(&login(&s, "userpass", "t9", PW).await);
    user(&s, "userpass", "t9", json!({"token_period": 86400})).await;
    let r = s.post("auth/token/renew-self", &t9, json!({})).await;
    assert_eq!(r.auth()["lease_duration"], 60, "{}", r.text);
}

#[tokio::test]
async fn logins_waiting_for_a_hash_slot_never_hold_up_mount_changes() {
    let s = std::sync::Arc::new(TestServer::dev().await);
    enable(&s, "userpass").await;
    user(&s, "userpass", "w", json!({"password": PW})).await;
    // every login hashing slot taken: a login now waits for one
    let slots = s
        .core
        .hash_slots
        .login
        .acquire_many(palisade_server::userpass::MAX_CONCURRENT_HASHES as u32)
        .await
        .unwrap();
    let waiting = {
        let s = s.clone();
        tokio::spawn(async move { login(&s, "userpass", "w", "wrong").await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // a mount-table change and a request on a mount go through meanwhile
    let change = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        s.post("sys/mounts/kvx", &s.root, json!({"type": "kv"})),
    )
    .await
    .expect("the mount change waited for a login");
    assert_eq!(change.status, 204, "{}", change.text);
    // and an administrator's user write has hashing slots of its own
    let write = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        s.post(
            "auth/userpass/users/admin2",
            &s.root,
            json!({"password": PW}),
        ),
    )
    .await
    .expect("the user write waited for the login slots");
    assert_eq!(write.status, 204, "{}", write.text);
    drop(slots);
    assert_error(&waiting.await.unwrap(), 400, "invalid username or password");
}

#[tokio::test]
async fn refusals_under_an_auth_method_are_audited_and_tell_nothing_without_rights() {
    let s = TestServer::dev().await;
    let log = s.enable_audit("file").await;
    enable(&s, "userpass").await;
    let nobody = s.powerless_token().await;
    let manager = s
        .token_with(r#"path "auth/userpass/users/*" { capabilities = ["create", "update"] }"#)
        .await;
    // no rights on the method: the same 403 as for any path, whatever the spelling
    assert_denied(
        &s.post(
            "auth/userpass/users/ZZMARKUSER",
            &nobody.id,
            json!({"password": PW}),
        )
        .await,
    );
    assert_denied(&s.get("auth/userpass/zzmarkpath", &nobody.id).await);
    assert_denied(
        &s.post("auth/notamount/users/ZZMARKNONE", &nobody.id, json!({}))
            .await,
    );
    // rights on the method: the reason
    let invalid = "invalid username: usernames are lowercase ASCII letters, digits and '_-.@', begin and end with a letter, a digit or '_', and are at most 256 bytes (Vault folds case; here a name is never rewritten)";
    assert_error(
        &s.post(
            "auth/userpass/users/ZZMARKMGR",
            &manager.id,
            json!({"password": PW}),
        )
        .await,
        400,
        invalid,
    );
    assert_error(
        &login(&s, "userpass", "ZZMARKLOGIN", PW).await,
        400,
        invalid,
    );
    let records = audit_records(&log);
    for (path, error) in [
        ("auth/userpass/users/ZZMARKUSER", "permission denied"),
        ("auth/userpass/zzmarkpath", "permission denied"),
        ("auth/userpass/users/ZZMARKMGR", invalid),
        ("auth/userpass/login/ZZMARKLOGIN", invalid),
    ] {
        let recs = audit_for(&records, path);
        assert!(recs.iter().any(|r| r["error"] == error), "{path}: {recs:?}");
    }
}

#[tokio::test]
async fn request_values_never_reach_the_audit_log_through_error_texts() {
    let s = TestServer::dev().await;
    let log = s.enable_audit("file").await;
    enable(&s, "userpass").await;
    for (path, body) in [
        (
            "auth/userpass/users/bob",
            json!({"password": PW, "token_bound_cidrs": "MARKER-S3cret-cidr"}),
        ),
        (
            "auth/userpass/users/bob",
            json!({"password": PW, "token_type": "MARKER-S3cret-tt"}),
        ),
        ("sys/auth/mk1", json!({"type": "MARKER-S3cret-type"})),
        (
            "sys/auth/userpass/tune",
            json!({"token_type": "MARKER-S3cret-tune"}),
        ),
        (
            "sys/auth/mk2",
            json!({"type": "userpass", "config": {"token_type": "MARKER-S3cret-cfg"}}),
        ),
    ] {
        let r = s.post(path, &s.root, body).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text);
        // the client is told what was wrong, with its value
        assert!(r.text.contains("MARKER-S3cret"), "{}", r.text);
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("MARKER"), "a request value in the audit log");
}

#[tokio::test]
async fn auth_methods_tune_through_sys_mounts_as_the_vault_cli_does() {
    let s = TestServer::dev().await;
    enable(&s, "userpass").await;
    // `vault auth tune -max-lease-ttl=1h userpass/`
    let r = s
        .post(
            "sys/mounts/auth/userpass/tune",
            &s.root,
            json!({"max_lease_ttl": "1h"}),
        )
        .await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    let r = s.get("sys/mounts/auth/userpass/tune", &s.root).await;
    assert_eq!(r.data()["max_lease_ttl"], 3600, "{}", r.text);
    assert_eq!(
        s.get("sys/auth/userpass/tune", &s.root).await.data()["max_lease_ttl"],
        3600
    );
    let r = s.get("sys/mounts/auth/token/tune", &s.root).await;
    assert_eq!(r.data()["description"], "token based credentials");
    // sudo, as through sys/auth
    let no_sudo = s
        .token_with(r#"path "sys/mounts/*" { capabilities = ["create", "update", "read"] }"#)
        .await;
    assert_denied(
        &s.post(
            "sys/mounts/auth/userpass/tune",
            &no_sudo.id,
            json!({"max_lease_ttl": "2h"}),
        )
        .await,
    );
    assert_denied(&s.get("sys/mounts/auth/userpass/tune", &no_sudo.id).await);
}

#[tokio::test]
async fn sys_auth_input_of_the_wrong_shape_is_refused() {
    let s = TestServer::dev().await;
    assert_error(
        &s.post(
            "sys/auth/x10",
            &s.root,
            json!({"type": "userpass", "config": "notamap"}),
        )
        .await,
        400,
        "config must be an object",
    );
    assert_error(
        &s.post(
            "sys/auth/x11",
            &s.root,
            json!({"type": "userpass", "local": "maybe"}),
        )
        .await,
        400,
        "field \"local\" must be a boolean",
    );
    let r = s
        .post(
            "sys/auth/x12",
            &s.root,
            json!({"type": "userpass", "local": true, "seal_wrap": false}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.get("sys/auth/x12", &s.root).await;
    assert_eq!(r.data()["local"], true);
    assert_eq!(
        r.body["local"], true,
        "repeated at the top level: {}",
        r.text
    );
    assert!(s.get("sys/auth", &s.root).await.body["x12/"].is_object());
}
