//! Syncline against the Rust CRM example channel (in-process, over gRPC): poll capture of a
//! change written straight into the channel's SQLite database, watch capture, and a
//! permanent write error in one source that does not block the others.

use std::time::Duration;

use syncline_client_sim::{Device, DeviceConfig, SubscriptionConfig};
use syncline_proto::v1::{ClientFrame, ErrorCode, Mutate, MutationOp, MutationResult, Value, client_frame};
use syncline_server::config::{CaptureMode, Partitioning, SourceSection};
use syncline_tests::{DEADLINE, TestServer, assert_converges};
use tokio_util::sync::CancellationToken;

struct Crm {
    channel: syncline_example_crm::RunningCrmChannel,
    url: String,
    db_path: std::path::PathBuf,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn crm() -> Crm {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("crm.db");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stop = CancellationToken::new();
    let shutdown = stop.clone();
    let channel = syncline_example_crm::start(&db_path, listener, async move { shutdown.cancelled().await })
        .await
        .expect("crm channel starts");
    channel.db().seed(50).await.expect("seed");
    let url = format!("http://{}", channel.local_addr());
    Crm { channel, url, db_path, stop, _dir: dir }
}

async fn server(crm: &Crm) -> TestServer {
    let url = crm.url.clone();
    TestServer::start_with(move |config| {
        config.sources.clear();
        let mut account = SourceSection::new(Partitioning::App);
        account.channel = Some(url.clone());
        account.capture = CaptureMode::Poll;
        account.poll_interval_secs = 1;
        let mut contact = SourceSection::new(Partitioning::User);
        contact.channel = Some(url.clone());
        contact.capture = CaptureMode::Watch;
        config.sources.insert("Account".into(), account);
        config.sources.insert("Contact".into(), contact);
        config.auth.channel = Some(url);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_written_straight_into_the_backend_database_reaches_devices() {
    let crm = crm().await;
    let server = server(&crm).await;
    let phone = Device::start(
        DeviceConfig::new(server.url(), "demo", "demo")
            .subscribe(SubscriptionConfig::new("Account"))
            .subscribe(SubscriptionConfig::new("Contact")),
    );
    let deadline = || tokio::time::Instant::now() + DEADLINE;
    phone
        .wait_for(deadline(), |state| state.partition("Account", "*").is_some_and(|p| p.caught_up && p.total == 50))
        .await
        .expect("the first poll loads the seeded accounts");

    // Another program writes straight into the CRM's SQLite file.
    let db_path = crm.db_path.clone();
    tokio::task::spawn_blocking(move || {
        let connection = rusqlite::Connection::open(db_path).unwrap();
        connection.busy_timeout(Duration::from_secs(10)).unwrap();
        connection
            .execute("INSERT INTO accounts (id, name, employees) VALUES ('acc-direct', 'Direct Inc', 7)", [])
            .unwrap();
        connection.execute("UPDATE accounts SET name = 'Renamed' WHERE id = 'acc-1'", []).unwrap();
    })
    .await
    .unwrap();
    phone
        .wait_for(deadline(), |_| {
            phone.view("Account", "*").is_some_and(|view| {
                view.records.contains_key("acc-direct")
                    && view
                        .records
                        .get("acc-1")
                        .is_some_and(|r| r.fields.get("name") == Some(&Value::string("Renamed")))
            })
        })
        .await
        .expect("the next poll brings the direct writes");
    assert_converges(&phone, &server, "Account", "*", DEADLINE).await;

    // The watched source: a contact created in the backend arrives live.
    let mut fields = std::collections::BTreeMap::new();
    fields.insert("name".to_owned(), Value::string("Ada"));
    crm.channel.db().create("Contact", "demo", fields, "").await.expect("backend create");
    phone
        .wait_for(deadline(), |state| state.partition("Contact", "demo").is_some_and(|p| p.total == 1))
        .await
        .expect("the watched contact arrives");
    phone.stop().await;
    server.stop().await;
    crm.stop.cancel();
}

async fn outcome(connection: &mut syncline_client_sim::Connection, mutate: Mutate) -> MutationResult {
    syncline_tests::mutation_outcome(connection, ClientFrame { msg: Some(client_frame::Msg::Mutate(mutate)) }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_create_error_is_reported_and_blocks_no_other_source() {
    let crm = crm().await;
    let server = server(&crm).await;
    let mut phone = syncline_tests::raw_login(&server.url(), "demo", "demo").await;
    let create = |mutation_id: &str, source: &str, name: Option<&str>| Mutate {
        mutation_id: mutation_id.into(),
        source: source.into(),
        op: MutationOp::Create as i32,
        id: format!("tmp-{mutation_id}"),
        fields: name.map(|name| ("name".to_owned(), Value::string(name))).into_iter().collect(),
        ..Mutate::default()
    };
    // A contact without its required name: the backend refuses it, typed, with its message.
    let failed = outcome(&mut phone, create("bad", "Contact", None)).await;
    let error = failed.error.expect("a create error");
    assert_eq!((error.op, error.code), (MutationOp::Create as i32, ErrorCode::BadRequest as i32));
    assert!(error.message.contains("name"), "{}", error.message);
    // Other sources, and later writes of the same source, go on.
    let account = outcome(&mut phone, create("acc", "Account", Some("Globex"))).await;
    assert!(account.ok, "{account:?}");
    let contact = outcome(&mut phone, create("good", "Contact", Some("Grace"))).await;
    assert!(contact.ok, "{contact:?}");
    assert!(contact.link.expect("linked").id.starts_with("con-"));
    server.stop().await;
    crm.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_results_reach_the_device_and_merge_into_its_view_when_the_channel_asks() {
    use syncline_client_sim::{ConnectionPhase, SearchError, SearchQuery};

    let crm = crm().await;
    let server = server(&crm).await;
    // The device syncs nothing: what it knows of accounts comes from searching.
    let phone = Device::start(DeviceConfig::new(server.url(), "demo", "demo"));
    let deadline = || tokio::time::Instant::now() + DEADLINE;
    phone.wait_for(deadline(), |state| state.connection == ConnectionPhase::Ready).await.expect("connects");

    let acme = SearchQuery::new("Account").param("name", Value::string("Acme")).page(0, 5);
    let results = phone.search(acme, DEADLINE).await.expect("the search is answered");
    // Seeded accounts 6, 12, ..., 48 are called "Acme <n>": 8 matches, the first 5 returned.
    assert_eq!(results.total, 8);
    let names: Vec<String> = results
        .records
        .iter()
        .map(|record| match record.fields.get("name").and_then(|value| value.kind.clone()) {
            Some(syncline_proto::v1::value::Kind::StringValue(name)) => name,
            other => panic!("a name, got {other:?}"),
        })
        .collect();
    assert_eq!(names.len(), 5);
    assert!(names.iter().all(|name| name.starts_with("Acme ")), "{names:?}");
    // The CRM asks for a merge: the matches are in the device's view of the partition.
    let partition = results.merged_into.clone().expect("merged");
    assert_eq!((partition.source.as_str(), partition.key.as_str()), ("Account", "*"));
    let view = phone.view("Account", "*").expect("a view of the merged records");
    let merged: Vec<&String> = view.records.keys().collect();
    let returned: Vec<&String> = results.records.iter().map(|record| &record.id).collect();
    assert_eq!(merged, returned);

    // A parameter the channel does not know is the channel's typed error, merged nowhere.
    let bad = SearchQuery::new("Account").param("colour", Value::string("red"));
    match phone.search(bad, DEADLINE).await {
        Err(SearchError::Failed { code, message }) => {
            assert_eq!(code, ErrorCode::BadRequest, "{message}");
            assert!(message.contains("colour"), "{message}");
        }
        other => panic!("expected BAD_REQUEST, got {other:?}"),
    }
    assert_eq!(phone.view("Account", "*").expect("still there").records.len(), 5);
    phone.stop().await;

    // Without a connection a search fails at once instead of waiting.
    let offline = Device::start(DeviceConfig::new("ws://127.0.0.1:9/v1/sync", "demo", "demo"));
    let query = SearchQuery::new("Account");
    assert_eq!(offline.search(query, DEADLINE).await, Err(SearchError::Offline));
    offline.stop().await;
    server.stop().await;
    crm.stop.cancel();
}
