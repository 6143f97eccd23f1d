//! The Syncline server: gateway, sessions, sync engine, store and the `syncline` binary.
//!
//! - [`storage`]: the durable store trait and its embedded (redb) backend.

pub mod storage;
