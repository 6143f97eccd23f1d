//! The command-line arguments the fleet scenarios share: who the devices are and what they
//! sync ([`FleetArgs`], repeated in reports as [`FleetParams`]), and how a measured run is
//! bounded and reported ([`RunArgs`]).

use clap::Args;
use serde::Serialize;

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

/// Who the devices are and what they sync (shared by the fleet scenarios).
#[derive(Clone, Debug, Args)]
pub(crate) struct FleetArgs {
    /// The device endpoint, or a comma-separated list of the endpoints of one cluster's
    /// nodes; loopback addresses only. With several endpoints (here or `--also-url`) the
    /// devices are spread over them in turn (device i on endpoint i mod n, the first login on
    /// the first), and a device whose connection drops after it caught up resumes on the next
    /// endpoint with its reconnect backoff, as behind a load balancer (see `fleet::failover`).
    #[arg(long, default_value = "ws://127.0.0.1:7700/v1/sync")]
    pub(crate) url: String,
    /// More device endpoints of the same cluster (repeat the flag), after those of `--url`;
    /// loopback addresses only.
    #[arg(long = "also-url")]
    pub(crate) also_urls: Vec<String>,
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

/// What a report repeats of [`FleetArgs`] among its parameters.
#[derive(Debug, Serialize)]
pub(crate) struct FleetParams {
    pub(crate) url: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) also_urls: Vec<String>,
    pub(crate) devices: usize,
    pub(crate) source: String,
    pub(crate) key: String,
    pub(crate) ack_every: u64,
}

impl FleetArgs {
    /// Returns the device endpoints: those of `--url` (split at commas), then each
    /// `--also-url`.
    pub(crate) fn urls(&self) -> Vec<String> {
        let listed = self.url.split(',').map(str::trim).filter(|url| !url.is_empty()).map(str::to_owned);
        listed.chain(self.also_urls.iter().cloned()).collect()
    }

    /// Returns the first device endpoint (the one the password login goes to).
    pub(crate) fn first_url(&self) -> String {
        self.urls().into_iter().next().unwrap_or_default()
    }

    /// Returns what a report repeats of these arguments.
    pub(crate) fn params(&self) -> FleetParams {
        FleetParams {
            url: self.url.clone(),
            also_urls: self.also_urls.clone(),
            devices: self.devices,
            source: self.source.clone(),
            key: self.key.clone(),
            ack_every: self.ack_every,
        }
    }
}

/// Default hard limit on a measured run (`--max-secs`).
pub(crate) const DEFAULT_MAX_SECS: u64 = 300;
/// Default time deliveries may trail the last write before the rest count as lost.
pub(crate) const DEFAULT_DRAIN_SECS: u64 = 30;

/// How a measured run is bounded and reported (shared by the write scenarios); reports repeat
/// it among their parameters.
#[derive(Clone, Debug, Args, Serialize)]
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
    #[serde(skip)]
    pub(crate) json_out: Option<std::path::PathBuf>,
}

/// Checks a `--rate` of writes per second where 0 means back to back.
pub(crate) fn check_rate(rate: f64) -> anyhow::Result<()> {
    anyhow::ensure!(rate >= 0.0 && rate.is_finite(), "--rate must be a finite number ≥ 0");
    Ok(())
}

/// Returns the arguments of a one-device fleet on an unused port, for unit tests.
#[cfg(test)]
pub(crate) fn fleet_args() -> FleetArgs {
    FleetArgs {
        url: "ws://127.0.0.1:1/v1/sync".into(),
        also_urls: Vec::new(),
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
