use syncline_proto::v1::{MutationResult, server_frame};

use super::*;

fn result_frame() -> ServerFrame {
    let result = MutationResult { mutation_id: "m1".into(), ok: true, ..MutationResult::default() };
    ServerFrame { msg: Some(server_frame::Msg::MutationResult(result)) }
}

#[test]
fn every_message_round_trips_with_its_origin() {
    let messages = [
        ControlMessage::CloseUser { user_id: "ann".into(), class: ErrorClass::Forbidden, message: "disabled".into() },
        ControlMessage::CloseUser { user_id: "bob".into(), class: ErrorClass::Unauthenticated, message: String::new() },
        ControlMessage::ToDevice { client_id: "c1".into(), frame: result_frame() },
        ControlMessage::DeliverCommands { client_id: "c2".into() },
    ];
    for message in messages {
        let (origin, decoded) = ControlMessage::decode(&message.encode("node-a")).unwrap();
        assert_eq!((origin.as_str(), &decoded), ("node-a", &message));
    }
}

#[test]
fn malformed_messages_are_typed_errors() {
    assert!(matches!(ControlMessage::decode(b"\xff\xff\xff"), Err(ControlMessageError::Envelope(_))));
    let unknown_kind = ControlMessage::DeliverCommands { client_id: "c".into() }.encode("n");
    // Field 2 (kind) set to 9 after the original: the last value of a field wins.
    let mut bad = unknown_kind.clone();
    bad.extend_from_slice(&[0x10, 9]);
    assert!(matches!(ControlMessage::decode(&bad), Err(ControlMessageError::UnknownKind(9))));
    let mut bad_code =
        ControlMessage::CloseUser { user_id: "u".into(), class: ErrorClass::Forbidden, message: String::new() }
            .encode("n");
    bad_code.extend_from_slice(&[0x20, 0x7f]);
    assert!(matches!(ControlMessage::decode(&bad_code), Err(ControlMessageError::UnknownErrorCode(127))));
    let mut bad_frame = ControlMessage::ToDevice { client_id: "c".into(), frame: result_frame() }.encode("n");
    bad_frame.extend_from_slice(&[0x32, 1, 0xff]);
    assert!(matches!(ControlMessage::decode(&bad_frame), Err(ControlMessageError::Frame(_))));
}
