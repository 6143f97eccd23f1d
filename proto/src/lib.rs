//! Syncline's wire protocol.
//!
//! - [`v1`]: the generated `syncline.v1` types (prost), gRPC clients and servers (tonic) and
//!   canonical-JSON serde impls (pbjson) from `syncline/v1/*.proto`, which are the
//!   specification of the protocol.
//! - [`checksum`]: the order-independent checksum of a partition's live set.
//! - [`sdk`]: the Rust Channel SDK (a [`sdk::ChannelBackend`] trait and [`sdk::serve`]); the only
//!   module of this crate that does I/O, with `mobile_sdk`. Its [`sdk::passwords`] is a bounded
//!   argon2 pool for backends and Syncline (dedicated threads, reused memory).
//! - [`mobile_sdk`]: the Rust Mobile RPC SDK (a [`mobile_sdk::MobileBackend`] trait and
//!   [`mobile_sdk::serve`]) for business operations devices call over their socket.
//! - [`value`]: conveniences for building typed field values.

pub mod checksum;
pub mod mobile_sdk;
pub mod sdk;
pub mod value;

/// The generated `syncline.v1` package.
#[allow(unreachable_pub, missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/syncline.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/syncline.v1.serde.rs"));
}

/// The encoded `FileDescriptorSet` of every Syncline proto file (for gRPC reflection and
/// tooling).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/syncline_descriptor.bin"));

/// The protocol version this crate speaks (`Hello.protocol_version`).
pub const PROTOCOL_VERSION: u32 = 1;

/// The WebSocket subprotocol name of the device protocol.
pub const SUBPROTOCOL: &str = "syncline.v1";

/// The HTTP path of the device endpoint.
pub const SYNC_PATH: &str = "/v1/sync";

/// The partition key of `app` partitions, shared by all users.
pub const APP_PARTITION_KEY: &str = "*";

/// WebSocket close codes the server uses, grouped by what the device should do
/// (documented in `device.proto`).
pub mod close_code {
    /// Logout or client close: do not reconnect until the app asks.
    pub const NORMAL: u16 = 1000;
    /// A frame exceeded the size limit: fix the client.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// Server shutting down: reconnect now.
    pub const SERVICE_RESTART: u16 = 1012;
    /// Bad credentials or token: log in again.
    pub const UNAUTHENTICATED: u16 = 4001;
    /// Device or user locked: do not reconnect.
    pub const FORBIDDEN: u16 = 4003;
    /// A frame was not understood before the session started: fix the client.
    pub const PROTOCOL_ERROR: u16 = 4400;
    /// No frame for the idle timeout: reconnect with backoff.
    pub const IDLE_TIMEOUT: u16 = 4408;
    /// Connection limits reached: reconnect with backoff.
    pub const TOO_MANY_CONNECTIONS: u16 = 4429;
    /// Server error: reconnect with backoff.
    pub const INTERNAL: u16 = 4500;
}
