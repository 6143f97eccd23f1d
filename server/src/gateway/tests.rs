//! The gateway's command handlers, driven through `DeviceSession::on_frame` with a test
//! outbox: each test reads the frames a command queued and the close it asked for.

use std::net::SocketAddr;

use syncline_proto::close_code;
use syncline_proto::v1::{self, ClientFrame, ErrorCode, MutationOp, SyncStatus, client_frame, hello, server_frame};
use syncline_push::outbox::Outgoing;
use syncline_push::{Outbox, SessionHandler as _};
use tokio::sync::mpsc;

use super::DeviceSession;
use crate::auth::Identity;
use crate::storage::PartitionName;
use crate::test_util::fixtures::{ScriptedChannel, TestGateway, device_limits, record, serve_channel, sources, within};

/// Frames a test device's outbox holds: more than any test queues before reading.
const QUEUE: usize = 64;

/// Where the test devices connect from.
const PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40_000);

/// One device's session and what it queued.
struct Device {
    session: DeviceSession,
    outbox: Outbox,
    queue: mpsc::Receiver<Outgoing>,
}

impl Device {
    /// Opens a session on `gateway`.
    fn connect(gateway: &TestGateway) -> Self {
        let (outbox, queue) = Outbox::for_test(QUEUE);
        let session = DeviceSession::new(gateway.services.clone(), PEER, outbox.clone());
        Self { session, outbox, queue }
    }

    /// Hands the session a frame, as its connection's reader does.
    async fn send(&mut self, msg: client_frame::Msg) {
        self.session.on_frame(ClientFrame { msg: Some(msg) }, &self.outbox).await;
    }

    /// Returns the frames queued so far.
    fn queued(&mut self) -> Vec<server_frame::Msg> {
        let mut frames = Vec::new();
        while let Ok(item) = self.queue.try_recv() {
            match item {
                Outgoing::Frame(frame) => frames.push(frame.frame().msg.clone().expect("a frame with a message")),
                Outgoing::Ping => {}
            }
        }
        frames
    }

    /// Returns the one frame queued since the last read.
    fn only(&mut self) -> server_frame::Msg {
        let mut frames = self.queued();
        assert_eq!(frames.len(), 1, "expected one frame, got {frames:?}");
        frames.remove(0)
    }

    /// Waits for the next frame queued off the session's own loop (a mutation's outcome).
    async fn next_later(&mut self) -> server_frame::Msg {
        match within("a frame from off the session", self.queue.recv()).await {
            Some(Outgoing::Frame(frame)) => frame.frame().msg.clone().expect("a frame with a message"),
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// Returns the close code the session asked for, if any.
    fn close_code(&self) -> Option<u16> {
        self.outbox.close_request().map(|(code, _)| code)
    }
}

fn login(user: &str, password: &str) -> client_frame::Msg {
    let login = v1::Login { username: user.into(), password: password.into() };
    hello_with(Some(hello::Credentials::Login(login)))
}

fn hello_with(credentials: Option<hello::Credentials>) -> client_frame::Msg {
    client_frame::Msg::Hello(v1::Hello {
        protocol_version: syncline_proto::PROTOCOL_VERSION,
        credentials,
        client_id: String::new(),
        device: None,
    })
}

fn subscribe(source: &str, key: &str, page_size: u32, window: u32) -> client_frame::Msg {
    client_frame::Msg::Subscribe(v1::Subscribe { source: source.into(), key: key.into(), cursor: 0, page_size, window })
}

fn mutate(mutation_id: &str, source: &str, op: MutationOp, id: &str) -> client_frame::Msg {
    client_frame::Msg::Mutate(v1::Mutate {
        mutation_id: mutation_id.into(),
        source: source.into(),
        key: String::new(),
        op: op as i32,
        id: id.into(),
        fields: record(id, 1).fields,
        base_version: 0,
    })
}

/// Adds user `user` (password `<user>-pw`) and returns a device logged in as it, with its
/// Welcome read.
async fn logged_in(gateway: &TestGateway, user: &str) -> (Device, v1::Welcome) {
    let password = format!("{user}-pw");
    crate::auth::add_user(gateway.store.as_ref(), user, &password).expect("add user");
    let mut device = Device::connect(gateway);
    device.send(login(user, &password)).await;
    match device.only() {
        server_frame::Msg::Welcome(welcome) => (device, welcome),
        other => panic!("expected Welcome, got {other:?}"),
    }
}

/// Expects the one frame queued to be a fatal Error with `code`, and the session to ask for
/// close code `close`; returns the error's message.
fn assert_fatal(device: &mut Device, code: ErrorCode, close: u16) -> String {
    match device.only() {
        server_frame::Msg::Error(error) => {
            assert_eq!(error.code, code as i32, "{error:?}");
            assert!(error.fatal, "{error:?}");
            assert_eq!(device.close_code(), Some(close), "after {error:?}");
            error.message
        }
        other => panic!("expected a fatal Error {code:?}, got {other:?}"),
    }
}

/// Expects a non-fatal Error with `code` about partition `source`/`key`.
fn assert_partition_error(frame: server_frame::Msg, code: ErrorCode, source: &str, key: &str) {
    match frame {
        server_frame::Msg::Error(error) => {
            assert_eq!((error.code, error.fatal), (code as i32, false), "{error:?}");
            assert_eq!((error.source.as_str(), error.key.as_str()), (source, key), "{error:?}");
        }
        other => panic!("expected a partition Error {code:?}, got {other:?}"),
    }
}

/// Expects a refused MutationResult of `mutation_id` with `code`.
fn assert_refused(frame: server_frame::Msg, mutation_id: &str, code: ErrorCode) -> String {
    match frame {
        server_frame::Msg::MutationResult(result) => {
            assert_eq!(result.mutation_id, mutation_id);
            assert!(!result.ok, "{result:?}");
            let error = result.error.expect("a refusal says why");
            assert_eq!(error.code, code as i32, "{error:?}");
            error.message
        }
        other => panic!("expected a refused MutationResult {code:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_password_login_is_welcomed_with_a_session_token_and_the_limits() {
    let gateway = TestGateway::new(sources(None), device_limits());
    let (device, welcome) = logged_in(&gateway, "ann").await;
    assert_eq!(welcome.user_id, "ann");
    assert!(!welcome.client_id.is_empty() && !welcome.session_token.is_empty(), "{welcome:?}");
    let limits = device_limits();
    assert_eq!((welcome.max_page_size, welcome.max_window), (limits.max_page_size, limits.max_window));
    assert_eq!(u64::from(welcome.heartbeat_ms), limits.listener.session.heartbeat.as_millis() as u64);
    let names: Vec<_> = welcome.sources.iter().map(|source| source.name.as_str()).collect();
    assert_eq!(names, ["Account", "Contact"]);
    assert!(device.outbox.is_handshake_done(), "the handshake deadline no longer applies");
    assert_eq!(device.close_code(), None);
    assert_eq!(gateway.services.user_sessions.count("ann"), 1);
}

#[tokio::test]
async fn bad_credentials_and_expired_tokens_are_fatal_and_unauthenticated() {
    let gateway = TestGateway::new(sources(None), device_limits());
    let (_ann, welcome) = logged_in(&gateway, "ann").await;

    let mut wrong = Device::connect(&gateway);
    wrong.send(login("ann", "not-her-password")).await;
    let message = assert_fatal(&mut wrong, ErrorCode::Unauthenticated, close_code::UNAUTHENTICATED);
    assert_eq!(message, "wrong username or password");

    let mut unknown = Device::connect(&gateway);
    unknown.send(login("nobody", "x")).await;
    assert_eq!(assert_fatal(&mut unknown, ErrorCode::Unauthenticated, close_code::UNAUTHENTICATED), message);

    let identity = Identity { user_id: "ann".into(), client_id: welcome.client_id, ..Identity::default() };
    let expired = gateway.services.auth.expired_token_for_test(&identity, std::time::Duration::from_secs(60));
    let mut late = Device::connect(&gateway);
    late.send(hello_with(Some(hello::Credentials::SessionToken(expired)))).await;
    let message = assert_fatal(&mut late, ErrorCode::Unauthenticated, close_code::UNAUTHENTICATED);
    assert!(message.contains("expired"), "{message}");
    assert_eq!(gateway.services.user_sessions.count("ann"), 1, "refused sessions are not counted");
}

#[tokio::test]
async fn sessions_that_do_not_start_with_a_usable_hello_are_closed_with_their_codes() {
    let gateway = TestGateway::new(sources(None), device_limits());
    let mut first_subscribe = Device::connect(&gateway);
    first_subscribe.send(subscribe("Account", "", 0, 1)).await;
    assert_fatal(&mut first_subscribe, ErrorCode::Unauthenticated, close_code::PROTOCOL_ERROR);

    let mut no_credentials = Device::connect(&gateway);
    no_credentials.send(hello_with(None)).await;
    assert_fatal(&mut no_credentials, ErrorCode::Unauthenticated, close_code::UNAUTHENTICATED);

    let mut old = Device::connect(&gateway);
    let mut hello = v1::Hello { protocol_version: syncline_proto::PROTOCOL_VERSION + 1, ..v1::Hello::default() };
    hello.credentials = Some(hello::Credentials::SessionToken("whatever".into()));
    old.send(client_frame::Msg::Hello(hello)).await;
    assert_fatal(&mut old, ErrorCode::UnsupportedVersion, close_code::UPGRADE_REQUIRED);
}

#[tokio::test]
async fn the_per_user_connection_cap_refuses_the_extra_session() {
    let limits = crate::config::DeviceSettings { max_connections_per_user: 1, ..device_limits() };
    let gateway = TestGateway::new(sources(None), limits);
    let (_first, _) = logged_in(&gateway, "ann").await;
    let mut second = Device::connect(&gateway);
    second.send(login("ann", "ann-pw")).await;
    assert_fatal(&mut second, ErrorCode::ResourceExhausted, close_code::TOO_MANY_CONNECTIONS);
    assert_eq!(gateway.services.user_sessions.count("ann"), 1);
}

#[tokio::test]
async fn subscribing_to_an_unknown_or_foreign_partition_is_a_partition_error() {
    let gateway = TestGateway::new(sources(None), device_limits());
    let (mut ann, _) = logged_in(&gateway, "ann").await;
    ann.send(subscribe("Nope", "", 0, 1)).await;
    assert_partition_error(ann.only(), ErrorCode::UnknownSource, "Nope", "");
    ann.send(subscribe("Contact", "bob", 0, 1)).await;
    assert_partition_error(ann.only(), ErrorCode::Forbidden, "Contact", "bob");
    assert_eq!(ann.close_code(), None, "partition errors are not fatal");
}

/// Returns the Changes frames among `frames`, failing on anything else.
fn changes(frames: Vec<server_frame::Msg>) -> Vec<v1::Changes> {
    frames
        .into_iter()
        .map(|frame| match frame {
            server_frame::Msg::Changes(changes) => changes,
            other => panic!("expected Changes, got {other:?}"),
        })
        .collect()
}

fn ack(page: &v1::Changes) -> client_frame::Msg {
    client_frame::Msg::Ack(v1::Ack {
        source: page.source.clone(),
        key: page.key.clone(),
        cursor: page.to,
        page: page.page,
    })
}

/// The app partition of `Account`.
fn accounts() -> PartitionName {
    PartitionName::new("Account", syncline_proto::APP_PARTITION_KEY)
}

/// Returns a gateway whose app partition holds records `r00` .. of `count`, and ann's device.
async fn ann_and_accounts(count: i64) -> (TestGateway, Device) {
    let gateway = TestGateway::new(sources(None), device_limits());
    gateway.seed(&accounts(), (0..count).map(|n| record(&format!("r{n:02}"), n)).collect());
    let (ann, _) = logged_in(&gateway, "ann").await;
    (gateway, ann)
}

#[tokio::test]
async fn catch_up_pages_keep_to_the_page_size_and_window_limits_then_report_caught_up() {
    let (gateway, mut ann) = ann_and_accounts(10).await;

    // Asks for far more than the limits allow: 3 records a page, 2 pages unacked.
    ann.send(subscribe("Account", "", 1_000, 100)).await;
    let first = changes(ann.queued());
    assert_eq!(first.iter().map(|page| page.upserts.len()).collect::<Vec<_>>(), [3, 3], "{first:?}");
    assert!(first[0].snapshot && first[0].reset, "{:?}", first[0]);
    ann.send(ack(&first[1])).await;
    let second = changes(ann.queued());
    assert_eq!(second.iter().map(|page| page.upserts.len()).collect::<Vec<_>>(), [3, 1], "{second:?}");
    assert!(second[1].snapshot_done, "{:?}", second[1]);

    ann.send(ack(&second[1])).await;
    let state = gateway.store.partition_state(&accounts()).expect("partition state");
    match ann.only() {
        server_frame::Msg::SyncState(sync) => {
            assert_eq!(sync.status, SyncStatus::CaughtUp as i32, "{sync:?}");
            assert_eq!((sync.cursor, sync.total, sync.checksum), (state.head, 10, state.checksum), "{sync:?}");
        }
        other => panic!("expected SyncState, got {other:?}"),
    }
    let ids: Vec<_> = first.iter().chain(&second).flat_map(|page| &page.upserts).map(|r| r.id.clone()).collect();
    assert_eq!(ids, (0..10).map(|n| format!("r{n:02}")).collect::<Vec<_>>(), "each record once, in id order");
}

#[tokio::test]
async fn a_pull_mode_subscription_gets_default_sized_pages_only_when_it_pulls() {
    let (_gateway, mut ann) = ann_and_accounts(5).await;
    ann.send(subscribe("Account", "", 0, 0)).await;
    assert_eq!(ann.queued(), Vec::new(), "nothing before a Pull");
    ann.send(client_frame::Msg::Pull(v1::Pull { source: "Account".into(), key: String::new(), pages: 1 })).await;
    let pages = changes(ann.queued());
    assert_eq!(pages.len(), 1, "{pages:?}");
    assert_eq!(pages[0].upserts.len(), device_limits().default_page_size as usize);
}

#[tokio::test]
async fn mutations_that_fail_the_checks_are_refused_before_they_are_queued() {
    let channel = serve_channel(ScriptedChannel::answering()).await;
    let gateway = TestGateway::new(sources(Some(&channel.url)), device_limits());
    let (mut ann, _) = logged_in(&gateway, "ann").await;
    ann.send(mutate("", "Task", MutationOp::Create, "t1")).await;
    assert_refused(ann.only(), "", ErrorCode::BadRequest);
    ann.send(mutate("m-op", "Task", MutationOp::Unspecified, "t1")).await;
    assert_refused(ann.only(), "m-op", ErrorCode::BadRequest);
    ann.send(mutate("m-id", "Task", MutationOp::Create, "")).await;
    assert_refused(ann.only(), "m-id", ErrorCode::BadRequest);
    ann.send(mutate("m-source", "Nope", MutationOp::Create, "t1")).await;
    assert_refused(ann.only(), "m-source", ErrorCode::UnknownSource);
    ann.send(mutate("m-read-only", "Account", MutationOp::Create, "a1")).await;
    let message = assert_refused(ann.only(), "m-read-only", ErrorCode::Forbidden);
    assert!(message.contains("read-only"), "{message}");
    assert_eq!(gateway.store.pending_mutations().expect("pending").len(), 0, "nothing was queued");
    assert_eq!(channel.backend.arrived(), Vec::<String>::new());
}

#[tokio::test]
async fn a_mutation_past_the_pending_limit_is_refused_and_a_queued_one_reaches_its_outcome() {
    let channel = serve_channel(ScriptedChannel::holding()).await;
    let limits = crate::config::DeviceSettings { max_pending_mutations: 1, ..device_limits() };
    let gateway = TestGateway::new(sources(Some(&channel.url)), limits);
    let (mut ann, _) = logged_in(&gateway, "ann").await;

    ann.send(mutate("m1", "Task", MutationOp::Create, "t1")).await;
    match ann.only() {
        server_frame::Msg::MutationAck(ack) => assert_eq!((ack.mutation_id.as_str(), ack.queued), ("m1", 1)),
        other => panic!("expected MutationAck, got {other:?}"),
    }
    channel.backend.wait_for_arrivals(1).await;
    ann.send(mutate("m2", "Task", MutationOp::Create, "t2")).await;
    assert_refused(ann.only(), "m2", ErrorCode::ResourceExhausted);

    channel.backend.release(1);
    let outcome = match ann.next_later().await {
        server_frame::Msg::MutationResult(result) => result,
        other => panic!("expected m1's MutationResult, got {other:?}"),
    };
    assert!(outcome.ok && outcome.mutation_id == "m1", "{outcome:?}");

    // The same mutation again is answered from its stored outcome, not sent again.
    ann.send(mutate("m1", "Task", MutationOp::Create, "t1")).await;
    match ann.only() {
        server_frame::Msg::MutationResult(again) => assert_eq!(again, outcome),
        other => panic!("expected the stored MutationResult, got {other:?}"),
    }
    assert_eq!(channel.backend.arrived(), ["m1"]);
}

#[tokio::test]
async fn logout_closes_normally_and_revokes_the_session_token() {
    let gateway = TestGateway::new(sources(None), device_limits());
    let (mut ann, welcome) = logged_in(&gateway, "ann").await;
    ann.send(client_frame::Msg::Logout(v1::Logout {})).await;
    assert_eq!(ann.queued(), Vec::new());
    assert_eq!(ann.close_code(), Some(close_code::NORMAL));

    let mut again = Device::connect(&gateway);
    again.send(hello_with(Some(hello::Credentials::SessionToken(welcome.session_token)))).await;
    let message = assert_fatal(&mut again, ErrorCode::Unauthenticated, close_code::UNAUTHENTICATED);
    assert!(message.contains("revoked"), "{message}");
}

#[tokio::test]
async fn searches_and_calls_without_a_backend_get_typed_errors() {
    let gateway = TestGateway::new(sources(None), device_limits());
    let (mut ann, _) = logged_in(&gateway, "ann").await;
    for (source, code) in [("Account", ErrorCode::Forbidden), ("Nope", ErrorCode::UnknownSource)] {
        let search = v1::Search { search_id: format!("s-{source}"), source: source.into(), ..v1::Search::default() };
        ann.send(client_frame::Msg::Search(search)).await;
        match ann.only() {
            server_frame::Msg::SearchResult(result) => {
                assert_eq!(result.search_id, format!("s-{source}"));
                assert_eq!(result.error.map(|error| error.code), Some(code as i32), "{source}");
            }
            other => panic!("expected SearchResult, got {other:?}"),
        }
    }

    let call =
        v1::RpcCall { call_id: "c1".into(), service: "crm".into(), method: "Close".into(), ..v1::RpcCall::default() };
    ann.send(client_frame::Msg::RpcCall(call)).await;
    match ann.only() {
        server_frame::Msg::RpcReply(reply) => {
            assert_eq!(reply.call_id, "c1");
            match reply.result {
                Some(v1::rpc_reply::Result::Error(error)) => assert_eq!(error.code, ErrorCode::NotFound as i32),
                other => panic!("expected an error reply, got {other:?}"),
            }
        }
        other => panic!("expected RpcReply, got {other:?}"),
    }

    let empty = v1::BulkRequest { request_id: "b1".into(), ..v1::BulkRequest::default() };
    ann.send(client_frame::Msg::BulkRequest(empty)).await;
    match ann.only() {
        server_frame::Msg::BulkReady(ready) => {
            assert_eq!(ready.request_id, "b1");
            let error = ready.error.expect("a request naming no source is refused");
            assert_eq!((error.code, error.fatal), (ErrorCode::BadRequest as i32, false));
            assert!(ready.files.is_empty());
        }
        other => panic!("expected BulkReady, got {other:?}"),
    }
    assert_eq!(ann.close_code(), None);
}
