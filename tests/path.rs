//! What is authorised is exactly what the backend serves: request paths and methods, end to
//! end over HTTP/1.1 and HTTP/2, and as property tests against each backend family's reading
//! of the path tollgate forwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::cell::RefCell;
use std::path::Path;

use http::Version;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use support::client::{Conn, raw_status};
use support::{Backend, TestProxy, raw, server};
use tollgate::config::{KNOWN_METHODS, Route};

const ISSUER: &str = r#"
[[issuers]]
name = "idp"
issuer = "https://idp.example.com/"
jwks_uri = "https://idp.example.com/keys"
audiences = ["api://test"]
"#;

/// `/public` and `/x` anonymous, `/admin` needs a token, `/exact` exactly, `/legacy` case
/// insensitive; nothing else is covered (403).
const ROUTES: &str = r#"
[[routes]]
prefix = "/public"
allow_anonymous = true

[[routes]]
prefix = "/x"
allow_anonymous = true

[[routes]]
prefix = "/admin"

[[routes]]
exact = "/exact"
allow_anonymous = true

[[routes]]
prefix = "/legacy"
case_insensitive = true
allow_anonymous = true
"#;

/// Strict routes before and after a weak one, all ignoring case: the table the property
/// tests hold every backend family to.
const STRICT_AND_WEAK: &str = r#"
[[routes]]
prefix = "/admin"
case_insensitive = true

[[routes]]
exact = "/private"
case_insensitive = true

[[routes]]
exact = "/$batch"
case_insensitive = true

[[routes]]
prefix = "/public"
case_insensitive = true
allow_anonymous = true

[[routes]]
prefix = "/"
"#;

/// A case-sensitive strict route before an anonymous catch-all: safe only for backends that
/// compare paths case-sensitively (`tollgate check` warns about it).
const CASE_SENSITIVE_STRICT: &str = r#"
[[routes]]
prefix = "/admin"

[[routes]]
exact = "/$batch"

[[routes]]
prefix = "/"
allow_anonymous = true
"#;

fn config(backend: &Backend, routes: &str) -> String {
    format!("{}{ISSUER}{routes}", server(backend.addr(), ""))
}

/// The validated routes of a table, in order.
fn table(routes: &str) -> Vec<Route> {
    let toml = format!(
        "{}{ISSUER}{routes}",
        server("127.0.0.1:1".parse().unwrap(), "")
    );
    tollgate::config::parse(&toml, Path::new("t.toml"), &|_| None)
        .unwrap()
        .config
        .routes
}

#[tokio::test]
async fn every_path_case_over_http1_and_http2() {
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&config(&backend, ROUTES)).await;
    // (request target, status, the path the backend must see, or None for nothing)
    let cases: &[(&str, u16, Option<&str>)] = &[
        ("/public/a", 200, Some("/public/a")),
        ("/admin/../x", 200, Some("/x")),
        ("/admin/../x/y", 200, Some("/x/y")),
        ("/public/../admin", 401, None),
        ("//admin", 401, None),
        ("///public//a", 200, Some("/public/a")),
        ("/public/%2e%2e/admin", 401, None),
        ("/public/%2E%2e/x", 200, Some("/x")),
        ("/public/.%2e/admin", 401, None),
        ("/public/./a/.", 200, Some("/public/a/")),
        ("/%70ublic/%61", 200, Some("/public/a")),
        ("/public/%7Euser", 200, Some("/public/~user")),
        ("/public/a%20b", 200, Some("/public/a%20b")),
        (
            "/public/%24metadata%2C%3a",
            200,
            Some("/public/$metadata,:"),
        ),
        ("/public/a%3bb", 200, Some("/public/a%3Bb")),
        ("/public/%2F", 400, None),
        ("/public/a%2fb", 400, None),
        ("/public/..%2Fadmin", 400, None),
        ("/public/%5C..%5Cadmin", 400, None),
        ("/public/%00", 400, None),
        ("/public/%0d%0aX-Injected:%201", 400, None),
        ("/public/%7f", 400, None),
        ("/public/%zz", 400, None),
        ("/public/%252e%252e/admin", 400, None),
        // Parameters are removed, so a segment of only parameters is merged away: Tomcat
        // serves `/;x/admin` as `/admin`, and so does the route table.
        ("/admin;x=1", 401, None),
        ("/admin;jsessionid=1/users", 401, None),
        ("/;x/admin/secret", 401, None),
        ("/;/admin", 401, None),
        ("/public/..;/admin", 401, None),
        ("/public;v=1/a", 200, Some("/public/a")),
        ("/;x/public;y/a;z", 200, Some("/public/a")),
        ("/administrator", 403, None),
        ("/publicity", 403, None),
        ("/Public/a", 403, None),
        ("/exact", 200, Some("/exact")),
        // The trailing-slash twin of an exact route: Express and ASP.NET Core serve both.
        ("/exact/", 200, Some("/exact/")),
        ("/exact/sub", 403, None),
        ("/LEGACY/Report", 200, Some("/LEGACY/Report")),
        ("/legacy/../admin", 401, None),
        ("/", 403, None),
        ("/../../etc/passwd", 403, None),
    ];
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let mut conn = Conn::open(proxy.addr, version).await;
        for &(target, status, forwarded) in cases {
            backend.clear();
            let reply = conn.send("GET", target, &[]).await;
            assert_eq!(
                reply.status.as_u16(),
                status,
                "{version:?} {target}: {}",
                reply.text()
            );
            match forwarded {
                Some(path) => assert_eq!(backend.only().path, path, "{version:?} {target}"),
                None => backend.assert_nothing_received(),
            }
            if status >= 400 {
                assert_eq!(reply.header("content-type"), Some("application/json"));
            }
        }
    }
}

/// The smaller walk-arounds: a strict exact route's trailing-slash twin, and `HEAD` under a
/// rule on `GET`, must not fall to an anonymous catch-all. (A refusal of a `HEAD` request keeps
/// its head and drops its body: over HTTP/2 a body would reset the stream.)
#[tokio::test]
async fn trailing_slash_twins_and_head_do_not_fall_through() {
    const RULES: &str = r#"
[[routes]]
exact = "/private"

[[routes]]
prefix = "/reports"
methods = ["GET"]

[[routes]]
prefix = "/"
allow_anonymous = true
"#;
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&config(&backend, RULES)).await;
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let mut conn = Conn::open(proxy.addr, version).await;
        for (method, target) in [
            ("GET", "/private/"),
            ("GET", "/private"),
            ("HEAD", "/reports/q1"),
            ("GET", "/reports/q1"),
        ] {
            let reply = conn.send(method, target, &[]).await;
            assert_eq!(reply.status, 401, "{version:?} {method} {target}");
            backend.assert_nothing_received();
        }
        let reply = conn.send("HEAD", "/elsewhere", &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(backend.only().method, "HEAD");
        backend.clear();
    }
}

#[tokio::test]
async fn raw_backslash_and_control_characters_are_refused() {
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&config(&backend, ROUTES)).await;
    for target in ["/public\\..\\admin", "/public/a\tb"] {
        let response = raw(
            proxy.addr,
            format!("GET {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(raw_status(&response), 400, "{target:?}: {response}");
    }
    backend.assert_nothing_received();
}

#[tokio::test]
async fn query_is_left_alone_and_never_authorises() {
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&config(&backend, ROUTES)).await;
    // A query that looks like a path changes nothing about routing.
    let reply = proxy.get("/x?next=/admin/../%2F&a=%00").await;
    assert_eq!(reply.status, 200);
    let seen = backend.only();
    assert_eq!(seen.path, "/x");
    assert_eq!(seen.query.as_deref(), Some("next=/admin/../%2F&a=%00"));
    backend.clear();
    assert_eq!(proxy.get("/admin?/public").await.status, 401);
    backend.assert_nothing_received();
}

#[tokio::test]
async fn absolute_form_targets_are_normalised_too() {
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&config(&backend, ROUTES)).await;
    let reply = support::get(proxy.addr, "http://example.com/public/../admin", &[]).await;
    assert_eq!(reply.status, 401);
    backend.assert_nothing_received();
    let reply = support::get(proxy.addr, "http://example.com//x/./y", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(backend.only().path, "/x/y");
}

/// How common backends read the path they receive, each from its documented rule: the
/// property tests check that every reading of a forwarded path falls under the route that
/// authorised it.
mod families {
    use percent_encoding::percent_decode_str;

    /// A backend family: its reading of a request path, and whether it routes ignoring case.
    pub struct Family {
        pub name: &'static str,
        /// The path it routes on; `None` when it refuses the request.
        pub read: fn(&str) -> Option<String>,
        pub ignores_case: bool,
    }

    pub const ALL: [Family; 6] = [
        Family {
            name: "Tomcat / Spring",
            read: tomcat,
            ignores_case: false,
        },
        Family {
            name: "ASP.NET Core / IIS",
            read: aspnet,
            ignores_case: true,
        },
        Family {
            name: "Express",
            read: express,
            ignores_case: true,
        },
        Family {
            name: "Django / Flask",
            read: wsgi,
            ignores_case: false,
        },
        Family {
            name: "Go net/http",
            read: go,
            ignores_case: false,
        },
        Family {
            name: "nginx",
            read: nginx,
            ignores_case: false,
        },
    ];

    /// Tomcat 9+ (`CoyoteAdapter.postParseRequest`): `parsePathParameters` removes each
    /// segment's `;` parameters from the undecoded path; the path is then decoded (an encoded
    /// `/` or `\` is refused: `encodedSolidusHandling="reject"`), and `normalize` merges `//`
    /// and resolves `.` and `..`, refusing to climb above the root. Spring MVC and Spring
    /// Security read the same path (`UrlPathHelper.removeSemicolonContent`), case-sensitively;
    /// before 6.0 Spring also served `/a/` from `/a`'s handler (`useTrailingSlashMatch`).
    fn tomcat(raw: &str) -> Option<String> {
        let without_params: Vec<&str> = raw
            .split('/')
            .map(|s| s.split(';').next().unwrap_or_default())
            .collect();
        let path = without_params.join("/");
        let upper = path.to_ascii_uppercase();
        if upper.contains("%2F") || upper.contains("%5C") {
            return None;
        }
        resolve(&decode(&path), true)
    }

    /// ASP.NET Core (Kestrel's `PathNormalizer`): every escape but `%2F` is decoded and dot
    /// segments are removed; endpoint routing compares segments ignoring case, with an
    /// optional trailing slash. IIS in front of it reads `\` as `/`.
    fn aspnet(raw: &str) -> Option<String> {
        let decoded: Vec<String> = raw
            .split("%2F")
            .flat_map(|s| s.split("%2f"))
            .map(decode)
            .collect();
        resolve(&decoded.join("%2F").replace('\\', "/"), false)
    }

    /// Express 4 (`router/layer.js`; path-to-regexp 0.1 with `sensitive: false, strict:
    /// false`): routes match the path as received, undecoded, ignoring case, with an optional
    /// trailing slash; route parameters are decoded only after matching.
    fn express(raw: &str) -> Option<String> {
        Some(raw.to_owned())
    }

    /// Django and Flask (WSGI, PEP 3333): `PATH_INFO` is the path decoded once, and URL
    /// patterns compare it case-sensitively. A missing trailing slash is redirected, not
    /// served (`APPEND_SLASH`, Werkzeug's `strict_slashes`).
    fn wsgi(raw: &str) -> Option<String> {
        Some(decode(raw))
    }

    /// Go `net/http` (`ServeMux`): `URL.Path` is the path decoded once; a path that is not
    /// clean (`path.Clean`: `//`, `.`, `..`) is redirected to its clean form, which is then
    /// what is served. Case-sensitive.
    fn go(raw: &str) -> Option<String> {
        resolve(&decode(raw), true)
    }

    /// nginx (`ngx_http_parse_complex_uri`, `merge_slashes on` by default): `$uri` is the path
    /// decoded, with `.` and `..` resolved and `//` merged; locations compare it
    /// case-sensitively (on Linux).
    fn nginx(raw: &str) -> Option<String> {
        resolve(&decode(raw), true)
    }

    fn decode(raw: &str) -> String {
        percent_decode_str(raw).decode_utf8_lossy().into_owned()
    }

    /// Resolves `.` and `..` (RFC 3986 §5.2.4), merging empty segments when `merge` is set;
    /// `None` when `..` would climb above the root (servers refuse that).
    fn resolve(path: &str, merge: bool) -> Option<String> {
        let mut out: Vec<&str> = Vec::new();
        let pieces: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
        let last = pieces.len() - 1;
        let mut trailing = false;
        for (i, piece) in pieces.into_iter().enumerate() {
            trailing = false;
            match piece {
                "." => trailing = true,
                ".." => {
                    out.pop()?;
                    trailing = true;
                }
                "" if merge || i == last => trailing = true,
                _ => out.push(piece),
            }
        }
        let mut resolved = format!("/{}", out.join("/"));
        if trailing && resolved.len() > 1 {
            resolved.push('/');
        }
        Some(resolved)
    }
}

/// The first route of `routes` covering `path` for a backend that does or does not ignore
/// case: the route whose rules the backend's reading of the path falls under.
fn route_for<'r>(routes: &'r [Route], path: &str, ignores_case: bool) -> Option<&'r str> {
    routes
        .iter()
        .find(|r| r.path.matches(path, r.case_insensitive || ignores_case))
        .map(|r| r.name.as_str())
}

/// Fails unless every family's reading of `forwarded` falls under the route tollgate matched
/// it with (families that ignore case only when `case_free` says the table allows it).
fn every_family_agrees(
    routes: &[Route],
    forwarded: &str,
    case_free: bool,
) -> Result<(), TestCaseError> {
    let decided = route_for(routes, forwarded, false);
    for family in &families::ALL {
        if family.ignores_case && !case_free {
            continue;
        }
        let Some(reading) = (family.read)(forwarded) else {
            continue;
        };
        let served = route_for(routes, &reading, family.ignores_case);
        prop_assert_eq!(
            served,
            decided,
            "{} reads {:?} as {:?}",
            family.name,
            forwarded,
            reading
        );
    }
    Ok(())
}

/// Request paths from a hostile alphabet: dot segments plain and encoded, parameters in every
/// position, encoded separators and percent signs, case variants, empty segments.
fn hostile_path() -> impl Strategy<Value = String> {
    const ATOMS: &[&str] = &[
        "admin", "ADMIN", "aDmIn", "%61dmin", "%41DMIN", "private", "PRIVATE", "public", "PUBLIC",
        "pub%6cic", "x", "", ".", "..", "%2e", "%2E", "%2e%2e", ".%2e", ";", ";x", ";x=1", "=",
        "%3b", "%3B", "%2f", "%5c", "%25", "%252e", "%2541", "%20", "~", "%7e", "%24", "$", ":",
        "%3A", "$batch", "%24batch", "%24BATCH", "%C3%A9", "%00",
    ];
    let segment = prop::collection::vec(prop::sample::select(ATOMS), 0..3).prop_map(|a| a.concat());
    (
        prop::collection::vec(segment, 1..6),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(segments, doubled)| {
            let lead = if doubled { "//" } else { "/" };
            format!("{lead}{}", segments.join("/"))
        })
}

#[test]
fn every_backend_family_reads_a_normalised_path_as_it_was_matched() {
    let tables = [
        (table(STRICT_AND_WEAK), true),
        (table(CASE_SENSITIVE_STRICT), false),
    ];
    let mut runner = TestRunner::new(support::client::proptest_config(4096));
    runner
        .run(&hostile_path(), |raw| {
            let Ok(forwarded) = tollgate::path::normalise(&raw) else {
                return Ok(());
            };
            // Normalising is idempotent: a path forwarded twice (tollgate behind tollgate)
            // is read the same both times.
            prop_assert_eq!(
                tollgate::path::normalise(&forwarded).ok(),
                Some(forwarded.clone())
            );
            for (routes, case_free) in &tables {
                every_family_agrees(routes, &forwarded, *case_free)?;
            }
            Ok(())
        })
        .unwrap();
}

/// The same property end to end: generated paths sent anonymously over HTTP/1.1 and HTTP/2,
/// to a weak route between strict ones and to a weak catch-all behind a strict route. A
/// request is forwarded only by the weak route, the backend receives exactly the path that
/// was matched, every family reads it under that route, and a refusal forwards nothing.
#[test]
fn forwarded_paths_are_covered_by_the_route_that_authorised_them() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tables = [
        (STRICT_AND_WEAK, true, "/public"),
        (CASE_SENSITIVE_STRICT, false, "/"),
    ];
    for (toml, case_free, weak) in tables {
        let backend = rt.block_on(Backend::start());
        let proxy = rt.block_on(TestProxy::start(&config(&backend, toml)));
        let routes = table(toml);
        for version in [Version::HTTP_11, Version::HTTP_2] {
            let conn = RefCell::new(rt.block_on(Conn::open(proxy.addr, version)));
            let mut runner = TestRunner::new(support::client::proptest_config(128));
            runner
                .run(&hostile_path(), |raw| {
                    backend.clear();
                    let reply = rt.block_on(conn.borrow_mut().send("GET", &raw, &[]));
                    let status = reply.status.as_u16();
                    let Ok(normalised) = tollgate::path::normalise(&raw) else {
                        prop_assert_eq!(status, 400, "{:?} {}", version, raw);
                        prop_assert_eq!(backend.count(), 0);
                        return Ok(());
                    };
                    if route_for(&routes, &normalised, false) != Some(weak) {
                        prop_assert_eq!(status, 401, "{:?} {}", version, raw);
                        prop_assert_eq!(backend.count(), 0);
                        return Ok(());
                    }
                    prop_assert_eq!(status, 200, "{:?} {}", version, raw);
                    let seen = backend.seen();
                    prop_assert_eq!(seen.len(), 1);
                    prop_assert_eq!(&seen[0].path, &normalised);
                    every_family_agrees(&routes, &seen[0].path, case_free)
                })
                .unwrap();
        }
    }
}

/// Methods in every spelling over both protocols, against a rule on the writing methods
/// before an anonymous catch-all: a forwarded request's method, as a backend that upper-cases
/// methods reads it, is never one the strict rule names; a known method spelled in another
/// case is refused; extension methods pass as they are.
#[test]
fn method_spellings_never_skip_a_method_rule() {
    const RULES: &str = r#"
[[routes]]
prefix = "/admin"
methods = ["POST", "PUT", "PATCH", "DELETE"]

[[routes]]
prefix = "/reports"
methods = ["GET"]

[[routes]]
prefix = "/"
allow_anonymous = true
"#;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let backend = rt.block_on(Backend::start());
    let proxy = rt.block_on(TestProxy::start(&config(&backend, RULES)));
    let names = KNOWN_METHODS
        .iter()
        .chain(&["PURGE", "BAN", "LINK", "X-CUSTOM"])
        .filter(|m| !matches!(**m, "CONNECT"));
    let method = (
        prop::sample::select(names.copied().collect::<Vec<_>>()),
        prop::collection::vec(any::<bool>(), 12),
        prop::sample::select(vec!["/admin/users", "/reports/q1", "/other"]),
    )
        .prop_map(|(name, lower, path)| {
            let spelled: String = name
                .chars()
                .zip(lower.iter().cycle())
                .map(|(c, &l)| if l { c.to_ascii_lowercase() } else { c })
                .collect();
            (name, spelled, path)
        });
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let conn = RefCell::new(rt.block_on(Conn::open(proxy.addr, version)));
        let mut runner = TestRunner::new(support::client::proptest_config(160));
        runner
            .run(&method, |(name, spelled, path)| {
                backend.clear();
                let reply = rt.block_on(conn.borrow_mut().send(&spelled, path, &[]));
                let status = reply.status.as_u16();
                let known = KNOWN_METHODS.contains(&name);
                let strict = match path {
                    "/admin/users" => ["POST", "PUT", "PATCH", "DELETE"].contains(&name),
                    "/reports/q1" => ["GET", "HEAD"].contains(&name),
                    _ => false,
                };
                if known && spelled != name {
                    prop_assert_eq!(status, 400, "{:?} {} {}", version, spelled, path);
                } else if strict {
                    prop_assert_eq!(status, 401, "{:?} {} {}", version, spelled, path);
                } else {
                    prop_assert_eq!(status, 200, "{:?} {} {}", version, spelled, path);
                    let seen = backend.seen();
                    prop_assert_eq!(seen.len(), 1);
                    prop_assert_eq!(&seen[0].method, &spelled);
                    return Ok(());
                }
                prop_assert_eq!(backend.count(), 0);
                Ok(())
            })
            .unwrap();
    }
}
