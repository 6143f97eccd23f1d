//! `syncline-sim slow`: slow consumers.
//!
//! N devices (one password login, then session tokens) subscribe to a partition and are
//! caught up; `--stalled-percent` of them form the stall set. Single-record changes are
//! pushed over Ingest at `--rate` for two phases of `--phase-secs` each: in the first every
//! device reads; in the second the stall set stops reading its sockets (the TCP connections
//! stay open, so the server's queues and socket buffers towards them fill). Then the stall
//! set reads again and every device must end caught up at the head.
//!
//! Reported: the live-push latency of the devices outside the stall set in each phase (by
//! each probe's send time) and the second phase's p50/p99 over the first's; the server's
//! resident memory sampled over the whole run (start, peak, end and the series); what the
//! devices saw of demotions (catch-up pages after being caught up: the server does not
//! expose its own demotion counter); and whether the stalled devices caught up without
//! loss (sequences skipped or short of the head) or duplicates once they read again.

use std::time::Duration;

use clap::Args;
use serde::Serialize;
use syncline_procfs::Process;
use tokio::{sync::watch, time::Instant};

use crate::{
    fleet::{FleetArgs, FleetParams, FleetTotals, Logins, RampUp, RunArgs, STOP_GRACE, Shared, ramp_up},
    push_driver::{IngestArgs, ProbeRecords, Pushes, WritePlan, drain_deadline, push_open_loop},
    report::{LatencySummary, Table, round, secs, unix_time_secs, write_json},
    usage::{ServerWindow, UsageWindow, server_process},
};

/// Default bound on pending Push calls: at 100 pushes/s, 64 pending means the server is more
/// than half a second behind.
const DEFAULT_MAX_IN_FLIGHT: usize = 64;
/// Default length of each phase.
const DEFAULT_PHASE_SECS: u64 = 10;
/// Default share of devices that stall.
const DEFAULT_STALLED_PERCENT: u8 = 10;
/// Default interval between two readings of the server's memory.
const DEFAULT_SAMPLE_MS: u64 = 250;
/// Default filler per record: at 100 changes/s, 1 KiB records give a stalled connection
/// about 1 MB to hold over a 10 s stall, past what loopback socket buffers take in before
/// the server's own queue must fill (small records would fit in the kernel and test nothing).
const DEFAULT_PAD_BYTES: usize = 1024;
/// Most memory readings kept (a 10-minute run at the default interval fits).
const MAX_RSS_SAMPLES: usize = 2_400;

/// Arguments of `slow`.
#[derive(Debug, Args)]
pub(crate) struct SlowArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    #[command(flatten)]
    ingest: IngestArgs,
    /// Pushes per second in both phases.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds of each phase (without, then with the stall).
    #[arg(long, default_value_t = DEFAULT_PHASE_SECS)]
    phase_secs: u64,
    /// Share of the devices that stop reading in the second phase, in percent (at least one
    /// device when above 0). Keep the phase under the server's idle timeout: a stalled device
    /// sends nothing, not even pongs.
    #[arg(long, default_value_t = DEFAULT_STALLED_PERCENT, value_parser = clap::value_parser!(u8).range(0..=100))]
    stalled_percent: u8,
    /// Push calls pending at once.
    #[arg(long, default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    max_in_flight: usize,
    /// Bytes of filler in each record (a `pad` string field), so that stalled connections
    /// fill their socket buffers and the server's queue within the phase. Large pads need a
    /// smaller `--page-size`: catch-up pages are bounded in records, not bytes, and a device
    /// refuses messages over 16 MiB.
    #[arg(long, default_value_t = DEFAULT_PAD_BYTES)]
    pad_bytes: usize,
    /// Milliseconds between two readings of the server's memory (with `--server-pid`).
    #[arg(long, default_value_t = DEFAULT_SAMPLE_MS)]
    sample_ms: u64,
    /// `--drain-secs`: how long after the stall ends every device may take to be caught up at
    /// the head.
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

#[derive(Debug, Serialize)]
struct Params {
    #[serde(flatten)]
    fleet: FleetParams,
    grpc: String,
    stalled_percent: u8,
    rate: f64,
    phase_secs: u64,
    max_in_flight: usize,
    pad_bytes: usize,
    sample_ms: u64,
    #[serde(flatten)]
    run: RunArgs,
}

/// Pushes of one phase.
#[derive(Debug, Serialize)]
struct PhasePushes {
    pushed: u64,
    errors: u64,
    first_error: Option<String>,
    secs: f64,
    rate: f64,
    /// Most a push was sent after its due time.
    max_send_lag_ms: f64,
}

impl PhasePushes {
    fn of(pushes: &Pushes) -> Self {
        Self {
            pushed: pushes.pushed,
            errors: pushes.errors,
            first_error: pushes.first_error.clone(),
            secs: secs(pushes.elapsed),
            rate: pushes.rate(),
            max_send_lag_ms: pushes.max_send_lag_ms(),
        }
    }
}

/// One reading of the server's memory.
#[derive(Clone, Copy, Debug, Serialize)]
struct RssSample {
    /// Seconds since the first phase started.
    t_secs: f64,
    rss_kb: u64,
}

/// The server's resident memory over the run.
#[derive(Debug, Default, Serialize)]
struct RssSeries {
    start_kb: u64,
    peak_kb: u64,
    end_kb: u64,
    /// At most `MAX_RSS_SAMPLES` readings, `--sample-ms` apart.
    samples: Vec<RssSample>,
}

impl RssSeries {
    fn of(samples: Vec<RssSample>, end_kb: u64) -> Self {
        let start_kb = samples.first().map_or(end_kb, |sample| sample.rss_kb);
        let peak_kb = samples.iter().map(|sample| sample.rss_kb).chain([end_kb]).max().unwrap_or(end_kb);
        Self { start_kb, peak_kb, end_kb, samples }
    }
}

/// What the devices outside the stall set saw.
#[derive(Debug, Serialize)]
struct Others {
    devices: usize,
    /// Live-push latency of probes sent in the first phase (nobody stalled).
    before: LatencySummary,
    /// The same in the second phase (the stall set not reading).
    during: LatencySummary,
    /// during / before (`None` without records in either).
    p50_ratio: Option<f64>,
    p99_ratio: Option<f64>,
    /// Catch-up pages they got after being caught up (demotions of non-stalled devices).
    catchup_pages: u64,
    lost: u64,
    duplicates: u64,
}

/// What the stall set did once it read again.
#[derive(Debug, Serialize)]
struct Stalled {
    devices: usize,
    /// Demotions they saw: catch-up pages after being caught up, and catch-ups that followed.
    catchup_pages: u64,
    recatchups: u64,
    /// True when every one of them ended caught up at the head with nothing lost.
    caught_up_without_loss: bool,
    lost: u64,
    duplicates: u64,
    /// Devices whose connection ended before the run did (e.g. closed by the server).
    ended_early: usize,
}

impl Stalled {
    /// Returns what the stall set of `devices` devices did, from the fleet's totals.
    fn of(totals: &FleetTotals, devices: usize) -> Self {
        let stalled_totals = totals.stall_set.as_ref();
        let lost = stalled_totals.map_or(0, |stalled| stalled.missing_seqs + stalled.short_of_target_seqs);
        Stalled {
            devices,
            catchup_pages: stalled_totals.map_or(0, |stalled| stalled.catchup_pages),
            recatchups: stalled_totals.map_or(0, |stalled| stalled.recatchups),
            caught_up_without_loss: stalled_totals.is_some_and(|stalled| stalled.short_of_target == 0) && lost == 0,
            lost,
            duplicates: stalled_totals.map_or(0, |stalled| stalled.duplicate_seqs),
            ended_early: stalled_totals.map_or(0, |stalled| stalled.ended_early),
        }
    }
}

impl Others {
    /// Returns what the devices outside the stall set saw: the fleet's totals less the stall
    /// set's, and their latency by phase.
    fn of(totals: &FleetTotals, shared: &Shared, stalled: &Stalled, devices: usize) -> Self {
        let before = LatencySummary::of(&shared.others_latency[0].lock());
        let during = LatencySummary::of(&shared.others_latency[1].lock());
        Others {
            devices: devices.saturating_sub(stalled.devices),
            p50_ratio: ratio(during.p50_ms, before.p50_ms),
            p99_ratio: ratio(during.p99_ms, before.p99_ms),
            before,
            during,
            catchup_pages: totals.catchup_pages - stalled.catchup_pages,
            lost: (totals.missing_seqs + totals.short_of_target_seqs).saturating_sub(stalled.lost),
            duplicates: totals.duplicate_seqs.saturating_sub(stalled.duplicates),
        }
    }
}

#[derive(Debug, Serialize)]
struct SlowReport {
    scenario: &'static str,
    unix_time: u64,
    params: Params,
    ramp_up: RampUp,
    phase_before: PhasePushes,
    phase_during: PhasePushes,
    /// The head every device must reach at the end.
    head: u64,
    /// End of the stall to every device caught up at the head (`None` if not all were
    /// before the drain ended).
    all_caught_up_secs: Option<f64>,
    others: Others,
    stalled: Stalled,
    /// Live-push latency of every device over both phases.
    latency_all: LatencySummary,
    /// Latency of records that came in catch-up pages (after demotions).
    catchup_latency: LatencySummary,
    /// The server's resident memory (with `--server-pid`).
    rss: Option<RssSeries>,
    /// The server's own demotion counter: not exposed by the server (the devices' catch-up
    /// pages above are what shows them).
    server_demotions: Option<u64>,
    server: Option<ServerWindow>,
    fleet: FleetTotals,
}

/// Returns the number of devices in the stall set: `percent` of `devices`, rounded up.
fn stall_set_size(devices: usize, percent: u8) -> usize {
    (devices * usize::from(percent)).div_ceil(100)
}

/// Returns `during / before`, rounded, when both are above zero.
fn ratio(during: f64, before: f64) -> Option<f64> {
    (before > 0.0 && during > 0.0).then(|| round(during / before, 3))
}

/// Reads the server's memory every `interval` until `stop` changes; returns the readings
/// (times since `started`).
async fn sample_rss(
    server: Process,
    started: Instant,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) -> Vec<RssSample> {
    let mut samples = Vec::new();
    let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(10)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return samples,
        }
        if samples.len() < MAX_RSS_SAMPLES
            && let Ok(memory) = server.memory()
        {
            samples.push(RssSample { t_secs: secs(started.elapsed()), rss_kb: memory.rss_kb });
        }
    }
}

/// Runs `slow`.
pub(crate) async fn run(args: SlowArgs, run_start: Instant, deadline: Instant) -> anyhow::Result<()> {
    anyhow::ensure!(args.rate > 0.0 && args.rate.is_finite(), "--rate must be a finite number > 0");
    let writer = args.ingest.writer().await?;
    let server = args.run.server_pid.map(server_process).transpose()?;
    let (fleet, shared, ramp_up) = ramp_up(&args.fleet, Logins::Password, run_start, deadline).await?;
    let stall_set = stall_set_size(args.fleet.devices, args.stalled_percent);
    fleet.set_stall_set(stall_set);

    let started = Instant::now();
    let (stop_sampling, sampling_stopped) = watch::channel(false);
    let sampler = server.map(|server| {
        tokio::spawn(sample_rss(server, started, Duration::from_millis(args.sample_ms), sampling_stopped))
    });
    let usage = UsageWindow::start(server)?;
    // Both phases push the same amount at the same rate; record ids continue across them.
    let per_phase = (args.rate * args.phase_secs as f64).round() as u64;
    let mut plan = WritePlan {
        source: args.fleet.source.clone(),
        keys: vec![args.fleet.key.clone()],
        changes: per_phase,
        first_index: 0,
        rate: args.rate,
        max_in_flight: args.max_in_flight,
        records: ProbeRecords::ByWrite { pad_bytes: args.pad_bytes },
    };
    let before = push_open_loop(&plan, &shared, writer.clone(), deadline).await;
    shared.phase_split_ns.store(shared.now_ns(), std::sync::atomic::Ordering::SeqCst);
    fleet.stall(true);
    plan.first_index = per_phase;
    let during = push_open_loop(&plan, &shared, writer, deadline).await;
    fleet.stall(false);
    let stall_ended = Instant::now();

    let head = before.max_head.max(during.max_head).max(ramp_up.cursor);
    let at_target_before = fleet.set_target(head);
    let drain_deadline = drain_deadline(args.run.drain_secs, deadline);
    let all_caught_up = shared.at_target.wait_for(at_target_before + ramp_up.caught_up as u64, drain_deadline).await;
    let caught_up_after = stall_ended.elapsed();
    let usage = usage.finish()?;
    let _ = stop_sampling.send(true);
    let samples = match sampler {
        Some(sampler) => sampler.await.unwrap_or_default(),
        None => Vec::new(),
    };
    let rss = match server {
        Some(server) => Some(RssSeries::of(samples, server.memory()?.rss_kb)),
        None => None,
    };

    let totals = fleet.stop(Instant::now() + STOP_GRACE).await;
    let stalled = Stalled::of(&totals, stall_set.min(args.fleet.devices));
    let others = Others::of(&totals, &shared, &stalled, args.fleet.devices);
    let report = SlowReport {
        scenario: "slow",
        unix_time: unix_time_secs(),
        params: Params {
            fleet: args.fleet.params(),
            grpc: args.ingest.grpc.clone(),
            stalled_percent: args.stalled_percent,
            rate: args.rate,
            phase_secs: args.phase_secs,
            max_in_flight: args.max_in_flight,
            pad_bytes: args.pad_bytes,
            sample_ms: args.sample_ms,
            run: args.run.clone(),
        },
        ramp_up,
        phase_before: PhasePushes::of(&before),
        phase_during: PhasePushes::of(&during),
        head,
        all_caught_up_secs: all_caught_up.then(|| round(caught_up_after.as_secs_f64(), 3)),
        others,
        stalled,
        latency_all: LatencySummary::of(&shared.live_latency.lock()),
        catchup_latency: LatencySummary::of(&shared.catchup_latency.lock()),
        rss,
        server_demotions: None,
        server: usage.server,
        fleet: totals,
    };
    print_table(&report);
    write_json(args.run.json_out.as_deref(), &report)
}

fn print_table(report: &SlowReport) {
    let mb = |kb: u64| kb as f64 / 1024.0;
    let ratio = |ratio: Option<f64>| ratio.map_or_else(|| "-".to_owned(), |ratio| format!("x{ratio:.2}"));
    let mut table = Table::new(format!(
        "slow: {} devices, {}% stalled, {}/s for 2 x {} s",
        report.params.fleet.devices, report.params.stalled_percent, report.params.rate, report.params.phase_secs
    ));
    report.ramp_up.add_rows(&mut table);
    let pushes = |phase: &PhasePushes| {
        format!(
            "{} ok, {} failed, {:.1}/s (sent at most {:.1} ms late)",
            phase.pushed, phase.errors, phase.rate, phase.max_send_lag_ms
        )
    };
    let all_caught_up = match report.all_caught_up_secs {
        Some(secs) => format!("{secs:.3} s after the stall"),
        None => "not before the drain ended".to_owned(),
    };
    table
        .row("pushed before / during", format!("{} / {}", pushes(&report.phase_before), pushes(&report.phase_during)))
        .row("others before p50/p90/p99/max", report.others.before.line())
        .row("others during p50/p90/p99/max", report.others.during.line())
        .row(
            "others p50 / p99 ratio",
            format!("{} / {}", ratio(report.others.p50_ratio), ratio(report.others.p99_ratio)),
        )
        .row(
            "others demoted / lost / dup",
            format!("{} pages / {} / {}", report.others.catchup_pages, report.others.lost, report.others.duplicates),
        )
        .row(
            "stalled demotions",
            format!("{} catch-up pages, {} re-catch-ups", report.stalled.catchup_pages, report.stalled.recatchups),
        )
        .row(
            "stalled lost / dup / ended",
            format!("{} / {} / {}", report.stalled.lost, report.stalled.duplicates, report.stalled.ended_early),
        )
        .row("stalled caught up, no loss", report.stalled.caught_up_without_loss)
        .row("all at head", all_caught_up);
    if let Some(rss) = &report.rss {
        table.row(
            "server RSS start / peak / end",
            format!(
                "{:.1} / {:.1} / {:.1} MB ({} samples)",
                mb(rss.start_kb),
                mb(rss.peak_kb),
                mb(rss.end_kb),
                rss.samples.len()
            ),
        );
    }
    report.fleet.add_error_row(&mut table);
    for phase in [&report.phase_before, &report.phase_during] {
        if let Some(error) = &phase.first_error {
            table.row("first push error", error);
        }
    }
    table.print();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stall_set_rounds_up_and_ratios_need_both_phases() {
        assert_eq!(stall_set_size(1000, 10), 100);
        assert_eq!(stall_set_size(20, 10), 2);
        assert_eq!(stall_set_size(5, 10), 1);
        assert_eq!(stall_set_size(5, 0), 0);
        assert_eq!(stall_set_size(7, 100), 7);
        assert_eq!(ratio(12.0, 10.0), Some(1.2));
        assert_eq!(ratio(12.0, 0.0), None);
        assert_eq!(ratio(0.0, 10.0), None);
    }

    #[test]
    fn rss_series_keep_start_peak_and_end() {
        let samples =
            [(0.0, 100), (0.25, 300), (0.5, 200)].map(|(t_secs, rss_kb)| RssSample { t_secs, rss_kb }).to_vec();
        let series = RssSeries::of(samples, 150);
        assert_eq!((series.start_kb, series.peak_kb, series.end_kb), (100, 300, 150));
        let empty = RssSeries::of(Vec::new(), 150);
        assert_eq!((empty.start_kb, empty.peak_kb, empty.end_kb), (150, 150, 150));
    }
}
