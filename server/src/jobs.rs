//! Background jobs: flushing device cursors and last-seen times, compacting change logs,
//! pruning finished mutations' outcomes and collecting unreferenced blobs. Each runs as a task on the server's tracker until
//! the shutdown token fires; the stop sequence flushes cursors and last-seen times once more
//! after they end.
//!
//! In cluster mode compaction and outcome pruning run on one node at a time, under the lease
//! `jobs:compaction` (both are idempotent, so the lease only saves the work); flushes stay per
//! node: each node flushes what its own devices recorded.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::{Lease, Leases};
use crate::config::StoreSettings;
use crate::devices::DeviceManagement;
use crate::storage::{Store, StoreError};
use crate::sync::cursors::CursorRecorder;

/// What the background jobs work on.
#[derive(Clone)]
pub(crate) struct Jobs {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) cursors: Arc<CursorRecorder>,
    pub(crate) devices: Arc<DeviceManagement>,
    pub(crate) blobs: Arc<crate::blobs::BlobService>,
}

impl Jobs {
    /// Starts every job on `tracker`, at the intervals `settings` gives; they stop when
    /// `shutdown` fires. With `leases` (cluster mode) compaction runs while this node holds
    /// its lease.
    pub(crate) fn spawn(
        &self,
        settings: &StoreSettings,
        leases: Option<&Arc<Leases>>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) {
        let jobs = self.clone();
        tracker.spawn(every(shutdown.clone(), settings.cursor_flush, false, move || {
            let jobs = jobs.clone();
            async move {
                jobs.flush_cursors().await;
                jobs.flush_last_seen().await;
            }
        }));
        let jobs = self.clone();
        let (keep_recent, retention) = (settings.compact_keep_recent, settings.mutation_outcome_retention);
        let period = settings.compact_interval;
        let compaction = move |stop: CancellationToken| {
            let jobs = jobs.clone();
            // The first compaction waits a whole interval: a server that just started has
            // nothing new to compact.
            every(stop, period, true, move || {
                let jobs = jobs.clone();
                async move {
                    jobs.compact_all(keep_recent).await;
                    jobs.prune_mutation_outcomes(retention).await;
                }
            })
        };
        match leases {
            None => {
                tracker.spawn(compaction(shutdown.clone()));
            }
            Some(leases) => {
                let lease = Lease::app("jobs:compaction");
                tracker.spawn(
                    leases.clone().while_held(lease, shutdown.clone(), (), move |(), _fence, stop| compaction(stop)),
                );
            }
        }
    }

    /// Starts the collection of unreferenced blobs on `tracker`, every `interval` (the first
    /// after one interval: blobs are kept for a grace period anyway). With `leases` (cluster
    /// mode) it runs on one node at a time, while that node holds its lease.
    pub(crate) fn spawn_blob_collection(
        &self,
        interval: Duration,
        leases: Option<&Arc<Leases>>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) {
        let jobs = self.clone();
        let collection = move |stop: CancellationToken| {
            let jobs = jobs.clone();
            every(stop, interval, true, move || {
                let jobs = jobs.clone();
                async move { jobs.collect_blobs().await }
            })
        };
        match leases {
            None => {
                tracker.spawn(collection(shutdown.clone()));
            }
            Some(leases) => {
                let lease = Lease::app("jobs:blob-collection");
                tracker.spawn(
                    leases.clone().while_held(lease, shutdown.clone(), (), move |(), _fence, stop| collection(stop)),
                );
            }
        }
    }

    /// Deletes blobs nothing references any more, past their grace period.
    pub(crate) async fn collect_blobs(&self) {
        match self.blobs.collect_garbage().await {
            Ok(report) if report.deleted > 0 || report.partials_deleted > 0 => {
                tracing::info!(
                    deleted = report.deleted,
                    partials = report.partials_deleted,
                    "collected unreferenced blobs"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "blob collection failed; will retry"),
        }
    }

    /// Writes recorded device cursors to the store.
    pub(crate) async fn flush_cursors(&self) {
        let (store, cursors) = (self.store.clone(), self.cursors.clone());
        match tokio::task::spawn_blocking(move || cursors.flush(&store)).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "could not save device cursors; will retry"),
            Err(error) => tracing::warn!(%error, "cursor flush task failed"),
        }
    }

    /// Writes devices' last-seen times noted since the previous flush to the store.
    pub(crate) async fn flush_last_seen(&self) {
        let devices = self.devices.clone();
        match tokio::task::spawn_blocking(move || devices.flush_last_seen()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "could not save devices' last-seen times; will retry"),
            Err(error) => tracing::warn!(%error, "last-seen flush task failed"),
        }
    }

    /// Compacts every partition's log, keeping `keep_recent` entries behind each head.
    pub(crate) async fn compact_all(&self, keep_recent: u64) {
        let store = self.store.clone();
        let outcome = tokio::task::spawn_blocking(move || -> Result<u64, StoreError> {
            let mut removed = 0;
            for partition in store.partitions()? {
                removed += store.compact(&partition, keep_recent)?.removed;
            }
            Ok(removed)
        })
        .await;
        match outcome {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => tracing::info!(removed, "compacted change logs"),
            Ok(Err(error)) => tracing::warn!(%error, "compaction failed; will retry"),
            Err(error) => tracing::warn!(%error, "compaction task failed"),
        }
    }

    /// Removes the outcomes of mutations that finished more than `retention` ago.
    pub(crate) async fn prune_mutation_outcomes(&self, retention: Duration) {
        let store = self.store.clone();
        let now = u64::try_from(crate::auth::now_ms()).unwrap_or(0);
        let cutoff = now.saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX));
        match tokio::task::spawn_blocking(move || store.prune_mutation_outcomes(cutoff)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => tracing::info!(removed, "removed mutation outcomes past their retention"),
            Ok(Err(error)) => tracing::warn!(%error, "pruning mutation outcomes failed; will retry"),
            Err(error) => tracing::warn!(%error, "mutation outcome pruning task failed"),
        }
    }
}

/// Runs `job` every `period` until `stop` fires (the first run at once, or after one period
/// when `delay_first`).
async fn every<F, Fut>(stop: CancellationToken, period: Duration, delay_first: bool, mut job: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let start = tokio::time::Instant::now() + if delay_first { period } else { Duration::ZERO };
    let mut ticker = tokio::time::interval_at(start, period);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticker.tick() => job().await,
        }
    }
}
