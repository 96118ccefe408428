//! The token endpoint: code redemption with PKCE, refresh rotation, client credentials,
//! client authentication by secret, and Entra's error bodies.

use serde_json::json;

use super::*;

#[test]
fn a_code_gives_access_id_and_refresh_tokens() {
    let f = fixture();
    let before = SystemTime::now();
    let code = f.code(&[]);
    let reply = f.redeem(&code, &[]);
    assert_eq!(reply.status, StatusCode::OK, "{:?}", body(&reply));
    assert!(!reply.summary.contains("eyJ"), "{}", reply.summary);
    let b = body(&reply);
    assert_eq!(b["token_type"], "Bearer");
    assert_eq!(b["expires_in"], json!(3600));
    assert_eq!(b["ext_expires_in"], json!(3600));
    assert_eq!(
        b["scope"],
        "api://orders/Orders.Read openid profile offline_access"
    );
    assert!(b["refresh_token"].as_str().unwrap().len() >= 43);

    let access = claims(b["access_token"].as_str().unwrap());
    assert_eq!(access["iss"], DEV_ISSUER);
    assert_eq!(access["aud"], "api://orders");
    assert_eq!(access["scp"], "Orders.Read");
    assert_eq!(access["azp"], DEV_WEB_CLIENT_ID);
    assert_eq!(access["azpacr"], "1");
    assert_eq!(access["oid"], DEV_USER_OBJECT_ID);
    assert_eq!(access["tid"], DEV_TENANT_ID);
    assert_eq!(access["name"], "Dev User");
    assert_eq!(access["preferred_username"], "dev.user@tollgate.dev");
    assert_eq!(access["roles"], json!(["Orders.Read", "Orders.Admin"]));
    assert_eq!(access["groups"], json!(["g1", "g2"]));
    assert_eq!(
        access["exp"].as_u64().unwrap() - access["iat"].as_u64().unwrap(),
        3600
    );

    let id = claims(b["id_token"].as_str().unwrap());
    assert_eq!(id["aud"], DEV_WEB_CLIENT_ID);
    assert_eq!(id["iss"], DEV_ISSUER);
    assert_eq!(id["nonce"], "n-1");
    assert_eq!(id["ver"], "2.0");
    assert_eq!(id["iat"], id["nbf"]);
    let iat = id["iat"].as_u64().unwrap();
    assert!(
        iat + 300 >= unix(before) && iat + 300 <= unix(SystemTime::now()),
        "back-dated 300 s"
    );
    assert_eq!(id["exp"].as_u64().unwrap() - iat, 3900);
    for claim in [
        "oid",
        "tid",
        "name",
        "preferred_username",
        "roles",
        "groups",
    ] {
        assert_eq!(id[claim], access[claim], "{claim}");
    }
    assert!(
        id["sub"].is_string() && id["sub"] != id["oid"],
        "pairwise sub"
    );
    assert_eq!(f.oauth.codes_redeemed(), 1);

    // The tokens verify with the issuer's key.
    let token = b["id_token"].as_str().unwrap();
    let (input, signature) = token.rsplit_once('.').unwrap();
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    assert!(f.issuer.signing_key().verify(input.as_bytes(), &signature));
}

#[test]
fn only_oidc_scopes_give_a_token_for_the_app_and_no_refresh_token_without_offline_access() {
    let f = fixture();
    let code = f.code(&[("scope", "openid profile")]);
    let b = body(&f.redeem(&code, &[])).clone();
    assert_eq!(
        claims(b["access_token"].as_str().unwrap())["aud"],
        DEV_WEB_CLIENT_ID
    );
    assert!(b.get("refresh_token").is_none(), "{b}");
    assert!(b.get("id_token").is_some());
    let code = f.code(&[("scope", "api://orders/.default")]);
    let b = body(&f.redeem(&code, &[])).clone();
    assert!(b.get("id_token").is_none(), "no openid, no id token: {b}");
}

#[test]
fn a_code_works_once() {
    let f = fixture();
    let code = f.code(&[]);
    assert_eq!(f.redeem(&code, &[]).status, StatusCode::OK);
    let again = f.redeem(&code, &[]);
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_of(&again), ("invalid_grant".into(), 54005));
    assert_eq!(f.oauth.codes_redeemed(), 1);
}

#[test]
fn a_code_expires_after_ten_minutes() {
    let f = fixture();
    let code = f.code(&[]);
    let late = f.redeem_at(&code, &[], SystemTime::now() + LATER);
    assert_eq!(error_of(&late), ("invalid_grant".into(), 70008));
    let unknown = f.redeem("not-a-code", &[]);
    assert_eq!(error_of(&unknown), ("invalid_grant".into(), 70000));
}

#[test]
fn pkce_must_match() {
    let f = fixture();
    let code = f.code(&[]);
    let wrong = f.redeem(
        &code,
        &[(
            "code_verifier",
            "wrong-verifier-wrong-verifier-wrong-verifier",
        )],
    );
    assert_eq!(error_of(&wrong), ("invalid_grant".into(), 50148));
    let missing = f.redeem(&code, &[("code_verifier", "")]);
    assert_eq!(error_of(&missing), ("invalid_grant".into(), 50148));
    // A failed attempt does not use the code up.
    assert_eq!(f.redeem(&code, &[]).status, StatusCode::OK);
    // A verifier for a code issued without a challenge is refused too.
    let plain = f.code(&[("code_challenge", ""), ("code_challenge_method", "")]);
    assert_eq!(
        error_of(&f.redeem(&plain, &[])),
        ("invalid_grant".into(), 50148)
    );
    assert_eq!(
        f.redeem(&plain, &[("code_verifier", "")]).status,
        StatusCode::OK
    );
}

#[test]
fn the_redirect_uri_must_be_the_one_of_the_authorize_request() {
    let f = fixture();
    let code = f.code(&[]);
    let other = f.redeem(
        &code,
        &[(
            "redirect_uri",
            "http://127.0.0.1:3001/.auth/login/aad/callback",
        )],
    );
    assert_eq!(error_of(&other), ("invalid_grant".into(), 70000));
    let missing = f.redeem(&code, &[("redirect_uri", "")]);
    assert_eq!(error_of(&missing), ("invalid_request".into(), 900144));
}

#[test]
fn the_client_must_prove_itself() {
    let f = fixture();
    let code = f.code(&[]);
    let cases = [
        (
            vec![("client_secret", "wrong")],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
        ),
        (
            vec![("client_secret", "")],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
        ),
        (
            vec![("client_id", "00000000-0000-0000-0000-000000000bad")],
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
        ),
        (
            vec![("client_id", "")],
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
        ),
        (
            vec![("client_assertion", "x.y.z")],
            StatusCode::BAD_REQUEST,
            "invalid_request",
            9002313,
        ),
    ];
    for (changes, status, error, code_number) in cases {
        let reply = f.redeem(&code, &changes);
        assert_eq!(reply.status, status, "{changes:?}");
        assert_eq!(
            error_of(&reply),
            (error.to_owned(), code_number),
            "{changes:?}"
        );
    }
    assert_eq!(f.oauth.codes_redeemed(), 0);
}

#[test]
fn http_basic_authenticates_the_client() {
    let f = fixture();
    let code = f.code(&[]);
    let form = owned(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", CALLBACK),
        ("code_verifier", VERIFIER),
    ]);
    let wrong = f.post_at(
        "/oauth2/v2.0/token",
        &form,
        &basic(DEV_WEB_CLIENT_ID, "nope"),
        SystemTime::now(),
    );
    assert_eq!(error_of(&wrong).1, 7000215);
    let right = f.post_at(
        "/oauth2/v2.0/token",
        &form,
        &basic(DEV_WEB_CLIENT_ID, DEV_CLIENT_SECRET),
        SystemTime::now(),
    );
    assert_eq!(right.status, StatusCode::OK, "{:?}", body(&right));
    // Basic and a form secret at once: two credentials.
    let code = f.code(&[]);
    let mut both = form.clone();
    both[1].1 = code;
    both.push(("client_secret".into(), DEV_CLIENT_SECRET.into()));
    let reply = f.post_at(
        "/oauth2/v2.0/token",
        &both,
        &basic(DEV_WEB_CLIENT_ID, DEV_CLIENT_SECRET),
        SystemTime::now(),
    );
    assert_eq!(error_of(&reply).0, "invalid_request");
}

#[test]
fn refresh_tokens_rotate_and_the_old_one_keeps_working() {
    let f = fixture();
    let code = f.code(&[]);
    let first = body(&f.redeem(&code, &[]))["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let refresh = |rt: &str| f.token(&[("grant_type", "refresh_token"), ("refresh_token", rt)]);
    let r1 = refresh(&first);
    assert_eq!(r1.status, StatusCode::OK, "{:?}", body(&r1));
    let second = body(&r1)["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    let id = claims(body(&r1)["id_token"].as_str().unwrap());
    assert_eq!(id["oid"], DEV_USER_OBJECT_ID);
    assert!(
        id.get("nonce").is_none(),
        "a refreshed id token has no nonce"
    );
    assert_eq!(
        claims(body(&r1)["access_token"].as_str().unwrap())["aud"],
        "api://orders"
    );
    // The old one still works, and so does the new one.
    assert_eq!(refresh(&first).status, StatusCode::OK);
    assert_eq!(refresh(&second).status, StatusCode::OK);
    assert_eq!(f.oauth.refreshes(), 3);
    // A refresh may ask for another resource.
    let other = f.token(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", &second),
        ("scope", "api://billing/read openid"),
    ]);
    assert_eq!(
        claims(body(&other)["access_token"].as_str().unwrap())["aud"],
        "api://billing"
    );
    assert_eq!(
        error_of(&refresh("unknown")),
        ("invalid_grant".into(), 70000)
    );
}

#[test]
fn knobs_fail_the_endpoint_refuse_refresh_tokens_and_shorten_access_tokens() {
    let f = fixture();
    f.oauth.set_access_token_lifetime(Duration::from_secs(5));
    let b = body(&f.redeem(&f.code(&[]), &[])).clone();
    assert_eq!(b["expires_in"], json!(5));
    let access = claims(b["access_token"].as_str().unwrap());
    assert_eq!(
        access["exp"].as_u64().unwrap() - access["iat"].as_u64().unwrap(),
        5
    );
    let rt = b["refresh_token"].as_str().unwrap().to_owned();

    f.oauth.refuse_refresh_tokens(true);
    let refused = f.token(&[("grant_type", "refresh_token"), ("refresh_token", &rt)]);
    assert_eq!(error_of(&refused), ("invalid_grant".into(), 700082));
    f.oauth.refuse_refresh_tokens(false);

    f.oauth
        .fail_token_endpoint(Some(StatusCode::SERVICE_UNAVAILABLE));
    let failed = f.token(&[("grant_type", "refresh_token"), ("refresh_token", &rt)]);
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_of(&failed).0, "temporarily_unavailable");
    f.oauth.fail_token_endpoint(Some(StatusCode::BAD_REQUEST));
    assert_eq!(error_of(&f.redeem(&f.code(&[]), &[])).0, "invalid_request");
    f.oauth.fail_token_endpoint(None);

    assert_eq!(
        f.token(&[("grant_type", "refresh_token"), ("refresh_token", &rt)])
            .status,
        StatusCode::OK
    );
    f.oauth.revoke_refresh_tokens();
    let revoked = f.token(&[("grant_type", "refresh_token"), ("refresh_token", &rt)]);
    assert_eq!(error_of(&revoked).0, "invalid_grant");
    assert_eq!(f.oauth.refreshes(), 1);
}

#[test]
fn client_credentials_give_an_app_only_token() {
    let f = fixture();
    let reply = f.token(&[
        ("grant_type", "client_credentials"),
        ("scope", "api://orders/.default"),
    ]);
    assert_eq!(reply.status, StatusCode::OK, "{:?}", body(&reply));
    let b = body(&reply);
    assert_eq!(b["expires_in"], json!(3600));
    assert!(b.get("refresh_token").is_none() && b.get("id_token").is_none());
    let access = claims(b["access_token"].as_str().unwrap());
    assert_eq!(access["aud"], "api://orders");
    assert_eq!(access["appid"], DEV_WEB_CLIENT_ID);
    assert_eq!(access["azp"], DEV_WEB_CLIENT_ID);
    assert_eq!(access["idtyp"], "app");
    assert_eq!(access["roles"], json!(["App.Write"]));
    assert_eq!(access["tid"], DEV_TENANT_ID);
    assert!(access.get("scp").is_none());
    for scope in [
        "api://orders/read",
        "api://a/.default api://b/.default",
        "/.default",
    ] {
        let bad = f.token(&[("grant_type", "client_credentials"), ("scope", scope)]);
        assert_eq!(error_of(&bad), ("invalid_scope".into(), 1002012), "{scope}");
    }
}

#[test]
fn grant_types_methods_and_scopes() {
    let f = fixture();
    let reply = f.token(&[("grant_type", "password")]);
    assert_eq!(error_of(&reply), ("unsupported_grant_type".into(), 70003));
    assert_eq!(error_of(&f.token(&[])), ("invalid_request".into(), 900144));
    let get = f.get("/oauth2/v2.0/token?grant_type=client_credentials");
    assert_eq!(error_of(&get), ("invalid_request".into(), 900561));
    // An explicit scope at /token names one resource.
    let code = f.code(&[]);
    let two = f.redeem(&code, &[("scope", "api://orders/read api://billing/read")]);
    assert_eq!(error_of(&two), ("invalid_scope".into(), 700022));
    // At a tenant path too.
    let mut form = owned(&[
        ("grant_type", "client_credentials"),
        ("scope", "api://x/.default"),
    ]);
    form.extend(owned(&[
        ("client_id", DEV_WEB_CLIENT_ID),
        ("client_secret", DEV_CLIENT_SECRET),
    ]));
    assert_eq!(
        f.post(&format!("/{DEV_TENANT_ID}/oauth2/v2.0/token"), &form)
            .status,
        StatusCode::OK
    );
}

#[test]
fn on_behalf_of_turns_the_users_token_into_one_for_the_next_api() {
    let f = fixture();
    let code = f.code(&[]);
    let signed_in = body(&f.redeem(&code, &[])).clone();
    let user_token = signed_in["access_token"].as_str().unwrap();
    let obo = |assertion: &str, extra: &[(&str, &str)]| {
        let mut form = vec![
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion),
            ("scope", "api://inventory/.default"),
        ];
        form.extend_from_slice(extra);
        f.token(&form)
    };
    let reply = obo(user_token, &[("requested_token_use", "on_behalf_of")]);
    assert_eq!(reply.status, StatusCode::OK, "{:?}", body(&reply));
    let access = claims(body(&reply)["access_token"].as_str().unwrap());
    assert_eq!(access["aud"], "api://inventory");
    assert_eq!(access["oid"], DEV_USER_OBJECT_ID);
    assert_eq!(access["roles"], json!(["Orders.Read", "Orders.Admin"]));
    assert!(body(&reply).get("refresh_token").is_none());

    // Without requested_token_use, with a forged or app-only or expired assertion: refused.
    let reply = obo(user_token, &[]);
    assert_eq!(body(&reply)["error"], "invalid_request");
    let mut forged = user_token.to_owned();
    forged.push('A');
    for assertion in [forged.as_str(), "not-a-jwt"] {
        let reply = obo(assertion, &[("requested_token_use", "on_behalf_of")]);
        assert_eq!(body(&reply)["error"], "invalid_grant", "{assertion}");
        assert_eq!(body(&reply)["error_codes"], json!([50013]));
    }
    let app_only = f
        .issuer
        .mint(&crate::dev::issuer::TokenSpec {
            audience: "api://orders".into(),
            lifetime: Duration::from_secs(600),
            extra: serde_json::from_value(json!({"idtyp": "app"})).unwrap(),
            ..Default::default()
        })
        .unwrap();
    let reply = obo(&app_only, &[("requested_token_use", "on_behalf_of")]);
    assert_eq!(body(&reply)["error"], "invalid_grant");
}
