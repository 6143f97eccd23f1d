//! What each device did ([`DeviceOutcome`]) and what the fleet did, summed when it stops
//! ([`FleetTotals`], with the stall set apart).

use serde::Serialize;

use crate::report::Table;

/// Distinct device errors kept for the report.
const MAX_REPORTED_ERRORS: usize = 5;

/// What one device did, reported when the fleet stops.
#[derive(Debug, Default)]
pub(crate) struct DeviceOutcome {
    pub(crate) caught_up: bool,
    pub(crate) error: Option<String>,
    pub(crate) live_frames: u64,
    pub(crate) live_records: u64,
    pub(crate) catchup_pages: u64,
    pub(crate) catchup_records: u64,
    pub(crate) recatchups: u64,
    pub(crate) gaps: u64,
    /// Sequences received again, at or below the cursor.
    pub(crate) duplicate_seqs: u64,
    /// Sequences skipped: a frame's `from` beyond cursor + 1.
    pub(crate) missing_seqs: u64,
    /// Sessions resumed after a reconnect order (token login and subscribe sent).
    pub(crate) reconnects: u64,
    /// Reconnect attempts that failed (connect, Hello or catch-up) and were retried.
    pub(crate) reconnect_failures: u64,
    /// Catch-up pages received while resuming after a reconnect.
    pub(crate) resume_pages: u64,
    /// Records of this run in those pages.
    pub(crate) resume_records: u64,
    /// Moves to the next endpoint after the connection dropped (several endpoints).
    pub(crate) failovers: u64,
    /// The cursor when the fleet stopped.
    pub(crate) cursor: u64,
    pub(crate) in_stall_set: bool,
    pub(crate) acks_sent: u64,
    pub(crate) error_frames: u64,
}

/// What the fleet did, summed over devices.
#[derive(Debug, Default, Serialize)]
pub(crate) struct FleetTotals {
    pub(crate) devices: usize,
    pub(crate) caught_up: usize,
    pub(crate) failed: usize,
    /// Live `Changes` frames (page 0) received.
    pub(crate) live_frames: u64,
    /// Records of this run received in live pushes.
    pub(crate) live_records: u64,
    /// Catch-up pages received after the first catch-up (the server demoted the device).
    pub(crate) catchup_pages: u64,
    /// Records of this run received in those catch-up pages.
    pub(crate) catchup_records: u64,
    /// Caught-up states after the first (each ends a demotion).
    pub(crate) recatchups: u64,
    /// Live pushes and log pages that skipped sequences (`from` beyond cursor + 1).
    pub(crate) gaps: u64,
    /// Sequences skipped by those frames, summed over devices.
    pub(crate) missing_seqs: u64,
    /// Sequences received again (at or below the device's cursor), summed over devices.
    pub(crate) duplicate_seqs: u64,
    /// The last target cursor the devices were given (`None`: none).
    pub(crate) target: Option<u64>,
    /// Devices whose cursor was below `target` when the fleet stopped.
    pub(crate) short_of_target: usize,
    /// Sequences those devices were short of `target`, summed: with `missing_seqs`, the changes
    /// never received.
    pub(crate) short_of_target_seqs: u64,
    /// Sessions resumed after reconnect orders.
    pub(crate) reconnects: u64,
    /// Reconnect attempts that failed and were retried (with backoff).
    pub(crate) reconnect_failures: u64,
    /// Catch-up pages received while resuming after a reconnect.
    pub(crate) resume_pages: u64,
    /// Records of this run received in those pages.
    pub(crate) resume_records: u64,
    /// Moves to the next endpoint after a connection dropped (several endpoints).
    pub(crate) failovers: u64,
    /// The same accounting for the stall set alone (when there was one).
    pub(crate) stall_set: Option<StallSetTotals>,
    pub(crate) acks_sent: u64,
    /// Non-fatal Error frames received.
    pub(crate) error_frames: u64,
    /// Devices whose connection ended before the fleet stopped.
    pub(crate) ended_early: usize,
    /// Up to five distinct device errors.
    pub(crate) errors: Vec<String>,
}

/// What the devices of the stall set did (see [`Control::stall_set`](super::Control)).
#[derive(Debug, Default, Serialize)]
pub(crate) struct StallSetTotals {
    pub(crate) devices: usize,
    /// Catch-up pages after the first catch-up (demotions).
    pub(crate) catchup_pages: u64,
    pub(crate) recatchups: u64,
    pub(crate) missing_seqs: u64,
    pub(crate) duplicate_seqs: u64,
    pub(crate) short_of_target: usize,
    pub(crate) short_of_target_seqs: u64,
    /// Devices whose connection ended before the fleet stopped.
    pub(crate) ended_early: usize,
}

/// Adds the named counters of a device's outcome to the same-named totals.
macro_rules! add_counters {
    ($totals:expr, $outcome:expr; $($counter:ident),+ $(,)?) => {
        $($totals.$counter += $outcome.$counter;)+
    };
}

/// Counts a device `short` sequences short of the target into `devices` and `seqs`.
fn count_short(devices: &mut usize, seqs: &mut u64, short: u64) {
    *devices += usize::from(short > 0);
    *seqs += short;
}

impl FleetTotals {
    /// Adds one device's outcome.
    pub(crate) fn add(&mut self, outcome: DeviceOutcome) {
        let short = self.target.map_or(0, |target| target.saturating_sub(outcome.cursor));
        let ended_early = outcome.error.is_some() && outcome.caught_up;
        add_counters!(self, outcome; live_frames, live_records, catchup_pages, catchup_records, recatchups, gaps,
            missing_seqs, duplicate_seqs, reconnects, reconnect_failures, resume_pages, resume_records, failovers,
            acks_sent, error_frames);
        count_short(&mut self.short_of_target, &mut self.short_of_target_seqs, short);
        if let Some(stall_set) = self.stall_set.as_mut().filter(|_| outcome.in_stall_set) {
            add_counters!(stall_set, outcome; catchup_pages, recatchups, missing_seqs, duplicate_seqs);
            count_short(&mut stall_set.short_of_target, &mut stall_set.short_of_target_seqs, short);
            stall_set.ended_early += usize::from(ended_early);
        }
        if let Some(error) = outcome.error {
            self.ended_early += usize::from(ended_early);
            if self.errors.len() < MAX_REPORTED_ERRORS && !self.errors.contains(&error) {
                self.errors.push(error);
            }
        }
    }
}

impl FleetTotals {
    /// Adds the rows of what the devices saw besides deliveries: demotions, gaps, acks sent.
    pub(crate) fn add_delivery_rows(&self, table: &mut Table) {
        table.row("demotions (re-catch-ups)", self.recatchups).row("gaps", self.gaps).row("acks sent", self.acks_sent);
    }

    /// Adds a row of the devices' errors, when there were any.
    pub(crate) fn add_error_row(&self, table: &mut Table) {
        if !self.errors.is_empty() {
            table.row("device errors", self.errors.join("; "));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_count_what_devices_missed_short_of_the_target_and_split_out_the_stall_set() {
        let mut totals = FleetTotals {
            target: Some(100),
            stall_set: Some(StallSetTotals { devices: 1, ..StallSetTotals::default() }),
            ..FleetTotals::default()
        };
        totals.add(DeviceOutcome { caught_up: true, cursor: 100, duplicate_seqs: 1, ..DeviceOutcome::default() });
        totals.add(DeviceOutcome {
            caught_up: true,
            cursor: 90,
            missing_seqs: 2,
            in_stall_set: true,
            error: Some("closed by the server: 4408 idle".into()),
            ..DeviceOutcome::default()
        });
        assert_eq!((totals.short_of_target, totals.short_of_target_seqs), (1, 10));
        assert_eq!((totals.missing_seqs, totals.duplicate_seqs, totals.ended_early), (2, 1, 1));
        let stall_set = totals.stall_set.unwrap();
        assert_eq!((stall_set.short_of_target_seqs, stall_set.missing_seqs, stall_set.duplicate_seqs), (10, 2, 0));
        assert_eq!(stall_set.ended_early, 1);
    }
}
