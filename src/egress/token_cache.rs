//! Access tokens per (credential, scope): fetched once however many requests wait, refreshed
//! in the background ahead of expiry, and kept in use while a refresh fails.
//!
//! Each (credential, scope) pair is a [`Slot`]. A request asks its slot for the
//! `Authorization` value: a usable token answers at once; without one the request joins the
//! single fetch in flight (starting it if needed) and waits at most [`MAX_TOKEN_WAIT`]. One
//! background task ([`TokenCache::run`]) starts every slot's first fetch and each refresh when
//! [`refresh_after`] says so; a fetch that fails (after its own retries) is tried again after
//! [`retry::failure_backoff`]. Slots live as long as a snapshot refers to them, so a reload
//! that leaves a credential and scope unchanged keeps the token.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::credential::retry::{self, RetryPolicy};
use super::credential::{self, AccessToken, Credential, CredentialError};
use crate::config::{self, reload::SharedEnv};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::redact::fingerprint;

/// Longest time a request waits for a token before it gets 503.
pub const MAX_TOKEN_WAIT: Duration = Duration::from_secs(10);
/// Tokens are refreshed this long before they expire…
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);
/// …or at half-life when they live at least this long (C.2: managed-identity tokens last
/// ~24 h, and an outage at the 5-minute mark would then be an outage).
pub const HALF_LIFE_FROM: Duration = Duration::from_secs(2 * 3600);
/// A token is not sent with less than this left, so it does not expire in transit.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// When to refresh a token that lives `lifetime` from now: 5 minutes before expiry, at
/// half-life for tokens of 2 h or more, never before half-life (short tokens would otherwise
/// be refreshed continuously), and no later than the issuer's `refresh_in` hint.
pub fn refresh_after(lifetime: Duration, hint: Option<Duration>) -> Duration {
    let rule = if lifetime >= HALF_LIFE_FROM {
        lifetime / 2
    } else {
        lifetime
            .saturating_sub(REFRESH_BEFORE_EXPIRY)
            .max(lifetime / 2)
    };
    hint.map_or(rule, |h| rule.min(h))
}

/// How long a token that lives `lifetime` from now may be sent: all but [`EXPIRY_MARGIN`],
/// and at least half of it.
pub fn usable_for(lifetime: Duration) -> Duration {
    lifetime.saturating_sub(EXPIRY_MARGIN).max(lifetime / 2)
}

/// Why a request got no token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The last fetch failed (and the next is not due yet, or it just failed).
    #[error("credential {credential:?} has no token for {scope}: {source}")]
    Failed {
        /// Credential name.
        credential: String,
        /// Scope asked for.
        scope: String,
        /// The last failure.
        #[source]
        source: Arc<CredentialError>,
    },
    /// No token arrived within [`MAX_TOKEN_WAIT`].
    #[error("credential {credential:?} has no token for {scope} yet{}", last.as_ref().map(|e| format!(" (last attempt: {e})")).unwrap_or_default())]
    TimedOut {
        /// Credential name.
        credential: String,
        /// Scope asked for.
        scope: String,
        /// The last failed attempt, if any.
        last: Option<Arc<CredentialError>>,
    },
}

/// What every slot shares: metrics, the task tracker and stop signal, the retry policy.
struct Runtime {
    metrics: Arc<Metrics>,
    tasks: TaskTracker,
    stop: CancellationToken,
    policy: RetryPolicy,
    /// Wakes [`TokenCache::run`]: a slot was added or a fetch ended.
    wake: Notify,
}

/// Every live slot, and how new ones are built.
pub struct TokenCache {
    env: SharedEnv,
    rt: Arc<Runtime>,
    slots: Mutex<Vec<Weak<Slot>>>,
}

/// One (credential, scope) pair and its token.
pub struct Slot {
    credential_name: String,
    scope: String,
    /// The settings the credential was built from: a reload reuses the slot only if equal.
    config: config::Credential,
    credential: Arc<dyn Credential>,
    state: Mutex<State>,
    /// Bumped whenever a fetch ends; waiting requests watch it.
    done: watch::Sender<u64>,
    rt: Arc<Runtime>,
}

#[derive(Default)]
struct State {
    token: Option<Cached>,
    fetching: bool,
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

impl TokenCache {
    /// An empty cache. Credentials are built with `env`; fetches run on `tasks` and stop
    /// with `stop`.
    pub fn new(
        env: SharedEnv,
        metrics: Arc<Metrics>,
        tasks: TaskTracker,
        stop: CancellationToken,
    ) -> Arc<TokenCache> {
        Arc::new(TokenCache {
            env,
            rt: Arc::new(Runtime {
                metrics,
                tasks,
                stop,
                policy: RetryPolicy::default(),
                wake: Notify::new(),
            }),
            slots: Mutex::new(Vec::new()),
        })
    }

    /// The slot for `credential` and `scope`: a live one built from equal settings, else a
    /// new one. `built` shares one credential between the scopes of one build.
    pub fn slot(
        &self,
        credential: &config::Credential,
        scope: &str,
        built: &mut HashMap<String, Arc<dyn Credential>>,
    ) -> Result<Arc<Slot>, CredentialError> {
        let live = self.live();
        if let Some(slot) = live
            .iter()
            .find(|s| s.config == *credential && s.scope == scope)
        {
            return Ok(slot.clone());
        }
        let shared = live
            .iter()
            .find(|s| s.config == *credential)
            .map(|s| s.credential.clone());
        let built = match (built.get(&credential.name).cloned(), shared) {
            (Some(c), _) | (None, Some(c)) => c,
            (None, None) => {
                let c = credential::build(credential, &*self.env)?;
                tracing::info!(credential = %credential.name, source = %c.describe(), "egress credential ready");
                built.insert(credential.name.clone(), c.clone());
                c
            }
        };
        let slot = Arc::new(Slot {
            credential_name: credential.name.clone(),
            scope: scope.to_owned(),
            config: credential.clone(),
            credential: built,
            state: Mutex::new(State::default()),
            done: watch::Sender::new(0),
            rt: self.rt.clone(),
        });
        self.slots.lock().push(Arc::downgrade(&slot));
        self.rt.wake.notify_one();
        Ok(slot)
    }

    /// Starts each slot's first fetch and every refresh when due, until the stop signal.
    pub async fn run(self: Arc<Self>) {
        loop {
            let next = self.start_due();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = sleep => {}
                () = self.rt.wake.notified() => {}
                () = self.rt.stop.cancelled() => return,
            }
        }
    }

    /// Starts the fetches that are due; returns when the next one will be.
    fn start_due(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        for slot in self.live() {
            let mut state = slot.state.lock();
            if state.fetching {
                continue;
            }
            let due = state.due(now);
            if due <= now {
                slot.start_fetch(&mut state);
            } else {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        next
    }

    fn live(&self) -> Vec<Arc<Slot>> {
        let mut slots = self.slots.lock();
        slots.retain(|s| s.strong_count() > 0);
        slots.iter().filter_map(Weak::upgrade).collect()
    }
}

impl State {
    /// When the next fetch should start: the refresh time, not before the backoff after a
    /// failure; at once for a slot that never had a token or a failure.
    fn due(&self, now: Instant) -> Instant {
        match (self.token.as_ref().map(|t| t.refresh_at), self.retry_at) {
            (Some(refresh), Some(retry)) => refresh.max(retry),
            (Some(refresh), None) => refresh,
            (None, Some(retry)) => retry,
            (None, None) => now,
        }
    }
}

impl Slot {
    /// The credential's name.
    pub fn credential_name(&self) -> &str {
        &self.credential_name
    }

    /// The scope.
    pub fn scope(&self) -> &str {
        &self.scope
    }

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
    fn start_fetch(self: &Arc<Self>, state: &mut State) {
        state.fetching = true;
        let slot = self.clone();
        self.rt.tasks.spawn(async move {
            let result = tokio::select! {
                result = retry::with_retries(
                    &slot.rt.policy,
                    || slot.credential.fetch(&slot.scope),
                    |r| slot.observe(r),
                ) => result,
                () = slot.rt.stop.cancelled() => Err(Arc::new(CredentialError::Setup("shutting down".into()))),
            };
            slot.finish(result);
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
            tracing::warn!(credential = %self.credential_name, scope = %self.scope, %error, retry_in_s = backoff.as_secs(), failures, "token refresh failed; the cached token stays in use");
        } else {
            tracing::error!(credential = %self.credential_name, scope = %self.scope, %error, retry_in_s = backoff.as_secs(), failures, "no access token: egress requests get 503");
        }
    }
}

/// A token that passed parsing but cannot be used (the parser rules both cases out; this
/// keeps the request path panic-free regardless).
fn invalid(reason: &str) -> Arc<CredentialError> {
    Arc::new(CredentialError::Setup(reason.to_owned()))
}

#[cfg(test)]
mod tests;
