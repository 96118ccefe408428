//! Sending token requests: the HTTP client (rustls, webpki roots plus `ca_file`, never a
//! proxy for local endpoints) and the one function that turns an answer into a token or a
//! [`CredentialError`].

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::{AccessToken, CredentialError, Endpoint, response};
use crate::fetch::{ClientSettings, build_client};
use crate::proxy::tls;

/// Longest time one token request may take, connection included.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest time to connect to a local identity endpoint (IMDS blackholes off Azure).
const LOCAL_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest time to connect to the Entra token endpoint.
const REMOTE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP client for token requests: rustls with the webpki roots plus `ca_file`, no
/// redirects (a redirect would carry a secret somewhere unplanned), a per-attempt deadline.
/// `direct` bypasses `HTTP(S)_PROXY`: IMDS and local identity endpoints must never be
/// reached through a proxy (Microsoft documents IMDS through a proxy as unsupported).
pub fn http_client(
    ca_file: Option<&Path>,
    direct: bool,
) -> Result<reqwest::Client, CredentialError> {
    let tls = tls::client_config(ca_file)?;
    client_with_tls(tls, direct)
}

/// [`http_client`] with a ready TLS configuration (Service Fabric's pinned one, say).
pub fn client_with_tls(
    tls: rustls::ClientConfig,
    direct: bool,
) -> Result<reqwest::Client, CredentialError> {
    let settings = ClientSettings {
        timeout: ATTEMPT_TIMEOUT,
        connect_timeout: if direct {
            LOCAL_CONNECT_TIMEOUT
        } else {
            REMOTE_CONNECT_TIMEOUT
        },
        direct,
        user_agent: false,
    };
    build_client(tls, settings)
        .map_err(|e| CredentialError::Setup(format!("building the HTTP client: {e}")))
}

/// Sends a token request and parses the answer: a token on 2xx, else a
/// [`CredentialError::Rejected`] with what the body said.
pub async fn request_token(
    endpoint: Endpoint,
    request: reqwest::RequestBuilder,
) -> Result<AccessToken, CredentialError> {
    let requested = SystemTime::now();
    let response = request
        .send()
        .await
        .map_err(|e| unreachable(endpoint, &e))?;
    let status = response.status();
    let retry_after = retry_after(response.headers());
    let body = response
        .bytes()
        .await
        .map_err(|e| unreachable(endpoint, &e))?;
    if status.is_success() {
        response::parse_token(endpoint, &body, requested)
    } else {
        Err(CredentialError::Rejected {
            endpoint,
            status: status.as_u16(),
            detail: response::parse_error(&body),
            retry_after,
        })
    }
}

/// A transport error, without the URL's query (it names the identity asked for, which is
/// fine, but keeps the message short).
pub fn unreachable(endpoint: Endpoint, error: &reqwest::Error) -> CredentialError {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let cause = std::error::Error::source(error)
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    CredentialError::Unreachable {
        endpoint,
        message: format!("{kind}{cause}"),
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by these endpoints).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
        .map(Duration::from_secs)
}
