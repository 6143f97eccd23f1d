//! `syncline-sim personal`: many users, each with their own partition, fed over Ingest.
//!
//! N devices each log in as their *own* user (`<user-prefix>000000` ..) with a backend token
//! this process mints with the server's secret (`--token-secret`, the server's
//! `auth.backend_token_secret`), so thousands of distinct users log in without argon2. Each
//! subscribes to its user's partition of a `user`-partitioned, ingest-fed source and is
//! caught up. Then M single-record changes are pushed over gRPC `Ingest/Push` at a fixed
//! rate, round-robin over the users' partitions; each carries the run's tag and `sent_ns`
//! (the probe fields the fleet counts, plus a `probe_name` for people reading the records;
//! see `push_driver.rs`).
//!
//! Reported: deliveries per second, latency (receive time − `sent_ns`), changes lost (pushed
//! to a user's partition and never received by that user's device, counted per partition),
//! and the server's CPU per delivered record and RSS (with `--server-pid`).

use std::sync::atomic::Ordering;

use clap::Args;
use serde::Serialize;
use tokio::time::Instant;

use crate::{
    fleet::{
        DEFAULT_ACK_EVERY, DEFAULT_CONNECT_CONCURRENCY, DEFAULT_SOURCE_ADDRS, FleetArgs, FleetTotals, Logins, RampUp,
        RunArgs, STOP_GRACE, ramp_up,
    },
    push_driver::{
        ClosingRows, DeliverySummary, IngestArgs, ProbeRecords, PushSummary, WriteLoad, push_and_drain, push_open_loop,
    },
    report::{Table, unix_time_secs, write_json},
    usage::{WindowUsage, server_process},
};

/// Default bound on pending Push calls: at 1,000 pushes/s, 256 pending means the server is a
/// quarter of a second behind.
const DEFAULT_MAX_IN_FLIGHT: usize = 256;

/// Arguments of `personal`.
#[derive(Debug, Args)]
pub(crate) struct PersonalArgs {
    /// The device endpoint; loopback addresses only.
    #[arg(long, default_value = "ws://127.0.0.1:7700/v1/sync")]
    url: String,
    #[command(flatten)]
    ingest: IngestArgs,
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
    /// `--changes` (spread round-robin over the users' partitions), `--rate` (over all
    /// users), `--max-in-flight`.
    #[command(flatten)]
    load: WriteLoad,
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
    pub(crate) run: RunArgs,
}

#[derive(Debug, Serialize)]
struct Params {
    url: String,
    grpc: String,
    users: usize,
    user_prefix: String,
    source: String,
    ack_every: u64,
    token_audience: Option<String>,
    #[serde(flatten)]
    load: WriteLoad,
    #[serde(flatten)]
    run: RunArgs,
}

#[derive(Debug, Serialize)]
struct PersonalReport {
    scenario: &'static str,
    unix_time: u64,
    params: Params,
    /// `login_secs` is the time to mint every user's backend token (no password logins).
    ramp_up: RampUp,
    #[serde(flatten)]
    pushes: PushSummary,
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
    #[serde(flatten)]
    delivery: DeliverySummary,
    fleet: FleetTotals,
}

/// Returns user number `index`'s id.
fn user_id(prefix: &str, index: usize) -> String {
    format!("{prefix}{index:06}")
}

/// Runs `personal`: token logins, paced pushes over the users' partitions, drain, report.
pub(crate) async fn run(mut args: PersonalArgs, run_start: Instant, deadline: Instant) -> anyhow::Result<()> {
    crate::loopback::check_url(&args.ingest.grpc, &["http"]).await?;
    anyhow::ensure!(args.users > 0, "--users must be at least 1");
    anyhow::ensure!(!args.token_secret.is_empty(), "--token-secret must not be empty");
    let server = args.run.server_pid.map(server_process).transpose()?;
    let users: Vec<String> = (0..args.users).map(|index| user_id(&args.user_prefix, index)).collect();
    let plan = args.load.plan(DEFAULT_MAX_IN_FLIGHT, &args.source, users.clone(), ProbeRecords::ByRound)?;
    let logins =
        Logins::BackendTokens { users: &users, secret: &args.token_secret, audience: args.token_audience.as_deref() };
    let (fleet, shared, ramp_up) = ramp_up(&fleet_args(&args), logins, run_start, deadline).await?;

    let writer = args.ingest.writer().await?;
    let push = async { Ok(push_open_loop(&plan, &shared, writer, deadline).await) };
    let phase = push_and_drain(&shared, server, args.run.drain_secs, deadline, push, |pushes| pushes.pushed).await?;

    let totals = fleet.stop(Instant::now() + STOP_GRACE).await;
    let (mut lost, mut extra, mut users_with_losses) = (0, 0, 0);
    for (user, &sent) in users.iter().zip(&phase.pushes.pushed_by_key) {
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
            grpc: args.ingest.grpc.clone(),
            users: args.users,
            user_prefix: args.user_prefix.clone(),
            source: args.source.clone(),
            ack_every: args.ack_every,
            token_audience: args.token_audience.clone(),
            load: args.load,
            run: args.run.clone(),
        },
        ramp_up,
        pushes: PushSummary::of(&phase.pushes),
        delivered: totals.live_records + totals.catchup_records,
        delivered_live: totals.live_records,
        delivered_catchup: totals.catchup_records,
        lost,
        users_with_losses,
        extra,
        drained: phase.drained,
        delivery: DeliverySummary::of(&phase, &shared),
        fleet: totals,
    };
    print_table(&report, &phase.usage, phase.delivered_at_end);
    write_json(args.run.json_out.as_deref(), &report)
}

/// Returns the fleet of `personal`: one device per user, each subscribing to its own user's
/// partition (the natural key) from cursor 0.
fn fleet_args(args: &PersonalArgs) -> FleetArgs {
    FleetArgs {
        url: args.url.clone(),
        also_urls: Vec::new(),
        devices: args.users,
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
    }
}

fn print_table(report: &PersonalReport, usage: &WindowUsage, delivered: u64) {
    let mut table = Table::new(format!(
        "personal: {} users (one device each) x {} changes at {}/s via Ingest/Push",
        report.params.users, report.params.load.changes, report.params.load.rate
    ));
    let (pushes, delivery) = (&report.pushes, &report.delivery);
    report.ramp_up.add_rows(&mut table);
    table
        .row("pushed", pushes.line())
        .row("push call p50/p90/p99/max", pushes.push_call.line())
        .row("delivered", format!("{} live + {} catch-up", report.delivered_live, report.delivered_catchup))
        .row(
            "lost / extra",
            format!("{} / {} ({} users with losses)", report.lost, report.extra, report.users_with_losses),
        )
        .row("latency p50/p90/p99/max", delivery.latency.line())
        .row("delivery", format!("{:.2} s, {:.0} records/s", delivery.delivery_secs, delivery.delivered_per_sec));
    let closing = ClosingRows { delivery, fleet: &report.fleet, delivered_catchup: report.delivered_catchup, pushes };
    closing.add_to(&mut table, usage, delivered, "first push error");
    table.print();
}
