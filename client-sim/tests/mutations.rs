//! Drives a `Device`'s writes over a real socket with frames scripted by the test (no server
//! implements mutations on this branch yet): what the task sends when, and what it keeps in
//! its store across a restart.

use std::{collections::BTreeMap, time::Duration};

use syncline_client_sim::fake_server::{FakeServer, Peer, SOURCE, STEP, USER, record, snapshot};
use syncline_client_sim::{BackoffConfig, Device, DeviceConfig, MutationOutcome, Notification, SubscriptionConfig};
use syncline_proto::v1::{
    Link, Mutate, MutationAck, MutationOp, MutationResult, Record, Value, client_frame, server_frame,
};
use tokio::time::{Instant, timeout};

fn config(url: String, store: &std::path::Path) -> DeviceConfig {
    let mut config = DeviceConfig::new(url, "alice", "secret")
        .subscribe(SubscriptionConfig::new(SOURCE))
        .with_notifications(64)
        .with_mutation_store(store);
    config.backoff = BackoffConfig {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(100),
        healthy_after: Duration::from_secs(1),
    };
    config.seed = Some(1);
    config
}

fn name(text: &str) -> BTreeMap<String, Value> {
    BTreeMap::from([("name".to_owned(), Value::string(text))])
}

async fn recv_mutate(peer: &mut Peer) -> Mutate {
    match peer.recv_non_ack().await {
        client_frame::Msg::Mutate(mutate) => mutate,
        other => panic!("expected a mutate, got {other:?}"),
    }
}

async fn next_mutation(receiver: &mut tokio::sync::mpsc::Receiver<Notification>) -> (String, MutationOutcome) {
    loop {
        let notification = timeout(STEP, receiver.recv()).await.expect("a notification in time").expect("running");
        if let Notification::Mutation(mutation) = notification {
            return (mutation.mutation_id, mutation.outcome);
        }
    }
}

#[tokio::test]
async fn writes_go_out_offline_first_then_at_once_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("mutations.sqlite");
    let server = FakeServer::start().await;
    let mut device = Device::start(config(server.url(), &store));
    let mut notifications = device.take_notifications().unwrap();

    // Offline (the device has not been welcomed): queued and shown at once.
    let temp = device.create(SOURCE, Some(USER), name("Acme")).unwrap();
    assert_eq!(device.view(SOURCE, USER).unwrap().records[&temp].fields, name("Acme"));
    let deadline = Instant::now() + STEP;
    device.wait_for(deadline, |state| state.pending_mutations == 1).await.unwrap();

    let mut peer = server.accept().await;
    peer.recv_hello().await;
    peer.welcome("t1").await;
    let create = recv_mutate(&mut peer).await;
    assert_eq!(
        (create.op, create.id.as_str(), create.fields.clone()),
        (MutationOp::Create as i32, temp.as_str(), name("Acme"))
    );
    assert_eq!(peer.recv_subscribe().await, 0, "the subscribe follows the queued mutations");
    let records = [record("a", 1)];
    peer.send(snapshot(1, 1, &records, true, true)).await;
    peer.send_caught_up(1, &records).await;
    device.wait_for(deadline, |state| state.is_caught_up()).await.unwrap();

    // Connected: sent at once.
    let update = device.update(SOURCE, None, "a", name("A+"), None).unwrap();
    let sent = recv_mutate(&mut peer).await;
    assert_eq!((sent.mutation_id.as_str(), sent.id.as_str(), sent.base_version), (update.as_str(), "a", 1));

    peer.send(server_frame::Msg::MutationAck(MutationAck { mutation_id: create.mutation_id.clone(), queued: 1 })).await;
    assert_eq!(next_mutation(&mut notifications).await, (create.mutation_id.clone(), MutationOutcome::Queued));
    let created = Record { id: "A-9".into(), fields: name("Acme"), version: 2 };
    let link = Link { temp_id: temp.clone(), id: "A-9".into() };
    peer.send(server_frame::Msg::MutationResult(MutationResult {
        mutation_id: create.mutation_id.clone(),
        ok: true,
        record: Some(created.clone()),
        link: Some(link.clone()),
        error: None,
    }))
    .await;
    assert_eq!(
        next_mutation(&mut notifications).await,
        (create.mutation_id.clone(), MutationOutcome::Ok { record: Some(created), link: Some(link) })
    );
    let view = device.view(SOURCE, USER).unwrap();
    assert_eq!(view.records.keys().collect::<Vec<_>>(), ["A-9", "a"]);
    assert_eq!(view.records["a"].fields, name("A+"));
    assert_eq!(device.synced_view(SOURCE, USER).unwrap().records.keys().collect::<Vec<_>>(), ["a"]);
    let state = device.wait_for(deadline, |state| state.pending_mutations == 1).await.unwrap();
    assert_eq!((state.stats.mutations_sent, state.stats.mutations_acked, state.stats.mutations_succeeded), (2, 1, 1));
    device.stop().await;
    drop(device);

    // Restarted on the same store: the update without a result goes out again, same id.
    let device = Device::start(config(server.url(), &store));
    assert_eq!(device.mutations().len(), 1);
    let mut peer = server.accept().await;
    peer.recv_hello().await;
    peer.welcome("t1").await;
    let resent = recv_mutate(&mut peer).await;
    assert_eq!(resent, sent);
    assert_eq!(peer.recv_subscribe().await, 0);
    let state = device.wait_for(Instant::now() + STEP, |state| state.stats.mutations_resent == 1).await.unwrap();
    assert_eq!(state.pending_mutations, 1);
    device.stop().await;
}

#[test]
fn a_store_that_cannot_be_opened_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    // A directory is no SQLite file.
    let config = DeviceConfig::new("ws://127.0.0.1:1/v1/sync", "alice", "secret").with_mutation_store(dir.path());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _guard = runtime.enter();
    assert!(Device::try_start(config).is_err());
}
