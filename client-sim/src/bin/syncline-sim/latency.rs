//! `syncline-sim latency`: push latency through the whole server.
//!
//! N devices (one password login, then session tokens) subscribe to a partition and are
//! caught up; then M single-record upserts are pushed over gRPC (`Ingest/Push`) at a fixed
//! rate, one at a time. Each record carries `sent_ns` (taken just before its Push call, on
//! the run's monotonic clock, which the devices share since they live in this process) and
//! the run's tag. Every device records receive time − `sent_ns` for each record of every
//! live `Changes` frame, so a latency covers the gRPC call, the durable commit, fan-out,
//! the socket and this process's own queueing.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use syncline_proto::v1::{PushRequest, Record, Value, ingest_client::IngestClient};
use tokio::{sync::Semaphore, task::JoinSet, time::Instant};
use tonic::{
    metadata::{Ascii, MetadataValue},
    transport::{Channel, Endpoint},
};

use crate::{
    fleet::{FleetArgs, FleetTotals, RUN_FIELD, RampUp, SENT_NS_FIELD, STOP_GRACE, Shared, ramp_up},
    procfs::{CoreBusy, Memory, Process, core_busy, core_ticks},
    report::{LatencySummary, Table, latency_histogram, round, secs, unix_time_secs, write_json},
};

/// Default time for the whole run: ramp-up, pushes and drain.
const DEFAULT_MAX_SECS: u64 = 300;
/// Default time deliveries may trail the last push before the rest count as lost.
const DEFAULT_DRAIN_SECS: u64 = 30;
/// Default bound on pending Push calls: at 100 pushes/s, 64 pending means the server is more
/// than half a second behind.
const DEFAULT_MAX_IN_FLIGHT: usize = 64;
/// Limit on opening the gRPC connection.
const GRPC_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Arguments of `latency`.
#[derive(Debug, Args)]
pub(crate) struct LatencyArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    /// The gRPC endpoint (Ingest); loopback addresses only.
    #[arg(long, default_value = "http://127.0.0.1:7701")]
    grpc: String,
    /// Bearer token for Ingest, when the server requires one.
    #[arg(long, env = "SYNCLINE_INGEST_TOKEN", hide_env_values = true)]
    ingest_token: Option<String>,
    /// Single-record upserts to push.
    #[arg(long, default_value_t = 1000)]
    changes: u64,
    /// Pushes per second (0: back to back).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// The server's PID, for its CPU time and memory from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Hard limit on the whole run, in seconds.
    #[arg(long, default_value_t = DEFAULT_MAX_SECS)]
    max_secs: u64,
    /// Push calls pending at once. Pushes are sent on schedule whether or not earlier ones have
    /// returned (open loop), so a slow server shows as latency, not as a lower push rate;
    /// only when this many are pending does a push wait.
    #[arg(long, default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    max_in_flight: usize,
    /// Seconds deliveries may trail the last push.
    #[arg(long, default_value_t = DEFAULT_DRAIN_SECS)]
    drain_secs: u64,
    /// Writes the report as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Params {
    url: String,
    grpc: String,
    devices: usize,
    changes: u64,
    rate: f64,
    source: String,
    key: String,
    from_zero: bool,
    ack_every: u64,
    server_pid: Option<u32>,
    max_in_flight: usize,
    max_secs: u64,
    drain_secs: u64,
}

/// The server's CPU and memory over the push phase.
#[derive(Debug, Serialize)]
struct ServerUsage {
    /// utime + stime from /proc/PID/stat between the first push and the end of the drain
    /// (10 ms resolution).
    cpu_secs: f64,
    /// Share of `cpu_secs` spent in the kernel (stime).
    cpu_system_share: f64,
    cpu_us_per_delivered: f64,
    /// Before the first push (devices connected and caught up).
    memory_before: Memory,
    /// After the drain.
    memory_after: Memory,
}

#[derive(Debug, Serialize)]
struct LatencyReport {
    scenario: &'static str,
    unix_time: u64,
    params: Params,
    ramp_up: RampUp,
    /// Push calls that returned OK.
    pushed: u64,
    push_errors: u64,
    first_push_error: Option<String>,
    /// First push due to the return of the last call.
    push_secs: f64,
    push_rate: f64,
    /// Most a push was sent after its due time (when `--max-in-flight` calls were pending).
    max_send_lag_ms: f64,
    /// Duration of the Push calls themselves (commit included).
    push_call: LatencySummary,
    /// Devices caught up × pushed.
    expected: u64,
    /// Records of this run received in live pushes.
    delivered_live: u64,
    /// Records of this run received in catch-up pages after a demotion.
    delivered_catchup: u64,
    /// Expected − delivered (never negative).
    lost: u64,
    /// Delivered − expected, when positive (duplicates).
    extra: u64,
    /// True when everything expected arrived before the drain ended.
    drained: bool,
    /// Receive time − sent_ns of the records in live pushes.
    latency: LatencySummary,
    /// The same for records that came in catch-up pages.
    catchup_latency: LatencySummary,
    /// First push to last delivery.
    delivery_secs: f64,
    delivered_per_sec: f64,
    server: Option<ServerUsage>,
    /// Every core's busy time over the same window (from /proc/stat; the scenario script
    /// pins the server to core 0 and this process to core 1).
    cores: Vec<CoreBusy>,
    /// Busy core time over the window not charged to the server or this process: softirq
    /// work charged to neither, kernel threads, and any other program. Well above a few
    /// percent of the window means something else competed for the cores and the run is
    /// suspect (`None` without `--server-pid`).
    other_busy_secs: Option<f64>,
    /// This process's CPU time over the same window per delivered record.
    sim_cpu_us_per_delivered: f64,
    fleet: FleetTotals,
}

/// Runs `latency`: ramp-up, paced pushes, drain, report.
pub(crate) async fn run(args: LatencyArgs) -> anyhow::Result<()> {
    let run_start = Instant::now();
    let deadline = run_start + Duration::from_secs(args.max_secs);
    // The whole run is bounded, whatever hangs.
    tokio::time::timeout_at(deadline + STOP_GRACE, run_bounded(args, run_start, deadline))
        .await
        .context("the run overran --max-secs")?
}

async fn run_bounded(args: LatencyArgs, run_start: Instant, deadline: Instant) -> anyhow::Result<()> {
    crate::loopback::check_url(&args.grpc, &["http"]).await?;
    anyhow::ensure!(args.rate >= 0.0 && args.rate.is_finite(), "--rate must be a finite number ≥ 0");
    let server = args.server_pid.map(Process::Pid);
    if let Some(server) = server {
        server.memory().context("reading the server's /proc entry (is --server-pid right?)")?;
    }
    let (fleet, shared, ramp_up) = ramp_up(&args.fleet, run_start, deadline).await?;

    let channel = Endpoint::from_shared(args.grpc.clone())?
        .connect_timeout(GRPC_CONNECT_TIMEOUT)
        .connect()
        .await
        .with_context(|| format!("connecting to {}", args.grpc))?;
    let authorization = match &args.ingest_token {
        Some(token) => Some(MetadataValue::try_from(format!("Bearer {token}")).context("the ingest token")?),
        None => None,
    };
    let ingest = IngestClient::new(channel);

    let server_before =
        server.map(|server| Ok::<_, anyhow::Error>((server.cpu_times()?, server.memory()?))).transpose()?;
    let sim_cpu_before = Process::Current.cpu_time()?;
    let cores_before = core_ticks()?;
    let first_sent_ns = shared.now_ns();
    let pushes = push_open_loop(&args, &shared, ingest, authorization, deadline).await;
    let pushed = pushes.pushed;

    let expected = ramp_up.caught_up as u64 * pushed;
    let drain_deadline = (Instant::now() + Duration::from_secs(args.drain_secs)).min(deadline);
    let drained = shared.delivered.wait_for(expected, drain_deadline).await;
    let delivered_at_end = shared.delivered.get();
    let server_usage = match (server, server_before) {
        (Some(server), Some((cpu_before, memory_before))) => {
            let cpu = server.cpu_times()?.since(cpu_before);
            Some(ServerUsage {
                cpu_secs: secs(cpu.total()),
                cpu_system_share: round(cpu.system.as_secs_f64() / cpu.total().as_secs_f64().max(f64::EPSILON), 3),
                cpu_us_per_delivered: per_delivered_us(cpu.total(), delivered_at_end),
                memory_before,
                memory_after: server.memory()?,
            })
        }
        _ => None,
    };
    let sim_cpu = Process::Current.cpu_time()?.saturating_sub(sim_cpu_before);
    let cores = core_busy(&cores_before, &core_ticks()?);
    let other_busy_secs = server_usage.as_ref().map(|server| {
        let busy: f64 = cores.iter().map(|core| core.busy_secs).sum();
        round(busy - server.cpu_secs - sim_cpu.as_secs_f64(), 2)
    });
    let last_receive_ns = shared.last_receive_ns.load(std::sync::atomic::Ordering::SeqCst);
    let delivery = Duration::from_nanos(last_receive_ns.saturating_sub(first_sent_ns));

    let totals = fleet.stop(Instant::now() + STOP_GRACE).await;
    let delivered = totals.live_records + totals.catchup_records;
    let report = LatencyReport {
        scenario: "latency",
        unix_time: unix_time_secs(),
        params: Params {
            url: args.fleet.url.clone(),
            grpc: args.grpc.clone(),
            devices: args.fleet.devices,
            changes: args.changes,
            rate: args.rate,
            source: args.fleet.source.clone(),
            key: args.fleet.key.clone(),
            from_zero: args.fleet.from_zero,
            ack_every: args.fleet.ack_every,
            server_pid: args.server_pid,
            max_in_flight: args.max_in_flight,
            max_secs: args.max_secs,
            drain_secs: args.drain_secs,
        },
        ramp_up,
        pushed,
        push_errors: pushes.errors,
        first_push_error: pushes.first_error,
        push_secs: secs(pushes.elapsed),
        push_rate: round(pushed as f64 / pushes.elapsed.as_secs_f64().max(f64::EPSILON), 1),
        max_send_lag_ms: round(pushes.max_send_lag.as_secs_f64() * 1e3, 2),
        push_call: LatencySummary::of(&pushes.calls),
        expected,
        delivered_live: totals.live_records,
        delivered_catchup: totals.catchup_records,
        lost: expected.saturating_sub(delivered),
        extra: delivered.saturating_sub(expected),
        drained,
        latency: LatencySummary::of(&shared.live_latency.lock()),
        catchup_latency: LatencySummary::of(&shared.catchup_latency.lock()),
        delivery_secs: secs(delivery),
        delivered_per_sec: round(delivered_at_end as f64 / delivery.as_secs_f64().max(f64::EPSILON), 0),
        server: server_usage,
        other_busy_secs,
        cores,
        sim_cpu_us_per_delivered: per_delivered_us(sim_cpu, delivered_at_end),
        fleet: totals,
    };
    print_table(&report);
    if let Some(path) = &args.json_out {
        write_json(path, &report)?;
    }
    Ok(())
}

/// What the pusher did.
struct Pushes {
    pushed: u64,
    errors: u64,
    first_error: Option<String>,
    /// Durations of the Push calls.
    calls: Histogram<u64>,
    /// First due time to the return of the last call.
    elapsed: Duration,
    max_send_lag: Duration,
}

impl Pushes {
    fn account(&mut self, (call, result): (Duration, Result<(), String>)) {
        self.calls.saturating_record(u64::try_from(call.as_nanos()).unwrap_or(u64::MAX));
        match result {
            Ok(()) => self.pushed += 1,
            Err(error) => {
                self.errors += 1;
                self.first_error.get_or_insert(error);
            }
        }
    }
}

/// Sends `--changes` pushes, push `index` due at `index / rate` after the first, each on its
/// own task so that a slow call does not delay the next push (at most `--max-in-flight`
/// pending).
async fn push_open_loop(
    args: &LatencyArgs,
    shared: &Arc<Shared>,
    ingest: IngestClient<Channel>,
    authorization: Option<MetadataValue<Ascii>>,
    deadline: Instant,
) -> Pushes {
    let mut pushes = Pushes {
        pushed: 0,
        errors: 0,
        first_error: None,
        calls: latency_histogram(),
        elapsed: Duration::ZERO,
        max_send_lag: Duration::ZERO,
    };
    let pending = Arc::new(Semaphore::new(args.max_in_flight.max(1)));
    let mut calls = JoinSet::new();
    let started = Instant::now();
    for index in 0..args.changes {
        // Pacing, not synchronisation: push number `index` is due at index / rate.
        let due =
            if args.rate > 0.0 { started + Duration::from_secs_f64(index as f64 / args.rate) } else { Instant::now() };
        if due >= deadline {
            break;
        }
        tokio::time::sleep_until(due).await;
        let Ok(permit) = tokio::time::timeout_at(deadline, Arc::clone(&pending).acquire_owned()).await else {
            break;
        };
        let permit = permit.expect("the semaphore is never closed");
        pushes.max_send_lag = pushes.max_send_lag.max(Instant::now().saturating_duration_since(due));
        let mut client = ingest.clone();
        let shared = Arc::clone(shared);
        let (source, key) = (args.fleet.source.clone(), args.fleet.key.clone());
        let authorization = authorization.clone();
        calls.spawn(async move {
            let mut request = tonic::Request::new(push_request(source, key, &shared, index));
            if let Some(authorization) = authorization {
                request.metadata_mut().insert("authorization", authorization);
            }
            let call_started = Instant::now();
            let result = client.push(request).await;
            drop(permit);
            let result = result.map(drop).map_err(|status| format!("{}: {}", status.code(), status.message()));
            (call_started.elapsed(), result)
        });
        while let Some(done) = calls.try_join_next() {
            if let Ok(done) = done {
                pushes.account(done);
            }
        }
    }
    loop {
        match tokio::time::timeout_at(deadline, calls.join_next()).await {
            Ok(Some(Ok(done))) => pushes.account(done),
            Ok(Some(Err(_))) => {}
            Ok(None) => break,
            Err(_) => {
                calls.abort_all();
                break;
            }
        }
    }
    pushes.elapsed = started.elapsed();
    pushes
}

/// Returns push number `index`: record `sim-latency-NNNNNN` (the same ids every run, so
/// reruns update rather than grow the partition, and each push of a run is a distinct id
/// that catch-up pages cannot merge).
fn push_request(source: String, key: String, shared: &Shared, index: u64) -> PushRequest {
    let mut fields = BTreeMap::new();
    fields.insert("name".to_owned(), Value::string(format!("latency probe {index}")));
    fields.insert("seq".to_owned(), Value::int(i64::try_from(index).unwrap_or(i64::MAX)));
    fields.insert(RUN_FIELD.to_owned(), Value::int(shared.run_tag));
    // Taken last, just before the call.
    fields.insert(SENT_NS_FIELD.to_owned(), Value::int(i64::try_from(shared.now_ns()).unwrap_or(i64::MAX)));
    let record = Record { id: format!("sim-latency-{index:06}"), fields, version: 0 };
    PushRequest { source, key, upserts: vec![record], deletes: Vec::new() }
}

fn per_delivered_us(cpu: Duration, delivered: u64) -> f64 {
    if delivered == 0 {
        return 0.0;
    }
    round(cpu.as_secs_f64() * 1e6 / delivered as f64, 2)
}

fn print_table(report: &LatencyReport) {
    let mut table = Table::new(format!(
        "latency: {} devices x {} changes at {}/s",
        report.params.devices, report.params.changes, report.params.rate
    ));
    table
        .row(
            "devices caught up",
            format!("{} of {} ({} failed)", report.ramp_up.caught_up, report.ramp_up.devices, report.ramp_up.failed),
        )
        .row(
            "ramp-up",
            format!(
                "login {:.2} s, connect + catch up {:.2} s",
                report.ramp_up.login_secs, report.ramp_up.connect_secs
            ),
        )
        .row(
            "pushed",
            format!(
                "{} ok, {} failed, {:.1}/s over {:.2} s (sent at most {:.1} ms late)",
                report.pushed, report.push_errors, report.push_rate, report.push_secs, report.max_send_lag_ms
            ),
        )
        .row("push call p50/p90/p99/max", report.push_call.line())
        .row("expected", report.expected)
        .row("delivered", format!("{} live + {} catch-up", report.delivered_live, report.delivered_catchup))
        .row("lost / extra", format!("{} / {}", report.lost, report.extra))
        .row("latency p50/p90/p99/max", report.latency.line())
        .row("delivery", format!("{:.2} s, {:.0} records/s", report.delivery_secs, report.delivered_per_sec));
    if report.delivered_catchup > 0 {
        table.row("catch-up latency p50/p90/p99/max", report.catchup_latency.line());
    }
    table
        .row("demotions (re-catch-ups)", report.fleet.recatchups)
        .row("gaps", report.fleet.gaps)
        .row("acks sent", report.fleet.acks_sent);
    if let Some(server) = &report.server {
        table
            .row(
                "server CPU",
                format!(
                    "{:.2} s ({:.0}% system), {:.2} µs per delivered record",
                    server.cpu_secs,
                    server.cpu_system_share * 100.0,
                    server.cpu_us_per_delivered
                ),
            )
            .row(
                "server RSS",
                format!(
                    "{:.1} MB before pushes, {:.1} MB after (peak {:.1} MB)",
                    server.memory_before.rss_kb as f64 / 1024.0,
                    server.memory_after.rss_kb as f64 / 1024.0,
                    server.memory_after.peak_rss_kb as f64 / 1024.0
                ),
            );
    }
    table.row("sim CPU", format!("{:.2} µs per delivered record", report.sim_cpu_us_per_delivered));
    if let Some(other) = report.other_busy_secs {
        table.row("other busy core time", format!("{other:.2} s (neither server nor sim)"));
    }
    for core in &report.cores {
        table.row(
            format!("core {} busy", core.core),
            format!("{:.0}% ({:.0}% softirq)", core.busy_share * 100.0, core.softirq_share * 100.0),
        );
    }
    if !report.fleet.errors.is_empty() {
        table.row("device errors", report.fleet.errors.join("; "));
    }
    if let Some(error) = &report.first_push_error {
        table.row("first push error", error);
    }
    table.print();
}
