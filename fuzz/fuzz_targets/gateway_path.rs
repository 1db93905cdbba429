//! The gateway's path normalisation: never panics; what the service
//! receives (the normalised path, encoded) normalises back to exactly the
//! path the policies saw, so a service that decodes what it receives acts
//! on the value that was authorised; no dot segment survives.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_gateway::steps::inspect::{encode_path, normalize_path, under_prefix};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(path) = normalize_path(raw) else {
        return;
    };
    assert!(path.starts_with('/'), "{raw:?} -> {path:?}");
    let wire = encode_path(&path);
    // the 8 KiB limit is on what clients send; the encoded form of a path
    // near it can be longer (`]` is three bytes on the wire): then the round
    // trip is checked segment by segment (the normalised path has no dot
    // segments, so normalising it is segment by segment)
    if wire.len() <= 8192 {
        assert_eq!(
            normalize_path(&wire).as_deref(),
            Ok(path.as_str()),
            "{raw:?} -> {wire:?}"
        );
    } else {
        for seg in path.split('/').skip(1) {
            let one = format!("/{seg}");
            let w = encode_path(&one);
            if w.len() <= 8192 {
                assert_eq!(
                    normalize_path(&w).as_deref(),
                    Ok(one.as_str()),
                    "{raw:?}: segment {seg:?} -> {w:?}"
                );
            }
        }
    }
    for seg in path.split('/') {
        assert!(seg != "." && seg != "..", "{raw:?} -> {path:?}");
    }
    // a path is under every prefix of its own segments
    if let Some(i) = path[1..].find('/') {
        assert!(under_prefix(&path, &path[..=i]), "{path:?}");
    }
});
