//! Realistic inputs shared by the bench groups.

use std::collections::BTreeMap;

use syncline_proto::v1::{Record, Value};
use syncline_server::storage::PartitionName;

/// Returns an account-like record with five typed fields (two strings, an integer, a double
/// and a boolean), about the shape of a typical business record. `n` makes the id and the
/// values distinct.
pub(crate) fn record(n: u64) -> Record {
    Record {
        id: format!("acct-{n:010}"),
        fields: BTreeMap::from([
            ("name".to_owned(), Value::string(format!("Customer {n}"))),
            ("email".to_owned(), Value::string(format!("customer{n}@example.com"))),
            ("visits".to_owned(), Value::int((n % 1_000) as i64)),
            ("balance".to_owned(), Value::double(n as f64 * 1.25)),
            ("active".to_owned(), Value::bool(!n.is_multiple_of(3))),
        ]),
        version: 0,
    }
}

/// Returns `count` records with ids `first..first + count`.
pub(crate) fn records(first: u64, count: u64) -> Vec<Record> {
    (first..first + count).map(record).collect()
}

/// Returns records as the store hands them out: with their sequence as version.
pub(crate) fn versioned_records(count: u64) -> Vec<Record> {
    (1..=count).map(|n| Record { version: n, ..record(n) }).collect()
}

/// Returns the partition used by the benches.
pub(crate) fn partition() -> PartitionName {
    PartitionName::new("Account", "*")
}
