//! Issue 13: a device speaking JSON text frames receives every value a backend pushed over
//! Ingest, non-finite doubles included ("NaN", "Infinity", "-Infinity" in the canonical
//! mapping, where they used to arrive as null), in snapshot pages and in live pushes.

use std::collections::BTreeMap;
use std::time::Duration;

use syncline_client_sim::wire::{ConnectOptions, Connection, FrameFormat, Incoming};
use syncline_proto::v1::value::Kind;
use syncline_proto::v1::{
    Ack, ClientFrame, Hello, Login, Record, ServerFrame, Subscribe, SyncStatus, Value, client_frame, hello,
    server_frame,
};
use syncline_tests::{TestServer, push};

const STEP: Duration = Duration::from_secs(30);

/// One field of every kind, with the values JSON has trouble with.
fn awkward_fields() -> BTreeMap<String, Value> {
    [
        ("nan", Value::double(f64::NAN)),
        ("up", Value::double(f64::INFINITY)),
        ("down", Value::double(f64::NEG_INFINITY)),
        ("negative_zero", Value::double(-0.0)),
        ("tiny", Value::double(5e-324)),
        ("min", Value::int(i64::MIN)),
        ("max", Value::int(i64::MAX)),
        ("empty_text", Value::string("")),
        ("empty_bytes", Value::bytes(Vec::new())),
        ("bytes", Value::bytes(vec![0, 255, 62, 63])),
        ("flag", Value::bool(false)),
        ("nothing", Value::null()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

/// Asserts that `received` holds exactly the fields of [`awkward_fields`]: doubles by bit
/// pattern, except that any NaN is NaN (JSON carries no NaN payload).
fn assert_awkward_fields(received: &Record) {
    let expected = awkward_fields();
    assert_eq!(received.fields.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "{received:?}");
    for (name, value) in &expected {
        let got = &received.fields[name];
        match (&value.kind, &got.kind) {
            (Some(Kind::DoubleValue(want)), Some(Kind::DoubleValue(got))) if want.is_nan() => {
                assert!(got.is_nan(), "{name}: {got}");
            }
            (Some(Kind::DoubleValue(want)), Some(Kind::DoubleValue(got))) => {
                assert_eq!(want.to_bits(), got.to_bits(), "{name}: {got} for {want}");
            }
            _ => assert_eq!(got, value, "{name}"),
        }
    }
}

async fn next_frame(connection: &mut Connection) -> server_frame::Msg {
    match tokio::time::timeout(STEP, connection.recv()).await.expect("a frame in time").expect("a frame") {
        Incoming::Frame(ServerFrame { msg: Some(msg) }) => msg,
        other => panic!("expected a frame, got {other:?}"),
    }
}

/// Reads frames, acking pages, until a Changes frame with an upsert of `id`; returns it.
async fn upsert_of(connection: &mut Connection, id: &str) -> Record {
    loop {
        if let server_frame::Msg::Changes(changes) = next_frame(connection).await {
            let ack = Ack { source: changes.source, key: changes.key, cursor: changes.to, page: changes.page };
            connection.send(&ClientFrame { msg: Some(client_frame::Msg::Ack(ack)) }).await.unwrap();
            if let Some(record) = changes.upserts.into_iter().find(|record| record.id == id) {
                return record;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_device_receives_non_finite_doubles_and_every_other_value() {
    let server = TestServer::start().await;
    server.add_user("ann", "ann-pw");
    let mut ingest = server.ingest_client().await;
    let sensor = |id: &str| Record { id: id.to_owned(), fields: awkward_fields(), version: 0 };
    push(&mut ingest, "Account", "*", vec![sensor("before")], vec![]).await.unwrap();

    let options = ConnectOptions { format: FrameFormat::Json, ..ConnectOptions::default() };
    let mut device = Connection::connect(&server.url(), &options).await.expect("connects");
    let hello = Hello {
        protocol_version: syncline_proto::PROTOCOL_VERSION,
        credentials: Some(hello::Credentials::Login(Login { username: "ann".into(), password: "ann-pw".into() })),
        ..Hello::default()
    };
    device.send(&ClientFrame { msg: Some(client_frame::Msg::Hello(hello)) }).await.unwrap();
    assert!(matches!(next_frame(&mut device).await, server_frame::Msg::Welcome(_)));
    let subscribe = Subscribe { source: "Account".into(), page_size: 10, window: 2, ..Subscribe::default() };
    device.send(&ClientFrame { msg: Some(client_frame::Msg::Subscribe(subscribe)) }).await.unwrap();

    // The snapshot page.
    assert_awkward_fields(&upsert_of(&mut device, "before").await);
    loop {
        if let server_frame::Msg::SyncState(state) = next_frame(&mut device).await
            && state.status == SyncStatus::CaughtUp as i32
        {
            break;
        }
    }
    // A live push.
    push(&mut ingest, "Account", "*", vec![sensor("live")], vec![]).await.unwrap();
    assert_awkward_fields(&upsert_of(&mut device, "live").await);
    assert_eq!(device.format(), FrameFormat::Json);
    server.stop().await;
}
