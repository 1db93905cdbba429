//! `sys/remount` and `sys/remount/status/<migration_id>`: move a secrets
//! mount to another path, with its data, configuration and TTLs.
//!
//! A mount's data lives under `logical/<uuid>/`, keyed by the mount's UUID,
//! never by its path; so a move is one change of one barrier entry, the
//! mount table (`core/mounts`), written under the mount-table lock. It is
//! there entirely or not at all, whatever happens to the process (kill -9
//! included): there is no half-moved state to complete or roll back on
//! restart. The response is sent only once the table is written, so the new
//! path is in `sys/mounts` when the client reads it (hvac checks at once).
//! Requests routed to the mount before the move are waited for, and one
//! authorised on the old path but not yet executing is refused
//! ([`crate::core::Core::save_mounts`], `Core::route`).
//!
//! Vault runs the move in the background and answers with a migration ID;
//! here it has finished when the ID is returned, and its status is kept in
//! memory (as Vault's tracker: gone after a restart or seal).

use std::collections::VecDeque;
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::core::{Authorized, Core};
use crate::logical::{ApiError, Operation, Response, fields};
use crate::mounts::MountTable;

/// Paths that can be neither moved nor moved into (OpenBao's `protectedMounts`).
const PROTECTED: &[&str] = &["audit/", "auth/", "sys/", "cubbyhole/", "identity/"];

/// How many finished migrations are remembered.
const KEEP: usize = 256;

#[derive(Clone, Debug)]
struct Migration {
    id: String,
    source: String,
    target: String,
    status: &'static str,
}

/// The migrations of this unseal: in progress (at most one at a time, the
/// table lock serialises them) and the last [`KEEP`] finished.
#[derive(Default)]
pub struct Migrations {
    list: Mutex<VecDeque<Migration>>,
}

impl Migrations {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, VecDeque<Migration>>, ApiError> {
        self.list
            .lock()
            .map_err(|e| ApiError::internal(format!("migrations lock: {e}")))
    }

    /// Register a migration, unless one in progress moves the source or the
    /// destination (or a path inside or around either).
    fn start(&self, source: &str, target: &str) -> Result<String, ApiError> {
        let mut list = self.lock()?;
        let overlaps = |a: &str, b: &str| a.starts_with(b) || b.starts_with(a);
        for m in list.iter().filter(|m| m.status == "in-progress") {
            for (path, what) in [(source, "source"), (target, "destination")] {
                if overlaps(path, &m.source) || overlaps(path, &m.target) {
                    return Err(ApiError::bad_request(format!(
                        "cannot remount: the {what} {path:?} is being moved by migration {}",
                        m.id
                    )));
                }
            }
        }
        let id = palisade_core::uuid_v4();
        list.push_back(Migration {
            id: id.clone(),
            source: source.to_string(),
            target: target.to_string(),
            status: "in-progress",
        });
        while list.len() > KEEP {
            match list.iter().position(|m| m.status != "in-progress") {
                Some(i) => {
                    list.remove(i);
                }
                None => break,
            }
        }
        Ok(id)
    }

    fn finish(&self, id: &str, ok: bool) {
        if let Ok(mut list) = self.list.lock()
            && let Some(m) = list.iter_mut().find(|m| m.id == id)
        {
            m.status = if ok { "success" } else { "failure" };
        }
    }

    fn get(&self, id: &str) -> Result<Option<Migration>, ApiError> {
        Ok(self.lock()?.iter().find(|m| m.id == id).cloned())
    }

    /// Forget every migration (on seal).
    pub fn clear(&self) {
        if let Ok(mut list) = self.list.lock() {
            list.clear();
        }
    }
}

/// Vault's `sanitizePath`: no leading `/`, one trailing `/`.
fn sanitize(p: &str) -> String {
    let p = p.strip_prefix('/').unwrap_or(p);
    if p.ends_with('/') {
        p.to_string()
    } else {
        format!("{p}/")
    }
}

/// Go's `path.Clean` for a relative path, keeping a trailing `/`.
fn clean(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." if out.last().is_some_and(|s| *s != "..") => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut c = if out.is_empty() {
        ".".to_string()
    } else {
        out.join("/")
    };
    if p.ends_with('/') {
        c.push('/');
    }
    c
}

/// The mount that is `path` or contains it, else one inside `path`
/// (Vault's `MountConflict`).
fn conflict(table: &MountTable, path: &str) -> Option<String> {
    table
        .entries
        .iter()
        .filter(|m| path.starts_with(&m.path))
        .max_by_key(|m| m.path.len())
        .or_else(|| table.entries.iter().find(|m| m.path.starts_with(path)))
        .map(|m| m.path.clone())
}

fn path_field(auth: &Authorized, name: &str) -> Result<String, ApiError> {
    match auth.request().data.get(name) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(v) => fields::string(v, name),
    }
}

/// `POST sys/remount` (sudo, as Vault's root path; only `sys/remount` is
/// checked by the ACL, as in Vault, not the two mount paths).
pub async fn remount(core: &Core, auth: &Authorized) -> Result<Response, ApiError> {
    if auth.request().operation != Operation::Write {
        return Err(ApiError::unsupported_operation());
    }
    let from = path_field(auth, "from")?;
    let to = path_field(auth, "to")?;
    if from.is_empty() || to.is_empty() {
        return Err(ApiError::bad_request(
            "both 'from' and 'to' path must be specified as a string",
        ));
    }
    for (p, name) in [(&from, "from"), (&to, "to")] {
        if p.starts_with(' ') || p.ends_with(' ') {
            return Err(ApiError::bad_request(format!(
                "'{name}' path cannot contain trailing whitespace"
            )));
        }
    }
    let (from, to) = (sanitize(&from), sanitize(&to));
    let cleaned = clean(&to);
    if cleaned != to {
        return Err(ApiError::bad_request(format!(
            "invalid destination mount: path '{to}' does not match cleaned path '{cleaned}'"
        )));
    }
    // Go's unicode.IsPrint, as OpenBao checks: also the format characters
    // (U+200B, U+202E, ...) that no request path may carry (canonical.rs),
    // so a mount moved there could never be reached or disabled again
    if to.chars().any(|c| !crate::canonical::is_printable(c)) {
        return Err(ApiError::bad_request(
            "invalid destination mount: path cannot contain non-printable characters",
        ));
    }
    if from.starts_with("auth/") {
        if !to.starts_with("auth/") {
            return Err(ApiError::bad_request(format!(
                "cannot remount auth mount to non-auth mount {to:?}"
            )));
        }
        if from.starts_with("auth/token/") {
            return Err(ApiError::bad_request(format!("cannot remount {from:?}")));
        }
        if to.starts_with("auth/token/") {
            return Err(ApiError::bad_request(format!(
                "cannot remount to destination {to:?}"
            )));
        }
        let table = core.mount_table()?;
        let enabled = from.strip_prefix("auth/").is_some_and(|p| {
            table
                .auth
                .iter()
                .any(|m| m.path == p || m.path == format!("{p}/"))
        });
        return Err(ApiError::bad_request(if enabled {
            // a token records the login path it came from; a moved method
            // would leave them naming a path that is no longer its own
            format!(
                "moving an auth method is not supported: disable {from:?} and enable it again at {to:?}"
            )
        } else {
            format!("no matching mount at {from:?}")
        }));
    }
    for p in PROTECTED {
        if from.starts_with(p) {
            return Err(ApiError::bad_request(format!("cannot remount {from:?}")));
        }
        if to.starts_with(p) {
            return Err(ApiError::bad_request(format!(
                "cannot remount to destination {to}"
            )));
        }
    }
    // the destination by the rules of any new mount path (no whitespace,
    // no empty, `.` or `..` segment)
    let dest = MountTable::check_path(to.trim_end_matches('/'))?;

    let id = core.migrations.start(&from, &dest)?;
    let moved = move_mount(core, &from, &dest).await;
    core.migrations.finish(&id, moved.is_ok());
    moved?;
    tracing::info!(migration_id = %id, from = %from, to = %dest, "mount moved");
    Ok(Response::data(json!({ "migration_id": id }))
        .warn("Mount move has been queued. Progress will be reported in OpenBao's server log, tagged with the returned migration_id")
        .with_top_level())
}

async fn move_mount(core: &Core, from: &str, to: &str) -> Result<(), ApiError> {
    let Some(uuid) = core
        .mount_table()?
        .entries
        .iter()
        .find(|m| m.path == from)
        .map(|m| m.uuid.clone())
    else {
        return Err(ApiError::bad_request(format!(
            "no matching mount at {from:?}"
        )));
    };
    // a move that cannot happen revokes nothing (checked again below)
    if let Some(m) = conflict(&*core.mount_table()?, to) {
        return Err(ApiError::bad_request(format!(
            "path already in use at {m:?}"
        )));
    }
    // its leases are revoked first (Vault): their ids name the old path.
    // Not under the table lock: revocations wait on databases, and other
    // mount changes must not wait for them
    core.quiesce_mount(&uuid).await.map_err(|e| {
        ApiError::bad_request(format!(
            "failed to revoke leases of {from}: {}",
            e.messages.join("; ")
        ))
        .audited_as("failed to revoke leases")
    })?;
    let moved = async {
        let _g = core.table_lock.lock().await;
        let mut table = (*core.mount_table()?).clone();
        let Some(idx) = table
            .entries
            .iter()
            .position(|m| m.uuid == uuid && m.path == from)
        else {
            return Err(ApiError::bad_request(format!(
                "no matching mount at {from:?}"
            )));
        };
        if let Some(m) = conflict(&table, to) {
            return Err(ApiError::bad_request(format!(
                "path already in use at {m:?}"
            )));
        }
        // same UUID, accessor, options and TTLs: only the path changes
        table.entries[idx].path = to.to_string();
        core.save_mounts(table).await
    }
    .await;
    core.untaint(&uuid);
    moved
}

/// `GET sys/remount/status/<migration_id>`.
pub fn status(core: &Core, auth: &Authorized, id: &str) -> Result<Response, ApiError> {
    if auth.request().operation != Operation::Read {
        return Err(ApiError::unsupported_operation());
    }
    if id.is_empty() {
        return Err(ApiError::unsupported_path());
    }
    let m = core.migrations.get(id)?.ok_or_else(ApiError::not_found)?;
    Ok(Response::data(json!({
        "migration_id": m.id,
        "migration_info": {
            "source_mount": m.source,
            "target_mount": m.target,
            "status": m.status,
        },
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_migration_overlapping_one_in_progress_is_refused() {
        let m = Migrations::default();
        let first = m.start("a/", "b/").unwrap();
        for (from, to, what, path) in [
            ("b/", "c/", "source", "b/"),
            ("a/x/", "c/", "source", "a/x/"),
            ("c/", "a/", "destination", "a/"),
            ("c/", "b/y/", "destination", "b/y/"),
        ] {
            assert_eq!(
                m.start(from, to).unwrap_err(),
                ApiError::bad_request(format!(
                    "cannot remount: the {what} {path:?} is being moved by migration {first}"
                )),
                "{from} -> {to}"
            );
        }
        // unrelated paths move meanwhile; once finished, the paths are free
        let other = m.start("c/", "d/").unwrap();
        m.finish(&first, true);
        m.finish(&other, false);
        assert_eq!(m.get(&first).unwrap().unwrap().status, "success");
        assert_eq!(m.get(&other).unwrap().unwrap().status, "failure");
        assert!(m.start("b/", "a/").is_ok());
        // only the last KEEP finished migrations are remembered
        for _ in 0..KEEP + 10 {
            let id = m.start("x/", "y/").unwrap();
            m.finish(&id, true);
        }
        assert!(m.lock().unwrap().len() <= KEEP + 1);
        assert!(m.get(&first).unwrap().is_none());
    }

    #[test]
    fn paths_are_cleaned_as_go_does() {
        assert_eq!(clean("a/b/"), "a/b/");
        assert_eq!(clean("a//b/"), "a/b/");
        assert_eq!(clean("a/./b/"), "a/b/");
        assert_eq!(clean("a/../b/"), "b/");
        assert_eq!(clean("../b/"), "../b/");
        assert_eq!(sanitize("/kv"), "kv/");
        assert_eq!(sanitize("kv/"), "kv/");
    }
}
