//! Control-plane HTTP: bounded-time, bounded-size GETs from identity providers (discovery and
//! JWKS documents), over rustls with the webpki roots plus an optional extra CA file.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;

use crate::proxy::tls::{self, TlsError};

/// Longest time one control-plane request may take, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest document accepted; a JWKS is a few kilobytes, so this only stops abuse.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// Why a document could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The extra CA file is unusable.
    #[error("trust configuration: {0}")]
    Tls(#[from] TlsError),
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The request failed (connection, TLS, timeout).
    #[error("GET {url}: {source}")]
    Request {
        /// What was fetched.
        url: String,
        /// Why it failed.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("GET {url}: HTTP {status}")]
    Status {
        /// What was fetched.
        url: String,
        /// The status.
        status: u16,
    },
    /// The document is larger than [`MAX_DOCUMENT_BYTES`].
    #[error("GET {url}: the document exceeds {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge {
        /// What was fetched.
        url: String,
    },
}

/// A client trusting the webpki roots and `ca_file`, with the fetch deadlines, and no
/// redirects (a redirect could move a key fetch off https).
pub fn client(ca_file: Option<&Path>) -> Result<reqwest::Client, FetchError> {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls::client_config(ca_file)?)
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(FetchError::Client)
}

/// GETs `url` and returns the body, at most [`MAX_DOCUMENT_BYTES`].
pub async fn get(client: &reqwest::Client, url: &url::Url) -> Result<Bytes, FetchError> {
    let request_error = |source| FetchError::Request {
        url: url.to_string(),
        source,
    };
    let mut response = client
        .get(url.clone())
        .send()
        .await
        .map_err(request_error)?;
    if !response.status().is_success() {
        return Err(FetchError::Status {
            url: url.to_string(),
            status: response.status().as_u16(),
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(request_error)? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(FetchError::TooLarge {
                url: url.to_string(),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.into())
}

/// True for URLs allowed to carry keys or tokens: https, or http to a loopback host.
pub fn is_secure(url: &url::Url) -> bool {
    url.scheme() == "https" || (url.scheme() == "http" && crate::config::is_loopback(url))
}
