//! The inbound decision, as one function of the request head, the state and the time:
//! method, path, route, token, requirements, verdict. [`decide`] and [`decide_with`] are pure;
//! [`refetch_for`] and [`groups_for`] are the two things that wait (refetching an issuer's keys
//! for an unknown `kid`; an overage token's groups from Microsoft Graph), each followed by
//! deciding again. The listener and `tollgate explain` both call `decide_with`, `refetch_for`
//! and `groups_for` ([`decide_refetching`] puts them together), so they cannot disagree.
//!
//! The listener strips forged identity and forwarding headers before it decides, and adds the
//! caller's identity after: the decision only reads.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{ALLOW, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::groups::{GroupSet, Resolution, Unavailable};
use super::issuer::Overage;
use super::jwt::{self, AuthError, Expect, Verified};
use super::policy::{self, Evaluation, GroupSource, Requirement};
use super::resource::{self, ProtectedResource};
use super::session::endpoints::{self, Endpoint};
use super::{Decision, InboundState, bearer, me};
use crate::config::{Mode, Route, Unauthenticated};
use crate::path::{self, PathError};
use crate::proxy::{Body, json_error};
use crate::telemetry::metrics::RouteSeries;

/// The realm of every challenge.
pub const REALM: &str = "tollgate";

/// Everything the decision looked at, in order, and what it concluded. The listener acts on
/// it and logs it; `tollgate explain` prints it.
pub struct Trace<'s, 'r> {
    /// The path as routed and forwarded; `None` when the request was refused before.
    pub path: Option<Cow<'r, str>>,
    /// What the path and method matched.
    pub route: Routed<'s>,
    /// The bearer token, if it was looked at.
    pub token: Token<'s>,
    /// The route's requirements against a valid token.
    pub requirements: Option<Evaluation<'s>>,
    /// Where `groups_any` found the caller's groups.
    pub groups: Groups,
    /// What happens to the request.
    pub verdict: Verdict,
    /// The query, for a sign-in redirect back here.
    pub query: Option<&'r str>,
    /// The protected resource covering the path (`[[resources]]`): the token is bound to it,
    /// and a challenge points to its metadata.
    pub resource: Option<&'s ProtectedResource>,
    /// The request's origin as tollgate sees it: where a challenge's `resource_metadata` URL
    /// points.
    pub origin: Option<&'r str>,
}

/// Where `groups_any` found the caller's groups: the token, or for an overage token
/// Microsoft Graph (through the listener: see [`groups_for`]).
#[derive(Clone, Debug, Default)]
pub enum Groups {
    /// Not needed: the route has no `groups_any`, or no valid token reached it.
    #[default]
    NotNeeded,
    /// The token's `groups` claim.
    Claim,
    /// An overage token from an issuer with `groups_overage = "deny"`.
    OverageDenied,
    /// An overage token whose groups would be resolved with Graph, but another requirement
    /// already failed: not looked up.
    OverageSkipped,
    /// An overage token whose groups are to be resolved with Graph: the listener looks them
    /// up ([`groups_for`]) and decides again. Refused until then.
    Pending {
        /// The caller.
        oid: String,
    },
    /// Resolved with Graph.
    Resolved(Arc<GroupSet>),
    /// Graph could not say.
    Unavailable(Unavailable),
}

/// What the path and method matched.
pub enum Routed<'s> {
    /// Refused before routing.
    NotReached,
    /// `GET /.auth/me`, answered by tollgate itself.
    Me,
    /// A protected resource metadata path (RFC 9728), answered by tollgate itself: the
    /// resource whose document is there, or none (404).
    Metadata(Option<&'s ProtectedResource>),
    /// A sign-in endpoint (`/.auth/login/aad`, its callback, `/.auth/refresh`,
    /// `/.auth/logout`), answered by tollgate itself.
    Auth(Endpoint),
    /// No route covers the request.
    None,
    /// The first route that covers it, with its metric series.
    Route(&'s Route, &'s RouteSeries),
}

/// The bearer token, as far as it was checked.
pub enum Token<'s> {
    /// Not looked at: the request was refused first.
    NotRead,
    /// The request carries none.
    Absent,
    /// It passed every check.
    Valid(Verified<'s>),
    /// No bearer token, but a browser session (its id_token's claims).
    Session(Verified<'s>),
    /// It failed one.
    Invalid(AuthError),
}

/// What happens to the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Forwarded upstream; the decision label says why.
    Forward(Decision),
    /// Answered by `/.auth/me` with the caller's identity.
    Me,
    /// Answered with the protected resource's metadata document ([`Routed::Metadata`]).
    Metadata,
    /// Answered by a sign-in endpoint.
    Auth(Endpoint),
    /// Refused by tollgate.
    Reject(Reject),
}

/// Why a request is refused. [`Trace::refusal`] turns it into the response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// The listener runs for a configuration without `[server]`: 503.
    InboundDisabled,
    /// A method routes can name, spelled in another case: 400.
    MiscasedMethod,
    /// The path is malformed or dangerous: 400.
    BadPath(PathError),
    /// No route covers the request: 403.
    NoRoute,
    /// A path under the protected resource metadata path that names no resource: 404.
    NoMetadata,
    /// A method other than `GET`, `HEAD` or `OPTIONS` on a metadata path: 405.
    MetadataMethod,
    /// The route needs a token and there is none: 401 with a bare challenge.
    MissingToken,
    /// The token is not acceptable (the error is in [`Trace::token`]): 401, or 503 while
    /// the issuer's keys are not loaded.
    Unauthenticated,
    /// A valid token fails the route's requirements ([`Trace::requirements`]): 403.
    Forbidden,
    /// No credential on a route with `unauthenticated = "403"`: 403.
    NoCredential,
    /// No credential on a route with `unauthenticated = "redirect"`, from a top-level
    /// navigation: 302 to sign-in.
    SignIn,
    /// A session-authenticated unsafe method from another origin: 403 `csrf`.
    Csrf,
    /// The session store cannot be reached: 503.
    SessionUnavailable,
    /// The route has `groups_any` and the token's groups did not fit in it (overage), and
    /// could not be resolved (`groups_overage = "deny"`, or Graph unavailable): 403
    /// `groups_unavailable` ([`Trace::groups`] says why).
    GroupsUnavailable,
}

/// What a request brings besides its bearer token: the browser session the listener opened,
/// and where the browser is.
#[derive(Default)]
pub struct Browser<'s, 'a> {
    /// The session of the request's cookie.
    pub session: SessionInput<'s>,
    /// The request's origin as the client sees it (`https://app.example.com`): the own origin
    /// of a session's unsafe requests, and where a challenge's `resource_metadata` points.
    pub origin: Option<&'a str>,
    /// Extra origins allowed to send unsafe methods with the session cookie.
    pub allowed_origins: &'a [String],
    /// The query string, kept in the sign-in redirect.
    pub query: Option<&'a str>,
    /// The caller's groups as the listener resolved them with Graph, when a first decision
    /// asked for them ([`groups_for`]); used only for that issuer and `oid`.
    pub groups: Option<Resolution>,
}

/// The browser session, as the listener found it.
#[derive(Default)]
pub enum SessionInput<'s> {
    /// None (or not looked at: a bearer token decides alone).
    #[default]
    None,
    /// A signed-in user.
    Active(Verified<'s>),
    /// The session store could not be reached.
    Unavailable,
}

/// How a refusal is answered: one table for the proxy's response, its metrics and log
/// lines, and `explain`'s decision line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The status.
    pub status: StatusCode,
    /// The OAuth-style error code of the JSON body.
    pub error: &'static str,
    /// The generic description: never the details of a failure.
    pub description: &'static str,
    /// The RFC 6750 challenge to send, if any.
    pub challenge: Challenge,
    /// `Retry-After` seconds, for a refusal that passes by itself.
    pub retry_after: Option<&'static str>,
    /// The code of the access log's `error` field (and of `tollgate_auth_failures_total`'s
    /// `reason` when [`Refusal::counted`]).
    pub reason: &'static str,
    /// Whether it counts as an authentication failure.
    pub counted: bool,
    /// Where a `302` sends the browser (sign-in).
    pub location: Option<String>,
    /// The `login_url` member of a 401 on a route that signs browsers in.
    pub login_url: Option<String>,
    /// The challenge's `resource_metadata` (RFC 9728 §5.1): the absolute URL of the covering
    /// resource's metadata, on a 401 or a 403 `insufficient_scope`.
    pub resource_metadata: Option<String>,
    /// The challenge's `scope` (RFC 6750 §3): on a 403 `insufficient_scope` from a route that
    /// names `scopes_any`.
    pub scope: Option<String>,
    /// `Allow`, for a 405.
    pub allow: Option<&'static str>,
}

/// The `WWW-Authenticate` header of a refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// None.
    None,
    /// `Bearer realm="tollgate"`: no token was sent (RFC 6750 §3.1).
    Bare,
    /// `Bearer realm="tollgate", error="…", error_description="…"`.
    WithError,
}

impl Refusal {
    /// The refusal for a verdict that should have come with one: 403, fail closed.
    pub fn fallback() -> Refusal {
        Refusal {
            status: StatusCode::FORBIDDEN,
            error: "forbidden",
            description: "no route allows this request",
            challenge: Challenge::None,
            retry_after: None,
            reason: "no_route",
            counted: false,
            location: None,
            login_url: None,
            resource_metadata: None,
            scope: None,
            allow: None,
        }
    }

    /// The `WWW-Authenticate` value: `Bearer realm="tollgate"`, then `error`,
    /// `error_description` and `scope` as the challenge has them, then `resource_metadata`.
    /// Every value is tollgate's own text, a scope-token, or a URL of an origin checked to be
    /// one (nothing that needs escaping in a quoted string).
    pub fn challenge_value(&self) -> Option<String> {
        let mut value = match self.challenge {
            Challenge::None => return None,
            Challenge::Bare => format!("Bearer realm=\"{REALM}\""),
            Challenge::WithError => format!(
                "Bearer realm=\"{REALM}\", error=\"{}\", error_description=\"{}\"",
                self.error, self.description
            ),
        };
        if let Some(scope) = &self.scope {
            value.push_str(&format!(", scope=\"{scope}\""));
        }
        if let Some(url) = &self.resource_metadata {
            value.push_str(&format!(", resource_metadata=\"{url}\""));
        }
        Some(value)
    }

    /// The response tollgate writes.
    pub fn response(&self) -> Response<Body> {
        if let Some(location) = &self.location {
            return endpoints::redirect_to(location);
        }
        let mut r = match &self.login_url {
            None => json_error(self.status, self.error, self.description),
            Some(url) => {
                endpoints::json_with_login_url(self.status, self.error, self.description, url)
            }
        };
        let challenge = match (self.challenge, &self.resource_metadata, &self.scope) {
            (Challenge::Bare, None, None) => {
                Some(HeaderValue::from_static("Bearer realm=\"tollgate\""))
            }
            _ => self
                .challenge_value()
                .and_then(|v| HeaderValue::from_str(&v).ok()),
        };
        if let Some(value) = challenge {
            r.headers_mut().insert(WWW_AUTHENTICATE, value);
        }
        if let Some(allow) = self.allow {
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
        }
        if let Some(seconds) = self.retry_after {
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static(seconds));
        }
        r
    }
}

impl<'s> Trace<'s, '_> {
    fn refused(reject: Reject) -> Self {
        Trace {
            path: None,
            route: Routed::NotReached,
            token: Token::NotRead,
            requirements: None,
            groups: Groups::NotNeeded,
            verdict: Verdict::Reject(reject),
            query: None,
            resource: None,
            origin: None,
        }
    }

    /// The route's name for metrics and logs: `none` before or without a route.
    pub fn route_label(&self) -> &'s str {
        match &self.route {
            Routed::Route(route, _) => &route.name,
            Routed::Me => me::PATH,
            Routed::Metadata(_) => crate::config::METADATA_PATH,
            Routed::Auth(e) => e.label(),
            Routed::NotReached | Routed::None => super::NO_ROUTE,
        }
    }

    /// The verified token (or the session's id_token), if there is one.
    pub fn verified(&self) -> Option<&Verified<'s>> {
        match &self.token {
            Token::Valid(v) | Token::Session(v) => Some(v),
            _ => None,
        }
    }

    /// The first requirement the token failed, if any.
    pub fn failed_requirement(&self) -> Option<&policy::Check<'s>> {
        self.requirements.as_ref().and_then(|e| e.first_failure())
    }

    /// How the refusal is answered; `None` unless the verdict is a refusal.
    pub fn refusal(&self) -> Option<Refusal> {
        let Verdict::Reject(reject) = self.verdict else {
            return None;
        };
        let plain = |status, error, description, reason| Refusal {
            status,
            error,
            description,
            challenge: Challenge::None,
            retry_after: None,
            reason,
            counted: false,
            location: None,
            login_url: None,
            resource_metadata: None,
            scope: None,
            allow: None,
        };
        let resource_metadata = || self.resource.map(|r| r.metadata_url(self.origin));
        let login_url = || {
            let path = self.path.as_deref().unwrap_or("/");
            endpoints::login_url(path, self.query)
        };
        Some(match reject {
            Reject::InboundDisabled => plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the inbound listener is disabled by the current configuration",
                "inbound_disabled",
            ),
            Reject::MiscasedMethod => plain(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "methods are case-sensitive: send the method in upper case",
                "invalid_method",
            ),
            Reject::BadPath(e) => plain(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                path_description(e),
                "invalid_path",
            ),
            Reject::NoRoute => plain(
                StatusCode::FORBIDDEN,
                "forbidden",
                "no route allows this request",
                "no_route",
            ),
            Reject::NoMetadata => plain(
                StatusCode::NOT_FOUND,
                "not_found",
                "no protected resource metadata at this path",
                "no_metadata",
            ),
            Reject::MetadataMethod => Refusal {
                allow: Some(resource::ALLOWED_METHODS),
                ..plain(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "protected resource metadata is read with GET",
                    "invalid_method",
                )
            },
            Reject::MissingToken => Refusal {
                challenge: Challenge::Bare,
                counted: true,
                resource_metadata: resource_metadata(),
                login_url: match self.route {
                    Routed::Route(r, _) if r.unauthenticated == Unauthenticated::Redirect => {
                        Some(login_url())
                    }
                    _ => None,
                },
                ..plain(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "a bearer token is required",
                    "missing_token",
                )
            },
            Reject::Unauthenticated => match &self.token {
                Token::Invalid(e @ AuthError::KeysUnavailable(_)) => Refusal {
                    retry_after: Some("5"),
                    counted: true,
                    ..plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "temporarily_unavailable",
                        "signing keys are not available yet",
                        e.reason(),
                    )
                },
                Token::Invalid(e) => Refusal {
                    challenge: Challenge::WithError,
                    counted: true,
                    resource_metadata: resource_metadata(),
                    ..plain(
                        StatusCode::UNAUTHORIZED,
                        "invalid_token",
                        e.description(),
                        e.reason(),
                    )
                },
                // Unauthenticated always carries the error; answered as malformed otherwise.
                _ => Refusal {
                    challenge: Challenge::WithError,
                    counted: true,
                    resource_metadata: resource_metadata(),
                    ..plain(
                        StatusCode::UNAUTHORIZED,
                        "invalid_token",
                        "token malformed",
                        "malformed",
                    )
                },
            },
            Reject::Forbidden => Refusal {
                challenge: Challenge::WithError,
                counted: true,
                resource_metadata: resource_metadata(),
                scope: match &self.route {
                    Routed::Route(route, _) if !route.require.scopes_any.is_empty() => Some(
                        resource::challenge_scope(&route.require.scopes_any, self.resource),
                    ),
                    _ => None,
                },
                ..plain(
                    StatusCode::FORBIDDEN,
                    "insufficient_scope",
                    self.failed_requirement()
                        .map_or("a requirement is not met", |c| c.requirement.description()),
                    "forbidden",
                )
            },
            Reject::NoCredential => Refusal {
                counted: true,
                ..plain(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "a credential is required",
                    "missing_token",
                )
            },
            Reject::SignIn => Refusal {
                location: Some(login_url()),
                ..plain(
                    StatusCode::FOUND,
                    "sign_in",
                    "sign in to continue",
                    "sign_in",
                )
            },
            Reject::Csrf => Refusal {
                counted: true,
                ..plain(
                    StatusCode::FORBIDDEN,
                    "csrf",
                    "a request with the session cookie from another origin",
                    "csrf",
                )
            },
            Reject::SessionUnavailable => Refusal {
                retry_after: Some("5"),
                ..plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the session store cannot be reached",
                    "session_store_unavailable",
                )
            },
            Reject::GroupsUnavailable => Refusal {
                challenge: Challenge::WithError,
                counted: true,
                ..plain(
                    StatusCode::FORBIDDEN,
                    "insufficient_scope",
                    "groups_unavailable: the caller's groups could not be resolved",
                    "groups_unavailable",
                )
            },
        })
    }
}

/// One line for logs: `path=… route=… token=… requirement=… verdict=…`.
impl fmt::Display for Trace<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(path) = &self.path {
            write!(f, "path={path} ")?;
        }
        write!(f, "route={}", self.route_label())?;
        match &self.token {
            Token::NotRead => {}
            Token::Absent => f.write_str(" token=none")?,
            Token::Valid(v) => write!(f, " token=valid issuer={}", v.issuer.name)?,
            Token::Session(v) => write!(f, " session=valid issuer={}", v.issuer.name)?,
            Token::Invalid(e) => write!(f, " token=invalid reason={}", e.reason())?,
        }
        match &self.groups {
            Groups::NotNeeded => {}
            Groups::Claim => f.write_str(" groups=claim")?,
            Groups::OverageDenied => f.write_str(" groups=overage-denied")?,
            Groups::OverageSkipped => f.write_str(" groups=overage-not-resolved")?,
            Groups::Pending { .. } => f.write_str(" groups=graph-pending")?,
            Groups::Resolved(set) => write!(f, " groups=graph({})", set.len())?,
            Groups::Unavailable(e) => write!(f, " groups=graph-unavailable({})", e.reason())?,
        }
        if let Some(check) = self.failed_requirement() {
            write!(f, " requirement={} failed", check.requirement.key())?;
        }
        match self.verdict {
            Verdict::Forward(decision) => {
                write!(f, " verdict=forward decision={}", decision.as_str())
            }
            Verdict::Me => f.write_str(" verdict=me"),
            Verdict::Metadata => f.write_str(" verdict=metadata"),
            Verdict::Auth(e) => write!(f, " verdict=sign-in endpoint={}", e.label()),
            Verdict::Reject(_) => match self.refusal() {
                Some(r) => write!(f, " verdict={} {}", r.status.as_u16(), r.error),
                None => Ok(()),
            },
        }
    }
}

/// The decision for one request head at time `now`, without waiting for anything. `headers`
/// are the request's after stripping (only `Authorization` is read). Without a browser
/// session: [`decide_with`] takes one.
pub fn decide<'s, 'r>(
    inbound: Option<&'s InboundState>,
    method: &Method,
    raw_path: &'r str,
    headers: &HeaderMap,
    now: SystemTime,
) -> Trace<'s, 'r> {
    decide_with(inbound, method, raw_path, headers, Browser::default(), now)
}

/// [`decide`] for a request that may carry a browser session (opened by the listener). A
/// bearer token decides alone; without one, the session; without either, the route's
/// `unauthenticated`.
pub fn decide_with<'s, 'r>(
    inbound: Option<&'s InboundState>,
    method: &Method,
    raw_path: &'r str,
    headers: &HeaderMap,
    browser: Browser<'s, 'r>,
    now: SystemTime,
) -> Trace<'s, 'r> {
    let Some(inbound) = inbound else {
        return Trace::refused(Reject::InboundDisabled);
    };
    if policy::is_miscased_method(method) {
        return Trace::refused(Reject::MiscasedMethod);
    }
    let path = match path::normalise(raw_path) {
        Ok(path) => path,
        Err(e) => return Trace::refused(Reject::BadPath(e)),
    };
    let mut trace = Trace {
        route: Routed::NotReached,
        token: Token::NotRead,
        requirements: None,
        groups: Groups::NotNeeded,
        verdict: Verdict::Reject(Reject::NoRoute),
        path: None,
        query: browser.query,
        resource: None,
        origin: browser.origin,
    };
    if inbound.sessions.is_some()
        && let Some(endpoint) = Endpoint::at(method, &path)
    {
        trace.route = Routed::Auth(endpoint);
        trace.verdict = Verdict::Auth(endpoint);
        trace.path = Some(path);
        return trace;
    }
    if inbound.resources.owns(&path) {
        // Tollgate's own document, or 404: never forwarded, no token needed.
        let found = inbound.resources.at_metadata_path(&path);
        trace.route = Routed::Metadata(found);
        trace.verdict = match (found, method) {
            (None, _) => Verdict::Reject(Reject::NoMetadata),
            (Some(_), &Method::GET | &Method::HEAD | &Method::OPTIONS) => Verdict::Metadata,
            (Some(_), _) => Verdict::Reject(Reject::MetadataMethod),
        };
        trace.path = Some(path);
        return trace;
    }
    let session_unavailable = matches!(browser.session, SessionInput::Unavailable);
    if path == me::PATH && method == Method::GET {
        trace.route = Routed::Me;
        trace.resource = inbound.resources.covering(&path, false);
        trace.token = token(inbound, headers, browser.session, trace.resource, now);
        trace.verdict = match trace.token {
            Token::Valid(_) | Token::Session(_) => Verdict::Me,
            Token::Absent if session_unavailable => Verdict::Reject(Reject::SessionUnavailable),
            Token::Absent => Verdict::Reject(Reject::MissingToken),
            _ => Verdict::Reject(Reject::Unauthenticated),
        };
        trace.path = Some(path);
        return trace;
    }
    let Some((route, series)) = inbound.routes.find_with_series(method, &path) else {
        trace.route = Routed::None;
        trace.path = Some(path);
        return trace;
    };
    trace.resource = inbound.resources.covering(&path, route.case_insensitive);
    trace.path = Some(path);
    trace.route = Routed::Route(route, series);
    trace.token = token(inbound, headers, browser.session, trace.resource, now);
    let cross_site = matches!(trace.token, Token::Session(_))
        && !is_safe(method)
        && !same_origin(headers, browser.origin, browser.allowed_origins);
    if route.allow_anonymous {
        if cross_site {
            // The session is not used for a cross-site request: forwarded without identity.
            trace.token = Token::Absent;
        }
        // A valid token still identifies the caller; an invalid one is dropped, not refused.
        trace.verdict = Verdict::Forward(Decision::Anonymous);
        return trace;
    }
    if cross_site {
        trace.verdict = Verdict::Reject(Reject::Csrf);
        return trace;
    }
    let verified = match &trace.token {
        Token::Valid(v) | Token::Session(v) => v,
        Token::Absent | Token::NotRead => {
            trace.verdict = Verdict::Reject(match route.unauthenticated {
                _ if session_unavailable => Reject::SessionUnavailable,
                Unauthenticated::Status401 => Reject::MissingToken,
                Unauthenticated::Status403 => Reject::NoCredential,
                Unauthenticated::Redirect if is_navigation(method, headers) => Reject::SignIn,
                Unauthenticated::Redirect => Reject::MissingToken,
            });
            return trace;
        }
        Token::Invalid(_) => {
            trace.verdict = Verdict::Reject(Reject::Unauthenticated);
            return trace;
        }
    };
    let mut groups = route_groups(route, verified, browser.groups);
    let source = match &groups {
        Groups::Resolved(set) => GroupSource::Resolved(set),
        Groups::NotNeeded | Groups::Claim => GroupSource::Claim,
        _ => GroupSource::Unknown,
    };
    let evaluation = policy::evaluate(route, &verified.claims, &verified.issuer.name, source);
    // A requirement other than the groups failed: the answer is known without them.
    let other_failed = evaluation
        .checks
        .iter()
        .any(|c| !c.passed && c.requirement != Requirement::GroupsAny);
    if other_failed && matches!(groups, Groups::Pending { .. }) {
        groups = Groups::OverageSkipped;
    }
    let groups_unknown = matches!(
        groups,
        Groups::OverageDenied | Groups::Unavailable(_) | Groups::OverageSkipped
    );
    trace.verdict = match (evaluation.first_failure(), route.mode) {
        // Looked up by the listener, then decided again; refused if that never happens.
        _ if matches!(groups, Groups::Pending { .. }) => Verdict::Reject(Reject::GroupsUnavailable),
        (None, _) => Verdict::Forward(Decision::Allowed),
        (Some(_), Mode::Audit) => Verdict::Forward(Decision::Audit),
        (Some(_), Mode::Enforce) if groups_unknown && !other_failed => {
            Verdict::Reject(Reject::GroupsUnavailable)
        }
        (Some(_), Mode::Enforce) => Verdict::Reject(Reject::Forbidden),
    };
    trace.requirements = Some(evaluation);
    trace.groups = groups;
    trace
}

/// Where `route`'s `groups_any` finds the caller's groups: the claim, unless the token is an
/// overage token; then the issuer's `groups_overage` says, and with Graph the listener's
/// `resolution` for this issuer and caller, if it brought one.
fn route_groups(route: &Route, verified: &Verified<'_>, resolution: Option<Resolution>) -> Groups {
    if route.require.groups_any.is_empty() {
        return Groups::NotNeeded;
    }
    if !verified.claims.is_groups_overage() {
        return Groups::Claim;
    }
    if matches!(verified.issuer.overage, Overage::Deny) {
        return Groups::OverageDenied;
    }
    let Some(oid) = verified.claims.object_id() else {
        return Groups::Unavailable(Unavailable::NoObjectId);
    };
    match resolution.filter(|r| r.issuer == verified.issuer.name && r.oid == oid) {
        Some(Resolution {
            outcome: Ok(set), ..
        }) => Groups::Resolved(set),
        Some(Resolution {
            outcome: Err(e), ..
        }) => Groups::Unavailable(e),
        None => Groups::Pending {
            oid: oid.to_owned(),
        },
    }
}

/// `GET`, `HEAD` and `OPTIONS` change nothing, so a cross-site one needs no check.
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A top-level navigation: `GET`/`HEAD` with `Sec-Fetch-Mode: navigate`, or without
/// `Sec-Fetch-Mode` and with `text/html` in `Accept` (older browsers).
pub fn is_navigation(method: &Method, headers: &HeaderMap) -> bool {
    if !matches!(*method, Method::GET | Method::HEAD) {
        return false;
    }
    match headers.get("sec-fetch-mode") {
        Some(mode) => mode.as_bytes().eq_ignore_ascii_case(b"navigate"),
        None => super::session::pages::wants_html(headers),
    }
}

/// Whether an unsafe request with the session cookie comes from this origin: `Origin` is the
/// request's own or an allowed one; without `Origin`, `Sec-Fetch-Site: same-origin`.
fn same_origin(headers: &HeaderMap, own: Option<&str>, allowed: &[String]) -> bool {
    match headers.get(http::header::ORIGIN).map(|o| o.to_str()) {
        Some(Ok(origin)) => {
            let origin = origin.trim();
            own.is_some_and(|own| own.eq_ignore_ascii_case(origin))
                || allowed.iter().any(|a| a.eq_ignore_ascii_case(origin))
        }
        Some(Err(_)) => false,
        None => headers
            .get("sec-fetch-site")
            .is_some_and(|s| s.as_bytes().eq_ignore_ascii_case(b"same-origin")),
    }
}

/// [`decide`], and once more after refetching the issuer's keys when the token names a `kid`
/// they lack (throttled: at most once per 30 s per issuer, shared by concurrent callers).
pub async fn decide_refetching<'s, 'r>(
    inbound: Option<&'s InboundState>,
    method: &Method,
    raw_path: &'r str,
    headers: &HeaderMap,
) -> Trace<'s, 'r> {
    let mut trace = decide(inbound, method, raw_path, headers, SystemTime::now());
    if let Some(refetch) = refetch_for(inbound, &trace)
        && refetch.await
    {
        trace = decide(inbound, method, raw_path, headers, SystemTime::now());
    }
    if let Some(lookup) = groups_for(inbound, &trace) {
        let browser = Browser {
            groups: Some(lookup.await),
            ..Browser::default()
        };
        trace = decide_with(
            inbound,
            method,
            raw_path,
            headers,
            browser,
            SystemTime::now(),
        );
    }
    trace
}

/// When the route needs an overage token's groups from Graph: the lookup to await before
/// deciding again with its [`Resolution`] in [`Browser::groups`] (cached, and fetched once
/// however many requests wait).
pub fn groups_for(
    inbound: Option<&InboundState>,
    trace: &Trace<'_, '_>,
) -> Option<impl Future<Output = Resolution> + use<>> {
    let Groups::Pending { oid } = &trace.groups else {
        return None;
    };
    let issuer = trace.verified()?.issuer;
    // The issuer of the snapshot the listener decides with.
    let issuer = inbound?.issuers.by_name(&issuer.name)?;
    let Overage::Graph(lookups) = &issuer.overage else {
        return None;
    };
    let lookups = lookups.clone();
    let name = issuer.name.clone();
    let oid = oid.clone();
    Some(async move {
        let outcome = lookups.resolve(&oid).await;
        Resolution {
            issuer: name,
            oid,
            outcome,
        }
    })
}

/// When the token names a `kid` its issuer's keys lack: the refetch to await before deciding
/// again (true when newer keys are in place). The listener calls [`decide`] and this itself,
/// so the usual request carries no second future and moves no trace between them.
pub fn refetch_for(
    inbound: Option<&InboundState>,
    trace: &Trace<'_, '_>,
) -> Option<impl Future<Output = bool> + use<>> {
    let Token::Invalid(AuthError::UnknownKey {
        issuer, generation, ..
    }) = &trace.token
    else {
        return None;
    };
    let keys = inbound?.issuers.by_name(issuer)?.keys.clone();
    let generation = *generation;
    Some(async move { keys.refetch_for_unknown_kid(generation).await })
}

/// The credential of a request: its bearer token, checked, else its session. On a path a
/// protected resource covers, the token must name it (RFC 8707): `aud` the resource or one of
/// its issuer's audiences. A session's id_token names the sign-in client instead, and was
/// checked for it when the session began.
fn token<'s>(
    inbound: &'s InboundState,
    headers: &HeaderMap,
    session: SessionInput<'s>,
    resource: Option<&ProtectedResource>,
    now: SystemTime,
) -> Token<'s> {
    let cache = inbound.signature_cache.as_deref();
    match bearer::extract(headers) {
        Ok(None) => match session {
            SessionInput::Active(verified) => Token::Session(verified),
            SessionInput::None | SessionInput::Unavailable => Token::Absent,
        },
        Err(e) => Token::Invalid(e),
        Ok(Some(raw)) => match jwt::verify_as(
            raw,
            &inbound.issuers,
            cache,
            now,
            match resource {
                None => Expect::AccessToken,
                Some(r) => Expect::Resource {
                    audiences: &r.audiences,
                },
            },
        ) {
            Ok(verified) => Token::Valid(verified),
            Err(e) => Token::Invalid(e),
        },
    }
}

/// The client's description of a refused path.
fn path_description(e: PathError) -> &'static str {
    match e {
        PathError::EncodedSlash => "the path contains an encoded slash (%2F)",
        PathError::Backslash => "the path contains a backslash",
        PathError::ControlCharacter => "the path contains a control character",
        PathError::BadEscape => "the path contains an invalid percent-encoding",
        PathError::DoubleEncoding => "the path contains a double percent-encoding",
        PathError::NotAbsolute => "the request target is not an absolute path",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(token: Token<'static>, reject: Reject) -> Refusal {
        let trace = Trace {
            token,
            verdict: Verdict::Reject(reject),
            ..Trace::refused(reject)
        };
        trace.refusal().unwrap()
    }

    #[test]
    fn challenges_follow_rfc6750() {
        let r = refused(Token::Absent, Reject::MissingToken).response();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()[WWW_AUTHENTICATE], "Bearer realm=\"tollgate\"");
        let r = refused(Token::Invalid(AuthError::Expired), Reject::Unauthenticated).response();
        assert_eq!(
            r.headers()[WWW_AUTHENTICATE],
            "Bearer realm=\"tollgate\", error=\"invalid_token\", error_description=\"token expired\""
        );
        assert_eq!(r.headers()[http::header::CONTENT_TYPE], "application/json");
        let r = refused(Token::Absent, Reject::Forbidden).response();
        assert_eq!(r.status(), 403);
        assert!(
            r.headers()[WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains("insufficient_scope")
        );
    }

    #[test]
    fn keys_not_loaded_is_503_with_retry_after_and_no_challenge() {
        let token = Token::Invalid(AuthError::KeysUnavailable("entra".into()));
        let refusal = refused(token, Reject::Unauthenticated);
        assert_eq!(refusal.reason, "keys_unavailable");
        let r = refusal.response();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[RETRY_AFTER], "5");
        assert!(r.headers().get(WWW_AUTHENTICATE).is_none());
    }

    /// An inbound state with `[login]` (nothing fetched), and a session user's claims.
    fn signed_in_state() -> (InboundState, crate::inbound::claims::Claims) {
        let toml = r#"
[server]
upstream = "http://127.0.0.1:3000"
[[issuers]]
name = "entra"
issuer = "https://login.example/t/v2.0"
discovery = "https://login.example/t/v2.0/.well-known/openid-configuration"
audiences = ["api://web"]
[credentials.web]
kind = "client_secret"
tenant_id = "t"
client_id = "web"
secret_env = "S"
[login]
issuer = "entra"
client_id = "web"
credential = "web"
session_keys = ["AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="]
allowed_origins = ["https://spa.example.com"]
[[routes]]
prefix = "/public"
allow_anonymous = true
[[routes]]
prefix = "/"
unauthenticated = "redirect"
"#;
        let env = |name: &str| (name == "S").then(|| "s".to_owned());
        let config = crate::config::parse(toml, std::path::Path::new("t.toml"), &env)
            .unwrap()
            .config;
        let metrics = std::sync::Arc::new(crate::telemetry::metrics::Metrics::new());
        let state = InboundState::build(&config, None, &metrics, None, &env)
            .unwrap()
            .unwrap();
        let claims = crate::inbound::claims::Claims::parse(
            br#"{"aud":"web","oid":"o-1","preferred_username":"ana@contoso.com"}"#,
        )
        .unwrap();
        (state, claims)
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256)
        ))]
        /// For every method and every `Origin` (or none, with any `Sec-Fetch-Site`), a request
        /// whose credential is the session cookie is forwarded with the session's identity only
        /// when the method is safe or the origin is this one or an allowed one; otherwise it
        /// is refused with `csrf` on a protected route, and forwarded without identity on an
        /// anonymous one.
        #[test]
        fn a_session_never_acts_cross_site(
            method in proptest::prop_oneof![
                proptest::strategy::Strategy::prop_map(
                    proptest::sample::select(crate::config::KNOWN_METHODS.to_vec()),
                    str::to_owned,
                ),
                "[A-Z]{1,8}",
            ],
            origin in proptest::option::of(proptest::prop_oneof![
                proptest::strategy::Just("https://app.example.com".to_owned()),
                proptest::strategy::Just("HTTPS://APP.EXAMPLE.COM".to_owned()),
                proptest::strategy::Just("https://spa.example.com".to_owned()),
                proptest::strategy::Just("null".to_owned()),
                "https?://[a-z.]{1,20}(:[0-9]{1,5})?",
                "[ -~]{0,30}",
            ]),
            fetch_site in proptest::option::of(proptest::sample::select(vec!["same-origin", "same-site", "cross-site", "none", "SAME-ORIGIN"])),
            anonymous in proptest::bool::ANY,
        ) {
            use proptest::prelude::*;
            let (state, claims) = signed_in_state();
            let issuer = state.issuers.by_name("entra").unwrap();
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let mut headers = HeaderMap::new();
            if let Some(o) = &origin && let Ok(v) = HeaderValue::from_str(o) {
                headers.insert(http::header::ORIGIN, v);
            }
            if let Some(site) = fetch_site {
                headers.insert("sec-fetch-site", HeaderValue::from_static(site));
            }
            let browser = Browser {
                session: SessionInput::Active(Verified { claims, issuer, alg: crate::config::Algorithm::RS256, cached: true }),
                origin: Some("https://app.example.com"),
                allowed_origins: &["https://spa.example.com".to_owned()],
                query: None,
                groups: None,
            };
            let path = if anonymous { "/public/form" } else { "/orders" };
            let trace = decide_with(Some(&state), &method, path, &headers, browser, SystemTime::now());
            let sent_origin = headers.get(http::header::ORIGIN).map(|v| v.to_str().unwrap_or("\u{0}").to_ascii_lowercase());
            let same = match &sent_origin {
                Some(o) => o == "https://app.example.com" || o == "https://spa.example.com",
                None => fetch_site.is_some_and(|s| s.eq_ignore_ascii_case("same-origin")),
            };
            let safe = matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS");
            if crate::inbound::policy::is_miscased_method(&method) {
                prop_assert!(matches!(trace.verdict, Verdict::Reject(Reject::MiscasedMethod)));
            } else if safe || same {
                prop_assert!(matches!(trace.verdict, Verdict::Forward(_)), "{trace}");
                prop_assert!(matches!(trace.token, Token::Session(_)), "{trace}");
            } else if anonymous {
                prop_assert!(matches!(trace.verdict, Verdict::Forward(Decision::Anonymous)), "{trace}");
                prop_assert!(matches!(trace.token, Token::Absent), "no identity cross-site: {trace}");
            } else {
                prop_assert_eq!(trace.verdict, Verdict::Reject(Reject::Csrf));
            }
        }
    }

    /// A session whose id_token is an overage token is decided as a bearer token is: the
    /// first decision asks for the groups, the second uses the listener's resolution for that
    /// issuer and caller only.
    #[test]
    fn an_overage_session_waits_for_its_groups_then_decides_on_them() {
        let toml = r#"
[server]
upstream = "http://127.0.0.1:3000"
[[issuers]]
name = "entra"
issuer = "https://login.example/t/v2.0"
discovery = "https://login.example/t/v2.0/.well-known/openid-configuration"
audiences = ["api://web"]
groups_overage = "graph"
graph_credential = "web"
graph_endpoint = "http://127.0.0.1:9"
[credentials.web]
kind = "client_secret"
tenant_id = "t"
client_id = "web"
secret_env = "S"
[login]
issuer = "entra"
client_id = "web"
credential = "web"
session_keys = ["AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="]
[[routes]]
prefix = "/"
groups_any = ["G-2"]
"#;
        let env = |name: &str| (name == "S").then(|| "s".to_owned());
        let config = crate::config::parse(toml, std::path::Path::new("t.toml"), &env)
            .unwrap()
            .config;
        let metrics = Arc::new(crate::telemetry::metrics::Metrics::new());
        let state = InboundState::build(&config, None, &metrics, None, &env)
            .unwrap()
            .unwrap();
        let issuer = state.issuers.by_name("entra").unwrap();
        let session = || {
            let claims = crate::inbound::claims::Claims::parse(
                br#"{"aud":"web","oid":"0a-1","_claim_names":{"groups":"src1"}}"#,
            )
            .unwrap();
            SessionInput::Active(Verified {
                claims,
                issuer,
                alg: crate::config::Algorithm::RS256,
                cached: true,
            })
        };
        let decide_with_groups = |groups: Option<Resolution>| {
            let browser = Browser {
                session: session(),
                groups,
                ..Browser::default()
            };
            decide_with(
                Some(&state),
                &Method::GET,
                "/x",
                &HeaderMap::new(),
                browser,
                SystemTime::now(),
            )
        };
        let first = decide_with_groups(None);
        assert!(
            matches!(&first.groups, Groups::Pending { oid } if oid == "0a-1"),
            "{first}"
        );
        assert_eq!(first.verdict, Verdict::Reject(Reject::GroupsUnavailable));
        assert!(groups_for(Some(&state), &first).is_some());
        let resolution = |oid: &str, outcome| Resolution {
            issuer: "entra".into(),
            oid: oid.into(),
            outcome,
        };
        let member = Arc::new(GroupSet::new(vec!["g-1".into(), "g-2".into()]));
        let allowed = decide_with_groups(Some(resolution("0a-1", Ok(member.clone()))));
        assert_eq!(
            allowed.verdict,
            Verdict::Forward(Decision::Allowed),
            "{allowed}"
        );
        assert!(matches!(allowed.groups, Groups::Resolved(_)));
        assert!(groups_for(Some(&state), &allowed).is_none());
        // Another caller's groups are not used.
        let other = decide_with_groups(Some(resolution("0b-2", Ok(member))));
        assert!(matches!(other.groups, Groups::Pending { .. }));
        let outsider = Arc::new(GroupSet::new(vec!["g-3".into()]));
        let refused = decide_with_groups(Some(resolution("0a-1", Ok(outsider))));
        assert_eq!(refused.verdict, Verdict::Reject(Reject::Forbidden));
        let down = decide_with_groups(Some(resolution("0a-1", Err(Unavailable::Unreachable))));
        assert_eq!(down.verdict, Verdict::Reject(Reject::GroupsUnavailable));
        let refusal = down.refusal().unwrap();
        assert_eq!(
            (refusal.status.as_u16(), refusal.reason),
            (403, "groups_unavailable")
        );
        assert!(refusal.description.contains("groups_unavailable"));
    }

    #[test]
    fn navigations_are_told_from_scripts() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert!(is_navigation(
            &Method::GET,
            &h(&[("sec-fetch-mode", "navigate")])
        ));
        assert!(is_navigation(
            &Method::HEAD,
            &h(&[("accept", "text/html,*/*")])
        ));
        assert!(!is_navigation(
            &Method::GET,
            &h(&[("sec-fetch-mode", "cors"), ("accept", "text/html")])
        ));
        assert!(!is_navigation(
            &Method::GET,
            &h(&[("accept", "application/json")])
        ));
        assert!(!is_navigation(
            &Method::POST,
            &h(&[("sec-fetch-mode", "navigate")])
        ));
    }

    #[test]
    fn only_token_refusals_count_as_authentication_failures() {
        for (reject, counted) in [
            (Reject::InboundDisabled, false),
            (Reject::MiscasedMethod, false),
            (Reject::BadPath(PathError::EncodedSlash), false),
            (Reject::NoRoute, false),
            (Reject::NoMetadata, false),
            (Reject::MetadataMethod, false),
            (Reject::MissingToken, true),
            (Reject::Unauthenticated, true),
            (Reject::Forbidden, true),
            (Reject::NoCredential, true),
            (Reject::SignIn, false),
            (Reject::Csrf, true),
            (Reject::SessionUnavailable, false),
            (Reject::GroupsUnavailable, true),
        ] {
            assert_eq!(
                refused(Token::Absent, reject).counted,
                counted,
                "{reject:?}"
            );
        }
    }
}
