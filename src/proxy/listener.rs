//! The accept loop: a connection cap, optional TLS, HTTP/1.1 and HTTP/2 on one port (h2c by
//! prior knowledge, h2 by ALPN), a deadline on every connection, and a drain on shutdown.
//!
//! Deadlines, all `header_read_timeout`: from accept, a connection must deliver a complete
//! first request (the TLS handshake included, and whatever it speaks: an HTTP/1.1 head, or the
//! HTTP/2 preface, SETTINGS and a first HEADERS), or it is closed. hyper then times the heads
//! of later HTTP/1.1 requests, and so closes idle keep-alive connections. An HTTP/2 connection
//! is pinged when quiet and closed if the peer stops answering; one on which no new stream
//! has started for a whole `header_read_timeout` (checked once per period, so after one to two
//! periods) gets GOAWAY, its open streams finishing first.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Poll, Waker};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prometheus::IntGauge;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::timer::Timers;
use super::{Body, ConnInfo};

/// The smallest read buffer hyper accepts; a request head limit below it is raised to it.
const MIN_HEAD_BUFFER: usize = 8192;
/// Streams one HTTP/2 connection may have open at once.
const MAX_CONCURRENT_STREAMS: u32 = 256;
/// Request header lines hyper accepts on one HTTP/1.1 message; more is a 431. hyper's and
/// Envoy's default. Not more: above 100 hyper allocates its two header index arrays on the
/// heap for every request (~900 instructions per request, callgrind), at or below it they
/// live on the stack.
const MAX_HEADERS: usize = 100;
/// Pause after an accept error (file descriptors exhausted, say) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// How long an HTTP/2 peer has to answer a keep-alive ping (hyper's default).
const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Limits that apply to every connection of one listener.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Concurrent connections; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Time allowed to send a request head, the first from accept (TLS handshake and HTTP/2
    /// preface included); also the keep-alive idle limit, for HTTP/1.1 and HTTP/2.
    pub header_read_timeout: Duration,
    /// Largest request head in bytes (431 beyond it).
    pub max_header_bytes: usize,
}

/// The shutdown signals every connection task watches.
#[derive(Clone, Debug)]
pub struct Lifecycle {
    /// Stop accepting and close connections once their in-flight requests finish. Private:
    /// only [`Lifecycle::begin_shutdown`] cancels it, and it sets `stopping` first.
    shutdown: CancellationToken,
    /// Set just before `shutdown` is cancelled: what a connection reads on each wake-up (one
    /// atomic load), where asking the token takes its lock.
    stopping: Arc<AtomicBool>,
    /// The grace period is over: drop whatever is still open.
    pub abort: CancellationToken,
    /// Tracks every connection and upgraded stream, so shutdown can wait for them.
    pub tracker: TaskTracker,
}

impl Lifecycle {
    /// Signals for a listener's lifetime, none of them given yet.
    pub fn new() -> Self {
        Lifecycle {
            shutdown: CancellationToken::new(),
            stopping: Arc::new(AtomicBool::new(false)),
            abort: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }
    }

    /// Stops the accept loops and asks every connection to finish its in-flight requests and
    /// close.
    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        self.shutdown.cancel();
    }
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle::new()
    }
}

/// Accepts connections until shutdown, serving each with the service `make(conn)` returns.
pub async fn serve<F, S>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    open: IntGauge,
    make: F,
    life: Lifecycle,
) where
    F: Fn(ConnInfo) -> S,
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let builder = Arc::new(http_builder(&limits));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        // Take a permit before accepting: at the cap, new connections wait in the backlog
        // instead of being accepted and starved.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = life.shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = life.shutdown.cancelled() => break,
        };
        // Every deadline of the connection counts from here.
        let deadline = Instant::now() + limits.header_read_timeout;
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let tls = tls.clone();
        let activity = Arc::new(Activity::default());
        let service = Counted {
            inner: make(ConnInfo::new(peer, tls.is_some())),
            activity: activity.clone(),
        };
        let (life_conn, open) = (life.clone(), open.clone());
        let idle = limits.header_read_timeout;
        life.tracker.spawn(async move {
            let _permit = permit;
            open.inc();
            let timing = Timing {
                deadline,
                idle,
                activity,
            };
            match tls {
                None => drive(&builder, stream, service, &life_conn, timing).await,
                Some(acceptor) => {
                    // The handshake counts against the first deadline: a silent client must
                    // not hold a connection slot.
                    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            drive(&builder, stream, service, &life_conn, timing).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%error, %peer, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            open.dec();
        });
    }
}

/// What the connection's deadlines watch: the requests it has started, and whether it speaks
/// HTTP/2. Written by [`Counted`] once per request (two relaxed stores), read by [`drive`]
/// once per `header_read_timeout`.
#[derive(Debug, Default)]
struct Activity {
    requests: AtomicU32,
    http2: AtomicBool,
}

/// The connection's service, counting the requests it is called for.
struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Service<Request<Incoming>> for Counted<S>
where
    S: Service<Request<Incoming>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let activity = &self.activity;
        let requests = activity.requests.load(Ordering::Relaxed);
        activity
            .requests
            .store(requests.wrapping_add(1), Ordering::Relaxed);
        if requests == 0 && req.version() == http::Version::HTTP_2 {
            activity.http2.store(true, Ordering::Relaxed);
        }
        self.inner.call(req)
    }
}

/// A connection's deadlines.
struct Timing {
    /// When the first request must have arrived.
    deadline: Instant,
    /// How long an HTTP/2 connection may go without a new stream.
    idle: Duration,
    activity: Arc<Activity>,
}

fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // One pool of timer registrations for the listener's header read deadlines: hyper
    // starts one per request and almost never lets it fire (`timer`).
    let timers = Timers::default();
    builder
        .http1()
        .timer(timers.clone())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(MIN_HEAD_BUFFER))
        .max_headers(MAX_HEADERS)
        // Head and body copied into one buffer and written at once, as for the upstream.
        .writev(false);
    builder
        .http2()
        .timer(timers)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        // A peer that vanished without a FIN (a dropped NAT entry, a dead pod) is found by a
        // ping it does not answer.
        .keep_alive_interval(Some(limits.header_read_timeout))
        .keep_alive_timeout(PING_TIMEOUT);
    builder
}

/// How [`drive`]'s watch over a connection ended.
enum Ended<T> {
    /// The connection finished by itself.
    Done(T),
    /// Shutdown began.
    Shutdown,
    /// No request arrived in time: the connection is dropped.
    Silent,
    /// An HTTP/2 connection went idle: GOAWAY, then the open streams finish.
    Idle,
}

/// Serves one connection until it ends, its deadlines pass, or shutdown (then in-flight
/// requests finish, and the connection closes).
async fn drive<I, S>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    life: &Lifecycle,
    timing: Timing,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    // The connection until it ends or shutdown begins. Not a `select!` over the token's
    // `cancelled()`: that takes the token's lock and re-registers the waker on every wake-up,
    // several per request (~450 instructions per proxied request, callgrind). The waker is
    // registered once (again only if the task's waker changes); later wake-ups read the flag.
    let cancelled = life.shutdown.cancelled();
    tokio::pin!(cancelled);
    let mut registered: Option<Waker> = None;
    // The one timer of the connection: the first request's deadline, then, for HTTP/2, the
    // idle check. `None` once an HTTP/1.1 connection has had its first request (hyper times
    // the rest), so the timer is deregistered.
    let sleep: Option<Sleep> = Some(tokio::time::sleep_until(timing.deadline));
    tokio::pin!(sleep);
    let mut seen = 0;
    let ended = std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = conn.as_mut().poll(cx) {
            return Poll::Ready(Ended::Done(result));
        }
        let new_waker = registered.as_ref().is_none_or(|w| !w.will_wake(cx.waker()));
        if new_waker {
            if cancelled.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ended::Shutdown);
            }
            registered = Some(cx.waker().clone());
        } else if life.stopping.load(Ordering::Acquire) {
            return Poll::Ready(Ended::Shutdown);
        }
        if let Some(mut timer) = sleep.as_mut().as_pin_mut() {
            // Polled, which hands it the waker, only when the waker is new; at other
            // wake-ups (several per request) reading its state is enough.
            let fired = if new_waker {
                timer.as_mut().poll(cx).is_ready()
            } else {
                timer.is_elapsed()
            };
            if fired {
                let requests = timing.activity.requests.load(Ordering::Relaxed);
                if requests == 0 {
                    return Poll::Ready(Ended::Silent);
                }
                if !timing.activity.http2.load(Ordering::Relaxed) {
                    sleep.set(None);
                } else if requests == seen {
                    return Poll::Ready(Ended::Idle);
                } else {
                    seen = requests;
                    timer.as_mut().reset(Instant::now() + timing.idle);
                    // Registers the new deadline; it lies ahead, so this is pending.
                    let _ = timer.as_mut().poll(cx);
                }
            }
        }
        Poll::Pending
    })
    .await;
    let result = match ended {
        Ended::Done(result) => result,
        Ended::Silent => {
            tracing::debug!("connection closed: no request within header_read_timeout");
            return;
        }
        Ended::Shutdown | Ended::Idle => {
            // HTTP/1.1: finish the current request, then close; HTTP/2: GOAWAY.
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                result = conn.as_mut() => result,
                () = life.abort.cancelled() => Ok(()),
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(error = %error, "connection ended with an error");
    }
}
