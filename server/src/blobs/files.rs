//! The blob directory: complete blobs at `<dir>/<hash[..2]>/<hash>` (so no directory holds
//! more than a 256th of them), uploads in progress at `<dir>/partial/<hash>.<uploader>`
//! (one per uploading device, so two devices uploading the same file do not mix their
//! bytes). A partial file becomes a blob only after its SHA-256 matches, it is fsynced, and
//! it is renamed into place (atomic), with the directory fsynced after: a crash leaves
//! either no blob or the whole verified blob.
//!
//! Partial files are not fsynced per piece: after a crash a device learns from `HEAD` how
//! many bytes survived and resumes from there; bytes a crash garbled fail the final hash
//! check, which discards the upload.

use std::io::{ErrorKind, Read as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};

use super::{BlobError, Result, hex};

/// Sub-directory of uploads in progress.
const PARTIAL_DIR: &str = "partial";

/// Bytes read at a time when hashing or serving a blob: large enough for few system calls,
/// small enough that many downloads at once hold little memory.
pub(super) const READ_CHUNK_BYTES: usize = 64 * 1024;

/// A piece's body, as the HTTP layer hands it over.
pub(super) type Body<'a, E> = Pin<Box<dyn Stream<Item = std::result::Result<Bytes, E>> + Send + 'a>>;

/// The blob directory.
#[derive(Clone, Debug)]
pub struct BlobFiles {
    dir: Arc<PathBuf>,
}

/// An open blob, ready to stream.
#[derive(Debug)]
pub struct BlobReader {
    /// The blob's size in bytes.
    pub size: u64,
    file: tokio::fs::File,
}

impl BlobReader {
    /// Streams `len` bytes from offset `start`, [`READ_CHUNK_BYTES`] at a time: the blob is
    /// never held in memory whole.
    pub async fn stream(mut self, start: u64, len: u64) -> std::io::Result<impl Stream<Item = std::io::Result<Bytes>>> {
        self.file.seek(SeekFrom::Start(start)).await?;
        Ok(futures_util::stream::unfold((self.file, len), |(mut file, left)| async move {
            if left == 0 {
                return None;
            }
            let want = usize::try_from(left).map_or(READ_CHUNK_BYTES, |left| left.min(READ_CHUNK_BYTES));
            let mut buffer = vec![0; want];
            match file.read(&mut buffer).await {
                Ok(0) => {
                    Some((Err(std::io::Error::new(ErrorKind::UnexpectedEof, "the blob file is shorter")), (file, 0)))
                }
                Ok(read) => {
                    buffer.truncate(read);
                    Some((Ok(Bytes::from(buffer)), (file, left - read as u64)))
                }
                Err(error) => Some((Err(error), (file, 0))),
            }
        }))
    }
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

    /// Makes `client_id`'s upload of `hash` the stored blob: checks its SHA-256 (a mismatch
    /// deletes the upload), fsyncs it, renames it into place and fsyncs the directory.
    /// Returns its size.
    pub(super) async fn complete(&self, hash: &str, client_id: &str) -> Result<u64> {
        let partial = self.partial_path(hash, client_id);
        let target = self.path(hash);
        let expected = hash.to_owned();
        let done = tokio::task::spawn_blocking(move || -> Result<u64> {
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
            let parent = target.parent().ok_or_else(|| std::io::Error::other("a blob path has no parent"))?;
            std::fs::create_dir_all(parent)?;
            std::fs::rename(&partial, &target)?;
            std::fs::File::open(parent)?.sync_all()?;
            Ok(size)
        })
        .await;
        done.unwrap_or_else(|error| Err(std::io::Error::other(format!("blob task failed: {error}")).into()))
    }

    /// Opens stored blob `hash` for reading.
    pub async fn open_blob(&self, hash: &str) -> std::io::Result<Option<BlobReader>> {
        match tokio::fs::File::open(self.path(hash)).await {
            Ok(file) => {
                let size = file.metadata().await?.len();
                Ok(Some(BlobReader { size, file }))
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

/// Returns the length of the file at `path`, if there is one.
async fn file_len(path: &Path) -> std::io::Result<Option<u64>> {
    match tokio::fs::metadata(path).await {
        Ok(metadata) => Ok(Some(metadata.len())),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}
