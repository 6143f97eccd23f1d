//! `syncline-sim initial-sync`: how fast one device syncs a whole partition from nothing.
//!
//! One password login, then per repetition a fresh connection (session token) subscribes
//! from cursor 0 with the given page size and window, applies every page to an id → version
//! map, acks each page as soon as it is applied, and stops the clock at `SyncState
//! caught_up`. The map is checked against the caught-up state's total and checksum, so a
//! fast run that lost records does not pass as fast.
//!
//! With `--bulk` each sync asks for the partition as a bulk file instead (BulkRequest),
//! downloads it over HTTP, checks it (the device library's `bulk::scan_file`: ids and
//! versions against the file's checksum; with `--parse-fields`, `bulk::load_file`), then
//! subscribes from the file's sequence and pages through what changed since: the clock runs
//! from the BulkRequest to `caught_up`, so the numbers compare with the paged run's; the
//! report splits the file's part into BulkReady, download and check. The socket is read
//! meanwhile (the server's pings are answered), and checks run off the runtime on blocking
//! threads, `bulk::CONCURRENT_CHECKS` at a time. `--devices N` runs N such syncs at once
//! per repetition (the server's CPU and peak RSS show what a fleet of new devices costs it).

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
    /// Syncs through a bulk file (then the log) instead of snapshot pages.
    #[arg(long)]
    bulk: bool,
    /// With `--bulk`: reads every record's fields too (as the device library's in-memory
    /// replica does), instead of only ids and versions (a device that keeps the file as its
    /// local store).
    #[arg(long, requires = "bulk")]
    parse_fields: bool,
    /// Devices syncing at once in each repetition.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    devices: u32,
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
    bulk: bool,
    parse_fields: bool,
    devices: u32,
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
    /// The server's peak resident memory after the sync, when `--server-pid` is given.
    server_peak_rss_mb: Option<f64>,
    /// The most resident memory the server had while the sync ran (sampled every 50 ms).
    server_rss_during_mb: Option<f64>,
    /// The simulator's own CPU time (utime + stime) during the sync.
    sim_cpu_secs: Option<f64>,
    /// With `--bulk`: BulkRequest sent to the file read and checked (of the slowest device).
    bulk_file_secs: Option<f64>,
    /// With `--bulk`: the file's size.
    bulk_file_bytes: Option<u64>,
    /// With `--bulk`: BulkRequest sent to BulkReady (the server wrote or reused the file),
    /// the download, and the file's check (of the slowest device each).
    bulk_ready_secs: Option<f64>,
    bulk_download_secs: Option<f64>,
    bulk_check_secs: Option<f64>,
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
        let sim_cpu_before = Process::Current.cpu_time()?;
        let syncs = sync_devices(&args, &welcome.session_token);
        let (run, rss_during) = tokio::time::timeout_at(deadline, sampling_rss(server, syncs))
            .await
            .context("the syncs overran --max-secs")??;
        let server_cpu = match (server, cpu_before) {
            (Some(server), Some(before)) => Some(secs(server.cpu_time()?.saturating_sub(before))),
            _ => None,
        };
        let peak_rss =
            server.map(Process::memory).transpose()?.map(|memory| round(memory.peak_rss_kb as f64 / 1024.0, 1));
        runs.push(SyncRun {
            server_cpu_secs: server_cpu,
            server_peak_rss_mb: peak_rss,
            server_rss_during_mb: rss_during.map(|kb| round(kb as f64 / 1024.0, 1)),
            sim_cpu_secs: Some(secs(Process::Current.cpu_time()?.saturating_sub(sim_cpu_before))),
            ..run
        });
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
            bulk: args.bulk,
            parse_fields: args.parse_fields,
            devices: args.devices,
            server_pid: args.server_pid,
            max_secs: args.max_secs,
        },
        runs,
    };
    print_table(&report);
    write_json(args.json_out.as_deref(), &report)
}

/// How often the server's resident memory is read while syncs run.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// Runs `syncs` while reading the server's resident memory (when its PID is known); returns
/// their outcome and the most resident memory seen, in KiB. The server's `VmHWM` keeps its
/// peak since it started (the demo's import included), so the run's own peak is sampled.
async fn sampling_rss(
    server: Option<Process>,
    syncs: impl std::future::Future<Output = anyhow::Result<SyncRun>>,
) -> anyhow::Result<(SyncRun, Option<u64>)> {
    tokio::pin!(syncs);
    let mut most = None;
    let mut every = tokio::time::interval(RSS_SAMPLE_EVERY);
    loop {
        tokio::select! {
            run = &mut syncs => return Ok((run?, most)),
            _ = every.tick(), if server.is_some() => {
                if let Some(server) = server {
                    let rss = server.memory()?.rss_kb;
                    most = Some(most.map_or(rss, |most: u64| most.max(rss)));
                }
            }
        }
    }
}

/// A device's copy of the partition, enough to verify count and checksum: id → version
/// of what pages brought, or a checked bulk file kept as the device's store (RhoConnect's
/// model) with the changes the log brought after it.
#[derive(Debug, Default)]
struct Held {
    versions: HashMap<String, u64>,
    file: Option<bulk::FileStore>,
    cursor: u64,
}

impl Held {
    fn apply(&mut self, changes: &Changes) -> anyhow::Result<()> {
        if changes.reset {
            // A snapshot replaces everything, a file too.
            self.file = None;
            self.versions.clear();
        }
        match &mut self.file {
            Some(file) => {
                for id in &changes.deletes {
                    file.delete(id)?;
                }
                for record in &changes.upserts {
                    file.upsert(&record.id, record.version)?;
                }
            }
            None => {
                for id in &changes.deletes {
                    self.versions.remove(id);
                }
                for record in &changes.upserts {
                    self.versions.insert(record.id.clone(), record.version);
                }
            }
        }
        if !changes.snapshot || changes.snapshot_done {
            self.cursor = changes.to;
        }
        Ok(())
    }

    /// Returns the record count and checksum of what the device holds.
    fn summary(&self) -> (u64, u64) {
        if let Some(file) = &self.file {
            return file.summary();
        }
        let mut checksum = Checksum::default();
        for (id, version) in &self.versions {
            checksum.add(id, *version);
        }
        (self.versions.len() as u64, checksum.0)
    }
}

/// Runs `--devices` syncs at once: one run whose time is the slowest's, whose records are
/// all of theirs, verified when each is.
async fn sync_devices(args: &InitialSyncArgs, token: &str) -> anyhow::Result<SyncRun> {
    let started = Instant::now();
    let checks = tokio::sync::Semaphore::new(bulk::CONCURRENT_CHECKS);
    let syncs = (0..args.devices).map(|device| sync_once(args, token, device, &checks));
    let runs = futures_util::future::try_join_all(syncs).await?;
    let elapsed = started.elapsed();
    let records: u64 = runs.iter().map(|run| run.records).sum();
    let slowest = |part: fn(&SyncRun) -> Option<f64>| {
        runs.iter().filter_map(part).fold(None, |max: Option<f64>, secs| Some(max.map_or(secs, |max| max.max(secs))))
    };
    Ok(SyncRun {
        secs: secs(elapsed),
        records,
        pages: runs.iter().map(|run| run.pages).sum(),
        records_per_sec: round(records as f64 / elapsed.as_secs_f64().max(f64::EPSILON), 0),
        first_page_ms: runs.iter().map(|run| run.first_page_ms).fold(f64::INFINITY, f64::min),
        cursor: runs.iter().map(|run| run.cursor).max().unwrap_or_default(),
        verified: runs.iter().all(|run| run.verified),
        server_cpu_secs: None,
        server_peak_rss_mb: None,
        server_rss_during_mb: None,
        sim_cpu_secs: None,
        bulk_file_secs: slowest(|run| run.bulk_file_secs),
        bulk_file_bytes: runs.iter().find_map(|run| run.bulk_file_bytes),
        bulk_ready_secs: slowest(|run| run.bulk_ready_secs),
        bulk_download_secs: slowest(|run| run.bulk_download_secs),
        bulk_check_secs: slowest(|run| run.bulk_check_secs),
    })
}

async fn sync_once(
    args: &InitialSyncArgs,
    token: &str,
    device: u32,
    checks: &tokio::sync::Semaphore,
) -> anyhow::Result<SyncRun> {
    let (mut connection, _) = resume(&args.url, None, token).await?;
    let started = Instant::now();
    let mut held = Held::default();
    let mut bulk_file = None;
    if args.bulk {
        let fetched = bulk::fetch(&mut connection, args, device, &mut held, checks).await?;
        bulk_file = Some((secs(started.elapsed()), fetched));
    }
    let subscribe = Subscribe {
        source: args.source.clone(),
        key: args.key.clone(),
        cursor: held.cursor,
        page_size: args.page_size,
        window: args.window,
    };
    connection.send(&ClientFrame { msg: Some(client_frame::Msg::Subscribe(subscribe)) }).await?;
    let mut records = held.file.as_ref().map_or(held.versions.len() as u64, |file| file.summary().0);
    let mut pages = 0;
    let mut first_page = None;
    let caught_up = loop {
        match next_frame(&mut connection).await? {
            server_frame::Msg::Changes(changes) => {
                first_page.get_or_insert_with(|| started.elapsed());
                held.apply(&changes)?;
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
    let verified = held.cursor == caught_up.cursor && held.summary() == (caught_up.total, caught_up.checksum);
    Ok(SyncRun {
        secs: secs(elapsed),
        records,
        pages,
        records_per_sec: round(records as f64 / elapsed.as_secs_f64().max(f64::EPSILON), 0),
        first_page_ms: round(first_page.unwrap_or_default().as_secs_f64() * 1e3, 2),
        cursor: caught_up.cursor,
        verified,
        server_cpu_secs: None,
        server_peak_rss_mb: None,
        server_rss_during_mb: None,
        sim_cpu_secs: None,
        bulk_file_secs: bulk_file.map(|(secs, _)| secs),
        bulk_file_bytes: bulk_file.map(|(_, fetched)| fetched.bytes),
        bulk_ready_secs: bulk_file.map(|(_, fetched)| secs(fetched.ready)),
        bulk_download_secs: bulk_file.map(|(_, fetched)| secs(fetched.download)),
        bulk_check_secs: bulk_file.map(|(_, fetched)| secs(fetched.check)),
    })
}

/// The bulk part of a `--bulk` sync.
mod bulk {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use anyhow::{Context as _, bail};
    use rusqlite::OptionalExtension as _;
    use syncline_client_sim::bulk::{CheckedFile, download_file, load_file, resolve_url, scan_file};
    use syncline_client_sim::{Connection, Incoming, PartitionId};
    use syncline_proto::checksum::Checksum;
    use syncline_proto::v1::{BulkRequest, ClientFrame, client_frame, server_frame};
    use tokio::sync::Semaphore;
    use tokio::time::Instant;

    use super::{Held, InitialSyncArgs, next_frame};

    /// Files checked at once. The simulator runs on one core: more checks at once only
    /// share it (and keep more downloaded files on disk while they wait their turn).
    pub(super) const CONCURRENT_CHECKS: usize = 2;

    /// What a fetch took, part by part.
    #[derive(Clone, Copy, Debug)]
    pub(super) struct Fetched {
        /// The file's size.
        pub(super) bytes: u64,
        /// BulkRequest sent to BulkReady received (the server wrote or reused the file).
        pub(super) ready: Duration,
        /// BulkReady to the whole file on disk.
        pub(super) download: Duration,
        /// The file's records read and checked (after waiting for a turn).
        pub(super) check: Duration,
    }

    /// Asks for the partition's file, downloads, checks and reads it into `held` (at the
    /// file's sequence); `checks` bounds the files checked at once.
    pub(super) async fn fetch(
        connection: &mut Connection,
        args: &InitialSyncArgs,
        device: u32,
        held: &mut Held,
        checks: &Semaphore,
    ) -> anyhow::Result<Fetched> {
        let started = Instant::now();
        let request_id = format!("initial-sync-{device}");
        let request =
            BulkRequest { request_id: request_id.clone(), sources: vec![args.source.clone()], min_records: 0 };
        connection.send(&ClientFrame { msg: Some(client_frame::Msg::BulkRequest(request)) }).await?;
        let ready = loop {
            match next_frame(connection).await? {
                server_frame::Msg::BulkReady(ready) if ready.request_id == request_id => break ready,
                server_frame::Msg::Error(error) => bail!("the server refused: {} ({})", error.message, error.code),
                _ => {}
            }
        };
        let ready_after = started.elapsed();
        if let Some(error) = ready.error {
            bail!("the bulk request failed: {} ({})", error.message, error.code);
        }
        let file = ready.files.into_iter().next().context("BulkReady names no file")?;
        let path =
            TempFile(std::env::temp_dir().join(format!("syncline-sim-bulk-{}-{device}.sqlite", std::process::id())));
        let _ = std::fs::remove_file(&path.0);
        let url = resolve_url(&args.url, &file.url);
        let partition = PartitionId::new(&file.source, &file.key);
        let parse_fields = args.parse_fields;
        let work = async {
            let client = reqwest::Client::new();
            download_file(&client, &url, &file.token, &path.0, file.bytes, |_| {}).await?;
            let downloaded = Instant::now();
            let _turn = checks.acquire().await?;
            let (path, file) = (path.0.clone(), file.clone());
            let checked = tokio::task::spawn_blocking(move || check(&path, &partition, &file, parse_fields)).await??;
            anyhow::Ok((checked, downloaded))
        };
        let (checked, downloaded) = answering_pings(connection, work).await?;
        held.cursor = checked.sequence;
        held.file = Some(FileStore::open(path, checked)?);
        Ok(Fetched {
            bytes: file.bytes,
            ready: ready_after,
            download: downloaded.duration_since(started).saturating_sub(ready_after),
            check: downloaded.elapsed(),
        })
    }

    /// Checks a downloaded file: its ids and versions read against its checksum and count
    /// (from the file's `(id, version)` index), or with `parse_fields` every record read
    /// with its fields into the device library's in-memory replica, then dropped.
    fn check(
        path: &Path,
        partition: &PartitionId,
        file: &syncline_proto::v1::BulkFile,
        parse_fields: bool,
    ) -> anyhow::Result<CheckedFile> {
        if parse_fields {
            let view = load_file(path, partition, file)?;
            return Ok(CheckedFile { sequence: view.cursor, record_count: view.total, checksum: view.checksum });
        }
        Ok(scan_file(path, partition, file, false, |_, _, _| Ok(()))?)
    }

    /// A file the simulator wrote, deleted when dropped.
    #[derive(Debug)]
    struct TempFile(PathBuf);

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// A checked bulk file kept as the device's store: changes after it are applied to the
    /// count and checksum, the version they replace looked up in the file (or among the
    /// changes before them), as a device that updates its file would.
    #[derive(Debug)]
    pub(super) struct FileStore {
        connection: rusqlite::Connection,
        /// Versions the log changed after the file (`None`: deleted).
        changed: HashMap<String, Option<u64>>,
        count: u64,
        checksum: Checksum,
        /// Declared last: the file is deleted after the connection is closed.
        _file: TempFile,
    }

    impl FileStore {
        fn open(file: TempFile, checked: CheckedFile) -> anyhow::Result<Self> {
            let connection =
                rusqlite::Connection::open_with_flags(&file.0, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            Ok(Self {
                connection,
                changed: HashMap::new(),
                count: checked.record_count,
                checksum: Checksum(checked.checksum),
                _file: file,
            })
        }

        /// Returns the record count and checksum of the file with the changes after it.
        pub(super) fn summary(&self) -> (u64, u64) {
            (self.count, self.checksum.0)
        }

        pub(super) fn upsert(&mut self, id: &str, version: u64) -> anyhow::Result<()> {
            self.delete(id)?;
            self.checksum.add(id, version);
            self.count += 1;
            self.changed.insert(id.to_owned(), Some(version));
            Ok(())
        }

        pub(super) fn delete(&mut self, id: &str) -> anyhow::Result<()> {
            if let Some(version) = self.version_of(id)? {
                self.checksum.remove(id, version);
                self.count -= 1;
            }
            self.changed.insert(id.to_owned(), None);
            Ok(())
        }

        fn version_of(&self, id: &str) -> anyhow::Result<Option<u64>> {
            if let Some(version) = self.changed.get(id) {
                return Ok(*version);
            }
            let version: Option<i64> = self
                .connection
                .prepare_cached("SELECT version FROM records WHERE id = ?1")?
                .query_row([id], |row| row.get(0))
                .optional()?;
            Ok(version.map(|version| version as u64))
        }
    }

    /// Runs `work` while reading `connection`: the WebSocket layer answers the server's
    /// pings only while the socket is read, and a socket left unread for the server's idle
    /// timeout is closed (a fleet of devices downloading and checking large files on one
    /// core takes longer than that). Nothing is subscribed yet, so no frame is expected.
    async fn answering_pings<T>(
        connection: &mut Connection,
        work: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return done,
                incoming = connection.recv() => match incoming? {
                    Incoming::Frame(_) => {}
                    Incoming::Closed { code, reason } => {
                        bail!("closed by the server while the file was fetched: {code} {reason}")
                    }
                },
            }
        }
    }
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
    let how = match (report.params.bulk, report.params.parse_fields) {
        (true, true) => "bulk file (fields parsed), then the log",
        (true, false) => "bulk file (ids and versions read), then the log",
        (false, _) => "pages",
    };
    let mut table = Table::new(format!(
        "initial-sync: {} from cursor 0 by {how}, page size {}, window {}, {} device(s), {} run(s)",
        report.params.source,
        report.params.page_size,
        report.params.window,
        report.params.devices,
        report.params.repeat
    ));
    for (index, run) in report.runs.iter().enumerate() {
        let cpu = run.server_cpu_secs.map(|cpu| format!(", server CPU {cpu:.2} s")).unwrap_or_default();
        let rss = run.server_peak_rss_mb.map(|rss| format!(", server peak RSS {rss:.0} MB")).unwrap_or_default();
        let rss_during = run
            .server_rss_during_mb
            .map(|rss| format!(", server RSS during the run at most {rss:.0} MB"))
            .unwrap_or_default();
        let sim_cpu = run.sim_cpu_secs.map(|cpu| format!(", simulator CPU {cpu:.2} s")).unwrap_or_default();
        let file = match (run.bulk_file_secs, run.bulk_file_bytes) {
            (Some(secs), Some(bytes)) => format!(
                ", file of {bytes} bytes ready and read after {secs:.3} s (BulkReady {:.3} s, download {:.3} s, \
                 check {:.3} s)",
                run.bulk_ready_secs.unwrap_or_default(),
                run.bulk_download_secs.unwrap_or_default(),
                run.bulk_check_secs.unwrap_or_default()
            ),
            _ => String::new(),
        };
        table.row(
            format!("run {}", index + 1),
            format!(
                "{} records in {} pages, {:.3} s, {:.0} records/s, first page {:.1} ms, {}{file}{cpu}{rss}{rss_during}{sim_cpu}",
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
