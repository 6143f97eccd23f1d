//! Which partitions devices follow anywhere in the cluster, for change capture.
//!
//! One node at a time follows a source's feed or polls it (under its capture lease), but
//! devices subscribe on every node. Each node names the partitions its devices follow every
//! [`REFRESH_INTERVAL`] in one sorted set (`syncline:{a}:followed`, score = when last named)
//! and reads back those any node named within [`FORGET_AFTER`]: a poller polls those, and a
//! partition first followed on another node is requested from this node's capture (loaded
//! once from a watched channel, polled now), which acts on it when it holds the lease. A
//! request made while another node holds it reaches that node through the same set within
//! one refresh.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use syncline_push::Hub;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::link::RedisLink;
use crate::channel::capture::SubscribedPartitions;
use crate::channel::wiring::CaptureRequests;
use crate::storage::PartitionName;

/// How often a node names its followed partitions and reads the others'.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// A partition no node has named for this long is no longer followed (its nodes died, or
/// their devices left).
pub const FORGET_AFTER: Duration = Duration::from_secs(5);
/// How long one refresh may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// The sorted set of followed partitions (in the slot of the capture positions).
const FOLLOWED_KEY: &str = "syncline:{a}:followed";

/// The partitions devices follow on any node of the cluster.
pub struct ClusterSubscriptions {
    hub: Arc<Hub<PartitionName>>,
    /// Those named by any node at the last refresh.
    followed: Mutex<BTreeSet<PartitionName>>,
}

impl SubscribedPartitions for ClusterSubscriptions {
    fn subscribed(&self, source: &str) -> Vec<PartitionName> {
        let mut partitions: BTreeSet<PartitionName> = self.hub.subscribed(source).into_iter().collect();
        partitions.extend(self.followed.lock().iter().filter(|partition| partition.source == source).cloned());
        partitions.into_iter().collect()
    }
}

impl ClusterSubscriptions {
    /// Shares this node's followed partitions (the hub's) through `link` and starts
    /// refreshing on `tracker` until `shutdown`; partitions first followed elsewhere are
    /// asked of this node's capture through `requests`.
    pub fn start(
        link: RedisLink,
        hub: Arc<Hub<PartitionName>>,
        requests: CaptureRequests,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let subscriptions = Arc::new(Self { hub, followed: Mutex::new(BTreeSet::new()) });
        let refreshing = subscriptions.clone();
        tracker.spawn(async move {
            let mut ticks = tokio::time::interval(REFRESH_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = ticks.tick() => refreshing.refresh(&link, &requests).await,
                }
            }
        });
        subscriptions
    }

    async fn refresh(&self, link: &RedisLink, requests: &CaptureRequests) {
        let now = crate::auth::now_ms();
        let local = self.hub.keys();
        let mut pipe = redis::pipe();
        if !local.is_empty() {
            let zadd = pipe.cmd("ZADD").arg(FOLLOWED_KEY);
            for partition in &local {
                zadd.arg(now).arg(member(partition));
            }
            zadd.ignore();
        }
        let forgotten = now - FORGET_AFTER.as_millis() as i64;
        pipe.cmd("ZREMRANGEBYSCORE").arg(FOLLOWED_KEY).arg("-inf").arg(format!("({forgotten}")).ignore();
        pipe.cmd("ZRANGE").arg(FOLLOWED_KEY).arg(0).arg(-1);
        let mut link = link.clone();
        let read = tokio::time::timeout(COMMAND_TIMEOUT, pipe.query_async::<(Vec<String>,)>(&mut link)).await;
        let members = match read {
            Ok(Ok((members,))) => members,
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot share followed partitions with the other nodes");
                return;
            }
            Err(_) => {
                tracing::warn!("sharing followed partitions with the other nodes timed out");
                return;
            }
        };
        let followed: BTreeSet<PartitionName> = members.iter().filter_map(|member| parse_member(member)).collect();
        let mut known = self.followed.lock();
        for partition in followed.difference(&known) {
            requests.request(partition);
        }
        *known = followed;
    }
}

/// Returns the set member naming `partition`: `<source length>:<source><key>`.
fn member(partition: &PartitionName) -> String {
    format!("{}:{}{}", partition.source.len(), partition.source, partition.key)
}

/// Decodes [`member`]; `None` when malformed.
fn parse_member(member: &str) -> Option<PartitionName> {
    let (length, rest) = member.split_once(':')?;
    let length: usize = length.parse().ok()?;
    Some(PartitionName::new(rest.get(..length)?, rest.get(length..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_name_partitions_whatever_their_names_hold() {
        for (source, key) in [("Task", "ann"), ("A:b", ":9:x"), ("Account", "*"), ("é", "ü:")] {
            let partition = PartitionName::new(source, key);
            assert_eq!(parse_member(&member(&partition)), Some(partition));
        }
        assert_eq!(parse_member("x:Task"), None);
        assert_eq!(parse_member("99:Task"), None);
    }
}
