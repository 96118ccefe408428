//! Browser sign-in end to end, in process: tollgate's `[login]` against `tollgate dev`'s
//! OAuth provider, an echo backend behind it, and a cookie jar standing in for the browser.
//! Every refusal asserts that the backend received nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/mod.rs"]
mod support;

mod attacks;
#[path = "../egress/capture.rs"]
mod capture;
mod logs;
mod redis;
mod rig;
mod sessions;
