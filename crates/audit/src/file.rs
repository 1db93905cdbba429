//! The `file` audit device: one append-only, hash-chained log file.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use palisade_crypto::mac::MacKey;

use crate::AuditError;
use crate::chain::{self, ZERO_HASH};
use crate::record::AuditEntry;
use crate::redact;

/// How far back open-time recovery reads per step while looking for the start
/// of the last line.
const TAIL_CHUNK: u64 = 64 * 1024;
/// Largest last line recovery will load: a record is summarised long before
/// it reaches this size ([`crate::MAX_RECORD_BYTES`]), so a longer "line"
/// means the file is not (only) an audit log, and refusing beats allocating.
const MAX_LINE: u64 = 2 * crate::MAX_RECORD_BYTES as u64;

/// Chain state; guarded by one mutex so that picking `seq`/`prev_hash`, writing
/// the line and advancing happen as one step and lines land in chain order.
struct Chain {
    file: File,
    next_seq: u64,
    prev_hash: String,
    /// Set when a torn line could not be rolled back: any further append would
    /// follow garbage, so the device fails every write instead.
    disabled: bool,
}

/// One enabled `file` audit device.
pub struct FileDevice {
    path_name: String,
    file_path: PathBuf,
    key: MacKey,
    chain: Mutex<Chain>,
}

impl fmt::Debug for FileDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileDevice")
            .field("path_name", &self.path_name)
            .field("file_path", &self.file_path)
            .finish_non_exhaustive()
    }
}

/// The last record a device wrote: what the server keeps behind its barrier
/// as the device's anchor, and what `verify --head` checks a file against.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Head {
    /// `seq` of the last record written.
    pub seq: u64,
    /// `hash` of that record.
    pub hash: String,
}

/// How much the opener of a device trusts its `file_path`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Set by the operator in the server's configuration file: symlinks are
    /// followed and special files (a FIFO to a log shipper) are allowed.
    Operator,
    /// Asked for over the API: only a regular file reached without a symlink
    /// in its last component, created new or already holding an audit log.
    Api,
}

/// A device reopened after an unseal, and what recovery found.
#[derive(Debug)]
pub struct Reopened {
    pub device: FileDevice,
    /// Set when the file did not continue the anchored chain (truncated,
    /// replaced, torn or foreign tail): the device continues anyway, from the
    /// anchor, and the break stays visible to `verify`. Names files and
    /// sequence numbers only.
    pub warning: Option<String>,
}

/// The user the server runs as (the owner of `/proc/self`).
fn process_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

fn open_file(file_path: &Path, trust: Trust) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    // Read access is only for recovering the tail; writes always go to
    // the end thanks to O_APPEND, whatever else appends to the file.
    opts.read(true).append(true).mode(0o600);
    if trust == Trust::Operator {
        return opts.create(true).open(file_path);
    }
    match std::fs::symlink_metadata(file_path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // O_CREAT|O_EXCL never follows a symlink planted meanwhile
            opts.create_new(true).open(file_path)
        }
        Err(e) => Err(e),
        Ok(m) if !m.file_type().is_file() => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (symlinks and special files are refused)",
        )),
        Ok(m) => {
            use std::os::unix::fs::MetadataExt;
            // a hard link would let one device write another file (or
            // another device's log) under a name inside the allowed place
            if m.nlink() != 1 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the file has other hard links",
                ));
            }
            // only a file the server itself created (or owns) is continued
            if Some(m.uid()) != process_uid() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the file is not owned by the server's user",
                ));
            }
            let file = opts.open(file_path)?;
            let now = file.metadata()?;
            // the path was swapped (e.g. for a symlink) between the check and the open
            if now.dev() != m.dev() || now.ino() != m.ino() || !now.is_file() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the file changed while it was opened",
                ));
            }
            // an existing file (say, an empty one someone made) becomes private
            {
                use std::os::unix::fs::PermissionsExt;
                if now.permissions().mode() & 0o077 != 0 {
                    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                }
            }
            Ok(file)
        }
    }
}

impl FileDevice {
    /// Open `file_path` to enable a device (created with mode 0600; an existing
    /// file's mode is left alone), continuing the chain from the existing
    /// file's last line, read from its tail only (files can be large).
    /// `hmac_key` is the per-device salt the server persists behind its barrier.
    ///
    /// Fails with [`AuditError::Recover`] if the file does not end in a sealed
    /// record (torn final line, edited tail, foreign content): a device is
    /// never enabled on a file that is not an audit log. With
    /// [`Trust::Operator`], non-regular files (e.g. a FIFO) start a fresh chain;
    /// with [`Trust::Api`] they, and symlinks, are refused.
    pub fn open(
        path_name: &str,
        file_path: &Path,
        hmac_key: &[u8],
        trust: Trust,
    ) -> Result<FileDevice, AuditError> {
        let open_err = |source| AuditError::Open {
            device: path_name.to_owned(),
            path: file_path.to_owned(),
            source,
        };
        let file = open_file(file_path, trust).map_err(open_err)?;
        let (next_seq, prev_hash) = match recover(&file) {
            Ok(Some(last)) => (
                last.seq.checked_add(1).ok_or_else(|| AuditError::Recover {
                    device: path_name.to_owned(),
                    path: file_path.to_owned(),
                    reason: "sequence number exhausted".into(),
                })?,
                last.hash,
            ),
            Ok(None) => (0, ZERO_HASH.to_owned()),
            Err(Recover::Io(source)) => return Err(open_err(source)),
            Err(Recover::Bad(reason)) => {
                return Err(AuditError::Recover {
                    device: path_name.to_owned(),
                    path: file_path.to_owned(),
                    reason,
                });
            }
        };
        Ok(Self::new(
            path_name, file_path, hmac_key, file, next_seq, prev_hash,
        ))
    }

    /// Reopen an enabled device after an unseal. Unlike [`FileDevice::open`]
    /// this never fails because of what the file holds, so the audit log's
    /// contents cannot decide whether the server unseals: the chain continues
    /// from the file's last record when that record is at or past `anchor`,
    /// and from `anchor` otherwise (a truncated, replaced, edited or torn
    /// file), with a [`Reopened::warning`]. A torn last line is closed with a
    /// newline first, so it stays a visible break and the next record starts
    /// a line of its own. Only I/O errors (cannot open) fail.
    pub fn reopen(
        path_name: &str,
        file_path: &Path,
        hmac_key: &[u8],
        trust: Trust,
        anchor: Option<&Head>,
    ) -> Result<Reopened, AuditError> {
        let open_err = |source| AuditError::Open {
            device: path_name.to_owned(),
            path: file_path.to_owned(),
            source,
        };
        let file = open_file(file_path, trust).map_err(open_err)?;
        let from_anchor = |a: Option<&Head>| match a {
            Some(a) => (a.seq.saturating_add(1), a.hash.clone()),
            None => (0, ZERO_HASH.to_owned()),
        };
        let anchored = |a: &Head| format!("the anchored head is seq {}", a.seq);
        let ((next_seq, prev_hash), warning) = match (recover(&file), anchor) {
            (Ok(Some(last)), None) => ((last.seq.saturating_add(1), last.hash), None),
            (Ok(Some(last)), Some(a))
                if last.seq > a.seq || (last.seq == a.seq && last.hash == a.hash) =>
            {
                ((last.seq.saturating_add(1), last.hash), None)
            }
            (Ok(Some(last)), Some(a)) => (
                from_anchor(Some(a)),
                Some(format!(
                    "the file ends at seq {} but {}: lines were removed or the file replaced; the chain continues from the anchor",
                    last.seq,
                    anchored(a)
                )),
            ),
            (Ok(None), None) => (from_anchor(None), None),
            (Ok(None), Some(a)) => (
                from_anchor(Some(a)),
                Some(format!(
                    "the file is empty but {}: the chain continues from the anchor",
                    anchored(a)
                )),
            ),
            (Err(Recover::Io(source)), _) => return Err(open_err(source)),
            (Err(Recover::Bad(reason)), a) => {
                if let Err(source) = close_torn_line(&file) {
                    return Err(open_err(source));
                }
                (
                    from_anchor(a),
                    Some(format!(
                        "cannot continue the chain from the file ({reason}); it continues from {}",
                        match a {
                            Some(a) => format!("the anchored head at seq {}", a.seq),
                            None => "seq 0 (no anchor)".to_owned(),
                        }
                    )),
                )
            }
        };
        Ok(Reopened {
            device: Self::new(path_name, file_path, hmac_key, file, next_seq, prev_hash),
            warning,
        })
    }

    fn new(
        path_name: &str,
        file_path: &Path,
        hmac_key: &[u8],
        file: File,
        next_seq: u64,
        prev_hash: String,
    ) -> FileDevice {
        FileDevice {
            path_name: path_name.to_owned(),
            file_path: file_path.to_owned(),
            key: MacKey::from_bytes(hmac_key),
            chain: Mutex::new(Chain {
                file,
                next_seq,
                prev_hash,
                disabled: false,
            }),
        }
    }

    /// Where the open file really is (the kernel's name for the descriptor,
    /// every symlink and directory swap resolved): what confinement checks
    /// after opening, since a directory on the way may have been swapped
    /// between a path check and the open.
    pub fn real_path(&self) -> io::Result<PathBuf> {
        use std::os::fd::AsRawFd;
        let chain = self
            .chain
            .lock()
            .map_err(|_| io::Error::other("device lock poisoned"))?;
        std::fs::read_link(format!("/proc/self/fd/{}", chain.file.as_raw_fd()))
    }

    /// The (device, inode) of the open file: two devices must never write
    /// one file, whatever names reach it.
    pub fn identity(&self) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let chain = self.chain.lock().ok()?;
        let m = chain.file.metadata().ok()?;
        Some((m.dev(), m.ino()))
    }

    /// The last record written (or continued from), `None` before the first.
    pub fn head(&self) -> Option<Head> {
        let chain = self.chain.lock().ok()?;
        chain.next_seq.checked_sub(1).map(|seq| Head {
            seq,
            hash: chain.prev_hash.clone(),
        })
    }

    /// `hmac-sha256:<hex>` of `input` under this device's key; what
    /// `sys/audit-hash` returns and what the log holds in place of `input`.
    pub fn hash(&self, input: &str) -> String {
        redact::hmac(&self.key, input)
    }

    /// The mount path the device was enabled at, e.g. `file/`.
    pub fn path_name(&self) -> &str {
        &self.path_name
    }

    /// The log file this device appends to.
    pub fn file_path(&self) -> &Path {
        &self.file_path
    }

    /// Redact, seal and append one entry. Returns once the line has reached the
    /// kernel (no fsync; see the crate docs).
    pub fn write_entry(&self, entry: &AuditEntry) -> Result<(), AuditError> {
        // Redaction and serialisation happen before taking the lock. The time
        // is taken here too, so under concurrency `time` may step back by a few
        // microseconds between lines; `seq` is the authoritative order.
        let time = palisade_core::rfc3339(palisade_core::now_nanos());
        let body = redact::record_body(&self.key, entry, time)?;

        let mut chain = self.chain.lock().map_err(|_| {
            // A panic while holding the lock may have left the chain state and
            // the file out of step: fail closed rather than guess.
            AuditError::Disabled {
                device: self.path_name.clone(),
            }
        })?;
        if chain.disabled {
            return Err(AuditError::Disabled {
                device: self.path_name.clone(),
            });
        }
        let (line, hash) =
            chain::seal(body, chain.next_seq, &chain.prev_hash).ok_or_else(|| {
                AuditError::Write {
                    device: self.path_name.clone(),
                    source: io::Error::other("record did not serialise to a JSON object"),
                }
            })?;
        match append_line(&chain.file, line.as_bytes()) {
            Ok(()) => {
                // Only now does the chain advance: a failed write leaves the
                // file and the state exactly as they were.
                chain.next_seq = chain.next_seq.saturating_add(1);
                chain.prev_hash = hash;
                Ok(())
            }
            Err(Append::Clean(source)) => Err(AuditError::Write {
                device: self.path_name.clone(),
                source,
            }),
            Err(Append::Torn(source)) => {
                chain.disabled = true;
                tracing::error!(
                    device = %self.path_name,
                    file = %self.file_path.display(),
                    "audit device disabled: a partial line could not be removed"
                );
                Err(AuditError::Write {
                    device: self.path_name.clone(),
                    source,
                })
            }
        }
    }
}

enum Append {
    /// Nothing of the line is left in the file.
    Clean(io::Error),
    /// Part of the line is in the file and could not be removed.
    Torn(io::Error),
}

/// `write_all` with one difference: if the write fails after some bytes went
/// out (e.g. disk full mid-line), truncate them away again so the next line
/// does not land after a fragment. Assumes we are the file's only writer, which
/// the device model (one device per file) guarantees.
fn append_line(file: &File, line: &[u8]) -> Result<(), Append> {
    let mut written = 0usize;
    while written < line.len() {
        let err = match (&*file).write(&line[written..]) {
            Ok(0) => io::Error::from(io::ErrorKind::WriteZero),
            Ok(n) => {
                written += n;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => e,
        };
        if written == 0 {
            return Err(Append::Clean(err));
        }
        let rolled_back = file
            .metadata()
            .ok()
            .and_then(|m| m.len().checked_sub(written as u64))
            .is_some_and(|good_len| file.set_len(good_len).is_ok());
        return Err(if rolled_back {
            Append::Clean(err)
        } else {
            Append::Torn(err)
        });
    }
    Ok(())
}

enum Recover {
    Io(io::Error),
    Bad(String),
}

impl From<io::Error> for Recover {
    fn from(e: io::Error) -> Self {
        Recover::Io(e)
    }
}

/// The file's last record, read backwards from the end in chunks until the
/// start of the last line is found, then checked alone, so opening costs
/// O(last line), not O(file). `None` for an empty or non-regular file.
fn recover(file: &File) -> Result<Option<chain::Sealed>, Recover> {
    let meta = file.metadata()?;
    let len = meta.len();
    if !meta.is_file() || len == 0 {
        return Ok(None);
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)?;
    if last[0] != b'\n' {
        return Err(Recover::Bad(
            "the file does not end in a newline (torn final write?); run verify and move the file aside"
                .into(),
        ));
    }
    let end = len - 1; // the last line is [start, end)
    let mut start = 0u64;
    let mut pos = end;
    let mut chunk = vec![0u8; TAIL_CHUNK as usize];
    while pos > 0 {
        if end - pos > MAX_LINE {
            return Err(Recover::Bad(format!(
                "the last line is longer than {MAX_LINE} bytes"
            )));
        }
        let from = pos.saturating_sub(TAIL_CHUNK);
        let buf = &mut chunk[..(pos - from) as usize];
        file.read_exact_at(buf, from)?;
        if let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            start = from + i as u64 + 1;
            break;
        }
        pos = from;
    }
    if end - start > MAX_LINE {
        return Err(Recover::Bad(format!(
            "the last line is longer than {MAX_LINE} bytes"
        )));
    }
    let mut line = vec![0u8; (end - start) as usize];
    file.read_exact_at(&mut line, start)?;
    let sealed = chain::check_line(&line).map_err(|p| {
        Recover::Bad(format!(
            "last line: {p}; run verify and move the file aside"
        ))
    })?;
    Ok(Some(sealed))
}

/// End a file whose last line has no newline with one, so the next record
/// is a line of its own (the fragment stays, for `verify` to report).
fn close_torn_line(file: &File) -> io::Result<()> {
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, meta.len() - 1)?;
    if last[0] != b'\n' {
        (&*file).write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::AuditRequest;
    use serde_json::{Map, Value, json};

    fn entry(data: Option<Value>) -> AuditEntry {
        AuditEntry {
            request: AuditRequest {
                id: palisade_core::uuid_v4(),
                operation: "read".into(),
                path: "secret/data/a".into(),
                data,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn creates_0600_and_starts_at_zero() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.log");
        let dev = FileDevice::open("file/", &p, b"k", Trust::Operator).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        dev.write_entry(&entry(None)).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let v: Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["seq"], 0);
        assert_eq!(v["prev_hash"], ZERO_HASH);
    }

    /// The last line spans several tail chunks, so recovery must keep reading
    /// backwards; a wrong start would fail the hash check.
    #[test]
    fn recovers_after_a_line_longer_than_the_tail_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.log");
        let dev = FileDevice::open("file/", &p, b"k", Trust::Operator).unwrap();
        // Keys are not hashed, so many long keys make a long line.
        let mut big = Map::new();
        for i in 0..5000 {
            big.insert(format!("{i:060}"), json!(i));
        }
        dev.write_entry(&entry(None)).unwrap();
        dev.write_entry(&entry(Some(Value::Object(big)))).unwrap();
        let len = std::fs::metadata(&p).unwrap().len();
        assert!(
            len > 3 * TAIL_CHUNK,
            "line too short to exercise chunking: {len}"
        );
        drop(dev);
        let dev = FileDevice::open("file/", &p, b"k", Trust::Operator).unwrap();
        dev.write_entry(&entry(None)).unwrap();
        let report = crate::verify(&p).unwrap();
        assert_eq!(report.lines, 3);
    }

    #[test]
    fn refuses_torn_or_foreign_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.log");
        let dev = FileDevice::open("file/", &p, b"k", Trust::Operator).unwrap();
        dev.write_entry(&entry(None)).unwrap();
        drop(dev);

        // Torn: a fragment without its newline.
        let good = std::fs::read(&p).unwrap();
        let mut torn = good.clone();
        torn.extend_from_slice(b"{\"time\":\"2");
        std::fs::write(&p, &torn).unwrap();
        let err = FileDevice::open("file/", &p, b"k", Trust::Operator).unwrap_err();
        assert!(matches!(err, AuditError::Recover { .. }), "{err}");
        assert!(
            err.to_string().contains("does not end in a newline"),
            "{err}"
        );

        // Edited last line.
        let edited = String::from_utf8(good)
            .unwrap()
            .replace("secret/data/a", "secret/data/b");
        std::fs::write(&p, edited).unwrap();
        let err = FileDevice::open("file/", &p, b"k", Trust::Operator).unwrap_err();
        assert!(
            err.to_string().contains("last line: hash mismatch"),
            "{err}"
        );

        // Not an audit log.
        std::fs::write(&p, "hello\n").unwrap();
        let err = FileDevice::open("file/", &p, b"k", Trust::Operator).unwrap_err();
        assert!(
            err.to_string().contains("last line: not valid JSON"),
            "{err}"
        );
    }

    #[test]
    fn failed_write_does_not_advance_the_chain() {
        let dev = FileDevice::open("full/", Path::new("/dev/full"), b"k", Trust::Operator).unwrap();
        let err = dev.write_entry(&entry(None)).unwrap_err();
        assert!(matches!(err, AuditError::Write { .. }), "{err}");
        let chain = dev.chain.lock().unwrap();
        assert_eq!(
            (chain.next_seq, chain.prev_hash.as_str(), chain.disabled),
            (0, ZERO_HASH, false)
        );
    }
}
