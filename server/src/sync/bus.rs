//! Partitions on the node bus: their channel names, and the Redis bus the composition root
//! starts in cluster mode (single-node runs publish to the hub itself, the in-process bus).

use std::io::Write as _;
use std::sync::Arc;

use syncline_push::Hub;
use syncline_push::bus::{BusKey, RedisBus, RedisBusConfig, RedisBusError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::storage::PartitionName;

/// A partition's name on the bus is `<source length>:<source>:<key>`: unambiguous whatever
/// the source and key contain, and the same on every node. The bus puts it in a hash tag, so
/// on Redis Cluster a partition's channel maps to one slot (a key containing `}` ends the
/// tag early, which still maps each partition to one slot).
impl BusKey for PartitionName {
    fn write_bus_name(&self, out: &mut Vec<u8>) {
        // Writing to a Vec cannot fail.
        let _ = write!(out, "{}:", self.source.len());
        out.extend_from_slice(self.source.as_bytes());
        out.push(b':');
        out.extend_from_slice(self.key.as_bytes());
    }
}

/// Connects the Redis node bus at `url` for `hub` (channels under the default prefix, a
/// random node id) and starts its tasks on `tracker` until `shutdown`. Call it before
/// devices connect, and give the bus to [`LivePublisher::through`](super::LivePublisher::through).
pub async fn connect_redis_bus(
    url: &str,
    hub: Arc<Hub<PartitionName>>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> Result<Arc<RedisBus<PartitionName>>, RedisBusError> {
    RedisBus::connect(RedisBusConfig::new(url), hub, shutdown, tracker).await
}

#[cfg(test)]
mod tests {
    use syncline_push::bus::channel_name;

    use super::*;

    #[test]
    fn partition_channels_are_unambiguous_and_hash_tagged() {
        let channel = |source: &str, key: &str| channel_name(b"p:", &PartitionName::new(source, key));
        assert_eq!(channel("Account", "ann"), b"p:{7:Account:ann}".to_vec());
        assert_ne!(channel("a:b", "c"), channel("a", "b:c"));
        assert_ne!(channel("a", "*"), channel("a*", ""));
    }
}
