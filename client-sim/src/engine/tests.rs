use std::{collections::BTreeMap, time::Duration};

use syncline_proto::{
    checksum::Checksum,
    v1::{Command, CommandAck, CommandKind, Logout, Record, SourceInfo, Value},
};

use super::*;
use crate::config::{DEFAULT_LIVE_ACK_INTERVAL, SubscriptionConfig};
use crate::state::StopCommand;
use syncline_proto::v1::{SyncState, SyncStatus};

const SOURCE: &str = "Account";
const USER: &str = "u1";

fn config(window: u32) -> DeviceConfig {
    DeviceConfig::new("ws://127.0.0.1:1/v1/sync", "alice", "secret")
        .subscribe(SubscriptionConfig::new(SOURCE).with_page_size(2).with_window(window))
        .with_notifications(64)
}

fn server(msg: server_frame::Msg) -> ServerFrame {
    ServerFrame { msg: Some(msg) }
}

fn welcome() -> ServerFrame {
    server(server_frame::Msg::Welcome(Welcome {
        client_id: "c1".into(),
        session_token: "t1".into(),
        user_id: USER.into(),
        sources: vec![SourceInfo { name: SOURCE.into(), partitioning: "user".into(), keys: vec![USER.into()] }],
        ..Welcome::default()
    }))
}

fn record(id: &str, version: u64) -> Record {
    Record { id: id.to_owned(), fields: BTreeMap::from([("n".to_owned(), Value::int(1))]), version }
}

fn checksum_of(records: &[Record]) -> u64 {
    let mut checksum = Checksum::default();
    for record in records {
        checksum.add(&record.id, record.version);
    }
    checksum.0
}

fn changes(page: u64, from: u64, to: u64, upserts: &[Record]) -> Changes {
    Changes { source: SOURCE.into(), key: USER.into(), from, to, upserts: upserts.to_vec(), page, ..Changes::default() }
}

fn snapshot(page: u64, to: u64, upserts: &[Record], reset: bool, done: bool) -> ServerFrame {
    server(server_frame::Msg::Changes(Changes {
        snapshot: true,
        reset,
        snapshot_done: done,
        ..changes(page, 0, to, upserts)
    }))
}

fn log(page: u64, from: u64, to: u64, upserts: &[Record]) -> ServerFrame {
    server(server_frame::Msg::Changes(changes(page, from, to, upserts)))
}

fn caught_up(cursor: u64, records: &[Record]) -> ServerFrame {
    server(server_frame::Msg::SyncState(SyncState {
        source: SOURCE.into(),
        key: USER.into(),
        status: SyncStatus::CaughtUp as i32,
        cursor,
        total: records.len() as u64,
        checksum: checksum_of(records),
        error: None,
    }))
}

fn ack_frame(cursor: u64, page: u64) -> ClientFrame {
    ack(&PartitionId::new(SOURCE, USER), cursor, page)
}

fn subscribe_frame(cursor: u64, window: u32) -> ClientFrame {
    frame(client_frame::Msg::Subscribe(Subscribe {
        source: SOURCE.into(),
        key: USER.into(),
        cursor,
        page_size: 2,
        window,
    }))
}

fn statuses(reaction: &Reaction) -> Vec<(SyncNotificationStatus, u64, u64, u64)> {
    reaction
        .notifications
        .iter()
        .filter_map(|notification| match notification {
            Notification::Sync(sync) => Some((sync.status, sync.total, sync.processed, sync.cumulative)),
            Notification::Changed(_) | Notification::Mutation(_) | Notification::Bulk(_) => None,
        })
        .collect()
}

/// An engine that has said Hello and been welcomed; returns it and the welcome's frames.
fn welcomed(window: u32) -> (SyncEngine, Reaction) {
    let mut engine = SyncEngine::new(&config(window));
    engine.hello();
    let reaction = engine.on_frame(welcome(), Instant::now());
    (engine, reaction)
}

/// An engine caught up at cursor 3 holding a@1, b@2, c@3.
fn caught_up_engine() -> SyncEngine {
    let (mut engine, _) = welcomed(2);
    let now = Instant::now();
    let records = [record("a", 1), record("b", 2), record("c", 3)];
    engine.on_frame(snapshot(1, 3, &records, true, true), now);
    let reaction = engine.on_frame(caught_up(3, &records), now);
    assert!(engine.partitions[&PartitionId::new(SOURCE, USER)].phase == Phase::CaughtUp, "{reaction:?}");
    engine
}

fn credentials(hello_frame: &ClientFrame) -> (hello::Credentials, String) {
    let Some(client_frame::Msg::Hello(hello)) = &hello_frame.msg else {
        panic!("not a hello: {hello_frame:?}");
    };
    assert_eq!(hello.protocol_version, PROTOCOL_VERSION);
    (hello.credentials.clone().unwrap(), hello.client_id.clone())
}

#[test]
fn hello_logs_in_with_the_password_then_uses_the_session_token() {
    let mut engine = SyncEngine::new(&config(2));
    let (first, client_id) = credentials(&engine.hello());
    assert_eq!(first, hello::Credentials::Login(Login { username: "alice".into(), password: "secret".into() }));
    assert_eq!(client_id, "");
    engine.on_frame(welcome(), Instant::now());
    let (second, client_id) = credentials(&engine.hello());
    assert_eq!(second, hello::Credentials::SessionToken("t1".into()));
    assert_eq!(client_id, "c1");
}

#[test]
fn a_backend_token_replaces_the_password_and_comes_back_when_the_session_token_is_refused() {
    let mut engine = SyncEngine::new(&config(2).with_backend_token("jwt"));
    let (first, _) = credentials(&engine.hello());
    assert_eq!(first, hello::Credentials::BackendToken("jwt".into()));
    engine.on_frame(welcome(), Instant::now());
    let (second, _) = credentials(&engine.hello());
    assert_eq!(second, hello::Credentials::SessionToken("t1".into()));
    let closed = Disconnect::Closed { code: close_code::UNAUTHENTICATED, reason: "token expired".into() };
    assert_eq!(engine.on_disconnect(&closed), AfterDisconnect::Reconnect(ReconnectDelay::Immediately));
    let (third, _) = credentials(&engine.hello());
    assert_eq!(third, hello::Credentials::BackendToken("jwt".into()));
    let closed = Disconnect::Closed { code: close_code::UNAUTHENTICATED, reason: "it has expired".into() };
    assert_eq!(
        engine.on_disconnect(&closed),
        AfterDisconnect::Stop(StopReason::Unauthenticated { reason: "it has expired".into() })
    );
}

#[test]
fn welcome_subscribes_each_partition_at_its_natural_key() {
    let mut engine = SyncEngine::new(
        &config(2)
            .subscribe(SubscriptionConfig::new("Product"))
            .subscribe(SubscriptionConfig::new("Custom").with_key("k9")),
    );
    engine.hello();
    let mut frame = welcome();
    if let Some(server_frame::Msg::Welcome(welcome)) = &mut frame.msg {
        welcome.sources.push(SourceInfo { name: "Product".into(), partitioning: "app".into(), keys: vec![] });
    }
    let reaction = engine.on_frame(frame, Instant::now());
    let keys: Vec<(String, String, u64)> = reaction
        .frames
        .iter()
        .map(|frame| match &frame.msg {
            Some(client_frame::Msg::Subscribe(subscribe)) => {
                (subscribe.source.clone(), subscribe.key.clone(), subscribe.cursor)
            }
            other => panic!("expected subscribes only, got {other:?}"),
        })
        .collect();
    assert_eq!(
        keys,
        [
            (SOURCE.to_owned(), USER.to_owned(), 0),
            ("Product".to_owned(), "*".to_owned(), 0),
            ("Custom".to_owned(), "k9".to_owned(), 0)
        ]
    );
}

#[test]
fn catch_up_pages_are_acked_and_reported_then_ok_and_complete() {
    let (mut engine, reaction) = welcomed(2);
    assert_eq!(reaction.frames, [subscribe_frame(0, 2)]);
    let now = Instant::now();
    let first = [record("a", 1), record("b", 2)];
    let second = [record("c", 3)];
    let log_records = [record("d", 4)];

    let mut page = snapshot(1, 3, &first, true, false);
    if let Some(server_frame::Msg::Changes(changes)) = &mut page.msg {
        changes.total = 3;
    }
    let reaction = engine.on_frame(page, now);
    assert_eq!(reaction.frames, [ack_frame(0, 1)], "during a snapshot the cursor is still 0");
    assert_eq!(statuses(&reaction), [(SyncNotificationStatus::InProgress, 3, 2, 2)]);

    let reaction = engine.on_frame(snapshot(2, 3, &second, false, true), now);
    assert_eq!(reaction.frames, [ack_frame(3, 2)]);

    let reaction = engine.on_frame(log(3, 4, 4, &log_records), now);
    assert_eq!(reaction.frames, [ack_frame(4, 3)]);
    assert_eq!(statuses(&reaction)[0].3, 4, "cumulative counts every change of the run");

    let all: Vec<Record> = first.iter().chain(&second).chain(&log_records).cloned().collect();
    let reaction = engine.on_frame(caught_up(4, &all), now);
    assert!(reaction.frames.is_empty());
    assert_eq!(
        statuses(&reaction),
        [(SyncNotificationStatus::Ok, 4, 0, 4), (SyncNotificationStatus::Complete, 4, 0, 4)]
    );
    assert!(engine.reached_complete());
    let stats = engine.stats();
    assert_eq!((stats.pages, stats.acks_sent, stats.checksum_mismatches), (3, 3, 0));
}

#[test]
fn live_pushes_are_applied_notified_and_acked_debounced() {
    let mut engine = caught_up_engine();
    let start = Instant::now();
    let reaction = engine.on_frame(log(0, 4, 4, &[record("d", 4)]), start);
    assert!(reaction.frames.is_empty(), "live acks wait for the debounce interval");
    assert!(matches!(
        &reaction.notifications[..],
        [Notification::Changed(ChangedNotification { upserts, deletes, .. })] if upserts[0].id == "d" && deletes.is_empty()
    ));
    let later = start + Duration::from_millis(50);
    assert!(engine.on_frame(log(0, 5, 5, &[record("e", 5)]), later).frames.is_empty());

    let deadline = engine.live_ack_deadline().unwrap();
    assert_eq!(deadline, start + DEFAULT_LIVE_ACK_INTERVAL);
    assert!(engine.due_live_acks(deadline - Duration::from_millis(1)).is_empty());
    assert_eq!(engine.due_live_acks(deadline), [ack_frame(5, 0)]);
    assert_eq!(engine.live_ack_deadline(), None);
    assert_eq!(engine.stats().live_pushes, 2);
}

#[test]
fn many_live_changes_are_acked_at_once() {
    let mut config = config(2);
    config.live_ack.max_changes = 2;
    let mut engine = SyncEngine::new(&config);
    engine.hello();
    let now = Instant::now();
    engine.on_frame(welcome(), now);
    engine.on_frame(snapshot(1, 0, &[], true, true), now);
    engine.on_frame(caught_up(0, &[]), now);
    assert!(engine.on_frame(log(0, 1, 1, &[record("a", 1)]), now).frames.is_empty());
    assert_eq!(engine.on_frame(log(0, 2, 2, &[record("b", 2)]), now).frames, [ack_frame(2, 0)]);
}

#[test]
fn duplicates_are_counted_and_skipped() {
    let mut engine = caught_up_engine();
    let reaction = engine.on_frame(log(0, 3, 3, &[record("c", 99)]), Instant::now());
    assert!(reaction.frames.is_empty() && reaction.notifications.is_empty());
    assert_eq!(engine.stats().duplicates, 1);
    assert_eq!(engine.view(&PartitionId::new(SOURCE, USER)).unwrap().records["c"].version, 3);
}

#[test]
fn a_gap_resubscribes_from_the_cursor_once_until_the_new_subscription_starts() {
    let mut engine = caught_up_engine();
    let now = Instant::now();
    let reaction = engine.on_frame(log(0, 5, 5, &[record("e", 5)]), now);
    assert_eq!(reaction.frames, [subscribe_frame(3, 2)]);
    // More of the old stream in flight: counted, not resubscribed again.
    let reaction = engine.on_frame(log(0, 6, 6, &[record("f", 6)]), now);
    assert!(reaction.frames.is_empty());
    // A stale SyncState of the old subscription is skipped too.
    assert!(engine.on_frame(caught_up(6, &[]), now).frames.is_empty());
    let stats = engine.stats();
    assert_eq!((stats.gaps, stats.resubscribes), (3, 1));

    // The new subscription starts at page 1 and catches up.
    let reaction = engine.on_frame(log(1, 4, 6, &[record("d", 4), record("e", 5), record("f", 6)]), now);
    assert_eq!(reaction.frames, [ack_frame(6, 1)]);
    let all = [record("a", 1), record("b", 2), record("c", 3), record("d", 4), record("e", 5), record("f", 6)];
    let reaction = engine.on_frame(caught_up(6, &all), now);
    assert_eq!(statuses(&reaction)[0].0, SyncNotificationStatus::Ok);
    assert_eq!(engine.stats().checksum_mismatches, 0);
}

#[test]
fn a_checksum_mismatch_drops_the_partition_and_resyncs_from_zero() {
    let mut engine = caught_up_engine();
    let now = Instant::now();
    let reaction = engine.on_frame(caught_up(3, &[record("a", 1)]), now);
    assert_eq!(reaction.frames, [subscribe_frame(0, 2)]);
    let view = engine.view(&PartitionId::new(SOURCE, USER)).unwrap();
    assert_eq!((view.cursor, view.total), (0, 0));
    let stats = engine.stats();
    assert_eq!((stats.checksum_mismatches, stats.resyncs), (1, 1));

    // The same on a live push carrying a wrong checksum.
    let mut engine = caught_up_engine();
    let mut push = changes(0, 4, 4, &[record("d", 4)]);
    push.total = 4;
    push.checksum = 12345;
    let reaction = engine.on_frame(server(server_frame::Msg::Changes(push)), now);
    assert_eq!(reaction.frames, [subscribe_frame(0, 2)]);
    assert_eq!(engine.stats().checksum_mismatches, 1);
}

#[test]
fn reconnects_resume_from_the_cursor() {
    let mut engine = caught_up_engine();
    engine.on_frame(log(0, 4, 4, &[record("d", 4)]), Instant::now());
    assert_eq!(engine.on_disconnect(&Disconnect::Cut), AfterDisconnect::Reconnect(ReconnectDelay::Backoff));
    let mut state = DeviceState::default();
    engine.publish(&mut state);
    assert!(!state.partitions[&PartitionId::new(SOURCE, USER)].caught_up, "not caught up while disconnected");
    engine.hello();
    let reaction = engine.on_frame(welcome(), Instant::now());
    assert_eq!(reaction.frames, [subscribe_frame(4, 2)]);
}

#[test]
fn a_refused_token_falls_back_to_the_password_once() {
    let mut engine = caught_up_engine();
    engine.hello();
    let closed = Disconnect::Closed { code: close_code::UNAUTHENTICATED, reason: "token expired".into() };
    assert_eq!(engine.on_disconnect(&closed), AfterDisconnect::Reconnect(ReconnectDelay::Immediately));
    let (credentials, _) = credentials(&engine.hello());
    assert!(matches!(credentials, hello::Credentials::Login(_)));
    let closed = Disconnect::Closed { code: close_code::UNAUTHENTICATED, reason: "bad password".into() };
    assert_eq!(
        engine.on_disconnect(&closed),
        AfterDisconnect::Stop(StopReason::Unauthenticated { reason: "bad password".into() })
    );
}

#[test]
fn a_fatal_error_explains_a_connection_that_drops_without_close_frame() {
    let mut engine = SyncEngine::new(&config(2));
    engine.hello();
    let error = ErrorFrame {
        code: ErrorCode::Unauthenticated as i32,
        message: "wrong password".into(),
        fatal: true,
        ..ErrorFrame::default()
    };
    let reaction = engine.on_frame(server(server_frame::Msg::Error(error)), Instant::now());
    assert!(matches!(
        &reaction.notifications[..],
        [Notification::Sync(SyncNotification {
            status: SyncNotificationStatus::Error,
            error: Some((ErrorCode::Unauthenticated, _)),
            ..
        })]
    ));
    assert_eq!(
        engine.on_disconnect(&Disconnect::Lost),
        AfterDisconnect::Stop(StopReason::Unauthenticated { reason: "wrong password".into() })
    );
}

/// Issue 13: an app too old or too new for the server stops until it is updated, whether the
/// close frame (4426) arrives or only the fatal UNSUPPORTED_VERSION error does.
#[test]
fn an_unsupported_protocol_version_stops_the_device() {
    let mut engine = SyncEngine::new(&config(2));
    engine.hello();
    let error = ErrorFrame {
        code: ErrorCode::UnsupportedVersion as i32,
        message: "protocol version 2 is not supported; this server speaks 1".into(),
        fatal: true,
        ..ErrorFrame::default()
    };
    engine.on_frame(server(server_frame::Msg::Error(error)), Instant::now());
    let stopped = AfterDisconnect::Stop(StopReason::UpgradeRequired {
        reason: "protocol version 2 is not supported; this server speaks 1".into(),
    });
    assert_eq!(engine.on_disconnect(&Disconnect::Lost), stopped);
    let closed = Disconnect::Closed { code: close_code::UPGRADE_REQUIRED, reason: String::new() };
    assert_eq!(engine.on_disconnect(&closed), stopped, "the empty close reason falls back to the error's");
}

#[test]
fn close_codes_decide_between_stopping_and_reconnecting() {
    let mut engine = SyncEngine::new(&config(2));
    engine.hello();
    let closed = |code: u16| Disconnect::Closed { code, reason: "r".into() };
    assert_eq!(
        engine.on_disconnect(&closed(4003)),
        AfterDisconnect::Stop(StopReason::Forbidden { reason: "r".into() })
    );
    assert_eq!(
        engine.on_disconnect(&closed(1000)),
        AfterDisconnect::Stop(StopReason::ClosedByServer { reason: "r".into() })
    );
    assert_eq!(
        engine.on_disconnect(&closed(4426)),
        AfterDisconnect::Stop(StopReason::UpgradeRequired { reason: "r".into() })
    );
    assert_eq!(engine.on_disconnect(&closed(1012)), AfterDisconnect::Reconnect(ReconnectDelay::Jitter));
    for code in [1009, 4400, 4408, 4429, 4500] {
        assert_eq!(engine.on_disconnect(&closed(code)), AfterDisconnect::Reconnect(ReconnectDelay::Backoff));
    }
    assert_eq!(engine.on_disconnect(&Disconnect::Lost), AfterDisconnect::Reconnect(ReconnectDelay::Backoff));
}

#[test]
fn frames_about_other_partitions_are_recorded_and_ignored() {
    let mut engine = caught_up_engine();
    let mut foreign = changes(0, 1, 1, &[record("x", 1)]);
    foreign.key = "u2".into();
    let reaction = engine.on_frame(server(server_frame::Msg::Changes(foreign)), Instant::now());
    assert!(reaction.frames.is_empty() && reaction.notifications.is_empty());
    let stats = engine.stats();
    assert_eq!(stats.unexpected_frames, 1);
    assert!(stats.partitions_seen.contains(&PartitionId::new(SOURCE, "u2")));
    assert!(engine.view(&PartitionId::new(SOURCE, "u2")).is_none());
}

#[test]
fn a_failed_subscription_is_reported_and_still_completes_the_run() {
    let mut engine = SyncEngine::new(&config(2).subscribe(SubscriptionConfig::new("Secret").with_key("someone-else")));
    engine.hello();
    let now = Instant::now();
    engine.on_frame(welcome(), now);
    let error = ErrorFrame {
        code: ErrorCode::Forbidden as i32,
        message: "not yours".into(),
        source: "Secret".into(),
        key: "someone-else".into(),
        ..ErrorFrame::default()
    };
    let reaction = engine.on_frame(server(server_frame::Msg::Error(error)), now);
    assert_eq!(statuses(&reaction), [(SyncNotificationStatus::Error, 0, 0, 0)]);
    engine.on_frame(snapshot(1, 0, &[], true, true), now);
    let reaction = engine.on_frame(caught_up(0, &[]), now);
    assert_eq!(
        statuses(&reaction),
        [(SyncNotificationStatus::Ok, 0, 0, 0), (SyncNotificationStatus::Complete, 0, 0, 0)]
    );
    let mut state = DeviceState::default();
    engine.publish(&mut state);
    assert_eq!(state.partition("Secret", "someone-else").unwrap().error.as_ref().unwrap().0, ErrorCode::Forbidden);
}

#[test]
fn pull_mode_asks_for_each_page() {
    let (mut engine, reaction) = welcomed(0);
    let pull_frame = pull(&PartitionId::new(SOURCE, USER));
    assert_eq!(reaction.frames, [subscribe_frame(0, 0), pull_frame.clone()]);
    let mut page = snapshot(1, 2, &[record("a", 1)], true, false);
    if let Some(server_frame::Msg::Changes(changes)) = &mut page.msg {
        changes.remaining = 1;
    }
    let reaction = engine.on_frame(page, Instant::now());
    assert_eq!(reaction.frames, [ack_frame(0, 1), pull_frame]);
    let reaction = engine.on_frame(snapshot(2, 2, &[record("b", 2)], false, true), Instant::now());
    assert_eq!(reaction.frames, [ack_frame(2, 2)], "no pull after the last page");
}

fn command(kind: CommandKind, command_id: &str) -> ServerFrame {
    server(server_frame::Msg::Command(Command {
        kind: kind as i32,
        reason: "operator".into(),
        command_id: command_id.into(),
    }))
}

fn command_ack(command_id: &str) -> ClientFrame {
    frame(client_frame::Msg::CommandAck(CommandAck { command_id: command_id.into() }))
}

#[test]
fn commands_resync_or_stop_and_are_acknowledged() {
    let mut engine = caught_up_engine();
    let reaction = engine.on_frame(command(CommandKind::Resync, "r1"), Instant::now());
    assert_eq!(reaction.frames, [subscribe_frame(0, 2), command_ack("r1")]);
    assert!(reaction.stop.is_none());
    assert_eq!(engine.synced_view(&PartitionId::new(SOURCE, USER)).unwrap().total, 0, "dropped");

    let reaction = engine.on_frame(command(CommandKind::Logout, "l1"), Instant::now());
    assert_eq!(reaction.frames, [command_ack("l1"), frame(client_frame::Msg::Logout(Logout {}))]);
    assert!(matches!(reaction.stop, Some(StopReason::Command { kind: StopCommand::Logout, .. })));
    let (credentials, _) = credentials(&engine.hello());
    assert!(matches!(credentials, hello::Credentials::Login(_)), "logout forgets the token");
}

#[test]
fn a_command_sent_again_is_acknowledged_but_not_acted_on_twice() {
    let mut engine = caught_up_engine();
    let reaction = engine.on_frame(command(CommandKind::Resync, "r1"), Instant::now());
    assert_eq!(reaction.frames.len(), 2);
    let resyncs = engine.stats().resyncs;
    let reaction = engine.on_frame(command(CommandKind::Resync, "r1"), Instant::now());
    assert_eq!(reaction.frames, [command_ack("r1")]);
    assert_eq!(engine.stats().resyncs, resyncs);
}

#[test]
fn commands_before_a_session_are_acted_on_and_acknowledged_after_the_next_welcome() {
    let mut engine = SyncEngine::new(&config(2));
    engine.hello();
    // A locked device's refused Hello: the lock and a wipe come before the Error.
    let reaction = engine.on_frame(command(CommandKind::Lock, "k1"), Instant::now());
    assert!(reaction.frames.is_empty() && reaction.stop.is_none(), "no session: nothing sent, the server closes");
    let reaction = engine.on_frame(command(CommandKind::Wipe, "w1"), Instant::now());
    assert!(reaction.frames.is_empty() && reaction.stop.is_none());
    engine.log_in_with_password("alice", "secret");
    let (credentials, _) = credentials(&engine.hello());
    assert!(matches!(credentials, hello::Credentials::Login(_)));
    let reaction = engine.on_frame(welcome(), Instant::now());
    assert_eq!(reaction.frames[..2], [command_ack("k1"), command_ack("w1")], "acks before anything else");
    assert_eq!(reaction.frames[2..], [subscribe_frame(0, 2)]);
    engine.hello();
    let reaction = engine.on_frame(welcome(), Instant::now());
    assert_eq!(reaction.frames, [subscribe_frame(0, 2)], "acks go once");
}

#[test]
fn lock_stops_the_session_and_forgets_the_token_but_keeps_the_data() {
    let mut engine = caught_up_engine();
    let reaction = engine.on_frame(command(CommandKind::Lock, "k1"), Instant::now());
    assert_eq!(reaction.frames, [command_ack("k1")]);
    assert!(matches!(reaction.stop, Some(StopReason::Command { kind: StopCommand::Lock, .. })));
    assert!(engine.synced_view(&PartitionId::new(SOURCE, USER)).unwrap().total > 0);
    let (credentials, _) = credentials(&engine.hello());
    assert!(matches!(credentials, hello::Credentials::Login(_)));
}

#[test]
fn notifications_off_produce_none() {
    let mut config = config(2);
    config.notification_capacity = None;
    let mut engine = SyncEngine::new(&config);
    engine.hello();
    let now = Instant::now();
    engine.on_frame(welcome(), now);
    let reaction = engine.on_frame(snapshot(1, 1, &[record("a", 1)], true, true), now);
    assert_eq!(reaction.frames, [ack_frame(1, 1)]);
    assert!(reaction.notifications.is_empty());
}
