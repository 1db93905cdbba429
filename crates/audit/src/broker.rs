//! The broker: fans each entry out to every enabled device and decides, by
//! Vault's rule, whether the request may proceed.

use std::sync::{Arc, PoisonError, RwLock};

use crate::AuditError;
use crate::file::FileDevice;
use crate::record::AuditEntry;

/// Mount paths compare without their trailing slash, so `file` and `file/`
/// name the same device whichever form the caller has at hand.
fn same_path(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// Handle to the set of enabled audit devices. Cloning is cheap and every
/// clone sees the same devices; safe to share across tasks.
#[derive(Clone, Default)]
pub struct Broker {
    // The lock only guards the list; writes happen on an Arc snapshot, so
    // enabling/disabling a device never waits behind file I/O.
    devices: Arc<RwLock<Vec<Slot>>>,
}

/// One configured device: open, or configured but not loaded (its file
/// could not be opened at unseal). An unavailable device is enabled as far
/// as the rule "at least one device must record" goes, and never records:
/// configured-but-not-loaded is unwritable, never "no devices".
#[derive(Clone, Debug)]
enum Slot {
    Ready(Arc<FileDevice>),
    Unavailable {
        path_name: String,
    },
    /// The broker is closed (the server sealed): nothing can be recorded
    /// until [`Broker::reset`] loads devices again, so nothing can be served
    /// as if no device were configured.
    Closed,
}

impl Slot {
    fn path_name(&self) -> &str {
        match self {
            Slot::Ready(d) => d.path_name(),
            Slot::Unavailable { path_name } => path_name,
            Slot::Closed => "",
        }
    }
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.snapshot().iter()).finish()
    }
}

impl Broker {
    pub fn new() -> Broker {
        Broker::default()
    }

    // The list is always in a consistent state (pushes and removals cannot
    // half-happen), so a poisoned lock is safe to recover from.
    fn snapshot(&self) -> Vec<Slot> {
        self.devices
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Enable a device. A device already enabled at the same path is replaced,
    /// so one path never writes two files.
    pub fn add(&self, dev: FileDevice) {
        self.put(Slot::Ready(Arc::new(dev)));
    }

    /// Register a device that is configured but could not be opened: every
    /// entry counts it as a device that failed to record.
    pub fn add_unavailable(&self, path_name: &str) {
        self.put(Slot::Unavailable {
            path_name: path_name.to_owned(),
        });
    }

    fn put(&self, slot: Slot) {
        let mut devices = self.devices.write().unwrap_or_else(PoisonError::into_inner);
        devices.retain(|d| !same_path(d.path_name(), slot.path_name()));
        devices.push(slot);
    }

    /// The open device at `path_name`, if any.
    pub fn device(&self, path_name: &str) -> Option<Arc<FileDevice>> {
        self.snapshot().into_iter().find_map(|s| match s {
            Slot::Ready(d) if same_path(d.path_name(), path_name) => Some(d),
            _ => None,
        })
    }

    /// Every open device.
    pub fn devices(&self) -> Vec<Arc<FileDevice>> {
        self.snapshot()
            .into_iter()
            .filter_map(|s| match s {
                Slot::Ready(d) => Some(d),
                Slot::Unavailable { .. } | Slot::Closed => None,
            })
            .collect()
    }

    /// Close the broker (on seal): every device is dropped and every
    /// entry fails until [`Broker::reset`].
    pub fn close(&self) {
        *self.devices.write().unwrap_or_else(PoisonError::into_inner) = vec![Slot::Closed];
    }

    /// Replace every device at once (after an unseal): the open ones and
    /// those configured but not loaded. Reopens a closed broker.
    pub fn reset(&self, ready: Vec<FileDevice>, unavailable: Vec<String>) {
        let slots = ready
            .into_iter()
            .map(|d| Slot::Ready(Arc::new(d)))
            .chain(
                unavailable
                    .into_iter()
                    .map(|path_name| Slot::Unavailable { path_name }),
            )
            .collect();
        *self.devices.write().unwrap_or_else(PoisonError::into_inner) = slots;
    }

    /// Disable the device at `path_name`; false if there was none. A `log`
    /// already in flight may still write its line to the removed device.
    pub fn remove(&self, path_name: &str) -> bool {
        let mut devices = self.devices.write().unwrap_or_else(PoisonError::into_inner);
        let before = devices.len();
        devices.retain(|d| !same_path(d.path_name(), path_name));
        devices.len() != before
    }

    pub fn is_empty(&self) -> bool {
        self.devices
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// `sys/audit-hash`: `input` hashed with the key of the device at
    /// `path_name`, or `None` if no such device is enabled.
    pub fn hash(&self, path_name: &str, input: &str) -> Option<String> {
        self.device(path_name).map(|d| d.hash(input))
    }

    /// Write the entry to every device. Ok if at least one device wrote it or
    /// no device is enabled (Vault's rule); `Err(AuditError::NoDeviceWrote)`
    /// when devices exist and all failed, and the server must then refuse the
    /// request (fail closed).
    ///
    /// Writes are plain blocking appends done inline: they go to the page
    /// cache (no fsync) and take microseconds, which is cheaper than a hop to
    /// the blocking pool. The future holds no lock across an await.
    pub async fn log(&self, entry: &AuditEntry) -> Result<(), AuditError> {
        let devices = self.snapshot();
        if devices.is_empty() {
            return Ok(());
        }
        let mut wrote = false;
        for slot in &devices {
            let dev = match slot {
                Slot::Ready(d) => d,
                Slot::Unavailable { path_name } => {
                    tracing::error!(device = %path_name, "audit device is configured but not loaded (its file could not be opened)");
                    continue;
                }
                Slot::Closed => continue,
            };
            match dev.write_entry(entry) {
                Ok(()) => wrote = true,
                // The error names the device and the I/O cause, never the
                // record, so it is safe to log.
                Err(e) => {
                    tracing::error!(device = %dev.path_name(), error = %e, "audit device failed to record an entry")
                }
            }
        }
        if wrote {
            Ok(())
        } else {
            tracing::error!(
                kind = entry.kind(),
                "no audit device recorded the entry; refusing the request"
            );
            Err(AuditError::NoDeviceWrote)
        }
    }
}
