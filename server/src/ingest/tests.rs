//! Ingest.Push over a real tonic server on 127.0.0.1 port 0: the token, the partition rule,
//! the record and batch limits as gRPC codes, and what a good batch commits.

use std::sync::Arc;

use syncline_proto::v1::ingest_client::IngestClient;
use syncline_proto::v1::{PushRequest, PushResponse, Record};
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::Code;
use tonic::transport::Channel;

use super::IngestService;
use crate::storage::{MAX_BATCH_CHANGES, PartitionName, Store};
use crate::test_util::fixtures::{record, sources, temp_store};

/// The token the test server requires.
const TOKEN: &str = "ingest-secret";

/// An Ingest server over a fresh store, until dropped.
struct IngestServer {
    store: Arc<dyn Store>,
    url: String,
    _dir: tempfile::TempDir,
    _stop: DropGuard,
}

impl IngestServer {
    async fn start() -> Self {
        let (dir, store) = temp_store();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("loopback listener");
        let url = format!("http://{}", listener.local_addr().expect("bound address"));
        let service = IngestService::server(store.clone(), sources(None), Some(TOKEN.to_owned()), Default::default());
        let stop = CancellationToken::new();
        let serving = tonic::transport::Server::builder().add_service(service).serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            stop.clone().cancelled_owned(),
        );
        tokio::spawn(serving);
        Self { store, url, _dir: dir, _stop: stop.drop_guard() }
    }

    /// Pushes a batch with `token` (`None`: no authorization header).
    async fn push(
        &self,
        token: Option<&str>,
        source: &str,
        key: &str,
        upserts: Vec<Record>,
        deletes: Vec<String>,
    ) -> Result<PushResponse, tonic::Status> {
        let mut client = IngestClient::<Channel>::connect(self.url.clone()).await.expect("gRPC connects");
        let mut request = tonic::Request::new(PushRequest { source: source.into(), key: key.into(), upserts, deletes });
        if let Some(token) = token {
            request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ASCII"));
        }
        client.push(request).await.map(tonic::Response::into_inner)
    }

    /// Pushes `upserts` to the app partition of `Account` with the right token.
    async fn push_accounts(&self, upserts: Vec<Record>) -> Result<PushResponse, tonic::Status> {
        self.push(Some(TOKEN), "Account", "*", upserts, Vec::new()).await
    }
}

fn code_of(outcome: Result<PushResponse, tonic::Status>) -> Code {
    match outcome {
        Ok(response) => panic!("expected a refusal, the push was applied: {response:?}"),
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn a_push_without_the_right_token_is_unauthenticated() {
    let server = IngestServer::start().await;
    let missing = server.push(None, "Account", "*", vec![record("a1", 1)], Vec::new()).await;
    assert_eq!(code_of(missing), Code::Unauthenticated);
    let wrong = server.push(Some("guess"), "Account", "*", vec![record("a1", 1)], Vec::new()).await;
    assert_eq!(code_of(wrong), Code::Unauthenticated);
    let app = PartitionName::new("Account", "*");
    assert_eq!(server.store.partition_state(&app).expect("state").head, 0, "nothing was applied");
}

#[tokio::test]
async fn a_push_to_an_unknown_source_or_a_malformed_key_is_an_invalid_argument() {
    let server = IngestServer::start().await;
    let cases = [("Nope", "*"), ("Account", "not-star"), ("Contact", ""), ("Contact", "*")];
    for (source, key) in cases {
        let outcome = server.push(Some(TOKEN), source, key, vec![record("r1", 1)], Vec::new()).await;
        assert_eq!(code_of(outcome), Code::InvalidArgument, "{source}/{key:?}");
    }
    let long_key = "k".repeat(crate::model::MAX_PARTITION_KEY_BYTES + 1);
    let outcome = server.push(Some(TOKEN), "Contact", &long_key, vec![record("r1", 1)], Vec::new()).await;
    assert_eq!(code_of(outcome), Code::InvalidArgument, "a key over the limit");
}

#[tokio::test]
async fn a_batch_with_an_invalid_record_or_too_many_changes_is_refused_whole() {
    let server = IngestServer::start().await;
    let status = server.push_accounts(vec![record("good", 1), record("", 2)]).await.expect_err("an empty id");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let too_many = (0..=MAX_BATCH_CHANGES).map(|n| record(&format!("r{n}"), 1)).collect();
    assert_eq!(code_of(server.push_accounts(too_many).await), Code::InvalidArgument);
    let app = PartitionName::new("Account", "*");
    assert_eq!(server.store.record(&app, "good").expect("read"), None, "no part of a refused batch is applied");
}

#[tokio::test]
async fn a_good_batch_is_committed_and_an_unchanged_resend_changes_nothing() {
    let server = IngestServer::start().await;
    let batch = vec![record("a1", 1), record("a2", 2)];
    let pushed = server.push_accounts(batch.clone()).await.expect("pushed");
    assert_eq!((pushed.applied, pushed.first_seq, pushed.last_seq), (2, 1, 2));
    assert_eq!((pushed.head, pushed.total), (2, 2));
    let app = PartitionName::new("Account", "*");
    let stored = server.store.record(&app, "a2").expect("read").expect("a2 is stored");
    assert_eq!(stored.fields, record("a2", 2).fields);

    let again = server.push_accounts(batch).await.expect("pushed again");
    assert_eq!((again.applied, again.head, again.total), (0, 2, 2), "{again:?}");

    let deleted = server.push(Some(TOKEN), "Account", "", Vec::new(), vec!["a1".into()]).await.expect("deleted");
    assert_eq!((deleted.applied, deleted.head, deleted.total), (1, 3, 1), "an empty key is the app partition");
    assert_eq!(server.store.record(&app, "a1").expect("read"), None);
}
