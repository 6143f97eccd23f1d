//! An example Syncline channel: a small CRM over one SQLite file, served with the Rust
//! Channel SDK (`syncline_proto::sdk`).
//!
//! Sources: `Account` (app-partitioned, key `*`) and `Contact` (user-partitioned, key = the
//! owning user's id), each a table with typed columns. Every write, including one made to the
//! file by another process, lands in a `changes` table through triggers; `Watch` streams that
//! table with 8-byte big-endian change ids as resume tokens.
//!
//! - `schema`: sources, field types, tables and change-capture triggers.
//! - `convert`: typed `Value`s ⇄ SQLite values.
//! - [`CrmDb`] (`db`): the database handle: CRUD with version checks, search, users, the feed.
//! - `feed`: the `Query` and `Watch` streams.
//! - [`CrmChannel`] (`channel`): the `ChannelBackend` that checks requests and calls `CrmDb`.
//! - [`CrmBusiness`] (`business`): the mobile RPC service `crm` (`CloseDeal`), written with the
//!   Mobile RPC SDK (`syncline_proto::mobile_sdk`).
//! - [`start`] / [`serve_db`]: serve the channel and the RPC service in-process, on one port
//!   (what the `crm-channel` binary and the tests use).

mod business;
mod channel;
mod convert;
mod db;
mod feed;
mod schema;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;

use std::sync::Arc;

use syncline_proto::mobile_sdk;
use syncline_proto::sdk::ChannelError;
use tokio::net::TcpListener;
use tokio_util::task::AbortOnDropHandle;

pub use business::{CRM_SERVICE, CrmBusiness};
pub use channel::CrmChannel;
pub use db::{ClosedDeal, CrmDb, DEMO_USER};
pub use feed::EXTERNAL_WRITE_POLL_INTERVAL;

/// Errors starting or running the CRM channel.
#[derive(Debug, thiserror::Error)]
pub enum CrmError {
    /// The database could not be opened or set up.
    #[error("cannot open the CRM database: {0}")]
    Open(#[source] ChannelError),
    /// The listener's address could not be read.
    #[error("listener: {0}")]
    Listener(#[source] std::io::Error),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Serve(#[source] tonic::transport::Error),
    /// The server task panicked or was aborted.
    #[error("server task: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// A CRM channel serving in this process. Dropping it aborts the server; to stop gracefully,
/// complete the `shutdown` future given to [`start`] and await [`RunningCrmChannel::stopped`].
pub struct RunningCrmChannel {
    db: CrmDb,
    local_addr: SocketAddr,
    server: AbortOnDropHandle<Result<(), tonic::transport::Error>>,
}

impl RunningCrmChannel {
    /// Returns a handle on the channel's database, for direct reads and writes.
    pub fn db(&self) -> &CrmDb {
        &self.db
    }

    /// Returns the address the channel listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Completes when the server has stopped after its shutdown future completed.
    pub async fn stopped(self) -> Result<(), CrmError> {
        self.server.await.map_err(CrmError::Task)?.map_err(CrmError::Serve)
    }
}

/// Opens (or creates) the database at `db_path` and serves the CRM channel on `listener`
/// until `shutdown` completes.
pub async fn start(
    db_path: impl AsRef<Path>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunningCrmChannel, CrmError> {
    let db = CrmDb::open(db_path).await.map_err(CrmError::Open)?;
    serve_db(db, listener, shutdown)
}

/// Serves the CRM channel and its RPC service `crm` over an open database on `listener`
/// until `shutdown` completes. Writes through `db` (or its clones) wake the channel's
/// watchers at once.
pub fn serve_db(
    db: CrmDb,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunningCrmChannel, CrmError> {
    let local_addr = listener.local_addr().map_err(CrmError::Listener)?;
    let channel = Arc::new(CrmChannel::new(db.clone()));
    let business = Arc::new(CrmBusiness::new(db.clone()));
    let server = tokio::spawn(mobile_sdk::serve_with_channel(channel, business, listener, shutdown));
    tracing::info!(%local_addr, db = %db.path().display(), "crm channel listening");
    Ok(RunningCrmChannel { db, local_addr, server: AbortOnDropHandle::new(server) })
}
