//! The server's one canonical request path: never panics, and what it
//! accepts is canonical (the path sent again, percent-encoded, gives the
//! same path), for every operation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_server::canonical::canonicalise;
use palisade_server::logical::Operation;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    for op in [
        Operation::Read,
        Operation::List,
        Operation::Write,
        Operation::Delete,
        Operation::Patch,
    ] {
        if let Ok(p) = canonicalise(op, raw) {
            let wire = encode(p.as_str());
            if wire.len() > 4096 {
                // longer once encoded than a request path may be (414)
                continue;
            }
            let again = canonicalise(op, &format!("/v1/{wire}"));
            assert_eq!(
                again.as_ref().map(|c| c.as_str()).ok(),
                Some(p.as_str()),
                "{op:?} {raw:?} -> {p:?} -> {again:?}"
            );
        }
    }
});

/// Percent-encode everything but unreserved characters and `/`.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
