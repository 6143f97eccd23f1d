//! The domain's shared vocabulary beyond the store's: which partition a request may touch.
//!
//! One partition-access rule, used by the device gateway (devices: user partitions only for
//! their owner, app partitions for everyone, custom ones with an entitlement) and by Ingest
//! (backends: any partition of a configured source, with a well-formed key).

use std::collections::BTreeMap;

use syncline_proto::v1;

use crate::auth::Identity;
use crate::config::{Partitioning, SourceSettings};
use crate::error::ErrorClass;
use crate::storage::PartitionName;

/// The configured sources by name.
pub type Sources = BTreeMap<String, SourceSettings>;

/// Longest partition key a backend may name (user ids are shorter still:
/// [`MAX_USER_NAME_BYTES`](crate::auth::MAX_USER_NAME_BYTES)).
pub const MAX_PARTITION_KEY_BYTES: usize = 256;

/// Why a request may not touch a partition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// No source of that name is configured.
    #[error("unknown source {0:?}")]
    UnknownSource(String),
    /// The device may not touch the partition (another user's, or not entitled).
    #[error("{0}")]
    Forbidden(String),
    /// The partition key does not fit the source's partitioning (a backend's mistake).
    #[error("{0}")]
    InvalidKey(String),
}

impl AccessError {
    /// Returns the class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            AccessError::UnknownSource(_) => ErrorClass::UnknownSource,
            AccessError::Forbidden(_) => ErrorClass::Forbidden,
            AccessError::InvalidKey(_) => ErrorClass::BadRequest,
        }
    }
}

/// Returns the settings of `source`, if it is configured.
fn configured<'a>(sources: &'a Sources, source: &str) -> Result<&'a SourceSettings, AccessError> {
    sources.get(source).ok_or_else(|| AccessError::UnknownSource(source.to_owned()))
}

/// Resolves a subscription's partition for `user_id`, checking access: `user` partitions
/// only for their owner, `app` partitions for everyone, `custom` ones only with an
/// entitlement (none yet: channels grant them).
pub fn resolve_partition(
    sources: &Sources,
    identity: &Identity,
    source: &str,
    key: &str,
) -> Result<PartitionName, AccessError> {
    let user_id = identity.user_id.as_str();
    let partitioning = &configured(sources, source)?.partitioning;
    match partitioning {
        Partitioning::User => {
            if key.is_empty() || key == user_id {
                Ok(PartitionName::new(source, user_id))
            } else {
                Err(AccessError::Forbidden(format!("partition {source}/{key} belongs to another user")))
            }
        }
        Partitioning::App => {
            if key.is_empty() || key == syncline_proto::APP_PARTITION_KEY {
                Ok(PartitionName::new(source, syncline_proto::APP_PARTITION_KEY))
            } else {
                Err(AccessError::Forbidden(format!("{source} is an app source: its only partition key is \"*\"")))
            }
        }
        Partitioning::Custom => {
            if identity.entitlements.contains(&(source.to_owned(), key.to_owned())) {
                Ok(PartitionName::new(source, key))
            } else {
                Err(AccessError::Forbidden(format!("no entitlement to partition {source}/{key}")))
            }
        }
    }
}

/// Returns the sources a user may sync, for Welcome.
pub fn source_infos(sources: &Sources, identity: &Identity) -> Vec<v1::SourceInfo> {
    let user_id = identity.user_id.as_str();
    sources
        .iter()
        .map(|(name, source)| (name, &source.partitioning))
        .map(|(name, partitioning)| v1::SourceInfo {
            name: name.clone(),
            partitioning: partitioning.as_str().to_owned(),
            keys: match partitioning {
                Partitioning::User => vec![user_id.to_owned()],
                Partitioning::App => vec![syncline_proto::APP_PARTITION_KEY.to_owned()],
                Partitioning::Custom => identity
                    .entitlements
                    .iter()
                    .filter(|(source, _)| source == name)
                    .map(|(_, key)| key.clone())
                    .collect(),
            },
        })
        .collect()
}

/// Resolves the partition a backend names in an Ingest push: any partition of a configured
/// source, keyed as its partitioning says (`*` or empty for app sources; 1 to
/// [`MAX_PARTITION_KEY_BYTES`] bytes, not `*`, for user and custom ones).
pub fn backend_partition(sources: &Sources, source: &str, key: &str) -> Result<PartitionName, AccessError> {
    let partitioning = configured(sources, source)?.partitioning;
    match partitioning {
        Partitioning::App => {
            if key.is_empty() || key == syncline_proto::APP_PARTITION_KEY {
                Ok(PartitionName::new(source, syncline_proto::APP_PARTITION_KEY))
            } else {
                Err(AccessError::InvalidKey(format!(
                    "{source} is an app source: its partition key is \"*\" (or empty), not {key:?}"
                )))
            }
        }
        Partitioning::User | Partitioning::Custom => {
            if key.is_empty() || key == syncline_proto::APP_PARTITION_KEY || key.len() > MAX_PARTITION_KEY_BYTES {
                Err(AccessError::InvalidKey(format!(
                    "{source} is partitioned by {}: give the partition key (1 to {MAX_PARTITION_KEY_BYTES} bytes, not \"*\")",
                    partitioning.as_str()
                )))
            } else {
                Ok(PartitionName::new(source, key))
            }
        }
    }
}
