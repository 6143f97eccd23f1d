//! RpcCall: started on the RPC router, off the session loop; the reply comes later as
//! RpcReply on this connection, and calls still running when it closes are cancelled.

use std::sync::Arc;

use syncline_proto::v1;
use syncline_push::Outbox;

use super::DeviceSession;
use super::replies::ConnectionReplies;

impl DeviceSession {
    /// Starts a call (made lazily: connections that never call cost nothing for RPC).
    pub(super) async fn on_rpc_call(&mut self, call: v1::RpcCall, outbox: &Outbox) {
        let Some(identity) = &self.identity else { return };
        let router = &self.services.rpc;
        let calls =
            self.rpc.get_or_insert_with(|| router.connection_calls(Arc::new(ConnectionReplies(outbox.clone()))));
        calls.start(call, identity).await;
    }
}
