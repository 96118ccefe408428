//! The egress listener's request path: the app sends plain HTTP, tollgate picks the target,
//! puts the target's access token in `Authorization`, and forwards over TLS.
//!
//! [`serve`] loads the snapshot once, calls `handle`, turns every rejection into a JSON
//! response in one exhaustive `match`, and records the metric and access-log line once.
//! [`target`] picks the target, [`token_cache`] holds the tokens (fetched and refreshed in the
//! background), and [`crate::credential`] obtains them. A request that gets no token is answered 503
//! and nothing is sent downstream. An on-behalf-of target ([`obo`]) trades the caller's token
//! instead, and a caller without a good one is answered 401.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use http::header::{AUTHORIZATION, HOST};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::config::Config;
use crate::proxy::forward::{self, ForwardError, Origin, Peer};
use crate::proxy::listener::Limits;
use crate::proxy::tls::TlsError;
use crate::proxy::{Body, headers, json_error};
use crate::telemetry::metrics::Metrics;

pub mod obo;
pub mod target;
pub mod token_cache;

use crate::credential::{self, CredentialError};
use token_cache::{Slot, TokenCache, TokenError};

/// Limits of the egress listener: its client is the app next to it, so no `[server]`-style
/// settings; these match the inbound defaults.
pub const LIMITS: Limits = Limits {
    max_connections: crate::config::validate::DEFAULT_MAX_CONNECTIONS,
    header_read_timeout: std::time::Duration::from_secs(10),
    max_header_bytes: 64 * 1024,
};
/// Label for requests that matched no target.
const NO_TARGET: &str = "none";

/// The compiled egress side of a snapshot.
pub struct EgressState {
    matchers: Vec<target::Matcher>,
    targets: Vec<EgressTarget>,
    obo_cache: Arc<obo::cache::OboCache>,
}

/// One target: where it is and whose token it gets.
pub struct EgressTarget {
    /// The target's name, its metric label.
    pub name: String,
    /// The connection pool to the target.
    pub upstream: Arc<Origin>,
    /// Where its token comes from.
    pub auth: Auth,
    config: crate::config::Target,
}

/// Whose token a target gets.
pub enum Auth {
    /// The app's own: the token slot for the target's (credential, scope).
    App(Arc<Slot>),
    /// The caller's, exchanged on its behalf.
    OnBehalfOf(obo::Obo),
}

/// Why the egress side could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A credential is unusable (a missing variable, an unreadable certificate). The message
    /// already names the credential and its kind.
    #[error("{source}")]
    Credential {
        /// Its name.
        name: String,
        /// Why.
        #[source]
        source: CredentialError,
    },
    /// An on-behalf-of target's issuer has no verifier (the inbound side is off).
    #[error(
        "egress target {name:?}: on_behalf_of issuer {issuer:?} is not verified by the inbound side ([server])"
    )]
    NoVerifier {
        /// The target.
        name: String,
        /// The issuer.
        issuer: String,
    },
    /// A target's extra CA file is unusable.
    #[error("egress target {name:?} trust: {source}")]
    TargetTls {
        /// Its name.
        name: String,
        /// Why.
        #[source]
        source: TlsError,
    },
}

impl EgressState {
    /// Builds the targets of `config`, reusing `previous`'s connection pools and `tokens`'
    /// live slots (with their tokens) where the settings did not change. `callers` gives the
    /// check of an issuer's tokens (by name) for on-behalf-of targets.
    pub fn build(
        config: &Config,
        previous: Option<&EgressState>,
        tokens: &TokenCache,
        callers: &dyn Fn(&str) -> Option<obo::CheckCaller>,
    ) -> Result<EgressState, BuildError> {
        let obo_cache = tokens.obo().clone();
        let Some(egress) = &config.egress else {
            return Ok(EgressState {
                matchers: Vec::new(),
                targets: Vec::new(),
                obo_cache,
            });
        };
        obo_cache.set_capacity(egress.obo_cache_entries);
        let mut built = HashMap::new();
        let mut targets = Vec::with_capacity(egress.targets.len());
        for t in &egress.targets {
            // Validation guarantees the credential exists.
            let Some(credential) = config.credentials.get(&t.credential) else {
                continue;
            };
            let unusable = |source| BuildError::Credential {
                name: credential.name.clone(),
                source,
            };
            let issuer = t
                .on_behalf_of
                .as_ref()
                .and_then(|name| config.issuers.iter().find(|i| i.name == *name));
            let auth = match (&t.on_behalf_of, issuer) {
                (None, _) => Auth::App(
                    tokens
                        .slot(credential, &t.scope, &mut built)
                        .map_err(unusable)?,
                ),
                (Some(name), issuer) => {
                    let no_verifier = || BuildError::NoVerifier {
                        name: t.name.clone(),
                        issuer: name.clone(),
                    };
                    let (issuer, check) = issuer.zip(callers(name)).ok_or_else(no_verifier)?;
                    let built = tokens
                        .credential(credential, &mut built)
                        .map_err(unusable)?;
                    Auth::OnBehalfOf(obo::Obo::new(
                        issuer,
                        check,
                        built,
                        &credential.name,
                        &t.scope,
                    ))
                }
            };
            let upstream = upstream_for(t, previous)?;
            targets.push(EgressTarget {
                name: t.name.clone(),
                upstream,
                auth,
                config: t.clone(),
            });
        }
        let matchers = targets
            .iter()
            .map(|t| target::Matcher {
                name: t.name.clone(),
                host: t.config.host.clone(),
            })
            .collect();
        Ok(EgressState {
            matchers,
            targets,
            obo_cache,
        })
    }
}

/// The connection pool for `t`: `previous`'s when the URL, trust and deadline are the same
/// (a CA file is always reloaded: its contents may have changed).
fn upstream_for(
    t: &crate::config::Target,
    previous: Option<&EgressState>,
) -> Result<Arc<Origin>, BuildError> {
    let reusable = previous
        .and_then(|p| p.targets.iter().find(|o| o.config.url == t.url))
        .filter(|o| {
            o.config.ca_file.is_none()
                && t.ca_file.is_none()
                && o.config.request_timeout == t.request_timeout
        });
    if let Some(old) = reusable {
        return Ok(old.upstream.clone());
    }
    let upstream =
        Origin::new(&t.url, t.ca_file.as_deref(), t.request_timeout).map_err(|source| {
            BuildError::TargetTls {
                name: t.name.clone(),
                source,
            }
        })?;
    Ok(Arc::new(upstream))
}

/// Why a request was not forwarded, or failed at the target.
#[derive(Debug)]
enum Reject {
    /// The path is malformed or dangerous: 400.
    BadPath(crate::path::PathError),
    /// No target matches: 404.
    UnknownTarget,
    /// The request names a host that no target has: 421.
    UnknownHost,
    /// `CONNECT`: tollgate cannot put a token into a tunnel: 405.
    Tunnel,
    /// No token: 503.
    Token(TokenError),
    /// No on-behalf-of token: 401 (the caller's token, or Entra wants the user) or 503.
    Obo(obo::Refusal),
    /// The target could not answer: 502, 504.
    Target(ForwardError),
    /// The current configuration has no `[egress]`: 503.
    Disabled,
}

/// Serves one egress request. Never fails: every error becomes a response here.
pub async fn serve(
    req: Request<Incoming>,
    egress: Option<&EgressState>,
    metrics: &Metrics,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut target = NO_TARGET;
    let result = match egress {
        Some(egress) => handle(req, egress, metrics, &mut target).await,
        None => Err(Reject::Disabled),
    };
    let (response, error) = match result {
        Ok(response) => (response, None),
        Err(reject) => {
            let (response, code) = rejection(reject, target);
            let response = if method == Method::HEAD {
                crate::proxy::for_head(response)
            } else {
                response
            };
            (response, Some(code))
        }
    };
    record(
        metrics,
        target,
        &method,
        &path,
        response.status(),
        error,
        started,
    );
    Ok(response)
}

/// The response for a rejection, and its error code for the log.
fn rejection(reject: Reject, target: &str) -> (Response<Body>, &'static str) {
    let (status, error, description) = match reject {
        Reject::BadPath(e) => (StatusCode::BAD_REQUEST, "invalid_path", e.to_string()),
        Reject::UnknownHost => (
            StatusCode::MISDIRECTED_REQUEST,
            "unknown_host",
            "no egress target has the host this request names: add it as a target's host, or call http://127.0.0.1:<port>/<target>/..."
                .to_owned(),
        ),
        Reject::UnknownTarget => (
            StatusCode::NOT_FOUND,
            "unknown_target",
            "no egress target matches: call /<target>/... or a target's host".to_owned(),
        ),
        Reject::Tunnel => (
            StatusCode::METHOD_NOT_ALLOWED,
            "tunnel_refused",
            "egress does not tunnel: send plain http, tollgate adds the token and the TLS"
                .to_owned(),
        ),
        Reject::Token(e) => {
            tracing::debug!(egress_target = target, error = %e, "egress request refused: no token");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "token_unavailable",
                e.to_string(),
            )
        }
        Reject::Obo(refusal) => return refusal.response(),
        Reject::Target(e) => {
            tracing::debug!(egress_target = target, error = %e, source = ?std::error::Error::source(&e), "egress target failed");
            return e.response(Peer::Target);
        }
        Reject::Disabled => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "egress is disabled by the current configuration".to_owned(),
        ),
    };
    (json_error(status, error, &description), error)
}

async fn handle<'s>(
    mut req: Request<Incoming>,
    egress: &'s EgressState,
    metrics: &Metrics,
    label: &mut &'s str,
) -> Result<Response<Body>, Reject> {
    if req.method() == Method::CONNECT {
        return Err(Reject::Tunnel);
    }
    // The same reading of the path as inbound: no dot segment can climb above a target's
    // base path, and what is forwarded is what was selected on.
    let normalised = crate::path::normalise(req.uri().path()).map_err(Reject::BadPath)?;
    let host = match req.headers().get(HOST) {
        None => None,
        // A Host that is not text names no listener and no target.
        Some(h) => Some(h.to_str().map_err(|_| Reject::UnknownHost)?),
    };
    let (index, path) =
        target::select(&egress.matchers, req.uri(), host, &normalised).map_err(|e| match e {
            target::NoTarget::UnknownPrefix => Reject::UnknownTarget,
            target::NoTarget::UnknownHost => Reject::UnknownHost,
        })?;
    let target = &egress.targets[index];
    *label = &target.name;
    let uri = target
        .upstream
        .uri(path, req.uri().query())
        .map_err(Reject::Target)?;
    // The token before anything is sent: without one, nothing goes downstream.
    let bearer = match &target.auth {
        Auth::App(slot) => slot.bearer().await.map_err(Reject::Token)?,
        Auth::OnBehalfOf(obo) => obo
            .bearer(req.headers(), &egress.obo_cache, metrics, &target.name)
            .await
            .map_err(Reject::Obo)?,
    };

    // Upgrades are not carried: the Upgrade header goes with the other hop-by-hop ones.
    headers::strip_hop_by_hop(req.headers_mut());
    let h = req.headers_mut();
    // Replace, never add: the app's own credentials must not reach the target.
    h.remove(AUTHORIZATION);
    h.insert(AUTHORIZATION, bearer);
    h.insert(HOST, target.upstream.host().clone());
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    let response = target
        .upstream
        .send(Box::new(req), None)
        .await
        .map_err(Reject::Target)?;
    Ok(forward::for_client(response))
}

/// Records the request metrics and the access-log line, once per request.
fn record(
    metrics: &Metrics,
    target: &str,
    method: &Method,
    path: &str,
    status: StatusCode,
    error: Option<&'static str>,
    started: Instant,
) {
    let elapsed = started.elapsed();
    metrics
        .egress_requests
        .with_label_values(&[target, status.as_str()])
        .inc();
    metrics
        .egress_request_duration
        .with_label_values(&[target])
        .observe(elapsed.as_secs_f64());
    tracing::info!(
        target: "tollgate::egress",
        egress_target = target,
        method = %method,
        path,
        status = status.as_u16(),
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        error,
    );
}
