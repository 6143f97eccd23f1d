//! Schema changes: each source's schema, as its channel's `Describe` tells it, is tracked
//! by a hash stored per source (as the capture position `schema:<source>`, so it survives
//! restarts on either store backend). The channels are described at start, every
//! `grpc.describe_interval_secs`, and when the watch stream of a source reconnects (a
//! channel restarted, perhaps as a new release); when a source's schema differs from the one stored, every
//! device connected to this node gets `SyncState{SYNC_STATUS_SCHEMA_CHANGED}` for the
//! source's partition it may hold (its own for `user` sources, `*` for `app` sources), and
//! the device library syncs that partition again from cursor 0. In cluster mode the node
//! that noticed the change tells the others over the control channel
//! ([`ControlMessage::SchemaChanged`]), and each tells its own devices at once (and takes the
//! new schema as known, so that its own next check does not tell them twice).
//!
//! A schema is the source's description with its fields sorted by name (their order in
//! `Describe` does not matter): partitioning, capabilities and each field's name, type and
//! `required`. Sources of `custom` partitioning are tracked, but their devices are not told
//! yet (which keys a device holds is not known outside its session). A device that was
//! offline during a change is not told either: it learns the new schema from the records
//! that follow.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message as _;
use sha2::{Digest as _, Sha256};
use syncline_proto::v1::{ServerFrame, SourceDescription, SyncState, SyncStatus, server_frame};

use super::capture_counters::CaptureCounters;
use super::grpc::ChannelConnection;
use crate::cluster::{ControlMessage, ControlPublisher};
use crate::config::{Capture, Partitioning, SourceSettings};
use crate::gateway::DeviceConnections;
use crate::storage::{CapturePosition, Store};

/// Prefix of the capture position that stores a source's schema hash.
pub const SCHEMA_POSITION_PREFIX: &str = "schema:";

/// How often watched sources are looked at for a reconnected stream (in memory; a
/// reconnect then costs one `Describe`).
const RECONNECT_LOOK: std::time::Duration = std::time::Duration::from_secs(1);

/// Tracks the schemas of the sources served by channels and tells devices when one changes.
pub struct SchemaWatch {
    store: Arc<dyn Store>,
    sources: BTreeMap<String, SourceSettings>,
    connections: Arc<DeviceConnections>,
    /// Each source's schema hash as last seen by this node.
    known: parking_lot::Mutex<BTreeMap<String, Vec<u8>>>,
    /// Change capture's health: a watch stream that connects again triggers a check.
    capture: Option<Arc<CaptureCounters>>,
    /// The other nodes, told of the changes this node notices (cluster mode).
    peers: Option<Arc<ControlPublisher>>,
}

impl SchemaWatch {
    /// Returns a watch of the `sources` that have a channel.
    pub fn new(
        store: Arc<dyn Store>,
        sources: &BTreeMap<String, SourceSettings>,
        connections: Arc<DeviceConnections>,
    ) -> Self {
        let sources = sources.iter().filter(|(_, source)| source.channel.is_some());
        let sources = sources.map(|(name, source)| (name.clone(), source.clone())).collect();
        Self { store, sources, connections, known: parking_lot::Mutex::default(), capture: None, peers: None }
    }

    /// Tells the other nodes of a cluster (through `peers`) about the changes this node
    /// notices.
    pub fn with_peers(mut self, peers: Option<Arc<ControlPublisher>>) -> Self {
        self.peers = peers;
        self
    }

    /// Checks again when a watched source's stream connects again, as `capture` reports it.
    pub fn with_capture(mut self, capture: Arc<CaptureCounters>) -> Self {
        self.capture = Some(capture);
        self
    }

    /// Returns how many times each watched source's stream has opened so far.
    fn stream_opens(&self) -> BTreeMap<String, u64> {
        let Some(capture) = &self.capture else { return BTreeMap::new() };
        let watched = self.sources.iter().filter(|(_, source)| source.capture == Capture::Watch);
        watched.map(|(name, _)| (name.clone(), capture.health(name).connects)).collect()
    }

    /// Describes every channel once; returns the sources whose schema changed since this
    /// node or the store last saw it, after telling their devices. A channel that cannot be
    /// reached is skipped (logged) until the next check.
    pub async fn check(&self) -> Vec<String> {
        let mut endpoints: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, source) in &self.sources {
            if let Some(endpoint) = &source.channel {
                endpoints.entry(endpoint.as_str()).or_default().push(name.as_str());
            }
        }
        let mut changed = Vec::new();
        for (endpoint, names) in endpoints {
            let described = match ChannelConnection::lazy(endpoint) {
                Ok(channel) => channel.describe().await,
                Err(error) => Err(error),
            };
            let described = match described {
                Ok(described) => described,
                Err(error) => {
                    tracing::warn!(%error, endpoint, "cannot describe a channel; its schemas are checked later");
                    continue;
                }
            };
            for description in described.sources.iter().filter(|description| names.contains(&description.name.as_str()))
            {
                match self.record(description).await {
                    Ok(true) => changed.push(description.name.clone()),
                    Ok(false) => {}
                    Err(error) => tracing::warn!(%error, source = %description.name, "cannot store a source's schema"),
                }
            }
        }
        for source in &changed {
            self.tell_devices(source).await;
            let schema_hash = self.known.lock().get(source).cloned().unwrap_or_default();
            if let Some(peers) = &self.peers {
                peers.publish(&ControlMessage::SchemaChanged { source: source.clone(), schema_hash }).await;
            }
        }
        changed
    }

    /// Acts on another node's notice that `source`'s schema is now the one hashed
    /// `schema_hash`: tells this node's devices, unless this node already knows that
    /// schema (it noticed the change itself). Returns whether they were told.
    pub async fn changed_elsewhere(&self, source: &str, schema_hash: Vec<u8>) -> bool {
        if !self.sources.contains_key(source) {
            return false;
        }
        let before = self.known.lock().insert(source.to_owned(), schema_hash.clone());
        if before.as_deref() == Some(schema_hash.as_slice()) {
            return false;
        }
        tracing::info!(source, "another node saw the source's schema change; its devices here sync it again");
        self.tell_devices(source).await;
        true
    }

    /// Stores the schema of `description`'s source; returns true when it differs from the
    /// one known before (none known: not a change).
    async fn record(&self, description: &SourceDescription) -> Result<bool, crate::storage::StoreError> {
        let hash = schema_hash(description);
        let name = description.name.clone();
        let remembered = self.known.lock().get(&name).cloned();
        let previous = match remembered {
            Some(previous) => Some(previous),
            None => {
                let (store, position) = (self.store.clone(), format!("{SCHEMA_POSITION_PREFIX}{name}"));
                blocking(move || store.capture_position(&position)).await?
            }
        };
        if previous.as_deref() == Some(hash.as_slice()) {
            self.known.lock().insert(name, hash);
            return Ok(false);
        }
        let (store, token) = (self.store.clone(), hash.clone());
        let position = CapturePosition { name: format!("{SCHEMA_POSITION_PREFIX}{name}"), token, fence: None };
        blocking(move || store.apply_capture(Vec::new(), position)).await?;
        self.known.lock().insert(name.clone(), hash);
        if previous.is_some() {
            tracing::info!(source = %name, "the source's schema changed; its devices sync it again");
        }
        Ok(previous.is_some())
    }

    /// Sends every device on this node the schema-changed state of its partition of `source`.
    async fn tell_devices(&self, source: &str) {
        let Some(settings) = self.sources.get(source) else { return };
        let key_of = |user_id: &str| match settings.partitioning {
            Partitioning::User => Some(user_id.to_owned()),
            Partitioning::App => Some(syncline_proto::APP_PARTITION_KEY.to_owned()),
            Partitioning::Custom => None,
        };
        for (client_id, user_id) in self.connections.devices() {
            let Some(key) = key_of(&user_id) else { continue };
            let state = SyncState {
                source: source.to_owned(),
                key,
                status: SyncStatus::SchemaChanged as i32,
                ..SyncState::default()
            };
            let frame = ServerFrame { msg: Some(server_frame::Msg::SyncState(state)) };
            crate::reply::DeviceReplies::to_device(&*self.connections, &client_id, frame).await;
        }
    }
}

impl SchemaWatch {
    /// Checks the schemas at once and then every `interval`, on `tracker`, until
    /// `shutdown`.
    pub fn spawn(
        self: Arc<Self>,
        interval: std::time::Duration,
        tracker: &tokio_util::task::TaskTracker,
        shutdown: &tokio_util::sync::CancellationToken,
    ) {
        if self.sources.is_empty() {
            return;
        }
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut look = tokio::time::interval(RECONNECT_LOOK);
            let mut opens = self.stream_opens();
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = ticker.tick() => {
                        self.check().await;
                    }
                    _ = look.tick() => {
                        let now = self.stream_opens();
                        let reconnected = now != opens;
                        opens = now;
                        if reconnected {
                            self.check().await;
                        }
                    }
                }
            }
        });
    }
}

/// Returns the hash of a source's schema (see the module docs).
pub fn schema_hash(description: &SourceDescription) -> Vec<u8> {
    let mut canonical = description.clone();
    canonical.fields.sort_by(|a, b| a.name.cmp(&b.name));
    canonical.capabilities.sort();
    Sha256::digest(canonical.encode_to_vec()).to_vec()
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, crate::storage::StoreError> + Send + 'static,
) -> Result<T, crate::storage::StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|error| Err(crate::storage::StoreError::Io(format!("schema task failed: {error}"))))
}

#[cfg(test)]
mod tests {
    use syncline_proto::v1::FieldSchema;

    use super::*;

    fn field(name: &str, ty: &str) -> FieldSchema {
        FieldSchema { name: name.into(), r#type: ty.into(), required: false }
    }

    #[test]
    fn the_hash_ignores_field_order_and_sees_every_change() {
        let description = SourceDescription {
            name: "Photo".into(),
            partitioning: "user".into(),
            capabilities: vec!["create".into(), "update".into()],
            fields: vec![field("title", "string"), field("photo", "blob")],
        };
        let reordered = SourceDescription {
            fields: vec![field("photo", "blob"), field("title", "string")],
            capabilities: vec!["update".into(), "create".into()],
            ..description.clone()
        };
        assert_eq!(schema_hash(&description), schema_hash(&reordered));
        let retyped =
            SourceDescription { fields: vec![field("title", "bytes"), field("photo", "blob")], ..description.clone() };
        assert_ne!(schema_hash(&description), schema_hash(&retyped));
        let mut added = description.clone();
        added.fields.push(field("taken_at", "int"));
        assert_ne!(schema_hash(&description), schema_hash(&added));
    }
}
