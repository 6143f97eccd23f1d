use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// Returns the error `validate` gives for the defaults changed by `change`.
fn validate_error(change: impl FnOnce(&mut Config)) -> String {
    let mut config = Config::default();
    change(&mut config);
    config.validate().unwrap_err().to_string()
}

/// Returns the error `load` gives for a config file holding `text`.
fn file_error(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("syncline.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(Some(&path), &HashMap::new()).unwrap_err().to_string()
}

/// Returns every scalar key of `config` (`section.key`) with its value; keys set to `None`
/// are absent.
fn scalar_keys(config: &Config) -> BTreeMap<String, toml::Value> {
    fn walk(prefix: &str, table: &toml::Table, keys: &mut BTreeMap<String, toml::Value>) {
        for (name, value) in table {
            let key = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
            match value {
                toml::Value::Table(inner) => walk(&key, inner, keys),
                scalar => {
                    keys.insert(key, scalar.clone());
                }
            }
        }
    }
    let mut keys = BTreeMap::new();
    match toml::Value::try_from(config).unwrap() {
        toml::Value::Table(table) => walk("", &table, &mut keys),
        other => panic!("the tree is not a table: {other}"),
    }
    keys
}

/// Returns the defaults with every optional scalar key set, so that each appears.
fn every_key_set() -> Config {
    let mut config = Config::default();
    config.grpc.ingest_token = Some("token".into());
    config.admin.password = Some("admin-password".into());
    config.tls.cert = Some("cert.pem".into());
    config.tls.key = Some("key.pem".into());
    config.auth.channel = Some("http://127.0.0.1:7801".into());
    config.auth.backend_token_secret = Some("secret".into());
    config.auth.backend_token_audience = Some("audience".into());
    config.store.redis_url = Some("redis://127.0.0.1:6379/".into());
    config.cluster.node_id = Some("node-1".into());
    config.blob.dir = Some("blobs".into());
    config.blob.s3 = BlobS3Section {
        bucket: Some("bucket".into()),
        endpoint: Some("https://s3.example.com".into()),
        region: Some("eu-west-1".into()),
        access_key_id: Some("id".into()),
        secret_access_key: Some("secret".into()),
        prefix: Some("syncline".into()),
        allow_http: false,
    };
    config.bulk.dir = Some("bulk".into());
    config.bulk.public_url = Some("https://sync.example.com".into());
    config
}

#[test]
fn defaults_validate_to_the_demo_app_on_loopback() {
    let settings = Config::default().validate().unwrap();
    assert_eq!(settings.device.addr.to_string(), DEFAULT_DEVICE_ADDR);
    assert_eq!(settings.grpc.addr.to_string(), DEFAULT_GRPC_ADDR);
    assert_eq!(settings.shutdown_grace, Duration::from_secs(DEFAULT_SHUTDOWN_GRACE_SECS));
    assert_eq!(settings.log_format, LogFormat::Pretty);
    assert!(settings.sources.is_empty(), "the demo declares its sources when it starts");
    assert_eq!(settings.demo, Some(DemoSettings { records: DEFAULT_DEMO_RECORDS }));
    assert_eq!(settings.blob.dir, std::path::Path::new(DEFAULT_DATA_DIR).join(DEFAULT_BLOB_DIR_NAME));
    assert_eq!(settings.blob.max_bytes, DEFAULT_BLOB_MAX_BYTES);
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
fn each_env_var_sets_exactly_the_key_its_entry_names() {
    // Values that parse as some key type and differ from every default.
    const CANDIDATES: &[&str] = &["7", "false", "json", "redis", "somewhere", "true"];
    let defaults = scalar_keys(&Config::default());
    for var in ENV_VARS {
        let changed = CANDIDATES.iter().find_map(|value| {
            let mut config = Config::default();
            var.apply(&mut config, value).ok()?;
            let after = scalar_keys(&config);
            let keys: BTreeSet<&String> = after.keys().chain(defaults.keys()).collect();
            let changed: Vec<String> =
                keys.into_iter().filter(|key| after.get(*key) != defaults.get(*key)).cloned().collect();
            (!changed.is_empty()).then_some(changed)
        });
        assert_eq!(changed, Some(vec![var.key.to_owned()]), "{} must set {} and nothing else", var.name, var.key);
        let loaded = Config::load(None, &env(&[(var.name, "7")]));
        let through_load = match loaded {
            Ok(config) => config != Config::default(),
            Err(ConfigError::Env { name, .. }) => name == var.name,
            Err(other) => panic!("{}: {other}", var.name),
        };
        assert!(through_load, "Config::load does not apply {}", var.name);
    }
}

#[test]
fn every_scalar_key_has_one_env_var() {
    let keys: BTreeSet<String> = scalar_keys(&every_key_set()).into_keys().collect();
    let covered: BTreeSet<String> = ENV_VARS.iter().map(|var| var.key.to_owned()).collect();
    assert_eq!(covered, keys, "ENV_VARS and the tree's scalar keys differ");
    assert_eq!(covered.len(), ENV_VARS.len(), "two variables set the same key");
    let names: BTreeSet<&str> = ENV_VARS.iter().map(|var| var.name).collect();
    assert_eq!(names.len(), ENV_VARS.len(), "a variable name is used twice");
}

#[test]
fn env_mistakes_name_the_variable() {
    let error = Config::load(None, &env(&[("SYNCLINE_DATADIR", "x")])).unwrap_err().to_string();
    assert!(error.contains("SYNCLINE_DATADIR") && error.contains("unknown SYNCLINE_ variable"), "{error}");
    let error = Config::load(None, &env(&[("SYNCLINE_LOG_FORMAT", "xml")])).unwrap_err().to_string();
    assert!(error.contains("SYNCLINE_LOG_FORMAT") && error.contains("`pretty`"), "{error}");
    let error = Config::load(None, &env(&[("SYNCLINE_DEMO", "maybe")])).unwrap_err().to_string();
    assert!(error.contains("SYNCLINE_DEMO") && error.contains("expected true or false"), "{error}");
    let error = Config::load(None, &env(&[("SYNCLINE_DEMO_RECORDS", "5000000000")])).unwrap_err().to_string();
    assert!(error.contains("SYNCLINE_DEMO_RECORDS") && error.contains("below 2^32"), "{error}");
    let config = Config::load(None, &env(&[("SYNCLINE_CONFIG", "syncline.toml")])).unwrap();
    assert_eq!(config, Config::default(), "SYNCLINE_CONFIG is the CLI's, not an override");
}

#[test]
fn enum_values_outside_their_set_are_refused_naming_the_key() {
    for (text, key, expected) in [
        ("log_format = \"xml\"\n", "`log_format`", "`json`"),
        ("[sources.Orders]\npartitioning = \"team\"\n", "`sources.Orders.partitioning`", "`custom`"),
        ("[sources.Orders]\npartitioning = \"app\"\ncapture = \"push\"\n", "`sources.Orders.capture`", "`poll`"),
        (
            "[sources.Orders]\npartitioning = \"app\"\nconflict = \"newest\"\n",
            "`sources.Orders.conflict`",
            "`last_write_wins`",
        ),
    ] {
        let error = file_error(text);
        assert!(error.contains(key) && error.contains(expected), "{text}: {error}");
    }
    let error = file_error("[device]\nadress = \"x\"\n");
    assert!(error.contains("adress") && error.contains("line 2"), "{error}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("syncline.toml");
    let text = "log_format = \"json\"\n[sources.Orders]\npartitioning = \"custom\"\ncapture = \"poll\"\n\
                channel = \"http://127.0.0.1:7801\"\nconflict = \"last_write_wins\"\n";
    std::fs::write(&path, text).unwrap();
    let settings = Config::load(Some(&path), &HashMap::new()).unwrap().validate().unwrap();
    assert_eq!(settings.log_format, LogFormat::Json);
    let orders = &settings.sources["Orders"];
    assert_eq!(orders.partitioning, Partitioning::Custom);
    assert_eq!(orders.capture, Capture::Poll { interval: Duration::from_secs(DEFAULT_POLL_INTERVAL_SECS) });
    assert_eq!(orders.conflict, ConflictPolicy::LastWriteWins);
}

/// A change to the defaults, and the key its error must name.
type Case = (&'static str, Box<dyn Fn(&mut Config)>);

fn case(key: &'static str, change: impl Fn(&mut Config) + 'static) -> Case {
    (key, Box::new(change))
}

/// A change to the defaults that adds source `Orders` (user partitions, with a channel)
/// changed by `change`.
fn orders(change: fn(&mut SourceSection)) -> impl Fn(&mut Config) {
    move |config| {
        let mut source = SourceSection::new(Partitioning::User);
        source.channel = Some("http://127.0.0.1:7801".into());
        change(&mut source);
        config.sources.insert("Orders".into(), source);
    }
}

#[test]
fn validation_errors_name_the_key() {
    let cases: Vec<Case> = vec![
        case("shutdown_grace_secs", |config| config.shutdown_grace_secs = 0),
        case("device.addr", |config| config.device.addr = "localhost".into()),
        case("device.max_frame_bytes", |config| config.device.max_frame_bytes = 100),
        case("device.default_page_size", |config| config.device.default_page_size = 0),
        case("device.default_window", |config| config.device.default_window = 17),
        case("device.idle_timeout_secs", |config| config.device.idle_timeout_secs = 25),
        case("device.heartbeat_secs", |config| config.device.heartbeat_secs = 0),
        case("device.outbound_queue", |config| config.device.outbound_queue = 0),
        case("device.outbound_queue_bytes", |config| config.device.outbound_queue_bytes = 0),
        case("device.max_connections", |config| config.device.max_connections = 0),
        case("device.max_subscriptions", |config| config.device.max_subscriptions = 0),
        case("device.max_pending_mutations", |config| config.device.max_pending_mutations = 0),
        case("device.catch_up_reads", |config| config.device.catch_up_reads = MAX_CATCH_UP_READS + 1),
        case("grpc.addr", |config| config.grpc.addr = "7701".into()),
        case("tls.key", |config| config.tls.cert = Some("cert.pem".into())),
        case("tls.cert", |config| config.tls.key = Some("key.pem".into())),
        case("auth.token_ttl_secs", |config| config.auth.token_ttl_secs = 0),
        case("auth.channel", |config| config.auth.channel = Some("127.0.0.1:7801".into())),
        case("store.compact_interval_secs", |config| config.store.compact_interval_secs = 0),
        case("store.cursor_flush_millis", |config| config.store.cursor_flush_millis = 0),
        case("cluster.lease_ttl_ms", |config| config.cluster.lease_ttl_ms = 100),
        case("cluster.lease_ttl_ms", |config| config.cluster.lease_ttl_ms = 3_600_000),
        case("cluster.sweep_interval_ms", |config| config.cluster.sweep_interval_ms = 0),
        case("cluster.node_id", |config| config.cluster.node_id = Some("node one".into())),
        case("cluster.node_id", |config| config.cluster.node_id = Some(String::new())),
        case("sources", |config| config.demo.enabled = false),
        case("sources.Bad name", |config| {
            config.sources.insert("Bad name".into(), SourceSection::new(Partitioning::App));
        }),
        case("sources.Orders.channel", orders(|source| source.channel = Some("localhost:7801".into()))),
        case("sources.Orders.page_size", orders(|source| source.page_size = Some(0))),
        case(
            "sources.Orders.poll_interval_secs",
            orders(|source| {
                source.capture = CaptureMode::Poll;
                source.poll_interval_secs = 0;
            }),
        ),
    ];
    for (key, change) in cases {
        let error = validate_error(change);
        assert!(error.starts_with(&format!("{key} = ")), "{key}: {error}");
    }
    let error = validate_error(orders(|source| {
        source.channel = None;
        source.capture = CaptureMode::Watch;
    }));
    let expected = "watch capture needs sources.Orders.channel";
    assert!(error.starts_with("sources.Orders.capture = ") && error.contains(expected), "{error}");
}

#[test]
fn cluster_leases_have_defaults_and_env_overrides() {
    let settings = Config::default().validate().unwrap();
    assert_eq!(settings.cluster.lease_ttl, Duration::from_millis(DEFAULT_LEASE_TTL_MS));
    assert_eq!(settings.cluster.sweep_interval, Duration::from_millis(DEFAULT_SWEEP_INTERVAL_MS));
    assert_eq!(settings.cluster.node_id, None);
    let overrides = env(&[
        ("SYNCLINE_CLUSTER_LEASE_TTL_MS", "1500"),
        ("SYNCLINE_CLUSTER_SWEEP_INTERVAL_MS", "250"),
        ("SYNCLINE_CLUSTER_NODE_ID", "node-2"),
    ]);
    let settings = Config::load(None, &overrides).unwrap().validate().unwrap();
    assert_eq!(settings.cluster.lease_ttl, Duration::from_millis(1_500));
    assert_eq!(settings.cluster.sweep_interval, Duration::from_millis(250));
    assert_eq!(settings.cluster.node_id.as_deref(), Some("node-2"));
}

#[test]
fn shutdown_grace_comes_from_the_file_or_the_environment() {
    let config = Config::load(None, &env(&[("SYNCLINE_SHUTDOWN_GRACE_SECS", "3")])).unwrap();
    assert_eq!(config.validate().unwrap().shutdown_grace, Duration::from_secs(3));
    let config: Config = toml::from_str("shutdown_grace_secs = 30\n").unwrap();
    assert_eq!(config.validate().unwrap().shutdown_grace, Duration::from_secs(30));
}

#[test]
fn page_bytes_come_from_the_environment_and_have_a_floor() {
    assert_eq!(Config::default().validate().unwrap().device.max_page_bytes, DEFAULT_MAX_PAGE_BYTES);
    let config = Config::load(None, &env(&[("SYNCLINE_MAX_PAGE_BYTES", "65536")])).unwrap();
    assert_eq!(config.validate().unwrap().device.max_page_bytes, 65536);
    let error = Config::load(None, &env(&[("SYNCLINE_MAX_PAGE_BYTES", "lots")])).unwrap_err();
    assert!(error.to_string().contains("SYNCLINE_MAX_PAGE_BYTES"), "{error}");
    let error = validate_error(|config| config.device.max_page_bytes = MIN_MAX_PAGE_BYTES - 1);
    assert!(error.contains("device.max_page_bytes") && error.contains("at least 1024"), "{error}");
}

#[test]
fn grpc_threads_come_from_the_environment_and_are_bounded() {
    assert_eq!(Config::default().validate().unwrap().grpc.threads, DEFAULT_GRPC_THREADS);
    let config = Config::load(None, &env(&[("SYNCLINE_GRPC_THREADS", "4")])).unwrap();
    assert_eq!(config.validate().unwrap().grpc.threads, 4);
    for threads in [0, MAX_GRPC_THREADS + 1] {
        let error = validate_error(|config| config.grpc.threads = threads);
        assert!(error.contains("grpc.threads") && error.contains("must be 1 to 256"), "{error}");
    }
}

#[test]
fn hello_timeout_comes_from_the_environment_and_is_positive() {
    let hello_timeout = |settings: Settings| settings.device.listener.session.handshake_timeout;
    let default = hello_timeout(Config::default().validate().unwrap());
    assert_eq!(default, Duration::from_millis(DEFAULT_HELLO_TIMEOUT_MS));
    let config = Config::load(None, &env(&[("SYNCLINE_HELLO_TIMEOUT_MS", "250")])).unwrap();
    assert_eq!(hello_timeout(config.validate().unwrap()), Duration::from_millis(250));
    let error = validate_error(|config| config.device.hello_timeout_ms = 0);
    assert!(error.contains("device.hello_timeout_ms") && error.contains("greater than 0"), "{error}");
}

#[test]
fn push_interval_comes_from_the_environment_and_is_bounded() {
    assert_eq!(Config::default().validate().unwrap().device.push_interval, Duration::ZERO);
    let config = Config::load(None, &env(&[("SYNCLINE_PUSH_INTERVAL_MS", "20")])).unwrap();
    assert_eq!(config.validate().unwrap().device.push_interval, Duration::from_millis(20));
    let error = validate_error(|config| config.device.push_interval_ms = MAX_PUSH_INTERVAL_MS + 1);
    assert!(error.contains("device.push_interval_ms") && error.contains("must be 0 to 1000"), "{error}");
    let error = Config::load(None, &env(&[("SYNCLINE_PUSH_INTERVAL_MS", "soon")])).unwrap_err().to_string();
    assert!(error.contains("SYNCLINE_PUSH_INTERVAL_MS"), "{error}");
}

#[test]
fn mutation_outcome_retention_is_in_hours_and_positive() {
    let default = Config::default().validate().unwrap().store.mutation_outcome_retention;
    assert_eq!(default, Duration::from_secs(DEFAULT_MUTATION_OUTCOME_RETENTION_HOURS * 3600));
    let config = Config::load(None, &env(&[("SYNCLINE_MUTATION_OUTCOME_RETENTION_HOURS", "2")])).unwrap();
    assert_eq!(config.validate().unwrap().store.mutation_outcome_retention, Duration::from_secs(7200));
    let error = validate_error(|config| config.store.mutation_outcome_retention_hours = 0);
    assert!(error.contains("store.mutation_outcome_retention_hours"), "{error}");
}

#[test]
fn login_limits_have_defaults_env_overrides_and_bounds() {
    let limits = Config::default().validate().unwrap().auth.login_limits;
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
    let limits = config.validate().unwrap().auth.login_limits;
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
        let error = validate_error(|config| set(&mut config.auth));
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
    let tokens = config.validate().unwrap().auth.backend_tokens.expect("backend tokens are on");
    assert_eq!(tokens.secret, secret.as_bytes());
    assert_eq!(tokens.audience.as_deref(), Some("syncline"));
    assert!(!format!("{tokens:?}").contains(secret));
    assert!(!config.redacted().contains(secret));

    let mut config = Config::default();
    assert!(config.validate().unwrap().auth.backend_tokens.is_none());
    config.auth.backend_token_secret = Some(String::new());
    assert!(config.validate().unwrap().auth.backend_tokens.is_none(), "empty means not set");
    config.auth.backend_token_audience = Some("syncline".into());
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("auth.backend_token_audience"), "{error}");
}

#[test]
fn an_s3_bucket_is_checked_and_its_secret_never_shown() {
    let secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY";
    let vars = [
        ("SYNCLINE_BLOB_S3_BUCKET", "photos"),
        ("SYNCLINE_BLOB_S3_ENDPOINT", "http://127.0.0.1:9000/"),
        ("SYNCLINE_BLOB_S3_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("SYNCLINE_BLOB_S3_SECRET_ACCESS_KEY", secret),
        ("SYNCLINE_BLOB_S3_PREFIX", "/apps/crm/"),
        ("SYNCLINE_BLOB_S3_ALLOW_HTTP", "true"),
    ];
    let config = Config::load(None, &env(&vars)).unwrap();
    let s3 = config.validate().unwrap().blob.s3.expect("the bucket is on");
    assert_eq!(s3.bucket, "photos");
    assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
    assert_eq!((s3.region.as_str(), s3.prefix.as_str()), (DEFAULT_BLOB_S3_REGION, "apps/crm/"));
    assert_eq!(s3.credentials, Some(("AKIDEXAMPLE".to_owned(), secret.to_owned())));
    assert!(!format!("{s3:?}").contains(secret), "{s3:?}");
    assert!(!format!("{:?}", config.blob.s3).contains(secret));
    assert!(!config.redacted().contains(secret), "{}", config.redacted());
    assert!(Config::default().validate().unwrap().blob.s3.is_none(), "off by default");

    let with = |change: fn(&mut BlobS3Section)| {
        let mut config = Config::load(None, &env(&vars)).unwrap();
        change(&mut config.blob.s3);
        config.validate().map(drop).unwrap_err().to_string()
    };
    type Case = (fn(&mut BlobS3Section), &'static str, &'static str);
    let cases: [Case; 7] = [
        (|s3| s3.bucket = None, "blob.s3.bucket", "required"),
        (|s3| s3.bucket = Some("Bad Bucket".into()), "blob.s3.bucket", "bucket name"),
        (|s3| s3.endpoint = Some("ftp://host".into()), "blob.s3.endpoint", "http(s)://"),
        (|s3| s3.allow_http = false, "blob.s3.endpoint", "allow_http"),
        (|s3| s3.secret_access_key = None, "blob.s3.access_key_id", "both"),
        (|s3| s3.region = Some(String::new()), "blob.s3.region", "region"),
        (|s3| s3.prefix = Some("a//b".into()), "blob.s3.prefix", "segments"),
    ];
    for (change, key, says) in cases {
        let error = with(change);
        assert!(error.contains(key) && error.contains(says), "{key}: {error}");
        assert!(!error.contains(secret), "the secret leaked into {error}");
    }
}

#[test]
fn rpc_mistakes_are_reported_by_name() {
    let error = validate_error(|config| config.rpc.default_deadline_ms = 120_000);
    assert!(error.contains("rpc.default_deadline_ms"), "{error}");
    let error = validate_error(|config| config.rpc.max_deadline_ms = 0);
    assert!(error.contains("rpc.max_deadline_ms"), "{error}");
    let error = validate_error(|config| config.rpc.max_payload_bytes = 0);
    assert!(error.contains("rpc.max_payload_bytes"), "{error}");
    let error = validate_error(|config| config.rpc.max_in_flight_per_device = 0);
    assert!(error.contains("rpc.max_in_flight_per_device"), "{error}");
    let error = validate_error(|config| {
        config.rpc.services.insert("crm".into(), RpcServiceSection::new("127.0.0.1:7801"));
    });
    assert!(error.contains("rpc.services.crm.endpoint"), "{error}");
    let error = validate_error(|config| {
        config.rpc.services.insert("bad name".into(), RpcServiceSection::new("http://127.0.0.1:7801"));
    });
    assert!(error.contains("rpc.services.bad name"), "{error}");
    let error = validate_error(|config| {
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
fn the_example_file_covers_every_key_and_env_var_and_validates() {
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
    // Every variable is named on the line of the key it sets.
    for var in ENV_VARS {
        let leaf = var.key.rsplit('.').next().unwrap_or(var.key);
        let named = text.lines().any(|line| {
            let line = line.trim_start_matches(['#', ' ']);
            line.starts_with(&format!("{leaf} = ")) && line.ends_with(&format!("# {}", var.name))
        });
        assert!(named, "example lacks `{leaf} = ...  # {}`", var.name);
    }
}

#[test]
fn the_redis_backend_needs_one_valid_endpoint() {
    use crate::storage::redis::{RedisEndpoint, RedisOptions};

    let redis = |change: fn(&mut StoreSection)| {
        let mut config = Config::default();
        config.store.backend = StoreBackend::Redis;
        change(&mut config.store);
        config.validate().map(|settings| settings.store.backend)
    };
    let error = redis(|_| {}).unwrap_err().to_string();
    assert!(error.contains("store.redis_url") && error.contains("store.redis_cluster_urls"), "{error}");
    let settings = redis(|store| store.redis_url = Some("redis://127.0.0.1:6379/".into())).unwrap();
    assert_eq!(settings, StoreBackendSettings::Redis(RedisOptions::single("redis://127.0.0.1:6379/")));
    let settings = redis(|store| {
        store.redis_cluster_urls = vec!["redis://10.0.0.1:7000".into(), "redis://10.0.0.2:7000".into()];
        store.redis_wait_replicas = 1;
        store.allow_volatile = true;
    })
    .unwrap();
    let StoreBackendSettings::Redis(options) = settings else { panic!("redis") };
    assert_eq!(
        options.endpoint,
        RedisEndpoint::Cluster(vec!["redis://10.0.0.1:7000".into(), "redis://10.0.0.2:7000".into()])
    );
    assert_eq!((options.wait_replicas, options.allow_volatile), (1, true));
    let error = redis(|store| {
        store.redis_url = Some("redis://a".into());
        store.redis_cluster_urls = vec!["redis://b".into()];
    })
    .unwrap_err()
    .to_string();
    assert!(error.starts_with("store.redis_cluster_urls") && error.contains("not both"), "{error}");
    let error = redis(|store| store.redis_url = Some("http://:hunter2@host".into())).unwrap_err().to_string();
    assert!(
        error.starts_with("store.redis_url") && error.contains("redis://") && !error.contains("hunter2"),
        "{error}"
    );
    let error = redis(|store| store.redis_cluster_urls = vec!["redis://".into()]).unwrap_err().to_string();
    assert!(error.starts_with("store.redis_cluster_urls"), "{error}");
    assert_eq!(Config::default().validate().unwrap().store.backend, StoreBackendSettings::Embedded);
}

#[test]
fn the_store_backend_comes_from_the_environment_and_redis_passwords_are_redacted() {
    let config = Config::load(
        None,
        &env(&[
            ("SYNCLINE_STORE_BACKEND", "redis"),
            ("SYNCLINE_REDIS_URL", "redis://:hunter2@127.0.0.1:6379/"),
            ("SYNCLINE_STORE_ALLOW_VOLATILE", "true"),
            ("SYNCLINE_REDIS_CLUSTER_URLS", ""),
        ]),
    )
    .unwrap();
    assert_eq!(config.store.backend, StoreBackend::Redis);
    assert!(config.store.allow_volatile);
    assert!(config.store.redis_cluster_urls.is_empty());
    assert!(config.validate().is_ok());
    let shown = config.redacted();
    assert!(!shown.contains("hunter2") && shown.contains("redis://<redacted>@127.0.0.1:6379/"), "{shown}");
    let error = Config::load(None, &env(&[("SYNCLINE_STORE_BACKEND", "postgres")])).unwrap_err().to_string();
    assert!(error.contains("SYNCLINE_STORE_BACKEND") && error.contains("`embedded`"), "{error}");
    let config = Config::load(None, &env(&[("SYNCLINE_REDIS_CLUSTER_URLS", "redis://a:1, redis://b:2")])).unwrap();
    assert_eq!(config.store.redis_cluster_urls, ["redis://a:1", "redis://b:2"]);
}

#[test]
fn cors_origins_are_any_by_default_a_list_or_none_and_checked() {
    assert_eq!(Config::default().validate().unwrap().device.cors_origins, CorsOrigins::Any);
    let mut config = Config::default();
    config.apply_env(&env(&[("SYNCLINE_CORS_ORIGINS", "https://app.example.com, http://localhost:5173")])).unwrap();
    let expected = vec!["https://app.example.com".to_owned(), "http://localhost:5173".to_owned()];
    assert_eq!(config.validate().unwrap().device.cors_origins, CorsOrigins::List(expected));
    config.device.cors_origins = Vec::new();
    assert_eq!(config.validate().unwrap().device.cors_origins, CorsOrigins::List(Vec::new()));
    for bad in [
        vec!["*".to_owned(), "https://a.example".to_owned()],
        vec!["app.example.com".to_owned()],
        vec!["https://app.example.com/path".to_owned()],
    ] {
        let error = validate_error(|config| config.device.cors_origins = bad.clone());
        assert!(error.contains("device.cors_origins"), "{error}");
    }
}

#[test]
fn catch_up_reads_default_to_four_per_core_and_take_a_configured_count() {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let settings = Config::default().validate().unwrap();
    assert_eq!(settings.device.catch_up_reads, cores * CATCH_UP_READS_PER_CORE);
    let mut config = Config::default();
    config.device.catch_up_reads = 3;
    assert_eq!(config.validate().unwrap().device.catch_up_reads, 3);
}
