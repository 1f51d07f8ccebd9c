//! Label values from outside, through every family that carries them, must
//! leave the exposition parseable by promtool (Prometheus text) and by a
//! real OpenMetrics parser, which must read back the very values.
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus_client::registry::Registry;

use crate::conn::tcp_stats::{FailureReason, TcpConfig, TcpStats};
use crate::export::metrics::lint;
use crate::measure::red::RedMetrics;
use crate::measure::slo::burn::BurnRates;
use crate::measure::slo::metrics::{MetricsSnapshot, RouteRow, SloMetrics};
use crate::measure::slo::rules::SloTarget;
use crate::request::Side;
use crate::request::k8s::identity::K8sLabels;
use crate::request::route::RouteKey;
use crate::request::service::ServiceIdentity;
use crate::respond::alert::metrics::AlertMetrics;
use crate::respond::fuse::machine::FuseState;
use crate::respond::fuse::metrics::FuseMetrics;

/// What a request target, a `comm`, a header or a config may hold.
const HOSTILE: [&str; 9] = [
    "/a\"b",
    "/x # {y}",
    "/a\\b",
    "/a}b{c",
    "/trailing\\",
    "x\ny",
    "a,b=\"c\"} 1\nfake_total 9",
    "/caf\u{e9}/\u{fffd}\u{fffd}",
    "\\\"\\n",
];

fn hostile_registry() -> Registry {
    let mut reg = Registry::default();
    let mut red = RedMetrics::default();
    red.register(&mut reg);
    let mut tcp = TcpStats::new(
        &TcpConfig {
            max_remote_endpoints: 64,
        },
        &mut reg,
    );
    let fuse = FuseMetrics::default();
    fuse.register(&mut reg);
    let alerts = AlertMetrics::default();
    alerts.register(&mut reg);
    let snapshot = Arc::new(std::sync::RwLock::new(MetricsSnapshot::default()));
    reg.register_collector(Box::new(SloMetrics::new(snapshot.clone())));

    let at = SystemTime::now();
    for (i, v) in HOSTILE.iter().enumerate() {
        let route = RouteKey::new(v, v, v);
        let tag: Arc<str> = (*v).into();
        let pod = Arc::new(K8sLabels {
            k8s_namespace: (*v).into(),
            k8s_pod: format!("{v}-{i}").into(),
            k8s_workload: (*v).into(),
            k8s_container: (*v).into(),
            workload_kind: None,
        });
        for side in [Side::Server, Side::Client] {
            red.observe(
                side,
                Default::default(),
                &route,
                200,
                &tag,
                Some(&pod),
                0.01,
                Some([7; 16]),
                at,
            );
            red.observe(
                side,
                Default::default(),
                &route,
                500,
                &tag,
                None,
                0.2,
                None,
                at,
            );
        }
        let svc = ServiceIdentity {
            name: (*v).into(),
            k8s: Some(pod.clone()),
        };
        tcp.add_retransmits(&svc, v, 1);
        tcp.observe_connect(&svc, v, 0.001);
        tcp.add_connect_failure(&svc, v, FailureReason::refused);
        fuse.set_state(&route, FuseState::Open);
        alerts.init_receiver(v);
        alerts.raise(v, v);
        snapshot.write().unwrap().rows.push(RouteRow {
            route,
            gray_tag: tag,
            requests: 3,
            p50: Some(Duration::from_millis(2)),
            p99: Some(Duration::from_millis(5)),
            error_ratio: 0.5,
            baseline_p99: None,
            target: SloTarget {
                p99: Duration::from_millis(800),
                error_ratio: 0.01,
            },
            burn: BurnRates::default(),
            alerting: vec![(crate::respond::alert::model::AlertKind::P99Breach, true)],
        });
    }
    reg
}

/// Families (by sample name prefix) and the labels that carry outside values.
const CARRIERS: &[(&str, &[&str])] = &[
    (
        "http_server_request_duration_seconds",
        &[
            "service_name",
            "http_request_method",
            "http_route",
            "gray_tag",
            "k8s_namespace",
            "k8s_workload",
            "k8s_container",
        ],
    ),
    (
        "http_client_request_duration_seconds",
        &[
            "service_name",
            "http_request_method",
            "http_route",
            "gray_tag",
        ],
    ),
    (
        "sloguard_tcp_retransmits",
        &["service_name", "remote_endpoint", "k8s_namespace"],
    ),
    (
        "sloguard_tcp_connect_duration_seconds",
        &["service_name", "remote_endpoint"],
    ),
    (
        "sloguard_tcp_connect_failures",
        &["service_name", "remote_endpoint"],
    ),
    (
        "sloguard_fuse_state",
        &["service_name", "http_request_method", "http_route"],
    ),
    ("sloguard_alerts_deliveries", &["receiver"]),
    ("sloguard_alerts_delivery_retries", &["receiver"]),
    ("sloguard_alerts", &["alertname", "status"]),
    (
        "sloguard_route_requests",
        &[
            "service_name",
            "http_request_method",
            "http_route",
            "gray_tag",
        ],
    ),
    (
        "sloguard_slo_burn_rate",
        &["service_name", "http_route", "gray_tag"],
    ),
    ("sloguard_slo_alerting", &["http_route"]),
];

#[test]
fn hostile_label_values_pass_promtool_and_read_back_from_openmetrics() {
    let reg = hostile_registry();
    let mut om = String::new();
    prometheus_client::encoding::text::encode(&mut om, &reg).unwrap();
    // The injection attempt stays inside its label value.
    assert!(!om.lines().any(|l| l.starts_with("fake_total")), "{om}");
    lint::assert_promtool_accepts_openmetrics(&om);
    let Some(samples) = lint::assert_openmetrics_parses(&om) else {
        return;
    };
    let want: BTreeSet<&str> = HOSTILE.into_iter().collect();
    for (family, labels) in CARRIERS {
        for label in *labels {
            let got: BTreeSet<&str> = samples
                .iter()
                .filter(|s| s.name.starts_with(family))
                .filter_map(|s| s.labels.get(*label).map(String::as_str))
                .collect();
            assert!(
                want.is_subset(&got),
                "{family} {label}: read back {got:?}, sent {want:?}"
            );
        }
    }
    // The pod name is the value with a suffix: read back exactly too.
    let pods: BTreeSet<&str> = samples
        .iter()
        .filter_map(|s| s.labels.get("k8s_pod").map(String::as_str))
        .collect();
    assert!(
        pods.contains("/a\"b-0") && pods.contains("x\ny-5"),
        "{pods:?}"
    );
}

#[test]
fn control_characters_without_an_escape_are_replaced_not_passed_on() {
    let (reg, mut red) = crate::measure::red::tests::registered();
    let route = RouteKey::new("svc\r\u{1}", "GET", "/a\rb\u{7f}");
    let tag: Arc<str> = "".into();
    let now = SystemTime::now();
    red.observe(
        Side::Server,
        Default::default(),
        &route,
        200,
        &tag,
        None,
        0.01,
        None,
        now,
    );
    let mut om = String::new();
    prometheus_client::encoding::text::encode(&mut om, &reg).unwrap();
    assert!(!om.contains('\r'), "{om:?}");
    lint::assert_promtool_accepts_openmetrics(&om);
    if let Some(samples) = lint::assert_openmetrics_parses(&om) {
        assert!(
            samples
                .iter()
                .any(|s| s.labels.get("http_route").map(String::as_str)
                    == Some("/a\u{fffd}b\u{fffd}")),
            "{samples:?}"
        );
    }
}
