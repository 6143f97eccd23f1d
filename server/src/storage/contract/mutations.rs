//! The mutation queue part of the contract: dedupe by (client, mutation id), the queue
//! bound, outcomes committed with their changes, and pruning by age.

use std::collections::BTreeMap;

use syncline_proto::v1::{Record, Value};

use super::Open;
use crate::storage::{
    Enqueued, MutationOp, MutationOutcome, PartitionName, PartitionWrite, QueuedMutation, StoreError,
};

/// A queued create of `Task/ann` by `client` (shared with the embedded backend's own tests).
pub(crate) fn mutation(client: &str, mutation_id: &str) -> QueuedMutation {
    QueuedMutation {
        client_id: client.to_owned(),
        user_id: "ann".to_owned(),
        seq: 0,
        mutation_id: mutation_id.to_owned(),
        partition: PartitionName::new("Task", "ann"),
        op: MutationOp::Create,
        id: format!("tmp-{mutation_id}"),
        fields: BTreeMap::from([("title".to_owned(), Value::string("t"))]),
        base_version: 0,
    }
}

/// A finished mutation's outcome, not kept as failed.
pub(crate) fn outcome(client: &str, mutation_id: &str, result: &[u8]) -> MutationOutcome {
    MutationOutcome {
        client_id: client.to_owned(),
        mutation_id: mutation_id.to_owned(),
        result: result.to_vec(),
        failed: None,
        fence: None,
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}

pub(super) fn a_finished_mutation_leaves_the_queue_and_answers_its_id(open: Open) {
    let fixture = open(None);
    let store = &*fixture.store;
    assert_eq!(store.enqueue_mutation(&mutation("c1", "m1"), 10).unwrap(), Enqueued::Queued { seq: 1 });
    assert_eq!(store.enqueue_mutation(&mutation("c1", "m2"), 10).unwrap(), Enqueued::Queued { seq: 2 });
    assert_eq!(store.enqueue_mutation(&mutation("c1", "m1"), 10).unwrap(), Enqueued::Pending { seq: 1 });
    let write = PartitionWrite {
        partition: PartitionName::new("Task", "ann"),
        upserts: vec![Record { id: "t1".into(), ..Record::default() }],
        deletes: vec![],
    };
    let batches = store.finish_mutation(vec![write], outcome("c1", "m1", b"done-1")).unwrap();
    assert_eq!(batches[0].last_seq, 1, "the change commits with the outcome");
    assert_eq!(
        store.enqueue_mutation(&mutation("c1", "m1"), 10).unwrap(),
        Enqueued::Done { result: b"done-1".to_vec() }
    );
    let pending: Vec<_> = store.pending_mutations().unwrap().into_iter().map(|m| m.mutation_id).collect();
    assert_eq!(pending, vec!["m2".to_owned()], "only the unfinished one is pending");
    // Another device's ids are its own.
    assert_eq!(store.enqueue_mutation(&mutation("c2", "m1"), 10).unwrap(), Enqueued::Queued { seq: 1 });
}

pub(super) fn only_unfinished_mutations_count_against_the_queue_limit(open: Open) {
    let fixture = open(None);
    let store = &*fixture.store;
    for n in 0..3 {
        store.enqueue_mutation(&mutation("c1", &format!("m{n}")), 3).unwrap();
    }
    assert!(matches!(store.enqueue_mutation(&mutation("c1", "m3"), 3), Err(StoreError::QueueFull { pending: 3 })));
    store.finish_mutation(Vec::new(), outcome("c1", "m0", b"r")).unwrap();
    assert_eq!(store.enqueue_mutation(&mutation("c1", "m3"), 3).unwrap(), Enqueued::Queued { seq: 4 });
}

pub(super) fn outcomes_are_pruned_after_their_retention_only(open: Open) {
    let fixture = open(None);
    let store = &*fixture.store;
    store.enqueue_mutation(&mutation("c1", "old"), 10).unwrap();
    store.finish_mutation(Vec::new(), outcome("c1", "old", b"r-old")).unwrap();
    let cutoff = now() + 1;
    assert_eq!(store.prune_mutation_outcomes(0).unwrap(), 0, "nothing finished before the epoch");
    // A mutation finished after the cutoff stays.
    while now() <= cutoff {
        std::hint::spin_loop();
    }
    store.finish_mutation(Vec::new(), outcome("c1", "new", b"r-new")).unwrap();
    assert_eq!(store.prune_mutation_outcomes(cutoff).unwrap(), 1);
    assert_eq!(
        store.enqueue_mutation(&mutation("c1", "new"), 10).unwrap(),
        Enqueued::Done { result: b"r-new".to_vec() }
    );
    // After its retention a mutation id is unknown again: queued anew.
    assert_eq!(store.enqueue_mutation(&mutation("c1", "old"), 10).unwrap(), Enqueued::Queued { seq: 1 });
    assert_eq!(store.prune_mutation_outcomes(cutoff).unwrap(), 0, "pruned once");
}

pub(super) fn pending_mutations_are_listed_by_client_and_position(open: Open) {
    let fixture = open(None);
    let store = &*fixture.store;
    for (client, id) in [("c2", "x"), ("c1", "b"), ("c1", "a"), ("c2", "y")] {
        store.enqueue_mutation(&mutation(client, id), 10).expect("enqueue");
    }
    let pending: Vec<_> =
        store.pending_mutations().expect("pending").into_iter().map(|m| (m.client_id, m.seq, m.mutation_id)).collect();
    let expected = [("c1", 1, "b"), ("c1", 2, "a"), ("c2", 1, "x"), ("c2", 2, "y")];
    assert_eq!(pending, expected.map(|(c, s, m)| (c.to_owned(), s, m.to_owned())));
    let first = &store.pending_mutations().expect("pending")[0];
    assert_eq!(first, &QueuedMutation { client_id: "c1".into(), seq: 1, ..mutation("c1", "b") }, "stored whole");
    // One device's, as cluster lanes read them.
    let of_c2: Vec<_> = store.pending_mutations_of("c2").expect("pending").into_iter().map(|m| m.mutation_id).collect();
    assert_eq!(of_c2, ["x", "y"]);
    assert!(store.pending_mutations_of("c3").expect("pending").is_empty());
}

pub(super) fn a_refused_mutation_is_kept_as_failed_until_retried_dismissed_or_pruned(open: Open) {
    let fixture = open(None);
    let store = &*fixture.store;
    for id in ["m1", "m2", "m3"] {
        store.enqueue_mutation(&mutation("c1", id), 10).unwrap();
        let refused = MutationOutcome { failed: Some(mutation("c1", id)), ..outcome("c1", id, b"refused") };
        store.finish_mutation(Vec::new(), refused).unwrap();
    }
    let failed = store.failed_mutations().unwrap();
    let ids: Vec<_> = failed.iter().map(|failed| failed.mutation.mutation_id.as_str()).collect();
    assert_eq!(ids, ["m1", "m2", "m3"]);
    assert_eq!(failed[0].result, b"refused");
    assert_eq!(failed[0].mutation.fields, mutation("c1", "m1").fields);

    // Retried: queued again at the end, its outcome forgotten in the same commit.
    let queued = store.retry_failed_mutation("c1", "m1").unwrap().expect("kept");
    assert_eq!(queued.seq, 1, "at the end of the queue, empty since the three finished");
    assert_eq!(store.enqueue_mutation(&mutation("c1", "m1"), 10).unwrap(), Enqueued::Pending { seq: 1 });
    assert_eq!(store.retry_failed_mutation("c1", "m1").unwrap(), None, "no longer failed");
    // Its new outcome (a success) is not kept as failed.
    store.finish_mutation(Vec::new(), outcome("c1", "m1", b"ok")).unwrap();
    assert_eq!(store.enqueue_mutation(&mutation("c1", "m1"), 10).unwrap(), Enqueued::Done { result: b"ok".to_vec() });

    assert!(store.dismiss_failed_mutation("c1", "m2").unwrap());
    assert!(!store.dismiss_failed_mutation("c1", "m2").unwrap());
    assert_eq!(
        store.enqueue_mutation(&mutation("c1", "m2"), 10).unwrap(),
        Enqueued::Done { result: b"refused".to_vec() },
        "a dismissed mutation's outcome still answers its id"
    );
    // Pruned with its outcome.
    store.prune_mutation_outcomes(now() + 1).unwrap();
    assert_eq!(store.failed_mutations().unwrap(), Vec::new());
}
