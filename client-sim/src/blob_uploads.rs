//! The device's blobs: [`LocalBlobs`], the bytes of the files the app attached to records
//! (kept until uploaded, and what it downloaded), and the uploads the device task runs in
//! the background while connected, one blob at a time, before the mutations that reference
//! them are sent.
//!
//! Policy: a mutation that references a blob waits (with the later mutations of its
//! source) until the server holds the blob. After each `Welcome` the task uploads, in queue
//! order, every blob an unfinished mutation references and the server is not known to hold;
//! an upload asks first what the server holds (nothing is sent again for a stored blob) and
//! resumes after a cut. A blob the server refuses for good (over its size limit, or bytes
//! that do not match the hash) fails the mutations that reference it, which stay queued as
//! failed for the app to retry or discard: the record is never lost. A blob whose bytes
//! are missing locally fails them the same way.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use syncline_proto::v1::{Blob, ErrorCode, Value};
use tokio::task::JoinHandle;

use crate::blob_transfer::{BlobClient, BlobTransferError, blob_hash, blob_of};
use crate::device::DeviceHandle;
use crate::engine::{Reaction, SyncEngine};

/// The bytes of the device's blobs, by hash: files in a directory, or memory.
#[derive(Debug)]
pub struct LocalBlobs {
    dir: Option<PathBuf>,
    memory: Mutex<HashMap<String, Arc<Vec<u8>>>>,
}

impl LocalBlobs {
    /// Keeps blobs in the directory `dir` (created with the first blob), or in memory when
    /// `None`.
    pub fn new(dir: Option<&Path>) -> Self {
        Self { dir: dir.map(Path::to_owned), memory: Mutex::default() }
    }

    /// Keeps `bytes`; returns their hash.
    pub fn put(&self, bytes: &[u8]) -> std::io::Result<String> {
        let hash = blob_hash(bytes);
        match &self.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                let target = dir.join(&hash);
                if !target.exists() {
                    // Written aside, then renamed: a crash never leaves a torn blob under its hash.
                    let temporary = dir.join(format!("{hash}.partial"));
                    std::fs::write(&temporary, bytes)?;
                    std::fs::rename(&temporary, &target)?;
                }
            }
            None => {
                self.memory.lock().insert(hash.clone(), Arc::new(bytes.to_vec()));
            }
        }
        Ok(hash)
    }

    /// Returns the bytes of blob `hash`, if the device has them.
    pub fn get(&self, hash: &str) -> std::io::Result<Option<Arc<Vec<u8>>>> {
        match &self.dir {
            Some(dir) => match std::fs::read(dir.join(hash)) {
                Ok(bytes) => Ok(Some(Arc::new(bytes))),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(error) => Err(error),
            },
            None => Ok(self.memory.lock().get(hash).cloned()),
        }
    }
}

/// How one background upload ended.
#[derive(Debug)]
pub(crate) struct UploadDone {
    hash: String,
    result: Result<(), BlobTransferError>,
}

/// The device task's background uploads: at most one at a time.
#[derive(Debug)]
pub(crate) struct BlobUploads {
    client: Option<BlobClient>,
    local: Arc<LocalBlobs>,
    running: Option<JoinHandle<UploadDone>>,
    /// An upload failed on the network or the server: none starts again on this connection.
    stalled: bool,
}

impl BlobUploads {
    /// Returns uploads through `client` (none when the server's URL gave no client) of the
    /// bytes in `local`.
    pub(crate) fn new(client: Option<BlobClient>, local: Arc<LocalBlobs>) -> Self {
        Self { client, local, running: None, stalled: false }
    }

    /// Returns true while an upload runs.
    pub(crate) fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Stops the running upload, for a new connection (which resumes it).
    pub(crate) fn restart(&mut self) {
        if let Some(task) = self.running.take() {
            task.abort();
        }
        self.stalled = false;
    }

    /// Starts uploading the next blob queued mutations need, unless one is running or the
    /// device is not welcomed; returns what the engine makes of a blob that cannot even
    /// start (its bytes are missing here).
    pub(crate) fn start_next(&mut self, engine: &Mutex<SyncEngine>) -> Option<Reaction> {
        if self.running.is_some() || self.stalled {
            return None;
        }
        let client = self.client.clone()?;
        let (token, blob) = {
            let engine = engine.lock();
            let token = engine.blob_token()?.to_owned();
            (token, engine.blobs_to_upload().into_iter().next()?)
        };
        let bytes = match self.local.get(&blob.hash) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                let message = "the device does not have the blob's bytes";
                return Some(engine.lock().on_blob_refused(&blob.hash, ErrorCode::NotFound, message));
            }
            Err(error) => {
                let message = format!("the device cannot read the blob: {error}");
                return Some(engine.lock().on_blob_refused(&blob.hash, ErrorCode::Internal, &message));
            }
        };
        self.running = Some(tokio::spawn(upload(client, token, blob, bytes)));
        None
    }

    /// Waits for the running upload to end (forever when none runs) and applies its end to
    /// the engine; returns the frames and notifications that follow.
    pub(crate) async fn finished(&mut self, engine: &Mutex<SyncEngine>) -> Reaction {
        let Some(task) = self.running.as_mut() else { return std::future::pending().await };
        let done = task.await;
        self.running = None;
        let done = match done {
            Ok(done) => done,
            Err(error) => {
                tracing::debug!(%error, "blob upload task ended without an answer");
                return Reaction::default();
            }
        };
        let mut engine = engine.lock();
        match done.result {
            Ok(()) => Reaction { frames: engine.on_blob_uploaded(&done.hash), ..Reaction::default() },
            Err(BlobTransferError::Refused { code, message }) => engine.on_blob_refused(&done.hash, code, &message),
            Err(error @ (BlobTransferError::Transient(_) | BlobTransferError::Unauthenticated(_))) => {
                // Tried again on the next connection.
                self.stalled = true;
                tracing::info!(%error, hash = %done.hash, "blob upload failed; retrying after reconnecting");
                Reaction::default()
            }
            Err(error @ BlobTransferError::Corrupt { .. }) => {
                engine.on_blob_refused(&done.hash, ErrorCode::Internal, &error.to_string())
            }
        }
    }
}

async fn upload(client: BlobClient, token: String, blob: Blob, bytes: Arc<Vec<u8>>) -> UploadDone {
    let result = client.upload(&token, &blob, &bytes).await;
    UploadDone { hash: blob.hash, result }
}

impl DeviceHandle {
    /// Keeps `bytes` on the device (see [`crate::DeviceConfig::blob_dir`]) and returns the `blob`
    /// value that references them, for a field of a record the app creates or updates. The
    /// device uploads the bytes before it sends that mutation (see [`crate::blob_uploads`]).
    pub fn attach_blob(&self, bytes: &[u8], media_type: &str, name: &str) -> std::io::Result<Value> {
        self.blobs.put(bytes)?;
        Ok(Value::blob(blob_of(bytes, media_type, name)))
    }

    /// Returns the bytes of `blob`: from the device when it has them, else downloaded
    /// (resuming after cuts, checked against the hash) and kept. `record` names the record
    /// that references the blob, as `(source, key, id)`: the server lets whoever may read it
    /// download the blob. Needs a connection (the session token) for a download.
    pub async fn blob(&self, blob: &Blob, record: Option<(&str, &str, &str)>) -> Result<Vec<u8>, BlobTransferError> {
        let local = |error: std::io::Error| BlobTransferError::Transient(format!("the device's blob store: {error}"));
        if let Some(bytes) = self.blobs.get(&blob.hash).map_err(local)? {
            return Ok(bytes.as_ref().clone());
        }
        let Some(client) = &self.blob_client else {
            return Err(BlobTransferError::Transient("the server's URL has no blob endpoint".to_owned()));
        };
        let token = self.engine.lock().blob_token().map(str::to_owned);
        let token = token.ok_or_else(|| BlobTransferError::Transient("not connected".to_owned()))?;
        let bytes = client.download(&token, blob, record).await?;
        self.blobs.put(&bytes).map_err(local)?;
        Ok(bytes)
    }
}
