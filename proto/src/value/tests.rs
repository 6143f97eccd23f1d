//! Issue 13: every `Value` kind survives binary protobuf and the canonical JSON mapping,
//! non-finite doubles included, and JSON that is not a `Value` is refused with a clear error.

use std::collections::BTreeMap;

use prost::Message as _;

use crate::v1::{
    Blob, Changes, ClientFrame, Mutate, MutationOp, NullValue, Record, ServerFrame, Value, client_frame, server_frame,
    value::Kind,
};

/// A NaN with a payload other than the default one.
const NAN_WITH_PAYLOAD: u64 = 0x7ff8_0000_0000_0001;

fn every_kind() -> Vec<Value> {
    vec![
        Value::string(""),
        Value::string("héllo \"quoted\" \u{1f600}"),
        Value::int(0),
        Value::int(i64::MIN),
        Value::int(i64::MAX),
        Value::double(0.0),
        Value::double(-0.0),
        Value::double(1.5),
        Value::double(-1.0 / 3.0),
        Value::double(f64::MAX),
        Value::double(f64::MIN_POSITIVE),
        Value::double(5e-324),
        Value::double(f64::NAN),
        Value::double(f64::from_bits(NAN_WITH_PAYLOAD)),
        Value::double(f64::INFINITY),
        Value::double(f64::NEG_INFINITY),
        Value::bool(true),
        Value::bool(false),
        Value::bytes(Vec::new()),
        Value::bytes(vec![0, 255, 62, 63, 1]),
        Value::null(),
        Value::blob(photo()),
        Value::blob(Blob { name: String::new(), ..photo() }),
    ]
}

/// A blob reference with every member set.
fn photo() -> Blob {
    Blob { hash: "ab".repeat(32), size: 123_456, media_type: "image/jpeg".into(), name: "photo.jpg".into() }
}

/// Compares doubles by bit pattern (so -0.0 differs from 0.0 and NaN payloads count).
fn same_bits(a: &Value, b: &Value) -> bool {
    match (&a.kind, &b.kind) {
        (Some(Kind::DoubleValue(x)), Some(Kind::DoubleValue(y))) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

/// Compares as JSON can carry values: any NaN is NaN (JSON has no payloads), other doubles
/// by bit pattern.
fn same_in_json(a: &Value, b: &Value) -> bool {
    match (&a.kind, &b.kind) {
        (Some(Kind::DoubleValue(x)), Some(Kind::DoubleValue(y))) if x.is_nan() => y.is_nan(),
        _ => same_bits(a, b),
    }
}

fn json(value: &Value) -> String {
    serde_json::to_string(value).unwrap()
}

fn from_json(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str(text)
}

#[test]
fn every_kind_round_trips_through_binary_protobuf_bit_for_bit() {
    for value in every_kind() {
        let decoded = Value::decode(value.encode_to_vec().as_slice()).unwrap();
        assert!(same_bits(&value, &decoded), "{value:?} came back as {decoded:?}");
    }
}

#[test]
fn every_kind_round_trips_through_json() {
    for value in every_kind() {
        let text = json(&value);
        let decoded = from_json(&text).unwrap_or_else(|error| panic!("{text} does not decode: {error}"));
        assert!(same_in_json(&value, &decoded), "{value:?} came back from {text} as {decoded:?}");
    }
}

#[test]
fn json_follows_the_canonical_mapping() {
    let cases = [
        (Value::double(f64::NAN), r#"{"doubleValue":"NaN"}"#),
        (Value::double(f64::from_bits(NAN_WITH_PAYLOAD)), r#"{"doubleValue":"NaN"}"#),
        (Value::double(f64::INFINITY), r#"{"doubleValue":"Infinity"}"#),
        (Value::double(f64::NEG_INFINITY), r#"{"doubleValue":"-Infinity"}"#),
        (Value::double(-0.0), r#"{"doubleValue":-0.0}"#),
        (Value::double(1.5), r#"{"doubleValue":1.5}"#),
        (Value::int(i64::MIN), r#"{"intValue":"-9223372036854775808"}"#),
        (Value::int(i64::MAX), r#"{"intValue":"9223372036854775807"}"#),
        (Value::string(""), r#"{"stringValue":""}"#),
        (Value::bool(false), r#"{"boolValue":false}"#),
        (Value::bytes(Vec::new()), r#"{"bytesValue":""}"#),
        (Value::bytes(vec![0, 255, 62, 63, 1]), r#"{"bytesValue":"AP8+PwE="}"#),
        (Value::null(), r#"{"nullValue":"NULL_VALUE"}"#),
        (
            Value::blob(photo()),
            r#"{"blobValue":{"hash":"abababababababababababababababababababababababababababababababab","size":"123456","mediaType":"image/jpeg","name":"photo.jpg"}}"#,
        ),
        (Value { kind: None }, "{}"),
    ];
    for (value, expected) in cases {
        assert_eq!(json(&value), expected, "{value:?}");
    }
}

#[test]
fn json_accepts_what_canonical_decoders_accept() {
    let cases = [
        (r#"{"intValue":12}"#, Value::int(12)),
        (r#"{"intValue":-9223372036854775808}"#, Value::int(i64::MIN)),
        (r#"{"intValue":"1e3"}"#, Value::int(1000)),
        (r#"{"intValue":2.0}"#, Value::int(2)),
        (r#"{"int_value":"7"}"#, Value::int(7)),
        (r#"{"doubleValue":"1.5"}"#, Value::double(1.5)),
        (r#"{"doubleValue":"-2e3"}"#, Value::double(-2000.0)),
        (r#"{"doubleValue":2}"#, Value::double(2.0)),
        (r#"{"double_value":"-Infinity"}"#, Value::double(f64::NEG_INFINITY)),
        (r#"{"bytesValue":"AP8+PwE"}"#, Value::bytes(vec![0, 255, 62, 63, 1])),
        (r#"{"bytesValue":"AP8-PwE="}"#, Value::bytes(vec![0, 255, 62, 63, 1])),
        (r#"{"nullValue":null}"#, Value::null()),
        (r#"{"nullValue":0}"#, Value::null()),
        (r#"{"stringValue":"x","futureMember":{"a":[1]}}"#, Value::string("x")),
        (r#"{"doubleValue":null,"stringValue":"x"}"#, Value::string("x")),
        (r#"{"doubleValue":null}"#, Value { kind: None }),
        (
            r#"{"blob_value":{"hash":"abababababababababababababababababababababababababababababababab","size":123456,"media_type":"image/jpeg"}}"#,
            Value::blob(Blob { name: String::new(), ..photo() }),
        ),
    ];
    for (text, expected) in cases {
        let decoded = from_json(text).unwrap_or_else(|error| panic!("{text} does not decode: {error}"));
        assert!(same_bits(&decoded, &expected), "{text} decoded as {decoded:?}, not {expected:?}");
    }
    let nan = from_json(r#"{"doubleValue":"NaN"}"#).unwrap();
    assert!(matches!(nan.kind, Some(Kind::DoubleValue(number)) if number.is_nan()));
}

#[test]
fn json_that_is_no_value_is_refused_with_a_clear_error() {
    let cases = [
        (r#"{"intValue":"12abc"}"#, "int64"),
        (r#"{"intValue":1.5}"#, "int64"),
        (r#"{"intValue":"9223372036854775808"}"#, "int64"),
        (r#"{"intValue":9223372036854775808}"#, "int64"),
        (r#"{"intValue":true}"#, "int64"),
        (r#"{"doubleValue":"inf"}"#, "\"NaN\""),
        (r#"{"doubleValue":"nan"}"#, "\"NaN\""),
        (r#"{"doubleValue":"infinity"}"#, "\"NaN\""),
        (r#"{"doubleValue":"1e999"}"#, "\"NaN\""),
        (r#"{"doubleValue":"1.5x"}"#, "numeric string"),
        (r#"{"doubleValue":[1]}"#, "double"),
        (r#"{"boolValue":"true"}"#, "boolean"),
        (r#"{"bytesValue":"@@"}"#, "base64"),
        (r#"{"bytesValue":3}"#, "base64"),
        (r#"{"nullValue":"NULL"}"#, "NULL_VALUE"),
        (r#"{"stringValue":"a","intValue":"1"}"#, "more than one kind"),
        (r#"{"boolValue":true,"bool_value":false}"#, "more than one kind"),
        (r#"[]"#, "syncline.v1.Value"),
        (r#""text""#, "syncline.v1.Value"),
    ];
    for (text, expected) in cases {
        let error = from_json(text).map(|value| panic!("{text} decoded as {value:?}")).unwrap_err().to_string();
        assert!(error.contains(expected), "{text}: error {error:?} does not mention {expected:?}");
    }
}

#[test]
fn an_unknown_null_value_number_is_kept() {
    let value = Value { kind: Some(Kind::NullValue(5)) };
    assert_eq!(json(&value), r#"{"nullValue":5}"#);
    assert_eq!(from_json(r#"{"nullValue":5}"#).unwrap(), value);
    assert_eq!(NullValue::NullValue as i32, 0);
}

#[test]
fn frames_carry_non_finite_doubles_in_json_both_ways() {
    let fields: BTreeMap<String, Value> = [
        ("nan".to_owned(), Value::double(f64::NAN)),
        ("up".to_owned(), Value::double(f64::INFINITY)),
        ("down".to_owned(), Value::double(f64::NEG_INFINITY)),
    ]
    .into();
    let changes = ServerFrame {
        msg: Some(server_frame::Msg::Changes(Changes {
            source: "Sensor".into(),
            key: "*".into(),
            upserts: vec![Record { id: "s1".into(), fields: fields.clone(), version: 3 }],
            ..Changes::default()
        })),
    };
    let text = serde_json::to_string(&changes).unwrap();
    assert!(text.contains(r#""nan":{"doubleValue":"NaN"}"#), "{text}");
    assert!(text.contains(r#""up":{"doubleValue":"Infinity"}"#), "{text}");
    assert!(text.contains(r#""down":{"doubleValue":"-Infinity"}"#), "{text}");
    let Some(server_frame::Msg::Changes(decoded)) = serde_json::from_str::<ServerFrame>(&text).unwrap().msg else {
        panic!("a Changes frame");
    };
    let record = &decoded.upserts[0];
    assert!(matches!(record.fields["nan"].kind, Some(Kind::DoubleValue(number)) if number.is_nan()));
    assert_eq!(record.fields["up"], Value::double(f64::INFINITY));
    assert_eq!(record.fields["down"], Value::double(f64::NEG_INFINITY));

    let mutate = ClientFrame {
        msg: Some(client_frame::Msg::Mutate(Mutate {
            mutation_id: "m1".into(),
            source: "Sensor".into(),
            op: MutationOp::Create as i32,
            id: "tmp-1".into(),
            fields,
            ..Mutate::default()
        })),
    };
    let text = serde_json::to_string(&mutate).unwrap();
    let Some(client_frame::Msg::Mutate(decoded)) = serde_json::from_str::<ClientFrame>(&text).unwrap().msg else {
        panic!("a Mutate frame");
    };
    assert!(matches!(decoded.fields["nan"].kind, Some(Kind::DoubleValue(number)) if number.is_nan()));
    assert_eq!(decoded.fields["down"], Value::double(f64::NEG_INFINITY));
}
