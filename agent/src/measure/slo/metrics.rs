//! `sloguard_route_*` and `sloguard_slo_*` gauges, read from a snapshot the
//! engine publishes at each tick (a scrape never touches the hot path).
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::export::metrics::Escaped;
use crate::request::route::RouteKey;
use crate::respond::alert::model::AlertKind;

use super::burn::BurnRates;
use super::rules::SloTarget;

/// Figures of one route × gray tag after the last closed period.
#[derive(Clone, Debug)]
pub struct RouteRow {
    pub route: RouteKey,
    pub gray_tag: Arc<str>,
    pub requests: u64,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    pub error_ratio: f64,
    pub baseline_p99: Option<Duration>,
    pub target: SloTarget,
    pub burn: BurnRates,
    pub alerting: Vec<(AlertKind, bool)>,
}

#[derive(Clone, Debug, Default)]
pub struct MetricsSnapshot {
    pub rows: Vec<RouteRow>,
    pub untracked_requests: u64,
    pub entries: u64,
}

/// The collector to register; cheap to clone.
#[derive(Clone, Debug)]
pub struct SloMetrics {
    snapshot: Arc<RwLock<MetricsSnapshot>>,
}

impl SloMetrics {
    pub(crate) fn new(snapshot: Arc<RwLock<MetricsSnapshot>>) -> Self {
        Self { snapshot }
    }

    /// A copy of the last published snapshot (for the admin API).
    pub fn snapshot(&self) -> MetricsSnapshot {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn labels(r: &RouteRow) -> [(&'static str, Escaped<&str>); 4] {
    [
        ("service_name", Escaped(&r.route.service)),
        ("http_request_method", Escaped(&r.route.method)),
        ("http_route", Escaped(&r.route.route)),
        ("gray_tag", Escaped(&r.gray_tag)),
    ]
}

/// Encodes one gauge family with a value per row (rows without a value skipped).
fn gauge_family<'r, V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &'r [RouteRow],
    value: impl Fn(&'r RouteRow) -> Option<V>,
) -> Result<(), std::fmt::Error> {
    let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for r in rows {
        if let Some(v) = value(r) {
            m.encode_family(&labels(r))?.encode_gauge(&v)?;
        }
    }
    Ok(())
}

impl Collector for SloMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.snapshot.read().unwrap_or_else(|p| p.into_inner());
        let rows = &s.rows[..];
        gauge_family(
            &mut encoder,
            "sloguard_route_requests",
            "Requests of the route in the last closed SLO period.",
            rows,
            |r| Some(r.requests as i64),
        )?;
        gauge_family(
            &mut encoder,
            "sloguard_route_p99_seconds",
            "P99 request duration of the route in the last closed SLO period.",
            rows,
            |r| r.p99.map(|d| d.as_secs_f64()),
        )?;
        gauge_family(
            &mut encoder,
            "sloguard_route_error_ratio",
            "5xx ratio of the route in the last closed SLO period.",
            rows,
            |r| Some(r.error_ratio),
        )?;
        gauge_family(
            &mut encoder,
            "sloguard_route_baseline_p99_seconds",
            "Baseline (median over healthy periods) of the route's P99.",
            rows,
            |r| r.baseline_p99.map(|d| d.as_secs_f64()),
        )?;
        gauge_family(
            &mut encoder,
            "sloguard_slo_target_p99_seconds",
            "SLO target P99 of the route.",
            rows,
            |r| Some(r.target.p99.as_secs_f64()),
        )?;
        gauge_family(
            &mut encoder,
            "sloguard_slo_target_error_ratio",
            "SLO target 5xx ratio of the route.",
            rows,
            |r| Some(r.target.error_ratio),
        )?;
        {
            let mut m = encoder.encode_descriptor(
                "sloguard_slo_burn_rate",
                "Error-budget burn rate (5xx ratio over the window / SLO error ratio).",
                None,
                MetricType::Gauge,
            )?;
            for r in rows {
                let [a, b, c, d] = labels(r);
                for (w, v) in [("5m", r.burn.m5), ("1h", r.burn.h1), ("6h", r.burn.h6)] {
                    m.encode_family(&[a, b, c, d, ("window", Escaped(w))])?
                        .encode_gauge(&v)?;
                }
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "sloguard_slo_alerting",
                "1 while the alert is firing for the route, else 0.",
                None,
                MetricType::Gauge,
            )?;
            for r in rows {
                let [a, b, c, d] = labels(r);
                for (k, firing) in &r.alerting {
                    m.encode_family(&[a, b, c, d, ("alertname", Escaped(k.alertname()))])?
                        .encode_gauge(&i64::from(*firing))?;
                }
            }
        }
        let routes = ConstGauge::new(s.entries as i64);
        routes.encode(encoder.encode_descriptor(
            "sloguard_slo_routes",
            "Route x gray-tag entries the SLO engine tracks.",
            None,
            routes.metric_type(),
        )?)?;
        let untracked = ConstCounter::new(s.untracked_requests);
        untracked.encode(encoder.encode_descriptor(
            "sloguard_slo_untracked_requests",
            "Requests not judged because the SLO route cap was reached.",
            None,
            untracked.metric_type(),
        )?)?;
        Ok(())
    }
}
