//! palisade-crypto: every cryptographic primitive Palisade uses, in one place.
//!
//! - [`aead`]: AES-256-GCM (aws-lc-rs) with a random 96-bit nonce per message.
//! - [`mac`]: HMAC-SHA256, keyed credential hashing and constant-time comparison.
//! - [`password`]: argon2id password hashing (RustCrypto `argon2`), PHC strings.
//! - [`shamir`]: splitting and combining the unseal key (vsss-rs, GF(256)).
//!
//! The barrier, the audit broker, the token store and (later) transit build on
//! these; none of them touches aws-lc-rs directly. One provider everywhere.
#![forbid(unsafe_code)]

pub mod aead;
pub mod mac;
pub mod password;
pub mod shamir;
pub mod transit;

pub use palisade_core::{Secret, random_bytes};
