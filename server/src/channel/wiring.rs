//! Starting change capture for the configured sources: one watcher per channel endpoint
//! with watched sources, one poller per polled source, and the request queues through which
//! device sessions ask capture to load or poll a partition now.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::capture::{self, CaptureSink, POLL_REQUEST_QUEUE, SubscribedPartitions};
use super::grpc::ChannelConnection;
use crate::config::{Capture, Partitioning, SourceSettings};
use crate::storage::PartitionName;

/// Where device sessions ask change capture for a partition: by source, the queue of its
/// poller (poll it now) or of its channel's watcher (load it from the channel if it was never
/// loaded). Sources captured by Ingest have none.
#[derive(Clone, Debug, Default)]
pub struct CaptureRequests(BTreeMap<String, mpsc::Sender<PartitionName>>);

impl CaptureRequests {
    /// Asks capture for `partition` without waiting: a full queue already holds requests that
    /// will bring it up to date.
    pub fn request(&self, partition: &PartitionName) {
        if let Some(requests) = self.0.get(&partition.source) {
            let _ = requests.try_send(partition.clone());
        }
    }
}

/// The receiving ends of the capture request queues, by poller source or watched endpoint.
pub struct CaptureQueues(Vec<(String, mpsc::Receiver<PartitionName>)>);

/// Creates the request queues of change capture: one per polled source and one per watched
/// channel endpoint (shared by that endpoint's sources).
pub fn capture_queues(sources: &BTreeMap<String, SourceSettings>) -> (CaptureRequests, CaptureQueues) {
    let mut senders = BTreeMap::new();
    let mut receivers = Vec::new();
    let mut endpoints: BTreeMap<String, mpsc::Sender<PartitionName>> = BTreeMap::new();
    for (name, source) in sources {
        match (source.capture, &source.channel) {
            (Capture::Poll { .. }, _) => {
                let (sender, receiver) = mpsc::channel(POLL_REQUEST_QUEUE);
                senders.insert(name.clone(), sender);
                receivers.push((name.clone(), receiver));
            }
            (Capture::Watch, Some(endpoint)) => {
                let sender = endpoints.entry(endpoint.clone()).or_insert_with(|| {
                    let (sender, receiver) = mpsc::channel(POLL_REQUEST_QUEUE);
                    receivers.push((endpoint.clone(), receiver));
                    sender
                });
                senders.insert(name.clone(), sender.clone());
            }
            (Capture::Watch | Capture::Ingest, _) => {}
        }
    }
    (CaptureRequests(senders), CaptureQueues(receivers))
}

/// Starts change capture on `tracker` (in the current runtime): a watcher per channel
/// endpoint with watched sources, a poller per polled source.
pub fn spawn_capture(
    sources: &BTreeMap<String, SourceSettings>,
    sink: &CaptureSink,
    subscribed: Arc<dyn SubscribedPartitions>,
    queues: CaptureQueues,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<(), super::ChannelCallError> {
    let mut watched: BTreeMap<String, BTreeMap<String, Partitioning>> = BTreeMap::new();
    for (name, source) in sources {
        if let (Capture::Watch, Some(endpoint)) = (source.capture, &source.channel) {
            watched.entry(endpoint.clone()).or_default().insert(name.clone(), source.partitioning);
        }
    }
    let mut queues: BTreeMap<String, _> = queues.0.into_iter().collect();
    for (endpoint, sources) in watched {
        let connection = ChannelConnection::lazy(&endpoint)?;
        let Some(loads) = queues.remove(&endpoint) else { continue };
        tracker.spawn(capture::run_watch(sink.clone(), connection, sources, loads, shutdown.clone()));
    }
    for (name, requests) in queues {
        let Some(source) = sources.get(&name) else { continue };
        let (Capture::Poll { interval }, Some(endpoint)) = (source.capture, &source.channel) else {
            continue;
        };
        let connection = ChannelConnection::lazy(endpoint)?;
        tracker.spawn(capture::run_poll(
            sink.clone(),
            subscribed.clone(),
            connection,
            name,
            interval,
            requests,
            shutdown.clone(),
        ));
    }
    Ok(())
}
