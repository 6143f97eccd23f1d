//! Criterion micro-benchmarks for Syncline. The code lives in the single bench target
//! `benches/main.rs` (`cargo bench -p syncline-benches`), one module per group:
//!
//! - `codec`: decoding device frames (binary and JSON) and encoding `Changes` frames.
//! - `hub`: encode-once fan-out of one frame to 1,000 and 10,000 live subscribers.
//! - `pages`: net effect of a log run and building log and snapshot pages.
//! - `store`: durable ingest (`apply_batch`, group commit) and log/snapshot reads of the
//!   embedded store.
//!
//! Results and how to read them are in `docs/PERFORMANCE.md`. This library is empty: a
//! package needs a library or binary target besides its benches.
