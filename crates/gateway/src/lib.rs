//! palisade-gateway: the security proxy in front of the services.
//!
//! The modules follow the architecture:
//!
//! - [`transport`]: listeners, TLS (rustls, SNI, client certificates) and
//!   client connections (idle ones parked without buffers);
//! - [`pipeline`]: the ordered steps, written once ([`pipeline::handle`]),
//!   with one typed context per request ([`pipeline::context`]);
//! - [`steps`]: the steps themselves: limits, host, path inspection,
//!   routes, CORS, authentication, rate limits, authorization (Cedar,
//!   default deny -> [`steps::authz::Permit`]) and the upstream, which only
//!   takes a `Permit` and forwards to the pool of the permitted route;
//! - [`ops`]: the security log, metrics and the admin endpoints;
//! - [`gateway`] (the state a request runs on, replaced whole on reload),
//!   [`server`] (start, reload, drain), [`config`], [`error`] (the only
//!   place an error becomes a response) and [`worker`].
//!
//! Dependencies point one way: transport -> pipeline -> steps; steps never
//! reach up into the pipeline, the transport or the server.
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod gateway;
pub mod ops;
pub mod pipeline;
pub mod server;
pub mod steps;
pub mod transport;
pub mod worker;
