//! Bulk files every node of a cluster can serve: with `[blob.s3]` configured, each file a
//! node writes is also put in that bucket, at `<prefix>bulk/<file id>.sqlite`, beside
//! `<prefix>bulk/<file id>.json` (what the file holds: partition, sequence, checksum,
//! count, size, time). A download that reaches a node without the file on its disk (the
//! node that wrote it died, or a load balancer chose another) streams it from the bucket,
//! with `Range`, after the same token and access checks. The metadata object is put last:
//! a file is found in the bucket only once its bytes are all there.
//!
//! Every node deletes the bucket's bulk objects older than `bulk.file_ttl_secs` (the
//! deletes are idempotent), so files of a node that is gone are collected too.

use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};

use super::{BulkError, BulkFile};
use crate::blobs::Bucket;
use crate::storage::PartitionName;

/// Key directory of bulk files under the bucket's prefix.
const BULK_DIR: &str = "bulk/";

/// Largest metadata object read: a partition name and a few numbers fit far below it.
const MAX_META_BYTES: u64 = 64 * 1024;

/// Longest file id looked up in the bucket (ids the server issues have 32 characters).
const MAX_FILE_ID_CHARS: usize = 64;

/// What `<file id>.json` holds.
#[derive(Debug, Serialize, Deserialize)]
struct SharedMeta {
    source: String,
    key: String,
    sequence: u64,
    checksum: u64,
    record_count: u64,
    bytes: u64,
    created_ms: i64,
}

/// The bulk files in the bucket.
#[derive(Clone, Debug)]
pub struct SharedFiles {
    bucket: Bucket,
}

impl SharedFiles {
    /// Keeps bulk files in `bucket`, under `bulk/`.
    pub fn new(bucket: Bucket) -> Self {
        Self { bucket }
    }

    fn file_key(id: &str) -> String {
        format!("{BULK_DIR}{id}.{}", super::catalog::FILE_EXTENSION)
    }

    fn meta_key(id: &str) -> String {
        format!("{BULK_DIR}{id}.json")
    }

    /// Puts the finished `file` at `path` in the bucket: its bytes, then its metadata.
    pub async fn put(&self, file: &BulkFile, path: &Path) -> Result<(), BulkError> {
        let failed = |error| BulkError::io(format!("put bulk file {} in the bucket", file.id), error);
        self.bucket.put_file(&Self::file_key(&file.id), path).await.map_err(failed)?;
        let meta = SharedMeta {
            source: file.partition.source.clone(),
            key: file.partition.key.clone(),
            sequence: file.sequence,
            checksum: file.checksum,
            record_count: file.record_count,
            bytes: file.bytes,
            created_ms: file.created_ms,
        };
        let json = serde_json::to_vec(&meta).map_err(|error| BulkError::Internal(error.to_string()))?;
        self.bucket.put_bytes(&Self::meta_key(&file.id), Bytes::from(json)).await.map_err(failed)
    }

    /// Returns bulk file `id` if the bucket holds it.
    pub async fn find(&self, id: &str) -> Result<Option<BulkFile>, BulkError> {
        let well_formed = !id.is_empty()
            && id.len() <= MAX_FILE_ID_CHARS
            && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !well_formed {
            return Ok(None);
        }
        let read = self.bucket.get_bytes(&Self::meta_key(id), MAX_META_BYTES).await;
        let Some(json) = read.map_err(|error| BulkError::io(format!("read bulk file {id} from the bucket"), error))?
        else {
            return Ok(None);
        };
        let meta: SharedMeta = serde_json::from_slice(&json)
            .map_err(|error| BulkError::Internal(format!("bulk file {id} in the bucket: {error}")))?;
        Ok(Some(BulkFile {
            id: id.to_owned(),
            partition: PartitionName::new(meta.source, meta.key),
            sequence: meta.sequence,
            checksum: meta.checksum,
            record_count: meta.record_count,
            bytes: meta.bytes,
            created_ms: meta.created_ms,
        }))
    }

    /// Streams `len` bytes of bulk file `id` from offset `start`.
    pub async fn stream(
        &self,
        id: &str,
        start: u64,
        len: u64,
    ) -> std::io::Result<BoxStream<'static, std::io::Result<Bytes>>> {
        self.bucket.stream(&Self::file_key(id), start, len).await
    }

    /// Deletes the bulk objects stored `ttl` or longer ago; returns how many files.
    pub async fn collect_expired(&self, ttl: Duration) -> Result<usize, BulkError> {
        let cutoff = SystemTime::now().checked_sub(ttl).unwrap_or(SystemTime::UNIX_EPOCH);
        let listed = self.bucket.list(BULK_DIR).await;
        let objects = listed.map_err(|error| BulkError::io("list bulk files in the bucket", error))?;
        let mut collected = 0;
        for (key, _, modified) in objects {
            if modified >= cutoff {
                continue;
            }
            // The metadata first (`<id>.json` lists before `<id>.sqlite`): a file without it
            // is not found, so never half served. Bytes whose metadata never came (a node
            // died between the two) go on their own.
            let deleted = match key.strip_suffix(".json") {
                Some(id) => {
                    collected += 1;
                    self.bucket.delete(&Self::meta_key(id)).await
                }
                None => self.bucket.delete(&format!("{BULK_DIR}{key}")).await,
            };
            deleted.map_err(|error| BulkError::io(format!("delete {key} from the bucket"), error))?;
        }
        Ok(collected)
    }
}
