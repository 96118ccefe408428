//! A test client that sends request targets exactly as written: no path normalisation, no
//! connection pooling, one connection per request.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Body;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// HTTP version.
    pub version: Version,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// GET `target` (sent as written) with extra headers.
pub async fn get(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::get(target).header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(
        addr,
        req.body(Empty::<Bytes>::new()).expect("valid request"),
    )
    .await
}

/// Sends one request on a new HTTP/1.1 connection and reads the whole response.
pub async fn send<B>(addr: SocketAddr, req: Request<B>) -> Reply
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    read(sender.send_request(req).await.expect("response")).await
}

/// A response with its body read whole.
async fn read(response: http::Response<hyper::body::Incoming>) -> Reply {
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
        version: parts.version,
    }
}

/// Writes raw bytes (a whole request with `Connection: close`) and returns everything the
/// server sent back, for requests an HTTP library refuses to build.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw response.
pub fn raw_status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

/// One client connection kept open for many requests: HTTP/1.1, or HTTP/2 by prior knowledge
/// (h2c). For tests that send hundreds of generated requests over both protocols.
pub struct Conn {
    addr: SocketAddr,
    sender: Sender,
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Conn {
    /// Opens a connection speaking `version` (`HTTP_11` or `HTTP_2`).
    pub async fn open(addr: SocketAddr, version: Version) -> Conn {
        let io = TokioIo::new(TcpStream::connect(addr).await.expect("connect"));
        let sender = if version == Version::HTTP_2 {
            let (sender, conn) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .expect("h2 handshake");
            tokio::spawn(conn);
            Sender::H2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .expect("handshake");
            tokio::spawn(conn);
            Sender::H1(sender)
        };
        Conn { addr, sender }
    }

    /// Sends `method target` (the target as written) with extra headers, and reads the whole
    /// response. HTTP/2 requests carry the target as `:path`.
    pub async fn send(&mut self, method: &str, target: &str, headers: &[(&str, &str)]) -> Reply {
        self.send_body(method, target, headers, b"").await
    }

    /// [`Conn::send`] with a request body (none when empty).
    pub async fn send_body(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &'static [u8],
    ) -> Reply {
        let req = Request::builder().method(method);
        let mut req = match self.sender {
            Sender::H1(_) => req.uri(target).header("host", self.addr.to_string()),
            // The authority travels as `:authority`, from the URI.
            Sender::H2(_) => req.uri(format!("http://{}{target}", self.addr)),
        };
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from_static(body)))
            .expect("valid request");
        let response = match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await.expect("connection ready");
                s.send_request(req).await.expect("response")
            }
            Sender::H2(s) => {
                s.ready().await.expect("connection ready");
                s.send_request(req).await.expect("response")
            }
        };
        read(response).await
    }
}

/// A property test's configuration: `PROPTEST_CASES` cases from the environment when set (to
/// run many more locally), else `default`, kept small enough for the whole suite's time
/// budget. A failure prints its shrunk case (to become a listed test), and is not persisted.
pub fn proptest_config(default: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}

/// An HTTP/2 frame header seen by a [`FrameRelay`].
#[derive(Clone, Copy, Debug)]
pub struct FrameHeader {
    /// The frame type (RFC 9113 §6: 0 DATA, 1 HEADERS, 4 SETTINGS, 6 PING, 7 GOAWAY, ...).
    pub kind: u8,
    /// Its flags (ACK is 1 on SETTINGS and PING).
    pub flags: u8,
}

/// A TCP relay in front of an HTTP/2 server that passes bytes through unchanged and records
/// the header of every frame the server sends: for tests of pings and GOAWAY.
pub struct FrameRelay {
    /// Where clients connect.
    pub addr: SocketAddr,
    frames: std::sync::Arc<parking_lot::Mutex<Vec<FrameHeader>>>,
}

impl FrameRelay {
    /// Relays one connection to `server`.
    pub async fn start(server: SocketAddr) -> FrameRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let frames = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let seen = frames.clone();
        tokio::spawn(async move {
            let (client, _) = listener.accept().await.expect("accept");
            let upstream = TcpStream::connect(server).await.expect("connect");
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = upstream.into_split();
            let up = tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                let _ = server_write.shutdown().await;
            });
            let mut pending = Vec::new();
            let mut buf = [0u8; 16 * 1024];
            loop {
                let n = match server_read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                pending.extend_from_slice(&buf[..n]);
                // Frame headers: a 24-bit length, the type, the flags, the stream id.
                while pending.len() >= 9 {
                    let length = usize::from(pending[0]) << 16
                        | usize::from(pending[1]) << 8
                        | usize::from(pending[2]);
                    if pending.len() < 9 + length {
                        break;
                    }
                    seen.lock().push(FrameHeader {
                        kind: pending[3],
                        flags: pending[4],
                    });
                    pending.drain(..9 + length);
                }
                if client_write.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = client_write.shutdown().await;
            up.abort();
        });
        FrameRelay { addr, frames }
    }

    /// The frames the server has sent so far, in order.
    pub fn frames_from_server(&self) -> Vec<FrameHeader> {
        self.frames.lock().clone()
    }
}
