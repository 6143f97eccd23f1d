//! Mutate: a device's create, update or delete, checked and queued durably before it is
//! acknowledged; the mutation dispatcher takes it from there.

use prost::Message as _;
use syncline_proto::v1::{self, server_frame};
use syncline_push::Outbox;

use super::replies::frame;
use super::{DeviceSession, blocking};
use crate::error::ErrorClass;
use crate::storage::{MutationOp, StoreError};

/// Longest mutation id accepted.
const MAX_MUTATION_ID_BYTES: usize = 128;

impl DeviceSession {
    pub(super) async fn on_mutate(&mut self, mutate: v1::Mutate, outbox: &Outbox) {
        let Some(identity) = self.identity.clone() else { return };
        let refuse = |class: ErrorClass, message: String| {
            frame(server_frame::Msg::MutationResult(crate::mutations::refused(
                &mutate.mutation_id,
                mutate.op,
                class,
                message,
            )))
        };
        // `None`: unspecified, or a number this server does not know.
        let op = MutationOp::from_wire(mutate.op);
        // The fields a create or update sends are checked as a record: an update's fields
        // alone must be within the limits too.
        let record = v1::Record { id: mutate.id, fields: mutate.fields, version: 0 };
        let checked = match op {
            Some(MutationOp::Delete) => syncline_proto::record::validate_record_id(&record.id),
            Some(MutationOp::Create | MutationOp::Update) | None => record.validate(),
        };
        let op = if mutate.mutation_id.is_empty() || mutate.mutation_id.len() > MAX_MUTATION_ID_BYTES {
            Err(format!("mutation_id must be 1 to {MAX_MUTATION_ID_BYTES} bytes"))
        } else {
            match op {
                None => Err("op must be create, update or delete".to_owned()),
                Some(op) => checked.map(|()| op).map_err(|error| error.to_string()),
            }
        };
        let op = match op {
            Ok(op) => op,
            Err(message) => {
                let _ = outbox.send_frame(refuse(ErrorClass::BadRequest, message)).await;
                return;
            }
        };
        let partition = match self.services.resolve_partition(&identity, &mutate.source, &mutate.key) {
            Ok(partition) => partition,
            Err(error) => {
                let _ = outbox.send_frame(refuse(error.class(), error.to_string())).await;
                return;
            }
        };
        if !self.services.mutations.accepts(&partition.source) {
            let message = format!("{} has no channel: it is read-only for devices", partition.source);
            let _ = outbox.send_frame(refuse(ErrorClass::Forbidden, message)).await;
            return;
        }
        // The blobs a create or update references must be uploaded first; a missing one is
        // UNAVAILABLE and the mutation is not queued: the device uploads it and resends.
        if let Err(error) = self.services.blobs.check_references(&partition, &record.fields).await {
            let message = if error.class() == ErrorClass::Internal {
                tracing::error!(peer = %self.peer, %error, "cannot check a mutation's blobs");
                "the server cannot check blobs right now; retry later".to_owned()
            } else {
                error.to_string()
            };
            let _ = outbox.send_frame(refuse(error.class(), message)).await;
            return;
        }
        let mutation = crate::storage::QueuedMutation {
            client_id: identity.client_id.clone(),
            user_id: identity.user_id.clone(),
            seq: 0,
            mutation_id: mutate.mutation_id.clone(),
            partition,
            op,
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
                self.services.mutations.resent(crate::storage::QueuedMutation { seq, ..mutation });
                frame(server_frame::Msg::MutationAck(v1::MutationAck { mutation_id: mutate.mutation_id, queued: seq }))
            }
            Ok(crate::storage::Enqueued::Done { result }) => match v1::MutationResult::decode(result.as_slice()) {
                Ok(result) => frame(server_frame::Msg::MutationResult(result)),
                Err(_) => refuse(ErrorClass::Internal, "the stored outcome is unreadable".into()),
            },
            Err(full @ StoreError::QueueFull { pending }) => {
                refuse(full.class(), format!("{pending} mutations are already waiting; retry later"))
            }
            // Whatever failed in the store, the device may retry later; the details are logged.
            Err(error) => {
                tracing::error!(peer = %self.peer, %error, "cannot queue a mutation");
                refuse(ErrorClass::Unavailable, "the server cannot queue mutations right now; retry later".into())
            }
        };
        let _ = outbox.send_frame(reply).await;
    }
}
