//! Leases with fencing tokens in Redis: work that exactly one node of a cluster may do at a
//! time (follow a channel's feed, dispatch one device's mutations to a source, compact).
//!
//! A lease is two keys of one hash tag (`storage::redis::lease_keys`): the *holder* key,
//! `<token>/<node>`, which expires after the lease's TTL unless renewed, and a counter that
//! gives each grant a *fencing token* greater than every earlier grant's. Acquiring (`SET NX
//! PX` and `INCR` in one script), renewing and releasing (compare the holder, then `PEXPIRE`
//! or `DEL`) are Lua scripts, atomic on one server and on one slot of a Redis Cluster.
//!
//! **A holder never acts on stale ownership.** [`Leases::hold`] renews every third of the
//! TTL and counts the lease as lost as soon as it cannot be sure Redis still has it: when a
//! renewal finds another holder, or when no renewal has succeeded for
//! [`STOP_BEFORE`](Leases::hold) of the TTL since the last one was *sent* (Redis counts the
//! TTL from later, when it runs the command). The work is then cancelled, before the lease
//! can expire in Redis and be granted to another node.
//!
//! **Writes made under a lease carry its fence** ([`crate::storage::Fence`]) and the store
//! refuses them once the grant is no longer current, whatever the writer believes: a node
//! paused (SIGSTOP, a long GC-like stall) between its last check and its write cannot
//! overwrite what the next holder wrote. The capture position and a mutation's outcome check
//! the holder key atomically with the write; partition writes of capture keep the greatest
//! token written per lease in the partition's state and refuse a smaller one.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::link::RedisLink;
use crate::storage::Fence;
use crate::storage::redis::{LeaseSlot, lease_keys};

/// Grants the lease to `node` (ARGV[1]) for ARGV[2] ms unless it is held; returns the new
/// fencing token and holder value, or 0 and the current holder.
const ACQUIRE: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder then
  return {0, holder}
end
local token = redis.call('INCR', KEYS[2])
holder = token .. '/' .. ARGV[1]
redis.call('SET', KEYS[1], holder, 'PX', ARGV[2])
return {token, holder}
";

/// Extends the lease by ARGV[2] ms if ARGV[1] still holds it; returns 1, else 0.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Ends the lease if ARGV[1] still holds it; returns 1, else 0.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

/// Why a lease operation failed (Redis did not answer as expected; the lease is then not
/// held as far as this node knows).
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

/// A lease: its name and where it lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// What the lease is for, e.g. `capture:watch:Task` (in logs and fences).
    pub name: String,
    holder_key: String,
    counter_key: String,
}

impl Lease {
    /// Returns an app-wide lease (capture, compaction): its keys sit in the slot of the
    /// capture positions.
    pub fn app(name: &str) -> Self {
        let (holder_key, counter_key) = lease_keys(LeaseSlot::App, name);
        Self { name: name.to_owned(), holder_key, counter_key }
    }

    /// Returns the lease of the mutation lane (`client_id`, `source`): its keys sit in the
    /// slot of the device's mutation queue.
    pub fn lane(client_id: &str, source: &str) -> Self {
        let (holder_key, counter_key) = lease_keys(LeaseSlot::Device { client_id }, source);
        Self { name: format!("mutations:{client_id}:{source}"), holder_key, counter_key }
    }
}

/// One grant of a lease to this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub lease: Lease,
    /// The fencing token: greater than every earlier grant's of this lease.
    pub token: u64,
    /// The holder value in Redis (`<token>/<node>`).
    holder: String,
    /// When the acquire was sent: Redis started the TTL later.
    sent: Instant,
}

impl Grant {
    /// Returns the fence writes under this grant carry.
    pub fn fence(&self) -> Fence {
        Fence {
            lease: self.lease.name.clone(),
            key: self.lease.holder_key.clone(),
            holder: self.holder.clone(),
            token: self.token,
        }
    }
}

/// This node's side of the cluster's leases.
pub struct Leases {
    link: RedisLink,
    node_id: String,
    ttl: Duration,
    acquire: Script,
    renew: Script,
    release: Script,
}

/// How a held lease ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Held<T> {
    /// The work finished while the lease was held (then released).
    Finished(T),
    /// The lease was lost; the work was cancelled and ended with this.
    Lost(T),
}

impl Leases {
    /// Returns the leases of node `node_id`, granted for `ttl` at a time.
    pub fn new(link: RedisLink, node_id: &str, ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            link,
            node_id: node_id.to_owned(),
            ttl,
            acquire: Script::new(ACQUIRE),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
        })
    }

    /// Returns the lease TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Returns this node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// How long one call may take: a third of the TTL, the renewal period.
    fn call_timeout(&self) -> Duration {
        self.ttl / 3
    }

    async fn call<T: redis::FromRedisValue>(&self, invocation: redis::ScriptInvocation<'_>) -> Result<T, LeaseError> {
        let mut link = self.link.clone();
        let timeout = self.call_timeout();
        match tokio::time::timeout(timeout, invocation.invoke_async(&mut link)).await {
            Ok(answer) => Ok(answer?),
            Err(_) => Err(LeaseError::Timeout(timeout)),
        }
    }

    /// Takes `lease` for this node unless another grant holds it; `None` when one does.
    pub async fn acquire(&self, lease: &Lease) -> Result<Option<Grant>, LeaseError> {
        let sent = Instant::now();
        let mut invocation = self.acquire.key(&lease.holder_key);
        invocation.key(&lease.counter_key).arg(&self.node_id).arg(self.ttl.as_millis() as u64);
        let (token, holder): (u64, String) = self.call(invocation).await?;
        Ok((token > 0).then(|| Grant { lease: lease.clone(), token, holder, sent }))
    }

    /// Extends `grant` by the TTL; false when it is no longer the lease's holder.
    pub async fn renew(&self, grant: &Grant) -> Result<bool, LeaseError> {
        let mut invocation = self.renew.key(&grant.lease.holder_key);
        invocation.arg(&grant.holder).arg(self.ttl.as_millis() as u64);
        self.call(invocation).await
    }

    /// Ends `grant` so that another node may take the lease at once; false when it was no
    /// longer the holder.
    pub async fn release(&self, grant: &Grant) -> Result<bool, LeaseError> {
        let mut invocation = self.release.key(&grant.lease.holder_key);
        invocation.arg(&grant.holder);
        self.call(invocation).await
    }

    /// Returns the current holder of `lease` (`<token>/<node>`), if any.
    pub async fn holder(&self, lease: &Lease) -> Result<Option<String>, LeaseError> {
        let mut link = self.link.clone();
        let timeout = self.call_timeout();
        let mut command = redis::cmd("GET");
        command.arg(&lease.holder_key);
        match tokio::time::timeout(timeout, command.query_async(&mut link)).await {
            Ok(answer) => Ok(answer?),
            Err(_) => Err(LeaseError::Timeout(timeout)),
        }
    }

    /// Runs `work` under `grant`, renewing it every third of the TTL. When the lease is lost
    /// (another holder, or no successful renewal for [`STOP_BEFORE_NUMERATOR`]/
    /// [`STOP_BEFORE_DENOMINATOR`] of the TTL since the last one was sent) `stop` is
    /// cancelled and `work` is awaited (it must end promptly when `stop` is); otherwise, once
    /// `work` ends, the lease is released.
    pub async fn hold<T>(&self, grant: Grant, stop: &CancellationToken, work: impl Future<Output = T>) -> Held<T> {
        let mut work = std::pin::pin!(work);
        let renewing = self.keep_renewing(&grant);
        tokio::select! {
            done = &mut work => {
                if let Err(error) = self.release(&grant).await {
                    tracing::debug!(lease = %grant.lease.name, %error, "cannot release a lease; it expires");
                }
                Held::Finished(done)
            }
            () = renewing => {
                tracing::warn!(lease = %grant.lease.name, token = grant.token, "lease lost; its work stops");
                stop.cancel();
                Held::Lost(work.await)
            }
        }
    }

    /// Renews `grant` until it is lost; returns then.
    async fn keep_renewing(&self, grant: &Grant) {
        let period = self.ttl / 3;
        let mut valid_until = grant.sent + self.safe_part();
        let mut next = grant.sent + period;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(valid_until) => return,
                () = tokio::time::sleep_until(next) => {}
            }
            let sent = Instant::now();
            next = sent + period;
            let renewed = tokio::select! {
                () = tokio::time::sleep_until(valid_until) => return,
                renewed = self.renew(grant) => renewed,
            };
            match renewed {
                Ok(true) => valid_until = sent + self.safe_part(),
                Ok(false) => return,
                Err(error) => tracing::warn!(lease = %grant.lease.name, %error, "cannot renew a lease; retrying"),
            }
        }
    }

    /// The part of the TTL a holder may count on after sending a renewal.
    fn safe_part(&self) -> Duration {
        self.ttl * STOP_BEFORE_NUMERATOR / STOP_BEFORE_DENOMINATOR
    }

    /// Does `work` whenever this node holds `lease`, until `shutdown`: tries to take it every
    /// third of the TTL while another node holds it (or Redis cannot be reached), and runs
    /// `work` under [`Leases::hold`] when it has it. `work` gets `state` back each time (a
    /// queue it reads from, say), the lease's fence, and a token cancelled when the lease is
    /// lost or at shutdown; it returns `state` when that token is cancelled.
    pub async fn while_held<S, F, Fut>(
        self: Arc<Self>,
        lease: Lease,
        shutdown: CancellationToken,
        state: S,
        mut work: F,
    ) where
        F: FnMut(S, Fence, CancellationToken) -> Fut,
        Fut: Future<Output = S>,
    {
        let mut state = state;
        let retry = self.ttl / 3;
        loop {
            let granted = tokio::select! {
                () = shutdown.cancelled() => return,
                granted = self.acquire(&lease) => granted,
            };
            match granted {
                Ok(Some(grant)) => {
                    tracing::info!(lease = %lease.name, token = grant.token, node = %self.node_id, "lease taken");
                    let stop = shutdown.child_token();
                    let fence = grant.fence();
                    state = match self.hold(grant, &stop, work(state, fence, stop.clone())).await {
                        Held::Finished(state) | Held::Lost(state) => state,
                    };
                    if shutdown.is_cancelled() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(error) => tracing::debug!(lease = %lease.name, %error, "cannot take a lease; retrying"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(retry) => {}
            }
        }
    }
}

/// A holder stops work once this fraction of the TTL has passed since it sent its last
/// successful renewal (or acquire): the rest is a margin for clock drift between this
/// process and Redis and for the time cancelled work takes to stop.
pub const STOP_BEFORE_NUMERATOR: u32 = 4;
pub const STOP_BEFORE_DENOMINATOR: u32 = 5;

#[cfg(test)]
mod tests;
