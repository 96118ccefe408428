//! The token cache seen from outside: one fetch for many waiting requests, retries (429 with
//! Retry-After, 410, 500 storms), failures answered 503 with nothing sent downstream, the
//! refresh ahead of expiry with the old token kept while it fails, and reloads.

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use support::imds::{Id, Reply as Scripted};

/// Lets paused time run forward by `d`, timers firing in order (nothing real is waited for).
async fn run_clock(d: Duration) {
    tokio::time::sleep(d).await;
}

#[tokio::test]
async fn twenty_concurrent_first_requests_cause_one_fetch() {
    let backend = Backend::start().await;
    let imds = Mock::imds().hold().start().await;
    let app = start(&simple(&backend, &imds_credential("mi", &imds, "")), &[]).await;
    let requests: Vec<_> = (0..20)
        .map(|_| {
            let addr = app.egress;
            tokio::spawn(async move { support::get(addr, "/api/x", &[]).await })
        })
        .collect();
    let open = app
        .proxy
        .metrics()
        .open_connections
        .with_label_values(&["egress"]);
    support::eventually("20 requests waiting", || async { open.get() == 20 }).await;
    imds.release();
    for r in requests {
        assert_eq!(r.await.unwrap().status, 200);
    }
    assert_eq!(imds.served(), 1, "exactly one token fetch");
    let expected = format!("Bearer {}", imds.last_token());
    assert!(
        backend
            .seen()
            .iter()
            .all(|s| s.header("authorization") == Some(expected.as_str()))
    );
    assert_eq!(backend.count(), 20);
}

#[tokio::test(start_paused = true)]
async fn a_429_with_retry_after_is_honoured_then_the_token_arrives() {
    let t0 = Instant::now();
    let backend = Backend::start().await;
    let imds = Mock::imds().retry_after(429, 3).token(3600).start().await;
    let app = start(&simple(&backend, &imds_credential("mi", &imds, "")), &[]).await;
    let reply = app.get("/api/x", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        t0.elapsed() >= Duration::from_secs(3),
        "waited out Retry-After"
    );
    assert_eq!(imds.served(), 2);
    assert_eq!(app.token_requests("mi", "throttled"), 1);
    assert_eq!(app.token_requests("mi", "success"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_410_is_retried_then_the_token_arrives() {
    let t0 = Instant::now();
    let backend = Backend::start().await;
    let imds = Mock::imds().status(410).token(3600).start().await;
    let app = start(&simple(&backend, &imds_credential("mi", &imds, "")), &[]).await;
    let reply = app.get("/api/x", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        t0.elapsed() >= Duration::from_secs(5),
        "IMDS is given time to come back"
    );
    assert_eq!(imds.served(), 2);
    assert_eq!(backend.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_500_storm_is_503_with_nothing_sent_then_recovers() {
    let backend = Backend::start().await;
    let mut builder = Mock::imds();
    for _ in 0..6 {
        builder = builder.status(500);
    }
    let imds = builder.start().await;
    let app = start(&simple(&backend, &imds_credential("mi", &imds, "")), &[]).await;

    // 1 + 5 retries over 31 s: the request gives up after its 10 s bound.
    let t0 = Instant::now();
    let reply = app.get("/api/x", &[("authorization", "Bearer app")]).await;
    let bound = tollgate::egress::token_cache::MAX_TOKEN_WAIT;
    assert!(t0.elapsed() >= bound && t0.elapsed() < bound + Duration::from_secs(1));
    assert_no_token(&reply, &["no token", "IMDS answered HTTP 500", "unknown"]);
    backend.assert_nothing_received();

    // The storm passes: the fetch after the backoff gets a token.
    run_clock(Duration::from_secs(60)).await;
    assert_eq!(imds.served(), 7);
    assert_eq!(app.get("/api/x", &[]).await.status, 200);
    assert_eq!(app.token_requests("mi", "unavailable"), 6);
}

#[tokio::test(start_paused = true)]
async fn identity_not_found_is_503_at_once_and_not_retried() {
    let backend = Backend::start().await;
    let imds = Mock::imds()
        .user_assigned_only()
        .identity(Id::Client("assigned".into()))
        .start()
        .await;
    let credential = imds_credential("mi", &imds, "client_id = \"not-assigned\"");
    let app = start(&simple(&backend, &credential), &[]).await;
    let t0 = Instant::now();
    let reply = app.get("/api/x", &[]).await;
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "no waiting: {:?}",
        t0.elapsed()
    );
    assert_no_token(
        &reply,
        &[
            "IMDS answered HTTP 400",
            "invalid_request",
            "Identity not found",
        ],
    );
    assert_eq!(imds.calls(), 1, "identity not found is not retried");
    assert_eq!(app.token_requests("mi", "rejected"), 1);
    backend.assert_nothing_received();
}

#[tokio::test(start_paused = true)]
async fn imds_down_is_503_and_the_target_receives_nothing() {
    let backend = Backend::start().await;
    let dead = support::echo::dead_upstream().await;
    let credential =
        format!("[credentials.mi]\nkind = \"managed_identity\"\nendpoint = \"http://{dead}\"\n");
    let app = start(&simple(&backend, &credential), &[]).await;
    let reply = app.get("/api/x", &[("authorization", "Bearer app")]).await;
    assert_no_token(&reply, &["IMDS unreachable"]);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    backend.assert_nothing_received();
    assert!(app.token_requests("mi", "unreachable") >= 1);
    assert_eq!(app.requests("api", "503"), 1);
}

#[tokio::test(start_paused = true)]
async fn refresh_ahead_keeps_the_old_token_while_the_refresh_fails() {
    let backend = Backend::start().await;
    let imds = Mock::imds().token(3600).start().await;
    let app = start(&simple(&backend, &imds_credential("mi", &imds, "")), &[]).await;
    assert_eq!(app.get("/api/x", &[]).await.status, 200);
    let first = imds.last_token();
    // Two failed refreshes' worth of 500s (each 1 + 5 retries), then tokens again.
    for _ in 0..12 {
        imds.push(Scripted::Status {
            status: 500,
            retry_after: None,
        });
    }

    // 55 minutes into a 60-minute token: 5 minutes before expiry, a refresh starts.
    tokio::time::advance(Duration::from_secs(55 * 60 - 1)).await;
    assert_eq!(imds.served(), 1, "nothing before the refresh point");
    tokio::time::advance(Duration::from_secs(2)).await;
    support::eventually("the refresh starts", || async { imds.served() >= 2 }).await;
    backend.clear();
    assert_eq!(app.get("/api/x", &[]).await.status, 200);
    assert_eq!(
        backend.only().header("authorization"),
        Some(format!("Bearer {first}").as_str()),
        "the old token is served while the refresh fails"
    );

    // Both failed fetches and their backoff (10 s, then 20 s) pass; the third succeeds.
    run_clock(Duration::from_secs(120)).await;
    assert_eq!(imds.served(), 14);
    assert_eq!(imds.issued().len(), 2);
    backend.clear();
    assert_eq!(app.get("/api/x", &[]).await.status, 200);
    assert_eq!(
        backend.only().header("authorization"),
        Some(format!("Bearer {}", imds.last_token()).as_str())
    );
    assert_eq!(app.token_requests("mi", "unavailable"), 12);
    assert_eq!(
        app.expiry("mi", "api://orders/.default"),
        exp_of(&imds.last_token()) as f64
    );
}

#[tokio::test(start_paused = true)]
async fn long_lived_tokens_refresh_at_half_life() {
    let backend = Backend::start().await;
    let imds = Mock::imds().lifetime(24 * 3600).start().await;
    let _app = start(&simple(&backend, &imds_credential("mi", &imds, "")), &[]).await;
    support::eventually("the first token", || async { imds.served() == 1 }).await;
    tokio::time::advance(Duration::from_secs(12 * 3600 - 1)).await;
    assert_eq!(imds.served(), 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    support::eventually("the half-life refresh", || async { imds.served() == 2 }).await;
}

#[tokio::test]
async fn a_reload_keeps_tokens_of_unchanged_credentials() {
    let backend = Backend::start().await;
    let imds = Mock::imds().start().await;
    let credential = imds_credential("mi", &imds, "");
    let app = start(&simple(&backend, &credential), &[]).await;
    assert_eq!(app.get("/api/x", &[]).await.status, 200);

    // Same credential and scope, one more target: the token stays.
    let more = format!(
        "{}{}{credential}",
        target("api", &backend, "mi", "api://orders/.default"),
        target("other", &backend, "mi", "api://orders/.default")
    );
    app.proxy.write_config(&config(&backend, &more));
    app.proxy.app.reload().unwrap();
    assert_eq!(app.get("/other/x", &[]).await.status, 200);
    assert_eq!(imds.served(), 1, "no new fetch after the reload");

    // A new scope is a new token.
    let changed = format!(
        "{}{credential}",
        target("api", &backend, "mi", "api://billing/.default")
    );
    app.proxy.write_config(&config(&backend, &changed));
    app.proxy.app.reload().unwrap();
    assert_eq!(app.get("/api/x", &[]).await.status, 200);
    assert_eq!(imds.served(), 2);
    assert_eq!(imds.log()[1].param("resource"), Some("api://billing"));
}

#[tokio::test]
async fn shutdown_stops_the_background_refresh_and_a_fetch_in_flight() {
    let backend = Backend::start().await;
    let imds = Mock::imds().hold().start().await;
    let app = start(&simple(&backend, &imds_credential("mi", &imds, "")), &[]).await;
    support::eventually("the first fetch is in flight", || async {
        imds.calls() == 1
    })
    .await;
    let drained = app.proxy.app.shutdown_within(Duration::from_secs(5)).await;
    assert!(drained, "no background task outlives shutdown");
    backend.assert_nothing_received();
}
