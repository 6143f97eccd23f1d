//! Where the bytes of complete blobs live: [`BlobBytes`], the one small interface the blob
//! service (uploads, device downloads, the channel's blob bytes, garbage collection) reads
//! and writes them through, with two implementations: the blob directory
//! ([`super::BlobFiles`]) and an S3-compatible bucket ([`super::bucket::BucketBlobs`]).
//!
//! Uploads in progress are not blob bytes: they stay in the blob directory's `partial/`
//! until their hash is verified, then [`BlobBytes::put_verified`] stores the verified file.

use std::io::{ErrorKind, SeekFrom};
use std::path::Path;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use super::bucket::Bucket;

/// Bytes read at a time when hashing or serving a blob from a file: large enough for few
/// system calls, small enough that many downloads at once hold little memory.
pub(super) const READ_CHUNK_BYTES: usize = 64 * 1024;

/// A complete blob as listed by [`BlobBytes::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBlob {
    pub hash: String,
    pub size: u64,
    /// When its bytes were stored.
    pub modified: SystemTime,
}

/// The storage of complete blobs' bytes, by SHA-256 hash (methods return boxed futures so
/// that the service holds any implementation as `Arc<dyn BlobBytes>`).
pub trait BlobBytes: Send + Sync + std::fmt::Debug {
    /// Returns the size of stored blob `hash`, if it is stored.
    fn size<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, std::io::Result<Option<u64>>>;

    /// Stores the local file at `file`, whose bytes were verified to hash to `hash`, as
    /// blob `hash`, durably and atomically (readers see the whole blob or none); the file is
    /// moved or deleted.
    fn put_verified<'a>(&'a self, hash: &'a str, file: &'a Path) -> BoxFuture<'a, std::io::Result<()>>;

    /// Opens stored blob `hash` for reading (its size known, its bytes streamed later).
    fn open<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, std::io::Result<Option<BlobReader>>>;

    /// Deletes stored blob `hash` (nothing when it is not stored).
    fn delete<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, std::io::Result<()>>;

    /// Lists every stored blob (garbage collection finds bytes without metadata with it).
    fn list(&self) -> BoxFuture<'_, std::io::Result<Vec<StoredBlob>>>;

    /// Checks that the storage can be written, read and deleted from (at start).
    fn check(&self) -> BoxFuture<'_, std::io::Result<()>>;

    /// Says where the bytes are, for logs and errors.
    fn describe(&self) -> String;
}

/// An open blob, ready to stream any range of it.
#[derive(Debug)]
pub struct BlobReader {
    /// The blob's size in bytes.
    pub size: u64,
    source: ReaderSource,
}

#[derive(Debug)]
enum ReaderSource {
    File(tokio::fs::File),
    Bucket { bucket: Bucket, key: String },
}

impl BlobReader {
    /// Reads the open `file` of `size` bytes.
    pub(super) fn file(size: u64, file: tokio::fs::File) -> Self {
        Self { size, source: ReaderSource::File(file) }
    }

    /// Reads object `key` of `size` bytes in `bucket`.
    pub(super) fn bucket(size: u64, bucket: Bucket, key: String) -> Self {
        Self { size, source: ReaderSource::Bucket { bucket, key } }
    }

    /// Streams `len` bytes from offset `start`: a file [`READ_CHUNK_BYTES`] at a time, an
    /// object as one ranged request whose body is passed on as it arrives. The blob is
    /// never held in memory whole.
    pub async fn stream(self, start: u64, len: u64) -> std::io::Result<BoxStream<'static, std::io::Result<Bytes>>> {
        match self.source {
            ReaderSource::File(file) => Ok(stream_file(file, start, len).await?.boxed()),
            ReaderSource::Bucket { bucket, key } => bucket.stream(&key, start, len).await,
        }
    }
}

/// Streams `len` bytes of `file` from offset `start`.
async fn stream_file(
    mut file: tokio::fs::File,
    start: u64,
    len: u64,
) -> std::io::Result<impl Stream<Item = std::io::Result<Bytes>>> {
    file.seek(SeekFrom::Start(start)).await?;
    Ok(futures_util::stream::unfold((file, len), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let want = usize::try_from(left).map_or(READ_CHUNK_BYTES, |left| left.min(READ_CHUNK_BYTES));
        let mut buffer = vec![0; want];
        match file.read(&mut buffer).await {
            Ok(0) => Some((Err(std::io::Error::new(ErrorKind::UnexpectedEof, "the blob file is shorter")), (file, 0))),
            Ok(read) => {
                buffer.truncate(read);
                Some((Ok(Bytes::from(buffer)), (file, left - read as u64)))
            }
            Err(error) => Some((Err(error), (file, 0))),
        }
    }))
}
