//! What a simulated device is told: where to connect, who it is, what it syncs, and how it
//! retries and acks. Plain structs; nothing here reads files or the environment.

use std::{path::PathBuf, time::Duration};

use syncline_proto::v1::DeviceInfo;

use crate::outbox::DEFAULT_MAX_QUEUED_MUTATIONS;
use crate::replica::{PartitionId, PartitionView};
use crate::wire::{DEFAULT_CONNECT_TIMEOUT, FrameFormat};

/// Default first reconnect delay: short, so a device is back quickly after a blip.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(200);

/// Default cap on the reconnect delay: a server that is down for long sees each device about
/// twice a minute.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Default session length after which a disconnect counts as a fresh failure rather than
/// part of a failing streak (the backoff restarts from the initial delay).
pub const DEFAULT_HEALTHY_SESSION: Duration = Duration::from_secs(10);

/// Default longest delay before live pushes are acked: bounds how stale the cursor the server
/// records can be, without one ack per push.
pub const DEFAULT_LIVE_ACK_INTERVAL: Duration = Duration::from_millis(200);

/// Default number of live changes after which an ack is sent at once.
pub const DEFAULT_LIVE_ACK_MAX_CHANGES: u64 = 100;

/// Default catch-up window: enough pages in flight to hide a round trip, few enough to keep
/// the server's per-device buffer small. The server caps it to `Welcome.max_window`.
pub const DEFAULT_WINDOW: u32 = 4;

/// Default capacity of the notification channel when notifications are on: a full catch-up
/// run of a few hundred pages fits without the device waiting on the app.
pub const DEFAULT_NOTIFICATION_CAPACITY: usize = 1024;

/// One partition a device syncs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionConfig {
    /// Source name.
    pub source: String,
    /// Partition key; `None` means the natural key the server names in `Welcome.sources`
    /// (the user id for `user` sources, `*` for `app` sources).
    pub key: Option<String>,
    /// Records or changes per page; 0 means the server default.
    pub page_size: u32,
    /// Catch-up pages in flight before an ack; 0 means pull mode (one `Pull` per page).
    pub window: u32,
    /// Bulk sync: a first sync (or a reset) asks for the partition as a file when it holds
    /// at least this many records (the server answers "page instead" below it); `None`:
    /// always page.
    pub bulk_min_records: Option<u64>,
}

impl SubscriptionConfig {
    /// Returns a subscription to the natural partition of `source` with default paging.
    pub fn new(source: impl Into<String>) -> Self {
        Self { source: source.into(), key: None, page_size: 0, window: DEFAULT_WINDOW, bulk_min_records: None }
    }

    /// Returns this subscription for partition `key`.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Returns this subscription with bulk sync for partitions of at least `min_records`
    /// records (0: always bulk).
    pub fn with_bulk(mut self, min_records: u64) -> Self {
        self.bulk_min_records = Some(min_records);
        self
    }

    /// Returns this subscription with `page_size` records or changes per page.
    pub fn with_page_size(mut self, page_size: u32) -> Self {
        self.page_size = page_size;
        self
    }

    /// Returns this subscription with a catch-up window of `window` pages (0: pull mode).
    pub fn with_window(mut self, window: u32) -> Self {
        self.window = window;
        self
    }
}

/// Reconnect delays: exponential from `initial` to `max`, each delay drawn uniformly from its
/// upper half so that devices cut at the same moment do not come back at the same moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    /// The first delay.
    pub initial: Duration,
    /// The largest delay.
    pub max: Duration,
    /// A session that was open at least this long, or caught up, resets the delay to
    /// `initial`.
    pub healthy_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self { initial: DEFAULT_BACKOFF_INITIAL, max: DEFAULT_BACKOFF_MAX, healthy_after: DEFAULT_HEALTHY_SESSION }
    }
}

/// When live pushes are acked: after `interval` or `max_changes` changes, whichever first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveAckPolicy {
    /// Longest delay of an ack after the first unacked live push.
    pub interval: Duration,
    /// Changes after which an ack goes out at once.
    pub max_changes: u64,
}

impl Default for LiveAckPolicy {
    fn default() -> Self {
        Self { interval: DEFAULT_LIVE_ACK_INTERVAL, max_changes: DEFAULT_LIVE_ACK_MAX_CHANGES }
    }
}

/// Everything a simulated device needs.
#[derive(Clone, Debug)]
pub struct DeviceConfig {
    /// The device endpoint, e.g. `ws://127.0.0.1:7700/v1/sync`.
    pub url: String,
    /// The frame format the device sends.
    pub format: FrameFormat,
    /// CA certificate PEM for `wss://` URLs.
    pub ca_cert_pem: Option<Vec<u8>>,
    /// Login name.
    pub username: String,
    /// Password, used for the first login and when a session token is refused.
    pub password: String,
    /// A backend token (see [`crate::backend_token`]); when set, the device logs in with it
    /// instead of `username` and `password` (first login, and when a session token is
    /// refused), and `username` only names the device in logs.
    pub backend_token: Option<String>,
    /// A client id from an earlier run, sent in the first `Hello`.
    pub client_id: Option<String>,
    /// What the device says about itself.
    pub device_info: DeviceInfo,
    /// The partitions to sync.
    pub subscriptions: Vec<SubscriptionConfig>,
    /// Reconnect delays.
    pub backoff: BackoffConfig,
    /// When live pushes are acked.
    pub live_ack: LiveAckPolicy,
    /// Limit on opening one connection.
    pub connect_timeout: Duration,
    /// Capacity of the notification channel; `None` turns notifications off (load runs).
    pub notification_capacity: Option<usize>,
    /// Seed of the reconnect jitter; `None` seeds from the OS.
    pub seed: Option<u64>,
    /// Partitions the device already holds from an earlier run (its persisted local store):
    /// it resumes them from their cursors instead of starting from a snapshot.
    pub restored: Vec<(PartitionId, PartitionView)>,
    /// The SQLite file of the device's mutation queue; `None` keeps the queue in memory (it
    /// then dies with the device). A device started on the file of an earlier run sends what
    /// that run had not finished.
    pub mutation_store: Option<PathBuf>,
    /// Most mutations the queue holds; creating, updating or deleting beyond it fails.
    pub max_queued_mutations: usize,
    /// Directory of the blobs the app attaches to records (until uploaded) and downloads;
    /// `None` keeps them in memory.
    pub blob_dir: Option<PathBuf>,
    /// Where bulk files are downloaded to (each is deleted once read); `None`: a folder of
    /// the system's temporary directory.
    pub bulk_dir: Option<PathBuf>,
}

impl DeviceConfig {
    /// Returns a configuration with defaults, no subscriptions and notifications off.
    pub fn new(url: impl Into<String>, username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            format: FrameFormat::Binary,
            ca_cert_pem: None,
            username: username.into(),
            password: password.into(),
            backend_token: None,
            client_id: None,
            device_info: DeviceInfo {
                platform: "sim".to_owned(),
                app_version: env!("CARGO_PKG_VERSION").to_owned(),
                model: "syncline-client-sim".to_owned(),
            },
            subscriptions: Vec::new(),
            backoff: BackoffConfig::default(),
            live_ack: LiveAckPolicy::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            notification_capacity: None,
            seed: None,
            restored: Vec::new(),
            mutation_store: None,
            max_queued_mutations: DEFAULT_MAX_QUEUED_MUTATIONS,
            blob_dir: None,
            bulk_dir: None,
        }
    }

    /// Returns this configuration with one more subscription.
    pub fn subscribe(mut self, subscription: SubscriptionConfig) -> Self {
        self.subscriptions.push(subscription);
        self
    }

    /// Returns this configuration logging in with backend token `token` instead of the
    /// password.
    pub fn with_backend_token(mut self, token: impl Into<String>) -> Self {
        self.backend_token = Some(token.into());
        self
    }

    /// Returns this configuration sending frames in `format`.
    pub fn with_format(mut self, format: FrameFormat) -> Self {
        self.format = format;
        self
    }

    /// Returns this configuration trusting the CA certificate(s) in `pem` for `wss://`.
    pub fn with_ca_cert_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_cert_pem = Some(pem.into());
        self
    }

    /// Returns this configuration with `partition` restored from `view` (the device's
    /// persisted copy): the device resumes it from `view.cursor`.
    pub fn restore(mut self, partition: PartitionId, view: PartitionView) -> Self {
        self.restored.push((partition, view));
        self
    }

    /// Returns this configuration keeping its mutation queue in the SQLite file at `path`.
    pub fn with_mutation_store(mut self, path: impl Into<PathBuf>) -> Self {
        self.mutation_store = Some(path.into());
        self
    }

    /// Returns this configuration downloading bulk files into `dir`.
    pub fn with_bulk_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bulk_dir = Some(dir.into());
        self
    }

    /// Returns this configuration with notifications on, through a channel of `capacity`.
    pub fn with_notifications(mut self, capacity: usize) -> Self {
        self.notification_capacity = Some(capacity);
        self
    }
}
