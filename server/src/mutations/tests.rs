//! Mutation dispatch against a scripted channel served over real gRPC: outcomes reach the
//! device's reply port once, in queue order per device, retried while the channel is
//! unavailable and failed with the device error code of a refusal.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message as _;
use syncline_proto::sdk::{ChannelError as SdkError, WriteOutcome as SdkOutcome};
use syncline_proto::v1::{ErrorCode, MutationResult, ServerFrame, server_frame};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use super::MutationDispatcher;
use crate::config::{Capture, SourceSettings};
use crate::reply::{DeviceReplies, ReplyFuture};
use crate::storage::{Enqueued, MutationOp, PartitionName, QueuedMutation, Store};
use crate::test_util::fixtures::{
    ScriptedChannel, ServedChannel, dispatcher, record, serve_channel, sources, temp_store, with_capture, within,
};

/// The frames sent to devices, by client id, in the order they were sent.
struct RecordedReplies(mpsc::UnboundedSender<(String, ServerFrame)>);

impl DeviceReplies for RecordedReplies {
    fn to_device<'a>(&'a self, client_id: &'a str, frame: ServerFrame) -> ReplyFuture<'a> {
        Box::pin(async move {
            let _ = self.0.send((client_id.to_owned(), frame));
        })
    }
}

/// A dispatcher over a fresh store, the scripted channel it writes to, and what it replied.
struct Dispatch {
    dispatcher: Arc<MutationDispatcher>,
    store: Arc<dyn Store>,
    channel: ServedChannel,
    replies: mpsc::UnboundedReceiver<(String, ServerFrame)>,
    _dir: tempfile::TempDir,
    _stop: DropGuard,
}

impl Dispatch {
    /// Starts a dispatcher whose `Task` source writes through `channel`.
    async fn start(channel: ScriptedChannel) -> Self {
        Self::start_with(channel, |sources| sources).await
    }

    /// Like [`Dispatch::start`], with the sources changed by `customize`.
    async fn start_with(
        channel: ScriptedChannel,
        customize: impl FnOnce(BTreeMap<String, SourceSettings>) -> BTreeMap<String, SourceSettings>,
    ) -> Self {
        let channel = serve_channel(channel).await;
        let (dir, store) = temp_store();
        let (sender, replies) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let sources = customize(sources(Some(&channel.url)));
        let dispatcher =
            dispatcher(&store, &sources, Arc::new(RecordedReplies(sender)), &TaskTracker::new(), &shutdown);
        Self { dispatcher, store, channel, replies, _dir: dir, _stop: shutdown.drop_guard() }
    }

    /// Queues a create of record `id` by device `client_id` durably, as the gateway does.
    fn enqueue(&self, client_id: &str, mutation_id: &str, id: &str) -> Enqueued {
        self.store.enqueue_mutation(&create(client_id, mutation_id, id), 100).expect("enqueue")
    }

    /// Queues a create and hands it to the dispatcher.
    fn submit(&self, client_id: &str, mutation_id: &str, id: &str) {
        match self.enqueue(client_id, mutation_id, id) {
            Enqueued::Queued { seq } => {
                self.dispatcher.submit(QueuedMutation { seq, ..create(client_id, mutation_id, id) })
            }
            other => panic!("expected {mutation_id} to be queued, got {other:?}"),
        }
    }

    /// Waits for the next outcome sent to a device; returns the device and the outcome.
    async fn next_outcome(&mut self) -> (String, MutationResult) {
        match within("a mutation outcome", self.replies.recv()).await {
            Some((client_id, ServerFrame { msg: Some(server_frame::Msg::MutationResult(result)) })) => {
                (client_id, result)
            }
            other => panic!("expected a MutationResult, got {other:?}"),
        }
    }
}

/// A create of record `id` in the user partition of `client_id`'s user (`user-<client_id>`)
/// of source `Task`.
fn create(client_id: &str, mutation_id: &str, id: &str) -> QueuedMutation {
    let user_id = format!("user-{client_id}");
    let item = record(id, 7);
    QueuedMutation {
        client_id: client_id.to_owned(),
        partition: PartitionName::new("Task", user_id.clone()),
        user_id,
        seq: 0,
        mutation_id: mutation_id.to_owned(),
        op: MutationOp::Create,
        id: item.id,
        fields: item.fields,
        base_version: 0,
    }
}

fn error_code(result: &MutationResult) -> Option<i32> {
    result.error.as_ref().map(|error| error.code)
}

#[tokio::test]
async fn an_outcome_reaches_the_device_once_and_its_write_is_logged() {
    let mut dispatch = Dispatch::start(ScriptedChannel::answering()).await;
    dispatch.submit("dev-a", "m1", "t1");
    let (client_id, result) = dispatch.next_outcome().await;
    assert_eq!(client_id, "dev-a");
    assert!(result.ok && result.mutation_id == "m1", "{result:?}");
    assert_eq!(result.record.as_ref().map(|record| (record.id.as_str(), record.version)), Some(("t1", 0)));

    // A later mutation of the same device comes next: nothing of m1 was sent twice.
    dispatch.submit("dev-a", "m2", "t2");
    assert_eq!(dispatch.next_outcome().await.1.mutation_id, "m2");
    assert_eq!(dispatch.channel.backend.arrived(), ["m1", "m2"]);
    let stored = dispatch.store.record(&create("dev-a", "m1", "t1").partition, "t1").expect("read");
    assert_eq!(stored.map(|record| record.fields), Some(record("t1", 7).fields));
    assert_eq!(dispatch.store.pending_mutations().expect("pending").len(), 0);
}

#[tokio::test]
async fn a_mutation_id_with_an_outcome_is_answered_from_the_store_and_never_sent_again() {
    let mut dispatch = Dispatch::start(ScriptedChannel::answering()).await;
    dispatch.submit("dev-a", "m1", "t1");
    let (_, result) = dispatch.next_outcome().await;
    match dispatch.enqueue("dev-a", "m1", "t1") {
        Enqueued::Done { result: stored } => {
            assert_eq!(MutationResult::decode(stored.as_slice()).expect("a MutationResult"), result);
        }
        other => panic!("expected the stored outcome, got {other:?}"),
    }
    assert_eq!(dispatch.channel.backend.arrived(), ["m1"]);
}

#[tokio::test]
async fn an_unavailable_channel_is_retried_until_it_answers() {
    let channel = ScriptedChannel::answering();
    channel.script(
        "m1",
        vec![Err(SdkError::Unavailable("restarting".into())), Err(SdkError::DeadlineExceeded("slow".into()))],
    );
    let mut dispatch = Dispatch::start(channel).await;
    dispatch.submit("dev-a", "m1", "t1");
    let (_, result) = dispatch.next_outcome().await;
    assert!(result.ok, "{result:?}");
    assert_eq!(dispatch.channel.backend.arrived(), ["m1", "m1", "m1"], "two failures, then the answer");
}

#[tokio::test]
async fn a_refusal_fails_the_mutation_with_its_device_error_code() {
    let channel = ScriptedChannel::answering();
    let refusals = [
        ("m-denied", SdkError::PermissionDenied("not yours".into()), ErrorCode::Forbidden),
        ("m-invalid", SdkError::InvalidArgument("bad field".into()), ErrorCode::BadRequest),
        ("m-rule", SdkError::FailedPrecondition("closed deal".into()), ErrorCode::Conflict),
        ("m-missing", SdkError::NotFound("gone".into()), ErrorCode::NotFound),
    ];
    for (mutation_id, error, _) in &refusals {
        channel.script(mutation_id, vec![Err(error.clone())]);
    }
    let mut dispatch = Dispatch::start(channel).await;
    for (number, (mutation_id, _, _)) in refusals.iter().enumerate() {
        dispatch.submit("dev-a", mutation_id, &format!("t{number}"));
    }
    for (mutation_id, error, code) in &refusals {
        let (_, result) = dispatch.next_outcome().await;
        assert_eq!(result.mutation_id, *mutation_id);
        assert!(!result.ok, "{result:?}");
        assert_eq!(error_code(&result), Some(*code as i32), "{error:?}: {result:?}");
        assert_eq!(result.error.as_ref().map(|error| error.message.as_str()), Some(error.message()));
    }
    let sent = dispatch.channel.backend.arrived();
    assert_eq!(sent, refusals.map(|(mutation_id, _, _)| mutation_id), "each sent once, in order");
    assert_eq!(dispatch.store.pending_mutations().expect("pending").len(), 0, "refused mutations are finished");
}

#[tokio::test]
async fn a_devices_mutations_reach_the_channel_one_at_a_time_in_order_while_other_devices_go_on() {
    let mut dispatch = Dispatch::start(ScriptedChannel::holding()).await;
    for mutation_id in ["a1", "a2", "a3"] {
        dispatch.submit("dev-a", mutation_id, &format!("t-{mutation_id}"));
    }
    dispatch.submit("dev-b", "b1", "t-b1");

    // dev-a's first write is held; dev-b's lane does not wait for it, and a2 waits its turn.
    let mut arrived = dispatch.channel.backend.wait_for_arrivals(2).await;
    arrived.sort();
    assert_eq!(arrived, ["a1", "b1"]);

    dispatch.channel.backend.release(4);
    let mut outcomes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for _ in 0..4 {
        let (client_id, result) = dispatch.next_outcome().await;
        assert!(result.ok, "{result:?}");
        outcomes.entry(client_id).or_default().push(result.mutation_id);
    }
    assert_eq!(outcomes["dev-a"], ["a1", "a2", "a3"]);
    assert_eq!(outcomes["dev-b"], ["b1"]);
    let sent: Vec<_> = dispatch.channel.backend.arrived().into_iter().filter(|id| id.starts_with('a')).collect();
    assert_eq!(sent, ["a1", "a2", "a3"]);
}

#[tokio::test]
async fn pending_mutations_are_resubmitted_at_start() {
    let mut dispatch = Dispatch::start(ScriptedChannel::answering()).await;
    dispatch.enqueue("dev-a", "m1", "t1");
    dispatch.enqueue("dev-a", "m2", "t2");
    assert_eq!(dispatch.dispatcher.resume_pending().await.expect("resume"), 2);
    assert_eq!(dispatch.next_outcome().await.1.mutation_id, "m1");
    assert_eq!(dispatch.next_outcome().await.1.mutation_id, "m2");
}

#[tokio::test]
async fn a_watched_sources_write_comes_back_through_its_feed_not_from_the_dispatcher() {
    let mut dispatch =
        Dispatch::start_with(ScriptedChannel::answering(), |sources| with_capture(sources, "Task", Capture::Watch))
            .await;
    dispatch.submit("dev-a", "m1", "t1");
    assert!(dispatch.next_outcome().await.1.ok);
    let partition = create("dev-a", "m1", "t1").partition;
    assert_eq!(dispatch.store.record(&partition, "t1").expect("read"), None);
    assert_eq!(dispatch.store.partition_state(&partition).expect("state").head, 0);
}

#[tokio::test]
async fn a_channels_conflict_fails_the_mutation_with_the_current_record() {
    let channel = ScriptedChannel::answering();
    let current = syncline_proto::v1::Record { version: 9, ..record("t1", 99) };
    channel.script("m1", vec![Ok(SdkOutcome::Conflict(current.clone()))]);
    let mut dispatch = Dispatch::start(channel).await;
    dispatch.submit("dev-a", "m1", "t1");
    let (_, result) = dispatch.next_outcome().await;
    assert_eq!(error_code(&result), Some(ErrorCode::Conflict as i32));
    let sent_current = result.error.and_then(|error| error.current).expect("the current record");
    assert_eq!((sent_current.fields, sent_current.version), (current.fields, 0), "devices never see backend versions");
}
