//! Identifiers. GUIDs are [`uuid::Uuid`]'s text now; this module is left as a re-export only
//! until it leaves the module list.

pub use uuid::Uuid;

// The JWT signer shared by the certificate credential and the development issuer. Its file is
// `src/jose.rs`; it is declared here only until `lib.rs` declares it (`pub mod jose;`), which is
// outside this change.
#[path = "jose.rs"]
pub mod jose;
