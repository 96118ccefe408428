//! Keep-alive HTTP/1.1 connections to one upstream.
//!
//! Every [`Upstream`](super::forward::Upstream) has exactly one scheme and authority, so the
//! pool is a stack of idle connections, not a map keyed by host: a checkout is a lock and a
//! `pop`, and the most recently used connection (the one whose buffers are still in cache) is
//! reused first. A connection goes back on the stack when its response body has been read to
//! the end ([`UpstreamBody`]); one whose body was abandoned, or that was upgraded, is closed.
//!
//! A request sent on a reused connection that the upstream closed meanwhile (a keep-alive
//! race) comes back unsent from hyper and is sent again on another connection; a request that
//! was written is never sent twice.

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

/// Most idle connections kept; more are closed when their response ends.
const MAX_IDLE: usize = 1024;
/// How often idle connections are checked for their idle timeout when no request comes.
const REAP_INTERVAL: Duration = Duration::from_secs(30);

type Sender = SendRequest<Incoming>;

/// Why a request got no response from a pooled connection.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made.
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The connection failed, or the response was not HTTP.
    Failed(hyper::Error),
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
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) on an idle connection, or a new one.
    pub async fn send(
        &self,
        mut req: Request<Incoming>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        loop {
            let (mut sender, reused) = match self.checkout() {
                Some(sender) => (sender, true),
                // Boxed: the connect future is large and rarely needed; inline, it would be
                // copied with this future on every request.
                None => (Box::pin(self.connect()).await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(response) => return Ok(self.wrap(response, sender)),
                Err(mut e) => match e.take_message() {
                    // Never written: the upstream closed the idle connection first.
                    Some(unsent) if reused => {
                        tracing::debug!(error = %e.error(), "pooled connection closed; sending on another");
                        req = unsent;
                    }
                    _ => return Err(SendError::Failed(e.into_error())),
                },
            }
        }
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
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        let io = connector
            .call(self.origin.clone())
            .await
            .map_err(SendError::Connect)?;
        let (sender, conn) = self
            .builder
            .handshake(io)
            .await
            .map_err(SendError::Failed)?;
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
            inner,
            finished: false,
            give_back,
        })
    }
}

/// Closes the connections idle for too long while no request comes; ends with the pool.
fn spawn_reaper(idle: Weak<Mutex<Idle>>) {
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
/// back to the pool; dropped before that, the connection is closed (hyper cannot reuse a
/// connection with an unread body).
pub struct UpstreamBody {
    inner: Incoming,
    finished: bool,
    give_back: Option<GiveBack>,
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            None => self.finished = true,
            Some(Err(_)) => self.give_back = None,
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        let Some(GiveBack { sender, idle }) = self.give_back.take() else {
            return;
        };
        if !(self.finished || self.inner.is_end_stream()) {
            return;
        }
        let Some(idle) = idle.upgrade() else { return };
        let now = Instant::now();
        let mut idle = idle.lock();
        idle.expire(now);
        if idle.conns.len() < MAX_IDLE {
            idle.conns.push_back(IdleConn { sender, since: now });
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
