//! A process's CPU time and memory, read from `/proc` (Linux).

use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

/// Clock ticks per second of `/proc/PID/stat` times (`USER_HZ`, fixed at 100 in the Linux
/// user-space ABI on every common architecture).
const USER_HZ: u64 = 100;

/// Which process to read: a PID, or this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Process {
    /// Another process, e.g. the server.
    Pid(u32),
    /// The simulator itself.
    Current,
}

/// Returns the server process of `--server-pid`, checking that /proc can be read for it.
pub(crate) fn server_process(pid: u32) -> anyhow::Result<Process> {
    let server = Process::Pid(pid);
    server.memory().context("reading the server's /proc entry (is --server-pid right?)")?;
    Ok(server)
}

impl Process {
    fn path(self, file: &str) -> String {
        match self {
            Process::Pid(pid) => format!("/proc/{pid}/{file}"),
            Process::Current => format!("/proc/self/{file}"),
        }
    }

    /// Returns user + system CPU time so far (10 ms resolution).
    pub(crate) fn cpu_time(self) -> anyhow::Result<Duration> {
        Ok(self.cpu_times()?.total())
    }

    /// Returns user and system CPU time so far, apart (10 ms resolution).
    pub(crate) fn cpu_times(self) -> anyhow::Result<CpuTimes> {
        let path = self.path("stat");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let (user, system) = parse_stat_cpu_ticks(&text).with_context(|| format!("parsing {path}"))?;
        let time = |ticks: u64| Duration::from_millis(ticks * 1000 / USER_HZ);
        Ok(CpuTimes { user: time(user), system: time(system) })
    }

    /// Returns the number of threads (`Threads` in `/proc/PID/status`).
    pub(crate) fn threads(self) -> anyhow::Result<u64> {
        let path = self.path("status");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        status_field(&text, "Threads").with_context(|| format!("parsing {path}"))
    }

    /// Returns the resident set size and its peak.
    pub(crate) fn memory(self) -> anyhow::Result<Memory> {
        let path = self.path("status");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        parse_status_memory(&text).with_context(|| format!("parsing {path}"))
    }
}

/// CPU time of a process: `utime` and `stime`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CpuTimes {
    pub(crate) user: Duration,
    pub(crate) system: Duration,
}

impl CpuTimes {
    pub(crate) fn total(self) -> Duration {
        self.user + self.system
    }

    /// Returns the time spent between `earlier` and `self`.
    pub(crate) fn since(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes { user: self.user.saturating_sub(earlier.user), system: self.system.saturating_sub(earlier.system) }
    }
}

/// Resident memory of a process, in KiB as `/proc/PID/status` reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Memory {
    /// `VmRSS`: resident now.
    pub(crate) rss_kb: u64,
    /// `VmHWM`: peak resident.
    pub(crate) peak_rss_kb: u64,
}

/// Returns utime and stime (fields 14 and 15) of a `/proc/PID/stat` line, in ticks. The
/// command name (field 2) is in parentheses and may hold spaces, so fields are counted after
/// the last `)`.
fn parse_stat_cpu_ticks(stat: &str) -> anyhow::Result<(u64, u64)> {
    let (_, after_name) = stat.rsplit_once(')').context("no command name")?;
    // after_name starts with field 3 (state): utime and stime are the 12th and 13th after it.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let (Some(utime), Some(stime)) = (fields.get(11), fields.get(12)) else {
        bail!("too few fields");
    };
    Ok((utime.parse()?, stime.parse()?))
}

fn parse_status_memory(status: &str) -> anyhow::Result<Memory> {
    Ok(Memory { rss_kb: status_field(status, "VmRSS")?, peak_rss_kb: status_field(status, "VmHWM")? })
}

/// Returns the number that starts field `name` of a `/proc/PID/status` text (a size in kB
/// or a count).
fn status_field(status: &str, name: &str) -> anyhow::Result<u64> {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(':')))
        .with_context(|| format!("no {name}"))?;
    let number = line.split_whitespace().next().with_context(|| format!("empty {name}"))?;
    Ok(number.parse()?)
}

/// Time a CPU core spent, in `/proc/stat` ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CoreTicks {
    /// user + nice + system + irq + softirq + steal.
    pub(crate) busy: u64,
    pub(crate) softirq: u64,
    /// Everything, idle and iowait included.
    pub(crate) total: u64,
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

/// Returns the ticks of every core (`cpuN` lines of `/proc/stat`), by core number.
pub(crate) fn core_ticks() -> anyhow::Result<Vec<CoreTicks>> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    parse_core_ticks(&text).context("parsing /proc/stat")
}

/// Returns each core's busy share between two readings of [`core_ticks`].
pub(crate) fn core_busy(before: &[CoreTicks], after: &[CoreTicks]) -> Vec<CoreBusy> {
    before
        .iter()
        .zip(after)
        .enumerate()
        .map(|(core, (before, after))| {
            let total = after.total.saturating_sub(before.total).max(1) as f64;
            let busy = after.busy.saturating_sub(before.busy);
            CoreBusy {
                core,
                busy_share: crate::report::round(busy as f64 / total, 3),
                softirq_share: crate::report::round(after.softirq.saturating_sub(before.softirq) as f64 / total, 3),
                busy_secs: busy as f64 / USER_HZ as f64,
            }
        })
        .collect()
}

fn parse_core_ticks(stat: &str) -> anyhow::Result<Vec<CoreTicks>> {
    let mut cores = Vec::new();
    for line in stat.lines() {
        let mut fields = line.split_whitespace();
        let Some(name) = fields.next() else { continue };
        let Some(number) = name.strip_prefix("cpu").filter(|number| !number.is_empty()) else { continue };
        let number: usize = number.parse()?;
        // user nice system idle iowait irq softirq steal (guest time is already in user).
        let ticks: Vec<u64> = fields.take(8).map(str::parse).collect::<Result<_, _>>()?;
        let [user, nice, system, idle, iowait, irq, softirq, steal] = ticks[..] else {
            bail!("too few fields for {name}");
        };
        if number != cores.len() {
            bail!("cores out of order at {name}");
        }
        cores.push(CoreTicks {
            busy: user + nice + system + irq + softirq + steal,
            softirq,
            total: user + nice + system + idle + iowait + irq + softirq + steal,
        });
    }
    Ok(cores)
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
                        cpu.system.as_secs_f64() / total.as_secs_f64().max(f64::EPSILON),
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
    fn stat_times_are_counted_after_the_command_name() {
        let stat = "4242 (sync line) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 31 0 0 20 0 3 0 1 2 3";
        assert_eq!(parse_stat_cpu_ticks(stat).unwrap(), (250, 31));
    }

    #[test]
    fn status_memory_is_read_in_kib() {
        let status = "Name:\tsyncline\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t3\n";
        assert_eq!(parse_status_memory(status).unwrap(), Memory { rss_kb: 10240, peak_rss_kb: 20480 });
        assert_eq!(status_field(status, "Threads").unwrap(), 3);
    }

    #[test]
    fn core_ticks_are_read_per_core() {
        let stat = "cpu  10 0 10 100 0 0 2 0 0 0\ncpu0 5 0 5 50 0 0 1 0 0 0\ncpu1 5 1 5 50 3 1 1 1 0 0\nintr 1 2\n";
        let cores = parse_core_ticks(stat).unwrap();
        assert_eq!(
            cores,
            [CoreTicks { busy: 11, softirq: 1, total: 61 }, CoreTicks { busy: 14, softirq: 1, total: 67 },]
        );
        let later = [CoreTicks { busy: 61, softirq: 11, total: 161 }, CoreTicks { busy: 14, softirq: 1, total: 167 }];
        let busy = core_busy(&cores, &later);
        assert_eq!(busy[0].busy_share, 0.5);
        assert_eq!(busy[0].softirq_share, 0.1);
        assert_eq!(busy[1].busy_share, 0.0);
        assert!(!core_ticks().unwrap().is_empty());
    }

    #[test]
    fn this_process_can_be_read() {
        assert!(Process::Current.memory().unwrap().rss_kb > 0);
        assert!(Process::Current.threads().unwrap() >= 1);
        Process::Current.cpu_time().unwrap();
    }
}
