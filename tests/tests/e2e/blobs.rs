//! Issue 18: records carry files. A device creates a record with a photo while offline and
//! reconnects: the photo is uploaded once (hash checked; corrupted bytes are refused with a
//! typed error), the record reaches the channel with the blob reference, and another device
//! downloads the same bytes. A blob over the size limit gets a typed error and the record is
//! kept; a mutation naming a blob the server lacks is refused as retryable; an unreferenced
//! blob is collected; downloads without a session token or by other users are refused.
//! Real server, real sockets, a real gRPC channel.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use futures_util::stream;
use syncline_client_sim::{Device, DeviceConfig, DeviceHandle, MutationState, SubscriptionConfig, blob_hash, blob_of};
use syncline_proto::sdk::{self, BlobChunkStream, ChannelBackend, RecordStream, WriteOutcome};
use syncline_proto::v1::{
    BlobChunk, BlobRequest, ClientFrame, DescribeResponse, ErrorCode, Mutate, MutationOp, QueryRequest, Record, Value,
    WriteRequest, client_frame, server_frame, value::Kind,
};
use syncline_server::config::{Config, Partitioning, SourceSection};
use syncline_tests::{DEADLINE, TestServer, eventually, mutation_outcome, push, raw_login, serve_channel};
use tokio_util::sync::DropGuard;

/// A channel that stores what devices create (the record under a backend id) and
/// remembers every write it received.
#[derive(Default)]
pub(crate) struct PhotoChannel {
    pub(crate) received: Mutex<Vec<Record>>,
    /// Blob bytes the channel keeps itself, by hash (served through ReadBlob).
    pub(crate) kept: Mutex<BTreeMap<String, Vec<u8>>>,
}

#[tonic::async_trait]
impl ChannelBackend for PhotoChannel {
    async fn describe(&self) -> sdk::Result<DescribeResponse> {
        Ok(DescribeResponse::default())
    }

    async fn query(&self, _request: QueryRequest) -> sdk::Result<RecordStream> {
        Ok(Box::pin(stream::empty()))
    }

    async fn create(&self, request: WriteRequest) -> sdk::Result<WriteOutcome> {
        let record = request.record.unwrap_or_default();
        let mut received = self.received.lock().unwrap();
        received.push(record.clone());
        Ok(WriteOutcome::Written(Record { id: format!("photo-{}", received.len()), ..record }))
    }

    async fn update(&self, request: WriteRequest) -> sdk::Result<WriteOutcome> {
        let record = request.record.unwrap_or_default();
        self.received.lock().unwrap().push(record.clone());
        Ok(WriteOutcome::Written(record))
    }

    async fn delete(&self, request: WriteRequest) -> sdk::Result<WriteOutcome> {
        Ok(WriteOutcome::Written(request.record.unwrap_or_default()))
    }

    async fn read_blob(&self, request: BlobRequest) -> sdk::Result<BlobChunkStream> {
        let Some(bytes) = self.kept.lock().unwrap().get(&request.hash).cloned() else {
            return Err(sdk::ChannelError::NotFound(format!("no blob {}", request.hash)));
        };
        let start = usize::try_from(request.offset).unwrap_or(usize::MAX).min(bytes.len());
        let chunks: Vec<_> = bytes[start..].chunks(1000).map(|chunk| Ok(BlobChunk { data: chunk.to_vec() })).collect();
        Ok(Box::pin(stream::iter(chunks)))
    }
}

/// A server with sources `Gallery` (shared by every user) and `Private` (one partition per
/// user), both written through the photo channel, and users ann, bob and carol.
pub(crate) struct Setup {
    pub(crate) server: TestServer,
    pub(crate) channel: Arc<PhotoChannel>,
    _stop: DropGuard,
}

pub(crate) async fn setup(customize: impl FnOnce(&mut Config)) -> Setup {
    let channel = Arc::new(PhotoChannel::default());
    let (url, stop) = serve_channel(channel.clone()).await;
    let server = TestServer::start_with(move |config| {
        for (name, partitioning) in [("Gallery", Partitioning::App), ("Private", Partitioning::User)] {
            let mut source = SourceSection::new(partitioning);
            source.channel = Some(url.clone());
            config.sources.insert(name.into(), source);
        }
        customize(config);
    })
    .await;
    for user in ["ann", "bob", "carol"] {
        server.add_user(user, &format!("{user}-pw"));
    }
    Setup { server, channel, _stop: stop }
}

pub(crate) fn device_config(url: &str, user: &str, dir: &Path) -> DeviceConfig {
    let mut config = DeviceConfig::new(url, user, format!("{user}-pw"))
        .subscribe(SubscriptionConfig::new("Gallery"))
        .with_mutation_store(dir.join(format!("{user}-outbox.sqlite")))
        .with_notifications(1024);
    config.blob_dir = Some(dir.join(format!("{user}-blobs")));
    config
}

/// Returns a URL where nothing listens: a device pointed at it is offline.
pub(crate) async fn nowhere() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("ws://{addr}{}", syncline_proto::SYNC_PATH)
}

/// Returns a session token of `user`, from a Welcome on a raw connection.
pub(crate) async fn session_token(server: &TestServer, user: &str) -> String {
    let mut connection = raw_login(&server.url(), user, &format!("{user}-pw")).await;
    loop {
        let incoming = tokio::time::timeout(DEADLINE, connection.recv()).await.expect("Welcome in time").unwrap();
        if let syncline_client_sim::Incoming::Frame(frame) = incoming
            && let Some(server_frame::Msg::Welcome(welcome)) = frame.msg
        {
            return welcome.session_token;
        }
    }
}

pub(crate) fn blob_url(server: &TestServer, hash: &str) -> String {
    let origin = server.url().replace("ws://", "http://").replace(syncline_proto::SYNC_PATH, "");
    format!("{origin}{}/{hash}", syncline_proto::BLOBS_PATH)
}

/// Returns the status and the JSON error code of a response.
pub(crate) async fn status_and_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    (status, body["code"].as_str().unwrap_or_default().to_owned())
}

pub(crate) fn photo_bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|n| (n as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// Waits until the device's queue is empty and `succeeded` mutations succeeded so far.
pub(crate) async fn wait_until_done(device: &DeviceHandle, succeeded: u64) {
    eventually(DEADLINE, "the mutations finish", || async {
        (device.mutations().is_empty() && device.stats().mutations_succeeded >= succeeded).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_taken_offline_reaches_the_channel_and_another_device_downloads_it() {
    let setup = setup(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let photo = photo_bytes(3 * 1024 * 1024 + 17, 7); // several upload pieces
    // Offline: the record and its photo are kept on the device.
    let offline = Device::start(device_config(&nowhere().await, "ann", dir.path()));
    let value = offline.attach_blob(&photo, "image/jpeg", "cat.jpg").unwrap();
    let fields = BTreeMap::from([("title".to_owned(), Value::string("cat")), ("photo".to_owned(), value.clone())]);
    offline.create("Gallery", None, fields).unwrap();
    offline.stop().await;
    drop(offline);
    assert!(setup.channel.received.lock().unwrap().is_empty());

    // Back online (the same queue and blob directory): the photo goes up, then the record.
    let ann = Device::start(device_config(&setup.server.url(), "ann", dir.path()));
    wait_until_done(&ann, 1).await;
    assert_eq!(ann.stats().blobs_uploaded, 1, "uploaded once");
    let received = setup.channel.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1, "the channel got the record once");
    let expected = blob_of(&photo, "image/jpeg", "cat.jpg");
    assert_eq!(received[0].fields.get("photo").and_then(Value::as_blob), Some(&expected));
    let stored = setup.server.server.store().blob(&expected.hash).unwrap().expect("stored");
    assert_eq!((stored.size, stored.uploader.as_str()), (photo.len() as u64, "ann"));

    // Bob syncs the gallery and downloads the same bytes.
    let bob = Device::start(device_config(&setup.server.url(), "bob", dir.path()));
    let record = eventually(DEADLINE, "bob's gallery has the photo", || async {
        bob.view("Gallery", "*")
            .and_then(|view| view.records.values().find(|record| record.fields.contains_key("photo")).cloned())
    })
    .await;
    let blob = record.fields["photo"].as_blob().expect("a blob field").clone();
    let downloaded = bob.blob(&blob, Some(("Gallery", "*", record.id.as_str()))).await.unwrap();
    assert_eq!(blob_hash(&downloaded), expected.hash);
    assert_eq!(downloaded, photo);

    // Refused: no token, a forged token, and carol for a blob only in ann's private partition.
    let client = reqwest::Client::new();
    let url = blob_url(&setup.server, &expected.hash);
    let (status, code) = status_and_code(client.get(&url).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (401, "unauthenticated"));
    let (status, _) = status_and_code(client.get(&url).bearer_auth("forged").send().await.unwrap()).await;
    assert_eq!(status, 401);
    let secret = photo_bytes(1000, 99);
    let private = ann.attach_blob(&secret, "application/pdf", "contract.pdf").unwrap();
    ann.create("Private", None, BTreeMap::from([("doc".to_owned(), private.clone())])).unwrap();
    wait_until_done(&ann, 2).await;
    let Some(Kind::BlobValue(private)) = private.kind else { panic!("a blob value") };
    let carol = session_token(&setup.server, "carol").await;
    let hint = [("source", "Private"), ("key", "ann"), ("id", "photo-2")];
    let response = client.get(blob_url(&setup.server, &private.hash)).query(&hint).bearer_auth(&carol).send().await;
    assert_eq!(status_and_code(response.unwrap()).await, (403, "forbidden".to_owned()));
    // A range resumes a download.
    let ann_token = session_token(&setup.server, "ann").await;
    let response =
        client.get(blob_url(&setup.server, &private.hash)).bearer_auth(&ann_token).header("range", "bytes=600-");
    let response = response.send().await.unwrap();
    assert_eq!(response.status().as_u16(), 206);
    assert_eq!(response.bytes().await.unwrap().as_ref(), &secret[600..]);
    for device in [ann, bob] {
        device.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_resume_and_corrupted_bytes_are_refused_with_a_typed_error() {
    let setup = setup(|_| {}).await;
    let token = session_token(&setup.server, "ann").await;
    let client = reqwest::Client::new();
    let bytes = photo_bytes(10_000, 3);
    let hash = blob_hash(&bytes);
    let url = blob_url(&setup.server, &hash);
    let offset = |response: &reqwest::Response| {
        response.headers().get("upload-offset").and_then(|value| value.to_str().ok()?.parse::<u64>().ok())
    };
    // Corrupted: the last byte differs. 422, typed, and nothing kept.
    let mut corrupted = bytes.clone();
    *corrupted.last_mut().unwrap() ^= 1;
    let response = client.put(&url).bearer_auth(&token).body(corrupted).send().await.unwrap();
    assert_eq!(status_and_code(response).await, (422, "hash_mismatch".to_owned()));
    let held = client.head(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!((offset(&held), held.headers().contains_key("upload-length")), (Some(0), false));
    // A first piece, then a piece at the wrong offset (409 with the offset), then the rest.
    let piece = client.put(&url).bearer_auth(&token).header("content-range", "bytes 0-3999/10000");
    let response = piece.body(bytes[..4000].to_vec()).send().await.unwrap();
    assert_eq!((response.status().as_u16(), offset(&response)), (202, Some(4000)));
    let wrong = client.put(&url).bearer_auth(&token).header("content-range", "bytes 5000-9999/10000");
    let response = wrong.body(bytes[5000..].to_vec()).send().await.unwrap();
    assert_eq!((response.status().as_u16(), offset(&response)), (409, Some(4000)));
    let rest = client.put(&url).bearer_auth(&token).header("content-range", "bytes 4000-9999/10000");
    let response = rest.body(bytes[4000..].to_vec()).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 201);
    // Again: a no-op, whatever the body.
    let response = client.put(&url).bearer_auth(&token).body(b"ignored".to_vec()).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let held = client.head(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(held.headers().get("upload-length").unwrap(), "10000");
    let downloaded = client.get(&url).bearer_auth(&token).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(downloaded.as_ref(), bytes.as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_over_the_limit_gets_a_typed_error_and_the_record_is_kept() {
    let setup = setup(|config| config.blob.max_bytes = 4096).await;
    let dir = tempfile::tempdir().unwrap();
    // Refused before the body is read: the declared size says it all.
    let token = session_token(&setup.server, "ann").await;
    let big = photo_bytes(5000, 1);
    let response = reqwest::Client::new()
        .put(blob_url(&setup.server, &blob_hash(&big)))
        .bearer_auth(&token)
        .header("content-range", "bytes 0-99/5000")
        .body(big[..100].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(status_and_code(response).await, (413, "blob_too_large".to_owned()));

    let ann = Device::start(device_config(&setup.server.url(), "ann", dir.path()));
    let value = ann.attach_blob(&big, "video/mp4", "clip.mp4").unwrap();
    let temp_id = ann.create("Gallery", None, BTreeMap::from([("clip".to_owned(), value)])).unwrap();
    let failed = eventually(DEADLINE, "the mutation fails", || async {
        ann.mutations().into_iter().find(|mutation| mutation.state == MutationState::Failed)
    })
    .await;
    let failure = failed.failure.expect("a failure");
    assert_eq!(failure.code, ErrorCode::ResourceExhausted, "{}", failure.message);
    assert!(failure.message.contains("4096"), "{}", failure.message);
    assert_eq!(failed.id, temp_id);
    assert!(ann.view("Gallery", "*").unwrap().records.contains_key(&temp_id), "the record is still shown");
    assert!(setup.channel.received.lock().unwrap().is_empty(), "never sent to the channel");
    ann.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutation_naming_a_blob_not_uploaded_is_refused_as_retryable_then_accepted() {
    let setup = setup(|_| {}).await;
    let bytes = photo_bytes(2000, 5);
    let blob = blob_of(&bytes, "image/png", "sig.png");
    let mutate = ClientFrame {
        msg: Some(client_frame::Msg::Mutate(Mutate {
            mutation_id: "m-1".into(),
            source: "Gallery".into(),
            key: "*".into(),
            op: MutationOp::Create as i32,
            id: "tmp-1".into(),
            fields: BTreeMap::from([("signature".to_owned(), Value::blob(blob.clone()))]),
            ..Mutate::default()
        })),
    };
    let mut connection = raw_login(&setup.server.url(), "ann", "ann-pw").await;
    let refused = mutation_outcome(&mut connection, mutate.clone()).await;
    let error = refused.error.expect("an error");
    assert_eq!(error.code, ErrorCode::Unavailable as i32, "{}", error.message);
    assert!(error.message.contains(&blob.hash), "{}", error.message);
    assert!(setup.channel.received.lock().unwrap().is_empty());
    let token = session_token(&setup.server, "ann").await;
    let response = reqwest::Client::new()
        .put(blob_url(&setup.server, &blob.hash))
        .bearer_auth(&token)
        .header("content-type", "image/png")
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let accepted = mutation_outcome(&mut connection, mutate).await;
    assert!(accepted.ok, "{accepted:?}");
    let received = setup.channel.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].fields["signature"].as_blob(), Some(&blob));
}

/// A device that created a record with a photo (`kept`, referenced) and, over HTTP with its
/// session token, uploaded a blob no record references (`orphan`).
pub(crate) struct Kept {
    pub(crate) ann: DeviceHandle,
    pub(crate) kept: Vec<u8>,
    pub(crate) orphan: Vec<u8>,
    pub(crate) token: String,
    pub(crate) client: reqwest::Client,
}

pub(crate) async fn kept_and_orphan(setup: &Setup, dir: &Path) -> Kept {
    let ann = Device::start(device_config(&setup.server.url(), "ann", dir));
    let kept = photo_bytes(1500, 11);
    let value = ann.attach_blob(&kept, "image/jpeg", "kept.jpg").unwrap();
    ann.create("Gallery", None, BTreeMap::from([("photo".to_owned(), value)])).unwrap();
    wait_until_done(&ann, 1).await;
    let token = session_token(&setup.server, "ann").await;
    let orphan = photo_bytes(700, 13);
    let client = reqwest::Client::new();
    let response = client.put(blob_url(&setup.server, &blob_hash(&orphan))).bearer_auth(&token).body(orphan.clone());
    assert_eq!(response.send().await.unwrap().status().as_u16(), 201);
    Kept { ann, kept, orphan, token, client }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreferenced_blob_is_collected_and_a_referenced_one_stays() {
    let setup = setup(|config| {
        config.blob.gc_grace_secs = 1;
        config.blob.gc_interval_secs = 1;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let Kept { ann, kept, orphan, token, client } = kept_and_orphan(&setup, dir.path()).await;
    let store = setup.server.server.store();
    eventually(DEADLINE, "the orphan is collected", || async {
        store.blob(&blob_hash(&orphan)).unwrap().is_none().then_some(())
    })
    .await;
    let response = client.get(blob_url(&setup.server, &blob_hash(&orphan))).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 404);
    // The referenced blob survives the passes that collected the orphan.
    let response = client.get(blob_url(&setup.server, &blob_hash(&kept))).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.bytes().await.unwrap().as_ref(), kept.as_slice());
    ann.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_the_channel_keeps_is_served_through_read_blob() {
    let setup = setup(|_| {}).await;
    let scan = photo_bytes(5_500, 21);
    let blob = blob_of(&scan, "image/tiff", "scan.tiff");
    setup.channel.kept.lock().unwrap().insert(blob.hash.clone(), scan.clone());
    let record = Record {
        id: "scan-1".into(),
        fields: BTreeMap::from([("scan".to_owned(), Value::blob(blob.clone()))]),
        version: 0,
    };
    let mut ingest = setup.server.ingest_client().await;
    push(&mut ingest, "Gallery", "*", vec![record], Vec::new()).await.unwrap();
    let token = session_token(&setup.server, "bob").await;
    let client = reqwest::Client::new();
    let url = blob_url(&setup.server, &blob.hash);
    // Without the record that references it, the server does not know the blob.
    assert_eq!(client.get(&url).bearer_auth(&token).send().await.unwrap().status().as_u16(), 404);
    let hint = [("source", "Gallery"), ("key", "*"), ("id", "scan-1")];
    let response = client.get(&url).query(&hint).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.bytes().await.unwrap().as_ref(), scan.as_slice());
    // Kept: the next download needs neither the hint nor the channel.
    setup.channel.kept.lock().unwrap().clear();
    let response = client.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.bytes().await.unwrap().as_ref(), scan.as_slice());
}
