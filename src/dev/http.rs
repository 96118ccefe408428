//! The small HTTP/1.1 server under every development stand-in (the echo backend, the local
//! issuer, `tollgate dev`): accept on loopback, over TLS if asked, serve each connection with
//! one handler, stop when told or dropped, and wait for open connections on
//! [`LoopbackServer::stop`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A TLS handshake not done by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
        LoopbackServer::bind(addr, None, handler).await
    }

    /// [`LoopbackServer::start`] over TLS with `tls`.
    pub async fn start_tls<H, F>(
        addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        handler: H,
    ) -> std::io::Result<LoopbackServer>
    where
        H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        LoopbackServer::bind(addr, Some(TlsAcceptor::from(tls)), handler).await
    }

    async fn bind<H, F>(
        addr: SocketAddr,
        tls: Option<TlsAcceptor>,
        handler: H,
    ) -> std::io::Result<LoopbackServer>
    where
        H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, tracker) = (CancellationToken::new(), TaskTracker::new());
        tracker.spawn(accept(
            listener,
            tls,
            handler,
            stop.clone(),
            tracker.clone(),
        ));
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
    tls: Option<TlsAcceptor>,
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
        let (handler, stop, tls) = (handler.clone(), stop.clone(), tls.clone());
        tracker.spawn(async move {
            let Some(acceptor) = tls else {
                return serve(stream, handler, stop).await;
            };
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            tokio::select! {
                done = handshake => if let Ok(Ok(stream)) = done {
                    serve(stream, handler, stop).await;
                },
                () = stop.cancelled() => {}
            }
        });
    }
}

/// Serves one connection until it closes or the server stops.
async fn serve<IO, H, F>(io: IO, handler: H, stop: CancellationToken)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let service = service_fn(move |req| {
        let answer = handler(req);
        async move { Ok::<_, Infallible>(answer.await) }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = stop.cancelled() => {}
    }
}
