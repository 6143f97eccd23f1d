//! Many lightweight devices on one process: one password login, then token logins, each
//! device a raw subscriber over [`Connection`] rather than a full [`syncline_client_sim::Device`]
//! (no replica, no engine), so ten thousand of them stay cheap.
//!
//! A subscriber keeps what a real device keeps for flow control and acks (its cursor), acks
//! catch-up pages as they arrive and live pushes every `ack_every` changes (each device at its
//! own phase, `index % ack_every`, as a fleet that joined at different times would: not every
//! device acking the same change), and counts the records of the current run (the *probes*
//! carrying the run's tag, see [`syncline_client_sim::probe`]): their latency is receive time
//! − `sent_ns`, both on the run's one monotonic clock.
//!
//! - `args`: [`FleetArgs`] and [`RunArgs`], the shared command-line arguments.
//! - `protocol`: the frames, Hello (password or token) and the partition's head.
//! - `ramp_up`: one login, then every device connected and caught up ([`RampUp`]).
//! - `device`: one device's protocol state machine and reconnects.
//! - `failover`: devices that move to another endpoint when their node dies ([`Failover`]).
//! - `totals`: what each device did and the fleet's [`FleetTotals`].
//! - this module: the run's shared counters ([`Shared`], [`Milestone`]), the coordinator's
//!   orders ([`Control`]), the running [`Fleet`], and [`run_bounded`].

mod args;
mod device;
mod failover;
mod protocol;
mod ramp_up;
mod totals;

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use syncline_client_sim::{Connection, Probe};
use syncline_proto::v1::hello;
use tokio::{
    sync::{Notify, Semaphore, watch},
    task::JoinSet,
    time::Instant,
};

pub(crate) use self::{
    args::{
        DEFAULT_ACK_EVERY, DEFAULT_CONNECT_CONCURRENCY, DEFAULT_SOURCE_ADDRS, FleetArgs, FleetParams, RunArgs,
        check_rate,
    },
    failover::{Failover, FailoverSummary, KillArgs},
    protocol::{HelloAnswer, ack_frame, describe_code, describe_error, hello, login, resume},
    ramp_up::{Logins, RampUp, ramp_up},
    totals::FleetTotals,
};
#[cfg(test)]
pub(crate) use args::fleet_args;
use device::{Dial, DialCredentials, run_device};
use totals::{DeviceOutcome, StallSetTotals};

use crate::report::latency_histogram;

/// A count that a coordinator can wait on reaching a target, without polling.
#[derive(Debug)]
pub(crate) struct Milestone {
    count: AtomicU64,
    target: AtomicU64,
    reached: Notify,
}

impl Default for Milestone {
    fn default() -> Self {
        Self { count: AtomicU64::new(0), target: AtomicU64::new(u64::MAX), reached: Notify::new() }
    }
}

impl Milestone {
    pub(crate) fn add(&self, amount: u64) {
        let count = self.count.fetch_add(amount, Ordering::SeqCst) + amount;
        if count >= self.target.load(Ordering::SeqCst) {
            self.reached.notify_waiters();
        }
    }

    pub(crate) fn get(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Waits until the count reaches `target`; returns false if `deadline` came first.
    pub(crate) async fn wait_for(&self, target: u64, deadline: Instant) -> bool {
        self.target.store(target, Ordering::SeqCst);
        loop {
            let notified = self.reached.notified();
            tokio::pin!(notified);
            // Registered before the check: an `add` after the check wakes this waiter.
            notified.as_mut().enable();
            if self.get() >= target {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.get() >= target;
            }
        }
    }
}

/// What every subscriber does, and what they count together.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) source: String,
    pub(crate) key: String,
    pub(crate) cursor: u64,
    pub(crate) page_size: u32,
    pub(crate) window: u32,
    pub(crate) ack_every: u64,
    /// The run's tag: only records carrying it are counted.
    pub(crate) run_tag: i64,
    /// The clock of `sent_ns`.
    pub(crate) run_start: Instant,
    /// Devices caught up for the first time, or failed.
    pub(crate) settled: Milestone,
    pub(crate) caught_up: AtomicUsize,
    pub(crate) failed: AtomicUsize,
    /// Records of this run received (live pushes and catch-up pages).
    pub(crate) delivered: Milestone,
    /// Receive time of the last record of this run, ns since `run_start`.
    pub(crate) last_receive_ns: AtomicU64,
    /// Latency of records in live pushes.
    pub(crate) live_latency: Mutex<Histogram<u64>>,
    /// Latency of records that came in catch-up pages after a demotion or a reconnect (not
    /// live pushes).
    pub(crate) catchup_latency: Mutex<Histogram<u64>>,
    /// Devices that reached the coordinator's target cursor (see [`Control::target`]) on a
    /// connection of the current generation, caught up: each counts once per target.
    pub(crate) at_target: Milestone,
    /// When the last reconnect was ordered ([`Fleet::reconnect_all`]), ns since `run_start`.
    reconnect_ordered_ns: AtomicU64,
    /// Per device, the reconnect order to caught up again on the new connection.
    pub(crate) resume_latency: Mutex<Histogram<u64>>,
    /// Probes sent from this time on (ns since `run_start`) count as the second phase in
    /// `others_latency`; `u64::MAX`: one phase.
    pub(crate) phase_split_ns: AtomicU64,
    /// Live-push latency of devices outside the stall set (when there is one), by phase:
    /// probes sent before and after `phase_split_ns`.
    pub(crate) others_latency: [Mutex<Histogram<u64>>; 2],
    /// Set once the fleet is stopping; a device that ends after it is not a failure.
    stopping: AtomicBool,
    /// Records of this run received per partition key, for scenarios whose devices sync
    /// different partitions (`personal`): keys are fixed before the fleet starts; records
    /// of other keys are not counted here. Empty: not counted per key.
    pub(crate) delivered_by_key: HashMap<String, AtomicU64>,
    /// Devices that moved to another endpoint after their connection dropped.
    pub(crate) failover: Failover,
}

impl Shared {
    pub(crate) fn new(args: &FleetArgs, cursor: u64, run_start: Instant) -> Self {
        Self {
            source: args.source.clone(),
            key: args.key.clone(),
            cursor,
            page_size: args.page_size,
            window: args.window,
            ack_every: args.ack_every.max(1),
            run_tag: i64::from(rand::random::<u32>()),
            run_start,
            settled: Milestone::default(),
            caught_up: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            delivered: Milestone::default(),
            last_receive_ns: AtomicU64::new(0),
            live_latency: Mutex::new(latency_histogram()),
            catchup_latency: Mutex::new(latency_histogram()),
            at_target: Milestone::default(),
            reconnect_ordered_ns: AtomicU64::new(0),
            resume_latency: Mutex::new(latency_histogram()),
            phase_split_ns: AtomicU64::new(u64::MAX),
            others_latency: [Mutex::new(latency_histogram()), Mutex::new(latency_histogram())],
            stopping: AtomicBool::new(false),
            delivered_by_key: HashMap::new(),
            failover: Failover::default(),
        }
    }

    /// Returns ns since the run's start.
    /// Adds `counted` records of this run to partition `key`'s count, when counted per key.
    fn count_for_key(&self, key: &str, counted: u64) {
        if counted > 0
            && let Some(count) = self.delivered_by_key.get(key)
        {
            count.fetch_add(counted, Ordering::Relaxed);
        }
    }

    pub(crate) fn now_ns(&self) -> u64 {
        u64::try_from(self.run_start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Counts the probes of this run in `probes`, received at `received_ns`, into `histogram`
    /// (and, for a device outside the stall set, into `others_latency` by phase).
    fn count_probes(
        &self,
        probes: &[Probe],
        received_ns: u64,
        histogram: &Mutex<Histogram<u64>>,
        outside_stall_set: bool,
    ) -> u64 {
        let mut counted = 0;
        let split_ns = self.phase_split_ns.load(Ordering::Relaxed);
        let mut histogram = histogram.lock();
        for probe in probes.iter().filter(|probe| probe.run == self.run_tag) {
            let latency = received_ns.saturating_sub(probe.sent_ns);
            histogram.saturating_record(latency);
            if outside_stall_set {
                self.others_latency[usize::from(probe.sent_ns >= split_ns)].lock().saturating_record(latency);
            }
            counted += 1;
        }
        drop(histogram);
        if counted > 0 {
            self.last_receive_ns.fetch_max(received_ns, Ordering::Relaxed);
            self.delivered.add(counted);
        }
        counted
    }
}

/// Cursor of [`Control::target`] meaning "no target".
const NO_TARGET: u64 = u64::MAX;

/// What the coordinator tells every device, through one watch channel: a change wakes every
/// device task once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Control {
    /// Close politely and end.
    stop: bool,
    /// The reconnect generation: when it changes, every device drops its connection without
    /// a close frame (as a lost network would) and resumes: token login, then subscribe from
    /// its cursor.
    generation: u64,
    /// Devices `0..stall_set` form the stall set: they stop reading while `stalled`, and
    /// the others' latency is also recorded apart (`Shared::others_latency`).
    stall_set: usize,
    /// The stall set keeps its connections open but stops reading them.
    stalled: bool,
    /// Devices count in `Shared::at_target` once caught up at or beyond this cursor on a
    /// connection of the current generation ([`NO_TARGET`]: no target).
    target: u64,
}

impl Default for Control {
    fn default() -> Self {
        Self { stop: false, generation: 0, stall_set: 0, stalled: false, target: NO_TARGET }
    }
}

/// A running fleet of subscribers.
pub(crate) struct Fleet {
    shared: Arc<Shared>,
    control: watch::Sender<Control>,
    tasks: JoinSet<DeviceOutcome>,
    devices: usize,
}

impl Fleet {
    /// Starts `devices` subscribers: the first on `first` (an open session), the others with
    /// token logins spread over `local_addrs` and `urls`, at most `concurrency` connecting at
    /// once.
    fn start(
        shared: Arc<Shared>,
        first: Connection,
        urls: &[String],
        token: &str,
        devices: usize,
        local_addrs: &[IpAddr],
        concurrency: usize,
    ) -> Self {
        let token: Arc<str> = token.into();
        let credentials = (0..devices).map(|_| DialCredentials::SessionToken(Arc::clone(&token)));
        Self::spawn(shared, Some(first), urls, credentials, local_addrs, concurrency)
    }

    /// Starts one subscriber per entry of `credentials`, each with its own Hello (e.g. its
    /// own user's backend token, used again to reconnect), spread over `local_addrs`, at most
    /// `concurrency` connecting at once.
    fn start_with_credentials(
        shared: Arc<Shared>,
        urls: &[String],
        credentials: Vec<hello::Credentials>,
        local_addrs: &[IpAddr],
        concurrency: usize,
    ) -> Self {
        let credentials = credentials.into_iter().map(DialCredentials::Hello);
        Self::spawn(shared, None, urls, credentials, local_addrs, concurrency)
    }

    /// Spawns one device per entry of `credentials` (the first on `first` when given), device
    /// i on `urls[i % urls.len()]`.
    fn spawn(
        shared: Arc<Shared>,
        mut first: Option<Connection>,
        urls: &[String],
        credentials: impl Iterator<Item = DialCredentials>,
        local_addrs: &[IpAddr],
        concurrency: usize,
    ) -> Self {
        let (control, _) = watch::channel(Control::default());
        let permits = Arc::new(Semaphore::new(concurrency.max(1)));
        let mut tasks = JoinSet::new();
        let urls: Arc<[Arc<str>]> = urls.iter().map(|url| Arc::from(url.as_str())).collect();
        let mut devices = 0;
        for (index, credentials) in credentials.enumerate() {
            let dial = Dial {
                urls: Arc::clone(&urls),
                at: index % urls.len(),
                credentials,
                local: (!local_addrs.is_empty()).then(|| local_addrs[index % local_addrs.len()]),
            };
            let device =
                run_device(index, first.take(), dial, Arc::clone(&shared), control.subscribe(), Arc::clone(&permits));
            tasks.spawn(device);
            devices += 1;
        }
        Self { shared, control, tasks, devices }
    }

    /// Waits until every device is caught up or has failed; returns false if `deadline`
    /// came first.
    pub(crate) async fn wait_settled(&self, deadline: Instant) -> bool {
        self.shared.settled.wait_for(self.devices as u64, deadline).await
    }

    /// Orders every device to drop its connection at once and resume (token login, subscribe
    /// from its cursor); returns when the order was given, ns since the run's start.
    pub(crate) fn reconnect_all(&self) -> u64 {
        let ordered_ns = self.shared.now_ns();
        self.shared.reconnect_ordered_ns.store(ordered_ns, Ordering::SeqCst);
        self.control.send_modify(|control| control.generation += 1);
        ordered_ns
    }

    /// Makes devices `0..devices` the stall set (before they stall, so that the others'
    /// latency is recorded apart from the start).
    pub(crate) fn set_stall_set(&self, devices: usize) {
        self.control.send_modify(|control| control.stall_set = devices);
    }

    /// Makes the stall set stop (`true`) or resume (`false`) reading its connections.
    pub(crate) fn stall(&self, stalled: bool) {
        self.control.send_modify(|control| control.stalled = stalled);
    }

    /// Gives the devices a target cursor; each counts once in `Shared::at_target` when
    /// caught up at or beyond it on a connection of the current generation. Returns the
    /// count before, so the caller waits for it plus the devices it expects.
    pub(crate) fn set_target(&self, cursor: u64) -> u64 {
        let before = self.shared.at_target.get();
        self.control.send_modify(|control| control.target = cursor);
        before
    }

    /// Stops every device (each sends a close frame) and sums what they did. Devices still
    /// running at `deadline` are aborted.
    pub(crate) async fn stop(mut self, deadline: Instant) -> FleetTotals {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let control = *self.control.borrow();
        self.control.send_modify(|control| control.stop = true);
        let target = (control.target != NO_TARGET).then_some(control.target);
        let mut totals = FleetTotals {
            devices: self.devices,
            caught_up: self.shared.caught_up.load(Ordering::SeqCst),
            failed: self.shared.failed.load(Ordering::SeqCst),
            target,
            stall_set: (control.stall_set > 0)
                .then(|| StallSetTotals { devices: control.stall_set.min(self.devices), ..StallSetTotals::default() }),
            ..FleetTotals::default()
        };
        loop {
            let joined = match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(Some(joined)) => joined,
                Ok(None) => break,
                Err(_) => {
                    self.tasks.abort_all();
                    continue;
                }
            };
            let outcome = match joined {
                Ok(outcome) => outcome,
                Err(error) if error.is_cancelled() => continue,
                Err(error) => {
                    DeviceOutcome { error: Some(format!("device task failed: {error}")), ..DeviceOutcome::default() }
                }
            };
            totals.add(outcome);
        }
        totals
    }
}

/// Time devices get to close politely when the fleet stops.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(10);

/// Runs a scenario bounded in time: `scenario` gets the run's start (the clock of `sent_ns`)
/// and its deadline, `max_secs` from now; whatever hangs, the run ends `STOP_GRACE` after
/// the deadline.
pub(crate) async fn run_bounded<F, Fut>(max_secs: u64, scenario: F) -> anyhow::Result<()>
where
    F: FnOnce(Instant, Instant) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let run_start = Instant::now();
    let deadline = run_start + Duration::from_secs(max_secs);
    tokio::time::timeout_at(deadline + STOP_GRACE, scenario(run_start, deadline))
        .await
        .context("the run overran --max-secs")?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn milestones_wake_waiters_when_the_target_is_reached() {
        let milestone = Arc::new(Milestone::default());
        let deadline = Instant::now() + Duration::from_secs(10);
        let counter = Arc::clone(&milestone);
        let adder = tokio::spawn(async move {
            for _ in 0..5 {
                counter.add(1);
                tokio::task::yield_now().await;
            }
        });
        assert!(milestone.wait_for(5, deadline).await);
        adder.await.unwrap();
        let soon = Instant::now() + Duration::from_millis(10);
        assert!(!milestone.wait_for(6, soon).await, "the deadline ends the wait");
    }
}
