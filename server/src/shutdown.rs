//! Signal handling and the ordered stop sequence.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use crate::app::{LISTENER_STOP_TIMEOUT, flush_cursors};
use crate::sync::SyncEngine;

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Stops the server after its shutdown token fired: the listeners stop accepting, every
/// device gets close 1012 ("reconnect now") from its session, in-flight gRPC calls finish,
/// device cursors are flushed, and the store is closed when the last reference goes. The
/// whole sequence is bounded by `grace`.
pub(crate) async fn stop_in_order(
    device_task: JoinHandle<()>,
    grpc_task: JoinHandle<Result<(), tonic::transport::Error>>,
    background: Vec<JoinHandle<()>>,
    tracker: TaskTracker,
    engine: &Arc<SyncEngine>,
    grace: Duration,
) -> anyhow::Result<()> {
    let sequence = async {
        let _ = tokio::time::timeout(LISTENER_STOP_TIMEOUT, device_task).await;
        let grpc = tokio::time::timeout(LISTENER_STOP_TIMEOUT, grpc_task).await;
        if let Ok(Ok(Err(error))) = grpc {
            tracing::warn!(%error, "gRPC server ended with an error");
        }
        tracker.close();
        tracker.wait().await;
        for job in background {
            let _ = job.await;
        }
        flush_cursors(engine).await;
        engine.rpc.metrics().log_summary();
    };
    if tokio::time::timeout(grace, sequence).await.is_err() {
        tracing::warn!(grace_secs = grace.as_secs(), "graceful shutdown timed out; stopping anyway");
    }
    tracing::info!("stopped");
    Ok(())
}
