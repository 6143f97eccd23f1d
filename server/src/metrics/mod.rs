//! Prometheus metrics of one server, rendered by `prometheus-client` in the Prometheus text
//! format (0.0.4) for `GET /metrics` on the admin listener.
//!
//! Counting and exporting are apart. Components count at their sites with one call into
//! plain relaxed atomics they own — push's [`WireStats`](syncline_push::WireStats) (striped
//! per thread: frames, bytes, push lag) and [`HubStats`](syncline_push::hub::HubStats), the
//! store's commit counters, [`counters`] (handshakes, ingest, mutations), the RPC router's
//! [`RpcMetrics`](crate::rpc::metrics::RpcMetrics), change capture's
//! [`CaptureCounters`](crate::channel::capture::CaptureCounters) — so no counting path takes
//! a lock. At scrape, the [`collector`] reads them all and encodes them through the crate.
//!
//! Names follow Prometheus conventions: the `syncline_` prefix, base units (seconds, bytes),
//! `_total` counters, `_seconds` histograms. Label values come from fixed sets (frame types,
//! results, codes, operations) or from configuration (source names; RPC services, with
//! methods capped per service by the RPC metrics): never a device, user, record or partition.
//!
//! - [`histogram`]: [`AtomicHistogram`](histogram::AtomicHistogram), a lock-free
//!   fixed-bucket histogram (commit latency).
//! - [`counters`]: the counters of the gateway, Ingest and the mutation dispatcher.
//! - [`collector`]: what a scrape reads, and how it is encoded.
//! - `process`: CPU time, resident memory and open files of the process (`/proc`).

pub mod collector;
pub mod counters;
pub mod histogram;
mod process;

use prometheus_client::registry::Registry;

pub use self::collector::MetricSources;

/// The `Content-Type` of a rendered scrape (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The prefix of every metric name.
pub const PREFIX: &str = "syncline";

/// A subscription whose device has acknowledged more than this many changes fewer than its
/// partition's head counts in `syncline_subscriptions_behind`: a few seconds of a busy
/// partition's changes, well past a live device's ack batching (client-sim acks at most 100
/// changes late), so the gauge counts devices that are catching up or stuck.
pub const BEHIND_THRESHOLD_CHANGES: u64 = 1000;

/// The metrics of one server: a registry whose one collector reads every counter at scrape.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// Returns the metrics of the server whose parts `sources` names.
    pub fn new(sources: MetricSources) -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register_collector(Box::new(collector::ServerCollector::new(sources)));
        Self { registry }
    }

    /// Renders every metric in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail; an encoder error would be a bug in a collector.
        if let Err(error) = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry) {
            tracing::error!(%error, "cannot encode the metrics");
        }
        text
    }
}
