//! Durable bulk jobs: each accepted request is written as a small JSON manifest in the bulk
//! directory's `pending/` folder (temporary file, sync, rename) before its files are
//! written, and removed once they are. A server that stops or crashes in between finds the
//! manifest at its next start and writes the files then, so the device that asks again (it
//! does after reconnecting) is answered from them at once.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::BulkError;
use super::writer::sync_file;
use crate::storage::PartitionName;

/// The folder of manifests inside the bulk directory.
const PENDING_DIR: &str = "pending";

/// A job that was accepted and not finished.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobManifest {
    /// The job's id (the manifest's file name).
    pub job_id: String,
    /// Who asked: the user the files are for.
    pub user_id: String,
    /// The device's request id, or the admin API's job id.
    pub request_id: String,
    /// The partitions to write, as `[source, key]`.
    pub partitions: Vec<(String, String)>,
    /// Partitions with fewer live records get no file (BulkRequest.min_records).
    #[serde(default)]
    pub min_records: u64,
    /// When it was accepted, in Unix milliseconds.
    pub created_ms: i64,
}

impl JobManifest {
    /// Returns the partitions to write.
    pub fn partition_names(&self) -> Vec<PartitionName> {
        self.partitions.iter().map(|(source, key)| PartitionName::new(source, key)).collect()
    }
}

/// The manifests of unfinished jobs.
#[derive(Clone, Debug)]
pub(super) struct PendingJobs {
    dir: PathBuf,
}

impl PendingJobs {
    /// Opens (creates) the manifests' folder inside `bulk_dir`.
    pub(super) fn open(bulk_dir: &Path) -> Result<Self, BulkError> {
        let dir = bulk_dir.join(PENDING_DIR);
        std::fs::create_dir_all(&dir).map_err(|error| BulkError::io(format!("create {}", dir.display()), error))?;
        Ok(Self { dir })
    }

    /// Writes a job's manifest durably.
    pub(super) fn record(&self, job: &JobManifest) -> Result<(), BulkError> {
        let path = self.path(&job.job_id);
        let temp = path.with_extension("tmp");
        let json = serde_json::to_vec(job).map_err(|error| BulkError::Internal(error.to_string()))?;
        std::fs::write(&temp, json).map_err(|error| BulkError::io("write a bulk job manifest", error))?;
        sync_file(&temp)?;
        std::fs::rename(&temp, &path).map_err(|error| BulkError::io("rename a bulk job manifest", error))?;
        sync_file(&self.dir)
    }

    /// Removes a finished job's manifest.
    pub(super) fn finish(&self, job_id: &str) {
        if let Err(error) = std::fs::remove_file(self.path(job_id)) {
            tracing::warn!(job = job_id, %error, "could not remove a finished bulk job's manifest");
        }
    }

    /// Returns the unfinished jobs, oldest first; unreadable manifests are deleted.
    pub(super) fn unfinished(&self) -> Result<Vec<JobManifest>, BulkError> {
        let mut jobs = Vec::new();
        let entries =
            std::fs::read_dir(&self.dir).map_err(|error| BulkError::io("list the pending bulk jobs", error))?;
        for entry in entries {
            let path = entry.map_err(|error| BulkError::io("list the pending bulk jobs", error))?.path();
            if path.extension().and_then(|extension| extension.to_str()) != Some("json") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let parsed = std::fs::read(&path)
                .map_err(|error| error.to_string())
                .and_then(|bytes| serde_json::from_slice::<JobManifest>(&bytes).map_err(|error| error.to_string()));
            match parsed {
                Ok(job) => jobs.push(job),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "deleting an unreadable bulk job manifest");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        jobs.sort_by_key(|job| job.created_ms);
        Ok(jobs)
    }

    fn path(&self, job_id: &str) -> PathBuf {
        self.dir.join(format!("{job_id}.json"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_job_survives_until_finished_and_junk_is_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pending = PendingJobs::open(dir.path()).expect("open");
        let job = JobManifest {
            job_id: "j1".into(),
            user_id: "ann".into(),
            request_id: "r1".into(),
            partitions: vec![("Account".into(), "*".into())],
            min_records: 10,
            created_ms: 5,
        };
        pending.record(&job).expect("record");
        std::fs::write(dir.path().join(PENDING_DIR).join("j0.json"), b"{not json").expect("junk");
        std::fs::write(dir.path().join(PENDING_DIR).join("j2.tmp"), b"half").expect("half");
        let reopened = PendingJobs::open(dir.path()).expect("reopen");
        assert_eq!(reopened.unfinished().expect("list"), vec![job.clone()]);
        assert_eq!(job.partition_names(), vec![PartitionName::new("Account", "*")]);
        reopened.finish("j1");
        assert!(reopened.unfinished().expect("list").is_empty());
        let left = std::fs::read_dir(dir.path().join(PENDING_DIR)).expect("list").count();
        assert_eq!(left, 0, "the junk is gone too");
    }
}
