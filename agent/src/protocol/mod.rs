//! Stage 3, protocol trackers: each turns the bytes moved on a connection into
//! completed requests with their timing. HTTP/1.x lives in `http1`; another
//! protocol (HTTP/2, gRPC) gets a sibling module behind the same boundary,
//! [`ProtocolTracker`], and the pipeline hands each connection's bytes to the
//! tracker of the protocol the connection speaks (HTTP/2 connections are
//! recognised by their client preface, `http2`).
pub mod http1;
pub mod http2;

pub use agent_common::Direction;

use crate::request::HttpRequest;

/// Bytes moved by one read/write-family syscall on a TCP socket.
#[derive(Clone, Copy, Debug)]
pub struct DataChunk<'a> {
    /// Connection join key (kernel socket pointer); never exported.
    pub conn_id: u64,
    /// Ingress: the process read these bytes; Egress: it wrote them.
    pub direction: Direction,
    /// CLOCK_MONOTONIC ns of the syscall.
    pub ts_ns: u64,
    /// Bytes the syscall moved.
    pub len: u32,
    /// The captured prefix of those bytes (may be empty, e.g. sendfile).
    pub payload: &'a [u8],
}

/// What a protocol tracker takes and what it gives. It takes, per connection
/// (the kernel socket, `conn_id`), the bytes each syscall moved in the order
/// the kernel saw them, and the connection's close; it gives completed
/// requests: heads, status, timing (first byte of the request read or written
/// to the last byte of the response) and the `conn_id` that joins each one to
/// the socket table's owner and TCP evidence. A tracker owns and bounds its
/// per-connection state; what it had to drop it counts.
pub trait ProtocolTracker {
    /// Bytes moved by one syscall; completed requests are appended to `out`.
    fn on_data(&mut self, chunk: &DataChunk<'_>, out: &mut Vec<HttpRequest>);
    /// The socket was closed at `ts_ns`: emit what it holds and forget it.
    fn on_close(&mut self, conn_id: u64, ts_ns: u64, out: &mut Vec<HttpRequest>);
    /// Forget connections idle as of `now_ns` (CLOCK_MONOTONIC, the clock of
    /// `ts_ns`), emitting what they hold.
    fn expire(&mut self, now_ns: u64, out: &mut Vec<HttpRequest>);
    /// Connections tracked now.
    fn connections(&self) -> usize;
}
