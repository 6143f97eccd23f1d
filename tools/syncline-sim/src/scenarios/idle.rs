//! `syncline-sim idle`: server memory per idle device.
//!
//! Reads the server's resident memory, connects N devices (one password login, then session
//! tokens, spread over loopback source addresses), each subscribed to a partition and caught
//! up, waits a fixed settle time with everything idle, and reads it again:
//! (after − before) / N is what one connected, subscribed, idle device costs the server in
//! user space (kernel socket buffers are not in RSS).

use std::{path::PathBuf, time::Duration};

use clap::Args;
use serde::Serialize;
use syncline_procfs::Memory;
use tokio::time::Instant;

use crate::{
    fleet::{FleetArgs, FleetTotals, Logins, RampUp, STOP_GRACE, ramp_up},
    report::{Table, round, unix_time_secs, write_json},
    usage::server_process,
};

/// Default time for the whole run.
const DEFAULT_MAX_SECS: u64 = 600;
/// Default settle time: long enough for connection bursts to finish and allocations to
/// settle, well under the server's heartbeat (25 s), so the reading is of idle devices.
const DEFAULT_SETTLE_SECS: u64 = 5;

/// Arguments of `idle`.
#[derive(Debug, Args)]
pub(crate) struct IdleArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    /// The server's PID, for its memory from /proc/PID/status.
    #[arg(long)]
    server_pid: u32,
    /// Seconds to wait with every device connected and idle before reading memory again.
    #[arg(long, default_value_t = DEFAULT_SETTLE_SECS)]
    settle_secs: u64,
    /// Hard limit on the whole run, in seconds.
    #[arg(long, default_value_t = DEFAULT_MAX_SECS)]
    pub(crate) max_secs: u64,
    /// Writes the report as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Params {
    url: String,
    devices: usize,
    source: String,
    key: String,
    from_zero: bool,
    server_pid: u32,
    settle_secs: u64,
    max_secs: u64,
}

#[derive(Debug, Serialize)]
struct IdleReport {
    scenario: &'static str,
    unix_time: u64,
    params: Params,
    ramp_up: RampUp,
    /// Before the first connection.
    memory_before: Memory,
    /// After the settle time, every device still connected.
    memory_after: Memory,
    /// (after − before) RSS / devices caught up, in KiB.
    rss_kb_per_device: f64,
    /// Server CPU (utime + stime) from the login to every device caught up, per device.
    server_cpu_us_per_connect: f64,
    /// What the devices did; `ended_early` counts connections that ended during the settle.
    fleet: FleetTotals,
}

/// Runs `idle`.
pub(crate) async fn run(args: IdleArgs, run_start: Instant, deadline: Instant) -> anyhow::Result<()> {
    let server = server_process(args.server_pid)?;
    let memory_before = server.memory()?;
    let cpu_before = server.cpu_time()?;
    let (fleet, _shared, ramp_up) = ramp_up(&args.fleet, Logins::Password, run_start, deadline).await?;
    let connect_cpu = server.cpu_time()?.saturating_sub(cpu_before);
    let settle_end = Instant::now() + Duration::from_secs(args.settle_secs);
    anyhow::ensure!(settle_end < deadline, "no time left for the settle time before --max-secs");
    // The one deliberate wait: idle devices are the point of the measurement.
    tokio::time::sleep_until(settle_end).await;
    let memory_after = server.memory()?;
    let totals = fleet.stop(Instant::now() + STOP_GRACE).await;
    let devices = ramp_up.caught_up.max(1) as f64;
    let report = IdleReport {
        scenario: "idle",
        unix_time: unix_time_secs(),
        params: Params {
            url: args.fleet.url.clone(),
            devices: args.fleet.devices,
            source: args.fleet.source.clone(),
            key: args.fleet.key.clone(),
            from_zero: args.fleet.from_zero,
            server_pid: args.server_pid,
            settle_secs: args.settle_secs,
            max_secs: args.max_secs,
        },
        rss_kb_per_device: round((memory_after.rss_kb as f64 - memory_before.rss_kb as f64) / devices, 2),
        server_cpu_us_per_connect: round(connect_cpu.as_secs_f64() * 1e6 / devices, 1),
        ramp_up,
        memory_before,
        memory_after,
        fleet: totals,
    };
    print_table(&report);
    write_json(args.json_out.as_deref(), &report)
}

fn print_table(report: &IdleReport) {
    let mb = |kb: u64| kb as f64 / 1024.0;
    let mut table =
        Table::new(format!("idle: {} devices, {} s settle", report.params.devices, report.params.settle_secs));
    report.ramp_up.add_rows(&mut table);
    table
        .row("source addresses", report.ramp_up.source_addrs.len())
        .row("server RSS before", format!("{:.1} MB", mb(report.memory_before.rss_kb)))
        .row(
            "server RSS after",
            format!("{:.1} MB (peak {:.1} MB)", mb(report.memory_after.rss_kb), mb(report.memory_after.peak_rss_kb)),
        )
        .row("RSS per idle device", format!("{:.2} KB", report.rss_kb_per_device))
        .row("server CPU per connect", format!("{:.1} µs", report.server_cpu_us_per_connect))
        .row("ended during settle", report.fleet.ended_early);
    report.fleet.add_error_row(&mut table);
    table.print();
}
