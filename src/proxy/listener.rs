//! The accept loop: a connection cap, optional TLS, HTTP/1.1 and HTTP/2 on one port (h2c by
//! prior knowledge, h2 by ALPN; [`sniff`] tells them apart), a deadline on every
//! connection, and a drain on shutdown.
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
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Poll, Waker};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus::IntGauge;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::sniff::{self, Version};
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
    let builder = Arc::new(Protocols::new(&limits));
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
        let activity = Arc::new(Activity::default());
        let service = Counted {
            inner: make(ConnInfo::new(peer, tls.is_some())),
            activity: activity.clone(),
        };
        let timing = Timing {
            deadline,
            idle: limits.header_read_timeout,
            activity,
        };
        let (life_conn, open) = (life.clone(), open.clone());
        // Plain and TLS connections are tasks of different types: a task is allocated at the
        // size of its largest state, and one type for both would give every plain connection
        // room for a TLS handshake and stream (5.6 KiB, not 1.9, with hyper-util's auto
        // builder).
        match tls.clone() {
            None => life.tracker.spawn(async move {
                let _permit = permit;
                open.inc();
                drive(&builder, stream, service, &life_conn, timing).await;
                open.dec();
            }),
            Some(acceptor) => life.tracker.spawn(async move {
                let _permit = permit;
                open.inc();
                // The handshake counts against the first deadline: a silent client must not
                // hold a connection slot.
                match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => drive(&builder, stream, service, &life_conn, timing).await,
                    Ok(Err(error)) => tracing::debug!(%error, %peer, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
                open.dec();
            }),
        };
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

/// The two protocols' settings, shared by a listener's connections.
struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Protocols {
    fn new(limits: &Limits) -> Self {
        // One pool of timer registrations for the listener's header read deadlines: hyper
        // starts one per request and almost never lets it fire (`timer`).
        let timers = Timers::default();
        let mut http1 = http1::Builder::new();
        http1
            .timer(timers.clone())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes.max(MIN_HEAD_BUFFER))
            .max_headers(MAX_HEADERS)
            // Body chunks queued and written with the head by one writev, not copied into
            // hyper's write buffer: that buffer grows to hold a response (up to twice
            // `max_buf_size`) and is kept for the connection's life, 77.6 KiB per idle
            // keep-alive connection after 64 KiB responses against 14.8 KiB queued
            // (bench/idle-memory.sh). Queued costs ~460 instructions per request and 0.4 KiB
            // per connection (the queue's capacity) on small responses.
            .writev(true);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(timers)
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            // A peer that vanished without a FIN (a dropped NAT entry, a dead pod) is found
            // by a ping it does not answer.
            .keep_alive_interval(Some(limits.header_read_timeout))
            .keep_alive_timeout(PING_TIMEOUT);
        Protocols { http1, http2 }
    }
}

/// How [`finish`]'s watch over a connection ended.
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
async fn drive<I, S>(protocols: &Protocols, io: I, service: S, life: &Lifecycle, timing: Timing)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let cancelled = life.shutdown.cancelled();
    tokio::pin!(cancelled);
    // The one timer of the connection: the first request's deadline, then, for HTTP/2, the
    // idle check. `None` once an HTTP/1.1 connection has had its first request (hyper times
    // the rest), so the timer is deregistered.
    let sleep: Option<Sleep> = Some(tokio::time::sleep_until(timing.deadline));
    tokio::pin!(sleep);
    // Until the first bytes arrive a connection has nothing in flight: shutdown closes it.
    let (version, io) = tokio::select! {
        biased;
        sniffed = sniff::sniff(io) => match sniffed {
            Ok(sniffed) => sniffed,
            Err(error) => {
                tracing::debug!(%error, "connection ended before its first request");
                return;
            }
        },
        () = &mut cancelled => return,
        () = sleep.as_mut().as_pin_mut().expect("set above") => {
            tracing::debug!("connection closed: no request within header_read_timeout");
            return;
        }
    };
    let io = TokioIo::new(io);
    let watch = Watch {
        cancelled,
        sleep,
        timing: &timing,
        life,
    };
    let result = match version {
        Version::H1 => {
            let conn = protocols
                .http1
                .serve_connection(io, service)
                .with_upgrades();
            tokio::pin!(conn);
            finish(conn, http1::UpgradeableConnection::graceful_shutdown, watch).await
        }
        // Boxed: an HTTP/2 connection's state is more than twice an HTTP/1.1 one's (1,488
        // bytes against 640), and every connection task is allocated at the size of the
        // largest.
        Version::H2 => {
            let mut conn = Box::pin(protocols.http2.serve_connection(io, service));
            finish(conn.as_mut(), http2::Connection::graceful_shutdown, watch).await
        }
    };
    if let Err(error) = result {
        tracing::debug!(error = %error, "connection ended with an error");
    }
}

/// What [`finish`] watches besides the connection: shutdown and the connection's deadline.
struct Watch<'a, 'c> {
    cancelled: Pin<&'a mut tokio_util::sync::WaitForCancellationFuture<'c>>,
    sleep: Pin<&'a mut Option<Sleep>>,
    timing: &'a Timing,
    life: &'a Lifecycle,
}

/// Drives `conn` until it ends, its deadline passes, or shutdown begins; then (but for a
/// connection that never sent a request, which is dropped) asks it to finish with
/// `graceful_shutdown` (HTTP/1.1: finish the current request, then close; HTTP/2: GOAWAY) and
/// drives it until it has, or the grace period is over.
async fn finish<C>(
    mut conn: Pin<&mut C>,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
    watch: Watch<'_, '_>,
) -> hyper::Result<()>
where
    C: Future<Output = hyper::Result<()>>,
{
    let Watch {
        mut cancelled,
        mut sleep,
        timing,
        life,
    } = watch;
    // The connection until it ends or shutdown begins. Not a `select!` over the token's
    // `cancelled()`: that takes the token's lock and re-registers the waker on every wake-up,
    // several per request (~450 instructions per proxied request, callgrind). The waker is
    // registered once (again only if the task's waker changes); later wake-ups read the flag.
    let mut registered: Option<Waker> = None;
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
    match ended {
        Ended::Done(result) => result,
        Ended::Silent => {
            tracing::debug!("connection closed: no request within header_read_timeout");
            Ok(())
        }
        Ended::Shutdown | Ended::Idle => {
            graceful_shutdown(conn.as_mut());
            tokio::select! {
                result = conn.as_mut() => result,
                () = life.abort.cancelled() => Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every open connection holds its task's allocation, which is as large as the largest
    /// state of the task's future: keep a plain connection's small (bench/idle-memory.sh).
    #[tokio::test]
    async fn a_plain_connection_task_is_small() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let _client = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (stream, _) = listener.accept().await.expect("accept");
        let protocols = Protocols::new(&Limits {
            max_connections: 1,
            header_read_timeout: Duration::from_secs(1),
            max_header_bytes: 8192,
        });
        let service = hyper::service::service_fn(|_req: Request<Incoming>| async {
            Ok::<_, Infallible>(Response::new(super::super::full("")))
        });
        let life = Lifecycle::new();
        let activity = Arc::new(Activity::default());
        let service = Counted {
            inner: service,
            activity: activity.clone(),
        };
        let timing = Timing {
            deadline: Instant::now(),
            idle: Duration::from_secs(1),
            activity,
        };
        let task = drive(&protocols, stream, service, &life, timing);
        // 1,016 bytes in a release build when written; 1,824 with hyper-util's auto
        // builder, whose HTTP/2 state was inline.
        let size = std::mem::size_of_val(&task);
        assert!(
            size <= 1536,
            "a plain connection's task future is {size} bytes"
        );
    }
}
