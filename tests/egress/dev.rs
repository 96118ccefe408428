//! `tollgate dev` end to end, in process: tollgate's own managed-identity credential gets its
//! token from the dev identity endpoint (App Service 2019 found in the environment, IMDS
//! through `endpoint`), its client-secret and managed-identity-federation credentials from the
//! dev token endpoint, and a second tollgate trusting the dev issuer accepts it, or refuses it
//! when the identity lacks the route's role.

use std::sync::Arc;

use tollgate::config::Algorithm;
use tollgate::dev::identity::{DEV_CLIENT_ID, Identity, IdentityEndpoint};
use tollgate::dev::issuer::{DEV_ISSUER, LocalIssuer, SigningKey};
use tollgate::dev::oauth::{DEV_CLIENT_SECRET, DEV_WEB_CLIENT_ID, OAuthSettings};
use tollgate::dev::server::DevServer;

use super::*;

/// A running `tollgate dev` and its `IDENTITY_HEADER`.
struct Dev {
    server: DevServer,
    header: String,
}

impl Dev {
    /// Serves a fresh issuer whose identity holds `roles`.
    async fn start(roles: &[&str]) -> Dev {
        let key = SigningKey::generate(Algorithm::RS256, "dev").unwrap();
        let issuer = LocalIssuer::new(DEV_ISSUER, key);
        let identity = Identity {
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ..Identity::default()
        };
        let header = IdentityEndpoint::generate_header().unwrap();
        let secret = header.expose().clone();
        let endpoint = Arc::new(IdentityEndpoint::new(issuer.clone(), identity, header));
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        let server = DevServer::builder()
            .issuer(issuer)
            .identity(endpoint)
            .oauth(OAuthSettings {
                app_roles: roles,
                ..OAuthSettings::default()
            })
            .start()
            .await
            .unwrap();
        Dev {
            server,
            header: secret,
        }
    }

    /// The App Service environment `tollgate dev` prints.
    fn app_service_env(&self) -> [(&'static str, String); 2] {
        [
            (
                "IDENTITY_ENDPOINT",
                format!("{}/msi/token", self.server.url()),
            ),
            ("IDENTITY_HEADER", self.header.clone()),
        ]
    }
}

/// The protected API: tollgate trusting the dev issuer in front of `backend`; every path
/// needs the app role `Orders.Read`, and the backend learns the caller's roles and app.
async fn protected_api(dev: &Dev, backend: &Backend) -> TestProxy {
    let toml = format!(
        "{}[[issuers]]\nname = \"dev\"\nissuer = \"{DEV_ISSUER}\"\ndiscovery = \"{}/.well-known/openid-configuration\"\naudiences = [\"api://orders\"]\n[identity.claims]\n\"X-User-Roles\" = \"roles\"\n\"X-Client-App\" = \"azp\"\n[[routes]]\nprefix = \"/\"\nroles_any = [\"Orders.Read\"]\n",
        support::server(backend.addr(), ""),
        dev.server.url()
    );
    let api = TestProxy::start(&toml).await;
    support::eventually("the dev issuer's keys are loaded", || async {
        api.admin_get("/readyz").await.status == 200
    })
    .await;
    api
}

/// The calling app's tollgate: target `api` (scope `api://orders/.default`) is the protected
/// API, with `credential` (a `[credentials.mi]` section) for its token.
fn caller(local: &Backend, api: &TestProxy, credential: &str) -> String {
    config(
        local,
        &format!(
            "[[egress.targets]]\nname = \"api\"\nurl = \"http://{}\"\ncredential = \"mi\"\nscope = \"api://orders/.default\"\n{credential}",
            api.addr
        ),
    )
}

/// Sends one request through the caller's egress and checks the protected backend got it with
/// the identity's role and app, carried by a token for `api://orders` from the dev issuer.
/// The cached token's expiry is exactly its `exp`, as managed identity answers with
/// `expires_on`. Returns the token.
async fn assert_accepted(app: &Running, backend: &Backend, client_app: &str) -> String {
    let token = assert_forwarded(app, backend, client_app).await;
    assert_eq!(
        app.expiry("mi", "api://orders/.default"),
        exp_of(&token) as f64
    );
    token
}

/// [`assert_accepted`] but for the cached expiry (the token endpoint answers with
/// `expires_in`, which lands within a second of `exp`).
async fn assert_forwarded(app: &Running, backend: &Backend, client_app: &str) -> String {
    let reply = app.get("/api/orders", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = backend.only();
    assert_eq!(seen.path, "/orders");
    assert_eq!(seen.header("x-user-roles"), Some("Orders.Read"));
    assert_eq!(seen.header("x-client-app"), Some(client_app));
    let token = seen
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .expect("the token is forwarded");
    let claims: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["iss"], DEV_ISSUER);
    assert_eq!(claims["aud"], "api://orders", "the scope without /.default");
    assert_eq!(claims["idtyp"], "app");
    token.to_owned()
}

#[tokio::test]
async fn app_service_environment_gets_a_token_the_dev_issuer_s_tollgate_accepts() {
    let logs = capture::start();
    let dev = Dev::start(&["Orders.Read"]).await;
    let (backend, local) = (Backend::start().await, Backend::start().await);
    let api = protected_api(&dev, &backend).await;
    let env = dev.app_service_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let credential = "[credentials.mi]\nkind = \"managed_identity\"\n";
    let app = start(&caller(&local, &api, credential), &env).await;
    let token = assert_accepted(&app, &backend, DEV_CLIENT_ID).await;
    let logs = logs.text();
    assert!(
        logs.contains("token for api://orders (system-assigned)"),
        "{logs}"
    );
    assert!(!logs.contains(&token), "a token in the logs");
    assert!(!logs.contains(&dev.header), "IDENTITY_HEADER in the logs");
}

#[tokio::test]
async fn imds_endpoint_gets_a_token_the_dev_issuer_s_tollgate_accepts() {
    let dev = Dev::start(&["Orders.Read"]).await;
    let (backend, local) = (Backend::start().await, Backend::start().await);
    let api = protected_api(&dev, &backend).await;
    let credential = format!(
        "[credentials.mi]\nkind = \"managed_identity\"\nendpoint = \"{}\"\n",
        dev.server.url()
    );
    let app = start(&caller(&local, &api, &credential), &[]).await;
    assert_accepted(&app, &backend, DEV_CLIENT_ID).await;

    // A user-assigned identity: IMDS is asked for it by client_id and the token says so.
    let backend = Backend::start().await;
    let api = protected_api(&dev, &backend).await;
    let user_assigned = "c0ffee00-0000-4000-8000-000000000001";
    let credential = format!("{credential}client_id = \"{user_assigned}\"\n");
    let app = start(&caller(&local, &api, &credential), &[]).await;
    assert_accepted(&app, &backend, user_assigned).await;
}

/// The web app's credentials against the dev token endpoint, as `tollgate dev` prints them: a
/// client secret, and the dev managed identity as the app's federated credential.
#[tokio::test]
async fn client_secret_and_federation_credentials_get_tokens_from_the_dev_token_endpoint() {
    let logs = capture::start();
    let dev = Dev::start(&["Orders.Read"]).await;
    let (backend, local) = (Backend::start().await, Backend::start().await);
    let url = dev.server.url();
    let tenant = tollgate::dev::identity::DEV_TENANT_ID;
    let app_registration = format!(
        "tenant_id = \"{tenant}\"\nclient_id = \"{DEV_WEB_CLIENT_ID}\"\nauthority_host = \"{url}/\"\n"
    );
    let credentials = [
        format!(
            "[credentials.mi]\nkind = \"client_secret\"\n{app_registration}secret_env = \"WEB_SECRET\"\n"
        ),
        format!(
            "[credentials.mi]\nkind = \"managed_identity_federation\"\n{app_registration}endpoint = \"{url}\"\n"
        ),
    ];
    let mut tokens = Vec::new();
    for credential in credentials {
        let api = protected_api(&dev, &backend).await;
        let app = start(
            &caller(&local, &api, &credential),
            &[("WEB_SECRET", DEV_CLIENT_SECRET)],
        )
        .await;
        let token = assert_forwarded(&app, &backend, DEV_WEB_CLIENT_ID).await;
        let expiry = app.expiry("mi", "api://orders/.default");
        assert!((expiry - exp_of(&token) as f64).abs() <= 1.0, "{expiry}");
        tokens.push(token);
        backend.clear();
    }
    let acr = |t: &str| -> serde_json::Value {
        let claims: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(t.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        claims["appidacr"].clone()
    };
    assert_eq!((acr(&tokens[0]), acr(&tokens[1])), ("1".into(), "2".into()));
    let logs = logs.text();
    assert!(!logs.contains(DEV_CLIENT_SECRET), "the secret in the logs");
    assert!(
        tokens.iter().all(|t| !logs.contains(t.as_str())),
        "a token in the logs"
    );
}

#[tokio::test]
async fn a_wrong_identity_header_gets_no_token() {
    let logs = capture::start();
    let dev = Dev::start(&["Orders.Read"]).await;
    let (backend, local) = (Backend::start().await, Backend::start().await);
    let api = protected_api(&dev, &backend).await;
    let endpoint = format!("{}/msi/token", dev.server.url());
    let env = [
        ("IDENTITY_ENDPOINT", endpoint.as_str()),
        ("IDENTITY_HEADER", "not-the-secret"),
    ];
    let credential = "[credentials.mi]\nkind = \"managed_identity\"\n";
    let app = start(&caller(&local, &api, credential), &env).await;
    let reply = app.get("/api/orders", &[]).await;
    assert_no_token(&reply, &["App Service", "401", "X-IDENTITY-HEADER"]);
    assert!(!reply.text().contains(&dev.header));
    backend.assert_nothing_received();
    let logs = logs.text();
    assert!(logs.contains("does not match IDENTITY_HEADER"), "{logs}");
    assert!(
        !logs.contains("not-the-secret") && !logs.contains(&dev.header),
        "{logs}"
    );
}

#[tokio::test]
async fn an_identity_without_the_role_is_refused_inbound() {
    let dev = Dev::start(&["Orders.Write"]).await;
    let (backend, local) = (Backend::start().await, Backend::start().await);
    let api = protected_api(&dev, &backend).await;
    let credential = format!(
        "[credentials.mi]\nkind = \"managed_identity\"\nendpoint = \"{}\"\n",
        dev.server.url()
    );
    let app = start(&caller(&local, &api, &credential), &[]).await;
    let reply = app.get("/api/orders", &[]).await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert_eq!(reply.json()["error"], "insufficient_scope");
    backend.assert_nothing_received();
}
