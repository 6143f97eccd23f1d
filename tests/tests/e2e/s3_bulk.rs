//! Issue 18 deliverable 3 with issue 16's cluster mode: bulk files any node can serve. Two
//! nodes on one Redis share a bucket (`[blob.s3]`, a real S3-compatible server on
//! loopback); a bulk file node A writes is put in the bucket, and when node A dies in the
//! middle of a download, the device resumes it on node B with `Range`: B streams the rest
//! from the bucket after checking the token exactly as A would (the signing key is in the
//! shared store). The file's checksum is verified at the end.

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, RANGE};
use syncline_client_sim::PartitionId;
use syncline_client_sim::bulk::{load_file, resolve_url};
use syncline_server::bulk::TokenClaims;
use syncline_server::config::{Config, StoreBackend};
use syncline_server::storage::PartitionName;
use syncline_server::test_util::redis_server::RedisServer;
use syncline_tests::s3::S3Server;
use syncline_tests::{TestServer, raw_login, record};

use crate::bulk::{SQLITE_HEADER, ask_bulk, get, seed, url_file_id};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_a_bulk_download_cut_on_a_dead_node_resumes_on_another_from_the_bucket() {
    let redis = RedisServer::start();
    let s3 = S3Server::start().await;
    let (url, section) = (redis.url(), s3.section("cluster"));
    let configure = move |config: &mut Config| {
        config.store.backend = StoreBackend::Redis;
        config.store.redis_url = Some(url.clone());
        config.blob.s3 = section.clone();
    };
    let node_a = TestServer::start_with(configure.clone()).await;
    let node_b = TestServer::start_with(configure).await;
    node_a.add_user("ann", "ann-pw");
    node_a.add_user("bob", "bob-pw");
    seed(&node_a, "Account", "*", 20_000, |i| record(&format!("acc-{i:05}"), i64::from(i)));
    seed(&node_a, "Contact", "bob", 30, |i| record(&format!("bob-{i}"), i64::from(i)));

    // Ann asks node A; the file it writes is put in the bucket with its metadata.
    let mut connection = raw_login(&node_a.url(), "ann", "ann-pw").await;
    let ready = ask_bulk(&mut connection, "cluster", "Account").await;
    assert!(ready.error.is_none(), "{ready:?}");
    let file = ready.files[0].clone();
    let id = url_file_id(&file.url).to_owned();
    let keys = s3.keys("cluster/bulk").await;
    assert_eq!(keys, vec![format!("cluster/bulk/{id}.json"), format!("cluster/bulk/{id}.sqlite")]);
    let in_bucket = s3.object(&format!("cluster/bulk/{id}.sqlite")).await.expect("the file in the bucket");
    assert_eq!(in_bucket.len() as u64, file.bytes);

    // A third of the file from node A, then node A dies.
    let http = reqwest::Client::new();
    let cut = file.bytes / 3;
    let url_a = resolve_url(&node_a.url(), &file.url);
    let mut response = http.get(&url_a).header(AUTHORIZATION, format!("Bearer {}", file.token)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut received: Vec<u8> = Vec::new();
    while (received.len() as u64) < cut {
        received.extend_from_slice(&response.chunk().await.expect("bytes").expect("more bytes"));
    }
    received.truncate(cut as usize);
    drop(response);
    drop(connection);
    let _data_a = node_a.stop().await;

    // The device resumes on node B, which never wrote the file.
    let url_b = resolve_url(&node_b.url(), &file.url);
    assert!(!node_b.data_dir.join("bulk").join(format!("{id}.sqlite")).exists(), "not on node B's disk");
    let (status, rest) = get(&http, &url_b, Some(&file.token), Some(cut)).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    received.extend_from_slice(&rest);
    assert!(received == in_bucket, "the resumed download equals the file");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resumed.sqlite");
    std::fs::write(&path, &received).unwrap();
    let view = load_file(&path, &PartitionId::new("Account", "*"), &file).expect("a valid file, checksum verified");
    let state = node_b.server.store().partition_state(&PartitionName::new("Account", "*")).unwrap();
    assert_eq!((view.cursor, view.total, view.checksum), (state.head, state.total, state.checksum));
    // A range in the middle, and the headers a download from disk has.
    let response = http.get(&url_b).header(AUTHORIZATION, format!("Bearer {}", file.token)).header(RANGE, "bytes=0-15");
    let response = response.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(response.headers()["content-range"], format!("bytes 0-15/{}", file.bytes).as_str());
    assert_eq!(response.headers()["syncline-checksum"], file.checksum.to_string().as_str());
    assert_eq!(response.bytes().await.unwrap().as_ref(), SQLITE_HEADER);

    // Node B checks tokens exactly as strictly: forged and expired are 401, a token of
    // another file is 403, an unknown file 404; none carries a byte of the file.
    let mut bob = raw_login(&node_b.url(), "bob", "bob-pw").await;
    let bob_file = ask_bulk(&mut bob, "bob", "Contact").await.files.remove(0);
    let mut forged = file.token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let expired = TokenClaims { file_id: id.clone(), user_id: "ann".into(), expires_ms: 1 };
    let expired = node_b.server.services.bulk.signer().issue(&expired);
    let refusals = [
        ("a forged token", url_b.clone(), forged, StatusCode::UNAUTHORIZED),
        ("an expired token", url_b.clone(), expired, StatusCode::UNAUTHORIZED),
        ("bob's token on ann's file", url_b.clone(), bob_file.token.clone(), StatusCode::FORBIDDEN),
        ("an unknown file", format!("{url_b}0"), file.token.clone(), StatusCode::NOT_FOUND),
    ];
    for (what, url, token, expected) in refusals {
        let (status, body) = get(&http, &url, Some(&token), Some(0)).await;
        assert_eq!(status, expected, "{what}");
        assert!(!body.windows(SQLITE_HEADER.len()).any(|window| window == SQLITE_HEADER), "{what}: no file bytes");
    }
    node_b.stop().await;
}
