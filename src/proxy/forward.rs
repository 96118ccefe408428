//! Sending to an upstream: keep-alive connections over http or https ([`super::pool`]), a
//! deadline for the response head, and the errors that become 502 and 504.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

use super::headers::Forwarded;
use super::pool::{Pool, SendError, UpstreamBody};
use super::timer::Timers;
use super::tls::{self, TlsError};
use super::{Body, json_error};

/// Longest time to establish a TCP connection to an upstream or target.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle pooled connections are closed after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The connector for plain TCP or rustls, trusting `tls`. HTTP/1.1 only upstream: it carries
/// upgrades, and every backend speaks it.
fn connector(tls: rustls::ClientConfig) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

/// Why a request got no response from the upstream.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No response head within the deadline: 504.
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection could not be made: 502.
    #[error("upstream unreachable")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The connection failed or the response was not HTTP: 502.
    #[error("upstream failed")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The upstream answered 101 to a request that asked for no upgrade: 502.
    #[error("upstream switched protocols without being asked")]
    UnexpectedUpgrade,
    /// The request path could not be made into a URI: 400.
    #[error("request target is not a valid URI")]
    BadUri(#[source] http::Error),
}

/// An upstream's or target's response made ready for the client: hop-by-hop headers removed
/// (unless the lean client already did) and the body in the listeners' type.
pub fn for_client(mut response: Response<UpstreamBody>) -> Response<Body> {
    if !response.body().hop_by_hop_removed() {
        super::headers::strip_hop_by_hop(response.headers_mut());
    }
    response.map(Body::Left)
}

/// Who is on the other side of a failed exchange, for the error code the client gets:
/// the inbound listener's upstream, or an egress target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// The protected app behind the inbound listener.
    Upstream,
    /// An egress target.
    Target,
}

impl ForwardError {
    /// The JSON error response for this failure, and its error code: one table for both
    /// listeners, each naming its own side (`upstream_timeout`, `target_timeout`).
    pub fn response(&self, peer: Peer) -> (Response<Body>, &'static str) {
        let (error, description) = match (self, peer) {
            (ForwardError::Timeout(_), Peer::Upstream) => {
                ("upstream_timeout", "the upstream did not answer in time")
            }
            (ForwardError::Timeout(_), Peer::Target) => {
                ("target_timeout", "the target did not answer in time")
            }
            (ForwardError::Connect(_), Peer::Upstream) => {
                ("upstream_unreachable", "the upstream could not be reached")
            }
            (ForwardError::Connect(_), Peer::Target) => {
                ("target_unreachable", "the target could not be reached")
            }
            (ForwardError::Failed(_), Peer::Upstream) => {
                ("upstream_failed", "the upstream connection failed")
            }
            (ForwardError::UnexpectedUpgrade, Peer::Upstream) => {
                ("upstream_failed", "the upstream switched protocols unasked")
            }
            (ForwardError::Failed(_) | ForwardError::UnexpectedUpgrade, Peer::Target) => {
                ("target_failed", "the target connection failed")
            }
            (ForwardError::BadUri(_), _) => ("invalid_request", "the request target is not valid"),
        };
        (json_error(self.status(), error, description), error)
    }

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

/// An origin server tollgate forwards to: the inbound listener's upstream or an egress
/// target. Where it is, its connections, and the deadline.
pub struct Origin {
    /// The upstream's authority as a `Host` header value, made once.
    host: HeaderValue,
    /// A path prefixed to every forwarded path (egress targets only); empty for none.
    base_path: String,
    pool: Pool,
    timeout: Duration,
    /// The requests' deadlines, reusing their timer registrations.
    timers: Timers,
}

impl Origin {
    /// An upstream at `base` (scheme, authority, optional base path).
    pub fn new(base: &Uri, ca_file: Option<&Path>, timeout: Duration) -> Result<Self, TlsError> {
        let connector = connector(tls::client_config(ca_file)?);
        let scheme = base.scheme().cloned().unwrap_or(Scheme::HTTP);
        let authority = base
            .authority()
            .cloned()
            .expect("validated upstream URLs have an authority");
        let origin = Uri::builder()
            .scheme(scheme)
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .expect("a scheme and an authority make a URI");
        let host = HeaderValue::from_str(authority.as_str())
            .expect("an authority is a valid header value");
        Ok(Origin {
            host,
            base_path: base.path().trim_end_matches('/').to_owned(),
            pool: Pool::new(connector, origin, POOL_IDLE_TIMEOUT),
            timeout,
            timers: Timers::default(),
        })
    }

    /// The upstream's authority as a header value, for `Host` when the client's is not kept.
    /// Made once: cloning it copies no bytes.
    pub fn host(&self) -> &HeaderValue {
        &self.host
    }

    /// The request target for a path (starting with `/`) and an optional query on this
    /// upstream, in origin form (the connection already names the upstream).
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
        Ok(Uri::from(pq))
    }

    /// The request target for a request whose path and query go upstream unchanged: the
    /// client's own bytes are shared, nothing is copied. Falls back to [`Origin::uri`] when
    /// this upstream has a base path.
    pub fn uri_unchanged(&self, original: &Uri) -> Result<Uri, ForwardError> {
        match original.path_and_query() {
            Some(pq) if self.base_path.is_empty() => Ok(Uri::from(pq.clone())),
            _ => self.uri(original.path(), original.query()),
        }
    }

    /// Sends the request, with this hop's `X-Forwarded-*` headers if any, and waits for the
    /// response head, at most the configured deadline. The request must already carry its
    /// target from [`Origin::uri`] (origin form) and a `Host` header.
    pub async fn send(
        &self,
        req: Box<Request<Incoming>>,
        forwarded: Option<Forwarded<'_>>,
    ) -> Result<Response<UpstreamBody>, ForwardError> {
        let mut deadline = self.timers.deadline(self.timeout);
        let send = self.pool.send(req, forwarded);
        tokio::pin!(send);
        // The exchange first, as tokio's `timeout` does: a response that is ready wins.
        let sent = std::future::poll_fn(|cx| match send.as_mut().poll(cx) {
            Poll::Ready(result) => Poll::Ready(Some(result)),
            Poll::Pending => Pin::new(&mut deadline).poll(cx).map(|()| None),
        })
        .await;
        match sent {
            None => Err(ForwardError::Timeout(self.timeout)),
            Some(Ok(response)) => Ok(response),
            Some(Err(SendError::Connect(e))) => Err(ForwardError::Connect(e)),
            Some(Err(SendError::Failed(e))) => Err(ForwardError::Failed(e)),
        }
    }
}
