//! Syncline against the Rust CRM example channel (in-process, over gRPC): poll capture of a
//! change written straight into the channel's SQLite database, watch capture, and a
//! permanent write error in one source that does not block the others.

use std::time::Duration;

use syncline_client_sim::{Device, DeviceConfig, SubscriptionConfig};
use syncline_proto::v1::{ClientFrame, ErrorCode, Mutate, MutationOp, MutationResult, Value, client_frame};
use syncline_server::config::SourceSection;
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
        let mut account = SourceSection::new("app");
        account.channel = Some(url.clone());
        account.capture = "poll".into();
        account.poll_interval_secs = 1;
        let mut contact = SourceSection::new("user");
        contact.channel = Some(url.clone());
        contact.capture = "watch".into();
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
