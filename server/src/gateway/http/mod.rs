//! Plain HTTP on the device listener, beside the socket (same address, same TLS): what a
//! device downloads and uploads as files rather than frames. push's listener hands over
//! every connection whose first request is not for the sync path; axum serves them here.
//!
//! Every route authenticates the device itself (a session token, or a token scoped to one
//! file): nothing here is public. Errors are JSON `{"code", "message"}` with the status of
//! their [`ErrorClass`](crate::error::ErrorClass), as on the admin API.
//!
//! One file per kind of route; [`router`] joins them:
//!
//! - `bulk.rs`: `GET /v1/bulk/{file}`, bulk sync files (with the token of their BulkReady).
//! - `blobs.rs`: `HEAD`/`PUT`/`GET /v1/blobs/{hash}`, files records reference.
//! - `cors.rs`: the CORS layer over all of them, so browser apps on other origins can call them.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::connect_info::Connected;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use syncline_push::{HttpConnections, HttpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::GatewayServices;

pub mod blobs;
mod bulk;
pub mod cors;

/// Connections waiting to be served.
pub const HANDOFF_QUEUE: usize = 64;

/// The peer address of a plain HTTP request on the device listener.
#[derive(Clone, Copy, Debug)]
pub struct DevicePeer(pub SocketAddr);

/// The device listener's plain HTTP connections, as an axum listener.
pub struct DeviceHttpListener {
    local_addr: SocketAddr,
    connections: HttpConnections,
}

impl DeviceHttpListener {
    /// Serves the connections handed over through `connections`'s handoff; `local_addr` is
    /// the device listener's.
    pub fn new(local_addr: SocketAddr, connections: HttpConnections) -> Self {
        Self { local_addr, connections }
    }
}

impl axum::serve::Listener for DeviceHttpListener {
    type Io = HttpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.next().await {
            Some(connection) => connection,
            // The device listener is gone: graceful shutdown ends the server.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

impl Connected<IncomingStream<'_, DeviceHttpListener>> for DevicePeer {
    fn connect_info(stream: IncomingStream<'_, DeviceHttpListener>) -> Self {
        DevicePeer(*stream.remote_addr())
    }
}

/// The routes served beside the socket.
pub fn router(services: Arc<GatewayServices>) -> Router {
    let cors = cors::layer(&services.limits.cors_origins);
    Router::new().merge(blobs::routes()).merge(bulk::routes()).fallback(not_found).layer(cors).with_state(services)
}

async fn not_found() -> Response {
    let body = serde_json::json!({
        "code": "not_found",
        "message": format!("no such endpoint on the device listener (the socket is at {})", syncline_proto::SYNC_PATH),
    });
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

/// Serves `router` on `listener` on `tracker` until `shutdown`; requests in flight finish.
pub fn serve(
    listener: DeviceHttpListener,
    router: Router,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> JoinHandle<()> {
    let shutdown = shutdown.clone();
    let service = router.into_make_service_with_connect_info::<DevicePeer>();
    tracker.spawn(async move {
        let served = axum::serve(listener, service).with_graceful_shutdown(async move { shutdown.cancelled().await });
        if let Err(error) = served.await {
            tracing::warn!(%error, "the device listener's HTTP server ended with an error");
        }
    })
}
