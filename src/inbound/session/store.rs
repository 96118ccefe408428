//! Where server-side session records live (`[login] session_store`): a [`SessionStore`] maps a
//! session id to an opaque record for a time to live. The records arrive already sealed (the
//! cookie carries the per-session key), so a store sees only bytes it cannot read.
//!
//! [`RedisStore`] (`redis.rs`) shares records between replicas; [`MemoryStore`] (`memory.rs`)
//! keeps them in this process, for tests and a single replica. Both refuse an id that is not
//! URL-safe base64 of at most [`MAX_ID_LEN`] characters, so an id can never address anything
//! but a session record, and both give a time to live the same reading ([`ttl_millis`]).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

mod memory;
mod redis;

pub use memory::{DEFAULT_MEMORY_CAPACITY, MemoryStore};
pub use redis::{COMMAND_TIMEOUT, CONNECT_TIMEOUT, KEY_PREFIX, OPERATION_DEADLINE, RedisStore};

/// A boxed future that can cross threads: what the [`SessionStore`] methods return, so the
/// trait stays object safe (`Arc<dyn SessionStore>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The longest session id accepted: 128 characters. A 32-byte random id is 43.
pub const MAX_ID_LEN: usize = 128;
/// The longest time to live a record gets: 365 days; a longer one is cut to this.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why the store could not answer. The message never contains a record, an id, a key or a
/// password: only the reason, and the store's own error as the source.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The `session_store` URL is not one tollgate can use (checked at start).
    #[error("invalid session store url: {0}")]
    InvalidUrl(&'static str),
    /// The id is empty, longer than [`MAX_ID_LEN`], or has a character outside URL-safe base64.
    #[error("invalid session id")]
    InvalidId,
    /// The store did not answer in time (for Redis: [`CONNECT_TIMEOUT`], [`COMMAND_TIMEOUT`], or
    /// [`OPERATION_DEADLINE`] for the whole operation).
    #[error("session store timed out")]
    TimedOut,
    /// No connection could be made or kept (refused, reset, TLS or authentication failed).
    #[error("session store unreachable")]
    Unreachable(#[source] ::redis::RedisError),
    /// The store answered the command with an error (out of memory, read-only replica, ...).
    #[error("session store refused the command")]
    Refused(#[source] ::redis::RedisError),
}

/// Where server-side session records live. Records are opaque (already sealed) bytes.
pub trait SessionStore: Send + Sync {
    /// The record under `id`, or None when absent/expired.
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>>;
    /// Stores `record` under `id` for `ttl` (replacing any record there). The time to live is
    /// read by [`ttl_millis`]: whole milliseconds rounded up, at least 1 ms, at most [`MAX_TTL`].
    fn put<'a>(
        &'a self,
        id: &'a str,
        record: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Deletes the record under `id` (absent is fine).
    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
    /// For logs and `tollgate check`: "redis 127.0.0.1:6379 db 0" (never a password).
    fn describe(&self) -> String;
}

impl StoreError {
    /// A label for metrics and logs: `invalid_url`, `invalid_id`, `timeout`, `unreachable` or
    /// `refused`.
    pub fn reason(&self) -> &'static str {
        match self {
            StoreError::InvalidUrl(_) => "invalid_url",
            StoreError::InvalidId => "invalid_id",
            StoreError::TimedOut => "timeout",
            StoreError::Unreachable(_) => "unreachable",
            StoreError::Refused(_) => "refused",
        }
    }
}

/// `id` when it is a session id a store accepts: 1 to [`MAX_ID_LEN`] characters of URL-safe
/// base64 (`A-Z a-z 0-9 - _`, no padding).
pub fn check_id(id: &str) -> Result<&str, StoreError> {
    // Only these characters, so the id cannot leave its key's namespace (no `:`, `*`, spaces
    // or control characters reach Redis) and a log line with one in it cannot be forged.
    let url_safe = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_';
    if id.is_empty() || id.len() > MAX_ID_LEN || !id.as_bytes().iter().all(url_safe) {
        return Err(StoreError::InvalidId);
    }
    Ok(id)
}

/// How a store reads a time to live: in whole milliseconds, rounded up so a record lives at
/// least as long as asked, at least 1 (Redis refuses `PX 0`) and at most [`MAX_TTL`].
pub fn ttl_millis(ttl: Duration) -> u64 {
    let capped = ttl.min(MAX_TTL);
    let millis = capped.as_millis() + u128::from(!capped.subsec_nanos().is_multiple_of(1_000_000));
    u64::try_from(millis).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests;
