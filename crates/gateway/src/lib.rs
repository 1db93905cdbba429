//! palisade-gateway: the security proxy in front of the services.
//!
//! The request pipeline is written once, in [`stack`], in the order of
//! design.md: accept -> TLS (SNI, client certificate -> [`principal::PeerIdentity`])
//! -> HTTP limits -> request id -> security log record -> per-IP rate limit
//! (before any cryptography) -> [`inspect`] (path normalisation) -> [`authn`]
//! (JWT / API key / mTLS -> [`principal::Principal`]) -> per-principal rate
//! limit -> [`authz`] (Cedar, default deny -> [`authz::Permit`]) -> [`upstream`].
//! [`respond`] is the only place an error becomes a response. The upstream
//! step only accepts a `Permit`, which only `authz` can construct.
#![forbid(unsafe_code)]

pub mod admin;
pub mod authn;
pub mod authz;
pub mod client_ip;
pub mod config;
pub mod conn;
pub mod durations;
pub mod inspect;
pub mod log;
pub mod principal;
pub mod respond;
pub mod server;
pub mod stack;
pub mod stream;
pub mod tls;
pub mod upstream;
