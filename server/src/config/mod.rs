//! Configuration: the only code that reads config files or the environment.
//!
//! Precedence: built-in defaults, then the TOML file, then `SYNCLINE_*` environment
//! variables, then CLI flags. The environment is passed in as a map so tests never touch the
//! process environment.
//!
//! - this file: the defaults (one named constant each), the raw tree as written in TOML
//!   ([`Config`], with serde enums for every closed set of values) and [`Config::load`];
//! - `env`: the one table of environment overrides, a `SYNCLINE_*` name for every scalar key
//!   ([`ENV_VARS`]);
//! - `validate`: [`Config::validate`], one function per section, turning the raw tree into
//!   [`Settings`];
//! - `settings`: the validated, typed sections ([`DeviceSettings`], [`StoreSettings`],
//!   [`AuthSettings`], [`RpcSettings`], ...) that the server's parts take as they are, and the
//!   source types every part shares ([`SourceSettings`], [`Capture`]).
//!
//! Config imports nothing from the rest of the server, so every other module may import it.
//! That is why the source types live here and not in `model`: `model` imports `auth` and
//! `storage`, and `auth` imports `channel`, which needs the source types, so putting them in
//! `model` would make a circle.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod defaults;
mod env;
mod settings;
#[cfg(test)]
mod tests;
mod validate;

pub use defaults::*;
pub use env::{ENV_VARS, EnvVar};
pub use settings::{
    AdminSettings, AuthSettings, BackendTokenSettings, BlobSettings, BulkSettings, Capture, ClusterSettings,
    CorsOrigins, DemoSettings, DeviceSettings, FailedLoginPolicy, GrpcSettings, LoginLimits, RpcServiceSettings,
    RpcSettings, S3Settings, Settings, SourceSettings, StoreBackendSettings, StoreSettings, TlsSettings,
};
pub use validate::valid_source_name;

/// The whole configuration tree, as written in TOML. See `syncline.example.toml`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory of the embedded store.
    pub data_dir: PathBuf,
    /// Log output.
    pub log_format: LogFormat,
    /// Seconds the stop sequence may take before the process stops anyway.
    pub shutdown_grace_secs: u64,
    pub device: DeviceSection,
    pub grpc: GrpcSection,
    pub tls: TlsSection,
    pub auth: AuthSection,
    pub store: StoreSection,
    pub blob: BlobSection,
    pub demo: DemoSection,
    pub rpc: RpcSection,
    pub admin: AdminSection,
    pub cluster: ClusterSection,
    pub bulk: BulkSection,
    /// Sources by name. Empty with the demo enabled: the demo's sources.
    pub sources: BTreeMap<String, SourceSection>,
}

/// Which store holds the data.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    /// The embedded store: one file in `data_dir`, one node.
    #[default]
    Embedded,
    /// Redis (one server or a cluster), shared by every node.
    Redis,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Compact lines for people.
    #[default]
    Pretty,
    /// JSON lines for log collectors.
    Json,
}

/// How a source is partitioned.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
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

/// How a source's changes reach Syncline, as configured (validated into [`Capture`], which
/// carries the poll interval).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMode {
    /// The backend pushes through Ingest.
    #[default]
    Ingest,
    /// Syncline follows the channel's Watch stream.
    Watch,
    /// Syncline re-queries partitions with subscribers every `poll_interval_secs`.
    Poll,
}

impl CaptureMode {
    /// Returns the name used in config.
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureMode::Ingest => "ingest",
            CaptureMode::Watch => "watch",
            CaptureMode::Poll => "poll",
        }
    }
}

/// What happens to a device update based on an old version.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ConflictPolicy {
    /// The update fails with a conflict carrying the current record.
    #[default]
    Reject,
    /// The update wins.
    LastWriteWins,
    /// The channel decides.
    Channel,
}

/// The device (WebSocket) endpoint and the limits applied to devices.
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
    /// Catch-up pages (a store read and the frame's encoding) this node reads at once for all
    /// its devices together; more wait their turn, except the small reads at the tail of a
    /// catch-up (0: four per CPU core). Bounds the memory and threads a herd of devices
    /// catching up at once takes: every device demoted by a burst, or resuming after a
    /// node's loss.
    pub catch_up_reads: usize,
    /// Web origins (`https://app.example.com`) whose pages may call the device listener's
    /// HTTP routes (bulk file downloads, blob uploads and downloads) from a browser, i.e. the
    /// CORS allow-list; `"*"`: any origin (the default); empty: none (same origin only).
    ///
    /// Any origin is safe by default only because those routes authenticate with a bearer
    /// token the page must hold (`Authorization`), never with cookies or other ambient
    /// credentials: a foreign page can send nothing the user's browser would attach for it,
    /// and CORS responses never allow credentials. List origins to also keep pages of other
    /// sites from using a token they obtained.
    pub cors_origins: Vec<String>,
}

/// The gRPC endpoint backends call (Ingest).
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
    /// How often channels are described again to notice schema changes (they are also
    /// described at start).
    pub describe_interval_secs: u64,
}

/// The admin (HTTP) listener: the admin API, `/healthz`, `/readyz` and `/metrics`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    pub addr: String,
    /// When true, `/metrics` is served without a token (for a scraper on a trusted network).
    pub metrics_public: bool,
    /// When set, the admin user `admin` is created with this password at start (or has its
    /// password set to it): how a fresh data directory gets its first admin credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// TLS for every listener.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// PEM certificate chain; with `key`, both listeners serve TLS.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

/// Device logins: session tokens, the login channel, backend tokens and login limits.
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

/// The store (embedded or Redis) and its background jobs.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Which store holds the data: the embedded file in `data_dir`, or Redis (several nodes
    /// share it).
    pub backend: StoreBackend,
    /// The Redis server, as a `redis://` URL (`backend = "redis"`, one server).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// The `redis://` URLs of some nodes of a Redis Cluster (`backend = "redis"`, instead of
    /// `redis_url`).
    pub redis_cluster_urls: Vec<String>,
    /// Replicas every acknowledged write waits for (`WAIT`); 0: none, then the server must
    /// run with `appendonly yes` and `appendfsync always`.
    pub redis_wait_replicas: u32,
    /// Opens a Redis store that may lose acknowledged writes on a crash (no fsync on every
    /// write and no replicas waited for). For tests and demos only.
    pub allow_volatile: bool,
    pub cache_mb: usize,
    pub compact_keep_recent: u64,
    pub compact_interval_secs: u64,
    pub cursor_flush_millis: u64,
    pub mutation_outcome_retention_hours: u64,
}

/// Cluster mode (`store.backend = "redis"`): how the nodes share the work one node at a
/// time does (capture, mutation dispatch, compaction).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// This node's id, unique in the cluster (logs, leases, session counts); unset: a new
    /// random id at each start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// How long a lease lasts without renewal.
    pub lease_ttl_ms: u64,
    /// How often a node looks for queued mutations no node dispatches.
    pub sweep_interval_ms: u64,
}

impl Default for ClusterSection {
    fn default() -> Self {
        Self { node_id: None, lease_ttl_ms: DEFAULT_LEASE_TTL_MS, sweep_interval_ms: DEFAULT_SWEEP_INTERVAL_MS }
    }
}

/// Blob storage: files records reference by `Blob` values (see the README's "Blobs").
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BlobSection {
    /// Directory of blob files (default: `blobs` in `data_dir`). Nodes of a cluster must
    /// share it (a network file system): Redis holds only the metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Largest blob accepted, in bytes.
    pub max_bytes: u64,
    /// How long a blob no record and no pending mutation references is kept.
    pub gc_grace_secs: u64,
    /// How often unreferenced blobs are looked for.
    pub gc_interval_secs: u64,
    /// An S3-compatible bucket for the bytes (and bulk files), used when `bucket` is set.
    pub s3: BlobS3Section,
}

impl Default for BlobSection {
    fn default() -> Self {
        Self {
            dir: None,
            max_bytes: DEFAULT_BLOB_MAX_BYTES,
            gc_grace_secs: DEFAULT_BLOB_GC_GRACE_SECS,
            gc_interval_secs: DEFAULT_BLOB_GC_INTERVAL_SECS,
            s3: BlobS3Section::default(),
        }
    }
}

/// `[blob.s3]`: an S3-compatible bucket (AWS S3, MinIO, R2, ...) holding complete blobs at
/// `<prefix>blobs/<hash>` and bulk files at `<prefix>bulk/<file id>.sqlite`. Uploads in
/// progress stay in `blob.dir` until verified.
#[derive(Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BlobS3Section {
    /// The bucket; setting it turns the bucket on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// The service's URL (`https://host[:port]`) when it is not AWS S3 (MinIO, R2, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The region (default `us-east-1`; most S3-compatible services accept any).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The access key id; with `secret_access_key`, or neither.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// The secret access key (never logged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// Prefix of every key the server writes (e.g. `syncline/`), so a bucket can be shared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Allows a plain-HTTP `endpoint` (a MinIO on loopback; never across a network).
    pub allow_http: bool,
}

impl BlobS3Section {
    /// Returns true when no key of the section is set.
    pub fn is_unset(&self) -> bool {
        *self == Self::default()
    }
}

impl std::fmt::Debug for BlobS3Section {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BlobS3Section")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .field("prefix", &self.prefix)
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// The demo app served when no sources are configured.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DemoSection {
    /// Serves the demo app (sources `Account` and `Contact` from the built-in CRM example
    /// channel, user `demo` with password `demo`) when no sources are configured.
    pub enabled: bool,
    /// Accounts seeded into the demo channel's database on first start.
    pub records: u32,
}

/// Bulk sync files: whole partitions as SQLite files devices download (`docs/BULK.md`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BulkSection {
    /// Directory of the files (default: `bulk` in `data_dir`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// A cached file is reused while its partition moved fewer changes than this.
    pub reuse_changes: u64,
    /// Lifetime of a download token.
    pub token_ttl_secs: u64,
    /// Files are deleted this long after they were written.
    pub file_ttl_secs: u64,
    /// Files written at once.
    pub max_concurrent_writes: usize,
    /// Jobs accepted and not finished at once.
    pub max_queued_jobs: usize,
    /// The base of download URLs in BulkReady (`https://sync.example.com`), when devices
    /// reach the server through a name or proxy; unset: a path on the device endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
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

/// One source of records devices sync.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// One partition per user, one shared by all users, or keys assigned by the channel.
    pub partitioning: Partitioning,
    /// gRPC endpoint of the channel that owns the source's data, e.g.
    /// "http://127.0.0.1:7801". Without one the source is fed by Ingest only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// How changes are captured.
    #[serde(default)]
    pub capture: CaptureMode,
    /// Interval of poll capture.
    #[serde(default = "default_poll_interval_secs")]
    pub poll_interval_secs: u64,
    /// What happens when a device's update is based on an old version.
    #[serde(default)]
    pub conflict: ConflictPolicy,
    /// Catch-up page size for this source (default: device.default_page_size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size: Option<u32>,
}

fn default_rpc_max_in_flight() -> usize {
    DEFAULT_RPC_MAX_IN_FLIGHT_PER_SERVICE
}

fn default_poll_interval_secs() -> u64 {
    DEFAULT_POLL_INTERVAL_SECS
}

impl SourceSection {
    /// Returns an ingest-fed source with `partitioning`.
    pub fn new(partitioning: Partitioning) -> Self {
        Self {
            partitioning,
            channel: None,
            capture: CaptureMode::Ingest,
            poll_interval_secs: DEFAULT_POLL_INTERVAL_SECS,
            conflict: ConflictPolicy::Reject,
            page_size: None,
        }
    }
}

impl RpcServiceSection {
    /// Returns a service at `endpoint` with the default limit.
    pub fn new(endpoint: &str) -> Self {
        Self { endpoint: endpoint.to_owned(), max_in_flight: DEFAULT_RPC_MAX_IN_FLIGHT_PER_SERVICE }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            log_format: LogFormat::Pretty,
            shutdown_grace_secs: DEFAULT_SHUTDOWN_GRACE_SECS,
            device: DeviceSection::default(),
            grpc: GrpcSection::default(),
            tls: TlsSection::default(),
            auth: AuthSection::default(),
            store: StoreSection::default(),
            blob: BlobSection::default(),
            demo: DemoSection::default(),
            rpc: RpcSection::default(),
            admin: AdminSection::default(),
            cluster: ClusterSection::default(),
            bulk: BulkSection::default(),
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
            max_connections_per_user: DEFAULT_MAX_CONNECTIONS_PER_USER,
            default_page_size: DEFAULT_PAGE_SIZE,
            max_page_size: DEFAULT_MAX_PAGE_SIZE,
            max_page_bytes: DEFAULT_MAX_PAGE_BYTES,
            default_window: DEFAULT_WINDOW,
            max_window: DEFAULT_MAX_WINDOW,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            max_pending_mutations: DEFAULT_MAX_PENDING_MUTATIONS,
            push_interval_ms: DEFAULT_PUSH_INTERVAL_MS,
            catch_up_reads: 0,
            cors_origins: vec![ANY_ORIGIN.to_owned()],
        }
    }
}

impl Default for AdminSection {
    fn default() -> Self {
        Self { addr: DEFAULT_ADMIN_ADDR.into(), metrics_public: false, password: None }
    }
}

impl Default for GrpcSection {
    fn default() -> Self {
        Self {
            addr: DEFAULT_GRPC_ADDR.into(),
            ingest_token: None,
            threads: DEFAULT_GRPC_THREADS,
            describe_interval_secs: DEFAULT_DESCRIBE_INTERVAL_SECS,
        }
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
            backend: StoreBackend::Embedded,
            redis_url: None,
            redis_cluster_urls: Vec::new(),
            redis_wait_replicas: 0,
            allow_volatile: false,
            cache_mb: DEFAULT_STORE_CACHE_MB,
            compact_keep_recent: DEFAULT_COMPACT_KEEP_RECENT,
            compact_interval_secs: DEFAULT_COMPACT_INTERVAL_SECS,
            cursor_flush_millis: DEFAULT_CURSOR_FLUSH_MILLIS,
            mutation_outcome_retention_hours: DEFAULT_MUTATION_OUTCOME_RETENTION_HOURS,
        }
    }
}

impl Default for BulkSection {
    fn default() -> Self {
        Self {
            dir: None,
            reuse_changes: DEFAULT_BULK_REUSE_CHANGES,
            token_ttl_secs: DEFAULT_BULK_TOKEN_TTL_SECS,
            file_ttl_secs: DEFAULT_BULK_FILE_TTL_SECS,
            max_concurrent_writes: DEFAULT_BULK_MAX_CONCURRENT_WRITES,
            max_queued_jobs: DEFAULT_BULK_MAX_QUEUED_JOBS,
            public_url: None,
        }
    }
}

impl Default for DemoSection {
    fn default() -> Self {
        Self { enabled: true, records: DEFAULT_DEMO_RECORDS }
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

impl Config {
    /// Loads the configuration: defaults, then `file` (if given), then `SYNCLINE_*` entries
    /// of `env` (see [`ENV_VARS`]).
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                toml::from_str(&text).map_err(|error| parse_error(path, &text, error))?
            }
            None => Config::default(),
        };
        config.apply_env(env)?;
        Ok(config)
    }

    /// Returns the configuration on one line with secrets redacted, for the startup log.
    pub fn redacted(&self) -> String {
        let mut copy = self.clone();
        if copy.grpc.ingest_token.is_some() {
            copy.grpc.ingest_token = Some("<redacted>".into());
        }
        if copy.admin.password.is_some() {
            copy.admin.password = Some("<redacted>".into());
        }
        copy.store.redis_url = copy.store.redis_url.as_deref().map(redact_url_password);
        copy.store.redis_cluster_urls =
            copy.store.redis_cluster_urls.iter().map(|url| redact_url_password(url)).collect();
        if copy.auth.backend_token_secret.is_some() {
            copy.auth.backend_token_secret = Some("<redacted>".into());
        }
        if copy.blob.s3.secret_access_key.is_some() {
            copy.blob.s3.secret_access_key = Some("<redacted>".into());
        }
        serde_json::to_string(&copy).unwrap_or_default()
    }
}

/// Describes a TOML error by its line and the key it is at (when it is at one), e.g. "line 3:
/// unknown variant `team`, expected one of `user`, `app`, `custom` in
/// `sources.Orders.partitioning`".
fn parse_error(path: &Path, text: &str, error: toml::de::Error) -> ConfigError {
    let line = error.span().map(|span| {
        let before = &text.as_bytes()[..span.start.min(text.len())];
        before.iter().filter(|&&byte| byte == b'\n').count() + 1
    });
    // Without its input, the error renders as its message followed by "in `key`".
    let mut unlocated = error;
    unlocated.set_input(None);
    let described = unlocated.to_string().trim_end().replace('\n', " ");
    let message = match line {
        Some(line) => format!("line {line}: {described}"),
        None => described,
    };
    ConfigError::Parse { path: path.to_owned(), message }
}

/// Returns `url` with the credentials of its user part (`redis://user:password@host`)
/// replaced, for logs.
fn redact_url_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}<redacted>{}", &url[..scheme + 3], &url[at..]),
        _ => url.to_owned(),
    }
}
