//! When recent commits of each partition happened, so that an operator can see how far
//! behind a device is in time as well as in changes. The store keeps no commit times; this
//! listens to commits ([`CommitListener`]) and keeps the last [`COMMITS_REMEMBERED`] of each
//! partition in memory, so a lag that began before the server started (or before the
//! remembered commits) is reported from the oldest commit remembered, as a lower bound.

use std::collections::VecDeque;

use dashmap::DashMap;

use crate::auth::now_ms;
use crate::storage::{CommitListener, CommittedBatch, PartitionName};

/// Commits remembered per partition: enough to time any lag of a few minutes on a busy
/// partition, a few kilobytes each.
pub const COMMITS_REMEMBERED: usize = 256;

/// A device's lag behind a partition's head, as far as commit times tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LagTime {
    /// Milliseconds since the first change the device does not hold committed.
    pub millis: u64,
    /// True when that change committed before the oldest remembered commit: the lag is at
    /// least `millis`.
    pub at_least: bool,
}

/// The last commits of each partition: (last sequence of the commit, Unix ms).
#[derive(Default)]
pub struct CommitTimes {
    partitions: DashMap<PartitionName, VecDeque<(u64, i64)>>,
}

impl CommitTimes {
    /// Notes that `partition` committed up to `last_seq` at `at_ms`.
    pub fn note(&self, partition: &PartitionName, last_seq: u64, at_ms: i64) {
        let mut commits = self.partitions.entry(partition.clone()).or_default();
        if commits.len() == COMMITS_REMEMBERED {
            commits.pop_front();
        }
        commits.push_back((last_seq, at_ms));
    }

    /// Returns how long ago the first change after `cursor` committed, at `now_ms`; `None`
    /// when no remembered commit is past the cursor (caught up, or nothing remembered).
    pub fn lag(&self, partition: &PartitionName, cursor: u64, now_ms: i64) -> Option<LagTime> {
        let commits = self.partitions.get(partition)?;
        let index = commits.iter().position(|(last_seq, _)| *last_seq > cursor)?;
        let (_, at_ms) = commits[index];
        // The first remembered commit may have started below the cursor's next change, or
        // older commits were forgotten: only then is the time a lower bound.
        let at_least = index == 0 && commits.len() == COMMITS_REMEMBERED;
        Some(LagTime { millis: u64::try_from(now_ms - at_ms).unwrap_or(0), at_least })
    }
}

impl CommitListener for CommitTimes {
    fn committed(&self, batches: &[&CommittedBatch]) {
        let now = now_ms();
        for batch in batches {
            self.note(&batch.partition, batch.last_seq, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_timed_from_the_first_commit_past_the_cursor() {
        let times = CommitTimes::default();
        let partition = PartitionName::new("Account", "ann");
        times.note(&partition, 3, 1_000);
        times.note(&partition, 7, 2_000);
        times.note(&partition, 9, 5_000);
        assert_eq!(times.lag(&partition, 0, 6_000), Some(LagTime { millis: 5_000, at_least: false }));
        assert_eq!(times.lag(&partition, 3, 6_000), Some(LagTime { millis: 4_000, at_least: false }));
        assert_eq!(times.lag(&partition, 8, 6_000), Some(LagTime { millis: 1_000, at_least: false }));
        assert_eq!(times.lag(&partition, 9, 6_000), None, "caught up");
        assert_eq!(times.lag(&PartitionName::new("Account", "bob"), 0, 6_000), None);
    }

    #[test]
    fn forgotten_commits_make_the_lag_a_lower_bound() {
        let times = CommitTimes::default();
        let partition = PartitionName::new("Account", "ann");
        for n in 1..=COMMITS_REMEMBERED as u64 + 5 {
            times.note(&partition, n, n as i64);
        }
        let lag = times.lag(&partition, 0, 1_000).unwrap();
        assert!(lag.at_least);
        assert_eq!(lag.millis, 1_000 - 6);
    }
}
