//! Entra's error answers: the token endpoint's JSON body (`error`, `error_description`
//! starting `AADSTSnnnnn: `, `error_codes`, `timestamp`, `trace_id`, `correlation_id`) and the
//! `error` values the authorize endpoint sends back to the redirect URI.

use std::time::SystemTime;

use http::StatusCode;
use serde_json::{Value, json};

use super::{Reply, json, random_guid};
use crate::credential::response::format_utc;

/// The OAuth `error` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ErrorKind {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    TemporarilyUnavailable,
    ServerError,
    // Authorize only.
    AccessDenied,
    LoginRequired,
    UnsupportedResponseType,
}

/// A refusal: the `error`, the AADSTS code and the text after it.
#[derive(Debug)]
pub(super) struct OAuthError {
    pub kind: ErrorKind,
    pub code: u32,
    pub description: String,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::InvalidClient => "invalid_client",
            ErrorKind::InvalidGrant => "invalid_grant",
            ErrorKind::UnauthorizedClient => "unauthorized_client",
            ErrorKind::UnsupportedGrantType => "unsupported_grant_type",
            ErrorKind::InvalidScope => "invalid_scope",
            ErrorKind::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorKind::ServerError => "server_error",
            ErrorKind::AccessDenied => "access_denied",
            ErrorKind::LoginRequired => "login_required",
            ErrorKind::UnsupportedResponseType => "unsupported_response_type",
        }
    }

    /// The token endpoint's status: 401 when the client did not prove itself (RFC 6749
    /// §5.2 allows it, and Entra answers a wrong secret so), 5xx for its own trouble, else 400.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::InvalidClient => StatusCode::UNAUTHORIZED,
            ErrorKind::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::InvalidRequest
            | ErrorKind::InvalidGrant
            | ErrorKind::UnauthorizedClient
            | ErrorKind::UnsupportedGrantType
            | ErrorKind::InvalidScope
            | ErrorKind::AccessDenied
            | ErrorKind::LoginRequired
            | ErrorKind::UnsupportedResponseType => StatusCode::BAD_REQUEST,
        }
    }
}

impl OAuthError {
    pub fn new(kind: ErrorKind, code: u32, description: impl Into<String>) -> OAuthError {
        OAuthError {
            kind,
            code,
            description: description.into(),
        }
    }

    /// The request lacks `name` (AADSTS900144).
    pub fn missing(name: &str) -> OAuthError {
        OAuthError::new(
            ErrorKind::InvalidRequest,
            900144,
            format!("The request body must contain the following parameter: '{name}'."),
        )
    }

    pub fn no_randomness() -> OAuthError {
        OAuthError::new(
            ErrorKind::ServerError,
            90000,
            "No randomness for a new code or token.",
        )
    }

    /// `AADSTSnnnnn: text`, as `error_description` begins.
    pub fn aadsts(&self) -> String {
        format!("AADSTS{}: {}", self.code, self.description)
    }

    /// The B.6 body at `now`, with fresh trace and correlation ids.
    pub fn body(&self, now: SystemTime) -> Value {
        let (trace, correlation) = (random_guid(), random_guid());
        let timestamp = format_utc(now).replace('T', " ");
        json!({
            "error": self.kind.as_str(),
            "error_description": format!(
                "{}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {timestamp}",
                self.aadsts()
            ),
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace,
            "correlation_id": correlation,
        })
    }

    /// The token endpoint's answer. (Descriptions never hold a secret, so the log may have
    /// them.)
    pub fn reply(&self, now: SystemTime) -> Reply {
        let summary = format!("{} {}", self.kind.as_str(), self.aadsts());
        json(self.kind.status(), self.body(now), summary)
    }
}
