//! One (credential, scope) pair: its cached token, the single fetch in flight, and what a
//! request waiting for a token does.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{MAX_TOKEN_WAIT, Runtime, TokenError, refresh_after, usable_for};
use crate::config;
use crate::credential::retry;
use crate::credential::{AccessToken, Credential, CredentialError};
use crate::telemetry::redact::fingerprint;

/// One (credential, scope) pair and its token.
pub struct Slot {
    pub(super) credential_name: String,
    pub(super) scope: String,
    /// The settings the credential was built from: a reload reuses the slot only if equal.
    pub(super) config: config::Credential,
    pub(super) credential: Arc<dyn Credential>,
    pub(super) state: Mutex<State>,
    /// Bumped whenever a fetch ends; waiting requests watch it.
    pub(super) done: watch::Sender<u64>,
    pub(super) rt: Arc<Runtime>,
}

#[derive(Default)]
pub(super) struct State {
    token: Option<Cached>,
    pub(super) fetching: bool,
    failures: u32,
    /// No new fetch before this, after a failed one.
    retry_at: Option<Instant>,
    last_error: Option<Arc<CredentialError>>,
}

struct Cached {
    /// `Bearer <token>`, marked sensitive.
    header: HeaderValue,
    refresh_at: Instant,
    stale_at: Instant,
}

impl State {
    /// When the next fetch should start: the refresh time, not before the backoff after a
    /// failure; at once for a slot that never had a token or a failure.
    pub(super) fn due(&self, now: Instant) -> Instant {
        match (self.token.as_ref().map(|t| t.refresh_at), self.retry_at) {
            (Some(refresh), Some(retry)) => refresh.max(retry),
            (Some(refresh), None) => refresh,
            (None, Some(retry)) => retry,
            (None, None) => now,
        }
    }
}

impl Slot {
    /// `Bearer <token>` for a request: at once when a usable token is cached, else after the
    /// fetch in flight (started here if none is), waiting at most [`MAX_TOKEN_WAIT`].
    pub async fn bearer(self: &Arc<Self>) -> Result<HeaderValue, TokenError> {
        let deadline = Instant::now() + MAX_TOKEN_WAIT;
        let mut done = self.done.subscribe();
        let mut waited = false;
        loop {
            {
                let mut state = self.state.lock();
                let now = Instant::now();
                if let Some(cached) = state.token.as_ref().filter(|c| now < c.stale_at) {
                    let header = cached.header.clone();
                    // The background task normally got here first; this covers a lag.
                    if !state.fetching && now >= state.due(now) {
                        self.start_fetch(&mut state);
                    }
                    return Ok(header);
                }
                if !state.fetching {
                    // A fetch just ended without a token, or one failed recently and the next
                    // is not due: answer now rather than hammer the endpoint.
                    if waited || state.retry_at.is_some_and(|r| now < r) {
                        return Err(self.failed(state.last_error.clone()));
                    }
                    self.start_fetch(&mut state);
                }
            }
            waited = true;
            if tokio::time::timeout_at(deadline, done.changed())
                .await
                .is_err()
            {
                return Err(TokenError::TimedOut {
                    credential: self.credential_name.clone(),
                    scope: self.scope.clone(),
                    last: self.state.lock().last_error.clone(),
                });
            }
        }
    }

    fn failed(&self, last: Option<Arc<CredentialError>>) -> TokenError {
        match last {
            Some(source) => TokenError::Failed {
                credential: self.credential_name.clone(),
                scope: self.scope.clone(),
                source,
            },
            None => TokenError::TimedOut {
                credential: self.credential_name.clone(),
                scope: self.scope.clone(),
                last: None,
            },
        }
    }

    /// Starts the one fetch (with its retries) for this slot; the caller holds the lock and
    /// has checked that none is in flight.
    pub(super) fn start_fetch(self: &Arc<Self>, state: &mut State) {
        state.fetching = true;
        let slot = self.clone();
        self.rt.tasks.spawn(async move {
            tokio::select! {
                result = retry::with_retries(
                    &slot.rt.policy,
                    || slot.credential.fetch(&slot.scope),
                    |r| slot.observe(r),
                ) => slot.finish(result),
                // Shutting down: not a failure to report, but waiters must not hang.
                () = slot.rt.stop.cancelled() => {
                    slot.state.lock().fetching = false;
                    slot.done.send_modify(|g| *g = g.wrapping_add(1));
                }
            }
        });
    }

    /// Counts one attempt and remembers its error for requests that time out.
    fn observe(&self, result: &Result<AccessToken, Arc<CredentialError>>) {
        let label = match result {
            Ok(_) => "success",
            Err(e) => e.result_label(),
        };
        self.rt
            .metrics
            .egress_token_requests
            .with_label_values(&[self.credential_name.as_str(), label])
            .inc();
        if let Err(e) = result {
            self.state.lock().last_error = Some(e.clone());
        }
    }

    fn finish(&self, result: Result<AccessToken, Arc<CredentialError>>) {
        let result = result.and_then(|token| {
            let lifetime = token
                .expires_on
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            let header = HeaderValue::try_from(format!("Bearer {}", token.token.expose()));
            match header {
                Ok(_) if lifetime.is_zero() => Err(invalid("the token has already expired")),
                Ok(mut header) => {
                    header.set_sensitive(true);
                    Ok((token, header, lifetime))
                }
                Err(_) => Err(invalid("the token is not a valid header value")),
            }
        });
        let now = Instant::now();
        {
            let mut state = self.state.lock();
            state.fetching = false;
            match result {
                Ok((token, header, lifetime)) => {
                    let refresh = refresh_after(lifetime, token.refresh_in);
                    state.token = Some(Cached {
                        header,
                        refresh_at: now + refresh,
                        stale_at: now + usable_for(lifetime),
                    });
                    state.failures = 0;
                    state.retry_at = None;
                    state.last_error = None;
                    self.record_token(&token, lifetime, refresh);
                }
                Err(error) => {
                    state.failures += 1;
                    let backoff = retry::failure_backoff(state.failures, error.retry_after());
                    state.retry_at = Some(now + backoff);
                    let usable = state.token.as_ref().is_some_and(|t| now < t.stale_at);
                    self.record_failure(&error, usable, backoff, state.failures);
                    state.last_error = Some(error);
                }
            }
        }
        self.done
            .send_modify(|generation| *generation = generation.wrapping_add(1));
        self.rt.wake.notify_one();
    }

    fn record_token(&self, token: &AccessToken, lifetime: Duration, refresh: Duration) {
        let expiry = token
            .expires_on
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.rt
            .metrics
            .egress_token_expiry
            .with_label_values(&[self.credential_name.as_str(), self.scope.as_str()])
            .set(expiry);
        tracing::info!(
            target: super::LOG_TARGET,
            credential = %self.credential_name,
            scope = %self.scope,
            token = %fingerprint(token.token.expose().as_bytes()),
            expires_in_s = lifetime.as_secs(),
            refresh_in_s = refresh.as_secs(),
            "access token acquired"
        );
    }

    fn record_failure(
        &self,
        error: &CredentialError,
        usable: bool,
        backoff: Duration,
        failures: u32,
    ) {
        if usable {
            tracing::warn!(target: super::LOG_TARGET, credential = %self.credential_name, scope = %self.scope, %error, retry_in_s = backoff.as_secs(), failures, "token refresh failed; the cached token stays in use");
        } else {
            tracing::error!(target: super::LOG_TARGET, credential = %self.credential_name, scope = %self.scope, %error, retry_in_s = backoff.as_secs(), failures, "no access token: egress requests get 503");
        }
    }
}

/// A token that passed parsing but cannot be used (the parser rules both cases out; this
/// keeps the request path panic-free regardless).
fn invalid(reason: &str) -> Arc<CredentialError> {
    Arc::new(CredentialError::Setup(reason.to_owned()))
}
