//! The schema of a bulk snapshot file: one SQLite database per partition, written by the
//! server and read by devices (`docs/BULK.md` explains each column, the index and why the
//! fields are one protobuf column). The server's writer and the device library's reader both
//! use these constants and the fields codec below, so the two cannot drift apart.

use std::collections::BTreeMap;

use prost::Message as _;

use crate::v1::{Record, Value};

/// The format version in the `meta` table; a reader refuses other versions. Version 1 held
/// the fields as typed JSON text and had no index (files of about 260 bytes a record for the
/// demo's accounts); version 2 holds them as protobuf and indexes `(id, version)`.
pub const FORMAT_VERSION: u32 = 2;

/// SQLite page size of a file: larger pages mean fewer page headers and reads for the same
/// records (the file is written once and read front to back, never updated in place).
pub const PAGE_SIZE: u32 = 16_384;

/// The statements that create an empty file's tables.
///
/// `records_check` covers `(id, version)`: a device that checks a file's records against
/// its checksum (or keeps the file as its store and only needs ids and versions) reads this
/// narrow index instead of every row with its fields.
pub const SCHEMA: &str = "\
CREATE TABLE meta (name TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE records (
    id TEXT PRIMARY KEY NOT NULL,
    version INTEGER NOT NULL,
    fields BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX records_check ON records (id, version);";

/// Inserts or replaces one record: `(id, version, fields)`, the fields encoded by
/// [`encode_fields`].
pub const UPSERT_RECORD: &str = "INSERT OR REPLACE INTO records (id, version, fields) VALUES (?1, ?2, ?3)";

/// Reads every record's id and version in id order from the covering index only.
pub const SELECT_IDS_AND_VERSIONS: &str = "SELECT id, version FROM records INDEXED BY records_check";

/// Reads every record in id order.
pub const SELECT_RECORDS: &str = "SELECT id, version, fields FROM records";

/// Appends the `fields` column of a record to `buf`: the protobuf encoding of a
/// `syncline.v1.Record` that has only its `fields` set (the same bytes as that field of the
/// record on the wire), so any protobuf library with `common.proto` reads it back.
pub fn encode_fields(fields: &BTreeMap<String, Value>, buf: &mut Vec<u8>) {
    prost::encoding::btree_map::encode(
        prost::encoding::string::encode,
        prost::encoding::string::encoded_len,
        prost::encoding::message::encode,
        prost::encoding::message::encoded_len,
        RECORD_FIELDS_TAG,
        fields,
        buf,
    );
}

/// Reads a `fields` column written by [`encode_fields`].
pub fn decode_fields(bytes: &[u8]) -> Result<BTreeMap<String, Value>, prost::DecodeError> {
    Record::decode(bytes).map(|record| record.fields)
}

/// The field number of `Record.fields` (`common.proto`).
const RECORD_FIELDS_TAG: u32 = 2;

/// Keys of the `meta` table (every value is text).
pub mod meta {
    /// [`super::FORMAT_VERSION`], in decimal.
    pub const FORMAT_VERSION: &str = "format_version";
    /// The partition's source name.
    pub const SOURCE: &str = "source";
    /// The partition key.
    pub const KEY: &str = "key";
    /// The sequence the file holds the partition at, in decimal.
    pub const SEQUENCE: &str = "sequence";
    /// The checksum of the records (`crate::checksum`), in decimal.
    pub const CHECKSUM: &str = "checksum";
    /// The number of records, in decimal.
    pub const RECORD_COUNT: &str = "record_count";
    /// When the file was written, in Unix milliseconds.
    pub const CREATED_MS: &str = "created_ms";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_encode_as_the_records_fields_on_the_wire_and_read_back() {
        let fields = BTreeMap::from([
            ("name".to_owned(), Value::string("Ada")),
            ("n".to_owned(), Value::int(-7)),
            ("ratio".to_owned(), Value::double(f64::NAN)),
            ("photo".to_owned(), Value::bytes(vec![0, 1, 255])),
            ("gone".to_owned(), Value::null()),
        ]);
        let mut buf = Vec::new();
        encode_fields(&fields, &mut buf);
        let record = Record { id: String::new(), fields: fields.clone(), version: 0 };
        assert_eq!(buf, record.encode_to_vec(), "the bytes of a Record with only its fields");
        let back = decode_fields(&buf).expect("decodes");
        assert_eq!(back.len(), fields.len());
        assert!(matches!(back["ratio"].kind, Some(crate::v1::value::Kind::DoubleValue(value)) if value.is_nan()));
        assert_eq!(back["n"], fields["n"]);
        assert_eq!(back["photo"], fields["photo"]);
        assert_eq!(decode_fields(&[]).expect("no fields"), BTreeMap::new());
        assert!(decode_fields(&[0x12, 0x05, 0x0a]).is_err(), "a cut entry is an error");
    }
}
