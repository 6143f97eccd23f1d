//! One fleet device: a raw subscriber's protocol state machine (subscribe, ack, count probes,
//! notice gaps and duplicates), its reconnects after a reconnect order (with the device
//! library's jittered [`Backoff`]), its move to the next endpoint when its connection drops
//! and the fleet has several (see [`super::failover`]), and the stall the coordinator may
//! order.

use std::{
    net::IpAddr,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use syncline_client_sim::{Backoff, BackoffConfig, Connection, Incoming, LeanChanges, LeanFrame};
use syncline_proto::v1::{ClientFrame, SyncState, SyncStatus, hello, server_frame};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::{
    Control, NO_TARGET, Shared,
    protocol::{ack_frame, describe_error, open_session, resume, subscribe_frame},
    totals::DeviceOutcome,
};

/// Reconnect delays after a reconnect order: from 50 ms, doubling up to 1 s, each drawn from
/// the upper half (`[d/2, d]`), so a herd that failed together does not retry together; a
/// device that could not get in retries at least every second, so one refusal costs it at
/// most about that much. Each reconnect order starts a new streak (`healthy_after` is not
/// used).
const RECONNECT_BACKOFF: BackoffConfig =
    BackoffConfig { initial: Duration::from_millis(50), max: Duration::from_secs(1), healthy_after: Duration::ZERO };

/// How a device opens (and reopens) its session from this source address: a session token
/// shared by the fleet (from one password login), or a Hello of its own (e.g. its own user's
/// backend token); on `urls[at]`, the next of `urls` after its connection drops.
#[derive(Clone)]
pub(super) struct Dial {
    pub(super) urls: Arc<[Arc<str>]>,
    pub(super) at: usize,
    pub(super) credentials: DialCredentials,
    pub(super) local: Option<IpAddr>,
}

#[derive(Clone)]
pub(super) enum DialCredentials {
    SessionToken(Arc<str>),
    Hello(hello::Credentials),
}

impl Dial {
    async fn open(&self) -> anyhow::Result<Connection> {
        let url = &self.urls[self.at % self.urls.len()];
        let (connection, _welcome) = match &self.credentials {
            DialCredentials::SessionToken(token) => resume(url, self.local, token).await?,
            DialCredentials::Hello(credentials) => open_session(url, self.local, credentials.clone()).await?,
        };
        Ok(connection)
    }

    /// Whether a dropped connection moves on to another endpoint (the fleet has several).
    fn fails_over(&self) -> bool {
        self.urls.len() > 1
    }

    /// Moves on to the next endpoint, as a load balancer would after a node's loss.
    fn move_on(&mut self) {
        self.at = (self.at + 1) % self.urls.len();
    }
}

/// Per-device protocol state.
struct DeviceState {
    index: usize,
    outcome: DeviceOutcome,
    cursor: u64,
    unacked_live: u64,
    /// Where `unacked_live` starts on each connection: the device's phase in the fleet's acks.
    ack_phase: u64,
    /// The coordinator's orders as last seen.
    control: Control,
    /// The reconnect generation of the current connection.
    generation: u64,
    /// Caught up on the current connection (the first catch-up of a resumed session is not
    /// a demotion).
    connection_caught_up: bool,
    /// The target this device last counted in `Shared::at_target` for.
    counted_target: Option<u64>,
    /// Moving to another endpoint after its connection dropped, not caught up there yet.
    moving: bool,
    /// While moving: the new session was opened (recorded once per move).
    moved_session: bool,
}

impl DeviceState {
    fn new(index: usize, cursor: u64, control: Control, ack_every: u64) -> Self {
        let ack_phase = index as u64 % ack_every.max(1);
        Self {
            index,
            outcome: DeviceOutcome::default(),
            cursor,
            unacked_live: ack_phase,
            ack_phase,
            control,
            generation: control.generation,
            connection_caught_up: false,
            counted_target: None,
            moving: false,
            moved_session: false,
        }
    }

    fn in_stall_set(&self) -> bool {
        self.index < self.control.stall_set
    }

    /// Whether the device stops reading its connection now.
    fn stalled(&self) -> bool {
        self.control.stalled && self.in_stall_set()
    }

    /// True for a device outside the stall set while there is one.
    fn outside_stall_set(&self) -> bool {
        self.control.stall_set > 0 && !self.in_stall_set()
    }

    /// Forgets the connection: the next one starts unsynced, in the current generation.
    fn start_connection(&mut self) {
        self.generation = self.control.generation;
        self.connection_caught_up = false;
        self.unacked_live = self.ack_phase;
    }

    /// True while resuming after a reconnect order: caught up once, not yet on this
    /// connection.
    fn resuming(&self) -> bool {
        self.outcome.caught_up && !self.connection_caught_up
    }
}

/// How one connection of a device ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The fleet stops.
    Stop,
    /// A reconnect order: drop the connection and resume.
    Reconnect,
    /// The connection failed, or the device gave up on it.
    Failed(String),
}

/// One subscriber, from connecting to the fleet's stop: its first connection (`first`, or a
/// token login), then a new one after each reconnect order.
pub(super) async fn run_device(
    index: usize,
    first: Option<Connection>,
    mut dial: Dial,
    shared: Arc<Shared>,
    mut control: watch::Receiver<Control>,
    permits: Arc<Semaphore>,
) -> DeviceOutcome {
    let mut state = DeviceState::new(index, shared.cursor, *control.borrow_and_update(), shared.ack_every);
    // Held until caught up: bounds connects and catch-ups in flight.
    let mut permit = Some(permits.acquire_owned().await.expect("the semaphore is never closed"));
    let opened = async {
        let mut connection = match first {
            Some(connection) => connection,
            None => dial.open().await?,
        };
        connection
            .send(&subscribe_frame(&shared.source, &shared.key, state.cursor, shared.page_size, shared.window))
            .await?;
        anyhow::Ok(connection)
    };
    let opened = tokio::select! {
        opened = opened => opened,
        _ = control.wait_for(|control| control.stop) => Err(anyhow::anyhow!("stopped while connecting")),
    };
    let mut connection = match opened {
        Ok(connection) => connection,
        Err(error) => {
            settle_failed(&shared, &mut state.outcome, format!("{error:#}"));
            state.outcome.cursor = state.cursor;
            return state.outcome;
        }
    };
    // `wait_for` marks what it saw as seen: take it in.
    state.control = *control.borrow();
    loop {
        let ended = drive_connection(&mut connection, &shared, &mut control, &mut state, &mut permit).await;
        match ended {
            Ended::Stop => {
                // A polite goodbye; the server's answering close is not waited for.
                let _ = connection.close(1000, "load scenario done").await;
                break;
            }
            Ended::Reconnect => connection.cut(),
            Ended::Failed(error) if state.resuming() => {
                // A resumed session that broke before catching up: retried like a refused
                // connect (on the next endpoint when there are several).
                connection.cut();
                state.outcome.reconnect_failures += 1;
                state.outcome.error = Some(error);
                if dial.fails_over() {
                    dial.move_on();
                }
            }
            Ended::Failed(error) if !state.outcome.caught_up => {
                settle_failed(&shared, &mut state.outcome, error);
                break;
            }
            Ended::Failed(error) if dial.fails_over() && !shared.stopping.load(Ordering::SeqCst) => {
                // Its node is gone: resume on the next endpoint.
                connection.cut();
                shared.failover.dropped(shared.now_ns());
                state.outcome.failovers += 1;
                state.outcome.error = Some(error);
                state.moving = true;
                state.moved_session = false;
                dial.move_on();
            }
            Ended::Failed(error) => {
                if !shared.stopping.load(Ordering::SeqCst) {
                    state.outcome.error = Some(error);
                }
                break;
            }
        }
        match reconnect(&mut dial, &shared, &mut control, &mut state).await {
            Some(reopened) => connection = reopened,
            None => break,
        }
    }
    state.outcome.cursor = state.cursor;
    state.outcome.in_stall_set = state.in_stall_set();
    state.outcome
}

/// Opens a new session after a reconnect order, retrying failures with a bounded, jittered
/// backoff until it succeeds or the fleet stops (`None`).
async fn reconnect(
    dial: &mut Dial,
    shared: &Shared,
    control: &mut watch::Receiver<Control>,
    state: &mut DeviceState,
) -> Option<Connection> {
    let mut backoff = Backoff::new(RECONNECT_BACKOFF, None);
    loop {
        state.start_connection();
        let attempt = async {
            let mut connection = dial.open().await?;
            let subscribe = subscribe_frame(&shared.source, &shared.key, state.cursor, shared.page_size, shared.window);
            connection.send(&subscribe).await?;
            anyhow::Ok(connection)
        };
        let attempt = tokio::select! {
            attempt = attempt => attempt,
            _ = control.wait_for(|control| control.stop) => return None,
        };
        state.control = *control.borrow();
        match attempt {
            Ok(connection) => {
                state.outcome.reconnects += 1;
                // A failure earlier in this streak was recovered from.
                state.outcome.error = None;
                if state.moving && !state.moved_session {
                    state.moved_session = true;
                    shared.failover.reconnected(shared.now_ns());
                }
                return Some(connection);
            }
            Err(error) => {
                state.outcome.reconnect_failures += 1;
                state.outcome.error = Some(format!("reconnecting: {error:#}"));
                if dial.fails_over() {
                    dial.move_on();
                }
            }
        }
        let delay = backoff.next_delay();
        // Backoff, not synchronisation: the retry waits out its delay unless the fleet stops.
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = control.wait_for(|control| control.stop) => return None,
        }
    }
}

/// Reads one connection until the fleet stops, a reconnect order comes, or the connection
/// fails. A stalled device keeps the connection but does not read it.
async fn drive_connection(
    connection: &mut Connection,
    shared: &Shared,
    control: &mut watch::Receiver<Control>,
    state: &mut DeviceState,
    permit: &mut Option<OwnedSemaphorePermit>,
) -> Ended {
    loop {
        if state.control.stop {
            return Ended::Stop;
        }
        if state.control.generation != state.generation {
            return Ended::Reconnect;
        }
        let stalled = state.stalled();
        let incoming = tokio::select! {
            incoming = connection.recv_lean(), if !stalled => incoming,
            changed = control.changed() => {
                if changed.is_err() {
                    return Ended::Stop;
                }
                state.control = *control.borrow_and_update();
                check_target(shared, state);
                continue;
            }
        };
        let frame = match incoming {
            Ok(Incoming::Frame(LeanFrame::Empty)) => continue,
            Ok(Incoming::Frame(frame)) => frame,
            Ok(Incoming::Closed { code, reason }) => {
                return Ended::Failed(format!("closed by the server: {code} {reason}"));
            }
            Err(error) => return Ended::Failed(format!("{error:#}")),
        };
        match on_frame(frame, shared, state, permit) {
            Ok(replies) => {
                for reply in replies {
                    if let Err(error) = connection.send(&reply).await {
                        return Ended::Failed(format!("{error:#}"));
                    }
                    state.outcome.acks_sent += 1;
                }
            }
            Err(error) => return Ended::Failed(error),
        }
        check_target(shared, state);
    }
}

/// Counts the device in `Shared::at_target` (once per target) when it is caught up on a
/// connection of the current generation at or beyond the target cursor.
fn check_target(shared: &Shared, state: &mut DeviceState) {
    let target = state.control.target;
    if target == NO_TARGET
        || !state.connection_caught_up
        || state.generation != state.control.generation
        || state.cursor < target
        || state.counted_target == Some(target)
    {
        return;
    }
    state.counted_target = Some(target);
    shared.at_target.add(1);
}

fn settle_failed(shared: &Shared, outcome: &mut DeviceOutcome, error: String) {
    outcome.error = Some(error);
    shared.failed.fetch_add(1, Ordering::SeqCst);
    shared.settled.add(1);
}

/// Handles one server frame; returns the acks to send, or why the device gives up.
fn on_frame(
    frame: LeanFrame,
    shared: &Shared,
    state: &mut DeviceState,
    permit: &mut Option<OwnedSemaphorePermit>,
) -> Result<Vec<ClientFrame>, String> {
    let frame = match frame {
        LeanFrame::Changes(changes) => return Ok(on_changes(&changes, shared, state)),
        LeanFrame::Other(frame) => frame,
        LeanFrame::Empty => return Ok(Vec::new()),
    };
    match frame {
        server_frame::Msg::Changes(changes) => Ok(on_changes(&LeanChanges::of(&changes), shared, state)),
        server_frame::Msg::SyncState(sync) => on_sync_state(&sync, shared, state, permit).map(|()| Vec::new()),
        server_frame::Msg::Error(error) => {
            if error.fatal || !state.connection_caught_up {
                return Err(describe_error(&error));
            }
            state.outcome.error_frames += 1;
            Ok(Vec::new())
        }
        server_frame::Msg::Welcome(_)
        | server_frame::Msg::MutationAck(_)
        | server_frame::Msg::MutationResult(_)
        | server_frame::Msg::SearchResult(_)
        | server_frame::Msg::RpcReply(_)
        | server_frame::Msg::BulkReady(_)
        | server_frame::Msg::Command(_) => Ok(Vec::new()),
    }
}

/// Accounts changes `from..=to` against a device's `cursor`: returns the sequences received
/// again (at or below the cursor) and the sequences skipped (between the cursor and `from`).
fn account_range(cursor: u64, from: u64, to: u64) -> (u64, u64) {
    let duplicates = if from <= cursor { (cursor.min(to) + 1).saturating_sub(from) } else { 0 };
    let missing = from.saturating_sub(cursor.saturating_add(1));
    (duplicates, missing)
}

fn on_changes(changes: &LeanChanges, shared: &Shared, state: &mut DeviceState) -> Vec<ClientFrame> {
    let received_ns = shared.now_ns();
    if !changes.snapshot {
        let (duplicates, missing) = account_range(state.cursor, changes.from, changes.to);
        state.outcome.duplicate_seqs += duplicates;
        state.outcome.missing_seqs += missing;
        state.outcome.gaps += u64::from(missing > 0);
    }
    if changes.page > 0 {
        // Catch-up: after a snapshot's last page the cursor is the snapshot's sequence;
        // log pages move it to `to`.
        if !changes.snapshot || changes.snapshot_done {
            state.cursor = state.cursor.max(changes.to);
        }
        if state.connection_caught_up {
            // Demoted: the server pages from the log instead of pushing.
            state.outcome.catchup_pages += 1;
            let counted = shared.count_probes(&changes.probes, received_ns, &shared.catchup_latency, false);
            shared.count_for_key(&changes.key, counted);
            state.outcome.catchup_records += counted;
        } else if state.outcome.caught_up {
            // Resuming after a reconnect: what was missed while away.
            state.outcome.resume_pages += 1;
            let counted = shared.count_probes(&changes.probes, received_ns, &shared.catchup_latency, false);
            shared.count_for_key(&changes.key, counted);
            state.outcome.resume_records += counted;
        }
        return vec![ack_frame(&shared.source, &shared.key, state.cursor, changes.page)];
    }
    state.outcome.live_frames += 1;
    state.cursor = state.cursor.max(changes.to);
    let outside_stall_set = state.outside_stall_set();
    let counted = shared.count_probes(&changes.probes, received_ns, &shared.live_latency, outside_stall_set);
    shared.count_for_key(&changes.key, counted);
    state.outcome.live_records += counted;
    state.unacked_live += changes.to.saturating_sub(changes.from) + 1;
    if state.unacked_live >= shared.ack_every {
        state.unacked_live = 0;
        return vec![ack_frame(&shared.source, &shared.key, state.cursor, 0)];
    }
    Vec::new()
}

fn on_sync_state(
    sync: &SyncState,
    shared: &Shared,
    state: &mut DeviceState,
    permit: &mut Option<OwnedSemaphorePermit>,
) -> Result<(), String> {
    match SyncStatus::try_from(sync.status) {
        Ok(SyncStatus::CaughtUp) => {
            state.cursor = state.cursor.max(sync.cursor);
            if !state.outcome.caught_up {
                state.outcome.caught_up = true;
                permit.take();
                shared.caught_up.fetch_add(1, Ordering::SeqCst);
                shared.settled.add(1);
            } else if state.connection_caught_up {
                state.outcome.recatchups += 1;
            } else if state.moving {
                state.moving = false;
                shared.failover.caught_up(shared.now_ns());
            } else {
                let ordered_ns = shared.reconnect_ordered_ns.load(Ordering::SeqCst);
                shared.resume_latency.lock().saturating_record(shared.now_ns().saturating_sub(ordered_ns));
            }
            state.connection_caught_up = true;
            Ok(())
        }
        Ok(SyncStatus::Error) => Err(sync.error.as_ref().map_or_else(|| "partition error".to_owned(), describe_error)),
        Ok(SyncStatus::InProgress | SyncStatus::Reset | SyncStatus::SchemaChanged | SyncStatus::Unspecified)
        | Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use syncline_client_sim::probe::{PROBE_NAME_FIELD, RUN_FIELD, SENT_NS_FIELD, probe_name};
    use syncline_proto::v1::{Changes, Record, Value};
    use tokio::time::Instant;

    use super::*;
    use crate::fleet::{DEFAULT_ACK_EVERY, FleetArgs, args::fleet_args};

    fn shared(cursor: u64, ack_every: u64) -> Shared {
        let args = FleetArgs { ack_every, ..fleet_args() };
        Shared::new(&args, cursor, Instant::now())
    }

    fn probe(id: &str, run: i64, sent_ns: i64) -> Record {
        let mut fields = BTreeMap::new();
        fields.insert(RUN_FIELD.to_owned(), Value::int(run));
        fields.insert(SENT_NS_FIELD.to_owned(), Value::int(sent_ns));
        Record { id: id.to_owned(), fields, version: 0 }
    }

    fn live(from: u64, to: u64, upserts: Vec<Record>) -> Changes {
        Changes { source: "Account".into(), key: "*".into(), from, to, upserts, ..Changes::default() }
    }

    /// Handles a decoded `Changes` frame as the lean receive path hands it over.
    fn on_changes(changes: &Changes, shared: &Shared, state: &mut DeviceState) -> Vec<ClientFrame> {
        super::on_changes(&LeanChanges::of(changes), shared, state)
    }

    fn state(cursor: u64) -> DeviceState {
        let mut state = DeviceState::new(0, cursor, Control::default(), DEFAULT_ACK_EVERY);
        state.outcome.caught_up = true;
        state.connection_caught_up = true;
        state
    }

    /// A record of a fixed-schema source whose name may carry a probe.
    fn named(name: &str) -> Record {
        Record {
            id: "n".to_owned(),
            fields: BTreeMap::from([(PROBE_NAME_FIELD.to_owned(), Value::string(name))]),
            version: 0,
        }
    }

    #[test]
    fn live_pushes_count_this_runs_records_and_ack_every_n_changes() {
        let shared = shared(10, 3);
        let mut state = state(10);
        let tag = shared.run_tag;
        let earlier_run = probe("old", tag.wrapping_add(1), 0);
        assert!(on_changes(&live(11, 11, vec![probe("a", tag, 0)]), &shared, &mut state).is_empty());
        assert!(on_changes(&live(12, 12, vec![earlier_run]), &shared, &mut state).is_empty());
        let acks = on_changes(&live(13, 13, vec![probe("b", tag, 0)]), &shared, &mut state);
        assert_eq!(acks, [ack_frame("Account", "", 13, 0)]);
        assert_eq!(state.outcome.live_frames, 3);
        assert_eq!(state.outcome.live_records, 2);
        assert_eq!(state.outcome.gaps, 0);
        assert_eq!(shared.delivered.get(), 2);
        assert_eq!(shared.live_latency.lock().len(), 2);
        // A push that does not follow the cursor is a gap.
        on_changes(&live(20, 20, Vec::new()), &shared, &mut state);
        assert_eq!(state.outcome.gaps, 1);
        assert_eq!(state.cursor, 20);
    }

    #[test]
    fn devices_ack_at_their_own_phase_so_the_fleet_does_not_ack_in_lockstep() {
        let shared = shared(0, 10);
        let mut state = DeviceState::new(3, 0, Control::default(), 10);
        state.outcome.caught_up = true;
        state.connection_caught_up = true;
        let acked_at = |state: &mut DeviceState, from: u64, to: u64| -> Vec<u64> {
            (from..=to)
                .filter(|&cursor| !on_changes(&live(cursor, cursor, Vec::new()), &shared, state).is_empty())
                .collect()
        };
        // Device 3 of a fleet acking every 10 changes: first after 7, then every 10.
        assert_eq!(acked_at(&mut state, 1, 30), [7, 17, 27]);
        // A new connection starts at the same phase again.
        state.start_connection();
        state.connection_caught_up = true;
        assert_eq!(acked_at(&mut state, 31, 50), [37, 47]);
        // Device 0 acks on the tenth change, as before.
        let mut first = DeviceState::new(0, 0, Control::default(), 10);
        first.outcome.caught_up = true;
        first.connection_caught_up = true;
        assert_eq!(acked_at(&mut first, 1, 20), [10, 20]);
    }

    #[test]
    fn catch_up_pages_are_acked_at_once_and_counted_apart_after_the_first_catch_up() {
        let shared = shared(0, 100);
        let mut state = state(0);
        state.outcome.caught_up = false;
        state.connection_caught_up = false;
        let snapshot = Changes { page: 1, snapshot: true, to: 50, ..live(0, 50, Vec::new()) };
        assert_eq!(on_changes(&snapshot, &shared, &mut state), [ack_frame("Account", "", 0, 1)]);
        let done = Changes { page: 2, snapshot: true, snapshot_done: true, ..live(0, 50, Vec::new()) };
        assert_eq!(on_changes(&done, &shared, &mut state), [ack_frame("Account", "", 50, 2)]);
        assert_eq!(state.outcome.catchup_pages, 0, "the first catch-up is not a demotion");
        state.outcome.caught_up = true;
        state.connection_caught_up = true;
        let page = Changes { page: 3, ..live(51, 52, vec![probe("a", shared.run_tag, 0)]) };
        assert_eq!(on_changes(&page, &shared, &mut state), [ack_frame("Account", "", 52, 3)]);
        assert_eq!((state.outcome.catchup_pages, state.outcome.catchup_records), (1, 1));
        assert_eq!(shared.catchup_latency.lock().len(), 1);
    }

    #[test]
    fn ranges_are_accounted_against_the_cursor() {
        assert_eq!(account_range(10, 11, 15), (0, 0), "follows on");
        assert_eq!(account_range(10, 8, 12), (3, 0), "8..=10 again");
        assert_eq!(account_range(10, 5, 9), (5, 0), "all of it again");
        assert_eq!(account_range(10, 14, 15), (0, 3), "11..=13 skipped");
        assert_eq!(account_range(0, 1, 1), (0, 0));
        assert_eq!(account_range(u64::MAX, 1, 2), (2, 0));
    }

    #[test]
    fn duplicates_and_gaps_are_counted_in_sequences() {
        let shared = shared(10, 100);
        let mut state = state(10);
        on_changes(&live(11, 12, Vec::new()), &shared, &mut state);
        on_changes(&live(12, 13, Vec::new()), &shared, &mut state);
        on_changes(&live(16, 16, Vec::new()), &shared, &mut state);
        assert_eq!((state.outcome.duplicate_seqs, state.outcome.missing_seqs, state.outcome.gaps), (1, 2, 1));
        assert_eq!(state.cursor, 16);
    }

    #[test]
    fn a_resumed_session_counts_its_catch_up_apart_from_demotions_and_loses_nothing() {
        let shared = shared(10, 100);
        let mut state = state(10);
        let tag = shared.run_tag;
        let mut permit = None;
        on_changes(&live(11, 11, vec![probe("a", tag, 0)]), &shared, &mut state);
        // The reconnect order: a new connection in generation 1, subscribed from cursor 11.
        state.control.generation = 1;
        state.start_connection();
        assert!(state.resuming());
        let missed = Changes { page: 1, ..live(12, 13, vec![probe("b", tag, 0), probe("c", tag, 0)]) };
        assert_eq!(on_changes(&missed, &shared, &mut state), [ack_frame("Account", "", 13, 1)]);
        let caught_up = SyncState { status: SyncStatus::CaughtUp as i32, cursor: 13, ..SyncState::default() };
        on_sync_state(&caught_up, &shared, &mut state, &mut permit).unwrap();
        assert!(!state.resuming());
        on_changes(&live(14, 14, vec![probe("d", tag, 0)]), &shared, &mut state);
        let outcome = &state.outcome;
        assert_eq!((outcome.resume_pages, outcome.resume_records), (1, 2));
        assert_eq!((outcome.catchup_pages, outcome.recatchups), (0, 0), "a resume is not a demotion");
        assert_eq!((outcome.live_records, outcome.missing_seqs, outcome.duplicate_seqs), (2, 0, 0));
        assert_eq!(shared.delivered.get(), 4);
        assert_eq!(shared.resume_latency.lock().len(), 1);
        // A server that resent what the device had would show as duplicates.
        let resent = Changes { page: 2, ..live(13, 14, Vec::new()) };
        on_changes(&resent, &shared, &mut state);
        assert_eq!(state.outcome.duplicate_seqs, 2);
    }

    #[test]
    fn devices_count_at_the_target_once_caught_up_on_a_connection_of_the_current_generation() {
        let shared = shared(10, 100);
        let mut state = state(12);
        check_target(&shared, &mut state);
        assert_eq!(shared.at_target.get(), 0, "no target yet");
        state.control.target = 12;
        state.control.generation = 1;
        check_target(&shared, &mut state);
        assert_eq!(shared.at_target.get(), 0, "still on the connection of generation 0");
        state.start_connection();
        check_target(&shared, &mut state);
        assert_eq!(shared.at_target.get(), 0, "not caught up on the new connection");
        state.connection_caught_up = true;
        check_target(&shared, &mut state);
        check_target(&shared, &mut state);
        assert_eq!(shared.at_target.get(), 1, "once per target");
        state.control.target = 13;
        check_target(&shared, &mut state);
        assert_eq!(shared.at_target.get(), 1, "below the new target");
        state.cursor = 14;
        check_target(&shared, &mut state);
        assert_eq!(shared.at_target.get(), 2);
    }

    #[test]
    fn the_stall_set_stalls_only_when_told_and_its_latency_is_kept_apart() {
        let shared = shared(0, 100);
        let mut stalled = state(0);
        let mut other = state(0);
        other.index = 5;
        for state in [&mut stalled, &mut other] {
            state.control.stall_set = 2;
        }
        assert!(!stalled.stalled() && stalled.in_stall_set() && !stalled.outside_stall_set());
        assert!(other.outside_stall_set());
        stalled.control.stalled = true;
        other.control.stalled = true;
        assert!(stalled.stalled() && !other.stalled());
        let tag = shared.run_tag;
        shared.phase_split_ns.store(1_000, Ordering::SeqCst);
        on_changes(&live(1, 2, vec![probe("a", tag, 10), probe("b", tag, 2_000)]), &shared, &mut other);
        on_changes(&live(1, 1, vec![probe("a", tag, 10)]), &shared, &mut stalled);
        assert_eq!(shared.others_latency[0].lock().len(), 1);
        assert_eq!(shared.others_latency[1].lock().len(), 1);
        assert_eq!(shared.live_latency.lock().len(), 3);
    }

    #[test]
    fn probes_in_names_are_counted_like_int_probes() {
        let shared = shared(0, 100);
        let mut state = state(0);
        let tag = shared.run_tag;
        let records = vec![
            named(&probe_name(tag, 0, 1)),
            named(&probe_name(tag.wrapping_add(1), 0, 2)),
            named("Acme Corp"),
            probe("b", tag, 0),
        ];
        on_changes(&live(1, 4, records), &shared, &mut state);
        assert_eq!(state.outcome.live_records, 2);
        assert_eq!(shared.delivered.get(), 2);
    }

    #[test]
    fn reconnect_delays_grow_to_a_bound_with_jitter() {
        let mut backoff = Backoff::new(RECONNECT_BACKOFF, Some(7));
        let first = backoff.next_delay();
        assert!(first >= Duration::from_millis(25) && first <= Duration::from_millis(50), "{first:?}");
        for _ in 0..100 {
            assert!(backoff.next_delay() <= Duration::from_secs(1));
        }
    }
}
