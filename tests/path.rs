//! Path normalisation end to end: what is authorised is exactly what the backend serves.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::client::raw_status;
use support::{Backend, TestProxy, get, raw, server};

/// `/public` and `/x` anonymous, `/admin` needs a token, `/exact` exactly, `/legacy` case
/// insensitive; nothing else is covered (403).
fn routes(backend: &Backend) -> String {
    let mut toml = server(backend.addr(), "");
    toml.push_str(
        r#"
[[issuers]]
name = "idp"
issuer = "https://idp.example.com/"
jwks_uri = "https://idp.example.com/keys"
audiences = ["api://test"]

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
"#,
    );
    toml
}

#[tokio::test]
async fn every_path_case() {
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&routes(&backend)).await;
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
        ("/public/%2F", 400, None),
        ("/public/a%2fb", 400, None),
        ("/public/..%2Fadmin", 400, None),
        ("/public/%5C..%5Cadmin", 400, None),
        ("/public/%00", 400, None),
        ("/public/%0d%0aX-Injected:%201", 400, None),
        ("/public/%7f", 400, None),
        ("/public/%zz", 400, None),
        ("/admin;x=1", 401, None),
        ("/admin;jsessionid=1/users", 401, None),
        ("/public/..;/admin", 401, None),
        ("/public;v=1/a", 200, Some("/public;v=1/a")),
        ("/administrator", 403, None),
        ("/publicity", 403, None),
        ("/Public/a", 403, None),
        ("/exact", 200, Some("/exact")),
        ("/exact/", 403, None),
        ("/exact/sub", 403, None),
        ("/LEGACY/Report", 200, Some("/LEGACY/Report")),
        ("/legacy/../admin", 401, None),
        ("/", 403, None),
        ("/../../etc/passwd", 403, None),
    ];
    for &(target, status, forwarded) in cases {
        backend.clear();
        let reply = get(proxy.addr, target, &[]).await;
        assert_eq!(reply.status.as_u16(), status, "{target}: {}", reply.text());
        match forwarded {
            Some(path) => assert_eq!(backend.only().path, path, "{target}"),
            None => backend.assert_nothing_received(),
        }
        if status >= 400 {
            assert_eq!(
                reply.header("content-type"),
                Some("application/json"),
                "{target}"
            );
        }
    }
}

#[tokio::test]
async fn raw_backslash_and_control_characters_are_refused() {
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&routes(&backend)).await;
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
    let proxy = TestProxy::start(&routes(&backend)).await;
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
    let proxy = TestProxy::start(&routes(&backend)).await;
    let reply = get(proxy.addr, "http://example.com/public/../admin", &[]).await;
    assert_eq!(reply.status, 401);
    backend.assert_nothing_received();
    let reply = get(proxy.addr, "http://example.com//x/./y", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(backend.only().path, "/x/y");
}
