//! The inbound listener's request path: strip forged identity, normalise the path, match a
//! route, verify the token, apply the route's requirements, add the caller's identity, and
//! forward to the upstream.
//!
//! [`serve`] is the outer function: it calls `handle`, turns every refusal and upstream
//! failure into a response in one place, and records the metrics and the access-log line
//! exactly once. `handle` strips forged headers, asks [`decide()`] (the whole decision, shared
//! with `tollgate explain`), then adds the caller's identity and forwards. The steps of the
//! decision each have their own module: [`path`](crate::path), [`policy`], [`bearer`],
//! [`jwt`] (with [`issuer`], [`jwks`], [`claims`], [`signature_cache`]); [`identity`] builds
//! the headers the upstream gets.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;

use http::header::HOST;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::proxy::forward::{self, ForwardError, Peer};
use crate::proxy::listener::Lifecycle;
use crate::proxy::{Body, ConnInfo, headers, upgrade};
use crate::telemetry::{
    self,
    access_log::Access,
    metrics::{DECISIONS, Metrics, RouteSeries},
};

pub mod bearer;
pub mod claims;
pub mod decide;
pub mod groups;
pub mod identity;
pub mod issuer;
pub mod jwks;
pub mod jwt;
pub mod me;
pub mod policy;
pub mod resource;
pub mod session;
pub mod signature_cache;
mod state;

pub use decide::{
    Browser, Refusal, Reject, Routed, SessionInput, Token, Trace, Verdict, decide,
    decide_refetching, decide_with,
};
pub use state::{BuildError, InboundState, Tasks, show_key_series};
use std::time::SystemTime;

use jwt::{AuthError, Verified};
use session::Resolved;
use session::endpoints::Origin as BrowserOrigin;

/// How the client reaches this listener: the scheme it used (tollgate's TLS, or a trusted
/// proxy's `X-Forwarded-Proto`) and the host it asked for (a trusted proxy's
/// `X-Forwarded-Host`, else the request target's authority: absolute-form or HTTP/2's
/// `:authority`, else `Host`). The origin of a browser's session and of a challenge's
/// `resource_metadata` URL. A host that is not one (a character no authority holds, such as
/// `"` or a space) is left out: the origin then has no host.
fn browser_origin(
    headers: &http::HeaderMap,
    uri: &http::Uri,
    conn: &ConnInfo,
    trusted: bool,
) -> BrowserOrigin {
    let forwarded = |name: &str| {
        trusted
            .then(|| headers.get(name))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .filter(|v| !v.is_empty())
    };
    let scheme = forwarded("x-forwarded-proto")
        .filter(|p| p == "https" || p == "http")
        .unwrap_or_else(|| conn.scheme().to_owned());
    let host = forwarded("x-forwarded-host")
        .or_else(|| uri.authority().map(|a| a.as_str().to_ascii_lowercase()))
        .or_else(|| {
            headers
                .get(HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_ascii_lowercase)
        })
        .filter(|h| h.bytes().all(is_authority_byte))
        .unwrap_or_default();
    let bare = host
        .rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host.as_str(), |(h, _)| h);
    let loopback = bare == "localhost"
        || bare
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    BrowserOrigin {
        https: scheme == "https",
        origin: format!("{scheme}://{host}"),
        loopback,
    }
}

/// A byte of an RFC 3986 authority without user info: a registered name, an IP literal in
/// brackets, a port.
fn is_authority_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'%'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'['
                | b']'
        )
}

/// What every inbound request shares, besides the state of the moment.
pub struct Shared {
    /// Metric families.
    pub metrics: Arc<Metrics>,
    /// Shutdown signals and task tracking (for upgraded connections).
    pub life: Lifecycle,
}

/// Why tollgate answered instead of the upstream. Turned into a response in one place.
#[derive(Debug)]
enum Failure {
    /// The decision refused the request.
    Refused(Refusal),
    /// The upstream could not answer: 502, 504.
    Upstream(ForwardError),
}

/// How the request was decided, for the `decision` label and the access log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A valid token met the route's requirements.
    Allowed,
    /// The route allows anonymous requests.
    Anonymous,
    /// Refused (400, 401, 403, 503).
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
    /// `Set-Cookie` values for the response, whatever it is: a refreshed session, or the
    /// chunks of one that is no more.
    set_cookies: Vec<HeaderValue>,
}

/// Label for requests that matched no route (or never got that far).
pub(crate) const NO_ROUTE: &str = "none";

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
        set_cookies: Vec::new(),
    };
    let mut response = match handle(req, &uri, conn, shared, inbound, &mut outcome).await {
        Ok(response) => response,
        Err(failure) => {
            let (response, error) = rescue(failure, &outcome);
            outcome.error = Some(error);
            if method == Method::HEAD {
                crate::proxy::for_head(response)
            } else {
                response
            }
        }
    };
    if !outcome.set_cookies.is_empty() {
        let cookies = std::mem::take(&mut outcome.set_cookies);
        session::endpoints::append_cookies(response.headers_mut(), cookies);
    }
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

/// Every refusal and upstream failure becomes a response here, with its error code.
fn rescue(failure: Failure, outcome: &Outcome<'_>) -> (Response<Body>, &'static str) {
    match failure {
        Failure::Refused(refusal) => (refusal.response(), refusal.reason),
        // The request was decided; only the upstream failed, so the decision stays.
        Failure::Upstream(e) => {
            tracing::debug!(error = %e, source = ?std::error::Error::source(&e), route = outcome.route, "upstream request failed");
            e.response(Peer::Upstream)
        }
    }
}

/// Counts and logs what the decision concluded: authentication failures (audit-mode denials
/// count as the denial they would have been), the `token refused` line every refused token
/// writes (the README's Troubleshooting section promises it; never the token: no error holds
/// it), and the whole trace at `trace` level.
fn observe(trace: &Trace<'_, '_>, metrics: &Metrics) {
    let route = trace.route_label();
    tracing::trace!(%trace, "decided");
    if let Some(refusal) = trace.refusal().filter(|r| r.counted) {
        metrics
            .auth_failures
            .with_label_values(&[refusal.reason])
            .inc();
        let reason = refusal.reason;
        match (&trace.token, trace.failed_requirement()) {
            // At warn: the issuer's keys could not be fetched, which an operator must fix
            // (readiness says 503 meanwhile).
            (Token::Invalid(e @ AuthError::KeysUnavailable(_)), _) => {
                tracing::warn!(route, reason, error = %e, "token refused");
            }
            (Token::Invalid(e), _) => tracing::debug!(route, reason, error = %e, "token refused"),
            // The caller by `oid` (never the token), and why its groups are not known.
            _ if refusal.reason == "groups_unavailable" => {
                let oid = trace.verified().and_then(|v| v.claims.object_id());
                let error = match &trace.groups {
                    decide::Groups::Unavailable(e) => e.reason(),
                    decide::Groups::OverageDenied => "groups_overage = \"deny\"".to_owned(),
                    _ => "groups not resolved".to_owned(),
                };
                tracing::info!(route, reason, oid, error = %error, "token refused");
            }
            (_, Some(check)) => {
                let error = format_args!("requirement {} not met", check.requirement.key());
                tracing::debug!(route, reason, error = %error, "token refused");
            }
            _ => tracing::debug!(route, reason, error = "no bearer token", "token refused"),
        }
    }
    match (trace.verdict, &trace.token) {
        (Verdict::Forward(Decision::Audit), _) => {
            metrics
                .auth_failures
                .with_label_values(&["forbidden"])
                .inc();
            if let Some(check) = trace.failed_requirement() {
                let requirement = check.requirement.key();
                tracing::warn!(route, %requirement, "requirement not met; allowed by audit mode");
            }
        }
        (Verdict::Forward(Decision::Anonymous), Token::Invalid(e)) => {
            tracing::debug!(
                route,
                reason = e.reason(),
                "invalid token on an anonymous route: dropped"
            );
        }
        _ => {}
    }
}

async fn handle<'s>(
    mut req: Box<Request<Incoming>>,
    uri: &'s http::Uri,
    conn: &ConnInfo,
    shared: &Shared,
    inbound: Option<&'s InboundState>,
    outcome: &mut Outcome<'s>,
) -> Result<Response<Body>, Failure> {
    // Strip before anything can branch, so anonymous routes and refusals are covered too.
    let trusted = inbound.is_some_and(|i| i.is_trusted_proxy(conn.peer.ip()));
    if let Some(inbound) = inbound {
        identity::strip_spoofable(req.headers_mut(), &inbound.claim_headers);
    }
    headers::strip_forwarding(req.headers_mut(), trusted);
    // Hop-by-hop headers go now, before identity headers are added: a client naming
    // X-MS-CLIENT-PRINCIPAL-ID in Connection must not get tollgate's own header removed.
    let upgrade =
        headers::strip_hop_by_hop(req.headers_mut()).filter(|_| req.version() == Version::HTTP_11);

    // The browser session, opened (and refreshed when due) before deciding; a bearer token
    // decides alone, so with one the cookie is not even read.
    let sessions = inbound.and_then(|i| i.sessions.as_deref());
    // The origin is for sessions and for challenges that point to resource metadata: left
    // alone (and unallocated) when the configuration has neither.
    let origin = inbound
        .filter(|i| sessions.is_some() || !i.resources.is_empty())
        .map(|_| browser_origin(req.headers(), uri, conn, trusted));
    let mut session_tokens = None;
    let mut session_input = SessionInput::None;
    if let (Some(inbound), Some(sessions), Some(origin)) = (inbound, sessions, &origin) {
        let own = uri.path().starts_with("/.auth/") && uri.path() != me::PATH;
        if !own && !req.headers().contains_key(http::header::AUTHORIZATION) {
            match sessions
                .resolve(
                    req.headers(),
                    origin.secure_cookies(),
                    SystemTime::now(),
                    &inbound.issuers,
                )
                .await
            {
                Resolved::None | Resolved::Expired => {}
                Resolved::Invalid { clear } => outcome.set_cookies = clear,
                Resolved::Unavailable => session_input = SessionInput::Unavailable,
                Resolved::Active(active) => {
                    let session::Active {
                        claims,
                        alg,
                        tokens,
                        set_cookies,
                    } = *active;
                    outcome.set_cookies = set_cookies;
                    if let Some(issuer) = inbound.issuers.by_name(&sessions.config.issuer) {
                        session_input = SessionInput::Active(Verified {
                            claims,
                            issuer,
                            alg,
                            cached: true,
                        });
                        session_tokens = Some(tokens);
                    }
                }
            }
        }
    }
    let browser = |session, groups| Browser {
        session,
        origin: origin.as_ref().map(|o| o.origin.as_str()),
        allowed_origins: sessions.map_or(&[][..], |s| &s.config.allowed_origins[..]),
        query: uri.query(),
        groups,
    };

    // Decided in place (no trace moves between futures); an unknown `kid` refetches the
    // issuer's keys once and decides again (a bearer token: no session was opened).
    let mut trace = decide_with(
        inbound,
        req.method(),
        uri.path(),
        req.headers(),
        browser(session_input, None),
        SystemTime::now(),
    );
    if let Some(refetch) = decide::refetch_for(inbound, &trace)
        && refetch.await
    {
        trace = decide_with(
            inbound,
            req.method(),
            uri.path(),
            req.headers(),
            browser(SessionInput::None, None),
            SystemTime::now(),
        );
    }
    // An overage token on a route with `groups_any`: its groups from Graph (cached, one
    // fetch however many wait), then the same decision again with them. A session's claims
    // are handed back as they were.
    if let Some(lookup) = decide::groups_for(inbound, &trace) {
        let resolution = lookup.await;
        let session = match std::mem::replace(&mut trace.token, Token::NotRead) {
            Token::Session(verified) => SessionInput::Active(verified),
            _ => SessionInput::None,
        };
        trace = decide_with(
            inbound,
            req.method(),
            uri.path(),
            req.headers(),
            browser(session, Some(resolution)),
            SystemTime::now(),
        );
    }
    observe(&trace, &shared.metrics);
    outcome.route = trace.route_label();
    if let Routed::Route(_, series) = trace.route {
        outcome.series = Some(series);
    }
    outcome.issuer = trace.verified().map(|v| v.issuer).map(|i| i.name.as_str());
    if let Some(Cow::Owned(p)) = &trace.path {
        outcome.normalised = Some(p.clone());
    }
    if let (Verdict::Auth(endpoint), Some(inbound), Some(sessions), Some(origin)) =
        (trace.verdict, inbound, sessions, &origin)
    {
        outcome.decision = Decision::Anonymous;
        let response =
            session::endpoints::serve(sessions, &inbound.issuers, endpoint, req, origin).await;
        return Ok(response);
    }
    if let (Verdict::Metadata, Routed::Metadata(Some(resource))) = (trace.verdict, &trace.route) {
        outcome.decision = Decision::Anonymous;
        return Ok(resource.respond(req.method()));
    }
    if let (Verdict::Me, Some(verified)) = (trace.verdict, trace.verified()) {
        outcome.decision = Decision::Allowed;
        let tokens = session_tokens
            .as_ref()
            .filter(|_| sessions.is_some_and(|s| s.config.me_tokens));
        return Ok(me::response(verified, tokens));
    }
    let (Some(inbound), Verdict::Forward(decision)) = (inbound, trace.verdict) else {
        // Every other verdict is a refusal; anything else would be a bug, and is refused too.
        let refusal = trace.refusal().unwrap_or_else(decide::Refusal::fallback);
        return Err(Failure::Refused(refusal));
    };
    outcome.decision = decision;
    if let Some(sessions) = sessions {
        // The backend never sees tollgate's own cookies.
        session::cookies::strip(req.headers_mut(), &sessions.config.cookie_name);
    }
    let groups = match &trace.groups {
        decide::Groups::Resolved(set) => Some(&**set),
        _ => None,
    };
    match &trace.token {
        Token::Valid(verified) => {
            add_identity(&mut req, verified, groups, shared, inbound, outcome.route);
        }
        Token::Session(verified) => {
            add_identity(&mut req, verified, groups, shared, inbound, outcome.route);
            if let (Some(tokens), Some(sessions)) = (&session_tokens, sessions) {
                session::headers::add_token_headers(req.headers_mut(), tokens, &sessions.config);
            }
        }
        // An invalid token on an anonymous route is dropped, not forwarded, so the upstream
        // cannot mistake it for a checked one.
        Token::Invalid(_) => {
            req.headers_mut().remove(http::header::AUTHORIZATION);
        }
        Token::Absent | Token::NotRead => {}
    }
    let target = Target {
        // A path that needed no normalisation goes upstream as the client's own bytes.
        path: match &trace.path {
            Some(Cow::Owned(p)) => Some(p.as_str()),
            _ => None,
        },
        uri,
        upgrade,
        trusted,
    };
    forward(req, conn, shared, inbound, target, outcome).await
}

/// Adds the caller's identity headers, with `groups` resolved with Graph in place of an
/// overage token's markers; one too large is left out, logged and counted.
fn add_identity(
    req: &mut Request<Incoming>,
    verified: &Verified<'_>,
    groups: Option<&groups::GroupSet>,
    shared: &Shared,
    inbound: &InboundState,
    route: &str,
) {
    let resolved = groups.map(|g| verified.claims.with_groups(g.iter()));
    let claims = resolved.as_ref().unwrap_or(&verified.claims);
    let computed = identity::identity_headers(claims, &inbound.identity);
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

/// Rewrites the request for the upstream, sends it, and prepares the response for the client.
async fn forward(
    mut req: Box<Request<Incoming>>,
    conn: &ConnInfo,
    shared: &Shared,
    inbound: &InboundState,
    target: Target<'_>,
    outcome: &mut Outcome<'_>,
) -> Result<Response<Body>, Failure> {
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
    .map_err(Failure::Upstream)?;
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
    let mut response = result.map_err(Failure::Upstream)?;
    outcome.upstream_status = Some(response.status());

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let client_upgrade =
            client_upgrade.ok_or(Failure::Upstream(ForwardError::UnexpectedUpgrade))?;
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
