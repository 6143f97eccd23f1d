//! Criterion micro-benchmarks of Syncline's hot paths, one module per group. Whole-system
//! load (many devices, changes per second) is measured with the client-sim binary instead.
//!
//! Run with `cargo bench -p syncline-benches`; results are recorded in `docs/PERFORMANCE.md`.

mod codec;
mod fixtures;
mod hub;
mod pages;
mod sim_receive;
mod store;

criterion::criterion_main!(codec::benches, hub::benches, pages::benches, sim_receive::benches, store::benches);
