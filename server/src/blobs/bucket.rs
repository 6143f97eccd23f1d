//! An S3-compatible bucket (`[blob.s3]`): AWS S3, MinIO, R2 or any service speaking the S3
//! API, through `object_store`. [`Bucket`] is the key space under the configured prefix
//! that blob bytes (`<prefix>blobs/<hash>`) and bulk files (`<prefix>bulk/...`) share, and
//! [`BucketBlobs`] the blob bytes kept in it.
//!
//! Objects are written from local files in parts of [`PART_BYTES`] (a multipart upload once
//! a file is larger than one part, a single `PUT` otherwise) and read as streams of ranges:
//! no object is ever held in memory whole. An object appears in the bucket only when its
//! upload completes, so a reader never sees half a blob.

use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt as _, TryStreamExt as _};
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore, RetryConfig};
use tokio::io::AsyncWriteExt as _;

use super::blob_bytes::{BlobBytes, BlobReader, StoredBlob};
use crate::config::S3Settings;

/// Bytes per part of an upload: S3's smallest part is 5 MiB, and each upload holds at most
/// [`PARTS_IN_FLIGHT`] of them in memory.
pub const PART_BYTES: usize = 8 * 1024 * 1024;

/// Parts of one upload sent at once: bounds an upload's memory to a few parts.
const PARTS_IN_FLIGHT: usize = 2;

/// Longest wait for a connection to the service.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest one request may take, its body included: a download streamed to a slow device
/// takes long, a stalled one is cut eventually.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Retries of a failed request (5xx, connection errors; never 4xx such as a wrong bucket or
/// credentials), and the longest time spent retrying: a service that is down fails a
/// request within seconds instead of minutes.
const MAX_RETRIES: usize = 3;
const RETRY_TIMEOUT: Duration = Duration::from_secs(10);

/// Key, under the prefix, of the object the start-up check writes and deletes.
const PROBE_KEY: &str = "probe/syncline-start";

/// The configured bucket, under its prefix.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    /// Prefix of every key: empty, or ending with `/`.
    prefix: String,
    /// `bucket` or `endpoint/bucket`, for messages (no credentials).
    name: String,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Bucket").field("name", &self.name).field("prefix", &self.prefix).finish()
    }
}

impl Bucket {
    /// Returns a client of the bucket `settings` name; nothing is sent before first use
    /// (see [`Bucket::check`]).
    pub fn open(settings: &S3Settings) -> std::io::Result<Self> {
        let client = ClientOptions::new()
            .with_allow_http(settings.allow_http)
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT);
        let retry = RetryConfig { max_retries: MAX_RETRIES, retry_timeout: RETRY_TIMEOUT, ..RetryConfig::default() };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_allow_http(settings.allow_http)
            .with_client_options(client)
            .with_retry(retry);
        if let Some(endpoint) = &settings.endpoint {
            // Path-style requests (`endpoint/bucket/key`): what MinIO and most
            // S3-compatible services expect.
            builder = builder.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
        }
        if let Some((id, secret)) = &settings.credentials {
            builder = builder.with_access_key_id(id).with_secret_access_key(secret);
        }
        let store = builder.build().map_err(|error| std::io::Error::other(format!("bucket client: {error}")))?;
        let name = match &settings.endpoint {
            Some(endpoint) => format!("{endpoint}/{}", settings.bucket),
            None => settings.bucket.clone(),
        };
        Ok(Self { store: Arc::new(store), prefix: settings.prefix.clone(), name })
    }

    /// Returns the bucket's name (with its endpoint), for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns the path of `key` under the prefix.
    fn path(&self, key: &str) -> ObjectPath {
        ObjectPath::from(format!("{}{key}", self.prefix))
    }

    /// Checks that the bucket exists and these credentials may list, write, read and
    /// delete in it: lists the prefix, then writes, reads back and deletes a small object.
    pub async fn check(&self) -> std::io::Result<()> {
        let path = self.path(PROBE_KEY);
        let fail = |what: &str, error: object_store::Error| {
            std::io::Error::other(format!("cannot {what} in bucket {}: {}", self.name, describe(&error)))
        };
        // Listing names a missing bucket as such (a write to it may not, on some services).
        let root = self.path("probe");
        self.store.list_with_delimiter(Some(&root)).await.map_err(|error| fail("list", error))?;
        self.store.put(&path, Bytes::from_static(b"ok").into()).await.map_err(|error| fail("write", error))?;
        self.store.head(&path).await.map_err(|error| fail("read", error))?;
        self.store.delete(&path).await.map_err(|error| fail("delete", error))?;
        Ok(())
    }

    /// Puts the local file at `file` as object `key` (replacing any), in parts.
    pub async fn put_file(&self, key: &str, file: &Path) -> std::io::Result<()> {
        let mut source = tokio::fs::File::open(file).await?;
        let mut writer = BufWriter::with_capacity(self.store.clone(), self.path(key), PART_BYTES)
            .with_max_concurrency(PARTS_IN_FLIGHT);
        let copied = async {
            tokio::io::copy(&mut source, &mut writer).await?;
            writer.shutdown().await
        }
        .await;
        if let Err(error) = copied {
            if let Err(abort) = writer.abort().await {
                tracing::debug!(%abort, key, "could not abort a failed upload to the bucket");
            }
            return Err(std::io::Error::new(error.kind(), format!("bucket {}: {error}", self.name)));
        }
        Ok(())
    }

    /// Puts the small object `key` (a few kilobytes of metadata) in one request.
    pub async fn put_bytes(&self, key: &str, bytes: Bytes) -> std::io::Result<()> {
        self.store.put(&self.path(key), bytes.into()).await.map(drop).map_err(|error| self.io_error(error))
    }

    /// Returns the small object `key`, if it exists; one larger than `max_bytes` is an
    /// error (never read whole).
    pub async fn get_bytes(&self, key: &str, max_bytes: u64) -> std::io::Result<Option<Bytes>> {
        let result = match self.store.get(&self.path(key)).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(self.io_error(error)),
        };
        if result.meta.size > max_bytes {
            return Err(std::io::Error::other(format!(
                "object {key} has {} bytes, more than expected",
                result.meta.size
            )));
        }
        result.bytes().await.map(Some).map_err(|error| self.io_error(error))
    }

    /// Returns the size and last change of object `key`, if it exists.
    pub async fn head(&self, key: &str) -> std::io::Result<Option<(u64, SystemTime)>> {
        match self.store.head(&self.path(key)).await {
            Ok(meta) => Ok(Some((meta.size, meta.last_modified.into()))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(self.io_error(error)),
        }
    }

    /// Streams `len` bytes of object `key` from offset `start`, as the service sends them.
    pub async fn stream(
        &self,
        key: &str,
        start: u64,
        len: u64,
    ) -> std::io::Result<BoxStream<'static, std::io::Result<Bytes>>> {
        if len == 0 {
            // S3 refuses an empty range, and an empty object has nothing to send.
            return Ok(futures_util::stream::empty().boxed());
        }
        let options = GetOptions { range: Some(GetRange::Bounded(start..start + len)), ..GetOptions::default() };
        let result = self.store.get_opts(&self.path(key), options).await.map_err(|error| self.io_error(error))?;
        let name = self.name.clone();
        Ok(result
            .into_stream()
            .map_err(move |error| std::io::Error::other(format!("bucket {name}: {}", describe(&error))))
            .boxed())
    }

    /// Deletes object `key` (nothing when there is none).
    pub async fn delete(&self, key: &str) -> std::io::Result<()> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(self.io_error(error)),
        }
    }

    /// Lists the objects under `dir` (a key prefix ending with `/`): each key relative to
    /// it, with its size and last change.
    pub async fn list(&self, dir: &str) -> std::io::Result<Vec<(String, u64, SystemTime)>> {
        let root = self.path(dir.trim_end_matches('/'));
        let strip = format!("{root}/");
        let mut listing = self.store.list(Some(&root));
        let mut objects = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|error| self.io_error(error))?;
            let key = meta.location.as_ref().strip_prefix(&strip).unwrap_or(meta.location.as_ref()).to_owned();
            objects.push((key, meta.size, meta.last_modified.into()));
        }
        Ok(objects)
    }

    fn io_error(&self, error: object_store::Error) -> std::io::Error {
        let kind = match error {
            object_store::Error::NotFound { .. } => ErrorKind::NotFound,
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
                ErrorKind::PermissionDenied
            }
            _ => ErrorKind::Other,
        };
        std::io::Error::new(kind, format!("bucket {}: {}", self.name, describe(&error)))
    }
}

/// Describes an `object_store` error on one line (its chain of causes: the service's own
/// message, such as NoSuchBucket or InvalidAccessKeyId, is at the end).
fn describe(error: &object_store::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text.replace('\n', " ")
}

/// Key directory of blob bytes under the prefix.
const BLOBS_DIR: &str = "blobs/";

/// Blob bytes in the bucket, at `<prefix>blobs/<hash>`.
#[derive(Clone, Debug)]
pub struct BucketBlobs {
    bucket: Bucket,
}

impl BucketBlobs {
    /// Keeps blob bytes in `bucket`.
    pub fn new(bucket: Bucket) -> Self {
        Self { bucket }
    }

    fn key(hash: &str) -> String {
        format!("{BLOBS_DIR}{hash}")
    }
}

impl BlobBytes for BucketBlobs {
    fn size<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, std::io::Result<Option<u64>>> {
        Box::pin(async move { Ok(self.bucket.head(&Self::key(hash)).await?.map(|(size, _)| size)) })
    }

    fn put_verified<'a>(&'a self, hash: &'a str, file: &'a Path) -> BoxFuture<'a, std::io::Result<()>> {
        Box::pin(async move {
            self.bucket.put_file(&Self::key(hash), file).await?;
            match tokio::fs::remove_file(file).await {
                Ok(()) => Ok(()),
                Err(error) if error.kind() == ErrorKind::NotFound => Ok(()),
                Err(error) => Err(error),
            }
        })
    }

    fn open<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, std::io::Result<Option<BlobReader>>> {
        Box::pin(async move {
            let key = Self::key(hash);
            Ok(self.bucket.head(&key).await?.map(|(size, _)| BlobReader::bucket(size, self.bucket.clone(), key)))
        })
    }

    fn delete<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, std::io::Result<()>> {
        Box::pin(async move { self.bucket.delete(&Self::key(hash)).await })
    }

    fn list(&self) -> BoxFuture<'_, std::io::Result<Vec<StoredBlob>>> {
        Box::pin(async move {
            let objects = self.bucket.list(BLOBS_DIR).await?;
            Ok(objects.into_iter().map(|(hash, size, modified)| StoredBlob { hash, size, modified }).collect())
        })
    }

    fn check(&self) -> BoxFuture<'_, std::io::Result<()>> {
        Box::pin(self.bucket.check())
    }

    fn describe(&self) -> String {
        format!("bucket {}", self.bucket.name())
    }
}
