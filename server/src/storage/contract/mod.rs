//! The store contract's test suite, run against every backend: each test is a function of
//! the backend's opener ([`Open`]), and [`contract!`] instantiates the whole suite once per
//! backend (the embedded store in a temporary directory, the Redis store on a private
//! `redis-server`). Tests of one backend's internals stay with that backend.

mod accounts;
mod blobs;
mod devices;
pub(crate) mod mutations;
mod partitions;
pub(crate) mod support;

use std::sync::Arc;

use crate::storage::embedded::{EmbeddedOptions, EmbeddedStore};
use crate::storage::redis::RedisEndpoint;
use crate::storage::redis::{RedisOptions, RedisStore};
use crate::storage::{CommitListener, Store};
use crate::test_util::redis_server::{RedisCluster, RedisServer};

/// A store under test and what keeps its backing alive (dropped after the store).
pub(crate) struct Fixture {
    pub(crate) store: Arc<dyn Store>,
    _backing: Box<dyn std::any::Any>,
}

/// Opens a fresh, empty store of one backend, with an optional commit listener.
pub(crate) type Open = fn(Option<Arc<dyn CommitListener>>) -> Fixture;

/// Opens an embedded store in a temporary directory.
pub(crate) fn embedded(listener: Option<Arc<dyn CommitListener>>) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("syncline.redb");
    let store = EmbeddedStore::open_with_listener(&path, EmbeddedOptions::default(), listener).expect("open");
    Fixture { store: Arc::new(store), _backing: Box::new(dir) }
}

/// Opens a Redis store on a private `redis-server` of its own.
pub(crate) fn redis(listener: Option<Arc<dyn CommitListener>>) -> Fixture {
    let server = RedisServer::start();
    let store = RedisStore::open(&RedisOptions::single(server.url()), listener).expect("open");
    Fixture { store: Arc::new(store), _backing: Box::new(server) }
}

/// Opens a Redis store on a private Redis Cluster of three primaries: every script must
/// keep to the keys of one slot there.
pub(crate) fn redis_cluster(listener: Option<Arc<dyn CommitListener>>) -> Fixture {
    let cluster = RedisCluster::start(3);
    let options = RedisOptions { endpoint: RedisEndpoint::Cluster(cluster.urls()), ..RedisOptions::single("") };
    let store = RedisStore::open(&options, listener).expect("open");
    Fixture { store: Arc::new(store), _backing: Box::new(cluster) }
}

/// Instantiates every contract test for one backend: `contract!(backend)` makes a module
/// `backend` with one `#[test]` per contract test, each given the opener `backend`.
macro_rules! contract {
    ($backend:ident) => {
        mod $backend {
            contract!(@tests $backend; partitions::compacted_log_replays_to_the_live_set);
            contract!(@examples $backend);
        }
    };
    // Without the property tests, whose cases each open a store (a cluster takes seconds).
    ($backend:ident, examples only) => {
        mod $backend {
            contract!(@examples $backend);
        }
    };
    (@examples $backend:ident) => {
            contract!(@tests $backend;
                partitions::sequences_are_gap_free_across_batches,
                partitions::unchanged_upsert_takes_no_sequence,
                partitions::delete_of_absent_id_is_a_no_op,
                partitions::invalid_batches_write_nothing,
                partitions::concurrent_batches_are_gap_free_and_notified_in_order,
                partitions::snapshot_pages_cover_live_records_once_in_id_order,
                partitions::pages_stop_at_their_bytes,
                partitions::encoded_snapshot_pages_are_the_encoded_decoded_pages,
                partitions::log_pages_report_what_they_cover,
                partitions::compaction_keeps_recent_entries_and_the_latest_per_id,
                partitions::compaction_spanning_several_steps_removes_everything_superseded,
                partitions::capture_writes_commit_with_their_position,
                partitions::purged_partitions_are_gone_and_others_stay,
                accounts::users_devices_and_secrets,
                accounts::users_page_by_prefix_and_after,
                accounts::tokens_admins_and_controls_round_trip,
                mutations::a_finished_mutation_leaves_the_queue_and_answers_its_id,
                mutations::only_unfinished_mutations_count_against_the_queue_limit,
                mutations::outcomes_are_pruned_after_their_retention_only,
                mutations::pending_mutations_are_listed_by_client_and_position,
                mutations::a_refused_mutation_is_kept_as_failed_until_retried_dismissed_or_pruned,
                devices::devices_are_listed_by_client_id_with_filters_and_pages,
                devices::a_device_moved_to_another_user_leaves_the_old_users_index,
                devices::last_seen_only_moves_forward_and_unknown_devices_are_skipped,
                devices::commands_move_from_pending_to_delivered_to_acknowledged,
                devices::old_acknowledged_commands_are_dropped_past_the_bound_but_unacknowledged_ones_stay,
                devices::device_cursors_are_listed_by_partition,
                blobs::blob_metadata_is_kept_once_per_hash_and_forgotten_on_delete,
                blobs::references_add_partitions_once_and_move_the_time_forward,
            );
    };
    (@tests $backend:ident; $($module:ident::$test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                super::$module::$test(super::$backend);
            }
        )*
    };
}

contract!(embedded);
contract!(redis);
contract!(redis_cluster, examples only);
