//! `SyncState` and `Error` frames: a partition caught up (its checksum verified), reset,
//! failed or whose source changed its schema, and server errors that name a subscription.

use syncline_proto::v1::{Error as ErrorFrame, SyncState, SyncStatus};
use tracing::{debug, info, warn};

use super::{Phase, Reaction, SyncEngine, error_code, subscribed_partition, sync_notification};
use crate::notification::{Notification, SyncNotificationStatus};
use crate::replica::PartitionId;

impl SyncEngine {
    pub(super) fn on_sync_state(&mut self, state: SyncState, reaction: &mut Reaction) {
        let id = PartitionId::new(&state.source, &state.key);
        let Some(partition) = subscribed_partition(&mut self.partitions, &mut self.stats, &id, "sync state") else {
            return;
        };
        let Ok(status) = SyncStatus::try_from(state.status) else {
            debug!(partition = %id, status = state.status, "unknown sync status ignored");
            return;
        };
        match status {
            SyncStatus::CaughtUp => {
                // Live pushes may be queued right behind the catch-up and applied before this
                // arrives: the replica is then past the server's cursor, already verified by
                // each push's own checksum.
                let live_ahead = !partition.replica.is_receiving_snapshot()
                    && state.cursor < partition.replica.cursor()
                    && !partition.awaiting_restart;
                if !live_ahead
                    && (state.cursor != partition.replica.cursor() || partition.replica.is_receiving_snapshot())
                {
                    self.stats.gaps += 1;
                    if partition.awaiting_restart {
                        debug!(partition = %id, "sync state of a previous subscription skipped");
                        return;
                    }
                    warn!(
                        partition = %id,
                        server_cursor = state.cursor,
                        cursor = partition.replica.cursor(),
                        "caught up at another cursor; resubscribing"
                    );
                    self.stats.resubscribes += 1;
                    self.complete_reported = false;
                    reaction.frames.extend(partition.subscribe(&id));
                    return;
                }
                partition.awaiting_restart = false;
                partition.server_total = state.total;
                let verified = if live_ahead { Ok(()) } else { partition.replica.verify(state.total, state.checksum) };
                match verified {
                    Ok(()) => {
                        if partition.phase != Phase::CaughtUp {
                            partition.phase = Phase::CaughtUp;
                            self.searches.forget(&id);
                            if self.notifications_enabled {
                                reaction.notifications.push(sync_notification(
                                    &id,
                                    SyncNotificationStatus::Ok,
                                    state.total,
                                    0,
                                    partition.cumulative,
                                ));
                            }
                        }
                        self.check_complete(reaction);
                    }
                    Err(mismatch) => {
                        warn!(partition = %id, ?mismatch, "checksum mismatch; resyncing from cursor 0");
                        self.stats.checksum_mismatches += 1;
                        self.stats.resyncs += 1;
                        self.complete_reported = false;
                        partition.replica.clear();
                        reaction.frames.extend(partition.subscribe(&id));
                    }
                }
            }
            SyncStatus::InProgress | SyncStatus::Reset => {
                if status == SyncStatus::Reset {
                    // The server cannot continue from the cursor (compacted past it, or its
                    // data was reset): a snapshot follows.
                    self.stats.resyncs += 1;
                }
                if partition.phase == Phase::CaughtUp {
                    partition.phase = Phase::CatchingUp;
                    self.complete_reported = false;
                }
                if status == SyncStatus::Reset && self.bulk_instead_of_reset(&id, reaction) {
                    self.complete_reported = false;
                }
            }
            SyncStatus::Error => {
                let error = state.error.unwrap_or_default();
                let error = (error_code(error.code), error.message);
                warn!(partition = %id, ?error, "subscription failed");
                partition.phase = Phase::Failed;
                partition.error = Some(error.clone());
                if self.notifications_enabled {
                    let mut notification = sync_notification(
                        &id,
                        SyncNotificationStatus::Error,
                        partition.server_total,
                        0,
                        partition.cumulative,
                    );
                    if let Notification::Sync(sync) = &mut notification {
                        sync.error = Some(error);
                    }
                    reaction.notifications.push(notification);
                }
                self.check_complete(reaction);
            }
            SyncStatus::SchemaChanged => {
                // What the device holds may not match the new schema: sync it again from 0.
                info!(partition = %id, "the source's schema changed; resyncing from cursor 0");
                self.stats.resyncs += 1;
                self.stats.schema_changes += 1;
                self.complete_reported = false;
                partition.replica.clear();
                reaction.frames.extend(partition.subscribe(&id));
                if self.notifications_enabled {
                    let total = partition.server_total;
                    let cumulative = partition.cumulative;
                    let status = SyncNotificationStatus::SchemaChanged;
                    reaction.notifications.push(sync_notification(&id, status, total, 0, cumulative));
                }
            }
            SyncStatus::Unspecified => {}
        }
    }

    pub(super) fn on_error(&mut self, error: ErrorFrame, reaction: &mut Reaction) {
        let code = error_code(error.code);
        warn!(?code, message = %error.message, fatal = error.fatal, source = %error.source, key = %error.key, "server error");
        let mut failed = Vec::new();
        if !error.source.is_empty() {
            if !error.key.is_empty() {
                self.stats.partitions_seen.insert(PartitionId::new(&error.source, &error.key));
            }
            // A subscription still catching up that the error names has failed; errors about
            // a caught-up partition concern something else (e.g. a mutation).
            for (id, partition) in &mut self.partitions {
                let named = id.source == error.source && (error.key.is_empty() || id.key == error.key);
                if named && partition.phase == Phase::CatchingUp {
                    partition.phase = Phase::Failed;
                    partition.error = Some((code, error.message.clone()));
                    failed.push((id.clone(), partition.server_total, partition.cumulative));
                }
            }
        }
        if self.notifications_enabled {
            if failed.is_empty() {
                let id = PartitionId::new(&error.source, &error.key);
                failed.push((id, 0, 0));
            }
            for (id, total, cumulative) in &failed {
                let mut notification = sync_notification(id, SyncNotificationStatus::Error, *total, 0, *cumulative);
                if let Notification::Sync(sync) = &mut notification {
                    sync.error = Some((code, error.message.clone()));
                }
                reaction.notifications.push(notification);
            }
        }
        if error.fatal {
            self.fatal_error = Some(error);
        }
        self.check_complete(reaction);
    }
}
