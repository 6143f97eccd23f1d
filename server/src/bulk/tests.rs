use std::time::Duration;

use super::*;
use crate::auth::now_ms;
use crate::test_util::fixtures::{bulk_settings, record, sources, temp_store};

fn account() -> PartitionName {
    PartitionName::new("Account", "*")
}

fn open(store: &Arc<dyn Store>, dir: &std::path::Path, change: impl FnOnce(&mut BulkSettings)) -> BulkSnapshots {
    let mut settings = bulk_settings(dir);
    change(&mut settings);
    BulkSnapshots::open(store.clone(), sources(None), settings).expect("open")
}

fn seed(store: &Arc<dyn Store>, partition: &PartitionName, count: u32) {
    let records = (0..count).map(|i| record(&format!("{}-{i:05}", partition.key), i64::from(i))).collect();
    store.apply_batch(partition, records, Vec::new()).expect("seed");
}

#[tokio::test]
async fn a_file_is_reused_until_the_partition_moved_reuse_changes() {
    let (dir, store) = temp_store();
    seed(&store, &account(), 100);
    let bulk = open(&store, &dir.path().join("bulk"), |settings| settings.reuse_changes = 10);
    let first = bulk.snapshot(&account()).await.expect("written");
    store.apply_batch(&account(), vec![record("extra-1", 1)], Vec::new()).expect("one change");
    let again = bulk.snapshot(&account()).await.expect("reused");
    assert_eq!(again.id, first.id, "one change is fewer than 10");
    let many = (0..9).map(|i| record(&format!("more-{i}"), i)).collect();
    store.apply_batch(&account(), many, Vec::new()).expect("nine more");
    let fresh = bulk.snapshot(&account()).await.expect("rewritten");
    assert_ne!(fresh.id, first.id, "10 changes are not fewer than 10");
    assert_eq!(fresh.record_count, 110);
    assert_eq!(bulk.catalog().files().len(), 2, "the old file stays until it expires");
}

#[tokio::test]
async fn concurrent_requests_for_one_partition_share_one_write() {
    let (dir, store) = temp_store();
    seed(&store, &account(), 3_000);
    let bulk = open(&store, &dir.path().join("bulk"), |_| {});
    let partition = account();
    let (a, b) = tokio::join!(bulk.snapshot(&partition), bulk.snapshot(&partition));
    assert_eq!(a.expect("a").id, b.expect("b").id);
    assert_eq!(bulk.catalog().files().len(), 1);
}

#[tokio::test]
async fn expired_files_are_collected_and_the_catalog_survives_a_restart() {
    let (dir, store) = temp_store();
    seed(&store, &account(), 10);
    let bulk_dir = dir.path().join("bulk");
    let bulk = open(&store, &bulk_dir, |_| {});
    let file = bulk.snapshot(&account()).await.expect("written");
    std::fs::write(bulk_dir.join("half.tmp"), b"crashed mid-write").expect("leftover");
    drop(bulk);
    let reopened = open(&store, &bulk_dir, |_| {});
    assert_eq!(reopened.catalog().get(&file.id).as_deref(), Some(file.as_ref()), "rebuilt from the file's meta");
    assert!(!bulk_dir.join("half.tmp").exists(), "unfinished files are deleted at start");
    assert_eq!(reopened.collect_expired(), 0, "younger than file_ttl");
    assert_eq!(reopened.catalog().collect_expired(now_ms() + 3_600_000, 3_600_000), 1);
    assert!(reopened.catalog().get(&file.id).is_none());
    assert!(!reopened.catalog().path(&file.id).exists(), "the file is deleted");
}

#[tokio::test]
async fn downloads_are_authorized_by_file_user_and_time() {
    let (dir, store) = temp_store();
    let ann = PartitionName::new("Contact", "ann");
    let bob = PartitionName::new("Contact", "bob");
    seed(&store, &ann, 5);
    seed(&store, &bob, 5);
    let bulk = open(&store, &dir.path().join("bulk"), |_| {});
    let ann_file = bulk.snapshot(&ann).await.expect("ann");
    let bob_file = bulk.snapshot(&bob).await.expect("bob");
    let granted = bulk.grant(&ann_file, "ann");
    assert_eq!(granted.url, format!("/v1/bulk/{}", ann_file.id));
    let (file, path) = bulk.authorize(&ann_file.id, Some(&granted.token)).expect("ann's own file");
    assert_eq!((file.id.as_str(), path), (ann_file.id.as_str(), bulk.catalog().path(&ann_file.id)));
    let class = |result: Result<_, BulkError>| result.map(|_| ()).unwrap_err().class();
    assert_eq!(class(bulk.authorize(&bob_file.id, Some(&granted.token))), ErrorClass::Forbidden);
    assert_eq!(class(bulk.authorize("0123", Some(&granted.token))), ErrorClass::NotFound);
    assert_eq!(class(bulk.authorize(&ann_file.id, None)), ErrorClass::Unauthenticated);
    let expired = TokenClaims { file_id: ann_file.id.clone(), user_id: "ann".into(), expires_ms: now_ms() - 1 };
    assert_eq!(class(bulk.authorize(&ann_file.id, Some(&bulk.signer().issue(&expired)))), ErrorClass::Unauthenticated);
    let forged = TokenSigner::new(vec![0; 32]).issue(&TokenClaims { expires_ms: now_ms() + 60_000, ..expired.clone() });
    assert_eq!(class(bulk.authorize(&ann_file.id, Some(&forged))), ErrorClass::Unauthenticated);
    // A token signed for bob's file but naming ann: the file's partition is bob's.
    let stolen = TokenClaims { file_id: bob_file.id.clone(), user_id: "ann".into(), expires_ms: now_ms() + 60_000 };
    assert_eq!(class(bulk.authorize(&bob_file.id, Some(&bulk.signer().issue(&stolen)))), ErrorClass::Forbidden);
}

#[tokio::test]
async fn a_job_pages_small_partitions_and_survives_a_restart() {
    let (dir, store) = temp_store();
    let ann = PartitionName::new("Contact", "ann");
    seed(&store, &account(), 50);
    seed(&store, &ann, 3);
    let bulk_dir = dir.path().join("bulk");
    let bulk = Arc::new(open(&store, &bulk_dir, |_| {}));
    let job = bulk.accept("ann", "r1", &[account(), ann.clone()], 10).await.expect("accepted");
    // The server stops before running it: the manifest stays.
    drop(bulk);
    let restarted = Arc::new(open(&store, &bulk_dir, |_| {}));
    assert!(restarted.catalog().files().is_empty());
    let tracker = TaskTracker::new();
    let shutdown = CancellationToken::new();
    restarted.spawn(&tracker, &shutdown);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while restarted.catalog().files().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the pending job was not resumed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let files = restarted.catalog().files();
    assert_eq!(files.len(), 1, "Contact/ann is below min_records: no file");
    assert_eq!(files[0].partition, account());
    let again = restarted.accept(&job.user_id, "r1", &job.partition_names(), job.min_records).await.expect("again");
    let outcome = restarted.run(&again).await.expect("ran");
    let ready = restarted.ready("r1", "ann", Ok(outcome));
    assert_eq!(ready.files.len(), 1);
    assert_eq!(ready.files[0].record_count, 50);
    assert_eq!(ready.page_instead, vec!["Contact".to_owned()]);
    assert_eq!(ready.cursors.get("Account"), Some(&ready.files[0].sequence));
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
}

#[tokio::test]
async fn too_many_queued_jobs_are_refused() {
    let (dir, store) = temp_store();
    let bulk = open(&store, &dir.path().join("bulk"), |settings| settings.max_queued_jobs = 1);
    let first = bulk.accept("ann", "r1", &[account()], 0).await.expect("first");
    let refused = bulk.accept("ann", "r2", &[account()], 0).await.unwrap_err();
    assert_eq!(refused.class(), ErrorClass::ResourceExhausted);
    bulk.run(&first).await.expect("ran");
    bulk.accept("ann", "r3", &[account()], 0).await.expect("room again");
}
