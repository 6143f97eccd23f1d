//! Per-user connection caps across the nodes of a cluster.
//!
//! Each node counts its own sessions per user (`gateway::UserSessions`) and mirrors the
//! counts into Redis: one hash per user, `<prefix>:sessions:{<user>}`, field = node id, value
//! = that node's open sessions of the user (kept in order by one writer task per node). A
//! node also beats in `<prefix>:nodes` (field = node id, value = Unix ms) every
//! [`BEAT_INTERVAL`] and reads that hash back, so it knows which nodes are alive. At a Hello,
//! the sessions the user has on the other live nodes count against the cap with this node's
//! own; fields of dead nodes are ignored and removed.
//!
//! The bound is approximate, as documented: logins of one user racing on several nodes at
//! once may each see the others' counts before they are written, so a user can exceed the
//! cap by at most one session per other node for the time a count takes to reach Redis (a
//! round trip); a node that died stops counting after [`NODE_TIMEOUT`]. When Redis cannot be
//! read, a node enforces its own count only (it never refuses logins for want of Redis).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::link::RedisLink;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often a node beats and reads the others' beats.
pub const BEAT_INTERVAL: Duration = Duration::from_secs(1);
/// A node whose last beat is older than this counts as dead.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a Redis call may take before it counts as failed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// One session more or less of a user on this node, for the writer task.
#[derive(Debug)]
struct CountChange {
    user_id: String,
    delta: i64,
}

/// This node's side of the cluster-wide per-user counts.
pub struct ClusterSessions {
    node_id: String,
    prefix: String,
    connection: RedisLink,
    changes: mpsc::UnboundedSender<CountChange>,
    /// The nodes alive at the last beat (this one excluded).
    live_nodes: Mutex<Vec<String>>,
}

impl ClusterSessions {
    /// Counts through `connection` and starts the writer and beat tasks on `tracker`, until
    /// `shutdown` (when this node's fields are removed).
    pub async fn start(
        connection: RedisLink,
        prefix: &str,
        node_id: &str,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let (changes, receiver) = mpsc::unbounded_channel();
        let sessions = Arc::new(Self {
            node_id: node_id.to_owned(),
            prefix: prefix.to_owned(),
            connection,
            changes,
            live_nodes: Mutex::new(Vec::new()),
        });
        sessions.beat().await;
        tracker.spawn(sessions.clone().write_counts(receiver, shutdown.clone()));
        tracker.spawn(sessions.clone().keep_beating(shutdown));
        sessions
    }

    fn user_key(&self, user_id: &str) -> String {
        // The braces make a hash tag: one user's counts live in one slot of a Redis Cluster.
        format!("{}:sessions:{{{user_id}}}", self.prefix)
    }

    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// Returns the sessions `user_id` has open on the other live nodes (0 when Redis cannot
    /// be read).
    pub async fn elsewhere(&self, user_id: &str) -> usize {
        let mut connection = self.connection.clone();
        let key = self.user_key(user_id);
        let counts: HashMap<String, i64> =
            match tokio::time::timeout(COMMAND_TIMEOUT, redis::cmd("HGETALL").arg(&key).query_async(&mut connection))
                .await
            {
                Ok(Ok(counts)) => counts,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "cannot read a user's sessions on other nodes; counting this node's only");
                    return 0;
                }
                Err(_) => return 0,
            };
        let live = self.live_nodes.lock().clone();
        // A node missing from the last beats read may have started since: ask Redis for its
        // beat rather than take it for dead (its count would be lost to every node).
        let unknown: Vec<&String> =
            counts.keys().filter(|node| **node != self.node_id && !live.contains(*node)).collect();
        let fresh = self.fresh_beats(&mut connection, &unknown).await;
        let mut total = 0;
        let mut dead = Vec::new();
        for (node, count) in &counts {
            if live.contains(node) || fresh.contains(node) {
                total += usize::try_from(*count).unwrap_or(0);
            } else if *node != self.node_id {
                dead.push(node);
            }
        }
        if !dead.is_empty() {
            let _: redis::RedisResult<i64> = redis::cmd("HDEL").arg(&key).arg(&dead).query_async(&mut connection).await;
        }
        total
    }

    /// Returns which of `nodes` beat within [`NODE_TIMEOUT`], as Redis has it now (all of
    /// them when Redis cannot be read: a count is never dropped for want of an answer).
    async fn fresh_beats(&self, connection: &mut RedisLink, nodes: &[&String]) -> Vec<String> {
        if nodes.is_empty() {
            return Vec::new();
        }
        let mut command = redis::cmd("HMGET");
        command.arg(self.nodes_key()).arg(nodes);
        let read = command.query_async::<Vec<Option<i64>>>(connection);
        let beats = match tokio::time::timeout(COMMAND_TIMEOUT, read).await {
            Ok(Ok(beats)) => beats,
            _ => return nodes.iter().map(|node| (*node).clone()).collect(),
        };
        let now = crate::auth::now_ms();
        let timeout = NODE_TIMEOUT.as_millis() as i64;
        nodes
            .iter()
            .zip(beats)
            .filter(|(_, beat)| beat.is_some_and(|beat| now - beat <= timeout))
            .map(|(node, _)| (*node).clone())
            .collect()
    }

    /// Notes a session of `user_id` opened on this node.
    pub fn opened(&self, user_id: &str) {
        let _ = self.changes.send(CountChange { user_id: user_id.to_owned(), delta: 1 });
    }

    /// Notes a session of `user_id` closed on this node.
    pub fn closed(&self, user_id: &str) {
        let _ = self.changes.send(CountChange { user_id: user_id.to_owned(), delta: -1 });
    }

    /// Writes this node's count changes in order; at shutdown, removes its fields.
    async fn write_counts(
        self: Arc<Self>,
        mut changes: mpsc::UnboundedReceiver<CountChange>,
        shutdown: CancellationToken,
    ) {
        let mut connection = self.connection.clone();
        let mut users: HashMap<String, i64> = HashMap::new();
        loop {
            let change = tokio::select! {
                () = shutdown.cancelled() => break,
                change = changes.recv() => match change {
                    Some(change) => change,
                    None => break,
                },
            };
            let count = users.entry(change.user_id.clone()).or_default();
            *count = (*count + change.delta).max(0);
            let key = self.user_key(&change.user_id);
            let written: redis::RedisResult<()> = if *count == 0 {
                users.remove(&change.user_id);
                redis::cmd("HDEL").arg(&key).arg(&self.node_id).query_async(&mut connection).await
            } else {
                redis::cmd("HSET").arg(&key).arg(&self.node_id).arg(*count).query_async(&mut connection).await
            };
            if let Err(error) = written {
                tracing::warn!(%error, "cannot write a user's session count for the other nodes");
            }
        }
        for user_id in users.keys() {
            let _: redis::RedisResult<i64> =
                redis::cmd("HDEL").arg(self.user_key(user_id)).arg(&self.node_id).query_async(&mut connection).await;
        }
        let _: redis::RedisResult<i64> =
            redis::cmd("HDEL").arg(self.nodes_key()).arg(&self.node_id).query_async(&mut connection).await;
    }

    async fn keep_beating(self: Arc<Self>, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(BEAT_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => self.beat().await,
            }
        }
    }

    /// Records this node's beat and reads which other nodes are alive.
    async fn beat(&self) {
        let mut connection = self.connection.clone();
        let now = crate::auth::now_ms();
        let key = self.nodes_key();
        let beaten: redis::RedisResult<HashMap<String, i64>> = redis::pipe()
            .cmd("HSET")
            .arg(&key)
            .arg(&self.node_id)
            .arg(now)
            .ignore()
            .cmd("HGETALL")
            .arg(&key)
            .query_async::<(HashMap<String, i64>,)>(&mut connection)
            .await
            .map(|(beats,)| beats);
        match beaten {
            Ok(beats) => {
                let timeout = NODE_TIMEOUT.as_millis() as i64;
                // Nodes gone for long are forgotten (a node's id is new at each start).
                let gone: Vec<&String> =
                    beats.iter().filter(|(_, beat)| now - **beat > timeout * 720).map(|(node, _)| node).collect();
                if !gone.is_empty() {
                    let _: redis::RedisResult<i64> =
                        redis::cmd("HDEL").arg(&key).arg(&gone).query_async(&mut connection).await;
                }
                let live = beats
                    .into_iter()
                    .filter(|(node, beat)| *node != self.node_id && now - *beat <= timeout)
                    .map(|(node, _)| node)
                    .collect();
                *self.live_nodes.lock() = live;
            }
            Err(error) => tracing::warn!(%error, "cannot beat for the other nodes"),
        }
    }
}
