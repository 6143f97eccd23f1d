//! Users, devices, secrets and device cursors in the embedded store: small transactions on
//! the caller's thread (redb serialises them with the writer's).

use prost::Message;
use redb::{Durability, ReadableTable, ReadableTableMetadata};

use super::EmbeddedStore;
use super::tables::*;
use crate::storage::{
    AccountStore, CursorStore, DeviceState, PartitionName, StoreError, StoreResult, StoredDevice, StoredUser,
};

impl AccountStore for EmbeddedStore {
    fn add_user(&self, user: &StoredUser) -> StoreResult<()> {
        let txn = self.begin_write()?;
        {
            let mut users = txn.open_table(USERS).map_err(store_error)?;
            if users.get(user.name.as_str()).map_err(store_error)?.is_some() {
                return Err(StoreError::UserExists { name: user.name.clone() });
            }
            let value = UserValue { password_hash: user.password_hash.clone() }.encode_to_vec();
            users.insert(user.name.as_str(), value.as_slice()).map_err(store_error)?;
        }
        txn.commit().map_err(store_error)
    }

    fn set_user_password(&self, name: &str, password_hash: &str) -> StoreResult<bool> {
        let txn = self.begin_write()?;
        {
            let mut users = txn.open_table(USERS).map_err(store_error)?;
            if users.get(name).map_err(store_error)?.is_none() {
                return Ok(false);
            }
            let value = UserValue { password_hash: password_hash.to_owned() }.encode_to_vec();
            users.insert(name, value.as_slice()).map_err(store_error)?;
        }
        txn.commit().map_err(store_error)?;
        Ok(true)
    }

    fn user(&self, name: &str) -> StoreResult<Option<StoredUser>> {
        let txn = self.begin_read()?;
        let users = txn.open_table(USERS).map_err(store_error)?;
        let Some(value) = users.get(name).map_err(store_error)? else {
            return Ok(None);
        };
        let value = UserValue::decode(value.value()).map_err(|e| corrupt("user", &e))?;
        Ok(Some(StoredUser { name: name.to_owned(), password_hash: value.password_hash }))
    }

    fn user_count(&self) -> StoreResult<u64> {
        let txn = self.begin_read()?;
        let users = txn.open_table(USERS).map_err(store_error)?;
        users.len().map_err(store_error)
    }

    fn put_device(&self, device: &StoredDevice) -> StoreResult<()> {
        let value = encode_device(device);
        let txn = self.begin_write()?;
        {
            let mut devices = txn.open_table(DEVICES).map_err(store_error)?;
            let previous_user = match devices.get(device.client_id.as_str()).map_err(store_error)? {
                Some(previous) => Some(decode_device(&device.client_id, previous.value())?.user_id),
                None => None,
            };
            devices.insert(device.client_id.as_str(), value.as_slice()).map_err(store_error)?;
            let mut by_user = txn.open_table(DEVICES_BY_USER).map_err(store_error)?;
            if let Some(previous_user) = previous_user.filter(|previous| *previous != device.user_id) {
                by_user.remove((previous_user.as_str(), device.client_id.as_str())).map_err(store_error)?;
            }
            by_user.insert((device.user_id.as_str(), device.client_id.as_str()), ()).map_err(store_error)?;
        }
        txn.commit().map_err(store_error)
    }

    fn device(&self, client_id: &str) -> StoreResult<Option<StoredDevice>> {
        let txn = self.begin_read()?;
        let devices = txn.open_table(DEVICES).map_err(store_error)?;
        let Some(value) = devices.get(client_id).map_err(store_error)? else {
            return Ok(None);
        };
        decode_device(client_id, value.value()).map(Some)
    }

    fn secret(&self, name: &str, generate: &dyn Fn() -> Vec<u8>) -> StoreResult<Vec<u8>> {
        {
            let txn = self.begin_read()?;
            let secrets = txn.open_table(SECRETS).map_err(store_error)?;
            if let Some(value) = secrets.get(name).map_err(store_error)? {
                return Ok(value.value().to_vec());
            }
        }
        let txn = self.begin_write()?;
        let secret = {
            let mut secrets = txn.open_table(SECRETS).map_err(store_error)?;
            // Another caller may have created it since the read above.
            if let Some(value) = secrets.get(name).map_err(store_error)? {
                return Ok(value.value().to_vec());
            }
            let secret = generate();
            secrets.insert(name, secret.as_slice()).map_err(store_error)?;
            secret
        };
        txn.commit().map_err(store_error)?;
        Ok(secret)
    }
}

impl CursorStore for EmbeddedStore {
    fn save_cursors(&self, cursors: &[(String, PartitionName, u64)]) -> StoreResult<()> {
        let mut txn = self.begin_write()?;
        // Cursors are advisory: a non-durable commit is persisted by the next durable one
        // (any batch), and losing the last few on a crash only makes a device resend more.
        txn.set_durability(Durability::None).map_err(store_error)?;
        {
            let mut table = txn.open_table(CURSORS).map_err(store_error)?;
            for (client_id, partition, cursor) in cursors {
                let key = (client_id.as_str(), partition.source.as_str(), partition.key.as_str());
                table.insert(key, *cursor).map_err(store_error)?;
            }
        }
        txn.commit().map_err(store_error)
    }

    fn cursor(&self, client_id: &str, partition: &PartitionName) -> StoreResult<Option<u64>> {
        let txn = self.begin_read()?;
        let table = txn.open_table(CURSORS).map_err(store_error)?;
        let key = (client_id, partition.source.as_str(), partition.key.as_str());
        Ok(table.get(key).map_err(store_error)?.map(|cursor| cursor.value()))
    }
}

/// A stored user (key: name).
#[derive(Clone, PartialEq, prost::Message)]
pub(in crate::storage) struct UserValue {
    #[prost(string, tag = "1")]
    pub(in crate::storage) password_hash: String,
}

/// Returns the `devices` value of `device`.
pub(in crate::storage) fn encode_device(device: &StoredDevice) -> Vec<u8> {
    DeviceValue {
        user_id: device.user_id.clone(),
        platform: device.platform.clone(),
        app_version: device.app_version.clone(),
        model: device.model.clone(),
        created_ms: device.created_ms,
        last_seen_ms: device.last_seen_ms,
        state: device.state.as_str().to_owned(),
        token_generation: device.token_generation,
    }
    .encode_to_vec()
}

/// Decodes the `devices` value of `client_id`.
pub(in crate::storage) fn decode_device(client_id: &str, value: &[u8]) -> StoreResult<StoredDevice> {
    let value = DeviceValue::decode(value).map_err(|e| corrupt("device", &e))?;
    let state = DeviceState::from_name(&value.state)
        .ok_or_else(|| StoreError::Corrupt(format!("device {client_id:?} has an unknown state {:?}", value.state)))?;
    Ok(StoredDevice {
        client_id: client_id.to_owned(),
        user_id: value.user_id,
        platform: value.platform,
        app_version: value.app_version,
        model: value.model,
        created_ms: value.created_ms,
        last_seen_ms: value.last_seen_ms,
        state,
        token_generation: value.token_generation,
    })
}

/// A stored device (key: client id).
#[derive(Clone, PartialEq, prost::Message)]
struct DeviceValue {
    #[prost(string, tag = "1")]
    user_id: String,
    #[prost(string, tag = "2")]
    platform: String,
    #[prost(string, tag = "3")]
    app_version: String,
    #[prost(string, tag = "4")]
    model: String,
    #[prost(int64, tag = "5")]
    created_ms: i64,
    #[prost(int64, tag = "6")]
    last_seen_ms: i64,
    /// [`DeviceState::as_str`].
    #[prost(string, tag = "7")]
    state: String,
    #[prost(uint64, tag = "8")]
    token_generation: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::embedded::EmbeddedOptions;

    fn stored_state(store: &EmbeddedStore, client_id: &str) -> String {
        let txn = store.begin_read().unwrap();
        let devices = txn.open_table(DEVICES).unwrap();
        let value = devices.get(client_id).unwrap().expect("stored");
        DeviceValue::decode(value.value()).unwrap().state
    }

    #[test]
    fn device_states_are_stored_by_name_and_an_unknown_one_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("syncline.redb"), EmbeddedOptions::default()).unwrap();
        for (state, name) in
            [(DeviceState::Active, "active"), (DeviceState::Locked, "locked"), (DeviceState::Wiped, "wiped")]
        {
            let device =
                StoredDevice { client_id: "c1".into(), user_id: "ann".into(), state, ..StoredDevice::default() };
            store.put_device(&device).unwrap();
            assert_eq!(stored_state(&store, "c1"), name);
            assert_eq!(store.device("c1").unwrap().map(|device| device.state), Some(state));
        }
        let txn = store.begin_write().unwrap();
        {
            let mut devices = txn.open_table(DEVICES).unwrap();
            let value = DeviceValue { user_id: "ann".into(), state: "frozen".into(), ..DeviceValue::default() };
            devices.insert("c1", value.encode_to_vec().as_slice()).unwrap();
        }
        txn.commit().unwrap();
        assert!(matches!(store.device("c1"), Err(StoreError::Corrupt(_))));
    }
}
