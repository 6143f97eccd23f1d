use super::*;

const ACCOUNT: &str = "Account";
const CONTACT: &str = "Contact";

fn queue() -> MutationQueue {
    MutationQueue::open(None, DEFAULT_MAX_QUEUED_MUTATIONS).unwrap()
}

fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, Value> {
    pairs.iter().map(|(name, text)| ((*name).to_owned(), Value::string(*text))).collect()
}

fn new(mutation_id: &str, source: &str, op: MutationOp, id: &str, pairs: &[(&str, &str)]) -> NewMutation {
    NewMutation {
        mutation_id: mutation_id.to_owned(),
        source: source.to_owned(),
        key: String::new(),
        op,
        id: id.to_owned(),
        fields: fields(pairs),
        base_version: 0,
    }
}

fn push(queue: &mut MutationQueue, mutation_id: &str, source: &str, op: MutationOp, id: &str, pairs: &[(&str, &str)]) {
    queue.push(new(mutation_id, source, op, id, pairs)).unwrap();
}

fn ids(mutations: &[QueuedMutation]) -> Vec<&str> {
    mutations.iter().map(|mutation| mutation.mutation_id.as_str()).collect()
}

fn sendable(queue: &MutationQueue) -> Vec<&str> {
    queue.next_to_send(|_| false).into_iter().map(|mutation| mutation.mutation_id.as_str()).collect()
}

fn conflict(current: Record) -> MutationFailure {
    MutationFailure {
        op: MutationOp::Update,
        code: ErrorCode::Conflict,
        message: "changed meanwhile".to_owned(),
        current: Some(current),
    }
}

fn link(temp_id: &str, id: &str) -> Link {
    Link { temp_id: temp_id.to_owned(), id: id.to_owned() }
}

#[test]
fn mutations_keep_the_order_they_were_queued_in_and_ids_are_unique() {
    let mut queue = queue();
    push(&mut queue, "m1", ACCOUNT, MutationOp::Create, "tmp-1", &[("name", "Acme")]);
    push(&mut queue, "m2", CONTACT, MutationOp::Update, "c1", &[("name", "Bo")]);
    push(&mut queue, "m3", ACCOUNT, MutationOp::Delete, "a7", &[]);
    assert_eq!(ids(queue.mutations()), ["m1", "m2", "m3"]);
    let positions: Vec<u64> = queue.mutations().iter().map(|mutation| mutation.position).collect();
    assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "{positions:?}");
    assert!(queue.mutations().iter().all(|mutation| mutation.state == MutationState::Pending && !mutation.sent));

    let duplicate = queue.push(new("m2", ACCOUNT, MutationOp::Delete, "a8", &[]));
    assert!(matches!(duplicate, Err(OutboxError::Store(_))), "{duplicate:?}");
    assert_eq!(ids(queue.mutations()), ["m1", "m2", "m3"], "a refused push changes nothing");
    // Positions are never reused, even after the last row went.
    queue.complete("m3").unwrap();
    push(&mut queue, "m4", ACCOUNT, MutationOp::Delete, "a9", &[]);
    assert!(queue.get("m4").unwrap().position > positions[2]);
}

#[test]
fn a_full_queue_refuses_more() {
    let mut queue = MutationQueue::open(None, 2).unwrap();
    push(&mut queue, "m1", ACCOUNT, MutationOp::Delete, "a1", &[]);
    push(&mut queue, "m2", ACCOUNT, MutationOp::Delete, "a2", &[]);
    let refused = queue.push(new("m3", ACCOUNT, MutationOp::Delete, "a3", &[]));
    assert!(matches!(refused, Err(OutboxError::Full { limit: 2 })), "{refused:?}");
}

#[test]
fn a_reopened_file_holds_everything_that_was_not_finished() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mutations.sqlite");
    let current = Record { id: "a1".into(), fields: fields(&[("name", "Theirs")]), version: 9 };
    let before = {
        let mut queue = MutationQueue::open(Some(&path), DEFAULT_MAX_QUEUED_MUTATIONS).unwrap();
        push(&mut queue, "m1", ACCOUNT, MutationOp::Create, "tmp-1", &[("name", "Acme")]);
        push(&mut queue, "m2", ACCOUNT, MutationOp::Update, "a1", &[("name", "Mine")]);
        push(&mut queue, "m3", CONTACT, MutationOp::Create, "tmp-2", &[("account_id", "tmp-1")]);
        push(&mut queue, "m4", ACCOUNT, MutationOp::Delete, "a2", &[]);
        push(&mut queue, "m5", CONTACT, MutationOp::Delete, "c9", &[]);
        queue.mark_sent("m1").unwrap();
        assert!(queue.mark_acked("m1").unwrap());
        queue.mark_failed("m2", conflict(current.clone())).unwrap();
        queue.complete("m4").unwrap();
        queue.mutations().to_vec()
    };
    let reopened = MutationQueue::open(Some(&path), DEFAULT_MAX_QUEUED_MUTATIONS).unwrap();
    assert_eq!(reopened.mutations(), before.as_slice());
    assert_eq!(ids(reopened.mutations()), ["m1", "m2", "m3", "m5"]);
    let acked = reopened.get("m1").unwrap();
    assert_eq!((acked.state, acked.sent), (MutationState::Acked, true));
    assert_eq!(acked.fields, fields(&[("name", "Acme")]));
    let failed = reopened.get("m2").unwrap();
    assert_eq!(failed.state, MutationState::Failed);
    assert_eq!(failed.failure, Some(conflict(current)));
    assert_eq!((reopened.unresolved_count(), reopened.failed_count()), (3, 1));
}

#[test]
fn a_file_of_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mutations.sqlite");
    Connection::open(&path).unwrap().pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
    let opened = MutationQueue::open(Some(&path), DEFAULT_MAX_QUEUED_MUTATIONS);
    assert!(matches!(opened, Err(OutboxError::UnknownSchema { found, .. }) if found == SCHEMA_VERSION + 1));
}

#[test]
fn a_link_retargets_later_mutations_of_the_source_and_rewrites_references_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mutations.sqlite");
    let mut queue = MutationQueue::open(Some(&path), DEFAULT_MAX_QUEUED_MUTATIONS).unwrap();
    push(&mut queue, "create", ACCOUNT, MutationOp::Create, "tmp-1", &[("name", "Acme")]);
    push(&mut queue, "rename", ACCOUNT, MutationOp::Update, "tmp-1", &[("name", "Acme Inc")]);
    push(&mut queue, "contact", CONTACT, MutationOp::Create, "tmp-2", &[("account_id", "tmp-1"), ("name", "Bo")]);
    // Same id text in another source is another record: only its reference is rewritten.
    push(&mut queue, "other", CONTACT, MutationOp::Update, "tmp-1", &[("note", "tmp-1 is mine")]);
    push(&mut queue, "unrelated", ACCOUNT, MutationOp::Update, "a5", &[("parent", "tmp-1")]);
    push(&mut queue, "drop", ACCOUNT, MutationOp::Delete, "tmp-1", &[]);

    assert!(queue.apply_link(&link("tmp-1", "A-9"), Some(7)).unwrap());
    let expected = |queue: &MutationQueue| {
        let rows = queue.mutations();
        assert_eq!(rows[0].id, "tmp-1", "the create keeps the id it was sent with");
        assert_eq!((rows[0].linked_id.as_deref(), rows[0].local_id()), (Some("A-9"), "A-9"));
        assert_eq!((rows[1].id.as_str(), rows[1].base_version), ("A-9", 7));
        assert_eq!(rows[2].fields, fields(&[("account_id", "A-9"), ("name", "Bo")]));
        assert_eq!(rows[3].id, "tmp-1");
        assert_eq!(rows[3].fields, fields(&[("note", "tmp-1 is mine")]), "only whole values are references");
        assert_eq!(rows[4].fields, fields(&[("parent", "A-9")]));
        assert_eq!((rows[5].id.as_str(), rows[5].base_version), ("A-9", 7));
    };
    expected(&queue);
    // A second link for the same temp id (the result after a page's link) changes nothing.
    assert!(!queue.apply_link(&link("tmp-1", "A-10"), None).unwrap());
    expected(&queue);
    drop(queue);
    expected(&MutationQueue::open(Some(&path), DEFAULT_MAX_QUEUED_MUTATIONS).unwrap());
}

#[test]
fn mutations_referencing_an_unlinked_create_wait_with_the_rest_of_their_source() {
    let mut queue = queue();
    push(&mut queue, "create", ACCOUNT, MutationOp::Create, "tmp-1", &[("name", "Acme")]);
    push(&mut queue, "contact", CONTACT, MutationOp::Create, "tmp-2", &[("account_id", "tmp-1")]);
    push(&mut queue, "contact-2", CONTACT, MutationOp::Update, "c1", &[("name", "Bo")]);
    push(&mut queue, "rename", ACCOUNT, MutationOp::Update, "tmp-1", &[("name", "Acme Inc")]);
    push(&mut queue, "account-2", ACCOUNT, MutationOp::Update, "a2", &[("name", "Zed")]);
    push(&mut queue, "note", "Note", MutationOp::Update, "n1", &[("text", "hi")]);
    assert_eq!(sendable(&queue), ["create", "note"]);

    assert!(queue.apply_link(&link("tmp-1", "A-9"), Some(3)).unwrap());
    assert_eq!(sendable(&queue), ["create", "contact", "contact-2", "rename", "account-2", "note"]);
    // What went out on this connection is not sent twice.
    assert_eq!(queue.next_to_send(|id| id != "note").len(), 1);
}

#[test]
fn a_failure_holds_back_unsent_mutations_of_its_source_only() {
    let mut queue = queue();
    push(&mut queue, "m1", ACCOUNT, MutationOp::Update, "a1", &[("name", "x")]);
    push(&mut queue, "m2", ACCOUNT, MutationOp::Update, "a2", &[("name", "y")]);
    push(&mut queue, "m3", CONTACT, MutationOp::Update, "c1", &[("name", "z")]);
    push(&mut queue, "m4", ACCOUNT, MutationOp::Update, "a3", &[("name", "w")]);
    queue.mark_sent("m1").unwrap();
    queue.mark_sent("m2").unwrap();
    queue.mark_failed("m1", conflict(Record { id: "a1".into(), fields: BTreeMap::new(), version: 4 })).unwrap();
    // m2 went out before the failure was known: the server has it, so it is resent to learn
    // its outcome; m4 never went out and waits.
    assert_eq!(sendable(&queue), ["m2", "m3"]);
}

#[test]
fn retry_requeues_a_failure_at_its_place_under_a_new_id() {
    let mut queue = queue();
    push(&mut queue, "m1", ACCOUNT, MutationOp::Update, "a1", &[("name", "Mine")]);
    push(&mut queue, "m2", ACCOUNT, MutationOp::Update, "a2", &[("name", "y")]);
    queue.mark_sent("m1").unwrap();
    let current = Record { id: "a1".into(), fields: fields(&[("name", "Theirs")]), version: 12 };
    queue.mark_failed("m1", conflict(current)).unwrap();
    assert!(matches!(queue.retry("m2", "x".into()), Err(OutboxError::NotFailed(id)) if id == "m2"));
    assert!(matches!(queue.retry("nope", "x".into()), Err(OutboxError::UnknownMutation(_))));

    let position = queue.get("m1").unwrap().position;
    queue.retry("m1", "m1-again".into()).unwrap();
    assert!(queue.get("m1").is_none());
    let retried = queue.get("m1-again").unwrap();
    assert_eq!(retried.position, position);
    assert_eq!((retried.state, retried.sent, retried.failure.as_ref()), (MutationState::Pending, false, None));
    assert_eq!(retried.fields, fields(&[("name", "Mine")]));
    assert_eq!(retried.base_version, 12, "rebased on the conflict's current record");
    assert_eq!(sendable(&queue), ["m1-again", "m2"]);

    // A failure without a current record keeps its base version.
    queue
        .mark_failed(
            "m2",
            MutationFailure {
                op: MutationOp::Update,
                code: ErrorCode::NotFound,
                message: "gone".into(),
                current: None,
            },
        )
        .unwrap();
    queue.retry("m2", "m2-again".into()).unwrap();
    assert_eq!(queue.get("m2-again").unwrap().base_version, 0);
}

#[test]
fn discarding_a_create_drops_the_mutations_of_its_temporary_record() {
    let mut queue = queue();
    push(&mut queue, "create", ACCOUNT, MutationOp::Create, "tmp-1", &[("name", "Acme")]);
    push(&mut queue, "rename", ACCOUNT, MutationOp::Update, "tmp-1", &[("name", "Acme Inc")]);
    push(&mut queue, "contact", CONTACT, MutationOp::Create, "tmp-2", &[("account_id", "tmp-1")]);
    push(&mut queue, "other", ACCOUNT, MutationOp::Update, "a2", &[("name", "y")]);
    push(&mut queue, "drop", ACCOUNT, MutationOp::Delete, "tmp-1", &[]);
    assert!(matches!(queue.discard("create"), Err(OutboxError::NotFailed(_))));
    queue
        .mark_failed(
            "create",
            MutationFailure {
                op: MutationOp::Create,
                code: ErrorCode::BadRequest,
                message: "name taken".into(),
                current: None,
            },
        )
        .unwrap();
    let dropped = queue.discard("create").unwrap();
    assert_eq!(ids(&dropped), ["create", "rename", "drop"]);
    assert_eq!(ids(queue.mutations()), ["contact", "other"]);
    assert_eq!(
        queue.get("contact").unwrap().fields,
        fields(&[("account_id", "tmp-1")]),
        "references are the app's to fix"
    );
}

#[test]
fn discarding_an_update_drops_only_it() {
    let mut queue = queue();
    push(&mut queue, "m1", ACCOUNT, MutationOp::Update, "a1", &[("name", "x")]);
    push(&mut queue, "m2", ACCOUNT, MutationOp::Update, "a1", &[("name", "y")]);
    queue.mark_failed("m1", conflict(Record { id: "a1".into(), fields: BTreeMap::new(), version: 3 })).unwrap();
    assert_eq!(ids(&queue.discard("m1").unwrap()), ["m1"]);
    assert_eq!(ids(queue.mutations()), ["m2"]);
    assert_eq!(sendable(&queue), ["m2"]);
}

#[test]
fn mutations_apply_optimistically_in_order() {
    let mut records = BTreeMap::from([
        ("a1".to_owned(), Record { id: "a1".into(), fields: fields(&[("name", "A"), ("city", "Oslo")]), version: 4 }),
        ("a2".to_owned(), Record { id: "a2".into(), fields: fields(&[("name", "B")]), version: 5 }),
    ]);
    let mut queue = queue();
    push(&mut queue, "create", ACCOUNT, MutationOp::Create, "tmp-1", &[("name", "New")]);
    push(&mut queue, "update", ACCOUNT, MutationOp::Update, "a1", &[("name", "A2")]);
    push(&mut queue, "delete", ACCOUNT, MutationOp::Delete, "a2", &[]);
    push(&mut queue, "missing", ACCOUNT, MutationOp::Update, "a404", &[("name", "?")]);
    for mutation in queue.mutations() {
        apply_optimistically(&mut records, mutation);
    }
    assert_eq!(records.keys().collect::<Vec<_>>(), ["a1", "tmp-1"]);
    assert_eq!(records["a1"].fields, fields(&[("name", "A2"), ("city", "Oslo")]));
    assert_eq!(records["a1"].version, 4, "the version stays the server's");
    assert_eq!(records["tmp-1"], Record { id: "tmp-1".into(), fields: fields(&[("name", "New")]), version: 0 });

    // Once linked, the created record shows under the backend id.
    queue.apply_link(&link("tmp-1", "A-9"), None).unwrap();
    let mut records = BTreeMap::new();
    apply_optimistically(&mut records, &queue.mutations()[0]);
    assert_eq!(records.keys().collect::<Vec<_>>(), ["A-9"]);
}

#[test]
fn generated_ids_are_128_bit_hex() {
    let id = random_id();
    assert_eq!(id.len(), 32);
    assert!(id.chars().all(|digit| digit.is_ascii_hexdigit() && !digit.is_ascii_uppercase()));
    assert_ne!(id, random_id());
    let temp = temp_id();
    assert!(temp.starts_with(TEMP_ID_PREFIX) && temp.len() == TEMP_ID_PREFIX.len() + 32, "{temp}");
}
