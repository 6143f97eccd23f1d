//! The channel framework, server side: the gRPC client of backend channels ([`grpc`]) and
//! change capture ([`capture`]): following a channel's Watch stream with its resume token
//! stored atomically with the changes, or polling partitions that have subscribers and
//! logging only real differences; its counters per source are in [`capture_counters`].

pub mod capture;
pub mod capture_counters;
pub mod grpc;
pub mod schema;
pub mod wiring;

use std::collections::BTreeMap;

use self::grpc::ChannelConnection;
use crate::config::SourceSettings;
use crate::error::ErrorClass;
use crate::storage::PartitionName;

/// The channel of each source that has one, connected lazily; shared by mutation dispatch
/// and the gateway's searches.
#[derive(Debug, Default)]
pub struct ChannelRegistry(BTreeMap<String, ChannelConnection>);

impl ChannelRegistry {
    /// Returns the channels of `sources` (those with a `channel`).
    pub fn new(sources: &BTreeMap<String, SourceSettings>) -> Result<Self, ChannelCallError> {
        let mut channels = BTreeMap::new();
        for (name, source) in sources {
            if let Some(endpoint) = &source.channel {
                channels.insert(name.clone(), ChannelConnection::lazy(endpoint)?);
            }
        }
        Ok(Self(channels))
    }

    /// Returns the channel of `source`, if it has one.
    pub fn get(&self, source: &str) -> Option<&ChannelConnection> {
        self.0.get(source)
    }
}

/// Why a call to a channel failed, in the caller's terms. The channel's gRPC status code is
/// kept as is (never as a name), so that its class ([`ChannelCallError::class`]) is exact.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChannelCallError {
    /// The channel could not be reached, or answered with a status worth retrying (see
    /// `grpc.rs`): retry later.
    #[error("channel {endpoint} is unavailable: {message}")]
    Unavailable { endpoint: String, code: tonic::Code, message: String },
    /// The channel refused the request with the status `code`; retrying the same request
    /// will not help.
    #[error("channel {endpoint} refused the request ({code:?}): {message}")]
    Rejected { endpoint: String, code: tonic::Code, message: String },
    /// A Query answered with more records than the server reads of one partition.
    #[error("channel {endpoint}: Query of {partition} returned more than {limit} records")]
    TooManyRecords { endpoint: String, partition: PartitionName, limit: usize },
    /// The endpoint is not a valid URL.
    #[error("channel endpoint {endpoint:?} is not valid: {message}")]
    InvalidEndpoint { endpoint: String, message: String },
}

impl ChannelCallError {
    /// Returns true when retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            ChannelCallError::Unavailable { .. } => true,
            ChannelCallError::Rejected { .. }
            | ChannelCallError::TooManyRecords { .. }
            | ChannelCallError::InvalidEndpoint { .. } => false,
        }
    }

    /// Returns the class of this error: a refusal has the class of its status code; a channel
    /// that cannot be reached (or has no usable endpoint) is unavailable.
    pub fn class(&self) -> ErrorClass {
        match self {
            ChannelCallError::Unavailable { .. } | ChannelCallError::InvalidEndpoint { .. } => ErrorClass::Unavailable,
            ChannelCallError::Rejected { code, .. } => ErrorClass::of_grpc(*code),
            ChannelCallError::TooManyRecords { .. } => ErrorClass::ResourceExhausted,
        }
    }

    /// Returns the message for the device whose request failed: the channel's own message
    /// for a refusal (it is written for the device), else the whole error.
    pub fn device_message(&self) -> String {
        match self {
            ChannelCallError::Rejected { message, .. } => message.clone(),
            ChannelCallError::Unavailable { .. }
            | ChannelCallError::TooManyRecords { .. }
            | ChannelCallError::InvalidEndpoint { .. } => self.to_string(),
        }
    }
}
