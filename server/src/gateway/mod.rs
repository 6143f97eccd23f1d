//! The device gateway: the device protocol, one connection at a time. The only server code
//! that touches push's `Outbox`.
//!
//! Each connection's [`DeviceSession`] implements push's `SessionHandler`: it checks the
//! session's state (Hello first), and hands each command to the file that owns it:
//!
//! - `hello.rs`: Hello (logins, tokens, the per-user connection cap) and Welcome.
//! - `subscription.rs`: Subscribe, Ack, Pull, Unsubscribe: credit-based catch-up paging
//!   (snapshot, then log) and the switch to live push.
//! - `mutate.rs`: Mutate, checked and queued durably for the mutation dispatcher.
//! - `search.rs`: Search, forwarded to the source's channel.
//! - `rpc.rs`: RpcCall, started on the RPC router.
//! - `logout.rs`: Logout.
//! - `bulk.rs`: BulkRequest, answered with BulkReady when its files are written.
//! - `command.rs`: operator commands: the unacknowledged ones sent after Welcome, and
//!   CommandAck.
//! - `replies.rs`: frame builders, and the connections by device that mutation outcomes reach
//!   devices through (the domain's reply ports).
//! - `http/`: plain HTTP beside the socket (file downloads and uploads).
//! - `services.rs`: [`GatewayServices`], what every session shares: the store, the hub, auth,
//!   sources and limits, and the domain services.

mod bulk;
mod command;
mod hello;
pub mod http;
mod logout;
mod mutate;
mod replies;
mod rpc;
mod search;
pub mod services;
mod subscription;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use syncline_proto::close_code;
use syncline_proto::v1::{ClientFrame, client_frame};
use syncline_push::{CodecError, Outbox, SessionEnd, SessionFactory, SessionHandler};

use self::replies::error_frame;
pub use self::replies::{DeviceConnections, DeviceEvent, DeviceEventKind};
pub use self::services::{GatewayServices, UserSessions, UserSlot};
use self::subscription::Subscriptions;
use crate::auth::Identity;
use crate::error::ErrorClass;
use crate::metrics::counters::HandshakeResult;
use crate::storage::StoreError;

/// The session handler of one device connection.
pub struct DeviceSession {
    services: Arc<GatewayServices>,
    peer: SocketAddr,
    outbox: Outbox,
    identity: Option<Identity>,
    /// This session's place in its user's connection count (set at Welcome).
    user_slot: Option<UserSlot>,
    subscriptions: Subscriptions,
    /// Mobile RPC calls in flight on this connection (cancelled when it closes); made at the
    /// first call, so that connections that never call cost nothing for it.
    rpc: Option<crate::rpc::RpcCalls>,
}

/// Opens a [`DeviceSession`] for each new connection.
pub struct DeviceSessions {
    pub services: Arc<GatewayServices>,
    /// Where plain HTTP requests go ([`http`]).
    pub http: syncline_push::HttpHandoff,
}

impl SessionFactory for DeviceSessions {
    type Handler = DeviceSession;

    fn open(&self, peer: SocketAddr, outbox: Outbox) -> DeviceSession {
        DeviceSession::new(self.services.clone(), peer, outbox)
    }

    fn http(&self) -> Option<&syncline_push::HttpHandoff> {
        Some(&self.http)
    }
}

/// Runs blocking store work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work).await.map_err(|error| StoreError::Io(format!("blocking task failed: {error}")))?
}

impl DeviceSession {
    /// Returns the handler of a new connection from `peer`.
    pub fn new(services: Arc<GatewayServices>, peer: SocketAddr, outbox: Outbox) -> Self {
        Self {
            services,
            peer,
            outbox,
            identity: None,
            user_slot: None,
            subscriptions: Subscriptions::default(),
            rpc: None,
        }
    }

    /// Sends a fatal Error of `class` and closes the connection with the class's close code.
    async fn fatal(&self, outbox: &Outbox, class: ErrorClass, message: &str) {
        self.fatal_closing(outbox, class, message, class.close_code()).await;
    }

    /// Sends a fatal Error of `class` and closes the connection with `close`.
    async fn fatal_closing(&self, outbox: &Outbox, class: ErrorClass, message: &str, close: u16) {
        let _ = outbox.send_frame(error_frame(class, message, true)).await;
        outbox.close(close, message.to_owned());
    }
}

impl SessionHandler for DeviceSession {
    async fn on_frame(&mut self, frame: ClientFrame, outbox: &Outbox) {
        let Some(msg) = frame.msg else { return };
        if self.identity.is_none() {
            let result = match msg {
                client_frame::Msg::Hello(hello) => {
                    self.on_hello(hello, outbox).await;
                    if self.identity.is_some() { HandshakeResult::Ok } else { HandshakeResult::Refused }
                }
                // No session yet (Error UNAUTHENTICATED), and a client bug: the protocol-error
                // close, not the log-in-again one (device.proto).
                client_frame::Msg::Subscribe(_)
                | client_frame::Msg::Ack(_)
                | client_frame::Msg::Pull(_)
                | client_frame::Msg::Unsubscribe(_)
                | client_frame::Msg::Mutate(_)
                | client_frame::Msg::Search(_)
                | client_frame::Msg::RpcCall(_)
                | client_frame::Msg::BulkRequest(_)
                | client_frame::Msg::Logout(_)
                | client_frame::Msg::CommandAck(_) => {
                    self.fatal_closing(
                        outbox,
                        ErrorClass::Unauthenticated,
                        "the first frame must be Hello",
                        close_code::PROTOCOL_ERROR,
                    )
                    .await;
                    HandshakeResult::ProtocolError
                }
            };
            return self.services.handshakes.count(result);
        }
        if let Some(identity) = &self.identity {
            self.services.devices.seen(&identity.client_id);
        }
        match msg {
            client_frame::Msg::Hello(_) => {
                let _ = outbox
                    .send_frame(error_frame(ErrorClass::BadRequest, "the session has already started", false))
                    .await;
            }
            client_frame::Msg::Subscribe(subscribe) => self.on_subscribe_reporting(subscribe, outbox).await,
            client_frame::Msg::Ack(ack) => self.on_ack(ack, outbox).await,
            client_frame::Msg::Pull(pull) => self.on_pull(pull, outbox).await,
            client_frame::Msg::Unsubscribe(unsubscribe) => self.on_unsubscribe(&unsubscribe),
            client_frame::Msg::Logout(_) => self.on_logout(outbox).await,
            client_frame::Msg::Mutate(mutate) => self.on_mutate(mutate, outbox).await,
            client_frame::Msg::Search(search) => self.on_search(search, outbox).await,
            client_frame::Msg::RpcCall(call) => self.on_rpc_call(call, outbox).await,
            client_frame::Msg::CommandAck(ack) => self.on_command_ack(ack, outbox).await,
            client_frame::Msg::BulkRequest(request) => self.on_bulk_request(request, outbox).await,
        }
    }

    async fn on_bad_frame(&mut self, error: CodecError, outbox: &Outbox) {
        let message = error.to_string();
        if self.identity.is_none() {
            self.fatal(outbox, ErrorClass::BadRequest, &message).await;
        } else {
            let _ = outbox.send_frame(error_frame(ErrorClass::BadRequest, message, false)).await;
        }
    }

    async fn on_wake(&mut self, outbox: &Outbox) {
        self.catch_up_demoted(outbox).await;
    }

    async fn on_handshake_timeout(&mut self, outbox: &Outbox) {
        let message = format!(
            "no successful Hello within {} ms of connecting; send Hello first when reconnecting",
            self.services.limits.listener.session.handshake_timeout.as_millis()
        );
        self.fatal(outbox, ErrorClass::Timeout, &message).await;
        self.services.handshakes.count(HandshakeResult::Timeout);
    }

    fn on_closed(&mut self, _end: &SessionEnd) {
        self.subscriptions.clear();
        self.user_slot = None;
        if let Some(calls) = &self.rpc {
            calls.cancel_all();
        }
        if let Some(identity) = &self.identity {
            self.services.connections.detach(&identity.client_id, &self.outbox);
        }
    }
}
