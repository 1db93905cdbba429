//! The pipeline's steps, each in its own module. A step takes what it needs
//! and returns a value or a [`crate::error::GatewayError`]; none writes a
//! response or reads the security log.

pub mod authn;
pub mod authz;
pub mod client_ip;
pub mod cors;
pub mod crs;
pub mod headers;
pub mod host;
pub mod identity;
pub mod ids;
pub mod inspect;
pub mod limits;
pub mod principal;
pub mod ratelimit;
pub mod route;
pub mod stream;
pub mod upstream;
