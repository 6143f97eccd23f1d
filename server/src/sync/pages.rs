//! Builds `Changes` frames from store pages and committed batches, and bounds them in
//! items and encoded bytes. Pure functions.
//!
//! A frame's bytes are its upserts and deletes (each counted by
//! [`record_item_bytes`](crate::storage::record_item_bytes) and
//! [`Change::item_bytes`]) plus its [`frame_overhead_bytes`]; [`page_limit`] leaves the
//! overhead out of the items' budget, so a frame built within it encodes to at most the
//! bound it was given (unless its only item is larger on its own).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use prost::Message as _;
use syncline_proto::v1::{Changes, Record};
use syncline_push::codec::EncodedFrame;

use crate::storage::{Change, CommittedBatch, EncodedSnapshotPage, LogPage, PageFill, PageLimit, PartitionName};

/// Returns the most bytes a `Changes` frame of `partition` (in its `ServerFrame`) takes
/// besides its upserts and deletes, for a frame of up to `max_bytes`: every number
/// at its longest, every flag set, no links (catch-up pages and live pushes carry none),
/// and the `ServerFrame` key and length prefix.
pub fn frame_overhead_bytes(partition: &PartitionName, max_bytes: usize) -> usize {
    let longest = Changes {
        source: partition.source.clone(),
        key: partition.key.clone(),
        from: u64::MAX,
        to: u64::MAX,
        total: u64::MAX,
        remaining: u64::MAX,
        page: u64::MAX,
        checksum: u64::MAX,
        snapshot: true,
        reset: true,
        snapshot_done: true,
        ..Changes::default()
    };
    // `ServerFrame.changes` is field 2: a one-byte key.
    1 + prost::encoding::encoded_len_varint(max_bytes as u64) + longest.encoded_len()
}

/// Returns the limit of one frame of `partition`: at most `items` records or changes, whose
/// encoding fits `max_bytes` with the frame's overhead.
pub fn page_limit(partition: &PartitionName, items: usize, max_bytes: usize) -> PageLimit {
    PageLimit { items, bytes: max_bytes.saturating_sub(frame_overhead_bytes(partition, max_bytes)) }
}

/// Consecutive changes of one committed batch, `batch.changes[range]`: a live frame holds
/// whole batches, or part of one that is too large for a frame on its own.
#[derive(Clone, Debug)]
pub struct BatchSlice<'a> {
    pub batch: &'a CommittedBatch,
    pub range: Range<usize>,
}

impl<'a> BatchSlice<'a> {
    /// Returns the whole of `batch`.
    pub fn whole(batch: &'a CommittedBatch) -> Self {
        Self { batch, range: 0..batch.changes.len() }
    }

    /// Returns the changes of the slice.
    pub fn changes(&self) -> &'a [Change] {
        &self.batch.changes[self.range.clone()]
    }

    /// Returns the sequence of the slice's first change.
    pub fn first_seq(&self) -> u64 {
        self.changes().first().map_or(self.batch.first_seq, Change::seq)
    }

    /// Returns the sequence of the slice's last change.
    pub fn last_seq(&self) -> u64 {
        self.changes().last().map_or(self.batch.last_seq, Change::seq)
    }

    /// Returns true when the slice ends where its batch does (so the batch's state is the
    /// partition's state after the slice).
    pub fn ends_batch(&self) -> bool {
        self.range.end == self.batch.changes.len()
    }
}

/// Splits the changes of `batch` into consecutive slices that each fit `limit` (a change
/// larger than the limit on its own stands alone), each with its fill.
pub fn split_batch<'a>(batch: &'a CommittedBatch, limit: PageLimit) -> Vec<(BatchSlice<'a>, PageFill)> {
    let mut slices = Vec::new();
    let mut start = 0;
    while start < batch.changes.len() {
        let mut fill = PageFill::new(limit);
        let taken = batch.changes[start..].iter().take_while(|change| fill.admit(change.item_bytes())).count();
        // A page takes at least one item unless its item limit is 0: never loop on that.
        let end = start + taken.max(1);
        slices.push((BatchSlice { batch, range: start..end }, fill));
        start = end;
    }
    slices
}

/// Collapses a run of log changes to its net effect: the last change of each id wins, so a
/// device can apply all deletes and then all upserts of the page in any order.
pub fn net_effect<'a>(changes: impl IntoIterator<Item = &'a Change>) -> (Vec<Record>, Vec<String>) {
    let mut last: BTreeMap<&str, &Change> = BTreeMap::new();
    for change in changes {
        last.insert(change.id(), change);
    }
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    for change in last.into_values() {
        match change {
            Change::Upsert(record) => upserts.push(record.clone()),
            Change::Delete { id, .. } => deletes.push(id.clone()),
        }
    }
    (upserts, deletes)
}

/// Returns the live push of consecutive slices of committed batches of one partition
/// (`slices` is not empty, each starts where the one before ended): one frame for the whole
/// run, with the partition's state after the last. When the run ends inside a batch that
/// state is not known: the frame carries no checksum (0) and the total after the batch.
pub fn live_changes(slices: &[BatchSlice<'_>]) -> Changes {
    let (Some(first), Some(last)) = (slices.first(), slices.last()) else {
        return Changes::default();
    };
    debug_assert!(slices.windows(2).all(|pair| pair[1].first_seq() == pair[0].last_seq() + 1));
    let (upserts, deletes) = net_effect(slices.iter().flat_map(BatchSlice::changes));
    let state = &last.batch.state;
    Changes {
        source: first.batch.partition.source.clone(),
        key: first.batch.partition.key.clone(),
        from: first.first_seq(),
        to: last.last_seq(),
        upserts,
        deletes,
        total: state.total,
        checksum: if last.ends_batch() { state.checksum } else { 0 },
        ..Changes::default()
    }
}

/// Returns a catch-up page of log changes after `after`, numbered `page`.
pub fn log_changes(partition: &PartitionName, after: u64, log: &LogPage, page: u64, remaining: u64) -> Changes {
    let (upserts, deletes) = net_effect(&log.changes);
    let at_head = log.covered_to == log.state.head;
    Changes {
        source: partition.source.clone(),
        key: partition.key.clone(),
        from: after + 1,
        to: log.covered_to,
        upserts,
        deletes,
        total: log.state.total,
        remaining,
        page,
        // The checksum is known only for the state at the head.
        checksum: if at_head { log.state.checksum } else { 0 },
        ..Changes::default()
    }
}

/// Returns a snapshot page at sequence `at`, numbered `page`, as a frame spliced from the
/// page's encoded records: the header fields before `upserts` (field 5) encoded, the records'
/// bytes as they came from the store, then the header fields after it, which is byte for
/// byte what prost encodes for the decoded page.
pub fn snapshot_frame(
    partition: &PartitionName,
    at: u64,
    snapshot: &EncodedSnapshotPage,
    page: u64,
    first: bool,
    remaining: u64,
) -> Arc<EncodedFrame> {
    let before =
        Changes { source: partition.source.clone(), key: partition.key.clone(), from: 0, to: at, ..Changes::default() };
    let after = Changes {
        total: snapshot.state.total,
        remaining,
        page,
        snapshot: true,
        reset: first,
        snapshot_done: snapshot.done,
        ..Changes::default()
    };
    let mut changes = Vec::with_capacity(before.encoded_len() + snapshot.upserts.len() + after.encoded_len());
    before.encode_raw(&mut changes);
    changes.extend_from_slice(&snapshot.upserts);
    after.encode_raw(&mut changes);
    EncodedFrame::changes_from_encoded(&changes)
}

/// Estimates the pages still to come after a page of `page_items` items (pages are bounded
/// in bytes too, so the last page's count is the best guess of the next ones'), given the
/// items left: at least 1, since the caller knows more follow (a pull-mode device pulls
/// again only while `remaining` is above 0).
pub fn pages_remaining(items_left: u64, page_items: usize) -> u64 {
    items_left.div_ceil(page_items.max(1) as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SnapshotPage;

    fn upsert(id: &str, version: u64) -> Change {
        Change::Upsert(Record { id: id.into(), version, ..Record::default() })
    }

    /// A record with a `pad` field of `pad` bytes.
    fn padded(id: &str, version: u64, pad: usize) -> Record {
        let fields = BTreeMap::from([("pad".to_owned(), syncline_proto::v1::Value::string("x".repeat(pad)))]);
        Record { id: id.into(), version, fields }
    }

    #[test]
    fn a_spliced_snapshot_frame_is_the_encoding_of_its_changes() {
        use syncline_proto::v1::{ServerFrame, server_frame};
        let partition = PartitionName::new("Account", "*");
        let records: Vec<Record> = (0..20).map(|i| padded(&format!("r{i:02}"), i, (i as usize * 13) % 90)).collect();
        let state = crate::storage::PartitionState { head: 40, horizon: 0, total: 20, checksum: 7 };
        let page = SnapshotPage { records: records.clone(), done: false, state };
        let frame = snapshot_frame(&partition, 40, &EncodedSnapshotPage::from_page(page), 3, true, 2);
        let expected = ServerFrame {
            msg: Some(server_frame::Msg::Changes(Changes {
                source: "Account".into(),
                key: "*".into(),
                to: 40,
                total: 20,
                remaining: 2,
                page: 3,
                snapshot: true,
                reset: true,
                upserts: records,
                ..Changes::default()
            })),
        };
        // Byte for byte what prost encodes, so devices see no difference at all.
        assert_eq!(frame.binary().as_ref(), expected.encode_to_vec().as_slice());
        assert_eq!(frame.frame(), &expected);
        assert_eq!(frame.kind(), syncline_push::stats::server_kind(expected.msg.as_ref()));
    }

    #[test]
    fn item_bytes_add_up_to_the_encoded_upserts_and_deletes() {
        // Guards the assumption of `record_item_bytes` and `delete_item_bytes`: both fields
        // are numbered below 16 and hold their items length-delimited.
        let records: Vec<Record> = (0..50).map(|i| padded(&format!("r{i}"), i, (i as usize * 37) % 300)).collect();
        let deletes: Vec<String> = (0..50).map(|i| format!("deleted-{i}")).collect();
        let upsert_bytes: usize = records.iter().map(crate::storage::record_item_bytes).sum();
        let delete_bytes: usize = deletes.iter().map(|id| crate::storage::delete_item_bytes(id)).sum();
        assert_eq!(Changes { upserts: records, ..Changes::default() }.encoded_len(), upsert_bytes);
        assert_eq!(Changes { deletes, ..Changes::default() }.encoded_len(), delete_bytes);
    }

    #[test]
    fn a_page_filled_to_its_limit_encodes_within_the_bound() {
        let partition = PartitionName::new("Account", "a-rather-long-partition-key");
        for max_bytes in [1024, 4096, 64 * 1024, 256 * 1024] {
            let limit = page_limit(&partition, usize::MAX, max_bytes);
            let mut fill = PageFill::new(limit);
            let mut records = Vec::new();
            for i in 0u64.. {
                let record = padded(&format!("r{i:06}"), u64::MAX - i, (i as usize * 53) % 700);
                if !fill.admit(crate::storage::record_item_bytes(&record)) {
                    break;
                }
                records.push(record);
            }
            assert!(records.len() > 1, "{max_bytes}: room for more than one record");
            // Every header field at its longest.
            let state = crate::storage::PartitionState { head: u64::MAX, horizon: 0, total: u64::MAX, checksum: 1 };
            let page = EncodedSnapshotPage::from_page(SnapshotPage { records, done: true, state });
            let size = snapshot_frame(&partition, u64::MAX, &page, u64::MAX, true, u64::MAX).encoded_len();
            assert!(size <= max_bytes, "{max_bytes}: the page encodes to {size} bytes");
            assert!(size + 800 > max_bytes, "{max_bytes}: the page ends within one record of the bound ({size})");
        }
    }

    #[test]
    fn a_record_larger_than_the_bound_fills_a_page_alone() {
        let partition = PartitionName::new("Account", "*");
        let limit = page_limit(&partition, 500, 1024);
        let mut fill = PageFill::new(limit);
        assert!(fill.admit(crate::storage::record_item_bytes(&padded("big", 1, 4096))));
        assert!(!fill.admit(crate::storage::record_item_bytes(&padded("small", 2, 0))));
        assert_eq!(fill.items(), 1);
    }

    /// Issue 13: the record limits fit the default device frame, so a valid record can always
    /// be written in one `Mutate` and delivered in one `Changes` frame (or `MutationResult`).
    #[test]
    fn a_record_at_every_limit_fits_one_default_device_frame() {
        use syncline_proto::record::{MAX_RECORD_BYTES, MAX_RECORD_ID_BYTES};
        use syncline_proto::v1::{ClientFrame, Link, Mutate, MutationResult, ServerFrame, client_frame, server_frame};

        use crate::config::DEFAULT_MAX_FRAME_BYTES;

        // The longest names the server accepts: 64-byte sources, 256-byte keys, 128-byte
        // mutation ids.
        let partition = PartitionName::new("s".repeat(64), "k".repeat(256));
        let mut record = padded(&"i".repeat(MAX_RECORD_ID_BYTES), u64::MAX, 0);
        // Three length prefixes (the string, its Value, the map entry) grow from one byte to
        // three around 1 MB.
        let pad = MAX_RECORD_BYTES - record.content_bytes() - 6;
        record = padded(&record.id, u64::MAX, pad);
        assert_eq!(record.content_bytes(), MAX_RECORD_BYTES);
        assert_eq!(record.validate(), Ok(()));

        let delivered =
            frame_overhead_bytes(&partition, DEFAULT_MAX_FRAME_BYTES) + crate::storage::record_item_bytes(&record);
        assert!(delivered <= DEFAULT_MAX_FRAME_BYTES, "a Changes frame of {delivered} bytes");
        let mutate = ClientFrame {
            msg: Some(client_frame::Msg::Mutate(Mutate {
                mutation_id: "m".repeat(128),
                source: partition.source.clone(),
                key: partition.key.clone(),
                op: i32::MAX,
                id: record.id.clone(),
                fields: record.fields.clone(),
                base_version: u64::MAX,
            })),
        };
        assert!(mutate.encoded_len() <= DEFAULT_MAX_FRAME_BYTES, "a Mutate frame of {} bytes", mutate.encoded_len());
        let result = ServerFrame {
            msg: Some(server_frame::Msg::MutationResult(MutationResult {
                mutation_id: "m".repeat(128),
                ok: true,
                link: Some(Link { temp_id: record.id.clone(), id: record.id.clone() }),
                record: Some(record),
                error: None,
            })),
        };
        assert!(result.encoded_len() <= DEFAULT_MAX_FRAME_BYTES, "a MutationResult of {} bytes", result.encoded_len());
    }

    #[test]
    fn pages_remaining_is_never_0_before_the_last_page() {
        assert_eq!(pages_remaining(0, 10), 1, "more follow even when the estimate says none");
        assert_eq!(pages_remaining(25, 10), 3);
        assert_eq!(pages_remaining(25, 0), 25, "an empty page counts as one item a page");
    }

    #[test]
    fn the_last_change_of_an_id_wins() {
        let changes = vec![
            upsert("a", 1),
            Change::Delete { id: "a".into(), seq: 2 },
            upsert("b", 3),
            upsert("b", 4),
            Change::Delete { id: "c".into(), seq: 5 },
            upsert("c", 6),
        ];
        let (upserts, deletes) = net_effect(&changes);
        assert_eq!(deletes, vec!["a".to_owned()]);
        let versions: Vec<(String, u64)> = upserts.into_iter().map(|r| (r.id, r.version)).collect();
        assert_eq!(versions, vec![("b".into(), 4), ("c".into(), 6)]);
    }

    proptest::proptest! {
        /// Applying a page's net effect (deletes, then upserts) gives the same state as
        /// applying its changes one by one.
        #[test]
        fn net_effect_equals_sequential_application(
            ops in proptest::collection::vec((0u8..6, proptest::bool::ANY), 0..40),
        ) {
            let mut sequential = BTreeMap::new();
            let mut changes = Vec::new();
            for (seq, (id, is_delete)) in ops.into_iter().enumerate() {
                let id = format!("r{id}");
                let seq = seq as u64 + 1;
                if is_delete {
                    sequential.remove(&id);
                    changes.push(Change::Delete { id, seq });
                } else {
                    sequential.insert(id.clone(), seq);
                    changes.push(upsert(&id, seq));
                }
            }
            let (upserts, deletes) = net_effect(&changes);
            let mut netted: BTreeMap<String, u64> = BTreeMap::new();
            for id in deletes {
                netted.remove(&id);
            }
            for record in upserts {
                netted.insert(record.id, record.version);
            }
            proptest::prop_assert_eq!(netted, sequential);
        }
    }
}
