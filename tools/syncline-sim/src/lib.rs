//! `syncline-sim`: simulated Syncline devices on the command line, for load runs and
//! scenarios against a server on this machine. The device protocol itself is the
//! `syncline-client-sim` library's; this crate drives many devices at once and measures.
//!
//! Subcommands (`scenarios/`):
//!
//! - `watch` (`watch.rs`): one device syncing one partition, printing its progress, its
//!   records once caught up, and each live change, until Ctrl-C.
//! - `fanout` (`latency.rs`; alias `latency`): N devices caught up on a partition, M
//!   single-record writes at a fixed rate or in a burst (pushed over gRPC Ingest, or created in
//!   the backend through its channel); deliveries per second, push latency, losses and server
//!   CPU per delivery.
//! - `storm` (`storm.rs`): N devices caught up, then all disconnected at once and resumed at
//!   once (token login, subscribe from their cursors), optionally with changes ingested during
//!   the outage; time until every device is back and caught up, losses, duplicates, retries.
//! - `slow` (`slow.rs`): N devices caught up, changes at a fixed rate; then k% stop reading
//!   their sockets; the others' latency against the phase before, the server's memory over
//!   time, and whether the stalled devices catch up without loss once they read again.
//! - `initial-sync` (`initial_sync.rs`): one device syncing a whole partition from cursor 0,
//!   repeated; records per second.
//! - `idle` (`idle.rs`): N devices caught up and idle; server memory per device.
//! - `rpc` (`rpc.rs`): mobile RPC round trips through Syncline against direct gRPC calls to
//!   an echo backend this process serves.
//! - `mutations` (`mutations.rs`): N devices caught up, W writers sending creates; ack,
//!   result and echo latency, mutations per second sustained.
//! - `login-storm` (`login_storm.rs`): bursts of concurrent password logins, right and
//!   wrong; answers by kind, logins per second, and the server's RSS and threads after each
//!   burst (issue 13).
//! - `personal` (`personal.rs`): N users, each with one device logged in with a backend
//!   token this process mints, each synced to its own user partition; M changes/s pushed
//!   over Ingest across those partitions; latency, losses per partition, server CPU.
//!
//! Shared by the scenarios:
//!
//! - `cli`: the command line, the runtime, and [`main`]; the load scenarios run bounded by
//!   `--max-secs` (`fleet::run_bounded`).
//! - `fleet/`: many lightweight devices on raw connections: their arguments, logins
//!   (password or backend tokens) and ramp-up, each device's protocol state machine and
//!   reconnects, and what they counted.
//! - `push_driver`: the open-loop pusher of the write scenarios (Ingest pushes or channel
//!   creates carrying probes) and the push and delivery fields of their reports.
//! - `loopback`: the loopback-only URL check and source addresses.
//! - `usage`: what a measured window cost the server, this process and each core (read
//!   from `/proc` by the `syncline-procfs` crate, shared with the baselines' load generator).
//! - `report`: latency histograms, the printed table and the JSON file.

mod cli;
mod fleet;
mod loopback;
mod push_driver;
mod report;
mod scenarios;
mod usage;

pub use cli::main;
