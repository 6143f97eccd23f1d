//! Bringing a fleet up: the devices' logins (one password login, or a backend token each),
//! the cursor to subscribe from, every device connected and caught up (or failed) before the
//! measured part of a scenario starts.

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail};
use serde::Serialize;
use syncline_client_sim::BackendTokenClaims;
use syncline_proto::v1::hello;
use tokio::time::Instant;

use super::{
    Fleet, FleetArgs, STOP_GRACE, Shared,
    protocol::{login, partition_head},
};

/// How the fleet's ramp-up went.
#[derive(Debug, Serialize)]
pub(crate) struct RampUp {
    /// The cursor devices subscribed with (the partition's head, or 0 with `--from-zero`).
    pub(crate) cursor: u64,
    pub(crate) devices: usize,
    pub(crate) caught_up: usize,
    pub(crate) failed: usize,
    /// Password login (argon2 on the server), or minting every device's backend token.
    pub(crate) login_secs: f64,
    /// First token login to the last device caught up.
    pub(crate) connect_secs: f64,
    pub(crate) source_addrs: Vec<IpAddr>,
    pub(crate) open_files_limit: u64,
}

impl RampUp {
    /// Adds the ramp-up's rows (devices caught up, login and connect times) to a report table.
    pub(crate) fn add_rows(&self, table: &mut crate::report::Table) {
        table
            .row("devices caught up", format!("{} of {} ({} failed)", self.caught_up, self.devices, self.failed))
            .row("ramp-up", format!("login {:.2} s, connect + catch up {:.2} s", self.login_secs, self.connect_secs));
    }
}

/// Open files kept for everything but device sockets (gRPC, /proc reads, the runtime).
const RESERVED_FILES: u64 = 64;
/// Lifetime of the minted backend tokens: longer than any bounded run.
const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// How the fleet's devices log in.
pub(crate) enum Logins<'a> {
    /// One password login (`--user`, `--password`; argon2 on the server, so once per run):
    /// its session is the first device's and its token logs the others in. Devices subscribe
    /// from the partition's head, or from 0 with `--from-zero`.
    Password,
    /// Device `i` logs in as `users[i]` with a backend token this process mints with the
    /// server's `secret` (and `audience`), used again to reconnect; it subscribes to its
    /// user's partition (the natural key) from cursor 0, and records are also counted per
    /// user ([`Shared::delivered_by_key`]).
    BackendTokens { users: &'a [String], secret: &'a str, audience: Option<&'a str> },
}

/// Logs the devices in, finds the cursor to subscribe with, starts the fleet and waits until
/// every device is caught up or failed. `run_start` is the clock of the run's `sent_ns` fields.
pub(crate) async fn ramp_up(
    args: &FleetArgs,
    logins: Logins<'_>,
    run_start: Instant,
    deadline: Instant,
) -> anyhow::Result<(Fleet, Arc<Shared>, RampUp)> {
    let urls = args.urls();
    let first_url = urls.first().context("--url names no endpoint")?;
    let server = crate::loopback::check_url(first_url, &["ws"]).await?;
    for url in &urls[1..] {
        crate::loopback::check_url(url, &["ws"]).await?;
    }
    let open_files_limit = crate::loopback::raise_open_files_limit()?;
    let devices = match &logins {
        Logins::Password => args.devices,
        Logins::BackendTokens { users, .. } => users.len(),
    };
    if devices == 0 {
        bail!("--devices must be at least 1");
    }
    if devices as u64 + RESERVED_FILES > open_files_limit {
        bail!("{devices} devices need more open files than this process may hold ({open_files_limit})");
    }
    let source_addrs = crate::loopback::source_addrs(server, args.source_addrs)?;
    let login_started = Instant::now();
    let (fleet, shared, cursor, login_secs, connect_started) = match logins {
        Logins::Password => {
            let (mut first, welcome) = tokio::time::timeout_at(deadline, login(first_url, &args.user, &args.password))
                .await
                .context("timed out logging in")??;
            let login_secs = login_started.elapsed();
            let cursor = if args.from_zero { 0 } else { partition_head(&mut first, &args.source, &args.key).await? };
            let shared = Arc::new(Shared::new(args, cursor, run_start));
            let connect_started = Instant::now();
            let token = welcome.session_token;
            let concurrency = args.connect_concurrency;
            let fleet = Fleet::start(Arc::clone(&shared), first, &urls, &token, devices, &source_addrs, concurrency);
            (fleet, shared, cursor, login_secs, connect_started)
        }
        Logins::BackendTokens { users, secret, audience } => {
            let credentials = mint_backend_tokens(users, secret, audience)?;
            let login_secs = login_started.elapsed();
            let mut shared = Shared::new(args, 0, run_start);
            shared.delivered_by_key = users.iter().map(|user| (user.clone(), AtomicU64::new(0))).collect();
            let shared = Arc::new(shared);
            let connect_started = Instant::now();
            let concurrency = args.connect_concurrency;
            let fleet =
                Fleet::start_with_credentials(Arc::clone(&shared), &urls, credentials, &source_addrs, concurrency);
            (fleet, shared, 0, login_secs, connect_started)
        }
    };
    let settled = fleet.wait_settled(deadline).await;
    let ramp_up = RampUp {
        cursor,
        devices,
        caught_up: shared.caught_up.load(Ordering::SeqCst),
        failed: shared.failed.load(Ordering::SeqCst),
        login_secs: crate::report::secs(login_secs),
        connect_secs: crate::report::secs(connect_started.elapsed()),
        source_addrs,
        open_files_limit,
    };
    if !settled || ramp_up.caught_up == 0 {
        let totals = fleet.stop(Instant::now() + STOP_GRACE).await;
        bail!(
            "ramp-up incomplete before the deadline: {} of {} devices caught up, {} failed; errors: {:?}",
            ramp_up.caught_up,
            ramp_up.devices,
            ramp_up.failed,
            totals.errors
        );
    }
    Ok((fleet, shared, ramp_up))
}

/// Returns a backend-token Hello for each of `users`, signed with `secret`.
fn mint_backend_tokens(
    users: &[String],
    secret: &str,
    audience: Option<&str>,
) -> anyhow::Result<Vec<hello::Credentials>> {
    users
        .iter()
        .map(|user| {
            let mut claims = BackendTokenClaims::for_user(user.clone(), TOKEN_TTL);
            claims.aud = audience.map(str::to_owned);
            claims.sign(secret.as_bytes()).map(hello::Credentials::BackendToken)
        })
        .collect::<Result<Vec<_>, _>>()
        .context("minting backend tokens")
}
