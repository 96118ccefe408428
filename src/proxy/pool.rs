//! Keep-alive HTTP/1.1 connections to one upstream.
//!
//! Every [`Origin`](super::forward::Origin) has exactly one scheme and authority, so the
//! pool is a stack of idle connections, not a map keyed by host: a checkout is a lock and a
//! `pop`, and the most recently used connection (the one whose buffers are still in cache) is
//! reused first. A connection goes back on the stack when its response body has been read to
//! the end ([`UpstreamBody`]); one whose body was abandoned, or that was upgraded, is closed.
//!
//! Requests without a body to a plain-HTTP upstream, nearly every request a proxy forwards,
//! go over [`super::h1`]'s lean client and its own stack of connections; the others (request
//! bodies, upgrades, TLS) over hyper's HTTP/1.1 client.
//!
//! A request sent on a reused connection that the upstream closed meanwhile (a keep-alive
//! race) is sent again on another connection when that cannot repeat an action: when it was
//! never written, or, on the lean client, when its method is idempotent and nothing came
//! back. Otherwise it fails (502).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use parking_lot::Mutex;
use tokio::time::Instant;
use tower_service::Service;

use super::h1;
use super::headers::Forwarded;

/// Most idle connections kept; more are closed when their response ends.
const MAX_IDLE: usize = 1024;
/// How often idle connections are checked for their idle timeout when no request comes.
const REAP_INTERVAL: Duration = Duration::from_secs(30);

type Sender = SendRequest<Incoming>;
/// What the connector makes.
type Io = hyper_rustls::MaybeHttpsStream<hyper_util::rt::TokioIo<tokio::net::TcpStream>>;

/// Why a request got no response from a pooled connection.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made.
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The connection failed, or the response was not HTTP.
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

/// The idle connections of one upstream, most recently used last. Generic only so that the
/// expiry can be tested without connections.
struct Idle<S = Sender> {
    conns: VecDeque<IdleConn<S>>,
    timeout: Duration,
}

struct IdleConn<S> {
    sender: S,
    since: Instant,
}

impl<S> Idle<S> {
    /// Drops the connections idle for longer than the timeout (the oldest are at the front).
    fn expire(&mut self, now: Instant) {
        while let Some(oldest) = self.conns.front() {
            if now.saturating_duration_since(oldest.since) < self.timeout {
                break;
            }
            self.conns.pop_front();
        }
    }
}

/// The connections to one upstream.
pub struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// The upstream's scheme and authority, for the connector.
    origin: Uri,
    builder: http1::Builder,
    idle: Arc<Mutex<Idle>>,
    /// The lean client's idle connections; `None` for a TLS upstream.
    lean: Option<Arc<Mutex<Idle<Box<h1::Conn>>>>>,
}

impl Pool {
    /// A pool of connections to `origin` (scheme and authority) made by `connector`; idle
    /// connections are closed after `idle_timeout`.
    pub fn new(
        connector: HttpsConnector<HttpConnector>,
        origin: Uri,
        idle_timeout: Duration,
    ) -> Self {
        let idle = Arc::new(Mutex::new(Idle {
            conns: VecDeque::new(),
            timeout: idle_timeout,
        }));
        spawn_reaper(Arc::downgrade(&idle));
        let lean = (origin.scheme() == Some(&http::uri::Scheme::HTTP)).then(|| {
            let idle = Arc::new(Mutex::new(Idle {
                conns: VecDeque::new(),
                timeout: idle_timeout,
            }));
            spawn_reaper(Arc::downgrade(&idle));
            idle
        });
        Pool {
            connector,
            origin,
            builder: {
                let mut builder = http1::Builder::new();
                // One buffer, one write(2): cheaper than writev for small heads and bodies
                // (callgrind), and large bodies are flushed as the buffer fills either way.
                builder.writev(false);
                builder
            },
            idle,
            lean,
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) with this hop's `X-Forwarded-*` headers, if
    /// any, on an idle connection, or a new one.
    pub async fn send(
        &self,
        req: Box<Request<Incoming>>,
        forwarded: Option<Forwarded<'_>>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        if let Some(lean) = &self.lean
            && h1::can_carry(&req)
        {
            return self.send_lean(lean, req, forwarded).await;
        }
        // Boxed: hyper's client future is large; inline, every request's future (the lean
        // ones too) would be that much larger and copied whole on each move.
        Box::pin(self.send_hyper(req, forwarded)).await
    }

    /// [`Pool::send`] over hyper's client: requests with a body, upgrades, TLS upstreams.
    async fn send_hyper(
        &self,
        mut req: Box<Request<Incoming>>,
        forwarded: Option<Forwarded<'_>>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        if let Some(forwarded) = forwarded {
            forwarded.apply(req.headers_mut());
        }
        loop {
            let (mut sender, reused) = match self.checkout() {
                Some(sender) => (sender, true),
                // Boxed: the connect future is large and rarely needed; inline, it would be
                // copied with this future on every request.
                None => (Box::pin(self.connect()).await?, false),
            };
            match sender.try_send_request(*req).await {
                Ok(response) => return Ok(self.wrap(response, sender)),
                Err(mut e) => match e.take_message() {
                    // Never written: the upstream closed the idle connection first.
                    Some(unsent) if reused => {
                        tracing::debug!(error = %e.error(), "pooled connection closed; sending on another");
                        *req = unsent;
                    }
                    _ => return Err(SendError::Failed(e.into_error().into())),
                },
            }
        }
    }

    /// [`Pool::send`] over the lean client.
    async fn send_lean(
        &self,
        lean: &Arc<Mutex<Idle<Box<h1::Conn>>>>,
        req: Box<Request<Incoming>>,
        forwarded: Option<Forwarded<'_>>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        loop {
            let (conn, reused) = match checkout_lean(lean) {
                Some(conn) => (conn, true),
                None => (Box::pin(self.connect_tcp()).await?, false),
            };
            match h1::send(conn, &*req, forwarded.as_ref()).await {
                Ok(response) => {
                    let idle = Arc::downgrade(lean);
                    return Ok(response.map(|body| UpstreamBody {
                        inner: Inner::Lean { body, idle },
                    }));
                }
                Err(e) if reused && e.can_retry(req.method()) => {
                    tracing::debug!(error = %e, "pooled connection closed; sending on another");
                }
                Err(e) => return Err(SendError::Failed(e.into())),
            }
        }
    }

    /// A new plain TCP connection for the lean client.
    async fn connect_tcp(&self) -> Result<Box<h1::Conn>, SendError> {
        match self.dial().await? {
            hyper_rustls::MaybeHttpsStream::Http(io) => Ok(h1::Conn::new(io.into_inner())),
            // Not reached: the lean client exists only for http upstreams.
            hyper_rustls::MaybeHttpsStream::Https(_) => Err(SendError::Connect(
                "a TLS connection where plain TCP was expected".into(),
            )),
        }
    }

    /// A new connection to the upstream: TCP, and TLS for https.
    async fn dial(&self) -> Result<Io, SendError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        connector
            .call(self.origin.clone())
            .await
            .map_err(SendError::Connect)
    }

    /// The most recently used connection that can take a request now. Closed ones are
    /// dropped; busy ones (still finishing their last exchange) are left in the pool.
    fn checkout(&self) -> Option<Sender> {
        let mut idle = self.idle.lock();
        let mut busy = 0;
        while idle.conns.len() > busy {
            let index = idle.conns.len() - 1 - busy;
            let conn = &idle.conns[index];
            if conn.sender.is_ready() {
                return idle.conns.remove(index).map(|c| c.sender);
            }
            if conn.sender.is_closed() {
                idle.conns.remove(index);
            } else {
                busy += 1;
            }
        }
        None
    }

    async fn connect(&self) -> Result<Sender, SendError> {
        let io = self.dial().await?;
        let (sender, conn) = self
            .builder
            .handshake(io)
            .await
            .map_err(|e| SendError::Failed(e.into()))?;
        tokio::spawn(async move {
            if let Err(error) = conn.with_upgrades().await {
                tracing::debug!(%error, "upstream connection closed with an error");
            }
        });
        Ok(sender)
    }

    /// The response with a body that returns the connection to the pool once read to the
    /// end. An upgraded connection belongs to the upgrade, not to the pool.
    fn wrap(&self, response: Response<Incoming>, sender: Sender) -> Response<UpstreamBody> {
        let give_back =
            (response.status() != http::StatusCode::SWITCHING_PROTOCOLS).then(|| GiveBack {
                sender,
                idle: Arc::downgrade(&self.idle),
            });
        response.map(|inner| UpstreamBody {
            inner: Inner::Hyper {
                inner,
                finished: false,
                give_back,
            },
        })
    }
}

/// The most recently used idle connection of the lean client that is still usable; the
/// unusable ones found on the way are closed.
fn checkout_lean(idle: &Mutex<Idle<Box<h1::Conn>>>) -> Option<Box<h1::Conn>> {
    loop {
        let mut conn = idle.lock().conns.pop_back()?.sender;
        if conn.is_usable() {
            return Some(conn);
        }
    }
}

/// Puts a connection back, most recently used last, unless the pool is full.
fn give_back<S>(idle: &Weak<Mutex<Idle<S>>>, sender: S) {
    let Some(idle) = idle.upgrade() else { return };
    let now = Instant::now();
    let mut idle = idle.lock();
    idle.expire(now);
    if idle.conns.len() < MAX_IDLE {
        idle.conns.push_back(IdleConn { sender, since: now });
    }
}

/// Closes the connections idle for too long while no request comes; ends with the pool.
fn spawn_reaper<S: Send + 'static>(idle: Weak<Mutex<Idle<S>>>) {
    // A pool built outside a runtime (`tollgate check`) sends nothing, so needs no reaper.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(REAP_INTERVAL);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(idle) = idle.upgrade() else { return };
            idle.lock().expire(Instant::now());
        }
    });
}

struct GiveBack {
    sender: Sender,
    idle: Weak<Mutex<Idle>>,
}

/// A response body from the upstream. When it has been read to the end its connection goes
/// back to the pool; dropped before that, the connection is closed (neither client can reuse a
/// connection with an unread body).
pub struct UpstreamBody {
    inner: Inner,
}

impl UpstreamBody {
    /// Whether the response's hop-by-hop headers are already gone: the lean client drops
    /// them as it reads the head, so `headers::strip_hop_by_hop` has nothing left to do.
    pub fn hop_by_hop_removed(&self) -> bool {
        matches!(self.inner, Inner::Lean { .. })
    }
}

enum Inner {
    Hyper {
        inner: Incoming,
        finished: bool,
        give_back: Option<GiveBack>,
    },
    Lean {
        body: h1::Body,
        idle: Weak<Mutex<Idle<Box<h1::Conn>>>>,
    },
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.inner {
            Inner::Hyper {
                inner,
                finished,
                give_back,
            } => {
                let frame = ready!(Pin::new(inner).poll_frame(cx));
                match &frame {
                    None => *finished = true,
                    Some(Err(_)) => *give_back = None,
                    Some(Ok(_)) => {}
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Inner::Lean { body, .. } => {
                let frame = ready!(Pin::new(body).poll_frame(cx));
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Hyper { inner, .. } => inner.is_end_stream(),
            Inner::Lean { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Hyper { inner, .. } => inner.size_hint(),
            Inner::Lean { body, .. } => body.size_hint(),
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        match &mut self.inner {
            Inner::Hyper {
                inner,
                finished,
                give_back: back,
            } => {
                let Some(GiveBack { sender, idle }) = back.take() else {
                    return;
                };
                if *finished || inner.is_end_stream() {
                    give_back(&idle, sender);
                }
            }
            Inner::Lean { body, idle } => {
                if let Some(conn) = body.into_reusable() {
                    give_back(idle, conn);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_closes_the_connections_idle_for_the_timeout_and_keeps_the_others() {
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        let mut idle = Idle {
            conns: [(1, 0), (2, 10), (3, 60)]
                .into_iter()
                .map(|(sender, secs)| IdleConn {
                    sender,
                    since: at(secs),
                })
                .collect(),
            timeout: Duration::from_secs(90),
        };
        idle.expire(at(89));
        assert_eq!(idle.conns.len(), 3, "nothing has been idle for 90 s yet");
        idle.expire(at(100));
        let left: Vec<i32> = idle.conns.iter().map(|c| c.sender).collect();
        assert_eq!(left, [3], "idle since 0 s and 10 s: closed at 100 s");
        idle.expire(at(150));
        assert!(idle.conns.is_empty());
    }
}
