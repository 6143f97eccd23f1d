//! Operator commands on a device's connection: the unacknowledged ones sent right after
//! Welcome (before any sync frame) or before a locked device's refusal, and `CommandAck`.
//! What a command means and where it is stored is [`crate::devices`]'; this file only moves
//! the frames.

use syncline_proto::v1;
use syncline_push::Outbox;

use super::DeviceSession;
use crate::error::ErrorClass;
use crate::storage::{DeviceCommandKind, DeviceState};

impl DeviceSession {
    /// Sends `client_id`'s unacknowledged commands on this connection and records them
    /// delivered. Returns false when the store could not be read (logged).
    pub(super) async fn send_unacknowledged_commands(&self, client_id: &str, outbox: &Outbox) -> bool {
        let devices = &self.services.devices;
        let commands = match devices.unacknowledged(client_id).await {
            Ok(commands) => commands,
            Err(error) => {
                tracing::error!(peer = %self.peer, client_id, %error, "cannot read the device's commands");
                return false;
            }
        };
        let mut delivered = Vec::with_capacity(commands.len());
        for (command_id, frame) in commands {
            if outbox.send_frame(frame).await.is_err() {
                break;
            }
            delivered.push(command_id);
        }
        if let Err(error) = devices.mark_delivered(client_id, &delivered).await {
            tracing::warn!(peer = %self.peer, client_id, %error, "cannot record commands delivered");
        }
        true
    }

    /// Records a device's acknowledgement. A device that acknowledges a lock has stopped
    /// syncing: its connection is closed as a locked device's (FORBIDDEN, 4003).
    pub(super) async fn on_command_ack(&mut self, ack: v1::CommandAck, outbox: &Outbox) {
        let Some(identity) = &self.identity else { return };
        let client_id = identity.client_id.clone();
        match self.services.devices.acknowledge(&client_id, &ack.command_id).await {
            Ok(Some(command)) => match command.kind {
                // Acks are sent again after later Welcomes: only a device still locked is
                // closed.
                DeviceCommandKind::Lock => {
                    let locked = self.services.devices.device(&client_id).await.map(|device| device.state);
                    if matches!(locked, Ok(DeviceState::Locked)) {
                        let reason = format!("this device is locked: {}", command.reason);
                        self.fatal(outbox, ErrorClass::Forbidden, &reason).await;
                    }
                }
                DeviceCommandKind::Unlock
                | DeviceCommandKind::Wipe
                | DeviceCommandKind::Logout
                | DeviceCommandKind::Resync => {}
            },
            Ok(None) => {
                tracing::debug!(peer = %self.peer, client_id, command_id = %ack.command_id, "ack of an unknown command ignored");
            }
            Err(error) => {
                // The device sends the ack again after its next Welcome; nothing to tell it.
                tracing::error!(peer = %self.peer, client_id, %error, "cannot record a command ack");
            }
        }
    }
}
