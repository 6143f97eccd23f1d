//! Configuration: the only code that reads config files or the environment.
//!
//! Precedence: built-in defaults, then the TOML file, then `SYNCLINE_*` environment
//! variables, then CLI flags. The environment is passed in as a map so tests never touch the
//! process environment. [`Config::validate`] turns the raw tree into typed values once.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Default device (WebSocket) listener: loopback only until an operator opens it up.
pub const DEFAULT_DEVICE_ADDR: &str = "127.0.0.1:7700";
/// Default gRPC listener (Ingest, later Admin): loopback only.
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:7701";
/// Largest device frame: a page of a few hundred records fits comfortably, and one device
/// cannot make the server buffer more than this per read.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1024 * 1024;
/// Outbound frames queued per connection before a live subscriber is demoted to catch-up:
/// absorbs bursts of about a second at 100 changes/s without demotion.
pub const DEFAULT_OUTBOUND_QUEUE: usize = 128;
/// Default bound of the encoded bytes queued for live push per connection (1 MiB, as
/// Centrifugo's client queue).
pub const DEFAULT_OUTBOUND_QUEUE_BYTES: usize = 1024 * 1024;
/// Server ping interval: below common NAT and load-balancer idle timeouts (60 s).
pub const DEFAULT_HEARTBEAT_SECS: u64 = 25;
/// Idle timeout: more than two missed heartbeats.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;
/// Time a new connection has to complete a Hello before it is closed (Error TIMEOUT, close
/// 4408): a device sends Hello right after connecting, and a password check or a channel's
/// login takes well under a second, so 10 s covers slow mobile networks while a socket that
/// only answers pings holds its resources for no longer than this.
pub const DEFAULT_HELLO_TIMEOUT_MS: u64 = 10_000;
/// Most simultaneous device connections per process (about the file-descriptor limit of a
/// default Linux service).
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
/// Default catch-up page size, in records or changes.
pub const DEFAULT_PAGE_SIZE: u32 = 500;
/// Largest page size a device may ask for: bounds one page's frame and read transaction.
pub const DEFAULT_MAX_PAGE_SIZE: u32 = 2_000;
/// Most encoded bytes of one catch-up page or live frame (256 KiB): pages of typical records
/// (a few hundred bytes) stay bounded by `DEFAULT_PAGE_SIZE`, while pages of large ones stop
/// at a quarter of the live queue's byte bound (`DEFAULT_OUTBOUND_QUEUE_BYTES`), so a page
/// never holds up a connection's live frames for long, and a full window of
/// `DEFAULT_WINDOW` pages is one queue's worth. Far below common WebSocket message limits
/// (the device library's 16 MiB, browsers' and proxies' few MiB). A single record larger than
/// the bound goes alone in its frame; one larger than a device's message limit cannot reach it,
/// which tonic's default 4 MiB message limit on Ingest and channel streams rules out today.
pub const DEFAULT_MAX_PAGE_BYTES: usize = 256 * 1024;
/// Smallest `device.max_page_bytes` accepted: room for a page's own fields and a few small
/// records.
pub const MIN_MAX_PAGE_BYTES: usize = 1024;
/// Default and largest in-flight window of unacked catch-up pages.
pub const DEFAULT_WINDOW: u32 = 4;
pub const DEFAULT_MAX_WINDOW: u32 = 16;
/// Most subscriptions one connection may hold.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 256;
/// Unfinished mutations per device: a week offline at a few hundred edits a day.
pub const DEFAULT_MAX_PENDING_MUTATIONS: u64 = 10_000;
/// Session tokens last 30 days; a device that stays away longer logs in again.
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 30 * 24 * 3600;
/// Password checks at once (`auth.login_concurrency`): 0 means one per core, at most
/// [`syncline_proto::sdk::passwords::MAX_DEFAULT_THREADS`], since each local hashing thread
/// keeps an argon2 buffer (19 MiB with the default parameters) for good.
pub const DEFAULT_LOGIN_CONCURRENCY: usize = 0;
/// Most password checks at once an operator may configure: 64 hashing threads already hold
/// 1.2 GiB of argon2 buffers.
pub const MAX_LOGIN_CONCURRENCY: usize = 64;
/// Logins that may wait for a password check; more are refused (RESOURCE_EXHAUSTED). At
/// ~20-50 ms per check, 64 drain in about a second on two cores.
pub const DEFAULT_LOGIN_QUEUE: usize = syncline_proto::sdk::passwords::DEFAULT_QUEUE;
/// Longest a login waits for a password check before it is refused (RESOURCE_EXHAUSTED): a
/// device is better told to retry than left hanging.
pub const DEFAULT_LOGIN_QUEUE_TIMEOUT_MS: u64 = 2_000;
/// Wrong passwords for one user name within the window that block it: a person mistyping
/// stays far below, an online guesser gets 10 tries per backoff.
pub const DEFAULT_MAX_FAILED_LOGINS_PER_USER: u32 = 10;
/// Wrong passwords from one address (IPv6: one /64) within the window that block it: room
/// for many people behind one NAT, none for credential stuffing from one host.
pub const DEFAULT_MAX_FAILED_LOGINS_PER_ADDRESS: u32 = 100;
/// The window failed logins are counted in.
pub const DEFAULT_FAILED_LOGIN_WINDOW_SECS: u64 = 300;
/// The first block's length; each block of the same key in a row doubles it (up to 32x).
pub const DEFAULT_FAILED_LOGIN_BACKOFF_SECS: u64 = 60;
/// Longest failed-login window or first backoff: a day (a block can double to 32 days).
pub const MAX_FAILED_LOGIN_SECS: u64 = 24 * 3600;
/// Longest a login may be configured to wait for a password check: a device's Hello should
/// be answered within a minute.
pub const MAX_LOGIN_QUEUE_TIMEOUT_MS: u64 = 60_000;
/// Recent log entries kept uncompacted: devices less than this far behind catch up from the
/// log instead of taking a snapshot.
pub const DEFAULT_COMPACT_KEEP_RECENT: u64 = 100_000;
/// How often partitions are checked for compaction.
pub const DEFAULT_COMPACT_INTERVAL_SECS: u64 = 300;
/// How long a finished mutation's outcome is kept (30 days, as long as a session token
/// lives): a device that resends a mutation id within it gets the outcome back instead of a
/// second dispatch. A device offline longer logs in again anyway.
pub const DEFAULT_MUTATION_OUTCOME_RETENTION_HOURS: u64 = 30 * 24;
/// How often recorded device cursors are written to the store.
pub const DEFAULT_CURSOR_FLUSH_MILLIS: u64 = 1_000;
/// Threads of the runtime serving the gRPC endpoint (Ingest) and change capture, by default.
pub const DEFAULT_GRPC_THREADS: usize = 1;
/// At most this many of those threads.
pub const MAX_GRPC_THREADS: usize = 256;
/// Longest push interval (`device.push_interval_ms`).
pub const MAX_PUSH_INTERVAL_MS: u64 = 1_000;
/// Time allowed for graceful shutdown before the process exits anyway.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;
/// redb page cache.
pub const DEFAULT_STORE_CACHE_MB: usize = 256;
/// Records per source seeded into the demo app's partitions.
pub const DEFAULT_DEMO_RECORDS: u32 = 2_000;
/// Deadline of a device's RPC call that names none: long enough for a business operation
/// over a slow backend, short enough that a device is not left waiting on a hung one.
pub const DEFAULT_RPC_DEADLINE_MS: u64 = 10_000;
/// Longest deadline a device may ask for: bounds how long one call holds its concurrency
/// slots and backend resources.
pub const DEFAULT_RPC_MAX_DEADLINE_MS: u64 = 60_000;
/// Largest RPC request or reply payload: a form or a small document, well inside one
/// device frame (`device.max_frame_bytes`).
pub const DEFAULT_RPC_MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// RPC calls one device may have in flight: enough for an app's parallel screens, few enough
/// that one device cannot take a service's whole capacity.
pub const DEFAULT_RPC_MAX_IN_FLIGHT_PER_DEVICE: usize = 8;
/// RPC calls in flight to one service, from all devices: protects the backend; calls beyond
/// it are refused (RESOURCE_EXHAUSTED) rather than queued.
pub const DEFAULT_RPC_MAX_IN_FLIGHT_PER_SERVICE: usize = 1_000;

/// The whole configuration tree, as written in TOML. See `syncline.example.toml`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory of the embedded store.
    pub data_dir: PathBuf,
    /// Log output: "pretty" or "json".
    pub log_format: String,
    pub device: DeviceSection,
    pub grpc: GrpcSection,
    pub tls: TlsSection,
    pub auth: AuthSection,
    pub store: StoreSection,
    pub demo: DemoSection,
    pub rpc: RpcSection,
    /// Sources by name. Empty with the demo enabled: the demo's sources.
    pub sources: BTreeMap<String, SourceSection>,
}

/// Mobile RPC: device `RpcCall`s routed to backend `MobileService`s by service name.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RpcSection {
    /// Deadline of a call whose `deadline_ms` is 0.
    pub default_deadline_ms: u64,
    /// Cap on a call's deadline.
    pub max_deadline_ms: u64,
    /// Largest request payload (larger: BAD_REQUEST) and reply payload (larger: INTERNAL).
    /// A request must also fit in one device frame (`device.max_frame_bytes`).
    pub max_payload_bytes: usize,
    /// Calls one device connection may have in flight (more: RESOURCE_EXHAUSTED).
    pub max_in_flight_per_device: usize,
    /// Backend services by the name devices call.
    pub services: BTreeMap<String, RpcServiceSection>,
}

/// One backend service devices may call.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RpcServiceSection {
    /// gRPC endpoint serving `syncline.v1.MobileService`, e.g. "http://127.0.0.1:7801".
    pub endpoint: String,
    /// Calls in flight to this service from all devices (more: RESOURCE_EXHAUSTED).
    #[serde(default = "default_rpc_max_in_flight")]
    pub max_in_flight: usize,
}

fn default_rpc_max_in_flight() -> usize {
    DEFAULT_RPC_MAX_IN_FLIGHT_PER_SERVICE
}

impl RpcServiceSection {
    /// Returns a service at `endpoint` with the default limit.
    pub fn new(endpoint: &str) -> Self {
        Self { endpoint: endpoint.to_owned(), max_in_flight: DEFAULT_RPC_MAX_IN_FLIGHT_PER_SERVICE }
    }
}

impl Default for RpcSection {
    fn default() -> Self {
        Self {
            default_deadline_ms: DEFAULT_RPC_DEADLINE_MS,
            max_deadline_ms: DEFAULT_RPC_MAX_DEADLINE_MS,
            max_payload_bytes: DEFAULT_RPC_MAX_PAYLOAD_BYTES,
            max_in_flight_per_device: DEFAULT_RPC_MAX_IN_FLIGHT_PER_DEVICE,
            services: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceSection {
    pub addr: String,
    pub max_frame_bytes: usize,
    pub outbound_queue: usize,
    /// Bytes of live frames queued per connection before a slow device is switched to
    /// catch-up from the log.
    pub outbound_queue_bytes: usize,
    pub heartbeat_secs: u64,
    pub idle_timeout_secs: u64,
    /// Milliseconds a new connection has to complete a Hello; then it gets Error TIMEOUT and
    /// close 4408.
    pub hello_timeout_ms: u64,
    pub max_connections: usize,
    /// Most simultaneous sessions of one user (0: no limit); more are refused at Hello
    /// (RESOURCE_EXHAUSTED, close 4429).
    pub max_connections_per_user: usize,
    pub default_page_size: u32,
    pub max_page_size: u32,
    /// Most encoded bytes of one catch-up page or live push: a page ends before the record
    /// or change that would take it past this (one larger than it goes alone).
    pub max_page_bytes: usize,
    pub default_window: u32,
    pub max_window: u32,
    pub max_subscriptions: usize,
    /// Unfinished mutations a device may have queued; more are refused (RESOURCE_EXHAUSTED).
    pub max_pending_mutations: u64,
    /// Shortest time between two live pushes of one partition to its devices, in
    /// milliseconds: changes that follow a push within it are held and go out together, in
    /// one socket write per device (0: each commit is pushed at once).
    pub push_interval_ms: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcSection {
    pub addr: String,
    /// When set, Ingest calls must carry `authorization: Bearer <token>`.
    pub ingest_token: Option<String>,
    /// Threads of the runtime that serves the gRPC endpoint and runs change capture from
    /// channels, apart from the device connections' runtime, so a backend's write never
    /// queues behind device I/O.
    pub threads: usize,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// PEM certificate chain; with `key`, both listeners serve TLS.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    pub token_ttl_secs: u64,
    /// When set, device logins are checked by this channel's Authenticate (which also says
    /// which custom partitions the user may sync) instead of local users.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// When set, devices may log in with a backend token: a JWT the app's backend signs with
    /// HS256 and this secret (at least 32 bytes; empty means not set). See
    /// `Hello.backend_token` in `proto/syncline/v1/device.proto`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_token_secret: Option<String>,
    /// When set, backend tokens must carry this `aud` claim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_token_audience: Option<String>,
    /// Password checks at once: local argon2 threads, or Authenticate calls in flight to the
    /// login channel (0: one per core, at most 8).
    pub login_concurrency: usize,
    /// Logins that may wait for a password check; more are refused (RESOURCE_EXHAUSTED).
    pub login_queue: usize,
    /// Longest a login waits for a password check before it is refused.
    pub login_queue_timeout_ms: u64,
    /// Wrong passwords for one user name within the window that block it (0: no limit).
    pub max_failed_logins_per_user: u32,
    /// Wrong passwords from one address within the window that block it (0: no limit).
    pub max_failed_logins_per_address: u32,
    /// The window failed logins are counted in.
    pub failed_login_window_secs: u64,
    /// How long the first block lasts (doubled for each block in a row).
    pub failed_login_backoff_secs: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    pub cache_mb: usize,
    pub compact_keep_recent: u64,
    pub compact_interval_secs: u64,
    pub cursor_flush_millis: u64,
    pub mutation_outcome_retention_hours: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DemoSection {
    /// Serves the demo app (sources `Account` and `Contact` from the built-in CRM example
    /// channel, user `demo` with password `demo`) when no sources are configured.
    pub enabled: bool,
    /// Accounts seeded into the demo channel's database on first start.
    pub records: u32,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// "user" (one partition per user), "app" (one partition shared by all users) or
    /// "custom" (keys assigned by the channel).
    pub partitioning: String,
    /// gRPC endpoint of the channel that owns the source's data, e.g.
    /// "http://127.0.0.1:7801". Without one the source is fed by Ingest only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// How changes are captured: "ingest" (the backend pushes), "watch" (follow the
    /// channel's change stream) or "poll" (re-query partitions with subscribers).
    #[serde(default = "default_capture")]
    pub capture: String,
    /// Interval of "poll" capture.
    #[serde(default = "default_poll_interval_secs")]
    pub poll_interval_secs: u64,
    /// What happens when a device's update is based on an old version: "reject",
    /// "last_write_wins" or "channel" (the channel decides).
    #[serde(default = "default_conflict")]
    pub conflict: String,
    /// Catch-up page size for this source (default: device.default_page_size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size: Option<u32>,
}

/// Default poll interval: frequent enough for interactive data, rare enough for a backend.
pub const DEFAULT_POLL_INTERVAL_SECS: u64 = 30;

fn default_capture() -> String {
    "ingest".into()
}

fn default_poll_interval_secs() -> u64 {
    DEFAULT_POLL_INTERVAL_SECS
}

fn default_conflict() -> String {
    "reject".into()
}

impl SourceSection {
    /// Returns an ingest-fed source with `partitioning`.
    pub fn new(partitioning: &str) -> Self {
        Self {
            partitioning: partitioning.into(),
            channel: None,
            capture: default_capture(),
            poll_interval_secs: DEFAULT_POLL_INTERVAL_SECS,
            conflict: default_conflict(),
            page_size: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            log_format: "pretty".into(),
            device: DeviceSection::default(),
            grpc: GrpcSection::default(),
            tls: TlsSection::default(),
            auth: AuthSection::default(),
            store: StoreSection::default(),
            demo: DemoSection::default(),
            rpc: RpcSection::default(),
            sources: BTreeMap::new(),
        }
    }
}

impl Default for DeviceSection {
    fn default() -> Self {
        Self {
            addr: DEFAULT_DEVICE_ADDR.into(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            outbound_queue: DEFAULT_OUTBOUND_QUEUE,
            outbound_queue_bytes: DEFAULT_OUTBOUND_QUEUE_BYTES,
            heartbeat_secs: DEFAULT_HEARTBEAT_SECS,
            idle_timeout_secs: DEFAULT_IDLE_TIMEOUT_SECS,
            hello_timeout_ms: DEFAULT_HELLO_TIMEOUT_MS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_user: 0,
            default_page_size: DEFAULT_PAGE_SIZE,
            max_page_size: DEFAULT_MAX_PAGE_SIZE,
            max_page_bytes: DEFAULT_MAX_PAGE_BYTES,
            default_window: DEFAULT_WINDOW,
            max_window: DEFAULT_MAX_WINDOW,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            max_pending_mutations: DEFAULT_MAX_PENDING_MUTATIONS,
            push_interval_ms: 0,
        }
    }
}

impl Default for GrpcSection {
    fn default() -> Self {
        Self { addr: DEFAULT_GRPC_ADDR.into(), ingest_token: None, threads: DEFAULT_GRPC_THREADS }
    }
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            token_ttl_secs: DEFAULT_TOKEN_TTL_SECS,
            channel: None,
            backend_token_secret: None,
            backend_token_audience: None,
            login_concurrency: DEFAULT_LOGIN_CONCURRENCY,
            login_queue: DEFAULT_LOGIN_QUEUE,
            login_queue_timeout_ms: DEFAULT_LOGIN_QUEUE_TIMEOUT_MS,
            max_failed_logins_per_user: DEFAULT_MAX_FAILED_LOGINS_PER_USER,
            max_failed_logins_per_address: DEFAULT_MAX_FAILED_LOGINS_PER_ADDRESS,
            failed_login_window_secs: DEFAULT_FAILED_LOGIN_WINDOW_SECS,
            failed_login_backoff_secs: DEFAULT_FAILED_LOGIN_BACKOFF_SECS,
        }
    }
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            cache_mb: DEFAULT_STORE_CACHE_MB,
            compact_keep_recent: DEFAULT_COMPACT_KEEP_RECENT,
            compact_interval_secs: DEFAULT_COMPACT_INTERVAL_SECS,
            cursor_flush_millis: DEFAULT_CURSOR_FLUSH_MILLIS,
            mutation_outcome_retention_hours: DEFAULT_MUTATION_OUTCOME_RETENTION_HOURS,
        }
    }
}

impl Default for DemoSection {
    fn default() -> Self {
        Self { enabled: true, records: DEFAULT_DEMO_RECORDS }
    }
}

/// What is wrong with a configuration, said so that an operator can fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {name}={value:?} is not valid: {message}")]
    Env { name: String, value: String, message: String },
    #[error("{key} = {value:?} is not valid: {message}")]
    Invalid { key: String, value: String, message: String },
}

/// How a source is partitioned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partitioning {
    /// One partition per user, keyed by user id.
    User,
    /// One partition shared by every user, keyed `*`.
    App,
    /// Partitions keyed by the channel; users see the keys they are entitled to.
    Custom,
}

impl Partitioning {
    /// Returns the name used in config and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Partitioning::User => "user",
            Partitioning::App => "app",
            Partitioning::Custom => "custom",
        }
    }
}

/// How a source's changes reach Syncline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capture {
    /// The backend pushes through Ingest.
    Ingest,
    /// Syncline follows the channel's Watch stream.
    Watch,
    /// Syncline re-queries partitions with subscribers every interval.
    Poll { interval: Duration },
}

/// What happens to a device update based on an old version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConflictPolicy {
    /// The update fails with a conflict carrying the current record.
    Reject,
    /// The update wins.
    LastWriteWins,
    /// The channel decides.
    Channel,
}

/// Validated backend token settings (see [`AuthSection::backend_token_secret`]).
#[derive(Clone, PartialEq, Eq)]
pub struct BackendTokenSettings {
    /// The HS256 secret, at least [`crate::auth::MIN_BACKEND_TOKEN_SECRET_BYTES`].
    pub secret: Vec<u8>,
    /// The `aud` backend tokens must carry, when set.
    pub audience: Option<String>,
}

impl std::fmt::Debug for BackendTokenSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BackendTokenSettings")
            .field("secret", &"<redacted>")
            .field("audience", &self.audience)
            .finish()
    }
}

/// A validated source.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceSettings {
    pub partitioning: Partitioning,
    /// The channel endpoint, when the source has one.
    pub channel: Option<String>,
    pub capture: Capture,
    pub conflict: ConflictPolicy,
    pub page_size: Option<u32>,
}

impl SourceSettings {
    /// Returns an ingest-fed source without a channel.
    pub fn ingest(partitioning: Partitioning) -> Self {
        Self {
            partitioning,
            channel: None,
            capture: Capture::Ingest,
            conflict: ConflictPolicy::Reject,
            page_size: None,
        }
    }
}

/// The validated mobile RPC configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct RpcSettings {
    pub default_deadline: Duration,
    pub max_deadline: Duration,
    pub max_payload_bytes: usize,
    pub max_in_flight_per_device: usize,
    /// Backend services by name.
    pub services: BTreeMap<String, RpcServiceSettings>,
}

/// A validated RPC service.
#[derive(Clone, Debug, PartialEq)]
pub struct RpcServiceSettings {
    /// The checked endpoint URL.
    pub endpoint: String,
    pub max_in_flight: usize,
}

impl Default for RpcSettings {
    fn default() -> Self {
        Self {
            default_deadline: Duration::from_millis(DEFAULT_RPC_DEADLINE_MS),
            max_deadline: Duration::from_millis(DEFAULT_RPC_MAX_DEADLINE_MS),
            max_payload_bytes: DEFAULT_RPC_MAX_PAYLOAD_BYTES,
            max_in_flight_per_device: DEFAULT_RPC_MAX_IN_FLIGHT_PER_DEVICE,
            services: BTreeMap::new(),
        }
    }
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub json_logs: bool,
    pub device_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub ingest_token: Option<String>,
    pub grpc_threads: usize,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub max_frame_bytes: usize,
    pub outbound_queue: usize,
    pub outbound_queue_bytes: usize,
    pub heartbeat: Duration,
    pub idle_timeout: Duration,
    /// Time a new connection has to complete a Hello.
    pub hello_timeout: Duration,
    pub max_connections: usize,
    /// 0: no limit.
    pub max_connections_per_user: usize,
    pub default_page_size: u32,
    pub max_page_size: u32,
    /// Most encoded bytes of one catch-up page or live frame.
    pub max_page_bytes: usize,
    pub default_window: u32,
    pub max_window: u32,
    pub max_subscriptions: usize,
    pub max_pending_mutations: u64,
    /// Shortest time between two live pushes of a partition (zero: each commit at once).
    pub push_interval: Duration,
    pub token_ttl: Duration,
    pub store_cache_bytes: usize,
    pub compact_keep_recent: u64,
    pub compact_interval: Duration,
    /// How long finished mutations' outcomes are kept (pruned with compaction).
    pub mutation_outcome_retention: Duration,
    pub cursor_flush: Duration,
    pub shutdown_grace: Duration,
    /// The demo app to seed, when enabled and no sources are configured.
    pub demo: Option<DemoSection>,
    pub sources: BTreeMap<String, SourceSettings>,
    /// Channel endpoint that checks device logins (instead of local users).
    pub auth_channel: Option<String>,
    /// Backend token logins, when enabled.
    pub backend_tokens: Option<BackendTokenSettings>,
    /// Password checks at once and waiting, and the failed-login limits.
    pub login_limits: crate::auth::LoginLimits,
    /// Mobile RPC routing and limits.
    pub rpc: RpcSettings,
}

impl Config {
    /// Loads the configuration: defaults, then `file` (if given), then `SYNCLINE_*` entries
    /// of `env`.
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                toml::from_str(&text)
                    .map_err(|error| ConfigError::Parse { path: path.to_owned(), message: error.to_string() })?
            }
            None => Config::default(),
        };
        config.apply_env(env)?;
        Ok(config)
    }

    /// Applies `SYNCLINE_*` overrides. Unknown `SYNCLINE_*` names are an error, so a typo
    /// does not silently do nothing.
    pub fn apply_env(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        let mut names: Vec<&String> = env.keys().filter(|name| name.starts_with("SYNCLINE_")).collect();
        names.sort();
        for name in names {
            let value = &env[name];
            let bad = |message: &str| ConfigError::Env {
                name: name.clone(),
                value: value.clone(),
                message: message.to_owned(),
            };
            let number = |value: &str| value.parse::<u64>().map_err(|_| bad("expected a whole number"));
            let small = |value: &str| value.parse::<u32>().map_err(|_| bad("expected a whole number below 2^32"));
            match name.as_str() {
                "SYNCLINE_DATA_DIR" => self.data_dir = PathBuf::from(value),
                "SYNCLINE_DEVICE_ADDR" => self.device.addr = value.clone(),
                "SYNCLINE_GRPC_ADDR" => self.grpc.addr = value.clone(),
                "SYNCLINE_INGEST_TOKEN" => self.grpc.ingest_token = Some(value.clone()),
                "SYNCLINE_GRPC_THREADS" => self.grpc.threads = number(value)? as usize,
                "SYNCLINE_PUSH_INTERVAL_MS" => self.device.push_interval_ms = number(value)?,
                "SYNCLINE_HELLO_TIMEOUT_MS" => self.device.hello_timeout_ms = number(value)?,
                "SYNCLINE_BACKEND_TOKEN_SECRET" => self.auth.backend_token_secret = Some(value.clone()),
                "SYNCLINE_BACKEND_TOKEN_AUDIENCE" => self.auth.backend_token_audience = Some(value.clone()),
                "SYNCLINE_LOGIN_CONCURRENCY" => self.auth.login_concurrency = number(value)? as usize,
                "SYNCLINE_LOGIN_QUEUE" => self.auth.login_queue = number(value)? as usize,
                "SYNCLINE_LOGIN_QUEUE_TIMEOUT_MS" => self.auth.login_queue_timeout_ms = number(value)?,
                "SYNCLINE_MAX_FAILED_LOGINS_PER_USER" => self.auth.max_failed_logins_per_user = small(value)?,
                "SYNCLINE_MAX_FAILED_LOGINS_PER_ADDRESS" => self.auth.max_failed_logins_per_address = small(value)?,
                "SYNCLINE_FAILED_LOGIN_WINDOW_SECS" => self.auth.failed_login_window_secs = number(value)?,
                "SYNCLINE_FAILED_LOGIN_BACKOFF_SECS" => self.auth.failed_login_backoff_secs = number(value)?,
                "SYNCLINE_TLS_CERT" => self.tls.cert = Some(PathBuf::from(value)),
                "SYNCLINE_TLS_KEY" => self.tls.key = Some(PathBuf::from(value)),
                "SYNCLINE_LOG_FORMAT" => self.log_format = value.clone(),
                "SYNCLINE_MAX_CONNECTIONS" => self.device.max_connections = number(value)? as usize,
                "SYNCLINE_MAX_CONNECTIONS_PER_USER" => {
                    self.device.max_connections_per_user = number(value)? as usize;
                }
                "SYNCLINE_MAX_FRAME_BYTES" => self.device.max_frame_bytes = number(value)? as usize,
                "SYNCLINE_MAX_PAGE_BYTES" => self.device.max_page_bytes = number(value)? as usize,
                "SYNCLINE_DEMO" => {
                    self.demo.enabled = match value.as_str() {
                        "1" | "true" | "on" => true,
                        "0" | "false" | "off" => false,
                        _ => return Err(bad("expected true or false")),
                    }
                }
                "SYNCLINE_DEMO_RECORDS" => self.demo.records = number(value)? as u32,
                "SYNCLINE_COMPACT_KEEP_RECENT" => self.store.compact_keep_recent = number(value)?,
                "SYNCLINE_MUTATION_OUTCOME_RETENTION_HOURS" => {
                    self.store.mutation_outcome_retention_hours = number(value)?
                }
                "SYNCLINE_CONFIG" => {} // read by the CLI to find the file
                _ => return Err(bad("unknown SYNCLINE_ variable")),
            }
        }
        Ok(())
    }

    /// Checks every value and returns the typed settings.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let invalid = |key: &str, value: &dyn std::fmt::Display, message: &str| ConfigError::Invalid {
            key: key.to_owned(),
            value: value.to_string(),
            message: message.to_owned(),
        };
        let addr = |key: &str, value: &str| {
            value.parse::<SocketAddr>().map_err(|_| invalid(key, &value, "expected IP:PORT, e.g. 127.0.0.1:7700"))
        };
        let positive = |key: &str, value: u64| {
            if value == 0 { Err(invalid(key, &value, "must be greater than 0")) } else { Ok(value) }
        };
        let device = &self.device;
        let tls = match (&self.tls.cert, &self.tls.key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            (Some(cert), None) => {
                return Err(invalid("tls.key", &"", &format!("tls.cert = {cert:?} is set; set tls.key too")));
            }
            (None, Some(key)) => {
                return Err(invalid("tls.cert", &"", &format!("tls.key = {key:?} is set; set tls.cert too")));
            }
        };
        let json_logs = match self.log_format.as_str() {
            "pretty" => false,
            "json" => true,
            other => return Err(invalid("log_format", &other, "expected \"pretty\" or \"json\"")),
        };
        if device.max_frame_bytes < 1024 {
            return Err(invalid("device.max_frame_bytes", &device.max_frame_bytes, "must be at least 1024"));
        }
        if device.default_page_size == 0 || device.default_page_size > device.max_page_size {
            return Err(invalid(
                "device.default_page_size",
                &device.default_page_size,
                "must be between 1 and device.max_page_size",
            ));
        }
        if device.max_page_bytes < MIN_MAX_PAGE_BYTES {
            return Err(invalid(
                "device.max_page_bytes",
                &device.max_page_bytes,
                &format!("must be at least {MIN_MAX_PAGE_BYTES}"),
            ));
        }
        if device.default_window == 0 || device.default_window > device.max_window {
            return Err(invalid(
                "device.default_window",
                &device.default_window,
                "must be between 1 and device.max_window",
            ));
        }
        if device.idle_timeout_secs <= device.heartbeat_secs {
            return Err(invalid(
                "device.idle_timeout_secs",
                &device.idle_timeout_secs,
                "must be longer than device.heartbeat_secs",
            ));
        }
        let mut sources = BTreeMap::new();
        for (name, source) in &self.sources {
            if !valid_source_name(name) {
                return Err(invalid(
                    &format!("sources.{name}"),
                    name,
                    "source names are 1-64 letters, digits, '_', '-' or '.'",
                ));
            }
            let partitioning = match source.partitioning.as_str() {
                "user" => Partitioning::User,
                "app" => Partitioning::App,
                "custom" => Partitioning::Custom,
                other => {
                    return Err(invalid(
                        &format!("sources.{name}.partitioning"),
                        &other,
                        "expected \"user\", \"app\" or \"custom\"",
                    ));
                }
            };
            let key = |field: &str| format!("sources.{name}.{field}");
            let channel = match &source.channel {
                Some(url) => Some(endpoint_url(&key("channel"), url)?),
                None => None,
            };
            let capture = match source.capture.as_str() {
                "ingest" => Capture::Ingest,
                "watch" => Capture::Watch,
                "poll" => Capture::Poll {
                    interval: Duration::from_secs(positive(&key("poll_interval_secs"), source.poll_interval_secs)?),
                },
                other => return Err(invalid(&key("capture"), &other, "expected \"ingest\", \"watch\" or \"poll\"")),
            };
            if capture != Capture::Ingest && channel.is_none() {
                return Err(invalid(
                    &key("capture"),
                    &source.capture,
                    &format!("{} capture needs sources.{name}.channel", source.capture),
                ));
            }
            let conflict = match source.conflict.as_str() {
                "reject" => ConflictPolicy::Reject,
                "last_write_wins" => ConflictPolicy::LastWriteWins,
                "channel" => ConflictPolicy::Channel,
                other => {
                    return Err(invalid(
                        &key("conflict"),
                        &other,
                        "expected \"reject\", \"last_write_wins\" or \"channel\"",
                    ));
                }
            };
            if let Some(page_size) = source.page_size
                && (page_size == 0 || page_size > device.max_page_size)
            {
                return Err(invalid(&key("page_size"), &page_size, "must be between 1 and device.max_page_size"));
            }
            sources.insert(
                name.clone(),
                SourceSettings { partitioning, channel, capture, conflict, page_size: source.page_size },
            );
        }
        // The demo's sources (and login and RPC channels) are the demo channel's to declare
        // when it starts (`demo::start_channel`).
        let demo = (self.demo.enabled && sources.is_empty()).then(|| self.demo.clone());
        if sources.is_empty() && demo.is_none() {
            return Err(invalid("sources", &"{}", "configure at least one source, or enable the demo"));
        }
        let rpc = self.rpc.validate()?;
        let backend_tokens = self.auth.validate_backend_tokens()?;
        let login_limits = self.auth.validate_login_limits()?;
        Ok(Settings {
            data_dir: self.data_dir.clone(),
            json_logs,
            device_addr: addr("device.addr", &device.addr)?,
            grpc_addr: addr("grpc.addr", &self.grpc.addr)?,
            ingest_token: self.grpc.ingest_token.clone().filter(|token| !token.is_empty()),
            grpc_threads: match self.grpc.threads {
                threads @ 1..=MAX_GRPC_THREADS => threads,
                threads => return Err(invalid("grpc.threads", &threads, &format!("must be 1 to {MAX_GRPC_THREADS}"))),
            },
            tls,
            max_frame_bytes: device.max_frame_bytes,
            outbound_queue: positive("device.outbound_queue", device.outbound_queue as u64)? as usize,
            outbound_queue_bytes: positive("device.outbound_queue_bytes", device.outbound_queue_bytes as u64)? as usize,
            heartbeat: Duration::from_secs(positive("device.heartbeat_secs", device.heartbeat_secs)?),
            idle_timeout: Duration::from_secs(device.idle_timeout_secs),
            hello_timeout: Duration::from_millis(positive("device.hello_timeout_ms", device.hello_timeout_ms)?),
            max_connections: positive("device.max_connections", device.max_connections as u64)? as usize,
            max_connections_per_user: device.max_connections_per_user,
            default_page_size: device.default_page_size,
            max_page_size: device.max_page_size,
            max_page_bytes: device.max_page_bytes,
            default_window: device.default_window,
            max_window: device.max_window,
            max_subscriptions: positive("device.max_subscriptions", device.max_subscriptions as u64)? as usize,
            max_pending_mutations: positive("device.max_pending_mutations", device.max_pending_mutations)?,
            push_interval: match device.push_interval_ms {
                interval @ 0..=MAX_PUSH_INTERVAL_MS => Duration::from_millis(interval),
                interval => {
                    return Err(invalid(
                        "device.push_interval_ms",
                        &interval,
                        &format!("must be 0 to {MAX_PUSH_INTERVAL_MS}"),
                    ));
                }
            },
            token_ttl: Duration::from_secs(positive("auth.token_ttl_secs", self.auth.token_ttl_secs)?),
            store_cache_bytes: self.store.cache_mb * 1024 * 1024,
            compact_keep_recent: self.store.compact_keep_recent,
            compact_interval: Duration::from_secs(positive(
                "store.compact_interval_secs",
                self.store.compact_interval_secs,
            )?),
            mutation_outcome_retention: Duration::from_secs(
                positive("store.mutation_outcome_retention_hours", self.store.mutation_outcome_retention_hours)?
                    .saturating_mul(3600),
            ),
            cursor_flush: Duration::from_millis(positive("store.cursor_flush_millis", self.store.cursor_flush_millis)?),
            shutdown_grace: Duration::from_secs(DEFAULT_SHUTDOWN_GRACE_SECS),
            demo,
            sources,
            auth_channel: match &self.auth.channel {
                Some(url) => Some(endpoint_url("auth.channel", url)?),
                None => None,
            },
            backend_tokens,
            login_limits,
            rpc,
        })
    }

    /// Returns the configuration on one line with secrets redacted, for the startup log.
    pub fn redacted(&self) -> String {
        let mut copy = self.clone();
        if copy.grpc.ingest_token.is_some() {
            copy.grpc.ingest_token = Some("<redacted>".into());
        }
        if copy.auth.backend_token_secret.is_some() {
            copy.auth.backend_token_secret = Some("<redacted>".into());
        }
        serde_json::to_string(&copy).unwrap_or_default()
    }
}

impl AuthSection {
    /// Checks the login concurrency and failed-login settings.
    fn validate_login_limits(&self) -> Result<crate::auth::LoginLimits, ConfigError> {
        let invalid = |key: &str, value: &dyn std::fmt::Display, message: &str| ConfigError::Invalid {
            key: format!("auth.{key}"),
            value: value.to_string(),
            message: message.to_owned(),
        };
        let concurrency = match self.login_concurrency {
            0 => syncline_proto::sdk::passwords::default_threads(),
            threads @ 1..=MAX_LOGIN_CONCURRENCY => threads,
            threads => {
                return Err(invalid(
                    "login_concurrency",
                    &threads,
                    &format!("must be 0 (one per core) to {MAX_LOGIN_CONCURRENCY}"),
                ));
            }
        };
        for (key, value, max) in [
            ("login_queue_timeout_ms", self.login_queue_timeout_ms, MAX_LOGIN_QUEUE_TIMEOUT_MS),
            ("failed_login_window_secs", self.failed_login_window_secs, MAX_FAILED_LOGIN_SECS),
            ("failed_login_backoff_secs", self.failed_login_backoff_secs, MAX_FAILED_LOGIN_SECS),
        ] {
            if value == 0 || value > max {
                return Err(invalid(key, &value, &format!("must be 1 to {max}")));
            }
        }
        Ok(crate::auth::LoginLimits {
            concurrency,
            queue: self.login_queue,
            queue_timeout: Duration::from_millis(self.login_queue_timeout_ms),
            failed: crate::auth::login_limits::FailedLoginPolicy {
                per_user: self.max_failed_logins_per_user,
                per_address: self.max_failed_logins_per_address,
                window: Duration::from_secs(self.failed_login_window_secs),
                backoff: Duration::from_secs(self.failed_login_backoff_secs),
            },
        })
    }

    /// Checks the backend token settings; `None` when backend tokens are off.
    fn validate_backend_tokens(&self) -> Result<Option<BackendTokenSettings>, ConfigError> {
        let secret = self.backend_token_secret.as_deref().filter(|secret| !secret.is_empty());
        let audience = self.backend_token_audience.clone().filter(|audience| !audience.is_empty());
        let Some(secret) = secret else {
            return match audience {
                Some(audience) => Err(ConfigError::Invalid {
                    key: "auth.backend_token_audience".into(),
                    value: audience,
                    message: "needs auth.backend_token_secret (backend tokens are off without it)".into(),
                }),
                None => Ok(None),
            };
        };
        if secret.len() < crate::auth::MIN_BACKEND_TOKEN_SECRET_BYTES {
            return Err(ConfigError::Invalid {
                key: "auth.backend_token_secret".into(),
                // Never echo a secret, even a bad one.
                value: format!("<redacted, {} bytes>", secret.len()),
                message: format!(
                    "must be at least {} bytes (an HS256 key as long as its hash); generate one with `openssl rand -base64 48`",
                    crate::auth::MIN_BACKEND_TOKEN_SECRET_BYTES
                ),
            });
        }
        Ok(Some(BackendTokenSettings { secret: secret.as_bytes().to_vec(), audience }))
    }
}

impl RpcSection {
    /// Checks the RPC limits and services.
    fn validate(&self) -> Result<RpcSettings, ConfigError> {
        let invalid = |key: &str, value: &dyn std::fmt::Display, message: &str| ConfigError::Invalid {
            key: key.to_owned(),
            value: value.to_string(),
            message: message.to_owned(),
        };
        if self.max_deadline_ms == 0 {
            return Err(invalid("rpc.max_deadline_ms", &self.max_deadline_ms, "must be greater than 0"));
        }
        if self.default_deadline_ms == 0 || self.default_deadline_ms > self.max_deadline_ms {
            return Err(invalid(
                "rpc.default_deadline_ms",
                &self.default_deadline_ms,
                "must be between 1 and rpc.max_deadline_ms",
            ));
        }
        if self.max_payload_bytes == 0 {
            return Err(invalid("rpc.max_payload_bytes", &self.max_payload_bytes, "must be greater than 0"));
        }
        if self.max_in_flight_per_device == 0 {
            return Err(invalid(
                "rpc.max_in_flight_per_device",
                &self.max_in_flight_per_device,
                "must be greater than 0",
            ));
        }
        let mut services = BTreeMap::new();
        for (name, service) in &self.services {
            if !valid_source_name(name) {
                return Err(invalid(
                    &format!("rpc.services.{name}"),
                    name,
                    "service names are 1-64 letters, digits, '_', '-' or '.'",
                ));
            }
            let endpoint = endpoint_url(&format!("rpc.services.{name}.endpoint"), &service.endpoint)?;
            if service.max_in_flight == 0 {
                return Err(invalid(
                    &format!("rpc.services.{name}.max_in_flight"),
                    &service.max_in_flight,
                    "must be greater than 0",
                ));
            }
            services.insert(name.clone(), RpcServiceSettings { endpoint, max_in_flight: service.max_in_flight });
        }
        Ok(RpcSettings {
            default_deadline: Duration::from_millis(self.default_deadline_ms),
            max_deadline: Duration::from_millis(self.max_deadline_ms),
            max_payload_bytes: self.max_payload_bytes,
            max_in_flight_per_device: self.max_in_flight_per_device,
            services,
        })
    }
}

/// Checks a channel endpoint URL (http:// or https://, host and port).
fn endpoint_url(key: &str, url: &str) -> Result<String, ConfigError> {
    let invalid = |message: &str| ConfigError::Invalid {
        key: key.to_owned(),
        value: url.to_owned(),
        message: message.to_owned(),
    };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| invalid("expected http://HOST:PORT or https://HOST:PORT"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(url.trim_end_matches('/').to_owned())
        }
        _ => Err(invalid("expected http://HOST:PORT or https://HOST:PORT")),
    }
}

/// Returns true for source names that are safe in paths, URLs and log lines.
pub fn valid_source_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn defaults_validate_to_the_demo_app_on_loopback() {
        let settings = Config::default().validate().unwrap();
        assert_eq!(settings.device_addr.to_string(), DEFAULT_DEVICE_ADDR);
        assert_eq!(settings.grpc_addr.to_string(), DEFAULT_GRPC_ADDR);
        assert!(settings.sources.is_empty(), "the demo declares its sources when it starts");
        assert!(settings.demo.is_some());
    }

    #[test]
    fn env_overrides_file_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("syncline.toml");
        std::fs::write(&path, "data_dir = \"/srv/a\"\n[device]\naddr = \"127.0.0.1:1\"\n").unwrap();
        let config = Config::load(
            Some(&path),
            &env(&[("SYNCLINE_DATA_DIR", "/srv/b"), ("SYNCLINE_GRPC_ADDR", "127.0.0.1:2"), ("HOME", "x")]),
        )
        .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/srv/b"));
        assert_eq!(config.device.addr, "127.0.0.1:1");
        assert_eq!(config.grpc.addr, "127.0.0.1:2");
    }

    #[test]
    fn mistakes_are_reported_by_name() {
        let error = Config::load(None, &env(&[("SYNCLINE_DATADIR", "x")])).unwrap_err();
        assert!(error.to_string().contains("SYNCLINE_DATADIR"), "{error}");
        let mut config = Config::default();
        config.device.addr = "localhost".into();
        assert!(config.validate().unwrap_err().to_string().contains("device.addr"));
        let mut config = Config::default();
        config.sources.insert("Orders".into(), SourceSection::new("team"));
        assert!(config.validate().unwrap_err().to_string().contains("sources.Orders.partitioning"));
        let mut config = Config::default();
        let mut watched = SourceSection::new("app");
        watched.capture = "watch".into();
        config.sources.insert("Orders".into(), watched.clone());
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("needs sources.Orders.channel"), "{error}");
        watched.channel = Some("localhost:7801".into());
        config.sources.insert("Orders".into(), watched.clone());
        assert!(config.validate().unwrap_err().to_string().contains("sources.Orders.channel"));
        watched.channel = Some("http://127.0.0.1:7801".into());
        watched.conflict = "newest".into();
        config.sources.insert("Orders".into(), watched.clone());
        assert!(config.validate().unwrap_err().to_string().contains("sources.Orders.conflict"));
        watched.conflict = "last_write_wins".into();
        config.sources.insert("Orders".into(), watched);
        let settings = config.validate().unwrap();
        assert_eq!(settings.sources["Orders"].capture, Capture::Watch);
        assert_eq!(settings.sources["Orders"].conflict, ConflictPolicy::LastWriteWins);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[device]\nadress = \"x\"\n").unwrap();
        let error = Config::load(Some(&path), &HashMap::new()).unwrap_err();
        assert!(error.to_string().contains("adress"), "{error}");
    }

    #[test]
    fn page_bytes_come_from_the_environment_and_have_a_floor() {
        assert_eq!(Config::default().validate().unwrap().max_page_bytes, DEFAULT_MAX_PAGE_BYTES);
        let config = Config::load(None, &env(&[("SYNCLINE_MAX_PAGE_BYTES", "65536")])).unwrap();
        assert_eq!(config.validate().unwrap().max_page_bytes, 65536);
        let error = Config::load(None, &env(&[("SYNCLINE_MAX_PAGE_BYTES", "lots")])).unwrap_err();
        assert!(error.to_string().contains("SYNCLINE_MAX_PAGE_BYTES"), "{error}");
        let mut config = Config::default();
        config.device.max_page_bytes = MIN_MAX_PAGE_BYTES - 1;
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("device.max_page_bytes") && error.contains("at least 1024"), "{error}");
    }

    #[test]
    fn grpc_threads_come_from_the_environment_and_are_bounded() {
        assert_eq!(Config::default().validate().unwrap().grpc_threads, DEFAULT_GRPC_THREADS);
        let config = Config::load(None, &env(&[("SYNCLINE_GRPC_THREADS", "4")])).unwrap();
        assert_eq!(config.validate().unwrap().grpc_threads, 4);
        for threads in [0, MAX_GRPC_THREADS + 1] {
            let mut config = Config::default();
            config.grpc.threads = threads;
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains("grpc.threads") && error.contains("must be 1 to 256"), "{error}");
        }
    }

    #[test]
    fn hello_timeout_comes_from_the_environment_and_is_positive() {
        let default = Config::default().validate().unwrap().hello_timeout;
        assert_eq!(default, Duration::from_millis(DEFAULT_HELLO_TIMEOUT_MS));
        let config = Config::load(None, &env(&[("SYNCLINE_HELLO_TIMEOUT_MS", "250")])).unwrap();
        assert_eq!(config.validate().unwrap().hello_timeout, Duration::from_millis(250));
        let mut config = Config::default();
        config.device.hello_timeout_ms = 0;
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("device.hello_timeout_ms") && error.contains("greater than 0"), "{error}");
    }

    #[test]
    fn push_interval_comes_from_the_environment_and_is_bounded() {
        assert_eq!(Config::default().validate().unwrap().push_interval, Duration::ZERO);
        let config = Config::load(None, &env(&[("SYNCLINE_PUSH_INTERVAL_MS", "20")])).unwrap();
        assert_eq!(config.validate().unwrap().push_interval, Duration::from_millis(20));
        let mut config = Config::default();
        config.device.push_interval_ms = MAX_PUSH_INTERVAL_MS + 1;
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("device.push_interval_ms") && error.contains("must be 0 to 1000"), "{error}");
        let error = Config::load(None, &env(&[("SYNCLINE_PUSH_INTERVAL_MS", "soon")])).unwrap_err().to_string();
        assert!(error.contains("SYNCLINE_PUSH_INTERVAL_MS"), "{error}");
    }

    #[test]
    fn mutation_outcome_retention_is_in_hours_and_positive() {
        let default = Config::default().validate().unwrap().mutation_outcome_retention;
        assert_eq!(default, Duration::from_secs(DEFAULT_MUTATION_OUTCOME_RETENTION_HOURS * 3600));
        let config = Config::load(None, &env(&[("SYNCLINE_MUTATION_OUTCOME_RETENTION_HOURS", "2")])).unwrap();
        assert_eq!(config.validate().unwrap().mutation_outcome_retention, Duration::from_secs(7200));
        let mut config = Config::default();
        config.store.mutation_outcome_retention_hours = 0;
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("store.mutation_outcome_retention_hours"), "{error}");
    }

    #[test]
    fn login_limits_have_defaults_env_overrides_and_bounds() {
        let limits = Config::default().validate().unwrap().login_limits;
        assert_eq!(limits.concurrency, syncline_proto::sdk::passwords::default_threads());
        assert_eq!(limits.queue, DEFAULT_LOGIN_QUEUE);
        assert_eq!(limits.queue_timeout, Duration::from_millis(DEFAULT_LOGIN_QUEUE_TIMEOUT_MS));
        assert_eq!(limits.failed.per_user, DEFAULT_MAX_FAILED_LOGINS_PER_USER);
        assert_eq!(limits.failed.per_address, DEFAULT_MAX_FAILED_LOGINS_PER_ADDRESS);
        assert_eq!(limits.failed.window, Duration::from_secs(DEFAULT_FAILED_LOGIN_WINDOW_SECS));
        assert_eq!(limits.failed.backoff, Duration::from_secs(DEFAULT_FAILED_LOGIN_BACKOFF_SECS));
        let config = Config::load(
            None,
            &env(&[
                ("SYNCLINE_LOGIN_CONCURRENCY", "3"),
                ("SYNCLINE_LOGIN_QUEUE", "0"),
                ("SYNCLINE_LOGIN_QUEUE_TIMEOUT_MS", "500"),
                ("SYNCLINE_MAX_FAILED_LOGINS_PER_USER", "0"),
                ("SYNCLINE_MAX_FAILED_LOGINS_PER_ADDRESS", "7"),
                ("SYNCLINE_FAILED_LOGIN_WINDOW_SECS", "60"),
                ("SYNCLINE_FAILED_LOGIN_BACKOFF_SECS", "5"),
            ]),
        )
        .unwrap();
        let limits = config.validate().unwrap().login_limits;
        assert_eq!((limits.concurrency, limits.queue, limits.queue_timeout), (3, 0, Duration::from_millis(500)));
        assert_eq!((limits.failed.per_user, limits.failed.per_address), (0, 7));
        assert_eq!((limits.failed.window, limits.failed.backoff), (Duration::from_secs(60), Duration::from_secs(5)));
        for (key, set) in [
            (
                "auth.login_concurrency",
                (|auth: &mut AuthSection| auth.login_concurrency = MAX_LOGIN_CONCURRENCY + 1) as fn(&mut AuthSection),
            ),
            ("auth.login_queue_timeout_ms", |auth| auth.login_queue_timeout_ms = 0),
            ("auth.failed_login_window_secs", |auth| auth.failed_login_window_secs = MAX_FAILED_LOGIN_SECS + 1),
            ("auth.failed_login_backoff_secs", |auth| auth.failed_login_backoff_secs = 0),
        ] {
            let mut config = Config::default();
            set(&mut config.auth);
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(key), "{error}");
        }
        let error = Config::load(None, &env(&[("SYNCLINE_MAX_FAILED_LOGINS_PER_USER", "-1")])).unwrap_err();
        assert!(error.to_string().contains("SYNCLINE_MAX_FAILED_LOGINS_PER_USER"), "{error}");
    }

    #[test]
    fn backend_token_secrets_are_checked_and_never_shown() {
        let short = "s3cret-but-short";
        let config = Config::load(None, &env(&[("SYNCLINE_BACKEND_TOKEN_SECRET", short)])).unwrap();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("auth.backend_token_secret"), "{error}");
        assert!(error.contains("at least 32 bytes"), "{error}");
        assert!(!error.contains(short), "the secret leaked into {error}");

        let secret = "a-backend-token-secret-of-more-than-32-bytes";
        let config = Config::load(
            None,
            &env(&[("SYNCLINE_BACKEND_TOKEN_SECRET", secret), ("SYNCLINE_BACKEND_TOKEN_AUDIENCE", "syncline")]),
        )
        .unwrap();
        let tokens = config.validate().unwrap().backend_tokens.expect("backend tokens are on");
        assert_eq!(tokens.secret, secret.as_bytes());
        assert_eq!(tokens.audience.as_deref(), Some("syncline"));
        assert!(!format!("{tokens:?}").contains(secret));
        assert!(!config.redacted().contains(secret));

        let mut config = Config::default();
        assert!(config.validate().unwrap().backend_tokens.is_none());
        config.auth.backend_token_secret = Some(String::new());
        assert!(config.validate().unwrap().backend_tokens.is_none(), "empty means not set");
        config.auth.backend_token_audience = Some("syncline".into());
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("auth.backend_token_audience"), "{error}");
    }

    #[test]
    fn rpc_mistakes_are_reported_by_name() {
        let error_of = |change: &dyn Fn(&mut Config)| {
            let mut config = Config::default();
            change(&mut config);
            config.validate().unwrap_err().to_string()
        };
        let error = error_of(&|config| config.rpc.default_deadline_ms = 120_000);
        assert!(error.contains("rpc.default_deadline_ms"), "{error}");
        let error = error_of(&|config| config.rpc.max_payload_bytes = 0);
        assert!(error.contains("rpc.max_payload_bytes"), "{error}");
        let error = error_of(&|config| config.rpc.max_in_flight_per_device = 0);
        assert!(error.contains("rpc.max_in_flight_per_device"), "{error}");
        let error = error_of(&|config| {
            config.rpc.services.insert("crm".into(), RpcServiceSection::new("127.0.0.1:7801"));
        });
        assert!(error.contains("rpc.services.crm.endpoint"), "{error}");
        let error = error_of(&|config| {
            config.rpc.services.insert("bad name".into(), RpcServiceSection::new("http://127.0.0.1:7801"));
        });
        assert!(error.contains("rpc.services.bad name"), "{error}");
        let error = error_of(&|config| {
            let mut service = RpcServiceSection::new("http://127.0.0.1:7801");
            service.max_in_flight = 0;
            config.rpc.services.insert("crm".into(), service);
        });
        assert!(error.contains("rpc.services.crm.max_in_flight"), "{error}");
        let mut config = Config::default();
        config.rpc.services.insert("crm".into(), RpcServiceSection::new("http://127.0.0.1:7801/"));
        let settings = config.validate().unwrap();
        assert_eq!(settings.rpc.services["crm"].endpoint, "http://127.0.0.1:7801");
        assert_eq!(settings.rpc.default_deadline, Duration::from_millis(DEFAULT_RPC_DEADLINE_MS));
    }

    #[test]
    fn the_example_file_covers_every_key_and_validates() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../syncline.example.toml");
        let text = std::fs::read_to_string(example).unwrap();
        let parsed: Config = toml::from_str(&text).unwrap();
        parsed.validate().unwrap();
        // Every key of the default tree appears in the example (commented or not).
        let defaults = toml::to_string(&Config::default()).unwrap();
        for line in defaults.lines() {
            if let Some((key, _)) = line.split_once(" = ") {
                assert!(text.contains(&format!("{} =", key.trim())), "example lacks key {key}");
            }
        }
    }
}
