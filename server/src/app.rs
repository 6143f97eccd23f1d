//! The composition root: builds the store, the hub, the services and the listeners, runs
//! them, and stops them in order.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use syncline_proto::v1::ingest_server::IngestServer;
use syncline_push::{ConnectionCount, Hub, WireStats};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminAuth, AdminState};
use crate::auth::{Authenticator, BackendTokenVerifier};
use crate::channel::ChannelRegistry;
use crate::channel::capture;
use crate::channel::grpc::ChannelConnection;
use crate::channel::wiring;
use crate::cluster::subscriptions::ClusterSubscriptions;
use crate::cluster::{ClusterSessions, ControlPublisher, ControlTargets, DeviceRelay, Leases, RedisLink};
use crate::config::{AuthSettings, Capture, DeviceSettings, Settings, StoreBackendSettings, StoreSettings};
use crate::devices::{CommitTimes, DeviceManagement};
use crate::gateway::{self, DeviceConnections, DeviceSessions, GatewayServices, UserSessions};
use crate::ingest::IngestService;
use crate::jobs::Jobs;
use crate::metrics::counters::IngestCounters;
use crate::metrics::{MetricSources, Metrics};
use crate::mutations::MutationDispatcher;
use crate::rpc::RpcRouter;
use crate::runtime::BackendRuntime;
use crate::shutdown;
use crate::storage::embedded::{EmbeddedOptions, EmbeddedStore};
use crate::storage::redis::RedisStore;
use crate::storage::{AdminRole, CommitListener, PartitionName, Store};
use crate::sync::{LivePublisher, cursors::CursorRecorder};
use crate::tls::TlsMaterial;

/// Name of the embedded store's file inside the data directory.
pub const STORE_FILE_NAME: &str = "syncline.redb";

/// A running server: its bound addresses and a handle to stop it.
pub struct RunningServer {
    pub device_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// The admin listener (admin API, health probes).
    pub admin_addr: SocketAddr,
    /// True when both listeners serve TLS.
    pub tls: bool,
    /// What the device sessions share (tests read the store and the hub through it).
    pub services: Arc<GatewayServices>,
    pub connections: Arc<ConnectionCount>,
    /// Counters of change capture from channels (e.g. records refused).
    pub capture: Arc<capture::CaptureCounters>,
    /// The server's Prometheus metrics (`/metrics` renders them).
    pub metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    stopped: JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Returns the device endpoint's URL.
    pub fn device_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}{}", self.device_addr, syncline_proto::SYNC_PATH)
    }

    /// Returns the admin listener's base URL (no trailing slash).
    pub fn admin_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.admin_addr)
    }

    /// Returns the gRPC endpoint's URL.
    pub fn grpc_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.grpc_addr)
    }

    /// Stops the server gracefully and waits until it has.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.stopped.await.context("server task failed")?
    }

    /// Waits until the server stops (after its shutdown signal).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.stopped.await.context("server task failed")?
    }
}

/// Opens the store, seeds the demo when configured, binds both listeners and starts serving.
/// Returns once the listeners are bound.
pub async fn start(mut settings: Settings) -> anyhow::Result<RunningServer> {
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    // One sweeper per runtime worker: live fan-out runs on every core, off the store's
    // writer thread.
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    let hub = Hub::with_sweepers(workers, settings.device.push_interval, &tracker, shutdown.clone());
    let node = ClusterNode::start(&settings, &hub, &tracker, &shutdown).await?;
    let live: Box<dyn CommitListener> = match &node {
        Some(node) => Box::new(LivePublisher::through(node.bus.clone(), settings.device.max_page_bytes)),
        None => Box::new(LivePublisher { hub: hub.clone(), max_page_bytes: settings.device.max_page_bytes }),
    };
    let commit_times = Arc::new(CommitTimes::default());
    let store: Arc<dyn Store> = open_store(&settings.store, live, commit_times.clone()).await?;
    let demo_channel = start_demo(&mut settings, &shutdown).await?;
    let auth = start_auth(store.clone(), &settings.auth).await?;
    let admin_auth = Arc::new(AdminAuth::new(store.clone(), settings.auth.login_limits.failed)?);
    first_admin_credentials(&admin_auth, &store, &settings).await?;
    let (services, capture_queues) = gateway_services(
        &settings,
        store.clone(),
        GatewayParts {
            hub,
            auth,
            commit_times,
            peers: node.as_ref().map(|node| node.peers.clone()),
            user_sessions: node.as_ref().map(|node| node.sessions.clone()),
            leases: node.as_ref().map(|node| node.leases.clone()),
        },
        &tracker,
        &shutdown,
    )?;
    // A bucket that does not exist or refuses the credentials stops the start here, with
    // the service's reason, rather than failing each upload later; the tasks started so far
    // stop first (they hold the store).
    let blob_storage = services.blobs.storage();
    if let Err(error) = services.blobs.check_storage().await {
        shutdown.cancel();
        tracker.close();
        tracker.wait().await;
        return Err(anyhow::Error::new(error).context(format!("blob storage ({blob_storage}) is not usable")));
    }
    tracing::info!(storage = %blob_storage, "blob bytes stored");
    let captured = settings.sources.iter().filter(|(_, source)| source.capture != Capture::Ingest);
    let capture = Arc::new(capture::CaptureCounters::new(captured.map(|(name, _)| name)));
    let schemas =
        crate::channel::schema::SchemaWatch::new(store.clone(), &settings.sources, services.connections.clone())
            .with_capture(capture.clone())
            .with_peers(node.as_ref().map(|node| node.peers.clone()));
    let schemas = Arc::new(schemas);
    if let Some(node) = &node {
        node.follow(&services, schemas.clone(), &tracker, &shutdown)?;
    }
    let resumed = services.mutations.resume_pending().await?;
    if resumed > 0 {
        tracing::info!(mutations = resumed, "resuming queued device mutations");
    }
    services.mutations.spawn_sweeper(settings.cluster.sweep_interval);

    let tls = settings.tls.as_ref().map(|tls| TlsMaterial::load(&tls.cert, &tls.key)).transpose()?;
    let backend_runtime = BackendRuntime::start(settings.grpc.threads)?;
    let Listeners { device, grpc, admin } = Listeners::bind(&settings, &backend_runtime)?;
    let (device_addr, grpc_addr, admin_addr) = (device.local_addr()?, grpc.local_addr()?, admin.local_addr()?);
    let connections = Arc::new(ConnectionCount::default());
    let wire = Arc::new(WireStats::default());
    let device_parts = (services.clone(), connections.clone(), wire.clone());
    let device_task = serve_devices(device, &settings.device, tls.as_ref(), device_parts, &tracker, &shutdown)?;
    let ingest_counters = Arc::new(IngestCounters::new(settings.sources.keys()));
    let ingest = IngestService::server(
        store.clone(),
        settings.sources.clone(),
        settings.grpc.ingest_token.clone(),
        ingest_counters.clone(),
    );
    let grpc_task = serve_grpc(grpc, ingest, tls.as_ref(), &backend_runtime, &tracker, &shutdown)?;

    let jobs = Jobs {
        store: store.clone(),
        cursors: services.cursors.clone(),
        devices: services.devices.clone(),
        blobs: services.blobs.clone(),
    };
    let leases = node.as_ref().map(|node| &node.leases);
    jobs.spawn(&settings.store, leases, &tracker, &shutdown);
    jobs.spawn_blob_collection(settings.blob.gc_interval, leases, &tracker, &shutdown);
    schemas.spawn(settings.grpc.describe_interval, &tracker, &shutdown);
    let live_wire = wire.clone();
    let metrics = Arc::new(Metrics::new(MetricSources {
        services: services.clone(),
        connections: connections.clone(),
        wire,
        ingest: ingest_counters,
        capture: capture.clone(),
    }));
    let readiness = Arc::new(admin::Readiness::default());
    let admin_state = AdminState {
        services: services.clone(),
        settings: Arc::new(settings.clone()),
        auth: admin_auth,
        capture: capture.clone(),
        connections: connections.clone(),
        readiness: readiness.clone(),
        started: std::time::Instant::now(),
        deliveries: Default::default(),
        metrics: metrics.clone(),
        live: Arc::new(admin::LiveSources { wire: live_wire }),
    };
    let admin_task = serve_admin(admin, admin_state, tls.as_ref(), &tracker, &shutdown)?;
    {
        // Change capture is backend-facing too: its channel clients and the tasks that read
        // the feeds and poll run on the backend runtime, so a backend's change is read and
        // committed without queueing behind device tasks, as an Ingest push is.
        let _entered = backend_runtime.handle().enter();
        let sink = capture::CaptureSink { store, counters: capture.clone() };
        // Which partitions are followed matters to capture only: shared when a source has it.
        let captures = settings.sources.values().any(|source| source.capture != Capture::Ingest);
        let subscribed: Arc<dyn capture::SubscribedPartitions> = match &node {
            Some(node) if captures => node.subscriptions(&services, &tracker, &shutdown),
            Some(_) | None => services.hub.clone(),
        };
        wiring::spawn_capture(&settings.sources, &sink, subscribed, capture_queues, leases, (&tracker, &shutdown))?;
    }
    readiness.listeners_bound();
    let stopped = {
        let shutdown = shutdown.clone();
        let rpc = services.rpc.clone();
        let grace = settings.shutdown_grace;
        // Not on the tracker: this task waits for the tracker to empty.
        tokio::spawn(async move {
            shutdown.cancelled().await;
            let listeners = shutdown::ListenerTasks { device: device_task, grpc: grpc_task, admin: admin_task };
            let stopped = shutdown::stop_in_order(listeners, tracker, &jobs, &rpc, grace).await;
            drop(demo_channel);
            drop(backend_runtime);
            stopped
        })
    };
    Ok(RunningServer {
        device_addr,
        grpc_addr,
        admin_addr,
        tls: tls.is_some(),
        services,
        connections,
        capture,
        metrics,
        shutdown,
        stopped,
    })
}

/// Opens the embedded store in the data directory; its commits go to `live`, then to
/// `commit_times`.
async fn open_store(
    settings: &StoreSettings,
    live: Box<dyn CommitListener>,
    commit_times: Arc<CommitTimes>,
) -> anyhow::Result<Arc<dyn Store>> {
    let live: Arc<dyn CommitListener> = Arc::new(CommitListeners { live, commit_times });
    if let StoreBackendSettings::Redis(options) = &settings.backend {
        let options = options.clone();
        let opened = tokio::task::spawn_blocking(move || RedisStore::open(&options, Some(live))).await?;
        return Ok(Arc::new(opened.context("cannot open the redis store")?));
    }
    let path = settings.data_dir.join(STORE_FILE_NAME);
    let options = EmbeddedOptions { cache_size_bytes: settings.cache_bytes };
    let opened = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || EmbeddedStore::open_with_listener(&path, options, Some(live))).await?
    };
    Ok(Arc::new(opened.with_context(|| format!("cannot open the store {}", path.display()))?))
}

/// The store's commit listeners: live push first (devices wait on it), then the commit
/// times device management reports lags with.
struct CommitListeners {
    live: Box<dyn CommitListener>,
    commit_times: Arc<CommitTimes>,
}

impl CommitListener for CommitListeners {
    fn committed(&self, batches: &[&crate::storage::CommittedBatch]) {
        self.live.committed(batches);
        self.commit_times.committed(batches);
    }
}

/// Starts the authenticator: local users or the login channel, and backend tokens when
/// configured.
async fn start_auth(store: Arc<dyn Store>, settings: &AuthSettings) -> anyhow::Result<Authenticator> {
    let ttl = settings.token_ttl;
    let channel = settings.channel.as_deref().map(ChannelConnection::lazy).transpose()?;
    let limits = settings.login_limits;
    let auth = tokio::task::spawn_blocking(move || Authenticator::new(store, ttl, channel, &limits)).await??;
    Ok(match &settings.backend_tokens {
        Some(tokens) => auth.with_backend_tokens(BackendTokenVerifier::new(&tokens.secret, tokens.audience.as_deref())),
        None => auth,
    })
}

/// What the gateway's services are built from besides the settings and the store.
struct GatewayParts {
    hub: Arc<Hub<PartitionName>>,
    auth: Authenticator,
    commit_times: Arc<CommitTimes>,
    /// The other nodes' control channel, in cluster mode.
    peers: Option<Arc<ControlPublisher>>,
    /// The cluster-wide per-user session counts, in cluster mode.
    user_sessions: Option<Arc<ClusterSessions>>,
    /// The cluster's leases (mutation lanes run under them), in cluster mode.
    leases: Option<Arc<Leases>>,
}

/// What makes this process one node of a cluster (store backend `redis`): the node bus
/// for partition changes, the control channel, the per-user session counts, and the leases
/// of the work one node at a time does.
struct ClusterNode {
    node_id: String,
    pubsub_url: String,
    bus: Arc<dyn syncline_push::NodeBus<PartitionName>>,
    peers: Arc<ControlPublisher>,
    sessions: Arc<ClusterSessions>,
    link: RedisLink,
    leases: Arc<Leases>,
}

/// The control channel every node of a cluster follows.
const CONTROL_CHANNEL: &str = "syncline:control";

impl ClusterNode {
    /// Joins the cluster when the store is on Redis; `None` for the embedded store.
    async fn start(
        settings: &Settings,
        hub: &Arc<Hub<PartitionName>>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Option<Self>> {
        let StoreBackendSettings::Redis(options) = &settings.store.backend else { return Ok(None) };
        let pubsub_url =
            crate::cluster::pubsub_url(&options.endpoint).context("store.redis_cluster_urls is empty")?.to_owned();
        let node_id = settings.cluster.node_id.clone().unwrap_or_else(crate::auth::new_client_id);
        let bus = crate::sync::bus::connect_redis_bus(&options.endpoint, hub.clone(), shutdown.clone(), tracker)
            .await
            .context("cannot start the node bus on redis")?;
        let link = RedisLink::connect(&options.endpoint).await.context("cannot connect to redis")?;
        let peers = Arc::new(ControlPublisher::new(link.clone(), CONTROL_CHANNEL, &node_id));
        let sessions = ClusterSessions::start(link.clone(), "syncline", &node_id, tracker, shutdown.clone()).await;
        let leases = Leases::new(link.clone(), &node_id, settings.cluster.lease_ttl);
        tracing::info!(node = %node_id, lease_ttl_ms = settings.cluster.lease_ttl.as_millis() as u64,
            "cluster node: partition changes, control, session counts and leases on redis");
        Ok(Some(Self { node_id, pubsub_url, bus, peers, sessions, link, leases }))
    }

    /// Shares the partitions this node's devices follow with the other nodes and returns
    /// those followed anywhere, for capture.
    fn subscriptions(
        &self,
        services: &GatewayServices,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Arc<dyn capture::SubscribedPartitions> {
        let requests = services.capture_requests.clone();
        ClusterSubscriptions::start(self.link.clone(), services.hub.clone(), requests, tracker, shutdown.clone())
    }

    /// Follows the control channel, acting on this node's devices.
    fn follow(
        &self,
        services: &GatewayServices,
        schemas: Arc<crate::channel::schema::SchemaWatch>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let connections = services.connections.clone();
        let targets = ControlTargets { connections, devices: services.devices.clone(), schemas: Some(schemas) };
        crate::cluster::follow(&self.pubsub_url, CONTROL_CHANNEL, &self.node_id, targets, tracker, shutdown.clone())
            .context("cannot follow the control channel")?;
        Ok(())
    }
}

/// Builds what every device session shares, with the mutation dispatcher, the RPC router
/// and the capture request queues (whose receiving ends are returned for capture).
fn gateway_services(
    settings: &Settings,
    store: Arc<dyn Store>,
    GatewayParts { hub, auth, commit_times, peers, user_sessions, leases }: GatewayParts,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Arc<GatewayServices>, wiring::CaptureQueues)> {
    let (capture_requests, capture_queues) = wiring::capture_queues(&settings.sources);
    let channels = Arc::new(ChannelRegistry::new(&settings.sources)?);
    let connections = Arc::new(DeviceConnections::default());
    let relay = Arc::new(match peers {
        Some(peers) => DeviceRelay::clustered(connections.clone(), peers),
        None => DeviceRelay::local(connections.clone()),
    });
    let mutations = MutationDispatcher::with_leases(
        store.clone(),
        &settings.sources,
        channels.clone(),
        relay.clone(),
        (tracker.clone(), shutdown.clone()),
        leases,
    );
    let devices = Arc::new(DeviceManagement::new(store.clone(), relay.clone(), commit_times));
    let blobs =
        crate::blobs::BlobService::open(store.clone(), &settings.blob, settings.sources.clone(), channels.clone())
            .with_context(|| format!("cannot open blob storage (directory {})", settings.blob.dir.display()))?;
    let bulk = crate::bulk::BulkSnapshots::open(store.clone(), settings.sources.clone(), settings.bulk.clone())
        .with_context(|| format!("cannot open the bulk directory {}", settings.bulk.dir.display()))?;
    // Bulk files go to the blob bucket too, when there is one (`bulk/` under its prefix).
    let bulk_bucket = settings.blob.s3.as_ref().map(crate::blobs::Bucket::open).transpose()?;
    let bulk = bulk.with_bucket(bulk_bucket);
    let bulk = Arc::new(bulk);
    bulk.spawn(tracker, shutdown);
    let services = GatewayServices {
        store,
        hub,
        auth,
        sources: settings.sources.clone(),
        limits: settings.device.clone(),
        catch_up_reads: Arc::new(tokio::sync::Semaphore::new(settings.device.catch_up_reads)),
        cursors: Arc::new(CursorRecorder::default()),
        capture_requests,
        mutations,
        channels,
        connections,
        relay,
        tracker: tracker.clone(),
        user_sessions: user_sessions.map_or_else(UserSessions::default, UserSessions::clustered),
        rpc: RpcRouter::new(&settings.rpc, tracker.clone())?,
        devices,
        handshakes: Default::default(),
        blobs: Arc::new(blobs),
        bulk,
    };
    Ok((Arc::new(services), capture_queues))
}

/// Every listener, bound before any serves, so that a server that cannot bind one serves
/// none.
struct Listeners {
    device: TcpListener,
    /// Registered with the backend runtime's I/O driver, where it is served.
    grpc: TcpListener,
    admin: TcpListener,
}

impl Listeners {
    /// Binds the device and gRPC endpoints.
    fn bind(settings: &Settings, backend_runtime: &BackendRuntime) -> anyhow::Result<Self> {
        let device_addr = settings.device.addr;
        let device = syncline_push::listener::bind(device_addr)
            .with_context(|| format!("cannot listen on {device_addr} (device endpoint)"))?;
        let grpc_addr = settings.grpc.addr;
        let grpc = std::net::TcpListener::bind(grpc_addr)
            .with_context(|| format!("cannot listen on {grpc_addr} (gRPC endpoint)"))?;
        grpc.set_nonblocking(true)?;
        let grpc = {
            let _entered = backend_runtime.handle().enter();
            TcpListener::from_std(grpc)?
        };
        let admin_addr = settings.admin.addr;
        let admin = std::net::TcpListener::bind(admin_addr)
            .with_context(|| format!("cannot listen on {admin_addr} (admin endpoint)"))?;
        admin.set_nonblocking(true)?;
        let admin = TcpListener::from_std(admin)?;
        Ok(Self { device, grpc, admin })
    }
}

/// Serves device connections from `listener`, on `tracker`, until `shutdown` fires; counts
/// them and their frames in `connections` and `wire`.
fn serve_devices(
    listener: TcpListener,
    settings: &DeviceSettings,
    tls: Option<&TlsMaterial>,
    (services, connections, wire): (Arc<GatewayServices>, Arc<ConnectionCount>, Arc<WireStats>),
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let acceptor = tls.map(TlsMaterial::device_acceptor).transpose()?;
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let url = format!("{scheme}://{}{}", listener.local_addr()?, syncline_proto::SYNC_PATH);
    tracing::info!(%url, "device endpoint listening");
    let (handoff, http_connections) = syncline_push::listener::handoff::handoff(gateway::http::HANDOFF_QUEUE);
    let http_listener = gateway::http::DeviceHttpListener::new(listener.local_addr()?, http_connections);
    gateway::http::serve(http_listener, gateway::http::router(services.clone()), tracker, shutdown);
    Ok(tracker.spawn(syncline_push::listener::serve(
        listener,
        acceptor,
        Arc::new(DeviceSessions { services, http: handoff }),
        Arc::new(settings.listener.clone()),
        connections,
        wire,
        shutdown.clone(),
        tracker.clone(),
    )))
}

/// Serves the admin API and health probes from `listener`, on `tracker`, until `shutdown`
/// fires.
fn serve_admin(
    listener: TcpListener,
    state: AdminState,
    tls: Option<&TlsMaterial>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let acceptor = tls.map(TlsMaterial::device_acceptor).transpose()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", listener.local_addr()?);
    tracing::info!(%url, "admin endpoint listening (admin API under /v1/admin/, /healthz, /readyz)");
    let listener = admin::AdminListener::new(listener, acceptor, tracker, shutdown)?;
    Ok(admin::serve(listener, admin::router(state), tracker, shutdown))
}

/// Gives a fresh data directory its first admin credentials: the admin user `admin` gets
/// `admin.password` when it is set; the demo, without one, creates `admin` with a random
/// password printed once, at the first start.
async fn first_admin_credentials(auth: &AdminAuth, store: &Arc<dyn Store>, settings: &Settings) -> anyhow::Result<()> {
    if let Some(password) = &settings.admin.password {
        auth.put_admin_user(admin::DEFAULT_ADMIN_NAME, password, AdminRole::Admin)
            .await
            .map_err(|error| anyhow::anyhow!("cannot set the admin password: {}", error.message))?;
        tracing::info!(user = admin::DEFAULT_ADMIN_NAME, "admin user set from admin.password");
        return Ok(());
    }
    let counted = store.clone();
    let admins = tokio::task::spawn_blocking(move || counted.admin_user_count()).await??;
    if settings.demo.is_none() || admins > 0 {
        if admins == 0 {
            tracing::warn!("no admin credentials yet: set SYNCLINE_ADMIN_PASSWORD or run `syncline admin create`");
        }
        return Ok(());
    }
    let mut bytes = [0u8; 12];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let password = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes);
    auth.put_admin_user(admin::DEFAULT_ADMIN_NAME, &password, AdminRole::Admin)
        .await
        .map_err(|error| anyhow::anyhow!("cannot create the demo admin user: {}", error.message))?;
    let scheme = if settings.tls.is_some() { "https" } else { "http" };
    println!(
        "\n  Syncline admin: {scheme}://{}/  user: {}  password: {password}\n  \
         (shown once; change it with `syncline admin create --password ...`)\n",
        settings.admin.addr,
        admin::DEFAULT_ADMIN_NAME
    );
    Ok(())
}

/// Serves the gRPC endpoint (Ingest) from `listener` on the backend runtime, on `tracker`,
/// until `shutdown` fires; in-flight calls finish first.
fn serve_grpc(
    listener: TcpListener,
    ingest: IngestServer<IngestService>,
    tls: Option<&TlsMaterial>,
    backend_runtime: &BackendRuntime,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<JoinHandle<Result<(), tonic::transport::Error>>> {
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls.grpc_config()).context("gRPC TLS configuration")?;
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", listener.local_addr()?);
    tracing::info!(%url, "gRPC endpoint listening (Ingest)");
    let shutdown = shutdown.clone();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let serving =
        server.add_service(ingest).serve_with_incoming_shutdown(incoming, async move { shutdown.cancelled().await });
    Ok(tracker.spawn_on(serving, backend_runtime.handle()))
}

/// Starts the demo app's channel when the settings ask for the demo; returns what keeps it
/// running.
#[cfg(feature = "demo")]
async fn start_demo(
    settings: &mut Settings,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<syncline_example_crm::RunningCrmChannel>> {
    match settings.demo.clone() {
        Some(demo) => Ok(Some(crate::demo::start_channel(settings, &demo, shutdown).await?)),
        None => Ok(None),
    }
}

/// Stands for the demo channel in a build without it (never made).
#[cfg(not(feature = "demo"))]
struct NoDemo;

/// Refuses to start the demo app in a build without it.
#[cfg(not(feature = "demo"))]
async fn start_demo(settings: &mut Settings, _shutdown: &CancellationToken) -> anyhow::Result<Option<NoDemo>> {
    match settings.demo {
        Some(_) => anyhow::bail!("this build has no demo app (cargo feature `demo`): configure [sources]"),
        None => Ok(None),
    }
}

/// Runs the server until `signal` completes, then stops it gracefully.
pub async fn run(settings: Settings, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
    let server = start(settings).await?;
    signal.await;
    tracing::info!("shutting down");
    server.stop().await
}
