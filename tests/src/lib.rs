//! Helpers for Syncline's end-to-end tests: real servers on 127.0.0.1 port 0, real
//! WebSockets and gRPC, conditions waited on with deadlines instead of sleeps.

pub mod admin;
pub mod process;
pub mod s3;

use std::future::Future;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use syncline_proto::v1::ingest_client::IngestClient;
use syncline_proto::v1::{PushRequest, PushResponse, Record, Value};
use syncline_server::app::{self, RunningServer};
use syncline_server::config::{Config, Partitioning, SourceSection};
use tonic::transport::Channel;

/// Default deadline for conditions in tests: generous for a loaded 2-core CI machine.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A server running in this process on ephemeral loopback ports, with its data directory.
pub struct TestServer {
    pub server: RunningServer,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

/// Returns the test configuration: loopback port 0, sources `Account` (app) and `Contact`
/// (user), no demo, short heartbeats.
pub fn test_config(data_dir: &Path) -> Config {
    let mut config = Config { data_dir: data_dir.to_owned(), ..Config::default() };
    config.device.addr = "127.0.0.1:0".into();
    config.grpc.addr = "127.0.0.1:0".into();
    config.admin.addr = "127.0.0.1:0".into();
    config.demo.enabled = false;
    config.sources.insert("Account".into(), SourceSection::new(Partitioning::App));
    config.sources.insert("Contact".into(), SourceSection::new(Partitioning::User));
    config
}

impl TestServer {
    /// Starts a server with the test configuration in a fresh temporary directory.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server with the test configuration changed by `customize`.
    pub async fn start_with(customize: impl FnOnce(&mut Config)) -> Self {
        let temp = tempfile::tempdir().expect("temporary directory");
        let mut server = Self::start_in(temp.path(), customize).await;
        server._temp = Some(temp);
        server
    }

    /// Starts a server on an existing data directory (which the caller keeps).
    pub async fn start_in(data_dir: &Path, customize: impl FnOnce(&mut Config)) -> Self {
        // Logs show with a failing test's output when RUST_LOG asks for them.
        if std::env::var_os("RUST_LOG").is_some() {
            syncline_server::telemetry::init(false);
        }
        let mut config = test_config(data_dir);
        customize(&mut config);
        let settings = config.validate().expect("valid test config");
        let server = app::start(settings).await.expect("server starts");
        Self { server, data_dir: data_dir.to_owned(), _temp: None }
    }

    /// Returns the device endpoint URL.
    pub fn url(&self) -> String {
        self.server.device_url()
    }

    /// Adds a user directly in the store.
    pub fn add_user(&self, name: &str, password: &str) {
        syncline_server::auth::add_user(self.server.store().as_ref(), name, password).expect("add user");
    }

    /// Returns an Ingest client connected to this server.
    pub async fn ingest_client(&self) -> IngestClient<Channel> {
        IngestClient::connect(self.server.grpc_url()).await.expect("gRPC connects")
    }

    /// Stops the server gracefully; returns the temporary directory (if it owns one) so the
    /// caller can restart on it.
    pub async fn stop(self) -> Option<tempfile::TempDir> {
        self.server.stop().await.expect("server stops cleanly");
        self._temp
    }
}

/// Pushes a batch over gRPC and returns the response.
pub async fn push(
    client: &mut IngestClient<Channel>,
    source: &str,
    key: &str,
    upserts: Vec<Record>,
    deletes: Vec<String>,
) -> Result<PushResponse, tonic::Status> {
    client
        .push(PushRequest { source: source.into(), key: key.into(), upserts, deletes })
        .await
        .map(tonic::Response::into_inner)
}

/// Returns a record with a few typed fields.
pub fn record(id: &str, n: i64) -> Record {
    let mut fields = std::collections::BTreeMap::new();
    fields.insert("name".to_owned(), Value::string(format!("record {id}")));
    fields.insert("n".to_owned(), Value::int(n));
    fields.insert("ratio".to_owned(), Value::double(n as f64 / 7.0));
    fields.insert("even".to_owned(), Value::bool(n % 2 == 0));
    Record { id: id.to_owned(), fields, version: 0 }
}

/// Waits until `probe` returns `Some`, checking after each `poll` interval, failing the test
/// with `what` after `deadline`. For conditions with no event to wait on (e.g. an external
/// process's state); prefer the device library's event-driven waits where they exist.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let give_up = tokio::time::Instant::now() + deadline;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if tokio::time::Instant::now() >= give_up {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Returns the server's live records and state of a partition, read from its store.
pub fn server_view(
    server: &TestServer,
    source: &str,
    key: &str,
) -> (std::collections::BTreeMap<String, Record>, syncline_server::storage::PartitionState) {
    let partition = syncline_server::storage::PartitionName::new(source, key);
    let store = server.server.store();
    let page =
        store.read_snapshot(&partition, None, syncline_server::storage::PageLimit::unbounded()).expect("snapshot read");
    assert!(page.done);
    let records = page.records.into_iter().map(|record| (record.id.clone(), record)).collect();
    (records, page.state)
}

/// Compacts partition `(source, key)` of `server` now, keeping `keep_recent` log entries.
pub async fn compact(server: &TestServer, source: &str, key: &str, keep_recent: u64) {
    let partition = syncline_server::storage::PartitionName::new(source, key);
    let store = server.server.store().clone();
    tokio::task::spawn_blocking(move || store.compact(&partition, keep_recent))
        .await
        .expect("compaction task")
        .expect("compaction");
}

/// Waits until `device` holds partition `(source, key)` exactly as the server does (same
/// cursor as the head, same records, same checksum and total), failing after `deadline`.
pub async fn assert_converges(
    device: &syncline_client_sim::DeviceHandle,
    server: &TestServer,
    source: &str,
    key: &str,
    deadline: Duration,
) {
    let until = tokio::time::Instant::now() + deadline;
    // The server's log may still move (a backend's feed can follow the changes the caller
    // waited for): the device and the server must meet at one head, whichever it is.
    let (records, state, view) = loop {
        let (records, state) = server_view(server, source, key);
        let reached = device
            .wait_for(until, |device_state| {
                device_state.partition(source, key).is_some_and(|p| p.caught_up && p.cursor >= state.head)
            })
            .await;
        if let Err(error) = reached {
            panic!("device did not reach {source}/{key} at {}: {error:?}", state.head);
        }
        // What the log gave the device, without any of its own unfinished mutations.
        let view = device.synced_view(source, key).expect("the device holds the partition");
        if view.cursor == state.head {
            break (records, state, view);
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{source}/{key}: the server's head kept moving past the device ({} then {})",
            state.head,
            view.cursor
        );
    };
    assert_eq!(view.cursor, state.head, "{source}/{key} cursor");
    assert_eq!(view.total, state.total, "{source}/{key} total");
    assert_eq!(view.checksum, state.checksum, "{source}/{key} checksum");
    if view.records != records {
        let differing = records.iter().find(|(id, record)| view.records.get(*id) != Some(*record));
        panic!(
            "{source}/{key}: the device's records differ from the server's: first difference {:?} vs device {:?}",
            differing,
            differing.and_then(|(id, _)| view.records.get(id)),
        );
    }
}

/// The Python channel as a child process, stopped (by PID) when dropped.
pub struct PythonChannel {
    child: std::process::Child,
    db: PathBuf,
    /// The channel's gRPC URL.
    pub url: String,
}

fn python_channel_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python-channel")
}

impl PythonChannel {
    /// Starts `channel.py` on `port` (0: any) and waits for its "listening on" line.
    pub fn start(db: &Path, port: u16) -> Self {
        let dir = python_channel_dir();
        let python = dir.join(".venv/bin/python");
        assert!(
            python.exists() && dir.join("gen").exists(),
            "the Python channel's venv and stubs are missing: run examples/python-channel/run-tests.sh \
             (scripts/test.sh does)"
        );
        let mut child = std::process::Command::new(python)
            .arg(dir.join("channel.py"))
            .arg("--db")
            .arg(db)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("python channel starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let address = loop {
            let line = lines.next().expect("the channel printed its address").expect("a line");
            if let Some(address) = line.strip_prefix("listening on ") {
                break address.trim().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Self { child, db: db.to_owned(), url: format!("http://{address}") }
    }

    /// Returns the ops (`create`, `update`, `delete`) of the write calls the channel has
    /// received with `mutation_id`, in order, whatever their outcome: the channel counts every
    /// call in its `write_calls` table.
    pub fn write_calls(&self, mutation_id: &str) -> Vec<String> {
        write_calls(&self.db, mutation_id)
    }

    /// Returns the port it listens on.
    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().and_then(|port| port.parse().ok()).expect("port in url")
    }
}

/// Returns the write calls a Python channel whose database is `db` received with
/// `mutation_id` (see [`PythonChannel::write_calls`]); works while the channel is stopped too.
pub fn write_calls(db: &Path, mutation_id: &str) -> Vec<String> {
    let connection = rusqlite::Connection::open(db).expect("the channel's database opens");
    let mut statement =
        connection.prepare("SELECT op FROM write_calls WHERE mutation_id = ?1 ORDER BY n").expect("write_calls exists");
    statement
        .query_map([mutation_id], |row| row.get::<_, String>(0))
        .expect("write_calls reads")
        .collect::<Result<Vec<_>, _>>()
        .expect("write_calls rows")
}

impl Drop for PythonChannel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens a raw device connection to `url` and sends a password Hello (the Welcome is left
/// for the caller to read or skip).
pub async fn raw_login(url: &str, user: &str, password: &str) -> syncline_client_sim::Connection {
    raw_login_as(url, user, password, "").await
}

/// Like [`raw_login`], as the device `client_id` (from an earlier `Welcome`), so that the
/// server knows it again: its mutation ids, its queue.
pub async fn raw_login_as(url: &str, user: &str, password: &str, client_id: &str) -> syncline_client_sim::Connection {
    use syncline_proto::v1::{ClientFrame, Hello, Login, client_frame, hello};
    let options = syncline_client_sim::ConnectOptions::default();
    let mut connection = syncline_client_sim::Connection::connect(url, &options).await.expect("connects");
    let hello = Hello {
        protocol_version: syncline_proto::PROTOCOL_VERSION,
        credentials: Some(hello::Credentials::Login(Login { username: user.into(), password: password.into() })),
        client_id: client_id.to_owned(),
        ..Hello::default()
    };
    connection.send(&ClientFrame { msg: Some(client_frame::Msg::Hello(hello)) }).await.expect("sends Hello");
    connection
}

/// Reads frames until the `Welcome` and returns the client id it assigns.
pub async fn welcome_client_id(connection: &mut syncline_client_sim::Connection) -> String {
    use syncline_proto::v1::server_frame;
    loop {
        let incoming =
            tokio::time::timeout(DEADLINE, connection.recv()).await.expect("a Welcome in time").expect("a frame");
        match incoming {
            syncline_client_sim::Incoming::Frame(frame) => {
                if let Some(server_frame::Msg::Welcome(welcome)) = frame.msg {
                    return welcome.client_id;
                }
            }
            syncline_client_sim::Incoming::Closed { code, reason } => panic!("closed before Welcome: {code} {reason}"),
        }
    }
}

/// Sends a `Mutate` frame and returns the `MutationResult` for its mutation id, skipping
/// acks and other frames.
pub async fn mutation_outcome(
    connection: &mut syncline_client_sim::Connection,
    frame: syncline_proto::v1::ClientFrame,
) -> syncline_proto::v1::MutationResult {
    use syncline_proto::v1::{client_frame, server_frame};
    let Some(client_frame::Msg::Mutate(sent)) = &frame.msg else { panic!("mutation_outcome needs a Mutate frame") };
    let mutation_id = sent.mutation_id.clone();
    connection.send(&frame).await.expect("sends Mutate");
    loop {
        let incoming =
            tokio::time::timeout(DEADLINE, connection.recv()).await.expect("a result in time").expect("a frame");
        if let syncline_client_sim::Incoming::Frame(frame) = incoming
            && let Some(server_frame::Msg::MutationResult(result)) = frame.msg
            && result.mutation_id == mutation_id
        {
            return result;
        }
    }
}

/// Serves a channel backend (the Rust SDK) on a loopback port until the returned guard is
/// dropped; returns its endpoint URL.
pub async fn serve_channel<B: syncline_proto::sdk::ChannelBackend>(
    channel: std::sync::Arc<B>,
) -> (String, tokio_util::sync::DropGuard) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("bound"));
    let stop = tokio_util::sync::CancellationToken::new();
    let shutdown = stop.clone();
    tokio::spawn(syncline_proto::sdk::serve_shared(channel, listener, async move { shutdown.cancelled().await }));
    (url, stop.drop_guard())
}
