//! One simulated app install: a task that connects, logs in, subscribes, applies pages,
//! acks, verifies checksums and reconnects, and a [`DeviceHandle`] to observe and steer it.
//!
//! The protocol decisions live in the crate-private `engine` module (pure); this file only moves frames
//! between the engine and a [`Connection`], runs the timers and publishes state.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use parking_lot::Mutex;
use syncline_proto::close_code;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
    time::{Instant, sleep, sleep_until},
};
use tracing::{Instrument, debug, info, info_span};

use crate::{
    backoff::Backoff,
    config::DeviceConfig,
    engine::{AfterDisconnect, Disconnect, ReconnectDelay, SyncEngine},
    notification::Notification,
    replica::{PartitionId, PartitionView},
    state::{ConnectionPhase, DeviceState, DeviceStats, StopReason},
    wire::{ConnectOptions, Connection, Incoming},
};

/// How long a requested stop waits for the close frame to go out before dropping the socket.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Stand-in deadline for "no live ack pending": far enough never to fire.
const NO_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);

/// The entry point: [`Device::start`] spawns a simulated app install.
#[derive(Debug)]
pub struct Device;

impl Device {
    /// Spawns a device task on the current tokio runtime and returns its handle. The device
    /// runs until [`DeviceHandle::stop`], until the handle is dropped, or until the server
    /// stops it (bad credentials, lock, logout).
    pub fn start(config: DeviceConfig) -> DeviceHandle {
        let engine = Arc::new(Mutex::new(SyncEngine::new(&config)));
        let (state_tx, state_rx) = watch::channel(DeviceState::default());
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (notification_tx, notification_rx) = match config.notification_capacity {
            Some(capacity) => {
                let (tx, rx) = mpsc::channel(capacity.max(1));
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let span = info_span!("device", user = %config.username, url = %config.url);
        let task = DeviceTask {
            options: ConnectOptions {
                format: config.format,
                ca_cert_pem: config.ca_cert_pem.clone(),
                connect_timeout: config.connect_timeout,
                local_addr: None,
            },
            healthy_after: config.backoff.healthy_after,
            backoff: Backoff::new(config.backoff, config.seed),
            url: config.url,
            engine: Arc::clone(&engine),
            state: state_tx,
            control: control_rx,
            outbox: NotificationOutbox {
                sender: notification_tx,
                queue: VecDeque::new(),
            },
            connections: 0,
            published: DeviceState::default(),
        };
        let task = tokio::spawn(task.run().instrument(span));
        DeviceHandle {
            engine,
            state: state_rx,
            control: control_tx,
            notifications: notification_rx,
            task,
        }
    }
}

/// Why [`DeviceHandle::wait_for`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The deadline passed; carries the last state seen.
    #[error("timed out waiting for the device; last state: {0:?}")]
    Timeout(Box<DeviceState>),
    /// The device stopped without reaching the condition.
    #[error("the device stopped: {0}")]
    Stopped(StopReason),
}

/// Requests from the handle to the task.
#[derive(Debug)]
enum Control {
    Cut,
    Stop,
}

/// Observes and steers a running device. Dropping it stops the device.
#[derive(Debug)]
pub struct DeviceHandle {
    engine: Arc<Mutex<SyncEngine>>,
    state: watch::Receiver<DeviceState>,
    control: mpsc::UnboundedSender<Control>,
    notifications: Option<mpsc::Receiver<Notification>>,
    task: JoinHandle<()>,
}

impl DeviceHandle {
    /// Returns a copy of partition `key` of `source` as the device holds it.
    pub fn view(&self, source: &str, key: &str) -> Option<PartitionView> {
        self.engine.lock().view(&PartitionId::new(source, key))
    }

    /// Returns the current state.
    pub fn state(&self) -> DeviceState {
        self.state.borrow().clone()
    }

    /// Returns a receiver of state changes (each change is published after the frame that
    /// caused it is handled).
    pub fn subscribe_state(&self) -> watch::Receiver<DeviceState> {
        self.state.clone()
    }

    /// Waits until `predicate` holds for the device's state, and returns that state. Wakes on
    /// each state change; fails at `deadline`, or as soon as the device has stopped and the
    /// predicate does not hold for its final state. The predicate runs while the state is
    /// borrowed: keep it quick (calling [`DeviceHandle::view`] from it is fine).
    pub async fn wait_for(
        &self,
        deadline: Instant,
        mut predicate: impl FnMut(&DeviceState) -> bool,
    ) -> Result<DeviceState, WaitError> {
        let mut state = self.state.clone();
        let waited = tokio::time::timeout_at(deadline, async {
            // Clone at once: the borrow of the watch must not outlive this block.
            state
                .wait_for(|current| predicate(current) || current.stop_reason().is_some())
                .await
                .map(|current| current.clone())
        })
        .await;
        let current = match waited {
            Ok(Ok(current)) => current,
            // The task is gone; its last published state is final.
            Ok(Err(_)) => self.state.borrow().clone(),
            Err(_) => return Err(WaitError::Timeout(Box::new(self.state.borrow().clone()))),
        };
        if predicate(&current) {
            return Ok(current);
        }
        match current.stop_reason() {
            Some(reason) => Err(WaitError::Stopped(reason.clone())),
            None => Err(WaitError::Timeout(Box::new(current))),
        }
    }

    /// Drops the device's socket without a close frame, as a lost network would; the device
    /// then reconnects with backoff and resumes from its cursors. Does nothing while the
    /// device is not connected.
    pub fn cut(&self) {
        let _ = self.control.send(Control::Cut);
    }

    /// Stops the device (closing its connection with 1000) and returns why it stopped, which
    /// is [`StopReason::Requested`] unless it had already stopped on its own.
    pub async fn stop(&self) -> StopReason {
        let _ = self.control.send(Control::Stop);
        let mut state = self.state.clone();
        let stopped = state
            .wait_for(|current| current.stop_reason().is_some())
            .await
            .map(|current| current.clone());
        let final_state = match stopped {
            Ok(current) => current,
            Err(_) => self.state.borrow().clone(),
        };
        final_state
            .stop_reason()
            .cloned()
            .unwrap_or(StopReason::Requested)
    }

    /// Returns the client id the server assigned, once welcomed.
    pub fn client_id(&self) -> Option<String> {
        self.state.borrow().client_id.clone()
    }

    /// Returns the counters.
    pub fn stats(&self) -> DeviceStats {
        self.engine.lock().stats().clone()
    }

    /// Takes the notification receiver (`None` when notifications are off, or when taken
    /// already). See [`crate::notification`] for what happens when it is not read.
    pub fn take_notifications(&mut self) -> Option<mpsc::Receiver<Notification>> {
        self.notifications.take()
    }

    /// Returns true once the device task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// How a session (one connection) ended.
enum SessionEnd {
    Disconnected(Disconnect),
    Stopped(StopReason),
}

/// Notifications produced but not yet taken by the channel. The session loop stops reading
/// the socket while any are queued, so this holds at most one frame's worth.
struct NotificationOutbox {
    sender: Option<mpsc::Sender<Notification>>,
    queue: VecDeque<Notification>,
}

impl NotificationOutbox {
    fn extend(&mut self, notifications: Vec<Notification>) {
        if self.sender.is_some() {
            self.queue.extend(notifications);
        }
    }

    fn has_pending(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Waits for room in the channel and hands over the oldest queued notification.
    /// Cancel-safe: a notification leaves the queue only when it is sent.
    async fn deliver_one(&mut self) {
        let Some(sender) = &self.sender else {
            self.queue.clear();
            return;
        };
        let delivered = match sender.reserve().await {
            Ok(permit) => {
                if let Some(notification) = self.queue.pop_front() {
                    permit.send(notification);
                }
                true
            }
            Err(_) => false,
        };
        if !delivered {
            // The app dropped the receiver: notifications are off from now on.
            self.sender = None;
            self.queue.clear();
        }
    }

    /// Hands over what fits without waiting (used when the device stops).
    fn deliver_without_waiting(&mut self) {
        let Some(sender) = &self.sender else { return };
        while let Some(notification) = self.queue.pop_front() {
            if sender.try_send(notification).is_err() {
                break;
            }
        }
        self.queue.clear();
    }
}

struct DeviceTask {
    url: String,
    options: ConnectOptions,
    healthy_after: Duration,
    backoff: Backoff,
    engine: Arc<Mutex<SyncEngine>>,
    state: watch::Sender<DeviceState>,
    control: mpsc::UnboundedReceiver<Control>,
    outbox: NotificationOutbox,
    connections: u64,
    /// The state as last published; the watch holds a copy.
    published: DeviceState,
}

impl DeviceTask {
    async fn run(mut self) {
        let reason = self.run_until_stopped().await;
        // Info, not warn, even for failures: the reason is returned through the state and
        // `DeviceHandle::stop`, and the caller decides how loud it is.
        info!(%reason, "device stopped");
        self.outbox.deliver_without_waiting();
        self.published.connection = ConnectionPhase::Stopped(reason);
        self.send_state();
    }

    async fn run_until_stopped(&mut self) -> StopReason {
        let mut delay = Duration::ZERO;
        loop {
            if !delay.is_zero() {
                self.set_phase(ConnectionPhase::Reconnecting);
                if let Some(reason) = self.pause(delay).await {
                    return reason;
                }
            }
            self.set_phase(ConnectionPhase::Connecting);
            let connection = match self.connect().await {
                Ok(connection) => connection,
                Err(reason) => return reason,
            };
            let Some(connection) = connection else {
                self.engine.lock().record_connect_failure();
                self.publish();
                delay = self.backoff.next_delay();
                continue;
            };
            self.connections += 1;
            if self.connections > 1 {
                self.engine.lock().record_reconnect();
            }
            let started = Instant::now();
            let end = self.run_session(connection).await;
            let disconnect = match end {
                SessionEnd::Stopped(reason) => return reason,
                SessionEnd::Disconnected(disconnect) => disconnect,
            };
            self.set_phase(ConnectionPhase::Reconnecting);
            let (after, healthy) = {
                let mut engine = self.engine.lock();
                let healthy = engine.is_welcomed()
                    && (engine.reached_complete() || started.elapsed() >= self.healthy_after);
                (engine.on_disconnect(&disconnect), healthy)
            };
            debug!(?disconnect, ?after, healthy, "disconnected");
            self.publish();
            if healthy {
                self.backoff.reset();
            }
            delay = match after {
                AfterDisconnect::Stop(reason) => return reason,
                AfterDisconnect::Reconnect(ReconnectDelay::Immediately) => Duration::ZERO,
                AfterDisconnect::Reconnect(ReconnectDelay::Jitter) => self.backoff.restart_delay(),
                AfterDisconnect::Reconnect(ReconnectDelay::Backoff) => self.backoff.next_delay(),
            };
        }
    }

    /// Opens a connection. `Ok(None)`: it failed and may be retried; `Err`: stop.
    async fn connect(&mut self) -> Result<Option<Connection>, StopReason> {
        let connecting = Connection::connect(&self.url, &self.options);
        tokio::pin!(connecting);
        loop {
            tokio::select! {
                result = &mut connecting => {
                    return match result {
                        Ok(connection) => Ok(Some(connection)),
                        Err(error) if error.is_permanent() => {
                            Err(StopReason::InvalidConfig { reason: error.to_string() })
                        }
                        Err(error) => {
                            debug!(error = %error, "connect failed");
                            Ok(None)
                        }
                    };
                }
                control = self.control.recv() => match control {
                    // Not connected yet: nothing to cut.
                    Some(Control::Cut) => {}
                    Some(Control::Stop) | None => return Err(StopReason::Requested),
                },
                () = self.outbox.deliver_one(), if self.outbox.has_pending() => {}
            }
        }
    }

    /// Waits `delay` before reconnecting; returns a stop reason if asked to stop meanwhile.
    async fn pause(&mut self, delay: Duration) -> Option<StopReason> {
        let until = sleep(delay);
        tokio::pin!(until);
        loop {
            tokio::select! {
                () = &mut until => return None,
                control = self.control.recv() => match control {
                    Some(Control::Cut) => {}
                    Some(Control::Stop) | None => return Some(StopReason::Requested),
                },
                () = self.outbox.deliver_one(), if self.outbox.has_pending() => {}
            }
        }
    }

    async fn run_session(&mut self, mut connection: Connection) -> SessionEnd {
        self.set_phase(ConnectionPhase::Handshaking);
        let hello = self.engine.lock().hello();
        if let Err(error) = connection.send(&hello).await {
            debug!(error = %error, "sending hello failed");
            return SessionEnd::Disconnected(Disconnect::Lost);
        }
        loop {
            let ack_deadline = self.engine.lock().live_ack_deadline();
            let ack_timer = ack_deadline.unwrap_or_else(|| Instant::now() + NO_DEADLINE);
            tokio::select! {
                control = self.control.recv() => match control {
                    Some(Control::Cut) => {
                        info!("connection cut");
                        connection.cut();
                        return SessionEnd::Disconnected(Disconnect::Cut);
                    }
                    Some(Control::Stop) | None => {
                        close_quietly(&mut connection).await;
                        return SessionEnd::Stopped(StopReason::Requested);
                    }
                },
                () = self.outbox.deliver_one(), if self.outbox.has_pending() => {}
                // While notifications wait for the app, the socket is not read: the app's
                // pace becomes the device's pace (see `crate::notification`).
                incoming = connection.recv(), if !self.outbox.has_pending() => match incoming {
                    Ok(Incoming::Frame(frame)) => {
                        let reaction = {
                            let mut engine = self.engine.lock();
                            let reaction = engine.on_frame(frame, Instant::now());
                            engine.publish(&mut self.published);
                            reaction
                        };
                        self.send_state();
                        self.outbox.extend(reaction.notifications);
                        for frame in &reaction.frames {
                            if let Err(error) = connection.send(frame).await {
                                debug!(error = %error, "send failed");
                                return SessionEnd::Disconnected(Disconnect::Lost);
                            }
                        }
                        if let Some(reason) = reaction.stop {
                            close_quietly(&mut connection).await;
                            return SessionEnd::Stopped(reason);
                        }
                    }
                    Ok(Incoming::Closed { code, reason }) => {
                        info!(code, %reason, "closed by the server");
                        return SessionEnd::Disconnected(Disconnect::Closed { code, reason });
                    }
                    Err(error) => {
                        info!(error = %error, "connection lost");
                        return SessionEnd::Disconnected(Disconnect::Lost);
                    }
                },
                () = sleep_until(ack_timer), if ack_deadline.is_some() => {
                    let frames = self.engine.lock().due_live_acks(Instant::now());
                    for frame in &frames {
                        if let Err(error) = connection.send(frame).await {
                            debug!(error = %error, "send failed");
                            return SessionEnd::Disconnected(Disconnect::Lost);
                        }
                    }
                    self.publish();
                }
            }
        }
    }

    fn set_phase(&mut self, phase: ConnectionPhase) {
        if self.published.connection != phase {
            self.published.connection = phase;
            self.send_state();
        }
    }

    /// Copies the engine's state into the published state and sends it.
    fn publish(&mut self) {
        self.engine.lock().publish(&mut self.published);
        self.send_state();
    }

    /// Sends the published state to watchers. Never called with the engine locked: a
    /// watcher's predicate may lock the engine (e.g. through `DeviceHandle::view`) while it
    /// holds the watch's read lock.
    fn send_state(&self) {
        self.state
            .send_modify(|state| state.clone_from(&self.published));
    }
}

/// Sends a normal close frame, giving up after [`CLOSE_GRACE`].
async fn close_quietly(connection: &mut Connection) {
    let closing = connection.close(close_code::NORMAL, "device stopped");
    if let Ok(Err(error)) = tokio::time::timeout(CLOSE_GRACE, closing).await {
        debug!(error = %error, "close failed");
    }
}
