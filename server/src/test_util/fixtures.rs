//! What the server's unit tests share: a store in a temporary directory, the gateway's
//! services around it, and a channel whose writes are scripted, served over real gRPC on
//! 127.0.0.1 port 0.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use syncline_proto::sdk::{self, ChannelBackend, ChannelError, RecordStream, WriteOutcome};
use syncline_proto::v1::{DescribeResponse, QueryRequest, Record, Value, WriteRequest};
use syncline_push::{Hub, ListenerConfig, SessionConfig};
use tempfile::TempDir;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use crate::auth::login_limits::FailedLoginPolicy;
use crate::auth::{Authenticator, LoginLimits};
use crate::channel::ChannelRegistry;
use crate::config::{Capture, DeviceSettings, Partitioning, RpcSettings, SourceSettings};
use crate::gateway::{DeviceConnections, GatewayServices};
use crate::mutations::MutationDispatcher;
use crate::reply::DeviceReplies;
use crate::rpc::RpcRouter;
use crate::storage::embedded::{EmbeddedOptions, EmbeddedStore};
use crate::storage::{PartitionName, Store};
use crate::sync::cursors::CursorRecorder;

/// How long a unit test waits for something that happens off its own task (a reply from a
/// lane, a gRPC call): generous for a loaded 2-core machine; it only bounds a failing test.
pub(crate) const STEP: Duration = Duration::from_secs(30);

/// Waits for `future`, failing the test with `what` after [`STEP`].
pub(crate) async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, future).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Opens an embedded store in a fresh temporary directory (kept as long as the `TempDir`).
pub(crate) fn temp_store() -> (TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = EmbeddedStore::open(&dir.path().join("syncline.redb"), EmbeddedOptions::default()).expect("store");
    (dir, Arc::new(store))
}

/// Returns a record with one int field `n`.
pub(crate) fn record(id: &str, n: i64) -> Record {
    Record { id: id.to_owned(), fields: BTreeMap::from([("n".to_owned(), Value::int(n))]), version: 0 }
}

/// The unit tests' sources: `Account` (app) and `Contact` (user), fed by Ingest; with
/// `channel`, `Task` (user) too, which devices write through that channel.
pub(crate) fn sources(channel: Option<&str>) -> BTreeMap<String, SourceSettings> {
    let mut sources = BTreeMap::from([
        ("Account".to_owned(), SourceSettings::ingest(Partitioning::App)),
        ("Contact".to_owned(), SourceSettings::ingest(Partitioning::User)),
    ]);
    if let Some(endpoint) = channel {
        let task = SourceSettings { channel: Some(endpoint.to_owned()), ..SourceSettings::ingest(Partitioning::User) };
        sources.insert("Task".to_owned(), task);
    }
    sources
}

/// Returns the sources with `source`'s changes captured by `capture` instead of Ingest.
pub(crate) fn with_capture(
    mut sources: BTreeMap<String, SourceSettings>,
    source: &str,
    capture: Capture,
) -> BTreeMap<String, SourceSettings> {
    if let Some(settings) = sources.get_mut(source) {
        settings.capture = capture;
    }
    sources
}

/// Small device limits, so that tests see them applied.
pub(crate) fn device_limits() -> DeviceSettings {
    DeviceSettings {
        addr: "127.0.0.1:0".parse().expect("loopback address"),
        listener: ListenerConfig {
            max_frame_bytes: 64 * 1024,
            max_connections: 64,
            session: SessionConfig {
                outbound_queue: 128,
                outbound_queue_bytes: 1 << 20,
                heartbeat: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(3),
                handshake_timeout: Duration::from_secs(5),
            },
        },
        max_connections_per_user: 0,
        default_page_size: 2,
        max_page_size: 3,
        max_page_bytes: 64 * 1024,
        default_window: 2,
        max_window: 2,
        max_subscriptions: 4,
        max_pending_mutations: 16,
        push_interval: Duration::ZERO,
        // One at a time: every gateway test then shows that a catch-up read is never held
        // while a page waits for its device.
        catch_up_reads: 1,
        cors_origins: crate::config::CorsOrigins::Any,
    }
}

/// Bulk files in `dir` with the default limits.
pub(crate) fn bulk_settings(dir: &std::path::Path) -> crate::config::BulkSettings {
    crate::config::BulkSettings {
        dir: dir.to_owned(),
        reuse_changes: crate::config::DEFAULT_BULK_REUSE_CHANGES,
        token_ttl: Duration::from_secs(crate::config::DEFAULT_BULK_TOKEN_TTL_SECS),
        file_ttl: Duration::from_secs(crate::config::DEFAULT_BULK_FILE_TTL_SECS),
        max_concurrent_writes: crate::config::DEFAULT_BULK_MAX_CONCURRENT_WRITES,
        max_queued_jobs: crate::config::DEFAULT_BULK_MAX_QUEUED_JOBS,
        public_url: None,
    }
}

/// One password check at a time, no blocks for failed logins.
fn login_limits() -> LoginLimits {
    LoginLimits {
        concurrency: 1,
        queue: 16,
        queue_timeout: STEP,
        failed: FailedLoginPolicy {
            per_user: 0,
            per_address: 0,
            window: Duration::from_secs(60),
            backoff: Duration::from_secs(1),
        },
    }
}

/// A mutation dispatcher over `store`, with lanes on `tracker` that end with `shutdown`.
pub(crate) fn dispatcher(
    store: &Arc<dyn Store>,
    sources: &BTreeMap<String, SourceSettings>,
    replies: Arc<dyn DeviceReplies>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> Arc<MutationDispatcher> {
    let channels = Arc::new(ChannelRegistry::new(sources).expect("channel endpoints"));
    MutationDispatcher::new(store.clone(), sources, channels, replies, tracker.clone(), shutdown.clone())
}

/// The gateway's services over a store in a temporary directory; the tasks they start end
/// when it is dropped.
pub(crate) struct TestGateway {
    pub(crate) services: Arc<GatewayServices>,
    pub(crate) store: Arc<dyn Store>,
    _dir: TempDir,
    _stop: DropGuard,
}

impl TestGateway {
    /// Returns services with `sources` and `limits`, no RPC services, local password logins.
    pub(crate) fn new(sources: BTreeMap<String, SourceSettings>, limits: DeviceSettings) -> Self {
        let (dir, store) = temp_store();
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let auth =
            Authenticator::new(store.clone(), Duration::from_secs(3600), None, &login_limits()).expect("authenticator");
        let connections = Arc::new(DeviceConnections::default());
        let relay = Arc::new(crate::cluster::DeviceRelay::local(connections.clone()));
        let mutations = dispatcher(&store, &sources, relay.clone(), &tracker, &shutdown);
        let devices = Arc::new(crate::devices::DeviceManagement::new(store.clone(), relay.clone(), Arc::default()));
        let (capture_requests, _capture_queues) = crate::channel::wiring::capture_queues(&sources);
        let bulk =
            crate::bulk::BulkSnapshots::open(store.clone(), sources.clone(), bulk_settings(&dir.path().join("bulk")))
                .expect("bulk files");
        let services = GatewayServices {
            store: store.clone(),
            hub: Hub::new(),
            auth,
            channels: Arc::new(ChannelRegistry::new(&sources).expect("channel endpoints")),
            sources,
            catch_up_reads: Arc::new(tokio::sync::Semaphore::new(limits.catch_up_reads)),
            limits,
            cursors: Arc::new(CursorRecorder::default()),
            capture_requests,
            mutations,
            connections,
            relay,
            tracker: tracker.clone(),
            user_sessions: Default::default(),
            rpc: RpcRouter::new(&RpcSettings::default(), tracker).expect("rpc router"),
            devices,
            handshakes: Default::default(),
            blobs: Arc::new(test_blobs(&store, dir.path())),
            bulk: Arc::new(bulk),
        };
        Self { services: Arc::new(services), store, _dir: dir, _stop: shutdown.drop_guard() }
    }

    /// Commits `records` to `partition` as a backend would.
    pub(crate) fn seed(&self, partition: &PartitionName, records: Vec<Record>) {
        self.store.apply_batch(partition, records, Vec::new()).expect("seed batch");
    }
}

/// A blob service over `store` with its files in `dir`/blobs and the default limits.
pub(crate) fn test_blobs(store: &Arc<dyn Store>, dir: &std::path::Path) -> crate::blobs::BlobService {
    let settings = crate::config::BlobSettings {
        dir: dir.join("blobs"),
        max_bytes: crate::config::DEFAULT_BLOB_MAX_BYTES,
        gc_grace: Duration::from_secs(crate::config::DEFAULT_BLOB_GC_GRACE_SECS),
        gc_interval: Duration::from_secs(crate::config::DEFAULT_BLOB_GC_INTERVAL_SECS),
        s3: None,
    };
    crate::blobs::BlobService::open(store.clone(), &settings, BTreeMap::new(), Arc::default()).expect("blob directory")
}

/// A channel backend whose writes answer as scripted per mutation id (by default: stored as
/// sent, at version 1), recording each write as it arrives; while holding, each write waits
/// for [`ScriptedChannel::release`] before it answers.
pub(crate) struct ScriptedChannel {
    answers: Mutex<HashMap<String, VecDeque<sdk::Result<WriteOutcome>>>>,
    /// The mutation ids of the writes received, in order of arrival.
    arrivals: watch::Sender<Vec<String>>,
    gate: Option<Semaphore>,
}

impl ScriptedChannel {
    /// Returns a channel that answers every write at once.
    pub(crate) fn answering() -> Self {
        Self { answers: Mutex::default(), arrivals: watch::Sender::new(Vec::new()), gate: None }
    }

    /// Returns a channel whose writes wait for [`ScriptedChannel::release`].
    pub(crate) fn holding() -> Self {
        Self { gate: Some(Semaphore::new(0)), ..Self::answering() }
    }

    /// Makes the next writes of `mutation_id` answer `answers`, in order.
    pub(crate) fn script(&self, mutation_id: &str, answers: Vec<sdk::Result<WriteOutcome>>) {
        self.answers.lock().entry(mutation_id.to_owned()).or_default().extend(answers);
    }

    /// Lets `writes` held writes answer.
    pub(crate) fn release(&self, writes: usize) {
        if let Some(gate) = &self.gate {
            gate.add_permits(writes);
        }
    }

    /// Returns the mutation ids of the writes received so far, in order.
    pub(crate) fn arrived(&self) -> Vec<String> {
        self.arrivals.borrow().clone()
    }

    /// Waits until at least `count` writes have arrived; returns their mutation ids.
    pub(crate) async fn wait_for_arrivals(&self, count: usize) -> Vec<String> {
        let mut arrivals = self.arrivals.subscribe();
        let arrived = within("writes to reach the channel", arrivals.wait_for(|ids| ids.len() >= count)).await;
        arrived.expect("the channel is alive").clone()
    }

    async fn write(&self, request: WriteRequest) -> sdk::Result<WriteOutcome> {
        self.arrivals.send_modify(|ids| ids.push(request.mutation_id.clone()));
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("the gate stays open").forget();
        }
        let scripted = self.answers.lock().get_mut(&request.mutation_id).and_then(VecDeque::pop_front);
        scripted
            .unwrap_or_else(|| Ok(WriteOutcome::Written(Record { version: 1, ..request.record.unwrap_or_default() })))
    }
}

#[tonic::async_trait]
impl ChannelBackend for ScriptedChannel {
    async fn describe(&self) -> sdk::Result<DescribeResponse> {
        Ok(DescribeResponse::default())
    }

    async fn query(&self, _request: QueryRequest) -> sdk::Result<RecordStream> {
        Err(ChannelError::Unimplemented("the scripted channel has no records".into()))
    }

    async fn create(&self, request: WriteRequest) -> sdk::Result<WriteOutcome> {
        self.write(request).await
    }

    async fn update(&self, request: WriteRequest) -> sdk::Result<WriteOutcome> {
        self.write(request).await
    }

    async fn delete(&self, request: WriteRequest) -> sdk::Result<WriteOutcome> {
        self.write(request).await
    }
}

/// A [`ScriptedChannel`] served on 127.0.0.1 port 0 until this is dropped.
pub(crate) struct ServedChannel {
    pub(crate) url: String,
    pub(crate) backend: Arc<ScriptedChannel>,
    _stop: DropGuard,
}

/// Serves `backend` with the channel SDK on a loopback port of its own.
pub(crate) async fn serve_channel(backend: ScriptedChannel) -> ServedChannel {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("loopback listener");
    let url = format!("http://{}", listener.local_addr().expect("bound address"));
    let backend = Arc::new(backend);
    let stop = CancellationToken::new();
    tokio::spawn(sdk::serve_shared(backend.clone(), listener, stop.clone().cancelled_owned()));
    ServedChannel { url, backend, _stop: stop.drop_guard() }
}
