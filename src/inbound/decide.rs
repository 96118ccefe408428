//! The inbound decision, as one function of the request head, the state and the time:
//! method, path, route, token, requirements, verdict. [`decide`] is pure; [`decide_refetching`]
//! adds the one thing that waits (refetching an issuer's keys for an unknown `kid`) and is
//! what the listener and `tollgate explain` both call, so they cannot disagree.
//!
//! The listener strips forged identity and forwarding headers before it decides, and adds the
//! caller's identity after: the decision only reads.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::time::SystemTime;

use http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::jwt::{self, AuthError, Verified};
use super::policy::{self, Evaluation};
use super::{Decision, InboundState, bearer, me};
use crate::config::{Mode, Route};
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
    /// What happens to the request.
    pub verdict: Verdict,
}

/// What the path and method matched.
pub enum Routed<'s> {
    /// Refused before routing.
    NotReached,
    /// `GET /.auth/me`, answered by tollgate itself.
    Me,
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
    /// The route needs a token and there is none: 401 with a bare challenge.
    MissingToken,
    /// The token is not acceptable (the error is in [`Trace::token`]): 401, or 503 while
    /// the issuer's keys are not loaded.
    Unauthenticated,
    /// A valid token fails the route's requirements ([`Trace::requirements`]): 403.
    Forbidden,
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
        }
    }

    /// The response tollgate writes.
    pub fn response(&self) -> Response<Body> {
        let mut r = json_error(self.status, self.error, self.description);
        let challenge = match self.challenge {
            Challenge::None => None,
            Challenge::Bare => Some(HeaderValue::from_static("Bearer realm=\"tollgate\"")),
            Challenge::WithError => HeaderValue::from_str(&format!(
                "Bearer realm=\"{}\", error=\"{}\", error_description=\"{}\"",
                REALM, self.error, self.description
            ))
            .ok(),
        };
        if let Some(value) = challenge {
            r.headers_mut().insert(WWW_AUTHENTICATE, value);
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
            verdict: Verdict::Reject(reject),
        }
    }

    /// The route's name for metrics and logs: `none` before or without a route.
    pub fn route_label(&self) -> &'s str {
        match &self.route {
            Routed::Route(route, _) => &route.name,
            Routed::Me => me::PATH,
            Routed::NotReached | Routed::None => super::NO_ROUTE,
        }
    }

    /// The verified token, if there is one.
    pub fn verified(&self) -> Option<&Verified<'s>> {
        match &self.token {
            Token::Valid(v) => Some(v),
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
            Reject::MissingToken => Refusal {
                challenge: Challenge::Bare,
                counted: true,
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
                ..plain(
                    StatusCode::FORBIDDEN,
                    "insufficient_scope",
                    self.failed_requirement()
                        .map_or("a requirement is not met", |c| c.requirement.description()),
                    "forbidden",
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
            Token::Invalid(e) => write!(f, " token=invalid reason={}", e.reason())?,
        }
        if let Some(check) = self.failed_requirement() {
            write!(f, " requirement={} failed", check.requirement.key())?;
        }
        match self.verdict {
            Verdict::Forward(decision) => {
                write!(f, " verdict=forward decision={}", decision.as_str())
            }
            Verdict::Me => f.write_str(" verdict=me"),
            Verdict::Reject(_) => match self.refusal() {
                Some(r) => write!(f, " verdict={} {}", r.status.as_u16(), r.error),
                None => Ok(()),
            },
        }
    }
}

/// The decision for one request head at time `now`, without waiting for anything. `headers`
/// are the request's after stripping (only `Authorization` is read).
pub fn decide<'s, 'r>(
    inbound: Option<&'s InboundState>,
    method: &Method,
    raw_path: &'r str,
    headers: &HeaderMap,
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
        verdict: Verdict::Reject(Reject::NoRoute),
        path: None,
    };
    if path == me::PATH && method == Method::GET {
        trace.route = Routed::Me;
        trace.token = token(inbound, headers, now);
        trace.verdict = match trace.token {
            Token::Valid(_) => Verdict::Me,
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
    trace.path = Some(path);
    trace.route = Routed::Route(route, series);
    trace.token = token(inbound, headers, now);
    if route.allow_anonymous {
        // A valid token still identifies the caller; an invalid one is dropped, not refused.
        trace.verdict = Verdict::Forward(Decision::Anonymous);
        return trace;
    }
    let verified = match &trace.token {
        Token::Valid(v) => v,
        Token::Absent | Token::NotRead => {
            trace.verdict = Verdict::Reject(Reject::MissingToken);
            return trace;
        }
        Token::Invalid(_) => {
            trace.verdict = Verdict::Reject(Reject::Unauthenticated);
            return trace;
        }
    };
    let evaluation = policy::evaluate(route, &verified.claims, &verified.issuer.name);
    trace.verdict = match (evaluation.first_failure(), route.mode) {
        (None, _) => Verdict::Forward(Decision::Allowed),
        (Some(_), Mode::Audit) => Verdict::Forward(Decision::Audit),
        (Some(_), Mode::Enforce) => Verdict::Reject(Reject::Forbidden),
    };
    trace.requirements = Some(evaluation);
    trace
}

/// [`decide`], and once more after refetching the issuer's keys when the token names a `kid`
/// they lack (throttled: at most once per 30 s per issuer, shared by concurrent callers).
pub async fn decide_refetching<'s, 'r>(
    inbound: Option<&'s InboundState>,
    method: &Method,
    raw_path: &'r str,
    headers: &HeaderMap,
) -> Trace<'s, 'r> {
    let trace = decide(inbound, method, raw_path, headers, SystemTime::now());
    if let Some(refetch) = refetch_for(inbound, &trace)
        && refetch.await
    {
        return decide(inbound, method, raw_path, headers, SystemTime::now());
    }
    trace
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

/// The token of a request, checked.
fn token<'s>(inbound: &'s InboundState, headers: &HeaderMap, now: SystemTime) -> Token<'s> {
    let cache = inbound.signature_cache.as_deref();
    match bearer::extract(headers) {
        Ok(None) => Token::Absent,
        Err(e) => Token::Invalid(e),
        Ok(Some(raw)) => match jwt::verify(raw, &inbound.issuers, cache, now) {
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

    #[test]
    fn only_token_refusals_count_as_authentication_failures() {
        for (reject, counted) in [
            (Reject::InboundDisabled, false),
            (Reject::MiscasedMethod, false),
            (Reject::BadPath(PathError::EncodedSlash), false),
            (Reject::NoRoute, false),
            (Reject::MissingToken, true),
            (Reject::Unauthenticated, true),
            (Reject::Forbidden, true),
        ] {
            assert_eq!(
                refused(Token::Absent, reject).counted,
                counted,
                "{reject:?}"
            );
        }
    }
}
