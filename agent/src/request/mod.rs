//! Stage 4, the request: one completed request as the agent saw it on a
//! socket (the record a protocol tracker gives), and what it is linked to:
//! its route template and gray tag (`route`), its trace context (`trace`), the
//! service that served or sent it (`service`, with Kubernetes identity in
//! `k8s`), and the redaction applied before any of it is stored (`redact`).
//! From here it flows to `measure` (RED, SLO) and the exporters.
pub mod k8s;
pub mod redact;
pub mod route;
pub mod service;
pub mod trace;

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

/// A request header that later stages read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header {
    Host,
    Traceparent,
    Tracestate,
    /// Single-header B3 (`b3: {trace}-{span}-{sampled}-{parent}`).
    B3,
    XB3TraceId,
    XB3SpanId,
    XB3ParentSpanId,
    XB3Sampled,
    XB3Flags,
    XRequestId,
    XGrayTag,
    UserAgent,
    /// Name only (see [`RequestHeaders::mark`]): credentials are never kept.
    Authorization,
    /// Name only.
    Cookie,
    /// Name only.
    ProxyAuthorization,
}

/// Headers whose values are kept; the name-only ones come after them.
const HEADERS: usize = 12;

/// Request headers that later stages read. Values are raw (unvalidated); the
/// `trace` module validates them. The values share one buffer: one
/// allocation per request instead of one per header, and a record that is
/// cheap to move through the pipeline (it was 288 bytes of `Option<String>`s).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestHeaders {
    values: String,
    /// Bit `h` set: header `h` is present at `spans[h]` (start, end) in
    /// `values`; for the name-only headers (`h >= HEADERS`) just present.
    present: u16,
    spans: [(u32, u32); HEADERS],
}

impl RequestHeaders {
    pub fn get(&self, h: Header) -> Option<&str> {
        let i = h as usize;
        if self.present & (1 << i) == 0 {
            return None;
        }
        let Some(&(start, end)) = self.spans.get(i) else {
            return Some("");
        };
        self.values.get(start as usize..end as usize)
    }

    /// Set `h` to `value` (replacing an earlier value).
    pub fn set(&mut self, h: Header, value: &str) {
        if h as usize >= HEADERS {
            return self.mark(h);
        }
        if self.values.capacity() == 0 {
            // Host, user agent and a traceparent fit without regrowing.
            self.values.reserve(128);
        }
        let start = self.values.len() as u32;
        self.values.push_str(value);
        self.spans[h as usize] = (start, self.values.len() as u32);
        self.present |= 1 << h as usize;
    }

    /// Note that `h` was sent without keeping its value (`get` gives `""`):
    /// request snapshots show that a request carried credentials, never them.
    pub fn mark(&mut self, h: Header) {
        if let Some(s) = self.spans.get_mut(h as usize) {
            *s = (0, 0);
        }
        self.present |= 1 << h as usize;
    }

    pub fn remove(&mut self, h: Header) {
        self.present &= !(1 << h as usize);
    }

    pub fn host(&self) -> Option<&str> {
        self.get(Header::Host)
    }

    pub fn traceparent(&self) -> Option<&str> {
        self.get(Header::Traceparent)
    }

    pub fn tracestate(&self) -> Option<&str> {
        self.get(Header::Tracestate)
    }

    pub fn x_request_id(&self) -> Option<&str> {
        self.get(Header::XRequestId)
    }

    pub fn x_gray_tag(&self) -> Option<&str> {
        self.get(Header::XGrayTag)
    }

    pub fn user_agent(&self) -> Option<&str> {
        self.get(Header::UserAgent)
    }
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
    /// Seen as TLS plaintext at the TLS library (`url.scheme="https"`).
    pub tls: bool,
    /// An HTTP/2 stream (`version_minor` is then meaningless).
    pub http2: bool,
    /// A gRPC call (HTTP/2 with `content-type: application/grpc*`).
    pub grpc: Option<crate::protocol::http2::grpc::GrpcCall>,
}

impl HttpRequest {
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }

    pub fn duration_secs(&self) -> f64 {
        self.duration_ns() as f64 / 1e9
    }

    /// A 5xx, or for a gRPC call a server-error status code (the gRPC
    /// route's "5xx burst"; see `grpc::SERVER_ERROR_CODES`).
    pub fn is_server_error(&self) -> bool {
        match &self.grpc {
            Some(g) => g.is_server_error() || (500..600).contains(&self.status),
            None => (500..600).contains(&self.status),
        }
    }

    /// The protocol version as OpenTelemetry's `network.protocol.version`.
    pub fn protocol_version(&self) -> &'static str {
        match (self.http2, self.version_minor) {
            (true, _) => "2",
            (false, 0) => "1.0",
            (false, _) => "1.1",
        }
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
            tls: false,
            http2: false,
            grpc: None,
        }
    }

    pub fn with_conn_id(mut self, id: u64) -> Self {
        self.conn_id = id;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_share_one_buffer_and_keep_empty_values() {
        let mut h = RequestHeaders::default();
        assert_eq!(h.host(), None);
        h.set(Header::Host, "api");
        h.set(Header::XGrayTag, "");
        h.set(Header::Traceparent, "00-abc");
        assert_eq!(h.host(), Some("api"));
        assert_eq!(h.x_gray_tag(), Some(""), "present but empty is not absent");
        assert_eq!(h.traceparent(), Some("00-abc"));
        assert_eq!(h.get(Header::B3), None);
        h.set(Header::Host, "other");
        assert_eq!(h.host(), Some("other"), "a later set replaces");
        h.remove(Header::Traceparent);
        assert_eq!(h.traceparent(), None);
        // Credentials: present by name, never a value.
        h.set(Header::Authorization, "Bearer secret");
        h.mark(Header::Cookie);
        assert_eq!(h.get(Header::Authorization), Some(""));
        assert_eq!(h.get(Header::Cookie), Some(""));
        assert_eq!(h.get(Header::ProxyAuthorization), None);
        assert!(!h.values.contains("secret"));
        assert_eq!(h.host(), Some("other"));
        assert!(std::mem::size_of::<RequestHeaders>() <= 128);
    }
}
