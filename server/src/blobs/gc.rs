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
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::blob_bytes::BlobBytes;
use super::files::BlobFiles;
use super::{Result, blocking};
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
    /// Stored bytes without metadata (older than the grace period) deleted.
    pub orphans_deleted: u64,
}

/// Runs one pass at `now_ms` (see the module docs): the store's work off the async
/// threads, the bytes deleted through `bytes` (the directory or the bucket).
pub(super) async fn collect(
    store: &Arc<dyn Store>,
    files: &BlobFiles,
    bytes: &dyn BlobBytes,
    grace: Duration,
    now_ms: i64,
) -> Result<GcReport> {
    let (scanning, doomed_grace) = (store.clone(), grace);
    let (mut report, doomed) = blocking(move || select_unreferenced(&*scanning, doomed_grace, now_ms)).await?;
    for hash in doomed {
        // The bytes first: metadata without bytes reads as "not found", bytes without
        // metadata are stored again by their next upload (or collected below).
        bytes.delete(&hash).await?;
        let (deleting, name) = (store.clone(), hash.clone());
        blocking(move || deleting.delete_blob(&name)).await?;
        report.deleted += 1;
        tracing::debug!(%hash, "unreferenced blob collected");
    }
    report.orphans_deleted = collect_orphans(store, bytes, grace, now_ms).await?;
    let cutoff = SystemTime::now().checked_sub(grace.max(MIN_PARTIAL_AGE)).unwrap_or(SystemTime::UNIX_EPOCH);
    let files = files.clone();
    report.partials_deleted = blocking(move || files.remove_partials_before(cutoff)).await?;
    Ok(report)
}

/// Notes new references and returns the report so far with the hashes of the blobs to
/// delete: unreferenced, and past their grace period.
fn select_unreferenced(store: &dyn Store, grace: Duration, now_ms: i64) -> Result<(GcReport, Vec<String>)> {
    let references = references(store)?;
    let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX / 2);
    // A referenced blob's time is refreshed only once half the grace period old (not on
    // every pass: one write per blob per pass would cost the store more than the pass), so
    // an unreferenced one waits half a period more: at least the whole grace period since
    // its last reference.
    let refresh_after = grace_ms / 2;
    let mut report = GcReport::default();
    let mut doomed = Vec::new();
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
        doomed.push(meta.hash);
    }
    Ok((report, doomed))
}

/// Deletes stored bytes that no metadata names and that are older than the grace period
/// (a crash between storing the bytes and their metadata); returns how many.
async fn collect_orphans(store: &Arc<dyn Store>, bytes: &dyn BlobBytes, grace: Duration, now_ms: i64) -> Result<u64> {
    let cutoff = SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(now_ms).unwrap_or(0));
    let cutoff = cutoff.checked_sub(grace.max(MIN_PARTIAL_AGE)).unwrap_or(SystemTime::UNIX_EPOCH);
    let stale: Vec<String> =
        bytes.list().await?.into_iter().filter(|blob| blob.modified < cutoff).map(|blob| blob.hash).collect();
    if stale.is_empty() {
        return Ok(0);
    }
    let listing = store.clone();
    let known: BTreeSet<String> = blocking(move || listing.blobs()).await?.into_iter().map(|meta| meta.hash).collect();
    let mut deleted = 0;
    for hash in stale.into_iter().filter(|hash| !known.contains(hash)) {
        bytes.delete(&hash).await?;
        deleted += 1;
        tracing::debug!(%hash, "blob bytes without metadata collected");
    }
    Ok(deleted)
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
