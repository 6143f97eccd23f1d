//! The node bus's subscriber on a Redis Cluster: sharded pub/sub (`SSUBSCRIBE`).
//!
//! A sharded channel lives on the primary that owns its slot, and `SSUBSCRIBE` must name
//! channels of one slot only. The subscriber keeps one Redis Cluster connection in RESP3
//! (one connection per primary, from the cluster's own slot map, refreshed on `MOVED` and
//! when a primary's connection is lost), subscribes each followed key's channel on its own
//! (many at once) and receives messages as RESP3 pushes. What this adds to the `redis`
//! crate, and why:
//!
//! - Confirmation: each `SSUBSCRIBE` that succeeds confirms its key to the hub
//!   ([`Hub::bus_followed`](crate::Hub::bus_followed)), as on one server.
//! - A primary's connection lost (the crate's `Disconnection` push): the crate reconnects,
//!   but its own resubscription names all of a node's shard channels in one `SSUBSCRIBE`,
//!   which Redis refuses when they span slots (`CROSSSLOT`). So every followed key is
//!   subscribed again here, one channel per command, and each confirmation makes the key's
//!   live subscribers catch up from the log: what was published meanwhile is read, never
//!   lost, and never delivered twice (the hub skips what a subscriber already has).
//! - A slot moved to another primary: the old primary ends the subscription on its own
//!   (an unrequested `sunsubscribe` push); the key is subscribed again, which the crate
//!   routes to the new owner (following `MOVED`), and confirmed as above.
//! - A silent loss: every primary is pinged each `ping_interval`; when one does not answer,
//!   every key is subscribed again.
//!
//! Subscriptions that fail (a primary down, a slot being moved) are tried again every
//! [`RESUBSCRIBE_RETRY`] until they succeed or their key is no longer followed.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{StreamExt as _, stream};
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::channel_name;
use super::redis::{COMMAND_TIMEOUT, ConnectionEnd, Subscriber, connect_until_up, within_timeout};
use crate::bus::BusKey;

/// Channels subscribed or unsubscribed at once (one command each: channels of different
/// slots cannot share one). Bounds the commands in flight, not the channels followed.
const SUBSCRIBE_CONCURRENCY: usize = 64;

/// How long until subscriptions that failed, or must be made again, are sent: long enough
/// for the cluster connection to reconnect a lost primary first.
const RESUBSCRIBE_RETRY: Duration = Duration::from_millis(200);

impl<K: BusKey> Subscriber<K> {
    /// Keeps a Redis Cluster connection (through `seeds`) following the hub's keys with
    /// sharded pub/sub until shutdown, connecting again with backoff when it ends.
    pub(super) async fn run_sharded(self, seeds: Vec<String>, shutdown: CancellationToken) {
        // Channel → key, for the channels followed on the current connection.
        let mut subscribed: HashMap<Vec<u8>, K> = HashMap::new();
        let mut connected_before = false;
        loop {
            let (pushes_to, pushes) = mpsc::unbounded_channel();
            let connect = || {
                let client = redis::cluster::ClusterClientBuilder::new(seeds.clone())
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .push_sender(pushes_to.clone())
                    .connection_timeout(COMMAND_TIMEOUT)
                    .response_timeout(COMMAND_TIMEOUT)
                    .build();
                async move { client?.get_async_connection().await }
            };
            let Some(connection) = connect_until_up(connect, &shutdown).await else { return };
            drop(pushes_to);
            if connected_before {
                self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                tracing::info!(keys = subscribed.len(), "node bus cluster connection made again, following every key");
            }
            connected_before = true;
            self.follows.refollow(subscribed.drain().map(|(_, key)| key));
            match self.serve_sharded(connection, pushes, &mut subscribed, &shutdown).await {
                ConnectionEnd::Shutdown => return,
                ConnectionEnd::Lost => {}
            }
        }
    }

    /// Serves one cluster connection: delivers messages, applies interest changes,
    /// subscribes again what was lost or moved, pings the primaries.
    async fn serve_sharded(
        &self,
        connection: ClusterConnection,
        mut pushes: mpsc::UnboundedReceiver<PushInfo>,
        subscribed: &mut HashMap<Vec<u8>, K>,
        shutdown: &CancellationToken,
    ) -> ConnectionEnd {
        let mut ping = tokio::time::interval(self.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Keys to subscribe again after `RESUBSCRIBE_RETRY`.
        let mut again: Vec<K> = Vec::new();
        loop {
            let waiting = !again.is_empty();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return ConnectionEnd::Shutdown,
                push = pushes.recv() => match push {
                    Some(push) => self.on_push(push, subscribed, &mut again),
                    None => {
                        tracing::warn!("node bus cluster connection ended, connecting again");
                        return ConnectionEnd::Lost;
                    }
                },
                () = self.follows.changed.notified() => {
                    let changes = self.follows.take().into_iter().collect();
                    self.reconcile_sharded(&connection, changes, subscribed, &mut again).await;
                }
                () = tokio::time::sleep(RESUBSCRIBE_RETRY), if waiting => {
                    // Only the keys still followed.
                    let changes: Vec<(K, bool)> = std::mem::take(&mut again)
                        .into_iter()
                        .filter(|key| subscribed.contains_key(&channel_name(&self.prefix, key)))
                        .map(|key| (key, true))
                        .collect();
                    self.stats.shard_resubscribes.fetch_add(changes.len() as u64, Ordering::Relaxed);
                    self.reconcile_sharded(&connection, changes, subscribed, &mut again).await;
                }
                _ = ping.tick() => {
                    let mut pinging = connection.clone();
                    let pinged = tokio::time::timeout(COMMAND_TIMEOUT, redis::cmd("PING").query_async::<Value>(&mut pinging)).await;
                    if matches!(pinged, Ok(Ok(_))) {
                        self.stats.pings.fetch_add(1, Ordering::Relaxed);
                    } else {
                        tracing::warn!("a primary does not answer the node bus's pings, subscribing every key again");
                        again.extend(subscribed.values().cloned());
                    }
                }
            }
        }
    }

    /// Acts on one push of the cluster connection.
    fn on_push(&self, push: PushInfo, subscribed: &HashMap<Vec<u8>, K>, again: &mut Vec<K>) {
        match push.kind {
            PushKind::SMessage => {
                if let Some(message) = redis::Msg::from_push_info(push) {
                    self.deliver(&message, subscribed);
                }
            }
            PushKind::Disconnection => {
                // Which primary is not said: every key is subscribed again (those whose
                // primary is fine are confirmed at once, at the cost of one log read).
                self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    keys = subscribed.len(),
                    "node bus lost a primary's connection, subscribing every key again"
                );
                again.extend(subscribed.values().cloned());
            }
            PushKind::SUnsubscribe => {
                // Unrequested when the channel is still followed: its slot moved away.
                let channel = match push.data.first() {
                    Some(Value::BulkString(channel)) => channel.as_slice(),
                    _ => return,
                };
                if let Some(key) = subscribed.get(channel) {
                    tracing::info!("a node bus channel's slot moved, subscribing it on its new primary");
                    again.push(key.clone());
                }
            }
            _ => {}
        }
    }

    /// Subscribes the keys followed in `changes` (each confirmed to the hub once
    /// subscribed), unsubscribes those unfollowed; keys that could not be subscribed go to
    /// `again`.
    async fn reconcile_sharded(
        &self,
        connection: &ClusterConnection,
        changes: Vec<(K, bool)>,
        subscribed: &mut HashMap<Vec<u8>, K>,
        again: &mut Vec<K>,
    ) {
        let mut subscribe = Vec::new();
        let mut unsubscribe = Vec::new();
        for (key, follow) in changes {
            let channel = channel_name(&self.prefix, &key);
            if follow {
                subscribed.insert(channel.clone(), key.clone());
                subscribe.push((channel, key));
            } else if subscribed.remove(&channel).is_some() {
                unsubscribe.push(channel);
            }
        }
        let unsubscribed: Vec<_> = stream::iter(unsubscribe)
            .map(|channel| {
                let mut connection = connection.clone();
                async move { within_timeout(connection.sunsubscribe(channel)).await }
            })
            .buffer_unordered(SUBSCRIBE_CONCURRENCY)
            .collect()
            .await;
        if let Some(Err(error)) = unsubscribed.iter().find(|outcome| outcome.is_err()) {
            // Its messages are skipped as unfollowed until the connection ends.
            tracing::warn!(%error, "node bus cannot unsubscribe a sharded channel");
        }
        let outcomes: Vec<_> = stream::iter(subscribe)
            .map(|(channel, key)| {
                let mut connection = connection.clone();
                async move { (key, within_timeout(connection.ssubscribe(channel)).await) }
            })
            .buffer_unordered(SUBSCRIBE_CONCURRENCY)
            .collect()
            .await;
        let mut confirmed = 0u64;
        let mut failed = 0usize;
        for (key, outcome) in outcomes {
            match outcome {
                // Confirmed: every message published from now on reaches this connection.
                Ok(()) => {
                    self.hub.bus_followed(&key);
                    confirmed += 1;
                }
                Err(error) => {
                    if failed == 0 {
                        tracing::warn!(%error, "node bus cannot subscribe a sharded channel, trying again");
                    }
                    failed += 1;
                    again.push(key);
                }
            }
        }
        self.stats.follows_confirmed.fetch_add(confirmed, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::bus::DEFAULT_CHANNEL_PREFIX;
    use crate::bus::redis::{BusStats, Follows};
    use crate::hub::Hub;

    fn subscriber() -> Subscriber<u64> {
        Subscriber {
            hub: Hub::new(),
            follows: Arc::new(Follows::new()),
            prefix: DEFAULT_CHANNEL_PREFIX.as_bytes().to_vec(),
            node_id: 1,
            ping_interval: Duration::from_secs(5),
            stats: Arc::new(BusStats::default()),
        }
    }

    fn push(kind: PushKind, channel: &[u8]) -> PushInfo {
        PushInfo { kind, data: vec![Value::BulkString(channel.to_vec()), Value::Int(0)] }
    }

    #[test]
    fn a_moved_slot_or_a_lost_primary_subscribes_the_followed_keys_again() {
        let subscriber = subscriber();
        let followed: HashMap<Vec<u8>, u64> =
            [7u64, 8].into_iter().map(|key| (channel_name(&subscriber.prefix, &key), key)).collect();
        let mut again = Vec::new();
        // The primary ends the subscription of a followed channel on its own: its slot moved.
        subscriber.on_push(
            push(PushKind::SUnsubscribe, &channel_name(&subscriber.prefix, &7u64)),
            &followed,
            &mut again,
        );
        assert_eq!(again, [7]);
        // One this node no longer follows (its own SUNSUBSCRIBE's confirmation) is left alone.
        subscriber.on_push(
            push(PushKind::SUnsubscribe, &channel_name(&subscriber.prefix, &9u64)),
            &followed,
            &mut again,
        );
        assert_eq!(again, [7]);
        // A confirmation of a subscription changes nothing here (confirmed when it returns).
        subscriber.on_push(push(PushKind::SSubscribe, &channel_name(&subscriber.prefix, &8u64)), &followed, &mut again);
        assert_eq!(again, [7]);
        // A lost primary connection: which primary is not said, so every key.
        again.clear();
        subscriber.on_push(PushInfo { kind: PushKind::Disconnection, data: Vec::new() }, &followed, &mut again);
        again.sort_unstable();
        assert_eq!(again, [7, 8]);
        assert_eq!(subscriber.stats.reconnects.load(Ordering::Relaxed), 1);
    }
}
