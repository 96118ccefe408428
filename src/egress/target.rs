//! Which target a request is for: by `host` (the `Host` header, or the authority of an
//! absolute-form URI, as a client using `HTTP_PROXY` sends), else by the path prefix
//! `/<name>`, which is then stripped.
//!
//! A request that names a host, in its `Host` or its URI, is for that host: it is sent to the
//! target whose `host` it is, and to nothing else. Only a request addressed to the egress
//! listener itself (a loopback address, `localhost`, or no host at all) is matched by path
//! prefix. Otherwise `http://attacker.example/graph/...` through `HTTP_PROXY` would reach
//! the `graph` target with its token.

use http::Uri;

/// What a target is matched by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matcher {
    /// The target's name: path prefix `/<name>`.
    pub name: String,
    /// The host it also answers for, lower-case.
    pub host: Option<String>,
}

/// Why no target was selected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoTarget {
    /// The request is addressed to the listener, and no target has its first segment as name.
    UnknownPrefix,
    /// The request names a host that is neither the listener nor any target's `host`.
    UnknownHost,
}

/// The index of the target a request asks for, and the path to forward: the request's
/// (normalised) path for a host match, the rest after `/<name>` for a prefix match.
/// `path` is the normalised request path; `uri` and `host_header` say where it is addressed.
pub fn select<'p>(
    matchers: &[Matcher],
    uri: &Uri,
    host_header: Option<&str>,
    path: &'p str,
) -> Result<(usize, &'p str), NoTarget> {
    // An absolute-form URI's authority overrides Host (RFC 9112 §3.2.2).
    let host = uri.host().or_else(|| host_header.map(strip_port));
    if let Some(host) = host.filter(|h| !is_listener(h)) {
        let found = matchers.iter().position(|m| {
            m.host
                .as_deref()
                .is_some_and(|h| h.eq_ignore_ascii_case(host))
        });
        return found.map(|i| (i, path)).ok_or(NoTarget::UnknownHost);
    }
    let rest = path.strip_prefix('/').ok_or(NoTarget::UnknownPrefix)?;
    let (first, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &path[i + 1..]),
        None => (rest, "/"),
    };
    let i = matchers
        .iter()
        .position(|m| m.name == first)
        .ok_or(NoTarget::UnknownPrefix)?;
    Ok((i, tail))
}

/// Whether a host names the egress listener itself: a loopback address or `localhost`. The
/// listener is meant for the app beside it, which calls it on loopback.
fn is_listener(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    literal
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// `api.internal:8080` → `api.internal`; `[::1]:80` → `[::1]`.
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matchers() -> Vec<Matcher> {
        vec![
            Matcher {
                name: "integration".into(),
                host: Some("integration.internal".into()),
            },
            Matcher {
                name: "graph".into(),
                host: None,
            },
        ]
    }

    #[test]
    fn selection_table() {
        let m = matchers();
        type Case<'a> = (&'a str, Option<&'a str>, Result<(usize, &'a str), NoTarget>);
        let cases: [Case; 19] = [
            ("/integration/orders?x=1", None, Ok((0, "/orders"))),
            ("/integration", None, Ok((0, "/"))),
            ("/integration/", None, Ok((0, "/"))),
            (
                "/graph/v1.0/me",
                Some("127.0.0.1:15001"),
                Ok((1, "/v1.0/me")),
            ),
            ("/graph/x", Some("localhost:15001"), Ok((1, "/x"))),
            ("/graph/x", Some("[::1]:15001"), Ok((1, "/x"))),
            ("/integrationx/a", None, Err(NoTarget::UnknownPrefix)),
            ("/other/a", None, Err(NoTarget::UnknownPrefix)),
            ("/", None, Err(NoTarget::UnknownPrefix)),
            // By Host: the path is kept whole.
            ("/orders", Some("integration.internal"), Ok((0, "/orders"))),
            (
                "/orders",
                Some("Integration.Internal:80"),
                Ok((0, "/orders")),
            ),
            (
                "/graph/x",
                Some("integration.internal"),
                Ok((0, "/graph/x")),
            ),
            // A host that is neither the listener nor a target's: never a prefix match.
            (
                "/graph/x",
                Some("attacker.example"),
                Err(NoTarget::UnknownHost),
            ),
            (
                "/graph/x",
                Some("10.0.0.1:15001"),
                Err(NoTarget::UnknownHost),
            ),
            // Absolute form (HTTP_PROXY): the URI's host wins over Host.
            (
                "http://integration.internal/orders",
                Some("elsewhere"),
                Ok((0, "/orders")),
            ),
            (
                "http://attacker.example/graph/v1.0/users",
                Some("127.0.0.1:15001"),
                Err(NoTarget::UnknownHost),
            ),
            (
                "http://elsewhere/graph/x",
                Some("integration.internal"),
                Err(NoTarget::UnknownHost),
            ),
            ("http://elsewhere/orders", None, Err(NoTarget::UnknownHost)),
            ("http://127.0.0.1:15001/graph/x", None, Ok((1, "/x"))),
        ];
        for (target, host, want) in cases {
            let uri: Uri = target.parse().unwrap();
            assert_eq!(
                select(&m, &uri, host, uri.path()),
                want,
                "{target} host={host:?}"
            );
        }
    }

    #[test]
    fn the_listener_is_loopback_or_localhost() {
        for host in [
            "127.0.0.1",
            "127.1.2.3",
            "[::1]",
            "localhost",
            "LOCALHOST.",
            "app.localhost",
            "[::ffff:127.0.0.1]",
        ] {
            assert!(is_listener(host), "{host}");
        }
        for host in [
            "10.0.0.1",
            "example.com",
            "localhost.example.com",
            "[::2]",
            "0.0.0.0",
            "",
        ] {
            assert!(!is_listener(host), "{host}");
        }
    }

    #[test]
    fn ports_are_stripped() {
        for (h, want) in [
            ("a:1", "a"),
            ("a", "a"),
            ("[::1]:80", "[::1]"),
            ("[::1]", "[::1]"),
        ] {
            assert_eq!(strip_port(h), want);
        }
    }
}
