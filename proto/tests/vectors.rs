//! The shared conformance vectors of the device protocol (`proto/vectors/device-v1.json`):
//! frames in binary protobuf (hex) and canonical JSON, records with every value type, and
//! checksums. Device libraries in other languages check themselves against the same file
//! (the TypeScript one in `clients/typescript/test/vectors.test.ts`), so they cannot drift
//! apart from this crate.
//!
//! This test builds the vectors from the Rust types and compares them with the file; it also
//! decodes every entry of the file back. After a deliberate protocol change, rewrite the file
//! with `SYNCLINE_WRITE_VECTORS=1 cargo test -p syncline-proto --test vectors`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use prost::Message;
use serde_json::{Value as Json, json};
use syncline_proto::checksum::{Checksum, record_hash};
use syncline_proto::v1::{
    Ack, Blob, Changes, ClientFrame, Command, CommandAck, CommandKind, DeviceInfo, Error as ErrorFrame, ErrorCode,
    Hello, Link, Login, Logout, Mutate, MutationAck, MutationError, MutationOp, MutationResult, Pull, Record, RpcCall,
    RpcReply, Search, SearchResult, ServerFrame, SourceInfo, Subscribe, SyncState, SyncStatus, Value, Welcome,
    client_frame, hello, rpc_reply, server_frame,
};

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vectors/device-v1.json")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex digits")).collect()
}

/// Values of every kind, the edge cases of each included.
fn every_value() -> BTreeMap<String, Value> {
    BTreeMap::from([
        ("a_text".to_owned(), Value::string("Acme ✓ 🦀")),
        ("b_empty_text".to_owned(), Value::string("")),
        ("c_int".to_owned(), Value::int(-42)),
        ("d_int_max".to_owned(), Value::int(i64::MAX)),
        ("e_int_min".to_owned(), Value::int(i64::MIN)),
        ("f_int_zero".to_owned(), Value::int(0)),
        ("g_double".to_owned(), Value::double(12_500.5)),
        ("h_double_small".to_owned(), Value::double(0.1)),
        ("i_double_large".to_owned(), Value::double(1e300)),
        ("j_nan".to_owned(), Value::double(f64::NAN)),
        ("k_infinity".to_owned(), Value::double(f64::INFINITY)),
        ("l_negative_infinity".to_owned(), Value::double(f64::NEG_INFINITY)),
        ("m_true".to_owned(), Value::bool(true)),
        ("n_false".to_owned(), Value::bool(false)),
        ("o_bytes".to_owned(), Value::bytes(vec![0, 1, 2, 250, 251, 255])),
        ("p_empty_bytes".to_owned(), Value::bytes(Vec::new())),
        ("q_null".to_owned(), Value::null()),
        (
            "r_blob".to_owned(),
            Value::blob(Blob {
                hash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".to_owned(),
                size: 4,
                media_type: "text/plain".to_owned(),
                name: "test.txt".to_owned(),
            }),
        ),
        (
            "s_blob_unnamed".to_owned(),
            Value::blob(Blob {
                hash: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".to_owned(),
                size: 0,
                media_type: "application/octet-stream".to_owned(),
                name: String::new(),
            }),
        ),
    ])
}

fn record(id: &str, version: u64, fields: BTreeMap<String, Value>) -> Record {
    Record { id: id.to_owned(), fields, version }
}

fn client(msg: client_frame::Msg) -> ClientFrame {
    ClientFrame { msg: Some(msg) }
}

fn server(msg: server_frame::Msg) -> ServerFrame {
    ServerFrame { msg: Some(msg) }
}

fn client_frames() -> Vec<(&'static str, ClientFrame)> {
    let device = Some(DeviceInfo { platform: "web".into(), app_version: "1.2.3".into(), model: "Chromium".into() });
    vec![
        (
            "hello_password",
            client(client_frame::Msg::Hello(Hello {
                protocol_version: 1,
                credentials: Some(hello::Credentials::Login(Login {
                    username: "demo".into(),
                    password: "demo".into(),
                })),
                client_id: "c-1".into(),
                device: device.clone(),
            })),
        ),
        (
            "hello_session_token",
            client(client_frame::Msg::Hello(Hello {
                protocol_version: 1,
                credentials: Some(hello::Credentials::SessionToken("st.abc".into())),
                client_id: String::new(),
                device: device.clone(),
            })),
        ),
        (
            "hello_backend_token",
            client(client_frame::Msg::Hello(Hello {
                protocol_version: 1,
                credentials: Some(hello::Credentials::BackendToken("eyJ.x.y".into())),
                client_id: String::new(),
                device,
            })),
        ),
        (
            "subscribe",
            client(client_frame::Msg::Subscribe(Subscribe {
                source: "Account".into(),
                key: "*".into(),
                cursor: u64::MAX - 1,
                page_size: 500,
                window: 4,
            })),
        ),
        (
            "ack",
            client(client_frame::Msg::Ack(Ack { source: "Account".into(), key: "*".into(), cursor: 2001, page: 5 })),
        ),
        ("pull", client(client_frame::Msg::Pull(Pull { source: "Contact".into(), key: "demo".into(), pages: 1 }))),
        (
            "mutate_create",
            client(client_frame::Msg::Mutate(Mutate {
                mutation_id: "0123456789abcdef0123456789abcdef".into(),
                source: "Account".into(),
                key: String::new(),
                op: MutationOp::Create as i32,
                id: "tmp-1".into(),
                fields: every_value(),
                base_version: 0,
            })),
        ),
        (
            "mutate_update",
            client(client_frame::Msg::Mutate(Mutate {
                mutation_id: "m-2".into(),
                source: "Account".into(),
                key: "*".into(),
                op: MutationOp::Update as i32,
                id: "acc-7".into(),
                fields: BTreeMap::from([("name".to_owned(), Value::string("Renamed"))]),
                base_version: 17,
            })),
        ),
        (
            "mutate_delete",
            client(client_frame::Msg::Mutate(Mutate {
                mutation_id: "m-3".into(),
                source: "Account".into(),
                key: "*".into(),
                op: MutationOp::Delete as i32,
                id: "acc-8".into(),
                fields: BTreeMap::new(),
                base_version: 3,
            })),
        ),
        (
            "search",
            client(client_frame::Msg::Search(Search {
                search_id: "s1".into(),
                source: "Account".into(),
                params: BTreeMap::from([("name".to_owned(), Value::string("Acme")), ("min".to_owned(), Value::int(3))]),
                offset: 10,
                limit: 20,
            })),
        ),
        (
            "rpc_call",
            client(client_frame::Msg::RpcCall(RpcCall {
                call_id: "call-1".into(),
                service: "crm".into(),
                method: "CloseDeal".into(),
                payload: br#"{"account":"acc-1"}"#.to_vec(),
                deadline_ms: 5000,
            })),
        ),
        ("logout", client(client_frame::Msg::Logout(Logout {}))),
        (
            "command_ack",
            client(client_frame::Msg::CommandAck(CommandAck { command_id: "3f9a0c1e5b7d2846a1c0e9f8b7a6d5c4".into() })),
        ),
    ]
}

fn server_frames() -> Vec<(&'static str, ServerFrame)> {
    let snapshot_records = vec![record("acc-1", 1, every_value()), record("acc-2", 2, BTreeMap::new())];
    let mut checksum = Checksum::default();
    checksum.add("acc-1", 1);
    checksum.add("acc-2", 2);
    vec![
        (
            "welcome",
            server(server_frame::Msg::Welcome(Welcome {
                client_id: "c-1".into(),
                session_token: "st.abc".into(),
                user_id: "demo".into(),
                token_expires_at_ms: 1_767_225_600_000,
                heartbeat_ms: 15_000,
                idle_timeout_ms: 60_000,
                max_frame_bytes: 1_048_576,
                max_page_size: 1000,
                max_window: 16,
                sources: vec![
                    SourceInfo { name: "Account".into(), partitioning: "app".into(), keys: vec!["*".into()] },
                    SourceInfo { name: "Contact".into(), partitioning: "user".into(), keys: vec!["demo".into()] },
                ],
                max_page_bytes: 262_144,
            })),
        ),
        (
            "changes_snapshot_first_page",
            server(server_frame::Msg::Changes(Changes {
                source: "Account".into(),
                key: "*".into(),
                from: 0,
                to: 2,
                upserts: snapshot_records,
                deletes: Vec::new(),
                total: 2,
                remaining: 0,
                links: Vec::new(),
                page: 1,
                snapshot: true,
                reset: true,
                snapshot_done: true,
                checksum: 0,
            })),
        ),
        (
            "changes_log_page",
            server(server_frame::Msg::Changes(Changes {
                source: "Account".into(),
                key: "*".into(),
                from: 3,
                to: 4,
                upserts: vec![record("acc-9", 4, BTreeMap::from([("name".to_owned(), Value::string("New"))]))],
                deletes: vec!["acc-2".into()],
                total: 2,
                remaining: 0,
                links: vec![Link { temp_id: "tmp-1".into(), id: "acc-9".into() }],
                page: 2,
                snapshot: false,
                reset: false,
                snapshot_done: false,
                checksum: u64::MAX - 7,
            })),
        ),
        (
            "sync_state_caught_up",
            server(server_frame::Msg::SyncState(SyncState {
                source: "Account".into(),
                key: "*".into(),
                status: SyncStatus::CaughtUp as i32,
                cursor: 2,
                total: 2,
                checksum: checksum.0,
                error: None,
            })),
        ),
        (
            "sync_state_schema_changed",
            server(server_frame::Msg::SyncState(SyncState {
                source: "Contact".into(),
                key: "ann".into(),
                status: SyncStatus::SchemaChanged as i32,
                cursor: 0,
                total: 0,
                checksum: 0,
                error: None,
            })),
        ),
        (
            "sync_state_error",
            server(server_frame::Msg::SyncState(SyncState {
                source: "Secret".into(),
                key: "*".into(),
                status: SyncStatus::Error as i32,
                cursor: 0,
                total: 0,
                checksum: 0,
                error: Some(ErrorFrame {
                    code: ErrorCode::UnknownSource as i32,
                    message: "no source Secret".into(),
                    fatal: false,
                    source: "Secret".into(),
                    key: "*".into(),
                }),
            })),
        ),
    ]
    .into_iter()
    .chain(reply_frames())
    .collect()
}

/// Server frames that answer a device's requests or tell it something: acks, results,
/// replies, commands, errors.
fn reply_frames() -> Vec<(&'static str, ServerFrame)> {
    vec![
        ("mutation_ack", server(server_frame::Msg::MutationAck(MutationAck { mutation_id: "m-2".into(), queued: 7 }))),
        (
            "mutation_result_ok",
            server(server_frame::Msg::MutationResult(MutationResult {
                mutation_id: "0123456789abcdef0123456789abcdef".into(),
                ok: true,
                record: Some(record("acc-9", 0, BTreeMap::from([("name".to_owned(), Value::string("New"))]))),
                link: Some(Link { temp_id: "tmp-1".into(), id: "acc-9".into() }),
                error: None,
            })),
        ),
        (
            "mutation_result_conflict",
            server(server_frame::Msg::MutationResult(MutationResult {
                mutation_id: "m-2".into(),
                ok: false,
                record: None,
                link: None,
                error: Some(MutationError {
                    op: MutationOp::Update as i32,
                    code: ErrorCode::Conflict as i32,
                    message: "changed meanwhile".into(),
                    current: Some(record("acc-7", 21, BTreeMap::from([("name".to_owned(), Value::string("Theirs"))]))),
                }),
            })),
        ),
        (
            "search_result",
            server(server_frame::Msg::SearchResult(SearchResult {
                search_id: "s1".into(),
                records: vec![record("acc-1", 1, BTreeMap::from([("name".to_owned(), Value::string("Acme 1"))]))],
                total: 12,
                error: None,
                merge_key: "*".into(),
            })),
        ),
        (
            "rpc_reply_payload",
            server(server_frame::Msg::RpcReply(RpcReply {
                call_id: "call-1".into(),
                result: Some(rpc_reply::Result::Payload(br#"{"closed":true}"#.to_vec())),
            })),
        ),
        (
            "rpc_reply_error",
            server(server_frame::Msg::RpcReply(RpcReply {
                call_id: "call-2".into(),
                result: Some(rpc_reply::Result::Error(ErrorFrame {
                    code: ErrorCode::NotFound as i32,
                    message: "no method Nope [NOT_FOUND]".into(),
                    fatal: false,
                    source: String::new(),
                    key: String::new(),
                })),
            })),
        ),
        (
            "command_wipe",
            server(server_frame::Msg::Command(Command {
                kind: CommandKind::Wipe as i32,
                reason: "lost device".into(),
                command_id: "3f9a0c1e5b7d2846a1c0e9f8b7a6d5c4".into(),
            })),
        ),
        (
            "error_fatal",
            server(server_frame::Msg::Error(ErrorFrame {
                code: ErrorCode::Unauthenticated as i32,
                message: "wrong username or password".into(),
                fatal: true,
                source: String::new(),
                key: String::new(),
            })),
        ),
    ]
}

fn checksum_vectors() -> Json {
    let cases: [(&str, u64); 6] =
        [("", 0), ("acc-1", 1), ("acc-1", 2), ("Ünïcode ✓ 🦀", 1 << 40), ("x", u64::MAX), ("a\u{0}b", 12_345_678_901)];
    let hashes: Vec<Json> = cases
        .iter()
        .map(|(id, version)| json!({"id": id, "version": version.to_string(), "hash": record_hash(id, *version).to_string()}))
        .collect();
    // A partition's checksum wraps around 2^64: many records make sure it does.
    let records: Vec<(String, u64)> = (1..=50u64).map(|n| (format!("acc-{n}"), n * 3)).collect();
    let mut sum = Checksum::default();
    for (id, version) in &records {
        sum.add(id, *version);
    }
    let records: Vec<Json> =
        records.iter().map(|(id, version)| json!({"id": id, "version": version.to_string()})).collect();
    json!({"records": hashes, "partition": {"records": records, "checksum": sum.0.to_string()}})
}

fn frame_vector<M: Message + serde::Serialize>(name: &str, message: &M) -> Json {
    json!({"name": name, "binary": hex(&message.encode_to_vec()), "json": serde_json::to_value(message).expect("json")})
}

fn build_vectors() -> Json {
    json!({
        "about": "Shared conformance vectors of the Syncline device protocol v1: frames as binary protobuf (hex) and canonical JSON, records with every value type, and record and partition checksums (u64 as decimal strings). Generated by proto/tests/vectors.rs; checked by the Rust and TypeScript tests.",
        "client_frames": client_frames().iter().map(|(name, frame)| frame_vector(name, frame)).collect::<Vec<_>>(),
        "server_frames": server_frames().iter().map(|(name, frame)| frame_vector(name, frame)).collect::<Vec<_>>(),
        "checksums": checksum_vectors(),
    })
}

/// The vectors of the file; while it is being rewritten (tests run in parallel), the built ones.
fn load_vectors() -> Json {
    if std::env::var_os("SYNCLINE_WRITE_VECTORS").is_some() {
        return build_vectors();
    }
    let text = std::fs::read_to_string(vectors_path()).expect("the vectors file");
    serde_json::from_str(&text).expect("the vectors file is JSON")
}

#[test]
fn the_vectors_file_matches_the_rust_types() {
    let built = build_vectors();
    let path = vectors_path();
    if std::env::var_os("SYNCLINE_WRITE_VECTORS").is_some() {
        let text = serde_json::to_string_pretty(&built).expect("json") + "\n";
        std::fs::write(&path, text).expect("write the vectors");
    }
    let text = std::fs::read_to_string(&path).expect("the vectors file exists (SYNCLINE_WRITE_VECTORS=1 writes it)");
    let stored: Json = serde_json::from_str(&text).expect("the vectors file is JSON");
    assert!(stored == built, "proto/vectors/device-v1.json is out of date: rerun with SYNCLINE_WRITE_VECTORS=1");
}

fn check_frames<M>(entries: &Json)
where
    M: Message + Default + PartialEq + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    for entry in entries.as_array().expect("an array of frames") {
        let name = entry["name"].as_str().expect("a name");
        let binary = unhex(entry["binary"].as_str().expect("hex"));
        let decoded = M::decode(binary.as_slice()).unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(hex(&decoded.encode_to_vec()), hex(&binary), "{name}: binary round trip");
        let from_json: M =
            serde_json::from_value(entry["json"].clone()).unwrap_or_else(|error| panic!("{name}: {error}"));
        // NaN != NaN: compare encodings, not values.
        assert_eq!(hex(&from_json.encode_to_vec()), hex(&binary), "{name}: JSON and binary agree");
        assert_eq!(serde_json::to_value(&decoded).expect("json"), entry["json"], "{name}: JSON round trip");
    }
}

#[test]
fn every_frame_of_the_file_decodes_and_reencodes_the_same() {
    let vectors = load_vectors();
    check_frames::<ClientFrame>(&vectors["client_frames"]);
    check_frames::<ServerFrame>(&vectors["server_frames"]);
    let frames = vectors["client_frames"].as_array().expect("frames").len()
        + vectors["server_frames"].as_array().expect("frames").len();
    assert!(frames >= 20, "the file covers every frame kind");
}

#[test]
fn the_checksums_of_the_file_are_the_crates() {
    let vectors = load_vectors();
    let number = |value: &Json| value.as_str().expect("a decimal string").parse::<u64>().expect("a u64");
    for case in vectors["checksums"]["records"].as_array().expect("records") {
        let id = case["id"].as_str().expect("id");
        assert_eq!(record_hash(id, number(&case["version"])), number(&case["hash"]), "{id}");
    }
    let partition = &vectors["checksums"]["partition"];
    let mut sum = Checksum::default();
    for case in partition["records"].as_array().expect("records") {
        sum.add(case["id"].as_str().expect("id"), number(&case["version"]));
    }
    assert_eq!(sum.0, number(&partition["checksum"]));
}
