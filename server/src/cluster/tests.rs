use syncline_proto::v1::{MutationResult, server_frame};

use super::*;

fn result_frame() -> ServerFrame {
    let result = MutationResult { mutation_id: "m1".into(), ok: true, ..MutationResult::default() };
    ServerFrame { msg: Some(server_frame::Msg::MutationResult(result)) }
}

#[test]
fn every_message_round_trips_with_its_origin() {
    let messages = [
        ControlMessage::CloseUser { user_id: "ann".into(), class: ErrorClass::Forbidden, message: "disabled".into() },
        ControlMessage::CloseUser { user_id: "bob".into(), class: ErrorClass::Unauthenticated, message: String::new() },
        ControlMessage::ToDevice { client_id: "c1".into(), frame: result_frame() },
        ControlMessage::DeliverCommands { client_id: "c2".into() },
        ControlMessage::SchemaChanged { source: "Note".into(), schema_hash: vec![7; 32] },
    ];
    for message in messages {
        let (origin, decoded) = ControlMessage::decode(&message.encode("node-a")).unwrap();
        assert_eq!((origin.as_str(), &decoded), ("node-a", &message));
    }
}

#[test]
fn malformed_messages_are_typed_errors() {
    assert!(matches!(ControlMessage::decode(b"\xff\xff\xff"), Err(ControlMessageError::Envelope(_))));
    let unknown_kind = ControlMessage::DeliverCommands { client_id: "c".into() }.encode("n");
    // Field 2 (kind) set to 9 after the original: the last value of a field wins.
    let mut bad = unknown_kind.clone();
    bad.extend_from_slice(&[0x10, 9]);
    assert!(matches!(ControlMessage::decode(&bad), Err(ControlMessageError::UnknownKind(9))));
    let mut bad_code =
        ControlMessage::CloseUser { user_id: "u".into(), class: ErrorClass::Forbidden, message: String::new() }
            .encode("n");
    bad_code.extend_from_slice(&[0x20, 0x7f]);
    assert!(matches!(ControlMessage::decode(&bad_code), Err(ControlMessageError::UnknownErrorCode(127))));
    let mut bad_frame = ControlMessage::ToDevice { client_id: "c".into(), frame: result_frame() }.encode("n");
    bad_frame.extend_from_slice(&[0x32, 1, 0xff]);
    assert!(matches!(ControlMessage::decode(&bad_frame), Err(ControlMessageError::Frame(_))));
}

mod over_redis {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use syncline_proto::v1::{ErrorCode, server_frame};
    use syncline_push::Outbox;
    use syncline_push::outbox::Outgoing;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::result_frame;
    use crate::cluster::{
        ClusterSessions, ControlMessage, ControlPublisher, ControlTargets, DeviceRelay, RedisLink, follow,
    };
    use crate::devices::{CommitTimes, DeviceManagement};
    use crate::error::ErrorClass;
    use crate::gateway::{DeviceConnections, UserSessions};
    use crate::storage::redis::RedisEndpoint;
    use crate::storage::{DeviceCommandKind, Store, StoredDevice};
    use crate::test_util::fixtures::temp_store;
    use crate::test_util::redis_server::RedisServer;

    const CHANNEL: &str = "syncline:control";
    const DEADLINE: Duration = Duration::from_secs(10);

    /// Waits for the next frame queued to a test outbox.
    async fn next_frame(receiver: &mut mpsc::Receiver<Outgoing>) -> Option<server_frame::Msg> {
        loop {
            match tokio::time::timeout(DEADLINE, receiver.recv()).await.expect("a frame in time")? {
                Outgoing::Frame(frame) => return frame.frame().msg.clone(),
                _ => continue,
            }
        }
    }

    /// Node B: its connections (device c1 of ann attached) and device management, following
    /// the control channel.
    fn node_b(
        url: &str,
        store: &Arc<dyn Store>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> (Arc<DeviceConnections>, mpsc::Receiver<Outgoing>, Outbox) {
        let connections = Arc::new(DeviceConnections::default());
        let (outbox, receiver) = Outbox::for_test(64);
        connections.attach("c1", "ann", &outbox);
        let devices = Arc::new(DeviceManagement::new(
            store.clone(),
            Arc::new(DeviceRelay::local(connections.clone())),
            Arc::new(CommitTimes::default()),
        ));
        let targets = ControlTargets { connections: connections.clone(), devices, schemas: None };
        follow(url, CHANNEL, "node-b", targets, tracker, shutdown.clone()).expect("follows");
        (connections, receiver, outbox)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn another_nodes_outcomes_commands_and_closes_reach_this_nodes_devices() {
        let redis = RedisServer::start();
        let (_dir, store) = temp_store();
        let device = StoredDevice { client_id: "c1".into(), user_id: "ann".into(), ..StoredDevice::default() };
        store.put_device(&device).unwrap();
        let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
        let (_b, mut received, outbox) = node_b(&redis.url(), &store, &tracker, &shutdown);
        let a = Arc::new(ControlPublisher::connect(&redis.url(), CHANNEL, "node-a").await.unwrap());

        // Node B follows once its subscription is up: until then a publish reaches nobody.
        let started = Instant::now();
        let outcome = ControlMessage::ToDevice { client_id: "c1".into(), frame: result_frame() };
        loop {
            a.publish(&outcome).await;
            if let Ok(Some(Outgoing::Frame(frame))) =
                tokio::time::timeout(Duration::from_millis(100), received.recv()).await
            {
                assert!(matches!(frame.frame().msg.clone(), Some(server_frame::Msg::MutationResult(_))));
                break;
            }
            assert!(started.elapsed() < DEADLINE, "node b never followed the control channel");
        }
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), received.recv()).await {}

        // A command stored on node A, where the device is not connected, is sent by node B.
        let relay_a = Arc::new(DeviceRelay::clustered(Arc::new(DeviceConnections::default()), a.clone()));
        let devices_a = DeviceManagement::new(store.clone(), relay_a.clone(), Arc::new(CommitTimes::default()));
        let command = devices_a.send("c1", DeviceCommandKind::Resync, "fresh start").await.unwrap();
        let Some(server_frame::Msg::Command(sent)) = next_frame(&mut received).await else { panic!("a command") };
        assert_eq!(sent.command_id, command.command_id);
        while store.commands("c1").unwrap()[0].state != crate::storage::CommandState::Delivered {
            assert!(started.elapsed() < DEADLINE * 2, "node b never recorded the command delivered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // A node's own messages are skipped: only node A's close arrives.
        let own = ControlPublisher::connect(&redis.url(), CHANNEL, "node-b").await.unwrap();
        own.publish(&ControlMessage::ToDevice { client_id: "c1".into(), frame: result_frame() }).await;
        let closed = relay_a.close_user("ann", ErrorClass::Forbidden, "this user was disabled").await;
        assert_eq!(closed, 0, "nobody is connected on node a");
        let Some(server_frame::Msg::Error(error)) = next_frame(&mut received).await else { panic!("an error") };
        assert_eq!(error.code, ErrorCode::Forbidden as i32);
        // The close follows the error frame: wait for it.
        while !outbox.is_closed() {
            assert!(started.elapsed() < DEADLINE * 2, "node b never closed the connection");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.cancel();
        tracker.close();
        tracker.wait().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_users_sessions_on_every_live_node_count_against_the_cap() {
        let redis = RedisServer::start();
        let (tracker, shutdown_a, shutdown_b) =
            (TaskTracker::new(), CancellationToken::new(), CancellationToken::new());
        let link = || async { RedisLink::connect(&RedisEndpoint::Single(redis.url())).await.unwrap() };
        let a = ClusterSessions::start(link().await, "syncline", "node-a", &tracker, shutdown_a.clone()).await;
        let b = ClusterSessions::start(link().await, "syncline", "node-b", &tracker, shutdown_b.clone()).await;
        let (sessions_a, sessions_b) = (UserSessions::clustered(a.clone()), UserSessions::clustered(b.clone()));
        // Each node knows the other is alive after a beat.
        let started = Instant::now();
        let first = sessions_a.acquire("ann", 2).await.expect("room");
        while b.elsewhere("ann").await != 1 {
            assert!(started.elapsed() < DEADLINE, "node b never saw node a's session");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let second = sessions_b.acquire("ann", 2).await.expect("one here, one there");
        while a.elsewhere("ann").await != 1 {
            assert!(started.elapsed() < DEADLINE, "node a never saw node b's session");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(sessions_a.acquire("ann", 2).await.err(), Some(2), "the cap counts both nodes");
        assert!(sessions_a.acquire("bob", 2).await.is_ok(), "other users are apart");
        drop(second);
        while a.elsewhere("ann").await != 0 {
            assert!(started.elapsed() < DEADLINE, "node b's closed session still counts");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let third = sessions_b.acquire("ann", 2).await.expect("room again");
        // A node that stops takes its sessions with it.
        shutdown_b.cancel();
        while a.elsewhere("ann").await != 0 {
            assert!(started.elapsed() < DEADLINE, "a stopped node's sessions still count");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop((first, third));
        shutdown_a.cancel();
        tracker.close();
        tracker.wait().await;
    }
}
