//! `syncline-sim personal`: many users, each with their own partition, fed over Ingest.
//!
//! N devices each log in as their *own* user (`<user-prefix>000000` ..) with a backend token
//! this process mints with the server's secret (`--token-secret`, the server's
//! `auth.backend_token_secret`), so thousands of distinct users log in without argon2. Each
//! subscribes to its user's partition of a `user`-partitioned, ingest-fed source and is
//! caught up. Then M single-record changes are pushed over gRPC `Ingest/Push` at a fixed
//! rate, round-robin over the users' partitions; each carries the run's tag and `sent_ns`
//! (the probe fields of `fleet.rs`, plus a `probe_name` for people reading the records).
//!
//! Reported: deliveries per second, latency (receive time − `sent_ns`), changes lost (pushed
//! to a user's partition and never received by that user's device, counted per partition),
//! and the server's CPU per delivered record and RSS (with `--server-pid`).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail};
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use syncline_client_sim::BackendTokenClaims;
use syncline_client_sim::probe::{RUN_FIELD, SENT_NS_FIELD, probe_name};
use syncline_proto::v1::{PushRequest, Record, Value, hello, ingest_client::IngestClient};
use tokio::{sync::Semaphore, task::JoinSet, time::Instant};
use tonic::{
    metadata::{Ascii, MetadataValue},
    transport::{Channel, Endpoint},
};

use crate::{
    fleet::{
        DEFAULT_ACK_EVERY, DEFAULT_CONNECT_CONCURRENCY, DEFAULT_SOURCE_ADDRS, Fleet, FleetArgs, FleetTotals, RampUp,
        RunArgs, STOP_GRACE, Shared,
    },
    report::{LatencySummary, Table, latency_histogram, round, secs, unix_time_secs, write_json},
    usage::{CoreBusy, ServerWindow, UsageWindow, WindowUsage, cpu_us_per, server_process},
};

/// Default bound on pending Push calls: at 1,000 pushes/s, 256 pending means the server is a
/// quarter of a second behind.
const DEFAULT_MAX_IN_FLIGHT: usize = 256;
/// Limit on opening the gRPC connection.
const GRPC_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Lifetime of the minted backend tokens: longer than any bounded run.
const TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Open files kept for everything but device sockets (gRPC, /proc reads, the runtime).
const RESERVED_FILES: u64 = 64;

/// Arguments of `personal`.
#[derive(Debug, Args)]
pub(crate) struct PersonalArgs {
    /// The device endpoint; loopback addresses only.
    #[arg(long, default_value = "ws://127.0.0.1:7700/v1/sync")]
    url: String,
    /// The gRPC endpoint (Ingest); loopback addresses only.
    #[arg(long, default_value = "http://127.0.0.1:7701")]
    grpc: String,
    /// Bearer token for Ingest, when the server requires one.
    #[arg(long, env = "SYNCLINE_INGEST_TOKEN", hide_env_values = true)]
    ingest_token: Option<String>,
    /// The server's backend token secret (`auth.backend_token_secret`): this process mints
    /// each user's login token with it.
    #[arg(long, env = "SYNCLINE_BACKEND_TOKEN_SECRET", hide_env_values = true)]
    token_secret: String,
    /// The `aud` the server expects in backend tokens, if it checks one.
    #[arg(long)]
    token_audience: Option<String>,
    /// Users, one device each.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// User ids are this prefix and a six-digit number.
    #[arg(long, default_value = "sim-user-")]
    user_prefix: String,
    /// The `user`-partitioned, ingest-fed source every device subscribes to (its own user's
    /// partition).
    #[arg(long, default_value = "Personal")]
    source: String,
    /// Single-record changes to push, spread round-robin over the users' partitions.
    #[arg(long, default_value_t = 1000)]
    changes: u64,
    /// Changes per second over all users (0: back to back).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Push calls pending at once (open loop: only when this many are pending does a push
    /// wait).
    #[arg(long, default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    max_in_flight: usize,
    /// Loopback source addresses to spread connections over (127.0.0.2 ..); 0 uses the
    /// kernel's choice.
    #[arg(long, default_value_t = DEFAULT_SOURCE_ADDRS)]
    source_addrs: u8,
    /// Connections opened (and caught up) at once.
    #[arg(long, default_value_t = DEFAULT_CONNECT_CONCURRENCY)]
    connect_concurrency: usize,
    /// Live changes a device applies before acking its cursor.
    #[arg(long, default_value_t = DEFAULT_ACK_EVERY)]
    ack_every: u64,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Serialize)]
struct Params {
    url: String,
    grpc: String,
    users: usize,
    user_prefix: String,
    source: String,
    changes: u64,
    rate: f64,
    ack_every: u64,
    token_audience: Option<String>,
    server_pid: Option<u32>,
    max_in_flight: usize,
    max_secs: u64,
    drain_secs: u64,
}

/// The server's CPU and memory over the push phase.
#[derive(Debug, Serialize)]
struct ServerUsage {
    #[serde(flatten)]
    window: ServerWindow,
    cpu_us_per_delivered: f64,
}

#[derive(Debug, Serialize)]
struct PersonalReport {
    scenario: &'static str,
    unix_time: u64,
    params: Params,
    /// `login_secs` is the time to mint every user's backend token (no password logins).
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
    /// Duration of the Push calls (commit included).
    push_call: LatencySummary,
    /// Records of this run received (live pushes and catch-up pages).
    delivered: u64,
    delivered_live: u64,
    delivered_catchup: u64,
    /// Summed over users: records pushed to the user's partition that its device did not
    /// receive before the drain ended.
    lost: u64,
    /// Users with at least one lost record.
    users_with_losses: usize,
    /// Summed over users: records received beyond those pushed (duplicates).
    extra: u64,
    /// True when every pushed record arrived before the drain ended.
    drained: bool,
    /// Receive time − sent_ns of the records in live pushes.
    latency: LatencySummary,
    /// The same for records that came in catch-up pages after a demotion.
    catchup_latency: LatencySummary,
    /// First push to last delivery.
    delivery_secs: f64,
    delivered_per_sec: f64,
    server: Option<ServerUsage>,
    /// Every core's busy time over the window (from /proc/stat).
    cores: Vec<CoreBusy>,
    /// Busy core time over the window charged to neither the server nor this process.
    other_busy_secs: Option<f64>,
    /// This process's CPU time over the window per delivered record.
    sim_cpu_us_per_delivered: f64,
    fleet: FleetTotals,
}

/// Returns user number `index`'s id.
fn user_id(prefix: &str, index: usize) -> String {
    format!("{prefix}{index:06}")
}

/// Runs `personal`: token logins, paced pushes over the users' partitions, drain, report.
pub(crate) async fn run(args: PersonalArgs) -> anyhow::Result<()> {
    crate::fleet::run_bounded(args.run.max_secs, |run_start, deadline| run_scenario(args, run_start, deadline)).await
}

async fn run_scenario(args: PersonalArgs, run_start: Instant, deadline: Instant) -> anyhow::Result<()> {
    crate::loopback::check_url(&args.grpc, &["http"]).await?;
    anyhow::ensure!(args.rate >= 0.0 && args.rate.is_finite(), "--rate must be a finite number ≥ 0");
    anyhow::ensure!(args.users > 0, "--users must be at least 1");
    anyhow::ensure!(!args.token_secret.is_empty(), "--token-secret must not be empty");
    let server = args.run.server_pid.map(server_process).transpose()?;
    let users: Vec<String> = (0..args.users).map(|index| user_id(&args.user_prefix, index)).collect();
    let (fleet, shared, ramp_up) = ramp_up(&args, &users, run_start, deadline).await?;

    let grpc = Endpoint::from_shared(args.grpc.clone())?
        .connect_timeout(GRPC_CONNECT_TIMEOUT)
        .connect()
        .await
        .with_context(|| format!("connecting to {}", args.grpc))?;
    let authorization = match &args.ingest_token {
        Some(token) => Some(MetadataValue::try_from(format!("Bearer {token}")).context("the ingest token")?),
        None => None,
    };
    let client = IngestClient::new(grpc);

    let usage = UsageWindow::start(server)?;
    let first_sent_ns = shared.now_ns();
    let pushes = push_open_loop(&args, &users, &shared, client, authorization, deadline).await;
    let pushed = pushes.pushed_by_user.iter().map(|count| count.load(Ordering::SeqCst)).sum::<u64>();

    let drain_deadline = (Instant::now() + Duration::from_secs(args.run.drain_secs)).min(deadline);
    let drained = shared.delivered.wait_for(pushed, drain_deadline).await;
    let delivered_at_end = shared.delivered.get();
    let usage = usage.finish()?;
    let last_receive_ns = shared.last_receive_ns.load(Ordering::SeqCst);
    let delivery = Duration::from_nanos(last_receive_ns.saturating_sub(first_sent_ns));

    let totals = fleet.stop(Instant::now() + STOP_GRACE).await;
    let (mut lost, mut extra, mut users_with_losses) = (0, 0, 0);
    for (user, sent) in users.iter().zip(&pushes.pushed_by_user) {
        let sent = sent.load(Ordering::SeqCst);
        let received = shared.delivered_by_key.get(user).map_or(0, |count| count.load(Ordering::SeqCst));
        if received < sent {
            lost += sent - received;
            users_with_losses += 1;
        }
        extra += received.saturating_sub(sent);
    }
    let report = PersonalReport {
        scenario: "personal",
        unix_time: unix_time_secs(),
        params: Params {
            url: args.url.clone(),
            grpc: args.grpc.clone(),
            users: args.users,
            user_prefix: args.user_prefix.clone(),
            source: args.source.clone(),
            changes: args.changes,
            rate: args.rate,
            ack_every: args.ack_every,
            token_audience: args.token_audience.clone(),
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
        delivered: totals.live_records + totals.catchup_records,
        delivered_live: totals.live_records,
        delivered_catchup: totals.catchup_records,
        lost,
        users_with_losses,
        extra,
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

/// Mints every user's token, starts one device per user (each subscribing to its own
/// partition from cursor 0) and waits until every device is caught up or failed.
async fn ramp_up(
    args: &PersonalArgs,
    users: &[String],
    run_start: Instant,
    deadline: Instant,
) -> anyhow::Result<(Fleet, Arc<Shared>, RampUp)> {
    let server = crate::loopback::check_url(&args.url, &["ws"]).await?;
    let open_files_limit = crate::loopback::raise_open_files_limit()?;
    if users.len() as u64 + RESERVED_FILES > open_files_limit {
        bail!("{} devices need more open files than this process may hold ({open_files_limit})", users.len());
    }
    let source_addrs = crate::loopback::source_addrs(server, args.source_addrs)?;
    let minting_started = Instant::now();
    let credentials = users
        .iter()
        .map(|user| {
            let mut claims = BackendTokenClaims::for_user(user.clone(), TOKEN_TTL);
            claims.aud = args.token_audience.clone();
            claims.sign(args.token_secret.as_bytes()).map(hello::Credentials::BackendToken)
        })
        .collect::<Result<Vec<_>, _>>()
        .context("minting backend tokens")?;
    let login_secs = minting_started.elapsed();
    let fleet_args = FleetArgs {
        url: args.url.clone(),
        devices: users.len(),
        user: String::new(),
        password: String::new(),
        source: args.source.clone(),
        // The natural key: each device's own user id.
        key: String::new(),
        from_zero: true,
        source_addrs: args.source_addrs,
        connect_concurrency: args.connect_concurrency,
        ack_every: args.ack_every,
        page_size: 0,
        window: 4,
    };
    let mut shared = Shared::new(&fleet_args, 0, run_start);
    shared.delivered_by_key = users.iter().map(|user| (user.clone(), AtomicU64::new(0))).collect::<HashMap<_, _>>();
    let shared = Arc::new(shared);
    let connect_started = Instant::now();
    let fleet = Fleet::start_with_credentials(
        Arc::clone(&shared),
        &args.url,
        credentials,
        &source_addrs,
        args.connect_concurrency,
    );
    let settled = fleet.wait_settled(deadline).await;
    let ramp_up = RampUp {
        cursor: 0,
        devices: users.len(),
        caught_up: shared.caught_up.load(Ordering::SeqCst),
        failed: shared.failed.load(Ordering::SeqCst),
        login_secs: secs(login_secs),
        connect_secs: secs(connect_started.elapsed()),
        source_addrs,
        open_files_limit,
    };
    if !settled || ramp_up.caught_up == 0 {
        let totals = fleet.stop(Instant::now() + STOP_GRACE).await;
        bail!(
            "ramp-up incomplete before the deadline: {} of {} devices caught up, {} failed; errors: {:?}",
            ramp_up.caught_up,
            ramp_up.devices,
            ramp_up.failed,
            totals.errors
        );
    }
    Ok((fleet, shared, ramp_up))
}

/// What the pusher did.
struct Pushes {
    /// Pushes that returned OK, by user index.
    pushed_by_user: Vec<AtomicU64>,
    errors: u64,
    first_error: Option<String>,
    calls: Histogram<u64>,
    elapsed: Duration,
    max_send_lag: Duration,
}

impl Pushes {
    fn account(&mut self, (user, call, result): (usize, Duration, Result<(), String>)) {
        self.calls.saturating_record(u64::try_from(call.as_nanos()).unwrap_or(u64::MAX));
        match result {
            Ok(()) => {
                self.pushed_by_user[user].fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                self.errors += 1;
                self.first_error.get_or_insert(error);
            }
        }
    }
}

/// Sends `--changes` pushes, push `index` due at `index / rate` after the first and going to
/// user `index % users`, each on its own task (at most `--max-in-flight` pending).
async fn push_open_loop(
    args: &PersonalArgs,
    users: &[String],
    shared: &Arc<Shared>,
    client: IngestClient<Channel>,
    authorization: Option<MetadataValue<Ascii>>,
    deadline: Instant,
) -> Pushes {
    let mut pushes = Pushes {
        pushed_by_user: users.iter().map(|_| AtomicU64::new(0)).collect(),
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
        let user = usize::try_from(index % users.len() as u64).expect("fewer users than usize::MAX");
        let round = index / users.len() as u64;
        let mut request =
            tonic::Request::new(push_request(args.source.clone(), users[user].clone(), shared, index, round));
        if let Some(authorization) = &authorization {
            request.metadata_mut().insert("authorization", authorization.clone());
        }
        let mut client = client.clone();
        calls.spawn(async move {
            let call_started = Instant::now();
            let result = client.push(request).await;
            drop(permit);
            let result = result.map(drop).map_err(|status| format!("{}: {}", status.code(), status.message()));
            (user, call_started.elapsed(), result)
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

/// Returns push number `index` (the user's `round`-th): record `sim-personal-NNNNNN` of the
/// user's partition (the same ids every run, so reruns update rather than grow the
/// partitions, and each push of a run to one user is a distinct id). `sent_ns` is taken
/// last, just before the call.
fn push_request(source: String, key: String, shared: &Shared, index: u64, round: u64) -> PushRequest {
    let mut fields = BTreeMap::new();
    fields.insert("seq".to_owned(), Value::int(i64::try_from(index).unwrap_or(i64::MAX)));
    fields.insert(RUN_FIELD.to_owned(), Value::int(shared.run_tag));
    let sent_ns = shared.now_ns();
    fields.insert("name".to_owned(), Value::string(probe_name(shared.run_tag, sent_ns, index)));
    fields.insert(SENT_NS_FIELD.to_owned(), Value::int(i64::try_from(sent_ns).unwrap_or(i64::MAX)));
    let record = Record { id: format!("sim-personal-{round:06}"), fields, version: 0 };
    PushRequest { source, key, upserts: vec![record], deletes: Vec::new() }
}

fn print_table(report: &PersonalReport, usage: &WindowUsage, delivered: u64) {
    let mut table = Table::new(format!(
        "personal: {} users (one device each) x {} changes at {}/s via Ingest/Push",
        report.params.users, report.params.changes, report.params.rate
    ));
    report.ramp_up.add_rows(&mut table);
    table
        .row(
            "pushed",
            format!(
                "{} ok, {} failed, {:.1}/s over {:.2} s (sent at most {:.1} ms late)",
                report.pushed, report.push_errors, report.push_rate, report.push_secs, report.max_send_lag_ms
            ),
        )
        .row("push call p50/p90/p99/max", report.push_call.line())
        .row("delivered", format!("{} live + {} catch-up", report.delivered_live, report.delivered_catchup))
        .row(
            "lost / extra",
            format!("{} / {} ({} users with losses)", report.lost, report.extra, report.users_with_losses),
        )
        .row("latency p50/p90/p99/max", report.latency.line())
        .row("delivery", format!("{:.2} s, {:.0} records/s", report.delivery_secs, report.delivered_per_sec));
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
        table.row("first push error", error);
    }
    table.print();
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncline_client_sim::probe::parse_probe;

    #[test]
    fn pushes_carry_a_probe_for_the_users_partition() {
        let args = crate::fleet::fleet_args();
        let shared = Shared::new(&args, 0, Instant::now());
        let request = push_request("Personal".into(), user_id("u-", 7), &shared, 15, 3);
        assert_eq!(request.key, "u-000007");
        assert_eq!(request.upserts.len(), 1);
        assert_eq!(request.upserts[0].id, "sim-personal-000003");
        let probe = parse_probe(&request.upserts[0]).expect("a probe");
        assert_eq!(probe.run, shared.run_tag);
    }
}
