//! The command line: one subcommand per scenario, the runtime they run on, and the exit code.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::fleet::run_bounded;
use crate::scenarios::{
    blobs, idle, ingest, initial_sync, latency, login_storm, mutations, personal, rpc, slow, storm, watch,
};

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
    /// Measures ingest throughput: records/s committed through Ingest/Push at a batch size,
    /// with no device connected.
    Ingest(ingest::IngestScenarioArgs),
    /// Measures per-user push: N users with one device each (backend-token logins), M
    /// changes/s over their own partitions.
    Personal(personal::PersonalArgs),
    /// Measures blobs: uploads and downloads through the device listener, blobs/s and MB/s.
    Blobs(blobs::BlobsArgs),
}

/// Runs the command line and returns the process's exit code: on an error, prints it to
/// stderr as `Error: ` and its chain of causes, and exits with 1.
pub fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // What returning the error from `fn main` prints.
            eprintln!("Error: {error:?}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
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
            // The load scenarios run bounded: `--max-secs`, then a grace to stop.
            Command::Fanout(args) => run_bounded(args.run.max_secs, |start, end| latency::run(args, start, end)).await,
            Command::Storm(args) => run_bounded(args.run.max_secs, |start, end| storm::run(args, start, end)).await,
            Command::Slow(args) => run_bounded(args.run.max_secs, |start, end| slow::run(args, start, end)).await,
            Command::InitialSync(args) => initial_sync::run(args).await,
            Command::Ingest(args) => ingest::run(args).await,
            Command::Idle(args) => run_bounded(args.max_secs, |start, end| idle::run(args, start, end)).await,
            Command::Rpc(args) => rpc::run(args).await,
            Command::Blobs(args) => blobs::run(args).await,
            Command::Mutations(args) => {
                run_bounded(args.run.max_secs, |start, end| mutations::run(args, start, end)).await
            }
            Command::LoginStorm(args) => run_bounded(args.max_secs, |_, _| login_storm::run(args)).await,
            Command::Personal(args) => {
                run_bounded(args.run.max_secs, |start, end| personal::run(args, start, end)).await
            }
        }
    })
}
