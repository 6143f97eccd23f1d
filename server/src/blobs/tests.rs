//! Issue 18: the blob store — uploads whole and resumed, the size limit before any byte,
//! hash verification, idempotent re-uploads, who may download, and collection of
//! unreferenced blobs after their grace period.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};
use syncline_proto::v1::{Blob, Record, Value};
use tempfile::TempDir;

use super::*;
use crate::config::{Partitioning, SourceSettings};
use crate::storage::{MutationOp, QueuedMutation};
use crate::test_util::fixtures::temp_store;

const MAX_BYTES: u64 = 1_000;

struct Fixture {
    service: BlobService,
    store: Arc<dyn Store>,
    _dir: TempDir,
}

fn fixture(grace: Duration) -> Fixture {
    let (dir, store) = temp_store();
    let settings = BlobSettings {
        dir: dir.path().join("blobs"),
        max_bytes: MAX_BYTES,
        gc_grace: grace,
        gc_interval: Duration::from_secs(60),
        s3: None,
    };
    let sources = BTreeMap::from([
        ("Photo".to_owned(), SourceSettings::ingest(Partitioning::User)),
        ("Shared".to_owned(), SourceSettings::ingest(Partitioning::App)),
    ]);
    let service = BlobService::open(store.clone(), &settings, sources, Arc::default()).expect("open");
    Fixture { service, store, _dir: dir }
}

fn user(name: &str, client_id: &str) -> Identity {
    Identity { user_id: name.to_owned(), client_id: client_id.to_owned(), ..Identity::default() }
}

fn hash_of(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn body(bytes: &[u8]) -> impl Stream<Item = std::result::Result<Bytes, Infallible>> + Send + 'static {
    // Several chunks, as a network delivers them.
    let chunks: Vec<_> = bytes.chunks(7).map(|chunk| Ok(Bytes::copy_from_slice(chunk))).collect();
    futures_util::stream::iter(chunks)
}

fn whole(bytes: &[u8]) -> UploadPiece {
    UploadPiece { first: 0, len: bytes.len() as u64, total: bytes.len() as u64 }
}

async fn read_all(service: &BlobService, reader: &Identity, hash: &str, hint: Option<RecordHint>) -> Result<Vec<u8>> {
    let blob = service.open_for(reader, hash, hint).await?;
    let size = blob.size;
    let mut stream = Box::pin(blob.stream(0, size).await?);
    let mut read = Vec::new();
    while let Some(chunk) = stream.next().await {
        read.extend_from_slice(&chunk?);
    }
    Ok(read)
}

#[tokio::test]
async fn a_whole_upload_is_verified_stored_and_idempotent() {
    let fixture = fixture(Duration::from_secs(3600));
    let ann = user("ann", "c1");
    let photo = b"a photo of a cat, in bytes".to_vec();
    let hash = hash_of(&photo);
    let outcome = fixture.service.upload(&ann, &hash, Some("image/jpeg"), whole(&photo), body(&photo)).await.unwrap();
    assert_eq!(outcome, UploadOutcome::Stored { size: photo.len() as u64 });
    let meta = fixture.store.blob(&hash).unwrap().expect("metadata stored");
    assert_eq!(
        (meta.size, meta.media_type.as_str(), meta.uploader.as_str()),
        (photo.len() as u64, "image/jpeg", "ann")
    );
    assert_eq!(fixture.service.held(&ann, &hash).await.unwrap(), Held::Stored { size: photo.len() as u64 });
    // Again, from another device, with a body that would not even hash right: not read.
    let again = fixture.service.upload(&user("bob", "c2"), &hash, None, whole(&photo), body(b"garbage!!")).await;
    assert_eq!(again.unwrap(), UploadOutcome::AlreadyStored { size: photo.len() as u64 });
    assert_eq!(fixture.store.blob(&hash).unwrap().unwrap().uploader, "ann", "the first upload's metadata stays");
    assert_eq!(read_all(&fixture.service, &ann, &hash, None).await.unwrap(), photo);
}

#[tokio::test]
async fn an_upload_resumes_from_what_the_server_holds() {
    let fixture = fixture(Duration::from_secs(3600));
    let ann = user("ann", "c1");
    let file: Vec<u8> = (0..=255u8).cycle().take(900).collect();
    let hash = hash_of(&file);
    let total = file.len() as u64;
    let first = UploadPiece { first: 0, len: 300, total };
    let outcome = fixture.service.upload(&ann, &hash, None, first, body(&file[..300])).await.unwrap();
    assert_eq!(outcome, UploadOutcome::Partial { held: 300 });
    // A cut connection: the body ends early with an error; what arrived is kept.
    let cut = futures_util::stream::iter(vec![Ok(Bytes::copy_from_slice(&file[300..450])), Err("connection reset")]);
    let piece = UploadPiece { first: 300, len: 600, total };
    assert_eq!(
        fixture.service.upload(&ann, &hash, None, piece, cut).await.unwrap(),
        UploadOutcome::Partial { held: 450 }
    );
    assert_eq!(fixture.service.held(&ann, &hash).await.unwrap(), Held::Partial { held: 450 });
    assert_eq!(fixture.service.held(&user("bob", "c2"), &hash).await.unwrap(), Held::Partial { held: 0 }, "per device");
    // Resuming anywhere else is refused with the offset to resume from.
    let wrong = UploadPiece { first: 300, len: 600, total };
    match fixture.service.upload(&ann, &hash, None, wrong, body(&file[300..])).await {
        Err(BlobError::WrongOffset { given: 300, held: 450 }) => {}
        other => panic!("{other:?}"),
    }
    let rest = UploadPiece { first: 450, len: 450, total };
    let outcome = fixture.service.upload(&ann, &hash, None, rest, body(&file[450..])).await.unwrap();
    assert_eq!(outcome, UploadOutcome::Stored { size: total });
    assert_eq!(read_all(&fixture.service, &ann, &hash, None).await.unwrap(), file);
}

#[tokio::test]
async fn bytes_that_do_not_hash_to_the_name_are_refused_and_discarded() {
    let fixture = fixture(Duration::from_secs(3600));
    let ann = user("ann", "c1");
    let photo = b"the real photo".to_vec();
    let hash = hash_of(&photo);
    let corrupted = b"the real phot0".to_vec();
    match fixture.service.upload(&ann, &hash, None, whole(&corrupted), body(&corrupted)).await {
        Err(error @ BlobError::HashMismatch { .. }) => assert_eq!(error.class(), ErrorClass::BadRequest),
        other => panic!("{other:?}"),
    }
    assert_eq!(fixture.service.held(&ann, &hash).await.unwrap(), Held::Partial { held: 0 }, "discarded");
    assert_eq!(fixture.store.blob(&hash).unwrap(), None);
    let outcome = fixture.service.upload(&ann, &hash, None, whole(&photo), body(&photo)).await.unwrap();
    assert_eq!(outcome, UploadOutcome::Stored { size: photo.len() as u64 }, "a fresh upload from 0 works");
}

#[tokio::test]
async fn a_blob_over_the_limit_is_refused_before_a_byte_is_read() {
    let fixture = fixture(Duration::from_secs(3600));
    let ann = user("ann", "c1");
    let hash = "ab".repeat(32);
    let never_read = futures_util::stream::once(async { panic!("the body was read") });
    let piece = UploadPiece { first: 0, len: 10, total: MAX_BYTES + 1 };
    match fixture.service.upload::<_, Infallible>(&ann, &hash, None, piece, never_read).await {
        Err(error @ BlobError::TooLarge { size, max: MAX_BYTES }) if size == MAX_BYTES + 1 => {
            assert_eq!(error.class(), ErrorClass::ResourceExhausted);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        fixture.service.upload(&ann, "NOT-A-HASH", None, whole(b"x"), body(b"x")).await,
        Err(BlobError::InvalidHash(_))
    ));
}

#[test]
fn content_ranges_are_read_strictly() {
    let piece = UploadPiece::parse(Some("bytes 100-199/1000"), Some(100)).unwrap();
    assert_eq!(piece, UploadPiece { first: 100, len: 100, total: 1000 });
    assert_eq!(UploadPiece::parse(None, Some(5)).unwrap(), UploadPiece { first: 0, len: 5, total: 5 });
    assert_eq!(UploadPiece::parse(Some("bytes */0"), None).unwrap(), UploadPiece { first: 0, len: 0, total: 0 });
    for bad in ["bytes 5-1/10", "bytes 0-10/10", "items 0-1/2", "bytes 0-1", "bytes a-b/c"] {
        assert!(matches!(UploadPiece::parse(Some(bad), None), Err(BlobError::BadRange(_))), "{bad}");
    }
    assert!(matches!(UploadPiece::parse(Some("bytes 0-9/10"), Some(9)), Err(BlobError::BadRange(_))));
    assert!(matches!(UploadPiece::parse(None, None), Err(BlobError::BadRange(_))));
}

#[tokio::test]
async fn readers_are_the_uploader_and_readers_of_a_referencing_record() {
    let fixture = fixture(Duration::from_secs(3600));
    let (ann, bob) = (user("ann", "c1"), user("bob", "c2"));
    let photo = b"ann's photo".to_vec();
    let hash = hash_of(&photo);
    fixture.service.upload(&ann, &hash, None, whole(&photo), body(&photo)).await.unwrap();
    assert!(matches!(read_all(&fixture.service, &bob, &hash, None).await, Err(BlobError::Forbidden(_))));
    // A record in ann's own partition: bob may not read it, so naming it does not help.
    let reference = blob_field(&hash, photo.len() as u64);
    let own = crate::storage::PartitionName::new("Photo", "ann");
    fixture.store.apply_batch(&own, vec![record("p1", reference.clone())], Vec::new()).unwrap();
    let hint =
        |source: &str, key: &str, id: &str| Some(RecordHint { source: source.into(), key: key.into(), id: id.into() });
    let refused = read_all(&fixture.service, &bob, &hash, hint("Photo", "ann", "p1")).await;
    assert!(matches!(refused, Err(BlobError::Forbidden(_))), "{refused:?}");
    // A record in the shared partition that references it: bob may, once he names it.
    let shared = crate::storage::PartitionName::new("Shared", "*");
    fixture.store.apply_batch(&shared, vec![record("s1", reference)], Vec::new()).unwrap();
    let refused = read_all(&fixture.service, &bob, &hash, hint("Shared", "*", "other")).await;
    assert!(matches!(refused, Err(BlobError::Forbidden(_))), "a record that does not reference it");
    assert_eq!(read_all(&fixture.service, &bob, &hash, hint("Shared", "*", "s1")).await.unwrap(), photo);
    assert_eq!(read_all(&fixture.service, &bob, &hash, None).await.unwrap(), photo, "remembered");
    let unknown = hash_of(b"never uploaded");
    assert!(matches!(read_all(&fixture.service, &ann, &unknown, None).await, Err(BlobError::NotFound(_))));
}

#[tokio::test]
async fn mutations_may_reference_only_stored_blobs_of_the_right_size() {
    let fixture = fixture(Duration::from_secs(3600));
    let ann = user("ann", "c1");
    let photo = b"photo".to_vec();
    let hash = hash_of(&photo);
    let partition = crate::storage::PartitionName::new("Photo", "ann");
    let fields = blob_field(&hash, photo.len() as u64);
    match fixture.service.check_references(&partition, &fields).await {
        Err(error @ BlobError::NotUploaded(_)) => assert_eq!(error.class(), ErrorClass::Unavailable, "retryable"),
        other => panic!("{other:?}"),
    }
    fixture.service.upload(&ann, &hash, None, whole(&photo), body(&photo)).await.unwrap();
    fixture.service.check_references(&partition, &fields).await.unwrap();
    assert_eq!(fixture.store.blob(&hash).unwrap().unwrap().partitions, vec![partition.clone()]);
    let wrong_size = blob_field(&hash, 6);
    assert!(matches!(
        fixture.service.check_references(&partition, &wrong_size).await,
        Err(BlobError::SizeMismatch { stored: 5, referenced: 6, .. })
    ));
    let too_large = blob_field(&hash_of(b"big"), MAX_BYTES + 1);
    assert!(matches!(fixture.service.check_references(&partition, &too_large).await, Err(BlobError::TooLarge { .. })));
    let no_blobs = BTreeMap::from([("n".to_owned(), Value::int(1))]);
    fixture.service.check_references(&partition, &no_blobs).await.unwrap();
}

#[tokio::test]
async fn unreferenced_blobs_are_collected_after_their_grace_period_only() {
    let grace = Duration::from_secs(3600);
    let fixture = fixture(grace);
    let ann = user("ann", "c1");
    let [kept_by_record, kept_by_mutation, orphan] =
        [b"in a record".to_vec(), b"in a mutation".to_vec(), b"orphan".to_vec()];
    for bytes in [&kept_by_record, &kept_by_mutation, &orphan] {
        fixture.service.upload(&ann, &hash_of(bytes), None, whole(bytes), body(bytes)).await.unwrap();
    }
    let partition = crate::storage::PartitionName::new("Photo", "ann");
    let in_record = blob_field(&hash_of(&kept_by_record), kept_by_record.len() as u64);
    fixture.store.apply_batch(&partition, vec![record("r1", in_record)], Vec::new()).unwrap();
    let mutation = QueuedMutation {
        client_id: "c1".into(),
        user_id: "ann".into(),
        seq: 0,
        mutation_id: "m1".into(),
        partition: partition.clone(),
        op: MutationOp::Create,
        id: "tmp-1".into(),
        fields: blob_field(&hash_of(&kept_by_mutation), kept_by_mutation.len() as u64),
        base_version: 0,
    };
    fixture.store.enqueue_mutation(&mutation, 10).unwrap();
    // Within the grace period nothing goes, referenced or not.
    let report = fixture.service.collect_garbage().await.unwrap();
    assert_eq!((report.referenced, report.deleted, report.kept), (2, 0, 1));
    // A pass after the grace period: only the orphan goes.
    let later = crate::auth::now_ms() + 5_400_001;
    let report =
        gc::collect(&fixture.store, &fixture.service.files, &*fixture.service.bytes, grace, later).await.unwrap();
    assert_eq!((report.referenced, report.deleted, report.kept), (2, 1, 0));
    assert_eq!(fixture.store.blob(&hash_of(&orphan)).unwrap(), None);
    assert!(fixture.service.files.stored_size(&hash_of(&orphan)).await.unwrap().is_none(), "its file is gone");
    for kept in [&kept_by_record, &kept_by_mutation] {
        assert_eq!(read_all(&fixture.service, &ann, &hash_of(kept), None).await.unwrap(), *kept);
    }
}

fn blob_field(hash: &str, size: u64) -> BTreeMap<String, Value> {
    let blob = Blob { hash: hash.to_owned(), size, media_type: "image/jpeg".into(), name: "p.jpg".into() };
    BTreeMap::from([("photo".to_owned(), Value::blob(blob))])
}

fn record(id: &str, fields: BTreeMap<String, Value>) -> Record {
    Record { id: id.to_owned(), fields, version: 0 }
}

#[tokio::test]
async fn the_directory_stores_lists_streams_ranges_and_deletes_verified_blobs() {
    let fixture = fixture(Duration::from_secs(3600));
    let ann = user("ann", "c1");
    let bytes: Vec<u8> = (0..200u8).collect();
    let hash = hash_of(&bytes);
    let outcome = fixture.service.upload(&ann, &hash, None, whole(&bytes), body(&bytes)).await.unwrap();
    assert_eq!(outcome, UploadOutcome::Stored { size: 200 });
    let stored = fixture.service.bytes();
    assert_eq!(stored.size(&hash).await.unwrap(), Some(200));
    let listed = stored.list().await.unwrap();
    assert_eq!(listed.iter().map(|blob| (blob.hash.as_str(), blob.size)).collect::<Vec<_>>(), [(hash.as_str(), 200)]);
    let reader = stored.open(&hash).await.unwrap().expect("stored");
    let mut range = Vec::new();
    let mut stream = reader.stream(50, 10).await.unwrap();
    while let Some(chunk) = stream.next().await {
        range.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(range, &bytes[50..60]);
    stored.delete(&hash).await.unwrap();
    stored.delete(&hash).await.unwrap();
    assert_eq!(stored.size(&hash).await.unwrap(), None);
    assert!(stored.list().await.unwrap().is_empty());
    assert!(stored.describe().starts_with("directory "));
}

#[tokio::test]
async fn bytes_without_metadata_are_collected_after_the_grace_period() {
    let fixture = fixture(Duration::from_secs(60));
    let ann = user("ann", "c1");
    let bytes = b"stored, then the metadata was lost".to_vec();
    let hash = hash_of(&bytes);
    fixture.service.upload(&ann, &hash, None, whole(&bytes), body(&bytes)).await.unwrap();
    fixture.store.delete_blob(&hash).unwrap();
    let report = fixture.service.collect_garbage().await.unwrap();
    assert_eq!(report.orphans_deleted, 0, "young bytes stay");
    let later = crate::auth::now_ms() + 3_600_000;
    let files = &fixture.service.files;
    let report = gc::collect(&fixture.store, files, &*fixture.service.bytes, Duration::from_secs(60), later).await;
    assert_eq!(report.unwrap().orphans_deleted, 1);
    assert_eq!(fixture.service.bytes.size(&hash).await.unwrap(), None);
}
