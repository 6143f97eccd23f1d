//! Mutate: a device's create, update or delete, checked and queued durably before it is
//! acknowledged; the mutation dispatcher takes it from there.

use prost::Message as _;
use syncline_proto::v1::{self, ErrorCode, server_frame};
use syncline_push::Outbox;

use super::replies::frame;
use super::{DeviceSession, blocking};
use crate::model::AccessError;
use crate::storage::StoreError;

/// Longest mutation id accepted.
const MAX_MUTATION_ID_BYTES: usize = 128;

impl DeviceSession {
    pub(super) async fn on_mutate(&mut self, mutate: v1::Mutate, outbox: &Outbox) {
        let Some(identity) = self.identity.clone() else { return };
        let refuse = |code: ErrorCode, message: String| {
            frame(server_frame::Msg::MutationResult(crate::mutations::refused(
                &mutate.mutation_id,
                mutate.op,
                code,
                message,
            )))
        };
        let op = v1::MutationOp::try_from(mutate.op).unwrap_or(v1::MutationOp::Unspecified);
        // The fields a create or update sends are checked as a record: an update's fields
        // alone must be within the limits too.
        let record = v1::Record { id: mutate.id, fields: mutate.fields, version: 0 };
        let checked = match op {
            v1::MutationOp::Delete => syncline_proto::record::validate_record_id(&record.id),
            v1::MutationOp::Create | v1::MutationOp::Update | v1::MutationOp::Unspecified => record.validate(),
        };
        let invalid = if mutate.mutation_id.is_empty() || mutate.mutation_id.len() > MAX_MUTATION_ID_BYTES {
            Some(format!("mutation_id must be 1 to {MAX_MUTATION_ID_BYTES} bytes"))
        } else if op == v1::MutationOp::Unspecified {
            Some("op must be create, update or delete".to_owned())
        } else {
            checked.err().map(|error| error.to_string())
        };
        if let Some(message) = invalid {
            let _ = outbox.send_frame(refuse(ErrorCode::BadRequest, message)).await;
            return;
        }
        let partition = match self.services.resolve_partition(&identity, &mutate.source, &mutate.key) {
            Ok(partition) => partition,
            Err(AccessError::UnknownSource) => {
                let message = format!("unknown source {:?}", mutate.source);
                let _ = outbox.send_frame(refuse(ErrorCode::UnknownSource, message)).await;
                return;
            }
            Err(AccessError::Forbidden(message)) => {
                let _ = outbox.send_frame(refuse(ErrorCode::Forbidden, message)).await;
                return;
            }
        };
        if !self.services.mutations.accepts(&partition.source) {
            let message = format!("{} has no channel: it is read-only for devices", partition.source);
            let _ = outbox.send_frame(refuse(ErrorCode::Forbidden, message)).await;
            return;
        }
        let mutation = crate::storage::QueuedMutation {
            client_id: identity.client_id.clone(),
            user_id: identity.user_id.clone(),
            seq: 0,
            mutation_id: mutate.mutation_id.clone(),
            partition,
            op: mutate.op,
            id: record.id,
            fields: record.fields,
            base_version: mutate.base_version,
        };
        let store = self.services.store.clone();
        let max_pending = self.services.limits.max_pending_mutations;
        let queued = mutation.clone();
        let outcome = blocking(move || store.enqueue_mutation(&queued, max_pending)).await;
        let reply = match outcome {
            Ok(crate::storage::Enqueued::Queued { seq }) => {
                self.services.mutations.submit(crate::storage::QueuedMutation { seq, ..mutation });
                frame(server_frame::Msg::MutationAck(v1::MutationAck { mutation_id: mutate.mutation_id, queued: seq }))
            }
            Ok(crate::storage::Enqueued::Pending { seq }) => {
                frame(server_frame::Msg::MutationAck(v1::MutationAck { mutation_id: mutate.mutation_id, queued: seq }))
            }
            Ok(crate::storage::Enqueued::Done { result }) => match v1::MutationResult::decode(result.as_slice()) {
                Ok(result) => frame(server_frame::Msg::MutationResult(result)),
                Err(_) => refuse(ErrorCode::Internal, "the stored outcome is unreadable".into()),
            },
            Err(StoreError::QueueFull { pending }) => {
                refuse(ErrorCode::ResourceExhausted, format!("{pending} mutations are already waiting; retry later"))
            }
            Err(error) => {
                tracing::error!(peer = %self.peer, %error, "cannot queue a mutation");
                refuse(ErrorCode::Unavailable, "the server cannot queue mutations right now; retry later".into())
            }
        };
        let _ = outbox.send_frame(reply).await;
    }
}
