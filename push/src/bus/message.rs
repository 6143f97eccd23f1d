//! The node bus's message: a fixed binary header and a frame's protobuf encoding.
//!
//! Layout (integers big-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | format version, [`MESSAGE_VERSION`] |
//! | 1 | kind: 0 = frame, 1 = gap (frames up to `to` were lost on the way, no payload) |
//! | 8 | origin: the publishing node's id |
//! | 8 | `from`: first sequence the frame covers |
//! | 8 | `to`: last sequence the frame covers |
//! | 8 | committed at: wall-clock microseconds since the Unix epoch (0 if unknown) |
//! | rest | the frame's protobuf encoding (kind frame only) |

use bytes::Bytes;

/// The header's format version; a receiver refuses others.
pub const MESSAGE_VERSION: u8 = 1;

/// Bytes of the header before the frame's encoding.
pub const HEADER_BYTES: usize = 34;

const KIND_FRAME: u8 = 0;
const KIND_GAP: u8 = 1;

/// What a bus message says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusMessage {
    /// A committed frame covering `from..=to` of its key.
    Frame {
        /// The publishing node.
        origin: u64,
        /// First sequence covered.
        from: u64,
        /// Last sequence covered.
        to: u64,
        /// When the commit became durable: wall-clock microseconds since the Unix epoch.
        committed_at_micros: u64,
        /// The frame's protobuf encoding.
        frame: Bytes,
    },
    /// Frames of the key up to `to` were published but could not be sent: receivers demote
    /// the live subscribers that have not received `to`.
    Gap {
        /// The publishing node.
        origin: u64,
        /// The last sequence that may have been lost.
        to: u64,
    },
}

/// Why a bus message could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusMessageError {
    /// Shorter than the header.
    #[error("bus message of {len} bytes is shorter than its {HEADER_BYTES}-byte header")]
    TooShort {
        /// The message's length.
        len: usize,
    },
    /// Written by a node with another format version.
    #[error("bus message has format version {0}, expected {MESSAGE_VERSION}")]
    UnknownVersion(u8),
    /// A kind this node does not know.
    #[error("bus message has unknown kind {0}")]
    UnknownKind(u8),
    /// `from` after `to`, or a frame that starts at sequence 0.
    #[error("bus message covers no valid sequence range ({from}..={to})")]
    BadRange {
        /// First sequence.
        from: u64,
        /// Last sequence.
        to: u64,
    },
    /// A gap message with a payload, or a frame message without one.
    #[error("bus message of kind {kind} has a payload of {len} bytes")]
    BadPayload {
        /// The message's kind.
        kind: u8,
        /// The payload's length.
        len: usize,
    },
}

impl BusMessage {
    /// Encodes the message: the header, then the frame's bytes (copied once).
    pub fn encode(&self) -> Vec<u8> {
        let (kind, origin, from, to, committed, payload): (u8, u64, u64, u64, u64, &[u8]) = match self {
            Self::Frame { origin, from, to, committed_at_micros, frame } => {
                (KIND_FRAME, *origin, *from, *to, *committed_at_micros, frame.as_ref())
            }
            Self::Gap { origin, to } => (KIND_GAP, *origin, 0, *to, 0, &[]),
        };
        let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
        out.push(MESSAGE_VERSION);
        out.push(kind);
        for field in [origin, from, to, committed] {
            out.extend_from_slice(&field.to_be_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    /// Decodes a message; the frame's bytes are copied once out of `data`.
    pub fn decode(data: &[u8]) -> Result<Self, BusMessageError> {
        let (header, payload) =
            data.split_at_checked(HEADER_BYTES).ok_or(BusMessageError::TooShort { len: data.len() })?;
        let field = |index: usize| {
            let start = 2 + index * 8;
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&header[start..start + 8]);
            u64::from_be_bytes(bytes)
        };
        if header[0] != MESSAGE_VERSION {
            return Err(BusMessageError::UnknownVersion(header[0]));
        }
        let (origin, from, to, committed_at_micros) = (field(0), field(1), field(2), field(3));
        match header[1] {
            KIND_FRAME => {
                if from == 0 || from > to {
                    return Err(BusMessageError::BadRange { from, to });
                }
                if payload.is_empty() {
                    return Err(BusMessageError::BadPayload { kind: KIND_FRAME, len: 0 });
                }
                Ok(Self::Frame { origin, from, to, committed_at_micros, frame: Bytes::copy_from_slice(payload) })
            }
            KIND_GAP => {
                if !payload.is_empty() {
                    return Err(BusMessageError::BadPayload { kind: KIND_GAP, len: payload.len() });
                }
                Ok(Self::Gap { origin, to })
            }
            kind => Err(BusMessageError::UnknownKind(kind)),
        }
    }

    /// Returns the publishing node's id.
    pub fn origin(&self) -> u64 {
        match self {
            Self::Frame { origin, .. } | Self::Gap { origin, .. } => *origin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_message() -> BusMessage {
        BusMessage::Frame {
            origin: 0xdead_beef,
            from: 5,
            to: 9,
            committed_at_micros: 1_780_000_000_000_000,
            frame: Bytes::from_static(b"\x0a\x02hi"),
        }
    }

    #[test]
    fn frames_and_gaps_round_trip() {
        for message in [frame_message(), BusMessage::Gap { origin: 3, to: 77 }] {
            let encoded = message.encode();
            assert_eq!(BusMessage::decode(&encoded), Ok(message));
        }
        assert_eq!(frame_message().encode().len(), HEADER_BYTES + 4);
    }

    #[test]
    fn malformed_messages_get_typed_errors() {
        let good = frame_message().encode();
        assert_eq!(BusMessage::decode(&good[..10]), Err(BusMessageError::TooShort { len: 10 }));
        let mut version = good.clone();
        version[0] = 9;
        assert_eq!(BusMessage::decode(&version), Err(BusMessageError::UnknownVersion(9)));
        let mut kind = good.clone();
        kind[1] = 7;
        assert_eq!(BusMessage::decode(&kind), Err(BusMessageError::UnknownKind(7)));
        let backwards =
            BusMessage::Frame { origin: 1, from: 9, to: 5, committed_at_micros: 0, frame: Bytes::from_static(b"x") }
                .encode();
        assert_eq!(BusMessage::decode(&backwards), Err(BusMessageError::BadRange { from: 9, to: 5 }));
        assert_eq!(BusMessage::decode(&good[..HEADER_BYTES]), Err(BusMessageError::BadPayload { kind: 0, len: 0 }));
        let mut gap = BusMessage::Gap { origin: 1, to: 2 }.encode();
        gap.push(0);
        assert_eq!(BusMessage::decode(&gap), Err(BusMessageError::BadPayload { kind: 1, len: 1 }));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..128)) {
            let _ = BusMessage::decode(&data);
        }
    }
}
