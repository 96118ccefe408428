//! The inbound listener's request path: strip forged identity, normalise the path, match a
//! route, check the token, and forward to the upstream.
//!
//! [`serve`] is the outer function: it loads the snapshot once, calls [`handle`], turns every
//! rejection into a response in one exhaustive `match`, and records the metric and the
//! access-log line exactly once. [`handle`] is the straight line of steps, each in its own
//! module: [`identity`], [`path`], [`policy`], [`reject`].

use std::convert::Infallible;
use std::sync::Arc;

use http::header::HOST;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::proxy::listener::Lifecycle;
use crate::proxy::{Body, ConnInfo, forward::ForwardError, headers, upgrade};
use crate::state::{InboundState, Live, Snapshot};
use crate::telemetry::metrics::Metrics;

pub mod identity;
pub mod path;
pub mod policy;
pub mod reject;

/// What every inbound request shares.
pub struct Shared {
    /// The current configuration snapshot.
    pub live: Live,
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
    /// No route covers the request: 403.
    NoRoute,
    /// The route needs a token and there is none: 401.
    MissingToken,
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

/// What [`handle`] learned, for the metric and the log line.
struct Outcome<'s> {
    route: &'s str,
    decision: Decision,
    upstream_status: Option<StatusCode>,
    /// The normalised path, when it differs from the request's.
    normalised: Option<String>,
    /// The error code of a response tollgate wrote itself.
    error: Option<&'static str>,
}

/// Label for requests that matched no route (or never got that far).
const NO_ROUTE: &str = "none";

/// Serves one inbound request. Never fails: every error becomes a response here.
pub async fn serve(
    req: Request<Incoming>,
    conn: &ConnInfo,
    shared: &Shared,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let snapshot = shared.live.load();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let mut outcome = Outcome {
        route: NO_ROUTE,
        decision: Decision::Denied,
        upstream_status: None,
        normalised: None,
        error: None,
    };
    let result = handle(req, conn, shared, &snapshot, &mut outcome).await;
    let response = match result {
        Ok(response) => response,
        Err(reject) => {
            let (response, error) = match reject {
                Reject::BadPath(e) => (
                    reject::json_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        path_description(e),
                    ),
                    "invalid_path",
                ),
                Reject::NoRoute => (
                    reject::json_error(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        "no route allows this request",
                    ),
                    "no_route",
                ),
                Reject::MissingToken => (reject::missing_token(), "missing_token"),
                // The request was decided; only the upstream failed, so the decision stays.
                Reject::Upstream(e) => {
                    tracing::debug!(error = %e, source = ?std::error::Error::source(&e), route = outcome.route, "upstream request failed");
                    upstream_error(&e)
                }
                Reject::InboundDisabled => (
                    reject::json_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "the inbound listener is disabled by the current configuration",
                    ),
                    "inbound_disabled",
                ),
            };
            outcome.error = Some(error);
            response
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

async fn handle<'s>(
    mut req: Request<Incoming>,
    conn: &ConnInfo,
    shared: &Shared,
    snapshot: &'s Snapshot,
    outcome: &mut Outcome<'s>,
) -> Result<Response<Body>, Reject> {
    let inbound = snapshot.inbound.as_ref().ok_or(Reject::InboundDisabled)?;
    // Strip before anything can branch, so anonymous routes and error paths are covered too.
    identity::strip_spoofable(req.headers_mut(), &inbound.claim_headers);
    let uri = req.uri().clone();
    let normalised = path::normalise(uri.path()).map_err(Reject::BadPath)?;
    if let std::borrow::Cow::Owned(p) = &normalised.path {
        outcome.normalised = Some(p.clone());
    }
    let route = inbound
        .routes
        .find(req.method(), normalised.match_key())
        .ok_or(Reject::NoRoute)?;
    outcome.route = &route.name;
    if !route.allow_anonymous {
        return Err(Reject::MissingToken);
    }
    outcome.decision = Decision::Anonymous;
    forward(
        req,
        conn,
        shared,
        inbound,
        &normalised.path,
        uri.query(),
        outcome,
    )
    .await
}

/// Rewrites the request for the upstream, sends it, and prepares the response for the client.
async fn forward(
    mut req: Request<Incoming>,
    conn: &ConnInfo,
    shared: &Shared,
    inbound: &InboundState,
    path: &str,
    query: Option<&str>,
    outcome: &mut Outcome<'_>,
) -> Result<Response<Body>, Reject> {
    let upstream = &inbound.upstream;
    // Connection-named headers go before identity headers are added, so a client cannot name
    // (and so remove) a header tollgate sets.
    let upgrade = if req.version() == Version::HTTP_11 {
        headers::strip_hop_by_hop(req.headers_mut())
    } else {
        headers::strip_hop_by_hop(req.headers_mut());
        None
    };
    let client_host = req.headers().get(HOST).cloned().or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    headers::set_forwarded(
        req.headers_mut(),
        &conn.peer_ip,
        conn.scheme(),
        client_host.clone(),
    );
    let host = match (inbound.preserve_host, client_host) {
        (true, Some(host)) => Some(host),
        _ => HeaderValue::from_str(upstream.authority().as_str()).ok(),
    };
    if let Some(host) = host {
        req.headers_mut().insert(HOST, host);
    }
    *req.uri_mut() = upstream.uri(path, query).map_err(Reject::Upstream)?;
    *req.version_mut() = Version::HTTP_11;
    let client_upgrade = match upgrade {
        Some(protocol) => {
            headers::restore_upgrade(req.headers_mut(), protocol);
            Some(hyper::upgrade::on(&mut req))
        }
        None => None,
    };

    let started = Instant::now();
    let result = upstream.send(req).await;
    shared
        .metrics
        .upstream_duration
        .observe(started.elapsed().as_secs_f64());
    let mut response = result.map_err(Reject::Upstream)?;
    outcome.upstream_status = Some(response.status());

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        if let Some(client_upgrade) = client_upgrade {
            upgrade::splice(
                client_upgrade,
                upstream_upgrade,
                &shared.life.tracker,
                shared.life.abort.clone(),
            );
            // 101 keeps Connection and Upgrade: they are the point of the response.
            return Ok(response.map(crate::proxy::Body::Left));
        }
        return Err(Reject::Upstream(ForwardError::UnexpectedUpgrade));
    }
    headers::strip_hop_by_hop(response.headers_mut());
    Ok(response.map(crate::proxy::Body::Left))
}

fn path_description(e: path::PathError) -> &'static str {
    match e {
        path::PathError::EncodedSlash => "the path contains an encoded slash (%2F)",
        path::PathError::Backslash => "the path contains a backslash",
        path::PathError::ControlCharacter => "the path contains a control character",
        path::PathError::BadEscape => "the path contains an invalid percent-encoding",
        path::PathError::NotAbsolute => "the request target is not an absolute path",
    }
}

/// The response for an upstream failure, and its error code.
pub fn upstream_error(e: &ForwardError) -> (Response<Body>, &'static str) {
    let (error, description) = match e {
        ForwardError::Timeout(_) => ("upstream_timeout", "the upstream did not answer in time"),
        ForwardError::Connect(_) => ("upstream_unreachable", "the upstream could not be reached"),
        ForwardError::Failed(_) => ("upstream_failed", "the upstream connection failed"),
        ForwardError::UnexpectedUpgrade => {
            ("upstream_failed", "the upstream switched protocols unasked")
        }
        ForwardError::BadUri(_) => ("invalid_request", "the request target is not valid"),
    };
    (reject::json_error(e.status(), error, description), error)
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
    metrics
        .requests
        .with_label_values(&[outcome.route, outcome.decision.as_str(), status.as_str()])
        .inc();
    metrics
        .request_duration
        .with_label_values(&[outcome.route])
        .observe(elapsed.as_secs_f64());
    tracing::info!(
        target: "tollgate::access",
        method = %method,
        path = outcome.normalised.as_deref().unwrap_or(uri.path()),
        route = outcome.route,
        status = status.as_u16(),
        decision = outcome.decision.as_str(),
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        upstream_status = outcome.upstream_status.map(|s| s.as_u16()),
        error = outcome.error,
    );
}
