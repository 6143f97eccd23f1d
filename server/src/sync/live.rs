//! Live push: committed batches published to the hub as `Changes` frames, encoded once.

use std::sync::Arc;

use syncline_proto::v1::{ServerFrame, server_frame};
use syncline_push::{EncodedFrame, Hub, NodeBus};

use super::pages;
use crate::storage::{CommitListener, CommittedBatch, PartitionName};

/// Publishes committed changes to the hub as live `Changes` frames, encoded once: one frame
/// per partition per commit (a group commit of many small batches to one partition, e.g. a
/// burst of single-record pushes, goes out as one frame), split at
/// [`MAX_BATCH_CHANGES`](crate::storage::MAX_BATCH_CHANGES) changes and at `max_page_bytes`
/// encoded bytes, as catch-up pages are (`device.max_page_bytes`).
///
/// The frames go to a node bus: by default the hub itself (a single node, the in-process
/// bus, statically dispatched: nothing is added to the hot path), or e.g. a
/// [`RedisBus`](syncline_push::RedisBus) that also reaches the other nodes
/// ([`LivePublisher::through`]).
pub struct LivePublisher<B: NodeBus<PartitionName> + ?Sized = Hub<PartitionName>> {
    /// Where committed frames are published: the hub, or a node bus that feeds it.
    pub hub: Arc<B>,
    /// Most encoded bytes of one live frame (a single change larger than it goes alone).
    pub max_page_bytes: usize,
}

impl LivePublisher<dyn NodeBus<PartitionName>> {
    /// Returns a publisher whose frames go through `bus` (the Redis bus in cluster mode).
    pub fn through(bus: Arc<dyn NodeBus<PartitionName>>, max_page_bytes: usize) -> Self {
        Self { hub: bus, max_page_bytes }
    }
}

impl<B: NodeBus<PartitionName> + ?Sized + 'static> CommitListener for LivePublisher<B> {
    fn committed(&self, batches: &[&CommittedBatch]) {
        // The store calls this as soon as the commit is durable: the start of the push lag
        // each session observes when it writes the frame.
        let committed_at = std::time::Instant::now();
        for run in partition_runs(batches, self.max_page_bytes) {
            let (Some(first), Some(last)) = (run.first(), run.last()) else { continue };
            let changes = pages::live_changes(&run);
            let frame =
                EncodedFrame::live(ServerFrame { msg: Some(server_frame::Msg::Changes(changes)) }, committed_at);
            NodeBus::publish(&*self.hub, &first.batch.partition, first.first_seq(), last.last_seq(), &frame);
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

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use std::collections::BTreeMap;

    use syncline_proto::v1;

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

    /// Records what is published through it.
    #[derive(Default)]
    struct RecordingBus {
        published: parking_lot::Mutex<Vec<(String, u64, u64)>>,
    }

    impl NodeBus<PartitionName> for RecordingBus {
        fn publish(&self, key: &PartitionName, from: u64, to: u64, frame: &Arc<EncodedFrame>) {
            assert!(frame.committed_at().is_some(), "live frames carry their commit time");
            self.published.lock().push((key.key.clone(), from, to));
        }
    }

    #[test]
    fn commits_are_published_through_the_node_bus_once_per_partition_run() {
        let bus = Arc::new(RecordingBus::default());
        let publisher = LivePublisher::through(bus.clone(), DEFAULT_MAX_PAGE_BYTES);
        let (a1, b1, a2) = (batch("a", 1, &["x"]), batch("b", 1, &["y", "z"]), batch("a", 2, &["w"]));
        publisher.committed(&[&a1, &b1, &a2]);
        assert_eq!(*bus.published.lock(), vec![("a".to_owned(), 1, 2), ("b".to_owned(), 1, 2)]);
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
