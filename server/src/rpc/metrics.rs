//! Per service and method counters of mobile RPC: calls, outcomes by kind, latency. Each
//! finished call is logged and counted together in [`RpcMetrics::record`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;

/// Latency bucket upper bounds in microseconds: powers of two from 128 µs to about 134 s
/// (a call's deadline is capped well below); one more bucket holds anything slower.
pub const LATENCY_BOUNDS_MICROS: [u64; 21] = {
    let mut bounds = [0u64; 21];
    let mut index = 0;
    while index < bounds.len() {
        bounds[index] = 128 << index;
        index += 1;
    }
    bounds
};

/// Methods tracked per service: method names come from devices, so beyond this many
/// distinct names per service the rest are counted under [`OTHER_METHOD`].
pub const MAX_METHODS_PER_SERVICE: usize = 256;

/// The method name counted for methods beyond [`MAX_METHODS_PER_SERVICE`].
pub const OTHER_METHOD: &str = "(other)";

/// The service name counted for calls to services that are not configured (their names
/// come from devices and are not kept).
pub const UNKNOWN_SERVICE: &str = "(unknown)";

/// How a call ended, for counting: success, the device error code it got, or cancelled
/// because its device went away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Ok,
    BadRequest,
    NotFound,
    Forbidden,
    Unavailable,
    Timeout,
    ResourceExhausted,
    Internal,
    /// The device disconnected before the reply; the backend call was cancelled.
    Cancelled,
}

impl Outcome {
    /// Every outcome, in counter order.
    pub const ALL: [Outcome; 9] = [
        Outcome::Ok,
        Outcome::BadRequest,
        Outcome::NotFound,
        Outcome::Forbidden,
        Outcome::Unavailable,
        Outcome::Timeout,
        Outcome::ResourceExhausted,
        Outcome::Internal,
        Outcome::Cancelled,
    ];

    /// Returns the outcome's name in logs and snapshots.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::BadRequest => "bad_request",
            Outcome::NotFound => "not_found",
            Outcome::Forbidden => "forbidden",
            Outcome::Unavailable => "unavailable",
            Outcome::Timeout => "timeout",
            Outcome::ResourceExhausted => "resource_exhausted",
            Outcome::Internal => "internal",
            Outcome::Cancelled => "cancelled",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The counters of one (service, method).
#[derive(Debug, Default)]
struct MethodStats {
    outcomes: [AtomicU64; Outcome::ALL.len()],
    latency_buckets: [AtomicU64; LATENCY_BOUNDS_MICROS.len() + 1],
    latency_sum_micros: AtomicU64,
}

/// A copy of one (service, method)'s counters.
#[derive(Clone, Debug, PartialEq)]
pub struct MethodSnapshot {
    /// Calls finished (any outcome).
    pub calls: u64,
    /// Calls per outcome, only outcomes that happened.
    pub outcomes: BTreeMap<Outcome, u64>,
    /// Upper bound of the latency bucket holding the median and the 99th percentile.
    pub p50: Duration,
    pub p99: Duration,
    /// Mean latency.
    pub mean: Duration,
}

impl MethodSnapshot {
    /// Returns the calls that ended with `outcome`.
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.outcomes.get(&outcome).copied().unwrap_or(0)
    }

    /// Returns the calls that did not succeed (cancelled ones included).
    pub fn errors(&self) -> u64 {
        self.calls - self.count(Outcome::Ok)
    }
}

/// The raw counters of one (service, method), for export.
#[derive(Clone, Debug, PartialEq)]
pub struct MethodCounts {
    pub service: String,
    pub method: String,
    /// Calls by [`Outcome::ALL`].
    pub outcomes: [u64; Outcome::ALL.len()],
    /// Calls by latency bucket ([`LATENCY_BOUNDS_MICROS`], then slower); not cumulative.
    pub latency_buckets: [u64; LATENCY_BOUNDS_MICROS.len() + 1],
    /// The sum of the calls' latencies.
    pub latency_sum: Duration,
}

/// The RPC counters of one server, by service and method.
#[derive(Debug, Default)]
pub struct RpcMetrics {
    methods: RwLock<HashMap<String, HashMap<String, Arc<MethodStats>>>>,
}

impl RpcMetrics {
    /// Logs and counts one finished call. `service` must be a configured service name (or
    /// [`UNKNOWN_SERVICE`]); `method` is whatever the device sent.
    pub fn record(&self, service: &str, method: &str, call_id: &str, outcome: Outcome, latency: Duration) {
        let latency_micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        match outcome {
            Outcome::Ok | Outcome::Cancelled => {
                tracing::debug!(service, method, call_id, outcome = outcome.as_str(), latency_micros, "rpc call");
            }
            Outcome::Unavailable | Outcome::Internal => {
                tracing::warn!(service, method, call_id, outcome = outcome.as_str(), latency_micros, "rpc call failed");
            }
            Outcome::BadRequest
            | Outcome::NotFound
            | Outcome::Forbidden
            | Outcome::Timeout
            | Outcome::ResourceExhausted => {
                tracing::debug!(
                    service,
                    method,
                    call_id,
                    outcome = outcome.as_str(),
                    latency_micros,
                    "rpc call refused"
                );
            }
        }
        let stats = self.stats(service, method);
        stats.outcomes[outcome.index()].fetch_add(1, Ordering::Relaxed);
        let bucket = LATENCY_BOUNDS_MICROS.partition_point(|bound| *bound < latency_micros);
        stats.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        stats.latency_sum_micros.fetch_add(latency_micros, Ordering::Relaxed);
    }

    /// Returns the counters of `service`'s `method`, if it had calls.
    pub fn snapshot(&self, service: &str, method: &str) -> Option<MethodSnapshot> {
        let stats = self.methods.read().get(service)?.get(method)?.clone();
        Some(snapshot_of(&stats))
    }

    /// Returns the counters of every (service, method) that had calls.
    pub fn snapshot_all(&self) -> BTreeMap<(String, String), MethodSnapshot> {
        let methods = self.methods.read();
        methods
            .iter()
            .flat_map(|(service, methods)| {
                methods.iter().map(move |(method, stats)| ((service.clone(), method.clone()), snapshot_of(stats)))
            })
            .collect()
    }

    /// Returns the raw counters of every (service, method) that had calls, for export.
    pub fn counts_all(&self) -> Vec<MethodCounts> {
        let methods = self.methods.read();
        methods
            .iter()
            .flat_map(|(service, methods)| {
                methods.iter().map(move |(method, stats)| MethodCounts {
                    service: service.clone(),
                    method: method.clone(),
                    outcomes: std::array::from_fn(|index| stats.outcomes[index].load(Ordering::Relaxed)),
                    latency_buckets: std::array::from_fn(|index| stats.latency_buckets[index].load(Ordering::Relaxed)),
                    latency_sum: Duration::from_micros(stats.latency_sum_micros.load(Ordering::Relaxed)),
                })
            })
            .collect()
    }

    /// Logs one line per (service, method) with its totals (at shutdown).
    pub fn log_summary(&self) {
        for ((service, method), snapshot) in self.snapshot_all() {
            tracing::info!(
                service,
                method,
                calls = snapshot.calls,
                errors = snapshot.errors(),
                p50_micros = snapshot.p50.as_micros() as u64,
                p99_micros = snapshot.p99.as_micros() as u64,
                "rpc totals"
            );
        }
    }

    fn stats(&self, service: &str, method: &str) -> Arc<MethodStats> {
        if let Some(stats) = self.methods.read().get(service).and_then(|methods| methods.get(method)) {
            return stats.clone();
        }
        let mut services = self.methods.write();
        let methods = services.entry(service.to_owned()).or_default();
        if let Some(stats) = methods.get(method) {
            return stats.clone();
        }
        let name = if methods.len() < MAX_METHODS_PER_SERVICE { method } else { OTHER_METHOD };
        methods.entry(name.to_owned()).or_default().clone()
    }
}

fn snapshot_of(stats: &MethodStats) -> MethodSnapshot {
    let outcomes: BTreeMap<Outcome, u64> = Outcome::ALL
        .iter()
        .map(|outcome| (*outcome, stats.outcomes[outcome.index()].load(Ordering::Relaxed)))
        .filter(|(_, count)| *count > 0)
        .collect();
    let buckets: Vec<u64> = stats.latency_buckets.iter().map(|bucket| bucket.load(Ordering::Relaxed)).collect();
    let calls: u64 = buckets.iter().sum();
    let percentile = |fraction: f64| {
        let rank = ((calls as f64) * fraction).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, count) in buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let micros = LATENCY_BOUNDS_MICROS.get(index).copied().unwrap_or(u64::MAX);
                return Duration::from_micros(micros);
            }
        }
        Duration::ZERO
    };
    let mean = match calls {
        0 => Duration::ZERO,
        calls => Duration::from_micros(stats.latency_sum_micros.load(Ordering::Relaxed) / calls),
    };
    MethodSnapshot {
        calls,
        outcomes,
        p50: if calls == 0 { Duration::ZERO } else { percentile(0.5) },
        p99: if calls == 0 { Duration::ZERO } else { percentile(0.99) },
        mean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_and_latency_are_counted_per_method() {
        let metrics = RpcMetrics::default();
        for _ in 0..98 {
            metrics.record("crm", "CloseDeal", "c", Outcome::Ok, Duration::from_micros(100));
        }
        metrics.record("crm", "CloseDeal", "c", Outcome::Timeout, Duration::from_millis(5));
        metrics.record("crm", "CloseDeal", "c", Outcome::Timeout, Duration::from_millis(5));
        metrics.record("crm", "Other", "c", Outcome::NotFound, Duration::from_micros(10));
        let deal = metrics.snapshot("crm", "CloseDeal").unwrap();
        assert_eq!(deal.calls, 100);
        assert_eq!(deal.count(Outcome::Ok), 98);
        assert_eq!(deal.count(Outcome::Timeout), 2);
        assert_eq!(deal.errors(), 2);
        assert_eq!(deal.p50, Duration::from_micros(128));
        assert_eq!(deal.p99, Duration::from_micros(8192));
        assert_eq!(metrics.snapshot("crm", "Other").unwrap().count(Outcome::NotFound), 1);
        assert!(metrics.snapshot("crm", "Missing").is_none());
        assert_eq!(metrics.snapshot_all().len(), 2);
    }

    #[test]
    fn method_names_beyond_the_cap_share_one_entry() {
        let metrics = RpcMetrics::default();
        for number in 0..MAX_METHODS_PER_SERVICE + 10 {
            metrics.record("crm", &format!("m{number}"), "c", Outcome::NotFound, Duration::ZERO);
        }
        assert_eq!(metrics.snapshot_all().len(), MAX_METHODS_PER_SERVICE + 1);
        assert_eq!(metrics.snapshot("crm", OTHER_METHOD).unwrap().calls, 10);
    }
}
