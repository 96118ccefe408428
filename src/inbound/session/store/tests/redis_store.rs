//! The Redis store against no server, a silent one, and (ignored without `redis-server`, run by
//! `ci/redis.sh`) a real one: killed, restarted, shared, with a password, over TLS.

use std::error::Error;
use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::behaviour::{self, poll_until};
use super::redis_server::{RedisServer, TestCertificates, free_port};
use crate::inbound::session::store::{
    KEY_PREFIX, OPERATION_DEADLINE, RedisStore, SessionStore, StoreError,
};

const MINUTE: Duration = Duration::from_secs(60);
/// What "fails fast" means in these tests: well above [`OPERATION_DEADLINE`], far below a hang.
const FAILS_WITHIN: Duration = Duration::from_secs(3);

/// Runs `operation`, asserts that it failed within [`FAILS_WITHIN`], and returns the error.
async fn fails_fast<T: std::fmt::Debug>(
    operation: impl Future<Output = Result<T, StoreError>>,
) -> (StoreError, Duration) {
    let start = Instant::now();
    let result = operation.await;
    let took = start.elapsed();
    let error = result.expect_err("the store is down: the operation must fail");
    assert!(took < FAILS_WITHIN, "failed only after {took:?}");
    (error, took)
}

/// The error and all its sources, as text.
fn chain(error: &StoreError) -> String {
    let mut text = format!("{error} / {error:?}");
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(" / {cause}"));
        source = cause.source();
    }
    text
}

#[tokio::test]
async fn nothing_listening_is_unreachable_at_once() {
    let store = RedisStore::new(&format!("redis://127.0.0.1:{}/0", free_port())).unwrap();
    for _ in 0..2 {
        let (error, took) = fails_fast(store.get("abc")).await;
        assert!(matches!(error, StoreError::Unreachable(_)), "{error:?}");
        assert!(took < Duration::from_millis(500), "refused after {took:?}");
    }
}

#[tokio::test]
async fn a_silent_server_times_out_within_the_deadline() {
    // Connections complete in the kernel's backlog, but nothing ever answers.
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = silent.local_addr().unwrap().port();
    let store = RedisStore::new(&format!("redis://127.0.0.1:{port}/0")).unwrap();
    let (error, took) = fails_fast(store.put("abc", b"x", MINUTE)).await;
    assert!(matches!(error, StoreError::TimedOut), "{error:?}");
    assert!(
        took <= OPERATION_DEADLINE + Duration::from_millis(200),
        "{took:?}"
    );
}

#[tokio::test]
async fn rediss_against_a_plaintext_server_fails_its_handshake() {
    // The TLS client is built (rustls, aws-lc-rs provider) and refuses a non-TLS reply.
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.write_all(b"-ERR not tls\r\n").await;
        }
    });
    let store = RedisStore::new(&format!("rediss://localhost:{port}/0")).unwrap();
    let (error, _) = fails_fast(store.get("abc")).await;
    assert!(matches!(error, StoreError::Unreachable(_)), "{error:?}");
    server.abort();
}

#[tokio::test]
#[ignore = "needs redis-server (ci/redis.sh)"]
async fn the_redis_store_behaves_as_a_store() {
    let server = RedisServer::start().await;
    let store = RedisStore::new(&server.url()).unwrap();
    behaviour::all(&store).await;
    assert_eq!(
        store.describe(),
        format!("redis 127.0.0.1:{} db 0", server.port())
    );
}

#[tokio::test]
#[ignore = "needs redis-server (ci/redis.sh)"]
async fn records_are_namespaced_and_set_with_their_time_to_live() {
    let server = RedisServer::start().await;
    let store = RedisStore::new(&server.url()).unwrap();
    store.put("abc", b"x", MINUTE).await.unwrap();
    let key = format!("{KEY_PREFIX}abc");
    assert_eq!(server.command(&["EXISTS", &key]).await, ":1");
    assert_eq!(server.command(&["EXISTS", "abc"]).await, ":0");
    let pttl: u64 = server.command(&["PTTL", &key]).await[1..].parse().unwrap();
    assert!(pttl > 50_000 && pttl <= 60_000, "PTTL {pttl}");
}

#[tokio::test]
#[ignore = "needs redis-server (ci/redis.sh)"]
async fn two_replicas_share_records_and_databases_are_apart() {
    let server = RedisServer::start().await;
    let one = RedisStore::new(&server.url()).unwrap();
    let two = RedisStore::new(&server.url()).unwrap();
    one.put("shared", b"x", MINUTE).await.unwrap();
    assert_eq!(two.get("shared").await.unwrap().as_deref(), Some(&b"x"[..]));
    two.delete("shared").await.unwrap();
    assert_eq!(one.get("shared").await.unwrap(), None);

    let other_db = RedisStore::new(&format!("redis://127.0.0.1:{}/1", server.port())).unwrap();
    one.put("apart", b"x", MINUTE).await.unwrap();
    assert_eq!(other_db.get("apart").await.unwrap(), None);
}

#[tokio::test]
#[ignore = "needs redis-server (ci/redis.sh)"]
async fn a_killed_server_fails_fast_and_a_restarted_one_serves_the_same_store() {
    let mut server = RedisServer::start().await;
    let store = RedisStore::new(&server.url()).unwrap();
    store.put("abc", b"x", MINUTE).await.unwrap();

    server.kill();
    let (error, took) = fails_fast(store.get("abc")).await;
    assert!(matches!(error, StoreError::Unreachable(_)), "{error:?}");
    eprintln!("get with the server killed failed after {took:?}");
    fails_fast(store.put("abc", b"x", MINUTE)).await;
    fails_fast(store.delete("abc")).await;

    server.restart().await;
    // The very first operation after the restart succeeds (nothing was persisted).
    assert_eq!(store.get("abc").await.unwrap(), None);
    store.put("abc", b"y", MINUTE).await.unwrap();

    // A restart under an open connection costs no request either: it is resent once.
    server.restart().await;
    store.put("abc", b"z", MINUTE).await.unwrap();
    assert_eq!(store.get("abc").await.unwrap().as_deref(), Some(&b"z"[..]));
}

#[tokio::test]
#[ignore = "needs redis-server (ci/redis.sh)"]
async fn a_store_made_while_redis_is_down_works_once_it_is_up() {
    let port = free_port();
    let store = RedisStore::new(&format!("redis://127.0.0.1:{port}/0")).unwrap();
    fails_fast(store.get("abc")).await;
    let _server = RedisServer::start_on(port, None).await;
    store.put("abc", b"x", MINUTE).await.unwrap();
    assert_eq!(store.get("abc").await.unwrap().as_deref(), Some(&b"x"[..]));
}

#[tokio::test]
#[ignore = "needs redis-server (ci/redis.sh)"]
async fn a_password_works_and_is_never_shown() {
    let right = "right-Pa55word";
    let next = "next-Pa55word";
    let server = RedisServer::start_with_password(right).await;
    let store = RedisStore::new(&server.url_with_password(right)).unwrap();
    store.put("abc", b"x", MINUTE).await.unwrap();
    assert_eq!(store.get("abc").await.unwrap().as_deref(), Some(&b"x"[..]));
    let shown = format!("{} {store:?}", store.describe());
    assert!(!shown.contains(right), "{shown}");

    let without = RedisStore::new(&server.url()).unwrap();
    let (error, _) = fails_fast(without.get("abc")).await;
    assert!(!chain(&error).contains(right), "{}", chain(&error));

    // Refused at connection time; once the server's password changes, the same store
    // connects (a failed authentication does not stick to it).
    let wrong = RedisStore::new(&server.url_with_password(next)).unwrap();
    let (error, _) = fails_fast(wrong.get("abc")).await;
    let text = chain(&error);
    assert!(!text.contains(right) && !text.contains(next), "{text}");
    assert_eq!(
        server
            .command(&["CONFIG", "SET", "requirepass", next])
            .await,
        "+OK"
    );
    let recovered = poll_until(Duration::from_secs(5), || async {
        wrong.get("abc").await.is_ok()
    })
    .await;
    assert!(recovered, "the store kept its failed authentication");
}

#[tokio::test]
#[ignore = "needs redis-server (ci/redis.sh)"]
async fn rediss_verifies_the_server_and_then_behaves_as_a_store() {
    let certificates = TestCertificates::new();
    let server = RedisServer::start_tls(&certificates).await;
    let url = format!("rediss://localhost:{}/0", server.tls_port());
    let store = RedisStore::trusting(&url, &certificates.ca).unwrap();
    behaviour::all(&store).await;
    assert_eq!(
        store.describe(),
        format!("rediss localhost:{} db 0", server.tls_port())
    );

    // With the webpki roots alone, the test CA is unknown: no connection.
    let untrusting = RedisStore::new(&url).unwrap();
    let (error, _) = fails_fast(untrusting.get("abc")).await;
    assert!(matches!(error, StoreError::Unreachable(_)), "{error:?}");
}
