//! Key names. Everything the store writes lives under `syncline:`; keys that one script (or
//! one read) must touch together share a hash tag (`{...}`), so that in a Redis Cluster they
//! sit in one slot:
//!
//! | keys | type | holds |
//! | --- | --- | --- |
//! | `syncline:partitions` | set | every partition written, as `hex(source):hex(key)` |
//! | `syncline:{p:<hex source>:<hex key>}:state` | hash | `head`, `horizon`, `total`, `checksum` (decimal) |
//! | `…:records` | hash | record id → version (8 bytes LE) ++ prost fields (the embedded store's value) |
//! | `…:ids` | sorted set | record ids, all at score 0 (byte-ordered snapshot pages) |
//! | `…:log` | sorted set | score = sequence, member = sequence (8 bytes BE) ++ the embedded store's log value |
//! | `syncline:{a}:*` | hashes, sorted set | users (+ `user_names` by name), secrets, capture positions, API tokens, admin users, user controls |
//! | `syncline:{dev}:*` | hashes, sorted sets | devices, owners, `ids` by client id, `by_user:<hex user>`, `cmds:<hex client>` (seq → command) |
//! | `syncline:cursors:<hex client>` | hash | `hex(source):hex(key)` → cursor |
//! | `syncline:mutation_clients` | set | client ids that queued mutations |
//! | `syncline:{m:<hex client>}:*` | `queue` (sorted set of positions), `values` (hash), `ids` (hash), `results` (hash) | one device's mutation queue and outcomes |
//! | `syncline:mutation_ages` | sorted set | score = finished at (ms), member = `hex(client):hex(mutation id)` |
//! | `syncline:{a}:lease:<hex name>`, `…:fence:<hex name>` | string (expiring), counter | a cluster lease's holder (`token/node`) and its last fencing token, beside the capture positions it guards |
//! | `syncline:{m:<hex client>}:lease:<hex source>`, `…:fence:<hex source>` | string (expiring), counter | the lease of one mutation lane (device, source), beside the queue it guards |
//!
//! Names inside keys are hex-encoded, so a `{`, `}` or `:` in a source, partition key or id
//! can never break a hash tag or a separator.

use std::fmt::Write as _;

use crate::storage::PartitionName;

/// Every partition written.
pub(super) const PARTITIONS: &str = "syncline:partitions";
/// Local device users: name → prost `UserValue`.
pub(super) const USERS: &str = "syncline:{a}:users";
/// Local device users' names, for pages by name.
pub(super) const USER_NAMES: &str = "syncline:{a}:user_names";
/// Server secrets: name → bytes.
pub(super) const SECRETS: &str = "syncline:{a}:secrets";
/// Capture positions: name → opaque token.
pub(super) const CAPTURE_POSITIONS: &str = "syncline:{a}:capture_positions";
/// Admin API tokens: id → prost value.
pub(super) const API_TOKENS: &str = "syncline:{a}:api_tokens";
/// Admin users: name → prost value.
pub(super) const ADMIN_USERS: &str = "syncline:{a}:admin_users";
/// Operators' controls over device users: user id → prost value.
pub(super) const USER_CONTROLS: &str = "syncline:{a}:user_controls";
/// Registered devices: client id → prost `DeviceValue`.
pub(super) const DEVICES: &str = "syncline:{dev}:devices";
/// Registered devices' users: client id → user id (what scripts compare without decoding).
pub(super) const DEVICE_OWNERS: &str = "syncline:{dev}:owners";
/// Registered devices' client ids, for pages by client id.
pub(super) const DEVICE_IDS: &str = "syncline:{dev}:ids";
/// Blob metadata: blob hash → prost `BlobValue` (the bytes are in the shared blob
/// directory).
pub(super) const BLOBS: &str = "syncline:{blob}:blobs";
/// Clients that have queued mutations.
pub(super) const MUTATION_CLIENTS: &str = "syncline:mutation_clients";
/// Finished mutations' outcomes by age.
pub(super) const MUTATION_AGES: &str = "syncline:mutation_ages";

/// Returns `value` hex-encoded.
pub(super) fn hex(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 2);
    for byte in value.as_bytes() {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Decodes [`hex`]; `None` when `value` is not the hex of UTF-8 text.
pub(super) fn unhex(value: &str) -> Option<String> {
    if !value.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..value.len()).step_by(2).map(|at| u8::from_str_radix(value.get(at..at + 2)?, 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

/// Returns `hex(a):hex(b)`, a member naming a pair.
pub(super) fn pair_member(a: &str, b: &str) -> String {
    format!("{}:{}", hex(a), hex(b))
}

/// Decodes [`pair_member`].
pub(super) fn parse_pair_member(member: &str) -> Option<(String, String)> {
    let (a, b) = member.split_once(':')?;
    Some((unhex(a)?, unhex(b)?))
}

/// Returns the member of [`PARTITIONS`] naming `partition`.
pub(super) fn partition_member(partition: &PartitionName) -> String {
    pair_member(&partition.source, &partition.key)
}

/// Returns what is inside the hash tag of `partition`'s keys, `p:<hex source>:<hex key>`:
/// whatever else carries it (the node bus's channel of the partition) maps to their slot.
pub fn partition_hash_tag(partition: &PartitionName) -> String {
    format!("p:{}", partition_member(partition))
}

/// The keys of one partition (one hash tag, one slot).
pub(super) struct PartitionKeys {
    pub(super) state: String,
    pub(super) records: String,
    pub(super) ids: String,
    pub(super) log: String,
}

impl PartitionKeys {
    pub(super) fn new(partition: &PartitionName) -> Self {
        let tag = format!("syncline:{{{}}}", partition_hash_tag(partition));
        Self {
            state: format!("{tag}:state"),
            records: format!("{tag}:records"),
            ids: format!("{tag}:ids"),
            log: format!("{tag}:log"),
        }
    }
}

/// The keys of one device's mutation queue (one hash tag, one slot).
pub(super) struct MutationKeys {
    /// Queue positions of unfinished mutations (score and member: the position).
    pub(super) queue: String,
    /// Position → prost `MutationValue`.
    pub(super) values: String,
    /// Mutation id → position, of unfinished mutations.
    pub(super) ids: String,
    /// Mutation id → finished at (8 bytes LE) ++ encoded `MutationResult`.
    pub(super) results: String,
    /// Mutation id → failed at (8 bytes LE) ++ prost `MutationValue`, of mutations their
    /// channel refused (kept for an operator).
    pub(super) failed: String,
}

impl MutationKeys {
    pub(super) fn new(client_id: &str) -> Self {
        let tag = format!("syncline:{{m:{}}}", hex(client_id));
        Self {
            queue: format!("{tag}:queue"),
            values: format!("{tag}:values"),
            ids: format!("{tag}:ids"),
            results: format!("{tag}:results"),
            failed: format!("{tag}:failed"),
        }
    }
}

/// What a cluster lease guards, which decides the slot its keys live in: a script that
/// checks the lease while writing what it guards touches keys of one slot only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseSlot<'a> {
    /// Capture positions and other app-wide work (compaction): the `{a}` slot.
    App,
    /// One device's mutation queue: its `{m:…}` slot.
    Device { client_id: &'a str },
}

/// Returns the keys of the lease `name` in `slot`: (holder, fencing token counter).
pub fn lease_keys(slot: LeaseSlot<'_>, name: &str) -> (String, String) {
    let tag = match slot {
        LeaseSlot::App => "syncline:{a}".to_owned(),
        LeaseSlot::Device { client_id } => format!("syncline:{{m:{}}}", hex(client_id)),
    };
    (format!("{tag}:lease:{}", hex(name)), format!("{tag}:fence:{}", hex(name)))
}

/// Returns the field of a partition's state hash that keeps the greatest fencing token
/// written under the lease `name`.
pub(super) fn partition_fence_field(name: &str) -> String {
    format!("fence:{}", hex(name))
}

/// Returns the key of a user's devices, by client id.
pub(super) fn devices_of_user(user_id: &str) -> String {
    format!("syncline:{{dev}}:by_user:{}", hex(user_id))
}

/// Returns the key of a device's commands.
pub(super) fn device_commands(client_id: &str) -> String {
    format!("syncline:{{dev}}:cmds:{}", hex(client_id))
}

/// Returns the key of a device's recorded cursors.
pub(super) fn cursors(client_id: &str) -> String {
    format!("syncline:cursors:{}", hex(client_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_break_hash_tags() {
        let keys = PartitionKeys::new(&PartitionName::new("a}{b", "c:d"));
        assert_eq!(keys.state.matches('{').count(), 1);
        assert_eq!(keys.state.matches('}').count(), 1);
        assert_eq!(
            parse_pair_member(&partition_member(&PartitionName::new("a}{b", "c:d"))),
            Some(("a}{b".into(), "c:d".into()))
        );
        assert_eq!(unhex(&hex("\u{e9}x")), Some("\u{e9}x".to_owned()));
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("abc"), None);
    }
}
