//! The responses tollgate writes itself: JSON bodies `{"error", "error_description"}`, and for
//! 401/403 the RFC 6750 `WWW-Authenticate` challenge. Nothing from the request is echoed.

use http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};

use super::jwt::AuthError;
use crate::proxy::Body;

/// The realm in every challenge.
pub const REALM: &str = "tollgate";

pub use crate::proxy::json_error;

/// 401 for a request with no bearer token at all: a bare challenge, no error code
/// (RFC 6750 §3.1: the client may simply not know authentication is needed).
pub fn missing_token() -> Response<Body> {
    let mut r = json_error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a bearer token is required",
    );
    r.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"tollgate\""),
    );
    r
}

/// What a client gets for a token that was not accepted. The proxy's response and `tollgate
/// explain`'s decision both come from here, so they cannot disagree.
#[derive(Debug, PartialEq, Eq)]
pub struct TokenRefusal {
    /// 401, or 503 while the issuer's keys are not loaded (the token may well be good).
    pub status: StatusCode,
    /// The OAuth error code.
    pub error: &'static str,
    /// The generic description; never the details of the failure.
    pub description: &'static str,
    /// `Retry-After` seconds, for a refusal that will pass by itself.
    pub retry_after: Option<&'static str>,
}

impl TokenRefusal {
    /// The refusal of a token that failed with `error`.
    pub fn of(error: &AuthError) -> TokenRefusal {
        match error {
            AuthError::KeysUnavailable(_) => TokenRefusal {
                status: StatusCode::SERVICE_UNAVAILABLE,
                error: "temporarily_unavailable",
                description: "signing keys are not available yet",
                retry_after: Some("5"),
            },
            other => TokenRefusal {
                status: StatusCode::UNAUTHORIZED,
                error: "invalid_token",
                description: other.description(),
                retry_after: None,
            },
        }
    }

    /// The response: a 401 carries the RFC 6750 challenge, a 503 `Retry-After`.
    pub fn response(&self) -> Response<Body> {
        let mut r = if self.status == StatusCode::UNAUTHORIZED {
            challenge(self.status, self.error, self.description)
        } else {
            json_error(self.status, self.error, self.description)
        };
        if let Some(seconds) = self.retry_after {
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static(seconds));
        }
        r
    }
}

/// 403 for a valid token that fails the route's requirements.
pub fn insufficient_scope(description: &'static str) -> Response<Body> {
    challenge(StatusCode::FORBIDDEN, "insufficient_scope", description)
}

fn challenge(status: StatusCode, error: &'static str, description: &'static str) -> Response<Body> {
    let mut r = json_error(status, error, description);
    let value =
        format!("Bearer realm=\"{REALM}\", error=\"{error}\", error_description=\"{description}\"");
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().insert(WWW_AUTHENTICATE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_follow_rfc6750() {
        let r = missing_token();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()[WWW_AUTHENTICATE], "Bearer realm=\"tollgate\"");
        let r = TokenRefusal::of(&AuthError::Expired).response();
        assert_eq!(
            r.headers()[WWW_AUTHENTICATE],
            "Bearer realm=\"tollgate\", error=\"invalid_token\", error_description=\"token expired\""
        );
        let r = TokenRefusal::of(&AuthError::KeysUnavailable("entra".into())).response();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[RETRY_AFTER], "5");
        assert!(r.headers().get(WWW_AUTHENTICATE).is_none());
        let r = insufficient_scope("a required role is missing");
        assert_eq!(r.status(), 403);
        assert!(
            r.headers()[WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains("insufficient_scope")
        );
        assert_eq!(r.headers()[http::header::CONTENT_TYPE], "application/json");
    }
}
