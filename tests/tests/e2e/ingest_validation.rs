//! Issue 13: Ingest refuses what the protocol forbids with INVALID_ARGUMENT, never INTERNAL
//! and never by storing it: records outside the record limits (the message names the record
//! and the field), batches over the change limit, and requests that do not decode.

use bytes::BufMut as _;
use prost::Message as _;
use syncline_proto::record::{MAX_FIELD_NAME_BYTES, MAX_RECORD_BYTES, MAX_RECORD_FIELDS, MAX_RECORD_ID_BYTES};
use syncline_proto::v1::{PushRequest, PushResponse, Record, Value};
use syncline_server::storage::MAX_BATCH_CHANGES;
use syncline_tests::{TestServer, push, record, server_view};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};

fn with_fields(id: &str, fields: impl IntoIterator<Item = (String, Value)>) -> Record {
    Record { id: id.to_owned(), fields: fields.into_iter().collect(), version: 0 }
}

fn with_field(id: &str, name: &str, value: Value) -> Record {
    with_fields(id, [(name.to_owned(), value)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_outside_the_limits_are_invalid_arguments_naming_record_and_field() {
    let server = TestServer::start().await;
    let mut ingest = server.ingest_client().await;
    let many_fields = (0..=MAX_RECORD_FIELDS).map(|n| (format!("f{n}"), Value::int(1)));
    let cases: Vec<(&str, Record, Vec<String>)> = vec![
        ("empty field name", with_field("r1", "", Value::int(1)), vec!["\"r1\"".into(), "empty name".into()]),
        (
            "value without a kind",
            with_field("r2", "score", Value { kind: None }),
            vec!["\"r2\"".into(), "\"score\"".into(), "no value".into()],
        ),
        (
            "long field name",
            with_field("r3", &"n".repeat(MAX_FIELD_NAME_BYTES + 1), Value::int(1)),
            vec!["\"r3\"".into(), format!("{} bytes", MAX_FIELD_NAME_BYTES + 1)],
        ),
        (
            "too many fields",
            with_fields("r4", many_fields),
            vec!["\"r4\"".into(), format!("{} fields", MAX_RECORD_FIELDS + 1)],
        ),
        (
            "too large",
            with_field("r5", "blob", Value::bytes(vec![0; MAX_RECORD_BYTES])),
            vec!["\"r5\"".into(), format!("more than {MAX_RECORD_BYTES}")],
        ),
        ("empty id", record("", 1), vec!["invalid record id".into()]),
        (
            "long id",
            record(&"x".repeat(MAX_RECORD_ID_BYTES + 1), 1),
            vec![format!("{} bytes", MAX_RECORD_ID_BYTES + 1)],
        ),
    ];
    for (case, invalid, mentions) in cases {
        // A valid record beside the invalid one: the batch is refused whole.
        let status = push(&mut ingest, "Account", "*", vec![record("fine", 1), invalid], vec![]).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
        for part in mentions {
            assert!(status.message().contains(&part), "{case}: {:?} does not mention {part}", status.message());
        }
    }
    let status = push(&mut ingest, "Account", "*", vec![record("fine", 1)], vec![String::new()]).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "an empty deleted id: {status:?}");
    assert!(status.message().contains("invalid record id"), "{}", status.message());
    let (records, state) = server_view(&server, "Account", "*");
    assert!(records.is_empty() && state.head == 0, "nothing of a refused batch is stored: {records:?}");

    // Records at the limits, and the batch limit itself.
    let widest =
        (0..MAX_RECORD_FIELDS).map(|n| (format!("{n:0>width$}", width = MAX_FIELD_NAME_BYTES), Value::int(n as i64)));
    let large = with_field("large", "blob", Value::bytes(vec![0; MAX_RECORD_BYTES - 1_000]));
    let at_limits = vec![with_fields(&"i".repeat(MAX_RECORD_ID_BYTES), widest), large];
    assert_eq!(push(&mut ingest, "Account", "*", at_limits, vec![]).await.expect("records at the limits").applied, 2);
    let deletes: Vec<String> = (0..=MAX_BATCH_CHANGES).map(|n| format!("d{n}")).collect();
    let status = push(&mut ingest, "Account", "*", vec![], deletes).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains(&MAX_BATCH_CHANGES.to_string()), "{}", status.message());
    server.stop().await;
}

/// Sends a request message as raw bytes (so tests can send what no encoder would) and reads
/// the answer as a `PushResponse`.
#[derive(Clone, Copy, Default)]
struct RawRequests;

struct RawEncoder;

struct PushResponseDecoder;

impl Codec for RawRequests {
    type Encode = Vec<u8>;
    type Decode = PushResponse;
    type Encoder = RawEncoder;
    type Decoder = PushResponseDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> PushResponseDecoder {
        PushResponseDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for PushResponseDecoder {
    type Item = PushResponse;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<PushResponse>, Status> {
        PushResponse::decode(buf).map(Some).map_err(|error| Status::data_loss(error.to_string()))
    }
}

async fn raw_push(server: &TestServer, message: Vec<u8>) -> Result<PushResponse, Status> {
    let channel = tonic::transport::Endpoint::from_shared(server.server.grpc_url())
        .expect("gRPC URL")
        .connect()
        .await
        .expect("gRPC connects");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("gRPC ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/syncline.v1.Ingest/Push");
    grpc.unary(tonic::Request::new(message), path, RawRequests).await.map(tonic::Response::into_inner)
}

/// Returns the length-delimited field `number` holding `bytes`.
fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
    let mut encoded = vec![(number << 3) | 2];
    prost::encoding::encode_varint(bytes.len() as u64, &mut encoded);
    encoded.extend_from_slice(bytes);
    encoded
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_requests_are_invalid_arguments_not_internal_errors() {
    let server = TestServer::start().await;
    // The raw client works: a well-formed request goes through.
    let valid = PushRequest { source: "Account".into(), upserts: vec![record("a1", 1)], ..PushRequest::default() };
    assert_eq!(raw_push(&server, valid.encode_to_vec()).await.expect("a valid request").applied, 1);

    // A field name in a record's map that is not UTF-8: PushRequest.upserts[0].fields key.
    let entry = [field(1, &[0xff, 0xfe]), field(2, &Value::int(1).encode_to_vec())].concat();
    let record = [field(1, b"r1"), field(2, &entry)].concat();
    let bad_field_name = [field(1, b"Account"), field(3, &record)].concat();
    let cases = [
        ("source not UTF-8", field(1, &[0xc3, 0x28]), "PushRequest.source"),
        ("record field name not UTF-8", bad_field_name, "UTF-8"),
        ("truncated", vec![0x0a, 0x10, b'A'], "the request is not a valid protobuf message"),
        ("garbage", vec![0xff; 8], "the request is not a valid protobuf message"),
    ];
    for (case, message, expected) in cases {
        let status = raw_push(&server, message).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
        assert!(status.message().contains(expected), "{case}: {:?} does not mention {expected}", status.message());
    }
    let (records, _) = server_view(&server, "Account", "*");
    assert_eq!(records.keys().collect::<Vec<_>>(), ["a1"]);
    server.stop().await;
}
