//! Bulk sync: whole partitions as SQLite files a device downloads instead of paging through
//! them (`docs/BULK.md`).
//!
//! - this file: [`BulkSnapshots`], the service the gateway (BulkRequest), the device
//!   listener's HTTP routes (downloads) and the admin API (a trigger) share: it accepts
//!   durable jobs, writes or reuses one file per partition, grants download tokens and
//!   authorizes downloads; its background task resumes unfinished jobs at start and deletes
//!   expired files. [`BulkError`] is its one error type.
//! - `writer`: one partition into one file at one consistent sequence, streamed from the
//!   store in pages, in one transaction, to a temporary file renamed into place.
//! - `catalog`: the finished files (rebuilt at start from their `meta` tables), which one
//!   a request may reuse, and which are expired.
//! - `pending`: the manifests that make accepted jobs survive a restart.
//! - `tokens`: HMAC-signed download tokens scoped to one file and one user.
//! - `shared`: the copies of files in the S3-compatible bucket (`[blob.s3]`), which let any
//!   node of a cluster serve any file.

mod catalog;
mod pending;
mod shared;
pub mod tokens;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use syncline_proto::v1;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::catalog::{BulkFile, FileCatalog, read_file_meta};
pub use self::pending::JobManifest;
use self::pending::PendingJobs;
pub use self::shared::SharedFiles;
pub use self::tokens::{TokenClaims, TokenError, TokenSigner};
pub use self::writer::{READ_BATCH, WrittenSnapshot, write_partition};
use crate::config::{BulkSettings, Partitioning, SourceSettings};
use crate::error::ErrorClass;
use crate::model::AccessError;
use crate::storage::{PartitionName, Store, StoreError};

/// The path files are downloaded under on the device listener: `/v1/bulk/{file id}`.
pub const DOWNLOAD_PATH: &str = "/v1/bulk";

/// Most sources one request may name.
pub const MAX_SOURCES_PER_REQUEST: usize = 64;

/// Longest request id accepted, in bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// Why a bulk request, job or download failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BulkError {
    /// The store failed to read the partition.
    #[error("the store failed: {message}")]
    Store { class: ErrorClass, message: String },
    /// SQLite failed to write or read a file.
    #[error("bulk file: {0}")]
    Sqlite(String),
    /// The file system failed.
    #[error("cannot {what}: {message}")]
    Io { what: String, message: String },
    /// The partition moved faster than it could be read, or compaction kept passing it.
    #[error("partition {partition} changes too fast to snapshot; retry later or page through it")]
    Moving { partition: String },
    /// The file written does not match the store's count and checksum (a bug, or the store
    /// changed under the reader without a log entry).
    #[error("the snapshot of {partition} holds {written:?} (records, checksum), the store {expected:?}")]
    Inconsistent { partition: String, expected: (u64, u64), written: (u64, u64) },
    /// The request names a partition the user may not read, or a source that is unknown.
    #[error("{0}")]
    Access(AccessError),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// Too many jobs are waiting already.
    #[error("{0} bulk jobs are queued already; retry later")]
    Busy(usize),
    /// The server is stopping; the job resumes at its next start.
    #[error("the server is stopping; ask again after reconnecting")]
    Stopping,
    /// A download without a bearer token.
    #[error("a download needs the header Authorization: Bearer <token> from BulkReady")]
    MissingToken,
    /// A download with a token that is not valid (forged, malformed or expired).
    #[error("{0}")]
    Token(TokenError),
    /// A download with a valid token for another file, or of another user's partition.
    #[error("{0}")]
    Forbidden(String),
    /// A download of a file that does not exist (never, or collected).
    #[error("no bulk file {0} (files are deleted after a while: ask for a new one)")]
    UnknownFile(String),
    /// Anything else.
    #[error("{0}")]
    Internal(String),
}

impl BulkError {
    /// Returns the class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            BulkError::Store { class, .. } => *class,
            BulkError::Sqlite(_) | BulkError::Io { .. } | BulkError::Inconsistent { .. } | BulkError::Internal(_) => {
                ErrorClass::Internal
            }
            BulkError::Moving { .. } | BulkError::Stopping => ErrorClass::Unavailable,
            BulkError::Access(error) => error.class(),
            BulkError::BadRequest(_) => ErrorClass::BadRequest,
            BulkError::Busy(_) => ErrorClass::ResourceExhausted,
            BulkError::MissingToken | BulkError::Token(_) => ErrorClass::Unauthenticated,
            BulkError::Forbidden(_) => ErrorClass::Forbidden,
            BulkError::UnknownFile(_) => ErrorClass::NotFound,
        }
    }

    pub(crate) fn io(what: impl Into<String>, error: std::io::Error) -> Self {
        BulkError::Io { what: what.into(), message: error.to_string() }
    }
}

impl From<StoreError> for BulkError {
    fn from(error: StoreError) -> Self {
        BulkError::Store { class: error.class(), message: error.to_string() }
    }
}

impl From<rusqlite::Error> for BulkError {
    fn from(error: rusqlite::Error) -> Self {
        BulkError::Sqlite(error.to_string())
    }
}

/// What a job made of one partition.
#[derive(Clone, Debug)]
pub enum PartitionOutcome {
    /// A file to download.
    File(Arc<BulkFile>),
    /// The partition is below the request's `min_records`: page through it instead.
    PageInstead(PartitionName),
}

/// A partition's write in progress, which other requests for it wait on.
type Inflight = watch::Receiver<Option<Result<Arc<BulkFile>, BulkError>>>;

/// Bulk snapshot files: jobs, the file cache, tokens and downloads.
pub struct BulkSnapshots {
    store: Arc<dyn Store>,
    sources: BTreeMap<String, SourceSettings>,
    settings: BulkSettings,
    catalog: FileCatalog,
    pending: PendingJobs,
    signer: TokenSigner,
    inflight: Mutex<HashMap<PartitionName, Inflight>>,
    writers: Semaphore,
    queued: AtomicUsize,
    /// The bucket every written file is also put in, when configured.
    shared: Option<SharedFiles>,
}

/// Where a download's bytes come from.
#[derive(Debug)]
pub enum FileLocation {
    /// This node's disk.
    Local(PathBuf),
    /// The bucket (the file was written by another node).
    Shared(SharedFiles),
}

impl std::fmt::Debug for BulkSnapshots {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("BulkSnapshots").field("dir", &self.settings.dir).finish_non_exhaustive()
    }
}

impl BulkSnapshots {
    /// Opens the bulk directory (its catalog and pending jobs) and the token secret; blocks
    /// on disk and the store.
    pub fn open(
        store: Arc<dyn Store>,
        sources: BTreeMap<String, SourceSettings>,
        settings: BulkSettings,
    ) -> Result<Self, BulkError> {
        let catalog = FileCatalog::open(&settings.dir)?;
        let pending = PendingJobs::open(&settings.dir)?;
        let secret = store.secret(tokens::TOKEN_SECRET_NAME, &random_secret)?;
        Ok(Self {
            store,
            sources,
            catalog,
            pending,
            signer: TokenSigner::new(secret),
            inflight: Mutex::new(HashMap::new()),
            writers: Semaphore::new(settings.max_concurrent_writes),
            queued: AtomicUsize::new(0),
            shared: None,
            settings,
        })
    }

    /// Puts every file written from now on in `bucket` too (under `bulk/`), and serves
    /// files other nodes wrote from it.
    #[must_use]
    pub fn with_bucket(mut self, bucket: Option<crate::blobs::Bucket>) -> Self {
        self.shared = bucket.map(SharedFiles::new);
        self
    }

    /// Returns the settings.
    pub fn settings(&self) -> &BulkSettings {
        &self.settings
    }

    /// Returns the finished files.
    pub fn catalog(&self) -> &FileCatalog {
        &self.catalog
    }

    /// Returns the token signer (tests forge and expire tokens with it).
    pub fn signer(&self) -> &TokenSigner {
        &self.signer
    }

    /// Accepts a job for `partitions` on behalf of `user_id`: records its manifest durably
    /// and returns it, or refuses it when `bulk.max_queued_jobs` are waiting already.
    pub async fn accept(
        &self,
        user_id: &str,
        request_id: &str,
        partitions: &[PartitionName],
        min_records: u64,
    ) -> Result<JobManifest, BulkError> {
        let queued = self.queued.fetch_add(1, Ordering::SeqCst);
        if queued >= self.settings.max_queued_jobs {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(BulkError::Busy(queued));
        }
        let job = JobManifest {
            job_id: crate::auth::new_client_id(),
            user_id: user_id.to_owned(),
            request_id: request_id.to_owned(),
            partitions: partitions.iter().map(|name| (name.source.clone(), name.key.clone())).collect(),
            min_records,
            created_ms: crate::auth::now_ms(),
        };
        let recorded = {
            let job = job.clone();
            let pending = self.pending_handle();
            tokio::task::spawn_blocking(move || pending.record(&job))
                .await
                .map_err(|error| BulkError::Internal(format!("blocking task failed: {error}")))?
        };
        if let Err(error) = recorded {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(error);
        }
        Ok(job)
    }

    /// Runs an accepted job: a file per partition (written, or reused), or "page instead"
    /// for partitions below the job's `min_records`; then forgets its manifest. A failure
    /// leaves the manifest only when the server is stopping (the job resumes at start).
    pub async fn run(&self, job: &JobManifest) -> Result<Vec<PartitionOutcome>, BulkError> {
        let result = self.run_partitions(job).await;
        self.queued.fetch_sub(1, Ordering::SeqCst);
        if !matches!(result, Err(BulkError::Stopping)) {
            self.pending.finish(&job.job_id);
        }
        result
    }

    async fn run_partitions(&self, job: &JobManifest) -> Result<Vec<PartitionOutcome>, BulkError> {
        let mut outcomes = Vec::with_capacity(job.partitions.len());
        for partition in job.partition_names() {
            let state = self.partition_state(&partition).await?;
            if state.total < job.min_records {
                outcomes.push(PartitionOutcome::PageInstead(partition));
                continue;
            }
            outcomes.push(PartitionOutcome::File(self.snapshot(&partition).await?));
        }
        Ok(outcomes)
    }

    /// Returns a file of `partition`: a cached one that is recent enough (see
    /// [`FileCatalog::reusable`]), the one being written for another request, or a new one.
    pub async fn snapshot(&self, partition: &PartitionName) -> Result<Arc<BulkFile>, BulkError> {
        let state = self.partition_state(partition).await?;
        let max_age_ms = (self.settings.file_ttl.as_millis() / 2) as i64;
        let now = crate::auth::now_ms();
        if let Some(file) = self.catalog.reusable(partition, &state, self.settings.reuse_changes, now, max_age_ms) {
            return Ok(file);
        }
        let (mut receiver, leader) = {
            let mut inflight = self.inflight.lock();
            match inflight.get(partition) {
                Some(receiver) => (receiver.clone(), None),
                None => {
                    let (sender, receiver) = watch::channel(None);
                    inflight.insert(partition.clone(), receiver.clone());
                    (receiver, Some(sender))
                }
            }
        };
        if let Some(sender) = leader {
            let _forget = InflightGuard { inflight: &self.inflight, partition };
            let written = self.write(partition).await;
            sender.send_replace(Some(written.clone()));
            return written;
        }
        match receiver.wait_for(Option::is_some).await {
            Ok(done) => done.clone().unwrap_or(Err(BulkError::Stopping)),
            // The writing request was dropped (the server is stopping).
            Err(_) => Err(BulkError::Stopping),
        }
    }

    async fn write(&self, partition: &PartitionName) -> Result<Arc<BulkFile>, BulkError> {
        let _permit = self.writers.acquire().await.map_err(|_| BulkError::Stopping)?;
        let id = crate::auth::new_client_id();
        let path = self.catalog.path(&id);
        let created_ms = crate::auth::now_ms();
        let store = self.store.clone();
        let name = partition.clone();
        let started = std::time::Instant::now();
        let written = tokio::task::spawn_blocking(move || write_partition(store.as_ref(), &name, &path, created_ms))
            .await
            .map_err(|error| BulkError::Internal(format!("blocking task failed: {error}")))??;
        tracing::info!(
            %partition,
            file = %id,
            records = written.record_count,
            bytes = written.bytes,
            sequence = written.sequence,
            millis = started.elapsed().as_millis() as u64,
            "bulk file written"
        );
        let file = BulkFile {
            id,
            partition: partition.clone(),
            sequence: written.sequence,
            checksum: written.checksum,
            record_count: written.record_count,
            bytes: written.bytes,
            created_ms,
        };
        if let Some(shared) = &self.shared {
            // Before the file is handed out: a device whose node dies mid-download resumes
            // from the bucket on another. A bucket that fails leaves the file served here only.
            if let Err(error) = shared.put(&file, &self.catalog.path(&file.id)).await {
                tracing::warn!(file = %file.id, %error, "bulk file not shared: only this node serves it");
            }
        }
        Ok(self.catalog.insert(file))
    }

    async fn partition_state(&self, partition: &PartitionName) -> Result<crate::storage::PartitionState, BulkError> {
        let store = self.store.clone();
        let name = partition.clone();
        let state = tokio::task::spawn_blocking(move || store.partition_state(&name))
            .await
            .map_err(|error| BulkError::Internal(format!("blocking task failed: {error}")))??;
        Ok(state)
    }

    /// Returns what a device needs to download `file` as `user_id`: its URL and a token for
    /// it and that user, valid for `bulk.token_ttl_secs`.
    pub fn grant(&self, file: &BulkFile, user_id: &str) -> v1::BulkFile {
        let expires_ms = crate::auth::now_ms().saturating_add(self.settings.token_ttl.as_millis() as i64);
        let claims = TokenClaims { file_id: file.id.clone(), user_id: user_id.to_owned(), expires_ms };
        let base = self.settings.public_url.as_deref().unwrap_or("").trim_end_matches('/');
        v1::BulkFile {
            source: file.partition.source.clone(),
            key: file.partition.key.clone(),
            url: format!("{base}{DOWNLOAD_PATH}/{}", file.id),
            token: self.signer.issue(&claims),
            token_expires_at_ms: expires_ms,
            sequence: file.sequence,
            record_count: file.record_count,
            checksum: file.checksum,
            bytes: file.bytes,
        }
    }

    /// Returns the answer to a device's request `request_id` from its job's outcome.
    pub fn ready(
        &self,
        request_id: &str,
        user_id: &str,
        outcome: Result<Vec<PartitionOutcome>, BulkError>,
    ) -> v1::BulkReady {
        let outcomes = match outcome {
            Ok(outcomes) => outcomes,
            Err(error) => {
                let class = error.class();
                let message = match class {
                    ErrorClass::Internal => {
                        tracing::error!(request = request_id, %error, "bulk job failed");
                        "the server could not write the bulk file; page through the partition instead".to_owned()
                    }
                    _ => error.to_string(),
                };
                let error = v1::Error { code: class.error_code() as i32, message, ..v1::Error::default() };
                return v1::BulkReady {
                    request_id: request_id.to_owned(),
                    error: Some(Box::new(error)),
                    ..Default::default()
                };
            }
        };
        let mut ready = v1::BulkReady { request_id: request_id.to_owned(), ..Default::default() };
        for outcome in outcomes {
            match outcome {
                PartitionOutcome::File(file) => {
                    let granted = self.grant(&file, user_id);
                    ready.cursors.insert(granted.source.clone(), granted.sequence);
                    ready.files.push(granted);
                }
                PartitionOutcome::PageInstead(partition) => ready.page_instead.push(partition.source),
            }
        }
        if let Some(first) = ready.files.first() {
            ready.url.clone_from(&first.url);
            ready.token.clone_from(&first.token);
        }
        ready
    }

    /// Checks a download of `file_id` with the bearer `token`; returns the file and where it
    /// is on this node's disk. 401 for a missing or invalid token, 404 for an unknown file,
    /// 403 for a token of another file, or of a user who may not read the file's partition.
    pub fn authorize(&self, file_id: &str, token: Option<&str>) -> Result<(Arc<BulkFile>, PathBuf), BulkError> {
        let claims = self.verify_token(token)?;
        let file = self.catalog.get(file_id).ok_or_else(|| BulkError::UnknownFile(file_id.to_owned()))?;
        self.check_access(&claims, &file)?;
        Ok((file.clone(), self.catalog.path(&file.id)))
    }

    /// Checks a download as [`BulkSnapshots::authorize`] does, and finds the file on this
    /// node's disk or, when not there, in the bucket (written by another node). The token
    /// is checked before the bucket is asked anything.
    pub async fn locate(&self, file_id: &str, token: Option<&str>) -> Result<(Arc<BulkFile>, FileLocation), BulkError> {
        let claims = self.verify_token(token)?;
        if let Some(file) = self.catalog.get(file_id) {
            self.check_access(&claims, &file)?;
            return Ok((file.clone(), FileLocation::Local(self.catalog.path(&file.id))));
        }
        let unknown = || BulkError::UnknownFile(file_id.to_owned());
        let Some(shared) = &self.shared else { return Err(unknown()) };
        let file = shared.find(file_id).await?.ok_or_else(unknown)?;
        let ttl_ms = self.settings.file_ttl.as_millis() as i64;
        if crate::auth::now_ms().saturating_sub(file.created_ms) >= ttl_ms {
            return Err(unknown());
        }
        self.check_access(&claims, &file)?;
        Ok((Arc::new(file), FileLocation::Shared(shared.clone())))
    }

    /// Returns the claims of a download's bearer `token` (401 when missing or invalid).
    fn verify_token(&self, token: Option<&str>) -> Result<TokenClaims, BulkError> {
        let token = token.ok_or(BulkError::MissingToken)?;
        self.signer.verify(token, crate::auth::now_ms()).map_err(BulkError::Token)
    }

    /// Checks that `claims` open `file`: issued for it, to a user who may read its partition.
    fn check_access(&self, claims: &TokenClaims, file: &BulkFile) -> Result<(), BulkError> {
        if claims.file_id != file.id {
            return Err(BulkError::Forbidden("the token was issued for another bulk file".to_owned()));
        }
        let partitioning = self.sources.get(&file.partition.source).map(|source| source.partitioning);
        if partitioning == Some(Partitioning::User) && file.partition.key != claims.user_id {
            return Err(BulkError::Forbidden("the bulk file belongs to another user".to_owned()));
        }
        Ok(())
    }

    /// Starts the background work on `tracker`: unfinished jobs of an earlier run are
    /// resumed, and expired files deleted every so often, until `shutdown`.
    pub fn spawn(self: &Arc<Self>, tracker: &TaskTracker, shutdown: &CancellationToken) {
        let bulk = self.clone();
        let stop = shutdown.clone();
        tracker.spawn(async move {
            let pending = bulk.pending_handle();
            let jobs = match tokio::task::spawn_blocking(move || pending.unfinished()).await {
                Ok(Ok(jobs)) => jobs,
                Ok(Err(error)) => return tracing::warn!(%error, "could not list unfinished bulk jobs"),
                Err(error) => return tracing::warn!(%error, "bulk job listing task failed"),
            };
            for job in jobs {
                bulk.queued.fetch_add(1, Ordering::SeqCst);
                tracing::info!(job = %job.job_id, user = %job.user_id, "resuming a bulk job");
                tokio::select! {
                    () = stop.cancelled() => return,
                    outcome = bulk.run(&job) => if let Err(error) = outcome {
                        tracing::warn!(job = %job.job_id, %error, "resumed bulk job failed");
                    },
                }
            }
        });
        let bulk = self.clone();
        let stop = shutdown.clone();
        let every = (self.settings.file_ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        tracker.spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let collected = bulk.collect_expired();
                if collected > 0 {
                    tracing::info!(files = collected, "expired bulk files deleted");
                }
                if let Some(shared) = &bulk.shared {
                    match shared.collect_expired(bulk.settings.file_ttl).await {
                        Ok(0) => {}
                        Ok(files) => tracing::info!(files, "expired bulk files deleted from the bucket"),
                        Err(error) => tracing::warn!(%error, "could not delete expired bulk files from the bucket"),
                    }
                }
            }
        });
    }

    /// Deletes the files older than `bulk.file_ttl_secs`; returns how many.
    pub fn collect_expired(&self) -> usize {
        self.catalog.collect_expired(crate::auth::now_ms(), self.settings.file_ttl.as_millis() as i64)
    }

    /// Returns a handle on the pending manifests for blocking work.
    fn pending_handle(&self) -> PendingJobs {
        self.pending.clone()
    }
}

/// Forgets a partition's write in progress when the writing request ends (done or
/// dropped), so that the next request starts a new one.
struct InflightGuard<'a> {
    inflight: &'a Mutex<HashMap<PartitionName, Inflight>>,
    partition: &'a PartitionName,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.inflight.lock().remove(self.partition);
    }
}

fn random_secret() -> Vec<u8> {
    use rand::RngCore as _;
    let mut secret = vec![0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    secret
}

#[cfg(test)]
mod tests;
