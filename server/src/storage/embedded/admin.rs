//! The admin plane's tables in the embedded store ([`AdminStore`]): API tokens, admin users
//! and operators' controls over device users, plus listing and deleting local users and
//! purging partitions. Small transactions on the caller's thread, like `accounts.rs`.
//!
//! Tables (added to format version 2 without a migration: a store file written before them
//! simply has them empty):
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `api_tokens` | token id | prost `ApiTokenValue` |
//! | `admin_users` | name | prost `AdminUserValue` |
//! | `user_controls` | user id | prost `UserControlsValue` |

use prost::Message;
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};

use super::EmbeddedStore;
use super::accounts::UserValue;
use super::tables::*;
use crate::storage::{
    AdminRole, AdminStore, PartitionName, StoreError, StoreResult, StoredAdminUser, StoredApiToken, StoredUser,
    UserControls,
};

const API_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_tokens");
const ADMIN_USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("admin_users");
const USER_CONTROLS: TableDefinition<&str, &[u8]> = TableDefinition::new("user_controls");

/// Opens (creating where missing) the admin tables, when the store is opened.
pub(super) fn open_admin_tables(txn: &WriteTransaction) -> StoreResult<()> {
    txn.open_table(API_TOKENS).map_err(store_error)?;
    txn.open_table(ADMIN_USERS).map_err(store_error)?;
    txn.open_table(USER_CONTROLS).map_err(store_error)?;
    Ok(())
}

/// A stored API token (key: id).
#[derive(Clone, PartialEq, prost::Message)]
struct ApiTokenValue {
    #[prost(string, tag = "1")]
    name: String,
    /// [`AdminRole::as_str`].
    #[prost(string, tag = "2")]
    role: String,
    #[prost(bytes = "vec", tag = "3")]
    secret_hash: Vec<u8>,
    #[prost(int64, tag = "4")]
    created_ms: i64,
}

/// A stored admin user (key: name).
#[derive(Clone, PartialEq, prost::Message)]
struct AdminUserValue {
    #[prost(string, tag = "1")]
    password_hash: String,
    /// [`AdminRole::as_str`].
    #[prost(string, tag = "2")]
    role: String,
    #[prost(int64, tag = "3")]
    created_ms: i64,
}

/// Stored controls of a device user (key: user id).
#[derive(Clone, PartialEq, prost::Message)]
struct UserControlsValue {
    #[prost(bool, tag = "1")]
    disabled: bool,
    #[prost(int64, tag = "2")]
    sessions_revoked_ms: i64,
}

fn role(name: &str, what: &str) -> StoreResult<AdminRole> {
    AdminRole::from_name(name).ok_or_else(|| StoreError::Corrupt(format!("{what} has an unknown role {name:?}")))
}

pub(in crate::storage) fn decode_token(id: &str, value: &[u8]) -> StoreResult<StoredApiToken> {
    let value = ApiTokenValue::decode(value).map_err(|e| corrupt("API token", &e))?;
    Ok(StoredApiToken {
        id: id.to_owned(),
        name: value.name,
        role: role(&value.role, "an API token")?,
        secret_hash: value.secret_hash,
        created_ms: value.created_ms,
    })
}

/// Returns the stored form of an API token (shared with the Redis backend).
pub(in crate::storage) fn encode_token(token: &StoredApiToken) -> Vec<u8> {
    ApiTokenValue {
        name: token.name.clone(),
        role: token.role.as_str().to_owned(),
        secret_hash: token.secret_hash.clone(),
        created_ms: token.created_ms,
    }
    .encode_to_vec()
}

/// Returns the stored form of an admin user (shared with the Redis backend).
pub(in crate::storage) fn encode_admin_user(user: &StoredAdminUser) -> Vec<u8> {
    AdminUserValue {
        password_hash: user.password_hash.clone(),
        role: user.role.as_str().to_owned(),
        created_ms: user.created_ms,
    }
    .encode_to_vec()
}

/// Decodes the stored admin user `name`.
pub(in crate::storage) fn decode_admin_user(name: &str, value: &[u8]) -> StoreResult<StoredAdminUser> {
    let value = AdminUserValue::decode(value).map_err(|e| corrupt("admin user", &e))?;
    Ok(StoredAdminUser {
        name: name.to_owned(),
        password_hash: value.password_hash,
        role: role(&value.role, "an admin user")?,
        created_ms: value.created_ms,
    })
}

/// Returns the stored form of a user's controls (shared with the Redis backend).
pub(in crate::storage) fn encode_controls(controls: &UserControls) -> Vec<u8> {
    UserControlsValue { disabled: controls.disabled, sessions_revoked_ms: controls.sessions_revoked_ms }.encode_to_vec()
}

/// Decodes stored user controls.
pub(in crate::storage) fn decode_controls(value: &[u8]) -> StoreResult<UserControls> {
    let value = UserControlsValue::decode(value).map_err(|e| corrupt("user controls", &e))?;
    Ok(UserControls { disabled: value.disabled, sessions_revoked_ms: value.sessions_revoked_ms })
}

impl AdminStore for EmbeddedStore {
    fn put_api_token(&self, token: &StoredApiToken) -> StoreResult<()> {
        let value = ApiTokenValue {
            name: token.name.clone(),
            role: token.role.as_str().to_owned(),
            secret_hash: token.secret_hash.clone(),
            created_ms: token.created_ms,
        }
        .encode_to_vec();
        let txn = self.begin_write()?;
        txn.open_table(API_TOKENS)
            .map_err(store_error)?
            .insert(token.id.as_str(), value.as_slice())
            .map_err(store_error)?;
        txn.commit().map_err(store_error)
    }

    fn api_token(&self, id: &str) -> StoreResult<Option<StoredApiToken>> {
        let txn = self.begin_read()?;
        let table = txn.open_table(API_TOKENS).map_err(store_error)?;
        let value = table.get(id).map_err(store_error)?;
        value.map(|value| decode_token(id, value.value())).transpose()
    }

    fn api_tokens(&self) -> StoreResult<Vec<StoredApiToken>> {
        let txn = self.begin_read()?;
        let table = txn.open_table(API_TOKENS).map_err(store_error)?;
        let mut tokens = Vec::new();
        for entry in table.iter().map_err(store_error)? {
            let (id, value) = entry.map_err(store_error)?;
            tokens.push(decode_token(id.value(), value.value())?);
        }
        Ok(tokens)
    }

    fn delete_api_token(&self, id: &str) -> StoreResult<bool> {
        let txn = self.begin_write()?;
        let removed = txn.open_table(API_TOKENS).map_err(store_error)?.remove(id).map_err(store_error)?.is_some();
        txn.commit().map_err(store_error)?;
        Ok(removed)
    }

    fn put_admin_user(&self, user: &StoredAdminUser) -> StoreResult<()> {
        let value = AdminUserValue {
            password_hash: user.password_hash.clone(),
            role: user.role.as_str().to_owned(),
            created_ms: user.created_ms,
        }
        .encode_to_vec();
        let txn = self.begin_write()?;
        txn.open_table(ADMIN_USERS)
            .map_err(store_error)?
            .insert(user.name.as_str(), value.as_slice())
            .map_err(store_error)?;
        txn.commit().map_err(store_error)
    }

    fn admin_user(&self, name: &str) -> StoreResult<Option<StoredAdminUser>> {
        let txn = self.begin_read()?;
        let table = txn.open_table(ADMIN_USERS).map_err(store_error)?;
        let Some(value) = table.get(name).map_err(store_error)? else { return Ok(None) };
        let value = AdminUserValue::decode(value.value()).map_err(|e| corrupt("admin user", &e))?;
        Ok(Some(StoredAdminUser {
            name: name.to_owned(),
            password_hash: value.password_hash,
            role: role(&value.role, "an admin user")?,
            created_ms: value.created_ms,
        }))
    }

    fn admin_user_count(&self) -> StoreResult<u64> {
        let txn = self.begin_read()?;
        txn.open_table(ADMIN_USERS).map_err(store_error)?.len().map_err(store_error)
    }

    fn users_page(&self, after: Option<&str>, prefix: &str, limit: usize) -> StoreResult<Vec<StoredUser>> {
        let txn = self.begin_read()?;
        let table = txn.open_table(USERS).map_err(store_error)?;
        let start = match after {
            Some(after) if after >= prefix => after,
            _ => prefix,
        };
        let mut users = Vec::new();
        for entry in table.range(start..).map_err(store_error)? {
            let (name, value) = entry.map_err(store_error)?;
            let name = name.value();
            if after == Some(name) {
                continue;
            }
            if !name.starts_with(prefix) || users.len() >= limit {
                break;
            }
            let value = UserValue::decode(value.value()).map_err(|e| corrupt("user", &e))?;
            users.push(StoredUser { name: name.to_owned(), password_hash: value.password_hash });
        }
        Ok(users)
    }

    fn delete_user(&self, name: &str) -> StoreResult<bool> {
        let txn = self.begin_write()?;
        let removed = txn.open_table(USERS).map_err(store_error)?.remove(name).map_err(store_error)?.is_some();
        txn.commit().map_err(store_error)?;
        Ok(removed)
    }

    fn user_controls(&self, user_id: &str) -> StoreResult<UserControls> {
        let txn = self.begin_read()?;
        let table = txn.open_table(USER_CONTROLS).map_err(store_error)?;
        let Some(value) = table.get(user_id).map_err(store_error)? else { return Ok(UserControls::default()) };
        let value = UserControlsValue::decode(value.value()).map_err(|e| corrupt("user controls", &e))?;
        Ok(UserControls { disabled: value.disabled, sessions_revoked_ms: value.sessions_revoked_ms })
    }

    fn controlled_users(&self) -> StoreResult<Vec<(String, UserControls)>> {
        let txn = self.begin_read()?;
        let table = txn.open_table(USER_CONTROLS).map_err(store_error)?;
        let mut users = Vec::new();
        for entry in table.iter().map_err(store_error)? {
            let (user_id, value) = entry.map_err(store_error)?;
            let value = UserControlsValue::decode(value.value()).map_err(|e| corrupt("user controls", &e))?;
            let controls = UserControls { disabled: value.disabled, sessions_revoked_ms: value.sessions_revoked_ms };
            users.push((user_id.value().to_owned(), controls));
        }
        Ok(users)
    }

    fn set_user_controls(&self, user_id: &str, controls: &UserControls) -> StoreResult<()> {
        let txn = self.begin_write()?;
        {
            let mut table = txn.open_table(USER_CONTROLS).map_err(store_error)?;
            if *controls == UserControls::default() {
                table.remove(user_id).map_err(store_error)?;
            } else {
                let value = UserControlsValue {
                    disabled: controls.disabled,
                    sessions_revoked_ms: controls.sessions_revoked_ms,
                }
                .encode_to_vec();
                table.insert(user_id, value.as_slice()).map_err(store_error)?;
            }
        }
        txn.commit().map_err(store_error)
    }

    fn purge_partition(&self, partition: &PartitionName) -> StoreResult<bool> {
        let txn = self.begin_write()?;
        {
            let mut ids = txn.open_table(PARTITION_IDS).map_err(store_error)?;
            let key = (partition.source.as_str(), partition.key.as_str());
            let Some(id) = ids.remove(key).map_err(store_error)?.map(|id| id.value()) else {
                return Ok(false);
            };
            txn.open_table(PARTITION_META).map_err(store_error)?.remove(id).map_err(store_error)?;
            let mut records = txn.open_table(RECORDS).map_err(store_error)?;
            records.retain_in((id, "")..(id + 1, ""), |_, _| false).map_err(store_error)?;
            let mut log = txn.open_table(LOG).map_err(store_error)?;
            log.retain_in((id, 0)..(id + 1, 0), |_, _| false).map_err(store_error)?;
        }
        txn.commit().map_err(store_error)?;
        Ok(true)
    }
}
