//! What a scrape reads, and how it is encoded: one [`Collector`] reads every counter of the
//! server (see the module above for where they are counted) and encodes it through
//! prometheus-client's encoder. Nothing here runs outside a scrape.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use syncline_push::stats::{CLIENT_FRAME_KINDS, PUSH_LAG_BOUNDS_MICROS, SERVER_FRAME_KINDS};
use syncline_push::{ConnectionCount, WireStats};

use super::BEHIND_THRESHOLD_CHANGES;
use super::counters::{HandshakeResult, IngestCounters};
use super::histogram::HistogramSnapshot;
use crate::channel::capture::{CaptureCounters, CaptureError};
use crate::gateway::GatewayServices;
use crate::rpc::metrics::{LATENCY_BOUNDS_MICROS, Outcome};

/// The parts of a server the metrics read.
pub struct MetricSources {
    /// What device sessions share: the hub, the RPC router, the mutation dispatcher and the
    /// handshake counters.
    pub services: Arc<GatewayServices>,
    /// Open device connections.
    pub connections: Arc<ConnectionCount>,
    /// The device listener's frame counters.
    pub wire: Arc<WireStats>,
    pub ingest: Arc<IngestCounters>,
    pub capture: Arc<CaptureCounters>,
}

/// The collector of every metric of a server.
pub(super) struct ServerCollector {
    sources: MetricSources,
}

impl fmt::Debug for ServerCollector {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("ServerCollector").finish_non_exhaustive()
    }
}

impl ServerCollector {
    pub(super) fn new(sources: MetricSources) -> Self {
        Self { sources }
    }
}

impl Collector for ServerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        self.encode_connections(&mut encoder)?;
        self.encode_push(&mut encoder)?;
        self.encode_store(&mut encoder)?;
        self.encode_mutations_and_rpc(&mut encoder)?;
        self.encode_capture(&mut encoder)?;
        super::process::encode(&mut encoder)
    }
}

/// Encodes one unlabelled counter.
fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Encodes one unlabelled gauge.
pub(super) fn gauge<T: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: T,
) -> fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Encodes a family of counters (or, with `MetricType::Gauge`, gauges), one per label set.
fn family<S: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    rows: impl IntoIterator<Item = (S, u64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, value) in rows {
        let mut row = metric.encode_family(&labels)?;
        match metric_type {
            MetricType::Gauge => row.encode_gauge(&value)?,
            MetricType::Counter | MetricType::Histogram | MetricType::Info | MetricType::Unknown => {
                row.encode_counter::<NoLabelSet, _, u64>(&value, None)?
            }
        }
    }
    Ok(())
}

/// Encodes a family of histograms, one per label set.
fn histograms<S: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (S, HistogramSnapshot)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, snapshot) in rows {
        let mut row = metric.encode_family(&labels)?;
        row.encode_histogram::<NoLabelSet>(snapshot.sum_seconds, snapshot.count(), &snapshot.buckets, None)?;
    }
    Ok(())
}

/// Encodes one unlabelled histogram.
fn histogram(encoder: &mut DescriptorEncoder, name: &str, help: &str, snapshot: &HistogramSnapshot) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    metric.encode_histogram::<NoLabelSet>(snapshot.sum_seconds, snapshot.count(), &snapshot.buckets, None)
}

/// Returns a histogram snapshot of non-cumulative `counts` over bounds in microseconds (the
/// last count is `+Inf`).
fn micros_histogram(bounds: &[u64], counts: &[u64], sum_seconds: f64) -> HistogramSnapshot {
    let buckets =
        bounds.iter().map(|micros| *micros as f64 / 1e6).chain([f64::INFINITY]).zip(counts.iter().copied()).collect();
    HistogramSnapshot { buckets, sum_seconds }
}

impl ServerCollector {
    fn encode_connections(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let sources = &self.sources;
        gauge(encoder, "connections", "Open device connections.", sources.connections.get() as u64)?;
        let events = &syncline_push::events::EVENTS;
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
        counter(
            encoder,
            "connections_opened",
            "Device connections that completed their WebSocket upgrade.",
            load(&events.opened),
        )?;
        counter(encoder, "connections_closed", "Device connections that ended, for any reason.", load(&events.closed))?;
        counter(
            encoder,
            "idle_disconnects",
            "Device connections closed because the device stayed silent past the idle timeout (close 4408).",
            load(&events.idle_timeouts),
        )?;
        counter(
            encoder,
            "accept_failures",
            "Failed accepts on the device listener (e.g. out of file descriptors).",
            load(&events.accept_failures),
        )?;
        let wire = sources.wire.snapshot();
        let handshakes = &sources.services.handshakes;
        let results = HandshakeResult::ALL
            .iter()
            .map(|result| ([("result", result.as_str())], handshakes.get(*result)))
            .chain([([("result", "upgrade_failed")], wire.upgrades_failed)]);
        family(
            encoder,
            "handshakes",
            "Device handshakes by result: ok (Welcome), refused (credentials, version, device, per-user cap), \
             timeout (no Hello in time), protocol_error (first frame not Hello), upgrade_failed (TLS or \
             WebSocket upgrade failed or refused).",
            MetricType::Counter,
            results,
        )?;
        let frames_in = CLIENT_FRAME_KINDS.iter().zip(wire.frames_in).map(|(kind, count)| ([("type", *kind)], count));
        family(encoder, "frames_received", "Device frames decoded, by type.", MetricType::Counter, frames_in)?;
        let frames_out = SERVER_FRAME_KINDS.iter().zip(wire.frames_out).map(|(kind, count)| ([("type", *kind)], count));
        family(
            encoder,
            "frames_sent",
            "Server frames written to device sockets, by type.",
            MetricType::Counter,
            frames_out,
        )?;
        counter(encoder, "received_bytes", "Payload bytes of the data frames devices sent.", wire.bytes_in)?;
        counter(encoder, "sent_bytes", "Encoded bytes of the frames written to device sockets.", wire.bytes_out)?;
        let lag = micros_histogram(&PUSH_LAG_BOUNDS_MICROS, &wire.push_lag_buckets, wire.push_lag_sum().as_secs_f64());
        histogram(
            encoder,
            "push_lag_seconds",
            "Time from a commit becoming durable to its live frame being written to a device socket.",
            &lag,
        )
    }

    fn encode_push(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let hub = &self.sources.services.hub;
        let stats = hub.stats();
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
        counter(
            encoder,
            "live_frames_published",
            "Live frames published to the hub (one per partition per commit).",
            load(&stats.published),
        )?;
        counter(
            encoder,
            "deliveries",
            "Live frames queued to subscribers (one per subscriber reached).",
            load(&stats.delivered),
        )?;
        counter(
            encoder,
            "demotions",
            "Live subscribers demoted to catch-up from the log (slow consumers).",
            load(&stats.demoted),
        )?;
        counter(
            encoder,
            "sweep_queue_overflows",
            "Live frames a fan-out sweeper's full queue refused (its subscribers were demoted).",
            load(&stats.sweeps_refused),
        )?;
        let census = hub.lag_census(BEHIND_THRESHOLD_CHANGES);
        gauge(encoder, "subscriptions", "Partition subscriptions of connected devices.", census.subscriptions)?;
        gauge(
            encoder,
            "subscriptions_behind",
            "Subscriptions whose device has acknowledged more than 1000 changes fewer than its partition's head.",
            census.behind,
        )
    }

    fn encode_store(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        {
            let store = &self.sources.services.store;
            let stats = store.write_stats();
            counter(encoder, "commits", "Group commits made durable by the store.", stats.commits)?;
            counter(
                encoder,
                "slow_commits",
                "Commits that took 100 ms or longer to become durable (they hold back writes and live push).",
                stats.slow_commits,
            )?;
            histogram(
                encoder,
                "commit_duration_seconds",
                "Time the store took to make a group commit durable.",
                &store.commit_latency(),
            )?;
        }
        let ingest = &self.sources.ingest;
        let records = ingest.records().map(|(source, count)| ([("source", source)], count));
        family(
            encoder,
            "ingest_records",
            "Changes backends pushed through Ingest that were logged, by source.",
            MetricType::Counter,
            records,
        )?;
        let calls = ingest.calls().map(|(code, count)| ([("code", code)], count));
        family(encoder, "ingest_requests", "Ingest Push calls, by gRPC status code.", MetricType::Counter, calls)
    }

    fn encode_mutations_and_rpc(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let mutations = self.sources.services.mutations.counters();
        gauge(
            encoder,
            "mutation_queue_depth",
            "Device mutations queued durably and not yet finished.",
            mutations.depth(),
        )?;
        let outcomes = mutations.outcomes();
        let rows = outcomes.iter().map(|(op, outcome, count)| ([("op", *op), ("outcome", outcome.as_str())], *count));
        family(
            encoder,
            "mutations",
            "Finished device mutations, by operation and outcome.",
            MetricType::Counter,
            rows,
        )?;
        let methods = self.sources.services.rpc.metrics().counts_all();
        let calls = methods.iter().flat_map(|method| {
            Outcome::ALL.iter().zip(method.outcomes).filter(|(_, count)| *count > 0).map(move |(outcome, count)| {
                (
                    [
                        ("service", method.service.as_str()),
                        ("method", method.method.as_str()),
                        ("code", outcome.as_str()),
                    ],
                    count,
                )
            })
        });
        family(
            encoder,
            "rpc_calls",
            "Mobile RPC calls, by service, method and outcome code.",
            MetricType::Counter,
            calls,
        )?;
        let latencies = methods.iter().map(|method| {
            let snapshot =
                micros_histogram(&LATENCY_BOUNDS_MICROS, &method.latency_buckets, method.latency_sum.as_secs_f64());
            ([("service", method.service.as_str()), ("method", method.method.as_str())], snapshot)
        });
        histograms(encoder, "rpc_duration_seconds", "Mobile RPC call latency, by service and method.", latencies)
    }

    fn encode_capture(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let sources = self.sources.capture.snapshot();
        let errors = sources.iter().flat_map(|source| {
            CaptureError::ALL
                .iter()
                .zip(source.errors)
                .map(move |(kind, count)| ([("source", source.source.as_str()), ("kind", kind.as_str())], count))
        });
        family(encoder, "capture_errors", "Change capture errors, by source and kind.", MetricType::Counter, errors)?;
        let mut lag = encoder.encode_descriptor(
            "capture_lag_seconds",
            "How stale a captured source may be: 0 while its watch stream is open, else the time since it was last known current (last successful poll, or the stream stopping).",
            None,
            MetricType::Gauge,
        )?;
        for source in &sources {
            lag.encode_family(&[("source", source.source.as_str())])?.encode_gauge(&source.lag.as_secs_f64())?;
        }
        Ok(())
    }
}
