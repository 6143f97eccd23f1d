//! Pages read from a partition, bounded in items and in encoded bytes.

use syncline_proto::v1::Record;

/// The key of `Changes.upserts` (field 5, length-delimited): what precedes each record of an
/// encoded page.
pub(super) const UPSERTS_KEY: u8 = (5 << 3) | 2;

/// Returns the bytes a record adds to an encoded page, which holds it as one element of a
/// repeated message field numbered below 16 (`Changes.upserts`): one key byte, the length
/// prefix, and the record's encoding.
pub fn record_item_bytes(record: &Record) -> usize {
    length_delimited_item_bytes(prost::Message::encoded_len(record))
}

/// Returns the bytes a deleted id adds to an encoded page, which holds it as one element of
/// a repeated string field numbered below 16 (`Changes.deletes`).
pub fn delete_item_bytes(id: &str) -> usize {
    length_delimited_item_bytes(id.len())
}

/// Returns the bytes a record adds to an encoded page from its stored parts (see
/// [`EncodedSnapshotPage::push_parts`](super::EncodedSnapshotPage::push_parts)): what
/// [`record_item_bytes`] returns for the same record.
pub fn record_parts_item_bytes(id: &str, version: u64, fields_len: usize) -> usize {
    length_delimited_item_bytes(record_parts_len(id, version, fields_len))
}

/// Returns the length of a record's encoding from its stored parts: its id and version as
/// prost encodes them (nothing for an empty id or a version 0) and its fields' encoding.
pub(super) fn record_parts_len(id: &str, version: u64, fields_len: usize) -> usize {
    let id_len = if id.is_empty() { 0 } else { length_delimited_item_bytes(id.len()) };
    let version_len = if version == 0 { 0 } else { 1 + prost::encoding::encoded_len_varint(version) };
    id_len + fields_len + version_len
}

fn length_delimited_item_bytes(len: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

/// Bounds one page read from a partition
/// ([`PartitionStore::read_log`](super::PartitionStore::read_log),
/// [`PartitionStore::read_snapshot`](super::PartitionStore::read_snapshot)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageLimit {
    /// Most records (snapshot pages) or log changes (log pages).
    pub items: usize,
    /// Most bytes of items, each counted as [`record_item_bytes`] or [`Change::item_bytes`](super::Change::item_bytes):
    /// the page ends before the item that would take it past this, except that a page holds
    /// at least one item whatever its size, so paging always makes progress.
    pub bytes: usize,
}

impl PageLimit {
    /// Returns a limit of `items` and no bound in bytes.
    pub const fn items(items: usize) -> Self {
        Self { items, bytes: usize::MAX }
    }

    /// Returns no limit at all: everything in one page.
    pub const fn unbounded() -> Self {
        Self::items(usize::MAX)
    }
}

/// Counts the items of a page as it fills, against its [`PageLimit`].
#[derive(Clone, Copy, Debug)]
pub struct PageFill {
    limit: PageLimit,
    items: usize,
    bytes: usize,
}

impl PageFill {
    /// Returns an empty page under `limit`.
    pub fn new(limit: PageLimit) -> Self {
        Self { limit, items: 0, bytes: 0 }
    }

    /// Returns true when the page holds its most items: nothing more can join it.
    pub fn is_full(&self) -> bool {
        self.items >= self.limit.items
    }

    /// Takes an item of `bytes` into the page and returns true if it fits: the page is not
    /// full, and it is empty or stays within its bytes with the item. Returns false and
    /// takes nothing otherwise: the page ends before the item.
    pub fn admit(&mut self, bytes: usize) -> bool {
        self.admit_group(1, bytes)
    }

    /// Takes `items` items of `bytes` in all, which must stay together, into the page and
    /// returns true if they fit: the page has room for as many items, and stays within its
    /// bytes with them (or they are one item and the page is empty). Returns false and takes
    /// nothing otherwise.
    pub fn admit_group(&mut self, items: usize, bytes: usize) -> bool {
        let (count, filled) = (self.items.saturating_add(items), self.bytes.saturating_add(bytes));
        let alone = self.items == 0 && items == 1;
        if count > self.limit.items || (filled > self.limit.bytes && !alone) {
            return false;
        }
        self.items = count;
        self.bytes = filled;
        true
    }

    /// Returns the items taken.
    pub fn items(&self) -> usize {
        self.items
    }

    /// Returns the bytes of the items taken.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Change;

    fn fill(items: usize, bytes: usize) -> PageFill {
        PageFill::new(PageLimit { items, bytes })
    }

    #[test]
    fn a_page_may_end_exactly_at_its_bytes() {
        let mut page = fill(10, 30);
        assert!(page.admit(10) && page.admit(10) && page.admit(10), "30 of 30 bytes fit");
        assert!(!page.admit(1), "one byte more does not");
        assert!(page.admit(0), "an item of no bytes still fits at the bound");
        assert_eq!((page.items(), page.bytes()), (4, 30));
    }

    #[test]
    fn the_item_that_would_pass_the_bound_ends_the_page() {
        let mut page = fill(10, 30);
        assert!(page.admit(20));
        assert!(!page.admit(11), "20 + 11 is past 30");
        assert_eq!((page.items(), page.bytes()), (1, 20), "a refused item takes nothing");
        assert!(page.admit(10), "a smaller one still fits");
    }

    #[test]
    fn a_first_item_over_the_bound_goes_alone() {
        let mut page = fill(10, 30);
        assert!(page.admit(100), "an empty page takes any one item");
        assert!(!page.admit(0), "and nothing after it");
        let mut zero = fill(10, 0);
        assert!(zero.admit(5) && !zero.admit(0), "even with no bytes at all: one item a page");
    }

    #[test]
    fn the_item_count_bounds_a_page_too() {
        let mut page = fill(2, usize::MAX);
        assert!(page.admit(1) && page.admit(1));
        assert!(page.is_full() && !page.admit(0));
        let mut none = fill(0, usize::MAX);
        assert!(none.is_full() && !none.admit(0), "a limit of 0 items takes nothing");
    }

    #[test]
    fn a_group_fits_whole_or_not_at_all() {
        let mut page = fill(5, 30);
        assert!(!page.admit_group(2, 31), "two items over the bound do not go alone");
        assert!(page.admit_group(1, 31), "one item does");
        let mut page = fill(5, 30);
        assert!(page.admit_group(3, 30));
        assert!(!page.admit_group(3, 0), "six items are past five");
        assert!(!page.admit_group(1, 1), "31 bytes are past 30");
        assert_eq!((page.items(), page.bytes()), (3, 30));
    }

    #[test]
    fn item_bytes_are_the_length_delimited_encoding() {
        let record = Record { id: "r".repeat(200), version: 7, ..Record::default() };
        let len = prost::Message::encoded_len(&record);
        assert_eq!(record_item_bytes(&record), 1 + 2 + len, "a two-byte length prefix above 127 bytes");
        assert_eq!(delete_item_bytes("abc"), 5);
        assert_eq!(Change::Delete { id: "abc".into(), seq: 1 }.item_bytes(), 5);
        assert_eq!(Change::Upsert(record.clone()).item_bytes(), record_item_bytes(&record));
    }
}
