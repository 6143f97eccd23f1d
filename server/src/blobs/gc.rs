//! Garbage collection of blobs: a pass reads every live record of every partition and every
//! pending device mutation, and deletes the blobs none of them references once the grace
//! period has passed since the blob was stored or last seen referenced (so a blob uploaded
//! just before the mutation that references it is never collected in between; in practice
//! between one and one and a half grace periods, plus a pass interval). Partial
//! uploads untouched for the grace period (at least [`MIN_PARTIAL_AGE`]) are deleted too.
//!
//! A pass costs a read of the whole store, so it runs rarely (`blob.gc_interval_secs`), as
//! a background job (`crate::jobs`). It also notes, for each referenced blob, partitions
//! referencing it that its metadata did not know yet (records written by channels or
//! Ingest), which lets their readers download it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use super::files::BlobFiles;
use super::{BlobError, Result};
use crate::storage::{PageLimit, PartitionName, Store};

/// Records read per snapshot page while looking for references: bounds one read.
const SCAN_PAGE_RECORDS: usize = 1_000;

/// Shortest time a partial upload is kept untouched, whatever the grace period: a device on
/// a slow network resumes its upload within it.
pub(super) const MIN_PARTIAL_AGE: Duration = Duration::from_secs(600);

/// What a pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs found referenced.
    pub referenced: u64,
    /// Unreferenced blobs deleted.
    pub deleted: u64,
    /// Unreferenced blobs kept for their grace period.
    pub kept: u64,
    /// Stale partial uploads deleted.
    pub partials_deleted: u64,
}

/// Runs one pass at `now_ms` (see the module docs).
pub(super) fn collect(store: &dyn Store, files: &BlobFiles, grace: Duration, now_ms: i64) -> Result<GcReport> {
    let references = references(store)?;
    let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX / 2);
    // A referenced blob's time is refreshed only once half the grace period old (not on
    // every pass: one write per blob per pass would cost the store more than the pass), so
    // an unreferenced one waits half a period more: at least the whole grace period since
    // its last reference.
    let refresh_after = grace_ms / 2;
    let mut report = GcReport::default();
    for meta in store.blobs()? {
        if let Some(partitions) = references.get(&meta.hash) {
            report.referenced += 1;
            let mut unknown = partitions.iter().filter(|partition| !meta.partitions.contains(partition)).peekable();
            if unknown.peek().is_none() && now_ms.saturating_sub(meta.last_referenced_ms) >= refresh_after {
                store.reference_blob(&meta.hash, None, now_ms)?;
            }
            for partition in unknown {
                store.reference_blob(&meta.hash, Some(partition), now_ms)?;
            }
            continue;
        }
        let last_use = meta.created_ms.max(meta.last_referenced_ms);
        if now_ms.saturating_sub(last_use) < grace_ms.saturating_add(refresh_after) {
            report.kept += 1;
            continue;
        }
        // The file first: metadata without a file reads as "not found", a file without
        // metadata is stored again by its next upload.
        files.remove(&meta.hash)?;
        store.delete_blob(&meta.hash)?;
        report.deleted += 1;
        tracing::debug!(hash = %meta.hash, size = meta.size, "unreferenced blob collected");
    }
    let cutoff = SystemTime::now().checked_sub(grace.max(MIN_PARTIAL_AGE)).unwrap_or(SystemTime::UNIX_EPOCH);
    report.partials_deleted = files.remove_partials_before(cutoff).map_err(BlobError::Io)?;
    Ok(report)
}

/// Returns every blob hash referenced by a live record (with the partitions holding such
/// records) or by a pending mutation (with no partition: not readable yet).
fn references(store: &dyn Store) -> Result<BTreeMap<String, BTreeSet<PartitionName>>> {
    let mut references: BTreeMap<String, BTreeSet<PartitionName>> = BTreeMap::new();
    for partition in store.partitions()? {
        let mut after: Option<String> = None;
        loop {
            let page = store.read_snapshot(&partition, after.as_deref(), PageLimit::items(SCAN_PAGE_RECORDS))?;
            for record in &page.records {
                for (_, blob) in record.blobs() {
                    references.entry(blob.hash.clone()).or_default().insert(partition.clone());
                }
            }
            match page.records.last() {
                Some(last) if !page.done => after = Some(last.id.clone()),
                Some(_) | None => break,
            }
        }
    }
    for mutation in store.pending_mutations()? {
        for value in mutation.fields.values() {
            if let Some(blob) = value.as_blob() {
                references.entry(blob.hash.clone()).or_default();
            }
        }
    }
    Ok(references)
}
