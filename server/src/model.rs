//! The domain's shared vocabulary beyond the store's: which partition a request may touch.
//!
//! One partition-access rule, used by the device gateway (devices: user partitions only for
//! their owner, app partitions for everyone, custom ones with an entitlement) and by Ingest
//! (backends: any partition of a configured source, with a well-formed key).

use std::collections::BTreeMap;

use syncline_proto::v1;

use crate::auth::Identity;
use crate::config::{Partitioning, SourceSettings};
use crate::storage::PartitionName;

/// The configured sources by name.
pub type Sources = BTreeMap<String, SourceSettings>;

/// Longest partition key a backend may name (user ids are shorter still:
/// [`MAX_USER_NAME_BYTES`](crate::auth::MAX_USER_NAME_BYTES)).
pub const MAX_PARTITION_KEY_BYTES: usize = 256;

/// Why a request may not touch a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessError {
    UnknownSource,
    Forbidden(String),
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
    let partitioning = &sources.get(source).ok_or(AccessError::UnknownSource)?.partitioning;
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
    let partitioning = sources.get(source).map(|source| source.partitioning).ok_or(AccessError::UnknownSource)?;
    match partitioning {
        Partitioning::App => {
            if key.is_empty() || key == syncline_proto::APP_PARTITION_KEY {
                Ok(PartitionName::new(source, syncline_proto::APP_PARTITION_KEY))
            } else {
                Err(AccessError::Forbidden(format!(
                    "{source} is an app source: its partition key is \"*\" (or empty), not {key:?}"
                )))
            }
        }
        Partitioning::User | Partitioning::Custom => {
            if key.is_empty() || key == syncline_proto::APP_PARTITION_KEY || key.len() > MAX_PARTITION_KEY_BYTES {
                Err(AccessError::Forbidden(format!(
                    "{source} is partitioned by {}: give the partition key (1 to {MAX_PARTITION_KEY_BYTES} bytes, not \"*\")",
                    partitioning.as_str()
                )))
            } else {
                Ok(PartitionName::new(source, key))
            }
        }
    }
}
