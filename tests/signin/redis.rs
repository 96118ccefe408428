//! Sessions in a real Redis (`session_store`), shared by two tollgates; logout revokes
//! everywhere; Redis down: 503 for session requests only. Needs `redis-server`: run by
//! `ci/redis.sh`, skipped by a plain `cargo test`.

use tollgate::dev::oauth::DevUser;

use crate::rig::{Rig, Setup};

#[path = "../../src/inbound/session/store/tests/redis_server.rs"]
#[allow(dead_code)]
mod redis_server;

use redis_server::RedisServer;

#[tokio::test]
#[ignore = "needs redis-server (ci/redis.sh)"]
async fn two_tollgates_share_redis_sessions_and_logout_revokes_everywhere() {
    let mut redis = RedisServer::start().await;
    let store = format!("session_store = \"{}\"", redis.url());
    let first = Rig::with(Setup {
        login: &store,
        ..Setup::default()
    })
    .await;
    let second = Rig::with(Setup {
        login: &store,
        ..Setup::default()
    })
    .await;
    let browser = first.signed_in(&crate::rig::user_in_groups(150)).await;
    // The tokens live in Redis: one small chunk, however large the session.
    let chunks = browser.session_chunks();
    assert_eq!(chunks.len(), 1, "{chunks:?}");
    assert!(chunks[0].1.len() < 400, "{} bytes", chunks[0].1.len());
    let keys = redis.command(&["DBSIZE"]).await;
    assert_eq!(keys, ":1");
    // The other tollgate opens the same session.
    let mut elsewhere = second.browser();
    elsewhere.jar = std::sync::Arc::new(parking_lot::Mutex::new(browser.jar.lock().clone()));
    assert_eq!(elsewhere.get("/hello", &[]).await.status(), 200);
    assert!(
        second
            .backend
            .only()
            .header("x-ms-token-aad-access-token")
            .is_some()
    );
    // Logout on the first deletes the record: the copied cookie opens nothing on the second.
    let reply = browser.get("/.auth/logout", &[]).await;
    assert_eq!(reply.status(), 302);
    assert_eq!(redis.command(&["DBSIZE"]).await, ":0");
    second.backend.clear();
    let reply = elsewhere
        .get("/hello", &[("sec-fetch-mode", "navigate")])
        .await;
    assert_eq!(reply.status(), 302, "revoked everywhere");
    second.backend.assert_nothing_received();

    // Redis down: session requests 503, anonymous and bearer requests unaffected.
    let browser = first.signed_in(&DevUser::default()).await;
    first.backend.clear();
    redis.kill();
    let reply = browser.get("/hello", &[]).await;
    assert_eq!(reply.status(), 503);
    assert_eq!(reply.headers()["retry-after"], "5");
    first.backend.assert_nothing_received();
    assert_eq!(browser.get("/public/x", &[]).await.status(), 200);
    // Back up (empty): the session is gone, the browser signs in again.
    redis.restart().await;
    first.backend.clear();
    let reply = browser
        .get("/hello", &[("sec-fetch-mode", "navigate")])
        .await;
    assert_eq!(reply.status(), 302);
    first.backend.assert_nothing_received();
}
