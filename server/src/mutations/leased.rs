//! Mutation lanes in cluster mode: each lane (device, source) is dispatched by one node at a
//! time, under the lease `mutations:<client>:<source>` (see [`crate::cluster::lease`]).
//!
//! Why leases on lanes rather than a Redis stream per source with consumer groups: the
//! durable queue already exists (the device's queue in the store, with dedupe by mutation id
//! and the queue bound in one script), and a lane must send its mutations strictly in queue
//! order, one at a time. A consumer group hands entries to consumers independently, so two
//! mutations of one device could be sent by two nodes at once, out of order; and the stream
//! would be a second copy of the queue to keep consistent with the first. A lease per lane
//! keeps one queue and its order, and the lease's key sits in the device's slot, so the
//! outcome's commit checks it atomically.
//!
//! - The node the device writes on starts the lane: it takes the lease, then reads the lane's
//!   mutations **from the store** (never from memory: a lane that was taken over may have
//!   been partly finished by another node) and sends them in order, renewing the lease; it
//!   releases the lease when the store has none left.
//! - A lane whose lease another node holds waits for it (re-reading the store every third of
//!   the TTL) and ends when the store has nothing left: the holder finished them.
//! - Every node sweeps every `cluster.sweep_interval_ms` (and at start, instead of resuming
//!   everything): lanes with pending mutations whose lease nobody holds (their node died, or
//!   their lane ended on an error) are started here. A dead node's lanes therefore move
//!   within the lease TTL plus one sweep interval.
//!
//! **What is guaranteed.** A mutation's outcome is stored once, by the current holder of its
//! lane's lease (the outcome's commit refuses a stale fence), and then answers its id for
//! good. In the normal case the channel gets each mutation id once. When the node sending a
//! mutation dies (or loses its lease) after the call left and before the outcome was
//! stored, the next holder sends it again with the same `mutation_id`: the channel may then
//! see that id twice, and its idempotency by mutation id (channel.proto) keeps the effect
//! once. At most one mutation per lane is in that state per lost lease.
//!
//! Operators' retries of failed mutations act through the store and reach any node's lane;
//! a discard and the list of parked mutations (waiting for an unavailable channel) are the
//! node's own: they concern the lanes that node runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use syncline_proto::v1::{ServerFrame, server_frame};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{LaneKey, MutationDispatcher};
use crate::cluster::lease::Held;
use crate::cluster::{Lease, Leases};
use crate::storage::{Fence, QueuedMutation, StoreError};

impl MutationDispatcher {
    /// Runs a lane under its lease until the store holds nothing left for it.
    pub(super) async fn run_leased_lane(
        self: Arc<Self>,
        leases: Arc<Leases>,
        key: LaneKey,
        mut receiver: mpsc::UnboundedReceiver<QueuedMutation>,
    ) {
        let lease = Lease::lane(&key.0, &key.1);
        let retry = leases.ttl() / 3;
        loop {
            // What arrived only says there is work: the store says which.
            while receiver.try_recv().is_ok() {}
            match self.lane_pending(&key).await {
                Ok(pending) if pending.is_empty() => {
                    // Checked under the lanes lock: nothing can be handed to an ending lane.
                    let mut lanes = self.lanes.lock();
                    if receiver.is_empty() {
                        lanes.remove(&key);
                        return;
                    }
                    continue;
                }
                Ok(_) => {
                    let granted = tokio::select! {
                        () = self.shutdown.cancelled() => return,
                        granted = leases.acquire(&lease) => granted,
                    };
                    match granted {
                        Ok(Some(grant)) => {
                            let stop = self.shutdown.child_token();
                            let fence = grant.fence();
                            if let Held::Lost(()) =
                                leases.hold(grant, &stop, self.dispatch_lane(&key, &fence, &stop)).await
                            {
                                tracing::warn!(client_id = %key.0, source = %key.1, "mutation lane lost to another node");
                            }
                            if self.shutdown.is_cancelled() {
                                return;
                            }
                            continue;
                        }
                        // Another node dispatches the lane: it finishes what is queued, or its
                        // lease expires.
                        Ok(None) => {}
                        Err(error) => {
                            tracing::warn!(client_id = %key.0, %error, "cannot take a mutation lane; retrying")
                        }
                    }
                }
                Err(error) => tracing::warn!(client_id = %key.0, %error, "cannot read a mutation lane; retrying"),
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(retry) => {}
            }
        }
    }

    /// Sends the lane's queued mutations in order under `fence`, reading the store again
    /// after each round, until none is left, an outcome cannot be stored, or `stop`.
    async fn dispatch_lane(&self, key: &LaneKey, fence: &Fence, stop: &CancellationToken) {
        loop {
            let pending = match self.lane_pending(key).await {
                Ok(pending) if !pending.is_empty() => pending,
                Ok(_) | Err(_) => return,
            };
            for mutation in pending {
                self.counters.submitted();
                let dispatched = tokio::select! {
                    () = stop.cancelled() => None,
                    result = self.dispatch(&mutation, Some(fence)) => result,
                };
                let Some(result) = dispatched else { return };
                self.counters.finished(mutation.op, &result);
                let frame = ServerFrame { msg: Some(server_frame::Msg::MutationResult(result)) };
                self.replies.to_device(&mutation.client_id, frame).await;
            }
        }
    }

    /// Returns the lane's unfinished mutations, in queue order, from the store.
    async fn lane_pending(&self, (client_id, source): &LaneKey) -> Result<Vec<QueuedMutation>, StoreError> {
        let store = self.store.clone();
        let client = client_id.clone();
        let mut pending = tokio::task::spawn_blocking(move || store.pending_mutations_of(&client))
            .await
            .map_err(|error| StoreError::Io(error.to_string()))??;
        pending.retain(|mutation| mutation.partition.source == *source);
        Ok(pending)
    }

    /// Starts the lanes with queued mutations that no node holds and that do not run here;
    /// returns how many mutations they hold.
    pub(super) async fn sweep(self: &Arc<Self>) -> Result<usize, StoreError> {
        let Some(leases) = &self.leases else { return Ok(0) };
        let store = self.store.clone();
        let pending = tokio::task::spawn_blocking(move || store.pending_mutations())
            .await
            .map_err(|error| StoreError::Io(error.to_string()))??;
        let mut lanes: BTreeMap<LaneKey, (QueuedMutation, usize)> = BTreeMap::new();
        for mutation in pending {
            let key = (mutation.client_id.clone(), mutation.partition.source.clone());
            lanes.entry(key).or_insert_with(|| (mutation, 0)).1 += 1;
        }
        let mut taken = 0;
        for (key, (first, count)) in lanes {
            if self.lanes.lock().contains_key(&key) {
                continue;
            }
            match leases.holder(&Lease::lane(&key.0, &key.1)).await {
                Ok(None) => {
                    taken += count;
                    self.hand_to_lane(first);
                }
                Ok(Some(_)) => {}
                Err(error) => tracing::debug!(client_id = %key.0, %error, "cannot read a lane's lease; next sweep"),
            }
        }
        Ok(taken)
    }

    /// Sweeps every `interval` until shutdown (cluster mode; see the module docs).
    pub fn spawn_sweeper(self: &Arc<Self>, interval: Duration) {
        if self.leases.is_none() {
            return;
        }
        let this = self.clone();
        self.tracker.spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = this.shutdown.cancelled() => return,
                    _ = ticks.tick() => match this.sweep().await {
                        Ok(0) => {}
                        Ok(taken) => tracing::info!(mutations = taken, "took over queued mutations no node dispatches"),
                        Err(error) => tracing::warn!(%error, "cannot sweep the mutation queues; next interval"),
                    },
                }
            }
        });
    }
}
