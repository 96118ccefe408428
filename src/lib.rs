//! tollgate: an authenticating sidecar proxy for Entra ID (Azure AD) tokens.
//!
//! # Layout
//!
//! The layers run one way (`tests/layers.rs` holds them to it): the vocabulary ([`path`],
//! [`header_names`]), the data ([`config`]), mechanisms ([`filewatch`], [`telemetry`],
//! [`jose`], [`proxy`], [`fetch`], [`credential`]), the two request paths ([`inbound`], [`egress`], siblings), the
//! application ([`app`]), and the shells ([`dev`], [`cli`]).
//!
//! - [`config`]: the TOML file, parsed and validated into types that cannot be invalid.
//! - [`app`]: the running application: the [`app::state::Snapshot`] built from a
//!   configuration and swapped whole on reload, the listeners, background tasks, the admin
//!   endpoints (`/healthz`, `/readyz`, `/metrics`), an orderly shutdown.
//! - [`path`]: the one reading of a request path, for route matching and forwarding alike
//!   (inbound and egress); depends on nothing else in the crate.
//! - [`inbound`]: the request path in front of the upstream: identity stripping, path
//!   normalisation, route matching, token checks, forwarding.
//! - [`egress`]: the egress request path: target selection, token injection, the token
//!   cache.
//! - [`credential`]: how tokens and client assertions are obtained (managed identity, workload
//!   identity, secret, certificate, managed identity as federated credential), for egress and
//!   for browser sign-in's code redemption.
//! - [`proxy`]: HTTP machinery shared by the listeners: accept loop, TLS, upstream client,
//!   header rewriting, upgrades.
//! - [`telemetry`]: logging, metric families, redaction of secrets.
//! - [`jose`]: the one JWT signer (client assertions, the development issuer's tokens).
//! - [`dev`]: the echo backend, local issuer, identity endpoint and Entra-like sign-in provider
//!   behind `tollgate demo`, `tollgate dev` and the tests.
//! - [`cli`]: the command line; the only module that knows about the process.

pub mod app;
pub mod cli;
pub mod config;
pub mod credential;
pub mod dev;
pub mod egress;
pub mod fetch;
pub mod filewatch;
pub mod header_names;
pub mod inbound;
pub mod jose;
pub mod path;
pub mod proxy;
pub mod telemetry;
