//! The sync engine: catch-up pages of partitions (snapshot + log), live push of committed
//! batches, device cursors. It knows nothing about sockets: it builds frames that the
//! gateway sends and publishes committed batches to the hub, encoded once.
//!
//! - [`pages`]: pure builders of `Changes` frames from store pages.
//! - [`live`]: the store's commit listener that publishes live `Changes` to the hub.
//! - [`cursors`]: batches device cursors into the store.
//! - [`bus`]: partitions' names on the node bus, and the Redis bus's constructor.

pub mod bus;
pub mod cursors;
pub mod live;
pub mod pages;

pub use self::live::LivePublisher;
