//! When to try a token request again: exponential backoff honouring `Retry-After`, IMDS's
//! 70-second 410 window, and the slower backoff between whole fetches that failed.
//!
//! The schedules are pure functions of the attempt count and elapsed time (table-tested
//! below); [`with_retries`] is the loop that sleeps between attempts.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::{AccessToken, CredentialError};

/// How a failed attempt may be retried, as the error classifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Not retryable: 400 (identity not found, bad request), 401, 403, a bad response.
    Never,
    /// Transient (429, 5xx, IMDS 404, a connection failure), with the server's
    /// `Retry-After` if it gave one.
    After(Option<Duration>),
    /// IMDS 410: it is updating and back within 70 s.
    Gone(Option<Duration>),
}

/// The retry schedule within one fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt for transient errors. Defaults to 5.
    pub max_retries: u32,
    /// The first delay; each later one doubles. Defaults to 1 s (1, 2, 4, 8, 16 s).
    pub base: Duration,
    /// The longest single delay, and the longest `Retry-After` waited out within a fetch; a
    /// longer one ends the fetch and is honoured by the next. Defaults to 30 s.
    pub max_delay: Duration,
    /// How long a 410 keeps being retried: IMDS promises to be back within 70 s.
    pub gone_window: Duration,
    /// The step between 410 retries. Defaults to 5 s: shorter than a request's wait for a
    /// token, so IMDS coming back is noticed while the request still waits.
    pub gone_step: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            base: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            gone_window: Duration::from_secs(70),
            gone_step: Duration::from_secs(5),
        }
    }
}

/// First pause after a whole fetch failed (its own retries included).
pub const FAILURE_BACKOFF_BASE: Duration = Duration::from_secs(10);
/// Longest pause between failed fetches: an outage is noticed within 5 minutes of ending.
pub const FAILURE_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// The delay before retry number `retries + 1`, or `None` to give up. `elapsed` is the time
/// since the fetch's first attempt; `jitter` is added to spread retries from many replicas.
pub fn next_delay(
    policy: &RetryPolicy,
    retries: u32,
    retry: Retry,
    elapsed: Duration,
    jitter: Duration,
) -> Option<Duration> {
    match retry {
        Retry::Never => None,
        Retry::Gone(after) => {
            let delay = policy.gone_step.max(after.unwrap_or_default());
            (elapsed < policy.gone_window).then_some(delay + jitter)
        }
        Retry::After(after) => {
            if retries >= policy.max_retries {
                return None;
            }
            let backoff = policy
                .base
                .saturating_mul(1 << retries.min(16))
                .min(policy.max_delay);
            match after {
                Some(after) if after > policy.max_delay => None,
                Some(after) => Some(backoff.max(after) + jitter),
                None => Some(backoff + jitter),
            }
        }
    }
}

/// The pause after the `failures`-th consecutive failed fetch (1-based) before the next
/// background attempt: 10 s, 20 s, 40 s, … up to 5 minutes, and never sooner than the
/// server's `Retry-After`.
pub fn failure_backoff(failures: u32, retry_after: Option<Duration>) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    FAILURE_BACKOFF_BASE
        .saturating_mul(1 << exp)
        .min(FAILURE_BACKOFF_MAX)
        .max(retry_after.unwrap_or_default())
}

/// Up to 250 ms of random jitter.
pub fn jitter() -> Duration {
    let mut byte = [0u8; 1];
    // A failed random draw only loses the jitter.
    let _ = aws_lc_rs::rand::fill(&mut byte);
    Duration::from_millis(u64::from(byte[0]))
}

/// Runs `attempt` until it succeeds or [`next_delay`] gives up, sleeping in between.
/// `observe` sees every attempt's result (for metrics and the last error).
pub async fn with_retries<F, Fut>(
    policy: &RetryPolicy,
    mut attempt: F,
    mut observe: impl FnMut(&Result<AccessToken, Arc<CredentialError>>),
) -> Result<AccessToken, Arc<CredentialError>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<AccessToken, CredentialError>>,
{
    let started = tokio::time::Instant::now();
    let mut retries = 0;
    loop {
        let result = attempt().await.map_err(Arc::new);
        observe(&result);
        let error = match result {
            Ok(token) => return Ok(token),
            Err(error) => error,
        };
        let Some(delay) = next_delay(policy, retries, error.retry(), started.elapsed(), jitter())
        else {
            return Err(error);
        };
        tracing::debug!(target: super::LOG_TARGET, %error, retry_in = ?delay, "token request failed; retrying");
        tokio::time::sleep(delay).await;
        retries += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn schedule_table() {
        let p = RetryPolicy::default();
        let none = Duration::ZERO;
        let cases: [(u32, Retry, u64, Option<Duration>); 14] = [
            (0, Retry::Never, 0, None),
            (0, Retry::After(None), 0, Some(s(1))),
            (1, Retry::After(None), 1, Some(s(2))),
            (2, Retry::After(None), 3, Some(s(4))),
            (4, Retry::After(None), 15, Some(s(16))),
            (5, Retry::After(None), 31, None),
            // Retry-After wins when longer than the backoff, never shorter.
            (0, Retry::After(Some(s(3))), 0, Some(s(3))),
            (3, Retry::After(Some(s(1))), 7, Some(s(8))),
            // Longer than max_delay: give up now; the next fetch honours it.
            (0, Retry::After(Some(s(120))), 0, None),
            // 410: every 5 s until the 70 s window is covered, whatever the count.
            (0, Retry::Gone(None), 0, Some(s(5))),
            (12, Retry::Gone(None), 60, Some(s(5))),
            (13, Retry::Gone(None), 69, Some(s(5))),
            (8, Retry::Gone(None), 70, None),
            (0, Retry::Gone(Some(s(20))), 0, Some(s(20))),
        ];
        for (retries, retry, elapsed, want) in cases {
            assert_eq!(
                next_delay(&p, retries, retry, s(elapsed), none),
                want,
                "retries={retries} {retry:?} elapsed={elapsed}"
            );
        }
        let capped = RetryPolicy {
            max_retries: 10,
            ..p
        };
        assert_eq!(
            next_delay(&capped, 8, Retry::After(None), s(0), none),
            Some(s(30))
        );
        assert_eq!(
            next_delay(&p, 0, Retry::After(None), s(0), Duration::from_millis(200)),
            Some(Duration::from_millis(1200))
        );
    }

    #[test]
    fn failure_backoff_table() {
        let cases = [
            (1, None, 10),
            (2, None, 20),
            (3, None, 40),
            (5, None, 160),
            (6, None, 300),
            (60, None, 300),
            (1, Some(s(90)), 90),
            (6, Some(s(3600)), 3600),
        ];
        for (failures, after, want) in cases {
            assert_eq!(failure_backoff(failures, after), s(want), "{failures}");
        }
    }

    #[test]
    fn jitter_is_small() {
        assert!(jitter() < Duration::from_millis(256));
    }
}
