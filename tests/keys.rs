//! Signing keys over time: rotation, removal, refetch throttling, an issuer that goes down or
//! hangs, starting without the issuer, reloads that keep keys, discovery, and multi-tenant.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::issuer::{MockIssuer, Mode};
use support::{Backend, TestProxy, get, server};
use tollgate::config::Algorithm;

const API: &str = "[[routes]]\nprefix = \"/api\"\n";

async fn ready(proxy: &TestProxy) {
    support::eventually("ready", || async {
        proxy.admin_get("/readyz").await.status == 200
    })
    .await;
}

async fn call(proxy: &TestProxy, token: &str) -> u16 {
    get(
        proxy.addr,
        "/api",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
    .status
    .as_u16()
}

#[tokio::test]
async fn rotation_is_picked_up_without_restart_and_removed_keys_stop_working() {
    let (issuer, backend) = (MockIssuer::start().await, Backend::start().await);
    let proxy = TestProxy::start(&format!(
        "{}{}{API}",
        server(backend.addr(), ""),
        issuer.toml("idp", "")
    ))
    .await;
    ready(&proxy).await;
    let old_token = issuer.token(json!({}));
    assert_eq!(call(&proxy, &old_token).await, 200);
    let fetches = issuer.jwks_fetches();

    issuer.rotate();
    let new_token = issuer.token(json!({}));
    assert_eq!(
        call(&proxy, &new_token).await,
        200,
        "the unknown kid triggered one refetch"
    );
    assert_eq!(issuer.jwks_fetches(), fetches + 1);
    assert_eq!(
        call(&proxy, &old_token).await,
        200,
        "the old key is still published"
    );

    // The old key is withdrawn. A reload that leaves the issuer unchanged keeps the key set
    // it has (no refetch); a key set fetched from now on no longer has the old key.
    issuer.remove_old_keys();
    proxy.app.reload().unwrap();
    assert_eq!(
        issuer.jwks_fetches(),
        fetches + 1,
        "the reload refetched keys"
    );
    assert_eq!(call(&proxy, &old_token).await, 200);
    let fresh = TestProxy::start(&format!(
        "{}{}{API}",
        server(backend.addr(), ""),
        issuer.toml("idp", "")
    ))
    .await;
    ready(&fresh).await;
    assert_eq!(call(&fresh, &new_token).await, 200);
    assert_eq!(
        call(&fresh, &old_token).await,
        401,
        "a removed key no longer validates"
    );
    assert_eq!(
        fresh
            .metrics()
            .auth_failures
            .with_label_values(&["unknown_key"])
            .get(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_kid_flood_causes_at_most_one_refetch() {
    let (issuer, backend) = (MockIssuer::start().await, Backend::start().await);
    let proxy = TestProxy::start(&format!(
        "{}{}{API}",
        server(backend.addr(), ""),
        issuer.toml("idp", "")
    ))
    .await;
    ready(&proxy).await;
    let before = issuer.jwks_fetches();
    let tokens: Vec<String> = (0..200)
        .map(|i| issuer.sign(&issuer.claims(), &json!({ "kid": format!("random-{i}") })))
        .collect();
    let addr = proxy.addr;
    let calls: Vec<_> = tokens
        .into_iter()
        .map(|t| {
            tokio::spawn(async move {
                get(addr, "/api", &[("authorization", &format!("Bearer {t}"))])
                    .await
                    .status
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), 401);
    }
    let refetches = issuer.jwks_fetches() - before;
    assert!(refetches <= 1, "{refetches} refetches for 200 unknown kids");
    assert_eq!(
        proxy
            .metrics()
            .auth_failures
            .with_label_values(&["unknown_key"])
            .get(),
        200
    );
    backend.assert_nothing_received();
}

#[tokio::test]
async fn an_issuer_that_goes_down_or_hangs_after_start_does_not_stop_validation() {
    let (issuer, backend) = (MockIssuer::start().await, Backend::start().await);
    let proxy = TestProxy::start(&format!(
        "{}{}{API}",
        server(backend.addr(), ""),
        issuer.toml("idp", "")
    ))
    .await;
    ready(&proxy).await;
    let token = issuer.token(json!({}));
    for mode in [Mode::Down, Mode::Hang] {
        issuer.set_mode(mode);
        assert_eq!(
            call(&proxy, &token).await,
            200,
            "{mode:?}: the last good keys still validate"
        );
    }
    issuer.set_mode(Mode::Down);
    // A refresh now fails, is counted, and keeps the keys.
    assert!(
        proxy
            .app
            .live()
            .load()
            .inbound
            .as_ref()
            .unwrap()
            .issuers
            .iter()
            .all(|i| i.keys.is_ready())
    );
    let unknown = issuer.sign(&issuer.claims(), &json!({"kid": "rotated-away"}));
    assert_eq!(call(&proxy, &unknown).await, 401);
    assert_eq!(
        proxy
            .metrics()
            .jwks_refresh
            .with_label_values(&["idp", "error"])
            .get(),
        1
    );
    assert_eq!(
        proxy.metrics().jwks_keys.with_label_values(&["idp"]).get(),
        1
    );
    assert_eq!(call(&proxy, &token).await, 200);
}

#[tokio::test]
async fn started_while_the_issuer_is_down_then_ready_when_it_returns() {
    let issuer =
        MockIssuer::start_with("https://idp.tollgate.test/", Algorithm::RS256, Mode::Down).await;
    let backend = Backend::start().await;
    let proxy = TestProxy::start(&format!(
        "{}{}{API}",
        server(backend.addr(), ""),
        issuer.toml("idp", "")
    ))
    .await;
    support::eventually("a first fetch failed", || async {
        issuer.jwks_fetches() >= 1
    })
    .await;
    let readyz = proxy.admin_get("/readyz").await;
    assert_eq!(readyz.status, 503);
    assert!(
        readyz
            .text()
            .contains("no signing keys yet for issuer(s) idp"),
        "{}",
        readyz.text()
    );
    let token = issuer.token(json!({}));
    let reply = get(
        proxy.addr,
        "/api",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(
        reply.status, 503,
        "no keys yet: unavailable, not a verdict on the token"
    );
    assert_eq!(reply.header("retry-after"), Some("5"));
    backend.assert_nothing_received();

    issuer.set_mode(Mode::Up);
    ready(&proxy).await;
    assert_eq!(call(&proxy, &token).await, 200);
}

#[tokio::test]
async fn keys_found_through_discovery() {
    let (issuer, backend) = (MockIssuer::start().await, Backend::start().await);
    let block = format!(
        "[[issuers]]\nname = \"idp\"\nissuer = \"{}\"\ndiscovery = \"{}\"\naudiences = [\"api://test\"]\n",
        issuer.iss(),
        issuer.discovery_uri()
    );
    let proxy = TestProxy::start(&format!("{}{block}{API}", server(backend.addr(), ""))).await;
    ready(&proxy).await;
    assert_eq!(issuer.discovery_fetches(), 1);
    assert_eq!(call(&proxy, &issuer.token(json!({}))).await, 200);
}

#[tokio::test]
async fn v1_and_v2_tokens_of_one_tenant_are_both_accepted() {
    let tid = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let v1 = MockIssuer::start_with(
        &format!("https://sts.windows.net/{tid}/"),
        Algorithm::RS256,
        Mode::Up,
    )
    .await;
    let v2 = MockIssuer::start_with(
        &format!("https://login.microsoftonline.com/{tid}/v2.0"),
        Algorithm::RS256,
        Mode::Up,
    )
    .await;
    let backend = Backend::start().await;
    let toml = format!(
        "{}{}{}{API}",
        server(backend.addr(), ""),
        v1.toml("entra-v1", ""),
        v2.toml("entra-v2", "")
    );
    let proxy = TestProxy::start(&toml).await;
    ready(&proxy).await;
    let v1_token = v1.token(json!({"ver": "1.0", "appid": "client-app", "tid": tid}));
    let v2_token = v2.token(json!({"azp": "client-app", "tid": tid}));
    assert_eq!(call(&proxy, &v1_token).await, 200);
    assert_eq!(call(&proxy, &v2_token).await, 200);
    // Each issuer's keys vouch only for its own iss.
    let crossed = v1.sign(&v2.claims(), &json!({}));
    assert_eq!(call(&proxy, &crossed).await, 401);
}

#[tokio::test]
async fn multi_tenant_issuer_with_an_allow_list() {
    let allowed = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let other = "9188040d-6c67-4c5b-b112-36a304b66dad";
    let issuer = MockIssuer::start_with(
        "https://login.microsoftonline.com/{tenantid}/v2.0",
        Algorithm::RS256,
        Mode::Up,
    )
    .await;
    let backend = Backend::start().await;
    let toml = format!(
        "{}{}{API}",
        server(backend.addr(), ""),
        issuer.toml("entra", &format!("tenants = [\"{allowed}\"]"))
    );
    let proxy = TestProxy::start(&toml).await;
    ready(&proxy).await;
    let token_for = |tid: &str| {
        issuer.token(
            json!({"iss": format!("https://login.microsoftonline.com/{tid}/v2.0"), "tid": tid}),
        )
    };
    assert_eq!(call(&proxy, &token_for(allowed)).await, 200);
    assert_eq!(call(&proxy, &token_for(other)).await, 401);
    assert_eq!(
        proxy
            .metrics()
            .auth_failures
            .with_label_values(&["bad_issuer"])
            .get(),
        1
    );
}
