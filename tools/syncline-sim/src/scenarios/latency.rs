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

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use syncline_client_sim::probe::{PROBE_NAME_FIELD, RUN_FIELD, SENT_NS_FIELD, probe_name};
use syncline_proto::{
    APP_PARTITION_KEY,
    v1::{
        PartitionKey, PushRequest, Record, Value, WriteRequest, channel_client::ChannelClient,
        ingest_client::IngestClient,
    },
};
use tokio::{sync::Semaphore, task::JoinSet, time::Instant};
use tonic::{
    metadata::{Ascii, MetadataValue},
    transport::{Channel, Endpoint},
};

use crate::{
    fleet::{FleetArgs, FleetTotals, RampUp, RunArgs, STOP_GRACE, Shared, ramp_up},
    report::{LatencySummary, Table, latency_histogram, round, secs, unix_time_secs, write_json},
    usage::{CoreBusy, ServerWindow, UsageWindow, WindowUsage, cpu_us_per, server_process},
};

/// Default bound on pending Push calls: at 100 pushes/s, 64 pending means the server is more
/// than half a second behind.
const DEFAULT_MAX_IN_FLIGHT: usize = 64;
/// Limit on opening the gRPC connection.
const GRPC_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// The gRPC endpoint (Ingest) for `--via ingest`; loopback addresses only.
    #[arg(long, default_value = "http://127.0.0.1:7701")]
    grpc: String,
    /// The source's channel (gRPC `syncline.v1.Channel`) for `--via channel`; loopback
    /// addresses only.
    #[arg(long)]
    channel: Option<String>,
    /// Bearer token for Ingest, when the server requires one.
    #[arg(long, env = "SYNCLINE_INGEST_TOKEN", hide_env_values = true)]
    ingest_token: Option<String>,
    /// Single-record writes to make.
    #[arg(long, default_value_t = 1000)]
    changes: u64,
    /// Writes per second (0: back to back).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Write calls pending at once. Writes are sent on schedule whether or not earlier ones
    /// have returned (open loop), so a slow server shows as latency, not as a lower write
    /// rate; only when this many are pending does a write wait.
    #[arg(long, default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    max_in_flight: usize,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Serialize)]
struct Params {
    url: String,
    via: Via,
    grpc: String,
    channel: Option<String>,
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

/// The server's CPU and memory over the push phase: from the first push (devices connected
/// and caught up) to the end of the drain.
#[derive(Debug, Serialize)]
struct ServerUsage {
    #[serde(flatten)]
    window: ServerWindow,
    cpu_us_per_delivered: f64,
}

#[derive(Debug, Serialize)]
struct LatencyReport {
    scenario: &'static str,
    unix_time: u64,
    params: Params,
    ramp_up: RampUp,
    /// Write calls (Push or Create) that returned OK.
    pushed: u64,
    push_errors: u64,
    first_push_error: Option<String>,
    /// First push due to the return of the last call.
    push_secs: f64,
    push_rate: f64,
    /// Most a push was sent after its due time (when `--max-in-flight` calls were pending).
    max_send_lag_ms: f64,
    /// Duration of the write calls themselves (commit included).
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
    /// First write sent to last delivery.
    delivery_secs: f64,
    /// Deliveries (records of this run received, live and catch-up, every device) per
    /// second over `delivery_secs`: the headline of a `--rate 0` burst.
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

/// Runs `fanout`: ramp-up, paced pushes, drain, report.
pub(crate) async fn run(args: LatencyArgs) -> anyhow::Result<()> {
    crate::fleet::run_bounded(args.run.max_secs, |run_start, deadline| run_scenario(args, run_start, deadline)).await
}

async fn run_scenario(args: LatencyArgs, run_start: Instant, deadline: Instant) -> anyhow::Result<()> {
    let endpoint = match args.via {
        Via::Ingest => args.grpc.clone(),
        Via::Channel => args.channel.clone().context("--via channel needs --channel http://127.0.0.1:PORT")?,
    };
    crate::loopback::check_url(&endpoint, &["http"]).await?;
    anyhow::ensure!(args.rate >= 0.0 && args.rate.is_finite(), "--rate must be a finite number ≥ 0");
    let server = args.run.server_pid.map(server_process).transpose()?;
    let (fleet, shared, ramp_up) = ramp_up(&args.fleet, run_start, deadline).await?;

    let (via, token) = (args.via, args.ingest_token.clone());
    let mut writes = WriterThread::start(endpoint, move |grpc| match via {
        Via::Ingest => Writer::ingest(grpc, token.as_deref()),
        Via::Channel => Ok(Writer::Channel(ChannelClient::new(grpc))),
    })
    .await?;
    let plan = WritePlan {
        source: args.fleet.source.clone(),
        key: args.fleet.key.clone(),
        changes: args.changes,
        first_index: 0,
        rate: args.rate,
        max_in_flight: args.max_in_flight,
        pad_bytes: 0,
    };

    let usage = UsageWindow::start(server)?;
    let first_sent_ns = shared.now_ns();
    let pushes = writes.run(plan, Arc::clone(&shared), deadline).await?;
    let pushed = pushes.pushed;

    let expected = ramp_up.caught_up as u64 * pushed;
    let drain_deadline = (Instant::now() + Duration::from_secs(args.run.drain_secs)).min(deadline);
    let drained = shared.delivered.wait_for(expected, drain_deadline).await;
    let delivered_at_end = shared.delivered.get();
    let usage = usage.finish()?;
    let last_receive_ns = shared.last_receive_ns.load(std::sync::atomic::Ordering::SeqCst);
    let delivery = Duration::from_nanos(last_receive_ns.saturating_sub(first_sent_ns));

    let totals = fleet.stop(Instant::now() + STOP_GRACE).await;
    let delivered = totals.live_records + totals.catchup_records;
    let report = LatencyReport {
        scenario: "fanout",
        unix_time: unix_time_secs(),
        params: Params {
            url: args.fleet.url.clone(),
            via: args.via,
            grpc: args.grpc.clone(),
            channel: args.channel.clone(),
            devices: args.fleet.devices,
            changes: args.changes,
            rate: args.rate,
            source: args.fleet.source.clone(),
            key: args.fleet.key.clone(),
            from_zero: args.fleet.from_zero,
            ack_every: args.fleet.ack_every,
            server_pid: args.run.server_pid,
            max_in_flight: args.max_in_flight,
            max_secs: args.run.max_secs,
            drain_secs: args.run.drain_secs,
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
        server: usage
            .server
            .map(|window| ServerUsage { window, cpu_us_per_delivered: cpu_us_per(window.cpu, delivered_at_end) }),
        other_busy_secs: usage.other_busy_secs,
        cores: usage.cores.clone(),
        sim_cpu_us_per_delivered: cpu_us_per(usage.sim_cpu, delivered_at_end),
        fleet: totals,
    };
    print_table(&report, &usage, delivered_at_end);
    if let Some(path) = &args.run.json_out {
        write_json(path, &report)?;
    }
    Ok(())
}

/// What the pusher did.
pub(crate) struct Pushes {
    pub(crate) pushed: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    /// Durations of the Push calls.
    pub(crate) calls: Histogram<u64>,
    /// First due time to the return of the last call.
    pub(crate) elapsed: Duration,
    pub(crate) max_send_lag: Duration,
    /// The highest partition head a Push returned (0 for channel creates, which do not say).
    pub(crate) max_head: u64,
}

impl Pushes {
    fn account(&mut self, (call, result): (Duration, Result<u64, String>)) {
        self.calls.saturating_record(u64::try_from(call.as_nanos()).unwrap_or(u64::MAX));
        match result {
            Ok(head) => {
                self.pushed += 1;
                self.max_head = self.max_head.max(head);
            }
            Err(error) => {
                self.errors += 1;
                self.first_error.get_or_insert(error);
            }
        }
    }
}

/// Opens the gRPC connection to `endpoint`.
pub(crate) async fn connect_grpc(endpoint: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(endpoint.to_owned())?
        .connect_timeout(GRPC_CONNECT_TIMEOUT)
        .connect()
        .await
        .with_context(|| format!("connecting to {endpoint}"))
}

/// Makes the writes: one gRPC client per way of writing (clones share the connection).
#[derive(Clone)]
pub(crate) enum Writer {
    Ingest { client: IngestClient<Channel>, authorization: Option<MetadataValue<Ascii>> },
    Channel(ChannelClient<Channel>),
}

impl Writer {
    /// Returns an Ingest writer on `grpc`, with the bearer `token` if given.
    pub(crate) fn ingest(grpc: Channel, token: Option<&str>) -> anyhow::Result<Self> {
        let authorization = match token {
            Some(token) => Some(MetadataValue::try_from(format!("Bearer {token}")).context("the ingest token")?),
            None => None,
        };
        Ok(Writer::Ingest { client: IngestClient::new(grpc), authorization })
    }

    /// Makes write number `index` of the run; its `sent_ns` is taken just before the call.
    /// Returns the partition's head after an Ingest push (0 for a channel create).
    async fn write(
        self,
        source: String,
        key: String,
        shared: Arc<Shared>,
        index: u64,
        pad_bytes: usize,
    ) -> Result<u64, tonic::Status> {
        match self {
            Writer::Ingest { mut client, authorization } => {
                let mut request = tonic::Request::new(push_request(source, key, &shared, index, pad_bytes));
                if let Some(authorization) = authorization {
                    request.metadata_mut().insert("authorization", authorization);
                }
                client.push(request).await.map(|response| response.into_inner().head)
            }
            Writer::Channel(mut client) => client.create(create_request(source, key, &shared, index)).await.map(|_| 0),
        }
    }
}

/// The writes of a run on a thread of their own, with its own single-threaded runtime and
/// gRPC connection. On the simulator's runtime the writer would be one task among thousands
/// of device tasks, so a burst would go out only as fast as the devices leave it time: the
/// push rate would measure the simulator's receiving, not what the server takes.
pub(crate) struct WriterThread {
    plans: std::sync::mpsc::Sender<(WritePlan, Arc<Shared>, Instant)>,
    results: tokio::sync::mpsc::UnboundedReceiver<Pushes>,
}

impl WriterThread {
    /// Starts the thread and connects to `endpoint`; returns once connected.
    pub(crate) async fn start(
        endpoint: String,
        make_writer: impl FnOnce(Channel) -> anyhow::Result<Writer> + Send + 'static,
    ) -> anyhow::Result<Self> {
        let (plans, plan_rx) = std::sync::mpsc::channel::<(WritePlan, Arc<Shared>, Instant)>();
        let (result_tx, results) = tokio::sync::mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
        std::thread::Builder::new().name("sim-writer".into()).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = ready_tx.send(Err(error.into()));
                    return;
                }
            };
            runtime.block_on(async move {
                let writer = match connect_grpc(&endpoint).await.and_then(make_writer) {
                    Ok(writer) => writer,
                    Err(error) => {
                        let _ = ready_tx.send(Err(error));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                // Ends when the WriterThread is dropped (the plan channel closes).
                while let Ok((plan, shared, deadline)) = plan_rx.recv() {
                    let pushes = push_open_loop(&plan, &shared, writer.clone(), deadline).await;
                    if result_tx.send(pushes).is_err() {
                        return;
                    }
                }
            });
        })?;
        ready_rx.await.context("the writer thread ended while connecting")??;
        Ok(Self { plans, results })
    }

    /// Makes the plan's writes on the thread (see [`push_open_loop`]) and returns how they went.
    pub(crate) async fn run(
        &mut self,
        plan: WritePlan,
        shared: Arc<Shared>,
        deadline: Instant,
    ) -> anyhow::Result<Pushes> {
        self.plans.send((plan, shared, deadline)).map_err(|_| anyhow::anyhow!("the writer thread has ended"))?;
        self.results.recv().await.context("the writer thread ended without a result")
    }
}

/// What an open-loop writer sends.
#[derive(Clone, Debug)]
pub(crate) struct WritePlan {
    pub(crate) source: String,
    pub(crate) key: String,
    /// Writes to make, numbered `first_index..first_index + changes`.
    pub(crate) changes: u64,
    pub(crate) first_index: u64,
    /// Writes per second (0: back to back, as fast as the pending bound lets them go).
    pub(crate) rate: f64,
    /// Write calls pending at once.
    pub(crate) max_in_flight: usize,
    /// Bytes of filler in each pushed record's `pad` field (Ingest only).
    pub(crate) pad_bytes: usize,
}

/// Sends the plan's writes, write `i` due at `i / rate` after the first, each on its own
/// task so that a slow call does not delay the next write (at most `max_in_flight` pending).
/// With rate 0 every write is due at once: calls are pipelined `max_in_flight` deep on one
/// HTTP/2 connection, each one record in its own Push (its own commit; the store may group
/// concurrent commits into one fsync).
pub(crate) async fn push_open_loop(
    plan: &WritePlan,
    shared: &Arc<Shared>,
    writer: Writer,
    deadline: Instant,
) -> Pushes {
    let mut pushes = Pushes {
        pushed: 0,
        errors: 0,
        first_error: None,
        calls: latency_histogram(),
        elapsed: Duration::ZERO,
        max_send_lag: Duration::ZERO,
        max_head: 0,
    };
    let pending = Arc::new(Semaphore::new(plan.max_in_flight.max(1)));
    let mut calls = JoinSet::new();
    let started = Instant::now();
    for offset in 0..plan.changes {
        let index = plan.first_index + offset;
        // Pacing, not synchronisation: push number `offset` is due at offset / rate.
        let due =
            if plan.rate > 0.0 { started + Duration::from_secs_f64(offset as f64 / plan.rate) } else { Instant::now() };
        if due >= deadline {
            break;
        }
        // Only when not yet due: the timer rounds up to its next millisecond tick, so
        // sleeping until a past instant would pace a burst at one push per millisecond.
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let Ok(permit) = tokio::time::timeout_at(deadline, Arc::clone(&pending).acquire_owned()).await else {
            break;
        };
        let permit = permit.expect("the semaphore is never closed");
        pushes.max_send_lag = pushes.max_send_lag.max(Instant::now().saturating_duration_since(due));
        let write =
            writer.clone().write(plan.source.clone(), plan.key.clone(), Arc::clone(shared), index, plan.pad_bytes);
        calls.spawn(async move {
            let call_started = Instant::now();
            let result = write.await;
            drop(permit);
            let result = result.map_err(|status| format!("{}: {}", status.code(), status.message()));
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
fn push_request(source: String, key: String, shared: &Shared, index: u64, pad_bytes: usize) -> PushRequest {
    let mut fields = BTreeMap::new();
    if pad_bytes > 0 {
        fields.insert("pad".to_owned(), Value::string("x".repeat(pad_bytes)));
    }
    fields.insert("name".to_owned(), Value::string(format!("latency probe {index}")));
    fields.insert("seq".to_owned(), Value::int(i64::try_from(index).unwrap_or(i64::MAX)));
    fields.insert(RUN_FIELD.to_owned(), Value::int(shared.run_tag));
    // Taken last, just before the call.
    fields.insert(SENT_NS_FIELD.to_owned(), Value::int(i64::try_from(shared.now_ns()).unwrap_or(i64::MAX)));
    let record = Record { id: format!("sim-latency-{index:06}"), fields, version: 0 };
    PushRequest { source, key, upserts: vec![record], deletes: Vec::new() }
}

/// Returns write number `index` for `--via channel`: a new record (the backend chooses its
/// id) whose `name` is a probe, with a mutation id unique to the run.
fn create_request(source: String, key: String, shared: &Shared, index: u64) -> WriteRequest {
    let key = if key.is_empty() { APP_PARTITION_KEY.to_owned() } else { key };
    // Taken last, just before the call.
    let name = probe_name(shared.run_tag, shared.now_ns(), index);
    let record = Record {
        id: String::new(),
        fields: BTreeMap::from([(PROBE_NAME_FIELD.to_owned(), Value::string(name))]),
        version: 0,
    };
    WriteRequest {
        partition: Some(PartitionKey { source, key }),
        record: Some(record),
        base_version: 0,
        mutation_id: format!("sim-latency-{}-{index}", shared.run_tag),
        caller: None,
    }
}

fn print_table(report: &LatencyReport, usage: &WindowUsage, delivered: u64) {
    let via = match report.params.via {
        Via::Ingest => "Ingest/Push",
        Via::Channel => "Channel/Create",
    };
    let mut table = Table::new(format!(
        "fanout: {} devices x {} changes at {}/s via {via}",
        report.params.devices, report.params.changes, report.params.rate
    ));
    report.ramp_up.add_rows(&mut table);
    table
        .row(
            "written",
            format!(
                "{} ok, {} failed, {:.1}/s over {:.2} s (sent at most {:.1} ms late)",
                report.pushed, report.push_errors, report.push_rate, report.push_secs, report.max_send_lag_ms
            ),
        )
        .row("write call p50/p90/p99/max", report.push_call.line())
        .row("expected", report.expected)
        .row("delivered", format!("{} live + {} catch-up", report.delivered_live, report.delivered_catchup))
        .row("lost / extra", format!("{} / {}", report.lost, report.extra))
        .row("latency p50/p90/p99/max", report.latency.line())
        .row(
            "delivered/s",
            format!("{:.0} (first send to last delivery: {:.3} s)", report.delivered_per_sec, report.delivery_secs),
        );
    if report.delivered_catchup > 0 {
        table.row("catch-up latency p50/p90/p99/max", report.catchup_latency.line());
    }
    table
        .row("demotions (re-catch-ups)", report.fleet.recatchups)
        .row("gaps", report.fleet.gaps)
        .row("acks sent", report.fleet.acks_sent);
    usage.table_rows(&mut table, delivered, "delivered record");
    if !report.fleet.errors.is_empty() {
        table.row("device errors", report.fleet.errors.join("; "));
    }
    if let Some(error) = &report.first_push_error {
        table.row("first write error", error);
    }
    table.print();
}
