//! Session records in Redis, shared by every replica: `SET tollgate:session:{id} <record> PX
//! <ms>` (one atomic command), `GET` and `DEL`, each within [`OPERATION_DEADLINE`].
//!
//! The connection is a redis-rs `aio::ConnectionManager` (one multiplexed connection shared by
//! every request), handled around what it does on its own (redis 1.8, checked in the tests):
//! - `ConnectionManager::new` connects at once and fails while Redis is down, and the lazy
//!   constructor spawns a task, so it needs a Tokio runtime. The manager is therefore made on
//!   first use, not in [`RedisStore::new`], which `tollgate check` can call outside a runtime.
//! - It reconnects by itself only after an I/O error: a failed authentication stays its answer
//!   for good. So this store drops its manager after any failure and makes a new one for the
//!   next operation; with the manager's own retries off, a deadline decides how long a request
//!   waits, not a backoff.
//! - Over RESP2 it learns that Redis restarted only when a command fails on the old
//!   connection. `GET`, `SET` and `DEL` are idempotent, so an operation that fails that way is
//!   sent once more on a new connection, within the same deadline: a restart costs no request.

use std::fmt;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Cmd, ErrorKind, FromRedisValue, RedisError};
use url::Url;

use super::{BoxFuture, SessionStore, StoreError, check_id, ttl_millis};

/// Every record's key is this prefix and the session id, so the store shares a Redis database
/// with other users without meeting their keys.
pub const KEY_PREFIX: &str = "tollgate:session:";
/// How long a connection attempt (TCP, TLS, `AUTH`, `SELECT`) may take: 1 s. Loopback or the
/// same region answers in milliseconds; more means Redis is not there.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one command may wait for its reply: 500 ms, against a sub-millisecond norm.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);
/// The bound on a whole operation, connecting and the one resend included: 1.5 s. A request
/// whose store is down fails this fast (in practice at once: a refused connection is immediate).
pub const OPERATION_DEADLINE: Duration = Duration::from_millis(1500);

/// The port when the URL names none.
const DEFAULT_PORT: u16 = 6379;

/// Session records in Redis (`redis://` or `rediss://` with rustls and the webpki roots).
pub struct RedisStore {
    client: Client,
    described: String,
    /// The connection in use, made on first use and dropped after a failure.
    connection: Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    current: Option<Connection>,
    /// Counts the connections made, so a failure drops only the one it happened on.
    made: u64,
}

#[derive(Clone)]
struct Connection {
    number: u64,
    manager: ConnectionManager,
}

impl RedisStore {
    /// Parses and checks the URL now (redis:// and rediss:// with rustls — NO OpenSSL;
    /// username/password allowed and never logged), connects lazily and reconnects on its own.
    ///
    /// The URL is `redis[s]://[[user]:password@]host[:port][/db]`: port 6379 and database 0 by
    /// default; no query or fragment (redis-rs would read `#insecure` as "skip TLS checks").
    pub fn new(url: &str) -> Result<RedisStore, StoreError> {
        let described = check_url(url)?;
        // Already checked above; redis-rs's message is not passed on, in case it quotes the URL.
        let client =
            Client::open(url).map_err(|_| StoreError::InvalidUrl("not a URL redis-rs accepts"))?;
        Ok(RedisStore::with_client(client, described))
    }

    fn with_client(client: Client, described: String) -> RedisStore {
        RedisStore {
            client,
            described,
            connection: Mutex::new(Slot::default()),
        }
    }

    /// Sends `cmd` (idempotent), once more on a new connection if the first one had died.
    async fn send<T: FromRedisValue>(&self, cmd: Cmd) -> Result<T, StoreError> {
        let mut used = None;
        let attempts = async {
            let mut resent = false;
            loop {
                let mut connection = self.connection()?;
                used = Some(connection.number);
                let error = match cmd.query_async::<T>(&mut connection.manager).await {
                    Ok(value) => return Ok(value),
                    Err(error) => error,
                };
                self.drop_connection(connection.number);
                if resent || !error.is_unrecoverable_error() {
                    return Err(error);
                }
                tracing::debug!(store = %self.described, %error, "connection lost; resending");
                resent = true;
            }
        };
        match tokio::time::timeout(OPERATION_DEADLINE, attempts).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(classify(error)),
            Err(_elapsed) => {
                if let Some(number) = used {
                    self.drop_connection(number);
                }
                Err(StoreError::TimedOut)
            }
        }
    }

    /// The connection in use, or a new (not yet connected) one.
    fn connection(&self) -> Result<Connection, RedisError> {
        let mut slot = self.connection.lock();
        if let Some(connection) = &slot.current {
            return Ok(connection.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(0);
        let manager = ConnectionManager::new_lazy_with_config(self.client.clone(), config)?;
        slot.made += 1;
        let connection = Connection {
            number: slot.made,
            manager,
        };
        slot.current = Some(connection.clone());
        Ok(connection)
    }

    /// Forgets connection `number` if it is still the one in use; the next operation connects anew.
    fn drop_connection(&self, number: u64) {
        let mut slot = self.connection.lock();
        if slot.current.as_ref().is_some_and(|c| c.number == number) {
            slot.current = None;
        }
    }
}

impl SessionStore for RedisStore {
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("GET");
            cmd.arg(key(id)?);
            self.send(cmd).await
        })
    }

    fn put<'a>(
        &'a self,
        id: &'a str,
        record: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(key(id)?).arg(record).arg("PX").arg(ttl_millis(ttl));
            self.send(cmd).await
        })
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("DEL");
            cmd.arg(key(id)?);
            self.send::<i64>(cmd).await.map(drop)
        })
    }

    fn describe(&self) -> String {
        self.described.clone()
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RedisStore").field(&self.described).finish()
    }
}

/// The Redis key of session `id`.
fn key(id: &str) -> Result<String, StoreError> {
    Ok(format!("{KEY_PREFIX}{}", check_id(id)?))
}

/// Checks a `session_store` URL; returns how to describe it ("redis 127.0.0.1:6379 db 0").
fn check_url(url: &str) -> Result<String, StoreError> {
    let parsed = Url::parse(url).map_err(|_| StoreError::InvalidUrl("not a URL"))?;
    let scheme = parsed.scheme();
    if scheme != "redis" && scheme != "rediss" {
        return Err(StoreError::InvalidUrl(
            "the scheme must be redis:// or rediss://",
        ));
    }
    let host = match parsed.host_str() {
        Some(host) if !host.is_empty() => host,
        _ => return Err(StoreError::InvalidUrl("no host")),
    };
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(StoreError::InvalidUrl(
            "a query or fragment is not supported",
        ));
    }
    let db = match parsed.path().trim_start_matches('/') {
        "" => 0,
        number => number
            .parse::<u32>()
            .map_err(|_| StoreError::InvalidUrl("the path must be a database number, as in /0"))?,
    };
    let port = parsed.port().unwrap_or(DEFAULT_PORT);
    Ok(format!("{scheme} {host}:{port} db {db}"))
}

/// What a redis-rs error means to the caller.
fn classify(error: RedisError) -> StoreError {
    if error.is_timeout() {
        return StoreError::TimedOut;
    }
    match error.kind() {
        ErrorKind::Server(_) => StoreError::Refused(error),
        _ => StoreError::Unreachable(error),
    }
}

// Last in the file: tests/layers.rs stops reading at a `#[cfg(test)]` item.
#[cfg(test)]
impl RedisStore {
    /// A `rediss://` store that trusts only `root_pem` (a test CA), not the webpki roots.
    pub(super) fn trusting(url: &str, root_pem: &str) -> Result<RedisStore, StoreError> {
        let described = check_url(url)?;
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root_pem.as_bytes().to_vec()),
        };
        let client = Client::build_with_tls(url, certificates)
            .map_err(|_| StoreError::InvalidUrl("not a URL redis-rs accepts"))?;
        Ok(RedisStore::with_client(client, described))
    }
}
