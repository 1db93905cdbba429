//! palisade-audit: the audit log. It owns the Vault-shaped audit record, the
//! per-device HMAC redaction of credentials and data, the hash-chained
//! append-only `file` device, the fail-closed [`Broker`] that fans an entry out
//! to every enabled device, and [`verify`], the offline chain checker.
//!
//! # Where it sits
//!
//! `Core::execute` calls [`Broker::log`] twice per request: once with the
//! request after the ACL check and *before* the engine runs, and once with the
//! response after it. Both calls fail closed: when audit devices are enabled
//! and none of them could record the entry, `log` returns
//! [`AuditError::NoDeviceWrote`] and the server must refuse the request (a
//! request that cannot be audited must not happen). With no device enabled,
//! logging is a no-op, as in Vault.
//!
//! The server hands the broker *raw* values ([`AuditEntry`]); each device
//! redacts with its own HMAC key (the salt the server persists behind its
//! barrier), so the same token hashes differently per device, and
//! `sys/audit-hash` ([`Broker::hash`]) lets an operator find a known token in
//! a log without the log ever holding it.
//!
//! # Record and chain
//!
//! One JSON object per line, Vault's file-device shape plus three chain fields:
//!
//! ```text
//! {"time":"…","type":"request","auth":{…},"request":{…},"seq":7,"prev_hash":"<64 hex>","hash":"<64 hex>"}
//! ```
//!
//! `hash` is always the last field and is `SHA-256` (hex) of every byte of the
//! line before `,"hash":"`; `prev_hash` is the previous line's `hash` (64 zeros
//! on the first line) and `seq` counts lines from 0. [`verify`] checks this on
//! the raw bytes and never re-serialises, so it detects an edited, removed,
//! inserted, duplicated or reordered line, and leading lines cut off the
//! start of a file (the first line must be `seq` 0 with a zero `prev_hash`).
//!
//! Limits, stated plainly:
//! - **Truncation of trailing lines cannot be detected from the file alone**:
//!   a file cut after any complete line is a valid, shorter chain. The server
//!   keeps each device's [`Head`] (last `seq` and `hash`) behind its barrier
//!   as an anchor; [`verify_against`] with that head reports a cut-off tail.
//! - The chain hash is unkeyed, so it is tamper *evidence* against partial
//!   edits; someone who can rewrite the whole file can recompute every hash.
//!   Shipping lines (or the head hash) off-host is what closes that gap.
//! - Each file is its own chain. Rotate by moving the file away and reopening
//!   the device (a fresh file starts again at `seq` 0); `copytruncate`-style
//!   rotation shows up as "leading lines removed".
//!
//! # Durability
//!
//! Each line is one append (`O_APPEND`) of the complete line including its
//! `\n`, made before `log` returns. There is no fsync: the line has reached the
//! kernel before the request is acknowledged, so it survives `kill -9` of the
//! server, but not necessarily a power loss (Vault's file device behaves the
//! same). A partial write (disk full mid-line) is rolled back so the next line
//! never lands after a torn fragment; if it cannot be rolled back the device
//! disables itself rather than corrupt the chain.
//!
//! # Reopening
//!
//! [`FileDevice::open`] (enabling a device) refuses a file that is not an
//! audit log. [`FileDevice::reopen`] (after an unseal) never fails because of
//! what the file holds: it continues from the file's last record when that is
//! at or past the anchored head, and from the anchor otherwise, so the audit
//! log's contents cannot keep the server sealed.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod broker;
mod chain;
mod file;
mod record;
mod redact;
mod verify;

pub use broker::Broker;
pub use file::{FileDevice, Head, Reopened, Trust};
pub use record::{AuditAuth, AuditEntry, AuditRequest, AuditResponse, AuditWrapInfo};
pub use verify::{LineProblem, VerifyError, VerifyReport, verify, verify_against, verify_range};

/// Largest record a device writes in full. A record that would be larger
/// (a request body of very many small values grows when each is hashed) has
/// each `data` replaced by a summary: its size and the HMAC of its JSON text.
pub const MAX_RECORD_BYTES: usize = 4 * 1024 * 1024;

use std::path::PathBuf;

/// Errors from opening a device or recording an entry. Messages name the device
/// and file but never carry record contents, so they are safe to log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Devices are enabled and every one of them failed: the server must refuse
    /// the request (fail closed). Per-device causes are logged via `tracing`.
    #[error("no audit device recorded the entry; refusing the request")]
    NoDeviceWrote,
    /// The log file could not be opened or inspected.
    #[error("audit device {device}: cannot open {}: {source}", path.display())]
    Open {
        device: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The existing file's last line is not a sealed record we can chain onto
    /// (torn final write, edited tail, or not a Palisade audit log). Continuing
    /// would produce a file that fails verification, so the device refuses to
    /// open; move the file aside (after running `verify` on it) to start anew.
    #[error("audit device {device}: cannot continue the hash chain of {}: {reason}", path.display())]
    Recover {
        device: String,
        path: PathBuf,
        reason: String,
    },
    /// Writing the line failed; nothing was left behind in the file.
    #[error("audit device {device}: write failed: {source}")]
    Write {
        device: String,
        source: std::io::Error,
    },
    /// An earlier partial write could not be rolled back, so appending more
    /// lines would chain onto a torn fragment. The device stays failed until it
    /// is reopened on a repaired file.
    #[error("audit device {device}: disabled after a partial write that could not be rolled back")]
    Disabled { device: String },
    /// The record could not be serialised (not expected for JSON values).
    #[error("audit record could not be serialised: {0}")]
    Serialize(#[from] serde_json::Error),
}
