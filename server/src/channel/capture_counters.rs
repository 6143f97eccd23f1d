//! Counters of change capture, per captured source: errors by kind, and how stale the
//! captured data may be (the capture lag), for the metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use syncline_proto::record::RecordError;

use crate::storage::PartitionName;

/// What went wrong in capturing a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureError {
    /// The channel failed (unreachable, stream broken, query failed).
    Channel,
    /// The store could not take the captured changes.
    Store,
    /// A record (or deleted id) outside the record limits was skipped.
    RefusedRecord,
}

impl CaptureError {
    /// Every kind, in label order.
    pub const ALL: [CaptureError; 3] = [CaptureError::Channel, CaptureError::Store, CaptureError::RefusedRecord];

    /// Returns the kind's label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureError::Channel => "channel",
            CaptureError::Store => "store",
            CaptureError::RefusedRecord => "refused_record",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The capture state of one source.
#[derive(Debug, Default)]
struct SourceCapture {
    errors: [AtomicU64; CaptureError::ALL.len()],
    /// A watch stream is open: the source is current (its changes arrive as they happen).
    streaming: AtomicBool,
    /// When the source was last known current, in milliseconds after the counters' start:
    /// a poll that succeeded (its start), or the moment a watch stream stopped.
    current_at_ms: AtomicU64,
}

/// One source's capture counters at a scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceCaptureSnapshot {
    pub source: String,
    /// Errors by [`CaptureError::ALL`].
    pub errors: [u64; CaptureError::ALL.len()],
    /// How long since the source was last known current: zero while a watch stream is open,
    /// since the last successful poll for a polled source (about the interval when healthy),
    /// since the stream stopped (or the server started) for a watched one that is down.
    pub lag: Duration,
}

/// The health of one source's change capture (watch or poll).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaptureHealth {
    /// The channel answered the last attempt (watch: its stream is open).
    pub connected: bool,
    /// When the last batch (watch) or poll with changes was committed, in Unix ms.
    pub last_batch_ms: Option<i64>,
    /// How long the last batch took from the channel's answer to its durable commit.
    pub last_batch_lag_ms: Option<u64>,
    /// The last failure, cleared when the channel answers again.
    pub last_error: Option<String>,
    /// Times the channel answered (watch: its stream opened) since the server started.
    pub connects: u64,
}

/// Counters of change capture, shared by its tasks (one set per server), and each captured
/// source's health (what the admin API shows).
#[derive(Debug)]
pub struct CaptureCounters {
    refused_records: AtomicU64,
    started: Instant,
    sources: RwLock<BTreeMap<String, SourceCapture>>,
    /// Each captured source's health, as the admin API shows it.
    health: dashmap::DashMap<String, CaptureHealth>,
}

impl Default for CaptureCounters {
    fn default() -> Self {
        Self {
            refused_records: AtomicU64::new(0),
            started: Instant::now(),
            sources: RwLock::default(),
            health: Default::default(),
        }
    }
}

impl CaptureCounters {
    /// Returns counters that report a lag for each of the captured `sources` from the start.
    pub fn new<'a>(sources: impl IntoIterator<Item = &'a String>) -> Self {
        let counters = Self::default();
        counters.sources.write().extend(sources.into_iter().map(|source| (source.clone(), SourceCapture::default())));
        counters
    }

    /// Records that the channel of `sources` answered.
    pub fn capture_connected<'a>(&self, sources: impl IntoIterator<Item = &'a str>) {
        for source in sources {
            let mut health = self.health.entry(source.to_owned()).or_default();
            health.connected = true;
            health.last_error = None;
            health.connects += 1;
        }
    }

    /// Records a committed batch of `sources` that took `lag` from answer to commit.
    pub fn capture_committed<'a>(&self, sources: impl IntoIterator<Item = &'a str>, lag: Duration) {
        let now = crate::auth::now_ms();
        for source in sources {
            let mut health = self.health.entry(source.to_owned()).or_default();
            health.last_batch_ms = Some(now);
            health.last_batch_lag_ms = Some(lag.as_millis() as u64);
        }
    }

    /// Records a failure of capture for `sources`.
    pub fn capture_failed<'a>(&self, sources: impl IntoIterator<Item = &'a str>, error: &str) {
        for source in sources {
            let mut health = self.health.entry(source.to_owned()).or_default();
            health.connected = false;
            health.last_error = Some(error.to_owned());
        }
    }

    /// Returns a source's capture health (the default before capture ever ran).
    pub fn health(&self, source: &str) -> CaptureHealth {
        self.health.get(source).map(|health| health.clone()).unwrap_or_default()
    }

    /// Logs and counts a record (or deleted id) from a channel that is outside the record
    /// limits and is skipped.
    pub fn record_refused(&self, endpoint: &str, partition: &PartitionName, error: &RecordError) {
        self.refused_records.fetch_add(1, Ordering::Relaxed);
        self.failed([partition.source.as_str()], CaptureError::RefusedRecord);
        tracing::warn!(endpoint, %partition, id = error.id(), %error, "channel record outside the record limits; skipped");
    }

    /// Returns the records (and deleted ids) from channels refused since the server started.
    pub fn refused_records(&self) -> u64 {
        self.refused_records.load(Ordering::Relaxed)
    }

    /// Runs `update` on the state of `source`, made at its first use.
    fn with_source(&self, source: &str, update: impl FnOnce(&SourceCapture)) {
        if let Some(state) = self.sources.read().get(source) {
            return update(state);
        }
        update(self.sources.write().entry(source.to_owned()).or_default());
    }

    fn millis_since_start(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.started).as_millis()).unwrap_or(u64::MAX)
    }

    /// Counts an error of `kind` for each of `sources`.
    pub fn failed<'a>(&self, sources: impl IntoIterator<Item = &'a str>, kind: CaptureError) {
        for source in sources {
            self.with_source(source, |state| {
                state.errors[kind.index()].fetch_add(1, Ordering::Relaxed);
            });
        }
    }

    /// Records that a poll of `source` that started at `started` succeeded.
    pub fn polled(&self, source: &str, started: Instant) {
        let at = self.millis_since_start(started);
        self.with_source(source, |state| {
            state.current_at_ms.fetch_max(at, Ordering::Relaxed);
        });
    }

    /// Records that a watch stream of `sources` opened (`true`) or stopped (`false`).
    pub fn streaming<'a>(&self, sources: impl IntoIterator<Item = &'a str>, open: bool) {
        let now = self.millis_since_start(Instant::now());
        for source in sources {
            self.with_source(source, |state| {
                if state.streaming.swap(open, Ordering::Relaxed) && !open {
                    state.current_at_ms.fetch_max(now, Ordering::Relaxed);
                }
            });
        }
    }

    /// Returns every source's counters and lag.
    pub fn snapshot(&self) -> Vec<SourceCaptureSnapshot> {
        let now = self.millis_since_start(Instant::now());
        self.sources
            .read()
            .iter()
            .map(|(source, state)| {
                let lag_ms = if state.streaming.load(Ordering::Relaxed) {
                    0
                } else {
                    now.saturating_sub(state.current_at_ms.load(Ordering::Relaxed))
                };
                SourceCaptureSnapshot {
                    source: source.clone(),
                    errors: std::array::from_fn(|index| state.errors[index].load(Ordering::Relaxed)),
                    lag: Duration::from_millis(lag_ms),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_zero_while_streaming_and_grows_from_the_last_current_moment() {
        let counters = CaptureCounters::new(&["Deal".to_owned()]);
        counters.streaming(["Deal"], true);
        counters.failed(["Deal", "Note"], CaptureError::Channel);
        let snapshot = counters.snapshot();
        assert_eq!(snapshot.len(), 2, "a source is known from its first event too");
        assert_eq!(snapshot[0].lag, Duration::ZERO);
        assert_eq!(snapshot[0].errors, [1, 0, 0]);
        counters.streaming(["Deal"], false);
        let polled_at = counters.started + Duration::from_secs(3600);
        counters.polled("Note", polled_at);
        let snapshot = counters.snapshot();
        assert!(snapshot[0].lag < Duration::from_secs(60), "down only just now");
        assert_eq!(snapshot[1].lag, Duration::ZERO, "a poll in the future: no lag rather than a wrap");
    }
}
