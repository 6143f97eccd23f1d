//! Failed-login limits: after too many wrong passwords for one user name, or from one
//! address, within a window, further logins for that name or from that address are refused
//! without checking the password, for a backoff.
//!
//! Semantics (documented for devices at `Hello` in `device.proto`):
//! - A failure is a login refused as a wrong username or password (unknown names count under
//!   the name tried, so the limit tells nothing about which names exist). Busy refusals,
//!   channel outages and refused tokens do not count.
//! - Checks running count against the limit too ([`FailedLogins::begin`]): while the
//!   failures so far plus the checks running could reach it, a new login for that name (or
//!   from that address) is refused for [`CHECKS_RUNNING_RETRY_AFTER`], so concurrent
//!   guesses cannot all start before the first failure is counted: at most `per_user`
//!   checks of one name end in failure per window, however many arrive at once.
//! - `per_user` failures of one name within `window` block that name, from every address
//!   (guessing one account from many addresses is the attack this stops); `per_address`
//!   failures from one address (an IPv6 /64 counts as one address) block that address, for
//!   every name (credential stuffing). A block refuses even the right password: checking it
//!   would let guessing continue.
//! - A block lasts `backoff`, doubled for each block of the same key in a row (up to
//!   2^[`MAX_BACKOFF_DOUBLINGS`] times), and forgotten once a key has had no failure for a
//!   window after its last block. Attempts refused during a block are not counted.
//! - A successful login clears its user name's count (not its address's: a stuffing attacker
//!   with one working password must not reset their address).
//!
//! Memory is bounded: at most [`MAX_TRACKED_LOGIN_KEYS`] names and as many addresses are
//! tracked; expired entries are dropped when a table fills, and while a table is still full
//! new keys go untracked (limited by the other table only) rather than evicting an entry
//! that may be under attack.
//!
//! Time is passed in (`now`), so tests drive a clock of their own.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub use crate::config::FailedLoginPolicy;

/// Most user names, and most addresses, tracked at once: an entry costs up to ~250 bytes (a
/// name of up to 128 bytes, its counts and the table's overhead), so the names table stays
/// under ~16 MiB.
pub const MAX_TRACKED_LOGIN_KEYS: usize = 65_536;
/// A full table is swept of expired entries at most this often, so that a flood of new keys
/// does not rescan it on every failure.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Blocks of one key in a row double its backoff up to 2^this times the configured one.
pub const MAX_BACKOFF_DOUBLINGS: u32 = 5;

/// What a login refused for being checked while checks already running could complete a
/// block is told to wait: about what those checks take.
pub const CHECKS_RUNNING_RETRY_AFTER: Duration = Duration::from_secs(1);

/// What a login was blocked by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitedBy {
    /// Too many failures for the user name.
    User,
    /// Too many failures from the address.
    Address,
}

impl std::fmt::Display for LimitedBy {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            LimitedBy::User => "for this user",
            LimitedBy::Address => "from this address",
        })
    }
}

/// Why a login was blocked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockReason {
    /// The limit of failures was reached: blocked for the backoff.
    Failures,
    /// The failures so far and the checks running could reach the limit: refused until those
    /// checks end.
    ChecksRunning,
}

/// A login refused by a block: what blocks it, why, and how long to wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginBlocked {
    pub by: LimitedBy,
    pub reason: BlockReason,
    pub retry_after: Duration,
}

impl std::fmt::Display for LoginBlocked {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Rounded up: a device told "retry in 0 s" would retry too early.
        let secs = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        match self.reason {
            BlockReason::Failures => write!(formatter, "too many failed logins {}; retry in {secs} s", self.by),
            BlockReason::ChecksRunning => {
                write!(formatter, "too many logins {} are being checked; retry in {secs} s", self.by)
            }
        }
    }
}

/// Counts failed logins per user name and per address, and says which logins are blocked.
#[derive(Debug)]
pub struct FailedLogins {
    policy: FailedLoginPolicy,
    users: Mutex<Counts<String>>,
    addresses: Mutex<Counts<IpAddr>>,
}

impl FailedLogins {
    /// Returns empty counts with `policy`.
    pub fn new(policy: FailedLoginPolicy) -> Self {
        Self::with_capacity(policy, MAX_TRACKED_LOGIN_KEYS)
    }

    fn with_capacity(policy: FailedLoginPolicy, capacity: usize) -> Self {
        Self {
            policy,
            users: Mutex::new(Counts::new(policy.per_user, capacity)),
            addresses: Mutex::new(Counts::new(policy.per_address, capacity)),
        }
    }

    /// Returns the block for failures that refuses a login for `user` from `address` at
    /// `now`, if any (the longer one when both are blocked): a cheap refusal before a login
    /// waits for a check.
    pub fn check(&self, user: &str, address: IpAddr, now: Instant) -> Result<(), LoginBlocked> {
        let by_user = self.users.lock().blocked(user, now).map(|retry_after| (LimitedBy::User, retry_after));
        let by_address =
            self.addresses.lock().blocked(&address_key(address), now).map(|retry| (LimitedBy::Address, retry));
        match by_user.into_iter().chain(by_address).max_by_key(|(_, retry_after)| *retry_after) {
            Some((by, retry_after)) => Err(LoginBlocked { by, reason: BlockReason::Failures, retry_after }),
            None => Ok(()),
        }
    }

    /// Begins the check of a login for `user` from `address` at `now`, or refuses it: when a
    /// block holds, or when the failures so far and the checks running could reach a limit
    /// (so that concurrent guesses cannot all start before the first failure is counted).
    /// The check ends with [`RunningCheck::failed`] or [`RunningCheck::succeeded`]; dropped
    /// without either (no answer: an outage, or the caller went away, never learning the
    /// answer), it counts for nothing.
    pub fn begin(&self, user: &str, address: IpAddr, now: Instant) -> Result<RunningCheck<'_>, LoginBlocked> {
        // Both tables stay locked (users first, always) so that the check and the start are
        // one step for concurrent attempts.
        let mut users = self.users.lock();
        let mut addresses = self.addresses.lock();
        let address = address_key(address);
        let by_user = users.refusal(user, now, self.policy.window).map(|refusal| (LimitedBy::User, refusal));
        let by_address =
            addresses.refusal(&address, now, self.policy.window).map(|refusal| (LimitedBy::Address, refusal));
        let longest = by_user.into_iter().chain(by_address).max_by_key(|(_, (retry_after, _))| *retry_after);
        if let Some((by, (retry_after, reason))) = longest {
            return Err(LoginBlocked { by, reason, retry_after });
        }
        users.start(user, now, self.policy.window);
        addresses.start(&address, now, self.policy.window);
        Ok(RunningCheck { limits: self, user: user.to_owned(), address, ended: false })
    }

    /// Returns how many user names and addresses are tracked.
    pub fn tracked(&self) -> (usize, usize) {
        (self.users.lock().entries.len(), self.addresses.lock().entries.len())
    }
}

/// A login check counted as running by [`FailedLogins::begin`] until it ends.
#[derive(Debug)]
pub struct RunningCheck<'a> {
    limits: &'a FailedLogins,
    user: String,
    /// The address's key.
    address: IpAddr,
    ended: bool,
}

impl RunningCheck<'_> {
    /// Ends the check with a wrong username or password at `now`.
    pub fn failed(mut self, now: Instant) {
        let policy = &self.limits.policy;
        self.limits.users.lock().failed(self.user.as_str(), now, policy);
        self.limits.addresses.lock().failed(&self.address, now, policy);
        self.ended = true;
    }

    /// Ends the check with success: forgets the user name's failures and lifts its block
    /// (not its address's).
    pub fn succeeded(mut self) {
        self.limits.users.lock().entries.remove(self.user.as_str());
        self.limits.addresses.lock().finish(&self.address);
        self.ended = true;
    }
}

impl Drop for RunningCheck<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.limits.users.lock().finish(self.user.as_str());
            self.limits.addresses.lock().finish(&self.address);
        }
    }
}

/// Returns the key an address is counted under: IPv4 (mapped ones too) as is, IPv6 by its
/// /64 prefix, which one subscriber usually holds whole.
fn address_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX))),
    }
}

/// The failure counts of one kind of key.
#[derive(Debug)]
struct Counts<K> {
    /// Failures that block a key; 0: no limit.
    limit: u32,
    capacity: usize,
    entries: HashMap<K, Entry>,
    last_sweep: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Start of the window the failures are counted in.
    window_start: Instant,
    failures: u32,
    /// Checks begun and not ended.
    running: u32,
    /// End of the current or last block.
    blocked_until: Option<Instant>,
    /// Blocks in a row (each doubles the next backoff).
    blocks: u32,
}

impl Entry {
    fn new(now: Instant) -> Self {
        Self { window_start: now, failures: 0, running: 0, blocked_until: None, blocks: 0 }
    }

    fn blocked(&self, now: Instant) -> Option<Duration> {
        self.blocked_until.filter(|until| *until > now).map(|until| until - now)
    }

    /// Returns the failures that count at `now` (none once the window has passed).
    fn failures_in_window(&self, now: Instant, window: Duration) -> u32 {
        if now >= self.window_start + window { 0 } else { self.failures }
    }

    /// True once the key has no check running and has had no failure for a window after its
    /// window started and its last block ended: it can be forgotten.
    fn expired(&self, now: Instant, window: Duration) -> bool {
        let last = self.blocked_until.map_or(self.window_start, |until| until.max(self.window_start));
        self.running == 0 && now >= last + window
    }
}

impl<K: Hash + Eq> Counts<K> {
    fn new(limit: u32, capacity: usize) -> Self {
        Self { limit, capacity, entries: HashMap::new(), last_sweep: None }
    }

    fn blocked<Q>(&self, key: &Q, now: Instant) -> Option<Duration>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.get(key).and_then(|entry| entry.blocked(now))
    }

    /// Returns why a new check of `key` is refused at `now` and for how long, if it is.
    fn refusal<Q>(&self, key: &Q, now: Instant, window: Duration) -> Option<(Duration, BlockReason)>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entry = self.entries.get(key)?;
        if let Some(retry_after) = entry.blocked(now) {
            return Some((retry_after, BlockReason::Failures));
        }
        let possible = entry.failures_in_window(now, window).saturating_add(entry.running);
        (self.limit > 0 && possible >= self.limit).then_some((CHECKS_RUNNING_RETRY_AFTER, BlockReason::ChecksRunning))
    }

    /// Counts a check of `key` as running.
    fn start<Q>(&mut self, key: &Q, now: Instant, window: Duration)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if self.limit == 0 || (!self.entries.contains_key(key) && !self.make_room(now, window)) {
            return;
        }
        let entry = self.entries.entry(key.to_owned()).or_insert_with(|| Entry::new(now));
        entry.running = entry.running.saturating_add(1);
    }

    /// Ends a running check of `key`.
    fn finish<Q>(&mut self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.running = entry.running.saturating_sub(1);
        }
    }

    /// Ends a running check of `key` as a failure, blocking the key when it reaches the limit.
    fn failed<Q>(&mut self, key: &Q, now: Instant, policy: &FailedLoginPolicy)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if self.limit == 0 {
            return;
        }
        self.finish(key);
        if !self.entries.contains_key(key) && !self.make_room(now, policy.window) {
            return;
        }
        let entry = self.entries.entry(key.to_owned()).or_insert_with(|| Entry::new(now));
        if entry.blocked(now).is_some() {
            // Another check completed the block meanwhile: the block already covers this one.
            return;
        }
        if entry.expired(now, policy.window) {
            *entry = Entry::new(now);
        } else if now >= entry.window_start + policy.window {
            entry.window_start = now;
            entry.failures = 0;
        }
        entry.failures += 1;
        if entry.failures >= self.limit {
            let doublings = entry.blocks.min(MAX_BACKOFF_DOUBLINGS);
            entry.blocks = entry.blocks.saturating_add(1);
            entry.blocked_until = Some(now + policy.backoff * 2u32.pow(doublings));
            entry.window_start = now;
            entry.failures = 0;
        }
    }

    /// Returns true when a new key fits, sweeping expired entries first if the table is full
    /// (at most once per [`SWEEP_INTERVAL`]).
    fn make_room(&mut self, now: Instant, window: Duration) -> bool {
        if self.entries.len() < self.capacity {
            return true;
        }
        if self.last_sweep.is_some_and(|last| now < last + SWEEP_INTERVAL) {
            return false;
        }
        self.last_sweep = Some(now);
        self.entries.retain(|_, entry| !entry.expired(now, window));
        self.entries.len() < self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(300);
    const BACKOFF: Duration = Duration::from_secs(60);

    fn limits(per_user: u32, per_address: u32) -> FailedLogins {
        FailedLogins::new(FailedLoginPolicy { per_user, per_address, window: WINDOW, backoff: BACKOFF })
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// Checks a login that was not refused, and fails it.
    fn fail(limits: &FailedLogins, user: &str, address: IpAddr, now: Instant) {
        begin(limits, user, address, now).failed(now);
    }

    /// Begins a check that is not refused.
    fn begin<'a>(limits: &'a FailedLogins, user: &str, address: IpAddr, now: Instant) -> RunningCheck<'a> {
        limits.begin(user, address, now).unwrap_or_else(|refused| panic!("{user} from {address}: {refused}"))
    }

    fn blocked(by: LimitedBy, retry_after: Duration) -> LoginBlocked {
        LoginBlocked { by, reason: BlockReason::Failures, retry_after }
    }

    /// A clock of the test's own: `at(s)` is `s` seconds after the start.
    fn clock() -> impl Fn(u64) -> Instant {
        let start = Instant::now();
        move |secs| start + Duration::from_secs(secs)
    }

    #[test]
    fn a_user_is_blocked_after_too_many_failures_and_the_backoff_doubles() {
        let (limits, at) = (limits(3, 0), clock());
        let (ann, home, cafe) = ("ann", ip("192.0.2.1"), ip("198.51.100.7"));
        for _ in 0..2 {
            assert_eq!(limits.check(ann, home, at(0)), Ok(()));
            fail(&limits, ann, home, at(0));
        }
        assert_eq!(limits.check(ann, home, at(1)), Ok(()), "the third try is still checked");
        fail(&limits, ann, home, at(1));
        let ann_blocked = blocked(LimitedBy::User, BACKOFF);
        assert_eq!(limits.check(ann, home, at(1)), Err(ann_blocked));
        assert_eq!(limits.check(ann, cafe, at(1)), Err(ann_blocked), "a user block holds from every address");
        assert_eq!(limits.check("bob", home, at(1)), Ok(()), "other users are not blocked");
        assert_eq!(limits.check(ann, home, at(31)), Err(blocked(LimitedBy::User, BACKOFF - Duration::from_secs(30))));
        // After the backoff: three more tries, then a block twice as long.
        let after = 1 + BACKOFF.as_secs();
        assert_eq!(limits.check(ann, home, at(after)), Ok(()));
        for _ in 0..3 {
            fail(&limits, ann, home, at(after));
        }
        assert_eq!(limits.check(ann, home, at(after)), Err(blocked(LimitedBy::User, BACKOFF * 2)));
    }

    #[test]
    fn failures_spread_wider_than_the_window_do_not_block() {
        let (limits, at) = (limits(3, 0), clock());
        let home = ip("192.0.2.1");
        for step in 0..10 {
            fail(&limits, "ann", home, at(step * (WINDOW.as_secs() / 2 + 1)));
            assert_eq!(limits.check("ann", home, at(step * (WINDOW.as_secs() / 2 + 1))), Ok(()), "step {step}");
        }
    }

    #[test]
    fn a_successful_login_clears_the_users_count_but_not_the_addresss() {
        let (limits, at) = (limits(3, 5), clock());
        let home = ip("192.0.2.1");
        for _ in 0..2 {
            fail(&limits, "ann", home, at(0));
        }
        begin(&limits, "ann", home, at(0)).succeeded();
        for _ in 0..2 {
            fail(&limits, "ann", home, at(0));
        }
        assert_eq!(limits.check("ann", home, at(0)), Ok(()), "two failures since the success");
        fail(&limits, "ann", home, at(0));
        assert_eq!(
            limits.check("bob", home, at(0)),
            Err(blocked(LimitedBy::Address, BACKOFF)),
            "the address counted all five"
        );
    }

    #[test]
    fn an_address_is_blocked_for_every_user_and_an_ipv6_prefix_is_one_address() {
        let (limits, at) = (limits(0, 4), clock());
        for (number, address) in
            ["2001:db8::1", "2001:db8::2", "2001:db8::ffff:1", "2001:db8:0:0:1::"].iter().enumerate()
        {
            fail(&limits, &format!("user{number}"), ip(address), at(0));
        }
        let address_blocked = Err(blocked(LimitedBy::Address, BACKOFF));
        assert_eq!(limits.check("anyone", ip("2001:db8::9"), at(0)), address_blocked, "same /64");
        assert_eq!(limits.check("anyone", ip("2001:db8:0:1::1"), at(0)), Ok(()), "another /64");
        for _ in 0..4 {
            fail(&limits, "ann", ip("::ffff:192.0.2.1"), at(0));
        }
        assert_eq!(
            limits.check("ann", ip("192.0.2.1"), at(0)),
            address_blocked,
            "a mapped IPv4 address is that address"
        );
        assert_eq!(limits.check("ann", ip("192.0.2.2"), at(0)), Ok(()), "no user limit configured");
    }

    #[test]
    fn with_no_limits_nothing_is_blocked_or_tracked() {
        let (limits, at) = (limits(0, 0), clock());
        for _ in 0..100 {
            fail(&limits, "ann", ip("192.0.2.1"), at(0));
        }
        assert_eq!(limits.check("ann", ip("192.0.2.1"), at(0)), Ok(()));
        assert_eq!(limits.tracked(), (0, 0));
    }

    #[test]
    fn tracked_keys_are_bounded_and_expired_ones_make_room() {
        let policy = FailedLoginPolicy { per_user: 2, per_address: 0, window: WINDOW, backoff: BACKOFF };
        let (limits, at) = (FailedLogins::with_capacity(policy, 4), clock());
        let home = ip("192.0.2.1");
        for number in 0..10 {
            fail(&limits, &format!("user{number}"), home, at(0));
        }
        assert_eq!(limits.tracked().0, 4, "new names beyond the capacity go untracked");
        fail(&limits, "user0", home, at(0));
        assert!(limits.check("user0", home, at(0)).is_err(), "tracked names are still limited");
        // Once the window has passed for the others, a sweep makes room.
        let later = WINDOW.as_secs() + 1;
        fail(&limits, "newcomer", home, at(later));
        fail(&limits, "newcomer", home, at(later));
        assert!(limits.check("newcomer", home, at(later)).is_err());
        // user0's block ended at 60 s, and a window after it has not passed: it stays, so a
        // block in a row would still double.
        assert_eq!(limits.tracked().0, 2, "user1 to user3 were swept");
    }

    #[test]
    fn checks_running_count_against_the_limit_until_they_end() {
        let (limits, at) = (limits(3, 0), clock());
        let home = ip("192.0.2.1");
        // Three checks of ann run at once: a fourth could exceed the limit, so it waits.
        let mut running: Vec<_> = (0..3).map(|_| begin(&limits, "ann", home, at(0))).collect();
        let wait = LoginBlocked {
            by: LimitedBy::User,
            reason: BlockReason::ChecksRunning,
            retry_after: CHECKS_RUNNING_RETRY_AFTER,
        };
        assert_eq!(limits.begin("ann", home, at(0)).unwrap_err(), wait);
        assert_eq!(wait.to_string(), "too many logins for this user are being checked; retry in 1 s");
        assert_eq!(limits.check("ann", home, at(0)), Ok(()), "not blocked for failures (yet)");
        // One ends without an answer (an outage, or its caller went away): it counts for
        // nothing, and frees a start.
        drop(running.pop());
        running.push(begin(&limits, "ann", home, at(0)));
        // One succeeds: the name's count is cleared, another may start.
        running.pop().unwrap().succeeded();
        running.push(begin(&limits, "ann", home, at(0)));
        // The three left fail: blocked, with the usual message.
        for check in running {
            check.failed(at(1));
        }
        let blocked = limits.begin("ann", home, at(1)).unwrap_err();
        assert_eq!(blocked, LoginBlocked { by: LimitedBy::User, reason: BlockReason::Failures, retry_after: BACKOFF });
        assert_eq!(blocked.to_string(), "too many failed logins for this user; retry in 60 s");
        // Nothing runs any more, so the key can expire.
        let later = 1 + BACKOFF.as_secs() + WINDOW.as_secs();
        assert_eq!(limits.begin("ann", home, at(later)).map(RunningCheck::succeeded), Ok(()));
        assert_eq!(limits.tracked(), (0, 0), "forgotten after the success; the address has no limit");
    }

    #[test]
    fn a_key_is_forgotten_a_window_after_its_last_block() {
        let (limits, at) = (limits(1, 0), clock());
        let home = ip("192.0.2.1");
        fail(&limits, "ann", home, at(0));
        assert!(limits.check("ann", home, at(0)).is_err());
        // A window after the block ended, the next block starts from the first backoff again.
        let later = BACKOFF.as_secs() + WINDOW.as_secs();
        fail(&limits, "ann", home, at(later));
        assert_eq!(limits.check("ann", home, at(later)), Err(blocked(LimitedBy::User, BACKOFF)));
    }
}
