//! Control-plane HTTP: bounded-time, bounded-size GETs from identity providers (discovery and
//! JWKS documents), over rustls with the webpki roots plus an optional extra CA file; and
//! [`build_client`], the one place a reqwest client is configured (these fetches and the
//! egress token requests).

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

/// What differs between the reqwest clients tollgate builds ([`build_client`]).
#[derive(Clone, Copy, Debug)]
pub struct ClientSettings {
    /// Longest time one request may take, connection included.
    pub timeout: Duration,
    /// Longest time to connect.
    pub connect_timeout: Duration,
    /// Bypass `HTTP(S)_PROXY` and `NO_PROXY`: for endpoints that must never be reached
    /// through a proxy (IMDS and the other local identity endpoints).
    pub direct: bool,
    /// Send `User-Agent: tollgate/<version>`; without it no `User-Agent` is sent.
    pub user_agent: bool,
}

/// A reqwest client trusting exactly `tls`, following no redirect (a redirect could move a
/// key fetch off https, or carry a secret somewhere unplanned), with `settings`.
pub fn build_client(
    tls: rustls::ClientConfig,
    settings: ClientSettings,
) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(settings.timeout)
        .connect_timeout(settings.connect_timeout);
    if settings.direct {
        builder = builder.no_proxy();
    }
    if settings.user_agent {
        builder = builder.user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")));
    }
    builder.build()
}

/// A client trusting the webpki roots and `ca_file`, with the fetch deadlines, and no
/// redirects.
pub fn client(ca_file: Option<&Path>) -> Result<reqwest::Client, FetchError> {
    let settings = ClientSettings {
        timeout: FETCH_TIMEOUT,
        connect_timeout: CONNECT_TIMEOUT,
        direct: false,
        user_agent: true,
    };
    build_client(tls::client_config(ca_file)?, settings).map_err(FetchError::Client)
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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// Serves one connection: reads the request head, answers `reply`, returns the head.
    async fn one_reply(reply: &'static str) -> (url::Url, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/keys", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                conn.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            conn.write_all(reply.as_bytes()).await.unwrap();
            String::from_utf8(head).unwrap().to_ascii_lowercase()
        });
        (url.parse().unwrap(), task)
    }

    const REDIRECT: &str =
        "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:1/\r\ncontent-length: 0\r\n\r\n";

    #[tokio::test]
    async fn document_fetches_name_themselves_and_follow_no_redirect() {
        let (url, server) = one_reply(REDIRECT).await;
        let client = client(None).unwrap();
        let got = get(&client, &url).await;
        assert!(
            matches!(got, Err(FetchError::Status { status: 302, .. })),
            "{got:?}"
        );
        let head = server.await.unwrap();
        let agent = concat!("user-agent: tollgate/", env!("CARGO_PKG_VERSION"), "\r\n");
        assert!(head.contains(agent), "{head}");
    }

    #[tokio::test]
    async fn without_user_agent_none_is_sent() {
        let (url, server) = one_reply(REDIRECT).await;
        let settings = ClientSettings {
            timeout: FETCH_TIMEOUT,
            connect_timeout: CONNECT_TIMEOUT,
            direct: true,
            user_agent: false,
        };
        let client = build_client(tls::client_config(None).unwrap(), settings).unwrap();
        let response = client.get(url).send().await.unwrap();
        assert_eq!(response.status(), 302, "the redirect is not followed");
        let head = server.await.unwrap();
        assert!(!head.contains("user-agent"), "{head}");
    }

    #[tokio::test]
    async fn the_timeout_bounds_the_whole_request() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        // Accepts and never answers.
        let _server = tokio::spawn(async move {
            let held = listener.accept().await;
            std::future::pending::<()>().await;
            drop(held);
        });
        let settings = ClientSettings {
            timeout: Duration::from_millis(200),
            connect_timeout: CONNECT_TIMEOUT,
            direct: true,
            user_agent: false,
        };
        let client = build_client(tls::client_config(None).unwrap(), settings).unwrap();
        let error = client.get(url).send().await.unwrap_err();
        assert!(error.is_timeout(), "{error}");
    }
}
