//! Search: forwarded to the source's channel on a task of its own; the answer comes back as
//! SearchResult, merged only into a partition the user may sync.

use syncline_proto::v1::{self, server_frame};
use syncline_push::Outbox;

use super::DeviceSession;
use super::replies::{frame, wire_error};
use crate::error::ErrorClass;
use crate::model::AccessError;

impl DeviceSession {
    /// Forwards a search to the source's channel on a task of its own, so a slow backend
    /// never holds up the session; the answer comes back as SearchResult.
    pub(super) async fn on_search(&mut self, search: v1::Search, outbox: &Outbox) {
        let Some(identity) = self.identity.clone() else { return };
        let (search_id, source) = (search.search_id.clone(), search.source.clone());
        let failed = move |class: ErrorClass, message: String| {
            frame(server_frame::Msg::SearchResult(v1::SearchResult {
                search_id: search_id.clone(),
                error: Some(wire_error(class, message, &source, "")),
                ..v1::SearchResult::default()
            }))
        };
        if !self.services.sources.contains_key(&search.source) {
            let unknown = AccessError::UnknownSource(search.source.clone());
            let _ = outbox.send_frame(failed(unknown.class(), unknown.to_string())).await;
            return;
        }
        let Some(channel) = self.services.channels.get(&search.source).cloned() else {
            let message = format!("{} has no channel to search", search.source);
            let _ = outbox.send_frame(failed(ErrorClass::Forbidden, message)).await;
            return;
        };
        let services = self.services.clone();
        let outbox = outbox.clone();
        self.services.tracker.spawn(async move {
            let request = v1::SearchRequest {
                source: search.source.clone(),
                params: search.params.clone(),
                offset: search.offset,
                limit: search.limit,
                caller: Some(v1::Caller { user_id: identity.user_id.clone(), client_id: identity.client_id.clone() }),
            };
            let reply = match channel.search(request).await {
                Ok(response) => {
                    // Merge only into a partition this user may sync.
                    let merge_key = response
                        .partition
                        .filter(|partition| partition.source == search.source)
                        .and_then(|partition| {
                            services.resolve_partition(&identity, &partition.source, &partition.key).ok()
                        })
                        .map(|partition| partition.key)
                        .unwrap_or_default();
                    frame(server_frame::Msg::SearchResult(v1::SearchResult {
                        search_id: search.search_id.clone(),
                        records: response.records,
                        total: response.total,
                        error: None,
                        merge_key,
                    }))
                }
                Err(failure) => failed(failure.class(), failure.device_message()),
            };
            let _ = outbox.send_frame(reply).await;
        });
    }
}
