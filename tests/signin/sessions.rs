//! Sign-in that works: identity and tokens for the backend, refresh (one per burst), the
//! lifetime and `/.auth/refresh`, logout, replicas, key rotation, the managed identity as
//! federated credential.

use std::time::Duration;

use reqwest::Method;
use tollgate::dev::oauth::{DEV_USER_OBJECT_ID, DEV_WEB_CLIENT_ID, DevUser};

use crate::rig::{KEY, OTHER_KEY, Rig, Setup, location, user_in_groups};
use crate::support::eventually;

#[tokio::test]
async fn sign_in_gives_the_backend_the_users_identity_and_tokens() {
    let rig = Rig::start().await;
    let user = DevUser {
        roles: vec!["Admin".into()],
        ..DevUser::default()
    };
    let browser = rig.signed_in(&user).await;
    assert_eq!(rig.logins("success"), 1);
    assert_eq!(rig.dev.oauth().codes_redeemed(), 1);
    rig.backend.assert_nothing_received();

    let reply = browser.get("/hello?x=1", &[("cookie", "theme=dark")]).await;
    assert_eq!(reply.status(), 200);
    let seen = rig.backend.only();
    assert_eq!(
        seen.header("x-ms-client-principal-name"),
        Some("dev.user@tollgate.dev")
    );
    assert_eq!(
        seen.header("x-ms-client-principal-id"),
        Some(DEV_USER_OBJECT_ID)
    );
    assert_eq!(seen.header("x-ms-client-principal-idp"), Some("aad"));
    let access = seen
        .header("x-ms-token-aad-access-token")
        .expect("access token header");
    let (_, claims) = tollgate::inbound::jwt::dangerous::decode_unverified(access).unwrap();
    assert_eq!(claims["aud"], "api://orders");
    assert_eq!(
        claims["scp"], "Orders.Read",
        "the delegated scope an API checks"
    );
    let id = seen
        .header("x-ms-token-aad-id-token")
        .expect("id token header");
    let (_, id_claims) = tollgate::inbound::jwt::dangerous::decode_unverified(id).unwrap();
    assert_eq!(id_claims["aud"], DEV_WEB_CLIENT_ID);
    let expires = seen.header("x-ms-token-aad-expires-on").unwrap();
    assert!(
        expires.ends_with(".0000000Z") && expires.len() == 28,
        "{expires}"
    );
    assert!(seen.header("x-ms-token-aad-refresh-token").is_none());
    // The principal is App Service's: roles as repeated `roles` entries, role_typ .NET's.
    let principal = seen.header("x-ms-client-principal").unwrap();
    let principal: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::STANDARD, principal).unwrap(),
    )
    .unwrap();
    assert!(
        principal["claims"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["typ"] == "roles" && c["val"] == "Admin")
    );
    assert_eq!(
        principal["role_typ"],
        "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
    );
    // tollgate's own cookies never reach the backend; the app's do.
    assert_eq!(seen.header("cookie"), Some("theme=dark"));
    // Route requirements apply to the session's claims.
    rig.backend.clear();
    assert_eq!(browser.get("/admin/x", &[]).await.status(), 200);
    // /.auth/me: Easy Auth's array, without tokens unless me_tokens.
    let me = browser.get("/.auth/me", &[]).await;
    assert_eq!(me.status(), 200);
    let me: serde_json::Value = me.json().await.unwrap();
    assert_eq!(me[0]["provider_name"], "aad");
    assert_eq!(me[0]["user_id"], "dev.user@tollgate.dev");
    assert!(me[0].get("access_token").is_none());
}

#[tokio::test]
async fn requirements_refuse_a_session_user_without_the_role() {
    let rig = Rig::start().await;
    let browser = rig.signed_in(&DevUser::default()).await;
    let reply = browser.get("/admin/x", &[]).await;
    assert_eq!(reply.status(), 403);
    rig.backend.assert_nothing_received();
}

#[tokio::test]
async fn me_tokens_and_the_refresh_token_header_when_enabled() {
    let rig = Rig::with(Setup {
        login: "me_tokens = true\nrefresh_token_header = true",
        ..Setup::default()
    })
    .await;
    let browser = rig.signed_in(&DevUser::default()).await;
    let me: serde_json::Value = browser.get("/.auth/me", &[]).await.json().await.unwrap();
    for key in ["access_token", "id_token", "refresh_token", "expires_on"] {
        assert!(me[0][key].is_string(), "{key}: {me}");
    }
    browser.get("/hello", &[]).await;
    assert!(
        rig.backend
            .only()
            .header("x-ms-token-aad-refresh-token")
            .is_some()
    );
}

#[tokio::test]
async fn form_post_callback_signs_in_too() {
    let rig = Rig::start().await;
    let browser = rig.browser();
    let authorize = browser.start_login("/after").await;
    let callback = browser.authorize(&authorize, &DevUser::default()).await;
    let query = url::Url::parse(&callback)
        .unwrap()
        .query()
        .unwrap()
        .to_owned();
    let reply = browser
        .request(
            Method::POST,
            "/.auth/login/aad/callback",
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .await;
    // No body: refused (state first), nothing redeemed.
    assert_eq!(reply.status(), 400);
    // The login cookie went with that failure: start again and post the form.
    let authorize = browser.start_login("/after").await;
    let callback = browser.authorize(&authorize, &DevUser::default()).await;
    let query2 = url::Url::parse(&callback)
        .unwrap()
        .query()
        .unwrap()
        .to_owned();
    assert_ne!(query, query2);
    let reply = browser
        .http
        .post(format!("{}/.auth/login/aad/callback", browser.base))
        .header("cookie", browser.cookie_header())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(query2)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 302);
    assert_eq!(location(&reply), "/after");
    browser.take_cookies(&reply);
    assert_eq!(browser.get("/after", &[]).await.status(), 200);
}

#[tokio::test]
async fn a_large_session_is_chunked_and_logout_clears_every_chunk() {
    let rig = Rig::start().await;
    let browser = rig.signed_in(&user_in_groups(150)).await;
    let chunks = browser.session_chunks();
    assert!(chunks.len() >= 3, "{} chunks", chunks.len());
    for (name, value) in &chunks {
        assert!(name.len() + 1 + value.len() <= 4000, "{name}");
    }
    assert_eq!(browser.get("/hello", &[]).await.status(), 200);
    let reply = browser
        .get("/.auth/logout?post_logout_redirect_uri=/bye", &[])
        .await;
    assert_eq!(reply.status(), 302);
    let cleared: Vec<String> = reply
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    for (name, _) in &chunks {
        assert!(
            cleared.iter().any(|c| c.starts_with(&format!("{name}=;"))
                && c.contains("Max-Age=0")
                && c.contains("Path=/")),
            "{name} not cleared: {cleared:?}"
        );
    }
    assert!(browser.session_chunks().is_empty());
    // Signed out at the provider too, coming back to /bye on this origin.
    let end = url::Url::parse(&location(&reply)).unwrap();
    assert!(end.path().ends_with("/oauth2/v2.0/logout"), "{end}");
    let back: Vec<(String, String)> = end.query_pairs().into_owned().collect();
    assert!(back.contains(&(
        "post_logout_redirect_uri".into(),
        format!("{}/bye", browser.base)
    )));
    assert!(back.contains(&("client_id".into(), DEV_WEB_CLIENT_ID.into())));
    rig.backend.clear();
    let reply = browser
        .get("/hello", &[("sec-fetch-mode", "navigate")])
        .await;
    assert_eq!(reply.status(), 302);
    assert!(location(&reply).starts_with("/.auth/login/aad?"));
    rig.backend.assert_nothing_received();
}

#[tokio::test]
async fn refresh_happens_once_for_a_burst_and_every_response_carries_the_new_cookie() {
    let rig = Rig::start().await;
    // Tokens that are always within the 5-minute refresh margin.
    rig.dev
        .oauth()
        .set_access_token_lifetime(Duration::from_secs(120));
    let browser = rig.signed_in(&DevUser::default()).await;
    // Twenty requests at once, all with the cookie from before the refresh.
    let before = browser.cookie_header();
    let replies = futures_util::future::join_all((0..20).map(|_| {
        let (b, cookie) = (browser.clone(), before.clone());
        async move {
            b.http
                .get(format!("{}/hello", b.base))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
        }
    }))
    .await;
    assert_eq!(rig.dev.oauth().refreshes(), 1, "one refresh for the burst");
    let mut tokens = std::collections::HashSet::new();
    for reply in &replies {
        assert_eq!(reply.status(), 200);
        assert!(
            reply.headers().get("set-cookie").is_some(),
            "every response carries the cookie"
        );
    }
    for seen in rig.backend.seen() {
        tokens.insert(
            seen.header("x-ms-token-aad-access-token")
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(tokens.len(), 1, "all 20 went on with the one new token");
    assert_eq!(
        rig.proxy
            .metrics()
            .session_refreshes
            .with_label_values(&["success"])
            .get(),
        1
    );
}

#[tokio::test]
async fn a_failed_refresh_of_an_expired_token_ends_the_session() {
    let rig = Rig::start().await;
    rig.dev
        .oauth()
        .set_access_token_lifetime(Duration::from_secs(1));
    let browser = rig.signed_in(&DevUser::default()).await;
    rig.dev.oauth().refuse_refresh_tokens(true);
    // Once the access token has expired, the session is over.
    eventually("the session ends", || {
        let browser = browser.clone();
        async move {
            let reply = browser
                .get("/hello", &[("sec-fetch-mode", "navigate")])
                .await;
            reply.status() == 302
        }
    })
    .await;
    assert!(
        browser.session_chunks().is_empty(),
        "the cookies are cleared"
    );
    assert!(
        rig.backend
            .seen()
            .iter()
            .all(|s| s.header("x-ms-token-aad-access-token").is_some())
    );
}

#[tokio::test]
async fn past_its_lifetime_a_session_only_renews_at_auth_refresh() {
    let rig = Rig::with(Setup {
        login: "session_lifetime = \"1s\"",
        ..Setup::default()
    })
    .await;
    let browser = rig.signed_in(&DevUser::default()).await;
    eventually("the session stops authenticating", || {
        let browser = browser.clone();
        async move { browser.get("/api/x", &[]).await.status() == 401 }
    })
    .await;
    rig.backend.clear();
    let reply = browser.get("/.auth/refresh", &[]).await;
    assert_eq!(reply.status(), 200);
    assert_eq!(browser.get("/api/x", &[]).await.status(), 200);
    // Without a session, /.auth/refresh is 401.
    let stranger = rig.browser();
    assert_eq!(stranger.get("/.auth/refresh", &[]).await.status(), 401);
}

#[tokio::test]
async fn replicas_sharing_keys_share_sessions_and_rotation_keeps_them() {
    let first = Rig::start().await;
    let browser = first.signed_in(&DevUser::default()).await;
    // A replica with the same key: the same session opens there, no store, no stickiness.
    let second = Rig::with(Setup::default()).await;
    let mut elsewhere = second.browser();
    elsewhere.jar = browser.jar.clone();
    assert_eq!(elsewhere.get("/hello", &[]).await.status(), 200);
    assert_eq!(second.backend.count(), 1);
    // A replica whose first key is new and second the old one still opens it (rotation).
    let rotated = Rig::with(Setup {
        key: &format!("{OTHER_KEY}\", \"{KEY}"),
        ..Setup::default()
    })
    .await;
    let mut rotating = rotated.browser();
    rotating.jar = browser.jar.clone();
    assert_eq!(rotating.get("/hello", &[]).await.status(), 200);
    // One without the old key does not: no session, and the chunks are cleared.
    let foreign = Rig::with(Setup {
        key: OTHER_KEY,
        ..Setup::default()
    })
    .await;
    let mut stranger = foreign.browser();
    stranger.jar = std::sync::Arc::new(parking_lot::Mutex::new(browser.jar.lock().clone()));
    let reply = stranger
        .get("/hello", &[("sec-fetch-mode", "navigate")])
        .await;
    assert_eq!(reply.status(), 302);
    assert!(stranger.session_chunks().is_empty());
    foreign.backend.assert_nothing_received();
}

#[tokio::test]
async fn a_managed_identity_as_federated_credential_signs_users_in() {
    let dev = tollgate::dev::server::DevServer::builder()
        .start()
        .await
        .unwrap();
    let settings = format!(
        "kind = \"managed_identity_federation\"\nidentity_client_id = \"{}\"\nendpoint = \"{}\"\n",
        tollgate::dev::identity::DEV_CLIENT_ID,
        dev.url(),
    );
    let rig = Rig::with_credential(dev, &settings, &[]).await;
    let browser = rig.signed_in(&DevUser::default()).await;
    assert_eq!(browser.get("/hello", &[]).await.status(), 200);
    assert_eq!(rig.logins("success"), 1);
}

/// Each credential kind an app registration can prove itself with, besides the secret and the
/// managed identity: a certificate (`private_key_jwt`) and workload identity (a Kubernetes
/// token file, here one the dev issuer signed for `api://AzureADTokenExchange`).
#[tokio::test]
async fn a_certificate_or_workload_identity_signs_users_in() {
    let dir = tempfile::tempdir().unwrap();
    // Certificate: registered with the provider, its key signs the assertion.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["web".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let pem = dir.path().join("web.pem");
    std::fs::write(&pem, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
    let settings = tollgate::dev::oauth::OAuthSettings {
        certificates: vec![cert.der().clone()],
        ..Default::default()
    };
    let dev = tollgate::dev::server::DevServer::builder()
        .oauth(settings)
        .start()
        .await
        .unwrap();
    let settings = format!(
        "kind = \"client_certificate\"\ncertificate = \"{}\"\nassertion_algorithm = \"RS256\"\n",
        pem.display()
    );
    let rig = Rig::with_credential(dev, &settings, &[]).await;
    let browser = rig.signed_in(&DevUser::default()).await;
    assert_eq!(browser.get("/hello", &[]).await.status(), 200);

    // Workload identity: the projected token, read from its file at each redemption.
    let dev = tollgate::dev::server::DevServer::builder()
        .start()
        .await
        .unwrap();
    let token = dev
        .issuer()
        .mint(&tollgate::dev::issuer::TokenSpec {
            audience: tollgate::dev::oauth::TOKEN_EXCHANGE_AUDIENCE.into(),
            object_id: Some("00000000-0000-4000-8000-0000000000f1".into()),
            lifetime: Duration::from_secs(3600),
            ..tollgate::dev::issuer::TokenSpec::default()
        })
        .unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let settings = format!(
        "kind = \"workload_identity\"\ntoken_file = \"{}\"\n",
        file.display()
    );
    let rig = Rig::with_credential(dev, &settings, &[]).await;
    let browser = rig.signed_in(&DevUser::default()).await;
    assert_eq!(browser.get("/hello", &[]).await.status(), 200);
    // A wrong secret is a refused redemption, not a session.
    let dev = tollgate::dev::server::DevServer::builder()
        .start()
        .await
        .unwrap();
    let settings = "kind = \"client_secret\"\nsecret_env = \"WRONG\"\n";
    let rig = Rig::with_credential(dev, settings, &[("WRONG", "not-the-secret")]).await;
    let b = rig.browser();
    let authorize = b.start_login("/").await;
    let callback = b.authorize(&authorize, &DevUser::default()).await;
    assert_eq!(b.get_url(&callback, &[]).await.status(), 502);
    assert_eq!(rig.logins("code_redemption_failed"), 1);
    rig.backend.assert_nothing_received();
}

/// The keys alone do not make a session: one signed in for another client or issuer (before a
/// reload changed `[login]`) is no session now.
#[tokio::test]
async fn a_session_of_a_previous_login_configuration_is_no_session() {
    let rig = Rig::start().await;
    let browser = rig.signed_in(&DevUser::default()).await;
    assert_eq!(browser.get("/hello", &[]).await.status(), 200);
    let text = std::fs::read_to_string(&rig.proxy.config_path).unwrap();
    rig.proxy
        .write_config(&text.replace(DEV_WEB_CLIENT_ID, "00000000-0000-4000-8000-0000000000ee"));
    eventually("the reload", || async { rig.proxy.reloads("success") >= 1 }).await;
    rig.backend.clear();
    let reply = browser
        .get("/hello", &[("sec-fetch-mode", "navigate")])
        .await;
    assert_eq!(reply.status(), 302);
    assert!(browser.session_chunks().is_empty(), "cleared");
    rig.backend.assert_nothing_received();
}

/// A user in more groups than a token holds signs in: the id_token carries the overage marker,
/// and a route with `groups_any` decides on the groups from the dev Graph stand-in, as for a
/// bearer token; the backend's principal carries them.
#[tokio::test]
async fn an_overage_session_is_decided_on_its_groups_from_graph() {
    use tollgate::dev::graph::{group_id, overage_user};
    let dev = tollgate::dev::server::DevServer::builder()
        .start()
        .await
        .unwrap();
    let url = dev.url();
    let issuer = format!(
        "groups_overage = \"graph\"\ngraph_credential = \"graph\"\ngraph_endpoint = \"{url}\"\n"
    );
    let sections =
        format!("[credentials.graph]\nkind = \"managed_identity\"\nendpoint = \"{url}\"\n");
    let routes = format!(
        "[[routes]]\nprefix = \"/finance\"\ngroups_any = [\"{}\"]\n",
        group_id(300)
    );
    let rig = Rig::on(
        dev,
        Setup {
            issuer: &issuer,
            sections: &sections,
            routes: &routes,
            ..Setup::default()
        },
    )
    .await;
    let member = DevUser {
        oid: overage_user(300),
        ..DevUser::default()
    };
    let browser = rig.signed_in(&member).await;
    let reply = browser.get("/finance/q3", &[]).await;
    assert_eq!(reply.status(), 200);
    assert_eq!(rig.dev.graph().lookups(), 1);
    let seen = rig.backend.only();
    let id = seen.header("x-ms-token-aad-id-token").unwrap();
    let (_, id_claims) = tollgate::inbound::jwt::dangerous::decode_unverified(id).unwrap();
    assert!(id_claims.get("groups").is_none(), "an overage id_token");
    assert_eq!(id_claims["_claim_names"]["groups"], "src1");
    // 300 groups make a principal over 8 KiB: left out and counted, never truncated.
    assert!(seen.header("x-ms-client-principal").is_none());
    assert_eq!(
        rig.proxy
            .metrics()
            .identity_headers_dropped
            .with_label_values(&["x-ms-client-principal"])
            .get(),
        1
    );
    assert_eq!(
        seen.header("x-ms-client-principal-id"),
        Some(overage_user(300).as_str())
    );

    // A user in 250 groups: not in group 300; refused on its groups, nothing forwarded.
    rig.backend.clear();
    let outsider = DevUser {
        oid: overage_user(250),
        ..DevUser::default()
    };
    let browser = rig.signed_in(&outsider).await;
    let reply = browser.get("/finance/q3", &[]).await;
    assert_eq!(reply.status(), 403);
    rig.backend.assert_nothing_received();
    assert_eq!(rig.dev.graph().lookups(), 2);
}

/// Seed 001 end to end, offline: the user signs in (the app registration proves itself with
/// its secret here), the web app gets the user's access token in `X-MS-TOKEN-AAD-ACCESS-TOKEN`
/// and sends it to tollgate's egress listener, which exchanges it on behalf of the user at
/// `tollgate dev`'s token endpoint; the API receives a token for itself, naming the user.
#[tokio::test]
async fn the_web_app_calls_an_api_as_the_signed_in_user_through_tollgate_dev() {
    let dev = tollgate::dev::server::DevServer::builder()
        .start()
        .await
        .unwrap();
    let api = crate::support::echo::Backend::start().await;
    let extra = format!(
        "[egress]\nlisten = \"127.0.0.1:0\"\n\n[[egress.targets]]\nname = \"inventory\"\nurl = \"http://{}\"\nscope = \"api://inventory/.default\"\ncredential = \"web\"\non_behalf_of = \"dev\"\n",
        api.addr()
    );
    let settings = format!(
        "kind = \"client_secret\"\nsecret_env = \"WEB_SECRET\"\nauthority_host = \"{}/\"\n",
        dev.url()
    );
    let credential = format!(
        "{settings}tenant_id = \"{}\"\nclient_id = \"{DEV_WEB_CLIENT_ID}\"\n",
        dev.oauth().tenant_id()
    );
    let rig = Rig::on(
        dev,
        Setup {
            credential: Some(credential),
            extra,
            ..Setup::default()
        },
    )
    .await;
    let browser = rig.signed_in(&DevUser::default()).await;
    assert_eq!(browser.get("/hello", &[]).await.status(), 200);
    let user_token = rig
        .backend
        .only()
        .header("x-ms-token-aad-access-token")
        .unwrap()
        .to_owned();
    // The web app's call, as seed 001's /call-api makes it.
    let egress = rig.proxy.app.egress_addr.unwrap();
    let reply = reqwest::Client::new()
        .get(format!("http://{egress}/inventory/items"))
        .bearer_auth(&user_token)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200, "{}", reply.text().await.unwrap());
    let sent = api.only();
    let bearer = sent
        .header("authorization")
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap();
    assert_ne!(
        bearer, user_token,
        "the user's own token never reaches the API"
    );
    let (_, claims) = tollgate::inbound::jwt::dangerous::decode_unverified(bearer).unwrap();
    assert_eq!(claims["aud"], "api://inventory");
    assert_eq!(claims["oid"], DEV_USER_OBJECT_ID);
    // Without the user's token: 401, nothing sent.
    api.clear();
    let reply = reqwest::Client::new()
        .get(format!("http://{egress}/inventory/items"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 401);
    api.assert_nothing_received();
}
