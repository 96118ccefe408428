//! The HTTP machinery both listeners share: accepting connections (HTTP/1.1 and HTTP/2, plain
//! or TLS), the upstream connection pool, header rewriting, and upgrade passthrough.
//!
//! [`listener`] accepts and drains connections ([`sniff`] tells HTTP/1.1 from HTTP/2), [`tls`]
//! terminates TLS and builds client trust, [`forward`] sends requests upstream over
//! [`pool`]ed connections, [`timer`] runs their deadlines, [`headers`] strips hop-by-hop
//! headers and sets `X-Forwarded-*`, and [`upgrade`] splices upgraded connections (WebSocket)
//! together.
//! Nothing here knows about tokens or routes.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};

pub mod forward;
pub mod h1;
pub mod headers;
pub mod listener;
pub mod pool;
pub mod sniff;
pub mod timer;
pub mod tls;
pub mod upgrade;

/// A response body: streamed from the upstream, or a small one tollgate wrote itself.
pub type Body = Either<pool::UpstreamBody, Full<Bytes>>;

/// A small body written by tollgate.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Either::Right(Full::new(bytes.into()))
}

/// A JSON error response `{"error", "error_description"}`, not to be cached. `error` and
/// `description` are tollgate's own words: nothing from the request is echoed.
pub fn json_error(status: StatusCode, error: &str, description: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": error, "error_description": description });
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A response tollgate wrote, made fit for a `HEAD` request: the same head, with the length
/// its body would have had, and no body. hyper leaves the body out of a `HEAD` response over
/// HTTP/1.1 but not over HTTP/2, where a client resets the stream it arrives on.
pub fn for_head(response: Response<Body>) -> Response<Body> {
    use http_body::Body as _;
    let (mut parts, body) = response.into_parts();
    if let Some(length) = body.size_hint().exact() {
        parts
            .headers
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    Response::from_parts(parts, full(Bytes::new()))
}

/// What is known about a client connection, fixed for its lifetime.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The client's IP as a header value, formatted once per connection for `X-Forwarded-For`.
    pub peer_ip: HeaderValue,
    /// Whether the connection is TLS.
    pub tls: bool,
}

impl ConnInfo {
    /// Describes a connection from `peer`.
    pub fn new(peer: SocketAddr, tls: bool) -> Self {
        let peer_ip = HeaderValue::from_str(&peer.ip().to_string())
            .expect("an IP address is a valid header value");
        ConnInfo { peer, peer_ip, tls }
    }

    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }
}
