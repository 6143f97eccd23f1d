//! The schema of a bulk snapshot file: one SQLite database per partition, written by the
//! server and read by devices (`docs/BULK.md` explains each column and why the fields are
//! one typed-JSON column). Constants only: the server's writer and the device library's
//! reader both use them, so the two cannot drift apart.

/// The format version in the `meta` table; a reader refuses other versions.
pub const FORMAT_VERSION: u32 = 1;

/// The statements that create an empty file's tables.
pub const SCHEMA: &str = "\
CREATE TABLE meta (name TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE records (
    id TEXT PRIMARY KEY NOT NULL,
    version INTEGER NOT NULL,
    fields TEXT NOT NULL
) WITHOUT ROWID;";

/// Inserts or replaces one record: `(id, version, fields)`.
pub const UPSERT_RECORD: &str = "INSERT OR REPLACE INTO records (id, version, fields) VALUES (?1, ?2, ?3)";

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
