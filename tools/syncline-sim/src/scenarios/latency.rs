//! `syncline-sim fanout` (alias `latency`): push latency and fan-out throughput through the
//! whole server.
//!
//! N devices (one password login, then session tokens) subscribe to a partition and are
//! caught up; then M single-record writes are made at a fixed rate (`--rate 0`: a burst, as
//! fast as the server takes them, `--max-in-flight` calls pipelined), each write its own call
//! and its own commit, in one of two ways (`--via`):
//!
//! - `ingest` (default): upserts pushed to Syncline over gRPC (`Ingest/Push`); each record
//!   carries the run's tag and `sent_ns` as int fields.
//! - `channel`: records created in the backend through the source's channel
//!   (`syncline.v1.Channel/Create`, no caller), the "backend commit"; Syncline sees them
//!   through its `watch` capture. The backend's schema is fixed, so the probe travels in
//!   the `name` field (`syncline_client_sim::probe::probe_name`).
//!
//! `sent_ns` is taken just before the call, on the run's monotonic clock, which the devices
//! share since they live in this process. Every device records receive time − `sent_ns` for
//! each probe of every live `Changes` frame, so a latency covers the gRPC call, the durable
//! commit(s), fan-out, the socket and this process's own queueing.
//!
//! Delivered/s is every delivery of the run over the time from the first write's send to
//! the last delivery (not to the last write's return), so a server that acknowledges writes
//! fast but fans out late does not look faster than it is.
//!
//! Failover: with several endpoints (`--url a,b,c`) and `--kill-pid` (a node's PID), the
//! node is killed with SIGKILL `--kill-after-secs` into the writes; its devices move to the
//! next endpoint and resume from their cursors, and the report's `failover` says when they
//! were connected and caught up again (see `fleet::failover`). Their missed records, read
//! while resuming, count as delivered: lost and extra must stay 0.

use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use syncline_proto::v1::channel_client::ChannelClient;
use tokio::time::Instant;

use crate::{
    fleet::{
        FailoverSummary, FleetArgs, FleetParams, FleetTotals, KillArgs, Logins, RampUp, RunArgs, STOP_GRACE, ramp_up,
    },
    push_driver::{
        ClosingRows, DeliverySummary, IngestArgs, ProbeRecords, PushSummary, WriteLoad, Writer, WriterThread,
        push_and_drain,
    },
    report::{Table, unix_time_secs, write_json},
    usage::{WindowUsage, server_process},
};

/// Default bound on pending Push calls: at 100 pushes/s, 64 pending means the server is more
/// than half a second behind.
const DEFAULT_MAX_IN_FLIGHT: usize = 64;

/// Where the writes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Via {
    /// Upserts pushed to Syncline with `Ingest/Push` (`--grpc`).
    Ingest,
    /// Records created in the backend with the channel's `Create` (`--channel`); Syncline
    /// must capture the source with `watch` (or `poll`).
    Channel,
}

/// Arguments of `fanout`.
#[derive(Debug, Args)]
pub(crate) struct LatencyArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    /// How records are written: pushed to Syncline (`ingest`) or created in the backend
    /// through its channel (`channel`).
    #[arg(long, value_enum, default_value_t = Via::Ingest)]
    via: Via,
    /// `--grpc`: the Ingest endpoint for `--via ingest`.
    #[command(flatten)]
    ingest: IngestArgs,
    /// The source's channel (gRPC `syncline.v1.Channel`) for `--via channel`; loopback
    /// addresses only.
    #[arg(long)]
    channel: Option<String>,
    /// `--changes`, `--rate`, `--max-in-flight`.
    #[command(flatten)]
    load: WriteLoad,
    /// `--kill-pid`, `--kill-after-secs`: a node killed during the writes.
    #[command(flatten)]
    kill: KillArgs,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

#[derive(Debug, Serialize)]
struct Params {
    #[serde(flatten)]
    fleet: FleetParams,
    from_zero: bool,
    via: Via,
    grpc: String,
    channel: Option<String>,
    #[serde(flatten)]
    load: WriteLoad,
    #[serde(flatten)]
    kill: KillArgs,
    #[serde(flatten)]
    run: RunArgs,
}

#[derive(Debug, Serialize)]
struct LatencyReport {
    scenario: &'static str,
    unix_time: u64,
    params: Params,
    ramp_up: RampUp,
    #[serde(flatten)]
    pushes: PushSummary,
    /// Devices caught up × pushed.
    expected: u64,
    /// Records of this run received in live pushes.
    delivered_live: u64,
    /// Records of this run received in catch-up pages after a demotion.
    delivered_catchup: u64,
    /// Records of this run received while resuming on another node (failover).
    delivered_resume: u64,
    /// Expected − delivered (never negative).
    lost: u64,
    /// Delivered − expected, when positive (duplicates).
    extra: u64,
    /// True when everything expected arrived before the drain ended.
    drained: bool,
    #[serde(flatten)]
    delivery: DeliverySummary,
    /// Devices that moved to another node when theirs died (several endpoints).
    #[serde(skip_serializing_if = "Option::is_none")]
    failover: Option<FailoverSummary>,
    fleet: FleetTotals,
}

/// Runs `fanout`: ramp-up, paced pushes, drain, report.
pub(crate) async fn run(mut args: LatencyArgs, run_start: Instant, deadline: Instant) -> anyhow::Result<()> {
    let endpoint = match args.via {
        Via::Ingest => args.ingest.grpc.clone(),
        Via::Channel => args.channel.clone().context("--via channel needs --channel http://127.0.0.1:PORT")?,
    };
    crate::loopback::check_url(&endpoint, &["http"]).await?;
    let keys = vec![args.fleet.key.clone()];
    let plan =
        args.load.plan(DEFAULT_MAX_IN_FLIGHT, &args.fleet.source, keys, ProbeRecords::ByWrite { pad_bytes: 0 })?;
    let server = args.run.server_pid.map(server_process).transpose()?;
    let (fleet, shared, ramp_up) = ramp_up(&args.fleet, Logins::Password, run_start, deadline).await?;

    let (via, token) = (args.via, args.ingest.ingest_token.clone());
    let mut writes = WriterThread::start(endpoint, move |grpc| match via {
        Via::Ingest => Writer::ingest(grpc, token.as_deref()),
        Via::Channel => Ok(Writer::Channel(ChannelClient::new(grpc))),
    })
    .await?;
    let push = async {
        let (pushes, killed) = tokio::join!(
            writes.run(plan, Arc::clone(&shared), deadline),
            args.kill.kill_when_due(&shared.failover, || shared.now_ns())
        );
        killed?;
        pushes
    };
    let caught_up = ramp_up.caught_up as u64;
    let phase =
        push_and_drain(&shared, server, args.run.drain_secs, deadline, push, |pushes| caught_up * pushes.pushed)
            .await?;

    let totals = fleet.stop(Instant::now() + STOP_GRACE).await;
    let expected = caught_up * phase.pushes.pushed;
    let delivered = totals.live_records + totals.catchup_records + totals.resume_records;
    let report = LatencyReport {
        scenario: "fanout",
        unix_time: unix_time_secs(),
        params: Params {
            fleet: args.fleet.params(),
            from_zero: args.fleet.from_zero,
            via: args.via,
            grpc: args.ingest.grpc.clone(),
            channel: args.channel.clone(),
            load: args.load,
            kill: args.kill,
            run: args.run.clone(),
        },
        ramp_up,
        pushes: PushSummary::of(&phase.pushes),
        expected,
        delivered_live: totals.live_records,
        delivered_catchup: totals.catchup_records,
        delivered_resume: totals.resume_records,
        lost: expected.saturating_sub(delivered),
        extra: delivered.saturating_sub(expected),
        drained: phase.drained,
        delivery: DeliverySummary::of(&phase, &shared),
        failover: shared.failover.summary(),
        fleet: totals,
    };
    print_table(&report, &phase.usage, phase.delivered_at_end);
    write_json(args.run.json_out.as_deref(), &report)
}

fn print_table(report: &LatencyReport, usage: &WindowUsage, delivered: u64) {
    let via = match report.params.via {
        Via::Ingest => "Ingest/Push",
        Via::Channel => "Channel/Create",
    };
    let mut table = Table::new(format!(
        "fanout: {} devices x {} changes at {}/s via {via}",
        report.params.fleet.devices, report.params.load.changes, report.params.load.rate
    ));
    let (pushes, delivery) = (&report.pushes, &report.delivery);
    report.ramp_up.add_rows(&mut table);
    table
        .row("written", pushes.line())
        .row("write call p50/p90/p99/max", pushes.push_call.line())
        .row("expected", report.expected)
        .row(
            "delivered",
            format!(
                "{} live + {} catch-up + {} resumed",
                report.delivered_live, report.delivered_catchup, report.delivered_resume
            ),
        )
        .row("lost / extra", format!("{} / {}", report.lost, report.extra))
        .row("latency p50/p90/p99/max", delivery.latency.line())
        .row(
            "delivered/s",
            format!("{:.0} (first send to last delivery: {:.3} s)", delivery.delivered_per_sec, delivery.delivery_secs),
        );
    if let Some(failover) = &report.failover {
        failover.add_rows(&mut table);
    }
    let closing = ClosingRows { delivery, fleet: &report.fleet, delivered_catchup: report.delivered_catchup, pushes };
    closing.add_to(&mut table, usage, delivered, "first write error");
    table.print();
}
