//! [`Config::validate`]: checks every value once and turns the raw tree into [`Settings`],
//! one function per section. Every error names the key (`section.key`) and says what is
//! expected.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use syncline_push::{ListenerConfig, SessionConfig};

use super::settings::{
    AdminSettings, AuthSettings, BackendTokenSettings, BlobSettings, BulkSettings, Capture, ClusterSettings,
    CorsOrigins, DemoSettings, DeviceSettings, FailedLoginPolicy, GrpcSettings, LoginLimits, RpcServiceSettings,
    RpcSettings, S3Settings, Settings, SourceSettings, StoreBackendSettings, StoreSettings, TlsSettings,
};
use super::{
    ANY_ORIGIN, AdminSection, AuthSection, BlobS3Section, BlobSection, BulkSection, CATCH_UP_READS_PER_CORE,
    CaptureMode, ClusterSection, Config, ConfigError, DeviceSection, GrpcSection, MAX_CATCH_UP_READS,
    MAX_FAILED_LOGIN_SECS, MAX_GRPC_THREADS, MAX_LOGIN_CONCURRENCY, MAX_LOGIN_QUEUE_TIMEOUT_MS, MAX_PUSH_INTERVAL_MS,
    MIN_ADMIN_PASSWORD_CHARS, MIN_BACKEND_TOKEN_SECRET_BYTES, MIN_MAX_FRAME_BYTES, MIN_MAX_PAGE_BYTES, RpcSection,
    SourceSection, StoreBackend, StoreSection, TlsSection,
};
use crate::storage::redis::{DEFAULT_WAIT_TIMEOUT, RedisEndpoint, RedisOptions};

/// Longest source or RPC service name: safe in paths, URLs and log lines.
const MAX_NAME_BYTES: usize = 64;

impl Config {
    /// Checks every value and returns the typed settings.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let device = device(&self.device)?;
        let sources = sources(&self.sources, device.max_page_size)?;
        // The demo's sources (and login and RPC channels) are the demo channel's to declare
        // when it starts (`demo::start_channel`).
        let demo = (self.demo.enabled && sources.is_empty()).then_some(DemoSettings { records: self.demo.records });
        if sources.is_empty() && demo.is_none() {
            return Err(invalid("sources", &"{}", "configure at least one source, or enable the demo"));
        }
        Ok(Settings {
            log_format: self.log_format,
            shutdown_grace: Duration::from_secs(positive("shutdown_grace_secs", self.shutdown_grace_secs)?),
            device,
            grpc: grpc(&self.grpc)?,
            tls: tls(&self.tls)?,
            auth: auth(&self.auth)?,
            store: store(&self.data_dir, &self.store)?,
            blob: blob(&self.data_dir, &self.blob)?,
            demo,
            sources,
            rpc: rpc(&self.rpc)?,
            admin: admin(&self.admin)?,
            cluster: cluster(&self.cluster)?,
            bulk: bulk(&self.data_dir, &self.bulk)?,
        })
    }
}

/// Shortest lease TTL: renewed every third of it, a renewal must fit in well under that.
const MIN_LEASE_TTL_MS: u64 = 300;
/// Longest lease TTL and sweep interval: a dead node's work must move within minutes.
const MAX_CLUSTER_INTERVAL_MS: u64 = 600_000;
/// Shortest sweep interval: each sweep reads every device's queue.
const MIN_SWEEP_INTERVAL_MS: u64 = 100;
/// Longest node id.
const MAX_NODE_ID_BYTES: usize = 64;

/// Checks the `[cluster]` keys.
fn cluster(section: &ClusterSection) -> Result<ClusterSettings, ConfigError> {
    let within = |key: &str, value: u64, min: u64| {
        if (min..=MAX_CLUSTER_INTERVAL_MS).contains(&value) {
            Ok(Duration::from_millis(value))
        } else {
            Err(invalid(key, &value, &format!("must be between {min} and {MAX_CLUSTER_INTERVAL_MS} ms")))
        }
    };
    if let Some(node_id) = &section.node_id {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if node_id.is_empty() || node_id.len() > MAX_NODE_ID_BYTES || !node_id.chars().all(allowed) {
            return Err(invalid(
                "cluster.node_id",
                node_id,
                &format!("expected 1 to {MAX_NODE_ID_BYTES} letters, digits, '-', '_' or '.'"),
            ));
        }
    }
    Ok(ClusterSettings {
        node_id: section.node_id.clone(),
        lease_ttl: within("cluster.lease_ttl_ms", section.lease_ttl_ms, MIN_LEASE_TTL_MS)?,
        sweep_interval: within("cluster.sweep_interval_ms", section.sweep_interval_ms, MIN_SWEEP_INTERVAL_MS)?,
    })
}

/// Returns the error for `key = value`, which is not valid because of `message`.
fn invalid(key: &str, value: &dyn Display, message: &str) -> ConfigError {
    ConfigError::Invalid { key: key.to_owned(), value: value.to_string(), message: message.to_owned() }
}

/// Returns `value` if it is above zero.
fn positive(key: &str, value: u64) -> Result<u64, ConfigError> {
    if value == 0 { Err(invalid(key, &value, "must be greater than 0")) } else { Ok(value) }
}

/// Returns `value` if it is above zero.
fn positive_count(key: &str, value: usize) -> Result<usize, ConfigError> {
    if value == 0 { Err(invalid(key, &value, "must be greater than 0")) } else { Ok(value) }
}

/// Returns `value` if it is at least `min`.
fn at_least(key: &str, value: usize, min: usize) -> Result<usize, ConfigError> {
    if value < min { Err(invalid(key, &value, &format!("must be at least {min}"))) } else { Ok(value) }
}

/// Returns `value` if it is 1 to `max`, the value of the key `max_key`.
fn one_to(key: &str, value: u64, max: u64, max_key: &str) -> Result<u64, ConfigError> {
    if value == 0 || value > max {
        Err(invalid(key, &value, &format!("must be between 1 and {max_key}")))
    } else {
        Ok(value)
    }
}

/// Parses a listener address.
fn socket_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| invalid(key, &value, "expected IP:PORT, e.g. 127.0.0.1:7700"))
}

/// Checks `[device]`.
fn device(device: &DeviceSection) -> Result<DeviceSettings, ConfigError> {
    at_least("device.max_frame_bytes", device.max_frame_bytes, MIN_MAX_FRAME_BYTES)?;
    let (page_size, max_page_size) = (device.default_page_size.into(), device.max_page_size.into());
    one_to("device.default_page_size", page_size, max_page_size, "device.max_page_size")?;
    at_least("device.max_page_bytes", device.max_page_bytes, MIN_MAX_PAGE_BYTES)?;
    let (window, max_window) = (device.default_window.into(), device.max_window.into());
    one_to("device.default_window", window, max_window, "device.max_window")?;
    if device.idle_timeout_secs <= device.heartbeat_secs {
        let message = "must be longer than device.heartbeat_secs";
        return Err(invalid("device.idle_timeout_secs", &device.idle_timeout_secs, message));
    }
    if device.push_interval_ms > MAX_PUSH_INTERVAL_MS {
        let message = format!("must be 0 to {MAX_PUSH_INTERVAL_MS}");
        return Err(invalid("device.push_interval_ms", &device.push_interval_ms, &message));
    }
    let session = SessionConfig {
        outbound_queue: positive_count("device.outbound_queue", device.outbound_queue)?,
        outbound_queue_bytes: positive_count("device.outbound_queue_bytes", device.outbound_queue_bytes)?,
        heartbeat: Duration::from_secs(positive("device.heartbeat_secs", device.heartbeat_secs)?),
        idle_timeout: Duration::from_secs(device.idle_timeout_secs),
        handshake_timeout: Duration::from_millis(positive("device.hello_timeout_ms", device.hello_timeout_ms)?),
    };
    Ok(DeviceSettings {
        addr: socket_addr("device.addr", &device.addr)?,
        listener: ListenerConfig {
            max_frame_bytes: device.max_frame_bytes,
            max_connections: positive_count("device.max_connections", device.max_connections)?,
            session,
        },
        max_connections_per_user: device.max_connections_per_user,
        default_page_size: device.default_page_size,
        max_page_size: device.max_page_size,
        max_page_bytes: device.max_page_bytes,
        default_window: device.default_window,
        max_window: device.max_window,
        max_subscriptions: positive_count("device.max_subscriptions", device.max_subscriptions)?,
        max_pending_mutations: positive("device.max_pending_mutations", device.max_pending_mutations)?,
        push_interval: Duration::from_millis(device.push_interval_ms),
        catch_up_reads: catch_up_reads(device.catch_up_reads)?,
        cors_origins: cors_origins(&device.cors_origins)?,
    })
}

/// Checks `device.catch_up_reads` (0: four per CPU core).
fn catch_up_reads(configured: usize) -> Result<usize, ConfigError> {
    if configured > MAX_CATCH_UP_READS {
        let message = format!("must be 0 (four per CPU core) to {MAX_CATCH_UP_READS}");
        return Err(invalid("device.catch_up_reads", &configured, &message));
    }
    if configured > 0 {
        return Ok(configured);
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    Ok((cores * CATCH_UP_READS_PER_CORE).min(MAX_CATCH_UP_READS))
}

/// Checks `device.cors_origins`: `"*"` alone, or origins as browsers send them
/// (`scheme://host[:port]`, no path).
fn cors_origins(origins: &[String]) -> Result<CorsOrigins, ConfigError> {
    const KEY: &str = "device.cors_origins";
    if origins.iter().any(|origin| origin == ANY_ORIGIN) {
        if origins.len() > 1 {
            return Err(invalid(KEY, &origins.join(","), "\"*\" allows any origin: list it alone"));
        }
        return Ok(CorsOrigins::Any);
    }
    for origin in origins {
        let rest = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
        let valid = rest.is_some_and(|host| {
            !host.is_empty() && !host.contains('/') && host.bytes().all(|byte| byte.is_ascii_graphic())
        });
        if !valid {
            return Err(invalid(KEY, origin, "expected an origin like https://app.example.com[:port], or \"*\""));
        }
    }
    Ok(CorsOrigins::List(origins.to_vec()))
}

/// Checks `[grpc]`.
fn grpc(grpc: &GrpcSection) -> Result<GrpcSettings, ConfigError> {
    if !(1..=MAX_GRPC_THREADS).contains(&grpc.threads) {
        return Err(invalid("grpc.threads", &grpc.threads, &format!("must be 1 to {MAX_GRPC_THREADS}")));
    }
    Ok(GrpcSettings {
        addr: socket_addr("grpc.addr", &grpc.addr)?,
        ingest_token: grpc.ingest_token.clone().filter(|token| !token.is_empty()),
        threads: grpc.threads,
        describe_interval: Duration::from_secs(positive("grpc.describe_interval_secs", grpc.describe_interval_secs)?),
    })
}

/// Checks `[admin]`.
fn admin(admin: &AdminSection) -> Result<AdminSettings, ConfigError> {
    let password = admin.password.clone().filter(|password| !password.is_empty());
    if let Some(password) = &password
        && password.chars().count() < MIN_ADMIN_PASSWORD_CHARS
    {
        let message = format!("must be at least {MIN_ADMIN_PASSWORD_CHARS} characters");
        return Err(invalid("admin.password", &"<redacted>", &message));
    }
    Ok(AdminSettings { addr: socket_addr("admin.addr", &admin.addr)?, metrics_public: admin.metrics_public, password })
}

/// Checks `[bulk]`: positive lifetimes and counts, an http(s) base URL.
fn bulk(data_dir: &Path, bulk: &BulkSection) -> Result<BulkSettings, ConfigError> {
    let public_url = bulk.public_url.clone().filter(|url| !url.is_empty());
    if let Some(url) = &public_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(invalid("bulk.public_url", url, "must start with http:// or https://"));
    }
    Ok(BulkSettings {
        dir: bulk.dir.clone().unwrap_or_else(|| data_dir.join("bulk")),
        reuse_changes: bulk.reuse_changes,
        token_ttl: Duration::from_secs(positive("bulk.token_ttl_secs", bulk.token_ttl_secs)?),
        file_ttl: Duration::from_secs(positive("bulk.file_ttl_secs", bulk.file_ttl_secs)?),
        max_concurrent_writes: positive_count("bulk.max_concurrent_writes", bulk.max_concurrent_writes)?,
        max_queued_jobs: positive_count("bulk.max_queued_jobs", bulk.max_queued_jobs)?,
        public_url,
    })
}

/// Checks `[tls]`: both files or neither.
fn tls(tls: &TlsSection) -> Result<Option<TlsSettings>, ConfigError> {
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => Ok(Some(TlsSettings { cert: cert.clone(), key: key.clone() })),
        (None, None) => Ok(None),
        (Some(cert), None) => Err(invalid("tls.key", &"", &format!("tls.cert = {cert:?} is set; set tls.key too"))),
        (None, Some(key)) => Err(invalid("tls.cert", &"", &format!("tls.key = {key:?} is set; set tls.cert too"))),
    }
}

/// Checks `[auth]`.
fn auth(auth: &AuthSection) -> Result<AuthSettings, ConfigError> {
    Ok(AuthSettings {
        token_ttl: Duration::from_secs(positive("auth.token_ttl_secs", auth.token_ttl_secs)?),
        channel: auth.channel.as_deref().map(|url| endpoint_url("auth.channel", url)).transpose()?,
        backend_tokens: backend_tokens(auth)?,
        login_limits: login_limits(auth)?,
    })
}

/// Checks the login concurrency and failed-login settings of `[auth]`.
fn login_limits(auth: &AuthSection) -> Result<LoginLimits, ConfigError> {
    let concurrency = match auth.login_concurrency {
        0 => syncline_proto::sdk::passwords::default_threads(),
        threads @ 1..=MAX_LOGIN_CONCURRENCY => threads,
        threads => {
            let message = format!("must be 0 (one per core) to {MAX_LOGIN_CONCURRENCY}");
            return Err(invalid("auth.login_concurrency", &threads, &message));
        }
    };
    for (key, value, max) in [
        ("auth.login_queue_timeout_ms", auth.login_queue_timeout_ms, MAX_LOGIN_QUEUE_TIMEOUT_MS),
        ("auth.failed_login_window_secs", auth.failed_login_window_secs, MAX_FAILED_LOGIN_SECS),
        ("auth.failed_login_backoff_secs", auth.failed_login_backoff_secs, MAX_FAILED_LOGIN_SECS),
    ] {
        if value == 0 || value > max {
            return Err(invalid(key, &value, &format!("must be 1 to {max}")));
        }
    }
    Ok(LoginLimits {
        concurrency,
        queue: auth.login_queue,
        queue_timeout: Duration::from_millis(auth.login_queue_timeout_ms),
        failed: FailedLoginPolicy {
            per_user: auth.max_failed_logins_per_user,
            per_address: auth.max_failed_logins_per_address,
            window: Duration::from_secs(auth.failed_login_window_secs),
            backoff: Duration::from_secs(auth.failed_login_backoff_secs),
        },
    })
}

/// Checks the backend token settings of `[auth]`; `None` when backend tokens are off.
fn backend_tokens(auth: &AuthSection) -> Result<Option<BackendTokenSettings>, ConfigError> {
    let secret = auth.backend_token_secret.as_deref().filter(|secret| !secret.is_empty());
    let audience = auth.backend_token_audience.clone().filter(|audience| !audience.is_empty());
    let Some(secret) = secret else {
        return match audience {
            Some(audience) => Err(invalid(
                "auth.backend_token_audience",
                &audience,
                "needs auth.backend_token_secret (backend tokens are off without it)",
            )),
            None => Ok(None),
        };
    };
    if secret.len() < MIN_BACKEND_TOKEN_SECRET_BYTES {
        let message = format!(
            "must be at least {MIN_BACKEND_TOKEN_SECRET_BYTES} bytes (an HS256 key as long as its hash); \
             generate one with `openssl rand -base64 48`"
        );
        // Never echo a secret, even a bad one.
        let shown = format!("<redacted, {} bytes>", secret.len());
        return Err(invalid("auth.backend_token_secret", &shown, &message));
    }
    Ok(Some(BackendTokenSettings { secret: secret.as_bytes().to_vec(), audience }))
}

/// Checks `[store]`, kept in `data_dir`.
fn store(data_dir: &Path, store: &StoreSection) -> Result<StoreSettings, ConfigError> {
    let retention_hours = positive("store.mutation_outcome_retention_hours", store.mutation_outcome_retention_hours)?;
    Ok(StoreSettings {
        backend: store_backend(store)?,
        data_dir: data_dir.to_owned(),
        cache_bytes: store.cache_mb.saturating_mul(1024 * 1024),
        compact_keep_recent: store.compact_keep_recent,
        compact_interval: Duration::from_secs(positive("store.compact_interval_secs", store.compact_interval_secs)?),
        mutation_outcome_retention: Duration::from_secs(retention_hours.saturating_mul(3600)),
        cursor_flush: Duration::from_millis(positive("store.cursor_flush_millis", store.cursor_flush_millis)?),
    })
}

/// Checks `[blob]`; the directory defaults to `blobs` in `data_dir`.
fn blob(data_dir: &Path, blob: &BlobSection) -> Result<BlobSettings, ConfigError> {
    let dir = blob.dir.clone().unwrap_or_else(|| data_dir.join(super::DEFAULT_BLOB_DIR_NAME));
    if dir.as_os_str().is_empty() {
        return Err(invalid("blob.dir", &"", "name a directory, or leave it out for `blobs` in data_dir"));
    }
    Ok(BlobSettings {
        dir,
        max_bytes: positive("blob.max_bytes", blob.max_bytes)?,
        gc_grace: Duration::from_secs(blob.gc_grace_secs),
        gc_interval: Duration::from_secs(positive("blob.gc_interval_secs", blob.gc_interval_secs)?),
        s3: blob_s3(&blob.s3)?,
    })
}

/// Checks `[blob.s3]`: none of its keys (no bucket), or a bucket with a well-formed
/// endpoint, both credentials or neither, and a prefix of path segments.
fn blob_s3(s3: &BlobS3Section) -> Result<Option<S3Settings>, ConfigError> {
    let Some(bucket) = s3.bucket.as_deref() else {
        if s3.is_unset() {
            return Ok(None);
        }
        return Err(invalid("blob.s3.bucket", &"", "is required when other blob.s3 keys are set"));
    };
    let bucket_chars = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_');
    if bucket.len() < 3 || bucket.len() > 63 || !bucket.chars().all(bucket_chars) {
        return Err(invalid(
            "blob.s3.bucket",
            &bucket,
            "must be a bucket name: 3 to 63 lowercase letters, digits, '-', '.' or '_'",
        ));
    }
    let endpoint = match s3.endpoint.as_deref().map(|endpoint| endpoint.trim_end_matches('/')) {
        None => None,
        Some(endpoint) => {
            let plain = endpoint.strip_prefix("http://").is_some();
            let rest = endpoint.strip_prefix("https://").or_else(|| endpoint.strip_prefix("http://"));
            match rest {
                Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => {}
                Some(_) | None => {
                    return Err(invalid("blob.s3.endpoint", &endpoint, "must be a URL: http(s)://host[:port]"));
                }
            }
            if plain && !s3.allow_http {
                return Err(invalid(
                    "blob.s3.endpoint",
                    &endpoint,
                    "is plain HTTP: use https, or set blob.s3.allow_http = true for a loopback endpoint",
                ));
            }
            Some(endpoint.to_owned())
        }
    };
    let credentials = match (&s3.access_key_id, &s3.secret_access_key) {
        (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => Some((id.clone(), secret.clone())),
        (None, None) => None,
        // The secret's value is never echoed.
        _ => {
            return Err(invalid(
                "blob.s3.access_key_id",
                &s3.access_key_id.as_deref().unwrap_or(""),
                "set both blob.s3.access_key_id and blob.s3.secret_access_key (neither empty), or neither",
            ));
        }
    };
    let region = s3.region.clone().unwrap_or_else(|| super::DEFAULT_BLOB_S3_REGION.to_owned());
    if region.is_empty() {
        return Err(invalid("blob.s3.region", &"", "name a region, or leave it out for us-east-1"));
    }
    let prefix = s3.prefix.as_deref().unwrap_or("").trim_matches('/');
    if prefix.split('/').any(|segment| segment.is_empty() || segment == "." || segment == "..") && !prefix.is_empty() {
        return Err(invalid("blob.s3.prefix", &prefix, "must be path segments such as `syncline` or `apps/crm`"));
    }
    Ok(Some(S3Settings {
        bucket: bucket.to_owned(),
        endpoint,
        region,
        credentials,
        prefix: if prefix.is_empty() { String::new() } else { format!("{prefix}/") },
        allow_http: s3.allow_http,
    }))
}

/// Checks the store backend's keys: Redis needs exactly one of `redis_url` and
/// `redis_cluster_urls`, each a valid `redis://` URL.
fn store_backend(store: &StoreSection) -> Result<StoreBackendSettings, ConfigError> {
    match store.backend {
        StoreBackend::Embedded => Ok(StoreBackendSettings::Embedded),
        StoreBackend::Redis => {
            let endpoint = match (&store.redis_url, store.redis_cluster_urls.as_slice()) {
                (Some(url), []) => RedisEndpoint::Single(redis_url("store.redis_url", url)?),
                (None, []) => {
                    return Err(invalid(
                        "store.redis_url",
                        &"",
                        "store.backend = \"redis\" needs store.redis_url (one server) or \
                         store.redis_cluster_urls (nodes of a cluster)",
                    ));
                }
                (None, urls) => RedisEndpoint::Cluster(
                    urls.iter().map(|url| redis_url("store.redis_cluster_urls", url)).collect::<Result<_, _>>()?,
                ),
                (Some(_), urls) => {
                    return Err(invalid(
                        "store.redis_cluster_urls",
                        &urls.join(","),
                        "set store.redis_url (one server) or store.redis_cluster_urls (a cluster), not both",
                    ));
                }
            };
            Ok(StoreBackendSettings::Redis(RedisOptions {
                endpoint,
                wait_replicas: store.redis_wait_replicas,
                wait_timeout: DEFAULT_WAIT_TIMEOUT,
                allow_volatile: store.allow_volatile,
            }))
        }
    }
}

/// Checks one Redis URL (`redis://[user:password@]host[:port][/db]`); the error never shows
/// its password.
fn redis_url(key: &str, url: &str) -> Result<String, ConfigError> {
    use redis::IntoConnectionInfo as _;
    let shown = if url.contains('@') { "<redacted>" } else { url };
    if !url.starts_with("redis://") {
        return Err(invalid(key, &shown, "expected a redis:// URL (TLS is not supported yet)"));
    }
    match url.into_connection_info() {
        Ok(_) => Ok(url.to_owned()),
        Err(error) => Err(invalid(key, &shown, &format!("not a valid redis URL: {error}"))),
    }
}

/// Checks `[sources.*]`; page sizes are bounded by `max_page_size`.
fn sources(
    sources: &BTreeMap<String, SourceSection>,
    max_page_size: u32,
) -> Result<BTreeMap<String, SourceSettings>, ConfigError> {
    sources.iter().map(|(name, section)| Ok((name.clone(), source(name, section, max_page_size)?))).collect()
}

/// Checks `[sources.<name>]`.
fn source(name: &str, source: &SourceSection, max_page_size: u32) -> Result<SourceSettings, ConfigError> {
    if !valid_source_name(name) {
        return Err(invalid(
            &format!("sources.{name}"),
            &name,
            "source names are 1-64 letters, digits, '_', '-' or '.'",
        ));
    }
    let key = |field: &str| format!("sources.{name}.{field}");
    let channel = source.channel.as_deref().map(|url| endpoint_url(&key("channel"), url)).transpose()?;
    let capture = match source.capture {
        CaptureMode::Ingest => Capture::Ingest,
        CaptureMode::Watch => Capture::Watch,
        CaptureMode::Poll => Capture::Poll {
            interval: Duration::from_secs(positive(&key("poll_interval_secs"), source.poll_interval_secs)?),
        },
    };
    if capture != Capture::Ingest && channel.is_none() {
        let mode = source.capture.as_str();
        return Err(invalid(&key("capture"), &mode, &format!("{mode} capture needs sources.{name}.channel")));
    }
    if let Some(page_size) = source.page_size {
        one_to(&key("page_size"), page_size.into(), max_page_size.into(), "device.max_page_size")?;
    }
    Ok(SourceSettings {
        partitioning: source.partitioning,
        channel,
        capture,
        conflict: source.conflict,
        page_size: source.page_size,
    })
}

/// Checks `[rpc]` and its services.
fn rpc(rpc: &RpcSection) -> Result<RpcSettings, ConfigError> {
    positive("rpc.max_deadline_ms", rpc.max_deadline_ms)?;
    one_to("rpc.default_deadline_ms", rpc.default_deadline_ms, rpc.max_deadline_ms, "rpc.max_deadline_ms")?;
    let max_payload_bytes = positive_count("rpc.max_payload_bytes", rpc.max_payload_bytes)?;
    let max_in_flight_per_device = positive_count("rpc.max_in_flight_per_device", rpc.max_in_flight_per_device)?;
    let mut services = BTreeMap::new();
    for (name, service) in &rpc.services {
        if !valid_source_name(name) {
            let message = "service names are 1-64 letters, digits, '_', '-' or '.'";
            return Err(invalid(&format!("rpc.services.{name}"), name, message));
        }
        let endpoint = endpoint_url(&format!("rpc.services.{name}.endpoint"), &service.endpoint)?;
        let max_in_flight = positive_count(&format!("rpc.services.{name}.max_in_flight"), service.max_in_flight)?;
        services.insert(name.clone(), RpcServiceSettings { endpoint, max_in_flight });
    }
    Ok(RpcSettings {
        default_deadline: Duration::from_millis(rpc.default_deadline_ms),
        max_deadline: Duration::from_millis(rpc.max_deadline_ms),
        max_payload_bytes,
        max_in_flight_per_device,
        services,
    })
}

/// Checks a channel endpoint URL (http:// or https://, host and port).
fn endpoint_url(key: &str, url: &str) -> Result<String, ConfigError> {
    let expected = "expected http://HOST:PORT or https://HOST:PORT";
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| invalid(key, &url, expected))?;
    let authority = rest.split('/').next().unwrap_or_default();
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(url.trim_end_matches('/').to_owned())
        }
        _ => Err(invalid(key, &url, expected)),
    }
}

/// Returns true for source names that are safe in paths, URLs and log lines.
pub fn valid_source_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.'))
}
