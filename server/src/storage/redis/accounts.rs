//! Users, devices, secrets and device cursors in Redis.

use std::collections::BTreeMap;

use prost::Message as _;

use super::keys;
use super::{RedisStore, parse_u64};
use crate::storage::embedded::accounts::{UserValue, decode_device, encode_device};
use crate::storage::embedded::tables::corrupt;
use crate::storage::{AccountStore, CursorStore, PartitionName, StoreError, StoreResult, StoredDevice, StoredUser};

/// Times `put_device` is retried when the device's user changed while it wrote.
const MAX_PUT_DEVICE_ATTEMPTS: usize = 16;

impl AccountStore for RedisStore {
    fn add_user(&self, user: &StoredUser) -> StoreResult<()> {
        let value = UserValue { password_hash: user.password_hash.clone() }.encode_to_vec();
        let added = self.run_durable(|connection| {
            let added: bool = self
                .scripts
                .add_user
                .key(keys::USERS)
                .key(keys::USER_NAMES)
                .arg(&user.name)
                .arg(value.as_slice())
                .invoke(connection)?;
            Ok((added, added))
        })?;
        if added { Ok(()) } else { Err(StoreError::UserExists { name: user.name.clone() }) }
    }

    fn set_user_password(&self, name: &str, password_hash: &str) -> StoreResult<bool> {
        let value = UserValue { password_hash: password_hash.to_owned() }.encode_to_vec();
        self.run_durable(|connection| {
            let replaced: bool =
                self.scripts.replace_existing.key(keys::USERS).arg(name).arg(value.as_slice()).invoke(connection)?;
            Ok((replaced, replaced))
        })
    }

    fn user(&self, name: &str) -> StoreResult<Option<StoredUser>> {
        let value: Option<Vec<u8>> =
            self.run(|connection| redis::cmd("HGET").arg(keys::USERS).arg(name).query(connection))?;
        let Some(value) = value else { return Ok(None) };
        let value = UserValue::decode(value.as_slice()).map_err(|e| corrupt("user", &e))?;
        Ok(Some(StoredUser { name: name.to_owned(), password_hash: value.password_hash }))
    }

    fn user_count(&self) -> StoreResult<u64> {
        self.run(|connection| redis::cmd("HLEN").arg(keys::USERS).query(connection))
    }

    fn put_device(&self, device: &StoredDevice) -> StoreResult<()> {
        let value = encode_device(device);
        let by_user = keys::devices_of_user(&device.user_id);
        for _ in 0..MAX_PUT_DEVICE_ATTEMPTS {
            let owner: Option<String> = self.run(|connection| {
                redis::cmd("HGET").arg(keys::DEVICE_OWNERS).arg(&device.client_id).query(connection)
            })?;
            let previous = owner.as_deref().map_or_else(|| by_user.clone(), keys::devices_of_user);
            let written = self.run_durable(|connection| {
                let written: bool = self
                    .scripts
                    .put_device
                    .key(keys::DEVICES)
                    .key(keys::DEVICE_OWNERS)
                    .key(keys::DEVICE_IDS)
                    .key(&by_user)
                    .key(&previous)
                    .arg(&device.client_id)
                    .arg(value.as_slice())
                    .arg(&device.user_id)
                    .arg(if owner.is_some() { "1" } else { "0" })
                    .arg(owner.as_deref().unwrap_or_default())
                    .invoke(connection)?;
                Ok((written, written))
            })?;
            if written {
                return Ok(());
            }
        }
        Err(StoreError::Contention { subject: format!("device {}", device.client_id) })
    }

    fn device(&self, client_id: &str) -> StoreResult<Option<StoredDevice>> {
        let value: Option<Vec<u8>> =
            self.run(|connection| redis::cmd("HGET").arg(keys::DEVICES).arg(client_id).query(connection))?;
        value.map(|value| decode_device(client_id, &value)).transpose()
    }

    fn secret(&self, name: &str, generate: &dyn Fn() -> Vec<u8>) -> StoreResult<Vec<u8>> {
        let stored: Option<Vec<u8>> =
            self.run(|connection| redis::cmd("HGET").arg(keys::SECRETS).arg(name).query(connection))?;
        if let Some(stored) = stored {
            return Ok(stored);
        }
        let secret = generate();
        // Another node may create it meanwhile: the first one stored wins, and all use it.
        self.run_durable(|connection| {
            let created: bool =
                redis::cmd("HSETNX").arg(keys::SECRETS).arg(name).arg(secret.as_slice()).query(connection)?;
            let stored: Vec<u8> = redis::cmd("HGET").arg(keys::SECRETS).arg(name).query(connection)?;
            Ok((stored, created))
        })
    }
}

impl CursorStore for RedisStore {
    fn save_cursors(&self, cursors: &[(String, PartitionName, u64)]) -> StoreResult<()> {
        // Advisory: no WAIT. One HSET per device (its own key, so in a cluster each command
        // goes to one node; a pipeline across slots would not).
        let mut by_client: BTreeMap<&str, Vec<(String, u64)>> = BTreeMap::new();
        for (client_id, partition, cursor) in cursors {
            by_client.entry(client_id.as_str()).or_default().push((keys::partition_member(partition), *cursor));
        }
        for (client_id, fields) in by_client {
            self.run(|connection| {
                redis::cmd("HSET").arg(keys::cursors(client_id)).arg(fields.as_slice()).query::<()>(connection)
            })?;
        }
        Ok(())
    }

    fn cursor(&self, client_id: &str, partition: &PartitionName) -> StoreResult<Option<u64>> {
        let member = keys::partition_member(partition);
        let value: Option<String> =
            self.run(|connection| redis::cmd("HGET").arg(keys::cursors(client_id)).arg(member).query(connection))?;
        value.map(|value| parse_u64(&value, "cursor")).transpose()
    }
}
