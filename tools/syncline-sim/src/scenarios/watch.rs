//! `syncline-sim watch`: one device, one partition, printed as it syncs.
//!
//! Output (stdout), one line per notification:
//! - `[Account/u1] in progress: 50 changes (150 this run, 1000 total)`
//! - `[Account/u1] caught up: 1000 records`, followed (the first time) by every record as
//!   `  id {"field":value,...}`
//! - `[complete] 1 partition(s), 1000 records, 1000 changes this run`
//! - `[Account/u1] error FORBIDDEN: message`
//! - live changes: `- id` for deletes, then `+ id {fields}` for upserts.

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::{Context, bail};
use base64::Engine as _;
use clap::Args;
use syncline_client_sim::{
    ChangedNotification, Device, DeviceConfig, DeviceHandle, FrameFormat, Notification, SubscriptionConfig,
    SyncNotification, SyncNotificationStatus, config::DEFAULT_NOTIFICATION_CAPACITY,
};
use syncline_proto::v1::{Record, Value, value::Kind};

/// Arguments of `watch`.
#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// The device endpoint (`ws://` or `wss://`).
    #[arg(long, default_value = "ws://127.0.0.1:7700/v1/sync")]
    url: String,
    /// Login name.
    #[arg(long)]
    user: String,
    /// Password.
    #[arg(long, env = "SYNCLINE_PASSWORD", hide_env_values = true)]
    password: String,
    /// Source to sync.
    #[arg(long)]
    source: String,
    /// Partition key (default: the natural key, i.e. the user id or `*`).
    #[arg(long)]
    key: Option<String>,
    /// Send canonical-JSON text frames instead of protobuf binary frames.
    #[arg(long)]
    json: bool,
    /// PEM file of the CA certificate that signs the server's certificate (for `wss://`).
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// Records or changes per page (0: the server's default).
    #[arg(long, default_value_t = 0)]
    page_size: u32,
}

/// Runs `watch` until Ctrl-C or until the device stops on its own.
pub(crate) async fn run(args: WatchArgs) -> anyhow::Result<()> {
    let mut subscription = SubscriptionConfig::new(&args.source).with_page_size(args.page_size);
    if let Some(key) = &args.key {
        subscription = subscription.with_key(key);
    }
    let mut config = DeviceConfig::new(&args.url, &args.user, &args.password)
        .subscribe(subscription)
        .with_notifications(DEFAULT_NOTIFICATION_CAPACITY);
    if args.json {
        config = config.with_format(FrameFormat::Json);
    }
    if let Some(path) = &args.ca_cert {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        config = config.with_ca_cert_pem(pem);
    }

    let mut device = Device::start(config);
    let mut notifications = device.take_notifications().context("notifications are on")?;
    let mut printed_records = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            signal = &mut ctrl_c => {
                signal.context("listening for Ctrl-C")?;
                device.stop().await;
                return Ok(());
            }
            notification = notifications.recv() => match notification {
                Some(Notification::Sync(sync)) => print_sync(&sync, &device, &mut printed_records)?,
                Some(Notification::Changed(changed)) => print_changed(&changed)?,
                // `watch` only reads; a mutation queued by an earlier run would still report.
                Some(Notification::Mutation(mutation)) => {
                    println!("[mutation {} {}] {:?}", mutation.source, mutation.mutation_id, mutation.outcome)
                }
                Some(Notification::Bulk(bulk)) => {
                    println!("[bulk {}/{}] {:?} {} of {} bytes", bulk.source, bulk.key, bulk.status, bulk.bytes, bulk.total_bytes)
                }
                None => {
                    // The device stopped on its own (e.g. refused credentials).
                    let reason = device.stop().await;
                    if reason.is_error() {
                        bail!("device stopped: {reason}");
                    }
                    eprintln!("device stopped: {reason}");
                    return Ok(());
                }
            },
        }
    }
}

fn print_sync(sync: &SyncNotification, device: &DeviceHandle, printed_records: &mut bool) -> anyhow::Result<()> {
    let partition = format!("[{}/{}]", sync.source, sync.key);
    match sync.status {
        SyncNotificationStatus::InProgress => println!(
            "{partition} in progress: {} changes ({} this run, {} total)",
            sync.processed, sync.cumulative, sync.total
        ),
        SyncNotificationStatus::Ok => {
            println!("{partition} caught up: {} records", sync.total);
            if !*printed_records {
                *printed_records = true;
                let view = device.view(&sync.source, &sync.key).context("the caught-up partition is held")?;
                for record in view.records.values() {
                    println!("  {} {}", record.id, fields_json(record)?);
                }
            }
        }
        SyncNotificationStatus::Error => {
            let (code, message) = sync.error.clone().unwrap_or_default();
            println!("{partition} error {}: {message}", code.as_str_name());
        }
        SyncNotificationStatus::Complete => {
            println!("[complete] {} records, {} changes this run", sync.total, sync.cumulative)
        }
        SyncNotificationStatus::SchemaChanged => println!("{partition} schema changed: syncing again"),
    }
    Ok(())
}

fn print_changed(changed: &ChangedNotification) -> anyhow::Result<()> {
    for id in &changed.deletes {
        println!("- {id}");
    }
    for record in &changed.upserts {
        println!("+ {} {}", record.id, fields_json(record)?);
    }
    Ok(())
}

/// Returns a record's fields as compact JSON with plain values (bytes in base64, non-finite
/// doubles as strings).
fn fields_json(record: &Record) -> anyhow::Result<String> {
    let fields: BTreeMap<&str, serde_json::Value> =
        record.fields.iter().map(|(name, value)| (name.as_str(), plain_json(value))).collect();
    Ok(serde_json::to_string(&fields)?)
}

fn plain_json(value: &Value) -> serde_json::Value {
    match &value.kind {
        Some(Kind::StringValue(text)) => serde_json::Value::from(text.as_str()),
        Some(Kind::IntValue(number)) => serde_json::Value::from(*number),
        Some(Kind::DoubleValue(number)) => serde_json::Number::from_f64(*number)
            .map_or_else(|| serde_json::Value::from(number.to_string()), serde_json::Value::Number),
        Some(Kind::BoolValue(flag)) => serde_json::Value::from(*flag),
        Some(Kind::BytesValue(data)) => serde_json::Value::from(base64::engine::general_purpose::STANDARD.encode(data)),
        Some(Kind::NullValue(_)) | None => serde_json::Value::Null,
        Some(Kind::BlobValue(blob)) => serde_json::Value::from(blob.hash.as_str()),
    }
}
