//! A device's local copy of one partition and the page rules of `device.proto`.
//!
//! [`PartitionReplica::apply`] is a pure function of the replica and one `Changes` frame:
//! snapshot pages (the first with `reset`, the cursor moving to `to` only after
//! `snapshot_done`), log pages and live pushes (a page ending at or before the cursor is a
//! duplicate; one starting after `cursor + 1` leaves a gap; one overlapping the cursor is
//! applied), deletes before upserts, and the checksum check at `to`.

use std::{collections::BTreeMap, fmt};

use syncline_proto::{
    checksum::Checksum,
    v1::{Changes, Record},
};

/// Names a partition: `(source, key)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId {
    /// Source name, e.g. `Account`.
    pub source: String,
    /// Partition key: a user id, `*`, or a custom key.
    pub key: String,
}

impl PartitionId {
    /// Returns the id of partition `key` of `source`.
    pub fn new(source: impl Into<String>, key: impl Into<String>) -> Self {
        Self { source: source.into(), key: key.into() }
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.source, self.key)
    }
}

/// A copy of a partition's records as the device holds them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PartitionView {
    /// The sequence the device has applied (0: nothing, or a snapshot still arriving).
    pub cursor: u64,
    /// The records by id.
    pub records: BTreeMap<String, Record>,
    /// Number of records.
    pub total: u64,
    /// Order-independent checksum of the records (see `syncline_proto::checksum`).
    pub checksum: u64,
}

/// The device's and the server's view of a partition disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChecksumMismatch {
    /// The cursor both views are at.
    pub cursor: u64,
    /// Records the server counts.
    pub expected_total: u64,
    /// Checksum the server computed.
    pub expected_checksum: u64,
    /// Records the device holds.
    pub local_total: u64,
    /// Checksum over the device's records.
    pub local_checksum: u64,
}

/// Why a page does not fit the replica although it is neither a duplicate nor a log gap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnexpectedPage {
    /// A snapshot page without `reset` arrived while no snapshot was being received.
    SnapshotWithoutReset,
    /// A snapshot page is at another sequence than the snapshot being received.
    SnapshotSequenceChanged {
        /// The sequence of the snapshot being received.
        expected: u64,
        /// The page's sequence.
        got: u64,
    },
    /// A log page or live push arrived before the snapshot being received was done.
    LogDuringSnapshot,
    /// A log page with `to < from`.
    EmptyRange,
}

/// What [`PartitionReplica::apply`] did with a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The page was applied. `changes` counts its upserts and deletes; `verified` is true when
    /// it carried a checksum and the replica matched it.
    Applied {
        /// Upserts plus deletes in the page.
        changes: u64,
        /// Whether a checksum was checked (and matched).
        verified: bool,
    },
    /// The page's range was already applied (`to <= cursor`); nothing changed. A page that
    /// overlaps the cursor (`from <= cursor < to`) is applied: its net effect is the state at
    /// `to` of every record it touches.
    Duplicate,
    /// Sequences between the cursor and the page are missing; nothing changed.
    Gap {
        /// `cursor + 1`.
        expected_from: u64,
        /// The page's `from`.
        from: u64,
    },
    /// The page does not fit the snapshot state; nothing changed.
    Unexpected(UnexpectedPage),
    /// The page was applied but the replica disagrees with the page's total and checksum:
    /// the partition must be dropped and synced again from cursor 0.
    ChecksumMismatch(ChecksumMismatch),
}

/// A device's copy of one partition: records, cursor, and the incrementally maintained
/// checksum and total.
#[derive(Clone, Debug, Default)]
pub struct PartitionReplica {
    records: BTreeMap<String, Record>,
    cursor: u64,
    checksum: Checksum,
    /// The sequence of the snapshot being received, between its `reset` and `snapshot_done`.
    snapshot: Option<u64>,
}

impl PartitionReplica {
    /// Returns an empty replica at cursor 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns a replica holding `view` (e.g. the device's persisted copy from an earlier
    /// run); the checksum and total are recomputed from the records.
    pub fn restore(view: PartitionView) -> Self {
        let mut checksum = Checksum::default();
        for record in view.records.values() {
            checksum.add(&record.id, record.version);
        }
        Self { records: view.records, cursor: view.cursor, checksum, snapshot: None }
    }

    /// Returns the sequence the replica has applied.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Returns the records by id.
    pub fn records(&self) -> &BTreeMap<String, Record> {
        &self.records
    }

    /// Returns the number of records.
    pub fn total(&self) -> u64 {
        self.records.len() as u64
    }

    /// Returns the checksum over the records.
    pub fn checksum(&self) -> u64 {
        self.checksum.0
    }

    /// Returns true between a snapshot's first page and its last.
    pub fn is_receiving_snapshot(&self) -> bool {
        self.snapshot.is_some()
    }

    /// Returns a copy of the replica's state.
    pub fn view(&self) -> PartitionView {
        PartitionView {
            cursor: self.cursor,
            records: self.records.clone(),
            total: self.total(),
            checksum: self.checksum(),
        }
    }

    /// Drops every record and returns to cursor 0.
    pub fn clear(&mut self) {
        self.records.clear();
        self.cursor = 0;
        self.checksum = Checksum::default();
        self.snapshot = None;
    }

    /// Applies one `Changes` frame following the page rules of `device.proto`.
    pub fn apply(&mut self, changes: &Changes) -> ApplyOutcome {
        if changes.snapshot {
            return self.apply_snapshot_page(changes);
        }
        if changes.to < changes.from {
            return ApplyOutcome::Unexpected(UnexpectedPage::EmptyRange);
        }
        if changes.to <= self.cursor {
            return ApplyOutcome::Duplicate;
        }
        if self.snapshot.is_some() {
            return ApplyOutcome::Unexpected(UnexpectedPage::LogDuringSnapshot);
        }
        if changes.from > self.cursor + 1 {
            return ApplyOutcome::Gap { expected_from: self.cursor + 1, from: changes.from };
        }
        let applied = self.apply_records(changes);
        self.cursor = changes.to;
        if changes.checksum == 0 {
            return ApplyOutcome::Applied { changes: applied, verified: false };
        }
        match self.verify(changes.total, changes.checksum) {
            Ok(()) => ApplyOutcome::Applied { changes: applied, verified: true },
            Err(mismatch) => ApplyOutcome::ChecksumMismatch(mismatch),
        }
    }

    /// Compares the replica with a total and checksum the server sent for the replica's
    /// cursor.
    pub fn verify(&self, total: u64, checksum: u64) -> Result<(), ChecksumMismatch> {
        if self.total() == total && self.checksum.0 == checksum {
            Ok(())
        } else {
            Err(ChecksumMismatch {
                cursor: self.cursor,
                expected_total: total,
                expected_checksum: checksum,
                local_total: self.total(),
                local_checksum: self.checksum.0,
            })
        }
    }

    fn apply_snapshot_page(&mut self, changes: &Changes) -> ApplyOutcome {
        if changes.reset {
            self.clear();
            self.snapshot = Some(changes.to);
        }
        match self.snapshot {
            None => return ApplyOutcome::Unexpected(UnexpectedPage::SnapshotWithoutReset),
            Some(expected) if expected != changes.to => {
                return ApplyOutcome::Unexpected(UnexpectedPage::SnapshotSequenceChanged { expected, got: changes.to });
            }
            Some(_) => {}
        }
        let applied = self.apply_records(changes);
        if changes.snapshot_done {
            self.snapshot = None;
            self.cursor = changes.to;
        }
        ApplyOutcome::Applied { changes: applied, verified: false }
    }

    /// Applies deletes, then upserts, keeping the checksum in step; returns how many there were.
    fn apply_records(&mut self, changes: &Changes) -> u64 {
        for id in &changes.deletes {
            if let Some(old) = self.records.remove(id) {
                self.checksum.remove(&old.id, old.version);
            }
        }
        for record in &changes.upserts {
            if let Some(old) = self.records.insert(record.id.clone(), record.clone()) {
                self.checksum.remove(&old.id, old.version);
            }
            self.checksum.add(&record.id, record.version);
        }
        (changes.deletes.len() + changes.upserts.len()) as u64
    }
}

#[cfg(test)]
mod tests;
