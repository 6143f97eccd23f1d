//! The demo app served by `syncline serve` with no sources configured: an `Account` app
//! source and a `Contact` user source, seeded on first start, and a demo user.

use std::collections::BTreeMap;

use syncline_proto::v1::{Record, Value};

use crate::auth;
use crate::config::DemoSection;
use crate::storage::{MAX_BATCH_CHANGES, PartitionName, Store, StoreError};

const INDUSTRIES: &[&str] = &["Software", "Retail", "Energy", "Health", "Logistics", "Finance"];
const CITIES: &[&str] = &["Lisbon", "Oslo", "Austin", "Osaka", "Nairobi", "Lyon", "Recife"];
const FIRST_NAMES: &[&str] = &["Ana", "Bo", "Chen", "Dara", "Eli", "Femi", "Gus", "Hana"];
const LAST_NAMES: &[&str] = &["Silva", "Berg", "Li", "Okafor", "Novak", "Reyes", "Sato"];

/// Returns demo account number `n`.
pub fn account(n: u32) -> Record {
    let mut fields = BTreeMap::new();
    fields.insert("name".to_owned(), Value::string(format!("Account {n:05}")));
    fields.insert("industry".to_owned(), Value::string(INDUSTRIES[n as usize % INDUSTRIES.len()]));
    fields.insert("city".to_owned(), Value::string(CITIES[n as usize % CITIES.len()]));
    fields.insert("employees".to_owned(), Value::int(i64::from(10 + (n * 37) % 5000)));
    fields.insert("revenue".to_owned(), Value::double(f64::from(n % 997) * 1234.5));
    fields.insert("active".to_owned(), Value::bool(!n.is_multiple_of(5)));
    Record { id: format!("acc-{n:05}"), fields, version: 0 }
}

/// Returns demo contact number `n`.
pub fn contact(n: u32) -> Record {
    let mut fields = BTreeMap::new();
    let first = FIRST_NAMES[n as usize % FIRST_NAMES.len()];
    let last = LAST_NAMES[(n as usize / FIRST_NAMES.len()) % LAST_NAMES.len()];
    fields.insert("name".to_owned(), Value::string(format!("{first} {last}")));
    fields.insert(
        "email".to_owned(),
        Value::string(format!("{}.{}{n}@example.com", first.to_lowercase(), last.to_lowercase())),
    );
    fields.insert("account_id".to_owned(), Value::string(format!("acc-{:05}", (n * 7) % 1000)));
    fields.insert("vip".to_owned(), Value::bool(n.is_multiple_of(11)));
    Record { id: format!("con-{n:05}"), fields, version: 0 }
}

/// Seeds the demo user and partitions into a store that has none of them yet. Returns the
/// number of records seeded.
pub fn seed(store: &dyn Store, demo: &DemoSection) -> Result<u64, StoreError> {
    let mut seeded = 0;
    if store.user(&demo.user)?.is_none() {
        match auth::add_user(store, &demo.user, &demo.password) {
            Ok(()) | Err(auth::AuthError::Store(StoreError::UserExists { .. })) => {}
            Err(auth::AuthError::Store(error)) => return Err(error),
            Err(error) => return Err(StoreError::Io(error.to_string())),
        }
    }
    let partitions = [
        (PartitionName::new("Account", syncline_proto::APP_PARTITION_KEY), demo.records, account as fn(u32) -> Record),
        (PartitionName::new("Contact", demo.user.clone()), demo.records / 4, contact as fn(u32) -> Record),
    ];
    for (partition, count, make) in partitions {
        if store.partition_state(&partition)?.head > 0 {
            continue;
        }
        let records: Vec<Record> = (0..count).map(make).collect();
        for chunk in records.chunks(MAX_BATCH_CHANGES) {
            let batch = store.apply_batch(&partition, chunk.to_vec(), Vec::new())?;
            seeded += batch.changes.len() as u64;
        }
    }
    Ok(seeded)
}
