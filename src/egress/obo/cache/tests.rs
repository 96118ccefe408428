use std::sync::atomic::AtomicU32;

use super::*;

fn key(n: usize) -> Key {
    Key::new(
        &Arc::from("web"),
        &Arc::from("api://x/.default"),
        &format!("caller-{n}"),
    )
}

fn fresh(token: &str, lifetime: Duration) -> Fresh {
    Fresh {
        bearer: HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        expires: Instant::now() + lifetime,
    }
}

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test(start_paused = true)]
async fn kept_until_five_minutes_before_expiry() {
    let cache = OboCache::new(10, MAX_BYTES, None);
    let (got, how) = cache
        .get_or_exchange(key(1), || async { Ok(fresh("t1", HOUR)) })
        .await;
    assert_eq!(
        (got.unwrap(), how),
        (HeaderValue::from_static("Bearer t1"), How::Exchanged)
    );
    tokio::time::advance(HOUR - Duration::from_secs(301)).await;
    let (_, how) = cache
        .get_or_exchange(key(1), || async { Ok(fresh("t2", HOUR)) })
        .await;
    assert_eq!(how, How::Hit);
    tokio::time::advance(Duration::from_secs(2)).await;
    let (got, how) = cache
        .get_or_exchange(key(1), || async { Ok(fresh("t2", HOUR)) })
        .await;
    assert_eq!(how, How::Exchanged);
    assert_eq!(got.unwrap(), "Bearer t2");
    // A token with less than the margin left is used, never kept.
    let short = Duration::from_secs(200);
    let _ = cache
        .get_or_exchange(key(2), || async { Ok(fresh("s", short)) })
        .await;
    assert_eq!(cache.len(), 1);
}

#[tokio::test]
async fn distinct_caller_tokens_never_share_an_entry() {
    let cache = OboCache::new(10, MAX_BYTES, None);
    for n in 0..3 {
        let (got, how) = cache
            .get_or_exchange(
                key(n),
                || async move { Ok(fresh(&format!("obo-{n}"), HOUR)) },
            )
            .await;
        assert_eq!(how, How::Exchanged);
        assert_eq!(got.unwrap(), format!("Bearer obo-{n}").as_str());
    }
    let other_scope = Key::new(
        &Arc::from("web"),
        &Arc::from("api://y/.default"),
        "caller-0",
    );
    let (_, how) = cache
        .get_or_exchange(other_scope, || async { Ok(fresh("y", HOUR)) })
        .await;
    assert_eq!(how, How::Exchanged, "another scope is another token");
}

#[tokio::test]
async fn one_exchange_for_a_hundred_waiters_and_errors_are_not_kept() {
    let cache = Arc::new(OboCache::new(10, MAX_BYTES, None));
    let exchanges = Arc::new(AtomicU32::new(0));
    let gate = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (cache, exchanges, gate) = (cache.clone(), exchanges.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_exchange(key(7), || async move {
                    exchanges.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    Err(Failure::unavailable_for_test())
                })
                .await
        }));
    }
    while exchanges.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    gate.notify_one();
    let mut shared = 0;
    for t in tasks {
        let (got, how) = t.await.unwrap();
        assert!(got.is_err());
        shared += usize::from(how == How::Shared);
    }
    assert_eq!(exchanges.load(Ordering::SeqCst), 1);
    assert_eq!(shared, 99);
    // The failure was not kept: the next request exchanges again.
    let (got, how) = cache
        .get_or_exchange(key(7), || async { Ok(fresh("ok", HOUR)) })
        .await;
    assert_eq!((got.is_ok(), how), (true, How::Exchanged));
}

#[tokio::test]
async fn a_flood_of_callers_stays_within_the_entry_bound() {
    let gauge = IntGauge::new("g", "g").unwrap();
    let cache = OboCache::new(50, MAX_BYTES, Some(gauge.clone()));
    for n in 0..5_000 {
        let _ = cache
            .get_or_exchange(key(n), || async move { Ok(fresh(&format!("t{n}"), HOUR)) })
            .await;
        assert!(cache.len() <= 50);
        assert!(cache.inner.lock().order.len() <= 100);
    }
    assert_eq!(cache.len(), 50);
    assert_eq!(gauge.get(), 50);
    assert!(cache.inner.lock().flights.is_empty());
    // The newest are the ones kept.
    let (_, how) = cache
        .get_or_exchange(key(4_999), || async { Ok(fresh("x", HOUR)) })
        .await;
    assert_eq!(how, How::Hit);
    let (_, how) = cache
        .get_or_exchange(key(0), || async { Ok(fresh("x", HOUR)) })
        .await;
    assert_eq!(how, How::Exchanged);
}

#[tokio::test]
async fn large_tokens_stay_within_the_byte_bound() {
    let max = 64 << 10;
    let cache = OboCache::new(1_000, max, None);
    let big = "a".repeat(10 << 10);
    for n in 0..100 {
        let token = format!("{big}{n}");
        let _ = cache
            .get_or_exchange(key(n), || async move { Ok(fresh(&token, HOUR)) })
            .await;
        assert!(cache.bytes() <= max, "{} bytes", cache.bytes());
    }
    assert_eq!(cache.len(), 6);
    // Over the per-token bound: sent, not kept.
    let huge = "b".repeat(MAX_TOKEN_BYTES + 1);
    let (got, _) = cache
        .get_or_exchange(key(1_000), || async move { Ok(fresh(&huge, HOUR)) })
        .await;
    assert!(got.is_ok());
    assert_eq!(cache.len(), 6);
}

#[tokio::test]
async fn a_replaced_or_evicted_entry_leaves_the_bytes_right() {
    let cache = OboCache::new(3, MAX_BYTES, None);
    let _ = cache
        .get_or_exchange(key(1), || async { Ok(fresh("aaaa", HOUR)) })
        .await;
    assert_eq!(cache.bytes(), "Bearer aaaa".len());
    cache.evict(&key(1));
    assert_eq!((cache.len(), cache.bytes()), (0, 0));
    cache.set_capacity(1);
    for n in 0..3 {
        let _ = cache
            .get_or_exchange(key(n), || async { Ok(fresh("bb", HOUR)) })
            .await;
    }
    assert_eq!((cache.len(), cache.bytes()), (1, "Bearer bb".len()));
}
