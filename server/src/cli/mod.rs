//! The `syncline` command line: `serve`, `user ...`, `admin ...`, `ingest`.
//!
//! - `users`: `syncline user add|list|passwd|disable|enable|delete`.
//! - `admin`: `syncline admin create` and `syncline admin token create|list|revoke`.
//! - `devices`: `syncline device list|show|lock|unlock|wipe|logout|resync`.
//! - `remote`: the admin API client those commands use when a server runs on the data
//!   directory (it holds the store's lock); without one they open the store themselves.
//! - `ingest`: `syncline ingest` (records from JSON over gRPC).

mod admin;
mod devices;
mod ingest;
mod remote;
mod users;

use std::collections::HashMap;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use self::admin::{AdminCommand, TokenCommand};
pub use self::devices::{DeviceCommand, SendArgs};
pub use self::ingest::{IngestArgs, ingest, json_to_value};
pub use self::users::{UserCommand, user_add};
use crate::config::{Config, LogFormat};
use crate::{app, shutdown, telemetry};

/// Syncline: a push-first realtime sync server.
#[derive(Debug, Parser)]
#[command(name = "syncline", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the server (embedded store in ./data and the demo app unless configured).
    Serve(ServeArgs),
    /// Manages device users: through the admin API of the server running on the data
    /// directory (with --token), else directly in its store (or the demo app's database).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manages devices (client ids): list, show, and lock, unlock, wipe, logout or resync
    /// one; through a running server's admin API (with --token), else directly in the data
    /// directory's store (commands then wait for each device's next connection).
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Manages admin users and API tokens: through a running server's admin API (with
    /// --token), else directly in the data directory's store.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Pushes records from a JSON file (or stdin) into a partition over gRPC.
    Ingest(IngestArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TOML config file (also SYNCLINE_CONFIG).
    #[arg(long, env = "SYNCLINE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (overrides config and SYNCLINE_DATA_DIR).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Device endpoint address, e.g. 127.0.0.1:7700.
    #[arg(long)]
    pub device_addr: Option<String>,
    /// gRPC endpoint address, e.g. 127.0.0.1:7701.
    #[arg(long)]
    pub grpc_addr: Option<String>,
    /// Admin endpoint address, e.g. 127.0.0.1:7702.
    #[arg(long)]
    pub admin_addr: Option<String>,
}

/// Where the store commands find the server or its data directory.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// TOML config file naming the data directory (also SYNCLINE_CONFIG).
    #[arg(long, env = "SYNCLINE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (overrides config and SYNCLINE_DATA_DIR).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Admin API token: talk to the running server's admin API instead of the store
    /// (SYNCLINE_ADMIN_TOKEN).
    #[arg(long, env = "SYNCLINE_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Admin endpoint address of the running server (default: admin.addr of the config,
    /// SYNCLINE_ADMIN_ADDR).
    #[arg(long)]
    pub admin_addr: Option<String>,
    /// CA certificate (PEM) to trust when the admin endpoint serves TLS.
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
}

/// Loads the config for `serve` and the store commands: file, env, then flags.
pub fn load_config(
    file: Option<&std::path::Path>,
    data_dir: Option<PathBuf>,
    env: &HashMap<String, String>,
) -> anyhow::Result<Config> {
    let mut config = Config::load(file, env)?;
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    Ok(config)
}

/// Runs `serve`.
async fn serve(args: ServeArgs, env: &HashMap<String, String>) -> anyhow::Result<()> {
    let mut config = load_config(args.config.as_deref(), args.data_dir.clone(), env)?;
    if let Some(addr) = args.device_addr {
        config.device.addr = addr;
    }
    if let Some(addr) = args.grpc_addr {
        config.grpc.addr = addr;
    }
    if let Some(addr) = args.admin_addr {
        config.admin.addr = addr;
    }
    let settings = config.validate()?;
    telemetry::init(settings.log_format == LogFormat::Json);
    tracing::info!(config = %config.redacted(), "starting syncline {}", env!("CARGO_PKG_VERSION"));
    app::run(settings, shutdown::signal()).await
}

/// Runs the `syncline` command line with the process's arguments and environment.
pub fn main() -> std::process::ExitCode {
    use std::process::ExitCode;

    let cli = Cli::parse();
    let env: HashMap<String, String> = std::env::vars().collect();
    let outcome =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(anyhow::Error::from).and_then(
            |runtime| {
                runtime.block_on(async {
                    match cli.command {
                        Command::Serve(args) => serve(args, &env).await,
                        Command::User { command } => users::run(command, &env).await,
                        Command::Admin { command } => admin::run(command, &env).await,
                        Command::Device { command } => devices::run(command, &env).await,
                        Command::Ingest(args) => ingest(args).await,
                    }
                })
            },
        );
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
