//! The bulk directory's files: which partition each holds at which sequence, which one a
//! request may reuse, and which are old enough to delete.
//!
//! The catalog is rebuilt at start from the files themselves (each file's `meta` table says
//! what it holds), so it needs no store of its own; temporary files a crash left behind are
//! deleted then.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags};
use syncline_proto::bulk_file::{self, meta};

use super::BulkError;
use crate::storage::{PartitionName, PartitionState};

/// The extension of finished bulk files.
pub(super) const FILE_EXTENSION: &str = "sqlite";

/// One finished bulk file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BulkFile {
    /// The file's id: its name without the extension, and the last segment of its URL.
    pub id: String,
    pub partition: PartitionName,
    /// The sequence the file holds the partition at.
    pub sequence: u64,
    pub checksum: u64,
    pub record_count: u64,
    pub bytes: u64,
    /// When it was written, in Unix milliseconds.
    pub created_ms: i64,
}

/// The files of the bulk directory.
#[derive(Debug)]
pub struct FileCatalog {
    dir: PathBuf,
    files: Mutex<HashMap<String, Arc<BulkFile>>>,
}

impl FileCatalog {
    /// Opens the catalog of `dir` (created if missing): lists its files, deletes the
    /// temporary ones and the ones that cannot be read.
    pub fn open(dir: &Path) -> Result<Self, BulkError> {
        std::fs::create_dir_all(dir).map_err(|error| BulkError::io(format!("create {}", dir.display()), error))?;
        let mut files = HashMap::new();
        let entries =
            std::fs::read_dir(dir).map_err(|error| BulkError::io(format!("list {}", dir.display()), error))?;
        for entry in entries {
            let path = entry.map_err(|error| BulkError::io("list the bulk directory", error))?.path();
            let extension = path.extension().and_then(|extension| extension.to_str());
            if extension == Some("tmp") {
                tracing::info!(path = %path.display(), "deleting an unfinished bulk file");
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if extension != Some(FILE_EXTENSION) {
                continue;
            }
            match read_file_meta(&path) {
                Ok(file) => {
                    files.insert(file.id.clone(), Arc::new(file));
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "deleting an unreadable bulk file");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        Ok(Self { dir: dir.to_owned(), files: Mutex::new(files) })
    }

    /// Returns the directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Returns where the file `id` is (or goes).
    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.{FILE_EXTENSION}"))
    }

    /// Adds a finished file.
    pub fn insert(&self, file: BulkFile) -> Arc<BulkFile> {
        let file = Arc::new(file);
        self.files.lock().insert(file.id.clone(), file.clone());
        file
    }

    /// Returns the file `id`.
    pub fn get(&self, id: &str) -> Option<Arc<BulkFile>> {
        self.files.lock().get(id).cloned()
    }

    /// Returns the newest file of `partition` that may still serve a request when the
    /// partition is at `state`: written less than `reuse_changes` changes ago, not behind the
    /// compaction horizon (the device could not continue from it through the log), and
    /// younger than `max_age_ms` at `now_ms` (it outlives the download it is handed to).
    pub fn reusable(
        &self,
        partition: &PartitionName,
        state: &PartitionState,
        reuse_changes: u64,
        now_ms: i64,
        max_age_ms: i64,
    ) -> Option<Arc<BulkFile>> {
        self.files
            .lock()
            .values()
            .filter(|file| &file.partition == partition)
            .filter(|file| file.sequence <= state.head && state.head - file.sequence < reuse_changes)
            .filter(|file| file.sequence >= state.horizon)
            .filter(|file| now_ms.saturating_sub(file.created_ms) < max_age_ms)
            .max_by_key(|file| file.sequence)
            .cloned()
    }

    /// Deletes the files written `ttl_ms` or longer before `now_ms`; returns how many. A
    /// download already streaming one keeps reading it (the open file outlives its name).
    pub fn collect_expired(&self, now_ms: i64, ttl_ms: i64) -> usize {
        let expired: Vec<Arc<BulkFile>> = {
            let mut files = self.files.lock();
            let ids: Vec<String> = files
                .values()
                .filter(|file| now_ms.saturating_sub(file.created_ms) >= ttl_ms)
                .map(|file| file.id.clone())
                .collect();
            ids.iter().filter_map(|id| files.remove(id)).collect()
        };
        for file in &expired {
            if let Err(error) = std::fs::remove_file(self.path(&file.id)) {
                tracing::warn!(file = %file.id, %error, "could not delete an expired bulk file");
            }
        }
        expired.len()
    }

    /// Returns every file, newest first.
    pub fn files(&self) -> Vec<Arc<BulkFile>> {
        let mut files: Vec<Arc<BulkFile>> = self.files.lock().values().cloned().collect();
        files.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then_with(|| a.id.cmp(&b.id)));
        files
    }
}

/// Reads what a finished file holds from its `meta` table.
pub fn read_file_meta(path: &Path) -> Result<BulkFile, BulkError> {
    let id = path
        .file_stem()
        .and_then(|stem| stem.to_str())
        .ok_or_else(|| BulkError::Internal(format!("{} has no file id", path.display())))?
        .to_owned();
    let bytes = std::fs::metadata(path).map_err(|error| BulkError::io("read a bulk file's size", error))?.len();
    let connection = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut statement = connection.prepare("SELECT name, value FROM meta")?;
    let values: HashMap<String, String> =
        statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?.collect::<Result<_, _>>()?;
    let text = |name: &str| {
        values.get(name).cloned().ok_or_else(|| BulkError::Internal(format!("{} has no meta {name}", path.display())))
    };
    let number = |name: &str| {
        text(name)?
            .parse::<u64>()
            .map_err(|_| BulkError::Internal(format!("{}: meta {name} is not a number", path.display())))
    };
    if number(meta::FORMAT_VERSION)? != u64::from(bulk_file::FORMAT_VERSION) {
        return Err(BulkError::Internal(format!("{} has another format version", path.display())));
    }
    Ok(BulkFile {
        id,
        partition: PartitionName::new(text(meta::SOURCE)?, text(meta::KEY)?),
        sequence: number(meta::SEQUENCE)?,
        checksum: number(meta::CHECKSUM)?,
        record_count: number(meta::RECORD_COUNT)?,
        bytes,
        created_ms: text(meta::CREATED_MS)?
            .parse()
            .map_err(|_| BulkError::Internal(format!("{}: meta created_ms is not a number", path.display())))?,
    })
}
