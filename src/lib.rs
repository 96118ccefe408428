//! tollgate: an authenticating sidecar proxy.
pub mod config;
