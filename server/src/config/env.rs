//! Environment overrides: [`ENV_VARS`] is the one table of them, a `SYNCLINE_*` variable for
//! every scalar key of the tree, each with the key it sets and how its value is parsed.
//!
//! Names are the key's own name in capitals (`SYNCLINE_MAX_FRAME_BYTES` sets
//! `device.max_frame_bytes`), prefixed with the section's name where the key alone would be
//! ambiguous (`SYNCLINE_GRPC_ADDR`, `SYNCLINE_STORE_CACHE_MB`, `SYNCLINE_RPC_MAX_PAYLOAD_BYTES`).

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Deserialize as _;
use serde::de::IntoDeserializer as _;

use super::{Config, ConfigError, LogFormat, StoreBackend};

/// One environment override: the variable, the config key it sets, and how.
pub struct EnvVar {
    /// The variable's name, e.g. `SYNCLINE_MAX_FRAME_BYTES`.
    pub name: &'static str,
    /// The key it sets as written in TOML, e.g. `device.max_frame_bytes`.
    pub key: &'static str,
    /// Parses a value and sets the key; the error says what was expected.
    set: fn(&mut Config, &str) -> Result<(), String>,
}

impl EnvVar {
    /// Sets this variable's key in `config` from `value`; the error says what was expected.
    pub fn apply(&self, config: &mut Config, value: &str) -> Result<(), String> {
        (self.set)(config, value)
    }
}

/// `SYNCLINE_*` variables that are not overrides: the CLI reads `SYNCLINE_CONFIG` to find
/// the config file.
/// `SYNCLINE_ADMIN_TOKEN` is the API token the admin CLI commands send.
const NOT_OVERRIDES: &[&str] = &["SYNCLINE_CONFIG", "SYNCLINE_ADMIN_TOKEN"];

/// Builds a table entry: `var!(NAME, "section.key", config => config.section.key)`.
macro_rules! var {
    ($name:literal, $key:literal, $config:ident => $field:expr) => {
        EnvVar {
            name: $name,
            key: $key,
            set: |$config, value| {
                $field = parse(value)?;
                Ok(())
            },
        }
    };
}

/// Every environment override, in the order of `syncline.example.toml`.
pub const ENV_VARS: &[EnvVar] = &[
    var!("SYNCLINE_DATA_DIR", "data_dir", config => config.data_dir),
    var!("SYNCLINE_LOG_FORMAT", "log_format", config => config.log_format),
    var!("SYNCLINE_SHUTDOWN_GRACE_SECS", "shutdown_grace_secs", config => config.shutdown_grace_secs),
    var!("SYNCLINE_DEVICE_ADDR", "device.addr", config => config.device.addr),
    var!("SYNCLINE_MAX_FRAME_BYTES", "device.max_frame_bytes", config => config.device.max_frame_bytes),
    var!("SYNCLINE_OUTBOUND_QUEUE", "device.outbound_queue", config => config.device.outbound_queue),
    var!("SYNCLINE_OUTBOUND_QUEUE_BYTES", "device.outbound_queue_bytes", config => config.device.outbound_queue_bytes),
    var!("SYNCLINE_HEARTBEAT_SECS", "device.heartbeat_secs", config => config.device.heartbeat_secs),
    var!("SYNCLINE_IDLE_TIMEOUT_SECS", "device.idle_timeout_secs", config => config.device.idle_timeout_secs),
    var!("SYNCLINE_HELLO_TIMEOUT_MS", "device.hello_timeout_ms", config => config.device.hello_timeout_ms),
    var!("SYNCLINE_MAX_CONNECTIONS", "device.max_connections", config => config.device.max_connections),
    var!(
        "SYNCLINE_MAX_CONNECTIONS_PER_USER",
        "device.max_connections_per_user",
        config => config.device.max_connections_per_user
    ),
    var!("SYNCLINE_DEFAULT_PAGE_SIZE", "device.default_page_size", config => config.device.default_page_size),
    var!("SYNCLINE_MAX_PAGE_SIZE", "device.max_page_size", config => config.device.max_page_size),
    var!("SYNCLINE_MAX_PAGE_BYTES", "device.max_page_bytes", config => config.device.max_page_bytes),
    var!("SYNCLINE_DEFAULT_WINDOW", "device.default_window", config => config.device.default_window),
    var!("SYNCLINE_MAX_WINDOW", "device.max_window", config => config.device.max_window),
    var!("SYNCLINE_MAX_SUBSCRIPTIONS", "device.max_subscriptions", config => config.device.max_subscriptions),
    var!(
        "SYNCLINE_MAX_PENDING_MUTATIONS",
        "device.max_pending_mutations",
        config => config.device.max_pending_mutations
    ),
    var!("SYNCLINE_PUSH_INTERVAL_MS", "device.push_interval_ms", config => config.device.push_interval_ms),
    var!("SYNCLINE_CATCH_UP_READS", "device.catch_up_reads", config => config.device.catch_up_reads),
    var!("SYNCLINE_CORS_ORIGINS", "device.cors_origins", config => config.device.cors_origins),
    var!("SYNCLINE_GRPC_ADDR", "grpc.addr", config => config.grpc.addr),
    var!("SYNCLINE_INGEST_TOKEN", "grpc.ingest_token", config => config.grpc.ingest_token),
    var!("SYNCLINE_GRPC_THREADS", "grpc.threads", config => config.grpc.threads),
    var!("SYNCLINE_DESCRIBE_INTERVAL_SECS", "grpc.describe_interval_secs", config => config.grpc.describe_interval_secs),
    var!("SYNCLINE_ADMIN_ADDR", "admin.addr", config => config.admin.addr),
    var!("SYNCLINE_ADMIN_METRICS_PUBLIC", "admin.metrics_public", config => config.admin.metrics_public),
    var!("SYNCLINE_ADMIN_PASSWORD", "admin.password", config => config.admin.password),
    var!("SYNCLINE_TLS_CERT", "tls.cert", config => config.tls.cert),
    var!("SYNCLINE_TLS_KEY", "tls.key", config => config.tls.key),
    var!("SYNCLINE_TOKEN_TTL_SECS", "auth.token_ttl_secs", config => config.auth.token_ttl_secs),
    var!("SYNCLINE_AUTH_CHANNEL", "auth.channel", config => config.auth.channel),
    var!("SYNCLINE_BACKEND_TOKEN_SECRET", "auth.backend_token_secret", config => config.auth.backend_token_secret),
    var!(
        "SYNCLINE_BACKEND_TOKEN_AUDIENCE",
        "auth.backend_token_audience",
        config => config.auth.backend_token_audience
    ),
    var!("SYNCLINE_LOGIN_CONCURRENCY", "auth.login_concurrency", config => config.auth.login_concurrency),
    var!("SYNCLINE_LOGIN_QUEUE", "auth.login_queue", config => config.auth.login_queue),
    var!("SYNCLINE_LOGIN_QUEUE_TIMEOUT_MS", "auth.login_queue_timeout_ms", config => config.auth.login_queue_timeout_ms),
    var!(
        "SYNCLINE_MAX_FAILED_LOGINS_PER_USER",
        "auth.max_failed_logins_per_user",
        config => config.auth.max_failed_logins_per_user
    ),
    var!(
        "SYNCLINE_MAX_FAILED_LOGINS_PER_ADDRESS",
        "auth.max_failed_logins_per_address",
        config => config.auth.max_failed_logins_per_address
    ),
    var!(
        "SYNCLINE_FAILED_LOGIN_WINDOW_SECS",
        "auth.failed_login_window_secs",
        config => config.auth.failed_login_window_secs
    ),
    var!(
        "SYNCLINE_FAILED_LOGIN_BACKOFF_SECS",
        "auth.failed_login_backoff_secs",
        config => config.auth.failed_login_backoff_secs
    ),
    var!("SYNCLINE_STORE_BACKEND", "store.backend", config => config.store.backend),
    var!("SYNCLINE_REDIS_URL", "store.redis_url", config => config.store.redis_url),
    var!("SYNCLINE_REDIS_CLUSTER_URLS", "store.redis_cluster_urls", config => config.store.redis_cluster_urls),
    var!("SYNCLINE_REDIS_WAIT_REPLICAS", "store.redis_wait_replicas", config => config.store.redis_wait_replicas),
    var!("SYNCLINE_STORE_ALLOW_VOLATILE", "store.allow_volatile", config => config.store.allow_volatile),
    var!("SYNCLINE_STORE_CACHE_MB", "store.cache_mb", config => config.store.cache_mb),
    var!("SYNCLINE_COMPACT_KEEP_RECENT", "store.compact_keep_recent", config => config.store.compact_keep_recent),
    var!("SYNCLINE_COMPACT_INTERVAL_SECS", "store.compact_interval_secs", config => config.store.compact_interval_secs),
    var!("SYNCLINE_CURSOR_FLUSH_MILLIS", "store.cursor_flush_millis", config => config.store.cursor_flush_millis),
    var!(
        "SYNCLINE_MUTATION_OUTCOME_RETENTION_HOURS",
        "store.mutation_outcome_retention_hours",
        config => config.store.mutation_outcome_retention_hours
    ),
    var!("SYNCLINE_CLUSTER_NODE_ID", "cluster.node_id", config => config.cluster.node_id),
    var!("SYNCLINE_CLUSTER_LEASE_TTL_MS", "cluster.lease_ttl_ms", config => config.cluster.lease_ttl_ms),
    var!("SYNCLINE_CLUSTER_SWEEP_INTERVAL_MS", "cluster.sweep_interval_ms", config => config.cluster.sweep_interval_ms),
    var!("SYNCLINE_BLOB_DIR", "blob.dir", config => config.blob.dir),
    var!("SYNCLINE_BLOB_MAX_BYTES", "blob.max_bytes", config => config.blob.max_bytes),
    var!("SYNCLINE_BLOB_GC_GRACE_SECS", "blob.gc_grace_secs", config => config.blob.gc_grace_secs),
    var!("SYNCLINE_BLOB_GC_INTERVAL_SECS", "blob.gc_interval_secs", config => config.blob.gc_interval_secs),
    var!("SYNCLINE_BLOB_S3_BUCKET", "blob.s3.bucket", config => config.blob.s3.bucket),
    var!("SYNCLINE_BLOB_S3_ENDPOINT", "blob.s3.endpoint", config => config.blob.s3.endpoint),
    var!("SYNCLINE_BLOB_S3_REGION", "blob.s3.region", config => config.blob.s3.region),
    var!("SYNCLINE_BLOB_S3_ACCESS_KEY_ID", "blob.s3.access_key_id", config => config.blob.s3.access_key_id),
    var!(
        "SYNCLINE_BLOB_S3_SECRET_ACCESS_KEY",
        "blob.s3.secret_access_key",
        config => config.blob.s3.secret_access_key
    ),
    var!("SYNCLINE_BLOB_S3_PREFIX", "blob.s3.prefix", config => config.blob.s3.prefix),
    var!("SYNCLINE_BLOB_S3_ALLOW_HTTP", "blob.s3.allow_http", config => config.blob.s3.allow_http),
    var!("SYNCLINE_BULK_DIR", "bulk.dir", config => config.bulk.dir),
    var!("SYNCLINE_BULK_REUSE_CHANGES", "bulk.reuse_changes", config => config.bulk.reuse_changes),
    var!("SYNCLINE_BULK_TOKEN_TTL_SECS", "bulk.token_ttl_secs", config => config.bulk.token_ttl_secs),
    var!("SYNCLINE_BULK_FILE_TTL_SECS", "bulk.file_ttl_secs", config => config.bulk.file_ttl_secs),
    var!("SYNCLINE_BULK_MAX_CONCURRENT_WRITES", "bulk.max_concurrent_writes", config => config.bulk.max_concurrent_writes),
    var!("SYNCLINE_BULK_MAX_QUEUED_JOBS", "bulk.max_queued_jobs", config => config.bulk.max_queued_jobs),
    var!("SYNCLINE_BULK_PUBLIC_URL", "bulk.public_url", config => config.bulk.public_url),
    var!("SYNCLINE_DEMO", "demo.enabled", config => config.demo.enabled),
    var!("SYNCLINE_DEMO_RECORDS", "demo.records", config => config.demo.records),
    var!("SYNCLINE_RPC_DEFAULT_DEADLINE_MS", "rpc.default_deadline_ms", config => config.rpc.default_deadline_ms),
    var!("SYNCLINE_RPC_MAX_DEADLINE_MS", "rpc.max_deadline_ms", config => config.rpc.max_deadline_ms),
    var!("SYNCLINE_RPC_MAX_PAYLOAD_BYTES", "rpc.max_payload_bytes", config => config.rpc.max_payload_bytes),
    var!(
        "SYNCLINE_RPC_MAX_IN_FLIGHT_PER_DEVICE",
        "rpc.max_in_flight_per_device",
        config => config.rpc.max_in_flight_per_device
    ),
];

impl Config {
    /// Applies the `SYNCLINE_*` entries of `env` (see [`ENV_VARS`]). Unknown `SYNCLINE_*`
    /// names are an error, so a typo does not silently do nothing.
    pub fn apply_env(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        let mut names: Vec<&String> = env.keys().filter(|name| name.starts_with("SYNCLINE_")).collect();
        names.sort();
        for name in names.into_iter().filter(|name| !NOT_OVERRIDES.contains(&name.as_str())) {
            let value = &env[name];
            let bad = |message: String| ConfigError::Env { name: name.clone(), value: value.clone(), message };
            let var = ENV_VARS
                .iter()
                .find(|var| var.name == name)
                .ok_or_else(|| bad("unknown SYNCLINE_ variable".to_owned()))?;
            var.apply(self, value).map_err(bad)?;
        }
        Ok(())
    }
}

/// Parses an environment variable's value as the type of the key it sets.
fn parse<T: EnvValue>(value: &str) -> Result<T, String> {
    T::parse(value)
}

/// A type a key may have, parsed from an environment variable's text.
trait EnvValue: Sized {
    /// Parses `value`; the error says what was expected.
    fn parse(value: &str) -> Result<Self, String>;
}

impl EnvValue for u64 {
    fn parse(value: &str) -> Result<Self, String> {
        value.parse().map_err(|_| "expected a whole number".to_owned())
    }
}

impl EnvValue for usize {
    fn parse(value: &str) -> Result<Self, String> {
        value.parse().map_err(|_| "expected a whole number".to_owned())
    }
}

impl EnvValue for u32 {
    fn parse(value: &str) -> Result<Self, String> {
        value.parse().map_err(|_| "expected a whole number below 2^32".to_owned())
    }
}

impl EnvValue for bool {
    fn parse(value: &str) -> Result<Self, String> {
        match value {
            "1" | "true" | "on" => Ok(true),
            "0" | "false" | "off" => Ok(false),
            _ => Err("expected true or false".to_owned()),
        }
    }
}

impl EnvValue for String {
    fn parse(value: &str) -> Result<Self, String> {
        Ok(value.to_owned())
    }
}

impl EnvValue for PathBuf {
    fn parse(value: &str) -> Result<Self, String> {
        Ok(PathBuf::from(value))
    }
}

impl<T: EnvValue> EnvValue for Option<T> {
    fn parse(value: &str) -> Result<Self, String> {
        T::parse(value).map(Some)
    }
}

/// A list: comma-separated items (`a,b`), spaces around them ignored; empty: none.
impl EnvValue for Vec<String> {
    fn parse(value: &str) -> Result<Self, String> {
        Ok(value.split(',').map(str::trim).filter(|item| !item.is_empty()).map(str::to_owned).collect())
    }
}

impl EnvValue for StoreBackend {
    fn parse(value: &str) -> Result<Self, String> {
        StoreBackend::deserialize(value.into_deserializer()).map_err(|error: serde::de::value::Error| error.to_string())
    }
}

impl EnvValue for LogFormat {
    fn parse(value: &str) -> Result<Self, String> {
        // The same names, and the same message for others, as in the file.
        LogFormat::deserialize(value.into_deserializer()).map_err(|error: serde::de::value::Error| error.to_string())
    }
}
