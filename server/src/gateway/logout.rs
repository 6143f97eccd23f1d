//! Logout: the session ends, every session token of the device is revoked, and the
//! connection closes normally (1000: do not reconnect until the app asks).

use syncline_proto::close_code;
use syncline_push::Outbox;

use super::DeviceSession;

impl DeviceSession {
    /// Revokes the device's tokens and closes the connection.
    pub(super) async fn on_logout(&mut self, outbox: &Outbox) {
        self.subscriptions.clear();
        if let Some(identity) = &self.identity
            && let Err(error) = self.services.auth.revoke_tokens(&identity.client_id).await
        {
            tracing::error!(peer = %self.peer, %error, "could not revoke session tokens at logout");
        }
        outbox.close(close_code::NORMAL, "logged out");
    }
}
