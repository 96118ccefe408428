//! The token headers App Service gives a backend behind a browser session:
//! `X-MS-TOKEN-AAD-ACCESS-TOKEN`, `-ID-TOKEN`, `-EXPIRES-ON` and, only when enabled,
//! `-REFRESH-TOKEN`. Clients cannot send them: every `X-MS-TOKEN-*` is stripped on arrival.

use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};

use super::record::Tokens;
use crate::config::Login;

/// `X-MS-TOKEN-AAD-ACCESS-TOKEN`.
pub const ACCESS_TOKEN: HeaderName = HeaderName::from_static("x-ms-token-aad-access-token");
/// `X-MS-TOKEN-AAD-ID-TOKEN`.
pub const ID_TOKEN: HeaderName = HeaderName::from_static("x-ms-token-aad-id-token");
/// `X-MS-TOKEN-AAD-EXPIRES-ON`.
pub const EXPIRES_ON: HeaderName = HeaderName::from_static("x-ms-token-aad-expires-on");
/// `X-MS-TOKEN-AAD-REFRESH-TOKEN`.
pub const REFRESH_TOKEN: HeaderName = HeaderName::from_static("x-ms-token-aad-refresh-token");

/// Adds the token headers `login` enables.
pub fn add_token_headers(headers: &mut HeaderMap, tokens: &Tokens, login: &Login) {
    let mut set = |name: HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    if login.token_headers {
        set(ACCESS_TOKEN, &tokens.access_token);
        set(ID_TOKEN, &tokens.id_token);
        set(EXPIRES_ON, &expires_on(tokens.access_expires));
    }
    if login.refresh_token_header
        && let Some(rt) = &tokens.refresh_token
    {
        set(REFRESH_TOKEN, rt);
    }
}

/// The access token's expiry as Easy Auth writes `expires_on` in `/.auth/me`:
/// `2025-10-28T00:45:13.0000000Z` (seven fractional digits, UTC).
pub fn expires_on(unix: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(unix);
    let text = crate::credential::response::format_utc(at);
    match text.strip_suffix('Z') {
        Some(head) if !head.starts_with('@') => format!("{head}.0000000Z"),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn expires_on_has_seven_fractional_digits() {
        assert_eq!(
            super::expires_on(1_761_612_313),
            "2025-10-28T00:45:13.0000000Z"
        );
    }
}
