//! Failed-login limits: after too many wrong passwords for one user name, or from one
//! address, within a window, further logins for that name or from that address are refused
//! without checking the password, for a backoff.
//!
//! Semantics (documented for devices at `Hello` in `device.proto`):
//! - A failure is a login refused as a wrong username or password (unknown names count under
//!   the name tried, so the limit tells nothing about which names exist). Busy refusals,
//!   channel outages and refused tokens do not count.
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

/// Most user names, and most addresses, tracked at once: an entry costs up to ~250 bytes (a
/// name of up to 128 bytes, its counts and the table's overhead), so the names table stays
/// under ~16 MiB.
pub const MAX_TRACKED_LOGIN_KEYS: usize = 65_536;
/// A full table is swept of expired entries at most this often, so that a flood of new keys
/// does not rescan it on every failure.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Blocks of one key in a row double its backoff up to 2^this times the configured one.
pub const MAX_BACKOFF_DOUBLINGS: u32 = 5;

/// When failed logins block a user name or an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailedLoginPolicy {
    /// Failures of one user name within `window` that block it; 0: no limit.
    pub per_user: u32,
    /// Failures from one address within `window` that block it; 0: no limit.
    pub per_address: u32,
    /// The window failures are counted in.
    pub window: Duration,
    /// How long the first block lasts.
    pub backoff: Duration,
}

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

/// A login refused by a block: what blocks it and how long the block still lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginBlocked {
    pub by: LimitedBy,
    pub retry_after: Duration,
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

    /// Returns the block that refuses a login for `user` from `address` at `now`, if any
    /// (the longer one when both are blocked).
    pub fn check(&self, user: &str, address: IpAddr, now: Instant) -> Result<(), LoginBlocked> {
        let by_user = self.users.lock().blocked(user, now).map(|retry_after| (LimitedBy::User, retry_after));
        let by_address =
            self.addresses.lock().blocked(&address_key(address), now).map(|retry| (LimitedBy::Address, retry));
        match by_user.into_iter().chain(by_address).max_by_key(|(_, retry_after)| *retry_after) {
            Some((by, retry_after)) => Err(LoginBlocked { by, retry_after }),
            None => Ok(()),
        }
    }

    /// Counts a wrong username or password for `user` from `address` at `now`.
    pub fn failed(&self, user: &str, address: IpAddr, now: Instant) {
        let policy = &self.policy;
        self.users.lock().failed(user, now, policy);
        self.addresses.lock().failed(&address_key(address), now, policy);
    }

    /// Forgets the failures of `user` after it logged in.
    pub fn succeeded(&self, user: &str) {
        self.users.lock().entries.remove(user);
    }

    /// Returns how many user names and addresses are tracked.
    pub fn tracked(&self) -> (usize, usize) {
        (self.users.lock().entries.len(), self.addresses.lock().entries.len())
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
    /// End of the current or last block.
    blocked_until: Option<Instant>,
    /// Blocks in a row (each doubles the next backoff).
    blocks: u32,
}

impl Entry {
    fn blocked(&self, now: Instant) -> Option<Duration> {
        self.blocked_until.filter(|until| *until > now).map(|until| until - now)
    }

    /// True once the key has had no failure for a window after its window started and its
    /// last block ended: it can be forgotten.
    fn expired(&self, now: Instant, window: Duration) -> bool {
        let last = self.blocked_until.map_or(self.window_start, |until| until.max(self.window_start));
        now >= last + window
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

    fn failed<Q>(&mut self, key: &Q, now: Instant, policy: &FailedLoginPolicy)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if self.limit == 0 {
            return;
        }
        if !self.entries.contains_key(key) && !self.make_room(now, policy.window) {
            return;
        }
        let fresh = Entry { window_start: now, failures: 0, blocked_until: None, blocks: 0 };
        let entry = self.entries.entry(key.to_owned()).or_insert(fresh);
        if entry.blocked(now).is_some() {
            // Raced past the check before the block began: the block already covers it.
            return;
        }
        if entry.expired(now, policy.window) {
            *entry = fresh;
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
            limits.failed(ann, home, at(0));
        }
        assert_eq!(limits.check(ann, home, at(1)), Ok(()), "the third try is still checked");
        limits.failed(ann, home, at(1));
        let blocked = LoginBlocked { by: LimitedBy::User, retry_after: BACKOFF };
        assert_eq!(limits.check(ann, home, at(1)), Err(blocked));
        assert_eq!(limits.check(ann, cafe, at(1)), Err(blocked), "a user block holds from every address");
        assert_eq!(limits.check("bob", home, at(1)), Ok(()), "other users are not blocked");
        assert_eq!(
            limits.check(ann, home, at(31)),
            Err(LoginBlocked { by: LimitedBy::User, retry_after: BACKOFF - Duration::from_secs(30) })
        );
        // After the backoff: three more tries, then a block twice as long.
        let after = 1 + BACKOFF.as_secs();
        assert_eq!(limits.check(ann, home, at(after)), Ok(()));
        for _ in 0..3 {
            limits.failed(ann, home, at(after));
        }
        assert_eq!(
            limits.check(ann, home, at(after)),
            Err(LoginBlocked { by: LimitedBy::User, retry_after: BACKOFF * 2 })
        );
    }

    #[test]
    fn failures_spread_wider_than_the_window_do_not_block() {
        let (limits, at) = (limits(3, 0), clock());
        let home = ip("192.0.2.1");
        for step in 0..10 {
            limits.failed("ann", home, at(step * (WINDOW.as_secs() / 2 + 1)));
            assert_eq!(limits.check("ann", home, at(step * (WINDOW.as_secs() / 2 + 1))), Ok(()), "step {step}");
        }
    }

    #[test]
    fn a_successful_login_clears_the_users_count_but_not_the_addresss() {
        let (limits, at) = (limits(3, 5), clock());
        let home = ip("192.0.2.1");
        for _ in 0..2 {
            limits.failed("ann", home, at(0));
        }
        limits.succeeded("ann");
        for _ in 0..2 {
            limits.failed("ann", home, at(0));
        }
        assert_eq!(limits.check("ann", home, at(0)), Ok(()), "two failures since the success");
        limits.failed("ann", home, at(0));
        assert_eq!(
            limits.check("bob", home, at(0)),
            Err(LoginBlocked { by: LimitedBy::Address, retry_after: BACKOFF }),
            "the address counted all five"
        );
    }

    #[test]
    fn an_address_is_blocked_for_every_user_and_an_ipv6_prefix_is_one_address() {
        let (limits, at) = (limits(0, 4), clock());
        for (number, address) in
            ["2001:db8::1", "2001:db8::2", "2001:db8::ffff:1", "2001:db8:0:0:1::"].iter().enumerate()
        {
            limits.failed(&format!("user{number}"), ip(address), at(0));
        }
        let blocked = Err(LoginBlocked { by: LimitedBy::Address, retry_after: BACKOFF });
        assert_eq!(limits.check("anyone", ip("2001:db8::9"), at(0)), blocked, "same /64");
        assert_eq!(limits.check("anyone", ip("2001:db8:0:1::1"), at(0)), Ok(()), "another /64");
        for _ in 0..4 {
            limits.failed("ann", ip("::ffff:192.0.2.1"), at(0));
        }
        assert_eq!(limits.check("ann", ip("192.0.2.1"), at(0)), blocked, "a mapped IPv4 address is that address");
        assert_eq!(limits.check("ann", ip("192.0.2.2"), at(0)), Ok(()), "no user limit configured");
    }

    #[test]
    fn with_no_limits_nothing_is_blocked_or_tracked() {
        let (limits, at) = (limits(0, 0), clock());
        for _ in 0..100 {
            limits.failed("ann", ip("192.0.2.1"), at(0));
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
            limits.failed(&format!("user{number}"), home, at(0));
        }
        assert_eq!(limits.tracked().0, 4, "new names beyond the capacity go untracked");
        limits.failed("user0", home, at(0));
        assert!(limits.check("user0", home, at(0)).is_err(), "tracked names are still limited");
        // Once the window has passed for the others, a sweep makes room.
        let later = WINDOW.as_secs() + 1;
        limits.failed("newcomer", home, at(later));
        limits.failed("newcomer", home, at(later));
        assert!(limits.check("newcomer", home, at(later)).is_err());
        // user0's block ended at 60 s, and a window after it has not passed: it stays, so a
        // block in a row would still double.
        assert_eq!(limits.tracked().0, 2, "user1 to user3 were swept");
    }

    #[test]
    fn a_key_is_forgotten_a_window_after_its_last_block() {
        let (limits, at) = (limits(1, 0), clock());
        let home = ip("192.0.2.1");
        limits.failed("ann", home, at(0));
        assert!(limits.check("ann", home, at(0)).is_err());
        // A window after the block ended, the next block starts from the first backoff again.
        let later = BACKOFF.as_secs() + WINDOW.as_secs();
        limits.failed("ann", home, at(later));
        assert_eq!(
            limits.check("ann", home, at(later)),
            Err(LoginBlocked { by: LimitedBy::User, retry_after: BACKOFF })
        );
    }
}
