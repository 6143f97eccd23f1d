//! Server statistics: connections, subscriptions, deliveries per second, commit latency,
//! store size, uptime and version.

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{AdminState, ViewerAccess};

pub(super) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new().routes(routes!(get_stats))
}

/// The previous sample of the delivered-frames counter: deliveries per second are measured
/// between two stats requests (since start on the first).
#[derive(Debug, Default)]
pub struct DeliverySamples(parking_lot::Mutex<Option<(Instant, u64)>>);

impl DeliverySamples {
    /// Records `delivered` at `now`; returns the rate since the previous sample (or `start`).
    fn rate(&self, now: Instant, delivered: u64, start: Instant) -> f64 {
        let mut last = self.0.lock();
        let (then, before) = last.unwrap_or((start, 0));
        *last = Some((now, delivered));
        let seconds = now.duration_since(then).as_secs_f64();
        if seconds > 0.0 { delivered.saturating_sub(before) as f64 / seconds } else { 0.0 }
    }
}

/// A snapshot of the server.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(super) struct Stats {
    /// Server version.
    version: String,
    uptime_secs: u64,
    /// Open device connections (sockets).
    connections: usize,
    /// Partition subscriptions of connected devices.
    subscriptions: usize,
    /// Partitions with at least one subscriber.
    subscribed_partitions: usize,
    /// Frames queued to subscribers since start.
    deliveries: u64,
    /// Frames queued to subscribers per second since the previous stats request.
    deliveries_per_sec: f64,
    /// Store commits since start (one fsync each).
    commits: u64,
    /// Mean and longest commit time, in milliseconds.
    commit_mean_ms: f64,
    commit_max_ms: f64,
    /// Size of the store's file, in bytes.
    store_bytes: u64,
}

/// Returns a snapshot of the server.
#[utoipa::path(get, path = "/v1/admin/stats", tag = "stats",
    responses(
        (status = 200, description = "The snapshot", body = Stats),
        (status = 401, description = "No valid credentials", body = ErrorBody),
    ))]
async fn get_stats(State(state): State<AdminState>, _caller: ViewerAccess) -> axum::Json<Stats> {
    let hub = &state.services.hub;
    let keys = hub.keys();
    let subscriptions = keys.iter().map(|key| hub.subscriber_count(key)).sum();
    let deliveries = hub.stats().delivered.load(Ordering::Relaxed);
    let now = Instant::now();
    let writes = state.services.store.write_stats();
    let commit_mean_ms =
        if writes.commits > 0 { writes.commit_micros_total as f64 / writes.commits as f64 / 1000.0 } else { 0.0 };
    let store_bytes = state.services.store.size_bytes().unwrap_or(0);
    axum::Json(Stats {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_secs: state.started.elapsed().as_secs(),
        connections: state.connections.get(),
        subscriptions,
        subscribed_partitions: keys.len(),
        deliveries,
        deliveries_per_sec: state.deliveries.rate(now, deliveries, state.started),
        commits: writes.commits,
        commit_mean_ms,
        commit_max_ms: writes.slowest_commit_micros as f64 / 1000.0,
        store_bytes,
    })
}
