//! `syncline-sim`: simulated Syncline devices on the command line.
//!
//! - `watch` (`watch.rs`): one device syncing one partition, printing its progress, its
//!   records once caught up, and each live change, until Ctrl-C.

mod watch;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Default log filter: the CLI's output is its stdout; logs (stderr) only report trouble.
const DEFAULT_LOG_FILTER: &str = "warn";

#[derive(Debug, Parser)]
#[command(name = "syncline-sim", version, about = "Simulated Syncline devices")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Syncs one partition and prints its records and live changes until Ctrl-C.
    Watch(watch::WatchArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match Cli::parse().command {
        Command::Watch(args) => watch::run(args).await,
    }
}
