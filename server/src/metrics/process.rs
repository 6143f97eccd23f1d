//! The process's own resources, read from `/proc` at scrape (Linux): CPU time, resident
//! memory, threads, open file descriptors and their limit. prometheus-client has no process
//! collector, so the workspace's `/proc` reader serves; a reading that fails (another OS) is
//! left out of the scrape rather than failing it.

use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use syncline_procfs::Process;

use super::collector::gauge;

/// Encodes the process metrics that could be read.
pub(super) fn encode(encoder: &mut DescriptorEncoder) -> fmt::Result {
    let process = Process::Current;
    if let Ok(cpu) = process.cpu_times() {
        let metric = ConstCounter::new(cpu.total_secs());
        let help = "User and system CPU time the server process used.";
        metric.encode(encoder.encode_descriptor("process_cpu_seconds", help, None, metric.metric_type())?)?;
    }
    if let Ok(memory) = process.memory() {
        gauge(
            encoder,
            "process_resident_memory_bytes",
            "Resident memory of the server process.",
            memory.rss_kb * 1024,
        )?;
    }
    if let Ok(threads) = process.threads() {
        gauge(encoder, "process_threads", "Threads of the server process.", threads)?;
    }
    if let Ok(open) = process.open_fds() {
        gauge(encoder, "process_open_fds", "Open file descriptors (sockets included) of the server process.", open)?;
    }
    if let Ok(Some(max)) = process.max_fds() {
        gauge(encoder, "process_max_fds", "The server process's soft limit on open file descriptors.", max)?;
    }
    Ok(())
}
