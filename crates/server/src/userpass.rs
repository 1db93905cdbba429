//! The `userpass` auth method (Vault's API): users with argon2id-hashed
//! passwords, the token settings their logins get, and `login/<username>`.
//!
//! Storage: the method's view `auth/<uuid>/`, one entry per user at
//! `user/<username>` holding a [`User`] (the PHC string, never the password).
//!
//! Usernames are canonical before anything sees them ([`parse`], called by
//! `Core::begin` before the ACL check and by the handlers): Vault's
//! `\w(([\w-.@]+)?\w)?`, and lowercase. Vault folds case (`Bob` logs in as
//! `bob`, and an ACL written for `users/bob` is bypassed by `users/BOB`);
//! here an uppercase name is refused with 400, never folded.
//!
//! Logins (`Core::open_login`) are unauthenticated, audited like every
//! request (the password HMAC'd with the other strings), and cost one
//! argon2id verification whether or not the user exists. At most
//! [`MAX_CONCURRENT_HASHES`] hashes run at once, off the async runtime;
//! a login that cannot get a slot within [`HASH_WAIT`] gets 429.

use std::sync::LazyLock;
use std::time::Duration;

use palisade_barrier::View;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::core::{Authorized, Core};
use crate::logical::{ApiError, Operation, Request, Response};
use crate::mounts::MountEntry;
use crate::token::TokenEntry;
use crate::token_params::{Login, TokenParams};

/// Longest username, in bytes.
pub const MAX_USERNAME_BYTES: usize = 256;
/// Password hashes running at once (each takes ~20 ms and 19 MiB).
pub const MAX_CONCURRENT_HASHES: usize = 4;
/// How long a login or password change waits for a hashing slot.
pub const HASH_WAIT: Duration = Duration::from_secs(5);

const USER_PREFIX: &str = "user/";

/// What a path under a userpass mount names, its username checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserpassPath<'a> {
    /// `LIST users/`
    Users,
    /// `users/<name>`: read, create/update, delete.
    User(&'a str),
    /// `users/<name>/password`
    Password(&'a str),
    /// `users/<name>/policies`
    Policies(&'a str),
    /// `login/<name>` (unauthenticated)
    Login(&'a str),
}

/// Vault's `GenericNameWithAtRegex` (`\w(([\w-.@]+)?\w)?`, ASCII), lowercase.
pub fn is_canonical_username(name: &str) -> bool {
    let word = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_';
    let b = name.as_bytes();
    if b.len() > MAX_USERNAME_BYTES {
        return false;
    }
    match b {
        [] => false,
        [c] => word(*c),
        [first, mid @ .., last] => {
            word(*first)
                && word(*last)
                && mid
                    .iter()
                    .all(|&c| word(c) || c == b'-' || c == b'.' || c == b'@')
        }
    }
}

fn invalid_username() -> ApiError {
    ApiError::bad_request(
        "invalid username: usernames are lowercase ASCII letters, digits and '_-.@', begin and end with a letter, a digit or '_', and are at most 256 bytes (Vault folds case; here a name is never rewritten)",
    )
}

/// The path relative to a userpass mount, for `op`. A username that is not
/// canonical → 400; a path the method does not have → 404; an operation
/// the path does not have → 405.
pub fn parse(op: Operation, rel: &str) -> Result<UserpassPath<'_>, ApiError> {
    let name = |n: &'_ str| -> Result<(), ApiError> {
        if is_canonical_username(n) {
            Ok(())
        } else {
            Err(invalid_username())
        }
    };
    if rel == "users/" || rel == "users" {
        return match op {
            Operation::List => Ok(UserpassPath::Users),
            _ => Err(ApiError::unsupported_operation()),
        };
    }
    if let Some(rest) = rel.strip_prefix("users/") {
        let (user, sub) = match rest.split_once('/') {
            Some((u, s)) => (u, Some(s)),
            None => (rest, None),
        };
        name(user)?;
        let (path, ok) = match sub {
            None => (
                UserpassPath::User(user),
                matches!(op, Operation::Read | Operation::Write | Operation::Delete),
            ),
            Some("password") => (UserpassPath::Password(user), op == Operation::Write),
            Some("policies") => (UserpassPath::Policies(user), op == Operation::Write),
            Some(_) => return Err(ApiError::unsupported_path()),
        };
        return if ok {
            Ok(path)
        } else {
            Err(ApiError::unsupported_operation())
        };
    }
    if let Some(user) = rel.strip_prefix("login/") {
        name(user)?;
        return if op == Operation::Write {
            Ok(UserpassPath::Login(user))
        } else {
            Err(ApiError::unsupported_operation())
        };
    }
    Err(ApiError::unsupported_path())
}

/// A user, as stored: the PHC string (never the password) and the token
/// settings its logins get.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct User {
    /// argon2id PHC string.
    pub password_hash: String,
    #[serde(flatten)]
    pub token: TokenParams,
}

impl User {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        self.token.write_json(&mut m);
        m.insert("ttl".into(), json!(self.token.token_ttl));
        m.insert("max_ttl".into(), json!(self.token.token_max_ttl));
        m.insert("bound_cidrs".into(), json!(self.token.token_bound_cidrs));
        Value::Object(m)
    }
}

fn view(core: &Core, mount: &MountEntry) -> View {
    View::new(core.barrier.clone(), mount.auth_view_prefix())
}

async fn get_user(view: &View, name: &str) -> Result<Option<User>, ApiError> {
    match view.get(&format!("{USER_PREFIX}{name}")).await? {
        None => Ok(None),
        Some(b) => Ok(Some(
            serde_json::from_slice(&b).map_err(ApiError::internal)?,
        )),
    }
}

async fn put_user(view: &View, name: &str, user: &User) -> Result<(), ApiError> {
    let bytes = serde_json::to_vec(user).map_err(ApiError::internal)?;
    Ok(view.put(&format!("{USER_PREFIX}{name}"), &bytes).await?)
}

/// User writes are serialised: create-or-update is decided once, under the
/// lock, and an update never loses a field another one wrote meanwhile.
static WRITES: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(|| tokio::sync::Mutex::new(()));

/// Slots for password hashing (each hash ~20 ms and 19 MiB): logins take
/// [`HashSlots::login`], authenticated user writes [`HashSlots::admin`], so a
/// flood of anonymous logins never holds up an administrator.
pub struct HashSlots {
    pub login: tokio::sync::Semaphore,
    pub admin: tokio::sync::Semaphore,
}

/// Hashing slots for user writes.
pub const MAX_ADMIN_HASHES: usize = 2;

impl Default for HashSlots {
    fn default() -> Self {
        HashSlots {
            login: tokio::sync::Semaphore::new(MAX_CONCURRENT_HASHES),
            admin: tokio::sync::Semaphore::new(MAX_ADMIN_HASHES),
        }
    }
}

/// Run password hashing work off the runtime, in one of `slots`.
async fn hashing<T: Send + 'static>(
    slots: &tokio::sync::Semaphore,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let _permit = match tokio::time::timeout(HASH_WAIT, slots.acquire()).await {
        Ok(Ok(p)) => p,
        _ => {
            return Err(ApiError::new(
                429,
                "too many logins in progress; retry later",
            ));
        }
    };
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("password hashing task: {e}")))
}

async fn hash_password(core: &Core, password: String) -> Result<String, ApiError> {
    let password = zeroize::Zeroizing::new(password);
    hashing(&core.hash_slots.admin, move || {
        palisade_crypto::password::hash(password.as_bytes())
    })
    .await?
    .map_err(|e| match e {
        palisade_crypto::password::PasswordError::Hash => {
            ApiError::internal("password hashing failed")
        }
        e => ApiError::bad_request(e.to_string()),
    })
}

fn password_field(req: &Request) -> Result<Option<String>, ApiError> {
    match req.data.get("password") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        // never echo the value: it is a password
        Some(_) => Err(ApiError::bad_request("password must be a string")),
    }
}

fn policies_field(req: &Request) -> Result<Option<Vec<String>>, ApiError> {
    crate::token_params::policies_field(req)
}

/// Whether a user exists (the ACL's create-or-update decision).
pub async fn user_exists(core: &Core, mount: &MountEntry, name: &str) -> Result<bool, ApiError> {
    Ok(get_user(&view(core, mount), name).await?.is_some())
}

/// Every request under a userpass mount but `login/` (which is open).
pub async fn handle(
    core: &Core,
    auth: &Authorized,
    mount: &MountEntry,
    rel: &str,
) -> Result<Response, ApiError> {
    let req = auth.request();
    let view = view(core, mount);
    match parse(req.operation, rel)? {
        UserpassPath::Users => {
            let mut keys = view.list(USER_PREFIX).await?;
            keys.sort();
            if keys.is_empty() {
                return Err(ApiError::not_found());
            }
            Ok(Response::data(json!({ "keys": keys })))
        }
        UserpassPath::User(name) => match req.operation {
            Operation::Read => {
                let user = get_user(&view, name)
                    .await?
                    .ok_or_else(ApiError::not_found)?;
                Ok(Response::data(user.to_json()))
            }
            Operation::Delete => {
                let _g = WRITES.lock().await;
                view.delete(&format!("{USER_PREFIX}{name}")).await?;
                Ok(Response::no_content())
            }
            _ => write_user(core, auth, &view, name).await,
        },
        UserpassPath::Password(name) => {
            let password =
                password_field(req)?.ok_or_else(|| ApiError::bad_request("missing password"))?;
            let hash = hash_password(core, password).await?;
            let _g = WRITES.lock().await;
            let mut user = get_user(&view, name)
                .await?
                .ok_or_else(|| ApiError::bad_request("username does not exist"))?;
            user.password_hash = hash;
            put_user(&view, name, &user).await?;
            Ok(Response::no_content())
        }
        UserpassPath::Policies(name) => {
            let policies = policies_field(req)?
                .ok_or_else(|| ApiError::bad_request("missing token_policies"))?;
            let _g = WRITES.lock().await;
            let mut user = get_user(&view, name)
                .await?
                .ok_or_else(|| ApiError::bad_request("username does not exist"))?;
            user.token.token_policies = policies;
            put_user(&view, name, &user).await?;
            Ok(Response::no_content())
        }
        UserpassPath::Login(_) => Err(ApiError::unsupported_path()),
    }
}

/// `POST users/<name>`: create (a password is required) or update (fields
/// not given keep their value). Whether it creates or updates is decided
/// again under the writes' lock, against what the ACL allows.
async fn write_user(
    core: &Core,
    auth: &Authorized,
    view: &View,
    name: &str,
) -> Result<Response, ApiError> {
    use palisade_policy::Capability;
    let req = auth.request();
    // validate everything, and hash, before taking the lock
    let mut probe = TokenParams::default();
    probe.apply(req)?;
    let hash = match password_field(req)? {
        Some(p) => Some(hash_password(core, p).await?),
        None => None,
    };
    let _g = WRITES.lock().await;
    let existing = get_user(view, name).await?;
    let create = existing.is_none();
    let allowed = if create {
        auth.allows(Capability::Create)
    } else {
        auth.allows(Capability::Update)
    };
    if !allowed {
        return Err(ApiError::permission_denied());
    }
    let mut user = existing.unwrap_or_else(|| User {
        password_hash: String::new(),
        token: TokenParams::new(),
    });
    user.token.apply(req)?;
    match hash {
        Some(h) => user.password_hash = h,
        None if create => return Err(ApiError::bad_request("missing password")),
        None => {}
    }
    put_user(view, name, &user).await?;
    Ok(Response::no_content())
}

/// The answer to every failed login: the same whether the user does not
/// exist or the password is wrong (Vault's message).
fn invalid_credentials() -> ApiError {
    ApiError::bad_request("invalid username or password")
}

/// `POST login/<name>` on `mount` (the core has audited the request; `name`
/// is as sent, checked here). The password is verified without holding
/// anything but a hashing slot; the token is created under the mount gate,
/// once the method is known to be still enabled: an orphan issued by the
/// method, valid only while it stays enabled.
pub async fn login(
    core: &Core,
    mount: &MountEntry,
    name: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    if req.operation != Operation::Write {
        return Err(ApiError::unsupported_operation());
    }
    if !is_canonical_username(name) {
        return Err(invalid_username());
    }
    let password = password_field(req)?.ok_or_else(|| ApiError::bad_request("missing password"))?;
    // a locked-out name is refused before its password is looked at
    let lockout = &mount.config.user_lockout;
    let attempt = core
        .lockouts
        .begin(lockout, &mount.accessor, name, &|| core.tokens.now())
        .await?;
    let user = get_user(&view(core, mount), name).await?;
    let password = zeroize::Zeroizing::new(password);
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let ok = hashing(&core.hash_slots.login, move || match stored {
        Some(h) => palisade_crypto::password::verify(password.as_bytes(), &h),
        None => palisade_crypto::password::verify_unknown(password.as_bytes()),
    })
    .await?;
    let user = match user {
        Some(u) if ok => u,
        _ => {
            attempt.failed(core.tokens.now());
            return Err(invalid_credentials());
        }
    };
    attempt.succeeded();
    if !crate::token::address_allowed(&user.token.token_bound_cidrs, &req.remote_addr) {
        return Err(ApiError::permission_denied());
    }
    let mut meta = Map::new();
    meta.insert("username".into(), Value::String(name.to_string()));
    crate::token_params::issue(
        core,
        Login {
            mount,
            params: &user.token,
            meta,
            display_name: format!("{}-{name}", mount.kind),
            path: format!("auth/{}login/{name}", mount.path),
            alias: name.to_string(),
            alias_metadata: Default::default(),
            groups: None,
        },
    )
    .await
}

/// What renewing a token this method issued may grant (Vault's
/// `pathLoginRenew`): the user must still exist with the same policies.
pub async fn renew_entry(
    core: &Core,
    mount: &MountEntry,
    e: &TokenEntry,
) -> Result<TokenEntry, ApiError> {
    let name = e
        .meta
        .get("username")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let user = get_user(&view(core, mount), name).await?;
    crate::token_params::renew(core, mount, user.as_ref().map(|u| &u.token), "user", e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Operation::*;

    #[test]
    fn usernames_must_already_be_canonical() {
        for ok in ["bob", "b", "alice@example.com", "svc-1.ci", "_x_", "a1"] {
            assert!(is_canonical_username(ok), "{ok}");
        }
        for bad in [
            "",
            "Bob",
            "BOB",
            "bob ",
            " bob",
            "-bob",
            "bob-",
            ".bob",
            "bob.",
            "@bob",
            "b*b",
            "b/b",
            "bö",
            "b\u{200b}b",
        ] {
            assert!(!is_canonical_username(bad), "{bad:?}");
        }
        assert!(is_canonical_username(&"a".repeat(256)));
        assert!(!is_canonical_username(&"a".repeat(257)));
    }

    #[test]
    fn paths_parse_into_what_the_handler_acts_on() {
        assert_eq!(parse(List, "users/"), Ok(UserpassPath::Users));
        assert_eq!(parse(Read, "users/bob"), Ok(UserpassPath::User("bob")));
        assert_eq!(parse(Write, "users/bob"), Ok(UserpassPath::User("bob")));
        assert_eq!(parse(Delete, "users/bob"), Ok(UserpassPath::User("bob")));
        assert_eq!(
            parse(Write, "users/bob/password"),
            Ok(UserpassPath::Password("bob"))
        );
        assert_eq!(
            parse(Write, "users/bob/policies"),
            Ok(UserpassPath::Policies("bob"))
        );
        assert_eq!(parse(Write, "login/bob"), Ok(UserpassPath::Login("bob")));
        assert_eq!(parse(Write, "users/Bob"), Err(invalid_username()));
        assert_eq!(parse(Write, "login/BOB"), Err(invalid_username()));
        assert_eq!(
            parse(Read, "users/bob/password"),
            Err(ApiError::unsupported_operation())
        );
        assert_eq!(
            parse(Read, "login/bob"),
            Err(ApiError::unsupported_operation())
        );
        assert_eq!(
            parse(Write, "users/bob/x"),
            Err(ApiError::unsupported_path())
        );
        assert_eq!(parse(Read, "config"), Err(ApiError::unsupported_path()));
        assert_eq!(
            parse(Write, "users/"),
            Err(ApiError::unsupported_operation())
        );
    }
}
