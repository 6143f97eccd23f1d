use std::time::Duration;

use tokio::sync::oneshot;
use tonic::transport::Endpoint;

use super::*;
use crate::v1::PartitionKey;
use crate::v1::channel_client::ChannelClient;

/// Bounds every wait on the network in these tests.
const TEST_TIMEOUT: Duration = Duration::from_secs(10);

fn every_error() -> Vec<(ChannelError, Code)> {
    vec![
        (ChannelError::InvalidArgument("bad field".into()), Code::InvalidArgument),
        (ChannelError::NotFound("no acc-1".into()), Code::NotFound),
        (ChannelError::AlreadyExists("acc-1 exists".into()), Code::AlreadyExists),
        (ChannelError::PermissionDenied("not yours".into()), Code::PermissionDenied),
        (ChannelError::Unauthenticated("who are you".into()), Code::Unauthenticated),
        (ChannelError::FailedPrecondition("token expired".into()), Code::FailedPrecondition),
        (ChannelError::Unavailable("database locked".into()), Code::Unavailable),
        (ChannelError::DeadlineExceeded("too slow".into()), Code::DeadlineExceeded),
        (ChannelError::Unimplemented("no search".into()), Code::Unimplemented),
        (ChannelError::Internal("disk on fire".into()), Code::Internal),
    ]
}

#[test]
fn every_error_maps_to_its_code_and_back() {
    for (error, code) in every_error() {
        assert_eq!(error.code(), code, "{error}");
        let status = Status::from(error.clone());
        assert_eq!(status.code(), code);
        assert_eq!(status.message(), error.message());
        assert_eq!(ChannelError::from_status(&status), error);
        assert_eq!(ChannelError::from(status), error);
    }
}

#[test]
fn codes_a_channel_does_not_send_fold_into_the_nearest_error() {
    let fold = |code| ChannelError::from_status(&Status::new(code, "m"));
    assert_eq!(fold(Code::Cancelled), ChannelError::Unavailable("m".into()));
    assert_eq!(fold(Code::Aborted), ChannelError::Unavailable("m".into()));
    assert_eq!(fold(Code::ResourceExhausted), ChannelError::Unavailable("m".into()));
    assert_eq!(fold(Code::OutOfRange), ChannelError::InvalidArgument("m".into()));
    assert_eq!(fold(Code::Unknown), ChannelError::Internal("m".into()));
    assert_eq!(fold(Code::DataLoss), ChannelError::Internal("m".into()));
    assert_eq!(fold(Code::Ok), ChannelError::Internal("m".into()));
}

#[test]
fn only_unavailable_and_deadline_are_transient() {
    for (error, code) in every_error() {
        assert_eq!(error.is_transient(), matches!(code, Code::Unavailable | Code::DeadlineExceeded), "{error}");
    }
}

#[test]
fn write_outcomes_round_trip_through_the_response() {
    let record = Record { id: "acc-1".into(), ..Record::default() };
    for outcome in [WriteOutcome::Written(record.clone()), WriteOutcome::Conflict(record.clone())] {
        let response = WriteResponse::from(outcome.clone());
        assert_eq!(WriteOutcome::try_from(response), Ok(outcome));
    }
    assert!(matches!(WriteOutcome::try_from(WriteResponse { result: None }), Err(ChannelError::Internal(_))));
}

/// Fails every write with the error named by the record id, and watches forever.
struct ErrorBackend;

#[tonic::async_trait]
impl ChannelBackend for ErrorBackend {
    async fn describe(&self) -> Result<DescribeResponse> {
        Ok(DescribeResponse::default())
    }

    async fn query(&self, _request: QueryRequest) -> Result<RecordStream> {
        let records =
            vec![Ok(Record { id: "r1".into(), ..Record::default() }), Err(ChannelError::Internal("boom".into()))];
        Ok(Box::pin(tokio_stream::iter(records)))
    }

    async fn watch(&self, _request: WatchRequest) -> Result<ChangeStream> {
        Ok(Box::pin(stream::pending()))
    }

    async fn create(&self, request: WriteRequest) -> Result<WriteOutcome> {
        let id = request.record.unwrap_or_default().id;
        let (error, _) = every_error().into_iter().find(|(_, code)| code.description() == id).expect("known code");
        Err(error)
    }

    async fn update(&self, request: WriteRequest) -> Result<WriteOutcome> {
        Ok(WriteOutcome::Conflict(request.record.unwrap_or_default()))
    }

    async fn delete(&self, request: WriteRequest) -> Result<WriteOutcome> {
        Ok(WriteOutcome::Written(request.record.unwrap_or_default()))
    }
}

struct TestChannel {
    client: ChannelClient<tonic::transport::Channel>,
    stop: oneshot::Sender<()>,
    served: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

async fn start(backend: impl ChannelBackend) -> TestChannel {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = oneshot::channel();
    let served = tokio::spawn(serve(backend, listener, async move { stopped.await.unwrap_or(()) }));
    let endpoint = Endpoint::from_shared(format!("http://{address}")).expect("endpoint");
    let client = ChannelClient::new(
        tokio::time::timeout(TEST_TIMEOUT, endpoint.connect()).await.expect("in time").expect("connect"),
    );
    TestChannel { client, stop, served }
}

#[tokio::test]
async fn the_adapter_sends_each_error_with_its_code_and_hides_internal_messages() {
    let mut channel = start(ErrorBackend).await;
    for (error, code) in every_error() {
        let request = WriteRequest {
            record: Some(Record { id: code.description().into(), ..Record::default() }),
            ..WriteRequest::default()
        };
        let status = channel.client.create(request).await.expect_err("fails");
        assert_eq!(status.code(), code);
        let received = ChannelError::from_status(&status);
        if code == Code::Internal {
            assert_eq!(received, ChannelError::Internal(INTERNAL_ERROR_MESSAGE.into()));
        } else {
            assert_eq!(received, error);
        }
    }
}

#[tokio::test]
async fn optional_operations_default_to_unimplemented() {
    let mut channel = start(ErrorBackend).await;
    let status = channel.client.authenticate(AuthenticateRequest::default()).await.expect_err("unimplemented");
    assert_eq!(status.code(), Code::Unimplemented);
    let status = channel.client.search(SearchRequest::default()).await.expect_err("unimplemented");
    assert_eq!(status.code(), Code::Unimplemented);

    struct NoWatch;
    #[tonic::async_trait]
    impl ChannelBackend for NoWatch {
        async fn describe(&self) -> Result<DescribeResponse> {
            Ok(DescribeResponse::default())
        }
        async fn query(&self, _request: QueryRequest) -> Result<RecordStream> {
            Ok(Box::pin(tokio_stream::empty()))
        }
        async fn create(&self, _request: WriteRequest) -> Result<WriteOutcome> {
            Err(ChannelError::PermissionDenied("read only".into()))
        }
        async fn update(&self, _request: WriteRequest) -> Result<WriteOutcome> {
            Err(ChannelError::PermissionDenied("read only".into()))
        }
        async fn delete(&self, _request: WriteRequest) -> Result<WriteOutcome> {
            Err(ChannelError::PermissionDenied("read only".into()))
        }
    }
    let mut channel = start(NoWatch).await;
    let status = channel.client.watch(WatchRequest::default()).await.expect_err("unimplemented");
    assert_eq!(status.code(), Code::Unimplemented);
}

#[tokio::test]
async fn a_stream_error_ends_the_stream_after_the_items_before_it() {
    let mut channel = start(ErrorBackend).await;
    let request = QueryRequest { partition: Some(PartitionKey { source: "S".into(), key: "*".into() }) };
    let mut records = channel.client.query(request).await.expect("query").into_inner();
    let first = records.message().await.expect("first").expect("a record");
    assert_eq!(first.id, "r1");
    let status = records.message().await.expect_err("then the error");
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(status.message(), INTERNAL_ERROR_MESSAGE);
}

#[tokio::test]
async fn write_outcomes_arrive_as_record_or_conflict() {
    let mut channel = start(ErrorBackend).await;
    let request =
        WriteRequest { record: Some(Record { id: "x".into(), ..Record::default() }), ..WriteRequest::default() };
    let updated = channel.client.update(request.clone()).await.expect("update").into_inner();
    assert!(matches!(WriteOutcome::try_from(updated), Ok(WriteOutcome::Conflict(record)) if record.id == "x"));
    let deleted = channel.client.delete(request).await.expect("delete").into_inner();
    assert!(matches!(WriteOutcome::try_from(deleted), Ok(WriteOutcome::Written(record)) if record.id == "x"));
}

#[tokio::test]
async fn shutdown_ends_open_watches_with_unavailable_and_stops_serving() {
    let mut channel = start(ErrorBackend).await;
    let mut batches = channel.client.watch(WatchRequest::default()).await.expect("watch").into_inner();
    channel.stop.send(()).expect("server running");
    let status = tokio::time::timeout(TEST_TIMEOUT, batches.message()).await.expect("in time").expect_err("ended");
    assert_eq!(status.code(), Code::Unavailable);
    drop(batches);
    drop(channel.client);
    tokio::time::timeout(TEST_TIMEOUT, channel.served).await.expect("stops in time").expect("joined").expect("served");
}

#[test]
fn a_dyn_backend_can_be_served() {
    let backend: Arc<dyn ChannelBackend> = Arc::new(ErrorBackend);
    let _server = ChannelGrpcService::with_shutdown(backend, CancellationToken::new()).into_server();
}
