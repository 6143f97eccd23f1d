//! `syncline-sim blobs`: blob upload and download throughput through the device listener.
//!
//! One password login gives a session token; then `--concurrency` workers upload
//! `--count` distinct blobs of `--size-bytes` random bytes (each in pieces of the device
//! library's upload size, as a device does), and download them all again, checking each
//! SHA-256. The report gives each phase's blobs/s and MB/s (MB = 10^6 bytes).

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use clap::Args;
use rand::RngCore as _;
use serde::Serialize;
use syncline_client_sim::{BlobClient, blob_of};
use syncline_proto::v1::Blob;
use tokio::{sync::Semaphore, task::JoinSet, time::Instant};

use crate::{
    fleet,
    loopback::check_url,
    report::{Table, round, secs, unix_time_secs, write_json},
};

/// Arguments of `blobs`.
#[derive(Debug, Args)]
#[command(about = "Measures blob uploads and downloads through the device listener")]
pub(crate) struct BlobsArgs {
    /// The device endpoint; loopback addresses only.
    #[arg(long, default_value = "ws://127.0.0.1:7700/v1/sync")]
    url: String,
    /// The user the uploads authenticate as.
    #[arg(long, default_value = "demo")]
    user: String,
    #[arg(long, default_value = "demo")]
    password: String,
    /// Blobs uploaded, then downloaded.
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// Bytes of each blob (within the server's `blob.max_bytes`).
    #[arg(long, default_value_t = 1024 * 1024)]
    size_bytes: usize,
    /// Transfers at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Hard limit on each phase, in seconds.
    #[arg(long, default_value_t = 300)]
    max_secs: u64,
    /// Writes the report as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

/// One phase's results.
#[derive(Debug, Default, Serialize)]
struct Phase {
    blobs: usize,
    bytes: u64,
    secs: f64,
    blobs_per_sec: f64,
    mb_per_sec: f64,
}

#[derive(Debug, Serialize)]
struct BlobsReport {
    scenario: &'static str,
    unix_time: u64,
    count: usize,
    size_bytes: usize,
    concurrency: usize,
    upload: Phase,
    download: Phase,
}

/// Runs the scenario.
pub(crate) async fn run(args: BlobsArgs) -> anyhow::Result<()> {
    check_url(&args.url, &["ws", "wss"]).await?;
    if args.count == 0 || args.concurrency == 0 {
        bail!("--count and --concurrency must be at least 1");
    }
    let (_connection, welcome) = fleet::login(&args.url, &args.user, &args.password).await?;
    let token = Arc::new(welcome.session_token);
    let client = BlobClient::new(&args.url, None).context("a blob client")?;
    // Distinct random contents: every upload is new to the server.
    let blobs: Vec<(Blob, Arc<Vec<u8>>)> = (0..args.count)
        .map(|_| {
            let mut bytes = vec![0; args.size_bytes];
            rand::rng().fill_bytes(&mut bytes);
            (blob_of(&bytes, "application/octet-stream", ""), Arc::new(bytes))
        })
        .collect();
    let limit = Duration::from_secs(args.max_secs);
    let upload = phase(&blobs, args.concurrency, limit, {
        let (client, token) = (client.clone(), token.clone());
        move |blob: Blob, bytes: Arc<Vec<u8>>| {
            let (client, token) = (client.clone(), token.clone());
            async move { client.upload(&token, &blob, &bytes).await.map(|()| bytes.len() as u64) }
        }
    })
    .await
    .context("uploading")?;
    let download = phase(&blobs, args.concurrency, limit, {
        let (client, token) = (client.clone(), token.clone());
        move |blob: Blob, _bytes: Arc<Vec<u8>>| {
            let (client, token) = (client.clone(), token.clone());
            async move { client.download(&token, &blob, None).await.map(|bytes| bytes.len() as u64) }
        }
    })
    .await
    .context("downloading")?;
    let report = BlobsReport {
        scenario: "blobs",
        unix_time: unix_time_secs(),
        count: args.count,
        size_bytes: args.size_bytes,
        concurrency: args.concurrency,
        upload,
        download,
    };
    let mut table =
        Table::new(format!("blobs: {} x {} bytes, {} at once", args.count, args.size_bytes, args.concurrency));
    for (name, phase) in [("upload", &report.upload), ("download", &report.download)] {
        table.row(format!("{name} blobs/s"), phase.blobs_per_sec);
        table.row(format!("{name} MB/s"), phase.mb_per_sec);
    }
    table.print();
    write_json(args.json_out.as_deref(), &report)
}

/// Runs `transfer` on every blob, `concurrency` at once, within `limit`.
async fn phase<F, Fut>(
    blobs: &[(Blob, Arc<Vec<u8>>)],
    concurrency: usize,
    limit: Duration,
    transfer: F,
) -> anyhow::Result<Phase>
where
    F: Fn(Blob, Arc<Vec<u8>>) -> Fut,
    Fut: Future<Output = Result<u64, syncline_client_sim::BlobTransferError>> + Send + 'static,
{
    let started = Instant::now();
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut running = JoinSet::new();
    for (blob, bytes) in blobs {
        let slot = slots.clone().acquire_owned().await?;
        let work = transfer(blob.clone(), bytes.clone());
        running.spawn(async move {
            let moved = work.await;
            drop(slot);
            moved
        });
    }
    let mut moved = 0u64;
    let all = async {
        while let Some(done) = running.join_next().await {
            moved += done??;
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(limit, all).await.context("the phase took longer than --max-secs")??;
    let elapsed = started.elapsed().as_secs_f64().max(f64::MIN_POSITIVE);
    Ok(Phase {
        blobs: blobs.len(),
        bytes: moved,
        secs: secs(started.elapsed()),
        blobs_per_sec: round(blobs.len() as f64 / elapsed, 1),
        mb_per_sec: round(moved as f64 / elapsed / 1e6, 1),
    })
}
