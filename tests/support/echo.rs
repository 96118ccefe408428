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
