//! Identifiers. GUIDs are [`uuid::Uuid`]'s text now; this module is left as a re-export only
//! until it leaves the module list.

pub use uuid::Uuid;
