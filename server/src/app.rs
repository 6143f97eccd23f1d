//! The composition root: builds the store, the hub, the services and the listeners, runs
//! them, and stops them in order.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use syncline_push::{ConnectionCount, Hub, ListenerConfig, SessionConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Authenticator, BackendTokenVerifier};
use crate::channel::ChannelRegistry;
use crate::channel::capture;
use crate::channel::grpc::ChannelConnection;
use crate::channel::wiring;
use crate::config::Settings;
use crate::gateway::{DeviceConnections, DeviceLimits, DeviceSessions, GatewayServices};
use crate::ingest::IngestService;
use crate::jobs::Jobs;
use crate::mutations::MutationDispatcher;
use crate::rpc::RpcRouter;
use crate::runtime::BackendRuntime;
use crate::shutdown;
use crate::storage::CommitListener;
use crate::storage::Store;
use crate::storage::embedded::{EmbeddedOptions, EmbeddedStore};
use crate::sync::{LivePublisher, cursors::CursorRecorder};
use crate::tls::TlsMaterial;

/// Name of the embedded store's file inside the data directory.
pub const STORE_FILE_NAME: &str = "syncline.redb";

/// A running server: its bound addresses and a handle to stop it.
pub struct RunningServer {
    pub device_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// True when both listeners serve TLS.
    pub tls: bool,
    /// What the device sessions share (tests read the store and the hub through it).
    pub services: Arc<GatewayServices>,
    pub connections: Arc<ConnectionCount>,
    /// Counters of change capture from channels (e.g. records refused).
    pub capture: Arc<capture::CaptureCounters>,
    shutdown: CancellationToken,
    stopped: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Returns the device endpoint's URL.
    pub fn device_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}{}", self.device_addr, syncline_proto::SYNC_PATH)
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
pub async fn start(settings: Settings) -> anyhow::Result<RunningServer> {
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    // One sweeper per runtime worker: live fan-out runs on every core, off the store's
    // writer thread.
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    let hub = Hub::with_sweepers(workers, settings.push_interval, &tracker, shutdown.clone());
    let store_path = settings.data_dir.join(STORE_FILE_NAME);
    let options = EmbeddedOptions { cache_size_bytes: settings.store_cache_bytes };
    let store: Arc<dyn Store> = {
        let path = store_path.clone();
        let live: Arc<dyn CommitListener> =
            Arc::new(LivePublisher { hub: hub.clone(), max_page_bytes: settings.max_page_bytes });
        Arc::new(
            tokio::task::spawn_blocking(move || EmbeddedStore::open_with_listener(&path, options, Some(live)))
                .await?
                .with_context(|| format!("cannot open the store {}", store_path.display()))?,
        )
    };
    let mut settings = settings;
    let demo_channel = start_demo(&mut settings, &shutdown).await?;
    let auth = {
        let store = store.clone();
        let ttl = settings.token_ttl;
        let channel = settings.auth_channel.as_deref().map(ChannelConnection::lazy).transpose()?;
        let limits = settings.login_limits;
        let auth = tokio::task::spawn_blocking(move || Authenticator::new(store, ttl, channel, &limits)).await??;
        match &settings.backend_tokens {
            Some(tokens) => {
                auth.with_backend_tokens(BackendTokenVerifier::new(&tokens.secret, tokens.audience.as_deref()))
            }
            None => auth,
        }
    };
    let (capture_requests, capture_queues) = wiring::capture_queues(&settings.sources);
    let channels = Arc::new(ChannelRegistry::new(&settings.sources)?);
    let connections_by_device = Arc::new(DeviceConnections::default());
    let mutations = MutationDispatcher::new(
        store.clone(),
        &settings.sources,
        channels.clone(),
        connections_by_device.clone(),
        tracker.clone(),
        shutdown.clone(),
    );
    let services = Arc::new(GatewayServices {
        store: store.clone(),
        hub,
        auth,
        sources: settings.sources.clone(),
        limits: DeviceLimits::from_settings(&settings),
        cursors: Arc::new(CursorRecorder::default()),
        capture_requests,
        mutations: mutations.clone(),
        channels,
        connections: connections_by_device,
        tracker: tracker.clone(),
        user_sessions: Default::default(),
        rpc: RpcRouter::new(&settings.rpc, tracker.clone())?,
    });
    let resumed = mutations.resume_pending().await?;
    if resumed > 0 {
        tracing::info!(mutations = resumed, "resuming queued device mutations");
    }

    let tls = match &settings.tls {
        Some((cert, key)) => Some(TlsMaterial::load(cert, key)?),
        None => None,
    };
    let device_listener = syncline_push::listener::bind(settings.device_addr)
        .with_context(|| format!("cannot listen on {} (device endpoint)", settings.device_addr))?;
    let backend_runtime = BackendRuntime::start(settings.grpc_threads)?;
    let grpc_listener = {
        let listener = std::net::TcpListener::bind(settings.grpc_addr)
            .with_context(|| format!("cannot listen on {} (gRPC endpoint)", settings.grpc_addr))?;
        listener.set_nonblocking(true)?;
        // Registered with the backend runtime's I/O driver, where it is served.
        let _entered = backend_runtime.handle().enter();
        TcpListener::from_std(listener)?
    };
    let device_addr = device_listener.local_addr()?;
    let grpc_addr = grpc_listener.local_addr()?;

    let connections = Arc::new(ConnectionCount::default());
    let listener_config = Arc::new(ListenerConfig {
        max_frame_bytes: settings.max_frame_bytes,
        max_connections: settings.max_connections,
        session: SessionConfig {
            outbound_queue: settings.outbound_queue,
            outbound_queue_bytes: settings.outbound_queue_bytes,
            heartbeat: settings.heartbeat,
            idle_timeout: settings.idle_timeout,
            handshake_timeout: settings.hello_timeout,
        },
    });
    let device_tls = tls.as_ref().map(TlsMaterial::device_acceptor).transpose()?;
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    tracing::info!(url = %format!("{scheme}://{device_addr}{}", syncline_proto::SYNC_PATH), "device endpoint listening");
    let device_task = tokio::spawn(syncline_push::listener::serve(
        device_listener,
        device_tls,
        Arc::new(DeviceSessions { services: services.clone() }),
        listener_config,
        connections.clone(),
        shutdown.clone(),
        tracker.clone(),
    ));

    let mut grpc = tonic::transport::Server::builder();
    if let Some(tls) = &tls {
        grpc = grpc.tls_config(tls.grpc_config()).context("gRPC TLS configuration")?;
    }
    let ingest = IngestService::server(store.clone(), settings.sources.clone(), settings.ingest_token.clone());
    let grpc_shutdown = shutdown.clone();
    let grpc_scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(url = %format!("{grpc_scheme}://{grpc_addr}"), "gRPC endpoint listening (Ingest)");
    let grpc_task = backend_runtime.handle().spawn(
        grpc.add_service(ingest)
            .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(grpc_listener), async move {
                grpc_shutdown.cancelled().await
            }),
    );

    let jobs = Jobs { store: store.clone(), cursors: services.cursors.clone() };
    jobs.spawn(&settings, &tracker, &shutdown);
    let capture = Arc::new(capture::CaptureCounters::default());
    {
        // Change capture is backend-facing too: its channel clients and the tasks that read
        // the feeds and poll run on the backend runtime, so a backend's change is read and
        // committed without queueing behind device tasks, as an Ingest push is.
        let _entered = backend_runtime.handle().enter();
        let sink = capture::CaptureSink { store: store.clone(), counters: capture.clone() };
        wiring::spawn_capture(&settings.sources, &sink, services.hub.clone(), capture_queues, &tracker, &shutdown)?;
    }
    let stopped = {
        let shutdown = shutdown.clone();
        let rpc = services.rpc.clone();
        let grace = settings.shutdown_grace;
        tokio::spawn(async move {
            shutdown.cancelled().await;
            let stopped = shutdown::stop_in_order(device_task, grpc_task, tracker, &jobs, &rpc, grace).await;
            drop(demo_channel);
            drop(backend_runtime);
            stopped
        })
    };
    Ok(RunningServer { device_addr, grpc_addr, tls: tls.is_some(), services, connections, capture, shutdown, stopped })
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
