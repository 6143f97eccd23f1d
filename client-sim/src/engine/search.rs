//! Device-side search: `Search` frames out, `SearchResult` frames in, and the merge of results
//! into what the app sees when the channel asks for it (`merge_key`).
//!
//! Merged records are a layer of their own, like the records learned from mutation results:
//! the replica keeps holding exactly what the log says (its checksum keeps verifying), and a
//! searched record shows only where the replica has no record of that id. Searches matter
//! most for partitions the device does not sync whole; once a partition is caught up, its
//! replica is the full picture and the searched layer of that partition is dropped.

use std::collections::{BTreeMap, HashMap};

use syncline_proto::v1::{ClientFrame, ErrorCode, Record, Search, SearchResult, Value, client_frame};
use tracing::debug;

use super::{Reaction, SyncEngine, frame};
use crate::replica::{PartitionId, PartitionReplica};

/// What to search for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SearchQuery {
    /// The source to search.
    pub source: String,
    /// Search parameters, as the source's channel defines them.
    pub params: BTreeMap<String, Value>,
    /// Matches to skip.
    pub offset: u32,
    /// Most matches to return (0: the channel's default).
    pub limit: u32,
}

impl SearchQuery {
    /// Returns a query of `source` with no parameters.
    pub fn new(source: impl Into<String>) -> Self {
        Self { source: source.into(), ..Self::default() }
    }

    /// Adds a search parameter.
    #[must_use]
    pub fn param(mut self, name: impl Into<String>, value: Value) -> Self {
        self.params.insert(name.into(), value);
        self
    }

    /// Sets the page of matches.
    #[must_use]
    pub fn page(mut self, offset: u32, limit: u32) -> Self {
        self.offset = offset;
        self.limit = limit;
        self
    }
}

/// The answer to a search.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchResults {
    /// The matches, in the channel's order.
    pub records: Vec<Record>,
    /// How many records match in all.
    pub total: u64,
    /// The partition the records were merged into, when the channel asked for a merge.
    pub merged_into: Option<PartitionId>,
}

/// Why a search gave no results.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    /// The device is not connected: searches go to the backend and need the network.
    #[error("the device is offline")]
    Offline,
    /// The connection ended before the answer came.
    #[error("the connection ended before the search was answered")]
    Disconnected,
    /// No answer within the time given.
    #[error("the search timed out")]
    Timeout,
    /// The device has stopped.
    #[error("the device has stopped")]
    Stopped,
    /// The server or the channel refused or failed the search.
    #[error("search failed ({code:?}): {message}")]
    Failed {
        /// The error code (`BAD_REQUEST`, `FORBIDDEN`, `UNAVAILABLE`, ...).
        code: ErrorCode,
        /// The channel's or the server's message.
        message: String,
    },
}

/// Searches in flight and the records merged from earlier ones.
#[derive(Debug, Default)]
pub(super) struct Searches {
    /// Source of each search in flight, by search id.
    pending: HashMap<String, String>,
    merged: BTreeMap<PartitionId, BTreeMap<String, Record>>,
    next_id: u64,
}

impl Searches {
    pub(super) fn is_empty_for(&self, partition: &PartitionId) -> bool {
        self.merged.get(partition).is_none_or(BTreeMap::is_empty)
    }

    /// Lays the merged records of `partition` over `records` where the replica has none.
    pub(super) fn apply(
        &self,
        partition: &PartitionId,
        replica: Option<&PartitionReplica>,
        records: &mut BTreeMap<String, Record>,
    ) {
        let Some(merged) = self.merged.get(partition) else { return };
        for (id, record) in merged {
            if replica.is_none_or(|replica| !replica.records().contains_key(id)) {
                records.insert(id.clone(), record.clone());
            }
        }
    }

    /// Drops what was merged into `partition` (its replica is now complete).
    pub(super) fn forget(&mut self, partition: &PartitionId) {
        self.merged.remove(partition);
    }
}

impl SyncEngine {
    /// Returns the frame of a new search and its id.
    pub(crate) fn start_search(&mut self, query: SearchQuery) -> (String, ClientFrame) {
        self.searches.next_id += 1;
        let search_id = format!("s{}", self.searches.next_id);
        self.searches.pending.insert(search_id.clone(), query.source.clone());
        let search = Search {
            search_id: search_id.clone(),
            source: query.source,
            params: query.params,
            offset: query.offset,
            limit: query.limit,
        };
        (search_id, frame(client_frame::Msg::Search(search)))
    }

    /// Forgets the searches in flight (the connection ended: their answers will not come).
    pub(crate) fn abandon_searches(&mut self) {
        self.searches.pending.clear();
    }

    pub(super) fn on_search_result(&mut self, result: SearchResult, reaction: &mut Reaction) {
        let Some(source) = self.searches.pending.remove(&result.search_id) else {
            debug!(search_id = %result.search_id, "result of a search not in flight");
            self.stats.unexpected_frames += 1;
            return;
        };
        let outcome = match result.error {
            Some(error) => Err(SearchError::Failed {
                code: ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified),
                message: error.message,
            }),
            None => {
                let merged_into = (!result.merge_key.is_empty()).then(|| PartitionId::new(&source, &result.merge_key));
                if let Some(partition) = &merged_into {
                    let merged = self.searches.merged.entry(partition.clone()).or_default();
                    for record in &result.records {
                        merged.insert(record.id.clone(), record.clone());
                    }
                }
                Ok(SearchResults { records: result.records, total: result.total, merged_into })
            }
        };
        reaction.search_results.push((result.search_id, outcome));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DeviceConfig;
    use syncline_proto::v1::Error as ErrorFrame;

    fn record(id: &str, name: &str) -> Record {
        Record { id: id.into(), fields: [("name".to_owned(), Value::string(name))].into(), version: 0 }
    }

    fn engine() -> SyncEngine {
        SyncEngine::new(&DeviceConfig::new("ws://127.0.0.1:1/v1/sync", "demo", "demo"))
    }

    #[test]
    fn merged_results_show_in_the_view_until_the_partition_is_complete() {
        let mut engine = engine();
        let (search_id, _frame) = engine.start_search(SearchQuery::new("Account"));
        let mut reaction = Reaction::default();
        let result = SearchResult {
            search_id: search_id.clone(),
            records: vec![record("acc-1", "Acme"), record("acc-2", "Bolt")],
            total: 7,
            error: None,
            merge_key: "*".into(),
        };
        engine.on_search_result(result, &mut reaction);
        let partition = PartitionId::new("Account", "*");
        let (id, outcome) = reaction.search_results.pop().expect("an outcome");
        assert_eq!(id, search_id);
        let results = outcome.expect("ok");
        assert_eq!((results.records.len(), results.total), (2, 7));
        assert_eq!(results.merged_into.as_ref(), Some(&partition));
        let view = engine.view(&partition).expect("the merged records make a view");
        assert_eq!(view.records.keys().collect::<Vec<_>>(), ["acc-1", "acc-2"]);
        engine.searches.forget(&partition);
        assert!(engine.view(&partition).is_none());
    }

    #[test]
    fn results_without_a_merge_key_and_failures_leave_the_view_alone() {
        let mut engine = engine();
        let (display_only, _) = engine.start_search(SearchQuery::new("Account"));
        let (failing, _) = engine.start_search(SearchQuery::new("Account"));
        let mut reaction = Reaction::default();
        engine.on_search_result(
            SearchResult {
                search_id: display_only,
                records: vec![record("acc-1", "Acme")],
                total: 1,
                ..Default::default()
            },
            &mut reaction,
        );
        let error = ErrorFrame {
            code: ErrorCode::BadRequest as i32,
            message: "no such parameter".into(),
            ..Default::default()
        };
        engine.on_search_result(
            SearchResult { search_id: failing, error: Some(error), ..Default::default() },
            &mut reaction,
        );
        assert!(engine.view(&PartitionId::new("Account", "*")).is_none());
        let outcomes: Vec<_> = reaction.search_results.into_iter().map(|(_, outcome)| outcome).collect();
        assert_eq!(outcomes[0].as_ref().map(|results| results.merged_into.clone()), Ok(None));
        assert_eq!(
            outcomes[1],
            Err(SearchError::Failed { code: ErrorCode::BadRequest, message: "no such parameter".into() })
        );
        // An answer nobody asked for is counted, not applied.
        let mut reaction = Reaction::default();
        engine.on_search_result(SearchResult { search_id: "unknown".into(), ..Default::default() }, &mut reaction);
        assert!(reaction.search_results.is_empty());
        assert_eq!(engine.stats().unexpected_frames, 1);
    }
}
