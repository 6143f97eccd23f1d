//! Hello: the first frame of a session. Checks the credentials (password, backend token or
//! session token), counts the session against the user's connection cap and answers Welcome,
//! or a fatal Error and a close code the device acts on.

use syncline_proto::v1::{self, hello, server_frame};
use syncline_push::Outbox;

use super::DeviceSession;
use super::replies::frame;
use crate::auth::{AuthError, DeviceDetails};
use crate::error::ErrorClass;
use crate::storage::{DeviceState, ReportedDevice};

impl DeviceSession {
    pub(super) async fn on_hello(&mut self, hello: v1::Hello, outbox: &Outbox) {
        if hello.protocol_version != syncline_proto::PROTOCOL_VERSION {
            let message = format!(
                "protocol version {} is not supported; this server speaks {}",
                hello.protocol_version,
                syncline_proto::PROTOCOL_VERSION
            );
            return self.fatal(outbox, ErrorClass::UnsupportedVersion, &message).await;
        }
        let has_device_info = hello.device.is_some();
        let details = hello
            .device
            .map(|device| DeviceDetails {
                platform: device.platform,
                app_version: device.app_version,
                model: device.model,
            })
            .unwrap_or_default();
        // A resumed session's device details reach the registry with its last-seen time.
        let mut reported = None;
        let outcome = match hello.credentials {
            Some(hello::Credentials::Login(login)) => {
                let auth = &self.services.auth;
                auth.login(&login.username, &login.password, self.peer.ip(), &hello.client_id, details).await
            }
            Some(hello::Credentials::SessionToken(token)) => {
                reported = has_device_info.then(|| ReportedDevice {
                    platform: details.platform.clone(),
                    app_version: details.app_version.clone(),
                    model: details.model.clone(),
                });
                self.services.auth.resume(&token).await
            }
            Some(hello::Credentials::BackendToken(token)) => {
                self.services.auth.login_with_backend_token(&token, &hello.client_id, details).await
            }
            None => {
                let message = "Hello needs a login, a backend token or a session token";
                return self.fatal(outbox, ErrorClass::Unauthenticated, message).await;
            }
        };
        let (identity, token) = match outcome {
            Ok(done) => done,
            Err(AuthError::DeviceDisabled { client_id, state: state @ DeviceState::Locked }) => {
                // The right credentials of a locked device: it gets the commands it has not
                // acknowledged (the lock among them, with its reason) before the refusal.
                self.send_unacknowledged_commands(&client_id, outbox).await;
                tracing::debug!(peer = %self.peer, client_id, "locked device refused");
                let error = AuthError::DeviceDisabled { client_id, state };
                return self.fatal(outbox, error.class(), &error.to_string()).await;
            }
            Err(error) => return self.login_refused(error, outbox).await,
        };
        let limits = &self.services.limits;
        // A second Hello on this connection replaces the first session's slot.
        self.user_slot = None;
        match self.services.user_sessions.acquire(&identity.user_id, limits.max_connections_per_user).await {
            Ok(slot) => self.user_slot = Some(slot),
            Err(open) => {
                let message = format!(
                    "user {:?} already has {open} connections (limit {}); close one or retry later",
                    identity.user_id, limits.max_connections_per_user
                );
                tracing::debug!(peer = %self.peer, user_id = %identity.user_id, open, "per-user connection cap");
                return self.fatal(outbox, ErrorClass::ResourceExhausted, &message).await;
            }
        }
        let welcome = v1::Welcome {
            client_id: identity.client_id.clone(),
            session_token: token.token,
            user_id: identity.user_id.clone(),
            token_expires_at_ms: token.expires_ms,
            heartbeat_ms: limits.listener.session.heartbeat.as_millis() as u32,
            idle_timeout_ms: limits.listener.session.idle_timeout.as_millis() as u32,
            max_frame_bytes: limits.listener.max_frame_bytes as u32,
            max_page_size: limits.max_page_size,
            max_window: limits.max_window,
            sources: self.services.source_infos(&identity),
            max_page_bytes: u32::try_from(limits.max_page_bytes).unwrap_or(u32::MAX),
        };
        tracing::debug!(peer = %self.peer, user_id = %identity.user_id, client_id = %identity.client_id, "session started");
        let devices = self.services.devices.clone();
        match reported {
            Some(reported) => devices.seen_reporting(&identity.client_id, reported),
            None => devices.seen(&identity.client_id),
        }
        outbox.handshake_done();
        let _ = outbox.send_frame(frame(server_frame::Msg::Welcome(welcome))).await;
        // Commands the device has not acknowledged come right after Welcome, before any other
        // frame: the connection is attached (and reachable by mutation outcomes and new
        // commands) only after them. A command sent meanwhile is read again below.
        let sent_before = devices.sent_so_far();
        self.send_unacknowledged_commands(&identity.client_id, outbox).await;
        self.services.connections.attach(&identity.client_id, &identity.user_id, outbox);
        if devices.sent_so_far() != sent_before {
            self.send_unacknowledged_commands(&identity.client_id, outbox).await;
        }
        self.identity = Some(identity);
    }

    /// Ends a session whose credentials were refused (or could not be checked): a fatal
    /// Error of the refusal's class, with a generic message when the server failed.
    async fn login_refused(&self, error: AuthError, outbox: &Outbox) {
        let message = match &error {
            AuthError::Store(_) | AuthError::PasswordCheck(_) => {
                tracing::error!(peer = %self.peer, %error, "login failed on the server");
                "the server cannot check logins right now".to_owned()
            }
            AuthError::Unavailable(channel) => {
                tracing::warn!(peer = %self.peer, error = %channel, "login channel unavailable");
                error.to_string()
            }
            AuthError::BadCredentials
            | AuthError::InvalidToken
            | AuthError::ExpiredToken
            | AuthError::DeviceDisabled { .. }
            | AuthError::UserDisabled
            | AuthError::InvalidUserName
            | AuthError::BackendTokensDisabled
            | AuthError::InvalidBackendToken(_)
            | AuthError::LoginsBusy(_)
            | AuthError::LoginsLimited(_) => {
                tracing::debug!(peer = %self.peer, %error, "login refused");
                error.to_string()
            }
        };
        self.fatal(outbox, error.class(), &message).await;
    }
}
