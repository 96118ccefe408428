//! `[[routes]]`: path patterns, methods, requirements, and the warnings: a shadowed route, and
//! a case-sensitive route whose paths, spelled in another case, a weaker route takes.

use std::collections::HashSet;
use std::ops::Range;

use toml::Spanned;

use super::{Context, strings};
use crate::config::schema::RawRoute;
use crate::config::{
    KNOWN_METHODS, Mode, PathMatch, Requirements, Route, Unauthenticated, is_scope_token,
};
use crate::path::is_segment_char;

pub(super) fn routes(
    cx: &mut Context<'_>,
    raw: Vec<(RawRoute, Range<usize>)>,
    issuers: &HashSet<&str>,
) -> Vec<Route> {
    let named = raw
        .iter()
        .enumerate()
        .filter_map(|(i, (r, _))| Some((r.name.as_ref()?, format!("routes[{i}].name"))));
    cx.unique(named, "route");
    let mut out: Vec<Route> = Vec::new();
    let mut spans = Vec::new();
    for (i, (r, span)) in raw.into_iter().enumerate() {
        let key = format!("routes[{i}]");
        let Some(route) = route(cx, r, span.clone(), &key, issuers) else {
            continue;
        };
        spans.push((key.clone(), span.clone()));
        if let Some(earlier) = out.iter().find(|e| shadows(e, &route)) {
            let message = format!(
                "never matches: route {:?} (line {}) comes first and covers every request this one does",
                earlier.name, earlier.position.line
            );
            cx.warn(&Spanned::new(span, ()), &key, message);
        }
        out.push(route);
    }
    for (i, route) in out.iter().enumerate() {
        if let Some(weaker) = taken_in_another_case(route, &out[i + 1..]) {
            let (key, span) = &spans[i];
            let message = format!(
                "a backend that ignores case (Express, ASP.NET Core, IIS) serves {:?} spelled in another case, which route {:?} (line {}) then takes with weaker rules: set case_insensitive = true on this route",
                route.path.as_str(),
                weaker.name,
                weaker.position.line
            );
            cx.warn(&Spanned::new(span.clone(), ()), key, message);
        }
    }
    out
}

/// The route among `later` that a request for `route`'s paths spelled in another case
/// (`/ADMIN` for `/admin`) falls to, when `route` compares case and that route requires less.
fn taken_in_another_case<'r>(route: &Route, later: &'r [Route]) -> Option<&'r Route> {
    if route.case_insensitive || route.allow_anonymous {
        return None;
    }
    let methods_overlap = |other: &Route| match (&route.methods, &other.methods) {
        (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
        _ => true,
    };
    later
        .iter()
        .find(|other| methods_overlap(other) && takes_a_case_variant(other, route.path.as_str()))
        .filter(|other| requires_less(other, route))
}

/// Whether `other` matches some spelling of `path` in another case (`/Orders` for
/// `/orders`). A case-sensitive `other` matches only its own spelling of its pattern, so
/// it takes a variant only if it is spelled differently from `path` or leaves letters of
/// `path` after its pattern free to vary: prefix `/api` takes `/api/ORDERS`, prefix
/// `/orders` takes no spelling of `/orders` but its own.
fn takes_a_case_variant(other: &Route, path: &str) -> bool {
    if !path.bytes().any(|b| b.is_ascii_alphabetic()) || !other.path.matches(path, true) {
        return false;
    }
    if other.case_insensitive || !other.path.matches(path, false) {
        return true;
    }
    match &other.path {
        PathMatch::Exact(_) => false,
        PathMatch::Prefix(p) => path
            .get(p.trim_end_matches('/').len()..)
            .is_some_and(|rest| rest.bytes().any(|b| b.is_ascii_alphabetic())),
    }
}

/// Whether `other` may let through a request `route` would refuse: it is anonymous, only
/// audits, or asks less than one of `route`'s requirements (an "any" list with a value
/// `route`'s lacks, an "all" list without one of `route`'s, a claim `route` restricts
/// further).
fn requires_less(other: &Route, route: &Route) -> bool {
    let (o, r) = (&other.require, &route.require);
    let subset = |a: &[String], b: &[String]| a.iter().all(|x| b.contains(x));
    // Any of `theirs` satisfies `other`: weaker unless it is a non-empty subset of ours.
    let any_weaker = |theirs: &[String], ours: &[String]| {
        !ours.is_empty() && (theirs.is_empty() || !subset(theirs, ours))
    };
    let claims_weaker = r.claims.iter().any(|(claim, ours)| {
        o.claims
            .iter()
            .find(|(c, _)| c == claim)
            .is_none_or(|(_, theirs)| !subset(theirs, ours))
    });
    other.allow_anonymous
        || (other.mode == Mode::Audit && route.mode == Mode::Enforce)
        || any_weaker(&o.roles_any, &r.roles_any)
        || !subset(&r.roles_all, &o.roles_all)
        || any_weaker(&o.scopes_any, &r.scopes_any)
        || any_weaker(&o.client_apps, &r.client_apps)
        || any_weaker(&o.tenants, &r.tenants)
        || any_weaker(&o.principals, &r.principals)
        || any_weaker(&o.groups_any, &r.groups_any)
        || any_weaker(&o.issuers, &r.issuers)
        || claims_weaker
}

fn route(
    cx: &mut Context<'_>,
    r: RawRoute,
    span: Range<usize>,
    key: &str,
    issuers: &HashSet<&str>,
) -> Option<Route> {
    let position = cx.position(span.start);
    let path = match (&r.prefix, &r.exact) {
        (Some(p), None) => pattern(cx, p, &format!("{key}.prefix")).map(PathMatch::Prefix),
        (None, Some(e)) => pattern(cx, e, &format!("{key}.exact")).map(PathMatch::Exact),
        (Some(p), Some(_)) => {
            cx.error(p, key, "give prefix or exact, not both");
            None
        }
        (None, None) => {
            cx.error_at(
                span,
                key,
                "missing prefix or exact: the paths this route covers".into(),
            );
            None
        }
    };
    let methods = r.methods.map(|m| methods(cx, m, &format!("{key}.methods")));
    let mode = match r.mode.as_ref().map(|m| m.get_ref().as_str()) {
        None | Some("enforce") => Mode::Enforce,
        Some("audit") => Mode::Audit,
        Some(_) => {
            if let Some(m) = &r.mode {
                cx.error(
                    m,
                    &format!("{key}.mode"),
                    "expected \"enforce\" or \"audit\"",
                );
            }
            Mode::Enforce
        }
    };
    for name in r.issuers.iter().flatten() {
        if !issuers.contains(name.get_ref().as_str()) {
            cx.error(
                name,
                &format!("{key}.issuers"),
                format!(
                    "unknown issuer {:?}: no [[issuers]] has that name",
                    name.get_ref()
                ),
            );
        }
    }
    let claims = r
        .claims
        .unwrap_or_default()
        .into_iter()
        .map(|(claim, values)| {
            if values.get_ref().0.is_empty() {
                cx.error(
                    &values,
                    &format!("{key}.claims.{claim}"),
                    "give at least one allowed value",
                );
            }
            (claim, values.into_inner().0)
        })
        .collect();
    // A scope stands as it is in a 403's `scope="..."` challenge parameter (RFC 6750 §3).
    for scope in r.scopes_any.iter().flatten() {
        if !is_scope_token(scope.get_ref()) {
            cx.error(
                scope,
                &format!("{key}.scopes_any"),
                format!(
                    "{:?} is not a scope: one scope per string, printable ASCII without spaces, \" or \\",
                    scope.get_ref()
                ),
            );
        }
    }
    let require = Requirements {
        roles_any: strings(r.roles_any),
        roles_all: strings(r.roles_all),
        scopes_any: strings(r.scopes_any),
        client_apps: strings(r.client_apps),
        tenants: strings(r.tenants),
        principals: strings(r.principals),
        groups_any: strings(r.groups_any),
        issuers: strings(r.issuers),
        claims,
    };
    let allow_anonymous = r.allow_anonymous.as_ref().is_some_and(|a| *a.get_ref());
    if let Some(anon) = r
        .allow_anonymous
        .as_ref()
        .filter(|_| allow_anonymous && require != Requirements::default())
    {
        cx.error(
            anon,
            key,
            "an allow_anonymous route cannot also have token requirements",
        );
    }
    let unauthenticated = match &r.unauthenticated {
        None => Unauthenticated::default(),
        Some(u) => {
            let value = match u.get_ref().as_str() {
                "401" => Unauthenticated::Status401,
                "403" => Unauthenticated::Status403,
                "redirect" => Unauthenticated::Redirect,
                _ => {
                    cx.error(
                        u,
                        &format!("{key}.unauthenticated"),
                        "expected \"401\", \"403\" or \"redirect\"",
                    );
                    Unauthenticated::default()
                }
            };
            if allow_anonymous {
                cx.error(
                    u,
                    &format!("{key}.unauthenticated"),
                    "an allow_anonymous route lets requests without a credential through: unauthenticated has no effect there",
                );
            }
            value
        }
    };
    let name = match r.name {
        Some(n) => n.into_inner(),
        None => path
            .as_ref()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
    };
    Some(Route {
        name,
        position,
        path: path?,
        methods: methods.flatten(),
        case_insensitive: r.case_insensitive.unwrap_or(false),
        allow_anonymous,
        require,
        mode,
        unauthenticated,
    })
}

/// A route path must already be in the form request paths are normalised to, or it could
/// never match (`/a//b`, `/a/../b`) or would match something other than it says (`%2F`). It
/// may hold only the characters a normalised path holds raw (`path::is_segment_char`): a
/// request spells any other character percent-encoded, and backends disagree on whether to
/// decode it before routing, so a pattern holding one could not mean the same to all of them.
pub(super) fn pattern(cx: &mut Context<'_>, text: &Spanned<String>, key: &str) -> Option<String> {
    let p = text.get_ref();
    let other = p
        .chars()
        .find(|&c| c != '/' && !u8::try_from(c).is_ok_and(is_segment_char));
    let problem = if !p.starts_with('/') {
        Some("must start with /".to_owned())
    } else if p.contains("//") {
        Some("must not contain // (request paths are merged to a single /)".to_owned())
    } else if p.split('/').any(|s| s == "." || s == "..") {
        Some("must not contain . or .. segments (request paths have them removed)".to_owned())
    } else if p.contains(['?', '#']) {
        Some("must be a path only, without ? or #".to_owned())
    } else if p.contains(';') {
        Some("must not contain ; (parameters are removed from request paths)".to_owned())
    } else if p.contains('%') {
        Some("must not contain percent-encoding: write the decoded characters".to_owned())
    } else {
        other.map(|c| {
            format!(
                "must not contain {c:?}: only letters, digits, / and - . _ ~ ! $ & ' ( ) * + , = : @ \
                 (a request carries other characters percent-encoded, and backends disagree on \
                 whether to decode them before routing)"
            )
        })
    };
    match problem {
        Some(m) => {
            cx.error(text, key, m);
            None
        }
        None => Some(p.clone()),
    }
}

fn methods(
    cx: &mut Context<'_>,
    list: Spanned<Vec<Spanned<String>>>,
    key: &str,
) -> Option<Vec<http::Method>> {
    if list.get_ref().is_empty() {
        cx.error(
            &list,
            key,
            "an empty list covers no method: leave methods out to cover all",
        );
        return None;
    }
    let mut out: Vec<http::Method> = Vec::new();
    for m in list.into_inner() {
        let name = m.get_ref();
        if KNOWN_METHODS.contains(&name.as_str()) {
            if let Ok(method) = http::Method::from_bytes(name.as_bytes())
                && !out.contains(&method)
            {
                out.push(method);
            }
        } else if KNOWN_METHODS.contains(&name.to_ascii_uppercase().as_str()) {
            cx.error(
                &m,
                key,
                format!(
                    "methods are case-sensitive: write {:?}",
                    name.to_ascii_uppercase()
                ),
            );
        } else {
            cx.error(&m, key, format!("unknown HTTP method {name:?}"));
        }
    }
    // A backend answers HEAD with its GET handler (RFC 9110 §9.3.2), so a rule on GET that
    // let HEAD fall through to a later, weaker route would give away the response's headers.
    if out.contains(&http::Method::GET) && !out.contains(&http::Method::HEAD) {
        out.push(http::Method::HEAD);
    }
    Some(out)
}

/// True when `earlier` matches every request `later` matches, so `later` never applies.
pub(super) fn shadows(earlier: &Route, later: &Route) -> bool {
    let methods_covered = match (&earlier.methods, &later.methods) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(e), Some(l)) => l.iter().all(|m| e.contains(m)),
    };
    // A case-sensitive route does not cover a case-insensitive one: "/ADMIN" gets past it.
    let case_covered = earlier.case_insensitive || !later.case_insensitive;
    // An exact route covers only itself; a prefix covers whatever it matches as a path.
    let paths_covered = match (&earlier.path, &later.path) {
        (PathMatch::Exact(_), PathMatch::Prefix(_)) => false,
        (e, l) => e.matches(l.as_str(), earlier.case_insensitive),
    };
    methods_covered && case_covered && paths_covered
}
