//! The device task's file transfers beside its socket: the end of a blob upload (mutations
//! that waited for it may go) and the reports of bulk file downloads (progress, then the
//! checked file swapped in as the partition's replica), each turned into frames to send and
//! notifications for the app.

use super::{DeviceTask, SessionEnd, send_frames};
use crate::bulk::BulkEvent;
use crate::engine::Reaction;
use crate::wire::Connection;

impl DeviceTask {
    /// Sends the frames (mutations that may go now) and queues the notifications (failed
    /// mutations) that follow the end of a blob upload.
    pub(super) async fn apply_blob_reaction(
        &mut self,
        reaction: Reaction,
        connection: &mut Connection,
    ) -> Result<(), SessionEnd> {
        self.publish();
        self.outbox.extend(reaction.notifications);
        send_frames(connection, &reaction.frames).await
    }

    /// Takes a bulk download's report: the engine's notifications are queued and its frames
    /// (the Subscribe from the file's sequence, or paging instead) sent.
    pub(super) async fn on_bulk_event(
        &mut self,
        event: BulkEvent,
        connection: &mut Connection,
    ) -> Result<(), SessionEnd> {
        let reaction = {
            let mut engine = self.engine.lock();
            let reaction = engine.on_bulk_event(event);
            engine.publish(&mut self.published);
            reaction
        };
        self.send_state();
        self.outbox.extend(reaction.notifications);
        send_frames(connection, &reaction.frames).await
    }
}
