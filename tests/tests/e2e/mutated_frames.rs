//! Issue 13: valid device frames with their encoded bytes mutated (bit flips, truncation,
//! inserted bytes, changed wire types), sent over a real WebSocket to a live server before
//! and after a valid Hello. The server must answer each with typed frames (an Error with a
//! known code, or the reply a still-valid frame gets) and either stay usable or close with a
//! code from device.proto's table for that phase; never a transport error, a reset or silence
//! (every read has a deadline).

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use prost::Message as _;
use syncline_proto::close_code;
use syncline_proto::v1::{self, ClientFrame, ErrorCode, ServerFrame, client_frame, hello, server_frame};
use syncline_tests::TestServer;
use tokio_tungstenite::tungstenite::Message;

/// Cases per run: each is a connection (and, after Hello, a password check), so a few dozen
/// keep the test to seconds.
const CASES: u32 = 128;
/// Longest wait for any one answer.
const READ_DEADLINE: Duration = Duration::from_secs(20);
/// Most messages read for one case: the replies to two frames (a snapshot page or two at most).
const MAX_MESSAGES: usize = 64;
/// The call id of the sentinel frame sent after the mutated one: its reply shows the session
/// handled the mutated frame and is still serving.
const SENTINEL: &str = "sentinel";

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn frame(msg: client_frame::Msg) -> ClientFrame {
    ClientFrame { msg: Some(msg) }
}

fn hello_frame() -> ClientFrame {
    frame(client_frame::Msg::Hello(v1::Hello {
        protocol_version: syncline_proto::PROTOCOL_VERSION,
        credentials: Some(hello::Credentials::Login(v1::Login { username: "ann".into(), password: "ann-pw".into() })),
        client_id: String::new(),
        device: Some(v1::DeviceInfo { platform: "ios".into(), app_version: "1.2".into(), model: "x".into() }),
    }))
}

/// One valid frame of each kind a device sends.
fn valid_frames() -> Vec<ClientFrame> {
    let fields = [
        ("name".to_owned(), v1::Value { kind: Some(v1::value::Kind::StringValue("n".into())) }),
        ("n".to_owned(), v1::Value { kind: Some(v1::value::Kind::IntValue(7)) }),
    ]
    .into_iter()
    .collect::<std::collections::BTreeMap<_, _>>();
    vec![
        hello_frame(),
        frame(client_frame::Msg::Subscribe(v1::Subscribe {
            source: "Account".into(),
            key: String::new(),
            cursor: 0,
            page_size: 10,
            window: 2,
        })),
        frame(client_frame::Msg::Ack(v1::Ack { source: "Account".into(), key: "*".into(), cursor: 3, page: 1 })),
        frame(client_frame::Msg::Pull(v1::Pull { source: "Account".into(), key: "*".into(), pages: 1 })),
        frame(client_frame::Msg::Unsubscribe(v1::Unsubscribe { source: "Account".into(), key: "*".into() })),
        frame(client_frame::Msg::Mutate(v1::Mutate {
            mutation_id: "m1".into(),
            source: "Contact".into(),
            key: String::new(),
            op: v1::MutationOp::Update as i32,
            id: "c1".into(),
            fields: fields.clone(),
            base_version: 1,
        })),
        frame(client_frame::Msg::Search(v1::Search {
            search_id: "s1".into(),
            source: "Contact".into(),
            params: fields,
            offset: 0,
            limit: 5,
        })),
        frame(client_frame::Msg::RpcCall(v1::RpcCall {
            call_id: "c1".into(),
            service: "orders".into(),
            method: "place".into(),
            payload: vec![1, 2, 3],
            deadline_ms: 500,
        })),
        frame(client_frame::Msg::BulkRequest(v1::BulkRequest {
            request_id: "b1".into(),
            sources: vec!["Account".into()],
            min_records: 10,
        })),
        frame(client_frame::Msg::Logout(v1::Logout {})),
    ]
}

/// A change to encoded bytes; positions wrap around the length.
#[derive(Clone, Debug)]
enum Mutation {
    FlipBit {
        at: usize,
        bit: u8,
    },
    Truncate {
        at: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    /// Rewrites the low three bits of a byte: on a field's key, its wire type (varint, fixed64,
    /// length-delimited, group start/end, fixed32, or the invalid 6 and 7).
    WireType {
        at: usize,
        wire_type: u8,
    },
}

impl Mutation {
    fn apply(&self, bytes: &mut Vec<u8>) {
        let len = bytes.len();
        match self {
            Mutation::FlipBit { at, bit } if len > 0 => bytes[at % len] ^= 1 << bit,
            Mutation::Truncate { at } => bytes.truncate(at % (len + 1)),
            Mutation::Insert { at, bytes: inserted } => {
                let at = at % (len + 1);
                bytes.splice(at..at, inserted.iter().copied());
            }
            // Key bytes sit at the start of the frame and of its message (after a one-byte
            // length for these small frames): aim there half the time.
            Mutation::WireType { at, wire_type } if len > 0 => {
                let at = if at % 2 == 0 { (at / 2 % 2 * 2).min(len - 1) } else { at % len };
                bytes[at] = (bytes[at] & !0b111) | (wire_type & 0b111);
            }
            Mutation::FlipBit { .. } | Mutation::WireType { .. } => {}
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 0u8..8).prop_map(|(at, wire_type)| Mutation::WireType { at, wire_type }),
    ]
}

#[derive(Clone, Debug)]
struct Case {
    frame: usize,
    mutations: Vec<Mutation>,
    after_hello: bool,
    json: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (0..valid_frames().len(), prop::collection::vec(mutation(), 1..4), any::<bool>(), any::<bool>())
        .prop_map(|(frame, mutations, after_hello, json)| Case { frame, mutations, after_hello, json })
}

/// Encodes a frame in the case's format.
fn message(frame: &ClientFrame, json: bool) -> Message {
    if json {
        Message::Text(serde_json::to_string(frame).expect("client frames serialize").into())
    } else {
        Message::Binary(frame.encode_to_vec().into())
    }
}

/// The mutated message: protobuf bytes, or JSON text (mutated as bytes, then made UTF-8 again
/// as a text frame must be).
fn mutated(case: &Case) -> Message {
    let valid = &valid_frames()[case.frame];
    let mut bytes = match message(valid, case.json) {
        Message::Binary(bytes) => bytes.to_vec(),
        Message::Text(text) => text.as_bytes().to_vec(),
        _ => unreachable!(),
    };
    for mutation in &case.mutations {
        mutation.apply(&mut bytes);
    }
    if case.json {
        Message::Text(String::from_utf8_lossy(&bytes).into_owned().into())
    } else {
        Message::Binary(bytes.into())
    }
}

/// What the server said next.
enum Heard {
    Frame(Box<server_frame::Msg>),
    Closed(u16),
}

async fn hear(socket: &mut Socket) -> Result<Heard, TestCaseError> {
    for _ in 0..MAX_MESSAGES {
        let next = tokio::time::timeout(READ_DEADLINE, socket.next())
            .await
            .map_err(|_| TestCaseError::fail("no answer within the deadline"))?;
        let frame = match next {
            Some(Ok(Message::Binary(bytes))) => ServerFrame::decode(bytes.as_ref())
                .map_err(|error| TestCaseError::fail(format!("undecodable binary frame: {error}")))?,
            Some(Ok(Message::Text(text))) => serde_json::from_str::<ServerFrame>(text.as_str())
                .map_err(|error| TestCaseError::fail(format!("undecodable text frame: {error}: {text}")))?,
            Some(Ok(Message::Close(Some(close)))) => return Ok(Heard::Closed(u16::from(close.code))),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => return Err(TestCaseError::fail(format!("transport error or close without a code: {other:?}"))),
        };
        let Some(msg) = frame.msg else { return Err(TestCaseError::fail("a server frame without a message")) };
        if let server_frame::Msg::Error(error) = &msg {
            let known = ErrorCode::try_from(error.code).is_ok_and(|code| code != ErrorCode::Unspecified);
            prop_assert!(known, "an Error frame with code {}: {error:?}", error.code);
        }
        return Ok(Heard::Frame(Box::new(msg)));
    }
    Err(TestCaseError::fail(format!("more than {MAX_MESSAGES} pings")))
}

/// Reads to the end of the exchange: the frame `done` accepts, or a close with a code
/// `allowed` holds. A fatal Error must be followed by the close.
async fn hear_until(
    socket: &mut Socket,
    allowed: &[u16],
    mut done: impl FnMut(&server_frame::Msg) -> bool,
) -> Result<(), TestCaseError> {
    let mut fatal = None;
    for _ in 0..MAX_MESSAGES {
        match hear(socket).await? {
            Heard::Closed(code) => {
                prop_assert!(allowed.contains(&code), "close code {code}, not one of {allowed:?} (after {fatal:?})");
                return Ok(());
            }
            Heard::Frame(msg) => {
                prop_assert!(fatal.is_none(), "a frame after a fatal error: {msg:?}");
                if let server_frame::Msg::Error(error) = &*msg
                    && error.fatal
                {
                    fatal = Some(error.clone());
                } else if done(&msg) {
                    return Ok(());
                }
            }
        }
    }
    Err(TestCaseError::fail(format!("no end within {MAX_MESSAGES} frames")))
}

async fn check(url: &str, case: &Case) -> Result<(), TestCaseError> {
    let (mut socket, _) =
        tokio_tungstenite::connect_async(url).await.map_err(|e| TestCaseError::fail(e.to_string()))?;
    let send_failed =
        |error: tokio_tungstenite::tungstenite::Error| TestCaseError::fail(format!("send failed: {error}"));
    if case.after_hello {
        socket.send(message(&hello_frame(), case.json)).await.map_err(send_failed)?;
        match hear(&mut socket).await? {
            Heard::Frame(msg) if matches!(*msg, server_frame::Msg::Welcome(_)) => {}
            Heard::Frame(other) => return Err(TestCaseError::fail(format!("expected Welcome, got {other:?}"))),
            Heard::Closed(code) => return Err(TestCaseError::fail(format!("closed {code} instead of Welcome"))),
        }
    }
    socket.send(mutated(case)).await.map_err(send_failed)?;
    if case.after_hello {
        // The sentinel's reply (no RPC services are configured: NOT_FOUND, or BAD_REQUEST if
        // the mutated frame was a call with the same id) shows the session is still serving.
        // Only a Logout ends it.
        let sentinel = frame(client_frame::Msg::RpcCall(v1::RpcCall {
            call_id: SENTINEL.into(),
            service: "nope".into(),
            method: "m".into(),
            ..v1::RpcCall::default()
        }));
        // Sending may fail only because a Logout already closed the session: the close
        // frame is read next either way.
        let _ = socket.send(message(&sentinel, case.json)).await;
        hear_until(
            &mut socket,
            &[close_code::NORMAL],
            |msg| matches!(msg, server_frame::Msg::RpcReply(reply) if reply.call_id == SENTINEL),
        )
        .await
    } else {
        // Before Hello the frame either starts the session or ends the connection: credentials
        // refused, a frame not understood or not a Hello, a protocol version not spoken.
        let allowed = [close_code::UNAUTHENTICATED, close_code::PROTOCOL_ERROR, close_code::UPGRADE_REQUIRED];
        hear_until(&mut socket, &allowed, |msg| matches!(msg, server_frame::Msg::Welcome(_))).await
    }
}

#[test]
fn mutated_frames_get_typed_answers_or_documented_closes() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let server = runtime.block_on(TestServer::start());
    server.add_user("ann", "ann-pw");
    let url = server.url();
    let config = Config { cases: CASES, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&case(), |case| runtime.block_on(check(&url, &case)));
    runtime.block_on(server.stop());
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
