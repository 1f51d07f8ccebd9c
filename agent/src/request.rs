//! One completed HTTP/1.x request as the agent saw it on a socket: the record
//! that flows from `http` (reassembly, pairing) to `route`, `trace`, `slo` and
//! the exporters.
use std::time::SystemTime;

/// Which end of the connection the traced process was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The process read the request and wrote the response.
    Server,
    /// The process wrote the request and read the response.
    Client,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Server => "server",
            Side::Client => "client",
        }
    }
}

/// The process that owned the socket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskIdentity {
    pub tgid: u32,
    /// Shared with the connection table: no allocation per request.
    pub comm: std::sync::Arc<str>,
    pub cgroup_id: u64,
}

/// Request headers that later stages read. Values are raw (unvalidated); the
/// `trace` module validates them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestHeaders {
    pub host: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// Single-header B3 (`b3: {trace}-{span}-{sampled}-{parent}`).
    pub b3: Option<String>,
    pub x_b3_trace_id: Option<String>,
    pub x_b3_span_id: Option<String>,
    pub x_b3_parent_span_id: Option<String>,
    pub x_b3_sampled: Option<String>,
    pub x_b3_flags: Option<String>,
    pub x_request_id: Option<String>,
    pub x_gray_tag: Option<String>,
    pub user_agent: Option<String>,
}

/// What TCP did underneath the request (from the kernel, joined by socket).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpEvidence {
    /// Segments retransmitted on this connection while the request was in flight.
    pub retransmits: u32,
    /// Connect duration when this request was the first on a connection the
    /// traced process opened.
    pub connect_duration_ns: Option<u64>,
}

/// Peer endpoint of the connection, for span attributes and TCP evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub ip: std::net::IpAddr,
    pub port: u16,
}

/// One request/response exchange.
#[derive(Clone, Debug)]
pub struct HttpRequest {
    pub side: Side,
    pub task: TaskIdentity,
    /// Connection join key (kernel socket pointer). Private: never exported.
    pub(crate) conn_id: u64,
    pub local: Option<Endpoint>,
    pub peer: Option<Endpoint>,
    /// `GET`, `POST`, … as sent (validated token).
    pub method: String,
    /// Request target as sent (path and query).
    pub target: String,
    /// 0 or 1 for HTTP/1.0 or HTTP/1.1.
    pub version_minor: u8,
    /// Final status code (not 100 Continue). 0 if the connection closed
    /// before a response (then `incomplete` is set).
    pub status: u16,
    /// True when the exchange ended without a complete response.
    pub incomplete: bool,
    pub headers: RequestHeaders,
    /// Kernel monotonic ns of the first request byte (server: read; client: written).
    pub start_ns: u64,
    /// Kernel monotonic ns of the last response byte (server: written; client: read).
    pub end_ns: u64,
    /// Wall-clock time of `start_ns`.
    pub start_time: SystemTime,
    /// Request bytes (head + body) and response bytes (head + body).
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub tcp: TcpEvidence,
}

impl HttpRequest {
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }

    pub fn duration_secs(&self) -> f64 {
        self.duration_ns() as f64 / 1e9
    }

    pub fn is_server_error(&self) -> bool {
        (500..600).contains(&self.status)
    }

    pub fn conn_id(&self) -> u64 {
        self.conn_id
    }

    /// Builder for tests and benches outside this crate.
    pub fn synthetic(
        side: Side,
        method: &str,
        target: &str,
        status: u16,
        start_ns: u64,
        end_ns: u64,
    ) -> Self {
        Self {
            side,
            task: TaskIdentity::default(),
            conn_id: 0,
            local: None,
            peer: None,
            method: method.to_string(),
            target: target.to_string(),
            version_minor: 1,
            status,
            incomplete: false,
            headers: RequestHeaders::default(),
            start_ns,
            end_ns,
            start_time: SystemTime::UNIX_EPOCH,
            request_bytes: 0,
            response_bytes: 0,
            tcp: TcpEvidence::default(),
        }
    }

    pub fn with_conn_id(mut self, id: u64) -> Self {
        self.conn_id = id;
        self
    }
}
