//! Partitions on the node bus: their channel names, and the Redis bus the composition root
//! starts in cluster mode (single-node runs publish to the hub itself, the in-process bus).

use std::sync::Arc;

use syncline_push::Hub;
use syncline_push::bus::{BusKey, RedisBus, RedisBusConfig, RedisBusError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::storage::PartitionName;
use crate::storage::redis::{RedisEndpoint, partition_hash_tag};

/// A partition's name on the bus is its keys' hash tag in the Redis store
/// (`p:<hex source>:<hex key>`): unambiguous whatever the source and key contain, the same on
/// every node, and, since the bus puts it in braces, on a Redis Cluster the partition's
/// channel maps to the slot of its keys (sharded pub/sub publishes on the primary that
/// commits the partition).
impl BusKey for PartitionName {
    fn write_bus_name(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(partition_hash_tag(self).as_bytes());
    }
}

/// Connects the Redis node bus on `endpoint` for `hub` (channels under the default prefix,
/// a random node id; sharded pub/sub on a Redis Cluster) and starts its tasks on `tracker`
/// until `shutdown`. Call it before devices connect, and give the bus to
/// [`LivePublisher::through`](super::LivePublisher::through).
pub async fn connect_redis_bus(
    endpoint: &RedisEndpoint,
    hub: Arc<Hub<PartitionName>>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> Result<Arc<RedisBus<PartitionName>>, RedisBusError> {
    let config = match endpoint {
        RedisEndpoint::Single(url) => RedisBusConfig::new(url.as_str()),
        RedisEndpoint::Cluster(seeds) => RedisBusConfig::cluster(seeds.clone()),
    };
    RedisBus::connect(config, hub, shutdown, tracker).await
}

#[cfg(test)]
mod tests {
    use syncline_push::bus::channel_name;

    use super::*;

    #[test]
    fn partition_channels_are_unambiguous_and_hash_tagged() {
        let channel = |source: &str, key: &str| channel_name(b"p:", &PartitionName::new(source, key));
        assert_eq!(channel("Account", "ann"), b"p:{p:4163636f756e74:616e6e}".to_vec());
        assert_ne!(channel("a:b", "c"), channel("a", "b:c"));
        assert_ne!(channel("a", "*"), channel("a*", ""));
    }
}
