//! Operations: the security log, metrics and the admin endpoints.

pub mod admin;
pub mod durations;
pub mod log;
pub mod syslog;
