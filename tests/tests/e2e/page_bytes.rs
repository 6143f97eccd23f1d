//! Catch-up pages and live pushes are bounded in encoded bytes as well as in records
//! (`device.max_page_bytes`): a partition of large records syncs in frames within the bound,
//! except a single record larger than it, which comes alone; every record arrives exactly
//! once, and the device ends at the server's head with its checksum.
//!
//! A pull-mode device whose cursor compaction passes mid-catch-up gets Reset and a snapshot on
//! its next pull and pulls on to the head.
//!
//! Regression for pages bounded only by count: 500 records of 32 KB made a ~16 MB frame,
//! past the device library's 16 MiB message limit.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use prost::Message as _;
use syncline_client_sim::wire::{ConnectOptions, Connection, FrameFormat, Incoming};
use syncline_client_sim::{ApplyOutcome, Device, DeviceConfig, PartitionId, PartitionReplica, SubscriptionConfig};
use syncline_proto::v1::{
    Ack, Changes, ClientFrame, Hello, Login, Pull, Record, ServerFrame, Subscribe, SyncState, SyncStatus, Value,
    Welcome, client_frame, hello, server_frame,
};
use syncline_tests::{DEADLINE, TestServer, assert_converges, push, record, server_view};

/// The byte bound of these tests: about three 10 KB records a page.
const MAX_PAGE_BYTES: usize = 32 * 1024;
/// Padding of a large record: 10 KB.
const LARGE: usize = 10_000;
/// Padding of a record larger than a page on its own.
const OVERSIZED: usize = 48 * 1024;
/// Longest wait for one frame.
const STEP: Duration = Duration::from_secs(30);

async fn start() -> TestServer {
    let server = TestServer::start_with(|config| config.device.max_page_bytes = MAX_PAGE_BYTES).await;
    server.add_user("ann", "ann-pw");
    server
}

/// Returns a record with a `blob` field of `pad` bytes.
fn padded(id: &str, n: i64, pad: usize) -> Record {
    let mut record = record(id, n);
    record.fields.insert("blob".to_owned(), Value::string("x".repeat(pad)));
    record
}

/// One Changes frame as the device saw it.
#[derive(Debug)]
struct Seen {
    from: u64,
    to: u64,
    page: u64,
    snapshot: bool,
    items: usize,
    bytes: usize,
}

/// A device on a raw connection that applies pages through the device library's replica,
/// checks each frame against the byte bound and records what it saw.
struct RawDevice {
    connection: Connection,
    replica: PartitionReplica,
    seen: Vec<Seen>,
    /// How often each id came as an upsert, and as a delete, since the last [`RawDevice::forget`].
    upserted: BTreeMap<String, usize>,
    deleted: BTreeMap<String, usize>,
}

impl RawDevice {
    async fn connect(server: &TestServer) -> (Self, Welcome) {
        let options = ConnectOptions { format: FrameFormat::Binary, ..ConnectOptions::default() };
        let mut connection = Connection::connect(&server.url(), &options).await.expect("connects");
        let hello = Hello {
            protocol_version: syncline_proto::PROTOCOL_VERSION,
            credentials: Some(hello::Credentials::Login(Login { username: "ann".into(), password: "ann-pw".into() })),
            client_id: String::new(),
            device: None,
        };
        connection.send(&ClientFrame { msg: Some(client_frame::Msg::Hello(hello)) }).await.expect("Hello sent");
        let mut device = Self {
            connection,
            replica: PartitionReplica::new(),
            seen: Vec::new(),
            upserted: BTreeMap::new(),
            deleted: BTreeMap::new(),
        };
        match device.next().await {
            server_frame::Msg::Welcome(welcome) => (device, welcome),
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    async fn next(&mut self) -> server_frame::Msg {
        match tokio::time::timeout(STEP, self.connection.recv()).await.expect("a frame in time").expect("a frame") {
            Incoming::Frame(ServerFrame { msg: Some(msg) }) => msg,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    async fn subscribe(&mut self, cursor: u64, window: u32) {
        let subscribe = Subscribe { source: "Account".into(), key: "*".into(), cursor, page_size: 500, window };
        self.connection.send(&ClientFrame { msg: Some(client_frame::Msg::Subscribe(subscribe)) }).await.expect("sent");
    }

    fn forget(&mut self) {
        self.seen.clear();
        self.upserted.clear();
        self.deleted.clear();
    }

    /// Checks and applies one Changes frame, and acks it.
    async fn apply(&mut self, changes: Changes) {
        let items = changes.upserts.len() + changes.deletes.len();
        let bytes = ServerFrame { msg: Some(server_frame::Msg::Changes(changes.clone())) }.encoded_len();
        assert!(
            bytes <= MAX_PAGE_BYTES || items == 1,
            "a frame of {items} records or changes is {bytes} bytes, past the bound of {MAX_PAGE_BYTES}"
        );
        for record in &changes.upserts {
            *self.upserted.entry(record.id.clone()).or_default() += 1;
        }
        for id in &changes.deletes {
            *self.deleted.entry(id.clone()).or_default() += 1;
        }
        self.seen.push(Seen {
            from: changes.from,
            to: changes.to,
            page: changes.page,
            snapshot: changes.snapshot,
            items,
            bytes,
        });
        match self.replica.apply(&changes) {
            ApplyOutcome::Applied { .. } => {}
            other => panic!("frame {:?} did not apply: {other:?}", self.seen.last()),
        }
        let ack = Ack { source: changes.source, key: changes.key, cursor: self.replica.cursor(), page: changes.page };
        self.connection.send(&ClientFrame { msg: Some(client_frame::Msg::Ack(ack)) }).await.expect("Ack sent");
    }

    /// Applies frames until the subscription is caught up; returns that state.
    async fn catch_up(&mut self) -> SyncState {
        loop {
            match self.next().await {
                server_frame::Msg::Changes(changes) => self.apply(changes).await,
                server_frame::Msg::SyncState(state) if state.status == SyncStatus::CaughtUp as i32 => return state,
                server_frame::Msg::SyncState(state) => panic!("unexpected {state:?}"),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Applies live frames until the replica's cursor is `head`.
    async fn follow_to(&mut self, head: u64) {
        while self.replica.cursor() < head {
            match self.next().await {
                server_frame::Msg::Changes(changes) => {
                    assert_eq!(changes.page, 0, "a live push, not a page");
                    self.apply(changes).await;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Checks that the device holds exactly what the server does.
    fn assert_holds_server_view(&self, server: &TestServer) {
        let (records, state) = server_view(server, "Account", "*");
        assert_eq!(self.replica.cursor(), state.head, "cursor");
        assert_eq!((self.replica.total(), self.replica.checksum()), (state.total, state.checksum));
        assert!(self.replica.records() == &records, "the device's records differ from the server's");
    }

    fn assert_each_once(&self, upserted: &BTreeSet<String>, deleted: &BTreeSet<String>) {
        let ids = |counts: &BTreeMap<String, usize>| counts.keys().cloned().collect::<BTreeSet<_>>();
        assert_eq!(&ids(&self.upserted), upserted, "the records sent");
        assert_eq!(&ids(&self.deleted), deleted, "the deletes sent");
        let repeated: Vec<_> = self.upserted.iter().chain(&self.deleted).filter(|(_, count)| **count > 1).collect();
        assert!(repeated.is_empty(), "sent more than once: {repeated:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_records_sync_in_byte_bounded_pages_from_zero_from_a_cursor_and_live() {
    let server = start().await;
    let mut ingest = server.ingest_client().await;

    // Snapshot material: 30 large records, 2 larger than a page, 10 small, interleaved by id.
    let mut upserts: Vec<Record> = (0..30).map(|i| padded(&format!("a{i:03}"), i, LARGE)).collect();
    upserts.push(padded("a010x", 1, OVERSIZED));
    upserts.push(padded("a020x", 2, OVERSIZED));
    upserts.extend((0..10).map(|i| record(&format!("a{i:03}s"), i)));
    let mut live: BTreeSet<String> = upserts.iter().map(|record| record.id.clone()).collect();
    push(&mut ingest, "Account", "*", upserts, Vec::new()).await.expect("push");

    let (mut device, welcome) = RawDevice::connect(&server).await;
    assert_eq!(welcome.max_page_bytes as usize, MAX_PAGE_BYTES, "Welcome advertises the bound");

    // From zero: a snapshot, every live record once, in pages within the bound.
    device.subscribe(0, 2).await;
    let state = device.catch_up().await;
    let head = server_view(&server, "Account", "*").1.head;
    assert_eq!(state.cursor, head);
    device.assert_holds_server_view(&server);
    device.assert_each_once(&live, &BTreeSet::new());
    assert!(device.seen.iter().all(|seen| seen.snapshot), "{:?}", device.seen);
    let pages: Vec<u64> = device.seen.iter().map(|seen| seen.page).collect();
    assert_eq!(pages, (1..=device.seen.len() as u64).collect::<Vec<_>>(), "pages numbered 1, 2, ...");
    assert!(device.seen.len() >= 12, "30 large records at about three a page: {:?}", device.seen);
    let alone: Vec<&Seen> = device.seen.iter().filter(|seen| seen.bytes > MAX_PAGE_BYTES).collect();
    assert!(
        alone.len() == 2 && alone.iter().all(|seen| seen.items == 1),
        "the two oversized records, alone: {alone:?}"
    );

    // Live: one batch of 20 large records (~200 KB) comes as several gap-free frames.
    device.forget();
    let batch: Vec<Record> = (0..20).map(|i| padded(&format!("b{i:03}"), i, LARGE)).collect();
    let fresh: BTreeSet<String> = batch.iter().map(|record| record.id.clone()).collect();
    live.extend(fresh.iter().cloned());
    let committed = push(&mut ingest, "Account", "*", batch, Vec::new()).await.expect("push");
    device.follow_to(committed.last_seq).await;
    assert!(device.seen.len() >= 6, "a 200 KB batch in frames of 32 KiB: {:?}", device.seen);
    assert_eq!(device.seen.first().map(|seen| seen.from), Some(head + 1));
    assert!(device.seen.windows(2).all(|pair| pair[1].from == pair[0].to + 1), "gap-free: {:?}", device.seen);
    device.assert_holds_server_view(&server);
    device.assert_each_once(&fresh, &BTreeSet::new());

    // From a cursor: the device goes away, changes pile up, and it comes back to the log.
    let cursor = device.replica.cursor();
    let mut replica = std::mem::take(&mut device.replica);
    drop(device);
    let mut created = BTreeSet::new();
    let mut gone = BTreeSet::new();
    for round in 0..3 {
        let upserts: Vec<Record> = (0..15).map(|i| padded(&format!("c{round}{i:02}"), i, LARGE)).collect();
        created.extend(upserts.iter().map(|record| record.id.clone()));
        let deletes: Vec<String> = live.iter().filter(|id| id.ends_with('s')).take(3).cloned().collect();
        for id in &deletes {
            live.remove(id);
        }
        gone.extend(deletes.iter().cloned());
        push(&mut ingest, "Account", "*", upserts, deletes).await.expect("push");
    }
    push(&mut ingest, "Account", "*", vec![padded("c-oversized", 0, OVERSIZED)], Vec::new()).await.expect("push");
    created.insert("c-oversized".to_owned());

    let (mut device, _) = RawDevice::connect(&server).await;
    device.replica = std::mem::take(&mut replica);
    device.subscribe(cursor, 2).await;
    let state = device.catch_up().await;
    let head = server_view(&server, "Account", "*").1.head;
    assert_eq!(state.cursor, head, "caught up at the head");
    device.assert_holds_server_view(&server);
    device.assert_each_once(&created, &gone);
    assert!(device.seen.iter().all(|seen| !seen.snapshot && seen.page > 0), "log pages: {:?}", device.seen);
    assert_eq!(device.seen.first().map(|seen| seen.from), Some(cursor + 1));
    assert!(device.seen.windows(2).all(|pair| pair[1].from == pair[0].to + 1), "gap-free: {:?}", device.seen);
    assert!(device.seen.len() >= 15, "46 large records at about three a page: {:?}", device.seen);
    server.stop().await;
}

/// A device in pull mode (window 0) asks for the next page only while `remaining` says more
/// follow: byte-bounded pages must keep saying so until the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_mode_device_gets_every_byte_bounded_page() {
    let server = start().await;
    let mut ingest = server.ingest_client().await;
    let upserts: Vec<Record> = (0..40).map(|i| padded(&format!("p{i:03}"), i, LARGE)).collect();
    push(&mut ingest, "Account", "*", upserts, Vec::new()).await.expect("push");

    let config = DeviceConfig::new(server.url(), "ann", "ann-pw")
        .subscribe(SubscriptionConfig::new("Account").with_page_size(500).with_window(0));
    let device = Device::start(config);
    assert_converges(&device, &server, "Account", "*", DEADLINE).await;

    // And from its cursor, through the log.
    device.stop().await;
    let view = device.synced_view("Account", "*").expect("the device holds the partition");
    let more: Vec<Record> = (0..40).map(|i| padded(&format!("q{i:03}"), i, LARGE)).collect();
    push(&mut ingest, "Account", "*", more, Vec::new()).await.expect("push");
    let resumed = Device::start(
        DeviceConfig::new(server.url(), "ann", "ann-pw")
            .subscribe(SubscriptionConfig::new("Account").with_page_size(500).with_window(0))
            .restore(PartitionId::new("Account", "*"), view),
    );
    assert_converges(&resumed, &server, "Account", "*", DEADLINE).await;
    assert_eq!(resumed.stats().pages, 14, "40 records at three a page from the cursor (a snapshot would be 27)");
    server.stop().await;
}

/// A pull-mode device in the middle of its catch-up from the log, whose cursor compaction then
/// passes: its next pull gets Reset and a snapshot, and pulling on from there it reaches the
/// head and goes live (it is never left waiting for a page it does not know to ask for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_mode_device_passed_by_compaction_mid_catch_up_resets_and_catches_up() {
    let server = start().await;
    let mut ingest = server.ingest_client().await;
    let first: Vec<Record> = (0..40).map(|i| padded(&format!("p{i:03}"), i, LARGE)).collect();
    push(&mut ingest, "Account", "*", first, Vec::new()).await.expect("push");

    let pull = ClientFrame {
        msg: Some(client_frame::Msg::Pull(Pull { source: "Account".into(), key: "*".into(), pages: 1 })),
    };
    // The device syncs the first 40 in pull mode and goes away.
    let (mut first_session, _) = RawDevice::connect(&server).await;
    first_session.subscribe(0, 0).await;
    first_session.connection.send(&pull).await.expect("Pull sent");
    first_session.catch_up_pulling(&pull).await;
    assert_eq!(first_session.replica.cursor(), 40);
    let replica = first_session.replica;
    drop(first_session.connection);

    // 40 more while it is away; back, it pulls one page of the log and holds back the next.
    let second: Vec<Record> = (0..40).map(|i| padded(&format!("q{i:03}"), i, LARGE)).collect();
    push(&mut ingest, "Account", "*", second, Vec::new()).await.expect("push");
    let (mut device, _) = RawDevice::connect(&server).await;
    device.replica = replica;
    device.subscribe(40, 0).await;
    device.connection.send(&pull).await.expect("Pull sent");
    match device.next().await {
        server_frame::Msg::Changes(changes) => {
            assert!(changes.page > 0 && !changes.snapshot && changes.remaining > 0, "a log page, more to come");
            device.apply(changes).await;
        }
        other => panic!("unexpected {other:?}"),
    }
    let cursor = device.replica.cursor();
    assert!(cursor > 40 && cursor < 80, "mid-way through the log: {cursor}");

    // Compaction passes the cursor while the device holds back its next pull.
    syncline_tests::compact(&server, "Account", "*", 0).await;
    let (_, state) = server_view(&server, "Account", "*");
    assert!(state.horizon > cursor, "compacted past the device's cursor {cursor}: {state:?}");

    device.connection.send(&pull).await.expect("Pull sent");
    match device.next().await {
        server_frame::Msg::SyncState(state) => assert_eq!(state.status, SyncStatus::Reset as i32, "{state:?}"),
        other => panic!("expected Reset, got {other:?}"),
    }
    device.catch_up_pulling(&pull).await;
    device.assert_holds_server_view(&server);
    server.stop().await;
}

impl RawDevice {
    /// In pull mode: applies pages, pulling after each one that says more remain, until the
    /// subscription is caught up (a step without a frame fails the test after [`STEP`]).
    async fn catch_up_pulling(&mut self, pull: &ClientFrame) {
        loop {
            match self.next().await {
                server_frame::Msg::Changes(changes) => {
                    let more = changes.remaining > 0;
                    self.apply(changes).await;
                    if more {
                        self.connection.send(pull).await.expect("Pull sent");
                    }
                }
                server_frame::Msg::SyncState(state) if state.status == SyncStatus::CaughtUp as i32 => return,
                server_frame::Msg::SyncState(state) => panic!("unexpected {state:?}"),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
