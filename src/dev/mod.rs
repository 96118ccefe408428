//! Built-in stand-ins for local work and tests: an echo backend that reports what it received,
//! the local token issuer, and the managed-identity endpoint that `tollgate dev` serves.
//!
//! [`issuer`] holds the signing key and mints tokens; [`identity`] answers IMDS and App
//! Service token requests with them; [`server`] puts both on one loopback port. Each stand-in
//! runs on [`http::LoopbackServer`].

pub mod echo;
pub mod http;
pub mod identity;
pub mod issuer;
pub mod oauth;
pub mod server;
pub mod tls;
