use proptest::prelude::*;
use prost::encoding::{WireType, encode_key, encode_varint};
use syncline_proto::v1::{Error, Link, NullValue, Record, SyncState, Value, Welcome, server_frame::Msg, value::Kind};

use super::*;
use crate::probe::probe_name;

/// The accounting inputs of the full decode: `ServerFrame::decode`, then `parse_probe` over
/// every record (through [`LeanFrame::from_frame`]).
fn full(bytes: &[u8]) -> Result<LeanFrame, DecodeError> {
    ServerFrame::decode(bytes).map(LeanFrame::from_frame)
}

fn changes_frame(changes: Changes) -> ServerFrame {
    ServerFrame { msg: Some(Msg::Changes(changes)) }
}

fn record(id: &str, fields: &[(&str, Value)]) -> Record {
    let fields = fields.iter().map(|(name, value)| ((*name).to_owned(), value.clone())).collect();
    Record { id: id.to_owned(), fields, version: 7 }
}

fn probe_record(id: &str, run: i64, sent_ns: i64) -> Record {
    record(id, &[(RUN_FIELD, Value::int(run)), (SENT_NS_FIELD, Value::int(sent_ns)), ("seq", Value::int(1))])
}

/// Returns the bytes of a `ServerFrame` with one `Changes` message whose upserts are given as
/// encoded `Record` bytes (so a test can merge several records into one).
fn frame_with_raw_upserts(upserts: &[Vec<u8>]) -> Vec<u8> {
    let mut changes = Changes { key: "*".into(), from: 3, to: 4, ..Changes::default() }.encode_to_vec();
    for upsert in upserts {
        encode_key(5, WireType::LengthDelimited, &mut changes);
        encode_varint(upsert.len() as u64, &mut changes);
        changes.extend_from_slice(upsert);
    }
    let mut frame = Vec::new();
    encode_key(2, WireType::LengthDelimited, &mut frame);
    encode_varint(changes.len() as u64, &mut frame);
    frame.extend_from_slice(&changes);
    frame
}

#[test]
fn a_live_push_keeps_its_range_and_its_probes_only() {
    let changes = Changes {
        source: "Account".into(),
        key: "*".into(),
        from: 10,
        to: 12,
        upserts: vec![
            probe_record("a", 5, 100),
            record("plain", &[("name", Value::string("Acme Corp"))]),
            record("named", &[("name", Value::string(probe_name(6, 200, 1)))]),
        ],
        deletes: vec!["gone".into()],
        total: 99,
        checksum: 0xdead_beef,
        ..Changes::default()
    };
    let bytes = changes_frame(changes).encode_to_vec();
    let lean = LeanFrame::decode(&bytes).unwrap();
    let expected = LeanChanges {
        key: "*".into(),
        from: 10,
        to: 12,
        probes: vec![Probe { run: 5, sent_ns: 100 }, Probe { run: 6, sent_ns: 200 }],
        ..LeanChanges::default()
    };
    assert_eq!(lean, LeanFrame::Changes(expected));
    assert_eq!(lean, full(&bytes).unwrap());
}

#[test]
fn other_frames_and_empty_frames_are_decoded_in_full() {
    let sync = SyncState { source: "Account".into(), status: 2, cursor: 9, ..SyncState::default() };
    let frame = ServerFrame { msg: Some(Msg::SyncState(sync.clone())) };
    assert_eq!(LeanFrame::decode(&frame.encode_to_vec()).unwrap(), LeanFrame::Other(Msg::SyncState(sync)));
    assert_eq!(LeanFrame::decode(&[]).unwrap(), LeanFrame::Empty);
}

#[test]
fn of_repeated_keys_the_last_entry_counts_and_repeated_values_merge() {
    let part = |fields: &[(&str, Value)]| record("r", fields).encode_to_vec();
    let no_kind = Value { kind: None };
    let cases = [
        // A later `run` that is not an int hides the earlier int.
        (
            vec![
                part(&[(RUN_FIELD, Value::int(1)), (SENT_NS_FIELD, Value::int(2))]),
                part(&[(RUN_FIELD, Value::string("1"))]),
            ],
            None,
        ),
        (
            vec![part(&[(RUN_FIELD, Value::int(1)), (SENT_NS_FIELD, Value::int(2))]), part(&[(RUN_FIELD, no_kind)])],
            None,
        ),
        // A later int replaces an earlier one.
        (
            vec![
                part(&[(RUN_FIELD, Value::int(1)), (SENT_NS_FIELD, Value::int(2))]),
                part(&[(SENT_NS_FIELD, Value::int(3))]),
            ],
            Some(Probe { run: 1, sent_ns: 3 }),
        ),
        // A name probe made of two merged parts.
        (
            vec![part(&[(RUN_FIELD, Value::int(1))]), part(&[("name", Value::string(probe_name(4, 5, 6)))])],
            Some(Probe { run: 4, sent_ns: 5 }),
        ),
    ];
    for (parts, probe) in cases {
        let bytes = frame_with_raw_upserts(&[parts.concat()]);
        let LeanFrame::Changes(lean) = LeanFrame::decode(&bytes).unwrap() else { panic!("changes") };
        assert_eq!(lean.probes, probe.into_iter().collect::<Vec<_>>());
        assert_eq!(LeanFrame::Changes(lean), full(&bytes).unwrap());
    }
    // Within one entry, a second value message without a kind keeps the first one's kind.
    let mut entry = Vec::new();
    prost::encoding::string::encode(1, &RUN_FIELD.to_owned(), &mut entry);
    prost::encoding::message::encode(2, &Value::int(8), &mut entry);
    prost::encoding::message::encode(2, &Value { kind: None }, &mut entry);
    let mut upsert = part(&[(SENT_NS_FIELD, Value::int(9))]);
    encode_key(2, WireType::LengthDelimited, &mut upsert);
    encode_varint(entry.len() as u64, &mut upsert);
    upsert.extend_from_slice(&entry);
    let bytes = frame_with_raw_upserts(&[upsert]);
    let LeanFrame::Changes(lean) = LeanFrame::decode(&bytes).unwrap() else { panic!("changes") };
    assert_eq!(lean.probes, [Probe { run: 8, sent_ns: 9 }]);
    assert_eq!(LeanFrame::Changes(lean), full(&bytes).unwrap());
}

#[test]
fn a_name_probe_that_is_not_utf8_fails_as_the_full_decode_does() {
    let mut upsert = record("r", &[]).encode_to_vec();
    let mut entry = Vec::new();
    prost::encoding::string::encode(1, &PROBE_NAME_FIELD.to_owned(), &mut entry);
    let mut value = Vec::new();
    encode_key(1, WireType::LengthDelimited, &mut value);
    encode_varint(2, &mut value);
    value.extend_from_slice(&[0xc3, 0x28]);
    encode_key(2, WireType::LengthDelimited, &mut entry);
    encode_varint(value.len() as u64, &mut entry);
    entry.extend_from_slice(&value);
    encode_key(2, WireType::LengthDelimited, &mut upsert);
    encode_varint(entry.len() as u64, &mut upsert);
    upsert.extend_from_slice(&entry);
    let bytes = frame_with_raw_upserts(&[upsert]);
    let full_error = full(&bytes).unwrap_err();
    assert_eq!(LeanFrame::decode(&bytes).unwrap_err().to_string(), full_error.to_string());
}

#[test]
fn json_frames_reduce_to_what_binary_frames_give() {
    let frame = changes_frame(Changes {
        key: "u1".into(),
        from: 1,
        to: 1,
        upserts: vec![probe_record("a", 1, 2)],
        ..Changes::default()
    });
    let json: ServerFrame = serde_json::from_str(&serde_json::to_string(&frame).unwrap()).unwrap();
    assert_eq!(LeanFrame::from_frame(json), LeanFrame::decode(&frame.encode_to_vec()).unwrap());
}

// Strategies: records and frames shaped like the server's, with probe fields (ints, names,
// look-alikes of other kinds) often enough that most records are probes or near misses.

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(RUN_FIELD.to_owned()),
        3 => Just(SENT_NS_FIELD.to_owned()),
        3 => Just(PROBE_NAME_FIELD.to_owned()),
        1 => Just("seq".to_owned()),
        1 => "[a-z_]{0,8}",
    ]
}

fn probe_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (any::<i64>(), any::<u64>(), any::<u64>()).prop_map(|(run, sent_ns, seq)| probe_name(run, sent_ns, seq)),
        "syncline-sim probe( (run|sent_ns|seq|x)=-?[0-9]{0,3})*",
        ".{0,12}",
    ]
}

fn value() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![
        probe_text().prop_map(Kind::StringValue),
        any::<i64>().prop_map(Kind::IntValue),
        (-3i64..3).prop_map(Kind::IntValue),
        any::<f64>().prop_map(Kind::DoubleValue),
        any::<bool>().prop_map(Kind::BoolValue),
        probe_text().prop_map(|text| Kind::BytesValue(text.into_bytes())),
        Just(Kind::NullValue(NullValue::NullValue as i32)),
    ];
    proptest::option::weighted(0.9, kind).prop_map(|kind| Value { kind })
}

fn arbitrary_record() -> impl Strategy<Value = Record> {
    let fields = proptest::collection::btree_map(field_name(), value(), 0..6);
    ("[a-z0-9-]{0,12}", fields, any::<u64>()).prop_map(|(id, fields, version)| Record { id, fields, version })
}

fn int_probe_record() -> impl Strategy<Value = Record> {
    (arbitrary_record(), any::<i64>(), any::<i64>()).prop_map(|(mut record, run, sent_ns)| {
        record.fields.insert(RUN_FIELD.to_owned(), Value::int(run));
        record.fields.insert(SENT_NS_FIELD.to_owned(), Value::int(sent_ns));
        record
    })
}

fn changes() -> impl Strategy<Value = Changes> {
    let upserts = proptest::collection::vec(prop_oneof![arbitrary_record(), int_probe_record()], 0..40);
    let deletes = proptest::collection::vec("[a-z]{0,6}", 0..3);
    let links =
        proptest::collection::vec(("[a-z]{0,4}", "[a-z]{0,4}").prop_map(|(temp_id, id)| Link { temp_id, id }), 0..2);
    let numbers = (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>());
    let flags = (any::<bool>(), any::<bool>(), any::<bool>());
    ("[A-Za-z]{0,8}", "[a-z0-9*-]{0,8}", upserts, deletes, links, numbers, flags).prop_map(
        |(source, key, upserts, deletes, links, numbers, flags)| {
            let (from, to, total, remaining, page, checksum, _) = numbers;
            let (snapshot, reset, snapshot_done) = flags;
            Changes {
                source,
                key,
                from,
                to,
                upserts,
                deletes,
                total,
                remaining,
                links,
                page: page % 4,
                snapshot,
                reset,
                snapshot_done,
                checksum,
            }
        },
    )
}

fn frame() -> impl Strategy<Value = ServerFrame> {
    let msg = prop_oneof![
        8 => changes().prop_map(Msg::Changes),
        1 => (0i32..5, any::<u64>()).prop_map(|(status, cursor)| Msg::SyncState(SyncState { status, cursor, ..SyncState::default() })),
        1 => (any::<bool>(), ".{0,8}").prop_map(|(fatal, message)| Msg::Error(Error { code: 6, message, fatal, ..Error::default() })),
        1 => "[a-z]{0,8}".prop_map(|session_token| Msg::Welcome(Welcome { session_token, ..Welcome::default() })),
    ];
    proptest::option::weighted(0.95, msg).prop_map(|msg| ServerFrame { msg })
}

proptest! {
    #[test]
    fn the_lean_decode_gives_what_the_full_decode_and_parse_probe_give(frame in frame()) {
        let bytes = frame.encode_to_vec();
        let lean = LeanFrame::decode(&bytes).unwrap();
        if let (LeanFrame::Changes(lean), Some(Msg::Changes(changes))) = (&lean, &frame.msg) {
            let probes: Vec<Probe> = changes.upserts.iter().filter_map(parse_probe).collect();
            prop_assert_eq!(&lean.probes, &probes);
        }
        prop_assert_eq!(&lean, &full(&bytes).unwrap());
        prop_assert_eq!(lean, LeanFrame::from_frame(frame));
    }

    #[test]
    fn concatenated_frames_merge_as_in_the_full_decode(first in frame(), second in frame()) {
        // Two encoded messages back to back decode as their merge.
        let bytes = [first.encode_to_vec(), second.encode_to_vec()].concat();
        prop_assert_eq!(LeanFrame::decode(&bytes).unwrap(), full(&bytes).unwrap());
    }

    #[test]
    fn records_merged_from_parts_count_as_in_the_full_decode(
        parts in proptest::collection::vec(proptest::collection::vec(arbitrary_record(), 1..4), 0..8),
    ) {
        let upserts: Vec<Vec<u8>> =
            parts.iter().map(|parts| parts.iter().flat_map(|record| record.encode_to_vec()).collect()).collect();
        let bytes = frame_with_raw_upserts(&upserts);
        prop_assert_eq!(LeanFrame::decode(&bytes).unwrap(), full(&bytes).unwrap());
    }

    #[test]
    fn truncated_frames_fail_where_the_full_decode_fails(frame in frame(), cut in any::<prop::sample::Index>()) {
        let bytes = frame.encode_to_vec();
        let bytes = &bytes[..cut.index(bytes.len() + 1)];
        match (LeanFrame::decode(bytes), full(bytes)) {
            (Ok(lean), Ok(full)) => prop_assert_eq!(lean, full),
            (Err(lean), Err(full)) => prop_assert_eq!(lean.to_string(), full.to_string()),
            (lean, full) => prop_assert!(false, "lean {:?}, full {:?}", lean, full),
        }
    }
}
