//! The provider over the wire: `DevServer` on http and https (with the dev CA), driven by
//! discovery as tollgate's sign-in and the SDKs are.

use std::net::SocketAddr;

use crate::dev::server::{DevServer, MAX_BODY_BYTES};
use crate::dev::tls::DevCa;

use super::*;

async fn start() -> (DevServer, reqwest::Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(DevCa::load_or_create(dir.path()).unwrap());
    let tls = crate::proxy::tls::client_config(ca.cert_path()).unwrap();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let server = DevServer::builder().https(ca, any).start().await.unwrap();
    (server, client, dir)
}

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}

#[tokio::test]
async fn sign_in_token_refresh_and_sign_out_over_http_and_https() {
    let (server, client, _dir) = start().await;
    let oauth = server.oauth().clone();
    for base in [server.url(), server.https_url().unwrap()] {
        let discovery = json_of(
            client
                .get(format!("{base}/.well-known/openid-configuration"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            discovery["issuer"], DEV_ISSUER,
            "the same iss over http and https"
        );
        assert_eq!(discovery["jwks_uri"], format!("{base}/keys"));
        assert_eq!(
            discovery["code_challenge_methods_supported"],
            serde_json::json!(["S256"])
        );
        let tenant = json_of(
            client
                .get(format!(
                    "{base}/{DEV_TENANT_ID}/v2.0/.well-known/openid-configuration"
                ))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            tenant["token_endpoint"],
            format!("{base}/{DEV_TENANT_ID}/oauth2/v2.0/token")
        );
        assert_eq!(tenant["issuer"], format!("{base}/{DEV_TENANT_ID}/v2.0"));

        let authorize = discovery["authorization_endpoint"].as_str().unwrap();
        let url = format!("{authorize}?{}", encode(&authorize_params(&[])));
        let page = client.get(&url).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert_eq!(page.headers()["cache-control"], "no-store");
        assert_eq!(page.headers()["x-frame-options"], "DENY");
        let form = sign_in_form(&url, &DevUser::default());
        let signed_in = client.post(authorize).form(&form).send().await.unwrap();
        assert_eq!(signed_in.status(), 302);
        let callback = Url::parse(signed_in.headers()["location"].to_str().unwrap()).unwrap();
        let code = query(&callback, "code").unwrap();

        let token_endpoint = discovery["token_endpoint"].as_str().unwrap();
        let redeem = [
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CALLBACK),
            ("code_verifier", VERIFIER),
        ];
        let tokens = client
            .post(token_endpoint)
            .basic_auth(oauth.client_id(), Some(oauth.client_secret().expose()))
            .form(&redeem)
            .send()
            .await
            .unwrap();
        assert_eq!(tokens.status(), 200);
        assert_eq!(tokens.headers()["cache-control"], "no-store");
        let tokens = json_of(tokens).await;
        let refresh = [
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", oauth.client_id()),
            ("client_secret", oauth.client_secret().expose()),
        ];
        let refreshed = client
            .post(token_endpoint)
            .form(&refresh)
            .send()
            .await
            .unwrap();
        assert_eq!(refreshed.status(), 200);

        let end_session = discovery["end_session_endpoint"].as_str().unwrap();
        let logout = format!(
            "{end_session}?post_logout_redirect_uri=http%3A%2F%2F127.0.0.1%3A3000%2F&state=s"
        );
        let back = client.get(logout).send().await.unwrap();
        assert_eq!(back.status(), 302);
        assert_eq!(back.headers()["location"], "http://127.0.0.1:3000/?state=s");
        let elsewhere = client
            .post(end_session)
            .form(&[("post_logout_redirect_uri", "https://evil.example/")])
            .send()
            .await
            .unwrap();
        assert_eq!(elsewhere.status(), 200);
        assert!(
            elsewhere
                .text()
                .await
                .unwrap()
                .contains("You have signed out")
        );
    }
    assert_eq!(
        (
            oauth.codes_issued(),
            oauth.codes_redeemed(),
            oauth.refreshes(),
            oauth.sign_outs()
        ),
        (2, 2, 2, 4)
    );
    server.stop().await;
}

#[tokio::test]
async fn keys_identity_and_limits_on_https_too() {
    let (server, client, _dir) = start().await;
    let base = server.https_url().unwrap();
    let keys = json_of(client.get(format!("{base}/keys")).send().await.unwrap()).await;
    assert_eq!(keys["keys"][0]["kid"], server.issuer().signing_key().kid);
    let imds = client
        .get(format!(
            "{base}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=api://x"
        ))
        .header("metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(imds.status(), 200);
    let instance = json_of(client.get(format!("{base}/common/discovery/instance?api-version=1.1&authorization_endpoint=https://x/{DEV_TENANT_ID}/oauth2/v2.0/authorize")).send().await.unwrap()).await;
    assert_eq!(
        instance["tenant_discovery_endpoint"],
        format!("{base}/{DEV_TENANT_ID}/v2.0/.well-known/openid-configuration")
    );
    let huge = vec![b'a'; MAX_BODY_BYTES + 1];
    let refused = client
        .post(format!("{base}/oauth2/v2.0/token"))
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 413);
    let missing = client.get(format!("{base}/nothing")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    server.stop().await;
}
