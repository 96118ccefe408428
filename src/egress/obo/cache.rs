//! On-behalf-of tokens per (credential, scope, caller token): kept until 5 minutes before
//! they expire, one exchange at a time per key, bounded in entries and in bytes.
//!
//! The key holds the SHA-256 of the caller's token, never the token: two callers (two
//! tokens) never share an entry, and a new token from the same user is a new exchange, as
//! MSAL does. The bounds: at most `capacity` entries (`[egress] obo_cache_entries`, default
//! 10,000) and at most [`MAX_BYTES`] of tokens; a token over [`MAX_TOKEN_BYTES`] is used
//! once and not kept. When either bound would be passed the oldest entries go first
//! (insertion order). So the cache holds at most 32 MiB of tokens plus about
//! [`ENTRY_OVERHEAD`] bytes per entry (2.5 MB at 10,000 entries).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::HeaderValue;
use parking_lot::Mutex;
use prometheus::IntGauge;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::Failure;

/// A token is kept until this long before it expires (DESIGN §7).
pub const KEEP_UNTIL_BEFORE_EXPIRY: Duration = Duration::from_secs(300);
/// Most bytes of tokens kept, whatever the number of entries.
pub const MAX_BYTES: usize = 32 << 20;
/// A larger token is sent but not kept.
pub const MAX_TOKEN_BYTES: usize = 16 << 10;
/// What an entry costs besides its token: the key (digest, two shared strings), the map
/// slot and the queue slot, rounded up.
pub const ENTRY_OVERHEAD: usize = 256;

/// Which on-behalf-of token: the credential, the scope and the caller's token digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    digest: [u8; 32],
    credential: Arc<str>,
    scope: Arc<str>,
}

impl Key {
    /// The key of `caller_token` for `credential` and `scope`.
    pub fn new(credential: &Arc<str>, scope: &Arc<str>, caller_token: &str) -> Key {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, caller_token.as_bytes());
        let mut digest = [0u8; 32];
        digest.copy_from_slice(d.as_ref());
        Key {
            digest,
            credential: credential.clone(),
            scope: scope.clone(),
        }
    }
}

/// A token just obtained: the `Authorization` value and when the token expires.
#[derive(Clone, Debug)]
pub struct Fresh {
    /// `Bearer <token>`, marked sensitive.
    pub bearer: HeaderValue,
    /// When the token stops being accepted.
    pub expires: Instant,
}

/// How a request got its token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    /// From the cache.
    Hit,
    /// This request ran the exchange.
    Exchanged,
    /// Another request's exchange, waited for.
    Shared,
}

type Flight = Arc<OnceCell<Result<Fresh, Arc<Failure>>>>;

struct Entry {
    bearer: HeaderValue,
    until: Instant,
    seq: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    /// Keys in insertion order with the `seq` they were inserted with; a pair whose entry
    /// has another `seq` (replaced) or none (removed) is stale and skipped.
    order: VecDeque<(Key, u64)>,
    bytes: usize,
    seq: u64,
    flights: HashMap<Key, Flight>,
}

/// The cache, shared by every snapshot (it lives in the token cache).
pub struct OboCache {
    capacity: AtomicUsize,
    max_bytes: usize,
    inner: Mutex<Inner>,
    gauge: Option<IntGauge>,
}

impl OboCache {
    /// A cache of at most `capacity` entries and `max_bytes` of tokens, its size shown on
    /// `gauge`.
    pub fn new(capacity: usize, max_bytes: usize, gauge: Option<IntGauge>) -> OboCache {
        OboCache {
            capacity: AtomicUsize::new(capacity.max(1)),
            max_bytes,
            inner: Mutex::default(),
            gauge,
        }
    }

    /// Changes the entry bound (a reload); a smaller one takes effect at the next insert.
    pub fn set_capacity(&self, capacity: usize) {
        self.capacity.store(capacity.max(1), Ordering::Relaxed);
    }

    /// Entries now.
    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of tokens held now.
    pub fn bytes(&self) -> usize {
        self.inner.lock().bytes
    }

    /// The token for `key`: cached, or from the one exchange in flight for it (started
    /// here with `exchange` when there is none). Errors are shared with the requests that
    /// waited, never kept.
    pub async fn get_or_exchange<F, Fut>(
        &self,
        key: Key,
        exchange: F,
    ) -> (Result<HeaderValue, Arc<Failure>>, How)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Fresh, Failure>>,
    {
        let flight = {
            let mut inner = self.inner.lock();
            if let Some(bearer) = inner.get(&key, Instant::now()) {
                return (Ok(bearer), How::Hit);
            }
            inner.flights.entry(key.clone()).or_default().clone()
        };
        // If this request is dropped mid-exchange, a waiting one runs its own.
        let mut ran = false;
        let result = flight
            .get_or_init(|| {
                ran = true;
                async { exchange().await.map_err(Arc::new) }
            })
            .await
            .clone();
        if !ran {
            return (result.map(|f| f.bearer), How::Shared);
        }
        {
            let mut inner = self.inner.lock();
            if inner
                .flights
                .get(&key)
                .is_some_and(|f| Arc::ptr_eq(f, &flight))
            {
                inner.flights.remove(&key);
            }
            if let Ok(fresh) = &result {
                let capacity = self.capacity.load(Ordering::Relaxed);
                inner.insert(key, fresh, capacity, self.max_bytes, Instant::now());
            }
            self.show(&inner);
        }
        (result.map(|f| f.bearer), How::Exchanged)
    }

    /// Forgets `key`'s token (the target challenged it).
    pub fn evict(&self, key: &Key) {
        let mut inner = self.inner.lock();
        inner.remove(key);
        self.show(&inner);
    }

    fn show(&self, inner: &Inner) {
        if let Some(g) = &self.gauge {
            g.set(i64::try_from(inner.entries.len()).unwrap_or(i64::MAX));
        }
    }
}

impl Inner {
    fn get(&mut self, key: &Key, now: Instant) -> Option<HeaderValue> {
        let entry = self.entries.get(key)?;
        if now < entry.until {
            return Some(entry.bearer.clone());
        }
        self.remove(key);
        None
    }

    fn remove(&mut self, key: &Key) {
        if let Some(old) = self.entries.remove(key) {
            self.bytes -= old.bearer.len();
        }
    }

    fn insert(&mut self, key: Key, fresh: &Fresh, capacity: usize, max_bytes: usize, now: Instant) {
        let until = fresh
            .expires
            .checked_sub(KEEP_UNTIL_BEFORE_EXPIRY)
            .unwrap_or(now);
        let size = fresh.bearer.len();
        if until <= now || size > MAX_TOKEN_BYTES.min(max_bytes) {
            return;
        }
        self.remove(&key);
        // Room for one more: the oldest go first.
        while self.entries.len() >= capacity || self.bytes + size > max_bytes {
            let Some((old, seq)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&old).is_some_and(|e| e.seq == seq) {
                self.remove(&old);
            }
        }
        self.seq += 1;
        let seq = self.seq;
        self.order.push_back((key.clone(), seq));
        self.bytes += size;
        self.entries.insert(
            key,
            Entry {
                bearer: fresh.bearer.clone(),
                until,
                seq,
            },
        );
        // Stale pairs (replaced or expired entries) are dropped before they outnumber the
        // live ones, so the queue stays within twice the entry bound.
        if self.order.len() > 2 * capacity.max(self.entries.len()) {
            let entries = &self.entries;
            self.order
                .retain(|(k, s)| entries.get(k).is_some_and(|e| e.seq == *s));
        }
    }
}

#[cfg(test)]
mod tests;
