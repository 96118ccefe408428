//! `[login]`: browser sign-in (the other half of Easy Auth), as validated data.

use std::fmt;
use std::time::Duration;

use url::Url;

/// `[login]`: users of a web app sign in with the issuer's authorization-code flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    /// The `[[issuers]]` entry users sign in with (by name); its discovery document names the
    /// authorization, token and end-session endpoints, and its keys verify id_tokens.
    pub issuer: String,
    /// The app registration users sign in to: the id_token's `aud`.
    pub client_id: String,
    /// The `[credentials.NAME]` that authenticates the app registration at the token endpoint.
    pub credential: String,
    /// Scopes asked for at sign-in. Defaults to `openid profile email offline_access`.
    pub scopes: Vec<String>,
    /// Session keys, the first seals and every one opens. At least one.
    pub session_keys: Vec<SessionKey>,
    /// How long a session authenticates requests. Defaults to 8 h.
    pub session_lifetime: Duration,
    /// How long after `session_lifetime` `/.auth/refresh` may still renew it. Defaults to 72 h.
    pub refresh_extension: Duration,
    /// The session cookie's name (and its chunks' prefix). Defaults to `AppServiceAuthSession`.
    pub cookie_name: String,
    /// Send `X-MS-TOKEN-AAD-ACCESS-TOKEN`, `-ID-TOKEN` and `-EXPIRES-ON`. Defaults to true.
    pub token_headers: bool,
    /// Send `X-MS-TOKEN-AAD-REFRESH-TOKEN`. Defaults to false.
    pub refresh_token_header: bool,
    /// Include the tokens in `/.auth/me`. Defaults to false.
    pub me_tokens: bool,
    /// Absolute URLs a browser may be sent to after login or logout, besides same-origin paths.
    pub allowed_redirects: Vec<Url>,
    /// Origins (`https://host[:port]`) besides the request's own allowed to send unsafe methods
    /// with the session cookie.
    pub allowed_origins: Vec<String>,
    /// Where session records live; `None` keeps them in the cookie.
    pub session_store: Option<SessionStore>,
}

/// A session key: 32 bytes. Its `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKey(pub [u8; 32]);

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

/// `session_store`: a Redis URL. Its `Debug` never shows a password.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionStore(pub Url);

impl fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("redacted"));
        }
        write!(f, "SessionStore({shown})")
    }
}

/// What a route answers a request that brings no credential at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unauthenticated {
    /// 401 with a bearer challenge (the default).
    #[default]
    Status401,
    /// 403.
    Status403,
    /// A top-level navigation goes to sign-in; anything else gets the 401 with a `login_url`.
    Redirect,
}

impl Unauthenticated {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Unauthenticated::Status401 => "401",
            Unauthenticated::Status403 => "403",
            Unauthenticated::Redirect => "redirect",
        }
    }
}
