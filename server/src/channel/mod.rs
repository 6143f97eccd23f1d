//! The channel framework, server side: the gRPC client of backend channels ([`grpc`]) and
//! change capture ([`capture`]): following a channel's Watch stream with its resume token
//! stored atomically with the changes, or polling partitions that have subscribers and
//! logging only real differences.

pub mod capture;
pub mod grpc;
pub mod wiring;

use std::collections::BTreeMap;

use self::grpc::ChannelConnection;
use crate::config::SourceSettings;

/// The channel of each source that has one, connected lazily; shared by mutation dispatch
/// and the gateway's searches.
#[derive(Debug, Default)]
pub struct ChannelRegistry(BTreeMap<String, ChannelConnection>);

impl ChannelRegistry {
    /// Returns the channels of `sources` (those with a `channel`).
    pub fn new(sources: &BTreeMap<String, SourceSettings>) -> Result<Self, ChannelError> {
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

/// Why a call to a channel failed, in the caller's terms.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChannelError {
    /// The channel could not be reached or did not answer in time: retry later.
    #[error("channel {endpoint} is unavailable: {message}")]
    Unavailable { endpoint: String, message: String },
    /// The channel refused the request; retrying the same request will not help.
    #[error("channel {endpoint} refused the request ({code}): {message}")]
    Rejected { endpoint: String, code: String, message: String },
    /// The endpoint is not a valid URL.
    #[error("channel endpoint {endpoint:?} is not valid: {message}")]
    InvalidEndpoint { endpoint: String, message: String },
}

impl ChannelError {
    /// Returns true when retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            ChannelError::Unavailable { .. } => true,
            ChannelError::Rejected { .. } | ChannelError::InvalidEndpoint { .. } => false,
        }
    }
}
