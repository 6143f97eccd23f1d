//! Bringing a fleet up: one password login, the partition's head, every device connected
//! and caught up (or failed) before the measured part of a scenario starts.

use std::{
    net::IpAddr,
    sync::{Arc, atomic::Ordering},
};

use anyhow::{Context, bail};
use serde::Serialize;
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
    /// Password login (argon2 on the server).
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

/// Logs in once, finds the cursor to subscribe with, starts the fleet and waits until every
/// device is caught up or failed. `run_start` is the clock of the run's `sent_ns` fields.
pub(crate) async fn ramp_up(
    args: &FleetArgs,
    run_start: Instant,
    deadline: Instant,
) -> anyhow::Result<(Fleet, Arc<Shared>, RampUp)> {
    let server = crate::loopback::check_url(&args.url, &["ws"]).await?;
    let open_files_limit = crate::loopback::raise_open_files_limit()?;
    if args.devices == 0 {
        bail!("--devices must be at least 1");
    }
    if args.devices as u64 + RESERVED_FILES > open_files_limit {
        bail!("{} devices need more open files than this process may hold ({open_files_limit})", args.devices);
    }
    let source_addrs = crate::loopback::source_addrs(server, args.source_addrs)?;
    let login_started = Instant::now();
    let (mut first, welcome) = tokio::time::timeout_at(deadline, login(&args.url, &args.user, &args.password))
        .await
        .context("timed out logging in")??;
    let login_secs = login_started.elapsed();
    let cursor = if args.from_zero { 0 } else { partition_head(&mut first, &args.source, &args.key).await? };
    let shared = Arc::new(Shared::new(args, cursor, run_start));
    let connect_started = Instant::now();
    let fleet = Fleet::start(
        Arc::clone(&shared),
        first,
        &args.url,
        &welcome.session_token,
        args.devices,
        &source_addrs,
        args.connect_concurrency,
    );
    let settled = fleet.wait_settled(deadline).await;
    let ramp_up = RampUp {
        cursor,
        devices: args.devices,
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
