//! Operator commands (`Command`) and their acknowledgements (`CommandAck`), as device.proto
//! describes them: the device acts on a command id once, records it durably (beside the
//! mutation queue, which a wipe empties) and acknowledges it on the open session, or after
//! its next `Welcome` when it has none (commands sent before a locked device's refusal).
//! A command the server sends again is only acknowledged again.

use syncline_proto::v1::{ClientFrame, Command, CommandAck, CommandKind, Logout, client_frame};
use tracing::{debug, warn};

use super::{Reaction, Searches, SyncEngine, frame};
use crate::state::{StopCommand, StopReason};

impl SyncEngine {
    pub(super) fn on_command(&mut self, command: Command, reaction: &mut Reaction) {
        let Ok(kind) = CommandKind::try_from(command.kind) else {
            debug!(kind = command.kind, "unknown command ignored");
            return;
        };
        let known = !command.command_id.is_empty();
        if known && self.mutations.command_handled(&command.command_id).unwrap_or(false) {
            debug!(command_id = %command.command_id, ?kind, "command already acted on; acknowledging again");
            reaction.frames.extend(self.command_ack(&command.command_id));
            return;
        }
        warn!(?kind, reason = %command.reason, command_id = %command.command_id, "operator command");
        let stop = match kind {
            CommandKind::Resync => {
                self.resync_everything(reaction);
                None
            }
            CommandKind::Wipe => {
                self.wipe_local_data();
                Some(StopCommand::Wipe)
            }
            CommandKind::Lock => {
                self.session_token = None;
                Some(StopCommand::Lock)
            }
            CommandKind::Logout => {
                self.session_token = None;
                Some(StopCommand::Logout)
            }
            CommandKind::Unspecified => return,
        };
        if known {
            if let Err(error) = self.mutations.record_command(&command.command_id) {
                // Still acknowledged below when the session is open; otherwise the server
                // sends the command again after the next Welcome.
                warn!(%error, "recording an acted-on command failed");
            }
            reaction.frames.extend(self.command_ack(&command.command_id));
        }
        // Without a session (before a refused Hello's Error) the server closes the connection
        // itself: no Logout, and later commands in the same burst are acted on too.
        let Some(stop) = stop.filter(|_| self.welcomed) else { return };
        if matches!(stop, StopCommand::Wipe | StopCommand::Logout) {
            reaction.frames.push(frame(client_frame::Msg::Logout(Logout {})));
        }
        reaction.stop = Some(StopReason::Command { kind: stop, reason: command.reason });
    }

    /// Returns the `CommandAck` of `command_id` when the session is open (and records it
    /// sent), else nothing: it goes after the next `Welcome`.
    fn command_ack(&mut self, command_id: &str) -> Option<ClientFrame> {
        if !self.welcomed {
            return None;
        }
        if let Err(error) = self.mutations.mark_command_ack_sent(command_id) {
            warn!(%error, "recording a command ack sent failed");
        }
        Some(frame(client_frame::Msg::CommandAck(CommandAck { command_id: command_id.to_owned() })))
    }

    /// Returns the acks recorded but not sent yet (called right after `Welcome`).
    pub(super) fn unsent_command_acks(&mut self) -> Vec<ClientFrame> {
        let unsent = match self.mutations.unsent_command_acks() {
            Ok(unsent) => unsent,
            Err(error) => {
                warn!(%error, "reading unsent command acks failed");
                return Vec::new();
            }
        };
        unsent.iter().filter_map(|command_id| self.command_ack(command_id)).collect()
    }

    /// Drops every local partition and subscribes again from cursor 0 to those subscribed
    /// on this connection (the others start from 0 when next subscribed).
    fn resync_everything(&mut self, reaction: &mut Reaction) {
        self.restored.clear();
        self.confirmed.clear();
        for (id, partition) in &mut self.partitions {
            partition.replica.clear();
            if partition.phase != super::Phase::Idle {
                self.stats.resyncs += 1;
                reaction.frames.extend(partition.subscribe(id));
            }
        }
        self.complete_reported = false;
    }

    /// Deletes everything the device holds locally: partitions, records learned from
    /// mutation results and searches, the offline mutation queue and the session token.
    fn wipe_local_data(&mut self) {
        self.partitions.clear();
        self.restored.clear();
        self.confirmed.clear();
        self.searches = Searches::default();
        if let Err(error) = self.mutations.clear() {
            warn!(%error, "wiping the mutation queue failed");
        }
        self.session_token = None;
        self.complete_reported = false;
    }

    /// Logs in again with `username` and `password` at the next connection (after a lock,
    /// wipe or logout, or a refused login): forgets the session token and any backend token.
    pub(crate) fn log_in_with_password(&mut self, username: &str, password: &str) {
        username.clone_into(&mut self.username);
        password.clone_into(&mut self.password);
        self.backend_token = None;
        self.session_token = None;
    }
}
