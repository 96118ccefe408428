use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::time::SystemTime;

use http::HeaderValue;

use super::*;
use crate::config::{Credential as CredentialConfig, CredentialKind, ManagedIdentitySettings};
use crate::credential::retry;
use crate::credential::{AccessToken, BoxFuture, Endpoint, ErrorDetail};
use crate::telemetry::redact::Secret;

fn m(minutes: u64) -> Duration {
    Duration::from_secs(minutes * 60)
}

#[test]
fn refresh_schedule_table() {
    let cases = [
        // (lifetime, refresh_in hint, refresh after)
        (m(60), None, m(55)),
        (m(90), None, m(85)),
        (m(119), None, m(114)),
        (m(120), None, m(60)),
        (m(24 * 60), None, m(12 * 60)),
        (m(8), None, m(4)),
        (m(10), None, m(5)),
        (Duration::from_secs(40), None, Duration::from_secs(20)),
        (Duration::ZERO, None, Duration::ZERO),
        (m(60), Some(m(30)), m(30)),
        (m(60), Some(m(59)), m(55)),
        (m(24 * 60), Some(m(60)), m(60)),
    ];
    for (lifetime, hint, want) in cases {
        assert_eq!(refresh_after(lifetime, hint), want, "{lifetime:?} {hint:?}");
    }
}

#[test]
fn usable_table() {
    let cases = [
        (m(60), Duration::from_secs(3570)),
        (Duration::from_secs(40), Duration::from_secs(20)),
        (Duration::from_secs(61), Duration::from_secs(31)),
        (Duration::ZERO, Duration::ZERO),
    ];
    for (lifetime, want) in cases {
        assert_eq!(usable_for(lifetime), want, "{lifetime:?}");
    }
}

/// A credential answering from a script: `Ok(lifetime)` or an HTTP status.
struct Scripted {
    replies: Mutex<VecDeque<Result<Duration, u16>>>,
    calls: AtomicUsize,
    gate: Notify,
    gated: bool,
}

impl Scripted {
    fn new(replies: Vec<Result<Duration, u16>>, gated: bool) -> Arc<Scripted> {
        Arc::new(Scripted {
            replies: Mutex::new(replies.into()),
            calls: AtomicUsize::new(0),
            gate: Notify::new(),
            gated,
        })
    }
}

impl Credential for Scripted {
    fn fetch<'a>(&'a self, _scope: &'a str) -> BoxFuture<'a, Result<AccessToken, CredentialError>> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if self.gated {
                self.gate.notified().await;
            }
            match self.replies.lock().pop_front().unwrap_or(Ok(m(60))) {
                Ok(lifetime) => Ok(AccessToken {
                    token: Secret::new(format!("t{n}")),
                    expires_on: SystemTime::now() + lifetime,
                    refresh_in: None,
                }),
                Err(status) => Err(CredentialError::Rejected {
                    endpoint: Endpoint::Imds,
                    status,
                    detail: ErrorDetail::default(),
                    retry_after: None,
                }),
            }
        })
    }

    fn describe(&self) -> String {
        "scripted".into()
    }
}

fn slot(credential: Arc<Scripted>) -> (Arc<Slot>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let rt = Arc::new(Runtime {
        metrics: metrics.clone(),
        tasks: TaskTracker::new(),
        stop: CancellationToken::new(),
        policy: RetryPolicy::default(),
        wake: Notify::new(),
    });
    let slot = Arc::new(Slot {
        credential_name: "mi".into(),
        scope: "api://x/.default".into(),
        config: CredentialConfig {
            name: "mi".into(),
            kind: CredentialKind::ManagedIdentity(ManagedIdentitySettings {
                user_assigned: None,
                endpoint: None,
            }),
            ca_file: None,
        },
        credential,
        state: Mutex::new(State::default()),
        done: watch::Sender::new(0),
        rt,
    });
    (slot, metrics)
}

fn bearer_text(h: &HeaderValue) -> &str {
    h.to_str().unwrap()
}

#[tokio::test(start_paused = true)]
async fn concurrent_waiters_share_one_fetch() {
    let cred = Scripted::new(vec![], true);
    let (slot, _) = slot(cred.clone());
    let waiters: Vec<_> = (0..20)
        .map(|_| {
            let slot = slot.clone();
            tokio::spawn(async move { slot.bearer().await })
        })
        .collect();
    // Let every waiter reach the slot before the one fetch answers.
    tokio::task::yield_now().await;
    while cred.calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    cred.gate.notify_one();
    for w in waiters {
        assert_eq!(bearer_text(&w.await.unwrap().unwrap()), "Bearer t1");
    }
    assert_eq!(cred.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_keeps_the_old_token_until_it_goes_stale() {
    // t1 lives an hour; every refresh attempt then fails with 500.
    let cred = Scripted::new(
        std::iter::once(Ok(m(60)))
            .chain(std::iter::repeat_n(Err(500), 100))
            .collect(),
        false,
    );
    let (slot, metrics) = slot(cred.clone());
    assert_eq!(bearer_text(&slot.bearer().await.unwrap()), "Bearer t1");
    tokio::time::advance(m(56)).await;
    // Past the refresh point: the request starts a refresh but is answered with t1 at once.
    assert_eq!(bearer_text(&slot.bearer().await.unwrap()), "Bearer t1");
    tokio::time::advance(m(2)).await;
    assert_eq!(bearer_text(&slot.bearer().await.unwrap()), "Bearer t1");
    assert!(cred.calls.load(Ordering::SeqCst) > 1, "a refresh was tried");
    // Stale (30 s before expiry) with the refresh still failing: 503 material.
    tokio::time::advance(m(2)).await;
    let err = slot.bearer().await.unwrap_err();
    assert!(
        matches!(&err, TokenError::Failed { source, .. } | TokenError::TimedOut { last: Some(source), .. } if source.to_string().contains("500")),
        "{err}"
    );
    let failed = metrics
        .egress_token_requests
        .with_label_values(&["mi", "unavailable"])
        .get();
    assert!(failed >= 3, "each failed attempt is counted: {failed}");
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_is_answered_at_once_and_not_retried() {
    let cred = Scripted::new(vec![Err(400), Err(400)], false);
    let (slot, _) = slot(cred.clone());
    let started = Instant::now();
    let err = slot.bearer().await.unwrap_err();
    assert!(matches!(err, TokenError::Failed { .. }), "{err}");
    assert_eq!(started.elapsed(), Duration::ZERO, "no retry delay");
    // Within the failure backoff: answered from the last error, no new call.
    let err = slot.bearer().await.unwrap_err();
    assert!(matches!(err, TokenError::Failed { .. }));
    assert_eq!(cred.calls.load(Ordering::SeqCst), 1);
    // After it, a request may try again.
    tokio::time::advance(retry::FAILURE_BACKOFF_BASE).await;
    assert!(slot.bearer().await.is_err());
    assert_eq!(cred.calls.load(Ordering::SeqCst), 2);
    // Still backing off after the second failure (20 s): no call.
    assert!(slot.bearer().await.is_err());
    assert_eq!(cred.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_gives_up_after_the_bound() {
    let cred = Scripted::new(vec![], true);
    let (slot, _) = slot(cred.clone());
    let started = Instant::now();
    let err = slot.bearer().await.unwrap_err();
    assert!(
        matches!(err, TokenError::TimedOut { last: None, .. }),
        "{err}"
    );
    assert_eq!(started.elapsed(), MAX_TOKEN_WAIT);
}
