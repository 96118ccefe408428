//! Browser sessions (the sign-in half of Easy Auth), the building blocks so far: values
//! sealed under a ring of session keys ([`seal`]), carried in chunked cookies ([`cookies`]),
//! and the login transaction with the redirect rule ([`login`]). A session cookie is sealed for its cookie name, split under the 4 KB a
//! browser keeps per cookie, and opens on any replica that shares the keys: no store needed.

pub mod cookies;
pub mod login;
pub mod seal;
pub mod store;
