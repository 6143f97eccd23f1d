//! What a load scenario hands back: a two-column table on stdout and the same numbers as a
//! JSON file.

use std::{path::Path, time::Duration};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Lowest latency the histograms tell apart: 1 µs.
const LATENCY_LOWEST_NS: u64 = 1_000;
/// Highest latency recorded exactly; larger values are clamped to it (no scenario runs for
/// an hour).
const LATENCY_HIGHEST_NS: u64 = 3_600 * 1_000_000_000;
/// Significant decimal digits of the histograms: 0.1% precision.
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

/// Returns an empty latency histogram in nanoseconds.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(LATENCY_LOWEST_NS, LATENCY_HIGHEST_NS, LATENCY_SIGNIFICANT_DIGITS)
        .expect("the bounds are valid")
}

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub(crate) struct LatencySummary {
    pub(crate) count: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) mean_ms: f64,
}

impl LatencySummary {
    pub(crate) fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |ns: u64| ns as f64 / 1e6;
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            count: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
            mean_ms: histogram.mean() / 1e6,
        }
    }

    /// Returns "p50 / p90 / p99 / max" for the table.
    pub(crate) fn line(&self) -> String {
        format!("{:.2} / {:.2} / {:.2} / {:.2} ms", self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms)
    }
}

/// A two-column table printed on stdout.
#[derive(Debug, Default)]
pub(crate) struct Table {
    title: String,
    rows: Vec<(String, String)>,
}

impl Table {
    pub(crate) fn new(title: impl Into<String>) -> Self {
        Self { title: title.into(), rows: Vec::new() }
    }

    pub(crate) fn row(&mut self, name: impl Into<String>, value: impl ToString) -> &mut Self {
        self.rows.push((name.into(), value.to_string()));
        self
    }

    pub(crate) fn print(&self) {
        let width = self.rows.iter().map(|(name, _)| name.chars().count()).max().unwrap_or(0);
        println!("{}", self.title);
        println!("{}", "-".repeat(self.title.chars().count()));
        for (name, value) in &self.rows {
            println!("{name:<width$}  {value}");
        }
    }
}

/// Writes `report` as pretty JSON to `path` (creating its directory), when there is one
/// (`--json-out`).
pub(crate) fn write_json(path: Option<&Path>, report: &impl Serialize) -> anyhow::Result<()> {
    let Some(path) = path else { return Ok(()) };
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut text = serde_json::to_string_pretty(report)?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Returns seconds with millisecond precision, for JSON.
pub(crate) fn secs(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1000.0).round() / 1000.0
}

/// Returns `value` rounded to `digits` decimals, for JSON.
pub(crate) fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// Returns the current Unix time in seconds (when the run happened, in the JSON).
pub(crate) fn unix_time_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_are_in_milliseconds() {
        let mut histogram = latency_histogram();
        for ms in 1..=100u64 {
            histogram.record(ms * 1_000_000).unwrap();
        }
        let summary = LatencySummary::of(&histogram);
        assert_eq!(summary.count, 100);
        assert!((summary.p50_ms - 50.0).abs() < 0.1, "{summary:?}");
        assert!((summary.p99_ms - 99.0).abs() < 0.1, "{summary:?}");
        assert!((summary.max_ms - 100.0).abs() < 0.1, "{summary:?}");
        assert_eq!(LatencySummary::of(&latency_histogram()), LatencySummary::default());
    }

    #[test]
    fn json_reports_create_their_directory() {
        let dir = std::env::temp_dir().join(format!("syncline-sim-report-{}", std::process::id()));
        let path = dir.join("nested").join("report.json");
        write_json(Some(&path), &serde_json::json!({"ok": true})).unwrap();
        write_json(None, &serde_json::json!({"ok": false})).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"ok\": true"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
