//! The CRM's sources, their typed fields, and the SQLite schema that stores them.
//!
//! Each source is a table with one typed column per field, an `id` and a `version` column.
//! Triggers append every insert, update and delete (also those made by other processes
//! on the same file) to the `changes` table, which is the durable change feed behind
//! `Watch`, and bump `version` on updates that did not bump it themselves.

use syncline_proto::APP_PARTITION_KEY;
use syncline_proto::sdk::ChannelError;
use syncline_proto::v1::{FieldSchema, SourceDescription};

/// The type of a field's values, and the SQLite column that stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldType {
    String,
    Int,
    Double,
    /// Stored as INTEGER 0 or 1.
    Bool,
    Bytes,
}

impl FieldType {
    /// Returns the `FieldSchema.type` name.
    pub(crate) fn wire_name(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Int => "int",
            Self::Double => "double",
            Self::Bool => "bool",
            Self::Bytes => "bytes",
        }
    }

    fn column_type(self) -> &'static str {
        match self {
            Self::String => "TEXT",
            Self::Int | Self::Bool => "INTEGER",
            Self::Double => "REAL",
            Self::Bytes => "BLOB",
        }
    }
}

/// One field of a source: its name is also its column name.
#[derive(Debug)]
pub(crate) struct FieldDef {
    pub(crate) name: &'static str,
    pub(crate) ty: FieldType,
    pub(crate) required: bool,
}

/// How a source's records are split into partitions.
#[derive(Debug)]
pub(crate) enum Partitioning {
    /// One partition, key `*`, shared by every user.
    App,
    /// One partition per user; the column holds the owning user's id.
    User { owner_column: &'static str },
}

/// A source served by this channel.
#[derive(Debug)]
pub(crate) struct SourceSchema {
    pub(crate) name: &'static str,
    pub(crate) table: &'static str,
    /// Prefix of generated ids, followed by a per-source sequence number.
    pub(crate) id_prefix: &'static str,
    pub(crate) partitioning: Partitioning,
    pub(crate) fields: &'static [FieldDef],
    /// The field `Search`'s `name` parameter matches.
    pub(crate) search_field: &'static str,
}

const fn field(name: &'static str, ty: FieldType, required: bool) -> FieldDef {
    FieldDef { name, ty, required }
}

/// Companies, shared by all users.
pub(crate) const ACCOUNT: SourceSchema = SourceSchema {
    name: "Account",
    table: "accounts",
    id_prefix: "acc-",
    partitioning: Partitioning::App,
    fields: &[
        field("name", FieldType::String, true),
        field("industry", FieldType::String, false),
        field("employees", FieldType::Int, false),
        field("annual_revenue", FieldType::Double, false),
        field("active", FieldType::Bool, false),
        field("logo", FieldType::Bytes, false),
    ],
    search_field: "name",
};

/// People, private to the user who owns them.
pub(crate) const CONTACT: SourceSchema = SourceSchema {
    name: "Contact",
    table: "contacts",
    id_prefix: "con-",
    partitioning: Partitioning::User { owner_column: "owner_id" },
    fields: &[
        field("name", FieldType::String, true),
        field("email", FieldType::String, false),
        field("phone", FieldType::String, false),
        field("account_id", FieldType::String, false),
        field("vip", FieldType::Bool, false),
        field("score", FieldType::Double, false),
        field("photo", FieldType::Bytes, false),
    ],
    search_field: "name",
};

/// Every source, in `Describe` order.
pub(crate) const SOURCES: [&SourceSchema; 2] = [&ACCOUNT, &CONTACT];

/// Returns the source called `name`.
pub(crate) fn source(name: &str) -> Result<&'static SourceSchema, ChannelError> {
    SOURCES
        .into_iter()
        .find(|schema| schema.name == name)
        .ok_or_else(|| ChannelError::InvalidArgument(format!("unknown source {name:?}")))
}

impl SourceSchema {
    /// Returns the field called `name`.
    pub(crate) fn field(&self, name: &str) -> Result<&'static FieldDef, ChannelError> {
        self.fields
            .iter()
            .find(|field| field.name == name)
            .ok_or_else(|| ChannelError::InvalidArgument(format!("{} has no field {name:?}", self.name)))
    }

    /// Checks that `key` can name a partition of this source.
    pub(crate) fn check_partition_key(&self, key: &str) -> Result<(), ChannelError> {
        match self.partitioning {
            Partitioning::App if key == APP_PARTITION_KEY => Ok(()),
            Partitioning::App => Err(ChannelError::InvalidArgument(format!(
                "{} is app-partitioned: its only partition key is {APP_PARTITION_KEY:?}, not {key:?}",
                self.name
            ))),
            Partitioning::User { .. } if !key.is_empty() => Ok(()),
            Partitioning::User { .. } => {
                Err(ChannelError::InvalidArgument(format!("{} partitions are keyed by user id, got none", self.name)))
            }
        }
    }

    /// Returns `id, version, <fields...>`, the columns [`crate::convert::record_from_row`] reads.
    pub(crate) fn record_columns(&self) -> String {
        let mut columns = vec!["id", "version"];
        columns.extend(self.fields.iter().map(|field| field.name));
        columns.join(", ")
    }

    /// Returns the SQL condition selecting `key`'s partition, using parameter `?{param}`.
    pub(crate) fn partition_condition(&self, param: usize) -> String {
        match self.partitioning {
            // Binds the key anyway, so that every statement takes the same parameters.
            Partitioning::App => format!("?{param} = '{APP_PARTITION_KEY}'"),
            Partitioning::User { owner_column } => format!("{owner_column} = ?{param}"),
        }
    }

    /// Returns the source's `Describe` entry.
    pub(crate) fn description(&self) -> SourceDescription {
        SourceDescription {
            name: self.name.to_owned(),
            partitioning: match self.partitioning {
                Partitioning::App => "app",
                Partitioning::User { .. } => "user",
            }
            .to_owned(),
            capabilities: ["create", "update", "delete", "search", "watch"].map(str::to_owned).to_vec(),
            fields: self
                .fields
                .iter()
                .map(|field| FieldSchema {
                    name: field.name.to_owned(),
                    r#type: field.ty.wire_name().to_owned(),
                    required: field.required,
                })
                .collect(),
        }
    }

    /// Returns the statements creating this source's table and change-capture triggers.
    fn ddl(&self) -> String {
        let table = self.table;
        let source = self.name;
        let mut columns = vec!["id TEXT PRIMARY KEY NOT NULL".to_owned()];
        let (new_key, old_key, key_changed) = match self.partitioning {
            Partitioning::App => (format!("'{APP_PARTITION_KEY}'"), format!("'{APP_PARTITION_KEY}'"), "0".to_owned()),
            Partitioning::User { owner_column } => {
                columns.push(format!("{owner_column} TEXT NOT NULL"));
                (
                    format!("NEW.{owner_column}"),
                    format!("OLD.{owner_column}"),
                    format!("NEW.{owner_column} IS NOT OLD.{owner_column}"),
                )
            }
        };
        for field in self.fields {
            let not_null = if field.required { " NOT NULL" } else { "" };
            columns.push(format!("{} {}{not_null}", field.name, field.ty.column_type()));
        }
        columns.push("version INTEGER NOT NULL DEFAULT 1".to_owned());
        let columns = columns.join(",\n    ");
        let owner_index = match self.partitioning {
            Partitioning::App => String::new(),
            Partitioning::User { owner_column } => {
                format!("CREATE INDEX IF NOT EXISTS {table}_by_owner ON {table}({owner_column}, id);\n")
            }
        };
        // An update that leaves `version` alone (a writer that does not know about it) gets it
        // bumped by a nested update; only the update that changes `version` is logged, so each
        // write is logged once either way. A row that changes id or owner is also logged as a
        // delete from its old partition.
        format!(
            "CREATE TABLE IF NOT EXISTS {table} (\n    {columns}\n);
{owner_index}CREATE TRIGGER IF NOT EXISTS {table}_bump_version AFTER UPDATE ON {table}
FOR EACH ROW WHEN NEW.version = OLD.version
BEGIN UPDATE {table} SET version = OLD.version + 1 WHERE rowid = NEW.rowid; END;
CREATE TRIGGER IF NOT EXISTS {table}_log_insert AFTER INSERT ON {table} FOR EACH ROW
BEGIN INSERT INTO changes (source, partition_key, record_id, op) VALUES ('{source}', {new_key}, NEW.id, 'upsert'); END;
CREATE TRIGGER IF NOT EXISTS {table}_log_update AFTER UPDATE ON {table}
FOR EACH ROW WHEN NEW.version IS NOT OLD.version
BEGIN INSERT INTO changes (source, partition_key, record_id, op) VALUES ('{source}', {new_key}, NEW.id, 'upsert'); END;
CREATE TRIGGER IF NOT EXISTS {table}_log_move AFTER UPDATE ON {table}
FOR EACH ROW WHEN NEW.id IS NOT OLD.id OR {key_changed}
BEGIN INSERT INTO changes (source, partition_key, record_id, op) VALUES ('{source}', {old_key}, OLD.id, 'delete'); END;
CREATE TRIGGER IF NOT EXISTS {table}_log_delete AFTER DELETE ON {table} FOR EACH ROW
BEGIN INSERT INTO changes (source, partition_key, record_id, op) VALUES ('{source}', {old_key}, OLD.id, 'delete'); END;
"
        )
    }
}

/// Tables that are not sources: the change feed, id sequences, create deduplication, users.
const COMMON_DDL: &str = "
CREATE TABLE IF NOT EXISTS changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    record_id TEXT NOT NULL,
    op TEXT NOT NULL CHECK (op IN ('upsert', 'delete'))
);
CREATE TABLE IF NOT EXISTS id_sequences (
    source TEXT PRIMARY KEY NOT NULL,
    last INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS create_mutations (
    mutation_id TEXT NOT NULL,
    source TEXT NOT NULL,
    record_id TEXT NOT NULL,
    PRIMARY KEY (source, mutation_id)
);
CREATE TABLE IF NOT EXISTS users (
    user_id TEXT PRIMARY KEY NOT NULL,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL
);
";

/// Returns the whole schema; every statement is idempotent.
pub(crate) fn ddl() -> String {
    let mut ddl = COMMON_DDL.to_owned();
    for source in SOURCES {
        ddl.push_str(&source.ddl());
    }
    ddl
}
