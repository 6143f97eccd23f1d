//! Signal handling and the ordered stop sequence.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use crate::jobs::Jobs;
use crate::rpc::RpcRouter;

/// How long the stop sequence waits for each listener's task at most (within the grace).
pub const LISTENER_STOP_TIMEOUT: Duration = Duration::from_secs(5);

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

/// The tasks serving each listener.
pub(crate) struct ListenerTasks {
    pub(crate) device: JoinHandle<()>,
    pub(crate) grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    pub(crate) admin: JoinHandle<()>,
}

/// Stops the server after its shutdown token fired: the listeners stop accepting, every
/// device gets close 1012 ("reconnect now") from its session, in-flight gRPC calls and admin
/// requests finish, device cursors are flushed, and the store is closed when the last
/// reference goes. The whole sequence is bounded by `grace`.
pub(crate) async fn stop_in_order(
    listeners: ListenerTasks,
    tracker: TaskTracker,
    jobs: &Jobs,
    rpc: &RpcRouter,
    grace: Duration,
) -> anyhow::Result<()> {
    let sequence = async {
        let _ = tokio::time::timeout(LISTENER_STOP_TIMEOUT, listeners.device).await;
        let grpc = tokio::time::timeout(LISTENER_STOP_TIMEOUT, listeners.grpc).await;
        let _ = tokio::time::timeout(LISTENER_STOP_TIMEOUT, listeners.admin).await;
        if let Ok(Ok(Err(error))) = grpc {
            tracing::warn!(%error, "gRPC server ended with an error");
        }
        // The listeners, sessions, background jobs and change capture all run on the tracker.
        tracker.close();
        tracker.wait().await;
        jobs.flush_cursors().await;
        rpc.metrics().log_summary();
    };
    if tokio::time::timeout(grace, sequence).await.is_err() {
        tracing::warn!(grace_secs = grace.as_secs(), "graceful shutdown timed out; stopping anyway");
    }
    tracing::info!("stopped");
    Ok(())
}
