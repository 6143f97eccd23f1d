//! `syncline device list|show|lock|unlock|wipe|logout|resync`: through the running server's
//! admin API with a token, else in the data directory's store (no server runs on it, so no
//! device is connected: commands stay pending until each device's next connection, and
//! lock, unlock, wipe and logout take effect on the store at once).
//!
//! Both ways print the same thing: the local way builds the admin API's own JSON answers
//! (`crate::admin::devices`), so a script reading `--json` sees one format.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::bail;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::StoreArgs;
use super::remote::{self, Target};
use crate::admin::devices::{CommandInfo, DeviceInfo, device_detail};
use crate::devices::{CommitTimes, DeviceManagement, NoConnections};
use crate::storage::{DeviceCommandKind, DeviceFilter, DeviceState, Store};

/// Devices listed per admin API call or store read.
const LIST_PAGE: usize = 500;

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Lists devices (client ids), filtered.
    List {
        /// Only this user's devices.
        #[arg(long)]
        user: Option<String>,
        /// Only devices in this state: active, locked or wiped.
        #[arg(long, value_parser = ["active", "locked", "wiped"])]
        state: Option<String>,
        /// Only devices of this platform (as they report it, e.g. ios).
        #[arg(long)]
        platform: Option<String>,
        /// Print the admin API's JSON, one device per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Shows a device: registry entry, connections, per partition its cursor, the head and
    /// its lag, pending mutations, and its commands.
    Show {
        client_id: String,
        /// Print the admin API's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Locks a device: its logins are refused (close 4003) until unlocked; the app locks.
    Lock(SendArgs),
    /// Unlocks a locked device (takes effect on the server at once).
    Unlock(SendArgs),
    /// Wipes a device: it erases its local store and offline queue, then logs out; its
    /// session tokens are revoked.
    Wipe(SendArgs),
    /// Logs a device out: it forgets its session token; its tokens are revoked.
    Logout(SendArgs),
    /// Makes a device drop its local partitions and sync them again from the start.
    Resync(SendArgs),
}

/// The arguments of a command sent to a device.
#[derive(Debug, clap::Args)]
pub struct SendArgs {
    client_id: String,
    /// Shown to the device's user (at most 1024 bytes).
    #[arg(long, default_value = "")]
    reason: String,
    #[command(flatten)]
    store: StoreArgs,
}

/// Runs a device command.
pub(super) async fn run(command: DeviceCommand, env: &HashMap<String, String>) -> anyhow::Result<()> {
    match command {
        DeviceCommand::List { user, state, platform, json, store } => {
            let filter = ListFilter { user, state, platform };
            list(&filter, json, &store, env).await
        }
        DeviceCommand::Show { client_id, json, store } => show(&client_id, json, &store, env).await,
        DeviceCommand::Lock(args) => send(DeviceCommandKind::Lock, args, env).await,
        DeviceCommand::Unlock(args) => send(DeviceCommandKind::Unlock, args, env).await,
        DeviceCommand::Wipe(args) => send(DeviceCommandKind::Wipe, args, env).await,
        DeviceCommand::Logout(args) => send(DeviceCommandKind::Logout, args, env).await,
        DeviceCommand::Resync(args) => send(DeviceCommandKind::Resync, args, env).await,
    }
}

/// The filters of `device list`, as the admin API's query names them.
struct ListFilter {
    user: Option<String>,
    state: Option<String>,
    platform: Option<String>,
}

/// What the device commands work on: the admin API, or device management over the store.
enum Devices {
    Remote(remote::AdminApi),
    Local(Arc<dyn Store>, DeviceManagement),
}

impl Devices {
    fn open(args: &StoreArgs, env: &HashMap<String, String>) -> anyhow::Result<Self> {
        let (_, settings) = remote::settings(args, env)?;
        Ok(match remote::target(args, &settings)? {
            Target::Remote(api) => Devices::Remote(api),
            Target::Local(store) => {
                let store: Arc<dyn Store> = store;
                let devices =
                    DeviceManagement::new(store.clone(), Arc::new(NoConnections), Arc::new(CommitTimes::default()));
                Devices::Local(store, devices)
            }
        })
    }

    /// Returns one page of devices as the admin API's JSON page (`items`, `next_cursor`).
    async fn page(&self, filter: &ListFilter, cursor: Option<String>) -> anyhow::Result<Value> {
        match self {
            Devices::Remote(api) => {
                let mut query = vec![("limit", LIST_PAGE.to_string())];
                query.extend(filter.user.clone().map(|user| ("user", user)));
                query.extend(filter.state.clone().map(|state| ("state", state)));
                query.extend(filter.platform.clone().map(|platform| ("platform", platform)));
                query.extend(cursor.map(|cursor| ("cursor", cursor)));
                api.call(Method::GET, &["v1", "admin", "devices"], &query, None).await
            }
            Devices::Local(_, devices) => {
                let filter = DeviceFilter {
                    user_id: filter.user.clone(),
                    state: filter.state.as_deref().and_then(DeviceState::from_name),
                    platform: filter.platform.clone(),
                    ..DeviceFilter::default()
                };
                let page = devices.list(filter, cursor, LIST_PAGE).await?;
                let items: Vec<DeviceInfo> = page.devices.into_iter().map(DeviceInfo::from).collect();
                Ok(json!({"items": items, "next_cursor": page.next_after}))
            }
        }
    }

    /// Returns the device's detail and its commands, as the admin API's JSON.
    async fn detail(&self, client_id: &str) -> anyhow::Result<(Value, Vec<Value>)> {
        match self {
            Devices::Remote(api) => {
                let detail = api.call(Method::GET, &["v1", "admin", "devices", client_id], &[], None).await?;
                let mut commands = Vec::new();
                let mut cursor: Option<String> = None;
                loop {
                    let mut query = vec![("limit", LIST_PAGE.to_string())];
                    query.extend(cursor.take().map(|cursor| ("cursor", cursor)));
                    let path = ["v1", "admin", "devices", client_id, "commands"];
                    let page = api.call(Method::GET, &path, &query, None).await?;
                    commands.extend(page["items"].as_array().into_iter().flatten().cloned());
                    match page["next_cursor"].as_str() {
                        Some(next) => cursor = Some(next.to_owned()),
                        None => return Ok((detail, commands)),
                    }
                }
            }
            Devices::Local(store, devices) => {
                let detail = device_detail(devices, store.clone(), client_id, Vec::new()).await.map_err(api_error)?;
                let commands = devices.commands(client_id).await?;
                let commands = commands.into_iter().map(|command| serde_json::to_value(CommandInfo::from(command)));
                Ok((serde_json::to_value(detail)?, commands.collect::<Result<_, _>>()?))
            }
        }
    }

    /// Sends a command; returns it as the admin API's JSON.
    async fn send(&self, client_id: &str, kind: DeviceCommandKind, reason: &str) -> anyhow::Result<Value> {
        match self {
            Devices::Remote(api) => {
                let path = ["v1", "admin", "devices", client_id, "commands"];
                let body = json!({"kind": kind.to_string(), "reason": reason});
                api.call(Method::POST, &path, &[], Some(body)).await
            }
            Devices::Local(_, devices) => {
                let command = devices.send(client_id, kind, reason).await?;
                Ok(serde_json::to_value(CommandInfo::from(command))?)
            }
        }
    }
}

/// Turns an admin API error met on the local path into the CLI's error.
fn api_error(error: crate::admin::ApiError) -> anyhow::Error {
    anyhow::anyhow!("{} ({})", error.message, error.code)
}

async fn list(filter: &ListFilter, json: bool, args: &StoreArgs, env: &HashMap<String, String>) -> anyhow::Result<()> {
    let devices = Devices::open(args, env)?;
    let mut cursor: Option<String> = None;
    let now = crate::auth::now_ms();
    loop {
        let page = devices.page(filter, cursor.take()).await?;
        for device in page["items"].as_array().into_iter().flatten() {
            if json {
                println!("{device}");
            } else {
                println!("{}", device_line(device, now));
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(()),
        }
    }
}

/// One device as a line: client id, user, state, platform and app version, last seen.
fn device_line(device: &Value, now_ms: i64) -> String {
    let text = |key: &str| device[key].as_str().unwrap_or_default().to_owned();
    let last_seen = device["last_seen_ms"].as_i64().map_or_else(String::new, |ms| ago(now_ms, ms));
    format!(
        "{}  user={}  state={}  platform={} {}  last seen {last_seen}",
        text("client_id"),
        text("user_id"),
        text("state"),
        text("platform"),
        text("app_version"),
    )
}

/// Returns how long before `now_ms` the moment `then_ms` was, e.g. `3m ago`.
fn ago(now_ms: i64, then_ms: i64) -> String {
    let seconds = (now_ms.saturating_sub(then_ms) / 1000).max(0);
    match seconds {
        0..60 => format!("{seconds}s ago"),
        60..3_600 => format!("{}m ago", seconds / 60),
        3_600..86_400 => format!("{}h ago", seconds / 3_600),
        _ => format!("{}d ago", seconds / 86_400),
    }
}

async fn show(client_id: &str, json: bool, args: &StoreArgs, env: &HashMap<String, String>) -> anyhow::Result<()> {
    let devices = Devices::open(args, env)?;
    let (detail, commands) = devices.detail(client_id).await?;
    if json {
        let mut detail = detail;
        detail["commands"] = Value::Array(commands);
        println!("{}", serde_json::to_string_pretty(&detail)?);
        return Ok(());
    }
    let now = crate::auth::now_ms();
    println!("{}", device_line(&detail, now));
    println!("model: {}", detail["model"].as_str().unwrap_or_default());
    println!("live connections: {}", detail["live_connections"]);
    println!("pending mutations: {}", detail["pending_mutations"]);
    for partition in detail["partitions"].as_array().into_iter().flatten() {
        let lag_ms = partition["lag_ms"].as_u64().map_or_else(|| "unknown".to_owned(), |ms| format!("{ms} ms"));
        println!(
            "partition {}/{}: cursor {} of head {} (behind by {} changes, {lag_ms}), {} pending mutations",
            partition["source"].as_str().unwrap_or_default(),
            partition["key"].as_str().unwrap_or_default(),
            partition["cursor"],
            partition["head"],
            partition["lag_changes"],
            partition["pending_mutations"],
        );
    }
    for command in &commands {
        println!("{}", command_line(command));
    }
    Ok(())
}

/// One command as a line: kind, state, id and reason.
fn command_line(command: &Value) -> String {
    let text = |key: &str| command[key].as_str().unwrap_or_default().to_owned();
    let reason = text("reason");
    let reason = if reason.is_empty() { String::new() } else { format!("  reason: {reason}") };
    format!("command {} {}  id={}{reason}", text("kind"), text("state"), text("command_id"))
}

async fn send(kind: DeviceCommandKind, args: SendArgs, env: &HashMap<String, String>) -> anyhow::Result<()> {
    if args.client_id.is_empty() {
        bail!("the client id is empty");
    }
    let devices = Devices::open(&args.store, env)?;
    let command = devices.send(&args.client_id, kind, &args.reason).await?;
    println!("sent {kind} to {}: {}", args.client_id, command_line(&command));
    Ok(())
}
