//! The Redis store: the whole [`Store`](crate::storage::Store) contract on one Redis server
//! or a Redis Cluster, so that several Syncline nodes share one store.
//!
//! Semantics are the embedded store's (gap-free sequences per partition, unchanged upserts
//! and deletes of absent records take no sequence, the same checksum, compaction and pages);
//! so is the encoding of stored values. The key layout is in `keys.rs`.
//!
//! **Partition writes** are compare-and-set: the store reads the partition's head and the
//! stored records of the batch's ids, computes in Rust what the embedded writer would
//! (sequences, log entries, total and the order-independent checksum of
//! `syncline_proto::checksum`, a 64-bit wrapping sum that Lua's doubles cannot hold), and
//! one Lua script (`scripts/write_partition.lua`) applies it only if the head is still the
//! one read. A writer that lost the race reads again and recomputes, so two nodes writing
//! one partition never interleave or reuse a sequence. Within one node, writes of one
//! partition also take a local lock (striped by partition), which keeps them from racing
//! each other and calls the [`CommitListener`] in sequence order per partition; single-partition
//! writes that queue for that lock meanwhile are committed together, as one script and one
//! fsync (`group_commit.rs`).
//!
//! **Writes to several partitions** (`apply_capture`, `finish_mutation`) cannot be one
//! script in a Redis Cluster (the partitions and the capture position or mutation queue sit
//! in different slots). They write the partitions first, one script each, and the capture
//! position or mutation outcome last. A crash in between leaves the position (or the queued
//! mutation) behind the partitions; applying the same writes again after the restart changes
//! nothing, since unchanged upserts and deletes of absent records take no sequence.
//!
//! **Connections** are synchronous and pooled (`connection.rs`): the contract is
//! synchronous and called from blocking threads, so there is no async bridge to get wrong.
//!
//! **Durability** is checked at open (`durability.rs`): AOF with `appendfsync always`, or
//! `WAIT` for replicas after each acknowledged write, or the explicit `allow_volatile`.
//!
//! Where the code is: `partitions.rs` partitions (writes, pages, compaction); `group_commit.rs`
//! grouped partition writes;
//! `mutations.rs` device mutation queues; `accounts.rs` users, devices, secrets, cursors;
//! `admin.rs` the admin plane; `devices.rs` the device listing and commands; `scripts/` the
//! Lua scripts.

mod accounts;
mod admin;
mod blobs;
mod connection;
mod devices;
mod durability;
mod group_commit;
mod keys;
mod mutations;
mod partitions;
mod scripts;

use std::hash::{Hash as _, Hasher as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::RedisResult;

use self::connection::{Connection, ConnectionPool};
pub use self::connection::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT, RedisEndpoint};
pub use self::durability::DEFAULT_WAIT_TIMEOUT;
use self::durability::Durability;
pub use self::keys::{LeaseSlot, lease_keys, partition_hash_tag};
use self::scripts::Scripts;
use super::{CommitListener, StoreError, StoreResult, StoreStats, WriteStats};
use crate::metrics::histogram::{AtomicHistogram, HistogramSnapshot};

/// Locks partition writes of one node are striped over: enough that unrelated partitions
/// rarely share one, few enough to cost nothing.
const PARTITION_LOCKS: usize = 64;

/// A write (an acknowledged round trip, and `WAIT` when configured) that takes this long is
/// counted as slow, like the embedded store's slow fsyncs.
pub const SLOW_COMMIT: Duration = Duration::from_millis(100);

/// How to reach and use the store's Redis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisOptions {
    /// One server or a cluster's seed nodes.
    pub endpoint: RedisEndpoint,
    /// Replicas every acknowledged write waits for (`WAIT`); 0: none.
    pub wait_replicas: u32,
    /// How long `WAIT` waits.
    pub wait_timeout: Duration,
    /// Opens even when the server may lose acknowledged writes.
    pub allow_volatile: bool,
}

impl RedisOptions {
    /// Returns options for one server at `url`, with no replicas to wait for and volatility
    /// refused.
    pub fn single(url: impl Into<String>) -> Self {
        Self {
            endpoint: RedisEndpoint::Single(url.into()),
            wait_replicas: 0,
            wait_timeout: DEFAULT_WAIT_TIMEOUT,
            allow_volatile: false,
        }
    }
}

/// The Redis [`Store`](crate::storage::Store). See the module docs.
pub struct RedisStore {
    pool: ConnectionPool,
    scripts: Scripts,
    durability: Durability,
    wait_timeout: Duration,
    listener: Option<Arc<dyn CommitListener>>,
    /// Partition writes, striped by partition: each stripe's lock and group-commit queue.
    stripes: Vec<group_commit::WriteStripe>,
    submitted_batches: AtomicU64,
    answered_batches: AtomicU64,
    commits: AtomicU64,
    slow_commits: AtomicU64,
    slowest_commit_micros: AtomicU64,
    commit_micros_total: AtomicU64,
    commit_latency: AtomicHistogram,
}

impl RedisStore {
    /// Connects to the store's Redis, checks that it answers and that acknowledged writes
    /// are durable (see the module docs), with `listener` called after each partition write
    /// that changed something.
    pub fn open(options: &RedisOptions, listener: Option<Arc<dyn CommitListener>>) -> StoreResult<Self> {
        let pool = ConnectionPool::new(&options.endpoint)?;
        let aof = pool.run(|connection| {
            redis::cmd("PING").query::<()>(connection.as_dyn())?;
            Ok(durability::read_aof_config(connection.as_dyn()))
        })?;
        let durability = durability::decide(aof.as_ref(), options.wait_replicas, options.allow_volatile)?;
        Ok(Self {
            pool,
            scripts: Scripts::new(),
            durability,
            wait_timeout: options.wait_timeout,
            listener,
            stripes: (0..PARTITION_LOCKS).map(|_| group_commit::WriteStripe::default()).collect(),
            submitted_batches: AtomicU64::new(0),
            answered_batches: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            slow_commits: AtomicU64::new(0),
            slowest_commit_micros: AtomicU64::new(0),
            commit_micros_total: AtomicU64::new(0),
            commit_latency: AtomicHistogram::new(crate::metrics::histogram::DISK_SECONDS),
        })
    }

    /// Runs commands on a pooled connection (reads, and writes that need no durability).
    fn run<T>(&self, work: impl FnOnce(&mut dyn redis::ConnectionLike) -> RedisResult<T>) -> StoreResult<T> {
        self.pool.run(|connection: &mut Connection| work(connection.as_dyn()))
    }

    /// Runs a write on a pooled connection and, when it wrote, waits for the configured
    /// replicas on the same connection. `work` returns its result and whether it wrote.
    fn run_durable<T>(
        &self,
        work: impl FnOnce(&mut dyn redis::ConnectionLike) -> RedisResult<(T, bool)>,
    ) -> StoreResult<T> {
        let replicas = self.durability.wait_replicas;
        let timeout = self.wait_timeout;
        let (value, waited) = self.pool.run(|connection: &mut Connection| {
            let (value, wrote) = work(connection.as_dyn())?;
            let waited = if wrote && replicas > 0 {
                durability::wait_for_replicas(connection.as_dyn(), replicas, timeout)?
            } else {
                Ok(())
            };
            Ok((value, waited))
        })?;
        waited.map(|()| value)
    }

    /// Returns the local lock of `partition`'s writes.
    fn partition_lock(&self, partition: &crate::storage::PartitionName) -> &Mutex<()> {
        &self.stripe(partition).lock
    }

    /// Returns the write stripe of `partition` (its lock and group-commit queue).
    fn stripe(&self, partition: &crate::storage::PartitionName) -> &group_commit::WriteStripe {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        partition.hash(&mut hasher);
        &self.stripes[(hasher.finish() as usize) % PARTITION_LOCKS]
    }

    /// Counts a durable commit that started at `started`.
    fn record_commit(&self, started: Instant) {
        let took = started.elapsed();
        let micros = took.as_micros() as u64;
        self.commits.fetch_add(1, Ordering::AcqRel);
        self.slowest_commit_micros.fetch_max(micros, Ordering::AcqRel);
        self.commit_micros_total.fetch_add(micros, Ordering::AcqRel);
        self.commit_latency.observe(took);
        if took >= SLOW_COMMIT {
            self.slow_commits.fetch_add(1, Ordering::AcqRel);
            tracing::warn!(
                commit_ms = took.as_millis() as u64,
                "slow commit: redis took this long to acknowledge a write"
            );
        }
    }
}

impl StoreStats for RedisStore {
    fn write_stats(&self) -> WriteStats {
        WriteStats {
            submitted_batches: self.submitted_batches.load(Ordering::Acquire),
            answered_batches: self.answered_batches.load(Ordering::Acquire),
            commits: self.commits.load(Ordering::Acquire),
            slow_commits: self.slow_commits.load(Ordering::Acquire),
            slowest_commit_micros: self.slowest_commit_micros.load(Ordering::Acquire),
            commit_micros_total: self.commit_micros_total.load(Ordering::Acquire),
        }
    }

    fn commit_latency(&self) -> HistogramSnapshot {
        self.commit_latency.snapshot()
    }

    /// The store's size is the server's memory, which other data may share: not reported.
    fn size_bytes(&self) -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests;

/// Parses a decimal number stored by the store.
fn parse_u64(value: &str, what: &str) -> StoreResult<u64> {
    value.parse().map_err(|_| StoreError::Corrupt(format!("a stored {what} is not a number: {value:?}")))
}

/// Returns the current Unix time in milliseconds.
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}
