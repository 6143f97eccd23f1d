//! The engine's part of blobs: which blobs queued mutations still need uploaded (their
//! mutations wait until then), what an upload's end means for them, and a mutation the
//! server refused because it did not hold one of its blobs (kept, re-uploaded, resent).

use std::collections::BTreeMap;

use syncline_proto::v1::{Blob, ClientFrame, ErrorCode, MutationError};
use tracing::{debug, warn};

use super::{Reaction, SyncEngine, error_code};
use crate::notification::MutationOutcome;
use crate::outbox::{MutationFailure, MutationState, QueuedMutation};

impl SyncEngine {
    /// Returns the session token of the last `Welcome` (what blob requests authenticate
    /// with), once welcomed on this connection.
    pub(crate) fn blob_token(&self) -> Option<&str> {
        self.session_token.as_deref().filter(|_| self.welcomed)
    }

    /// Returns the blobs that unfinished mutations reference and the server is not known
    /// to hold, in queue order, each once.
    pub(crate) fn blobs_to_upload(&self) -> Vec<Blob> {
        let mut wanted: BTreeMap<&str, &Blob> = BTreeMap::new();
        let mut order = Vec::new();
        for mutation in self.mutations.mutations() {
            if mutation.state == MutationState::Failed {
                continue;
            }
            for blob in mutation.blobs() {
                if !self.uploaded_blobs.contains(&blob.hash) && wanted.insert(&blob.hash, blob).is_none() {
                    order.push(blob.clone());
                }
            }
        }
        order
    }

    /// Notes that the server holds blob `hash`; returns the mutations that may go now.
    pub(crate) fn on_blob_uploaded(&mut self, hash: &str) -> Vec<ClientFrame> {
        debug!(hash, "blob uploaded");
        self.stats.blobs_uploaded += 1;
        self.uploaded_blobs.insert(hash.to_owned());
        self.mutation_frames()
    }

    /// Fails every unfinished mutation that references blob `hash`, which the server
    /// refused for good (too large, or bytes that do not match the hash): they stay queued
    /// as failed, with `code` and `message`, for the app to retry or discard; the app is
    /// told as for any failed mutation.
    pub(crate) fn on_blob_refused(&mut self, hash: &str, code: ErrorCode, message: &str) -> Reaction {
        let mut reaction = Reaction::default();
        let refused: Vec<QueuedMutation> = self
            .mutations
            .mutations()
            .iter()
            .filter(|mutation| mutation.state != MutationState::Failed)
            .filter(|mutation| mutation.blobs().any(|blob| blob.hash == hash))
            .cloned()
            .collect();
        for mutation in refused {
            let failure =
                MutationFailure { op: mutation.op, code, message: format!("blob {hash}: {message}"), current: None };
            if let Err(error) = self.mutations.mark_failed(&mutation.mutation_id, failure.clone()) {
                warn!(%error, mutation_id = %mutation.mutation_id, "recording a failed mutation failed");
                continue;
            }
            self.mutations_in_flight.remove(&mutation.mutation_id);
            self.stats.mutations_failed += 1;
            warn!(mutation_id = %mutation.mutation_id, hash, ?code, message, "blob refused; its mutation failed");
            let outcome = MutationOutcome::Error { code, message: failure.message, current: None };
            self.notify_mutation(&mutation, outcome, &mut reaction);
        }
        reaction
    }

    /// Returns true (and keeps the mutation queued, to be sent again once its blobs are
    /// uploaded) when the server refused `mutation` as UNAVAILABLE for a blob it does not
    /// hold: a refusal that is not the mutation's outcome (the server did not queue it).
    pub(super) fn blob_missing_on_server(&mut self, mutation: &QueuedMutation, error: &MutationError) -> bool {
        if error_code(error.code) != ErrorCode::Unavailable || mutation.blobs().next().is_none() {
            return false;
        }
        debug!(mutation_id = %mutation.mutation_id, message = %error.message, "a blob is missing on the server");
        let hashes: Vec<String> = mutation.blobs().map(|blob| blob.hash.clone()).collect();
        for hash in hashes {
            self.uploaded_blobs.remove(&hash);
        }
        self.mutations_in_flight.remove(&mutation.mutation_id);
        true
    }
}
