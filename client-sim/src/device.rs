//! One simulated app install: a task that connects, logs in, subscribes, applies pages,
//! acks, verifies checksums and reconnects, and a [`DeviceHandle`] to observe and steer it.
//!
//! The protocol decisions live in the crate-private `engine` module (pure); this file only moves frames
//! between the engine and a [`Connection`], runs the timers and publishes state.
//!
//! Device-side writes ([`DeviceHandle::create`], [`DeviceHandle::update`],
//! [`DeviceHandle::delete`]) work offline: they are written to the mutation queue and shown
//! in [`DeviceHandle::view`] before the call returns, and the task is nudged to send them if
//! the device is connected. See [`crate::outbox`] for ordering and failure handling.
//!
//! Business calls ([`DeviceHandle::call`]) are online-only: see [`crate::rpc`].

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use parking_lot::Mutex;
use syncline_proto::{
    close_code,
    v1::{ClientFrame, Value, server_frame},
};
use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
    time::{Instant, sleep, sleep_until},
};
use tracing::{Instrument, debug, info, info_span};

use crate::{
    backoff::Backoff,
    blob_transfer::BlobClient,
    blob_uploads::{BlobUploads, LocalBlobs},
    bulk::BulkRunner,
    config::DeviceConfig,
    engine::{AfterDisconnect, Disconnect, ReconnectDelay, SearchError, SearchQuery, SearchResults, SyncEngine},
    notification::{Notification, NotificationOutbox},
    outbox::{MutationQueue, OutboxError, QueuedMutation, Resolution, Resolved},
    replica::{PartitionId, PartitionView},
    rpc::{CallError, CallResult, DEFAULT_CALL_TIMEOUT, OutgoingCall, PendingCalls},
    state::{ConnectionPhase, DeviceState, DeviceStats, StopReason},
    wire::{ConnectOptions, Connection, Incoming},
};

/// How long a requested stop waits for the close frame to go out before dropping the socket.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How long a device that acknowledged a lock, wipe or logout waits for the server to close
/// the connection (it does once it has read the ack and the Logout).
const SERVER_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Stand-in deadline for "no live ack pending": far enough never to fire.
const NO_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);

/// The entry point: [`Device::start`] spawns a simulated app install.
#[derive(Debug)]
pub struct Device;

impl Device {
    /// Spawns a device task on the current tokio runtime and returns its handle. The device
    /// runs until [`DeviceHandle::stop`], until the handle is dropped, or until the server
    /// stops it (bad credentials, lock, logout).
    ///
    /// # Panics
    ///
    /// When [`DeviceConfig::mutation_store`] names a file that cannot be opened as a
    /// mutation queue; [`Device::try_start`] returns that error instead.
    pub fn start(config: DeviceConfig) -> DeviceHandle {
        match Self::try_start(config) {
            Ok(handle) => handle,
            Err(error) => panic!("cannot start the device: {error}"),
        }
    }

    /// Opens the device's mutation queue, then spawns the device as [`Device::start`] does.
    pub fn try_start(config: DeviceConfig) -> Result<DeviceHandle, OutboxError> {
        let queue = MutationQueue::open(config.mutation_store.as_deref(), config.max_queued_mutations)?;
        if !queue.mutations().is_empty() {
            info!(path = %queue.path().display(), queued = queue.mutations().len(), "resuming queued mutations");
        }
        let engine = Arc::new(Mutex::new(SyncEngine::with_queue(&config, queue)));
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
        let blobs = Arc::new(LocalBlobs::new(config.blob_dir.as_deref()));
        let blob_client = BlobClient::new(&config.url, config.ca_cert_pem.as_deref())
            .inspect_err(|error| info!(%error, "no blob transfers for this device"))
            .ok();
        let task = DeviceTask {
            options: ConnectOptions {
                format: config.format,
                ca_cert_pem: config.ca_cert_pem.clone(),
                connect_timeout: config.connect_timeout,
                local_addr: None,
            },
            healthy_after: config.backoff.healthy_after,
            backoff: Backoff::new(config.backoff, config.seed),
            bulk: BulkRunner::new(&config.url, config.ca_cert_pem.clone(), config.bulk_dir.clone()),
            url: config.url,
            engine: Arc::clone(&engine),
            state: state_tx,
            control: control_rx,
            outbox: NotificationOutbox::new(notification_tx),
            connections: 0,
            published: DeviceState::default(),
            calls: PendingCalls::default(),
            searches: HashMap::new(),
            blob_uploads: BlobUploads::new(blob_client.clone(), blobs.clone()),
        };
        let task = tokio::spawn(task.run().instrument(span));
        Ok(DeviceHandle {
            engine,
            state: state_rx,
            control: control_tx,
            notifications: notification_rx,
            task,
            blobs,
            blob_client,
        })
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

/// Answers a search.
type SearchReply = oneshot::Sender<Result<SearchResults, SearchError>>;

/// Requests from the handle to the task.
#[derive(Debug)]
enum Control {
    Cut,
    Stop,
    /// The mutation queue changed: send what can go and publish the state.
    Flush,
    /// Send a business call (when connected) and hand its reply over.
    Call(OutgoingCall),
    /// Send a search on the current connection and answer with its result.
    Search(SearchQuery, SearchReply),
    /// Log in again with a password (when signed out).
    Login {
        username: String,
        password: String,
    },
}

/// Observes and steers a running device. Dropping it stops the device.
#[derive(Debug)]
pub struct DeviceHandle {
    pub(crate) engine: Arc<Mutex<SyncEngine>>,
    state: watch::Receiver<DeviceState>,
    control: mpsc::UnboundedSender<Control>,
    notifications: Option<mpsc::Receiver<Notification>>,
    task: JoinHandle<()>,
    /// The bytes of blobs attached or downloaded.
    pub(crate) blobs: Arc<LocalBlobs>,
    pub(crate) blob_client: Option<BlobClient>,
}

impl DeviceHandle {
    /// Returns a copy of partition `key` of `source` as the app sees it: the records synced
    /// from the server with the device's unfinished mutations applied (a create shows under
    /// its temporary id until linked). `total` and `checksum` are those of these records.
    /// Also returns the partition when the device holds only mutations of it.
    pub fn view(&self, source: &str, key: &str) -> Option<PartitionView> {
        self.engine.lock().view(&PartitionId::new(source, key))
    }

    /// Returns a copy of partition `key` of `source` exactly as the server's log gave it,
    /// without the device's unfinished mutations: what to persist and pass to
    /// [`DeviceConfig::restore`] (the mutation queue persists on its own).
    pub fn synced_view(&self, source: &str, key: &str) -> Option<PartitionView> {
        self.engine.lock().synced_view(&PartitionId::new(source, key))
    }

    /// Creates a record with `fields` in partition `key` of `source` (`None`: the source's
    /// natural key) and returns its temporary id (`tmp-<hex>`). Works offline: the create
    /// is queued durably and shows in [`DeviceHandle::view`] at once (made with the natural
    /// key before this run's first `Welcome`, it shows once the server named the key); it is
    /// sent as soon as the device is connected. When the backend has created it, a
    /// [`crate::MutationOutcome::Ok`] notification carries the link to its real id, and the
    /// device renames the record and the temporary id wherever its queue uses it.
    pub fn create(
        &self,
        source: &str,
        key: Option<&str>,
        fields: BTreeMap<String, Value>,
    ) -> Result<String, OutboxError> {
        let temp_id = self.engine.lock().create(source, key, fields)?;
        self.flush();
        Ok(temp_id)
    }

    /// Sets `fields` of record `id` (a temporary id of a create is fine) and returns the
    /// mutation id. `base_version` is the record version the change is based on; `None`
    /// takes the version of the record the device last got from the server. Works offline,
    /// like [`DeviceHandle::create`].
    pub fn update(
        &self,
        source: &str,
        key: Option<&str>,
        id: &str,
        fields: BTreeMap<String, Value>,
        base_version: Option<u64>,
    ) -> Result<String, OutboxError> {
        let mutation_id = self.engine.lock().update(source, key, id, fields, base_version)?;
        self.flush();
        Ok(mutation_id)
    }

    /// Deletes record `id` and returns the mutation id. Works offline, like
    /// [`DeviceHandle::create`].
    pub fn delete(&self, source: &str, key: Option<&str>, id: &str) -> Result<String, OutboxError> {
        let mutation_id = self.engine.lock().delete(source, key, id)?;
        self.flush();
        Ok(mutation_id)
    }

    /// Answers a failed mutation: [`Resolution::Retry`] sends it again under a new mutation
    /// id; [`Resolution::Discard`] drops it and rolls its local change back to the server's
    /// version. Later mutations of the same source wait until then.
    pub fn resolve(&self, mutation_id: &str, resolution: Resolution) -> Result<Resolved, OutboxError> {
        let resolved = self.engine.lock().resolve(mutation_id, resolution)?;
        self.flush();
        Ok(resolved)
    }

    /// Calls `method` of the backend service `service` with `payload` over the device's
    /// socket and returns the reply payload, waiting at most [`DEFAULT_CALL_TIMEOUT`]. See
    /// [`DeviceHandle::call_with_timeout`].
    pub async fn call(&self, service: &str, method: &str, payload: Vec<u8>) -> CallResult {
        self.call_with_timeout(service, method, payload, DEFAULT_CALL_TIMEOUT).await
    }

    /// Calls `method` of `service` and waits at most `timeout` for the reply (which is also
    /// the deadline the server gives the backend). Fails at once when the device is not
    /// connected; see [`crate::rpc`] for the errors.
    pub async fn call_with_timeout(
        &self,
        service: &str,
        method: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> CallResult {
        let (reply, receiver) = oneshot::channel();
        let call = OutgoingCall { service: service.to_owned(), method: method.to_owned(), payload, timeout, reply };
        self.control.send(Control::Call(call)).map_err(|_| CallError::Stopped)?;
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(CallError::Stopped),
            Err(_) => Err(CallError::Timeout(timeout)),
        }
    }

    /// Searches `query.source` through its channel and returns the matches. When the channel
    /// says so, the matches are also merged into [`DeviceHandle::view`] of their partition
    /// (until the device has that partition caught up, whose replica then holds the whole
    /// partition). Needs a connection: fails at once with [`SearchError::Offline`] when there
    /// is none, and with [`SearchError::Timeout`] when no answer came within `timeout`.
    pub async fn search(&self, query: SearchQuery, timeout: Duration) -> Result<SearchResults, SearchError> {
        let (reply, answer) = oneshot::channel();
        if self.control.send(Control::Search(query, reply)).is_err() {
            return Err(SearchError::Stopped);
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(SearchError::Stopped),
            Err(_) => Err(SearchError::Timeout),
        }
    }

    /// Returns the unfinished mutations (pending, acked or failed) in queue order.
    pub fn mutations(&self) -> Vec<QueuedMutation> {
        self.engine.lock().queued_mutations()
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
    /// each state change; fails at `deadline`, or as soon as the device has stopped for good
    /// ([`ConnectionPhase::Stopped`]; signed out, it may log in again) and the predicate does
    /// not hold for its final state. The predicate runs while the state is
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
                .wait_for(|current| predicate(current) || matches!(current.connection, ConnectionPhase::Stopped(_)))
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
        let stopped = state.wait_for(|current| current.stop_reason().is_some()).await.map(|current| current.clone());
        let final_state = match stopped {
            Ok(current) => current,
            Err(_) => self.state.borrow().clone(),
        };
        final_state.stop_reason().cloned().unwrap_or(StopReason::Requested)
    }

    /// Logs in again with `username` and `password` after the device signed out
    /// ([`ConnectionPhase::SignedOut`]: an operator's lock, wipe or logout, or a refused
    /// login of a locked device): the device connects at once with the password, and signs
    /// out again (close 4003) while it is still locked. Ignored while the device is signed
    /// in; fails only when the device has stopped for good.
    pub fn login(&self, username: &str, password: &str) -> Result<(), WaitError> {
        let login = Control::Login { username: username.to_owned(), password: password.to_owned() };
        if self.control.send(login).is_err() {
            let reason = self.state.borrow().stop_reason().cloned().unwrap_or(StopReason::Requested);
            return Err(WaitError::Stopped(reason));
        }
        Ok(())
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

    fn flush(&self) {
        // A stopped device keeps the queue for the next start on the same store.
        let _ = self.control.send(Control::Flush);
    }
}

/// How a session (one connection) ended.
enum SessionEnd {
    Disconnected(Disconnect),
    Stopped(StopReason),
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
    /// Business calls waiting for their replies on the current connection.
    calls: PendingCalls,
    /// Searches sent on the current connection, by search id.
    searches: HashMap<String, SearchReply>,
    /// Uploads of the blobs queued mutations reference.
    blob_uploads: BlobUploads,
    /// Bulk file downloads (they go on across reconnects).
    bulk: BulkRunner,
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

    /// Runs sessions until the device stops for good; while signed out, waits for the app
    /// to log in again.
    async fn run_until_stopped(&mut self) -> StopReason {
        loop {
            let reason = self.run_until_signed_out().await;
            if !reason.waits_for_login() {
                return reason;
            }
            info!(%reason, "signed out; waiting for the app to log in again");
            self.published.connection = ConnectionPhase::SignedOut(reason);
            self.publish();
            if !self.wait_for_login().await {
                return StopReason::Requested;
            }
        }
    }

    /// Waits while signed out until the app logs in again (true) or stops the device (false).
    async fn wait_for_login(&mut self) -> bool {
        loop {
            tokio::select! {
                control = self.control.recv() => match control {
                    Some(Control::Login { username, password }) => {
                        self.engine.lock().log_in_with_password(&username, &password);
                        self.backoff.reset();
                        return true;
                    }
                    Some(Control::Cut) => {}
                    Some(Control::Call(call)) => refuse_offline(call),
                    Some(Control::Search(_, reply)) => {
                        let _ = reply.send(Err(SearchError::Offline));
                    }
                    Some(Control::Flush) => self.publish(),
                    Some(Control::Stop) | None => return false,
                },
                () = self.outbox.deliver_one(), if self.outbox.has_pending() => {}
            }
        }
    }

    /// Runs sessions, reconnecting as the server and the network say, until the device stops
    /// or signs out.
    async fn run_until_signed_out(&mut self) -> StopReason {
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
            self.calls.fail_all(&CallError::ConnectionLost);
            self.engine.lock().abandon_searches();
            for (_, reply) in self.searches.drain() {
                let _ = reply.send(Err(SearchError::Disconnected));
            }
            let disconnect = match end {
                SessionEnd::Stopped(reason) => return reason,
                SessionEnd::Disconnected(disconnect) => disconnect,
            };
            let (after, healthy) = {
                let mut engine = self.engine.lock();
                let healthy =
                    engine.is_welcomed() && (engine.reached_complete() || started.elapsed() >= self.healthy_after);
                (engine.on_disconnect(&disconnect), healthy)
            };
            debug!(?disconnect, ?after, healthy, "disconnected");
            // One publication with the connection and every partition reset together, so no
            // observer sees a partition "caught up" on a connection that is gone.
            self.published.connection = ConnectionPhase::Reconnecting;
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
                    // Not connected yet: nothing to cut, and mutations wait for the session.
                    // A login while signed in changes nothing.
                    Some(Control::Cut | Control::Login { .. }) => {}
                    Some(Control::Call(call)) => refuse_offline(call),
                    Some(Control::Search(_, reply)) => {
                        let _ = reply.send(Err(SearchError::Offline));
                    }
                    Some(Control::Flush) => {
                        // Field by field: the connect future borrows the URL.
                        self.engine.lock().publish(&mut self.published);
                        self.send_state();
                    }
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
                    Some(Control::Cut | Control::Login { .. }) => {}
                    Some(Control::Call(call)) => refuse_offline(call),
                    Some(Control::Search(_, reply)) => {
                        let _ = reply.send(Err(SearchError::Offline));
                    }
                    Some(Control::Flush) => self.publish(),
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
        self.blob_uploads.restart();
        loop {
            if let Some(reaction) = self.blob_uploads.start_next(&self.engine)
                && let Err(end) = self.apply_blob_reaction(reaction, &mut connection).await
            {
                return end;
            }
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
                    Some(Control::Login { .. }) => {}
                    Some(Control::Call(call)) => {
                        if !self.engine.lock().is_welcomed() {
                            refuse_offline(call);
                            continue;
                        }
                        let frame = self.calls.register(call);
                        if let Err(end) = send_frames(&mut connection, &[frame]).await {
                            return end;
                        }
                    }
                    Some(Control::Search(query, reply)) => {
                        let (search_id, frame) = self.engine.lock().start_search(query);
                        self.searches.insert(search_id, reply);
                        if let Err(end) = send_frames(&mut connection, &[frame]).await {
                            return end;
                        }
                    }
                    Some(Control::Flush) => {
                        // Empty until `Welcome`, which sends the queue itself.
                        let frames = {
                            let mut engine = self.engine.lock();
                            let frames = engine.mutation_frames();
                            engine.publish(&mut self.published);
                            frames
                        };
                        self.send_state();
                        if let Err(end) = send_frames(&mut connection, &frames).await {
                            return end;
                        }
                    }
                },
                () = self.outbox.deliver_one(), if self.outbox.has_pending() => {}
                reaction = self.blob_uploads.finished(&self.engine), if self.blob_uploads.is_running() => {
                    if let Err(end) = self.apply_blob_reaction(reaction, &mut connection).await {
                        return end;
                    }
                }
                // While notifications wait for the app, the socket is not read: the app's
                // pace becomes the device's pace (see `crate::notification`).
                incoming = connection.recv(), if !self.outbox.has_pending() => match incoming {
                    Ok(Incoming::Frame(frame)) => {
                        // Replies go to their callers; the sync engine never sees them.
                        let frame = match frame.msg {
                            Some(server_frame::Msg::RpcReply(reply)) => {
                                self.calls.complete(reply);
                                continue;
                            }
                            msg => syncline_proto::v1::ServerFrame { msg },
                        };
                        let reaction = {
                            let mut engine = self.engine.lock();
                            let reaction = engine.on_frame(frame, Instant::now());
                            engine.publish(&mut self.published);
                            reaction
                        };
                        self.send_state();
                        self.outbox.extend(reaction.notifications);
                        self.bulk.start(reaction.bulk_downloads);
                        for (search_id, outcome) in reaction.search_results {
                            if let Some(reply) = self.searches.remove(&search_id) {
                                let _ = reply.send(outcome);
                            }
                        }
                        if let Err(end) = send_frames(&mut connection, &reaction.frames).await {
                            return end;
                        }
                        if let Some(reason) = reaction.stop {
                            if matches!(reason, StopReason::Command { .. }) {
                                // The server closes after the ack of a lock and after a
                                // Logout: closing first could drop them unread.
                                wait_for_server_close(&mut connection).await;
                            }
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
                // At the app's pace too: a file is swapped in once the app took what came before.
                event = self.bulk.next_event(), if !self.outbox.has_pending() => {
                    if let Err(end) = self.on_bulk_event(event, &mut connection).await {
                        return end;
                    }
                }
                () = sleep_until(ack_timer), if ack_deadline.is_some() => {
                    let frames = self.engine.lock().due_live_acks(Instant::now());
                    if let Err(end) = send_frames(&mut connection, &frames).await {
                        return end;
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
        self.state.send_modify(|state| state.clone_from(&self.published));
    }
}

/// Sends `frames` in order; a failed send ends the session as a lost connection.
async fn send_frames(connection: &mut Connection, frames: &[ClientFrame]) -> Result<(), SessionEnd> {
    for frame in frames {
        if let Err(error) = connection.send(frame).await {
            debug!(error = %error, "send failed");
            return Err(SessionEnd::Disconnected(Disconnect::Lost));
        }
    }
    Ok(())
}

/// Fails a call made while the device is not connected.
fn refuse_offline(call: OutgoingCall) {
    let _ = call.reply.send(Err(CallError::NotConnected));
}

/// Reads (and drops) frames until the server closes the connection, at most
/// [`SERVER_CLOSE_GRACE`].
async fn wait_for_server_close(connection: &mut Connection) {
    let closed = async {
        loop {
            match connection.recv().await {
                Ok(Incoming::Frame(_)) => {}
                Ok(Incoming::Closed { .. }) | Err(_) => return,
            }
        }
    };
    if tokio::time::timeout(SERVER_CLOSE_GRACE, closed).await.is_err() {
        debug!("the server did not close after the command; closing");
    }
}

/// Sends a normal close frame, giving up after [`CLOSE_GRACE`].
async fn close_quietly(connection: &mut Connection) {
    let closing = connection.close(close_code::NORMAL, "device stopped");
    if let Ok(Err(error)) = tokio::time::timeout(CLOSE_GRACE, closing).await {
        debug!(error = %error, "close failed");
    }
}

mod transfers;
