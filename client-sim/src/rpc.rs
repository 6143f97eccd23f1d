//! Mobile RPC from a device: [`crate::DeviceHandle::call`] sends an `RpcCall` on the device's
//! socket and waits for the `RpcReply` with its call id.
//!
//! Calls are online-only: a device that is not connected (welcomed) fails the call at once
//! with [`CallError::NotConnected`], and a connection lost while a call waits fails it with
//! [`CallError::ConnectionLost`] (the server cancels it toward the backend; whether the
//! operation ran is unknown, as with any request whose reply is lost). The device's timeout
//! is also sent as the call's deadline, so the server gives up when the device does.

use std::collections::HashMap;
use std::time::Duration;

use syncline_proto::v1::{ClientFrame, ErrorCode, RpcCall, RpcReply, client_frame, rpc_reply};
use tokio::sync::oneshot;

/// How long [`crate::DeviceHandle::call`] waits for a reply.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call returned no reply payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The server or the backend answered with an error (e.g. `NotFound` for an unknown
    /// service or method, `Timeout`, `ResourceExhausted` at a concurrency limit).
    #[error("call failed with {code:?}: {message}")]
    Failed {
        /// The error code of the reply.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// No reply came within the timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The device was not connected when the call was made.
    #[error("the device is not connected")]
    NotConnected,
    /// The connection was lost before the reply came.
    #[error("the connection was lost before the reply")]
    ConnectionLost,
    /// The device has stopped.
    #[error("the device has stopped")]
    Stopped,
    /// The reply carried neither a payload nor an error.
    #[error("the reply carried no result")]
    EmptyReply,
}

impl CallError {
    /// Returns the error code the server answered with, for [`CallError::Failed`].
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            CallError::Failed { code, .. } => Some(*code),
            CallError::Timeout(_)
            | CallError::NotConnected
            | CallError::ConnectionLost
            | CallError::Stopped
            | CallError::EmptyReply => None,
        }
    }
}

/// The outcome of a call as the device sees it.
pub type CallResult = Result<Vec<u8>, CallError>;

/// Returns the `RpcCall` frame of a call (`deadline` rounded to whole milliseconds, at least
/// 1; 0 would mean the server's default).
pub fn call_frame(call_id: &str, service: &str, method: &str, payload: Vec<u8>, deadline: Duration) -> ClientFrame {
    let deadline_ms = u32::try_from(deadline.as_millis()).unwrap_or(u32::MAX).max(1);
    ClientFrame {
        msg: Some(client_frame::Msg::RpcCall(RpcCall {
            call_id: call_id.to_owned(),
            service: service.to_owned(),
            method: method.to_owned(),
            payload,
            deadline_ms,
        })),
    }
}

/// Returns the outcome a reply carries.
pub fn reply_result(reply: RpcReply) -> CallResult {
    match reply.result {
        Some(rpc_reply::Result::Payload(payload)) => Ok(payload),
        Some(rpc_reply::Result::Error(error)) => Err(CallError::Failed {
            code: ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified),
            message: error.message,
        }),
        None => Err(CallError::EmptyReply),
    }
}

/// A call on its way from the handle to the device task.
#[derive(Debug)]
pub(crate) struct OutgoingCall {
    pub(crate) service: String,
    pub(crate) method: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) timeout: Duration,
    pub(crate) reply: oneshot::Sender<CallResult>,
}

/// The calls a device task waits on, by call id.
#[derive(Debug, Default)]
pub(crate) struct PendingCalls {
    next_call: u64,
    waiting: HashMap<String, oneshot::Sender<CallResult>>,
}

impl PendingCalls {
    /// Registers `call` under a new call id and returns its frame.
    pub(crate) fn register(&mut self, call: OutgoingCall) -> ClientFrame {
        // Callers that timed out no longer listen.
        self.waiting.retain(|_, reply| !reply.is_closed());
        self.next_call += 1;
        let call_id = format!("call-{}", self.next_call);
        let frame = call_frame(&call_id, &call.service, &call.method, call.payload, call.timeout);
        self.waiting.insert(call_id, call.reply);
        frame
    }

    /// Hands a reply to its caller (a reply nobody waits for is dropped).
    pub(crate) fn complete(&mut self, reply: RpcReply) {
        if let Some(waiting) = self.waiting.remove(&reply.call_id) {
            let _ = waiting.send(reply_result(reply));
        }
    }

    /// Fails every waiting call with `error`.
    pub(crate) fn fail_all(&mut self, error: &CallError) {
        for (_, waiting) in self.waiting.drain() {
            let _ = waiting.send(Err(error.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use syncline_proto::v1::Error;

    use super::*;

    fn outgoing() -> (OutgoingCall, oneshot::Receiver<CallResult>) {
        let (reply, receiver) = oneshot::channel();
        let call = OutgoingCall {
            service: "crm".into(),
            method: "CloseDeal".into(),
            payload: b"{}".to_vec(),
            timeout: Duration::from_micros(10),
            reply,
        };
        (call, receiver)
    }

    #[test]
    fn replies_reach_their_callers_by_call_id() {
        let mut calls = PendingCalls::default();
        let (first, mut first_reply) = outgoing();
        let (second, mut second_reply) = outgoing();
        let Some(client_frame::Msg::RpcCall(sent)) = calls.register(first).msg else { panic!("an RpcCall") };
        assert_eq!(sent.deadline_ms, 1, "a sub-millisecond timeout is not the server default");
        calls.register(second);
        calls.complete(RpcReply {
            call_id: "call-2".into(),
            result: Some(rpc_reply::Result::Error(Error {
                code: ErrorCode::NotFound as i32,
                message: "no such method".into(),
                ..Error::default()
            })),
        });
        let failed = second_reply.try_recv().unwrap().unwrap_err();
        assert_eq!(failed.code(), Some(ErrorCode::NotFound));
        calls.complete(RpcReply { call_id: "call-1".into(), result: Some(rpc_reply::Result::Payload(b"ok".to_vec())) });
        assert_eq!(first_reply.try_recv().unwrap().unwrap(), b"ok");
    }

    #[test]
    fn calls_and_replies_travel_as_binary_and_canonical_json_frames() {
        use prost::Message as _;
        use tokio_tungstenite::tungstenite::Message;

        use crate::wire::{FrameFormat, encode_client_frame};

        let frame = call_frame("c1", "crm", "CloseDeal", vec![0, 1, 254, 255], Duration::from_secs(2));
        let Message::Binary(bytes) = encode_client_frame(&frame, FrameFormat::Binary).unwrap() else {
            panic!("binary frames are binary");
        };
        assert_eq!(ClientFrame::decode(bytes).unwrap(), frame);
        let Message::Text(text) = encode_client_frame(&frame, FrameFormat::Json).unwrap() else {
            panic!("json frames are text");
        };
        let json: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
        // Canonical JSON: bytes as base64.
        assert_eq!(json["rpcCall"]["payload"], "AAH+/w==", "{json}");
        assert_eq!(json["rpcCall"]["deadlineMs"], 2000, "{json}");
        let reply: syncline_proto::v1::ServerFrame =
            serde_json::from_str(r#"{"rpcReply": {"callId": "c1", "payload": "b2s="}}"#).unwrap();
        let Some(syncline_proto::v1::server_frame::Msg::RpcReply(reply)) = reply.msg else { panic!("a reply") };
        assert_eq!(reply_result(reply), Ok(b"ok".to_vec()));
    }

    #[test]
    fn a_lost_connection_fails_every_waiting_call() {
        let mut calls = PendingCalls::default();
        let (call, mut reply) = outgoing();
        calls.register(call);
        calls.fail_all(&CallError::ConnectionLost);
        assert_eq!(reply.try_recv().unwrap(), Err(CallError::ConnectionLost));
        calls.complete(RpcReply { call_id: "call-1".into(), result: None });
    }
}
