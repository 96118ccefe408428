use proptest::prelude::*;

use super::*;
use crate::inbound::session::seal::KEY_LEN;

fn ring() -> KeyRing {
    KeyRing::new(&[[7; KEY_LEN]]).unwrap()
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn a_login_round_trips_and_binds_its_verifier() {
    let r = ring();
    let begun = begin(&r, "/orders?x=1", at(1_000)).unwrap();
    let pending = finish(&r, Some(&begun.cookie), Some(&begun.state), at(1_100)).unwrap();
    assert_eq!(pending.nonce, begun.nonce);
    assert_eq!(pending.redirect, "/orders?x=1");
    // RFC 7636: a 43-character verifier of unreserved characters, S256 challenge.
    assert_eq!(pending.verifier.len(), 43);
    assert!(
        pending
            .verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    let challenge = URL_SAFE_NO_PAD.encode(digest(&SHA256, pending.verifier.as_bytes()));
    assert_eq!(challenge, begun.code_challenge);
    // Two logins share nothing.
    let other = begin(&r, "/", at(1_000)).unwrap();
    assert_ne!((&other.state, &other.nonce), (&begun.state, &begun.nonce));
}

#[test]
fn every_broken_callback_is_refused() {
    let r = ring();
    let begun = begin(&r, "/", at(1_000)).unwrap();
    let ok = |cookie: Option<&str>, state: Option<&str>, now| finish(&r, cookie, state, at(now));
    assert_eq!(
        ok(None, Some(&begun.state), 1_001),
        Err(LoginError::NoLoginCookie)
    );
    assert_eq!(
        ok(Some(&begun.cookie), None, 1_001),
        Err(LoginError::StateMismatch)
    );
    assert_eq!(
        ok(Some(&begun.cookie), Some("forged"), 1_001),
        Err(LoginError::StateMismatch)
    );
    let other = begin(&r, "/", at(1_000)).unwrap();
    assert_eq!(
        ok(Some(&begun.cookie), Some(&other.state), 1_001),
        Err(LoginError::StateMismatch),
        "another login's state"
    );
    assert_eq!(
        ok(Some(&begun.cookie), Some(&begun.state), 1_600),
        Err(LoginError::Expired)
    );
    let mut tampered = begun.cookie.clone();
    tampered.replace_range(10..11, if &tampered[10..11] == "A" { "B" } else { "A" });
    assert_eq!(
        ok(Some(&tampered), Some(&begun.state), 1_001),
        Err(LoginError::InvalidLoginCookie)
    );
    // A value sealed for another purpose (a session cookie) is no login cookie.
    let session = r.seal("AppServiceAuthSession", b"{}").unwrap();
    assert_eq!(
        ok(Some(&session), Some(&begun.state), 1_001),
        Err(LoginError::InvalidLoginCookie)
    );
    // Another deployment's keys.
    let foreign = KeyRing::new(&[[8; KEY_LEN]]).unwrap();
    assert_eq!(
        finish(&foreign, Some(&begun.cookie), Some(&begun.state), at(1_001)),
        Err(LoginError::InvalidLoginCookie)
    );
}

#[test]
fn the_authorization_request_carries_pkce_state_and_nonce() {
    let begun = begin(&ring(), "/", at(1_000)).unwrap();
    let endpoint =
        Url::parse("https://login.microsoftonline.com/t/oauth2/v2.0/authorize?p=keep").unwrap();
    let url = authorize_url(
        &endpoint,
        "web-app",
        "https://app.example/.auth/login/aad/callback",
        &["openid".into(), "offline_access".into()],
        &begun,
    );
    let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    for (k, v) in [
        ("p", "keep"),
        ("client_id", "web-app"),
        ("response_type", "code"),
        ("response_mode", "query"),
        (
            "redirect_uri",
            "https://app.example/.auth/login/aad/callback",
        ),
        ("scope", "openid offline_access"),
        ("state", begun.state.as_str()),
        ("nonce", begun.nonce.as_str()),
        ("code_challenge", begun.code_challenge.as_str()),
        ("code_challenge_method", "S256"),
    ] {
        assert_eq!(q.get(k).map(String::as_str), Some(v), "{k}");
    }
}

#[test]
fn redirects_stay_on_this_origin_or_go_where_allowed() {
    let allowed = [Url::parse("https://portal.example/app/").unwrap()];
    for (target, want) in [
        ("/", Some("/")),
        ("/orders?id=1#top", Some("/orders?id=1#top")),
        ("orders", Some("/orders")),
        ("/a/../b", Some("/b")),
        ("/%2F%2Fevil.example", Some("/%2F%2Fevil.example")),
        ("//evil.example", None),
        ("///evil.example", None),
        // Dot segments that leave a `//` at the front (found by the property test below).
        ("/.//evil.example", None),
        ("./\\evil.example", None),
        ("/a/..//evil.example", None),
        ("./\\", None),
        ("/\\evil.example", None),
        ("\\\\evil.example", None),
        ("/\t/evil.example", None),
        ("/\n/evil.example", None),
        (" //evil.example", None),
        // A scheme-relative form: on an https page the browser reads it as a path. What is
        // sent is the resolved path, so it stays here whatever the page's scheme.
        ("https:evil.example", Some("/evil.example")),
        ("http:evil.example", None),
        ("https://evil.example/", None),
        ("http://portal.example/app/x", None),
        ("https://portal.example/application", None),
        ("https://portal.example.evil.example/app/x", None),
        ("javascript:alert(1)", None),
        ("data:text/html,x", None),
        ("", None),
        (
            "https://portal.example/app/x?y=1",
            Some("https://portal.example/app/x?y=1"),
        ),
        (
            "https://portal.example/app/",
            Some("https://portal.example/app/"),
        ),
    ] {
        assert_eq!(
            safe_redirect(target, &allowed).as_deref(),
            want,
            "{target:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever a `post_login_redirect_uri` holds, a same-origin answer is a path that a
    /// browser, resolving it against any origin, keeps on that origin.
    #[test]
    fn a_same_origin_answer_never_leaves_the_origin(
        target in "[/\\\\:@.%?#a-e\\t 2F5C]{0,16}",
    ) {
        if let Some(path) = safe_redirect(&target, &[]) {
            prop_assert!(path.starts_with('/'), "{path}");
            let base = Url::parse("https://app.example/").unwrap();
            let resolved = base.join(&path).unwrap();
            prop_assert_eq!(resolved.origin(), base.origin(), "{} -> {}", target, path);
        }
    }
}
