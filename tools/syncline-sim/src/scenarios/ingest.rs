//! `ingest`: how many records per second a server commits through `Ingest/Push`, at a given
//! batch size (records per call), with no device connected: what a backend importing or
//! streaming its changes gets, on whichever store the server runs (embedded or Redis).
//!
//! `--in-flight` callers each push their next batch as soon as the last one is answered
//! (closed loop), all to one partition, until `--records` are committed or `--max-secs`
//! passes. The report gives records/s, calls/s, the call latency and the server's CPU per
//! record.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use syncline_proto::v1::{PushRequest, Record, Value, ingest_client::IngestClient, value};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::metadata::MetadataValue;

use crate::push_driver::{IngestArgs, connect_grpc};
use crate::report::{LatencySummary, Table, latency_histogram, secs, unix_time_secs, write_json};
use crate::usage::{UsageWindow, cpu_us_per, server_process};

/// Most records one call may carry (Ingest's own limit, ingest.proto).
const MAX_BATCH: u32 = 10_000;

#[derive(Debug, clap::Args)]
pub(crate) struct IngestScenarioArgs {
    #[command(flatten)]
    ingest: IngestArgs,
    /// Source to push to (an `ingest`-captured or channel-less source of the server).
    #[arg(long, default_value = "Account")]
    source: String,
    /// Partition key (`*` for app sources).
    #[arg(long, default_value = "*")]
    key: String,
    /// Records per call.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_BATCH)))]
    batch: u32,
    /// Records to commit in all.
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Calls in flight at once (each caller waits for its answer before the next call).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    in_flight: u32,
    /// Bytes of filler per record (a string field), besides its id and number.
    #[arg(long, default_value_t = 64)]
    pad_bytes: usize,
    /// The server's PID, for its CPU time and memory from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Hard limit on the run, in seconds.
    #[arg(long, default_value_t = 300)]
    max_secs: u64,
    /// Writes the report as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Report {
    scenario: &'static str,
    unix_time: u64,
    grpc: String,
    source: String,
    key: String,
    batch: u32,
    in_flight: u32,
    pad_bytes: usize,
    records: u64,
    calls: u64,
    seconds: f64,
    records_per_sec: f64,
    calls_per_sec: f64,
    call_latency: LatencySummary,
    server_cpu_secs: Option<f64>,
    server_cpu_us_per_record: Option<f64>,
    server_rss_mb_after: Option<f64>,
}

/// What the callers share: the next record number to hand out and the call latencies.
struct Progress {
    next: AtomicU64,
    total: u64,
    latencies: Mutex<Histogram<u64>>,
}

pub(crate) async fn run(args: IngestScenarioArgs) -> anyhow::Result<()> {
    crate::loopback::check_url(&args.ingest.grpc, &["http"]).await?;
    let channel = connect_grpc(&args.ingest.grpc).await?;
    let authorization = match &args.ingest.ingest_token {
        Some(token) => Some(MetadataValue::try_from(format!("Bearer {token}")).context("the ingest token")?),
        None => None,
    };
    let server = args.server_pid.map(server_process).transpose()?;
    let progress =
        Arc::new(Progress { next: AtomicU64::new(0), total: args.records, latencies: Mutex::new(latency_histogram()) });
    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    let usage = UsageWindow::start(server)?;
    let started = Instant::now();
    let mut callers = JoinSet::new();
    for _ in 0..args.in_flight {
        let client = IngestClient::new(channel.clone());
        let (progress, authorization) = (progress.clone(), authorization.clone());
        let (source, key, batch, pad) = (args.source.clone(), args.key.clone(), u64::from(args.batch), args.pad_bytes);
        callers.spawn(async move {
            let mut client = client;
            let mut calls = 0u64;
            loop {
                let first = progress.next.fetch_add(batch, Ordering::Relaxed);
                if first >= progress.total || Instant::now() >= deadline {
                    return Ok::<u64, anyhow::Error>(calls);
                }
                let last = (first + batch).min(progress.total);
                let upserts = (first..last).map(|n| record(n, pad)).collect();
                let mut request = tonic::Request::new(PushRequest {
                    source: source.clone(),
                    key: key.clone(),
                    upserts,
                    deletes: vec![],
                });
                if let Some(authorization) = &authorization {
                    request.metadata_mut().insert("authorization", authorization.clone());
                }
                let sent = Instant::now();
                client.push(request).await.context("Ingest/Push")?;
                let nanos = u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX);
                let _ = progress.latencies.lock().record(nanos.max(1));
                calls += 1;
            }
        });
    }
    let mut calls = 0;
    while let Some(caller) = callers.join_next().await {
        calls += caller.context("a caller task failed")??;
    }
    let elapsed = started.elapsed();
    let window = usage.finish()?;
    let committed = progress.next.load(Ordering::Relaxed).min(progress.total);
    if Instant::now() >= deadline && committed < progress.total {
        bail!("--max-secs passed after {committed} of {} records", progress.total);
    }
    let call_latency = LatencySummary::of(&progress.latencies.lock());
    let seconds = secs(elapsed);
    let report = Report {
        scenario: "ingest",
        unix_time: unix_time_secs(),
        grpc: args.ingest.grpc.clone(),
        source: args.source.clone(),
        key: args.key.clone(),
        batch: args.batch,
        in_flight: args.in_flight,
        pad_bytes: args.pad_bytes,
        records: committed,
        calls,
        seconds,
        records_per_sec: crate::report::round(committed as f64 / elapsed.as_secs_f64().max(f64::EPSILON), 0),
        calls_per_sec: crate::report::round(calls as f64 / elapsed.as_secs_f64().max(f64::EPSILON), 1),
        call_latency,
        server_cpu_secs: window.server.as_ref().map(|server| server.cpu_secs),
        server_cpu_us_per_record: window.server.as_ref().map(|server| cpu_us_per(server.cpu, committed)),
        server_rss_mb_after: window.server.as_ref().map(|server| server.memory_after.rss_kb as f64 / 1024.0),
    };
    let mut table =
        Table::new(format!("ingest: {committed} records, batch {}, {} in flight", args.batch, args.in_flight));
    table
        .row("records/s", report.records_per_sec)
        .row("calls/s", report.calls_per_sec)
        .row("call latency p50 / p90 / p99 / max", call_latency.line());
    window.table_rows(&mut table, committed, "record");
    table.print();
    write_json(args.json_out.as_deref(), &report)
}

/// Record `n`: id `ingest-<n>`, its number, and `pad` bytes of filler.
fn record(n: u64, pad: usize) -> Record {
    let field = |kind| Value { kind: Some(kind) };
    Record {
        id: format!("ingest-{n}"),
        version: 1,
        fields: [
            ("n".to_owned(), field(value::Kind::IntValue(i64::try_from(n).unwrap_or(i64::MAX)))),
            ("pad".to_owned(), field(value::Kind::StringValue("x".repeat(pad)))),
        ]
        .into_iter()
        .collect(),
    }
}
