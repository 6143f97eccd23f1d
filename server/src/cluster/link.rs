//! The connection the cluster's control channel and session counts use for commands: one
//! multiplexed connection to a single Redis, or a Redis Cluster connection that routes each
//! command to the node of its key's slot.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::storage::redis::RedisEndpoint;

/// How long connecting and each command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// A command connection to the cluster's Redis.
#[derive(Clone)]
pub enum RedisLink {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisLink {
    /// Connects to `endpoint`.
    pub async fn connect(endpoint: &RedisEndpoint) -> redis::RedisResult<Self> {
        match endpoint {
            RedisEndpoint::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(COMMAND_TIMEOUT))
                    .set_response_timeout(Some(COMMAND_TIMEOUT));
                Ok(Self::Single(ConnectionManager::new_with_config(client, config).await?))
            }
            RedisEndpoint::Cluster(urls) => {
                let client = redis::cluster::ClusterClientBuilder::new(urls.clone())
                    .connection_timeout(COMMAND_TIMEOUT)
                    .response_timeout(COMMAND_TIMEOUT)
                    .build()?;
                Ok(Self::Cluster(client.get_async_connection().await?))
            }
        }
    }
}

/// Returns the URL the control channel's pub/sub connections use: the server, or a
/// cluster's first seed node (classic pub/sub reaches every node of a Redis Cluster; the
/// node bus uses sharded pub/sub there instead).
pub fn pubsub_url(endpoint: &RedisEndpoint) -> Option<&str> {
    match endpoint {
        RedisEndpoint::Single(url) => Some(url),
        RedisEndpoint::Cluster(urls) => urls.first().map(String::as_str),
    }
}

impl ConnectionLike for RedisLink {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}
