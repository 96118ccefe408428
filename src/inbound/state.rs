//! The compiled inbound side of a configuration: routes, issuers with their key sets, the
//! upstream pool, the identity mapping. Built by the application on start and reload, handed
//! to [`serve`](super::serve) with every request.

use std::sync::Arc;

use http::HeaderName;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::groups::{GraphGroups, Limits};
use super::issuer::{Issuer, Issuers, Overage};
use super::jwks::KeySet;
use super::policy::Routes;
use super::resource::Resources;
use super::session::Sessions;
use super::session::provider::Provider;
use super::session::store::{RedisStore, SessionStore, StoreError};
use super::signature_cache::SignatureCache;
use crate::config::{self, Config, Identity, Lookup};
use crate::credential::{self, CredentialError};
use crate::fetch::{self, FetchError};
use crate::proxy::forward::Origin;
use crate::proxy::tls::TlsError;
use crate::telemetry::metrics::Metrics;

/// The compiled inbound side.
pub struct InboundState {
    /// Routes in file order.
    pub routes: Routes,
    /// The protected upstream and its connection pool.
    pub upstream: Arc<Origin>,
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
    /// Browser sign-in; `None` without `[login]`.
    pub sessions: Option<Arc<Sessions>>,
    /// Protected resources (`[[resources]]`): their metadata, and the tokens bound to them.
    pub resources: Resources,
    /// What `sessions` was built from: a reload with the same keeps it (and its refreshes).
    login_key: Option<LoginKey>,
    /// The upstream's URL and deadline when it has no CA file of its own: a reload with the
    /// same keeps the connection pool (a CA file is always reread: its contents may change).
    pool_key: Option<(http::Uri, std::time::Duration)>,
}

/// Why the inbound side could not be built from a valid configuration.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The upstream's extra CA file is unusable.
    #[error("upstream trust: {0}")]
    UpstreamTls(#[source] TlsError),
    /// The sign-in credential is unusable (a missing variable, an unreadable certificate).
    #[error("[login] credential {name}: {source}")]
    LoginCredential {
        /// The credential's name.
        name: String,
        /// Why.
        #[source]
        source: CredentialError,
    },
    /// `[login] session_store` is unusable.
    #[error("[login] session_store: {0}")]
    SessionStore(#[source] StoreError),
    /// The credential an issuer's `graph_credential` names is unusable.
    #[error("issuer {issuer}: graph_credential {name}: {source}")]
    GraphCredential {
        /// The issuer.
        issuer: String,
        /// The credential's name.
        name: String,
        /// Why (boxed: the error stays small on the reload path).
        #[source]
        source: Box<CredentialError>,
    },
    /// An issuer's HTTP client could not be built (its CA file, say).
    #[error("issuer {issuer}: {source}")]
    Issuer {
        /// The issuer.
        issuer: String,
        /// Why.
        #[source]
        source: FetchError,
    },
}

/// Where new key sets run their refresh tasks; `None` builds an offline state (`check`,
/// `explain`, benches) whose key sets are filled by hand or never.
pub type Tasks<'a> = Option<(&'a TaskTracker, &'a CancellationToken)>;

impl InboundState {
    /// The inbound side of `config` (`None` without `[server]`), reusing what `previous`
    /// holds where the settings did not change: the upstream pool, the key sets, the
    /// signature cache.
    pub fn build(
        config: &Config,
        previous: Option<&InboundState>,
        metrics: &Arc<Metrics>,
        tasks: Tasks<'_>,
        env: Lookup<'_>,
    ) -> Result<Option<InboundState>, BuildError> {
        let Some(server) = &config.server else {
            return Ok(None);
        };
        let pool_key = server
            .ca_file
            .is_none()
            .then(|| (server.upstream.clone(), server.request_timeout));
        let reusable = previous.filter(|p| pool_key.is_some() && p.pool_key == pool_key);
        let upstream = match reusable {
            Some(p) => p.upstream.clone(),
            None => Arc::new(
                Origin::new(
                    &server.upstream,
                    server.ca_file.as_deref(),
                    server.request_timeout,
                )
                .map_err(BuildError::UpstreamTls)?,
            ),
        };
        let signature_cache = match previous.and_then(|i| i.signature_cache.clone()) {
            Some(cache) if cache.capacity() == server.token_cache_entries => Some(cache),
            _ => SignatureCache::new(server.token_cache_entries).map(Arc::new),
        };
        let login_key = login_key(config);
        let sessions = match (&login_key, previous) {
            (None, _) => None,
            (Some(key), Some(p)) if p.login_key.as_ref() == Some(key) => p.sessions.clone(),
            (Some((login, credential, issuer)), _) => {
                let built = credential::build(credential, env).map_err(|source| {
                    BuildError::LoginCredential {
                        name: credential.name.clone(),
                        source,
                    }
                })?;
                let client = fetch::client(issuer.ca_file.as_deref()).map_err(|source| {
                    BuildError::Issuer {
                        issuer: issuer.name.clone(),
                        source,
                    }
                })?;
                let config::KeySource::Discovery(discovery) = &issuer.keys else {
                    unreachable!("validation requires discovery for the sign-in issuer")
                };
                let provider = Provider::new(discovery.clone(), client);
                let store = match &login.session_store {
                    None => None,
                    Some(url) => Some(Arc::new(
                        RedisStore::new(url.0.as_str()).map_err(BuildError::SessionStore)?,
                    ) as Arc<dyn SessionStore>),
                };
                Some(Arc::new(Sessions::new(
                    login,
                    built,
                    provider,
                    store,
                    metrics.clone(),
                )))
            }
        };
        Ok(Some(InboundState {
            sessions,
            login_key,
            routes: Routes::new(config.routes.clone()),
            resources: Resources::new(&config.resources, &config.issuers),
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
            issuers: issuers(config, previous.map(|i| &i.issuers), metrics, tasks, env)?,
            signature_cache,
            pool_key,
        }))
    }

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

/// `[login]` with the credential and issuer it names: what the sign-in state is built from.
type LoginKey = (config::Login, config::Credential, config::Issuer);

fn login_key(config: &Config) -> Option<LoginKey> {
    let login = config.login.as_ref()?;
    let credential = config.credentials.get(&login.credential)?;
    let issuer = config.issuers.iter().find(|i| i.name == login.issuer)?;
    Some((login.clone(), credential.clone(), issuer.clone()))
}

/// The issuers of a configuration. A key set is reused when its issuer's key settings did not
/// change, so a reload does not refetch every JWKS; a new one starts its refresh task.
fn issuers(
    config: &Config,
    previous: Option<&Issuers>,
    metrics: &Arc<Metrics>,
    tasks: Tasks<'_>,
    env: Lookup<'_>,
) -> Result<Issuers, BuildError> {
    let mut out = Vec::with_capacity(config.issuers.len());
    for issuer in &config.issuers {
        let reused = previous
            .and_then(|p| p.iter().find(|old| old.keys.serves(issuer)))
            .map(|old| old.keys.clone());
        let keys = match reused {
            Some(keys) => keys,
            None => {
                let keys =
                    KeySet::new(issuer, metrics.clone()).map_err(|source| BuildError::Issuer {
                        issuer: issuer.name.clone(),
                        source,
                    })?;
                if let Some((tracker, stop)) = tasks {
                    tracker.spawn(KeySet::run(Arc::downgrade(&keys), stop.clone()));
                }
                keys
            }
        };
        let mut built = Issuer::new(issuer, keys);
        built.overage = overage(config, issuer, previous, metrics, env)?;
        out.push(built);
    }
    Ok(Issuers::new(out))
}

/// An issuer's `groups_overage`: with `"graph"`, its Graph lookups, reused (with their cache
/// and token) when the issuer, its Graph settings and the credential did not change and the
/// issuer has no CA file.
fn overage(
    config: &Config,
    issuer: &config::Issuer,
    previous: Option<&Issuers>,
    metrics: &Arc<Metrics>,
    env: Lookup<'_>,
) -> Result<Overage, BuildError> {
    let config::GroupsOverage::Graph(settings) = &issuer.groups_overage else {
        return Ok(Overage::Deny);
    };
    let Some(credential) = config.credentials.get(&settings.credential) else {
        unreachable!("validation requires graph_credential to name a credential")
    };
    // An issuer with a CA file builds a new client (and cache): the file may have changed.
    let reused = previous
        .filter(|_| issuer.ca_file.is_none())
        .into_iter()
        .flat_map(|p| p.iter())
        .find_map(|old| match &old.overage {
            Overage::Graph(g) if g.serves(&issuer.name, settings, credential) => Some(g.clone()),
            _ => None,
        });
    if let Some(reused) = reused {
        return Ok(Overage::Graph(reused));
    }
    let built =
        credential::build(credential, env).map_err(|source| BuildError::GraphCredential {
            issuer: issuer.name.clone(),
            name: credential.name.clone(),
            source: Box::new(source),
        })?;
    let client = fetch::client(issuer.ca_file.as_deref()).map_err(|source| BuildError::Issuer {
        issuer: issuer.name.clone(),
        source,
    })?;
    Ok(Overage::Graph(Arc::new(GraphGroups::new(
        &issuer.name,
        settings.clone(),
        credential.clone(),
        built,
        client,
        Limits::default(),
        metrics.clone(),
    ))))
}

/// Shows the series of every configured issuer's key set from the first scrape, and removes
/// those of issuers no longer configured. Called once the whole snapshot is built, so a
/// refused reload leaves the running configuration's series alone.
pub fn show_key_series(
    now: Option<&InboundState>,
    previous: Option<&InboundState>,
    metrics: &Metrics,
) {
    let issuers = now.map(|i| &i.issuers);
    for issuer in issuers.into_iter().flat_map(|i| i.iter()) {
        issuer.keys.show_series();
        if let Overage::Graph(groups) = &issuer.overage {
            groups.show_series();
        }
    }
    for gone in previous.into_iter().flat_map(|p| p.issuers.iter()) {
        if !issuers.is_some_and(|now| now.iter().any(|i| i.name == gone.name)) {
            let _ = metrics.jwks_keys.remove_label_values(&[&gone.name]);
        }
        let graph_now = issuers.is_some_and(|now| {
            now.iter()
                .any(|i| i.name == gone.name && matches!(i.overage, Overage::Graph(_)))
        });
        if matches!(gone.overage, Overage::Graph(_)) && !graph_now {
            let _ = metrics
                .groups_cache_entries
                .remove_label_values(&[&gone.name]);
        }
    }
}
