//! HTTP/2 and gRPC from socket syscalls (RFC 9113, RFC 7541, gRPC's
//! PROTOCOL-HTTP2): per-connection frame reassembly (`frame`), HPACK with
//! each direction's dynamic table (`hpack`, on the `loona-hpack` crate),
//! a bounded stream table pairing each stream's request and response
//! (`conn`), gRPC status and deadline (`grpc`). Pure library code: fed with
//! [`DataChunk`]s like `http1`, giving the same [`HttpRequest`] records with
//! `http2` set (and `grpc` for gRPC calls).
//!
//! [`HttpRequest`]: crate::request::HttpRequest
mod conn;
mod frame;
/// Fuzz harness (see `crate::fuzz`); not an API.
#[doc(hidden)]
pub mod fuzz;
pub mod grpc;
mod hpack;
mod tracker;

#[cfg(test)]
mod tests;

pub use super::{DataChunk, Direction};
pub use conn::PREFACE;
pub use tracker::Http2Tracker;

/// What the HTTP/2 tracker did, for self metrics. Monotonic counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Http2Counters {
    /// Connections recognised by their client preface.
    pub connections: u64,
    /// Streams paired with a complete response.
    pub exchanges: u64,
    /// Streams emitted without a complete response (reset, closed, idle,
    /// framing lost).
    pub incomplete_exchanges: u64,
    /// Header fields referencing HPACK table entries the agent does not know
    /// (connection older than the agent, or a lost header block).
    pub hpack_unknown_fields: u64,
    /// Header fields that were malformed HPACK.
    pub hpack_malformed_fields: u64,
    /// Header blocks not captured whole or larger than `http.max_head_bytes`.
    pub lost_header_blocks: u64,
    /// Requests whose `:method` or `:path` could not be decoded: not measured.
    pub undecodable_requests: u64,
    /// Requests not tracked because `http.max_streams_per_connection` were open.
    pub stream_overflows: u64,
    /// Streams ended by RST_STREAM.
    pub reset_streams: u64,
    /// Streams the server's GOAWAY said it never processed.
    pub goaway_dropped: u64,
    /// Server pushes (decoded for the table, not measured).
    pub pushes: u64,
    /// Frames out of order (a header block interrupted, a stray CONTINUATION).
    pub protocol_errors: u64,
    /// Kernel segments that did not fit where their syscall's bytes stood
    /// (events of one syscall out of order): ignored.
    pub misplaced_segments: u64,
    /// Connections whose framing was lost (bytes over a frame header not captured).
    pub desynced_connections: u64,
    /// Connections dropped to respect `http.max_connections`.
    pub evicted_connections: u64,
    /// Connections forgotten after `http.idle_timeout`.
    pub expired_connections: u64,
}
