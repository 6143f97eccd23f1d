//! The mutation flow driven with hand-built server frames.

use std::collections::BTreeMap;

use syncline_proto::{
    checksum::Checksum,
    v1::{
        Blob, Changes, ErrorCode, Link, MutationAck, MutationError, MutationOp, MutationResult, Record, ServerFrame,
        SourceInfo, Subscribe, SyncState, SyncStatus, Value, Welcome, client_frame, server_frame,
    },
};
use tokio::time::Instant;

use crate::{
    config::{DeviceConfig, SubscriptionConfig},
    engine::{Disconnect, SyncEngine},
    notification::{MutationOutcome, Notification},
    outbox::{DEFAULT_MAX_QUEUED_MUTATIONS, MutationQueue, MutationState, Resolution, Resolved},
    replica::PartitionId,
    state::DeviceState,
};

const ACCOUNT: &str = "Account";
const CONTACT: &str = "Contact";
const USER: &str = "u1";

fn config() -> DeviceConfig {
    DeviceConfig::new("ws://127.0.0.1:1/v1/sync", "alice", "secret")
        .subscribe(SubscriptionConfig::new(ACCOUNT))
        .subscribe(SubscriptionConfig::new(CONTACT))
        .with_notifications(64)
}

fn server(msg: server_frame::Msg) -> ServerFrame {
    ServerFrame { msg: Some(msg) }
}

fn welcome() -> ServerFrame {
    let source = |name: &str| SourceInfo { name: name.into(), partitioning: "user".into(), keys: vec![USER.into()] };
    server(server_frame::Msg::Welcome(Welcome {
        client_id: "c1".into(),
        session_token: "t1".into(),
        user_id: USER.into(),
        sources: vec![source(ACCOUNT), source(CONTACT)],
        ..Welcome::default()
    }))
}

fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, Value> {
    pairs.iter().map(|(name, text)| ((*name).to_owned(), Value::string(*text))).collect()
}

fn record(id: &str, version: u64, pairs: &[(&str, &str)]) -> Record {
    Record { id: id.to_owned(), fields: fields(pairs), version }
}

/// A whole partition in one snapshot page, then caught up.
fn sync_partition(engine: &mut SyncEngine, source: &str, to: u64, records: &[Record]) {
    let now = Instant::now();
    engine.on_frame(
        server(server_frame::Msg::Changes(Changes {
            source: source.into(),
            key: USER.into(),
            from: 0,
            to,
            upserts: records.to_vec(),
            page: 1,
            snapshot: true,
            reset: true,
            snapshot_done: true,
            ..Changes::default()
        })),
        now,
    );
    let mut checksum = Checksum::default();
    for record in records {
        checksum.add(&record.id, record.version);
    }
    engine.on_frame(
        server(server_frame::Msg::SyncState(SyncState {
            source: source.into(),
            key: USER.into(),
            status: SyncStatus::CaughtUp as i32,
            cursor: to,
            total: records.len() as u64,
            checksum: checksum.0,
            error: None,
        })),
        now,
    );
}

/// An engine caught up with Account {a1@1, a2@2} and Contact {c1@1}.
fn caught_up_engine() -> SyncEngine {
    let mut engine = SyncEngine::new(&config());
    engine.hello();
    engine.on_frame(welcome(), Instant::now());
    sync_partition(&mut engine, ACCOUNT, 2, &[record("a1", 1, &[("name", "A")]), record("a2", 2, &[("name", "B")])]);
    sync_partition(&mut engine, CONTACT, 1, &[record("c1", 1, &[("name", "Cy")])]);
    engine
}

fn live(source: &str, seq: u64, upserts: &[Record], links: &[Link]) -> ServerFrame {
    server(server_frame::Msg::Changes(Changes {
        source: source.into(),
        key: USER.into(),
        from: seq,
        to: seq,
        upserts: upserts.to_vec(),
        links: links.to_vec(),
        ..Changes::default()
    }))
}

fn ack(mutation_id: &str) -> ServerFrame {
    server(server_frame::Msg::MutationAck(MutationAck { mutation_id: mutation_id.into(), queued: 1 }))
}

fn ok(mutation_id: &str, record: Option<Record>, link: Option<Link>) -> ServerFrame {
    server(server_frame::Msg::MutationResult(MutationResult {
        mutation_id: mutation_id.into(),
        ok: true,
        record,
        link,
        error: None,
    }))
}

fn failed(mutation_id: &str, op: MutationOp, code: ErrorCode, current: Option<Record>) -> ServerFrame {
    server(server_frame::Msg::MutationResult(MutationResult {
        mutation_id: mutation_id.into(),
        ok: false,
        record: None,
        link: None,
        error: Some(MutationError { op: op as i32, code: code as i32, message: "refused".into(), current }),
    }))
}

fn link(temp_id: &str, id: &str) -> Link {
    Link { temp_id: temp_id.into(), id: id.into() }
}

/// What a frame list says, compactly: `mutate <id> <op> <record> base=<n>` or `subscribe <source>`.
fn describe(frames: &[syncline_proto::v1::ClientFrame]) -> Vec<String> {
    frames
        .iter()
        .map(|frame| match &frame.msg {
            Some(client_frame::Msg::Mutate(mutate)) => format!(
                "mutate {} {:?} {} base={}",
                mutate.mutation_id,
                MutationOp::try_from(mutate.op).unwrap(),
                mutate.id,
                mutate.base_version
            ),
            Some(client_frame::Msg::Subscribe(Subscribe { source, .. })) => format!("subscribe {source}"),
            other => format!("{other:?}"),
        })
        .collect()
}

fn mutate_fields(frames: &[syncline_proto::v1::ClientFrame], index: usize) -> BTreeMap<String, Value> {
    match &frames[index].msg {
        Some(client_frame::Msg::Mutate(mutate)) => mutate.fields.clone(),
        other => panic!("not a mutate: {other:?}"),
    }
}

fn outcomes(notifications: &[Notification]) -> Vec<(String, MutationOutcome)> {
    notifications
        .iter()
        .filter_map(|notification| match notification {
            Notification::Mutation(mutation) => Some((mutation.mutation_id.clone(), mutation.outcome.clone())),
            Notification::Sync(_) | Notification::Changed(_) | Notification::Bulk(_) => None,
        })
        .collect()
}

fn create_id(engine: &SyncEngine, temp_id: &str) -> String {
    engine.queued_mutations().into_iter().find(|mutation| mutation.id == temp_id).unwrap().mutation_id
}

fn records_of(engine: &SyncEngine, source: &str) -> BTreeMap<String, Record> {
    engine.view(&PartitionId::new(source, USER)).unwrap().records
}

fn published(engine: &SyncEngine) -> DeviceState {
    let mut state = DeviceState::default();
    engine.publish(&mut state);
    state
}

#[test]
fn offline_mutations_show_at_once_and_go_out_before_the_subscribes() {
    let mut engine = SyncEngine::new(&config());
    engine.hello();
    let temp = engine.create(ACCOUNT, Some(USER), fields(&[("name", "Acme")])).unwrap();
    assert!(temp.starts_with("tmp-"), "{temp}");
    let natural = engine.create(CONTACT, None, fields(&[("name", "Bo")])).unwrap();
    let delete = engine.delete(ACCOUNT, Some(USER), "a1").unwrap();
    assert!(engine.mutation_frames().is_empty(), "nothing goes out before Welcome");

    let account = engine.view(&PartitionId::new(ACCOUNT, USER)).expect("the create shows before any sync");
    assert_eq!(account.records.keys().collect::<Vec<_>>(), [&temp]);
    assert_eq!((account.total, account.cursor), (1, 0));
    assert_eq!(published(&engine).pending_mutations, 3);

    let reaction = engine.on_frame(welcome(), Instant::now());
    let create = create_id(&engine, &temp);
    let contact = create_id(&engine, &natural);
    assert_eq!(
        describe(&reaction.frames),
        [
            format!("mutate {create} Create {temp} base=0"),
            format!("mutate {contact} Create {natural} base=0"),
            format!("mutate {delete} Delete a1 base=0"),
            "subscribe Account".to_owned(),
            "subscribe Contact".to_owned(),
        ]
    );
    assert_eq!(mutate_fields(&reaction.frames, 0), fields(&[("name", "Acme")]));
    // The empty key means the natural key, which Welcome named.
    assert!(records_of(&engine, CONTACT).contains_key(&natural));
    assert!(engine.mutation_frames().is_empty(), "each goes out once per connection");
    let stats = engine.stats();
    assert_eq!((stats.mutations_sent, stats.mutations_resent), (3, 0));
    assert!(engine.queued_mutations().iter().all(|mutation| mutation.sent));
}

#[test]
fn optimistic_changes_leave_the_synced_replica_alone() {
    let mut engine = caught_up_engine();
    let synced = engine.synced_view(&PartitionId::new(ACCOUNT, USER)).unwrap();
    let temp = engine.create(ACCOUNT, None, fields(&[("name", "Acme")])).unwrap();
    engine.update(ACCOUNT, None, "a1", fields(&[("name", "A+")]), None).unwrap();
    engine.delete(ACCOUNT, None, "a2").unwrap();

    let view = engine.view(&PartitionId::new(ACCOUNT, USER)).unwrap();
    assert_eq!(view.records.keys().collect::<Vec<_>>(), ["a1", temp.as_str()]);
    assert_eq!(view.records["a1"], record("a1", 1, &[("name", "A+")]));
    assert_eq!(view.total, 2);
    assert_eq!(engine.synced_view(&PartitionId::new(ACCOUNT, USER)).unwrap(), synced);
    // A live push is verified against the replica only: no checksum mismatch.
    let a3 = record("a3", 3, &[("name", "C")]);
    engine.on_frame(live(ACCOUNT, 3, std::slice::from_ref(&a3), &[]), Instant::now());
    assert_eq!(engine.stats().checksum_mismatches, 0);
    assert!(records_of(&engine, ACCOUNT).contains_key("a3"));
}

#[test]
fn an_ok_result_links_the_create_and_releases_the_mutations_that_waited_for_it() {
    let mut engine = caught_up_engine();
    let temp = engine.create(ACCOUNT, None, fields(&[("name", "Acme")])).unwrap();
    let create = create_id(&engine, &temp);
    assert_eq!(describe(&engine.mutation_frames()), [format!("mutate {create} Create {temp} base=0")]);
    let rename = engine.update(ACCOUNT, None, &temp, fields(&[("name", "Acme Inc")]), None).unwrap();
    let contact_temp = engine.create(CONTACT, None, fields(&[("account_id", &temp), ("name", "Bo")])).unwrap();
    let contact = create_id(&engine, &contact_temp);
    assert!(engine.mutation_frames().is_empty(), "both name the temporary id: they wait for the link");
    assert_eq!(records_of(&engine, ACCOUNT)[&temp].fields, fields(&[("name", "Acme Inc")]));

    let reaction = engine.on_frame(ack(&create), Instant::now());
    assert_eq!(outcomes(&reaction.notifications), [(create.clone(), MutationOutcome::Queued)]);
    assert_eq!(engine.queued_mutations()[0].state, MutationState::Acked);
    assert!(engine.on_frame(ack(&create), Instant::now()).notifications.is_empty(), "queued is told once");
    assert_eq!(engine.stats().mutations_acked, 1);

    let created = record("A-9", 3, &[("name", "Acme")]);
    let reaction = engine.on_frame(ok(&create, Some(created.clone()), Some(link(&temp, "A-9"))), Instant::now());
    assert_eq!(
        outcomes(&reaction.notifications),
        [(create, MutationOutcome::Ok { record: Some(created), link: Some(link(&temp, "A-9")) })]
    );
    assert_eq!(
        describe(&reaction.frames),
        [format!("mutate {rename} Update A-9 base=3"), format!("mutate {contact} Create {contact_temp} base=0")]
    );
    assert_eq!(mutate_fields(&reaction.frames, 1), fields(&[("account_id", "A-9"), ("name", "Bo")]));
    let accounts = records_of(&engine, ACCOUNT);
    assert!(!accounts.contains_key(&temp), "renamed");
    assert_eq!(accounts["A-9"], record("A-9", 3, &[("name", "Acme Inc")]), "the result, with the queued update");
    assert_eq!(records_of(&engine, CONTACT)[&contact_temp].fields["account_id"], Value::string("A-9"));
    assert_eq!(engine.stats().mutations_succeeded, 1);

    // The log brings the authoritative record; the update's result and its page follow.
    engine.on_frame(live(ACCOUNT, 3, &[record("A-9", 3, &[("name", "Acme")])], &[]), Instant::now());
    assert_eq!(records_of(&engine, ACCOUNT)["A-9"].fields, fields(&[("name", "Acme Inc")]));
    let renamed = record("A-9", 4, &[("name", "Acme Inc")]);
    engine.on_frame(ok(&rename, Some(renamed.clone()), None), Instant::now());
    assert_eq!(records_of(&engine, ACCOUNT)["A-9"], renamed, "shown from the result before the log has it");
    engine.on_frame(live(ACCOUNT, 4, std::slice::from_ref(&renamed), &[]), Instant::now());
    assert_eq!(records_of(&engine, ACCOUNT)["A-9"], renamed);
    assert!(engine.confirmed.is_empty_for(&PartitionId::new(ACCOUNT, USER)), "the log caught up");
    assert_eq!(published(&engine).pending_mutations, 1, "the contact create");
}

#[test]
fn a_link_in_a_page_renames_the_create_before_its_result() {
    let mut engine = caught_up_engine();
    let temp = engine.create(ACCOUNT, None, fields(&[("name", "Acme")])).unwrap();
    let create = create_id(&engine, &temp);
    engine.mutation_frames();
    let drop = engine.delete(ACCOUNT, None, &temp).unwrap();

    let created = record("A-9", 3, &[("name", "Acme")]);
    let reaction =
        engine.on_frame(live(ACCOUNT, 3, std::slice::from_ref(&created), &[link(&temp, "A-9")]), Instant::now());
    assert_eq!(describe(&reaction.frames), [format!("mutate {drop} Delete A-9 base=3")]);
    // The delete is queued over the linked create: nothing shows, and no temporary twin.
    assert!(records_of(&engine, ACCOUNT).keys().all(|id| id == "a1" || id == "a2"));

    // The result repeats the link: nothing changes twice.
    let reaction = engine.on_frame(ok(&create, Some(created), Some(link(&temp, "A-9"))), Instant::now());
    assert!(reaction.frames.is_empty());
    assert_eq!(engine.queued_mutations().len(), 1);
    // The app may still name the record by its temporary id while the create is queued.
    let mut engine = caught_up_engine();
    let temp = engine.create(ACCOUNT, None, fields(&[("name", "Acme")])).unwrap();
    engine.on_frame(live(ACCOUNT, 3, &[record("A-9", 3, &[])], &[link(&temp, "A-9")]), Instant::now());
    engine.update(ACCOUNT, None, &temp, fields(&[("name", "x")]), None).unwrap();
    assert_eq!(engine.queued_mutations()[1].id, "A-9");
    assert_eq!(engine.queued_mutations()[1].base_version, 3);
}

#[test]
fn an_error_holds_back_its_source_until_the_app_discards_it_which_restores_the_conflicts_record() {
    let mut engine = caught_up_engine();
    let mine = engine.update(ACCOUNT, None, "a1", fields(&[("name", "Mine")]), None).unwrap();
    assert_eq!(describe(&engine.mutation_frames()), [format!("mutate {mine} Update a1 base=1")]);

    let theirs = record("a1", 5, &[("name", "Theirs")]);
    let reaction =
        engine.on_frame(failed(&mine, MutationOp::Update, ErrorCode::Conflict, Some(theirs.clone())), Instant::now());
    assert_eq!(
        outcomes(&reaction.notifications),
        [(
            mine.clone(),
            MutationOutcome::Error {
                code: ErrorCode::Conflict,
                message: "refused".into(),
                current: Some(theirs.clone())
            }
        )]
    );
    let state = published(&engine);
    assert_eq!((state.pending_mutations, state.failed_mutations), (0, 1));
    assert_eq!(engine.stats().mutations_failed, 1);
    let failure = engine.queued_mutations()[0].failure.clone().unwrap();
    assert_eq!(
        (failure.op, failure.code, failure.current),
        (MutationOp::Update, ErrorCode::Conflict, Some(theirs.clone()))
    );
    assert_eq!(records_of(&engine, ACCOUNT)["a1"].fields, fields(&[("name", "Mine")]), "kept until the app decides");

    let waiting = engine.update(ACCOUNT, None, "a2", fields(&[("name", "B+")]), None).unwrap();
    let other_source = engine.update(CONTACT, None, "c1", fields(&[("name", "Cy+")]), None).unwrap();
    assert_eq!(describe(&engine.mutation_frames()), [format!("mutate {other_source} Update c1 base=1")]);

    let resolved = engine.resolve(&mine, Resolution::Discard).unwrap();
    assert_eq!(resolved, Resolved::Discarded { mutation_ids: vec![mine] });
    assert_eq!(records_of(&engine, ACCOUNT)["a1"], theirs, "rolled back to the conflict's current record");
    assert_eq!(describe(&engine.mutation_frames()), [format!("mutate {waiting} Update a2 base=2")]);
}

#[test]
fn a_retried_failure_goes_again_under_a_new_id_before_what_waited_behind_it() {
    let mut engine = caught_up_engine();
    let mine = engine.update(ACCOUNT, None, "a1", fields(&[("name", "Mine")]), None).unwrap();
    engine.mutation_frames();
    let theirs = record("a1", 5, &[("name", "Theirs")]);
    engine.on_frame(failed(&mine, MutationOp::Update, ErrorCode::Conflict, Some(theirs)), Instant::now());
    let waiting = engine.update(ACCOUNT, None, "a2", fields(&[("name", "B+")]), None).unwrap();
    assert!(engine.mutation_frames().is_empty());
    assert!(engine.resolve(&waiting, Resolution::Retry).is_err(), "only failures are resolved");

    let Resolved::Retried { mutation_id: again } = engine.resolve(&mine, Resolution::Retry).unwrap() else {
        panic!("not retried");
    };
    assert_ne!(again, mine);
    let frames = engine.mutation_frames();
    assert_eq!(
        describe(&frames),
        [format!("mutate {again} Update a1 base=5"), format!("mutate {waiting} Update a2 base=2")]
    );
    assert_eq!(mutate_fields(&frames, 0), fields(&[("name", "Mine")]));
    // A late answer to the old id concerns nothing queued.
    engine.on_frame(ok(&mine, None, None), Instant::now());
    assert_eq!(engine.stats().unexpected_frames, 1);
}

#[test]
fn a_failed_mutation_an_operator_retried_successfully_completes_and_releases_what_waited() {
    let mut engine = caught_up_engine();
    let mine = engine.update(ACCOUNT, None, "a1", fields(&[("name", "Mine")]), None).unwrap();
    engine.mutation_frames();
    engine.on_frame(failed(&mine, MutationOp::Update, ErrorCode::Conflict, None), Instant::now());
    let waiting = engine.update(ACCOUNT, None, "a2", fields(&[("name", "B+")]), None).unwrap();
    assert!(engine.mutation_frames().is_empty(), "held behind the failure");
    // A resend's second refusal changes nothing.
    engine.on_frame(failed(&mine, MutationOp::Update, ErrorCode::Conflict, None), Instant::now());
    assert_eq!(published(&engine).failed_mutations, 1);

    let reaction = engine.on_frame(ok(&mine, Some(record("a1", 7, &[("name", "Mine")])), None), Instant::now());
    assert_eq!(published(&engine).failed_mutations, 0);
    assert_eq!(records_of(&engine, ACCOUNT)["a1"].fields, fields(&[("name", "Mine")]));
    assert_eq!(describe(&reaction.frames), [format!("mutate {waiting} Update a2 base=2")]);
    assert!(engine.resolve(&mine, Resolution::Retry).is_err(), "nothing left to resolve");
}

#[test]
fn discarding_a_failed_create_or_update_rolls_the_local_change_back() {
    let mut engine = caught_up_engine();
    let temp = engine.create(ACCOUNT, None, fields(&[("name", "Acme")])).unwrap();
    let create = create_id(&engine, &temp);
    let rename = engine.update(ACCOUNT, None, &temp, fields(&[("name", "Acme Inc")]), None).unwrap();
    engine.mutation_frames();
    engine.on_frame(failed(&create, MutationOp::Create, ErrorCode::BadRequest, None), Instant::now());
    assert!(records_of(&engine, ACCOUNT).contains_key(&temp));
    let resolved = engine.resolve(&create, Resolution::Discard).unwrap();
    assert_eq!(resolved, Resolved::Discarded { mutation_ids: vec![create, rename] });
    assert!(!records_of(&engine, ACCOUNT).contains_key(&temp));

    let gone = engine.update(ACCOUNT, None, "a2", fields(&[("name", "B+")]), None).unwrap();
    engine.mutation_frames();
    assert_eq!(records_of(&engine, ACCOUNT)["a2"].fields, fields(&[("name", "B+")]));
    engine.on_frame(failed(&gone, MutationOp::Update, ErrorCode::NotFound, None), Instant::now());
    engine.resolve(&gone, Resolution::Discard).unwrap();
    assert_eq!(records_of(&engine, ACCOUNT)["a2"], record("a2", 2, &[("name", "B")]), "the server's version");
    assert_eq!(published(&engine).failed_mutations, 0);
}

#[test]
fn after_a_reconnect_exactly_the_unresolved_mutations_are_resent_in_order() {
    let mut engine = caught_up_engine();
    let acked = engine.update(ACCOUNT, None, "a1", fields(&[("name", "1")]), None).unwrap();
    let done = engine.update(CONTACT, None, "c1", fields(&[("name", "2")]), None).unwrap();
    let refused = engine.update(ACCOUNT, None, "a2", fields(&[("name", "3")]), None).unwrap();
    let unanswered = engine.delete(ACCOUNT, None, "a2").unwrap();
    assert_eq!(engine.mutation_frames().len(), 4);
    engine.on_frame(ack(&acked), Instant::now());
    engine.on_frame(ok(&done, Some(record("c1", 2, &[("name", "2")])), None), Instant::now());
    engine.on_frame(failed(&refused, MutationOp::Update, ErrorCode::Conflict, None), Instant::now());

    engine.on_disconnect(&Disconnect::Lost);
    let offline = engine.update(CONTACT, None, "c1", fields(&[("name", "4")]), None).unwrap();
    assert!(engine.mutation_frames().is_empty(), "offline");
    engine.hello();
    let reaction = engine.on_frame(welcome(), Instant::now());
    assert_eq!(
        describe(&reaction.frames),
        [
            format!("mutate {acked} Update a1 base=1"),
            // Sent before the failure was known: only a resend tells its outcome.
            format!("mutate {unanswered} Delete a2 base=2"),
            format!("mutate {offline} Update c1 base=2"),
            "subscribe Account".to_owned(),
            "subscribe Contact".to_owned(),
        ]
    );
    let stats = engine.stats();
    assert_eq!((stats.mutations_sent, stats.mutations_resent), (7, 2));
    // The server answers the resends from its records.
    assert!(engine.on_frame(ack(&acked), Instant::now()).notifications.is_empty(), "already told");
    engine.on_frame(ok(&acked, Some(record("a1", 3, &[("name", "1")])), None), Instant::now());
    let left: Vec<String> = engine.queued_mutations().into_iter().map(|mutation| mutation.mutation_id).collect();
    assert_eq!(left, [refused, unanswered, offline]);
}

#[test]
fn a_device_restarted_on_its_store_resends_what_it_had_not_finished() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mutations.sqlite");
    let open = || MutationQueue::open(Some(&path), DEFAULT_MAX_QUEUED_MUTATIONS).unwrap();
    let (temp, create, never_sent) = {
        let mut engine = SyncEngine::with_queue(&config(), open());
        engine.hello();
        engine.on_frame(welcome(), Instant::now());
        let temp = engine.create(ACCOUNT, None, fields(&[("name", "Acme")])).unwrap();
        engine.mutation_frames();
        let never_sent = engine.update(ACCOUNT, None, &temp, fields(&[("name", "Acme Inc")]), None).unwrap();
        (temp.clone(), create_id(&engine, &temp), never_sent)
    };
    let mut engine = SyncEngine::with_queue(&config(), open());
    engine.hello();
    let reaction = engine.on_frame(welcome(), Instant::now());
    assert_eq!(
        describe(&reaction.frames),
        [
            format!("mutate {create} Create {temp} base=0"),
            "subscribe Account".to_owned(),
            "subscribe Contact".to_owned()
        ],
        "the update still waits for the link"
    );
    assert_eq!(engine.stats().mutations_resent, 1);
    let reaction = engine.on_frame(ok(&create, None, Some(link(&temp, "A-9"))), Instant::now());
    assert_eq!(describe(&reaction.frames), [format!("mutate {never_sent} Update A-9 base=0")]);
    assert_eq!(records_of(&engine, ACCOUNT)["A-9"].fields, fields(&[("name", "Acme Inc")]));
}

#[test]
fn a_wipe_drops_the_queue() {
    let mut engine = caught_up_engine();
    engine.create(ACCOUNT, None, fields(&[("name", "Acme")])).unwrap();
    engine.on_frame(
        server(server_frame::Msg::Command(syncline_proto::v1::Command {
            kind: syncline_proto::v1::CommandKind::Wipe as i32,
            reason: "lost phone".into(),
            command_id: "w1".into(),
        })),
        Instant::now(),
    );
    assert!(engine.queued_mutations().is_empty());
}

#[test]
fn invalid_mutations_are_refused() {
    let mut engine = caught_up_engine();
    assert!(engine.create("", None, BTreeMap::new()).is_err());
    assert!(engine.update(ACCOUNT, None, "", BTreeMap::new(), None).is_err());
    assert!(engine.queued_mutations().is_empty());
}

/// Issue 18: a mutation referencing a blob waits (with its source) until the blob is
/// uploaded; the server refusing it for a blob it lacks keeps it queued for another upload;
/// a blob refused for good fails it, kept for the app to resolve, the record still shown.
#[test]
fn a_mutation_waits_for_its_blob_and_a_refused_blob_fails_it_without_losing_it() {
    let mut engine = caught_up_engine();
    let blob = Blob { hash: "ab".repeat(32), size: 3, media_type: "image/png".into(), name: String::new() };
    let temp = engine.create(ACCOUNT, Some(USER), BTreeMap::from([("photo".to_owned(), Value::blob(blob.clone()))]));
    let temp = temp.unwrap();
    engine.create(ACCOUNT, Some(USER), fields(&[("name", "after")])).unwrap();
    engine.create(CONTACT, Some(USER), fields(&[("name", "other source")])).unwrap();
    let frames = engine.mutation_frames();
    assert_eq!(frames.len(), 1, "{:?}", describe(&frames));
    assert_eq!(mutate_fields(&frames, 0)["name"], Value::string("other source"), "another source goes on");
    assert_eq!(engine.blobs_to_upload(), vec![blob.clone()]);
    assert_eq!(engine.blob_token(), Some("t1"));

    let frames = engine.on_blob_uploaded(&blob.hash);
    assert_eq!(frames.len(), 2, "{:?}", describe(&frames));
    assert!(mutate_fields(&frames, 0).contains_key("photo"), "in order: the blob's mutation first");
    assert!(engine.blobs_to_upload().is_empty());

    // The server lacks the blob after all: not an outcome; uploaded again, then resent.
    let mutation_id = create_id(&engine, &temp);
    let reaction =
        engine.on_frame(failed(&mutation_id, MutationOp::Create, ErrorCode::Unavailable, None), Instant::now());
    assert!(outcomes(&reaction.notifications).is_empty(), "{:?}", reaction.notifications);
    let kept = engine.queued_mutations().into_iter().find(|mutation| mutation.id == temp).unwrap();
    assert_ne!(kept.state, MutationState::Failed);
    assert_eq!(engine.blobs_to_upload(), vec![blob.clone()]);
    assert!(engine.mutation_frames().is_empty(), "held back until uploaded again");

    // Refused for good (too large): the mutation fails, stays queued, the record stays shown.
    let reaction = engine.on_blob_refused(&blob.hash, ErrorCode::ResourceExhausted, "too large");
    let outcomes = outcomes(&reaction.notifications);
    assert!(
        matches!(&outcomes[..], [(id, MutationOutcome::Error { code: ErrorCode::ResourceExhausted, .. })] if *id == mutation_id),
        "{outcomes:?}"
    );
    let kept = engine.queued_mutations().into_iter().find(|mutation| mutation.id == temp).unwrap();
    assert_eq!(kept.state, MutationState::Failed);
    assert!(records_of(&engine, ACCOUNT).contains_key(&temp), "the record is not lost");
    assert!(engine.blobs_to_upload().is_empty(), "a failed mutation's blob waits for the app");
}
