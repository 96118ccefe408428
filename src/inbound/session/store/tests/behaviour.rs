//! What every [`SessionStore`] owes its caller, written once and run against each store.

use std::time::Duration;

use tokio::time::Instant;

use super::super::{MAX_ID_LEN, SessionStore, StoreError};

/// Runs every behaviour below against `store`, which must start empty.
pub async fn all(store: &dyn SessionStore) {
    round_trip(store).await;
    put_replaces(store).await;
    delete_is_idempotent(store).await;
    records_expire(store).await;
    bad_ids_are_refused(store).await;
}

async fn round_trip(store: &dyn SessionStore) {
    assert_eq!(store.get("absent").await.unwrap(), None);
    let every_byte: Vec<u8> = (0..=255).collect();
    store.put("a-b_C9", &every_byte, MINUTE).await.unwrap();
    assert_eq!(store.get("a-b_C9").await.unwrap(), Some(every_byte));
    store.put("empty", b"", MINUTE).await.unwrap();
    assert_eq!(store.get("empty").await.unwrap(), Some(Vec::new()));
    store.delete("a-b_C9").await.unwrap();
    assert_eq!(store.get("a-b_C9").await.unwrap(), None);
    assert_eq!(store.get("empty").await.unwrap(), Some(Vec::new()));
}

async fn put_replaces(store: &dyn SessionStore) {
    store.put("replaced", b"first", MINUTE).await.unwrap();
    store.put("replaced", b"second", MINUTE).await.unwrap();
    assert_eq!(
        store.get("replaced").await.unwrap().as_deref(),
        Some(&b"second"[..])
    );
}

async fn delete_is_idempotent(store: &dyn SessionStore) {
    store.delete("never-stored").await.unwrap();
    store.put("deleted", b"x", MINUTE).await.unwrap();
    store.delete("deleted").await.unwrap();
    store.delete("deleted").await.unwrap();
    assert_eq!(store.get("deleted").await.unwrap(), None);
}

/// A record is there until its time to live has passed, then gone; a longer-lived one stays.
async fn records_expire(store: &dyn SessionStore) {
    let ttl = Duration::from_millis(100);
    let start = Instant::now();
    store.put("short", b"short", ttl).await.unwrap();
    store.put("long", b"long", MINUTE).await.unwrap();
    let gone = poll_until(Duration::from_secs(5), || async {
        store.get("short").await.unwrap().is_none()
    })
    .await;
    assert!(gone, "a {ttl:?} record still there after 5 s");
    assert!(
        start.elapsed() >= ttl,
        "gone after {:?}, before its {ttl:?}",
        start.elapsed()
    );
    assert_eq!(
        store.get("long").await.unwrap().as_deref(),
        Some(&b"long"[..])
    );
}

async fn bad_ids_are_refused(store: &dyn SessionStore) {
    let too_long = "a".repeat(MAX_ID_LEN + 1);
    let at_limit = "a".repeat(MAX_ID_LEN);
    for id in [
        "",
        "a:b",
        "*",
        "a b",
        "a\r\nDEL x",
        "a/b",
        "a+b",
        "a=",
        "é",
        "a\0",
        &too_long,
    ] {
        let refused = |r: Result<(), StoreError>| matches!(r, Err(StoreError::InvalidId));
        assert!(refused(store.put(id, b"x", MINUTE).await), "put {id:?}");
        assert!(
            matches!(store.get(id).await, Err(StoreError::InvalidId)),
            "get {id:?}"
        );
        assert!(refused(store.delete(id).await), "delete {id:?}");
    }
    store.put(&at_limit, b"x", MINUTE).await.unwrap();
    assert!(store.get(&at_limit).await.unwrap().is_some());
}

const MINUTE: Duration = Duration::from_secs(60);

/// Polls `check` every 10 ms until it holds (true) or `within` has passed (false).
pub async fn poll_until<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
