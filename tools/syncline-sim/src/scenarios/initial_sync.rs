//! `syncline-sim initial-sync`: how fast one device syncs a whole partition from nothing.
//!
//! One password login, then per repetition a fresh connection (session token) subscribes
//! from cursor 0 with the given page size and window, applies every page to an id → version
//! map, acks each page as soon as it is applied, and stops the clock at `SyncState
//! caught_up`. The map is checked against the caught-up state's total and checksum, so a
//! fast run that lost records does not pass as fast.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use syncline_client_sim::{Connection, Incoming};
use syncline_procfs::Process;
use syncline_proto::{
    checksum::Checksum,
    v1::{Changes, ClientFrame, ServerFrame, Subscribe, SyncStatus, client_frame, server_frame},
};
use tokio::time::Instant;

use crate::{
    fleet::{ack_frame, login, resume},
    loopback::check_url,
    report::{Table, round, secs, unix_time_secs, write_json},
};

/// Default time for all repetitions together.
const DEFAULT_MAX_SECS: u64 = 300;
/// Most repetitions: enough for a median, few enough to stay a quick scenario.
const MAX_REPEAT: u32 = 100;

/// Arguments of `initial-sync`.
#[derive(Debug, Args)]
pub(crate) struct InitialSyncArgs {
    /// The device endpoint; loopback addresses only.
    #[arg(long, default_value = "ws://127.0.0.1:7700/v1/sync")]
    url: String,
    /// Login name.
    #[arg(long, default_value = "demo")]
    user: String,
    /// Password of `--user`.
    #[arg(long, env = "SYNCLINE_PASSWORD", hide_env_values = true, default_value = "demo")]
    password: String,
    /// Source to sync.
    #[arg(long, default_value = "Account")]
    source: String,
    /// Partition key (default: the natural key).
    #[arg(long, default_value = "")]
    key: String,
    /// Records or changes per page (0: the server's default).
    #[arg(long, default_value_t = 500)]
    page_size: u32,
    /// Pages in flight before an ack (at least 1: this device never pulls).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    window: u32,
    /// Syncs to run; the report gives each and the median.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_REPEAT)))]
    repeat: u32,
    /// The server's PID, for its CPU time per sync from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Hard limit on the whole run, in seconds.
    #[arg(long, default_value_t = DEFAULT_MAX_SECS)]
    max_secs: u64,
    /// Writes the report as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Params {
    url: String,
    source: String,
    key: String,
    page_size: u32,
    window: u32,
    repeat: u32,
    server_pid: Option<u32>,
    max_secs: u64,
}

/// One sync from cursor 0.
#[derive(Debug, Serialize)]
struct SyncRun {
    /// Subscribe sent to `caught_up` received.
    secs: f64,
    records: u64,
    pages: u64,
    records_per_sec: f64,
    /// Subscribe sent to the first page received.
    first_page_ms: f64,
    /// The caught-up cursor.
    cursor: u64,
    /// Record count and checksum match the caught-up state.
    verified: bool,
    /// Server CPU (utime + stime) during the sync, when `--server-pid` is given.
    server_cpu_secs: Option<f64>,
}

#[derive(Debug, Serialize)]
struct InitialSyncReport {
    scenario: &'static str,
    unix_time: u64,
    params: Params,
    runs: Vec<SyncRun>,
    median_secs: f64,
    median_records_per_sec: f64,
    min_records_per_sec: f64,
    max_records_per_sec: f64,
}

/// Runs `initial-sync`.
pub(crate) async fn run(args: InitialSyncArgs) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    check_url(&args.url, &["ws"]).await?;
    let server = args.server_pid.map(Process::Pid);
    let (mut first, welcome) = tokio::time::timeout_at(deadline, login(&args.url, &args.user, &args.password))
        .await
        .context("timed out logging in")??;
    let _ = first.close(1000, "token obtained").await;
    let mut runs = Vec::new();
    for _ in 0..args.repeat {
        let cpu_before = server.map(Process::cpu_time).transpose()?;
        let run = tokio::time::timeout_at(deadline, sync_once(&args, &welcome.session_token))
            .await
            .context("the syncs overran --max-secs")??;
        let server_cpu = match (server, cpu_before) {
            (Some(server), Some(before)) => Some(secs(server.cpu_time()?.saturating_sub(before))),
            _ => None,
        };
        runs.push(SyncRun { server_cpu_secs: server_cpu, ..run });
    }
    let report = InitialSyncReport {
        scenario: "initial-sync",
        unix_time: unix_time_secs(),
        median_secs: median(runs.iter().map(|run| run.secs)),
        median_records_per_sec: round(median(runs.iter().map(|run| run.records_per_sec)), 0),
        min_records_per_sec: runs.iter().map(|run| run.records_per_sec).fold(f64::INFINITY, f64::min),
        max_records_per_sec: runs.iter().map(|run| run.records_per_sec).fold(0.0, f64::max),
        params: Params {
            url: args.url.clone(),
            source: args.source.clone(),
            key: args.key.clone(),
            page_size: args.page_size,
            window: args.window,
            repeat: args.repeat,
            server_pid: args.server_pid,
            max_secs: args.max_secs,
        },
        runs,
    };
    print_table(&report);
    write_json(args.json_out.as_deref(), &report)
}

/// A device's copy of the partition: id → version, enough to verify count and checksum.
#[derive(Debug, Default)]
struct Held {
    versions: HashMap<String, u64>,
    cursor: u64,
}

impl Held {
    fn apply(&mut self, changes: &Changes) {
        if changes.reset {
            self.versions.clear();
        }
        for id in &changes.deletes {
            self.versions.remove(id);
        }
        for record in &changes.upserts {
            self.versions.insert(record.id.clone(), record.version);
        }
        if !changes.snapshot || changes.snapshot_done {
            self.cursor = changes.to;
        }
    }

    fn checksum(&self) -> u64 {
        let mut checksum = Checksum::default();
        for (id, version) in &self.versions {
            checksum.add(id, *version);
        }
        checksum.0
    }
}

async fn sync_once(args: &InitialSyncArgs, token: &str) -> anyhow::Result<SyncRun> {
    let (mut connection, _) = resume(&args.url, None, token).await?;
    let subscribe = Subscribe {
        source: args.source.clone(),
        key: args.key.clone(),
        cursor: 0,
        page_size: args.page_size,
        window: args.window,
    };
    let started = Instant::now();
    connection.send(&ClientFrame { msg: Some(client_frame::Msg::Subscribe(subscribe)) }).await?;
    let mut held = Held::default();
    let mut records = 0;
    let mut pages = 0;
    let mut first_page = None;
    let caught_up = loop {
        match next_frame(&mut connection).await? {
            server_frame::Msg::Changes(changes) => {
                first_page.get_or_insert_with(|| started.elapsed());
                held.apply(&changes);
                records += changes.upserts.len() as u64;
                pages += 1;
                if changes.page > 0 {
                    connection.send(&ack_frame(&changes.source, &changes.key, held.cursor, changes.page)).await?;
                }
            }
            server_frame::Msg::SyncState(state) => match SyncStatus::try_from(state.status) {
                Ok(SyncStatus::CaughtUp) => break state,
                Ok(SyncStatus::Error) => bail!("the sync failed: {:?}", state.error),
                Ok(
                    SyncStatus::InProgress | SyncStatus::Reset | SyncStatus::SchemaChanged | SyncStatus::Unspecified,
                )
                | Err(_) => {}
            },
            server_frame::Msg::Error(error) => bail!("the server refused: {} ({})", error.message, error.code),
            _ => {}
        }
    };
    let elapsed = started.elapsed();
    let _ = connection.close(1000, "synced").await;
    let verified = held.cursor == caught_up.cursor
        && held.versions.len() as u64 == caught_up.total
        && held.checksum() == caught_up.checksum;
    Ok(SyncRun {
        secs: secs(elapsed),
        records,
        pages,
        records_per_sec: round(records as f64 / elapsed.as_secs_f64().max(f64::EPSILON), 0),
        first_page_ms: round(first_page.unwrap_or_default().as_secs_f64() * 1e3, 2),
        cursor: caught_up.cursor,
        verified,
        server_cpu_secs: None,
    })
}

async fn next_frame(connection: &mut Connection) -> anyhow::Result<server_frame::Msg> {
    loop {
        match connection.recv().await? {
            Incoming::Frame(ServerFrame { msg: Some(msg) }) => return Ok(msg),
            Incoming::Frame(ServerFrame { msg: None }) => {}
            Incoming::Closed { code, reason } => bail!("closed by the server: {code} {reason}"),
        }
    }
}

/// Returns the median (the mean of the middle two for an even count; 0 when empty).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        len if len % 2 == 1 => values[len / 2],
        len => (values[len / 2 - 1] + values[len / 2]) / 2.0,
    }
}

fn print_table(report: &InitialSyncReport) {
    let mut table = Table::new(format!(
        "initial-sync: {} from cursor 0, page size {}, window {}, {} run(s)",
        report.params.source, report.params.page_size, report.params.window, report.params.repeat
    ));
    for (index, run) in report.runs.iter().enumerate() {
        let cpu = run.server_cpu_secs.map(|cpu| format!(", server CPU {cpu:.2} s")).unwrap_or_default();
        table.row(
            format!("run {}", index + 1),
            format!(
                "{} records in {} pages, {:.3} s, {:.0} records/s, first page {:.1} ms, {}{cpu}",
                run.records,
                run.pages,
                run.secs,
                run.records_per_sec,
                run.first_page_ms,
                if run.verified { "verified" } else { "NOT VERIFIED" }
            ),
        );
    }
    table.row(
        "median",
        format!(
            "{:.3} s, {:.0} records/s (min {:.0}, max {:.0})",
            report.median_secs, report.median_records_per_sec, report.min_records_per_sec, report.max_records_per_sec
        ),
    );
    table.print();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0].into_iter()), 2.5);
        assert_eq!(median(std::iter::empty()), 0.0);
    }
}
