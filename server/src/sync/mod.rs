//! The sync engine: partitions, catch-up paging (snapshot + log), live push of committed
//! batches, device cursors.
//!
//! - [`session`]: the per-connection [`DeviceSession`](session::DeviceSession) that
//!   implements push's `SessionHandler`.
//! - [`pages`]: pure builders of `Changes` frames from store pages.
//! - [`cursors`]: batches device cursors into the store.
//!
//! The engine knows nothing about sockets: it produces frames for sessions and publishes
//! committed batches to the hub, encoded once.

pub mod cursors;
pub mod pages;
pub mod session;

use std::collections::BTreeMap;
use std::sync::Arc;

use syncline_proto::v1::{self, ErrorCode, ServerFrame, server_frame};
use syncline_push::{EncodedFrame, Hub};

use crate::auth::{Authenticator, Identity};
use crate::config::{Partitioning, Settings, SourceSettings};
use crate::storage::{CommitListener, CommittedBatch, PartitionName, Store};

/// Limits applied to device subscriptions.
#[derive(Clone, Debug)]
pub struct DeviceLimits {
    pub default_page_size: u32,
    pub max_page_size: u32,
    /// Most encoded bytes of one catch-up page (one record or change larger than it goes
    /// alone).
    pub max_page_bytes: usize,
    pub default_window: u32,
    pub max_window: u32,
    pub max_subscriptions: usize,
    /// 0: no limit.
    pub max_connections_per_user: usize,
    pub max_frame_bytes: usize,
    pub heartbeat_ms: u32,
    pub idle_timeout_ms: u32,
    /// Time a new connection has to complete a Hello (enforced by the session layer; named
    /// in the Error frame of a connection that missed it).
    pub hello_timeout: std::time::Duration,
    pub max_pending_mutations: u64,
}

impl DeviceLimits {
    /// Returns the limits of `settings`.
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            default_page_size: settings.default_page_size,
            max_page_size: settings.max_page_size,
            max_page_bytes: settings.max_page_bytes,
            default_window: settings.default_window,
            max_window: settings.max_window,
            max_subscriptions: settings.max_subscriptions,
            max_connections_per_user: settings.max_connections_per_user,
            max_frame_bytes: settings.max_frame_bytes,
            heartbeat_ms: settings.heartbeat.as_millis() as u32,
            idle_timeout_ms: settings.idle_timeout.as_millis() as u32,
            hello_timeout: settings.hello_timeout,
            max_pending_mutations: settings.max_pending_mutations,
        }
    }
}

/// State shared by every device session.
pub struct SyncEngine {
    pub store: Arc<dyn Store>,
    pub hub: Arc<Hub<PartitionName>>,
    pub auth: Authenticator,
    pub sources: BTreeMap<String, SourceSettings>,
    pub limits: DeviceLimits,
    pub cursors: Arc<cursors::CursorRecorder>,
    /// Asks change capture to poll or load a partition now (a device subscribed).
    pub capture_requests: crate::channel::wiring::CaptureRequests,
    /// Dispatches device mutations to channels.
    pub mutations: Arc<crate::mutations::MutationDispatcher>,
    /// Open sessions per user, for the per-user connection cap.
    pub user_sessions: UserSessions,
    /// Routes device RPC calls to backend services.
    pub rpc: Arc<crate::rpc::RpcRouter>,
}

/// Counts each user's open sessions against a cap.
#[derive(Debug, Default)]
pub struct UserSessions {
    counts: Arc<dashmap::DashMap<String, usize>>,
}

/// One counted session of a user; released when dropped.
#[derive(Debug)]
pub struct UserSlot {
    counts: Arc<dashmap::DashMap<String, usize>>,
    user_id: String,
}

impl UserSessions {
    /// Counts a session of `user_id` unless the user already has `max` (0: no limit); returns
    /// the count it has otherwise.
    pub fn acquire(&self, user_id: &str, max: usize) -> Result<UserSlot, usize> {
        let mut count = self.counts.entry(user_id.to_owned()).or_insert(0);
        if max > 0 && *count >= max {
            return Err(*count);
        }
        *count += 1;
        drop(count);
        Ok(UserSlot { counts: self.counts.clone(), user_id: user_id.to_owned() })
    }

    /// Returns the sessions `user_id` has open.
    pub fn count(&self, user_id: &str) -> usize {
        self.counts.get(user_id).map_or(0, |count| *count)
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        if let Some(mut count) = self.counts.get_mut(&self.user_id) {
            *count = count.saturating_sub(1);
        }
        self.counts.remove_if(&self.user_id, |_, count| *count == 0);
    }
}

/// Why a device may not sync a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessError {
    UnknownSource,
    Forbidden(String),
}

impl SyncEngine {
    /// Resolves a subscription's partition for `user_id`, checking access: `user` partitions
    /// only for their owner, `app` partitions for everyone, `custom` ones only with an
    /// entitlement (none yet: channels grant them).
    pub fn resolve_partition(
        &self,
        identity: &Identity,
        source: &str,
        key: &str,
    ) -> Result<PartitionName, AccessError> {
        let user_id = identity.user_id.as_str();
        let partitioning = &self.sources.get(source).ok_or(AccessError::UnknownSource)?.partitioning;
        match partitioning {
            Partitioning::User => {
                if key.is_empty() || key == user_id {
                    Ok(PartitionName::new(source, user_id))
                } else {
                    Err(AccessError::Forbidden(format!("partition {source}/{key} belongs to another user")))
                }
            }
            Partitioning::App => {
                if key.is_empty() || key == syncline_proto::APP_PARTITION_KEY {
                    Ok(PartitionName::new(source, syncline_proto::APP_PARTITION_KEY))
                } else {
                    Err(AccessError::Forbidden(format!("{source} is an app source: its only partition key is \"*\"")))
                }
            }
            Partitioning::Custom => {
                if identity.entitlements.contains(&(source.to_owned(), key.to_owned())) {
                    Ok(PartitionName::new(source, key))
                } else {
                    Err(AccessError::Forbidden(format!("no entitlement to partition {source}/{key}")))
                }
            }
        }
    }

    /// Returns the sources a user may sync, for Welcome.
    pub fn source_infos(&self, identity: &Identity) -> Vec<v1::SourceInfo> {
        let user_id = identity.user_id.as_str();
        self.sources
            .iter()
            .map(|(name, source)| (name, &source.partitioning))
            .map(|(name, partitioning)| v1::SourceInfo {
                name: name.clone(),
                partitioning: partitioning.as_str().to_owned(),
                keys: match partitioning {
                    Partitioning::User => vec![user_id.to_owned()],
                    Partitioning::App => vec![syncline_proto::APP_PARTITION_KEY.to_owned()],
                    Partitioning::Custom => identity
                        .entitlements
                        .iter()
                        .filter(|(source, _)| source == name)
                        .map(|(_, key)| key.clone())
                        .collect(),
                },
            })
            .collect()
    }
}

/// Publishes committed changes to the hub as live `Changes` frames, encoded once: one frame
/// per partition per commit (a group commit of many small batches to one partition, e.g. a
/// burst of single-record pushes, goes out as one frame), split at
/// [`MAX_BATCH_CHANGES`](crate::storage::MAX_BATCH_CHANGES) changes and at `max_page_bytes`
/// encoded bytes, as catch-up pages are (`device.max_page_bytes`).
pub struct LivePublisher {
    pub hub: Arc<Hub<PartitionName>>,
    /// Most encoded bytes of one live frame (a single change larger than it goes alone).
    pub max_page_bytes: usize,
}

impl CommitListener for LivePublisher {
    fn committed(&self, batches: &[&CommittedBatch]) {
        for run in partition_runs(batches, self.max_page_bytes) {
            let (Some(first), Some(last)) = (run.first(), run.last()) else { continue };
            let changes = pages::live_changes(&run);
            let frame = EncodedFrame::new(ServerFrame { msg: Some(server_frame::Msg::Changes(changes)) });
            self.hub.publish(&first.batch.partition, first.first_seq(), last.last_seq(), &frame);
        }
    }
}

/// Splits one commit's batches into runs of one partition each (in the order partitions
/// first appear, each run in commit order), each one frame of at most `MAX_BATCH_CHANGES`
/// changes and `max_page_bytes` encoded bytes. A batch joins its partition's last run when
/// it fits whole; otherwise it starts a new one, split into several when it is too large
/// for one frame on its own (only such a split ends a frame inside a batch).
fn partition_runs<'a>(batches: &[&'a CommittedBatch], max_page_bytes: usize) -> Vec<Vec<pages::BatchSlice<'a>>> {
    use crate::storage::{Change, MAX_BATCH_CHANGES, PageFill};
    let mut runs: Vec<(Vec<pages::BatchSlice<'a>>, PageFill)> = Vec::new();
    let mut open: std::collections::HashMap<&PartitionName, usize> = std::collections::HashMap::new();
    for &batch in batches.iter().filter(|batch| !batch.changes.is_empty()) {
        let bytes = batch.changes.iter().map(Change::item_bytes).sum();
        if let Some(&index) = open.get(&batch.partition)
            && runs[index].1.admit_group(batch.changes.len(), bytes)
        {
            runs[index].0.push(pages::BatchSlice::whole(batch));
            continue;
        }
        let limit = pages::page_limit(&batch.partition, MAX_BATCH_CHANGES, max_page_bytes);
        let mut fill = PageFill::new(limit);
        if fill.admit_group(batch.changes.len(), bytes) {
            open.insert(&batch.partition, runs.len());
            runs.push((vec![pages::BatchSlice::whole(batch)], fill));
            continue;
        }
        for (slice, fill) in pages::split_batch(batch, limit) {
            open.insert(&batch.partition, runs.len());
            runs.push((vec![slice], fill));
        }
    }
    runs.into_iter().map(|(run, _)| run).collect()
}

/// Returns an `Error` frame.
pub fn error_frame(code: ErrorCode, message: impl Into<String>, fatal: bool) -> ServerFrame {
    ServerFrame {
        msg: Some(server_frame::Msg::Error(v1::Error {
            code: code as i32,
            message: message.into(),
            fatal,
            source: String::new(),
            key: String::new(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::config::DEFAULT_MAX_PAGE_BYTES;
    use crate::storage::{Change, PartitionState};

    fn batch(partition: &str, first_seq: u64, ids: &[&str]) -> CommittedBatch {
        let changes: Vec<Change> = ids
            .iter()
            .zip(first_seq..)
            .map(|(id, seq)| Change::Upsert(v1::Record { id: (*id).to_owned(), version: seq, ..Default::default() }))
            .collect();
        let last_seq = first_seq + ids.len() as u64 - 1;
        CommittedBatch {
            partition: PartitionName::new("Source", partition),
            first_seq,
            last_seq,
            changes,
            state: PartitionState { head: last_seq, total: last_seq, ..Default::default() },
        }
    }

    #[test]
    fn a_commit_becomes_one_run_per_partition_in_order() {
        let (a1, b1, a2, a3) =
            (batch("a", 1, &["x"]), batch("b", 1, &["y", "z"]), batch("a", 2, &["x"]), batch("a", 3, &["w"]));
        let runs = partition_runs(&[&a1, &b1, &a2, &a3], DEFAULT_MAX_PAGE_BYTES);
        let shape: Vec<Vec<(String, u64, u64)>> = runs
            .iter()
            .map(|run| run.iter().map(|s| (s.batch.partition.key.clone(), s.first_seq(), s.last_seq())).collect())
            .collect();
        assert_eq!(
            shape,
            vec![vec![("a".into(), 1, 1), ("a".into(), 2, 2), ("a".into(), 3, 3)], vec![("b".into(), 1, 2)]]
        );
        // One frame for partition a: 1..=3, the net effect (x once), the state after the last.
        let changes = pages::live_changes(&runs[0]);
        assert_eq!((changes.from, changes.to, changes.total), (1, 3, 3));
        let ids: Vec<&str> = changes.upserts.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["w", "x"]);
        assert_eq!(changes.upserts[1].version, 2, "the last change of x wins");
    }

    /// A batch of `count` new records of about `pad` bytes each, from `first_seq`.
    fn padded_batch(first_seq: u64, count: u64, pad: usize) -> CommittedBatch {
        let changes: Vec<Change> = (first_seq..first_seq + count)
            .map(|seq| {
                let fields = BTreeMap::from([("pad".to_owned(), v1::Value::string("x".repeat(pad)))]);
                Change::Upsert(v1::Record { id: format!("r{seq:04}"), version: seq, fields })
            })
            .collect();
        let last_seq = first_seq + count - 1;
        CommittedBatch {
            partition: PartitionName::new("Source", "a"),
            first_seq,
            last_seq,
            changes,
            state: PartitionState { head: last_seq, total: last_seq, checksum: 1000 + last_seq, horizon: 0 },
        }
    }

    /// Returns each run's frame: (from, to, checksum, records, encoded bytes).
    fn frames(runs: &[Vec<pages::BatchSlice<'_>>]) -> Vec<(u64, u64, u64, usize, usize)> {
        runs.iter()
            .map(|run| {
                let changes = pages::live_changes(run);
                let (from, to, checksum, records) = (changes.from, changes.to, changes.checksum, changes.upserts.len());
                let bytes = ServerFrame { msg: Some(server_frame::Msg::Changes(changes)) }.encoded_len();
                (from, to, checksum, records, bytes)
            })
            .collect()
    }

    #[test]
    fn a_batch_larger_than_a_frame_is_split_by_bytes_into_gap_free_frames() {
        let max = 16 * 1024;
        // 40 records of ~4,000 bytes: four to a frame. Then a small batch that fits the last one.
        let big = padded_batch(1, 40, 4000);
        let small = padded_batch(41, 1, 10);
        let runs = partition_runs(&[&big, &small], max);
        let frames = frames(&runs);
        assert_eq!(frames.len(), 10, "{frames:?}");
        let mut next = 1;
        for (index, &(from, to, checksum, records, bytes)) in frames.iter().enumerate() {
            assert_eq!(from, next, "frame {index} follows on without a gap");
            assert!(bytes <= max, "frame {index} is {bytes} bytes");
            assert_eq!(records as u64, to - from + 1);
            let ends_a_batch = to == big.last_seq || to == small.last_seq;
            assert_eq!(
                checksum,
                if ends_a_batch { 1000 + to } else { 0 },
                "frame {index}: a checksum only after a batch"
            );
            next = to + 1;
        }
        assert_eq!(next, 42, "every change once");
        assert_eq!(
            frames.last().map(|frame| (frame.0, frame.1)),
            Some((37, 41)),
            "the small batch joins the last slice"
        );
    }

    #[test]
    fn a_change_larger_than_a_frame_goes_alone() {
        let max = 16 * 1024;
        let (before, huge, after) = (padded_batch(1, 2, 100), padded_batch(3, 1, 64 * 1024), padded_batch(4, 2, 100));
        let frames = frames(&partition_runs(&[&before, &huge, &after], max));
        let ranges: Vec<(u64, u64)> = frames.iter().map(|frame| (frame.0, frame.1)).collect();
        assert_eq!(ranges, [(1, 2), (3, 3), (4, 5)]);
        assert!(frames[1].4 > max && frames[0].4 <= max && frames[2].4 <= max);
    }

    #[test]
    fn runs_are_split_at_the_batch_change_limit() {
        use crate::storage::MAX_BATCH_CHANGES;
        let ids: Vec<String> = (0..MAX_BATCH_CHANGES / 2 + 1).map(|i| format!("r{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let first = batch("a", 1, &ids);
        let second = batch("a", first.last_seq + 1, &ids);
        let third = batch("a", second.last_seq + 1, &["x"]);
        let runs = partition_runs(&[&first, &second, &third], usize::MAX);
        let sizes: Vec<usize> = runs.iter().map(Vec::len).collect();
        assert_eq!(sizes, [1, 2], "the second batch would pass the limit: a new run, which the third joins");
    }
}
