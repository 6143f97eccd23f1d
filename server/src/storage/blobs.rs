//! Blob metadata: what the store keeps about each file in the blob directory (its bytes
//! stay on disk, see `crate::blobs`). One narrow contract, [`BlobStore`], on both backends.

use prost::Message as _;

use super::{PartitionName, StoreError, StoreResult};

/// Most partitions remembered as referencing one blob: the download check needs one that
/// the caller may read, and a blob shared more widely than this is found by the record the
/// caller names instead (`?source=&key=&id=`).
pub const MAX_BLOB_PARTITIONS: usize = 64;

/// What the store keeps about a blob.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlobMeta {
    /// SHA-256 of the bytes, 64 lowercase hex digits.
    pub hash: String,
    /// Length in bytes.
    pub size: u64,
    /// Media type the uploader gave.
    pub media_type: String,
    /// The user who uploaded it.
    pub uploader: String,
    /// When it was stored, in Unix milliseconds.
    pub created_ms: i64,
    /// When a record or mutation was last seen referencing it, in Unix milliseconds (0:
    /// never).
    pub last_referenced_ms: i64,
    /// Partitions known to hold a record referencing it (at most [`MAX_BLOB_PARTITIONS`],
    /// sorted).
    pub partitions: Vec<PartitionName>,
}

impl BlobMeta {
    /// Notes that the blob was seen referenced at `now_ms`, by `partition` when given (kept
    /// among the partitions known to reference it, bounded: past the bound the last in sort
    /// order is dropped).
    pub fn referenced_by(&mut self, partition: Option<&PartitionName>, now_ms: i64) {
        self.last_referenced_ms = self.last_referenced_ms.max(now_ms);
        let Some(partition) = partition else { return };
        if let Err(at) = self.partitions.binary_search(partition) {
            self.partitions.insert(at, partition.clone());
            self.partitions.truncate(MAX_BLOB_PARTITIONS);
        }
    }
}

/// Blob metadata, by hash.
pub trait BlobStore: Send + Sync + 'static {
    /// Stores a blob's metadata unless the hash is known; returns false when it was.
    fn put_blob(&self, meta: &BlobMeta) -> StoreResult<bool>;

    /// Returns a blob's metadata.
    fn blob(&self, hash: &str) -> StoreResult<Option<BlobMeta>>;

    /// Returns every blob's metadata, by hash.
    fn blobs(&self) -> StoreResult<Vec<BlobMeta>>;

    /// Notes that the blob was seen referenced at `now_ms`, by `partition` when given (see
    /// [`BlobMeta::referenced_by`]); returns false when the blob is not stored.
    fn reference_blob(&self, hash: &str, partition: Option<&PartitionName>, now_ms: i64) -> StoreResult<bool>;

    /// Forgets a blob's metadata; returns false when there was none.
    fn delete_blob(&self, hash: &str) -> StoreResult<bool>;
}

/// The stored form of [`BlobMeta`] (prost), shared by both backends.
#[derive(Clone, PartialEq, prost::Message)]
pub(in crate::storage) struct BlobValue {
    #[prost(uint64, tag = "1")]
    size: u64,
    #[prost(string, tag = "2")]
    media_type: String,
    #[prost(string, tag = "3")]
    uploader: String,
    #[prost(int64, tag = "4")]
    created_ms: i64,
    #[prost(int64, tag = "5")]
    last_referenced_ms: i64,
    /// Partitions as "source\0key".
    #[prost(string, repeated, tag = "6")]
    partitions: Vec<String>,
}

/// Encodes a blob's metadata (its hash is the key).
pub(in crate::storage) fn encode_blob(meta: &BlobMeta) -> Vec<u8> {
    BlobValue {
        size: meta.size,
        media_type: meta.media_type.clone(),
        uploader: meta.uploader.clone(),
        created_ms: meta.created_ms,
        last_referenced_ms: meta.last_referenced_ms,
        partitions: meta
            .partitions
            .iter()
            .map(|partition| format!("{}\0{}", partition.source, partition.key))
            .collect(),
    }
    .encode_to_vec()
}

/// Decodes the metadata stored under `hash`.
pub(in crate::storage) fn decode_blob(hash: &str, bytes: &[u8]) -> StoreResult<BlobMeta> {
    let value = BlobValue::decode(bytes).map_err(|error| StoreError::Corrupt(format!("blob {hash}: {error}")))?;
    let partitions = value
        .partitions
        .iter()
        .filter_map(|entry| entry.split_once('\0'))
        .map(|(source, key)| PartitionName::new(source, key))
        .collect();
    Ok(BlobMeta {
        hash: hash.to_owned(),
        size: value.size,
        media_type: value.media_type,
        uploader: value.uploader,
        created_ms: value.created_ms,
        last_referenced_ms: value.last_referenced_ms,
        partitions,
    })
}
