//! Spans over OTLP (gRPC or HTTP/protobuf) through `opentelemetry-otlp`.
//!
//! The agent does not run inside the traced programs, so it builds finished
//! spans itself (`SpanData` with the ids it chose, the kernel's timestamps)
//! and hands them to the SDK's batch processor, one per resource: the OTLP
//! resource carries `service.name` and, for a process in a pod, the pod's
//! `k8s.*` attributes. One agent serves every process on the node, so the
//! resource varies per span; the SDK fixes it per processor, hence one
//! processor per (service, pod). The pipeline never waits: a full queue
//! drops the span and counts it.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, SpanData, SpanEvents, SpanLinks, SpanProcessor,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::config::error::ConfigError;
use crate::request::k8s::identity::K8sLabels;

/// What one OTLP resource (one batch processor) stands for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ResourceKey {
    service: Arc<str>,
    k8s: Option<Arc<K8sLabels>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// Collector endpoint. Empty: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, then
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`; when none names one, export is off.
    pub endpoint: String,
    /// `grpc` or `http/protobuf`. Empty: `OTEL_EXPORTER_OTLP_PROTOCOL`, else `grpc`.
    pub protocol: String,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Spans waiting in the hand-off from the pipeline at most; beyond, spans
    /// are dropped and counted. Each service's SDK batch queue holds
    /// `min(queue_capacity, SERVICE_QUEUE)`.
    pub queue_capacity: usize,
    /// Share of requests without an incoming sampling decision that are
    /// exported (0.0–1.0). Incoming `sampled` flags are honoured.
    pub root_sampling_ratio: f64,
    /// Always export server errors (5xx; 4xx too on the client side).
    pub keep_errors: bool,
    /// Always export requests slower than this.
    #[serde(with = "humantime_serde")]
    pub slow_threshold: Duration,
    /// OTLP resources at most, one per service (per service and pod on
    /// Kubernetes); the rest share one named `other`.
    pub max_services: usize,
    /// Query parameters whose values are exported in `url.query`; every
    /// other value becomes `REDACTED` (keys are kept).
    pub query_allowlist: Vec<String>,
    /// Every string attribute (and the span name) is cut to this many bytes:
    /// they come from other people's requests (`X-Request-Id`, paths).
    pub max_attribute_bytes: usize,
}

/// Shortest `otlp.max_attribute_bytes`: room for a route template and an id.
pub const MIN_ATTRIBUTE_BYTES: usize = 32;

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            protocol: String::new(),
            timeout: Duration::from_secs(10),
            queue_capacity: 8192,
            root_sampling_ratio: 0.1,
            keep_errors: true,
            slow_threshold: Duration::from_secs(1),
            max_services: 64,
            query_allowlist: Vec::new(),
            max_attribute_bytes: 256,
        }
    }
}

impl OtlpConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.protocol.is_empty() && parse_protocol(&self.protocol).is_none() {
            return Err(ConfigError::key(
                "otlp.protocol",
                "must be `grpc` or `http/protobuf`",
            ));
        }
        if !(0.0..=1.0).contains(&self.root_sampling_ratio) {
            return Err(ConfigError::key(
                "otlp.root_sampling_ratio",
                "must be between 0.0 and 1.0",
            ));
        }
        if self.queue_capacity == 0 {
            return Err(ConfigError::key(
                "otlp.queue_capacity",
                "must be at least 1",
            ));
        }
        if self.max_services == 0 {
            return Err(ConfigError::key("otlp.max_services", "must be at least 1"));
        }
        if self.max_attribute_bytes < MIN_ATTRIBUTE_BYTES {
            return Err(ConfigError::key(
                "otlp.max_attribute_bytes",
                format!("must be at least {MIN_ATTRIBUTE_BYTES}"),
            ));
        }
        if !self.endpoint.is_empty()
            && !self.endpoint.starts_with("http://")
            && !self.endpoint.starts_with("https://")
        {
            return Err(ConfigError::key(
                "otlp.endpoint",
                "must be an http:// or https:// URL",
            ));
        }
        Ok(())
    }

    /// Where to export and how, or `None` when neither the file nor the
    /// standard variables name an endpoint.
    pub fn resolve(&self, env: impl Fn(&str) -> Option<String>) -> Option<(String, Protocol)> {
        let protocol = Some(self.protocol.clone())
            .filter(|p| !p.is_empty())
            .or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
            .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .and_then(|p| parse_protocol(&p))
            .unwrap_or(Protocol::Grpc);
        let signal_specific = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").filter(|e| !e.is_empty());
        let (base, exact) = if !self.endpoint.is_empty() {
            (self.endpoint.clone(), false)
        } else if let Some(e) = signal_specific {
            (e, true)
        } else {
            (
                env("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|e| !e.is_empty())?,
                false,
            )
        };
        // The spec: a generic HTTP endpoint gets `/v1/traces` appended; a
        // signal-specific one is used as is.
        let url = if protocol == Protocol::HttpBinary && !exact && !base.ends_with("/v1/traces") {
            format!("{}/v1/traces", base.trim_end_matches('/'))
        } else {
            base
        };
        Some((url, protocol))
    }
}

fn parse_protocol(p: &str) -> Option<Protocol> {
    match p {
        "grpc" => Some(Protocol::Grpc),
        "http/protobuf" => Some(Protocol::HttpBinary),
        _ => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("building the OTLP exporter for {endpoint}: {reason}")]
    Exporter { endpoint: String, reason: String },
}

/// A finished span, as the pipeline hands it over.
#[derive(Clone, Debug)]
pub struct SpanRecord {
    pub service: Arc<str>,
    /// The local process's pod: `k8s.*` resource attributes. `None` outside
    /// Kubernetes.
    pub k8s: Option<Arc<K8sLabels>>,
    pub name: String,
    pub kind: SpanKind,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub sampled: bool,
    pub start: SystemTime,
    pub end: SystemTime,
    pub error: bool,
    pub attributes: Vec<KeyValue>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Counts of what happened to spans, for `sloguard_spans_total{result}`.
#[derive(Clone, Default)]
pub struct SpanCounters {
    family: Family<ResultLabels, Counter>,
}

impl SpanCounters {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sloguard_spans",
            "Request spans: queued for OTLP export, dropped (queue full), or not sampled",
            self.family.clone(),
        );
        for r in ["queued", "dropped", "not_sampled"] {
            let _ = self.family.get_or_create(&ResultLabels { result: r });
        }
    }

    pub fn counter(&self, result: &'static str) -> Counter {
        self.family.get_or_create(&ResultLabels { result }).clone()
    }
}

/// The pipeline's end of the export path.
#[derive(Clone)]
pub struct SpanSink {
    tx: tokio::sync::mpsc::Sender<SpanRecord>,
    queued: Counter,
    dropped: Counter,
}

impl SpanSink {
    /// A sink whose spans land in the returned receiver instead of an
    /// exporter (tests and benches).
    pub fn channel(
        capacity: usize,
        counters: &SpanCounters,
    ) -> (Self, tokio::sync::mpsc::Receiver<SpanRecord>) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        let sink = Self {
            tx,
            queued: counters.counter("queued"),
            dropped: counters.counter("dropped"),
        };
        (sink, rx)
    }

    /// Offer a span; never blocks. False when it was dropped.
    pub fn offer(&self, span: SpanRecord) -> bool {
        match self.tx.try_send(span) {
            Ok(()) => {
                self.queued.inc();
                true
            }
            Err(_) => {
                self.dropped.inc();
                false
            }
        }
    }
}

/// Start the exporter task on the current tokio runtime. `None` when export
/// is off (no endpoint configured).
pub fn start(
    cfg: &OtlpConfig,
    host_name: &str,
    counters: &SpanCounters,
) -> Result<Option<(SpanSink, tokio::task::JoinHandle<()>)>, OtlpError> {
    let Some((endpoint, protocol)) = cfg.resolve(|k| std::env::var(k).ok()) else {
        tracing::info!("OTLP export off: no endpoint in config or OTEL_EXPORTER_OTLP_*");
        return Ok(None);
    };
    // Build one exporter up front so a bad endpoint fails at start.
    build_exporter(&endpoint, protocol, cfg.timeout)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<SpanRecord>(cfg.queue_capacity);
    let cfg = cfg.clone();
    let host = host_name.to_string();
    tracing::info!(%endpoint, ?protocol, "OTLP span export on");
    let handle = tokio::spawn(async move {
        let mut processors: HashMap<ResourceKey, BatchSpanProcessor> = HashMap::new();
        let other = ResourceKey {
            service: "other".into(),
            k8s: None,
        };
        while let Some(mut rec) = rx.recv().await {
            let key = ResourceKey {
                service: rec.service.clone(),
                k8s: rec.k8s.take(),
            };
            let key = if processors.contains_key(&key) || processors.len() < cfg.max_services {
                key
            } else {
                other.clone()
            };
            if !processors.contains_key(&key) {
                match new_processor(&endpoint, protocol, &cfg, &key, &host) {
                    Ok(p) => {
                        processors.insert(key.clone(), p);
                    }
                    Err(e) => {
                        tracing::warn!("{e}");
                        continue;
                    }
                }
            }
            if let Some(p) = processors.get(&key) {
                p.on_end(span_data(rec));
            }
        }
        // Channel closed: flush what is queued, bounded by the timeout.
        for (_, p) in processors {
            let _ = tokio::task::spawn_blocking(move || p.shutdown()).await;
        }
    });
    Ok(Some((
        SpanSink {
            tx,
            queued: counters.counter("queued"),
            dropped: counters.counter("dropped"),
        },
        handle,
    )))
}

fn build_exporter(
    endpoint: &str,
    protocol: Protocol,
    timeout: Duration,
) -> Result<opentelemetry_otlp::SpanExporter, OtlpError> {
    let b = opentelemetry_otlp::SpanExporter::builder();
    let r = match protocol {
        Protocol::Grpc => b
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(timeout)
            .build(),
        _ => b
            .with_http()
            .with_protocol(protocol)
            .with_endpoint(endpoint)
            .with_timeout(timeout)
            .build(),
    };
    r.map_err(|e| OtlpError::Exporter {
        endpoint: endpoint.to_string(),
        reason: e.to_string(),
    })
}

/// Spans queued per service's batch processor at most. The SDK allocates its
/// queue up front (~368 bytes a slot): 8192 slots were 2.9 MiB per service
/// that ever exported, up to 185 MiB at `max_services`. Two export batches
/// (the SDK starts an export at 512 queued); beyond, the SDK drops.
pub const SERVICE_QUEUE: usize = 1024;

fn new_processor(
    endpoint: &str,
    protocol: Protocol,
    cfg: &OtlpConfig,
    key: &ResourceKey,
    host: &str,
) -> Result<BatchSpanProcessor, OtlpError> {
    let exporter = build_exporter(endpoint, protocol, cfg.timeout)?;
    let batch = opentelemetry_sdk::trace::BatchConfigBuilder::default()
        .with_max_queue_size(cfg.queue_capacity.min(SERVICE_QUEUE))
        .with_scheduled_delay(Duration::from_millis(500))
        .build();
    let mut p = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch)
        .build();
    p.set_resource(&resource(key, host));
    Ok(p)
}

fn resource(key: &ResourceKey, host: &str) -> Resource {
    let pod = key.k8s.iter().flat_map(|l| l.resource_attributes());
    Resource::builder()
        .with_service_name(key.service.to_string())
        .with_attributes(
            [
                KeyValue::new("host.name", host.to_string()),
                KeyValue::new("telemetry.distro.name", "sloguard"),
                KeyValue::new("telemetry.distro.version", env!("CARGO_PKG_VERSION")),
            ]
            .into_iter()
            .chain(pod.map(|(k, v)| KeyValue::new(k, v.to_string()))),
        )
        .build()
}

fn span_data(r: SpanRecord) -> SpanData {
    let flags = if r.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(r.trace_id),
            SpanId::from_bytes(r.span_id),
            flags,
            false,
            TraceState::default(),
        ),
        parent_span_id: r
            .parent_span_id
            .map(SpanId::from_bytes)
            .unwrap_or(SpanId::INVALID),
        parent_span_is_remote: r.parent_span_id.is_some(),
        span_kind: r.kind,
        name: r.name.into(),
        start_time: r.start,
        end_time: r.end,
        attributes: r.attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: if r.error {
            Status::error("")
        } else {
            Status::Unset
        },
        instrumentation_scope: InstrumentationScope::builder("sloguard")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    }
}

/// The sampling decision: incoming decision first, then the tail rules
/// (errors, slow), then the root ratio (by trace id, so every agent on the
/// path decides the same way for the same trace).
pub fn should_export(
    cfg: &OtlpConfig,
    parent_sampled: Option<bool>,
    error: bool,
    duration: Duration,
    trace_id: &[u8; 16],
) -> bool {
    if cfg.keep_errors && error {
        return true;
    }
    if duration >= cfg.slow_threshold {
        return true;
    }
    match parent_sampled {
        Some(s) => s,
        None => {
            // W3C random trace-id bits: the low 7 bytes.
            let mut b = [0u8; 8];
            b[1..].copy_from_slice(&trace_id[9..]);
            let x = u64::from_be_bytes(b) as f64 / (1u64 << 56) as f64;
            cfg.root_sampling_ratio >= 1.0 || x < cfg.root_sampling_ratio
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn off_without_any_endpoint() {
        assert!(OtlpConfig::default().resolve(env_of(&[])).is_none());
    }

    #[test]
    fn standard_variables_choose_endpoint_and_protocol() {
        let c = OtlpConfig::default();
        let (u, p) = c
            .resolve(env_of(&[(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://127.0.0.1:4317",
            )]))
            .unwrap();
        assert_eq!((u.as_str(), p), ("http://127.0.0.1:4317", Protocol::Grpc));
        let (u, p) = c
            .resolve(env_of(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ]))
            .unwrap();
        assert_eq!(
            (u.as_str(), p),
            ("http://127.0.0.1:4318/v1/traces", Protocol::HttpBinary)
        );
        let (u, _) = c
            .resolve(env_of(&[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://h:1/custom"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ]))
            .unwrap();
        assert_eq!(u, "http://h:1/custom");
        // The config file wins over the environment.
        let c = OtlpConfig {
            endpoint: "http://file:4317".into(),
            ..Default::default()
        };
        let (u, _) = c
            .resolve(env_of(&[(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://env:4317",
            )]))
            .unwrap();
        assert_eq!(u, "http://file:4317");
    }

    #[test]
    fn sampling_keeps_errors_and_slow_and_honours_parent() {
        let c = OtlpConfig {
            root_sampling_ratio: 0.0,
            ..Default::default()
        };
        let id = [7u8; 16];
        let fast = Duration::from_millis(5);
        assert!(should_export(&c, None, true, fast, &id));
        assert!(should_export(&c, None, false, Duration::from_secs(2), &id));
        assert!(should_export(&c, Some(true), false, fast, &id));
        assert!(!should_export(&c, Some(false), false, fast, &id));
        assert!(!should_export(&c, None, false, fast, &id));
        let all = OtlpConfig {
            root_sampling_ratio: 1.0,
            ..Default::default()
        };
        assert!(should_export(&all, None, false, fast, &[0xff; 16]));
    }

    #[test]
    fn root_ratio_is_close_to_configured_share() {
        let c = OtlpConfig {
            root_sampling_ratio: 0.25,
            ..Default::default()
        };
        let mut kept = 0;
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..10_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&x.to_be_bytes());
            kept += should_export(&c, None, false, Duration::ZERO, &id) as u32;
        }
        assert!((2200..2800).contains(&kept), "{kept}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let c = OtlpConfig {
            protocol: "udp".into(),
            ..Default::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("otlp.protocol")
        );
        let c = OtlpConfig {
            root_sampling_ratio: 2.0,
            ..Default::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("otlp.root_sampling_ratio")
        );
    }

    #[test]
    fn a_pods_resource_carries_its_k8s_attributes() {
        use opentelemetry::Key;
        let get =
            |r: &Resource, k: &'static str| r.get(&Key::from_static_str(k)).map(|v| v.to_string());
        let bare = resource(
            &ResourceKey {
                service: "cron".into(),
                k8s: None,
            },
            "node-1",
        );
        assert_eq!(get(&bare, "service.name").as_deref(), Some("cron"));
        assert_eq!(get(&bare, "host.name").as_deref(), Some("node-1"));
        assert!(bare.iter().all(|(k, _)| !k.as_str().starts_with("k8s.")));
        let pod = resource(
            &ResourceKey {
                service: "pg".into(),
                k8s: Some(Arc::new(K8sLabels {
                    k8s_namespace: "data".into(),
                    k8s_pod: "pg-0".into(),
                    k8s_workload: "pg".into(),
                    k8s_container: "postgres".into(),
                    workload_kind: Some(crate::request::k8s::identity::WorkloadKind::StatefulSet),
                })),
            },
            "node-1",
        );
        for (k, v) in [
            ("service.name", "pg"),
            ("k8s.namespace.name", "data"),
            ("k8s.pod.name", "pg-0"),
            ("k8s.statefulset.name", "pg"),
            ("k8s.container.name", "postgres"),
        ] {
            assert_eq!(get(&pod, k).as_deref(), Some(v), "{k}");
        }
    }
}
