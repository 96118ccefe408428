//! An echo backend: answers every request with a JSON description of what it received, and
//! remembers the last requests so tests can check exactly what reached the upstream.
//!
//! Two request headers steer it, for tests and demos: `x-echo-delay-ms` waits before
//! answering, `x-echo-status` sets the response status.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use parking_lot::Mutex;
use serde::Serialize;

use super::http::LoopbackServer;

/// Requests remembered; older ones are forgotten.
const REMEMBERED: usize = 256;

/// One request as the echo backend received it.
#[derive(Clone, Debug, Serialize)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path, exactly as received.
    pub path: String,
    /// Query string, exactly as received.
    pub query: Option<String>,
    /// Every header in order, repeated names repeated.
    pub headers: Vec<(String, String)>,
    /// Body length in bytes.
    pub body_bytes: usize,
    /// The body itself.
    #[serde(skip)]
    pub body: Bytes,
}

impl Seen {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, by case-insensitive name.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A running echo backend. Stops when dropped.
pub struct Echo {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: Arc<Mutex<VecDeque<Seen>>>,
    server: LoopbackServer,
}

impl Echo {
    /// Starts an echo backend on `addr` (port 0 for any).
    pub async fn start(addr: SocketAddr) -> std::io::Result<Echo> {
        let seen = Arc::new(Mutex::new(VecDeque::new()));
        let record = seen.clone();
        let server = LoopbackServer::start(addr, move |req| respond(req, record.clone())).await?;
        Ok(Echo {
            addr: server.addr,
            seen,
            server,
        })
    }

    /// The requests received so far, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().iter().cloned().collect()
    }

    /// How many requests were received (of those remembered).
    pub fn count(&self) -> usize {
        self.seen.lock().len()
    }

    /// The most recent request.
    pub fn last(&self) -> Option<Seen> {
        self.seen.lock().back().cloned()
    }

    /// Forgets what was received.
    pub fn clear(&self) {
        self.seen.lock().clear();
    }

    /// Stops accepting and waits for open connections to close.
    pub async fn stop(self) {
        self.server.stop().await;
    }
}

async fn respond(
    req: Request<Incoming>,
    seen: Arc<Mutex<VecDeque<Seen>>>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let headers = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let record = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers,
        body_bytes: body.len(),
        body,
    };
    let delay = record
        .header("x-echo-delay-ms")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis);
    let status = record
        .header("x-echo-status")
        .and_then(|v| v.parse().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let json = serde_json::to_vec_pretty(&record).unwrap_or_default();
    {
        let mut seen = seen.lock();
        if seen.len() == REMEMBERED {
            seen.pop_front();
        }
        seen.push_back(record);
    }
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let mut response = Response::new(Full::new(Bytes::from(json)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
