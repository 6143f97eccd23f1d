//! The blob part of the contract: blob metadata by hash.

use super::Open;
use crate::storage::{BlobMeta, MAX_BLOB_PARTITIONS, PartitionName};

fn meta(hash_digit: char) -> BlobMeta {
    BlobMeta {
        hash: hash_digit.to_string().repeat(64),
        size: 42,
        media_type: "image/jpeg".to_owned(),
        uploader: "ann".to_owned(),
        created_ms: 1_000,
        last_referenced_ms: 0,
        partitions: Vec::new(),
    }
}

pub(super) fn blob_metadata_is_kept_once_per_hash_and_forgotten_on_delete(open: Open) {
    let fixture = open(None);
    let store = &*fixture.store;
    let (a, b) = (meta('a'), meta('b'));
    assert!(store.put_blob(&a).expect("put"));
    assert!(!store.put_blob(&BlobMeta { uploader: "bob".to_owned(), ..a.clone() }).expect("put again"));
    assert_eq!(store.blob(&a.hash).expect("read"), Some(a.clone()), "the first upload's metadata stays");
    assert_eq!(store.blob(&b.hash).expect("read"), None);
    assert!(store.put_blob(&b).expect("put"));
    assert_eq!(store.blobs().expect("list"), vec![a.clone(), b.clone()], "by hash");
    assert!(store.delete_blob(&a.hash).expect("delete"));
    assert!(!store.delete_blob(&a.hash).expect("delete again"));
    assert_eq!(store.blobs().expect("list"), vec![b]);
}

pub(super) fn references_add_partitions_once_and_move_the_time_forward(open: Open) {
    let fixture = open(None);
    let store = &*fixture.store;
    let a = meta('c');
    let p1 = PartitionName::new("Photo", "ann");
    let p2 = PartitionName::new("Photo", "*");
    assert!(!store.reference_blob(&a.hash, Some(&p1), 5_000).expect("unknown blob"), "no such blob");
    store.put_blob(&a).expect("put");
    assert!(store.reference_blob(&a.hash, Some(&p1), 5_000).expect("reference"));
    assert!(store.reference_blob(&a.hash, Some(&p2), 4_000).expect("reference"));
    assert!(store.reference_blob(&a.hash, Some(&p1), 6_000).expect("reference"));
    let stored = store.blob(&a.hash).expect("read").expect("stored");
    assert_eq!(stored.partitions, vec![p2, p1], "sorted, each once");
    assert_eq!(stored.last_referenced_ms, 6_000, "the latest time");
    assert!(store.reference_blob(&a.hash, None, 6_500).expect("seen"));
    let stored = store.blob(&a.hash).expect("read").expect("stored");
    assert_eq!((stored.partitions.len(), stored.last_referenced_ms), (2, 6_500), "a time without a partition");
    for n in 0..MAX_BLOB_PARTITIONS + 5 {
        store.reference_blob(&a.hash, Some(&PartitionName::new("Doc", format!("u{n:03}"))), 7_000).expect("reference");
    }
    let stored = store.blob(&a.hash).expect("read").expect("stored");
    assert_eq!(stored.partitions.len(), MAX_BLOB_PARTITIONS, "bounded");
}
