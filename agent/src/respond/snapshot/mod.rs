//! Request snapshots: per judged route, a bounded store of failed, slow and
//! (reservoir-sampled) healthy requests as the kernel showed them, redacted
//! at capture. When L2 or gray rollback fires, the route's sets are frozen
//! under an id that the alert and the fuse audit carry; frozen sets are
//! exported as HAR 1.2 (`har`), compared failed against healthy (`diff`) and
//! replayed against a fixed service (`replay`).
use std::net::SocketAddr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::config::error::ConfigError;
use crate::request::{Header, HttpRequest};

pub mod cli;
pub mod diff;
pub mod har;
pub mod replay;
pub mod store;

pub use store::{FrozenSet, SharedFrozen, SnapshotStore, StoreCounters};

/// Headers never captured, whatever the allowlist says: credentials.
pub const NEVER_CAPTURED: [&str; 4] = [
    "authorization",
    "cookie",
    "set-cookie",
    "proxy-authorization",
];

/// Headers the head parser keeps (`request::Header`), by lower-case name.
/// Only these can be captured: the agent never holds the others' values.
pub const KEPT_HEADERS: [(&str, Header); 15] = [
    ("host", Header::Host),
    ("user-agent", Header::UserAgent),
    ("x-request-id", Header::XRequestId),
    ("x-gray-tag", Header::XGrayTag),
    ("traceparent", Header::Traceparent),
    ("tracestate", Header::Tracestate),
    ("b3", Header::B3),
    ("x-b3-traceid", Header::XB3TraceId),
    ("x-b3-spanid", Header::XB3SpanId),
    ("x-b3-parentspanid", Header::XB3ParentSpanId),
    ("x-b3-sampled", Header::XB3Sampled),
    ("x-b3-flags", Header::XB3Flags),
    // Name only: the parser notes that they were sent, never their value.
    ("authorization", Header::Authorization),
    ("cookie", Header::Cookie),
    ("proxy-authorization", Header::ProxyAuthorization),
];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// Capture snapshots at all (off: no store, alerts carry no snapshot id).
    pub enabled: bool,
    /// Bytes all live snapshots may hold together; the oldest go first.
    pub max_bytes: usize,
    /// Snapshots kept per route and set (failed-or-slow, healthy).
    pub per_route: usize,
    /// Frozen sets kept (one per alert); the oldest is dropped first.
    pub max_frozen: usize,
    /// Header values captured (lower-case names, from the headers the agent
    /// parses). Other parsed headers are captured by name only.
    /// `authorization`, `cookie`, `set-cookie`, `proxy-authorization` are refused.
    pub header_allowlist: Vec<String>,
    /// Query parameters whose values are kept; all other values become `REDACTED`.
    pub query_allowlist: Vec<String>,
    /// Longest target and header value kept, in bytes.
    pub max_value_bytes: usize,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            // 4 MiB cost 10 MiB of RSS in the memory bench; 1 MiB is within its noise.
            max_bytes: 1024 * 1024,
            per_route: 50,
            max_frozen: 32,
            header_allowlist: ["host", "user-agent", "x-request-id", "x-gray-tag"]
                .map(String::from)
                .to_vec(),
            query_allowlist: Vec::new(),
            max_value_bytes: 512,
        }
    }
}

impl SnapshotConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, h) in self.header_allowlist.iter().enumerate() {
            let key = format!("snapshots.header_allowlist[{i}]");
            let lower = h.to_ascii_lowercase();
            if NEVER_CAPTURED.contains(&lower.as_str()) {
                return Err(ConfigError::key(
                    key,
                    format!("{h} carries credentials and is never captured"),
                ));
            }
            if !KEPT_HEADERS.iter().any(|(n, _)| *n == lower) {
                let names: Vec<&str> = KEPT_HEADERS[..12].iter().map(|(n, _)| *n).collect();
                return Err(ConfigError::key(
                    key,
                    format!(
                        "the agent does not keep header {h}; one of: {}",
                        names.join(", ")
                    ),
                ));
            }
        }
        if self.enabled && self.per_route == 0 {
            return Err(ConfigError::key(
                "snapshots.per_route",
                "must be at least 1",
            ));
        }
        if self.max_frozen == 0 {
            return Err(ConfigError::key(
                "snapshots.max_frozen",
                "must be at least 1",
            ));
        }
        if self.max_value_bytes < 16 {
            return Err(ConfigError::key(
                "snapshots.max_value_bytes",
                "must be at least 16",
            ));
        }
        Ok(())
    }
}

/// Why a snapshot was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// 5xx, or no complete response.
    Failed,
    /// Not failed, but slower than the route's SLO P99 target.
    Slow,
    /// Neither: a reservoir sample, the comparison set.
    Healthy,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Failed => "failed",
            Class::Slow => "slow",
            Class::Healthy => "healthy",
        }
    }

    /// Failed and slow requests are the set an alert is about.
    pub fn is_bad(self) -> bool {
        self != Class::Healthy
    }
}

/// One request, redacted and bounded at capture: nothing here may be a
/// credential, and every string is at most `max_value_bytes` long.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    #[serde(with = "humantime_serde")]
    pub time: SystemTime,
    pub class: Class,
    pub service: String,
    pub route: String,
    pub method: String,
    /// Path and query, query values masked outside `query_allowlist`.
    pub target: String,
    pub http_version: String,
    /// Allowlisted headers with their values (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Every other parsed header that was present, by name only.
    pub header_names: Vec<String>,
    /// The gray tag as the client sent it (the gray headers' values), else
    /// the cohort: what the diff compares, even when the tag is not a
    /// cohort the SLO engine splits off (`routes.gray_dimensions`).
    pub gray_tag: String,
    /// The cohort the route table assigned (`""`: judged with stable traffic).
    #[serde(default)]
    pub cohort: String,
    pub trace_id: String,
    pub span_id: String,
    pub request_id: Option<String>,
    /// 0 when no response came.
    pub status: u16,
    pub duration_ns: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub client: Option<SocketAddr>,
    pub server: Option<SocketAddr>,
    pub tcp_retransmits: u32,
    pub tcp_connect_ns: Option<u64>,
}

/// Allocator bytes per heap block beyond its capacity (header and rounding).
const ALLOC_OVERHEAD: usize = 16;

/// What the request stage knows about a request besides the request itself.
pub struct CaptureContext<'a> {
    pub route: &'a crate::request::route::RouteKey,
    /// The cohort the route table assigned.
    pub gray_tag: &'a str,
    pub trace_id: &'a [u8; 16],
    pub span_id: &'a [u8; 8],
    pub class: Class,
}

impl Snapshot {
    /// The redacted, bounded snapshot of `req`.
    pub fn capture(req: &HttpRequest, cx: &CaptureContext<'_>, cfg: &SnapshotConfig) -> Self {
        let max = cfg.max_value_bytes;
        let capped = |s: &str| crate::request::redact::cap(s, max).to_string();
        let target = match req.target.split_once('?') {
            Some((p, q)) => format!(
                "{p}?{}",
                crate::request::redact::redact_query(q, &cfg.query_allowlist)
            ),
            None => req.target.clone(),
        };
        let mut headers = Vec::new();
        let mut header_names = Vec::new();
        for (name, h) in KEPT_HEADERS {
            let Some(v) = req.headers.get(h) else {
                continue;
            };
            if !NEVER_CAPTURED.contains(&name)
                && cfg
                    .header_allowlist
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(name))
            {
                headers.push((name.to_string(), capped(v)));
            } else {
                header_names.push(name.to_string());
            }
        }
        let hex = crate::request::trace::context::hex_lower;
        Self {
            time: req.start_time,
            class: cx.class,
            service: capped(&cx.route.service),
            route: capped(&cx.route.route),
            method: capped(&cx.route.method),
            target: capped(&target),
            http_version: if req.version_minor == 0 {
                "HTTP/1.0"
            } else {
                "HTTP/1.1"
            }
            .into(),
            headers,
            header_names,
            gray_tag: capped(req.headers.x_gray_tag().unwrap_or(cx.gray_tag)),
            cohort: capped(cx.gray_tag),
            trace_id: hex(cx.trace_id),
            span_id: hex(cx.span_id),
            request_id: req.headers.x_request_id().map(capped),
            status: req.status,
            duration_ns: req.duration_ns(),
            request_bytes: req.request_bytes,
            response_bytes: req.response_bytes,
            client: req.peer.map(|e| SocketAddr::new(e.ip, e.port)),
            server: req.local.map(|e| SocketAddr::new(e.ip, e.port)),
            tcp_retransmits: req.tcp.retransmits,
            tcp_connect_ns: req.tcp.connect_duration_ns,
        }
    }

    /// Heap and inline bytes this snapshot holds: what the byte cap counts.
    /// Each heap block also costs the allocator its header and rounding
    /// (about 16 bytes with glibc): the memory bench showed twice the
    /// counted bytes in RSS before they were counted.
    pub fn bytes(&self) -> usize {
        let strings = [
            &self.service,
            &self.route,
            &self.method,
            &self.target,
            &self.http_version,
            &self.gray_tag,
            &self.cohort,
            &self.trace_id,
            &self.span_id,
        ];
        let blocks = strings.iter().filter(|s| s.capacity() > 0).count()
            + self
                .headers
                .iter()
                .map(|(k, v)| usize::from(k.capacity() > 0) + usize::from(v.capacity() > 0))
                .sum::<usize>()
            + self.header_names.len()
            + usize::from(self.headers.capacity() > 0)
            + usize::from(self.header_names.capacity() > 0)
            + usize::from(self.request_id.is_some());
        blocks * ALLOC_OVERHEAD
            + std::mem::size_of::<Self>()
            + self.service.capacity()
            + self.route.capacity()
            + self.method.capacity()
            + self.target.capacity()
            + self.http_version.capacity()
            + self.headers.capacity() * std::mem::size_of::<(String, String)>()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.capacity() + v.capacity())
                .sum::<usize>()
            + self.header_names.capacity() * std::mem::size_of::<String>()
            + self
                .header_names
                .iter()
                .map(String::capacity)
                .sum::<usize>()
            + self.gray_tag.capacity()
            + self.cohort.capacity()
            + self.trace_id.capacity()
            + self.span_id.capacity()
            + self.request_id.as_ref().map_or(0, String::capacity)
    }

    pub fn failed(&self) -> bool {
        self.class == Class::Failed
    }
}

#[cfg(test)]
mod tests;
