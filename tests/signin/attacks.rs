//! Every way in that must not work. Each refusal: the backend received nothing.

use reqwest::Method;
use tollgate::dev::oauth::DevUser;

use crate::rig::{Rig, Setup, location, user_in_groups};

/// The authorize URL with `name` set to `value` (added if absent).
fn with_param(url: &str, name: &str, value: &str) -> String {
    let mut u = url::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .into_owned()
        .filter(|(k, _)| k != name)
        .chain([(name.to_owned(), value.to_owned())])
        .collect();
    u.query_pairs_mut().clear().extend_pairs(pairs);
    u.to_string()
}

#[tokio::test]
async fn unauthenticated_navigations_go_to_sign_in_and_api_calls_get_401_with_login_url() {
    let rig = Rig::start().await;
    let b = rig.browser();
    let reply = b
        .get("/orders/7?tab=a&b=c", &[("sec-fetch-mode", "navigate")])
        .await;
    assert_eq!(reply.status(), 302);
    assert_eq!(
        location(&reply),
        "/.auth/login/aad?post_login_redirect_uri=%2Forders%2F7%3Ftab%3Da%26b%3Dc"
    );
    // An older browser: no Sec-Fetch-Mode, text/html accepted.
    let reply = b.get("/x", &[("accept", "text/html,*/*")]).await;
    assert_eq!(reply.status(), 302);
    // fetch(), XHR, API clients and other methods: 401 JSON with the login URL.
    for (method, headers) in [
        (
            Method::GET,
            vec![("sec-fetch-mode", "cors"), ("accept", "text/html")],
        ),
        (Method::GET, vec![("accept", "application/json")]),
        (Method::POST, vec![("sec-fetch-mode", "navigate")]),
        (Method::DELETE, vec![]),
    ] {
        let reply = b.request(method.clone(), "/x", &headers).await;
        assert_eq!(reply.status(), 401, "{method} {headers:?}");
        let body: serde_json::Value = reply.json().await.unwrap();
        assert_eq!(
            body["login_url"],
            "/.auth/login/aad?post_login_redirect_uri=%2Fx"
        );
    }
    // A route that answers 401 has no login_url; an anonymous one forwards.
    let reply = b.get("/api/x", &[("sec-fetch-mode", "navigate")]).await;
    assert_eq!(reply.status(), 401);
    assert!(
        reply
            .json::<serde_json::Value>()
            .await
            .unwrap()
            .get("login_url")
            .is_none()
    );
    rig.backend.assert_nothing_received();
    assert_eq!(b.get("/public/x", &[]).await.status(), 200);
}

#[tokio::test]
async fn callbacks_without_this_browsers_state_are_refused_before_any_redemption() {
    let rig = Rig::start().await;
    let b = rig.browser();
    let authorize = b.start_login("/").await;
    let callback = b.authorize(&authorize, &DevUser::default()).await;
    let url = url::Url::parse(&callback).unwrap();
    let code = url
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    // Wrong state, no state, and a browser without the login cookie (login CSRF).
    let cases = [
        format!("/.auth/login/aad/callback?code={code}&state=forged"),
        format!("/.auth/login/aad/callback?code={code}"),
    ];
    for path in &cases {
        let fresh = rig.browser();
        // Give the fresh browser this login's cookie, so only the state is wrong.
        fresh.jar.lock().extend(b.jar.lock().clone());
        let reply = fresh.get(path, &[("accept", "text/html")]).await;
        assert_eq!(reply.status(), 400, "{path}");
        assert!(reply.text().await.unwrap().contains("state_mismatch"));
    }
    let stranger = rig.browser();
    let reply = stranger.get_url(&callback, &[]).await;
    assert_eq!(reply.status(), 400);
    let body: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(body["error"], "state_mismatch");
    // A tampered login cookie.
    let tampered = rig.browser();
    let mut cookie = b.jar.lock()["TollgateLogin"].clone();
    let last = cookie.pop().unwrap();
    cookie.push(if last == 'A' { 'B' } else { 'A' });
    tampered.jar.lock().insert("TollgateLogin".into(), cookie);
    assert_eq!(tampered.get_url(&callback, &[]).await.status(), 400);
    assert_eq!(rig.dev.oauth().codes_redeemed(), 0);
    assert_eq!(rig.logins("state_mismatch"), 4);
    rig.backend.assert_nothing_received();
}

#[tokio::test]
async fn a_nonce_other_than_this_logins_is_refused() {
    let rig = Rig::start().await;
    let b = rig.browser();
    let authorize = b.start_login("/").await;
    // The provider is asked (by someone) with another nonce: its id_token carries that one.
    let forged = with_param(&authorize, "nonce", "someone-elses-nonce");
    let callback = b.authorize(&forged, &DevUser::default()).await;
    let reply = b.get_url(&callback, &[]).await;
    assert_eq!(reply.status(), 400);
    assert_eq!(
        reply.json::<serde_json::Value>().await.unwrap()["error"],
        "nonce_mismatch"
    );
    assert!(b.session_chunks().is_empty());
    assert_eq!(rig.logins("nonce_mismatch"), 1);
    rig.backend.assert_nothing_received();
}

#[tokio::test]
async fn a_code_for_another_pkce_challenge_or_a_replayed_code_is_not_redeemed() {
    let rig = Rig::start().await;
    let b = rig.browser();
    let authorize = b.start_login("/").await;
    // A challenge that is not S256 of this login's verifier: the provider refuses the code.
    let forged = with_param(
        &authorize,
        "code_challenge",
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
    );
    let callback = b.authorize(&forged, &DevUser::default()).await;
    let reply = b.get_url(&callback, &[]).await;
    assert_eq!(reply.status(), 502);
    assert_eq!(
        reply.json::<serde_json::Value>().await.unwrap()["error"],
        "code_redemption_failed"
    );
    // A good login, then its callback replayed with the same (captured) login cookie.
    let b = rig.browser();
    let authorize = b.start_login("/").await;
    let login_cookie = b.jar.lock()["TollgateLogin"].clone();
    let callback = b.authorize(&authorize, &DevUser::default()).await;
    assert_eq!(b.get_url(&callback, &[]).await.status(), 302);
    let replay = rig.browser();
    replay
        .jar
        .lock()
        .insert("TollgateLogin".into(), login_cookie);
    let reply = replay.get_url(&callback, &[]).await;
    assert_eq!(reply.status(), 502, "a code works once");
    assert!(replay.session_chunks().is_empty());
    assert_eq!(rig.logins("code_redemption_failed"), 2);
    rig.backend.assert_nothing_received();
}

#[tokio::test]
async fn a_provider_error_is_a_403_page() {
    let rig = Rig::start().await;
    let b = rig.browser();
    let authorize = b.start_login("/").await;
    let mut form = tollgate::dev::oauth::sign_in_form(&authorize, &DevUser::default());
    form.retain(|(k, _)| k != "action");
    form.push(("action".into(), "cancel".into()));
    let reply = b.http.post(&authorize).form(&form).send().await.unwrap();
    let callback = location(&reply);
    let reply = b.get_url(&callback, &[("accept", "text/html")]).await;
    assert_eq!(reply.status(), 403);
    let page = reply.text().await.unwrap();
    assert!(
        page.contains("access_denied") && page.contains("<!doctype html>"),
        "{page}"
    );
    assert_eq!(rig.logins("provider_error"), 1);
    rig.backend.assert_nothing_received();
}

#[tokio::test]
async fn redirects_after_login_and_logout_stay_on_this_origin() {
    let rig = Rig::with(Setup {
        login: "allowed_redirects = [\"https://portal.example.com/app\"]",
        ..Setup::default()
    })
    .await;
    for (target, expected) in [
        ("https://evil.example/", "/"),
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
        (
            "https://portal.example.com/app/home",
            "https://portal.example.com/app/home",
        ),
        ("https://portal.example.com/other", "/"),
        ("/orders?id=7", "/orders?id=7"),
    ] {
        let b = rig.browser();
        let authorize = b.start_login(target).await;
        let callback = b.authorize(&authorize, &DevUser::default()).await;
        let reply = b.get_url(&callback, &[]).await;
        assert_eq!(location(&reply), expected, "{target}");
        let logout = format!(
            "/.auth/logout?post_logout_redirect_uri={}",
            url::form_urlencoded::byte_serialize(target.as_bytes()).collect::<String>()
        );
        let reply = b.get(&logout, &[]).await;
        let end = url::Url::parse(&location(&reply)).unwrap();
        let back = end
            .query_pairs()
            .find(|(k, _)| k == "post_logout_redirect_uri")
            .map(|(_, v)| v.into_owned());
        match expected {
            "/" => assert_eq!(back, None, "{target}"),
            e if e.starts_with('/') => assert_eq!(back, Some(format!("{}{e}", b.base))),
            e => assert_eq!(back.as_deref(), Some(e)),
        }
    }
    rig.backend.assert_nothing_received();
}

#[tokio::test]
async fn a_tampered_truncated_or_incomplete_session_cookie_is_no_session() {
    let rig = Rig::start().await;
    let signed = rig.signed_in(&user_in_groups(150)).await;
    let chunks = signed.session_chunks();
    assert!(chunks.len() >= 3);
    let variants: Vec<(&str, Vec<(String, String)>)> = vec![
        ("a changed byte", {
            let mut c = chunks.clone();
            let v = &mut c[1].1;
            let mid = v.len() / 2;
            let flipped = if &v[mid..mid + 1] == "A" { "B" } else { "A" };
            v.replace_range(mid..mid + 1, flipped);
            c
        }),
        ("a truncated chunk", {
            let mut c = chunks.clone();
            let last = c.len() - 1;
            c[last].1.truncate(10);
            c
        }),
        ("a missing chunk", {
            let mut c = chunks.clone();
            c.remove(1);
            c
        }),
        ("chunks swapped", {
            let mut c = chunks.clone();
            let (a, b) = (c[1].1.clone(), c[2].1.clone());
            c[1].1 = b;
            c[2].1 = a;
            c
        }),
    ];
    for (what, cookies) in variants {
        let b = rig.browser();
        b.jar.lock().extend(cookies.clone());
        let reply = b.get("/hello", &[("sec-fetch-mode", "navigate")]).await;
        assert_eq!(reply.status(), 302, "{what}");
        // Every chunk the browser sent is cleared.
        assert!(
            b.session_chunks().is_empty(),
            "{what}: {:?}",
            b.session_chunks()
        );
        let reply = b.get("/.auth/me", &[]).await;
        assert_eq!(reply.status(), 401, "{what}");
    }
    rig.backend.assert_nothing_received();
}

#[tokio::test]
async fn unsafe_methods_with_the_session_cookie_need_this_origin() {
    let rig = Rig::with(Setup {
        login: "allowed_origins = [\"https://spa.example.com\"]",
        ..Setup::default()
    })
    .await;
    let b = rig.signed_in(&DevUser::default()).await;
    let own = b.base.clone();
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        for headers in [
            vec![("origin", "https://evil.example")],
            vec![("origin", "null")],
            vec![],
            vec![("sec-fetch-site", "cross-site")],
            vec![("sec-fetch-site", "same-site")],
        ] {
            let reply = b.request(method.clone(), "/hello", &headers).await;
            assert_eq!(reply.status(), 403, "{method} {headers:?}");
            let body: serde_json::Value = reply.json().await.unwrap();
            assert_eq!(body["error"], "csrf");
        }
        rig.backend.assert_nothing_received();
        for headers in [
            vec![("origin", own.as_str())],
            vec![("origin", "https://spa.example.com")],
            vec![("sec-fetch-site", "same-origin")],
        ] {
            let reply = b.request(method.clone(), "/hello", &headers).await;
            assert_eq!(reply.status(), 200, "{method} {headers:?}");
        }
        rig.backend.clear();
    }
    // On an anonymous route, a cross-site POST goes on without the session's identity.
    let reply = b
        .request(
            Method::POST,
            "/public/form",
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(reply.status(), 200);
    assert!(rig.backend.only().header("x-ms-client-principal").is_none());
    // Safe methods need nothing.
    rig.backend.clear();
    let reply = b.get("/hello", &[("origin", "https://evil.example")]).await;
    assert_eq!(reply.status(), 200);
}

#[tokio::test]
async fn a_bearer_token_decides_alone_beside_a_session_cookie() {
    let rig = Rig::start().await;
    let b = rig.signed_in(&DevUser::default()).await;
    let reply = b
        .get("/hello", &[("authorization", "Bearer not.a.token")])
        .await;
    assert_eq!(reply.status(), 401);
    let reply = b
        .get("/hello", &[("authorization", "Basic dXNlcjpwYXNz")])
        .await;
    assert_eq!(reply.status(), 401);
    rig.backend.assert_nothing_received();
    // A valid bearer token beside the cookie: its identity, no session token headers.
    let token = rig
        .dev
        .issuer()
        .mint(&tollgate::dev::issuer::TokenSpec {
            audience: "api://tollgate-dev".into(),
            object_id: Some("00000000-0000-4000-8000-00000000cafe".into()),
            client_app: Some("app-caller".into()),
            lifetime: std::time::Duration::from_secs(600),
            ..tollgate::dev::issuer::TokenSpec::default()
        })
        .unwrap();
    let reply = b
        .get("/hello", &[("authorization", &format!("Bearer {token}"))])
        .await;
    assert_eq!(reply.status(), 200);
    let seen = rig.backend.only();
    assert!(seen.header("x-ms-token-aad-access-token").is_none());
    assert_ne!(
        seen.header("x-ms-client-principal-name"),
        Some("dev.user@tollgate.dev")
    );
}

#[tokio::test]
async fn forged_token_headers_never_reach_the_backend() {
    let rig = Rig::start().await;
    let b = rig.browser();
    let reply = b
        .get(
            "/public/x",
            &[
                ("x-ms-token-aad-access-token", "forged"),
                ("X-MS-TOKEN-AAD-ID-TOKEN", "forged"),
                ("x-ms-token-aad-refresh-token", "forged"),
            ],
        )
        .await;
    assert_eq!(reply.status(), 200);
    let seen = rig.backend.only();
    assert!(
        seen.headers
            .iter()
            .all(|(k, _)| !k.to_ascii_lowercase().starts_with("x-ms-token"))
    );
}

#[tokio::test]
async fn with_the_store_unreachable_session_requests_get_503_and_bearer_requests_pass() {
    // Nothing listens on port 1.
    let rig = Rig::with(Setup {
        login: "session_store = \"redis://127.0.0.1:1/0\"",
        ..Setup::default()
    })
    .await;
    let b = rig.browser();
    let authorize = b.start_login("/").await;
    let callback = b.authorize(&authorize, &DevUser::default()).await;
    let reply = b.get_url(&callback, &[]).await;
    assert_eq!(reply.status(), 503);
    assert_eq!(rig.logins("session_store_unavailable"), 1);
    rig.backend.assert_nothing_received();
    assert_eq!(b.get("/public/x", &[]).await.status(), 200);
}
