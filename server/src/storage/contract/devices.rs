//! The device part of the contract: the registry's listing, last-seen times, and operator
//! commands with their effects (state, session revocation by token generation).

use super::Open;
use crate::storage::{
    CommandEffect, CommandState, DeviceCommandKind, DeviceFilter, DevicePage, DeviceState, MAX_COMMANDS_PER_DEVICE,
    ReportedDevice, SeenDevice, StoredCommand, StoredDevice,
};

fn device(client_id: &str, user_id: &str, platform: &str, last_seen_ms: i64) -> StoredDevice {
    StoredDevice {
        client_id: client_id.into(),
        user_id: user_id.into(),
        platform: platform.into(),
        last_seen_ms,
        ..StoredDevice::default()
    }
}

fn command(client_id: &str, command_id: &str, kind: DeviceCommandKind) -> StoredCommand {
    StoredCommand {
        client_id: client_id.into(),
        command_id: command_id.into(),
        seq: 0,
        kind,
        reason: "why".into(),
        created_ms: 10,
        state: CommandState::Pending,
        delivered_ms: None,
        acknowledged_ms: None,
    }
}

fn ids(page: &DevicePage) -> Vec<&str> {
    page.devices.iter().map(|device| device.client_id.as_str()).collect()
}

pub(super) fn devices_are_listed_by_client_id_with_filters_and_pages(open: Open) {
    let fixture = open(None);
    let store = &*fixture.store;
    for (id, user, platform, seen) in
        [("c1", "ann", "ios", 100), ("c2", "bob", "web", 200), ("c3", "ann", "web", 300), ("c4", "ann", "ios", 400)]
    {
        store.put_device(&device(id, user, platform, seen)).unwrap();
    }
    let all = DeviceFilter::default();
    let first = store.list_devices(&all, None, 3).unwrap();
    assert_eq!((ids(&first), first.next_after.as_deref()), (vec!["c1", "c2", "c3"], Some("c3")));
    let second = store.list_devices(&all, first.next_after.as_deref(), 3).unwrap();
    assert_eq!((ids(&second), second.next_after.as_deref()), (vec!["c4"], None));

    let ann = DeviceFilter { user_id: Some("ann".into()), ..DeviceFilter::default() };
    let page = store.list_devices(&ann, None, 2).unwrap();
    assert_eq!((ids(&page), page.next_after.as_deref()), (vec!["c1", "c3"], Some("c3")));
    let page = store.list_devices(&ann, Some("c3"), 2).unwrap();
    assert_eq!((ids(&page), page.next_after.as_deref()), (vec!["c4"], None));

    let filter =
        DeviceFilter { platform: Some("ios".into()), last_seen_after_ms: Some(100), ..DeviceFilter::default() };
    assert_eq!(ids(&store.list_devices(&filter, None, 10).unwrap()), vec!["c4"]);
    let filter = DeviceFilter { last_seen_before_ms: Some(300), ..DeviceFilter::default() };
    assert_eq!(ids(&store.list_devices(&filter, None, 10).unwrap()), vec!["c1", "c2"]);
    let filter = DeviceFilter { state: Some(DeviceState::Locked), ..DeviceFilter::default() };
    assert!(store.list_devices(&filter, None, 10).unwrap().devices.is_empty());
}

pub(super) fn a_device_moved_to_another_user_leaves_the_old_users_index(open: Open) {
    let fixture = open(None);
    let store = &*fixture.store;
    store.put_device(&device("c1", "ann", "ios", 1)).unwrap();
    store.put_device(&device("c1", "bob", "ios", 1)).unwrap();
    let ann = DeviceFilter { user_id: Some("ann".into()), ..DeviceFilter::default() };
    assert!(store.list_devices(&ann, None, 10).unwrap().devices.is_empty());
    let bob = DeviceFilter { user_id: Some("bob".into()), ..DeviceFilter::default() };
    assert_eq!(ids(&store.list_devices(&bob, None, 10).unwrap()), vec!["c1"]);
}

pub(super) fn last_seen_only_moves_forward_and_unknown_devices_are_skipped(open: Open) {
    let fixture = open(None);
    let store = &*fixture.store;
    store.put_device(&device("c1", "ann", "ios", 100)).unwrap();
    let seen = |client_id: &str, at_ms| SeenDevice { client_id: client_id.into(), at_ms, reported: None };
    store.record_last_seen(&[seen("c1", 50), seen("nobody", 70)]).unwrap();
    assert_eq!(store.device("c1").unwrap().unwrap().last_seen_ms, 100);
    store.record_last_seen(&[seen("c1", 150)]).unwrap();
    assert_eq!(store.device("c1").unwrap().unwrap().last_seen_ms, 150);
    let reported = ReportedDevice { platform: "ios".into(), app_version: "3.0".into(), model: "new".into() };
    store.record_last_seen(&[SeenDevice { reported: Some(reported), ..seen("c1", 120) }]).unwrap();
    let device = store.device("c1").unwrap().unwrap();
    assert_eq!((device.app_version.as_str(), device.last_seen_ms), ("3.0", 150), "an update after an upgrade");
    assert_eq!(store.device("nobody").unwrap(), None);
}

pub(super) fn commands_move_from_pending_to_delivered_to_acknowledged(open: Open) {
    let fixture = open(None);
    let store = &*fixture.store;
    assert_eq!(
        store.add_command(&command("c1", "x", DeviceCommandKind::Resync), CommandEffect::default()).unwrap(),
        None
    );
    store.put_device(&device("c1", "ann", "ios", 1)).unwrap();
    let lock = CommandEffect { set_state: Some(DeviceState::Locked), revoke_tokens: false };
    let first = store.add_command(&command("c1", "a", DeviceCommandKind::Lock), lock).unwrap().unwrap();
    let revoke = CommandEffect { set_state: None, revoke_tokens: true };
    let second = store.add_command(&command("c1", "b", DeviceCommandKind::Wipe), revoke).unwrap().unwrap();
    assert_eq!((first.seq, second.seq), (1, 2));
    let stored = store.device("c1").unwrap().unwrap();
    assert_eq!((stored.state, stored.token_generation), (DeviceState::Locked, 1), "effects in the same commit");

    let unlock = CommandEffect { set_state: Some(DeviceState::Active), revoke_tokens: false };
    store.add_command(&command("c1", "c", DeviceCommandKind::Unlock), unlock).unwrap().unwrap();
    let open: Vec<_> = store.unacknowledged_commands("c1").unwrap().into_iter().map(|c| c.command_id).collect();
    assert_eq!(open, ["a", "b"], "unlock is never sent");

    store.mark_commands_delivered("c1", &["a".to_owned()], 20).unwrap();
    let acked = store.acknowledge_command("c1", "a", 30).unwrap().unwrap();
    assert_eq!(
        (acked.state, acked.delivered_ms, acked.acknowledged_ms),
        (CommandState::Acknowledged, Some(20), Some(30))
    );
    let again = store.acknowledge_command("c1", "a", 40).unwrap().unwrap();
    assert_eq!(again.acknowledged_ms, Some(30), "acknowledging again changes nothing");
    // Delivery after the ack does not move it back.
    store.mark_commands_delivered("c1", &["a".to_owned()], 50).unwrap();
    let states: Vec<_> = store.commands("c1").unwrap().into_iter().map(|c| (c.command_id, c.state)).collect();
    assert_eq!(
        states,
        [
            ("a".to_owned(), CommandState::Acknowledged),
            ("b".to_owned(), CommandState::Pending),
            ("c".to_owned(), CommandState::Pending)
        ]
    );
    assert_eq!(store.acknowledge_command("c1", "zzz", 1).unwrap(), None);
    assert_eq!(store.acknowledge_command("c2", "a", 1).unwrap(), None, "another device's command");
}

pub(super) fn old_acknowledged_commands_are_dropped_past_the_bound_but_unacknowledged_ones_stay(open: Open) {
    let fixture = open(None);
    let store = &*fixture.store;
    store.put_device(&device("c1", "ann", "ios", 1)).unwrap();
    let keep = store.add_command(&command("c1", "first", DeviceCommandKind::Resync), CommandEffect::default()).unwrap();
    assert!(keep.is_some());
    for n in 0..MAX_COMMANDS_PER_DEVICE + 5 {
        let id = format!("r{n}");
        store.add_command(&command("c1", &id, DeviceCommandKind::Resync), CommandEffect::default()).unwrap();
        store.acknowledge_command("c1", &id, 1).unwrap();
    }
    let commands = store.commands("c1").unwrap();
    assert_eq!(commands.len(), MAX_COMMANDS_PER_DEVICE);
    assert_eq!(commands[0].command_id, "first", "the unacknowledged command is kept");
    assert_eq!(commands.last().unwrap().command_id, format!("r{}", MAX_COMMANDS_PER_DEVICE + 4));
}

pub(super) fn device_cursors_are_listed_by_partition(open: Open) {
    let fixture = open(None);
    let store = &*fixture.store;
    let (a, b) =
        (crate::storage::PartitionName::new("Task", "ann"), crate::storage::PartitionName::new("Account", "*"));
    store
        .save_cursors(&[("c1".into(), a.clone(), 3), ("c1".into(), b.clone(), 7), ("c2".into(), a.clone(), 1)])
        .expect("save");
    assert_eq!(store.device_cursors("c1").expect("cursors"), vec![(b, 7), (a, 3)]);
    assert!(store.device_cursors("c3").expect("cursors").is_empty());
}
