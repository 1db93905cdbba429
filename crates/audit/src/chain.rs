//! The hash chain's byte format, shared by the writer, open-time recovery and
//! [`crate::verify`], so all three agree on exactly one definition.
//!
//! A sealed line is `<prefix>,"hash":"<64 hex>"}` where `<prefix>` is the
//! record object without its closing brace and ending in the `seq` and
//! `prev_hash` fields, and the hash is SHA-256 of `<prefix>`'s bytes.

use palisade_crypto::mac::sha256_hex;
use serde_json::Value;

use crate::verify::LineProblem;

/// `prev_hash` of the first line of a file.
pub(crate) const ZERO_HASH: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

const HASH_FIELD: &[u8] = b",\"hash\":\"";
const HEX_LEN: usize = 64;
/// `,"hash":"` + 64 hex + `"}`.
const SUFFIX_LEN: usize = HASH_FIELD.len() + HEX_LEN + 2;

/// Append the chain fields to a serialised record body (a JSON object ending
/// in `}`) and seal it. Returns the full line including its `\n`, and its hash.
///
/// The fields are appended textually rather than by serialising a struct with
/// them so the expensive serialisation can happen outside the device lock; the
/// bytes are identical to what serde_json would emit with `seq` and
/// `prev_hash` as the last two fields.
pub(crate) fn seal(mut body: String, seq: u64, prev_hash: &str) -> Option<(String, String)> {
    if !body.starts_with('{') || body.pop() != Some('}') || body.len() < 2 {
        // An empty object would make the leading comma invalid JSON; the
        // record always has `time` and `type`, so this is a programming error.
        return None;
    }
    body.push_str(",\"seq\":");
    body.push_str(&seq.to_string());
    body.push_str(",\"prev_hash\":\"");
    body.push_str(prev_hash);
    body.push('"');
    let hash = sha256_hex(body.as_bytes());
    body.reserve(SUFFIX_LEN + 1);
    body.push_str(",\"hash\":\"");
    body.push_str(&hash);
    body.push_str("\"}\n");
    Some((body, hash))
}

/// The chain fields of a line whose own hash checked out.
#[derive(Debug)]
pub(crate) struct Sealed {
    pub seq: u64,
    pub prev_hash: String,
    pub hash: String,
}

fn is_lower_hex(b: &[u8]) -> bool {
    b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// Check one line (without its `\n`) in isolation: valid JSON object, ends
/// in the hash field, the hash covers the prefix, and `seq`/`prev_hash` are
/// well formed. Works on the raw bytes; nothing is re-serialised.
pub(crate) fn check_line(line: &[u8]) -> Result<Sealed, LineProblem> {
    let value: Value = serde_json::from_slice(line).map_err(|_| LineProblem::NotJson)?;
    let Value::Object(map) = value else {
        return Err(LineProblem::NotJson);
    };
    if line.len() < SUFFIX_LEN {
        return Err(LineProblem::NoHash);
    }
    let (prefix, suffix) = line.split_at(line.len() - SUFFIX_LEN);
    let (field, rest) = suffix.split_at(HASH_FIELD.len());
    let (hex, close) = rest.split_at(HEX_LEN);
    if field != HASH_FIELD || close != b"\"}" || !is_lower_hex(hex) {
        return Err(LineProblem::NoHash);
    }
    if sha256_hex(prefix).as_bytes() != hex {
        return Err(LineProblem::HashMismatch);
    }
    let seq = map
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or(LineProblem::BadChainFields)?;
    let prev_hash = map
        .get("prev_hash")
        .and_then(Value::as_str)
        .filter(|p| p.len() == HEX_LEN && is_lower_hex(p.as_bytes()))
        .ok_or(LineProblem::BadChainFields)?
        .to_owned();
    // `hex` is ASCII (checked above), so this conversion is lossless.
    let hash = String::from_utf8_lossy(hex).into_owned();
    Ok(Sealed {
        seq,
        prev_hash,
        hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_check_round_trips() {
        let (line, hash) = seal("{\"a\":1}".into(), 7, ZERO_HASH).unwrap();
        assert!(line.ends_with("\"}\n"));
        let body = line.trim_end_matches('\n');
        let prefix = body
            .strip_suffix(&format!(",\"hash\":\"{hash}\"}}"))
            .unwrap();
        assert_eq!(
            prefix,
            format!("{{\"a\":1,\"seq\":7,\"prev_hash\":\"{ZERO_HASH}\"")
        );
        assert_eq!(sha256_hex(prefix.as_bytes()), hash);
        let s = check_line(body.as_bytes()).unwrap();
        assert_eq!(
            (s.seq, s.prev_hash.as_str(), s.hash.as_str()),
            (7, ZERO_HASH, hash.as_str())
        );
    }

    #[test]
    fn seal_rejects_non_objects() {
        assert!(seal("{}".into(), 0, ZERO_HASH).is_none());
        assert!(seal("[1]".into(), 0, ZERO_HASH).is_none());
    }

    #[test]
    fn check_line_problems() {
        assert_eq!(check_line(b"nope").unwrap_err(), LineProblem::NotJson);
        assert_eq!(check_line(b"[1,2]").unwrap_err(), LineProblem::NotJson);
        assert_eq!(check_line(b"{\"seq\":0}").unwrap_err(), LineProblem::NoHash);
        // Sealed correctly but without chain fields.
        let prefix = "{\"a\":1";
        let line = format!("{prefix},\"hash\":\"{}\"}}", sha256_hex(prefix.as_bytes()));
        assert_eq!(
            check_line(line.as_bytes()).unwrap_err(),
            LineProblem::BadChainFields
        );
        // Upper-case hex is not what we write.
        let line = line.to_uppercase().replace("\"HASH\"", "\"hash\"");
        assert_eq!(
            check_line(line.as_bytes()).unwrap_err(),
            LineProblem::NoHash
        );
    }
}
