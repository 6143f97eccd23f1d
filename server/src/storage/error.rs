//! Why a store operation failed.

use syncline_proto::record::RecordError;

use super::MAX_BATCH_CHANGES;
use crate::error::ErrorClass;

/// Why a store operation failed, in the caller's terms. `Clone`: one failed write of a group
/// commit fails each write of the group.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory is held by another process (usually a running server).
    #[error("the data store {path} is in use by another process (is a server running on it?)")]
    Locked { path: String },
    /// A record (or a deleted id) is outside the record limits of the protocol.
    #[error(transparent)]
    InvalidRecord(#[from] RecordError),
    /// The same id appears twice in one batch.
    #[error("record id {id:?} appears more than once in the batch")]
    DuplicateId { id: String },
    /// A batch holds more than [`MAX_BATCH_CHANGES`] changes.
    #[error("batch of {changes} changes exceeds the limit of {MAX_BATCH_CHANGES}")]
    BatchTooLarge { changes: usize },
    /// A user with that name already exists.
    #[error("user {name:?} already exists")]
    UserExists { name: String },
    /// The store's files could not be read or written.
    #[error("storage failure: {0}")]
    Io(String),
    /// Stored bytes could not be decoded (corruption or an incompatible version).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The store is shutting down.
    #[error("the store is closed")]
    Closed,
    /// A device has too many unfinished mutations.
    #[error("the device has {pending} unfinished mutations, the most allowed")]
    QueueFull { pending: u64 },
    /// The store's server would acknowledge writes it could still lose (the Redis backend
    /// refuses to open on it); `detail` says what to set.
    #[error("the store would lose acknowledged writes: {detail}")]
    NotDurable { detail: String },
    /// Other writers kept changing what this write changes (a partition, a device) while
    /// it was computed, past the attempts allowed (the Redis backend's compare-and-set).
    #[error("{subject} is changed by other writers too often to write it now")]
    Contention { subject: String },
    /// The write was made under a cluster lease this node no longer holds (it expired or was
    /// granted to another node): refused, the new holder does the work.
    #[error("the lease {lease} was lost; the write under it was refused")]
    LeaseLost { lease: String },
}

impl StoreError {
    /// Returns the class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            StoreError::InvalidRecord(_) | StoreError::DuplicateId { .. } | StoreError::BatchTooLarge { .. } => {
                ErrorClass::BadRequest
            }
            StoreError::UserExists { .. } => ErrorClass::Conflict,
            StoreError::QueueFull { .. } => ErrorClass::ResourceExhausted,
            StoreError::Locked { .. }
            | StoreError::Io(_)
            | StoreError::Closed
            | StoreError::NotDurable { .. }
            | StoreError::Contention { .. }
            | StoreError::LeaseLost { .. } => ErrorClass::Unavailable,
            StoreError::Corrupt(_) => ErrorClass::Internal,
        }
    }
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;
