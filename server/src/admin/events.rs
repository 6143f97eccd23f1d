//! The console's live stream: `GET /v1/admin/events`, Server-Sent Events. Every second a
//! `stats` event (connections, subscriptions, deliveries, errors and commit and push-lag
//! percentiles over that second); at once, a `device` event each time a device connection
//! opens or closes. The stream reads counters the server keeps anyway: a console left open
//! costs one sample a second.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Serialize;
use syncline_push::WireStats;
use syncline_push::stats::{PUSH_LAG_BOUNDS_MICROS, SERVER_FRAME_KINDS};
use tokio::sync::broadcast;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{AdminState, ViewerAccess};
use crate::gateway::{DeviceEvent, DeviceEventKind};
use crate::metrics::histogram::HistogramSnapshot;

/// Time between two `stats` events.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// What the live stream reads besides the admin state: the device listener's frame counters.
pub struct LiveSources {
    pub wire: Arc<WireStats>,
}

pub(super) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new().routes(routes!(events))
}

/// One event of the stream as a client parses it (Open API 3.1: the schema of an event-stream
/// response describes each event). `data` holds the JSON of a [`LiveStats`] for `stats` and
/// of a [`LiveDevice`] for `device`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct StreamEvent {
    event: StreamEventName,
    data: String,
}

/// The names of the stream's events.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum StreamEventName {
    Stats,
    Device,
}

impl StreamEventName {
    fn as_str(&self) -> &'static str {
        match self {
            Self::Stats => "stats",
            Self::Device => "device",
        }
    }
}

/// One `stats` event.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct LiveStats {
    version: &'static str,
    uptime_seconds: f64,
    connections: usize,
    subscriptions: usize,
    deliveries_per_second: f64,
    /// Error frames sent to devices per second.
    errors_per_second: f64,
    /// Commit latency percentiles over the last second (bucket upper bounds; none without
    /// commits).
    commit_p50_seconds: Option<f64>,
    commit_p99_seconds: Option<f64>,
    /// Commit-to-socket-write lag of live pushes over the last second.
    push_lag_p50_seconds: Option<f64>,
    push_lag_p99_seconds: Option<f64>,
    store_bytes: u64,
}

/// One `device` event.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct LiveDevice {
    /// `connected` or `disconnected`.
    kind: &'static str,
    client_id: String,
    user_id: String,
    at_ms: i64,
}

impl From<DeviceEvent> for LiveDevice {
    fn from(event: DeviceEvent) -> Self {
        let kind = match event.kind {
            DeviceEventKind::Connected => "connected",
            DeviceEventKind::Disconnected => "disconnected",
        };
        Self { kind, client_id: event.client_id, user_id: event.user_id, at_ms: event.at_ms }
    }
}

/// The counters one sample is the difference of.
struct Counters {
    at: Instant,
    deliveries: u64,
    errors: u64,
    commits: HistogramSnapshot,
    push_lag: HistogramSnapshot,
}

/// Streams the server's live statistics and device connections (Server-Sent Events: `stats`
/// every second, `device` as connections open and close).
#[utoipa::path(get, path = "/v1/admin/events", tag = "stats",
    responses(
        (status = 200, description = "An event stream (text/event-stream) of `stats` (LiveStats) and `device` (LiveDevice) events", content_type = "text/event-stream", body = StreamEvent),
        (status = 401, description = "No valid credentials", body = ErrorBody),
    ))]
async fn events(
    State(state): State<AdminState>,
    _caller: ViewerAccess,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let devices = state.services.connections.events();
    let first = counters(&state);
    let stream = futures_util::stream::unfold((state, devices, first), |(state, mut devices, previous)| async move {
        let next_sample = previous.at + SAMPLE_INTERVAL;
        let event = tokio::select! {
            device = devices.recv() => match device {
                Ok(device) => json_event(StreamEventName::Device, &LiveDevice::from(device)),
                // Skipped events are gone; the next sample comes soon enough.
                Err(broadcast::error::RecvError::Lagged(_)) => Event::default().comment("device events skipped"),
                Err(broadcast::error::RecvError::Closed) => return None,
            },
            () = tokio::time::sleep_until(next_sample.into()) => {
                let now = counters(&state);
                let stats = sample(&state, &previous, &now);
                return Some((Ok(json_event(StreamEventName::Stats, &stats)), (state, devices, now)));
            }
        };
        Some((Ok(event), (state, devices, previous)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn json_event(name: StreamEventName, data: &impl Serialize) -> Event {
    Event::default()
        .event(name.as_str())
        .json_data(data)
        .unwrap_or_else(|_| Event::default().comment("unencodable event"))
}

fn counters(state: &AdminState) -> Counters {
    let wire = state.live.wire.snapshot();
    let error_kind = SERVER_FRAME_KINDS.iter().position(|kind| *kind == "error");
    let bounds = PUSH_LAG_BOUNDS_MICROS.iter().map(|micros| *micros as f64 / 1e6).chain([f64::INFINITY]);
    Counters {
        at: Instant::now(),
        deliveries: state.services.hub.stats().delivered.load(std::sync::atomic::Ordering::Relaxed),
        errors: error_kind.map_or(0, |index| wire.frames_out[index]),
        commits: state.services.store.commit_latency(),
        push_lag: HistogramSnapshot {
            buckets: bounds.zip(wire.push_lag_buckets).collect(),
            sum_seconds: wire.push_lag_sum_nanos as f64 / 1e9,
        },
    }
}

fn sample(state: &AdminState, previous: &Counters, now: &Counters) -> LiveStats {
    let seconds = now.at.duration_since(previous.at).as_secs_f64().max(1e-3);
    let hub = &state.services.hub;
    let subscriptions = hub.keys().iter().map(|key| hub.subscriber_count(key)).sum();
    let commits = now.commits.since(&previous.commits);
    let push_lag = now.push_lag.since(&previous.push_lag);
    let store_bytes = state.services.store.size_bytes().unwrap_or(0);
    LiveStats {
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started.elapsed().as_secs_f64(),
        connections: state.connections.get(),
        subscriptions,
        deliveries_per_second: now.deliveries.saturating_sub(previous.deliveries) as f64 / seconds,
        errors_per_second: now.errors.saturating_sub(previous.errors) as f64 / seconds,
        commit_p50_seconds: commits.quantile(0.5),
        commit_p99_seconds: commits.quantile(0.99),
        push_lag_p50_seconds: push_lag.quantile(0.5),
        push_lag_p99_seconds: push_lag.quantile(0.99),
        store_bytes,
    }
}
