//! Catch-up pages bounded in bytes: each page stops before the item that would take it past
//! its bytes, and pages cover a partition without gaps or duplicates.

use std::collections::HashSet;

use proptest::prelude::*;

use super::*;
use crate::storage::record_item_bytes;

/// A record with a `pad` field of `pad` bytes.
fn padded(id: &str, pad: usize) -> Record {
    Record {
        id: id.to_owned(),
        fields: BTreeMap::from([("pad".to_owned(), Value::string("x".repeat(pad)))]),
        version: 0,
    }
}

/// Returns the items' bytes of a page, checking it against `limit`: within its items, and
/// within its bytes unless it holds a single item.
fn checked_page_bytes(sizes: &[usize], limit: PageLimit) -> usize {
    let bytes: usize = sizes.iter().sum();
    assert!(sizes.len() <= limit.items, "{} items past {}", sizes.len(), limit.items);
    assert!(sizes.len() == 1 || bytes <= limit.bytes, "{bytes} bytes past {} in {} items", limit.bytes, sizes.len());
    bytes
}

/// Reads every snapshot page under `limit`; returns the pages' records.
fn snapshot_pages(store: &EmbeddedStore, name: &PartitionName, limit: PageLimit) -> Vec<Vec<Record>> {
    let mut pages: Vec<Vec<Record>> = Vec::new();
    loop {
        let after = pages.last().and_then(|page| page.last()).map(|record| record.id.clone());
        let page = store.read_snapshot(name, after.as_deref(), limit).expect("snapshot page");
        let sizes: Vec<usize> = page.records.iter().map(record_item_bytes).collect();
        checked_page_bytes(&sizes, limit);
        assert!(page.done || !page.records.is_empty(), "a page before the end holds something");
        let done = page.done;
        pages.push(page.records);
        if done {
            return pages;
        }
    }
}

/// Reads every log page after `cursor` under `limit`; returns the pages' changes and what
/// each covers to.
fn log_pages(
    store: &EmbeddedStore,
    name: &PartitionName,
    mut cursor: u64,
    limit: PageLimit,
) -> Vec<(Vec<Change>, u64)> {
    let mut pages = Vec::new();
    loop {
        let page = store.read_log(name, cursor, limit).expect("log page");
        let sizes: Vec<usize> = page.changes.iter().map(Change::item_bytes).collect();
        checked_page_bytes(&sizes, limit);
        let at_head = page.covered_to == page.state.head;
        if !at_head {
            assert!(page.covered_to > cursor, "a page must make progress");
            assert_eq!(
                page.changes.last().map(Change::seq),
                Some(page.covered_to),
                "a cut page covers to its last change"
            );
        }
        cursor = page.covered_to;
        pages.push((page.changes, page.covered_to));
        if at_head {
            return pages;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Pages bounded in items and bytes cover the live records and the log exactly once and
    /// in order, from every cursor, each within its bounds unless it holds a single item, and
    /// each ends only where the next item would not have fitted.
    #[test]
    fn byte_bounded_pages_cover_everything_once(
        batches in prop::collection::vec(
            prop::collection::vec((0u8..12, prop::option::weighted(0.8, 0usize..400)), 1..6),
            1..8,
        ),
        items in 1usize..8,
        bytes in 0usize..900,
    ) {
        let (_dir, store) = open_temp();
        let name = partition("u1");
        for batch in batches {
            let mut seen = HashSet::new();
            let batch: Vec<_> = batch.into_iter().filter(|(id, _)| seen.insert(*id)).collect();
            let deletes = batch.iter().filter(|(_, pad)| pad.is_none()).map(|(id, _)| format!("r{id:02}")).collect();
            let upserts =
                batch.iter().filter_map(|(id, pad)| pad.map(|pad| padded(&format!("r{id:02}"), pad))).collect();
            store.apply_batch(&name, upserts, deletes).expect("batch");
        }
        let limit = PageLimit { items, bytes };

        let all = store.read_snapshot(&name, None, PageLimit::unbounded()).expect("snapshot").records;
        let pages = snapshot_pages(&store, &name, limit);
        prop_assert_eq!(pages.concat(), all);
        for pair in pages.windows(2) {
            let sizes: Vec<usize> = pair[0].iter().map(record_item_bytes).collect();
            let next = pair[1].first().map_or(0, record_item_bytes);
            prop_assert!(sizes.len() == items || sizes.iter().sum::<usize>() + next > bytes, "a page ended early");
        }

        let log = store.read_log(&name, 0, PageLimit::unbounded()).expect("log").changes;
        let head = store.partition_state(&name).expect("state").head;
        for cursor in 0..=head {
            let pages = log_pages(&store, &name, cursor, limit);
            let changes: Vec<Change> = pages.iter().flat_map(|(changes, _)| changes.clone()).collect();
            let expected: Vec<Change> = log.iter().filter(|change| change.seq() > cursor).cloned().collect();
            prop_assert_eq!(changes, expected);
            prop_assert_eq!(pages.last().map(|(_, to)| *to), Some(head));
            for pair in pages.windows(2) {
                let sizes: Vec<usize> = pair[0].0.iter().map(Change::item_bytes).collect();
                let next = pair[1].0.first().map_or(0, Change::item_bytes);
                prop_assert!(sizes.len() == items || sizes.iter().sum::<usize>() + next > bytes, "a page ended early");
            }
        }
    }
}
