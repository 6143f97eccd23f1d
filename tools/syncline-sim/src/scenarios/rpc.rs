//! `syncline-sim rpc`: mobile RPC round trips through Syncline, against the same calls made
//! straight to the backend over gRPC.
//!
//! This process serves an echo `MobileService` on `--echo-listen` (the server's config must
//! route `--service` to it, e.g. `[rpc.services.echo] endpoint = "http://127.0.0.1:7810"`).
//! Two phases run the same closed loop: `--devices` callers, each making its share of
//! `--calls` one after another with a `--payload-bytes` payload, after one unmeasured
//! warm-up call each.
//!
//! - direct: each caller calls `Invoke` on the echo backend over one shared gRPC connection
//!   (HTTP/2 multiplexed, as Syncline's own client of a service is);
//! - syncline: each caller is a device with its own WebSocket (one password login, then
//!   session tokens) sending `RpcCall` and waiting for its `RpcReply`.
//!
//! The round trip of a syncline call covers the device frame, the session, the server's
//! gRPC call to the backend and the reply frame; the overhead ratios compare it with the
//! direct phase measured in the same run.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use syncline_client_sim::{
    Incoming,
    rpc::{call_frame, reply_result},
};
use syncline_proto::{
    mobile_sdk::{self, Invocation, MobileBackend},
    v1::{InvokeRequest, RpcCaller, ServerFrame, mobile_service_client::MobileServiceClient, server_frame},
};
use tokio::{sync::Semaphore, task::JoinSet, time::Instant};
use tonic::transport::Endpoint;

use crate::{
    fleet,
    loopback::{check_url, raise_open_files_limit},
    report::{LatencySummary, Table, latency_histogram, round, secs, unix_time_secs, write_json},
};

/// The method the echo backend answers (with the request payload).
const ECHO_METHOD: &str = "Echo";
/// Deadline of each call: far above any round trip, so that a timeout means trouble.
const CALL_DEADLINE: Duration = Duration::from_secs(30);
/// Devices logging in at once (token resumes are cheap, but each is a handshake).
const CONNECT_CONCURRENCY: usize = 64;

/// Arguments of `rpc`.
#[derive(Debug, Args)]
#[command(about = "Measures mobile RPC round trips through Syncline against direct gRPC calls")]
pub(crate) struct RpcArgs {
    /// The device endpoint; loopback addresses only.
    #[arg(long, default_value = "ws://127.0.0.1:7700/v1/sync")]
    url: String,
    /// The user the devices log in as.
    #[arg(long, default_value = "demo")]
    user: String,
    #[arg(long, default_value = "demo")]
    password: String,
    /// Concurrent callers (devices in the syncline phase).
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// Calls per phase, split over the callers.
    #[arg(long, default_value_t = 10_000)]
    calls: u64,
    /// Bytes of each request payload (echoed back).
    #[arg(long, default_value_t = 64)]
    payload_bytes: usize,
    /// Where this process serves the echo backend; loopback only.
    #[arg(long, default_value = "127.0.0.1:7810")]
    echo_listen: SocketAddr,
    /// The service name the server routes to the echo backend.
    #[arg(long, default_value = "echo")]
    service: String,
    /// Hard limit on each phase, in seconds.
    #[arg(long, default_value_t = 300)]
    max_secs: u64,
    /// Writes the report as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

/// The echo backend: answers `Echo` with the request payload.
struct Echo;

#[tonic::async_trait]
impl MobileBackend for Echo {
    async fn invoke(&self, call: Invocation) -> mobile_sdk::Result<Vec<u8>> {
        match call.method.as_str() {
            ECHO_METHOD => Ok(call.payload),
            _ => Err(call.unknown_method()),
        }
    }
}

#[derive(Debug, Serialize)]
struct Params {
    url: String,
    devices: usize,
    calls: u64,
    payload_bytes: usize,
    echo_listen: SocketAddr,
    service: String,
}

/// One phase's results.
#[derive(Debug, Default, Serialize)]
struct Phase {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    secs: f64,
    calls_per_sec: f64,
    round_trip: LatencySummary,
}

#[derive(Debug, Serialize)]
struct RpcReport {
    scenario: &'static str,
    unix_time: u64,
    params: Params,
    direct: Phase,
    syncline: Phase,
    /// Syncline ÷ direct.
    p50_ratio: f64,
    p99_ratio: f64,
    /// Direct ÷ Syncline calls per second.
    throughput_ratio: f64,
}

/// What one caller measured.
struct CallerTotals {
    histogram: Histogram<u64>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
}

impl CallerTotals {
    fn new() -> Self {
        Self { histogram: latency_histogram(), ok: 0, errors: 0, first_error: None }
    }

    fn record(&mut self, started: Instant, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                self.ok += 1;
                let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                self.histogram.saturating_record(nanos);
            }
            Err(error) => {
                self.errors += 1;
                self.first_error.get_or_insert(error);
            }
        }
    }
}

pub(crate) async fn run(args: RpcArgs) -> anyhow::Result<()> {
    check_url(&args.url, &["ws"]).await?;
    if !args.echo_listen.ip().is_loopback() {
        bail!("--echo-listen must be a loopback address");
    }
    if args.devices == 0 || args.calls < args.devices as u64 {
        bail!("--devices must be at least 1 and at most --calls");
    }
    raise_open_files_limit()?;
    let listener = tokio::net::TcpListener::bind(args.echo_listen)
        .await
        .with_context(|| format!("serving the echo backend on {}", args.echo_listen))?;
    let (stop_backend, stopped) = tokio::sync::oneshot::channel::<()>();
    let backend = tokio::spawn(mobile_sdk::serve(Echo, listener, async move {
        let _ = stopped.await;
    }));
    let payload = vec![0x5a_u8; args.payload_bytes];
    let limit = Duration::from_secs(args.max_secs);

    let direct =
        tokio::time::timeout(limit, direct_phase(&args, &payload)).await.context("direct phase timed out")??;
    let syncline =
        tokio::time::timeout(limit, syncline_phase(&args, &payload)).await.context("syncline phase timed out")??;
    let _ = stop_backend.send(());
    let _ = backend.await;

    let ratio = |a: f64, b: f64| if b > 0.0 { round(a / b, 2) } else { 0.0 };
    let report = RpcReport {
        scenario: "rpc",
        unix_time: unix_time_secs(),
        p50_ratio: ratio(syncline.round_trip.p50_ms, direct.round_trip.p50_ms),
        p99_ratio: ratio(syncline.round_trip.p99_ms, direct.round_trip.p99_ms),
        throughput_ratio: ratio(direct.calls_per_sec, syncline.calls_per_sec),
        params: Params {
            url: args.url.clone(),
            devices: args.devices,
            calls: args.calls,
            payload_bytes: args.payload_bytes,
            echo_listen: args.echo_listen,
            service: args.service.clone(),
        },
        direct,
        syncline,
    };
    let mut table = Table::new(format!("rpc: {} callers, {} calls per phase", args.devices, args.calls));
    for (name, phase) in [("direct", &report.direct), ("syncline", &report.syncline)] {
        table
            .row(format!("{name} round trip p50/p90/p99/max"), phase.round_trip.line())
            .row(format!("{name} calls/s"), format!("{:.0}", phase.calls_per_sec))
            .row(format!("{name} errors"), phase.errors);
    }
    table
        .row("p50 ratio (syncline/direct)", report.p50_ratio)
        .row("p99 ratio (syncline/direct)", report.p99_ratio)
        .row("throughput ratio (direct/syncline)", report.throughput_ratio)
        .print();
    write_json(args.json_out.as_deref(), &report)
}

/// Returns how many calls caller `index` makes.
fn share(args: &RpcArgs, index: usize) -> u64 {
    let devices = args.devices as u64;
    args.calls / devices + u64::from((index as u64) < args.calls % devices)
}

async fn direct_phase(args: &RpcArgs, payload: &[u8]) -> anyhow::Result<Phase> {
    let channel = Endpoint::from_shared(format!("http://{}", args.echo_listen))?
        .tcp_nodelay(true)
        .connect()
        .await
        .context("connecting to the echo backend")?;
    let client = MobileServiceClient::new(channel);
    let request = InvokeRequest {
        service: args.service.clone(),
        method: ECHO_METHOD.to_owned(),
        payload: payload.to_vec(),
        caller: Some(RpcCaller { user_id: args.user.clone(), ..RpcCaller::default() }),
        deadline_unix_ms: 0,
        call_id: String::new(),
    };
    let start = Arc::new(tokio::sync::Barrier::new(args.devices));
    let mut callers = JoinSet::new();
    for index in 0..args.devices {
        let (mut client, request, start) = (client.clone(), request.clone(), start.clone());
        let calls = share(args, index);
        callers.spawn(async move {
            let mut totals = CallerTotals::new();
            let mut call = async |request: &InvokeRequest| {
                let mut grpc_request = tonic::Request::new(request.clone());
                grpc_request.set_timeout(CALL_DEADLINE);
                client.invoke(grpc_request).await.map(|_| ()).map_err(|status| status.to_string())
            };
            let _ = call(&request).await;
            start.wait().await;
            let began = Instant::now();
            for _ in 0..calls {
                let started = Instant::now();
                let outcome = call(&request).await;
                totals.record(started, outcome);
            }
            (totals, began.elapsed())
        });
    }
    collect(callers).await
}

async fn syncline_phase(args: &RpcArgs, payload: &[u8]) -> anyhow::Result<Phase> {
    let (first, welcome) = fleet::login(&args.url, &args.user, &args.password).await?;
    let mut connections = vec![first];
    let connecting = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut opening = JoinSet::new();
    for _ in 1..args.devices {
        let (url, token, connecting) = (args.url.clone(), welcome.session_token.clone(), connecting.clone());
        opening.spawn(async move {
            let _permit = connecting.acquire_owned().await?;
            fleet::resume(&url, None, &token).await.map(|(connection, _)| connection)
        });
    }
    while let Some(opened) = opening.join_next().await {
        connections.push(opened??);
    }
    let start = Arc::new(tokio::sync::Barrier::new(args.devices));
    let mut callers = JoinSet::new();
    for (index, mut connection) in connections.into_iter().enumerate() {
        let (service, payload, start) = (args.service.clone(), payload.to_vec(), start.clone());
        let calls = share(args, index);
        callers.spawn(async move {
            let mut totals = CallerTotals::new();
            let mut number = 0u64;
            let mut call = async || {
                number += 1;
                let call_id = number.to_string();
                let frame = call_frame(&call_id, &service, ECHO_METHOD, payload.clone(), CALL_DEADLINE);
                connection.send(&frame).await.map_err(|error| error.to_string())?;
                loop {
                    match connection.recv().await.map_err(|error| error.to_string())? {
                        Incoming::Frame(ServerFrame { msg: Some(server_frame::Msg::RpcReply(reply)) })
                            if reply.call_id == call_id =>
                        {
                            return reply_result(reply).map(|_| ()).map_err(|error| error.to_string());
                        }
                        Incoming::Frame(_) => {}
                        Incoming::Closed { code, reason } => return Err(format!("closed: {code} {reason}")),
                    }
                }
            };
            let _ = call().await;
            start.wait().await;
            let began = Instant::now();
            for _ in 0..calls {
                let started = Instant::now();
                let outcome = call().await;
                totals.record(started, outcome);
            }
            (totals, began.elapsed())
        });
    }
    collect(callers).await
}

/// Merges the callers' totals; the phase lasts from the common start to the last caller's
/// end.
async fn collect(mut callers: JoinSet<(CallerTotals, Duration)>) -> anyhow::Result<Phase> {
    let mut histogram = latency_histogram();
    let mut phase = Phase::default();
    let mut longest = Duration::ZERO;
    while let Some(caller) = callers.join_next().await {
        let (totals, elapsed) = caller.context("a caller task failed")?;
        histogram.add(&totals.histogram).context("merging histograms")?;
        phase.ok += totals.ok;
        phase.errors += totals.errors;
        if phase.first_error.is_none() {
            phase.first_error = totals.first_error;
        }
        longest = longest.max(elapsed);
    }
    phase.secs = secs(longest);
    phase.calls_per_sec = if longest.is_zero() { 0.0 } else { round(phase.ok as f64 / longest.as_secs_f64(), 1) };
    phase.round_trip = LatencySummary::of(&histogram);
    Ok(phase)
}
