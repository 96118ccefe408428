//! The inbound listener's request path: strip forged identity, normalise the path, match a
//! route, verify the token, apply the route's requirements, add the caller's identity, and
//! forward to the upstream.
//!
//! [`serve`] is the outer function: it loads the snapshot once, calls `handle`, turns every
//! rejection into a response in one exhaustive `match`, and records the metrics and the
//! access-log line exactly once. `handle` is the straight line of steps, each in its own
//! module: [`identity`], [`path`], [`policy`], [`bearer`], [`jwt`] (with
//! [`issuer`], [`jwks`], [`claims`], [`signature_cache`]), [`reject`].

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::HOST;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::config::{Mode, Route};
use crate::path;
use crate::proxy::forward::{self, ForwardError, Peer};
use crate::proxy::listener::Lifecycle;
use crate::proxy::{Body, ConnInfo, headers, upgrade};
use crate::telemetry::{
    self,
    json::Access,
    metrics::{DECISIONS, Metrics, RouteSeries},
};

pub mod bearer;
pub mod claims;
pub mod identity;
pub mod issuer;
pub mod jwks;
pub mod jwt;
pub mod me;
pub mod policy;
pub mod reject;
pub mod signature_cache;
mod state;

pub use state::{BuildError, InboundState, Tasks, show_key_series};

use jwt::{AuthError, Verified};

/// What every inbound request shares, besides the state of the moment.
pub struct Shared {
    /// Metric families.
    pub metrics: Arc<Metrics>,
    /// Shutdown signals and task tracking (for upgraded connections).
    pub life: Lifecycle,
}

/// Why a request was not forwarded, or failed upstream. Turned into a response in one place.
#[derive(Debug)]
enum Reject {
    /// The path is malformed or dangerous: 400.
    BadPath(path::PathError),
    /// A method routes can name, spelled in another case: 400.
    MiscasedMethod,
    /// No route covers the request: 403.
    NoRoute,
    /// The route needs a token and there is none: 401 with a bare challenge.
    MissingToken,
    /// The token is not acceptable: 401 (503 while the issuer has no keys yet).
    Unauthenticated(AuthError),
    /// A valid token fails the route's requirements: 403.
    Forbidden {
        /// The first requirement that failed, as the config names it (`roles_any`).
        requirement: String,
        /// The generic `error_description`.
        description: &'static str,
    },
    /// The upstream could not answer: 502, 504.
    Upstream(ForwardError),
    /// The listener was started for a configuration that no longer has a `[server]`.
    InboundDisabled,
}

/// How the request was decided, for the `decision` label and the access log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A valid token met the route's requirements.
    Allowed,
    /// The route allows anonymous requests.
    Anonymous,
    /// Refused (400, 401, 403).
    Denied,
    /// The requirements failed but the route is in audit mode.
    Audit,
}

const _: () = assert!(Decision::Audit as usize + 1 == DECISIONS);

impl Decision {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Anonymous => "anonymous",
            Decision::Denied => "denied",
            Decision::Audit => "audit",
        }
    }
}

/// What `handle` learned, for the metrics and the log line.
struct Outcome<'s> {
    route: &'s str,
    /// The matched route's metric series.
    series: Option<&'s RouteSeries>,
    decision: Decision,
    upstream_status: Option<StatusCode>,
    /// The normalised path, when it differs from the request's.
    normalised: Option<String>,
    /// The error code of a response tollgate wrote itself.
    error: Option<&'static str>,
    /// The issuer of a verified token.
    issuer: Option<&'s str>,
}

/// Label for requests that matched no route (or never got that far).
const NO_ROUTE: &str = "none";

/// Serves one inbound request. Never fails: every error becomes a response here.
///
/// The request is boxed once, on arrival: it passes through several `async fn` layers on its
/// way upstream, and each would otherwise copy its ~270 bytes twice (~570 instructions per
/// request, callgrind).
pub async fn serve(
    req: Box<Request<Incoming>>,
    conn: &ConnInfo,
    inbound: Option<&InboundState>,
    shared: &Shared,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let mut outcome = Outcome {
        route: NO_ROUTE,
        series: None,
        decision: Decision::Denied,
        upstream_status: None,
        normalised: None,
        error: None,
        issuer: None,
    };
    let response = match handle(req, &uri, conn, shared, inbound, &mut outcome).await {
        Ok(response) => response,
        Err(reject) => {
            let (response, error) = rescue(reject, &outcome, &shared.metrics);
            outcome.error = Some(error);
            if method == Method::HEAD {
                crate::proxy::for_head(response)
            } else {
                response
            }
        }
    };
    record(
        &shared.metrics,
        &method,
        &uri,
        &outcome,
        response.status(),
        started,
    );
    Ok(response)
}

/// Every rejection becomes a response here, with its error code and failure metric.
fn rescue(
    reject: Reject,
    outcome: &Outcome<'_>,
    metrics: &Metrics,
) -> (Response<Body>, &'static str) {
    let count = |reason: &str| metrics.auth_failures.with_label_values(&[reason]).inc();
    match reject {
        Reject::BadPath(e) => (
            reject::json_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                path_description(e),
            ),
            "invalid_path",
        ),
        Reject::MiscasedMethod => (
            reject::json_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "methods are case-sensitive: send the method in upper case",
            ),
            "invalid_method",
        ),
        Reject::NoRoute => (
            reject::json_error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "no route allows this request",
            ),
            "no_route",
        ),
        Reject::MissingToken => {
            count("missing_token");
            refused(outcome, "missing_token", &"no bearer token");
            (reject::missing_token(), "missing_token")
        }
        Reject::Unauthenticated(e) => {
            count(e.reason());
            if let AuthError::KeysUnavailable(_) = &e {
                // At warn: the issuer's keys could not be fetched, which an operator must fix
                // (readiness says 503 meanwhile).
                tracing::warn!(route = outcome.route, reason = e.reason(), error = %e, "token refused");
            } else {
                refused(outcome, e.reason(), &e);
            }
            (reject::TokenRefusal::of(&e).response(), e.reason())
        }
        Reject::Forbidden {
            requirement,
            description,
        } => {
            count("forbidden");
            let error = format_args!("requirement {requirement} not met");
            refused(outcome, "forbidden", &error);
            (reject::insufficient_scope(description), "forbidden")
        }
        // The request was decided; only the upstream failed, so the decision stays.
        Reject::Upstream(e) => {
            tracing::debug!(error = %e, source = ?std::error::Error::source(&e), route = outcome.route, "upstream request failed");
            e.response(Peer::Upstream)
        }
        Reject::InboundDisabled => (
            reject::json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the inbound listener is disabled by the current configuration",
            ),
            "inbound_disabled",
        ),
    }
}

/// The debug line every refused token writes (the Troubleshooting section of the README
/// promises it): the route, the metric reason and the detail. Never the token: no error
/// holds it.
fn refused(outcome: &Outcome<'_>, reason: &str, error: &dyn std::fmt::Display) {
    tracing::debug!(route = outcome.route, reason, error = %error, "token refused");
}

async fn handle<'s>(
    mut req: Box<Request<Incoming>>,
    uri: &http::Uri,
    conn: &ConnInfo,
    shared: &Shared,
    inbound: Option<&'s InboundState>,
    outcome: &mut Outcome<'s>,
) -> Result<Response<Body>, Reject> {
    let inbound = inbound.ok_or(Reject::InboundDisabled)?;
    // Strip before anything can branch, so anonymous routes and error paths are covered too.
    identity::strip_spoofable(req.headers_mut(), &inbound.claim_headers);
    let trusted = inbound.is_trusted_proxy(conn.peer.ip());
    headers::strip_forwarding(req.headers_mut(), trusted);
    // Hop-by-hop headers go now, before identity headers are added: a client naming
    // X-MS-CLIENT-PRINCIPAL-ID in Connection must not get tollgate's own header removed.
    let upgrade =
        headers::strip_hop_by_hop(req.headers_mut()).filter(|_| req.version() == Version::HTTP_11);
    if policy::is_miscased_method(req.method()) {
        return Err(Reject::MiscasedMethod);
    }
    let normalised = path::normalise(uri.path()).map_err(Reject::BadPath)?;
    if let Cow::Owned(p) = &normalised {
        outcome.normalised = Some(p.clone());
    }
    if normalised == me::PATH && req.method() == Method::GET {
        outcome.route = me::PATH;
        let verified = authenticate(&req, inbound)
            .await
            .map_err(Reject::Unauthenticated)?;
        let verified = verified.ok_or(Reject::MissingToken)?;
        outcome.decision = Decision::Allowed;
        return Ok(me::response(&verified));
    }
    let (route, series) = inbound
        .routes
        .find_with_series(req.method(), &normalised)
        .ok_or(Reject::NoRoute)?;
    outcome.route = &route.name;
    outcome.series = Some(series);
    let verified = if route.allow_anonymous {
        anonymous(&mut req, inbound, outcome).await
    } else {
        Some(protected(&req, route, shared, inbound, outcome).await?)
    };
    if let Some(verified) = &verified {
        add_identity(&mut req, verified, shared, inbound, outcome.route);
    }
    let target = Target {
        // A path that needed no normalisation goes upstream as the client's own bytes.
        path: match &normalised {
            Cow::Borrowed(_) => None,
            Cow::Owned(p) => Some(p.as_str()),
        },
        uri,
        upgrade,
        trusted,
    };
    forward(req, conn, shared, inbound, target, outcome).await
}

/// A protected route: a valid token is required, and the route's requirements are applied
/// (or, in audit mode, only counted).
async fn protected<'s>(
    req: &Request<Incoming>,
    route: &Route,
    shared: &Shared,
    inbound: &'s InboundState,
    outcome: &mut Outcome<'s>,
) -> Result<Verified<'s>, Reject> {
    let verified = authenticate(req, inbound)
        .await
        .map_err(Reject::Unauthenticated)?
        .ok_or(Reject::MissingToken)?;
    outcome.issuer = Some(&verified.issuer.name);
    outcome.decision = authorize(route, &verified, outcome)?;
    if outcome.decision == Decision::Audit {
        // Counted as the denial it would have been.
        shared
            .metrics
            .auth_failures
            .with_label_values(&["forbidden"])
            .inc();
    }
    Ok(verified)
}

/// Adds the caller's identity headers; one too large is left out, logged and counted.
fn add_identity(
    req: &mut Request<Incoming>,
    verified: &Verified<'_>,
    shared: &Shared,
    inbound: &InboundState,
    route: &str,
) {
    let computed = identity::identity_headers(&verified.claims, &inbound.identity);
    for name in &computed.dropped {
        shared
            .metrics
            .identity_headers_dropped
            .with_label_values(&[name.as_str()])
            .inc();
        tracing::warn!(header = %name, route, "identity header over 8 KiB left out");
    }
    identity::inject(req.headers_mut(), computed, &inbound.identity);
}

/// Where a request goes upstream, and the protocol it asks to upgrade to.
struct Target<'a> {
    /// The normalised path, when it differs from the client's.
    path: Option<&'a str>,
    /// The client's request URI (for its query, and its path when unchanged).
    uri: &'a http::Uri,
    upgrade: Option<HeaderValue>,
    /// The client is a trusted proxy: its `X-Forwarded-*` headers are kept.
    trusted: bool,
}

/// The verified token of a request, `Ok(None)` when it carries none. An unknown `kid`
/// triggers the issuer's throttled refetch, then one more attempt.
async fn authenticate<'s>(
    req: &Request<Incoming>,
    inbound: &'s InboundState,
) -> Result<Option<Verified<'s>>, AuthError> {
    let Some(token) = bearer::extract(req.headers())? else {
        return Ok(None);
    };
    let cache = inbound.signature_cache.as_deref();
    match jwt::verify(token, &inbound.issuers, cache, SystemTime::now()) {
        Err(AuthError::UnknownKey {
            issuer,
            kid,
            generation,
        }) => {
            let keys = inbound.issuers.by_name(&issuer).map(|i| i.keys.clone());
            if let Some(keys) = keys
                && keys.refetch_for_unknown_kid(generation).await
            {
                return jwt::verify(token, &inbound.issuers, cache, SystemTime::now()).map(Some);
            }
            Err(AuthError::UnknownKey {
                issuer,
                kid,
                generation,
            })
        }
        other => other.map(Some),
    }
}

/// An anonymous route: a valid token still identifies the caller (as Easy Auth does when
/// unauthenticated requests are allowed); an invalid one is dropped, not forwarded, so the
/// upstream cannot mistake it for a checked one.
async fn anonymous<'s>(
    req: &mut Request<Incoming>,
    inbound: &'s InboundState,
    outcome: &mut Outcome<'s>,
) -> Option<Verified<'s>> {
    outcome.decision = Decision::Anonymous;
    match authenticate(req, inbound).await {
        Ok(verified) => {
            outcome.issuer = verified.as_ref().map(|v| v.issuer.name.as_str());
            verified
        }
        Err(error) => {
            tracing::debug!(
                route = outcome.route,
                reason = error.reason(),
                "invalid token on an anonymous route: dropped"
            );
            req.headers_mut().remove(http::header::AUTHORIZATION);
            None
        }
    }
}

/// Applies the route's requirements: allowed, audited, or forbidden.
fn authorize(
    route: &Route,
    verified: &Verified<'_>,
    outcome: &Outcome<'_>,
) -> Result<Decision, Reject> {
    let decision = policy::evaluate(route, &verified.claims, &verified.issuer.name);
    let Some(failed) = decision.first_failure() else {
        return Ok(Decision::Allowed);
    };
    let requirement = failed.requirement.key();
    match route.mode {
        Mode::Enforce => Err(Reject::Forbidden {
            requirement,
            description: failed.requirement.description(),
        }),
        Mode::Audit => {
            tracing::warn!(route = outcome.route, %requirement, "requirement not met; allowed by audit mode");
            Ok(Decision::Audit)
        }
    }
}

/// Rewrites the request for the upstream, sends it, and prepares the response for the client.
async fn forward(
    mut req: Box<Request<Incoming>>,
    conn: &ConnInfo,
    shared: &Shared,
    inbound: &InboundState,
    target: Target<'_>,
    outcome: &mut Outcome<'_>,
) -> Result<Response<Body>, Reject> {
    let upstream = &inbound.upstream;
    let client_host = req.headers().get(HOST).cloned().or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let host = match (inbound.preserve_host, &client_host) {
        (true, Some(host)) => host.clone(),
        _ => upstream.host().clone(),
    };
    req.headers_mut().insert(HOST, host);
    *req.uri_mut() = match target.path {
        None => upstream.uri_unchanged(target.uri),
        Some(path) => upstream.uri(path, target.uri.query()),
    }
    .map_err(Reject::Upstream)?;
    if req.version() == Version::HTTP_2 {
        headers::join_cookies(req.headers_mut());
    }
    *req.version_mut() = Version::HTTP_11;
    let client_upgrade = target.upgrade.map(|protocol| {
        headers::restore_upgrade(req.headers_mut(), protocol);
        hyper::upgrade::on(&mut *req)
    });

    let started = Instant::now();
    let forwarded = headers::Forwarded {
        peer_ip: &conn.peer_ip,
        scheme: conn.scheme(),
        host: client_host.as_ref(),
        trusted: target.trusted,
    };
    let result = upstream.send(req, Some(forwarded)).await;
    shared
        .metrics
        .upstream_duration
        .observe(started.elapsed().as_secs_f64());
    let mut response = result.map_err(Reject::Upstream)?;
    outcome.upstream_status = Some(response.status());

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let client_upgrade =
            client_upgrade.ok_or(Reject::Upstream(ForwardError::UnexpectedUpgrade))?;
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        upgrade::splice(
            client_upgrade,
            upstream_upgrade,
            &shared.life.tracker,
            shared.life.abort.clone(),
        );
        // 101 keeps Connection and Upgrade: they are the point of the response.
        return Ok(response.map(Body::Left));
    }
    Ok(forward::for_client(response))
}

fn path_description(e: path::PathError) -> &'static str {
    match e {
        path::PathError::EncodedSlash => "the path contains an encoded slash (%2F)",
        path::PathError::Backslash => "the path contains a backslash",
        path::PathError::ControlCharacter => "the path contains a control character",
        path::PathError::BadEscape => "the path contains an invalid percent-encoding",
        path::PathError::DoubleEncoding => "the path contains a double percent-encoding",
        path::PathError::NotAbsolute => "the request target is not an absolute path",
    }
}

/// Records the request metric and the access-log line, once per request.
fn record(
    metrics: &Metrics,
    method: &Method,
    uri: &http::Uri,
    outcome: &Outcome<'_>,
    status: StatusCode,
    started: Instant,
) {
    let elapsed = started.elapsed();
    let decision = outcome.decision.as_str();
    match outcome.series {
        Some(series) => series.record(
            metrics,
            outcome.route,
            (outcome.decision as usize, decision),
            status,
            elapsed.as_secs_f64(),
        ),
        None => {
            metrics
                .requests
                .with_label_values(&[outcome.route, decision, status.as_str()])
                .inc();
            metrics
                .request_duration
                .with_label_values(&[outcome.route])
                .observe(elapsed.as_secs_f64());
        }
    }
    telemetry::access(&Access {
        method: method.as_str(),
        path: outcome.normalised.as_deref().unwrap_or(uri.path()),
        route: outcome.route,
        status: status.as_u16(),
        decision,
        duration_ms: elapsed.as_secs_f64() * 1000.0,
        upstream_status: outcome.upstream_status.map(|s| s.as_u16()),
        issuer: outcome.issuer,
        error: outcome.error,
    });
}
