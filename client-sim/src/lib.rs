//! Syncline's device library: simulated app installs that speak the device protocol
//! (`proto/syncline/v1/device.proto`) over a real WebSocket, for end-to-end tests and the
//! `syncline-sim` load CLI (`tools/syncline-sim`).
//!
//! - [`wire`]: [`Connection`], one WebSocket to `/v1/sync` sending `ClientFrame`s and
//!   receiving `ServerFrame`s as protobuf binary or canonical-JSON text frames (`ws://`, or
//!   `wss://` with a given CA certificate).
//! - [`lean_frame`]: [`LeanFrame`], the load simulator's receive path
//!   ([`Connection::recv_lean`]): of a `Changes` frame only its range, flags and probes,
//!   read straight from the bytes.
//! - [`probe`]: [`Probe`], the records a load run writes to time deliveries, and how they
//!   are recognised.
//! - [`replica`]: [`PartitionReplica`], a device's copy of one partition and the page rules
//!   (snapshot reset, duplicates, gaps, deletes before upserts, checksum at `to`) as a pure
//!   `apply`.
//! - `engine`: the rest of the protocol as a pure state machine (Hello and token fallback,
//!   subscribes, acks and debounced live acks, resubscribe on gaps, resync on checksum
//!   mismatch, what a close code means, operator commands acted on once and acknowledged).
//! - [`backoff`]: [`Backoff`], jittered exponential reconnect delays.
//! - [`bulk`]: bulk sync files: download with `Range` resume, checks, and reading a file
//!   into a partition's replica (the engine asks for them; [`SubscriptionConfig::with_bulk`]).
//! - [`device`]: [`Device::start`] spawns the thin task around the engine and returns a
//!   [`DeviceHandle`] to view records, wait for states, cut the network, log in again after
//!   a lock, wipe or logout ([`DeviceHandle::login`]) and stop.
//! - [`config`]: [`DeviceConfig`] and its parts, with named defaults.
//! - [`backend_token`]: [`BackendTokenClaims`], backend-issued login tokens (HS256 JWTs) as
//!   an app's backend mints them, for devices that log in without a Syncline password.
//! - [`state`]: [`DeviceState`] and [`DeviceStats`], what a device publishes.
//! - [`notification`]: [`Notification`]s to the app, modelled on RhoConnect's sync
//!   callbacks, and their delivery policy.
//! - [`rpc`]: business calls ([`DeviceHandle::call`]) over the device's socket, their errors
//!   ([`CallError`]) and the `RpcCall` frame builder for raw connections.
//! - [`outbox`]: the offline mutation queue in SQLite ([`DeviceConfig::mutation_store`]) and
//!   its policy: ordering, temporary ids and links, failures the app retries or discards.
//!   The engine sends it as `Mutate` and shows its changes optimistically in
//!   [`DeviceHandle::view`].
//! - [`blob_transfer`]: [`BlobClient`], blob uploads and downloads over HTTP on the device
//!   listener, resumable, checked against the SHA-256.
//! - [`blob_uploads`]: [`LocalBlobs`], the bytes of the device's blobs, and the policy of
//!   uploading them before the mutations that reference them
//!   ([`DeviceHandle::attach_blob`], [`DeviceHandle::blob`]).
//! - `fake_server` (feature `test-util`): a scripted fake of the server's side of the
//!   protocol on 127.0.0.1, for socket-level tests.
//!
//! Driving a device from a test:
//!
//! ```no_run
//! use std::time::Duration;
//! use syncline_client_sim::{Device, DeviceConfig, SubscriptionConfig};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let config = DeviceConfig::new("ws://127.0.0.1:7700/v1/sync", "alice", "secret")
//!     .subscribe(SubscriptionConfig::new("Account").with_page_size(100));
//! let device = Device::start(config);
//! let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
//! let state = device.wait_for(deadline, |state| state.is_caught_up()).await?;
//! let user = state.user_id.clone().unwrap_or_default();
//! let accounts = device.view("Account", &user).expect("subscribed");
//! assert_eq!(accounts.total, accounts.records.len() as u64);
//! device.cut(); // network loss: the device reconnects and resumes from its cursor
//! assert!(device.stats().partitions_seen.iter().all(|partition| partition.key == user));
//! device.stop().await;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod backend_token;
pub mod backoff;
pub mod blob_transfer;
pub mod blob_uploads;
pub mod bulk;
pub mod config;
pub mod device;
mod engine;
#[cfg(feature = "test-util")]
pub mod fake_server;
pub mod lean_frame;
pub mod notification;
pub mod outbox;
pub mod probe;
pub mod replica;
pub mod rpc;
pub mod state;
pub mod wire;

pub use backend_token::BackendTokenClaims;
pub use backoff::Backoff;
pub use blob_transfer::{BlobClient, BlobTransferError, blob_hash, blob_of};
pub use blob_uploads::LocalBlobs;
pub use config::{BackoffConfig, DeviceConfig, LiveAckPolicy, SubscriptionConfig};
pub use device::{Device, DeviceHandle, WaitError};
pub use engine::{SearchError, SearchQuery, SearchResults};
pub use lean_frame::{LeanChanges, LeanFrame};
pub use notification::{
    BulkNotification, BulkStatus, ChangedNotification, MutationNotification, MutationOutcome, Notification,
    SyncNotification, SyncNotificationStatus,
};
pub use outbox::{MutationFailure, MutationState, OutboxError, QueuedMutation, Resolution, Resolved};
pub use probe::Probe;
pub use replica::{ApplyOutcome, ChecksumMismatch, PartitionId, PartitionReplica, PartitionView, UnexpectedPage};
pub use rpc::{CallError, CallResult};
pub use state::{ConnectionPhase, DeviceState, DeviceStats, PartitionStatus, StopCommand, StopReason};
pub use wire::{ConnectOptions, Connection, FrameFormat, Incoming, WireError};
