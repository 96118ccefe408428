//! Built-in stand-ins for local work and tests: an echo backend that reports what it received
//! (and the local token issuer, with `tollgate dev`).

pub mod echo;
pub mod issuer;
