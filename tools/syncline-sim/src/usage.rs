//! What a measured window cost: the server's CPU time and memory, this process's CPU time
//! and every core's busy time over it, read through `syncline_procfs`, and their rows in a
//! report.

use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use syncline_procfs::{CoreTicks, CpuTimes, Memory, Process, core_ticks};

/// Returns the server process of `--server-pid`, checking that /proc can be read for it.
pub(crate) fn server_process(pid: u32) -> anyhow::Result<Process> {
    let server = Process::Pid(pid);
    server.memory().context("reading the server's /proc entry (is --server-pid right?)")?;
    Ok(server)
}

/// Busy time of one core over a window, as a share of the window.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub(crate) struct CoreBusy {
    pub(crate) core: usize,
    /// Share of the window the core was busy (any process, interrupts included).
    pub(crate) busy_share: f64,
    /// Share of the window spent in softirq (on loopback, the sender's core also runs the
    /// receiver's TCP input here).
    pub(crate) softirq_share: f64,
    /// Busy time, in seconds (10 ms resolution).
    pub(crate) busy_secs: f64,
}

/// Returns each core's busy share between two readings of [`core_ticks`].
pub(crate) fn core_busy(before: &[CoreTicks], after: &[CoreTicks]) -> Vec<CoreBusy> {
    before
        .iter()
        .zip(after)
        .enumerate()
        .map(|(core, (before, after))| {
            let spent = after.since(*before);
            let total = spent.total.max(1) as f64;
            CoreBusy {
                core,
                busy_share: crate::report::round(spent.busy as f64 / total, 3),
                softirq_share: crate::report::round(spent.softirq as f64 / total, 3),
                busy_secs: spent.busy_secs(),
            }
        })
        .collect()
}

/// Readings at the start of a measured window: the server's CPU time and memory (when its
/// PID is known), this process's CPU time and every core's ticks.
pub(crate) struct UsageWindow {
    server: Option<(Process, CpuTimes, Memory)>,
    sim_cpu_before: Duration,
    cores_before: Vec<CoreTicks>,
}

/// The server's CPU and memory over a window.
#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct ServerWindow {
    /// utime + stime from /proc/PID/stat over the window (10 ms resolution).
    pub(crate) cpu_secs: f64,
    /// Share of `cpu_secs` spent in the kernel (stime).
    pub(crate) cpu_system_share: f64,
    /// At the window's start.
    pub(crate) memory_before: Memory,
    /// At the window's end.
    pub(crate) memory_after: Memory,
    #[serde(skip)]
    pub(crate) cpu: Duration,
}

/// What a window cost: see [`UsageWindow::finish`].
#[derive(Clone, Debug)]
pub(crate) struct WindowUsage {
    pub(crate) server: Option<ServerWindow>,
    /// This process's CPU time over the window.
    pub(crate) sim_cpu: Duration,
    /// Every core's busy time over the window (from /proc/stat).
    pub(crate) cores: Vec<CoreBusy>,
    /// Busy core time over the window charged to neither the server nor this process
    /// (`None` without the server's PID).
    pub(crate) other_busy_secs: Option<f64>,
}

impl UsageWindow {
    /// Takes the start readings; fails if the server's /proc entry cannot be read.
    pub(crate) fn start(server: Option<Process>) -> anyhow::Result<Self> {
        let server = server.map(|server| Ok::<_, anyhow::Error>((server, server.cpu_times()?, server.memory()?)));
        Ok(Self {
            server: server.transpose()?,
            sim_cpu_before: Process::Current.cpu_time()?,
            cores_before: core_ticks()?,
        })
    }

    /// Takes the end readings and returns the differences.
    pub(crate) fn finish(self) -> anyhow::Result<WindowUsage> {
        let server = match self.server {
            Some((server, cpu_before, memory_before)) => {
                let cpu = server.cpu_times()?.since(cpu_before);
                let total = cpu.total();
                Some(ServerWindow {
                    cpu_secs: crate::report::secs(total),
                    cpu_system_share: crate::report::round(
                        cpu.system().as_secs_f64() / total.as_secs_f64().max(f64::EPSILON),
                        3,
                    ),
                    memory_before,
                    memory_after: server.memory()?,
                    cpu: total,
                })
            }
            None => None,
        };
        let sim_cpu = Process::Current.cpu_time()?.saturating_sub(self.sim_cpu_before);
        let cores = core_busy(&self.cores_before, &core_ticks()?);
        let other_busy_secs = server.as_ref().map(|server| {
            let busy: f64 = cores.iter().map(|core| core.busy_secs).sum();
            crate::report::round(busy - server.cpu_secs - sim_cpu.as_secs_f64(), 2)
        });
        Ok(WindowUsage { server, sim_cpu, cores, other_busy_secs })
    }
}

/// Returns microseconds of `cpu` per item (0 without items), for reports.
pub(crate) fn cpu_us_per(cpu: Duration, items: u64) -> f64 {
    if items == 0 {
        return 0.0;
    }
    crate::report::round(cpu.as_secs_f64() * 1e6 / items as f64, 2)
}

impl WindowUsage {
    /// Adds the server CPU and RSS, simulator CPU, other busy time and per-core rows to
    /// `table`, CPU per item named `per` (e.g. "delivered record").
    pub(crate) fn table_rows(&self, table: &mut crate::report::Table, items: u64, per: &str) {
        if let Some(server) = &self.server {
            table
                .row(
                    "server CPU",
                    format!(
                        "{:.2} s ({:.0}% system), {:.2} µs per {per}",
                        server.cpu_secs,
                        server.cpu_system_share * 100.0,
                        cpu_us_per(server.cpu, items)
                    ),
                )
                .row(
                    "server RSS",
                    format!(
                        "{:.1} MB before, {:.1} MB after (peak {:.1} MB)",
                        server.memory_before.rss_kb as f64 / 1024.0,
                        server.memory_after.rss_kb as f64 / 1024.0,
                        server.memory_after.peak_rss_kb as f64 / 1024.0
                    ),
                );
        }
        table.row("sim CPU", format!("{:.2} µs per {per}", cpu_us_per(self.sim_cpu, items)));
        if let Some(other) = self.other_busy_secs {
            table.row("other busy core time", format!("{other:.2} s (neither server nor sim)"));
        }
        for core in &self.cores {
            table.row(
                format!("core {} busy", core.core),
                format!("{:.0}% ({:.0}% softirq)", core.busy_share * 100.0, core.softirq_share * 100.0),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_busy_is_a_share_of_the_window() {
        let before = [CoreTicks { busy: 11, softirq: 1, total: 61 }, CoreTicks { busy: 14, softirq: 1, total: 67 }];
        let after = [CoreTicks { busy: 61, softirq: 11, total: 161 }, CoreTicks { busy: 14, softirq: 1, total: 167 }];
        let busy = core_busy(&before, &after);
        assert_eq!((busy[0].busy_share, busy[0].softirq_share, busy[0].busy_secs), (0.5, 0.1, 0.5));
        assert_eq!(busy[1].busy_share, 0.0);
    }

    #[test]
    fn a_window_over_this_process_reads_its_cpu_and_every_core() {
        let usage = UsageWindow::start(None).unwrap().finish().unwrap();
        assert!(usage.server.is_none() && usage.other_busy_secs.is_none());
        assert!(!usage.cores.is_empty());
        assert_eq!(cpu_us_per(Duration::from_millis(3), 1_000), 3.0);
        assert_eq!(cpu_us_per(Duration::from_millis(3), 0), 0.0);
    }
}
