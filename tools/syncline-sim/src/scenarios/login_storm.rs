//! `syncline-sim login-storm`: bursts of concurrent password logins, and what they leave in
//! the server (issue 13: memory grew by ~800 MiB per burst of 48 wrong passwords and never
//! came back).
//!
//! Runs `--bursts` bursts of `--logins` password Hellos sent at once (`--wrong-percent` of
//! them with a wrong password), spread over loopback source addresses. After each burst (every
//! login answered) it reads the server's RSS and thread count from /proc, waits `--pause-ms`
//! with nothing running, and reads them again. Reports per burst: answers by kind (Welcome,
//! wrong password, busy or blocked, anything else), logins per second, login latency, RSS
//! and threads.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Serialize;
use syncline_procfs::{Memory, Process};
use syncline_proto::v1::{ErrorCode, Login, hello};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::fleet::{DEFAULT_SOURCE_ADDRS, HelloAnswer, describe_code};
use crate::report::{LatencySummary, Table, latency_histogram, round, secs, unix_time_secs, write_json};
use crate::usage::server_process;

/// Default bursts.
const DEFAULT_BURSTS: u32 = 10;
/// Default logins per burst, all sent at once.
const DEFAULT_LOGINS: usize = 200;
/// Default share of logins with a wrong password, in percent.
const DEFAULT_WRONG_PERCENT: u8 = 50;
/// Default idle time after each burst before the second reading: long enough for freed
/// memory to be returned if it ever is.
const DEFAULT_PAUSE_MS: u64 = 1_000;
/// Default hard limit on the whole run.
const DEFAULT_MAX_SECS: u64 = 600;
/// Distinct unexpected answers kept for the report.
const MAX_REPORTED_OTHERS: usize = 5;

/// Arguments of `login-storm`.
#[derive(Debug, Args)]
pub(crate) struct LoginStormArgs {
    /// The device endpoint; loopback addresses only.
    #[arg(long, default_value = "ws://127.0.0.1:7700/v1/sync")]
    url: String,
    /// The server's PID, for its memory and threads from /proc/PID/status.
    #[arg(long)]
    server_pid: u32,
    /// User name of every login.
    #[arg(long, default_value = "demo")]
    user: String,
    /// The user's right password.
    #[arg(long, env = "SYNCLINE_PASSWORD", hide_env_values = true, default_value = "demo")]
    password: String,
    /// Percent of logins sent with a wrong password.
    #[arg(long, default_value_t = DEFAULT_WRONG_PERCENT, value_parser = clap::value_parser!(u8).range(0..=100))]
    wrong_percent: u8,
    /// Bursts to run.
    #[arg(long, default_value_t = DEFAULT_BURSTS)]
    bursts: u32,
    /// Logins per burst, sent at once.
    #[arg(long, default_value_t = DEFAULT_LOGINS)]
    logins: usize,
    /// Idle milliseconds after each burst before the second reading.
    #[arg(long, default_value_t = DEFAULT_PAUSE_MS)]
    pause_ms: u64,
    /// Loopback source addresses to spread logins over (127.0.0.2 ..); 0 uses the kernel's
    /// choice.
    #[arg(long, default_value_t = DEFAULT_SOURCE_ADDRS)]
    source_addrs: u8,
    /// Hard limit on the whole run, in seconds.
    #[arg(long, default_value_t = DEFAULT_MAX_SECS)]
    pub(crate) max_secs: u64,
    /// Writes the report as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

/// How the server answered one login.
enum Outcome {
    Welcome,
    WrongPassword,
    /// RESOURCE_EXHAUSTED: busy, or blocked for failed logins.
    Busy,
    /// Anything else, described.
    Other(String),
}

/// Server readings at one moment.
#[derive(Clone, Copy, Debug, Serialize)]
struct Reading {
    memory: Memory,
    threads: u64,
}

impl Reading {
    fn take(server: Process) -> anyhow::Result<Self> {
        Ok(Self { memory: server.memory()?, threads: server.threads()? })
    }
}

/// One burst's numbers.
#[derive(Debug, Serialize)]
struct Burst {
    burst: u32,
    #[serde(flatten)]
    answers: Answers,
    /// Right after every login was answered.
    after_burst: Reading,
    /// After `pause_ms` more, with nothing running.
    after_pause: Reading,
}

/// How one burst's logins were answered.
#[derive(Debug, Serialize)]
struct Answers {
    welcome: u64,
    wrong_password: u64,
    /// RESOURCE_EXHAUSTED answers (busy, or blocked for failed logins).
    busy: u64,
    /// Other answers and failed connections.
    other: u64,
    /// From the first Hello sent to the last answer.
    secs: f64,
    logins_per_sec: f64,
    latency: LatencySummary,
}

#[derive(Debug, Serialize)]
struct Params {
    url: String,
    server_pid: u32,
    user: String,
    wrong_percent: u8,
    bursts: u32,
    logins: usize,
    pause_ms: u64,
    source_addrs: usize,
}

#[derive(Debug, Serialize)]
struct LoginStormReport {
    scenario: &'static str,
    unix_time: u64,
    params: Params,
    /// Before the first burst.
    before: Reading,
    bursts: Vec<Burst>,
    /// Up to a few distinct unexpected answers.
    others: Vec<String>,
}

/// Runs `login-storm`.
pub(crate) async fn run(args: LoginStormArgs) -> anyhow::Result<()> {
    let server_ip = crate::loopback::check_url(&args.url, &["ws"]).await?;
    let sources = crate::loopback::source_addrs(server_ip, args.source_addrs)?;
    let server = server_process(args.server_pid)?;
    let before = Reading::take(server)?;
    let mut bursts = Vec::new();
    let mut others = Vec::new();
    for burst in 1..=args.bursts {
        let (answers, burst_others) = run_burst(&args, &sources).await;
        let after_burst = Reading::take(server)?;
        // The one deliberate wait: whether memory comes back when nothing runs is the point.
        tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
        let after_pause = Reading::take(server)?;
        for other in burst_others {
            if others.len() < MAX_REPORTED_OTHERS && !others.contains(&other) {
                others.push(other);
            }
        }
        bursts.push(Burst { burst, answers, after_burst, after_pause });
    }
    let report = LoginStormReport {
        scenario: "login-storm",
        unix_time: unix_time_secs(),
        params: Params {
            url: args.url.clone(),
            server_pid: args.server_pid,
            user: args.user.clone(),
            wrong_percent: args.wrong_percent,
            bursts: args.bursts,
            logins: args.logins,
            pause_ms: args.pause_ms,
            source_addrs: sources.len(),
        },
        before,
        bursts,
        others,
    };
    print_table(&report);
    write_json(args.json_out.as_deref(), &report)
}

/// Returns true when login `index` of a burst has a wrong password: `percent` of them,
/// spread evenly.
fn is_wrong(index: usize, percent: u8) -> bool {
    let percent = usize::from(percent);
    (index + 1) * percent / 100 > index * percent / 100
}

/// Sends one burst of logins at once and waits for every answer; returns the counts and the
/// unexpected answers.
async fn run_burst(args: &LoginStormArgs, sources: &[IpAddr]) -> (Answers, Vec<String>) {
    let start = Instant::now();
    let mut logins = JoinSet::new();
    for index in 0..args.logins {
        let password = if is_wrong(index, args.wrong_percent) {
            format!("{}-wrong", args.password)
        } else {
            args.password.clone()
        };
        let credentials = hello::Credentials::Login(Login { username: args.user.clone(), password });
        let (url, local) = (args.url.clone(), sources.get(index % sources.len().max(1)).copied());
        logins.spawn(async move {
            let sent = Instant::now();
            let outcome = match crate::fleet::hello(&url, local, credentials).await {
                Ok(HelloAnswer::Welcome(_)) => Outcome::Welcome,
                Ok(HelloAnswer::Refused(error)) => match ErrorCode::try_from(error.code) {
                    Ok(ErrorCode::Unauthenticated) => Outcome::WrongPassword,
                    Ok(ErrorCode::ResourceExhausted) => Outcome::Busy,
                    _ => Outcome::Other(describe_code(error.code, &error.message)),
                },
                Ok(HelloAnswer::Closed { code, reason }) => Outcome::Other(format!("closed {code}: {reason}")),
                Err(error) => Outcome::Other(format!("{error:#}")),
            };
            (outcome, sent.elapsed())
        });
    }
    let mut histogram = latency_histogram();
    let (mut welcome, mut wrong_password, mut busy, mut other) = (0, 0, 0, 0);
    let mut others = Vec::new();
    while let Some(joined) = logins.join_next().await {
        let Ok((outcome, latency)) = joined else {
            other += 1;
            continue;
        };
        let _ = histogram.record(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
        match outcome {
            Outcome::Welcome => welcome += 1,
            Outcome::WrongPassword => wrong_password += 1,
            Outcome::Busy => busy += 1,
            Outcome::Other(description) => {
                other += 1;
                others.push(description);
            }
        }
    }
    let elapsed = start.elapsed();
    let answers = Answers {
        welcome,
        wrong_password,
        busy,
        other,
        secs: secs(elapsed),
        logins_per_sec: round(args.logins as f64 / elapsed.as_secs_f64().max(f64::EPSILON), 1),
        latency: LatencySummary::of(&histogram),
    };
    (answers, others)
}

fn print_table(report: &LoginStormReport) {
    let mb = |memory: Memory| memory.rss_kb as f64 / 1024.0;
    let mut table = Table::new(format!(
        "login-storm: {} bursts of {} logins ({}% wrong passwords)",
        report.params.bursts, report.params.logins, report.params.wrong_percent
    ));
    table.row("server before", format!("{:.1} MB RSS, {} threads", mb(report.before.memory), report.before.threads));
    for burst in &report.bursts {
        table.row(
            format!("burst {}", burst.burst),
            format!(
                "{} welcome, {} wrong, {} busy, {} other; {:.0} logins/s, p50/p99 {:.0}/{:.0} ms; RSS {:.1} MB ({:.1} after pause), {} threads ({} after pause)",
                burst.answers.welcome,
                burst.answers.wrong_password,
                burst.answers.busy,
                burst.answers.other,
                burst.answers.logins_per_sec,
                burst.answers.latency.p50_ms,
                burst.answers.latency.p99_ms,
                mb(burst.after_burst.memory),
                mb(burst.after_pause.memory),
                burst.after_burst.threads,
                burst.after_pause.threads,
            ),
        );
    }
    if let Some(last) = report.bursts.last() {
        table.row("server peak RSS", format!("{:.1} MB", last.after_pause.memory.peak_rss_kb as f64 / 1024.0));
    }
    if !report.others.is_empty() {
        table.row("other answers", report.others.join("; "));
    }
    table.print();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_passwords_are_the_given_share_spread_evenly() {
        for percent in [0u8, 1, 25, 50, 99, 100] {
            let wrong = (0..200).filter(|&index| is_wrong(index, percent)).count();
            assert_eq!(wrong, 2 * usize::from(percent), "{percent}%");
        }
        let half: Vec<bool> = (0..4).map(|index| is_wrong(index, 50)).collect();
        assert_eq!(half, [false, true, false, true]);
    }
}
