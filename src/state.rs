//! The running state: one immutable [`Snapshot`] (configuration plus everything compiled from
//! it) behind [`Live`], swapped whole on reload.
//!
//! A request loads the snapshot once and keeps it to the end, so a reload never changes the
//! rules under a request in flight.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::HeaderName;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{self, Config, Identity};
use crate::egress::EgressState;
use crate::egress::token_cache::TokenCache;
use crate::fetch::FetchError;
use crate::inbound::issuer::{Issuer, Issuers};
use crate::inbound::jwks::KeySet;
use crate::inbound::policy::Routes;
use crate::inbound::signature_cache::SignatureCache;
use crate::proxy::forward::Upstream;
use crate::proxy::tls::TlsError;
use crate::telemetry::metrics::Metrics;

/// Everything a request needs, built from one configuration.
pub struct Snapshot {
    /// The configuration it was built from.
    pub config: Arc<Config>,
    /// The inbound side; `None` when the file has no `[server]`.
    pub inbound: Option<InboundState>,
    /// The egress side; `None` when the file has no `[egress]` (or tollgate started without).
    pub egress: Option<EgressState>,
    /// The egress token cache, handed from snapshot to snapshot so tokens survive reloads.
    tokens: Option<Arc<TokenCache>>,
}

/// The compiled inbound side.
pub struct InboundState {
    /// Routes in file order.
    pub routes: Routes,
    /// The protected upstream and its connection pool.
    pub upstream: Arc<Upstream>,
    /// Forward the client's Host (true) or the upstream's authority.
    pub preserve_host: bool,
    /// Peers whose `X-Forwarded-*` headers are kept (`[server] trusted_proxies`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Header names of the `[identity.claims]` mapping, stripped from every request.
    pub claim_headers: Vec<HeaderName>,
    /// What the upstream learns about the caller.
    pub identity: Identity,
    /// Trusted issuers with their key sets.
    pub issuers: Issuers,
    /// Verified-signature cache; `None` when `token_cache_entries = 0`.
    pub signature_cache: Option<Arc<SignatureCache>>,
}

impl InboundState {
    /// Whether a client connection comes from a trusted proxy (an IPv4 peer on a dual-stack
    /// listener, `::ffff:a.b.c.d`, is compared as IPv4).
    #[inline]
    pub fn is_trusted_proxy(&self, peer: std::net::IpAddr) -> bool {
        !self.trusted_proxies.is_empty() && {
            let peer = peer.to_canonical();
            self.trusted_proxies.iter().any(|net| net.contains(&peer))
        }
    }
}

/// What building a snapshot may use besides the configuration.
pub struct BuildContext<'a> {
    /// Metric families (key set gauges and counters).
    pub metrics: &'a Arc<Metrics>,
    /// Where to run key refresh tasks; `None` builds an offline snapshot (`explain`, benches)
    /// whose key sets are filled by hand.
    pub tasks: Option<(&'a TaskTracker, &'a CancellationToken)>,
    /// The egress token cache for the first snapshot (later ones take it from the previous
    /// snapshot); without one, the egress side is off.
    pub tokens: Option<Arc<TokenCache>>,
}

/// Why a snapshot could not be built from a valid configuration.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The upstream's extra CA file is unusable.
    #[error("upstream trust: {0}")]
    UpstreamTls(#[source] TlsError),
    /// An issuer's HTTP client could not be built (its CA file, say).
    #[error("issuer {issuer}: {source}")]
    Issuer {
        /// The issuer.
        issuer: String,
        /// Why.
        #[source]
        source: FetchError,
    },
    /// An egress credential or target is unusable.
    #[error(transparent)]
    Egress(#[from] crate::egress::BuildError),
}

impl Snapshot {
    /// Builds a snapshot, reusing what `previous` already holds when its settings did not
    /// change (the upstream connection pool, the key sets, the egress tokens).
    pub fn build(
        config: Config,
        previous: Option<&Snapshot>,
        cx: &BuildContext<'_>,
    ) -> Result<Snapshot, BuildError> {
        let inbound = match &config.server {
            None => None,
            Some(server) => {
                let reusable = previous.and_then(|p| {
                    let old = p.config.server.as_ref()?;
                    let same = old.upstream == server.upstream
                        && old.ca_file.is_none()
                        && server.ca_file.is_none()
                        && old.request_timeout == server.request_timeout;
                    same.then(|| p.inbound.as_ref().map(|i| i.upstream.clone()))?
                });
                let upstream = match reusable {
                    Some(u) => u,
                    None => Arc::new(
                        Upstream::new(
                            &server.upstream,
                            server.ca_file.as_deref(),
                            server.request_timeout,
                        )
                        .map_err(BuildError::UpstreamTls)?,
                    ),
                };
                let old = previous.and_then(|p| p.inbound.as_ref());
                let signature_cache = match old.and_then(|i| i.signature_cache.clone()) {
                    Some(cache) if cache.capacity() == server.token_cache_entries => Some(cache),
                    _ => SignatureCache::new(server.token_cache_entries).map(Arc::new),
                };
                Some(InboundState {
                    routes: Routes::new(config.routes.clone()),
                    upstream,
                    preserve_host: server.preserve_host,
                    trusted_proxies: server.trusted_proxies.clone(),
                    claim_headers: config
                        .identity
                        .claims
                        .iter()
                        .map(|(h, _)| h.clone())
                        .collect(),
                    identity: config.identity.clone(),
                    issuers: issuers(&config.issuers, old.map(|i| &i.issuers), cx)?,
                    signature_cache,
                })
            }
        };
        let tokens = previous
            .and_then(|p| p.tokens.clone())
            .or_else(|| cx.tokens.clone());
        let egress = match (&config.egress, &tokens) {
            (Some(_), Some(cache)) => Some(EgressState::build(
                &config,
                previous.and_then(|p| p.egress.as_ref()),
                cache,
            )?),
            _ => None,
        };
        // Built whole: only now may the key set series change (a refused reload leaves them).
        let old = previous
            .and_then(|p| p.inbound.as_ref())
            .map(|i| &i.issuers);
        key_series(inbound.as_ref().map(|i| &i.issuers), old, cx.metrics);
        Ok(Snapshot {
            config: Arc::new(config),
            inbound,
            egress,
            tokens,
        })
    }
}

/// The issuers of a configuration. A key set is reused when its issuer's key settings did not
/// change, so a reload does not refetch every JWKS; a new one starts its refresh task.
fn issuers(
    settings: &[config::Issuer],
    previous: Option<&Issuers>,
    cx: &BuildContext<'_>,
) -> Result<Issuers, BuildError> {
    let mut out = Vec::with_capacity(settings.len());
    for issuer in settings {
        let reused = previous
            .and_then(|p| p.iter().find(|old| old.keys.serves(issuer)))
            .map(|old| old.keys.clone());
        let keys = match reused {
            Some(keys) => keys,
            None => {
                let keys = KeySet::new(issuer, cx.metrics.clone()).map_err(|source| {
                    BuildError::Issuer {
                        issuer: issuer.name.clone(),
                        source,
                    }
                })?;
                if let Some((tracker, stop)) = cx.tasks {
                    tracker.spawn(KeySet::run(Arc::downgrade(&keys), stop.clone()));
                }
                keys
            }
        };
        out.push(Issuer::new(issuer, keys));
    }
    Ok(Issuers::new(out))
}

/// Shows the series of every configured issuer's key set from the first scrape, and removes
/// those of issuers no longer configured.
fn key_series(issuers: Option<&Issuers>, previous: Option<&Issuers>, metrics: &Metrics) {
    for issuer in issuers.into_iter().flat_map(|i| i.iter()) {
        issuer.keys.show_series();
    }
    for gone in previous.into_iter().flat_map(|p| p.iter()) {
        if !issuers.is_some_and(|now| now.iter().any(|i| i.name == gone.name)) {
            let _ = metrics.jwks_keys.remove_label_values(&[&gone.name]);
        }
    }
}

/// The current snapshot, shared by every listener and swapped by reload.
#[derive(Clone)]
pub struct Live(Arc<ArcSwap<Snapshot>>);

impl Live {
    /// Starts with `snapshot`.
    pub fn new(snapshot: Snapshot) -> Self {
        Live(Arc::new(ArcSwap::from_pointee(snapshot)))
    }

    /// The current snapshot, to keep for the whole of one request.
    #[inline]
    pub fn load(&self) -> Arc<Snapshot> {
        self.0.load_full()
    }

    /// Replaces the snapshot; requests already running keep the one they loaded.
    pub fn store(&self, snapshot: Snapshot) {
        self.0.store(Arc::new(snapshot));
    }
}
