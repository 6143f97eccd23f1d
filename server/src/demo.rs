//! The demo app served by `syncline serve` with no sources configured: the CRM example
//! channel (`examples/crm-channel`, SQLite in the data directory) runs in-process on a
//! loopback port and Syncline talks to it over gRPC like to any backend: sources `Account`
//! (app partition) and `Contact` (user partition) captured with `watch`, logins checked by
//! the channel (user `demo`, password `demo`). The same endpoint serves the mobile RPC
//! service `crm` (e.g. `CloseDeal`), whose record changes reach devices through the watch
//! feed.

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::config::{
    Capture, ConflictPolicy, DEFAULT_RPC_MAX_IN_FLIGHT_PER_SERVICE, DemoSettings, Partitioning, RpcServiceSettings,
    Settings, SourceSettings,
};

/// Name of the demo channel's database file in the data directory.
pub const DEMO_DB_FILE: &str = "demo-crm.db";

/// The demo app's sources and their partitioning (both captured with `watch` from the
/// channel).
pub const DEMO_SOURCES: &[(&str, Partitioning)] = &[("Account", Partitioning::App), ("Contact", Partitioning::User)];

/// The RPC service name devices call the demo channel's business operations by.
pub const DEMO_RPC_SERVICE: &str = "crm";

/// Starts the demo channel (seeding it on first start) and points the demo sources, logins
/// and the RPC service `crm` (unless configured otherwise) at it. The channel stops when
/// `shutdown` fires or the handle is dropped.
pub async fn start_channel(
    settings: &mut Settings,
    demo: &DemoSettings,
    shutdown: &CancellationToken,
) -> anyhow::Result<syncline_example_crm::RunningCrmChannel> {
    let data_dir = &settings.store.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("demo channel listener")?;
    let stop = shutdown.clone();
    let channel = syncline_example_crm::start(data_dir.join(DEMO_DB_FILE), listener, async move {
        stop.cancelled().await;
    })
    .await
    .context("cannot start the demo channel")?;
    channel.db().seed(demo.records).await.context("cannot seed the demo channel")?;
    let url = format!("http://{}", channel.local_addr());
    for &(name, partitioning) in DEMO_SOURCES {
        settings.sources.insert(
            name.to_owned(),
            SourceSettings {
                partitioning,
                channel: Some(url.clone()),
                capture: Capture::Watch,
                conflict: ConflictPolicy::Reject,
                page_size: None,
            },
        );
    }
    settings.auth.channel = Some(url.clone());
    settings.rpc.services.entry(DEMO_RPC_SERVICE.to_owned()).or_insert_with(|| RpcServiceSettings {
        endpoint: url.clone(),
        max_in_flight: DEFAULT_RPC_MAX_IN_FLIGHT_PER_SERVICE,
    });
    tracing::info!(%url, "demo app: CRM channel (user demo, password demo)");
    Ok(channel)
}
