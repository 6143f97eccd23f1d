//! What every device session shares ([`GatewayServices`], with the limits applied to devices)
//! and the per-user connection count.

use std::collections::BTreeMap;
use std::sync::Arc;

use syncline_proto::v1;
use syncline_push::Hub;
use tokio_util::task::TaskTracker;

use crate::auth::{Authenticator, Identity};
use crate::channel::ChannelRegistry;
use crate::config::{DeviceSettings, SourceSettings};
use crate::model::{self, AccessError};
use crate::storage::{PartitionName, Store};
use crate::sync::cursors;

/// What every device session shares: the store, the hub, auth, the sources and limits, and
/// the domain services the gateway hands commands to.
pub struct GatewayServices {
    pub store: Arc<dyn Store>,
    pub hub: Arc<Hub<PartitionName>>,
    pub auth: Authenticator,
    pub sources: BTreeMap<String, SourceSettings>,
    /// The limits applied to devices, as configured (`[device]`).
    pub limits: DeviceSettings,
    /// The catch-up page reads this node runs at once, for all its devices together
    /// (`device.catch_up_reads`).
    pub catch_up_reads: Arc<tokio::sync::Semaphore>,
    pub cursors: Arc<cursors::CursorRecorder>,
    /// Asks change capture to poll or load a partition now (a device subscribed).
    pub capture_requests: crate::channel::wiring::CaptureRequests,
    /// Dispatches device mutations to channels.
    pub mutations: Arc<crate::mutations::MutationDispatcher>,
    /// The channel of each source that has one (searches go to it).
    pub channels: Arc<ChannelRegistry>,
    /// The open connections of each device on this node.
    pub connections: Arc<super::DeviceConnections>,
    /// Acts on devices and users on this node and, in cluster mode, on the others (mutation
    /// outcomes, commands and closes reach devices through it).
    pub relay: Arc<crate::cluster::DeviceRelay>,
    /// Work sessions start off their own loop (searches).
    pub tracker: TaskTracker,
    /// Open sessions per user, for the per-user connection cap.
    pub user_sessions: UserSessions,
    /// Routes device RPC calls to backend services.
    pub rpc: Arc<crate::rpc::RpcRouter>,
    /// Device management: operator commands and last-seen times.
    pub devices: Arc<crate::devices::DeviceManagement>,
    /// Device handshakes by result, for the metrics.
    pub handshakes: crate::metrics::counters::HandshakeCounters,
    /// Blob storage (uploads, downloads, the references of mutations).
    pub blobs: Arc<crate::blobs::BlobService>,
    /// Bulk sync files: BulkRequest jobs, downloads.
    pub bulk: Arc<crate::bulk::BulkSnapshots>,
}

/// Counts each user's open sessions against a cap: on this node, and in cluster mode on the
/// others too ([`crate::cluster::ClusterSessions`]).
#[derive(Default)]
pub struct UserSessions {
    counts: Arc<dashmap::DashMap<String, usize>>,
    cluster: Option<Arc<crate::cluster::ClusterSessions>>,
}

/// One counted session of a user; released when dropped.
pub struct UserSlot {
    counts: Arc<dashmap::DashMap<String, usize>>,
    cluster: Option<Arc<crate::cluster::ClusterSessions>>,
    user_id: String,
}

impl UserSessions {
    /// Returns the counts of a cluster node: its sessions count with the other nodes'.
    pub fn clustered(cluster: Arc<crate::cluster::ClusterSessions>) -> Self {
        Self { counts: Arc::default(), cluster: Some(cluster) }
    }

    /// Counts a session of `user_id` unless the user already has `max` (0: no limit) on this
    /// node and, in cluster mode, the other live nodes together; returns the count it has
    /// otherwise.
    pub async fn acquire(&self, user_id: &str, max: usize) -> Result<UserSlot, usize> {
        let elsewhere = match &self.cluster {
            Some(cluster) if max > 0 => cluster.elsewhere(user_id).await,
            _ => 0,
        };
        let mut count = self.counts.entry(user_id.to_owned()).or_insert(0);
        if max > 0 && *count + elsewhere >= max {
            return Err(*count + elsewhere);
        }
        *count += 1;
        drop(count);
        if let Some(cluster) = &self.cluster {
            cluster.opened(user_id);
        }
        Ok(UserSlot { counts: self.counts.clone(), cluster: self.cluster.clone(), user_id: user_id.to_owned() })
    }

    /// Returns the sessions `user_id` has open.
    #[cfg(any(test, feature = "test-util"))]
    pub fn count(&self, user_id: &str) -> usize {
        self.counts.get(user_id).map_or(0, |count| *count)
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        if let Some(mut count) = self.counts.get_mut(&self.user_id) {
            *count = count.saturating_sub(1);
        }
        self.counts.remove_if(&self.user_id, |_, count| *count == 0);
        if let Some(cluster) = &self.cluster {
            cluster.closed(&self.user_id);
        }
    }
}

impl GatewayServices {
    /// Resolves a device's request for a partition, checking access (see [`model`]).
    pub fn resolve_partition(
        &self,
        identity: &Identity,
        source: &str,
        key: &str,
    ) -> Result<PartitionName, AccessError> {
        model::resolve_partition(&self.sources, identity, source, key)
    }

    /// Returns the sources a user may sync, for Welcome.
    pub fn source_infos(&self, identity: &Identity) -> Vec<v1::SourceInfo> {
        model::source_infos(&self.sources, identity)
    }
}
