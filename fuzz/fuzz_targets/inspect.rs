//! palisade-inspect on arbitrary input: the first line is the query string,
//! the rest a JSON body (first byte even) or a form body (odd). Never panics;
//! stays within its limits; a finding never carries more than a capped
//! variable name, and no more findings than the cap are recorded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_inspect::{BodyKind, Limits, MAX_VARIABLE_BYTES, RequestParts, inspect};

fuzz_target!(|data: &[u8]| {
    let (first, rest) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(query) = std::str::from_utf8(first) else {
        return;
    };
    let kind = if data.first().is_some_and(|b| b % 2 == 0) {
        BodyKind::Json
    } else {
        BodyKind::Form
    };
    let limits = Limits {
        max_depth: 8,
        max_members: 64,
    };
    let out = inspect(
        &RequestParts {
            query: Some(query),
            body: Some((kind, rest)),
        },
        &limits,
    );
    for f in &out.findings {
        // the variable is capped (… is 3 bytes) and the reason is short
        assert!(
            f.variable.len() <= MAX_VARIABLE_BYTES,
            "{}",
            f.variable.len()
        );
        assert!(f.reason.len() <= 512, "{}", f.reason.len());
    }
    // at most the cap, plus the one finding that stops a parse at a limit
    assert!(
        out.findings.len() <= palisade_inspect::MAX_FINDINGS + 1,
        "{}",
        out.findings.len()
    );
    assert!(out.args.args.len() <= 2 * (limits.max_members + 1) + 1);
});
