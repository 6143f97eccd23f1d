//! Many lightweight devices on one process: one password login, then token logins, each
//! device a raw subscriber over [`Connection`] rather than a full [`syncline_client_sim::Device`]
//! (no replica, no engine), so ten thousand of them stay cheap.
//!
//! A subscriber keeps what a real device keeps for flow control and acks (its cursor), acks
//! catch-up pages as they arrive and live pushes every `ack_every` changes (each device at its
//! own phase, `index % ack_every`, as a fleet that joined at different times would: not every
//! device acking the same change), and counts the records of the current run (the *probes*
//! carrying the run's tag, see [`syncline_client_sim::probe`]): their latency is receive time
//! − `sent_ns`, both on the run's one monotonic clock.

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
};

use anyhow::{Context, bail};
use clap::Args;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use syncline_client_sim::{ConnectOptions, Connection, Incoming, LeanChanges, LeanFrame, Probe};
use syncline_proto::{
    PROTOCOL_VERSION,
    v1::{
        Ack, ClientFrame, DeviceInfo, ErrorCode, Hello, Login, ServerFrame, Subscribe, SyncState, SyncStatus,
        Unsubscribe, Welcome, client_frame, hello, server_frame,
    },
};
use tokio::{
    sync::{Notify, Semaphore, watch},
    task::JoinSet,
    time::Instant,
};

use crate::report::latency_histogram;

/// Connections being opened (and caught up) at once: well under the server's listen
/// backlog (128 on this machine), so a ramp of thousands never overflows it and waits on SYN
/// retries.
pub(crate) const DEFAULT_CONNECT_CONCURRENCY: usize = 64;
/// Loopback source addresses connections are spread over (127.0.0.2 ..): each address
/// has ~28k ephemeral ports towards one server port, so 16 leave ample room.
pub(crate) const DEFAULT_SOURCE_ADDRS: u8 = 16;
/// Live changes a device applies before acking its cursor, like a real device's debounced
/// live ack.
pub(crate) const DEFAULT_ACK_EVERY: u64 = 100;
/// Distinct device errors kept for the report.
const MAX_REPORTED_ERRORS: usize = 5;
/// Who the devices are and what they sync (shared by the fleet scenarios).
#[derive(Clone, Debug, Args)]
pub(crate) struct FleetArgs {
    /// The device endpoint; loopback addresses only.
    #[arg(long, default_value = "ws://127.0.0.1:7700/v1/sync")]
    pub(crate) url: String,
    /// Simulated devices (each one WebSocket).
    #[arg(long, default_value_t = 1000)]
    pub(crate) devices: usize,
    /// Login name shared by every device (one password login, then session tokens).
    #[arg(long, default_value = "demo")]
    pub(crate) user: String,
    /// Password of `--user`.
    #[arg(long, env = "SYNCLINE_PASSWORD", hide_env_values = true, default_value = "demo")]
    pub(crate) password: String,
    /// Source every device subscribes to.
    #[arg(long, default_value = "Account")]
    pub(crate) source: String,
    /// Partition key (default: the natural key, `*` for app sources).
    #[arg(long, default_value = "")]
    pub(crate) key: String,
    /// Subscribe every device from cursor 0 (a full initial sync each) instead of from the
    /// partition's current head (a device that already holds the partition).
    #[arg(long)]
    pub(crate) from_zero: bool,
    /// Loopback source addresses to spread connections over (127.0.0.2 ..); 0 uses the
    /// kernel's choice.
    #[arg(long, default_value_t = DEFAULT_SOURCE_ADDRS)]
    pub(crate) source_addrs: u8,
    /// Connections opened (and caught up) at once.
    #[arg(long, default_value_t = DEFAULT_CONNECT_CONCURRENCY)]
    pub(crate) connect_concurrency: usize,
    /// Live changes a device applies before acking its cursor.
    #[arg(long, default_value_t = DEFAULT_ACK_EVERY)]
    pub(crate) ack_every: u64,
    /// Records or changes per catch-up page (0: the server's default).
    #[arg(long, default_value_t = 0)]
    pub(crate) page_size: u32,
    /// Catch-up pages in flight before an ack (at least 1: these devices never pull).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) window: u32,
}

/// Default hard limit on a measured run (`--max-secs`).
const DEFAULT_MAX_SECS: u64 = 300;
/// Default time deliveries may trail the last write before the rest count as lost.
const DEFAULT_DRAIN_SECS: u64 = 30;

/// How a measured run is bounded and reported (shared by the write scenarios).
#[derive(Clone, Debug, Args)]
pub(crate) struct RunArgs {
    /// The server's PID, for its CPU time and memory from /proc.
    #[arg(long)]
    pub(crate) server_pid: Option<u32>,
    /// Hard limit on the whole run, in seconds.
    #[arg(long, default_value_t = DEFAULT_MAX_SECS)]
    pub(crate) max_secs: u64,
    /// Seconds deliveries (and outcomes) may trail the last write.
    #[arg(long, default_value_t = DEFAULT_DRAIN_SECS)]
    pub(crate) drain_secs: u64,
    /// Writes the report as JSON to this file.
    #[arg(long)]
    pub(crate) json_out: Option<std::path::PathBuf>,
}

/// Returns the frame of a Hello with `credentials`.
fn hello_frame(credentials: hello::Credentials) -> ClientFrame {
    ClientFrame {
        msg: Some(client_frame::Msg::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            credentials: Some(credentials),
            client_id: String::new(),
            device: Some(DeviceInfo {
                platform: "syncline-sim".into(),
                app_version: env!("CARGO_PKG_VERSION").into(),
                model: "load scenario".into(),
            }),
        })),
    }
}

fn subscribe_frame(source: &str, key: &str, cursor: u64, page_size: u32, window: u32) -> ClientFrame {
    ClientFrame {
        msg: Some(client_frame::Msg::Subscribe(Subscribe {
            source: source.to_owned(),
            key: key.to_owned(),
            cursor,
            page_size,
            window,
        })),
    }
}

pub(crate) fn ack_frame(source: &str, key: &str, cursor: u64, page: u64) -> ClientFrame {
    ClientFrame {
        msg: Some(client_frame::Msg::Ack(Ack { source: source.to_owned(), key: key.to_owned(), cursor, page })),
    }
}

/// Describes a fatal server frame or close for error messages.
pub(crate) fn describe_error(error: &syncline_proto::v1::Error) -> String {
    describe_code(error.code, &error.message)
}

/// Returns "CODE_NAME: message" for an `ErrorCode` value (its number if unknown).
pub(crate) fn describe_code(code: i32, message: &str) -> String {
    let code = ErrorCode::try_from(code).map_or_else(|_| code.to_string(), |code| code.as_str_name().into());
    format!("{code}: {message}")
}

/// How the server answered a Hello.
pub(crate) enum HelloAnswer {
    /// The session started.
    Welcome(Box<(Connection, Welcome)>),
    /// A fatal Error (then, usually, a close).
    Refused(syncline_proto::v1::Error),
    /// The server closed the connection without a Welcome or an Error.
    Closed { code: u16, reason: String },
}

/// Opens a connection (from `local`, if given), sends a Hello with `credentials` and returns
/// the server's answer; fails only when the connection does.
pub(crate) async fn hello(
    url: &str,
    local: Option<IpAddr>,
    credentials: hello::Credentials,
) -> anyhow::Result<HelloAnswer> {
    let options = ConnectOptions { local_addr: local, ..ConnectOptions::default() };
    let mut connection = Connection::connect(url, &options).await?;
    connection.send(&hello_frame(credentials)).await?;
    loop {
        match connection.recv().await? {
            Incoming::Frame(ServerFrame { msg: Some(server_frame::Msg::Welcome(welcome)) }) => {
                return Ok(HelloAnswer::Welcome(Box::new((connection, welcome))));
            }
            Incoming::Frame(ServerFrame { msg: Some(server_frame::Msg::Error(error)) }) => {
                return Ok(HelloAnswer::Refused(error));
            }
            Incoming::Frame(_) => {}
            Incoming::Closed { code, reason } => return Ok(HelloAnswer::Closed { code, reason }),
        }
    }
}

/// Opens a connection (from `local`, if given) and starts a session with `credentials`;
/// returns the connection and the Welcome.
async fn open_session(
    url: &str,
    local: Option<IpAddr>,
    credentials: hello::Credentials,
) -> anyhow::Result<(Connection, Welcome)> {
    match hello(url, local, credentials).await? {
        HelloAnswer::Welcome(session) => Ok(*session),
        HelloAnswer::Refused(error) => bail!("Hello refused: {}", describe_error(&error)),
        HelloAnswer::Closed { code, reason } => bail!("closed by the server before Welcome: {code} {reason}"),
    }
}

/// Logs in with a password (argon2 on the server: slow, so once per run).
pub(crate) async fn login(url: &str, user: &str, password: &str) -> anyhow::Result<(Connection, Welcome)> {
    let credentials = hello::Credentials::Login(Login { username: user.to_owned(), password: password.to_owned() });
    open_session(url, None, credentials).await.context("logging in")
}

/// Starts a session with a session token from an earlier Welcome.
pub(crate) async fn resume(url: &str, local: Option<IpAddr>, token: &str) -> anyhow::Result<(Connection, Welcome)> {
    open_session(url, local, hello::Credentials::SessionToken(token.to_owned())).await
}

/// Returns the partition's current head sequence: subscribes from cursor 0 with one-record
/// pages and a window of one, reads the first snapshot page (which is at the head), and
/// unsubscribes. Costs the server one page, not a full sync.
pub(crate) async fn partition_head(connection: &mut Connection, source: &str, key: &str) -> anyhow::Result<u64> {
    connection.send(&subscribe_frame(source, key, 0, 1, 1)).await?;
    let head = loop {
        match connection.recv().await? {
            Incoming::Frame(ServerFrame { msg: Some(server_frame::Msg::Changes(changes)) }) => break changes.to,
            Incoming::Frame(ServerFrame { msg: Some(server_frame::Msg::Error(error)) }) => {
                bail!("subscribing to {source} refused: {}", describe_error(&error))
            }
            Incoming::Frame(ServerFrame { msg: Some(server_frame::Msg::SyncState(state)) })
                if state.status == SyncStatus::Error as i32 =>
            {
                bail!("subscribing to {source} failed: {:?}", state.error)
            }
            Incoming::Frame(_) => {}
            Incoming::Closed { code, reason } => bail!("closed by the server: {code} {reason}"),
        }
    };
    let unsubscribe = Unsubscribe { source: source.to_owned(), key: key.to_owned() };
    connection.send(&ClientFrame { msg: Some(client_frame::Msg::Unsubscribe(unsubscribe)) }).await?;
    Ok(head)
}

/// A count that a coordinator can wait on reaching a target, without polling.
#[derive(Debug)]
pub(crate) struct Milestone {
    count: AtomicU64,
    target: AtomicU64,
    reached: Notify,
}

impl Default for Milestone {
    fn default() -> Self {
        Self { count: AtomicU64::new(0), target: AtomicU64::new(u64::MAX), reached: Notify::new() }
    }
}

impl Milestone {
    pub(crate) fn add(&self, amount: u64) {
        let count = self.count.fetch_add(amount, Ordering::SeqCst) + amount;
        if count >= self.target.load(Ordering::SeqCst) {
            self.reached.notify_waiters();
        }
    }

    pub(crate) fn get(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Waits until the count reaches `target`; returns false if `deadline` came first.
    pub(crate) async fn wait_for(&self, target: u64, deadline: Instant) -> bool {
        self.target.store(target, Ordering::SeqCst);
        loop {
            let notified = self.reached.notified();
            tokio::pin!(notified);
            // Registered before the check: an `add` after the check wakes this waiter.
            notified.as_mut().enable();
            if self.get() >= target {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.get() >= target;
            }
        }
    }
}

/// What every subscriber does, and what they count together.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) source: String,
    pub(crate) key: String,
    pub(crate) cursor: u64,
    pub(crate) page_size: u32,
    pub(crate) window: u32,
    pub(crate) ack_every: u64,
    /// The run's tag: only records carrying it are counted.
    pub(crate) run_tag: i64,
    /// The clock of `sent_ns`.
    pub(crate) run_start: Instant,
    /// Devices caught up for the first time, or failed.
    pub(crate) settled: Milestone,
    pub(crate) caught_up: AtomicUsize,
    pub(crate) failed: AtomicUsize,
    /// Records of this run received (live pushes and catch-up pages).
    pub(crate) delivered: Milestone,
    /// Receive time of the last record of this run, ns since `run_start`.
    pub(crate) last_receive_ns: AtomicU64,
    /// Latency of records in live pushes.
    pub(crate) live_latency: Mutex<Histogram<u64>>,
    /// Latency of records that came in catch-up pages after a demotion or a reconnect (not
    /// live pushes).
    pub(crate) catchup_latency: Mutex<Histogram<u64>>,
    /// Devices that reached the coordinator's target cursor (see [`Control::target`]) on a
    /// connection of the current generation, caught up: each counts once per target.
    pub(crate) at_target: Milestone,
    /// When the last reconnect was ordered ([`Fleet::reconnect_all`]), ns since `run_start`.
    reconnect_ordered_ns: AtomicU64,
    /// Per device, the reconnect order to caught up again on the new connection.
    pub(crate) resume_latency: Mutex<Histogram<u64>>,
    /// Probes sent from this time on (ns since `run_start`) count as the second phase in
    /// `others_latency`; `u64::MAX`: one phase.
    pub(crate) phase_split_ns: AtomicU64,
    /// Live-push latency of devices outside the stall set (when there is one), by phase:
    /// probes sent before and after `phase_split_ns`.
    pub(crate) others_latency: [Mutex<Histogram<u64>>; 2],
    /// Set once the fleet is stopping; a device that ends after it is not a failure.
    stopping: AtomicBool,
    /// Records of this run received per partition key, for scenarios whose devices sync
    /// different partitions (`personal`): keys are fixed before the fleet starts; records
    /// of other keys are not counted here. Empty: not counted per key.
    pub(crate) delivered_by_key: std::collections::HashMap<String, AtomicU64>,
}

impl Shared {
    pub(crate) fn new(args: &FleetArgs, cursor: u64, run_start: Instant) -> Self {
        Self {
            source: args.source.clone(),
            key: args.key.clone(),
            cursor,
            page_size: args.page_size,
            window: args.window,
            ack_every: args.ack_every.max(1),
            run_tag: i64::from(rand::random::<u32>()),
            run_start,
            settled: Milestone::default(),
            caught_up: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            delivered: Milestone::default(),
            last_receive_ns: AtomicU64::new(0),
            live_latency: Mutex::new(latency_histogram()),
            catchup_latency: Mutex::new(latency_histogram()),
            at_target: Milestone::default(),
            reconnect_ordered_ns: AtomicU64::new(0),
            resume_latency: Mutex::new(latency_histogram()),
            phase_split_ns: AtomicU64::new(u64::MAX),
            others_latency: [Mutex::new(latency_histogram()), Mutex::new(latency_histogram())],
            stopping: AtomicBool::new(false),
            delivered_by_key: std::collections::HashMap::new(),
        }
    }

    /// Returns ns since the run's start.
    /// Adds `counted` records of this run to partition `key`'s count, when counted per key.
    fn count_for_key(&self, key: &str, counted: u64) {
        if counted > 0
            && let Some(count) = self.delivered_by_key.get(key)
        {
            count.fetch_add(counted, Ordering::Relaxed);
        }
    }

    pub(crate) fn now_ns(&self) -> u64 {
        u64::try_from(self.run_start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Counts the probes of this run in `probes`, received at `received_ns`, into `histogram`
    /// (and, for a device outside the stall set, into `others_latency` by phase).
    fn count_probes(
        &self,
        probes: &[Probe],
        received_ns: u64,
        histogram: &Mutex<Histogram<u64>>,
        outside_stall_set: bool,
    ) -> u64 {
        let mut counted = 0;
        let split_ns = self.phase_split_ns.load(Ordering::Relaxed);
        let mut histogram = histogram.lock();
        for probe in probes.iter().filter(|probe| probe.run == self.run_tag) {
            let latency = received_ns.saturating_sub(probe.sent_ns);
            histogram.saturating_record(latency);
            if outside_stall_set {
                self.others_latency[usize::from(probe.sent_ns >= split_ns)].lock().saturating_record(latency);
            }
            counted += 1;
        }
        drop(histogram);
        if counted > 0 {
            self.last_receive_ns.fetch_max(received_ns, Ordering::Relaxed);
            self.delivered.add(counted);
        }
        counted
    }
}

/// What one device did, reported when the fleet stops.
#[derive(Debug, Default)]
struct DeviceOutcome {
    caught_up: bool,
    error: Option<String>,
    live_frames: u64,
    live_records: u64,
    catchup_pages: u64,
    catchup_records: u64,
    recatchups: u64,
    gaps: u64,
    /// Sequences received again, at or below the cursor.
    duplicate_seqs: u64,
    /// Sequences skipped: a frame's `from` beyond cursor + 1.
    missing_seqs: u64,
    /// Sessions resumed after a reconnect order (token login and subscribe sent).
    reconnects: u64,
    /// Reconnect attempts that failed (connect, Hello or catch-up) and were retried.
    reconnect_failures: u64,
    /// Catch-up pages received while resuming after a reconnect.
    resume_pages: u64,
    /// Records of this run in those pages.
    resume_records: u64,
    /// The cursor when the fleet stopped.
    cursor: u64,
    in_stall_set: bool,
    acks_sent: u64,
    error_frames: u64,
}

/// What the fleet did, summed over devices.
#[derive(Debug, Default, Serialize)]
pub(crate) struct FleetTotals {
    pub(crate) devices: usize,
    pub(crate) caught_up: usize,
    pub(crate) failed: usize,
    /// Live `Changes` frames (page 0) received.
    pub(crate) live_frames: u64,
    /// Records of this run received in live pushes.
    pub(crate) live_records: u64,
    /// Catch-up pages received after the first catch-up (the server demoted the device).
    pub(crate) catchup_pages: u64,
    /// Records of this run received in those catch-up pages.
    pub(crate) catchup_records: u64,
    /// Caught-up states after the first (each ends a demotion).
    pub(crate) recatchups: u64,
    /// Live pushes and log pages that skipped sequences (`from` beyond cursor + 1).
    pub(crate) gaps: u64,
    /// Sequences skipped by those frames, summed over devices.
    pub(crate) missing_seqs: u64,
    /// Sequences received again (at or below the device's cursor), summed over devices.
    pub(crate) duplicate_seqs: u64,
    /// The last target cursor the devices were given (`None`: none).
    pub(crate) target: Option<u64>,
    /// Devices whose cursor was below `target` when the fleet stopped.
    pub(crate) short_of_target: usize,
    /// Sequences those devices were short of `target`, summed: with `missing_seqs`, the changes
    /// never received.
    pub(crate) short_of_target_seqs: u64,
    /// Sessions resumed after reconnect orders.
    pub(crate) reconnects: u64,
    /// Reconnect attempts that failed and were retried (with backoff).
    pub(crate) reconnect_failures: u64,
    /// Catch-up pages received while resuming after a reconnect.
    pub(crate) resume_pages: u64,
    /// Records of this run received in those pages.
    pub(crate) resume_records: u64,
    /// The same accounting for the stall set alone (when there was one).
    pub(crate) stall_set: Option<StallSetTotals>,
    pub(crate) acks_sent: u64,
    /// Non-fatal Error frames received.
    pub(crate) error_frames: u64,
    /// Devices whose connection ended before the fleet stopped.
    pub(crate) ended_early: usize,
    /// Up to five distinct device errors.
    pub(crate) errors: Vec<String>,
}

/// What the devices of the stall set did (see [`Control::stall_set`]).
#[derive(Debug, Default, Serialize)]
pub(crate) struct StallSetTotals {
    pub(crate) devices: usize,
    /// Catch-up pages after the first catch-up (demotions).
    pub(crate) catchup_pages: u64,
    pub(crate) recatchups: u64,
    pub(crate) missing_seqs: u64,
    pub(crate) duplicate_seqs: u64,
    pub(crate) short_of_target: usize,
    pub(crate) short_of_target_seqs: u64,
    /// Devices whose connection ended before the fleet stopped.
    pub(crate) ended_early: usize,
}

/// Cursor of [`Control::target`] meaning "no target".
const NO_TARGET: u64 = u64::MAX;

/// What the coordinator tells every device, through one watch channel: a change wakes every
/// device task once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Control {
    /// Close politely and end.
    stop: bool,
    /// The reconnect generation: when it changes, every device drops its connection without
    /// a close frame (as a lost network would) and resumes: token login, then subscribe from
    /// its cursor.
    generation: u64,
    /// Devices `0..stall_set` form the stall set: they stop reading while `stalled`, and
    /// the others' latency is also recorded apart (`Shared::others_latency`).
    stall_set: usize,
    /// The stall set keeps its connections open but stops reading them.
    stalled: bool,
    /// Devices count in `Shared::at_target` once caught up at or beyond this cursor on a
    /// connection of the current generation ([`NO_TARGET`]: no target).
    target: u64,
}

impl Default for Control {
    fn default() -> Self {
        Self { stop: false, generation: 0, stall_set: 0, stalled: false, target: NO_TARGET }
    }
}

/// How a device opens (and reopens) its session from this source address: a session token
/// shared by the fleet (from one password login), or a Hello of its own (e.g. its own user's
/// backend token).
#[derive(Clone)]
struct Dial {
    url: Arc<str>,
    credentials: DialCredentials,
    local: Option<IpAddr>,
}

#[derive(Clone)]
enum DialCredentials {
    SessionToken(Arc<str>),
    Hello(hello::Credentials),
}

impl Dial {
    async fn open(&self) -> anyhow::Result<Connection> {
        let (connection, _welcome) = match &self.credentials {
            DialCredentials::SessionToken(token) => resume(&self.url, self.local, token).await?,
            DialCredentials::Hello(credentials) => open_session(&self.url, self.local, credentials.clone()).await?,
        };
        Ok(connection)
    }
}

/// First delay before retrying a failed reconnect.
const RECONNECT_BACKOFF_INITIAL: std::time::Duration = std::time::Duration::from_millis(50);
/// Longest delay between reconnect attempts: a device that could not get in retries at
/// least this often, so one refusal costs it at most about this much.
const RECONNECT_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// Returns the delay before reconnect attempt `failures + 1`: `min(max, initial × 2^failures)`
/// scaled by `jitter` (clamped to 0.5 ..= 1), so a herd that failed together does not retry
/// together.
fn reconnect_delay(failures: u32, jitter: f64) -> std::time::Duration {
    let ceiling = RECONNECT_BACKOFF_INITIAL
        .checked_mul(1u32.checked_shl(failures).unwrap_or(u32::MAX))
        .unwrap_or(RECONNECT_BACKOFF_MAX)
        .min(RECONNECT_BACKOFF_MAX);
    ceiling.mul_f64(jitter.clamp(0.5, 1.0))
}

/// A running fleet of subscribers.
pub(crate) struct Fleet {
    shared: Arc<Shared>,
    control: watch::Sender<Control>,
    tasks: JoinSet<DeviceOutcome>,
    devices: usize,
}

impl Fleet {
    /// Starts `devices` subscribers: the first on `first` (an open session), the others with
    /// token logins spread over `local_addrs`, at most `concurrency` connecting at once.
    pub(crate) fn start(
        shared: Arc<Shared>,
        first: Connection,
        url: &str,
        token: &str,
        devices: usize,
        local_addrs: &[IpAddr],
        concurrency: usize,
    ) -> Self {
        let token: Arc<str> = token.into();
        let credentials = (0..devices).map(|_| DialCredentials::SessionToken(Arc::clone(&token)));
        Self::spawn(shared, Some(first), url, credentials, local_addrs, concurrency)
    }

    /// Starts one subscriber per entry of `credentials`, each with its own Hello (e.g. its
    /// own user's backend token, used again to reconnect), spread over `local_addrs`, at most
    /// `concurrency` connecting at once.
    pub(crate) fn start_with_credentials(
        shared: Arc<Shared>,
        url: &str,
        credentials: Vec<hello::Credentials>,
        local_addrs: &[IpAddr],
        concurrency: usize,
    ) -> Self {
        let credentials = credentials.into_iter().map(DialCredentials::Hello);
        Self::spawn(shared, None, url, credentials, local_addrs, concurrency)
    }

    /// Spawns one device per entry of `credentials` (the first on `first` when given).
    fn spawn(
        shared: Arc<Shared>,
        mut first: Option<Connection>,
        url: &str,
        credentials: impl Iterator<Item = DialCredentials>,
        local_addrs: &[IpAddr],
        concurrency: usize,
    ) -> Self {
        let (control, _) = watch::channel(Control::default());
        let permits = Arc::new(Semaphore::new(concurrency.max(1)));
        let mut tasks = JoinSet::new();
        let url: Arc<str> = url.into();
        let mut devices = 0;
        for (index, credentials) in credentials.enumerate() {
            let dial = Dial {
                url: Arc::clone(&url),
                credentials,
                local: (!local_addrs.is_empty()).then(|| local_addrs[index % local_addrs.len()]),
            };
            let device =
                run_device(index, first.take(), dial, Arc::clone(&shared), control.subscribe(), Arc::clone(&permits));
            tasks.spawn(device);
            devices += 1;
        }
        Self { shared, control, tasks, devices }
    }

    /// Waits until every device is caught up or has failed; returns false if `deadline`
    /// came first.
    pub(crate) async fn wait_settled(&self, deadline: Instant) -> bool {
        self.shared.settled.wait_for(self.devices as u64, deadline).await
    }

    /// Orders every device to drop its connection at once and resume (token login, subscribe
    /// from its cursor); returns when the order was given, ns since the run's start.
    pub(crate) fn reconnect_all(&self) -> u64 {
        let ordered_ns = self.shared.now_ns();
        self.shared.reconnect_ordered_ns.store(ordered_ns, Ordering::SeqCst);
        self.control.send_modify(|control| control.generation += 1);
        ordered_ns
    }

    /// Makes devices `0..devices` the stall set (before they stall, so that the others'
    /// latency is recorded apart from the start).
    pub(crate) fn set_stall_set(&self, devices: usize) {
        self.control.send_modify(|control| control.stall_set = devices);
    }

    /// Makes the stall set stop (`true`) or resume (`false`) reading its connections.
    pub(crate) fn stall(&self, stalled: bool) {
        self.control.send_modify(|control| control.stalled = stalled);
    }

    /// Gives the devices a target cursor; each counts once in `Shared::at_target` when
    /// caught up at or beyond it on a connection of the current generation. Returns the
    /// count before, so the caller waits for it plus the devices it expects.
    pub(crate) fn set_target(&self, cursor: u64) -> u64 {
        let before = self.shared.at_target.get();
        self.control.send_modify(|control| control.target = cursor);
        before
    }

    /// Stops every device (each sends a close frame) and sums what they did. Devices still
    /// running at `deadline` are aborted.
    pub(crate) async fn stop(mut self, deadline: Instant) -> FleetTotals {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let control = *self.control.borrow();
        self.control.send_modify(|control| control.stop = true);
        let target = (control.target != NO_TARGET).then_some(control.target);
        let mut totals = FleetTotals {
            devices: self.devices,
            caught_up: self.shared.caught_up.load(Ordering::SeqCst),
            failed: self.shared.failed.load(Ordering::SeqCst),
            target,
            stall_set: (control.stall_set > 0)
                .then(|| StallSetTotals { devices: control.stall_set.min(self.devices), ..StallSetTotals::default() }),
            ..FleetTotals::default()
        };
        loop {
            let joined = match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(Some(joined)) => joined,
                Ok(None) => break,
                Err(_) => {
                    self.tasks.abort_all();
                    continue;
                }
            };
            let outcome = match joined {
                Ok(outcome) => outcome,
                Err(error) if error.is_cancelled() => continue,
                Err(error) => {
                    DeviceOutcome { error: Some(format!("device task failed: {error}")), ..DeviceOutcome::default() }
                }
            };
            totals.add(outcome);
        }
        totals
    }
}

impl FleetTotals {
    /// Adds one device's outcome.
    fn add(&mut self, outcome: DeviceOutcome) {
        let short_of_target = self.target.map_or(0, |target| target.saturating_sub(outcome.cursor));
        self.live_frames += outcome.live_frames;
        self.live_records += outcome.live_records;
        self.catchup_pages += outcome.catchup_pages;
        self.catchup_records += outcome.catchup_records;
        self.recatchups += outcome.recatchups;
        self.gaps += outcome.gaps;
        self.missing_seqs += outcome.missing_seqs;
        self.duplicate_seqs += outcome.duplicate_seqs;
        self.short_of_target += usize::from(short_of_target > 0);
        self.short_of_target_seqs += short_of_target;
        self.reconnects += outcome.reconnects;
        self.reconnect_failures += outcome.reconnect_failures;
        self.resume_pages += outcome.resume_pages;
        self.resume_records += outcome.resume_records;
        self.acks_sent += outcome.acks_sent;
        self.error_frames += outcome.error_frames;
        let ended_early = outcome.error.is_some() && outcome.caught_up;
        if let Some(stall_set) = self.stall_set.as_mut().filter(|_| outcome.in_stall_set) {
            stall_set.catchup_pages += outcome.catchup_pages;
            stall_set.recatchups += outcome.recatchups;
            stall_set.missing_seqs += outcome.missing_seqs;
            stall_set.duplicate_seqs += outcome.duplicate_seqs;
            stall_set.short_of_target += usize::from(short_of_target > 0);
            stall_set.short_of_target_seqs += short_of_target;
            stall_set.ended_early += usize::from(ended_early);
        }
        if let Some(error) = outcome.error {
            self.ended_early += usize::from(ended_early);
            if self.errors.len() < MAX_REPORTED_ERRORS && !self.errors.contains(&error) {
                self.errors.push(error);
            }
        }
    }
}

/// Per-device protocol state.
struct DeviceState {
    index: usize,
    outcome: DeviceOutcome,
    cursor: u64,
    unacked_live: u64,
    /// Where `unacked_live` starts on each connection: the device's phase in the fleet's acks.
    ack_phase: u64,
    /// The coordinator's orders as last seen.
    control: Control,
    /// The reconnect generation of the current connection.
    generation: u64,
    /// Caught up on the current connection (the first catch-up of a resumed session is not
    /// a demotion).
    connection_caught_up: bool,
    /// The target this device last counted in `Shared::at_target` for.
    counted_target: Option<u64>,
}

impl DeviceState {
    fn new(index: usize, cursor: u64, control: Control, ack_every: u64) -> Self {
        let ack_phase = index as u64 % ack_every.max(1);
        Self {
            index,
            outcome: DeviceOutcome::default(),
            cursor,
            unacked_live: ack_phase,
            ack_phase,
            control,
            generation: control.generation,
            connection_caught_up: false,
            counted_target: None,
        }
    }

    fn in_stall_set(&self) -> bool {
        self.index < self.control.stall_set
    }

    /// Whether the device stops reading its connection now.
    fn stalled(&self) -> bool {
        self.control.stalled && self.in_stall_set()
    }

    /// True for a device outside the stall set while there is one.
    fn outside_stall_set(&self) -> bool {
        self.control.stall_set > 0 && !self.in_stall_set()
    }

    /// Forgets the connection: the next one starts unsynced, in the current generation.
    fn start_connection(&mut self) {
        self.generation = self.control.generation;
        self.connection_caught_up = false;
        self.unacked_live = self.ack_phase;
    }

    /// True while resuming after a reconnect order: caught up once, not yet on this
    /// connection.
    fn resuming(&self) -> bool {
        self.outcome.caught_up && !self.connection_caught_up
    }
}

/// How one connection of a device ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The fleet stops.
    Stop,
    /// A reconnect order: drop the connection and resume.
    Reconnect,
    /// The connection failed, or the device gave up on it.
    Failed(String),
}

/// One subscriber, from connecting to the fleet's stop: its first connection (`first`, or a
/// token login), then a new one after each reconnect order.
async fn run_device(
    index: usize,
    first: Option<Connection>,
    dial: Dial,
    shared: Arc<Shared>,
    mut control: watch::Receiver<Control>,
    permits: Arc<Semaphore>,
) -> DeviceOutcome {
    let mut state = DeviceState::new(index, shared.cursor, *control.borrow_and_update(), shared.ack_every);
    // Held until caught up: bounds connects and catch-ups in flight.
    let mut permit = Some(permits.acquire_owned().await.expect("the semaphore is never closed"));
    let opened = async {
        let mut connection = match first {
            Some(connection) => connection,
            None => dial.open().await?,
        };
        connection
            .send(&subscribe_frame(&shared.source, &shared.key, state.cursor, shared.page_size, shared.window))
            .await?;
        anyhow::Ok(connection)
    };
    let opened = tokio::select! {
        opened = opened => opened,
        _ = control.wait_for(|control| control.stop) => Err(anyhow::anyhow!("stopped while connecting")),
    };
    let mut connection = match opened {
        Ok(connection) => connection,
        Err(error) => {
            settle_failed(&shared, &mut state.outcome, format!("{error:#}"));
            state.outcome.cursor = state.cursor;
            return state.outcome;
        }
    };
    // `wait_for` marks what it saw as seen: take it in.
    state.control = *control.borrow();
    loop {
        let ended = drive_connection(&mut connection, &shared, &mut control, &mut state, &mut permit).await;
        match ended {
            Ended::Stop => {
                // A polite goodbye; the server's answering close is not waited for.
                let _ = connection.close(1000, "load scenario done").await;
                break;
            }
            Ended::Reconnect => connection.cut(),
            Ended::Failed(error) if state.resuming() => {
                // A resumed session that broke before catching up: retried like a refused
                // connect.
                connection.cut();
                state.outcome.reconnect_failures += 1;
                state.outcome.error = Some(error);
            }
            Ended::Failed(error) if !state.outcome.caught_up => {
                settle_failed(&shared, &mut state.outcome, error);
                break;
            }
            Ended::Failed(error) => {
                if !shared.stopping.load(Ordering::SeqCst) {
                    state.outcome.error = Some(error);
                }
                break;
            }
        }
        match reconnect(&dial, &shared, &mut control, &mut state).await {
            Some(reopened) => connection = reopened,
            None => break,
        }
    }
    state.outcome.cursor = state.cursor;
    state.outcome.in_stall_set = state.in_stall_set();
    state.outcome
}

/// Opens a new session after a reconnect order, retrying failures with a bounded, jittered
/// backoff until it succeeds or the fleet stops (`None`).
async fn reconnect(
    dial: &Dial,
    shared: &Shared,
    control: &mut watch::Receiver<Control>,
    state: &mut DeviceState,
) -> Option<Connection> {
    let mut failures: u32 = 0;
    loop {
        state.start_connection();
        let attempt = async {
            let mut connection = dial.open().await?;
            let subscribe = subscribe_frame(&shared.source, &shared.key, state.cursor, shared.page_size, shared.window);
            connection.send(&subscribe).await?;
            anyhow::Ok(connection)
        };
        let attempt = tokio::select! {
            attempt = attempt => attempt,
            _ = control.wait_for(|control| control.stop) => return None,
        };
        state.control = *control.borrow();
        match attempt {
            Ok(connection) => {
                state.outcome.reconnects += 1;
                // A failure earlier in this streak was recovered from.
                state.outcome.error = None;
                return Some(connection);
            }
            Err(error) => {
                state.outcome.reconnect_failures += 1;
                state.outcome.error = Some(format!("reconnecting: {error:#}"));
            }
        }
        let delay = reconnect_delay(failures, rand::random_range(0.5..=1.0));
        failures = failures.saturating_add(1);
        // Backoff, not synchronisation: the retry waits out its delay unless the fleet stops.
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = control.wait_for(|control| control.stop) => return None,
        }
    }
}

/// Reads one connection until the fleet stops, a reconnect order comes, or the connection
/// fails. A stalled device keeps the connection but does not read it.
async fn drive_connection(
    connection: &mut Connection,
    shared: &Shared,
    control: &mut watch::Receiver<Control>,
    state: &mut DeviceState,
    permit: &mut Option<tokio::sync::OwnedSemaphorePermit>,
) -> Ended {
    loop {
        if state.control.stop {
            return Ended::Stop;
        }
        if state.control.generation != state.generation {
            return Ended::Reconnect;
        }
        let stalled = state.stalled();
        let incoming = tokio::select! {
            incoming = connection.recv_lean(), if !stalled => incoming,
            changed = control.changed() => {
                if changed.is_err() {
                    return Ended::Stop;
                }
                state.control = *control.borrow_and_update();
                check_target(shared, state);
                continue;
            }
        };
        let frame = match incoming {
            Ok(Incoming::Frame(LeanFrame::Empty)) => continue,
            Ok(Incoming::Frame(frame)) => frame,
            Ok(Incoming::Closed { code, reason }) => {
                return Ended::Failed(format!("closed by the server: {code} {reason}"));
            }
            Err(error) => return Ended::Failed(format!("{error:#}")),
        };
        match on_frame(frame, shared, state, permit) {
            Ok(replies) => {
                for reply in replies {
                    if let Err(error) = connection.send(&reply).await {
                        return Ended::Failed(format!("{error:#}"));
                    }
                    state.outcome.acks_sent += 1;
                }
            }
            Err(error) => return Ended::Failed(error),
        }
        check_target(shared, state);
    }
}

/// Counts the device in `Shared::at_target` (once per target) when it is caught up on a
/// connection of the current generation at or beyond the target cursor.
fn check_target(shared: &Shared, state: &mut DeviceState) {
    let target = state.control.target;
    if target == NO_TARGET
        || !state.connection_caught_up
        || state.generation != state.control.generation
        || state.cursor < target
        || state.counted_target == Some(target)
    {
        return;
    }
    state.counted_target = Some(target);
    shared.at_target.add(1);
}

fn settle_failed(shared: &Shared, outcome: &mut DeviceOutcome, error: String) {
    outcome.error = Some(error);
    shared.failed.fetch_add(1, Ordering::SeqCst);
    shared.settled.add(1);
}

/// Handles one server frame; returns the acks to send, or why the device gives up.
fn on_frame(
    frame: LeanFrame,
    shared: &Shared,
    state: &mut DeviceState,
    permit: &mut Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<Vec<ClientFrame>, String> {
    let frame = match frame {
        LeanFrame::Changes(changes) => return Ok(on_changes(&changes, shared, state)),
        LeanFrame::Other(frame) => frame,
        LeanFrame::Empty => return Ok(Vec::new()),
    };
    match frame {
        server_frame::Msg::Changes(changes) => Ok(on_changes(&LeanChanges::of(&changes), shared, state)),
        server_frame::Msg::SyncState(sync) => on_sync_state(&sync, shared, state, permit).map(|()| Vec::new()),
        server_frame::Msg::Error(error) => {
            if error.fatal || !state.connection_caught_up {
                return Err(describe_error(&error));
            }
            state.outcome.error_frames += 1;
            Ok(Vec::new())
        }
        server_frame::Msg::Welcome(_)
        | server_frame::Msg::MutationAck(_)
        | server_frame::Msg::MutationResult(_)
        | server_frame::Msg::SearchResult(_)
        | server_frame::Msg::RpcReply(_)
        | server_frame::Msg::BulkReady(_)
        | server_frame::Msg::Command(_) => Ok(Vec::new()),
    }
}

/// Accounts changes `from..=to` against a device's `cursor`: returns the sequences received
/// again (at or below the cursor) and the sequences skipped (between the cursor and `from`).
fn account_range(cursor: u64, from: u64, to: u64) -> (u64, u64) {
    let duplicates = if from <= cursor { (cursor.min(to) + 1).saturating_sub(from) } else { 0 };
    let missing = from.saturating_sub(cursor.saturating_add(1));
    (duplicates, missing)
}

fn on_changes(changes: &LeanChanges, shared: &Shared, state: &mut DeviceState) -> Vec<ClientFrame> {
    let received_ns = shared.now_ns();
    if !changes.snapshot {
        let (duplicates, missing) = account_range(state.cursor, changes.from, changes.to);
        state.outcome.duplicate_seqs += duplicates;
        state.outcome.missing_seqs += missing;
        state.outcome.gaps += u64::from(missing > 0);
    }
    if changes.page > 0 {
        // Catch-up: after a snapshot's last page the cursor is the snapshot's sequence;
        // log pages move it to `to`.
        if !changes.snapshot || changes.snapshot_done {
            state.cursor = state.cursor.max(changes.to);
        }
        if state.connection_caught_up {
            // Demoted: the server pages from the log instead of pushing.
            state.outcome.catchup_pages += 1;
            let counted = shared.count_probes(&changes.probes, received_ns, &shared.catchup_latency, false);
            shared.count_for_key(&changes.key, counted);
            state.outcome.catchup_records += counted;
        } else if state.outcome.caught_up {
            // Resuming after a reconnect: what was missed while away.
            state.outcome.resume_pages += 1;
            let counted = shared.count_probes(&changes.probes, received_ns, &shared.catchup_latency, false);
            shared.count_for_key(&changes.key, counted);
            state.outcome.resume_records += counted;
        }
        return vec![ack_frame(&shared.source, &shared.key, state.cursor, changes.page)];
    }
    state.outcome.live_frames += 1;
    state.cursor = state.cursor.max(changes.to);
    let outside_stall_set = state.outside_stall_set();
    let counted = shared.count_probes(&changes.probes, received_ns, &shared.live_latency, outside_stall_set);
    shared.count_for_key(&changes.key, counted);
    state.outcome.live_records += counted;
    state.unacked_live += changes.to.saturating_sub(changes.from) + 1;
    if state.unacked_live >= shared.ack_every {
        state.unacked_live = 0;
        return vec![ack_frame(&shared.source, &shared.key, state.cursor, 0)];
    }
    Vec::new()
}

fn on_sync_state(
    sync: &SyncState,
    shared: &Shared,
    state: &mut DeviceState,
    permit: &mut Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<(), String> {
    match SyncStatus::try_from(sync.status) {
        Ok(SyncStatus::CaughtUp) => {
            state.cursor = state.cursor.max(sync.cursor);
            if !state.outcome.caught_up {
                state.outcome.caught_up = true;
                permit.take();
                shared.caught_up.fetch_add(1, Ordering::SeqCst);
                shared.settled.add(1);
            } else if state.connection_caught_up {
                state.outcome.recatchups += 1;
            } else {
                let ordered_ns = shared.reconnect_ordered_ns.load(Ordering::SeqCst);
                shared.resume_latency.lock().saturating_record(shared.now_ns().saturating_sub(ordered_ns));
            }
            state.connection_caught_up = true;
            Ok(())
        }
        Ok(SyncStatus::Error) => Err(sync.error.as_ref().map_or_else(|| "partition error".to_owned(), describe_error)),
        Ok(SyncStatus::InProgress | SyncStatus::Reset | SyncStatus::Unspecified) | Err(_) => Ok(()),
    }
}

/// How the fleet's ramp-up went.
#[derive(Debug, Serialize)]
pub(crate) struct RampUp {
    /// The cursor devices subscribed with (the partition's head, or 0 with `--from-zero`).
    pub(crate) cursor: u64,
    pub(crate) devices: usize,
    pub(crate) caught_up: usize,
    pub(crate) failed: usize,
    /// Password login (argon2 on the server).
    pub(crate) login_secs: f64,
    /// First token login to the last device caught up.
    pub(crate) connect_secs: f64,
    pub(crate) source_addrs: Vec<IpAddr>,
    pub(crate) open_files_limit: u64,
}

impl RampUp {
    /// Adds the ramp-up's rows (devices caught up, login and connect times) to a report table.
    pub(crate) fn add_rows(&self, table: &mut crate::report::Table) {
        table
            .row("devices caught up", format!("{} of {} ({} failed)", self.caught_up, self.devices, self.failed))
            .row("ramp-up", format!("login {:.2} s, connect + catch up {:.2} s", self.login_secs, self.connect_secs));
    }
}

/// Open files kept for everything but device sockets (gRPC, /proc reads, the runtime).
const RESERVED_FILES: u64 = 64;

/// Logs in once, finds the cursor to subscribe with, starts the fleet and waits until every
/// device is caught up or failed. `run_start` is the clock of the run's `sent_ns` fields.
pub(crate) async fn ramp_up(
    args: &FleetArgs,
    run_start: Instant,
    deadline: Instant,
) -> anyhow::Result<(Fleet, Arc<Shared>, RampUp)> {
    let server = crate::loopback::check_url(&args.url, &["ws"]).await?;
    let open_files_limit = crate::loopback::raise_open_files_limit()?;
    if args.devices == 0 {
        bail!("--devices must be at least 1");
    }
    if args.devices as u64 + RESERVED_FILES > open_files_limit {
        bail!("{} devices need more open files than this process may hold ({open_files_limit})", args.devices);
    }
    let source_addrs = crate::loopback::source_addrs(server, args.source_addrs)?;
    let login_started = Instant::now();
    let (mut first, welcome) = tokio::time::timeout_at(deadline, login(&args.url, &args.user, &args.password))
        .await
        .context("timed out logging in")??;
    let login_secs = login_started.elapsed();
    let cursor = if args.from_zero { 0 } else { partition_head(&mut first, &args.source, &args.key).await? };
    let shared = Arc::new(Shared::new(args, cursor, run_start));
    let connect_started = Instant::now();
    let fleet = Fleet::start(
        Arc::clone(&shared),
        first,
        &args.url,
        &welcome.session_token,
        args.devices,
        &source_addrs,
        args.connect_concurrency,
    );
    let settled = fleet.wait_settled(deadline).await;
    let ramp_up = RampUp {
        cursor,
        devices: args.devices,
        caught_up: shared.caught_up.load(Ordering::SeqCst),
        failed: shared.failed.load(Ordering::SeqCst),
        login_secs: crate::report::secs(login_secs),
        connect_secs: crate::report::secs(connect_started.elapsed()),
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

/// Time devices get to close politely when the fleet stops.
pub(crate) const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs a scenario bounded in time: `scenario` gets the run's start (the clock of `sent_ns`)
/// and its deadline, `max_secs` from now; whatever hangs, the run ends `STOP_GRACE` after
/// the deadline.
pub(crate) async fn run_bounded<F, Fut>(max_secs: u64, scenario: F) -> anyhow::Result<()>
where
    F: FnOnce(Instant, Instant) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let run_start = Instant::now();
    let deadline = run_start + std::time::Duration::from_secs(max_secs);
    tokio::time::timeout_at(deadline + STOP_GRACE, scenario(run_start, deadline))
        .await
        .context("the run overran --max-secs")?
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use syncline_client_sim::probe::{PROBE_NAME_FIELD, RUN_FIELD, SENT_NS_FIELD, probe_name};
    use syncline_proto::v1::{Changes, Record, Value};

    use super::*;

    pub(crate) fn fleet_args() -> FleetArgs {
        FleetArgs {
            url: "ws://127.0.0.1:1/v1/sync".into(),
            devices: 1,
            user: "demo".into(),
            password: "demo".into(),
            source: "Account".into(),
            key: String::new(),
            from_zero: false,
            source_addrs: 0,
            connect_concurrency: 1,
            ack_every: DEFAULT_ACK_EVERY,
            page_size: 0,
            window: 4,
        }
    }

    fn shared(cursor: u64, ack_every: u64) -> Shared {
        let args = FleetArgs { ack_every, ..fleet_args() };
        Shared::new(&args, cursor, Instant::now())
    }

    fn probe(id: &str, run: i64, sent_ns: i64) -> Record {
        let mut fields = BTreeMap::new();
        fields.insert(RUN_FIELD.to_owned(), Value::int(run));
        fields.insert(SENT_NS_FIELD.to_owned(), Value::int(sent_ns));
        Record { id: id.to_owned(), fields, version: 0 }
    }

    fn live(from: u64, to: u64, upserts: Vec<Record>) -> Changes {
        Changes { source: "Account".into(), key: "*".into(), from, to, upserts, ..Changes::default() }
    }

    /// Handles a decoded `Changes` frame as the lean receive path hands it over.
    fn on_changes(changes: &Changes, shared: &Shared, state: &mut DeviceState) -> Vec<ClientFrame> {
        super::on_changes(&LeanChanges::of(changes), shared, state)
    }

    fn state(cursor: u64) -> DeviceState {
        let mut state = DeviceState::new(0, cursor, Control::default(), DEFAULT_ACK_EVERY);
        state.outcome.caught_up = true;
        state.connection_caught_up = true;
        state
    }

    #[test]
    fn live_pushes_count_this_runs_records_and_ack_every_n_changes() {
        let shared = shared(10, 3);
        let mut state = state(10);
        let tag = shared.run_tag;
        let earlier_run = probe("old", tag.wrapping_add(1), 0);
        assert!(on_changes(&live(11, 11, vec![probe("a", tag, 0)]), &shared, &mut state).is_empty());
        assert!(on_changes(&live(12, 12, vec![earlier_run]), &shared, &mut state).is_empty());
        let acks = on_changes(&live(13, 13, vec![probe("b", tag, 0)]), &shared, &mut state);
        assert_eq!(acks, [ack_frame("Account", "", 13, 0)]);
        assert_eq!(state.outcome.live_frames, 3);
        assert_eq!(state.outcome.live_records, 2);
        assert_eq!(state.outcome.gaps, 0);
        assert_eq!(shared.delivered.get(), 2);
        assert_eq!(shared.live_latency.lock().len(), 2);
        // A push that does not follow the cursor is a gap.
        on_changes(&live(20, 20, Vec::new()), &shared, &mut state);
        assert_eq!(state.outcome.gaps, 1);
        assert_eq!(state.cursor, 20);
    }

    #[test]
    fn devices_ack_at_their_own_phase_so_the_fleet_does_not_ack_in_lockstep() {
        let shared = shared(0, 10);
        let mut state = DeviceState::new(3, 0, Control::default(), 10);
        state.outcome.caught_up = true;
        state.connection_caught_up = true;
        let acked_at = |state: &mut DeviceState, from: u64, to: u64| -> Vec<u64> {
            (from..=to)
                .filter(|&cursor| !on_changes(&live(cursor, cursor, Vec::new()), &shared, state).is_empty())
                .collect()
        };
        // Device 3 of a fleet acking every 10 changes: first after 7, then every 10.
        assert_eq!(acked_at(&mut state, 1, 30), [7, 17, 27]);
        // A new connection starts at the same phase again.
        state.start_connection();
        state.connection_caught_up = true;
        assert_eq!(acked_at(&mut state, 31, 50), [37, 47]);
        // Device 0 acks on the tenth change, as before.
        let mut first = DeviceState::new(0, 0, Control::default(), 10);
        first.outcome.caught_up = true;
        first.connection_caught_up = true;
        assert_eq!(acked_at(&mut first, 1, 20), [10, 20]);
    }

    #[test]
    fn catch_up_pages_are_acked_at_once_and_counted_apart_after_the_first_catch_up() {
        let shared = shared(0, 100);
        let mut state = state(0);
        state.outcome.caught_up = false;
        state.connection_caught_up = false;
        let snapshot = Changes { page: 1, snapshot: true, to: 50, ..live(0, 50, Vec::new()) };
        assert_eq!(on_changes(&snapshot, &shared, &mut state), [ack_frame("Account", "", 0, 1)]);
        let done = Changes { page: 2, snapshot: true, snapshot_done: true, ..live(0, 50, Vec::new()) };
        assert_eq!(on_changes(&done, &shared, &mut state), [ack_frame("Account", "", 50, 2)]);
        assert_eq!(state.outcome.catchup_pages, 0, "the first catch-up is not a demotion");
        state.outcome.caught_up = true;
        state.connection_caught_up = true;
        let page = Changes { page: 3, ..live(51, 52, vec![probe("a", shared.run_tag, 0)]) };
        assert_eq!(on_changes(&page, &shared, &mut state), [ack_frame("Account", "", 52, 3)]);
        assert_eq!((state.outcome.catchup_pages, state.outcome.catchup_records), (1, 1));
        assert_eq!(shared.catchup_latency.lock().len(), 1);
    }

    #[test]
    fn ranges_are_accounted_against_the_cursor() {
        assert_eq!(account_range(10, 11, 15), (0, 0), "follows on");
        assert_eq!(account_range(10, 8, 12), (3, 0), "8..=10 again");
        assert_eq!(account_range(10, 5, 9), (5, 0), "all of it again");
        assert_eq!(account_range(10, 14, 15), (0, 3), "11..=13 skipped");
        assert_eq!(account_range(0, 1, 1), (0, 0));
        assert_eq!(account_range(u64::MAX, 1, 2), (2, 0));
    }

    #[test]
    fn duplicates_and_gaps_are_counted_in_sequences() {
        let shared = shared(10, 100);
        let mut state = state(10);
        on_changes(&live(11, 12, Vec::new()), &shared, &mut state);
        on_changes(&live(12, 13, Vec::new()), &shared, &mut state);
        on_changes(&live(16, 16, Vec::new()), &shared, &mut state);
        assert_eq!((state.outcome.duplicate_seqs, state.outcome.missing_seqs, state.outcome.gaps), (1, 2, 1));
        assert_eq!(state.cursor, 16);
    }

    #[test]
    fn a_resumed_session_counts_its_catch_up_apart_from_demotions_and_loses_nothing() {
        let shared = shared(10, 100);
        let mut state = state(10);
        let tag = shared.run_tag;
        let mut permit = None;
        on_changes(&live(11, 11, vec![probe("a", tag, 0)]), &shared, &mut state);
        // The reconnect order: a new connection in generation 1, subscribed from cursor 11.
        state.control.generation = 1;
        state.start_connection();
        assert!(state.resuming());
        let missed = Changes { page: 1, ..live(12, 13, vec![probe("b", tag, 0), probe("c", tag, 0)]) };
        assert_eq!(on_changes(&missed, &shared, &mut state), [ack_frame("Account", "", 13, 1)]);
        let caught_up = SyncState { status: SyncStatus::CaughtUp as i32, cursor: 13, ..SyncState::default() };
        on_sync_state(&caught_up, &shared, &mut state, &mut permit).unwrap();
        assert!(!state.resuming());
        on_changes(&live(14, 14, vec![probe("d", tag, 0)]), &shared, &mut state);
        let outcome = &state.outcome;
        assert_eq!((outcome.resume_pages, outcome.resume_records), (1, 2));
        assert_eq!((outcome.catchup_pages, outcome.recatchups), (0, 0), "a resume is not a demotion");
        assert_eq!((outcome.live_records, outcome.missing_seqs, outcome.duplicate_seqs), (2, 0, 0));
        assert_eq!(shared.delivered.get(), 4);
        assert_eq!(shared.resume_latency.lock().len(), 1);
        // A server that resent what the device had would show as duplicates.
        let resent = Changes { page: 2, ..live(13, 14, Vec::new()) };
        on_changes(&resent, &shared, &mut state);
        assert_eq!(state.outcome.duplicate_seqs, 2);
    }

    #[test]
    fn devices_count_at_the_target_once_caught_up_on_a_connection_of_the_current_generation() {
        let shared = shared(10, 100);
        let mut state = state(12);
        check_target(&shared, &mut state);
        assert_eq!(shared.at_target.get(), 0, "no target yet");
        state.control.target = 12;
        state.control.generation = 1;
        check_target(&shared, &mut state);
        assert_eq!(shared.at_target.get(), 0, "still on the connection of generation 0");
        state.start_connection();
        check_target(&shared, &mut state);
        assert_eq!(shared.at_target.get(), 0, "not caught up on the new connection");
        state.connection_caught_up = true;
        check_target(&shared, &mut state);
        check_target(&shared, &mut state);
        assert_eq!(shared.at_target.get(), 1, "once per target");
        state.control.target = 13;
        check_target(&shared, &mut state);
        assert_eq!(shared.at_target.get(), 1, "below the new target");
        state.cursor = 14;
        check_target(&shared, &mut state);
        assert_eq!(shared.at_target.get(), 2);
    }

    #[test]
    fn the_stall_set_stalls_only_when_told_and_its_latency_is_kept_apart() {
        let shared = shared(0, 100);
        let mut stalled = state(0);
        let mut other = state(0);
        other.index = 5;
        for state in [&mut stalled, &mut other] {
            state.control.stall_set = 2;
        }
        assert!(!stalled.stalled() && stalled.in_stall_set() && !stalled.outside_stall_set());
        assert!(other.outside_stall_set());
        stalled.control.stalled = true;
        other.control.stalled = true;
        assert!(stalled.stalled() && !other.stalled());
        let tag = shared.run_tag;
        shared.phase_split_ns.store(1_000, Ordering::SeqCst);
        on_changes(&live(1, 2, vec![probe("a", tag, 10), probe("b", tag, 2_000)]), &shared, &mut other);
        on_changes(&live(1, 1, vec![probe("a", tag, 10)]), &shared, &mut stalled);
        assert_eq!(shared.others_latency[0].lock().len(), 1);
        assert_eq!(shared.others_latency[1].lock().len(), 1);
        assert_eq!(shared.live_latency.lock().len(), 3);
    }

    #[test]
    fn totals_count_what_devices_missed_short_of_the_target_and_split_out_the_stall_set() {
        let mut totals = FleetTotals {
            target: Some(100),
            stall_set: Some(StallSetTotals { devices: 1, ..StallSetTotals::default() }),
            ..FleetTotals::default()
        };
        totals.add(DeviceOutcome { caught_up: true, cursor: 100, duplicate_seqs: 1, ..DeviceOutcome::default() });
        totals.add(DeviceOutcome {
            caught_up: true,
            cursor: 90,
            missing_seqs: 2,
            in_stall_set: true,
            error: Some("closed by the server: 4408 idle".into()),
            ..DeviceOutcome::default()
        });
        assert_eq!((totals.short_of_target, totals.short_of_target_seqs), (1, 10));
        assert_eq!((totals.missing_seqs, totals.duplicate_seqs, totals.ended_early), (2, 1, 1));
        let stall_set = totals.stall_set.unwrap();
        assert_eq!((stall_set.short_of_target_seqs, stall_set.missing_seqs, stall_set.duplicate_seqs), (10, 2, 0));
        assert_eq!(stall_set.ended_early, 1);
    }

    #[test]
    fn reconnect_delays_grow_to_a_bound_with_jitter() {
        assert_eq!(reconnect_delay(0, 1.0), RECONNECT_BACKOFF_INITIAL);
        assert_eq!(reconnect_delay(0, 0.5), RECONNECT_BACKOFF_INITIAL / 2);
        assert_eq!(reconnect_delay(1, 1.0), RECONNECT_BACKOFF_INITIAL * 2);
        assert_eq!(reconnect_delay(0, 7.0), RECONNECT_BACKOFF_INITIAL, "jitter is clamped");
        for failures in [5, 31, 32, 1_000, u32::MAX] {
            assert_eq!(reconnect_delay(failures, 1.0), RECONNECT_BACKOFF_MAX, "{failures}");
        }
    }

    /// A record of a fixed-schema source whose name may carry a probe.
    fn named(name: &str) -> Record {
        Record {
            id: "n".to_owned(),
            fields: BTreeMap::from([(PROBE_NAME_FIELD.to_owned(), Value::string(name))]),
            version: 0,
        }
    }

    #[test]
    fn probes_in_names_are_counted_like_int_probes() {
        let shared = shared(0, 100);
        let mut state = state(0);
        let tag = shared.run_tag;
        let records = vec![
            named(&probe_name(tag, 0, 1)),
            named(&probe_name(tag.wrapping_add(1), 0, 2)),
            named("Acme Corp"),
            probe("b", tag, 0),
        ];
        on_changes(&live(1, 4, records), &shared, &mut state);
        assert_eq!(state.outcome.live_records, 2);
        assert_eq!(shared.delivered.get(), 2);
    }

    #[tokio::test]
    async fn milestones_wake_waiters_when_the_target_is_reached() {
        let milestone = Arc::new(Milestone::default());
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let counter = Arc::clone(&milestone);
        let adder = tokio::spawn(async move {
            for _ in 0..5 {
                counter.add(1);
                tokio::task::yield_now().await;
            }
        });
        assert!(milestone.wait_for(5, deadline).await);
        adder.await.unwrap();
        let soon = Instant::now() + std::time::Duration::from_millis(10);
        assert!(!milestone.wait_for(6, soon).await, "the deadline ends the wait");
    }
}
