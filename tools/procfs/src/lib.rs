//! A process's CPU time and memory, and each core's busy time, read from `/proc` (Linux):
//! the one reader shared by `syncline-sim` and the baselines' `baseline-loadgen`.
//!
//! - [`Process`]: CPU time ([`CpuTimes`]), resident memory ([`Memory`]) and threads of a PID
//!   or of this process.
//! - [`core_ticks`]: every core's busy, softirq and total ticks ([`CoreTicks`]), to difference
//!   over a measured window.
//! - [`loadavg_1m`]: the one-minute load average.
//! - [`ProcfsError`]: what went wrong reading or parsing a file.

use std::time::Duration;

use serde::Serialize;

/// Clock ticks per second of `/proc` CPU times (`USER_HZ`, fixed at 100 in the Linux
/// user-space ABI on every common architecture).
pub const USER_HZ: u64 = 100;

/// Why a `/proc` reading failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcfsError {
    /// The file could not be read (e.g. no such process).
    #[error("reading {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file did not hold what this reader expects.
    #[error("parsing {path}: {what}")]
    Parse {
        /// The file.
        path: String,
        /// What was missing or malformed.
        what: String,
    },
}

/// The result of a `/proc` reading.
pub type Result<T> = std::result::Result<T, ProcfsError>;

/// Which process to read: a PID, or this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Process {
    /// Another process, e.g. the server.
    Pid(u32),
    /// The reading process itself.
    Current,
}

impl Process {
    fn path(self, file: &str) -> String {
        match self {
            Process::Pid(pid) => format!("/proc/{pid}/{file}"),
            Process::Current => format!("/proc/self/{file}"),
        }
    }

    /// Returns user + system CPU time so far (10 ms resolution).
    pub fn cpu_time(self) -> Result<Duration> {
        Ok(self.cpu_times()?.total())
    }

    /// Returns user and system CPU time so far, apart (10 ms resolution).
    pub fn cpu_times(self) -> Result<CpuTimes> {
        let path = self.path("stat");
        let text = read(&path)?;
        let (user_ticks, system_ticks) = parse_stat_cpu_ticks(&text).map_err(|what| parse_error(&path, what))?;
        Ok(CpuTimes { user_ticks, system_ticks })
    }

    /// Returns the number of threads (`Threads` in `/proc/PID/status`).
    pub fn threads(self) -> Result<u64> {
        let path = self.path("status");
        status_field(&read(&path)?, "Threads").map_err(|what| parse_error(&path, what))
    }

    /// Returns the resident set size and its peak.
    pub fn memory(self) -> Result<Memory> {
        let path = self.path("status");
        parse_status_memory(&read(&path)?).map_err(|what| parse_error(&path, what))
    }

    /// Returns the number of open file descriptors. Linux 6.2 and later report it as the
    /// size of `/proc/PID/fd`, one `stat`; older kernels report 0 there, and the entries are
    /// counted instead (one directory read, about 1.3 ms per ten thousand open files).
    pub fn open_fds(self) -> Result<u64> {
        let path = self.path("fd");
        let read_error = |source| ProcfsError::Read { path: path.clone(), source };
        let size = std::fs::metadata(&path).map_err(read_error)?.len();
        if size > 0 {
            return Ok(size);
        }
        let entries = std::fs::read_dir(&path).map_err(read_error)?;
        Ok(entries.filter(|entry| entry.is_ok()).count() as u64)
    }

    /// Returns the soft limit on open file descriptors (`Max open files` in
    /// `/proc/PID/limits`), `None` when unlimited.
    pub fn max_fds(self) -> Result<Option<u64>> {
        let path = self.path("limits");
        parse_limits_max_open_files(&read(&path)?).map_err(|what| parse_error(&path, what))
    }
}

/// Returns the soft limit of the `Max open files` line of a `/proc/PID/limits` text.
fn parse_limits_max_open_files(limits: &str) -> std::result::Result<Option<u64>, String> {
    let line = limits.lines().find_map(|line| line.strip_prefix("Max open files")).ok_or("no Max open files")?;
    match line.split_whitespace().next() {
        Some("unlimited") => Ok(None),
        Some(soft) => soft.parse().map(Some).map_err(|error| format!("Max open files: {error}")),
        None => Err("empty Max open files".to_owned()),
    }
}

fn read(path: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| ProcfsError::Read { path: path.to_owned(), source })
}

fn parse_error(path: &str, what: String) -> ProcfsError {
    ProcfsError::Parse { path: path.to_owned(), what }
}

/// CPU time of a process: `utime` and `stime`, in ticks of [`USER_HZ`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    user_ticks: u64,
    system_ticks: u64,
}

impl CpuTimes {
    /// Returns the time spent in user space.
    pub fn user(self) -> Duration {
        ticks_duration(self.user_ticks)
    }

    /// Returns the time spent in the kernel.
    pub fn system(self) -> Duration {
        ticks_duration(self.system_ticks)
    }

    /// Returns user + system time.
    pub fn total(self) -> Duration {
        self.user() + self.system()
    }

    /// Returns user + system time in seconds.
    pub fn total_secs(self) -> f64 {
        ticks_secs(self.user_ticks + self.system_ticks)
    }

    /// Returns system time in seconds.
    pub fn system_secs(self) -> f64 {
        ticks_secs(self.system_ticks)
    }

    /// Returns the time spent between `earlier` and `self`.
    pub fn since(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            user_ticks: self.user_ticks.saturating_sub(earlier.user_ticks),
            system_ticks: self.system_ticks.saturating_sub(earlier.system_ticks),
        }
    }
}

fn ticks_duration(ticks: u64) -> Duration {
    Duration::from_millis(ticks * 1000 / USER_HZ)
}

fn ticks_secs(ticks: u64) -> f64 {
    ticks as f64 / USER_HZ as f64
}

/// Resident memory of a process, in KiB as `/proc/PID/status` reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss_kb: u64,
    /// `VmHWM`: peak resident.
    pub peak_rss_kb: u64,
}

/// Returns utime and stime (fields 14 and 15) of a `/proc/PID/stat` line, in ticks. The
/// command name (field 2) is in parentheses and may hold spaces, so fields are counted after
/// the last `)`.
fn parse_stat_cpu_ticks(stat: &str) -> std::result::Result<(u64, u64), String> {
    let (_, after_name) = stat.rsplit_once(')').ok_or("no command name")?;
    // after_name starts with field 3 (state): utime and stime are the 12th and 13th after it.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let (Some(utime), Some(stime)) = (fields.get(11), fields.get(12)) else {
        return Err("too few fields".to_owned());
    };
    let number = |field: &str| field.parse::<u64>().map_err(|error| format!("{field:?}: {error}"));
    Ok((number(utime)?, number(stime)?))
}

fn parse_status_memory(status: &str) -> std::result::Result<Memory, String> {
    Ok(Memory { rss_kb: status_field(status, "VmRSS")?, peak_rss_kb: status_field(status, "VmHWM")? })
}

/// Returns the number that starts field `name` of a `/proc/PID/status` text (a size in kB
/// or a count).
fn status_field(status: &str, name: &str) -> std::result::Result<u64, String> {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(':')))
        .ok_or_else(|| format!("no {name}"))?;
    let number = line.split_whitespace().next().ok_or_else(|| format!("empty {name}"))?;
    number.parse().map_err(|error| format!("{name}: {error}"))
}

/// Time a CPU core spent, in `/proc/stat` ticks of [`USER_HZ`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreTicks {
    /// user + nice + system + irq + softirq + steal.
    pub busy: u64,
    /// Time in softirq (on loopback, the sender's core also runs the receiver's TCP input
    /// here).
    pub softirq: u64,
    /// Everything, idle and iowait included.
    pub total: u64,
}

impl CoreTicks {
    /// Returns the ticks spent between `earlier` and `self`.
    pub fn since(self, earlier: CoreTicks) -> CoreTicks {
        CoreTicks {
            busy: self.busy.saturating_sub(earlier.busy),
            softirq: self.softirq.saturating_sub(earlier.softirq),
            total: self.total.saturating_sub(earlier.total),
        }
    }

    /// Returns the ticks core `core` spent between two [`core_ticks`] readings (zero for a
    /// core that is in neither).
    pub fn of_core(before: &[CoreTicks], after: &[CoreTicks], core: usize) -> CoreTicks {
        match (before.get(core), after.get(core)) {
            (Some(before), Some(after)) => after.since(*before),
            _ => CoreTicks::default(),
        }
    }

    /// Returns the busy time in seconds (10 ms resolution).
    pub fn busy_secs(self) -> f64 {
        ticks_secs(self.busy)
    }

    /// Returns the softirq time in seconds (10 ms resolution).
    pub fn softirq_secs(self) -> f64 {
        ticks_secs(self.softirq)
    }
}

/// Returns the ticks of every core (`cpuN` lines of `/proc/stat`), indexed by core number (a
/// core that is offline reads as zero).
pub fn core_ticks() -> Result<Vec<CoreTicks>> {
    const PATH: &str = "/proc/stat";
    parse_core_ticks(&read(PATH)?).map_err(|what| parse_error(PATH, what))
}

fn parse_core_ticks(stat: &str) -> std::result::Result<Vec<CoreTicks>, String> {
    let mut cores = Vec::new();
    for line in stat.lines() {
        let mut fields = line.split_whitespace();
        let Some(name) = fields.next() else { continue };
        let Some(number) = name.strip_prefix("cpu").filter(|number| !number.is_empty()) else { continue };
        let core: usize = number.parse().map_err(|error| format!("{name}: {error}"))?;
        // user nice system idle iowait irq softirq steal (guest time is already in user).
        let ticks: Vec<u64> = fields
            .take(8)
            .map(str::parse)
            .collect::<std::result::Result<_, _>>()
            .map_err(|error| format!("{name}: {error}"))?;
        let [user, nice, system, idle, iowait, irq, softirq, steal] = ticks[..] else {
            return Err(format!("too few fields for {name}"));
        };
        if cores.len() <= core {
            cores.resize(core + 1, CoreTicks::default());
        }
        cores[core] = CoreTicks {
            busy: user + nice + system + irq + softirq + steal,
            softirq,
            total: user + nice + system + idle + iowait + irq + softirq + steal,
        };
    }
    Ok(cores)
}

/// Returns the one-minute load average (`/proc/loadavg`), if it can be read.
pub fn loadavg_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_files_are_read_from_proc() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            20000                524288               files     \n";
        assert_eq!(parse_limits_max_open_files(limits), Ok(Some(20000)));
        let unlimited = "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_limits_max_open_files(unlimited), Ok(None));
        // Sixteen, so that files other tests open and close meanwhile cannot hide them.
        let files: Vec<_> = (0..16).map(|_| std::fs::File::open("/proc/self/status").unwrap()).collect();
        let with = Process::Current.open_fds().unwrap();
        drop(files);
        assert!(with > Process::Current.open_fds().unwrap(), "the files held are counted");
    }

    #[test]
    fn stat_times_are_counted_after_the_command_name() {
        let stat = "4242 (sync line) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 31 0 0 20 0 3 0 1 2 3";
        assert_eq!(parse_stat_cpu_ticks(stat).unwrap(), (250, 31));
        assert!(parse_stat_cpu_ticks("4242 (x) S 1 2").is_err());
    }

    #[test]
    fn cpu_times_are_in_ticks_of_user_hz() {
        let earlier = CpuTimes { user_ticks: 100, system_ticks: 10 };
        let later = CpuTimes { user_ticks: 350, system_ticks: 41 };
        let spent = later.since(earlier);
        assert_eq!((spent.user(), spent.system()), (Duration::from_millis(2500), Duration::from_millis(310)));
        assert_eq!(spent.total(), Duration::from_millis(2810));
        assert_eq!((spent.total_secs(), spent.system_secs()), (2.81, 0.31));
        assert_eq!(earlier.since(later), CpuTimes::default());
    }

    #[test]
    fn status_memory_is_read_in_kib() {
        let status = "Name:\tsyncline\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t3\n";
        assert_eq!(parse_status_memory(status).unwrap(), Memory { rss_kb: 10240, peak_rss_kb: 20480 });
        assert_eq!(status_field(status, "Threads").unwrap(), 3);
        assert!(status_field(status, "VmSwap").is_err());
    }

    #[test]
    fn core_ticks_are_read_per_core() {
        let stat = "cpu  10 0 10 100 0 0 2 0 0 0\ncpu0 5 0 5 50 0 0 1 0 0 0\ncpu1 5 1 5 50 3 1 1 1 0 0\nintr 1 2\n";
        let cores = parse_core_ticks(stat).unwrap();
        assert_eq!(
            cores,
            [CoreTicks { busy: 11, softirq: 1, total: 61 }, CoreTicks { busy: 14, softirq: 1, total: 67 }]
        );
        let later = [CoreTicks { busy: 61, softirq: 11, total: 161 }, CoreTicks { busy: 14, softirq: 1, total: 167 }];
        let core0 = CoreTicks::of_core(&cores, &later, 0);
        assert_eq!(core0, CoreTicks { busy: 50, softirq: 10, total: 100 });
        assert_eq!((core0.busy_secs(), core0.softirq_secs()), (0.5, 0.1));
        assert_eq!(CoreTicks::of_core(&cores, &later, 2), CoreTicks::default(), "no such core");
        assert!(!core_ticks().unwrap().is_empty());
    }

    #[test]
    fn offline_cores_read_as_zero() {
        let stat = "cpu0 1 0 1 10 0 0 0 0\ncpu2 2 0 2 20 0 0 0 0\n";
        let cores = parse_core_ticks(stat).unwrap();
        assert_eq!(cores.len(), 3);
        assert_eq!(cores[1], CoreTicks::default());
        assert_eq!(cores[2].busy, 4);
        assert!(parse_core_ticks("cpu0 1 2 3\n").is_err());
    }

    #[test]
    fn this_process_can_be_read() {
        assert!(Process::Current.memory().unwrap().rss_kb > 0);
        assert!(Process::Current.threads().unwrap() >= 1);
        Process::Current.cpu_time().unwrap();
        assert!(loadavg_1m().is_some());
        let missing = Process::Pid(u32::MAX).memory().unwrap_err();
        assert!(matches!(missing, ProcfsError::Read { .. }), "{missing:?}");
    }
}
