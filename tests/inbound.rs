//! Token validation and route requirements, end to end: every rejection is a 401/403 with the
//! RFC 6750 challenge, is counted under its reason, and leaves the backend untouched.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use support::issuer::{MockIssuer, Mode, now};
use support::{Backend, TestProxy, get, server};
use tollgate::config::Algorithm;
use tollgate::dev::issuer::SigningKey;

/// A proxy with `routes`, in front of the echo backend, trusting `issuer`; ready to serve.
async fn start(issuer: &MockIssuer, backend: &Backend, routes: &str) -> TestProxy {
    let toml = format!(
        "{}{}{routes}",
        server(backend.addr(), ""),
        issuer.toml("idp", "")
    );
    let proxy = TestProxy::start(&toml).await;
    support::eventually("the issuer's keys are loaded", || async {
        proxy.admin_get("/readyz").await.status == 200
    })
    .await;
    proxy
}

const API: &str = "[[routes]]\nprefix = \"/api\"\n";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Asserts a 401 `invalid_token` counted under `reason`, with nothing at the backend.
async fn assert_refused(
    proxy: &TestProxy,
    backend: &Backend,
    headers: &[(&str, &str)],
    reason: &str,
    what: &str,
) {
    let before = proxy
        .metrics()
        .auth_failures
        .with_label_values(&[reason])
        .get();
    let reply = get(proxy.addr, "/api/orders", headers).await;
    assert_eq!(reply.status, 401, "{what}: {}", reply.text());
    let challenge = reply
        .header("www-authenticate")
        .unwrap_or_default()
        .to_owned();
    assert!(
        challenge.starts_with("Bearer realm=\"tollgate\", error=\"invalid_token\""),
        "{what}: {challenge}"
    );
    assert_eq!(reply.json()["error"], "invalid_token", "{what}");
    for (_, value) in headers {
        let token = value
            .trim_start_matches("Bearer ")
            .trim_start_matches("bearer ");
        if token.len() > 8 {
            assert!(
                !reply.text().contains(token) && !challenge.contains(token),
                "{what}: the token was echoed"
            );
        }
    }
    assert_eq!(
        proxy
            .metrics()
            .auth_failures
            .with_label_values(&[reason])
            .get(),
        before + 1,
        "{what}: counted as {reason}"
    );
    backend.assert_nothing_received();
}

fn b64(value: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

#[tokio::test]
async fn missing_token_gets_a_bare_challenge() {
    let (issuer, backend) = (MockIssuer::start().await, Backend::start().await);
    let proxy = start(&issuer, &backend, API).await;
    for headers in [vec![], vec![("authorization", "Basic dXNlcjpwYXNz")]] {
        let reply = get(proxy.addr, "/api", &headers).await;
        assert_eq!(reply.status, 401);
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer realm=\"tollgate\"")
        );
        assert_eq!(reply.json()["error"], "unauthorized");
    }
    // Never from the query string.
    let token = issuer.token(json!({}));
    assert_eq!(
        proxy
            .get(&format!("/api?access_token={token}"))
            .await
            .status,
        401
    );
    backend.assert_nothing_received();
    assert_eq!(
        proxy
            .metrics()
            .auth_failures
            .with_label_values(&["missing_token"])
            .get(),
        3
    );
}

#[tokio::test]
async fn a_valid_token_is_forwarded_and_lowercase_bearer_accepted() {
    let (issuer, backend) = (MockIssuer::start().await, Backend::start().await);
    let proxy = start(&issuer, &backend, API).await;
    let token = issuer.token(json!({}));
    let reply = get(
        proxy.addr,
        "/api/orders",
        &[("authorization", &format!("bearer {token}"))],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = backend.only();
    assert_eq!(
        seen.header("authorization"),
        Some(format!("bearer {token}").as_str()),
        "forward_token defaults to true"
    );
    assert_eq!(
        seen.header("x-ms-client-principal-id"),
        Some("00000000-0000-0000-0000-0000000000aa")
    );
    assert_eq!(proxy.requests("/api", "allowed", "200"), 1);
}

#[tokio::test]
async fn malformed_and_forged_tokens_are_refused() {
    let (issuer, backend) = (MockIssuer::start().await, Backend::start().await);
    let proxy = start(&issuer, &backend, API).await;
    let good = issuer.token(json!({}));
    let (header, payload) = {
        let mut parts = good.split('.');
        (
            parts.next().unwrap().to_owned(),
            parts.next().unwrap().to_owned(),
        )
    };
    let attacker = SigningKey::generate(Algorithm::RS256, "key-1").unwrap();
    let attacker_token =
        |header: serde_json::Value| attacker.mint(&issuer.claims(), &header).unwrap();
    let hs256 = {
        // HS256 "signed" with the issuer's public key as the HMAC secret: the classic
        // algorithm-confusion attack.
        let h = b64(&json!({"alg": "HS256", "typ": "JWT", "kid": "key-1"}));
        let input = format!("{h}.{payload}");
        let secret = issuer.local.jwks().to_string();
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
        let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    };
    let cases: Vec<(String, &str, &str)> = vec![
        ("onesegment".into(), "malformed", "one segment"),
        (format!("{header}.{payload}"), "malformed", "two segments"),
        (format!("{good}.extra"), "malformed", "four segments"),
        (
            format!("a.{payload}.sig"),
            "malformed",
            "header not base64url",
        ),
        (
            format!("{}.{payload}.sig", URL_SAFE_NO_PAD.encode("not json")),
            "malformed",
            "header not JSON",
        ),
        (
            format!("{header}.{}.sig", URL_SAFE_NO_PAD.encode("[1,2]")),
            "malformed",
            "payload not an object",
        ),
        (
            format!(
                "{}.{payload}.",
                b64(&json!({"alg": "none", "typ": "JWT", "kid": "key-1"}))
            ),
            "disallowed_algorithm",
            "alg none",
        ),
        (
            format!(
                "{}.{payload}.",
                b64(&json!({"alg": "None", "kid": "key-1"}))
            ),
            "disallowed_algorithm",
            "alg None",
        ),
        (
            hs256,
            "disallowed_algorithm",
            "HS256 with the public key as secret",
        ),
        (
            issuer.sign(&issuer.claims(), &json!({"alg": "ES256"})),
            "disallowed_algorithm",
            "alg not in the issuer's list",
        ),
        (
            attacker_token(json!({"kid": "key-1"})),
            "bad_signature",
            "a key outside the JWKS under a known kid",
        ),
        (
            attacker_token(json!({"kid": "unknown"})),
            "unknown_key",
            "unknown kid",
        ),
        (
            attacker_token(
                json!({"kid": "attacker", "jku": "http://127.0.0.1:9/keys", "jwk": attacker.jwk(), "x5c": ["MIIB"], "x5u": "http://127.0.0.1:9/c"}),
            ),
            "unknown_key",
            "jku/jwk/x5c pointing at an attacker key",
        ),
        (
            attacker_token(json!({"kid": "key-1", "jwk": attacker.jwk()})),
            "bad_signature",
            "embedded jwk under a known kid",
        ),
        (
            issuer.token(json!({"exp": now() - 3600})),
            "expired",
            "expired",
        ),
        (
            issuer.token(json!({"nbf": now() + 3600})),
            "not_yet_valid",
            "not yet valid",
        ),
        (
            issuer.token(json!({"iat": now() + 3600})),
            "not_yet_valid",
            "issued in the future",
        ),
        (
            issuer.token(json!({"iss": "https://evil.example/"})),
            "bad_issuer",
            "wrong iss",
        ),
        (issuer.token(json!({"iss": null})), "bad_issuer", "no iss"),
        (
            issuer.token(json!({"aud": "api://other"})),
            "bad_audience",
            "wrong aud",
        ),
        (
            issuer.token(json!({"aud": ["api://a", "api://b"]})),
            "bad_audience",
            "aud array without ours",
        ),
        (issuer.token(json!({"aud": null})), "bad_audience", "no aud"),
        (
            issuer.token(json!({"exp": null})),
            "missing_exp",
            "missing exp",
        ),
        (
            issuer.sign(&issuer.claims(), &json!({"crit": ["exp"]})),
            "unsupported_crit",
            "unknown crit",
        ),
        (
            issuer.sign(&issuer.claims(), &json!({"typ": "id_token"})),
            "bad_type",
            "typ",
        ),
        (
            format!("{header}.{payload}."),
            "bad_signature",
            "empty signature",
        ),
        (
            format!(
                "{header}.{}.{}",
                b64(&issuer.claims_with(json!({"roles": ["Admin"]}))),
                good.rsplit('.').next().unwrap()
            ),
            "bad_signature",
            "payload swapped",
        ),
    ];
    for (token, reason, what) in cases {
        assert_refused(
            &proxy,
            &backend,
            &[("authorization", &bearer(&token))],
            reason,
            what,
        )
        .await;
    }
    let two = [
        ("authorization", bearer(&good)),
        ("authorization", bearer(&good)),
    ];
    let two: Vec<(&str, &str)> = two.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_refused(
        &proxy,
        &backend,
        &two,
        "multiple_tokens",
        "two Authorization headers",
    )
    .await;
    let huge = format!("{header}.{}.sig", "A".repeat(20 * 1024));
    assert_refused(
        &proxy,
        &backend,
        &[("authorization", &bearer(&huge))],
        "token_too_large",
        "a 20 KiB token",
    )
    .await;
}

#[tokio::test]
async fn ecdsa_signature_with_r_and_s_zero_is_refused() {
    let issuer =
        MockIssuer::start_with("https://idp.tollgate.test/", Algorithm::ES256, Mode::Up).await;
    let backend = Backend::start().await;
    let proxy = start(&issuer, &backend, API).await;
    let good = issuer.token(json!({}));
    assert_eq!(
        get(proxy.addr, "/api", &[("authorization", &bearer(&good))])
            .await
            .status,
        200
    );
    backend.clear();
    let input = good.rsplit_once('.').unwrap().0;
    let zero = format!("{input}.{}", URL_SAFE_NO_PAD.encode([0u8; 64]));
    assert_refused(
        &proxy,
        &backend,
        &[("authorization", &bearer(&zero))],
        "bad_signature",
        "r = s = 0",
    )
    .await;
}

fn route(body: &str) -> String {
    format!("[[routes]]\nprefix = \"/api\"\n{body}\n")
}

#[tokio::test]
async fn each_requirement_met_and_unmet() {
    let (issuer, backend) = (MockIssuer::start().await, Backend::start().await);
    let tid = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let claims = json!({"roles": ["reader", "writer"], "scp": "orders.read profile", "azp": "app-1", "tid": tid, "azpacr": "2"});
    let cases = [
        ("roles_any = [\"admin\", \"writer\"]", true),
        ("roles_any = [\"admin\"]", false),
        ("roles_all = [\"reader\", \"writer\"]", true),
        ("roles_all = [\"reader\", \"admin\"]", false),
        ("scopes_any = [\"orders.read\"]", true),
        ("scopes_any = [\"orders.write\"]", false),
        ("client_apps = [\"app-1\"]", true),
        ("client_apps = [\"app-2\"]", false),
        ("tenants = [\"72F988BF-86F1-41AF-91AB-2D7CD011DB47\"]", true),
        (
            "tenants = [\"9188040d-6c67-4c5b-b112-36a304b66dad\"]",
            false,
        ),
        (
            "principals = [\"00000000-0000-0000-0000-0000000000aa\"]",
            true,
        ),
        (
            "principals = [\"00000000-0000-0000-0000-0000000000bb\"]",
            false,
        ),
        ("issuers = [\"idp\"]", true),
        ("claims = { azpacr = \"2\" }", true),
        ("claims = { azpacr = [\"0\", \"1\"] }", false),
        (
            "methods = [\"POST\"]\n[[routes]]\nprefix = \"/\"\nroles_any = [\"reader\"]",
            true,
        ),
    ];
    for (requirement, allowed) in cases {
        backend.clear();
        let proxy = start(&issuer, &backend, &route(requirement)).await;
        let token = issuer.token(claims.clone());
        let reply = get(proxy.addr, "/api/x", &[("authorization", &bearer(&token))]).await;
        if allowed {
            assert_eq!(reply.status, 200, "{requirement}: {}", reply.text());
            assert_eq!(backend.count(), 1);
        } else {
            assert_eq!(reply.status, 403, "{requirement}");
            let challenge = reply.header("www-authenticate").unwrap();
            assert!(
                challenge.contains("error=\"insufficient_scope\""),
                "{challenge}"
            );
            assert_eq!(reply.json()["error"], "insufficient_scope");
            assert_eq!(
                proxy
                    .metrics()
                    .auth_failures
                    .with_label_values(&["forbidden"])
                    .get(),
                1
            );
            backend.assert_nothing_received();
        }
    }
}

#[tokio::test]
async fn audit_mode_lets_a_failing_request_through_and_counts_it() {
    let (issuer, backend) = (MockIssuer::start().await, Backend::start().await);
    let proxy = start(
        &issuer,
        &backend,
        &route("roles_any = [\"admin\"]\nmode = \"audit\""),
    )
    .await;
    let token = issuer.token(json!({"roles": ["reader"]}));
    let reply = get(proxy.addr, "/api", &[("authorization", &bearer(&token))]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(backend.count(), 1);
    assert_eq!(proxy.requests("/api", "audit", "200"), 1);
    assert_eq!(
        proxy
            .metrics()
            .auth_failures
            .with_label_values(&["forbidden"])
            .get(),
        1
    );
    // Audit mode relaxes requirements, never authentication.
    backend.clear();
    let expired = issuer.token(json!({"exp": now() - 3600}));
    assert_eq!(
        get(proxy.addr, "/api", &[("authorization", &bearer(&expired))])
            .await
            .status,
        401
    );
    backend.assert_nothing_received();
}

#[tokio::test]
async fn anonymous_routes_with_and_without_a_token() {
    let (issuer, backend) = (MockIssuer::start().await, Backend::start().await);
    let proxy = start(
        &issuer,
        &backend,
        "[[routes]]\nprefix = \"/public\"\nallow_anonymous = true\n",
    )
    .await;
    // No token: forwarded, no identity.
    assert_eq!(proxy.get("/public").await.status, 200);
    let seen = backend.only();
    assert_eq!(seen.header("x-ms-client-principal-id"), None);
    // A valid token: the caller is identified, as Easy Auth does.
    backend.clear();
    let token = issuer.token(json!({}));
    assert_eq!(
        get(proxy.addr, "/public", &[("authorization", &bearer(&token))])
            .await
            .status,
        200
    );
    assert_eq!(
        backend.only().header("x-ms-client-principal-id"),
        Some("00000000-0000-0000-0000-0000000000aa")
    );
    // An invalid token: still anonymous, and the token is not passed on as if checked.
    backend.clear();
    let expired = issuer.token(json!({"exp": now() - 3600}));
    assert_eq!(
        get(
            proxy.addr,
            "/public",
            &[("authorization", &bearer(&expired))]
        )
        .await
        .status,
        200
    );
    let seen = backend.only();
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(seen.header("x-ms-client-principal-id"), None);
    assert_eq!(proxy.requests("/public", "anonymous", "200"), 3);
}

#[tokio::test]
async fn auth_me_returns_the_callers_principal() {
    let (issuer, backend) = (MockIssuer::start().await, Backend::start().await);
    let proxy = start(&issuer, &backend, API).await;
    assert_eq!(proxy.get("/.auth/me").await.status, 401);
    let token = issuer
        .token(json!({"roles": ["reader", "writer"], "preferred_username": "ana@contoso.com"}));
    let reply = get(
        proxy.addr,
        "/.auth/me",
        &[("authorization", &bearer(&token))],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let me = reply.json();
    assert_eq!(me[0]["provider_name"], "aad");
    assert_eq!(me[0]["user_id"], "ana@contoso.com");
    let roles: Vec<&str> = me[0]["user_claims"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["typ"] == "roles")
        .map(|c| c["val"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["reader", "writer"]);
    assert!(!reply.text().contains(&token), "the token is never echoed");
    backend.assert_nothing_received();
}
