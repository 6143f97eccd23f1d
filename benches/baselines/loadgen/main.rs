//! `baseline-loadgen`: the load generator of the fan-out baselines (loopback only).
//!
//! It drives any server that speaks the baseline protocol: a client connected to `/pub`
//! publishes, and every message it sends is pushed to every client connected to `/`.
//!
//! One run: read the server's memory and CPU -> connect N subscribers (in batches) ->
//! idle -> read the server's memory again (RSS per idle connection) -> one publisher sends
//! M messages at R per second (0 = as fast as possible) -> wait until every subscriber has
//! every message (or the drain time is up) -> one JSON line: connect time, RSS, server CPU
//! per delivered message, core busy time, throughput, latency, lost and out-of-order
//! messages. With `--msgs 0` it only measures the idle connections.
//!
//! Every message is a ~160-byte JSON text frame carrying its sequence number and the send
//! time (ns since this process started); publisher and subscribers share this process and
//! its monotonic clock, so latency = receive time - send time. Everything runs on one
//! thread (the run script pins it to one core), and the whole run is bounded by
//! `--max-secs`.

use std::cell::{Cell, RefCell};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use syncline_procfs::{CoreTicks, CpuTimes, Memory, Process};

/// Connections per loopback source address before the next address is used: well below
/// the ~28,000 ephemeral ports one address has.
const CONNS_PER_SOURCE_ADDR: usize = 10_000;

#[derive(Parser, Debug, Clone)]
#[command(about = "Fan-out load generator for the baseline servers (loopback only)")]
struct Args {
    /// Server address; must be in 127.0.0.0/8.
    #[arg(long, default_value = "127.0.0.1:9100")]
    server: SocketAddrV4,
    /// Subscriber connections.
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    /// Connections opened concurrently during the ramp-up.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Messages to publish (0: only connect, idle and measure memory).
    #[arg(long, default_value_t = 100)]
    msgs: u64,
    /// Messages per second (0: as fast as possible).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Message size in bytes (at least 64).
    #[arg(long, default_value_t = 160)]
    payload: usize,
    /// The server's PID, for its memory and CPU from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Core the server is pinned to (for its core busy time from /proc/stat).
    #[arg(long, default_value_t = 0)]
    server_core: usize,
    /// Core this process is pinned to.
    #[arg(long, default_value_t = 1)]
    loadgen_core: usize,
    /// Seconds to wait with all connections idle before reading the server's memory.
    #[arg(long, default_value_t = 2.0)]
    idle_secs: f64,
    /// Seconds to wait for the last deliveries after the last message was sent.
    #[arg(long, default_value_t = 60.0)]
    drain_secs: f64,
    /// Hard limit for the whole run, seconds (at most 600).
    #[arg(long, default_value_t = 120.0)]
    max_secs: f64,
    /// Loopback source addresses to spread the connections over, 127.0.0.1..=127.0.0.K
    /// (default: one per 10,000 connections).
    #[arg(long)]
    source_addrs: Option<u8>,
    /// Name of the server under test, copied into the output.
    #[arg(long, default_value = "server")]
    label: String,
    /// Name of the scenario, copied into the output.
    #[arg(long, default_value = "run")]
    scenario: String,
    /// Append the JSON line to this file too.
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.server.ip().is_loopback(), "--server must be a loopback address (127.0.0.0/8)");
    ensure!(args.batch > 0 && args.payload >= 64, "--batch must be > 0 and --payload ≥ 64");
    ensure!(args.rate >= 0.0 && args.rate.is_finite(), "--rate must be a finite number ≥ 0");
    ensure!((1.0..=600.0).contains(&args.max_secs), "--max-secs must be between 1 and 600");
    let open_files = rlimit::increase_nofile_limit(u64::MAX).context("raising RLIMIT_NOFILE")?;
    ensure!(
        (args.conns as u64) + 64 <= open_files,
        "{} connections need more open files than the limit of {open_files} allows",
        args.conns
    );
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    let max = Duration::from_secs_f64(args.max_secs);
    let report = runtime
        .block_on(local.run_until(async { tokio::time::timeout(max, run(args.clone(), open_files)).await }))
        .with_context(|| format!("the run overran --max-secs {}", args.max_secs))??;

    let line = serde_json::to_string(&report)?;
    println!("{line}");
    if let Some(path) = &args.json_out {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        writeln!(file, "{line}")?;
    }
    // The subscriber sockets close with the process.
    std::process::exit(0)
}

/// One JSON line per run. Times in seconds, latencies in ms; `null` where a figure does not
/// apply (e.g. CPU per message with `--msgs 0`, server figures without `--server-pid`).
#[derive(Serialize, Debug, Default)]
struct Report {
    label: String,
    scenario: String,
    unix_time: u64,
    /// 1-minute load average of the machine when the run started.
    loadavg_1m: f64,
    conns_target: usize,
    conns: usize,
    connect_failures: usize,
    first_connect_error: Option<String>,
    source_addrs: usize,
    open_files_limit: u64,
    connect_secs: f64,
    /// Server CPU (utime+stime) per connection during the ramp-up, µs.
    server_cpu_us_per_connect: Option<f64>,
    msgs: u64,
    rate: f64,
    payload: usize,
    publish_secs: f64,
    expected: u64,
    delivered: u64,
    lost: u64,
    /// Messages missing in the middle of a connection's sequence.
    gaps: u64,
    out_of_order: u64,
    /// Frames that were not a well-formed message.
    bad: u64,
    /// Subscribers that got every message.
    complete_conns: u64,
    disconnects: u64,
    /// First send to last delivery.
    delivery_secs: f64,
    delivered_per_sec: Option<f64>,
    lat_p50_ms: Option<f64>,
    lat_p90_ms: Option<f64>,
    lat_p99_ms: Option<f64>,
    lat_p999_ms: Option<f64>,
    lat_max_ms: Option<f64>,
    /// Server utime+stime from /proc/PID/stat over the publish window (first send to end of
    /// drain), 10 ms resolution.
    server_cpu_s: Option<f64>,
    server_cpu_us_per_msg: Option<f64>,
    /// Share of `server_cpu_s` that was kernel time (stime).
    server_sys_frac: Option<f64>,
    /// Busy time of the server's core over the same window, from /proc/stat
    /// (user+nice+system+irq+softirq+steal): the all-in cost, including loopback softirq
    /// work not charged to any process.
    server_core_busy_s: f64,
    server_core_us_per_msg: Option<f64>,
    server_core_softirq_frac: Option<f64>,
    loadgen_cpu_s: f64,
    loadgen_cpu_us_per_msg: Option<f64>,
    loadgen_core_busy_s: f64,
    /// Busy time of both cores not charged to the server or this process over the window:
    /// unattributed softirq, kernel threads and any other program. More than a few percent
    /// of the window means something else competed for the cores.
    other_busy_s: Option<f64>,
    server_rss_base_kb: Option<u64>,
    server_rss_idle_kb: Option<u64>,
    server_rss_end_kb: Option<u64>,
    server_hwm_kb: Option<u64>,
    /// (RSS with every connection idle - RSS before the first) / connections, kB.
    rss_per_idle_conn_kb: Option<f64>,
}

/// Counters shared by the subscriber tasks (one thread: plain cells).
struct Shared {
    start: Instant,
    delivered: Cell<u64>,
    gaps: Cell<u64>,
    out_of_order: Cell<u64>,
    bad: Cell<u64>,
    complete_conns: Cell<u64>,
    disconnects: Cell<u64>,
    last_receive_ns: Cell<u64>,
    /// Latency in µs.
    latency: RefCell<Histogram<u64>>,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

async fn run(args: Args, open_files: u64) -> anyhow::Result<Report> {
    let shared = Rc::new(Shared {
        start: Instant::now(),
        delivered: Cell::new(0),
        gaps: Cell::new(0),
        out_of_order: Cell::new(0),
        bad: Cell::new(0),
        complete_conns: Cell::new(0),
        disconnects: Cell::new(0),
        last_receive_ns: Cell::new(0),
        latency: RefCell::new(Histogram::new_with_bounds(1, 600_000_000, 3)?),
    });
    let server = args.server_pid;
    let source_addrs = source_addrs(args.conns, args.source_addrs)?;
    let mut report = Report {
        label: args.label.clone(),
        scenario: args.scenario.clone(),
        unix_time: SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs(),
        loadavg_1m: syncline_procfs::loadavg_1m().unwrap_or(f64::NAN),
        conns_target: args.conns,
        source_addrs: source_addrs.len(),
        open_files_limit: open_files,
        msgs: args.msgs,
        rate: args.rate,
        payload: args.payload,
        ..Report::default()
    };
    let memory_base = server.map(memory).transpose()?;
    let cpu_base = server.map(cpu_times).transpose()?;

    // Ramp-up: `batch` connections at a time, each a task that then reads its messages.
    let ramp_start = Instant::now();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Result<(), String>>();
    let mut started = 0;
    while started < args.conns {
        let batch = args.batch.min(args.conns - started);
        for index in started..started + batch {
            let source = source_addrs[index % source_addrs.len()];
            let (done_tx, shared) = (done_tx.clone(), shared.clone());
            let (server, msgs) = (args.server, args.msgs);
            tokio::task::spawn_local(async move {
                let connected = tokio::time::timeout(Duration::from_secs(15), connect(server, source, "/")).await;
                match connected {
                    Ok(Ok(ws)) => {
                        let _ = done_tx.send(Ok(()));
                        drop(done_tx);
                        subscriber(ws, &shared, msgs).await;
                    }
                    Ok(Err(error)) => drop(done_tx.send(Err(format!("{error:#}")))),
                    Err(_) => drop(done_tx.send(Err("connect timed out after 15 s".to_owned()))),
                }
            });
        }
        for _ in 0..batch {
            match done_rx.recv().await {
                Some(Ok(())) => report.conns += 1,
                Some(Err(error)) => {
                    report.connect_failures += 1;
                    report.first_connect_error.get_or_insert(error);
                }
                None => break,
            }
        }
        started += batch;
    }
    report.connect_secs = ramp_start.elapsed().as_secs_f64();
    if let (Some(pid), Some(before)) = (server, cpu_base) {
        let spent = cpu_times(pid)?.since(before).total_secs();
        report.server_cpu_us_per_connect = per(spent * 1e6, report.conns as f64);
    }
    eprintln!(
        "[{} {}] connected {}/{} in {:.2} s ({} failures{})",
        args.label,
        args.scenario,
        report.conns,
        args.conns,
        report.connect_secs,
        report.connect_failures,
        report.first_connect_error.as_deref().map(|e| format!(", first: {e}")).unwrap_or_default()
    );

    // Idle: memory per connection.
    tokio::time::sleep(Duration::from_secs_f64(args.idle_secs)).await;
    let memory_idle = server.map(memory).transpose()?;
    report.server_rss_base_kb = memory_base.map(|m| m.rss_kb);
    report.server_rss_idle_kb = memory_idle.map(|m| m.rss_kb);
    if let (Some(base), Some(idle)) = (memory_base, memory_idle) {
        report.rss_per_idle_conn_kb = per(idle.rss_kb as f64 - base.rss_kb as f64, report.conns as f64);
    }

    if args.msgs > 0 {
        publish(&args, &shared, &mut report).await?;
    }
    let memory_end: Option<Memory> = server.map(memory).transpose()?;
    report.server_rss_end_kb = memory_end.map(|m| m.rss_kb);
    report.server_hwm_kb = memory_end.map(|m| m.peak_rss_kb);
    if args.msgs > 0 {
        eprintln!(
            "[{} {}] delivered {}/{} (lost {}) at {:.0}/s | latency p50 {:.1} p99 {:.1} ms | server {:.2} µs/msg \
             (core {:.2})",
            args.label,
            args.scenario,
            report.delivered,
            report.expected,
            report.lost,
            report.delivered_per_sec.unwrap_or(f64::NAN),
            report.lat_p50_ms.unwrap_or(f64::NAN),
            report.lat_p99_ms.unwrap_or(f64::NAN),
            report.server_cpu_us_per_msg.unwrap_or(f64::NAN),
            report.server_core_us_per_msg.unwrap_or(f64::NAN),
        );
    }
    eprintln!(
        "[{} {}] server RSS {:.1} kB per idle connection",
        args.label,
        args.scenario,
        report.rss_per_idle_conn_kb.unwrap_or(f64::NAN)
    );
    Ok(report)
}

/// Publishes `args.msgs` messages, waits for their delivery and fills in the publish-phase
/// figures of `report`.
async fn publish(args: &Args, shared: &Shared, report: &mut Report) -> anyhow::Result<()> {
    let mut publisher = tokio::time::timeout(Duration::from_secs(15), connect(args.server, *args.server.ip(), "/pub"))
        .await
        .context("the publisher's connect timed out")??;
    // Let the server register the publisher before the clock starts.
    tokio::time::sleep(Duration::from_millis(200)).await;

    report.expected = report.conns as u64 * args.msgs;
    let server_cpu_before = args.server_pid.map(cpu_times).transpose()?;
    let loadgen_cpu_before = Process::Current.cpu_times()?;
    let cores_before = syncline_procfs::core_ticks()?;
    let first_send_ns = shared.now_ns();
    let publish_start = Instant::now();
    for seq in 0..args.msgs {
        if args.rate > 0.0 {
            tokio::time::sleep_until((publish_start + Duration::from_secs_f64(seq as f64 / args.rate)).into()).await;
        }
        let text = message(seq, shared.now_ns(), args.payload);
        publisher.send(Message::text(text)).await.with_context(|| format!("publishing message {seq}"))?;
    }
    report.publish_secs = publish_start.elapsed().as_secs_f64();

    // Drain: poll (bounded) until every subscriber has every message.
    let drain_end = Instant::now() + Duration::from_secs_f64(args.drain_secs);
    while shared.delivered.get() < report.expected && Instant::now() < drain_end {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let window = publish_start.elapsed().as_secs_f64();
    let server_cpu = match (args.server_pid, server_cpu_before) {
        (Some(pid), Some(before)) => Some(cpu_times(pid)?.since(before)),
        _ => None,
    };
    let loadgen_cpu = Process::Current.cpu_times()?.since(loadgen_cpu_before);
    let cores = syncline_procfs::core_ticks()?;
    drop(publisher);

    let delivered = shared.delivered.get();
    report.delivered = delivered;
    report.lost = report.expected.saturating_sub(delivered);
    report.gaps = shared.gaps.get();
    report.out_of_order = shared.out_of_order.get();
    report.bad = shared.bad.get();
    report.complete_conns = shared.complete_conns.get();
    report.disconnects = shared.disconnects.get();
    report.delivery_secs = shared.last_receive_ns.get().saturating_sub(first_send_ns) as f64 / 1e9;
    report.delivered_per_sec = per(delivered as f64, report.delivery_secs);
    let latency = shared.latency.borrow();
    if !latency.is_empty() {
        let ms = |us: u64| Some(us as f64 / 1000.0);
        report.lat_p50_ms = ms(latency.value_at_quantile(0.50));
        report.lat_p90_ms = ms(latency.value_at_quantile(0.90));
        report.lat_p99_ms = ms(latency.value_at_quantile(0.99));
        report.lat_p999_ms = ms(latency.value_at_quantile(0.999));
        report.lat_max_ms = ms(latency.max());
    }

    let delivered = delivered as f64;
    let server_core = CoreTicks::of_core(&cores_before, &cores, args.server_core);
    let loadgen_core = CoreTicks::of_core(&cores_before, &cores, args.loadgen_core);
    report.server_core_busy_s = server_core.busy_secs();
    report.server_core_us_per_msg = per(server_core.busy_secs() * 1e6, delivered);
    report.server_core_softirq_frac = per(server_core.softirq_secs(), server_core.busy_secs());
    report.loadgen_cpu_s = loadgen_cpu.total_secs();
    report.loadgen_cpu_us_per_msg = per(loadgen_cpu.total_secs() * 1e6, delivered);
    report.loadgen_core_busy_s = loadgen_core.busy_secs();
    if let Some(cpu) = server_cpu {
        report.server_cpu_s = Some(cpu.total_secs());
        report.server_cpu_us_per_msg = per(cpu.total_secs() * 1e6, delivered);
        report.server_sys_frac = per(cpu.system_secs(), cpu.total_secs());
        let both_cores = server_core.busy_secs() + loadgen_core.busy_secs();
        report.other_busy_s = Some((both_cores - cpu.total_secs() - loadgen_cpu.total_secs()).max(0.0));
    }
    if report.lost > 0 {
        eprintln!("[{} {}] {} messages not delivered within {window:.1} s", args.label, args.scenario, report.lost);
    }
    Ok(())
}

/// Reads messages until the connection ends, checking sequence and recording latency.
async fn subscriber(mut ws: WebSocketStream<TcpStream>, shared: &Shared, msgs: u64) {
    let mut received: u64 = 0;
    let mut next_seq: u64 = 0;
    while let Some(Ok(message)) = ws.next().await {
        let data: &[u8] = match &message {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes,
            Message::Close(_) => break,
            _ => continue,
        };
        let now = shared.now_ns();
        let Some((seq, sent_ns)) = parse_message(data) else {
            shared.bad.set(shared.bad.get() + 1);
            continue;
        };
        shared.latency.borrow_mut().saturating_record(now.saturating_sub(sent_ns) / 1000);
        if seq < next_seq {
            shared.out_of_order.set(shared.out_of_order.get() + 1);
        } else {
            shared.gaps.set(shared.gaps.get() + (seq - next_seq));
            next_seq = seq + 1;
        }
        received += 1;
        shared.delivered.set(shared.delivered.get() + 1);
        shared.last_receive_ns.set(now);
        if received == msgs {
            shared.complete_conns.set(shared.complete_conns.get() + 1);
        }
    }
    shared.disconnects.set(shared.disconnects.get() + 1);
}

/// Opens a WebSocket connection to `path` from the loopback address `source`.
async fn connect(server: SocketAddrV4, source: Ipv4Addr, path: &str) -> anyhow::Result<WebSocketStream<TcpStream>> {
    let socket = TcpSocket::new_v4()?;
    if source != Ipv4Addr::LOCALHOST {
        socket.bind(SocketAddr::from((source, 0))).with_context(|| format!("binding to {source}"))?;
    }
    let stream = socket.connect(server.into()).await.context("connect")?;
    stream.set_nodelay(true)?;
    // A 16 KiB read buffer (tungstenite zero-fills its 128 KiB default on reads).
    let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
    let url = format!("ws://{server}{path}");
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await.context("WebSocket handshake")?;
    Ok(ws)
}

/// 127.0.0.1 ..= 127.0.0.K: `requested`, or one address per `CONNS_PER_SOURCE_ADDR`.
fn source_addrs(conns: usize, requested: Option<u8>) -> anyhow::Result<Vec<Ipv4Addr>> {
    let count = match requested {
        Some(count) => usize::from(count),
        None => conns.div_ceil(CONNS_PER_SOURCE_ADDR).max(1),
    };
    if !(1..=200).contains(&count) {
        bail!("between 1 and 200 source addresses");
    }
    Ok((1..=count as u8).map(|last| Ipv4Addr::new(127, 0, 0, last)).collect())
}

// The message: valid JSON with fixed offsets, padded with `x` to the payload size:
// {"seq":"0000000001","ts":"00000000000000000001","pad":"xxxx"}
const SEQ_AT: usize = r#"{"seq":""#.len();
const SEQ_LEN: usize = 10;
const TS_AT: usize = SEQ_AT + SEQ_LEN + r#"","ts":""#.len();
const TS_LEN: usize = 20;

fn message(seq: u64, sent_ns: u64, payload: usize) -> String {
    let mut text = format!(r#"{{"seq":"{seq:010}","ts":"{sent_ns:020}","pad":""#);
    let pad = payload.saturating_sub(text.len() + 2);
    text.extend(std::iter::repeat_n('x', pad));
    text.push_str(r#""}"#);
    text
}

/// Returns (sequence number, send time in ns) of a message.
fn parse_message(data: &[u8]) -> Option<(u64, u64)> {
    let digits = |field: &[u8]| -> Option<u64> {
        field.iter().try_fold(0u64, |value, &c| c.is_ascii_digit().then(|| value * 10 + u64::from(c - b'0')))
    };
    Some((digits(data.get(SEQ_AT..SEQ_AT + SEQ_LEN)?)?, digits(data.get(TS_AT..TS_AT + TS_LEN)?)?))
}

/// Returns the CPU time of process `pid` so far.
fn cpu_times(pid: u32) -> syncline_procfs::Result<CpuTimes> {
    Process::Pid(pid).cpu_times()
}

/// Returns the resident memory of process `pid`.
fn memory(pid: u32) -> syncline_procfs::Result<Memory> {
    Process::Pid(pid).memory()
}

/// `numerator / denominator`, or `None` when the denominator is not positive.
fn per(numerator: f64, denominator: f64) -> Option<f64> {
    (denominator > 0.0).then(|| numerator / denominator)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let text = message(42, 123_456_789, 160);
        assert_eq!(text.len(), 160);
        assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok());
        assert_eq!(parse_message(text.as_bytes()), Some((42, 123_456_789)));
        assert_eq!(parse_message(b"{\"seq\":\"12\"}"), None);
    }

    #[test]
    fn source_addresses_are_loopback() {
        assert_eq!(source_addrs(15_000, None).unwrap(), [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)]);
        assert_eq!(source_addrs(1_000, None).unwrap().len(), 1);
        assert!(source_addrs(1_000, Some(0)).is_err());
    }
}
