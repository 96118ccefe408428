//! Per-issuer JWKS key sets: fetched at start, refreshed in the background, refetched (at most
//! once per 30 s) when a token names an unknown `kid`, never emptied by a failed fetch.
//!
//! Keys are parsed once, when fetched, into ready-to-verify public keys for each algorithm the
//! issuer allows, so verifying a signature does no parsing at all.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use aws_lc_rs::signature::ParsedPublicKey;
use serde::Deserialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Algorithm, KeySource};
use crate::fetch::{self, FetchError};
use crate::telemetry::metrics::Metrics;

/// A token naming an unknown `kid` refetches the key set at most this often per issuer,
/// however many such tokens arrive: a flood of random `kid`s cannot turn into a flood of
/// requests to the identity provider.
pub const UNKNOWN_KID_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// First retry delay after a failed fetch; doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest delay between retries of a failing fetch.
const MAX_RETRY: Duration = Duration::from_secs(60);

/// Every key set generation in the process is distinct, so a verified-signature cache entry
/// can name the exact key set it was verified against.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

/// One usable signing key.
pub struct Key {
    /// The key id tokens name in their header.
    pub kid: String,
    /// The key's own `alg`, when the JWKS gives one: a token must then use exactly it.
    pub alg: Option<Algorithm>,
    /// The key's `issuer` (Entra multi-tenant keys), possibly with `{tenantid}`.
    pub issuer: Option<String>,
    /// Parsed public keys, one for each algorithm the issuer allows and the key supports.
    verifiers: Vec<(Algorithm, ParsedPublicKey)>,
}

impl Key {
    /// The verifier for `alg`, if this key can verify it.
    pub fn verifier(&self, alg: Algorithm) -> Option<&ParsedPublicKey> {
        self.verifiers
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, k)| k)
    }
}

/// The keys of one fetch.
pub struct Keys {
    /// Process-unique id of this set; 0 means nothing was ever fetched.
    pub generation: u64,
    by_kid: HashMap<String, Arc<Key>>,
}

impl Keys {
    fn empty() -> Self {
        Keys {
            generation: 0,
            by_kid: HashMap::new(),
        }
    }

    /// The key with this id.
    pub fn get(&self, kid: &str) -> Option<&Arc<Key>> {
        self.by_kid.get(kid)
    }

    /// The only key, for tokens without a `kid` from issuers with a single key.
    pub fn single(&self) -> Option<&Arc<Key>> {
        if self.by_kid.len() == 1 {
            self.by_kid.values().next()
        } else {
            None
        }
    }

    /// How many usable keys there are.
    pub fn len(&self) -> usize {
        self.by_kid.len()
    }

    /// True when there are no usable keys.
    pub fn is_empty(&self) -> bool {
        self.by_kid.is_empty()
    }

    /// Key ids, sorted, for messages.
    pub fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.by_kid.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }
}

/// Why a JWKS document gave no keys.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The document could not be fetched.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The document is not a JWKS.
    #[error("not a JWKS document: {0}")]
    NotJwks(#[source] serde_json::Error),
    /// The discovery document names no usable `jwks_uri`.
    #[error("the discovery document has no usable jwks_uri: {0}")]
    BadDiscovery(String),
    /// Not one key in the document can verify the issuer's algorithms.
    #[error("no usable signing key for algorithms {algorithms} (keys: {found})")]
    NoUsableKey {
        /// The issuer's algorithms.
        algorithms: String,
        /// What the document held.
        found: String,
    },
}

/// One issuer's keys, shared by every snapshot that uses the issuer unchanged.
pub struct KeySet {
    name: String,
    source: KeySource,
    algorithms: Vec<Algorithm>,
    refresh_every: Duration,
    client: reqwest::Client,
    current: ArcSwap<Keys>,
    /// Single flight for unknown-`kid` refetches: holds when the last one happened.
    refetch: tokio::sync::Mutex<Option<Instant>>,
    metrics: Arc<Metrics>,
    /// Cancelled when the key set is dropped, which ends its refresh task.
    retired: CancellationToken,
}

impl KeySet {
    /// A key set for `issuer`, empty until the first fetch.
    pub fn new(issuer: &config::Issuer, metrics: Arc<Metrics>) -> Result<Arc<KeySet>, FetchError> {
        let client = fetch::client(issuer.ca_file.as_deref())?;
        Ok(Arc::new(KeySet {
            name: issuer.name.clone(),
            source: issuer.keys.clone(),
            algorithms: issuer.algorithms.clone(),
            refresh_every: issuer.jwks_refresh,
            client,
            current: ArcSwap::from_pointee(Keys::empty()),
            refetch: tokio::sync::Mutex::new(None),
            metrics,
            retired: CancellationToken::new(),
        }))
    }

    /// A key set holding the keys of a JWKS document, never fetched (`tollgate explain
    /// --jwks`, tests and benches).
    pub fn from_document(
        issuer: &config::Issuer,
        jwks: &[u8],
        metrics: Arc<Metrics>,
    ) -> Result<Arc<KeySet>, JwksError> {
        let set = KeySet::new(issuer, metrics)?;
        set.load_document(jwks)?;
        Ok(set)
    }

    /// Replaces the keys with those of a JWKS document (`tollgate explain --jwks`).
    pub fn load_document(&self, jwks: &[u8]) -> Result<(), JwksError> {
        self.store(parse(jwks, &self.algorithms)?);
        Ok(())
    }

    /// The issuer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this key set can stand in for `issuer` after a reload (same keys, same trust,
    /// same algorithms and refresh period).
    pub fn serves(&self, issuer: &config::Issuer) -> bool {
        self.name == issuer.name
            && self.source == issuer.keys
            && self.algorithms == issuer.algorithms
            && self.refresh_every == issuer.jwks_refresh
    }

    /// The current keys, for the duration of one synchronous check: a guard, not a reference
    /// count, so the request path pays no shared-counter traffic for it.
    pub fn keys(&self) -> arc_swap::Guard<Arc<Keys>> {
        self.current.load()
    }

    /// Puts this issuer's series on `/metrics` now, before any fetch: `tollgate_jwks_keys`
    /// with the keys held (0 until the first fetch, so that an alert on no keys fires for keys
    /// never fetched) and both results of `tollgate_jwks_refresh_total`.
    pub fn show_series(&self) {
        self.metrics
            .jwks_keys
            .with_label_values(&[&self.name])
            .set(self.keys().len() as i64);
        for result in ["success", "error"] {
            self.metrics
                .jwks_refresh
                .with_label_values(&[&self.name, result]);
        }
    }

    /// True once keys were fetched at least once.
    pub fn is_ready(&self) -> bool {
        self.current.load().generation != 0
    }

    fn store(&self, keys: Keys) {
        self.metrics
            .jwks_keys
            .with_label_values(&[&self.name])
            .set(keys.len() as i64);
        self.current.store(Arc::new(keys));
    }

    /// Fetches the key set now; on failure the last good keys stay.
    pub async fn refresh(&self) -> Result<(), JwksError> {
        let result = self.fetch().await;
        let label = if result.is_ok() { "success" } else { "error" };
        self.metrics
            .jwks_refresh
            .with_label_values(&[&self.name, label])
            .inc();
        match result {
            Ok(keys) => {
                let old = self.keys();
                if old.kids() != keys.kids() {
                    tracing::info!(issuer = %self.name, kids = ?keys.kids(), "signing keys loaded");
                }
                self.store(keys);
                Ok(())
            }
            Err(error) => {
                tracing::warn!(issuer = %self.name, %error, kept = self.keys().len(), "key set fetch failed; keeping the last good keys");
                Err(error)
            }
        }
    }

    async fn fetch(&self) -> Result<Keys, JwksError> {
        let jwks_uri = match &self.source {
            KeySource::JwksUri(uri) => uri.clone(),
            KeySource::Discovery(uri) => discover(&self.client, uri).await?,
        };
        let body = fetch::get(&self.client, &jwks_uri).await?;
        parse(&body, &self.algorithms)
    }

    /// Called when a token names a `kid` not in the keys of generation `seen`. Refetches at
    /// most once per [`UNKNOWN_KID_REFETCH_INTERVAL`]; callers arriving during a refetch wait
    /// for it and share its result. Returns true when newer keys than `seen` are now in place.
    pub async fn refetch_for_unknown_kid(&self, seen: u64) -> bool {
        let mut last = self.refetch.lock().await;
        if self.keys().generation != seen {
            // Someone refetched while this caller waited.
            return true;
        }
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < UNKNOWN_KID_REFETCH_INTERVAL) {
            return false;
        }
        *last = Some(now);
        tracing::info!(issuer = %self.name, "unknown kid: refetching the key set");
        self.refresh().await.is_ok() && self.keys().generation != seen
    }

    /// Keeps the keys fresh until the key set is dropped or `stop` fires: fetches now, then
    /// every `jwks_refresh`; after a failure retries sooner, with backoff.
    pub async fn run(set: Weak<KeySet>, stop: CancellationToken) {
        let mut retry = FIRST_RETRY;
        loop {
            let Some(strong) = set.upgrade() else { return };
            let wait = match strong.refresh().await {
                Ok(()) => {
                    retry = FIRST_RETRY;
                    jittered(strong.refresh_every, random_u16())
                }
                Err(_) => {
                    let wait = retry.min(strong.refresh_every);
                    retry = (retry * 2).min(MAX_RETRY);
                    wait
                }
            };
            let retired = strong.retired.clone();
            drop(strong);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = retired.cancelled() => return,
                () = stop.cancelled() => return,
            }
        }
    }
}

impl Drop for KeySet {
    /// Ends the refresh task. The issuer's series stay: a key set replaced on reload is
    /// dropped after its successor showed them (`Snapshot::build` removes a removed issuer's).
    fn drop(&mut self) {
        self.retired.cancel();
    }
}

/// `period` shortened by up to a tenth, by `random`: a fleet of sidecars started together
/// (a deployment rollout) spreads its refreshes instead of hitting the identity provider in
/// the same second every hour.
pub fn jittered(period: Duration, random: u16) -> Duration {
    let tenth = period / 10;
    period - tenth.mul_f64(f64::from(random) / f64::from(u16::MAX))
}

fn random_u16() -> u16 {
    let mut bytes = [0u8; 2];
    // A failure leaves zeros: no jitter, which is still correct.
    let _ = aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut bytes);
    u16::from_le_bytes(bytes)
}

/// Reads `jwks_uri` from an OpenID Connect discovery document.
async fn discover(client: &reqwest::Client, uri: &url::Url) -> Result<url::Url, JwksError> {
    #[derive(Deserialize)]
    struct Discovery {
        jwks_uri: String,
    }
    let body = fetch::get(client, uri).await?;
    let doc: Discovery =
        serde_json::from_slice(&body).map_err(|e| JwksError::BadDiscovery(e.to_string()))?;
    let jwks =
        url::Url::parse(&doc.jwks_uri).map_err(|e| JwksError::BadDiscovery(e.to_string()))?;
    // The discovered URL carries keys: the same https-or-loopback rule as configured ones.
    if !fetch::is_secure(&jwks) {
        return Err(JwksError::BadDiscovery(format!("{jwks} is not https")));
    }
    Ok(jwks)
}

mod parse;

pub use parse::{parse, verification_algorithm};

#[cfg(test)]
mod tests;
