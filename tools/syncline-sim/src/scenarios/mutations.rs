//! `syncline-sim mutations`: device mutations through the server to the backend and back.
//!
//! A fleet of N subscriber devices caught up on a partition (as in `latency`) plus W writer
//! devices sending `Mutate` creates on the same source. Each writer logs in with the
//! password, so each is its own client: the server dispatches one client's mutations of a
//! source to its channel one at a time, in queue order, and delivers outcomes to that
//! client's connection. Every created record's `name` is a probe
//! (`syncline_client_sim::probe::probe_name`) whose `sent_ns` is taken just before the `Mutate`
//! is sent, on the run's clock. Per mutation:
//!
//! - **ack**: `Mutate` sent → `MutationAck` (the mutation is durably queued);
//! - **result**: `Mutate` sent → `MutationResult` ok (the backend wrote it and the outcome
//!   is committed); failed results are counted, with the first error;
//! - **echo**: `Mutate` sent → the created record arriving at each subscriber through the
//!   partition log (for a `watch` source: the backend's change feed, captured by Syncline).
//!
//! Open loop (`--rate R`): mutation `i` is due at `i / R` after the first and belongs to
//! writer `i mod W`; a writer with `--in-flight` mutations outstanding sends its next one
//! late (the report says how late). Closed loop (`--rate 0`): every writer keeps
//! `--in-flight` mutations outstanding, for the most mutations per second sustained.

use std::{collections::HashMap, sync::Arc, time::Duration};

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use syncline_client_sim::probe::{PROBE_NAME_FIELD, probe_name};
use syncline_client_sim::{Connection, Incoming};
use syncline_proto::v1::{
    ClientFrame, Mutate, MutationOp, MutationResult, ServerFrame, Value, client_frame, server_frame,
};
use tokio::{task::JoinSet, time::Instant};

use crate::{
    fleet::{
        FleetArgs, FleetParams, FleetTotals, Logins, RampUp, RunArgs, STOP_GRACE, Shared, describe_code,
        describe_error, login, ramp_up,
    },
    push_driver::drain_deadline,
    report::{LatencySummary, Table, latency_histogram, round, secs, unix_time_secs, write_json},
    usage::{CoreBusy, ServerWindow, UsageWindow, cpu_us_per, server_process},
};

/// Default outstanding mutations per writer.
const DEFAULT_IN_FLIGHT: u64 = 8;
/// Distinct writer errors kept for the report.
const MAX_REPORTED_ERRORS: usize = 5;

/// Arguments of `mutations`.
#[derive(Debug, Args)]
pub(crate) struct MutationsArgs {
    /// The subscribers, and the login, source and partition the writers share with them.
    #[command(flatten)]
    fleet: FleetArgs,
    /// Writer devices, each with its own password login (its own client).
    #[arg(long, default_value_t = 10)]
    writers: usize,
    /// Mutations (creates) to send, over all writers.
    #[arg(long, default_value_t = 1000)]
    mutations: u64,
    /// Mutations per second over all writers (open loop); 0 for a closed loop, each writer
    /// keeping `--in-flight` outstanding.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Mutations a writer has outstanding (sent, no MutationResult yet) at most: the closed
    /// loop keeps this many, the open loop waits (sends late) rather than exceed it.
    #[arg(long, default_value_t = DEFAULT_IN_FLIGHT, value_parser = clap::value_parser!(u64).range(1..1_000_000))]
    in_flight: u64,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

#[derive(Debug, Serialize)]
struct Params {
    #[serde(flatten)]
    fleet: FleetParams,
    writers: usize,
    mutations: u64,
    /// 0: closed loop.
    rate: f64,
    in_flight: u64,
    #[serde(flatten)]
    run: RunArgs,
}

/// The server's CPU and memory from the first mutation sent to the end of the drain.
#[derive(Debug, Serialize)]
struct ServerUsage {
    #[serde(flatten)]
    window: ServerWindow,
    cpu_us_per_mutation: f64,
}

#[derive(Debug, Serialize)]
struct MutationsReport {
    scenario: &'static str,
    unix_time: u64,
    params: Params,
    ramp_up: RampUp,
    /// Password logins of the writers, one after the other.
    writers_login_secs: f64,
    /// Mutate frames sent.
    sent: u64,
    /// Mutations not sent before the deadline.
    unsent: u64,
    /// MutationAcks received.
    acked: u64,
    /// MutationResults with ok = true.
    ok: u64,
    /// MutationResults with ok = false.
    failed: u64,
    first_failure: Option<String>,
    /// Sent without any MutationResult by the end of the drain.
    lost: u64,
    /// Most a mutation was sent after its due time (open loop, writer at `--in-flight`;
    /// 0 in a closed loop).
    max_send_lag_ms: f64,
    /// Mutate sent → MutationAck.
    ack: LatencySummary,
    /// Mutate sent → MutationResult ok.
    result: LatencySummary,
    /// First Mutate sent to the last MutationResult.
    results_secs: f64,
    /// MutationResults ok per second over `results_secs`: the rate sustained.
    mutations_per_sec: f64,
    /// Subscribers caught up × ok: the echoes due.
    echo_expected: u64,
    echo_delivered_live: u64,
    echo_delivered_catchup: u64,
    /// Echoes due − echoes received (never negative).
    echo_lost: u64,
    /// Echoes received − echoes due, when positive (duplicates).
    echo_extra: u64,
    /// True when every echo due arrived before the drain ended.
    echo_drained: bool,
    /// Mutate sent → the created record in a live push, at each subscriber.
    echo: LatencySummary,
    /// The same for echoes that came in catch-up pages after a demotion.
    echo_catchup: LatencySummary,
    server: Option<ServerUsage>,
    /// Every core's busy time over the same window.
    cores: Vec<CoreBusy>,
    /// Busy core time over the window charged to neither the server nor this process: well
    /// above a few percent of the window means something else competed for the cores.
    other_busy_secs: Option<f64>,
    sim_cpu_us_per_mutation: f64,
    /// Non-fatal Error frames the writers received.
    writer_error_frames: u64,
    /// Up to five distinct writer errors (a writer's connection ending early).
    writer_errors: Vec<String>,
    fleet: FleetTotals,
}

/// Runs `mutations`: ramp-up, writer logins, mutations, drain, report.
pub(crate) async fn run(args: MutationsArgs, run_start: Instant, deadline: Instant) -> anyhow::Result<()> {
    crate::fleet::check_rate(args.rate)?;
    anyhow::ensure!(args.writers >= 1, "--writers must be at least 1");
    let server = args.run.server_pid.map(server_process).transpose()?;
    let (fleet, shared, ramp_up) = ramp_up(&args.fleet, Logins::Password, run_start, deadline).await?;

    let logins_started = Instant::now();
    let connections = match login_writers(&args, deadline).await {
        Ok(connections) => connections,
        Err(error) => {
            fleet.stop(Instant::now() + STOP_GRACE).await;
            return Err(error);
        }
    };
    let writers_login_secs = secs(logins_started.elapsed());

    let usage = UsageWindow::start(server)?;
    let plan = Arc::new(Plan {
        writers: args.writers as u64,
        total: args.mutations,
        rate: args.rate,
        in_flight: usize::try_from(args.in_flight).unwrap_or(usize::MAX),
        source: args.fleet.source.clone(),
        key: args.fleet.key.clone(),
        started: Instant::now(),
        drain: Duration::from_secs(args.run.drain_secs),
        deadline,
    });
    let first_sent_ns = shared.now_ns();
    let totals = run_writers(connections, &plan, &shared).await;

    let echo_expected = ramp_up.caught_up as u64 * totals.ok;
    let echo_drained = shared.delivered.wait_for(echo_expected, drain_deadline(args.run.drain_secs, deadline)).await;
    let usage = usage.finish()?;
    let fleet_totals = fleet.stop(Instant::now() + STOP_GRACE).await;
    let echoes = fleet_totals.live_records + fleet_totals.catchup_records;
    let results = Duration::from_nanos(totals.last_result_ns.saturating_sub(first_sent_ns));

    let report = MutationsReport {
        scenario: "mutations",
        unix_time: unix_time_secs(),
        params: Params {
            fleet: args.fleet.params(),
            writers: args.writers,
            mutations: args.mutations,
            rate: args.rate,
            in_flight: args.in_flight,
            run: args.run.clone(),
        },
        ramp_up,
        writers_login_secs,
        sent: totals.sent,
        unsent: args.mutations.saturating_sub(totals.sent),
        acked: totals.acked,
        ok: totals.ok,
        failed: totals.failed,
        first_failure: totals.first_failure.clone(),
        lost: totals.sent.saturating_sub(totals.ok + totals.failed),
        max_send_lag_ms: round(totals.max_send_lag.as_secs_f64() * 1e3, 2),
        ack: LatencySummary::of(&totals.ack),
        result: LatencySummary::of(&totals.result),
        results_secs: secs(results),
        mutations_per_sec: round(totals.ok as f64 / results.as_secs_f64().max(f64::EPSILON), 1),
        echo_expected,
        echo_delivered_live: fleet_totals.live_records,
        echo_delivered_catchup: fleet_totals.catchup_records,
        echo_lost: echo_expected.saturating_sub(echoes),
        echo_extra: echoes.saturating_sub(echo_expected),
        echo_drained,
        echo: LatencySummary::of(&shared.live_latency.lock()),
        echo_catchup: LatencySummary::of(&shared.catchup_latency.lock()),
        server: usage
            .server
            .map(|window| ServerUsage { window, cpu_us_per_mutation: cpu_us_per(window.cpu, totals.ok) }),
        cores: usage.cores.clone(),
        other_busy_secs: usage.other_busy_secs,
        sim_cpu_us_per_mutation: cpu_us_per(usage.sim_cpu, totals.ok),
        writer_error_frames: totals.error_frames,
        writer_errors: totals.errors.clone(),
        fleet: fleet_totals,
    };
    let mut table = report.table();
    usage.table_rows(&mut table, totals.ok, "mutation");
    table.print();
    write_json(args.run.json_out.as_deref(), &report)
}

/// Logs every writer in with the password, one after the other (each its own client).
async fn login_writers(args: &MutationsArgs, deadline: Instant) -> anyhow::Result<Vec<Connection>> {
    let mut connections = Vec::with_capacity(args.writers);
    for writer in 0..args.writers {
        let (connection, _) =
            tokio::time::timeout_at(deadline, login(&args.fleet.first_url(), &args.fleet.user, &args.fleet.password))
                .await
                .context("timed out")
                .and_then(|login| login)
                .with_context(|| format!("logging writer {writer} in"))?;
        connections.push(connection);
    }
    Ok(connections)
}

/// Runs one writer per connection until each has sent its share and had it answered (or
/// its drain or the deadline ended it); returns what they did together.
async fn run_writers(connections: Vec<Connection>, plan: &Arc<Plan>, shared: &Arc<Shared>) -> WriterOutcome {
    let mut tasks = JoinSet::new();
    for (index, connection) in connections.into_iter().enumerate() {
        tasks.spawn(run_writer(index as u64, connection, Arc::clone(plan), Arc::clone(shared)));
    }
    let mut totals = WriterOutcome::default();
    loop {
        // Writers end by the deadline themselves; the grace covers their polite close.
        match tokio::time::timeout_at(plan.deadline + STOP_GRACE, tasks.join_next()).await {
            Ok(Some(Ok(outcome))) => totals.merge(outcome),
            Ok(Some(Err(error))) => totals.note_error(format!("writer task failed: {error}")),
            Ok(None) => break,
            Err(_) => {
                tasks.abort_all();
                totals.note_error("writers still running at the deadline".to_owned());
                break;
            }
        }
    }
    totals
}

/// What every writer does.
#[derive(Debug)]
struct Plan {
    writers: u64,
    /// Mutations over all writers.
    total: u64,
    /// Per second over all writers; 0: closed loop.
    rate: f64,
    in_flight: usize,
    source: String,
    key: String,
    /// Due time of mutation 0.
    started: Instant,
    drain: Duration,
    deadline: Instant,
}

impl Plan {
    /// When mutation `index` is due (closed loop: at once).
    fn due(&self, index: u64) -> Instant {
        if self.rate > 0.0 { self.started + Duration::from_secs_f64(index as f64 / self.rate) } else { self.started }
    }
}

/// Returns the id of mutation `index` of run `run`: unique to the run, so a rerun's
/// mutations are never answered from an earlier run's outcomes.
fn mutation_id(run: i64, index: u64) -> String {
    format!("sim-{run}-{index}")
}

/// Returns mutation `index`: a create whose `name` is a probe sent now.
fn mutate_frame(plan: &Plan, shared: &Shared, index: u64) -> (String, u64, ClientFrame) {
    let mutation_id = mutation_id(shared.run_tag, index);
    let sent_ns = shared.now_ns();
    let name = probe_name(shared.run_tag, sent_ns, index);
    let mutate = Mutate {
        mutation_id: mutation_id.clone(),
        source: plan.source.clone(),
        key: plan.key.clone(),
        op: MutationOp::Create as i32,
        id: format!("sim-new-{}-{index}", shared.run_tag),
        fields: [(PROBE_NAME_FIELD.to_owned(), Value::string(name))].into(),
        base_version: 0,
    };
    (mutation_id, sent_ns, ClientFrame { msg: Some(client_frame::Msg::Mutate(mutate)) })
}

/// A mutation sent and not answered yet.
#[derive(Debug)]
struct Pending {
    sent_ns: u64,
    acked: bool,
}

/// What writers did (one writer's, or summed).
#[derive(Debug)]
struct WriterOutcome {
    sent: u64,
    acked: u64,
    ok: u64,
    failed: u64,
    first_failure: Option<String>,
    ack: Histogram<u64>,
    result: Histogram<u64>,
    max_send_lag: Duration,
    /// Receive time of the last MutationResult, ns since the run's start.
    last_result_ns: u64,
    error_frames: u64,
    errors: Vec<String>,
}

impl Default for WriterOutcome {
    fn default() -> Self {
        Self {
            sent: 0,
            acked: 0,
            ok: 0,
            failed: 0,
            first_failure: None,
            ack: latency_histogram(),
            result: latency_histogram(),
            max_send_lag: Duration::ZERO,
            last_result_ns: 0,
            error_frames: 0,
            errors: Vec::new(),
        }
    }
}

impl WriterOutcome {
    fn merge(&mut self, other: WriterOutcome) {
        self.sent += other.sent;
        self.acked += other.acked;
        self.ok += other.ok;
        self.failed += other.failed;
        if self.first_failure.is_none() {
            self.first_failure = other.first_failure;
        }
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.ack.add(&other.ack);
        let _ = self.result.add(&other.result);
        self.max_send_lag = self.max_send_lag.max(other.max_send_lag);
        self.last_result_ns = self.last_result_ns.max(other.last_result_ns);
        self.error_frames += other.error_frames;
        for error in other.errors {
            self.note_error(error);
        }
    }

    fn note_error(&mut self, error: String) {
        if self.errors.len() < MAX_REPORTED_ERRORS && !self.errors.contains(&error) {
            self.errors.push(error);
        }
    }

    /// Accounts for one server frame.
    fn on_frame(
        &mut self,
        frame: server_frame::Msg,
        pending: &mut HashMap<String, Pending>,
        now_ns: u64,
    ) -> Result<(), String> {
        match frame {
            server_frame::Msg::MutationAck(ack) => {
                if let Some(mutation) = pending.get_mut(&ack.mutation_id).filter(|mutation| !mutation.acked) {
                    mutation.acked = true;
                    self.acked += 1;
                    self.ack.saturating_record(now_ns.saturating_sub(mutation.sent_ns));
                }
            }
            server_frame::Msg::MutationResult(result) => {
                if let Some(mutation) = pending.remove(&result.mutation_id) {
                    self.last_result_ns = self.last_result_ns.max(now_ns);
                    if result.ok {
                        self.ok += 1;
                        self.result.saturating_record(now_ns.saturating_sub(mutation.sent_ns));
                    } else {
                        self.failed += 1;
                        self.first_failure.get_or_insert_with(|| describe_failure(&result));
                    }
                }
            }
            server_frame::Msg::Error(error) if error.fatal => return Err(describe_error(&error)),
            server_frame::Msg::Error(error) => {
                self.error_frames += 1;
                self.note_error(describe_error(&error));
            }
            _ => {}
        }
        Ok(())
    }
}

fn describe_failure(result: &MutationResult) -> String {
    match &result.error {
        Some(error) => describe_code(error.code, &error.message),
        None => "failed without an error".to_owned(),
    }
}

/// One writer: sends its share of the mutations (indices `index`, `index + W`, ...) as they
/// fall due, with at most `in_flight` outstanding, and reads acks and results until every
/// mutation it sent is answered, its drain ends, or the deadline.
async fn run_writer(index: u64, mut connection: Connection, plan: Arc<Plan>, shared: Arc<Shared>) -> WriterOutcome {
    let mut outcome = WriterOutcome::default();
    let mut pending = HashMap::new();
    let mut next = index;
    let mut drain_until = None;
    let ended = loop {
        if let Err(error) = send_due(&mut connection, &plan, &shared, &mut next, &mut pending, &mut outcome).await {
            break Some(error);
        }
        let now = Instant::now();
        if next >= plan.total {
            if pending.is_empty() {
                break None;
            }
            drain_until.get_or_insert(now + plan.drain);
        }
        let end = drain_until.map_or(plan.deadline, |drain_until: Instant| drain_until.min(plan.deadline));
        if now >= end {
            break None;
        }
        let wake = if next < plan.total && pending.len() < plan.in_flight { plan.due(next).min(end) } else { end };
        let incoming = tokio::select! {
            incoming = connection.recv() => incoming,
            // Pacing of the open loop, and the end of the run.
            () = tokio::time::sleep_until(wake) => continue,
        };
        let frame = match incoming {
            Ok(Incoming::Frame(ServerFrame { msg: Some(frame) })) => frame,
            Ok(Incoming::Frame(ServerFrame { msg: None })) => continue,
            Ok(Incoming::Closed { code, reason }) => break Some(format!("closed by the server: {code} {reason}")),
            Err(error) => break Some(format!("{error:#}")),
        };
        if let Err(error) = outcome.on_frame(frame, &mut pending, shared.now_ns()) {
            break Some(error);
        }
    };
    match ended {
        Some(error) => outcome.note_error(format!("writer {index}: {error}")),
        None => {
            // A polite goodbye, bounded; the server's answering close is not waited for.
            let _ = tokio::time::timeout(STOP_GRACE, connection.close(1000, "load scenario done")).await;
        }
    }
    outcome
}

/// Sends every mutation of this writer that is due, while fewer than `in_flight` are
/// outstanding and the deadline has not passed.
async fn send_due(
    connection: &mut Connection,
    plan: &Plan,
    shared: &Shared,
    next: &mut u64,
    pending: &mut HashMap<String, Pending>,
    outcome: &mut WriterOutcome,
) -> Result<(), String> {
    while *next < plan.total && pending.len() < plan.in_flight {
        let now = Instant::now();
        let due = plan.due(*next);
        if due > now || now >= plan.deadline {
            break;
        }
        if plan.rate > 0.0 {
            outcome.max_send_lag = outcome.max_send_lag.max(now - due);
        }
        let (mutation_id, sent_ns, frame) = mutate_frame(plan, shared, *next);
        connection.send(&frame).await.map_err(|error| format!("sending a mutation: {error:#}"))?;
        pending.insert(mutation_id, Pending { sent_ns, acked: false });
        outcome.sent += 1;
        *next += plan.writers;
    }
    Ok(())
}

impl MutationsReport {
    fn table(&self) -> Table {
        let params = &self.params;
        let mode = if params.rate > 0.0 {
            format!("{}/s open loop", params.rate)
        } else {
            format!("closed loop, {} in flight per writer", params.in_flight)
        };
        let mut table = Table::new(format!(
            "mutations: {} creates from {} writers ({mode}), {} subscribers",
            params.mutations, params.writers, params.fleet.devices
        ));
        table
            .row(
                "subscribers caught up",
                format!("{} of {} ({} failed)", self.ramp_up.caught_up, self.ramp_up.devices, self.ramp_up.failed),
            )
            .row(
                "ramp-up",
                format!(
                    "login {:.2} s, connect + catch up {:.2} s, writer logins {:.2} s",
                    self.ramp_up.login_secs, self.ramp_up.connect_secs, self.writers_login_secs
                ),
            )
            .row(
                "sent",
                format!("{} ({} unsent, sent at most {:.1} ms late)", self.sent, self.unsent, self.max_send_lag_ms),
            )
            .row("acked", self.acked)
            .row("results", format!("{} ok, {} failed, {} lost", self.ok, self.failed, self.lost))
            .row("ack p50/p90/p99/max", self.ack.line())
            .row("result p50/p90/p99/max", self.result.line())
            .row("sustained", format!("{:.1} mutations/s over {:.2} s", self.mutations_per_sec, self.results_secs))
            .row("echoes expected", self.echo_expected)
            .row(
                "echoes delivered",
                format!("{} live + {} catch-up", self.echo_delivered_live, self.echo_delivered_catchup),
            )
            .row("echoes lost / extra", format!("{} / {}", self.echo_lost, self.echo_extra))
            .row("echo p50/p90/p99/max", self.echo.line());
        if self.echo_delivered_catchup > 0 {
            table.row("catch-up echo p50/p90/p99/max", self.echo_catchup.line());
        }
        table.row("demotions (re-catch-ups)", self.fleet.recatchups).row("gaps", self.fleet.gaps);
        if let Some(failure) = &self.first_failure {
            table.row("first failure", failure);
        }
        if !self.writer_errors.is_empty() {
            table.row("writer errors", self.writer_errors.join("; "));
        }
        self.fleet.add_error_row(&mut table);
        table
    }
}

#[cfg(test)]
mod tests {
    use syncline_proto::v1::{ErrorCode, MutationAck, MutationError};

    use super::*;
    use syncline_client_sim::probe::parse_probe;

    fn plan(rate: f64) -> Plan {
        Plan {
            writers: 2,
            total: 5,
            rate,
            in_flight: 2,
            source: "Account".into(),
            key: String::new(),
            started: Instant::now(),
            drain: Duration::from_secs(1),
            deadline: Instant::now() + Duration::from_secs(60),
        }
    }

    #[test]
    fn mutations_fall_due_at_the_rate_or_at_once_in_a_closed_loop() {
        let open = plan(50.0);
        assert_eq!(open.due(0), open.started);
        assert_eq!(open.due(100), open.started + Duration::from_secs(2));
        let closed = plan(0.0);
        assert_eq!(closed.due(1_000), closed.started);
    }

    #[test]
    fn mutations_are_creates_carrying_a_probe_of_the_run() {
        let plan = plan(1.0);
        let args = crate::fleet::fleet_args();
        let shared = Shared::new(&args, 0, Instant::now());
        let (id, sent_ns, frame) = mutate_frame(&plan, &shared, 7);
        assert_eq!(id, mutation_id(shared.run_tag, 7));
        let Some(client_frame::Msg::Mutate(mutate)) = frame.msg else { panic!("not a Mutate: {frame:?}") };
        assert_eq!((mutate.op, mutate.source.as_str()), (MutationOp::Create as i32, "Account"));
        assert!(!mutate.id.is_empty());
        let record = syncline_proto::v1::Record { id: "backend-id".into(), fields: mutate.fields, version: 0 };
        let probe = parse_probe(&record).expect("a probe");
        assert_eq!((probe.run, probe.sent_ns), (shared.run_tag, sent_ns));
    }

    #[test]
    fn acks_and_results_are_matched_to_pending_mutations() {
        let mut outcome = WriterOutcome::default();
        let mut pending = HashMap::new();
        for id in ["a", "b", "c"] {
            pending.insert(id.to_owned(), Pending { sent_ns: 1_000_000, acked: false });
        }
        let ack = |id: &str| server_frame::Msg::MutationAck(MutationAck { mutation_id: id.into(), queued: 1 });
        let result = |id: &str, ok: bool| {
            server_frame::Msg::MutationResult(MutationResult {
                mutation_id: id.into(),
                ok,
                error: (!ok).then(|| MutationError {
                    code: ErrorCode::BadRequest as i32,
                    message: "Account has no field \"x\"".into(),
                    ..MutationError::default()
                }),
                ..MutationResult::default()
            })
        };
        for frame in [ack("a"), ack("a"), ack("unknown"), result("a", true), result("b", false), result("a", true)] {
            outcome.on_frame(frame, &mut pending, 3_000_000).unwrap();
        }
        assert_eq!((outcome.acked, outcome.ok, outcome.failed), (1, 1, 1));
        assert_eq!(outcome.ack.len(), 1);
        assert_eq!(outcome.result.max(), outcome.result.highest_equivalent(2_000_000));
        assert_eq!(outcome.first_failure.as_deref(), Some("ERROR_CODE_BAD_REQUEST: Account has no field \"x\""));
        assert_eq!(pending.keys().collect::<Vec<_>>(), ["c"]);
        assert_eq!(outcome.last_result_ns, 3_000_000);
        let fatal = syncline_proto::v1::Error { fatal: true, ..syncline_proto::v1::Error::default() };
        assert!(outcome.on_frame(server_frame::Msg::Error(fatal), &mut pending, 0).is_err());
        let mut total = WriterOutcome::default();
        total.merge(outcome);
        assert_eq!((total.ok, total.failed, total.ack.len()), (1, 1, 1));
    }
}
