//! `syncline-sim`: simulated Syncline devices on the command line.
//!
//! - `watch` (`watch.rs`): one device syncing one partition, printing its progress, its
//!   records once caught up, and each live change, until Ctrl-C.
//! - `fanout` (`latency.rs`; alias `latency`): N devices caught up on a partition, M
//!   single-record writes at a fixed rate or in a burst (pushed over gRPC Ingest, or created in
//!   the backend through its channel); deliveries per second, push latency, losses and server
//!   CPU per delivery.
//! - `storm` (`storm.rs`): N devices caught up, then all disconnected at once and resumed at
//!   once (token login, subscribe from their cursors), optionally with changes ingested during
//!   the outage; time until every device is back and caught up, losses, duplicates, retries.
//! - `slow` (`slow.rs`): N devices caught up, changes at a fixed rate; then k% stop reading
//!   their sockets; the others' latency against the phase before, the server's memory over
//!   time, and whether the stalled devices catch up without loss once they read again.
//! - `initial-sync` (`initial_sync.rs`): one device syncing a whole partition from cursor 0,
//!   repeated; records per second.
//! - `idle` (`idle.rs`): N devices caught up and idle; server memory per device.
//! - `mutations` (`mutations.rs`): N devices caught up, W writers sending creates; ack,
//!   result and echo latency, mutations per second sustained.
//! - `login-storm` (`login_storm.rs`): bursts of concurrent password logins, right and
//!   wrong; answers by kind, logins per second, and the server's RSS and threads after each
//!   burst (issue 13).
//! - `personal` (`personal.rs`): N users, each with one device logged in with a backend
//!   token this process mints, each synced to its own user partition; M changes/s pushed
//!   over Ingest across those partitions; latency, losses per partition, server CPU.
//!
//! Shared by the load scenarios: `fleet.rs` (token login and lightweight raw subscribers
//! over `wire::Connection`), `loopback.rs` (the loopback-only URL check and source
//! addresses), `procfs.rs` (server CPU and memory from `/proc`) and `report.rs` (the printed
//! table and the JSON file).

mod fleet;
mod idle;
mod initial_sync;
mod latency;
mod login_storm;
mod loopback;
mod mutations;
mod personal;
mod procfs;
mod report;
mod rpc;
mod slow;
mod storm;
mod watch;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Default log filter: the CLI's output is its stdout; logs (stderr) only report trouble.
const DEFAULT_LOG_FILTER: &str = "warn";

#[derive(Debug, Parser)]
#[command(name = "syncline-sim", version, about = "Simulated Syncline devices")]
struct Cli {
    /// Pins the whole process (every runtime thread) to this CPU core, e.g. to keep the load
    /// generator off the server's core.
    #[arg(long, global = true)]
    cpu: Option<usize>,
    /// The async runtime: `multi` (tokio's work-stealing scheduler, one worker per core this
    /// process may use) or `current` (everything on the main thread).
    #[arg(long, global = true, value_enum, default_value_t = RuntimeKind::Multi)]
    runtime: RuntimeKind,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum RuntimeKind {
    Multi,
    Current,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Syncs one partition and prints its records and live changes until Ctrl-C.
    Watch(watch::WatchArgs),
    /// Measures fan-out: N caught-up devices, M writes (Ingest pushes or channel creates) at a
    /// fixed rate or in a burst; deliveries per second and push latency.
    #[command(alias = "latency")]
    Fanout(latency::LatencyArgs),
    /// Measures a reconnect storm: N caught-up devices all disconnect and resume at once.
    Storm(storm::StormArgs),
    /// Measures slow consumers: k% of N caught-up devices stop reading; the others' latency and
    /// the server's memory.
    Slow(slow::SlowArgs),
    /// Measures initial sync: one device syncs a whole partition from cursor 0, repeatedly.
    InitialSync(initial_sync::InitialSyncArgs),
    /// Measures server memory per idle device: N devices connected, subscribed and caught up.
    Idle(idle::IdleArgs),
    /// Measures mobile RPC: round trips through Syncline against direct gRPC calls.
    Rpc(rpc::RpcArgs),
    /// Measures mutations: W writers send creates, N caught-up devices receive them back.
    Mutations(mutations::MutationsArgs),
    /// Measures login storms: bursts of concurrent password logins; the server's memory and
    /// threads after each.
    LoginStorm(login_storm::LoginStormArgs),
    /// Measures per-user push: N users with one device each (backend-token logins), M
    /// changes/s over their own partitions.
    Personal(personal::PersonalArgs),
}

fn main() -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let cli = Cli::parse();
    if let Some(cpu) = cli.cpu {
        // Before the runtime starts: its threads inherit the affinity, and tokio sizes its
        // worker pool from the cores this process may use.
        anyhow::ensure!(
            core_affinity::set_for_current(core_affinity::CoreId { id: cpu }),
            "cannot pin this process to CPU {cpu}"
        );
    }
    let mut builder = match cli.runtime {
        RuntimeKind::Multi => tokio::runtime::Builder::new_multi_thread(),
        RuntimeKind::Current => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = builder.enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Watch(args) => watch::run(args).await,
            Command::Fanout(args) => latency::run(args).await,
            Command::Storm(args) => storm::run(args).await,
            Command::Slow(args) => slow::run(args).await,
            Command::InitialSync(args) => initial_sync::run(args).await,
            Command::Idle(args) => idle::run(args).await,
            Command::Rpc(args) => rpc::run(args).await,
            Command::Mutations(args) => mutations::run(args).await,
            Command::LoginStorm(args) => login_storm::run(args).await,
            Command::Personal(args) => personal::run(args).await,
        }
    })
}
