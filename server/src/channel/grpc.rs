//! The gRPC client of a backend channel: the only file of the channel framework that
//! touches tonic types.

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use syncline_proto::v1::channel_client::ChannelClient;
use syncline_proto::v1::{
    AuthenticateRequest, AuthenticateResponse, ChangeBatch, MutationOp, PartitionKey, QueryRequest, Record,
    SearchRequest, SearchResponse, WatchRequest, WriteRequest, write_response,
};
use tonic::transport::{Channel, Endpoint};

use super::ChannelError;

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
    pub fn lazy(endpoint: &str) -> Result<Self, ChannelError> {
        let channel = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|error| ChannelError::InvalidEndpoint {
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

    fn error(&self, status: tonic::Status) -> ChannelError {
        use tonic::Code;
        let endpoint = self.endpoint.clone();
        match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted | Code::Unknown => {
                ChannelError::Unavailable { endpoint, message: status.message().to_owned() }
            }
            code => {
                ChannelError::Rejected { endpoint, code: format!("{code:?}"), message: status.message().to_owned() }
            }
        }
    }

    /// Checks a user's credentials.
    pub async fn authenticate(&self, username: &str, password: &str) -> Result<AuthenticateResponse, ChannelError> {
        let mut request =
            tonic::Request::new(AuthenticateRequest { username: username.to_owned(), password: password.to_owned() });
        request.set_timeout(UNARY_TIMEOUT);
        self.client.clone().authenticate(request).await.map(tonic::Response::into_inner).map_err(|s| self.error(s))
    }

    /// Sends a device's write to the channel.
    pub async fn write(&self, op: MutationOp, write: WriteRequest) -> Result<WriteOutcome, ChannelError> {
        let mut request = tonic::Request::new(write);
        request.set_timeout(WRITE_TIMEOUT);
        let mut client = self.client.clone();
        let response = match op {
            MutationOp::Create => client.create(request).await,
            MutationOp::Update => client.update(request).await,
            MutationOp::Delete => client.delete(request).await,
            MutationOp::Unspecified => {
                return Err(ChannelError::Rejected {
                    endpoint: self.endpoint.clone(),
                    code: "InvalidArgument".into(),
                    message: "mutation without an operation".into(),
                });
            }
        };
        match response.map_err(|s| self.error(s))?.into_inner().result {
            Some(write_response::Result::Record(record)) => Ok(WriteOutcome::Stored(record)),
            Some(write_response::Result::Conflict(current)) => Ok(WriteOutcome::Conflict(current)),
            None => Ok(WriteOutcome::Done),
        }
    }

    /// Runs a search.
    pub async fn search(&self, search: SearchRequest) -> Result<SearchResponse, ChannelError> {
        let mut request = tonic::Request::new(search);
        request.set_timeout(SEARCH_TIMEOUT);
        self.client.clone().search(request).await.map(tonic::Response::into_inner).map_err(|s| self.error(s))
    }

    /// Reads every record of a partition (at most [`MAX_QUERY_RECORDS`]).
    pub async fn query(&self, source: &str, key: &str) -> Result<Vec<Record>, ChannelError> {
        let request = QueryRequest { partition: Some(PartitionKey { source: source.to_owned(), key: key.to_owned() }) };
        let mut stream = self.client.clone().query(request).await.map_err(|s| self.error(s))?.into_inner();
        let mut records = Vec::new();
        while let Some(record) = stream.next().await {
            records.push(record.map_err(|s| self.error(s))?);
            if records.len() > MAX_QUERY_RECORDS {
                return Err(ChannelError::Rejected {
                    endpoint: self.endpoint.clone(),
                    code: "ResourceExhausted".into(),
                    message: format!("Query of {source}/{key} returned more than {MAX_QUERY_RECORDS} records"),
                });
            }
        }
        Ok(records)
    }

    /// Opens the change stream of `sources` after `resume_token`.
    pub async fn watch(
        &self,
        sources: Vec<String>,
        resume_token: Vec<u8>,
    ) -> Result<impl Stream<Item = Result<ChangeBatch, ChannelError>> + use<>, ChannelError> {
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
