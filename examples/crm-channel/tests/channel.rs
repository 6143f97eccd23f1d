//! Drives the CRM channel over real gRPC with the generated `ChannelClient`.

use std::collections::BTreeMap;
use std::time::Duration;

use syncline_example_crm::{DEMO_USER, RunningCrmChannel};
use syncline_proto::sdk::{ChannelError, WriteOutcome};
use syncline_proto::v1::channel_client::ChannelClient;
use syncline_proto::v1::{
    AuthenticateRequest, Caller, ChangeBatch, DescribeRequest, PartitionKey, QueryRequest, Record, SearchRequest,
    Value, WatchRequest, WriteRequest,
};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

/// Bounds every wait for the channel; generous because CI machines are slow, and only ever
/// reached when a test fails.
const TIMEOUT: Duration = Duration::from_secs(10);

struct TestCrm {
    client: ChannelClient<Channel>,
    channel: RunningCrmChannel,
    stop: oneshot::Sender<()>,
    dir: TempDir,
}

impl TestCrm {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (stop, stopped) = oneshot::channel::<()>();
        let channel = syncline_example_crm::start(dir.path().join("crm.db"), listener, async move {
            stopped.await.unwrap_or(());
        })
        .await
        .expect("start");
        let endpoint = Endpoint::from_shared(format!("http://{}", channel.local_addr())).expect("endpoint");
        let connection = tokio::time::timeout(TIMEOUT, endpoint.connect()).await.expect("in time").expect("connect");
        Self { client: ChannelClient::new(connection), channel, stop, dir }
    }

    /// Opens a connection of its own on the database file, as another process would.
    fn other_writer(&self) -> rusqlite::Connection {
        let connection = rusqlite::Connection::open(self.dir.path().join("crm.db")).expect("open");
        connection.busy_timeout(TIMEOUT).expect("busy timeout");
        connection
    }

    async fn create(&mut self, source: &str, key: &str, fields: BTreeMap<String, Value>) -> Record {
        let request = write(source, key, Record { id: "tmp-1".into(), fields, version: 0 }, 0);
        match outcome(self.client.create(request).await) {
            Ok(WriteOutcome::Written(record)) => record,
            other => panic!("create failed: {other:?}"),
        }
    }

    async fn query(&mut self, source: &str, key: &str) -> Vec<Record> {
        let request = QueryRequest { partition: Some(partition(source, key)) };
        let mut records = self.client.query(request).await.expect("query").into_inner();
        let mut all = Vec::new();
        while let Some(record) = tokio::time::timeout(TIMEOUT, records.message()).await.expect("in time").expect("ok") {
            all.push(record);
        }
        all
    }
}

fn partition(source: &str, key: &str) -> PartitionKey {
    PartitionKey { source: source.into(), key: key.into() }
}

fn write(source: &str, key: &str, record: Record, base_version: u64) -> WriteRequest {
    WriteRequest {
        partition: Some(partition(source, key)),
        record: Some(record),
        base_version,
        caller: Some(Caller { user_id: if key == "*" { "alice".into() } else { key.into() }, client_id: "c1".into() }),
        ..WriteRequest::default()
    }
}

fn fields<const N: usize>(pairs: [(&str, Value); N]) -> BTreeMap<String, Value> {
    pairs.into_iter().map(|(name, value)| (name.to_owned(), value)).collect()
}

fn outcome(
    response: Result<tonic::Response<syncline_proto::v1::WriteResponse>, tonic::Status>,
) -> Result<WriteOutcome, ChannelError> {
    WriteOutcome::try_from(response.map_err(ChannelError::from)?.into_inner())
}

fn typed_account(name: &str) -> BTreeMap<String, Value> {
    fields([
        ("name", Value::string(name)),
        ("industry", Value::null()),
        ("employees", Value::int(1_200)),
        ("annual_revenue", Value::double(3.25e7)),
        ("active", Value::bool(true)),
        ("logo", Value::bytes(vec![0x89, b'P', b'N', b'G', 0])),
    ])
}

/// Returns the next batch that has changes, skipping checkpoints, or fails after [`TIMEOUT`].
async fn next_changes(batches: &mut tonic::Streaming<ChangeBatch>) -> ChangeBatch {
    loop {
        let batch = tokio::time::timeout(TIMEOUT, batches.message())
            .await
            .expect("a batch in time")
            .expect("stream ok")
            .expect("stream open");
        if !batch.partitions.is_empty() {
            return batch;
        }
    }
}

/// Returns (source, key, upserted ids, deleted ids) of each partition of a batch.
fn summary(batch: &ChangeBatch) -> Vec<(String, String, Vec<String>, Vec<String>)> {
    batch
        .partitions
        .iter()
        .map(|changes| {
            let partition = changes.partition.clone().unwrap_or_default();
            let upserts = changes.upserts.iter().map(|record| record.id.clone()).collect();
            (partition.source, partition.key, upserts, changes.deletes.clone())
        })
        .collect()
}

fn upserted(source: &str, key: &str, ids: &[&str]) -> Vec<(String, String, Vec<String>, Vec<String>)> {
    vec![(source.into(), key.into(), ids.iter().map(|id| (*id).to_owned()).collect(), vec![])]
}

#[tokio::test]
async fn describe_lists_both_sources_with_typed_fields() {
    let mut crm = TestCrm::start().await;
    let sources = crm.client.describe(DescribeRequest {}).await.expect("describe").into_inner().sources;
    let names: Vec<_> = sources.iter().map(|source| (source.name.as_str(), source.partitioning.as_str())).collect();
    assert_eq!(names, [("Account", "app"), ("Contact", "user")]);
    let account = &sources[0];
    assert!(account.capabilities.contains(&"watch".to_owned()));
    let types: BTreeMap<_, _> =
        account.fields.iter().map(|field| (field.name.as_str(), (field.r#type.as_str(), field.required))).collect();
    assert_eq!(types["name"], ("string", true));
    assert_eq!(types["employees"], ("int", false));
    assert_eq!(types["annual_revenue"], ("double", false));
    assert_eq!(types["active"], ("bool", false));
    assert_eq!(types["logo"], ("bytes", false));
}

#[tokio::test]
async fn crud_round_trips_typed_values() {
    let mut crm = TestCrm::start().await;
    let created = crm.create("Account", "*", typed_account("Acme")).await;
    assert_eq!(created.id, "acc-1");
    assert_eq!(created.version, 1);
    assert_eq!(created.fields, typed_account("Acme"));
    assert_eq!(crm.query("Account", "*").await, std::slice::from_ref(&created));

    let change = Record { id: created.id.clone(), fields: fields([("employees", Value::int(-7))]), version: 0 };
    let updated = match outcome(crm.client.update(write("Account", "*", change, 1)).await) {
        Ok(WriteOutcome::Written(record)) => record,
        other => panic!("update failed: {other:?}"),
    };
    let mut expected = typed_account("Acme");
    expected.insert("employees".into(), Value::int(-7));
    assert_eq!((updated.version, &updated.fields), (2, &expected));
    assert_eq!(crm.query("Account", "*").await, std::slice::from_ref(&updated));

    let second = crm.create("Account", "*", fields([("name", Value::string("Globex"))])).await;
    assert_eq!(second.id, "acc-2");
    assert_eq!(second.fields["active"], Value::null(), "unset fields read back as null");

    let gone = Record { id: created.id.clone(), ..Record::default() };
    let deleted = outcome(crm.client.delete(write("Account", "*", gone.clone(), 0)).await).expect("delete");
    assert!(matches!(deleted, WriteOutcome::Written(record) if record.id == "acc-1"));
    assert_eq!(crm.query("Account", "*").await, [second]);
    let again = outcome(crm.client.delete(write("Account", "*", gone, 0)).await).expect("delete is idempotent");
    assert!(matches!(again, WriteOutcome::Written(record) if record.id == "acc-1"));

    let contact =
        crm.create("Contact", "alice", fields([("name", Value::string("Bob")), ("vip", Value::bool(false))])).await;
    assert_eq!(contact.id, "con-1");
    assert_eq!(crm.query("Contact", "alice").await, [contact]);
    assert!(crm.query("Contact", "carol").await.is_empty());
}

#[tokio::test]
async fn bad_writes_fail_with_typed_errors() {
    let mut crm = TestCrm::start().await;
    let wrong_type = Record {
        fields: fields([("name", Value::string("A")), ("employees", Value::double(1.5))]),
        ..Record::default()
    };
    let error = outcome(crm.client.create(write("Account", "*", wrong_type, 0)).await).expect_err("refused");
    assert!(matches!(error, ChannelError::InvalidArgument(message) if message.contains("employees")));

    let missing_name = Record { fields: fields([("industry", Value::string("Retail"))]), ..Record::default() };
    let error = outcome(crm.client.create(write("Account", "*", missing_name, 0)).await).expect_err("refused");
    assert!(matches!(error, ChannelError::InvalidArgument(message) if message.contains("name")));

    let unknown =
        Record { fields: fields([("name", Value::string("A")), ("colour", Value::int(1))]), ..Record::default() };
    let error = outcome(crm.client.create(write("Account", "*", unknown, 0)).await).expect_err("refused");
    assert!(matches!(error, ChannelError::InvalidArgument(_)));

    let error = outcome(crm.client.create(write("Account", "alice", Record::default(), 0)).await).expect_err("refused");
    assert!(matches!(error, ChannelError::InvalidArgument(message) if message.contains("app-partitioned")));

    let error = outcome(crm.client.create(write("Lead", "*", Record::default(), 0)).await).expect_err("refused");
    assert!(matches!(error, ChannelError::InvalidArgument(message) if message.contains("unknown source")));

    let missing = Record { id: "acc-99".into(), fields: fields([("name", Value::string("X"))]), version: 0 };
    let error = outcome(crm.client.update(write("Account", "*", missing, 0)).await).expect_err("refused");
    assert!(matches!(error, ChannelError::NotFound(_)));

    let mut someone_elses =
        write("Contact", "bob", Record { fields: fields([("name", Value::string("X"))]), ..Record::default() }, 0);
    someone_elses.caller = Some(Caller { user_id: "alice".into(), client_id: "c1".into() });
    let error = outcome(crm.client.create(someone_elses).await).expect_err("refused");
    assert!(matches!(error, ChannelError::PermissionDenied(_)));
}

#[tokio::test]
async fn a_stale_base_version_returns_the_current_record_as_a_conflict() {
    let mut crm = TestCrm::start().await;
    let created = crm.create("Account", "*", typed_account("Acme")).await;
    let rename =
        |name: &str| Record { id: created.id.clone(), fields: fields([("name", Value::string(name))]), version: 0 };

    let first = outcome(crm.client.update(write("Account", "*", rename("Acme Corp"), 1)).await).expect("update");
    let current = match first {
        WriteOutcome::Written(record) => record,
        WriteOutcome::Conflict(record) => panic!("unexpected conflict with {record:?}"),
    };
    assert_eq!(current.version, 2);

    let stale = outcome(crm.client.update(write("Account", "*", rename("Acme Inc"), 1)).await).expect("answered");
    assert_eq!(stale, WriteOutcome::Conflict(current.clone()));
    assert_eq!(crm.query("Account", "*").await, std::slice::from_ref(&current), "a conflicting update writes nothing");

    let stale_delete = Record { id: created.id.clone(), ..Record::default() };
    let refused = outcome(crm.client.delete(write("Account", "*", stale_delete, 1)).await).expect("answered");
    assert_eq!(refused, WriteOutcome::Conflict(current.clone()));

    let unconditional = outcome(crm.client.update(write("Account", "*", rename("Acme Inc"), 0)).await).expect("update");
    assert!(matches!(unconditional, WriteOutcome::Written(record) if record.version == 3));
}

#[tokio::test]
async fn a_repeated_create_mutation_returns_the_first_record() {
    let mut crm = TestCrm::start().await;
    let mut request = write("Account", "*", Record { fields: typed_account("Acme"), ..Record::default() }, 0);
    request.mutation_id = "m-1".into();
    let first = outcome(crm.client.create(request.clone()).await).expect("create");
    let second = outcome(crm.client.create(request).await).expect("repeat");
    assert_eq!(first, second);
    assert_eq!(crm.query("Account", "*").await.len(), 1);
}

#[tokio::test]
async fn search_matches_names_with_offset_limit_and_total() {
    let mut crm = TestCrm::start().await;
    for name in ["Acme West", "Globex", "acme east", "Acme North", "Initech"] {
        crm.create("Account", "*", fields([("name", Value::string(name))])).await;
    }
    let search = |offset, limit| SearchRequest {
        source: "Account".into(),
        params: fields([("name", Value::string("ACME"))]).into_iter().collect(),
        offset,
        limit,
        caller: Some(Caller { user_id: "alice".into(), client_id: "c1".into() }),
    };
    let page = crm.client.search(search(0, 2)).await.expect("search").into_inner();
    assert_eq!(page.total, 3);
    let names: Vec<_> = page.records.iter().map(|record| record.fields["name"].clone()).collect();
    assert_eq!(names, [Value::string("Acme North"), Value::string("Acme West")]);
    assert_eq!(page.partition, Some(partition("Account", "*")));
    let rest = crm.client.search(search(2, 2)).await.expect("search").into_inner();
    assert_eq!((rest.total, rest.records.len()), (3, 1));
    assert_eq!(rest.records[0].fields["name"], Value::string("acme east"));

    crm.create("Contact", "alice", fields([("name", Value::string("Acme buyer"))])).await;
    crm.create("Contact", "bob", fields([("name", Value::string("Acme seller"))])).await;
    let mut contacts = search(0, 0);
    contacts.source = "Contact".into();
    let mine = crm.client.search(contacts.clone()).await.expect("search").into_inner();
    assert_eq!(mine.total, 1, "only the caller's contacts");
    assert_eq!(mine.partition, Some(partition("Contact", "alice")));

    contacts.caller = None;
    let status = crm.client.search(contacts).await.expect_err("needs a caller");
    assert_eq!(status.code(), Code::InvalidArgument);
    let mut unknown = search(0, 0);
    unknown.params.insert("industry".into(), Value::string("Retail"));
    assert_eq!(crm.client.search(unknown).await.expect_err("unknown param").code(), Code::InvalidArgument);
}

#[tokio::test]
async fn authenticate_accepts_the_right_password_only() {
    let mut crm = TestCrm::start().await;
    crm.channel.db().seed(3).await.expect("seed");
    let login =
        |username: &str, password: &str| AuthenticateRequest { username: username.into(), password: password.into() };
    let ok = crm.client.authenticate(login(DEMO_USER, "demo")).await.expect("answered").into_inner();
    assert!(ok.ok);
    assert_eq!(ok.user_id, DEMO_USER);
    assert!(ok.entitlements.is_empty());
    let bad = crm.client.authenticate(login(DEMO_USER, "wrong")).await.expect("answered").into_inner();
    assert!(!bad.ok);
    assert!(bad.user_id.is_empty());
    assert!(!bad.message.is_empty());
    let unknown = crm.client.authenticate(login("mallory", "demo")).await.expect("answered").into_inner();
    assert!(!unknown.ok);
    assert_eq!(crm.query("Account", "*").await.len(), 3, "seeded accounts");
}

#[tokio::test]
async fn query_streams_every_record_across_pages() {
    let mut crm = TestCrm::start().await;
    crm.channel.db().seed(600).await.expect("seed");
    let records = crm.query("Account", "*").await;
    let ids: std::collections::BTreeSet<_> = records.iter().map(|record| record.id.clone()).collect();
    assert_eq!((records.len(), ids.len()), (600, 600));
    let status =
        crm.client.query(QueryRequest { partition: Some(partition("Account", "bob")) }).await.expect_err("bad key");
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn watch_from_no_token_streams_api_and_direct_sql_writes_in_order() {
    let mut crm = TestCrm::start().await;
    let before = crm.create("Account", "*", fields([("name", Value::string("Before"))])).await;
    let mut batches = crm.client.watch(WatchRequest::default()).await.expect("watch").into_inner();
    let checkpoint =
        tokio::time::timeout(TIMEOUT, batches.message()).await.expect("in time").expect("ok").expect("open");
    assert!(checkpoint.partitions.is_empty());
    assert_eq!(checkpoint.resume_token, 1u64.to_be_bytes(), "positioned after the earlier create");

    let through_api = crm.create("Account", "*", typed_account("Through API")).await;
    let other = crm.other_writer();
    other
        .execute("INSERT INTO accounts (id, name, employees, active) VALUES ('ext-1', 'Through SQL', 5, 1)", [])
        .expect("insert");

    let mut received = Vec::new();
    while received.len() < 2 {
        received.extend(next_changes(&mut batches).await.partitions.into_iter().flat_map(|changes| changes.upserts));
    }
    let ids: Vec<_> = received.iter().map(|record| record.id.as_str()).collect();
    assert_eq!(ids, ["acc-2", "ext-1"]);
    assert_eq!(received[0], through_api);
    assert_eq!(received[1].fields["name"], Value::string("Through SQL"));
    assert_ne!(before.id, through_api.id);

    // Another process updates without touching `version`: the trigger bumps it.
    other.execute("UPDATE accounts SET employees = 6 WHERE id = 'ext-1'", []).expect("update");
    let updated = next_changes(&mut batches).await;
    let record = &updated.partitions[0].upserts[0];
    assert_eq!((record.id.as_str(), record.version), ("ext-1", 2));
    assert_eq!(record.fields["employees"], Value::int(6));
    assert_eq!(record.fields["active"], Value::bool(true));

    other.execute("DELETE FROM accounts WHERE id = 'ext-1'", []).expect("delete");
    let deleted = next_changes(&mut batches).await;
    assert_eq!(summary(&deleted), [("Account".into(), "*".into(), vec![], vec!["ext-1".to_owned()])]);
    assert_eq!(deleted.resume_token, 5u64.to_be_bytes(), "one change per write");
}

fn upserted_ids(batch: &ChangeBatch) -> Vec<String> {
    batch.partitions.iter().flat_map(|changes| changes.upserts.iter().map(|record| record.id.clone())).collect()
}

#[tokio::test]
async fn watch_resumed_from_a_token_replays_exactly_what_came_after_it() {
    let mut crm = TestCrm::start().await;
    let mut batches = crm.client.watch(WatchRequest::default()).await.expect("watch").into_inner();
    let mut tokens = Vec::new();
    for name in ["One", "Two", "Three"] {
        let record = crm.create("Account", "*", fields([("name", Value::string(name))])).await;
        let batch = next_changes(&mut batches).await;
        assert_eq!(summary(&batch), upserted("Account", "*", &[&record.id]));
        tokens.push(batch.resume_token);
    }
    drop(batches);

    let resume = WatchRequest { sources: vec![], resume_token: tokens[0].clone() };
    let mut replay = crm.client.watch(resume).await.expect("watch").into_inner();
    let mut replayed = Vec::new();
    while replayed.len() < 2 {
        let batch = next_changes(&mut replay).await;
        replayed.extend(upserted_ids(&batch));
    }
    assert_eq!(replayed, ["acc-2", "acc-3"]);
    // Nothing else is pending: the next batch is the next write.
    crm.create("Contact", "alice", fields([("name", Value::string("Four"))])).await;
    assert_eq!(summary(&next_changes(&mut replay).await), upserted("Contact", "alice", &["con-1"]));

    // Resuming from the last token of the first watch starts at that same write.
    let resume = WatchRequest { sources: vec![], resume_token: tokens[2].clone() };
    let mut tail = crm.client.watch(resume).await.expect("watch").into_inner();
    assert_eq!(summary(&next_changes(&mut tail).await), upserted("Contact", "alice", &["con-1"]));

    // A source filter skips other sources but still moves the position.
    let only_accounts = WatchRequest { sources: vec!["Account".into()], resume_token: tokens[0].clone() };
    let mut accounts = crm.client.watch(only_accounts).await.expect("watch").into_inner();
    crm.create("Account", "*", fields([("name", Value::string("Five"))])).await;
    let mut ids = Vec::new();
    while ids.len() < 3 {
        ids.extend(upserted_ids(&next_changes(&mut accounts).await));
    }
    assert_eq!(ids, ["acc-2", "acc-3", "acc-4"]);
}

#[tokio::test]
async fn watch_refuses_tokens_it_cannot_resume() {
    let mut crm = TestCrm::start().await;
    let garbage = WatchRequest { sources: vec![], resume_token: vec![1, 2, 3] };
    assert_eq!(crm.client.watch(garbage).await.expect_err("refused").code(), Code::InvalidArgument);
    let ahead = WatchRequest { sources: vec![], resume_token: 9u64.to_be_bytes().to_vec() };
    assert_eq!(crm.client.watch(ahead).await.expect_err("refused").code(), Code::FailedPrecondition);
    let unknown = WatchRequest { sources: vec!["Lead".into()], resume_token: vec![] };
    assert_eq!(crm.client.watch(unknown).await.expect_err("refused").code(), Code::InvalidArgument);

    for name in ["One", "Two"] {
        crm.create("Account", "*", fields([("name", Value::string(name))])).await;
    }
    crm.other_writer().execute("DELETE FROM changes WHERE id <= 1", []).expect("prune the feed");
    let expired = WatchRequest { sources: vec![], resume_token: 0u64.to_be_bytes().to_vec() };
    assert_eq!(crm.client.watch(expired).await.expect_err("refused").code(), Code::FailedPrecondition);
    let still_there = WatchRequest { sources: vec![], resume_token: 1u64.to_be_bytes().to_vec() };
    let mut batches = crm.client.watch(still_there).await.expect("watch").into_inner();
    assert_eq!(summary(&next_changes(&mut batches).await), upserted("Account", "*", &["acc-2"]));
}

#[tokio::test]
async fn a_contact_moved_to_another_user_leaves_one_partition_and_enters_the_other() {
    let mut crm = TestCrm::start().await;
    let contact = crm.create("Contact", "alice", fields([("name", Value::string("Bob"))])).await;
    let mut batches = crm
        .client
        .watch(WatchRequest { sources: vec!["Contact".into()], ..WatchRequest::default() })
        .await
        .expect("watch")
        .into_inner();
    crm.other_writer().execute("UPDATE contacts SET owner_id = 'carol' WHERE id = ?1", [&contact.id]).expect("move");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.extend(summary(&next_changes(&mut batches).await));
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            ("Contact".into(), "alice".into(), vec![], vec![contact.id.clone()]),
            ("Contact".into(), "carol".into(), vec![contact.id.clone()], vec![]),
        ]
    );
    assert!(crm.query("Contact", "alice").await.is_empty());
    assert_eq!(crm.query("Contact", "carol").await[0].version, 2);
}

#[tokio::test]
async fn stopping_ends_open_watches_and_the_server() {
    let mut crm = TestCrm::start().await;
    let mut batches = crm.client.watch(WatchRequest::default()).await.expect("watch").into_inner();
    next_changes_or_checkpoint(&mut batches).await;
    crm.stop.send(()).expect("running");
    let status = tokio::time::timeout(TIMEOUT, batches.message()).await.expect("in time").expect_err("ended");
    assert_eq!(status.code(), Code::Unavailable);
    drop(batches);
    drop(crm.client);
    tokio::time::timeout(TIMEOUT, crm.channel.stopped()).await.expect("in time").expect("clean stop");
}

async fn next_changes_or_checkpoint(batches: &mut tonic::Streaming<ChangeBatch>) -> ChangeBatch {
    tokio::time::timeout(TIMEOUT, batches.message()).await.expect("in time").expect("ok").expect("open")
}

#[tokio::test]
async fn writes_through_the_db_handle_reach_watchers() {
    let mut crm = TestCrm::start().await;
    let mut batches = crm.client.watch(WatchRequest::default()).await.expect("watch").into_inner();
    let db = crm.channel.db().clone();
    let created = db.create("Contact", "alice", fields([("name", Value::string("Direct"))]), "").await.expect("create");
    assert_eq!(summary(&next_changes(&mut batches).await), upserted("Contact", "alice", &[&created.id]));
    let outcome = db.update("Contact", "alice", &created.id, fields([("vip", Value::bool(true))]), created.version);
    assert!(matches!(outcome.await, Ok(WriteOutcome::Written(record)) if record.version == 2));
    let batch = next_changes(&mut batches).await;
    assert_eq!(batch.partitions[0].upserts[0].fields["vip"], Value::bool(true));
    assert_eq!(db.get("Contact", "alice", &created.id).await.expect("get").map(|record| record.version), Some(2));
}
