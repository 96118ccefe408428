//! The pooled upstream client: keep-alive connections over http or https, a deadline for the
//! response head, and the errors that become 502 and 504.

use std::path::Path;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::tls::{self, TlsError};

/// Longest time to establish a TCP connection to an upstream or target.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle pooled connections are closed after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A pooled HTTP/1.1 client over plain TCP or rustls.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Incoming>;

/// Builds a pooled client trusting `tls`. HTTP/1.1 only upstream: it carries upgrades, and
/// every backend speaks it.
pub fn client(tls: rustls::ClientConfig) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(https)
}

/// Why a request got no response from the upstream.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No response head within the deadline: 504.
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection could not be made: 502.
    #[error("upstream unreachable")]
    Connect(#[source] hyper_util::client::legacy::Error),
    /// The connection failed or the response was not HTTP: 502.
    #[error("upstream failed")]
    Failed(#[source] hyper_util::client::legacy::Error),
    /// The upstream answered 101 to a request that asked for no upgrade: 502.
    #[error("upstream switched protocols without being asked")]
    UnexpectedUpgrade,
    /// The request path could not be made into a URI: 400.
    #[error("request target is not a valid URI")]
    BadUri(#[source] http::Error),
}

impl ForwardError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ForwardError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ForwardError::Connect(_)
            | ForwardError::Failed(_)
            | ForwardError::UnexpectedUpgrade => StatusCode::BAD_GATEWAY,
            ForwardError::BadUri(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// One upstream (or egress target): where it is, the client to reach it, and the deadline.
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    /// A path prefixed to every forwarded path (egress targets only); empty for none.
    base_path: String,
    client: HttpClient,
    timeout: Duration,
}

impl Upstream {
    /// An upstream at `base` (scheme, authority, optional base path).
    pub fn new(base: &Uri, ca_file: Option<&Path>, timeout: Duration) -> Result<Self, TlsError> {
        let client = client(tls::client_config(ca_file)?);
        Ok(Upstream {
            scheme: base.scheme().cloned().unwrap_or(Scheme::HTTP),
            authority: base
                .authority()
                .cloned()
                .expect("validated upstream URLs have an authority"),
            base_path: base.path().trim_end_matches('/').to_owned(),
            client,
            timeout,
        })
    }

    /// The upstream's authority, for the `Host` header when the client's is not kept.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The URI for a path (starting with `/`) and an optional query, on this upstream.
    pub fn uri(&self, path: &str, query: Option<&str>) -> Result<Uri, ForwardError> {
        let mut pq = String::with_capacity(
            self.base_path.len() + path.len() + query.map_or(0, |q| q.len() + 1),
        );
        pq.push_str(&self.base_path);
        pq.push_str(path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        let pq = PathAndQuery::from_maybe_shared(bytes::Bytes::from(pq))
            .map_err(|e| ForwardError::BadUri(e.into()))?;
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(ForwardError::BadUri)
    }

    /// The URI for a request whose path and query go upstream unchanged: the client's own
    /// bytes are shared, nothing is copied. Falls back to [`Upstream::uri`] when this
    /// upstream has a base path.
    pub fn uri_unchanged(&self, original: &Uri) -> Result<Uri, ForwardError> {
        match original.path_and_query() {
            Some(pq) if self.base_path.is_empty() => Uri::builder()
                .scheme(self.scheme.clone())
                .authority(self.authority.clone())
                .path_and_query(pq.clone())
                .build()
                .map_err(ForwardError::BadUri),
            _ => self.uri(original.path(), original.query()),
        }
    }

    /// Sends the request and waits for the response head, at most the configured deadline.
    /// The request must already carry this upstream's URI.
    pub async fn send(&self, req: Request<Incoming>) -> Result<Response<Incoming>, ForwardError> {
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Err(_) => Err(ForwardError::Timeout(self.timeout)),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) if e.is_connect() => Err(ForwardError::Connect(e)),
            Ok(Err(e)) => Err(ForwardError::Failed(e)),
        }
    }
}
