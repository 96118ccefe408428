//! Access tokens per (credential, scope): fetched once however many requests wait, refreshed
//! in the background ahead of expiry, and kept in use while a refresh fails.
//!
//! Each (credential, scope) pair is a [`Slot`]. A request asks its slot for the
//! `Authorization` value: a usable token answers at once; without one the request joins the
//! single fetch in flight (starting it if needed) and waits at most [`MAX_TOKEN_WAIT`]. One
//! background task ([`TokenCache::run`]) starts every slot's first fetch and each refresh when
//! [`refresh_after`] says so; a fetch that fails (after its own retries) is tried again after
//! [`failure_backoff`](super::credential::retry::failure_backoff). Slots live as long as a
//! snapshot refers to them, so a reload that leaves a credential and scope unchanged keeps
//! the token.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::credential::retry::RetryPolicy;
use super::credential::{self, Credential, CredentialError};
use super::obo::cache::OboCache;
use crate::config::{self, SharedEnv};
use crate::telemetry::metrics::Metrics;

mod slot;

pub use slot::Slot;
use slot::State;

/// Longest time a request waits for a token before it gets 503.
pub const MAX_TOKEN_WAIT: Duration = Duration::from_secs(10);
/// Tokens are refreshed this long before they expire…
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);
/// …or at half-life when they live at least this long, as MSAL does for managed identities:
/// their tokens last ~24 h, and an identity-endpoint outage at the 5-minute mark would
/// otherwise be an outage.
pub const HALF_LIFE_FROM: Duration = Duration::from_secs(2 * 3600);
/// A token is not sent with less than this left, so it does not expire in transit.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// The log target of token events (acquired, refresh failed, none left).
pub use super::credential::LOG_TARGET;

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
    /// The on-behalf-of tokens, kept across reloads like the slots.
    obo: Arc<OboCache>,
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
        let obo = Arc::new(OboCache::new(
            config::DEFAULT_OBO_CACHE_ENTRIES,
            super::obo::cache::MAX_BYTES,
            Some(metrics.obo_cache_entries.clone()),
        ));
        Arc::new(TokenCache {
            env,
            obo,
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

    /// The on-behalf-of token cache.
    pub fn obo(&self) -> &Arc<OboCache> {
        &self.obo
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
        let built = self.credential_in(&live, credential, built)?;
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

    /// The credential `credential` describes, without a slot (on-behalf-of targets use the
    /// app registration, never an app-only token): a live slot's when the settings are equal,
    /// else `built`'s, else a new one.
    pub fn credential(
        &self,
        credential: &config::Credential,
        built: &mut HashMap<String, Arc<dyn Credential>>,
    ) -> Result<Arc<dyn Credential>, CredentialError> {
        self.credential_in(&self.live(), credential, built)
    }

    fn credential_in(
        &self,
        live: &[Arc<Slot>],
        credential: &config::Credential,
        built: &mut HashMap<String, Arc<dyn Credential>>,
    ) -> Result<Arc<dyn Credential>, CredentialError> {
        let shared = live
            .iter()
            .find(|s| s.config == *credential)
            .map(|s| s.credential.clone());
        let built = match (built.get(&credential.name).cloned(), shared) {
            (Some(c), _) | (None, Some(c)) => c,
            (None, None) => {
                let c = credential::build(credential, &*self.env)?;
                tracing::info!(target: LOG_TARGET, credential = %credential.name, source = %c.describe(), "egress credential ready");
                built.insert(credential.name.clone(), c.clone());
                c
            }
        };
        Ok(built)
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

#[cfg(test)]
mod tests;
