//! The frame decoder on arbitrary bytes, as a binary message and (when they are UTF-8) as a
//! text message: it must never panic, and a frame it accepts must survive re-encoding.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use syncline_proto::v1::{ClientFrame, Value, client_frame, value};
use syncline_push::codec::{CodecError, decode_client};
use tokio_tungstenite::tungstenite::Message;

fuzz_target!(|data: &[u8]| {
    check(&Message::Binary(Bytes::copy_from_slice(data)));
    if let Ok(text) = std::str::from_utf8(data) {
        check(&Message::Text(text.into()));
    }
});

fn check(message: &Message) {
    match decode_client(message) {
        Ok(Some(decoded)) => {
            assert!(decoded.frame.msg.is_some(), "an accepted frame names a message");
            // Protobuf: re-encoding is stable (compared as bytes: a NaN field is not equal to
            // itself as a value).
            let encoded = decoded.frame.encode_to_vec();
            let again = ClientFrame::decode(encoded.as_slice()).expect("a frame's own encoding decodes");
            assert_eq!(again.encode_to_vec(), encoded, "re-encoding changed the frame");
            // JSON: the canonical JSON of an accepted frame is accepted again, as the same frame.
            // Not yet for non-finite doubles, which the JSON mapping writes as null (issue 13's
            // fuzzing found it; the NaN encoding is fixed in proto/src/value.rs separately).
            if has_non_finite_double(&decoded.frame) {
                return;
            }
            if let Ok(json) = serde_json::to_string(&decoded.frame) {
                let reparsed = decode_client(&Message::Text(json.clone().into()));
                match reparsed {
                    Ok(Some(reparsed)) => {
                        assert_eq!(reparsed.frame.encode_to_vec(), encoded, "JSON round trip changed {json}")
                    }
                    Ok(None) => panic!("a text message decoded to no frame"),
                    Err(error) => panic!("the JSON form of an accepted frame is refused: {error}: {json}"),
                }
            }
        }
        Ok(None) => panic!("data messages always decode to a frame or an error"),
        Err(CodecError::MalformedProtobuf(_) | CodecError::MalformedJson(_) | CodecError::Empty) => {}
    }
}

/// Returns true when a value of the frame is a NaN or infinite double.
fn has_non_finite_double(frame: &ClientFrame) -> bool {
    let non_finite = |value: &Value| matches!(value.kind, Some(value::Kind::DoubleValue(x)) if !x.is_finite());
    match &frame.msg {
        Some(client_frame::Msg::Mutate(mutate)) => mutate.fields.values().any(non_finite),
        Some(client_frame::Msg::Search(search)) => search.params.values().any(non_finite),
        _ => false,
    }
}
