//! Backends: the echo backend from `tollgate::dev::echo` (it records every request), a
//! WebSocket echo, an upstream that never answers, and one that is not there.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
pub use tollgate::dev::echo::{Echo, Seen};

/// The echo backend on loopback port 0.
pub struct Backend(pub Echo);

impl Backend {
    /// Starts an echo backend.
    pub async fn start() -> Backend {
        Backend(
            Echo::start(SocketAddr::from(([127, 0, 0, 1], 0)))
                .await
                .expect("echo backend"),
        )
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.0.addr
    }

    /// Every request it received.
    pub fn seen(&self) -> Vec<Seen> {
        self.0.seen()
    }

    /// The only request it received; fails unless exactly one arrived.
    pub fn only(&self) -> Seen {
        let seen = self.0.seen();
        assert_eq!(
            seen.len(),
            1,
            "expected exactly one request at the backend, got {seen:#?}"
        );
        seen.into_iter().next().expect("one request")
    }

    /// Fails if the backend received anything.
    pub fn assert_nothing_received(&self) {
        let seen = self.0.seen();
        assert!(
            seen.is_empty(),
            "the backend should have received nothing, got {seen:#?}"
        );
    }

    /// How many requests arrived.
    pub fn count(&self) -> usize {
        self.0.count()
    }

    /// Forgets what arrived.
    pub fn clear(&self) {
        self.0.clear();
    }
}

/// A WebSocket server echoing every message back.
pub struct WsEcho {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: CancellationToken,
}

impl WsEcho {
    /// Starts a WebSocket echo server on loopback port 0.
    pub async fn start() -> WsEcho {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok((s, _)) => s, Err(_) => return },
                    () = token.cancelled() => return,
                };
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.is_close() || ws.send(msg).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        WsEcho { addr, stop }
    }
}

impl Drop for WsEcho {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// An upstream that accepts connections and never answers (for timeouts).
pub async fn silent_upstream() -> (SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted { Ok((s, _)) => held.push(s), Err(_) => return },
                () = token.cancelled() => return,
            }
        }
    });
    (addr, stop)
}

/// An address where nothing listens (bound, then released).
pub async fn dead_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

/// A raw HTTP/1.1 upstream that answers every request with the same bytes, counting the
/// connections it accepts and the requests it reads: for the connection pool's tests.
pub struct ScriptedUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: CancellationToken,
}

/// What a [`ScriptedUpstream`] does after answering.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum AfterReply {
    /// Waits for the next request on the same connection.
    KeepAlive,
    /// Closes the connection without saying so (no `Connection: close`), as a server whose
    /// keep-alive timeout is shorter than the proxy's does.
    Close,
    /// Answers the first request on each connection and closes the connection, unanswered,
    /// when the next one arrives: a keep-alive race lost after the request was written.
    CloseOnNext,
}

impl ScriptedUpstream {
    /// Starts one answering each request (a head without a body) with `reply`.
    pub async fn start(reply: &'static [u8], after: AfterReply) -> ScriptedUpstream {
        Self::spawn(reply, after, false).await
    }

    /// Like [`ScriptedUpstream::start`], but writes the reply a byte at a time, with a pause
    /// after each, so the proxy reads it in many pieces.
    pub async fn start_trickled(reply: &'static [u8], after: AfterReply) -> ScriptedUpstream {
        Self::spawn(reply, after, true).await
    }

    async fn spawn(reply: &'static [u8], after: AfterReply, trickle: bool) -> ScriptedUpstream {
        use std::sync::atomic::Ordering::SeqCst;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (token, accepted, read) = (stop.clone(), connections.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let mut stream = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok((s, _)) => s, Err(_) => return },
                    () = token.cancelled() => return,
                };
                accepted.fetch_add(1, SeqCst);
                let read = read.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    let mut answered = 0;
                    loop {
                        let Ok(n) = stream.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        head.extend_from_slice(&buf[..n]);
                        while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                            head.drain(..end + 4);
                            read.fetch_add(1, SeqCst);
                            if after == AfterReply::CloseOnNext && answered > 0 {
                                return;
                            }
                            answered += 1;
                            let written = if trickle {
                                trickle_out(&mut stream, reply).await
                            } else {
                                stream.write_all(reply).await
                            };
                            if written.is_err() {
                                return;
                            }
                            if after == AfterReply::Close {
                                return;
                            }
                        }
                    }
                });
            }
        });
        ScriptedUpstream {
            addr,
            connections,
            requests,
            stop,
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Requests read so far.
    pub fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Writes `bytes` one at a time (TCP_NODELAY, a pause after each): one segment per byte.
async fn trickle_out(stream: &mut tokio::net::TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    stream.set_nodelay(true)?;
    for byte in bytes {
        stream.write_all(std::slice::from_ref(byte)).await?;
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    Ok(())
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
