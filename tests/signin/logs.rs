//! What sign-in writes to the logs, at debug: every outcome is there, and never a token, code,
//! state, cookie or secret.

use std::time::Duration;

use tollgate::dev::oauth::{DEV_CLIENT_SECRET, DevUser};

use crate::capture;
use crate::rig::Rig;

#[tokio::test]
async fn sign_in_logs_outcomes_and_never_a_secret() {
    let logs = capture::start();
    let rig = Rig::start().await;
    rig.dev
        .oauth()
        .set_access_token_lifetime(Duration::from_secs(120));
    let b = rig.browser();
    let authorize = b.start_login("/hello").await;
    let login_cookie = b.jar.lock()["TollgateLogin"].clone();
    let callback = b.authorize(&authorize, &DevUser::default()).await;
    let params: Vec<(String, String)> = url::Url::parse(&callback)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(b.get_url(&callback, &[]).await.status(), 302);
    // A refresh (the token is within the margin), /.auth/me, a replayed code, logout.
    let reply = b.get("/hello", &[]).await;
    assert_eq!(reply.status(), 200);
    let seen = rig.backend.only();
    let secrets: Vec<String> = [
        seen.header("x-ms-token-aad-access-token")
            .unwrap()
            .to_owned(),
        seen.header("x-ms-token-aad-id-token").unwrap().to_owned(),
        login_cookie,
        DEV_CLIENT_SECRET.to_owned(),
    ]
    .into_iter()
    .chain(params.into_iter().map(|(_, v)| v))
    .chain(b.session_chunks().into_iter().map(|(_, v)| v))
    .collect();
    let replay = rig.browser();
    replay.get_url(&callback, &[]).await;
    b.get("/.auth/logout", &[]).await;

    let text = logs.text();
    for expected in ["sign-in succeeded", "sign-in failed", "signed out"] {
        assert!(text.contains(expected), "no {expected:?} line:\n{text}");
    }
    for secret in &secrets {
        // A long enough piece of each value is enough to find it.
        let piece = &secret[..secret.len().min(24)];
        assert!(
            !text.contains(piece),
            "a secret value in the logs: {piece}\n{text}"
        );
    }
}
