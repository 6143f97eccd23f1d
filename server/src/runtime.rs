//! The backend runtime: where the gRPC endpoint (Ingest) and change capture from channels
//! run, apart from the device connections' runtime.
//!
//! When devices keep the device runtime's workers busy (a sweep writes to thousands of
//! sockets), a task woken there waits for every task queued before it; this runtime's thread
//! is woken by the kernel instead, which runs it at once, so a backend's write (an Ingest
//! push, or a change read from a channel's feed) is read, committed and answered without
//! queueing behind device tasks. The tasks it spawns (one per gRPC connection and request)
//! stay on it. `grpc.threads` sizes it (one thread by default).

use anyhow::Context as _;

/// The backend runtime; shut down (without blocking) when dropped.
pub(crate) struct BackendRuntime(Option<tokio::runtime::Runtime>);

impl BackendRuntime {
    /// Starts the runtime with `threads` worker threads.
    pub(crate) fn start(threads: usize) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("syncline-backend")
            .enable_all()
            .build()
            .context("cannot start the backend runtime")?;
        Ok(Self(Some(runtime)))
    }

    /// Returns the runtime's handle.
    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("present until dropped").handle()
    }
}

impl Drop for BackendRuntime {
    fn drop(&mut self) {
        // Dropped from inside the main runtime: shutting down without blocking is the only
        // way allowed there. Its server has stopped by then (or the process is ending).
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}
