//! Blob storage: the bytes of files that records reference by `Blob` values (photos,
//! signatures, PDFs), content-addressed by SHA-256.
//!
//! - this file: [`BlobService`], what the device listener's blob routes and the gateway ask
//!   (upload a piece, open a blob for a reader, check a mutation's references), and
//!   [`BlobError`], the one error of the module;
//! - `blob_bytes.rs`: [`BlobBytes`], where complete blobs' bytes are kept, and [`BlobReader`],
//!   an open blob streamed by ranges;
//! - `files.rs`: the blob directory — uploads in progress at
//!   `<dir>/partial/<hash>.<uploader>`, made complete by verifying the SHA-256 and fsync,
//!   and (without a bucket) complete blobs at `<dir>/<hash[..2]>/<hash>`, placed by an
//!   atomic rename;
//! - `bucket.rs`: an S3-compatible bucket (`[blob.s3]`): [`Bucket`], shared with bulk
//!   files, and [`BucketBlobs`], complete blobs at `<prefix>blobs/<hash>`;
//! - `gc.rs`: the collection of blobs no live record and no pending mutation references,
//!   after a grace period.
//!
//! The metadata (hash, size, media type, uploader, times, partitions known to reference
//! the blob) goes through the store contract ([`crate::storage::BlobStore`]) on either
//! backend; the bytes are in the bucket when `[blob.s3]` is configured (what a cluster
//! needs), else files in the blob directory (which the nodes of a cluster must share).

mod blob_bytes;
pub mod bucket;
mod files;
mod gc;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use syncline_proto::record::is_blob_hash;
use syncline_proto::v1::{Blob, BlobRequest, Caller, Value};

pub use self::blob_bytes::{BlobBytes, BlobReader, StoredBlob};
pub use self::bucket::{Bucket, BucketBlobs};
pub use self::files::BlobFiles;
pub use self::gc::GcReport;
use crate::auth::Identity;
use crate::channel::ChannelRegistry;
use crate::config::{BlobSettings, SourceSettings};
use crate::error::ErrorClass;
use crate::storage::{BlobMeta, PartitionName, Store, StoreError};

/// Media type stored for an upload that names none.
pub const DEFAULT_MEDIA_TYPE: &str = "application/octet-stream";

/// Why a blob request failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The hash in the path is not 64 lowercase hex digits.
    #[error("{0:?} is not a blob hash (a SHA-256 as 64 lowercase hex digits)")]
    InvalidHash(String),
    /// The blob is larger than `blob.max_bytes`.
    #[error("the blob has {size} bytes, more than this server accepts ({max})")]
    TooLarge { size: u64, max: u64 },
    /// The upload's `Content-Range` or length is missing or malformed.
    #[error("{0}")]
    BadRange(String),
    /// The piece does not start where the bytes held end.
    #[error("the server holds {held} bytes of this upload, not {given}: resume from byte {held}")]
    WrongOffset { given: u64, held: u64 },
    /// The bytes, complete, do not hash to the blob's name: the upload was discarded.
    #[error("the uploaded bytes hash to {actual}, not {expected}: the upload was discarded, start again from 0")]
    HashMismatch { expected: String, actual: String },
    /// The body carried more bytes than its range declared.
    #[error("the body carries more than the {declared} bytes its range declares")]
    BodyTooLong { declared: u64 },
    /// No such blob is stored.
    #[error("no blob {0} is stored")]
    NotFound(String),
    /// The caller may not read the blob: not its uploader, and no record it may read
    /// references it.
    #[error("blob {0} is not referenced by a record you may read")]
    Forbidden(String),
    /// A reference disagrees with the stored blob.
    #[error("blob {hash} has {stored} bytes, not {referenced} as the reference says")]
    SizeMismatch { hash: String, stored: u64, referenced: u64 },
    /// A mutation references a blob the server does not hold yet.
    #[error("blob {0} is not uploaded yet: upload it to {path}/{0}, then resend the mutation", path = syncline_proto::BLOBS_PATH)]
    NotUploaded(String),
    /// The blob directory failed.
    #[error("blob storage failed: {0}")]
    Io(#[from] std::io::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl BlobError {
    /// Returns the class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            BlobError::InvalidHash(_)
            | BlobError::BadRange(_)
            | BlobError::HashMismatch { .. }
            | BlobError::BodyTooLong { .. }
            | BlobError::SizeMismatch { .. } => ErrorClass::BadRequest,
            BlobError::TooLarge { .. } => ErrorClass::ResourceExhausted,
            BlobError::WrongOffset { .. } => ErrorClass::Conflict,
            BlobError::NotFound(_) => ErrorClass::NotFound,
            BlobError::Forbidden(_) => ErrorClass::Forbidden,
            // Retryable: once the blob is uploaded the mutation goes through.
            BlobError::NotUploaded(_) => ErrorClass::Unavailable,
            BlobError::Io(_) => ErrorClass::Internal,
            // Whatever failed in the store, the device may retry later.
            BlobError::Store(_) => ErrorClass::Unavailable,
        }
    }
}

/// Result alias of the module.
pub type Result<T> = std::result::Result<T, BlobError>;

/// Which bytes of a blob an upload request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadPiece {
    /// Offset of the first byte.
    pub first: u64,
    /// Bytes in the piece.
    pub len: u64,
    /// The blob's whole size.
    pub total: u64,
}

impl UploadPiece {
    /// Reads `Content-Range: bytes first-last/total` (or `bytes */total` for an empty piece)
    /// or, without one, the whole blob of `content_length` bytes.
    pub fn parse(content_range: Option<&str>, content_length: Option<u64>) -> Result<Self> {
        let Some(range) = content_range else {
            let total = content_length
                .ok_or_else(|| BlobError::BadRange("an upload needs Content-Length or Content-Range".to_owned()))?;
            return Ok(Self { first: 0, len: total, total });
        };
        let bad = || BlobError::BadRange(format!("Content-Range {range:?} is not `bytes first-last/total`"));
        let spec = range.trim().strip_prefix("bytes ").ok_or_else(bad)?;
        let (span, total) = spec.split_once('/').ok_or_else(bad)?;
        let total: u64 = total.trim().parse().map_err(|_| bad())?;
        if span.trim() == "*" {
            return Ok(Self { first: total, len: 0, total });
        }
        let (first, last) = span.split_once('-').ok_or_else(bad)?;
        let (first, last): (u64, u64) =
            (first.trim().parse().map_err(|_| bad())?, last.trim().parse().map_err(|_| bad())?);
        if first > last || last >= total {
            return Err(bad());
        }
        let piece = Self { first, len: last - first + 1, total };
        if content_length.is_some_and(|length| length != piece.len) {
            return Err(BlobError::BadRange(format!(
                "Content-Length {} differs from the {} bytes of Content-Range {range:?}",
                content_length.unwrap_or_default(),
                piece.len
            )));
        }
        Ok(piece)
    }
}

/// What an upload request achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadOutcome {
    /// The blob was stored before: nothing was read or written.
    AlreadyStored { size: u64 },
    /// This piece completed the blob: verified and stored.
    Stored { size: u64 },
    /// The piece was appended; the server holds `held` bytes of the upload.
    Partial { held: u64 },
}

/// How much of a blob the server holds for an uploader (`HEAD`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// The blob is stored, with this size.
    Stored { size: u64 },
    /// This many bytes of the uploader's upload wait to be resumed (0: none).
    Partial { held: u64 },
}

/// A record naming why a reader may read a blob (`?source=&key=&id=` on a download).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordHint {
    pub source: String,
    pub key: String,
    pub id: String,
}

/// The blob store the device listener and the gateway use.
pub struct BlobService {
    store: Arc<dyn Store>,
    /// Uploads in progress (and, without a bucket, the complete blobs).
    files: BlobFiles,
    /// Where complete blobs are kept: `files`, or the bucket.
    bytes: Arc<dyn BlobBytes>,
    sources: BTreeMap<String, SourceSettings>,
    /// Channels that may keep blob bytes themselves (`ReadBlob`).
    channels: Arc<ChannelRegistry>,
    max_bytes: u64,
    gc_grace: Duration,
}

/// The uploader key of blob bytes read from a channel (a partial file of its own).
const CHANNEL_UPLOADER: &str = "channel";

impl BlobService {
    /// Opens the blob directory of `settings` (creating it), and the bucket when
    /// `[blob.s3]` is configured, over `store`'s metadata; blobs it lacks are asked of the
    /// `channels` of the records referencing them. Sends nothing to the bucket: see
    /// [`BlobService::check_storage`].
    pub fn open(
        store: Arc<dyn Store>,
        settings: &BlobSettings,
        sources: BTreeMap<String, SourceSettings>,
        channels: Arc<ChannelRegistry>,
    ) -> std::io::Result<Self> {
        let files = BlobFiles::open(&settings.dir)?;
        let bytes: Arc<dyn BlobBytes> = match &settings.s3 {
            Some(s3) => Arc::new(BucketBlobs::new(Bucket::open(s3)?)),
            None => Arc::new(files.clone()),
        };
        let (max_bytes, gc_grace) = (settings.max_bytes, settings.gc_grace);
        Ok(Self { store, files, bytes, sources, channels, max_bytes, gc_grace })
    }

    /// Checks that complete blobs can be stored, read and deleted where they are kept (a
    /// bucket that does not exist, or refuses these credentials, fails here).
    pub async fn check_storage(&self) -> std::io::Result<()> {
        self.bytes.check().await
    }

    /// Says where complete blobs are kept, for logs and errors.
    pub fn storage(&self) -> String {
        self.bytes.describe()
    }

    /// Returns where complete blobs are kept (tests read the bucket through it).
    pub fn bytes(&self) -> &Arc<dyn BlobBytes> {
        &self.bytes
    }

    /// Returns the largest blob accepted.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Returns how much of blob `hash` the server holds for `uploader`'s device.
    pub async fn held(&self, uploader: &Identity, hash: &str) -> Result<Held> {
        check_hash(hash)?;
        if let Some(size) = self.bytes.size(hash).await? {
            return Ok(Held::Stored { size });
        }
        Ok(Held::Partial { held: self.files.partial_len(hash, &uploader.client_id).await? })
    }

    /// Takes one piece of an upload of blob `hash` by `uploader`, read from `body`: checks
    /// the size against `blob.max_bytes` before reading anything, appends the piece to the
    /// uploader's partial file, and once all `total` bytes are there verifies the SHA-256,
    /// stores the blob durably and records its metadata. A blob already stored is not read
    /// again (idempotent).
    pub async fn upload<S, E>(
        &self,
        uploader: &Identity,
        hash: &str,
        media_type: Option<&str>,
        piece: UploadPiece,
        body: S,
    ) -> Result<UploadOutcome>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + 'static,
        E: std::fmt::Display + 'static,
    {
        check_hash(hash)?;
        if piece.total > self.max_bytes {
            return Err(BlobError::TooLarge { size: piece.total, max: self.max_bytes });
        }
        if let Some(size) = self.bytes.size(hash).await? {
            // A crash between the rename and the metadata leaves a file without metadata.
            self.record_upload(uploader, hash, media_type, size).await?;
            return Ok(UploadOutcome::AlreadyStored { size });
        }
        let held = self.files.partial_len(hash, &uploader.client_id).await?;
        if piece.first != held {
            return Err(BlobError::WrongOffset { given: piece.first, held });
        }
        let held = self.files.append(hash, &uploader.client_id, piece.len, Box::pin(body)).await?;
        if held < piece.total {
            return Ok(UploadOutcome::Partial { held });
        }
        let size = self.store_verified(hash, &uploader.client_id).await?;
        self.record_upload(uploader, hash, media_type, size).await?;
        Ok(UploadOutcome::Stored { size })
    }

    /// Verifies `client_id`'s complete upload of `hash` and stores it where complete blobs
    /// are kept; returns its size. The bytes are stored before any metadata names them.
    async fn store_verified(&self, hash: &str, client_id: &str) -> Result<u64> {
        let (verified, size) = self.files.verify(hash, client_id).await?;
        if let Err(error) = self.bytes.put_verified(hash, &verified).await {
            // The verified upload stays: the device's next request (HEAD says all bytes are
            // held) completes it again.
            tracing::warn!(%error, hash, storage = %self.bytes.describe(), "could not store a verified blob");
            return Err(BlobError::Io(error));
        }
        Ok(size)
    }

    /// Stores the metadata of a blob `uploader` completed (kept as it was when known).
    async fn record_upload(&self, uploader: &Identity, hash: &str, media_type: Option<&str>, size: u64) -> Result<()> {
        let meta = BlobMeta {
            hash: hash.to_owned(),
            size,
            media_type: media_type.filter(|media| !media.is_empty()).unwrap_or(DEFAULT_MEDIA_TYPE).to_owned(),
            uploader: uploader.user_id.clone(),
            created_ms: crate::auth::now_ms(),
            last_referenced_ms: 0,
            partitions: Vec::new(),
        };
        let store = self.store.clone();
        blocking(move || store.put_blob(&meta)).await?;
        Ok(())
    }

    /// Opens blob `hash` for `reader`, who must have uploaded it or be allowed to read a
    /// partition known to reference it, or the record `hint` names (which must reference it).
    /// A blob not stored here is read from the channel of the hint's source, when that
    /// channel keeps blobs (`ReadBlob`), and kept.
    pub async fn open_for(&self, reader: &Identity, hash: &str, hint: Option<RecordHint>) -> Result<BlobReader> {
        check_hash(hash)?;
        let store = self.store.clone();
        let wanted = hash.to_owned();
        let meta = match (blocking(move || store.blob(&wanted)).await?, &hint) {
            (Some(meta), _) => meta,
            (None, Some(hint)) => self.fetch_from_channel(reader, hash, hint).await?,
            (None, None) => return Err(BlobError::NotFound(hash.to_owned())),
        };
        if !self.may_read(reader, &meta, hint).await? {
            return Err(BlobError::Forbidden(hash.to_owned()));
        }
        self.bytes.open(hash).await?.ok_or_else(|| BlobError::NotFound(hash.to_owned()))
    }

    /// Reads blob `hash` from the channel of the record `hint` names (which `reader` must
    /// be allowed to read and which must reference the blob), verifies and stores it.
    async fn fetch_from_channel(&self, reader: &Identity, hash: &str, hint: &RecordHint) -> Result<BlobMeta> {
        let not_found = || BlobError::NotFound(hash.to_owned());
        let partition = crate::model::resolve_partition(&self.sources, reader, &hint.source, &hint.key)
            .map_err(|_| BlobError::Forbidden(hash.to_owned()))?;
        let (store, id) = (self.store.clone(), hint.id.clone());
        let record = {
            let partition = partition.clone();
            blocking(move || store.record(&partition, &id)).await?
        };
        let reference = record
            .and_then(|record| record.blobs().find(|(_, blob)| blob.hash == hash).map(|(_, blob)| blob.clone()))
            .ok_or_else(not_found)?;
        if reference.size > self.max_bytes {
            return Err(BlobError::TooLarge { size: reference.size, max: self.max_bytes });
        }
        let channel = self.channels.get(&hint.source).ok_or_else(not_found)?;
        let caller = Caller { user_id: reader.user_id.clone(), client_id: reader.client_id.clone() };
        let request = BlobRequest { hash: hash.to_owned(), offset: 0, caller: Some(caller) };
        let chunks = match channel.read_blob(request).await {
            Ok(chunks) => chunks,
            // UNIMPLEMENTED or NOT_FOUND: the channel does not have it either.
            Err(error) => {
                tracing::debug!(%error, hash, "the channel does not serve this blob");
                return Err(not_found());
            }
        };
        // A stale partial file of an earlier attempt would misplace the bytes.
        self.files.discard_partial(hash, CHANNEL_UPLOADER).await?;
        let held = self.files.append(hash, CHANNEL_UPLOADER, reference.size, Box::pin(chunks)).await?;
        if held != reference.size {
            self.files.discard_partial(hash, CHANNEL_UPLOADER).await?;
            return Err(BlobError::Io(std::io::Error::other(format!(
                "the channel sent {held} of the blob's {} bytes",
                reference.size
            ))));
        }
        let size = self.store_verified(hash, CHANNEL_UPLOADER).await?;
        let meta = BlobMeta {
            hash: hash.to_owned(),
            size,
            media_type: reference.media_type.clone(),
            uploader: String::new(),
            created_ms: crate::auth::now_ms(),
            last_referenced_ms: crate::auth::now_ms(),
            partitions: vec![partition],
        };
        let (store, stored) = (self.store.clone(), meta.clone());
        blocking(move || store.put_blob(&stored)).await?;
        Ok(meta)
    }

    /// Returns true when `reader` may read the blob of `meta`.
    async fn may_read(&self, reader: &Identity, meta: &BlobMeta, hint: Option<RecordHint>) -> Result<bool> {
        if meta.uploader == reader.user_id {
            return Ok(true);
        }
        let readable = |source: &str, key: &str| {
            crate::model::resolve_partition(&self.sources, reader, source, key)
                .ok()
                .filter(|partition| partition.key == key || key.is_empty())
        };
        if meta.partitions.iter().any(|partition| readable(&partition.source, &partition.key).is_some()) {
            return Ok(true);
        }
        let Some(hint) = hint else { return Ok(false) };
        let Some(partition) = readable(&hint.source, &hint.key) else { return Ok(false) };
        let store = self.store.clone();
        let id = hint.id.clone();
        let record = {
            let partition = partition.clone();
            blocking(move || store.record(&partition, &id)).await?
        };
        let references = record.is_some_and(|record| record.blobs().any(|(_, blob)| blob.hash == meta.hash));
        if references {
            // Later downloads need no hint.
            let store = self.store.clone();
            let hash = meta.hash.clone();
            blocking(move || store.reference_blob(&hash, Some(&partition), crate::auth::now_ms())).await?;
        }
        Ok(references)
    }

    /// Checks the blobs a device mutation's fields reference: each must be stored (else
    /// [`BlobError::NotUploaded`], retryable), of the size the reference says and within
    /// `blob.max_bytes`; then notes that `partition` references them.
    pub async fn check_references(&self, partition: &PartitionName, fields: &BTreeMap<String, Value>) -> Result<()> {
        let blobs: Vec<Blob> = fields.values().filter_map(Value::as_blob).cloned().collect();
        if blobs.is_empty() {
            return Ok(());
        }
        for blob in &blobs {
            if blob.size > self.max_bytes {
                return Err(BlobError::TooLarge { size: blob.size, max: self.max_bytes });
            }
        }
        let store = self.store.clone();
        let partition = partition.clone();
        blocking(move || {
            for blob in &blobs {
                let stored = store.blob(&blob.hash)?.ok_or_else(|| BlobError::NotUploaded(blob.hash.clone()))?;
                if stored.size != blob.size {
                    return Err(BlobError::SizeMismatch {
                        hash: blob.hash.clone(),
                        stored: stored.size,
                        referenced: blob.size,
                    });
                }
            }
            let now = crate::auth::now_ms();
            for blob in &blobs {
                store.reference_blob(&blob.hash, Some(&partition), now)?;
            }
            Ok(())
        })
        .await
    }

    /// Deletes blobs that no live record and no pending mutation references and that were
    /// neither stored nor referenced within the grace period, and partial uploads older
    /// than it.
    pub async fn collect_garbage(&self) -> Result<GcReport> {
        gc::collect(&self.store, &self.files, &*self.bytes, self.gc_grace, crate::auth::now_ms()).await
    }
}

/// Checks a hash from a request path.
fn check_hash(hash: &str) -> Result<()> {
    if is_blob_hash(hash) { Ok(()) } else { Err(BlobError::InvalidHash(hash.chars().take(80).collect())) }
}

/// Runs blocking store or file work off the async threads.
async fn blocking<T: Send + 'static, E: Into<BlobError> + Send + 'static>(
    work: impl FnOnce() -> std::result::Result<T, E> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(Into::into),
        Err(error) => Err(BlobError::Io(std::io::Error::other(format!("blob task failed: {error}")))),
    }
}

/// Returns the lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}
