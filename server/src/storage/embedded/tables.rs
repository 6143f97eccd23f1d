//! The embedded store's tables (see the layout in the module docs of [`super`]) and the
//! codecs of their values.

use std::path::Path;

use prost::Message;
use redb::{DatabaseError, ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use syncline_proto::v1::Record;

use crate::storage::{
    Change, EncodedSnapshotPage, PartitionName, PartitionState, SnapshotPage, StoreError, StoreResult,
};

/// Version of the stored layout described in the module docs; an older file is migrated, a
/// newer one is refused rather than misread.
pub(super) const FORMAT_VERSION: u64 = 3;

pub(super) const STORE_META: TableDefinition<&str, u64> = TableDefinition::new("store_meta");
pub(super) const PARTITION_IDS: TableDefinition<(&str, &str), u64> = TableDefinition::new("partition_ids");
pub(super) const PARTITION_META: TableDefinition<u64, (u64, u64, u64, u64)> = TableDefinition::new("partition_meta");
pub(super) const RECORDS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("records");
pub(super) const LOG: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("log");
pub(super) const CURSORS: TableDefinition<(&str, &str, &str), u64> = TableDefinition::new("cursors");
pub(super) const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
pub(super) const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
/// Devices by user: (user id, client id) → () (format 3).
pub(super) const DEVICES_BY_USER: TableDefinition<(&str, &str), ()> = TableDefinition::new("devices_by_user");
/// Operator commands per device: (client id, queue position) → prost `CommandValue` (format 3).
pub(super) const DEVICE_COMMANDS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("device_commands");
pub(super) const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");
pub(super) const CAPTURE_POSITIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("capture_positions");

pub(super) const FORMAT_VERSION_KEY: &str = "format_version";
pub(super) const NEXT_PARTITION_ID_KEY: &str = "next_partition_id";

pub(super) const LOG_KIND_UPSERT: u8 = 1;
pub(super) const LOG_KIND_DELETE: u8 = 2;

/// Reads a partition's id and state in a (read or write) transaction.
pub(super) fn read_partition(
    txn: &impl OpenTables,
    name: &PartitionName,
) -> StoreResult<Option<(u64, PartitionState)>> {
    let ids = txn.partition_ids()?;
    let Some(id) = ids.get((name.source.as_str(), name.key.as_str())).map_err(store_error)?.map(|id| id.value()) else {
        return Ok(None);
    };
    let meta = txn.partition_meta()?;
    let state = meta.get(id).map_err(store_error)?;
    Ok(Some((id, state.map_or_else(PartitionState::default, |v| state_from(v.value())))))
}

/// Opens the tables [`read_partition`] needs in either kind of transaction (redb's two
/// `open_table`s return different types).
pub(super) trait OpenTables {
    fn partition_ids(&self) -> StoreResult<impl ReadableTable<(&'static str, &'static str), u64>>;
    fn partition_meta(&self) -> StoreResult<impl ReadableTable<u64, (u64, u64, u64, u64)>>;
}

impl OpenTables for ReadTransaction {
    fn partition_ids(&self) -> StoreResult<impl ReadableTable<(&'static str, &'static str), u64>> {
        self.open_table(PARTITION_IDS).map_err(store_error)
    }

    fn partition_meta(&self) -> StoreResult<impl ReadableTable<u64, (u64, u64, u64, u64)>> {
        self.open_table(PARTITION_META).map_err(store_error)
    }
}

impl OpenTables for WriteTransaction {
    fn partition_ids(&self) -> StoreResult<impl ReadableTable<(&'static str, &'static str), u64>> {
        self.open_table(PARTITION_IDS).map_err(store_error)
    }

    fn partition_meta(&self) -> StoreResult<impl ReadableTable<u64, (u64, u64, u64, u64)>> {
        self.open_table(PARTITION_META).map_err(store_error)
    }
}

pub(super) fn state_from((head, horizon, total, checksum): (u64, u64, u64, u64)) -> PartitionState {
    PartitionState { head, horizon, total, checksum }
}

pub(super) fn state_value(state: &PartitionState) -> (u64, u64, u64, u64) {
    (state.head, state.horizon, state.total, state.checksum)
}

/// Returns the prost encoding of the record's fields alone (id empty, version 0).
pub(in crate::storage) fn encode_fields(record: &mut Record) -> Vec<u8> {
    let id = std::mem::take(&mut record.id);
    let version = std::mem::take(&mut record.version);
    let fields = record.encode_to_vec();
    record.id = id;
    record.version = version;
    fields
}

/// Returns a `records` value: version, then the encoded fields.
pub(in crate::storage) fn record_value(version: u64, fields: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + fields.len());
    value.extend_from_slice(&version.to_le_bytes());
    value.extend_from_slice(fields);
    value
}

/// Splits a `records` value into its version and encoded fields.
pub(in crate::storage) fn split_record_value(value: &[u8]) -> StoreResult<(u64, &[u8])> {
    let (version, fields) = value
        .split_first_chunk::<8>()
        .ok_or_else(|| StoreError::Corrupt("a stored record is shorter than its version".to_owned()))?;
    Ok((u64::from_le_bytes(*version), fields))
}

pub(in crate::storage) fn decode_record(id: &str, value: &[u8]) -> StoreResult<Record> {
    let (version, fields) = split_record_value(value)?;
    let mut record = Record::decode(fields).map_err(|e| corrupt("record", &e))?;
    record.id = id.to_owned();
    record.version = version;
    Ok(record)
}

/// A visit of each stored record value of a snapshot page, in id order: the backends' scan,
/// answering whether the snapshot is complete and the partition's state.
pub(in crate::storage) type SnapshotScan<'a> = &'a mut dyn FnMut(&str, &[u8]) -> StoreResult<()>;

/// The snapshot page a backend's scan of stored record values gives, decoded (both backends
/// store records as [`record_value`]).
pub(in crate::storage) fn decoded_snapshot(
    scan: impl FnOnce(SnapshotScan<'_>) -> StoreResult<(bool, PartitionState)>,
) -> StoreResult<SnapshotPage> {
    let mut records = Vec::new();
    let (done, state) = scan(&mut |id, value| {
        records.push(decode_record(id, value)?);
        Ok(())
    })?;
    Ok(SnapshotPage { records, done, state })
}

/// The same page as the bytes catch-up frames are spliced from: no record decoded.
pub(in crate::storage) fn encoded_snapshot(
    scan: impl FnOnce(SnapshotScan<'_>) -> StoreResult<(bool, PartitionState)>,
) -> StoreResult<EncodedSnapshotPage> {
    let mut page = EncodedSnapshotPage::default();
    let mut last_id = None;
    let (done, state) = scan(&mut |id, value| {
        let (version, fields) = split_record_value(value)?;
        page.push_parts(id, version, fields);
        last_id = Some(id.to_owned());
        Ok(())
    })?;
    Ok(EncodedSnapshotPage { done, state, last_id, ..page })
}

pub(in crate::storage) fn upsert_log_value(id: &str, fields: &[u8]) -> Vec<u8> {
    let id_len = u16::try_from(id.len()).expect("validated ids are at most MAX_RECORD_ID_BYTES");
    let mut value = Vec::with_capacity(3 + id.len() + fields.len());
    value.push(LOG_KIND_UPSERT);
    value.extend_from_slice(&id_len.to_le_bytes());
    value.extend_from_slice(id.as_bytes());
    value.extend_from_slice(fields);
    value
}

pub(in crate::storage) fn delete_log_value(id: &str) -> Vec<u8> {
    let mut value = Vec::with_capacity(1 + id.len());
    value.push(LOG_KIND_DELETE);
    value.extend_from_slice(id.as_bytes());
    value
}

/// A `log` value, split but not decoded.
pub(in crate::storage) enum LogValue<'a> {
    Upsert { id: &'a str, fields: &'a [u8] },
    Delete { id: &'a str },
}

pub(in crate::storage) fn split_log_value(value: &[u8]) -> StoreResult<LogValue<'_>> {
    let bad = || StoreError::Corrupt("a log entry is malformed".to_owned());
    let (kind, rest) = value.split_first().ok_or_else(bad)?;
    match *kind {
        LOG_KIND_UPSERT => {
            let (id_len, rest) = rest.split_first_chunk::<2>().ok_or_else(bad)?;
            let id_len = usize::from(u16::from_le_bytes(*id_len));
            if rest.len() < id_len {
                return Err(bad());
            }
            let (id, fields) = rest.split_at(id_len);
            let id = std::str::from_utf8(id).map_err(|_| bad())?;
            Ok(LogValue::Upsert { id, fields })
        }
        LOG_KIND_DELETE => Ok(LogValue::Delete { id: std::str::from_utf8(rest).map_err(|_| bad())? }),
        _ => Err(bad()),
    }
}

pub(in crate::storage) fn decode_log_entry(seq: u64, value: &[u8]) -> StoreResult<Change> {
    match split_log_value(value)? {
        LogValue::Upsert { id, fields } => {
            let mut record = Record::decode(fields).map_err(|e| corrupt("log entry", &e))?;
            record.id = id.to_owned();
            record.version = seq;
            Ok(Change::Upsert(record))
        }
        LogValue::Delete { id } => Ok(Change::Delete { id: id.to_owned(), seq }),
    }
}

pub(in crate::storage) fn corrupt(what: &str, error: &prost::DecodeError) -> StoreError {
    StoreError::Corrupt(format!("cannot decode a stored {what}: {error}"))
}

pub(super) fn open_error(path: &Path, error: DatabaseError) -> StoreError {
    match error {
        DatabaseError::DatabaseAlreadyOpen => StoreError::Locked { path: path.display().to_string() },
        other => store_error(other),
    }
}

/// Maps a redb failure to the store's error, keeping corruption apart from I/O.
pub(super) fn store_error(error: impl Into<redb::Error>) -> StoreError {
    let error: redb::Error = error.into();
    match error {
        redb::Error::Corrupted(detail) => StoreError::Corrupt(detail),
        redb::Error::UpgradeRequired(_)
        | redb::Error::TableTypeMismatch { .. }
        | redb::Error::TypeDefinitionChanged { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TableIsNotMultimap(_) => StoreError::Corrupt(error.to_string()),
        // redb's error is non-exhaustive: anything else is a failure to use the file.
        other => StoreError::Io(other.to_string()),
    }
}

/// Returns an equal error for each batch of a failed group.
pub(super) fn same_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::Locked { path } => StoreError::Locked { path: path.clone() },
        StoreError::InvalidRecord(error) => StoreError::InvalidRecord(error.clone()),
        StoreError::DuplicateId { id } => StoreError::DuplicateId { id: id.clone() },
        StoreError::BatchTooLarge { changes } => StoreError::BatchTooLarge { changes: *changes },
        StoreError::UserExists { name } => StoreError::UserExists { name: name.clone() },
        StoreError::Io(detail) => StoreError::Io(detail.clone()),
        StoreError::Corrupt(detail) => StoreError::Corrupt(detail.clone()),
        StoreError::Closed => StoreError::Closed,
        StoreError::QueueFull { pending } => StoreError::QueueFull { pending: *pending },
        StoreError::NotDurable { detail } => StoreError::NotDurable { detail: detail.clone() },
        StoreError::Contention { subject } => StoreError::Contention { subject: subject.clone() },
        StoreError::LeaseLost { lease } => StoreError::LeaseLost { lease: lease.clone() },
    }
}
