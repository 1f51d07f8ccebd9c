//! The agent's span exporter against a real OTLP receiver (gRPC and
//! HTTP/protobuf) started by the test: ids, kind, timestamps, attributes and
//! the per-service (and per-pod) resource arrive as sent.
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use sloguard::export::otlp::{OtlpConfig, SpanCounters, SpanRecord};
use sloguard::request::k8s::identity::{K8sLabels, WorkloadKind};
use tests::otlp::OtlpReceiver;

fn record(service: &str, trace: u8, parent: Option<[u8; 8]>) -> SpanRecord {
    let start = SystemTime::now();
    SpanRecord {
        service: service.into(),
        k8s: None,
        name: "GET /items/{id}".into(),
        kind: SpanKind::Server,
        trace_id: [trace; 16],
        span_id: [0x11; 8],
        parent_span_id: parent,
        sampled: true,
        start,
        end: start + Duration::from_millis(12),
        error: false,
        attributes: vec![
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("http.route", "/items/{id}"),
            KeyValue::new("http.response.status_code", 200i64),
            KeyValue::new("tcp.retransmits", 3i64),
        ],
    }
}

fn export_and_receive(protocol: &str) {
    let rx = OtlpReceiver::start();
    let endpoint = if protocol == "grpc" {
        rx.endpoint()
    } else {
        rx.http_endpoint()
    };
    let cfg = OtlpConfig {
        endpoint,
        protocol: protocol.into(),
        ..Default::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let counters = SpanCounters::default();
    let (sink, task) = rt
        .block_on(async { sloguard::export::otlp::start(&cfg, "node-1", &counters) })
        .unwrap()
        .unwrap();
    assert!(sink.offer(record("shop", 0xab, Some([0x22; 8]))));
    assert!(sink.offer(record("cart", 0xcd, None)));
    // The same service from a pod: its own resource, with the pod's attributes.
    let mut in_pod = record("shop", 0xef, None);
    in_pod.k8s = Some(Arc::new(K8sLabels {
        k8s_namespace: "shop".into(),
        k8s_pod: "shop-7d4b9c8f6d-x2x9q".into(),
        k8s_workload: "shop".into(),
        k8s_container: "app".into(),
        workload_kind: Some(WorkloadKind::Deployment),
    }));
    assert!(sink.offer(in_pod));
    let got = rx
        .wait_for(Duration::from_secs(15), |s| s.trace_id == "ab".repeat(16))
        .expect("span arrives");
    assert_eq!(got.service, "shop");
    assert_eq!(got.span_id, "11".repeat(8));
    assert_eq!(got.parent_span_id, "22".repeat(8));
    assert_eq!(got.kind, 2, "SERVER");
    assert_eq!(got.name, "GET /items/{id}");
    assert_eq!(got.end_unix_nano - got.start_unix_nano, 12_000_000);
    assert_eq!(
        got.attributes.get("http.route").map(String::as_str),
        Some("/items/{id}")
    );
    assert_eq!(
        got.attributes.get("tcp.retransmits").map(String::as_str),
        Some("3")
    );
    let root = rx
        .wait_for(Duration::from_secs(15), |s| s.trace_id == "cd".repeat(16))
        .expect("second span");
    assert_eq!(root.service, "cart", "one resource per service");
    assert_eq!(root.parent_span_id, "", "root span has no parent");
    let pod = rx
        .wait_for(Duration::from_secs(15), |s| s.trace_id == "ef".repeat(16))
        .expect("span from a pod");
    assert_eq!(pod.service, "shop");
    for (k, v) in [
        ("k8s.namespace.name", "shop"),
        ("k8s.pod.name", "shop-7d4b9c8f6d-x2x9q"),
        ("k8s.deployment.name", "shop"),
        ("k8s.container.name", "app"),
        ("host.name", "node-1"),
    ] {
        assert_eq!(pod.resource.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert!(
        !got.resource.keys().any(|k| k.starts_with("k8s.")),
        "no pod, no k8s.* attributes: {:?}",
        got.resource
    );
    drop(sink);
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(15), task).await })
        .unwrap()
        .unwrap();
}

#[test]
fn spans_reach_a_real_otlp_grpc_receiver() {
    export_and_receive("grpc");
}

#[test]
fn spans_reach_a_real_otlp_http_protobuf_receiver() {
    export_and_receive("http/protobuf");
}

#[test]
fn a_dead_receiver_never_blocks_the_sink() {
    let port = tests::env::free_port();
    let cfg = OtlpConfig {
        endpoint: format!("http://127.0.0.1:{port}"),
        queue_capacity: 16,
        ..Default::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let counters = SpanCounters::default();
    let (sink, _task) = rt
        .block_on(async { sloguard::export::otlp::start(&cfg, "n", &counters) })
        .unwrap()
        .unwrap();
    let t0 = std::time::Instant::now();
    let mut dropped = 0;
    for i in 0..10_000u32 {
        if !sink.offer(record("shop", (i % 200) as u8, None)) {
            dropped += 1;
        }
    }
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "offer must not block: {:?}",
        t0.elapsed()
    );
    assert!(
        dropped > 0,
        "a 16-slot queue in front of a dead receiver drops"
    );
    assert_eq!(counters.counter("dropped").get(), dropped);
}
