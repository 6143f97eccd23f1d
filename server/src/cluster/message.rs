//! The control channel's messages and their encoding: a small protobuf envelope naming the
//! node that sent it, so a node skips its own.

use prost::Message as _;
use syncline_proto::v1::ServerFrame;

use crate::error::ErrorClass;

/// What one node asks every other node to do.
#[derive(Clone, Debug, PartialEq)]
pub enum ControlMessage {
    /// Close the connections of `user_id`'s devices: a fatal Error of `class` with
    /// `message`, then its close code.
    CloseUser { user_id: String, class: ErrorClass, message: String },
    /// Queue `frame` to the connections of `client_id`.
    ToDevice { client_id: String, frame: ServerFrame },
    /// Send `client_id`'s unacknowledged commands to its connections, and record them
    /// delivered.
    DeliverCommands { client_id: String },
    /// The schema of `source` changed to the one hashed `schema_hash`: tell this node's
    /// devices of the source (issue 18's `SCHEMA_CHANGED`), and know the new schema.
    SchemaChanged { source: String, schema_hash: Vec<u8> },
}

/// Why a control message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ControlMessageError {
    #[error("a control message is not a valid envelope: {0}")]
    Envelope(#[from] prost::DecodeError),
    #[error("a control message has an unknown kind {0}")]
    UnknownKind(i32),
    #[error("a control message names an unknown error code {0}")]
    UnknownErrorCode(i32),
    #[error("a control message's frame is not a valid server frame: {0}")]
    Frame(prost::DecodeError),
}

/// Kinds of [`Envelope`], as numbered on the wire.
const CLOSE_USER: i32 = 1;
const TO_DEVICE: i32 = 2;
const DELIVER_COMMANDS: i32 = 3;
const SCHEMA_CHANGED: i32 = 4;

/// A control message on the wire.
#[derive(Clone, PartialEq, prost::Message)]
struct Envelope {
    /// The id of the node that sent it.
    #[prost(string, tag = "1")]
    origin: String,
    #[prost(int32, tag = "2")]
    kind: i32,
    /// The user (`CLOSE_USER`), source (`SCHEMA_CHANGED`) or device (the others) it is about.
    #[prost(string, tag = "3")]
    subject: String,
    /// `CLOSE_USER`: the device protocol's error code.
    #[prost(int32, tag = "4")]
    error_code: i32,
    /// `CLOSE_USER`: the message.
    #[prost(string, tag = "5")]
    message: String,
    /// `TO_DEVICE`: the encoded `ServerFrame`.
    #[prost(bytes = "vec", tag = "6")]
    frame: Vec<u8>,
    /// `SCHEMA_CHANGED`: the new schema's hash.
    #[prost(bytes = "vec", tag = "7")]
    schema_hash: Vec<u8>,
}

impl ControlMessage {
    /// Encodes the message as sent by node `origin`.
    pub fn encode(&self, origin: &str) -> Vec<u8> {
        let mut envelope = Envelope { origin: origin.to_owned(), ..Envelope::default() };
        match self {
            ControlMessage::CloseUser { user_id, class, message } => {
                envelope.kind = CLOSE_USER;
                envelope.subject.clone_from(user_id);
                envelope.error_code = class.error_code() as i32;
                envelope.message.clone_from(message);
            }
            ControlMessage::ToDevice { client_id, frame } => {
                envelope.kind = TO_DEVICE;
                envelope.subject.clone_from(client_id);
                envelope.frame = frame.encode_to_vec();
            }
            ControlMessage::DeliverCommands { client_id } => {
                envelope.kind = DELIVER_COMMANDS;
                envelope.subject.clone_from(client_id);
            }
            ControlMessage::SchemaChanged { source, schema_hash } => {
                envelope.kind = SCHEMA_CHANGED;
                envelope.subject.clone_from(source);
                envelope.schema_hash.clone_from(schema_hash);
            }
        }
        envelope.encode_to_vec()
    }

    /// Decodes a message; returns it with the id of the node that sent it.
    pub fn decode(bytes: &[u8]) -> Result<(String, ControlMessage), ControlMessageError> {
        let envelope = Envelope::decode(bytes)?;
        let message = match envelope.kind {
            CLOSE_USER => ControlMessage::CloseUser {
                class: ErrorClass::from_error_code(envelope.error_code)
                    .ok_or(ControlMessageError::UnknownErrorCode(envelope.error_code))?,
                user_id: envelope.subject,
                message: envelope.message,
            },
            TO_DEVICE => ControlMessage::ToDevice {
                frame: ServerFrame::decode(envelope.frame.as_slice()).map_err(ControlMessageError::Frame)?,
                client_id: envelope.subject,
            },
            DELIVER_COMMANDS => ControlMessage::DeliverCommands { client_id: envelope.subject },
            SCHEMA_CHANGED => {
                ControlMessage::SchemaChanged { source: envelope.subject, schema_hash: envelope.schema_hash }
            }
            other => return Err(ControlMessageError::UnknownKind(other)),
        };
        Ok((envelope.origin, message))
    }
}
