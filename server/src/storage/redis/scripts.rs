//! The store's Lua scripts (in `scripts/`, one file each), run with `EVALSHA` and loaded on
//! `NOSCRIPT` by [`redis::Script`]. Each touches keys of one hash tag only, so each runs
//! atomically on one node of a Redis Cluster.

use redis::Script;

/// Every script of the store, hashed once at open.
pub(super) struct Scripts {
    pub(super) write_partition: Script,
    pub(super) read_log: Script,
    pub(super) read_snapshot: Script,
    pub(super) compact: Script,
    pub(super) purge_partition: Script,
    pub(super) enqueue_mutation: Script,
    pub(super) finish_mutation: Script,
    pub(super) retry_failed_mutation: Script,
    pub(super) add_user: Script,
    pub(super) replace_existing: Script,
    pub(super) delete_user: Script,
    pub(super) put_device: Script,
    pub(super) compare_and_set_fields: Script,
    pub(super) add_command: Script,
    pub(super) fenced_capture_position: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            write_partition: Script::new(include_str!("scripts/write_partition.lua")),
            read_log: Script::new(include_str!("scripts/read_log.lua")),
            read_snapshot: Script::new(include_str!("scripts/read_snapshot.lua")),
            compact: Script::new(include_str!("scripts/compact.lua")),
            purge_partition: Script::new(include_str!("scripts/purge_partition.lua")),
            enqueue_mutation: Script::new(include_str!("scripts/enqueue_mutation.lua")),
            finish_mutation: Script::new(include_str!("scripts/finish_mutation.lua")),
            retry_failed_mutation: Script::new(include_str!("scripts/retry_failed_mutation.lua")),
            add_user: Script::new(include_str!("scripts/add_user.lua")),
            replace_existing: Script::new(include_str!("scripts/replace_existing.lua")),
            delete_user: Script::new(include_str!("scripts/delete_user.lua")),
            put_device: Script::new(include_str!("scripts/put_device.lua")),
            compare_and_set_fields: Script::new(include_str!("scripts/compare_and_set_fields.lua")),
            add_command: Script::new(include_str!("scripts/add_command.lua")),
            fenced_capture_position: Script::new(include_str!("scripts/fenced_capture_position.lua")),
        }
    }
}
