//! The device registry's listing, last-seen times and operator commands in Redis. The
//! registry and every device's commands share one hash tag (`{dev}`), so that a command and
//! its effect on the device commit in one script.

use std::time::Instant;

use super::keys;
use super::{RedisStore, parse_u64};
use crate::storage::embedded::accounts::{decode_device, encode_device};
use crate::storage::embedded::devices::{decode_command, encode_command};
use crate::storage::{
    CommandEffect, CommandState, DeviceFilter, DevicePage, DeviceStore, MAX_COMMANDS_PER_DEVICE, MAX_DEVICE_PAGE,
    PartitionName, SeenDevice, StoreError, StoreResult, StoredCommand, StoredDevice,
};

/// Times a compare-and-set on a device or its commands is retried before giving up.
const MAX_DEVICE_ATTEMPTS: usize = 16;

/// Client ids read per step while filling a page of devices.
const DEVICE_PAGE_CHUNK: usize = 256;

/// A device's stored value (if registered) and its stored commands by position.
type DeviceRead = (Option<Vec<u8>>, Vec<(u64, Vec<u8>)>);

/// The same as Redis answers it: positions as text, unordered.
type RawDeviceRead = (Option<Vec<u8>>, Vec<(String, Vec<u8>)>);

impl RedisStore {
    /// Returns a device's stored value and its commands (as stored, by position).
    fn device_and_commands(&self, client_id: &str) -> StoreResult<DeviceRead> {
        let (device, commands): RawDeviceRead = self.run(|connection| {
            let device = redis::cmd("HGET").arg(keys::DEVICES).arg(client_id).query(connection)?;
            let commands = redis::cmd("HGETALL").arg(keys::device_commands(client_id)).query(connection)?;
            Ok((device, commands))
        })?;
        let mut commands = commands
            .into_iter()
            .map(|(seq, value)| Ok((parse_u64(&seq, "command position")?, value)))
            .collect::<StoreResult<Vec<_>>>()?;
        commands.sort_by_key(|(seq, _)| *seq);
        Ok((device, commands))
    }

    fn decoded_commands(&self, client_id: &str) -> StoreResult<Vec<(StoredCommand, Vec<u8>)>> {
        let (_, commands) = self.device_and_commands(client_id)?;
        commands.into_iter().map(|(seq, value)| Ok((decode_command(client_id, seq, &value)?, value))).collect()
    }

    /// Replaces commands of a device if each is still as read (`(command as read, new)`);
    /// returns false when one changed meanwhile.
    fn replace_commands(&self, client_id: &str, changes: &[(Vec<u8>, StoredCommand)]) -> StoreResult<bool> {
        if changes.is_empty() {
            return Ok(true);
        }
        let key = keys::device_commands(client_id);
        self.run_durable(|connection| {
            let mut invocation = self.scripts.compare_and_set_fields.prepare_invoke();
            invocation.key(&key);
            for (read, new) in changes {
                invocation.arg(new.seq).arg("1").arg(read.as_slice()).arg(encode_command(new));
            }
            let replaced: bool = invocation.invoke(connection)?;
            Ok((replaced, replaced))
        })
    }
}

impl DeviceStore for RedisStore {
    fn list_devices(&self, filter: &DeviceFilter, after: Option<&str>, limit: usize) -> StoreResult<DevicePage> {
        let limit = limit.clamp(1, MAX_DEVICE_PAGE);
        let index = filter.user_id.as_deref().map_or_else(|| keys::DEVICE_IDS.to_owned(), keys::devices_of_user);
        let mut from = after.map_or_else(|| "-".to_owned(), |after| format!("({after}"));
        let mut page = DevicePage::default();
        loop {
            let ids: Vec<String> = self.run(|connection| {
                redis::cmd("ZRANGEBYLEX")
                    .arg(&index)
                    .arg(&from)
                    .arg("+")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(DEVICE_PAGE_CHUNK)
                    .query(connection)
            })?;
            let values: Vec<Option<Vec<u8>>> = if ids.is_empty() {
                Vec::new()
            } else {
                self.run(|connection| redis::cmd("HMGET").arg(keys::DEVICES).arg(&ids).query(connection))?
            };
            let read = ids.len();
            for (client_id, value) in ids.into_iter().zip(values) {
                from = format!("({client_id}");
                let Some(value) = value else { continue };
                let device = decode_device(&client_id, &value)?;
                if !filter.matches(&device) {
                    continue;
                }
                if page.devices.len() == limit {
                    page.next_after = page.devices.last().map(|last| last.client_id.clone());
                    return Ok(page);
                }
                page.devices.push(device);
            }
            if read < DEVICE_PAGE_CHUNK {
                return Ok(page);
            }
        }
    }

    fn device_cursors(&self, client_id: &str) -> StoreResult<Vec<(PartitionName, u64)>> {
        let fields: Vec<(String, String)> =
            self.run(|connection| redis::cmd("HGETALL").arg(keys::cursors(client_id)).query(connection))?;
        let mut cursors = fields
            .into_iter()
            .map(|(member, cursor)| {
                let (source, key) = keys::parse_pair_member(&member)
                    .ok_or_else(|| StoreError::Corrupt(format!("a cursor's partition is malformed: {member:?}")))?;
                Ok((PartitionName::new(source, key), parse_u64(&cursor, "cursor")?))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        cursors.sort();
        Ok(cursors)
    }

    fn record_last_seen(&self, seen: &[SeenDevice]) -> StoreResult<()> {
        // Advisory, like cursors: no WAIT; each device is a compare-and-set of its own.
        for seen in seen {
            for _ in 0..MAX_DEVICE_ATTEMPTS {
                let Some(read) = self.field(keys::DEVICES, &seen.client_id)? else { break };
                let device = decode_device(&seen.client_id, &read)?;
                let mut updated = StoredDevice { last_seen_ms: device.last_seen_ms.max(seen.at_ms), ..device.clone() };
                if let Some(reported) = &seen.reported {
                    updated.platform.clone_from(&reported.platform);
                    updated.app_version.clone_from(&reported.app_version);
                    updated.model.clone_from(&reported.model);
                }
                if updated == device {
                    break;
                }
                let replaced: bool = self.run(|connection| {
                    self.scripts
                        .compare_and_set_fields
                        .key(keys::DEVICES)
                        .arg(&seen.client_id)
                        .arg("1")
                        .arg(read.as_slice())
                        .arg(encode_device(&updated))
                        .invoke(connection)
                })?;
                if replaced {
                    break;
                }
            }
        }
        Ok(())
    }

    fn add_command(&self, command: &StoredCommand, effect: CommandEffect) -> StoreResult<Option<StoredCommand>> {
        let client_id = command.client_id.as_str();
        let commands_key = keys::device_commands(client_id);
        for _ in 0..MAX_DEVICE_ATTEMPTS {
            let (read, stored) = self.device_and_commands(client_id)?;
            let Some(read) = read else { return Ok(None) };
            let mut device = decode_device(client_id, &read)?;
            if let Some(state) = effect.set_state {
                device.state = state;
            }
            if effect.revoke_tokens {
                device.token_generation += 1;
            }
            let mut commands = stored
                .iter()
                .map(|(seq, value)| decode_command(client_id, *seq, value))
                .collect::<StoreResult<Vec<_>>>()?;
            let seq = commands.last().map_or(1, |last| last.seq + 1);
            let new = StoredCommand { seq, ..command.clone() };
            commands.push(new.clone());
            let mut excess = commands.len().saturating_sub(MAX_COMMANDS_PER_DEVICE);
            let mut dropped = Vec::new();
            for old in &commands {
                if excess == 0 {
                    break;
                }
                if old.state == CommandState::Acknowledged {
                    dropped.push(old.seq);
                    excess -= 1;
                }
            }
            let started = Instant::now();
            let written = self.run_durable(|connection| {
                let mut invocation = self.scripts.add_command.prepare_invoke();
                invocation
                    .key(keys::DEVICES)
                    .key(&commands_key)
                    .arg(client_id)
                    .arg(read.as_slice())
                    .arg(if effect == CommandEffect::default() { "0" } else { "1" })
                    .arg(encode_device(&device))
                    .arg(seq)
                    .arg(encode_command(&new));
                for seq in &dropped {
                    invocation.arg(*seq);
                }
                let written: bool = invocation.invoke(connection)?;
                Ok((written, written))
            })?;
            if written {
                self.record_commit(started);
                return Ok(Some(new));
            }
        }
        Err(StoreError::Contention { subject: format!("device {client_id}") })
    }

    fn commands(&self, client_id: &str) -> StoreResult<Vec<StoredCommand>> {
        Ok(self.decoded_commands(client_id)?.into_iter().map(|(command, _)| command).collect())
    }

    fn unacknowledged_commands(&self, client_id: &str) -> StoreResult<Vec<StoredCommand>> {
        let mut commands = self.commands(client_id)?;
        commands.retain(|command| command.state != CommandState::Acknowledged && command.kind.is_sent_to_device());
        Ok(commands)
    }

    fn mark_commands_delivered(&self, client_id: &str, command_ids: &[String], at_ms: i64) -> StoreResult<()> {
        for _ in 0..MAX_DEVICE_ATTEMPTS {
            let changes: Vec<(Vec<u8>, StoredCommand)> = self
                .decoded_commands(client_id)?
                .into_iter()
                .filter(|(command, _)| {
                    command.state == CommandState::Pending && command_ids.contains(&command.command_id)
                })
                .map(|(command, read)| {
                    (read, StoredCommand { state: CommandState::Delivered, delivered_ms: Some(at_ms), ..command })
                })
                .collect();
            if self.replace_commands(client_id, &changes)? {
                return Ok(());
            }
        }
        Err(StoreError::Contention { subject: format!("device {client_id}") })
    }

    fn acknowledge_command(&self, client_id: &str, command_id: &str, at_ms: i64) -> StoreResult<Option<StoredCommand>> {
        for _ in 0..MAX_DEVICE_ATTEMPTS {
            let found =
                self.decoded_commands(client_id)?.into_iter().find(|(command, _)| command.command_id == command_id);
            let Some((command, read)) = found else { return Ok(None) };
            if command.state == CommandState::Acknowledged {
                return Ok(Some(command));
            }
            let acknowledged = StoredCommand {
                state: CommandState::Acknowledged,
                delivered_ms: command.delivered_ms.or(Some(at_ms)),
                acknowledged_ms: Some(at_ms),
                ..command
            };
            if self.replace_commands(client_id, &[(read, acknowledged.clone())])? {
                return Ok(Some(acknowledged));
            }
        }
        Err(StoreError::Contention { subject: format!("device {client_id}") })
    }
}
