//! Syncline's wire protocol.
//!
//! - [`v1`]: the generated `syncline.v1` types (prost), gRPC clients and servers (tonic) and
//!   canonical-JSON serde impls (pbjson; `Value`'s are in [`value`]) from
//!   `syncline/v1/*.proto`, which are the specification of the protocol.
//! - [`checksum`]: the order-independent checksum of a partition's live set.
//! - [`bulk_file`]: the schema of bulk snapshot files (SQLite) that server and devices share.
//! - [`record`]: the limits of a record and [`v1::Record::validate`], the one check of a
//!   record against them.
//! - [`grpc_codec`]: the codec of the generated gRPC servers (an undecodable request is
//!   INVALID_ARGUMENT).
//! - [`sdk`]: the Rust Channel SDK (a [`sdk::ChannelBackend`] trait and [`sdk::serve`]); the only
//!   module of this crate that does I/O, with `mobile_sdk`. Its [`sdk::passwords`] is a bounded
//!   argon2 pool for backends and Syncline (dedicated threads, reused memory).
//! - [`mobile_sdk`]: the Rust Mobile RPC SDK (a [`mobile_sdk::MobileBackend`] trait and
//!   [`mobile_sdk::serve`]) for business operations devices call over their socket.
//! - [`value`]: conveniences for building typed field values, and the canonical JSON mapping
//!   of `Value` (non-finite doubles as `"NaN"`, `"Infinity"`, `"-Infinity"`).

pub mod bulk_file;
pub mod checksum;
pub mod grpc_codec;
pub mod mobile_sdk;
pub mod record;
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

/// Path prefix of blob uploads and downloads on the device listener (`/v1/blobs/{hash}`;
/// see "Blobs" in device.proto).
pub const BLOBS_PATH: &str = "/v1/blobs";

/// The partition key of `app` partitions, shared by all users.
pub const APP_PARTITION_KEY: &str = "*";

/// WebSocket close codes the server uses, grouped by what the device should do
/// (documented in `device.proto`), and the bound of a close frame's reason.
pub mod close_code {
    // Do not reconnect until something changes (the app asks, the user logs in, the app is
    // updated).

    /// Logout or client close: do not reconnect until the app asks.
    pub const NORMAL: u16 = 1000;
    /// Bad credentials or token: log in again.
    pub const UNAUTHENTICATED: u16 = 4001;
    /// Device or user locked: do not reconnect.
    pub const FORBIDDEN: u16 = 4003;
    /// `Hello.protocol_version` is not one this server speaks (the Error frame before the close
    /// says which it speaks): do not reconnect until the app is updated.
    pub const UPGRADE_REQUIRED: u16 = 4426;

    // Reconnect with backoff.

    /// A frame exceeded the size limit: a client bug (report it); reconnect with backoff.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The first frame was not understood or was not a Hello: a client bug (report it);
    /// reconnect with backoff.
    pub const PROTOCOL_ERROR: u16 = 4400;
    /// No frame for the idle timeout: reconnect with backoff.
    pub const IDLE_TIMEOUT: u16 = 4408;
    /// No successful Hello within the server's hello timeout: reconnect with backoff. The same
    /// code as [`IDLE_TIMEOUT`], since a device does the same for both.
    pub const HELLO_TIMEOUT: u16 = IDLE_TIMEOUT;
    /// Connection limits reached: reconnect with backoff.
    pub const TOO_MANY_CONNECTIONS: u16 = 4429;
    /// Server error: reconnect with backoff.
    pub const INTERNAL: u16 = 4500;

    // Reconnect now.

    /// Server shutting down: reconnect now.
    pub const SERVICE_RESTART: u16 = 1012;

    /// Longest close reason in bytes: a close frame's payload is at most 125 bytes (RFC 6455
    /// section 5.5), two of which are the code. Compliant clients fail the connection (1006)
    /// on a longer one, losing the code.
    pub const MAX_REASON_BYTES: usize = 123;

    /// Returns the longest prefix of `reason` that fits a close frame
    /// ([`MAX_REASON_BYTES`]), cut on a character boundary so that it stays valid UTF-8.
    pub fn truncate_reason(reason: &str) -> &str {
        if reason.len() <= MAX_REASON_BYTES {
            return reason;
        }
        let mut end = MAX_REASON_BYTES;
        // At most three steps back: a UTF-8 character is at most four bytes.
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        &reason[..end]
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn short_reasons_are_kept_whole() {
            assert_eq!(truncate_reason(""), "");
            assert_eq!(truncate_reason("idle timeout"), "idle timeout");
            let exact = "x".repeat(MAX_REASON_BYTES);
            assert_eq!(truncate_reason(&exact), exact);
        }

        #[test]
        fn long_reasons_are_cut_to_the_limit() {
            let long = "y".repeat(MAX_REASON_BYTES + 54);
            assert_eq!(truncate_reason(&long), &long[..MAX_REASON_BYTES]);
        }

        #[test]
        fn multi_byte_characters_at_the_limit_are_dropped_whole() {
            for wide in ["é", "€", "🦀"] {
                // Every way a 2-, 3- or 4-byte character can straddle the limit (or start right
                // at it): the cut drops it whole and keeps everything before it.
                for overhang in 1..=wide.len() {
                    let prefix = "a".repeat(MAX_REASON_BYTES + overhang - wide.len());
                    let reason = format!("{prefix}{wide}tail");
                    assert_eq!(truncate_reason(&reason), prefix, "{wide} overhanging by {overhang}");
                }
                // One that ends exactly at the limit stays.
                let prefix = "a".repeat(MAX_REASON_BYTES - wide.len());
                let reason = format!("{prefix}{wide}tail");
                assert_eq!(truncate_reason(&reason), format!("{prefix}{wide}"));
            }
            let all_wide = "€".repeat(100);
            let cut = truncate_reason(&all_wide);
            assert_eq!(cut.len(), 123, "41 whole three-byte characters");
            assert!(cut.chars().all(|c| c == '€'));
        }
    }
}
