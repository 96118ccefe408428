//! The running state: one immutable [`Snapshot`] (configuration plus everything compiled from
//! it) behind [`Live`], swapped whole on reload.
//!
//! A request loads the snapshot once and keeps it to the end, so a reload never changes the
//! rules under a request in flight.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::HeaderName;

use crate::config::{Config, Identity};
use crate::egress::EgressState;
use crate::egress::token_cache::TokenCache;
use crate::inbound::policy::Routes;
use crate::proxy::forward::Upstream;
use crate::proxy::tls::TlsError;

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
    /// Header names of the `[identity.claims]` mapping, stripped from every request.
    pub claim_headers: Vec<HeaderName>,
    /// What the upstream learns about the caller.
    pub identity: Identity,
}

/// Why a snapshot could not be built from a valid configuration.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The upstream's extra CA file is unusable.
    #[error("upstream trust: {0}")]
    UpstreamTls(#[source] TlsError),
    /// An egress credential or target is unusable.
    #[error(transparent)]
    Egress(#[from] crate::egress::BuildError),
}

impl Snapshot {
    /// Builds a snapshot, reusing what `previous` already holds when its settings did not
    /// change (the upstream connection pool, say, and the egress tokens).
    pub fn build(config: Config, previous: Option<&Snapshot>) -> Result<Snapshot, BuildError> {
        let tokens = previous.and_then(|p| p.tokens.clone());
        Snapshot::build_with(config, previous, tokens)
    }

    /// [`Snapshot::build`] with the egress token cache: the first snapshot gets it from
    /// [`crate::app::App::start`]; without one, the egress side is off.
    pub fn build_with(
        config: Config,
        previous: Option<&Snapshot>,
        tokens: Option<Arc<TokenCache>>,
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
                Some(InboundState {
                    routes: Routes::new(config.routes.clone()),
                    upstream,
                    preserve_host: server.preserve_host,
                    claim_headers: config
                        .identity
                        .claims
                        .iter()
                        .map(|(h, _)| h.clone())
                        .collect(),
                    identity: config.identity.clone(),
                })
            }
        };
        let egress = match (&config.egress, &tokens) {
            (Some(_), Some(cache)) => Some(EgressState::build(
                &config,
                previous.and_then(|p| p.egress.as_ref()),
                cache,
            )?),
            _ => None,
        };
        Ok(Snapshot {
            config: Arc::new(config),
            inbound,
            egress,
            tokens,
        })
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
