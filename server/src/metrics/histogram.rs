//! A fixed-bucket latency histogram of plain atomics: observing is two relaxed adds and a
//! search of a dozen bounds, with no lock (prometheus-client's histogram takes a mutex per
//! observation). The metrics collector encodes it at scrape.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bounds (seconds) for durations from a fraction of a millisecond to several seconds:
/// commits (an fsync) and capture rounds.
pub const DISK_SECONDS: &[f64] =
    &[0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A histogram of durations over fixed bucket bounds.
#[derive(Debug)]
pub struct AtomicHistogram {
    bounds: &'static [f64],
    /// One counter per bound, then one for `+Inf`; not cumulative.
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

/// A copy of a histogram's counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// (upper bound in seconds, observations in that bucket alone), the last bound `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of the observations, in seconds.
    pub sum_seconds: f64,
}

impl HistogramSnapshot {
    /// Returns the number of observations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|(_, count)| count).sum()
    }

    /// Returns the observations made after `earlier` (a snapshot of the same histogram).
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .map(|(index, (bound, count))| {
                (*bound, count.saturating_sub(earlier.buckets.get(index).map_or(0, |(_, count)| *count)))
            })
            .collect();
        HistogramSnapshot { buckets, sum_seconds: (self.sum_seconds - earlier.sum_seconds).max(0.0) }
    }

    /// Returns the upper bound of the bucket holding quantile `q` (0 to 1) of the
    /// observations (the largest finite bound for the `+Inf` bucket), or `None` without any.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        let largest_finite = self.buckets.iter().map(|(bound, _)| *bound).rfind(|bound| bound.is_finite());
        for (bound, observations) in &self.buckets {
            seen += observations;
            if seen >= rank {
                return if bound.is_finite() { Some(*bound) } else { largest_finite };
            }
        }
        largest_finite
    }
}

impl AtomicHistogram {
    /// Returns an empty histogram over `bounds` (seconds, ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(), sum_nanos: AtomicU64::new(0) }
    }

    /// Counts one observation.
    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        let bucket = self.bounds.partition_point(|bound| *bound < seconds);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Returns a copy of the counters.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets = self
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.buckets.iter())
            .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect();
        HistogramSnapshot { buckets, sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_the_observations_since_a_snapshot() {
        static BOUNDS: [f64; 3] = [0.001, 0.01, 0.1];
        let histogram = AtomicHistogram::new(&BOUNDS);
        histogram.observe(Duration::from_secs(5));
        let earlier = histogram.snapshot();
        for _ in 0..98 {
            histogram.observe(Duration::from_micros(500));
        }
        histogram.observe(Duration::from_millis(5));
        histogram.observe(Duration::from_millis(50));
        let recent = histogram.snapshot().since(&earlier);
        assert_eq!(recent.count(), 100);
        assert_eq!(recent.quantile(0.5), Some(0.001));
        assert_eq!(recent.quantile(0.99), Some(0.01));
        assert_eq!(recent.quantile(1.0), Some(0.1));
        assert_eq!(histogram.snapshot().quantile(1.0), Some(0.1), "+Inf reports the largest finite bound");
        assert_eq!(HistogramSnapshot::default().quantile(0.5), None);
    }

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let histogram = AtomicHistogram::new(DISK_SECONDS);
        histogram.observe(Duration::from_micros(300));
        histogram.observe(Duration::from_millis(1));
        histogram.observe(Duration::from_secs(60));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count(), 3);
        assert_eq!(snapshot.buckets[0], (0.000_5, 1));
        assert_eq!(snapshot.buckets[1], (0.001, 1), "a bound holds observations equal to it");
        assert_eq!(snapshot.buckets.last(), Some(&(f64::INFINITY, 1)));
        assert!((snapshot.sum_seconds - 60.0013).abs() < 1e-9);
    }
}
