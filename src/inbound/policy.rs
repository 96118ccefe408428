//! Routes and requirements: which rule covers a request (first match in file order, on the
//! normalised path and the method), and whether a verified token meets that rule.
//!
//! [`evaluate`] is pure: the request path and `tollgate explain` both call it, so they cannot
//! disagree.

use http::Method;

use super::claims::Claims;
use crate::config::{KNOWN_METHODS, Route};
use crate::telemetry::metrics::RouteSeries;

/// Whether a request method spells a method routes can name in another case (`delete`,
/// `pAtch`). Such a request is refused: RFC 9110 §9.1 makes methods case-sensitive, so a
/// rule on `DELETE` does not cover `delete`, yet Django, Flask and ASP.NET Core upper-case
/// the method before routing and would serve it as `DELETE`. Extension methods (`PURGE`,
/// `purge`) are not affected: no route can name them, so only routes covering every method
/// cover them, in any spelling.
#[inline]
pub fn is_miscased_method(method: &Method) -> bool {
    let name = method.as_str().as_bytes();
    // The standard methods parse only from their upper-case spelling; every other spelling
    // is an extension method, so the common case returns at the first byte.
    name.iter().any(u8::is_ascii_lowercase)
        && KNOWN_METHODS
            .iter()
            .any(|known| known.as_bytes().eq_ignore_ascii_case(name))
}

/// One kind of requirement a route can make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requirement<'r> {
    /// `roles_any`: at least one of these roles.
    RolesAny,
    /// `roles_all`: every one of these roles.
    RolesAll,
    /// `scopes_any`: at least one of these scopes.
    ScopesAny,
    /// `client_apps`: the calling application (`azp` / `appid`).
    ClientApps,
    /// `tenants`: the tenant (`tid`).
    Tenants,
    /// `principals`: the caller (`oid`).
    Principals,
    /// `groups_any`: at least one of these groups (`groups`, or resolved with Graph).
    GroupsAny,
    /// `issuers`: the issuer, by configured name.
    Issuers,
    /// `claims.NAME`: an exact claim value.
    Claim(&'r str),
}

impl Requirement<'_> {
    /// The configuration key.
    pub fn key(&self) -> String {
        match self {
            Requirement::RolesAny => "roles_any".into(),
            Requirement::RolesAll => "roles_all".into(),
            Requirement::ScopesAny => "scopes_any".into(),
            Requirement::ClientApps => "client_apps".into(),
            Requirement::Tenants => "tenants".into(),
            Requirement::Principals => "principals".into(),
            Requirement::GroupsAny => "groups_any".into(),
            Requirement::Issuers => "issuers".into(),
            Requirement::Claim(name) => format!("claims.{name}"),
        }
    }

    /// The 403 `error_description`: generic, naming the kind of requirement only.
    pub fn description(&self) -> &'static str {
        match self {
            Requirement::RolesAny | Requirement::RolesAll => "a required role is missing",
            Requirement::ScopesAny => "a required scope is missing",
            Requirement::ClientApps => "the calling application is not allowed",
            Requirement::Tenants => "the tenant is not allowed",
            Requirement::Principals => "the caller is not allowed",
            Requirement::GroupsAny => "a required group is missing",
            Requirement::Issuers => "the token issuer is not allowed on this route",
            Requirement::Claim(_) => "a required claim value is missing",
        }
    }
}

/// The result of one requirement.
#[derive(Clone, Debug)]
pub struct Check<'r> {
    /// Which requirement.
    pub requirement: Requirement<'r>,
    /// The values the route asks for.
    pub wanted: &'r [String],
    /// Whether the token meets it.
    pub passed: bool,
}

/// Every requirement of a route, checked against one token.
#[derive(Clone, Debug, Default)]
pub struct Evaluation<'r> {
    /// The checks, in the order the README's `[[routes]]` table lists the requirements
    /// (`roles_any`, `roles_all`, `scopes_any`, `client_apps`, `tenants`, `principals`,
    /// `groups_any`, `issuers`, then each of `claims`).
    pub checks: Vec<Check<'r>>,
}

impl<'r> Evaluation<'r> {
    /// The first requirement that failed.
    pub fn first_failure(&self) -> Option<&Check<'r>> {
        self.checks.iter().find(|c| !c.passed)
    }
}

/// Where `groups_any` looks for the caller's groups.
#[derive(Clone, Copy, Debug)]
pub enum GroupSource<'g> {
    /// The token's `groups` claim.
    Claim,
    /// The caller's groups resolved with Microsoft Graph (an overage token).
    Resolved(&'g super::groups::GroupSet),
    /// Not known: an overage token whose groups were not (or could not be) resolved. Fails.
    Unknown,
}

/// Checks every requirement of `route` against a verified token's claims and issuer name,
/// with `groups` saying where the caller's groups are. Every requirement is evaluated (not
/// only up to the first failure) so the decision can be shown whole.
pub fn evaluate<'r>(
    route: &'r Route,
    claims: &Claims,
    issuer: &str,
    groups: GroupSource<'_>,
) -> Evaluation<'r> {
    let q = &route.require;
    let mut checks = Vec::new();
    let mut check = |requirement, wanted: &'r [String], passed: &dyn Fn(&'r [String]) -> bool| {
        if !wanted.is_empty() {
            checks.push(Check {
                requirement,
                wanted,
                passed: passed(wanted),
            });
        }
    };
    check(Requirement::RolesAny, &q.roles_any, &|w| {
        claims.roles().any(|r| w.iter().any(|x| x == r))
    });
    check(Requirement::RolesAll, &q.roles_all, &|w| {
        w.iter().all(|x| claims.roles().any(|r| r == x))
    });
    check(Requirement::ScopesAny, &q.scopes_any, &|w| {
        claims.scopes().any(|s| w.iter().any(|x| x == s))
    });
    check(Requirement::ClientApps, &q.client_apps, &|w| {
        claims
            .client_app()
            .is_some_and(|a| w.iter().any(|x| x == a))
    });
    // Tenant ids are GUIDs; compare them the way Entra does, ignoring case.
    check(Requirement::Tenants, &q.tenants, &|w| {
        claims
            .tenant()
            .is_some_and(|t| w.iter().any(|x| x.eq_ignore_ascii_case(t)))
    });
    check(Requirement::Principals, &q.principals, &|w| {
        claims
            .object_id()
            .is_some_and(|o| w.iter().any(|x| x.eq_ignore_ascii_case(o)))
    });
    // Group object ids are GUIDs: compared ignoring case, as Entra does.
    check(Requirement::GroupsAny, &q.groups_any, &|w| match groups {
        GroupSource::Claim => claims
            .strings("groups")
            .any(|g| w.iter().any(|x| x.eq_ignore_ascii_case(g))),
        GroupSource::Resolved(set) => w.iter().any(|x| set.contains(x)),
        GroupSource::Unknown => false,
    });
    check(Requirement::Issuers, &q.issuers, &|w| {
        w.iter().any(|x| x == issuer)
    });
    for (name, allowed) in &q.claims {
        check(Requirement::Claim(name), allowed, &|w| {
            claims.matches(name, w)
        });
    }
    Evaluation { checks }
}

/// The routes of one configuration, in file order, each with its metric series.
#[derive(Debug, Default)]
pub struct Routes {
    routes: Vec<Route>,
    series: Vec<RouteSeries>,
}

impl Routes {
    /// Takes the validated routes as they are; they are already in matching form.
    pub fn new(routes: Vec<Route>) -> Self {
        let series = routes.iter().map(|_| RouteSeries::default()).collect();
        Routes { routes, series }
    }

    /// The first route covering `method` on `path` (a normalised match key), if any.
    #[inline]
    pub fn find(&self, method: &Method, path: &str) -> Option<&Route> {
        self.find_with_series(method, path).map(|(route, _)| route)
    }

    /// [`Routes::find`], with the route's metric series.
    #[inline]
    pub fn find_with_series(&self, method: &Method, path: &str) -> Option<(&Route, &RouteSeries)> {
        self.routes.iter().zip(&self.series).find(|(r, _)| {
            r.path.matches(path, r.case_insensitive)
                && r.methods.as_ref().is_none_or(|m| m.contains(method))
        })
    }

    /// Every route, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Mode, PathMatch, Position, Requirements};

    fn requiring(require: Requirements) -> Route {
        Route {
            require,
            ..route("r", PathMatch::Prefix("/".into()), None, false)
        }
    }

    fn claims(json: &str) -> Claims {
        Claims::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn each_requirement_met_and_unmet() {
        let token = claims(
            r#"{"roles":["reader","writer"],"scp":"orders.read profile","azp":"app-1","tid":"AAAA","oid":"user-1","azpacr":"2","groups":["g1","g2"]}"#,
        );
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let cases: Vec<(Requirements, bool)> = vec![
            (Requirements::default(), true),
            (
                Requirements {
                    roles_any: s(&["admin", "writer"]),
                    ..Default::default()
                },
                true,
            ),
            (
                Requirements {
                    roles_any: s(&["admin"]),
                    ..Default::default()
                },
                false,
            ),
            (
                Requirements {
                    roles_all: s(&["reader", "writer"]),
                    ..Default::default()
                },
                true,
            ),
            (
                Requirements {
                    roles_all: s(&["reader", "admin"]),
                    ..Default::default()
                },
                false,
            ),
            (
                Requirements {
                    scopes_any: s(&["orders.read"]),
                    ..Default::default()
                },
                true,
            ),
            (
                Requirements {
                    scopes_any: s(&["orders"]),
                    ..Default::default()
                },
                false,
            ),
            (
                Requirements {
                    client_apps: s(&["app-1"]),
                    ..Default::default()
                },
                true,
            ),
            (
                Requirements {
                    client_apps: s(&["app-2"]),
                    ..Default::default()
                },
                false,
            ),
            (
                Requirements {
                    tenants: s(&["aaaa"]),
                    ..Default::default()
                },
                true,
            ),
            (
                Requirements {
                    tenants: s(&["bbbb"]),
                    ..Default::default()
                },
                false,
            ),
            (
                Requirements {
                    principals: s(&["user-1"]),
                    ..Default::default()
                },
                true,
            ),
            (
                Requirements {
                    principals: s(&["user-2"]),
                    ..Default::default()
                },
                false,
            ),
            (
                Requirements {
                    issuers: s(&["entra"]),
                    ..Default::default()
                },
                true,
            ),
            (
                Requirements {
                    issuers: s(&["other"]),
                    ..Default::default()
                },
                false,
            ),
            (
                Requirements {
                    claims: vec![("azpacr".into(), s(&["2"]))],
                    ..Default::default()
                },
                true,
            ),
            (
                Requirements {
                    claims: vec![("azpacr".into(), s(&["0", "1"]))],
                    ..Default::default()
                },
                false,
            ),
            (
                Requirements {
                    claims: vec![("groups".into(), s(&["g2"]))],
                    ..Default::default()
                },
                true,
            ),
            (
                Requirements {
                    claims: vec![("missing".into(), s(&["x"]))],
                    ..Default::default()
                },
                false,
            ),
            (
                Requirements {
                    groups_any: s(&["G2", "g9"]),
                    ..Default::default()
                },
                true,
            ),
            (
                Requirements {
                    groups_any: s(&["g9"]),
                    ..Default::default()
                },
                false,
            ),
        ];
        for (require, allowed) in cases {
            let route = requiring(require.clone());
            let evaluation = evaluate(&route, &token, "entra", GroupSource::Claim);
            assert_eq!(evaluation.first_failure().is_none(), allowed, "{require:?}");
        }
    }

    #[test]
    fn v1_appid_and_every_check_recorded() {
        let token = claims(r#"{"appid":"v1-app","roles":[]}"#);
        let route = requiring(Requirements {
            roles_any: vec!["x".into()],
            client_apps: vec!["v1-app".into()],
            ..Default::default()
        });
        let d = evaluate(&route, &token, "entra", GroupSource::Claim);
        assert_eq!(d.checks.len(), 2);
        assert!(!d.checks[0].passed && d.checks[1].passed);
        assert_eq!(
            d.first_failure().unwrap().requirement.description(),
            "a required role is missing"
        );
    }

    #[test]
    fn groups_any_reads_the_claim_the_resolved_set_or_fails_unknown() {
        let route = requiring(Requirements {
            groups_any: vec!["AAAA-1".into()],
            ..Default::default()
        });
        let overage = claims(r#"{"_claim_names":{"groups":"src1"},"groups":["aaaa-1"]}"#);
        let passed = |source| {
            evaluate(&route, &overage, "entra", source)
                .first_failure()
                .is_none()
        };
        assert!(passed(GroupSource::Claim));
        assert!(!passed(GroupSource::Unknown));
        let set = crate::inbound::groups::GroupSet::new(vec!["x".into(), "aaaa-1".into()]);
        assert!(passed(GroupSource::Resolved(&set)));
        let other = crate::inbound::groups::GroupSet::new(vec!["x".into()]);
        assert!(!passed(GroupSource::Resolved(&other)));
    }

    fn route(name: &str, path: PathMatch, methods: Option<Vec<Method>>, ci: bool) -> Route {
        Route {
            name: name.into(),
            position: Position::default(),
            path,
            methods,
            case_insensitive: ci,
            allow_anonymous: false,
            require: Requirements::default(),
            mode: Mode::Enforce,
            unauthenticated: Default::default(),
        }
    }

    #[test]
    fn first_match_wins_on_path_and_method() {
        let routes = Routes::new(vec![
            route("health", PathMatch::Exact("/healthz".into()), None, false),
            route(
                "admin-write",
                PathMatch::Prefix("/admin".into()),
                Some(vec![Method::POST, Method::DELETE]),
                false,
            ),
            route("legacy", PathMatch::Prefix("/Legacy".into()), None, true),
            route("api", PathMatch::Prefix("/api".into()), None, false),
        ]);
        let find = |m: Method, p: &str| routes.find(&m, p).map(|r| r.name.as_str());
        assert_eq!(find(Method::GET, "/healthz"), Some("health"));
        assert_eq!(find(Method::GET, "/healthz/x"), None);
        assert_eq!(find(Method::POST, "/admin/users"), Some("admin-write"));
        assert_eq!(find(Method::GET, "/admin/users"), None);
        assert_eq!(find(Method::POST, "/administrator"), None);
        assert_eq!(find(Method::GET, "/LEGACY/x"), Some("legacy"));
        assert_eq!(find(Method::GET, "/api"), Some("api"));
        assert_eq!(find(Method::GET, "/API"), None);
    }

    #[test]
    fn trailing_slashes_are_not_significant() {
        let routes = Routes::new(vec![
            route("exact", PathMatch::Exact("/x".into()), None, false),
            route("exact-slash", PathMatch::Exact("/y/".into()), None, false),
            route(
                "prefix-slash",
                PathMatch::Prefix("/admin/".into()),
                None,
                false,
            ),
            route("root", PathMatch::Exact("/".into()), None, false),
        ]);
        let find = |p: &str| routes.find(&Method::GET, p).map(|r| r.name.as_str());
        assert_eq!(find("/x"), Some("exact"));
        assert_eq!(find("/x/"), Some("exact"));
        assert_eq!(find("/x/a"), None);
        assert_eq!(find("/y"), Some("exact-slash"));
        assert_eq!(find("/y/"), Some("exact-slash"));
        assert_eq!(find("/admin"), Some("prefix-slash"));
        assert_eq!(find("/admin/"), Some("prefix-slash"));
        assert_eq!(find("/admin/a"), Some("prefix-slash"));
        assert_eq!(find("/administrator"), None);
        assert_eq!(find("/"), Some("root"));
    }

    #[test]
    fn miscased_known_methods_are_recognised() {
        let m = |s: &str| Method::from_bytes(s.as_bytes()).unwrap();
        for refused in ["get", "Get", "delete", "pAtch", "propfind", "Query"] {
            assert!(is_miscased_method(&m(refused)), "{refused}");
        }
        for allowed in [
            "GET", "DELETE", "PROPFIND", "PURGE", "purge", "Purge", "x-get",
        ] {
            assert!(!is_miscased_method(&m(allowed)), "{allowed}");
        }
    }
}
