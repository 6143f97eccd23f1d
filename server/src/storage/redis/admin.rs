//! The admin plane in Redis: API tokens, admin users, user controls, the user listing and
//! partition purges.

use prost::Message as _;

use super::RedisStore;
use super::keys::{self, PartitionKeys};
use crate::storage::embedded::accounts::UserValue;
use crate::storage::embedded::admin::{
    decode_admin_user, decode_controls, decode_token, encode_admin_user, encode_controls, encode_token,
};
use crate::storage::embedded::tables::corrupt;
use crate::storage::{
    AdminStore, PartitionName, StoreResult, StoredAdminUser, StoredApiToken, StoredUser, UserControls,
};

/// Names read per step while filling a page of users (most are kept: only the prefix ends
/// a page early).
const USER_PAGE_CHUNK: usize = 256;

impl RedisStore {
    /// Sets a field durably.
    pub(super) fn set_field(&self, hash: &str, field: &str, value: &[u8]) -> StoreResult<()> {
        self.run_durable(|connection| {
            redis::cmd("HSET").arg(hash).arg(field).arg(value).query::<()>(connection)?;
            Ok(((), true))
        })
    }

    /// Deletes a field durably; returns true if it was there.
    pub(super) fn delete_field(&self, hash: &str, field: &str) -> StoreResult<bool> {
        self.run_durable(|connection| {
            let removed: bool = redis::cmd("HDEL").arg(hash).arg(field).query(connection)?;
            Ok((removed, removed))
        })
    }

    /// Returns every field of a hash, by field.
    pub(super) fn all_fields(&self, hash: &str) -> StoreResult<Vec<(String, Vec<u8>)>> {
        let mut fields: Vec<(String, Vec<u8>)> =
            self.run(|connection| redis::cmd("HGETALL").arg(hash).query(connection))?;
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(fields)
    }

    pub(super) fn field(&self, hash: &str, field: &str) -> StoreResult<Option<Vec<u8>>> {
        self.run(|connection| redis::cmd("HGET").arg(hash).arg(field).query(connection))
    }
}

impl AdminStore for RedisStore {
    fn put_api_token(&self, token: &StoredApiToken) -> StoreResult<()> {
        self.set_field(keys::API_TOKENS, &token.id, &encode_token(token))
    }

    fn api_token(&self, id: &str) -> StoreResult<Option<StoredApiToken>> {
        self.field(keys::API_TOKENS, id)?.map(|value| decode_token(id, &value)).transpose()
    }

    fn api_tokens(&self) -> StoreResult<Vec<StoredApiToken>> {
        self.all_fields(keys::API_TOKENS)?.iter().map(|(id, value)| decode_token(id, value)).collect()
    }

    fn delete_api_token(&self, id: &str) -> StoreResult<bool> {
        self.delete_field(keys::API_TOKENS, id)
    }

    fn put_admin_user(&self, user: &StoredAdminUser) -> StoreResult<()> {
        self.set_field(keys::ADMIN_USERS, &user.name, &encode_admin_user(user))
    }

    fn admin_user(&self, name: &str) -> StoreResult<Option<StoredAdminUser>> {
        self.field(keys::ADMIN_USERS, name)?.map(|value| decode_admin_user(name, &value)).transpose()
    }

    fn admin_user_count(&self) -> StoreResult<u64> {
        self.run(|connection| redis::cmd("HLEN").arg(keys::ADMIN_USERS).query(connection))
    }

    fn users_page(&self, after: Option<&str>, prefix: &str, limit: usize) -> StoreResult<Vec<StoredUser>> {
        let mut users = Vec::new();
        let mut from = match after {
            Some(after) if after >= prefix => format!("({after}"),
            _ => format!("[{prefix}"),
        };
        while users.len() < limit {
            let want = (limit - users.len()).min(USER_PAGE_CHUNK);
            let names: Vec<String> = self.run(|connection| {
                redis::cmd("ZRANGEBYLEX")
                    .arg(keys::USER_NAMES)
                    .arg(&from)
                    .arg("+")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(want)
                    .query(connection)
            })?;
            let read = names.len();
            let values: Vec<Option<Vec<u8>>> = if names.is_empty() {
                Vec::new()
            } else {
                self.run(|connection| redis::cmd("HMGET").arg(keys::USERS).arg(&names).query(connection))?
            };
            for (name, value) in names.into_iter().zip(values) {
                if !name.starts_with(prefix) {
                    return Ok(users);
                }
                from = format!("({name}");
                // A name listed without a user was deleted between the two reads.
                let Some(value) = value else { continue };
                let value = UserValue::decode(value.as_slice()).map_err(|e| corrupt("user", &e))?;
                users.push(StoredUser { name, password_hash: value.password_hash });
            }
            if read < want {
                break;
            }
        }
        Ok(users)
    }

    fn delete_user(&self, name: &str) -> StoreResult<bool> {
        self.run_durable(|connection| {
            let removed: bool =
                self.scripts.delete_user.key(keys::USERS).key(keys::USER_NAMES).arg(name).invoke(connection)?;
            Ok((removed, removed))
        })
    }

    fn user_controls(&self, user_id: &str) -> StoreResult<UserControls> {
        self.field(keys::USER_CONTROLS, user_id)?.map_or(Ok(UserControls::default()), |value| decode_controls(&value))
    }

    fn controlled_users(&self) -> StoreResult<Vec<(String, UserControls)>> {
        self.all_fields(keys::USER_CONTROLS)?
            .into_iter()
            .map(|(user_id, value)| Ok((user_id, decode_controls(&value)?)))
            .collect()
    }

    fn set_user_controls(&self, user_id: &str, controls: &UserControls) -> StoreResult<()> {
        if *controls == UserControls::default() {
            self.delete_field(keys::USER_CONTROLS, user_id).map(drop)
        } else {
            self.set_field(keys::USER_CONTROLS, user_id, &encode_controls(controls))
        }
    }

    fn purge_partition(&self, partition: &PartitionName) -> StoreResult<bool> {
        let keys = PartitionKeys::new(partition);
        let _local = self.partition_lock(partition).lock();
        let had_state = self.run_durable(|connection| {
            let existed: bool = self
                .scripts
                .purge_partition
                .key(&keys.state)
                .key(&keys.records)
                .key(&keys.ids)
                .key(&keys.log)
                .invoke(connection)?;
            Ok((existed, true))
        })?;
        let member = keys::partition_member(partition);
        let listed = self.run_durable(|connection| {
            let removed: bool = redis::cmd("SREM").arg(keys::PARTITIONS).arg(member).query(connection)?;
            Ok((removed, removed))
        })?;
        Ok(had_state || listed)
    }
}
