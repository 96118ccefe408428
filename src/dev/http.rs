//! The small HTTP/1.1 server under every development stand-in (the echo backend, the local
//! issuer, `tollgate dev`): accept on loopback, serve each connection with one handler, stop
//! when told or dropped, and wait for open connections on [`LoopbackServer::stop`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A running server. Stops accepting when dropped.
pub struct LoopbackServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl LoopbackServer {
    /// Binds `addr` (port 0 for any free port) and answers every request with `handler`.
    pub async fn start<H, F>(addr: SocketAddr, handler: H) -> std::io::Result<LoopbackServer>
    where
        H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, tracker) = (CancellationToken::new(), TaskTracker::new());
        tracker.spawn(accept(listener, handler, stop.clone(), tracker.clone()));
        Ok(LoopbackServer {
            addr,
            stop,
            tracker,
        })
    }

    /// Stops accepting, closes open connections and waits for their tasks.
    pub async fn stop(self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept<H, F>(
    listener: TcpListener,
    handler: H,
    stop: CancellationToken,
    tracker: TaskTracker,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            () = stop.cancelled() => return,
        };
        let (handler, stop) = (handler.clone(), stop.clone());
        tracker.spawn(async move {
            let service = service_fn(move |req| {
                let answer = handler(req);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stop.cancelled() => {}
            }
        });
    }
}
