//! What a session holds and how it travels: the [`Tokens`] of a sign-in, and the
//! [`CookieBody`] sealed into the session cookie, which holds either the tokens themselves or
//! (with a session store) the id of the stored record and the key that opens it.

use serde::{Deserialize, Serialize};

/// The tokens of a sign-in. Never logged: `Debug` shows only the expiry.
#[derive(Clone, Serialize, Deserialize)]
pub struct Tokens {
    /// The id_token, verified when it was received.
    #[serde(rename = "i")]
    pub id_token: String,
    /// The access token (opaque to tollgate unless its audience is tollgate's own API).
    #[serde(rename = "a")]
    pub access_token: String,
    /// When the access token expires, Unix seconds.
    #[serde(rename = "e")]
    pub access_expires: u64,
    /// The refresh token, when `offline_access` was granted.
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("access_expires", &self.access_expires)
            .field("refresh_token", &self.refresh_token.is_some())
            .finish_non_exhaustive()
    }
}

/// What the session cookie holds, sealed under the session keys for the cookie's name.
#[derive(Clone, Serialize, Deserialize)]
pub struct CookieBody {
    /// Format version.
    pub v: u8,
    /// A random id: the refresh single-flight key, and the store's key.
    pub sid: String,
    /// Until when (Unix seconds) the session authenticates requests.
    #[serde(rename = "au")]
    pub auth_until: u64,
    /// Until when `/.auth/refresh` may renew it (the cookie's life).
    #[serde(rename = "ru")]
    pub renew_until: u64,
    /// The tokens, when kept in the cookie.
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Tokens>,
    /// With a store: the per-session key (base64url of 32 bytes) that seals the stored record.
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    pub record_key: Option<String>,
}

/// The format version written now.
pub const VERSION: u8 = 1;
/// The purpose a stored record is sealed for (its key is the session's own).
pub const RECORD_PURPOSE: &str = "tollgate-session-record";
