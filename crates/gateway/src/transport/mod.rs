//! Transport: listeners, TLS and client connections.

pub mod conn;
pub mod listener;
pub mod tls;
