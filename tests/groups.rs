//! Groups overage, end to end: an overage token on a route with `groups_any` is decided on the
//! caller's groups from Microsoft Graph (every page, throttling waited out, one fetch however
//! many requests wait, cached within bounds), or refused with 403 `groups_unavailable` and
//! nothing forwarded; routes without group rules never call Graph.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use base64::Engine;
use serde_json::{Value, json};
use support::graph::{GraphRig, group, user};
use support::issuer::MockIssuer;
use support::{Backend, TestProxy, get, server};
use tollgate::dev::graph::Faults;

const ROUTES: &str = r#"
[identity.claims]
"X-Groups" = "groups"

[[routes]]
prefix = "/open"

[[routes]]
prefix = "/"
groups_any = ["GROUP"]
"#;

/// A proxy trusting `issuer` (`issuer_lines` on its block), with `/open` needing only a token
/// and everything else needing `group`.
/// The usual rig: a token issuer, a backend, Graph, and tollgate resolving overage through it
/// on routes that need `group`.
async fn graph_setup(group: &str) -> (MockIssuer, Backend, GraphRig, TestProxy) {
    let (issuer, backend, rig) = (
        MockIssuer::start().await,
        Backend::start().await,
        GraphRig::start().await,
    );
    let proxy = start(
        &issuer,
        &backend,
        &rig.issuer_lines(),
        &rig.credential(),
        group,
    )
    .await;
    (issuer, backend, rig, proxy)
}

async fn start(
    issuer: &MockIssuer,
    backend: &Backend,
    issuer_lines: &str,
    credential: &str,
    group: &str,
) -> TestProxy {
    let toml = format!(
        "{}{}{}{credential}",
        server(backend.addr(), ""),
        issuer.toml("entra", issuer_lines),
        ROUTES.replace("GROUP", group),
    );
    let proxy = TestProxy::start(&toml).await;
    support::eventually("the issuer's keys are loaded", || async {
        proxy.admin_get("/readyz").await.status == 200
    })
    .await;
    proxy
}

/// An overage token (the `_claim_names` form) for `oid`.
fn overage(issuer: &MockIssuer, oid: &str) -> String {
    issuer.token(json!({
        "oid": oid,
        "_claim_names": {"groups": "src1"},
        "_claim_sources": {"src1": {"endpoint": format!("https://graph.windows.net/t/users/{oid}/getMemberObjects")}},
    }))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn graph_requests(proxy: &TestProxy, result: &str) -> u64 {
    proxy
        .metrics()
        .graph_requests
        .with_label_values(&["entra", result])
        .get()
}

fn groups_unavailable(proxy: &TestProxy) -> u64 {
    proxy
        .metrics()
        .auth_failures
        .with_label_values(&["groups_unavailable"])
        .get()
}

/// Asserts 403 `groups_unavailable`, counted, with nothing at the backend.
async fn assert_groups_unavailable(proxy: &TestProxy, backend: &Backend, token: &str) {
    let before = groups_unavailable(proxy);
    let reply = get(proxy.addr, "/orders", &[("authorization", &bearer(token))]).await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert_eq!(reply.json()["error"], "insufficient_scope");
    let description = reply.json()["error_description"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(description.contains("groups_unavailable"), "{description}");
    assert!(
        reply
            .header("www-authenticate")
            .unwrap()
            .contains("groups_unavailable")
    );
    assert_eq!(groups_unavailable(proxy), before + 1);
    backend.assert_nothing_received();
}

#[tokio::test]
async fn overage_resolved_across_pages() {
    let (issuer, backend, rig) = (
        MockIssuer::start().await,
        Backend::start().await,
        GraphRig::start().await,
    );
    rig.graph().set_page_size(Some(100));
    let proxy = start(
        &issuer,
        &backend,
        &rig.issuer_lines(),
        &rig.credential(),
        &group(250),
    )
    .await;
    let token = overage(&issuer, &user(250));
    let reply = get(proxy.addr, "/orders", &[("authorization", &bearer(&token))]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(rig.graph().lookups(), 1);
    assert_eq!(rig.graph().requests(), 3, "three pages of 100");
    assert_eq!(graph_requests(&proxy, "success"), 3);
    // The same caller again (a cache hit), and a caller not in the group.
    let member_of_first = overage(&issuer, &user(250));
    let reply = get(
        proxy.addr,
        "/orders",
        &[("authorization", &bearer(&member_of_first))],
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        rig.graph().lookups(),
        1,
        "the second request is a cache hit"
    );
    let outsider = overage(&issuer, &user(249));
    let reply = get(
        proxy.addr,
        "/orders",
        &[("authorization", &bearer(&outsider))],
    )
    .await;
    assert_eq!(reply.status, 403);
    assert_eq!(
        reply.json()["error_description"],
        "a required group is missing"
    );
    assert_eq!(backend.count(), 2);
}

#[tokio::test]
async fn groups_from_graph_reach_the_identity_headers() {
    let (issuer, backend, _rig, proxy) = graph_setup(&group(3)).await;
    let token = overage(&issuer, &user(3));
    let reply = get(proxy.addr, "/orders", &[("authorization", &bearer(&token))]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = backend.only();
    let all = [group(1), group(2), group(3)].join(",");
    assert_eq!(seen.header("x-groups"), Some(all.as_str()));
    let principal = base64::engine::general_purpose::STANDARD
        .decode(seen.header("x-ms-client-principal").unwrap())
        .unwrap();
    let principal: Value = serde_json::from_slice(&principal).unwrap();
    let claims = principal["claims"].as_array().unwrap();
    let groups: Vec<&str> = claims
        .iter()
        .filter(|c| c["typ"] == "groups")
        .map(|c| c["val"].as_str().unwrap())
        .collect();
    assert_eq!(groups, [group(1), group(2), group(3)]);
    assert!(
        !claims.iter().any(|c| c["typ"] == "_claim_names"),
        "the overage marker is replaced by the groups"
    );
}

#[tokio::test]
async fn throttled_graph_is_retried_after_retry_after() {
    let (issuer, backend, rig, proxy) = graph_setup(&group(7)).await;
    rig.faults(Faults {
        throttle: 1,
        retry_after: Some(1),
        ..Faults::default()
    });
    let started = Instant::now();
    let token = overage(&issuer, &user(7));
    let reply = get(proxy.addr, "/orders", &[("authorization", &bearer(&token))]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was waited out"
    );
    assert_eq!(graph_requests(&proxy, "throttled"), 1);
    assert_eq!(graph_requests(&proxy, "success"), 1);
    assert_eq!(rig.graph().requests(), 2);

    // Longer than tollgate waits within a request: refused, nothing forwarded.
    backend.clear();
    rig.faults(Faults {
        throttle: 1,
        retry_after: Some(3600),
        ..Faults::default()
    });
    assert_groups_unavailable(&proxy, &backend, &overage(&issuer, &user(8))).await;
}

#[tokio::test]
async fn graph_down_is_403_groups_unavailable_with_nothing_forwarded() {
    let (issuer, backend, rig) = (
        MockIssuer::start().await,
        Backend::start().await,
        GraphRig::start().await,
    );
    // Graph unreachable: its port is closed.
    let dead = support::echo::dead_upstream().await;
    let lines = format!(
        "groups_overage = \"graph\"\ngraph_credential = \"graph\"\ngraph_endpoint = \"http://{dead}\"\n"
    );
    let proxy = start(&issuer, &backend, &lines, &rig.credential(), &group(1)).await;
    assert_groups_unavailable(&proxy, &backend, &overage(&issuer, &user(5))).await;
    drop(proxy);

    // A page failing mid-way, and a Graph that refuses the app (no permission).
    let proxy = start(
        &issuer,
        &backend,
        &rig.issuer_lines(),
        &rig.credential(),
        &group(1),
    )
    .await;
    rig.graph().set_page_size(Some(10));
    rig.faults(Faults {
        fail_page: Some(2),
        ..Faults::default()
    });
    assert_groups_unavailable(&proxy, &backend, &overage(&issuer, &user(40))).await;
    assert_eq!(rig.graph().requests(), 3, "pages 0 and 1, then 2 failed");
    assert_eq!(graph_requests(&proxy, "error"), 1);
    rig.faults(Faults {
        forbidden: true,
        ..Faults::default()
    });
    assert_groups_unavailable(&proxy, &backend, &overage(&issuer, &user(41))).await;
    // An unknown user, and a token without an oid.
    rig.faults(Faults::default());
    assert_groups_unavailable(
        &proxy,
        &backend,
        &overage(&issuer, "00000000-0000-0000-0000-0000000000ff"),
    )
    .await;
    let no_oid = issuer.token(json!({"oid": null, "hasgroups": true}));
    assert_groups_unavailable(&proxy, &backend, &no_oid).await;
}

#[tokio::test]
async fn a_next_link_to_another_origin_is_not_followed() {
    let (issuer, backend, rig) = (
        MockIssuer::start().await,
        Backend::start().await,
        GraphRig::start().await,
    );
    let elsewhere = Backend::start().await;
    let proxy = start(
        &issuer,
        &backend,
        &rig.issuer_lines(),
        &rig.credential(),
        &group(1),
    )
    .await;
    rig.graph().set_page_size(Some(10));
    rig.faults(Faults {
        next_link_origin: Some(format!("http://{}", elsewhere.addr())),
        ..Faults::default()
    });
    assert_groups_unavailable(&proxy, &backend, &overage(&issuer, &user(20))).await;
    elsewhere.assert_nothing_received();
}

#[tokio::test]
async fn deny_mode_refuses_overage_and_still_reads_the_claim() {
    let (issuer, backend, rig) = (
        MockIssuer::start().await,
        Backend::start().await,
        GraphRig::start().await,
    );
    // No groups_overage: "deny".
    let proxy = start(&issuer, &backend, "", "", &group(1)).await;
    assert_groups_unavailable(&proxy, &backend, &overage(&issuer, &user(3))).await;
    let implicit = issuer.token(json!({"oid": user(3), "hasgroups": true}));
    assert_groups_unavailable(&proxy, &backend, &implicit).await;
    assert_eq!(rig.graph().requests(), 0);
    // Within the limit, the claim decides.
    let listed = issuer.token(json!({"groups": [group(1).to_uppercase()]}));
    let reply = get(
        proxy.addr,
        "/orders",
        &[("authorization", &bearer(&listed))],
    )
    .await;
    assert_eq!(reply.status, 200);
    let unlisted = issuer.token(json!({"groups": [group(2)]}));
    let reply = get(
        proxy.addr,
        "/orders",
        &[("authorization", &bearer(&unlisted))],
    )
    .await;
    assert_eq!(reply.status, 403);
    assert_eq!(groups_unavailable(&proxy), 2);
}

#[tokio::test]
async fn one_graph_fetch_for_100_concurrent_requests_of_one_caller() {
    let (issuer, backend, rig) = (
        MockIssuer::start().await,
        Backend::start().await,
        GraphRig::start().await,
    );
    rig.graph().set_page_size(Some(50));
    let proxy = start(
        &issuer,
        &backend,
        &rig.issuer_lines(),
        &rig.credential(),
        &group(500),
    )
    .await;
    let token = Arc::new(overage(&issuer, &user(500)));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let (addr, token) = (proxy.addr, token.clone());
        tasks.spawn(async move {
            get(addr, "/orders", &[("authorization", &bearer(&token))])
                .await
                .status
        });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    assert_eq!(rig.graph().lookups(), 1, "one lookup");
    assert_eq!(rig.graph().requests(), 10, "its ten pages, once");
    assert_eq!(backend.count(), 100);
}

#[tokio::test]
async fn a_route_without_groups_any_does_not_call_graph() {
    let (issuer, backend, rig, proxy) = graph_setup(&group(1)).await;
    let token = overage(&issuer, &user(3));
    let reply = get(proxy.addr, "/open/x", &[("authorization", &bearer(&token))]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(rig.graph().requests(), 0);
    // Passed on as issued: no groups were resolved.
    let seen = backend.only();
    assert_eq!(seen.header("x-groups"), None);
    assert_eq!(
        proxy
            .metrics()
            .groups_cache_entries
            .with_label_values(&["entra"])
            .get(),
        0
    );
}

#[tokio::test]
async fn cache_bounds_hold_under_a_flood_of_distinct_oids() {
    use tollgate::config::{Credential, CredentialKind, GraphSettings, ManagedIdentitySettings};
    use tollgate::inbound::groups::{GraphGroups, Limits};
    use tollgate::telemetry::metrics::Metrics;

    let rig = GraphRig::start().await;
    let credential_config = Credential {
        name: "graph".into(),
        kind: CredentialKind::ManagedIdentity(ManagedIdentitySettings {
            user_assigned: None,
            endpoint: Some(rig.url().parse().unwrap()),
        }),
        ca_file: None,
    };
    let env = |_: &str| None;
    let credential = tollgate::credential::build(&credential_config, &env).unwrap();
    let metrics = Arc::new(Metrics::new());
    let limits = Limits {
        entries: 40,
        bytes: 60_000,
    };
    let lookups = Arc::new(GraphGroups::new(
        "entra",
        GraphSettings {
            credential: "graph".into(),
            endpoint: rig.url().parse().unwrap(),
        },
        credential_config,
        credential,
        reqwest::Client::new(),
        limits,
        metrics.clone(),
    ));
    // 400 distinct callers, 20 at a time: small ones (entries bound) then large ones (bytes).
    for batch in 0..20u32 {
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..20u32 {
            let groups = if batch < 10 { 1 + n } else { 100 + n };
            // Distinct oids: a different count each, or a listed user of the directory.
            let oid = format!("{:08x}-0000-4000-8000-{:012}", batch, n);
            rig.graph().set_user(&oid, (0..groups).map(group).collect());
            let lookups = lookups.clone();
            tasks.spawn(async move { lookups.resolve(&oid).await.map(|s| s.len()) });
        }
        while let Some(result) = tasks.join_next().await {
            assert!(result.unwrap().is_ok());
        }
        assert!(lookups.cached() <= limits.entries, "{}", lookups.cached());
        assert!(
            lookups.cached_bytes() <= limits.bytes,
            "{}",
            lookups.cached_bytes()
        );
        let gauge = metrics
            .groups_cache_entries
            .with_label_values(&["entra"])
            .get();
        assert_eq!(gauge as usize, lookups.cached());
    }
    assert!(lookups.cached() >= 1);
    assert_eq!(rig.graph().lookups(), 400);
}

#[tokio::test]
async fn a_reload_keeps_the_groups_cache_unless_the_graph_settings_change() {
    let (issuer, backend, rig) = (
        MockIssuer::start().await,
        Backend::start().await,
        GraphRig::start().await,
    );
    let toml = |extra: &str| {
        format!(
            "{}{}{}{}{extra}",
            server(backend.addr(), ""),
            issuer.toml("entra", &rig.issuer_lines()),
            ROUTES.replace("GROUP", &group(2)),
            rig.credential(),
        )
    };
    let proxy = TestProxy::start(&toml("")).await;
    support::eventually("the issuer's keys are loaded", || async {
        proxy.admin_get("/readyz").await.status == 200
    })
    .await;
    let token = overage(&issuer, &user(3));
    let auth = bearer(&token);
    let headers = [("authorization", auth.as_str())];
    let ask = || get(proxy.addr, "/orders", &headers);
    assert_eq!(ask().await.status, 200);
    proxy.write_config(&toml("# a comment\n"));
    proxy.app.reload().unwrap();
    assert_eq!(ask().await.status, 200);
    assert_eq!(rig.graph().lookups(), 1, "the cache survived the reload");
    // Another credential setting: new lookups, new cache.
    proxy.write_config(&toml(
        "client_id = \"11111111-1111-1111-1111-111111111111\"\n",
    ));
    proxy.app.reload().unwrap();
    assert_eq!(ask().await.status, 200);
    assert_eq!(rig.graph().lookups(), 2);
}
