//! The validated configuration: typed sections, each handed as it is to the part of the
//! server it configures.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use syncline_push::ListenerConfig;

use super::{
    ConflictPolicy, DEFAULT_RPC_DEADLINE_MS, DEFAULT_RPC_MAX_DEADLINE_MS, DEFAULT_RPC_MAX_IN_FLIGHT_PER_DEVICE,
    DEFAULT_RPC_MAX_PAYLOAD_BYTES, LogFormat, Partitioning,
};

/// The validated configuration (see [`super::Config::validate`]).
#[derive(Clone, Debug)]
pub struct Settings {
    pub log_format: LogFormat,
    /// How long the stop sequence may take.
    pub shutdown_grace: Duration,
    pub device: DeviceSettings,
    pub grpc: GrpcSettings,
    /// Certificate and key, when both listeners serve TLS.
    pub tls: Option<TlsSettings>,
    pub auth: AuthSettings,
    pub store: StoreSettings,
    pub blob: BlobSettings,
    /// The demo app to seed, when enabled and no sources are configured.
    pub demo: Option<DemoSettings>,
    pub sources: BTreeMap<String, SourceSettings>,
    /// Mobile RPC routing and limits.
    pub rpc: RpcSettings,
    pub admin: AdminSettings,
    /// Cluster mode's leases (used with the Redis store).
    pub cluster: ClusterSettings,
    pub bulk: BulkSettings,
}

/// Cluster mode: this node's id and the leases of the work one node at a time does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSettings {
    /// `None`: a new random id at each start.
    pub node_id: Option<String>,
    pub lease_ttl: Duration,
    pub sweep_interval: Duration,
}

/// Bulk sync files (`[bulk]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BulkSettings {
    /// Directory of the files (and of the pending jobs' manifests).
    pub dir: PathBuf,
    /// A cached file is reused while its partition moved fewer changes than this.
    pub reuse_changes: u64,
    pub token_ttl: Duration,
    /// Files are deleted this long after they were written.
    pub file_ttl: Duration,
    pub max_concurrent_writes: usize,
    pub max_queued_jobs: usize,
    /// The base of download URLs (`http(s)://host[:port]`), when set.
    pub public_url: Option<String>,
}

/// The admin listener.
#[derive(Clone)]
pub struct AdminSettings {
    pub addr: SocketAddr,
    /// `/metrics` needs no token.
    pub metrics_public: bool,
    /// The password the admin user `admin` gets at start, when set (never empty).
    pub password: Option<String>,
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AdminSettings")
            .field("addr", &self.addr)
            .field("metrics_public", &self.metrics_public)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The device endpoint and the limits applied to devices (the gateway's limits).
#[derive(Clone, Debug)]
pub struct DeviceSettings {
    pub addr: SocketAddr,
    /// What the push listener enforces on every connection: frame size, connection count,
    /// outbound queues, heartbeat, idle and Hello (handshake) timeouts.
    pub listener: ListenerConfig,
    /// Most simultaneous sessions of one user (0: no limit).
    pub max_connections_per_user: usize,
    pub default_page_size: u32,
    pub max_page_size: u32,
    /// Most encoded bytes of one catch-up page or live frame (one record or change larger
    /// than it goes alone).
    pub max_page_bytes: usize,
    pub default_window: u32,
    pub max_window: u32,
    pub max_subscriptions: usize,
    pub max_pending_mutations: u64,
    /// Shortest time between two live pushes of a partition (zero: each commit at once).
    pub push_interval: Duration,
    /// Catch-up page reads this node runs at once (resolved: never 0).
    pub catch_up_reads: usize,
    /// Which web origins may call the device listener's HTTP routes (CORS).
    pub cors_origins: CorsOrigins,
}

/// The web origins allowed to call the device listener's HTTP routes from a browser
/// (`device.cors_origins`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorsOrigins {
    /// Any origin (`"*"`): safe because the routes take bearer tokens, never cookies.
    Any,
    /// These origins only (`scheme://host[:port]`, as browsers send them); none: same
    /// origin only.
    List(Vec<String>),
}

/// The gRPC endpoint and the runtime it runs on.
#[derive(Clone, Debug)]
pub struct GrpcSettings {
    pub addr: SocketAddr,
    /// The token Ingest calls must carry, when one is set (never empty).
    pub ingest_token: Option<String>,
    /// Threads of the backend runtime (gRPC endpoint and change capture).
    pub threads: usize,
    /// How often channels are described again (schema changes).
    pub describe_interval: Duration,
}

/// PEM files both listeners serve TLS with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Device logins.
#[derive(Clone, Debug)]
pub struct AuthSettings {
    /// Lifetime of session tokens.
    pub token_ttl: Duration,
    /// Channel endpoint that checks device logins (instead of local users).
    pub channel: Option<String>,
    /// Backend token logins, when enabled.
    pub backend_tokens: Option<BackendTokenSettings>,
    /// Password checks at once and waiting, and the failed-login limits.
    pub login_limits: LoginLimits,
}

/// How many password checks may run and wait, and when failed logins block (validated from
/// the `[auth]` config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginLimits {
    /// Password checks at once: local hashing threads, or Authenticate calls to the login
    /// channel in flight.
    pub concurrency: usize,
    /// Logins that may wait for a check; more are refused as busy.
    pub queue: usize,
    /// Longest a login waits for a check before it is refused as busy.
    pub queue_timeout: Duration,
    /// When failed logins block a user name or an address.
    pub failed: FailedLoginPolicy,
}

/// When failed logins block a user name or an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailedLoginPolicy {
    /// Failures of one user name within `window` that block it; 0: no limit.
    pub per_user: u32,
    /// Failures from one address within `window` that block it; 0: no limit.
    pub per_address: u32,
    /// The window failures are counted in.
    pub window: Duration,
    /// How long the first block lasts.
    pub backoff: Duration,
}

/// Validated backend token settings (see [`super::AuthSection::backend_token_secret`]).
#[derive(Clone, PartialEq, Eq)]
pub struct BackendTokenSettings {
    /// The HS256 secret, at least [`super::MIN_BACKEND_TOKEN_SECRET_BYTES`].
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

/// The embedded store and the background jobs that keep it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSettings {
    /// Which store holds the data, and how to reach it.
    pub backend: StoreBackendSettings,
    /// Directory of the store's file (and the demo channel's database).
    pub data_dir: PathBuf,
    /// redb page cache.
    pub cache_bytes: usize,
    /// Log entries kept uncompacted behind each partition's head.
    pub compact_keep_recent: u64,
    pub compact_interval: Duration,
    /// How long finished mutations' outcomes are kept (pruned with compaction).
    pub mutation_outcome_retention: Duration,
    /// How often recorded device cursors are written.
    pub cursor_flush: Duration,
}

/// Blob storage (`[blob]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobSettings {
    /// Directory of blob files.
    pub dir: PathBuf,
    /// Largest blob accepted, in bytes.
    pub max_bytes: u64,
    /// How long an unreferenced blob is kept.
    pub gc_grace: Duration,
    /// How often unreferenced blobs are looked for.
    pub gc_interval: Duration,
    /// The bucket holding complete blobs and bulk files, when configured.
    pub s3: Option<S3Settings>,
}

/// An S3-compatible bucket (`[blob.s3]`), checked.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: String,
    /// The service's URL; `None` for AWS S3 itself.
    pub endpoint: Option<String>,
    pub region: String,
    /// The access key id and secret, or none (the bucket is public, or credentials come
    /// from elsewhere).
    pub credentials: Option<(String, String)>,
    /// Prefix of every key: empty, or ending with `/`.
    pub prefix: String,
    pub allow_http: bool,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.credentials.as_ref().map(|(id, _)| id))
            .field("secret_access_key", &self.credentials.as_ref().map(|_| "<redacted>"))
            .field("prefix", &self.prefix)
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// Which store holds the data (`store.backend`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreBackendSettings {
    /// The embedded store in `data_dir`.
    Embedded,
    /// Redis: where it is and how acknowledged writes are made durable.
    Redis(crate::storage::redis::RedisOptions),
}

/// The demo app to serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoSettings {
    /// Accounts seeded into the demo channel's database on first start.
    pub records: u32,
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
