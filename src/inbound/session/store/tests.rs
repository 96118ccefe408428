use std::time::Duration;

use super::*;

mod behaviour;
mod redis_server;
mod redis_store;

#[test]
fn ids_are_url_safe_base64_of_bounded_length() {
    for id in [
        "a",
        "AZaz09-_",
        "QmFzZTY0VXJsU2FmZUlkT2YzMkJ5dGVzLi4uLi4uLi4",
    ] {
        assert_eq!(check_id(id).unwrap(), id);
    }
    let too_long = "a".repeat(MAX_ID_LEN + 1);
    for id in [
        "", "a:b", "a*", "a b", "a/b", "a+b", "a=", "a\n", "é", &too_long,
    ] {
        assert!(matches!(check_id(id), Err(StoreError::InvalidId)), "{id:?}");
    }
}

#[test]
fn a_time_to_live_is_whole_milliseconds_rounded_up_within_bounds() {
    for (ttl, millis) in [
        (Duration::ZERO, 1),
        (Duration::from_nanos(1), 1),
        (Duration::from_micros(1500), 2),
        (Duration::from_millis(250), 250),
        (Duration::from_secs(3600), 3_600_000),
        (MAX_TTL, 31_536_000_000),
        (Duration::MAX, 31_536_000_000),
    ] {
        assert_eq!(ttl_millis(ttl), millis, "{ttl:?}");
    }
}

#[test]
fn urls_are_checked_at_start_and_described_without_secrets() {
    for (url, described) in [
        ("redis://127.0.0.1:6379/0", "redis 127.0.0.1:6379 db 0"),
        ("redis://localhost", "redis localhost:6379 db 0"),
        ("redis://cache.internal/", "redis cache.internal:6379 db 0"),
        (
            "rediss://cache.example.com:6380/3",
            "rediss cache.example.com:6380 db 3",
        ),
        ("redis://:hunter2@[::1]:7000/1", "redis [::1]:7000 db 1"),
        ("rediss://app:hunter2@cache:6380", "rediss cache:6380 db 0"),
    ] {
        let store = RedisStore::new(url).unwrap();
        assert_eq!(store.describe(), described, "{url}");
        assert!(!format!("{store:?}").contains("hunter2"));
    }
    for (url, reason) in [
        ("127.0.0.1:6379", "not a URL"),
        (
            "http://127.0.0.1:6379",
            "the scheme must be redis:// or rediss://",
        ),
        (
            "valkey://127.0.0.1",
            "the scheme must be redis:// or rediss://",
        ),
        (
            "redis+unix:///run/redis.sock",
            "the scheme must be redis:// or rediss://",
        ),
        ("redis://", "no host"),
        ("redis://:hunter2@/0", "not a URL"),
        (
            "rediss://cache:6380/0#insecure",
            "a query or fragment is not supported",
        ),
        (
            "redis://cache/0?protocol=resp3",
            "a query or fragment is not supported",
        ),
        (
            "redis://:hunter2@cache/db0",
            "the path must be a database number, as in /0",
        ),
        (
            "redis://cache/0/1",
            "the path must be a database number, as in /0",
        ),
        (
            "redis://cache/-1",
            "the path must be a database number, as in /0",
        ),
    ] {
        let error = RedisStore::new(url).unwrap_err();
        assert!(
            matches!(error, StoreError::InvalidUrl(r) if r == reason),
            "{url}: {error:?}"
        );
        assert!(!error.to_string().contains("hunter2"));
    }
}

#[test]
fn every_error_has_a_reason_label() {
    let errors = [
        (StoreError::InvalidUrl("x"), "invalid_url"),
        (StoreError::InvalidId, "invalid_id"),
        (StoreError::TimedOut, "timeout"),
        (
            StoreError::Unreachable(std::io::Error::other("x").into()),
            "unreachable",
        ),
        (
            StoreError::Refused(std::io::Error::other("x").into()),
            "refused",
        ),
    ];
    for (error, reason) in errors {
        assert_eq!(error.reason(), reason);
    }
}

#[tokio::test]
async fn the_memory_store_behaves_as_a_store() {
    let store = MemoryStore::new();
    behaviour::all(&store).await;
    assert_eq!(store.describe(), "memory (at most 10000 records)");
}

#[tokio::test(start_paused = true)]
async fn a_full_memory_store_drops_expired_records_then_the_soonest_to_expire() {
    let store = MemoryStore::with_capacity(2);
    let second = Duration::from_secs(1);
    store.put("a", b"a", 10 * second).await.unwrap();
    store.put("b", b"b", 20 * second).await.unwrap();
    // Replacing a record does not count as a new one.
    store.put("b", b"b2", 30 * second).await.unwrap();
    store.put("c", b"c", 40 * second).await.unwrap();
    assert_eq!(store.len(), 2);
    assert_eq!(store.get("a").await.unwrap(), None, "closest to expiry");
    assert!(store.get("b").await.unwrap().is_some());

    tokio::time::advance(35 * second).await;
    store.put("d", b"d", second).await.unwrap();
    assert_eq!(store.len(), 2, "b expired and was dropped, not c");
    assert!(store.get("c").await.unwrap().is_some());
    assert!(store.get("d").await.unwrap().is_some());
}

#[tokio::test(start_paused = true)]
async fn a_memory_record_lives_exactly_its_time_to_live() {
    let store = MemoryStore::new();
    store
        .put("s", b"x", Duration::from_millis(100))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_millis(99)).await;
    assert!(store.get("s").await.unwrap().is_some());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(store.get("s").await.unwrap(), None);
    assert!(store.is_empty(), "an expired record is dropped when read");
}
