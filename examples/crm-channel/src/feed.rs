//! The streams behind `Query` and `Watch`.
//!
//! Both are plain state machines over [`CrmDb`] reads (no background task): each item is
//! read when the gRPC layer asks for it, so a slow client slows the reads instead of
//! buffering, and a dropped call simply drops the stream.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream;
use syncline_proto::sdk::{ChangeStream, ChannelError, RecordStream, Result};
use syncline_proto::v1::ChangeBatch;

use crate::db::{CrmDb, resume_token};
use crate::schema::SourceSchema;

/// How often a watcher with nothing to send looks for changes made by other processes
/// (writes through this process wake it at once): the worst-case extra latency of such a
/// change, traded against one cheap indexed query per watcher per interval.
pub const EXTERNAL_WRITE_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Records read per query of a `Query` stream: large enough to amortise a read, small
/// enough to hold one page in memory per open `Query`.
const QUERY_PAGE_SIZE: u32 = 256;

/// Streams every record of a partition, by id, a page at a time.
pub(crate) fn query(db: CrmDb, source: &'static SourceSchema, key: String) -> RecordStream {
    struct State {
        db: CrmDb,
        source: &'static SourceSchema,
        key: String,
        page: VecDeque<syncline_proto::v1::Record>,
        last_id: Option<String>,
        exhausted: bool,
    }
    let state = State { db, source, key, page: VecDeque::new(), last_id: None, exhausted: false };
    Box::pin(stream::unfold(state, |mut state| async move {
        if state.page.is_empty() && !state.exhausted {
            let page =
                state.db.query_page(state.source, state.key.clone(), state.last_id.take(), QUERY_PAGE_SIZE).await;
            match page {
                Ok(page) => {
                    state.exhausted = page.len() < QUERY_PAGE_SIZE as usize;
                    state.last_id = page.last().map(|record| record.id.clone());
                    state.page = page.into();
                }
                Err(error) => {
                    state.exhausted = true;
                    return Some((Err(error), state));
                }
            }
        }
        let record = state.page.pop_front()?;
        Some((Ok(record), state))
    }))
}

/// Where a `Watch` starts.
pub(crate) enum WatchStart {
    /// After this change id, first sending a batch with no changes that carries it (the
    /// caller had no token).
    Now(u64),
    /// After this change id (the caller's token).
    After(u64),
}

/// Reads the change id in a `WatchRequest.resume_token` and checks that the feed can resume
/// from it: it must not be ahead of the feed (a token of another database), and the changes
/// after it must still be stored.
pub(crate) async fn watch_start(db: &CrmDb, token: &[u8]) -> Result<WatchStart> {
    let bounds = db.feed_bounds().await?;
    if token.is_empty() {
        return Ok(WatchStart::Now(bounds.last_change_id));
    }
    let position = <[u8; 8]>::try_from(token).map(u64::from_be_bytes).map_err(|_| {
        ChannelError::InvalidArgument(format!("a resume token of this channel has 8 bytes, not {}", token.len()))
    })?;
    if position > bounds.last_change_id {
        return Err(ChannelError::FailedPrecondition(format!(
            "resume token {position} is ahead of the change feed (last change {}): it comes from another database",
            bounds.last_change_id
        )));
    }
    if position.saturating_add(1) < bounds.oldest_change_id {
        return Err(ChannelError::FailedPrecondition(format!(
            "resume token {position} has expired: the feed now starts at change {}",
            bounds.oldest_change_id
        )));
    }
    Ok(WatchStart::After(position))
}

/// Streams change batches from `start`, then follows new changes until dropped.
pub(crate) fn watch(db: CrmDb, start: WatchStart, sources: Option<Arc<[String]>>) -> ChangeStream {
    struct State {
        db: CrmDb,
        position: u64,
        checkpoint: bool,
        sources: Option<Arc<[String]>>,
        failed: bool,
    }
    let (position, checkpoint) = match start {
        WatchStart::Now(position) => (position, true),
        WatchStart::After(position) => (position, false),
    };
    let state = State { db, position, checkpoint, sources, failed: false };
    Box::pin(stream::unfold(state, |mut state| async move {
        if state.failed {
            return None;
        }
        if state.checkpoint {
            state.checkpoint = false;
            let batch = ChangeBatch { partitions: Vec::new(), resume_token: resume_token(state.position) };
            return Some((Ok(batch), state));
        }
        let db = state.db.clone();
        loop {
            // Registered before reading, so a write that commits after the read still wakes us.
            let written = db.written();
            tokio::pin!(written);
            written.as_mut().enable();
            match db.changes_after(state.position, state.sources.clone()).await {
                Ok(Some(read)) => {
                    state.position = read.last_change_id;
                    return Some((Ok(read.batch), state));
                }
                Ok(None) => {
                    tokio::select! {
                        () = &mut written => {}
                        () = tokio::time::sleep(EXTERNAL_WRITE_POLL_INTERVAL) => {}
                    }
                }
                Err(error) => {
                    state.failed = true;
                    return Some((Err(error), state));
                }
            }
        }
    }))
}
