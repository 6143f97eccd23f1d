//! The blob directory, which holds uploads in progress on every configuration and the
//! complete blobs when no bucket is configured (it is then the [`BlobBytes`] of the
//! service): complete blobs at `<dir>/<hash[..2]>/<hash>` (so no directory holds
//! more than a 256th of them), uploads in progress at `<dir>/partial/<hash>.<uploader>`
//! (one per uploading device, so two devices uploading the same file do not mix their
//! bytes). A partial file becomes a blob only after its SHA-256 matches, it is fsynced, and
//! it is renamed into place (atomic), with the directory fsynced after: a crash leaves
//! either no blob or the whole verified blob.
//!
//! Partial files are not fsynced per piece: after a crash a device learns from `HEAD` how
//! many bytes survived and resumes from there; bytes a crash garbled fail the final hash
//! check, which discards the upload.

use std::io::{ErrorKind, Read as _};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{Stream, StreamExt as _};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use super::blob_bytes::{BlobBytes, BlobReader, READ_CHUNK_BYTES, StoredBlob};
use super::{BlobError, Result, hex};

/// Sub-directory of uploads in progress.
const PARTIAL_DIR: &str = "partial";

/// A piece's body, as the HTTP layer hands it over.
pub(super) type Body<'a, E> = Pin<Box<dyn Stream<Item = std::result::Result<Bytes, E>> + Send + 'a>>;

/// The blob directory.
#[derive(Clone, Debug)]
pub struct BlobFiles {
    dir: Arc<PathBuf>,
}

impl BlobFiles {
    /// Opens (creating) the blob directory `dir`.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir.join(PARTIAL_DIR))?;
        Ok(Self { dir: Arc::new(dir.to_owned()) })
    }

    /// Returns where blob `hash` is stored once complete.
    pub fn path(&self, hash: &str) -> PathBuf {
        self.dir.join(&hash[..2]).join(hash)
    }

    /// Returns where `client_id`'s upload of `hash` is kept until complete.
    fn partial_path(&self, hash: &str, client_id: &str) -> PathBuf {
        // Client ids are chosen by the server, but a hash keeps any of them a safe file name.
        let uploader = hex(&Sha256::digest(client_id.as_bytes())[..8]);
        self.dir.join(PARTIAL_DIR).join(format!("{hash}.{uploader}"))
    }

    /// Returns the size of stored blob `hash`, if it is stored.
    pub async fn stored_size(&self, hash: &str) -> std::io::Result<Option<u64>> {
        file_len(&self.path(hash)).await
    }

    /// Returns how many bytes of `client_id`'s upload of `hash` are held (0: none).
    pub(super) async fn partial_len(&self, hash: &str, client_id: &str) -> std::io::Result<u64> {
        Ok(file_len(&self.partial_path(hash, client_id)).await?.unwrap_or(0))
    }

    /// Appends at most `declared` bytes of `body` to `client_id`'s upload of `hash`; returns
    /// the bytes held after it. A body cut short keeps what arrived (the device resumes from
    /// there); a body longer than declared is refused after its declared bytes are kept.
    pub(super) async fn append<E: std::fmt::Display>(
        &self,
        hash: &str,
        client_id: &str,
        declared: u64,
        mut body: Body<'static, E>,
    ) -> Result<u64> {
        let path = self.partial_path(hash, client_id);
        let mut file = tokio::fs::OpenOptions::new().create(true).append(true).open(&path).await?;
        let mut written = 0u64;
        let mut outcome = Ok(());
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => {
                    tracing::debug!(%error, hash, written, "an upload's body ended early; its bytes are kept");
                    break;
                }
            };
            let room = declared - written;
            let take = usize::try_from(room).map_or(chunk.len(), |room| room.min(chunk.len()));
            file.write_all(&chunk[..take]).await?;
            written += take as u64;
            if take < chunk.len() {
                outcome = Err(BlobError::BodyTooLong { declared });
                break;
            }
        }
        file.flush().await?;
        let held = file.metadata().await?.len();
        outcome.map(|()| held)
    }

    /// Deletes `client_id`'s partial upload of `hash`, if any.
    pub(super) async fn discard_partial(&self, hash: &str, client_id: &str) -> std::io::Result<()> {
        match tokio::fs::remove_file(self.partial_path(hash, client_id)).await {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Checks the SHA-256 of `client_id`'s complete upload of `hash` (a mismatch deletes
    /// the upload) and fsyncs it; returns where the verified file is and its size, for
    /// [`BlobBytes::put_verified`].
    pub(super) async fn verify(&self, hash: &str, client_id: &str) -> Result<(PathBuf, u64)> {
        let partial = self.partial_path(hash, client_id);
        let expected = hash.to_owned();
        let done = tokio::task::spawn_blocking(move || -> Result<(PathBuf, u64)> {
            let mut file = std::fs::File::open(&partial)?;
            let mut hasher = Sha256::new();
            let mut buffer = vec![0; READ_CHUNK_BYTES];
            let mut size = 0u64;
            loop {
                let read = file.read(&mut buffer)?;
                if read == 0 {
                    break;
                }
                hasher.update(&buffer[..read]);
                size += read as u64;
            }
            let actual = hex(&hasher.finalize());
            if actual != expected {
                std::fs::remove_file(&partial)?;
                return Err(BlobError::HashMismatch { expected, actual });
            }
            file.sync_all()?;
            Ok((partial, size))
        })
        .await;
        done.unwrap_or_else(|error| Err(std::io::Error::other(format!("blob task failed: {error}")).into()))
    }

    /// Renames the verified file at `verified` into place as blob `hash` and fsyncs the
    /// directory.
    fn store_verified(&self, hash: &str, verified: &Path) -> std::io::Result<()> {
        let target = self.path(hash);
        let parent = target.parent().ok_or_else(|| std::io::Error::other("a blob path has no parent"))?;
        std::fs::create_dir_all(parent)?;
        std::fs::rename(verified, &target)?;
        std::fs::File::open(parent)?.sync_all()
    }

    /// Opens stored blob `hash` for reading.
    pub async fn open_blob(&self, hash: &str) -> std::io::Result<Option<BlobReader>> {
        match tokio::fs::File::open(self.path(hash)).await {
            Ok(file) => {
                let size = file.metadata().await?.len();
                Ok(Some(BlobReader::file(size, file)))
            }
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Deletes stored blob `hash`; returns false when it was not there.
    pub(super) fn remove(&self, hash: &str) -> std::io::Result<bool> {
        match std::fs::remove_file(self.path(hash)) {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Deletes partial uploads last written before `cutoff`; returns how many.
    pub(super) fn remove_partials_before(&self, cutoff: SystemTime) -> std::io::Result<u64> {
        let mut removed = 0;
        for entry in std::fs::read_dir(self.dir.join(PARTIAL_DIR))? {
            let entry = entry?;
            let modified = entry.metadata()?.modified()?;
            if modified < cutoff {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(error) if error.kind() == ErrorKind::NotFound => {}
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(removed)
    }
}

/// Lists the complete blobs of `dir`: the files of its two-hex-digit sub-directories.
fn list_blobs(dir: &Path) -> std::io::Result<Vec<StoredBlob>> {
    let mut blobs = Vec::new();
    for shard in std::fs::read_dir(dir)? {
        let shard = shard?;
        let name = shard.file_name();
        let is_shard = name.len() == 2 && name.to_str().is_some_and(|name| name.chars().all(|c| c.is_ascii_hexdigit()));
        if !is_shard || !shard.file_type()?.is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(shard.path())? {
            let entry = entry?;
            let Some(hash) = entry.file_name().to_str().map(str::to_owned) else { continue };
            let metadata = match entry.metadata() {
                Ok(metadata) => metadata,
                // Deleted meanwhile.
                Err(error) if error.kind() == ErrorKind::NotFound => continue,
                Err(error) => return Err(error),
            };
            blobs.push(StoredBlob { hash, size: metadata.len(), modified: metadata.modified()? });
        }
    }
    Ok(blobs)
}

/// Runs blocking file work off the async threads.
async fn blocking_io<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|error| Err(std::io::Error::other(format!("blob task failed: {error}"))))
}

impl BlobBytes for BlobFiles {
    fn size<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, std::io::Result<Option<u64>>> {
        Box::pin(self.stored_size(hash))
    }

    fn put_verified<'a>(&'a self, hash: &'a str, file: &'a Path) -> BoxFuture<'a, std::io::Result<()>> {
        let (files, hash, file) = (self.clone(), hash.to_owned(), file.to_owned());
        Box::pin(blocking_io(move || files.store_verified(&hash, &file)))
    }

    fn open<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, std::io::Result<Option<BlobReader>>> {
        Box::pin(self.open_blob(hash))
    }

    fn delete<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, std::io::Result<()>> {
        let (files, hash) = (self.clone(), hash.to_owned());
        Box::pin(blocking_io(move || files.remove(&hash).map(drop)))
    }

    fn list(&self) -> BoxFuture<'_, std::io::Result<Vec<StoredBlob>>> {
        let dir = self.dir.clone();
        Box::pin(blocking_io(move || list_blobs(&dir)))
    }

    fn check(&self) -> BoxFuture<'_, std::io::Result<()>> {
        // Opening the directory created it; a full disk or lost permissions show on use.
        Box::pin(std::future::ready(Ok(())))
    }

    fn describe(&self) -> String {
        format!("directory {}", self.dir.display())
    }
}

/// Returns the length of the file at `path`, if there is one.
async fn file_len(path: &Path) -> std::io::Result<Option<u64>> {
    match tokio::fs::metadata(path).await {
        Ok(metadata) => Ok(Some(metadata.len())),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}
