//! Built-in stand-ins for local work and tests: an echo backend that reports what it received,
//! the local token issuer, and the managed-identity endpoint and Entra-like sign-in provider
//! that `tollgate dev` serves.
//!
//! [`issuer`] holds the signing key and mints tokens; [`identity`] answers IMDS and App
//! Service token requests with them; [`oauth`] is the authorization-code flow (authorize page,
//! token endpoint, end session); [`tls`] is the dev CA; [`server`] puts them all on one
//! loopback http port and, with the CA, one https port. Each stand-in runs on
//! [`http::LoopbackServer`].

pub mod echo;
pub mod graph;
pub mod http;
pub mod identity;
pub mod issuer;
pub mod oauth;
pub mod server;
pub mod tls;
