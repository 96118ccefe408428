//! Which target a request is for: by `host` (the `Host` header, or the authority of an
//! absolute-form URI, as a client using `HTTP_PROXY` sends), else by the path prefix
//! `/<name>`, which is then stripped.

use http::Uri;

/// What a target is matched by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matcher {
    /// The target's name: path prefix `/<name>`.
    pub name: String,
    /// The host it also answers for, lower-case.
    pub host: Option<String>,
}

/// The index of the target `uri` (and the `Host` header) asks for, and the path to forward.
/// A host match forwards the path unchanged; a prefix match strips `/<name>`.
pub fn select<'u>(
    matchers: &[Matcher],
    uri: &'u Uri,
    host_header: Option<&str>,
) -> Option<(usize, &'u str)> {
    // An absolute-form URI's authority overrides Host (RFC 9112 §3.2.2).
    let host = uri.host().or_else(|| host_header.map(strip_port));
    if let Some(host) = host {
        let found = matchers.iter().position(|m| {
            m.host
                .as_deref()
                .is_some_and(|h| h.eq_ignore_ascii_case(host))
        });
        if let Some(i) = found {
            return Some((i, uri.path()));
        }
    }
    let path = uri.path();
    let rest = path.strip_prefix('/')?;
    let (first, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &path[i + 1..]),
        None => (rest, "/"),
    };
    let i = matchers.iter().position(|m| m.name == first)?;
    Some((i, tail))
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
        type Case<'a> = (&'a str, Option<&'a str>, Option<(usize, &'a str)>);
        let cases: [Case; 13] = [
            ("/integration/orders?x=1", None, Some((0, "/orders"))),
            ("/integration", None, Some((0, "/"))),
            ("/integration/", None, Some((0, "/"))),
            (
                "/graph/v1.0/me",
                Some("127.0.0.1:15001"),
                Some((1, "/v1.0/me")),
            ),
            ("/integrationx/a", None, None),
            ("/other/a", None, None),
            ("/", None, None),
            // By Host: the path is kept whole.
            (
                "/orders",
                Some("integration.internal"),
                Some((0, "/orders")),
            ),
            (
                "/orders",
                Some("Integration.Internal:80"),
                Some((0, "/orders")),
            ),
            (
                "/graph/x",
                Some("integration.internal"),
                Some((0, "/graph/x")),
            ),
            // Absolute form (HTTP_PROXY): the URI's host wins over Host.
            (
                "http://integration.internal/orders",
                Some("elsewhere"),
                Some((0, "/orders")),
            ),
            (
                "http://elsewhere/graph/x",
                Some("integration.internal"),
                Some((1, "/x")),
            ),
            ("http://elsewhere/orders", None, None),
        ];
        for (target, host, want) in cases {
            let uri: Uri = target.parse().unwrap();
            assert_eq!(select(&m, &uri, host), want, "{target} host={host:?}");
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
