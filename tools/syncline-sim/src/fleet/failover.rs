//! Failover: a fleet given several endpoints of one cluster (`--url a,b,c` or `--also-url`)
//! behaves as devices behind a load balancer: device i starts on endpoint i mod n, and when
//! its connection drops after it caught up (its node died), it resumes on the next endpoint
//! with its reconnect backoff (a refused attempt moves on once more), subscribing from its
//! own cursor. [`Failover`] records, per device that moved, when its connection dropped, when
//! it had a session again elsewhere and when it was caught up there; [`FailoverSummary`]
//! reports them from the moment the node was killed (`--kill-pid`, see [`KillArgs`]) or, without
//! one, from the first drop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

use crate::report::Table;

/// Where the run kills a node itself: the exact moment of the kill is the origin of every
/// failover time.
#[derive(Clone, Copy, Debug, clap::Args, Serialize)]
pub(crate) struct KillArgs {
    /// PID of a node (a `syncline serve` this run's caller started) to kill with SIGKILL
    /// `--kill-after-secs` into the write phase.
    #[arg(long)]
    pub(crate) kill_pid: Option<u32>,
    /// Seconds into the write phase when `--kill-pid` is killed.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) kill_after_secs: f64,
}

impl KillArgs {
    /// Waits until the kill is due (a schedule, not a synchronisation), then sends SIGKILL to
    /// `--kill-pid` and records the moment in `failover`. Does nothing without `--kill-pid`.
    pub(crate) async fn kill_when_due(self, failover: &Failover, now_ns: impl Fn() -> u64) -> anyhow::Result<()> {
        let Some(pid) = self.kill_pid else { return Ok(()) };
        anyhow::ensure!(
            self.kill_after_secs.is_finite() && self.kill_after_secs >= 0.0,
            "--kill-after-secs must be ≥ 0"
        );
        tokio::time::sleep(Duration::from_secs_f64(self.kill_after_secs)).await;
        let status = tokio::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().await?;
        failover.killed_ns.store(now_ns(), Ordering::SeqCst);
        anyhow::ensure!(status.success(), "kill -KILL {pid} failed: {status}");
        Ok(())
    }
}

/// Not set yet.
const UNSET: u64 = u64::MAX;

/// What the fleet's moves to other endpoints took (times in ns since the run's start).
#[derive(Debug)]
pub(crate) struct Failover {
    killed_ns: AtomicU64,
    first_drop_ns: AtomicU64,
    dropped: AtomicU64,
    /// Per device that moved: when it had a session again, and when it was caught up again.
    reconnected_ns: Mutex<Vec<u64>>,
    caught_up_ns: Mutex<Vec<u64>>,
}

impl Default for Failover {
    fn default() -> Self {
        Self {
            killed_ns: AtomicU64::new(UNSET),
            first_drop_ns: AtomicU64::new(UNSET),
            dropped: AtomicU64::new(0),
            reconnected_ns: Mutex::default(),
            caught_up_ns: Mutex::default(),
        }
    }
}

impl Failover {
    /// A caught-up device's connection dropped at `at_ns`: it moves to the next endpoint.
    pub(crate) fn dropped(&self, at_ns: u64) {
        self.first_drop_ns.fetch_min(at_ns, Ordering::SeqCst);
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }

    /// A device that moved has a session again (token login and subscribe sent) at `at_ns`.
    pub(crate) fn reconnected(&self, at_ns: u64) {
        self.reconnected_ns.lock().push(at_ns);
    }

    /// A device that moved is caught up again, on its new node, at `at_ns`.
    pub(crate) fn caught_up(&self, at_ns: u64) {
        self.caught_up_ns.lock().push(at_ns);
    }

    /// Returns the summary, `None` when no device moved.
    pub(crate) fn summary(&self) -> Option<FailoverSummary> {
        let dropped = self.dropped.load(Ordering::SeqCst);
        if dropped == 0 {
            return None;
        }
        let killed_ns = self.killed_ns.load(Ordering::SeqCst);
        let origin_ns = if killed_ns == UNSET { self.first_drop_ns.load(Ordering::SeqCst) } else { killed_ns };
        let reconnected = TimesSince::of(&self.reconnected_ns.lock(), origin_ns);
        let caught_up = TimesSince::of(&self.caught_up_ns.lock(), origin_ns);
        let first_drop_ms = ms(self.first_drop_ns.load(Ordering::SeqCst).saturating_sub(origin_ns));
        Some(FailoverSummary {
            origin: if killed_ns == UNSET { "first drop" } else { "kill" },
            devices_dropped: dropped,
            first_drop_ms,
            devices_reconnected: reconnected.count,
            devices_caught_up: caught_up.count,
            reconnected,
            caught_up,
        })
    }
}

/// What the devices that moved took, from the origin (the kill, else the first drop).
#[derive(Debug, Serialize)]
pub(crate) struct FailoverSummary {
    /// `kill` (`--kill-pid`) or `first drop`.
    pub(crate) origin: &'static str,
    /// Caught-up devices whose connection dropped (moves; a device may move more than once).
    pub(crate) devices_dropped: u64,
    /// The first drop, after the origin.
    pub(crate) first_drop_ms: f64,
    pub(crate) devices_reconnected: u64,
    pub(crate) devices_caught_up: u64,
    /// Session again on another node: p50/p99/max (max: every device that moved is connected).
    pub(crate) reconnected: TimesSince,
    /// Caught up to the head again on another node.
    pub(crate) caught_up: TimesSince,
}

/// Times after an origin, in ms.
#[derive(Debug, Default, Serialize)]
pub(crate) struct TimesSince {
    pub(crate) count: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

impl TimesSince {
    fn of(times_ns: &[u64], origin_ns: u64) -> Self {
        let mut since: Vec<u64> = times_ns.iter().map(|at| at.saturating_sub(origin_ns)).collect();
        since.sort_unstable();
        let at = |quantile: f64| {
            let index = ((since.len() as f64 * quantile).ceil() as usize).saturating_sub(1);
            since.get(index.min(since.len().saturating_sub(1))).copied().map_or(0.0, ms)
        };
        Self { count: since.len() as u64, p50_ms: at(0.5), p99_ms: at(0.99), max_ms: at(1.0) }
    }

    fn line(&self) -> String {
        format!("{} devices, p50 {:.0} / p99 {:.0} / max {:.0} ms", self.count, self.p50_ms, self.p99_ms, self.max_ms)
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

impl FailoverSummary {
    /// Adds the failover rows to a report table.
    pub(crate) fn add_rows(&self, table: &mut Table) {
        table
            .row(
                "failover",
                format!(
                    "{} devices dropped, first {:.0} ms after the {}",
                    self.devices_dropped, self.first_drop_ms, self.origin
                ),
            )
            .row("  connected elsewhere", self.reconnected.line())
            .row("  caught up elsewhere", self.caught_up.line());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_reported_from_the_kill_or_else_the_first_drop() {
        let failover = Failover::default();
        assert!(failover.summary().is_none(), "nobody moved");
        for (drop, reconnect, caught_up) in [(1_000_000, 11_000_000, 21_000_000), (2_000_000, 51_000_000, 101_000_000)]
        {
            failover.dropped(drop);
            failover.reconnected(reconnect);
            failover.caught_up(caught_up);
        }
        let summary = failover.summary().unwrap();
        assert_eq!((summary.origin, summary.devices_dropped, summary.devices_caught_up), ("first drop", 2, 2));
        assert_eq!((summary.reconnected.p50_ms, summary.reconnected.max_ms), (10.0, 50.0));
        assert_eq!(summary.caught_up.max_ms, 100.0);
        failover.killed_ns.store(0, Ordering::SeqCst);
        let summary = failover.summary().unwrap();
        assert_eq!((summary.origin, summary.first_drop_ms, summary.caught_up.max_ms), ("kill", 1.0, 101.0));
    }
}
