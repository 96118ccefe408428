//! The running state: one immutable [`Snapshot`] (configuration plus everything compiled from
//! it) behind [`Live`], swapped whole on reload.
//!
//! A request loads the snapshot once and keeps it to the end, so a reload never changes the
//! rules under a request in flight.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::egress::EgressState;
use crate::egress::obo::{Caller, CallerRefused, CheckCaller};
use crate::egress::token_cache::TokenCache;
use crate::inbound::issuer::{Issuer, Issuers};
use crate::inbound::jwt::{self, AuthError};
use crate::inbound::{InboundState, Tasks, bearer};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::redact::Secret;

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

/// What building a snapshot may use besides the configuration.
pub struct BuildContext<'a> {
    /// Metric families (key set gauges and counters).
    pub metrics: &'a Arc<Metrics>,
    /// Where to run key refresh tasks; `None` builds an offline snapshot (`explain`, benches)
    /// whose key sets are filled by hand.
    pub tasks: Tasks<'a>,
    /// Where `${VAR}`-less settings come from: the credentials' environment (sign-in's).
    pub env: crate::config::Lookup<'a>,
    /// The egress token cache for the first snapshot (later ones take it from the previous
    /// snapshot); without one, the egress side is off.
    pub tokens: Option<Arc<TokenCache>>,
}

/// Why a snapshot could not be built from a valid configuration.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The upstream's CA file or an issuer's HTTP client is unusable.
    #[error(transparent)]
    Inbound(#[from] crate::inbound::BuildError),
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
        let old_inbound = previous.and_then(|p| p.inbound.as_ref());
        let inbound = InboundState::build(&config, old_inbound, cx.metrics, cx.tasks, cx.env)?;
        let tokens = previous
            .and_then(|p| p.tokens.clone())
            .or_else(|| cx.tokens.clone());
        let egress = match (&config.egress, &tokens) {
            (Some(_), Some(cache)) => {
                let callers = |issuer: &str| caller_check(&config, inbound.as_ref()?, issuer);
                Some(EgressState::build(
                    &config,
                    previous.and_then(|p| p.egress.as_ref()),
                    cache,
                    &callers,
                )?)
            }
            _ => None,
        };
        // Built whole: only now may the key set series change (a refused reload leaves them).
        crate::inbound::show_key_series(inbound.as_ref(), old_inbound, cx.metrics);
        Ok(Snapshot {
            config: Arc::new(config),
            inbound,
            egress,
            tokens,
        })
    }
}

/// The check of an on-behalf-of caller's token: inbound's own verifier (`bearer::extract`,
/// then `jwt::verify` against `issuer` alone, with the shared signature cache, refetching the
/// keys once for an unknown `kid` as inbound does), handed to egress, which may not import
/// inbound. It shares the inbound side's key set, so the keys are fetched once.
fn caller_check(config: &Config, inbound: &InboundState, issuer: &str) -> Option<CheckCaller> {
    let settings = config.issuers.iter().find(|i| i.name == issuer)?;
    let keys = inbound.issuers.by_name(issuer)?.keys.clone();
    let issuers = Arc::new(Issuers::new(vec![Issuer::new(settings, keys)]));
    let signatures = inbound.signature_cache.clone();
    Some(Arc::new(move |headers: &http::HeaderMap| {
        let token = bearer::extract(headers).map(|t| t.map(str::to_owned));
        let issuers = issuers.clone();
        let signatures = signatures.clone();
        Box::pin(async move {
            let token = match token {
                Ok(Some(token)) => token,
                Ok(None) => return Err(CallerRefused::Missing),
                Err(e) => return Err(refused(&e)),
            };
            let verify = || jwt::verify(&token, &issuers, signatures.as_deref(), SystemTime::now());
            let mut verified = verify();
            if let Err(AuthError::UnknownKey { generation, .. }) = &verified
                && let Some(issuer) = issuers.iter().next()
                && issuer.keys.refetch_for_unknown_kid(*generation).await
            {
                verified = verify();
            }
            let claims = verified.map_err(|e| refused(&e))?.claims;
            Ok(Caller {
                oid: claims.object_id().map(str::to_owned),
                tid: claims.tenant().map(str::to_owned),
                token: Secret::new(token),
            })
        })
    }))
}

fn refused(e: &AuthError) -> CallerRefused {
    match e {
        AuthError::KeysUnavailable(_) => CallerRefused::KeysUnavailable,
        e => CallerRefused::Invalid {
            reason: e.reason(),
            description: e.description(),
        },
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
