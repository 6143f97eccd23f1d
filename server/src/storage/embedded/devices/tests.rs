use redb::{Database, ReadableDatabase};

use super::*;
use crate::storage::embedded::EmbeddedOptions;
use crate::storage::embedded::tables::{FORMAT_VERSION, FORMAT_VERSION_KEY, STORE_META};

fn open(dir: &tempfile::TempDir) -> EmbeddedStore {
    EmbeddedStore::open(&dir.path().join("syncline.redb"), EmbeddedOptions::default()).unwrap()
}

fn device(client_id: &str, user_id: &str, platform: &str, last_seen_ms: i64) -> StoredDevice {
    StoredDevice {
        client_id: client_id.into(),
        user_id: user_id.into(),
        platform: platform.into(),
        last_seen_ms,
        ..StoredDevice::default()
    }
}

fn ids(page: &DevicePage) -> Vec<&str> {
    page.devices.iter().map(|device| device.client_id.as_str()).collect()
}

#[test]
fn an_unknown_command_kind_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let txn = store.begin_write().unwrap();
    {
        let mut table = txn.open_table(DEVICE_COMMANDS).unwrap();
        let value = CommandValue { kind: "explode".into(), state: "pending".into(), ..CommandValue::default() };
        table.insert(("c1", 1), value.encode_to_vec().as_slice()).unwrap();
    }
    txn.commit().unwrap();
    assert!(matches!(store.commands("c1"), Err(StoreError::Corrupt(_))));
}

#[test]
fn a_format_2_store_gets_its_devices_indexed_by_user() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("syncline.redb");
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            txn.open_table(STORE_META).unwrap().insert(FORMAT_VERSION_KEY, 2).unwrap();
            let mut devices = txn.open_table(DEVICES).unwrap();
            for (id, user) in [("c1", "ann"), ("c2", "bob")] {
                devices.insert(id, encode_device(&device(id, user, "ios", 1)).as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let store = EmbeddedStore::open(&path, EmbeddedOptions::default()).expect("migrates");
    let bob = DeviceFilter { user_id: Some("bob".into()), ..DeviceFilter::default() };
    assert_eq!(ids(&store.list_devices(&bob, None, 10).unwrap()), vec!["c2"]);
    drop(store);
    let db = Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let version = txn.open_table(STORE_META).unwrap().get(FORMAT_VERSION_KEY).unwrap().map(|v| v.value());
    assert_eq!(version, Some(FORMAT_VERSION));
}
