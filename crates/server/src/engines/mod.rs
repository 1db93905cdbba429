//! Secrets engines. An engine sees only its relative path, the request and
//! its own storage view; it cannot reach the core, other mounts or the
//! barrier's metadata (the [`palisade_barrier::View`] jail enforces that).

pub mod kv;
pub mod pki;
pub mod transit;
