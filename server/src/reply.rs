//! The ports through which domain services (mutation dispatch, mobile RPC) answer devices.
//! The gateway implements them; domain code never holds a connection.

use std::future::Future;
use std::pin::Pin;

use syncline_proto::v1::ServerFrame;

/// The future of sending a reply: it completes once the frame is queued (or the connection
/// is gone).
pub type ReplyFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Frames for a device, on whichever of its connections are open (none: the frame is
/// dropped, and the device learns what it says when it comes back).
pub trait DeviceReplies: Send + Sync + 'static {
    /// Queues `frame` to every open connection of `client_id`.
    fn to_device<'a>(&'a self, client_id: &'a str, frame: ServerFrame) -> ReplyFuture<'a>;
}

/// Frames for the one connection a request came on.
pub trait ConnectionReply: Send + Sync + 'static {
    /// Queues `frame` to the connection.
    fn reply(&self, frame: ServerFrame) -> ReplyFuture<'_>;
}
