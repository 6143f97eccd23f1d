//! Counters of the device wire, one [`WireStats`] per listener: frames in and out by type,
//! bytes pushed, the push lag from commit to socket write, and failed upgrades.
//!
//! Every frame written counts here, so the counters sit on the hottest path of the server:
//! they are plain relaxed atomics, striped per thread ([`STRIPES`] cache-line-aligned copies,
//! each thread adding to its own), so writers on different cores never contend for a cache
//! line. A reader (the server's metrics, at scrape) sums the stripes. Nothing here knows of
//! Prometheus: the server exports these numbers.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use syncline_proto::v1::{client_frame, server_frame};

use crate::codec::EncodedFrame;

/// Copies of the counters: more than the cores a server runs its workers on, so that each
/// worker thread usually adds to a stripe of its own (threads share one only modulo this).
pub const STRIPES: usize = 16;

/// Names of the device frame types, indexed by [`client_kind`].
pub const CLIENT_FRAME_KINDS: [&str; 11] = [
    "hello",
    "subscribe",
    "ack",
    "pull",
    "unsubscribe",
    "mutate",
    "search",
    "rpc_call",
    "bulk_request",
    "logout",
    "command_ack",
];

/// Names of the server frame types, indexed by [`server_kind`].
pub const SERVER_FRAME_KINDS: [&str; 10] = [
    "welcome",
    "changes",
    "sync_state",
    "mutation_ack",
    "mutation_result",
    "search_result",
    "rpc_reply",
    "bulk_ready",
    "command",
    "error",
];

/// Upper bounds of the push lag buckets, in microseconds: from 100 µs (a commit pushed on a
/// quiet server) to 10 s (a device far behind its queue); slower lags land in `+Inf`.
pub const PUSH_LAG_BOUNDS_MICROS: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

/// Returns the index of a device frame's type in [`CLIENT_FRAME_KINDS`].
pub fn client_kind(msg: &client_frame::Msg) -> usize {
    match msg {
        client_frame::Msg::Hello(_) => 0,
        client_frame::Msg::Subscribe(_) => 1,
        client_frame::Msg::Ack(_) => 2,
        client_frame::Msg::Pull(_) => 3,
        client_frame::Msg::Unsubscribe(_) => 4,
        client_frame::Msg::Mutate(_) => 5,
        client_frame::Msg::Search(_) => 6,
        client_frame::Msg::RpcCall(_) => 7,
        client_frame::Msg::BulkRequest(_) => 8,
        client_frame::Msg::Logout(_) => 9,
        client_frame::Msg::CommandAck(_) => 10,
    }
}

/// Returns the index of a server frame's type in [`SERVER_FRAME_KINDS`] (`None` for a frame
/// without a message, which the server never sends).
pub fn server_kind(msg: Option<&server_frame::Msg>) -> Option<usize> {
    Some(match msg? {
        server_frame::Msg::Welcome(_) => 0,
        server_frame::Msg::Changes(_) => 1,
        server_frame::Msg::SyncState(_) => 2,
        server_frame::Msg::MutationAck(_) => 3,
        server_frame::Msg::MutationResult(_) => 4,
        server_frame::Msg::SearchResult(_) => 5,
        server_frame::Msg::RpcReply(_) => 6,
        server_frame::Msg::BulkReady(_) => 7,
        server_frame::Msg::Command(_) => 8,
        server_frame::Msg::Error(_) => 9,
    })
}

/// One thread's copy of the counters, alone on its cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe {
    frames_in: [AtomicU64; CLIENT_FRAME_KINDS.len()],
    bytes_in: AtomicU64,
    frames_out: [AtomicU64; SERVER_FRAME_KINDS.len()],
    bytes_out: AtomicU64,
    push_lag_buckets: [AtomicU64; PUSH_LAG_BOUNDS_MICROS.len() + 1],
    push_lag_sum_nanos: AtomicU64,
}

/// The wire counters of one listener (see the module's documentation).
#[derive(Debug)]
pub struct WireStats {
    stripes: Box<[Stripe]>,
    /// TLS or WebSocket upgrades that failed, timed out or were refused (path, subprotocol,
    /// connection cap). Rare: not striped.
    upgrades_failed: AtomicU64,
}

impl Default for WireStats {
    fn default() -> Self {
        Self { stripes: (0..STRIPES).map(|_| Stripe::default()).collect(), upgrades_failed: AtomicU64::new(0) }
    }
}

/// Where the next thread to count gets its stripe.
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's stripe (`usize::MAX` until it first counts).
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn stripe_index() -> usize {
    STRIPE.with(|stripe| {
        let index = stripe.get();
        if index != usize::MAX {
            return index;
        }
        let index = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
        stripe.set(index);
        index
    })
}

/// A copy of the counters, summed over the stripes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WireSnapshot {
    /// Device frames decoded, by [`CLIENT_FRAME_KINDS`].
    pub frames_in: [u64; CLIENT_FRAME_KINDS.len()],
    /// WebSocket payload bytes of the data frames received (decodable or not).
    pub bytes_in: u64,
    /// Server frames written to sockets, by [`SERVER_FRAME_KINDS`].
    pub frames_out: [u64; SERVER_FRAME_KINDS.len()],
    /// Encoded (protobuf) bytes of the frames written.
    pub bytes_out: u64,
    /// Live frames written, by push lag bucket ([`PUSH_LAG_BOUNDS_MICROS`], then `+Inf`);
    /// not cumulative.
    pub push_lag_buckets: [u64; PUSH_LAG_BOUNDS_MICROS.len() + 1],
    /// The sum of the push lags observed, in nanoseconds.
    pub push_lag_sum_nanos: u64,
    /// Upgrades that failed or were refused.
    pub upgrades_failed: u64,
}

impl WireStats {
    fn stripe(&self) -> &Stripe {
        &self.stripes[stripe_index()]
    }

    /// Counts a decoded device frame of `payload_bytes`.
    pub(crate) fn frame_in(&self, msg: Option<&client_frame::Msg>, payload_bytes: usize) {
        let stripe = self.stripe();
        stripe.bytes_in.fetch_add(payload_bytes as u64, Ordering::Relaxed);
        if let Some(msg) = msg {
            stripe.frames_in[client_kind(msg)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a frame handed to the socket and, for a live frame (one that carries its
    /// commit instant), observes its push lag: only live frames cost a clock read.
    pub(crate) fn frame_out(&self, frame: &EncodedFrame) {
        let now = frame.committed_at().map(|_| Instant::now());
        self.frame_out_at(frame, now);
    }

    /// [`WireStats::frame_out`] with the clock read given (`None` for frames without lag).
    fn frame_out_at(&self, frame: &EncodedFrame, now: Option<Instant>) {
        let stripe = self.stripe();
        if let Some(kind) = frame.kind() {
            stripe.frames_out[kind].fetch_add(1, Ordering::Relaxed);
        }
        stripe.bytes_out.fetch_add(frame.encoded_len() as u64, Ordering::Relaxed);
        if let (Some(committed_at), Some(now)) = (frame.committed_at(), now) {
            let lag = now.saturating_duration_since(committed_at);
            let micros = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
            let bucket = PUSH_LAG_BOUNDS_MICROS.partition_point(|bound| *bound < micros);
            stripe.push_lag_buckets[bucket].fetch_add(1, Ordering::Relaxed);
            stripe.push_lag_sum_nanos.fetch_add(u64::try_from(lag.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
    }

    /// Counts a failed or refused upgrade.
    pub(crate) fn upgrade_failed(&self) {
        self.upgrades_failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Returns the counters summed over the stripes.
    pub fn snapshot(&self) -> WireSnapshot {
        let mut snapshot =
            WireSnapshot { upgrades_failed: self.upgrades_failed.load(Ordering::Relaxed), ..Default::default() };
        let add = |total: &mut u64, counter: &AtomicU64| *total += counter.load(Ordering::Relaxed);
        for stripe in self.stripes.iter() {
            for (total, counter) in snapshot.frames_in.iter_mut().zip(&stripe.frames_in) {
                add(total, counter);
            }
            add(&mut snapshot.bytes_in, &stripe.bytes_in);
            for (total, counter) in snapshot.frames_out.iter_mut().zip(&stripe.frames_out) {
                add(total, counter);
            }
            add(&mut snapshot.bytes_out, &stripe.bytes_out);
            for (total, counter) in snapshot.push_lag_buckets.iter_mut().zip(&stripe.push_lag_buckets) {
                add(total, counter);
            }
            add(&mut snapshot.push_lag_sum_nanos, &stripe.push_lag_sum_nanos);
        }
        snapshot
    }
}

impl WireSnapshot {
    /// Returns the live frames whose push lag was observed.
    pub fn push_lag_count(&self) -> u64 {
        self.push_lag_buckets.iter().sum()
    }

    /// Returns the sum of the push lags observed.
    pub fn push_lag_sum(&self) -> Duration {
        Duration::from_nanos(self.push_lag_sum_nanos)
    }
}

#[cfg(test)]
mod tests {
    use syncline_proto::v1::{Ack, ServerFrame};

    use super::*;

    fn changes_frame() -> ServerFrame {
        ServerFrame { msg: Some(server_frame::Msg::Changes(Default::default())) }
    }

    #[test]
    fn counts_from_many_threads_sum_over_the_stripes() {
        let stats = std::sync::Arc::new(WireStats::default());
        let frame = EncodedFrame::new(changes_frame());
        let threads: Vec<_> = (0..STRIPES + 3)
            .map(|_| {
                let (stats, frame) = (stats.clone(), frame.clone());
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        stats.frame_out(&frame);
                        stats.frame_in(Some(&client_frame::Msg::Ack(Ack::default())), 7);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let snapshot = stats.snapshot();
        let threads = (STRIPES + 3) as u64;
        assert_eq!(snapshot.frames_out[1], 100 * threads, "changes");
        assert_eq!(snapshot.frames_out.iter().sum::<u64>(), 100 * threads);
        assert_eq!(snapshot.bytes_out, 100 * threads * frame.encoded_len() as u64);
        assert_eq!(snapshot.frames_in[2], 100 * threads, "acks");
        assert_eq!(snapshot.bytes_in, 700 * threads);
        assert_eq!(snapshot.push_lag_count(), 0, "frames without a commit instant have no lag");
    }

    #[test]
    fn live_frames_land_in_their_lag_bucket() {
        let stats = WireStats::default();
        let committed = Instant::now();
        let frame = EncodedFrame::live(changes_frame(), committed);
        stats.frame_out_at(&frame, Some(committed + Duration::from_micros(300)));
        stats.frame_out_at(&frame, Some(committed + Duration::from_secs(60)));
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.push_lag_buckets[2], 1, "300 µs is in the 500 µs bucket");
        assert_eq!(snapshot.push_lag_buckets[PUSH_LAG_BOUNDS_MICROS.len()], 1, "a minute is past every bound");
        assert_eq!(snapshot.push_lag_sum(), Duration::from_micros(60_000_300));
    }
}
