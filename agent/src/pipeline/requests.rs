//! The request stage: a completed HTTP exchange from the tracker gets its
//! owner, endpoints and TCP evidence from the connection table, its route and
//! trace context, then feeds RED metrics, spans, request logs and the SLO
//! engine.
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

use crate::export::otlp::{OtlpConfig, SpanRecord, SpanSink, should_export};
use crate::export::reqlog::{RequestLogLine, RequestLogger};
use crate::measure::slo::{SloEngine, SloSample};
use crate::protocol::http1::HttpCounters;
use crate::protocol::http2::Http2Counters;
use crate::request::route::RouteTable;
use crate::request::route::gray::{GrayCounters, OtherReason};
use crate::request::trace::context::{InvalidCounts, InvalidReason, extract, hex_lower};
use crate::request::{Endpoint, HttpRequest, Side, TaskIdentity};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InvalidLabels {
    pub reason: &'static str,
}

/// Self metrics of the HTTP side, mirrored from the plain counters the
/// tracker, route table and trace parser keep (they stay allocation-free).
#[derive(Clone, Default)]
pub struct HttpSelfMetrics {
    pub http: Family<EventLabels, Counter>,
    pub http2: Family<EventLabels, Counter>,
    pub trace_invalid: Family<InvalidLabels, Counter>,
    pub route_overflow: Counter,
    pub gray_other: Family<InvalidLabels, Counter>,
    pub route_unadmitted: Counter,
    pub route_evictions: Counter,
    pub requests_incomplete: Counter,
    reported: Reported,
}

#[derive(Clone, Default)]
struct Reported {
    http: Vec<u64>,
    http2: Vec<u64>,
    invalid: Vec<u64>,
    routes: crate::request::route::RouteCounters,
    gray_other: GrayCounters,
}

impl HttpSelfMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sloguard_http_events",
            "What the HTTP/1.x tracker saw: exchanges, incomplete ones, non-HTTP connections, parse errors, truncated heads, evictions",
            self.http.clone(),
        );
        registry.register(
            "sloguard_http2_events",
            "What the HTTP/2 and gRPC tracker saw: connections, exchanges, HPACK fields it could not decode, undecodable requests, resets, lost framing",
            self.http2.clone(),
        );
        registry.register(
            "sloguard_trace_context_invalid",
            "Requests whose trace headers (traceparent, b3) were invalid and treated as absent, by reason",
            self.trace_invalid.clone(),
        );
        registry.register(
            "sloguard_route_overflow_requests",
            "Requests sent to http_route=\"/{overflow}\" because their service reached its route cap",
            self.route_overflow.clone(),
        );
        registry.register(
            "sloguard_route_unadmitted_requests",
            "Requests sent to http_route=\"/{unadmitted}\": their path is not a route yet (routes.admit_after)",
            self.route_unadmitted.clone(),
        );
        registry.register(
            "sloguard_route_evictions",
            "Routes that left the route table after routes.idle_after without a request",
            self.route_evictions.clone(),
        );
        registry.register(
            "sloguard_route_gray_other_requests",
            "Gray-tagged requests counted in gray_tag=\"other\": route at its learned-cohort cap, not a configured cohort, or an invalid tag",
            self.gray_other.clone(),
        );
        for r in OtherReason::ALL {
            let _ = self
                .gray_other
                .get_or_create(&InvalidLabels { reason: r.as_str() });
        }
        registry.register(
            "sloguard_http_requests_incomplete",
            "Exchanges that ended without a complete response (connection closed or idle); not in the RED histograms",
            self.requests_incomplete.clone(),
        );
    }

    /// Push the deltas since the last call.
    pub fn sync(
        &mut self,
        http: &HttpCounters,
        http2: &Http2Counters,
        invalid: &InvalidCounts,
        routes: &crate::request::route::RouteCounters,
        gray: &GrayCounters,
    ) {
        sync_events(
            &self.http,
            &mut self.reported.http,
            &http_counter_values(http),
        );
        sync_events(
            &self.http2,
            &mut self.reported.http2,
            &http2_counter_values(http2),
        );
        self.reported.invalid.resize(InvalidReason::ALL.len(), 0);
        for (i, r) in InvalidReason::ALL.iter().enumerate() {
            let v = invalid.get(*r);
            let d = v.saturating_sub(self.reported.invalid[i]);
            self.trace_invalid
                .get_or_create(&InvalidLabels { reason: r.as_str() })
                .inc_by(d);
            self.reported.invalid[i] = v;
        }
        let was = &self.reported.routes;
        self.route_overflow.inc_by(
            routes
                .overflow_requests
                .saturating_sub(was.overflow_requests),
        );
        self.route_unadmitted.inc_by(
            routes
                .unadmitted_requests
                .saturating_sub(was.unadmitted_requests),
        );
        self.route_evictions
            .inc_by(routes.evicted_routes.saturating_sub(was.evicted_routes));
        self.reported.routes = routes.clone();
        for r in OtherReason::ALL {
            let d = gray.get(r).saturating_sub(self.reported.gray_other.get(r));
            if d > 0 {
                self.gray_other
                    .get_or_create(&InvalidLabels { reason: r.as_str() })
                    .inc_by(d);
            }
        }
        self.reported.gray_other = *gray;
    }
}

/// The status the SLO engine judges: a gRPC call that failed on the
/// server's side (see `grpc::SERVER_ERROR_CODES`) counts as a 5xx, so the
/// "5xx burst" of L2 and the error ratio work for RPC routes as for HTTP.
fn slo_status(req: &HttpRequest) -> u16 {
    if req.grpc.is_some() && req.is_server_error() && req.status < 500 {
        500
    } else {
        req.status
    }
}

/// Add each event's growth since `reported` to `family` (every event's
/// series exists from the first sync on, zero or not).
fn sync_events(
    family: &Family<EventLabels, Counter>,
    reported: &mut Vec<u64>,
    now: &[(&'static str, u64)],
) {
    reported.resize(now.len(), 0);
    for (i, (name, v)) in now.iter().enumerate() {
        let d = v.saturating_sub(reported[i]);
        if d > 0 || reported[i] == 0 {
            family.get_or_create(&EventLabels { event: name }).inc_by(d);
        }
        reported[i] = *v;
    }
}

fn http2_counter_values(c: &Http2Counters) -> [(&'static str, u64); 16] {
    [
        ("connections", c.connections),
        ("exchanges", c.exchanges),
        ("incomplete_exchanges", c.incomplete_exchanges),
        ("hpack_unknown_fields", c.hpack_unknown_fields),
        ("hpack_malformed_fields", c.hpack_malformed_fields),
        ("lost_header_blocks", c.lost_header_blocks),
        ("undecodable_requests", c.undecodable_requests),
        ("stream_overflows", c.stream_overflows),
        ("reset_streams", c.reset_streams),
        ("goaway_dropped", c.goaway_dropped),
        ("pushes", c.pushes),
        ("protocol_errors", c.protocol_errors),
        ("misplaced_segments", c.misplaced_segments),
        ("desynced_connections", c.desynced_connections),
        ("evicted_connections", c.evicted_connections),
        ("expired_connections", c.expired_connections),
    ]
}

fn http_counter_values(c: &HttpCounters) -> [(&'static str, u64); 15] {
    [
        ("chunks", c.chunks),
        ("exchanges", c.exchanges),
        ("incomplete_exchanges", c.incomplete_exchanges),
        ("non_http_connections", c.non_http_connections),
        ("parse_errors", c.parse_errors),
        ("truncated_heads", c.truncated_heads),
        ("framing_lost", c.framing_lost),
        ("unframed_responses", c.unframed_responses),
        ("unmatched_responses", c.unmatched_responses),
        ("pipeline_overflows", c.pipeline_overflows),
        ("evicted_connections", c.evicted_connections),
        ("expired_connections", c.expired_connections),
        ("desynced_connections", c.desynced_connections),
        ("stale_closes", c.stale_closes),
        ("head_budget_exhausted", c.head_budget_exhausted),
    ]
}

/// What the request stage needs besides the request.
pub struct RequestStage {
    pub routes: RouteTable,
    pub red: crate::measure::red::RedMetrics,
    pub rpc: crate::measure::rpc::RpcMetrics,
    pub spans: Option<SpanSink>,
    pub otlp: OtlpConfig,
    pub not_sampled: Counter,
    pub reqlog: RequestLogger,
    pub slo: SloEngine,
    pub invalid: InvalidCounts,
    /// Request snapshots of judged routes (failed, slow, healthy sample).
    pub snapshots: crate::respond::snapshot::SnapshotStore,
    /// Trace and span ids of requests without incoming context. A small
    /// fast generator seeded from the OS: ids need to be unique, not secret,
    /// and the thread-local ChaCha generator showed in profiles.
    pub ids: SmallRng,
}

/// A fresh generator for [`RequestStage::ids`].
pub fn id_generator() -> SmallRng {
    SmallRng::from_os_rng()
}

/// A random id that is not all zeros (W3C: all-zero ids are invalid).
fn random_id<const N: usize>(rng: &mut SmallRng) -> [u8; N] {
    loop {
        let mut id = [0u8; N];
        rng.fill_bytes(&mut id);
        if id != [0u8; N] {
            return id;
        }
    }
}

/// Connection facts the table had for the request.
pub struct ConnFacts {
    pub service: crate::request::service::ServiceIdentity,
    pub task: TaskIdentity,
    pub local: Option<Endpoint>,
    pub peer: Option<Endpoint>,
    pub retransmits: u32,
    pub connect_duration_ns: Option<u64>,
    /// The connection's requests were read from TLS plaintext.
    pub tls: bool,
}

impl RequestStage {
    pub fn finish(&mut self, mut req: HttpRequest, facts: ConnFacts, wall: std::time::SystemTime) {
        req.task = facts.task;
        req.local = facts.local;
        req.peer = facts.peer;
        req.start_time = wall;
        req.tcp.retransmits = facts.retransmits;
        req.tcp.connect_duration_ns = facts.connect_duration_ns;
        req.tls = facts.tls;

        let route = self
            .routes
            .route_at(&facts.service.name, &req.method, &req.target, wall);
        let k8s = facts.service.k8s;
        let gray = self.routes.gray_tag(&route, &req.headers, &req.target);
        let extracted = extract(&req.headers);
        if let Some(r) = extracted.invalid {
            self.invalid.record(r);
        }
        let ctx = extracted.context;
        let trace_id = ctx
            .as_ref()
            .map(|c| c.trace_id)
            .unwrap_or_else(|| random_id(&mut self.ids));
        let span_id: [u8; 8] = random_id(&mut self.ids);
        let duration = Duration::from_nanos(req.duration_ns());
        let error = match req.side {
            Side::Server => req.is_server_error() || req.status >= 500 || req.incomplete,
            Side::Client => req.is_server_error() || req.status >= 400 || req.incomplete,
        };
        let exported = match &self.spans {
            Some(sink) => {
                let parent_sampled = ctx.as_ref().and_then(|c| c.sampled);
                if should_export(&self.otlp, parent_sampled, error, duration, &trace_id) {
                    sink.offer(span_record(
                        &self.otlp,
                        &req,
                        &route,
                        &gray,
                        k8s.as_ref(),
                        trace_id,
                        span_id,
                        ctx.as_ref().map(|c| c.parent_span_id),
                        error,
                    ))
                } else {
                    self.not_sampled.inc();
                    false
                }
            }
            None => false,
        };
        if !req.incomplete {
            // The exemplar must lead to a trace that exists: only exported ones.
            let exemplar = exported.then_some(trace_id);
            self.red.observe(
                req.side,
                crate::measure::red::ProtocolLabel { http2: req.http2 },
                &route,
                req.status,
                &gray,
                k8s.as_ref(),
                duration.as_secs_f64(),
                exemplar,
                wall,
            );
            if let Some(code) = req.grpc.and_then(|g| g.status) {
                self.rpc
                    .observe(req.side, &route, code, &gray, duration.as_secs_f64());
            }
        }
        if self.reqlog.keep(error, duration) {
            let path = req.target.split('?').next().unwrap_or("");
            self.reqlog.log(&RequestLogLine {
                side: req.side.as_str(),
                trace_id: &hex_lower(&trace_id),
                span_id: &hex_lower(&span_id),
                request_id: req.headers.x_request_id(),
                service: &route.service,
                method: &route.method,
                route: &route.route,
                path,
                scheme: url_scheme(&req),
                status: req.status,
                duration,
                error,
                request_bytes: req.request_bytes,
                response_bytes: req.response_bytes,
                tcp_retransmits: req.tcp.retransmits,
                gray_tag: &gray,
                k8s: k8s.as_deref(),
            });
        }
        // The SLO is the service's own promise: server side only. Paths not
        // admitted as routes yet are one bucket of strangers: never judged.
        if req.side == Side::Server && &*route.route != crate::request::route::UNADMITTED_ROUTE {
            let slo = &self.slo;
            if let Some(d) = self
                .snapshots
                .decide(&route, error, req.duration_ns(), || slo.slo_p99(&route))
            {
                let cx = crate::respond::snapshot::CaptureContext {
                    route: &route,
                    gray_tag: &gray,
                    trace_id: &trace_id,
                    span_id: &span_id,
                    class: d.class,
                };
                let snap =
                    crate::respond::snapshot::Snapshot::capture(&req, &cx, self.snapshots.config());
                self.snapshots.insert(d, snap);
            }
            self.slo.record(&SloSample {
                route: &route,
                gray_tag: &gray,
                status: slo_status(&req),
                duration_ns: req.duration_ns(),
                trace_id: Some(trace_id),
                retransmits: req.tcp.retransmits,
                connect_duration_ns: req.tcp.connect_duration_ns,
                peer: req.peer,
            });
        }
    }
}

/// `url.scheme` (OTel): `https` for requests read from TLS plaintext.
pub fn url_scheme(req: &HttpRequest) -> &'static str {
    if req.tls { "https" } else { "http" }
}

/// The span for a request: OTel HTTP semantic conventions plus what the
/// kernel saw on the connection. The pod goes to the span's resource.
/// String attributes are capped at `otlp.max_attribute_bytes` and query values
/// redacted outside `otlp.query_allowlist`: they are other people's data.
#[allow(clippy::too_many_arguments)]
fn span_record(
    otlp: &OtlpConfig,
    req: &HttpRequest,
    route: &crate::request::route::RouteKey,
    gray: &str,
    k8s: Option<&Arc<crate::request::k8s::identity::K8sLabels>>,
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    error: bool,
) -> SpanRecord {
    let (path, query) = match req.target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (req.target.as_str(), None),
    };
    let mut a = Vec::with_capacity(16);
    a.push(KeyValue::new(
        "http.request.method",
        route.method.to_string(),
    ));
    a.push(KeyValue::new("http.route", route.route.to_string()));
    a.push(KeyValue::new("url.path", path.to_string()));
    a.push(KeyValue::new("url.scheme", url_scheme(req)));
    if let Some(q) = query {
        a.push(KeyValue::new(
            "url.query",
            crate::request::redact::redact_query(q, &otlp.query_allowlist),
        ));
    }
    if req.status != 0 {
        a.push(KeyValue::new(
            "http.response.status_code",
            i64::from(req.status),
        ));
    }
    a.push(KeyValue::new("network.protocol.name", "http"));
    a.push(KeyValue::new(
        "network.protocol.version",
        if req.version_minor == 0 { "1.0" } else { "1.1" },
    ));
    a.push(KeyValue::new("http.request.size", req.request_bytes as i64));
    a.push(KeyValue::new(
        "http.response.size",
        req.response_bytes as i64,
    ));
    a.push(KeyValue::new(
        "tcp.retransmits",
        i64::from(req.tcp.retransmits),
    ));
    if let Some(c) = req.tcp.connect_duration_ns {
        a.push(KeyValue::new("tcp.connect.duration", c as f64 / 1e9));
    }
    if let Some(ua) = req.headers.user_agent() {
        a.push(KeyValue::new("user_agent.original", ua.to_owned()));
    }
    if !gray.is_empty() {
        a.push(KeyValue::new("sloguard.gray_tag", gray.to_string()));
        // One attribute per dimension, so a trace backend can filter on it.
        for (k, v) in crate::request::route::gray::pairs(gray).filter(|(k, _)| !k.is_empty()) {
            a.push(KeyValue::new(format!("sloguard.gray.{k}"), v.to_string()));
        }
    }
    if let Some(id) = req.headers.x_request_id() {
        a.push(KeyValue::new(
            "http.request.header.x-request-id",
            id.to_owned(),
        ));
    }
    if req.incomplete {
        a.push(KeyValue::new("error.type", "incomplete"));
    } else if error {
        a.push(KeyValue::new("error.type", req.status.to_string()));
    }
    let (kind, server, client) = match req.side {
        Side::Server => (SpanKind::Server, req.local, req.peer),
        Side::Client => (SpanKind::Client, req.peer, req.local),
    };
    if let Some(s) = server {
        a.push(KeyValue::new("server.address", s.ip.to_string()));
        a.push(KeyValue::new("server.port", i64::from(s.port)));
    }
    if let Some(c) = client {
        a.push(KeyValue::new("client.address", c.ip.to_string()));
        a.push(KeyValue::new("client.port", i64::from(c.port)));
    }
    let max = otlp.max_attribute_bytes;
    for kv in &mut a {
        if let opentelemetry::Value::String(s) = &kv.value
            && s.as_str().len() > max
        {
            kv.value = crate::request::redact::cap(s.as_str(), max)
                .to_string()
                .into();
        }
    }
    let mut name = format!("{} {}", route.method, route.route);
    name.truncate(crate::request::redact::cap(&name, max).len());
    let end = req.start_time + Duration::from_nanos(req.duration_ns());
    SpanRecord {
        service: route.service.clone(),
        k8s: k8s.cloned(),
        name,
        kind,
        trace_id,
        span_id,
        parent_span_id: parent,
        sampled: true,
        start: req.start_time,
        end,
        error,
        attributes: a,
    }
}

#[cfg(test)]
mod span_tests {
    use super::*;
    use crate::request::Header;

    fn attr(r: &SpanRecord, key: &str) -> Option<String> {
        r.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.as_str().into_owned())
    }

    /// Values copied from the request are bounded and query values withheld:
    /// a 16 KiB X-Request-Id or path must not become a 16 KiB attribute.
    #[test]
    fn span_attributes_are_capped_and_query_values_redacted() {
        let long = "p".repeat(16 * 1024);
        let target = format!("/a/{long}?user=alice&token=s3cret&page=2");
        let mut req = HttpRequest::synthetic(Side::Server, "GET", &target, 200, 0, 1_000);
        req.headers.set(Header::XRequestId, &"r".repeat(16 * 1024));
        req.headers.set(Header::UserAgent, &"u".repeat(16 * 1024));
        let route = crate::request::route::RouteKey::new("shop", "GET", &format!("/a/{long}"));
        let otlp = OtlpConfig {
            query_allowlist: vec!["page".into()],
            ..Default::default()
        };
        let r = span_record(&otlp, &req, &route, "", None, [1; 16], [2; 8], None, false);
        assert_eq!(
            attr(&r, "url.query").as_deref(),
            Some("user=REDACTED&token=REDACTED&page=2")
        );
        for key in [
            "url.path",
            "http.route",
            "http.request.header.x-request-id",
            "user_agent.original",
        ] {
            let v = attr(&r, key).unwrap_or_else(|| panic!("{key} missing"));
            assert_eq!(v.len(), otlp.max_attribute_bytes, "{key}");
        }
        assert!(r.name.len() <= otlp.max_attribute_bytes);
        for kv in &r.attributes {
            assert!(
                kv.value.as_str().len() <= otlp.max_attribute_bytes,
                "{kv:?}"
            );
        }
    }

    /// The cohort goes into the span whole and one attribute per dimension,
    /// so a trace backend can filter on `sloguard.gray.version`.
    #[test]
    fn span_carries_the_gray_cohort_and_its_dimensions() {
        let req = HttpRequest::synthetic(Side::Server, "GET", "/a?gray=x", 200, 0, 1_000);
        let route = crate::request::route::RouteKey::new("shop", "GET", "/a");
        let otlp = OtlpConfig::default();
        let cohort = "canary,version:v2,zone:bj";
        let r = span_record(
            &otlp, &req, &route, cohort, None, [1; 16], [2; 8], None, false,
        );
        assert_eq!(attr(&r, "sloguard.gray_tag").as_deref(), Some(cohort));
        assert_eq!(attr(&r, "sloguard.gray.version").as_deref(), Some("v2"));
        assert_eq!(attr(&r, "sloguard.gray.zone").as_deref(), Some("bj"));
        assert!(
            attr(&r, "sloguard.gray.").is_none(),
            "a key-less tag has no dimension"
        );
        let untagged = span_record(&otlp, &req, &route, "", None, [1; 16], [2; 8], None, false);
        assert!(
            untagged
                .attributes
                .iter()
                .all(|kv| !kv.key.as_str().starts_with("sloguard.gray"))
        );
    }
}
