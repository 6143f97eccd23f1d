//! Blob metadata in the embedded store: one table, hash → prost `BlobValue`.

use redb::{ReadableTable, TableDefinition};

use super::EmbeddedStore;
use super::tables::store_error;
use crate::storage::blobs::{decode_blob, encode_blob};
use crate::storage::{BlobMeta, BlobStore, PartitionName, StoreResult};

/// Blob metadata by hash (added within format 3: an older file gets it empty at its next
/// open).
pub(super) const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");

impl BlobStore for EmbeddedStore {
    fn put_blob(&self, meta: &BlobMeta) -> StoreResult<bool> {
        let txn = self.begin_write()?;
        {
            let mut blobs = txn.open_table(BLOBS).map_err(store_error)?;
            if blobs.get(meta.hash.as_str()).map_err(store_error)?.is_some() {
                return Ok(false);
            }
            blobs.insert(meta.hash.as_str(), encode_blob(meta).as_slice()).map_err(store_error)?;
        }
        txn.commit().map_err(store_error)?;
        Ok(true)
    }

    fn blob(&self, hash: &str) -> StoreResult<Option<BlobMeta>> {
        let txn = self.begin_read()?;
        let blobs = txn.open_table(BLOBS).map_err(store_error)?;
        let Some(value) = blobs.get(hash).map_err(store_error)? else { return Ok(None) };
        decode_blob(hash, value.value()).map(Some)
    }

    fn blobs(&self) -> StoreResult<Vec<BlobMeta>> {
        let txn = self.begin_read()?;
        let blobs = txn.open_table(BLOBS).map_err(store_error)?;
        let mut all = Vec::new();
        for entry in blobs.iter().map_err(store_error)? {
            let (hash, value) = entry.map_err(store_error)?;
            all.push(decode_blob(hash.value(), value.value())?);
        }
        Ok(all)
    }

    fn reference_blob(&self, hash: &str, partition: Option<&PartitionName>, now_ms: i64) -> StoreResult<bool> {
        let txn = self.begin_write()?;
        {
            let mut blobs = txn.open_table(BLOBS).map_err(store_error)?;
            let mut meta = match blobs.get(hash).map_err(store_error)? {
                Some(value) => decode_blob(hash, value.value())?,
                None => return Ok(false),
            };
            meta.referenced_by(partition, now_ms);
            blobs.insert(hash, encode_blob(&meta).as_slice()).map_err(store_error)?;
        }
        txn.commit().map_err(store_error)?;
        Ok(true)
    }

    fn delete_blob(&self, hash: &str) -> StoreResult<bool> {
        let txn = self.begin_write()?;
        let removed = {
            let mut blobs = txn.open_table(BLOBS).map_err(store_error)?;
            blobs.remove(hash).map_err(store_error)?.is_some()
        };
        txn.commit().map_err(store_error)?;
        Ok(removed)
    }
}
