//! `crm-channel`: serves the example CRM channel, and its mobile RPC service `crm`, over a
//! SQLite file.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use syncline_example_crm::CrmDb;

/// Serves the example CRM channel (sources Account and Contact) and its mobile RPC service
/// `crm` (CloseDeal) over a SQLite file, on one port.
#[derive(Parser)]
#[command(name = "crm-channel", version)]
struct Cli {
    /// The SQLite database file (created if missing).
    #[arg(long)]
    db: PathBuf,
    /// The address to serve gRPC on.
    #[arg(long, default_value = "127.0.0.1:7801")]
    listen: SocketAddr,
    /// Adds N generated accounts when there are none, and the user demo/demo.
    #[arg(long, value_name = "N")]
    seed: Option<u32>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let db = CrmDb::open(&cli.db).await.context("opening the database")?;
    if let Some(accounts) = cli.seed {
        db.seed(accounts).await.context("seeding the database")?;
        tracing::info!(accounts, "seeded");
    }
    let listener =
        tokio::net::TcpListener::bind(cli.listen).await.with_context(|| format!("binding {}", cli.listen))?;
    let channel = syncline_example_crm::serve_db(db, listener, shutdown_signal())?;
    channel.stopped().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(terminate) => terminate,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
