//! Session records in this process's memory: for tests, and for one replica that wants the
//! tokens out of the cookie without running Redis. Records are lost on restart.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::{BoxFuture, SessionStore, StoreError, check_id, ttl_millis};

/// How many records [`MemoryStore::new`] keeps: 10,000 sessions (a few MB of sealed tokens).
pub const DEFAULT_MEMORY_CAPACITY: usize = 10_000;

/// An in-memory store with the same time-to-live reading as Redis. Bounded: when it is full, a
/// `put` of a new id first drops the expired records, then, if none had expired, the record
/// closest to expiry (Redis's `volatile-ttl` choice), so the store never grows past its capacity.
pub struct MemoryStore {
    records: Mutex<HashMap<String, Entry>>,
    capacity: usize,
}

struct Entry {
    record: Vec<u8>,
    expires: Instant,
}

impl MemoryStore {
    /// An empty store for [`DEFAULT_MEMORY_CAPACITY`] records.
    pub fn new() -> MemoryStore {
        MemoryStore::with_capacity(DEFAULT_MEMORY_CAPACITY)
    }

    /// An empty store for `capacity` records (at least one).
    pub fn with_capacity(capacity: usize) -> MemoryStore {
        MemoryStore {
            records: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// How many records are held, expired ones not yet dropped included.
    pub fn len(&self) -> usize {
        self.records.lock().len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get_now(&self, id: &str, now: Instant) -> Result<Option<Vec<u8>>, StoreError> {
        let id = check_id(id)?;
        let mut records = self.records.lock();
        match records.get(id) {
            Some(entry) if entry.expires > now => Ok(Some(entry.record.clone())),
            Some(_) => {
                records.remove(id);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    fn put_now(
        &self,
        id: &str,
        record: &[u8],
        ttl: Duration,
        now: Instant,
    ) -> Result<(), StoreError> {
        let id = check_id(id)?;
        let expires = now + Duration::from_millis(ttl_millis(ttl));
        let mut records = self.records.lock();
        if records.len() >= self.capacity && !records.contains_key(id) {
            records.retain(|_, entry| entry.expires > now);
            if records.len() >= self.capacity {
                let soonest = records
                    .iter()
                    .min_by_key(|(_, entry)| entry.expires)
                    .map(|(id, _)| id.clone());
                if let Some(soonest) = soonest {
                    records.remove(&soonest);
                }
            }
        }
        let entry = Entry {
            record: record.to_vec(),
            expires,
        };
        records.insert(id.to_owned(), entry);
        Ok(())
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl SessionStore for MemoryStore {
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        Box::pin(async move { self.get_now(id, Instant::now()) })
    }

    fn put<'a>(
        &'a self,
        id: &'a str,
        record: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { self.put_now(id, record, ttl, Instant::now()) })
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let id = check_id(id)?;
            self.records.lock().remove(id);
            Ok(())
        })
    }

    fn describe(&self) -> String {
        format!("memory (at most {} records)", self.capacity)
    }
}
