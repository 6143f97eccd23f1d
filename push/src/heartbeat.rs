//! Heartbeats and idle timeouts for every connection from one shared sweeper, instead of two
//! timers per connection.
//!
//! Each session registers its [`Outbox`] here and stamps the connection whenever something
//! arrives from the device (any frame, pongs included) with the sweeper's coarse clock. A
//! single task wakes every tick (a quarter of the shortest timer, 50 ms to 1 s) and walks the
//! registry once: a connection silent for longer than the idle timeout is closed with 4408;
//! one whose last ping is a heartbeat old gets a ping queued behind its frames. An idle
//! connection therefore costs one registry slot and two words, not two timer entries, and a
//! frame arriving costs one relaxed atomic store rather than re-arming a timer.
//!
//! The handshake deadline too: a connection whose handler has not marked its handshake done
//! ([`Outbox::handshake_done`]) by [`Timers::handshake_timeout`] after it registered has its
//! session told, which closes it (4408) after the handler has had its say.
//!
//! Server shutdown goes through the registry too: when it fires, the sweeper closes every
//! registered connection with "reconnect now" (1012), and a connection registered after that
//! is closed at once. Sessions therefore wait on nothing shared.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use slab::Slab;
use syncline_proto::close_code;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::outbox::{Outbox, Outgoing};

/// Finest sweep interval, whatever the configured heartbeat.
const MIN_TICK: Duration = Duration::from_millis(50);
/// Coarsest sweep interval: pings and idle closes are at most this late.
const MAX_TICK: Duration = Duration::from_secs(1);

/// The timers the sweeper keeps for every connection (a session's are in its
/// `SessionConfig`, whose `timers()` returns them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// Interval between server pings.
    pub heartbeat: Duration,
    /// A connection that sends nothing (not even a pong) for this long is closed (4408).
    pub idle_timeout: Duration,
    /// A connection whose handshake is not done this long after it registered is told, then
    /// closed (4408).
    pub handshake_timeout: Duration,
}

/// The shared heartbeat sweeper of a listener. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Heartbeats {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    epoch: Instant,
    /// Milliseconds since `epoch`, advanced by the sweeper at each tick.
    now_ms: AtomicU64,
    heartbeat_ms: u64,
    idle_timeout_ms: u64,
    handshake_timeout_ms: u64,
    tick: Duration,
    connections: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    entries: Slab<Entry>,
    /// Set at shutdown: every connection is closed, and so is any registered later.
    shutting_down: bool,
}

#[derive(Debug)]
struct Entry {
    outbox: Outbox,
    /// Coarse time of the last ping queued (or of the registration).
    last_ping_ms: u64,
    /// When the handshake must be done by, until it is done or the deadline has fired.
    handshake_deadline_ms: Option<u64>,
}

/// A connection's place in the registry; leaves it when dropped.
#[derive(Debug)]
pub struct Registration {
    inner: Arc<Inner>,
    key: usize,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.inner.connections.lock().entries.try_remove(self.key);
    }
}

impl Heartbeats {
    /// Returns a registry pinging every `timers.heartbeat`, closing connections silent for
    /// `timers.idle_timeout` and expiring handshakes not done within
    /// `timers.handshake_timeout`. Nothing happens until [`Heartbeats::run`] runs.
    pub fn new(timers: Timers) -> Self {
        let shortest = timers.heartbeat.min(timers.idle_timeout).min(timers.handshake_timeout);
        let tick = (shortest / 4).clamp(MIN_TICK, MAX_TICK);
        Self {
            inner: Arc::new(Inner {
                epoch: Instant::now(),
                now_ms: AtomicU64::new(0),
                heartbeat_ms: millis(timers.heartbeat).max(1),
                idle_timeout_ms: millis(timers.idle_timeout).max(1),
                handshake_timeout_ms: millis(timers.handshake_timeout).max(1),
                tick,
                connections: Mutex::new(Registry::default()),
            }),
        }
    }

    /// Returns the sweep interval.
    #[cfg(test)]
    fn tick(&self) -> Duration {
        self.inner.tick
    }

    /// Returns the coarse clock: milliseconds since the registry was created, as of the last
    /// sweep.
    pub fn now_ms(&self) -> u64 {
        self.inner.now_ms.load(Ordering::Relaxed)
    }

    /// Registers a connection: it gets pings, and its idle time and handshake deadline are
    /// watched from now on. After shutdown it is closed at once (1012).
    pub fn register(&self, outbox: &Outbox) -> Registration {
        let now = self.now_ms();
        outbox.touch(now);
        // From the precise clock, not the coarse one (up to a tick behind): the deadline may
        // fire up to a tick late, never early.
        let handshake_deadline_ms = millis(self.inner.epoch.elapsed()).saturating_add(self.inner.handshake_timeout_ms);
        let mut registry = self.inner.connections.lock();
        if registry.shutting_down {
            close_for_restart(outbox);
        }
        let entry =
            Entry { outbox: outbox.clone(), last_ping_ms: now, handshake_deadline_ms: Some(handshake_deadline_ms) };
        let key = registry.entries.insert(entry);
        Registration { inner: self.inner.clone(), key }
    }

    /// Returns the number of registered connections.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.connections.lock().entries.len()
    }

    /// Sweeps every tick until `shutdown` fires, then closes every connection with 1012
    /// ("reconnect now"): the sessions send what is queued, then the close frame.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(self.inner.tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticks.tick() => self.sweep(),
            }
        }
        let mut registry = self.inner.connections.lock();
        registry.shutting_down = true;
        for (_, entry) in registry.entries.iter() {
            close_for_restart(&entry.outbox);
        }
    }

    /// Advances the coarse clock, closes idle connections, expires late handshakes and queues
    /// due pings.
    fn sweep(&self) {
        let inner = &*self.inner;
        let now = millis(inner.epoch.elapsed());
        inner.now_ms.store(now, Ordering::Relaxed);
        let mut registry = inner.connections.lock();
        for (_, entry) in registry.entries.iter_mut() {
            if entry.outbox.is_closed() {
                continue;
            }
            if now.saturating_sub(entry.outbox.last_seen_ms()) > inner.idle_timeout_ms {
                entry.outbox.close(close_code::IDLE_TIMEOUT, "idle timeout");
                continue;
            }
            if let Some(deadline) = entry.handshake_deadline_ms {
                if entry.outbox.is_handshake_done() {
                    entry.handshake_deadline_ms = None;
                } else if now >= deadline {
                    entry.handshake_deadline_ms = None;
                    entry.outbox.expire_handshake();
                    continue;
                }
            }
            if now.saturating_sub(entry.last_ping_ms) >= inner.heartbeat_ms {
                entry.last_ping_ms = now;
                // A full queue means frames are flowing anyway; the ping waits a heartbeat.
                let _ = entry.outbox.try_push(Outgoing::Ping);
            }
        }
    }
}

fn close_for_restart(outbox: &Outbox) {
    outbox.close(close_code::SERVICE_RESTART, "server restarting");
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Timers with a handshake deadline far beyond the test's span.
    fn timers(heartbeat: Duration, idle_timeout: Duration) -> Timers {
        Timers { heartbeat, idle_timeout, handshake_timeout: Duration::from_secs(3600) }
    }

    #[tokio::test(start_paused = true)]
    async fn silent_connections_are_closed_and_live_ones_pinged() {
        let heartbeats = Heartbeats::new(timers(Duration::from_secs(1), Duration::from_secs(3)));
        let (silent, _silent_rx) = Outbox::for_test(8);
        let (chatty, mut chatty_rx) = Outbox::for_test(8);
        let _silent_registration = heartbeats.register(&silent);
        let chatty_registration = heartbeats.register(&chatty);
        let shutdown = CancellationToken::new();
        let sweeper = tokio::spawn(heartbeats.clone().run(shutdown.clone()));
        let mut pings = 0;
        // The paused clock advances only when every task waits: each step is one sweep.
        for _ in 0..20 {
            tokio::time::sleep(heartbeats.tick()).await;
            chatty.touch(heartbeats.now_ms());
            while let Ok(outgoing) = chatty_rx.try_recv() {
                assert!(matches!(outgoing, Outgoing::Ping));
                pings += 1;
            }
        }
        assert!(silent.is_closed(), "silent for 5 s with a 3 s idle timeout");
        assert!(!chatty.is_closed(), "a connection that keeps talking stays open");
        assert!((3..=6).contains(&pings), "about one ping a second over 5 s, got {pings}");
        assert_eq!(heartbeats.len(), 2);
        drop(chatty_registration);
        assert_eq!(heartbeats.len(), 1, "a dropped registration leaves the registry");
        shutdown.cancel();
        sweeper.await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_closes_every_connection_and_any_registered_later() {
        let heartbeats = Heartbeats::new(timers(Duration::from_secs(25), Duration::from_secs(60)));
        let (before, _before_rx) = Outbox::for_test(8);
        let _before_registration = heartbeats.register(&before);
        let shutdown = CancellationToken::new();
        let sweeper = tokio::spawn(heartbeats.clone().run(shutdown.clone()));
        shutdown.cancel();
        sweeper.await.unwrap();
        assert!(before.is_closed());
        assert_eq!(before.close_request(), Some((close_code::SERVICE_RESTART, "server restarting".to_owned())));
        let (late, _late_rx) = Outbox::for_test(8);
        let _late_registration = heartbeats.register(&late);
        assert!(late.is_closed(), "a connection that finished its handshake after shutdown is closed too");
    }
}
