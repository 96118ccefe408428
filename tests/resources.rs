//! Protected resource metadata (RFC 9728) and audience binding (RFC 8707), end to end: the
//! documents at their well-known paths (with and without a resource path, two resources on one
//! listener, 404 for any other), the `resource_metadata` and `scope` of the 401 and 403
//! challenges, built from the origin tollgate sees (a trusted proxy's, or the request's own),
//! and tokens bound to the resource their path belongs to. No refusal reaches the backend.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use http::Version;
use serde_json::json;
use support::client::Conn;
use support::issuer::{AUDIENCE, MockIssuer};
use support::{Backend, TestProxy, get, server};

const MCP: &str = "https://mcp.contoso.com/mcp";
const API: &str = "https://api.contoso.com";
const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// Routes and two resources: `/mcp` (a resource with a path, scopes, documentation) and `/api`
/// (a resource without a path); `/other` is a route no resource covers.
const ROUTES: &str = r#"
[[routes]]
prefix = "/mcp"
scopes_any = ["tools.read"]

[[routes]]
prefix = "/api"
roles_any = ["reader"]

[[routes]]
prefix = "/public"
allow_anonymous = true

[[routes]]
prefix = "/other"

[[resources]]
resource = "https://mcp.contoso.com/mcp"
prefix = "/mcp"
issuer = "idp"
scopes_supported = ["api://mcp/tools.read", "api://mcp/tools.write"]
resource_documentation = "https://contoso.com/docs/mcp"

[[resources]]
resource = "https://api.contoso.com"
prefix = "/api"
issuer = "idp"
"#;

async fn start(issuer: &MockIssuer, backend: &Backend, server_extra: &str) -> TestProxy {
    let toml = format!(
        "{}{}{ROUTES}",
        server(backend.addr(), server_extra),
        issuer.toml("idp", "")
    );
    let proxy = TestProxy::start(&toml).await;
    support::eventually("the issuer's keys are loaded", || async {
        proxy.admin_get("/readyz").await.status == 200
    })
    .await;
    proxy
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn each_resource_has_its_document_at_its_well_known_path() {
    let (issuer, backend) = (MockIssuer::start().await, Backend::start().await);
    let proxy = start(&issuer, &backend, "").await;

    let reply = proxy.get(&format!("{WELL_KNOWN}/mcp")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        reply.json(),
        json!({
            "resource": MCP,
            "authorization_servers": [issuer.iss()],
            "scopes_supported": ["api://mcp/tools.read", "api://mcp/tools.write"],
            "bearer_methods_supported": ["header"],
            "resource_documentation": "https://contoso.com/docs/mcp",
        })
    );
    // A resource without a path: the bare well-known path; no scopes, no documentation.
    let reply = proxy.get(WELL_KNOWN).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        json!({
            "resource": API,
            "authorization_servers": [issuer.iss()],
            "bearer_methods_supported": ["header"],
        })
    );
    // The path is read as every path is: normalised first.
    let reply = proxy
        .get("/.well-known/./oauth-protected-resource//m%63p")
        .await;
    assert_eq!(reply.json()["resource"], MCP);
    // No token needed, and a bad one changes nothing.
    let reply = get(
        proxy.addr,
        &format!("{WELL_KNOWN}/mcp"),
        &[("authorization", "Bearer not.a.token")],
    )
    .await;
    assert_eq!(reply.status, 200);

    let mut conn = Conn::open(proxy.addr, Version::HTTP_11).await;
    let head = conn.send("HEAD", &format!("{WELL_KNOWN}/mcp"), &[]).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let preflight = conn
        .send(
            "OPTIONS",
            &format!("{WELL_KNOWN}/mcp"),
            &[
                ("origin", "https://inspector.example"),
                ("access-control-request-headers", "mcp-protocol-version"),
            ],
        )
        .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    let post = conn.send("POST", &format!("{WELL_KNOWN}/mcp"), &[]).await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD, OPTIONS"));

    // Any other path under the well-known one is tollgate's too: 404, never forwarded.
    for path in [
        format!("{WELL_KNOWN}/other"),
        format!("{WELL_KNOWN}/mcp/deeper"),
        format!("{WELL_KNOWN}/MCP"),
        format!("{WELL_KNOWN}/api"),
    ] {
        let reply = proxy.get(&path).await;
        assert_eq!(reply.status, 404, "{path}");
        assert_eq!(reply.json()["error"], "not_found", "{path}");
    }
    backend.assert_nothing_received();
    assert_eq!(proxy.requests(WELL_KNOWN, "denied", "404"), 4);
    assert_eq!(proxy.requests(WELL_KNOWN, "anonymous", "200"), 5);
}

/// Without `[[resources]]`, the well-known path is the upstream's like any other: a backend
/// that publishes its own metadata keeps doing so.
#[tokio::test]
async fn without_resources_the_well_known_path_is_routed() {
    let (issuer, backend) = (MockIssuer::start().await, Backend::start().await);
    let toml = format!(
        "{}{}[[routes]]\nprefix = \"/.well-known\"\nallow_anonymous = true\n",
        server(backend.addr(), ""),
        issuer.toml("idp", "")
    );
    let proxy = TestProxy::start(&toml).await;
    let reply = proxy.get(&format!("{WELL_KNOWN}/mcp")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(backend.only().path, format!("{WELL_KNOWN}/mcp"));
}

#[tokio::test]
async fn every_401_on_a_covered_path_points_to_the_metadata() {
    let (issuer, backend) = (MockIssuer::start().await, Backend::start().await);
    let proxy = start(&issuer, &backend, "").await;
    let origin = format!("http://{}", proxy.addr);
    let expired = bearer(&issuer.token(json!({"exp": 1})));

    let reply = proxy.get("/mcp/tools").await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.header("www-authenticate"),
        Some(
            format!("Bearer realm=\"tollgate\", resource_metadata=\"{origin}{WELL_KNOWN}/mcp\"")
                .as_str()
        )
    );
    let reply = get(proxy.addr, "/mcp", &[("authorization", &expired)]).await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.header("www-authenticate"),
        Some(format!("Bearer realm=\"tollgate\", error=\"invalid_token\", error_description=\"token expired\", resource_metadata=\"{origin}{WELL_KNOWN}/mcp\"").as_str())
    );
    // The other resource's paths point to its document.
    let reply = proxy.get("/api/orders").await;
    assert_eq!(
        reply.header("www-authenticate"),
        Some(
            format!("Bearer realm=\"tollgate\", resource_metadata=\"{origin}{WELL_KNOWN}\"")
                .as_str()
        )
    );
    // A path no resource covers: RFC 6750 as before.
    let reply = proxy.get("/other").await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer realm=\"tollgate\"")
    );
    // /mcpx is not below /mcp (whole segments): no route, 403, no challenge.
    let reply = proxy.get("/mcpx").await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.header("www-authenticate"), None);
    backend.assert_nothing_received();
}

#[tokio::test]
async fn a_403_names_the_scopes_the_route_requires_as_the_resource_does() {
    let (issuer, backend) = (MockIssuer::start().await, Backend::start().await);
    let proxy = start(&issuer, &backend, "").await;
    let origin = format!("http://{}", proxy.addr);

    // `tools.read` in the route, `api://mcp/tools.read` in the resource's scopes_supported: the
    // client asks the authorization server for the latter.
    let writer = bearer(&issuer.token(json!({"scp": "tools.write"})));
    let reply = get(proxy.addr, "/mcp", &[("authorization", &writer)]).await;
    assert_eq!(reply.status, 403);
    assert_eq!(
        reply.header("www-authenticate"),
        Some(format!("Bearer realm=\"tollgate\", error=\"insufficient_scope\", error_description=\"a required scope is missing\", scope=\"api://mcp/tools.read\", resource_metadata=\"{origin}{WELL_KNOWN}/mcp\"").as_str())
    );
    // A route without scopes_any: no scope parameter.
    let guest = bearer(&issuer.token(json!({"roles": ["guest"]})));
    let reply = get(proxy.addr, "/api/orders", &[("authorization", &guest)]).await;
    assert_eq!(reply.status, 403);
    assert_eq!(
        reply.header("www-authenticate"),
        Some(format!("Bearer realm=\"tollgate\", error=\"insufficient_scope\", error_description=\"a required role is missing\", resource_metadata=\"{origin}{WELL_KNOWN}\"").as_str())
    );
    backend.assert_nothing_received();

    let reader = bearer(&issuer.token(json!({"scp": "tools.read"})));
    let reply = get(proxy.addr, "/mcp", &[("authorization", &reader)]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(backend.count(), 1);
}

#[tokio::test]
async fn a_token_for_a_covered_path_must_name_its_resource() {
    let (issuer, backend) = (MockIssuer::start().await, Backend::start().await);
    let proxy = start(&issuer, &backend, "").await;
    let token = |aud: &str, scp: &str| {
        bearer(&issuer.token(json!({"aud": aud, "scp": scp, "roles": ["reader"]})))
    };
    let bad_audience = || {
        proxy
            .metrics()
            .auth_failures
            .with_label_values(&["bad_audience"])
            .get()
    };
    let cases = [
        ("/mcp/tools", token(MCP, "tools.read"), 200),
        ("/mcp/tools", token(AUDIENCE, "tools.read"), 200),
        // In an array, one accepted value is enough.
        (
            "/mcp/tools",
            bearer(&issuer.token(json!({"aud": ["api://x", MCP], "scp": "tools.read"}))),
            200,
        ),
        ("/mcp/tools", token("api://other", "tools.read"), 401),
        // Another resource's token, or one for a longer URL, is not this one's.
        ("/mcp/tools", token(API, "tools.read"), 401),
        ("/mcp/tools", token(&format!("{MCP}/"), "tools.read"), 401),
        ("/api/orders", token(API, ""), 200),
        ("/api/orders", token(MCP, ""), 401),
        // Where no resource covers the path, the issuer's audiences alone.
        ("/other", token(AUDIENCE, ""), 200),
        ("/other", token(MCP, ""), 401),
    ];
    for (path, authorization, status) in &cases {
        let (before, seen) = (bad_audience(), backend.count());
        let reply = get(proxy.addr, path, &[("authorization", authorization)]).await;
        assert_eq!(reply.status, *status, "{path}: {}", reply.text());
        if *status == 401 {
            assert_eq!(
                reply.json()["error_description"],
                "token audience not accepted"
            );
            assert_eq!(
                bad_audience(),
                before + 1,
                "{path}: counted as bad_audience"
            );
            assert_eq!(backend.count(), seen, "{path}: refused, yet forwarded");
        } else {
            assert_eq!(backend.count(), seen + 1, "{path}: not forwarded");
        }
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_metadata_url_is_the_proxys_origin() {
    let (issuer, backend) = (MockIssuer::start().await, Backend::start().await);
    let forwarded = [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "MCP.contoso.com"),
    ];
    let challenge = |reply: &support::Reply| {
        reply
            .header("www-authenticate")
            .unwrap_or_default()
            .to_owned()
    };

    let trusted = start(&issuer, &backend, "trusted_proxies = [\"127.0.0.1/32\"]").await;
    let reply = get(trusted.addr, "/mcp", &forwarded).await;
    assert_eq!(
        challenge(&reply),
        format!(
            "Bearer realm=\"tollgate\", resource_metadata=\"https://mcp.contoso.com{WELL_KNOWN}/mcp\""
        )
    );

    // From anyone else the forwarding headers are not believed: the request's own origin.
    let direct = start(&issuer, &backend, "").await;
    let reply = get(direct.addr, "/mcp", &forwarded).await;
    assert_eq!(
        challenge(&reply),
        format!(
            "Bearer realm=\"tollgate\", resource_metadata=\"http://{}{WELL_KNOWN}/mcp\"",
            direct.addr
        )
    );
    // HTTP/2 names the host in :authority.
    let mut h2 = Conn::open(direct.addr, Version::HTTP_2).await;
    let reply = h2.send("GET", "/mcp", &[]).await;
    assert!(
        challenge(&reply).contains(&format!("\"http://{}{WELL_KNOWN}/mcp\"", direct.addr)),
        "{}",
        challenge(&reply)
    );
    // A Host that is no host (a quote would end the parameter early) is not echoed: the
    // resource's own origin stands in.
    let reply = support::send(
        direct.addr,
        http::Request::get("/mcp")
            .header("host", "evil\"x")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        challenge(&reply),
        format!(
            "Bearer realm=\"tollgate\", resource_metadata=\"https://mcp.contoso.com{WELL_KNOWN}/mcp\""
        )
    );
    backend.assert_nothing_received();
}
