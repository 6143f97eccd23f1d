//! The device registry's listing and last-seen times, and devices' operator commands, in the
//! embedded store ([`DeviceStore`]).
//!
//! Devices are listed from `devices` by client id, or from `devices_by_user` when the filter
//! names a user; other filters are applied while scanning. Commands live in
//! `device_commands` by (client id, queue position), so one device's commands are one range.
//! Format 3 added both tables: [`migrate_from_format_2`] builds `devices_by_user` from the
//! devices of an older file.

use std::ops::Bound;

use prost::Message as _;
use redb::{Durability, ReadableTable, Table, WriteTransaction};

use super::EmbeddedStore;
use super::accounts::{decode_device, encode_device};
use super::tables::{CURSORS, DEVICE_COMMANDS, DEVICES, DEVICES_BY_USER, corrupt, store_error};
use crate::storage::{
    CommandEffect, CommandState, DeviceCommandKind, DeviceFilter, DevicePage, DeviceStore, MAX_COMMANDS_PER_DEVICE,
    MAX_DEVICE_PAGE, PartitionName, SeenDevice, StoreError, StoreResult, StoredCommand, StoredDevice,
};

/// A stored command (key: client id, queue position).
#[derive(Clone, PartialEq, prost::Message)]
struct CommandValue {
    #[prost(string, tag = "1")]
    command_id: String,
    /// [`DeviceCommandKind::as_str`].
    #[prost(string, tag = "2")]
    kind: String,
    #[prost(string, tag = "3")]
    reason: String,
    #[prost(int64, tag = "4")]
    created_ms: i64,
    /// [`CommandState::as_str`].
    #[prost(string, tag = "5")]
    state: String,
    #[prost(int64, optional, tag = "6")]
    delivered_ms: Option<i64>,
    #[prost(int64, optional, tag = "7")]
    acknowledged_ms: Option<i64>,
}

pub(in crate::storage) fn encode_command(command: &StoredCommand) -> Vec<u8> {
    CommandValue {
        command_id: command.command_id.clone(),
        kind: command.kind.as_str().to_owned(),
        reason: command.reason.clone(),
        created_ms: command.created_ms,
        state: command.state.as_str().to_owned(),
        delivered_ms: command.delivered_ms,
        acknowledged_ms: command.acknowledged_ms,
    }
    .encode_to_vec()
}

pub(in crate::storage) fn decode_command(client_id: &str, seq: u64, value: &[u8]) -> StoreResult<StoredCommand> {
    let value = CommandValue::decode(value).map_err(|e| corrupt("device command", &e))?;
    let kind = DeviceCommandKind::from_name(&value.kind).ok_or_else(|| {
        StoreError::Corrupt(format!("command {client_id}/{seq} has an unknown kind {:?}", value.kind))
    })?;
    let state = CommandState::from_name(&value.state).ok_or_else(|| {
        StoreError::Corrupt(format!("command {client_id}/{seq} has an unknown state {:?}", value.state))
    })?;
    Ok(StoredCommand {
        client_id: client_id.to_owned(),
        command_id: value.command_id,
        seq,
        kind,
        reason: value.reason,
        created_ms: value.created_ms,
        state,
        delivered_ms: value.delivered_ms,
        acknowledged_ms: value.acknowledged_ms,
    })
}

/// Returns every command of `client_id` in `table`, oldest first.
fn device_commands(
    table: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    client_id: &str,
) -> StoreResult<Vec<StoredCommand>> {
    let range = table
        .range::<(&str, u64)>((Bound::Included((client_id, 0)), Bound::Included((client_id, u64::MAX))))
        .map_err(store_error)?;
    let mut commands = Vec::new();
    for entry in range {
        let (key, value) = entry.map_err(store_error)?;
        commands.push(decode_command(client_id, key.value().1, value.value())?);
    }
    Ok(commands)
}

/// Drops the oldest acknowledged commands of a device holding more than
/// [`MAX_COMMANDS_PER_DEVICE`].
fn trim_commands(table: &mut Table<(&str, u64), &[u8]>, commands: &[StoredCommand]) -> StoreResult<()> {
    let mut excess = commands.len().saturating_sub(MAX_COMMANDS_PER_DEVICE);
    for command in commands {
        if excess == 0 {
            break;
        }
        if command.state == CommandState::Acknowledged {
            table.remove((command.client_id.as_str(), command.seq)).map_err(store_error)?;
            excess -= 1;
        }
    }
    Ok(())
}

/// Builds `devices_by_user` from `devices` (format 2 to 3); returns how many devices it
/// indexed.
pub(super) fn migrate_from_format_2(txn: &WriteTransaction) -> StoreResult<u64> {
    let devices = txn.open_table(DEVICES).map_err(store_error)?;
    let mut by_user = txn.open_table(DEVICES_BY_USER).map_err(store_error)?;
    let mut indexed = 0;
    for entry in devices.iter().map_err(store_error)? {
        let (key, value) = entry.map_err(store_error)?;
        let device = decode_device(key.value(), value.value())?;
        by_user.insert((device.user_id.as_str(), device.client_id.as_str()), ()).map_err(store_error)?;
        indexed += 1;
    }
    Ok(indexed)
}

impl DeviceStore for EmbeddedStore {
    fn list_devices(&self, filter: &DeviceFilter, after: Option<&str>, limit: usize) -> StoreResult<DevicePage> {
        let limit = limit.clamp(1, MAX_DEVICE_PAGE);
        let txn = self.begin_read()?;
        let devices = txn.open_table(DEVICES).map_err(store_error)?;
        let mut page = DevicePage::default();
        // Collects one match beyond the page, to know whether another page follows.
        let mut take = |device: StoredDevice| -> bool {
            if !filter.matches(&device) {
                return true;
            }
            if page.devices.len() == limit {
                page.next_after = page.devices.last().map(|last| last.client_id.clone());
                return false;
            }
            page.devices.push(device);
            true
        };
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        match &filter.user_id {
            Some(user) => {
                let by_user = txn.open_table(DEVICES_BY_USER).map_err(store_error)?;
                let lower = match lower {
                    Bound::Excluded(after) => Bound::Excluded((user.as_str(), after)),
                    Bound::Included(_) | Bound::Unbounded => Bound::Included((user.as_str(), "")),
                };
                let range = by_user.range::<(&str, &str)>((lower, Bound::Unbounded)).map_err(store_error)?;
                for entry in range {
                    let (key, _) = entry.map_err(store_error)?;
                    let (owner, client_id) = key.value();
                    if owner != user {
                        break;
                    }
                    let Some(value) = devices.get(client_id).map_err(store_error)? else { continue };
                    if !take(decode_device(client_id, value.value())?) {
                        break;
                    }
                }
            }
            None => {
                let range = devices.range::<&str>((lower, Bound::Unbounded)).map_err(store_error)?;
                for entry in range {
                    let (key, value) = entry.map_err(store_error)?;
                    if !take(decode_device(key.value(), value.value())?) {
                        break;
                    }
                }
            }
        }
        Ok(page)
    }

    fn device_cursors(&self, client_id: &str) -> StoreResult<Vec<(PartitionName, u64)>> {
        let txn = self.begin_read()?;
        let table = txn.open_table(CURSORS).map_err(store_error)?;
        let range = table.range::<(&str, &str, &str)>((client_id, "", "")..).map_err(store_error)?;
        let mut cursors = Vec::new();
        for entry in range {
            let (key, cursor) = entry.map_err(store_error)?;
            let (client, source, key) = key.value();
            if client != client_id {
                break;
            }
            cursors.push((PartitionName::new(source, key), cursor.value()));
        }
        Ok(cursors)
    }

    fn record_last_seen(&self, seen: &[SeenDevice]) -> StoreResult<()> {
        let mut txn = self.begin_write()?;
        // Advisory, like cursors: the next durable commit persists it, and a crash loses at
        // most the last flush interval of last-seen times.
        txn.set_durability(Durability::None).map_err(store_error)?;
        {
            let mut devices = txn.open_table(DEVICES).map_err(store_error)?;
            for seen in seen {
                let device = match devices.get(seen.client_id.as_str()).map_err(store_error)? {
                    Some(value) => decode_device(&seen.client_id, value.value())?,
                    None => continue,
                };
                let mut updated = StoredDevice { last_seen_ms: device.last_seen_ms.max(seen.at_ms), ..device.clone() };
                if let Some(reported) = &seen.reported {
                    updated.platform.clone_from(&reported.platform);
                    updated.app_version.clone_from(&reported.app_version);
                    updated.model.clone_from(&reported.model);
                }
                if updated != device {
                    let value = encode_device(&updated);
                    devices.insert(seen.client_id.as_str(), value.as_slice()).map_err(store_error)?;
                }
            }
        }
        txn.commit().map_err(store_error)
    }

    fn add_command(&self, command: &StoredCommand, effect: CommandEffect) -> StoreResult<Option<StoredCommand>> {
        let txn = self.begin_write()?;
        let stored = {
            let mut devices = txn.open_table(DEVICES).map_err(store_error)?;
            let mut device = match devices.get(command.client_id.as_str()).map_err(store_error)? {
                Some(value) => decode_device(&command.client_id, value.value())?,
                None => return Ok(None),
            };
            if let Some(state) = effect.set_state {
                device.state = state;
            }
            if effect.revoke_tokens {
                device.token_generation += 1;
            }
            if effect != CommandEffect::default() {
                devices.insert(command.client_id.as_str(), encode_device(&device).as_slice()).map_err(store_error)?;
            }
            let mut table = txn.open_table(DEVICE_COMMANDS).map_err(store_error)?;
            let mut commands = device_commands(&table, &command.client_id)?;
            let seq = commands.last().map_or(1, |last| last.seq + 1);
            let stored = StoredCommand { seq, ..command.clone() };
            table.insert((command.client_id.as_str(), seq), encode_command(&stored).as_slice()).map_err(store_error)?;
            commands.push(stored.clone());
            trim_commands(&mut table, &commands)?;
            stored
        };
        txn.commit().map_err(store_error)?;
        Ok(Some(stored))
    }

    fn commands(&self, client_id: &str) -> StoreResult<Vec<StoredCommand>> {
        let txn = self.begin_read()?;
        device_commands(&txn.open_table(DEVICE_COMMANDS).map_err(store_error)?, client_id)
    }

    fn unacknowledged_commands(&self, client_id: &str) -> StoreResult<Vec<StoredCommand>> {
        let mut commands = self.commands(client_id)?;
        commands.retain(|command| command.state != CommandState::Acknowledged && command.kind.is_sent_to_device());
        Ok(commands)
    }

    fn mark_commands_delivered(&self, client_id: &str, command_ids: &[String], at_ms: i64) -> StoreResult<()> {
        let txn = self.begin_write()?;
        {
            let mut table = txn.open_table(DEVICE_COMMANDS).map_err(store_error)?;
            for command in device_commands(&table, client_id)? {
                if command.state == CommandState::Pending && command_ids.contains(&command.command_id) {
                    let delivered =
                        StoredCommand { state: CommandState::Delivered, delivered_ms: Some(at_ms), ..command };
                    let value = encode_command(&delivered);
                    table.insert((client_id, delivered.seq), value.as_slice()).map_err(store_error)?;
                }
            }
        }
        txn.commit().map_err(store_error)
    }

    fn acknowledge_command(&self, client_id: &str, command_id: &str, at_ms: i64) -> StoreResult<Option<StoredCommand>> {
        let txn = self.begin_write()?;
        let acknowledged = {
            let mut table = txn.open_table(DEVICE_COMMANDS).map_err(store_error)?;
            let found =
                device_commands(&table, client_id)?.into_iter().find(|command| command.command_id == command_id);
            let Some(command) = found else { return Ok(None) };
            if command.state == CommandState::Acknowledged {
                return Ok(Some(command));
            }
            let acknowledged = StoredCommand {
                state: CommandState::Acknowledged,
                // An ack proves delivery, even when the write was not seen (a refused Hello).
                delivered_ms: command.delivered_ms.or(Some(at_ms)),
                acknowledged_ms: Some(at_ms),
                ..command
            };
            let value = encode_command(&acknowledged);
            table.insert((client_id, acknowledged.seq), value.as_slice()).map_err(store_error)?;
            acknowledged
        };
        txn.commit().map_err(store_error)?;
        Ok(Some(acknowledged))
    }
}

#[cfg(test)]
mod tests;
