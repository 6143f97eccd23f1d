//! One device session: Hello, subscriptions with credit-based catch-up paging, acks, and the
//! switch to live push.
//!
//! Per subscription the session is in one of three phases: *snapshot* (pages of live records
//! by id at a fixed sequence S, then the log from S), *log* (pages of the change log after the
//! device's cursor) or *live* (the hub queues each committed batch to the connection). A live
//! subscription that the hub demotes (its queue was full) goes back to the log phase from the
//! last sequence queued to it.

use std::net::SocketAddr;
use std::sync::Arc;

use prost::Message as _;
use syncline_proto::close_code;
use syncline_proto::v1::{self, ClientFrame, ErrorCode, ServerFrame, SyncStatus, client_frame, hello, server_frame};
use syncline_push::{CodecError, Outbox, SessionEnd, SessionHandler, Subscription};

use super::{AccessError, SyncEngine, error_frame, pages};
use crate::auth::{AuthError, DeviceDetails, Identity};
use crate::storage::{LogPage, PageLimit, PartitionName, PartitionState, SnapshotPage, StoreError};

/// Longest mutation id accepted.
const MAX_MUTATION_ID_BYTES: usize = 128;

/// Where a subscription is in its sync.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Sending live records with ids after `after_id`, at sequence `at`, `sent` of them
    /// already.
    Snapshot { at: u64, after_id: Option<String>, first: bool, sent: u64 },
    /// Sending the log after sequence `after`.
    Log { after: u64 },
    /// Caught up; the hub pushes new batches.
    Live,
}

struct PartitionSync {
    subscription: Subscription<PartitionName>,
    /// Bounds each catch-up page in records or changes and in encoded bytes.
    page_limit: PageLimit,
    /// Unacked pages allowed in flight; 0 = pull mode.
    window: u64,
    /// Pages requested with Pull and not yet sent (pull mode).
    pulled: u64,
    sent_page: u64,
    acked_page: u64,
    phase: Phase,
}

impl PartitionSync {
    fn may_send(&self) -> bool {
        match self.phase {
            Phase::Live => false,
            Phase::Snapshot { .. } | Phase::Log { .. } => {
                if self.window == 0 {
                    self.pulled > 0
                } else {
                    self.sent_page - self.acked_page < self.window
                }
            }
        }
    }

    /// Counts a page sent that told the device `remaining` pages follow; returns its number.
    fn page_sent(&mut self, remaining: u64) -> u64 {
        self.sent_page += 1;
        self.pulled = self.pulled.saturating_sub(1);
        if remaining == 0 {
            // A pull-mode device does not pull after a page that says nothing remains: the
            // next step (going live, or what committed since the page was read) is sent
            // unasked, or the subscription would never reach the live phase.
            self.grant_unasked_page();
        }
        self.sent_page
    }

    /// In pull mode, lets the server send one page the device did not ask for: when the
    /// device cannot know that it should (see `page_sent` and demotion).
    fn grant_unasked_page(&mut self) {
        if self.window == 0 {
            self.pulled = self.pulled.max(1);
        }
    }
}

/// The session handler of one device connection.
pub struct DeviceSession {
    engine: Arc<SyncEngine>,
    peer: SocketAddr,
    outbox: Outbox,
    identity: Option<Identity>,
    /// This session's place in its user's connection count (set at Welcome).
    user_slot: Option<super::UserSlot>,
    subscriptions: Subscriptions,
    /// Mobile RPC calls in flight on this connection (cancelled when it closes); made at the
    /// first call, so that connections that never call cost nothing for it.
    rpc: Option<crate::rpc::RpcCalls>,
}

/// A session's subscriptions by partition: a few at most (see `max_subscriptions`), so a
/// vector searched in order, sized exactly (a hash map's smallest table holds four entries,
/// which every idle connection would carry).
#[derive(Default)]
struct Subscriptions(Vec<(PartitionName, PartitionSync)>);

impl Subscriptions {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn contains_key(&self, partition: &PartitionName) -> bool {
        self.0.iter().any(|(name, _)| name == partition)
    }

    fn get_mut(&mut self, partition: &PartitionName) -> Option<&mut PartitionSync> {
        self.0.iter_mut().find(|(name, _)| name == partition).map(|(_, sync)| sync)
    }

    fn insert(&mut self, partition: PartitionName, sync: PartitionSync) {
        match self.get_mut(&partition) {
            Some(existing) => *existing = sync,
            None => {
                self.0.reserve_exact(1);
                self.0.push((partition, sync));
            }
        }
    }

    fn remove(&mut self, partition: &PartitionName) -> Option<PartitionSync> {
        let index = self.0.iter().position(|(name, _)| name == partition)?;
        Some(self.0.swap_remove(index).1)
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (&PartitionName, &mut PartitionSync)> {
        self.0.iter_mut().map(|(name, sync)| (&*name, sync))
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// A failure that ends a step of the session.
enum StepError {
    /// The connection is gone; stop quietly.
    Closed,
    /// The store failed; the partition reports an error.
    Store(StoreError),
}

impl From<syncline_push::ConnectionClosed> for StepError {
    fn from(_: syncline_push::ConnectionClosed) -> Self {
        StepError::Closed
    }
}

impl From<StoreError> for StepError {
    fn from(error: StoreError) -> Self {
        StepError::Store(error)
    }
}

fn frame(msg: server_frame::Msg) -> ServerFrame {
    ServerFrame { msg: Some(msg) }
}

fn sync_state(partition: &PartitionName, status: SyncStatus, cursor: u64, state: &PartitionState) -> ServerFrame {
    frame(server_frame::Msg::SyncState(v1::SyncState {
        source: partition.source.clone(),
        key: partition.key.clone(),
        status: status as i32,
        cursor,
        total: state.total,
        checksum: state.checksum,
        error: None,
    }))
}

fn partition_error(source: &str, key: &str, code: ErrorCode, message: impl Into<String>) -> ServerFrame {
    frame(server_frame::Msg::Error(v1::Error {
        code: code as i32,
        message: message.into(),
        fatal: false,
        source: source.to_owned(),
        key: key.to_owned(),
    }))
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work).await.map_err(|error| StoreError::Io(format!("blocking task failed: {error}")))?
}

impl DeviceSession {
    /// Returns the handler of a new connection from `peer`.
    pub fn new(engine: Arc<SyncEngine>, peer: SocketAddr, outbox: Outbox) -> Self {
        Self {
            engine,
            peer,
            outbox,
            identity: None,
            user_slot: None,
            subscriptions: Subscriptions::default(),
            rpc: None,
        }
    }

    /// Forwards a search to the source's channel on a task of its own, so a slow backend
    /// never holds up the session; the answer comes back as SearchResult.
    async fn on_search(&mut self, search: v1::Search, outbox: &Outbox) {
        let Some(identity) = self.identity.clone() else { return };
        let (search_id, source) = (search.search_id.clone(), search.source.clone());
        let failed = move |code: ErrorCode, message: String| {
            frame(server_frame::Msg::SearchResult(v1::SearchResult {
                search_id: search_id.clone(),
                error: Some(v1::Error {
                    code: code as i32,
                    message,
                    fatal: false,
                    source: source.clone(),
                    key: String::new(),
                }),
                ..v1::SearchResult::default()
            }))
        };
        if !self.engine.sources.contains_key(&search.source) {
            let _ = outbox
                .send_frame(failed(ErrorCode::UnknownSource, format!("unknown source {:?}", search.source)))
                .await;
            return;
        }
        let Some(channel) = self.engine.mutations.channel(&search.source).cloned() else {
            let message = format!("{} has no channel to search", search.source);
            let _ = outbox.send_frame(failed(ErrorCode::Forbidden, message)).await;
            return;
        };
        let engine = self.engine.clone();
        let outbox = outbox.clone();
        self.engine.mutations.tracker().spawn(async move {
            let request = v1::SearchRequest {
                source: search.source.clone(),
                params: search.params.clone(),
                offset: search.offset,
                limit: search.limit,
                caller: Some(v1::Caller { user_id: identity.user_id.clone(), client_id: identity.client_id.clone() }),
            };
            let reply = match channel.search(request).await {
                Ok(response) => {
                    // Merge only into a partition this user may sync.
                    let merge_key = response
                        .partition
                        .filter(|partition| partition.source == search.source)
                        .and_then(|partition| {
                            engine.resolve_partition(&identity, &partition.source, &partition.key).ok()
                        })
                        .map(|partition| partition.key)
                        .unwrap_or_default();
                    frame(server_frame::Msg::SearchResult(v1::SearchResult {
                        search_id: search.search_id.clone(),
                        records: response.records,
                        total: response.total,
                        error: None,
                        merge_key,
                    }))
                }
                Err(crate::channel::ChannelError::Rejected { code, message, .. }) => {
                    failed(crate::mutations::error_code_of(&code), message)
                }
                Err(error) => failed(ErrorCode::Unavailable, error.to_string()),
            };
            let _ = outbox.send_frame(reply).await;
        });
    }

    async fn on_mutate(&mut self, mutate: v1::Mutate, outbox: &Outbox) {
        let Some(identity) = self.identity.clone() else { return };
        let refuse = |code: ErrorCode, message: String| {
            frame(server_frame::Msg::MutationResult(crate::mutations::refused(
                &mutate.mutation_id,
                mutate.op,
                code,
                message,
            )))
        };
        let op = v1::MutationOp::try_from(mutate.op).unwrap_or(v1::MutationOp::Unspecified);
        // The fields a create or update sends are checked as a record: an update's fields
        // alone must be within the limits too.
        let record = v1::Record { id: mutate.id, fields: mutate.fields, version: 0 };
        let checked = match op {
            v1::MutationOp::Delete => syncline_proto::record::validate_record_id(&record.id),
            v1::MutationOp::Create | v1::MutationOp::Update | v1::MutationOp::Unspecified => record.validate(),
        };
        let invalid = if mutate.mutation_id.is_empty() || mutate.mutation_id.len() > MAX_MUTATION_ID_BYTES {
            Some(format!("mutation_id must be 1 to {MAX_MUTATION_ID_BYTES} bytes"))
        } else if op == v1::MutationOp::Unspecified {
            Some("op must be create, update or delete".to_owned())
        } else {
            checked.err().map(|error| error.to_string())
        };
        if let Some(message) = invalid {
            let _ = outbox.send_frame(refuse(ErrorCode::BadRequest, message)).await;
            return;
        }
        let partition = match self.engine.resolve_partition(&identity, &mutate.source, &mutate.key) {
            Ok(partition) => partition,
            Err(AccessError::UnknownSource) => {
                let message = format!("unknown source {:?}", mutate.source);
                let _ = outbox.send_frame(refuse(ErrorCode::UnknownSource, message)).await;
                return;
            }
            Err(AccessError::Forbidden(message)) => {
                let _ = outbox.send_frame(refuse(ErrorCode::Forbidden, message)).await;
                return;
            }
        };
        if !self.engine.mutations.accepts(&partition.source) {
            let message = format!("{} has no channel: it is read-only for devices", partition.source);
            let _ = outbox.send_frame(refuse(ErrorCode::Forbidden, message)).await;
            return;
        }
        let mutation = crate::storage::QueuedMutation {
            client_id: identity.client_id.clone(),
            user_id: identity.user_id.clone(),
            seq: 0,
            mutation_id: mutate.mutation_id.clone(),
            partition,
            op: mutate.op,
            id: record.id,
            fields: record.fields,
            base_version: mutate.base_version,
        };
        let store = self.engine.store.clone();
        let max_pending = self.engine.limits.max_pending_mutations;
        let queued = mutation.clone();
        let outcome = blocking(move || store.enqueue_mutation(&queued, max_pending)).await;
        let reply = match outcome {
            Ok(crate::storage::Enqueued::Queued { seq }) => {
                self.engine.mutations.submit(crate::storage::QueuedMutation { seq, ..mutation });
                frame(server_frame::Msg::MutationAck(v1::MutationAck { mutation_id: mutate.mutation_id, queued: seq }))
            }
            Ok(crate::storage::Enqueued::Pending { seq }) => {
                frame(server_frame::Msg::MutationAck(v1::MutationAck { mutation_id: mutate.mutation_id, queued: seq }))
            }
            Ok(crate::storage::Enqueued::Done { result }) => match v1::MutationResult::decode(result.as_slice()) {
                Ok(result) => frame(server_frame::Msg::MutationResult(result)),
                Err(_) => refuse(ErrorCode::Internal, "the stored outcome is unreadable".into()),
            },
            Err(StoreError::QueueFull { pending }) => {
                refuse(ErrorCode::ResourceExhausted, format!("{pending} mutations are already waiting; retry later"))
            }
            Err(error) => {
                tracing::error!(peer = %self.peer, %error, "cannot queue a mutation");
                refuse(ErrorCode::Unavailable, "the server cannot queue mutations right now; retry later".into())
            }
        };
        let _ = outbox.send_frame(reply).await;
    }

    async fn fatal(&self, outbox: &Outbox, code: ErrorCode, message: &str, close: u16) {
        let _ = outbox.send_frame(error_frame(code, message, true)).await;
        outbox.close(close, message.to_owned());
    }

    async fn on_hello(&mut self, hello: v1::Hello, outbox: &Outbox) {
        if hello.protocol_version != syncline_proto::PROTOCOL_VERSION {
            let message = format!(
                "protocol version {} is not supported; this server speaks {}",
                hello.protocol_version,
                syncline_proto::PROTOCOL_VERSION
            );
            return self.fatal(outbox, ErrorCode::UnsupportedVersion, &message, close_code::UPGRADE_REQUIRED).await;
        }
        let details = hello
            .device
            .map(|device| DeviceDetails {
                platform: device.platform,
                app_version: device.app_version,
                model: device.model,
            })
            .unwrap_or_default();
        let outcome = match hello.credentials {
            Some(hello::Credentials::Login(login)) => {
                let auth = &self.engine.auth;
                auth.login(&login.username, &login.password, self.peer.ip(), &hello.client_id, details).await
            }
            Some(hello::Credentials::SessionToken(token)) => self.engine.auth.resume(&token).await,
            Some(hello::Credentials::BackendToken(token)) => {
                self.engine.auth.login_with_backend_token(&token, &hello.client_id, details).await
            }
            None => {
                return self
                    .fatal(
                        outbox,
                        ErrorCode::Unauthenticated,
                        "Hello needs a login, a backend token or a session token",
                        close_code::UNAUTHENTICATED,
                    )
                    .await;
            }
        };
        let (identity, token) = match outcome {
            Ok(done) => done,
            Err(error) => {
                let (code, close) = match &error {
                    AuthError::BadCredentials
                    | AuthError::InvalidToken
                    | AuthError::ExpiredToken
                    | AuthError::InvalidUserName
                    | AuthError::BackendTokensDisabled
                    | AuthError::InvalidBackendToken(_) => (ErrorCode::Unauthenticated, close_code::UNAUTHENTICATED),
                    AuthError::DeviceDisabled { .. } => (ErrorCode::Forbidden, close_code::FORBIDDEN),
                    // Busy, or blocked for failed logins: retry later, as the message says.
                    AuthError::LoginsBusy(_) | AuthError::LoginsLimited(_) => {
                        (ErrorCode::ResourceExhausted, close_code::TOO_MANY_CONNECTIONS)
                    }
                    AuthError::Unavailable(channel) => {
                        tracing::warn!(peer = %self.peer, error = %channel, "login channel unavailable");
                        (ErrorCode::Unavailable, close_code::INTERNAL)
                    }
                    AuthError::Store(_) | AuthError::PasswordCheck(_) => {
                        tracing::error!(peer = %self.peer, %error, "login failed on the server");
                        return self
                            .fatal(
                                outbox,
                                ErrorCode::Unavailable,
                                "the server cannot check logins right now",
                                close_code::INTERNAL,
                            )
                            .await;
                    }
                };
                tracing::debug!(peer = %self.peer, %error, "login refused");
                return self.fatal(outbox, code, &error.to_string(), close).await;
            }
        };
        let limits = &self.engine.limits;
        // A second Hello on this connection replaces the first session's slot.
        self.user_slot = None;
        match self.engine.user_sessions.acquire(&identity.user_id, limits.max_connections_per_user) {
            Ok(slot) => self.user_slot = Some(slot),
            Err(open) => {
                let message = format!(
                    "user {:?} already has {open} connections (limit {}); close one or retry later",
                    identity.user_id, limits.max_connections_per_user
                );
                tracing::debug!(peer = %self.peer, user_id = %identity.user_id, open, "per-user connection cap");
                return self
                    .fatal(outbox, ErrorCode::ResourceExhausted, &message, close_code::TOO_MANY_CONNECTIONS)
                    .await;
            }
        }
        let welcome = v1::Welcome {
            client_id: identity.client_id.clone(),
            session_token: token.token,
            user_id: identity.user_id.clone(),
            token_expires_at_ms: token.expires_ms,
            heartbeat_ms: limits.heartbeat_ms,
            idle_timeout_ms: limits.idle_timeout_ms,
            max_frame_bytes: limits.max_frame_bytes as u32,
            max_page_size: limits.max_page_size,
            max_window: limits.max_window,
            sources: self.engine.source_infos(&identity),
            max_page_bytes: u32::try_from(limits.max_page_bytes).unwrap_or(u32::MAX),
        };
        tracing::debug!(peer = %self.peer, user_id = %identity.user_id, client_id = %identity.client_id, "session started");
        self.engine.mutations.attach(&identity.client_id, outbox);
        self.identity = Some(identity);
        outbox.handshake_done();
        let _ = outbox.send_frame(frame(server_frame::Msg::Welcome(welcome))).await;
    }

    async fn on_subscribe(&mut self, subscribe: v1::Subscribe, outbox: &Outbox) -> Result<(), StepError> {
        let identity = self.identity.clone().unwrap_or_default();
        let partition = match self.engine.resolve_partition(&identity, &subscribe.source, &subscribe.key) {
            Ok(partition) => partition,
            Err(AccessError::UnknownSource) => {
                let message = format!("unknown source {:?}", subscribe.source);
                outbox
                    .send_frame(partition_error(&subscribe.source, &subscribe.key, ErrorCode::UnknownSource, message))
                    .await?;
                return Ok(());
            }
            Err(AccessError::Forbidden(message)) => {
                outbox
                    .send_frame(partition_error(&subscribe.source, &subscribe.key, ErrorCode::Forbidden, message))
                    .await?;
                return Ok(());
            }
        };
        let limits = &self.engine.limits;
        if !self.subscriptions.contains_key(&partition) && self.subscriptions.len() >= limits.max_subscriptions {
            let message = format!("at most {} subscriptions per connection", limits.max_subscriptions);
            outbox
                .send_frame(partition_error(&partition.source, &partition.key, ErrorCode::ResourceExhausted, message))
                .await?;
            return Ok(());
        }
        // A resubscription replaces the old one (and leaves the hub) first.
        self.subscriptions.remove(&partition);
        let source_page_size = self.engine.sources.get(&partition.source).and_then(|source| source.page_size);
        let page_size = match subscribe.page_size {
            0 => source_page_size.unwrap_or(limits.default_page_size),
            asked => asked.min(limits.max_page_size),
        } as usize;
        let page_limit = pages::page_limit(&partition, page_size, limits.max_page_bytes);
        let window = u64::from(subscribe.window.min(limits.max_window));
        // A polled source refreshes the partition now rather than at the next interval, and
        // a watched one loads it from the channel if it never did; a full queue only means
        // such a request is already pending.
        self.engine.capture_requests.request(&partition);
        // Join the hub before reading, so nothing committed from now on can be missed.
        let subscription = self.engine.hub.subscribe(partition.clone(), outbox.clone());
        let store = self.engine.store.clone();
        let name = partition.clone();
        let state = blocking(move || store.partition_state(&name)).await?;
        let cursor = subscribe.cursor;
        let phase = if cursor == 0 {
            Phase::Snapshot { at: state.head, after_id: None, first: true, sent: 0 }
        } else if cursor < state.horizon || cursor > state.head {
            outbox.send_frame(sync_state(&partition, SyncStatus::Reset, cursor, &state)).await?;
            Phase::Snapshot { at: state.head, after_id: None, first: true, sent: 0 }
        } else {
            Phase::Log { after: cursor }
        };
        self.subscriptions.insert(
            partition.clone(),
            PartitionSync { subscription, page_limit, window, pulled: 0, sent_page: 0, acked_page: 0, phase },
        );
        self.pump(&partition, outbox).await
    }

    /// Sends catch-up pages of `partition` while its window allows, and switches it to live
    /// push when it has reached the head.
    async fn pump(&mut self, partition: &PartitionName, outbox: &Outbox) -> Result<(), StepError> {
        loop {
            let Some(sync) = self.subscriptions.get_mut(partition) else {
                return Ok(());
            };
            if !sync.may_send() {
                return Ok(());
            }
            let store = self.engine.store.clone();
            let name = partition.clone();
            let limit = sync.page_limit;
            match sync.phase.clone() {
                Phase::Live => return Ok(()),
                Phase::Snapshot { at, after_id, first, sent } => {
                    let page: SnapshotPage =
                        blocking(move || store.read_snapshot(&name, after_id.as_deref(), limit)).await?;
                    let next_after = page.records.last().map(|record| record.id.clone());
                    let done = page.done;
                    let sent = sent + page.records.len() as u64;
                    let remaining = if done {
                        0
                    } else {
                        pages::pages_remaining(page.state.total.saturating_sub(sent), page.records.len())
                    };
                    let number = sync.page_sent(remaining);
                    sync.phase = if done {
                        Phase::Log { after: at }
                    } else {
                        Phase::Snapshot { at, after_id: next_after, first: false, sent }
                    };
                    let changes = pages::snapshot_changes(partition, at, page, number, first, remaining);
                    outbox.send_frame(frame(server_frame::Msg::Changes(changes))).await?;
                }
                Phase::Log { after } => {
                    let page: LogPage = blocking(move || store.read_log(&name, after, limit)).await?;
                    if after < page.state.horizon {
                        // Compaction passed this cursor (a long snapshot, or a demoted device far
                        // behind): start over with a snapshot.
                        outbox.send_frame(sync_state(partition, SyncStatus::Reset, after, &page.state)).await?;
                        sync.phase = Phase::Snapshot { at: page.state.head, after_id: None, first: true, sent: 0 };
                        continue;
                    }
                    if page.covered_to == after {
                        // At the head: go live unless something was published meanwhile.
                        if sync.subscription.go_live(after) {
                            sync.phase = Phase::Live;
                            outbox.send_frame(sync_state(partition, SyncStatus::CaughtUp, after, &page.state)).await?;
                            return Ok(());
                        }
                        continue;
                    }
                    let remaining = if page.covered_to == page.state.head {
                        0
                    } else {
                        pages::pages_remaining(page.state.head - page.covered_to, page.changes.len())
                    };
                    let number = sync.page_sent(remaining);
                    sync.phase = Phase::Log { after: page.covered_to };
                    let changes = pages::log_changes(partition, after, &page, number, remaining);
                    outbox.send_frame(frame(server_frame::Msg::Changes(changes))).await?;
                }
            }
        }
    }

    async fn pump_reporting(&mut self, partition: &PartitionName, outbox: &Outbox) {
        match self.pump(partition, outbox).await {
            Ok(()) | Err(StepError::Closed) => {}
            Err(StepError::Store(error)) => {
                tracing::error!(peer = %self.peer, %partition, %error, "catch-up read failed");
                self.subscriptions.remove(partition);
                let state = PartitionState::default();
                let mut failed = sync_state(partition, SyncStatus::Error, 0, &state);
                if let Some(server_frame::Msg::SyncState(sync)) = &mut failed.msg {
                    sync.error = Some(v1::Error {
                        code: ErrorCode::Unavailable as i32,
                        message: "the server could not read this partition; resubscribe later".into(),
                        fatal: false,
                        source: partition.source.clone(),
                        key: partition.key.clone(),
                    });
                }
                let _ = outbox.send_frame(failed).await;
            }
        }
    }

    fn partition_of(&self, source: &str, key: &str) -> Option<PartitionName> {
        self.engine.resolve_partition(self.identity.as_ref()?, source, key).ok()
    }

    async fn not_subscribed(&self, source: &str, key: &str, outbox: &Outbox) {
        let message = format!("not subscribed to {source}/{key}");
        let _ = outbox.send_frame(partition_error(source, key, ErrorCode::BadRequest, message)).await;
    }

    async fn unimplemented(&self, what: &str, outbox: &Outbox) {
        let message = format!("{what} is not available on this server yet");
        let _ = outbox.send_frame(error_frame(ErrorCode::Unimplemented, message, false)).await;
    }
}

impl SessionHandler for DeviceSession {
    async fn on_frame(&mut self, frame: ClientFrame, outbox: &Outbox) {
        let Some(msg) = frame.msg else { return };
        if self.identity.is_none() {
            return match msg {
                client_frame::Msg::Hello(hello) => self.on_hello(hello, outbox).await,
                _ => {
                    self.fatal(
                        outbox,
                        ErrorCode::Unauthenticated,
                        "the first frame must be Hello",
                        close_code::PROTOCOL_ERROR,
                    )
                    .await
                }
            };
        }
        match msg {
            client_frame::Msg::Hello(_) => {
                let _ = outbox
                    .send_frame(error_frame(ErrorCode::BadRequest, "the session has already started", false))
                    .await;
            }
            client_frame::Msg::Subscribe(subscribe) => {
                let partition = self.partition_of(&subscribe.source, &subscribe.key);
                match self.on_subscribe(subscribe, outbox).await {
                    Ok(()) | Err(StepError::Closed) => {}
                    Err(StepError::Store(error)) => {
                        if let Some(partition) = partition {
                            tracing::error!(peer = %self.peer, %partition, %error, "subscribe failed");
                            self.subscriptions.remove(&partition);
                            let _ = outbox
                                .send_frame(partition_error(
                                    &partition.source,
                                    &partition.key,
                                    ErrorCode::Unavailable,
                                    "the server could not read this partition; resubscribe later",
                                ))
                                .await;
                        }
                    }
                }
            }
            client_frame::Msg::Ack(ack) => {
                let Some(partition) = self.partition_of(&ack.source, &ack.key) else {
                    return self.not_subscribed(&ack.source, &ack.key, outbox).await;
                };
                let Some(sync) = self.subscriptions.get_mut(&partition) else {
                    return self.not_subscribed(&ack.source, &ack.key, outbox).await;
                };
                sync.acked_page = sync.acked_page.max(ack.page.min(sync.sent_page));
                if let Some(identity) = &self.identity {
                    self.engine.cursors.record(&identity.client_id, &partition, ack.cursor);
                }
                self.pump_reporting(&partition, outbox).await;
            }
            client_frame::Msg::Pull(pull) => {
                let Some(partition) = self.partition_of(&pull.source, &pull.key) else {
                    return self.not_subscribed(&pull.source, &pull.key, outbox).await;
                };
                let Some(sync) = self.subscriptions.get_mut(&partition) else {
                    return self.not_subscribed(&pull.source, &pull.key, outbox).await;
                };
                sync.pulled = sync.pulled.saturating_add(u64::from(pull.pages.max(1)));
                self.pump_reporting(&partition, outbox).await;
            }
            client_frame::Msg::Unsubscribe(unsubscribe) => {
                if let Some(partition) = self.partition_of(&unsubscribe.source, &unsubscribe.key) {
                    self.subscriptions.remove(&partition);
                }
            }
            client_frame::Msg::Logout(_) => {
                self.subscriptions.clear();
                if let Some(identity) = &self.identity
                    && let Err(error) = self.engine.auth.revoke_tokens(&identity.client_id).await
                {
                    tracing::error!(peer = %self.peer, %error, "could not revoke session tokens at logout");
                }
                outbox.close(close_code::NORMAL, "logged out");
            }
            client_frame::Msg::Mutate(mutate) => self.on_mutate(mutate, outbox).await,
            client_frame::Msg::Search(search) => self.on_search(search, outbox).await,
            client_frame::Msg::RpcCall(call) => {
                // Runs off the session loop; the reply comes later as RpcReply.
                if let Some(identity) = &self.identity {
                    let router = &self.engine.rpc;
                    let calls = self.rpc.get_or_insert_with(|| router.connection_calls());
                    calls.start(call, identity, outbox).await;
                }
            }
            client_frame::Msg::BulkRequest(request) => {
                self.unimplemented(&format!("BulkRequest ({})", request.request_id), outbox).await;
            }
        }
    }

    async fn on_bad_frame(&mut self, error: CodecError, outbox: &Outbox) {
        let message = error.to_string();
        if self.identity.is_none() {
            self.fatal(outbox, ErrorCode::BadRequest, &message, close_code::PROTOCOL_ERROR).await;
        } else {
            let _ = outbox.send_frame(error_frame(ErrorCode::BadRequest, message, false)).await;
        }
    }

    async fn on_wake(&mut self, outbox: &Outbox) {
        let mut demoted = Vec::new();
        for (partition, sync) in self.subscriptions.iter_mut() {
            if let Some(queued_to) = sync.subscription.take_demoted() {
                sync.phase = Phase::Log { after: queued_to };
                // A pull-mode device learns of the demotion only from a page.
                sync.grant_unasked_page();
                demoted.push(partition.clone());
            }
        }
        for partition in demoted {
            tracing::debug!(peer = %self.peer, %partition, "slow consumer switched to catch-up");
            self.pump_reporting(&partition, outbox).await;
        }
    }

    async fn on_handshake_timeout(&mut self, outbox: &Outbox) {
        let message = format!(
            "no successful Hello within {} ms of connecting; send Hello first when reconnecting",
            self.engine.limits.hello_timeout.as_millis()
        );
        self.fatal(outbox, ErrorCode::Timeout, &message, close_code::HELLO_TIMEOUT).await;
    }

    fn on_closed(&mut self, _end: &SessionEnd) {
        self.subscriptions.clear();
        self.user_slot = None;
        if let Some(calls) = &self.rpc {
            calls.cancel_all();
        }
        if let Some(identity) = &self.identity {
            self.engine.mutations.detach(&identity.client_id, &self.outbox);
        }
    }
}
