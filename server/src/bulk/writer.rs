//! Writes one partition into a SQLite file at one consistent sequence, streaming from the
//! store in pages (never the whole partition in memory), in one transaction, to a temporary
//! file that is synced and then renamed into place: a crash leaves at most a temporary file,
//! which the next start deletes, never a half file that could be served.
//!
//! Consistency: the snapshot pages are read by id while the partition may move, so a page
//! may hold records newer than the sequence S the read started at. The writer then applies
//! the log after S (net effect per id) until a log read ends at the head it reports: every
//! record changed after S then has its state at that head H, every other record never
//! changed between S and H, so the file is the partition exactly at H. Its checksum and
//! record count are checked against the store's own for H before the file is kept.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension as _, params};
use syncline_proto::bulk_file::{self, meta};
use syncline_proto::checksum::Checksum;
use syncline_proto::v1::Record;

use super::BulkError;
use crate::storage::{Change, PageLimit, PartitionName, PartitionStore};

/// Records (or log changes) read from the store at a time.
pub const READ_BATCH: usize = 2_000;

/// Most bytes of records (or changes) read from the store at a time: with large records, a
/// read holds a few MB, never the partition.
const READ_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// The bound of one read.
const READ_LIMIT: PageLimit = PageLimit { items: READ_BATCH, bytes: READ_BATCH_BYTES };

/// Log pages read to reach the head after the snapshot: a partition that keeps moving
/// faster than the writer reads gets a typed error instead of an endless write.
const MAX_CATCH_UP_PAGES: usize = 1_000;

/// SQLite's page cache while writing a file, in KiB: the B-trees are filled left to right,
/// so only the right edge of each needs to stay cached; beyond that, pages go to the file.
const WRITE_CACHE_KIB: u32 = 8 * 1024;

/// Attempts at a snapshot when compaction passes the sequence it started at.
const MAX_ATTEMPTS: usize = 3;

/// What a written file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenSnapshot {
    pub sequence: u64,
    pub checksum: u64,
    pub record_count: u64,
    pub bytes: u64,
}

/// Writes `partition` to `path` (through `path` + `.tmp`) and returns what it holds.
pub fn write_partition(
    store: &dyn PartitionStore,
    partition: &PartitionName,
    path: &Path,
    created_ms: i64,
) -> Result<WrittenSnapshot, BulkError> {
    let temp = path.with_extension("tmp");
    remove_if_present(&temp)?;
    let written = write_temp(store, partition, &temp, created_ms);
    let written = match written {
        Ok(written) => written,
        Err(error) => {
            let _ = std::fs::remove_file(&temp);
            return Err(error);
        }
    };
    sync_file(&temp)?;
    std::fs::rename(&temp, path).map_err(|error| BulkError::io("rename the bulk file into place", error))?;
    if let Some(dir) = path.parent() {
        sync_file(dir)?;
    }
    let bytes = std::fs::metadata(path).map_err(|error| BulkError::io("read the bulk file's size", error))?.len();
    Ok(WrittenSnapshot { bytes, ..written })
}

fn write_temp(
    store: &dyn PartitionStore,
    partition: &PartitionName,
    temp: &Path,
    created_ms: i64,
) -> Result<WrittenSnapshot, BulkError> {
    let mut connection = Connection::open(temp)?;
    // The file is private until renamed and synced as a whole afterwards: no journal and
    // no syncs of SQLite's own are needed while writing it.
    connection.execute_batch(&format!(
        "PRAGMA page_size = {}; PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; \
         PRAGMA locking_mode = EXCLUSIVE; PRAGMA cache_size = -{WRITE_CACHE_KIB};",
        bulk_file::PAGE_SIZE
    ))?;
    connection.execute_batch(bulk_file::SCHEMA)?;
    let transaction = connection.transaction()?;
    let mut attempt = 0;
    let written = loop {
        attempt += 1;
        match snapshot_into(store, partition, &transaction)? {
            Some(written) => break written,
            None if attempt < MAX_ATTEMPTS => {
                tracing::debug!(%partition, attempt, "compaction passed the bulk snapshot; starting over");
                transaction.execute("DELETE FROM records", [])?;
            }
            None => return Err(BulkError::Moving { partition: partition.to_string() }),
        }
    };
    let values = [
        (meta::FORMAT_VERSION, bulk_file::FORMAT_VERSION.to_string()),
        (meta::SOURCE, partition.source.clone()),
        (meta::KEY, partition.key.clone()),
        (meta::SEQUENCE, written.sequence.to_string()),
        (meta::CHECKSUM, written.checksum.to_string()),
        (meta::RECORD_COUNT, written.record_count.to_string()),
        (meta::CREATED_MS, created_ms.to_string()),
    ];
    for (name, value) in values {
        transaction.execute("INSERT INTO meta (name, value) VALUES (?1, ?2)", params![name, value])?;
    }
    transaction.commit()?;
    connection.close().map_err(|(_, error)| error)?;
    Ok(written)
}

/// Reads the partition into the open transaction; `None` when compaction passed the
/// sequence the read started at (the caller starts over).
fn snapshot_into(
    store: &dyn PartitionStore,
    partition: &PartitionName,
    transaction: &Connection,
) -> Result<Option<WrittenSnapshot>, BulkError> {
    let mut records = RecordsTable { transaction, count: 0, checksum: Checksum::default(), fields: Vec::new() };
    let mut at = store.partition_state(partition)?.head;
    let mut after_id: Option<String> = None;
    loop {
        let page = store.read_snapshot(partition, after_id.as_deref(), READ_LIMIT)?;
        for record in &page.records {
            records.insert_new(record)?;
        }
        after_id = page.records.last().map(|record| record.id.clone()).or(after_id);
        if page.done || page.records.is_empty() {
            break;
        }
    }
    for _ in 0..MAX_CATCH_UP_PAGES {
        let log = store.read_log(partition, at, READ_LIMIT)?;
        if at < log.state.horizon {
            return Ok(None);
        }
        for change in &log.changes {
            match change {
                Change::Upsert(record) => records.upsert(record)?,
                Change::Delete { id, .. } => records.delete(id)?,
            }
        }
        at = log.covered_to;
        if log.covered_to == log.state.head {
            let state = log.state;
            if records.count != state.total || records.checksum.0 != state.checksum {
                return Err(BulkError::Inconsistent {
                    partition: partition.to_string(),
                    expected: (state.total, state.checksum),
                    written: (records.count, records.checksum.0),
                });
            }
            return Ok(Some(WrittenSnapshot {
                sequence: at,
                checksum: records.checksum.0,
                record_count: records.count,
                bytes: 0,
            }));
        }
    }
    Err(BulkError::Moving { partition: partition.to_string() })
}

/// The `records` table being filled, with the count and checksum of what it holds.
struct RecordsTable<'t> {
    transaction: &'t Connection,
    count: u64,
    checksum: Checksum,
    /// The encoded fields of the record being written (one buffer, reused).
    fields: Vec<u8>,
}

impl RecordsTable<'_> {
    /// Inserts a record read from the snapshot (ids come in ascending order, once each).
    fn insert_new(&mut self, record: &Record) -> Result<(), BulkError> {
        self.write(record)?;
        self.count += 1;
        self.checksum.add(&record.id, record.version);
        Ok(())
    }

    /// Applies a log upsert: replaces the record if the file has it.
    fn upsert(&mut self, record: &Record) -> Result<(), BulkError> {
        self.delete(&record.id)?;
        self.insert_new(record)
    }

    /// Applies a log delete.
    fn delete(&mut self, id: &str) -> Result<(), BulkError> {
        let old: Option<i64> = self
            .transaction
            .prepare_cached("DELETE FROM records WHERE id = ?1 RETURNING version")?
            .query_row([id], |row| row.get(0))
            .optional()?;
        if let Some(version) = old {
            self.count -= 1;
            self.checksum.remove(id, version as u64);
        }
        Ok(())
    }

    fn write(&mut self, record: &Record) -> Result<(), BulkError> {
        self.fields.clear();
        bulk_file::encode_fields(&record.fields, &mut self.fields);
        let version = i64::try_from(record.version)
            .map_err(|_| BulkError::Internal(format!("record {} has a version past i64", record.id)))?;
        self.transaction.prepare_cached(bulk_file::UPSERT_RECORD)?.execute(params![
            record.id,
            version,
            self.fields.as_slice()
        ])?;
        Ok(())
    }
}

fn remove_if_present(path: &Path) -> Result<(), BulkError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(BulkError::io("remove a stale temporary bulk file", error)),
    }
}

/// Syncs a file or directory to disk.
pub(super) fn sync_file(path: &Path) -> Result<(), BulkError> {
    std::fs::File::open(path)
        .and_then(|file| file.sync_all())
        .map_err(|error| BulkError::io(format!("sync {}", path.display()), error))
}

#[cfg(test)]
mod tests;
