//! Deadlines that are cheap to start and to cancel.
//!
//! Every proxied request runs two deadlines, hyper's header read timeout and the upstream
//! `request_timeout`, and nearly every one is cancelled long before it would fire. With a
//! tokio `Sleep` per deadline, each one costs an insertion into the runtime's timer wheel on
//! its first poll and a removal when dropped, both under the time driver's lock: ~2,600
//! instructions per proxied request for the two (callgrind), more than any other part of the
//! request path.
//!
//! [`Timers`] keeps the tokio sleeps of finished deadlines, still registered, and hands them
//! to new deadlines. A reused sleep that is due no later than the new deadline stays as it is;
//! when it fires early, the deadline re-arms it for its own instant, once. Deadlines of one
//! length (the usual case: one configured timeout) are therefore re-armed about once per
//! length, not once per request. nginx's timers are lazy the same way.
//!
//! A deadline never fires early: it is ready only when its sleep fired at or after its own
//! instant. A spare sleep that fires while unused wakes the task that last polled it, which
//! finds nothing to do (or has ended: see `MAX_SPARE` for what that holds on to).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::{Instant, Sleep};

/// At most this many spare sleeps are kept per [`Timers`]; beyond, they are dropped (and
/// deregistered) as without reuse. A spare keeps the waker of the task that last polled it
/// until it fires or is reused, and that waker keeps the task's allocation (a few KiB for a
/// connection) alive: after a burst of connections ends, at most this many ended tasks stay
/// allocated, for at most one timeout length. Clearing the waker on drop instead costs ~270
/// instructions per request (callgrind).
const MAX_SPARE: usize = 256;

/// A source of [`Deadline`]s that reuses their timer registrations; also hyper's
/// [`Timer`](hyper::rt::Timer). Cheap to clone (one `Arc`).
#[derive(Clone, Default)]
pub struct Timers {
    spare: Arc<Mutex<Vec<Pin<Box<Sleep>>>>>,
}

impl Timers {
    /// A deadline `after` from now.
    pub fn deadline(&self, after: Duration) -> Deadline {
        self.deadline_at(Instant::now() + after)
    }

    /// A deadline at `at`.
    pub fn deadline_at(&self, at: Instant) -> Deadline {
        Deadline {
            at,
            sleep: self.spare.lock().pop(),
            spare: self.spare.clone(),
        }
    }
}

/// Ready once its instant has passed. Dropping it cancels it and keeps its timer
/// registration for the next deadline from the same [`Timers`].
pub struct Deadline {
    at: Instant,
    /// Armed for `at` or earlier (or fired); `None` until first polled, unless reused.
    sleep: Option<Pin<Box<Sleep>>>,
    spare: Arc<Mutex<Vec<Pin<Box<Sleep>>>>>,
}

impl Deadline {
    /// Moves the deadline to `at`; takes effect at the next poll.
    pub fn reset(&mut self, at: Instant) {
        self.at = at;
    }
}

impl Future for Deadline {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let at = self.at;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if sleep.deadline() > at {
            // A reused sleep due after this deadline (or the deadline moved earlier).
            sleep.as_mut().reset(at);
        }
        loop {
            ready!(sleep.as_mut().poll(cx));
            if sleep.deadline() >= at {
                return Poll::Ready(());
            }
            // Fired for an earlier deadline: arm it for this one.
            sleep.as_mut().reset(at);
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        if let Some(sleep) = self.sleep.take() {
            let mut spare = self.spare.lock();
            if spare.len() < MAX_SPARE {
                spare.push(sleep);
            }
        }
    }
}

impl hyper::rt::Sleep for Deadline {}

// hyper's trait speaks `std::time::Instant`; every one is converted to tokio's at once.
#[allow(clippy::disallowed_types)]
impl hyper::rt::Timer for Timers {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(self.deadline(duration))
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(self.deadline_at(Instant::from_std(deadline)))
    }

    /// tokio's clock, so that deadlines hyper computes agree with the sleeps (also when a
    /// test pauses time).
    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: std::time::Instant) {
        match sleep.as_mut().downcast_mut_pin::<Deadline>() {
            Some(mut deadline) => deadline.reset(Instant::from_std(new_deadline)),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Whether `deadline` is ready at this (paused) instant, without waiting.
    fn ready_now(deadline: &mut Deadline) -> bool {
        let waker = std::task::Waker::noop();
        Pin::new(deadline)
            .poll(&mut Context::from_waker(waker))
            .is_ready()
    }

    #[tokio::test(start_paused = true)]
    async fn fires_at_its_instant_not_before() {
        let timers = Timers::default();
        let started = Instant::now();
        timers.deadline(100 * MS).await;
        assert_eq!(started.elapsed(), 100 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reused_sleep_armed_earlier_is_rearmed_for_the_new_deadline() {
        let timers = Timers::default();
        let mut first = timers.deadline(100 * MS);
        assert!(!ready_now(&mut first));
        drop(first); // its sleep, still armed for +100 ms, goes back as a spare

        tokio::time::advance(60 * MS).await;
        let started = Instant::now();
        let mut second = timers.deadline(100 * MS); // due at +160 ms
        assert!(second.sleep.is_some(), "the spare sleep is reused");
        assert!(!ready_now(&mut second));
        tokio::time::advance(50 * MS).await; // +110: the spare's own instant has passed
        assert!(!ready_now(&mut second), "fired early for the old deadline");
        second.await;
        assert_eq!(started.elapsed(), 100 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reused_sleep_armed_later_is_brought_forward() {
        let timers = Timers::default();
        let mut long = timers.deadline(1000 * MS);
        assert!(!ready_now(&mut long));
        drop(long);
        let started = Instant::now();
        timers.deadline(10 * MS).await;
        assert_eq!(started.elapsed(), 10 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_spare_that_fired_while_unused_is_rearmed() {
        let timers = Timers::default();
        let mut first = timers.deadline(10 * MS);
        assert!(!ready_now(&mut first));
        drop(first);
        tokio::time::advance(50 * MS).await; // the spare fires with nobody waiting
        let started = Instant::now();
        let mut second = timers.deadline(30 * MS);
        assert!(!ready_now(&mut second));
        second.await;
        assert_eq!(started.elapsed(), 30 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn reset_moves_the_deadline_both_ways() {
        let timers = Timers::default();
        let started = Instant::now();
        let mut deadline = timers.deadline(100 * MS);
        assert!(!ready_now(&mut deadline));
        deadline.reset(started + 300 * MS);
        tokio::time::advance(150 * MS).await;
        assert!(!ready_now(&mut deadline), "moved later");
        deadline.reset(started + 200 * MS);
        (&mut deadline).await;
        assert_eq!(started.elapsed(), 200 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn as_hyper_timer() {
        use hyper::rt::Timer;
        let timers = Timers::default();
        let started = Instant::now();
        let mut sleep = timers.sleep_until(timers.now() + 100 * MS);
        timers.reset(&mut sleep, timers.now() + 40 * MS);
        sleep.await;
        assert_eq!(started.elapsed(), 40 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn spares_are_bounded() {
        let timers = Timers::default();
        let mut all: Vec<Deadline> = (0..MAX_SPARE + 10)
            .map(|_| timers.deadline(100 * MS))
            .collect();
        for deadline in &mut all {
            assert!(!ready_now(deadline));
        }
        drop(all);
        assert_eq!(timers.spare.lock().len(), MAX_SPARE);
    }
}
