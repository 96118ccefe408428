//! On-behalf-of targets end to end: the app sends a caller's token (signed by the test issuer,
//! checked as inbound checks it), tollgate trades it at the Entra mock with the jwt-bearer
//! grant, and the target gets the user's token. Every refusal is checked to send nothing
//! downstream.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use super::*;
use support::imds::entra::{self, EntraAuth, EntraConfig};
use support::imds::{Id, Reply as Scripted};
use support::issuer::{MockIssuer, now};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// The middle tier's client id: the caller tokens' audience is `api://test`.
const APP: &str = "test";
const SCOPE: &str = "api://orders/.default";

struct Setup {
    app: Running,
    backend: Backend,
    entra: Mock,
    issuer: MockIssuer,
}

impl Setup {
    /// A client-secret credential at the Entra mock, one on-behalf-of target `orders`.
    async fn start(extra_egress: &str) -> Setup {
        let entra = Mock::entra(EntraConfig::new(
            TENANT,
            APP,
            EntraAuth::Secret("s3cret".into()),
        ))
        .start()
        .await;
        let credential = format!(
            "[credentials.web]\nkind = \"client_secret\"\ntenant_id = \"{TENANT}\"\nclient_id = \"{APP}\"\nsecret_env = \"WEB_SECRET\"\nauthority_host = \"{}\"\n",
            entra.url()
        );
        Setup::with(
            entra,
            &credential,
            extra_egress,
            &[("WEB_SECRET", "s3cret")],
        )
        .await
    }

    async fn with(
        entra: Mock,
        credential: &str,
        extra_egress: &str,
        env: &[(&str, &str)],
    ) -> Setup {
        let issuer = MockIssuer::start().await;
        let backend = Backend::start().await;
        let toml = format!(
            "{}{}[[routes]]\nprefix = \"/\"\nallow_anonymous = true\n[egress]\nlisten = \"127.0.0.1:0\"\n{extra_egress}\n{}on_behalf_of = \"entra\"\n{credential}",
            support::server(backend.addr(), ""),
            issuer.toml("entra", ""),
            target("orders", &backend, "web", SCOPE),
        );
        let app = start(&toml, env).await;
        // The issuer's keys are fetched in the background, as for inbound.
        support::eventually("the issuer's keys", || async {
            app.proxy.admin_get("/readyz").await.status == 200
        })
        .await;
        Setup {
            app,
            backend,
            entra,
            issuer,
        }
    }

    /// A user's access token for the middle tier.
    fn user(&self, oid: &str) -> String {
        self.issuer
            .token(json!({"oid": oid, "tid": TENANT, "scp": "access_as_user", "name": "Ada"}))
    }

    async fn call(&self, token: &str) -> support::Reply {
        let bearer = format!("Bearer {token}");
        self.app
            .get("/orders/list", &[("authorization", bearer.as_str())])
            .await
    }

    fn obo(&self, result: &str) -> u64 {
        self.app
            .proxy
            .metrics()
            .obo_requests
            .with_label_values(&["orders", result])
            .get()
    }

    /// The exchanges Entra received.
    fn exchanges(&self) -> Vec<support::imds::Logged> {
        self.entra
            .log()
            .into_iter()
            .filter(|l| l.field("grant_type") == Some(entra::OBO_GRANT))
            .collect()
    }
}

/// The claims of a JWT, unverified.
fn claims_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn sent_bearer(backend: &Backend) -> String {
    let seen = backend.only();
    let value = seen
        .header("authorization")
        .expect("an Authorization header");
    value.strip_prefix("Bearer ").expect("Bearer").to_owned()
}

#[tokio::test]
async fn the_callers_token_is_exchanged_then_served_from_the_cache() {
    let s = Setup::start("").await;
    let caller = s.user("00000000-0000-0000-0000-0000000000a1");
    let reply = s.call(&caller).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let sent = sent_bearer(&s.backend);
    assert_ne!(
        sent, caller,
        "the caller's own token never reaches the target"
    );
    assert_eq!(sent, s.entra.last_token());
    let user = claims_of(&sent);
    assert_eq!(user["oid"], "00000000-0000-0000-0000-0000000000a1");
    assert_eq!(user["aud"], "api://orders");

    let asked = &s.exchanges()[0];
    assert_eq!(asked.path, format!("/{TENANT}/oauth2/v2.0/token"));
    assert_eq!(asked.field("assertion"), Some(caller.as_str()));
    assert_eq!(asked.field("requested_token_use"), Some("on_behalf_of"));
    assert_eq!(asked.field("scope"), Some(SCOPE));
    assert_eq!(asked.field("client_id"), Some(APP));
    assert_eq!(asked.field("client_secret"), Some("s3cret"));

    s.backend.clear();
    let again = s.call(&caller).await;
    assert_eq!(again.status, 200);
    assert_eq!(sent_bearer(&s.backend), sent, "the cached token");
    assert_eq!(s.exchanges().len(), 1);
    assert_eq!((s.obo("exchanged"), s.obo("cache_hit")), (1, 1));
    assert_eq!(s.app.proxy.metrics().obo_cache_entries.get(), 1);
}

#[tokio::test]
async fn two_callers_never_share_a_token() {
    let s = Setup::start("").await;
    let ada = s.user("00000000-0000-0000-0000-0000000000a1");
    let bob = s.user("00000000-0000-0000-0000-0000000000b2");
    for (caller, oid) in [(&ada, "a1"), (&bob, "b2"), (&ada, "a1"), (&bob, "b2")] {
        s.backend.clear();
        assert_eq!(s.call(caller).await.status, 200);
        let user = claims_of(&sent_bearer(&s.backend));
        assert!(user["oid"].as_str().unwrap().ends_with(oid), "{user}");
    }
    assert_eq!(s.exchanges().len(), 2);
    // The same user with a new token is a new exchange, never the other token's.
    let ada_again = s
        .issuer
        .token(json!({"oid": "00000000-0000-0000-0000-0000000000a1", "tid": TENANT, "scp": "access_as_user", "jti": "2"}));
    assert_eq!(s.call(&ada_again).await.status, 200);
    assert_eq!(s.exchanges().len(), 3);
}

#[tokio::test]
async fn a_missing_expired_or_foreign_token_is_refused_before_any_exchange() {
    let s = Setup::start("").await;
    let reply = s.app.get("/orders/list", &[]).await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer realm=\"tollgate\"")
    );
    assert_eq!(reply.json()["error"], "unauthorized");

    let expired = s
        .issuer
        .token(json!({"exp": now() - 600, "scp": "access_as_user"}));
    let other_audience = s.issuer.token(json!({"aud": "api://other", "scp": "x"}));
    // One user's claims under another token's signature.
    let (a, b) = (
        s.user("00000000-0000-0000-0000-0000000000a1"),
        s.user("00000000-0000-0000-0000-0000000000b2"),
    );
    let forged = format!(
        "{}.{}",
        a.rsplit_once('.').unwrap().0,
        b.rsplit_once('.').unwrap().1
    );
    for (token, description) in [
        (&expired, "token expired"),
        (&other_audience, "token audience not accepted"),
        (&forged, "token signature invalid"),
    ] {
        let reply = s.call(token).await;
        assert_eq!(reply.status, 401, "{}", reply.text());
        let challenge = reply.header("www-authenticate").unwrap();
        assert!(
            challenge.starts_with("Bearer realm=\"tollgate\", error=\"invalid_token\""),
            "{challenge}"
        );
        assert_eq!(reply.json()["error_description"], description);
    }
    s.backend.assert_nothing_received();
    assert!(s.entra.log().is_empty(), "no exchange was tried");
    assert_eq!((s.obo("missing_token"), s.obo("invalid_token")), (1, 3));
}

/// Each of Entra's refusals: the answer the app gets, and nothing sent downstream.
#[tokio::test]
async fn each_entra_refusal_is_answered_as_the_contract_says() {
    let claims = r#"{"access_token":{"capolids":{"essential":true,"values":["c1"]}}}"#;
    let s = Setup::start("").await;
    let cases = [
        (
            entra::mfa_required(claims),
            401,
            "interaction_required",
            Some("AADSTS50076"),
        ),
        (
            entra::interaction_required(claims),
            401,
            "interaction_required",
            Some("AADSTS50079"),
        ),
        (
            entra::consent_required(),
            401,
            "consent_required",
            Some("AADSTS65001"),
        ),
        (entra::revoked(), 401, "invalid_grant", Some("AADSTS50173")),
        (entra::secret_expired(), 503, "token_unavailable", None),
        (
            Scripted::Status {
                status: 503,
                retry_after: Some(7),
            },
            503,
            "token_unavailable",
            None,
        ),
    ];
    for (n, (scripted, status, error, aadsts)) in cases.into_iter().enumerate() {
        s.entra.push(scripted);
        let caller = s.user(&format!("00000000-0000-0000-0000-00000000000{n}"));
        let reply = s.call(&caller).await;
        assert_eq!(reply.status, status, "{error}: {}", reply.text());
        let body = reply.json();
        assert_eq!(body["error"], error, "{body}");
        if status == 401 {
            let challenge = reply.header("www-authenticate").unwrap();
            assert!(
                challenge.contains("error=\"insufficient_claims\""),
                "{challenge}"
            );
            assert_eq!(body["aadsts"], aadsts.unwrap(), "{body}");
            let with_claims = error == "interaction_required";
            let encoded = format!("claims=\"{}\"", STANDARD.encode(claims));
            assert_eq!(challenge.contains(&encoded), with_claims, "{challenge}");
        } else {
            assert!(reply.header("retry-after").is_some(), "{error}");
        }
    }
    s.backend.assert_nothing_received();
    assert_eq!(s.obo("interaction_required"), 2);
    assert_eq!(s.obo("consent_required"), 1);
    assert_eq!(s.obo("invalid_grant"), 1);
    assert_eq!(s.obo("invalid_client"), 1);
    assert_eq!(s.obo("unavailable"), 1);
    assert_eq!(
        s.app.proxy.metrics().obo_cache_entries.get(),
        0,
        "no failure kept"
    );
    // Entra's own checks of the assertion: an id_token is refused (240002).
    let id_token = s.issuer.token(json!({"nonce": "n", "tid": TENANT}));
    let reply = s.call(&id_token).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["aadsts"], "AADSTS240002");
    s.backend.assert_nothing_received();
}

#[tokio::test]
async fn an_unreachable_token_endpoint_is_503_with_retry_after() {
    let dead = support::echo::dead_upstream().await;
    let entra = Mock::entra(EntraConfig::new(TENANT, APP, EntraAuth::Secret("s".into())))
        .start()
        .await;
    let credential = format!(
        "[credentials.web]\nkind = \"client_secret\"\ntenant_id = \"{TENANT}\"\nclient_id = \"{APP}\"\nsecret_env = \"WEB_SECRET\"\nauthority_host = \"http://{dead}\"\n"
    );
    let s = Setup::with(entra, &credential, "", &[("WEB_SECRET", "s")]).await;
    let reply = s
        .call(&s.user("00000000-0000-0000-0000-0000000000a1"))
        .await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.header("retry-after"), Some("5"));
    assert_eq!(reply.json()["error"], "token_unavailable");
    s.backend.assert_nothing_received();
}

#[tokio::test]
async fn a_hundred_concurrent_requests_of_one_caller_make_one_exchange() {
    let entra = Mock::entra(EntraConfig::new(TENANT, APP, EntraAuth::Secret("s".into())))
        .hold()
        .token(3600)
        .start()
        .await;
    let credential = format!(
        "[credentials.web]\nkind = \"client_secret\"\ntenant_id = \"{TENANT}\"\nclient_id = \"{APP}\"\nsecret_env = \"WEB_SECRET\"\nauthority_host = \"{}\"\n",
        entra.url()
    );
    let s = Arc::new(Setup::with(entra, &credential, "", &[("WEB_SECRET", "s")]).await);
    let caller = Arc::new(s.user("00000000-0000-0000-0000-0000000000a1"));
    let arrived = s.entra.arrived();
    let mut calls = Vec::new();
    for _ in 0..100 {
        let (s, caller) = (s.clone(), caller.clone());
        calls.push(tokio::spawn(async move { s.call(&caller).await.status }));
    }
    arrived.await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    s.entra.release();
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    assert_eq!(s.exchanges().len(), 1);
    assert_eq!(s.obo("exchanged"), 1);
    assert_eq!(
        s.obo("exchanged") + s.obo("shared") + s.obo("cache_hit"),
        100
    );
    let tokens: std::collections::HashSet<_> = s
        .backend
        .seen()
        .iter()
        .map(|r| r.header("authorization").unwrap().to_owned())
        .collect();
    assert_eq!(tokens.len(), 1);
}

#[tokio::test]
async fn a_managed_identity_as_federated_credential_exchanges_without_a_secret() {
    let imds = Mock::imds()
        .user_assigned_only()
        .identity(Id::Client("uami-client".into()))
        .start()
        .await;
    let issued = imds.issued_handle();
    let auth = EntraAuth::Assertion(Arc::new(move |a| issued.lock().iter().any(|t| t == a)));
    let entra = Mock::entra(EntraConfig::new(TENANT, APP, auth))
        .start()
        .await;
    let credential = format!(
        "[credentials.web]\nkind = \"managed_identity_federation\"\ntenant_id = \"{TENANT}\"\nclient_id = \"{APP}\"\nidentity_client_id = \"uami-client\"\nendpoint = \"{}\"\nauthority_host = \"{}\"\n",
        imds.url(),
        entra.url()
    );
    let s = Setup::with(entra, &credential, "", &[]).await;
    let reply = s
        .call(&s.user("00000000-0000-0000-0000-0000000000a1"))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let asked = &s.exchanges()[0];
    assert_eq!(
        asked.field("client_assertion"),
        Some(imds.last_token().as_str())
    );
    assert_eq!(asked.field("client_secret"), None);
    assert_eq!(
        imds.log()[0].param("resource"),
        Some("api://AzureADTokenExchange")
    );
    assert_eq!(sent_bearer(&s.backend), s.entra.last_token());
}

#[tokio::test]
async fn a_flood_of_distinct_callers_stays_within_the_cache_bound() {
    let s = Setup::start("obo_cache_entries = 20").await;
    let gauge = || s.app.proxy.metrics().obo_cache_entries.get();
    for n in 0..120 {
        let caller = s.user(&format!("00000000-0000-0000-0000-{n:012}"));
        assert_eq!(s.call(&caller).await.status, 200);
        assert!(gauge() <= 20, "{} entries after {n} callers", gauge());
    }
    assert_eq!(gauge(), 20);
    assert_eq!(s.exchanges().len(), 120);
}
