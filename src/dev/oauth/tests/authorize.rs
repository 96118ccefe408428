//! The authorize endpoint: what is a page, what goes back to the client, and the code.

use super::*;

#[test]
fn the_page_echoes_the_request_and_has_the_fields_a_browser_test_fills() {
    let reply = fixture().authorize(&[("login_hint", "alice@contoso.test"), ("state", "<s>\"")]);
    assert_eq!(reply.status, StatusCode::OK);
    let html = page(&reply);
    for needle in [
        "action=\"/oauth2/v2.0/authorize\"",
        "id=\"name\" name=\"name\"",
        "id=\"preferred_username\" name=\"preferred_username\" value=\"alice@contoso.test\"",
        &format!("id=\"oid\" name=\"oid\" value=\"{DEV_USER_OBJECT_ID}\""),
        "id=\"roles\" name=\"roles\"",
        "id=\"groups\" name=\"groups\"",
        "id=\"sign-in\" name=\"action\" value=\"sign_in\"",
        "id=\"cancel\" name=\"action\" value=\"cancel\"",
        "<input type=\"hidden\" name=\"state\" value=\"&lt;s&gt;&quot;\">",
        &format!("<input type=\"hidden\" name=\"code_challenge\" value=\"{CHALLENGE}\">"),
    ] {
        assert!(html.contains(needle), "{needle} not in\n{html}");
    }
    assert!(!html.contains("<script"), "no script on the sign-in page");
}

#[test]
fn an_unknown_client_or_redirect_uri_is_a_page_never_a_redirect() {
    let f = fixture();
    let cases = [
        (
            vec![("client_id", "00000000-0000-0000-0000-000000000bad")],
            700016,
        ),
        (vec![("client_id", "")], 900144),
        (
            vec![(
                "redirect_uri",
                "https://evil.example/.auth/login/aad/callback",
            )],
            50011,
        ),
        (
            vec![("redirect_uri", "http://127.0.0.1:3000/elsewhere")],
            50011,
        ),
        (
            vec![(
                "redirect_uri",
                "http://127.0.0.1.evil.example/.auth/login/aad/callback",
            )],
            50011,
        ),
        (
            vec![(
                "redirect_uri",
                "http://user@127.0.0.1:3000/.auth/login/aad/callback",
            )],
            50011,
        ),
        (vec![("redirect_uri", "")], 900144),
        // Even with other errors a redirect would carry.
        (
            vec![
                ("redirect_uri", "https://evil.example/cb"),
                ("prompt", "none"),
            ],
            50011,
        ),
    ];
    for (changes, code) in cases {
        for reply in [
            f.authorize(&changes),
            f.submit(&changes, &[("action", "sign_in")]),
        ] {
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{changes:?}");
            assert!(
                page(&reply).contains(&format!("AADSTS{code}")),
                "{changes:?}: {}",
                page(&reply)
            );
        }
    }
    assert_eq!(f.oauth.codes_issued(), 0);
}

#[test]
fn registered_redirect_uris() {
    let f = fixture_with(OAuthSettings {
        redirect_uris: vec!["https://app.example/.auth/login/aad/callback".into()],
        ..OAuthSettings::default()
    });
    for uri in [
        "https://app.example/.auth/login/aad/callback",
        "http://localhost:8080/.auth/login/aad/callback",
        "http://[::1]:8080/.auth/login/aad/callback",
        "https://127.0.0.1:8443/app/.auth/login/aad/callback",
    ] {
        assert_eq!(
            f.authorize(&[("redirect_uri", uri)]).status,
            StatusCode::OK,
            "{uri}"
        );
    }
    // Listed URIs match exactly.
    let near = f.authorize(&[(
        "redirect_uri",
        "https://app.example/.auth/login/aad/callback/",
    )]);
    assert_eq!(near.status, StatusCode::BAD_REQUEST);
}

#[test]
fn errors_the_client_may_see_go_back_to_it_with_state() {
    let f = fixture();
    let cases = [
        (
            vec![("response_type", "code id_token")],
            "unsupported_response_type",
            700054,
        ),
        (
            vec![("response_type", "token")],
            "unsupported_response_type",
            700054,
        ),
        (vec![("prompt", "none")], "login_required", 50058),
        (
            vec![("code_challenge_method", "plain")],
            "invalid_request",
            50149,
        ),
        (
            vec![("code_challenge_method", "")],
            "invalid_request",
            50149,
        ),
        (vec![("code_challenge", "short")], "invalid_request", 50147),
        (vec![("scope", "")], "invalid_request", 900144),
        (
            vec![("response_mode", "fragment")],
            "invalid_request",
            9002313,
        ),
    ];
    for (changes, error, code) in cases {
        let url = location(&f.authorize(&changes));
        assert!(url.as_str().starts_with(CALLBACK), "{url}");
        assert_eq!(query(&url, "error").as_deref(), Some(error), "{changes:?}");
        let description = query(&url, "error_description").unwrap();
        assert!(
            description.starts_with(&format!("AADSTS{code}: ")),
            "{changes:?}: {description}"
        );
        assert_eq!(query(&url, "state").as_deref(), Some("st&=1"));
        assert_eq!(query(&url, "code"), None);
    }
}

#[test]
fn signing_in_redirects_with_a_code_and_state() {
    let f = fixture();
    let reply = f.submit(&[], &[("action", "sign_in")]);
    let url = location(&reply);
    assert_eq!(&url.as_str()[..CALLBACK.len()], CALLBACK);
    assert_eq!(query(&url, "state").as_deref(), Some("st&=1"));
    let code = query(&url, "code").unwrap();
    assert!(code.len() >= 43, "{code}");
    assert!(!reply.summary.contains(&code), "{}", reply.summary);
    assert_eq!(f.oauth.codes_issued(), 1);
    // Without PKCE too, and without `action` (a plain form post signs in).
    let url = location(&f.submit(
        &[("code_challenge", ""), ("code_challenge_method", "")],
        &[],
    ));
    assert!(query(&url, "code").is_some());
}

#[test]
fn form_post_answers_with_a_page_that_posts_code_and_state() {
    let f = fixture();
    let reply = f.submit(&[("response_mode", "form_post")], &[("action", "sign_in")]);
    assert_eq!(reply.status, StatusCode::OK);
    let html = page(&reply);
    assert!(
        html.contains(&format!("<form method=\"post\" action=\"{CALLBACK}\">")),
        "{html}"
    );
    assert!(
        html.contains("onload=\"document.forms[0].submit()\""),
        "{html}"
    );
    assert!(
        html.contains("<input type=\"hidden\" name=\"code\" value=\""),
        "{html}"
    );
    assert!(
        html.contains("<input type=\"hidden\" name=\"state\" value=\"st&amp;=1\">"),
        "{html}"
    );
    // Errors are posted the same way.
    let refused = f.authorize(&[("response_mode", "form_post"), ("prompt", "none")]);
    let html = page(&refused);
    assert!(
        html.contains("name=\"error\" value=\"login_required\""),
        "{html}"
    );
}

#[test]
fn cancel_is_access_denied() {
    let f = fixture();
    let url = location(&f.submit(&[], &[("action", "cancel")]));
    assert_eq!(query(&url, "error").as_deref(), Some("access_denied"));
    assert!(
        query(&url, "error_description")
            .unwrap()
            .starts_with("AADSTS65004: ")
    );
    assert_eq!(query(&url, "state").as_deref(), Some("st&=1"));
    assert_eq!(f.oauth.codes_issued(), 0);
}

#[test]
fn the_submitted_user_is_checked_and_shown_again_when_wrong() {
    let f = fixture();
    let reply = f.submit(&[], &[("oid", "not-a-guid"), ("action", "sign_in")]);
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let html = page(&reply);
    assert!(html.contains("id=\"error\""), "{html}");
    assert!(html.contains("id=\"sign-in\""), "{html}");
    let long = "x".repeat(300);
    assert_eq!(
        f.submit(&[], &[("name", &long)]).status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(f.oauth.codes_issued(), 0);
}

#[test]
fn the_hidden_fields_are_checked_again_on_post() {
    // A page tampered with after it was served: the POST is judged on its own.
    let f = fixture();
    let reply = f.submit(
        &[(
            "redirect_uri",
            "https://evil.example/.auth/login/aad/callback",
        )],
        &[],
    );
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(matches!(reply.content, Content::Html(_)));
    let url = location(&f.submit(&[("response_type", "token")], &[]));
    assert_eq!(
        query(&url, "error").as_deref(),
        Some("unsupported_response_type")
    );
}

#[test]
fn tenant_paths_and_sign_in_form() {
    let f = fixture();
    let target = format!(
        "/contoso.example/oauth2/v2.0/authorize?{}",
        encode(&authorize_params(&[]))
    );
    assert_eq!(f.get(&target).status, StatusCode::OK);
    let user = DevUser {
        roles: vec!["A".into(), "B".into()],
        ..DevUser::default()
    };
    let form = sign_in_form(&format!("http://127.0.0.1:8079{target}"), &user);
    let reply = f.post("/contoso.example/oauth2/v2.0/authorize", &form);
    let code = query(&location(&reply), "code").unwrap();
    let tokens = f.redeem(&code, &[]);
    let access = claims(body(&tokens)["access_token"].as_str().unwrap());
    assert_eq!(access["roles"], serde_json::json!(["A", "B"]));
}
