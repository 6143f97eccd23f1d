//! Connection lifecycle events: each function logs and counts together.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::session::SessionEnd;
use crate::stats::WireStats;

/// Lifetime counters of the device listener, exported by the server's Prometheus metrics
/// (tests read the timeouts too).
#[derive(Debug, Default)]
pub struct ConnectionEvents {
    /// Connections that completed their WebSocket upgrade.
    pub opened: AtomicU64,
    /// Sessions that ended, for whatever reason.
    pub closed: AtomicU64,
    /// TLS or WebSocket handshakes that failed or timed out (refused upgrades included).
    pub handshake_failures: AtomicU64,
    /// Failed `accept` calls (e.g. out of file descriptors).
    pub accept_failures: AtomicU64,
    /// Connections closed because the device stayed silent (4408).
    pub idle_timeouts: AtomicU64,
    /// Connections closed because their handshake (the device's Hello) was not done in time.
    pub handshake_timeouts: AtomicU64,
}

/// The process-wide connection counters.
pub static EVENTS: ConnectionEvents = ConnectionEvents {
    opened: AtomicU64::new(0),
    closed: AtomicU64::new(0),
    handshake_failures: AtomicU64::new(0),
    accept_failures: AtomicU64::new(0),
    idle_timeouts: AtomicU64::new(0),
    handshake_timeouts: AtomicU64::new(0),
};

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// A connection completed its WebSocket upgrade; returns its id.
pub(crate) fn connection_opened(peer: SocketAddr) -> u64 {
    let conn_id = NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed);
    EVENTS.opened.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(conn_id, %peer, "connection opened");
    conn_id
}

/// A connection ended.
pub(crate) fn connection_closed(conn_id: u64, peer: SocketAddr, end: &SessionEnd) {
    EVENTS.closed.fetch_add(1, Ordering::Relaxed);
    match end {
        SessionEnd::IdleTimeout => {
            EVENTS.idle_timeouts.fetch_add(1, Ordering::Relaxed);
        }
        SessionEnd::HandshakeTimeout => {
            EVENTS.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
        }
        SessionEnd::ClosedByServer { .. }
        | SessionEnd::ClosedByPeer
        | SessionEnd::TransportError(_)
        | SessionEnd::FrameTooLarge
        | SessionEnd::Shutdown => {}
    }
    tracing::debug!(conn_id, %peer, ?end, "connection closed");
}

/// A TLS or WebSocket handshake failed or timed out (counted in the listener's `stats` too).
pub(crate) fn handshake_failed(peer: SocketAddr, error: &str, stats: &WireStats) {
    EVENTS.handshake_failures.fetch_add(1, Ordering::Relaxed);
    stats.upgrade_failed();
    tracing::debug!(%peer, error, "handshake failed");
}

/// `accept` failed (e.g. out of file descriptors).
pub(crate) fn accept_failed(error: &std::io::Error) {
    EVENTS.accept_failures.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(%error, "accept failed");
}
