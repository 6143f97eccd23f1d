//! Mobile RPC end to end: devices call backend `MobileService`s over their Syncline socket.
//! The backends are real gRPC servers: a small test service written with the Mobile RPC SDK
//! (with a method that waits for the test's signal and reports when it is cancelled), the
//! CRM example, and the Python example.

use std::time::Duration;

use syncline_client_sim::rpc::{CallError, call_frame, reply_result};
use syncline_client_sim::{Connection, ConnectionPhase, Device, DeviceConfig, Incoming, SubscriptionConfig};
use syncline_proto::mobile_sdk::{self, Invocation, MobileBackend, MobileError};
use syncline_proto::v1::{ErrorCode, RpcReply, server_frame};
use syncline_server::config::{CaptureMode, Partitioning, RpcServiceSection, SourceSection};
use syncline_server::rpc::metrics::Outcome;
use syncline_tests::{DEADLINE, PythonChannel, TestServer, push, raw_login, record};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

/// What the test backend saw, by the label in the payload of `Wait` calls.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Started(String),
    Finished(String),
    Cancelled(String),
}

/// Reports `Cancelled` unless the call it guards finished.
struct CallGuard {
    label: String,
    events: mpsc::UnboundedSender<Event>,
    finished: bool,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let event = if self.finished { Event::Finished } else { Event::Cancelled };
        let _ = self.events.send(event(self.label.clone()));
    }
}

/// The test service `test`: `Whoami` answers the caller's identity, `Echo` the payload,
/// `Deny` PERMISSION_DENIED, `Big` as many bytes as the payload says, and `Wait` blocks
/// until the test releases it.
struct TestBackend {
    events: mpsc::UnboundedSender<Event>,
    release: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl MobileBackend for TestBackend {
    async fn invoke(&self, call: Invocation) -> mobile_sdk::Result<Vec<u8>> {
        match call.method.as_str() {
            "Whoami" => Ok(format!("{}/{}/{}", call.service, call.caller.user_id, call.caller.client_id).into_bytes()),
            "Echo" => Ok(call.payload),
            "Deny" => Err(MobileError::PermissionDenied("not for you".into())),
            "Big" => {
                let bytes = std::str::from_utf8(&call.payload).ok().and_then(|text| text.parse().ok());
                Ok(vec![1; bytes.ok_or_else(|| MobileError::InvalidArgument("a size".into()))?])
            }
            "Wait" => {
                let label = String::from_utf8_lossy(&call.payload).into_owned();
                let mut guard = CallGuard { label: label.clone(), events: self.events.clone(), finished: false };
                let _ = self.events.send(Event::Started(label));
                let mut release = self.release.clone();
                release
                    .wait_for(|released| *released)
                    .await
                    .map_err(|_| MobileError::Unavailable("stopping".into()))?;
                guard.finished = true;
                Ok(b"released".to_vec())
            }
            _ => Err(call.unknown_method()),
        }
    }
}

/// The test backend serving on a loopback port until dropped.
struct Backend {
    url: String,
    events: mpsc::UnboundedReceiver<Event>,
    release: watch::Sender<bool>,
    _stop: DropGuard,
}

impl Backend {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (events_tx, events) = mpsc::unbounded_channel();
        let (release, release_rx) = watch::channel(false);
        let stop = CancellationToken::new();
        let backend = TestBackend { events: events_tx, release: release_rx };
        let shutdown = stop.clone();
        tokio::spawn(mobile_sdk::serve(backend, listener, async move { shutdown.cancelled().await }));
        Self { url, events, release, _stop: stop.drop_guard() }
    }

    /// Waits for the backend's next event.
    async fn next_event(&mut self) -> Event {
        tokio::time::timeout(DEADLINE, self.events.recv())
            .await
            .expect("a backend event in time")
            .expect("the backend is running")
    }

    /// Lets every waiting `Wait` call finish.
    fn release_all(&self) {
        self.release.send_replace(true);
    }
}

/// Starts a server routing service `test` to `backend_url`, with `customize` applied.
async fn server_for(backend_url: &str, customize: impl FnOnce(&mut syncline_server::config::Config)) -> TestServer {
    let url = backend_url.to_owned();
    let server = TestServer::start_with(move |config| {
        config.rpc.services.insert("test".into(), RpcServiceSection::new(&url));
        customize(config);
    })
    .await;
    server.add_user("alice", "secret");
    server.add_user("bob", "secret");
    server
}

async fn connected_device(server: &TestServer, user: &str) -> syncline_client_sim::DeviceHandle {
    let device = Device::start(DeviceConfig::new(server.url(), user, "secret"));
    device
        .wait_for(tokio::time::Instant::now() + DEADLINE, |state| state.connection == ConnectionPhase::Ready)
        .await
        .expect("the device is welcomed");
    device
}

/// A raw session: logged in, Welcome read.
async fn raw_session(server: &TestServer, user: &str) -> Connection {
    let mut connection = raw_login(&server.url(), user, "secret").await;
    match next_frame(&mut connection).await.msg {
        Some(server_frame::Msg::Welcome(_)) => connection,
        other => panic!("expected Welcome, got {other:?}"),
    }
}

async fn next_frame(connection: &mut Connection) -> syncline_proto::v1::ServerFrame {
    match tokio::time::timeout(DEADLINE, connection.recv()).await.expect("a frame in time").expect("a frame") {
        Incoming::Frame(frame) => frame,
        Incoming::Closed { code, reason } => panic!("closed with {code}: {reason}"),
    }
}

/// Reads frames until the reply to `call_id` (skipping other frames and replies).
async fn reply_to(connection: &mut Connection, call_id: &str) -> RpcReply {
    replies_to(connection, &[call_id]).await.remove(call_id).expect("the reply")
}

/// Reads frames until the replies to all of `call_ids`, in whatever order they come.
async fn replies_to(connection: &mut Connection, call_ids: &[&str]) -> std::collections::HashMap<String, RpcReply> {
    let mut replies = std::collections::HashMap::new();
    while replies.len() < call_ids.len() {
        if let Some(server_frame::Msg::RpcReply(reply)) = next_frame(connection).await.msg
            && call_ids.contains(&reply.call_id.as_str())
        {
            replies.insert(reply.call_id.clone(), reply);
        }
    }
    replies
}

fn code_of(result: &Result<Vec<u8>, CallError>) -> Option<ErrorCode> {
    result.as_ref().err().and_then(CallError::code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_reaches_its_backend_with_the_callers_identity_and_is_counted() {
    let backend = Backend::start().await;
    let server = server_for(&backend.url, |_| {}).await;
    let device = connected_device(&server, "alice").await;
    let client_id = device.client_id().expect("welcomed");

    let reply = device.call("test", "Whoami", vec![]).await.expect("a reply");
    assert_eq!(String::from_utf8(reply).unwrap(), format!("test/alice/{client_id}"));
    let payload: Vec<u8> = (0..=255).collect();
    assert_eq!(device.call("test", "Echo", payload.clone()).await.expect("an echo"), payload);

    let metrics = server.server.rpc_metrics();
    let whoami = metrics.snapshot("test", "Whoami").expect("counted");
    assert_eq!((whoami.calls, whoami.count(Outcome::Ok)), (1, 1));
    assert!(whoami.p99 >= whoami.p50 && whoami.p50 > Duration::ZERO, "{whoami:?}");
    device.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_services_and_methods_are_not_found_and_backend_errors_keep_their_kind() {
    let backend = Backend::start().await;
    let server = server_for(&backend.url, |_| {}).await;
    let device = connected_device(&server, "alice").await;

    let unknown_service = device.call("billing", "Pay", vec![]).await;
    assert_eq!(code_of(&unknown_service), Some(ErrorCode::NotFound), "{unknown_service:?}");
    let unknown_method = device.call("test", "Teleport", vec![]).await;
    assert_eq!(code_of(&unknown_method), Some(ErrorCode::NotFound), "{unknown_method:?}");
    assert!(unknown_method.unwrap_err().to_string().contains("Teleport"));
    let denied = device.call("test", "Deny", vec![]).await;
    assert_eq!(denied, Err(CallError::Failed { code: ErrorCode::Forbidden, message: "not for you".into() }));

    let metrics = server.server.rpc_metrics();
    assert_eq!(metrics.snapshot("(unknown)", "Pay").expect("counted").count(Outcome::NotFound), 1);
    assert_eq!(metrics.snapshot("test", "Deny").expect("counted").count(Outcome::Forbidden), 1);
    device.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_is_down_answers_unavailable() {
    // A port that nothing listens on any more.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let server = server_for(&url, |_| {}).await;
    let device = connected_device(&server, "alice").await;
    let result = device.call("test", "Whoami", vec![]).await;
    assert_eq!(code_of(&result), Some(ErrorCode::Unavailable), "{result:?}");
    device.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_is_capped_by_config_and_cancels_the_backend_call_when_it_passes() {
    let mut backend = Backend::start().await;
    let server = server_for(&backend.url, |config| {
        config.rpc.max_deadline_ms = 300;
        config.rpc.default_deadline_ms = 300;
    })
    .await;
    let mut connection = raw_session(&server, "alice").await;
    // The device asks for an hour; the server allows 300 ms.
    connection.send(&call_frame("slow", "test", "Wait", b"slow".to_vec(), Duration::from_secs(3600))).await.unwrap();
    assert_eq!(backend.next_event().await, Event::Started("slow".into()));
    let reply = reply_to(&mut connection, "slow").await;
    let error = reply_result(reply).unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::Timeout), "{error:?}");
    assert_eq!(backend.next_event().await, Event::Cancelled("slow".into()), "the backend saw the call cancelled");
    let counted = server.server.rpc_metrics().snapshot("test", "Wait").expect("counted");
    assert_eq!(counted.count(Outcome::Timeout), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_payloads_are_refused_and_never_relayed() {
    let backend = Backend::start().await;
    let server = server_for(&backend.url, |config| config.rpc.max_payload_bytes = 1024).await;
    let device = connected_device(&server, "alice").await;
    let result = device.call("test", "Echo", vec![7; 1025]).await;
    assert_eq!(code_of(&result), Some(ErrorCode::BadRequest), "{result:?}");
    assert_eq!(device.call("test", "Echo", vec![7; 1024]).await.expect("at the limit").len(), 1024);
    let echo = server.server.rpc_metrics().snapshot("test", "Echo").expect("counted");
    assert_eq!((echo.count(Outcome::BadRequest), echo.count(Outcome::Ok)), (1, 1));
    // Replies are held to the same limit: a little over it, and far over it (beyond what
    // the gRPC client decodes at all), are the backend's fault.
    for size in ["1025", "100000"] {
        let result = device.call("test", "Big", size.as_bytes().to_vec()).await;
        assert_eq!(code_of(&result), Some(ErrorCode::Internal), "{size}: {result:?}");
    }
    assert_eq!(device.call("test", "Big", b"1024".to_vec()).await.expect("at the limit").len(), 1024);
    device.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limits_per_device_and_per_service_answer_resource_exhausted() {
    let mut backend = Backend::start().await;
    let server = server_for(&backend.url, |config| {
        config.rpc.max_in_flight_per_device = 2;
        if let Some(service) = config.rpc.services.get_mut("test") {
            service.max_in_flight = 3;
        }
    })
    .await;
    let mut alice = raw_session(&server, "alice").await;
    let mut bob = raw_session(&server, "bob").await;
    let wait = |id: &str| call_frame(id, "test", "Wait", id.as_bytes().to_vec(), Duration::from_secs(60));
    for id in ["a1", "a2"] {
        alice.send(&wait(id)).await.unwrap();
        assert_eq!(backend.next_event().await, Event::Started(id.into()));
    }
    alice.send(&wait("a3")).await.unwrap();
    let refused = reply_result(reply_to(&mut alice, "a3").await).unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::ResourceExhausted), "{refused:?}");
    assert!(refused.to_string().contains("per device"), "{refused}");

    bob.send(&wait("b1")).await.unwrap();
    assert_eq!(backend.next_event().await, Event::Started("b1".into()));
    bob.send(&wait("b2")).await.unwrap();
    let refused = reply_result(reply_to(&mut bob, "b2").await).unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::ResourceExhausted), "{refused:?}");
    assert!(refused.to_string().contains("service"), "{refused}");

    backend.release_all();
    for (_, reply) in replies_to(&mut alice, &["a1", "a2"]).await {
        assert_eq!(reply_result(reply).unwrap(), b"released");
    }
    assert_eq!(reply_result(reply_to(&mut bob, "b1").await).unwrap(), b"released");
    // The slots are free again.
    bob.send(&call_frame("b3", "test", "Echo", b"again".to_vec(), Duration::from_secs(60))).await.unwrap();
    assert_eq!(reply_result(reply_to(&mut bob, "b3").await).unwrap(), b"again");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_disconnects_cancels_its_call_in_the_backend() {
    let mut backend = Backend::start().await;
    let server = server_for(&backend.url, |_| {}).await;
    let mut connection = raw_session(&server, "alice").await;
    connection.send(&call_frame("c1", "test", "Wait", b"gone".to_vec(), Duration::from_secs(60))).await.unwrap();
    assert_eq!(backend.next_event().await, Event::Started("gone".into()));
    connection.cut();
    assert_eq!(backend.next_event().await, Event::Cancelled("gone".into()));
    let waits = server.server.rpc_metrics();
    syncline_tests::eventually(DEADLINE, "the cancelled call is counted", || async {
        waits.snapshot("test", "Wait").filter(|wait| wait.count(Outcome::Cancelled) == 1)
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_keeps_flowing_on_the_socket_while_a_call_waits() {
    let mut backend = Backend::start().await;
    let server = server_for(&backend.url, |_| {}).await;
    let device =
        Device::start(DeviceConfig::new(server.url(), "alice", "secret").subscribe(SubscriptionConfig::new("Account")));
    let deadline = || tokio::time::Instant::now() + DEADLINE;
    device.wait_for(deadline(), |state| state.is_caught_up()).await.expect("caught up");

    let call = device.call_with_timeout("test", "Wait", b"long".to_vec(), DEADLINE);
    let pushes = async {
        assert_eq!(backend.next_event().await, Event::Started("long".into()));
        let mut ingest = server.ingest_client().await;
        for n in 0..3 {
            push(&mut ingest, "Account", "*", vec![record(&format!("acc-{n}"), n)], vec![]).await.expect("push");
            device
                .wait_for(deadline(), |state| state.partition("Account", "*").is_some_and(|p| p.total == n as u64 + 1))
                .await
                .expect("the push arrives while the call waits");
        }
        backend.release_all();
    };
    let (reply, ()) = tokio::join!(call, pushes);
    assert_eq!(reply.expect("the call completes after the pushes"), b"released");
    device.stop().await;
    server.stop().await;
}

mod crm {
    use super::*;

    /// Devices of two users subscribed to the CRM (watch capture); one closes a deal.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_closed_deal_reaches_every_subscribed_device_through_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stop = CancellationToken::new();
        let shutdown = stop.clone();
        let crm =
            syncline_example_crm::start(dir.path().join("crm.db"), listener, async move { shutdown.cancelled().await })
                .await
                .expect("crm starts");
        crm.db().seed(20).await.expect("seed");
        crm.db().add_user("erin", "erin").await.expect("second user");
        let mut contact = std::collections::BTreeMap::new();
        contact.insert("name".to_owned(), syncline_proto::v1::Value::string("Dana"));
        contact.insert("account_id".to_owned(), syncline_proto::v1::Value::string("acc-3"));
        crm.db().create("Contact", "demo", contact, "").await.expect("a contact at acc-3");
        let url = format!("http://{}", crm.local_addr());
        let server = TestServer::start_with(|config| {
            config.sources.clear();
            for (name, partitioning) in [("Account", Partitioning::App), ("Contact", Partitioning::User)] {
                let mut source = SourceSection::new(partitioning);
                source.channel = Some(url.clone());
                source.capture = CaptureMode::Watch;
                config.sources.insert(name.into(), source);
            }
            config.auth.channel = Some(url.clone());
            config.rpc.services.insert("crm".into(), RpcServiceSection::new(&url));
        })
        .await;
        let start = |user: &str| {
            Device::start(
                DeviceConfig::new(server.url(), user, user)
                    .subscribe(SubscriptionConfig::new("Account"))
                    .subscribe(SubscriptionConfig::new("Contact")),
            )
        };
        let (closer, colleague) = (start("demo"), start("erin"));
        let deadline = || tokio::time::Instant::now() + DEADLINE;
        for device in [&closer, &colleague] {
            device
                .wait_for(deadline(), |state| {
                    state.partition("Account", "*").is_some_and(|p| p.caught_up && p.total == 20)
                        && state.partitions.iter().any(|(id, p)| id.source == "Contact" && p.caught_up)
                })
                .await
                .expect("caught up");
        }
        let revenue_before = revenue(&closer, "acc-3");

        let reply = closer
            .call("crm", "CloseDeal", br#"{"account_id": "acc-3", "amount": 1000.0}"#.to_vec())
            .await
            .expect("the deal closes");
        let reply: serde_json::Value = serde_json::from_slice(&reply).expect("a JSON reply");
        assert_eq!(reply["contacts_updated"], 1);
        assert_eq!(reply["annual_revenue"], revenue_before + 1000.0);

        for device in [&closer, &colleague] {
            device
                .wait_for(deadline(), |_| {
                    device.view("Account", "*").is_some_and(|view| {
                        view.records.get("acc-3").is_some_and(|account| {
                            account.fields.get("annual_revenue")
                                == Some(&syncline_proto::v1::Value::double(revenue_before + 1000.0))
                                && account.fields.get("active") == Some(&syncline_proto::v1::Value::bool(true))
                        })
                    })
                })
                .await
                .expect("the account change reaches every device");
        }
        closer
            .wait_for(deadline(), |_| {
                closer.view("Contact", "demo").is_some_and(|view| {
                    view.records
                        .values()
                        .any(|contact| contact.fields.get("vip") == Some(&syncline_proto::v1::Value::bool(true)))
                })
            })
            .await
            .expect("the closer's contact became a VIP");

        let unknown = closer.call("crm", "CloseDeal", br#"{"account_id": "acc-404", "amount": 1.0}"#.to_vec()).await;
        assert_eq!(code_of(&unknown), Some(ErrorCode::NotFound), "{unknown:?}");
        let malformed = closer.call("crm", "CloseDeal", b"not json".to_vec()).await;
        assert_eq!(code_of(&malformed), Some(ErrorCode::BadRequest), "{malformed:?}");

        closer.stop().await;
        colleague.stop().await;
        server.stop().await;
        stop.cancel();
        crm.stopped().await.expect("crm stops");
    }

    /// The demo app (no sources configured) routes service `crm` to its CRM channel.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_demo_app_serves_close_deal() {
        let server = TestServer::start_with(|config| {
            config.sources.clear();
            config.demo.enabled = true;
            config.demo.records = 5;
        })
        .await;
        let device = Device::start(
            DeviceConfig::new(server.url(), "demo", "demo").subscribe(SubscriptionConfig::new("Account")),
        );
        let deadline = || tokio::time::Instant::now() + DEADLINE;
        device
            .wait_for(deadline(), |state| state.partition("Account", "*").is_some_and(|p| p.caught_up && p.total == 5))
            .await
            .expect("caught up on the demo accounts");
        let before = revenue(&device, "acc-2");
        let reply = device
            .call("crm", "CloseDeal", br#"{"account_id": "acc-2", "amount": 250.0}"#.to_vec())
            .await
            .expect("the demo closes the deal");
        let reply: serde_json::Value = serde_json::from_slice(&reply).expect("a JSON reply");
        assert_eq!(reply["annual_revenue"], before + 250.0);
        device
            .wait_for(deadline(), |_| {
                device.view("Account", "*").is_some_and(|view| {
                    view.records["acc-2"].fields.get("annual_revenue")
                        == Some(&syncline_proto::v1::Value::double(before + 250.0))
                })
            })
            .await
            .expect("the change reaches the device");
        device.stop().await;
        server.stop().await;
    }

    fn revenue(device: &syncline_client_sim::DeviceHandle, id: &str) -> f64 {
        let view = device.view("Account", "*").expect("accounts");
        match view.records[id].fields.get("annual_revenue").and_then(|value| value.kind.clone()) {
            Some(syncline_proto::v1::value::Kind::DoubleValue(revenue)) => revenue,
            other => panic!("annual_revenue of {id} is {other:?}"),
        }
    }
}

/// The Python example's RPC method, through Syncline. Needs the channel's venv and stubs
/// (examples/python-channel/run-tests.sh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_channel_serves_an_rpc_method_on_its_channel_port() {
    let dir = tempfile::tempdir().unwrap();
    let channel = PythonChannel::start(&dir.path().join("tasks.db"), 0);
    let url = channel.url.clone();
    let server = TestServer::start_with(|config| {
        let mut task = SourceSection::new(Partitioning::User);
        task.channel = Some(url.clone());
        task.capture = CaptureMode::Watch;
        config.sources.insert("Task".into(), task);
        config.auth.channel = Some(url.clone());
        config.rpc.services.insert("tasks".into(), RpcServiceSection::new(&url));
    })
    .await;
    let device =
        Device::start(DeviceConfig::new(server.url(), "demo", "demo").subscribe(SubscriptionConfig::new("Task")));
    let deadline = || tokio::time::Instant::now() + DEADLINE;
    device.wait_for(deadline(), |state| state.is_caught_up()).await.expect("caught up");

    let reply = device
        .call("tasks", "AddTasks", br#"{"titles": ["buy milk", "call mum"]}"#.to_vec())
        .await
        .expect("the Python backend answers");
    let reply: serde_json::Value = serde_json::from_slice(&reply).expect("a JSON reply");
    assert_eq!(reply["created"].as_array().map(Vec::len), Some(2), "{reply}");
    device
        .wait_for(deadline(), |state| state.partition("Task", "demo").is_some_and(|p| p.caught_up && p.total == 2))
        .await
        .expect("the created tasks reach the device through the watch feed");
    let unknown = device.call("tasks", "Nope", vec![]).await;
    assert_eq!(code_of(&unknown), Some(ErrorCode::NotFound), "{unknown:?}");
    let bad = device.call("tasks", "AddTasks", b"{}".to_vec()).await;
    assert_eq!(code_of(&bad), Some(ErrorCode::BadRequest), "{bad:?}");
    device.stop().await;
    server.stop().await;
}
