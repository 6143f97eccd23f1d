//! The Syncline server: gateway, sessions, sync engine, store and the `syncline` binary.
//!
//! - [`admin`]: the admin plane: its HTTP listener, health probes and the admin API
//!   (`/v1/admin/`, API tokens and console sessions, OpenAPI document).
//! - [`app`]: the composition root; [`app::start`] runs a server and returns its addresses.
//! - [`config`]: the configuration tree, env overrides, validation into [`config::Settings`].
//! - [`gateway`]: the device protocol, one file per device command; the only code that
//!   touches connections.
//! - [`blobs`]: blob storage — files records reference by `Blob` values, content-addressed
//!   in a directory, their metadata in the store, uploads and downloads, collection.
//! - [`model`]: which partition a device or a backend may touch (one rule for both).
//! - [`auth`]: passwords (a bounded argon2 pool), login limits, backend and session tokens,
//!   device registration.
//! - [`sync`]: the sync engine — snapshot and log pages, live push, cursors.
//! - [`ingest`]: the `Ingest` gRPC service backends push changes through.
//! - [`devices`]: device management — the registry's operator view (listing, last seen) and
//!   durable operator commands (lock, unlock, wipe, logout, resync).
//! - [`mutations`]: dispatch of the durable per-device mutation queue to channels.
//! - [`channel`]: the gRPC client of backend channels and change capture (watch, poll).
//! - [`rpc`]: mobile RPC — device calls routed to backend `MobileService`s, with limits and
//!   metrics.
//! - [`metrics`]: Prometheus metrics: the counters components count into, and the one
//!   collector that renders them all for `/metrics`.
//! - [`error`]: the one error-class seam: [`error::ErrorClass`], and its one map to gRPC
//!   codes, device error codes and close codes.
//! - [`reply`]: the ports through which mutations and RPC answer devices (the gateway
//!   implements them).
//! - [`cluster`]: cluster mode on Redis: the control channel (user closes, mutation
//!   outcomes and commands for devices on other nodes), per-user session counts across the
//!   nodes, and the relay services act on devices through.
//! - [`storage`]: the store contract (partitions, mutation queues, accounts, cursors) and
//!   its backends: embedded (redb) and Redis.
//! - `demo` (cargo feature `demo`, on by default): the demo app served by `syncline serve`
//!   without configured sources.
//! - [`bulk`]: bulk sync files: SQLite snapshots of partitions, their jobs, cache, tokens
//!   and downloads.
//! - `jobs`: background jobs (cursor flushes, compaction, mutation outcome pruning).
//! - `runtime`: the backend runtime the gRPC endpoint and change capture run on.
//! - [`tls`], [`telemetry`], [`shutdown`], [`cli`]: plumbing.
//! - `test_util` (cargo feature `test-util`): accessors the end-to-end tests read a running
//!   server through, and the unit tests' shared fixtures.

pub mod admin;
pub mod app;
pub mod auth;
pub mod blobs;
pub mod bulk;
pub mod channel;
pub mod cli;
pub mod cluster;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod devices;
pub mod error;
pub mod gateway;
pub mod ingest;
mod jobs;
pub mod metrics;
pub mod model;
pub mod mutations;
pub mod reply;
pub mod rpc;
mod runtime;
pub mod shutdown;
pub mod storage;
pub mod sync;
pub mod telemetry;
#[cfg(any(test, feature = "test-util"))]
pub mod test_util;
pub mod tls;
