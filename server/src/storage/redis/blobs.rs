//! Blob metadata in Redis: one hash, blob hash → prost `BlobValue` (the bytes are in the
//! blob directory every node shares).

use super::{RedisStore, keys};
use crate::storage::blobs::{decode_blob, encode_blob};
use crate::storage::{BlobMeta, BlobStore, PartitionName, StoreError, StoreResult};

/// Times `reference_blob` retries when the blob's metadata changed while it wrote.
const MAX_REFERENCE_ATTEMPTS: usize = 16;

impl BlobStore for RedisStore {
    fn put_blob(&self, meta: &BlobMeta) -> StoreResult<bool> {
        let value = encode_blob(meta);
        self.run_durable(|connection| {
            let added: bool =
                redis::cmd("HSETNX").arg(keys::BLOBS).arg(&meta.hash).arg(value.as_slice()).query(connection)?;
            Ok((added, added))
        })
    }

    fn blob(&self, hash: &str) -> StoreResult<Option<BlobMeta>> {
        let value: Option<Vec<u8>> =
            self.run(|connection| redis::cmd("HGET").arg(keys::BLOBS).arg(hash).query(connection))?;
        value.map(|value| decode_blob(hash, &value)).transpose()
    }

    fn blobs(&self) -> StoreResult<Vec<BlobMeta>> {
        let all: Vec<(String, Vec<u8>)> =
            self.run(|connection| redis::cmd("HGETALL").arg(keys::BLOBS).query(connection))?;
        let mut blobs = all.iter().map(|(hash, value)| decode_blob(hash, value)).collect::<StoreResult<Vec<_>>>()?;
        blobs.sort_by(|a, b| a.hash.cmp(&b.hash));
        Ok(blobs)
    }

    fn reference_blob(&self, hash: &str, partition: Option<&PartitionName>, now_ms: i64) -> StoreResult<bool> {
        // Compare-and-set: the script writes only when the stored value is still the one read.
        for _ in 0..MAX_REFERENCE_ATTEMPTS {
            let Some(stored) = self
                .run(|connection| redis::cmd("HGET").arg(keys::BLOBS).arg(hash).query::<Option<Vec<u8>>>(connection))?
            else {
                return Ok(false);
            };
            let mut meta = decode_blob(hash, &stored)?;
            meta.referenced_by(partition, now_ms);
            let value = encode_blob(&meta);
            let swapped = self.run_durable(|connection| {
                let swapped: bool = redis::Script::new(COMPARE_AND_SET)
                    .key(keys::BLOBS)
                    .arg(hash)
                    .arg(stored.as_slice())
                    .arg(value.as_slice())
                    .invoke(connection)?;
                Ok((swapped, swapped))
            })?;
            if swapped {
                return Ok(true);
            }
        }
        Err(StoreError::Contention { subject: format!("blob {hash}") })
    }

    fn delete_blob(&self, hash: &str) -> StoreResult<bool> {
        self.run_durable(|connection| {
            let removed: bool = redis::cmd("HDEL").arg(keys::BLOBS).arg(hash).query(connection)?;
            Ok((removed, removed))
        })
    }
}

/// Sets field ARGV[1] of hash KEYS[1] to ARGV[3] if it still holds ARGV[2]; returns 1 if
/// it did.
const COMPARE_AND_SET: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
";
