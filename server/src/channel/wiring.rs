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
use crate::cluster::{Lease, Leases};
use crate::config::{Capture, Partitioning, SourceSettings};
use crate::storage::{Fence, PartitionName};

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
/// endpoint with watched sources, a poller per polled source. With `leases` (cluster mode),
/// each runs on one node at a time, under the lease `capture:<its position name>` (see
/// [`crate::cluster::lease`]): the other nodes stand by and take over when its holder dies.
pub fn spawn_capture(
    sources: &BTreeMap<String, SourceSettings>,
    sink: &CaptureSink,
    subscribed: Arc<dyn SubscribedPartitions>,
    queues: CaptureQueues,
    leases: Option<&Arc<Leases>>,
    (tracker, shutdown): (&TaskTracker, &CancellationToken),
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
        let lease = format!("capture:{}", capture::watch_position_name(&sources));
        let sink = sink.clone();
        let watch = move |loads, fence, stop| {
            capture::run_watch(sink.clone(), connection.clone(), sources.clone(), loads, fence, stop)
        };
        spawn_captor(leases, &lease, loads, watch, tracker, shutdown);
    }
    for (name, requests) in queues {
        let Some(source) = sources.get(&name) else { continue };
        let (Capture::Poll { interval }, Some(endpoint)) = (source.capture, &source.channel) else {
            continue;
        };
        let target = capture::PollTarget {
            subscribed: subscribed.clone(),
            connection: ChannelConnection::lazy(endpoint)?,
            source: name.clone(),
            interval,
        };
        let sink = sink.clone();
        let poll = move |requests, fence, stop| capture::run_poll(sink.clone(), target.clone(), requests, fence, stop);
        spawn_captor(leases, &format!("capture:poll:{name}"), requests, poll, tracker, shutdown);
    }
    Ok(())
}

/// Runs one watcher or poller on `tracker`: at once on a single node, or whenever this node
/// holds the lease `lease` in cluster mode. `run` gets the request queue, the fence its
/// writes carry and its stop token, and gives the queue back when it stops.
fn spawn_captor<F, Fut>(
    leases: Option<&Arc<Leases>>,
    lease: &str,
    requests: mpsc::Receiver<PartitionName>,
    mut run: F,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) where
    F: FnMut(mpsc::Receiver<PartitionName>, Option<Fence>, CancellationToken) -> Fut + Send + 'static,
    Fut: Future<Output = mpsc::Receiver<PartitionName>> + Send + 'static,
{
    match leases {
        None => {
            let running = run(requests, None, shutdown.clone());
            tracker.spawn(async move {
                drop(running.await);
            });
        }
        Some(leases) => {
            let held = leases.clone().while_held(
                Lease::app(lease),
                shutdown.clone(),
                requests,
                move |requests, fence, stop| run(requests, Some(fence), stop),
            );
            tracker.spawn(held);
        }
    }
}
