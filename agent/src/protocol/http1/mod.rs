//! HTTP/1.x from socket syscalls: per-connection reassembly of request and
//! response heads, body framing (length, chunked, close, sendfile lengths),
//! and pairing into [`HttpRequest`](crate::request::HttpRequest) records on
//! the server and the client side. Pure library code: fed with [`DataChunk`]s.
mod budget;
mod chunked;
mod exchange;
/// Fuzz harnesses (see `crate::fuzz`); not an API.
#[doc(hidden)]
pub mod fuzz;
pub(crate) mod head;
mod stream;
mod tracker;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use super::{DataChunk, Direction};
use serde::{Deserialize, Serialize};

use crate::config::error::ConfigError;
pub(crate) use tracker::ConnIdHasher;
pub use tracker::Http1Tracker;

/// `http:` section of the config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Connections tracked at once; beyond, the least recently active are
    /// dropped (their open exchanges emitted as incomplete) and counted.
    pub max_connections: usize,
    /// Head bytes buffered per message; longer heads are parsed as truncated.
    pub max_head_bytes: usize,
    /// Head bytes buffered across all connections; beyond, new partial
    /// heads are parsed as truncated and counted (`head_budget_exhausted`).
    pub max_head_buffer_bytes: usize,
    /// A connection silent this long is forgotten; its open exchanges are
    /// emitted (complete when only the end of an unframed response was unknown).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Requests waiting for their responses on one connection (pipelining).
    pub max_pipelined: usize,
    /// HTTP/2 streams tracked at once on one connection; more are counted
    /// (`stream_overflows`) and not measured.
    pub max_streams_per_connection: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_connections: 65_536,
            max_head_bytes: 16 * 1024,
            max_head_buffer_bytes: 64 << 20,
            idle_timeout: Duration::from_secs(30),
            max_pipelined: 64,
            max_streams_per_connection: 256,
        }
    }
}

impl HttpConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_connections == 0 {
            return Err(ConfigError::key(
                "http.max_connections",
                "must be at least 1",
            ));
        }
        if !(256..=1 << 20).contains(&self.max_head_bytes) {
            return Err(ConfigError::key(
                "http.max_head_bytes",
                "must be between 256 and 1048576",
            ));
        }
        if self.max_head_buffer_bytes < self.max_head_bytes {
            return Err(ConfigError::key(
                "http.max_head_buffer_bytes",
                "must be at least http.max_head_bytes",
            ));
        }
        if self.idle_timeout.is_zero() {
            return Err(ConfigError::key(
                "http.idle_timeout",
                "must be more than 0s",
            ));
        }
        if self.max_pipelined == 0 {
            return Err(ConfigError::key("http.max_pipelined", "must be at least 1"));
        }
        if self.max_streams_per_connection == 0 {
            return Err(ConfigError::key(
                "http.max_streams_per_connection",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// What the tracker did, for self metrics. Monotonic counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpCounters {
    /// Data events seen.
    pub chunks: u64,
    /// Events without payload on connections not tracked (ignored cheaply).
    pub untracked_chunks: u64,
    /// Complete exchanges emitted.
    pub exchanges: u64,
    /// Exchanges emitted with `incomplete` set (closed, idle, evicted, overflow),
    /// plus request heads cut off by a close before their start line was whole.
    pub incomplete_exchanges: u64,
    /// Connections recognised as not HTTP/1.x (TLS, HTTP/2, binary, garbage).
    pub non_http_connections: u64,
    /// Invalid heads on connections already known as HTTP/1.x.
    pub parse_errors: u64,
    /// Heads seen only in part (capture prefix or `max_head_bytes`).
    pub truncated_heads: u64,
    /// Bodies whose framing could not be followed (bytes beyond the capture).
    pub framing_lost: u64,
    /// Responses whose end was inferred (close, next request, idle), not read.
    pub unframed_responses: u64,
    /// Responses with no request waiting for them (joined mid-connection).
    pub unmatched_responses: u64,
    /// Requests dropped because too many were pipelined.
    pub pipeline_overflows: u64,
    /// Connections no longer paired because a message could not be delimited
    /// while others were in flight (pipelining beyond the capture).
    pub desynced_connections: u64,
    /// Connections that switched protocols (101) or became CONNECT tunnels.
    pub upgraded_connections: u64,
    /// Connections dropped to respect `max_connections`.
    pub evicted_connections: u64,
    /// Connections forgotten after `idle_timeout`.
    pub expired_connections: u64,
    /// Connections judged not HTTP that later started a request.
    pub revived_connections: u64,
    /// CLOSE events older than the connection they named (a reused socket
    /// address, events of two CPUs out of order): ignored.
    pub stale_closes: u64,
    /// Heads parsed as truncated because `http.max_head_buffer_bytes` was spent.
    pub head_budget_exhausted: u64,
}
