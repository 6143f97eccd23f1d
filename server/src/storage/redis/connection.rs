//! Connections to Redis: one server (`redis://` URL) or a Redis Cluster (seed URLs), as a
//! small pool of synchronous connections.
//!
//! The store's contract is synchronous and its callers already run it on blocking threads
//! (`spawn_blocking`), so the store uses the crate's synchronous connections rather than
//! bridging to the async ones: no runtime is needed and no method can panic for being
//! called on a runtime thread. Each call takes an idle connection from the pool (or opens
//! one), and gives it back unless it failed with a connection error.

use std::time::Duration;

use parking_lot::Mutex;
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConnection};
use redis::{ConnectionLike, RedisError, RedisResult};

use crate::storage::{StoreError, StoreResult};

/// Idle connections kept for reuse: about one per blocking thread that writes at once;
/// more are opened under load and closed when given back to a full pool.
const MAX_IDLE_CONNECTIONS: usize = 16;

/// How long opening a connection may take before the store reports Redis unavailable.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one command (or script) may take before the store reports Redis unavailable:
/// long enough for a batch of [`crate::storage::MAX_BATCH_CHANGES`] records.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the store's Redis is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisEndpoint {
    /// One server (possibly with replicas), by `redis://` URL.
    Single(String),
    /// A Redis Cluster, by the URLs of some of its nodes.
    Cluster(Vec<String>),
}

/// A client of either kind.
enum Client {
    Single(redis::Client),
    Cluster(Box<ClusterClient>),
}

/// An open connection of either kind.
pub(super) enum Connection {
    Single(redis::Connection),
    Cluster(Box<ClusterConnection>),
}

impl Connection {
    /// Returns the connection as the crate's command interface.
    pub(super) fn as_dyn(&mut self) -> &mut dyn ConnectionLike {
        match self {
            Connection::Single(connection) => connection,
            Connection::Cluster(connection) => connection.as_mut(),
        }
    }
}

/// A pool of synchronous connections to one endpoint.
pub(super) struct ConnectionPool {
    client: Client,
    idle: Mutex<Vec<Connection>>,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl ConnectionPool {
    /// Returns a pool for `endpoint`; opens nothing yet (the URLs are checked).
    pub(super) fn new(endpoint: &RedisEndpoint) -> StoreResult<Self> {
        let client = match endpoint {
            RedisEndpoint::Single(url) => Client::Single(redis::Client::open(url.as_str()).map_err(redis_error)?),
            RedisEndpoint::Cluster(urls) => Client::Cluster(Box::new(
                ClusterClientBuilder::new(urls.iter().map(String::as_str))
                    .connection_timeout(DEFAULT_CONNECT_TIMEOUT)
                    .response_timeout(DEFAULT_RESPONSE_TIMEOUT)
                    .build()
                    .map_err(redis_error)?,
            )),
        };
        Ok(Self {
            client,
            idle: Mutex::new(Vec::new()),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
        })
    }

    fn open(&self) -> RedisResult<Connection> {
        match &self.client {
            Client::Single(client) => {
                let connection = client.get_connection_with_timeout(self.connect_timeout)?;
                connection.set_read_timeout(Some(self.response_timeout))?;
                connection.set_write_timeout(Some(self.response_timeout))?;
                Ok(Connection::Single(connection))
            }
            Client::Cluster(client) => Ok(Connection::Cluster(Box::new(client.get_connection()?))),
        }
    }

    /// Runs `work` on a pooled connection; maps Redis failures to [`StoreError`]s. A
    /// connection whose command failed for a reason other than the server's answer is
    /// closed rather than reused, with the idle ones. Nothing is retried here: a write whose
    /// answer was lost may have been applied, which only its caller can tell.
    pub(super) fn run<T>(&self, work: impl FnOnce(&mut Connection) -> RedisResult<T>) -> StoreResult<T> {
        let pooled = self.idle.lock().pop();
        let mut connection = match pooled {
            Some(connection) => connection,
            None => self.open().map_err(redis_error)?,
        };
        let result = work(&mut connection);
        let reusable = match &result {
            Ok(_) => true,
            Err(error) => !(error.is_io_error() || error.is_unrecoverable_error() || error.is_timeout()),
        };
        if reusable {
            let mut idle = self.idle.lock();
            if idle.len() < MAX_IDLE_CONNECTIONS {
                idle.push(connection);
            }
        } else {
            // The server (or the network) most likely dropped every idle connection too
            // (a restart, a failover): later calls open fresh ones instead of failing once
            // each on a stale one. Closed outside the lock.
            let stale = std::mem::take(&mut *self.idle.lock());
            drop(stale);
        }
        result.map_err(redis_error)
    }
}

/// Maps a Redis failure to the store's error: answers that cannot be decoded are corrupt
/// data; everything else (refused or dropped connections, timeouts, `LOADING`, cluster
/// redirections that failed, script errors) means the store is unavailable.
pub(super) fn redis_error(error: RedisError) -> StoreError {
    match error.kind() {
        redis::ErrorKind::UnexpectedReturnType | redis::ErrorKind::Parse => {
            StoreError::Corrupt(format!("unexpected answer from redis: {error}"))
        }
        _ => StoreError::Io(format!("redis: {error}")),
    }
}
