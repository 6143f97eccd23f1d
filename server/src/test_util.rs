//! Test hooks (cargo feature `test-util`, never in a production build): what the end-to-end
//! tests of other crates read of a running server, through accessors rather than its fields.
//!
//! With `cfg(test)` it also holds `fixtures`, the pieces the server's own unit tests share: a
//! store in a temporary directory, gateway services around it, and a scripted channel served
//! over real gRPC on 127.0.0.1.
//!
//! `redis_server` starts a private `redis-server` for tests of the Redis store (and of
//! other crates that run a server on it).

#[cfg(test)]
pub(crate) mod fixtures;
pub mod redis_server;

use std::sync::Arc;
use std::time::Duration;

use syncline_push::Hub;

use crate::app::RunningServer;
use crate::auth::{Authenticator, Identity};
use crate::rpc::metrics::RpcMetrics;
use crate::storage::{PartitionName, Store};

impl RunningServer {
    /// Returns the server's store, for tests that seed it or read what it holds.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.services.store
    }

    /// Returns the hub that pushes commits to subscribed devices, for its counters.
    pub fn hub(&self) -> &Arc<Hub<PartitionName>> {
        &self.services.hub
    }

    /// Returns the authenticator, for the password pool's counters.
    pub fn auth(&self) -> &Authenticator {
        &self.services.auth
    }

    /// Returns the sessions `user_id` has open, as the per-user connection cap counts them.
    pub fn open_sessions_of(&self, user_id: &str) -> usize {
        self.services.user_sessions.count(user_id)
    }

    /// Renders the server's Prometheus metrics, as `GET /metrics` serves them.
    pub fn metrics_text(&self) -> String {
        self.metrics.render()
    }

    /// Returns the mobile RPC call counters.
    pub fn rpc_metrics(&self) -> &RpcMetrics {
        self.services.rpc.metrics()
    }

    /// Returns a session token for `identity`, signed by this server, that expired `ago`
    /// before now.
    pub fn expired_session_token(&self, identity: &Identity, ago: Duration) -> String {
        self.services.auth.expired_token_for_test(identity, ago)
    }
}
