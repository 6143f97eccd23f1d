//! `syncline-sim storm`: a reconnect storm.
//!
//! N devices (one password login, then session tokens) subscribe to a partition and are
//! caught up. Then every device drops its connection at once, without a close frame, as a
//! lost network would, and at once resumes: a token login, then a subscribe from its cursor
//! ([`crate::fleet::Fleet::reconnect_all`]). With `--changes-during M`, M single-record
//! Ingest pushes (each its own call and commit, `--rate` per second or a burst) start at the
//! same moment, so the devices must catch up on what happened while they were away.
//!
//! Measured from the disconnect: the time until every device is connected again and caught
//! up at the partition's head (the highest head a push returned, or the head at the start),
//! each device's time to caught up on its new connection, changes never received (sequences
//! skipped plus sequences short of the head at the end), sequences received twice, and
//! reconnect attempts that failed and were retried with a bounded, jittered backoff.

use clap::Args;
use serde::Serialize;
use tokio::time::Instant;

use crate::{
    fleet::{FleetArgs, FleetParams, FleetTotals, Logins, RampUp, RunArgs, STOP_GRACE, ramp_up},
    push_driver::{IngestArgs, ProbeRecords, WritePlan, drain_deadline, push_open_loop},
    report::{LatencySummary, Table, round, secs, unix_time_secs, write_json},
    usage::{ServerWindow, UsageWindow, server_process},
};

/// Default bound on pending Push calls during the outage.
const DEFAULT_MAX_IN_FLIGHT: usize = 64;

/// Arguments of `storm`.
#[derive(Debug, Args)]
pub(crate) struct StormArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    /// `--grpc`: the Ingest endpoint for `--changes-during`.
    #[command(flatten)]
    ingest: IngestArgs,
    /// Single-record changes pushed from the moment of the disconnect on.
    #[arg(long, default_value_t = 0)]
    changes_during: u64,
    /// Pushes per second of `--changes-during` (0: back to back).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Push calls pending at once.
    #[arg(long, default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    max_in_flight: usize,
    /// `--drain-secs`: how long after the last push every device may take to be back at the
    /// head before the rest count as not resumed.
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

#[derive(Debug, Serialize)]
struct Params {
    #[serde(flatten)]
    fleet: FleetParams,
    grpc: String,
    changes_during: u64,
    rate: f64,
    max_in_flight: usize,
    #[serde(flatten)]
    run: RunArgs,
}

#[derive(Debug, Serialize)]
struct StormReport {
    scenario: &'static str,
    unix_time: u64,
    params: Params,
    ramp_up: RampUp,
    /// Pushes during the outage that returned OK, and those that failed.
    pushed: u64,
    push_errors: u64,
    first_push_error: Option<String>,
    /// First push to the return of the last one.
    push_secs: f64,
    /// The head every device must reach: the highest head a push returned, or the head at
    /// the start.
    head: u64,
    /// Devices (of those caught up in the ramp-up) back at the head before the drain ended.
    devices_back: u64,
    /// True when every device caught up in the ramp-up was back at the head.
    all_back: bool,
    /// Disconnect to the last device back at the head (`None` if not all came back).
    all_back_secs: Option<f64>,
    /// Per device, disconnect to caught up on its new connection.
    resume: LatencySummary,
    /// Sessions resumed, and reconnect attempts that failed and were retried.
    reconnects: u64,
    reconnect_failures: u64,
    /// Changes never received: sequences skipped plus sequences short of the head at the
    /// end, summed over devices.
    lost: u64,
    /// Sequences received twice, summed over devices.
    duplicates: u64,
    /// Records pushed during the outage × devices caught up in the ramp-up.
    expected_records: u64,
    /// Records of this run received (catch-up pages while resuming, and live pushes).
    delivered_records: u64,
    server: Option<ServerWindow>,
    fleet: FleetTotals,
}

/// Runs `storm`.
pub(crate) async fn run(args: StormArgs, run_start: Instant, deadline: Instant) -> anyhow::Result<()> {
    crate::fleet::check_rate(args.rate)?;
    let writer = if args.changes_during > 0 { Some(args.ingest.writer().await?) } else { None };
    let server = args.run.server_pid.map(server_process).transpose()?;
    let (fleet, shared, ramp_up) = ramp_up(&args.fleet, Logins::Password, run_start, deadline).await?;

    let usage = UsageWindow::start(server)?;
    let disconnected = Instant::now();
    fleet.reconnect_all();
    let plan = WritePlan {
        source: args.fleet.source.clone(),
        keys: vec![args.fleet.key.clone()],
        changes: args.changes_during,
        first_index: 0,
        rate: args.rate,
        max_in_flight: args.max_in_flight,
        records: ProbeRecords::ByWrite { pad_bytes: 0 },
    };
    let pushes = match writer {
        Some(writer) => Some(push_open_loop(&plan, &shared, writer, deadline).await),
        None => None,
    };
    let head = pushes.as_ref().map_or(ramp_up.cursor, |pushes| pushes.max_head.max(ramp_up.cursor));
    let before = fleet.set_target(head);
    let drain_deadline = drain_deadline(args.run.drain_secs, deadline);
    let all_back = shared.at_target.wait_for(before + ramp_up.caught_up as u64, drain_deadline).await;
    let back_after = disconnected.elapsed();
    let devices_back = shared.at_target.get() - before;
    let usage = usage.finish()?;

    let totals = fleet.stop(Instant::now() + STOP_GRACE).await;
    let pushed = pushes.as_ref().map_or(0, |pushes| pushes.pushed);
    let report = StormReport {
        scenario: "storm",
        unix_time: unix_time_secs(),
        params: Params {
            fleet: args.fleet.params(),
            grpc: args.ingest.grpc.clone(),
            changes_during: args.changes_during,
            rate: args.rate,
            max_in_flight: args.max_in_flight,
            run: args.run.clone(),
        },
        pushed,
        push_errors: pushes.as_ref().map_or(0, |pushes| pushes.errors),
        first_push_error: pushes.as_ref().and_then(|pushes| pushes.first_error.clone()),
        push_secs: pushes.as_ref().map_or(0.0, |pushes| secs(pushes.elapsed)),
        head,
        devices_back,
        all_back,
        all_back_secs: all_back.then(|| round(back_after.as_secs_f64(), 3)),
        resume: LatencySummary::of(&shared.resume_latency.lock()),
        reconnects: totals.reconnects,
        reconnect_failures: totals.reconnect_failures,
        lost: totals.missing_seqs + totals.short_of_target_seqs,
        duplicates: totals.duplicate_seqs,
        expected_records: ramp_up.caught_up as u64 * pushed,
        delivered_records: totals.live_records + totals.resume_records + totals.catchup_records,
        server: usage.server,
        ramp_up,
        fleet: totals,
    };
    print_table(&report);
    write_json(args.run.json_out.as_deref(), &report)
}

fn print_table(report: &StormReport) {
    let mut table = Table::new(format!(
        "storm: {} devices disconnect and resume at once, {} changes during",
        report.params.fleet.devices, report.params.changes_during
    ));
    report.ramp_up.add_rows(&mut table);
    if report.params.changes_during > 0 {
        table.row(
            "pushed during",
            format!("{} ok, {} failed in {:.2} s", report.pushed, report.push_errors, report.push_secs),
        );
    }
    let all_back = match report.all_back_secs {
        Some(secs) => format!("{secs:.3} s"),
        None => "not all back before the drain ended".to_owned(),
    };
    table
        .row("head", report.head)
        .row("back at head", format!("{} of {}", report.devices_back, report.ramp_up.caught_up))
        .row("disconnect to all back", all_back)
        .row("resume p50/p90/p99/max", report.resume.line())
        .row("reconnects / failed attempts", format!("{} / {}", report.reconnects, report.reconnect_failures))
        .row("lost / duplicates (changes)", format!("{} / {}", report.lost, report.duplicates))
        .row("records expected / delivered", format!("{} / {}", report.expected_records, report.delivered_records))
        .row("resume pages", report.fleet.resume_pages);
    if let Some(server) = &report.server {
        table.row(
            "server",
            format!(
                "{:.2} s CPU, RSS {:.1} MB before, {:.1} MB after",
                server.cpu_secs,
                server.memory_before.rss_kb as f64 / 1024.0,
                server.memory_after.rss_kb as f64 / 1024.0
            ),
        );
    }
    report.fleet.add_error_row(&mut table);
    if let Some(error) = &report.first_push_error {
        table.row("first push error", error);
    }
    table.print();
}
