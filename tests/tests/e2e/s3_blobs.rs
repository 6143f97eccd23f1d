//! Issue 18, deliverable 3: blob bytes in an S3-compatible bucket (`[blob.s3]`). A real S3
//! server on loopback (`syncline_tests::s3`: s3s over a temporary directory, signatures
//! checked); the tests read the bucket through the S3 API. Uploads are verified locally and
//! only then put in the bucket; downloads stream from it with `Range`; garbage collection
//! deletes from it; a bucket that cannot be used stops the start with the reason.

use std::collections::BTreeMap;

use syncline_client_sim::{Device, blob_hash, blob_of};
use syncline_proto::v1::{Record, Value};
use syncline_server::app;
use syncline_tests::s3::S3Server;
use syncline_tests::{DEADLINE, eventually, push, test_config};

use crate::blobs::{
    Kept, blob_url, device_config, kept_and_orphan, photo_bytes, session_token, setup, status_and_code, wait_until_done,
};

/// The key of blob `hash` in the bucket under prefix `app`.
fn blob_key(hash: &str) -> String {
    format!("app/blobs/{hash}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_a_photo_goes_to_the_bucket_and_another_device_downloads_it_with_a_range() {
    let s3 = S3Server::start().await;
    let section = s3.section("app");
    let setup = setup(move |config| config.blob.s3 = section).await;
    let dir = tempfile::tempdir().unwrap();
    // Larger than one part of a multipart upload (8 MiB).
    let photo = photo_bytes(9 * 1024 * 1024 + 123, 7);
    let expected = blob_of(&photo, "image/jpeg", "cat.jpg");
    let ann = Device::start(device_config(&setup.server.url(), "ann", dir.path()));
    let value = ann.attach_blob(&photo, "image/jpeg", "cat.jpg").unwrap();
    let fields = BTreeMap::from([("title".to_owned(), Value::string("cat")), ("photo".to_owned(), value)]);
    ann.create("Gallery", None, fields).unwrap();
    wait_until_done(&ann, 1).await;
    assert_eq!(ann.stats().blobs_uploaded, 1, "uploaded once");

    // In the bucket, whole; not in the blob directory (which keeps only uploads in progress).
    assert_eq!(s3.keys("app/blobs").await, vec![blob_key(&expected.hash)]);
    assert_eq!(s3.object(&blob_key(&expected.hash)).await.as_deref(), Some(photo.as_slice()));
    let shard = setup.server.data_dir.join("blobs").join(&expected.hash[..2]);
    assert!(!shard.exists(), "no blob file on the node's disk");

    // Bob syncs the gallery and downloads the same bytes from the bucket.
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

    // A cut download resumes with Range: 206, Content-Range, exactly the rest.
    let token = session_token(&setup.server, "bob").await;
    let client = reqwest::Client::new();
    let url = blob_url(&setup.server, &expected.hash);
    let start = 5_000_001usize;
    let response = client.get(&url).bearer_auth(&token).header("range", format!("bytes={start}-")).send().await;
    let response = response.unwrap();
    assert_eq!(response.status().as_u16(), 206);
    let content_range = response.headers()["content-range"].to_str().unwrap().to_owned();
    assert_eq!(content_range, format!("bytes {start}-{}/{}", photo.len() - 1, photo.len()));
    assert_eq!(response.bytes().await.unwrap().as_ref(), &photo[start..]);
    let response = client.get(&url).bearer_auth(&token).header("range", "bytes=10-19").send().await.unwrap();
    assert_eq!(response.status().as_u16(), 206);
    assert_eq!(response.bytes().await.unwrap().as_ref(), &photo[10..20]);
    let past = client.get(&url).bearer_auth(&token).header("range", format!("bytes={}-", photo.len())).send();
    assert_eq!(past.await.unwrap().status().as_u16(), 416);
    for device in [ann, bob] {
        device.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_a_corrupted_upload_is_refused_and_nothing_is_put() {
    let s3 = S3Server::start().await;
    let section = s3.section("app");
    let setup = setup(move |config| config.blob.s3 = section).await;
    let token = session_token(&setup.server, "ann").await;
    let client = reqwest::Client::new();
    let bytes = photo_bytes(20_000, 3);
    let hash = blob_hash(&bytes);
    let url = blob_url(&setup.server, &hash);
    let mut corrupted = bytes.clone();
    corrupted[12_345] ^= 1;
    let response = client.put(&url).bearer_auth(&token).body(corrupted).send().await.unwrap();
    assert_eq!(status_and_code(response).await, (422, "hash_mismatch".to_owned()));
    assert!(s3.keys("app/blobs").await.is_empty(), "nothing put in the bucket");
    assert!(setup.server.server.store().blob(&hash).unwrap().is_none(), "no metadata either");
    // In two pieces, the second completing it: put once verified.
    let first = client.put(&url).bearer_auth(&token).header("content-range", "bytes 0-9999/20000");
    assert_eq!(first.body(bytes[..10_000].to_vec()).send().await.unwrap().status().as_u16(), 202);
    assert!(s3.keys("app/blobs").await.is_empty(), "a partial upload stays on the node");
    let rest = client.put(&url).bearer_auth(&token).header("content-range", "bytes 10000-19999/20000");
    assert_eq!(rest.body(bytes[10_000..].to_vec()).send().await.unwrap().status().as_u16(), 201);
    assert_eq!(s3.object(&blob_key(&hash)).await.as_deref(), Some(bytes.as_slice()));
    let held = client.head(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(held.headers()["upload-length"], "20000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_an_unreferenced_blob_is_collected_from_the_bucket() {
    let s3 = S3Server::start().await;
    let section = s3.section("app");
    let setup = setup(move |config| {
        config.blob.s3 = section;
        config.blob.gc_grace_secs = 1;
        config.blob.gc_interval_secs = 1;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let Kept { ann, kept, orphan, token, client } = kept_and_orphan(&setup, dir.path()).await;
    assert_eq!(s3.keys("app/blobs").await.len(), 2);
    let orphan_key = blob_key(&blob_hash(&orphan));
    eventually(DEADLINE, "the orphan leaves the bucket", || async {
        (!s3.keys("app/blobs").await.contains(&orphan_key)).then_some(())
    })
    .await;
    assert_eq!(s3.keys("app/blobs").await, vec![blob_key(&blob_hash(&kept))], "the referenced blob stays");
    let store = setup.server.server.store();
    eventually(DEADLINE, "its metadata goes too", || async {
        store.blob(&blob_hash(&orphan)).unwrap().is_none().then_some(())
    })
    .await;
    let response = client.get(blob_url(&setup.server, &blob_hash(&kept))).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.bytes().await.unwrap().as_ref(), kept.as_slice());
    ann.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_a_blob_the_channel_keeps_is_read_once_into_the_bucket() {
    let s3 = S3Server::start().await;
    let section = s3.section("app");
    let setup = setup(move |config| config.blob.s3 = section).await;
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
    let hint = [("source", "Gallery"), ("key", "*"), ("id", "scan-1")];
    let response = client.get(&url).query(&hint).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.bytes().await.unwrap().as_ref(), scan.as_slice());
    assert_eq!(s3.object(&blob_key(&blob.hash)).await.as_deref(), Some(scan.as_slice()), "kept in the bucket");
    setup.channel.kept.lock().unwrap().clear();
    let response = client.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.bytes().await.unwrap().as_ref(), scan.as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_a_missing_bucket_or_wrong_credentials_stop_the_start_with_the_reason() {
    let s3 = S3Server::start().await;
    let data = tempfile::tempdir().unwrap();
    let start = |section| {
        let mut config = test_config(data.path());
        config.blob.s3 = section;
        let settings = config.validate().expect("a valid config");
        async move { app::start(settings).await }
    };
    let mut missing = s3.section("app");
    missing.bucket = Some("no-such-bucket".into());
    let error = format!("{:#}", start(missing).await.err().expect("the start fails"));
    assert!(error.contains("blob storage") && error.contains("no-such-bucket"), "{error}");
    assert!(error.contains("NoSuchBucket") || error.contains("not found"), "the service's reason: {error}");
    let mut wrong = s3.section("app");
    wrong.secret_access_key = Some("not-the-secret".into());
    let error = format!("{:#}", start(wrong).await.err().expect("the start fails"));
    assert!(error.contains("blob storage") && error.contains("cannot list"), "{error}");
    assert!(!error.contains("not-the-secret"), "the secret is never shown: {error}");
    // A plain-HTTP endpoint needs allow_http: refused by validation, before any start.
    let mut config = test_config(data.path());
    config.blob.s3 = s3.section("app");
    config.blob.s3.allow_http = false;
    let error = config.validate().expect_err("refused").to_string();
    assert!(error.contains("blob.s3.endpoint") && error.contains("allow_http"), "{error}");
    // The right bucket starts.
    let server = start(s3.section("app")).await.expect("the server starts");
    server.stop().await.expect("the server stops");
}
