use parking_lot::Mutex;
use syncline_proto::v1::{CommandKind, server_frame};

use super::*;
use crate::storage::{CommandState, DeviceState};
use crate::test_util::fixtures::temp_store;

/// Connections as the gateway would hold them: a set of connected client ids, recording
/// what each was sent.
#[derive(Default)]
struct RecordedDelivery {
    connected: Mutex<Vec<String>>,
    sent: Mutex<Vec<(String, v1::Command)>>,
}

impl CommandDelivery for RecordedDelivery {
    fn deliver<'a>(&'a self, client_id: &'a str, frame: ServerFrame) -> DeliveryFuture<'a> {
        Box::pin(async move {
            if !self.connected.lock().iter().any(|connected| connected == client_id) {
                return 0;
            }
            let Some(server_frame::Msg::Command(command)) = frame.msg else { panic!("not a command: {frame:?}") };
            self.sent.lock().push((client_id.to_owned(), command));
            1
        })
    }

    fn connections_of(&self, client_id: &str) -> usize {
        usize::from(self.connected.lock().iter().any(|connected| connected == client_id))
    }
}

fn service() -> (tempfile::TempDir, Arc<dyn Store>, Arc<RecordedDelivery>, DeviceManagement) {
    let (dir, store) = temp_store();
    for (client_id, user_id) in [("c1", "ann"), ("c2", "bob")] {
        let device = StoredDevice { client_id: client_id.into(), user_id: user_id.into(), ..StoredDevice::default() };
        store.put_device(&device).unwrap();
    }
    let delivery = Arc::new(RecordedDelivery::default());
    let devices = DeviceManagement::new(store.clone(), delivery.clone(), Arc::default());
    (dir, store, delivery, devices)
}

#[tokio::test]
async fn a_command_to_a_connected_device_is_delivered_at_once_and_acknowledged_by_it() {
    let (_dir, store, delivery, devices) = service();
    delivery.connected.lock().push("c1".into());
    let sent = devices.send("c1", DeviceCommandKind::Resync, "fresh copy").await.unwrap();
    assert_eq!(sent.state, CommandState::Delivered);
    let frames = delivery.sent.lock().clone();
    assert_eq!(frames.len(), 1);
    let (client_id, command) = &frames[0];
    assert_eq!(
        (client_id.as_str(), command.kind, command.reason.as_str()),
        ("c1", CommandKind::Resync as i32, "fresh copy")
    );
    assert_eq!(command.command_id, sent.command_id);
    assert!(devices.unacknowledged("c1").await.unwrap().len() == 1, "sent again until acknowledged");

    let acked = devices.acknowledge("c1", &sent.command_id).await.unwrap().unwrap();
    assert_eq!(acked.state, CommandState::Acknowledged);
    assert!(devices.unacknowledged("c1").await.unwrap().is_empty());
    assert_eq!(devices.acknowledge("c2", &sent.command_id).await.unwrap(), None, "another device cannot ack it");
    assert_eq!(store.commands("c1").unwrap()[0].state, CommandState::Acknowledged);
}

#[tokio::test]
async fn a_command_to_an_offline_device_waits_pending_for_its_next_hello() {
    let (_dir, _store, delivery, devices) = service();
    let sent = devices.send("c1", DeviceCommandKind::Wipe, "lost").await.unwrap();
    assert_eq!(sent.state, CommandState::Pending);
    assert!(delivery.sent.lock().is_empty());
    let waiting = devices.unacknowledged("c1").await.unwrap();
    assert_eq!(waiting.len(), 1);
    let (command_id, frame) = &waiting[0];
    assert_eq!(command_id, &sent.command_id);
    assert!(
        matches!(&frame.msg, Some(server_frame::Msg::Command(command)) if command.kind == CommandKind::Wipe as i32)
    );
    devices.mark_delivered("c1", std::slice::from_ref(command_id)).await.unwrap();
    assert_eq!(devices.commands("c1").await.unwrap()[0].state, CommandState::Delivered);
}

#[tokio::test]
async fn lock_and_unlock_set_the_device_state_and_unlock_is_never_sent() {
    let (_dir, store, delivery, devices) = service();
    delivery.connected.lock().push("c1".into());
    devices.send("c1", DeviceCommandKind::Lock, "stolen").await.unwrap();
    assert_eq!(store.device("c1").unwrap().unwrap().state, DeviceState::Locked);
    let unlock = devices.send("c1", DeviceCommandKind::Unlock, "found").await.unwrap();
    assert_eq!(store.device("c1").unwrap().unwrap().state, DeviceState::Active);
    assert_eq!(unlock.state, CommandState::Acknowledged, "the server did it");
    assert_eq!(delivery.sent.lock().len(), 1, "only the lock went to the device");
}

#[tokio::test]
async fn an_unlock_supersedes_a_lock_the_device_has_not_acknowledged() {
    let (_dir, _store, _delivery, devices) = service();
    devices.send("c1", DeviceCommandKind::Lock, "stolen").await.unwrap();
    devices.send("c1", DeviceCommandKind::Resync, "").await.unwrap();
    assert_eq!(devices.unacknowledged("c1").await.unwrap().len(), 2);
    devices.send("c1", DeviceCommandKind::Unlock, "found").await.unwrap();
    let waiting = devices.unacknowledged("c1").await.unwrap();
    assert_eq!(waiting.len(), 1, "only the resync is still sent");
    assert!(matches!(&waiting[0].1.msg, Some(server_frame::Msg::Command(c)) if c.kind == CommandKind::Resync as i32));
}

#[tokio::test]
async fn wipe_and_logout_revoke_the_session_tokens_at_once() {
    let (_dir, store, _delivery, devices) = service();
    devices.send("c1", DeviceCommandKind::Logout, "").await.unwrap();
    assert_eq!(store.device("c1").unwrap().unwrap().token_generation, 1);
    devices.send("c1", DeviceCommandKind::Wipe, "").await.unwrap();
    assert_eq!(store.device("c1").unwrap().unwrap().token_generation, 2);
    devices.send("c1", DeviceCommandKind::Resync, "").await.unwrap();
    assert_eq!(store.device("c1").unwrap().unwrap().token_generation, 2, "resync keeps the session");
}

#[tokio::test]
async fn bad_requests_get_typed_errors() {
    let (_dir, _store, _delivery, devices) = service();
    let unknown = devices.send("nobody", DeviceCommandKind::Lock, "").await.unwrap_err();
    assert_eq!(unknown.class(), ErrorClass::NotFound);
    let long = devices.send("c1", DeviceCommandKind::Lock, &"x".repeat(MAX_REASON_BYTES + 1)).await.unwrap_err();
    assert_eq!(long.class(), ErrorClass::BadRequest);
    assert!(devices.commands("c1").await.unwrap().is_empty(), "nothing stored");
    assert_eq!(devices.commands("nobody").await.unwrap_err().class(), ErrorClass::NotFound);
}

#[tokio::test]
async fn listings_page_with_opaque_cursors_and_last_seen_is_batched() {
    let (_dir, store, _delivery, devices) = service();
    let first = devices.list(DeviceFilter::default(), None, 1).await.unwrap();
    assert_eq!(first.devices[0].client_id, "c1");
    let after = first.next_after.expect("another page");
    let second = devices.list(DeviceFilter::default(), Some(after), 1).await.unwrap();
    assert_eq!((second.devices[0].client_id.as_str(), second.next_after), ("c2", None));

    devices.seen("c1");
    devices.seen("c1");
    assert_eq!(store.device("c1").unwrap().unwrap().last_seen_ms, 0, "not written per frame");
    let noted = devices.device("c1").await.unwrap().last_seen_ms;
    assert!(noted > 0, "the registry view includes what is not flushed yet");
    assert_eq!(devices.flush_last_seen().unwrap(), 1);
    assert_eq!(store.device("c1").unwrap().unwrap().last_seen_ms, noted);
    assert_eq!(devices.flush_last_seen().unwrap(), 0);
}
