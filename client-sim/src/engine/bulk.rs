//! Bulk sync in the engine: when a partition of a subscription configured with
//! [`SubscriptionConfig::with_bulk`](crate::SubscriptionConfig::with_bulk) starts from
//! nothing (a first sync, or the server's RESET), the engine sends a `BulkRequest` instead
//! of a `Subscribe`; `BulkReady` hands the device task a file to download
//! ([`BulkDownload`]); once the file is downloaded and checked, its records replace the
//! replica in one assignment and the partition subscribes from the file's sequence. Below
//! the size threshold (the server answers "page instead"), or when anything fails, the
//! partition pages as usual. Each step is reported as a [`BulkNotification`].

use syncline_proto::v1::{BulkReady, BulkRequest, ClientFrame, Unsubscribe, client_frame};
use tracing::{debug, warn};

use super::{Phase, Reaction, SyncEngine, frame};
use crate::bulk::{BulkDownload, BulkEvent, BulkLoadError};
use crate::notification::{BulkNotification, BulkStatus, Notification};
use crate::replica::{PartitionId, PartitionReplica, PartitionView};

/// Where a partition's bulk sync stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) enum BulkPhase {
    /// None in progress.
    #[default]
    Idle,
    /// A BulkRequest was sent; BulkReady has not come.
    Requested {
        /// Its request id.
        request_id: String,
    },
    /// The file is being downloaded and checked by the device task.
    Downloading,
}

impl SyncEngine {
    /// Starts the sync of partition `id` on this connection: a `BulkRequest` when it wants
    /// one (or the download of its file goes on), a `Subscribe` otherwise.
    pub(super) fn start_sync(&mut self, id: &PartitionId, reaction: &mut Reaction) {
        let Some(partition) = self.partitions.get_mut(id) else { return };
        let wants_bulk =
            partition.bulk_min_records.is_some() && partition.replica.cursor() == 0 && !partition.bulk_declined;
        match partition.bulk {
            BulkPhase::Downloading => partition.phase = Phase::Bulk,
            BulkPhase::Idle | BulkPhase::Requested { .. } if wants_bulk => {
                let frame = self.bulk_request(id);
                reaction.frames.push(frame);
            }
            BulkPhase::Idle | BulkPhase::Requested { .. } => {
                partition.bulk = BulkPhase::Idle;
                reaction.frames.extend(partition.subscribe(id));
            }
        }
    }

    /// Returns a BulkRequest for `id` (and marks it requested).
    fn bulk_request(&mut self, id: &PartitionId) -> ClientFrame {
        self.bulk_requests += 1;
        let request_id = format!("bulk-{}", self.bulk_requests);
        let min_records = match self.partitions.get_mut(id) {
            Some(partition) => {
                partition.phase = Phase::Bulk;
                partition.bulk = BulkPhase::Requested { request_id: request_id.clone() };
                partition.bulk_min_records.unwrap_or(0)
            }
            None => 0,
        };
        frame(client_frame::Msg::BulkRequest(BulkRequest { request_id, sources: vec![id.source.clone()], min_records }))
    }

    /// On the server's RESET of a subscription that may bulk sync: leaves the subscription
    /// and asks for a file instead of the snapshot pages. Returns false when the partition
    /// pages as usual.
    pub(super) fn bulk_instead_of_reset(&mut self, id: &PartitionId, reaction: &mut Reaction) -> bool {
        let wants = self.partitions.get(id).is_some_and(|partition| {
            partition.bulk_min_records.is_some() && !partition.bulk_declined && partition.bulk == BulkPhase::Idle
        });
        if !wants {
            return false;
        }
        reaction.frames.push(frame(client_frame::Msg::Unsubscribe(Unsubscribe {
            source: id.source.clone(),
            key: id.key.clone(),
        })));
        let request = self.bulk_request(id);
        reaction.frames.push(request);
        true
    }

    /// Handles BulkReady: files to download, partitions to page instead, or a refusal.
    pub(super) fn on_bulk_ready(&mut self, ready: BulkReady, reaction: &mut Reaction) {
        let asked: Vec<PartitionId> = self
            .partitions
            .iter()
            .filter(|(_, partition)| {
                matches!(&partition.bulk, BulkPhase::Requested { request_id } if *request_id == ready.request_id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        if asked.is_empty() {
            debug!(request = %ready.request_id, "BulkReady of a request no longer waited for");
            return;
        }
        for id in asked {
            let file = ready.files.iter().find(|file| file.source == id.source && file.key == id.key);
            match (&ready.error, file) {
                (None, Some(file)) => {
                    if let Some(partition) = self.partitions.get_mut(&id) {
                        partition.bulk = BulkPhase::Downloading;
                    }
                    reaction.notifications.push(bulk_notification(&id, BulkStatus::Start, 0, file.bytes, 0, None));
                    reaction.bulk_downloads.push(BulkDownload { partition: id, file: file.clone() });
                }
                (error, _) => {
                    let reason = match error {
                        Some(error) => format!("the server refused the bulk request: {}", error.message),
                        None => "the partition is small: paging instead".to_owned(),
                    };
                    debug!(partition = %id, %reason, "no bulk file");
                    if error.is_some() {
                        reaction.notifications.push(bulk_notification(&id, BulkStatus::Error, 0, 0, 0, Some(reason)));
                    }
                    self.page_instead(&id, reaction);
                }
            }
        }
        self.check_bulk_complete(reaction);
    }

    /// Takes a report of the device task's downloads.
    pub(crate) fn on_bulk_event(&mut self, event: BulkEvent) -> Reaction {
        match event {
            BulkEvent::Progress { partition, bytes, total } => {
                let mut reaction = Reaction::default();
                let progress = bulk_notification(&partition, BulkStatus::Download, bytes, total, 0, None);
                reaction.notifications.push(progress);
                reaction
            }
            BulkEvent::Loaded { partition, outcome } => self.on_bulk_loaded(&partition, outcome),
        }
    }

    /// Takes the outcome of `id`'s download: the file's records become the replica in one
    /// step and the partition subscribes from the file's sequence; a failure pages instead.
    pub(crate) fn on_bulk_loaded(
        &mut self,
        id: &PartitionId,
        outcome: Result<PartitionView, BulkLoadError>,
    ) -> Reaction {
        let mut reaction = Reaction::default();
        let downloading = self.partitions.get(id).is_some_and(|partition| partition.bulk == BulkPhase::Downloading);
        if !downloading {
            debug!(partition = %id, "bulk file of a partition that no longer waits for it");
            return reaction;
        }
        match outcome {
            Ok(view) => {
                let (records, bytes) = (view.total, 0);
                reaction.notifications.push(bulk_notification(id, BulkStatus::ChangeDb, bytes, bytes, records, None));
                if let Some(partition) = self.partitions.get_mut(id) {
                    partition.replica = PartitionReplica::restore(view);
                    partition.bulk = BulkPhase::Idle;
                }
                self.stats.bulk_syncs += 1;
                reaction.notifications.push(bulk_notification(id, BulkStatus::Ok, bytes, bytes, records, None));
                self.resume_after_bulk(id, &mut reaction);
            }
            Err(error) => {
                warn!(partition = %id, %error, "bulk sync failed; paging instead");
                reaction.notifications.push(bulk_notification(id, BulkStatus::Error, 0, 0, 0, Some(error.to_string())));
                self.page_instead(id, &mut reaction);
            }
        }
        self.check_bulk_complete(&mut reaction);
        reaction
    }

    /// Gives up bulk for `id` for this device's life and subscribes (now if connected).
    fn page_instead(&mut self, id: &PartitionId, reaction: &mut Reaction) {
        if let Some(partition) = self.partitions.get_mut(id) {
            partition.bulk = BulkPhase::Idle;
            partition.bulk_declined = true;
        }
        self.resume_after_bulk(id, reaction);
    }

    /// Subscribes `id` from its replica's cursor when the session is open; otherwise the
    /// next Welcome does.
    fn resume_after_bulk(&mut self, id: &PartitionId, reaction: &mut Reaction) {
        let welcomed = self.welcomed;
        if let Some(partition) = self.partitions.get_mut(id) {
            if welcomed {
                reaction.frames.extend(partition.subscribe(id));
            } else {
                partition.phase = Phase::Idle;
            }
        }
    }

    /// Reports bulk `Complete` once no partition waits for a file.
    fn check_bulk_complete(&mut self, reaction: &mut Reaction) {
        let waiting = self.partitions.values().any(|partition| partition.bulk != BulkPhase::Idle);
        if !waiting {
            let empty = PartitionId::new("", "");
            reaction.notifications.push(bulk_notification(&empty, BulkStatus::Complete, 0, 0, 0, None));
        }
    }
}

fn bulk_notification(
    id: &PartitionId,
    status: BulkStatus,
    bytes: u64,
    total_bytes: u64,
    records: u64,
    error: Option<String>,
) -> Notification {
    Notification::Bulk(BulkNotification {
        source: id.source.clone(),
        key: id.key.clone(),
        status,
        bytes,
        total_bytes,
        records,
        error,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use syncline_proto::v1::{
        BulkFile, Error as ErrorFrame, ServerFrame, SourceInfo, Subscribe, Welcome, server_frame,
    };
    use tokio::time::Instant;

    use super::*;
    use crate::config::{DeviceConfig, SubscriptionConfig};
    use crate::notification::BulkStatus;

    const SOURCE: &str = "Account";
    const USER: &str = "u1";

    fn engine() -> SyncEngine {
        let config = DeviceConfig::new("ws://127.0.0.1:1/v1/sync", "alice", "secret")
            .subscribe(SubscriptionConfig::new(SOURCE).with_bulk(100))
            .with_notifications(64);
        SyncEngine::new(&config)
    }

    fn welcome(engine: &mut SyncEngine) -> Reaction {
        let welcome = Welcome {
            user_id: USER.into(),
            sources: vec![SourceInfo { name: SOURCE.into(), partitioning: "user".into(), keys: vec![USER.into()] }],
            ..Welcome::default()
        };
        engine.hello();
        engine.on_frame(ServerFrame { msg: Some(server_frame::Msg::Welcome(welcome)) }, Instant::now())
    }

    fn ready(ready: BulkReady) -> ServerFrame {
        ServerFrame { msg: Some(server_frame::Msg::BulkReady(ready)) }
    }

    fn subscribed_cursor(reaction: &Reaction) -> Option<u64> {
        reaction.frames.iter().find_map(|frame| match &frame.msg {
            Some(client_frame::Msg::Subscribe(Subscribe { cursor, .. })) => Some(*cursor),
            _ => None,
        })
    }

    fn bulk_statuses(reaction: &Reaction) -> Vec<BulkStatus> {
        reaction
            .notifications
            .iter()
            .filter_map(|notification| match notification {
                Notification::Bulk(bulk) => Some(bulk.status),
                _ => None,
            })
            .collect()
    }

    fn request_id_of(reaction: &Reaction) -> String {
        match &reaction.frames.last().and_then(|frame| frame.msg.clone()) {
            Some(client_frame::Msg::BulkRequest(request)) => {
                assert_eq!((request.sources.as_slice(), request.min_records), ([SOURCE.to_owned()].as_slice(), 100));
                request.request_id.clone()
            }
            other => panic!("expected a BulkRequest, got {other:?}"),
        }
    }

    #[test]
    fn a_first_sync_asks_for_a_file_swaps_it_in_and_subscribes_from_its_sequence() {
        let mut engine = engine();
        let reaction = welcome(&mut engine);
        assert_eq!(subscribed_cursor(&reaction), None, "no Subscribe before the file");
        let request_id = request_id_of(&reaction);
        let file = BulkFile { source: SOURCE.into(), key: USER.into(), sequence: 42, bytes: 10, ..BulkFile::default() };
        let reaction = engine.on_frame(
            ready(BulkReady { request_id, files: vec![file.clone()], ..BulkReady::default() }),
            Instant::now(),
        );
        assert_eq!(reaction.bulk_downloads, vec![BulkDownload { partition: PartitionId::new(SOURCE, USER), file }]);
        assert_eq!(bulk_statuses(&reaction), [BulkStatus::Start]);

        let id = PartitionId::new(SOURCE, USER);
        let record = syncline_proto::v1::Record { id: "a".into(), version: 40, ..Default::default() };
        let view = PartitionView {
            cursor: 42,
            total: 1,
            checksum: syncline_proto::checksum::record_hash("a", 40),
            records: BTreeMap::from([("a".to_owned(), record)]),
        };
        let reaction = engine.on_bulk_loaded(&id, Ok(view));
        assert_eq!(bulk_statuses(&reaction), [BulkStatus::ChangeDb, BulkStatus::Ok, BulkStatus::Complete]);
        assert_eq!(subscribed_cursor(&reaction), Some(42));
        assert_eq!(engine.synced_view(&id).map(|view| (view.cursor, view.total)), Some((42, 1)));
        assert_eq!(engine.stats().bulk_syncs, 1);
    }

    #[test]
    fn page_instead_a_refusal_or_a_failed_download_page_from_cursor_0() {
        let mut engine = engine();
        let request_id = request_id_of(&welcome(&mut engine));
        let small = BulkReady { request_id, page_instead: vec![SOURCE.into()], ..BulkReady::default() };
        let reaction = engine.on_frame(ready(small), Instant::now());
        assert_eq!(subscribed_cursor(&reaction), Some(0));
        assert!(reaction.bulk_downloads.is_empty());
        assert_eq!(subscribed_cursor(&welcome(&mut engine)), Some(0), "declined: pages from now on");

        let mut engine = self::engine();
        let request_id = request_id_of(&welcome(&mut engine));
        let error = ErrorFrame { message: "busy".into(), ..ErrorFrame::default() };
        let refused = BulkReady { request_id, error: Some(Box::new(error)), ..BulkReady::default() };
        let reaction = engine.on_frame(ready(refused), Instant::now());
        assert_eq!(bulk_statuses(&reaction), [BulkStatus::Error, BulkStatus::Complete]);
        assert_eq!(subscribed_cursor(&reaction), Some(0));

        let mut engine = self::engine();
        let request_id = request_id_of(&welcome(&mut engine));
        let file = BulkFile { source: SOURCE.into(), key: USER.into(), ..BulkFile::default() };
        engine.on_frame(ready(BulkReady { request_id, files: vec![file], ..BulkReady::default() }), Instant::now());
        let failed = Err(BulkLoadError::Refused { status: 404, message: "gone".into() });
        let reaction = engine.on_bulk_loaded(&PartitionId::new(SOURCE, USER), failed);
        assert_eq!(bulk_statuses(&reaction), [BulkStatus::Error, BulkStatus::Complete]);
        assert_eq!(subscribed_cursor(&reaction), Some(0));
    }

    #[test]
    fn a_reset_of_a_synced_partition_asks_for_a_file_instead_of_snapshot_pages() {
        use syncline_proto::v1::{SyncState, SyncStatus};

        let mut engine = engine();
        let request_id = request_id_of(&welcome(&mut engine));
        let file = BulkFile { source: SOURCE.into(), key: USER.into(), sequence: 5, ..BulkFile::default() };
        engine.on_frame(ready(BulkReady { request_id, files: vec![file], ..BulkReady::default() }), Instant::now());
        let id = PartitionId::new(SOURCE, USER);
        let view = PartitionView { cursor: 5, ..PartitionView::default() };
        assert_eq!(subscribed_cursor(&engine.on_bulk_loaded(&id, Ok(view))), Some(5));
        // Compaction passed the device's cursor: the server resets the subscription.
        let reset = SyncState {
            source: SOURCE.into(),
            key: USER.into(),
            status: SyncStatus::Reset as i32,
            cursor: 5,
            ..SyncState::default()
        };
        let reaction = engine.on_frame(ServerFrame { msg: Some(server_frame::Msg::SyncState(reset)) }, Instant::now());
        assert!(matches!(
            reaction.frames.first().and_then(|frame| frame.msg.as_ref()),
            Some(client_frame::Msg::Unsubscribe(_))
        ));
        request_id_of(&reaction);
        assert_eq!(
            engine.synced_view(&id).map(|view| view.cursor),
            Some(5),
            "the old data stays until a file replaces it"
        );
    }

    #[test]
    fn a_reconnect_while_downloading_waits_for_the_file_and_a_lost_request_is_asked_again() {
        let mut engine = engine();
        let first = request_id_of(&welcome(&mut engine));
        // The connection drops before BulkReady: the next session asks again.
        let second = request_id_of(&welcome(&mut engine));
        assert_ne!(first, second);
        let file = BulkFile { source: SOURCE.into(), key: USER.into(), sequence: 7, ..BulkFile::default() };
        let stale = BulkReady { request_id: first, files: vec![file.clone()], ..BulkReady::default() };
        assert!(engine.on_frame(ready(stale), Instant::now()).bulk_downloads.is_empty(), "an old answer is ignored");
        engine.on_frame(
            ready(BulkReady { request_id: second, files: vec![file], ..BulkReady::default() }),
            Instant::now(),
        );
        let reaction = welcome(&mut engine);
        assert!(
            reaction.frames.iter().all(|frame| !matches!(
                frame.msg,
                Some(client_frame::Msg::Subscribe(_) | client_frame::Msg::BulkRequest(_))
            )),
            "the download goes on: {reaction:?}"
        );
    }
}
