//! The composition root: builds the store, the hub, the services and the listeners, runs
//! them, and stops them in order.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use syncline_push::{ConnectionCount, Hub, ListenerConfig, Outbox, SessionConfig, SessionFactory};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Authenticator, BackendTokenVerifier};
use crate::channel::capture;
use crate::channel::grpc::ChannelConnection;
use crate::config::{Capture, Partitioning, Settings};
use crate::ingest::IngestService;
use crate::mutations::MutationDispatcher;
use crate::rpc::RpcRouter;
use crate::storage::Store;
use crate::storage::embedded::{EmbeddedOptions, EmbeddedStore};
use crate::sync::session::DeviceSession;
use crate::sync::{DeviceLimits, LivePublisher, SyncEngine, cursors::CursorRecorder};
use crate::tls::TlsMaterial;
use crate::{demo, shutdown};

/// Name of the embedded store's file inside the data directory.
pub const STORE_FILE_NAME: &str = "syncline.redb";

/// A running server: its bound addresses and a handle to stop it.
pub struct RunningServer {
    pub device_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// True when both listeners serve TLS.
    pub tls: bool,
    pub engine: Arc<SyncEngine>,
    pub connections: Arc<ConnectionCount>,
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

struct DeviceSessions {
    engine: Arc<SyncEngine>,
}

impl SessionFactory for DeviceSessions {
    type Handler = DeviceSession;

    fn open(&self, peer: SocketAddr, outbox: Outbox) -> DeviceSession {
        DeviceSession::new(self.engine.clone(), peer, outbox)
    }
}

/// Opens the store, seeds the demo when configured, binds both listeners and starts serving.
/// Returns once the listeners are bound.
pub async fn start(settings: Settings) -> anyhow::Result<RunningServer> {
    let store_path = settings.data_dir.join(STORE_FILE_NAME);
    let options = EmbeddedOptions { cache_size_bytes: settings.store_cache_bytes };
    let store: Arc<dyn Store> = {
        let path = store_path.clone();
        Arc::new(
            tokio::task::spawn_blocking(move || EmbeddedStore::open(&path, options))
                .await?
                .with_context(|| format!("cannot open the store {}", store_path.display()))?,
        )
    };
    let shutdown = CancellationToken::new();
    let mut settings = settings;
    let demo_channel = match settings.demo.clone() {
        Some(demo) => Some(demo::start_channel(&mut settings, &demo, &shutdown).await?),
        None => None,
    };
    // One sweeper per runtime worker: live fan-out runs on every core, off the store's
    // writer thread.
    let hub = Hub::with_sweepers(tokio::runtime::Handle::current().metrics().num_workers(), settings.push_interval);
    store.set_commit_listener(Arc::new(LivePublisher { hub: hub.clone(), max_page_bytes: settings.max_page_bytes }));
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
    let (poll_requests, pollers) = poll_queues(&settings);
    let tracker = TaskTracker::new();
    let mutations = MutationDispatcher::new(store.clone(), &settings.sources, tracker.clone(), shutdown.clone())?;
    let engine = Arc::new(SyncEngine {
        store: store.clone(),
        hub,
        auth,
        sources: settings.sources.clone(),
        limits: DeviceLimits::from_settings(&settings),
        cursors: CursorRecorder::default(),
        poll_requests,
        mutations: mutations.clone(),
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
    let ingest_runtime = IngestRuntime::start(settings.grpc_threads)?;
    let grpc_listener = {
        let listener = std::net::TcpListener::bind(settings.grpc_addr)
            .with_context(|| format!("cannot listen on {} (gRPC endpoint)", settings.grpc_addr))?;
        listener.set_nonblocking(true)?;
        // Registered with the ingest runtime's I/O driver, where it is served.
        let _entered = ingest_runtime.handle().enter();
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
        },
    });
    let device_tls = tls.as_ref().map(TlsMaterial::device_acceptor).transpose()?;
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    tracing::info!(url = %format!("{scheme}://{device_addr}{}", syncline_proto::SYNC_PATH), "device endpoint listening");
    let device_task = tokio::spawn(syncline_push::listener::serve(
        device_listener,
        device_tls,
        Arc::new(DeviceSessions { engine: engine.clone() }),
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
    let grpc_task = ingest_runtime.handle().spawn(
        grpc.add_service(ingest)
            .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(grpc_listener), async move {
                grpc_shutdown.cancelled().await
            }),
    );

    let mut background = spawn_background_jobs(&settings, &engine, &tracker, &shutdown);
    background.extend({
        // Change capture is backend-facing too: its channel clients and the tasks that read
        // the feeds and poll run on the ingest runtime, so a backend's change is read and
        // committed without queueing behind device tasks, as an Ingest push is.
        let _entered = ingest_runtime.handle().enter();
        spawn_capture(&settings, &engine, pollers, &shutdown)?
    });
    let stopped = {
        let shutdown = shutdown.clone();
        let engine = engine.clone();
        let grace = settings.shutdown_grace;
        tokio::spawn(async move {
            shutdown.cancelled().await;
            let stopped = shutdown::stop_in_order(device_task, grpc_task, background, tracker, &engine, grace).await;
            drop(demo_channel);
            drop(ingest_runtime);
            stopped
        })
    };
    Ok(RunningServer { device_addr, grpc_addr, tls: tls.is_some(), engine, connections, shutdown, stopped })
}

/// The runtime the gRPC endpoint (Ingest) and change capture from channels run on, apart from
/// the device connections'. When devices keep the device runtime's workers busy (a sweep
/// writes to thousands of sockets), a task woken there waits for every task queued before it;
/// this runtime's thread is woken by the kernel instead, which runs it at once, so a backend's
/// write is read, committed and answered without queueing behind device tasks. The tasks it
/// spawns (one per gRPC connection and request) stay on it. `grpc.threads` sizes it (one
/// thread by default).
struct IngestRuntime(Option<tokio::runtime::Runtime>);

impl IngestRuntime {
    fn start(threads: usize) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("syncline-ingest")
            .enable_all()
            .build()
            .context("cannot start the ingest runtime")?;
        Ok(Self(Some(runtime)))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("present until dropped").handle()
    }
}

impl Drop for IngestRuntime {
    fn drop(&mut self) {
        // Dropped from inside the main runtime: shutting down without blocking is the only
        // way allowed there. Its server has stopped by then (or the process is ending).
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Runs the server until `signal` completes, then stops it gracefully.
pub async fn run(settings: Settings, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
    let server = start(settings).await?;
    signal.await;
    tracing::info!("shutting down");
    server.stop().await
}

fn spawn_background_jobs(
    settings: &Settings,
    engine: &Arc<SyncEngine>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let cursor_job = {
        let engine = engine.clone();
        let shutdown = shutdown.clone();
        let every = settings.cursor_flush;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = ticker.tick() => flush_cursors(&engine).await,
                }
            }
        })
    };
    let compaction_job = {
        let engine = engine.clone();
        let shutdown = shutdown.clone();
        let every = settings.compact_interval;
        let keep_recent = settings.compact_keep_recent;
        tracker.spawn(async move {
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = ticker.tick() => compact_all(&engine, keep_recent).await,
                }
            }
        })
    };
    vec![cursor_job, compaction_job]
}

type PollQueues = (
    std::collections::BTreeMap<String, tokio::sync::mpsc::Sender<crate::storage::PartitionName>>,
    Vec<(String, tokio::sync::mpsc::Receiver<crate::storage::PartitionName>)>,
);

/// Creates the request queues of change capture: one per polled source (poll now) and one
/// per watched channel endpoint (load a partition), keyed by the source and by the endpoint.
fn poll_queues(settings: &Settings) -> PollQueues {
    let mut senders = std::collections::BTreeMap::new();
    let mut receivers = Vec::new();
    let mut endpoints: std::collections::BTreeMap<String, tokio::sync::mpsc::Sender<_>> = Default::default();
    for (name, source) in &settings.sources {
        match (source.capture, &source.channel) {
            (Capture::Poll { .. }, _) => {
                let (sender, receiver) = tokio::sync::mpsc::channel(capture::POLL_REQUEST_QUEUE);
                senders.insert(name.clone(), sender);
                receivers.push((name.clone(), receiver));
            }
            (Capture::Watch, Some(endpoint)) => {
                let sender = endpoints.entry(endpoint.clone()).or_insert_with(|| {
                    let (sender, receiver) = tokio::sync::mpsc::channel(capture::POLL_REQUEST_QUEUE);
                    receivers.push((endpoint.clone(), receiver));
                    sender
                });
                senders.insert(name.clone(), sender.clone());
            }
            (Capture::Watch | Capture::Ingest, _) => {}
        }
    }
    (senders, receivers)
}

/// Starts change capture: one watcher per channel endpoint with watched sources, one poller
/// per polled source.
fn spawn_capture(
    settings: &Settings,
    engine: &Arc<SyncEngine>,
    pollers: Vec<(String, tokio::sync::mpsc::Receiver<crate::storage::PartitionName>)>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    let mut watched: std::collections::BTreeMap<String, std::collections::BTreeMap<String, Partitioning>> =
        std::collections::BTreeMap::new();
    for (name, source) in &settings.sources {
        if let (Capture::Watch, Some(endpoint)) = (source.capture, &source.channel) {
            watched.entry(endpoint.clone()).or_default().insert(name.clone(), source.partitioning);
        }
    }
    let mut queues: std::collections::BTreeMap<String, _> = pollers.into_iter().collect();
    for (endpoint, sources) in watched {
        let connection = ChannelConnection::lazy(&endpoint)?;
        let Some(loads) = queues.remove(&endpoint) else { continue };
        tasks.push(tokio::spawn(capture::run_watch(
            engine.store.clone(),
            connection,
            sources,
            loads,
            shutdown.clone(),
        )));
    }
    for (name, requests) in queues {
        let Some(source) = settings.sources.get(&name) else { continue };
        let (Capture::Poll { interval }, Some(endpoint)) = (source.capture, &source.channel) else {
            continue;
        };
        let connection = ChannelConnection::lazy(endpoint)?;
        tasks.push(tokio::spawn(capture::run_poll(
            engine.store.clone(),
            engine.hub.clone(),
            connection,
            name,
            interval,
            requests,
            shutdown.clone(),
        )));
    }
    Ok(tasks)
}

/// Writes recorded device cursors to the store.
pub async fn flush_cursors(engine: &Arc<SyncEngine>) {
    let engine = engine.clone();
    let outcome = tokio::task::spawn_blocking(move || engine.cursors.flush(&engine.store)).await;
    match outcome {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::warn!(%error, "could not save device cursors; will retry"),
        Err(error) => tracing::warn!(%error, "cursor flush task failed"),
    }
}

/// Compacts every partition's log, keeping `keep_recent` entries behind each head.
pub async fn compact_all(engine: &Arc<SyncEngine>, keep_recent: u64) {
    let store = engine.store.clone();
    let outcome = tokio::task::spawn_blocking(move || -> Result<u64, crate::storage::StoreError> {
        let mut removed = 0;
        for partition in store.partitions()? {
            removed += store.compact(&partition, keep_recent)?.removed;
        }
        Ok(removed)
    })
    .await;
    match outcome {
        Ok(Ok(0)) => {}
        Ok(Ok(removed)) => tracing::info!(removed, "compacted change logs"),
        Ok(Err(error)) => tracing::warn!(%error, "compaction failed; will retry"),
        Err(error) => tracing::warn!(%error, "compaction task failed"),
    }
}

/// How long the stop sequence waits for the listeners' tasks at most, beyond the grace.
pub const LISTENER_STOP_TIMEOUT: Duration = Duration::from_secs(5);
