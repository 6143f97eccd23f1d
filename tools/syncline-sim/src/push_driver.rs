//! The open-loop pusher the write scenarios share (`fanout`, `storm`, `slow`, `personal`),
//! and what they report about it.
//!
//! A [`WritePlan`] is a run of single-record writes, each its own call and its own commit:
//! write `i` is due at `i / rate` after the first and goes to partition key
//! `keys[i % keys.len()]`; [`push_open_loop`] sends each on its own task as it falls due,
//! whether or not earlier calls have returned (open loop), so a slow server shows as latency,
//! not as a lower write rate. A [`Writer`] makes the calls: Ingest pushes, or creates through
//! the source's channel. [`WriterThread`] runs them on a thread of their own.
//!
//! Every record carries the run's probe (its tag and `sent_ns`, taken just before the call),
//! which the fleet's devices time on arrival. [`push_and_drain`] measures one push phase up
//! to the last delivery; [`PushSummary`] and [`DeliverySummary`] are its report fields.

use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;
use syncline_client_sim::probe::{PROBE_NAME_FIELD, RUN_FIELD, SENT_NS_FIELD, probe_name};
use syncline_procfs::Process;
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
    fleet::{FleetTotals, Shared},
    report::{LatencySummary, Table, latency_histogram, round, secs},
    usage::{CoreBusy, ServerWindow, UsageWindow, WindowUsage, cpu_us_per},
};

/// Limit on opening the gRPC connection.
const GRPC_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens the gRPC connection to `endpoint`.
pub(crate) async fn connect_grpc(endpoint: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(endpoint.to_owned())?
        .connect_timeout(GRPC_CONNECT_TIMEOUT)
        .connect()
        .await
        .with_context(|| format!("connecting to {endpoint}"))
}

/// Where Ingest writes go (the write scenarios' `--grpc` and `--ingest-token`).
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct IngestArgs {
    /// The gRPC endpoint (Ingest); loopback addresses only.
    #[arg(long, default_value = "http://127.0.0.1:7701")]
    pub(crate) grpc: String,
    /// Bearer token for Ingest, when the server requires one.
    #[arg(long, env = "SYNCLINE_INGEST_TOKEN", hide_env_values = true)]
    pub(crate) ingest_token: Option<String>,
}

impl IngestArgs {
    /// Checks that `--grpc` is a loopback `http://` endpoint, connects to it and returns an
    /// Ingest writer.
    pub(crate) async fn writer(&self) -> anyhow::Result<Writer> {
        crate::loopback::check_url(&self.grpc, &["http"]).await?;
        Writer::ingest(connect_grpc(&self.grpc).await?, self.ingest_token.as_deref())
    }
}

/// The records a plan writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProbeRecords {
    /// Record `sim-latency-NNNNNN` by write number, named `latency probe N`, with `pad_bytes`
    /// of filler in a `pad` field (Ingest only): the same ids every run, so reruns update
    /// rather than grow the partition, and each write of a run is a distinct id that
    /// catch-up pages cannot merge (fanout, storm, slow).
    ByWrite { pad_bytes: usize },
    /// Record `sim-personal-NNNNNN` by the write's round over the keys (each key's own
    /// numbering), named with a probe for people reading the records (personal).
    ByRound,
}

/// What an open-loop writer sends.
#[derive(Clone, Debug)]
pub(crate) struct WritePlan {
    pub(crate) source: String,
    /// Partition keys, written round-robin (one key: every write to it).
    pub(crate) keys: Vec<String>,
    /// Writes to make, numbered `first_index..first_index + changes`.
    pub(crate) changes: u64,
    pub(crate) first_index: u64,
    /// Writes per second (0: back to back, as fast as the pending bound lets them go).
    pub(crate) rate: f64,
    /// Write calls pending at once.
    pub(crate) max_in_flight: usize,
    pub(crate) records: ProbeRecords,
}

/// How many single-record writes a scenario makes, how fast and how many pending at once
/// (shared by `fanout` and `personal`, whose reports repeat it among their parameters).
#[derive(Clone, Copy, Debug, clap::Args, Serialize)]
pub(crate) struct WriteLoad {
    /// Single-record writes to make.
    #[arg(long, default_value_t = 1000)]
    pub(crate) changes: u64,
    /// Writes per second (0: back to back).
    #[arg(long, default_value_t = 100.0)]
    pub(crate) rate: f64,
    /// Write calls pending at once (default: 64 for `fanout`, 256 for `personal`). Writes are
    /// sent on schedule whether or not earlier ones have returned (open loop), so a slow server
    /// shows as latency, not as a lower write rate; only when this many are pending does a
    /// write wait.
    #[arg(long)]
    pub(crate) max_in_flight: Option<usize>,
}

impl WriteLoad {
    /// Checks `--rate`, applies the scenario's default bound on pending calls when
    /// `--max-in-flight` was not given, and returns the plan of these writes to `keys` of
    /// `source`, round-robin.
    pub(crate) fn plan(
        &mut self,
        default_max_in_flight: usize,
        source: &str,
        keys: Vec<String>,
        records: ProbeRecords,
    ) -> anyhow::Result<WritePlan> {
        crate::fleet::check_rate(self.rate)?;
        Ok(WritePlan {
            source: source.to_owned(),
            keys,
            changes: self.changes,
            first_index: 0,
            rate: self.rate,
            max_in_flight: *self.max_in_flight.get_or_insert(default_max_in_flight),
            records,
        })
    }
}

/// One write of a plan.
struct Write {
    source: String,
    key: String,
    /// The write's number in the run.
    index: u64,
    /// `index` over the number of keys: the key's own write number.
    round: u64,
    records: ProbeRecords,
}

/// What the pusher did.
pub(crate) struct Pushes {
    /// Write calls that returned OK.
    pub(crate) pushed: u64,
    /// The same by key, in the order of [`WritePlan::keys`].
    pub(crate) pushed_by_key: Vec<u64>,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    /// Durations of the write calls.
    pub(crate) calls: Histogram<u64>,
    /// First due time to the return of the last call.
    pub(crate) elapsed: Duration,
    /// Most a write was sent after its due time (when `max_in_flight` calls were pending).
    pub(crate) max_send_lag: Duration,
    /// The highest partition head a Push returned (0 for channel creates, which do not say).
    pub(crate) max_head: u64,
}

impl Pushes {
    fn new(keys: usize) -> Self {
        Self {
            pushed: 0,
            pushed_by_key: vec![0; keys],
            errors: 0,
            first_error: None,
            calls: latency_histogram(),
            elapsed: Duration::ZERO,
            max_send_lag: Duration::ZERO,
            max_head: 0,
        }
    }

    fn account(&mut self, (key, call, result): (usize, Duration, Result<u64, String>)) {
        self.calls.saturating_record(u64::try_from(call.as_nanos()).unwrap_or(u64::MAX));
        match result {
            Ok(head) => {
                self.pushed += 1;
                self.pushed_by_key[key] += 1;
                self.max_head = self.max_head.max(head);
            }
            Err(error) => {
                self.errors += 1;
                self.first_error.get_or_insert(error);
            }
        }
    }

    /// Returns the writes that returned OK per second over [`Pushes::elapsed`].
    pub(crate) fn rate(&self) -> f64 {
        round(self.pushed as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON), 1)
    }

    /// Returns [`Pushes::max_send_lag`] in milliseconds.
    pub(crate) fn max_send_lag_ms(&self) -> f64 {
        round(self.max_send_lag.as_secs_f64() * 1e3, 2)
    }
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

    /// Makes `write`; its `sent_ns` is taken just before the call. Returns the partition's
    /// head after an Ingest push (0 for a channel create).
    async fn write(self, write: Write, shared: Arc<Shared>) -> Result<u64, tonic::Status> {
        match self {
            Writer::Ingest { mut client, authorization } => {
                let mut request = tonic::Request::new(push_request(write, &shared));
                if let Some(authorization) = authorization {
                    request.metadata_mut().insert("authorization", authorization);
                }
                client.push(request).await.map(|response| response.into_inner().head)
            }
            Writer::Channel(mut client) => client.create(create_request(write, &shared)).await.map(|_| 0),
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

/// Sends the plan's writes, write `i` due at `i / rate` after the first, each on its own
/// task so that a slow call does not delay the next write (at most `max_in_flight` pending).
/// With rate 0 every write is due at once: calls are pipelined `max_in_flight` deep on one
/// HTTP/2 connection, each one record in its own call (its own commit; the store may group
/// concurrent commits into one fsync).
pub(crate) async fn push_open_loop(
    plan: &WritePlan,
    shared: &Arc<Shared>,
    writer: Writer,
    deadline: Instant,
) -> Pushes {
    let keys = plan.keys.len().max(1) as u64;
    let mut pushes = Pushes::new(plan.keys.len());
    let pending = Arc::new(Semaphore::new(plan.max_in_flight.max(1)));
    let mut calls = JoinSet::new();
    let started = Instant::now();
    for offset in 0..plan.changes {
        let index = plan.first_index + offset;
        // Pacing, not synchronisation: write number `offset` is due at offset / rate.
        let due =
            if plan.rate > 0.0 { started + Duration::from_secs_f64(offset as f64 / plan.rate) } else { Instant::now() };
        if due >= deadline {
            break;
        }
        // Only when not yet due: the timer rounds up to its next millisecond tick, so
        // sleeping until a past instant would pace a burst at one write per millisecond.
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let Ok(permit) = tokio::time::timeout_at(deadline, Arc::clone(&pending).acquire_owned()).await else {
            break;
        };
        let permit = permit.expect("the semaphore is never closed");
        pushes.max_send_lag = pushes.max_send_lag.max(Instant::now().saturating_duration_since(due));
        let key = usize::try_from(index % keys).expect("fewer keys than usize::MAX");
        let write = Write {
            source: plan.source.clone(),
            key: plan.keys.get(key).cloned().unwrap_or_default(),
            index,
            round: index / keys,
            records: plan.records,
        };
        let write = writer.clone().write(write, Arc::clone(shared));
        calls.spawn(async move {
            let call_started = Instant::now();
            let result = write.await;
            drop(permit);
            let result = result.map_err(|status| format!("{}: {}", status.code(), status.message()));
            (key, call_started.elapsed(), result)
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

/// Returns the Ingest push of `write` (see [`ProbeRecords`]); `sent_ns` is taken last, just
/// before the call.
fn push_request(write: Write, shared: &Shared) -> PushRequest {
    let Write { source, key, index, round, records } = write;
    let mut fields = BTreeMap::new();
    if let ProbeRecords::ByWrite { pad_bytes } = records
        && pad_bytes > 0
    {
        fields.insert("pad".to_owned(), Value::string("x".repeat(pad_bytes)));
    }
    fields.insert("seq".to_owned(), Value::int(i64::try_from(index).unwrap_or(i64::MAX)));
    fields.insert(RUN_FIELD.to_owned(), Value::int(shared.run_tag));
    let sent_ns = shared.now_ns();
    let (id, name) = match records {
        ProbeRecords::ByWrite { .. } => (format!("sim-latency-{index:06}"), format!("latency probe {index}")),
        ProbeRecords::ByRound => (format!("sim-personal-{round:06}"), probe_name(shared.run_tag, sent_ns, index)),
    };
    fields.insert("name".to_owned(), Value::string(name));
    fields.insert(SENT_NS_FIELD.to_owned(), Value::int(i64::try_from(sent_ns).unwrap_or(i64::MAX)));
    let record = Record { id, fields, version: 0 };
    PushRequest { source, key, upserts: vec![record], deletes: Vec::new() }
}

/// Returns `write` as a channel create (`fanout --via channel`): a new record (the backend
/// chooses its id) whose `name` is a probe, with a mutation id unique to the run.
fn create_request(write: Write, shared: &Shared) -> WriteRequest {
    let Write { source, key, index, .. } = write;
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

/// One push phase, measured from the first write to the last delivery or the drain's end.
pub(crate) struct PushPhase {
    pub(crate) pushes: Pushes,
    /// True when every delivery expected arrived before the drain ended.
    pub(crate) drained: bool,
    /// Records of this run received when the drain ended.
    pub(crate) delivered_at_end: u64,
    /// First write sent to the last delivery.
    pub(crate) delivery: Duration,
    /// What the phase cost the server, this process and each core.
    pub(crate) usage: WindowUsage,
}

/// Runs `push` (the phase's writes), then waits until the fleet has received `expected`
/// records (given the pushes) or `drain_secs` have passed (bounded by `deadline`); measures
/// the server's (`server`), this process's and the cores' usage over the whole phase.
pub(crate) async fn push_and_drain(
    shared: &Shared,
    server: Option<Process>,
    drain_secs: u64,
    deadline: Instant,
    push: impl Future<Output = anyhow::Result<Pushes>>,
    expected: impl FnOnce(&Pushes) -> u64,
) -> anyhow::Result<PushPhase> {
    let usage = UsageWindow::start(server)?;
    let first_sent_ns = shared.now_ns();
    let pushes = push.await?;
    let drain_deadline = drain_deadline(drain_secs, deadline);
    let drained = shared.delivered.wait_for(expected(&pushes), drain_deadline).await;
    let delivered_at_end = shared.delivered.get();
    let usage = usage.finish()?;
    let last_receive_ns = shared.last_receive_ns.load(std::sync::atomic::Ordering::SeqCst);
    let delivery = Duration::from_nanos(last_receive_ns.saturating_sub(first_sent_ns));
    Ok(PushPhase { pushes, drained, delivered_at_end, delivery, usage })
}

/// Returns when a drain of `drain_secs` from now ends, at the latest at `deadline`.
pub(crate) fn drain_deadline(drain_secs: u64, deadline: Instant) -> Instant {
    (Instant::now() + Duration::from_secs(drain_secs)).min(deadline)
}

/// How the writes went, in a report (flattened into it).
#[derive(Debug, Serialize)]
pub(crate) struct PushSummary {
    /// Write calls (Push or Create) that returned OK.
    pub(crate) pushed: u64,
    pub(crate) push_errors: u64,
    pub(crate) first_push_error: Option<String>,
    /// First push due to the return of the last call.
    pub(crate) push_secs: f64,
    pub(crate) push_rate: f64,
    /// Most a push was sent after its due time (when `--max-in-flight` calls were pending).
    pub(crate) max_send_lag_ms: f64,
    /// Duration of the write calls themselves (commit included).
    pub(crate) push_call: LatencySummary,
}

impl PushSummary {
    pub(crate) fn of(pushes: &Pushes) -> Self {
        Self {
            pushed: pushes.pushed,
            push_errors: pushes.errors,
            first_push_error: pushes.first_error.clone(),
            push_secs: secs(pushes.elapsed),
            push_rate: pushes.rate(),
            max_send_lag_ms: pushes.max_send_lag_ms(),
            push_call: LatencySummary::of(&pushes.calls),
        }
    }

    /// Returns "N ok, M failed, R/s over S s (sent at most L ms late)" for the table.
    pub(crate) fn line(&self) -> String {
        format!(
            "{} ok, {} failed, {:.1}/s over {:.2} s (sent at most {:.1} ms late)",
            self.pushed, self.push_errors, self.push_rate, self.push_secs, self.max_send_lag_ms
        )
    }
}

/// The server's CPU and memory over a push phase: from the first write (devices connected
/// and caught up) to the end of the drain.
#[derive(Debug, Serialize)]
pub(crate) struct ServerUsage {
    #[serde(flatten)]
    window: ServerWindow,
    cpu_us_per_delivered: f64,
}

/// How a push phase's records reached the devices, and what that cost, in a report
/// (flattened into it).
#[derive(Debug, Serialize)]
pub(crate) struct DeliverySummary {
    /// Receive time − sent_ns of the records in live pushes.
    pub(crate) latency: LatencySummary,
    /// The same for records that came in catch-up pages after a demotion.
    pub(crate) catchup_latency: LatencySummary,
    /// First write sent to last delivery.
    pub(crate) delivery_secs: f64,
    /// Deliveries (records of this run received, live and catch-up, every device) per
    /// second over `delivery_secs`: the headline of a `--rate 0` burst.
    pub(crate) delivered_per_sec: f64,
    pub(crate) server: Option<ServerUsage>,
    /// Every core's busy time over the same window (from /proc/stat; the scenario script
    /// pins the server to core 0 and this process to core 1).
    pub(crate) cores: Vec<CoreBusy>,
    /// Busy core time over the window not charged to the server or this process: softirq
    /// work charged to neither, kernel threads, and any other program. Well above a few
    /// percent of the window means something else competed for the cores and the run is
    /// suspect (`None` without `--server-pid`).
    pub(crate) other_busy_secs: Option<f64>,
    /// This process's CPU time over the same window per delivered record.
    pub(crate) sim_cpu_us_per_delivered: f64,
}

impl DeliverySummary {
    /// Returns the summary of `phase`, whose latencies the fleet's `shared` counters hold.
    pub(crate) fn of(phase: &PushPhase, shared: &Shared) -> Self {
        let (usage, delivered) = (&phase.usage, phase.delivered_at_end);
        Self {
            latency: LatencySummary::of(&shared.live_latency.lock()),
            catchup_latency: LatencySummary::of(&shared.catchup_latency.lock()),
            delivery_secs: secs(phase.delivery),
            delivered_per_sec: round(delivered as f64 / phase.delivery.as_secs_f64().max(f64::EPSILON), 0),
            server: usage
                .server
                .map(|window| ServerUsage { window, cpu_us_per_delivered: cpu_us_per(window.cpu, delivered) }),
            cores: usage.cores.clone(),
            other_busy_secs: usage.other_busy_secs,
            sim_cpu_us_per_delivered: cpu_us_per(usage.sim_cpu, delivered),
        }
    }
}

/// What a push scenario's table closes with, after its own rows.
pub(crate) struct ClosingRows<'a> {
    pub(crate) delivery: &'a DeliverySummary,
    pub(crate) fleet: &'a FleetTotals,
    /// Records of this run that came in catch-up pages (their latency row shows when any did).
    pub(crate) delivered_catchup: u64,
    pub(crate) pushes: &'a PushSummary,
}

impl ClosingRows<'_> {
    /// Adds the catch-up latency, what the devices saw besides deliveries, the window's CPU
    /// use per record `delivered` by its end, the devices' errors and the first failed write
    /// call (in a row named `first_error_row`) to `table`.
    pub(crate) fn add_to(&self, table: &mut Table, usage: &WindowUsage, delivered: u64, first_error_row: &str) {
        if self.delivered_catchup > 0 {
            table.row("catch-up latency p50/p90/p99/max", self.delivery.catchup_latency.line());
        }
        self.fleet.add_delivery_rows(table);
        usage.table_rows(table, delivered, "delivered record");
        self.fleet.add_error_row(table);
        if let Some(error) = &self.pushes.first_push_error {
            table.row(first_error_row, error);
        }
    }
}

#[cfg(test)]
mod tests {
    use syncline_client_sim::probe::parse_probe;

    use super::*;
    use crate::fleet::fleet_args;

    fn write(key: &str, index: u64, round: u64, records: ProbeRecords) -> Write {
        Write { source: "Account".into(), key: key.into(), index, round, records }
    }

    #[test]
    fn writes_by_number_carry_a_probe_and_optional_filler() {
        let shared = Shared::new(&fleet_args(), 0, Instant::now());
        let request = push_request(write("*", 42, 42, ProbeRecords::ByWrite { pad_bytes: 3 }), &shared);
        let record = &request.upserts[0];
        assert_eq!((request.key.as_str(), record.id.as_str()), ("*", "sim-latency-000042"));
        assert_eq!(record.fields["pad"], Value::string("xxx"));
        assert_eq!(record.fields["name"], Value::string("latency probe 42"));
        assert_eq!(parse_probe(record).expect("a probe").run, shared.run_tag);
        let unpadded = push_request(write("*", 1, 1, ProbeRecords::ByWrite { pad_bytes: 0 }), &shared);
        assert!(!unpadded.upserts[0].fields.contains_key("pad"));
    }

    #[test]
    fn pushes_carry_a_probe_for_the_users_partition() {
        let shared = Shared::new(&fleet_args(), 0, Instant::now());
        let request = push_request(write("u-000007", 15, 3, ProbeRecords::ByRound), &shared);
        assert_eq!(request.key, "u-000007");
        assert_eq!(request.upserts.len(), 1);
        assert_eq!(request.upserts[0].id, "sim-personal-000003");
        let probe = parse_probe(&request.upserts[0]).expect("a probe");
        assert_eq!(probe.run, shared.run_tag);
    }

    #[test]
    fn channel_creates_name_a_probe_in_the_app_partition_by_default() {
        let shared = Shared::new(&fleet_args(), 0, Instant::now());
        let request = create_request(write("", 5, 5, ProbeRecords::ByWrite { pad_bytes: 0 }), &shared);
        assert_eq!(request.partition.as_ref().unwrap().key, APP_PARTITION_KEY);
        assert_eq!(request.mutation_id, format!("sim-latency-{}-5", shared.run_tag));
        assert_eq!(parse_probe(request.record.as_ref().unwrap()).expect("a probe").run, shared.run_tag);
    }

    #[test]
    fn pushes_are_counted_by_key() {
        let mut pushes = Pushes::new(2);
        pushes.account((1, Duration::from_millis(1), Ok(7)));
        pushes.account((1, Duration::from_millis(1), Ok(5)));
        pushes.account((0, Duration::from_millis(1), Err("UNAVAILABLE: down".into())));
        assert_eq!((pushes.pushed, pushes.pushed_by_key.as_slice(), pushes.max_head), (2, &[0, 2][..], 7));
        assert_eq!((pushes.errors, pushes.first_error.as_deref()), (1, Some("UNAVAILABLE: down")));
        assert_eq!(pushes.calls.len(), 3);
    }
}
