//! CPU time, memory and core busy time from `/proc` (Linux).

use anyhow::{Context, bail};

/// Clock ticks per second of `/proc` CPU times (`USER_HZ`, 100 in the Linux user-space ABI).
const USER_HZ: f64 = 100.0;

/// utime and stime of a process, in ticks.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CpuTimes {
    user: u64,
    system: u64,
}

impl CpuTimes {
    pub(crate) fn since(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes { user: self.user.saturating_sub(earlier.user), system: self.system.saturating_sub(earlier.system) }
    }

    pub(crate) fn total_secs(self) -> f64 {
        (self.user + self.system) as f64 / USER_HZ
    }

    pub(crate) fn system_secs(self) -> f64 {
        self.system as f64 / USER_HZ
    }
}

/// Resident memory of a process, kB.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Memory {
    /// `VmRSS`.
    pub(crate) rss_kb: u64,
    /// `VmHWM`: the peak of `VmRSS`.
    pub(crate) peak_rss_kb: u64,
}

pub(crate) fn cpu_times(pid: u32) -> anyhow::Result<CpuTimes> {
    stat_cpu_times(&format!("/proc/{pid}/stat"))
}

pub(crate) fn own_cpu_times() -> anyhow::Result<CpuTimes> {
    stat_cpu_times("/proc/self/stat")
}

/// utime and stime are fields 14 and 15 of `/proc/PID/stat`; field 2 (the command name, in
/// parentheses) may hold spaces, so fields are counted after the last `)`.
fn stat_cpu_times(path: &str) -> anyhow::Result<CpuTimes> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let after_name = text.rsplit_once(')').with_context(|| format!("parsing {path}"))?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |index: usize| -> anyhow::Result<u64> {
        fields.get(index).and_then(|f| f.parse().ok()).with_context(|| format!("parsing {path}"))
    };
    // After the name, field 3 (state) is index 0, so utime (14) is index 11.
    Ok(CpuTimes { user: field(11)?, system: field(12)? })
}

pub(crate) fn memory(pid: u32) -> anyhow::Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kb = |key: &str| -> anyhow::Result<u64> {
        text.lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
            .with_context(|| format!("no {key} in {path}"))
    };
    Ok(Memory { rss_kb: kb("VmRSS:")?, peak_rss_kb: kb("VmHWM:")? })
}

pub(crate) fn loadavg_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// A core's busy and softirq ticks from `/proc/stat`; busy = user + nice + system + irq +
/// softirq + steal.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CoreTicks {
    busy: u64,
    softirq: u64,
}

impl CoreTicks {
    /// The ticks core `core` spent between two `core_ticks()` readings (zero for a core
    /// that does not exist).
    pub(crate) fn delta(before: &[CoreTicks], after: &[CoreTicks], core: usize) -> CoreTicks {
        match (before.get(core), after.get(core)) {
            (Some(b), Some(a)) => {
                CoreTicks { busy: a.busy.saturating_sub(b.busy), softirq: a.softirq.saturating_sub(b.softirq) }
            }
            _ => CoreTicks::default(),
        }
    }

    pub(crate) fn busy_secs(self) -> f64 {
        self.busy as f64 / USER_HZ
    }

    pub(crate) fn softirq_secs(self) -> f64 {
        self.softirq as f64 / USER_HZ
    }
}

/// Every core's ticks (the `cpuN` lines of `/proc/stat`), indexed by core number.
pub(crate) fn core_ticks() -> anyhow::Result<Vec<CoreTicks>> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let mut cores = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(core) = fields.next().and_then(|name| name.strip_prefix("cpu")).and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let ticks: Vec<u64> = fields.map(|f| f.parse().unwrap_or(0)).collect();
        if ticks.len() < 8 {
            bail!("parsing /proc/stat: short line for cpu{core}");
        }
        if cores.len() <= core {
            cores.resize(core + 1, CoreTicks::default());
        }
        // user nice system idle iowait irq softirq steal
        cores[core] =
            CoreTicks { busy: ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7], softirq: ticks[6] };
    }
    Ok(cores)
}
