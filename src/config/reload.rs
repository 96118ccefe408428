//! Configuration reload.
