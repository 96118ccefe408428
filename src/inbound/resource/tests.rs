use std::time::SystemTime;

use http::HeaderMap;
use proptest::prelude::*;

use super::*;
use crate::inbound::{InboundState, Reject, Routed, Verdict, decide};

const T1: &str = "11111111-1111-1111-1111-111111111111";
const T2: &str = "22222222-2222-2222-2222-222222222222";

/// An offline inbound state for `resources` (TOML), a route `/` that needs a token, and a
/// multi-tenant issuer `entra`.
fn state(resources: &str) -> InboundState {
    let toml = format!(
        r#"
[server]
upstream = "http://127.0.0.1:3000"
[[issuers]]
name = "entra"
issuer = "https://login.microsoftonline.com/{{tenantid}}/v2.0"
jwks_uri = "https://login.microsoftonline.com/common/discovery/v2.0/keys"
audiences = ["api://mcp", "c1d2"]
tenants = ["{T1}", "{T2}"]
[[routes]]
prefix = "/"
scopes_any = ["tools.read", "tools.write", "other"]
{resources}"#
    );
    let config = crate::config::parse(&toml, std::path::Path::new("t.toml"), &|_| None)
        .unwrap_or_else(|e| panic!("{e}\n{toml}"))
        .config;
    let metrics = std::sync::Arc::new(crate::telemetry::metrics::Metrics::new());
    InboundState::build(&config, None, &metrics, None, &|_| None)
        .unwrap()
        .unwrap()
}

fn resource(url: &str, prefix: &str) -> String {
    format!(
        "[[resources]]\nresource = \"{url}\"\nprefix = \"{prefix}\"\nissuer = \"entra\"\nscopes_supported = [\"api://mcp/tools.read\", \"tools.write\"]\n"
    )
}

#[test]
fn a_tenant_issuer_advertises_one_authorization_server_per_tenant() {
    let state = state(&resource("https://mcp.example.com/mcp", "/mcp"));
    let r = state.resources.iter().next().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&r.document).unwrap();
    assert_eq!(
        doc["authorization_servers"],
        serde_json::json!([
            format!("https://login.microsoftonline.com/{T1}/v2.0"),
            format!("https://login.microsoftonline.com/{T2}/v2.0"),
        ])
    );
    assert_eq!(
        r.audiences,
        ["https://mcp.example.com/mcp", "api://mcp", "c1d2"]
    );
}

#[test]
fn the_longest_prefix_covers_a_path() {
    let state = state(&format!(
        "{}{}",
        resource("https://example.com", "/"),
        resource("https://example.com/mcp", "/mcp/")
    ));
    let covering = |path, ci| {
        state
            .resources
            .covering(path, ci)
            .map(|r| r.settings.resource.as_str())
    };
    assert_eq!(covering("/mcp", false), Some("https://example.com/mcp"));
    assert_eq!(covering("/mcp/x/y", false), Some("https://example.com/mcp"));
    assert_eq!(covering("/mcpx", false), Some("https://example.com"));
    assert_eq!(covering("/MCP", false), Some("https://example.com"));
    assert_eq!(covering("/MCP", true), Some("https://example.com/mcp"));
}

#[test]
fn a_challenge_names_scopes_as_the_resource_does() {
    let state = state(&resource("https://mcp.example.com/mcp", "/mcp"));
    let r = state.resources.iter().next();
    let scopes = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        challenge_scope(&scopes(&["tools.read", "tools.write", "other"]), r),
        "api://mcp/tools.read tools.write other"
    );
    // Only a whole last segment: `read` is not `tools.read`.
    assert_eq!(challenge_scope(&scopes(&["read"]), r), "read");
    assert_eq!(
        challenge_scope(&scopes(&["tools.read"]), None),
        "tools.read"
    );
}

#[test]
fn the_metadata_url_falls_back_to_the_resources_origin() {
    let state = state(&resource("https://mcp.example.com:8443/a/b", "/a"));
    let r = state.resources.iter().next().unwrap();
    let path = "/.well-known/oauth-protected-resource/a/b";
    assert_eq!(
        r.metadata_url(Some("http://127.0.0.1:8080")),
        format!("http://127.0.0.1:8080{path}")
    );
    for unknown in [None, Some("http://"), Some("")] {
        assert_eq!(
            r.metadata_url(unknown),
            format!("https://mcp.example.com:8443{path}"),
            "{unknown:?}"
        );
    }
}

/// `GET path` without a token, decided.
fn get<'s, 'r>(state: &'s InboundState, path: &'r str) -> crate::inbound::Trace<'s, 'r> {
    decide(
        Some(state),
        &Method::GET,
        path,
        &HeaderMap::new(),
        SystemTime::now(),
    )
}

/// A path segment of a resource URL: the characters a route pattern may hold, no dot segment.
fn segment() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._~!&'()*+,=:@-]{1,8}".prop_filter("no dot segments", |s| s != "." && s != "..")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(128)
    ))]
    /// For any resource path, RFC 9728 §3.1's insertion gives the path tollgate answers with
    /// that resource's document (the resource's path after the well-known one, nothing after
    /// it for a resource without a path); a path below or beside it is 404; neither ever
    /// reaches a route. And a request the resource covers, without a token, is challenged
    /// with that document's URL.
    #[test]
    fn the_well_known_path_of_any_resource_path_finds_its_document(
        segments in proptest::collection::vec(segment(), 0..4),
        trailing_slash in proptest::bool::ANY,
    ) {
        let mut own = segments.iter().map(|s| format!("/{s}")).collect::<String>();
        if trailing_slash {
            own.push('/');
        }
        let url = format!("https://mcp.example.com{own}");
        let state = state(&resource(&url, "/"));
        let r = state.resources.iter().next().unwrap();
        let expected = match own.as_str() {
            "" | "/" => METADATA_PATH.to_owned(),
            _ => format!("{METADATA_PATH}{own}"),
        };
        prop_assert_eq!(&r.settings.metadata_path, &expected);

        let found = get(&state, &expected);
        prop_assert_eq!(found.verdict, Verdict::Metadata);
        prop_assert!(matches!(found.route, Routed::Metadata(Some(f)) if f.settings.resource == url));
        let below = format!("{}/x", expected.trim_end_matches('/'));
        prop_assert_eq!(get(&state, &below).verdict, Verdict::Reject(Reject::NoMetadata));
        if !segments.is_empty() {
            let beside = format!("{METADATA_PATH}/{}-", segments.join("/"));
            prop_assert_eq!(get(&state, &beside).verdict, Verdict::Reject(Reject::NoMetadata));
        }

        let covered = get(&state, if own.is_empty() { "/" } else { &own });
        prop_assert_eq!(covered.verdict, Verdict::Reject(Reject::MissingToken));
        let refusal = covered.refusal().unwrap();
        prop_assert_eq!(
            refusal.challenge_value().unwrap(),
            format!("Bearer realm=\"tollgate\", resource_metadata=\"https://mcp.example.com{expected}\"")
        );
    }
}
