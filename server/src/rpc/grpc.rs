//! The gRPC client of backend `MobileService`s: the only file of the RPC router that touches
//! tonic types.

use std::time::Duration;

use syncline_proto::mobile_sdk::MobileError;
use syncline_proto::v1::InvokeRequest;
use syncline_proto::v1::mobile_service_client::MobileServiceClient;
use tonic::transport::{Channel, Endpoint};

/// Time allowed to open a connection to a backend (a call's deadline bounds it too).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes a reply message may carry beyond its payload (field tags and lengths) before the
/// client refuses to decode it.
const REPLY_ENVELOPE_BYTES: usize = 1024;

/// How tonic's message starts when a reply is above the decoding limit (it sends it as
/// OUT_OF_RANGE, which from a backend would mean a bad request).
const DECODE_LIMIT_MESSAGE: &str = "Error, decoded message length too large";

/// The endpoint of a backend service is not a usable URL.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct InvalidEndpoint(#[from] tonic::transport::Error);

/// A lazily connected client of one backend endpoint; cheap to clone. Calls to it share one
/// HTTP/2 connection, opened on first use and reopened after failures.
#[derive(Clone, Debug)]
pub struct MobileConnection {
    endpoint: String,
    client: MobileServiceClient<Channel>,
    max_reply_bytes: usize,
}

impl MobileConnection {
    /// Returns a client that connects on first use; replies larger than `max_reply_bytes`
    /// (plus their envelope) fail to decode.
    pub fn lazy(endpoint: &str, max_reply_bytes: usize) -> Result<Self, InvalidEndpoint> {
        let channel = Endpoint::from_shared(endpoint.to_owned())?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        let client = MobileServiceClient::new(channel)
            .max_decoding_message_size(max_reply_bytes.saturating_add(REPLY_ENVELOPE_BYTES));
        Ok(Self { endpoint: endpoint.to_owned(), client, max_reply_bytes })
    }

    /// Returns the endpoint URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Invokes one operation, telling the backend its deadline is `timeout` from now (the
    /// caller enforces it; dropping the returned future cancels the call on the backend).
    pub async fn invoke(&self, request: InvokeRequest, timeout: Duration) -> Result<Vec<u8>, MobileError> {
        let mut request = tonic::Request::new(request);
        request.set_timeout(timeout);
        match self.client.clone().invoke(request).await {
            Ok(response) => Ok(response.into_inner().payload),
            Err(status)
                if status.code() == tonic::Code::OutOfRange && status.message().starts_with(DECODE_LIMIT_MESSAGE) =>
            {
                Err(MobileError::Internal(format!(
                    "the reply of {} is larger than {} bytes",
                    self.endpoint, self.max_reply_bytes
                )))
            }
            Err(status) => Err(MobileError::from_status(&status)),
        }
    }
}
