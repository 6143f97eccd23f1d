//! [`CrmDb`]: the CRM's SQLite file, with typed CRUD, search, users and the change feed.
//!
//! One writer connection (behind a mutex, used only from blocking threads) serialises this
//! process's writes; reads use a small pool of extra connections, which WAL mode lets run
//! beside the writer and beside other processes writing the same file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params_from_iter};
use syncline_proto::APP_PARTITION_KEY;
use syncline_proto::sdk::passwords::{PasswordError, PasswordPool, PoolConfig};
use syncline_proto::sdk::{ChannelError, Result, WriteOutcome};
use syncline_proto::v1::{ChangeBatch, PartitionChanges, PartitionKey, Record, Value};
use tokio::sync::Notify;

use crate::convert::{record_from_row, to_sql};
use crate::schema::{self, ACCOUNT, FieldDef, Partitioning, SourceSchema};

/// How long a statement waits for another connection's (or process's) write lock before
/// failing with `UNAVAILABLE`: longer than any write of this channel takes.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Read connections kept open between reads; more are opened on demand and closed after use.
const MAX_IDLE_READERS: usize = 4;

/// The most rows of the `changes` table one `ChangeBatch` covers, which bounds a batch's size
/// (and the time a read transaction stays open) however far behind a watcher is.
pub(crate) const MAX_CHANGES_PER_BATCH: u32 = 500;

/// The user `--seed` creates, with this password.
pub const DEMO_USER: &str = "demo";

/// Returns the channel error for a failed SQLite call: a busy or locked database is
/// transient, anything else is a bug or a broken file.
pub(crate) fn sqlite_error(error: rusqlite::Error) -> ChannelError {
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            ChannelError::Unavailable(format!("database is busy: {error}"))
        }
        _ => ChannelError::Internal(format!("database error: {error}")),
    }
}

/// Returns the 8-byte big-endian resume token of a change id.
pub(crate) fn resume_token(change_id: u64) -> Vec<u8> {
    change_id.to_be_bytes().to_vec()
}

fn open_connection(path: &Path) -> Result<Connection> {
    let connection = Connection::open(path).map_err(sqlite_error)?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(sqlite_error)?;
    Ok(connection)
}

/// A handle on the CRM database; clones share the connections.
///
/// Every method runs its SQLite work on a blocking thread. Writes made through this handle or
/// its clones wake the watchers of a channel serving it at once; writes by anything else (a
/// separately opened handle, another process) are picked up by polling the change feed.
#[derive(Clone)]
pub struct CrmDb {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    idle_readers: Mutex<Vec<Connection>>,
    /// Notified after every committed write through this handle.
    written: Notify,
    /// Hashes and checks passwords: a few threads with reused memory and a bounded queue, so
    /// a login storm neither piles up blocking threads nor grows the process's memory.
    passwords: PasswordPool,
}

/// What [`CrmDb::close_deal`] changed.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedDeal {
    /// The account as it is now.
    pub account: Record,
    /// How many of the caller's contacts became VIPs.
    pub contacts_updated: usize,
}

/// The changes after a feed position, as one batch.
pub(crate) struct ChangeRead {
    /// The id of the last change row read (also the batch's resume token).
    pub(crate) last_change_id: u64,
    /// The changes of the watched sources; may have no partitions.
    pub(crate) batch: ChangeBatch,
}

/// The ends of the change feed.
pub(crate) struct FeedBounds {
    /// The id of the last change ever written (0 for none).
    pub(crate) last_change_id: u64,
    /// The id of the oldest change still stored (`last_change_id + 1` when none is).
    pub(crate) oldest_change_id: u64,
}

impl CrmDb {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_owned();
        run_blocking(move || {
            let writer = open_connection(&path)?;
            // WAL lets readers (this process's and others') run beside a writer.
            writer.pragma_update(None, "journal_mode", "WAL").map_err(sqlite_error)?;
            writer.execute_batch(&schema::ddl()).map_err(sqlite_error)?;
            let inner = Inner {
                path,
                writer: Mutex::new(writer),
                idle_readers: Mutex::new(Vec::new()),
                written: Notify::new(),
                passwords: PasswordPool::new(PoolConfig::default()).map_err(password_error)?,
            };
            Ok(Self { inner: Arc::new(inner) })
        })
        .await
    }

    /// Returns the database file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    async fn blocking<T: Send + 'static>(&self, work: impl FnOnce(&Inner) -> Result<T> + Send + 'static) -> Result<T> {
        let inner = Arc::clone(&self.inner);
        run_blocking(move || work(&inner)).await
    }

    /// Creates a record of `source` in partition `key` with a generated id. A repeated
    /// non-empty `mutation_id` returns the record its first create made instead.
    pub async fn create(
        &self,
        source: &str,
        key: &str,
        fields: BTreeMap<String, Value>,
        mutation_id: &str,
    ) -> Result<Record> {
        let source = schema::source(source)?;
        source.check_partition_key(key)?;
        let values = checked_values(source, &fields)?;
        if let Some(missing) = source.fields.iter().find(|field| field.required && !fields.contains_key(field.name)) {
            return Err(ChannelError::InvalidArgument(format!("{}.{} is required", source.name, missing.name)));
        }
        let (key, mutation_id) = (key.to_owned(), mutation_id.to_owned());
        self.blocking(move |inner| {
            inner.write(|transaction| {
                if !mutation_id.is_empty() {
                    let created: Option<String> = transaction
                        .query_row(
                            "SELECT record_id FROM create_mutations WHERE source = ?1 AND mutation_id = ?2",
                            [source.name, mutation_id.as_str()],
                            |row| row.get(0),
                        )
                        .optional()
                        .map_err(sqlite_error)?;
                    if let Some(id) = created {
                        // Deleted since: the create did happen, so answer with its id.
                        return Ok(
                            read_record(transaction, source, &key, &id)?.unwrap_or(Record { id, ..Record::default() })
                        );
                    }
                }
                let id = insert_record(transaction, source, &key, values)?;
                if !mutation_id.is_empty() {
                    transaction
                        .execute(
                            "INSERT INTO create_mutations (source, mutation_id, record_id) VALUES (?1, ?2, ?3)",
                            [source.name, mutation_id.as_str(), id.as_str()],
                        )
                        .map_err(sqlite_error)?;
                }
                read_record(transaction, source, &key, &id)?
                    .ok_or_else(|| ChannelError::Internal(format!("created {id} vanished")))
            })
        })
        .await
    }

    /// Sets the given fields of a record, unless `base_version` is non-zero and stale (then
    /// returns the current record as a conflict).
    pub async fn update(
        &self,
        source: &str,
        key: &str,
        id: &str,
        fields: BTreeMap<String, Value>,
        base_version: u64,
    ) -> Result<WriteOutcome> {
        let source = schema::source(source)?;
        source.check_partition_key(key)?;
        let values = checked_values(source, &fields)?;
        let (key, id) = (key.to_owned(), id.to_owned());
        self.blocking(move |inner| {
            inner.write(|transaction| {
                let Some(current) = read_record(transaction, source, &key, &id)? else {
                    return Err(ChannelError::NotFound(format!(
                        "{} {id:?} not found in partition {key:?}",
                        source.name
                    )));
                };
                if base_version != 0 && base_version != current.version {
                    return Ok(WriteOutcome::Conflict(current));
                }
                if values.is_empty() {
                    return Ok(WriteOutcome::Written(current));
                }
                let assignments: Vec<String> = values
                    .iter()
                    .enumerate()
                    .map(|(index, (field, _))| format!("{} = ?{}", field.name, index + 3))
                    .collect();
                let sql = format!(
                    "UPDATE {} SET {}, version = version + 1 WHERE id = ?1 AND {}",
                    source.table,
                    assignments.join(", "),
                    source.partition_condition(2)
                );
                let parameters = [SqlValue::Text(id.clone()), SqlValue::Text(key.clone())]
                    .into_iter()
                    .chain(values.into_iter().map(|(_, value)| value));
                transaction.execute(&sql, params_from_iter(parameters)).map_err(sqlite_error)?;
                let updated = read_record(transaction, source, &key, &id)?
                    .ok_or_else(|| ChannelError::Internal(format!("updated {id} vanished")))?;
                Ok(WriteOutcome::Written(updated))
            })
        })
        .await
    }

    /// Deletes a record, unless `base_version` is non-zero and stale. Deleting a record that
    /// does not exist succeeds. Returns the record's last state.
    pub async fn delete(&self, source: &str, key: &str, id: &str, base_version: u64) -> Result<WriteOutcome> {
        let source = schema::source(source)?;
        source.check_partition_key(key)?;
        let (key, id) = (key.to_owned(), id.to_owned());
        self.blocking(move |inner| {
            inner.write(|transaction| {
                let Some(current) = read_record(transaction, source, &key, &id)? else {
                    return Ok(WriteOutcome::Written(Record { id, ..Record::default() }));
                };
                if base_version != 0 && base_version != current.version {
                    return Ok(WriteOutcome::Conflict(current));
                }
                let sql = format!("DELETE FROM {} WHERE id = ?1 AND {}", source.table, source.partition_condition(2));
                transaction.execute(&sql, [&id, &key]).map_err(sqlite_error)?;
                Ok(WriteOutcome::Written(current))
            })
        })
        .await
    }

    /// Closes a deal of `amount` with account `account_id` for `user_id`, in one transaction:
    /// the account's `annual_revenue` grows by `amount` and it becomes `active`, and every
    /// contact of that user at the account becomes `vip`. Each changed row reaches the change
    /// feed like any other write.
    pub async fn close_deal(&self, user_id: &str, account_id: &str, amount: f64) -> Result<ClosedDeal> {
        if !amount.is_finite() || amount <= 0.0 {
            return Err(ChannelError::InvalidArgument(format!("amount must be a positive number, got {amount}")));
        }
        if user_id.is_empty() {
            return Err(ChannelError::InvalidArgument("closing a deal needs the caller's user id".into()));
        }
        let (user_id, account_id) = (user_id.to_owned(), account_id.to_owned());
        self.blocking(move |inner| {
            inner.write(|transaction| {
                let updated = transaction
                    .execute(
                        "UPDATE accounts SET annual_revenue = coalesce(annual_revenue, 0) + ?2, active = 1,
                         version = version + 1 WHERE id = ?1",
                        (&account_id, amount),
                    )
                    .map_err(sqlite_error)?;
                if updated == 0 {
                    return Err(ChannelError::NotFound(format!("no account {account_id:?}")));
                }
                let contacts_updated = transaction
                    .execute(
                        "UPDATE contacts SET vip = 1, version = version + 1
                         WHERE owner_id = ?1 AND account_id = ?2 AND vip IS NOT 1",
                        (&user_id, &account_id),
                    )
                    .map_err(sqlite_error)?;
                let account = read_record(transaction, &ACCOUNT, APP_PARTITION_KEY, &account_id)?
                    .ok_or_else(|| ChannelError::Internal(format!("updated account {account_id} vanished")))?;
                Ok(ClosedDeal { account, contacts_updated })
            })
        })
        .await
    }

    /// Returns one record, if it exists in that partition.
    pub async fn get(&self, source: &str, key: &str, id: &str) -> Result<Option<Record>> {
        let source = schema::source(source)?;
        let (key, id) = (key.to_owned(), id.to_owned());
        self.blocking(move |inner| inner.read(|connection| read_record(connection, source, &key, &id))).await
    }

    /// Returns the records of a partition whose `name` contains `name_contains` (ASCII
    /// case-insensitively; all when `None`), ordered by name then id, from `offset`, at most
    /// `limit`; and how many match in all.
    pub async fn search(
        &self,
        source: &str,
        key: &str,
        name_contains: Option<String>,
        offset: u32,
        limit: u32,
    ) -> Result<(Vec<Record>, u64)> {
        let source = schema::source(source)?;
        source.check_partition_key(key)?;
        let key = key.to_owned();
        self.blocking(move |inner| {
            inner.read(|connection| {
                let filter = format!(
                    "FROM {} WHERE {} AND (?2 IS NULL OR instr(lower({field}), lower(?2)) > 0)",
                    source.table,
                    source.partition_condition(1),
                    field = source.search_field,
                );
                let total: i64 = connection
                    .query_row(&format!("SELECT count(*) {filter}"), (&key, &name_contains), |row| row.get(0))
                    .map_err(sqlite_error)?;
                let sql = format!(
                    "SELECT {} {filter} ORDER BY {}, id LIMIT ?3 OFFSET ?4",
                    source.record_columns(),
                    source.search_field
                );
                let mut statement = connection.prepare(&sql).map_err(sqlite_error)?;
                let mut rows = statement.query((&key, &name_contains, limit, offset)).map_err(sqlite_error)?;
                let mut records = Vec::new();
                while let Some(row) = rows.next().map_err(sqlite_error)? {
                    records.push(record_from_row(source, row)?);
                }
                Ok((records, u64::try_from(total).unwrap_or(0)))
            })
        })
        .await
    }

    /// Adds a user whose id is its `username`, with an argon2 hash of `password`.
    pub async fn add_user(&self, username: &str, password: &str) -> Result<String> {
        if username.is_empty() || username.chars().any(char::is_control) {
            return Err(ChannelError::InvalidArgument(format!("bad user name {username:?}")));
        }
        let hash = self.inner.passwords.hash(password).await.map_err(password_error)?;
        let username = username.to_owned();
        self.blocking(move |inner| {
            inner.write(|transaction| {
                let inserted = transaction
                    .execute(
                        "INSERT INTO users (user_id, username, password_hash) VALUES (?1, ?1, ?2) ON CONFLICT DO NOTHING",
                        [&username, &hash],
                    )
                    .map_err(sqlite_error)?;
                if inserted == 0 {
                    return Err(ChannelError::AlreadyExists(format!("user {username:?} exists")));
                }
                Ok(username.clone())
            })
        })
        .await
    }

    /// Returns up to `limit` user ids that start with `prefix` and sort after `after`, in
    /// order (the users an operator lists).
    pub async fn user_ids(&self, after: Option<&str>, prefix: &str, limit: usize) -> Result<Vec<String>> {
        let (after, prefix) = (after.unwrap_or_default().to_owned(), prefix.to_owned());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.blocking(move |inner| {
            inner.read(|connection| {
                // `prefix` is matched in Rust: LIKE would treat `%` and `_` in it as patterns.
                let mut statement = connection
                    .prepare("SELECT user_id FROM users WHERE user_id > ?1 AND user_id >= ?2 ORDER BY user_id")
                    .map_err(sqlite_error)?;
                let rows =
                    statement.query_map([&after, &prefix], |row| row.get::<_, String>(0)).map_err(sqlite_error)?;
                let mut ids = Vec::new();
                for row in rows {
                    let id = row.map_err(sqlite_error)?;
                    if !id.starts_with(&prefix) || ids.len() as i64 >= limit {
                        break;
                    }
                    ids.push(id);
                }
                Ok(ids)
            })
        })
        .await
    }

    /// Returns the user id of `username` when `password` is theirs. An unknown user is
    /// checked against a decoy hash, so that the answer takes as long as for a known one.
    pub async fn check_password(&self, username: &str, password: &str) -> Result<Option<String>> {
        // The read runs in the check's place, so that a storm of logins waits here instead of
        // spreading reads over many blocking threads.
        let passwords = &self.inner.passwords;
        let admitted = passwords.admit().await.map_err(password_error)?;
        let name = username.to_owned();
        let user: Option<(String, String)> = self
            .blocking(move |inner| {
                inner.read(|connection| {
                    connection
                        .query_row("SELECT user_id, password_hash FROM users WHERE username = ?1", [&name], |row| {
                            Ok((row.get(0)?, row.get(1)?))
                        })
                        .optional()
                        .map_err(sqlite_error)
                })
            })
            .await?;
        let (user_id, hash) = user.unzip();
        let matches = passwords.verify_admitted(admitted, password, hash.as_deref()).await.map_err(password_error)?;
        Ok(user_id.filter(|_| matches))
    }

    /// Adds `accounts` generated accounts when there are none yet, and the user
    /// [`DEMO_USER`] (password `demo`) when it does not exist.
    pub async fn seed(&self, accounts: u32) -> Result<()> {
        match self.add_user(DEMO_USER, DEMO_USER).await {
            Ok(_) | Err(ChannelError::AlreadyExists(_)) => {}
            Err(error) => return Err(error),
        }
        self.blocking(move |inner| {
            inner.write(|transaction| {
                let existing: i64 = transaction
                    .query_row("SELECT count(*) FROM accounts", [], |row| row.get(0))
                    .map_err(sqlite_error)?;
                if existing > 0 {
                    return Ok(());
                }
                for number in 1..=accounts {
                    insert_record(transaction, &ACCOUNT, APP_PARTITION_KEY, seed_account(&ACCOUNT, number)?)?;
                }
                Ok(())
            })
        })
        .await
    }

    /// Returns the feed's current ends.
    pub(crate) async fn feed_bounds(&self) -> Result<FeedBounds> {
        self.blocking(|inner| {
            inner.read(|connection| {
                let transaction = connection.transaction().map_err(sqlite_error)?;
                let last: Option<i64> = transaction
                    .query_row("SELECT seq FROM sqlite_sequence WHERE name = 'changes'", [], |row| row.get(0))
                    .optional()
                    .map_err(sqlite_error)?;
                let oldest: Option<i64> =
                    transaction.query_row("SELECT min(id) FROM changes", [], |row| row.get(0)).map_err(sqlite_error)?;
                let last_change_id = u64::try_from(last.unwrap_or(0)).unwrap_or(0);
                let oldest_change_id = oldest.and_then(|id| u64::try_from(id).ok()).unwrap_or(last_change_id + 1);
                Ok(FeedBounds { last_change_id, oldest_change_id })
            })
        })
        .await
    }

    /// Returns up to [`MAX_CHANGES_PER_BATCH`] changes after `after` as one batch (only those
    /// of `sources`, all when `None`), or `None` when there are none yet.
    ///
    /// The feed records which rows changed; the batch carries their state as of this read,
    /// taken in one transaction. A row upserted and later deleted or moved is left out here,
    /// since the later change (in this batch or the next) removes it anyway.
    pub(crate) async fn changes_after(&self, after: u64, sources: Option<Arc<[String]>>) -> Result<Option<ChangeRead>> {
        self.blocking(move |inner| inner.read(|connection| read_changes(connection, after, sources.as_deref()))).await
    }

    /// Returns up to `limit` records of a partition with ids after `after_id`, by id.
    pub(crate) async fn query_page(
        &self,
        source: &'static SourceSchema,
        key: String,
        after_id: Option<String>,
        limit: u32,
    ) -> Result<Vec<Record>> {
        self.blocking(move |inner| {
            inner.read(|connection| {
                let sql = format!(
                    "SELECT {} FROM {} WHERE {} AND (?2 IS NULL OR id > ?2) ORDER BY id LIMIT ?3",
                    source.record_columns(),
                    source.table,
                    source.partition_condition(1)
                );
                let mut statement = connection.prepare_cached(&sql).map_err(sqlite_error)?;
                let mut rows = statement.query((&key, &after_id, limit)).map_err(sqlite_error)?;
                let mut records = Vec::new();
                while let Some(row) = rows.next().map_err(sqlite_error)? {
                    records.push(record_from_row(source, row)?);
                }
                Ok(records)
            })
        })
        .await
    }

    /// Completes after the next write through any handle of this database (register by
    /// creating the future before checking for changes, so that none is missed).
    pub(crate) fn written(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.written.notified()
    }
}

impl Inner {
    /// Runs `work` in an immediate (write-locking) transaction and wakes watchers after it
    /// commits.
    fn write<T>(&self, work: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut writer = self.writer.lock();
        let transaction = writer.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sqlite_error)?;
        let outcome = work(&transaction)?;
        transaction.commit().map_err(sqlite_error)?;
        drop(writer);
        self.written.notify_waiters();
        Ok(outcome)
    }

    /// Runs `work` on a pooled read connection.
    fn read<T>(&self, work: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let idle = self.idle_readers.lock().pop();
        let mut connection = match idle {
            Some(connection) => connection,
            None => open_connection(&self.path)?,
        };
        let outcome = work(&mut connection);
        let mut idle = self.idle_readers.lock();
        if idle.len() < MAX_IDLE_READERS {
            idle.push(connection);
        }
        outcome
    }
}

/// Runs blocking database work off the async threads.
async fn run_blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ChannelError::Internal(format!("database task failed: {error}")))?
}

/// Checks each field value against the source's schema.
fn checked_values(
    source: &'static SourceSchema,
    fields: &BTreeMap<String, Value>,
) -> Result<Vec<(&'static FieldDef, SqlValue)>> {
    fields
        .iter()
        .map(|(name, value)| {
            let field = source.field(name)?;
            Ok((field, to_sql(source, field, value)?))
        })
        .collect()
}

/// Reads one record of a partition.
fn read_record(connection: &Connection, source: &SourceSchema, key: &str, id: &str) -> Result<Option<Record>> {
    let sql = format!(
        "SELECT {} FROM {} WHERE id = ?1 AND {}",
        source.record_columns(),
        source.table,
        source.partition_condition(2)
    );
    let mut statement = connection.prepare_cached(&sql).map_err(sqlite_error)?;
    let mut rows = statement.query([id, key]).map_err(sqlite_error)?;
    match rows.next().map_err(sqlite_error)? {
        Some(row) => record_from_row(source, row).map(Some),
        None => Ok(None),
    }
}

/// Inserts a record under the next free generated id and returns the id.
fn insert_record(
    connection: &Connection,
    source: &SourceSchema,
    key: &str,
    values: Vec<(&'static FieldDef, SqlValue)>,
) -> Result<String> {
    let id = next_id(connection, source)?;
    let mut columns = vec!["id"];
    let mut parameters = vec![SqlValue::Text(id.clone())];
    if let Partitioning::User { owner_column } = source.partitioning {
        columns.push(owner_column);
        parameters.push(SqlValue::Text(key.to_owned()));
    }
    for (field, value) in values {
        columns.push(field.name);
        parameters.push(value);
    }
    let placeholders: Vec<String> = (1..=parameters.len()).map(|index| format!("?{index}")).collect();
    let sql = format!("INSERT INTO {} ({}) VALUES ({})", source.table, columns.join(", "), placeholders.join(", "));
    connection.execute(&sql, params_from_iter(parameters)).map_err(sqlite_error)?;
    Ok(id)
}

/// Returns the next generated id of `source`, skipping ids other writers already took.
fn next_id(connection: &Connection, source: &SourceSchema) -> Result<String> {
    let exists_sql = format!("SELECT EXISTS (SELECT 1 FROM {} WHERE id = ?1)", source.table);
    loop {
        let number: i64 = connection
            .query_row(
                "INSERT INTO id_sequences (source, last) VALUES (?1, 1)
                 ON CONFLICT (source) DO UPDATE SET last = last + 1 RETURNING last",
                [source.name],
                |row| row.get(0),
            )
            .map_err(sqlite_error)?;
        let id = format!("{}{number}", source.id_prefix);
        let taken: bool = connection.query_row(&exists_sql, [&id], |row| row.get(0)).map_err(sqlite_error)?;
        if !taken {
            return Ok(id);
        }
    }
}

/// Returns deterministic fields of the `number`th seeded account.
fn seed_account(source: &'static SourceSchema, number: u32) -> Result<Vec<(&'static FieldDef, SqlValue)>> {
    const INDUSTRIES: [&str; 5] = ["Software", "Retail", "Energy", "Healthcare", "Finance"];
    const NAMES: [&str; 6] = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark"];
    let index = number as usize;
    let fields = BTreeMap::from([
        ("name".to_owned(), Value::string(format!("{} {number}", NAMES[index % NAMES.len()]))),
        ("industry".to_owned(), Value::string(INDUSTRIES[index % INDUSTRIES.len()])),
        ("employees".to_owned(), Value::int(i64::from(number) * 37 % 5000 + 1)),
        ("annual_revenue".to_owned(), Value::double(f64::from(number) * 12_500.5)),
        ("active".to_owned(), Value::bool(!number.is_multiple_of(3))),
        (
            "logo".to_owned(),
            if number.is_multiple_of(10) { Value::bytes(number.to_be_bytes().to_vec()) } else { Value::null() },
        ),
    ]);
    checked_values(source, &fields)
}

/// Returns the channel error for a password pool failure: busy is transient (Syncline
/// answers the device UNAVAILABLE and it retries), anything else a bug or a bad hash.
fn password_error(error: PasswordError) -> ChannelError {
    if error.is_busy() {
        ChannelError::Unavailable(error.to_string())
    } else {
        ChannelError::Internal(format!("password hashing: {error}"))
    }
}

/// What happened last to a record within one batch.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LastChange {
    Upsert,
    Delete,
}

/// One partition's changes while a batch is collected, with each record once.
struct PartitionCollector {
    source: &'static SourceSchema,
    key: String,
    records: Vec<(String, LastChange)>,
    position_by_id: HashMap<String, usize>,
}

/// Reads the changes after `after` in one read transaction (see [`CrmDb::changes_after`]).
fn read_changes(connection: &mut Connection, after: u64, sources: Option<&[String]>) -> Result<Option<ChangeRead>> {
    let transaction = connection.transaction().map_err(sqlite_error)?;
    let mut statement = transaction
        .prepare_cached(
            "SELECT id, source, partition_key, record_id, op FROM changes WHERE id > ?1 ORDER BY id LIMIT ?2",
        )
        .map_err(sqlite_error)?;
    let after_sql =
        i64::try_from(after).map_err(|_| ChannelError::InvalidArgument("resume token out of range".into()))?;
    let mut rows = statement.query((after_sql, MAX_CHANGES_PER_BATCH)).map_err(sqlite_error)?;
    let mut last_change_id = None;
    let mut partitions: Vec<PartitionCollector> = Vec::new();
    let mut partition_index: HashMap<(&'static str, String), usize> = HashMap::new();
    while let Some(row) = rows.next().map_err(sqlite_error)? {
        let change_id: i64 = row.get(0).map_err(sqlite_error)?;
        last_change_id = Some(u64::try_from(change_id).unwrap_or(0));
        let source_name: String = row.get(1).map_err(sqlite_error)?;
        if sources.is_some_and(|sources| !sources.contains(&source_name)) {
            continue;
        }
        let Ok(source) = schema::source(&source_name) else {
            tracing::warn!(change_id, source = source_name, "skipping change of an unknown source");
            continue;
        };
        let key: String = row.get(2).map_err(sqlite_error)?;
        let record_id: String = row.get(3).map_err(sqlite_error)?;
        let op: String = row.get(4).map_err(sqlite_error)?;
        let change = if op == "delete" { LastChange::Delete } else { LastChange::Upsert };
        let partition_position = *partition_index.entry((source.name, key.clone())).or_insert_with(|| {
            partitions.push(PartitionCollector { source, key, records: Vec::new(), position_by_id: HashMap::new() });
            partitions.len() - 1
        });
        let partition = &mut partitions[partition_position];
        match partition.position_by_id.get(&record_id) {
            Some(&position) => partition.records[position].1 = change,
            None => {
                partition.position_by_id.insert(record_id.clone(), partition.records.len());
                partition.records.push((record_id, change));
            }
        }
    }
    drop(rows);
    drop(statement);
    let Some(last_change_id) = last_change_id else { return Ok(None) };
    let mut batch = ChangeBatch { partitions: Vec::new(), resume_token: resume_token(last_change_id) };
    for partition in partitions {
        let mut changes = PartitionChanges {
            partition: Some(PartitionKey { source: partition.source.name.to_owned(), key: partition.key.clone() }),
            ..PartitionChanges::default()
        };
        for (record_id, change) in partition.records {
            match change {
                LastChange::Delete => changes.deletes.push(record_id),
                LastChange::Upsert => {
                    if let Some(record) = read_record(&transaction, partition.source, &partition.key, &record_id)? {
                        changes.upserts.push(record);
                    }
                }
            }
        }
        if !changes.upserts.is_empty() || !changes.deletes.is_empty() {
            batch.partitions.push(changes);
        }
    }
    Ok(Some(ChangeRead { last_change_id, batch }))
}
