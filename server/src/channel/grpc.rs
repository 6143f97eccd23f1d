//! The gRPC client of a backend channel: the only file of the channel framework that talks
//! gRPC ([`ChannelCallError`] only keeps the status code a channel answered with).

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use syncline_proto::v1::channel_client::ChannelClient;
use syncline_proto::v1::{
    AuthenticateRequest, AuthenticateResponse, BlobRequest, ChangeBatch, DescribeRequest, DescribeResponse,
    PartitionKey, QueryRequest, Record, SearchRequest, SearchResponse, WatchRequest, WriteRequest, write_response,
};
use tonic::transport::{Channel, Endpoint};

use super::ChannelCallError;
use crate::storage::{MutationOp, PartitionName};

/// Time allowed to open a connection to a channel.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of unary calls (Authenticate, Describe).
const UNARY_TIMEOUT: Duration = Duration::from_secs(15);
/// Deadline of a write (Create, Update, Delete) to a channel; a write that takes longer is
/// retried (with the same mutation id).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of a search.
pub const SEARCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Most records accepted from one Query: bounds the memory of one poll.
pub const MAX_QUERY_RECORDS: usize = 1_000_000;

/// What a channel did with a write.
#[derive(Clone, Debug, PartialEq)]
pub enum WriteOutcome {
    /// The record as stored.
    Stored(Record),
    /// The write conflicts with this current record.
    Conflict(Record),
    /// Done, with no record to return (deletes).
    Done,
}

/// A lazily connected client of one channel endpoint; cheap to clone.
#[derive(Clone, Debug)]
pub struct ChannelConnection {
    endpoint: String,
    client: ChannelClient<Channel>,
}

impl ChannelConnection {
    /// Returns a client that connects on first use (and reconnects after failures).
    pub fn lazy(endpoint: &str) -> Result<Self, ChannelCallError> {
        let channel = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|error| ChannelCallError::InvalidEndpoint {
                endpoint: endpoint.to_owned(),
                message: error.to_string(),
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Self { endpoint: endpoint.to_owned(), client: ChannelClient::new(channel) })
    }

    /// Returns the endpoint URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn error(&self, status: tonic::Status) -> ChannelCallError {
        status_error(&self.endpoint, &status)
    }

    /// Checks a user's credentials.
    pub async fn authenticate(&self, username: &str, password: &str) -> Result<AuthenticateResponse, ChannelCallError> {
        let mut request =
            tonic::Request::new(AuthenticateRequest { username: username.to_owned(), password: password.to_owned() });
        request.set_timeout(UNARY_TIMEOUT);
        self.client.clone().authenticate(request).await.map(tonic::Response::into_inner).map_err(|s| self.error(s))
    }

    /// Asks the channel which sources it serves and their schemas.
    pub async fn describe(&self) -> Result<DescribeResponse, ChannelCallError> {
        let mut request = tonic::Request::new(DescribeRequest {});
        request.set_timeout(UNARY_TIMEOUT);
        self.client.clone().describe(request).await.map(tonic::Response::into_inner).map_err(|s| self.error(s))
    }

    /// Sends a device's write to the channel.
    pub async fn write(&self, op: MutationOp, write: WriteRequest) -> Result<WriteOutcome, ChannelCallError> {
        let mut request = tonic::Request::new(write);
        request.set_timeout(WRITE_TIMEOUT);
        let mut client = self.client.clone();
        let response = match op {
            MutationOp::Create => client.create(request).await,
            MutationOp::Update => client.update(request).await,
            MutationOp::Delete => client.delete(request).await,
        };
        match response.map_err(|s| self.error(s))?.into_inner().result {
            Some(write_response::Result::Record(record)) => Ok(WriteOutcome::Stored(record)),
            Some(write_response::Result::Conflict(current)) => Ok(WriteOutcome::Conflict(current)),
            None => Ok(WriteOutcome::Done),
        }
    }

    /// Runs a search.
    pub async fn search(&self, search: SearchRequest) -> Result<SearchResponse, ChannelCallError> {
        let mut request = tonic::Request::new(search);
        request.set_timeout(SEARCH_TIMEOUT);
        self.client.clone().search(request).await.map(tonic::Response::into_inner).map_err(|s| self.error(s))
    }

    /// Reads every record of a partition (at most [`MAX_QUERY_RECORDS`]).
    pub async fn query(&self, source: &str, key: &str) -> Result<Vec<Record>, ChannelCallError> {
        let request = QueryRequest { partition: Some(PartitionKey { source: source.to_owned(), key: key.to_owned() }) };
        let mut stream = self.client.clone().query(request).await.map_err(|s| self.error(s))?.into_inner();
        let mut records = Vec::new();
        while let Some(record) = stream.next().await {
            records.push(record.map_err(|s| self.error(s))?);
            if records.len() > MAX_QUERY_RECORDS {
                return Err(ChannelCallError::TooManyRecords {
                    endpoint: self.endpoint.clone(),
                    partition: PartitionName::new(source, key),
                    limit: MAX_QUERY_RECORDS,
                });
            }
        }
        Ok(records)
    }

    /// Opens the stream of a blob's bytes the channel keeps itself (`ReadBlob`); each item
    /// is one chunk.
    pub async fn read_blob(
        &self,
        request: BlobRequest,
    ) -> Result<impl Stream<Item = Result<bytes::Bytes, ChannelCallError>> + Send + use<>, ChannelCallError> {
        let stream = self.client.clone().read_blob(request).await.map_err(|s| self.error(s))?.into_inner();
        let this = self.clone();
        Ok(stream.map(move |item| item.map(|chunk| bytes::Bytes::from(chunk.data)).map_err(|s| this.error(s))))
    }

    /// Opens the change stream of `sources` after `resume_token`.
    pub async fn watch(
        &self,
        sources: Vec<String>,
        resume_token: Vec<u8>,
    ) -> Result<impl Stream<Item = Result<ChangeBatch, ChannelCallError>> + use<>, ChannelCallError> {
        let stream = self
            .client
            .clone()
            .watch(WatchRequest { sources, resume_token })
            .await
            .map_err(|s| self.error(s))?
            .into_inner();
        let this = self.clone();
        Ok(stream.map(move |item| item.map_err(|s| this.error(s))))
    }
}

/// Returns the error of a call to `endpoint` that ended with `status`. Unavailable, deadline
/// exceeded, resource exhausted, aborted and unknown (how tonic reports a broken connection)
/// are worth retrying; every other code is a refusal.
fn status_error(endpoint: &str, status: &tonic::Status) -> ChannelCallError {
    use tonic::Code;
    let (endpoint, code, message) = (endpoint.to_owned(), status.code(), status.message().to_owned());
    match code {
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted | Code::Unknown => {
            ChannelCallError::Unavailable { endpoint, code, message }
        }
        Code::Ok
        | Code::Cancelled
        | Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::Internal
        | Code::DataLoss
        | Code::Unauthenticated => ChannelCallError::Rejected { endpoint, code, message },
    }
}

#[cfg(test)]
mod tests {
    use syncline_proto::v1::ErrorCode;
    use tonic::Code;

    use super::*;

    /// Every status a channel may answer with: whether it is retried, and the error code the
    /// device whose search or mutation it failed is told.
    #[test]
    fn each_status_code_is_retried_or_reaches_the_device_as_its_error_code() {
        let expected = [
            (Code::Ok, false, ErrorCode::Internal),
            (Code::Cancelled, false, ErrorCode::Internal),
            (Code::Unknown, true, ErrorCode::Unavailable),
            (Code::InvalidArgument, false, ErrorCode::BadRequest),
            (Code::DeadlineExceeded, true, ErrorCode::Unavailable),
            (Code::NotFound, false, ErrorCode::NotFound),
            (Code::AlreadyExists, false, ErrorCode::Conflict),
            (Code::PermissionDenied, false, ErrorCode::Forbidden),
            (Code::ResourceExhausted, true, ErrorCode::Unavailable),
            (Code::FailedPrecondition, false, ErrorCode::Conflict),
            (Code::Aborted, true, ErrorCode::Unavailable),
            (Code::OutOfRange, false, ErrorCode::BadRequest),
            (Code::Unimplemented, false, ErrorCode::Unimplemented),
            (Code::Internal, false, ErrorCode::Internal),
            (Code::Unavailable, true, ErrorCode::Unavailable),
            (Code::DataLoss, false, ErrorCode::Internal),
            (Code::Unauthenticated, false, ErrorCode::Unauthenticated),
        ];
        for (code, transient, error_code) in expected {
            let error = status_error("http://crm", &tonic::Status::new(code, "the reason"));
            assert_eq!(error.is_transient(), transient, "{code:?}");
            assert_eq!(error.class().error_code(), error_code, "{code:?}");
            let message = error.device_message();
            if transient {
                assert_eq!(message, "channel http://crm is unavailable: the reason", "{code:?}");
            } else {
                assert_eq!(message, "the reason", "{code:?}: a refusal's own message reaches the device");
            }
        }
    }

    #[test]
    fn errors_made_by_the_client_itself_are_permanent() {
        let too_many = ChannelCallError::TooManyRecords {
            endpoint: "http://crm".into(),
            partition: PartitionName::new("Task", "ann"),
            limit: MAX_QUERY_RECORDS,
        };
        assert!(!too_many.is_transient());
        assert_eq!(too_many.class().error_code(), ErrorCode::ResourceExhausted);
        let invalid = ChannelConnection::lazy("not a url").expect_err("refused");
        assert!(matches!(invalid, ChannelCallError::InvalidEndpoint { .. }), "{invalid:?}");
        assert!(!invalid.is_transient());
        assert_eq!(invalid.class().error_code(), ErrorCode::Unavailable);
    }
}
