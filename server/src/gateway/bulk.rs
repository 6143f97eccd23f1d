//! BulkRequest: checks the request, accepts a durable job for its partitions, and answers
//! with one BulkReady when the files are ready (the job runs off the session's loop, on the
//! services' tracker; the session keeps serving frames meanwhile).

use std::collections::BTreeSet;

use syncline_proto::v1::{self, server_frame};
use syncline_push::Outbox;

use super::DeviceSession;
use super::replies::frame;
use crate::bulk::{BulkError, MAX_REQUEST_ID_BYTES, MAX_SOURCES_PER_REQUEST};
use crate::storage::PartitionName;

impl DeviceSession {
    /// Accepts a BulkRequest and answers it with BulkReady (files, "page instead", or an
    /// error) once its job is done.
    pub(super) async fn on_bulk_request(&mut self, request: v1::BulkRequest, outbox: &Outbox) {
        let Some(identity) = self.identity.clone() else { return };
        let bulk = self.services.bulk.clone();
        let request_id = request.request_id.clone();
        let accepted = match self.bulk_partitions(&request) {
            Ok(partitions) => bulk.accept(&identity.user_id, &request_id, &partitions, request.min_records).await,
            Err(error) => Err(error),
        };
        let job = match accepted {
            Ok(job) => job,
            Err(error) => {
                let ready = bulk.ready(&request_id, &identity.user_id, Err(error));
                let _ = outbox.send_frame(frame(server_frame::Msg::BulkReady(ready))).await;
                return;
            }
        };
        tracing::debug!(peer = %self.peer, job = %job.job_id, request = %request_id, "bulk job accepted");
        let outbox = outbox.clone();
        self.services.tracker.spawn(async move {
            let outcome = bulk.run(&job).await;
            let ready = bulk.ready(&job.request_id, &job.user_id, outcome);
            // A device that is gone by now asks again after reconnecting, and is answered
            // from the files this job wrote.
            let _ = outbox.send_frame(frame(server_frame::Msg::BulkReady(ready))).await;
        });
    }

    /// Returns the partitions a request names, checked: a request id, 1 to
    /// [`MAX_SOURCES_PER_REQUEST`] sources without repeats, each one the user may read.
    fn bulk_partitions(&self, request: &v1::BulkRequest) -> Result<Vec<PartitionName>, BulkError> {
        let identity = self.identity.as_ref().ok_or(BulkError::Stopping)?;
        if request.request_id.is_empty() || request.request_id.len() > MAX_REQUEST_ID_BYTES {
            let message = format!("BulkRequest.request_id must be 1 to {MAX_REQUEST_ID_BYTES} bytes");
            return Err(BulkError::BadRequest(message));
        }
        if request.sources.is_empty() || request.sources.len() > MAX_SOURCES_PER_REQUEST {
            let message = format!("BulkRequest.sources must name 1 to {MAX_SOURCES_PER_REQUEST} sources");
            return Err(BulkError::BadRequest(message));
        }
        let mut seen = BTreeSet::new();
        let mut partitions = Vec::with_capacity(request.sources.len());
        for source in &request.sources {
            if !seen.insert(source.as_str()) {
                return Err(BulkError::BadRequest(format!("BulkRequest.sources names {source:?} twice")));
            }
            let key = self.natural_key(source);
            let partition = self.services.resolve_partition(identity, source, &key).map_err(BulkError::Access)?;
            partitions.push(partition);
        }
        Ok(partitions)
    }

    /// Returns the key a bulk request means for `source`: empty (the user's own, or `*`),
    /// or a custom source's only entitled key.
    fn natural_key(&self, source: &str) -> String {
        let Some(identity) = self.identity.as_ref() else { return String::new() };
        let mut keys = identity.entitlements.iter().filter(|(name, _)| name == source).map(|(_, key)| key);
        match (keys.next(), keys.next()) {
            (Some(key), None) => key.clone(),
            _ => String::new(),
        }
    }
}
