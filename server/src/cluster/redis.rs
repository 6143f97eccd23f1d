//! The control channel on Redis: one pub/sub channel every node publishes to and follows.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ControlMessage;
use super::link::RedisLink;
use crate::channel::schema::SchemaWatch;
use crate::devices::{CommandDelivery as _, DeviceManagement};
use crate::gateway::DeviceConnections;
use crate::reply::DeviceReplies as _;
use crate::storage::redis::RedisEndpoint;

/// How long a publish, a subscribe or a ping may take before the connection counts as lost.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the following connection is pinged (a half-open connection would otherwise
/// lose messages unnoticed).
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// First and longest pause before reconnecting the following connection.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Publishes control messages for the other nodes.
pub struct ControlPublisher {
    node_id: String,
    channel: String,
    connection: RedisLink,
}

impl ControlPublisher {
    /// Publishes through `connection`; messages go to `channel` signed as `node_id`.
    pub fn new(connection: RedisLink, channel: &str, node_id: &str) -> Self {
        Self { node_id: node_id.to_owned(), channel: channel.to_owned(), connection }
    }

    /// Connects to the Redis at `url` (tests).
    pub async fn connect(url: &str, channel: &str, node_id: &str) -> redis::RedisResult<Self> {
        let connection = RedisLink::connect(&RedisEndpoint::Single(url.to_owned())).await?;
        Ok(Self::new(connection, channel, node_id))
    }

    /// Publishes `message` to every other node; a failure is logged (see the module docs of
    /// [`crate::cluster`]: nothing is lost for good).
    pub async fn publish(&self, message: &ControlMessage) {
        let bytes = message.encode(&self.node_id);
        let mut connection = self.connection.clone();
        let published: redis::RedisResult<i64> =
            redis::cmd("PUBLISH").arg(&self.channel).arg(bytes).query_async(&mut connection).await;
        if let Err(error) = published {
            tracing::warn!(%error, ?message, "cannot publish a control message to the other nodes");
        }
    }
}

/// What the receiving side acts on: this node's connections, device management, and the
/// schema watch that tells devices of schema changes.
#[derive(Clone)]
pub struct ControlTargets {
    pub connections: Arc<DeviceConnections>,
    pub devices: Arc<DeviceManagement>,
    pub schemas: Option<Arc<SchemaWatch>>,
}

/// Follows the control channel `channel` on the Redis at `url` until `shutdown`, acting on
/// the messages of other nodes (those signed `node_id` are this node's own). Reconnects
/// with backoff when the connection is lost.
pub fn follow(
    url: &str,
    channel: &str,
    node_id: &str,
    targets: ControlTargets,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> redis::RedisResult<()> {
    let client = redis::Client::open(url)?;
    let (channel, node_id) = (channel.to_owned(), node_id.to_owned());
    tracker.spawn(async move {
        let mut backoff = RECONNECT_MIN;
        loop {
            let connected = tokio::select! {
                () = shutdown.cancelled() => return,
                connected = tokio::time::timeout(COMMAND_TIMEOUT, client.get_async_pubsub()) => connected,
            };
            match connected {
                Ok(Ok(pubsub)) => {
                    backoff = RECONNECT_MIN;
                    if serve(pubsub, &channel, &node_id, &targets, &shutdown).await {
                        return;
                    }
                }
                Ok(Err(error)) => tracing::warn!(%error, ?backoff, "the control channel cannot connect"),
                Err(_) => tracing::warn!(?backoff, "the control channel's connection timed out"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(RECONNECT_MAX);
        }
    });
    Ok(())
}

/// Serves one pub/sub connection; returns true at shutdown, false when the connection is lost.
async fn serve(
    pubsub: redis::aio::PubSub,
    channel: &str,
    node_id: &str,
    targets: &ControlTargets,
    shutdown: &CancellationToken,
) -> bool {
    let (mut sink, mut stream) = pubsub.split();
    if !matches!(tokio::time::timeout(COMMAND_TIMEOUT, sink.subscribe(channel)).await, Ok(Ok(()))) {
        tracing::warn!(channel, "the control channel cannot subscribe, reconnecting");
        return false;
    }
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return true,
            message = stream.next() => match message {
                Some(message) => match ControlMessage::decode(message.get_payload_bytes()) {
                    Ok((origin, _)) if origin == node_id => {}
                    Ok((_, message)) => apply(message, targets).await,
                    Err(error) => tracing::warn!(%error, "a control message is malformed; ignored"),
                },
                None => {
                    tracing::warn!("the control channel's connection was lost, reconnecting");
                    return false;
                }
            },
            _ = ping.tick() => {
                let pinged = tokio::time::timeout(COMMAND_TIMEOUT, sink.ping::<redis::Value>()).await;
                if !matches!(pinged, Ok(Ok(_))) {
                    tracing::warn!("the control channel does not answer pings, reconnecting");
                    return false;
                }
            }
        }
    }
}

/// Acts on another node's message, on this node's connections.
pub async fn apply(message: ControlMessage, targets: &ControlTargets) {
    match message {
        ControlMessage::CloseUser { user_id, class, message } => {
            let closed = targets.connections.close_user(&user_id, class, &message).await;
            if closed > 0 {
                tracing::info!(user = %user_id, closed, "connections closed for another node");
            }
        }
        ControlMessage::ToDevice { client_id, frame } => targets.connections.to_device(&client_id, frame).await,
        ControlMessage::DeliverCommands { client_id } => {
            if targets.connections.connections_of(&client_id) == 0 {
                return;
            }
            let commands = match targets.devices.unacknowledged(&client_id).await {
                Ok(commands) => commands,
                Err(error) => {
                    tracing::warn!(client_id, %error, "cannot read a device's commands for another node");
                    return;
                }
            };
            let mut delivered = Vec::new();
            for (command_id, frame) in commands {
                if targets.connections.deliver(&client_id, frame).await > 0 {
                    delivered.push(command_id);
                }
            }
            if let Err(error) = targets.devices.mark_delivered(&client_id, &delivered).await {
                tracing::warn!(client_id, %error, "cannot record commands delivered for another node");
            }
        }
        ControlMessage::SchemaChanged { source, schema_hash } => {
            if let Some(schemas) = &targets.schemas {
                schemas.changed_elsewhere(&source, schema_hash).await;
            }
        }
    }
}
