//! Frame codec: WebSocket messages to `ClientFrame`s and `ServerFrame`s to WebSocket
//! messages. Pure functions and size limits; no I/O.
//!
//! Binary messages carry protobuf; text messages carry protobuf's canonical JSON mapping
//! of the same messages. A server frame is encoded once into an [`EncodedFrame`] and the same
//! buffer is shared by every connection it is queued to; the JSON form is produced at most
//! once, the first time a text connection needs it.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use prost::Message as _;
use syncline_proto::v1::{ClientFrame, ServerFrame};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// How a connection encodes its frames: fixed by the first data frame the device sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameFormat {
    /// Binary WebSocket frames carrying protobuf.
    Binary,
    /// Text WebSocket frames carrying canonical protobuf JSON.
    Json,
}

/// Why a device frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The binary frame is not a valid `ClientFrame`.
    #[error("binary frame is not a valid ClientFrame: {0}")]
    MalformedProtobuf(#[source] prost::DecodeError),
    /// The text frame is not the JSON form of a `ClientFrame`.
    #[error("text frame is not the JSON form of a ClientFrame: {0}")]
    MalformedJson(#[source] serde_json::Error),
    /// The frame decoded but names no message.
    #[error("frame carries no message")]
    Empty,
}

/// A decoded device frame and the format it came in.
#[derive(Debug)]
pub struct DecodedFrame {
    pub frame: ClientFrame,
    pub format: FrameFormat,
}

/// Decodes a data message (binary or text). Control messages (ping, pong, close) are the
/// session's business and return `Ok(None)`.
pub fn decode_client(message: &Message) -> Result<Option<DecodedFrame>, CodecError> {
    let (frame, format) = match message {
        Message::Binary(data) => {
            (ClientFrame::decode(data.as_ref()).map_err(CodecError::MalformedProtobuf)?, FrameFormat::Binary)
        }
        Message::Text(text) => {
            (serde_json::from_str::<ClientFrame>(text.as_str()).map_err(CodecError::MalformedJson)?, FrameFormat::Json)
        }
        Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => {
            return Ok(None);
        }
    };
    if frame.msg.is_none() {
        return Err(CodecError::Empty);
    }
    Ok(Some(DecodedFrame { frame, format }))
}

/// A server frame encoded once and shared by every connection it is queued to.
#[derive(Debug)]
pub struct EncodedFrame {
    /// The frame, decoded: given, or decoded from `binary` on first use (a frame spliced
    /// from encoded parts is sent to binary devices without ever being decoded).
    frame: OnceLock<ServerFrame>,
    /// The frame's type ([`crate::stats::server_kind`]).
    kind: Option<usize>,
    binary: Bytes,
    json: OnceLock<Utf8Bytes>,
    /// For a live frame: when the commit it carries became durable, so that the session can
    /// observe the push lag when it writes the frame ([`crate::stats`]).
    committed_at: Option<Instant>,
}

impl EncodedFrame {
    /// Encodes `frame` to protobuf now; the JSON form is made on first use.
    pub fn new(frame: ServerFrame) -> Arc<Self> {
        Self::decoded(frame, None)
    }

    /// Builds a frame of changes from the protobuf encoding of its `Changes` message, made
    /// from parts already encoded (a catch-up page spliced from the store's record bytes):
    /// it is decoded only if a text device needs its JSON form.
    pub fn changes_from_encoded(changes: &[u8]) -> Arc<Self> {
        // ServerFrame.changes: field 2, length-delimited.
        let len = changes.len() as u64;
        let mut binary = Vec::with_capacity(1 + prost::encoding::encoded_len_varint(len) + changes.len());
        binary.push((2 << 3) | 2);
        prost::encoding::encode_varint(len, &mut binary);
        binary.extend_from_slice(changes);
        Arc::new(Self {
            frame: OnceLock::new(),
            kind: crate::stats::server_kind(Some(&syncline_proto::v1::server_frame::Msg::Changes(Default::default()))),
            binary: Bytes::from(binary),
            json: OnceLock::new(),
            committed_at: None,
        })
    }

    fn decoded(frame: ServerFrame, committed_at: Option<Instant>) -> Arc<Self> {
        let binary = Bytes::from(frame.encode_to_vec());
        let kind = crate::stats::server_kind(frame.msg.as_ref());
        Arc::new(Self { frame: OnceLock::from(frame), kind, binary, json: OnceLock::new(), committed_at })
    }

    /// Encodes a live frame of changes that became durable at `committed_at`: its push lag
    /// is observed when a session writes it.
    pub fn live(frame: ServerFrame, committed_at: Instant) -> Arc<Self> {
        Self::decoded(frame, Some(committed_at))
    }

    /// Builds a frame from its protobuf encoding, made once by another node (the node bus):
    /// the bytes are kept as they are (devices get them without re-encoding) and decoded once
    /// here, for the JSON form of text devices and the frame's type. `committed_at` is when
    /// the commit became durable, on this node's clock, for the push lag.
    pub fn from_encoded(binary: Bytes, committed_at: Option<Instant>) -> Result<Arc<Self>, prost::DecodeError> {
        let frame = ServerFrame::decode(binary.as_ref())?;
        let kind = crate::stats::server_kind(frame.msg.as_ref());
        Ok(Arc::new(Self { frame: OnceLock::from(frame), kind, binary, json: OnceLock::new(), committed_at }))
    }

    /// Returns when the commit a live frame carries became durable (`None` for other frames).
    pub fn committed_at(&self) -> Option<Instant> {
        self.committed_at
    }

    /// Returns the index of the frame's type in [`SERVER_FRAME_KINDS`](crate::stats::SERVER_FRAME_KINDS).
    pub fn kind(&self) -> Option<usize> {
        self.kind
    }

    /// Returns a copy that shares nothing with `self` (its own buffer and reference counts),
    /// for fan-out on another core: each core's deliveries then count references on memory
    /// of its own instead of bouncing one cache line between cores.
    pub fn duplicate(&self) -> Arc<Self> {
        let json = OnceLock::new();
        if let Some(text) = self.json.get() {
            let _ = json.set(Utf8Bytes::from(text.as_str().to_owned()));
        }
        let frame = OnceLock::new();
        if let Some(decoded) = self.frame.get() {
            let _ = frame.set(decoded.clone());
        }
        Arc::new(Self {
            frame,
            kind: self.kind,
            binary: Bytes::copy_from_slice(&self.binary),
            json,
            committed_at: self.committed_at,
        })
    }

    /// Returns the frame.
    pub fn frame(&self) -> &ServerFrame {
        // Frames built here from encoded parts are valid encodings by construction; were one
        // not, a text device would get an empty frame rather than the session panicking.
        self.frame.get_or_init(|| ServerFrame::decode(self.binary.as_ref()).unwrap_or_default())
    }

    /// Returns the protobuf encoding.
    pub fn binary(&self) -> &Bytes {
        &self.binary
    }

    /// Returns the frame as a WebSocket message in `format`, sharing the encoded buffer.
    pub fn message(&self, format: FrameFormat) -> Message {
        match format {
            FrameFormat::Binary => Message::Binary(self.binary.clone()),
            FrameFormat::Json => Message::Text(
                self.json
                    .get_or_init(|| {
                        // Serializing generated pbjson types cannot fail: every field is a
                        // plain value with a defined JSON form.
                        serde_json::to_string(self.frame()).unwrap_or_else(|_| String::from("{}")).into()
                    })
                    .clone(),
            ),
        }
    }

    /// Returns the size of the protobuf encoding in bytes.
    pub fn encoded_len(&self) -> usize {
        self.binary.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncline_proto::v1::{Ack, Hello, Login, client_frame, hello, server_frame};

    fn hello_frame() -> ClientFrame {
        ClientFrame {
            msg: Some(client_frame::Msg::Hello(Hello {
                protocol_version: 1,
                credentials: Some(hello::Credentials::Login(Login { username: "ann".into(), password: "pw".into() })),
                client_id: String::new(),
                device: None,
            })),
        }
    }

    #[test]
    fn binary_and_json_round_trip_to_the_same_frame() {
        let frame = hello_frame();
        let binary = Message::Binary(Bytes::from(frame.encode_to_vec()));
        let text = Message::Text(serde_json::to_string(&frame).unwrap().into());
        let a = decode_client(&binary).unwrap().unwrap();
        let b = decode_client(&text).unwrap().unwrap();
        assert_eq!(a.frame, frame);
        assert_eq!(b.frame, frame);
        assert_eq!(a.format, FrameFormat::Binary);
        assert_eq!(b.format, FrameFormat::Json);
    }

    #[test]
    fn canonical_json_uses_lower_camel_case_names() {
        let text = r#"{"ack":{"source":"Account","key":"*","cursor":"42","page":"3"}}"#;
        let decoded = decode_client(&Message::Text(text.into())).unwrap().unwrap();
        let expected = ClientFrame {
            msg: Some(client_frame::Msg::Ack(Ack { source: "Account".into(), key: "*".into(), cursor: 42, page: 3 })),
        };
        assert_eq!(decoded.frame, expected);
    }

    #[test]
    fn garbage_gets_typed_errors() {
        let bad_proto = Message::Binary(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f]));
        assert!(matches!(decode_client(&bad_proto), Err(CodecError::MalformedProtobuf(_))));
        let bad_json = Message::Text("hello there".into());
        assert!(matches!(decode_client(&bad_json), Err(CodecError::MalformedJson(_))));
        let empty = Message::Binary(Bytes::new());
        assert!(matches!(decode_client(&empty), Err(CodecError::Empty)));
        assert!(decode_client(&Message::Ping(Bytes::new())).unwrap().is_none());
    }

    #[test]
    fn encoded_frame_shares_one_buffer() {
        let frame = EncodedFrame::new(ServerFrame {
            msg: Some(server_frame::Msg::Error(syncline_proto::v1::Error {
                code: 1,
                message: "x".into(),
                fatal: false,
                source: String::new(),
                key: String::new(),
            })),
        });
        let (Message::Binary(a), Message::Binary(b)) =
            (frame.message(FrameFormat::Binary), frame.message(FrameFormat::Binary))
        else {
            panic!("binary format must give binary messages");
        };
        assert_eq!(a.as_ptr(), b.as_ptr(), "the encoded buffer is shared, not copied");
        let Message::Text(json) = frame.message(FrameFormat::Json) else {
            panic!("json format must give text messages");
        };
        assert!(json.as_str().contains("\"error\""));
    }

    #[test]
    fn a_frame_from_its_encoding_keeps_the_bytes_and_serves_json() {
        let original = EncodedFrame::new(ServerFrame {
            msg: Some(server_frame::Msg::Error(syncline_proto::v1::Error {
                code: 7,
                message: "remote".into(),
                fatal: false,
                source: String::new(),
                key: String::new(),
            })),
        });
        let bytes = original.binary().clone();
        let received = EncodedFrame::from_encoded(bytes.clone(), None).unwrap();
        assert_eq!(received.binary().as_ptr(), bytes.as_ptr(), "not re-encoded");
        assert_eq!(received.frame(), original.frame());
        assert_eq!(received.message(FrameFormat::Json), original.message(FrameFormat::Json));
        assert!(EncodedFrame::from_encoded(Bytes::from_static(&[0xff, 0xff, 0xff]), None).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = decode_client(&Message::Binary(Bytes::from(data.clone())));
            if let Ok(text) = String::from_utf8(data) {
                let _ = decode_client(&Message::Text(text.into()));
            }
        }
    }
}
