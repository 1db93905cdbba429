//! Offline verification of a file device's hash chain.
//!
//! Rules, applied to the raw bytes of each line in order:
//! 1. the line ends in `\n` (a final line without one is a torn write or a cut),
//! 2. it is a JSON object,
//! 3. it ends in the `"hash"` field and that hash is SHA-256 of the bytes
//!    before it,
//! 4. `seq` is 0 and `prev_hash` is 64 zeros on the first line, otherwise
//!    `seq` is the previous line's plus one and `prev_hash` its `hash`.
//!
//! The first failure is reported with its 1-based line number. Lines cut off
//! the END of the file cannot be detected from the file alone: give
//! [`verify_against`] the device's head as the server keeps it behind its
//! barrier (`sys/audit-head/<device>`), and a file that ends before that head,
//! or holds another record at its `seq`, fails.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::chain::{self, ZERO_HASH};
use crate::file::Head;

/// A file whose chain checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Number of records in the file.
    pub lines: u64,
    /// `seq` of the last record (`None` for an empty file).
    pub last_seq: Option<u64>,
    /// `hash` of the last record (`None` for an empty file): the value to
    /// compare with an off-host anchor to detect trailing truncation.
    pub last_hash: Option<String>,
}

/// What is wrong with one line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineProblem {
    #[error("incomplete final line (no trailing newline: torn write or truncated file)")]
    NoNewline,
    #[error("not valid JSON")]
    NotJson,
    #[error("no trailing hash field (not a chained audit record)")]
    NoHash,
    #[error("hash mismatch (line edited)")]
    HashMismatch,
    #[error("missing or malformed seq or prev_hash")]
    BadChainFields,
    #[error("sequence {found} on the first line, expected {expected} (leading lines removed)")]
    FirstSequence { found: u64, expected: u64 },
    #[error("previous-hash of the first line does not continue the chain (leading lines removed)")]
    FirstPrevHash,
    #[error("sequence {found} follows {previous} (line removed or reordered)")]
    SequenceGap { found: u64, previous: u64 },
    #[error("sequence {found} follows {previous} (line inserted or reordered)")]
    SequenceRepeat { found: u64, previous: u64 },
    #[error("previous-hash mismatch (line removed, inserted or reordered)")]
    PrevHashMismatch,
}

/// Why a file failed verification.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The chain is intact but ends before the anchored head: trailing lines
    /// were cut off.
    #[error("the file ends at {} but the device's head is seq {head}: trailing lines were removed", match .last { Some(s) => format!("seq {s}"), None => "no record".to_owned() })]
    Truncated { last: Option<u64>, head: u64 },
    /// The record at the head's `seq` is not the anchored one.
    #[error("the record at seq {seq} is not the device's head (another file, or a rewritten one)")]
    HeadMismatch { seq: u64 },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("line {line}: {problem}")]
    Line { line: u64, problem: LineProblem },
}

impl VerifyError {
    /// The 1-based line number at fault, if the failure is about a line.
    pub fn line(&self) -> Option<u64> {
        match self {
            VerifyError::Line { line, .. } => Some(*line),
            VerifyError::Io { .. }
            | VerifyError::Truncated { .. }
            | VerifyError::HeadMismatch { .. } => None,
        }
    }
}

/// Verify the hash chain of the audit log at `path`, streaming it line by line.
pub fn verify(path: &Path) -> Result<VerifyReport, VerifyError> {
    verify_against(path, None)
}

/// [`verify`], and when `head` is given, also check that the file reaches it:
/// the record with the head's `seq` must be in the file with the head's
/// `hash` (later records are fine: they were written after the head was
/// read).
pub fn verify_against(path: &Path, head: Option<&Head>) -> Result<VerifyReport, VerifyError> {
    verify_range(path, None, head)
}

/// [`verify_against`] for a file that continues another one: after a
/// rotation the device goes on from its anchored head, so a new file's
/// first record follows `after` (the last record of the previous file:
/// `seq` + 1, `prev_hash` = its `hash`) instead of starting at `seq` 0.
pub fn verify_range(
    path: &Path,
    after: Option<&Head>,
    head: Option<&Head>,
) -> Result<VerifyReport, VerifyError> {
    let report = verify_chain(path, after, head)?;
    if let Some(h) = head {
        match report.last_seq {
            Some(last) if last >= h.seq => {}
            last => return Err(VerifyError::Truncated { last, head: h.seq }),
        }
    }
    Ok(report)
}

fn verify_chain(
    path: &Path,
    after: Option<&Head>,
    head: Option<&Head>,
) -> Result<VerifyReport, VerifyError> {
    let io_err = |source| VerifyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut reader = BufReader::new(File::open(path).map_err(io_err)?);
    let mut buf = Vec::new();
    let mut lines = 0u64;
    let mut prev: Option<chain::Sealed> = None;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(io_err)? == 0 {
            break; // clean end of file (after the final `\n`, if any)
        }
        lines += 1;
        let fail = |problem| VerifyError::Line {
            line: lines,
            problem,
        };
        let Some(line) = buf.strip_suffix(b"\n") else {
            return Err(fail(LineProblem::NoNewline));
        };
        let sealed = chain::check_line(line).map_err(fail)?;
        match &prev {
            None => {
                let (seq, prev) = match after {
                    Some(a) => (a.seq.saturating_add(1), a.hash.as_str()),
                    None => (0, ZERO_HASH),
                };
                if sealed.seq != seq {
                    return Err(fail(LineProblem::FirstSequence {
                        found: sealed.seq,
                        expected: seq,
                    }));
                }
                if sealed.prev_hash != prev {
                    return Err(fail(LineProblem::FirstPrevHash));
                }
            }
            Some(p) => {
                if Some(sealed.seq) != p.seq.checked_add(1) {
                    return Err(fail(if sealed.seq > p.seq {
                        LineProblem::SequenceGap {
                            found: sealed.seq,
                            previous: p.seq,
                        }
                    } else {
                        LineProblem::SequenceRepeat {
                            found: sealed.seq,
                            previous: p.seq,
                        }
                    }));
                }
                if sealed.prev_hash != p.hash {
                    return Err(fail(LineProblem::PrevHashMismatch));
                }
            }
        }
        if let Some(h) = head
            && sealed.seq == h.seq
            && sealed.hash != h.hash
        {
            return Err(VerifyError::HeadMismatch { seq: h.seq });
        }
        prev = Some(sealed);
    }
    Ok(VerifyReport {
        lines,
        last_seq: prev.as_ref().map(|p| p.seq),
        last_hash: prev.map(|p| p.hash),
    })
}
