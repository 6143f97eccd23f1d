//! `GET /healthz` (the process is up) and `GET /readyz` (the store answers, every listener
//! is bound, every channel endpoint accepts connections; 503 with the reasons otherwise):
//! the only routes that need no credentials.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde::Serialize;

use super::AdminState;
use crate::storage::PartitionName;

/// Longest a readiness probe waits for one channel endpoint to accept a connection.
const CHANNEL_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A probe's answer.
#[derive(Debug, Serialize)]
struct Probe {
    status: &'static str,
    /// Why the server is not ready (empty when it is).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    reasons: Vec<String>,
}

pub(super) fn routes() -> Router<AdminState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

async fn healthz() -> axum::Json<Probe> {
    axum::Json(Probe { status: "ok", reasons: Vec::new() })
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, axum::Json<Probe>) {
    let mut reasons = Vec::new();
    let store = state.store().clone();
    match tokio::task::spawn_blocking(move || store.partition_state(&PartitionName::new("", ""))).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => reasons.push(format!("store: {error}")),
        Err(error) => reasons.push(format!("store: {error}")),
    }
    if !state.readiness.are_listeners_bound() {
        reasons.push("listeners: not all bound yet".to_owned());
    }
    let endpoints: BTreeSet<&str> =
        state.settings.sources.values().filter_map(|source| source.channel.as_deref()).collect();
    for endpoint in endpoints {
        if let Err(reason) = probe_endpoint(endpoint).await {
            reasons.push(format!("channel {endpoint}: {reason}"));
        }
    }
    if reasons.is_empty() {
        (StatusCode::OK, axum::Json(Probe { status: "ready", reasons }))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(Probe { status: "not_ready", reasons }))
    }
}

/// Checks that a channel endpoint (`http[s]://host:port`) accepts TCP connections.
async fn probe_endpoint(endpoint: &str) -> Result<(), String> {
    let authority = endpoint.split("://").nth(1).unwrap_or(endpoint);
    let authority = authority.split('/').next().unwrap_or(authority);
    let target = if authority.rsplit(':').next().is_some_and(|port| port.parse::<u16>().is_ok()) {
        authority.to_owned()
    } else if endpoint.starts_with("https") {
        format!("{authority}:443")
    } else {
        format!("{authority}:80")
    };
    match tokio::time::timeout(CHANNEL_PROBE_TIMEOUT, tokio::net::TcpStream::connect(&target)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(format!("unreachable ({error})")),
        Err(_) => Err("no answer in time".to_owned()),
    }
}
